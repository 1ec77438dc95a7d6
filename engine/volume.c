/* volume.c - a NIfTI volume as per-slice SVD factors: id, factorisation, the .svv form, rebuild, quality */
#include "engine/volume.h"
#include "engine/quality.h"
#include "util/error.h"
#include "util/le.h"

#include <math.h>
#include <nettle/sha2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#ifdef SVDSLICE_HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

/* ---- layout ------------------------------------------------------------------ */

/* Strides (in voxels) of slice `axis`: the fixed axis, rows, columns. */
typedef struct slice_geom {
    size_t fixed, row, col;
    int rows, cols, count;
} slice_geom;

static int geom(const ss_nifti_info *nii, int axis, slice_geom *g) {
    const size_t si = 1, sj = (size_t)nii->nx, sk = (size_t)nii->nx * (size_t)nii->ny;
    switch (axis) {
    case 0: *g = (slice_geom){si, sk, sj, nii->nz, nii->ny, nii->nx}; return SS_OK;
    case 1: *g = (slice_geom){sj, sk, si, nii->nz, nii->nx, nii->ny}; return SS_OK;
    case 2: *g = (slice_geom){sk, sj, si, nii->ny, nii->nx, nii->nz}; return SS_OK;
    default: *g = (slice_geom){0, 0, 0, 0, 0, 0}; return ss_fail(SS_EINVAL, "axis must be 0, 1 or 2, got %d", axis);
    }
}

void ss_volume_slice_dims(const ss_nifti_info *info, int axis, int *rows, int *cols, int *count) {
    slice_geom g = {0};
    if (geom(info, axis, &g)) g.rows = g.cols = g.count = 0;
    if (rows) *rows = g.rows;
    if (cols) *cols = g.cols;
    if (count) *count = g.count;
}

/* ---- typed access ---------------------------------------------------------------- */

static double get_val(const void *vox, int dt, size_t i) {
    switch (dt) {
    case SS_NII_UINT8: return ((const uint8_t *)vox)[i];
    case SS_NII_INT8: return ((const int8_t *)vox)[i];
    case SS_NII_INT16: return ((const int16_t *)vox)[i];
    case SS_NII_UINT16: return ((const uint16_t *)vox)[i];
    case SS_NII_INT32: return ((const int32_t *)vox)[i];
    case SS_NII_FLOAT32: return ((const float *)vox)[i];
    default: return ((const double *)vox)[i];
    }
}

/* Round half away from zero and clamp to [lo, hi]; NaN -> 0. */
static inline double round_clamp(double x, double lo, double hi) {
    if (!(x == x)) return 0;
    x = x < 0 ? -floor(-x + 0.5) : floor(x + 0.5);
    return x < lo ? lo : x > hi ? hi : x;
}

/* Stored value for scaled value y. */
static inline double to_stored(double y, double slope, double inter, int dt, double lo, double hi) {
    double x = (y - inter) / slope;
    if (dt == SS_NII_FLOAT32 || dt == SS_NII_FLOAT64) return x;
    return round_clamp(x, lo, hi);
}

static void put_val(void *vox, int dt, size_t i, double x) {
    switch (dt) {
    case SS_NII_UINT8: ((uint8_t *)vox)[i] = (uint8_t)x; break;
    case SS_NII_INT8: ((int8_t *)vox)[i] = (int8_t)x; break;
    case SS_NII_INT16: ((int16_t *)vox)[i] = (int16_t)x; break;
    case SS_NII_UINT16: ((uint16_t *)vox)[i] = (uint16_t)x; break;
    case SS_NII_INT32: ((int32_t *)vox)[i] = (int32_t)x; break;
    case SS_NII_FLOAT32: ((float *)vox)[i] = (float)x; break;
    default: ((double *)vox)[i] = x; break;
    }
}

/* The scaled values of slice s into a (rows x cols floats). */
static void gather_scaled(const ss_volume *v, const slice_geom *g, int s, float *a) {
    double slope, inter;
    ss_nifti_scaling(&v->nii, &slope, &inter);
    const int dt = v->nii.datatype;
    const size_t base = (size_t)s * g->fixed;
    for (int r = 0; r < g->rows; r++) {
        float *row = a + (size_t)r * (size_t)g->cols;
        size_t o = base + (size_t)r * g->row;
        if (dt == SS_NII_UINT8 && slope == 1 && inter == 0 && g->col == 1) {
            const uint8_t *p = (const uint8_t *)v->voxels + o;
            for (int c = 0; c < g->cols; c++) row[c] = p[c];
            continue;
        }
        for (int c = 0; c < g->cols; c++, o += g->col)
            row[c] = (float)(slope * get_val(v->voxels, dt, o) + inter);
    }
}

/* ---- construction --------------------------------------------------------------- */


