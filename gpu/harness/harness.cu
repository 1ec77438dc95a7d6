/* harness.cu - self-contained device-machine check and bench of the cuda and cublas backends (no Debian libraries needed) */
/*
 * Built by scripts/gpu_device_run.sh together with gpu/gpu_core.cu,
 * gpu/recon.cu, gpu/cublas.cu and engine/error.c (the very sources of the
 * svdslice library). Usage: harness INPUT_DIR RESULTS_FILE
 * INPUT_DIR holds .svd files written by `svdslice compress` (see the
 * script's --prepare); random factors are generated here. Every backend is
 * checked against a plain-C float64 reference before it is timed. A third
 * argument --checks-only skips the bench (the run under compute-sanitizer).
 * After the bench, a crossover sweep times single requests against an
 * estimated CPU time (env CPU_GFLOPS, QUEUE_WAIT_MS, SWEEP_REPS,
 * SWEEP_BUDGET_S; see crossover_sweep) for SS_AUTO_GPU_MIN_WORK.
 * The volume batches: 181 slices of 217x181 (the issue's 181x217x181 volume)
 * and 62 of 128x128 (the shape of Debian's KmeansTest volume), generated
 * here (the device machine has no data), at k=50 through each backend in
 * one batch, checked, then timed.
 * Built with -DSS_GPU_NO_CUBLAS (cuBLAS not linkable), the cublas backend
 * says why it is missing and only cuda is checked and timed.
 * Exit status: 0 all checks passed, 1 a check failed, 2 usage, 3 no usable GPU.
 */
#include <dirent.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gpu/gpu_internal.cuh"

static FILE *g_out;
static int g_pass, g_fail;

static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    va_start(ap, fmt);
    if (g_out) vfprintf(g_out, fmt, ap);
    va_end(ap);
    fflush(stdout);
    if (g_out) fflush(g_out); /* a run cut off by the time limit keeps what it found */
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* ---- factors --------------------------------------------------------------- */

static ss_factors *factors_new(int m, int n, int rank, int bits) {
    ss_factors *f = (ss_factors *)calloc(1, sizeof *f);
    if (!f) return NULL;
    f->m = m;
    f->n = n;
    f->rank = rank;
    f->nsv = m < n ? m : n;
    f->bit_depth = bits;
    f->U = (float *)malloc((size_t)m * rank * sizeof(float));
    f->S = (float *)calloc((size_t)f->nsv, sizeof(float));
    f->Vt = (float *)malloc((size_t)rank * n * sizeof(float));
    f->W = (float *)malloc((size_t)rank * n * sizeof(float));
    if (!f->U || !f->S || !f->Vt || !f->W) {
        free(f->U); free(f->S); free(f->Vt); free(f->W); free(f);
        return NULL;
    }
    return f;
}

