/* store.c - the persistent slice store: an in-memory index, a byte-bounded factors LRU and the
 * quota over a backend that keeps the .svd encodings durably (store_backend.h) */
#include "server/store.h"
#include "util/error.h"
#include "server/store_backend.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    int deleting;        /* a delete is under way: a failed read of it means "gone" */
} entry;

struct ss_store {
    ss_store_backend *b;
    size_t cache_budget;
    long long quota;
    pthread_mutex_t mu;      /* index, LRU, orphans, stats */
    pthread_mutex_t disk_mu; /* orders the backend's puts and deletes */
    entry **buckets;
    size_t nbuckets, count;
    cnode lru;     /* sentinel: lru.next is most recent */
    cnode orphans; /* sentinel */
    size_t cache_bytes;
    long long disk_bytes, hits, misses;
    long long volume_bytes; /* private backend: the bytes volumes hold (server/volumes.c), for the quota */
    int shared;          /* the backend is shared: the index is a cache of it */
    unsigned long epoch; /* bumped by every purge: a fill that raced one is not kept */
    void (*on_purge)(void *arg, const char *id);
    void *purge_arg;
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

int ss_store_id_valid(const char *id) { return id_valid(id); } /* the hot paths keep the static one */

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
    info->upload_bytes = f->upload_bytes;
}