/* The upload options that differ from the defaults as text ("" for the defaults). */
static size_t volume_options_text(const ss_volume *v, char *buf, size_t cap) {
    int n = 0;
    buf[0] = 0;
    if (v->target.kind == SS_TARGET_RANK) n = snprintf(buf, cap, "rank=%d;", (int)v->target.value);
    else if (v->target.kind == SS_TARGET_ENERGY) n = snprintf(buf, cap, "energy=%.17g;", v->target.value);
    else if (v->target.kind == SS_TARGET_PSNR) n = snprintf(buf, cap, "psnr=%.17g;", v->target.value);
    if (v->no_original && n >= 0 && (size_t)n < cap) n += snprintf(buf + n, cap - (size_t)n, "keep-original=false;");
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* See volume.h: SHA-256 of the tag, axis, t, the header as written back and the voxels (LE). */
static int volume_id(const ss_volume *v, char id[65]) {
    unsigned char h[SS_NII_HDR_MAX + 4];
    size_t hl = ss_nifti_write_header(&v->nii, h);
    if (!hl) return ss_fail(SS_EINVAL, "volume without a header");
    struct sha256_ctx c;
    sha256_init(&c);
    static const char tag[] = "svdslice-vol-1";
    sha256_update(&c, sizeof tag - 1, (const uint8_t *)tag);
    uint8_t at[8];
    ss_put_le32(at, (uint32_t)v->axis);
    ss_put_le32(at + 4, (uint32_t)v->nii.t);
    sha256_update(&c, sizeof at, at);
    sha256_update(&c, hl, h);
    const size_t nb = ss_volume_voxel_bytes(v);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    sha256_update(&c, nb, v->voxels);
#else
#error "volume ids hash little-endian voxels: add the byte swap for this host"
#endif
    char opt[96];
    size_t ol = volume_options_text(v, opt, sizeof opt);
    if (ol) sha256_update(&c, ol, (const uint8_t *)opt);
    uint8_t d[SHA256_DIGEST_SIZE];
    sha256_digest(&c, sizeof d, d);
    for (int i = 0; i < SHA256_DIGEST_SIZE; i++) snprintf(id + 2 * i, 3, "%02x", d[i]);
    return SS_OK;
}

static void value_range(const ss_volume *v, double *lo, double *hi) {
    const size_t n = (size_t)v->nii.nvox;
    double a = INFINITY, b = -INFINITY;
    const int dt = v->nii.datatype;
    if (dt == SS_NII_UINT8) {
        const uint8_t *p = v->voxels;
        uint8_t mn = 255, mx = 0;
        for (size_t i = 0; i < n; i++) {
            mn = p[i] < mn ? p[i] : mn;
            mx = p[i] > mx ? p[i] : mx;
        }
        a = mn;
        b = mx;
    } else {
        for (size_t i = 0; i < n; i++) {
            double x = get_val(v->voxels, dt, i);
            a = x < a ? x : a;
            b = x > b ? x : b;
        }
    }
    *lo = a;
    *hi = b;
}

size_t ss_volume_voxel_bytes(const ss_volume *v) { return (size_t)v->nii.nvox * (size_t)v->nii.bytes_per_voxel; }

/* A volume around decoded voxels (taken over), slices empty. */
static int volume_new(const ss_nifti_info *nii, int axis, void *voxels, ss_volume **out) {
    *out = NULL;
    slice_geom g;
    int rc = geom(nii, axis, &g);
    if (rc) return rc;
    ss_volume *v = calloc(1, sizeof *v);
    ss_factors **sl = calloc((size_t)g.count, sizeof *sl);
    if (!v || !sl) {
        free(v);
        free(sl);
        return ss_fail(SS_ENOMEM, "out of memory for a volume of %d slices", g.count);
    }
    v->nii = *nii;
    v->axis = axis;
    v->nslices = g.count;
    v->m = g.rows;
    v->n = g.cols;
    v->voxels = voxels;
    v->slices = sl;
    if (voxels) value_range(v, &v->vmin, &v->vmax);
    *out = v;
    return SS_OK;
}

int ss_volume_from_nifti(const void *buf, size_t len, const ss_volume_opts *o, ss_volume **out) {
    *out = NULL;
    int axis = o && o->axis >= 0 ? o->axis : 2, t = o && o->t >= 0 ? o->t : 0;
    if (axis > 2) return ss_fail(SS_EINVAL, "axis must be 0, 1 or 2, got %d", axis);
    ss_nifti_info nii;
    void *vox;
    int rc = ss_nifti_decode(buf, len, t, o ? &o->lim : NULL, &nii, &vox);
    if (rc) return rc;
    ss_volume *v;
    rc = volume_new(&nii, axis, vox, &v);
    if (rc) {
        free(vox);
        return rc;
    }
    if (o) {
        v->target = o->target;
        v->no_original = o->no_original;
    }
    const int nsv = v->m < v->n ? v->m : v->n, rows = v->m, cols = v->n;
    if (v->target.kind == SS_TARGET_RANK && !(v->target.value >= 1 && v->target.value <= nsv)) {
        ss_volume_free(v);
        return ss_fail(SS_EINVAL, "rank must be an integer in 1..%d for this volume's %dx%d slices", nsv, rows, cols);
    }
    rc = volume_id(v, v->id);
    if (rc) {
        ss_volume_free(v);
        return rc;
    }
    *out = v;
    return SS_OK;
}

void ss_volume_free(ss_volume *v) {
    if (!v) return;
    if (v->slices)
        for (int s = 0; s < v->nslices; s++) ss_factors_free(v->slices[s]);
    free(v->slices);
    free(v->voxels);
    free(v);
}

/* ---- factorisation ------------------------------------------------------------- */

static int slice_bits(const ss_volume *v) { return v->nii.datatype == SS_NII_UINT8 ? 8 : 16; }
/* Bytes per voxel > 1: float64 SVD (see ss_svd_factor_values). */
static int slice_f64(const ss_volume *v) { return v->nii.bytes_per_voxel > 1; }

double ss_volume_fit_peak(const ss_volume *v) {
    double slope, inter;
    ss_nifti_scaling(&v->nii, &slope, &inter);
    const double a = fabs(slope) > 0 ? fabs(slope) : 1.0;
    if (v->target.kind == SS_TARGET_PSNR) return ss_volume_data_range(v) * a;
    return (v->vmax - v->vmin > 1 ? v->vmax - v->vmin : 1.0) * a;
}

/* ss_compress_fit's maxval: what is served is rounded for integer types without scaling;
 * uint8/uint16 clamp to 0..max as the fit does, signed types are checked rounded and unclamped
 * (their clamp to the type's range only brings values nearer the data); else 0 (floats). */
static int fit_maxval(const ss_volume *v) {
    double slope, inter;
    ss_nifti_scaling(&v->nii, &slope, &inter);
    if (slope != 1 || inter != 0) return 0;
    switch (v->nii.datatype) {
    case SS_NII_UINT8: return 255;
    case SS_NII_UINT16: return 65535;
    case SS_NII_INT8: case SS_NII_INT16: case SS_NII_INT32: return -1;
    default: return 0;
    }
}

/* Factorises slice index; then, with keep_rank > 0 (a stored volume read again), truncates it to
 * that rank, else fits it to the volume's target (see volume.h). */
static int factor_slice_at(ss_volume *v, int index, int keep_rank) {
    if (!v || !v->slices || index < 0 || index >= v->nslices)
        return ss_fail(SS_EINVAL, "no slice %d to factorise", index);
    if (v->slices[index]) return ss_fail(SS_EINVAL, "slice %d is factorised already", index);
    if (!v->voxels) return ss_fail(SS_EINVAL, "the volume's voxels are not kept");
    slice_geom g;
    int rc = geom(&v->nii, v->axis, &g);
    if (rc) return rc;
    float *a = malloc(sizeof(float) * (size_t)g.rows * (size_t)g.cols);
    if (!a) return ss_fail(SS_ENOMEM, "out of memory for slice %d", index);
    gather_scaled(v, &g, index, a);
    ss_factors *f;
    rc = ss_svd_factor_values(a, g.rows, g.cols, slice_bits(v), 0, slice_f64(v), &f);
    if (rc) {
        free(a);
        return rc;
    }
    f->qstep = -1; /* what version-1 files store (float32); version 2 stores no factors with the voxels */
    if (keep_rank > 0 && keep_rank < f->rank) {
        rc = ss_compress_fit(f, a, (ss_target){SS_TARGET_RANK, keep_rank}, 1.0, 0, 0, NULL);
    } else if (keep_rank <= 0 && (v->target.kind != SS_TARGET_NONE || v->no_original)) {
        const int maxval = fit_maxval(v);
        rc = ss_compress_fit(f, a, v->target, ss_volume_fit_peak(v), maxval, v->no_original, NULL);
    }
    free(a);
    if (rc) {
        ss_factors_free(f);
        return rc;
    }
    v->slices[index] = f;
    return SS_OK;
}

int ss_volume_factor_slice(ss_volume *v, int index) { return factor_slice_at(v, index, 0); }

int ss_volume_complete(const ss_volume *v) {
    if (!v || !v->slices) return 0;
    for (int s = 0; s < v->nslices; s++)
        if (!v->slices[s]) return 0;
    return 1;
}

long long ss_volume_slice_workspace_bytes(const ss_volume *v) {
    long long b = ss_svd_workspace_bytes(v->m, v->n, slice_f64(v) ? 16 : 8);
    return b < 0 ? b : b + 4LL * v->m * v->n;
}

long long ss_volume_memory_bytes(const ss_nifti_info *info, int axis) {
    int m, n, count;
    ss_volume_slice_dims(info, axis, &m, &n, &count);
    if (!count) return -1;
    const long long p = m < n ? m : n;
    /* U, S, Vt, W at full rank per slice, plus the voxels. */
    const long long per = (long long)sizeof(ss_factors) + 4 * ((long long)m * p + p + 2 * p * n);
    return info->nvox * info->bytes_per_voxel + per * count + (long long)count * (long long)sizeof(void *);
}

static int default_threads(int n) {
    if (n > 0) return n;
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)c : 1;
}

/* Runs fn(arg, s, ws) for s in 0..count-1 over nthreads threads (the caller
 * is one), slices handed out one at a time; the first error stops the rest. */
typedef struct par {
    ss_slice_fn fn;
    void *arg;
    int count;
    atomic_int next, rc;
    char msg[512];
    pthread_mutex_t mu;
} par;

static void *par_run(void *p_) {
    par *p = p_;
    ss_workspace *ws = ss_workspace_new();
    if (!ws) {
        int zero = 0;
        atomic_compare_exchange_strong(&p->rc, &zero, SS_ENOMEM);
        return NULL;
    }
    for (;;) {
        if (atomic_load(&p->rc)) break;
        int s = atomic_fetch_add(&p->next, 1);
        if (s >= p->count) break;
        int rc = p->fn(p->arg, s, ws);
        if (rc) {
            int zero = 0;
            if (atomic_compare_exchange_strong(&p->rc, &zero, rc)) {
                pthread_mutex_lock(&p->mu);
                snprintf(p->msg, sizeof p->msg, "%s", ss_error());
                pthread_mutex_unlock(&p->mu);
            }
            break;
        }
    }
    ss_workspace_free(ws);
    return NULL;
}

