/* test_compress.c - .svd version 2: round trips (quantised factors, original kept by either codec),
 * corruption detection, version-1 files, rank from a target, quantisation error bounds, PSNR
 * targets met on real slices and on scaled float data (what volumes will store) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "engine/compress.h"
#include "engine/kernels.h"
#include "engine/svd.h"
#include "tests/util/testutil.h"
#include "util/error.h"

static const char *const REAL[] = {"BrainProtonDensitySlice.png", "BrainT1Slice.png", "FatMRISlice.png",
                                   "BrainMidSagittalSlice.png"};

static float *as_float(const ss_image *img) {
    size_t mn = (size_t)img->width * (size_t)img->height;
    float *A = malloc(sizeof(float) * mn);
    assert_non_null(A);
    for (size_t i = 0; i < mn; i++) A[i] = img->px[i];
    return A;
}

/* PSNR over peak of what the blas backend serves from f at k against img. */
static double served_psnr(const ss_factors *f, int k, const ss_image *img) {
    size_t mn = (size_t)f->m * (size_t)f->n;
    uint16_t *px = malloc(sizeof(uint16_t) * mn);
    ss_workspace *ws = ss_workspace_new();
    assert_non_null(px);
    assert_int_equal(ss_backend_find("blas")->reconstruct(f, k, px, ws), 0);
    double sse = 0, peak = (double)((1 << img->bit_depth) - 1);
    for (size_t i = 0; i < mn; i++) sse += ((double)px[i] - img->px[i]) * ((double)px[i] - img->px[i]);
    ss_workspace_free(ws);
    free(px);
    return sse > 0 ? 10 * log10(peak * peak * (double)mn / sse) : INFINITY;
}

static ss_image gradient16(int h, int w, unsigned seed) {
    ss_image img;
    assert_int_equal(ss_image_alloc(&img, w, h, 16), 0);
    unsigned x = seed * 2654435761u + 1;
    for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++) {
            x = x * 1103515245u + 12345u;
            img.px[(size_t)i * w + j] = (uint16_t)(20000 + 15000 * sin(i / 9.0) * cos(j / 7.0) + (x >> 16) % 300);
        }
    return img;
}

/* ---- the target's rank ------------------------------------------------------------ */

static void test_rank_for_target_follows_the_definitions(void **state) {
    (void)state;
    enum { N = 40 };
    float S[N];
    for (int i = 0; i < N; i++) S[i] = (float)(1000.0 * pow(0.8, i));
    double total = 0;
    for (int i = 0; i < N; i++) total += (double)S[i] * S[i];
    for (double e = 0.5; e < 1.0; e += 0.0625) { /* the smallest k keeping a fraction e */
        int k = ss_rank_for_target(S, N, N, 50, (ss_target){SS_TARGET_ENERGY, e}, 255, 0);
        double kept = 0;
        for (int i = 0; i < k; i++) kept += (double)S[i] * S[i];
        assert_true(kept / total >= e - 1e-12);
        kept -= (double)S[k - 1] * S[k - 1];
        assert_true(k == 1 || kept / total < e);
    }
    for (double psnr = 20; psnr <= 60; psnr += 5) { /* the smallest k whose tail fits the budget */
        const double budget = (double)N * 50 * 255.0 * 255.0 / pow(10, psnr / 10);
        int k = ss_rank_for_target(S, N, N, 50, (ss_target){SS_TARGET_PSNR, psnr}, 255, 0);
        double tail = 0;
        for (int i = k; i < N; i++) tail += (double)S[i] * S[i];
        assert_true(tail <= budget || k == N);
        assert_true(k == 1 || tail + (double)S[k - 1] * S[k - 1] > budget);
    }
    assert_int_equal(ss_rank_for_target(S, N, N, 50, (ss_target){SS_TARGET_RANK, 7}, 255, 0), 7);
    assert_int_equal(ss_rank_for_target(S, N, N, 50, (ss_target){SS_TARGET_RANK, 99}, 255, 0), N);
    assert_int_equal(ss_rank_for_target(S, N, N, 50, (ss_target){SS_TARGET_NONE, 0}, 255, 0), N);
    assert_int_equal(ss_rank_for_target(S, N, N, 50, (ss_target){SS_TARGET_ENERGY, 1.0}, 255, 0) >= 39, 1);
}

