/* store_backend.h - what a store backend implements: durable .svd encodings keyed by slice id.
 * The core (store.c) keeps the index, the factors cache, the quota and the
 * reference counts; a backend only keeps bytes. Ids handed to a backend are
 * always valid ([A-Za-z0-9_-]{1,64}); calls that change what is stored (put,
 * del) are serialised by the core, get and info may run concurrently with
 * them and with each other. All return 0 or an engine error code with the
 * reason in ss_error(). */
#ifndef SS_STORE_BACKEND_H
#define SS_STORE_BACKEND_H
#include <stddef.h>

#include "engine/svd.h"
#include "server/store.h"

typedef struct ss_store_backend ss_store_backend;
struct ss_store_backend {
    const char *name;
    /* Stores buf (the .svd encoding of slice id) and returns only once it
     * survives a crash. SS_ENOSPC (full), SS_EIO: then nothing is stored
     * under id and nothing stored before is lost. */
    int (*put)(ss_store_backend *b, const char *id, const unsigned char *buf, size_t len);
    /* The stored encoding of id, malloc'd. SS_EIO (also when missing),
     * SS_ECORRUPT (implausibly large), SS_ENOMEM. */
    int (*get)(ss_store_backend *b, const char *id, unsigned char **buf, size_t *len);
    /* Removes id durably. On an error *gone says whether it is still stored
     * (0) or already gone, though perhaps not durably (1). */
    int (*del)(ss_store_backend *b, const char *id, int *gone);
    /* Calls each(arg, id) for every stored id, in any order; a nonzero
     * return stops the listing and is returned. A listing that cannot be
     * completed is SS_EIO, never a shorter list. */
    int (*list)(ss_store_backend *b, int (*each)(void *arg, const char *id), void *arg);
    /* The info of one slice for the index, singular_values malloc'd,
     * file_bytes the size of its encoding, from its checked header and
     * singular values (the payload checksum is verified when the encoding is
     * read whole: ss_store_decode, ss_store_read_file). SS_ECORRUPT, SS_EIO,
     * SS_ENOMEM. */
    int (*info)(ss_store_backend *b, const char *id, ss_slice_info *out);
    void (*close)(ss_store_backend *b); /* NULL-safe; stops watch's thread first */

    /* A backend several processes share sets shared = 1 and every call below;
     * the core's index is then only a cache of it: a miss asks info (where a
     * missing id is SS_EINVAL and an unreachable store SS_ESTORE), listing and
     * quota ask scan and usage, and watch keeps the caches from serving what
     * another process deleted. A private backend (dir) leaves them 0/NULL. */
    int shared;
    /* each(arg, info) for every stored slice, singular_values NULL. */
    int (*scan)(ss_store_backend *b, int (*each)(void *arg, const ss_slice_info *info), void *arg);
    int (*usage)(ss_store_backend *b, long long *slices, long long *bytes);
    /* Records the upload size of id unless one is recorded. */
    int (*set_upload_bytes)(ss_store_backend *b, const char *id, long long bytes);
    /* Starts a thread calling purge(arg, id) for every slice another process
     * deletes, and purge(arg, NULL) when deletes may have been missed (after
     * its connection to the store came back). */
    int (*watch)(ss_store_backend *b, void (*purge)(void *arg, const char *id), void *arg);
    /* 1 while watch delivers every delete, so cached slices may be trusted;
     * 0 (store unreachable, reconnecting): every lookup asks the store. */
    int (*watching)(ss_store_backend *b);

    /* Volumes: a second kind of blob, the .svv encoding of engine/volume.h, keyed
     * by volume id in a namespace of its own (a volume id never names a slice).
     * vput, vget, vdel and vlist have the contracts of put, get, del and list;
     * vhead copies the first n bytes into buf and gives the blob's length
     * (SS_ECORRUPT when it is shorter, SS_EIO), so the index is built without
     * reading whole volumes. Calls that change volumes are serialised by the
     * volume store (server/volumes.c). A backend that keeps no volumes leaves
     * all five NULL: the /volumes routes then answer 503 backend_unavailable. */
    int (*vput)(ss_store_backend *b, const char *id, const unsigned char *buf, size_t len);
    int (*vget)(ss_store_backend *b, const char *id, unsigned char **buf, size_t *len);
    int (*vdel)(ss_store_backend *b, const char *id, int *gone);
    int (*vlist)(ss_store_backend *b, int (*each)(void *arg, const char *id), void *arg);
    int (*vhead)(ss_store_backend *b, const char *id, size_t n, unsigned char *buf, size_t *len);
    /* A shared backend keeping volumes also sets these three (a private one leaves them NULL),
     * and its vhead and vget answer SS_EINVAL for a missing id, SS_ESTORE when unreachable.
     * vscan: each(arg, id, head, head_len, len) for every stored volume, head its first
     * head_len bytes (the header and index table, ss_svv_sections_offset), len the blob's;
     * vusage: how many volumes and their bytes; vwatch: from now on the watcher (watch) also
     * calls vpurge(arg, id) for every volume another process deletes, and vpurge(arg, NULL)
     * whenever it calls purge(arg, NULL). */
    int (*vscan)(ss_store_backend *b,
                 int (*each)(void *arg, const char *id, const unsigned char *head, size_t head_len, size_t len),
                 void *arg);
    int (*vusage)(ss_store_backend *b, long long *volumes, long long *bytes);
    void (*vwatch)(ss_store_backend *b, void (*vpurge)(void *arg, const char *id), void *arg);
};

/* The directory backend (server/store_dir.c): opts->dir, opts->fileops. */
int ss_store_dir_open(const ss_store_opts *opts, ss_store_backend **out);
/* The PostgreSQL backend (server/store_pg.c): opts->dsn, opts->connections. */
int ss_store_pg_open(const ss_store_opts *opts, ss_store_backend **out);

/* For backends: the id rule, and decoding an encoding into verified factors
 * (its id must be id). */
int ss_store_id_valid(const char *id);
int ss_store_decode(const char *id, const unsigned char *buf, size_t len, ss_factors **out);
/* Info from parts of an encoding of file_len bytes: its header (the first
 * ss_svd_header_bytes bytes, checked as slice id's)
 * give the scalars and *sv_off, where the 4 * out->nsv bytes of singular
 * values lie; ss_store_decode_sv checks those into out->singular_values
 * (malloc'd). SS_ECORRUPT, SS_ENOMEM. */
int ss_store_decode_head(const char *id, const unsigned char *head, size_t file_len, ss_slice_info *out,
                         size_t *sv_off);
int ss_store_decode_sv(const char *id, const unsigned char *sv, ss_slice_info *out);

#endif
