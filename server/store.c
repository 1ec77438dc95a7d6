/* store.c - the persistent slice store: durable .svd files, an in-memory index and a byte-bounded factors LRU */
#include "server/store.h"
#include "util/error.h"
#include "util/file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A loaded factors object. Attached to its index entry while cached; detached
 * ("orphan") when evicted-while-held is impossible, so only when its slice was
 * deleted or it is too big for the cache: then it lives until its last release. */
typedef struct cnode {
    ss_factors *f;
    size_t bytes;
    int refs;
    int attached;              /* 1: in the LRU and pointed to by its entry */
    struct cnode *prev, *next; /* LRU (attached) or orphan list */
} cnode;

typedef struct entry {
    ss_slice_info info;  /* singular_values owned here */
    cnode *node;         /* cached factors or NULL */
    struct entry *hnext; /* hash chain */
} entry;

struct ss_store {
    char *dir;
    int dirfd;
    size_t cache_budget;
    long long quota;
    pthread_mutex_t mu;      /* index, LRU, orphans, stats */
    pthread_mutex_t disk_mu; /* orders renames and unlinks of slice files */
    entry **buckets;
    size_t nbuckets, count;
    cnode lru;     /* sentinel: lru.next is most recent */
    cnode orphans; /* sentinel */
    size_t cache_bytes;
    long long disk_bytes, hits, misses;
    unsigned long tmp_seq;
};

/* ---- helpers ---------------------------------------------------------------- */

static int id_valid(const char *id) {
    size_t n = 0;
    if (!id) return 0;
    for (; id[n]; n++) {
        char c = id[n];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-'))
            return 0;
        if (n >= 64) return 0;
    }
    return n >= 1;
}

static size_t hash_id(const char *id) {
    uint64_t h = 1469598103934665603ULL;
    for (; *id; id++) h = (h ^ (unsigned char)*id) * 1099511628211ULL;
    return (size_t)h;
}

static size_t factors_bytes(const ss_factors *f) {
    size_t fl = (size_t)f->m * f->rank + (size_t)f->nsv + 2 * (size_t)f->rank * f->n;
    size_t b = fl * sizeof(float) + sizeof *f;
    if (f->orig) b += (size_t)f->m * f->n * sizeof(uint16_t);
    return b;
}

