/* test_gpu_fail.c - which GPU failures stop a batch, a backend or both, and the lock-free failed flags */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "gpu/gpu_fail.h"

/* A failed call while the context survives fails the batch alone, or stops
 * its backend when the backend cannot run here; a broken context stops both. */
static void test_decide(void **state) {
    (void)state;
    assert_int_equal(ss_gf_decide(SS_GF_CALL, 1), SS_GF_SCOPE_BATCH);
    assert_int_equal(ss_gf_decide(SS_GF_BACKEND, 1), SS_GF_SCOPE_BACKEND);
    assert_int_equal(ss_gf_decide(SS_GF_CALL, 0), SS_GF_SCOPE_ALL);
    assert_int_equal(ss_gf_decide(SS_GF_BACKEND, 0), SS_GF_SCOPE_ALL);
}

/* Applying each scope marks exactly what it names; the first reason stays. */
static void test_apply_marks_per_backend(void **state) {
    (void)state;
    ss_gf_state s;
    memset(&s, 0, sizeof s);
    const char *why = NULL;

    /* cuBLAS INVALID_VALUE, context fine: nothing is marked. */
    ss_gf_apply(&s, ss_gf_decide(SS_GF_CALL, 1), SS_GF_CUBLAS, "cublas.cu:1: invalid value");
    assert_false(ss_gf_failed(&s, SS_GF_CUDA, &why));
    assert_false(ss_gf_failed(&s, SS_GF_CUBLAS, &why));

    /* No kernel image for our kernel: cuda stops, cublas stays up. */
    ss_gf_apply(&s, ss_gf_decide(SS_GF_BACKEND, 1), SS_GF_CUDA, "recon.cu:2: no kernel image");
    assert_true(ss_gf_failed(&s, SS_GF_CUDA, &why));
    assert_non_null(strstr(why, "no kernel image"));
    assert_non_null(strstr(why, "GPU failed"));
    assert_false(ss_gf_failed(&s, SS_GF_CUBLAS, NULL));

    /* Then a sticky error on the cublas backend: both are marked, cuda keeps its first reason. */
    ss_gf_apply(&s, ss_gf_decide(SS_GF_CALL, 0), SS_GF_CUBLAS, "cublas.cu:3: illegal address");
    assert_true(ss_gf_failed(&s, SS_GF_CUBLAS, &why));
    assert_non_null(strstr(why, "illegal address"));
    assert_true(ss_gf_failed(&s, SS_GF_CUDA, &why));
    assert_non_null(strstr(why, "no kernel image"));
    assert_null(strstr(why, "illegal address"));
}

typedef struct reader {
    ss_gf_state *s;
    int stop, bad, seen;
} reader;

/* A reader without the lock: whenever it sees the flag, the whole reason is there. */
static void *read_flags(void *arg) {
    reader *r = arg;
    while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
        for (int b = 0; b < SS_GF_NBACKENDS; b++) {
            const char *why = NULL;
            if (ss_gf_failed(r->s, b, &why)) {
                r->seen = 1;
                if (!why || strcmp(why, b ? "GPU failed: context lost: cublas" : "GPU failed: context lost: cuda"))
                    r->bad = 1;
            }
        }
    }
    return NULL;
}

static void test_lock_free_reader_sees_whole_reason(void **state) {
    (void)state;
    for (int round = 0; round < 200; round++) {
        static ss_gf_state s;
        memset(&s, 0, sizeof s);
        reader r = {&s, 0, 0, 0};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, read_flags, &r), 0);
        ss_gf_mark(&s, SS_GF_CUDA, "context lost: cuda");
        ss_gf_mark(&s, SS_GF_CUBLAS, "context lost: cublas");
        ss_gf_mark(&s, SS_GF_CUBLAS, "a later message that must not replace the first");
        __atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
        pthread_join(th, NULL);
        assert_false(r.bad);
        const char *why = NULL;
        assert_true(ss_gf_failed(&s, SS_GF_CUBLAS, &why));
        assert_string_equal(why, "GPU failed: context lost: cublas");
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_apply_marks_per_backend),
        cmocka_unit_test(test_lock_free_reader_sees_whole_reason),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
