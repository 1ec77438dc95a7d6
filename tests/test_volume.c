/* test_volume.c - volumes: slice layout, factorisation in parallel, k clamping, rebuild, the .svv form and its corruption, quality */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kernels.h"
#include "engine/nifti.h"
#include "engine/quality.h"
#include "engine/volume.h"
#include "util/error.h"
#include "util/testutil.h"
#include "util/tu_nifti.h"

enum { NX = 13, NY = 9, NZ = 11 };

/* An int16 volume whose voxel (i, j, k) is coded from its coordinates plus noise, so a
 * misplaced voxel shows; scaled by slope/inter. Factorised along `axis`. */
static ss_volume *make_volume(int version, int axis, double slope, double inter, int factor) {
    int16_t data[NX * NY * NZ];
    uint64_t seed = 42;
    for (int k = 0; k < NZ; k++)
        for (int j = 0; j < NY; j++)
            for (int i = 0; i < NX; i++)
                data[i + NX * (j + NY * k)] = (int16_t)(i + 20 * j + 400 * k + (int)(tu_rand_uniform(&seed) * 7) - 2000);
    tu_nii h = tu_nii_3d(version, NX, NY, NZ, SS_NII_INT16, 2);
    h.slope = slope;
    h.inter = inter;
    size_t len;
    unsigned char *b = tu_nifti_build(&h, data, sizeof data, 2, &len);
    assert_non_null(b);
    ss_volume_opts o = {.axis = axis, .t = 0};
    ss_volume *v;
    assert_int_equal(ss_volume_from_nifti(b, len, &o, &v), 0);
    free(b);
    if (factor) assert_int_equal(ss_volume_factor_all(v, 3), 0);
    return v;
}

/* make_volume's data with upload options, factorised (fitted to them). */
static ss_volume *make_volume_opts(ss_target t, int no_original, double slope) {
    ss_volume *a = make_volume(1, 2, slope, 0, 0);
    tu_nii h = tu_nii_3d(1, NX, NY, NZ, SS_NII_INT16, 2);
    h.slope = slope;
    size_t len;
    unsigned char *b = tu_nifti_build(&h, a->voxels, ss_volume_voxel_bytes(a), 2, &len);
    assert_non_null(b);
    ss_volume_free(a);
    ss_volume_opts o = {.axis = 2, .t = 0, .target = t, .no_original = no_original};
    ss_volume *v;
    assert_int_equal(ss_volume_from_nifti(b, len, &o, &v), 0);
    free(b);
    assert_int_equal(ss_volume_factor_all(v, 2), 0);
    return v;
}

/* PSNR over the volume's data range of the volume rebuilt at k against the stored values. */
static double psnr_at(const ss_volume *rebuilt_from, const ss_volume *orig, int k) {
    const size_t n = (size_t)orig->nii.nvox;
    int16_t *r = malloc(ss_volume_voxel_bytes(orig));
    assert_non_null(r);
    assert_int_equal(ss_volume_rebuild(rebuilt_from, k, ss_backend_find("blas"), 2, r), 0);
    double sse = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)r[i] - (double)((const int16_t *)orig->voxels)[i];
        sse += d * d;
    }
    free(r);
    const double R = ss_volume_data_range(orig);
    return sse > 0 ? 10 * log10(R * R * (double)n / sse) : INFINITY;
}

static int16_t vox_at(const ss_volume *v, int i, int j, int k) {
    return ((const int16_t *)v->voxels)[i + NX * (j + NY * k)];
}

