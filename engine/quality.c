/* quality.c - MSE, PSNR, SSIM and Hausdorff distance as scikit-image 0.19 computes them */
#include "engine/quality.h"
#include "util/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double ss_mse(const uint16_t *a, const uint16_t *b, size_t n) {
    if (n == 0) return 0.0;
    /* Squared 16-bit differences summed in integers are exact (up to ~4e9
     * samples), so this is at least as accurate as numpy's float64 mean. */
    uint64_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t d = (int64_t)a[i] - (int64_t)b[i];
        acc += (uint64_t)(d * d);
    }
    return (double)acc / (double)n;
}

double ss_psnr(double mse, double range) { return 10.0 * log10((range * range) / mse); }

/* ---- SSIM ------------------------------------------------------------------ */

enum { WIN = 7, HALF = WIN / 2, NCH = 5 }; /* channels: x, y, x*x, y*y, x*y */

/* scipy.ndimage 'reflect' (half-sample symmetric) index into 0..n-1; valid
 * for p in -n..2n-1, which holds because n >= WIN. */
static inline int reflect(int p, int n) {
    if (p < 0) return -p - 1;
    if (p >= n) return 2 * n - p - 1;
    return p;
}

/* The five SSIM channels of pixel p. */
static inline void channels(const uint16_t *a, const uint16_t *b, size_t p, double v[NCH]) {
    double x = a[p], y = b[p];
    v[0] = x;
    v[1] = y;
    v[2] = x * x;
    v[3] = y * y;
    v[4] = x * y;
}

/* skimage's SSIM at one point from the five local means, with the same operations in the
 * same order, so the map matches it to the last bits. */
static inline double ssim_point(double ux, double uy, double uxx, double uyy, double uxy, double cov_norm,
                                double C1, double C2) {
    double vx = cov_norm * (uxx - ux * ux);
    double vy = cov_norm * (uyy - uy * uy);
    double vxy = cov_norm * (uxy - ux * uy);
    double A1 = 2 * ux * uy + C1, A2 = 2 * vxy + C2;
    double B1 = ux * ux + uy * uy + C1, B2 = vx + vy + C2;
    return (A1 * A2) / (B1 * B2);
}

/* uniform_filter1d over one extended line `ext` (n + WIN - 1 values) exactly
 * as scipy's NI_UniformFilter1D does it: the first window summed in order and
 * divided, then a running update (new - old) / size, so rounding follows
 * scipy's rather than a direct 7-term sum's. */
static void box1d(const double *ext, int n, double *out) {
    double tmp = 0.0;
    for (int l = 0; l < WIN; l++) tmp += ext[l];
    tmp /= (double)WIN;
    out[0] = tmp;
    for (int l = 1; l < n; l++) {
        tmp += (ext[l + WIN - 1] - ext[l - 1]) / (double)WIN;
        out[l] = tmp;
    }
}

int ss_ssim(const uint16_t *a, const uint16_t *b, int h, int w, double range, double *out) {
    if (h < WIN || w < WIN)
        return ss_fail(SS_EINVAL, "SSIM needs at least %dx%d pixels, got %dx%d", WIN, WIN, h, w);
    const size_t W = (size_t)w;
    /* col: the axis-0 running means of each channel for the current row
     * (scipy's first pass, streamed row by row); ext: one channel's row
     * reflect-extended for the axis-1 pass; u: that pass's output. */
    double *buf = malloc(sizeof(double) * (NCH * W + (W + WIN - 1) + NCH * W));
    if (!buf) return ss_fail(SS_ENOMEM, "out of memory for SSIM of %dx%d", h, w);
    double *col = buf, *ext = col + NCH * W, *u = ext + W + WIN - 1;
    double v[NCH], o[NCH];

    /* First window of the axis-0 pass: rows -3..3, summed in order. */
    memset(col, 0, sizeof(double) * NCH * W);
    for (int r = -HALF; r <= HALF; r++) {
        size_t row = (size_t)reflect(r, h) * W;
        for (size_t j = 0; j < W; j++) {
            channels(a, b, row + j, v);
            for (int c = 0; c < NCH; c++) col[c * W + j] += v[c];
        }
    }
    for (size_t i = 0; i < NCH * W; i++) col[i] /= (double)WIN;

    /* skimage: cov_norm = NP / (NP - 1), C1 = (K1 R)^2, C2 = (K2 R)^2. */
    const double cov_norm = (double)(WIN * WIN) / (double)(WIN * WIN - 1);
    const double C1 = (0.01 * range) * (0.01 * range);
    const double C2 = (0.03 * range) * (0.03 * range);
    double total = 0.0;

    for (int i = 0; i < h; i++) {
        if (i > 0) { /* advance the axis-0 running means to row i */
            size_t add = (size_t)reflect(i + HALF, h) * W, sub = (size_t)reflect(i - HALF - 1, h) * W;
            for (size_t j = 0; j < W; j++) {
                channels(a, b, add + j, v);
                channels(a, b, sub + j, o);
                for (int c = 0; c < NCH; c++) col[c * W + j] += (v[c] - o[c]) / (double)WIN;
            }
        }
        /* Rows outside the crop still feed the running means but need no
         * axis-1 pass. */
        if (i < HALF || i >= h - HALF) continue;
        for (int c = 0; c < NCH; c++) {
            const double *src = col + c * W;
            for (int p = 0; p < w + WIN - 1; p++) ext[p] = src[reflect(p - HALF, w)];
            box1d(ext, w, u + c * W);
        }
        const double *ux = u, *uy = u + W, *uxx = u + 2 * W, *uyy = u + 3 * W, *uxy = u + 4 * W;
        double rowsum = 0.0;
        for (size_t j = HALF; j < W - HALF; j++)
            rowsum += ssim_point(ux[j], uy[j], uxx[j], uyy[j], uxy[j], cov_norm, C1, C2);
        total += rowsum; /* per-row partial sums keep the error near numpy's pairwise sum */
    }
    free(buf);
    *out = total / ((double)(h - 2 * HALF) * (double)(w - 2 * HALF));
    return SS_OK;
}

