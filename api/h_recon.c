/* h_recon.c - /reconstruct and /quality: validation, ETag/304, response cache, jobs on the pool or GPU queue */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/errors.h"
#include "api/http.h"
#include "api/json.h"
#include "util/clock.h"
#include "util/error.h"
#include "engine/png.h"
#include "engine/quality.h"
#include "api/json.h"

/* One /reconstruct or /quality request on its way through the queues. */
typedef struct recon_job {
    ss_pool_job pj; /* first: the pool hands this pointer back */
    ss_req *r;
    ss_server *srv;
    int quality;              /* 1: /quality JSON, 0: /reconstruct PNG */
    char id[65];
    int k;
    const ss_backend *be;
    int window, out_bits;
    double wc, ww;
    char key[320], etag[40];
    const ss_factors *f;      /* store reference while held */
    uint16_t *px;             /* m*n reconstructed samples at the source depth */
    int pixels_ready;         /* set when the GPU queue produced px */
    int to_gpu;               /* a worker only loads the factors, then hands j to the GPU queue */
    double deadline;          /* of the time queued, pool and GPU queue together */
    ss_gpu_job gj;
    double queue_ms, kernel_ms;
} recon_job;

/* Everything validated from the query string. */
typedef struct recon_params {
    ss_slice_info info;
    int k;
    const ss_backend *be;
    int be_idx;
    int bits, window;
    double wc, ww;
} recon_params;


static int backend_index(const ss_backend *be) {
    for (int i = 0; i < ss_backend_count(); i++)
        if (ss_backend_at(i) == be) return i;
    return -1;
}

/* Strict decimal integer; -1 when s is not one in 0..1e9. */
static long parse_uint(const char *s) {
    long v = 0;
    if (!s || !*s) return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
        if (v > 1000000000L) return -1;
    }
    return v;
}

static int parse_double(const char *s, double *out) {
    char *end = NULL;
    if (!s || !*s) return 0;
    *out = strtod(s, &end);
    return *end == 0 && isfinite(*out);
}

/* Validates id, k, backend (and for /reconstruct bits and window) in the
 * order API.md's error table implies. Returns 1, or 0 after answering. */
static int parse_params(ss_req *r, int with_output, recon_params *p, enum MHD_Result *ret) {
    memset(p, 0, sizeof *p);
    const char *id = ss_arg(r, "id");
    if (!id || !ss_valid_id(id)) {
        *ret = ss_reply_error(r, "invalid_id", "id must match [A-Za-z0-9_-]{1,64}");
        return 0;
    }
    int rc = ss_store_info_scalars(r->srv->store, id, &p->info);
    if (rc) {
        *ret = ss_reply_engine(r, rc, SS_FROM_LOOKUP, "info");
        return 0;
    }
    int rank = p->info.rank;
    const char *ks = ss_arg(r, "k");
    long k = ks ? parse_uint(ks) : rank;
    if (k < 1 || k > rank) {
        *ret = ss_reply_error(r, "invalid_k", "k must be an integer in 1..%d", rank);
        return 0;
    }
    p->k = (int)k;
    const char *bn = ss_arg(r, "backend");
    if (bn && strcmp(bn, "auto") != 0) {
        p->be = ss_backend_find(bn);
        if (!p->be) {
            *ret = ss_reply_error(r, "invalid_backend", "unknown backend; valid: %s", ss_backend_names());
            return 0;
        }
    } else {
        /* auto's choice depends on the dimensions and k only, so the ETag of an
         * auto request is known before anything runs. */
        ss_factors shape = {.m = p->info.height, .n = p->info.width, .rank = rank,
                            .nsv = p->info.nsv, .bit_depth = p->info.bit_depth};
        p->be = ss_backend_choose(&shape, p->k);
    }
    p->be_idx = backend_index(p->be);
    if (!with_output) return 1;
    return ss_parse_png_output(r, &p->bits, &p->window, &p->wc, &p->ww, ret);
}

