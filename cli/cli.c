/* cli.c - svdslice compress / reconstruct / quality / backends and the shared flag parser */
#include "cli/cli.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "util/clock.h"
#include "util/error.h"
#include "util/flags.h"
#include "engine/kernels.h"
#include "engine/png.h"
#include "util/file.h"
#include "engine/quality.h"
#include "engine/svd.h"
#include "api/json.h"

/* Bounds for files a user hands the CLI: generous, but no runaway allocation. */
#define CLI_MAX_FILE_BYTES ((size_t)512 << 20)
#define CLI_MAX_SIDE 16384

static const char k_help_compress[] =
    "usage: svdslice compress IN.png OUT.svd [--rank R]\n"
    "\n"
    "Factorises a grayscale (or palette/RGB, converted to gray) PNG with a float32\n"
    "SVD and writes OUT.svd (version 2: the singular values and the original pixels,\n"
    "losslessly compressed; the factors are computed from them when it is read).\n"
    "Prints the slice info JSON (id, name, width, height, bit_depth, rank,\n"
    "original_kept, stored_bytes (OUT.svd's size), upload_bytes, stored_vs_upload,\n"
    "original_bytes, file_bytes, singular_values, created).\n"
    "\n"
    "  --rank R   keep only the first R components (default: min(width, height))\n";

static const char k_help_reconstruct[] =
    "usage: svdslice reconstruct IN.svd OUT.png [-k K] [--backend NAME] [--bits 8|16]\n"
    "\n"
    "Rebuilds the rank-K approximation from the factors and writes it as a\n"
    "grayscale PNG. Prints {output, k, backend, bits, width, height, kernel_ms}.\n"
    "\n"
    "  -k, --k K        components to use, 1..rank (default: the rank)\n"
    "  --backend NAME   loops3, loops2, loops1, blocked, threads, blas, cuda,\n"
    "                   cublas or auto (default: auto, the fastest available)\n"
    "  --bits 8|16      output depth (default: the source's)\n";

static const char k_help_quality[] =
    "usage: svdslice quality IN.png [-k K] [--backend NAME]\n"
    "\n"
    "Factorises IN.png at full rank, rebuilds it at rank K and prints the quality\n"
    "JSON: id, k, backend, rank, original_kept, mse, psnr, psnr_data_range, ssim,\n"
    "hausdorff, energy, float32_bytes_at_k (as scikit-image 0.19 computes them; null\n"
    "where undefined).\n"
    "\n"
    "  -k, --k K        components to use, 1..rank (default: the rank)\n"
    "  --backend NAME   as for reconstruct (default: auto)\n";

static const char k_help_backends[] =
    "usage: svdslice backends\n"
    "\n"
    "Prints {\"backends\": [{name, device, available, reason, description}]} for\n"
    "the eight reconstruction backends; reason says why one cannot run here.\n";

void ss_cli_print_help(void) {
    fputs("usage: svdslice COMMAND [ARGS]\n"
          "\n"
          "Stores 2D MRI slices as their SVD and rebuilds them at any rank k.\n"
          "\n"
          "commands:\n"
          "  serve [--bind ADDR] [--port N] [--data DIR] [--workers N] [--api-key KEY]\n"
          "        [--auth-reads] [--cors-origin ORIGIN] ...   run the HTTP service\n"
          "  compress IN.png OUT.svd [--rank R]                 factorise, print slice info\n"
          "  reconstruct IN.svd OUT.png [-k K] [--backend NAME] [--bits 8|16]\n"
          "  quality IN.png [-k K] [--backend NAME]             print quality metrics\n"
          "  bench [IN.png] [--backends a,b] [--k 170,130,90,50] [--repeat N]\n"
          "        [--format table|csv|json] [--plot OUT.svg] [--threads N]\n"
          "  backends                                           list the backends\n"
          "  compress-volume IN.nii[.gz] OUT.svv [--axis A] [--t T]   factorise a NIfTI volume\n"
          "  reconstruct-volume IN.svv OUT.nii.gz --k K [--backend B] [--quality]\n"
          "  bench --volume IN.nii[.gz] [--backends a,b] [--k LIST] [--threads N]\n"
          "\n"
          "  svdslice --version | --help | COMMAND --help\n"
          "\n"
          "exit status: 0 success, 2 wrong arguments, 1 any other failure\n",
          stdout);
}

