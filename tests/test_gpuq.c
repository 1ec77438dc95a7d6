/* test_gpuq.c - the GPU queue in CPU mode: batching, max_batch, deadlines, backpressure, shutdown, threads */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/error.h"
#include "engine/kernels.h"
#include "gpu/gpu.h"
#include "server/gpuq.h"
#include "tests/util/testutil.h"

/* A submitted job and what its done() saw. */
typedef struct tjob {
    ss_gpu_job job;
    uint16_t *out;
    int status;
    int calls;
} tjob;

/* Completion bookkeeping shared by the tests (done() runs on the queue thread). */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_done;
/* The gate: a job whose done() holds the queue thread until released, so
 * the test controls what is queued meanwhile (no timing assumptions). */
static int g_gate_entered, g_gate_open;

static void on_done(void *arg, int status) {
    tjob *t = arg;
    pthread_mutex_lock(&g_mu);
    t->status = status;
    t->calls++;
    g_done++;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static void on_done_gate(void *arg, int status) {
    on_done(arg, status);
    pthread_mutex_lock(&g_mu);
    g_gate_entered = 1;
    pthread_cond_broadcast(&g_cv);
    while (!g_gate_open) pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
}

static void reset_counts(void) {
    pthread_mutex_lock(&g_mu);
    g_done = 0;
    g_gate_entered = 0;
    g_gate_open = 0;
    pthread_mutex_unlock(&g_mu);
}

static void wait_done(int n) {
    pthread_mutex_lock(&g_mu);
    while (g_done < n) pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
}

static void wait_gate_entered(void) {
    pthread_mutex_lock(&g_mu);
    while (!g_gate_entered) pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
}

static void open_gate(void) {
    pthread_mutex_lock(&g_mu);
    g_gate_open = 1;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void tjob_init(tjob *t, const ss_backend *b, const ss_factors *f, int k, ss_gpuq_done_fn done) {
    memset(t, 0, sizeof *t);
    t->out = malloc((size_t)f->m * f->n * sizeof *t->out);
    assert_non_null(t->out);
    for (size_t p = 0; p < (size_t)f->m * f->n; p++) t->out[p] = 0xBEEF; /* untouched marker */
    t->status = 12345;
    t->job.backend = b;
    t->job.f = f;
    t->job.k = k;
    t->job.out = t->out;
    t->job.done = done;
    t->job.arg = t;
}

/* The job's pixels equal its backend's direct result. */
static void assert_direct_result(const tjob *t) {
    const ss_factors *f = t->job.f;
    size_t px = (size_t)f->m * f->n;
    uint16_t *want = malloc(px * sizeof *want);
    ss_workspace *ws = ss_workspace_new();
    assert_non_null(want);
    assert_non_null(ws);
    assert_int_equal(t->job.backend->reconstruct(f, t->job.k, want, ws), 0);
    assert_memory_equal(t->out, want, px * sizeof *want);
    ss_workspace_free(ws);
    free(want);
}

static ss_gpuq *new_cpu_queue(int capacity, int max_batch, double max_wait_ms) {
    ss_gpuq_opts o = {capacity, max_batch, max_wait_ms, 0, 1};
    ss_gpuq *q = NULL;
    assert_int_equal(ss_gpuq_new(&o, &q), 0);
    assert_non_null(q);
    return q;
}

/* Jobs queued while the thread is busy leave in batches of max_batch, the
 * remainder as one smaller batch, each job with its backend's own result. */
static void test_batching_groups_jobs_up_to_max_batch(void **state) {
    (void)state;
    reset_counts();
    const ss_backend *blas = ss_backend_find("blas");
    assert_non_null(blas);
    ss_factors *f1 = tu_random_factors(40, 27, 20, 8, 1), *f2 = tu_random_factors(33, 50, 33, 16, 2);
    assert_non_null(f1);
    assert_non_null(f2);
    enum { N = 20, MAXB = 8 };
    ss_gpuq *q = new_cpu_queue(64, MAXB, 20.0);
    tjob gate, jobs[N];
    tjob_init(&gate, blas, f1, 5, on_done_gate);
    assert_int_equal(ss_gpuq_submit(q, &gate.job), 0);
    wait_gate_entered();
    for (int i = 0; i < N; i++) {
        const ss_factors *f = i % 2 ? f2 : f1;
        tjob_init(&jobs[i], blas, f, 1 + (i * 7) % f->rank, on_done);
        assert_int_equal(ss_gpuq_submit(q, &jobs[i].job), 0);
    }
    ss_gpuq_stats st;
    ss_gpuq_get_stats(q, &st);
    assert_int_equal(st.depth, N);
    open_gate();
    wait_done(N + 1);
    ss_gpuq_get_stats(q, &st);
    assert_int_equal(st.jobs, N + 1);
    assert_int_equal(st.depth, 0);
    assert_int_equal(st.batches, 4); /* the gate alone, then 8 + 8 + 4 */
    assert_int_equal(st.batch_hist[0], 1);
    assert_int_equal(st.batch_hist[2], 1); /* 4-7 */
    assert_int_equal(st.batch_hist[3], 2); /* 8-15 */
    for (int i = 0; i < N; i++) {
        assert_int_equal(jobs[i].calls, 1);
        assert_int_equal(jobs[i].status, 0);
        assert_int_equal(jobs[i].job.batch_size, i < 16 ? MAXB : N - 16);
        assert_true(jobs[i].job.queue_ms >= 0);
        assert_direct_result(&jobs[i]);
    }
    ss_gpuq_free(q);
    assert_int_equal(gate.calls, 1);
    for (int i = 0; i < N; i++) free(jobs[i].out);
    free(gate.out);
    ss_factors_free(f1);
    ss_factors_free(f2);
}

/* One popped batch with two backends makes one launch per backend, each
 * job computed by its own backend; a bad k fails only its own job. */
static void test_mixed_backends_launch_per_backend(void **state) {
    (void)state;
    reset_counts();
    const ss_backend *blas = ss_backend_find("blas"), *loops = ss_backend_find("loops3");
    assert_non_null(blas);
    assert_non_null(loops);
    ss_factors *f = tu_random_factors(29, 41, 29, 8, 3);
    assert_non_null(f);
    enum { N = 9 };
    ss_gpuq *q = new_cpu_queue(16, 16, 20.0);
    tjob gate, jobs[N];
    tjob_init(&gate, blas, f, 1, on_done_gate);
    assert_int_equal(ss_gpuq_submit(q, &gate.job), 0);
    wait_gate_entered();
    for (int i = 0; i < N; i++) {
        tjob_init(&jobs[i], i % 3 ? blas : loops, f, 1 + i * 3, on_done);
        assert_int_equal(ss_gpuq_submit(q, &jobs[i].job), 0);
    }
    jobs[8].job.k = f->rank + 1; /* blas, invalid */
    open_gate();
    wait_done(N + 1);
    ss_gpuq_stats st;
    ss_gpuq_get_stats(q, &st);
    assert_int_equal(st.batches, 3); /* gate, then loops3 x3 and blas x6 */
    for (int i = 0; i < N; i++) {
        assert_int_equal(jobs[i].calls, 1);
        assert_int_equal(jobs[i].job.batch_size, i % 3 ? 6 : 3);
        if (i == 8) {
            assert_int_equal(jobs[i].status, SS_EINVAL);
        } else {
            assert_int_equal(jobs[i].status, 0);
            assert_direct_result(&jobs[i]);
        }
    }
    ss_gpuq_free(q);
    for (int i = 0; i < N; i++) free(jobs[i].out);
    free(gate.out);
    ss_factors_free(f);
}

/* Makes t a float job: C into its own buffer (NaN until written), no pixels. */
static float *tjob_float(tjob *t) {
    const ss_factors *f = t->job.f;
    size_t n = (size_t)f->m * f->n;
    float *C = malloc(n * sizeof *C);
    assert_non_null(C);
    for (size_t p = 0; p < n; p++) C[p] = NAN;
    t->job.out = NULL;
    t->job.out_f32 = C;
    return C;
}

/* The float job's output equals its backend's reconstruct_f32, bit for bit. */
static void assert_direct_floats(const tjob *t) {
    const ss_factors *f = t->job.f;
    size_t n = (size_t)f->m * f->n;
    float *want = malloc(n * sizeof *want);
    ss_workspace *ws = ss_workspace_new();
    assert_non_null(want);
    assert_non_null(ws);
    assert_int_equal(t->job.backend->reconstruct_f32(f, t->job.k, want, ws), 0);
    assert_memory_equal(t->job.out_f32, want, n * sizeof *want);
    ss_workspace_free(ws);
    free(want);
}

/* Float jobs (volumes of any data type) and pixel jobs of one backend leave
 * in one batch; each float job gets its backend's reconstruct_f32 exactly,
 * each pixel job its pixels; a float job on a backend without float output
 * fails alone with SS_EUNAVAIL. */
static void test_float_jobs_mixed_with_pixel_jobs(void **state) {
    (void)state;
    reset_counts();
    const ss_backend *blas = ss_backend_find("blas");
    assert_non_null(blas);
    /* a volume-like slice: 16-bit label, values far outside 0..65535 and negative */
    ss_factors *f1 = tu_random_factors(37, 29, 29, 16, 11), *f2 = tu_random_factors(24, 61, 24, 8, 12);
    assert_non_null(f1);
    assert_non_null(f2);
    for (size_t p = 0; p < (size_t)f1->m * f1->rank; p++) f1->U[p] *= -3000.0f;
    enum { N = 10 };
    ss_gpuq *q = new_cpu_queue(32, 32, 20.0);
    tjob gate, jobs[N], nof32;
    float *C[N] = {0};
    tjob_init(&gate, blas, f1, 3, on_done_gate);
    assert_int_equal(ss_gpuq_submit(q, &gate.job), 0);
    wait_gate_entered();
    for (int i = 0; i < N; i++) {
        const ss_factors *f = i % 3 ? f1 : f2;
        tjob_init(&jobs[i], blas, f, 1 + (i * 5) % f->rank, on_done);
        if (i % 2 == 0) C[i] = tjob_float(&jobs[i]);
        assert_int_equal(ss_gpuq_submit(q, &jobs[i].job), 0);
    }
    tjob_init(&nof32, &ss_backend_cuda, f1, 4, on_done); /* no reconstruct_f32 in CPU mode */
    float *Cn = tjob_float(&nof32);
    assert_int_equal(ss_gpuq_submit(q, &nof32.job), 0);
    open_gate();
    wait_done(N + 2);
    ss_gpuq_stats st;
    ss_gpuq_get_stats(q, &st);
    assert_int_equal(st.batches, 3); /* the gate, then blas x10 and cuda x1 from one pop */
    for (int i = 0; i < N; i++) {
        assert_int_equal(jobs[i].calls, 1);
        assert_int_equal(jobs[i].status, 0);
        assert_int_equal(jobs[i].job.batch_size, N);
        if (C[i]) {
            assert_direct_floats(&jobs[i]);
        } else {
            assert_direct_result(&jobs[i]);
        }
    }
    assert_int_equal(nof32.status, SS_EUNAVAIL);
    assert_true(isnan(Cn[0]));
    ss_gpuq_free(q);
    for (int i = 0; i < N; i++) {
        free(jobs[i].out);
        free(C[i]);
    }
    free(nof32.out);
    free(Cn);
    free(gate.out);
    ss_factors_free(f1);
    ss_factors_free(f2);
}

/* A job whose deadline passed while queued completes with SS_ETIMEDOUT and
 * its output is never written; a job with a future deadline runs. */
static void test_expired_job_times_out_without_running(void **state) {
    (void)state;
    reset_counts();
    const ss_backend *blas = ss_backend_find("blas");
    ss_factors *f = tu_random_factors(30, 20, 20, 8, 4);
    assert_non_null(f);
    ss_gpuq *q = new_cpu_queue(8, 8, 1.0);
    tjob gate, late, ok;
    tjob_init(&gate, blas, f, 3, on_done_gate);
    assert_int_equal(ss_gpuq_submit(q, &gate.job), 0);
    wait_gate_entered();
    tjob_init(&late, blas, f, 3, on_done);
    late.job.deadline = mono_now() - 0.001;
    tjob_init(&ok, blas, f, 3, on_done);
    ok.job.deadline = mono_now() + 3600.0;
    assert_int_equal(ss_gpuq_submit(q, &late.job), 0);
    assert_int_equal(ss_gpuq_submit(q, &ok.job), 0);
    open_gate();
    wait_done(3);
    assert_int_equal(late.calls, 1);
    assert_int_equal(late.status, SS_ETIMEDOUT);
    for (size_t p = 0; p < (size_t)f->m * f->n; p++) assert_int_equal(late.out[p], 0xBEEF);
    assert_int_equal(ok.status, 0);
    assert_direct_result(&ok);
    ss_gpuq_stats st;
    ss_gpuq_get_stats(q, &st);
    assert_int_equal(st.timeouts, 1);
    assert_int_equal(st.jobs, 3);
    ss_gpuq_free(q);
    free(gate.out);
    free(late.out);
    free(ok.out);
    ss_factors_free(f);
}

/* Waits up to `seconds` for n completions; 1 if they came. */
static int wait_done_for(int n, double seconds) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* g_cv runs on the default clock */
    ts.tv_sec += (time_t)seconds;
    pthread_mutex_lock(&g_mu);
    int rc = 0;
    while (g_done < n && rc == 0) rc = pthread_cond_timedwait(&g_cv, &g_mu, &ts);
    int ok = g_done >= n;
    pthread_mutex_unlock(&g_mu);
    return ok;
}

/* The deadline bounds the time queued: a job still queued at its deadline is
 * answered SS_ETIMEDOUT then, while the thread is still busy with the batch
 * before it (the gate stays closed until the expired job has completed). */
static void test_queued_job_expires_while_the_thread_is_busy(void **state) {
    (void)state;
    reset_counts();
    const ss_backend *blas = ss_backend_find("blas");
    ss_factors *f = tu_random_factors(30, 20, 20, 8, 9);
    assert_non_null(f);
    ss_gpuq *q = new_cpu_queue(8, 8, 1.0);
    tjob gate, late, none;
    tjob_init(&gate, blas, f, 3, on_done_gate);
    assert_int_equal(ss_gpuq_submit(q, &gate.job), 0);
    wait_gate_entered();
    tjob_init(&none, blas, f, 4, on_done); /* no deadline: waits for the thread */
    tjob_init(&late, blas, f, 3, on_done);
    late.job.deadline = mono_now() + 0.05;
    assert_int_equal(ss_gpuq_submit(q, &none.job), 0);
    assert_int_equal(ss_gpuq_submit(q, &late.job), 0);
    /* generous: 10 s for a 50 ms deadline; before the reaper it never came */
    int expired = wait_done_for(2, 10.0);
    open_gate();
    wait_done(3);
    assert_true(expired);
    assert_int_equal(late.calls, 1);
    assert_int_equal(late.status, SS_ETIMEDOUT);
    for (size_t p = 0; p < (size_t)f->m * f->n; p++) assert_int_equal(late.out[p], 0xBEEF);
    assert_int_equal(none.status, 0);
    assert_direct_result(&none);
    ss_gpuq_stats st;
    ss_gpuq_get_stats(q, &st);
    assert_int_equal(st.timeouts, 1);
    assert_int_equal(st.jobs, 3);
    ss_gpuq_free(q);
    free(gate.out);
    free(late.out);
    free(none.out);
    ss_factors_free(f);
}

/* A full queue refuses with SS_EBUSY (done() not called for it) and counts
 * the rejection; what was accepted still completes. */
static void test_full_queue_rejects_with_busy(void **state) {
    (void)state;
    reset_counts();
    const ss_backend *blas = ss_backend_find("blas");
    ss_factors *f = tu_random_factors(16, 16, 16, 8, 5);
    assert_non_null(f);
    enum { CAP = 4 };
    ss_gpuq *q = new_cpu_queue(CAP, 2, 1.0);
    tjob gate, jobs[CAP + 1];
    tjob_init(&gate, blas, f, 2, on_done_gate);
    assert_int_equal(ss_gpuq_submit(q, &gate.job), 0);
    wait_gate_entered();
    for (int i = 0; i < CAP; i++) {
        tjob_init(&jobs[i], blas, f, 2 + i, on_done);
        assert_int_equal(ss_gpuq_submit(q, &jobs[i].job), 0);
    }
    tjob_init(&jobs[CAP], blas, f, 2, on_done);
    assert_int_equal(ss_gpuq_submit(q, &jobs[CAP].job), SS_EBUSY);
    assert_string_not_equal(ss_error(), "no error");
    ss_gpuq_stats st;
    ss_gpuq_get_stats(q, &st);
    assert_int_equal(st.rejected, 1);
    assert_int_equal(st.depth, CAP);
    open_gate();
    wait_done(CAP + 1);
    ss_gpuq_free(q);
    for (int i = 0; i < CAP; i++) {
        assert_int_equal(jobs[i].calls, 1);
        assert_int_equal(jobs[i].status, 0);
        free(jobs[i].out);
    }
    assert_int_equal(jobs[CAP].calls, 0);
    free(jobs[CAP].out);
    free(gate.out);
    ss_factors_free(f);
}

/* Shutdown with jobs still queued (and a long wait for company pending):
 * every done() is called exactly once before ss_gpuq_free returns. */
static void test_shutdown_completes_every_job(void **state) {
    (void)state;
    reset_counts();
    const ss_backend *blas = ss_backend_find("blas");
    ss_factors *f = tu_random_factors(24, 18, 18, 16, 6);
    assert_non_null(f);
    enum { N = 10 };
    ss_gpuq *q = new_cpu_queue(32, 32, 60000.0); /* would wait a minute for a full batch */
    tjob jobs[N];
    for (int i = 0; i < N; i++) {
        tjob_init(&jobs[i], blas, f, 1 + i, on_done);
        assert_int_equal(ss_gpuq_submit(q, &jobs[i].job), 0);
    }
    ss_gpuq_free(q);
    pthread_mutex_lock(&g_mu);
    assert_int_equal(g_done, N);
    pthread_mutex_unlock(&g_mu);
    for (int i = 0; i < N; i++) {
        assert_int_equal(jobs[i].calls, 1);
        assert_int_equal(jobs[i].status, 0);
        assert_direct_result(&jobs[i]);
        free(jobs[i].out);
    }
    ss_factors_free(f);
}

/* Several threads submitting at once (retrying on SS_EBUSY): every job
 * completes once with the right pixels and the counters add up. */
typedef struct producer {
    ss_gpuq *q;
    const ss_factors *f;
    tjob *jobs;
    int n, busy;
} producer;

static void *produce(void *arg) {
    producer *p = arg;
    const ss_backend *blas = ss_backend_find("blas");
    for (int i = 0; i < p->n; i++) {
        tjob *t = &p->jobs[i];
        memset(t, 0, sizeof *t);
        t->out = malloc((size_t)p->f->m * p->f->n * sizeof *t->out);
        t->job.backend = blas;
        t->job.f = p->f;
        t->job.k = 1 + i % p->f->rank;
        t->job.out = t->out;
        t->job.done = on_done;
        t->job.arg = t;
        int rc;
        while ((rc = ss_gpuq_submit(p->q, &t->job)) == SS_EBUSY) {
            p->busy++;
            usleep(200);
        }
        if (rc != 0) t->status = rc; /* checked by the main thread */
    }
    return NULL;
}

static void test_concurrent_producers(void **state) {
    (void)state;
    reset_counts();
    enum { T = 4, PER = 40 };
    ss_factors *f = tu_random_factors(20, 30, 20, 8, 7);
    assert_non_null(f);
    ss_gpuq *q = new_cpu_queue(8, 4, 0.2);
    producer p[T];
    pthread_t th[T];
    for (int t = 0; t < T; t++) {
        p[t] = (producer){q, f, calloc(PER, sizeof(tjob)), PER, 0};
        assert_non_null(p[t].jobs);
        assert_int_equal(pthread_create(&th[t], NULL, produce, &p[t]), 0);
    }
    long long busy = 0;
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        busy += p[t].busy;
    }
    wait_done(T * PER);
    ss_gpuq_stats st;
    ss_gpuq_get_stats(q, &st);
    assert_int_equal(st.jobs, T * PER);
    assert_true(st.rejected == busy);
    long long hist = 0;
    for (int b = 0; b < 8; b++) hist += st.batch_hist[b];
    assert_true(hist == st.batches);
    assert_int_equal(st.batch_hist[3] + st.batch_hist[4] + st.batch_hist[5] + st.batch_hist[6] + st.batch_hist[7], 0);
    ss_gpuq_free(q);
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < PER; i++) {
            assert_int_equal(p[t].jobs[i].calls, 1);
            assert_int_equal(p[t].jobs[i].status, 0);
            assert_true(p[t].jobs[i].job.batch_size >= 1 && p[t].jobs[i].job.batch_size <= 4);
            assert_direct_result(&p[t].jobs[i]);
            free(p[t].jobs[i].out);
        }
        free(p[t].jobs);
    }
    ss_factors_free(f);
}

