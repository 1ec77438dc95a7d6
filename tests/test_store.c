/* test_store.c - the persistent slice store: durability, index, cache bounds, quota, corruption */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/error.h"
#include "engine/svd.h"
#include "server/store.h"
#include "server/store_dir.h"
#include "util/file.h"
#include "tests/util/testutil.h"

/* A small generated slice; seed changes the pixels and so the id. */
static ss_factors *make_slice(unsigned seed, int h, int w, const char *name, int64_t created) {
    ss_factors *f = tu_gray_slice(seed, h, w);
    assert_non_null(f);
    snprintf(f->name, sizeof f->name, "%s", name);
    f->created = created;
    return f;
}

static int count_files(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (!strncmp(de->d_name, prefix, strlen(prefix))) n++;
    closedir(d);
    return n;
}

static ss_store *open_store(const char *dir, size_t cache, long long quota) {
    ss_store_opts o = {.dir = dir, .cache_bytes = cache, .quota_bytes = quota};
    ss_store *s = NULL;
    assert_int_equal(ss_store_open(&o, &s), SS_OK);
    return s;
}

static void test_one_process_per_directory(void **state) {
    (void)state;
    char *dir = tu_tmpdir("lock");
    ss_store *s = open_store(dir, 1 << 24, 0), *again = NULL;
    ss_store_opts o = {.dir = dir, .cache_bytes = 1 << 24};
    assert_int_equal(ss_store_open(&o, &again), SS_EIO); /* flock: per open file, also in one process */
    assert_null(again);
    assert_non_null(strstr(ss_error(), "in use by another svdslice process"));
    ss_store_close(s);
    s = open_store(dir, 1 << 24, 0); /* released on close */
    ss_store_close(s);
    tu_rm_rf(dir);
    free(dir);
}

static void test_put_acquire_info_list_delete(void **state) {
    (void)state;
    char *dir = tu_tmpdir("store");
    ss_store *s = open_store(dir, 1 << 24, 0);
    ss_factors *a = make_slice(1, 20, 12, "first", 1000);
    ss_factors *b = make_slice(2, 20, 12, "second", 2000);
    int existed = -1;
    assert_int_equal(ss_store_put(s, a, &existed), SS_OK);
    assert_int_equal(existed, 0);
    assert_int_equal(ss_store_put(s, b, &existed), SS_OK);
    assert_int_equal(ss_store_put(s, a, &existed), SS_OK);
    assert_int_equal(existed, 1);

    ss_slice_info *list;
    size_t n;
    assert_int_equal(ss_store_list(s, &list, &n), SS_OK);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].id, b->id); /* newest first */
    assert_string_equal(list[1].name, "first");
    assert_null(list[0].singular_values);
    free(list);

    ss_slice_info info;
    assert_int_equal(ss_store_info(s, a->id, &info), SS_OK);
    assert_int_equal(info.width, 12);
    assert_int_equal(info.height, 20);
    assert_int_equal(info.nsv, 12);
    for (int i = 0; i < info.nsv; i++) assert_true(info.singular_values[i] == a->S[i]);
    ss_slice_info_free(&info);
    assert_int_equal(ss_store_info_scalars(s, b->id, &info), SS_OK);
    assert_int_equal(info.rank, b->rank);
    assert_string_equal(info.name, "second");
    assert_null(info.singular_values);
    assert_int_equal(ss_store_info_scalars(s, "nosuch", &info), SS_EINVAL);
    /* the upload size: unknown until recorded, then kept (a later record does not replace it) */
    assert_int_equal(ss_store_info_scalars(s, b->id, &info), SS_OK);
    assert_int_equal(info.upload_bytes, 0);
    {
        unsigned char *enc;
        size_t enc_len;
        assert_int_equal(ss_svd_serialize(b, &enc, &enc_len), SS_OK); /* what the store holds */
        assert_int_equal(info.file_bytes, (long long)enc_len);
        free(enc);
    }
    assert_int_equal(ss_store_set_upload_bytes(s, b->id, 777), SS_OK);
    assert_int_equal(ss_store_set_upload_bytes(s, b->id, 999), SS_OK);
    assert_int_equal(ss_store_set_upload_bytes(s, "nosuch", 1), SS_EINVAL);
    assert_int_equal(ss_store_info_scalars(s, b->id, &info), SS_OK);
    assert_int_equal(info.upload_bytes, 777);

    int err;
    const ss_factors *g = ss_store_acquire(s, a->id, &err);
    assert_non_null(g);
    assert_memory_equal(g->orig, a->orig, 20 * 12 * sizeof(uint16_t));
    assert_memory_equal(g->U, a->U, (size_t)a->m * a->rank * sizeof(float));
    ss_store_release(s, g);

    unsigned char *file;
    size_t flen;
    assert_int_equal(ss_store_read_file(s, a->id, &file, &flen), SS_OK);
    ss_factors *back;
    assert_int_equal(ss_svd_deserialize(file, flen, &back), SS_OK);
    assert_string_equal(back->id, a->id);
    ss_factors_free(back);
    free(file);

    assert_int_equal(ss_store_delete(s, a->id), SS_OK);
    assert_null(ss_store_acquire(s, a->id, &err));
    assert_int_equal(err, SS_EINVAL);
    assert_int_equal(ss_store_delete(s, a->id), SS_EINVAL);
    assert_int_equal(ss_store_info(s, a->id, &info), SS_EINVAL);
    ss_store_close(s);

    s = open_store(dir, 1 << 24, 0); /* the delete is durable */
    assert_int_equal(ss_store_info(s, a->id, &info), SS_EINVAL);
    assert_int_equal(ss_store_info(s, b->id, &info), SS_OK);
    ss_slice_info_free(&info);
    ss_store_close(s);
    ss_factors_free(a);
    ss_factors_free(b);
    tu_rm_rf(dir);
    free(dir);
}