int ss_volume_for_each_slice(int count, int nthreads, ss_slice_fn fn, void *arg) {
    if (count <= 0) return SS_OK;
    par p = {.fn = fn, .arg = arg, .count = count};
    atomic_init(&p.next, 0);
    atomic_init(&p.rc, 0);
    pthread_mutex_init(&p.mu, NULL);
    nthreads = default_threads(nthreads);
    if (nthreads > count) nthreads = count;
    if (nthreads > 64) nthreads = 64;
    pthread_t th[64];
    int started = 0;
    for (int i = 1; i < nthreads; i++) {
        if (pthread_create(&th[started], NULL, par_run, &p)) break; /* fewer threads: still correct */
        started++;
    }
    par_run(&p);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    pthread_mutex_destroy(&p.mu);
    int rc = atomic_load(&p.rc);
    if (rc) return ss_fail(rc, "%s", p.msg[0] ? p.msg : ss_strcode(rc));
    return SS_OK;
}

static int factor_one(void *arg, int s, ss_workspace *ws) {
    (void)ws;
    ss_volume *v = arg;
    return v->slices[s] ? SS_OK : ss_volume_factor_slice(v, s);
}

int ss_volume_factor_all(ss_volume *v, int nthreads) {
    if (!v || !v->slices) return ss_fail(SS_EINVAL, "no volume");
    return ss_volume_for_each_slice(v->nslices, nthreads, factor_one, v);
}

/* ---- .svv --------------------------------------------------------------------- */

enum {
    H_MAGIC = 0, H_VERSION = 8, H_HDRSIZE = 12, H_NIIVER = 16, H_NIIBYTES = 20, H_AXIS = 24, H_T = 28,
    H_NSLICES = 32, H_M = 36, H_N = 40, H_DTYPE = 44, H_FLAGS = 48, H_VMIN = 56, H_VMAX = 64,
    H_CREATED = 72, H_NAME = 80, H_ID = 336, H_NII = 408, H_TKIND = 952, H_TVAL = 960, H_UPLOAD = 968,
    H_V2_END = 976, H_CRC = 1020,
    NAME_BYTES = 256, ID_BYTES = 72,
};
_Static_assert(H_NII + SS_NII_HDR_MAX <= H_TKIND && H_V2_END <= H_CRC, "svv header layout");
_Static_assert(H_CRC + 4 == SS_SVV_HEADER_BYTES, "svv header size");
#define SVV_MAGIC "SVDSLVOL"
#define SVV_VERSION 2u
#define SVV_FLAG_VOXELS 1u /* version 2: the voxel section holds the original */
/* Slices along any axis: 2^24 is far past any scanner and keeps the index small enough to count. */
#define SVV_MAX_SLICES (1 << 24)


size_t ss_svv_sections_offset(int nslices) {
    return SS_SVV_HEADER_BYTES + ((size_t)nslices + 1) * SS_SVV_INDEX_ENTRY_BYTES + 4;
}

size_t ss_svv_head_bytes(const void *head, size_t n) {
    const unsigned char *b = head;
    if (!b || n < SS_SVV_HEADER_BYTES || memcmp(b, SVV_MAGIC, 8) != 0 ||
        (uint32_t)crc32_z(0, b, H_CRC) != ss_get_le32(b + H_CRC))
        return 0;
    const uint32_t ns = ss_get_le32(b + H_NSLICES);
    return ns >= 1 && ns <= SVV_MAX_SLICES ? ss_svv_sections_offset((int)ns) : 0;
}

/* The voxels as a zlib stream, at a level measured to cost the upload little (docs/COMPRESSION.md). */
#ifndef SVV_DEFLATE_LEVEL
#define SVV_DEFLATE_LEVEL 1
#endif
static int deflate_voxels(const ss_volume *v, unsigned char **out, size_t *out_len) {
    const size_t nb = ss_volume_voxel_bytes(v);
#ifdef SVDSLICE_HAVE_LIBDEFLATE
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(SVV_DEFLATE_LEVEL);
    if (!c) return ss_fail(SS_ENOMEM, "out of memory compressing voxels");
    size_t bound = libdeflate_zlib_compress_bound(c, nb);
    unsigned char *z = malloc(bound);
    size_t zl = z ? libdeflate_zlib_compress(c, v->voxels, nb, z, bound) : 0;
    libdeflate_free_compressor(c);
#else
    uLongf zl = compressBound((uLong)nb);
    unsigned char *z = malloc(zl);
    if (z && compress2(z, &zl, v->voxels, (uLong)nb, SVV_DEFLATE_LEVEL) != Z_OK) zl = 0;
#endif
    if (!zl) {
        free(z);
        return ss_fail(SS_ENOMEM, "out of memory compressing voxels");
    }
    *out = z;
    *out_len = zl;
    return SS_OK;
}

/* Each slice's .svd encoding and its crc, one slice per call: run over the cores. */
typedef struct enc_job {
    const ss_volume *v;
    unsigned char **enc;
    size_t *len;
    uint32_t *crc;
    int version;
} enc_job;

/* A version-2 slice section: u32 stored rank, u32 bytes of the next field, and without the
 * voxels the nsv exact singular values (f32) as a zlib stream (blank slices' zeros take a few
 * bytes), then the quantised factors (ss_factors_encode) to the section's end. With the voxels
 * the rank alone: the SVD that recomputes the factors gives the same values again, and storing
 * them (incompressible floats) cost more than the voxels on sparse volumes. No .svd header: the
 * volume's header says the rest. */
static int encode_section(const ss_factors *f, int with_factors, unsigned char **out, size_t *out_len) {
    if (!with_factors) {
        unsigned char *b = calloc(1, 8);
        if (!b) return ss_fail(SS_ENOMEM, "out of memory");
        ss_put_le32(b, (uint32_t)f->rank);
        *out = b;
        *out_len = 8;
        return SS_OK;
    }
    const size_t sb = 4 * (size_t)f->nsv;
    unsigned char *raw = malloc(sb), *fac = NULL;
    size_t fl = 0;
    uLongf zl = compressBound((uLong)sb);
    unsigned char *b = raw ? malloc(8 + zl) : NULL;
    int rc = b ? SS_OK : ss_fail(SS_ENOMEM, "out of memory");
    for (int i = 0; rc == SS_OK && i < f->nsv; i++) {
        uint32_t x;
        memcpy(&x, &f->S[i], 4);
        ss_put_le32(raw + 4 * (size_t)i, x);
    }
    if (rc == SS_OK && compress2(b + 8, &zl, raw, (uLong)sb, 6) != Z_OK) rc = ss_fail(SS_ENOMEM, "out of memory");
    if (rc == SS_OK && with_factors) rc = ss_factors_encode(f, &fac, &fl);
    if (rc == SS_OK && fl) {
        unsigned char *nb = realloc(b, 8 + zl + fl);
        if (!nb) rc = ss_fail(SS_ENOMEM, "out of memory");
        else memcpy((b = nb) + 8 + zl, fac, fl);
    }
    free(raw);
    free(fac);
    if (rc) {
        free(b);
        return rc;
    }
    ss_put_le32(b, (uint32_t)f->rank);
    ss_put_le32(b + 4, (uint32_t)zl);
    *out = b;
    *out_len = 8 + zl + fl;
    return SS_OK;
}

