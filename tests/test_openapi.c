/* test_openapi.c - the error table (docs/API.md's codes and statuses, engine errors by origin), the
 * YAML writer's quoting (what YAML 1.1 and 1.2 readers would take for something else), and the
 * document generator's security and completeness per configuration */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/errors.h"
#include "api/http.h"
#include "api/openapi.h"
#include "util/error.h"
#include "server/config.h"

/* docs/API.md's error table, written out again so the C table cannot drift from it. */
static const struct {
    const char *code;
    int status;
} k_contract[] = {
    {"invalid_k", 400},
    {"invalid_backend", 400},
    {"invalid_id", 400},
    {"invalid_parameter", 400},
    {"unauthorized", 401},
    {"not_found", 404},
    {"original_not_kept", 404},
    {"method_not_allowed", 405},
    {"too_large", 413},
    {"unsupported_media_type", 415},
    {"invalid_png", 422},
    {"not_ready", 409},
    {"invalid_nifti", 422},
    {"unsupported_nifti", 422},
    {"backend_unavailable", 503},
    {"overloaded", 503},
    {"store_unavailable", 503},
    {"insufficient_storage", 507},
    {"internal", 500},
};

static void test_codes_and_statuses(void **state) {
    int n = 0;
    for (const ss_api_error *e = ss_api_errors; e->code; e++) n++;
    assert_int_equal(n, (int)(sizeof k_contract / sizeof k_contract[0]));
    for (size_t i = 0; i < sizeof k_contract / sizeof k_contract[0]; i++) {
        const ss_api_error *e = ss_api_error_find(k_contract[i].code);
        assert_non_null(e);
        assert_int_equal(e->status, k_contract[i].status);
        assert_int_equal(ss_api_status(k_contract[i].code), k_contract[i].status);
        assert_true(e->when && *e->when);
    }
    assert_null(ss_api_error_find("no_such_code"));
    assert_null(ss_api_error_find(NULL));
    assert_int_equal(ss_api_status("no_such_code"), 500);
}

static void test_headers_codes_carry(void **state) {
    const ss_api_header *h = &ss_api_error_find("unauthorized")->header;
    assert_string_equal(h->name, "WWW-Authenticate");
    assert_string_equal(h->value, "Bearer");
    h = &ss_api_error_find("overloaded")->header;
    assert_string_equal(h->name, "Retry-After");
    assert_string_equal(h->value, "1");
    assert_string_equal(h->type, "integer");
    h = &ss_api_error_find("method_not_allowed")->header;
    assert_string_equal(h->name, "Allow");
    assert_null(h->value); /* the router knows the path's methods */
    assert_null(ss_api_error_find("backend_unavailable")->header.name);
    assert_null(ss_api_error_find("not_found")->header.name);
}

