/* store_dir.c - the directory store backend: one immutable ID.svd file per slice, written
 * temp file + fsync + rename + directory fsync, every file call through an ss_fileops table */
#include "server/store_dir.h"
#include "util/error.h"
#include "util/file.h"
#include "server/store_backend.h"

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- POSIX file operations --------------------------------------------------- */

static int px_mkdir(void *ctx, const char *path, mode_t mode) { return mkdir(path, mode); }
static int px_open(void *ctx, int dirfd, const char *name, int flags, mode_t mode) {
    return openat(dirfd, name, flags, mode);
}
static ssize_t px_write(void *ctx, int fd, const void *buf, size_t n) { return write(fd, buf, n); }
static int px_fsync(void *ctx, int fd) { return fsync(fd); }
static int px_close(void *ctx, int fd) { return close(fd); }
static int px_rename(void *ctx, int dirfd, const char *from, const char *to) {
    return renameat(dirfd, from, dirfd, to);
}
static int px_unlink(void *ctx, int dirfd, const char *name) { return unlinkat(dirfd, name, 0); }

static int px_list(void *ctx, int dirfd, int (*each)(void *arg, const char *name), void *arg) {
    /* A fresh descriptor: a dup would share (and leave behind) dirfd's read position. */
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) break;
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (each(arg, de->d_name) != 0) {
            errno = 0;
            break;
        }
    }
    int e = errno; /* readdir's: 0 at the end of the directory */
    closedir(d);
    errno = e;
    return e ? -1 : 0;
}

static int px_read_file(void *ctx, const char *path, size_t max_bytes, unsigned char **buf, size_t *len) {
    return ss_read_file(path, max_bytes, buf, len);
}
static int px_read_range(void *ctx, const char *path, size_t off, size_t n, unsigned char *buf,
                         size_t *file_len) {
    return ss_read_range(path, off, n, buf, file_len);
}

const ss_fileops ss_fileops_posix = {NULL,      px_mkdir,  px_open, px_write,     px_fsync,     px_close,
                                     px_rename, px_unlink, px_list, px_read_file, px_read_range};

/* ---- fault injection (tests only) -------------------------------------------------- */

enum { F_MKDIR, F_OPEN, F_WRITE, F_FSYNC, F_CLOSE, F_RENAME, F_UNLINK, F_LIST, F_READ, F_READRANGE, F_NOPS };
static const char *const fault_op_names[F_NOPS] = {"mkdir",  "open",   "write", "fsync", "close",
                                                   "rename", "unlink", "list",  "read",  "readrange"};

typedef struct fault_rule {
    int op;
    long nth;
    int err;
} fault_rule;

typedef struct fault_ops {
    ss_fileops ops; /* first: the table handed out is this struct */
    const ss_fileops *inner;
    fault_rule rules[16];
    int nrules;
    long calls[F_NOPS];
} fault_ops;

/* Counts a call of op; the errno to fail it with, or 0 to make it. */
static int fault_hit(fault_ops *f, int op) {
    long n = __atomic_add_fetch(&f->calls[op], 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < f->nrules; i++)
        if (f->rules[i].op == op && f->rules[i].nth == n) return f->rules[i].err;
    return 0;
}

#define FAULT_OR(op)                                                                                         \
    fault_ops *f = ctx;                                                                                      \
    int e_ = fault_hit(f, op);                                                                               \
    if (e_) {                                                                                                \
        errno = e_;                                                                                          \
        return -1;                                                                                           \
    }