static void test_slice_layout(void **state) {
    (void)state;
    const int want[3][3] = {{NZ, NY, NX}, {NZ, NX, NY}, {NY, NX, NZ}}; /* rows, cols, count */
    for (int axis = 0; axis < 3; axis++) {
        ss_volume *v = make_volume(1, axis, 1, 0, 1);
        int rows, cols, count;
        ss_volume_slice_dims(&v->nii, axis, &rows, &cols, &count);
        assert_int_equal(rows, want[axis][0]);
        assert_int_equal(cols, want[axis][1]);
        assert_int_equal(count, want[axis][2]);
        assert_int_equal(v->m, rows);
        assert_int_equal(v->n, cols);
        assert_int_equal(v->nslices, count);
        ss_workspace *ws = ss_workspace_new();
        double *out = malloc(sizeof(double) * (size_t)rows * (size_t)cols);
        const int s = count / 2;
        /* Full rank (k clamped to it) along the factorisation axis: the original, laid out as documented. */
        assert_int_equal(ss_volume_slice(v, NULL, axis, s, 1 << 30, ss_backend_find("blas"), ws, out), 0);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) {
                int i, j, k;
                if (axis == 2) i = c, j = r, k = s;      /* rows j, columns i */
                else if (axis == 1) i = c, j = s, k = r; /* rows k, columns i */
                else i = s, j = c, k = r;                /* rows k, columns j */
                assert_true(out[r * cols + c] == vox_at(v, i, j, k));
            }
        /* The slice's factors hold the same array: U S Vt at full rank is it. */
        const ss_factors *f = v->slices[s];
        double *ref = malloc(sizeof(double) * (size_t)rows * (size_t)cols);
        ss_reference_f64(f, f->rank, ref);
        for (int q = 0; q < rows * cols; q++) assert_true(fabs(ref[q] - out[q]) < 0.05);
        free(ref);
        free(out);
        ss_workspace_free(ws);
        ss_volume_free(v);
    }
}

static void test_other_axis_needs_the_rebuilt_volume(void **state) {
    (void)state;
    ss_volume *v = make_volume(2, 2, 1, 0, 1);
    const ss_backend *b = ss_backend_find("blas");
    ss_workspace *ws = ss_workspace_new();
    double out[NX * NZ], direct[NX * NY];
    assert_int_equal(ss_volume_slice(v, NULL, 1, 3, 4, b, ws, out), SS_EINVAL);
    int16_t *rebuilt = malloc(ss_volume_voxel_bytes(v));
    assert_int_equal(ss_volume_rebuild(v, 4, b, 2, rebuilt), 0);
    assert_int_equal(ss_volume_slice(v, rebuilt, 1, 3, 4, b, ws, out), 0);
    for (int k = 0; k < NZ; k++)
        for (int i = 0; i < NX; i++) assert_true(out[k * NX + i] == rebuilt[i + NX * (3 + NY * k)]);
    /* Along the factorisation axis every direct slice equals the rebuilt volume's, exactly
     * (the direct one rounds each value in double, the rebuild its vectorised float loop;
     * the values span negative and positive). */
    for (int s = 0; s < NZ; s++) {
        assert_int_equal(ss_volume_slice(v, NULL, 2, s, 4, b, ws, direct), 0);
        for (int j = 0; j < NY; j++)
            for (int i = 0; i < NX; i++) assert_true(direct[j * NX + i] == rebuilt[i + NX * (j + NY * s)]);
    }
    assert_int_equal(ss_volume_slice(v, rebuilt, 0, NX, 4, b, ws, out), SS_EINVAL); /* index past the end */
    assert_int_equal(ss_volume_slice(v, rebuilt, 3, 0, 4, b, ws, out), SS_EINVAL);  /* no axis 3 */
    free(rebuilt);
    ss_workspace_free(ws);
    ss_volume_free(v);
}

/* The rebuild at k against a float64 product of each slice's factors, scaled back and rounded. */
static void rebuild_vs_float64(double slope, double inter) {
    ss_volume *v = make_volume(1, 0, slope, inter, 1); /* slices 11 x 9 along i: rank 9; negative values */
    const int nsv = v->m < v->n ? v->m : v->n;
    int16_t *out = malloc(ss_volume_voxel_bytes(v));
    double *ref = malloc(sizeof(double) * (size_t)v->m * (size_t)v->n);
    const char *names[] = {"blas", "blocked", "threads", "loops2"};
    const int ks[] = {1, 3, nsv - 1};
    for (size_t bi = 0; bi < 4; bi++)
        for (size_t ki = 0; ki < 3; ki++) {
            const int k = ks[ki];
            assert_int_equal(ss_volume_rebuild(v, k, ss_backend_find(names[bi]), bi == 2 ? 1 : 3, out), 0);
            for (int s = 0; s < v->nslices; s++) {
                ss_reference_f64(v->slices[s], k, ref);
                for (int r = 0; r < v->m; r++)
                    for (int c = 0; c < v->n; c++) {
                        double x = (ref[r * v->n + c] - inter) / slope;
                        double want = x < 0 ? -floor(-x + 0.5) : floor(x + 0.5);
                        double got = out[s + NX * (c + NY * r)];
                        if (fabs(got - want) > 1)
                            fail_msg("%s k %d slice %d (%d,%d): %g vs %g", names[bi], k, s, r, c, got, want);
                    }
            }
        }
    free(ref);
    free(out);
    ss_volume_free(v);
}

