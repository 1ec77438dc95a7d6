/* volume.c - svdslice compress-volume / reconstruct-volume / bench --volume */
#include "cli/volume.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <jansson.h>

#include "api/json.h"

#include "cli/bench.h"
#include "cli/cli.h"
#include "engine/png.h"
#include "engine/volume.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/file.h"

/* A file a user hands the CLI: generous, but no runaway allocation. */
#define CLI_MAX_NIFTI_BYTES ((size_t)2 << 30)
#define CLI_MAX_SVV_BYTES ((size_t)8 << 30)

static const char k_help_compress_volume[] =
    "usage: svdslice compress-volume IN.nii[.gz] OUT.svv [--axis A] [--t T] [--threads N]\n"
    "                                [--rank R | --energy E | --psnr DB] [--keep-original B]\n"
    "\n"
    "Reads a NIfTI-1 or NIfTI-2 volume (uint8, int8, int16, uint16, int32, float32 or\n"
    "float64; scl_slope/scl_inter applied), factorises every slice along axis A with\n"
    "an SVD and writes OUT.svv: by default the original voxels and each slice's exact\n"
    "singular values (the factors are computed again when it is read). Prints the\n"
    "volume's JSON (id, dims, voxel_sizes, datatype, axis, t, slices, rows, columns,\n"
    "stored_bytes, original_bytes, timings).\n"
    "\n"
    "  --axis A     0, 1 or 2: the voxel axis the slices are cut across (default 2)\n"
    "  --t T        the volume of a 4D file to take (default 0)\n"
    "  --threads N  threads factorising slices (default: online cores)\n"
    "  --rank R     keep R components per slice (1..min(rows, columns))\n"
    "  --energy E   per slice the fewest components keeping fraction E of sum s^2\n"
    "  --psnr DB    per slice the fewest components reaching DB dB over the data\n"
    "               range of /volumes/{id}/quality (255, 65535 or max - min)\n"
    "  --keep-original B  true (default) or false: drop the voxels and store\n"
    "               quantised, range-coded factors instead\n";

static const char k_help_reconstruct_volume[] =
    "usage: svdslice reconstruct-volume IN.svv OUT.nii.gz --k K [--backend B] [--threads N]\n"
    "                                   [--quality] [--axis A --index I [--window C,W]]\n"
    "\n"
    "Rebuilds the whole volume at rank K (K clamped to each slice's rank) and writes\n"
    "it as .nii.gz: same dims, voxel sizes, qform/sform, data type and scaling as the\n"
    "input, values rounded and clamped to the type. With OUT.png and --index, writes\n"
    "one slice instead (along --axis, default the factorisation axis): 8-bit for\n"
    "uint8 data, 16-bit otherwise (uint16 as is, other types mapped linearly from the\n"
    "volume's value range), or 8-bit through --window C,W on the scaled values.\n"
    "Prints {output, k, backend, threads, rebuild_ms, write_ms, bytes, ...}.\n"
    "\n"
    "  --k K        components per slice, >= 1 (required)\n"
    "  --backend B  a CPU backend with float output (default blas; auto = blas)\n"
    "  --threads N  threads the slices are split over (default: online cores;\n"
    "               the threads backend parallelises itself and gets 1)\n"
    "  --quality    add {\"volume\": {mse, psnr, ssim, energy}, \"slices\": [...]}\n";

/* CPU time of the whole process (all threads), ms: next to wall time on a shared machine. */
static double cpu_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int parse_nonneg(const char *s, int *out) {
    if (s && strcmp(s, "0") == 0) {
        *out = 0;
        return 1;
    }
    return ss_cli_posint(s, out);
}

/* Reads and decodes a NIfTI file into a volume (not factorised). */
static int load_nifti(const char *cmd, const char *path, const ss_volume_opts *o, ss_volume **v, double *ms) {
    unsigned char *buf = NULL;
    size_t len = 0;
    if (ss_read_file(path, CLI_MAX_NIFTI_BYTES, &buf, &len))
        return ss_cli_error(cmd, SS_EXIT_FAIL, "cannot read %s: %s", path, ss_error());
    double t0 = ss_now_ms();
    int rc = ss_volume_from_nifti(buf, len, o, v);
    *ms = ss_now_ms() - t0;
    free(buf);
    if (rc == SS_OK) (*v)->upload_bytes = (long long)len;
    if (rc) return ss_cli_error(cmd, SS_EXIT_FAIL, "%s: %s (%s)", path, ss_error(), ss_strcode(rc));
    return 0;
}