int ss_parse_png_output(ss_req *r, int *bits_out, int *window, double *wc, double *ww, enum MHD_Result *ret) {
    const char *bits = ss_arg(r, "bits");
    if (bits && strcmp(bits, "8") != 0 && strcmp(bits, "16") != 0) {
        *ret = ss_reply_error(r, "invalid_parameter", "bits must be 8 or 16");
        return 0;
    }
    *bits_out = bits ? atoi(bits) : 0;
    const char *c = ss_arg(r, "window-center"), *w = ss_arg(r, "window-width");
    if (c || w) {
        if (!c || !w || !parse_double(c, wc) || !parse_double(w, ww) || !(*ww > 0)) {
            *ret = ss_reply_error(r, "invalid_parameter",
                                  "window-center and window-width go together: numbers, width > 0");
            return 0;
        }
        *window = 1;
    }
    return 1;
}

static int check_available(ss_req *r, const ss_backend *be, enum MHD_Result *ret) {
    const char *reason = NULL;
    if (be->available(&reason)) return 1;
    *ret = ss_reply_error(r, "backend_unavailable", "backend %s is unavailable: %s", be->name,
                          reason ? reason : "unknown reason");
    return 0;
}

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* True when the request's If-None-Match lists etag (or "*"); weak forms compare too. */
static int none_match(ss_req *r, const char *etag) {
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "If-None-Match");
    if (!h) return 0;
    size_t elen = strlen(etag);
    while (*h) {
        while (*h == ' ' || *h == ',' || *h == '\t') h++;
        if (!strncmp(h, "W/", 2)) h += 2;
        if (*h == '*') return 1;
        size_t n = strcspn(h, ",");
        while (n && (h[n - 1] == ' ' || h[n - 1] == '\t')) n--;
        if (n == elen && !memcmp(h, etag, n)) return 1;
        h += strcspn(h, ",");
    }
    return 0;
}

static int wants_no_cache(ss_req *r) {
    const char *cc = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Cache-Control");
    const char *pragma = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Pragma");
    return (cc && (strcasestr(cc, "no-cache") || strcasestr(cc, "no-store"))) ||
           (pragma && strcasestr(pragma, "no-cache"));
}

static const char *cache_control(const ss_server *srv) {
    /* The id names the content, so a rendering never changes: immutable,
     * unless reads need a key (then only the client may keep it). */
    return srv->cfg->auth_reads ? "private, max-age=3600" : "public, max-age=31536000, immutable";
}

static void add_png_headers(struct MHD_Response *resp, const ss_server *srv, const char *etag,
                            const char *backend, const char *timing) {
    MHD_add_response_header(resp, "Content-Type", "image/png");
    MHD_add_response_header(resp, "ETag", etag);
    MHD_add_response_header(resp, "Cache-Control", cache_control(srv));
    MHD_add_response_header(resp, "X-Backend", backend);
    if (timing) MHD_add_response_header(resp, "Server-Timing", timing);
}

static void entry_release(void *cls) { ss_rc_entry_unref(cls); }

/* A response whose body is the cache entry (zero copy; the entry's reference
 * passes to the response). */
static struct MHD_Response *entry_response(ss_server *srv, ss_rc_entry *e, const char *timing) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback_cls(e->len, e->body, entry_release, e);
    if (!resp) {
        ss_rc_entry_unref(e);
        return NULL;
    }
    add_png_headers(resp, srv, e->etag, e->backend, timing);
    return resp;
}

static void destroy_shared(void *resp) { MHD_destroy_response(resp); }
static void release_entry(void *e) { ss_rc_entry_unref(e); }

/* A cache hit: the entry's prebuilt response (built on its first hit) is
 * queued as is, with no allocation; the request keeps the entry, and so the
 * body, alive until it completes. */
static enum MHD_Result reply_hit(ss_req *r, ss_rc_entry *e) {
    struct MHD_Response *resp = __atomic_load_n((struct MHD_Response **)&e->shared, __ATOMIC_ACQUIRE);
    if (!resp) {
        resp = MHD_create_response_from_buffer(e->len, e->body, MHD_RESPMEM_PERSISTENT);
        if (!resp) {
            ss_rc_entry_unref(e);
            return ss_reply(r, 500, NULL);
        }
        add_png_headers(resp, r->srv, e->etag, e->backend, "cache;desc=hit, kernel;dur=0, encode;dur=0");
        ss_add_cors_headers(r->srv, resp);
        e->shared_free = destroy_shared; /* the same value from every thread */
        void *expected = NULL;
        if (!__atomic_compare_exchange_n(&e->shared, &expected, (void *)resp, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE)) {
            MHD_destroy_response(resp); /* another thread attached one first */
            resp = expected;
        }
    }
    r->release = release_entry;
    r->release_arg = e;
    return ss_reply_shared(r, 200, resp);
}

