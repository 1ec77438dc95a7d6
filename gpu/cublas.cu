/* cublas.cu - the `cublas` backend: batched cuBLAS sgemm on resident factors, then a fused pixel-conversion kernel */
#include <stdlib.h>

#include "gpu/gpu_internal.cuh"

/* Float products of a batch -> rounded, clamped uint8/uint16 samples, with
 * the same tile walk as the cuda backend (one block per 32x32 tile). */
__global__ void
ss_convert_kernel(const ss_gm_job *__restrict__ jobs, int njobs) {
    __shared__ ss_gm_job jb;
    const int tx = threadIdx.x, ty = threadIdx.y;
    const long long tile = blockIdx.x;
    if (tx == 0 && ty == 0) jb = jobs[ss_gm_find_job(jobs, njobs, tile)];
    __syncthreads();
    int r0, c0;
    ss_gm_tile_origin(tile - jb.tile0, jb.n, &r0, &c0);
    ss_gm_convert(&jb, r0, c0, tx, ty);
}

int ss_gpu_launch_convert(ss_gpu_ctx *ctx, int njobs, long long tiles) {
    dim3 block(SS_GM_TX, SS_GM_TY);
    ss_convert_kernel<<<(unsigned)tiles, block, 0, ctx->stream>>>(ctx->d_jobs, njobs);
    SS_CU_LAUNCHED();
    return 0;
}

/* Jobs with the same GEMM shape share one cublasSgemmBatched call. */
typedef struct gemm_key {
    int m, n, k, ldu, j;
} gemm_key;

static int key_cmp(const void *a, const void *b) {
    const gemm_key *x = (const gemm_key *)a, *y = (const gemm_key *)b;
    if (x->m != y->m) return x->m < y->m ? -1 : 1;
    if (x->n != y->n) return x->n < y->n ? -1 : 1;
    if (x->k != y->k) return x->k < y->k ? -1 : 1;
    if (x->ldu != y->ldu) return x->ldu < y->ldu ? -1 : 1;
    return x->j - y->j;
}

static int gemms(ss_gpu_ctx *ctx, gemm_key *keys, int nj) {
    for (int j = 0; j < nj; j++) {
        const ss_gm_job *jb = &ctx->h_jobs[j];
        keys[j].m = jb->m;
        keys[j].n = jb->n;
        keys[j].k = jb->k;
        keys[j].ldu = jb->ldu;
        keys[j].j = j;
    }
    qsort(keys, (size_t)nj, sizeof *keys, key_cmp);
    /* Pointer arrays, grouped: W (A), U (B), C, each nj long. */
    size_t pb = ctx->ptrs_cap * sizeof(float *), pd = pb, need = (size_t)3 * nj * sizeof(float *);
    int rc;
    if ((rc = ss_gpu_grow_host((void **)&ctx->h_ptrs, &pb, need))) return rc;
    if ((rc = ss_gpu_grow_dev((void **)&ctx->d_ptrs, &pd, need))) return rc;
    ctx->ptrs_cap = (pb < pd ? pb : pd) / sizeof(float *);
    for (int s = 0; s < nj; s++) {
        const ss_gm_job *jb = &ctx->h_jobs[keys[s].j];
        ctx->h_ptrs[s] = jb->W;
        ctx->h_ptrs[nj + s] = jb->U;
        ctx->h_ptrs[2 * nj + s] = jb->C;
    }
    SS_CU(cudaMemcpyAsync(ctx->d_ptrs, ctx->h_ptrs, need, cudaMemcpyHostToDevice, ctx->stream));

    const float one = 1.0f, zero = 0.0f;
    for (int s = 0; s < nj;) {
        int e = s + 1;
        while (e < nj && keys[e].m == keys[s].m && keys[e].n == keys[s].n && keys[e].k == keys[s].k &&
               keys[e].ldu == keys[s].ldu)
            e++;
        const gemm_key *kk = &keys[s];
        /* Row-major C = U W is column-major C^T = W^T U^T. */
        if (e - s == 1) {
            const ss_gm_job *jb = &ctx->h_jobs[kk->j];
            SS_CUBLAS(cublasSgemm(ctx->blas, CUBLAS_OP_N, CUBLAS_OP_N, kk->n, kk->m, kk->k, &one, jb->W,
                                  kk->n, jb->U, kk->ldu, &zero, (float *)jb->C, kk->n));
        } else {
            SS_CUBLAS(cublasSgemmBatched(ctx->blas, CUBLAS_OP_N, CUBLAS_OP_N, kk->n, kk->m, kk->k, &one,
                                         ctx->d_ptrs + s, kk->n, ctx->d_ptrs + nj + s, kk->ldu, &zero,
                                         (float *const *)(ctx->d_ptrs + 2 * nj + s), kk->n, e - s));
        }
        s = e;
    }
    return 0;
}

int ss_gpu_launch_cublas(ss_gpu_ctx *ctx, int njobs, long long tiles) {
    if (!ctx->blas) {
        /* Kept only once created: a failed cublasCreate leaves no valid handle. */
        cublasHandle_t h = NULL;
        SS_CUBLAS(cublasCreate(&h));
        ctx->blas = h;
        /* Plain FP32 (no TF32 tensor ops): 16-bit slices need the full mantissa. */
        SS_CUBLAS(cublasSetMathMode(ctx->blas, CUBLAS_DEFAULT_MATH));
    }
    SS_CUBLAS(cublasSetStream(ctx->blas, ctx->stream));
    gemm_key *keys = (gemm_key *)malloc((size_t)njobs * sizeof *keys);
    if (!keys) return ss_fail(SS_ENOMEM, "out of memory for %d GEMM keys", njobs);
    int rc = gemms(ctx, keys, njobs);
    free(keys);
    if (rc) return rc;
    return ss_gpu_launch_convert(ctx, njobs, tiles);
}

static int cublas_available(const char **reason) { return ss_gpu_available(reason); }

/* A batch of one, for the CLI, the bench and direct callers. */
static int cublas_reconstruct(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws) {
    (void)ws;
    ss_gpu_item it = {f, k, out, 0};
    int rc = ss_gpu_run_batch(&ss_backend_cublas, &it, 1, NULL);
    return rc ? rc : it.status;
}

extern "C" const ss_backend ss_backend_cublas = {
    "cublas", "gpu", "cuBLAS sgemm on factors resident on the GPU (CuPy)",
    cublas_available, cublas_reconstruct, NULL};
