/* test_bench.c - the bench refuses to time a wrong backend, skips unavailable ones; phantom; SVG bars */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"
#include "gpu/gpu.h"
#include "engine/kernels.h"
#include "engine/svd.h"
#include "cli/bench.h"
#include "cli/phantom.h"

/* Calls made to the test backends below, so a test can see what was timed. */
static int g_calls;

static int yes(const char **reason) {
    (void)reason;
    return 1;
}

static int no(const char **reason) {
    *reason = "no such device in this test";
    return 0;
}

/* Correct pixels from the registry's blas, then shifted by 3 levels. */
static int off_by_3(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws) {
    g_calls++;
    int rc = ss_backend_find("blas")->reconstruct(f, k, out, ws);
    for (size_t i = 0; i < (size_t)f->m * f->n; i++) out[i] = out[i] >= 3 ? out[i] - 3 : out[i] + 3;
    return rc;
}

static int counted_blas(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws) {
    g_calls++;
    return ss_backend_find("blas")->reconstruct(f, k, out, ws);
}

/* Float output 0.75 off everywhere: pixels may still round within +-1, floats do not. */
static int float_off(const ss_factors *f, int k, float *C, ss_workspace *ws) {
    g_calls++;
    (void)ws;
    double *ref = malloc((size_t)f->m * f->n * sizeof *ref);
    if (!ref) return SS_ENOMEM;
    ss_reference_f64(f, k, ref);
    for (size_t i = 0; i < (size_t)f->m * f->n; i++) C[i] = (float)(ref[i] + 0.75);
    free(ref);
    return 0;
}

static int fails(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws) {
    (void)f; (void)k; (void)out; (void)ws;
    g_calls++;
    return ss_fail(SS_EIO, "kernel exploded");
}

static const ss_backend k_wrong = {"wrong", "cpu", "off by three", yes, off_by_3, NULL};
static const ss_backend k_float_wrong = {"fwrong", "cpu", "floats off", yes, counted_blas, float_off};
static const ss_backend k_absent = {"absent", "gpu", "never here", no, counted_blas, NULL};
static const ss_backend k_failing = {"failing", "cpu", "returns an error", yes, fails, NULL};

typedef struct fixture {
    ss_factors *f;
    double *ref;
    int k;
} fixture;

static int setup(void **state) {
    fixture *fx = calloc(1, sizeof *fx);
    ss_image img;
    if (!fx || ss_phantom(64, 48, 8, &img)) return -1;
    int rc = ss_svd_factor(&img, 0, 0, &fx->f);
    ss_image_free(&img);
    fx->k = 20;
    fx->ref = malloc((size_t)64 * 48 * sizeof *fx->ref);
    if (rc || !fx->ref) return -1;
    ss_reference_f64(fx->f, fx->k, fx->ref);
    *state = fx;
    return 0;
}

static int teardown(void **state) {
    fixture *fx = *state;
    ss_factors_free(fx->f);
    free(fx->ref);
    free(fx);
    return 0;
}

static void test_wrong_pixels_are_reported_and_not_timed(void **state) {
    fixture *fx = *state;
    ss_bench_row row;
    g_calls = 0;
    assert_int_equal(ss_bench_backend(&k_wrong, fx->f, fx->k, fx->ref, 5, &row), 0);
    assert_string_equal(row.status, "wrong");
    assert_int_equal(g_calls, 1); /* the check only */
    assert_true(isnan(row.median_ms) && isnan(row.min_ms) && isnan(row.gflops));
    assert_true(row.max_abs_err >= 2.0);
    assert_non_null(strstr(row.error, "reference"));
}

static void test_wrong_floats_are_reported_and_not_timed(void **state) {
    fixture *fx = *state;
    ss_bench_row row;
    g_calls = 0;
    assert_int_equal(ss_bench_backend(&k_float_wrong, fx->f, fx->k, fx->ref, 5, &row), 0);
    assert_string_equal(row.status, "wrong");
    assert_true(g_calls <= 2); /* float check + pixel check, no timing */
    assert_true(fabs(row.max_abs_err - 0.75) < 1e-3);
    assert_true(isnan(row.median_ms));
}

static void test_right_backend_is_timed_repeat_times(void **state) {
    fixture *fx = *state;
    ss_bench_row row;
    const ss_backend good = {"good", "cpu", "blas, counted", yes, counted_blas, NULL};
    g_calls = 0;
    assert_int_equal(ss_bench_backend(&good, fx->f, fx->k, fx->ref, 7, &row), 0);
    assert_string_equal(row.status, "ok");
    assert_string_equal(row.error, "");
    assert_true(g_calls >= 1 + 2 + 7); /* check, warm-up, timed runs */
    assert_true(row.median_ms > 0 && row.min_ms <= row.median_ms);
    assert_true(fabs(row.gflops - 2.0 * 64 * 48 * fx->k / (row.median_ms * 1e6)) < 1e-9 * row.gflops);
    assert_true(row.max_abs_err <= 1.0);
    assert_int_equal(row.repeat, 7);
    assert_int_equal(row.height, 64);
    assert_int_equal(row.width, 48);
}

static void test_unavailable_backend_is_skipped_with_reason(void **state) {
    fixture *fx = *state;
    ss_bench_row row;
    g_calls = 0;
    assert_int_equal(ss_bench_backend(&k_absent, fx->f, fx->k, fx->ref, 5, &row), 0);
    assert_string_equal(row.status, "skipped");
    assert_string_equal(row.error, "no such device in this test");
    assert_int_equal(g_calls, 0);
    assert_true(isnan(row.max_abs_err) && isnan(row.median_ms));
}

