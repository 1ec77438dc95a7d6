/* test_quality.c - quality metrics against scikit-image 0.19 and the API's null cases */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/error.h"
#include "engine/kernels.h"
#include "engine/png.h"
#include "util/file.h"
#include "engine/quality.h"
#include "engine/svd.h"

/* skimage's values are matched to this relative error (the brief asks 1e-6;
 * the code follows scipy's arithmetic, so it holds far tighter). */
#define REL_TOL 1e-9

/* One image pair and what scikit-image says about it. */
typedef struct qcase {
    char name[64];
    int h, w, bits;
    uint16_t *a, *b; /* a: original, b: test image; owned */
    int have_ref;
    double mse, psnr, ssim, hausdorff;
    int psnr_null, ssim_null, hausdorff_null;
} qcase;

enum { MAX_CASES = 64 };
static qcase g_cases[MAX_CASES];
static int g_ncases;
static char g_dir[256];

/* splitmix64: reproducible noise without libc's rand state. */
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static qcase *add_case(const char *name, int h, int w, int bits) {
    assert_true(g_ncases < MAX_CASES);
    qcase *c = &g_cases[g_ncases++];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    c->h = h;
    c->w = w;
    c->bits = bits;
    c->a = calloc((size_t)h * w, sizeof *c->a);
    c->b = calloc((size_t)h * w, sizeof *c->b);
    assert_non_null(c->a);
    assert_non_null(c->b);
    return c;
}

static qcase *find_case(const char *name) {
    for (int i = 0; i < g_ncases; i++)
        if (!strcmp(g_cases[i].name, name)) return &g_cases[i];
    fail_msg("no case %s", name);
    return NULL;
}

/* A smooth "phantom" with an elliptic body on a zero background plus noise:
 * structure for SSIM, exact zeros for Hausdorff. */
static void phantom(uint16_t *px, int h, int w, int bits, int noise) {
    int maxv = (1 << bits) - 1;
    for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++) {
            double y = (i - h / 2.0) / (h * 0.42), x = (j - w / 2.0) / (w * 0.42);
            double r2 = x * x + y * y;
            double v = 0;
            if (r2 < 1.0) v = maxv * (0.35 + 0.4 * cos(6.0 * x) * sin(4.0 * y) * 0.5 + 0.25 * (1 - r2));
            if (v > 0 && noise) v += (double)((int64_t)(rnd() % (2 * noise + 1)) - noise);
            if (v < 0) v = 0;
            if (v > maxv) v = maxv;
            px[(size_t)i * w + j] = (uint16_t)lround(v);
        }
}

static void perturb(const uint16_t *in, uint16_t *out, size_t n, int bits, int amp) {
    int maxv = (1 << bits) - 1;
    for (size_t i = 0; i < n; i++) {
        int64_t v = (int64_t)in[i] + (int64_t)(rnd() % (2 * amp + 1)) - amp;
        out[i] = (uint16_t)(v < 0 ? 0 : v > maxv ? maxv : v);
    }
}

/* ---- cases ------------------------------------------------------------------ */

static void build_random_cases(void) {
    /* Uniform noise pairs: every pixel differs, the worst case for SSIM. */
    int sizes[][2] = {{256, 170}, {37, 61}, {7, 7}, {9, 300}};
    for (int bits = 8; bits <= 16; bits += 8)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            char name[64];
            snprintf(name, sizeof name, "noise%d_%dx%d", bits, sizes[s][0], sizes[s][1]);
            qcase *c = add_case(name, sizes[s][0], sizes[s][1], bits);
            size_t n = (size_t)c->h * c->w;
            for (size_t i = 0; i < n; i++) c->a[i] = (uint16_t)(rnd() & ((1u << bits) - 1));
            perturb(c->a, c->b, n, bits, bits == 8 ? 20 : 5000);
        }
    /* Structured pairs like a reconstruction: phantom vs a noisy copy. */
    for (int bits = 8; bits <= 16; bits += 8) {
        char name[64];
        snprintf(name, sizeof name, "phantom%d", bits);
        qcase *c = add_case(name, 256, 170, bits);
        phantom(c->a, 256, 170, bits, 0);
        perturb(c->a, c->b, (size_t)256 * 170, bits, bits == 8 ? 3 : 700);
    }
}

