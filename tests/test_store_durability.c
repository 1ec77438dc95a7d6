/* test_store_durability.c - what a crash would keep: a file-operations table records every call
 * of the directory backend, and a crash model replayed over each prefix of that journal says
 * what the disk would hold. An acknowledged put or delete must survive a crash at any later
 * point; no crash point may leave a partial slice under its name. Removing either fsync of a
 * put, or the directory fsync of a delete, fails these tests. Also: a file whose name is not
 * its slice's id is never served under that name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/svd.h"
#include "server/store.h"
#include "server/store_dir.h"
#include "tests/util/testutil.h"
#include "util/error.h"
#include "util/file.h"

/* ---- the journal ----------------------------------------------------------------------- */

enum { J_OPEN, J_WRITE, J_FSYNC, J_CLOSE, J_RENAME, J_UNLINK, J_ACK };
typedef struct jentry {
    int op;
    int fd;          /* open (the fd it returned), write, fsync, close */
    int is_dir;      /* fsync of the data directory */
    char a[96], b[96]; /* open: name; rename: from, to; unlink: name; ack: "put ID" / "del ID" */
} jentry;

typedef struct journal {
    ss_fileops ops;
    int dirfd;     /* the data directory's fd, once the store opened it */
    int recording;
    jentry e[256];
    int n;
} journal;

static const ss_fileops *px = &ss_fileops_posix;

static void jadd(journal *j, jentry e) {
    if (!j->recording) return;
    assert_true(j->n < (int)(sizeof j->e / sizeof j->e[0]));
    j->e[j->n++] = e;
}

static int j_mkdir(void *ctx, const char *path, mode_t mode) { return px->mkdir(NULL, path, mode); }
static int j_open(void *ctx, int dirfd, const char *name, int flags, mode_t mode) {
    journal *j = ctx;
    int fd = px->open(NULL, dirfd, name, flags, mode);
    if (fd >= 0 && (flags & O_DIRECTORY)) j->dirfd = fd;
    if (fd >= 0 && !(flags & O_DIRECTORY)) {
        jentry e = {.op = J_OPEN, .fd = fd};
        snprintf(e.a, sizeof e.a, "%s", name);
        jadd(j, e);
    }
    return fd;
}
static ssize_t j_write(void *ctx, int fd, const void *buf, size_t n) {
    ssize_t w = px->write(NULL, fd, buf, n);
    if (w > 0) jadd(ctx, (jentry){.op = J_WRITE, .fd = fd});
    return w;
}
static int j_fsync(void *ctx, int fd) {
    journal *j = ctx;
    int rc = px->fsync(NULL, fd);
    if (rc == 0) jadd(j, (jentry){.op = J_FSYNC, .fd = fd, .is_dir = fd == j->dirfd});
    return rc;
}
static int j_close(void *ctx, int fd) {
    jadd(ctx, (jentry){.op = J_CLOSE, .fd = fd});
    return px->close(NULL, fd);
}
static int j_rename(void *ctx, int dirfd, const char *from, const char *to) {
    int rc = px->rename(NULL, dirfd, from, to);
    if (rc == 0) {
        jentry e = {.op = J_RENAME};
        snprintf(e.a, sizeof e.a, "%s", from);
        snprintf(e.b, sizeof e.b, "%s", to);
        jadd(ctx, e);
    }
    return rc;
}
static int j_unlink(void *ctx, int dirfd, const char *name) {
    int rc = px->unlink(NULL, dirfd, name);
    if (rc == 0) {
        jentry e = {.op = J_UNLINK};
        snprintf(e.a, sizeof e.a, "%s", name);
        jadd(ctx, e);
    }
    return rc;
}
static int j_list(void *ctx, int dirfd, int (*each)(void *, const char *), void *arg) {
    return px->list(NULL, dirfd, each, arg);
}
static int j_read(void *ctx, const char *path, size_t max, unsigned char **buf, size_t *len) {
    return px->read_file(NULL, path, max, buf, len);
}
static int j_read_range(void *ctx, const char *path, size_t off, size_t n, unsigned char *buf, size_t *flen) {
    return px->read_range(NULL, path, off, n, buf, flen);
}

static void journal_init(journal *j) {
    memset(j, 0, sizeof *j);
    j->dirfd = -1;
    j->ops = (ss_fileops){j,        j_mkdir,  j_open, j_write, j_fsync,     j_close,
                          j_rename, j_unlink, j_list, j_read,  j_read_range};
}

static void ack(journal *j, const char *what, const char *id) {
    jentry e = {.op = J_ACK};
    snprintf(e.a, sizeof e.a, "%s %s", what, id);
    jadd(j, e);
}

/* ---- the crash model ------------------------------------------------------------------ */
/* A file's data survives a crash once the file was fsynced after its last write; a name
 * (created by open, moved by rename, removed by unlink) survives once the directory was
 * fsynced after the change (ext4 and XFS give no more without these). The model keeps, per
 * name, whether the durable directory holds it and whether its inode's data are durable. */