/* ---- SSIM of float64 arrays, 2D or 3D -------------------------------------------
 * skimage averages the SSIM map over the array cropped by HALF on every side,
 * and every window around a cropped position lies inside the array, so the
 * reflect padding never reaches the mean: the means here are plain 7-tap box
 * means of the valid region, one axis after the other (each divided by 7, as
 * scipy's uniform_filter1d does), streamed plane by plane along axis 0 with a
 * ring of the last 7 filtered planes. Differences from skimage are rounding
 * (~1e-15 relative). */

/* The five channels of plane p box-filtered along axes 2 then 1: F[c] holds
 * o1 x o2 values. R is scratch of NCH * d1 * o2. */
static void ssim_plane(const double *a, const double *b, int d1, int d2, double *R, double *F) {
    const int o1 = d1 - 2 * HALF, o2 = d2 - 2 * HALF;
    const size_t r_ch = (size_t)d1 * (size_t)o2, f_ch = (size_t)o1 * (size_t)o2;
    for (int i = 0; i < d1; i++) {
        const double *x = a + (size_t)i * (size_t)d2, *y = b + (size_t)i * (size_t)d2;
        for (int j = 0; j < o2; j++) {
            double s[NCH] = {0, 0, 0, 0, 0};
            for (int q = 0; q < WIN; q++) {
                const double u = x[j + q], w = y[j + q];
                s[0] += u;
                s[1] += w;
                s[2] += u * u;
                s[3] += w * w;
                s[4] += u * w;
            }
            for (int c = 0; c < NCH; c++) R[c * r_ch + (size_t)i * (size_t)o2 + (size_t)j] = s[c] / (double)WIN;
        }
    }
    for (int c = 0; c < NCH; c++)
        for (int i = 0; i < o1; i++)
            for (int j = 0; j < o2; j++) {
                double s = 0;
                for (int q = 0; q < WIN; q++) s += R[c * r_ch + (size_t)(i + q) * (size_t)o2 + (size_t)j];
                F[c * f_ch + (size_t)i * (size_t)o2 + (size_t)j] = s / (double)WIN;
            }
}

