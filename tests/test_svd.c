/* test_svd.c - factorisation accuracy, content ids and the .svd file format */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "util/error.h"
#include "engine/png.h"
#include "util/file.h"
#include "engine/svd.h"

/* ---- helpers ------------------------------------------------------------------ */

static uint64_t rng_state = 0x2545f4914f6cdd1dULL;
static uint32_t rng_next(void) { /* xorshift64*: reproducible, no libc rand() state */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dULL) >> 32);
}

static void random_image(ss_image *img, int m, int n, int bits) {
    assert_int_equal(ss_image_alloc(img, n, m, bits), 0);
    const uint32_t maxv = (1u << bits) - 1;
    for (size_t i = 0; i < (size_t)m * (size_t)n; i++) img->px[i] = (uint16_t)(rng_next() % (maxv + 1));
}

/* A smooth, slice-like image (an ellipse of structure on a dark background),
 * whose singular values decay the way a real slice's do. */
static void phantom_image(ss_image *img, int m, int n, int bits) {
    assert_int_equal(ss_image_alloc(img, n, m, bits), 0);
    const double maxv = (double)((1u << bits) - 1);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double y = (i - m / 2.0) / (m / 2.2), x = (j - n / 2.0) / (n / 2.4);
            double r2 = x * x + y * y, v = 0;
            if (r2 < 1) v = 0.55 + 0.3 * cos(9 * x) * sin(7 * y) + 0.1 * (r2 < 0.2);
            v += 0.02 * (rng_next() % 100) / 100.0;
            if (v > 1) v = 1;
            img->px[(size_t)i * n + j] = (uint16_t)lround(v * maxv);
        }
}

/* C = U[:, :k] W[:k, :] in double. */
static double *recon_f64(const ss_factors *f, int k) {
    double *C = calloc((size_t)f->m * f->n, sizeof *C);
    assert_non_null(C);
    for (int i = 0; i < f->m; i++)
        for (int p = 0; p < k; p++) {
            double u = f->U[(size_t)i * f->rank + p];
            const float *w = f->W + (size_t)p * f->n;
            double *c = C + (size_t)i * f->n;
            for (int j = 0; j < f->n; j++) c[j] += u * w[j];
        }
    return C;
}

static double max_abs_err_full(const ss_factors *f, const ss_image *img) {
    double *C = recon_f64(f, f->rank), e = 0;
    for (size_t i = 0; i < (size_t)f->m * f->n; i++) e = fmax(e, fabs(C[i] - img->px[i]));
    free(C);
    return e;
}

/* Checks the invariants every factorisation must hold; returns the full-rank error. */
static double check_factors(const ss_factors *f, const ss_image *img) {
    const int m = img->height, n = img->width, p = m < n ? m : n, r = f->rank;
    assert_int_equal(f->m, m);
    assert_int_equal(f->n, n);
    assert_int_equal(f->nsv, p);
    assert_int_equal(f->bit_depth, img->bit_depth);
    for (int i = 0; i < p; i++) {
        assert_true(isfinite(f->S[i]) && f->S[i] >= 0);
        if (i) assert_true(f->S[i] <= f->S[i - 1]);
    }
    /* Orthonormal columns of U and rows of Vt, where the singular value is not
     * negligible (LAPACK still returns orthonormal vectors there, but a rank-
     * deficient input has no unique basis to check against). */
    double worst_u = 0, worst_v = 0;
    for (int a = 0; a < r; a++)
        for (int b = a; b < r; b++) {
            double du = 0, dv = 0;
            for (int i = 0; i < m; i++) du += (double)f->U[(size_t)i * r + a] * f->U[(size_t)i * r + b];
            for (int j = 0; j < n; j++) dv += (double)f->Vt[(size_t)a * n + j] * f->Vt[(size_t)b * n + j];
            double want = a == b ? 1 : 0;
            worst_u = fmax(worst_u, fabs(du - want));
            worst_v = fmax(worst_v, fabs(dv - want));
        }
    assert_true(worst_u < 1e-4);
    assert_true(worst_v < 1e-4);
    /* W is diag(S) Vt, bit for bit (the same float product). */
    for (int a = 0; a < r; a++)
        for (int j = 0; j < n; j++)
            assert_true(f->W[(size_t)a * n + j] == f->S[a] * f->Vt[(size_t)a * n + j]);
    if (r < p) return 0;
    double err = max_abs_err_full(f, img);
    /* float32 precision relative to the largest singular value (the matrix's
     * 2-norm): backward-stable SVD gives O(eps * max(m,n)^0.5 * s0) in practice. */
    double bound = 8 * FLT_EPSILON * f->S[0] * sqrt((double)(m > n ? m : n));
    if (!(err <= bound))
        print_error("%dx%d: full-rank error %g above bound %g\n", m, n, err, bound);
    assert_true(err <= bound);
    return err;
}

