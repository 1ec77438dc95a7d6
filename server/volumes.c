/* volumes.c - the volume store: index and states, factorisation jobs on the pool, the decoded
 * and rebuilt volumes cache, .svv blobs through the store backend */
#include "server/volumes.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/store.h"
#include "server/store_backend.h"
#include "util/clock.h"
#include "util/error.h"

#define RB_MAX 4 /* rebuilt volumes kept per volume (k, backend) */

typedef struct rebuilt {
    int k;
    const void *tag;
    void *data;
    size_t bytes;
    unsigned long long used;
} rebuilt;

/* One volume. Owned by the index while listed; a removed one lives on while slice jobs or
 * handles still point at it (jobs + refs), then is freed by whoever drops the last. */
struct ss_vhandle {
    ss_vol_info info;
    ss_volume *vol;          /* being factorised, or decoded and cached (ready); NULL otherwise */
    size_t vol_bytes;        /* counted in the cache when ready and held here */
    rebuilt rb[RB_MAX];
    int refs;                /* handles out */
    int jobs;                /* slice jobs alive */
    int next_slice;          /* the next slice a job takes */
    int removed;             /* out of the index */
    long long mem;           /* reservation given back when factorisation ends */
    double t_begin;          /* when its factorisation was queued (for the log) */
    unsigned long long used; /* LRU stamp */
};
typedef struct ss_vhandle ventry;

struct ss_vstore {
    ss_store_backend *b;
    ss_vstore_opts o;
    pthread_mutex_t mu;      /* index, entries, cache */
    pthread_mutex_t disk_mu; /* orders vput and vdel */
    ventry **v;
    size_t n, cap;
    size_t cache_bytes;
    unsigned long long clock;
    int shared;          /* the backend is shared: the index is a cache of the store's volumes */
    unsigned long epoch; /* bumped by every purge: a lookup that raced one is not kept */
};

typedef struct slice_job {
    ss_pool_job pj; /* first: the pool hands this pointer back */
    ss_vstore *vs;
    ventry *e;
} slice_job;

const char *ss_vol_state_name(int s) {
    static const char *const names[] = {"queued", "factorising", "ready", "failed"};
    return s >= 0 && s < 4 ? names[s] : "unknown";
}

int ss_vstore_available(const ss_vstore *vs) { return vs && vs->b && vs->b->vput && vs->b->vget; }

/* ---- entries ------------------------------------------------------------------ */

static ventry *find_locked(ss_vstore *vs, const char *id, size_t *at) {
    for (size_t i = 0; i < vs->n; i++)
        if (!strcmp(vs->v[i]->info.meta.id, id)) {
            if (at) *at = i;
            return vs->v[i];
        }
    return NULL;
}

static int add_locked(ss_vstore *vs, ventry *e) {
    if (vs->n == vs->cap) {
        size_t cap = vs->cap ? 2 * vs->cap : 16;
        ventry **nv = realloc(vs->v, cap * sizeof *nv);
        if (!nv) return ss_fail(SS_ENOMEM, "out of memory");
        vs->v = nv;
        vs->cap = cap;
    }
    vs->v[vs->n++] = e;
    return SS_OK;
}

static void drop_rebuilt_locked(ss_vstore *vs, ventry *e) {
    for (int i = 0; i < RB_MAX; i++)
        if (e->rb[i].data) {
            free(e->rb[i].data);
            vs->cache_bytes -= e->rb[i].bytes;
            memset(&e->rb[i], 0, sizeof e->rb[i]);
        }
}

/* Frees the cached volume (not one being factorised: its jobs own that). */
static void drop_vol_locked(ss_vstore *vs, ventry *e) {
    drop_rebuilt_locked(vs, e);
    if (e->vol && e->info.state == SS_VOL_READY) {
        ss_volume_free(e->vol);
        e->vol = NULL;
        vs->cache_bytes -= e->vol_bytes;
        e->vol_bytes = 0;
    }
}

/* Frees a removed entry nothing points at any more. */
static void maybe_free_locked(ss_vstore *vs, ventry *e) {
    if (!e->removed || e->refs || e->jobs) return;
    drop_rebuilt_locked(vs, e);
    if (e->vol_bytes) vs->cache_bytes -= e->vol_bytes;
    ss_volume_free(e->vol);
    free(e);
}