static void list_unlink(cnode *n) {
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

static void list_push_front(cnode *head, cnode *n) {
    n->next = head->next;
    n->prev = head;
    head->next->prev = n;
    head->next = n;
}

static entry *find_locked(ss_store *s, const char *id) {
    for (entry *e = s->buckets[hash_id(id) % s->nbuckets]; e; e = e->hnext)
        if (strcmp(e->info.id, id) == 0) return e;
    return NULL;
}

static int grow_buckets(ss_store *s) {
    size_t nb = s->nbuckets ? s->nbuckets * 2 : 256;
    entry **b = calloc(nb, sizeof *b);
    if (!b) return SS_ENOMEM;
    for (size_t i = 0; i < s->nbuckets; i++) {
        entry *e = s->buckets[i];
        while (e) {
            entry *nx = e->hnext;
            size_t h = hash_id(e->info.id) % nb;
            e->hnext = b[h];
            b[h] = e;
            e = nx;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = nb;
    return SS_OK;
}

static int insert_locked(ss_store *s, entry *e) {
    if (s->count + 1 > s->nbuckets * 3 / 4 && grow_buckets(s) != SS_OK) return SS_ENOMEM;
    size_t h = hash_id(e->info.id) % s->nbuckets;
    e->hnext = s->buckets[h];
    s->buckets[h] = e;
    s->count++;
    return SS_OK;
}

static void remove_locked(ss_store *s, entry *e) {
    entry **pp = &s->buckets[hash_id(e->info.id) % s->nbuckets];
    while (*pp && *pp != e) pp = &(*pp)->hnext;
    if (*pp) {
        *pp = e->hnext;
        s->count--;
    }
}

/* Detaches a cached node from its entry: freed now if unheld, else orphaned. */
static void drop_node_locked(ss_store *s, entry *e) {
    cnode *n = e->node;
    if (!n) return;
    e->node = NULL;
    list_unlink(n);
    n->attached = 0;
    s->cache_bytes -= n->bytes;
    if (n->refs == 0) {
        ss_factors_free(n->f);
        free(n);
    } else {
        list_push_front(&s->orphans, n);
    }
}

/* Evicts least recently used unheld nodes until the cache fits its budget. */
static void evict_locked(ss_store *s) {
    cnode *n = s->lru.prev;
    while (s->cache_bytes > s->cache_budget && n != &s->lru) {
        cnode *prev = n->prev;
        if (n->refs == 0) {
            list_unlink(n);
            s->cache_bytes -= n->bytes;
            /* find the owning entry to clear its pointer */
            entry *e = find_locked(s, n->f->id);
            if (e && e->node == n) e->node = NULL;
            ss_factors_free(n->f);
            free(n);
        }
        n = prev;
    }
}

static void fill_info(ss_slice_info *info, const ss_factors *f, long long file_bytes) {
    memset(info, 0, sizeof *info);
    snprintf(info->id, sizeof info->id, "%s", f->id);
    snprintf(info->name, sizeof info->name, "%s", f->name);
    info->width = f->n;
    info->height = f->m;
    info->bit_depth = f->bit_depth;
    info->rank = f->rank;
    info->nsv = f->nsv;
    info->created = f->created;
    info->file_bytes = file_bytes;
}

static entry *entry_from_factors(const ss_factors *f, long long file_bytes) {
    entry *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    fill_info(&e->info, f, file_bytes);
    e->info.singular_values = malloc((size_t)f->nsv * sizeof(float));
    if (!e->info.singular_values) {
        free(e);
        return NULL;
    }
    memcpy(e->info.singular_values, f->S, (size_t)f->nsv * sizeof(float));
    return e;
}

static void entry_free(entry *e) {
    if (!e) return;
    free(e->info.singular_values);
    free(e);
}

static int fsync_dir(ss_store *s) {
    if (fsync(s->dirfd) != 0) return ss_fail(SS_EIO, "fsync of the data directory: %s", strerror(errno));
    return SS_OK;
}

/* Reads DIR/name whole (name is a validated id + ".svd", never client text). */
static int read_slice_file(const ss_store *s, const char *name, unsigned char **buf, size_t *len) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", s->dir, name) >= sizeof path)
        return ss_fail(SS_EIO, "data directory path too long");
    int rc = ss_read_file(path, SIZE_MAX / 2, buf, len);
    return rc == SS_ETOOLARGE ? ss_fail(SS_ECORRUPT, "%s: too large for a slice file", name) : rc;
}

/* Reads and fully verifies a slice file; the id inside must match the name. */
static int load_file(ss_store *s, const char *id, ss_factors **out, long long *file_bytes) {
    char name[80];
    snprintf(name, sizeof name, "%s.svd", id);
    unsigned char *buf;
    size_t len;
    int rc = read_slice_file(s, name, &buf, &len);
    if (rc != SS_OK) return rc;
    ss_factors *f = NULL;
    rc = ss_svd_deserialize(buf, len, &f);
    free(buf);
    if (rc != SS_OK) {
        char why[400]; /* ss_error() is the buffer ss_fail writes into: copy it first */
        snprintf(why, sizeof why, "%s", ss_error());
        return rc == SS_ENOMEM ? rc : ss_fail(SS_ECORRUPT, "%s: %s", name, why);
    }
    if (strcmp(f->id, id) != 0 || !f->orig) {
        ss_factors_free(f);
        return ss_fail(SS_ECORRUPT, "%s: id or original pixels do not match its name", name);
    }
    if (file_bytes) *file_bytes = (long long)len;
    *out = f;
    return SS_OK;
}

/* ---- open / close ------------------------------------------------------------ */

static int has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static int scan_dir(ss_store *s) {
    DIR *d = fdopendir(dup(s->dirfd));
    if (!d) return ss_fail(SS_EIO, "cannot read data directory %s: %s", s->dir, strerror(errno));
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        if (strncmp(nm, ".tmp-", 5) == 0) { /* an upload that was never acknowledged */
            unlinkat(s->dirfd, nm, 0);
            continue;
        }
        if (!has_suffix(nm, ".svd")) continue;
        char id[80];
        size_t idlen = strlen(nm) - 4;
        if (idlen >= sizeof id) {
            fprintf(stderr, "svdslice: store: skipping %s: not a slice file name\n", nm);
            continue;
        }
        memcpy(id, nm, idlen);
        id[idlen] = '\0';
        if (!id_valid(id)) {
            fprintf(stderr, "svdslice: store: skipping %s: not a slice file name\n", nm);
            continue;
        }
        ss_factors *f = NULL;
        long long fb = 0;
        if (load_file(s, id, &f, &fb) != SS_OK) {
            fprintf(stderr, "svdslice: store: skipping corrupt file %s: %s\n", nm, ss_error());
            continue;
        }
        entry *e = entry_from_factors(f, fb);
        ss_factors_free(f);
        if (!e || insert_locked(s, e) != SS_OK) {
            entry_free(e);
            closedir(d);
            return ss_fail(SS_ENOMEM, "out of memory reading the store index");
        }
        s->disk_bytes += fb;
    }
    closedir(d);
    return SS_OK;
}

int ss_store_open(const ss_store_opts *opts, ss_store **out) {
    *out = NULL;
    if (!opts || !opts->dir || !*opts->dir) return ss_fail(SS_EINVAL, "no data directory given");
    if (mkdir(opts->dir, 0755) != 0 && errno != EEXIST)
        return ss_fail(SS_EIO, "cannot create data directory %s: %s", opts->dir, strerror(errno));
    ss_store *s = calloc(1, sizeof *s);
    if (!s) return ss_fail(SS_ENOMEM, "out of memory");
    s->dir = strdup(opts->dir);
    s->dirfd = open(opts->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    s->cache_budget = opts->cache_bytes;
    s->quota = opts->quota_bytes;
    s->lru.prev = s->lru.next = &s->lru;
    s->orphans.prev = s->orphans.next = &s->orphans;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->disk_mu, NULL);
    int rc;
    if (!s->dir) rc = ss_fail(SS_ENOMEM, "out of memory");
    else if (s->dirfd < 0) rc = ss_fail(SS_EIO, "cannot open data directory %s: %s", opts->dir, strerror(errno));
    else if ((rc = grow_buckets(s)) == SS_OK) rc = scan_dir(s);
    if (rc != SS_OK) {
        ss_store_close(s);
        return rc;
    }
    *out = s;
    return SS_OK;
}

void ss_store_close(ss_store *s) {
    if (!s) return;
    for (size_t i = 0; i < s->nbuckets; i++) {
        entry *e = s->buckets[i];
        while (e) {
            entry *nx = e->hnext;
            if (e->node) {
                ss_factors_free(e->node->f);
                free(e->node);
            }
            entry_free(e);
            e = nx;
        }
    }
    cnode *n = s->orphans.next;
    while (n != &s->orphans) {
        cnode *nx = n->next;
        ss_factors_free(n->f);
        free(n);
        n = nx;
    }
    free(s->buckets);
    if (s->dirfd >= 0) close(s->dirfd);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->disk_mu);
    free(s->dir);
    free(s);
}

