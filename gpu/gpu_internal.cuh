/* gpu_internal.cuh - state and error macros shared by the CUDA translation units (never seen by C code) */
#ifndef SS_GPU_INTERNAL_CUH
#define SS_GPU_INTERNAL_CUH
#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "util/error.h"
#include "gpu/gpu.h"
#include "gpu/gpu_math.h"
}

/* Process-wide device state, guarded by the core's mutex: one stream, one
 * cuBLAS handle, grow-only buffers reused by every batch. */
typedef struct ss_gpu_ctx {
    cudaStream_t stream;
    cublasHandle_t blas;        /* created on the cublas backend's first batch */
    cudaEvent_t ev0, ev1;
    ss_gm_job *h_jobs, *d_jobs; /* pinned host / device job descriptors */
    size_t jobs_cap;            /* in jobs */
    unsigned char *h_out, *d_out; /* pinned host / device pixel staging */
    size_t out_cap;             /* in bytes */
    float *d_c;                 /* cuBLAS float products */
    size_t c_cap;               /* in floats */
    const float **h_ptrs, **d_ptrs; /* cuBLAS pointer arrays: 3 per job */
    size_t ptrs_cap;            /* in pointers */
} ss_gpu_ctx;

/* Map a CUDA / cuBLAS failure to an engine error with file:line in the
 * message: allocation failures are SS_ENOMEM, anything else SS_EUNAVAIL and
 * marks the device failed (a sticky error poisons the context). */
int ss_gpu_cuda_fail(cudaError_t e, const char *what, const char *file, int line);
int ss_gpu_blas_fail(cublasStatus_t s, const char *what, const char *file, int line);

#define SS_CU(call)                                                              \
    do {                                                                         \
        cudaError_t ss_e_ = (call);                                              \
        if (ss_e_ != cudaSuccess) return ss_gpu_cuda_fail(ss_e_, #call, __FILE__, __LINE__); \
    } while (0)
#define SS_CUBLAS(call)                                                          \
    do {                                                                         \
        cublasStatus_t ss_s_ = (call);                                           \
        if (ss_s_ != CUBLAS_STATUS_SUCCESS) return ss_gpu_blas_fail(ss_s_, #call, __FILE__, __LINE__); \
    } while (0)
/* After every launch: configuration errors show up here, not at the call. */
#define SS_CU_LAUNCHED() SS_CU(cudaGetLastError())

/* Grows a pinned host / device buffer to at least `bytes` (contents lost). */
int ss_gpu_grow_host(void **p, size_t *cap_bytes, size_t bytes);
int ss_gpu_grow_dev(void **p, size_t *cap_bytes, size_t bytes);

/* Backend launchers: jobs are packed (tile0, out_off, out set) and already
 * copied to ctx->d_jobs; they enqueue work on ctx->stream between the
 * events and return 0 or an engine error. */
int ss_gpu_launch_recon(ss_gpu_ctx *ctx, int njobs, long long tiles);
int ss_gpu_launch_cublas(ss_gpu_ctx *ctx, int njobs, long long tiles);
/* The fused float -> pixel conversion of C products (cuBLAS path). */
int ss_gpu_launch_convert(ss_gpu_ctx *ctx, int njobs, long long tiles);

#endif