/* --rank/--energy/--psnr (one at most) and --keep-original, as the HTTP upload takes them. */
static int parse_store_options(const char *cmd, const char *rank_s, const char *energy_s, const char *psnr_s,
                               const char *keep_s, ss_volume_opts *o) {
    if (!!rank_s + !!energy_s + !!psnr_s > 1)
        return ss_cli_error(cmd, SS_EXIT_USAGE, "--rank, --energy and --psnr each choose the rank: give one at most");
    char *end = NULL;
    int r = 0;
    double x = 0;
    if (rank_s) {
        if (!ss_cli_posint(rank_s, &r)) return ss_cli_error(cmd, SS_EXIT_USAGE, "rank must be a positive integer");
        o->target = (ss_target){SS_TARGET_RANK, r};
    } else if (energy_s || psnr_s) {
        const char *s = energy_s ? energy_s : psnr_s;
        x = strtod(s, &end);
        if (end == s || *end || !isfinite(x) || (energy_s ? !(x > 0 && x <= 1) : !(x >= 1 && x <= 200)))
            return ss_cli_error(cmd, SS_EXIT_USAGE, energy_s ? "energy must be in (0, 1], got '%s'"
                                                             : "psnr must be a number of dB in 1..200, got '%s'", s);
        o->target = (ss_target){energy_s ? SS_TARGET_ENERGY : SS_TARGET_PSNR, x};
    }
    if (keep_s && strcmp(keep_s, "true") && strcmp(keep_s, "false"))
        return ss_cli_error(cmd, SS_EXIT_USAGE, "keep-original must be true or false, got '%s'", keep_s);
    o->no_original = keep_s && !strcmp(keep_s, "false");
    return 0;
}

static json_t *volume_json(const ss_volume *v) {
    const ss_nifti_info *n = &v->nii;
    double slope, inter;
    ss_nifti_scaling(n, &slope, &inter);
    json_t *j = json_pack("{s:s, s:[i,i,i], s:[f,f,f], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:f}",
                          "id", v->id, "dims", n->nx, n->ny, n->nz, "voxel_sizes", n->pixdim[1], n->pixdim[2],
                          n->pixdim[3], "datatype", ss_nifti_type_name(n->datatype), "nifti_version", n->version,
                          "axis", v->axis, "t", n->t, "slices", v->nslices, "rows", v->m, "columns", v->n,
                          "scl_slope", slope, "scl_inter", inter, "min", v->vmin, "max", v->vmax);
    return j;
}