static void test_rebuild_matches_float64_and_clamps_k(void **state) {
    (void)state;
    rebuild_vs_float64(0.5, 100); /* scaled: the general path */
    rebuild_vs_float64(1, 0);     /* plain int16: the vectorised rounding */
    ss_volume *v = make_volume(1, 0, 0.5, 100, 1);
    const int nsv = v->m < v->n ? v->m : v->n;
    int16_t *out = malloc(ss_volume_voxel_bytes(v));
    /* k at or over the rank of every slice: the original, exactly. */
    for (int k = nsv; k <= nsv + 1; k++) {
        assert_int_equal(ss_volume_rebuild(v, k, ss_backend_find("blas"), 2, out), 0);
        assert_memory_equal(out, v->voxels, ss_volume_voxel_bytes(v));
    }
    assert_int_equal(ss_volume_rebuild(v, 1 << 30, ss_backend_find("blas"), 2, out), 0);
    assert_memory_equal(out, v->voxels, ss_volume_voxel_bytes(v));
    /* k < 1, a backend without float output or unavailable. */
    assert_int_equal(ss_volume_rebuild(v, 0, ss_backend_find("blas"), 2, out), SS_EINVAL);
    assert_int_equal(ss_volume_rebuild(v, -3, ss_backend_find("blas"), 2, out), SS_EINVAL);
    const ss_backend *cuda = ss_backend_find("cuda");
    if (!cuda->available(NULL)) assert_int_equal(ss_volume_rebuild(v, 2, cuda, 2, out), SS_EUNAVAIL);
    /* The quality's per-slice k is the clamped one. */
    ss_volume_quality vq, *sq = calloc((size_t)v->nslices, sizeof *sq);
    assert_int_equal(ss_volume_rebuild(v, 50, ss_backend_find("blas"), 2, out), 0);
    assert_int_equal(ss_volume_quality_compute(v, 50, out, &vq, sq), 0);
    assert_int_equal(vq.k, 50);
    assert_int_equal(sq[0].k, nsv);
    assert_true(vq.mse == 0 && vq.psnr_null && vq.energy == 1.0);
    free(sq);
    free(out);
    ss_volume_free(v);
}

static void test_factorise_in_parallel_equals_one_by_one(void **state) {
    (void)state;
    ss_volume *a = make_volume(1, 2, 1, 0, 1); /* factor_all on 3 threads */
    ss_volume *b = make_volume(1, 2, 1, 0, 0);
    for (int s = b->nslices - 1; s >= 0; s--) assert_int_equal(ss_volume_factor_slice(b, s), 0);
    assert_int_equal(ss_volume_factor_slice(b, 0), SS_EINVAL); /* done already */
    assert_int_equal(ss_volume_factor_slice(b, b->nslices), SS_EINVAL);
    assert_true(ss_volume_complete(a) && ss_volume_complete(b));
    assert_string_equal(a->id, b->id);
    for (int s = 0; s < a->nslices; s++) {
        const ss_factors *x = a->slices[s], *y = b->slices[s];
        assert_int_equal(x->rank, y->rank);
        assert_memory_equal(x->S, y->S, sizeof(float) * (size_t)x->nsv);
        assert_memory_equal(x->U, y->U, sizeof(float) * (size_t)x->m * (size_t)x->rank);
        assert_int_equal(x->bit_depth, 16);
        assert_null(x->orig);
    }
    ss_volume_free(a);
    ss_volume_free(b);
}