static entry *entry_from_factors(const ss_factors *f, long long file_bytes) {
    entry *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    fill_info(&e->info, f, file_bytes);
    e->info.has_original = f->orig != NULL;
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

/* Forgets a slice: index, cached factors (held ones live on as orphans), bytes. */
static void forget_locked(ss_store *s, entry *e) {
    remove_locked(s, e);
    drop_node_locked(s, e);
    s->disk_bytes -= e->info.file_bytes;
    entry_free(e);
}

/* The entry of id, with s->mu held (it may be released meanwhile), or NULL
 * and *rc (SS_EINVAL: no such slice). With a shared backend a miss asks the
 * backend and fills the index, and while its deletes are not watched a hit
 * is checked there too: a replica never serves what another one deleted. */
static entry *lookup_locked(ss_store *s, const char *id, int *rc) {
    *rc = SS_OK;
    entry *e = find_locked(s, id);
    if (!s->shared || (e && s->b->watching(s->b))) {
        if (!e) *rc = ss_fail(SS_EINVAL, "no slice %s", id);
        return e;
    }
    for (int tries = 0; tries < 3; tries++) {
        unsigned long epoch = s->epoch;
        pthread_mutex_unlock(&s->mu);
        entry *fresh = calloc(1, sizeof *fresh);
        int r = fresh ? s->b->info(s->b, id, &fresh->info) : ss_fail(SS_ENOMEM, "out of memory");
        pthread_mutex_lock(&s->mu);
        e = find_locked(s, id);
        if (r != SS_OK) {
            free(fresh);
            if (r == SS_EINVAL && e && !e->deleting) forget_locked(s, e); /* deleted elsewhere */
            *rc = r;
            return NULL;
        }
        if (e) {
            entry_free(fresh);
            return e;
        }
        if (epoch == s->epoch) { /* no purge ran while we asked: the answer is current */
            if (insert_locked(s, fresh) != SS_OK) {
                entry_free(fresh);
                *rc = ss_fail(SS_ENOMEM, "out of memory");
                return NULL;
            }
            s->disk_bytes += fresh->info.file_bytes;
            return fresh;
        }
        entry_free(fresh);
    }
    *rc = ss_fail(SS_ESTORE, "slice %s: the store kept changing while it was read; retry", id);
    return NULL;
}

/* From the backend's watcher: another process deleted id (NULL: perhaps some). */
static void purge_cb(void *arg, const char *id) {
    ss_store *s = arg;
    pthread_mutex_lock(&s->mu);
    s->epoch++;
    if (id) {
        entry *e = find_locked(s, id);
        if (e && !e->deleting) forget_locked(s, e);
    } else {
        for (size_t i = 0; i < s->nbuckets; i++) {
            entry *e = s->buckets[i];
            while (e) {
                entry *nx = e->hnext;
                if (!e->deleting) forget_locked(s, e);
                e = nx;
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (s->on_purge) s->on_purge(s->purge_arg, id);
}

int ss_store_decode(const char *id, const unsigned char *buf, size_t len, ss_factors **out) {
    ss_factors *f = NULL;
    int rc = ss_svd_deserialize(buf, len, &f);
    if (rc != SS_OK) {
        char why[400]; /* ss_error() is the buffer ss_fail writes into: copy it first */
        snprintf(why, sizeof why, "%s", ss_error());
        return rc == SS_ENOMEM ? rc : ss_fail(SS_ECORRUPT, "slice %s: %s", id, why);
    }
    if (strcmp(f->id, id) != 0) {
        ss_factors_free(f);
        return ss_fail(SS_ECORRUPT, "slice %s: id does not match its name", id);
    }
    *out = f;
    return SS_OK;
}

int ss_store_decode_head(const char *id, const unsigned char *head, size_t file_len, ss_slice_info *out,
                         size_t *sv_off) {
    memset(out, 0, sizeof *out);
    ss_factors h;
    int orig = 0;
    int rc = ss_svd_read_index(head, file_len, &h, &orig, sv_off);
    if (rc != SS_OK) {
        char why[400]; /* ss_error() is the buffer ss_fail writes into: copy it first */
        snprintf(why, sizeof why, "%s", ss_error());
        return ss_fail(SS_ECORRUPT, "slice %s: %s", id, why);
    }
    if (strcmp(h.id, id) != 0) return ss_fail(SS_ECORRUPT, "slice %s: id does not match its name", id);
    fill_info(out, &h, (long long)file_len);
    out->has_original = orig;
    return SS_OK;
}

int ss_store_decode_sv(const char *id, const unsigned char *sv, ss_slice_info *out) {
    out->singular_values = malloc((size_t)out->nsv * sizeof(float));
    if (!out->singular_values) return ss_fail(SS_ENOMEM, "out of memory");
    int rc = ss_svd_read_sv(sv, out->nsv, out->singular_values);
    if (rc != SS_OK) {
        free(out->singular_values);
        out->singular_values = NULL;
        return ss_fail(SS_ECORRUPT, "slice %s: non-finite, negative or unsorted singular values", id);
    }
    return SS_OK;
}

/* ---- open / close ------------------------------------------------------------ */

static const struct {
    const char *name;
    int (*open)(const ss_store_opts *opts, ss_store_backend **out);
} backends[] = {
    {"dir", ss_store_dir_open},
    {"postgres", ss_store_pg_open},
};

/* Indexes one listed slice; a slice that does not verify is skipped, never served. */
static int index_one(void *arg, const char *id) {
    ss_store *s = arg;
    entry *e = calloc(1, sizeof *e);
    if (!e) return ss_fail(SS_ENOMEM, "out of memory reading the store index");
    int rc = s->b->info(s->b, id, &e->info);
    if (rc == SS_ENOMEM) {
        free(e);
        return rc;
    }
    if (rc != SS_OK) {
        fprintf(stderr, "svdslice: store: skipping corrupt or unreadable slice %s: %s\n", id, ss_error());
        free(e);
        return SS_OK;
    }
    if (insert_locked(s, e) != SS_OK) {
        entry_free(e);
        return ss_fail(SS_ENOMEM, "out of memory reading the store index");
    }
    s->disk_bytes += e->info.file_bytes;
    return SS_OK;
}

int ss_store_open(const ss_store_opts *opts, ss_store **out) {
    *out = NULL;
    if (!opts) return ss_fail(SS_EINVAL, "no store options given");
    const char *want = opts->backend ? opts->backend : "dir";
    int (*open_backend)(const ss_store_opts *, ss_store_backend **) = NULL;
    for (size_t i = 0; i < sizeof backends / sizeof *backends; i++)
        if (!strcmp(backends[i].name, want)) open_backend = backends[i].open;
    if (!open_backend) return ss_fail(SS_EINVAL, "unknown store backend \"%s\"", want);
    ss_store_backend *b = NULL;
    int rc = open_backend(opts, &b);
    if (rc != SS_OK) return rc;
    ss_store *s = calloc(1, sizeof *s);
    if (!s) {
        b->close(b);
        return ss_fail(SS_ENOMEM, "out of memory");
    }
    s->b = b;
    s->cache_budget = opts->cache_bytes;
    s->quota = opts->quota_bytes;
    s->shared = b->shared;
    s->on_purge = opts->on_purge;
    s->purge_arg = opts->purge_arg;
    s->lru.prev = s->lru.next = &s->lru;
    s->orphans.prev = s->orphans.next = &s->orphans;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->disk_mu, NULL);
    if ((rc = grow_buckets(s)) == SS_OK) rc = s->shared ? b->watch(b, purge_cb, s) : b->list(b, index_one, s);
    if (rc != SS_OK) {
        ss_store_close(s);
        return rc;
    }
    *out = s;
    return SS_OK;
}

ss_store_backend *ss_store_get_backend(ss_store *s) { return s->b; }

void ss_store_close(ss_store *s) {
    if (!s) return;
    if (s->b) s->b->close(s->b); /* first: a shared backend's watcher calls into s */
    s->b = NULL;
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
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->disk_mu);
    free(s);
}

/* ---- put / delete ------------------------------------------------------------- */

/* What counts against the quota: every slice's and every volume's stored bytes. Shared:
 * other processes store too; two of them may each pass the check with one upload, so
 * the quota is exceeded by at most one upload each. With disk_mu held. */
static int used_bytes(ss_store *s, long long *used) {
    if (!s->shared) {
        pthread_mutex_lock(&s->mu);
        *used = s->disk_bytes + s->volume_bytes;
        pthread_mutex_unlock(&s->mu);
        return SS_OK;
    }
    long long n, slices = 0, volumes = 0;
    int rc = s->b->usage(s->b, &n, &slices);
    if (rc == SS_OK && s->b->vusage) rc = s->b->vusage(s->b, &n, &volumes);
    *used = slices + volumes;
    return rc;
}

int ss_store_admit_volume(ss_store *s, long long len) {
    if (s->quota <= 0) {
        ss_store_volume_bytes(s, len);
        return SS_OK;
    }
    long long used = 0;
    pthread_mutex_lock(&s->disk_mu);
    int rc = used_bytes(s, &used);
    if (rc == SS_OK && used + len > s->quota)
        rc = ss_fail(SS_ENOSPC, "storing %lld bytes would exceed the quota of %lld bytes (%lld used)", len, s->quota,
                     used);
    if (rc == SS_OK) ss_store_volume_bytes(s, len);
    pthread_mutex_unlock(&s->disk_mu);
    return rc;
}

void ss_store_volume_bytes(ss_store *s, long long delta) {
    if (s->shared) return; /* the store's own sums count them */
    pthread_mutex_lock(&s->mu);
    s->volume_bytes += delta;
    pthread_mutex_unlock(&s->mu);
}

int ss_store_put(ss_store *s, const ss_factors *f, int *existed) {
    if (existed) *existed = 0;
    if (!f || !id_valid(f->id)) return ss_fail(SS_EINVAL, "slice has no valid id");
    int rc;
    pthread_mutex_lock(&s->mu);
    int have = lookup_locked(s, f->id, &rc) != NULL;
    pthread_mutex_unlock(&s->mu);
    if (have) {
        if (existed) *existed = 1;
        return SS_OK;
    }
    if (rc != SS_EINVAL) return rc; /* the shared store could not say */
    unsigned char *buf = NULL;
    size_t len = 0;
    rc = ss_svd_serialize(f, &buf, &len);
    if (rc != SS_OK) return rc;
    rc = ss_store_put_encoded(s, f, buf, len, existed);
    free(buf);
    return rc;
}

int ss_store_put_encoded(ss_store *s, const ss_factors *f, const unsigned char *buf, size_t len, int *existed) {
    if (existed) *existed = 0;
    if (!f || !id_valid(f->id) || !buf) return ss_fail(SS_EINVAL, "slice has no valid id or encoding");
    int rc;
    pthread_mutex_lock(&s->mu);
    int have = lookup_locked(s, f->id, &rc) != NULL; /* shared: another process may hold it */
    pthread_mutex_unlock(&s->mu);
    if (have) {
        if (existed) *existed = 1;
        return SS_OK;
    }
    if (rc != SS_EINVAL) return rc; /* the shared store could not say */
    entry *e = entry_from_factors(f, (long long)len);
    if (!e) return ss_fail(SS_ENOMEM, "out of memory");

    /* Everything from the quota check to the index insert happens under
     * disk_mu, so a concurrent put or delete of the same id cannot interleave. */
    pthread_mutex_lock(&s->disk_mu);
    pthread_mutex_lock(&s->mu);
    int dup = find_locked(s, f->id) != NULL;
    long long used = s->disk_bytes;
    pthread_mutex_unlock(&s->mu);
    if (!dup && s->quota > 0 && (rc = used_bytes(s, &used)) != SS_OK) goto done;
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
    rc = s->b->put(s->b, f->id, buf, len);
    if (rc != SS_OK) goto done;
    pthread_mutex_lock(&s->mu);
    if (!find_locked(s, f->id)) { /* shared: a lookup may have filled it meanwhile */
        rc = insert_locked(s, e);
        if (rc == SS_OK) {
            s->disk_bytes += (long long)len;
            e = NULL;
        }
    }
    pthread_mutex_unlock(&s->mu);
done:
    pthread_mutex_unlock(&s->disk_mu);
    entry_free(e);
    return rc;
}

int ss_store_delete(ss_store *s, const char *id) {
    if (!id_valid(id)) return ss_fail(SS_EINVAL, "invalid slice id");
    int rc;
    pthread_mutex_lock(&s->disk_mu);
    pthread_mutex_lock(&s->mu);
    entry *e = lookup_locked(s, id, &rc);
    if (e) e->deleting = 1;
    pthread_mutex_unlock(&s->mu);
    if (!e) {
        pthread_mutex_unlock(&s->disk_mu);
        return rc;
    }
    /* Removed from the index only once the backend has removed it: a failed
     * delete leaves the slice listed and served, as it still is stored. */
    int gone = 0;
    rc = s->b->del(s->b, id, &gone);
    pthread_mutex_lock(&s->mu);
    e = find_locked(s, id); /* acquire may have dropped it as corrupt meanwhile */
    if (e && (rc == SS_OK || gone)) {
        remove_locked(s, e);
        drop_node_locked(s, e);
        s->disk_bytes -= e->info.file_bytes;
    } else if (e) {
        e->deleting = 0;
        e = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->disk_mu);
    entry_free(e);
    return rc;
}

/* ---- reads ---------------------------------------------------------------------- */

/* A slice whose file no longer verifies is never served again (its file stays). */
static void drop_corrupt_locked(ss_store *s, entry *e) {
    fprintf(stderr, "svdslice: store: dropping corrupt slice %s: %s\n", e->info.id, ss_error());
    forget_locked(s, e);
}

const ss_factors *ss_store_acquire(ss_store *s, const char *id, int *err) {
    int dummy;
    if (!err) err = &dummy;
    *err = SS_OK;
    if (!id_valid(id)) {
        *err = ss_fail(SS_EINVAL, "invalid slice id");
        return NULL;
    }
    pthread_mutex_lock(&s->mu);
    entry *e = lookup_locked(s, id, err);
    if (!e) {
        pthread_mutex_unlock(&s->mu);
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
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = s->b->get(s->b, id, &buf, &len);
    if (rc == SS_OK) {
        rc = ss_store_decode(id, buf, len, &f);
        free(buf);
    }
    pthread_mutex_lock(&s->mu);
    e = find_locked(s, id);
    if (!e && s->shared) { /* a purge flushed the index meanwhile, not only for a delete: ask */
        int lrc;
        e = lookup_locked(s, id, &lrc);
        if (!e && lrc != SS_EINVAL) {
            pthread_mutex_unlock(&s->mu);
            ss_factors_free(f);
            *err = lrc;
            return NULL;
        }
    }
    if (rc == SS_EINVAL && e && s->shared) { /* deleted elsewhere */
        forget_locked(s, e);
        e = NULL;
    }
    if (rc != SS_OK && (!e || e->deleting)) { /* deleted while we were reading it: just gone */
        pthread_mutex_unlock(&s->mu);
        *err = ss_fail(SS_EINVAL, "no slice %s", id);
        return NULL;
    }
    if (rc != SS_OK) {
        if (rc == SS_ECORRUPT && e) drop_corrupt_locked(s, e);
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

void ss_store_cache_factors(ss_store *s, ss_factors *f) {
    if (!f) return;
    pthread_mutex_lock(&s->mu);
    entry *e = find_locked(s, f->id);
    cnode *n = e && !e->node ? calloc(1, sizeof *n) : NULL;
    if (n) {
        n->f = f;
        n->bytes = factors_bytes(f);
        if (n->bytes <= s->cache_budget) {
            n->attached = 1;
            e->node = n;
            list_push_front(&s->lru, n);
            s->cache_bytes += n->bytes;
            evict_locked(s);
            f = NULL;
        } else {
            free(n);
        }
    }
    pthread_mutex_unlock(&s->mu);
    ss_factors_free(f); /* not cached: already there, gone, or too big */
}

const ss_factors *ss_store_acquire_cached(ss_store *s, const char *id) {
    if (!id_valid(id)) return NULL;
    if (s->shared && !s->b->watching(s->b)) return NULL; /* must ask the store: a worker does */
    pthread_mutex_lock(&s->mu);
    entry *e = find_locked(s, id);
    cnode *n = e ? e->node : NULL;
    if (n) {
        n->refs++;
        s->hits++;
        list_unlink(n);
        list_push_front(&s->lru, n);
    }
    pthread_mutex_unlock(&s->mu);
    return n ? n->f : NULL;
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
    int rc;
    pthread_mutex_lock(&s->mu);
    entry *e = lookup_locked(s, id, &rc);
    if (e) {
        *out = e->info;
        out->singular_values = malloc((size_t)e->info.nsv * sizeof(float));
        if (!out->singular_values) rc = ss_fail(SS_ENOMEM, "out of memory");
        else memcpy(out->singular_values, e->info.singular_values, (size_t)e->info.nsv * sizeof(float));
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int ss_store_set_upload_bytes(ss_store *s, const char *id, long long bytes) {
    if (!id_valid(id)) return ss_fail(SS_EINVAL, "invalid slice id");
    int rc;
    pthread_mutex_lock(&s->mu);
    entry *e = lookup_locked(s, id, &rc);
    if (e && !e->info.upload_bytes) e->info.upload_bytes = bytes;
    pthread_mutex_unlock(&s->mu);
    if (e && s->shared) rc = s->b->set_upload_bytes(s->b, id, bytes);
    return rc;
}

int ss_store_info_scalars(ss_store *s, const char *id, ss_slice_info *out) {
    memset(out, 0, sizeof *out);
    if (!id_valid(id)) return ss_fail(SS_EINVAL, "invalid slice id");
    int rc;
    pthread_mutex_lock(&s->mu);
    entry *e = lookup_locked(s, id, &rc);
    if (e) {
        *out = e->info;
        out->singular_values = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
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

typedef struct scan_acc {
    ss_slice_info *arr;
    size_t n, cap;
} scan_acc;

static int scan_one(void *arg, const ss_slice_info *info) {
    scan_acc *a = arg;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        ss_slice_info *p = realloc(a->arr, cap * sizeof *p);
        if (!p) return ss_fail(SS_ENOMEM, "out of memory");
        a->arr = p;
        a->cap = cap;
    }
    a->arr[a->n] = *info;
    a->arr[a->n++].singular_values = NULL;
    return SS_OK;
}

int ss_store_list(ss_store *s, ss_slice_info **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (s->shared) { /* the index holds only what this process has seen */
        scan_acc a = {0};
        int rc = s->b->scan(s->b, scan_one, &a);
        if (rc != SS_OK) {
            free(a.arr);
            return rc;
        }
        if (a.n) qsort(a.arr, a.n, sizeof *a.arr, cmp_newest);
        *out = a.arr ? a.arr : malloc(sizeof **out);
        *n = a.n;
        return *out ? SS_OK : ss_fail(SS_ENOMEM, "out of memory");
    }
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

int ss_store_find_content(ss_store *s, const ss_image *img, int rank, char id[65]) {
    ss_content_id(img, rank, id);
    int rc;
    pthread_mutex_lock(&s->mu);
    int have = lookup_locked(s, id, &rc) != NULL;
    pthread_mutex_unlock(&s->mu);
    if (have) return 1;
    /* A slice stored before ids were SHA-256 keeps its old id. Its hash is not
     * collision resistant, so an upload is that slice only if the stored
     * original pixels are the very same; otherwise it gets its own new id. */
    char old[65];
    ss_content_id_v1(img, rank, old);
    pthread_mutex_lock(&s->mu);
    have = lookup_locked(s, old, &rc) != NULL;
    pthread_mutex_unlock(&s->mu);
    if (!have) return 0;
    int err;
    const ss_factors *f = ss_store_acquire(s, old, &err);
    if (!f) return 0; /* unreadable now: stored anew under the new id rather than refused */
    const int m = img->height, n = img->width, nsv = m < n ? m : n;
    int same = f->m == m && f->n == n && f->bit_depth == img->bit_depth &&
               f->rank == (rank <= 0 || rank > nsv ? nsv : rank) && f->orig &&
               memcmp(f->orig, img->px, (size_t)m * (size_t)n * sizeof *img->px) == 0;
    ss_store_release(s, f);
    if (same) memcpy(id, old, sizeof old);
    return same;
}

int ss_store_read_file(ss_store *s, const char *id, unsigned char **buf, size_t *len) {
    if (!id_valid(id)) return ss_fail(SS_EINVAL, "invalid slice id");
    int rc;
    pthread_mutex_lock(&s->mu);
    int have = lookup_locked(s, id, &rc) != NULL;
    pthread_mutex_unlock(&s->mu);
    if (!have) return rc;
    rc = s->b->get(s->b, id, buf, len);
    if (rc == SS_OK) { /* the index checked only its header and singular values */
        ss_factors h;
        rc = ss_svd_verify(*buf, *len, &h);
        if (rc == SS_OK && strcmp(h.id, id) != 0)
            rc = ss_fail(SS_ECORRUPT, "slice %s: id does not match its name", id);
        if (rc != SS_OK) {
            free(*buf);
            *buf = NULL;
            *len = 0;
            rc = SS_ECORRUPT;
        }
    }
    if (rc != SS_OK) { /* deleted between the check and the read: simply gone */
        pthread_mutex_lock(&s->mu);
        entry *e = find_locked(s, id);
        int lrc = SS_EINVAL;
        if (!e && s->shared) e = lookup_locked(s, id, &lrc); /* flushed by a purge, perhaps not deleted */
        if (!e && lrc != SS_EINVAL) {
            pthread_mutex_unlock(&s->mu);
            return lrc;
        }
        if (e && rc == SS_EINVAL && s->shared) { /* deleted elsewhere */
            forget_locked(s, e);
            e = NULL;
        }
        have = e && !e->deleting;
        if (have && rc == SS_ECORRUPT) drop_corrupt_locked(s, e);
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
    long long n, bytes; /* shared: what every process stored, when the store answers */
    if (s->shared && s->b->usage(s->b, &n, &bytes) == SS_OK) {
        st->slices = n;
        st->disk_bytes = bytes;
    }
}
