/* gpuq.c - the GPU queue: a bounded ring of jobs and one thread that launches them in batches */
#include "server/gpuq.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/clock.h"
#include "util/error.h"
#include "gpu/gpu.h"

struct ss_gpuq {
    ss_gpuq_opts o;
    pthread_mutex_t mu;
    pthread_cond_t cv;   /* signalled on submit and on stop */
    pthread_cond_t rcv;  /* the reaper's: an earlier deadline was queued, or stop */
    pthread_t thread, reaper;
    ss_tfifo fifo;       /* queued jobs, oldest first */
    int stopping, stopped;
    ss_gpuq_stats st;    /* depth filled on read */
    /* the thread's scratch, reused by every batch */
    ss_gpu_job **batch, **run;
    ss_gpu_item *items;
    double *t_submit;
    int *st_of, *grp_st, *run_idx;
    ss_workspace *ws;
};

static ss_gpu_job *job_of(ss_tnode *n) {
    return (ss_gpu_job *)(void *)((char *)n - offsetof(ss_gpu_job, node));
}

static int hist_bin(int n) {
    int b = 0;
    while (n > 1 && b < 7) { n >>= 1; b++; }
    return b; /* 1, 2-3, 4-7, ..., 128+ */
}

/* One job on the CPU: pixels, or floats for an out_f32 job. */
static int run_on_cpu(ss_gpuq *q, const ss_gpu_job *j) {
    const ss_backend *b = j->backend;
    if (!j->out_f32) return b->reconstruct(j->f, j->k, j->out, q->ws);
    if (!b->reconstruct_f32) return ss_fail(SS_EUNAVAIL, "backend %s has no float output", b->name);
    return b->reconstruct_f32(j->f, j->k, j->out_f32, q->ws);
}

/* Runs jobs [0..n) that share one backend: one GPU batch (pixel and float
 * jobs together), or in CPU mode (and for CPU backends) each job in turn,
 * timed as a batch; run in turn, a job reached after its deadline times out
 * without running. */
static void run_group(ss_gpuq *q, ss_gpu_job **jobs, int n, int *status) {
    const ss_backend *b = jobs[0]->backend;
    double ms = 0;
    if (q->o.cpu_mode || !b->device || strcmp(b->device, "gpu") != 0) {
        double t0 = ss_now();
        for (int i = 0; i < n; i++) {
            if (jobs[i]->deadline > 0 && ss_now() > jobs[i]->deadline)
                status[i] = SS_ETIMEDOUT;
            else
                status[i] = run_on_cpu(q, jobs[i]);
        }
        ms = (ss_now() - t0) * 1e3;
    } else {
        for (int i = 0; i < n; i++) {
            q->items[i].f = jobs[i]->f;
            q->items[i].k = jobs[i]->k;
            q->items[i].out = jobs[i]->out;
            q->items[i].out_f32 = jobs[i]->out_f32;
            q->items[i].status = 0;
        }
        ss_gpu_run_batch(b, q->items, n, &ms);
        for (int i = 0; i < n; i++) status[i] = q->items[i].status;
    }
    for (int i = 0; i < n; i++) {
        jobs[i]->kernel_ms = ms;
        jobs[i]->batch_size = n;
    }
    pthread_mutex_lock(&q->mu);
    q->st.batches++;
    q->st.batch_hist[hist_bin(n)]++;
    q->st.batch_jobs += n;
    q->st.device_ms_total += ms;
    pthread_mutex_unlock(&q->mu);
}

/* Runs the popped batch q->batch[0..n): expired jobs time out without
 * running, the rest are grouped by backend (stable, order of first
 * appearance) and launched one group at a time, then every done() is called. */
