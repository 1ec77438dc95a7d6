/* test_kernels.c - the backend registry, every CPU kernel against the float64 reference, pixel conversions */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"
#include "engine/kern_internal.h"
#include "engine/kernels.h"
#include "engine/svd.h"
#include "gpu/gpu.h"
#include "tests/util/testutil.h"

static const char *const k_names[] = {"loops3", "loops2", "loops1", "blocked",
                                      "threads", "blas",   "cuda",   "cublas"};

/* ---- helpers -------------------------------------------------------------- */

/* The reference's pixel: round half away from zero in double, then clamp. */
static int ref_pixel(double x, int maxval) {
    if (isnan(x) || x <= 0) return 0;
    double r = floor(x + 0.5);
    return r > maxval ? maxval : (int)r;
}

/* Sum over p of |U[i,p] W[p,j]|: the scale a float32 sum's error bound uses. */
static void ref_abs(const ss_factors *f, int k, double *A) {
    size_t m = (size_t)f->m, n = (size_t)f->n;
    for (size_t i = 0; i < m * n; i++) A[i] = 0;
    for (size_t i = 0; i < m; i++)
        for (int p = 0; p < k; p++)
            for (size_t j = 0; j < n; j++)
                A[i * n + j] += fabs((double)f->U[i * f->rank + p] * f->W[p * n + j]);
}

typedef struct checked {
    const ss_factors *ref_f; /* the reference below is for ref_f at ref_k */
    int ref_k;
    double *ref, *abs;
    float *C;
    uint16_t *px;
    ss_workspace *ws;
} checked;

static void checked_init(checked *c, const ss_factors *f) {
    size_t mn = (size_t)f->m * f->n;
    c->ref = malloc(mn * sizeof *c->ref);
    c->abs = malloc(mn * sizeof *c->abs);
    c->C = malloc(mn * sizeof *c->C);
    c->px = malloc(mn * sizeof *c->px);
    c->ws = ss_workspace_new();
    c->ref_f = NULL;
    assert_non_null(c->ref);
    assert_non_null(c->abs);
    assert_non_null(c->C);
    assert_non_null(c->px);
    assert_non_null(c->ws);
}

static void checked_free(checked *c) {
    free(c->ref);
    free(c->abs);
    free(c->C);
    free(c->px);
    ss_workspace_free(c->ws);
}

/* Runs backend b at k on f: floats within the float32 summation bound of the
 * float64 reference (gamma_k = k u / (1 - k u) on sum |terms|, u = 2^-24,
 * times 2 for slack), pixels within +-1 of the reference rounded and
 * clamped. Returns how many reference values fell outside 0..maxval. */
static int check_backend(const ss_backend *b, const ss_factors *f, int k, checked *c) {
    size_t mn = (size_t)f->m * f->n;
    int maxval = (1 << f->bit_depth) - 1;
    if (c->ref_f != f || c->ref_k != k) { /* the reference is the slow part */
        ss_reference_f64(f, k, c->ref);
        ref_abs(f, k, c->abs);
        c->ref_f = f;
        c->ref_k = k;
    }
    double u = ldexp(1.0, -24), gamma = 2.0 * k * u / (1.0 - k * u);

    if (b->reconstruct_f32) {
        for (size_t i = 0; i < mn; i++) c->C[i] = NAN;
        int rc = b->reconstruct_f32(f, k, c->C, c->ws);
        assert_int_equal(rc, 0);
        for (size_t i = 0; i < mn; i++) {
            double err = fabs((double)c->C[i] - c->ref[i]);
            if (!(err <= gamma * c->abs[i] + 1e-30))
                fail_msg("%s %dx%d k=%d: C[%zu] = %.9g, reference %.9g (bound %.3g)", b->name,
                         f->m, f->n, k, i, c->C[i], c->ref[i], gamma * c->abs[i]);
        }
    }
    for (size_t i = 0; i < mn; i++) c->px[i] = 0xBEEF;
    int rc = b->reconstruct(f, k, c->px, c->ws);
    assert_int_equal(rc, 0);
    int outside = 0;
    for (size_t i = 0; i < mn; i++) {
        int want = ref_pixel(c->ref[i], maxval);
        if (abs((int)c->px[i] - want) > 1)
            fail_msg("%s %dx%d k=%d %d-bit: px[%zu] = %d, reference %d (%.6f)", b->name, f->m,
                     f->n, k, f->bit_depth, i, c->px[i], want, c->ref[i]);
        outside += c->ref[i] < 0 || c->ref[i] > maxval;
        /* Same sums, so the pixel path must round exactly what the float path computes. */
        if (b->reconstruct_f32 && c->px[i] != ref_pixel((double)c->C[i], maxval))
            fail_msg("%s %dx%d k=%d: px[%zu] = %d but its float %.9g rounds to %d", b->name,
                     f->m, f->n, k, i, c->px[i], c->C[i], ref_pixel((double)c->C[i], maxval));
    }
    return outside;
}