/* ---- put / delete ------------------------------------------------------------- */

static int errno_code(int e) { return (e == ENOSPC || e == EDQUOT) ? SS_ENOSPC : SS_EIO; }

/* Writes buf to a fresh temp file in the data directory and fsyncs it. */
static int write_temp(ss_store *s, const unsigned char *buf, size_t len, char *tmpname, size_t tn) {
    pthread_mutex_lock(&s->mu);
    unsigned long seq = ++s->tmp_seq;
    pthread_mutex_unlock(&s->mu);
    snprintf(tmpname, tn, ".tmp-%ld-%lu", (long)getpid(), seq);
    int fd = openat(s->dirfd, tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return ss_fail(errno_code(errno), "create temp file: %s", strerror(errno));
    size_t off = 0;
    int rc = SS_OK;
    while (off < len) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            rc = ss_fail(errno_code(w < 0 ? errno : ENOSPC), "write slice file: %s",
                         strerror(w < 0 ? errno : ENOSPC));
            break;
        }
        off += (size_t)w;
    }
    if (rc == SS_OK && fsync(fd) != 0) rc = ss_fail(errno_code(errno), "fsync slice file: %s", strerror(errno));
    if (close(fd) != 0 && rc == SS_OK) rc = ss_fail(errno_code(errno), "close slice file: %s", strerror(errno));
    if (rc != SS_OK) unlinkat(s->dirfd, tmpname, 0);
    return rc;
}