int ss_cmd_compress_volume(int argc, char **argv) {
    const char *cmd = "compress-volume", *axis_s = NULL, *t_s = NULL, *threads_s = NULL, *pos[2];
    const char *rank_s = NULL, *energy_s = NULL, *psnr_s = NULL, *keep_s = NULL;
    int npos, help, axis = 2, t = 0, threads = 0;
    const ss_opt opts[] = {{"axis", 0, 1, &axis_s, NULL},
                           {"t", 0, 1, &t_s, NULL},
                           {"threads", 0, 1, &threads_s, NULL},
                           {"rank", 0, 1, &rank_s, NULL},
                           {"energy", 0, 1, &energy_s, NULL},
                           {"psnr", 0, 1, &psnr_s, NULL},
                           {"keep-original", 0, 1, &keep_s, NULL},
                           {NULL, 0, 0, NULL, NULL}};
    if (ss_cli_parse(cmd, argc, argv, opts, pos, 2, &npos, &help)) return SS_EXIT_USAGE;
    if (help) return fputs(k_help_compress_volume, stdout), SS_EXIT_OK;
    if (npos != 2) return ss_cli_error(cmd, SS_EXIT_USAGE, "expects IN.nii[.gz] OUT.svv (see svdslice %s --help)", cmd);
    if (axis_s && (!parse_nonneg(axis_s, &axis) || axis > 2))
        return ss_cli_error(cmd, SS_EXIT_USAGE, "axis must be 0, 1 or 2, got '%s'", axis_s);
    if (t_s && !parse_nonneg(t_s, &t)) return ss_cli_error(cmd, SS_EXIT_USAGE, "t must be an integer >= 0, got '%s'", t_s);
    if (threads_s && !ss_cli_posint(threads_s, &threads))
        return ss_cli_error(cmd, SS_EXIT_USAGE, "threads must be a positive integer, got '%s'", threads_s);

    ss_volume_opts vo = {.axis = axis, .t = t};
    if (parse_store_options(cmd, rank_s, energy_s, psnr_s, keep_s, &vo)) return SS_EXIT_USAGE;
    ss_volume *v = NULL;
    double decode_ms, t0;
    if (load_nifti(cmd, pos[0], &vo, &v, &decode_ms)) return SS_EXIT_FAIL;
    const char *slash = strrchr(pos[0], '/');
    snprintf(v->name, sizeof v->name, "%s", slash ? slash + 1 : pos[0]);
    v->created = (int64_t)time(NULL);
    int rc = SS_EXIT_FAIL;
    unsigned char *svv = NULL;
    size_t svv_len = 0;
    t0 = ss_now_ms();
    double c0 = cpu_ms();
    if (ss_volume_factor_all(v, threads)) {
        ss_cli_error(cmd, SS_EXIT_FAIL, "factorisation failed: %s", ss_error());
        goto out;
    }
    double factor_ms = ss_now_ms() - t0, factor_cpu_ms = cpu_ms() - c0;
    t0 = ss_now_ms();
    if (ss_volume_serialize(v, &svv, &svv_len)) {
        ss_cli_error(cmd, SS_EXIT_FAIL, "cannot encode the volume: %s", ss_error());
        goto out;
    }
    double ser_ms = ss_now_ms() - t0;
    if (ss_cli_write_file(pos[1], svv, svv_len)) {
        ss_cli_error(cmd, SS_EXIT_FAIL, "cannot write %s: %s", pos[1], strerror(errno));
        goto out;
    }
    json_t *j = volume_json(v);
    if (j) {
        json_object_set_new(j, "name", json_string(v->name));
        json_object_set_new(j, "stored_bytes", json_integer((json_int_t)svv_len));
        json_object_set_new(j, "original_bytes", json_integer((json_int_t)ss_volume_voxel_bytes(v)));
        json_object_set_new(j, "upload_bytes", json_integer((json_int_t)v->upload_bytes));
        json_object_set_new(j, "stored_vs_upload", json_real((double)svv_len / (double)v->upload_bytes));
        json_object_set_new(j, "original_kept", json_boolean(!v->no_original));
        json_t *ranks = json_array();
        for (int s = 0; ranks && s < v->nslices; s++) json_array_append_new(ranks, json_integer(v->slices[s]->rank));
        json_object_set_new(j, "ranks", ranks);
        json_object_set_new(j, "threads", json_integer(threads > 0 ? threads : (json_int_t)sysconf(_SC_NPROCESSORS_ONLN)));
        json_object_set_new(j, "decode_ms", json_real(decode_ms));
        json_object_set_new(j, "factor_ms", json_real(factor_ms));
        json_object_set_new(j, "factor_cpu_ms", json_real(factor_cpu_ms));
        json_object_set_new(j, "serialize_ms", json_real(ser_ms));
    }
    rc = ss_cli_print_json(cmd, j) ? SS_EXIT_FAIL : SS_EXIT_OK;
out:
    free(svv);
    ss_volume_free(v);
    return rc;
}

/* A backend for volumes: CPU with float output ("auto" is blas: the GPU path is the server's queue). */
static const ss_backend *volume_backend(const char *cmd, const char *name) {
    const ss_backend *b = (!name || strcmp(name, "auto") == 0) ? ss_backend_find("blas") : ss_backend_find(name);
    if (!b) {
        ss_cli_error(cmd, SS_EXIT_USAGE, "unknown backend '%s' (valid: %s)", name, ss_backend_names());
        return NULL;
    }
    const char *why = NULL;
    if (!b->available(&why)) {
        ss_cli_error(cmd, SS_EXIT_FAIL, "backend %s is unavailable: %s", b->name, why ? why : "unknown reason");
        return NULL;
    }
    if (!b->reconstruct_f32) {
        ss_cli_error(cmd, SS_EXIT_FAIL, "backend %s has no float output for volumes", b->name);
        return NULL;
    }
    return b;
}