/* ---- quantisation ------------------------------------------------------------------ */

/* Every dequantised value is within half its component's step c/s_p of the float32 one, the
 * error of the product stays within the model's c^2 k (m+n)/12, and a second encoding of the
 * dequantised factors gives the very same bytes. */
static void test_quantisation_error_is_bounded(void **state) {
    (void)state;
    for (int bits = 8; bits <= 16; bits += 8) {
        /* singular vectors have unit norm: the model counts on it */
        ss_image img = gradient16(60, 45, (unsigned)bits);
        if (bits == 8)
            for (size_t i = 0; i < 60 * 45; i++) img.px[i] >>= 8;
        img.bit_depth = bits;
        ss_factors *f = NULL, *q = NULL;
        assert_int_equal(ss_svd_factor(&img, 30, 0, &f), 0);
        ss_image_free(&img);
        const size_t m = 60, n = 45, k = 30;
        f->id[0] = 'x';
        f->qstep = ss_default_qstep(f) * 50; /* coarse, so the error is measurable */
        unsigned char *buf, *buf2;
        size_t len, len2;
        assert_int_equal(ss_svd_serialize(f, &buf, &len), 0); /* no original: quantised factors */
        assert_int_equal(ss_svd_deserialize(buf, len, &q), 0);
        assert_null(q->orig);
        assert_int_equal(q->rank, (int)k);
        assert_memory_equal(q->S, f->S, sizeof(float) * (size_t)f->nsv); /* exact */
        for (size_t p = 0; p < k; p++) {
            const double step = (double)f->qstep / f->S[p];
            for (size_t i = 0; i < m; i++)
                assert_true(fabs((double)q->U[i * k + p] - f->U[i * k + p]) <= step * 0.5000001);
            for (size_t j = 0; j < n; j++)
                assert_true(fabs((double)q->Vt[p * n + j] - f->Vt[p * n + j]) <= step * 0.5000001);
        }
        double *a = malloc(sizeof(double) * m * n), *b = malloc(sizeof(double) * m * n);
        ss_reference_f64(f, (int)k, a);
        ss_reference_f64(q, (int)k, b);
        double sse = 0;
        for (size_t i = 0; i < m * n; i++) sse += (a[i] - b[i]) * (a[i] - b[i]);
        const double model = (double)f->qstep * f->qstep * (double)k * (double)(m + n) / 12.0;
        /* an upper bound: values under half a step quantise to 0 with less error than step^2/12 */
        if (!(sse > 0 && sse <= 1.5 * model)) print_error("sse %g model %g\n", sse, model);
        assert_true(sse > 0 && sse <= 1.5 * model);
        q->qstep = f->qstep; /* what the fit leaves on factors it quantised */
        assert_int_equal(ss_factors_encode(q, &buf2, &len2), 0);
        unsigned char *sec;
        size_t sec_len;
        assert_int_equal(ss_factors_encode(f, &sec, &sec_len), 0);
        assert_int_equal(len2, sec_len);
        assert_memory_equal(buf2, sec, sec_len);
        free(sec);
        free(buf2);
        free(a);
        free(b);
        free(buf);
        ss_factors_free(q);
        ss_factors_free(f);
    }
}

/* ---- round trips ------------------------------------------------------------------------ */

