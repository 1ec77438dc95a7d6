/* bench.c - `svdslice bench`: check every backend against float64, then time it, as table/csv/json/SVG */
#include "cli/bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <jansson.h>

#include "util/clock.h"
#include "util/error.h"
#include "engine/png.h"
#include "util/file.h"
#include "engine/svd.h"
#include "cli/cli.h"
#include "cli/phantom.h"
#include "cli/volume.h"

#define BENCH_MAX_K 64
#define BENCH_MAX_BACKENDS 16
/* Warm-up: at least this many runs and this much time before timing. */
#define WARMUP_RUNS 2
#define WARMUP_MS 20.0

static const char k_help_bench[] =
    "usage: svdslice bench [IN.png] [--backends a,b] [--k 170,130,90,50] [--repeat N]\n"
    "                      [--format table|csv|json] [--plot OUT.svg] [--threads N]\n"
    "                      [--size HxW] [--no-baseline]\n"
    "       svdslice bench --volume IN.nii[.gz] [--backends a,b] [--k LIST] [--repeat N]\n"
    "                      [--threads N] [--format table|json]\n"
    "\n"
    "Factorises IN.png (default: the built-in 256x170 head phantom) once, then for\n"
    "every backend and k checks the reconstruction against a float64 product of the\n"
    "same factors (a wrong backend is reported, not timed) and times `repeat` full\n"
    "reconstructions (pixels out) after a warm-up. A bare cblas_sgemm of the same\n"
    "shape is timed as the baseline row \"sgemm\".\n"
    "\n"
    "  --backends a,b   backends to run (default: all eight; unavailable ones are\n"
    "                   reported as skipped with the reason); auto is accepted\n"
    "  --k LIST         ranks (default 170,130,90,50, those not above the rank)\n"
    "  --repeat N       timed runs per (backend, k), median and min reported (default 10)\n"
    "  --format F       table (default), csv or json: one array of rows {backend, k,\n"
    "                   height, width, repeat, median_ms, min_ms, gflops, max_abs_err,\n"
    "                   status, error, chosen, ratio_to_blas}\n"
    "  --plot OUT.svg   also write an SVG bar chart (log time axis)\n"
    "  --threads N      threads of the `threads` backend (default: online cores)\n"
    "  --size HxW       size of the phantom when no IN.png is given (default 256x170)\n"
    "  --no-baseline    leave out the sgemm baseline row\n"
    "  --volume FILE    bench a whole NIfTI volume instead: bytes -> factors time,\n"
    "                   then per k every backend rebuilding all slices split over\n"
    "                   --threads threads (default: online cores), slices/s, GFLOP/s\n"
    "                   and the ratio to bare cblas_sgemm calls of each slice's shape\n"
    "                   run the same way (GEMM time only), and the .nii.gz write speed\n";

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void row_init(ss_bench_row *row, const char *name, const ss_factors *f, int k, int repeat) {
    memset(row, 0, sizeof *row);
    snprintf(row->backend, sizeof row->backend, "%s", name);
    snprintf(row->chosen, sizeof row->chosen, "%s", name);
    row->k = k;
    row->height = f->m;
    row->width = f->n;
    row->repeat = repeat;
    row->median_ms = row->min_ms = row->gflops = row->max_abs_err = NAN;
    row->status = "ok";
}

/* Median and min of `repeat` samples into the row, gflops = 2 m n k / median. */
static void row_times(ss_bench_row *row, double *t, int repeat) {
    qsort(t, (size_t)repeat, sizeof *t, cmp_double);
    row->min_ms = t[0];
    row->median_ms = repeat % 2 ? t[repeat / 2] : 0.5 * (t[repeat / 2 - 1] + t[repeat / 2]);
    row->gflops = 2.0 * row->height * row->width * row->k / (row->median_ms * 1e6);
}

/* The error of pixels against round-and-clamp(ref), as float. */
static double pixel_error(const uint16_t *px, const double *ref, size_t n, int maxval) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double r = round(ref[i]);
        if (r < 0) r = 0;
        if (r > maxval) r = maxval;
        double e = fabs(px[i] - r);
        if (e > worst) worst = e;
    }
    return worst;
}