static void build_sparse_cases(void) {
    /* A few points far apart, and the points where the two sets disagree. */
    qcase *c = add_case("sparse_far", 256, 170, 8);
    c->a[0] = 1;
    c->a[(size_t)255 * 170 + 169] = 200;
    c->b[(size_t)128 * 170 + 3] = 7;
    c->b[(size_t)10 * 170 + 160] = 9;
    c->b[(size_t)250 * 170 + 0] = 255;

    c = add_case("sparse_one_each", 40, 50, 16);
    c->a[(size_t)3 * 50 + 4] = 1;
    c->b[(size_t)39 * 50 + 49] = 65535;

    /* Random scatter of ~0.5% and ~2% points. */
    c = add_case("sparse_scatter", 256, 170, 16);
    for (size_t i = 0; i < (size_t)256 * 170; i++) {
        if (rnd() % 200 == 0) c->a[i] = (uint16_t)(1 + rnd() % 65535);
        if (rnd() % 50 == 0) c->b[i] = (uint16_t)(1 + rnd() % 65535);
    }

    /* One row and one column only: envelope edge cases (single parabolas). */
    c = add_case("sparse_lines", 64, 64, 8);
    for (int j = 0; j < 64; j += 9) c->a[(size_t)17 * 64 + j] = 5;
    for (int i = 0; i < 64; i += 5) c->b[(size_t)i * 64 + 60] = 5;

    /* Phantoms with different zero backgrounds (a shifted body). */
    c = add_case("phantom_shifted", 120, 90, 8);
    phantom(c->a, 120, 90, 8, 2);
    for (int i = 0; i < 120; i++)
        for (int j = 0; j < 90; j++) c->b[(size_t)i * 90 + j] = (i >= 11 && j >= 7) ? c->a[(size_t)(i - 11) * 90 + (j - 7)] : 0;
}

static void build_null_cases(void) {
    qcase *c = add_case("identical", 64, 48, 8);
    phantom(c->a, 64, 48, 8, 4);
    memcpy(c->b, c->a, (size_t)64 * 48 * sizeof *c->a);

    c = add_case("small_6x20", 6, 20, 8); /* ssim null: height under 7 */
    for (size_t i = 0; i < 120; i++) { c->a[i] = (uint16_t)(rnd() % 256); c->b[i] = (uint16_t)(rnd() % 256); }

    c = add_case("small_30x3", 30, 3, 16); /* ssim null: width under 7 */
    for (size_t i = 0; i < 90; i++) { c->a[i] = (uint16_t)(rnd() % 65536); c->b[i] = (uint16_t)(rnd() % 65536); }

    c = add_case("one_empty", 32, 32, 8); /* b all zero: hausdorff null */
    phantom(c->a, 32, 32, 8, 0);

    c = add_case("other_empty", 32, 32, 16); /* a all zero: hausdorff null */
    phantom(c->b, 32, 32, 16, 0);

    add_case("both_empty", 16, 16, 8); /* hausdorff 0, mse 0 */
}

/* Adds original-vs-rank-k pairs for a real slice: factors at full rank, the
 * blas backend's pixels at each k. Returns 0, or -1 when the file is missing. */
static int build_real_cases(const char *dir, const char *file, const int *ks, int nk) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    unsigned char *buf = NULL;
    size_t len = 0;
    if (ss_read_file(path, 64u << 20, &buf, &len) != 0) return -1;
    ss_image img;
    assert_int_equal(ss_png_decode(buf, len, 8192, &img), 0);
    free(buf);
    ss_factors *f = NULL;
    assert_int_equal(ss_svd_factor(&img, 0, 1, &f), 0);
    const ss_backend *be = ss_backend_find("blas");
    assert_non_null(be);
    ss_workspace *ws = ss_workspace_new();
    assert_non_null(ws);
    for (int i = 0; i < nk; i++) {
        int k = ks[i] < f->rank ? ks[i] : f->rank;
        char name[64];
        snprintf(name, sizeof name, "%.40s_k%d", file, k);
        qcase *c = add_case(name, img.height, img.width, img.bit_depth);
        memcpy(c->a, img.px, (size_t)img.height * img.width * sizeof *c->a);
        assert_int_equal(be->reconstruct(f, k, c->b, ws), 0);
    }
    ss_workspace_free(ws);
    ss_factors_free(f);
    ss_image_free(&img);
    return 0;
}

/* ---- the reference run -------------------------------------------------------- */