static void test_upload_survives_restart(void **state) {
    (void)state;
    char *dir = tu_tmpdir("store");
    ss_store *s = open_store(dir, 1 << 24, 0);
    ss_factors *f[5];
    for (int i = 0; i < 5; i++) {
        f[i] = make_slice(10 + i, 16 + i, 9, "x", 100 + i);
        assert_int_equal(ss_store_put(s, f[i], NULL), SS_OK);
    }
    ss_store_close(s);
    s = open_store(dir, 1 << 24, 0);
    ss_store_stats st;
    ss_store_get_stats(s, &st);
    assert_int_equal(st.slices, 5);
    for (int i = 0; i < 5; i++) {
        int err;
        const ss_factors *g = ss_store_acquire(s, f[i]->id, &err);
        assert_non_null(g);
        assert_int_equal(g->m, f[i]->m);
        assert_memory_equal(g->orig, f[i]->orig, (size_t)g->m * g->n * sizeof(uint16_t));
        assert_int_equal(g->created, f[i]->created);
        ss_store_release(s, g);
        ss_factors_free(f[i]);
    }
    ss_store_close(s);
    tu_rm_rf(dir);
    free(dir);
}

static void write_bytes(const char *path, const void *b, size_t n) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(b, 1, n, fp), n);
    fclose(fp);
}