/* ---- factorisation ------------------------------------------------------------ */

static void factor_random(int m, int n, int bits) {
    ss_image img;
    random_image(&img, m, n, bits);
    ss_factors *f = NULL;
    assert_int_equal(ss_svd_factor(&img, 0, 1, &f), 0);
    assert_int_equal(f->rank, m < n ? m : n);
    double err = check_factors(f, &img);
    assert_true(err < 0.5); /* rounding gives back the exact original */
    assert_memory_equal(f->orig, img.px, sizeof(uint16_t) * m * n);
    ss_factors_free(f);
    ss_image_free(&img);
}

static void test_factor_shapes_8bit(void **state) {
    (void)state;
    static const int shapes[][2] = {{1, 1}, {7, 300}, {300, 7}, {256, 170}, {513, 257}, {2, 3}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) factor_random(shapes[i][0], shapes[i][1], 8);
}

static void test_factor_shapes_16bit(void **state) {
    (void)state;
    factor_random(1, 1, 16);
    factor_random(7, 300, 16);
    factor_random(256, 170, 16);
}

/* A 16-bit slice-like image: full rank rounds back to the exact original
 * (float32 arithmetic alone gets ~0.5 here, hence float64 for 16-bit). */
static void test_factor_16bit_phantom_error(void **state) {
    (void)state;
    ss_image img;
    phantom_image(&img, 256, 170, 16);
    ss_factors *f;
    assert_int_equal(ss_svd_factor(&img, 0, 0, &f), 0);
    double err = check_factors(f, &img);
    print_message("16-bit 256x170 phantom: full-rank max abs error %.4f\n", err);
    assert_true(err < 0.5);
    ss_factors_free(f);
    ss_image_free(&img);
}

static void test_factor_constant_and_zero_images(void **state) {
    (void)state;
    ss_image img;
    assert_int_equal(ss_image_alloc(&img, 40, 30, 8), 0);
    ss_factors *f;
    assert_int_equal(ss_svd_factor(&img, 0, 0, &f), 0); /* all zeros */
    assert_true(f->S[0] == 0);
    check_factors(f, &img);
    ss_factors_free(f);
    for (size_t i = 0; i < 40 * 30; i++) img.px[i] = 200;
    assert_int_equal(ss_svd_factor(&img, 0, 0, &f), 0);
    check_factors(f, &img);
    assert_true(fabs(f->S[0] - 200 * sqrt(1200.0)) < 1e-2);
    assert_true(f->S[1] < 1e-2);
    ss_factors_free(f);
    ss_image_free(&img);
}

static void test_truncation_keeps_leading_components(void **state) {
    (void)state;
    ss_image img;
    phantom_image(&img, 64, 48, 8);
    ss_factors *full, *tr;
    assert_int_equal(ss_svd_factor(&img, 0, 0, &full), 0);
    assert_int_equal(ss_svd_factor(&img, 5, 0, &tr), 0);
    assert_int_equal(tr->rank, 5);
    assert_int_equal(tr->nsv, 48);
    assert_null(tr->orig);
    check_factors(tr, &img);
    /* Same input, same LAPACK call: the leading components agree exactly, and
     * all singular values are kept. */
    assert_memory_equal(tr->S, full->S, sizeof(float) * 48);
    for (int i = 0; i < 64; i++)
        assert_memory_equal(tr->U + (size_t)i * 5, full->U + (size_t)i * 48, sizeof(float) * 5);
    assert_memory_equal(tr->Vt, full->Vt, sizeof(float) * 5 * 48);
    assert_memory_equal(tr->W, full->W, sizeof(float) * 5 * 48);
    assert_string_not_equal(tr->id, full->id);
    ss_factors_free(tr);
    /* rank <= 0 or above min(m, n) means full rank */
    assert_int_equal(ss_svd_factor(&img, 49, 0, &tr), 0);
    assert_int_equal(tr->rank, 48);
    assert_string_equal(tr->id, full->id);
    ss_factors_free(tr);
    assert_int_equal(ss_svd_factor(&img, -3, 0, &tr), 0);
    assert_int_equal(tr->rank, 48);
    ss_factors_free(tr);
    ss_factors_free(full);
    ss_image_free(&img);
}