int ss_cli_error(const char *cmd, int code, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "svdslice %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return code;
}

int ss_cli_posint(const char *s, int *out) {
    if (!s || !*s) return 0;
    long long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return 0;
        v = v * 10 + (*p - '0');
        if (v > INT_MAX) return 0;
    }
    if (v < 1) return 0;
    *out = (int)v;
    return 1;
}

int ss_cli_parse(const char *cmd, int argc, char **argv, const ss_opt *opts,
                 const char **pos, int max_pos, int *npos, int *help) {
    *npos = 0;
    *help = 0;
    size_t n = 0, ns = 0;
    while (opts[n].name) n++;
    /* getopt_long's tables from opts, in order, so the index found is opts's; --help/-h last */
    struct option lo[n + 2];
    char shorts[2 * n + 2];
    for (size_t i = 0; i < n; i++) {
        lo[i] = (struct option){opts[i].name, opts[i].takes_value ? required_argument : no_argument, NULL,
                                opts[i].short_name};
        if (opts[i].short_name) {
            shorts[ns++] = opts[i].short_name;
            if (opts[i].takes_value) shorts[ns++] = ':';
        }
    }
    lo[n] = (struct option){"help", no_argument, NULL, 'h'};
    lo[n + 1] = (struct option){0};
    shorts[ns++] = 'h';
    shorts[ns] = '\0';
    ss_flags fl;
    ss_flags_begin(&fl, argc, argv, shorts, lo);
    for (int i; (i = ss_flags_next(&fl)) != SS_FLAGS_END;) {
        switch (i) {
        case SS_FLAGS_ARG:
            if (*npos >= max_pos)
                return ss_cli_error(cmd, SS_EXIT_USAGE, "unexpected argument '%s' (see svdslice %s --help)",
                                    fl.text, cmd);
            pos[(*npos)++] = fl.value;
            continue;
        case SS_FLAGS_UNKNOWN:
            return ss_cli_error(cmd, SS_EXIT_USAGE, "unknown flag '%s' (see svdslice %s --help)", fl.text, cmd);
        case SS_FLAGS_MISSING:
            return ss_cli_error(cmd, SS_EXIT_USAGE, "flag '%s' needs a value", fl.text);
        case SS_FLAGS_EXTRA:
            return ss_cli_error(cmd, SS_EXIT_USAGE, "flag --%s takes no value", fl.opt->name);
        }
        if ((size_t)i == n) {
            *help = 1;
            return 0;
        }
        if (opts[i].takes_value)
            *opts[i].value = fl.value; /* a later one wins */
        else
            *opts[i].seen = 1;
    }
    return 0;
}

/* Validates a -k value given on the command line (NULL: default to the rank). */
static int parse_k(const char *cmd, const char *s, int *k) {
    *k = 0;
    if (s && !ss_cli_posint(s, k))
        return ss_cli_error(cmd, SS_EXIT_USAGE, "k must be a positive integer, got '%s'", s);
    return 0;
}

static int parse_backend_name(const char *cmd, const char *s) {
    if (s && !ss_backend_name_valid(s))
        return ss_cli_error(cmd, SS_EXIT_USAGE, "unknown backend '%s' (valid: %s)", s, ss_backend_names());
    return 0;
}

/* Resolves name (NULL or "auto": the registry's choice) to a backend that can
 * run here; prints the error and returns SS_EXIT_FAIL otherwise. */
