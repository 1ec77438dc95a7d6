/* test_store_faults.c - the store under injected file errors: every step of a put, delete, listing
 * and read fails in turn; checks the code returned, that no temp or partial file stays, that nothing
 * acknowledged is lost, and that a reopened store holds exactly the acknowledged slices */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/error.h"
#include "engine/svd.h"
#include "engine/volume.h"
#include "server/store.h"
#include "server/store_backend.h"
#include "server/store_dir.h"
#include "server/volumes.h"
#include "tests/util/testutil.h"
#include "tests/util/tu_nifti.h"

/* ---- a file-operations table that fails one chosen call ---------------------------- */

enum { T_MKDIR, T_OPEN, T_WRITE, T_FSYNC, T_CLOSE, T_RENAME, T_UNLINK, T_LIST, T_READ, T_READRANGE, T_NOPS };
static const char *const op_names[T_NOPS] = {"mkdir",  "open",   "write", "fsync", "close",
                                             "rename", "unlink", "list",  "read",  "readrange"};
#define WRITE_ZERO (-1) /* fail_errno for a write that writes nothing (a full disk, no errno) */

typedef struct faulty {
    ss_fileops ops; /* ctx points back here */
    int fail_op;    /* -1: none */
    long fail_nth;  /* the call of fail_op, counted from arm(), that fails */
    int fail_errno;
    long calls[T_NOPS];  /* since arm() */
    int injected;        /* failures injected since arm() */
    size_t write_cap;    /* bytes a write takes at most: a put then needs several writes */
    int list_fail_after; /* > 0: the listing fails after delivering this many names */
    int listed;
    /* block_dir_fsync: the next fsync of a directory waits for `go` (a delete in progress) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int block_dir_fsync, blocked, go;
} faulty;

static const ss_fileops *px = &ss_fileops_posix;

static void arm(faulty *t, int op, long nth, int err) {
    memset(t->calls, 0, sizeof t->calls);
    t->injected = 0;
    t->fail_op = op;
    t->fail_nth = nth;
    t->fail_errno = err;
}

static void disarm(faulty *t) { arm(t, -1, 0, 0); }

/* Counts a call; the errno it must fail with, or 0. */
static int hit(faulty *t, int op) {
    long n = __atomic_add_fetch(&t->calls[op], 1, __ATOMIC_SEQ_CST);
    if (op != t->fail_op || n != t->fail_nth) return 0;
    t->injected++;
    return t->fail_errno;
}

#define FAIL_IF_HIT(op)                                                                                      \
    faulty *t = ctx;                                                                                         \
    int e_ = hit(t, op);                                                                                     \
    if (e_) {                                                                                                \
        errno = e_;                                                                                          \
        return -1;                                                                                           \
    }

static int t_mkdir(void *ctx, const char *path, mode_t mode) {
    FAIL_IF_HIT(T_MKDIR);
    return px->mkdir(NULL, path, mode);
}
static int t_open(void *ctx, int dirfd, const char *name, int flags, mode_t mode) {
    FAIL_IF_HIT(T_OPEN);
    return px->open(NULL, dirfd, name, flags, mode);
}
static ssize_t t_write(void *ctx, int fd, const void *buf, size_t n) {
    faulty *t = ctx;
    int e = hit(t, T_WRITE);
    if (e == WRITE_ZERO) return 0;
    if (e) {
        errno = e;
        return -1;
    }
    return px->write(NULL, fd, buf, t->write_cap && n > t->write_cap ? t->write_cap : n);
}
static int t_fsync(void *ctx, int fd) {
    faulty *t = ctx;
    struct stat st;
    if (t->block_dir_fsync && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        pthread_mutex_lock(&t->mu);
        t->block_dir_fsync = 0;
        t->blocked = 1;
        pthread_cond_broadcast(&t->cv);
        while (!t->go) pthread_cond_wait(&t->cv, &t->mu);
        pthread_mutex_unlock(&t->mu);
    }
    int e = hit(t, T_FSYNC);
    if (e) {
        errno = e;
        return -1;
    }
    return px->fsync(NULL, fd);
}
static int t_close(void *ctx, int fd) {
    faulty *t = ctx;
    int e = hit(t, T_CLOSE);
    int rc = px->close(NULL, fd); /* Linux frees the descriptor even when close fails */
    if (e) errno = e;
    return e ? -1 : rc;
}
static int t_rename(void *ctx, int dirfd, const char *from, const char *to) {
    FAIL_IF_HIT(T_RENAME);
    return px->rename(NULL, dirfd, from, to);
}
static int t_unlink(void *ctx, int dirfd, const char *name) {
    FAIL_IF_HIT(T_UNLINK);
    return px->unlink(NULL, dirfd, name);
}

typedef struct {
    faulty *t;
    int (*each)(void *, const char *);
    void *arg;
} list_wrap;

static int t_list_one(void *arg, const char *name) {
    list_wrap *w = arg;
    if (w->t->list_fail_after && w->t->listed == w->t->list_fail_after) return 1; /* stop: fail below */
    w->t->listed++;
    return w->each(w->arg, name);
}
static int t_list(void *ctx, int dirfd, int (*each)(void *arg, const char *name), void *arg) {
    FAIL_IF_HIT(T_LIST);
    list_wrap w = {t, each, arg};
    t->listed = 0;
    int rc = px->list(NULL, dirfd, t_list_one, &w);
    if (rc == 0 && t->list_fail_after && t->listed == t->list_fail_after) { /* a readdir error mid-way */
        t->injected++;
        errno = EIO;
        return -1;
    }
    return rc;
}
static int t_read_file(void *ctx, const char *path, size_t max, unsigned char **buf, size_t *len) {
    faulty *t = ctx;
    if (hit(t, T_READ)) return ss_fail(SS_EIO, "%s: injected read error", path);
    return px->read_file(NULL, path, max, buf, len);
}
static int t_read_range(void *ctx, const char *path, size_t off, size_t n, unsigned char *buf, size_t *flen) {
    faulty *t = ctx;
    if (hit(t, T_READRANGE)) return ss_fail(SS_EIO, "%s: injected read error", path);
    return px->read_range(NULL, path, off, n, buf, flen);
}

static void faulty_init(faulty *t) {
    memset(t, 0, sizeof *t);
    t->ops = (ss_fileops){t,        t_mkdir,  t_open, t_write,     t_fsync,     t_close,
                          t_rename, t_unlink, t_list, t_read_file, t_read_range};
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    disarm(t);
}

static void faulty_destroy(faulty *t) {
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
}

/* ---- helpers ------------------------------------------------------------------------ */

/* A small generated slice; seed changes the pixels and so the id. */
static ss_factors *make_slice(unsigned seed, int h, int w, int64_t created) {
    ss_factors *f = tu_gray_slice(seed, h, w);
    assert_non_null(f);
    snprintf(f->id, sizeof f->id, "s%u", seed); /* the store takes any valid id */
    snprintf(f->name, sizeof f->name, "slice %u", seed);
    f->created = created;
    return f;
}

/* Names in dir other than the slice files of `ids` (temp files, partial files, strays). */
static int strays(const char *dir, ss_factors *const *keep, int nkeep) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || !strcmp(de->d_name, ".lock"))
            continue; /* the store's lock file stays, empty */
        int known = 0;
        for (int i = 0; i < nkeep; i++) {
            char nm[80];
            snprintf(nm, sizeof nm, "%s.svd", keep[i]->id);
            known |= !strcmp(nm, de->d_name);
        }
        if (!known) {
            fprintf(stderr, "stray file %s\n", de->d_name);
            n++;
        }
    }
    closedir(d);
    return n;
}

