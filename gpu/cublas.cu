/* cublas.cu - the `cublas` backend: batched cuBLAS sgemm on resident factors, then a fused pixel-conversion kernel */
#include <stdio.h>
#include <stdlib.h>

#include "gpu/gpu_internal.cuh"

/* Float products of a batch -> rounded, clamped uint8/uint16 samples, with
 * the same tile walk as the cuda backend (one block per 32x32 tile). */
__global__ void
svdslice_convert_kernel(const ss_gm_job *__restrict__ jobs, int njobs) {
    __shared__ ss_gm_job sjob;
    const int tx = threadIdx.x, ty = threadIdx.y;
    const long long tile = blockIdx.x;
    if (tx == 0 && ty == 0) sjob = jobs[ss_gm_find_job(jobs, njobs, tile)];
    __syncthreads();
    const ss_gm_job jb = sjob; /* in registers, as in the cuda kernel */
    if (jb.out_bytes == SS_GM_OUT_F32) return; /* the GEMM wrote its output (whole block: no barrier follows) */
    int r0, c0;
    ss_gm_tile_origin(tile - jb.tile0, jb.n, &r0, &c0);
    ss_gm_convert(&jb, r0, c0, tx, ty);
}

int ss_gpu_launch_convert(ss_gpu_ctx *ctx, int njobs, long long tiles) {
    dim3 block(SS_GM_TX, SS_GM_TY);
    svdslice_convert_kernel<<<(unsigned)tiles, block, 0, ctx->stream>>>(ctx->d_jobs, njobs);
    SS_CU_LAUNCHED();
    return 0;
}

#ifndef SS_GPU_NO_CUBLAS

int ss_gpu_blas_fail(cublasStatus_t s, const char *what, const char *file, int line) {
    if (s == CUBLAS_STATUS_ALLOC_FAILED)
        return ss_fail(SS_ENOMEM, "%s:%d: %s: cuBLAS allocation failed", file, line, what);
    char msg[200];
    snprintf(msg, sizeof msg, "%s:%d: %s (cuBLAS status %d)", file, line, cublasGetStatusString(s), (int)s);
    /* cuBLAS that cannot start or has no kernels for this GPU stops the
     * backend; INVALID_VALUE, NOT_SUPPORTED, EXECUTION_FAILED and the like
     * fail the batch, unless the context broke (checked at the batch's end). */
    int backend = s == CUBLAS_STATUS_NOT_INITIALIZED || s == CUBLAS_STATUS_ARCH_MISMATCH ||
                  s == CUBLAS_STATUS_LICENSE_ERROR;
    ss_gpu_note_failure(backend ? SS_GF_BACKEND : SS_GF_CALL, msg);
    return ss_fail(SS_EUNAVAIL, "%s:%d: %s: %s (cuBLAS status %d)", file, line, what, cublasGetStatusString(s),
                   (int)s);
}

/* The handle (first use), the groups by GEMM shape and the pointer arrays'
 * upload: before the batch's first event, so not timed. Grouping, pointer
 * arrays and arguments come from gpu_math.h, where tests/test_gpu_math.c
 * runs them through a column-major GEMM on the host. */
