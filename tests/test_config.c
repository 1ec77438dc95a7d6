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
#include "tests/util/testutil.h"

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
    assert_int_equal(c.memory_mb, 512);
    assert_true(c.max_expansion == 0);
    assert_int_equal(c.quota_mb, 0);
}

static void test_upload_limits(void **state) {
    ss_config c;
    setenv("SVDSLICE_MAX_EXPANSION", "250.5", 1);
    const char *a1[] = {"serve", "--memory-mb", "64"};
    assert_int_equal(parse(&c, 3, a1), 0);
    assert_int_equal(c.memory_mb, 64);
    assert_true(c.max_expansion == 250.5);
    unsetenv("SVDSLICE_MAX_EXPANSION");
    const char *a2[] = {"serve", "--memory-mb", "0"};
    assert_int_equal(parse(&c, 3, a2), 2);
    const char *a3[] = {"serve", "--max-expansion", "-1"};
    assert_int_equal(parse(&c, 3, a3), 2);
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

static void test_connection_deadlines(void **state) {
    ss_config c;
    const char *a0[] = {"serve"};
    assert_int_equal(parse(&c, 1, a0), 0);
    assert_int_equal(c.header_timeout, 10);
    assert_int_equal(c.min_rate, 4096);
    assert_int_equal(c.rate_window, 10);
    assert_int_equal(c.per_ip_connections, 64);
    setenv("SVDSLICE_HEADER_TIMEOUT", "3", 1);
    setenv("SVDSLICE_MIN_RATE", "0", 1);
    setenv("SVDSLICE_RATE_WINDOW", "5", 1);
    const char *a1[] = {"serve", "--header-timeout", "0"};
    assert_int_equal(parse(&c, 3, a1), 0);
    assert_int_equal(c.header_timeout, 0); /* 0 = off, and the flag wins */
    assert_int_equal(c.min_rate, 0);
    assert_int_equal(c.rate_window, 5);
    unsetenv("SVDSLICE_HEADER_TIMEOUT");
    unsetenv("SVDSLICE_MIN_RATE");
    unsetenv("SVDSLICE_RATE_WINDOW");
    const char *a2[] = {"serve", "--rate-window", "0"}; /* a window of nothing measures nothing */
    assert_int_equal(parse(&c, 3, a2), 2);
    const char *a3[] = {"serve", "--min-rate", "-1"};
    assert_int_equal(parse(&c, 3, a3), 2);
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

/* ss_config_parse with stderr captured: the usage error line is part of the contract. */
typedef struct {
    ss_config *c;
    int argc;
    const char **argv;
} parse_call;

static int parse_call_fn(void *arg) {
    parse_call *p = arg;
    return parse(p->c, p->argc, p->argv);
}

static int parse_err(ss_config *c, int argc, const char **argv, char *err, size_t size) {
    parse_call p = {c, argc, argv};
    return tu_capture_stderr(parse_call_fn, &p, err, size);
}

static void test_later_flag_wins(void **state) {
    ss_config c;
    const char *a1[] = {"serve", "--port", "1", "--port", "0"};
    assert_int_equal(parse(&c, 5, a1), 0);
    assert_int_equal(c.port, 0);
    const char *a2[] = {"serve", "--api-key=a", "--api-key", "b", "--reuse-port", "--reuse-port=off"};
    assert_int_equal(parse(&c, 6, a2), 0);
    assert_string_equal(c.api_key, "b");
    assert_int_equal(c.reuse_port, 0);
}

static void test_value_forms(void **state) {
    ss_config c;
    /* the word after a flag is its value even when it starts with '-' */
    const char *a1[] = {"serve", "--api-key", "-5", "--cors-origin", "--port", "--port=9"};
    assert_int_equal(parse(&c, 6, a1), 0);
    assert_string_equal(c.api_key, "-5");
    assert_string_equal(c.cors_origin, "--port");
    assert_int_equal(c.port, 9);
    /* a bool flag: bare, =VALUE, or = (off); never the next word */
    const char *a2[] = {"serve", "--reuse-port", "--gpu-cpu-mode=yes", "--auth-reads=", "--api-key", "k"};
    assert_int_equal(parse(&c, 6, a2), 0);
    assert_int_equal(c.reuse_port, 1);
    assert_int_equal(c.gpu_cpu_mode, 1);
    assert_int_equal(c.auth_reads, 0);
    char err[512];
    const char *a3[] = {"serve", "--reuse-port", "0"};
    assert_int_equal(parse_err(&c, 3, a3, err, sizeof err), 2);
    assert_string_equal(err, "svdslice serve: unexpected argument '0' (see --help)\n");
    const char *a4[] = {"serve", "--port", "-5"};
    assert_int_equal(parse_err(&c, 3, a4, err, sizeof err), 2);
    assert_string_equal(err, "svdslice serve: --port: expected an integer in 0..65535, got '-5'\n");
    const char *a5[] = {"serve", "--port=-5"};
    assert_int_equal(parse_err(&c, 2, a5, err, sizeof err), 2);
    assert_string_equal(err, "svdslice serve: --port=-5: expected an integer in 0..65535, got '-5'\n");
}

static void test_usage_error_lines(void **state) {
    ss_config c;
    char err[512];
    static struct {
        const char *argv[4]; /* up to the first NULL */
        const char *err;
    } cases[] = {
        {{"serve", "--nope"}, "svdslice serve: unknown flag '--nope' (see --help)\n"},
        /* getopt_long would take unique prefixes; the names stay exact */
        {{"serve", "--por", "5"}, "svdslice serve: unknown flag '--por' (see --help)\n"},
        {{"serve", "--gpu-max-b", "5"}, "svdslice serve: unknown flag '--gpu-max-b' (see --help)\n"},
        {{"serve", "--=5"}, "svdslice serve: unknown flag '--=5' (see --help)\n"},
        {{"serve", "-x"}, "svdslice serve: unknown flag '-x' (see --help)\n"},
        {{"serve", "--workers"}, "svdslice serve: --workers needs a value\n"},
        {{"serve", "--port", "1", "extra"}, "svdslice serve: unexpected argument 'extra' (see --help)\n"},
        {{"serve", "-"}, "svdslice serve: unexpected argument '-' (see --help)\n"},
        {{"serve", "--", "--port"}, "svdslice serve: unexpected argument '--port' (see --help)\n"},
        {{"serve", "--help=1"}, "svdslice serve: --help takes no value\n"},
        /* in argv's order: the first problem is the one reported */
        {{"serve", "x", "--nope"}, "svdslice serve: unexpected argument 'x' (see --help)\n"},
        {{"serve", "--nope", "--help"}, "svdslice serve: unknown flag '--nope' (see --help)\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int argc = 0;
        while (argc < 4 && cases[i].argv[argc]) argc++;
        assert_int_equal(parse_err(&c, argc, cases[i].argv, err, sizeof err), 2);
        assert_string_equal(err, cases[i].err);
    }
}

static void test_help(void **state) {
    ss_config c;
    char err[64];
    const char *a1[] = {"serve", "--help", "--nope"};
    const char *a2[] = {"serve", "--port", "1", "-h"};
    FILE *saved = stdout;
    stdout = fopen("/dev/null", "w"); /* the usage text */
    assert_non_null(stdout);
    assert_int_equal(parse_err(&c, 3, a1, err, sizeof err), 1);
    assert_string_equal(err, "");
    assert_int_equal(parse(&c, 4, a2), 1);
    fclose(stdout);
    stdout = saved;
}

/* getopt_long keeps state between calls (position, a half-read "-hx"); every
 * parse starts afresh, whatever the one before stopped on. */
static void test_parses_are_independent(void **state) {
    ss_config c;
    FILE *saved = stdout;
    stdout = fopen("/dev/null", "w");
    assert_non_null(stdout);
    const char *a1[] = {"serve", "-hx"};
    assert_int_equal(parse(&c, 2, a1), 1);
    fclose(stdout);
    stdout = saved;
    const char *a2[] = {"serve", "--port", "7"};
    assert_int_equal(parse(&c, 3, a2), 0);
    assert_int_equal(c.port, 7);
    char err[256];
    const char *a3[] = {"serve", "--workers", "2", "--nope", "--port", "1"};
    assert_int_equal(parse_err(&c, 6, a3, err, sizeof err), 2);
    const char *a4[] = {"serve", "--workers", "3"};
    assert_int_equal(parse(&c, 3, a4), 0);
    assert_int_equal(c.workers, 3);
    assert_int_equal(c.port, 8080);
    const char *a5[] = {"serve", "--", "--port", "1"};
    assert_int_equal(parse_err(&c, 4, a5, err, sizeof err), 2);
    const char *a6[] = {"serve", "--port", "6"};
    assert_int_equal(parse(&c, 3, a6), 0);
    assert_int_equal(c.port, 6);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_kernel_threads_from_env_and_flag),
        cmocka_unit_test(test_connection_deadlines),
        cmocka_unit_test(test_env_then_flag_wins),
        cmocka_unit_test(test_bad_input_is_a_usage_error),
        cmocka_unit_test(test_max_body_bytes_overrides_mb),
        cmocka_unit_test(test_upload_limits),
        cmocka_unit_test(test_later_flag_wins),
        cmocka_unit_test(test_value_forms),
        cmocka_unit_test(test_usage_error_lines),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_parses_are_independent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
