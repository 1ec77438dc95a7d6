/* volumes.h - the volume store: an index of volumes and their states, their factorisation on the
 * worker pool, a byte-bounded cache of decoded volumes and of volumes rebuilt at k, kept durably
 * as .svv blobs through the store's backend (server/store_backend.h: vput, vget, vdel, vlist, vhead) */
#ifndef SS_VOLUMES_H
#define SS_VOLUMES_H
#include <stddef.h>

#include "engine/volume.h"
#include "server/pool.h"

struct ss_store_backend;
struct ss_store;
typedef struct ss_vstore ss_vstore;

/* A volume's life: queued (accepted, no slice started), factorising (slices_done of nslices),
 * ready (stored durably: only now), failed (error says why; nothing stored). Only ready
 * volumes outlive the process: one not ready when the server stops or is killed is gone
 * (its temp file, if any, is removed at the next start), never listed as ready. */
enum { SS_VOL_QUEUED, SS_VOL_FACTORISING, SS_VOL_READY, SS_VOL_FAILED };
const char *ss_vol_state_name(int state); /* "queued", ... */

typedef struct ss_vol_info {
    ss_volume meta;          /* the header's scalars; voxels and slices NULL */
    int state;
    int slices_done;         /* of meta.nslices */
    char error[256];         /* failed: why */
    long long stored_bytes;  /* the .svv blob's bytes (ready) */
    long long upload_bytes;  /* the file uploaded; 0 when unknown (indexed at start; JSON null) */
} ss_vol_info;

typedef struct ss_vstore_opts {
    struct ss_store_backend *backend; /* the slice store's (ss_store_get_backend) */
    size_t cache_bytes;      /* bound on decoded volumes and rebuilt volumes held (LRU) */
    ss_pool *pool;           /* where slices are factorised */
    int parallel;            /* slice jobs of one volume in the pool at once (>= 1) */
    long long *mem_held;     /* the server's memory count an upload's reservation comes back to */
    const int *stopping;     /* the server's flag: set, queued slice jobs stop and fail their volume */
    struct ss_store *store;  /* the slice store, whose --quota-mb counts volumes too; NULL: no quota */
    /* Called after a volume another process deleted (id; NULL: perhaps any) was dropped
     * (shared backends): the server purges its response cache there. */
    void (*on_purge)(void *arg, const char *id);
    void *purge_arg;
} ss_vstore_opts;

/* Indexes every stored volume from its header (a corrupt one is logged and skipped); with a
 * shared backend (PostgreSQL) the index is only a cache of the store, filled on demand, and
 * kept from serving what another replica deleted by the backend's watcher. A backend
 * without volume calls gives a store whose calls answer SS_EUNAVAIL. SS_EIO, SS_ENOMEM. */
int ss_vstore_open(const ss_vstore_opts *o, ss_vstore **out);
/* After the pool has drained (no slice job runs any more). NULL-safe. */
void ss_vstore_close(ss_vstore *vs);
/* 1 when the backend keeps volumes. */
int ss_vstore_available(const ss_vstore *vs);

/* Takes v (decoded by ss_volume_from_nifti, id set, nothing factorised) for factorisation,
 * unless its id is known: then *out is the known volume's info, v is left to the caller
 * (*taken 0) and nothing starts. Otherwise v is the store's (*taken 1), mem (bytes the caller
 * took from *mem_held for it) is given back once it is ready or failed, and min(parallel,
 * nslices) slice jobs go into the pool: each factorises one slice and queues itself again
 * behind the requests that came meanwhile, so slice requests are never starved. The last
 * one serialises the .svv, checks the quota (ss_store_admit_volume: failed when over), stores
 * it, and only then marks the volume ready. A failed
 * volume's id is taken afresh. Returns 0, SS_EUNAVAIL (no volume backend, pool stopping),
 * SS_ENOMEM. */
int ss_vstore_begin(ss_vstore *vs, ss_volume *v, long long upload_bytes, long long mem, ss_vol_info *out,
                    int *taken);

/* Info of one volume (0, SS_EINVAL when unknown) and of all, newest first (malloc'd); shared:
 * what the store holds plus this process's volumes not stored yet. SS_ESTORE: the shared store
 * cannot be reached. */
int ss_vstore_info(ss_vstore *vs, const char *id, ss_vol_info *out);
int ss_vstore_list(ss_vstore *vs, ss_vol_info **out, size_t *n);

/* A ready volume, decoded and complete: from the cache, or read and verified from the backend
 * (so call it on a worker). NULL with *err SS_EINVAL (unknown or not ready), SS_ECORRUPT,
 * SS_EIO, SS_ESTORE, SS_ENOMEM. Release every handle. */
typedef struct ss_vhandle ss_vhandle;
ss_vhandle *ss_vstore_acquire(ss_vstore *vs, const char *id, int *err);
const ss_volume *ss_vhandle_volume(const ss_vhandle *h);
void ss_vstore_release(ss_vstore *vs, ss_vhandle *h);
/* The volume at k (stored values, as ss_volume_rebuild gives them) made by rebuild(arg, v, k, out)
 * into ss_volume_voxel_bytes(v) bytes, cached by (k, tag: the backend that made it) and valid
 * while h is held (a few per volume; while other handles hold them, a new one is not cached:
 * then *owned is it, and the caller frees it). NULL with *err on rebuild's error. */
typedef int (*ss_vrebuild_fn)(void *arg, const ss_volume *v, int k, void *out);
const void *ss_vstore_rebuilt(ss_vstore *vs, ss_vhandle *h, int k, const void *tag, ss_vrebuild_fn rebuild,
                              void *arg, int *err, void **owned);

/* Removes a volume: a stored one durably (0, SS_EIO as ss_store_delete), one being factorised
 * from the index at once (its jobs stop, nothing is stored). SS_EINVAL when unknown, SS_ESTORE. */
int ss_vstore_delete(ss_vstore *vs, const char *id);

typedef struct ss_vstore_stats {
    long long volumes, ready, cache_bytes;
} ss_vstore_stats;
void ss_vstore_get_stats(ss_vstore *vs, ss_vstore_stats *st);

#endif
