/* server.h - the service object: config, store, worker pool, GPU queue, response cache, metrics */
#ifndef SS_SERVER_H
#define SS_SERVER_H

#include "server/config.h"
#include "server/gpuq.h"
#include "server/metrics.h"
#include "server/pool.h"
#include "server/respcache.h"
#include "server/store.h"
#include "server/volumes.h"

/* Everything a request handler reaches, protocol-free: the HTTP layer (api/)
 * holds a pointer to it. Created by ss_server_open, which owns each part. */
typedef struct ss_server {
    const ss_config *cfg;
    ss_store *store;
    ss_vstore *vstore;    /* volumes, through the store's backend */
    ss_pool *pool;
    ss_gpuq *gpuq;        /* NULL when no GPU backend can run */
    ss_respcache *rc;
    ss_metrics *metrics;
    int stopping;         /* atomic: set at shutdown; new jobs get 503 */
    unsigned long long next_rid; /* atomic request counter */
    /* Body bytes held by uploads (received, or queued for decoding), bounded
     * by upload_budget so memory does not grow with the connection count. */
    long long upload_bytes; /* atomic */
    long long upload_budget;
    /* Bytes uploads reserve to decode and factorise (ss_server_upload_need), from before they
     * are queued until their worker has freed it all, bounded by mem_budget (--memory-mb). */
    long long mem_bytes; /* atomic */
    long long mem_budget;
    /* PNG bytes of the uploads stored so far, and the .svd bytes they were stored in (atomic). */
    long long png_bytes_total, file_bytes_total;
} ss_server;

/* Bytes an upload of a width x height image of bit_depth bits holds while a worker decodes and
 * factorises it: the decoded image (2 bytes a sample) and ss_svd_workspace_bytes. The store's
 * serialised copy comes after the SVD's scratch is freed, and is smaller. */
long long ss_server_upload_need(int width, int height, int bit_depth);

/* Opens the store in cfg->data and starts the parts cfg asks for; routes are
 * the metrics labels of the HTTP layer's routes (strings outlive srv).
 * Returns 0, or -1 after printing why to stderr (srv is then closed). */
int ss_server_open(ss_server *srv, const ss_config *cfg, const char *const *routes, int nroutes);
/* Stops taking jobs and drains the queues: every queued job is answered
 * (the GPU queue first, since it feeds the pool; it stays allocated until the
 * pool, which may still hand it jobs, has drained). */
void ss_server_stop_workers(ss_server *srv);
/* Frees what is left (store, caches, metrics); call after the HTTP layer stopped. */
void ss_server_close(ss_server *srv);

#endif