static int encode_one(void *arg, int s, ss_workspace *ws) {
    (void)ws;
    const enc_job *j = arg;
    const ss_factors *f = j->v->slices[s];
    int rc;
    if (j->version == 1) {
        ss_factors g = *f; /* full-rank float32 factors, as version 1 wrote them */
        g.qstep = -1;
        rc = ss_svd_serialize(&g, &j->enc[s], &j->len[s]);
    } else {
        rc = encode_section(f, j->v->no_original, &j->enc[s], &j->len[s]);
    }
    if (rc == SS_OK) j->crc[s + 1] = (uint32_t)crc32_z(0, j->enc[s], j->len[s]);
    return rc;
}

static int serialize(const ss_volume *v, int version, unsigned char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (!ss_volume_complete(v)) return ss_fail(SS_EINVAL, "the volume is not factorised yet");
    const int ns = v->nslices;
    const int with_voxels = version == 1 || !v->no_original;
    if (with_voxels && !v->voxels) return ss_fail(SS_EINVAL, "the volume's voxels are not kept");
    unsigned char *z = NULL;
    size_t zl = 0;
    int rc = with_voxels ? deflate_voxels(v, &z, &zl) : SS_OK;
    if (rc) return rc;
    unsigned char **enc = calloc((size_t)ns, sizeof *enc);
    size_t *elen = calloc((size_t)ns, sizeof *elen);
    uint32_t *crc = calloc((size_t)ns + 1, sizeof *crc);
    if (!enc || !elen || !crc) rc = ss_fail(SS_ENOMEM, "out of memory serialising a volume");
    if (rc == SS_OK) {
        enc_job ej = {v, enc, elen, crc, version};
        rc = ss_volume_for_each_slice(ns, 0, encode_one, &ej);
        crc[0] = (uint32_t)crc32_z(0, z ? z : (const unsigned char *)"", zl);
    }
    size_t total = ss_svv_sections_offset(ns) + zl;
    for (int s = 0; rc == SS_OK && s < ns; s++) total += elen[s];
    unsigned char *b = rc ? NULL : malloc(total);
    if (!rc && !b) rc = ss_fail(SS_ENOMEM, "out of memory for a %zu-byte volume", total);
    if (rc == SS_OK) {
        memset(b, 0, ss_svv_sections_offset(ns));
        memcpy(b + H_MAGIC, SVV_MAGIC, 8);
        ss_put_le32(b + H_VERSION, (uint32_t)version);
        ss_put_le32(b + H_HDRSIZE, SS_SVV_HEADER_BYTES);
        ss_put_le32(b + H_NIIVER, (uint32_t)v->nii.version);
        ss_put_le32(b + H_NIIBYTES, (uint32_t)v->nii.hdr_bytes);
        ss_put_le32(b + H_AXIS, (uint32_t)v->axis);
        ss_put_le32(b + H_T, (uint32_t)v->nii.t);
        ss_put_le32(b + H_NSLICES, (uint32_t)ns);
        ss_put_le32(b + H_M, (uint32_t)v->m);
        ss_put_le32(b + H_N, (uint32_t)v->n);
        ss_put_le32(b + H_DTYPE, (uint32_t)v->nii.datatype);
        ss_put_le32(b + H_FLAGS, version == 1 ? 0 : with_voxels ? SVV_FLAG_VOXELS : 0);
        ss_put_lef64(b + H_VMIN, v->vmin);
        ss_put_lef64(b + H_VMAX, v->vmax);
        ss_put_le64(b + H_CREATED, (uint64_t)v->created);
        memcpy(b + H_NAME, v->name, strnlen(v->name, NAME_BYTES - 1));
        memcpy(b + H_ID, v->id, strnlen(v->id, sizeof v->id - 1));
        memcpy(b + H_NII, v->nii.hdr, v->nii.hdr_bytes);
        if (version >= 2) {
            ss_put_le32(b + H_TKIND, (uint32_t)v->target.kind);
            ss_put_lef64(b + H_TVAL, v->target.value);
            ss_put_le64(b + H_UPLOAD, (uint64_t)(v->upload_bytes > 0 ? v->upload_bytes : 0));
        }
        ss_put_le32(b + H_CRC, (uint32_t)crc32_z(0, b, H_CRC));
        unsigned char *idx = b + SS_SVV_HEADER_BYTES;
        size_t off = ss_svv_sections_offset(ns);
        for (int e = 0; e <= ns; e++, idx += SS_SVV_INDEX_ENTRY_BYTES) {
            const unsigned char *src = e == 0 ? z : enc[e - 1];
            size_t n = e == 0 ? zl : elen[e - 1];
            if (n) memcpy(b + off, src, n);
            ss_put_le64(idx, off);
            ss_put_le64(idx + 8, n);
            ss_put_le32(idx + 16, crc[e]);
            off += n;
        }
        ss_put_le32(idx, (uint32_t)crc32_z(0, b + SS_SVV_HEADER_BYTES, (size_t)(ns + 1) * SS_SVV_INDEX_ENTRY_BYTES));
        *out = b;
        *out_len = total;
    }
    if (enc)
        for (int s = 0; s < ns; s++) free(enc[s]);
    free(enc);
    free(elen);
    free(crc);
    free(z);
    return rc;
}

int ss_volume_serialize(const ss_volume *v, unsigned char **out, size_t *out_len) {
    return serialize(v, SVV_VERSION, out, out_len);
}

int ss_volume_serialize_v1(const ss_volume *v, unsigned char **out, size_t *out_len) {
    if (v && v->slices)
        for (int s = 0; s < v->nslices; s++)
            if (v->slices[s] && v->slices[s]->rank != v->slices[s]->nsv)
                return ss_fail(SS_EINVAL, "version 1 holds full-rank slices only");
    return serialize(v, 1, out, out_len);
}