static int resolve_backend(const char *cmd, const char *name, const ss_factors *f, int k,
                           const ss_backend **out) {
    const ss_backend *b = (!name || strcmp(name, "auto") == 0) ? ss_backend_choose(f, k) : ss_backend_find(name);
    if (!b) return ss_cli_error(cmd, SS_EXIT_FAIL, "no backend available for this request");
    const char *reason = NULL;
    if (!b->available(&reason))
        return ss_cli_error(cmd, SS_EXIT_FAIL, "backend %s is unavailable: %s", b->name,
                            reason ? reason : "unknown reason");
    *out = b;
    return 0;
}

/* Runs backend b at rank k into a fresh m*n buffer (caller frees). */
static int run_backend(const char *cmd, const ss_backend *b, const ss_factors *f, int k,
                       uint16_t **out, double *ms) {
    uint16_t *px = malloc((size_t)f->m * f->n * sizeof *px);
    ss_workspace *ws = ss_workspace_new();
    if (!px || !ws) {
        free(px);
        ss_workspace_free(ws);
        return ss_cli_error(cmd, SS_EXIT_FAIL, "out of memory");
    }
    double t0 = ss_now_ms();
    int rc = b->reconstruct(f, k, px, ws);
    double t1 = ss_now_ms();
    ss_workspace_free(ws);
    if (rc) {
        free(px);
        return ss_cli_error(cmd, SS_EXIT_FAIL, "backend %s failed: %s", b->name, ss_error());
    }
    *ms = t1 - t0;
    *out = px;
    return 0;
}

/* Reads and decodes a PNG file; prints the error and returns SS_EXIT_FAIL. */
static int load_png(const char *cmd, const char *path, ss_image *img) {
    unsigned char *buf = NULL;
    size_t len = 0;
    if (ss_read_file(path, CLI_MAX_FILE_BYTES, &buf, &len))
        return ss_cli_error(cmd, SS_EXIT_FAIL, "cannot read %s: %s", path, ss_error());
    int rc = ss_png_decode(buf, len, CLI_MAX_SIDE, img);
    free(buf);
    if (rc == SS_ENOTPNG) return ss_cli_error(cmd, SS_EXIT_FAIL, "%s is not a PNG file", path);
    if (rc) return ss_cli_error(cmd, SS_EXIT_FAIL, "cannot decode %s: %s", path, ss_error());
    return 0;
}

/* Prints a JSON document on stdout with a final newline; consumes j. */
int ss_cli_print_json(const char *cmd, json_t *j) {
    if (!j) return ss_cli_error(cmd, SS_EXIT_FAIL, "out of memory building the JSON output");
    int rc = json_dumpf(j, stdout, JSON_INDENT(2));
    json_decref(j);
    if (rc || fputc('\n', stdout) == EOF || fflush(stdout))
        return ss_cli_error(cmd, SS_EXIT_FAIL, "cannot write to stdout");
    return 0;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

int ss_cmd_compress(int argc, char **argv) {
    const char *cmd = "compress", *rank_s = NULL, *pos[2];
    int npos, help, rank = 0;
    const ss_opt opts[] = {{"rank", 0, 1, &rank_s, NULL}, {NULL, 0, 0, NULL, NULL}};
    if (ss_cli_parse(cmd, argc, argv, opts, pos, 2, &npos, &help)) return SS_EXIT_USAGE;
    if (help) return fputs(k_help_compress, stdout), SS_EXIT_OK;
    if (npos != 2) return ss_cli_error(cmd, SS_EXIT_USAGE, "expects IN.png OUT.svd (see svdslice compress --help)");
    if (rank_s && !ss_cli_posint(rank_s, &rank))
        return ss_cli_error(cmd, SS_EXIT_USAGE, "rank must be a positive integer, got '%s'", rank_s);

    ss_image img;
    if (load_png(cmd, pos[0], &img)) return SS_EXIT_FAIL;
    int nsv = img.width < img.height ? img.width : img.height;
    if (rank > nsv) {
        ss_image_free(&img);
        return ss_cli_error(cmd, SS_EXIT_FAIL, "rank %d above min(width, height) = %d", rank, nsv);
    }
    ss_factors *f = NULL;
    int rc = ss_svd_factor(&img, rank, 1, &f);
    if (rc) {
        ss_image_free(&img);
        return ss_cli_error(cmd, SS_EXIT_FAIL, "factorisation failed: %s", ss_error());
    }
    ss_content_id(&img, f->rank, f->id);
    ss_image_free(&img);
    snprintf(f->name, sizeof f->name, "%s", base_name(pos[0]));
    f->created = (int64_t)time(NULL);
    struct stat st;
    f->upload_bytes = stat(pos[0], &st) == 0 ? (long long)st.st_size : 0; /* the PNG's, as an upload's */
    if (ss_svd_save(pos[1], f)) {
        rc = ss_cli_error(cmd, SS_EXIT_FAIL, "cannot write %s: %s", pos[1], ss_error());
    } else {
        long long bytes = stat(pos[1], &st) == 0 ? (long long)st.st_size : 0;
        rc = ss_cli_print_json(cmd, ss_json_slice_info(f, bytes)) ? SS_EXIT_FAIL : SS_EXIT_OK;
    }
    ss_factors_free(f);
    return rc;
}

int ss_cli_write_file(const char *path, const unsigned char *buf, size_t len) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    int ok = fwrite(buf, 1, len, fp) == len;
    if (fclose(fp)) ok = 0;
    return ok ? 0 : -1;
}