/* ---- registry --------------------------------------------------------------- */

static void test_registry_lists_eight_in_api_order(void **state) {
    (void)state;
    assert_int_equal(ss_backend_count(), 8);
    for (int i = 0; i < 8; i++) {
        const ss_backend *b = ss_backend_at(i);
        assert_non_null(b);
        assert_string_equal(b->name, k_names[i]);
        assert_string_equal(b->device, i < 6 ? "cpu" : "gpu");
        assert_true(b->description && strlen(b->description) > 10);
        assert_non_null(b->available);
        assert_non_null(b->reconstruct);
        if (i < 6) assert_non_null(b->reconstruct_f32);
    }
    assert_null(ss_backend_at(-1));
    assert_null(ss_backend_at(8));
}

static void test_find_valid_and_names(void **state) {
    (void)state;
    char joined[256] = "";
    for (int i = 0; i < 8; i++) {
        assert_ptr_equal(ss_backend_find(k_names[i]), ss_backend_at(i));
        assert_true(ss_backend_name_valid(k_names[i]));
        strcat(joined, k_names[i]);
        strcat(joined, ", ");
    }
    strcat(joined, "auto");
    assert_string_equal(ss_backend_names(), joined);
    assert_null(ss_backend_find("auto"));
    assert_true(ss_backend_name_valid("auto"));
    assert_false(ss_backend_name_valid("Blas"));
    assert_false(ss_backend_name_valid(""));
    assert_false(ss_backend_name_valid(NULL));
    assert_null(ss_backend_find("nope"));
    assert_null(ss_backend_find(NULL));
}

static void test_gpu_backends_unavailable_with_reason(void **state) {
    (void)state;
    ss_factors *f = tu_random_factors(8, 6, 6, 8, 1);
    assert_non_null(f);
    uint16_t px[48];
    ss_workspace *ws = ss_workspace_new();
    const ss_backend *gpu[] = {ss_backend_find("cuda"), ss_backend_find("cublas")};
    for (int i = 0; i < 2; i++) {
        assert_ptr_equal(gpu[i], i ? &ss_backend_cublas : &ss_backend_cuda);
        const char *reason = NULL;
        int ok = gpu[i]->available(&reason);
#ifndef SVDSLICE_HAVE_CUDA
        assert_false(ok); /* this build has no CUDA toolkit */
#endif
        if (!ok) {
            assert_non_null(reason);
            assert_true(strlen(reason) > 0);
            assert_int_equal(gpu[i]->reconstruct(f, 6, px, ws), SS_EUNAVAIL);
        }
    }
    ss_workspace_free(ws);
    ss_factors_free(f);
}

static void test_cpu_backends_available_without_reason(void **state) {
    (void)state;
    for (int i = 0; i < 6; i++) {
        const char *reason = "unset";
        assert_true(ss_backend_at(i)->available(&reason));
        assert_null(reason);
        assert_true(ss_backend_at(i)->available(NULL));
    }
}

static void test_auto_returns_an_available_backend_that_works(void **state) {
    (void)state;
    const int shapes[][3] = {{1, 1, 1}, {256, 170, 170}, {256, 170, 10}, {400, 300, 300}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        ss_factors *f = tu_random_factors(shapes[s][0], shapes[s][1], shapes[s][2], 16, s + 1);
        assert_non_null(f);
        const ss_backend *b = ss_backend_choose(f, shapes[s][2]);
        assert_non_null(b);
        assert_true(b->available(NULL));
        if (!ss_backend_cuda.available(NULL) && !ss_backend_cublas.available(NULL))
            assert_string_equal(b->name, "blas");
        checked c;
        checked_init(&c, f);
        check_backend(b, f, shapes[s][2], &c);
        checked_free(&c);
        ss_factors_free(f);
    }
}