/* Header and index checks; fills out's scalars. buf holds buf_len bytes of a len-byte blob. */
static int parse_svv(const unsigned char *b, size_t buf_len, size_t len, ss_volume *out) {
    memset(out, 0, sizeof *out);
    if (buf_len > len) buf_len = len;
    if (buf_len < SS_SVV_HEADER_BYTES)
        return ss_fail(SS_ECORRUPT, ".svv: %zu bytes, shorter than its %d-byte header", buf_len, SS_SVV_HEADER_BYTES);
    if (memcmp(b, SVV_MAGIC, 8) != 0) return ss_fail(SS_ECORRUPT, ".svv: bad magic");
    if ((uint32_t)crc32_z(0, b, H_CRC) != ss_get_le32(b + H_CRC)) return ss_fail(SS_ECORRUPT, ".svv: header checksum mismatch");
    const uint32_t version = ss_get_le32(b + H_VERSION), flags = ss_get_le32(b + H_FLAGS);
    if (version != 1 && version != SVV_VERSION)
        return ss_fail(SS_ECORRUPT, ".svv: unsupported version %u", (unsigned)version);
    if (ss_get_le32(b + H_HDRSIZE) != SS_SVV_HEADER_BYTES) return ss_fail(SS_ECORRUPT, ".svv: bad header size");
    if (version == 1 ? flags != 0 : (flags & ~SVV_FLAG_VOXELS) != 0) return ss_fail(SS_ECORRUPT, ".svv: unknown flags");
    const int with_voxels = version == 1 || (flags & SVV_FLAG_VOXELS);
    const uint32_t niiver = ss_get_le32(b + H_NIIVER), niibytes = ss_get_le32(b + H_NIIBYTES);
    if (!((niiver == 1 && niibytes == 348) || (niiver == 2 && niibytes == 540)))
        return ss_fail(SS_ECORRUPT, ".svv: bad NIfTI version %u / %u bytes", (unsigned)niiver, (unsigned)niibytes);
    for (size_t i = H_NII + niibytes; i < H_CRC; i++)
        if (b[i] && (version == 1 || i < H_TKIND || i >= H_V2_END || (i >= H_TKIND + 4 && i < H_TVAL)))
            return ss_fail(SS_ECORRUPT, ".svv: bad header padding");
    ss_target tg = {SS_TARGET_NONE, 0};
    long long upload = 0;
    if (version >= 2) {
        const uint32_t kind = ss_get_le32(b + H_TKIND);
        tg = (ss_target){(ss_target_kind)kind, ss_get_lef64(b + H_TVAL)};
        upload = (long long)ss_get_le64(b + H_UPLOAD);
        if (kind > SS_TARGET_PSNR || !isfinite(tg.value) || (kind == SS_TARGET_NONE && tg.value != 0) ||
            (kind != SS_TARGET_NONE && !(tg.value > 0)) || upload < 0)
            return ss_fail(SS_ECORRUPT, ".svv: bad upload options");
    }
    const uint32_t axis = ss_get_le32(b + H_AXIS), t = ss_get_le32(b + H_T);
    if (axis > 2 || t > INT32_MAX) return ss_fail(SS_ECORRUPT, ".svv: bad axis %u or t %u", (unsigned)axis, (unsigned)t);
    /* The NIfTI header is re-validated as on upload; generous limits: it was accepted once. */
    ss_nifti_limits lim = {INT32_MAX, INT64_MAX};
    int rc = ss_nifti_check_header(b + H_NII, niibytes, (int)t, &lim, &out->nii);
    if (rc) return ss_fail(SS_ECORRUPT, ".svv: stored NIfTI header: %s", ss_error());
    if ((uint32_t)out->nii.datatype != ss_get_le32(b + H_DTYPE)) return ss_fail(SS_ECORRUPT, ".svv: data type disagrees with the NIfTI header");
    slice_geom g;
    geom(&out->nii, (int)axis, &g);
    if (ss_get_le32(b + H_NSLICES) != (uint32_t)g.count || ss_get_le32(b + H_M) != (uint32_t)g.rows ||
        ss_get_le32(b + H_N) != (uint32_t)g.cols || g.count > SVV_MAX_SLICES)
        return ss_fail(SS_ECORRUPT, ".svv: slice count or shape disagrees with the NIfTI header");
    const unsigned char *name = b + H_NAME, *id = b + H_ID;
    const char *why;
    if (ss_stored_text_len(name, NAME_BYTES, NAME_BYTES, 0, &why) < 0) return ss_fail(SS_ECORRUPT, ".svv: %s", why);
    const long idlen = ss_stored_text_len(id, ID_BYTES, sizeof out->id, 1, &why);
    if (idlen < 0) return ss_fail(SS_ECORRUPT, ".svv: %s", why);

    const size_t secs = ss_svv_sections_offset(g.count);
    if (buf_len < secs) return ss_fail(SS_ECORRUPT, ".svv: %zu bytes, shorter than its index", buf_len);
    const unsigned char *idx = b + SS_SVV_HEADER_BYTES;
    const size_t ilen = (size_t)(g.count + 1) * SS_SVV_INDEX_ENTRY_BYTES;
    if ((uint32_t)crc32_z(0, idx, ilen) != ss_get_le32(idx + ilen)) return ss_fail(SS_ECORRUPT, ".svv: index checksum mismatch");
    uint64_t off = secs;
    for (int e = 0; e <= g.count; e++, idx += SS_SVV_INDEX_ENTRY_BYTES) {
        uint64_t o = ss_get_le64(idx), n = ss_get_le64(idx + 8);
        const int may_be_empty = e == 0 && !with_voxels, must_be_empty = may_be_empty;
        if (o != off || n > len - off || (n == 0 && !may_be_empty) || (must_be_empty && n != 0) || ss_get_le32(idx + 20) != 0)
            return ss_fail(SS_ECORRUPT, ".svv: section %d misplaced (offset %llu, %llu bytes)", e, (unsigned long long)o,
                           (unsigned long long)n);
        off += n;
    }
    if (off != len)
        return ss_fail(SS_ECORRUPT, ".svv: %zu bytes, the sections end at %llu (truncated or padded)", len,
                       (unsigned long long)off);
    out->nii.gzipped = 0;
    out->axis = (int)axis;
    out->nslices = g.count;
    out->m = g.rows;
    out->n = g.cols;
    out->vmin = ss_get_lef64(b + H_VMIN);
    out->vmax = ss_get_lef64(b + H_VMAX);
    out->created = (int64_t)ss_get_le64(b + H_CREATED);
    out->target = tg;
    out->no_original = !with_voxels;
    out->upload_bytes = upload;
    memcpy(out->name, name, NAME_BYTES);
    memcpy(out->id, id, (size_t)idlen);
    return SS_OK;
}

int ss_volume_read_header(const void *buf, size_t buf_len, size_t len, ss_volume *out) {
    if (!buf || !out) return ss_fail(SS_EINVAL, "no .svv buffer");
    return parse_svv(buf, buf_len, len, out);
}

/* Section e's bytes, after its checksum. */
static int section(const unsigned char *b, int e, const unsigned char **p, size_t *n) {
    const unsigned char *ent = b + SS_SVV_HEADER_BYTES + (size_t)e * SS_SVV_INDEX_ENTRY_BYTES;
    *p = b + ss_get_le64(ent);
    *n = (size_t)ss_get_le64(ent + 8);
    if ((uint32_t)crc32_z(0, *p, *n) != ss_get_le32(ent + 16))
        return ss_fail(SS_ECORRUPT, ".svv: %s checksum mismatch", e == 0 ? "voxel section" : "slice section");
    return SS_OK;
}

int ss_volume_verify(const void *buf, size_t len) {
    ss_volume h;
    int rc = parse_svv(buf, len, len, &h);
    for (int e = 0; rc == SS_OK && e <= h.nslices; e++) {
        const unsigned char *p;
        size_t n;
        rc = section(buf, e, &p, &n);
    }
    return rc;
}

/* A version-2 slice section (see encode_section): the stored rank into *rank and, when S is
 * not NULL, the singular values into S (nsv), checked, and where the factor bytes start
 * (*fac, *fac_len). With S NULL the section must be the rank alone. */
static int read_section(const unsigned char *p, size_t n, int nsv, int *rank, float *S, const unsigned char **fac,
                        size_t *fac_len) {
    if (n < 8) return ss_fail(SS_ECORRUPT, "%zu bytes, shorter than a section", n);
    const uint32_t r = ss_get_le32(p), zl = ss_get_le32(p + 4);
    if (r < 1 || r > (uint32_t)nsv) return ss_fail(SS_ECORRUPT, "bad rank %u", (unsigned)r);
    if (!S) {
        if (zl || n != 8) return ss_fail(SS_ECORRUPT, "%zu bytes where the voxels are kept: only the rank", n);
        *rank = (int)r;
        *fac = NULL;
        *fac_len = 0;
        return SS_OK;
    }
    if (zl > n - 8) return ss_fail(SS_ECORRUPT, "singular values run past the section");
    const size_t sb = 4 * (size_t)nsv;
    unsigned char *raw = malloc(sb);
    if (!raw) return ss_fail(SS_ENOMEM, "out of memory");
    uLongf got = (uLongf)sb;
    int zr = uncompress(raw, &got, p + 8, (uLong)zl);
    int bad = zr != Z_OK || got != sb || ss_svd_read_sv(raw, nsv, S);
    free(raw);
    if (bad) return ss_fail(SS_ECORRUPT, "bad singular values");
    *rank = (int)r;
    *fac = p + 8 + zl;
    *fac_len = n - 8 - zl;
    return SS_OK;
}