/* Frees unheld cache contents, least recently used first, until within the bound. */
static void evict_locked(ss_vstore *vs) {
    while (vs->cache_bytes > vs->o.cache_bytes) {
        ventry *lru = NULL;
        for (size_t i = 0; i < vs->n; i++) {
            ventry *e = vs->v[i];
            if (e->refs || e->info.state != SS_VOL_READY || !e->vol) continue;
            if (!lru || e->used < lru->used) lru = e;
        }
        if (!lru) return; /* everything is held: freed at release */
        drop_vol_locked(vs, lru);
    }
}

/* ---- open / close ------------------------------------------------------------- */

/* A ready entry from a stored volume's first head_len bytes (at least its header and index
 * table) and the blob's length. SS_ECORRUPT, SS_ENOMEM. */
static int entry_from_head(const char *id, const unsigned char *head, size_t head_len, size_t len, ventry **out) {
    *out = NULL;
    ventry *e = calloc(1, sizeof *e);
    if (!e) return ss_fail(SS_ENOMEM, "out of memory");
    size_t need = head_len >= SS_SVV_HEADER_BYTES ? ss_svv_head_bytes(head, head_len) : 0;
    int rc = !need || need > head_len ? ss_fail(SS_ECORRUPT, "bad .svv header")
                                      : ss_volume_read_header(head, need, len, &e->info.meta);
    if (rc == SS_OK && strcmp(e->info.meta.id, id) != 0) rc = ss_fail(SS_ECORRUPT, "holds volume %s", e->info.meta.id);
    if (rc != SS_OK) {
        free(e);
        return rc;
    }
    e->info.meta.voxels = NULL;
    e->info.meta.slices = NULL;
    e->info.state = SS_VOL_READY;
    e->info.slices_done = e->info.meta.nslices;
    e->info.stored_bytes = (long long)len;
    e->info.upload_bytes = e->info.meta.upload_bytes; /* 0 (unknown) in a version-1 .svv */
    *out = e;
    return SS_OK;
}

/* The entry of a stored volume, from its header and index table only (two vhead calls).
 * SS_EINVAL (shared: not stored), SS_ESTORE, SS_ECORRUPT, SS_EIO, SS_ENOMEM. */
static int fetch_entry(ss_vstore *vs, const char *id, ventry **out) {
    *out = NULL;
    unsigned char head[SS_SVV_HEADER_BYTES];
    size_t len = 0;
    int rc = vs->b->vhead(vs->b, id, sizeof head, head, &len);
    if (rc != SS_OK) return rc;
    size_t need = ss_svv_head_bytes(head, sizeof head);
    if (!need || need > len) return ss_fail(SS_ECORRUPT, "bad .svv header");
    unsigned char *buf = malloc(need);
    if (!buf) return ss_fail(SS_ENOMEM, "out of memory");
    rc = vs->b->vhead(vs->b, id, need, buf, &len);
    if (rc == SS_OK) rc = entry_from_head(id, buf, need, len, out);
    free(buf);
    return rc;
}

static int index_one(void *arg, const char *id) {
    ss_vstore *vs = arg;
    ventry *e = NULL;
    int rc = fetch_entry(vs, id, &e);
    if (rc == SS_ENOMEM) return rc;
    if (rc != SS_OK) {
        fprintf(stderr, "svdslice: volumes: skipping %s.svv: %s\n", id, ss_error());
        return 0;
    }
    if ((rc = add_locked(vs, e)) != SS_OK) {
        free(e);
        return rc;
    }
    if (vs->o.store) ss_store_volume_bytes(vs->o.store, e->info.stored_bytes);
    return SS_OK;
}

/* Out of the index (at: its place); freed once nothing points at it. */
static void forget_locked(ss_vstore *vs, ventry *e, size_t at) {
    vs->v[at] = vs->v[--vs->n];
    e->removed = 1;
    maybe_free_locked(vs, e);
}

/* The entry of id, with vs->mu held (released meanwhile when the store is asked), or NULL
 * and *rc (SS_EINVAL: no such volume). With a shared backend a miss asks the store and fills
 * the index, and while its deletes are not watched a ready hit is checked there too: a
 * replica never serves a volume another one deleted. */