static void serialize(const ss_volume *v, unsigned char **buf, size_t *len) {
    assert_int_equal(ss_volume_serialize(v, buf, len), 0);
}

static void test_svv_round_trip(void **state) {
    (void)state;
    for (int version = 1; version <= 2; version++) {
        ss_volume *v = make_volume(version, version == 1 ? 1 : 2, 2.0, -5, 1);
        snprintf(v->name, sizeof v->name, "head %d", version);
        v->created = 1700000000 + version;
        unsigned char *buf;
        size_t len;
        serialize(v, &buf, &len);
        /* Not before every slice is factorised. */
        ss_volume *partial = make_volume(version, 2, 1, 0, 0);
        unsigned char *pb;
        size_t pl;
        assert_int_equal(ss_volume_serialize(partial, &pb, &pl), SS_EINVAL);
        ss_volume_free(partial);

        ss_volume *w;
        assert_int_equal(ss_volume_deserialize(buf, len, &w), 0);
        assert_string_equal(w->id, v->id);
        assert_string_equal(w->name, v->name);
        assert_int_equal(w->created, v->created);
        assert_int_equal(w->axis, v->axis);
        assert_int_equal(w->nslices, v->nslices);
        assert_int_equal(w->nii.version, version);
        assert_true(w->vmin == v->vmin && w->vmax == v->vmax);
        assert_memory_equal(w->voxels, v->voxels, ss_volume_voxel_bytes(v));
        assert_memory_equal(w->nii.hdr, v->nii.hdr, v->nii.hdr_bytes);
        /* The same rebuild from both, and the same bytes when encoded again. */
        void *r1 = malloc(ss_volume_voxel_bytes(v)), *r2 = malloc(ss_volume_voxel_bytes(v));
        assert_int_equal(ss_volume_rebuild(v, 3, ss_backend_find("blas"), 2, r1), 0);
        assert_int_equal(ss_volume_rebuild(w, 3, ss_backend_find("blas"), 2, r2), 0);
        assert_memory_equal(r1, r2, ss_volume_voxel_bytes(v));
        unsigned char *buf2;
        size_t len2;
        serialize(w, &buf2, &len2);
        assert_int_equal(len2, len);
        assert_memory_equal(buf2, buf, len);
        /* The index alone: a prefix of the blob is enough. */
        ss_volume h;
        const size_t head = ss_svv_sections_offset(v->nslices);
        assert_int_equal(ss_svv_head_bytes(buf, SS_SVV_HEADER_BYTES), head);
        assert_int_equal(ss_svv_head_bytes(buf, SS_SVV_HEADER_BYTES - 1), 0);
        assert_int_equal(ss_volume_read_header(buf, head, len, &h), 0);
        assert_string_equal(h.id, v->id);
        assert_int_equal(h.nslices, v->nslices);
        assert_null(h.voxels);
        assert_int_equal(ss_volume_read_header(buf, head - 1, len, &h), SS_ECORRUPT);
        assert_int_equal(ss_volume_verify(buf, len), 0);
        free(buf2);
        free(r1);
        free(r2);
        free(buf);
        ss_volume_free(w);
        ss_volume_free(v);
    }
}