static void test_corrupt_files_are_skipped_and_never_served(void **state) {
    (void)state;
    char *dir = tu_tmpdir("store");
    ss_store *s = open_store(dir, 1 << 24, 0);
    ss_factors *good = make_slice(21, 15, 15, "good", 1);
    ss_factors *flip = make_slice(22, 15, 15, "flip", 2);
    ss_factors *cut = make_slice(23, 15, 15, "cut", 3);
    ss_factors *late = make_slice(24, 15, 15, "late", 4);
    ss_factors *all[] = {good, flip, cut, late};
    for (int i = 0; i < 4; i++) assert_int_equal(ss_store_put(s, all[i], NULL), SS_OK);
    ss_store_close(s);

    char p[512];
    unsigned char *buf;
    size_t len;
    ss_factors *tmp;
    assert_int_equal(ss_svd_serialize(flip, &buf, &len), SS_OK);
    buf[len - 10] ^= 0x40; /* in the stored pixels: header and singular values intact */
    snprintf(p, sizeof p, "%s/%s.svd", dir, flip->id);
    write_bytes(p, buf, len);
    assert_int_not_equal(ss_svd_deserialize(buf, len, &tmp), SS_OK);
    free(buf);
    assert_int_equal(ss_svd_serialize(cut, &buf, &len), SS_OK);
    snprintf(p, sizeof p, "%s/%s.svd", dir, cut->id);
    write_bytes(p, buf, len - 7);
    free(buf);
    snprintf(p, sizeof p, "%s/garbage.svd", dir);
    write_bytes(p, "not a slice at all", 18);
    snprintf(p, sizeof p, "%s/bad name!.svd", dir);
    write_bytes(p, "x", 1);
    snprintf(p, sizeof p, "%s/.tmp-1-1", dir); /* an unacknowledged upload */
    write_bytes(p, "partial", 7);

    s = open_store(dir, 1 << 24, 0);
    ss_store_stats st;
    ss_store_get_stats(s, &st);
    /* good, late and flip: opening checks headers and singular values only, so
     * flip's payload flip is found when its factors are loaded */
    assert_int_equal(st.slices, 3);
    int err;
    assert_null(ss_store_acquire(s, flip->id, &err));
    assert_int_equal(err, SS_ECORRUPT);
    ss_store_get_stats(s, &st);
    assert_int_equal(st.slices, 2);
    assert_null(ss_store_acquire(s, cut->id, &err));
    assert_null(ss_store_acquire(s, "garbage", &err));
    assert_int_equal(access(p, F_OK), -1); /* temp file removed */

    /* corrupted after open: detected on the load, dropped, never served */
    assert_int_equal(ss_svd_serialize(late, &buf, &len), SS_OK);
    buf[len - 3] ^= 1;
    snprintf(p, sizeof p, "%s/%s.svd", dir, late->id);
    write_bytes(p, buf, len);
    free(buf);
    assert_null(ss_store_acquire(s, late->id, &err));
    assert_int_equal(err, SS_ECORRUPT);
    assert_null(ss_store_acquire(s, late->id, &err));
    assert_int_equal(err, SS_EINVAL);
    const ss_factors *g = ss_store_acquire(s, good->id, &err);
    assert_non_null(g);
    ss_store_release(s, g);
    ss_store_close(s);
    for (int i = 0; i < 4; i++) ss_factors_free(all[i]);
    tu_rm_rf(dir);
    free(dir);
}

/* An upload finds its slice by the SHA-256 id, or by the old id when the stored
 * pixels are the very same; an old id holding other pixels (what a collision
 * of the old hash would look like) is never handed out for it. */