/* Version 2 without the voxels: the slice's factors from its section. */
static int read_lossy_slice(const ss_volume *v, const unsigned char *p, size_t n, ss_factors **out) {
    const int nsv = v->m < v->n ? v->m : v->n;
    float *S = malloc(sizeof(float) * (size_t)nsv);
    if (!S) return ss_fail(SS_ENOMEM, "out of memory");
    int rank = 0;
    const unsigned char *fac;
    size_t fl;
    int rc = read_section(p, n, nsv, &rank, S, &fac, &fl);
    ss_factors *f = NULL;
    if (rc == SS_OK) rc = ss_factors_alloc(v->m, v->n, rank, slice_bits(v), 0, &f);
    if (rc == SS_OK) {
        memcpy(f->S, S, sizeof(float) * (size_t)nsv);
        rc = ss_factors_decode(fac, fl, f);
        if (rc != SS_OK && rc != SS_ENOMEM) rc = ss_fail(SS_ECORRUPT, "factors: %s", ss_error());
    }
    free(S);
    if (rc == SS_OK) {
        ss_factors_update_w(f);
        *out = f;
    } else {
        ss_factors_free(f);
    }
    return rc;
}

typedef struct load_job {
    ss_volume *v;
    const int *rank;
} load_job;

static int load_one(void *arg, int s, ss_workspace *ws) {
    (void)ws;
    const load_job *j = arg;
    return factor_slice_at(j->v, s, j->rank[s]);
}

int ss_volume_deserialize(const void *buf, size_t len, ss_volume **out) {
    *out = NULL;
    if (!buf) return ss_fail(SS_EINVAL, "no .svv buffer");
    const unsigned char *b = buf;
    ss_volume h;
    int rc = parse_svv(b, len, len, &h);
    if (rc) return rc;
    const int version = (int)ss_get_le32(b + H_VERSION);
    const unsigned char *p;
    size_t n;
    rc = section(b, 0, &p, &n);
    if (rc) return rc;
    void *vox = NULL;
    if (!h.no_original) {
        /* deflate cannot expand more than ~1032:1, so a section claiming more voxels is corrupt
         * (checked before the allocation). */
        const size_t nb = (size_t)h.nii.nvox * (size_t)h.nii.bytes_per_voxel;
        if (nb / 1032 > n) return ss_fail(SS_ECORRUPT, ".svv: %zu compressed bytes cannot hold %zu bytes of voxels", n, nb);
        vox = malloc(nb);
        if (!vox) return ss_fail(SS_ENOMEM, "out of memory for %zu bytes of voxels", nb);
        uLongf got = (uLongf)nb;
        int zr = uncompress(vox, &got, p, (uLong)n);
        if (zr != Z_OK || got != nb) {
            free(vox);
            return ss_fail(SS_ECORRUPT, ".svv: the voxel section does not inflate to %zu bytes", nb);
        }
    }
    ss_volume *v;
    rc = volume_new(&h.nii, h.axis, vox, &v);
    if (rc) {
        free(vox);
        return rc;
    }
    /* Float voxels were finite on upload; a stored NaN is damage. */
    if (vox && (!(v->vmin <= v->vmax) || v->vmin != h.vmin || v->vmax != h.vmax)) {
        ss_volume_free(v);
        return ss_fail(SS_ECORRUPT, ".svv: the voxels disagree with the stored value range");
    }
    if (!vox) {
        if (!(h.vmin <= h.vmax) || !isfinite(h.vmin) || !isfinite(h.vmax)) {
            ss_volume_free(v);
            return ss_fail(SS_ECORRUPT, ".svv: bad stored value range");
        }
        v->vmin = h.vmin;
        v->vmax = h.vmax;
    }
    memcpy(v->name, h.name, sizeof v->name);
    memcpy(v->id, h.id, sizeof v->id);
    v->created = h.created;
    v->target = h.target;
    v->no_original = h.no_original;
    v->upload_bytes = h.upload_bytes;
    const int nsv = v->m < v->n ? v->m : v->n;
    const int recompute = version >= 2 && !h.no_original;
    int *rank = recompute ? calloc((size_t)v->nslices, sizeof *rank) : NULL;
    if (recompute && !rank) rc = ss_fail(SS_ENOMEM, "out of memory");
    for (int s = 0; rc == SS_OK && s < v->nslices; s++) {
        rc = section(b, s + 1, &p, &n);
        if (rc == SS_OK && version >= 2) {
            const unsigned char *fac;
            size_t fl;
            if (recompute) {
                rc = read_section(p, n, nsv, &rank[s], NULL, &fac, &fl);
            } else {
                rc = read_lossy_slice(v, p, n, &v->slices[s]);
            }
            if (rc && rc != SS_ENOMEM) rc = ss_fail(SS_ECORRUPT, ".svv: slice %d: %s", s, ss_error());
            continue;
        }
        if (rc == SS_OK) rc = ss_svd_deserialize(p, n, &v->slices[s]);
        if (rc == SS_OK) {
            const ss_factors *f = v->slices[s];
            if (f->m != v->m || f->n != v->n || f->nsv != nsv || f->orig || f->bit_depth != slice_bits(v))
                rc = ss_fail(SS_ECORRUPT, ".svv: slice %d is %dx%d, the volume's are %dx%d", s, f->m, f->n, v->m, v->n);
        } else if (rc != SS_ENOMEM) {
            rc = ss_fail(SS_ECORRUPT, ".svv: slice %d: %s", s, ss_error());
        }
    }
    /* The factors the upload computed, computed again by the same SVD from the same voxels,
     * every slice in parallel (the cost of reading a compact volume: docs/COMPRESSION.md). */
    if (rc == SS_OK && recompute) {
        load_job lj = {v, rank};
        rc = ss_volume_for_each_slice(v->nslices, 0, load_one, &lj);
        if (rc != SS_OK && rc != SS_ENOMEM) rc = ss_fail(SS_ECORRUPT, ".svv: cannot factorise the voxels: %s", ss_error());
    }
    free(rank);
    if (rc) {
        ss_volume_free(v);
        return rc;
    }
    *out = v;
    return SS_OK;
}

/* ---- reconstruction ------------------------------------------------------------- */

static int clamp_k(const ss_factors *f, int k) { return k > f->rank ? f->rank : k; }

typedef struct rebuild_job {
    const ss_volume *v;
    const ss_backend *b;
    int k;
    void *out;
    slice_geom g;
    double slope, inter, lo, hi;
} rebuild_job;

/* Slice s of the original into out (stored values, as they are). */
static void copy_original_slice(const ss_volume *v, const slice_geom *g, int s, void *out) {
    const size_t bpv = (size_t)v->nii.bytes_per_voxel, base = (size_t)s * g->fixed;
    const unsigned char *src = v->voxels;
    unsigned char *dst = out;
    for (int r = 0; r < g->rows; r++) {
        size_t o = base + (size_t)r * g->row;
        if (g->col == 1) {
            memcpy(dst + o * bpv, src + o * bpv, (size_t)g->cols * bpv);
            continue;
        }
        for (int c = 0; c < g->cols; c++, o += g->col) memcpy(dst + o * bpv, src + o * bpv, bpv);
    }
}

/* Round half away from zero and clamp n floats to [lo, hi] into 8/16-bit integers (NaN -> 0),
 * branch-free so it vectorises; cloned for wider vectors as ss_pixels_from_float is (not under
 * TSan, whose runtime is not up when the clones' resolver runs). x - trunc(x) is exact here. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define SS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SS_CLONES
#endif
#define ROUND_INTO(NAME, T)                                                                   \
    SS_CLONES static void NAME(const float *x, size_t n, float lo, float hi, T *out) {        \
        for (size_t i = 0; i < n; i++) {                                                      \
            float v = x[i] == x[i] ? x[i] : 0.0f;                                             \
            v = v > lo ? v : lo;                                                              \
            v = v < hi ? v : hi;                                                              \
            int t = (int)v;                                                                   \
            float f = v - (float)t;                                                           \
            t += (f >= 0.5f) - (f <= -0.5f);                                                  \
            out[i] = (T)t;                                                                    \
        }                                                                                     \
    }
ROUND_INTO(round_u8, uint8_t)
ROUND_INTO(round_i8, int8_t)
ROUND_INTO(round_i16, int16_t)
ROUND_INTO(round_u16, uint16_t)

/* C (rows x cols scaled floats) of slice s into out as stored values. Without
 * scaling, contiguous rows of the 8/16-bit types and float32 get a vectorised
 * loop: this pass is most of a rebuild's time after the GEMM. */