static int file_exists(const char *dir, const char *id) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s.svd", dir, id);
    return access(p, F_OK) == 0;
}

static ss_store *open_with(const char *dir, const ss_fileops *ops) {
    ss_store_opts o = {.dir = dir, .cache_bytes = 1 << 24, .fileops = ops};
    ss_store *s = NULL;
    assert_int_equal(ss_store_open(&o, &s), SS_OK);
    return s;
}

/* The store holds exactly these slices, each readable with its pixels. */
static void assert_holds_exactly(ss_store *s, ss_factors *const *want, int n) {
    ss_slice_info *list;
    size_t len;
    assert_int_equal(ss_store_list(s, &list, &len), SS_OK);
    assert_int_equal(len, n);
    for (int i = 0; i < n; i++) {
        int found = 0;
        for (size_t j = 0; j < len; j++) found |= !strcmp(list[j].id, want[i]->id);
        assert_true(found);
        int err = 0;
        const ss_factors *g = ss_store_acquire(s, want[i]->id, &err);
        assert_non_null(g);
        assert_memory_equal(g->orig, want[i]->orig, (size_t)g->m * g->n * sizeof(uint16_t));
        ss_store_release(s, g);
    }
    free(list);
}

/* ---- put ---------------------------------------------------------------------------- */

