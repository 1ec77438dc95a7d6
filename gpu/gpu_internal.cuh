/* gpu_internal.cuh - state and error macros shared by the CUDA translation units (never seen by C code) */
#ifndef SS_GPU_INTERNAL_CUH
#define SS_GPU_INTERNAL_CUH
#include <cuda_runtime.h>
/* SS_GPU_NO_CUBLAS: a build where cuBLAS could not be linked (the harness
 * on a machine without it): the cublas backend reports itself unavailable
 * and our own kernel is still built and checked. */
#ifdef SS_GPU_NO_CUBLAS
typedef void *cublasHandle_t;
#else
#include <cublas_v2.h>
#endif

extern "C" {
#include "util/error.h"
#include "gpu/gpu.h"
#include "gpu/gpu_fail.h"
#include "gpu/gpu_math.h"
}

/* Process-wide device state, guarded by the core's mutex: one stream, one
 * cuBLAS handle, grow-only buffers reused by every batch. */
typedef struct ss_gpu_ctx {
    cudaStream_t stream;
    cublasHandle_t blas;        /* created by the cublas backend's first batch, before its timing */
    cudaEvent_t ev0, ev1;
    ss_gm_job *h_jobs, *d_jobs; /* pinned host / device job descriptors */
    size_t jobs_cap;            /* in jobs */
    unsigned char *h_out, *d_out; /* pinned host / device pixel staging */
    size_t out_cap;             /* in bytes */
    float *d_c;                 /* cuBLAS float products */
    size_t c_cap;               /* in floats */
    const float **h_ptrs, **d_ptrs; /* cuBLAS pointer arrays: 3 per job */
    size_t ptrs_cap;            /* in pointers */
    int pixel_jobs;             /* jobs of the batch converted to pixels (not float jobs) */
    ss_gm_gkey *keys;           /* cuBLAS groups of the batch (malloc) */
    size_t keys_cap;            /* in keys */
} ss_gpu_ctx;

/* Map a CUDA / cuBLAS failure to an engine error with file:line in the
 * message: allocation failures are SS_ENOMEM, anything else SS_EUNAVAIL.
 * Nothing is marked failed here: the batch's end decides (gpu_fail.h) from
 * the class noted by ss_gpu_note_failure and a synchronise whether the
 * batch, its backend or the whole context is lost. */
int ss_gpu_cuda_fail(cudaError_t e, const char *what, const char *file, int line);
/* Backend SS_GF_CUDA or SS_GF_CUBLAS usable (ss_gpu_available: either is). Lock-free. */
extern "C" int ss_gpu_backend_available(int b, const char **reason);
void ss_gpu_note_failure(ss_gf_class cls, const char *msg);
#ifndef SS_GPU_NO_CUBLAS
int ss_gpu_blas_fail(cublasStatus_t s, const char *what, const char *file, int line);
#endif

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

/* Fault injection for the harness's check of the failure policy, compiled
 * only there (-DSS_GPU_FAULT_INJECTION; never in the library): the next
 * batch fails with a call's error, a backend's error, or a kernel that
 * reads an unmapped address (the context breaks: the process's GPU is lost). */
#ifdef SS_GPU_FAULT_INJECTION
enum { SS_GPU_FAULT_NONE, SS_GPU_FAULT_CALL, SS_GPU_FAULT_BACKEND, SS_GPU_FAULT_CONTEXT };
extern int ss_gpu_fault_next;
#endif

/* Grows a pinned host / device buffer to at least `bytes` (contents lost). */
int ss_gpu_grow_host(void **p, size_t *cap_bytes, size_t bytes);
int ss_gpu_grow_dev(void **p, size_t *cap_bytes, size_t bytes);

/* Backend launchers: jobs are packed (tile0, out_off, out set) and already
 * copied to ctx->d_jobs; they enqueue work on ctx->stream between the
 * events and return 0 or an engine error. The cublas backend's set-up (the
 * handle on first use, grouping, the pointer arrays' upload) runs before
 * the first event (ss_gpu_prepare_cublas), so its timing is the GEMMs and
 * the conversion alone. */
int ss_gpu_launch_recon(ss_gpu_ctx *ctx, int njobs, long long tiles);
int ss_gpu_prepare_cublas(ss_gpu_ctx *ctx, int njobs);
int ss_gpu_launch_cublas(ss_gpu_ctx *ctx, int njobs, long long tiles);
/* Destroys the cuBLAS handle, if any (ss_gpu_release). */
void ss_gpu_release_cublas(ss_gpu_ctx *ctx);
/* The fused float -> pixel conversion of C products (cuBLAS path). */
int ss_gpu_launch_convert(ss_gpu_ctx *ctx, int njobs, long long tiles);

#endif