static void scatter_slice(const rebuild_job *j, int s, const float *C) {
    const slice_geom *g = &j->g;
    const int dt = j->v->nii.datatype;
    const size_t base = (size_t)s * g->fixed;
    const int fast = j->slope == 1 && j->inter == 0 && g->col == 1;
    const float lo = (float)j->lo, hi = (float)j->hi;
    for (int r = 0; r < g->rows; r++) {
        const float *row = C + (size_t)r * (size_t)g->cols;
        size_t o = base + (size_t)r * g->row;
        const size_t nc = (size_t)g->cols;
        if (fast) {
            switch (dt) {
            case SS_NII_UINT8: round_u8(row, nc, lo, hi, (uint8_t *)j->out + o); continue;
            case SS_NII_INT8: round_i8(row, nc, lo, hi, (int8_t *)j->out + o); continue;
            case SS_NII_INT16: round_i16(row, nc, lo, hi, (int16_t *)j->out + o); continue;
            case SS_NII_UINT16: round_u16(row, nc, lo, hi, (uint16_t *)j->out + o); continue;
            case SS_NII_FLOAT32: memcpy((float *)j->out + o, row, sizeof(float) * nc); continue;
            default: break;
            }
        }
        for (int c = 0; c < g->cols; c++, o += g->col)
            put_val(j->out, dt, o, to_stored(row[c], j->slope, j->inter, dt, j->lo, j->hi));
    }
}

static int rebuild_one(void *arg, int s, ss_workspace *ws) {
    const rebuild_job *j = arg;
    const ss_factors *f = j->v->slices[s];
    const int k = clamp_k(f, j->k);
    if (k >= f->nsv && j->v->voxels) {
        copy_original_slice(j->v, &j->g, s, j->out);
        return SS_OK;
    }
    float *C = ss_workspace_floats(ws, (size_t)f->m * (size_t)f->n);
    if (!C) return SS_ENOMEM;
    int rc = j->b->reconstruct_f32(f, k, C, ws);
    if (rc) return rc;
    scatter_slice(j, s, C);
    return SS_OK;
}

static int check_backend(const ss_backend *b) {
    const char *why = NULL;
    if (!b) return ss_fail(SS_EINVAL, "no backend");
    if (!b->available(&why)) return ss_fail(SS_EUNAVAIL, "backend %s is unavailable: %s", b->name, why ? why : "unknown");
    if (!b->reconstruct_f32)
        return ss_fail(SS_EUNAVAIL, "backend %s has no float output for volumes", b->name);
    return SS_OK;
}

static void job_init(rebuild_job *j, const ss_volume *v, int k, void *out) {
    memset(j, 0, sizeof *j);
    j->v = v;
    j->k = k;
    j->out = out;
    geom(&v->nii, v->axis, &j->g);
    ss_nifti_scaling(&v->nii, &j->slope, &j->inter);
    ss_nifti_type_range(v->nii.datatype, &j->lo, &j->hi);
}

int ss_volume_rebuild(const ss_volume *v, int k, const ss_backend *b, int nthreads, void *out) {
    if (!v || !out || !ss_volume_complete(v)) return ss_fail(SS_EINVAL, "no factorised volume to rebuild");
    if (k < 1) return ss_fail(SS_EINVAL, "k must be >= 1, got %d", k);
    int rc = check_backend(b);
    if (rc) return rc;
    rebuild_job j;
    job_init(&j, v, k, out);
    j.b = b;
    return ss_volume_for_each_slice(v->nslices, nthreads, rebuild_one, &j);
}

int ss_volume_slice_full(const ss_volume *v, int s, int k) {
    if (!v || !v->slices || s < 0 || s >= v->nslices || !v->slices[s]) return 0;
    return v->voxels && clamp_k(v->slices[s], k) >= v->slices[s]->nsv;
}

int ss_volume_put_slice(const ss_volume *v, int s, int k, const float *C, void *out) {
    if (!v || !out || !v->slices || s < 0 || s >= v->nslices || !v->slices[s] || k < 1)
        return ss_fail(SS_EINVAL, "no slice %d at k %d to put", s, k);
    rebuild_job j;
    job_init(&j, v, k, out);
    if (ss_volume_slice_full(v, s, k)) {
        copy_original_slice(v, &j.g, s, out);
        return SS_OK;
    }
    if (!C) return ss_fail(SS_EINVAL, "no product for slice %d", s);
    scatter_slice(&j, s, C);
    return SS_OK;
}

int ss_volume_pixels_exact(const ss_volume *v) {
    double slope, inter;
    ss_nifti_scaling(&v->nii, &slope, &inter);
    return (v->nii.datatype == SS_NII_UINT8 || v->nii.datatype == SS_NII_UINT16) && slope == 1 && inter == 0;
}

int ss_volume_put_slice_pixels(const ss_volume *v, int s, int k, const uint16_t *px, void *out) {
    if (!v || !ss_volume_pixels_exact(v)) return ss_fail(SS_EINVAL, "pixels are not this volume's stored values");
    if (!out || !v->slices || s < 0 || s >= v->nslices || !v->slices[s] || k < 1)
        return ss_fail(SS_EINVAL, "no slice %d at k %d to put", s, k);
    rebuild_job j;
    job_init(&j, v, k, out);
    if (ss_volume_slice_full(v, s, k)) {
        copy_original_slice(v, &j.g, s, out);
        return SS_OK;
    }
    if (!px) return ss_fail(SS_EINVAL, "no pixels for slice %d", s);
    const size_t base = (size_t)s * j.g.fixed;
    for (int r = 0; r < j.g.rows; r++) {
        size_t o = base + (size_t)r * j.g.row;
        const uint16_t *row = px + (size_t)r * (size_t)j.g.cols;
        for (int c = 0; c < j.g.cols; c++, o += j.g.col) {
            if (v->nii.datatype == SS_NII_UINT8) ((uint8_t *)out)[o] = (uint8_t)row[c];
            else ((uint16_t *)out)[o] = row[c];
        }
    }
    return SS_OK;
}

void ss_volume_stored_values(const ss_volume *v, const float *C, size_t n, double *out) {
    const int dt = v->nii.datatype;
    double slope, inter, lo, hi;
    ss_nifti_scaling(&v->nii, &slope, &inter);
    ss_nifti_type_range(dt, &lo, &hi);
    for (size_t i = 0; i < n; i++) {
        double x = to_stored(C[i], slope, inter, dt, lo, hi);
        out[i] = dt == SS_NII_FLOAT32 ? (double)(float)x : x;
    }
}

int ss_volume_to_nifti(const ss_volume *v, const void *stored, unsigned char **out, size_t *out_len) {
    if (!v || !stored) return ss_fail(SS_EINVAL, "no volume to write");
    return ss_nifti_encode(&v->nii, stored, 1, out, out_len);
}