enum { MAXN = 32 };
typedef struct inode {
    int dirty, durable_data; /* writes since the last fsync; all data durable at least once */
} inode;
typedef struct dent {
    char name[96];
    int ino;          /* index into inodes, -1: the name is gone */
    int durable_ino;  /* what the durable directory holds under the name, -1: nothing */
} dent;
typedef struct model {
    inode ino[MAXN];
    int nino;
    dent d[MAXN];
    int nd;
    int fd_ino[1024]; /* fd -> inode */
} model;

static dent *lookup(model *m, const char *name, int create) {
    for (int i = 0; i < m->nd; i++)
        if (!strcmp(m->d[i].name, name)) return &m->d[i];
    if (!create) return NULL;
    assert_true(m->nd < MAXN);
    dent *e = &m->d[m->nd++];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->ino = e->durable_ino = -1;
    return e;
}

/* The durable state after the first n entries: for each name the durable directory holds,
 * 1 if its data are complete (fsynced after the last write), 0 if it would read torn. */
static void replay(const journal *j, int n, model *m) {
    memset(m, 0, sizeof *m);
    for (int i = 0; i < n; i++) {
        const jentry *e = &j->e[i];
        switch (e->op) {
        case J_OPEN: {
            assert_true(m->nino < MAXN && e->fd >= 0 && e->fd < 1024);
            int k = m->nino++;
            m->ino[k] = (inode){0, 0};
            m->fd_ino[e->fd] = k;
            lookup(m, e->a, 1)->ino = k;
            break;
        }
        case J_WRITE:
            m->ino[m->fd_ino[e->fd]].dirty = 1;
            m->ino[m->fd_ino[e->fd]].durable_data = 0;
            break;
        case J_FSYNC:
            if (e->is_dir) {
                for (int k = 0; k < m->nd; k++) m->d[k].durable_ino = m->d[k].ino;
            } else {
                m->ino[m->fd_ino[e->fd]].dirty = 0;
                m->ino[m->fd_ino[e->fd]].durable_data = 1;
            }
            break;
        case J_RENAME: {
            dent *from = lookup(m, e->a, 0);
            assert_non_null(from);
            lookup(m, e->b, 1)->ino = from->ino;
            from->ino = -1;
            break;
        }
        case J_UNLINK:
            lookup(m, e->a, 1)->ino = -1;
            break;
        default:
            break;
        }
    }
}

/* What a crash after the first n entries leaves under id's file name: -1 nothing, 0 a torn
 * file, 1 the complete file. */
static int survives(const journal *j, int n, const char *id) {
    model m;
    replay(j, n, &m);
    char nm[96];
    snprintf(nm, sizeof nm, "%s.svd", id);
    dent *e = lookup(&m, nm, 0);
    if (!e || e->durable_ino < 0) return -1;
    return m.ino[e->durable_ino].durable_data ? 1 : 0;
}

/* ---- helpers -------------------------------------------------------------------------- */

static ss_factors *make_slice(unsigned seed, int h, int w) {
    ss_factors *f = tu_gray_slice(seed, h, w);
    assert_non_null(f);
    snprintf(f->id, sizeof f->id, "d%u", seed);
    snprintf(f->name, sizeof f->name, "slice %u", seed);
    f->created = 1000 + seed;
    return f;
}

