/* recon.cu - the `cuda` backend: the project's shared-memory tiled GEMM with fused round/clamp/8-16-bit output */
#include "gpu/gpu_internal.cuh"

/* One block computes one TM x TN output tile of one job of the batch (flat
 * tile index = blockIdx.x; the job is found by binary search over tile0), so
 * slices of different shapes and k share a launch with no idle blocks. The
 * k loop stages a TM x TK slab of U and a TK x TN slab of W in shared
 * memory; each thread accumulates a RM x RN register tile in float and
 * writes rounded, clamped samples straight to the uint8/uint16 staging. */
__global__ void __launch_bounds__(SS_GM_THREADS)
ss_recon_kernel(const ss_gm_job *__restrict__ jobs, int njobs) {
    __shared__ ss_gm_job jb;
    /* U slab stored transposed with a pad column: conflict-free stores
     * (consecutive threads, consecutive kk) and broadcast reads. */
    __shared__ float Us[SS_GM_TK][SS_GM_TM + 1];
    __shared__ float Ws[SS_GM_TK][SS_GM_TN];

    const int tx = threadIdx.x, ty = threadIdx.y, lin = ty * SS_GM_TX + tx;
    const long long tile = blockIdx.x;
    if (lin == 0) jb = jobs[ss_gm_find_job(jobs, njobs, tile)];
    __syncthreads();
    int r0, c0;
    ss_gm_tile_origin(tile - jb.tile0, jb.n, &r0, &c0);

    float acc[SS_GM_RM][SS_GM_RN];
#pragma unroll
    for (int i = 0; i < SS_GM_RM; i++)
#pragma unroll
        for (int j = 0; j < SS_GM_RN; j++) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < jb.k; k0 += SS_GM_TK) {
#pragma unroll
        for (int e = 0; e < SS_GM_LOADS_U; e++) {
            int rr, kk;
            ss_gm_load_u(lin, e, &rr, &kk);
            int row = r0 + rr, p = k0 + kk;
            Us[kk][rr] = (row < jb.m && p < jb.k) ? __ldg(&jb.U[(size_t)row * jb.ldu + p]) : 0.0f;
        }
#pragma unroll
        for (int e = 0; e < SS_GM_LOADS_W; e++) {
            int kk, cc;
            ss_gm_load_w(lin, e, &kk, &cc);
            int col = c0 + cc, p = k0 + kk;
            Ws[kk][cc] = (col < jb.n && p < jb.k) ? __ldg(&jb.W[(size_t)p * jb.n + col]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < SS_GM_TK; kk++) {
            float a[SS_GM_RM], b[SS_GM_RN];
#pragma unroll
            for (int i = 0; i < SS_GM_RM; i++) a[i] = Us[kk][ty + i * SS_GM_TY];
#pragma unroll
            for (int j = 0; j < SS_GM_RN; j++) b[j] = Ws[kk][tx + j * SS_GM_TX];
#pragma unroll
            for (int i = 0; i < SS_GM_RM; i++)
#pragma unroll
                for (int j = 0; j < SS_GM_RN; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < SS_GM_RM; i++) {
        int row = ss_gm_thread_row(r0, ty, i);
        if (row >= jb.m) continue;
#pragma unroll
        for (int j = 0; j < SS_GM_RN; j++) {
            int col = ss_gm_thread_col(c0, tx, j);
            if (col >= jb.n) continue;
            size_t o = (size_t)row * jb.n + col;
            uint16_t v = ss_gm_pixel(acc[i][j], jb.maxval);
            if (jb.out_bytes == 1) ((unsigned char *)jb.out)[o] = (unsigned char)v;
            else ((uint16_t *)jb.out)[o] = v;
        }
    }
}

int ss_gpu_launch_recon(ss_gpu_ctx *ctx, int njobs, long long tiles) {
    dim3 block(SS_GM_TX, SS_GM_TY);
    ss_recon_kernel<<<(unsigned)tiles, block, 0, ctx->stream>>>(ctx->d_jobs, njobs);
    SS_CU_LAUNCHED();
    return 0;
}

static int cuda_available(const char **reason) { return ss_gpu_available(reason); }

/* A batch of one, for the CLI, the bench and direct callers. */
static int cuda_reconstruct(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws) {
    (void)ws;
    ss_gpu_item it = {f, k, out, 0};
    int rc = ss_gpu_run_batch(&ss_backend_cuda, &it, 1, NULL);
    return rc ? rc : it.status;
}

extern "C" const ss_backend ss_backend_cuda = {
    "cuda", "gpu", "the project's own CUDA kernel, shared-memory tiled (Numba CUDA)",
    cuda_available, cuda_reconstruct, NULL};