static void test_put_fails_cleanly_at_every_step(void **state) {
    (void)state;
    faulty t;
    faulty_init(&t);
    t.write_cap = 256;
    ss_factors *a = make_slice(1, 20, 12, 100), *b = make_slice(2, 20, 12, 200),
               *c = make_slice(3, 20, 12, 300);
    ss_factors *ab[] = {a, b}, *abc[] = {a, b, c};

    /* The calls one put makes, learnt on a scratch store: pinned so that a
     * change in the sequence shows here instead of silently skipping steps. */
    char *scratch = tu_tmpdir("faults");
    ss_store *s = open_with(scratch, &t.ops);
    arm(&t, -1, 0, 0);
    assert_int_equal(ss_store_put(s, c, NULL), SS_OK);
    long per_put[T_NOPS];
    memcpy(per_put, t.calls, sizeof per_put);
    ss_store_close(s);
    tu_rm_rf(scratch);
    free(scratch);
    assert_int_equal(per_put[T_OPEN], 1);
    assert_true(per_put[T_WRITE] >= 3);    /* short writes are continued */
    assert_int_equal(per_put[T_FSYNC], 2); /* the file, then the directory */
    assert_int_equal(per_put[T_CLOSE], 1);
    assert_int_equal(per_put[T_RENAME], 1);
    assert_int_equal(per_put[T_UNLINK] + per_put[T_LIST] + per_put[T_READ] + per_put[T_MKDIR], 0);

    char *dir = tu_tmpdir("faults");
    s = open_with(dir, &t.ops);
    assert_int_equal(ss_store_put(s, a, NULL), SS_OK);
    assert_int_equal(ss_store_put(s, b, NULL), SS_OK);

    const int ops[] = {T_OPEN, T_WRITE, T_FSYNC, T_CLOSE, T_RENAME};
    const struct { int err, want; } errs[] = {{EIO, SS_EIO}, {ENOSPC, SS_ENOSPC}, {EDQUOT, SS_ENOSPC}};
    int cases = 0;
    for (size_t oi = 0; oi < sizeof ops / sizeof *ops; oi++)
        for (long k = 1; k <= per_put[ops[oi]]; k++)
            for (size_t ei = 0; ei < sizeof errs / sizeof *errs; ei++) {
                arm(&t, ops[oi], k, errs[ei].err);
                int existed = -1;
                int rc = ss_store_put(s, c, &existed);
                if (rc != errs[ei].want || t.injected != 1)
                    fail_msg("%s #%ld failing with %s: put gave %d (%s), %d injected", op_names[ops[oi]], k,
                             strerror(errs[ei].err), rc, ss_error(), t.injected);
                assert_int_equal(existed, 0);
                disarm(&t);
                assert_int_equal(strays(dir, ab, 2), 0); /* no temp file, no c.svd */
                ss_slice_info info;
                assert_int_equal(ss_store_info(s, c->id, &info), SS_EINVAL);
                ss_store_stats st;
                ss_store_get_stats(s, &st);
                assert_int_equal(st.slices, 2);
                cases++;
            }
    /* A write that writes nothing is a full disk. */
    arm(&t, T_WRITE, 2, WRITE_ZERO);
    assert_int_equal(ss_store_put(s, c, NULL), SS_ENOSPC);
    assert_int_equal(t.injected, 1);
    assert_int_equal(strays(dir, ab, 2), 0);
    disarm(&t);
    assert_int_equal(cases, 3 * (5 + per_put[T_WRITE]));
    assert_holds_exactly(s, ab, 2);
    ss_store_close(s);

    s = open_with(dir, NULL); /* plain POSIX: exactly the acknowledged two */
    assert_holds_exactly(s, ab, 2);
    assert_int_equal(ss_store_put(s, c, NULL), SS_OK); /* the store still works */
    ss_store_close(s);
    s = open_with(dir, NULL);
    assert_holds_exactly(s, abc, 3);
    ss_store_close(s);
    assert_int_equal(strays(dir, abc, 3), 0);

    tu_rm_rf(dir);
    free(dir);
    for (int i = 0; i < 3; i++) ss_factors_free(abc[i]);
    faulty_destroy(&t);
}

/* ---- delete -------------------------------------------------------------------------- */