static void test_lossy_roundtrip_is_bit_exact(void **state) {
    (void)state;
    ss_image img;
    if (tu_load_slice(REAL[0], &img)) skip();
    ss_factors *f, *g;
    assert_int_equal(ss_svd_factor(&img, 0, 0, &f), 0);
    float *A = as_float(&img);
    double psnr = 0;
    assert_int_equal(ss_compress_fit(f, A, (ss_target){SS_TARGET_PSNR, 40}, 255, 255, 1, &psnr), 0);
    assert_true(f->rank < f->nsv && psnr >= 40);
    snprintf(f->name, sizeof f->name, "lossy");
    snprintf(f->id, sizeof f->id, "abc");
    f->created = 1234;
    f->upload_bytes = 34597;
    unsigned char *buf, *buf2;
    size_t len, len2;
    assert_int_equal(ss_svd_serialize(f, &buf, &len), 0);
    assert_int_equal(ss_svd_deserialize(buf, len, &g), 0);
    assert_int_equal(g->rank, f->rank);
    assert_true(g->upload_bytes == 34597 && g->created == 1234);
    assert_string_equal(g->name, "lossy");
    assert_memory_equal(g->U, f->U, sizeof(float) * (size_t)f->m * f->rank);
    assert_memory_equal(g->Vt, f->Vt, sizeof(float) * (size_t)f->rank * f->n);
    assert_memory_equal(g->W, f->W, sizeof(float) * (size_t)f->rank * f->n);
    assert_memory_equal(g->S, f->S, sizeof(float) * (size_t)f->nsv);
    /* the PSNR the fit reported is what a backend serves from the stored file */
    assert_true(fabs(served_psnr(g, g->rank, &img) - psnr) < 0.01);
    /* an index reads the header and the singular values only */
    ss_factors h;
    int orig = 1;
    size_t sv_off = 0;
    assert_int_equal(ss_svd_header_bytes(buf, SS_SVD_HEADER_BYTES), SS_SVD2_HEADER_BYTES);
    assert_int_equal(ss_svd_read_index(buf, len, &h, &orig, &sv_off), 0);
    assert_int_equal(orig, 0);
    assert_true(h.upload_bytes == 34597);
    float *S = malloc(sizeof(float) * (size_t)h.nsv);
    assert_int_equal(ss_svd_read_sv(buf + sv_off, h.nsv, S), 0);
    assert_memory_equal(S, f->S, sizeof(float) * (size_t)f->nsv);
    free(S);
    /* serialising what was read gives the same bytes */
    g->qstep = f->qstep;
    assert_int_equal(ss_svd_serialize(g, &buf2, &len2), 0);
    assert_int_equal(len2, len);
    assert_memory_equal(buf2, buf, len);
    free(buf2);
    free(buf);
    free(A);
    ss_factors_free(g);
    ss_factors_free(f);
    ss_image_free(&img);
}

static void check_original_roundtrip(ss_image *img, int rank) {
    ss_factors *f, *g;
    assert_int_equal(ss_svd_factor(img, rank, 1, &f), 0);
    f->upload_bytes = 77;
    unsigned char *buf;
    size_t len;
    assert_int_equal(ss_svd_serialize(f, &buf, &len), 0);
    const size_t raw = (size_t)img->width * img->height * (size_t)(img->bit_depth / 8);
    assert_int_equal(ss_svd_deserialize(buf, len, &g), 0);
    assert_non_null(g->orig);
    assert_memory_equal(g->orig, img->px, sizeof(uint16_t) * (size_t)img->width * img->height);
    assert_int_equal(g->rank, f->rank);
    assert_true(g->upload_bytes == 77);
    /* the factors computed again on load are the upload's */
    for (int i = 0; i < f->nsv; i++) assert_true(fabsf(g->S[i] - f->S[i]) <= 1e-5f * f->S[0]);
    size_t mn = (size_t)f->m * f->n;
    uint16_t *a = malloc(mn * 2), *b = malloc(mn * 2);
    ss_workspace *ws = ss_workspace_new();
    for (int k = 1; k <= f->rank; k += (f->rank + 3) / 4) {
        assert_int_equal(ss_backend_find("blas")->reconstruct(f, k, a, ws), 0);
        assert_int_equal(ss_backend_find("blas")->reconstruct(g, k, b, ws), 0);
        for (size_t i = 0; i < mn; i++) assert_true(abs((int)a[i] - (int)b[i]) <= 1);
    }
    ss_workspace_free(ws);
    free(a);
    free(b);
    if (raw > 4096) assert_true(len < raw); /* smaller than the raw pixels for these */
    free(buf);
    ss_factors_free(g);
    ss_factors_free(f);
}

