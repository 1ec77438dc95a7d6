/* gpu_core.cu - device probe, resident-factor LRU, staging buffers and the batch dispatcher of the GPU backends */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu_internal.cuh"

#define SS_GPU_BUCKETS 1024
#define SS_GPU_DEFAULT_BUDGET ((size_t)256 << 20)

/* One slice's factors on the device: U (m x ldu) then W (rank x ldw) in one
 * allocation (ss_gm_factor_layout: both 256-byte aligned, rows of 16 bytes),
 * keyed by the content id (same id = same factors). */
typedef struct entry {
    char id[65];
    int m, n, rank;
    ss_gm_layout lay;
    float *d;          /* U at d, W at d + lay.w_off */
    size_t bytes;
    unsigned long long epoch; /* batch that last used it: not evictable during that batch */
    struct entry *prev, *next; /* LRU list, head = most recently used */
    struct entry *hnext;       /* hash chain, or the temporary list */
} entry;

/* Guards g and every CUDA call of the batch path. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static size_t g_budget = SS_GPU_DEFAULT_BUDGET;

static struct {
    int ready;                 /* ctx created */
    ss_gf_state fail;          /* per backend; read lock-free (gpu_fail.h) */
    ss_gf_class pend_class;    /* the running batch's first failure: its class */
    char pend_msg[200];        /* and its message ("" while none) */
    ss_gpu_ctx ctx;
    entry *buckets[SS_GPU_BUCKETS];
    entry *head, *tail;
    entry *temps;              /* uploads for this batch only (empty id) */
    size_t bytes;
    int count;
    unsigned long long epoch;
    long long uploads, hits, evictions;
} g;

/* ---- runtime detection ---------------------------------------------------- */

static pthread_once_t g_probe_once = PTHREAD_ONCE_INIT;
static int g_probe_ok;
static char g_probe_reason[256];

static void probe(void) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        const char *why = cudaGetErrorString(e);
        if (e == cudaErrorInsufficientDriver)
            why = "CUDA driver is older than the runtime, or no driver";
        else if (e == cudaErrorNoDevice)
            why = "no CUDA device";
        else if (e == cudaErrorStubLibrary)
            why = "only the CUDA stub driver is installed";
        snprintf(g_probe_reason, sizeof g_probe_reason, "no GPU: %s (%s)", why, cudaGetErrorName(e));
        cudaGetLastError(); /* the runtime keeps the error otherwise */
        return;
    }
    if (count <= 0) {
        snprintf(g_probe_reason, sizeof g_probe_reason, "no GPU: no CUDA device found");
        return;
    }
    g_probe_ok = 1;
}

/* Backend b (SS_GF_CUDA / SS_GF_CUBLAS) usable? Lock-free after the first
 * probe: /backends and `auto` call this on the HTTP polling thread, and g_mu
 * is held by a running batch through its synchronisation, which would stall
 * every connection behind it. */
extern "C" int ss_gpu_backend_available(int b, const char **reason) {
    pthread_once(&g_probe_once, probe);
    if (!g_probe_ok) {
        if (reason) *reason = g_probe_reason;
        return 0;
    }
#ifdef SS_GPU_NO_CUBLAS
    if (b == SS_GF_CUBLAS) {
        if (reason) *reason = "cuBLAS missing: this build could not link it (SS_GPU_NO_CUBLAS)";
        return 0;
    }
#endif
    if (ss_gf_failed(&g.fail, b, reason)) return 0;
    if (reason) *reason = NULL;
    return 1;
}

/* The device is usable while one backend is. */
extern "C" int ss_gpu_available(const char **reason) {
    return ss_gpu_backend_available(SS_GF_CUDA, reason) || ss_gpu_backend_available(SS_GF_CUBLAS, reason);
}

/* ---- errors (called with g_mu held) -------------------------------------- */

void ss_gpu_note_failure(ss_gf_class cls, const char *msg) {
    if (g.pend_msg[0]) return; /* the batch's first failure is the cause */
    g.pend_class = cls;
    snprintf(g.pend_msg, sizeof g.pend_msg, "%s", msg);
}