int ss_store_put(ss_store *s, const ss_factors *f, int *existed) {
    if (existed) *existed = 0;
    if (!f || !id_valid(f->id) || !f->orig) return ss_fail(SS_EINVAL, "slice has no valid id or original pixels");
    pthread_mutex_lock(&s->mu);
    int have = find_locked(s, f->id) != NULL;
    pthread_mutex_unlock(&s->mu);
    if (have) {
        if (existed) *existed = 1;
        return SS_OK;
    }
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = ss_svd_serialize(f, &buf, &len);
    if (rc != SS_OK) return rc;
    entry *e = entry_from_factors(f, (long long)len);
    if (!e) {
        free(buf);
        return ss_fail(SS_ENOMEM, "out of memory");
    }

    /* Everything from the quota check to the index insert happens under
     * disk_mu, so a concurrent put or delete of the same id cannot interleave. */
    pthread_mutex_lock(&s->disk_mu);
    pthread_mutex_lock(&s->mu);
    int dup = find_locked(s, f->id) != NULL;
    long long used = s->disk_bytes;
    pthread_mutex_unlock(&s->mu);
    char tmp[64], name[80];
    if (dup) {
        if (existed) *existed = 1;
        rc = SS_OK;
        goto done;
    }
    if (s->quota > 0 && used + (long long)len > s->quota) {
        rc = ss_fail(SS_ENOSPC, "storing %zu bytes would exceed the quota of %lld bytes (%lld used)", len,
                     s->quota, used);
        goto done;
    }
    rc = write_temp(s, buf, len, tmp, sizeof tmp);
    if (rc != SS_OK) goto done;
    snprintf(name, sizeof name, "%s.svd", f->id);
    if (renameat(s->dirfd, tmp, s->dirfd, name) != 0) {
        rc = ss_fail(errno_code(errno), "rename slice file: %s", strerror(errno));
        unlinkat(s->dirfd, tmp, 0);
        goto done;
    }
    rc = fsync_dir(s);
    if (rc != SS_OK) { /* not durable: take it back so we never acknowledge it */
        unlinkat(s->dirfd, name, 0);
        goto done;
    }
    pthread_mutex_lock(&s->mu);
    rc = insert_locked(s, e);
    if (rc == SS_OK) {
        s->disk_bytes += (long long)len;
        e = NULL;
    }
    pthread_mutex_unlock(&s->mu);
done:
    pthread_mutex_unlock(&s->disk_mu);
    entry_free(e);
    free(buf);
    return rc;
}