/* ---- kernels against the reference ---------------------------------------- */

static void test_cpu_kernels_match_reference_on_random_factors(void **state) {
    (void)state;
    const int shapes[][2] = {{1, 1}, {7, 300}, {300, 7}, {256, 170}, {513, 257}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int m = shapes[s][0], n = shapes[s][1], rank = m < n ? m : n;
        for (int bits = 8; bits <= 16; bits += 8) {
            ss_factors *f = tu_random_factors(m, n, rank, bits, 100 + s * 2 + (size_t)bits);
            assert_non_null(f);
            checked c;
            checked_init(&c, f);
            int ks[] = {1, (rank + 1) / 2, rank};
            for (int ki = 0; ki < 3; ki++)
                for (int b = 0; b < 6; b++) {
                    /* The slow loops at the biggest shape once per depth: enough. */
                    if (m == 513 && b < 3 && ki != (bits == 8 ? 1 : 2)) continue;
                    int outside = check_backend(ss_backend_at(b), f, ks[ki], &c);
                    /* At full rank the data must exercise clamping at both ends. */
                    if (rank >= 100 && ki == 2) assert_true(outside > (m * n) / 20);
                }
            checked_free(&c);
            ss_factors_free(f);
        }
    }
}

static void test_every_k_on_a_small_case(void **state) {
    (void)state;
    ss_factors *f = tu_random_factors(13, 9, 9, 16, 7);
    assert_non_null(f);
    checked c;
    checked_init(&c, f);
    for (int k = 1; k <= 9; k++)
        for (int b = 0; b < 6; b++) check_backend(ss_backend_at(b), f, k, &c);
    checked_free(&c);
    ss_factors_free(f);
}

static void test_factors_of_lower_rank_than_the_image(void **state) {
    (void)state;
    /* rank < min(m, n): U's row stride is the rank, not the width. */
    ss_factors *f = tu_random_factors(40, 33, 5, 8, 11);
    assert_non_null(f);
    checked c;
    checked_init(&c, f);
    for (int k = 1; k <= 5; k++)
        for (int b = 0; b < 6; b++) check_backend(ss_backend_at(b), f, k, &c);
    checked_free(&c);
    ss_factors_free(f);
}

static void test_k_outside_1_to_rank_is_rejected(void **state) {
    (void)state;
    ss_factors *f = tu_random_factors(10, 12, 10, 8, 3);
    assert_non_null(f);
    uint16_t px[120];
    float C[120];
    ss_workspace *ws = ss_workspace_new();
    const int bad[] = {0, -1, 11, 1 << 30};
    for (int b = 0; b < 6; b++) {
        const ss_backend *be = ss_backend_at(b);
        for (size_t i = 0; i < 4; i++) {
            memset(px, 0x5A, sizeof px);
            assert_int_equal(be->reconstruct(f, bad[i], px, ws), SS_EINVAL);
            assert_int_equal(px[0], 0x5A5A); /* nothing written */
            assert_int_equal(be->reconstruct_f32(f, bad[i], C, ws), SS_EINVAL);
            assert_non_null(strstr(ss_error(), "1..10"));
        }
        assert_int_equal(be->reconstruct(NULL, 1, px, ws), SS_EINVAL);
    }
    ss_workspace_free(ws);
    ss_factors_free(f);
}

/* Every ISA path of the blocked micro-kernel this CPU has, including the
 * partial-sum path of products deeper than one k block. */
static void test_blocked_isa_paths_match_reference(void **state) {
    (void)state;
    const char *isas[] = {"avx512", "avx2", "generic"};
    int kc = ss_blocked_kc();
    /* The last shape is deeper than one k block: partial sums go through memory. */
    const int shapes[][3] = {{37, 53, 37}, {9, 700, 9}, {kc + 3, kc + 17, kc + 3}};
    int ran = 0;
    for (size_t s = 0; s < 3; s++) {
        int r = shapes[s][2];
        ss_factors *f = tu_random_factors(shapes[s][0], shapes[s][1], r, 16, 40 + s);
        assert_non_null(f);
        checked c;
        checked_init(&c, f);
        int ks[] = {1, 2, r - 1, r}, k0 = r > kc ? 3 : 0; /* big shape: one k > KC */
        for (int ki = k0; ki < 4; ki++)
            for (size_t i = 0; i < 3; i++) {
                if (ss_blocked_select(isas[i]) != 0) continue;
                assert_string_equal(ss_blocked_isa(), isas[i]);
                ran++;
                check_backend(&ss_backend_blocked, f, ks[ki], &c);
                check_backend(&ss_backend_threads, f, ks[ki], &c);
            }
        checked_free(&c);
        ss_factors_free(f);
    }
    assert_int_equal(ss_blocked_select(NULL), 0);
    assert_true(ran >= 9); /* generic always runs */
    assert_int_equal(ss_blocked_select("sse9"), SS_EUNAVAIL);
}