static void test_factor_rejects_bad_images(void **state) {
    (void)state;
    ss_factors *f = (ss_factors *)&f;
    ss_image img = {0};
    assert_int_equal(ss_svd_factor(&img, 0, 0, &f), SS_EINVAL);
    assert_null(f);
    random_image(&img, 4, 4, 8);
    img.bit_depth = 12;
    assert_int_equal(ss_svd_factor(&img, 0, 0, &f), SS_EINVAL);
    img.bit_depth = 8;
    ss_image_free(&img);
}

static void test_stored_bytes(void **state) {
    (void)state;
    assert_true(ss_stored_bytes(256, 170, 170) == 4LL * 170 * 427);
    assert_true(ss_stored_bytes(256, 170, 1) == 4LL * 427);
    assert_true(ss_stored_bytes(100000, 100000, 100000) == 4LL * 100000 * 200001);
}

/* ---- content id ------------------------------------------------------------- */

static int id_ok(const char *id) {
    size_t len = strlen(id);
    if (len < 1 || len > 64) return 0;
    for (size_t i = 0; i < len; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", id[i])) return 0;
    return 1;
}

static void test_content_id(void **state) {
    (void)state;
    ss_image img;
    random_image(&img, 6, 9, 8);
    char a[65], b[65];
    ss_content_id(&img, 0, a);
    assert_true(id_ok(a));
    assert_int_equal(strlen(a), 64); /* all of SHA-256 */
    ss_content_id(&img, 0, b);
    assert_string_equal(a, b);
    ss_content_id(&img, 6, b); /* explicit full rank == default */
    assert_string_equal(a, b);
    ss_content_id(&img, 5, b);
    assert_string_not_equal(a, b);
    img.px[53] ^= 1; /* one pixel, lowest bit */
    ss_content_id(&img, 0, b);
    assert_string_not_equal(a, b);
    img.px[53] ^= 1;
    img.bit_depth = 16;
    ss_content_id(&img, 0, b);
    assert_string_not_equal(a, b);
    img.bit_depth = 8;
    img.width = 6; /* same samples, transposed shape */
    img.height = 9;
    ss_content_id(&img, 0, b);
    assert_string_not_equal(a, b);
    img.width = 9;
    img.height = 6;
    ss_factors *f;
    assert_int_equal(ss_svd_factor(&img, 0, 0, &f), 0);
    assert_string_equal(f->id, a);
    ss_factors_free(f);
    ss_image_free(&img);

    /* No collisions among many near-identical images. */
    enum { N = 2000 };
    char(*ids)[65] = calloc(N, 65);
    assert_non_null(ids);
    assert_int_equal(ss_image_alloc(&img, 4, 4, 16), 0);
    for (int i = 0; i < N; i++) {
        img.px[i % 16] = (uint16_t)(i / 16 + 1);
        ss_content_id(&img, 0, ids[i]);
        img.px[i % 16] = 0;
    }
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) assert_string_not_equal(ids[i], ids[j]);
    free(ids);
    ss_image_free(&img);
}

/* ss_svd_factor of an h x w image whose pixels may not be read, in a child
 * process (a factoriser that tries anyway dies there, not here); its result. */
static int factor_unreadable(int h, int w) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL); /* cmocka's handler would go on running tests in the child */
        signal(SIGBUS, SIG_DFL);
        size_t bytes = (size_t)h * (size_t)w * sizeof(uint16_t);
        void *px = mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (px == MAP_FAILED) _exit(100);
        ss_image img = {.width = w, .height = h, .bit_depth = 8, .px = px};
        ss_factors *f = NULL;
        int rc = ss_svd_factor(&img, 0, 1, &f);
        _exit(rc < 0 ? -rc : 99); /* SS_E* codes are small negatives */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status)) fail_msg("%dx%d: the factoriser died (signal %d)", h, w, WTERMSIG(status));
    return -WEXITSTATUS(status);
}

/* LAPACK's interface counts the workspace (and its offsets into it) in 32-bit
 * lapack_int: shapes whose workspace cannot be counted are refused before any
 * allocation, not handed to LAPACK with an overflowed size. */
static void test_factor_refuses_what_lapack_cannot_count(void **state) {
    (void)state;
    assert_int_equal(factor_unreadable(23200, 23200), SS_ETOOLARGE); /* ~4 p^2 > 2^31 */
    assert_int_equal(factor_unreadable(65535, 20000), SS_ETOOLARGE); /* m n + 4 p^2 > 2^31 */
    assert_int_equal(factor_unreadable(20000, 65535), SS_ETOOLARGE);
    /* The control: the longest side allowed, thin, factorises. */
    ss_image img;
    random_image(&img, 65535, 12, 8);
    ss_factors *f = NULL;
    assert_int_equal(ss_svd_factor(&img, 0, 0, &f), SS_OK);
    assert_int_equal(f->rank, 12);
    ss_factors_free(f);
    ss_image_free(&img);
}