static int load_svv(const char *cmd, const char *path, ss_volume **v) {
    unsigned char *buf = NULL;
    size_t len = 0;
    if (ss_read_file(path, CLI_MAX_SVV_BYTES, &buf, &len))
        return ss_cli_error(cmd, SS_EXIT_FAIL, "cannot read %s: %s", path, ss_error());
    int rc = ss_volume_deserialize(buf, len, v);
    free(buf);
    if (rc) return ss_cli_error(cmd, SS_EXIT_FAIL, "cannot load %s: %s", path, ss_error());
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

int ss_cmd_reconstruct_volume(int argc, char **argv) {
    const char *cmd = "reconstruct-volume", *k_s = NULL, *backend_s = NULL, *threads_s = NULL, *axis_s = NULL,
               *index_s = NULL, *window_s = NULL, *pos[2];
    int npos, help, k = 0, threads = 0, quality = 0, axis = -1, index = -1;
    double wc = 0, ww = 0;
    const ss_opt opts[] = {{"k", 'k', 1, &k_s, NULL},          {"backend", 0, 1, &backend_s, NULL},
                           {"threads", 0, 1, &threads_s, NULL}, {"quality", 0, 0, NULL, &quality},
                           {"axis", 0, 1, &axis_s, NULL},       {"index", 0, 1, &index_s, NULL},
                           {"window", 0, 1, &window_s, NULL},   {NULL, 0, 0, NULL, NULL}};
    if (ss_cli_parse(cmd, argc, argv, opts, pos, 2, &npos, &help)) return SS_EXIT_USAGE;
    if (help) return fputs(k_help_reconstruct_volume, stdout), SS_EXIT_OK;
    if (npos != 2) return ss_cli_error(cmd, SS_EXIT_USAGE, "expects IN.svv OUT.nii.gz (see svdslice %s --help)", cmd);
    if (!k_s) return ss_cli_error(cmd, SS_EXIT_USAGE, "--k K is required");
    if (!ss_cli_posint(k_s, &k)) return ss_cli_error(cmd, SS_EXIT_USAGE, "k must be a positive integer, got '%s'", k_s);
    if (threads_s && !ss_cli_posint(threads_s, &threads))
        return ss_cli_error(cmd, SS_EXIT_USAGE, "threads must be a positive integer, got '%s'", threads_s);
    if (backend_s && !ss_backend_name_valid(backend_s))
        return ss_cli_error(cmd, SS_EXIT_USAGE, "unknown backend '%s' (valid: %s)", backend_s, ss_backend_names());
    if (axis_s && (!parse_nonneg(axis_s, &axis) || axis > 2))
        return ss_cli_error(cmd, SS_EXIT_USAGE, "axis must be 0, 1 or 2, got '%s'", axis_s);
    if (index_s && !parse_nonneg(index_s, &index))
        return ss_cli_error(cmd, SS_EXIT_USAGE, "index must be an integer >= 0, got '%s'", index_s);
    if (window_s) {
        char *end = NULL;
        wc = strtod(window_s, &end);
        if (!end || *end != ',' || (ww = strtod(end + 1, &end), *end) || !isfinite(wc) || !isfinite(ww))
            return ss_cli_error(cmd, SS_EXIT_USAGE, "window must be C,W (numbers), got '%s'", window_s);
    }
    const int png = ends_with(pos[1], ".png");
    if (png != (index_s != NULL))
        return ss_cli_error(cmd, SS_EXIT_USAGE, "--index goes with an OUT.png (one slice), and OUT.png needs --index");
    const ss_backend *b = volume_backend(cmd, backend_s);
    if (!b) return backend_s && !ss_backend_find(backend_s) && strcmp(backend_s, "auto") ? SS_EXIT_USAGE : SS_EXIT_FAIL;
    if (strcmp(b->name, "threads") == 0) threads = 1;

    ss_volume *v = NULL;
    double load_t0 = ss_now_ms();
    if (load_svv(cmd, pos[0], &v)) return SS_EXIT_FAIL;
    const double load_ms = ss_now_ms() - load_t0; /* read, check, inflate and (v2) factorise */
    int rc = SS_EXIT_FAIL;
    void *stored = malloc(ss_volume_voxel_bytes(v));
    unsigned char *out = NULL;
    size_t out_len = 0;
    double *vals = NULL;
    uint16_t *px = NULL;
    ss_volume_quality *sq = NULL;
    ss_workspace *ws = NULL;
    json_t *j = NULL;
    if (!stored) {
        ss_cli_error(cmd, SS_EXIT_FAIL, "out of memory");
        goto out;
    }
    double t0 = ss_now_ms();
    if (ss_volume_rebuild(v, k, b, threads, stored)) {
        ss_cli_error(cmd, SS_EXIT_FAIL, "rebuild failed: %s", ss_error());
        goto out;
    }
    double rebuild_ms = ss_now_ms() - t0;
    t0 = ss_now_ms();
    int bits = 0;
    if (png) {
        if (axis < 0) axis = v->axis;
        int rows, cols, count;
        ss_volume_slice_dims(&v->nii, axis, &rows, &cols, &count);
        if (index >= count) {
            ss_cli_error(cmd, SS_EXIT_FAIL, "index %d is past the %d slices along axis %d", index, count, axis);
            goto out;
        }
        const size_t n = (size_t)rows * (size_t)cols;
        vals = malloc(sizeof(double) * n);
        px = malloc(sizeof(uint16_t) * n);
        ws = ss_workspace_new();
        if (!vals || !px || !ws) {
            ss_cli_error(cmd, SS_EXIT_FAIL, "out of memory");
            goto out;
        }
        if (ss_volume_slice(v, stored, axis, index, k, b, ws, vals)) {
            ss_cli_error(cmd, SS_EXIT_FAIL, "slice failed: %s", ss_error());
            goto out;
        }
        if (window_s) {
            ss_volume_window(v, vals, n, wc, ww, px);
            bits = 8;
        } else {
            bits = ss_volume_pixels(v, vals, n, px);
        }
        if (ss_png_encode(px, cols, rows, bits, &out, &out_len)) {
            ss_cli_error(cmd, SS_EXIT_FAIL, "PNG encode failed: %s", ss_error());
            goto out;
        }
    } else if (ss_volume_to_nifti(v, stored, &out, &out_len)) {
        ss_cli_error(cmd, SS_EXIT_FAIL, "NIfTI write failed: %s", ss_error());
        goto out;
    }
    double write_ms = ss_now_ms() - t0;
    if (ss_cli_write_file(pos[1], out, out_len)) {
        ss_cli_error(cmd, SS_EXIT_FAIL, "cannot write %s: %s", pos[1], strerror(errno));
        goto out;
    }
    j = json_pack("{s:s, s:s, s:i, s:s, s:i, s:f, s:f, s:I, s:I}", "output", pos[1], "id", v->id, "k", k, "backend",
                  b->name, "threads", threads > 0 ? threads : (int)sysconf(_SC_NPROCESSORS_ONLN), "rebuild_ms",
                  rebuild_ms, "write_ms", write_ms, "bytes", (json_int_t)out_len, "voxel_bytes",
                  (json_int_t)ss_volume_voxel_bytes(v));
    if (j) json_object_set_new(j, "load_ms", json_real(load_ms));
    if (j && png) {
        json_object_set_new(j, "axis", json_integer(axis));
        json_object_set_new(j, "index", json_integer(index));
        json_object_set_new(j, "bits", json_integer(bits));
    }
    if (j && quality) {
        ss_volume_quality vq;
        sq = calloc((size_t)v->nslices, sizeof *sq);
        if (!sq || ss_volume_quality_compute(v, k, stored, &vq, sq)) {
            ss_cli_error(cmd, SS_EXIT_FAIL, "quality failed: %s", sq ? ss_error() : "out of memory");
            goto out;
        }
        json_t *arr = json_array();
        for (int s = 0; arr && s < v->nslices; s++) json_array_append_new(arr, ss_json_volume_quality(&sq[s], 1));
        json_object_set_new(j, "quality", json_pack("{s:o, s:o}", "volume", ss_json_volume_quality(&vq, 0), "slices", arr));
    }
    rc = ss_cli_print_json(cmd, j) ? SS_EXIT_FAIL : SS_EXIT_OK;
    j = NULL;
out:
    json_decref(j);
    ss_workspace_free(ws);
    free(sq);
    free(px);
    free(vals);
    free(out);
    free(stored);
    ss_volume_free(v);
    return rc;
}

/* ---- bench --volume ------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* The bare baseline: one cblas_sgemm per slice of the same shape and k, GEMM time only. */
typedef struct bare_job {
    const ss_volume *v;
    int k;
} bare_job;

static int bare_one(void *arg, int s, ss_workspace *ws) {
    const bare_job *j = arg;
    const ss_factors *f = j->v->slices[s];
    const int k = j->k < f->rank ? j->k : f->rank;
    float *C = ss_workspace_floats(ws, (size_t)f->m * (size_t)f->n);
    if (!C) return SS_ENOMEM;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, f->m, f->n, k, 1.0f, f->U, f->rank, f->W, f->n, 0.0f, C,
                f->n);
    return SS_OK;
}