/* threads computes each pixel with blocked's micro-kernel in the same order,
 * so with any team size its output must equal blocked's bit for bit. */
static void test_threads_equals_blocked_for_any_team_size(void **state) {
    (void)state;
    const int shapes[][2] = {{5, 300}, {1, 40}, {97, 61}, {513, 257}};
    const int counts[] = {1, 2, 3, 7, 64, 200};
    for (size_t s = 0; s < 4; s++) {
        int m = shapes[s][0], n = shapes[s][1], r = m < n ? m : n;
        ss_factors *f = tu_random_factors(m, n, r, 16, 60 + s);
        assert_non_null(f);
        size_t mn = (size_t)m * n;
        float *want = malloc(mn * sizeof *want), *got = malloc(mn * sizeof *got);
        uint16_t *wpx = malloc(mn * 2), *gpx = malloc(mn * 2);
        ss_workspace *ws = ss_workspace_new();
        assert_int_equal(ss_backend_blocked.reconstruct_f32(f, r, want, ws), 0);
        assert_int_equal(ss_backend_blocked.reconstruct(f, r, wpx, ws), 0);
        for (size_t t = 0; t < sizeof counts / sizeof counts[0]; t++) {
            ss_kernels_set_threads(counts[t]);
            assert_int_equal(ss_kernels_threads(), counts[t]);
            memset(got, 0xFF, mn * sizeof *got);
            memset(gpx, 0xFF, mn * 2);
            assert_int_equal(ss_backend_threads.reconstruct_f32(f, r, got, ws), 0);
            assert_int_equal(ss_backend_threads.reconstruct(f, r, gpx, ws), 0);
            assert_memory_equal(got, want, mn * sizeof *got);
            assert_memory_equal(gpx, wpx, mn * 2);
        }
        ss_kernels_set_threads(0);
        assert_true(ss_kernels_threads() >= 1);
        free(want), free(got), free(wpx), free(gpx);
        ss_workspace_free(ws);
        ss_factors_free(f);
    }
}

typedef struct caller {
    const ss_factors *f;
    const uint16_t *want; /* blas pixels: every backend must be within +-1 */
    int errors;
} caller;

static void *call_many(void *arg) {
    caller *c = arg;
    size_t mn = (size_t)c->f->m * c->f->n;
    uint16_t *px = malloc(mn * 2);
    ss_workspace *ws = ss_workspace_new();
    const ss_backend *bs[] = {&ss_backend_threads, &ss_backend_blocked, &ss_backend_blas};
    for (int it = 0; it < 30 && px && ws; it++) {
        const ss_backend *b = bs[it % 3];
        if (b->reconstruct(c->f, c->f->rank, px, ws) != 0) c->errors++;
        for (size_t i = 0; i < mn; i++)
            if (abs((int)px[i] - (int)c->want[i]) > 1) {
                c->errors++;
                break;
            }
    }
    if (!px || !ws) c->errors++;
    free(px);
    ss_workspace_free(ws);
    return NULL;
}

static void test_concurrent_callers_get_their_own_results(void **state) {
    (void)state;
    enum { NT = 4 };
    ss_factors *f[NT];
    uint16_t *want[NT];
    caller c[NT];
    pthread_t th[NT];
    ss_kernels_set_threads(3);
    for (int i = 0; i < NT; i++) {
        f[i] = tu_random_factors(120 + 13 * i, 90 + 7 * i, 90 + 7 * i, i % 2 ? 8 : 16, 80 + i);
        assert_non_null(f[i]);
        want[i] = malloc((size_t)f[i]->m * f[i]->n * 2);
        ss_workspace *ws = ss_workspace_new();
        assert_int_equal(ss_backend_blas.reconstruct(f[i], f[i]->rank, want[i], ws), 0);
        ss_workspace_free(ws);
        c[i] = (caller){f[i], want[i], 0};
    }
    for (int i = 0; i < NT; i++) assert_int_equal(pthread_create(&th[i], NULL, call_many, &c[i]), 0);
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(c[i].errors, 0);
        free(want[i]);
        ss_factors_free(f[i]);
    }
    ss_kernels_set_threads(0);
}