static void test_delete_failures(void **state) {
    (void)state;
    faulty t;
    faulty_init(&t);
    char *dir = tu_tmpdir("faults");
    ss_factors *a = make_slice(11, 16, 10, 1), *b = make_slice(12, 16, 10, 2), *c = make_slice(13, 16, 10, 3);
    ss_factors *abc[] = {a, b, c}, *bc[] = {b, c}, *c_only[] = {c};
    ss_store *s = open_with(dir, &t.ops);
    for (int i = 0; i < 3; i++) assert_int_equal(ss_store_put(s, abc[i], NULL), SS_OK);
    int err;
    const ss_factors *held = ss_store_acquire(s, a->id, &err); /* cached and held */
    assert_non_null(held);

    /* unlink fails: nothing changed, the slice is still listed and served */
    arm(&t, T_UNLINK, 1, EIO);
    assert_int_equal(ss_store_delete(s, a->id), SS_EIO);
    assert_int_equal(t.injected, 1);
    disarm(&t);
    assert_true(file_exists(dir, a->id));
    assert_holds_exactly(s, abc, 3);
    ss_store_release(s, held);
    ss_store_stats st;
    ss_store_get_stats(s, &st);
    assert_int_equal(st.slices, 3);

    /* the directory fsync after the unlink fails: the file is gone and cannot
     * be brought back, so the index forgets it too (it answers "no slice") */
    arm(&t, T_FSYNC, 1, EIO);
    assert_int_equal(ss_store_delete(s, a->id), SS_EIO);
    assert_int_equal(t.injected, 1);
    disarm(&t);
    assert_false(file_exists(dir, a->id));
    assert_null(ss_store_acquire(s, a->id, &err));
    assert_int_equal(err, SS_EINVAL);
    assert_int_equal(ss_store_delete(s, a->id), SS_EINVAL);
    assert_holds_exactly(s, bc, 2);

    /* a file removed behind the store's back still deletes */
    char p[512];
    snprintf(p, sizeof p, "%s/%s.svd", dir, b->id);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(ss_store_delete(s, b->id), SS_OK);
    assert_holds_exactly(s, c_only, 1);
    ss_store_close(s);

    s = open_with(dir, NULL);
    assert_holds_exactly(s, c_only, 1);
    ss_store_close(s);
    assert_int_equal(strays(dir, c_only, 1), 0);
    tu_rm_rf(dir);
    free(dir);
    for (int i = 0; i < 3; i++) ss_factors_free(abc[i]);
    faulty_destroy(&t);
}

typedef struct {
    ss_store *s;
    const char *id;
    int rc;
} del_arg;

static void *delete_thread(void *p) {
    del_arg *d = p;
    d->rc = ss_store_delete(d->s, d->id);
    return NULL;
}

/* A read that fails because a delete is removing the file is "no slice"
 * (404), not an I/O error (500), though the index still holds the entry. */
static void test_read_racing_a_delete_is_not_found(void **state) {
    (void)state;
    faulty t;
    faulty_init(&t);
    char *dir = tu_tmpdir("faults");
    ss_factors *a = make_slice(21, 16, 10, 1);
    ss_store *s = open_with(dir, &t.ops);
    assert_int_equal(ss_store_put(s, a, NULL), SS_OK);
    ss_store_close(s);
    s = open_with(dir, &t.ops); /* nothing cached */

    t.block_dir_fsync = 1; /* the delete stops after its unlink */
    del_arg d = {s, a->id, -100};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, delete_thread, &d), 0);
    pthread_mutex_lock(&t.mu);
    while (!t.blocked) pthread_cond_wait(&t.cv, &t.mu);
    pthread_mutex_unlock(&t.mu);
    assert_false(file_exists(dir, a->id));
    int err = 0;
    assert_null(ss_store_acquire(s, a->id, &err));
    assert_int_equal(err, SS_EINVAL);
    unsigned char *buf = NULL;
    size_t len = 0;
    assert_int_equal(ss_store_read_file(s, a->id, &buf, &len), SS_EINVAL);
    pthread_mutex_lock(&t.mu);
    t.go = 1;
    pthread_cond_broadcast(&t.cv);
    pthread_mutex_unlock(&t.mu);
    pthread_join(th, NULL);
    assert_int_equal(d.rc, SS_OK);
    assert_holds_exactly(s, NULL, 0);
    ss_store_close(s);
    tu_rm_rf(dir);
    free(dir);
    ss_factors_free(a);
    faulty_destroy(&t);
}

/* ---- open: listing and reading ------------------------------------------------------ */