static int find_ack(const journal *j, const char *what) {
    for (int i = 0; i < j->n; i++)
        if (j->e[i].op == J_ACK && !strcmp(j->e[i].a, what)) return i;
    fail_msg("no ack '%s' in the journal", what);
    return -1;
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_acknowledged_put_survives_a_crash_anywhere_after(void **state) {
    (void)state;
    char *dir = tu_tmpdir("durable");
    journal j;
    journal_init(&j);
    ss_store_opts o = {.dir = dir, .cache_bytes = 1 << 24, .fileops = &j.ops};
    ss_store *s = NULL;
    assert_int_equal(ss_store_open(&o, &s), SS_OK);
    ss_factors *a = make_slice(1, 24, 17), *b = make_slice(2, 19, 30);
    j.recording = 1;
    assert_int_equal(ss_store_put(s, a, NULL), SS_OK);
    ack(&j, "put", a->id);
    assert_int_equal(ss_store_put(s, b, NULL), SS_OK);
    ack(&j, "put", b->id);
    j.recording = 0;

    int put_a = find_ack(&j, "put d1"), put_b = find_ack(&j, "put d2");
    for (int n = 0; n <= j.n; n++) {
        int sa = survives(&j, n, a->id), sb = survives(&j, n, b->id);
        /* never a torn slice under its name, whatever the crash point */
        assert_int_not_equal(sa, 0);
        assert_int_not_equal(sb, 0);
        if (n > put_a) assert_int_equal(sa, 1);
        if (n > put_b) assert_int_equal(sb, 1);
    }
    ss_store_close(s);
    ss_factors_free(a);
    ss_factors_free(b);
    tu_rm_rf(dir);
    free(dir);
}

static void test_acknowledged_delete_survives_a_crash(void **state) {
    (void)state;
    char *dir = tu_tmpdir("durable");
    journal j;
    journal_init(&j);
    ss_store_opts o = {.dir = dir, .cache_bytes = 1 << 24, .fileops = &j.ops};
    ss_store *s = NULL;
    assert_int_equal(ss_store_open(&o, &s), SS_OK);
    ss_factors *a = make_slice(3, 16, 16);
    j.recording = 1;
    assert_int_equal(ss_store_put(s, a, NULL), SS_OK);
    ack(&j, "put", a->id);
    assert_int_equal(ss_store_delete(s, a->id), SS_OK);
    ack(&j, "del", a->id);
    j.recording = 0;
    int del = find_ack(&j, "del d3");
    for (int n = del + 1; n <= j.n; n++) assert_int_equal(survives(&j, n, a->id), -1);
    ss_store_close(s);
    ss_factors_free(a);
    tu_rm_rf(dir);
    free(dir);
}

/* The model itself must see a missing fsync, or the tests above prove nothing. */
static void test_crash_model_catches_missing_fsyncs(void **state) {
    (void)state;
    journal j;
    journal_init(&j);
    j.recording = 1;
    j.dirfd = 3;
    jentry open_tmp = {.op = J_OPEN, .fd = 5};
    snprintf(open_tmp.a, sizeof open_tmp.a, "x.tmp");
    jentry ren = {.op = J_RENAME};
    snprintf(ren.a, sizeof ren.a, "x.tmp");
    snprintf(ren.b, sizeof ren.b, "x.svd");
    /* no file fsync: torn after the directory fsync */
    jadd(&j, open_tmp);
    jadd(&j, (jentry){.op = J_WRITE, .fd = 5});
    jadd(&j, ren);
    jadd(&j, (jentry){.op = J_FSYNC, .fd = 3, .is_dir = 1});
    assert_int_equal(survives(&j, j.n, "x"), 0);
    /* no directory fsync: gone */
    j.n = 0;
    jadd(&j, open_tmp);
    jadd(&j, (jentry){.op = J_WRITE, .fd = 5});
    jadd(&j, (jentry){.op = J_FSYNC, .fd = 5});
    jadd(&j, ren);
    assert_int_equal(survives(&j, j.n, "x"), -1);
    /* both: complete */
    jadd(&j, (jentry){.op = J_FSYNC, .fd = 3, .is_dir = 1});
    assert_int_equal(survives(&j, j.n, "x"), 1);
}

/* A slice file copied under another id's name (a bad restore, a hand edit) must not be served
 * as that id: its content names another slice. */
static void test_file_under_a_foreign_name_is_not_served(void **state) {
    (void)state;
    char *dir = tu_tmpdir("durable");
    ss_store_opts o = {.dir = dir, .cache_bytes = 1 << 24};
    ss_store *s = NULL;
    assert_int_equal(ss_store_open(&o, &s), SS_OK);
    ss_factors *a = make_slice(4, 12, 9);
    assert_int_equal(ss_store_put(s, a, NULL), SS_OK);
    ss_store_close(s);

    char from[512], to[512];
    snprintf(from, sizeof from, "%s/%s.svd", dir, a->id);
    snprintf(to, sizeof to, "%s/impostor.svd", dir);
    unsigned char *buf = NULL;
    size_t len = 0;
    assert_int_equal(ss_read_file(from, 1 << 26, &buf, &len), SS_OK);
    FILE *fp = fopen(to, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    fclose(fp);
    free(buf);

    assert_int_equal(ss_store_open(&o, &s), SS_OK);
    ss_slice_info *list = NULL;
    size_t n = 0;
    assert_int_equal(ss_store_list(s, &list, &n), SS_OK);
    assert_int_equal(n, 1); /* the real slice only: the copy is neither listed nor indexed twice */
    assert_string_equal(list[0].id, a->id);
    free(list);
    int err = 0;
    const ss_factors *g = ss_store_acquire(s, "impostor", &err);
    assert_null(g);
    assert_int_not_equal(err, SS_OK);
    g = ss_store_acquire(s, a->id, &err); /* the real one still is */
    assert_non_null(g);
    ss_store_release(s, g);
    ss_store_close(s);
    ss_factors_free(a);
    tu_rm_rf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_model_catches_missing_fsyncs),
        cmocka_unit_test(test_acknowledged_put_survives_a_crash_anywhere_after),
        cmocka_unit_test(test_acknowledged_delete_survives_a_crash),
        cmocka_unit_test(test_file_under_a_foreign_name_is_not_served),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