int ss_ssim_f64(const double *a, const double *b, int d0, int d1, int d2, double range, double *out) {
    const int three = d0 > 1;
    if (d1 < WIN || d2 < WIN || (three && d0 < WIN) || d0 < 1)
        return ss_fail(SS_EINVAL, "SSIM needs at least %d samples along every axis, got %dx%dx%d", WIN, d0, d1, d2);
    const int o1 = d1 - 2 * HALF, o2 = d2 - 2 * HALF, nring = three ? WIN : 1;
    const size_t plane = (size_t)d1 * (size_t)d2, f_ch = (size_t)o1 * (size_t)o2;
    double *R = malloc(sizeof(double) * NCH * (size_t)d1 * (size_t)o2);
    double *ring = malloc(sizeof(double) * NCH * f_ch * (size_t)nring);
    double *M = three ? malloc(sizeof(double) * NCH * f_ch) : NULL;
    if (!R || !ring || (three && !M)) {
        free(R);
        free(ring);
        free(M);
        return ss_fail(SS_ENOMEM, "out of memory for SSIM of %dx%dx%d", d0, d1, d2);
    }
    /* skimage: NP = 7^ndim samples per window, cov_norm = NP / (NP - 1). */
    const double np = three ? (double)(WIN * WIN * WIN) : (double)(WIN * WIN);
    const double cov_norm = np / (np - 1);
    const double C1 = (0.01 * range) * (0.01 * range), C2 = (0.03 * range) * (0.03 * range);
    double total = 0;
    for (int p = 0; p < (three ? d0 : 1); p++) {
        double *F = ring + (size_t)(p % nring) * NCH * f_ch;
        ssim_plane(a + (size_t)p * plane, b + (size_t)p * plane, d1, d2, R, F);
        const double *mean = F;
        if (three) {
            if (p < WIN - 1) continue; /* the output plane p - HALF needs planes up to p */
            for (size_t i = 0; i < NCH * f_ch; i++) {
                double s = 0;
                for (int q = 0; q < WIN; q++) s += ring[(size_t)((p - WIN + 1 + q) % WIN) * NCH * f_ch + i];
                M[i] = s / (double)WIN;
            }
            mean = M;
        }
        const double *ux = mean, *uy = mean + f_ch, *uxx = mean + 2 * f_ch, *uyy = mean + 3 * f_ch,
                     *uxy = mean + 4 * f_ch;
        double planesum = 0;
        for (int i = 0; i < o1; i++) {
            double rowsum = 0;
            for (int j = 0; j < o2; j++) {
                const size_t q = (size_t)i * (size_t)o2 + (size_t)j;
                rowsum += ssim_point(ux[q], uy[q], uxx[q], uyy[q], uxy[q], cov_norm, C1, C2);
            }
            planesum += rowsum;
        }
        total += planesum;
    }
    free(R);
    free(ring);
    free(M);
    const double count = (double)o1 * (double)o2 * (three ? (double)(d0 - 2 * HALF) : 1.0);
    *out = total / count;
    return SS_OK;
}

/* ---- Hausdorff ------------------------------------------------------------- */

/* Squared Euclidean distance transform of the nonzero pixels of `img`,
 * Felzenszwalb & Huttenlocher (2012): a vertical pass, then per row the lower
 * envelope of parabolas. Instead of storing the transform, each row's values
 * are read at the nonzero pixels of `other` and their maximum returned, which
 * is the squared directed Hausdorff distance other -> img. Integer arithmetic
 * throughout (intersections compared as fractions), so the result is exact.
 * g, v, zn, zd are caller scratch of h*w, w, w+1, w+1 entries. The set in
 * `img` must be nonempty. */
static int64_t directed_sq(const uint16_t *img, const uint16_t *other, int h, int w,
                           int32_t *g, int32_t *v, int64_t *zn, int64_t *zd) {
    const size_t W = (size_t)w;
    const int32_t NONE = INT32_MAX / 4; /* farther than any real distance */
    /* Vertical distance to the nearest point in the same column. */
    for (size_t j = 0; j < W; j++) g[j] = img[j] ? 0 : NONE;
    for (int i = 1; i < h; i++) {
        const uint16_t *r = img + (size_t)i * W;
        int32_t *gi = g + (size_t)i * W, *gp = gi - W;
        for (size_t j = 0; j < W; j++) gi[j] = r[j] ? 0 : (gp[j] < NONE ? gp[j] + 1 : NONE);
    }
    for (int i = h - 2; i >= 0; i--) {
        int32_t *gi = g + (size_t)i * W, *gn = gi + W;
        for (size_t j = 0; j < W; j++)
            if (gn[j] + 1 < gi[j]) gi[j] = gn[j] + 1;
    }

    int64_t best = 0;
    for (int i = 0; i < h; i++) {
        const uint16_t *orow = other + (size_t)i * W;
        size_t j0 = 0;
        while (j0 < W && !orow[j0]) j0++;
        if (j0 == W) continue; /* no point of `other` in this row */
        const int32_t *gi = g + (size_t)i * W;
        /* f(q) = gi[q]^2; columns without any point (NONE) are not parabolas.
         * Envelope of parabolas (x - q)^2 + f(q): v holds their apexes, the
         * boundary between v[k-1] and v[k] is zn[k]/zd[k] (zd > 0). */
        int k = -1;
        for (int q = 0; q < w; q++) {
            if (gi[q] >= NONE) continue;
            int64_t fq = (int64_t)gi[q] * gi[q] + (int64_t)q * q;
            if (k < 0) {
                v[0] = q;
                k = 0;
                continue;
            }
            int64_t sn, sd;
            for (;;) {
                int64_t p = v[k];
                int64_t fp = (int64_t)gi[p] * gi[p] + p * p;
                sn = fq - fp;
                sd = 2 * ((int64_t)q - p);
                /* Pop v[k] while the new boundary lies at or left of its
                 * left boundary: sn/sd <= zn[k]/zd[k]. */
                if (k > 0 && sn * zd[k] <= zn[k] * sd) {
                    k--;
                    continue;
                }
                break;
            }
            k++;
            v[k] = q;
            zn[k] = sn;
            zd[k] = sd;
        }
        /* Read the envelope at the points of `other` (ascending x). */
        int s = 0;
        for (size_t j = j0; j < W; j++) {
            if (!orow[j]) continue;
            int64_t x = (int64_t)j;
            while (s < k && zn[s + 1] < x * zd[s + 1]) s++;
            int64_t dx = x - v[s], gv = gi[v[s]];
            int64_t d = dx * dx + gv * gv;
            if (d > best) best = d;
        }
    }
    return best;
}

