/* kernels.c - the backend registry, workspaces, auto choice, float64 reference and pixel conversions */
#include "engine/kernels.h"
#include "util/error.h"
#include "engine/kern_internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Above this many multiply-adds (m*n*k) a request is worth the GPU's fixed
 * costs. An estimate, not yet a measurement (no GPU was lent to the session
 * that set it): one GPU request costs ~0.05 ms of launch, copies and sync
 * (~0.25 ms with the queue's 0.2 ms batching wait), OpenBLAS on one core does
 * ~100 GFLOP/s, so break-even is near 2*12.5e6 flops; a 256x170 slice at
 * k=170 (7.4e6) stays on the CPU. Re-tune with scripts/gpu_device_run.sh. */
#define SS_AUTO_GPU_MIN_WORK (1LL << 24)

/* ---- workspace ------------------------------------------------------------ */

struct ss_workspace {
    float *f;
    size_t cap; /* floats */
};

/* Returns a new empty workspace (free with ss_workspace_free), NULL on ENOMEM. */
ss_workspace *ss_workspace_new(void) {
    ss_workspace *ws = calloc(1, sizeof *ws);
    if (!ws) ss_fail(SS_ENOMEM, "out of memory for a workspace");
    return ws;
}

void ss_workspace_free(ss_workspace *ws) {
    if (!ws) return;
    free(ws->f);
    free(ws);
}

/* The buffer stays owned by ws; its contents are not kept when it grows. */
float *ss_workspace_floats(ss_workspace *ws, size_t n) {
    if (!ws) {
        ss_fail(SS_EINVAL, "no workspace");
        return NULL;
    }
    if (n == 0) n = 1;
    if (n > ws->cap) {
        /* 64-byte aligned rows help the vector loads; grow by 1/4 to avoid churn. */
        size_t want = n + n / 4;
        if (want > ((size_t)-1 - 63) / sizeof(float)) want = n;
        size_t bytes = (want * sizeof(float) + 63) & ~(size_t)63;
        float *p = aligned_alloc(64, bytes);
        if (!p) {
            ss_fail(SS_ENOMEM, "out of memory for %zu floats", n);
            return NULL;
        }
        free(ws->f);
        ws->f = p;
        ws->cap = want;
    }
    return ws->f;
}

/* ---- registry ------------------------------------------------------------- */

/* The GPU slots until gpu/ registers its backends (ss_gpu_register): like
 * BLIS's reference kernels, a lookup never finds nothing, and a process that
 * did not link the GPU layer still answers "unavailable, because". */
static const char *const k_gpu_unregistered = "GPU backends not registered in this program";

static int gpu_slot_available(const char **reason) {
    if (reason) *reason = k_gpu_unregistered;
    return 0;
}

static int gpu_slot_reconstruct(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws) {
    (void)f; (void)k; (void)out; (void)ws;
    return ss_fail(SS_EUNAVAIL, "%s", k_gpu_unregistered);
}

static const ss_backend k_cuda_slot = {"cuda", "gpu", "the project's own CUDA kernel",
                                       gpu_slot_available, gpu_slot_reconstruct, NULL};
static const ss_backend k_cublas_slot = {"cublas", "gpu", "cuBLAS sgemm",
                                         gpu_slot_available, gpu_slot_reconstruct, NULL};

/* API.md order. Entries are replaced only by ss_backend_register, at start-up. */
static const ss_backend *g_backends[] = {
    &ss_backend_loops3, &ss_backend_loops2, &ss_backend_loops1, &ss_backend_blocked,
    &ss_backend_threads, &ss_backend_blas, &k_cuda_slot, &k_cublas_slot,
};
enum { NBACKENDS = (int)(sizeof g_backends / sizeof g_backends[0]) };

int ss_backend_register(const ss_backend *b) {
    if (!b || !b->name || !b->available || !b->reconstruct)
        return ss_fail(SS_EINVAL, "backend without a name or functions");
    for (int i = 0; i < NBACKENDS; i++)
        if (strcmp(g_backends[i]->name, b->name) == 0) {
            __atomic_store_n(&g_backends[i], b, __ATOMIC_RELEASE);
            return SS_OK;
        }
    return ss_fail(SS_EINVAL, "no backend slot named %s", b->name);
}

int ss_backend_count(void) { return NBACKENDS; }

const ss_backend *ss_backend_at(int i) {
    return (i >= 0 && i < NBACKENDS) ? __atomic_load_n(&g_backends[i], __ATOMIC_ACQUIRE) : NULL;
}

const ss_backend *ss_backend_find(const char *name) {
    if (!name) return NULL;
    for (int i = 0; i < NBACKENDS; i++) {
        const ss_backend *b = ss_backend_at(i);
        if (strcmp(b->name, name) == 0) return b;
    }
    return NULL;
}

int ss_backend_name_valid(const char *name) {
    return name && (strcmp(name, "auto") == 0 || ss_backend_find(name) != NULL);
}

/* Kept in step with g_backends by a test. */
const char *ss_backend_names(void) {
    return "loops3, loops2, loops1, blocked, threads, blas, cuda, cublas, auto";
}

/* Policy: blas (always available, ~100 GFLOP/s on one core) unless the
 * request is big enough for a GPU to win, then cublas, then cuda, if one can
 * run here. Never returns NULL. */
const ss_backend *ss_backend_choose(const ss_factors *f, int k) {
    if (f && k > 0) {
        long long work = (long long)f->m * f->n * k;
        if (work >= SS_AUTO_GPU_MIN_WORK) {
            const ss_backend *cublas = ss_backend_find("cublas"), *cuda = ss_backend_find("cuda");
            if (cublas->available(NULL)) return cublas;
            if (cuda->available(NULL)) return cuda;
        }
    }
    return &ss_backend_blas;
}

/* ---- threads setting ------------------------------------------------------ */

static atomic_int g_threads; /* 0: default (online cores) */

void ss_kernels_set_threads(int n) { atomic_store(&g_threads, n > 0 ? n : 0); }

int ss_kernels_threads(void) {
    int n = atomic_load(&g_threads);
    if (n > 0) return n;
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)c : 1;
}