static double float_error(const float *C, const double *ref, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)C[i] - ref[i]);
        if (!(e <= worst)) worst = e; /* NaN wins: a NaN output is wrong */
    }
    return worst;
}

int ss_bench_backend(const ss_backend *b, const ss_factors *f, int k, const double *ref, int repeat,
                     ss_bench_row *row) {
    row_init(row, b->name, f, k, repeat);
    const char *reason = NULL;
    if (!b->available(&reason)) {
        row->status = "skipped";
        snprintf(row->error, sizeof row->error, "%s", reason ? reason : "unavailable");
        return SS_OK;
    }
    size_t n = (size_t)f->m * f->n;
    int maxval = f->bit_depth == 16 ? 65535 : 255;
    uint16_t *px = malloc(n * sizeof *px);
    float *C = b->reconstruct_f32 ? malloc(n * sizeof *C) : NULL;
    double *t = malloc((size_t)repeat * sizeof *t);
    ss_workspace *ws = ss_workspace_new();
    int rc = SS_OK;
    if (!px || !t || !ws || (b->reconstruct_f32 && !C)) {
        rc = ss_fail(SS_ENOMEM, "out of memory for the bench of %s", b->name);
        goto out;
    }
    /* Check first: a wrong kernel is never timed. */
    if (b->reconstruct_f32) {
        if (b->reconstruct_f32(f, k, C, ws)) {
            row->status = "error";
            snprintf(row->error, sizeof row->error, "%s", ss_error());
            goto out;
        }
        row->max_abs_err = float_error(C, ref, n);
    }
    if (b->reconstruct(f, k, px, ws)) {
        row->status = "error";
        snprintf(row->error, sizeof row->error, "%s", ss_error());
        goto out;
    }
    double perr = pixel_error(px, ref, n, maxval);
    if (!b->reconstruct_f32) row->max_abs_err = perr;
    if (!(perr <= SS_BENCH_TOL_PIXEL) || (b->reconstruct_f32 && !(row->max_abs_err <= SS_BENCH_TOL_FLOAT))) {
        row->status = "wrong";
        snprintf(row->error, sizeof row->error,
                 "differs from the float64 reference: max float error %g (tolerance %g), max pixel error %g (tolerance %g)",
                 row->max_abs_err, SS_BENCH_TOL_FLOAT, perr, SS_BENCH_TOL_PIXEL);
        goto out;
    }
    /* Warm caches, pages and the threads team before timing. */
    double t0 = ss_now_ms();
    for (int w = 0; w < WARMUP_RUNS || ss_now_ms() - t0 < WARMUP_MS; w++) {
        if (w >= 1000) break;
        if (b->reconstruct(f, k, px, ws)) {
            row->status = "error";
            snprintf(row->error, sizeof row->error, "%s", ss_error());
            goto out;
        }
    }
    for (int r = 0; r < repeat; r++) {
        double s = ss_now_ms();
        int e = b->reconstruct(f, k, px, ws);
        t[r] = ss_now_ms() - s;
        if (e) {
            row->status = "error";
            snprintf(row->error, sizeof row->error, "%s", ss_error());
            goto out;
        }
    }
    row_times(row, t, repeat);
out:
    ss_workspace_free(ws);
    free(t);
    free(C);
    free(px);
    return rc;
}

static void bare_sgemm(const ss_factors *f, int k, float *C) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, f->m, f->n, k, 1.0f, f->U, f->rank, f->W, f->n,
                0.0f, C, f->n);
}