static void test_original_roundtrip_exact(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof REAL / sizeof *REAL; i++) {
        ss_image img;
        if (tu_load_slice(REAL[i], &img)) skip();
        check_original_roundtrip(&img, i == 1 ? 40 : 0);
        ss_image_free(&img);
    }
    ss_image img = gradient16(70, 90, 3);
    check_original_roundtrip(&img, 0);
    ss_image_free(&img);
    ss_image one;
    assert_int_equal(ss_image_alloc(&one, 1, 1, 8), 0);
    one.px[0] = 200;
    check_original_roundtrip(&one, 0);
    ss_image_free(&one);
}

/* Both codecs give the pixels back exactly, whatever they are (8 and 16 bits, noise, flat, thin). */
static void test_both_codecs_are_lossless(void **state) {
    (void)state;
    static const int shapes[][3] = {{1, 1, 8}, {1, 300, 16}, {300, 1, 8}, {33, 47, 8}, {64, 64, 16}, {17, 5, 16}};
    uint64_t st = 5;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int kind = 0; kind < 3; kind++)
            for (int codec = SS_ORIG_DEFLATE; codec <= SS_ORIG_JPEGLS; codec++) {
                const int m = shapes[s][0], n = shapes[s][1], bits = shapes[s][2];
                const unsigned maxv = (1u << bits) - 1;
                uint16_t *px = malloc(sizeof(uint16_t) * (size_t)m * n), *back = malloc(sizeof(uint16_t) * (size_t)m * n);
                for (int i = 0; i < m * n; i++)
                    px[i] = kind == 0 ? (uint16_t)(tu_rand_u64(&st) % (maxv + 1))
                            : kind == 1 ? (uint16_t)maxv
                                        : (uint16_t)((i * 37 / (n + 1)) % (maxv + 1));
                unsigned char *enc;
                size_t len;
                int used = -1;
                assert_int_equal(ss_orig_encode(px, m, n, bits, codec, &enc, &len, &used), 0);
                assert_int_equal(used, codec);
                memset(back, 0xab, sizeof(uint16_t) * (size_t)m * n);
                assert_int_equal(ss_orig_decode(enc, len, used, m, n, bits, back), 0);
                assert_memory_equal(back, px, sizeof(uint16_t) * (size_t)m * n);
                /* a stream of another shape or depth is refused, not decoded into the buffer */
                if (m * n > 1) assert_int_equal(ss_orig_decode(enc, len, used, n == 1 ? m - 1 : m, n == 1 ? 1 : n - 1, bits, back), SS_ECORRUPT);
                free(enc);
                free(px);
                free(back);
            }
}

/* ---- corruption ---------------------------------------------------------------------------- */

/* keep: 0 quantised factors, 1 the original, 2 float32 factors (what volume slices store) */
static unsigned char *small_v2(int keep, size_t *len) {
    ss_image img = gradient16(9, 7, 9);
    ss_factors *f, *g;
    assert_int_equal(ss_svd_factor(&img, 0, keep == 1, &f), 0);
    if (keep == 2) { /* float32: given back bit for bit */
        f->qstep = -1;
        unsigned char *b;
        size_t l;
        assert_int_equal(ss_svd_serialize(f, &b, &l), 0);
        assert_int_equal((long long)l, SS_SVD2_HEADER_BYTES + 4LL * (7 + 7 * (9 + 7)));
        assert_int_equal(ss_svd_deserialize(b, l, &g), 0);
        assert_memory_equal(g->U, f->U, sizeof(float) * 9 * 7);
        assert_memory_equal(g->Vt, f->Vt, sizeof(float) * 7 * 7);
        assert_true(g->qstep < 0 && !g->orig);
        ss_factors_free(g);
        free(b);
    }
    snprintf(f->id, sizeof f->id, "id-%d", keep);
    f->upload_bytes = 1000;
    unsigned char *buf;
    assert_int_equal(ss_svd_serialize(f, &buf, len), 0);
    ss_factors_free(f);
    ss_image_free(&img);
    return buf;
}

