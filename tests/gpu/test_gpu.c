/* test_gpu.c - the cuda and cublas backends against the float64 reference; skipped without a GPU */
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
#include <time.h>
#include <unistd.h>

#include "util/error.h"
#include "engine/image.h"
#include "engine/kernels.h"
#include "engine/svd.h"
#include "gpu/gpu.h"
#include "tests/util/testutil.h"

static const ss_backend *const k_gpu[] = {&ss_backend_cuda, &ss_backend_cublas};

/* Skips the calling test, with the reason, when no GPU can run here. */
#define REQUIRE_GPU()                                                        \
    do {                                                                     \
        const char *why_ = NULL;                                             \
        if (!ss_gpu_available(&why_)) {                                      \
            print_message("skipped: %s\n", why_ ? why_ : "no GPU");          \
            skip();                                                          \
        }                                                                    \
    } while (0)

/* Largest |pixel - round-and-clamp(float64 product)|. */
static int max_err_vs_reference(const ss_factors *f, int k, const uint16_t *px) {
    size_t n = (size_t)f->m * f->n;
    double *C = malloc(n * sizeof *C);
    assert_non_null(C);
    ss_reference_f64(f, k, C);
    double maxval = f->bit_depth == 8 ? 255.0 : 65535.0;
    int worst = 0;
    for (size_t i = 0; i < n; i++) {
        double r = round(C[i]);
        r = r < 0 ? 0 : r > maxval ? maxval : r;
        int d = abs((int)px[i] - (int)r);
        if (d > worst) worst = d;
    }
    free(C);
    return worst;
}

static void check_backend(const ss_backend *b, const ss_factors *f, int k) {
    uint16_t *px = malloc((size_t)f->m * f->n * sizeof *px);
    assert_non_null(px);
    int rc = b->reconstruct(f, k, px, NULL);
    if (rc) fail_msg("%s %dx%d k=%d: %s", b->name, f->m, f->n, k, ss_error());
    int err = max_err_vs_reference(f, k, px);
    if (err > 1) fail_msg("%s %dx%d k=%d: max error %d", b->name, f->m, f->n, k, err);
    free(px);
}

/* Without a GPU (this machine): listed unavailable with a reason, and every
 * entry point answers SS_EUNAVAIL instead of crashing. */
static void test_unavailable_backends_say_why(void **state) {
    (void)state;
    const char *why = NULL;
    if (ss_gpu_available(&why)) {
        print_message("skipped: a GPU is available here\n");
        skip();
    }
    ss_factors *f = tu_random_factors(16, 12, 12, 8, 1);
    assert_non_null(f);
    uint16_t px[16 * 12];
    for (int i = 0; i < 2; i++) {
        const char *reason = NULL;
        assert_int_equal(k_gpu[i]->available(&reason), 0);
        assert_non_null(reason);
        assert_true(strlen(reason) > 0);
        assert_int_equal(k_gpu[i]->reconstruct(f, 4, px, NULL), SS_EUNAVAIL);
        assert_true(strlen(ss_error()) > 0);
        ss_gpu_item items[2] = {{f, 3, px, 99, NULL}, {f, 5, px, 99, NULL}};
        assert_int_equal(ss_gpu_run_batch(k_gpu[i], items, 2, NULL), SS_EUNAVAIL);
        assert_int_equal(items[0].status, SS_EUNAVAIL);
        assert_int_equal(items[1].status, SS_EUNAVAIL);
    }
    ss_factors_free(f);
}