static void test_svv_corruption_detected(void **state) {
    (void)state;
    ss_volume *v = make_volume(1, 2, 1, 0, 1);
    unsigned char *buf;
    size_t len;
    serialize(v, &buf, &len);
    const size_t secs = ss_svv_sections_offset(v->nslices);
    /* One byte in every header field region, the index, its checksum, and inside every section. */
    size_t spots[64];
    int n = 0;
    for (size_t off = 0; off < 1024; off += 37) spots[n++] = off;
    spots[n++] = 1024 + 5;                 /* index entry 0 */
    spots[n++] = secs - 2;                 /* index checksum */
    while (n > 60) n--;
    const unsigned char *idx = buf + 1024;
    int secn = 0;
    for (int e = 0; e <= v->nslices && n < 64; e++, idx += SS_SVV_INDEX_ENTRY_BYTES) {
        uint64_t o = 0, l = 0;
        for (int i = 7; i >= 0; i--) o = o << 8 | idx[i], l = l << 8 | idx[8 + i];
        spots[n++] = (size_t)(o + l / 2);
        secn++;
    }
    assert_int_equal(secn, v->nslices + 1);
    for (int i = 0; i < n; i++) {
        buf[spots[i]] ^= 0x10;
        ss_volume *w = NULL;
        int rc = ss_volume_deserialize(buf, len, &w);
        if (rc != SS_ECORRUPT) fail_msg("a flipped byte at %zu of %zu: %d (%s)", spots[i], len, rc, ss_error());
        assert_null(w);
        assert_int_equal(ss_volume_verify(buf, len), SS_ECORRUPT);
        buf[spots[i]] ^= 0x10;
    }
    /* Every truncation and one byte of padding. */
    for (size_t cut = 0; cut < len; cut += len / 97 + 1) {
        ss_volume *w = NULL;
        assert_int_equal(ss_volume_deserialize(buf, cut, &w), SS_ECORRUPT);
    }
    unsigned char *pad = malloc(len + 1);
    memcpy(pad, buf, len);
    pad[len] = 0;
    ss_volume *w = NULL;
    assert_int_equal(ss_volume_deserialize(pad, len + 1, &w), SS_ECORRUPT);
    assert_int_equal(ss_volume_deserialize(buf, len, &w), 0);
    ss_volume_free(w);
    free(pad);
    free(buf);
    ss_volume_free(v);
}

static void test_ids(void **state) {
    (void)state;
    ss_volume *a = make_volume(1, 2, 1, 0, 0), *b = make_volume(1, 2, 1, 0, 0);
    ss_volume *c = make_volume(1, 1, 1, 0, 0), *d = make_volume(1, 2, 2, 0, 0), *e = make_volume(2, 2, 1, 0, 0);
    assert_int_equal(strlen(a->id), 64);
    assert_string_equal(a->id, b->id);
    assert_string_not_equal(a->id, c->id); /* axis */
    assert_string_not_equal(a->id, d->id); /* scaling */
    assert_string_not_equal(a->id, e->id); /* NIfTI version */
    ss_volume_free(a);
    ss_volume_free(b);
    ss_volume_free(c);
    ss_volume_free(d);
    ss_volume_free(e);
}

static void test_pixels_and_window(void **state) {
    (void)state;
    ss_volume *v = make_volume(1, 2, 2.0, 10, 0);
    const double vals[] = {v->vmin, v->vmax, 0.5 * (v->vmin + v->vmax), v->vmin - 5, v->vmax + 5};
    uint16_t px[5];
    assert_int_equal(ss_volume_pixels(v, vals, 5, px), 16);
    assert_int_equal(px[0], 0);
    assert_int_equal(px[1], 65535);
    assert_int_equal(px[2], 32768); /* 32767.5 rounds up */
    assert_int_equal(px[3], 0);
    assert_int_equal(px[4], 65535);
    /* The window reads scaled values: stored 45 -> 100 with slope 2, inter 10. */
    const double w[] = {45, 20, 70};
    ss_volume_window(v, w, 3, 100, 100, px);
    assert_int_equal(px[0], 128); /* 127.5 */
    assert_int_equal(px[1], 0);
    assert_int_equal(px[2], 255);
    ss_volume_free(v);
}