/* The GPU backends through the queue, in CPU mode and in GPU mode: without
 * a GPU the job completes with SS_EUNAVAIL; with one, with the pixels of
 * a direct call. A CPU backend in GPU mode still runs (on the CPU). */
static void test_gpu_backends_through_queue(void **state) {
    (void)state;
    reset_counts();
    ss_factors *f = tu_random_factors(50, 37, 37, 8, 8);
    assert_non_null(f);
    const char *reason = NULL;
    int have_gpu = ss_gpu_available(&reason);
    for (int mode = 0; mode < 2; mode++) {
        reset_counts();
        ss_gpuq_opts o = {8, 8, 0.5, 64u << 20, mode};
        ss_gpuq *q = NULL;
        assert_int_equal(ss_gpuq_new(&o, &q), 0);
        tjob a, b, c;
        tjob_init(&a, &ss_backend_cuda, f, 10, on_done);
        tjob_init(&b, &ss_backend_cublas, f, 37, on_done);
        tjob_init(&c, ss_backend_find("blas"), f, 37, on_done);
        assert_int_equal(ss_gpuq_submit(q, &a.job), 0);
        assert_int_equal(ss_gpuq_submit(q, &b.job), 0);
        assert_int_equal(ss_gpuq_submit(q, &c.job), 0);
        wait_done(3);
        ss_gpuq_free(q);
        assert_int_equal(c.status, 0);
        assert_direct_result(&c);
        if (have_gpu) {
            assert_int_equal(a.status, 0);
            assert_int_equal(b.status, 0);
            assert_direct_result(&a);
            assert_direct_result(&b);
        } else {
            assert_non_null(reason);
            assert_int_equal(a.status, SS_EUNAVAIL);
            assert_int_equal(b.status, SS_EUNAVAIL);
        }
        free(a.out);
        free(b.out);
        free(c.out);
    }
    ss_factors_free(f);
}