/* Random factors of awkward shapes and both depths, several k each. */
static void test_random_shapes_match_reference(void **state) {
    (void)state;
    REQUIRE_GPU();
    static const int shapes[][2] = {{1, 1}, {1, 40}, {40, 1}, {31, 33}, {33, 31}, {64, 64},
                                    {100, 7}, {7, 100}, {256, 170}, {300, 301}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int m = shapes[s][0], n = shapes[s][1], r = m < n ? m : n;
        for (int bits = 8; bits <= 16; bits += 8) {
            ss_factors *f = tu_random_factors(m, n, r, bits, 100 + s * 2 + (unsigned)bits);
            assert_non_null(f);
            snprintf(f->id, sizeof f->id, "rand-%zu-%d", s, bits);
            const int ks[] = {1, (r + 1) / 2, r};
            for (int b = 0; b < 2; b++)
                for (int i = 0; i < 3; i++) check_backend(k_gpu[b], f, ks[i]);
            ss_factors_free(f);
        }
    }
}

/* Every k on a small case, with and without an id (resident vs per-batch upload). */
static void test_every_k_small_case(void **state) {
    (void)state;
    REQUIRE_GPU();
    ss_factors *f = tu_random_factors(37, 23, 23, 16, 7);
    assert_non_null(f);
    for (int pass = 0; pass < 2; pass++) {
        if (pass) snprintf(f->id, sizeof f->id, "every-k");
        for (int b = 0; b < 2; b++)
            for (int k = 1; k <= f->rank; k++) check_backend(k_gpu[b], f, k);
    }
    ss_factors_free(f);
}

/* Float items (volumes of any data type: values far outside the pixel
 * range, negative too) mixed with pixel items in one batch of each backend:
 * each product within float accumulation error of the float64 one (2 k eps
 * sum |U_ip W_pj|), the pixels within 1. */
static void test_float_items_in_mixed_batch(void **state) {
    (void)state;
    REQUIRE_GPU();
    enum { NI = 8 };
    static const int sh[NI][3] = {{217, 181, 50}, {1, 1, 1}, {37, 20, 17}, {33, 31, 31},
                                  {7, 300, 7},    {64, 65, 33}, {128, 128, 50}, {100, 3, 2}};
    ss_factors *fs[NI];
    ss_gpu_item items[NI];
    memset(items, 0, sizeof items);
    for (int i = 0; i < NI; i++) {
        int m = sh[i][0], n = sh[i][1], r = m < n ? m : n;
        fs[i] = tu_random_factors(m, n, r, 16, 500 + i);
        assert_non_null(fs[i]);
        if (i % 2 == 0)
            for (size_t p = 0; p < (size_t)m * r; p++) fs[i]->U[p] *= -3000.0f;
        if (i != 4) snprintf(fs[i]->id, sizeof fs[i]->id, "float-%d", i); /* 4: no id */
    }
    for (int b = 0; b < 2; b++) {
        for (int i = 0; i < NI; i++) {
            const ss_factors *f = fs[i];
            items[i].f = f;
            items[i].k = sh[i][2];
            items[i].status = 99;
            if (i % 2 == 0) items[i].out_f32 = malloc((size_t)f->m * f->n * sizeof(float));
            else items[i].out = malloc((size_t)f->m * f->n * sizeof(uint16_t));
        }
        assert_int_equal(ss_gpu_run_batch(k_gpu[b], items, NI, NULL), 0);
        for (int i = 0; i < NI; i++) {
            const ss_factors *f = fs[i];
            assert_int_equal(items[i].status, 0);
            if (items[i].out) {
                assert_true(max_err_vs_reference(f, items[i].k, items[i].out) <= 1);
            } else {
                for (int r = 0; r < f->m; r++)
                    for (int c = 0; c < f->n; c++) {
                        double ref = 0, mag = 0;
                        for (int p = 0; p < items[i].k; p++) {
                            double t = (double)f->U[(size_t)r * f->rank + p] * f->W[(size_t)p * f->n + c];
                            ref += t;
                            mag += fabs(t);
                        }
                        double got = items[i].out_f32[(size_t)r * f->n + c];
                        if (!(fabs(got - ref) <= 2.0 * items[i].k * FLT_EPSILON * mag + 1e-6))
                            fail_msg("%s item %d (%d, %d): %g, reference %g", k_gpu[b]->name, i, r, c, got, ref);
                    }
            }
            free(items[i].out);
            free(items[i].out_f32);
            items[i].out = NULL;
            items[i].out_f32 = NULL;
        }
    }
    for (int i = 0; i < NI; i++) ss_factors_free(fs[i]);
}