int ss_store_delete(ss_store *s, const char *id) {
    if (!id_valid(id)) return ss_fail(SS_EINVAL, "invalid slice id");
    pthread_mutex_lock(&s->disk_mu);
    pthread_mutex_lock(&s->mu);
    entry *e = find_locked(s, id);
    if (!e) {
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_unlock(&s->disk_mu);
        return ss_fail(SS_EINVAL, "no slice %s", id);
    }
    remove_locked(s, e);
    drop_node_locked(s, e);
    s->disk_bytes -= e->info.file_bytes;
    pthread_mutex_unlock(&s->mu);
    char name[80];
    snprintf(name, sizeof name, "%s.svd", id);
    int rc = SS_OK;
    if (unlinkat(s->dirfd, name, 0) != 0 && errno != ENOENT)
        rc = ss_fail(SS_EIO, "unlink %s: %s", name, strerror(errno));
    else
        rc = fsync_dir(s);
    pthread_mutex_unlock(&s->disk_mu);
    entry_free(e);
    return rc;
}

/* ---- reads ---------------------------------------------------------------------- */

const ss_factors *ss_store_acquire(ss_store *s, const char *id, int *err) {
    int dummy;
    if (!err) err = &dummy;
    *err = SS_OK;
    if (!id_valid(id)) {
        *err = ss_fail(SS_EINVAL, "invalid slice id");
        return NULL;
    }
    pthread_mutex_lock(&s->mu);
    entry *e = find_locked(s, id);
    if (!e) {
        pthread_mutex_unlock(&s->mu);
        *err = ss_fail(SS_EINVAL, "no slice %s", id);
        return NULL;
    }
    if (e->node) {
        cnode *n = e->node;
        n->refs++;
        s->hits++;
        list_unlink(n);
        list_push_front(&s->lru, n);
        pthread_mutex_unlock(&s->mu);
        return n->f;
    }
    s->misses++;
    pthread_mutex_unlock(&s->mu);

    /* Load outside the lock; another thread may load the same slice meanwhile. */
    ss_factors *f = NULL;
    int rc = load_file(s, id, &f, NULL);
    pthread_mutex_lock(&s->mu);
    e = find_locked(s, id);
    if (rc != SS_OK && !e) { /* deleted while we were reading it: just gone */
        pthread_mutex_unlock(&s->mu);
        *err = ss_fail(SS_EINVAL, "no slice %s", id);
        return NULL;
    }
    if (rc != SS_OK) {
        if (rc == SS_ECORRUPT && e) { /* never serve it again */
            fprintf(stderr, "svdslice: store: dropping corrupt slice %s: %s\n", id, ss_error());
            remove_locked(s, e);
            drop_node_locked(s, e);
            s->disk_bytes -= e->info.file_bytes;
            entry_free(e);
        }
        pthread_mutex_unlock(&s->mu);
        *err = rc;
        return NULL;
    }
    if (!e) { /* deleted while loading */
        pthread_mutex_unlock(&s->mu);
        ss_factors_free(f);
        *err = ss_fail(SS_EINVAL, "no slice %s", id);
        return NULL;
    }
    if (e->node) { /* lost the race: use the cached copy */
        cnode *n = e->node;
        n->refs++;
        pthread_mutex_unlock(&s->mu);
        ss_factors_free(f);
        return n->f;
    }
    cnode *n = calloc(1, sizeof *n);
    if (!n) {
        pthread_mutex_unlock(&s->mu);
        ss_factors_free(f);
        *err = ss_fail(SS_ENOMEM, "out of memory");
        return NULL;
    }
    n->f = f;
    n->bytes = factors_bytes(f);
    n->refs = 1;
    if (n->bytes > s->cache_budget) { /* served, but never cached */
        list_push_front(&s->orphans, n);
    } else {
        n->attached = 1;
        e->node = n;
        list_push_front(&s->lru, n);
        s->cache_bytes += n->bytes;
        evict_locked(s);
    }
    pthread_mutex_unlock(&s->mu);
    return f;
}