static int ft_mkdir(void *ctx, const char *path, mode_t mode) {
    FAULT_OR(F_MKDIR);
    return f->inner->mkdir(f->inner->ctx, path, mode);
}
static int ft_open(void *ctx, int dirfd, const char *name, int flags, mode_t mode) {
    FAULT_OR(F_OPEN);
    return f->inner->open(f->inner->ctx, dirfd, name, flags, mode);
}
static ssize_t ft_write(void *ctx, int fd, const void *buf, size_t n) {
    FAULT_OR(F_WRITE);
    return f->inner->write(f->inner->ctx, fd, buf, n);
}
static int ft_fsync(void *ctx, int fd) {
    FAULT_OR(F_FSYNC);
    return f->inner->fsync(f->inner->ctx, fd);
}
static int ft_close(void *ctx, int fd) {
    fault_ops *f = ctx;
    int e = fault_hit(f, F_CLOSE);
    int rc = f->inner->close(f->inner->ctx, fd); /* closed even when failed, as Linux does: no leak */
    if (e) errno = e;
    return e ? -1 : rc;
}
static int ft_rename(void *ctx, int dirfd, const char *from, const char *to) {
    FAULT_OR(F_RENAME);
    return f->inner->rename(f->inner->ctx, dirfd, from, to);
}
static int ft_unlink(void *ctx, int dirfd, const char *name) {
    FAULT_OR(F_UNLINK);
    return f->inner->unlink(f->inner->ctx, dirfd, name);
}
static int ft_list(void *ctx, int dirfd, int (*each)(void *arg, const char *name), void *arg) {
    FAULT_OR(F_LIST);
    return f->inner->list(f->inner->ctx, dirfd, each, arg);
}
static int ft_read_file(void *ctx, const char *path, size_t max_bytes, unsigned char **buf, size_t *len) {
    fault_ops *f = ctx;
    int e = fault_hit(f, F_READ);
    if (e) return ss_fail(SS_EIO, "%s: %s (injected)", path, strerror(e));
    return f->inner->read_file(f->inner->ctx, path, max_bytes, buf, len);
}
static int ft_read_range(void *ctx, const char *path, size_t off, size_t n, unsigned char *buf,
                         size_t *file_len) {
    fault_ops *f = ctx;
    int e = fault_hit(f, F_READRANGE);
    if (e) return ss_fail(SS_EIO, "%s: %s (injected)", path, strerror(e));
    return f->inner->read_range(f->inner->ctx, path, off, n, buf, file_len);
}

/* One "OP:N[:ERR]" rule; returns 0 or -1. */
static int parse_rule(const char *s, size_t len, fault_rule *r) {
    char buf[64];
    if (len >= sizeof buf) return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *nth = strchr(buf, ':');
    if (!nth) return -1;
    *nth++ = '\0';
    char *err = strchr(nth, ':');
    if (err) *err++ = '\0';
    r->op = -1;
    for (int i = 0; i < F_NOPS; i++)
        if (!strcmp(buf, fault_op_names[i])) r->op = i;
    char *end;
    errno = 0;
    r->nth = strtol(nth, &end, 10);
    if (r->op < 0 || errno || end == nth || *end || r->nth < 1) return -1;
    if (!err || !strcmp(err, "EIO"))
        r->err = EIO;
    else if (!strcmp(err, "ENOSPC"))
        r->err = ENOSPC;
    else if (!strcmp(err, "EDQUOT"))
        r->err = EDQUOT;
    else
        return -1;
    return 0;
}

int ss_fileops_fault_new(const char *spec, const ss_fileops *inner, ss_fileops **out) {
    *out = NULL;
    fault_ops *f = calloc(1, sizeof *f);
    if (!f) return ss_fail(SS_ENOMEM, "out of memory");
    f->ops = (ss_fileops){f,         ft_mkdir,  ft_open, ft_write,     ft_fsync,     ft_close,
                          ft_rename, ft_unlink, ft_list, ft_read_file, ft_read_range};
    f->inner = inner;
    const char *p = spec ? spec : "";
    for (;;) { /* rule (',' rule)* */
        size_t n = strcspn(p, ",");
        if (f->nrules == (int)(sizeof f->rules / sizeof *f->rules) ||
            parse_rule(p, n, &f->rules[f->nrules]) != 0) {
            free(f);
            return ss_fail(SS_EINVAL, "fault spec \"%s\": want OP:N[:EIO|ENOSPC|EDQUOT][,...]", spec);
        }
        f->nrules++;
        if (!p[n]) break;
        p += n + 1;
    }
    *out = &f->ops;
    return SS_OK;
}

void ss_fileops_fault_free(ss_fileops *ops) { free(ops); /* ops is the first member */ }

/* ---- the backend ------------------------------------------------------------------ */