/* Multiply-adds x 2 of the rebuild at k: slices at full rank are copied, not multiplied. */
static double volume_flops(const ss_volume *v, int k, int count_full) {
    double fl = 0;
    for (int s = 0; s < v->nslices; s++) {
        const ss_factors *f = v->slices[s];
        const int kk = k < f->rank ? k : f->rank;
        if (kk >= f->nsv && !count_full) continue;
        fl += 2.0 * f->m * f->n * kk;
    }
    return fl;
}

/* Largest difference between two stored volumes. */
static double max_diff(const ss_volume *v, const void *a, const void *b) {
    const size_t n = (size_t)v->nii.nvox;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double x, y;
        switch (v->nii.datatype) {
        case SS_NII_UINT8: x = ((const uint8_t *)a)[i], y = ((const uint8_t *)b)[i]; break;
        case SS_NII_INT8: x = ((const int8_t *)a)[i], y = ((const int8_t *)b)[i]; break;
        case SS_NII_INT16: x = ((const int16_t *)a)[i], y = ((const int16_t *)b)[i]; break;
        case SS_NII_UINT16: x = ((const uint16_t *)a)[i], y = ((const uint16_t *)b)[i]; break;
        case SS_NII_INT32: x = ((const int32_t *)a)[i], y = ((const int32_t *)b)[i]; break;
        case SS_NII_FLOAT32: x = ((const float *)a)[i], y = ((const float *)b)[i]; break;
        default: x = ((const double *)a)[i], y = ((const double *)b)[i]; break;
        }
        double d = fabs(x - y);
        if (!(d <= worst)) worst = d;
    }
    return worst;
}