static void run_batch(ss_gpuq *q, int n) {
    ss_gpu_job **jobs = q->batch;
    double t = ss_now();
    int live = 0, timeouts = 0; /* timeouts: counted once every status is known */
    for (int i = 0; i < n; i++) {
        jobs[i]->queue_ms = (t - q->t_submit[i]) * 1e3;
        jobs[i]->kernel_ms = 0;
        jobs[i]->batch_size = 0;
        if (jobs[i]->deadline > 0 && t > jobs[i]->deadline) {
            q->st_of[i] = SS_ETIMEDOUT;
        } else {
            q->run_idx[live] = i;
            q->run[live++] = jobs[i];
        }
    }
    int first = 0;
    while (first < live) {
        const ss_backend *b = q->run[first]->backend;
        int e = first;
        for (int i = first; i < live; i++) {
            if (q->run[i]->backend != b) continue;
            ss_gpu_job *tj = q->run[i];
            int ti = q->run_idx[i];
            memmove(&q->run[e + 1], &q->run[e], (size_t)(i - e) * sizeof q->run[0]);
            memmove(&q->run_idx[e + 1], &q->run_idx[e], (size_t)(i - e) * sizeof q->run_idx[0]);
            q->run[e] = tj;
            q->run_idx[e] = ti;
            e++;
        }
        run_group(q, &q->run[first], e - first, &q->grp_st[first]);
        for (int i = first; i < e; i++) q->st_of[q->run_idx[i]] = q->grp_st[i];
        first = e;
    }
    for (int i = 0; i < n; i++) timeouts += q->st_of[i] == SS_ETIMEDOUT;
    pthread_mutex_lock(&q->mu);
    q->st.jobs += n;
    q->st.timeouts += timeouts;
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < n; i++) jobs[i]->done(jobs[i]->arg, q->st_of[i]);
}