/* Real MRI slices, factorised by the engine: every CPU kernel within the
 * reference's +-1 at several k, 8-bit as shipped and widened to 16-bit, and
 * the full-rank reconstruction within +-1 of the original pixels. */
static void test_cpu_kernels_on_real_slices(void **state) {
    (void)state;
    const char *files[] = {"BrainProtonDensitySlice.png", "BrainMidSagittalSlice.png"};
    int loaded = 0;
    for (size_t fi = 0; fi < 2; fi++) {
        ss_image img;
        int rc = tu_load_slice(files[fi], &img);
        if (rc == 1) continue;
        assert_int_equal(rc, 0);
        loaded++;
        for (int bits = 8; bits <= 16; bits += 8) {
            if (bits == 16) {
                ss_pixels_convert_bits(img.px, (size_t)img.width * img.height, 8, 16, img.px);
                img.bit_depth = 16;
            }
            ss_factors *f = NULL;
            assert_int_equal(ss_svd_factor(&img, 0, 0, &f), 0);
            checked c;
            checked_init(&c, f);
            int ks[] = {f->rank, 50, 10, 1};
            for (int ki = 0; ki < 4; ki++)
                for (int b = 0; b < 6; b++) {
                    if (b < 3 && ki == 0 && bits == 16) continue; /* slow loops: once per slice */
                    check_backend(ss_backend_at(b), f, ks[ki], &c);
                    if (ki == 0)
                        for (size_t i = 0; i < (size_t)f->m * f->n; i++)
                            if (abs((int)c.px[i] - (int)img.px[i]) > 1)
                                fail_msg("%s %s %d-bit full rank: px[%zu] = %d, original %d",
                                         ss_backend_at(b)->name, files[fi], bits, i, c.px[i],
                                         img.px[i]);
                }
            checked_free(&c);
            ss_factors_free(f);
        }
        ss_image_free(&img);
    }
    if (!loaded) skip();
}

/* ---- workspace and conversions ------------------------------------------- */

static void test_workspace_grows_and_keeps_alignment(void **state) {
    (void)state;
    ss_workspace *ws = ss_workspace_new();
    assert_non_null(ws);
    float *a = ss_workspace_floats(ws, 10);
    assert_non_null(a);
    a[9] = 1.0f;
    float *b = ss_workspace_floats(ws, 5); /* smaller: same buffer */
    assert_ptr_equal(a, b);
    float *c = ss_workspace_floats(ws, 1000000);
    assert_non_null(c);
    c[999999] = 2.0f;
    assert_int_equal((uintptr_t)c % 64, 0);
    assert_null(ss_workspace_floats(NULL, 4));
    ss_workspace_free(ws);
    ss_workspace_free(NULL);
}

static void test_pixels_from_float_rounds_half_away_and_clamps(void **state) {
    (void)state;
    const float in[] = {NAN, -INFINITY, -1.0f, -0.5f, 0.0f, 0.49999997f, 0.5f, 1.5f,
                        2.5f, 254.5f, 255.4f, 1e30f, INFINITY, 100.49f};
    const uint16_t want8[] = {0, 0, 0, 0, 0, 0, 1, 2, 3, 255, 255, 255, 255, 100};
    const uint16_t want16[] = {0, 0, 0, 0, 0, 0, 1, 2, 3, 255, 255, 65535, 65535, 100};
    uint16_t out[14];
    ss_pixels_from_float(in, 14, 255, out);
    assert_memory_equal(out, want8, sizeof out);
    ss_pixels_from_float(in, 14, 65535, out);
    assert_memory_equal(out, want16, sizeof out);
    const float top[] = {65534.5f, 65534.49f, 65535.7f, 65536.0f};
    const uint16_t wtop[] = {65535, 65534, 65535, 65535};
    ss_pixels_from_float(top, 4, 65535, out);
    assert_memory_equal(out, wtop, sizeof wtop);
}