static int any_nonzero(const uint16_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 1;
    return 0;
}

int ss_hausdorff(const uint16_t *a, const uint16_t *b, int h, int w, double *out) {
    if (h <= 0 || w <= 0) return ss_fail(SS_EINVAL, "bad image shape %dx%d", w, h);
    const size_t n = (size_t)h * (size_t)w;
    int ea = !any_nonzero(a, n), eb = !any_nonzero(b, n);
    if (ea && eb) {
        *out = 0.0;
        return 0;
    }
    if (ea || eb) {
        *out = INFINITY;
        return 1;
    }
    const size_t W = (size_t)w;
    int32_t *g = malloc(sizeof(int32_t) * (n + W));
    int64_t *z = malloc(sizeof(int64_t) * 2 * (W + 1));
    if (!g || !z) {
        free(g);
        free(z);
        return ss_fail(SS_ENOMEM, "out of memory for Hausdorff of %dx%d", w, h);
    }
    int32_t *v = g + n;
    int64_t ab = directed_sq(a, b, h, w, g, v, z, z + W + 1); /* b's points to a */
    int64_t ba = directed_sq(b, a, h, w, g, v, z, z + W + 1);
    free(g);
    free(z);
    *out = sqrt((double)(ab > ba ? ab : ba));
    return 0;
}

/* ---- all metrics for one reconstruction ------------------------------------ */

int ss_quality_compute(const ss_factors *f, int k, const uint16_t *recon, ss_quality *q) {
    if (!f || !recon || !q) return ss_fail(SS_EINVAL, "quality: missing argument");
    if (k < 1 || k > f->rank) return ss_fail(SS_EINVAL, "k=%d is not in 1..%d", k, f->rank);
    if (f->bit_depth != 8 && f->bit_depth != 16)
        return ss_fail(SS_EINVAL, "bad bit depth %d", f->bit_depth);
    const int m = f->m, n = f->n;
    const size_t npx = (size_t)m * (size_t)n;
    const double range = (double)((1u << f->bit_depth) - 1);
    memset(q, 0, sizeof *q);
    q->k = k;
    q->rank = f->rank;
    q->stored_bytes_at_k = ss_stored_bytes(m, n, k);
    double original_bytes = (double)npx * (double)f->bit_depth / 8.0;
    q->compression_ratio = original_bytes / (double)q->stored_bytes_at_k;
    double num = 0.0, den = 0.0;
    for (int i = 0; i < f->nsv; i++) {
        double s2 = (double)f->S[i] * (double)f->S[i];
        if (i < k) num += s2;
        den += s2;
    }
    /* An all-zero slice has no energy to lose: call it fully kept. */
    q->energy = den > 0.0 ? num / den : 1.0;
    if (!f->orig) {
        q->no_original = q->psnr_null = q->psnr_dr_null = q->ssim_null = q->hausdorff_null = 1;
        return SS_OK;
    }

    q->mse = ss_mse(f->orig, recon, npx);
    uint16_t lo = UINT16_MAX, hi = 0;
    for (size_t i = 0; i < npx; i++) {
        if (f->orig[i] < lo) lo = f->orig[i];
        if (f->orig[i] > hi) hi = f->orig[i];
    }
    if (q->mse == 0.0) q->psnr_null = 1;
    else q->psnr = ss_psnr(q->mse, range);
    if (q->mse == 0.0 || hi == lo) q->psnr_dr_null = 1;
    else q->psnr_data_range = ss_psnr(q->mse, (double)(hi - lo));

    int rc = ss_ssim(f->orig, recon, m, n, range, &q->ssim);
    if (rc == SS_ENOMEM) return rc;
    if (rc != 0) {
        q->ssim = 0.0;
        q->ssim_null = 1;
    }

    rc = ss_hausdorff(f->orig, recon, m, n, &q->hausdorff);
    if (rc < 0) return rc;
    if (rc == 1) {
        q->hausdorff = 0.0;
        q->hausdorff_null = 1;
    }
    return SS_OK;
}