static ventry *lookup_locked(ss_vstore *vs, const char *id, int *rc) {
    *rc = SS_OK;
    ventry *e = find_locked(vs, id, NULL);
    if (!vs->shared || (e && (e->info.state != SS_VOL_READY || vs->b->watching(vs->b)))) {
        if (!e) *rc = ss_fail(SS_EINVAL, "no volume %s", id);
        return e;
    }
    for (int tries = 0; tries < 3; tries++) {
        unsigned long epoch = vs->epoch;
        pthread_mutex_unlock(&vs->mu);
        ventry *fresh = NULL;
        int r = fetch_entry(vs, id, &fresh);
        pthread_mutex_lock(&vs->mu);
        size_t at = 0;
        e = find_locked(vs, id, &at);
        if (r != SS_OK) {
            free(fresh);
            if (r == SS_EINVAL && e && e->info.state == SS_VOL_READY) forget_locked(vs, e, at); /* deleted elsewhere */
            if (r == SS_EINVAL && e && e->info.state != SS_VOL_READY) return e; /* ours, not stored yet */
            *rc = r == SS_EINVAL ? ss_fail(SS_EINVAL, "no volume %s", id) : r;
            return NULL;
        }
        if (e) {
            free(fresh);
            return e;
        }
        if (epoch == vs->epoch) { /* no purge ran while we asked: the answer is current */
            if (add_locked(vs, fresh) != SS_OK) {
                free(fresh);
                *rc = ss_fail(SS_ENOMEM, "out of memory");
                return NULL;
            }
            return fresh;
        }
        free(fresh);
    }
    *rc = ss_fail(SS_ESTORE, "volume %s: the store kept changing while it was read; retry", id);
    return NULL;
}

/* From the backend's watcher: another process deleted volume id (NULL: perhaps some). */
static void vpurge_cb(void *arg, const char *id) {
    ss_vstore *vs = arg;
    pthread_mutex_lock(&vs->mu);
    vs->epoch++;
    for (size_t i = vs->n; i-- > 0;) {
        ventry *e = vs->v[i];
        if (e->info.state == SS_VOL_READY && (!id || !strcmp(e->info.meta.id, id))) forget_locked(vs, e, i);
    }
    pthread_mutex_unlock(&vs->mu);
    if (vs->o.on_purge) vs->o.on_purge(vs->o.purge_arg, id);
}

int ss_vstore_open(const ss_vstore_opts *o, ss_vstore **out) {
    *out = NULL;
    ss_vstore *vs = calloc(1, sizeof *vs);
    if (!vs) return ss_fail(SS_ENOMEM, "out of memory");
    vs->o = *o;
    if (vs->o.parallel < 1) vs->o.parallel = 1;
    vs->b = o->backend;
    pthread_mutex_init(&vs->mu, NULL);
    pthread_mutex_init(&vs->disk_mu, NULL);
    vs->shared = vs->b && vs->b->shared && vs->b->vscan && vs->b->vusage && vs->b->vwatch;
    if (vs->shared && ss_vstore_available(vs)) { /* nothing indexed now: lookups ask the store */
        vs->b->vwatch(vs->b, vpurge_cb, vs);
    } else if (ss_vstore_available(vs) && vs->b->vlist && vs->b->vhead) {
        int rc = vs->b->vlist(vs->b, index_one, vs);
        if (rc != SS_OK) {
            ss_vstore_close(vs);
            return rc;
        }
    }
    *out = vs;
    return SS_OK;
}

void ss_vstore_close(ss_vstore *vs) {
    if (!vs) return;
    if (vs->shared && ss_vstore_available(vs)) vs->b->vwatch(vs->b, NULL, NULL);
    for (size_t i = 0; i < vs->n; i++) {
        vs->v[i]->removed = 1;
        vs->v[i]->refs = vs->v[i]->jobs = 0;
        maybe_free_locked(vs, vs->v[i]);
    }
    free(vs->v);
    pthread_mutex_destroy(&vs->mu);
    pthread_mutex_destroy(&vs->disk_mu);
    free(vs);
}

/* ---- factorisation ------------------------------------------------------------ */

static void fail_locked(ventry *e, const char *why) {
    if (e->info.state == SS_VOL_FAILED) return;
    e->info.state = SS_VOL_FAILED;
    snprintf(e->info.error, sizeof e->info.error, "%s", why);
}