/* ---- the job's second half: pixels -> PNG or quality JSON ---------------- */

static void finish(recon_job *j) {
    ss_server *srv = j->srv;
    ss_req *r = j->r;
    const ss_factors *f = j->f;
    struct MHD_Response *resp = NULL;
    int status = 200;
    size_t n = (size_t)f->m * (size_t)f->n;
    if (j->quality) {
        ss_quality q;
        if (ss_quality_compute(f, j->k, j->px, &q) != 0) {
            status = ss_api_status("internal");
            resp = ss_resp_errorf("internal", "internal error (request %s): quality: %s", r->rid, ss_error());
        } else {
            resp = ss_resp_json(ss_json_quality(j->id, j->be->name, &q));
        }
    } else {
        double t0 = ss_now();
        uint16_t *out = j->px;
        if (j->window) {
            ss_pixels_window(j->px, n, j->wc, j->ww, j->px);
            if (j->out_bits == 16) ss_pixels_convert_bits(j->px, n, 8, 16, j->px);
        } else if (j->out_bits != f->bit_depth) {
            ss_pixels_convert_bits(j->px, n, f->bit_depth, j->out_bits, j->px);
        }
        unsigned char *png = NULL;
        size_t len = 0;
        int rc = ss_png_encode(out, f->n, f->m, j->out_bits, &png, &len);
        double encode_ms = (ss_now() - t0) * 1e3;
        if (rc) {
            status = ss_api_status("internal");
            resp = ss_resp_errorf("internal", "internal error (request %s): encode: %s", r->rid, ss_error());
        } else {
            char timing[160];
            snprintf(timing, sizeof timing, "queue;dur=%.3f, kernel;dur=%.3f, encode;dur=%.3f", j->queue_ms,
                     j->kernel_ms, encode_ms);
            ss_rc_entry *e = ss_respcache_put(srv->rc, j->key, j->id, png, len, j->be->name, j->etag, timing);
            resp = e ? entry_response(srv, e, timing) : NULL;
        }
    }
    ss_store_release(srv->store, j->f);
    free(j->px);
    free(j);
    if (status != 200) fprintf(stderr, "svdslice: %s: %s\n", r->rid, ss_error());
    ss_job_end(r, status, resp);
}

/* Frees what j holds; returns its request, which the caller answers. */
static ss_req *drop_job(recon_job *j) {
    ss_req *r = j->r;
    if (j->f) ss_store_release(j->srv->store, j->f);
    free(j->px);
    free(j);
    return r;
}

/* Ends a job early with engine error rc raised at `from` (SS_FROM_*). */
static void fail_engine(recon_job *j, int rc, int from) {
    const char *code = ss_api_code_of(rc, from), *backend = j->be->name;
    ss_req *r = drop_job(j);
    if (!strcmp(code, "backend_unavailable"))
        ss_job_fail(r, code, "backend %s is unavailable: %s", backend, ss_error());
    else if (rc == SS_ETIMEDOUT)
        ss_job_fail(r, code, "the job waited past its deadline; retry later");
    else if (rc == SS_EBUSY)
        ss_job_fail(r, code, "GPU queue full; retry later");
    else if (!strcmp(code, "overloaded")) /* a queue that is stopping */
        ss_job_fail(r, code, "server is shutting down");
    else
        ss_job_fail_engine(r, rc, from, "reconstruct");
}

/* Allocates the pixels for j->f; 0 or it has answered. */
static int alloc_pixels(recon_job *j) {
    j->px = malloc((size_t)j->f->m * (size_t)j->f->n * sizeof *j->px);
    if (!j->px) {
        ss_req *r = drop_job(j);
        ss_job_fail(r, "internal", "internal error (request %s): out of memory", r->rid);
        return -1;
    }
    return 0;
}