static void write_raw(const char *path, const uint16_t *px, size_t n) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    for (size_t i = 0; i < n; i++) { /* little-endian, whatever the host */
        unsigned char le[2] = {(unsigned char)(px[i] & 0xff), (unsigned char)(px[i] >> 8)};
        assert_int_equal(fwrite(le, 1, 2, fp), 2);
    }
    assert_int_equal(fclose(fp), 0);
}

static double num_or_null(json_t *row, const char *key, int *is_null) {
    json_t *v = json_object_get(row, key);
    assert_non_null(v);
    *is_null = json_is_null(v);
    if (*is_null) return 0.0;
    assert_true(json_is_number(v));
    return json_number_value(v);
}

/* Writes every case to a temp dir and runs skimage_ref.py once over them all
 * (one interpreter start for the whole suite). */
static void run_reference(void) {
    const char *src = getenv("SVDSLICE_SOURCE_DIR");
    assert_non_null(src);
    char manifest[512];
    snprintf(manifest, sizeof manifest, "%s/manifest", g_dir);
    FILE *mf = fopen(manifest, "w");
    assert_non_null(mf);
    for (int i = 0; i < g_ncases; i++) {
        qcase *c = &g_cases[i];
        char pa[512], pb[512];
        snprintf(pa, sizeof pa, "%s/%d_a.raw", g_dir, i);
        snprintf(pb, sizeof pb, "%s/%d_b.raw", g_dir, i);
        write_raw(pa, c->a, (size_t)c->h * c->w);
        write_raw(pb, c->b, (size_t)c->h * c->w);
        fprintf(mf, "%s %d %d %d %s %s\n", c->name, c->h, c->w, c->bits, pa, pb);
    }
    assert_int_equal(fclose(mf), 0);

    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/tests/util/skimage_ref.py' '%s'", src, manifest);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[4096];
    int got = 0;
    while (fgets(line, sizeof line, p)) {
        json_error_t err;
        json_t *row = json_loads(line, 0, &err);
        if (!row) fail_msg("bad reference line: %s (%s)", line, err.text);
        qcase *c = find_case(json_string_value(json_object_get(row, "name")));
        int null_mse;
        c->mse = num_or_null(row, "mse", &null_mse);
        assert_false(null_mse);
        c->psnr = num_or_null(row, "psnr", &c->psnr_null);
        c->ssim = num_or_null(row, "ssim", &c->ssim_null);
        c->hausdorff = num_or_null(row, "hausdorff", &c->hausdorff_null);
        c->have_ref = 1;
        json_decref(row);
        got++;
    }
    int st = pclose(p);
    if (st != 0) fail_msg("skimage_ref.py failed (status %d)", st);
    assert_int_equal(got, g_ncases);
}

static int group_setup(void **state) {
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/test_quality.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) return -1;
    build_random_cases();
    build_sparse_cases();
    build_null_cases();
    const char *data = getenv("SVDSLICE_TEST_DATA");
    if (data) {
        const int ks[] = {1, 5, 20, 50, 100, 1000};
        const char *files[] = {"BrainProtonDensitySlice.png", "BrainT1Slice.png", "FatMRISlice.png"};
        for (int i = 0; i < 3; i++)
            if (build_real_cases(data, files[i], ks, 6) != 0) return -1;
    }
    run_reference();
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    char path[512];
    for (int i = 0; i < g_ncases; i++) {
        free(g_cases[i].a);
        free(g_cases[i].b);
        snprintf(path, sizeof path, "%s/%d_a.raw", g_dir, i);
        unlink(path);
        snprintf(path, sizeof path, "%s/%d_b.raw", g_dir, i);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/manifest", g_dir);
    unlink(path);
    rmdir(g_dir);
    return 0;
}

/* ---- checks ------------------------------------------------------------------- */

static void assert_close(const char *what, const char *name, double got, double want, double rel) {
    double tol = rel * fmax(fabs(want), 1e-300);
    if (!(fabs(got - want) <= tol))
        fail_msg("%s %s: got %.17g, skimage %.17g (rel err %.3g)", name, what, got, want,
                 fabs(got - want) / fmax(fabs(want), 1e-300));
}

/* Checks each metric function and ss_quality_compute (with a factors struct
 * built around the pair) against skimage's values for case c. */