static void test_open_fails_rather_than_look_empty(void **state) {
    (void)state;
    faulty t;
    faulty_init(&t);
    char *dir = tu_tmpdir("faults");
    ss_factors *a = make_slice(31, 12, 12, 1), *b = make_slice(32, 12, 12, 2);
    ss_factors *ab[] = {a, b};
    ss_store *s = open_with(dir, NULL);
    for (int i = 0; i < 2; i++) assert_int_equal(ss_store_put(s, ab[i], NULL), SS_OK);
    ss_store_close(s);

    ss_store_opts o = {.dir = dir, .cache_bytes = 1 << 24, .fileops = &t.ops};
    const struct { int op, list_fail_after; } cases[] = {{T_MKDIR, 0}, {T_OPEN, 0}, {T_LIST, 0}, {-1, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        arm(&t, cases[i].op, 1, cases[i].op == T_MKDIR ? EACCES : EIO);
        t.list_fail_after = cases[i].list_fail_after;
        s = (ss_store *)&t; /* must be reset to NULL */
        int rc = ss_store_open(&o, &s);
        if (rc != SS_EIO || t.injected != 1)
            fail_msg("case %zu: open gave %d (%s), %d injected", i, rc, ss_error(), t.injected);
        assert_null(s);
        if (cases[i].list_fail_after) assert_int_equal(t.listed, 1); /* it failed mid-way */
    }
    t.list_fail_after = 0;
    disarm(&t);
    s = open_with(dir, &t.ops);
    assert_holds_exactly(s, ab, 2);
    ss_store_close(s);
    tu_rm_rf(dir);
    free(dir);
    for (int i = 0; i < 2; i++) ss_factors_free(ab[i]);
    faulty_destroy(&t);
}

static void test_read_errors_lose_nothing(void **state) {
    (void)state;
    faulty t;
    faulty_init(&t);
    char *dir = tu_tmpdir("faults");
    ss_factors *a = make_slice(41, 12, 14, 1), *b = make_slice(42, 12, 14, 2);
    ss_factors *ab[] = {a, b};
    ss_store *s = open_with(dir, &t.ops);
    for (int i = 0; i < 2; i++) assert_int_equal(ss_store_put(s, ab[i], NULL), SS_OK);
    ss_store_close(s);

    /* at open (which reads headers and singular values), an unreadable slice is
     * skipped (logged), its file kept */
    arm(&t, T_READRANGE, 1, EIO);
    s = open_with(dir, &t.ops);
    assert_int_equal(t.injected, 1);
    ss_store_stats st;
    ss_store_get_stats(s, &st);
    assert_int_equal(st.slices, 1);
    ss_store_close(s);
    assert_true(file_exists(dir, a->id) && file_exists(dir, b->id));

    /* later, a failed read is an I/O error, not "no slice", and not a loss */
    disarm(&t);
    s = open_with(dir, &t.ops);
    arm(&t, T_READ, 1, EIO);
    int err = 0;
    assert_null(ss_store_acquire(s, a->id, &err));
    assert_int_equal(err, SS_EIO);
    assert_int_equal(t.injected, 1);
    unsigned char *buf = NULL;
    size_t len = 0;
    arm(&t, T_READ, 1, EIO);
    assert_int_equal(ss_store_read_file(s, b->id, &buf, &len), SS_EIO);
    assert_int_equal(t.injected, 1);
    disarm(&t);
    assert_holds_exactly(s, ab, 2);
    assert_int_equal(ss_store_read_file(s, b->id, &buf, &len), SS_OK);
    assert_true(len > SS_SVD_HEADER_BYTES);
    free(buf);
    ss_store_close(s);
    tu_rm_rf(dir);
    free(dir);
    for (int i = 0; i < 2; i++) ss_factors_free(ab[i]);
    faulty_destroy(&t);
}

/* ---- backend choice and the server's fault switch ------------------------------------ */

static void test_backend_choice(void **state) {
    (void)state;
    char *dir = tu_tmpdir("faults");
    ss_store *s = NULL;
    ss_store_opts o = {.dir = dir, .cache_bytes = 1 << 20, .backend = "pg"};
    assert_int_equal(ss_store_open(&o, &s), SS_EINVAL);
    assert_null(s);
    o.backend = "dir";
    assert_int_equal(ss_store_open(&o, &s), SS_OK);
    ss_store_close(s);
    o.dir = "";
    assert_int_equal(ss_store_open(&o, &s), SS_EINVAL);
    tu_rm_rf(dir);
    free(dir);
}

static void test_fault_spec_from_the_environment(void **state) {
    (void)state;
    char *dir = tu_tmpdir("faults");
    ss_factors *a = make_slice(51, 12, 12, 1), *b = make_slice(52, 12, 12, 2);
    ss_factors *a_only[] = {a};
    ss_store_opts o = {.dir = dir, .cache_bytes = 1 << 20};
    ss_store *s = NULL;
    /* open #1 is the directory: the second open is the first put's temp file */
    assert_int_equal(setenv("SVDSLICE_TEST_FAULT", "open:2:ENOSPC,rename:2", 1), 0);
    assert_int_equal(ss_store_open(&o, &s), SS_OK);
    assert_int_equal(ss_store_put(s, a, NULL), SS_ENOSPC);
    assert_int_equal(ss_store_put(s, a, NULL), SS_OK); /* each rule fires once */
    assert_int_equal(ss_store_put(s, b, NULL), SS_EIO);
    assert_int_equal(strays(dir, a_only, 1), 0);
    ss_store_close(s);
    /* an explicit table wins over the environment */
    s = open_with(dir, &ss_fileops_posix);
    assert_int_equal(ss_store_put(s, b, NULL), SS_OK);
    assert_int_equal(ss_store_delete(s, b->id), SS_OK);
    ss_store_close(s);

    const char *bad[] = {"rename", "rename:0", "rename:x", "rename:1:EPERM", "frobnicate:1", "open:1,", ","};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(setenv("SVDSLICE_TEST_FAULT", bad[i], 1), 0);
        s = NULL;
        if (ss_store_open(&o, &s) != SS_EINVAL) fail_msg("spec \"%s\" was accepted", bad[i]);
        assert_null(s);
    }
    assert_int_equal(unsetenv("SVDSLICE_TEST_FAULT"), 0);
    s = open_with(dir, NULL);
    assert_holds_exactly(s, a_only, 1);
    ss_store_close(s);
    tu_rm_rf(dir);
    free(dir);
    ss_factors_free(a);
    ss_factors_free(b);
}

