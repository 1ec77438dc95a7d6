/* recon.cu - the `cuda` backend: the project's shared-memory tiled GEMM with fused round/clamp/8-16-bit output */
#include "gpu/gpu_internal.cuh"

/* One block computes one TM x TN output tile of one job of the batch (flat
 * tile index = blockIdx.x; the job is found by binary search over tile0), so
 * slices of different shapes and k share a launch with no idle blocks. The
 * k loop stages a TM x TK slab of U and a TK x TN slab of W in shared
 * memory; each thread accumulates a RM x RN register tile in float and
 * writes rounded, clamped samples straight to the uint8/uint16 staging.
 * Kernel names start with svdslice_ so compute-sanitizer can be limited to
 * ours (--kernel-name kns=svdslice_), not cuBLAS's. */
__global__ void
svdslice_recon_kernel(const ss_gm_job *__restrict__ jobs, int njobs) {
    __shared__ ss_gm_job sjob;
    __shared__ ss_gm_uslab Us;
    __shared__ ss_gm_wslab Ws;

    const int tx = threadIdx.x, ty = threadIdx.y, lin = ty * SS_GM_TX + tx;
    const long long tile = blockIdx.x;
    if (lin == 0) sjob = jobs[ss_gm_find_job(jobs, njobs, tile)];
    __syncthreads();
    /* Each thread's own copy: the fields live in registers instead of being
     * re-read from shared memory in every slab and store. */
    const ss_gm_job jb = sjob;
    int r0, c0;
    ss_gm_tile_origin(tile - jb.tile0, jb.n, &r0, &c0);

    float acc[SS_GM_RM][SS_GM_RN];
#pragma unroll
    for (int i = 0; i < SS_GM_RM; i++)
#pragma unroll
        for (int j = 0; j < SS_GM_RN; j++) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < jb.k; k0 += SS_GM_TK) {
        ss_gm_stage(&jb, r0, c0, k0, lin, Us, Ws);
        __syncthreads();
        ss_gm_accumulate(tx, ty, Us, Ws, acc);
        __syncthreads(); /* before the next slab overwrites Us/Ws */
    }
    ss_gm_store(&jb, r0, c0, tx, ty, acc);
}

int ss_gpu_launch_recon(ss_gpu_ctx *ctx, int njobs, long long tiles) {
    dim3 block(SS_GM_TX, SS_GM_TY);
    svdslice_recon_kernel<<<(unsigned)tiles, block, 0, ctx->stream>>>(ctx->d_jobs, njobs);
    SS_CU_LAUNCHED();
    return 0;
}

static int cuda_available(const char **reason) { return ss_gpu_backend_available(SS_GF_CUDA, reason); }

/* A batch of one, for the CLI, the bench and direct callers. */
static int cuda_reconstruct(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws) {
    (void)ws;
    ss_gpu_item it = {f, k, out, 0, NULL};
    int rc = ss_gpu_run_batch(&ss_backend_cuda, &it, 1, NULL);
    return rc ? rc : it.status;
}

extern "C" const ss_backend ss_backend_cuda = {
    "cuda", "gpu", "the project's own CUDA kernel, shared-memory tiled (Numba CUDA)",
    cuda_available, cuda_reconstruct, NULL};
