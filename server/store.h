/* store.h - the persistent slice store: index, factors cache and quota over a backend
 * (server/store_backend.h); the default backend keeps one immutable .svd file per slice in --data DIR */
#ifndef SS_STORE_H
#define SS_STORE_H
#include <stddef.h>
#include <stdint.h>

#include "engine/svd.h"

typedef struct ss_store ss_store;
struct ss_fileops;

typedef struct ss_store_opts {
    const char *dir;         /* data directory; created if missing */
    size_t cache_bytes;      /* bound on factors held in memory (LRU), e.g. 256 MiB */
    long long quota_bytes;   /* bound on the bytes stored (.svd files and volumes); 0 = none */
    const char *backend;     /* "dir" (also when NULL): files in dir; "postgres": shared, in dsn */
    const char *dsn;         /* postgres: a libpq connection URI or keyword string */
    int connections;         /* postgres: connection pool size (>= 1) */
    /* Called (from any thread) after a slice another process deleted was
     * dropped from the index and factors cache (id), or all of them (NULL):
     * the server purges its response cache there. */
    void (*on_purge)(void *arg, const char *id);
    void *purge_arg;
    /* The dir backend's file calls (server/store_dir.h); NULL = POSIX. Tests
     * replace them to fail a chosen step. */
    const struct ss_fileops *fileops;
} ss_store_opts;

/* What the index keeps per slice (no factors): enough for GET /slices and
 * GET /slices/{id} without touching the disk. singular_values is owned by the
 * store inside the index; in copies handed out it is a malloc'd copy. */
typedef struct ss_slice_info {
    char id[65];
    char name[256];
    int width, height, bit_depth, rank, nsv;
    int64_t created;          /* unix seconds */
    long long file_bytes;     /* size of the .svd file */
    long long upload_bytes;   /* bytes it was uploaded as; 0 = unknown (a version-1 .svd file
                               * does not carry it) */
    int has_original;         /* the original pixels are kept (else only quantised factors) */
    float *singular_values;   /* nsv values */
} ss_slice_info;

/* Opens the backend (dir: creates dir) and, for a private backend, reads every slice's info into the
 * index (a shared one fills it on demand); a corrupt or unreadable slice is logged to stderr and skipped, never
 * served; leftover temp files are removed. A listing that fails fails the
 * open (SS_EIO), so a bad disk never looks like an empty store. Returns 0 and
 * *out, SS_EINVAL (no dir, unknown backend), SS_EIO or SS_ENOMEM. */
int ss_store_open(const ss_store_opts *opts, ss_store **out);
void ss_store_close(ss_store *s); /* NULL-safe; all acquired factors must be released */

/* Stores f (which must carry id, name, created; orig or not) durably (dir: temp
 * file, fsync, rename, directory fsync), and only then into the index. If the
 * id is already stored, nothing is written and *existed = 1. Returns 0,
 * SS_ENOSPC (quota or full disk), SS_EIO; on an error nothing of f is left
 * (no temp file, no slice file) and nothing stored before is lost. Thread-safe. */
int ss_store_put(ss_store *s, const ss_factors *f, int *existed);
/* The same with f's encoding (ss_svd_serialize) already made: buf, len. */
int ss_store_put_encoded(ss_store *s, const ss_factors *f, const unsigned char *buf, size_t len, int *existed);

/* Records the PNG size a slice was uploaded as, for its info, unless one is recorded.
 * Returns 0 or SS_EINVAL when the id is unknown. */
int ss_store_set_upload_bytes(ss_store *s, const char *id, long long bytes);

/* Factors of a slice, from the byte-bounded LRU or loaded from disk on a miss
 * (and verified). Returns a reference the caller must ss_store_release();
 * NULL with *err = SS_EINVAL when the id is unknown, SS_ECORRUPT when the
 * file no longer verifies (it is then dropped from the index), SS_ENOMEM. */
const ss_factors *ss_store_acquire(ss_store *s, const char *id, int *err);
void ss_store_release(ss_store *s, const ss_factors *f);
/* Hands f (what a load of its stored slice would give: the upload's own factors) to the
 * factors cache, so the first read after an upload does not decode, or factorise, again.
 * Takes ownership; freed when not cached (no such slice, already cached, over the budget). */
void ss_store_cache_factors(ss_store *s, ss_factors *f);
/* As ss_store_acquire when the factors are in memory; NULL otherwise (no
 * error: ss_store_acquire would read the file). For callers that must never
 * wait on the disk, such as the HTTP polling thread. */
const ss_factors *ss_store_acquire_cached(ss_store *s, const char *id);

/* Copies the info of one slice (caller frees with ss_slice_info_free).
 * Returns 0 or SS_EINVAL when unknown. */
int ss_store_info(ss_store *s, const char *id, ss_slice_info *out);
void ss_slice_info_free(ss_slice_info *info);
/* The same without singular_values (left NULL): no allocation, for hot paths. */
int ss_store_info_scalars(ss_store *s, const char *id, ss_slice_info *out);
/* All slices, newest first (ties by id), as a malloc'd array of copies
 * without singular_values (NULL). Caller frees with free(). */
int ss_store_list(ss_store *s, ss_slice_info **out, size_t *n);
/* The id an upload of img at this rank (0: full) is stored under: its
 * content id (ss_content_id), or the old id (ss_content_id_v1) of a slice
 * stored before with the very same pixels, shape, depth and rank. Returns 1
 * when a slice with that id is stored (then nothing needs storing), else 0. */
int ss_store_find_content(ss_store *s, const ss_image *img, int rank, char id[65]);
/* The raw .svd file of a slice (for GET /slices/{id}/factors), malloc'd. */
int ss_store_read_file(ss_store *s, const char *id, unsigned char **buf, size_t *len);
/* Removes the slice durably (unlink + directory fsync). 0, SS_EINVAL when
 * unknown, SS_EIO: when the unlink failed the slice is still stored, listed
 * and served; when only the directory fsync failed it is gone from the index
 * and the directory, but a crash may bring it back (the client was told 500). */
int ss_store_delete(ss_store *s, const char *id);

/* The backend the store opened (server/store_backend.h), for the volume store,
 * which keeps its blobs through the same one. Owned by s. */
struct ss_store_backend *ss_store_get_backend(ss_store *s);

/* Volumes (server/volumes.c) count in the quota too. ss_store_admit_volume: SS_ENOSPC when
 * len more bytes would pass the quota beside every slice and volume stored, SS_ESTORE when
 * the shared store cannot say; else they are counted at once (ss_store_volume_bytes(s, -len)
 * when the volume is not stored after all). ss_store_volume_bytes: volumes stored (index at
 * start) or deleted; a shared store sums its own and ignores it. */
int ss_store_admit_volume(ss_store *s, long long len);
void ss_store_volume_bytes(ss_store *s, long long delta);

typedef struct ss_store_stats {
    long long slices, disk_bytes, cache_bytes, cache_hits, cache_misses;
} ss_store_stats;
void ss_store_get_stats(ss_store *s, ss_store_stats *st);

#endif