static ss_factors *load_real(const char *name) {
    ss_image img;
    if (tu_load_slice(name, &img)) return NULL;
    ss_factors *f = NULL;
    int rc = ss_svd_factor(&img, 0, 0, &f);
    if (rc == 0) ss_content_id(&img, f->rank, f->id);
    ss_image_free(&img);
    return rc ? NULL : f;
}

static const char *const k_slices[] = {"BrainProtonDensitySlice.png", "BrainT1Slice.png",
                                       "BrainMidSagittalSlice.png", "FatMRISlice.png"};

/* Real MRI slices (SVDSLICE_TEST_DATA) at a spread of k. */
static void test_real_slices_match_reference(void **state) {
    (void)state;
    REQUIRE_GPU();
    int loaded = 0;
    for (size_t s = 0; s < sizeof k_slices / sizeof k_slices[0]; s++) {
        ss_factors *f = load_real(k_slices[s]);
        if (!f) continue;
        loaded++;
        const int ks[] = {1, 10, 50, f->rank};
        for (int b = 0; b < 2; b++)
            for (int i = 0; i < 4; i++)
                if (ks[i] <= f->rank) check_backend(k_gpu[b], f, ks[i]);
        ss_factors_free(f);
    }
    if (!loaded) {
        print_message("skipped: no slices under SVDSLICE_TEST_DATA\n");
        skip();
    }
}

/* One batch of mixed slices, depths and k (and one bad k): each item equals
 * the reference, the bad one alone fails; a tiny device budget forces
 * evictions between batches without changing results. */
static void test_mixed_batches(void **state) {
    (void)state;
    REQUIRE_GPU();
    enum { NF = 6, NI = 40 };
    ss_factors *fs[NF];
    for (int i = 0; i < NF; i++) {
        int m = 20 + 37 * i, n = 150 - 19 * i, r = m < n ? m : n;
        fs[i] = tu_random_factors(m, n, r, i % 2 ? 16 : 8, 500 + i);
        assert_non_null(fs[i]);
        if (i != 3) snprintf(fs[i]->id, sizeof fs[i]->id, "mixed-%d", i); /* 3: no id */
    }
    for (int round_ = 0; round_ < 3; round_++) {
        if (round_ == 2) ss_gpu_set_cache_bytes(64 << 10); /* smaller than one slice */
        for (int b = 0; b < 2; b++) {
            ss_gpu_item items[NI];
            memset(items, 0, sizeof items); /* out_f32 NULL: pixel items */
            for (int i = 0; i < NI; i++) {
                const ss_factors *f = fs[(i * 5 + round_) % NF];
                items[i].f = f;
                items[i].k = 1 + (i * 13) % f->rank;
                items[i].out = malloc((size_t)f->m * f->n * sizeof(uint16_t));
                items[i].status = 99;
            }
            items[17].k = items[17].f->rank + 1;
            double ms = -1;
            assert_int_equal(ss_gpu_run_batch(k_gpu[b], items, NI, &ms), 0);
            assert_true(ms >= 0);
            for (int i = 0; i < NI; i++) {
                if (i == 17) {
                    assert_int_equal(items[i].status, SS_EINVAL);
                } else {
                    assert_int_equal(items[i].status, 0);
                    int err = max_err_vs_reference(items[i].f, items[i].k, items[i].out);
                    if (err > 1) fail_msg("%s batch item %d: max error %d", k_gpu[b]->name, i, err);
                }
                free(items[i].out);
            }
        }
    }
    ss_gpu_stats st;
    ss_gpu_get_stats(&st);
    assert_true(st.hits > 0);      /* rounds 0-1 reuse resident factors */
    assert_true(st.evictions > 0); /* round 2's budget */
    assert_true(st.resident_bytes <= (64 << 10) || st.resident_slices == 0);
    ss_gpu_set_cache_bytes((size_t)256 << 20);
    ss_gpu_release();
    for (int i = 0; i < NF; i++) ss_factors_free(fs[i]);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct busy_gpu {
    ss_gpu_item *items;
    int n, stop;
} busy_gpu;

static void *run_batches(void *arg) {
    busy_gpu *b = arg;
    while (!__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE)) ss_gpu_run_batch(&ss_backend_cuda, b->items, b->n, NULL);
    return NULL;
}

