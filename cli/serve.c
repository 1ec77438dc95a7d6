/* serve.c - `svdslice serve`: ties the service (server/) to its HTTP front (api/); clean shutdown */
#include "cli/serve.h"

#include <cblas.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "api/http.h"
#include "server/config.h"
#include "server/server.h"

static pthread_t g_main_thread;

/* OpenBLAS starts its threads when the library loads, before main can block
 * the signals: one of them may still take SIGTERM. Pass it on to the main
 * thread's sigwait instead of dying by the default action. */
static void forward_to_main(int sig) {
    if (!pthread_equal(pthread_self(), g_main_thread)) pthread_kill(g_main_thread, sig);
}

/* Blocks SIGINT/SIGTERM in every thread we start (the pools inherit the mask)
 * so the main thread can take them with sigwait. */
static void block_signals(sigset_t *set) {
    g_main_thread = pthread_self();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward_to_main;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client closing early must not kill us */
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

    const char *const *labels;
    int nlabels = ss_http_route_labels(&labels);
    ss_server srv;
    if (ss_server_open(&srv, &cfg, labels, nlabels) != 0) return 1;

    int exit_code = 1;
    unsigned short port = 0;
    ss_http *http = ss_http_start(&srv, &port);
    if (http) {
        if (strchr(cfg.bind, ':'))
            printf("svdslice listening on http://[%s]:%u\n", cfg.bind, port);
        else
            printf("svdslice listening on http://%s:%u\n", cfg.bind, port);
        fflush(stdout);
        int sig = 0;
        sigwait(&sigs, &sig);
        fprintf(stderr, "svdslice: signal %d: shutting down\n", sig);
        exit_code = 0;
    }
    /* Order: stop taking work and let every suspended connection be answered,
     * then drain the queues (the GPU queue feeds the pool), then stop the
     * daemon if jobs outlived the first wait, then the store. */
    ss_http_stop(http, 30.0);
    ss_server_stop_workers(&srv);
    ss_http_free(http);
    ss_server_close(&srv);
    return exit_code;
}