typedef struct dir_backend {
    ss_store_backend b; /* first: the core hands this pointer back */
    const ss_fileops *ops;
    ss_fileops *fault; /* owned, from SVDSLICE_TEST_FAULT; NULL normally */
    char *dir;
    int dirfd;
    int lockfd; /* DIR/.lock, flock'ed for as long as the store is open */
    unsigned long long tmp_tag; /* random per open: every container is PID 1 */
    unsigned long tmp_seq;
    /* DIR/volumes, where the volumes' ID.svv files live: opened at the first
     * volume call that finds it, created by the first vput (so a store without
     * volumes makes no file call for them). */
    int vdirfd;
    int vdir_synced; /* the data directory was fsynced with volumes/ in it */
    pthread_mutex_t vmu;
} dir_backend;

static int errno_code(int e) { return (e == ENOSPC || e == EDQUOT) ? SS_ENOSPC : SS_EIO; }

/* DIR/ID.svd; ids are validated by the core, never client text. */
static int slice_path(const dir_backend *d, const char *id, char *path, size_t n) {
    if ((size_t)snprintf(path, n, "%s/%s.svd", d->dir, id) >= n)
        return ss_fail(SS_EIO, "data directory path too long");
    return SS_OK;
}

/* Writes buf to a fresh temp file in the data directory and fsyncs it. */
static int write_temp(dir_backend *d, int dirfd, const unsigned char *buf, size_t len, char *tmpname, size_t tn) {
    const ss_fileops *o = d->ops;
    unsigned long seq = __atomic_add_fetch(&d->tmp_seq, 1, __ATOMIC_SEQ_CST);
    snprintf(tmpname, tn, ".tmp-%016llx-%lu", d->tmp_tag, seq);
    int fd = o->open(o->ctx, dirfd, tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return ss_fail(errno_code(errno), "create temp file: %s", strerror(errno));
    size_t off = 0;
    int rc = SS_OK;
    while (off < len) {
        ssize_t w = o->write(o->ctx, fd, buf + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { /* 0 bytes written on a regular file: the disk is full */
            int e = w < 0 ? errno : ENOSPC;
            rc = ss_fail(errno_code(e), "write slice file: %s", strerror(e));
            break;
        }
        off += (size_t)w;
    }
    if (rc == SS_OK && o->fsync(o->ctx, fd) != 0)
        rc = ss_fail(errno_code(errno), "fsync slice file: %s", strerror(errno));
    /* close reports delayed write errors on some file systems (NFS) */
    if (o->close(o->ctx, fd) != 0 && rc == SS_OK)
        rc = ss_fail(errno_code(errno), "close slice file: %s", strerror(errno));
    if (rc != SS_OK) o->unlink(o->ctx, dirfd, tmpname);
    return rc;
}

/* Writes buf as `name` in dirfd durably: temp file, fsync, rename, directory fsync. */
static int put_at(dir_backend *d, int dirfd, const char *name, const unsigned char *buf, size_t len) {
    const ss_fileops *o = d->ops;
    char tmp[64];
    int rc = write_temp(d, dirfd, buf, len, tmp, sizeof tmp);
    if (rc != SS_OK) return rc;
    if (o->rename(o->ctx, dirfd, tmp, name) != 0) {
        rc = ss_fail(errno_code(errno), "rename %s: %s", name, strerror(errno));
        o->unlink(o->ctx, dirfd, tmp);
        return rc;
    }
    if (o->fsync(o->ctx, dirfd) != 0) {
        /* The rename may not survive a crash: take it back so it is never
         * acknowledged, nor found by the next start after a clean stop. */
        rc = ss_fail(errno_code(errno), "fsync of the data directory: %s", strerror(errno));
        if (o->unlink(o->ctx, dirfd, name) != 0)
            fprintf(stderr, "svdslice: store: cannot take back unacknowledged %s: %s\n", name,
                    strerror(errno));
        return rc;
    }
    return SS_OK;
}

static int dir_put(ss_store_backend *b, const char *id, const unsigned char *buf, size_t len) {
    dir_backend *d = (dir_backend *)b;
    char name[80];
    snprintf(name, sizeof name, "%s.svd", id);
    return put_at(d, d->dirfd, name, buf, len);
}

/* A whole stored file; one too large to read is corrupt, not an I/O error. */
static int read_blob(dir_backend *d, const char *path, const char *id, const char *ext, unsigned char **buf,
                     size_t *len) {
    int rc = d->ops->read_file(d->ops->ctx, path, SIZE_MAX / 2, buf, len);
    return rc == SS_ETOOLARGE ? ss_fail(SS_ECORRUPT, "%s.%s: too large to read", id, ext) : rc;
}

static int dir_get(ss_store_backend *b, const char *id, unsigned char **buf, size_t *len) {
    dir_backend *d = (dir_backend *)b;
    char path[4096];
    int rc = slice_path(d, id, path, sizeof path);
    if (rc != SS_OK) return rc;
    return read_blob(d, path, id, "svd", buf, len);
}

static int del_at(dir_backend *d, int dirfd, const char *name, int *gone) {
    const ss_fileops *o = d->ops;
    *gone = 0;
    if (o->unlink(o->ctx, dirfd, name) != 0 && errno != ENOENT)
        return ss_fail(SS_EIO, "unlink %s: %s", name, strerror(errno));
    *gone = 1; /* no way to undo an unlink: report, and let the core forget it */
    if (o->fsync(o->ctx, dirfd) != 0)
        return ss_fail(SS_EIO, "fsync of the data directory: %s", strerror(errno));
    return SS_OK;
}

static int dir_del(ss_store_backend *b, const char *id, int *gone) {
    dir_backend *d = (dir_backend *)b;
    char name[80];
    snprintf(name, sizeof name, "%s.svd", id);
    return del_at(d, d->dirfd, name, gone);
}

static int has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

typedef struct list_ctx {
    dir_backend *d;
    int dirfd;
    const char *suffix; /* ".svd" or ".svv" */
    int (*each)(void *arg, const char *id);
    void *arg;
    int rc; /* each's nonzero result */
} list_ctx;

static int list_one(void *arg, const char *nm) {
    list_ctx *c = arg;
    if (strncmp(nm, ".tmp-", 5) == 0) { /* an upload that was never acknowledged */
        c->d->ops->unlink(c->d->ops->ctx, c->dirfd, nm);
        return 0;
    }
    if (!has_suffix(nm, c->suffix)) return 0;
    char id[80];
    size_t idlen = strlen(nm) - 4;
    if (idlen < sizeof id) {
        memcpy(id, nm, idlen);
        id[idlen] = '\0';
    }
    if (idlen >= sizeof id || !ss_store_id_valid(id)) {
        fprintf(stderr, "svdslice: store: skipping %s: not a slice or volume file name\n", nm);
        return 0;
    }
    return c->rc = c->each(c->arg, id);
}

/* Also removes leftover temp files: listing happens once, when the store opens. */
static int dir_list(ss_store_backend *b, int (*each)(void *arg, const char *id), void *arg) {
    dir_backend *d = (dir_backend *)b;
    list_ctx c = {d, d->dirfd, ".svd", each, arg, 0};
    if (d->ops->list(d->ops->ctx, d->dirfd, list_one, &c) != 0)
        return ss_fail(SS_EIO, "cannot read data directory %s: %s", d->dir, strerror(errno));
    return c.rc;
}

/* Reads only the header and the singular values: opening a store of large
 * slices would otherwise read (and checksum) every byte of every file. */
static int dir_info(ss_store_backend *b, const char *id, ss_slice_info *out) {
    dir_backend *d = (dir_backend *)b;
    const ss_fileops *o = d->ops;
    char path[4096];
    unsigned char head[SS_SVD_HEADER_MAX];
    size_t file_len = 0, again = 0, sv_off = 0, hlen = SS_SVD_HEADER_BYTES;
    memset(out, 0, sizeof *out);
    int rc = slice_path(d, id, path, sizeof path);
    if (rc == SS_OK) rc = o->read_range(o->ctx, path, 0, hlen, head, &file_len);
    if (rc == SS_OK && (hlen = ss_svd_header_bytes(head, hlen)) > SS_SVD_HEADER_BYTES) /* version 2 */
        rc = o->read_range(o->ctx, path, 0, hlen, head, &again);
    if (rc == SS_OK && again && again != file_len) rc = ss_fail(SS_ECORRUPT, "%s.svd changed while being read", id);
    if (rc == SS_OK) rc = ss_store_decode_head(id, head, file_len, out, &sv_off);
    if (rc != SS_OK) return rc;
    size_t sv_len = sizeof(float) * (size_t)out->nsv;
    unsigned char *sv = malloc(sv_len);
    if (!sv) return ss_fail(SS_ENOMEM, "out of memory");
    rc = o->read_range(o->ctx, path, sv_off, sv_len, sv, &again);
    if (rc == SS_OK && again != file_len) rc = ss_fail(SS_ECORRUPT, "%s.svd changed while being read", id);
    if (rc == SS_OK) rc = ss_store_decode_sv(id, sv, out);
    free(sv);
    return rc;
}

/* ---- volumes: DIR/volumes/ID.svv, written as slices are --------------------------- */

#define VOLUME_DIR "volumes"

/* The volumes directory's descriptor, or -1 when it does not exist and create is 0.
 * Opened with openat(2) itself, not through the fileops: it is a lookup, not a step of a
 * write whose failure a test would inject. Creating it is (mkdir), and so is the data
 * directory's fsync that makes volumes/ itself survive a crash: done before the first put
 * of each run, whether this run created it or found it (an earlier run may have failed
 * between its mkdir and that fsync). */
static int vdir(dir_backend *d, int create, int *fd) {
    const ss_fileops *o = d->ops;
    int rc = SS_OK;
    pthread_mutex_lock(&d->vmu);
    if (d->vdirfd < 0) {
        d->vdirfd = openat(d->dirfd, VOLUME_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (d->vdirfd < 0 && errno == ENOENT && create) {
            char path[4096];
            snprintf(path, sizeof path, "%s/" VOLUME_DIR, d->dir);
            if (o->mkdir(o->ctx, path, 0755) != 0 && errno != EEXIST)
                rc = ss_fail(errno_code(errno), "cannot create %s: %s", path, strerror(errno));
            else if ((d->vdirfd = openat(d->dirfd, VOLUME_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
                rc = ss_fail(SS_EIO, "cannot open %s: %s", path, strerror(errno));
        } else if (d->vdirfd < 0 && errno != ENOENT) {
            rc = ss_fail(SS_EIO, "cannot open %s/" VOLUME_DIR ": %s", d->dir, strerror(errno));
        }
    }
    if (rc == SS_OK && create && d->vdirfd >= 0 && !d->vdir_synced) {
        if (o->fsync(o->ctx, d->dirfd) != 0)
            rc = ss_fail(errno_code(errno), "fsync of the data directory: %s", strerror(errno));
        else
            d->vdir_synced = 1;
    }
    *fd = d->vdirfd;
    pthread_mutex_unlock(&d->vmu);
    return rc;
}

static int volume_path(const dir_backend *d, const char *id, char *path, size_t n) {
    if ((size_t)snprintf(path, n, "%s/" VOLUME_DIR "/%s.svv", d->dir, id) >= n)
        return ss_fail(SS_EIO, "data directory path too long");
    return SS_OK;
}

static int dir_vput(ss_store_backend *b, const char *id, const unsigned char *buf, size_t len) {
    dir_backend *d = (dir_backend *)b;
    int fd = -1, rc = vdir(d, 1, &fd);
    if (rc != SS_OK) return rc;
    char name[80];
    snprintf(name, sizeof name, "%s.svv", id);
    return put_at(d, fd, name, buf, len);
}

static int dir_vget(ss_store_backend *b, const char *id, unsigned char **buf, size_t *len) {
    dir_backend *d = (dir_backend *)b;
    char path[4096];
    int rc = volume_path(d, id, path, sizeof path);
    if (rc != SS_OK) return rc;
    return read_blob(d, path, id, "svv", buf, len);
}

static int dir_vhead(ss_store_backend *b, const char *id, size_t n, unsigned char *buf, size_t *len) {
    dir_backend *d = (dir_backend *)b;
    char path[4096];
    int rc = volume_path(d, id, path, sizeof path);
    return rc != SS_OK ? rc : d->ops->read_range(d->ops->ctx, path, 0, n, buf, len);
}

static int dir_vdel(ss_store_backend *b, const char *id, int *gone) {
    dir_backend *d = (dir_backend *)b;
    int fd = -1, rc = vdir(d, 0, &fd);
    *gone = 0;
    if (rc != SS_OK) return rc;
    if (fd < 0) { /* no volume was ever stored */
        *gone = 1;
        return SS_OK;
    }
    char name[80];
    snprintf(name, sizeof name, "%s.svv", id);
    return del_at(d, fd, name, gone);
}

static int dir_vlist(ss_store_backend *b, int (*each)(void *arg, const char *id), void *arg) {
    dir_backend *d = (dir_backend *)b;
    int fd = -1, rc = vdir(d, 0, &fd);
    if (rc != SS_OK || fd < 0) return rc; /* none yet: an empty list */
    list_ctx c = {d, fd, ".svv", each, arg, 0};
    if (d->ops->list(d->ops->ctx, fd, list_one, &c) != 0)
        return ss_fail(SS_EIO, "cannot read %s/" VOLUME_DIR ": %s", d->dir, strerror(errno));
    return c.rc;
}

static void dir_close(ss_store_backend *b) {
    dir_backend *d = (dir_backend *)b;
    if (!d) return;
    if (d->vdirfd >= 0) close(d->vdirfd);
    pthread_mutex_destroy(&d->vmu);
    if (d->dirfd >= 0) d->ops->close(d->ops->ctx, d->dirfd);
    if (d->lockfd >= 0) close(d->lockfd); /* releases the flock */
    ss_fileops_fault_free(d->fault);
    free(d->dir);
    free(d);
}

int ss_store_dir_open(const ss_store_opts *opts, ss_store_backend **out) {
    *out = NULL;
    if (!opts->dir || !*opts->dir) return ss_fail(SS_EINVAL, "no data directory given");
    dir_backend *d = calloc(1, sizeof *d);
    if (!d) return ss_fail(SS_ENOMEM, "out of memory");
    d->b = (ss_store_backend){.name = "dir", .put = dir_put, .get = dir_get, .del = dir_del, .list = dir_list,
                              .info = dir_info, .close = dir_close, .vput = dir_vput, .vget = dir_vget,
                              .vdel = dir_vdel, .vlist = dir_vlist, .vhead = dir_vhead};
    d->dirfd = d->lockfd = -1;
    d->vdirfd = -1;
    pthread_mutex_init(&d->vmu, NULL);
    d->ops = opts->fileops ? opts->fileops : &ss_fileops_posix;
    int rc = SS_OK;
    const char *spec = opts->fileops ? NULL : getenv("SVDSLICE_TEST_FAULT");
    if (spec && *spec) {
        rc = ss_fileops_fault_new(spec, &ss_fileops_posix, &d->fault);
        if (rc == SS_OK) {
            d->ops = d->fault;
            fprintf(stderr, "svdslice: store: TEST ONLY: injecting file errors SVDSLICE_TEST_FAULT=%s\n",
                    spec);
        }
    }
    const ss_fileops *o = d->ops;
    if (rc == SS_OK && !(d->dir = strdup(opts->dir))) rc = ss_fail(SS_ENOMEM, "out of memory");
    if (rc == SS_OK && o->mkdir(o->ctx, opts->dir, 0755) != 0 && errno != EEXIST)
        rc = ss_fail(SS_EIO, "cannot create data directory %s: %s", opts->dir, strerror(errno));
    if (rc == SS_OK &&
        (d->dirfd = o->open(o->ctx, AT_FDCWD, opts->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)) < 0)
        rc = ss_fail(SS_EIO, "cannot open data directory %s: %s", opts->dir, strerror(errno));
    /* One process per directory: the index, the quota and the clean-up of
     * temp files at start are its own. A second one (another replica on the
     * same volume) is refused here rather than answering 500s later;
     * replicas share --store postgres://... instead. */
    if (rc == SS_OK && (d->lockfd = openat(d->dirfd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0)
        rc = ss_fail(SS_EIO, "cannot create %s/.lock: %s", opts->dir, strerror(errno));
    if (rc == SS_OK && flock(d->lockfd, LOCK_EX | LOCK_NB) != 0)
        rc = errno == EWOULDBLOCK
                 ? ss_fail(SS_EIO, "data directory %s is in use by another svdslice process (it holds %s/.lock);"
                                   " one process per directory: replicas share --store postgres://...",
                           opts->dir, opts->dir)
                 : ss_fail(SS_EIO, "cannot lock %s/.lock: %s", opts->dir, strerror(errno));
    if (rc == SS_OK && getrandom(&d->tmp_tag, sizeof d->tmp_tag, GRND_NONBLOCK) != (ssize_t)sizeof d->tmp_tag)
        d->tmp_tag = (unsigned long long)getpid() << 32 ^ (unsigned long long)time(NULL);
    if (rc != SS_OK) {
        dir_close(&d->b);
        return rc;
    }
    *out = &d->b;
    return SS_OK;
}