/* The documented id (engine/svd.h), checked against digests computed apart from
 * this code (Python's hashlib), and the old id's values, which slices stored
 * under it depend on. */
static void test_content_id_known_values(void **state) {
    (void)state;
    uint16_t px8[6] = {1, 2, 3, 4, 5, 6}, px16[6] = {0, 65535, 256, 1, 4660, 43981};
    ss_image a = {.width = 3, .height = 2, .bit_depth = 8, .px = px8};
    ss_image b = {.width = 2, .height = 3, .bit_depth = 16, .px = px16};
    char id[65];
    ss_content_id(&a, 0, id);
    assert_string_equal(id, "ff0bf584bf773739a1eb06e786972bbb35bed016dff7713155fa54da31c0a1ed");
    ss_content_id(&b, 1, id);
    assert_string_equal(id, "719330913a2872533e7595684113436759b1063af016a915f45e96813e8ff9b2");
    ss_content_id_v1(&a, 0, id);
    assert_string_equal(id, "7b25bef73b7ebdabad18071626c42be2");
    ss_content_id_v1(&b, 1, id);
    assert_string_equal(id, "5b015d64e2f59ef5de6b1c1d9fdf6693");
}

/* ---- .svd format -------------------------------------------------------------- */

static ss_factors *make_factors(int m, int n, int rank, int bits, int keep) {
    ss_image img;
    phantom_image(&img, m, n, bits);
    ss_factors *f;
    assert_int_equal(ss_svd_factor(&img, rank, keep, &f), 0);
    snprintf(f->name, sizeof f->name, "slice %dx%d \"quoted\" \xc3\xa9", m, n);
    f->created = 1700000000 + m;
    ss_image_free(&img);
    return f;
}

static void assert_factors_identical(const ss_factors *a, const ss_factors *b) {
    assert_int_equal(a->m, b->m);
    assert_int_equal(a->n, b->n);
    assert_int_equal(a->bit_depth, b->bit_depth);
    assert_int_equal(a->rank, b->rank);
    assert_int_equal(a->nsv, b->nsv);
    assert_true(a->created == b->created);
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->id, b->id);
    size_t m = (size_t)a->m, n = (size_t)a->n, r = (size_t)a->rank;
    assert_memory_equal(a->U, b->U, sizeof(float) * m * r);
    assert_memory_equal(a->S, b->S, sizeof(float) * (size_t)a->nsv);
    assert_memory_equal(a->Vt, b->Vt, sizeof(float) * r * n);
    assert_memory_equal(a->W, b->W, sizeof(float) * r * n);
    if (a->orig) {
        assert_non_null(b->orig);
        assert_memory_equal(a->orig, b->orig, sizeof(uint16_t) * m * n);
    } else {
        assert_null(b->orig);
    }
}