/* A job leaves: the last one of a failed (or removed) volume frees its work. */
static void job_exit_locked(ss_vstore *vs, ventry *e) {
    e->jobs--;
    if (e->jobs == 0 && e->info.state != SS_VOL_READY) {
        ss_volume_free(e->vol);
        e->vol = NULL;
        if (e->mem && vs->o.mem_held) __atomic_sub_fetch(vs->o.mem_held, e->mem, __ATOMIC_RELAXED);
        e->mem = 0;
    }
    maybe_free_locked(vs, e);
}

/* The last slice is done: the .svv is stored, and only then is the volume ready. */
static void assemble(ss_vstore *vs, ventry *e) {
    unsigned char *buf = NULL;
    size_t len = 0;
    double t0 = ss_now();
    int rc = ss_volume_serialize(e->vol, &buf, &len);
    double t1 = ss_now();
    if (rc == SS_OK && e->vol->no_original) { /* keep-original=false: served as read back, without them */
        free(e->vol->voxels);
        e->vol->voxels = NULL;
    }
    if (rc == SS_OK) {
        pthread_mutex_lock(&vs->disk_mu);
        pthread_mutex_lock(&vs->mu);
        int removed = e->removed;
        pthread_mutex_unlock(&vs->mu);
        /* A volume deleted while factorising is not stored; under disk_mu, a delete
         * that comes after this put finds it stored and removes it. The quota counts
         * it first (and gives it back if it is not stored after all). */
        rc = removed || !vs->o.store ? SS_OK : ss_store_admit_volume(vs->o.store, (long long)len);
        if (rc == SS_OK && !removed) {
            rc = vs->b->vput(vs->b, e->info.meta.id, buf, len);
            if (rc != SS_OK && vs->o.store) ss_store_volume_bytes(vs->o.store, -(long long)len);
        }
        pthread_mutex_lock(&vs->mu);
        if (rc == SS_OK && !removed) {
            e->info.state = SS_VOL_READY;
            e->info.stored_bytes = (long long)len;
            e->vol_bytes = (size_t)ss_volume_memory_bytes(&e->vol->nii, e->vol->axis);
            vs->cache_bytes += e->vol_bytes;
            e->used = ++vs->clock;
            if (e->mem && vs->o.mem_held) __atomic_sub_fetch(vs->o.mem_held, e->mem, __ATOMIC_RELAXED);
            e->mem = 0;
        }
        pthread_mutex_unlock(&vs->mu);
        pthread_mutex_unlock(&vs->disk_mu);
    }
    free(buf);
    if (rc == SS_OK)
        fprintf(stderr, "svdslice: volume %s ready: %d slices factorised in %.0f ms, serialised in %.0f ms, "
                        "stored in %.0f ms (%zu bytes)\n",
                e->info.meta.id, e->info.meta.nslices, (t0 - e->t_begin) * 1e3, (t1 - t0) * 1e3,
                (ss_now() - t1) * 1e3, len);
    pthread_mutex_lock(&vs->mu);
    if (rc != SS_OK) {
        char why[256];
        snprintf(why, sizeof why, "storing the volume failed: %s", ss_error());
        fprintf(stderr, "svdslice: volume %s: %s\n", e->info.meta.id, why);
        fail_locked(e, why);
    }
    job_exit_locked(vs, e);
    evict_locked(vs);
    pthread_mutex_unlock(&vs->mu);
}

static void slice_run(ss_pool_job *pj, ss_workspace *ws) {
    (void)ws;
    slice_job *j = (slice_job *)pj;
    ss_vstore *vs = j->vs;
    ventry *e = j->e;
    pthread_mutex_lock(&vs->mu);
    if (vs->o.stopping && __atomic_load_n(vs->o.stopping, __ATOMIC_SEQ_CST))
        fail_locked(e, "the server stopped before the volume was ready; upload it again");
    int idx = -1;
    if (e->info.state != SS_VOL_FAILED && !e->removed && e->next_slice < e->info.meta.nslices) {
        idx = e->next_slice++;
        e->info.state = SS_VOL_FACTORISING;
    }
    if (idx < 0) {
        job_exit_locked(vs, e);
        pthread_mutex_unlock(&vs->mu);
        free(j);
        return;
    }
    pthread_mutex_unlock(&vs->mu);
    int rc = ss_volume_factor_slice(e->vol, idx); /* each job its own slot: no lock needed */
    pthread_mutex_lock(&vs->mu);
    int last = 0;
    if (rc != SS_OK) {
        char why[256];
        snprintf(why, sizeof why, "slice %d: %s", idx, ss_error());
        fail_locked(e, why);
    } else if (++e->info.slices_done == e->info.meta.nslices && e->info.state != SS_VOL_FAILED) {
        last = 1;
    }
    pthread_mutex_unlock(&vs->mu);
    if (last) {
        free(j);
        assemble(vs, e);
        return;
    }
    /* Behind whatever came meanwhile: a volume shares the workers with slice requests. */
    if (ss_pool_submit_force(vs->o.pool, &j->pj) != SS_OK) {
        pthread_mutex_lock(&vs->mu);
        fail_locked(e, "the server stopped before the volume was ready; upload it again");
        job_exit_locked(vs, e);
        pthread_mutex_unlock(&vs->mu);
        free(j);
    }
}

