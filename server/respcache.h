/* respcache.h - byte-bounded LRU of rendered responses (reconstructed PNGs), refcounted */
#ifndef SS_RESPCACHE_H
#define SS_RESPCACHE_H
#include <stddef.h>

typedef struct ss_respcache ss_respcache;

/* An immutable rendered response. Readers hold a reference (from get/put)
 * and drop it with ss_rc_entry_unref; the last reference frees it. */
typedef struct ss_rc_entry {
    unsigned char *body;
    size_t len;
    char backend[16];   /* the backend that ran */
    char etag[40];      /* quoted strong ETag */
    char timing[160];   /* Server-Timing of the computation that made it */
    /* A prebuilt reply the HTTP layer attaches (set once, atomically) so cache
     * hits reuse it; shared_free(shared) runs when the entry is destroyed. */
    void *shared;
    void (*shared_free)(void *);
    /* private */
    char *key;
    char id[65];
    int refs; /* atomic */
    struct ss_rc_entry *prev, *next, *hnext;
} ss_rc_entry;

/* max_bytes 0 disables caching (put still returns a standalone entry).
 * Returns NULL on ENOMEM; free with ss_respcache_free. */
ss_respcache *ss_respcache_new(size_t max_bytes);
void ss_respcache_free(ss_respcache *c); /* entries still referenced outlive it */

/* A referenced entry for key, or NULL (a miss). Counts hits and misses. */
ss_rc_entry *ss_respcache_get(ss_respcache *c, const char *key);
/* Wraps body (malloc'd; ownership passes to the entry, freed with it) in a
 * new entry, inserts it under key (replacing an older one, evicting the least
 * recently used beyond the byte bound) and returns it referenced for the
 * caller. NULL on ENOMEM (body is then freed). */
ss_rc_entry *ss_respcache_put(ss_respcache *c, const char *key, const char *id, unsigned char *body,
                              size_t len, const char *backend, const char *etag, const char *timing);
void ss_rc_entry_unref(ss_rc_entry *e); /* NULL-safe; any thread */
/* Drops every entry of slice id (after DELETE). */
void ss_respcache_purge_id(ss_respcache *c, const char *id);
/* Drops every entry (when deletes by other replicas may have been missed). */
void ss_respcache_purge_all(ss_respcache *c);

typedef struct ss_respcache_stats {
    long long hits, misses, entries, bytes, max_bytes, evictions;
} ss_respcache_stats;
void ss_respcache_get_stats(ss_respcache *c, ss_respcache_stats *st);

#endif