/* Acquires the factors (a file read on a cache miss) and allocates the pixels; 0 or it has answered. */
static int prepare(recon_job *j) {
    int e = 0;
    j->f = ss_store_acquire(j->srv->store, j->id, &e);
    if (!j->f) {
        ss_job_fail_engine(drop_job(j), e, SS_FROM_LOOKUP, "load");
        return -1;
    }
    return alloc_pixels(j);
}

static void gpu_done(void *arg, int status);

/* With the original kept, full rank is the original itself: served exactly (a float32 sum may
 * land a pixel one level off), with no kernel run. Returns 1 when it filled j->px. */
static int full_rank_original(recon_job *j) {
    const ss_factors *f = j->f;
    if (!f->orig || j->k != f->nsv) return 0;
    memcpy(j->px, f->orig, (size_t)f->m * (size_t)f->n * sizeof *j->px);
    j->kernel_ms = 0;
    return 1;
}

/* Hands j, its factors and pixels in hand, to the GPU queue; answers on failure. */
static void submit_gpu(recon_job *j) {
    j->pixels_ready = 0;
    j->gj = (ss_gpu_job){.backend = j->be, .f = j->f, .k = j->k, .out = j->px,
                         .deadline = j->deadline, .done = gpu_done, .arg = j};
    int rc = ss_gpuq_submit(j->srv->gpuq, &j->gj);
    if (rc) fail_engine(j, rc, SS_FROM_QUEUE);
}

/* Pool worker: the whole job on the CPU, or only the finish after the GPU. */
static void recon_run(ss_pool_job *pj, ss_workspace *ws) {
    recon_job *j = (recon_job *)pj;
    if (!j->pixels_ready) {
        j->queue_ms = (ss_now() - j->pj.enqueued) * 1e3;
        if (__atomic_load_n(&j->srv->stopping, __ATOMIC_SEQ_CST)) { /* shutdown: do not start queued work */
            ss_job_fail(drop_job(j), "overloaded", "server is shutting down");
            return;
        }
        if (j->to_gpu) { /* loaded here, off the polling thread */
            double t0 = ss_now();
            if (prepare(j)) return;
            if (full_rank_original(j)) {
                finish(j);
                return;
            }
            j->deadline += ss_now() - t0; /* loading is running time, not time queued */
            submit_gpu(j);
            return;
        }
        if (!ws) {
            ss_req *r = drop_job(j);
            ss_job_fail(r, "internal", "internal error (request %s): no workspace", r->rid);
            return;
        }
        if (prepare(j)) return;
        if (!full_rank_original(j)) {
            double t0 = ss_now();
            int rc = j->be->reconstruct(j->f, j->k, j->px, ws);
            j->kernel_ms = (ss_now() - t0) * 1e3;
            if (rc) {
                fail_engine(j, rc, SS_FROM_KERNEL);
                return;
            }
        }
    }
    finish(j);
}

/* Pool: the job was still queued at its deadline. */
static void recon_expire(ss_pool_job *pj, double waited_s) {
    recon_job *j = (recon_job *)pj;
    int deadline = j->srv->cfg->job_deadline_ms;
    ss_job_fail(drop_job(j), "overloaded", "queued %.0f ms, past the %d ms deadline; retry later", waited_s * 1e3,
                deadline);
}

/* GPU queue callback (its thread): hand the pixels to a CPU worker to finish. */
static void gpu_done(void *arg, int status) {
    recon_job *j = arg;
    if (status) {
        fail_engine(j, status, SS_FROM_KERNEL);
        return;
    }
    j->queue_ms += j->gj.queue_ms; /* after the pool's wait, when a worker loaded the factors */
    j->kernel_ms = j->gj.kernel_ms;
    j->pixels_ready = 1;
    if (ss_pool_submit_force(j->srv->pool, &j->pj) != 0) finish(j); /* pool gone: finish here */
}

