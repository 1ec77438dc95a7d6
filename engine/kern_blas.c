/* kern_blas.c - the blas backend: one OpenBLAS sgemm of U[:, :k] by W[:k, :] */
#include "util/error.h"
#include "engine/kern_internal.h"

#include <cblas.h>

/* Threading is the program's choice (openblas_set_num_threads): a server that
 * parallelises across requests sets 1, see cli/serve.c. */
static int blas_f32(const ss_factors *f, int k, float *C, ss_workspace *ws) {
    (void)ws;
    int rc = ss_kern_check(f, k);
    if (rc) return rc;
    /* Row-major m x k (lda = rank, so the first k columns of U) by k x n. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, f->m, f->n, k, 1.0f, f->U, f->rank,
                f->W, f->n, 0.0f, C, f->n);
    return SS_OK;
}

static int blas_px(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws) {
    return ss_kern_pixels_via_f32(f, k, out, ws, blas_f32);
}

const ss_backend ss_backend_blas = {
    "blas", "cpu", "one OpenBLAS sgemm (np.dot)", ss_kern_cpu_available, blas_px, blas_f32};