/* ---- volumes: the backend's second kind of blob (vput, vget, vdel, vlist, vhead) ---- */

/* The .svv of a small generated uint8 volume (seed changes the voxels and so the id). */
static unsigned char *make_svv(unsigned seed, size_t *len, char id[65]) {
    const int nx = 7, ny = 6, nz = 5;
    unsigned char vox[7 * 6 * 5];
    uint64_t st = seed * 2654435761u + 1;
    for (size_t i = 0; i < sizeof vox; i++) vox[i] = (unsigned char)(tu_rand_u64(&st) >> 56);
    tu_nii h = tu_nii_3d(1, nx, ny, nz, SS_NII_UINT8, 1);
    size_t nlen = 0;
    unsigned char *nii = tu_nifti_build(&h, vox, sizeof vox, 1, &nlen);
    assert_non_null(nii);
    ss_volume *v = NULL;
    assert_int_equal(ss_volume_from_nifti(nii, nlen, NULL, &v), SS_OK);
    free(nii);
    assert_int_equal(ss_volume_factor_all(v, 1), SS_OK);
    unsigned char *svv = NULL;
    assert_int_equal(ss_volume_serialize(v, &svv, len), SS_OK);
    memcpy(id, v->id, 65);
    ss_volume_free(v);
    return svv;
}

typedef struct {
    char (*ids)[65];
    int n, max;
} id_list;

static int collect(void *arg, const char *id) {
    id_list *l = arg;
    if (l->n < l->max) snprintf(l->ids[l->n], 65, "%s", id);
    l->n++;
    return 0;
}

/* The volumes the backend lists are exactly want[0..n), each read back as stored, and the
 * volumes directory holds nothing else (no temp file). */
static void assert_volumes_exactly(ss_store_backend *b, const char *dir, char (*want)[65],
                                   unsigned char **blobs, size_t *lens, int n) {
    char got[8][65];
    id_list l = {got, 0, 8};
    assert_int_equal(b->vlist(b, collect, &l), SS_OK);
    assert_int_equal(l.n, n);
    for (int i = 0; i < n; i++) {
        int found = 0;
        for (int j = 0; j < l.n; j++) found |= !strcmp(got[j], want[i]);
        assert_true(found);
        unsigned char *buf = NULL, head[SS_SVV_HEADER_BYTES];
        size_t len = 0, flen = 0;
        assert_int_equal(b->vget(b, want[i], &buf, &len), SS_OK);
        assert_int_equal(len, lens[i]);
        assert_memory_equal(buf, blobs[i], len);
        free(buf);
        assert_int_equal(b->vhead(b, want[i], sizeof head, head, &flen), SS_OK);
        assert_int_equal(flen, lens[i]);
        assert_memory_equal(head, blobs[i], sizeof head);
    }
    char vdir[512];
    snprintf(vdir, sizeof vdir, "%s/volumes", dir);
    DIR *d = opendir(vdir);
    assert_non_null(d);
    int files = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) files++;
    closedir(d);
    assert_int_equal(files, n);
}