int ss_volume_slice(const ss_volume *v, const void *rebuilt, int axis, int index, int k, const ss_backend *b,
                    ss_workspace *ws, double *out) {
    if (!v || !out) return ss_fail(SS_EINVAL, "no volume");
    if (k < 1) return ss_fail(SS_EINVAL, "k must be >= 1, got %d", k);
    slice_geom g;
    int rc = geom(&v->nii, axis, &g);
    if (rc) return rc;
    if (index < 0 || index >= g.count)
        return ss_fail(SS_EINVAL, "index must be in 0..%d along axis %d, got %d", g.count - 1, axis, index);
    const int dt = v->nii.datatype;
    const void *src = NULL;
    if (axis == v->axis) {
        const ss_factors *f = v->slices ? v->slices[index] : NULL;
        if (!f) return ss_fail(SS_EINVAL, "slice %d is not factorised", index);
        const int kk = clamp_k(f, k);
        if (kk >= f->nsv && v->voxels) {
            src = v->voxels;
        } else {
            rc = check_backend(b);
            if (rc) return rc;
            float *C = ss_workspace_floats(ws, (size_t)f->m * (size_t)f->n);
            if (!C) return ws ? SS_ENOMEM : SS_EINVAL;
            rc = b->reconstruct_f32(f, kk, C, ws);
            if (rc) return rc;
            ss_volume_stored_values(v, C, (size_t)g.rows * (size_t)g.cols, out);
            return SS_OK;
        }
    } else {
        if (!rebuilt) return ss_fail(SS_EINVAL, "a slice along axis %d needs the volume rebuilt at k", axis);
        src = rebuilt;
    }
    const size_t base = (size_t)index * g.fixed;
    for (int r = 0; r < g.rows; r++) {
        size_t o = base + (size_t)r * g.row;
        for (int c = 0; c < g.cols; c++, o += g.col) out[(size_t)r * (size_t)g.cols + (size_t)c] = get_val(src, dt, o);
    }
    return SS_OK;
}

int ss_volume_pixels(const ss_volume *v, const double *vals, size_t n, uint16_t *px) {
    const int dt = v->nii.datatype;
    if (dt == SS_NII_UINT8 || dt == SS_NII_UINT16) {
        const double hi = dt == SS_NII_UINT8 ? 255 : 65535;
        for (size_t i = 0; i < n; i++) px[i] = (uint16_t)round_clamp(vals[i], 0, hi);
        return dt == SS_NII_UINT8 ? 8 : 16;
    }
    const double span = v->vmax - v->vmin;
    for (size_t i = 0; i < n; i++)
        px[i] = span > 0 ? (uint16_t)round_clamp((vals[i] - v->vmin) / span * 65535.0, 0, 65535) : 0;
    return 16;
}

void ss_volume_window(const ss_volume *v, const double *vals, size_t n, double center, double width, uint16_t *px) {
    double slope, inter;
    ss_nifti_scaling(&v->nii, &slope, &inter);
    for (size_t i = 0; i < n; i++) {
        const double y = slope * vals[i] + inter;
        if (!(width > 0)) {
            px[i] = y >= center ? 255 : 0;
            continue;
        }
        const double x = (y - center + width / 2.0) / width * 255.0;
        px[i] = (uint16_t)round_clamp(x, 0, 255);
    }
}

/* ---- quality --------------------------------------------------------------------- */

double ss_volume_data_range(const ss_volume *v) {
    if (v->nii.datatype == SS_NII_UINT8) return 255;
    if (v->nii.datatype == SS_NII_UINT16) return 65535;
    double r = v->vmax - v->vmin;
    return r > 0 ? r : 1;
}

static void fill_metrics(ss_volume_quality *q, double sse, size_t n, double range, const double *a, const double *b,
                         int d0, int d1, int d2) {
    q->mse = n ? sse / (double)n : 0;
    q->psnr_null = q->mse == 0;
    q->psnr = q->psnr_null ? 0 : ss_psnr(q->mse, range);
    double s = 0;
    q->ssim_null = ss_ssim_f64(a, b, d0, d1, d2, range, &s) != SS_OK;
    q->ssim = q->ssim_null ? 0 : s;
}

static double energy_at(const ss_factors *f, int k, double *total) {
    double kept = 0, all = 0;
    for (int i = 0; i < f->nsv; i++) {
        const double s2 = (double)f->S[i] * (double)f->S[i];
        all += s2;
        if (i < k) kept += s2;
    }
    *total = all;
    return kept;
}

int ss_volume_quality_compute(const ss_volume *v, int k, const void *rebuilt, ss_volume_quality *vol,
                              ss_volume_quality *slices) {
    if (!v || !rebuilt || !vol || !ss_volume_complete(v)) return ss_fail(SS_EINVAL, "no volume to measure");
    if (k < 1) return ss_fail(SS_EINVAL, "k must be >= 1, got %d", k);
    if (!v->voxels) { /* keep-original=false: only what the singular values tell */
        double kept = 0, all = 0;
        for (int s = 0; s < v->nslices; s++) {
            double t, e = energy_at(v->slices[s], clamp_k(v->slices[s], k), &t);
            kept += e;
            all += t;
            if (slices)
                slices[s] = (ss_volume_quality){s, clamp_k(v->slices[s], k), 0, 0, 1, 0, 1, t > 0 ? e / t : 1, 1};
        }
        *vol = (ss_volume_quality){-1, k, 0, 0, 1, 0, 1, all > 0 ? kept / all : 1, 1};
        return SS_OK;
    }
    vol->no_original = 0;
    for (int s = 0; slices && s < v->nslices; s++) slices[s].no_original = 0;
    const size_t nv = (size_t)v->nii.nvox;
    const int dt = v->nii.datatype;
    const double range = ss_volume_data_range(v);
    /* The volume as float64, C order (nz, ny, nx): SSIM's mean does not depend on the axes' order. */
    double *a = malloc(sizeof(double) * nv), *b = malloc(sizeof(double) * nv);
    if (!a || !b) {
        free(a);
        free(b);
        return ss_fail(SS_ENOMEM, "out of memory measuring a volume of %zu voxels", nv);
    }
    double sse = 0;
    for (size_t i = 0; i < nv; i++) {
        a[i] = get_val(v->voxels, dt, i);
        b[i] = get_val(rebuilt, dt, i);
        const double d = a[i] - b[i];
        sse += d * d;
    }
    memset(vol, 0, sizeof *vol);
    vol->index = -1;
    vol->k = k;
    fill_metrics(vol, sse, nv, range, a, b, v->nii.nz, v->nii.ny, v->nii.nx);
    double kept = 0, all = 0;
    for (int s = 0; s < v->nslices; s++) {
        double t;
        kept += energy_at(v->slices[s], clamp_k(v->slices[s], k), &t);
        all += t;
    }
    vol->energy = all > 0 ? kept / all : 1;

    int rc = SS_OK;
    if (slices) {
        slice_geom g;
        geom(&v->nii, v->axis, &g);
        const size_t mn = (size_t)g.rows * (size_t)g.cols;
        /* a and b are reused for one slice's pair: nv >= 2 * mn unless there is one slice. */
        double *sa = a, *sb = NULL, *extra = NULL;
        if (nv >= 2 * mn) {
            sb = a + mn;
        } else {
            sb = extra = malloc(sizeof(double) * mn);
            if (!extra) rc = ss_fail(SS_ENOMEM, "out of memory measuring slices");
        }
        for (int s = 0; rc == SS_OK && s < v->nslices; s++) {
            const size_t base = (size_t)s * g.fixed;
            double ss = 0;
            for (int r = 0; r < g.rows; r++) {
                size_t o = base + (size_t)r * g.row;
                for (int c = 0; c < g.cols; c++, o += g.col) {
                    const size_t i = (size_t)r * (size_t)g.cols + (size_t)c;
                    sa[i] = get_val(v->voxels, dt, o);
                    sb[i] = get_val(rebuilt, dt, o);
                    const double d = sa[i] - sb[i];
                    ss += d * d;
                }
            }
            ss_volume_quality *q = &slices[s];
            memset(q, 0, sizeof *q);
            q->index = s;
            q->k = clamp_k(v->slices[s], k);
            fill_metrics(q, ss, mn, range, sa, sb, 1, g.rows, g.cols);
            double t, e = energy_at(v->slices[s], q->k, &t);
            q->energy = t > 0 ? e / t : 1;
        }
        free(extra);
    }
    free(a);
    free(b);
    return rc;
}