static void test_find_content_new_and_old_ids(void **state) {
    (void)state;
    char *dir = tu_tmpdir("store");
    ss_store *s = open_store(dir, 1 << 24, 0);
    ss_image a, b;
    assert_int_equal(ss_image_alloc(&a, 9, 7, 8), SS_OK);
    assert_int_equal(ss_image_alloc(&b, 9, 7, 8), SS_OK);
    for (int i = 0; i < 63; i++) {
        a.px[i] = (uint16_t)(i * 3);
        b.px[i] = (uint16_t)(i * 3 + (i == 40));
    }
    char id[65], sha_a[65], old_a[65];
    ss_content_id(&a, 0, sha_a);
    ss_content_id_v1(&a, 0, old_a);
    assert_int_equal(ss_store_find_content(s, &a, 0, id), 0);
    assert_string_equal(id, sha_a);

    /* a stored under its SHA-256 id */
    ss_factors *f = NULL;
    assert_int_equal(ss_svd_factor(&a, 0, 1, &f), SS_OK);
    assert_string_equal(f->id, sha_a);
    assert_int_equal(ss_store_put(s, f, NULL), SS_OK);
    assert_int_equal(ss_store_find_content(s, &a, 0, id), 1);
    assert_string_equal(id, sha_a);
    assert_int_equal(ss_store_delete(s, sha_a), SS_OK);

    /* a stored under its old id: found there, at its rank only */
    memcpy(f->id, old_a, sizeof old_a);
    assert_int_equal(ss_store_put(s, f, NULL), SS_OK);
    assert_int_equal(ss_store_find_content(s, &a, 0, id), 1);
    assert_string_equal(id, old_a);
    assert_int_equal(ss_store_find_content(s, &a, 7, id), 1); /* 7 = min(9, 7): full rank */
    assert_string_equal(id, old_a);
    assert_int_equal(ss_store_find_content(s, &a, 3, id), 0);
    assert_int_equal(strlen(id), 64);
    assert_int_equal(ss_store_delete(s, old_a), SS_OK);
    ss_factors_free(f);

    /* b's pixels stored under a's old id: a is not that slice */
    assert_int_equal(ss_svd_factor(&b, 0, 1, &f), SS_OK);
    memcpy(f->id, old_a, sizeof old_a);
    assert_int_equal(ss_store_put(s, f, NULL), SS_OK);
    assert_int_equal(ss_store_find_content(s, &a, 0, id), 0);
    assert_string_equal(id, sha_a);
    ss_factors_free(f);

    ss_image_free(&a);
    ss_image_free(&b);
    ss_store_close(s);
    tu_rm_rf(dir);
    free(dir);
}

/* Whole-file reads through the store's file operations (all else is POSIX). */
static long g_whole_reads;
static int counting_read_file(void *ctx, const char *path, size_t max, unsigned char **buf, size_t *len) {
    g_whole_reads++;
    return ss_read_file(path, max, buf, len);
}

/* Rewrites slice f's file with byte `at` of its encoding xor-ed with x. */
static void corrupt_file(const char *dir, const ss_factors *f, size_t at, unsigned char x) {
    unsigned char *buf;
    size_t len;
    assert_int_equal(ss_svd_serialize(f, &buf, &len), SS_OK);
    assert_true(at < len);
    buf[at] ^= x;
    char p[512];
    snprintf(p, sizeof p, "%s/%s.svd", dir, f->id);
    write_bytes(p, buf, len);
    free(buf);
}

/* Opening reads each slice's header and singular values, not its whole file;
 * the payload checksum is verified when the factors are loaded or the file is
 * downloaded, and a slice that fails it is dropped then. */