/* Assembling a volume slice by slice from products made elsewhere gives ss_volume_rebuild's bytes. */
static void test_put_slices_equals_rebuild(void **state) {
    (void)state;
    const ss_backend *b = ss_backend_find("blas");
    ss_workspace *ws = ss_workspace_new();
    /* int16 with scaling: floats only; pixels are refused. */
    ss_volume *v = make_volume(1, 1, 0.5, 3, 1);
    void *want = malloc(ss_volume_voxel_bytes(v)), *got = calloc(1, ss_volume_voxel_bytes(v));
    float *C = malloc(sizeof(float) * (size_t)v->m * (size_t)v->n);
    const int nsv = v->m < v->n ? v->m : v->n;
    for (int k = 2; k <= nsv; k += nsv - 2) {
        assert_int_equal(ss_volume_rebuild(v, k, b, 2, want), 0);
        for (int s = 0; s < v->nslices; s++) {
            assert_int_equal(ss_volume_slice_full(v, s, k), k >= nsv);
            if (!ss_volume_slice_full(v, s, k)) assert_int_equal(b->reconstruct_f32(v->slices[s], k, C, ws), 0);
            assert_int_equal(ss_volume_put_slice(v, s, k, ss_volume_slice_full(v, s, k) ? NULL : C, got), 0);
        }
        assert_memory_equal(got, want, ss_volume_voxel_bytes(v));
    }
    assert_false(ss_volume_pixels_exact(v));
    uint16_t px[NX * NY * NZ];
    assert_int_equal(ss_volume_put_slice_pixels(v, 0, 2, px, got), SS_EINVAL);
    assert_int_equal(ss_volume_put_slice(v, 0, 0, C, got), SS_EINVAL);
    assert_int_equal(ss_volume_put_slice(v, v->nslices, 2, C, got), SS_EINVAL);
    free(want);
    free(got);
    free(C);
    ss_volume_free(v);

    /* uint8 without scaling: a backend's pixels are the stored values. */
    uint8_t data[NX * NY * NZ];
    uint64_t seed = 5;
    for (int i = 0; i < NX * NY * NZ; i++) data[i] = (uint8_t)(tu_rand_uniform(&seed) * 256);
    tu_nii h = tu_nii_3d(2, NX, NY, NZ, SS_NII_UINT8, 1);
    size_t len;
    unsigned char *file = tu_nifti_build(&h, data, sizeof data, 1, &len);
    assert_int_equal(ss_volume_from_nifti(file, len, NULL, &v), 0);
    free(file);
    assert_int_equal(ss_volume_factor_all(v, 2), 0);
    assert_true(ss_volume_pixels_exact(v));
    want = malloc(sizeof data);
    got = calloc(1, sizeof data);
    assert_int_equal(ss_volume_rebuild(v, 3, b, 1, want), 0);
    for (int s = 0; s < v->nslices; s++) {
        assert_int_equal(b->reconstruct(v->slices[s], 3, px, ws), 0);
        assert_int_equal(ss_volume_put_slice_pixels(v, s, 3, px, got), 0);
    }
    assert_memory_equal(got, want, sizeof data);
    free(want);
    free(got);
    ss_volume_free(v);
    ss_workspace_free(ws);
}

/* ss_ssim_f64 in 2D agrees with the 16-bit ss_ssim (itself checked against scikit-image). */
static void test_ssim_f64_matches_ss_ssim(void **state) {
    (void)state;
    enum { H = 23, W = 31 };
    uint16_t a[H * W], b[H * W];
    double da[H * W], db[H * W];
    uint64_t seed = 9;
    for (int i = 0; i < H * W; i++) {
        a[i] = (uint16_t)(tu_rand_uniform(&seed) * 255);
        b[i] = (uint16_t)(a[i] / 2 + tu_rand_uniform(&seed) * 40);
        da[i] = a[i];
        db[i] = b[i];
    }
    double s16, s64;
    assert_int_equal(ss_ssim(a, b, H, W, 255, &s16), 0);
    assert_int_equal(ss_ssim_f64(da, db, 1, H, W, 255, &s64), 0);
    assert_true(fabs(s16 - s64) < 1e-12);
    assert_int_equal(ss_ssim_f64(da, da, 1, H, W, 255, &s64), 0);
    assert_true(fabs(s64 - 1) < 1e-12);
    assert_int_equal(ss_ssim_f64(da, db, 1, 6, W, 255, &s64), SS_EINVAL);
    assert_int_equal(ss_ssim_f64(da, db, 6, 7, 7, 255, &s64), SS_EINVAL);
}


/* A version-1 .svv (full-rank float32 factors, written by the old code path) still loads, to the
 * same factors and voxels; the version-2 form of the same volume is far smaller. */