static void test_roundtrip_bit_exact(void **state) {
    (void)state;
    static const int cases[][5] = {{1, 1, 0, 8, 1},     {9, 7, 0, 8, 1},    {9, 7, 3, 16, 0},
                                   {7, 300, 0, 16, 1},  {300, 7, 2, 8, 0}, {256, 170, 50, 8, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ss_factors *f = make_factors(cases[c][0], cases[c][1], cases[c][2], cases[c][3], cases[c][4]);
        unsigned char *buf;
        size_t len;
        assert_int_equal(ss_svd_serialize_v1(f, &buf, &len), 0);
        size_t want = SS_SVD_HEADER_BYTES + 4 * ((size_t)f->m * f->rank + f->nsv + (size_t)f->rank * f->n) +
                      (f->orig ? 2 * (size_t)f->m * f->n : 0);
        assert_int_equal(len, want);
        assert_memory_equal(buf, "SVDSLICE", 8);
        ss_factors *g;
        assert_int_equal(ss_svd_deserialize(buf, len, &g), 0);
        assert_factors_identical(f, g);
        /* the header alone is enough for an index, given the file size */
        ss_factors h;
        memset(&h, 0x5a, sizeof h);
        assert_int_equal(ss_svd_read_header(buf, len, &h), 0);
        assert_int_equal(h.m, f->m);
        assert_int_equal(h.n, f->n);
        assert_int_equal(h.rank, f->rank);
        assert_int_equal(h.nsv, f->nsv);
        assert_int_equal(h.bit_depth, f->bit_depth);
        assert_true(h.created == f->created);
        assert_string_equal(h.name, f->name);
        assert_string_equal(h.id, f->id);
        assert_null(h.U);
        assert_null(h.S);
        assert_null(h.Vt);
        assert_null(h.W);
        assert_null(h.orig);
        /* serialising again gives the same bytes */
        unsigned char *buf2;
        size_t len2;
        assert_int_equal(ss_svd_serialize_v1(g, &buf2, &len2), 0);
        assert_int_equal(len2, len);
        assert_memory_equal(buf2, buf, len);
        free(buf2);
        free(buf);
        ss_factors_free(g);
        ss_factors_free(f);
    }
}

static void test_save_load_file(void **state) {
    (void)state;
    char path[] = "/tmp/test_svd_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    ss_factors *f = make_factors(40, 33, 0, 16, 1), *g;
    assert_int_equal(ss_svd_save(path, f), 0);
    assert_int_equal(ss_svd_load(path, &g), 0);
    assert_factors_identical(f, g);
    ss_factors_free(g);
    /* a truncated file on disk */
    assert_int_equal(truncate(path, 1000), 0);
    g = (ss_factors *)&g;
    assert_int_equal(ss_svd_load(path, &g), SS_ECORRUPT);
    assert_null(g);
    unlink(path);
    assert_int_equal(ss_svd_load(path, &g), SS_EIO);
    assert_int_equal(ss_svd_save("/nonexistent-dir/x.svd", f), SS_EIO);
    ss_factors_free(f);
}

static void test_every_byte_flip_detected(void **state) {
    (void)state;
    static const unsigned char flips[] = {0x01, 0x80, 0xff, 0x5a};
    for (int keep = 0; keep <= 1; keep++) {
        ss_factors *f = make_factors(9, 7, 0, 8, keep), *g;
        unsigned char *buf;
        size_t len;
        assert_int_equal(ss_svd_serialize_v1(f, &buf, &len), 0);
        for (size_t pos = 0; pos < len; pos++)
            for (size_t k = 0; k < sizeof flips; k++) {
                buf[pos] ^= flips[k];
                g = (ss_factors *)&g;
                int rc = ss_svd_deserialize(buf, len, &g);
                if (rc != SS_ECORRUPT) print_error("flip 0x%02x at %zu not detected\n", flips[k], pos);
                assert_int_equal(rc, SS_ECORRUPT);
                assert_null(g);
                if (pos < SS_SVD_HEADER_BYTES) {
                    ss_factors h;
                    assert_int_equal(ss_svd_read_header(buf, len, &h), SS_ECORRUPT);
                }
                buf[pos] ^= flips[k];
            }
        assert_int_equal(ss_svd_deserialize(buf, len, &g), 0); /* restored intact */
        ss_factors_free(g);
        free(buf);
        ss_factors_free(f);
    }
    /* A larger file, sampled positions. */
    ss_factors *f = make_factors(256, 170, 0, 8, 1), *g;
    unsigned char *buf;
    size_t len;
    assert_int_equal(ss_svd_serialize_v1(f, &buf, &len), 0);
    for (size_t pos = 0; pos < len; pos += 4099) {
        buf[pos] ^= 0x10;
        assert_int_equal(ss_svd_deserialize(buf, len, &g), SS_ECORRUPT);
        buf[pos] ^= 0x10;
    }
    buf[len - 1] ^= 0x01;
    assert_int_equal(ss_svd_deserialize(buf, len, &g), SS_ECORRUPT);
    free(buf);
    ss_factors_free(f);
}

static void test_every_truncation_detected(void **state) {
    (void)state;
    ss_factors *f = make_factors(9, 7, 0, 16, 1), *g;
    unsigned char *buf;
    size_t len;
    assert_int_equal(ss_svd_serialize_v1(f, &buf, &len), 0);
    for (size_t cut = 0; cut < len; cut++) {
        /* a fresh copy of exactly `cut` bytes, so ASan sees any read past it */
        unsigned char *part = malloc(cut ? cut : 1);
        assert_non_null(part);
        memcpy(part, buf, cut);
        assert_int_equal(ss_svd_deserialize(part, cut, &g), SS_ECORRUPT);
        ss_factors h;
        assert_int_equal(ss_svd_read_header(part, cut, &h), SS_ECORRUPT);
        free(part);
    }
    /* trailing garbage is rejected too */
    unsigned char *longer = malloc(len + 1);
    assert_non_null(longer);
    memcpy(longer, buf, len);
    longer[len] = 0;
    assert_int_equal(ss_svd_deserialize(longer, len + 1, &g), SS_ECORRUPT);
    free(longer);
    free(buf);
    ss_factors_free(f);
}

/* Rewrites the checksums after an edit, so only the semantic checks can reject it. */
static void reseal(unsigned char *buf, size_t len) {
    uint32_t pc = (uint32_t)crc32_z(0, buf + SS_SVD_HEADER_BYTES, len - SS_SVD_HEADER_BYTES);
    for (int i = 0; i < 4; i++) buf[384 + i] = (unsigned char)(pc >> (8 * i));
    uint32_t hc = (uint32_t)crc32_z(0, buf, 388);
    for (int i = 0; i < 4; i++) buf[388 + i] = (unsigned char)(hc >> (8 * i));
}

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void test_huge_header_in_short_file(void **state) {
    (void)state;
    ss_factors *f = make_factors(9, 7, 0, 8, 1), *g;
    unsigned char *buf;
    size_t len;
    assert_int_equal(ss_svd_serialize_v1(f, &buf, &len), 0);
    /* A validly sealed header claiming 100000 x 100000, full rank, with its
     * payload size field consistent: only the file length gives it away, and it
     * must be caught before ~160 GB are allocated (ASan would abort on that). */
    put32(buf + 16, 100000);
    put32(buf + 20, 100000);
    put32(buf + 28, 100000);
    put32(buf + 32, 100000);
    uint64_t plen = 4ULL * (100000ULL * 100000 * 2 + 100000) + 2ULL * 100000 * 100000;
    for (int i = 0; i < 8; i++) buf[376 + i] = (unsigned char)(plen >> (8 * i));
    reseal(buf, len);
    g = (ss_factors *)&g;
    assert_int_equal(ss_svd_deserialize(buf, len, &g), SS_ECORRUPT);
    assert_null(g);
    assert_non_null(strstr(ss_error(), "expected"));
    ss_factors h;
    assert_int_equal(ss_svd_read_header(buf, len, &h), SS_ECORRUPT);
    /* Sides so large their products overflow 64 bits. */
    put32(buf + 16, 0xffffffffu);
    put32(buf + 20, 0xffffffffu);
    put32(buf + 28, 0xffffffffu);
    put32(buf + 32, 0xffffffffu);
    reseal(buf, len);
    assert_int_equal(ss_svd_deserialize(buf, len, &g), SS_ECORRUPT);
    free(buf);
    ss_factors_free(f);
}

typedef void (*edit_fn)(unsigned char *buf, const ss_factors *f);
static void edit_version(unsigned char *b, const ss_factors *f) { (void)f; put32(b + 8, 2); }
static void edit_bits(unsigned char *b, const ss_factors *f) { (void)f; put32(b + 24, 12); }
static void edit_rank_above_nsv(unsigned char *b, const ss_factors *f) { put32(b + 28, (uint32_t)f->nsv + 1); }
static void edit_rank_zero(unsigned char *b, const ss_factors *f) { (void)f; put32(b + 28, 0); }
static void edit_nsv(unsigned char *b, const ss_factors *f) { put32(b + 32, (uint32_t)f->nsv - 1); }
static void edit_flags(unsigned char *b, const ss_factors *f) { (void)f; put32(b + 36, 3); }
static void edit_name_unterminated(unsigned char *b, const ss_factors *f) { (void)f; memset(b + 48, 'a', 256); }
static void edit_name_padding(unsigned char *b, const ss_factors *f) { (void)f; b[48 + 255] = 'x'; }
static void edit_id_char(unsigned char *b, const ss_factors *f) { (void)f; b[304] = '/'; }
static void edit_u_nan(unsigned char *b, const ss_factors *f) { (void)f; put32(b + 392, 0x7fc00000u); }
static void edit_u_inf(unsigned char *b, const ss_factors *f) { (void)f; put32(b + 396, 0x7f800000u); }
static void edit_s_negative(unsigned char *b, const ss_factors *f) {
    size_t off = 392 + 4 * (size_t)f->m * f->rank + 4 * ((size_t)f->nsv - 1);
    put32(b + off, 0xbf800000u); /* -1.0f */
}
static void edit_s_unsorted(unsigned char *b, const ss_factors *f) {
    size_t off = 392 + 4 * (size_t)f->m * f->rank + 4 * ((size_t)f->nsv - 1);
    put32(b + off, 0x4f000000u); /* 2^31, above S[0] */
}
static void edit_orig_over_depth(unsigned char *b, const ss_factors *f) {
    size_t off = 392 + 4 * ((size_t)f->m * f->rank + f->nsv + (size_t)f->rank * f->n);
    b[off] = 0x00;
    b[off + 1] = 0x01; /* 256 in an 8-bit file */
}

static void test_semantic_checks_behind_valid_checksums(void **state) {
    (void)state;
    static const edit_fn edits[] = {edit_version, edit_bits,     edit_rank_above_nsv, edit_rank_zero,
                                    edit_nsv,     edit_flags,    edit_name_unterminated, edit_name_padding, edit_id_char,
                                    edit_u_nan,   edit_u_inf,    edit_s_negative,     edit_s_unsorted,
                                    edit_orig_over_depth};
    ss_factors *f = make_factors(9, 7, 0, 8, 1), *g;
    unsigned char *buf;
    size_t len;
    assert_int_equal(ss_svd_serialize_v1(f, &buf, &len), 0);
    unsigned char *copy = malloc(len);
    assert_non_null(copy);
    for (size_t e = 0; e < sizeof edits / sizeof edits[0]; e++) {
        memcpy(copy, buf, len);
        edits[e](copy, f);
        reseal(copy, len);
        g = (ss_factors *)&g;
        int rc = ss_svd_deserialize(copy, len, &g);
        if (rc != SS_ECORRUPT) print_error("edit %zu accepted\n", e);
        assert_int_equal(rc, SS_ECORRUPT);
        assert_null(g);
    }
    memcpy(copy, buf, len); /* control: resealing an unedited copy is accepted */
    reseal(copy, len);
    assert_int_equal(ss_svd_deserialize(copy, len, &g), 0);
    ss_factors_free(g);
    free(copy);
    free(buf);
    ss_factors_free(f);
}

/* ---- real slices against a float64 SVD ------------------------------------------ */

static const char *const real_slices[] = {"BrainProtonDensitySlice.png", "BrainT1Slice.png",
                                          "BrainMidSagittalSlice.png", "FatMRISlice.png"};

static int load_real(const char *name, ss_image *img) {
    const char *dir = getenv("SVDSLICE_TEST_DATA");
    if (!dir) return 0;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unsigned char *buf;
    size_t len;
    int rc = ss_read_file(path, 64u << 20, &buf, &len);
    if (rc) print_error("%s: %s\n", path, ss_error());
    assert_int_equal(rc, 0);
    rc = ss_png_decode(buf, len, 8192, img);
    free(buf);
    if (rc) print_error("%s: %s\n", path, ss_error());
    assert_int_equal(rc, 0);
    return 1;
}

static void test_real_slices_factor_invariants(void **state) {
    (void)state;
    for (size_t s = 0; s < sizeof real_slices / sizeof real_slices[0]; s++) {
        ss_image img;
        if (!load_real(real_slices[s], &img)) skip();
        ss_factors *f;
        assert_int_equal(ss_svd_factor(&img, 0, 1, &f), 0);
        double err = check_factors(f, &img);
        print_message("%s %dx%d/%d: full-rank max abs error %.4f\n", real_slices[s], img.height,
                      img.width, img.bit_depth, err);
        assert_true(err < 0.5);
        ss_factors_free(f);
        ss_image_free(&img);
    }
}

static int write_all(const char *path, const void *p, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    size_t w = fwrite(p, 1, n, fp);
    return (fclose(fp) == 0 && w == n) ? 0 : -1;
}

/* Runs tests/util/svd_ref.py: float64 rank-k reconstructions for ks. */
static double *numpy_reference(const ss_image *img, const int *ks, int nk) {
    const char *src = getenv("SVDSLICE_SOURCE_DIR");
    assert_non_null(src);
    char script[1024], in[] = "/tmp/test_svd_in_XXXXXX", out[] = "/tmp/test_svd_out_XXXXXX";
    snprintf(script, sizeof script, "%s/tests/util/svd_ref.py", src);
    int fd = mkstemp(in);
    assert_true(fd >= 0);
    close(fd);
    fd = mkstemp(out);
    assert_true(fd >= 0);
    close(fd);
    const size_t mn = (size_t)img->height * img->width;
    unsigned char *raw = malloc(2 * mn);
    assert_non_null(raw);
    for (size_t i = 0; i < mn; i++) {
        raw[2 * i] = (unsigned char)(img->px[i] & 0xff);
        raw[2 * i + 1] = (unsigned char)(img->px[i] >> 8);
    }
    assert_int_equal(write_all(in, raw, 2 * mn), 0);
    free(raw);

    char ms[16], ns[16], kstr[8][16];
    char *argv[16] = {"/usr/bin/python3", script, in, ms, ns, out};
    snprintf(ms, sizeof ms, "%d", img->height);
    snprintf(ns, sizeof ns, "%d", img->width);
    assert_true(nk <= 8);
    for (int i = 0; i < nk; i++) {
        snprintf(kstr[i], sizeof kstr[i], "%d", ks[i]);
        argv[6 + i] = kstr[i];
    }
    argv[6 + nk] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    double *ref = malloc(sizeof(double) * mn * (size_t)nk);
    assert_non_null(ref);
    FILE *fp = fopen(out, "rb");
    assert_non_null(fp);
    size_t got = fread(ref, sizeof(double), mn * (size_t)nk, fp);
    fclose(fp);
    assert_int_equal(got, mn * (size_t)nk);
    unlink(in);
    unlink(out);
    /* the script writes little-endian doubles, this test runs little-endian hosts */
    return ref;
}

static long pixel_of(double v, double maxv) { return lround(fmin(fmax(v, 0), maxv)); }

/* Rank-k reconstructions (k = 10, 50, full) from our float32 factors against
 * numpy's float64 SVD: pixels within +-1 after rounding (API.md). */
static void cross_check(const ss_image *img, const char *label) {
    ss_factors *f;
    assert_int_equal(ss_svd_factor(img, 0, 0, &f), 0);
    const int ks[3] = {10, 50, f->nsv};
    double *ref = numpy_reference(img, ks, 3);
    const double maxv = (double)((1u << img->bit_depth) - 1);
    const size_t mn = (size_t)f->m * f->n;
    for (int t = 0; t < 3; t++) {
        int k = ks[t] < f->rank ? ks[t] : f->rank;
        double *C = recon_f64(f, k), worst = 0;
        long worst_px = 0;
        for (size_t i = 0; i < mn; i++) {
            worst = fmax(worst, fabs(C[i] - ref[(size_t)t * mn + i]));
            long d = labs(pixel_of(C[i], maxv) - pixel_of(ref[(size_t)t * mn + i], maxv));
            if (d > worst_px) worst_px = d;
        }
        print_message("%s/%d k=%d: max |float32 - float64| %.4f, max pixel diff %ld\n", label,
                      img->bit_depth, k, worst, worst_px);
        assert_true(worst_px <= 1); /* API.md's promise */
        assert_true(worst < 0.1 * maxv / 255); /* and well inside it: ~1e-3 of a level measured */
        free(C);
    }
    free(ref);
    ss_factors_free(f);
}

static void test_real_slices_match_float64_svd(void **state) {
    (void)state;
    for (size_t s = 0; s < sizeof real_slices / sizeof real_slices[0]; s++) {
        ss_image img;
        if (!load_real(real_slices[s], &img)) skip();
        cross_check(&img, real_slices[s]);
        if (s == 0) { /* no 16-bit slice ships: widen one (v * 257, as API.md's 8 -> 16) */
            for (size_t i = 0; i < (size_t)img.width * img.height; i++) img.px[i] = (uint16_t)(img.px[i] * 257);
            img.bit_depth = 16;
            cross_check(&img, real_slices[s]);
        }
        ss_image_free(&img);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_factor_shapes_8bit),
        cmocka_unit_test(test_factor_shapes_16bit),
        cmocka_unit_test(test_factor_16bit_phantom_error),
        cmocka_unit_test(test_factor_constant_and_zero_images),
        cmocka_unit_test(test_truncation_keeps_leading_components),
        cmocka_unit_test(test_factor_rejects_bad_images),
        cmocka_unit_test(test_factor_refuses_what_lapack_cannot_count),
        cmocka_unit_test(test_stored_bytes),
        cmocka_unit_test(test_content_id),
        cmocka_unit_test(test_content_id_known_values),
        cmocka_unit_test(test_roundtrip_bit_exact),
        cmocka_unit_test(test_save_load_file),
        cmocka_unit_test(test_every_byte_flip_detected),
        cmocka_unit_test(test_every_truncation_detected),
        cmocka_unit_test(test_huge_header_in_short_file),
        cmocka_unit_test(test_semantic_checks_behind_valid_checksums),
        cmocka_unit_test(test_real_slices_factor_invariants),
        cmocka_unit_test(test_real_slices_match_float64_svd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