int ss_bench_sgemm(const ss_factors *f, int k, const double *ref, int repeat, ss_bench_row *row) {
    row_init(row, "sgemm", f, k, repeat);
    row->status = "baseline";
    size_t n = (size_t)f->m * f->n;
    float *C = malloc(n * sizeof *C);
    double *t = malloc((size_t)repeat * sizeof *t);
    if (!C || !t) {
        free(C);
        free(t);
        return ss_fail(SS_ENOMEM, "out of memory for the sgemm baseline");
    }
    bare_sgemm(f, k, C);
    row->max_abs_err = float_error(C, ref, n);
    double t0 = ss_now_ms();
    for (int w = 0; (w < WARMUP_RUNS || ss_now_ms() - t0 < WARMUP_MS) && w < 1000; w++) bare_sgemm(f, k, C);
    for (int r = 0; r < repeat; r++) {
        double s = ss_now_ms();
        bare_sgemm(f, k, C);
        t[r] = ss_now_ms() - s;
    }
    row_times(row, t, repeat);
    free(C);
    free(t);
    return SS_OK;
}

void ss_cpu_model(char *buf, size_t size) {
    snprintf(buf, size, "unknown CPU");
    FILE *fp = fopen("/proc/cpuinfo", "r");
    if (!fp) return;
    char line[512];
    while (fgets(line, sizeof line, fp)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        char *colon = strchr(line, ':');
        if (!colon) continue;
        colon++;
        while (*colon == ' ' || *colon == '\t') colon++;
        colon[strcspn(colon, "\n")] = '\0';
        if (*colon) snprintf(buf, size, "%s", colon);
        break;
    }
    fclose(fp);
}

/* ---- output ---------------------------------------------------------------- */

/* The blas row's median at the same k, NaN if none was timed. */
static double blas_median(const ss_bench_row *rows, size_t n, int k) {
    for (size_t i = 0; i < n; i++)
        if (rows[i].k == k && strcmp(rows[i].backend, "blas") == 0 && !isnan(rows[i].median_ms))
            return rows[i].median_ms;
    return NAN;
}

static json_t *num_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static int print_json_rows(const ss_bench_row *rows, size_t n) {
    json_t *arr = json_array();
    if (!arr) return -1;
    for (size_t i = 0; i < n; i++) {
        const ss_bench_row *r = &rows[i];
        json_t *o = json_object();
        if (!o || json_array_append_new(arr, o)) {
            json_decref(arr);
            return -1;
        }
        json_object_set_new(o, "backend", json_string(r->backend));
        json_object_set_new(o, "k", json_integer(r->k));
        json_object_set_new(o, "height", json_integer(r->height));
        json_object_set_new(o, "width", json_integer(r->width));
        json_object_set_new(o, "repeat", json_integer(r->repeat));
        json_object_set_new(o, "median_ms", num_or_null(r->median_ms));
        json_object_set_new(o, "min_ms", num_or_null(r->min_ms));
        json_object_set_new(o, "gflops", num_or_null(r->gflops));
        json_object_set_new(o, "max_abs_err", num_or_null(r->max_abs_err));
        json_object_set_new(o, "status", json_string(r->status));
        json_object_set_new(o, "error", r->error[0] ? json_string(r->error) : json_null());
        json_object_set_new(o, "chosen", json_string(r->chosen));
        json_object_set_new(o, "ratio_to_blas", num_or_null(r->median_ms / blas_median(rows, n, r->k)));
    }
    int rc = json_dumpf(arr, stdout, JSON_INDENT(2));
    json_decref(arr);
    if (rc == 0) rc = fputc('\n', stdout) == EOF ? -1 : 0;
    return rc;
}

/* CSV field: quoted when it could hold a comma or a quote. */
static void csv_text(const char *s) {
    fputc('"', stdout);
    for (; *s; s++) {
        if (*s == '"') fputc('"', stdout);
        fputc(*s, stdout);
    }
    fputc('"', stdout);
}

static void csv_num(double v) {
    if (isfinite(v)) printf(",%.6g", v);
    else fputs(",", stdout);
}

