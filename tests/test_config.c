/* test_config.c - serve's settings: defaults, SVDSLICE_* environment, flags winning, usage errors */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/config.h"

static int parse(ss_config *c, int argc, const char **argv) { return ss_config_parse(c, argc, (char **)argv); }

static void test_defaults(void **state) {
    ss_config c;
    const char *argv[] = {"serve"};
    assert_int_equal(parse(&c, 1, argv), 0);
    assert_int_equal(c.port, 8080);
    assert_string_equal(c.bind, "127.0.0.1");
    assert_string_equal(c.data, "./data");
    assert_int_equal(c.max_body_bytes, 32LL << 20);
    assert_int_equal(c.queue, 256);
    assert_int_equal(c.response_cache_mb, 64);
    assert_int_equal(c.kernel_threads, 0);
}

static void test_kernel_threads_from_env_and_flag(void **state) {
    ss_config c;
    setenv("SVDSLICE_KERNEL_THREADS", "3", 1);
    const char *a1[] = {"serve"};
    assert_int_equal(parse(&c, 1, a1), 0);
    assert_int_equal(c.kernel_threads, 3);
    const char *a2[] = {"serve", "--kernel-threads", "5"};
    assert_int_equal(parse(&c, 3, a2), 0);
    assert_int_equal(c.kernel_threads, 5);
    const char *a3[] = {"serve", "--kernel-threads", "65"};
    assert_int_equal(parse(&c, 3, a3), 2);
    unsetenv("SVDSLICE_KERNEL_THREADS");
}

static void test_env_then_flag_wins(void **state) {
    ss_config c;
    setenv("SVDSLICE_API_KEY", "fromenv", 1);
    setenv("SVDSLICE_AUTH_READS", "1", 1);
    setenv("SVDSLICE_PORT", "9000", 1);
    setenv("SVDSLICE_MAX_BODY_MB", "2", 1);
    const char *argv[] = {"serve", "--port", "0", "--api-key=fromflag"};
    assert_int_equal(parse(&c, 4, argv), 0);
    assert_string_equal(c.api_key, "fromflag");
    assert_int_equal(c.port, 0);
    assert_int_equal(c.auth_reads, 1);
    assert_int_equal(c.max_body_bytes, 2LL << 20);
    unsetenv("SVDSLICE_API_KEY");
    unsetenv("SVDSLICE_AUTH_READS");
    unsetenv("SVDSLICE_PORT");
    unsetenv("SVDSLICE_MAX_BODY_MB");
}

static void test_bad_input_is_a_usage_error(void **state) {
    ss_config c;
    const char *a1[] = {"serve", "--nope"};
    const char *a2[] = {"serve", "--port", "70000"};
    const char *a3[] = {"serve", "--workers"};
    const char *a4[] = {"serve", "--auth-reads"}; /* without a key it would guard nothing */
    const char *a5[] = {"serve", "--gpu-max-wait-ms", "abc"};
    assert_int_equal(parse(&c, 2, a1), 2);
    assert_int_equal(parse(&c, 3, a2), 2);
    assert_int_equal(parse(&c, 2, a3), 2);
    assert_int_equal(parse(&c, 2, a4), 2);
    assert_int_equal(parse(&c, 3, a5), 2);
    setenv("SVDSLICE_QUEUE", "many", 1);
    const char *a6[] = {"serve"};
    assert_int_equal(parse(&c, 1, a6), 2);
    unsetenv("SVDSLICE_QUEUE");
}

static void test_max_body_bytes_overrides_mb(void **state) {
    ss_config c;
    const char *argv[] = {"serve", "--max-body-bytes", "1234", "--max-body-mb", "5"};
    assert_int_equal(parse(&c, 5, argv), 0);
    assert_int_equal(c.max_body_bytes, 1234);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_kernel_threads_from_env_and_flag),
        cmocka_unit_test(test_env_then_flag_wins),
        cmocka_unit_test(test_bad_input_is_a_usage_error),
        cmocka_unit_test(test_max_body_bytes_overrides_mb),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
