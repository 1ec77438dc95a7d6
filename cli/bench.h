/* bench.h - `svdslice bench`: every backend checked against the float64 reference, then timed */
#ifndef SS_BENCH_H
#define SS_BENCH_H
#include <stddef.h>
#include <stdio.h>

#include "engine/kernels.h"

/* One (backend, k) measurement. Times are NaN when the backend was not timed
 * (skipped, wrong or failed); max_abs_err is NaN when it was not checked. */
typedef struct ss_bench_row {
    char backend[24];   /* backend name, "auto", or "sgemm" for the bare-BLAS baseline */
    char chosen[24];    /* the backend that ran (differs from backend only for auto) */
    int k, height, width, repeat;
    double median_ms, min_ms, gflops, max_abs_err;
    const char *status; /* "ok", "baseline", "wrong", "skipped", "error" (static) */
    char error[256];    /* why, when status is not ok/baseline; "" otherwise */
} ss_bench_row;

/* Largest float error (against ss_reference_f64) a backend may show and still
 * be timed: below 0.5 every rounded pixel is within +-1 of the reference. */
#define SS_BENCH_TOL_FLOAT 0.5
/* Largest pixel difference from the rounded, clamped reference. */
#define SS_BENCH_TOL_PIXEL 1.0

/* Checks backend b at rank k against ref (m*n doubles from ss_reference_f64,
 * computed by the caller): max abs error of reconstruct_f32 when present,
 * else of the pixels against the rounded reference (the pixels are checked in
 * both cases). Then, if right, warms up and times `repeat` full reconstructs
 * (pixels out) with CLOCK_MONOTONIC. Fills *row (name, k, dims, status...).
 * Returns 0 (the row says what happened) or SS_ENOMEM. */
int ss_bench_backend(const ss_backend *b, const ss_factors *f, int k, const double *ref, int repeat,
                     ss_bench_row *row);
/* The same for a bare cblas_sgemm of the same shape (row "sgemm", status "baseline"). */
int ss_bench_sgemm(const ss_factors *f, int k, const double *ref, int repeat, ss_bench_row *row);

/* Writes a standalone SVG bar chart of the timed rows: groups per k, one bar
 * (class "bar", data-backend, data-k) per row, log-scale time axis with decade
 * ticks, legend, and `title`. Returns 0 or -1 on a write error. */
int ss_bench_plot_svg(FILE *fp, const ss_bench_row *rows, size_t n, const char *title);

/* The CPU model from /proc/cpuinfo ("unknown CPU" if absent) into buf. */
void ss_cpu_model(char *buf, size_t size);

/* `svdslice bench` (argv[0] is "bench"); returns the exit code. */
int ss_cmd_bench(int argc, char **argv);

#endif
