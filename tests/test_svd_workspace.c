/* test_svd_workspace.c - ss_svd_workspace_bytes against what ss_svd_factor really holds at its peak
 *
 * The server reserves this estimate from its memory budget before a worker factorises an upload,
 * so it must never be below the real peak, and not far above it either (or the budget admits too
 * few). This binary is linked with --wrap for malloc, calloc, realloc and free: every allocation the
 * project's own code makes goes through the counters below (LAPACK allocates nothing of its own). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/svd.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t c, size_t n);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t c, size_t n);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);

static long long g_live, g_peak; /* bytes the wrapped calls hold (usable sizes); single-threaded */

static void note_add(void *p) {
    if (!p) return;
    g_live += (long long)malloc_usable_size(p);
    if (g_live > g_peak) g_peak = g_live;
}

void *__wrap_malloc(size_t n) {
    void *p = __real_malloc(n);
    note_add(p);
    return p;
}

void *__wrap_calloc(size_t c, size_t n) {
    void *p = __real_calloc(c, n);
    note_add(p);
    return p;
}

void *__wrap_realloc(void *p, size_t n) {
    long long old = p ? (long long)malloc_usable_size(p) : 0;
    void *q = __real_realloc(p, n);
    if (q || !n) g_live -= old; /* a failed realloc keeps p */
    note_add(q);
    return q;
}

void __wrap_free(void *p) {
    if (p) g_live -= (long long)malloc_usable_size(p);
    __real_free(p);
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static unsigned next_u(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (unsigned)((rng * 0x2545f4914f6cdd1dULL) >> 32);
}

/* Peak bytes held during ss_svd_factor(img, rank, keep_original = 1), beyond what was held before. */
static long long measured_peak(int m, int n, int bits, int rank) {
    ss_image img = {.width = n, .height = m, .bit_depth = bits};
    img.px = __real_malloc(sizeof(uint16_t) * (size_t)m * (size_t)n); /* not counted: the caller's */
    assert_non_null(img.px);
    for (size_t i = 0; i < (size_t)m * (size_t)n; i++) img.px[i] = (uint16_t)(next_u() & ((1u << bits) - 1));
    ss_factors *f = NULL;
    long long base = g_live;
    g_peak = g_live;
    assert_int_equal(ss_svd_factor(&img, rank, 1, &f), 0);
    long long peak = g_peak - base;
    ss_factors_free(f);
    __real_free(img.px);
    return peak;
}

static void check_shape(int m, int n, int bits, int rank) {
    long long est = ss_svd_workspace_bytes(m, n, bits);
    long long got = measured_peak(m, n, bits, rank);
    print_message("%4dx%-4d %2d bits rank %4d: estimate %10lld, measured peak %10lld (%.3f)\n", m, n, bits,
                  rank, est, got, (double)got / (double)est);
    assert_true(est > 0);
    assert_true(got <= est); /* never under: the budget would admit more than it holds */
    /* at full rank, tight: the slack is the allocator's rounding (a page a block); a looser
     * estimate would waste the budget */
    if (rank == 0) assert_true((double)est <= 1.02 * (double)got + 65536);
}

static void test_estimate_covers_the_peak(void **state) {
    (void)state;
    static const int shapes[][2] = {{1, 1}, {7, 300}, {300, 7}, {256, 170}, {170, 256}, {512, 512}, {640, 480}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int bits = 8; bits <= 16; bits += 8) check_shape(shapes[i][0], shapes[i][1], bits, 0);
    check_shape(512, 384, 16, 10); /* a lower rank holds less: the full-rank bound still covers it */
    print_message("2048x2048 16 bits: estimate %lld\n", ss_svd_workspace_bytes(2048, 2048, 16));
}

static void test_bad_shapes(void **state) {
    (void)state;
    assert_true(ss_svd_workspace_bytes(0, 5, 8) < 0);
    assert_true(ss_svd_workspace_bytes(5, -1, 8) < 0);
    assert_true(ss_svd_workspace_bytes(5, 5, 12) < 0);
    /* no overflow at the largest side a PNG can declare to the server */
    assert_true(ss_svd_workspace_bytes(65535, 65535, 16) > 8LL * 65535 * 65535);
}

static void test_file_bytes(void **state) {
    (void)state;
    /* the .svd file ss_svd_serialize_v1 writes (version 1): header, U, all singular values, Vt, original pixels */
    ss_factors *f = NULL;
    assert_int_equal(ss_factors_alloc(30, 20, 7, 16, 1, &f), 0);
    snprintf(f->id, sizeof f->id, "abc");
    unsigned char *buf = NULL;
    size_t len = 0;
    assert_int_equal(ss_svd_serialize_v1(f, &buf, &len), 0);
    assert_int_equal((long long)len, ss_svd_file_bytes(30, 20, 7, 1));
    free(buf);
    ss_factors_free(f);
    assert_int_equal(ss_svd_file_bytes(30, 20, 7, 0), SS_SVD_HEADER_BYTES + 4 * (30 * 7 + 20 + 7 * 20));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_estimate_covers_the_peak),
        cmocka_unit_test(test_bad_shapes),
        cmocka_unit_test(test_file_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