static void print_csv(const ss_bench_row *rows, size_t n) {
    puts("backend,k,height,width,repeat,median_ms,min_ms,gflops,max_abs_err,ratio_to_blas,status,chosen,error");
    for (size_t i = 0; i < n; i++) {
        const ss_bench_row *r = &rows[i];
        printf("%s,%d,%d,%d,%d", r->backend, r->k, r->height, r->width, r->repeat);
        csv_num(r->median_ms);
        csv_num(r->min_ms);
        csv_num(r->gflops);
        csv_num(r->max_abs_err);
        csv_num(r->median_ms / blas_median(rows, n, r->k));
        printf(",%s,%s,", r->status, r->chosen);
        csv_text(r->error);
        fputc('\n', stdout);
    }
}

static void table_num(double v, const char *fmt, int width) {
    if (isfinite(v)) printf(fmt, width, v);
    else printf("%*s", width, "-");
}

static void print_table(const ss_bench_row *rows, size_t n, const char *what) {
    printf("%s\n\n", what);
    printf("%-10s %5s %11s %11s %9s %12s %8s  %s\n", "backend", "k", "median ms", "min ms", "GFLOP/s",
           "max abs err", "x blas", "status");
    for (size_t i = 0; i < n; i++) {
        const ss_bench_row *r = &rows[i];
        char name[64];
        if (strcmp(r->backend, r->chosen) != 0) snprintf(name, sizeof name, "%s(%s)", r->backend, r->chosen);
        else snprintf(name, sizeof name, "%s", r->backend);
        printf("%-10s %5d ", name, r->k);
        table_num(r->median_ms, "%*.4f", 11);
        fputc(' ', stdout);
        table_num(r->min_ms, "%*.4f", 11);
        fputc(' ', stdout);
        table_num(r->gflops, "%*.2f", 9);
        fputc(' ', stdout);
        table_num(r->max_abs_err, "%*.2e", 12);
        fputc(' ', stdout);
        table_num(r->median_ms / blas_median(rows, n, r->k), "%*.2f", 8);
        printf("  %s", r->status);
        if (r->error[0]) printf(": %s", r->error);
        fputc('\n', stdout);
    }
}

/* ---- the command --------------------------------------------------------- */

/* Splits a comma list into items (pointers into buf); returns the count or -1. */
static int split_list(char *buf, char **items, int max) {
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n >= max) return -1;
        items[n++] = tok;
    }
    return n;
}

static int parse_size(const char *s, int *h, int *w) {
    char buf[64], *x;
    snprintf(buf, sizeof buf, "%s", s);
    x = strchr(buf, 'x');
    if (!x) return 0;
    *x = '\0';
    return ss_cli_posint(buf, h) && ss_cli_posint(x + 1, w) && *h <= 16384 && *w <= 16384;
}