static void test_every_byte_flip_and_truncation_detected(void **state) {
    (void)state;
    static const unsigned char flips[] = {0x01, 0x80, 0xff, 0x5a};
    for (int keep = 0; keep <= 2; keep++) {
        size_t len;
        unsigned char *buf = small_v2(keep, &len);
        ss_factors *g;
        for (size_t pos = 0; pos < len; pos++)
            for (size_t k = 0; k < sizeof flips; k++) {
                buf[pos] ^= flips[k];
                g = (ss_factors *)&g;
                int rc = ss_svd_deserialize(buf, len, &g);
                if (rc != SS_ECORRUPT) print_error("keep %d: flip 0x%02x at %zu not detected\n", keep, flips[k], pos);
                assert_int_equal(rc, SS_ECORRUPT);
                assert_null(g);
                buf[pos] ^= flips[k];
            }
        for (size_t cut = 0; cut < len; cut++) {
            unsigned char *part = malloc(cut ? cut : 1);
            memcpy(part, buf, cut);
            assert_int_equal(ss_svd_deserialize(part, cut, &g), SS_ECORRUPT);
            ss_factors h;
            if (cut >= SS_SVD_HEADER_BYTES) assert_int_equal(ss_svd_read_header(part, cut, &h), SS_ECORRUPT);
            free(part);
        }
        assert_int_equal(ss_svd_deserialize(buf, len, &g), 0); /* restored intact */
        ss_factors_free(g);
        free(buf);
    }
}

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
/* Rewrites both checksums of a v2 file, so only the semantic checks can reject it. */
static void reseal2(unsigned char *buf, size_t len) {
    put32(buf + 416, (uint32_t)crc32_z(0, buf + SS_SVD2_HEADER_BYTES, len - SS_SVD2_HEADER_BYTES));
    put32(buf + 420, (uint32_t)crc32_z(0, buf, 420));
}

/* Checksums can be forged: whatever lies behind valid ones is parsed as untrusted. */
static void test_semantic_checks_behind_valid_checksums(void **state) {
    (void)state;
    for (int keep = 0; keep <= 2; keep++) {
        size_t len;
        unsigned char *buf = small_v2(keep, &len), *copy = malloc(len);
        uint64_t st = 99;
        ss_factors *g;
        for (int edit = 0; edit < 8 + 200; edit++) {
            memcpy(copy, buf, len);
            switch (edit) {
            case 0: put32(copy + 36, 3); break;                   /* both flags */
            case 1: put32(copy + 36, keep == 1 ? 2 : 1); break;   /* the other kind */
            case 2: put32(copy + 400, 9); break;                  /* unknown codec */
            case 3: put32(copy + 404, 1); break;                  /* reserved */
            case 4: put64(copy + 376, (uint64_t)1 << 63); break;  /* absurd upload size */
            case 5: put64(copy + 384, keep == 1 ? 5 : 4); break;  /* sections disagree */
            case 6: put32(copy + 12, SS_SVD_HEADER_BYTES); break; /* v1 header size */
            case 7: put32(copy + SS_SVD2_HEADER_BYTES + 4, 0x7f800000u); break; /* S[1] = inf */
            default: /* random bytes behind the singular values: the decoders must refuse them */
                for (size_t i = SS_SVD2_HEADER_BYTES + 4 * 7; i < len; i++) copy[i] = (unsigned char)tu_rand_u64(&st);
            }
            reseal2(copy, len);
            g = (ss_factors *)&g;
            int rc = ss_svd_deserialize(copy, len, &g);
            if (edit < 8) assert_int_equal(rc, SS_ECORRUPT);
            else if (rc == SS_OK) ss_factors_free(g); /* a random stream may decode: never crash */
            else assert_int_equal(rc, SS_ECORRUPT);
        }
        free(copy);
        free(buf);
    }
}