static void *gpuq_main(void *arg) {
    ss_gpuq *q = (ss_gpuq *)arg;
    int maxb = q->o.max_batch;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (q->fifo.count == 0 && !q->stopping) pthread_cond_wait(&q->cv, &q->mu);
        if (q->fifo.count == 0) break; /* stopping and drained */
        /* The oldest job waits up to max_wait_ms for company (not when stopping). */
        struct timespec ts;
        ss_tfifo_abstime(ss_tfifo_peek(&q->fifo)->enqueued + q->o.max_wait_ms * 1e-3, &ts);
        while (!q->stopping && q->fifo.count < maxb)
            if (pthread_cond_timedwait(&q->cv, &q->mu, &ts) == ETIMEDOUT) break;
        int n = 0; /* the reaper may have taken jobs meanwhile, even all */
        ss_tnode *node;
        while (n < maxb && (node = ss_tfifo_pop(&q->fifo))) {
            q->batch[n] = job_of(node);
            q->t_submit[n++] = node->enqueued;
        }
        if (n == 0) continue;
        pthread_mutex_unlock(&q->mu);
        run_batch(q, n);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* Answers queued jobs at their deadline while the thread is inside a batch
 * (a long launch, or in CPU mode a slow reconstruction): checked only when
 * the thread comes back, a deadline would not bound the wait at all. */
static void *reaper_main(void *arg) {
    ss_gpuq *q = (ss_gpuq *)arg;
    pthread_mutex_lock(&q->mu);
    while (!q->stopping) {
        double next = ss_tfifo_next_deadline(&q->fifo), now = ss_now();
        if (next == 0) {
            pthread_cond_wait(&q->rcv, &q->mu);
            continue;
        }
        if (next > now) {
            struct timespec ts;
            ss_tfifo_abstime(next, &ts);
            pthread_cond_timedwait(&q->rcv, &q->mu, &ts);
            continue;
        }
        ss_tnode *node;
        while ((node = ss_tfifo_pop_expired(&q->fifo, now))) {
            ss_gpu_job *j = job_of(node);
            j->queue_ms = (now - node->enqueued) * 1e3;
            j->kernel_ms = 0;
            j->batch_size = 0;
            q->st.jobs++;
            q->st.timeouts++;
            pthread_mutex_unlock(&q->mu);
            j->done(j->arg, SS_ETIMEDOUT);
            pthread_mutex_lock(&q->mu);
        }
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

static void scratch_free(ss_gpuq *q) {
    free(q->batch);
    free(q->run);
    free(q->items);
    free(q->t_submit);
    free(q->st_of);
    free(q->grp_st);
    free(q->run_idx);
    ss_workspace_free(q->ws);
}

/* Creates the queue and starts its thread; *out is freed with ss_gpuq_free. */
int ss_gpuq_new(const ss_gpuq_opts *opts, ss_gpuq **out) {
    *out = NULL;
    if (!opts || opts->capacity <= 0 || opts->max_batch <= 0 || opts->max_wait_ms < 0)
        return ss_fail(SS_EINVAL, "gpu queue: capacity and max_batch must be positive");
    ss_gpuq *q = (ss_gpuq *)calloc(1, sizeof *q);
    if (!q) return ss_fail(SS_ENOMEM, "out of memory for the gpu queue");
    q->o = *opts;
    if (q->o.max_batch > q->o.capacity) q->o.max_batch = q->o.capacity;
    size_t mb = (size_t)q->o.max_batch;
    q->batch = (ss_gpu_job **)calloc(mb, sizeof *q->batch);
    q->run = (ss_gpu_job **)calloc(mb, sizeof *q->run);
    q->items = (ss_gpu_item *)calloc(mb, sizeof *q->items);
    q->t_submit = (double *)calloc(mb, sizeof *q->t_submit);
    q->st_of = (int *)calloc(mb, sizeof *q->st_of);
    q->grp_st = (int *)calloc(mb, sizeof *q->grp_st);
    q->run_idx = (int *)calloc(mb, sizeof *q->run_idx);
    q->ws = ss_workspace_new();
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deadlines and waits are monotonic */
    int ok = q->batch && q->run && q->items && q->t_submit && q->st_of && q->grp_st &&
             q->run_idx && q->ws;
    if (ok) {
        pthread_mutex_init(&q->mu, NULL);
        pthread_cond_init(&q->cv, &ca);
        pthread_cond_init(&q->rcv, &ca);
        ss_tfifo_init(&q->fifo);
    }
    pthread_condattr_destroy(&ca);
    if (!ok) {
        scratch_free(q);
        free(q);
        return ss_fail(SS_ENOMEM, "out of memory for the gpu queue");
    }
    if (!opts->cpu_mode && opts->device_bytes > 0) ss_gpu_set_cache_bytes(opts->device_bytes);
    if (pthread_create(&q->thread, NULL, gpuq_main, q) != 0) {
        pthread_cond_destroy(&q->cv);
        pthread_cond_destroy(&q->rcv);
        pthread_mutex_destroy(&q->mu);
        scratch_free(q);
        free(q);
        return ss_fail(SS_ENOMEM, "cannot start the gpu queue thread");
    }
    if (pthread_create(&q->reaper, NULL, reaper_main, q) != 0) {
        pthread_mutex_lock(&q->mu);
        q->stopping = 1;
        pthread_cond_broadcast(&q->cv);
        pthread_mutex_unlock(&q->mu);
        pthread_join(q->thread, NULL);
        pthread_cond_destroy(&q->cv);
        pthread_cond_destroy(&q->rcv);
        pthread_mutex_destroy(&q->mu);
        scratch_free(q);
        free(q);
        return ss_fail(SS_ENOMEM, "cannot start the gpu queue thread");
    }
    *out = q;
    return SS_OK;
}

int ss_gpuq_submit(ss_gpuq *q, ss_gpu_job *job) {
    if (!q || !job || !job->backend || !job->done) return ss_fail(SS_EINVAL, "gpu queue: bad job");
    pthread_mutex_lock(&q->mu);
    if (q->stopping) {
        pthread_mutex_unlock(&q->mu);
        return ss_fail(SS_EUNAVAIL, "gpu queue is stopping");
    }
    if (q->fifo.count >= q->o.capacity) {
        q->st.rejected++;
        pthread_mutex_unlock(&q->mu);
        return ss_fail(SS_EBUSY, "gpu queue full (%d jobs)", q->o.capacity);
    }
    job->node.enqueued = ss_now();
    job->node.deadline = job->deadline;
    ss_tfifo_push(&q->fifo, &job->node);
    /* Wake the thread when a batch is full or a first job arrives. */
    if (q->fifo.count == 1 || q->fifo.count >= q->o.max_batch) pthread_cond_signal(&q->cv);
    /* the reaper sleeps until the earliest deadline: wake it when that changed */
    if (job->deadline > 0 && ss_tfifo_next_deadline(&q->fifo) == job->deadline) pthread_cond_signal(&q->rcv);
    pthread_mutex_unlock(&q->mu);
    return SS_OK;
}

void ss_gpuq_stop(ss_gpuq *q) {
    if (!q || q->stopped) return;
    pthread_mutex_lock(&q->mu);
    q->stopping = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_cond_broadcast(&q->rcv);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->reaper, NULL);
    pthread_join(q->thread, NULL); /* the thread drains the queue before it exits */
    q->stopped = 1;
}

void ss_gpuq_free(ss_gpuq *q) {
    if (!q) return;
    ss_gpuq_stop(q);
    pthread_cond_destroy(&q->cv);
    pthread_cond_destroy(&q->rcv);
    pthread_mutex_destroy(&q->mu);
    if (!q->o.cpu_mode) ss_gpu_release();
    scratch_free(q);
    free(q);
}

void ss_gpuq_get_stats(ss_gpuq *q, ss_gpuq_stats *st) {
    pthread_mutex_lock(&q->mu);
    *st = q->st;
    st->depth = q->fifo.count;
    pthread_mutex_unlock(&q->mu);
}
