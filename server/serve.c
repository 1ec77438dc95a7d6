/* serve.c - `svdslice serve`: wires config, store, worker pool, GPU queue and the HTTP daemon; clean shutdown */
#include "server/serve.h"

#include <cblas.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/http.h"
#include "engine/error.h"
#include "engine/kernels.h"
#include "gpu/gpu.h"
#include "server/config.h"

/* Blocks SIGINT/SIGTERM in every thread (the pools inherit the mask) so the
 * main thread can take them with sigwait. */
static void block_signals(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client closing early must not kill us */
}

static int gpu_usable(void) {
    return ss_backend_cuda.available(NULL) || ss_backend_cublas.available(NULL);
}

int ss_cmd_serve(int argc, char **argv) {
    ss_config cfg;
    int rc = ss_config_parse(&cfg, argc, argv);
    if (rc == 1) return 0;
    if (rc) return 2;

    sigset_t sigs;
    block_signals(&sigs);
    /* Parallelism is across requests: multi-threaded GEMMs from several
     * workers at once serialise and spin (measured: 4 threads x 3000 GEMMs
     * took 0.46 s with 1 OpenBLAS thread each, 14.2 s with 2). */
    openblas_set_num_threads(1);

    ss_server srv;
    memset(&srv, 0, sizeof srv);
    srv.cfg = &cfg;
    int exit_code = 1;

    ss_store_opts so = {.dir = cfg.data,
                        .cache_bytes = (size_t)cfg.cache_mb << 20,
                        .quota_bytes = (long long)cfg.quota_mb << 20};
    if ((rc = ss_store_open(&so, &srv.store)) != 0) {
        fprintf(stderr, "svdslice serve: cannot open the store in %s: %s\n", cfg.data, ss_error());
        return 1;
    }
    const char *const *labels;
    int nlabels = ss_http_route_labels(&labels);
    static const char *bnames[64];
    int nb = ss_backend_count() < 64 ? ss_backend_count() : 64;
    for (int i = 0; i < nb; i++) bnames[i] = ss_backend_at(i)->name;
    srv.metrics = ss_metrics_new(labels, nlabels, bnames, nb);
    srv.rc = ss_respcache_new((size_t)cfg.response_cache_mb << 20);
    if (!srv.metrics || !srv.rc) {
        fprintf(stderr, "svdslice serve: out of memory\n");
        goto out;
    }
    if (cfg.kernel_threads > 0) ss_kernels_set_threads(cfg.kernel_threads);
    if (ss_pool_new(cfg.workers, cfg.queue, &srv.pool) != 0) {
        fprintf(stderr, "svdslice serve: cannot start workers: %s\n", ss_error());
        goto out;
    }
    if (gpu_usable() || cfg.gpu_cpu_mode) {
        ss_gpuq_opts go = {.capacity = cfg.gpu_queue,
                           .max_batch = cfg.gpu_max_batch,
                           .max_wait_ms = cfg.gpu_max_wait_ms,
                           .device_bytes = (size_t)cfg.gpu_memory_mb << 20,
                           .cpu_mode = cfg.gpu_cpu_mode};
        if (ss_gpuq_new(&go, &srv.gpuq) != 0) {
            fprintf(stderr, "svdslice serve: GPU queue not started (%s); GPU backends answer 503\n", ss_error());
            srv.gpuq = NULL;
        }
    }
    unsigned short port = 0;
    if (ss_http_start(&srv, &port) != 0) goto out;
    if (strchr(cfg.bind, ':'))
        printf("svdslice listening on http://[%s]:%u\n", cfg.bind, port);
    else
        printf("svdslice listening on http://%s:%u\n", cfg.bind, port);
    fflush(stdout);

    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "svdslice: signal %d: shutting down\n", sig);
    exit_code = 0;

out:
    /* Order: stop taking work and let every suspended connection be answered,
     * then drain the queues (the GPU queue feeds the pool), then the store. */
    ss_http_stop(&srv, 30.0);
    ss_gpuq_free(srv.gpuq);
    ss_pool_free(srv.pool);
    if (srv.daemon) ss_http_stop(&srv, 0.0); /* jobs outlived the first wait; none suspended now */
    ss_store_close(srv.store);
    ss_respcache_free(srv.rc);
    ss_metrics_free(srv.metrics);
    return exit_code;
}
