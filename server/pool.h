/* pool.h - bounded worker pool: N threads, each owning an ss_workspace, one FIFO queue */
#ifndef SS_POOL_H
#define SS_POOL_H
#include "engine/kernels.h"

typedef struct ss_pool ss_pool;
typedef struct ss_pool_job ss_pool_job;

/* Runs on a worker thread with that worker's workspace. The job is not touched
 * by the pool afterwards, so run() may free it or hand it on. */
typedef void (*ss_pool_fn)(ss_pool_job *job, ss_workspace *ws);

/* Intrusive: embed in the caller's job struct (first member or container_of). */
struct ss_pool_job {
    ss_pool_fn run;
    ss_pool_job *next;
    double enqueued; /* CLOCK_MONOTONIC seconds, set by submit */
};

/* Starts `workers` threads (<= 0: online cores) and a queue of `capacity`
 * jobs. Returns 0 and *out (free with ss_pool_free), SS_ENOMEM or SS_EINVAL. */
int ss_pool_new(int workers, int capacity, ss_pool **out);
/* Enqueues job. Returns 0, SS_EBUSY when `capacity` jobs wait already, or
 * SS_EUNAVAIL once the pool is stopping. Thread-safe. */
int ss_pool_submit(ss_pool *p, ss_pool_job *job);
/* As submit but ignores the capacity (for the second half of an admitted job,
 * e.g. encoding after the GPU ran). Still SS_EUNAVAIL once the pool is freed. */
int ss_pool_submit_force(ss_pool *p, ss_pool_job *job);
/* Stops accepting, lets the workers run every queued job, joins, frees. NULL-safe. */
void ss_pool_free(ss_pool *p);

typedef struct ss_pool_stats {
    int workers, depth, busy, capacity;
    long long done, rejected;
} ss_pool_stats;
void ss_pool_get_stats(ss_pool *p, ss_pool_stats *st);


#endif