/* A small forged file that would decode to terabytes is refused from its header, before any
 * allocation (a 4 MB file claiming 2^20 x 2^20 at rank 2000: 25 GB of factors). */
static void test_forged_expansion_is_refused(void **state) {
    (void)state;
    const uint32_t side = 1u << 20, rank = 2000;
    const size_t fact = 5 * (size_t)rank + 5, len = SS_SVD2_HEADER_BYTES + 4 * (size_t)side + fact;
    unsigned char *buf = calloc(1, len);
    assert_non_null(buf);
    memcpy(buf, "SVDSLICE", 8);
    put32(buf + 8, 2);
    put32(buf + 12, SS_SVD2_HEADER_BYTES);
    put32(buf + 16, side);
    put32(buf + 20, side);
    put32(buf + 24, 8);
    put32(buf + 28, rank);
    put32(buf + 32, side);
    put32(buf + 36, 2); /* quantised factors */
    put64(buf + 384, fact);
    put64(buf + 408, 4 * (uint64_t)side + fact);
    reseal2(buf, len);
    ss_factors *g = (ss_factors *)&g, h;
    assert_int_equal(ss_svd_deserialize(buf, len, &g), SS_ECORRUPT);
    assert_null(g);
    assert_non_null(strstr(ss_error(), "would decode to"));
    assert_int_equal(ss_svd_read_header(buf, len, &h), SS_ECORRUPT);
    put32(buf + 28, 8); /* a rank whose factors fit: the header passes (the stream then fails) */
    put64(buf + 384, 45);
    put64(buf + 408, 4 * (uint64_t)side + 45);
    reseal2(buf, SS_SVD2_HEADER_BYTES + 4 * (size_t)side + 45);
    assert_int_equal(ss_svd_read_header(buf, SS_SVD2_HEADER_BYTES + 4 * (size_t)side + 45, &h), 0);
    free(buf);
}

/* A file of the old code path (version 1) still loads, whole and as an index. */
static void test_version1_files_still_load(void **state) {
    (void)state;
    ss_factors *f = tu_gray_slice(4, 20, 13), *g;
    snprintf(f->id, sizeof f->id, "old");
    unsigned char *buf;
    size_t len;
    assert_int_equal(ss_svd_serialize_v1(f, &buf, &len), 0);
    assert_int_equal((long long)len, ss_svd_file_bytes(20, 13, 13, 1));
    assert_int_equal(ss_svd_header_bytes(buf, len), SS_SVD_HEADER_BYTES);
    assert_int_equal(ss_svd_deserialize(buf, len, &g), 0);
    assert_memory_equal(g->U, f->U, sizeof(float) * 20 * 13);
    assert_memory_equal(g->orig, f->orig, sizeof(uint16_t) * 20 * 13);
    assert_true(g->upload_bytes == 0); /* version 1 does not carry it */
    ss_factors_free(g);
    free(buf);
    ss_factors_free(f);
}

/* ---- targets met --------------------------------------------------------------------------- */