static void test_svv_v1_still_loads(void **state) {
    (void)state;
    ss_volume *v = make_volume(2, 1, 1, 0, 1);
    unsigned char *b1, *b2;
    size_t l1, l2;
    assert_int_equal(ss_volume_serialize_v1(v, &b1, &l1), 0);
    assert_int_equal(ss_volume_serialize(v, &b2, &l2), 0);
    assert_int_equal(b1[8], 1);
    assert_int_equal(b2[8], 2);
    assert_true(l2 * 4 < l1);
    ss_volume *w1, *w2;
    assert_int_equal(ss_volume_deserialize(b1, l1, &w1), 0);
    assert_int_equal(ss_volume_deserialize(b2, l2, &w2), 0);
    for (int s = 0; s < v->nslices; s++) {
        const ss_factors *x = v->slices[s], *y = w1->slices[s], *z = w2->slices[s];
        assert_int_equal(y->rank, x->rank);
        assert_int_equal(z->rank, x->rank);
        assert_memory_equal(y->U, x->U, sizeof(float) * (size_t)x->m * (size_t)x->rank);
        /* v2 recomputes them with the upload's SVD: the very same factors */
        assert_memory_equal(z->U, x->U, sizeof(float) * (size_t)x->m * (size_t)x->rank);
        assert_memory_equal(z->S, x->S, sizeof(float) * (size_t)x->nsv);
    }
    assert_memory_equal(w1->voxels, v->voxels, ss_volume_voxel_bytes(v));
    assert_int_equal(w1->no_original, 0);
    assert_int_equal(w1->target.kind, SS_TARGET_NONE);
    assert_int_equal(w1->upload_bytes, 0);
    /* v1 holds full rank only */
    ss_volume *r = make_volume_opts((ss_target){SS_TARGET_RANK, 2}, 0, 1);
    assert_int_equal(ss_volume_serialize_v1(r, &b1 /* unchanged on failure */, &l1), SS_EINVAL);
    ss_volume_free(r);
    free(b1);
    free(b2);
    ss_volume_free(v);
    ss_volume_free(w1);
    ss_volume_free(w2);
}

/* Each upload option: the ranks it chooses, a round trip through the .svv (options, ranks, the
 * same rebuild), the PSNR target met at the stored ranks, ids that tell options apart. */