/* ss_gpu_available answers at once while batches run back to back: /backends
 * and `auto` call it on the HTTP polling thread, and a batch holds the GPU
 * lock through its synchronisation. Before it was lock-free, each call waited
 * for the running batch (half a batch on average). */
static void test_available_never_waits_on_a_batch(void **state) {
    (void)state;
    REQUIRE_GPU();
    enum { MAXN = 256 };
    ss_factors *f = tu_random_factors(1024, 1024, 1024, 16, 700);
    assert_non_null(f);
    snprintf(f->id, sizeof f->id, "busy");
    ss_gpu_item *items = calloc(MAXN, sizeof *items);
    assert_non_null(items);
    for (int i = 0; i < MAXN; i++) {
        items[i].f = f;
        items[i].k = 1024;
        items[i].out = malloc((size_t)f->m * f->n * sizeof(uint16_t));
        assert_non_null(items[i].out);
    }
    /* a batch long enough that a call landing inside one is measurable */
    int n = 4;
    double batch_s = 0;
    for (;;) {
        double t0 = now_s();
        assert_int_equal(ss_gpu_run_batch(&ss_backend_cuda, items, n, NULL), 0);
        batch_s = now_s() - t0;
        if (batch_s >= 0.1 || n == MAXN) break;
        n *= 2;
    }
    if (batch_s < 0.02) {
        print_message("skipped: a batch of %d takes only %.1f ms here\n", n, batch_s * 1e3);
    } else {
        busy_gpu b = {items, n, 0};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, run_batches, &b), 0);
        double worst = 0;
        for (int i = 0; i < 20; i++) {
            usleep((useconds_t)(batch_s / 3 * 1e6));
            double t0 = now_s();
            assert_int_equal(ss_gpu_available(NULL), 1);
            double dt = now_s() - t0;
            if (dt > worst) worst = dt;
        }
        __atomic_store_n(&b.stop, 1, __ATOMIC_RELEASE);
        pthread_join(th, NULL);
        if (worst > batch_s / 10)
            fail_msg("ss_gpu_available took up to %.1f ms during %.1f ms batches", worst * 1e3, batch_s * 1e3);
    }
    for (int i = 0; i < MAXN; i++) free(items[i].out);
    free(items);
    ss_gpu_release();
    ss_factors_free(f);
}

static void test_bad_arguments(void **state) {
    (void)state;
    REQUIRE_GPU();
    ss_factors *f = tu_random_factors(10, 10, 10, 8, 9);
    assert_non_null(f);
    uint16_t px[100];
    for (int b = 0; b < 2; b++) {
        assert_int_equal(k_gpu[b]->reconstruct(f, 0, px, NULL), SS_EINVAL);
        assert_int_equal(k_gpu[b]->reconstruct(f, 11, px, NULL), SS_EINVAL);
    }
    assert_int_equal(ss_gpu_run_batch(ss_backend_find("blas"), NULL, 0, NULL), SS_EINVAL);
    ss_factors_free(f);
}

int main(void) {
    ss_gpu_register(); /* the GPU layer fills the registry's cuda and cublas slots */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unavailable_backends_say_why),
        cmocka_unit_test(test_random_shapes_match_reference),
        cmocka_unit_test(test_every_k_small_case),
        cmocka_unit_test(test_real_slices_match_reference),
        cmocka_unit_test(test_mixed_batches),
        cmocka_unit_test(test_float_items_in_mixed_batch),
        cmocka_unit_test(test_available_never_waits_on_a_batch),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