static void test_open_reads_headers_not_whole_files(void **state) {
    (void)state;
    char *dir = tu_tmpdir("store");
    ss_store *s = open_store(dir, 1 << 24, 0);
    ss_factors *a = make_slice(61, 64, 48, "a", 1), *b = make_slice(62, 48, 64, "b", 2);
    ss_factors *c = make_slice(63, 40, 40, "c", 3);
    ss_factors *all[] = {a, b, c};
    for (int i = 0; i < 3; i++) assert_int_equal(ss_store_put(s, all[i], NULL), SS_OK);
    ss_store_close(s);
    /* past the header and singular values (version 2: the original's section) */
    corrupt_file(dir, c, SS_SVD2_HEADER_BYTES + 4 * (size_t)c->nsv + 5, 0x10);

    ss_fileops ops = ss_fileops_posix;
    ops.read_file = counting_read_file;
    ss_store_opts o = {.dir = dir, .cache_bytes = 1 << 24, .fileops = &ops};
    g_whole_reads = 0;
    s = NULL;
    assert_int_equal(ss_store_open(&o, &s), SS_OK);
    assert_int_equal(g_whole_reads, 0);
    ss_store_stats st;
    ss_store_get_stats(s, &st);
    assert_int_equal(st.slices, 3);
    for (int i = 0; i < 3; i++) {
        ss_slice_info info;
        assert_int_equal(ss_store_info(s, all[i]->id, &info), SS_OK);
        assert_int_equal(info.nsv, all[i]->nsv);
        assert_int_equal(info.width, all[i]->n);
        assert_string_equal(info.name, all[i]->name);
        assert_memory_equal(info.singular_values, all[i]->S, sizeof(float) * (size_t)all[i]->nsv);
        ss_slice_info_free(&info);
    }
    int err = 0;
    const ss_factors *got = ss_store_acquire(s, a->id, &err);
    assert_non_null(got);
    assert_int_equal(g_whole_reads, 1);
    ss_store_release(s, got);
    assert_null(ss_store_acquire(s, c->id, &err));
    assert_int_equal(err, SS_ECORRUPT);
    assert_null(ss_store_acquire(s, c->id, &err));
    assert_int_equal(err, SS_EINVAL);

    /* a download verifies the file too */
    corrupt_file(dir, b, SS_SVD2_HEADER_BYTES + 4 * (size_t)b->nsv + 7, 0x01);
    unsigned char *buf = NULL;
    size_t len = 0;
    assert_int_equal(ss_store_read_file(s, b->id, &buf, &len), SS_ECORRUPT);
    assert_null(buf);
    assert_int_equal(ss_store_read_file(s, b->id, &buf, &len), SS_EINVAL);
    assert_int_equal(ss_store_read_file(s, a->id, &buf, &len), SS_OK);
    free(buf);
    ss_store_close(s);

    /* singular values that are not non-increasing are caught at open */
    size_t sv = SS_SVD2_HEADER_BYTES; /* version 2: the singular values come first */
    corrupt_file(dir, a, sv + 4 + 3, 0x40); /* S[1]'s exponent byte: far above S[0] */
    s = open_store(dir, 1 << 24, 0);
    ss_slice_info info;
    assert_int_equal(ss_store_info(s, a->id, &info), SS_EINVAL);
    ss_store_close(s);
    for (int i = 0; i < 3; i++) ss_factors_free(all[i]);
    tu_rm_rf(dir);
    free(dir);
}

static void test_cache_stays_within_its_byte_budget(void **state) {
    (void)state;
    char *dir = tu_tmpdir("store");
    ss_factors *f[12];
    ss_store *s = open_store(dir, 1 << 24, 0);
    for (int i = 0; i < 12; i++) {
        f[i] = make_slice(40 + i, 24, 24, "c", i);
        assert_int_equal(ss_store_put(s, f[i], NULL), SS_OK);
    }
    ss_store_close(s);
    /* one 24x24 slice is ~ (24*24*3+24)*4 + 24*24*2 bytes = ~8.2 KB: room for 3 */
    size_t budget = 26000;
    s = open_store(dir, budget, 0);
    int err;
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 12; i++) {
            const ss_factors *g = ss_store_acquire(s, f[i]->id, &err);
            assert_non_null(g);
            assert_memory_equal(g->orig, f[i]->orig, 24 * 24 * sizeof(uint16_t));
            ss_store_release(s, g);
            ss_store_stats st;
            ss_store_get_stats(s, &st);
            assert_true((size_t)st.cache_bytes <= budget);
        }
    ss_store_stats st;
    ss_store_get_stats(s, &st);
    assert_int_equal(st.cache_hits + st.cache_misses, 36);
    assert_true(st.cache_misses >= 12 * 3 - 3); /* cyclic access through a 3-slot LRU */
    /* repeated access to one slice hits */
    const ss_factors *g = ss_store_acquire(s, f[0]->id, &err);
    ss_store_release(s, g);
    g = ss_store_acquire(s, f[0]->id, &err);
    ss_store_release(s, g);
    ss_store_stats st2;
    ss_store_get_stats(s, &st2);
    assert_int_equal(st2.cache_hits, st.cache_hits + 1);

    /* held references survive eviction pressure and deletion */
    const ss_factors *held[12];
    for (int i = 0; i < 12; i++) held[i] = ss_store_acquire(s, f[i]->id, &err);
    assert_int_equal(ss_store_delete(s, f[5]->id), SS_OK);
    for (int i = 0; i < 12; i++) {
        assert_non_null(held[i]);
        assert_memory_equal(held[i]->orig, f[i]->orig, 24 * 24 * sizeof(uint16_t));
        ss_store_release(s, held[i]);
    }
    ss_store_get_stats(s, &st);
    assert_true((size_t)st.cache_bytes <= budget);
    /* a slice larger than the whole budget is served, not cached */
    ss_store_close(s);
    s = open_store(dir, 100, 0);
    g = ss_store_acquire(s, f[1]->id, &err);
    assert_non_null(g);
    ss_store_get_stats(s, &st);
    assert_int_equal(st.cache_bytes, 0);
    ss_store_release(s, g);
    ss_store_close(s);
    for (int i = 0; i < 12; i++) ss_factors_free(f[i]);
    tu_rm_rf(dir);
    free(dir);
}

