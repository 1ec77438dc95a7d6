/* server.c - the service object: opens the store and starts the worker pool and GPU queue */
#include "server/server.h"

#include <stdio.h>
#include <string.h>

#include "engine/kernels.h"
#include "engine/svd.h"
#include "util/error.h"

static int gpu_usable(void) {
    return ss_backend_find("cuda")->available(NULL) || ss_backend_find("cublas")->available(NULL);
}

static void purge_responses(void *arg, const char *id) {
    if (id) ss_respcache_purge_id(arg, id);
    else ss_respcache_purge_all(arg);
}

long long ss_server_upload_need(int width, int height, int bit_depth) {
    long long ws = ss_svd_workspace_bytes(height, width, bit_depth);
    return ws < 0 ? 0 : 2LL * width * height + ws;
}

int ss_server_open(ss_server *srv, const ss_config *cfg, const char *const *routes, int nroutes) {
    memset(srv, 0, sizeof *srv);
    srv->cfg = cfg;
    /* Never below one body of the limit, or big uploads could never succeed. */
    srv->upload_budget = (long long)cfg->upload_buffer_mb << 20;
    if (srv->upload_budget < cfg->max_body_bytes) srv->upload_budget = cfg->max_body_bytes;
    /* Likewise never below one upload of the largest image accepted. */
    srv->mem_budget = (long long)cfg->memory_mb << 20;
    long long one = ss_server_upload_need(cfg->max_side, cfg->max_side, 16);
    if (srv->mem_budget < one) srv->mem_budget = one;

    /* The response cache first: the store purges it when another replica deletes a slice. */
    srv->rc = ss_respcache_new((size_t)cfg->response_cache_mb << 20);
    if (!srv->rc) {
        fprintf(stderr, "svdslice serve: out of memory\n");
        return -1;
    }
    ss_store_opts so = {.dir = cfg->data,
                        .cache_bytes = (size_t)cfg->cache_mb << 20,
                        .quota_bytes = (long long)cfg->quota_mb << 20,
                        .connections = cfg->store_connections,
                        .on_purge = purge_responses,
                        .purge_arg = srv->rc};
    const char *where = cfg->data; /* for messages: never the DSN, which may hold a password */
    if (!strncmp(cfg->store, "dir:", 4) && cfg->store[4]) {
        so.dir = where = cfg->store + 4;
    } else if (!strncmp(cfg->store, "postgres://", 11) || !strncmp(cfg->store, "postgresql://", 13)) {
        so.backend = "postgres";
        so.dsn = cfg->store;
        where = "PostgreSQL";
    } else if (cfg->store[0]) {
        fprintf(stderr, "svdslice serve: --store: want dir:PATH or postgres://..., not \"%.40s\"\n", cfg->store);
        ss_server_close(srv);
        return -1;
    }
    if (ss_store_open(&so, &srv->store) != 0) {
        fprintf(stderr, "svdslice serve: cannot open the store in %s: %s\n", where, ss_error());
        ss_server_close(srv);
        return -1;
    }
    static const char *bnames[64];
    int nb = ss_backend_count() < 64 ? ss_backend_count() : 64;
    for (int i = 0; i < nb; i++) bnames[i] = ss_backend_at(i)->name;
    srv->metrics = ss_metrics_new(routes, nroutes, bnames, nb);
    if (!srv->metrics) {
        fprintf(stderr, "svdslice serve: out of memory\n");
        goto fail;
    }
    if (cfg->kernel_threads > 0) ss_kernels_set_threads(cfg->kernel_threads);
    if (ss_pool_new(cfg->workers, cfg->queue, &srv->pool) != 0) {
        fprintf(stderr, "svdslice serve: cannot start workers: %s\n", ss_error());
        goto fail;
    }
    /* Volumes share --cache-mb (a bound of its own, the same size) and --memory-mb (each
     * upload reserves its decoded volume and factors until ready); one slice job per
     * worker at once, so requests for slices interleave with them. */
    ss_pool_stats ps;
    ss_pool_get_stats(srv->pool, &ps);
    int workers = ps.workers;
    ss_vstore_opts vo = {.backend = ss_store_get_backend(srv->store),
                         .cache_bytes = (size_t)cfg->cache_mb << 20,
                         .pool = srv->pool,
                         .parallel = workers,
                         .mem_held = &srv->mem_bytes,
                         .stopping = &srv->stopping,
                         .store = srv->store,
                         .on_purge = purge_responses,
                         .purge_arg = srv->rc};
    if (ss_vstore_open(&vo, &srv->vstore) != 0) {
        fprintf(stderr, "svdslice serve: cannot index the volumes in %s: %s\n", cfg->data, ss_error());
        goto fail;
    }
    if (gpu_usable() || cfg->gpu_cpu_mode) {
        ss_gpuq_opts go = {.capacity = cfg->gpu_queue,
                           .max_batch = cfg->gpu_max_batch,
                           .max_wait_ms = cfg->gpu_max_wait_ms,
                           .device_bytes = (size_t)cfg->gpu_memory_mb << 20,
                           .cpu_mode = cfg->gpu_cpu_mode};
        if (ss_gpuq_new(&go, &srv->gpuq) != 0) {
            fprintf(stderr, "svdslice serve: GPU queue not started (%s); GPU backends answer 503\n", ss_error());
            srv->gpuq = NULL;
        }
    }
    return 0;
fail:
    ss_server_stop_workers(srv);
    ss_server_close(srv);
    return -1;
}

void ss_server_stop_workers(ss_server *srv) {
    __atomic_store_n(&srv->stopping, 1, __ATOMIC_SEQ_CST);
    /* The queues feed each other (the GPU thread hands pixels to a worker to
     * encode; a worker that loaded factors hands the job to the GPU queue):
     * drain the GPU queue while the pool takes its output, then the pool, whose
     * hand-offs a stopped GPU queue refuses (503), and only then free the queue. */
    ss_gpuq_stop(srv->gpuq);
    ss_pool_free(srv->pool);
    srv->pool = NULL;
    ss_gpuq_free(srv->gpuq);
    srv->gpuq = NULL;
}

void ss_server_close(ss_server *srv) {
    ss_vstore_close(srv->vstore); /* its jobs ran in the pool, drained by now */
    srv->vstore = NULL;
    ss_store_close(srv->store);
    srv->store = NULL;
    ss_respcache_free(srv->rc);
    srv->rc = NULL;
    ss_metrics_free(srv->metrics);
    srv->metrics = NULL;
}