int ss_vstore_begin(ss_vstore *vs, ss_volume *v, long long upload_bytes, long long mem, ss_vol_info *out,
                    int *taken) {
    *taken = 0;
    if (!ss_vstore_available(vs)) return ss_fail(SS_EUNAVAIL, "this store backend keeps no volumes");
    pthread_mutex_lock(&vs->mu);
    size_t at = 0;
    int lrc;
    ventry *old = lookup_locked(vs, v->id, &lrc); /* shared: stored by another replica? */
    if (!old && lrc != SS_EINVAL) {
        pthread_mutex_unlock(&vs->mu);
        return lrc; /* the store could not say */
    }
    if (old) find_locked(vs, v->id, &at);
    if (old && old->info.state != SS_VOL_FAILED) {
        *out = old->info;
        pthread_mutex_unlock(&vs->mu);
        return SS_OK;
    }
    if (old) { /* failed before: start afresh */
        old->removed = 1;
        vs->v[at] = vs->v[--vs->n];
        maybe_free_locked(vs, old);
    }
    ventry *e = calloc(1, sizeof *e);
    int njobs = v->nslices < vs->o.parallel ? v->nslices : vs->o.parallel;
    slice_job **jobs = calloc((size_t)njobs, sizeof *jobs);
    int rc = e && jobs ? SS_OK : ss_fail(SS_ENOMEM, "out of memory");
    for (int i = 0; rc == SS_OK && i < njobs; i++)
        if (!(jobs[i] = calloc(1, sizeof **jobs))) rc = ss_fail(SS_ENOMEM, "out of memory");
    if (rc == SS_OK) rc = add_locked(vs, e);
    if (rc != SS_OK) {
        pthread_mutex_unlock(&vs->mu);
        for (int i = 0; jobs && i < njobs; i++) free(jobs[i]);
        free(jobs);
        free(e);
        return rc;
    }
    e->info.meta = *v;
    e->info.meta.voxels = NULL;
    e->info.meta.slices = NULL;
    e->info.state = SS_VOL_QUEUED;
    e->info.upload_bytes = upload_bytes;
    e->vol = v;
    e->mem = mem;
    e->jobs = njobs;
    e->t_begin = ss_now();
    *taken = 1;
    *out = e->info;
    pthread_mutex_unlock(&vs->mu);
    for (int i = 0; i < njobs; i++) {
        jobs[i]->pj.run = slice_run;
        jobs[i]->vs = vs;
        jobs[i]->e = e;
        if (ss_pool_submit_force(vs->o.pool, &jobs[i]->pj) != SS_OK) {
            pthread_mutex_lock(&vs->mu);
            fail_locked(e, "the server is stopping; upload it again");
            job_exit_locked(vs, e);
            pthread_mutex_unlock(&vs->mu);
            free(jobs[i]);
        }
    }
    free(jobs);
    return SS_OK;
}

/* ---- reading ------------------------------------------------------------------ */

int ss_vstore_info(ss_vstore *vs, const char *id, ss_vol_info *out) {
    int rc;
    pthread_mutex_lock(&vs->mu);
    ventry *e = lookup_locked(vs, id, &rc);
    if (e) *out = e->info;
    pthread_mutex_unlock(&vs->mu);
    return rc;
}

static int newest_first(const void *a, const void *b) {
    const ss_vol_info *x = a, *y = b;
    if (x->meta.created != y->meta.created) return x->meta.created > y->meta.created ? -1 : 1;
    return strcmp(x->meta.id, y->meta.id);
}