/* Codes that say our kernels cannot run on this GPU or build: every batch of
 * the backend would fail the same way. */
static int backend_error(cudaError_t e) {
    switch (e) {
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorInvalidDeviceFunction:
    case cudaErrorInvalidKernelImage:
    case cudaErrorInvalidPtx:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorJitCompilerNotFound:
    case cudaErrorLaunchOutOfResources:
    case cudaErrorSharedObjectInitFailed:
        return 1;
    default:
        return 0;
    }
}

int ss_gpu_cuda_fail(cudaError_t e, const char *what, const char *file, int line) {
    cudaGetLastError(); /* clear a non-sticky error so the next call starts clean */
    if (e == cudaErrorMemoryAllocation)
        return ss_fail(SS_ENOMEM, "%s:%d: %s: %s", file, line, what, cudaGetErrorString(e));
    char msg[200];
    snprintf(msg, sizeof msg, "%s:%d: %s (%s)", file, line, cudaGetErrorString(e), cudaGetErrorName(e));
    ss_gpu_note_failure(backend_error(e) ? SS_GF_BACKEND : SS_GF_CALL, msg);
    return ss_fail(SS_EUNAVAIL, "%s:%d: %s: %s (%s)", file, line, what, cudaGetErrorString(e),
                   cudaGetErrorName(e));
}

/* After a batch failed with SS_EUNAVAIL: is the context still good? The
 * failed call's own error was cleared; a sticky one makes the synchronise
 * (or the error check after it) fail again. *why gets the error. */
static int context_ok(cudaError_t *why) {
    cudaGetLastError();
    cudaError_t e = cudaStreamSynchronize(g.ctx.stream);
    if (e == cudaSuccess) e = cudaGetLastError();
    *why = e;
    return e == cudaSuccess;
}

/* ---- buffers ------------------------------------------------------------- */

int ss_gpu_grow_host(void **p, size_t *cap, size_t bytes) {
    if (bytes <= *cap && *p) return 0;
    size_t want = bytes < 4096 ? 4096 : bytes + bytes / 2;
    if (*p) cudaFreeHost(*p);
    *p = NULL;
    *cap = 0;
    SS_CU(cudaHostAlloc(p, want, cudaHostAllocDefault));
    *cap = want;
    return 0;
}

int ss_gpu_grow_dev(void **p, size_t *cap, size_t bytes) {
    if (bytes <= *cap && *p) return 0;
    size_t want = bytes < 4096 ? 4096 : bytes + bytes / 2;
    if (*p) cudaFree(*p);
    *p = NULL;
    *cap = 0;
    SS_CU(cudaMalloc(p, want));
    *cap = want;
    return 0;
}

static int ctx_init(void) {
    if (g.ready) return 0;
    ss_gpu_ctx *c = &g.ctx;
    memset(c, 0, sizeof *c);
    cudaError_t e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) return ss_gpu_cuda_fail(e, "cudaStreamCreateWithFlags", __FILE__, __LINE__);
    /* A later failure destroys what was made: the next batch starts over. */
    if ((e = cudaEventCreate(&c->ev0)) == cudaSuccess) {
        if ((e = cudaEventCreate(&c->ev1)) == cudaSuccess) {
            g.ready = 1;
            return 0;
        }
        cudaEventDestroy(c->ev0);
    }
    cudaStreamDestroy(c->stream);
    memset(c, 0, sizeof *c);
    return ss_gpu_cuda_fail(e, "cudaEventCreate", __FILE__, __LINE__);
}

/* ---- resident factors (LRU) ---------------------------------------------- */

static unsigned bucket_of(const char *id) {
    unsigned h = 2166136261u; /* FNV-1a */
    for (; *id; id++) h = (h ^ (unsigned char)*id) * 16777619u;
    return h % SS_GPU_BUCKETS;
}