/* ---- helpers the kernels share -------------------------------------------- */

int ss_kern_check(const ss_factors *f, int k) {
    if (!f || !f->U || !f->W || f->m <= 0 || f->n <= 0 || f->rank <= 0)
        return ss_fail(SS_EINVAL, "no factors to reconstruct from");
    if (f->bit_depth != 8 && f->bit_depth != 16)
        return ss_fail(SS_EINVAL, "bad bit depth %d", f->bit_depth);
    if (k < 1 || k > f->rank)
        return ss_fail(SS_EINVAL, "k must be in 1..%d, got %d", f->rank, k);
    return SS_OK;
}

int ss_kern_maxval(const ss_factors *f) { return (1 << f->bit_depth) - 1; }

int ss_kern_cpu_available(const char **reason) {
    if (reason) *reason = NULL;
    return 1;
}

int ss_kern_pixels_via_f32(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws,
                           ss_kern_f32_fn fn) {
    int rc = ss_kern_check(f, k);
    if (rc) return rc;
    if (!out) return ss_fail(SS_EINVAL, "no output buffer");
    float *C = ss_workspace_floats(ws, (size_t)f->m * (size_t)f->n);
    if (!C) return ws ? SS_ENOMEM : SS_EINVAL;
    rc = fn(f, k, C, ws);
    if (rc) return rc;
    ss_pixels_from_float(C, (size_t)f->m * (size_t)f->n, ss_kern_maxval(f), out);
    return SS_OK;
}

/* ---- reference and conversions -------------------------------------------- */

/* k is clamped to 0..rank (0 gives zeros): the reference never fails. */
void ss_reference_f64(const ss_factors *f, int k, double *C) {
    size_t m = (size_t)f->m, n = (size_t)f->n, r = (size_t)f->rank;
    if (k > f->rank) k = f->rank;
    if (k < 0) k = 0;
    for (size_t i = 0; i < m * n; i++) C[i] = 0.0;
    for (size_t i = 0; i < m; i++)
        for (size_t p = 0; p < (size_t)k; p++) {
            double a = f->U[i * r + p];
            const float *w = f->W + p * n;
            double *c = C + i * n;
            for (size_t j = 0; j < n; j++) c[j] += a * (double)w[j];
        }
}

/* Branch-free so it vectorises: NaN and negatives -> 0, >= maxval -> maxval,
 * else trunc plus one when the fraction is >= 0.5 (x + 0.5f would round
 * 0.49999997f up). x - trunc(x) is exact below 2^23. Cloned for wider
 * vectors: the build targets baseline x86-64, and this pass is ~10% of a
 * 256x170 blas reconstruction. */
/* Not under TSan: the clone's ifunc resolver runs before TSan's runtime is
 * up and the program dies at load. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void ss_pixels_from_float(const float *C, size_t n, int maxval, uint16_t *out) {
    float hi = maxval > 0 ? (float)maxval : 0.0f;
    for (size_t i = 0; i < n; i++) {
        float x = C[i];
        x = x > 0.0f ? x : 0.0f; /* NaN fails the comparison */
        x = x < hi ? x : hi;
        int t = (int)x;
        t += (x - (float)t) >= 0.5f;
        out[i] = (uint16_t)t;
    }
}

/* Other depths than 8/16, or equal ones, copy. in may equal out. */
void ss_pixels_convert_bits(const uint16_t *in, size_t n, int from_bits, int to_bits,
                            uint16_t *out) {
    if (from_bits == 16 && to_bits == 8) {
        /* round(v / 257): no ties since 257 is odd, so floor((v + 128) / 257). */
        for (size_t i = 0; i < n; i++) out[i] = (uint16_t)(((unsigned)in[i] + 128u) / 257u);
    } else if (from_bits == 8 && to_bits == 16) {
        for (size_t i = 0; i < n; i++) {
            unsigned v = in[i] > 255 ? 255u : in[i];
            out[i] = (uint16_t)(v * 257u);
        }
    } else if (in != out) {
        memmove(out, in, n * sizeof *out);
    }
}

/* A width that is not > 0 (or NaN) degenerates to a step at center. */
void ss_pixels_window(const uint16_t *in, size_t n, double center, double width,
                      uint16_t *out) {
    if (!(width > 0)) {
        for (size_t i = 0; i < n; i++) out[i] = (double)in[i] >= center ? 255 : 0;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        /* Evaluated in the formula's order so ties land as a float64 reference's do. */
        double x = ((double)in[i] - center + width / 2.0) / width * 255.0;
        if (!(x > 0.0)) {
            out[i] = 0;
        } else if (x >= 255.0) {
            out[i] = 255;
        } else {
            double t = floor(x);
            out[i] = (uint16_t)(t + (x - t >= 0.5 ? 1.0 : 0.0));
        }
    }
}
