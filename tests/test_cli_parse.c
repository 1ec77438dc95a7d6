/* test_cli_parse.c - the subcommands' flag parser: flag forms, positionals anywhere, a later flag wins, error lines */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "tests/util/testutil.h"

/* The flags of `bench` and `reconstruct` together: valued, short, and bare. */
static const char *g_k, *g_backend;
static int g_no_baseline;
static const ss_opt k_opts[] = {{"k", 'k', 1, &g_k, NULL},
                                {"backend", 0, 1, &g_backend, NULL},
                                {"no-baseline", 0, 0, NULL, &g_no_baseline},
                                {NULL, 0, 0, NULL, NULL}};

typedef struct {
    const char **argv; /* NULL-terminated; argv[0] is the command */
    const char *pos[2];
    int npos, help;
    char err[512];
} call;

/* A writable argv of command "test" */
#define ARGV(...) ((const char *[]){"test", __VA_ARGS__, NULL})

static int call_fn(void *arg) {
    call *c = arg;
    int argc = 0;
    while (c->argv[argc]) argc++;
    return ss_cli_parse("test", argc, (char **)c->argv, k_opts, c->pos, 2, &c->npos, &c->help);
}

/* Parses argv with fresh flag values; the results and stderr into *c. */
static int run(call *c, const char **argv) {
    memset(c, 0, sizeof *c);
    c->argv = argv;
    g_k = g_backend = NULL;
    g_no_baseline = 0;
    return tu_capture_stderr(call_fn, c, c->err, sizeof c->err);
}

static void test_value_forms(void **state) {
    static const char *forms[][3] = {{"-k", "5"}, {"-k5"}, {"-k=5"}, {"--k", "5"}, {"--k=5"}};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        call c;
        assert_int_equal(run(&c, ARGV("in", forms[i][0], forms[i][1])), 0);
        assert_string_equal(g_k, "5");
        assert_int_equal(c.npos, 1);
        assert_string_equal(c.pos[0], "in");
        assert_string_equal(c.err, "");
    }
    /* the word after a flag is its value, dash or not */
    call c;
    assert_int_equal(run(&c, ARGV("-k", "-3", "--backend", "--k")), 0);
    assert_string_equal(g_k, "-3");
    assert_string_equal(g_backend, "--k");
    assert_int_equal(c.npos, 0);
}

static void test_positionals_anywhere_argv_kept(void **state) {
    call c;
    assert_int_equal(run(&c, ARGV("--k", "1", "a", "--no-baseline", "b", "--backend=blas")), 0);
    assert_int_equal(c.npos, 2);
    assert_string_equal(c.pos[0], "a");
    assert_string_equal(c.pos[1], "b");
    assert_string_equal(g_k, "1");
    assert_string_equal(g_backend, "blas");
    assert_int_equal(g_no_baseline, 1);
    /* nothing permuted: argv is as the caller gave it */
    assert_string_equal(c.argv[3], "a");
    assert_string_equal(c.argv[5], "b");
    /* POSIXLY_CORRECT would make getopt stop at the first positional */
    setenv("POSIXLY_CORRECT", "1", 1);
    call p;
    assert_int_equal(run(&p, ARGV("a", "b", "-k", "2")), 0);
    assert_int_equal(p.npos, 2);
    assert_string_equal(g_k, "2");
    unsetenv("POSIXLY_CORRECT");
    /* after "--" everything is positional; "-" always is */
    call d;
    assert_int_equal(run(&d, ARGV("-", "--", "-k")), 0);
    assert_int_equal(d.npos, 2);
    assert_string_equal(d.pos[0], "-");
    assert_string_equal(d.pos[1], "-k");
    assert_null(g_k);
}

static void test_later_flag_wins(void **state) {
    call c;
    assert_int_equal(run(&c, ARGV("-k", "4", "x", "--k=7", "--backend", "a", "--backend=b")), 0);
    assert_string_equal(g_k, "7");
    assert_string_equal(g_backend, "b");
}

static void test_help_in_order(void **state) {
    call c;
    assert_int_equal(run(&c, ARGV("a", "-h", "--nope")), 0);
    assert_int_equal(c.help, 1);
    call d;
    assert_int_equal(run(&d, ARGV("--help")), 0);
    assert_int_equal(d.help, 1);
    call e;
    assert_int_equal(run(&e, ARGV("--nope", "--help")), SS_EXIT_USAGE);
    assert_int_equal(e.help, 0);
}

static void test_usage_error_lines(void **state) {
    static const struct {
        const char *argv[5];
        const char *err;
    } cases[] = {
        {{"test", "--nope"}, "svdslice test: unknown flag '--nope' (see svdslice test --help)\n"},
        /* getopt_long would take a unique prefix; the names stay exact */
        {{"test", "--back", "blas"}, "svdslice test: unknown flag '--back' (see svdslice test --help)\n"},
        {{"test", "--no", "x"}, "svdslice test: unknown flag '--no' (see svdslice test --help)\n"},
        {{"test", "-x"}, "svdslice test: unknown flag '-x' (see svdslice test --help)\n"},
        {{"test", "-b", "blas"}, "svdslice test: unknown flag '-b' (see svdslice test --help)\n"},
        {{"test", "a", "-k"}, "svdslice test: flag '-k' needs a value\n"},
        {{"test", "--backend"}, "svdslice test: flag '--backend' needs a value\n"},
        {{"test", "--no-baseline=1"}, "svdslice test: flag --no-baseline takes no value\n"},
        {{"test", "a", "b", "c"}, "svdslice test: unexpected argument 'c' (see svdslice test --help)\n"},
        {{"test", "a", "b", "--", "-k"}, "svdslice test: unexpected argument '-k' (see svdslice test --help)\n"},
        /* in argv's order: the first problem is the one reported */
        {{"test", "a", "b", "c", "--nope"}, "svdslice test: unexpected argument 'c' (see svdslice test --help)\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *argv[6] = {0};
        memcpy(argv, cases[i].argv, sizeof cases[i].argv);
        call c;
        assert_int_equal(run(&c, argv), SS_EXIT_USAGE);
        assert_string_equal(c.err, cases[i].err);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value_forms),
        cmocka_unit_test(test_positionals_anywhere_argv_kept),
        cmocka_unit_test(test_later_flag_wins),
        cmocka_unit_test(test_help_in_order),
        cmocka_unit_test(test_usage_error_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