int ss_cmd_bench(int argc, char **argv) {
    const char *cmd = "bench", *pos[1];
    const char *backends_s = NULL, *k_s = NULL, *repeat_s = NULL, *format_s = NULL, *plot_s = NULL,
               *threads_s = NULL, *size_s = NULL, *volume_s = NULL;
    int no_baseline = 0, npos, help;
    const ss_opt opts[] = {{"backends", 0, 1, &backends_s, NULL}, {"k", 'k', 1, &k_s, NULL},
                           {"repeat", 0, 1, &repeat_s, NULL},     {"format", 0, 1, &format_s, NULL},
                           {"plot", 0, 1, &plot_s, NULL},         {"threads", 0, 1, &threads_s, NULL},
                           {"size", 0, 1, &size_s, NULL},         {"no-baseline", 0, 0, NULL, &no_baseline},
                           {"volume", 0, 1, &volume_s, NULL},
                           {NULL, 0, 0, NULL, NULL}};
    if (ss_cli_parse(cmd, argc, argv, opts, pos, 1, &npos, &help)) return SS_EXIT_USAGE;
    if (help) return fputs(k_help_bench, stdout), SS_EXIT_OK;

    /* Arguments alone first (exit 2), then the work (exit 1). */
    char bbuf[512], kbuf[512], *bnames[BENCH_MAX_BACKENDS], *kitems[BENCH_MAX_K];
    int nb = 0, nk = 0, ks[BENCH_MAX_K], repeat = 10, threads = 0, ph = 256, pw = 170;
    if (backends_s) {
        snprintf(bbuf, sizeof bbuf, "%s", backends_s);
        nb = split_list(bbuf, bnames, BENCH_MAX_BACKENDS);
        if (nb <= 0) return ss_cli_error(cmd, SS_EXIT_USAGE, "--backends needs a comma-separated list of names");
        for (int i = 0; i < nb; i++)
            if (!ss_backend_name_valid(bnames[i]))
                return ss_cli_error(cmd, SS_EXIT_USAGE, "unknown backend '%s' (valid: %s)", bnames[i],
                                    ss_backend_names());
    }
    if (k_s) {
        snprintf(kbuf, sizeof kbuf, "%s", k_s);
        nk = split_list(kbuf, kitems, BENCH_MAX_K);
        if (nk <= 0) return ss_cli_error(cmd, SS_EXIT_USAGE, "--k needs a comma-separated list of positive integers");
        for (int i = 0; i < nk; i++)
            if (!ss_cli_posint(kitems[i], &ks[i]))
                return ss_cli_error(cmd, SS_EXIT_USAGE, "k must be a positive integer, got '%s'", kitems[i]);
    }
    if (repeat_s && !ss_cli_posint(repeat_s, &repeat))
        return ss_cli_error(cmd, SS_EXIT_USAGE, "repeat must be a positive integer, got '%s'", repeat_s);
    if (threads_s && !ss_cli_posint(threads_s, &threads))
        return ss_cli_error(cmd, SS_EXIT_USAGE, "threads must be a positive integer, got '%s'", threads_s);
    if (size_s && !parse_size(size_s, &ph, &pw))
        return ss_cli_error(cmd, SS_EXIT_USAGE, "size must be HxW with sides 1..16384, got '%s'", size_s);
    const char *format = format_s ? format_s : "table";
    if (strcmp(format, "table") && strcmp(format, "csv") && strcmp(format, "json"))
        return ss_cli_error(cmd, SS_EXIT_USAGE, "format must be table, csv or json, got '%s'", format);
    if (volume_s) {
        if (npos) return ss_cli_error(cmd, SS_EXIT_USAGE, "--volume takes the place of IN.png");
        if (strcmp(format, "csv") == 0) return ss_cli_error(cmd, SS_EXIT_USAGE, "--volume prints table or json");
        return ss_bench_volume(volume_s, ks, nk, (const char *const *)bnames, nb, repeat, threads, format);
    }
    if (threads) ss_kernels_set_threads(threads);

    ss_image img;
    char source[300];
    if (npos == 1) {
        unsigned char *buf = NULL;
        size_t len = 0;
        if (ss_read_file(pos[0], (size_t)512 << 20, &buf, &len))
            return ss_cli_error(cmd, SS_EXIT_FAIL, "cannot read %s: %s", pos[0], ss_error());
        int rc = ss_png_decode(buf, len, 16384, &img);
        free(buf);
        if (rc == SS_ENOTPNG) return ss_cli_error(cmd, SS_EXIT_FAIL, "%s is not a PNG file", pos[0]);
        if (rc) return ss_cli_error(cmd, SS_EXIT_FAIL, "cannot decode %s: %s", pos[0], ss_error());
        const char *slash = strrchr(pos[0], '/');
        snprintf(source, sizeof source, "%s", slash ? slash + 1 : pos[0]);
    } else {
        if (ss_phantom(ph, pw, 8, &img)) return ss_cli_error(cmd, SS_EXIT_FAIL, "phantom: %s", ss_error());
        snprintf(source, sizeof source, "phantom");
    }
    ss_factors *f = NULL;
    int rc = ss_svd_factor(&img, 0, 0, &f);
    ss_image_free(&img);
    if (rc) return ss_cli_error(cmd, SS_EXIT_FAIL, "factorisation failed: %s", ss_error());

    if (!k_s) { /* the study's ranks, those this image has */
        static const int def[] = {170, 130, 90, 50};
        for (size_t i = 0; i < sizeof def / sizeof def[0]; i++)
            if (def[i] <= f->rank) ks[nk++] = def[i];
        if (nk == 0) ks[nk++] = f->rank;
    }
    for (int i = 0; i < nk; i++) {
        if (ks[i] > f->rank) {
            int bad = ks[i], rank = f->rank;
            ss_factors_free(f);
            return ss_cli_error(cmd, SS_EXIT_FAIL, "k = %d is above the rank %d of the image", bad, rank);
        }
    }
    const ss_backend *sel[BENCH_MAX_BACKENDS];
    int is_auto[BENCH_MAX_BACKENDS] = {0};
    if (nb == 0) {
        for (int i = 0; i < ss_backend_count() && nb < BENCH_MAX_BACKENDS; i++) sel[nb++] = ss_backend_at(i);
    } else {
        for (int i = 0; i < nb; i++) {
            is_auto[i] = strcmp(bnames[i], "auto") == 0;
            sel[i] = is_auto[i] ? NULL : ss_backend_find(bnames[i]);
        }
    }

    /* One float64 reference at a time (k outer); rows stay backend-major,
     * the baseline rows last. */
    size_t nrows = (size_t)(nb + !no_baseline) * nk;
    ss_bench_row *rows = calloc(nrows, sizeof *rows);
    double *ref = malloc((size_t)f->m * f->n * sizeof *ref);
    rc = SS_EXIT_FAIL;
    if (!rows || !ref) {
        ss_cli_error(cmd, SS_EXIT_FAIL, "out of memory");
        goto out;
    }
    for (int j = 0; j < nk; j++) {
        ss_reference_f64(f, ks[j], ref);
        for (int i = 0; i < nb; i++) {
            ss_bench_row *row = &rows[(size_t)i * nk + j];
            const ss_backend *b = is_auto[i] ? ss_backend_choose(f, ks[j]) : sel[i];
            if (!b) {
                ss_cli_error(cmd, SS_EXIT_FAIL, "auto found no backend for k = %d", ks[j]);
                goto out;
            }
            if (ss_bench_backend(b, f, ks[j], ref, repeat, row)) {
                ss_cli_error(cmd, SS_EXIT_FAIL, "%s", ss_error());
                goto out;
            }
            if (is_auto[i]) snprintf(row->backend, sizeof row->backend, "auto");
        }
        if (!no_baseline && ss_bench_sgemm(f, ks[j], ref, repeat, &rows[(size_t)nb * nk + j])) {
            ss_cli_error(cmd, SS_EXIT_FAIL, "%s", ss_error());
            goto out;
        }
    }

    char cpu[256], what[1024];
    ss_cpu_model(cpu, sizeof cpu);
    snprintf(what, sizeof what, "reconstruct %dx%d (%s), median of %d, %s, %ld cores online, threads kernel %d",
             f->m, f->n, source, repeat, cpu, sysconf(_SC_NPROCESSORS_ONLN), ss_kernels_threads());
    if (strcmp(format, "json") == 0) {
        if (print_json_rows(rows, nrows)) {
            ss_cli_error(cmd, SS_EXIT_FAIL, "cannot write the JSON output");
            goto out;
        }
    } else if (strcmp(format, "csv") == 0) {
        print_csv(rows, nrows);
    } else {
        print_table(rows, nrows, what);
    }
    if (plot_s) {
        FILE *fp = fopen(plot_s, "w");
        char title[1024];
        snprintf(title, sizeof title, "svdslice reconstruct %dx%d (%s) on %s, %ld cores", f->m, f->n, source, cpu,
                 sysconf(_SC_NPROCESSORS_ONLN));
        int werr = !fp || ss_bench_plot_svg(fp, rows, nrows, title);
        if (fp && fclose(fp)) werr = 1;
        if (werr) {
            ss_cli_error(cmd, SS_EXIT_FAIL, "cannot write %s", plot_s);
            goto out;
        }
    }
    rc = fflush(stdout) ? ss_cli_error(cmd, SS_EXIT_FAIL, "cannot write to stdout") : SS_EXIT_OK;
out:
    free(ref);
    free(rows);
    ss_factors_free(f);
    return rc;
}