int ss_gpu_prepare_cublas(ss_gpu_ctx *ctx, int nj) {
    if (!ctx->blas) {
        /* Kept only once created: a failed cublasCreate leaves no valid handle. */
        cublasHandle_t h = NULL;
        SS_CUBLAS(cublasCreate(&h));
        ctx->blas = h;
        /* Plain FP32 (no TF32 tensor ops): 16-bit slices need the full mantissa. */
        SS_CUBLAS(cublasSetMathMode(ctx->blas, CUBLAS_DEFAULT_MATH));
    }
    SS_CUBLAS(cublasSetStream(ctx->blas, ctx->stream));
    if ((size_t)nj > ctx->keys_cap) {
        ss_gm_gkey *k = (ss_gm_gkey *)realloc(ctx->keys, (size_t)nj * sizeof *k);
        if (!k) return ss_fail(SS_ENOMEM, "out of memory for %d GEMM keys", nj);
        ctx->keys = k;
        ctx->keys_cap = (size_t)nj;
    }
    size_t pb = ctx->ptrs_cap * sizeof(float *), pd = pb, need = (size_t)3 * nj * sizeof(float *);
    int rc;
    if ((rc = ss_gpu_grow_host((void **)&ctx->h_ptrs, &pb, need))) return rc;
    if ((rc = ss_gpu_grow_dev((void **)&ctx->d_ptrs, &pd, need))) return rc;
    ctx->ptrs_cap = (pb < pd ? pb : pd) / sizeof(float *);
    ss_gm_group(ctx->h_jobs, nj, ctx->keys, ctx->h_ptrs);
    SS_CU(cudaMemcpyAsync(ctx->d_ptrs, ctx->h_ptrs, need, cudaMemcpyHostToDevice, ctx->stream));
    return 0;
}

/* One cublasSgemmBatched per GEMM shape (cublasSgemm for a group of one),
 * then the conversion kernel, unless every job is a float job. */
int ss_gpu_launch_cublas(ss_gpu_ctx *ctx, int nj, long long tiles) {
    const ss_gm_gkey *keys = ctx->keys;
    const float one = 1.0f, zero = 0.0f;
    for (int s = 0; s < nj;) {
        int e = ss_gm_group_end(keys, nj, s);
        const ss_gm_job *jb = &ctx->h_jobs[keys[s].j];
        ss_gm_gemm g = ss_gm_gemm_args(jb);
        if (e - s == 1) {
            SS_CUBLAS(cublasSgemm(ctx->blas, CUBLAS_OP_N, CUBLAS_OP_N, g.rows, g.cols, g.k, &one, jb->W, g.lda,
                                  jb->U, g.ldb, &zero, (float *)jb->C, g.ldc));
        } else {
            SS_CUBLAS(cublasSgemmBatched(ctx->blas, CUBLAS_OP_N, CUBLAS_OP_N, g.rows, g.cols, g.k, &one,
                                         ctx->d_ptrs + s, g.lda, ctx->d_ptrs + nj + s, g.ldb, &zero,
                                         (float *const *)(ctx->d_ptrs + 2 * nj + s), g.ldc, e - s));
        }
        s = e;
    }
    return ctx->pixel_jobs ? ss_gpu_launch_convert(ctx, nj, tiles) : 0;
}

void ss_gpu_release_cublas(ss_gpu_ctx *ctx) {
    if (ctx->blas) cublasDestroy(ctx->blas);
    ctx->blas = NULL;
}

#else /* SS_GPU_NO_CUBLAS: the backend is listed, unavailable (gpu_core.cu says why) */

int ss_gpu_prepare_cublas(ss_gpu_ctx *ctx, int nj) {
    (void)ctx;
    (void)nj;
    return ss_fail(SS_EUNAVAIL, "cuBLAS missing: this build could not link it");
}
int ss_gpu_launch_cublas(ss_gpu_ctx *ctx, int nj, long long tiles) {
    (void)tiles;
    return ss_gpu_prepare_cublas(ctx, nj);
}
void ss_gpu_release_cublas(ss_gpu_ctx *ctx) { (void)ctx; }

#endif

static int cublas_available(const char **reason) { return ss_gpu_backend_available(SS_GF_CUBLAS, reason); }

/* A batch of one, for the CLI, the bench and direct callers. */
static int cublas_reconstruct(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws) {
    (void)ws;
    ss_gpu_item it = {f, k, out, 0, NULL};
    int rc = ss_gpu_run_batch(&ss_backend_cublas, &it, 1, NULL);
    return rc ? rc : it.status;
}

extern "C" const ss_backend ss_backend_cublas = {
    "cublas", "gpu", "cuBLAS sgemm on factors resident on the GPU (CuPy)",
    cublas_available, cublas_reconstruct, NULL};
