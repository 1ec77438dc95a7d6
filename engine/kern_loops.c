/* kern_loops.c - the study's plain loop kernels: loops3, loops2, loops1 (float32, no blocking) */
#include "util/error.h"
#include "engine/kern_internal.h"

#include <string.h>

/* for-loops 3: i, j, p with one multiply-add into C at a time. C is not
 * restrict-qualified on purpose: each update goes through memory as in the
 * study's triple loop. */
static int loops3_f32(const ss_factors *f, int k, float *C, ss_workspace *ws) {
    (void)ws;
    int rc = ss_kern_check(f, k);
    if (rc) return rc;
    size_t m = (size_t)f->m, n = (size_t)f->n, r = (size_t)f->rank;
    const float *U = f->U, *W = f->W;
    memset(C, 0, m * n * sizeof *C);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++)
            for (size_t p = 0; p < (size_t)k; p++) C[i * n + j] += U[i * r + p] * W[p * n + j];
    return SS_OK;
}

/* Dot product of a row of U with a (strided) column of W. */
static float dot_strided(const float *a, const float *b, size_t stride, size_t k) {
    float s = 0.0f;
    for (size_t p = 0; p < k; p++) s += a[p] * b[p * stride];
    return s;
}

/* for-loops 2: two loops over the pixels, a dot product over k for each. */
static int loops2_f32(const ss_factors *f, int k, float *C, ss_workspace *ws) {
    (void)ws;
    int rc = ss_kern_check(f, k);
    if (rc) return rc;
    size_t m = (size_t)f->m, n = (size_t)f->n, r = (size_t)f->rank;
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) C[i * n + j] = dot_strided(f->U + i * r, f->W + j, n, (size_t)k);
    return SS_OK;
}

/* for-loops 1: k rank-1 updates C += U[:, p] W[p, :]; the inner loop runs
 * along a row of C and of W, so the compiler vectorises it. */
static int loops1_f32(const ss_factors *f, int k, float *restrict C, ss_workspace *ws) {
    (void)ws;
    int rc = ss_kern_check(f, k);
    if (rc) return rc;
    size_t m = (size_t)f->m, n = (size_t)f->n, r = (size_t)f->rank;
    const float *restrict U = f->U, *restrict W = f->W;
    memset(C, 0, m * n * sizeof *C);
    for (size_t p = 0; p < (size_t)k; p++) {
        const float *restrict w = W + p * n;
        for (size_t i = 0; i < m; i++) {
            float a = U[i * r + p];
            float *restrict c = C + i * n;
            for (size_t j = 0; j < n; j++) c[j] += a * w[j];
        }
    }
    return SS_OK;
}

static int loops3_px(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws) {
    return ss_kern_pixels_via_f32(f, k, out, ws, loops3_f32);
}
static int loops2_px(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws) {
    return ss_kern_pixels_via_f32(f, k, out, ws, loops2_f32);
}
static int loops1_px(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws) {
    return ss_kern_pixels_via_f32(f, k, out, ws, loops1_f32);
}

const ss_backend ss_backend_loops3 = {
    "loops3", "cpu", "three nested loops, one multiply-add at a time (for-loops 3)",
    ss_kern_cpu_available, loops3_px, loops3_f32};
const ss_backend ss_backend_loops2 = {
    "loops2", "cpu", "two loops over pixels, a dot product over k each (for-loops 2)",
    ss_kern_cpu_available, loops2_px, loops2_f32};
const ss_backend ss_backend_loops1 = {
    "loops1", "cpu", "k rank-1 outer-product updates (for-loops 1, broadcast 1)",
    ss_kern_cpu_available, loops1_px, loops1_f32};
