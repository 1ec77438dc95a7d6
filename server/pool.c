/* pool.c - bounded worker pool: the CPU side of heavy requests (upload, reconstruct, quality, reads) */
#include "server/pool.h"

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/error.h"

struct ss_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;  /* workers: a job was queued, or stopping */
    pthread_cond_t rcv; /* reaper: an earlier deadline was queued, or stopping */
    ss_tfifo q;
    int capacity, busy, stopping, nthreads, reaper_started;
    long long done, rejected, expired;
    pthread_t *threads, reaper;
};

static ss_pool_job *job_of(ss_tnode *n) {
    return (ss_pool_job *)(void *)((char *)n - offsetof(ss_pool_job, node));
}

static void *worker_main(void *arg) {
    ss_pool *p = arg;
    /* Each worker owns its scratch memory so kernels never share or allocate. */
    ss_workspace *ws = ss_workspace_new();
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->q.count && !p->stopping) pthread_cond_wait(&p->cv, &p->mu);
        ss_tnode *n = ss_tfifo_pop(&p->q);
        if (!n) break; /* stopping and drained */
        ss_pool_job *j = job_of(n);
        double now = ss_now();
        /* the reaper may not have run yet (or is gone at shutdown) */
        int late = j->deadline > 0 && now > j->deadline;
        p->busy++;
        if (late) p->expired++;
        pthread_mutex_unlock(&p->mu);
        if (late)
            j->expire(j, now - j->enqueued);
        else
            j->run(j, ws); /* ws may be NULL on ENOMEM: run() must cope */
        pthread_mutex_lock(&p->mu);
        p->busy--;
        p->done++;
    }
    pthread_mutex_unlock(&p->mu);
    ss_workspace_free(ws);
    return NULL;
}

/* Answers queued jobs at their deadline even while every worker is busy: a
 * deadline checked only when a worker frees up would let a request wait as
 * long as the slowest job ahead of it. */
static void *reaper_main(void *arg) {
    ss_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        double next = ss_tfifo_next_deadline(&p->q), now = ss_now();
        if (next == 0) {
            pthread_cond_wait(&p->rcv, &p->mu);
            continue;
        }
        if (next > now) {
            struct timespec ts;
            ss_tfifo_abstime(next, &ts);
            pthread_cond_timedwait(&p->rcv, &p->mu, &ts);
            continue;
        }
        ss_tnode *n;
        while ((n = ss_tfifo_pop_expired(&p->q, now))) {
            ss_pool_job *j = job_of(n);
            p->expired++;
            p->done++;
            pthread_mutex_unlock(&p->mu);
            j->expire(j, now - j->enqueued);
            pthread_mutex_lock(&p->mu);
        }
    }
    pthread_mutex_unlock(&p->mu);
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
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deadlines are on ss_now()'s clock */
    pthread_cond_init(&p->rcv, &ca);
    pthread_condattr_destroy(&ca);
    ss_tfifo_init(&p->q);
    p->capacity = capacity;
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0) break;
        p->nthreads++;
    }
    p->reaper_started = p->nthreads > 0 && pthread_create(&p->reaper, NULL, reaper_main, p) == 0;
    if (!p->reaper_started) {
        ss_pool_free(p);
        return ss_fail(SS_ENOMEM, "cannot start worker threads");
    }
    *out = p;
    return 0;
}

static int submit(ss_pool *p, ss_pool_job *job, int force) {
    job->enqueued = ss_now();
    job->node.enqueued = job->enqueued;
    if (force) job->deadline = 0;
    job->node.deadline = job->deadline;
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        pthread_mutex_unlock(&p->mu);
        return ss_fail(SS_EUNAVAIL, "server is shutting down");
    }
    if (!force && p->q.count >= p->capacity) {
        p->rejected++;
        pthread_mutex_unlock(&p->mu);
        return ss_fail(SS_EBUSY, "work queue full (%d jobs)", p->capacity);
    }
    ss_tfifo_push(&p->q, &job->node);
    pthread_cond_signal(&p->cv);
    /* the reaper sleeps until the earliest deadline: wake it when that changed */
    if (job->deadline > 0 && ss_tfifo_next_deadline(&p->q) == job->deadline) pthread_cond_signal(&p->rcv);
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
    pthread_cond_broadcast(&p->rcv);
    pthread_mutex_unlock(&p->mu);
    if (p->reaper_started) pthread_join(p->reaper, NULL);
    for (int i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_cond_destroy(&p->rcv);
    free(p->threads);
    free(p);
}

void ss_pool_get_stats(ss_pool *p, ss_pool_stats *st) {
    pthread_mutex_lock(&p->mu);
    st->workers = p->nthreads;
    st->depth = p->q.count;
    st->busy = p->busy;
    st->capacity = p->capacity;
    st->done = p->done;
    st->rejected = p->rejected;
    st->expired = p->expired;
    pthread_mutex_unlock(&p->mu);
}
