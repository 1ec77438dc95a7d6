/* respcache.c - byte-bounded LRU of rendered PNG responses keyed by (id,k,bits,window,backend) */
#include "server/respcache.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 4096u /* chains stay short: 64 MiB / ~20 KB PNGs is ~3300 entries */

struct ss_respcache {
    pthread_mutex_t mu; /* guards everything below and every entry's refs */
    size_t max_bytes, bytes;
    long long hits, misses, entries, evictions;
    ss_rc_entry *lru_head, *lru_tail; /* head = most recent */
    ss_rc_entry *buckets[NBUCKETS];
};

static uint32_t hash_key(const char *s) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static size_t entry_cost(const ss_rc_entry *e) { return e->len + sizeof *e + strlen(e->key) + 1; }

ss_respcache *ss_respcache_new(size_t max_bytes) {
    ss_respcache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    pthread_mutex_init(&c->mu, NULL);
    c->max_bytes = max_bytes;
    return c;
}

static void entry_destroy(ss_rc_entry *e) {
    if (e->shared && e->shared_free) e->shared_free(e->shared);
    free(e->body);
    free(e->key);
    free(e);
}


/* Under c->mu: unlink e from the hash chain and LRU list, drop the cache's ref. */
static void detach(ss_respcache *c, ss_rc_entry *e) {
    ss_rc_entry **pp = &c->buckets[hash_key(e->key) % NBUCKETS];
    while (*pp && *pp != e) pp = &(*pp)->hnext;
    if (*pp) *pp = e->hnext;
    if (e->prev) e->prev->next = e->next; else c->lru_head = e->next;
    if (e->next) e->next->prev = e->prev; else c->lru_tail = e->prev;
    e->prev = e->next = e->hnext = NULL;
    c->bytes -= entry_cost(e);
    c->entries--;
    ss_rc_entry_unref(e); /* the cache's reference */
}

void ss_respcache_free(ss_respcache *c) {
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    while (c->lru_head) detach(c, c->lru_head);
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

ss_rc_entry *ss_respcache_get(ss_respcache *c, const char *key) {
    pthread_mutex_lock(&c->mu);
    ss_rc_entry *e = c->buckets[hash_key(key) % NBUCKETS];
    while (e && strcmp(e->key, key) != 0) e = e->hnext;
    if (e) {
        c->hits++;
        __atomic_add_fetch(&e->refs, 1, __ATOMIC_RELAXED);
        if (c->lru_head != e) { /* move to front */
            e->prev->next = e->next;
            if (e->next) e->next->prev = e->prev; else c->lru_tail = e->prev;
            e->prev = NULL;
            e->next = c->lru_head;
            c->lru_head->prev = e;
            c->lru_head = e;
        }
    } else {
        c->misses++;
    }
    pthread_mutex_unlock(&c->mu);
    return e;
}

ss_rc_entry *ss_respcache_put(ss_respcache *c, const char *key, const char *id, unsigned char *body,
                              size_t len, const char *backend, const char *etag, const char *timing) {
    ss_rc_entry *e = calloc(1, sizeof *e);
    char *k = strdup(key);
    if (!e || !k) {
        free(e);
        free(k);
        free(body);
        return NULL;
    }
    e->key = k;
    e->body = body;
    e->len = len;
    snprintf(e->id, sizeof e->id, "%s", id);
    snprintf(e->backend, sizeof e->backend, "%s", backend);
    snprintf(e->etag, sizeof e->etag, "%s", etag);
    snprintf(e->timing, sizeof e->timing, "%s", timing);
    e->refs = 1; /* the caller's */
    if (!c || entry_cost(e) > c->max_bytes / 4) return e; /* too big to be worth a slot */

    pthread_mutex_lock(&c->mu);
    uint32_t b = hash_key(key) % NBUCKETS;
    for (ss_rc_entry *o = c->buckets[b]; o; o = o->hnext)
        if (!strcmp(o->key, key)) {
            detach(c, o);
            break;
        }
    while (c->lru_tail && c->bytes + entry_cost(e) > c->max_bytes) {
        detach(c, c->lru_tail);
        c->evictions++;
    }
    e->refs++; /* the cache's; not yet shared, a plain increment is fine */
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    e->next = c->lru_head;
    if (c->lru_head) c->lru_head->prev = e; else c->lru_tail = e;
    c->lru_head = e;
    c->bytes += entry_cost(e);
    c->entries++;
    pthread_mutex_unlock(&c->mu);
    return e;
}

void ss_rc_entry_unref(ss_rc_entry *e) {
    /* Atomic: the cache's own reference keeps a listed entry alive, so get()
     * may take a reference under the cache lock while others drop theirs. */
    if (e && __atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) == 0) entry_destroy(e);
}

void ss_respcache_purge_id(ss_respcache *c, const char *id) {
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    ss_rc_entry *e = c->lru_head;
    while (e) {
        ss_rc_entry *next = e->next;
        if (!strcmp(e->id, id)) detach(c, e);
        e = next;
    }
    pthread_mutex_unlock(&c->mu);
}

void ss_respcache_purge_all(ss_respcache *c) {
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    while (c->lru_head) detach(c, c->lru_head);
    pthread_mutex_unlock(&c->mu);
}

void ss_respcache_get_stats(ss_respcache *c, ss_respcache_stats *st) {
    memset(st, 0, sizeof *st);
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    st->hits = c->hits;
    st->misses = c->misses;
    st->entries = c->entries;
    st->bytes = (long long)c->bytes;
    st->max_bytes = (long long)c->max_bytes;
    st->evictions = c->evictions;
    pthread_mutex_unlock(&c->mu);
}