static void lru_unlink(entry *e) {
    if (e->prev) e->prev->next = e->next;
    else g.head = e->next;
    if (e->next) e->next->prev = e->prev;
    else g.tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(entry *e) {
    e->prev = NULL;
    e->next = g.head;
    if (g.head) g.head->prev = e;
    g.head = e;
    if (!g.tail) g.tail = e;
}

static void entry_destroy(entry *e) {
    cudaFree(e->d); /* errors ignored: nothing to do about them here (a broken context shows at the next sync) */
    free(e);
}

static void evict(entry *e) {
    lru_unlink(e);
    entry **pp = &g.buckets[bucket_of(e->id)];
    while (*pp != e) pp = &(*pp)->hnext;
    *pp = e->hnext;
    g.bytes -= e->bytes;
    g.count--;
    g.evictions++;
    entry_destroy(e);
}

/* Evicts least recently used entries not used by the current batch until
 * `limit` bytes or fewer are resident (or nothing evictable is left). */
static void trim_to(size_t limit) {
    entry *e = g.tail;
    while (e && g.bytes > limit) {
        entry *prev = e->prev;
        if (e->epoch != g.epoch) evict(e);
        e = prev;
    }
}

/* Sets *d to f's factors on the device, uploading them on a miss. */
static int resident(const ss_factors *f, ss_gm_job *job) {
    entry *e = NULL;
    if (f->id[0]) {
        for (e = g.buckets[bucket_of(f->id)]; e; e = e->hnext)
            if (!strcmp(e->id, f->id) && e->m == f->m && e->n == f->n && e->rank == f->rank) break;
    }
    if (e) {
        g.hits++;
        e->epoch = g.epoch;
        lru_unlink(e);
        lru_push_front(e);
    } else {
        ss_gm_layout lay = ss_gm_factor_layout(f->m, f->n, f->rank);
        size_t bytes = lay.floats * sizeof(float);
        e = (entry *)calloc(1, sizeof *e);
        if (!e) return ss_fail(SS_ENOMEM, "out of memory for a device cache entry");
        if (f->id[0] && bytes <= g_budget) trim_to(g_budget - bytes);
        cudaError_t ce = cudaMalloc((void **)&e->d, bytes);
        if (ce == cudaErrorMemoryAllocation) { /* make room and try once more */
            cudaGetLastError();
            trim_to(0);
            ce = cudaMalloc((void **)&e->d, bytes);
        }
        if (ce != cudaSuccess) {
            free(e);
            return ss_gpu_cuda_fail(ce, "cudaMalloc(factors)", __FILE__, __LINE__);
        }
        e->m = f->m;
        e->n = f->n;
        e->rank = f->rank;
        e->lay = lay;
        e->bytes = bytes;
        e->epoch = g.epoch;
        /* Pageable sources: the copy is staged before the call returns, and
         * stream order puts it before this batch's kernels. Rows land on the
         * padded strides; the pads are never read (columns < k, < n). */
        cudaError_t c1 = cudaMemcpy2DAsync(e->d, (size_t)lay.ldu * sizeof(float), f->U, (size_t)f->rank * sizeof(float),
                                           (size_t)f->rank * sizeof(float), (size_t)f->m, cudaMemcpyHostToDevice,
                                           g.ctx.stream);
        cudaError_t c2 = c1 == cudaSuccess
                             ? cudaMemcpy2DAsync(e->d + lay.w_off, (size_t)lay.ldw * sizeof(float), f->W,
                                                 (size_t)f->n * sizeof(float), (size_t)f->n * sizeof(float),
                                                 (size_t)f->rank, cudaMemcpyHostToDevice, g.ctx.stream)
                             : c1;
        if (c2 != cudaSuccess) {
            entry_destroy(e);
            return ss_gpu_cuda_fail(c2, "cudaMemcpy2DAsync(factors)", __FILE__, __LINE__);
        }
        g.uploads++;
        if (f->id[0]) {
            memcpy(e->id, f->id, sizeof e->id);
            e->id[64] = '\0';
            unsigned b = bucket_of(e->id);
            e->hnext = g.buckets[b];
            g.buckets[b] = e;
            lru_push_front(e);
            g.bytes += bytes;
            g.count++;
        } else {
            e->hnext = g.temps;
            g.temps = e;
        }
    }
    job->U = e->d;
    job->W = e->d + e->lay.w_off;
    job->ldu = e->lay.ldu;
    job->ldw = e->lay.ldw;
    return 0;
}

static void end_batch(void) {
    while (g.temps) {
        entry *e = g.temps;
        g.temps = e->hnext;
        entry_destroy(e);
    }
    g.epoch++; /* unpin this batch's entries before trimming */
    trim_to(g_budget);
}

/* ---- the batch ----------------------------------------------------------- */

#ifdef SS_GPU_FAULT_INJECTION
int ss_gpu_fault_next = SS_GPU_FAULT_NONE;
#endif

static int valid_item(const ss_gpu_item *it) {
    const ss_factors *f = it->f;
    if (!f || !f->U || !f->W || f->m <= 0 || f->n <= 0 || f->rank <= 0)
        return ss_fail(SS_EINVAL, "factors missing or empty");
    if (!it->out_f32 && f->bit_depth != 8 && f->bit_depth != 16)
        return ss_fail(SS_EINVAL, "bit depth %d is not 8 or 16", f->bit_depth);
    if (it->k < 1 || it->k > f->rank)
        return ss_fail(SS_EINVAL, "k=%d is not in 1..%d", it->k, f->rank);
    if (!it->out && !it->out_f32) return ss_fail(SS_EINVAL, "no output buffer");
    return 0;
}

/* Runs the valid items; idx[j] maps job j to its item. Called with g_mu held. */
static int run_locked(int use_cublas, ss_gpu_item *items, const int *idx, int nj, double *device_ms) {
    ss_gpu_ctx *c = &g.ctx;
    int rc = ctx_init();
    if (rc) return rc;
    size_t jb = c->jobs_cap * sizeof(ss_gm_job);
    if ((rc = ss_gpu_grow_host((void **)&c->h_jobs, &jb, (size_t)nj * sizeof(ss_gm_job)))) return rc;
    size_t jd = c->jobs_cap * sizeof(ss_gm_job);
    if ((rc = ss_gpu_grow_dev((void **)&c->d_jobs, &jd, (size_t)nj * sizeof(ss_gm_job)))) return rc;
    c->jobs_cap = (jb < jd ? jb : jd) / sizeof(ss_gm_job);

    for (int j = 0; j < nj; j++) {
        const ss_gpu_item *it = &items[idx[j]];
        ss_gm_job *job = &c->h_jobs[j];
        memset(job, 0, sizeof *job);
        if ((rc = resident(it->f, job))) return rc;
        job->m = it->f->m;
        job->n = it->f->n;
        job->ldc = ss_gm_ldc(job->n);
        job->k = it->k;
        job->maxval = it->f->bit_depth == 8 ? 255 : 65535;
        job->out_bytes = it->out_f32 ? SS_GM_OUT_F32 : it->f->bit_depth == 8 ? 1 : 2; /* 8-bit: half the bytes over PCIe */
    }
    size_t out_total = 0;
    long long tiles = ss_gm_pack(c->h_jobs, nj, &out_total);
    if (tiles > INT_MAX) return ss_fail(SS_EINVAL, "batch too large (%lld tiles)", tiles);
    size_t oh = c->out_cap, od = c->out_cap;
    if ((rc = ss_gpu_grow_host((void **)&c->h_out, &oh, out_total))) return rc;
    if ((rc = ss_gpu_grow_dev((void **)&c->d_out, &od, out_total))) return rc;
    /* The copy back takes the padding between jobs' outputs, which no kernel
     * writes: zero a new buffer (a grown one has a new capacity; its address
     * may be the old one's) once, so that copy reads defined bytes
     * (compute-sanitizer initcheck). */
    if (od != c->out_cap) SS_CU(cudaMemsetAsync(c->d_out, 0, od, c->stream));
    c->out_cap = oh < od ? oh : od;
    size_t cfl = 0;
    c->pixel_jobs = 0;
    for (int j = 0; j < nj; j++) {
        ss_gm_job *job = &c->h_jobs[j];
        job->out = c->d_out + job->out_off;
        if (job->out_bytes != SS_GM_OUT_F32) c->pixel_jobs++;
        if (use_cublas && job->out_bytes != SS_GM_OUT_F32) {
            job->C = (const float *)(uintptr_t)cfl; /* offset until d_c is sized */
            cfl += ss_gm_c_floats(job->m, job->n);
        }
    }
    if (use_cublas) {
        size_t cb = c->c_cap * sizeof(float);
        if (cfl && (rc = ss_gpu_grow_dev((void **)&c->d_c, &cb, cfl * sizeof(float)))) return rc;
        c->c_cap = cb / sizeof(float);
        /* A float job's GEMM writes its output staging (256-byte aligned, rows
         * of ldc): no product buffer, no conversion, copied back as it is. */
        for (int j = 0; j < nj; j++) {
            ss_gm_job *job = &c->h_jobs[j];
            job->C = job->out_bytes == SS_GM_OUT_F32 ? (const float *)job->out : c->d_c + (uintptr_t)job->C;
        }
        if ((rc = ss_gpu_prepare_cublas(c, nj))) return rc; /* set-up outside the timed region */
    }
#ifdef SS_GPU_FAULT_INJECTION
    {
        int fault = ss_gpu_fault_next;
        ss_gpu_fault_next = SS_GPU_FAULT_NONE;
        if (fault == SS_GPU_FAULT_CALL)
            return ss_gpu_cuda_fail(cudaErrorInvalidValue, "injected fault", __FILE__, __LINE__);
        if (fault == SS_GPU_FAULT_BACKEND)
            return ss_gpu_cuda_fail(cudaErrorNoKernelImageForDevice, "injected fault", __FILE__, __LINE__);
        if (fault == SS_GPU_FAULT_CONTEXT) /* the kernel reads an unmapped address: a sticky illegal address */
            for (int j = 0; j < nj; j++) c->h_jobs[j].U = (const float *)(uintptr_t)256;
    }
#endif
    SS_CU(cudaMemcpyAsync(c->d_jobs, c->h_jobs, (size_t)nj * sizeof(ss_gm_job), cudaMemcpyHostToDevice, c->stream));
    SS_CU(cudaEventRecord(c->ev0, c->stream));
    rc = use_cublas ? ss_gpu_launch_cublas(c, nj, tiles) : ss_gpu_launch_recon(c, nj, tiles);
    if (rc) return rc;
    SS_CU(cudaEventRecord(c->ev1, c->stream));
    SS_CU(cudaMemcpyAsync(c->h_out, c->d_out, out_total, cudaMemcpyDeviceToHost, c->stream));
    SS_CU(cudaStreamSynchronize(c->stream));
    float ms = 0;
    SS_CU(cudaEventElapsedTime(&ms, c->ev0, c->ev1));
    if (device_ms) *device_ms = ms;

    for (int j = 0; j < nj; j++) {
        const ss_gm_job *job = &c->h_jobs[j];
        ss_gpu_item *it = &items[idx[j]];
        size_t px = (size_t)job->m * (size_t)job->n;
        const unsigned char *src = c->h_out + job->out_off;
        if (job->out_bytes == SS_GM_OUT_F32) /* rows of ldc floats -> rows of n */
            for (int r = 0; r < job->m; r++)
                memcpy(it->out_f32 + (size_t)r * job->n, (const float *)src + (size_t)r * job->ldc,
                       (size_t)job->n * sizeof(float));
        else if (job->out_bytes == 1)
            for (size_t p = 0; p < px; p++) it->out[p] = src[p];
        else
            memcpy(it->out, src, px * sizeof(uint16_t));
        it->status = 0;
    }
    return 0;
}

extern "C" int ss_gpu_run_batch(const ss_backend *b, ss_gpu_item *items, int n, double *device_ms) {
    if (device_ms) *device_ms = 0;
    if (n < 0 || (n > 0 && !items)) return ss_fail(SS_EINVAL, "bad batch");
    int use_cublas;
    if (b == &ss_backend_cublas) use_cublas = SS_GF_CUBLAS;
    else if (b == &ss_backend_cuda) use_cublas = SS_GF_CUDA;
    else {
        for (int i = 0; i < n; i++) items[i].status = SS_EINVAL;
        return ss_fail(SS_EINVAL, "backend %s is not a GPU backend", b ? b->name : "(null)");
    }
    const char *reason = NULL;
    if (!ss_gpu_backend_available(use_cublas, &reason)) {
        for (int i = 0; i < n; i++) items[i].status = SS_EUNAVAIL;
        return ss_fail(SS_EUNAVAIL, "%s", reason);
    }
    int *idx = (int *)malloc((size_t)(n > 0 ? n : 1) * sizeof *idx);
    if (!idx) {
        for (int i = 0; i < n; i++) items[i].status = SS_ENOMEM;
        return ss_fail(SS_ENOMEM, "out of memory for a batch of %d", n);
    }
    int nj = 0;
    for (int i = 0; i < n; i++) {
        items[i].status = valid_item(&items[i]);
        if (items[i].status == 0) idx[nj++] = i;
    }
    int rc = 0;
    if (nj > 0) {
        pthread_mutex_lock(&g_mu);
        g.pend_msg[0] = '\0';
        if (ss_gf_failed(&g.fail, use_cublas, &reason)) rc = ss_fail(SS_EUNAVAIL, "%s", reason);
        else rc = run_locked(use_cublas, items, idx, nj, device_ms);
        /* A failed batch may have left copies queued (factor uploads, the
         * descriptors from pinned memory): the synchronise lets them finish
         * before end_batch frees this batch's temporary factors and before
         * the next batch rewrites the pinned buffers, and it tells whether
         * the context survived: a bad batch fails alone, a kernel the GPU
         * cannot run stops its backend, a broken context stops both. */
        if (rc && g.pend_msg[0]) {
            cudaError_t why = cudaSuccess;
            int ok = !g.ready || context_ok(&why);
            char msg[320];
            if (ok) snprintf(msg, sizeof msg, "%s", g.pend_msg);
            else
                snprintf(msg, sizeof msg, "%s; then the context broke: %s (%s)", g.pend_msg, cudaGetErrorString(why),
                         cudaGetErrorName(why));
            ss_gf_apply(&g.fail, ss_gf_decide(g.pend_class, ok), use_cublas, msg);
        } else if (rc && g.ready) {
            cudaStreamSynchronize(g.ctx.stream); /* an SS_ENOMEM or SS_EINVAL batch: only drain */
            cudaGetLastError();
        }
        end_batch();
        pthread_mutex_unlock(&g_mu);
        if (rc)
            for (int j = 0; j < nj; j++) items[idx[j]].status = rc;
    }
    free(idx);
    return rc;
}

extern "C" void ss_gpu_set_cache_bytes(size_t bytes) {
    pthread_mutex_lock(&g_mu);
    g_budget = bytes;
    trim_to(g_budget);
    pthread_mutex_unlock(&g_mu);
}

extern "C" void ss_gpu_get_stats(ss_gpu_stats *st) {
    pthread_mutex_lock(&g_mu);
    st->uploads = g.uploads;
    st->hits = g.hits;
    st->evictions = g.evictions;
    st->resident_bytes = g.bytes;
    st->resident_slices = g.count;
    pthread_mutex_unlock(&g_mu);
}

extern "C" void ss_gpu_release(void) {
    pthread_mutex_lock(&g_mu);
    while (g.head) evict(g.head);
    if (g.ready) {
        ss_gpu_ctx *c = &g.ctx;
        cudaStreamSynchronize(c->stream);
        ss_gpu_release_cublas(c);
        free(c->keys);
        cudaFreeHost(c->h_jobs);
        cudaFree(c->d_jobs);
        cudaFreeHost(c->h_out);
        cudaFree(c->d_out);
        cudaFree(c->d_c);
        cudaFreeHost(c->h_ptrs);
        cudaFree(c->d_ptrs);
        cudaEventDestroy(c->ev0);
        cudaEventDestroy(c->ev1);
        cudaStreamDestroy(c->stream);
        cudaGetLastError();
        memset(c, 0, sizeof *c);
        g.ready = 0;
    }
    pthread_mutex_unlock(&g_mu);
}