static void test_failing_backend_reports_its_error(void **state) {
    fixture *fx = *state;
    ss_bench_row row;
    assert_int_equal(ss_bench_backend(&k_failing, fx->f, fx->k, fx->ref, 5, &row), 0);
    assert_string_equal(row.status, "error");
    assert_string_equal(row.error, "kernel exploded");
}

static void test_registry_cpu_backends_pass_the_check(void **state) {
    fixture *fx = *state;
    for (int i = 0; i < ss_backend_count(); i++) {
        const ss_backend *b = ss_backend_at(i);
        const char *reason;
        if (!b->available(&reason)) continue;
        ss_bench_row row;
        assert_int_equal(ss_bench_backend(b, fx->f, fx->k, fx->ref, 2, &row), 0);
        if (strcmp(row.status, "ok") != 0) fail_msg("%s: %s %s", b->name, row.status, row.error);
        assert_true(row.max_abs_err < SS_BENCH_TOL_FLOAT);
    }
    ss_bench_row row;
    assert_int_equal(ss_bench_sgemm(fx->f, fx->k, fx->ref, 3, &row), 0);
    assert_string_equal(row.status, "baseline");
    assert_string_equal(row.backend, "sgemm");
    assert_true(row.max_abs_err < 1e-2 && row.median_ms > 0);
}

static void test_phantom_is_a_head_in_both_depths(void **state) {
    (void)state;
    ss_image a, b;
    assert_int_equal(ss_phantom(256, 170, 8, &a), 0);
    assert_int_equal(ss_phantom(256, 170, 16, &b), 0);
    assert_int_equal(a.height, 256);
    assert_int_equal(a.width, 170);
    assert_int_equal(b.bit_depth, 16);
    int max8 = 0, zeros = 0;
    for (size_t i = 0; i < (size_t)256 * 170; i++) {
        if (a.px[i] > max8) max8 = a.px[i];
        zeros += a.px[i] == 0;
        /* same picture, full 16-bit range: within one 8-bit rounding step */
        assert_true(abs((int)b.px[i] - 257 * (int)a.px[i]) <= 129);
    }
    assert_int_equal(max8, 255);        /* the skull rim is the brightest */
    assert_int_equal(a.px[0], 0);       /* corners are outside the head */
    assert_int_equal(a.px[256 * 170 - 1], 0);
    /* zero: outside the skull ellipse (1 - pi*0.69*0.92/4 = 50.1% of the frame)
     * plus the two ventricles, whose -0.2 cancels the brain's 0.2 */
    double zf = zeros / (256.0 * 170);
    assert_true(zf > 0.50 && zf < 0.62);
    assert_true(a.px[128 * 170 + 85] > 0 && a.px[128 * 170 + 85] < 128); /* brain inside the rim */
    ss_image_free(&a);
    ss_image_free(&b);
    assert_int_equal(ss_phantom(0, 170, 8, &a), SS_EINVAL);
    assert_int_equal(ss_phantom(256, 170, 12, &a), SS_EINVAL);
}

static void test_plot_draws_one_bar_per_timed_row(void **state) {
    (void)state;
    ss_bench_row rows[5];
    memset(rows, 0, sizeof rows);
    const char *names[5] = {"blas", "blas", "loops3", "cuda", "sgemm"};
    const int ks[5] = {50, 10, 50, 50, 50};
    const double ms[5] = {0.05, 0.01, 20.0, NAN, 0.04};
    for (int i = 0; i < 5; i++) {
        snprintf(rows[i].backend, sizeof rows[i].backend, "%s", names[i]);
        rows[i].k = ks[i];
        rows[i].median_ms = ms[i];
        rows[i].gflops = 1.0;
        rows[i].status = i == 3 ? "skipped" : i == 4 ? "baseline" : "ok";
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    assert_non_null(fp);
    assert_int_equal(ss_bench_plot_svg(fp, rows, 5, "a <title> & more"), 0);
    fclose(fp);
    int bars = 0;
    for (const char *p = buf; (p = strstr(p, "class=\"bar\"")); p++) bars++;
    assert_int_equal(bars, 4);
    assert_null(strstr(buf, "data-backend=\"cuda\""));
    assert_non_null(strstr(buf, "a &lt;title&gt; &amp; more"));
    /* decades from 0.01 ms to 100 ms enclose 0.01 .. 20 ms */
    assert_non_null(strstr(buf, ">0.01 ms<"));
    assert_non_null(strstr(buf, ">100 ms<"));
    assert_non_null(strstr(buf, "sgemm (baseline)"));
    free(buf);
}

int main(void) {
    ss_gpu_register(); /* the GPU layer fills the registry's cuda and cublas slots */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wrong_pixels_are_reported_and_not_timed),
        cmocka_unit_test(test_wrong_floats_are_reported_and_not_timed),
        cmocka_unit_test(test_right_backend_is_timed_repeat_times),
        cmocka_unit_test(test_unavailable_backend_is_skipped_with_reason),
        cmocka_unit_test(test_failing_backend_reports_its_error),
        cmocka_unit_test(test_registry_cpu_backends_pass_the_check),
        cmocka_unit_test(test_phantom_is_a_head_in_both_depths),
        cmocka_unit_test(test_plot_draws_one_bar_per_timed_row),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