typedef struct scan_acc {
    ss_vol_info *arr;
    size_t n, cap;
} scan_acc;

static int acc_push(scan_acc *a, const ss_vol_info *info) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 16;
        ss_vol_info *na = realloc(a->arr, cap * sizeof *na);
        if (!na) return ss_fail(SS_ENOMEM, "out of memory");
        a->arr = na;
        a->cap = cap;
    }
    a->arr[a->n++] = *info;
    return SS_OK;
}

static int scan_one(void *arg, const char *id, const unsigned char *head, size_t head_len, size_t len) {
    ventry *e = NULL;
    int rc = entry_from_head(id, head, head_len, len, &e);
    if (rc == SS_ENOMEM) return rc;
    if (rc != SS_OK) { /* listed by nobody, as at an index's start */
        fprintf(stderr, "svdslice: volumes: skipping %s in the store: %s\n", id, ss_error());
        return SS_OK;
    }
    rc = acc_push(arg, &e->info);
    free(e);
    return rc;
}

int ss_vstore_list(ss_vstore *vs, ss_vol_info **out, size_t *n) {
    scan_acc a = {0};
    int rc = vs->shared ? vs->b->vscan(vs->b, scan_one, &a) : SS_OK; /* shared: what every replica stored */
    pthread_mutex_lock(&vs->mu);
    for (size_t i = 0; rc == SS_OK && i < vs->n; i++) {
        const ss_vol_info *in = &vs->v[i]->info;
        int listed = 0; /* shared: this replica's volumes not (yet) stored are listed too */
        for (size_t j = 0; vs->shared && j < a.n && !listed; j++) listed = !strcmp(a.arr[j].meta.id, in->meta.id);
        if (!listed && (!vs->shared || in->state != SS_VOL_READY)) rc = acc_push(&a, in);
    }
    pthread_mutex_unlock(&vs->mu);
    if (rc == SS_OK && !a.arr && !(a.arr = malloc(sizeof *a.arr))) rc = ss_fail(SS_ENOMEM, "out of memory");
    if (rc != SS_OK) {
        free(a.arr);
        return rc;
    }
    ss_vol_info *all = a.arr;
    size_t cnt = a.n;
    qsort(all, cnt, sizeof *all, newest_first);
    *out = all;
    *n = cnt;
    return SS_OK;
}

ss_vhandle *ss_vstore_acquire(ss_vstore *vs, const char *id, int *err) {
    int rc;
    pthread_mutex_lock(&vs->mu);
    ventry *e = lookup_locked(vs, id, &rc);
    if (!e || e->info.state != SS_VOL_READY) {
        pthread_mutex_unlock(&vs->mu);
        *err = e ? ss_fail(SS_EINVAL, "volume %s is not ready", id) : rc;
        return NULL;
    }
    e->refs++;
    e->used = ++vs->clock;
    if (e->vol) {
        pthread_mutex_unlock(&vs->mu);
        return e;
    }
    pthread_mutex_unlock(&vs->mu);
    /* Read and decode outside the lock; a second reader racing here keeps the first copy. */
    unsigned char *buf = NULL;
    size_t len = 0;
    ss_volume *v = NULL;
    rc = vs->b->vget(vs->b, id, &buf, &len);
    if (rc == SS_OK) rc = ss_volume_deserialize(buf, len, &v);
    free(buf);
    if (rc == SS_OK && strcmp(v->id, id) != 0) rc = ss_fail(SS_ECORRUPT, "%s.svv holds volume %s", id, v->id);
    pthread_mutex_lock(&vs->mu);
    if (rc != SS_OK) {
        *err = rc;
        if (rc != SS_EINVAL) fprintf(stderr, "svdslice: volume %s: %s\n", id, ss_error());
        size_t at = 0;
        if (rc == SS_EINVAL && vs->shared && find_locked(vs, id, &at) == e) forget_locked(vs, e, at); /* deleted elsewhere */
        e->refs--;
        maybe_free_locked(vs, e);
        pthread_mutex_unlock(&vs->mu);
        ss_volume_free(v);
        return NULL;
    }
    v->created = e->info.meta.created;
    if (!e->vol) {
        e->vol = v;
        e->vol_bytes = (size_t)ss_volume_memory_bytes(&v->nii, v->axis);
        vs->cache_bytes += e->vol_bytes;
        v = NULL;
    }
    pthread_mutex_unlock(&vs->mu);
    ss_volume_free(v);
    return e;
}