static void factors_free(ss_factors *f) {
    if (!f) return;
    free(f->U); free(f->S); free(f->Vt); free(f->W); free(f);
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* xorshift64*, [0, 1) */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (double)((g_rng * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}

/* A constant component at half the range plus random ones whose sum has a
 * standard deviation of half the range: many products clamp at both ends.
 * Each call draws new values, so the id gets a serial number: the device
 * cache keys on id and shape, and a reused id would serve the previous
 * call's factors (an empty id stays empty: uploaded per batch). */
static ss_factors *random_factors(int m, int n, int rank, int bits, const char *id) {
    static unsigned serial;
    ss_factors *f = factors_new(m, n, rank, bits);
    if (!f) return NULL;
    double mid = ((1 << bits) - 1) / 2.0;
    double s1 = rank > 1 ? 3.0 * mid / sqrt((double)(rank - 1)) : 0.0, s0 = mid > s1 ? mid : s1;
    for (int p = 0; p < f->nsv; p++) f->S[p] = (float)(p == 0 ? s0 : s1);
    for (int i = 0; i < m; i++)
        for (int p = 0; p < rank; p++)
            f->U[(size_t)i * rank + p] = p == 0 ? (float)(mid / s0) : (float)(2 * urand() - 1);
    for (int p = 0; p < rank; p++)
        for (int j = 0; j < n; j++) {
            size_t o = (size_t)p * n + j;
            f->Vt[o] = p == 0 ? 1.0f : (float)(2 * urand() - 1);
            f->W[o] = f->S[p] * f->Vt[o];
        }
    if (id && id[0]) snprintf(f->id, sizeof f->id, "%.48s-%u", id, ++serial);
    return f;
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Reads an .svd file (engine/svdfile.c, version 1): header fields at fixed
 * offsets, payload U, S, Vt after the header. Checksums are the engine's
 * business; sizes are checked so a bad file cannot overrun. */
static ss_factors *load_svd(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = len > 0 ? (unsigned char *)malloc((size_t)len) : NULL;
    if (!buf || fread(buf, 1, (size_t)len, fp) != (size_t)len || len < 392 || memcmp(buf, "SVDSLICE", 8) ||
        le32(buf + 8) != 1) {
        fclose(fp);
        free(buf);
        return NULL;
    }
    fclose(fp);
    uint32_t hdr = le32(buf + 12), m = le32(buf + 16), n = le32(buf + 20), bits = le32(buf + 24),
             rank = le32(buf + 28), nsv = le32(buf + 32);
    size_t need = (size_t)hdr + 4 * ((size_t)m * rank + nsv + (size_t)rank * n);
    ss_factors *f = NULL;
    if (m && n && m < 65536 && n < 65536 && rank && rank <= nsv && nsv == (m < n ? m : n) &&
        (bits == 8 || bits == 16) && need <= (size_t)len)
        f = factors_new((int)m, (int)n, (int)rank, (int)bits);
    if (f) {
        const unsigned char *p = buf + hdr;
        memcpy(f->U, p, (size_t)m * rank * 4); /* little-endian host, like every CUDA machine */
        p += (size_t)m * rank * 4;
        memcpy(f->S, p, (size_t)nsv * 4);
        p += (size_t)nsv * 4;
        memcpy(f->Vt, p, (size_t)rank * n * 4);
        for (uint32_t q = 0; q < rank; q++)
            for (uint32_t j = 0; j < n; j++) f->W[(size_t)q * n + j] = f->S[q] * f->Vt[(size_t)q * n + j];
        memcpy(f->id, buf + 304, 64);
        f->id[64] = '\0';
        const char *base = strrchr(path, '/');
        snprintf(f->name, sizeof f->name, "%.200s", base ? base + 1 : path);
    }
    free(buf);
    return f;
}

/* ---- checks ---------------------------------------------------------------- */

/* max |pixel - clamp(round(float64 product))| over rows 0, step, 2*step, ...
 * (a step > 1 keeps the float64 reference of the sweep's big shapes cheap). */
static int max_err_rows(const ss_factors *f, int k, const uint16_t *px, int step) {
    double maxval = f->bit_depth == 8 ? 255.0 : 65535.0;
    int worst = 0;
    double *row = (double *)malloc((size_t)f->n * sizeof(double));
    for (int i = 0; i < f->m; i += step) {
        for (int j = 0; j < f->n; j++) row[j] = 0;
        for (int p = 0; p < k; p++) {
            double a = f->U[(size_t)i * f->rank + p];
            const float *w = f->W + (size_t)p * f->n;
            for (int j = 0; j < f->n; j++) row[j] += a * (double)w[j];
        }
        for (int j = 0; j < f->n; j++) {
            double r = round(row[j]);
            r = r < 0 ? 0 : r > maxval ? maxval : r;
            int d = abs((int)px[(size_t)i * f->n + j] - (int)r);
            if (d > worst) worst = d;
        }
    }
    free(row);
    return worst;
}

static int max_err(const ss_factors *f, int k, const uint16_t *px) { return max_err_rows(f, k, px, 1); }

/* A float item's product against the float64 one: the worst |C - ref| over
 * its bound for float accumulation of k terms, 2 k eps sum_p |U_ip W_pj|
 * (+1e-6); <= 1 passes. */
static double f32_err_ratio(const ss_factors *f, int k, const float *C) {
    double worst = 0;
    for (int i = 0; i < f->m; i++)
        for (int j = 0; j < f->n; j++) {
            double ref = 0, mag = 0;
            for (int p = 0; p < k; p++) {
                double t = (double)f->U[(size_t)i * f->rank + p] * f->W[(size_t)p * f->n + j];
                ref += t;
                mag += fabs(t);
            }
            double r = fabs((double)C[(size_t)i * f->n + j] - ref) / (2.0 * k * FLT_EPSILON * mag + 1e-6);
            if (!(r <= worst)) worst = r; /* NaN sticks */
        }
    return worst;
}

static void check_batch(const ss_backend *b, ss_factors **fs, const int *ks, int n, const char *what) {
    ss_gpu_item *items = (ss_gpu_item *)calloc((size_t)n, sizeof *items);
    for (int i = 0; i < n; i++) {
        items[i].f = fs[i];
        items[i].k = ks[i];
        items[i].out = (uint16_t *)malloc((size_t)fs[i]->m * fs[i]->n * sizeof(uint16_t));
    }
    int rc = ss_gpu_run_batch(b, items, n, NULL);
    int worst = 0, bad = rc != 0;
    for (int i = 0; i < n; i++) {
        if (items[i].status) bad = 1;
        else {
            int e = max_err(fs[i], ks[i], items[i].out);
            if (e > worst) worst = e;
        }
        free(items[i].out);
    }
    if (bad || worst > 1) {
        g_fail++;
        say("FAIL %-6s %s: rc=%d max_err=%d %s\n", b->name, what, rc, worst, rc ? ss_error() : "");
    } else {
        g_pass++;
    }
    free(items);
}

static void check_one(const ss_backend *b, ss_factors *f, int k) {
    char what[320];
    snprintf(what, sizeof what, "%s %dx%d %d-bit k=%d", f->name[0] ? f->name : f->id, f->m, f->n, f->bit_depth, k);
    check_batch(b, &f, &k, 1, what);
}

/* A batch with one bad k: that item alone gets SS_EINVAL, the others match
 * the reference; twice under a 64 KiB device budget (about one of these
 * slices), so each batch's trim evicts and the next one re-uploads. */
static void check_bad_item_and_evictions(const ss_backend *b, ss_factors *const *fs4) {
    enum { NI = 9, BAD = 4 };
    ss_gpu_stats st0, st1;
    ss_gpu_set_cache_bytes((size_t)64 << 10);
    ss_gpu_get_stats(&st0);
    int bad = 0;
    for (int round = 0; round < 2; round++) {
        ss_gpu_item items[NI];
        memset(items, 0, sizeof items); /* out_f32 NULL: pixel items */
        for (int i = 0; i < NI; i++) {
            const ss_factors *f = fs4[(i + round) % 4];
            items[i].f = f;
            items[i].k = i == BAD ? f->rank + 1 : 1 + (i * 7) % f->rank;
            items[i].out = (uint16_t *)malloc((size_t)f->m * f->n * sizeof(uint16_t));
            items[i].status = 99;
        }
        if (ss_gpu_run_batch(b, items, NI, NULL) != 0) bad = 1;
        for (int i = 0; i < NI; i++) {
            if (i == BAD) bad |= items[i].status != SS_EINVAL;
            else bad |= items[i].status != 0 || max_err(items[i].f, items[i].k, items[i].out) > 1;
            free(items[i].out);
        }
    }
    ss_gpu_get_stats(&st1);
    ss_gpu_set_cache_bytes((size_t)4 << 30);
    bad |= st1.evictions == st0.evictions || st1.resident_bytes > ((size_t)64 << 10);
    if (bad) {
        g_fail++;
        say("FAIL %-6s batch with a bad k under a 64 KiB budget: %s (evictions %lld -> %lld, %zu bytes resident)\n",
            b->name, ss_error(), st0.evictions, st1.evictions, st1.resident_bytes);
    } else {
        g_pass++;
    }
}

typedef struct busy_gpu {
    const ss_backend *b;
    ss_gpu_item *items;
    int n, stop;
} busy_gpu;

static void *run_batches(void *arg) {
    busy_gpu *g = (busy_gpu *)arg;
    while (!__atomic_load_n(&g->stop, __ATOMIC_ACQUIRE)) ss_gpu_run_batch(g->b, g->items, g->n, NULL);
    return NULL;
}

/* ss_gpu_available answers at once while batches run back to back: the HTTP
 * polling thread calls it (/backends, `auto`), and a batch holds the GPU lock
 * through its synchronisation. Were it to take that lock, a call would wait
 * half a batch on average. */
static void check_available_during_batches(const ss_backend *b) {
    enum { MAXN = 256 };
    ss_factors *f = random_factors(1024, 1024, 1024, 16, "busy");
    ss_gpu_item *items = (ss_gpu_item *)calloc(MAXN, sizeof *items);
    for (int i = 0; i < MAXN; i++) {
        items[i].f = f;
        items[i].k = 1024;
        items[i].out = (uint16_t *)malloc((size_t)f->m * f->n * sizeof(uint16_t));
    }
    int n = 4, rc = 0;
    double batch_ms = 0;
    for (;;) { /* a batch long enough that a call landing inside one is measurable */
        double t0 = now_ms();
        rc = ss_gpu_run_batch(b, items, n, NULL);
        batch_ms = now_ms() - t0;
        if (rc || batch_ms >= 100 || n == MAXN) break;
        n *= 2;
    }
    if (rc) {
        g_fail++;
        say("FAIL %-6s availability during batches: the batch failed: %s\n", b->name, ss_error());
    } else if (batch_ms < 20) {
        say("skip %-6s availability during batches: a batch of %d takes only %.1f ms\n", b->name, n, batch_ms);
    } else {
        busy_gpu g = {b, items, n, 0};
        pthread_t th;
        pthread_create(&th, NULL, run_batches, &g);
        double worst = 0;
        int avail = 1;
        for (int i = 0; i < 20; i++) {
            usleep((useconds_t)(batch_ms / 3 * 1e3));
            double t0 = now_ms();
            avail &= ss_gpu_available(NULL);
            double dt = now_ms() - t0;
            if (dt > worst) worst = dt;
        }
        __atomic_store_n(&g.stop, 1, __ATOMIC_RELEASE);
        pthread_join(th, NULL);
        if (!avail || worst > batch_ms / 10) {
            g_fail++;
            say("FAIL %-6s ss_gpu_available took up to %.2f ms (available %d) during %.1f ms batches\n", b->name,
                worst, avail, batch_ms);
        } else {
            g_pass++;
            say("ok   %-6s ss_gpu_available at most %.3f ms during %.1f ms batches of %d\n", b->name, worst,
                batch_ms, n);
        }
    }
    for (int i = 0; i < MAXN; i++) free(items[i].out);
    free(items);
    factors_free(f);
}

/* ---- bench ----------------------------------------------------------------- */

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct timing {
    double dev_med, dev_min, wall_med, cold_wall;
} timing;

/* Times one batch of n slices at k: the first (cold: uploads included) call
 * apart, then reps warm calls; device time from the backend's events, wall
 * time around the whole call (descriptor upload, kernels, copy back, widening).
 * f32: float items (the products, as volumes of non-uint types get them). */
static int bench(const ss_backend *b, ss_factors **fs, int n, int k, int reps, timing *t, int f32) {
    ss_gpu_item *items = (ss_gpu_item *)calloc((size_t)n, sizeof *items);
    for (int i = 0; i < n; i++) {
        items[i].f = fs[i];
        items[i].k = k;
        if (f32) items[i].out_f32 = (float *)malloc((size_t)fs[i]->m * fs[i]->n * sizeof(float));
        else items[i].out = (uint16_t *)malloc((size_t)fs[i]->m * fs[i]->n * sizeof(uint16_t));
    }
    double *dev = (double *)malloc((size_t)reps * sizeof(double)), *wall = (double *)malloc((size_t)reps * sizeof(double));
    /* Empty the device cache so the cold call uploads (the other backend's
     * run left these slices resident); the context stays. */
    ss_gpu_set_cache_bytes(0);
    ss_gpu_set_cache_bytes((size_t)4 << 30);
    double ms = 0, t0 = now_ms();
    int rc = ss_gpu_run_batch(b, items, n, &ms);
    t->cold_wall = now_ms() - t0;
    for (int r = 0; r < reps && !rc; r++) {
        t0 = now_ms();
        rc = ss_gpu_run_batch(b, items, n, &ms);
        wall[r] = now_ms() - t0;
        dev[r] = ms;
    }
    if (!rc) {
        qsort(dev, (size_t)reps, sizeof(double), cmp_d);
        qsort(wall, (size_t)reps, sizeof(double), cmp_d);
        t->dev_med = dev[reps / 2];
        t->dev_min = dev[0];
        t->wall_med = wall[reps / 2];
    }
    for (int i = 0; i < n; i++) {
        free(items[i].out);
        free(items[i].out_f32);
    }
    free(items);
    free(dev);
    free(wall);
    return rc;
}

/* ---- crossover sweep: when does a single request pay on the GPU? ---------- */

/* A number from the environment, or dflt when unset, unparsable or out of range. */
static double env_num(const char *name, double dflt, double lo, double hi) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end;
    double x = strtod(v, &end);
    if (*end || !(x >= lo && x <= hi)) {
        say("note: ignoring %s=%s (want a number in %g..%g)\n", name, v, lo, hi);
        return dflt;
    }
    return x;
}

typedef struct xrow {
    int m, n, k, ok[2];
    double work, cpu_ms, warm[2], cold[2];
} xrow;

typedef struct xshape {
    int m, n, ks[3]; /* up to three k; 0 ends the list */
} xshape;

/* One request (a batch of one) timed as the server's queue thread sees it:
 * host clock around ss_gpu_run_batch (descriptor upload, kernel, copy of the
 * pixels back, stream sync, widening). A first call is not timed: it loads
 * the kernels (lazy module loading) and grows the pinned staging, one-off
 * costs of the process; its pixels are checked against the float64
 * reference on sampled rows (the big shapes are not in the checks above).
 * Then the cache is emptied for one cold call (factors uploaded), then
 * reps warm calls (factors resident), median. Returns 0, or -1 (said why). */
static int time_single(const ss_backend *b, ss_factors *f, int k, int reps, double *warm, double *cold) {
    ss_gpu_item it;
    memset(&it, 0, sizeof it);
    it.f = f;
    it.k = k;
    it.status = 0;
    it.out = (uint16_t *)malloc((size_t)f->m * f->n * sizeof(uint16_t));
    double *w = (double *)malloc((size_t)reps * sizeof(double));
    if (!it.out || !w) {
        free(it.out);
        free(w);
        say("FAIL %-6s %dx%d k=%d: out of host memory\n", b->name, f->m, f->n, k);
        return -1;
    }
    int rc = ss_gpu_run_batch(b, &it, 1, NULL) != 0 || it.status != 0;
    if (!rc) {
        double work = (double)f->m * f->n * k;
        int step = work > 3e7 ? (int)ceil(work / 3e7) : 1; /* <= 3e7 reference multiply-adds */
        int e = max_err_rows(f, k, it.out, step);
        if (e > 1) {
            say("FAIL %-6s %dx%d k=%d: max_err=%d on every %d-th row\n", b->name, f->m, f->n, k, e, step);
            rc = 1;
        }
    } else {
        say("FAIL %-6s %dx%d k=%d: %s\n", b->name, f->m, f->n, k, ss_error());
    }
    if (!rc) {
        ss_gpu_set_cache_bytes(0);
        ss_gpu_set_cache_bytes((size_t)4 << 30);
        double t0 = now_ms();
        rc = ss_gpu_run_batch(b, &it, 1, NULL) != 0 || it.status != 0;
        *cold = now_ms() - t0;
        for (int r = 0; r < reps && !rc; r++) {
            t0 = now_ms();
            rc = ss_gpu_run_batch(b, &it, 1, NULL) != 0 || it.status != 0;
            w[r] = now_ms() - t0;
        }
        if (rc) say("FAIL %-6s %dx%d k=%d (timed call): %s\n", b->name, f->m, f->n, k, ss_error());
        else {
            qsort(w, (size_t)reps, sizeof(double), cmp_d);
            *warm = w[reps / 2];
        }
    }
    free(it.out);
    free(w);
    return rc ? -1 : 0;
}

/* Smallest work from which the GPU (time + queue wait) beats the CPU
 * estimate on every row of at least that work, 0 when it loses the largest;
 * *lost: the largest work it loses (0: none), the break-even lies between. */
static double crossover(const xrow *r, int n, int b, int cold, double qwait, double *lost) {
    double x = 0;
    *lost = 0;
    for (int i = 0; i < n; i++) {
        double g = cold ? r[i].cold[b] : r[i].warm[b];
        if ((!r[i].ok[b] || g + qwait >= r[i].cpu_ms) && r[i].work > *lost) *lost = r[i].work;
    }
    for (int i = 0; i < n; i++)
        if (r[i].work > *lost && (x == 0 || r[i].work < x)) x = r[i].work;
    return x;
}

/* Single requests over shapes and k, both backends, against the CPU's
 * estimated time 2*m*n*k / CPU_GFLOPS (no OpenBLAS on the device machine:
 * the rate is a parameter, default the single-core OpenBLAS sgemm figure of
 * docs/BENCHMARKS.md). Prints crossover_work= and the SS_AUTO_GPU_MIN_WORK
 * line for the backend auto picks first (cublas), warm, plus the queue's
 * batching wait (QUEUE_WAIT_MS, default the server's --gpu-max-wait-ms). */
static void crossover_sweep(const ss_backend *const *bk) {
    enum { NSH = 4, NROW = NSH * 3 };
    static const xshape sh[NSH] = {{256, 170, {10, 50, 170}},
                                   {512, 512, {64, 256, 512}},
                                   {1024, 1024, {128, 512, 1024}},
                                   {2048, 2048, {256, 1024, 0}}};
    double gflops = env_num("CPU_GFLOPS", 95, 1e-3, 1e6), qwait = env_num("QUEUE_WAIT_MS", 0.2, 0, 1000);
    int reps = (int)env_num("SWEEP_REPS", 31, 1, 1001);
    double budget_ms = env_num("SWEEP_BUDGET_S", 60, 1, 600) * 1e3, t_start = now_ms();
    xrow rows[NROW];
    int nrow = 0;
    say("\ncrossover sweep: single requests (batch of 1), 8-bit; gpu ms = host clock around the whole call "
        "(upload of descriptors, kernel, copy back, sync), median of %d warm calls (factors resident); cold = "
        "one call with the factors' upload; cpu_ms_est = 2*work / (CPU_GFLOPS %.1f * 1e6); wins: gpu when "
        "gpu warm ms + QUEUE_WAIT_MS %.3f < cpu_ms_est\n",
        reps, gflops, qwait);
    say("%-10s %5s %12s %11s %11s %11s %11s %11s %10s %10s\n", "shape", "k", "work", "cpu_ms_est", "cuda_ms",
        "cuda_cold", "cublas_ms", "cublas_cold", "cuda_win", "cublas_win");
    for (int s = 0; s < NSH; s++) {
        if (now_ms() - t_start > budget_ms) {
            say("sweep stopped after %.0f s (SWEEP_BUDGET_S): shapes from %dx%d on not measured\n",
                (now_ms() - t_start) / 1e3, sh[s].m, sh[s].n);
            break;
        }
        int maxk = 0;
        for (int j = 0; j < 3; j++) maxk = sh[s].ks[j] > maxk ? sh[s].ks[j] : maxk;
        ss_factors *f = random_factors(sh[s].m, sh[s].n, maxk, 8, "xover");
        if (!f) {
            say("FAIL sweep %dx%d: out of host memory\n", sh[s].m, sh[s].n);
            g_fail++;
            continue;
        }
        for (int j = 0; j < 3 && sh[s].ks[j] > 0; j++) {
            xrow *r = &rows[nrow++];
            memset(r, 0, sizeof *r);
            r->m = f->m;
            r->n = f->n;
            r->k = sh[s].ks[j];
            r->work = (double)f->m * f->n * r->k;
            r->cpu_ms = 2.0 * r->work / (gflops * 1e6);
            const char *win[2];
            for (int b = 0; b < 2; b++) {
                r->ok[b] = time_single(bk[b], f, r->k, reps, &r->warm[b], &r->cold[b]) == 0;
                if (!r->ok[b]) g_fail++;
                win[b] = !r->ok[b] ? "FAIL" : r->warm[b] + qwait < r->cpu_ms ? "gpu" : "cpu";
            }
            char shape[24];
            snprintf(shape, sizeof shape, "%dx%d", r->m, r->n);
            say("%-10s %5d %12.0f %11.4f %11.4f %11.4f %11.4f %11.4f %10s %10s\n", shape, r->k, r->work, r->cpu_ms,
                r->warm[0], r->cold[0], r->warm[1], r->cold[1], win[0], win[1]);
        }
        factors_free(f);
    }
    for (int b = 0; b < 2; b++)
        for (int cold = 0; cold <= 1; cold++) {
            double lost, x = crossover(rows, nrow, b, cold, qwait, &lost);
            if (x > 0)
                say("crossover %-6s %s + queue wait: GPU wins from work %.0f on (largest loss %.0f)\n", bk[b]->name,
                    cold ? "cold" : "warm", x, lost);
            else
                say("crossover %-6s %s + queue wait: GPU loses the largest measured work (%.0f)\n", bk[b]->name,
                    cold ? "cold" : "warm", lost);
        }
    /* auto's first choice is cublas (engine/kernels.c), normally warm: the
     * cache keeps a slice's factors resident across its requests. */
    double lost, x = crossover(rows, nrow, 1, 0, qwait, &lost);
    say("crossover_work=%.0f (cublas, warm, + QUEUE_WAIT_MS %.3f, CPU_GFLOPS %.1f; 0: the GPU loses the largest "
        "shape)\n",
        x, qwait, gflops);
    if (x == 0)
        say("recommend: #define SS_AUTO_GPU_MIN_WORK (1LL << 62)  /* single requests stay on the CPU */\n");
    else
        say("recommend: #define SS_AUTO_GPU_MIN_WORK (%.0fLL)  /* smallest winning work measured; break-even "
            "lies in (%.0f, %.0f] */\n",
            x, lost, x);
    say("sweep: %.1f s\n", (now_ms() - t_start) / 1e3);
}

/* ---- the volume batches ------------------------------------------------- */

/* Whole volumes cut into slices along their third axis, stored at full
 * rank, reconstructed at k=50 in one batch per backend: the issue's
 * 181x217x181 grid (the 1 mm brain template; its goal: under 1 ms of device
 * time) and the shape of Debian's KmeansTest_T1UCharRaw.nii.gz (128x128x62,
 * int16, so 16-bit slices). check=1: every 20th slice and the last against
 * the float64 reference (a check like the others); check=0: timed (cold
 * with uploads, then warm, median). Generated factors: the device machine
 * has neither the file nor the CLI to factorise it. */
typedef struct volspec {
    const char *what;
    int slices, m, n, bits;
} volspec;
static const volspec k_vols[2] = {{"181 x 217x181 (the goal's volume)", 181, 217, 181, 8},
                                  {"62 x 128x128 16-bit (KmeansTest_T1UCharRaw's shape)", 62, 128, 128, 16}};
enum { VOL_K = 50, VOL_MAX = 181 };
static double g_vol_ms[2]; /* the goal's volume, per backend */

/* The same volume as one batch of float items (even slices; a volume of
 * int16 or float data gets these) mixed with pixel items (odd slices): the
 * floats within float accumulation error of the float64 product, the pixels
 * within 1, on every 20th slice and the last two. */
static void check_float_volume(const ss_backend *b, const volspec *vs, ss_factors **vol) {
    ss_gpu_item *items = (ss_gpu_item *)calloc((size_t)vs->slices, sizeof *items);
    const size_t px = (size_t)vs->m * vs->n;
    for (int i = 0; i < vs->slices; i++) {
        items[i].f = vol[i];
        items[i].k = VOL_K;
        if (i % 2 == 0) items[i].out_f32 = (float *)malloc(px * sizeof(float));
        else items[i].out = (uint16_t *)malloc(px * sizeof(uint16_t));
    }
    int rc = ss_gpu_run_batch(b, items, vs->slices, NULL), bad = 0, worst = 0, checked = 0;
    double fworst = 0;
    for (int i = 0; i < vs->slices; i++) {
        if (items[i].status) bad = 1;
        else if (i % 20 == 0 || i >= vs->slices - 2) {
            if (items[i].out_f32) {
                double r = f32_err_ratio(vol[i], VOL_K, items[i].out_f32);
                if (!(r <= fworst)) fworst = r;
            } else {
                int e = max_err(vol[i], VOL_K, items[i].out);
                if (e > worst) worst = e;
            }
            checked++;
        }
        free(items[i].out);
        free(items[i].out_f32);
    }
    free(items);
    if (rc || bad || worst > 1 || !(fworst <= 1)) {
        g_fail++;
        say("FAIL %-6s volume %s k=%d float+pixel batch: rc=%d float err/bound %.3g pixel max_err=%d %s\n", b->name,
            vs->what, VOL_K, rc, fworst, worst, rc ? ss_error() : "");
    } else {
        g_pass++;
        say("ok   %-6s volume %s k=%d float+pixel batch (float err/bound %.3g, pixel max_err %d on %d slices)\n",
            b->name, vs->what, VOL_K, fworst, worst, checked);
    }
}

static void volume_batch(const ss_backend *const *bk, int nb, int check) {
    for (int v = 0; v < 2; v++) {
        const volspec *vs = &k_vols[v];
        ss_factors *vol[VOL_MAX];
        int ok = 1;
        for (int i = 0; i < vs->slices; i++) {
            char id[32];
            snprintf(id, sizeof id, "volume%d-%d", v, i);
            vol[i] = ok ? random_factors(vs->m, vs->n, vs->n < vs->m ? vs->n : vs->m, vs->bits, id) : NULL;
            ok = ok && vol[i];
        }
        if (!ok) {
            say("FAIL volume %s: out of host memory\n", vs->what);
            g_fail++;
        } else if (check) {
            for (int b = 0; b < nb; b++) {
                ss_gpu_item *items = (ss_gpu_item *)calloc((size_t)vs->slices, sizeof *items);
                int bad = 0, worst = 0, checked = 0;
                for (int i = 0; i < vs->slices; i++) {
                    items[i].f = vol[i];
                    items[i].k = VOL_K;
                    items[i].out = (uint16_t *)malloc((size_t)vs->m * vs->n * sizeof(uint16_t));
                }
                int rc = ss_gpu_run_batch(bk[b], items, vs->slices, NULL);
                for (int i = 0; i < vs->slices; i++) {
                    if (items[i].status) bad = 1;
                    else if (i % 20 == 0 || i == vs->slices - 1) {
                        int e = max_err(vol[i], VOL_K, items[i].out);
                        if (e > worst) worst = e;
                        checked++;
                    }
                    free(items[i].out);
                }
                free(items);
                if (rc || bad || worst > 1) {
                    g_fail++;
                    say("FAIL %-6s volume %s k=%d in one batch: rc=%d max_err=%d %s\n", bk[b]->name, vs->what, VOL_K,
                        rc, worst, rc ? ss_error() : "");
                } else {
                    g_pass++;
                    say("ok   %-6s volume %s k=%d in one batch (max_err %d on %d slices)\n", bk[b]->name, vs->what,
                        VOL_K, worst, checked);
                }
                check_float_volume(bk[b], vs, vol);
            }
        } else {
            say("\nvolume %s: rank %d, k=%d, one batch of %d slices (generated factors)\n", vs->what,
                vs->n < vs->m ? vs->n : vs->m, VOL_K, vs->slices);
            for (int b = 0; b < nb; b++) {
                for (int f32 = 0; f32 < 2; f32++) { /* pixels, then floats (volumes of other types) */
                    timing t = {0, 0, 0, 0};
                    if (bench(bk[b], vol, vs->slices, VOL_K, 30, &t, f32)) {
                        say("FAIL %s volume batch%s: %s\n", bk[b]->name, f32 ? " (f32)" : "", ss_error());
                        g_fail++;
                        continue;
                    }
                    if (v == 0 && !f32) g_vol_ms[bk[b] == &ss_backend_cublas] = t.dev_med;
                    double gflop = 2.0 * vs->m * vs->n * VOL_K * vs->slices / 1e9;
                    say("volume %-6s %s device %.4f ms (min %.4f), wall %.4f ms, cold %.3f ms, %.1f GFLOP/s\n",
                        bk[b]->name, f32 ? "f32" : "px ", t.dev_med, t.dev_min, t.wall_med, t.cold_wall,
                        gflop / (t.dev_med * 1e-3));
                }
            }
        }
        for (int i = 0; i < vs->slices; i++)
            factors_free(vol[i]); /* NULL past a failed allocation */
    }
}

/* ---- the failure policy (last: its final step breaks the context) --------- */

/* One batch of one slice; status of the item, 0 when its pixels match. */
static int one_batch(const ss_backend *b, ss_factors *f) {
    ss_gpu_item it = {f, f->rank, (uint16_t *)malloc((size_t)f->m * f->n * sizeof(uint16_t)), 99, NULL};
    int rc = ss_gpu_run_batch(b, &it, 1, NULL);
    int st = rc ? rc : it.status;
    if (!st && max_err(f, f->rank, it.out) > 1) st = 1;
    free(it.out);
    return st;
}

static void policy_result(int ok, const char *what) {
    if (ok) g_pass++;
    else g_fail++;
    say("%s failure policy: %s\n", ok ? "ok  " : "FAIL", what);
}

/* gpu/gpu_fail.h on the device, with injected faults: a call's error fails
 * its batch alone (the backend runs the next one); a backend's error stops
 * that backend alone; a kernel reading an unmapped address breaks the
 * context and stops both. */
static void check_failure_policy(const ss_backend *const *bk, int nb) {
    ss_factors *f = random_factors(40, 33, 33, 8, "policy");
    const char *why = NULL;
    int cu = bk[0] == &ss_backend_cuda ? 0 : -1, cb = nb > 1 ? 1 : -1;
    if (cu < 0) {
        say("skip failure policy: the cuda backend is not running\n");
        factors_free(f);
        return;
    }
    ss_gpu_fault_next = SS_GPU_FAULT_CALL;
    int st = one_batch(bk[cu], f);
    policy_result(st == SS_EUNAVAIL && bk[cu]->available(NULL) && one_batch(bk[cu], f) == 0,
                  "an injected call error (cudaErrorInvalidValue) failed its batch alone; cuda ran the next one");
    if (cb > 0) {
        ss_gpu_fault_next = SS_GPU_FAULT_BACKEND;
        st = one_batch(bk[cb], f);
        int down = !bk[cb]->available(&why);
        policy_result(st == SS_EUNAVAIL && down && why && strstr(why, "NoKernelImage") &&
                          bk[cu]->available(NULL) && one_batch(bk[cu], f) == 0,
                      "an injected backend error (cudaErrorNoKernelImageForDevice) stopped cublas alone; cuda ran on");
        if (down) say("     cublas now says: %s\n", why);
    }
    ss_gpu_fault_next = SS_GPU_FAULT_CONTEXT;
    st = one_batch(bk[cu], f);
    int cuda_down = !bk[cu]->available(&why);
    policy_result(st == SS_EUNAVAIL && cuda_down && !ss_backend_cublas.available(NULL) && !ss_gpu_available(NULL),
                  "a kernel reading an unmapped address broke the context and stopped both backends");
    if (cuda_down) say("     cuda now says: %s\n", why);
    factors_free(f);
}

int main(int argc, char **argv) {
    int checks_only = argc == 4 && !strcmp(argv[3], "--checks-only");
    if (argc < 3 || (argc == 4 && !checks_only) || argc > 4) {
        fprintf(stderr, "usage: harness INPUT_DIR RESULTS_FILE [--checks-only]\n");
        return 2;
    }
    g_out = fopen(argv[2], "w");
    if (!g_out) {
        perror(argv[2]);
        return 2;
    }
    const char *why = NULL;
    if (!ss_gpu_available(&why)) {
        say("no usable GPU: %s\n", why);
        fclose(g_out);
        return 3;
    }
    cudaDeviceProp prop;
    memset(&prop, 0, sizeof prop);
    int dev = 0, drv = 0, rt = 0;
    cudaGetDevice(&dev);
    if (cudaGetDeviceProperties(&prop, dev) != cudaSuccess) snprintf(prop.name, sizeof prop.name, "(unknown)");
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    say("device: %s, sm_%d%d, %d SMs, %.1f GiB; driver %d, runtime %d\n", prop.name, prop.major, prop.minor,
        prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0, drv, rt);
    ss_gpu_set_cache_bytes((size_t)4 << 30);
    /* The backends that can run; one that cannot (cuBLAS not linked, say)
     * is reported and the other still checked and timed. */
    const ss_backend *all[2] = {&ss_backend_cuda, &ss_backend_cublas}, *bk[2] = {NULL, NULL};
    int nb = 0;
    for (int b = 0; b < 2; b++) {
        const char *r = NULL;
        if (all[b]->available(&r)) bk[nb++] = all[b];
        else say("backend %s: missing (%s)\n", all[b]->name, r ? r : "unavailable");
    }
    if (nb == 0) {
        say("no backend can run\n");
        fclose(g_out);
        return 3;
    }

    /* Real slices from the prepared folder. */
    enum { MAXREAL = 64 };
    ss_factors *real[MAXREAL];
    int nreal = 0;
    DIR *d = opendir(argv[1]);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) && nreal < MAXREAL) {
            size_t l = strlen(e->d_name);
            if (l < 5 || strcmp(e->d_name + l - 4, ".svd")) continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[1], e->d_name);
            ss_factors *f = load_svd(path);
            if (f) real[nreal++] = f;
            else say("FAIL cannot read %s\n", path), g_fail++;
        }
        closedir(d);
    }
    say("inputs: %d prepared slices from %s\n", nreal, argv[1]);

    /* ---- correctness ---- */
    static const int shapes[][2] = {{1, 1}, {1, 40}, {40, 1}, {31, 33}, {33, 31}, {64, 64},
                                    {100, 7}, {7, 100}, {256, 170}, {300, 301}, {512, 512}};
    for (int b = 0; b < nb; b++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int bits = 8; bits <= 16; bits += 8) {
                int m = shapes[s][0], n = shapes[s][1], r = m < n ? m : n;
                char id[64];
                snprintf(id, sizeof id, "rand-%zu-%d", s, bits);
                ss_factors *f = random_factors(m, n, r, bits, id);
                int ks[3] = {1, (r + 1) / 2, r};
                for (int i = 0; i < 3; i++) check_one(bk[b], f, ks[i]);
                factors_free(f);
            }
        ss_factors *small = random_factors(37, 23, 23, 16, "every-k");
        for (int k = 1; k <= small->rank; k++) check_one(bk[b], small, k);
        small->id[0] = '\0'; /* uploaded per batch, not cached */
        for (int k = 1; k <= small->rank; k++) check_one(bk[b], small, k);
        factors_free(small);
        for (int i = 0; i < nreal; i++) {
            int ks[4] = {1, 10, 50, real[i]->rank};
            for (int j = 0; j < 4; j++)
                if (ks[j] <= real[i]->rank) check_one(bk[b], real[i], ks[j]);
        }
        /* A mixed batch: real and random slices, both depths, many k. */
        enum { NMIX = 48 };
        ss_factors *mixf[NMIX], *rnd[4];
        int mixk[NMIX];
        for (int i = 0; i < 4; i++) {
            char id[32];
            snprintf(id, sizeof id, "mix-%d", i);
            rnd[i] = random_factors(50 + 61 * i, 200 - 37 * i, 40, i % 2 ? 16 : 8, id);
        }
        for (int i = 0; i < NMIX; i++) {
            mixf[i] = (nreal && i % 3 == 0) ? real[i % nreal] : rnd[i % 4];
            mixk[i] = 1 + (i * 11) % mixf[i]->rank;
        }
        check_batch(bk[b], mixf, mixk, NMIX, "mixed batch of 48 (real + random, 8/16-bit, k varies)");
        check_bad_item_and_evictions(bk[b], rnd);
        for (int i = 0; i < 4; i++) factors_free(rnd[i]);
    }
    check_available_during_batches(bk[0]);
    if (!checks_only) volume_batch(bk, nb, 1);
    say("checks: %d passed, %d failed (backends: %s%s%s)\n", g_pass, g_fail, bk[0]->name, nb > 1 ? ", " : "",
        nb > 1 ? bk[1]->name : "");
    if (g_fail) {
        say("not timing: a backend is wrong\n");
        fclose(g_out);
        return 1;
    }
    if (checks_only) {
        ss_gpu_release();
        for (int i = 0; i < nreal; i++) factors_free(real[i]);
        fclose(g_out);
        return 0;
    }

    /* ---- bench: 256x170 slices (the study's size), k = 50 ---- */
    enum { NB = 512 };
    ss_factors **vol = (ss_factors **)malloc(NB * sizeof *vol);
    for (int i = 0; i < NB; i++) {
        char id[32];
        snprintf(id, sizeof id, "bench-%d", i);
        vol[i] = random_factors(256, 170, 170, 8, id);
    }
    say("\nbench: 256x170 8-bit slices, k=50; device = kernels only (cudaEvent), wall = whole call; "
        "median of warm runs; cold = first call incl. uploads\n");
    say("%-7s %-12s %6s %12s %12s %12s %12s %14s\n", "backend", "case", "batch", "device_ms", "device_min",
        "wall_ms", "cold_ms", "us_per_slice");
    const int sizes[] = {1, 8, 64, 181, 512};
    double devms[2][5] = {{0}};
    for (int s = 0; s < 5; s++)
        for (int b = 0; b < nb; b++) {
            timing t = {0, 0, 0, 0};
            int reps = sizes[s] >= 181 ? 30 : 100;
            if (bench(bk[b], vol, sizes[s], 50, reps, &t, 0)) {
                say("FAIL %s batch %d: %s\n", bk[b]->name, sizes[s], ss_error());
                g_fail++;
                continue;
            }
            devms[bk[b] == &ss_backend_cublas][s] = t.dev_med;
            say("%-7s %-12s %6d %12.4f %12.4f %12.4f %12.3f %14.2f\n", bk[b]->name,
                sizes[s] == 1 ? "single" : "batch", sizes[s], t.dev_med, t.dev_min,
                t.wall_med, t.cold_wall, t.dev_med * 1e3 / sizes[s]);
        }
    volume_batch(bk, nb, 0);
    say("\ngoals:\n");
    say("volume 181 x 217x181 at k=50, one batch, device time < 1 ms: cuda %.4f ms %s, cublas %.4f ms %s\n",
        g_vol_ms[0], g_vol_ms[0] > 0 && g_vol_ms[0] < 1.0 ? "PASS" : "MISS", g_vol_ms[1],
        g_vol_ms[1] > 0 && g_vol_ms[1] < 1.0 ? "PASS" : "MISS");
    if (g_vol_ms[0] > 0 && g_vol_ms[1] > 0)
        say("volume cuda / cublas device time: %.2fx %s (goal: within 2x)\n", g_vol_ms[0] / g_vol_ms[1],
            g_vol_ms[0] / g_vol_ms[1] <= 2.0 ? "PASS" : "MISS");
    else
        say("volume cuda / cublas device time: n/a (a backend was not timed)\n");
    for (int s = 0; s < 5; s++) {
        if (!(devms[0][s] > 0 && devms[1][s] > 0)) {
            say("cuda / cublas device time, batch %3d: n/a (a backend was not timed)\n", sizes[s]);
            continue;
        }
        double ratio = devms[0][s] / devms[1][s];
        say("cuda / cublas device time, batch %3d: %.2fx %s (goal: within 2x)\n", sizes[s], ratio,
            ratio <= 2.0 ? "PASS" : "MISS");
    }
    double gflop = 2.0 * 256 * 170 * 50 * 181 / 1e9;
    say("batch of 181 256x170 slices: cuda %.1f GFLOP/s, cublas %.1f GFLOP/s (%.3f GFLOP)\n",
        devms[0][3] > 0 ? gflop / (devms[0][3] * 1e-3) : 0, devms[1][3] > 0 ? gflop / (devms[1][3] * 1e-3) : 0, gflop);
    ss_gpu_stats st;
    ss_gpu_get_stats(&st);
    say("device cache: %d slices, %.1f MiB resident, %lld uploads, %lld hits, %lld evictions\n", st.resident_slices,
        st.resident_bytes / 1048576.0, st.uploads, st.hits, st.evictions);
    for (int i = 0; i < NB; i++) factors_free(vol[i]); /* 512 slices: 88 MiB the sweep does not need */
    free(vol);
    if (nb == 2) crossover_sweep(bk);
    else say("crossover sweep: not run (cuBLAS missing: auto's first choice)\n");
    say("\n");
    check_failure_policy(bk, nb);
    say("all checks: %d passed, %d failed\n", g_pass, g_fail);
    ss_gpu_release();
    for (int i = 0; i < nreal; i++) factors_free(real[i]);
    fclose(g_out);
    return g_fail ? 1 : 0;
}