static void test_options_round_trip(void **state) {
    (void)state;
    const struct {
        ss_target t;
        int no_original;
        double slope;
    } cases[] = {
        {{SS_TARGET_NONE, 0}, 0, 1},     {{SS_TARGET_RANK, 3}, 0, 1},   {{SS_TARGET_ENERGY, 0.999}, 0, 1},
        {{SS_TARGET_PSNR, 40}, 0, 1},    {{SS_TARGET_PSNR, 40}, 1, 1},  {{SS_TARGET_PSNR, 30}, 1, 2.5},
        {{SS_TARGET_NONE, 0}, 1, 1},     {{SS_TARGET_RANK, 2}, 1, 1},
    };
    const int nc = (int)(sizeof cases / sizeof *cases);
    char ids[8][65];
    for (int c = 0; c < nc; c++) {
        ss_volume *v = make_volume_opts(cases[c].t, cases[c].no_original, cases[c].slope);
        snprintf(ids[c], sizeof ids[c], "%s", v->id);
        for (int d = 0; d < c; d++)
            if (cases[d].slope == cases[c].slope) assert_string_not_equal(ids[d], ids[c]);
        const int nsv = v->m < v->n ? v->m : v->n;
        for (int s = 0; s < v->nslices; s++) {
            const int r = v->slices[s]->rank;
            if (cases[c].t.kind == SS_TARGET_RANK) assert_int_equal(r, (int)cases[c].t.value);
            else if (cases[c].t.kind == SS_TARGET_NONE) assert_int_equal(r, nsv);
            else assert_true(r >= 1 && r <= nsv);
        }
        v->upload_bytes = 1234;
        unsigned char *buf;
        size_t len;
        assert_int_equal(ss_volume_serialize(v, &buf, &len), 0);
        ss_volume *w;
        assert_int_equal(ss_volume_deserialize(buf, len, &w), 0);
        assert_int_equal(w->no_original, cases[c].no_original);
        assert_int_equal(w->target.kind, cases[c].t.kind);
        assert_true(w->target.value == cases[c].t.value);
        assert_int_equal(w->upload_bytes, 1234);
        assert_true(cases[c].no_original ? w->voxels == NULL : w->voxels != NULL);
        for (int s = 0; s < v->nslices; s++) assert_int_equal(w->slices[s]->rank, v->slices[s]->rank);
        /* the header alone says the options too (an index reads only it) */
        ss_volume h;
        assert_int_equal(ss_volume_read_header(buf, ss_svv_sections_offset(v->nslices), len, &h), 0);
        assert_int_equal(h.no_original, cases[c].no_original);
        assert_int_equal(h.target.kind, cases[c].t.kind);
        /* what is served after a reload is what was served before it (the server drops the
         * voxels of a keep-original=false volume once stored) */
        void *keep = v->voxels;
        if (cases[c].no_original) v->voxels = NULL;
        const size_t nb = ss_volume_voxel_bytes(v);
        void *r1 = malloc(nb), *r2 = malloc(nb);
        assert_int_equal(ss_volume_rebuild(v, 1 << 20, ss_backend_find("blas"), 2, r1), 0);
        assert_int_equal(ss_volume_rebuild(w, 1 << 20, ss_backend_find("blas"), 2, r2), 0);
        assert_memory_equal(r1, r2, nb);
        v->voxels = keep;
        const double p = psnr_at(w, v, 1 << 20);
        if (cases[c].t.kind == SS_TARGET_PSNR) assert_true(p >= cases[c].t.value);
        if (cases[c].t.kind == SS_TARGET_NONE && !cases[c].no_original) assert_true(isinf(p)); /* exact */
        if (cases[c].no_original) {
            ss_volume_quality q, *sq = calloc((size_t)w->nslices, sizeof *sq);
            assert_int_equal(ss_volume_quality_compute(w, 2, r2, &q, sq), 0);
            assert_int_equal(q.no_original, 1);
            assert_true(q.energy > 0 && q.energy <= 1);
            free(sq);
            /* every flipped byte is refused */
            for (size_t i = 0; i < len; i += 1 + len / 700) {
                buf[i] ^= 0x41;
                ss_volume *x = NULL;
                assert_int_not_equal(ss_volume_deserialize(buf, len, &x), 0);
                assert_null(x);
                buf[i] ^= 0x41;
            }
        }
        free(r1);
        free(r2);
        free(buf);
        ss_volume_free(v);
        ss_volume_free(w);
    }
    /* a rank over the slices' is refused at decode */
    ss_volume *a = make_volume(1, 2, 1, 0, 0);
    tu_nii h = tu_nii_3d(1, NX, NY, NZ, SS_NII_INT16, 2);
    size_t len;
    unsigned char *b = tu_nifti_build(&h, a->voxels, ss_volume_voxel_bytes(a), 2, &len);
    ss_volume_opts o = {.axis = 2, .target = {SS_TARGET_RANK, NY + 1}};
    ss_volume *v = NULL;
    assert_int_equal(ss_volume_from_nifti(b, len, &o, &v), SS_EINVAL);
    assert_null(v);
    free(b);
    ss_volume_free(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slice_layout),
        cmocka_unit_test(test_other_axis_needs_the_rebuilt_volume),
        cmocka_unit_test(test_rebuild_matches_float64_and_clamps_k),
        cmocka_unit_test(test_factorise_in_parallel_equals_one_by_one),
        cmocka_unit_test(test_svv_round_trip),
        cmocka_unit_test(test_svv_corruption_detected),
        cmocka_unit_test(test_svv_v1_still_loads),
        cmocka_unit_test(test_options_round_trip),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_pixels_and_window),
        cmocka_unit_test(test_put_slices_equals_rebuild),
        cmocka_unit_test(test_ssim_f64_matches_ss_ssim),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
