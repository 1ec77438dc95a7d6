/* gpu.h - plain-C face of the GPU backends (cuda, cublas); no CUDA types here */
#ifndef SS_GPU_H
#define SS_GPU_H
#include <stddef.h>
#include <stdint.h>

#include "engine/kernels.h"

/* Always defined: by the gpu/ CUDA sources when the toolkit was found at build time, else
 * by gpu/gpu_none.c, where both report themselves unavailable with a reason. */
extern const ss_backend ss_backend_cuda;
extern const ss_backend ss_backend_cublas;

/* Registers both into the engine's backend registry (engine/kernels.h). Call
 * once at start-up, before threads look backends up. Returns 0. */
int ss_gpu_register(void);

/* One request of a batch: rank-k reconstruction of f into out (m*n samples,
 * 0..2^bit_depth-1), or, when out_f32 is set, the product C = U[:, :k]
 * W[:k, :] itself into out_f32 (m*n floats, unrounded; out unused, and the
 * bit depth is only a label then: volume slices of any data type). Pixel and
 * float items mix in one batch. status is set by ss_gpu_run_batch: 0, SS_EINVAL (bad k
 * or factors), SS_ENOMEM (device or host memory), or SS_EUNAVAIL (no GPU,
 * or a CUDA/cuBLAS failure: the batch alone, unless the backend cannot run
 * here or the context broke, which marks one or both backends unavailable;
 * docs/GPU.md "Errors"). */
typedef struct ss_gpu_item {
    const ss_factors *f;
    int k;
    uint16_t *out;
    int status;
    float *out_f32;
} ss_gpu_item;

/* Runs items[0..n) on backend b (cuda or cublas) as one batch: factors are
 * uploaded on first use and kept resident (LRU keyed by f->id; factors with
 * an empty id are uploaded for this batch only), all products computed in
 * one launch (cuda) or one batched GEMM per shape (cublas), converted to
 * pixels on the device (not for float items), one copy back. Returns 0 when the batch ran (each
 * item's status says how it went; *device_ms, if not NULL, gets the kernels'
 * device time), or a negative error that every item's status also carries.
 * Thread-safe (callers are serialised: one context, one stream, one cuBLAS
 * handle for the process). */
int ss_gpu_run_batch(const ss_backend *b, ss_gpu_item *items, int n, double *device_ms);

/* 1 while a CUDA device can be used by either backend, else 0 with *reason
 * (static string). Probed once, thread-safe, lock-free. */
int ss_gpu_available(const char **reason);

/* Byte budget of the device-resident factors (default 256 MiB). A batch may
 * exceed it while it runs; the LRU trims back to it afterwards. */
void ss_gpu_set_cache_bytes(size_t bytes);

typedef struct ss_gpu_stats {
    long long uploads, hits, evictions;
    size_t resident_bytes;
    int resident_slices;
} ss_gpu_stats;
void ss_gpu_get_stats(ss_gpu_stats *st);

/* Frees every device buffer, the cuBLAS handle and the stream (the next
 * batch re-creates them). Call when the GPU's user (the queue) stops. */
void ss_gpu_release(void);

#endif