static void test_engine_errors_by_origin(void **state) {
    static const struct {
        int rc, from;
        const char *code;
    } cases[] = {
        {SS_EINVAL, SS_FROM_LOOKUP, "not_found"},
        {SS_EINVAL, SS_FROM_BODY, "internal"},
        {SS_EINVAL, 0, "internal"},
        {SS_ECORRUPT, SS_FROM_LOOKUP, "internal"}, /* a corrupt .svd in the store is ours */
        {SS_ECORRUPT, SS_FROM_BODY, "invalid_png"},
        {SS_ENOTPNG, SS_FROM_BODY, "unsupported_media_type"},
        {SS_ETOOLARGE, SS_FROM_BODY, "too_large"},
        {SS_ETOOLARGE, 0, "internal"},
        {SS_ENOSPC, 0, "insufficient_storage"},
        {SS_EBUSY, SS_FROM_QUEUE, "overloaded"},
        {SS_ETIMEDOUT, SS_FROM_KERNEL, "overloaded"},
        {SS_EUNAVAIL, SS_FROM_QUEUE, "overloaded"},
        {SS_EUNAVAIL, SS_FROM_KERNEL, "backend_unavailable"},
        {SS_EUNAVAIL, SS_FROM_LOOKUP, "internal"},
        {SS_ENOMEM, SS_FROM_LOOKUP, "internal"},
        {SS_EIO, SS_FROM_LOOKUP, "internal"},
        {SS_ENUMERIC, 0, "internal"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = ss_api_code_of(cases[i].rc, cases[i].from);
        if (strcmp(got, cases[i].code)) fail_msg("case %zu: %s, want %s", i, got, cases[i].code);
    }
}

static void yaml_is(const char *json, const char *want) {
    json_error_t err;
    json_t *j = json_loads(json, JSON_DECODE_ANY, &err);
    assert_non_null(j);
    char *y = ss_yaml_dump(j);
    assert_non_null(y);
    if (strcmp(y, want)) fail_msg("%s gave\n%s\nwant\n%s", json, y, want);
    free(y);
    json_decref(j);
}

static void test_yaml_quotes_what_readers_would_misread(void **state) {
    /* plain where both YAML 1.1 and 1.2 read the same string back */
    yaml_is("{\"a\": \"application/json\"}", "a: application/json\n");
    yaml_is("{\"/slices/{id}\": \"$ref\"}", "/slices/{id}: $ref\n");
    /* booleans and nulls of either version, numbers, dates, indicators, ": ", " #", edge blanks */
    const char *quoted[] = {"yes",        "No",   "off", "y",    "null", "~",     "",       "3.0.3", "200",
                            "2024-01-01", ".inf", "-",   "#x",   "*a",   "&a",    "!t",     "|x",    ">x",
                            "%x",         "@x",   "'q'", "a: b", "a #b", " lead", "trail ", "=",     "<<"};
    for (size_t i = 0; i < sizeof quoted / sizeof quoted[0]; i++) {
        char json[64], want[64];
        snprintf(json, sizeof json, "{\"k\": \"%s\"}", quoted[i]);
        snprintf(want, sizeof want, "k: \"%s\"\n", quoted[i]);
        yaml_is(json, want);
    }
    /* escapes: characters some reader takes as a line break (NEL, LS), controls, the escapes' own */
    yaml_is("[\"a\\u2028b\", \"n\\u0085\", \"c\\u0001\", \"q\\\"\\\\\"]",
            "- \"a\\u2028b\"\n- \"n\\u0085\"\n- \"c\\u0001\"\n- \"q\\\"\\\\\"\n");
    /* text: literal blocks with the chomping that gives the final line break back */
    yaml_is("{\"d\": \"one\\n\\ntwo\"}", "d: |-\n  one\n\n  two\n");
    yaml_is("{\"d\": \"one\\ntwo\\n\"}", "d: |\n  one\n  two\n");
    yaml_is("{\"d\": \"one\\n\\n\"}", "d: \"one\\n\\n\"\n");   /* two final breaks: quoted */
    yaml_is("{\"d\": \" one\\ntwo\"}", "d: \" one\\ntwo\"\n"); /* would set the indentation */
    yaml_is("{\"d\": \"one \\ntwo\"}", "d: \"one \\ntwo\"\n"); /* trailing blank */
    /* flow style when it fits, plain scalars there without flow indicators */
    yaml_is("{\"s\": {\"type\": \"string\", \"enum\": [\"GET, HEAD\", \"a\"]}}",
            "s: {type: string, enum: [\"GET, HEAD\", a]}\n");
    yaml_is("{\"e\": {}, \"l\": [], \"x\": [1, 1.5, 1e300, true, null], \"n\": 0}",
            "e: {}\nl: []\nx: [1, 1.5, 1.0000000000000001e+300, true, null]\n\"n\": 0\n"); /* n: a YAML 1.1
                                                                                              bool */
    /* blocks: sequences of mappings, nesting */
    yaml_is(
        "{\"p\": [{\"name\": \"id\", \"in\": \"path\", \"schema\": {\"type\": \"string\", \"pattern\": "
        "\"^[A-Za-z0-9_-]{1,64}$\", \"description\": \"a description long enough that the flow form of this "
        "object does not fit one line\"}}]}",
        "p:\n  - name: id\n    in: path\n    schema:\n      type: string\n      pattern: "
        "\"^[A-Za-z0-9_-]{1,64}$\"\n"
        "      description: a description long enough that the flow form of this object does not fit one "
        "line\n");
}

static json_t *op(json_t *doc, const char *path, const char *method) {
    return json_object_get(json_object_get(json_object_get(doc, "paths"), path), method);
}

static void test_document_per_configuration(void **state) {
    ss_config cfg;
    char *argv[] = {"serve"};
    assert_int_equal(ss_config_parse(&cfg, 1, argv), 0);

    json_t *doc = ss_openapi_build(&cfg);
    assert_non_null(doc);
    /* every route's pattern is a path (the assets' expanded), with HEAD and OPTIONS */
    for (int i = 0; i < ss_nroutes; i++) {
        if (!strcmp(ss_routes[i].pattern, "/{asset}")) continue;
        json_t *item = json_object_get(json_object_get(doc, "paths"), ss_routes[i].pattern);
        assert_non_null(item);
        assert_non_null(json_object_get(item, "options"));
        if (ss_routes[i].methods & M_GET) assert_non_null(json_object_get(item, "head"));
    }
    assert_non_null(op(doc, "/index.html", "get"));
    assert_null(json_object_get(op(doc, "/slices", "post"), "security"));
    assert_null(json_object_get(json_object_get(op(doc, "/slices", "post"), "responses"), "401"));
    assert_non_null(json_object_get(json_object_get(op(doc, "/slices", "post"), "responses"), "default"));
    json_decref(doc);

    snprintf(cfg.api_key, sizeof cfg.api_key, "k");
    doc = ss_openapi_build(&cfg);
    assert_non_null(json_object_get(op(doc, "/slices", "post"), "security"));
    assert_non_null(json_object_get(op(doc, "/slices/{id}", "delete"), "security"));
    assert_null(json_object_get(op(doc, "/slices", "get"), "security"));
    json_decref(doc);

    cfg.auth_reads = 1;
    doc = ss_openapi_build(&cfg);
    assert_non_null(json_object_get(op(doc, "/slices", "get"), "security"));
    assert_non_null(json_object_get(op(doc, "/reconstruct", "head"), "security"));
    assert_null(json_object_get(op(doc, "/healthz", "get"), "security"));
    assert_null(json_object_get(op(doc, "/slices", "options"), "security"));

    /* the served form: the YAML written from it */
    char *y = ss_yaml_dump(doc);
    assert_non_null(y);
    assert_true(strlen(y) > 1000 && !strncmp(y, "openapi: \"3.0.3\"\n", 17));
    free(y);
    json_decref(doc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_and_statuses),
        cmocka_unit_test(test_headers_codes_carry),
        cmocka_unit_test(test_engine_errors_by_origin),
        cmocka_unit_test(test_yaml_quotes_what_readers_would_misread),
        cmocka_unit_test(test_document_per_configuration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