const ss_volume *ss_vhandle_volume(const ss_vhandle *h) { return h->vol; }

void ss_vstore_release(ss_vstore *vs, ss_vhandle *h) {
    if (!h) return;
    pthread_mutex_lock(&vs->mu);
    h->refs--;
    if (h->removed)
        maybe_free_locked(vs, h);
    else
        evict_locked(vs);
    pthread_mutex_unlock(&vs->mu);
}

const void *ss_vstore_rebuilt(ss_vstore *vs, ss_vhandle *h, int k, const void *tag, ss_vrebuild_fn rebuild,
                              void *arg, int *err, void **owned) {
    *owned = NULL;
    pthread_mutex_lock(&vs->mu);
    for (int i = 0; i < RB_MAX; i++)
        if (h->rb[i].data && h->rb[i].k == k && h->rb[i].tag == tag) {
            h->rb[i].used = ++vs->clock;
            void *d = h->rb[i].data;
            pthread_mutex_unlock(&vs->mu);
            return d;
        }
    pthread_mutex_unlock(&vs->mu);
    size_t bytes = ss_volume_voxel_bytes(h->vol);
    void *d = malloc(bytes ? bytes : 1);
    int rc = d ? rebuild(arg, h->vol, k, d) : ss_fail(SS_ENOMEM, "out of memory");
    if (rc != SS_OK) {
        free(d);
        *err = rc;
        return NULL;
    }
    pthread_mutex_lock(&vs->mu);
    for (int i = 0; i < RB_MAX; i++)
        if (h->rb[i].data && h->rb[i].k == k && h->rb[i].tag == tag) { /* made meanwhile by another */
            h->rb[i].used = ++vs->clock;
            void *have = h->rb[i].data;
            pthread_mutex_unlock(&vs->mu);
            free(d);
            return have;
        }
    int slot = 0; /* an empty one, else the least recently used */
    for (int i = 0; i < RB_MAX; i++) {
        if (!h->rb[i].data) {
            slot = i;
            break;
        }
        if (h->rb[i].used < h->rb[slot].used) slot = i;
    }
    if (h->rb[slot].data && h->refs > 1) {
        /* Another holder may be reading the one it would replace: ours stays the caller's. */
        pthread_mutex_unlock(&vs->mu);
        *owned = d;
        return d;
    }
    if (h->rb[slot].data) {
        free(h->rb[slot].data);
        vs->cache_bytes -= h->rb[slot].bytes;
    }
    h->rb[slot] = (rebuilt){k, tag, d, bytes, ++vs->clock};
    vs->cache_bytes += bytes;
    pthread_mutex_unlock(&vs->mu);
    return d;
}

int ss_vstore_delete(ss_vstore *vs, const char *id) {
    pthread_mutex_lock(&vs->disk_mu);
    pthread_mutex_lock(&vs->mu);
    size_t at = 0;
    int rc;
    ventry *e = lookup_locked(vs, id, &rc);
    if (!e) {
        pthread_mutex_unlock(&vs->mu);
        pthread_mutex_unlock(&vs->disk_mu);
        return rc;
    }
    int stored = e->info.state == SS_VOL_READY;
    long long bytes = e->info.stored_bytes;
    e->refs++; /* a purge (our own delete's, heard by our watcher) may drop it meanwhile */
    pthread_mutex_unlock(&vs->mu);
    int gone = 1;
    rc = stored ? vs->b->vdel(vs->b, id, &gone) : SS_OK;
    if (stored && gone && vs->o.store) ss_store_volume_bytes(vs->o.store, -bytes);
    pthread_mutex_lock(&vs->mu);
    e->refs--;
    if (gone && find_locked(vs, id, &at) == e) forget_locked(vs, e, at);
    else maybe_free_locked(vs, e);
    pthread_mutex_unlock(&vs->mu);
    pthread_mutex_unlock(&vs->disk_mu);
    return rc;
}

void ss_vstore_get_stats(ss_vstore *vs, ss_vstore_stats *st) {
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&vs->mu);
    st->volumes = (long long)vs->n;
    for (size_t i = 0; i < vs->n; i++) st->ready += vs->v[i]->info.state == SS_VOL_READY;
    st->cache_bytes = (long long)vs->cache_bytes;
    pthread_mutex_unlock(&vs->mu);
}