static void rm_volumes_dir(const char *dir) {
    char vdir[512];
    snprintf(vdir, sizeof vdir, "%s/volumes", dir);
    tu_rm_rf(vdir);
}

static void test_volume_calls_fail_cleanly(void **state) {
    (void)state;
    faulty t;
    faulty_init(&t);
    t.write_cap = 512;
    char ids[3][65];
    unsigned char *blobs[3];
    size_t lens[3];
    for (int i = 0; i < 3; i++) blobs[i] = make_svv(40 + (unsigned)i, &lens[i], ids[i]);
    char *dir = tu_tmpdir("vfaults");
    ss_store *s = open_with(dir, &t.ops);
    ss_store_backend *b = ss_store_get_backend(s);
    assert_non_null(b->vput);

    /* No volume yet: an empty list, and no file call made for one. */
    arm(&t, -1, 0, 0);
    id_list none = {NULL, 0, 0};
    assert_int_equal(b->vlist(b, collect, &none), SS_OK);
    assert_int_equal(none.n, 0);
    assert_int_equal(t.calls[T_MKDIR] + t.calls[T_LIST], 0);

    /* The first put creates volumes/ (mkdir, then the data directory's fsync): each step fails
     * in turn, leaving no file and nothing listed. */
    arm(&t, -1, 0, 0);
    char *scratch = tu_tmpdir("vfaults");
    ss_store *s2 = open_with(scratch, &t.ops);
    arm(&t, -1, 0, 0);
    ss_store_backend *b2 = ss_store_get_backend(s2);
    assert_int_equal(b2->vput(b2, ids[0], blobs[0], lens[0]), SS_OK);
    long first[T_NOPS];
    memcpy(first, t.calls, sizeof first);
    arm(&t, -1, 0, 0);
    assert_int_equal(b2->vput(b2, ids[1], blobs[1], lens[1]), SS_OK);
    long per_put[T_NOPS];
    memcpy(per_put, t.calls, sizeof per_put);
    ss_store_close(s2);
    rm_volumes_dir(scratch);
    tu_rm_rf(scratch);
    free(scratch);
    assert_int_equal(first[T_MKDIR], 1);
    assert_int_equal(first[T_FSYNC], 3); /* data dir after mkdir, the file, volumes/ */
    assert_int_equal(per_put[T_MKDIR], 0);
    assert_int_equal(per_put[T_OPEN], 1);
    assert_true(per_put[T_WRITE] >= 3);
    assert_int_equal(per_put[T_FSYNC], 2);
    assert_int_equal(per_put[T_RENAME], 1);

    const int ops[] = {T_MKDIR, T_OPEN, T_WRITE, T_FSYNC, T_CLOSE, T_RENAME};
    int cases = 0;
    for (size_t oi = 0; oi < sizeof ops / sizeof *ops; oi++)
        for (long k = 1; k <= first[ops[oi]]; k++) { /* each on a fresh store: the first put's steps */
            char *fresh = tu_tmpdir("vfaults");
            disarm(&t);
            ss_store *fs = open_with(fresh, &t.ops);
            ss_store_backend *fb = ss_store_get_backend(fs);
            arm(&t, ops[oi], k, oi % 2 ? ENOSPC : EIO);
            int rc = fb->vput(fb, ids[0], blobs[0], lens[0]);
            if (rc != (oi % 2 ? SS_ENOSPC : SS_EIO) || t.injected != 1)
                fail_msg("first vput, %s #%ld failing: %d (%s), %d injected", op_names[ops[oi]], k, rc, ss_error(),
                         t.injected);
            disarm(&t);
            id_list l = {NULL, 0, 0};
            assert_int_equal(fb->vlist(fb, collect, &l), SS_OK);
            assert_int_equal(l.n, 0);
            assert_int_equal(fb->vput(fb, ids[0], blobs[0], lens[0]), SS_OK); /* and then it works */
            assert_volumes_exactly(fb, fresh, ids, blobs, lens, 1);
            ss_store_close(fs);
            rm_volumes_dir(fresh);
            tu_rm_rf(fresh);
            free(fresh);
            cases++;
        }
    assert_true(cases >= 8);
    assert_int_equal(b->vput(b, ids[0], blobs[0], lens[0]), SS_OK);
    assert_int_equal(b->vput(b, ids[1], blobs[1], lens[1]), SS_OK);
    /* Later puts: every step fails in turn, nothing partial stays, nothing stored is lost. */
    const int ops2[] = {T_OPEN, T_WRITE, T_FSYNC, T_CLOSE, T_RENAME};
    for (size_t oi = 0; oi < sizeof ops2 / sizeof *ops2; oi++)
        for (long k = 1; k <= per_put[ops2[oi]]; k++) {
            arm(&t, ops2[oi], k, EIO);
            assert_int_equal(b->vput(b, ids[2], blobs[2], lens[2]), SS_EIO);
            assert_int_equal(t.injected, 1);
            disarm(&t);
            assert_volumes_exactly(b, dir, ids, blobs, lens, 2);
        }

    /* Reads that fail lose nothing; a listing that fails is an error, never a shorter list. */
    unsigned char *buf = NULL, head[SS_SVV_HEADER_BYTES];
    size_t len = 0;
    arm(&t, T_READ, 1, EIO);
    assert_int_equal(b->vget(b, ids[0], &buf, &len), SS_EIO);
    arm(&t, T_READRANGE, 1, EIO);
    assert_int_equal(b->vhead(b, ids[0], sizeof head, head, &len), SS_EIO);
    arm(&t, T_LIST, 1, EIO);
    id_list l = {NULL, 0, 0};
    assert_int_equal(b->vlist(b, collect, &l), SS_EIO);
    disarm(&t);
    assert_volumes_exactly(b, dir, ids, blobs, lens, 2);

    /* The volume store refuses to open on a listing that fails (a bad disk never looks empty). */
    arm(&t, T_LIST, 1, EIO);
    ss_vstore_opts vo = {.backend = b, .cache_bytes = 1 << 20, .parallel = 1};
    ss_vstore *vs = NULL;
    assert_int_equal(ss_vstore_open(&vo, &vs), SS_EIO);
    disarm(&t);
    assert_int_equal(ss_vstore_open(&vo, &vs), SS_OK); /* indexes both from their headers */
    ss_vstore_stats vst;
    ss_vstore_get_stats(vs, &vst);
    assert_int_equal(vst.volumes, 2);
    assert_int_equal(vst.ready, 2);
    ss_vstore_close(vs);

    /* Delete: a failed unlink keeps it; a failed directory fsync after it is gone (gone = 1). */
    int gone = -1;
    arm(&t, T_UNLINK, 1, EIO);
    assert_int_equal(b->vdel(b, ids[0], &gone), SS_EIO);
    assert_int_equal(gone, 0);
    disarm(&t);
    assert_volumes_exactly(b, dir, ids, blobs, lens, 2);
    arm(&t, T_FSYNC, 1, EIO);
    assert_int_equal(b->vdel(b, ids[0], &gone), SS_EIO);
    assert_int_equal(gone, 1);
    disarm(&t);
    assert_volumes_exactly(b, dir, ids + 1, blobs + 1, lens + 1, 1);
    ss_store_close(s);

    /* Plain POSIX: exactly what was acknowledged and not deleted. */
    s = open_with(dir, NULL);
    b = ss_store_get_backend(s);
    assert_volumes_exactly(b, dir, ids + 1, blobs + 1, lens + 1, 1);
    assert_int_equal(b->vput(b, ids[2], blobs[2], lens[2]), SS_OK);
    assert_volumes_exactly(b, dir, ids + 1, blobs + 1, lens + 1, 2);
    ss_store_close(s);
    rm_volumes_dir(dir);
    tu_rm_rf(dir);
    free(dir);
    for (int i = 0; i < 3; i++) free(blobs[i]);
    faulty_destroy(&t);
}

int main(void) {
    unsetenv("SVDSLICE_TEST_FAULT"); /* the tests choose their faults */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_fails_cleanly_at_every_step),
        cmocka_unit_test(test_delete_failures),
        cmocka_unit_test(test_read_racing_a_delete_is_not_found),
        cmocka_unit_test(test_open_fails_rather_than_look_empty),
        cmocka_unit_test(test_read_errors_lose_nothing),
        cmocka_unit_test(test_backend_choice),
        cmocka_unit_test(test_fault_spec_from_the_environment),
        cmocka_unit_test(test_volume_calls_fail_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
