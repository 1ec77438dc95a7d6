/* compress.h - what makes the store small: rank by a quality target, factors quantised with steps
 * that follow the singular values and range coded, the original pixels losslessly compressed */
#ifndef SS_COMPRESS_H
#define SS_COMPRESS_H
#include <stddef.h>
#include <stdint.h>

#include "engine/svd.h"

/* What an upload asks to keep. */
typedef enum {
    SS_TARGET_NONE = 0, /* every component (rank = nsv) */
    SS_TARGET_RANK,     /* value = the rank, 1..nsv */
    SS_TARGET_ENERGY,   /* value = fraction of sum s_i^2 kept, in (0, 1] */
    SS_TARGET_PSNR,     /* value = dB over `peak`, on what is served (quantised, rounded) */
} ss_target_kind;

typedef struct ss_target {
    ss_target_kind kind;
    double value;
} ss_target;

/* The smallest rank the singular values alone allow: for PSNR the truncation error
 * ||A - A_k||_F^2 = sum_{i>k} s_i^2 must stay within the error budget of m*n*peak^2/10^(psnr/10)
 * (less m*n/12 for the rounding of pixels when round_px). Returns 1..nsv. */
int ss_rank_for_target(const float *S, int nsv, int m, int n, ss_target t, double peak, int round_px);

/* Chooses the rank and the quantisation of f (factors at any rank, from ss_svd_factor) against
 * the data A (m*n values as float, row-major) and applies them in place: f is truncated to the
 * rank and, when quantise, its U and Vt are replaced by their quantised values with f->qstep
 * set (what ss_svd_serialize stores, exactly). For a PSNR target the result is checked on what
 * would be served (round-and-clamp to 0..maxval when maxval > 0; rounded half away from zero
 * and not clamped when maxval < 0, for signed integer data, whose clamp to its type's range
 * can only bring values nearer; else the float values), and
 * the step shrunk or the rank raised until it holds. *psnr_out (may be NULL) gets the PSNR over
 * peak of what is served (INFINITY when exact). Returns 0, SS_EINVAL, SS_ENOMEM. */
int ss_compress_fit(ss_factors *f, const float *A, ss_target t, double peak, int maxval, int quantise,
                    double *psnr_out);

/* The default quantisation step for factors with no target (f->qstep == 0): an RMS error of about
 * 1/4096 of the mean level, far under one grey level of an 8-bit slice. */
float ss_default_qstep(const ss_factors *f);

/* Factor section of a .svd v2 file: per component p its step c/s_p (float32), a mode byte (which
 * of u_p, v_p are delta coded), then one range-coded stream of the integers. encode quantises
 * U[:, :rank] and Vt[:rank, :] with f->qstep (or ss_default_qstep); decode fills f->U and f->Vt
 * (f's shape and S set) and checks everything it reads. malloc'd *out. */
int ss_factors_encode(const ss_factors *f, unsigned char **out, size_t *out_len);
int ss_factors_decode(const unsigned char *buf, size_t len, ss_factors *f);

/* Original-pixel codecs (lossless). */
enum { SS_ORIG_DEFLATE = 1, SS_ORIG_JPEGLS = 2 };
/* Encodes m*n samples of bits (8 or 16) with codec (0: whichever is smaller). *codec_out gets the
 * codec used. malloc'd *out. */
int ss_orig_encode(const uint16_t *px, int m, int n, int bits, int codec, unsigned char **out, size_t *out_len,
                   int *codec_out);
/* Decodes into px (m*n samples); checks shape, depth and every sample. SS_ECORRUPT. */
int ss_orig_decode(const unsigned char *buf, size_t len, int codec, int m, int n, int bits, uint16_t *px);

#endif
