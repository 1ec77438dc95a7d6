/* pool.c - bounded worker pool: the CPU side of heavy requests (upload, reconstruct, quality) */
#include "server/pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/error.h"

struct ss_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ss_pool_job *head, *tail;
    int depth, capacity, busy, stopping, nthreads;
    long long done, rejected;
    pthread_t *threads;
};

static void *worker_main(void *arg) {
    ss_pool *p = arg;
    /* Each worker owns its scratch memory so kernels never share or allocate. */
    ss_workspace *ws = ss_workspace_new();
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stopping) pthread_cond_wait(&p->cv, &p->mu);
        if (!p->head) break; /* stopping and drained */
        ss_pool_job *j = p->head;
        p->head = j->next;
        if (!p->head) p->tail = NULL;
        p->depth--;
        p->busy++;
        pthread_mutex_unlock(&p->mu);
        j->run(j, ws); /* ws may be NULL on ENOMEM: run() must cope */
        pthread_mutex_lock(&p->mu);
        p->busy--;
        p->done++;
    }
    pthread_mutex_unlock(&p->mu);
    ss_workspace_free(ws);
    return NULL;
}

int ss_pool_new(int workers, int capacity, ss_pool **out) {
    *out = NULL;
    if (capacity < 1) return ss_fail(SS_EINVAL, "pool capacity must be >= 1");
    if (workers <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        workers = n > 0 ? (int)n : 1;
    }
    ss_pool *p = calloc(1, sizeof *p);
    if (!p) return ss_fail(SS_ENOMEM, "out of memory");
    p->threads = calloc((size_t)workers, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return ss_fail(SS_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->capacity = capacity;
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0) break;
        p->nthreads++;
    }
    if (p->nthreads == 0) {
        ss_pool_free(p);
        return ss_fail(SS_ENOMEM, "cannot start worker threads");
    }
    *out = p;
    return 0;
}

static int submit(ss_pool *p, ss_pool_job *job, int force) {
    job->next = NULL;
    job->enqueued = ss_now();
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        pthread_mutex_unlock(&p->mu);
        return ss_fail(SS_EUNAVAIL, "server is shutting down");
    }
    if (!force && p->depth >= p->capacity) {
        p->rejected++;
        pthread_mutex_unlock(&p->mu);
        return ss_fail(SS_EBUSY, "work queue full (%d jobs)", p->capacity);
    }
    if (p->tail)
        p->tail->next = job;
    else
        p->head = job;
    p->tail = job;
    p->depth++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

int ss_pool_submit(ss_pool *p, ss_pool_job *job) { return submit(p, job, 0); }
int ss_pool_submit_force(ss_pool *p, ss_pool_job *job) { return submit(p, job, 1); }

void ss_pool_free(ss_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}

void ss_pool_get_stats(ss_pool *p, ss_pool_stats *st) {
    pthread_mutex_lock(&p->mu);
    st->workers = p->nthreads;
    st->depth = p->depth;
    st->busy = p->busy;
    st->capacity = p->capacity;
    st->done = p->done;
    st->rejected = p->rejected;
    pthread_mutex_unlock(&p->mu);
}