static void test_quota_refuses_and_loses_nothing(void **state) {
    (void)state;
    char *dir = tu_tmpdir("store");
    ss_factors *a = make_slice(60, 30, 30, "a", 1);
    unsigned char *buf;
    size_t len;
    assert_int_equal(ss_svd_serialize(a, &buf, &len), SS_OK);
    free(buf);
    ss_store *s = open_store(dir, 1 << 24, (long long)len * 2 + 10);
    assert_int_equal(ss_store_put(s, a, NULL), SS_OK);
    ss_factors *b = make_slice(61, 30, 30, "b", 2);
    assert_int_equal(ss_store_put(s, b, NULL), SS_OK);
    ss_factors *c = make_slice(62, 30, 30, "c", 3);
    assert_int_equal(ss_store_put(s, c, NULL), SS_ENOSPC);
    assert_int_equal(count_files(dir, ".tmp-"), 0);
    ss_store_stats st;
    ss_store_get_stats(s, &st);
    assert_int_equal(st.slices, 2);
    /* deleting frees quota */
    assert_int_equal(ss_store_delete(s, a->id), SS_OK);
    assert_int_equal(ss_store_put(s, c, NULL), SS_OK);
    ss_store_close(s);
    s = open_store(dir, 1 << 24, 0);
    int err;
    const ss_factors *g = ss_store_acquire(s, b->id, &err);
    assert_non_null(g);
    assert_memory_equal(g->orig, b->orig, 30 * 30 * sizeof(uint16_t));
    ss_store_release(s, g);
    ss_store_close(s);
    ss_factors_free(a);
    ss_factors_free(b);
    ss_factors_free(c);
    tu_rm_rf(dir);
    free(dir);
}

static void test_full_disk_gives_enospc(void **state) {
    (void)state;
    char *dir = tu_tmpdir("store");
    if (mount("tmpfs", dir, "tmpfs", 0, "size=64k") != 0) {
        rmdir(dir);
        free(dir);
        skip(); /* needs root and mount rights; the quota test covers the same path */
    }
    ss_store *s = open_store(dir, 1 << 24, 0);
    int stored = 0, rc = SS_OK;
    ss_factors *kept[64];
    for (int i = 0; i < 64 && rc == SS_OK; i++) {
        ss_factors *f = make_slice(100 + i, 40, 40, "full", i);
        rc = ss_store_put(s, f, NULL);
        if (rc == SS_OK) kept[stored++] = f;
        else ss_factors_free(f);
    }
    assert_int_equal(rc, SS_ENOSPC);
    assert_true(stored > 0);
    assert_int_equal(count_files(dir, ".tmp-"), 0);
    ss_store_close(s);
    s = open_store(dir, 1 << 24, 0);
    for (int i = 0; i < stored; i++) {
        int err;
        const ss_factors *g = ss_store_acquire(s, kept[i]->id, &err);
        assert_non_null(g);
        assert_memory_equal(g->orig, kept[i]->orig, 40 * 40 * sizeof(uint16_t));
        ss_store_release(s, g);
        ss_factors_free(kept[i]);
    }
    ss_store_close(s);
    tu_rm_rf(dir);
    umount(dir);
    rmdir(dir);
    free(dir);
}