/* Suspends the connection and queues j; answers in every case. */
static enum MHD_Result start_job(ss_req *r, recon_job *j) {
    ss_server *srv = r->srv;
    if (ss_job_begin(r) != 0) {
        free(j);
        return ss_reply_error(r, "overloaded", "server is shutting down");
    }
    /* The deadline bounds the time spent queued (pool and GPU queue), not the running time. */
    j->deadline = ss_now() + srv->cfg->job_deadline_ms * 1e-3;
    j->to_gpu = srv->gpuq && (srv->cfg->gpu_cpu_mode || !strcmp(j->be->device, "gpu"));
    /* The GPU thread never touches the store, and this thread never reads a
     * file: factors in the cache are taken here (a lookup), others are loaded
     * by a worker, which then hands the job to the GPU queue. */
    if (j->to_gpu && (j->f = ss_store_acquire_cached(srv->store, j->id)) != NULL) {
        if (!(j->f->orig && j->k == j->f->nsv)) {
            if (alloc_pixels(j) == 0) submit_gpu(j);
            return MHD_YES;
        }
        ss_store_release(srv->store, j->f); /* the original: a worker copies it */
        j->f = NULL;
    }
    j->pj.deadline = j->deadline;
    int rc = ss_pool_submit(srv->pool, &j->pj);
    if (rc) {
        free(j);
        ss_job_reject(r, rc);
    }
    return MHD_YES;
}

static recon_job *new_job(ss_req *r, const recon_params *p, int quality) {
    recon_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->pj.run = recon_run;
    j->pj.expire = recon_expire;
    j->r = r;
    j->srv = r->srv;
    j->quality = quality;
    snprintf(j->id, sizeof j->id, "%s", ss_arg(r, "id"));
    j->k = p->k;
    j->be = p->be;
    j->window = p->window;
    j->wc = p->wc;
    j->ww = p->ww;
    return j;
}

enum MHD_Result ss_h_reconstruct(ss_req *r) {
    enum MHD_Result ret;
    recon_params p;
    if (!parse_params(r, 1, &p, &ret)) return ret;
    if (!check_available(r, p.be, &ret)) return ret;
    ss_server *srv = r->srv;
    int out_bits = p.bits ? p.bits : p.window ? 8 : p.info.bit_depth;
    char key[320], etag[40];
    if (p.window) /* doubles only when needed: %g is a visible cost on the cached path */
        snprintf(key, sizeof key, "%s|%d|%s|%d|1|%.17g|%.17g", ss_arg(r, "id"), p.k, p.be->name, out_bits, p.wc,
                 p.ww);
    else
        snprintf(key, sizeof key, "%s|%d|%s|%d|0", ss_arg(r, "id"), p.k, p.be->name, out_bits);
    snprintf(etag, sizeof etag, "\"%016llx\"", (unsigned long long)fnv1a64(key));
    r->backend = p.be_idx;
    if (none_match(r, etag)) {
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (resp) {
            MHD_add_response_header(resp, "ETag", etag);
            MHD_add_response_header(resp, "Cache-Control", cache_control(srv));
            MHD_add_response_header(resp, "X-Backend", p.be->name);
        }
        return ss_reply(r, 304, resp);
    }
    if (!wants_no_cache(r)) {
        ss_rc_entry *e = ss_respcache_get(srv->rc, key);
        if (e) return reply_hit(r, e);
    }
    recon_job *j = new_job(r, &p, 0);
    if (!j) return ss_reply(r, 500, NULL);
    j->out_bits = out_bits;
    memcpy(j->key, key, sizeof key);
    memcpy(j->etag, etag, sizeof etag);
    return start_job(r, j);
}

enum MHD_Result ss_h_quality(ss_req *r) {
    enum MHD_Result ret;
    recon_params p;
    if (!parse_params(r, 0, &p, &ret)) return ret;
    if (!check_available(r, p.be, &ret)) return ret;
    recon_job *j = new_job(r, &p, 1);
    if (!j) return ss_reply(r, 500, NULL);
    return start_job(r, j);
}

/* ---- shared with the volume routes (api/h_volumes.c) ----------------------- */

long ss_parse_uint(const char *s) { return parse_uint(s); }
uint64_t ss_fnv1a64(const char *s) { return fnv1a64(s); }
int ss_if_none_match(ss_req *r, const char *etag) { return none_match(r, etag); }
int ss_wants_no_cache(ss_req *r) { return wants_no_cache(r); }
const char *ss_cache_control(const ss_server *srv) { return cache_control(srv); }
enum MHD_Result ss_reply_cached(ss_req *r, ss_rc_entry *e) { return reply_hit(r, e); }
struct MHD_Response *ss_cached_response(ss_server *srv, ss_rc_entry *e, const char *timing) {
    return entry_response(srv, e, timing);
}