#define VB_MAX_ROWS 256
#define VB_BUDGET_MS 1500.0 /* per row: slow backends get fewer runs (at least one) */

typedef struct vrow {
    char backend[24];
    int k, runs;
    double median_ms, gflops, max_diff, ratio;
    const char *status;
    char error[200];
} vrow;

int ss_bench_volume(const char *path, const int *ks, int nk, const char *const *names, int nb, int repeat,
                    int threads, const char *format) {
    const char *cmd = "bench";
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    ss_volume *v = NULL;
    double decode_ms;
    const ss_volume_opts vo = {.axis = -1, .t = -1};
    if (load_nifti(cmd, path, &vo, &v, &decode_ms)) return SS_EXIT_FAIL;
    double t0 = ss_now_ms(), c0 = cpu_ms();
    if (ss_volume_factor_all(v, threads)) {
        ss_volume_free(v);
        return ss_cli_error(cmd, SS_EXIT_FAIL, "factorisation failed: %s", ss_error());
    }
    const double factor_ms = ss_now_ms() - t0, factor_cpu_ms = cpu_ms() - c0;
    const int nsv = v->m < v->n ? v->m : v->n;
    int kk[64], nkk = 0;
    if (nk > 0) {
        for (int i = 0; i < nk && nkk < 64; i++) kk[nkk++] = ks[i];
    } else { /* the study's ranks, those below the slices' rank, else the rank */
        static const int def[] = {170, 130, 90, 50};
        for (size_t i = 0; i < sizeof def / sizeof def[0]; i++)
            if (def[i] < nsv) kk[nkk++] = def[i];
        if (!nkk) kk[nkk++] = nsv;
    }
    const ss_backend *sel[16];
    int nsel = 0;
    if (nb == 0)
        for (int i = 0; i < ss_backend_count() && nsel < 16; i++) sel[nsel++] = ss_backend_at(i);
    else
        for (int i = 0; i < nb && nsel < 16; i++)
            sel[nsel++] = strcmp(names[i], "auto") == 0 ? ss_backend_find("blas") : ss_backend_find(names[i]);

    const size_t vb = ss_volume_voxel_bytes(v);
    void *ref = malloc(vb), *out = malloc(vb);
    vrow *rows = calloc(VB_MAX_ROWS, sizeof *rows);
    double *t = malloc(sizeof(double) * (size_t)(repeat > 0 ? repeat : 1));
    double *tb = malloc(sizeof(double) * (size_t)(repeat > 0 ? repeat : 1));
    int nrows = 0, rc = SS_EXIT_FAIL;
    const double tol = v->nii.datatype == SS_NII_FLOAT32 || v->nii.datatype == SS_NII_FLOAT64
                           ? 1e-4 * ss_volume_data_range(v)
                           : 1.0;
    if (!ref || !out || !rows || !t || !tb) {
        ss_cli_error(cmd, SS_EXIT_FAIL, "out of memory");
        goto done;
    }
    for (int j = 0; j < nkk; j++) {
        const int k = kk[j];
        /* The reference rebuild for the check: blas on one thread. */
        if (ss_volume_rebuild(v, k, ss_backend_find("blas"), 1, ref)) {
            ss_cli_error(cmd, SS_EXIT_FAIL, "rebuild failed: %s", ss_error());
            goto done;
        }
        /* The bare sgemm baseline first: its median is every row's denominator. */
        vrow *base = &rows[nrows++];
        snprintf(base->backend, sizeof base->backend, "sgemm");
        base->k = k;
        base->status = "baseline";
        base->max_diff = NAN;
        bare_job bj = {v, k};
        ss_volume_for_each_slice(v->nslices, threads, bare_one, &bj); /* warm-up */
        int runs = 0;
        for (double start = ss_now_ms(); runs < repeat && (runs == 0 || ss_now_ms() - start < VB_BUDGET_MS); runs++) {
            double s = ss_now_ms();
            ss_volume_for_each_slice(v->nslices, threads, bare_one, &bj);
            t[runs] = ss_now_ms() - s;
        }
        base->runs = runs;
        base->median_ms = median(t, runs);
        base->gflops = volume_flops(v, k, 1) / (base->median_ms * 1e6);
        base->ratio = 1;
        for (int i = 0; i < nsel && nrows < VB_MAX_ROWS; i++) {
            const ss_backend *b = sel[i];
            vrow *r = &rows[nrows++];
            snprintf(r->backend, sizeof r->backend, "%s", b ? b->name : "?");
            r->k = k;
            r->median_ms = r->gflops = r->max_diff = r->ratio = NAN;
            r->status = "ok";
            const char *why = NULL;
            if (!b || !b->available(&why) || !b->reconstruct_f32) {
                r->status = "skipped";
                snprintf(r->error, sizeof r->error, "%s",
                         !b ? "unknown" : why ? why : "no float output for volumes");
                continue;
            }
            const int nt = strcmp(b->name, "threads") == 0 ? 1 : threads;
            if (ss_volume_rebuild(v, k, b, nt, out)) {
                r->status = "error";
                snprintf(r->error, sizeof r->error, "%s", ss_error());
                continue;
            }
            r->max_diff = max_diff(v, ref, out);
            if (!(r->max_diff <= tol)) {
                r->status = "wrong";
                snprintf(r->error, sizeof r->error, "differs from blas by %g (tolerance %g)", r->max_diff, tol);
                continue;
            }
            /* The backend and the baseline alternate, so both see the same load (the machine may
             * be shared): the ratio is of these paired medians. */
            runs = 0;
            for (double start = ss_now_ms(); runs < repeat && (runs == 0 || ss_now_ms() - start < VB_BUDGET_MS);
                 runs++) {
                double s = ss_now_ms();
                ss_volume_rebuild(v, k, b, nt, out);
                t[runs] = ss_now_ms() - s;
                s = ss_now_ms();
                ss_volume_for_each_slice(v->nslices, threads, bare_one, &bj);
                tb[runs] = ss_now_ms() - s;
            }
            r->runs = runs;
            r->median_ms = median(t, runs);
            r->gflops = volume_flops(v, k, 1) / (r->median_ms * 1e6);
            r->ratio = median(tb, runs) / r->median_ms;
        }
    }

    /* The .nii.gz write of the last volume rebuilt: median of 3. */
    double wt[3], wc[3], write_ms = NAN;
    size_t gz_len = 0;
    for (int w = 0; w < 3; w++) {
        unsigned char *gz = NULL;
        double s = ss_now_ms(), c = cpu_ms();
        if (ss_volume_to_nifti(v, out, &gz, &gz_len)) {
            ss_cli_error(cmd, SS_EXIT_FAIL, "NIfTI write failed: %s", ss_error());
            goto done;
        }
        wt[w] = ss_now_ms() - s;
        wc[w] = cpu_ms() - c;
        free(gz);
    }
    write_ms = median(wt, 3);
    const double write_cpu_ms = median(wc, 3);
    const double write_mbs = (double)vb / (write_ms * 1e3), write_cpu_mbs = (double)vb / (write_cpu_ms * 1e3);
    char cpu[256];
    ss_cpu_model(cpu, sizeof cpu);
    if (strcmp(format, "json") == 0) {
        json_t *arr = json_array();
        for (int i = 0; arr && i < nrows; i++) {
            const vrow *r = &rows[i];
            json_t *o = json_object();
            json_object_set_new(o, "backend", json_string(r->backend));
            json_object_set_new(o, "k", json_integer(r->k));
            json_object_set_new(o, "runs", json_integer(r->runs));
            json_object_set_new(o, "median_ms", isfinite(r->median_ms) ? json_real(r->median_ms) : json_null());
            json_object_set_new(o, "slices_per_s",
                                isfinite(r->median_ms) ? json_real(v->nslices / (r->median_ms / 1e3)) : json_null());
            json_object_set_new(o, "gflops", isfinite(r->gflops) ? json_real(r->gflops) : json_null());
            json_object_set_new(o, "ratio_to_sgemm", isfinite(r->ratio) ? json_real(r->ratio) : json_null());
            json_object_set_new(o, "max_diff", isfinite(r->max_diff) ? json_real(r->max_diff) : json_null());
            json_object_set_new(o, "status", json_string(r->status));
            json_object_set_new(o, "error", r->error[0] ? json_string(r->error) : json_null());
            json_array_append_new(arr, o);
        }
        json_t *doc = volume_json(v);
        if (doc) {
            json_object_set_new(doc, "threads", json_integer(threads));
            json_object_set_new(doc, "cpu", json_string(cpu));
            json_object_set_new(doc, "decode_ms", json_real(decode_ms));
            json_object_set_new(doc, "factor_ms", json_real(factor_ms));
            json_object_set_new(doc, "factor_cpu_ms", json_real(factor_cpu_ms));
            json_object_set_new(doc, "nifti_write_ms", json_real(write_ms));
            json_object_set_new(doc, "nifti_write_mb_per_s", json_real(write_mbs));
            json_object_set_new(doc, "nifti_write_cpu_ms", json_real(write_cpu_ms));
            json_object_set_new(doc, "nifti_gz_bytes", json_integer((json_int_t)gz_len));
            json_object_set_new(doc, "rows", arr);
        } else {
            json_decref(arr);
        }
        if (ss_cli_print_json(cmd, doc)) goto done;
    } else {
        printf("volume %dx%dx%d %s, %d slices of %dx%d along axis %d, %d threads, %s\n", v->nii.nx, v->nii.ny,
               v->nii.nz, ss_nifti_type_name(v->nii.datatype), v->nslices, v->m, v->n, v->axis, threads, cpu);
        printf("bytes -> volume %.1f ms, factorise %.1f ms (together %.1f ms; factorising took %.1f ms of CPU)\n",
               decode_ms, factor_ms, decode_ms + factor_ms, factor_cpu_ms);
        printf(".nii.gz write (k = %d): %.1f ms, %.0f MB/s of voxels (%.1f ms of CPU: %.0f MB/s), %zu bytes\n\n",
               kk[nkk - 1], write_ms, write_mbs, write_cpu_ms, write_cpu_mbs, gz_len);
        printf("%-8s %5s %5s %11s %11s %9s %9s %10s  %s\n", "backend", "k", "runs", "median ms", "slices/s", "GFLOP/s",
               "x sgemm", "max diff", "status");
        for (int i = 0; i < nrows; i++) {
            const vrow *r = &rows[i];
            printf("%-8s %5d %5d ", r->backend, r->k, r->runs);
            if (isfinite(r->median_ms))
                printf("%11.3f %11.0f %9.2f %9.2f ", r->median_ms, v->nslices / (r->median_ms / 1e3), r->gflops,
                       r->ratio);
            else
                printf("%11s %11s %9s %9s ", "-", "-", "-", "-");
            if (isfinite(r->max_diff)) printf("%10.3g", r->max_diff);
            else printf("%10s", "-");
            printf("  %s%s%s\n", r->status, r->error[0] ? ": " : "", r->error);
        }
    }
    rc = fflush(stdout) ? ss_cli_error(cmd, SS_EXIT_FAIL, "cannot write to stdout") : SS_EXIT_OK;
done:
    free(t);
    free(tb);
    free(rows);
    free(ref);
    free(out);
    ss_volume_free(v);
    return rc;
}
