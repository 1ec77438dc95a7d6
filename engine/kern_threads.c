/* kern_threads.c - the threads backend: row tiles of the blocked kernel over a persistent pthread team */
#include "util/error.h"
#include "engine/kern_internal.h"

#include <pthread.h>
#include <stdatomic.h>

/* More threads than this are not started (ss_kernels_set_threads may ask more). */
#define MAX_THREADS 64

typedef struct job {
    const float *A, *B;
    int lda, n, k, m;
    float *C;
    uint16_t *P;
    int maxval;
    int tile, ntiles;
    atomic_int next; /* next tile to take: tiles are handed out dynamically */
} job;

/* One team per process, created lazily and kept until exit. call_mu lets one
 * call use the team at a time (concurrent callers queue on it); mu/cv guard
 * the hand-off. Workers sleep on `wake` until `gen` moves on. */
static struct {
    pthread_mutex_t call_mu, mu;
    pthread_cond_t wake, done;
    int nworkers;      /* started so far (the caller is the extra participant) */
    int active;        /* workers 0..active-1 take part in the current job */
    int pending;       /* active workers still running the current job */
    unsigned long gen; /* bumped once per job */
    job *cur;
} g_team = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
            PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, NULL};

static void run_tiles(job *j) {
    for (;;) {
        int t = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (t >= j->ntiles) return;
        int r0 = t * j->tile, r1 = r0 + j->tile < j->m ? r0 + j->tile : j->m;
        ss_blocked_rows(j->A, j->lda, j->B, j->n, j->k, r0, r1, j->C, j->P, j->maxval);
    }
}

typedef struct worker_arg {
    int idx;
    unsigned long seen; /* the generation at start: only later jobs are this worker's */
} worker_arg;

static worker_arg g_args[MAX_THREADS];

static void *worker(void *arg) {
    const worker_arg *wa = arg;
    int idx = wa->idx;
    unsigned long seen = wa->seen;
    pthread_mutex_lock(&g_team.mu);
    for (;;) {
        while (g_team.gen == seen) pthread_cond_wait(&g_team.wake, &g_team.mu);
        seen = g_team.gen;
        if (idx >= g_team.active) continue; /* not needed for this job */
        job *j = g_team.cur;
        pthread_mutex_unlock(&g_team.mu);
        run_tiles(j);
        pthread_mutex_lock(&g_team.mu);
        if (--g_team.pending == 0) pthread_cond_signal(&g_team.done);
    }
    return NULL;
}

/* Called with call_mu held and no job running. Returns how many workers exist
 * (fewer than asked if the system refuses threads; the caller copes). */
static int grow_team(int want) {
    if (want > MAX_THREADS - 1) want = MAX_THREADS - 1;
    while (g_team.nworkers < want) {
        int idx = g_team.nworkers;
        g_args[idx].idx = idx;
        g_args[idx].seen = g_team.gen;
        pthread_t th;
        pthread_attr_t attr;
        if (pthread_attr_init(&attr)) break;
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &attr, worker, &g_args[idx]);
        pthread_attr_destroy(&attr);
        if (rc) break;
        g_team.nworkers++;
    }
    return g_team.nworkers;
}

/* Runs C/P = A B over the team: nthreads participants (the caller included)
 * take row tiles of a few micro-kernel heights each. */
static void team_gemm(const float *A, int lda, const float *B, int m, int n, int k, float *C,
                      uint16_t *P, int maxval, int nthreads) {
    int mr = ss_blocked_mr();
    /* ~3 tiles per thread balances uneven progress; tiles are whole
     * micro-kernel heights unless the image is too short for that. */
    int tile = (m + 3 * nthreads - 1) / (3 * nthreads);
    if (tile > mr) tile = (tile + mr - 1) / mr * mr;
    if (tile < 1) tile = 1;
    job j = {.A = A, .B = B, .lda = lda, .n = n, .k = k, .m = m, .C = C, .P = P,
             .maxval = maxval, .tile = tile, .ntiles = (m + tile - 1) / tile};
    atomic_init(&j.next, 0);
    int helpers = nthreads - 1 < j.ntiles - 1 ? nthreads - 1 : j.ntiles - 1;
    if (helpers <= 0) {
        run_tiles(&j);
        return;
    }
    pthread_mutex_lock(&g_team.call_mu);
    helpers = grow_team(helpers) < helpers ? g_team.nworkers : helpers;
    pthread_mutex_lock(&g_team.mu);
    g_team.cur = &j;
    g_team.active = helpers;
    g_team.pending = helpers;
    g_team.gen++;
    pthread_cond_broadcast(&g_team.wake);
    pthread_mutex_unlock(&g_team.mu);
    run_tiles(&j);
    pthread_mutex_lock(&g_team.mu);
    while (g_team.pending > 0) pthread_cond_wait(&g_team.done, &g_team.mu);
    g_team.cur = NULL;
    pthread_mutex_unlock(&g_team.mu);
    pthread_mutex_unlock(&g_team.call_mu);
}

static int threads_f32(const ss_factors *f, int k, float *C, ss_workspace *ws) {
    (void)ws;
    int rc = ss_kern_check(f, k);
    if (rc) return rc;
    team_gemm(f->U, f->rank, f->W, f->m, f->n, k, C, NULL, 0, ss_kernels_threads());
    return SS_OK;
}

static int threads_px(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws) {
    int rc = ss_kern_check(f, k);
    if (rc) return rc;
    if (!out) return ss_fail(SS_EINVAL, "no output buffer");
    float *C = NULL;
    if (k > ss_blocked_kc() && !(C = ss_workspace_floats(ws, (size_t)f->m * (size_t)f->n)))
        return ws ? SS_ENOMEM : SS_EINVAL;
    team_gemm(f->U, f->rank, f->W, f->m, f->n, k, C, out, ss_kern_maxval(f), ss_kernels_threads());
    return SS_OK;
}

const ss_backend ss_backend_threads = {
    "threads", "cpu", "the image split into tiles over a pthread team (threads)",
    ss_kern_cpu_available, threads_px, threads_f32};
