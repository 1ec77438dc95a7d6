/* pool.h - bounded worker pool: N threads, each owning an ss_workspace, one FIFO queue */
#ifndef SS_POOL_H
#define SS_POOL_H
#include "engine/kernels.h"
#include "server/tfifo.h"

typedef struct ss_pool ss_pool;
typedef struct ss_pool_job ss_pool_job;

/* Runs on a worker thread with that worker's workspace. The job is not touched
 * by the pool afterwards, so run() may free it or hand it on. */
typedef void (*ss_pool_fn)(ss_pool_job *job, ss_workspace *ws);
/* Called instead of run() for a job still queued at its deadline, from the
 * pool's reaper or a worker, waited_s after submission; owns the job as run() does. */
typedef void (*ss_pool_expire_fn)(ss_pool_job *job, double waited_s);

/* Intrusive: embed in the caller's job struct (first member or container_of). */
struct ss_pool_job {
    ss_pool_fn run;
    ss_pool_expire_fn expire; /* required when deadline > 0 */
    double deadline;          /* CLOCK_MONOTONIC seconds, set by the caller; 0 = none */
    double enqueued;          /* CLOCK_MONOTONIC seconds, set by submit */
    ss_tnode node;            /* the pool's */
};

/* Starts `workers` threads (<= 0: online cores), the reaper and a queue of
 * `capacity` jobs. Returns 0 and *out (free with ss_pool_free), SS_ENOMEM or SS_EINVAL. */
int ss_pool_new(int workers, int capacity, ss_pool **out);
/* Enqueues job. Returns 0, SS_EBUSY when `capacity` jobs wait already, or
 * SS_EUNAVAIL once the pool is stopping. A job with a deadline either starts
 * running before it or is expired at it (the deadline bounds the time spent
 * queued, never the running time). Thread-safe. */
int ss_pool_submit(ss_pool *p, ss_pool_job *job);
/* As submit but ignores the capacity and the deadline (for the second half of
 * an admitted job, e.g. encoding after the GPU ran). Still SS_EUNAVAIL once
 * the pool is freed. */
int ss_pool_submit_force(ss_pool *p, ss_pool_job *job);
/* Stops accepting, lets the workers run (or expire) every queued job, joins, frees. NULL-safe. */
void ss_pool_free(ss_pool *p);

typedef struct ss_pool_stats {
    int workers, depth, busy, capacity;
    long long done, rejected, expired;
} ss_pool_stats;
void ss_pool_get_stats(ss_pool *p, ss_pool_stats *st);


#endif
