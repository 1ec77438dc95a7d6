/* kern_internal.h - what the CPU kernel files share with the registry (not a public API) */
#ifndef SS_KERN_INTERNAL_H
#define SS_KERN_INTERNAL_H
#include <stddef.h>
#include <stdint.h>

#include "engine/kernels.h"

/* The CPU backends, each defined in its kern_*.c file. */
extern const ss_backend ss_backend_loops3;
extern const ss_backend ss_backend_loops2;
extern const ss_backend ss_backend_loops1;
extern const ss_backend ss_backend_blocked;
extern const ss_backend ss_backend_threads;
extern const ss_backend ss_backend_blas;

/* Checks f (arrays, dims, bit depth) and k in 1..rank. 0 or SS_EINVAL + message. */
int ss_kern_check(const ss_factors *f, int k);
/* 2^bit_depth - 1. */
int ss_kern_maxval(const ss_factors *f);
/* CPU backends are always available. */
int ss_kern_cpu_available(const char **reason);
/* Pixel path of a float-only kernel: checks, runs fn into the workspace's
 * float buffer, then rounds/clamps into out. */
typedef int (*ss_kern_f32_fn)(const ss_factors *f, int k, float *C, ss_workspace *ws);
int ss_kern_pixels_via_f32(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws,
                           ss_kern_f32_fn fn);

/* The blocked micro-kernel driver, shared by `blocked` and `threads`:
 * rows [r0, r1) of C = A[:, :k] B[:k, :] with A row stride lda, B k x n with
 * row stride n. When P is NULL the floats go to C (row stride n); otherwise
 * the rounded/clamped pixels (0..maxval) go to P, and C is scratch for partial
 * sums, needed (non-NULL, m*n floats) only when k > ss_blocked_kc(). */
void ss_blocked_rows(const float *A, int lda, const float *B, int n, int k, int r0, int r1,
                     float *C, uint16_t *P, int maxval);
int ss_blocked_kc(void); /* k-block depth kept in registers before a partial store */
int ss_blocked_mr(void); /* rows per micro-kernel call of the selected ISA path */
/* Selects the ISA path: "avx512", "avx2", "generic", or NULL for the best the
 * CPU has. Returns 0, or SS_EUNAVAIL when the CPU lacks it. For tests and the
 * bench: not meant to be switched while kernels run. */
int ss_blocked_select(const char *isa);
const char *ss_blocked_isa(void);

#endif
