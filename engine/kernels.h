/* kernels.h - the backend registry: interchangeable reconstruction kernels */
#ifndef SS_KERNELS_H
#define SS_KERNELS_H
#include <stddef.h>
#include <stdint.h>

#include "engine/svd.h"

/* Scratch memory a caller owns and reuses across calls (one per worker
 * thread) so kernels never allocate in their hot loops. */
typedef struct ss_workspace ss_workspace;
ss_workspace *ss_workspace_new(void);            /* NULL on ENOMEM; free with _free */
void ss_workspace_free(ss_workspace *ws);        /* NULL-safe */
float *ss_workspace_floats(ss_workspace *ws, size_t n); /* grows; NULL on ENOMEM */

/* One backend. reconstruct() computes R = U[:, :k] * W[:k, :] and writes
 * round-and-clamp(R) to out (m*n samples, 0..2^f->bit_depth-1). It returns 0,
 * SS_EINVAL (k not in 1..rank), SS_EUNAVAIL, or another engine error.
 * available() returns 1, or 0 and sets *reason (static string). */
typedef struct ss_backend {
    const char *name;        /* "loops3", ... */
    const char *device;      /* "cpu" or "gpu" */
    const char *description; /* the study's variant it reproduces */
    int (*available)(const char **reason);
    int (*reconstruct)(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws);
    /* Float output for tests and the bench: C = U[:, :k] W[:k, :] (m*n floats),
     * no rounding; NULL for backends that only produce pixels. */
    int (*reconstruct_f32)(const ss_factors *f, int k, float *C, ss_workspace *ws);
} ss_backend;

/* The eight named backends in API.md order (loops3, loops2, loops1, blocked,
 * threads, blas, cuda, cublas), always registered. `auto` is not among them. */
int ss_backend_count(void);
const ss_backend *ss_backend_at(int i);
/* Fills the registry slot of b's name (one of the eight; the GPU layer
 * registers cuda and cublas this way at start-up, before any lookup runs
 * concurrently). b must outlive the process. Returns 0 or SS_EINVAL. */
int ss_backend_register(const ss_backend *b);
/* Finds a backend by name; "auto" returns NULL here (use ss_backend_choose). */
const ss_backend *ss_backend_find(const char *name);
/* Returns 1 if name is one of the eight or "auto". */
int ss_backend_name_valid(const char *name);
/* "loops3, loops2, ..., cublas, auto" for error messages. */
const char *ss_backend_names(void);
/* What `auto` picks for this request: the fastest available backend. */
const ss_backend *ss_backend_choose(const ss_factors *f, int k);

/* Threads used by the `threads` kernel (default: online cores). */
void ss_kernels_set_threads(int n);
int ss_kernels_threads(void);

/* Float64 reference: C[i,j] = sum_p U[i,p] * W[p,j] in double (m*n doubles). */
void ss_reference_f64(const ss_factors *f, int k, double *C);

/* Rounds and clamps n floats to 0..maxval (round half away from zero). */
void ss_pixels_from_float(const float *C, size_t n, int maxval, uint16_t *out);

/* Output conversions of API.md. bits: 16->8 round(v/257), 8->16 v*257.
 * window: clamp(round((v - C + W/2) / W * 255), 0, 255), 8-bit result. */
void ss_pixels_convert_bits(const uint16_t *in, size_t n, int from_bits, int to_bits, uint16_t *out);
void ss_pixels_window(const uint16_t *in, size_t n, double center, double width, uint16_t *out);

#endif
