/* gpuq.h - the GPU queue: one thread that batches reconstruct jobs into single launches */
#ifndef SS_GPUQ_H
#define SS_GPUQ_H
#include <stddef.h>
#include <stdint.h>

#include "engine/kernels.h"
#include "server/tfifo.h"

typedef struct ss_gpuq ss_gpuq;

/* A job's completion callback, called exactly once from the queue's thread,
 * or from its reaper for a job still queued at its deadline (not when
 * ss_gpuq_submit fails: the error is returned instead). status: 0,
 * SS_ETIMEDOUT (the deadline passed before launch), SS_EUNAVAIL, or another
 * engine error. */
typedef void (*ss_gpuq_done_fn)(void *arg, int status);

typedef struct ss_gpu_job {
    const ss_backend *backend;   /* cuda or cublas (or any backend in CPU test mode) */
    const ss_factors *f;         /* must stay valid until done() (hold a store ref) */
    int k;
    uint16_t *out;               /* m*n samples, written before done() */
    float *out_f32;              /* or, when set: C = U[:, :k] W[:k, :] as m*n floats,
                                    unrounded (volumes of any data type); out unused.
                                    In CPU mode the backend's reconstruct_f32 runs */
    double deadline;             /* CLOCK_MONOTONIC seconds; 0 = none. Bounds the time
                                    queued: a job still queued then is answered then */
    ss_gpuq_done_fn done;
    void *arg;
    /* filled by the queue for Server-Timing and metrics */
    double queue_ms, kernel_ms;
    int batch_size;
    ss_tnode node;               /* the queue's */
} ss_gpu_job;

typedef struct ss_gpuq_opts {
    int capacity;          /* max queued jobs; beyond -> SS_EBUSY (503 + Retry-After) */
    int max_batch;         /* jobs launched together at most, e.g. 64 */
    double max_wait_ms;    /* how long the first job of a batch waits for company, e.g. 0.2 */
    size_t device_bytes;   /* byte budget of the device-resident factors LRU */
    int cpu_mode;          /* run batches through job->backend->reconstruct on the CPU
                              (same queue code path; for tests on machines without a GPU) */
} ss_gpuq_opts;

/* Starts the queue's thread and its reaper. Returns 0 and *out (free with ss_gpuq_free). */
int ss_gpuq_new(const ss_gpuq_opts *opts, ss_gpuq **out);
/* Enqueues job (not copied: it must live until done()). Returns 0, or SS_EBUSY
 * when the queue is full, SS_EUNAVAIL when stopped. Thread-safe. */
int ss_gpuq_submit(ss_gpuq *q, ss_gpu_job *job);
/* Stops accepting, runs (or fails) what is queued so every done() is called
 * and joins the threads. q stays valid (submit answers SS_EUNAVAIL) until
 * ss_gpuq_free, so producers still running elsewhere may call it. NULL-safe. */
void ss_gpuq_stop(ss_gpuq *q);
/* ss_gpuq_stop if not done yet, then frees. NULL-safe. */
void ss_gpuq_free(ss_gpuq *q);

typedef struct ss_gpuq_stats {
    long long jobs, batches, timeouts, rejected;
    long long batch_hist[8];      /* batch sizes: 1, 2-3, 4-7, 8-15, 16-31, 32-63, 64-127, 128+ */
    long long batch_jobs;         /* sum of the batch sizes (the histogram's _sum) */
    int depth;                    /* jobs queued now */
    double device_ms_total;
} ss_gpuq_stats;
void ss_gpuq_get_stats(ss_gpuq *q, ss_gpuq_stats *st);

#endif