int ss_cmd_reconstruct(int argc, char **argv) {
    const char *cmd = "reconstruct", *k_s = NULL, *backend_s = NULL, *bits_s = NULL, *pos[2];
    int npos, help, k, bits = 0;
    const ss_opt opts[] = {{"k", 'k', 1, &k_s, NULL},
                           {"backend", 0, 1, &backend_s, NULL},
                           {"bits", 0, 1, &bits_s, NULL},
                           {NULL, 0, 0, NULL, NULL}};
    if (ss_cli_parse(cmd, argc, argv, opts, pos, 2, &npos, &help)) return SS_EXIT_USAGE;
    if (help) return fputs(k_help_reconstruct, stdout), SS_EXIT_OK;
    if (npos != 2) return ss_cli_error(cmd, SS_EXIT_USAGE, "expects IN.svd OUT.png (see svdslice reconstruct --help)");
    if (parse_k(cmd, k_s, &k) || parse_backend_name(cmd, backend_s)) return SS_EXIT_USAGE;
    if (bits_s) {
        if (strcmp(bits_s, "8") == 0) bits = 8;
        else if (strcmp(bits_s, "16") == 0) bits = 16;
        else return ss_cli_error(cmd, SS_EXIT_USAGE, "bits must be 8 or 16, got '%s'", bits_s);
    }

    ss_factors *f = NULL;
    if (ss_svd_load(pos[0], &f)) return ss_cli_error(cmd, SS_EXIT_FAIL, "cannot load %s: %s", pos[0], ss_error());
    int rc = SS_EXIT_FAIL;
    uint16_t *px = NULL, *conv = NULL;
    unsigned char *png = NULL;
    size_t png_len = 0;
    const ss_backend *b = NULL;
    double ms = 0;
    if (k == 0) k = f->rank;
    if (!bits) bits = f->bit_depth;
    if (k > f->rank) {
        ss_cli_error(cmd, SS_EXIT_FAIL, "k = %d is above the rank %d of %s", k, f->rank, pos[0]);
        goto out;
    }
    if (resolve_backend(cmd, backend_s, f, k, &b) || run_backend(cmd, b, f, k, &px, &ms)) goto out;
    if (bits != f->bit_depth) {
        conv = malloc((size_t)f->m * f->n * sizeof *conv);
        if (!conv) {
            ss_cli_error(cmd, SS_EXIT_FAIL, "out of memory");
            goto out;
        }
        ss_pixels_convert_bits(px, (size_t)f->m * f->n, f->bit_depth, bits, conv);
    }
    if (ss_png_encode(conv ? conv : px, f->n, f->m, bits, &png, &png_len)) {
        ss_cli_error(cmd, SS_EXIT_FAIL, "PNG encode failed: %s", ss_error());
        goto out;
    }
    if (ss_cli_write_file(pos[1], png, png_len)) {
        ss_cli_error(cmd, SS_EXIT_FAIL, "cannot write %s: %s", pos[1], strerror(errno));
        goto out;
    }
    json_t *j = json_pack("{s:s, s:i, s:s, s:i, s:i, s:i, s:f}", "output", pos[1], "k", k, "backend", b->name,
                          "bits", bits, "width", f->n, "height", f->m, "kernel_ms", ms);
    rc = ss_cli_print_json(cmd, j) ? SS_EXIT_FAIL : SS_EXIT_OK;
out:
    free(png);
    free(conv);
    free(px);
    ss_factors_free(f);
    return rc;
}