static void check_case(const qcase *c) {
    assert_true(c->have_ref);
    size_t n = (size_t)c->h * c->w;
    double range = (double)((1u << c->bits) - 1);

    double mse = ss_mse(c->a, c->b, n);
    assert_close("mse", c->name, mse, c->mse, REL_TOL);
    if (c->psnr_null) assert_true(mse == 0.0);
    else assert_close("psnr", c->name, ss_psnr(mse, range), c->psnr, REL_TOL);

    double ssim = -2.0;
    int rc = ss_ssim(c->a, c->b, c->h, c->w, range, &ssim);
    if (c->ssim_null) assert_int_equal(rc, SS_EINVAL);
    else {
        assert_int_equal(rc, 0);
        assert_close("ssim", c->name, ssim, c->ssim, REL_TOL);
    }

    double hd = -1.0;
    rc = ss_hausdorff(c->a, c->b, c->h, c->w, &hd);
    if (c->hausdorff_null) assert_int_equal(rc, 1);
    else {
        assert_int_equal(rc, 0);
        assert_close("hausdorff", c->name, hd, c->hausdorff, 1e-15);
    }

    /* The same through ss_quality_compute, nulls included. */
    float S[2] = {3.0f, 1.0f};
    ss_factors f;
    memset(&f, 0, sizeof f);
    f.m = c->h;
    f.n = c->w;
    f.bit_depth = c->bits;
    f.rank = f.nsv = 2;
    f.S = S;
    f.orig = c->a;
    ss_quality q;
    assert_int_equal(ss_quality_compute(&f, 1, c->b, &q), 0);
    assert_int_equal(q.k, 1);
    assert_close("q.mse", c->name, q.mse, c->mse, REL_TOL);
    assert_int_equal(q.psnr_null, c->psnr_null);
    if (!c->psnr_null) assert_close("q.psnr", c->name, q.psnr, c->psnr, REL_TOL);
    assert_int_equal(q.ssim_null, c->ssim_null);
    if (!c->ssim_null) assert_close("q.ssim", c->name, q.ssim, c->ssim, REL_TOL);
    assert_int_equal(q.hausdorff_null, c->hausdorff_null);
    if (!c->hausdorff_null) assert_close("q.hausdorff", c->name, q.hausdorff, c->hausdorff, 1e-15);
}

static void check_prefix(const char *prefix) {
    int seen = 0;
    for (int i = 0; i < g_ncases; i++)
        if (!strncmp(g_cases[i].name, prefix, strlen(prefix))) {
            check_case(&g_cases[i]);
            seen++;
        }
    assert_true(seen > 0);
}

static void test_random_8bit_pairs_match_skimage(void **state) {
    (void)state;
    check_prefix("noise8_");
    check_prefix("phantom8");
}

static void test_random_16bit_pairs_match_skimage(void **state) {
    (void)state;
    check_prefix("noise16_");
    check_prefix("phantom16");
}

static void test_sparse_point_sets_match_skimage_hausdorff(void **state) {
    (void)state;
    check_prefix("sparse_");
    check_prefix("phantom_shifted");
    /* Independent of skimage: the far corners are the farthest points. */
    const qcase *c = find_case("sparse_one_each");
    double hd;
    assert_int_equal(ss_hausdorff(c->a, c->b, c->h, c->w, &hd), 0);
    assert_true(hd == sqrt(36.0 * 36.0 + 45.0 * 45.0));
}

static void test_real_slices_at_rank_k_match_skimage(void **state) {
    (void)state;
    if (!getenv("SVDSLICE_TEST_DATA")) skip();
    check_prefix("BrainProtonDensitySlice.png_k");
    check_prefix("BrainT1Slice.png_k");
    check_prefix("FatMRISlice.png_k");
    /* Quality must improve with k on a real slice. */
    const qcase *lo = find_case("BrainProtonDensitySlice.png_k5");
    const qcase *hi = find_case("BrainProtonDensitySlice.png_k50");
    assert_true(lo->mse > hi->mse && lo->ssim < hi->ssim);
}

static void test_identical_images_give_zero_mse_and_null_psnr(void **state) {
    (void)state;
    const qcase *c = find_case("identical");
    assert_true(c->psnr_null);
    assert_true(ss_mse(c->a, c->b, (size_t)c->h * c->w) == 0.0);
    double ssim;
    assert_int_equal(ss_ssim(c->a, c->b, c->h, c->w, 255.0, &ssim), 0);
    assert_true(fabs(ssim - 1.0) < 1e-12);
    check_case(c);
}

static void test_images_under_7_pixels_a_side_have_null_ssim(void **state) {
    (void)state;
    assert_true(find_case("small_6x20")->ssim_null);
    assert_true(find_case("small_30x3")->ssim_null);
    check_case(find_case("small_6x20"));
    check_case(find_case("small_30x3"));
    /* 7x7 is the smallest valid size and does have a value. */
    assert_false(find_case("noise8_7x7")->ssim_null);
}