static void test_psnr_targets_met_on_real_slices(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof REAL / sizeof *REAL; i++) {
        ss_image img;
        if (tu_load_slice(REAL[i], &img)) skip();
        float *A = as_float(&img);
        for (int t = 35; t <= 45; t += 5)
            for (int quantise = 0; quantise <= 1; quantise++) {
                ss_factors *f, *g;
                assert_int_equal(ss_svd_factor(&img, 0, !quantise, &f), 0);
                const int k0 = ss_rank_for_target(f->S, f->nsv, f->m, f->n, (ss_target){SS_TARGET_PSNR, t}, 255, 1);
                double psnr = 0;
                assert_int_equal(ss_compress_fit(f, A, (ss_target){SS_TARGET_PSNR, t}, 255, 255, quantise, &psnr), 0);
                assert_true(f->rank >= k0);
                snprintf(f->id, sizeof f->id, "x");
                unsigned char *buf;
                size_t len;
                assert_int_equal(ss_svd_serialize(f, &buf, &len), 0);
                assert_int_equal(ss_svd_deserialize(buf, len, &g), 0);
                double served = served_psnr(g, g->rank, &img);
                if (served < t) print_error("%s psnr=%d quantise=%d: served %.3f dB\n", REAL[i], t, quantise, served);
                assert_true(served >= t);
                if (quantise) /* bits follow the singular values: far below float32 factors at that rank */
                    assert_true((long long)len < ss_stored_bytes(f->m, f->n, f->rank) / 4);
                free(buf);
                ss_factors_free(g);
                ss_factors_free(f);
            }
        free(A);
        ss_image_free(&img);
    }
}

/* Volumes store scaled data of any range: no rounding, the peak their own. */
static void test_float_data_of_any_range(void **state) {
    (void)state;
    ss_image img = gradient16(48, 40, 21);
    const size_t mn = 48 * 40;
    /* A = px * 1e-7 (about 0.0005..0.0035): its factors are px's with S scaled */
    ss_factors *f = NULL, *g;
    assert_int_equal(ss_svd_factor(&img, 0, 0, &f), 0);
    for (int p = 0; p < f->nsv; p++) f->S[p] *= 1e-7f;
    ss_factors_update_w(f);
    float *A = malloc(sizeof(float) * mn), lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < mn; i++) {
        A[i] = (float)(img.px[i] * 1e-7);
        lo = fminf(lo, A[i]);
        hi = fmaxf(hi, A[i]);
    }
    double psnr = 0;
    assert_int_equal(ss_compress_fit(f, A, (ss_target){SS_TARGET_PSNR, 50}, hi - lo, 0, 1, &psnr), 0);
    assert_true(psnr >= 50);
    snprintf(f->id, sizeof f->id, "vol");
    unsigned char *buf;
    size_t len;
    assert_int_equal(ss_svd_serialize(f, &buf, &len), 0);
    assert_int_equal(ss_svd_deserialize(buf, len, &g), 0);
    double *C = malloc(sizeof(double) * mn), sse = 0;
    ss_reference_f64(g, g->rank, C);
    for (size_t i = 0; i < mn; i++) sse += (C[i] - A[i]) * (C[i] - A[i]);
    double got = 10 * log10((double)(hi - lo) * (hi - lo) * (double)mn / sse);
    assert_true(got >= 50 - 0.05); /* float32 products against the float64 reference */
    free(C);
    free(buf);
    free(A);
    ss_factors_free(g);
    ss_factors_free(f);
    ss_image_free(&img);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rank_for_target_follows_the_definitions),
        cmocka_unit_test(test_quantisation_error_is_bounded),
        cmocka_unit_test(test_lossy_roundtrip_is_bit_exact),
        cmocka_unit_test(test_original_roundtrip_exact),
        cmocka_unit_test(test_both_codecs_are_lossless),
        cmocka_unit_test(test_every_byte_flip_and_truncation_detected),
        cmocka_unit_test(test_semantic_checks_behind_valid_checksums),
        cmocka_unit_test(test_forged_expansion_is_refused),
        cmocka_unit_test(test_version1_files_still_load),
        cmocka_unit_test(test_psnr_targets_met_on_real_slices),
        cmocka_unit_test(test_float_data_of_any_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
