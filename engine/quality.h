/* quality.h - image quality metrics as scikit-image 0.19 computes them */
#ifndef SS_QUALITY_H
#define SS_QUALITY_H
#include <stddef.h>
#include <stdint.h>

#include "engine/svd.h"

/* mean((a-b)^2) over n samples, in double. */
double ss_mse(const uint16_t *a, const uint16_t *b, size_t n);
/* 10*log10(range^2/mse); caller handles mse == 0 (null). */
double ss_psnr(double mse, double range);
/* skimage.metrics.structural_similarity(a, b, data_range=range) with its
 * defaults (7x7 uniform window, reflect padding, sample covariance, crop 3).
 * Returns 0 and *out, or SS_EINVAL when min(h, w) < 7 (null in the API). */
int ss_ssim(const uint16_t *a, const uint16_t *b, int h, int w, double range, double *out);
/* ss_ssim for double samples in 2D (d0 = 1) or 3D (d0 x d1 x d2, C order):
 * skimage's structural_similarity(a, b, data_range=range) with its defaults,
 * the 7-wide window along every axis of the array. Returns 0 and *out, or
 * SS_EINVAL when an axis (d1, d2, and d0 unless 1) is under 7, SS_ENOMEM. */
int ss_ssim_f64(const double *a, const double *b, int d0, int d1, int d2, double range, double *out);
/* skimage.metrics.hausdorff_distance on the nonzero pixels of each image:
 * 0 if both are empty. Returns 0 and *out, or 1 when exactly one image has no
 * nonzero pixel (infinite: null in the API). Exact and O(h*w) or near it. */
int ss_hausdorff(const uint16_t *a, const uint16_t *b, int h, int w, double *out);

typedef struct ss_quality {
    int k;
    int rank;                            /* the stored rank */
    int no_original;                     /* the original was not kept: only k, rank, energy */
    double mse;
    double psnr; int psnr_null;          /* over 2^bits - 1; null when mse == 0 */
    double psnr_data_range; int psnr_dr_null; /* over the original's max - min; null when mse or that is 0 */
    double ssim; int ssim_null;          /* null when min(h, w) < 7 */
    double hausdorff; int hausdorff_null; /* null when one image is empty */
    double energy;                       /* sum_{i<k} s_i^2 / sum_i s_i^2 */
    long long stored_bytes_at_k;         /* 4*k*(m+n+1) */
    double compression_ratio;            /* original_bytes / stored_bytes_at_k */
} ss_quality;

/* All of the above for recon (m*n samples at f->bit_depth) against f->orig,
 * data range 2^bit_depth - 1. Without f->orig only k, rank and energy (no_original set, the
 * rest null). Returns 0, SS_EINVAL (bad k) or SS_ENOMEM. */
int ss_quality_compute(const ss_factors *f, int k, const uint16_t *recon, ss_quality *q);

#endif
