/* test_respcache.c - the rendered-response LRU: byte bound, LRU order, purge by id, references */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/respcache.h"

static unsigned char *body(size_t n, int fill) {
    unsigned char *b = malloc(n);
    memset(b, fill, n);
    return b;
}

static void test_get_returns_what_put_stored_and_counts_hits(void **state) {
    ss_respcache *c = ss_respcache_new(1 << 20);
    ss_rc_entry *e = ss_respcache_put(c, "a|1", "a", body(1000, 7), 1000, "blas", "\"x\"", "t");
    ss_rc_entry_unref(e);
    assert_null(ss_respcache_get(c, "a|2"));
    ss_rc_entry *g = ss_respcache_get(c, "a|1");
    assert_non_null(g);
    assert_int_equal(g->len, 1000);
    assert_int_equal(g->body[999], 7);
    assert_string_equal(g->backend, "blas");
    ss_rc_entry_unref(g);
    ss_respcache_stats st;
    ss_respcache_get_stats(c, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 1);
    ss_respcache_free(c);
}

static void test_byte_bound_evicts_least_recently_used(void **state) {
    /* room for four 8 KB entries (an entry over a quarter of the bound is never kept) */
    ss_respcache *c = ss_respcache_new(40000);
    const char *keys[] = {"k1", "k2", "k3", "k4"};
    for (int i = 0; i < 4; i++) ss_rc_entry_unref(ss_respcache_put(c, keys[i], "id", body(8000, i), 8000, "b", "e", "t"));
    ss_rc_entry_unref(ss_respcache_get(c, "k1")); /* k1 is now the most recent: k2 goes first */
    ss_rc_entry_unref(ss_respcache_put(c, "k5", "id", body(8000, 5), 8000, "b", "e", "t"));
    ss_rc_entry *g;
    assert_non_null(g = ss_respcache_get(c, "k1"));
    ss_rc_entry_unref(g);
    assert_null(ss_respcache_get(c, "k2"));
    assert_non_null(g = ss_respcache_get(c, "k5"));
    ss_rc_entry_unref(g);
    ss_respcache_stats st;
    ss_respcache_get_stats(c, &st);
    assert_true(st.bytes <= 40000);
    assert_true(st.evictions >= 1);
    ss_respcache_free(c);
}

static void test_held_reference_outlives_eviction_purge_and_free(void **state) {
    ss_respcache *c = ss_respcache_new(1 << 20);
    ss_rc_entry *held = ss_respcache_put(c, "x|1", "x", body(500, 9), 500, "b", "e", "t");
    ss_rc_entry_unref(ss_respcache_put(c, "y|1", "y", body(500, 1), 500, "b", "e", "t"));
    ss_respcache_purge_id(c, "x");
    assert_null(ss_respcache_get(c, "x|1"));
    ss_rc_entry *y = ss_respcache_get(c, "y|1");
    assert_non_null(y); /* other ids stay */
    ss_rc_entry_unref(y);
    ss_respcache_free(c);
    assert_int_equal(held->body[499], 9); /* still valid: ASan would flag a use after free */
    ss_rc_entry_unref(held);
}

static void test_disabled_cache_still_hands_out_entries(void **state) {
    ss_respcache *c = ss_respcache_new(0);
    ss_rc_entry *e = ss_respcache_put(c, "k", "id", body(100, 3), 100, "b", "e", "t");
    assert_non_null(e);
    assert_int_equal(e->body[0], 3);
    ss_rc_entry_unref(e);
    assert_null(ss_respcache_get(c, "k"));
    ss_respcache_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_returns_what_put_stored_and_counts_hits),
        cmocka_unit_test(test_byte_bound_evicts_least_recently_used),
        cmocka_unit_test(test_held_reference_outlives_eviction_purge_and_free),
        cmocka_unit_test(test_disabled_cache_still_hands_out_entries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