static void test_one_empty_image_gives_null_hausdorff(void **state) {
    (void)state;
    assert_true(find_case("one_empty")->hausdorff_null);
    assert_true(find_case("other_empty")->hausdorff_null);
    check_case(find_case("one_empty"));
    check_case(find_case("other_empty"));
}

static void test_both_empty_give_zero_hausdorff(void **state) {
    (void)state;
    const qcase *c = find_case("both_empty");
    assert_false(c->hausdorff_null);
    assert_true(c->hausdorff == 0.0);
    double hd = -1;
    assert_int_equal(ss_hausdorff(c->a, c->b, c->h, c->w, &hd), 0);
    assert_true(hd == 0.0);
    check_case(c);
}

/* energy, stored bytes and ratio recomputed here from API.md's definitions. */
static void test_energy_and_compression_follow_definitions(void **state) {
    (void)state;
    enum { M = 20, N = 12 };
    float S[N];
    uint16_t orig[M * N], recon[M * N];
    for (int i = 0; i < N; i++) S[i] = (float)(N - i) * 1.5f;
    for (int i = 0; i < M * N; i++) orig[i] = recon[i] = (uint16_t)(i * 37 % 65536);
    recon[5] ^= 1;
    for (int bits = 8; bits <= 16; bits += 8)
        for (int rank = 4; rank <= N; rank += 8) {
            ss_factors f;
            memset(&f, 0, sizeof f);
            f.m = M;
            f.n = N;
            f.bit_depth = bits;
            f.rank = rank;
            f.nsv = N;
            f.S = S;
            f.orig = orig;
            for (int k = 1; k <= rank; k++) {
                ss_quality q;
                assert_int_equal(ss_quality_compute(&f, k, recon, &q), 0);
                double num = 0, den = 0;
                for (int i = 0; i < N; i++) {
                    double s = S[i];
                    den += s * s;
                    if (i < k) num += s * s;
                }
                assert_close("energy", "defs", q.energy, num / den, 1e-14);
                long long stored = 4LL * k * (M + N + 1);
                assert_int_equal(q.stored_bytes_at_k, stored);
                assert_close("ratio", "defs", q.compression_ratio, (double)(M * N * bits / 8) / (double)stored, 1e-14);
            }
            if (rank == N) {
                ss_quality q;
                assert_int_equal(ss_quality_compute(&f, N, recon, &q), 0);
                assert_true(q.energy == 1.0);
            }
        }
}

static void test_quality_compute_rejects_bad_requests(void **state) {
    (void)state;
    uint16_t px[64] = {0};
    float S[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    ss_factors f;
    memset(&f, 0, sizeof f);
    f.m = f.n = 8;
    f.bit_depth = 8;
    f.rank = 4;
    f.nsv = 8;
    f.S = S;
    ss_quality q;
    /* no original kept: what the singular values say, the pixel metrics null */
    assert_int_equal(ss_quality_compute(&f, 2, px, &q), 0);
    assert_true(q.no_original && q.psnr_null && q.psnr_dr_null && q.ssim_null && q.hausdorff_null);
    assert_int_equal(q.rank, 4);
    assert_true(fabs(q.energy - 0.25) < 1e-12);
    f.orig = px;
    assert_int_equal(ss_quality_compute(&f, 0, px, &q), SS_EINVAL);
    assert_int_equal(ss_quality_compute(&f, 5, px, &q), SS_EINVAL); /* above the rank */
    assert_int_equal(ss_quality_compute(&f, 4, px, &q), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_8bit_pairs_match_skimage),
        cmocka_unit_test(test_random_16bit_pairs_match_skimage),
        cmocka_unit_test(test_sparse_point_sets_match_skimage_hausdorff),
        cmocka_unit_test(test_real_slices_at_rank_k_match_skimage),
        cmocka_unit_test(test_identical_images_give_zero_mse_and_null_psnr),
        cmocka_unit_test(test_images_under_7_pixels_a_side_have_null_ssim),
        cmocka_unit_test(test_one_empty_image_gives_null_hausdorff),
        cmocka_unit_test(test_both_empty_give_zero_hausdorff),
        cmocka_unit_test(test_energy_and_compression_follow_definitions),
        cmocka_unit_test(test_quality_compute_rejects_bad_requests),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