static void test_bad_options_and_jobs_rejected(void **state) {
    (void)state;
    ss_gpuq *q = NULL;
    ss_gpuq_opts bad = {0, 8, 1.0, 0, 1};
    assert_int_equal(ss_gpuq_new(&bad, &q), SS_EINVAL);
    assert_null(q);
    q = new_cpu_queue(4, 4, 1.0);
    ss_gpu_job j;
    memset(&j, 0, sizeof j);
    assert_int_equal(ss_gpuq_submit(q, &j), SS_EINVAL); /* no backend, no done */
    ss_gpuq_free(q);
    ss_gpuq_free(NULL);
}

int main(void) {
    ss_gpu_register(); /* the GPU layer fills the registry's cuda and cublas slots */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batching_groups_jobs_up_to_max_batch),
        cmocka_unit_test(test_mixed_backends_launch_per_backend),
        cmocka_unit_test(test_float_jobs_mixed_with_pixel_jobs),
        cmocka_unit_test(test_expired_job_times_out_without_running),
        cmocka_unit_test(test_queued_job_expires_while_the_thread_is_busy),
        cmocka_unit_test(test_full_queue_rejects_with_busy),
        cmocka_unit_test(test_shutdown_completes_every_job),
        cmocka_unit_test(test_concurrent_producers),
        cmocka_unit_test(test_gpu_backends_through_queue),
        cmocka_unit_test(test_bad_options_and_jobs_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