void ss_store_release(ss_store *s, const ss_factors *f) {
    if (!s || !f) return;
    pthread_mutex_lock(&s->mu);
    cnode *n = NULL;
    entry *e = find_locked(s, f->id);
    if (e && e->node && e->node->f == f) {
        n = e->node;
    } else {
        for (cnode *o = s->orphans.next; o != &s->orphans; o = o->next)
            if (o->f == f) {
                n = o;
                break;
            }
    }
    if (n) {
        n->refs--;
        if (n->refs == 0) {
            if (!n->attached) {
                list_unlink(n);
                ss_factors_free(n->f);
                free(n);
            } else {
                evict_locked(s); /* it may have been kept over budget while held */
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
}

int ss_store_info(ss_store *s, const char *id, ss_slice_info *out) {
    memset(out, 0, sizeof *out);
    if (!id_valid(id)) return ss_fail(SS_EINVAL, "invalid slice id");
    pthread_mutex_lock(&s->mu);
    entry *e = find_locked(s, id);
    int rc = SS_OK;
    if (!e) {
        rc = ss_fail(SS_EINVAL, "no slice %s", id);
    } else {
        *out = e->info;
        out->singular_values = malloc((size_t)e->info.nsv * sizeof(float));
        if (!out->singular_values) rc = ss_fail(SS_ENOMEM, "out of memory");
        else memcpy(out->singular_values, e->info.singular_values, (size_t)e->info.nsv * sizeof(float));
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int ss_store_info_scalars(ss_store *s, const char *id, ss_slice_info *out) {
    memset(out, 0, sizeof *out);
    if (!id_valid(id)) return ss_fail(SS_EINVAL, "invalid slice id");
    pthread_mutex_lock(&s->mu);
    entry *e = find_locked(s, id);
    if (e) {
        *out = e->info;
        out->singular_values = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    return e ? SS_OK : ss_fail(SS_EINVAL, "no slice %s", id);
}

void ss_slice_info_free(ss_slice_info *info) {
    if (!info) return;
    free(info->singular_values);
    info->singular_values = NULL;
}

static int cmp_newest(const void *a, const void *b) {
    const ss_slice_info *x = a, *y = b;
    if (x->created != y->created) return x->created > y->created ? -1 : 1;
    return strcmp(x->id, y->id);
}

int ss_store_list(ss_store *s, ss_slice_info **out, size_t *n) {
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    ss_slice_info *arr = malloc((s->count ? s->count : 1) * sizeof *arr);
    if (!arr) {
        pthread_mutex_unlock(&s->mu);
        return ss_fail(SS_ENOMEM, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < s->nbuckets; i++)
        for (entry *e = s->buckets[i]; e; e = e->hnext) {
            arr[k] = e->info;
            arr[k].singular_values = NULL;
            k++;
        }
    pthread_mutex_unlock(&s->mu);
    qsort(arr, k, sizeof *arr, cmp_newest);
    *out = arr;
    *n = k;
    return SS_OK;
}

int ss_store_read_file(ss_store *s, const char *id, unsigned char **buf, size_t *len) {
    if (!id_valid(id)) return ss_fail(SS_EINVAL, "invalid slice id");
    pthread_mutex_lock(&s->mu);
    int have = find_locked(s, id) != NULL;
    pthread_mutex_unlock(&s->mu);
    if (!have) return ss_fail(SS_EINVAL, "no slice %s", id);
    char name[80];
    snprintf(name, sizeof name, "%s.svd", id);
    int rc = read_slice_file(s, name, buf, len);
    if (rc != SS_OK) { /* deleted between the check and the read: simply gone */
        pthread_mutex_lock(&s->mu);
        have = find_locked(s, id) != NULL;
        pthread_mutex_unlock(&s->mu);
        if (!have) return ss_fail(SS_EINVAL, "no slice %s", id);
    }
    return rc;
}

void ss_store_get_stats(ss_store *s, ss_store_stats *st) {
    pthread_mutex_lock(&s->mu);
    st->slices = (long long)s->count;
    st->disk_bytes = s->disk_bytes;
    st->cache_bytes = (long long)s->cache_bytes;
    st->cache_hits = s->hits;
    st->cache_misses = s->misses;
    pthread_mutex_unlock(&s->mu);
}