static void test_convert_bits_edges(void **state) {
    (void)state;
    const uint16_t in16[] = {0, 128, 129, 257, 385, 386, 65406, 65407, 65535};
    const uint16_t want8[] = {0, 0, 1, 1, 1, 2, 254, 255, 255};
    uint16_t out[9];
    ss_pixels_convert_bits(in16, 9, 16, 8, out);
    assert_memory_equal(out, want8, sizeof out);
    const uint16_t in8[] = {0, 1, 128, 254, 255};
    const uint16_t want16[] = {0, 257, 32896, 65278, 65535};
    ss_pixels_convert_bits(in8, 5, 8, 16, out);
    assert_memory_equal(out, want16, sizeof want16);
    uint16_t same[] = {7, 300, 65535};
    ss_pixels_convert_bits(same, 3, 16, 16, out);
    assert_memory_equal(out, same, sizeof same);
    ss_pixels_convert_bits(same, 3, 16, 8, same); /* in place */
    assert_int_equal(same[0], 0);
    assert_int_equal(same[1], 1);
    assert_int_equal(same[2], 255);
}

static void test_window_formula_edges(void **state) {
    (void)state;
    /* center 100, width 50: (v - 75) / 50 * 255 */
    const uint16_t in[] = {0, 74, 75, 76, 100, 124, 125, 126, 65535};
    const uint16_t want[] = {0, 0, 0, 5, 128, 250, 255, 255, 255};
    uint16_t out[9];
    ss_pixels_window(in, 9, 100.0, 50.0, out);
    assert_memory_equal(out, want, sizeof want);
    /* center 10, width 2: (v - 9) * 127.5, an exact tie at v = 10 rounds up */
    const uint16_t in2[] = {8, 9, 10, 11};
    const uint16_t want2[] = {0, 0, 128, 255};
    ss_pixels_window(in2, 4, 10.0, 2.0, out);
    assert_memory_equal(out, want2, sizeof want2);
}

static void test_reference_sums_in_double(void **state) {
    (void)state;
    /* 1e8 + 1 - 1e8 loses the 1 in float32 but not in float64. */
    ss_factors *f = NULL;
    assert_int_equal(ss_factors_alloc(1, 1, 1, 16, 0, &f), 0);
    ss_factors_free(f);
    assert_int_equal(ss_factors_alloc(3, 3, 3, 16, 0, &f), 0);
    f->U[0] = 1, f->U[1] = 1, f->U[2] = 1;
    f->W[0] = 1e8f, f->W[3] = 1.0f, f->W[6] = -1e8f;
    double C[9];
    ss_reference_f64(f, 3, C);
    assert_true(C[0] == 1.0);
    ss_reference_f64(f, 1, C);
    assert_true(C[0] == 1e8);
    ss_factors_free(f);
}

int main(void) {
    ss_gpu_register(); /* the GPU layer fills the registry's cuda and cublas slots */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_lists_eight_in_api_order),
        cmocka_unit_test(test_find_valid_and_names),
        cmocka_unit_test(test_gpu_backends_unavailable_with_reason),
        cmocka_unit_test(test_cpu_backends_available_without_reason),
        cmocka_unit_test(test_auto_returns_an_available_backend_that_works),
        cmocka_unit_test(test_cpu_kernels_match_reference_on_random_factors),
        cmocka_unit_test(test_every_k_on_a_small_case),
        cmocka_unit_test(test_factors_of_lower_rank_than_the_image),
        cmocka_unit_test(test_k_outside_1_to_rank_is_rejected),
        cmocka_unit_test(test_blocked_isa_paths_match_reference),
        cmocka_unit_test(test_threads_equals_blocked_for_any_team_size),
        cmocka_unit_test(test_concurrent_callers_get_their_own_results),
        cmocka_unit_test(test_cpu_kernels_on_real_slices),
        cmocka_unit_test(test_workspace_grows_and_keeps_alignment),
        cmocka_unit_test(test_pixels_from_float_rounds_half_away_and_clamps),
        cmocka_unit_test(test_convert_bits_edges),
        cmocka_unit_test(test_window_formula_edges),
        cmocka_unit_test(test_reference_sums_in_double),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