static void test_ids_that_are_not_ids_never_touch_the_disk(void **state) {
    (void)state;
    char *dir = tu_tmpdir("store");
    ss_store *s = open_store(dir, 1 << 24, 0);
    const char *bad[] = {"", "../etc/passwd", "a/b", "..", "a.svd", "with space",
                         "0123456789012345678901234567890123456789012345678901234567890123456789"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int err;
        ss_slice_info info;
        unsigned char *b;
        size_t l;
        assert_null(ss_store_acquire(s, bad[i], &err));
        assert_int_equal(err, SS_EINVAL);
        assert_int_equal(ss_store_info(s, bad[i], &info), SS_EINVAL);
        assert_int_equal(ss_store_delete(s, bad[i]), SS_EINVAL);
        assert_int_equal(ss_store_read_file(s, bad[i], &b, &l), SS_EINVAL);
    }
    ss_factors *f = make_slice(70, 8, 8, "x", 1);
    strcpy(f->id, "../escape");
    assert_int_equal(ss_store_put(s, f, NULL), SS_EINVAL);
    ss_factors_free(f);
    ss_store_close(s);
    tu_rm_rf(dir);
    free(dir);
}

typedef struct {
    ss_store *s;
    ss_factors **f;
    int n, tid;
} worker_arg;

static void *worker(void *p) {
    worker_arg *a = p;
    for (int r = 0; r < 50; r++) {
        int i = (r * 7 + a->tid * 3) % a->n;
        int existed;
        if (ss_store_put(a->s, a->f[i], &existed) != SS_OK) return (void *)1;
        int err;
        const ss_factors *g = ss_store_acquire(a->s, a->f[i]->id, &err);
        if (!g) return (void *)2;
        if (memcmp(g->orig, a->f[i]->orig, (size_t)g->m * g->n * 2) != 0) return (void *)3;
        ss_store_release(a->s, g);
    }
    return NULL;
}

static void test_concurrent_puts_and_reads(void **state) {
    (void)state;
    char *dir = tu_tmpdir("store");
    ss_store *s = open_store(dir, 30000, 0);
    ss_factors *f[10];
    for (int i = 0; i < 10; i++) f[i] = make_slice(80 + i, 20, 20, "t", i);
    pthread_t th[8];
    worker_arg args[8];
    for (int t = 0; t < 8; t++) {
        args[t] = (worker_arg){s, f, 10, t};
        pthread_create(&th[t], NULL, worker, &args[t]);
    }
    for (int t = 0; t < 8; t++) {
        void *ret;
        pthread_join(th[t], &ret);
        assert_null(ret);
    }
    ss_store_stats st;
    ss_store_get_stats(s, &st);
    assert_int_equal(st.slices, 10);
    assert_int_equal(count_files(dir, ".tmp-"), 0);
    ss_store_close(s);
    for (int i = 0; i < 10; i++) ss_factors_free(f[i]);
    tu_rm_rf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_process_per_directory),
        cmocka_unit_test(test_put_acquire_info_list_delete),
        cmocka_unit_test(test_upload_survives_restart),
        cmocka_unit_test(test_corrupt_files_are_skipped_and_never_served),
        cmocka_unit_test(test_find_content_new_and_old_ids),
        cmocka_unit_test(test_open_reads_headers_not_whole_files),
        cmocka_unit_test(test_cache_stays_within_its_byte_budget),
        cmocka_unit_test(test_quota_refuses_and_loses_nothing),
        cmocka_unit_test(test_full_disk_gives_enospc),
        cmocka_unit_test(test_ids_that_are_not_ids_never_touch_the_disk),
        cmocka_unit_test(test_concurrent_puts_and_reads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
