/* gpu_none.c - the GPU backends in a build without the CUDA toolkit: registered, never available */
#include "gpu/gpu.h"

#include <string.h>

#include "util/error.h"

static const char *const k_reason = "built without the CUDA toolkit";

static int none_available(const char **reason) {
    if (reason) *reason = k_reason;
    return 0;
}

static int none_reconstruct(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws) {
    (void)f; (void)k; (void)out; (void)ws;
    return ss_fail(SS_EUNAVAIL, "%s", k_reason);
}

const ss_backend ss_backend_cuda = {
    "cuda", "gpu", "the project's own CUDA kernel, shared-memory tiled (Numba CUDA)",
    none_available, none_reconstruct, NULL};
const ss_backend ss_backend_cublas = {
    "cublas", "gpu", "cuBLAS sgemm on factors resident on the GPU (CuPy)",
    none_available, none_reconstruct, NULL};

int ss_gpu_run_batch(const ss_backend *b, ss_gpu_item *items, int n, double *device_ms) {
    (void)b;
    if (device_ms) *device_ms = 0;
    for (int i = 0; i < n; i++) items[i].status = SS_EUNAVAIL;
    return ss_fail(SS_EUNAVAIL, "%s", k_reason);
}

int ss_gpu_available(const char **reason) { return none_available(reason); }

void ss_gpu_set_cache_bytes(size_t bytes) { (void)bytes; }

void ss_gpu_get_stats(ss_gpu_stats *st) { memset(st, 0, sizeof *st); }

void ss_gpu_release(void) {}