int ss_cmd_quality(int argc, char **argv) {
    const char *cmd = "quality", *k_s = NULL, *backend_s = NULL, *pos[1];
    int npos, help, k;
    const ss_opt opts[] = {{"k", 'k', 1, &k_s, NULL}, {"backend", 0, 1, &backend_s, NULL}, {NULL, 0, 0, NULL, NULL}};
    if (ss_cli_parse(cmd, argc, argv, opts, pos, 1, &npos, &help)) return SS_EXIT_USAGE;
    if (help) return fputs(k_help_quality, stdout), SS_EXIT_OK;
    if (npos != 1) return ss_cli_error(cmd, SS_EXIT_USAGE, "expects IN.png (see svdslice quality --help)");
    if (parse_k(cmd, k_s, &k) || parse_backend_name(cmd, backend_s)) return SS_EXIT_USAGE;

    ss_image img;
    if (load_png(cmd, pos[0], &img)) return SS_EXIT_FAIL;
    ss_factors *f = NULL;
    if (ss_svd_factor(&img, 0, 1, &f)) {
        ss_image_free(&img);
        return ss_cli_error(cmd, SS_EXIT_FAIL, "factorisation failed: %s", ss_error());
    }
    ss_content_id(&img, f->rank, f->id);
    ss_image_free(&img);
    int rc = SS_EXIT_FAIL;
    uint16_t *px = NULL;
    const ss_backend *b = NULL;
    double ms;
    ss_quality q;
    if (k == 0) k = f->rank;
    if (k > f->rank) {
        ss_cli_error(cmd, SS_EXIT_FAIL, "k = %d is above the rank %d of %s", k, f->rank, pos[0]);
        goto out;
    }
    if (resolve_backend(cmd, backend_s, f, k, &b) || run_backend(cmd, b, f, k, &px, &ms)) goto out;
    if (ss_quality_compute(f, k, px, &q)) {
        ss_cli_error(cmd, SS_EXIT_FAIL, "quality failed: %s", ss_error());
        goto out;
    }
    rc = ss_cli_print_json(cmd, ss_json_quality(f->id, b->name, &q)) ? SS_EXIT_FAIL : SS_EXIT_OK;
out:
    free(px);
    ss_factors_free(f);
    return rc;
}

int ss_cmd_backends(int argc, char **argv) {
    const char *cmd = "backends", *pos[1];
    int npos, help;
    const ss_opt opts[] = {{NULL, 0, 0, NULL, NULL}};
    if (ss_cli_parse(cmd, argc, argv, opts, pos, 0, &npos, &help)) return SS_EXIT_USAGE;
    if (help) return fputs(k_help_backends, stdout), SS_EXIT_OK;
    return ss_cli_print_json(cmd, ss_json_backends()) ? SS_EXIT_FAIL : SS_EXIT_OK;
}
