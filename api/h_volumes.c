/* h_volumes.c - handlers of /volumes: NIfTI upload (decoded on a worker, factorised slice by slice
 * in the pool by server/volumes.c), list, info, delete, one slice as PNG, the whole volume at k as
 * .nii.gz, quality */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/errors.h"
#include "api/http.h"
#include "api/json.h"
#include "engine/png.h"
#include "engine/volume.h"
#include "util/clock.h"
#include "util/error.h"

enum { VJ_INTAKE, VJ_INFO, VJ_PNG, VJ_NIFTI, VJ_QUALITY };

/* One /volumes request on a worker. */
typedef struct vol_job {
    ss_pool_job pj; /* first: the pool hands this pointer back */
    ss_req *r;
    ss_server *srv;
    int kind;       /* VJ_* */
    char id[80];    /* as r->id, validated */
    /* intake */
    unsigned char *body;
    size_t len, reserved;
    long long mem;
    ss_volume_opts vo;
    char name[256];
    /* reads */
    int with_sv;
    int k, axis, index;
    const ss_backend *be;
    int bits, window;
    double wc, ww;
    char key[320], etag[40];
    double queue_ms; /* waited in the pool, for Server-Timing */
} vol_job;

/* ---- JSON ---------------------------------------------------------------------- */

static void set(json_t *o, const char *key, json_t *v) { json_object_set_new(o, key, v); }

static json_t *rfc3339(int64_t t) {
    char buf[32];
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm)) return json_null();
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(buf);
}

/* API.md "Volume info"; with the volume in hand (ready), per-slice ranks and, when asked,
 * their singular values. */
static json_t *volume_json(const ss_vol_info *in, const ss_volume *v, int with_sv) {
    const ss_volume *m = &in->meta;
    const ss_nifti_info *n = &m->nii;
    json_t *o = json_object();
    if (!o) return NULL;
    set(o, "id", json_string(m->id));
    set(o, "name", json_string(m->name));
    set(o, "state", json_string(ss_vol_state_name(in->state)));
    set(o, "slices_done", json_integer(in->slices_done));
    set(o, "slices_total", json_integer(m->nslices));
    if (in->state == SS_VOL_FAILED) set(o, "error", json_string(in->error));
    set(o, "dims", json_pack("[i,i,i]", n->nx, n->ny, n->nz));
    set(o, "voxel_sizes", json_pack("[f,f,f]", n->pixdim[1], n->pixdim[2], n->pixdim[3]));
    set(o, "datatype", json_string(ss_nifti_type_name(n->datatype)));
    set(o, "nifti_version", json_integer(n->version));
    set(o, "t", json_integer(n->t));
    set(o, "axis", json_integer(m->axis));
    set(o, "slice_rows", json_integer(m->m));
    set(o, "slice_cols", json_integer(m->n));
    double slope, inter;
    ss_nifti_scaling(n, &slope, &inter);
    set(o, "scl_slope", json_real(slope));
    set(o, "scl_inter", json_real(inter));
    double cmin, cmax;
    int dir[3];
    ss_nifti_display(n, &cmin, &cmax, dir);
    /* The file's own display window, when it has one (cal_max > cal_min). */
    int cal = isfinite(cmin) && isfinite(cmax) && cmax > cmin;
    set(o, "cal_min", cal ? json_real(cmin) : json_null());
    set(o, "cal_max", cal ? json_real(cmax) : json_null());
    static const char *const dirs[] = {NULL, "L>R", "R>L", "P>A", "A>P", "I>S", "S>I"};
    json_t *ori = json_array();
    for (int a = 0; a < 3; a++)
        json_array_append_new(ori, dir[a] >= 1 && dir[a] <= 6 ? json_string(dirs[dir[a]]) : json_null());
    set(o, "orientation", ori);
    set(o, "value_min", json_real(m->vmin));
    set(o, "value_max", json_real(m->vmax));
    /* what the store holds for it (the .svv blob), against the upload, as slices say it */
    const int ready = in->state == SS_VOL_READY;
    set(o, "stored_bytes", ready ? json_integer(in->stored_bytes) : json_null());
    set(o, "stored_vs_upload", ready && in->upload_bytes > 0
                                   ? json_real((double)in->stored_bytes / (double)in->upload_bytes)
                                   : json_null());
    set(o, "original_kept", json_boolean(!m->no_original));
    json_t *tg = json_object();
    if (m->target.kind == SS_TARGET_RANK) set(tg, "rank", json_integer((json_int_t)m->target.value));
    else if (m->target.kind == SS_TARGET_ENERGY) set(tg, "energy", json_real(m->target.value));
    else if (m->target.kind == SS_TARGET_PSNR) set(tg, "psnr", json_real(m->target.value));
    set(o, "target", tg); /* {} for the defaults: every component */
    set(o, "original_bytes", json_integer((json_int_t)(n->nvox * n->bytes_per_voxel)));
    /* null when not known (indexed at start: the .svv does not carry it), as for slices */
    set(o, "upload_bytes", in->upload_bytes > 0 ? json_integer(in->upload_bytes) : json_null());
    set(o, "created", rfc3339(m->created));
    if (v && v->slices) {
        json_t *ranks = json_array(), *svs = with_sv ? json_array() : NULL;
        for (int s = 0; s < v->nslices; s++) {
            const ss_factors *f = v->slices[s];
            json_array_append_new(ranks, json_integer(f ? f->rank : 0));
            if (!svs) continue;
            json_t *a = json_array();
            for (int i = 0; f && i < f->rank; i++) json_array_append_new(a, json_real(f->S[i]));
            json_array_append_new(svs, a);
        }
        set(o, "ranks", ranks);
        if (svs) set(o, "singular_values", svs);
    }
    return o;
}

/* 202 {"id", "state"} with Location, or 200 with the ready volume's info. */
static struct MHD_Response *accepted(const ss_vol_info *in, int *status) {
    char loc[96];
    snprintf(loc, sizeof loc, "/volumes/%s", in->meta.id);
    struct MHD_Response *resp;
    if (in->state == SS_VOL_READY) {
        *status = 200;
        resp = ss_resp_json(volume_json(in, NULL, 0));
    } else {
        *status = 202;
        resp = ss_resp_json(json_pack("{s:s, s:s, s:s}", "id", in->meta.id, "state", ss_vol_state_name(in->state),
                                      "location", loc));
    }
    if (resp) MHD_add_response_header(resp, "Location", loc);
    return resp;
}

/* ---- the jobs -------------------------------------------------------------------- */

static void drop_body(vol_job *j) {
    free(j->body);
    j->body = NULL;
    ss_upload_give_back(&j->srv->upload_bytes, j->reserved);
    j->reserved = 0;
}

static void give_mem(vol_job *j) {
    ss_upload_give_back(&j->srv->mem_bytes, (size_t)j->mem);
    j->mem = 0;
}

static void intake(vol_job *j) {
    ss_server *srv = j->srv;
    ss_req *r = j->r;
    ss_volume *v = NULL;
    int rc = ss_volume_from_nifti(j->body, j->len, &j->vo, &v);
    long long len = (long long)j->len;
    drop_body(j);
    if (rc) {
        give_mem(j);
        ss_job_fail_engine(r, rc, SS_FROM_VOLUME, "decode volume");
        return;
    }
    snprintf(v->name, sizeof v->name, "%s", j->name[0] ? j->name : v->id);
    v->upload_bytes = len; /* kept in the .svv */
    v->created = (int64_t)time(NULL);
    ss_vol_info info;
    int taken = 0;
    rc = ss_vstore_begin(srv->vstore, v, len, j->mem, &info, &taken);
    if (taken) {
        j->mem = 0; /* the volume store gives it back when factorisation ends */
    } else {
        ss_volume_free(v);
        give_mem(j);
    }
    if (rc) {
        ss_job_fail_engine(r, rc, SS_FROM_QUEUE, "volume");
        return;
    }
    int status = 200;
    struct MHD_Response *resp = accepted(&info, &status);
    ss_job_end(r, status, resp);
}

static void info_job(vol_job *j, ss_vhandle *h) {
    ss_vol_info info;
    int rc = ss_vstore_info(j->srv->vstore, j->id, &info);
    if (rc) {
        ss_job_fail_engine(j->r, rc, SS_FROM_LOOKUP, "volume");
        return;
    }
    ss_job_end(j->r, 200, ss_resp_json(volume_json(&info, ss_vhandle_volume(h), j->with_sv)));
}

/* Threads a whole-volume rebuild runs on: the `threads` backend parallelises inside each
 * slice, the others get one slice per core. */
static int rebuild_threads(const vol_job *j) {
    return !strcmp(j->be->name, "threads") ? 1 : j->srv->cfg->workers > 0 ? j->srv->cfg->workers : 0;
}

static int cpu_rebuild(void *arg, const ss_volume *v, int k, void *out) {
    vol_job *j = arg;
    return ss_volume_rebuild(v, k, j->be, rebuild_threads(j), out);
}

/* ---- the GPU queue: a volume's slices submitted together, batched by the queue ---------- */

/* Whether j's backend runs on the GPU queue: a GPU backend, or any with --gpu-cpu-mode. */
static int on_gpuq(const vol_job *j) {
    return j->srv->gpuq && (j->srv->cfg->gpu_cpu_mode || !strcmp(j->be->device, "gpu"));
}

typedef struct gpu_batch {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int left, err;
    double kernel_ms; /* the longest launch a slice was in */
} gpu_batch;

typedef struct gpu_slice {
    ss_gpu_job gj;
    gpu_batch *b;
} gpu_slice;

static void gpu_slice_done(void *arg, int status) {
    gpu_slice *g = arg;
    gpu_batch *b = g->b;
    pthread_mutex_lock(&b->mu);
    if (status && !b->err) b->err = status;
    if (g->gj.kernel_ms > b->kernel_ms) b->kernel_ms = g->gj.kernel_ms;
    if (--b->left == 0) pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* Slices idx[0..n) (along v->axis) at k (clamped per slice), m*n each, into px as the
 * backend's pixels or, when C is set, into C as floats (the products, for the engine to map
 * to stored values), all submitted to the GPU queue at once so that it launches them in as
 * few batches as --gpu-max-batch allows; this worker waits for the last. */
static int gpu_slices(vol_job *j, const ss_volume *v, int k, const int *idx, int n, uint16_t *px, float *C) {
    gpu_slice *g = calloc((size_t)(n ? n : 1), sizeof *g);
    if (!g) return ss_fail(SS_ENOMEM, "out of memory");
    gpu_batch b = {.left = n};
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    const size_t plane = (size_t)v->m * (size_t)v->n;
    for (int i = 0; i < n; i++) {
        const ss_factors *f = v->slices[idx[i]];
        g[i].b = &b;
        g[i].gj = (ss_gpu_job){.backend = j->be, .f = f, .k = k < f->rank ? k : f->rank,
                               .out = C ? NULL : px + i * plane, .out_f32 = C ? C + i * plane : NULL,
                               .done = gpu_slice_done, .arg = &g[i]};
        int rc = ss_gpuq_submit(j->srv->gpuq, &g[i].gj);
        if (rc) { /* the rest are never submitted: only the ones queued call back */
            pthread_mutex_lock(&b.mu);
            b.left -= n - i;
            if (!b.err) b.err = rc;
            pthread_mutex_unlock(&b.mu);
            break;
        }
    }
    pthread_mutex_lock(&b.mu);
    while (b.left > 0) pthread_cond_wait(&b.cv, &b.mu);
    pthread_mutex_unlock(&b.mu);
    pthread_cond_destroy(&b.cv);
    pthread_mutex_destroy(&b.mu);
    free(g);
    if (b.err == SS_EBUSY) return ss_fail(SS_EBUSY, "GPU queue full (--gpu-queue); retry later");
    if (b.err == SS_EUNAVAIL) return ss_fail(SS_EUNAVAIL, "the GPU queue is stopping");
    return b.err ? ss_fail(b.err, "GPU batch: %s", ss_error()) : SS_OK;
}

/* The whole volume at k through the GPU queue: every slice below its full rank in one
 * submission, the full-rank ones (the originals) copied. uint8/uint16 volumes without
 * scaling come back as pixels (their stored values; 1-2 bytes a voxel over PCIe), the
 * others as floats that the engine rounds and clamps to the type. */
static int gpu_rebuild(void *arg, const ss_volume *v, int k, void *out) {
    vol_job *j = arg;
    int *idx = malloc(sizeof *idx * (size_t)v->nslices), n = 0;
    if (!idx) return ss_fail(SS_ENOMEM, "out of memory");
    for (int s = 0; s < v->nslices; s++) {
        if (ss_volume_slice_full(v, s, k))
            ss_volume_put_slice(v, s, k, NULL, out);
        else
            idx[n++] = s;
    }
    const size_t plane = (size_t)v->m * (size_t)v->n, cnt = plane * (size_t)(n ? n : 1);
    const int exact = ss_volume_pixels_exact(v);
    uint16_t *px = exact ? malloc(sizeof *px * cnt) : NULL;
    float *C = exact ? NULL : malloc(sizeof *C * cnt);
    int rc = px || C ? gpu_slices(j, v, k, idx, n, px, C) : ss_fail(SS_ENOMEM, "out of memory");
    for (int i = 0; rc == SS_OK && i < n; i++)
        rc = exact ? ss_volume_put_slice_pixels(v, idx[i], k, px + i * plane, out)
                   : ss_volume_put_slice(v, idx[i], k, C + i * plane, out);
    free(px);
    free(C);
    free(idx);
    return rc;
}

static const void *rebuilt_at_k(vol_job *j, ss_vhandle *h, int *err, void **owned) {
    return ss_vstore_rebuilt(j->srv->vstore, h, j->k, j->be, on_gpuq(j) ? gpu_rebuild : cpu_rebuild, j, err, owned);
}

/* One slice along the factorisation axis on the GPU queue, as stored values: pixels for
 * ss_volume_pixels_exact volumes, else floats mapped by the engine. */
static int gpu_one_slice(vol_job *j, const ss_volume *v, double *vals) {
    size_t n = (size_t)v->m * (size_t)v->n;
    const int exact = ss_volume_pixels_exact(v);
    uint16_t *px = exact ? malloc(n * sizeof *px) : NULL;
    float *C = exact ? NULL : malloc(n * sizeof *C);
    int rc = px || C ? gpu_slices(j, v, j->k, &j->index, 1, px, C) : ss_fail(SS_ENOMEM, "out of memory");
    if (!rc && exact)
        for (size_t i = 0; i < n; i++) vals[i] = px[i];
    else if (!rc)
        ss_volume_stored_values(v, C, n, vals);
    free(px);
    free(C);
    return rc;
}

/* The answer to a kernel's failure. */
static void fail_kernel(vol_job *j, int rc, const char *what) {
    if (rc == SS_EUNAVAIL)
        ss_job_fail(j->r, "backend_unavailable", "backend %s is unavailable: %s", j->be->name, ss_error());
    else if (rc == SS_EBUSY)
        ss_job_fail(j->r, "overloaded", "%s", ss_error());
    else
        ss_job_fail_engine(j->r, rc, 0, what);
}

static void png_job(vol_job *j, ss_vhandle *h, ss_workspace *ws) {
    ss_server *srv = j->srv;
    ss_req *r = j->r;
    const ss_volume *v = ss_vhandle_volume(h);
    int rows = 0, cols = 0, count = 0, err = 0;
    ss_volume_slice_dims(&v->nii, j->axis, &rows, &cols, &count);
    size_t n = (size_t)rows * (size_t)cols;
    double *vals = malloc(n * sizeof *vals);
    uint16_t *px = malloc(n * sizeof *px);
    void *owned = NULL;
    const void *rebuilt = NULL;
    double t0 = ss_now();
    int rc = vals && px ? SS_OK : ss_fail(SS_ENOMEM, "out of memory");
    if (rc == SS_OK && j->axis != v->axis) { /* across the factorised slices: the volume at k */
        rebuilt = rebuilt_at_k(j, h, &err, &owned);
        if (!rebuilt) rc = err;
    }
    if (rc == SS_OK && j->axis == v->axis && on_gpuq(j) && !ss_volume_slice_full(v, j->index, j->k))
        rc = gpu_one_slice(j, v, vals);
    else if (rc == SS_OK) /* full rank along the axis is the original, whatever the backend */
        rc = ss_volume_slice(v, rebuilt, j->axis, j->index, j->k, j->be->reconstruct_f32 ? j->be : ss_backend_find("blas"),
                             ws, vals);
    double kernel_ms = (ss_now() - t0) * 1e3;
    free(owned);
    if (rc) {
        free(vals);
        free(px);
        fail_kernel(j, rc, "volume slice");
        return;
    }
    t0 = ss_now();
    int bits;
    if (j->window) {
        ss_volume_window(v, vals, n, j->wc, j->ww, px);
        bits = 8;
    } else {
        bits = ss_volume_pixels(v, vals, n, px);
    }
    free(vals);
    int out_bits = j->bits ? j->bits : bits;
    if (out_bits != bits) ss_pixels_convert_bits(px, n, bits, out_bits, px);
    unsigned char *png = NULL;
    size_t len = 0;
    rc = ss_png_encode(px, cols, rows, out_bits, &png, &len);
    free(px);
    if (rc) {
        ss_job_fail_engine(r, rc, 0, "encode");
        return;
    }
    char timing[160];
    snprintf(timing, sizeof timing, "queue;dur=%.3f, kernel;dur=%.3f, encode;dur=%.3f", j->queue_ms, kernel_ms,
             (ss_now() - t0) * 1e3);
    ss_rc_entry *e = ss_respcache_put(srv->rc, j->key, j->id, png, len, j->be->name, j->etag, timing);
    ss_job_end(r, 200, e ? ss_cached_response(srv, e, timing) : NULL);
}

static void nifti_job(vol_job *j, ss_vhandle *h) {
    ss_server *srv = j->srv;
    ss_req *r = j->r;
    const ss_volume *v = ss_vhandle_volume(h);
    int err = 0;
    void *owned = NULL;
    double t0 = ss_now();
    const void *rebuilt = rebuilt_at_k(j, h, &err, &owned);
    if (!rebuilt) {
        fail_kernel(j, err, "rebuild");
        return;
    }
    double t1 = ss_now();
    unsigned char *gz = NULL;
    size_t len = 0;
    int rc = ss_volume_to_nifti(v, rebuilt, &gz, &len);
    free(owned);
    if (rc) {
        ss_job_fail_engine(r, rc, 0, "encode volume");
        return;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(len, gz, free);
    if (!resp) {
        free(gz);
    } else {
        char cd[160], timing[128];
        snprintf(cd, sizeof cd, "attachment; filename=\"%s_k%d.nii.gz\"", j->id, j->k);
        snprintf(timing, sizeof timing, "queue;dur=%.3f, kernel;dur=%.3f, encode;dur=%.3f", j->queue_ms,
                 (t1 - t0) * 1e3, (ss_now() - t1) * 1e3);
        MHD_add_response_header(resp, "Content-Type", "application/gzip");
        MHD_add_response_header(resp, "Content-Disposition", cd);
        MHD_add_response_header(resp, "ETag", j->etag);
        MHD_add_response_header(resp, "Cache-Control", ss_cache_control(srv));
        MHD_add_response_header(resp, "X-Backend", j->be->name);
        MHD_add_response_header(resp, "Server-Timing", timing);
    }
    ss_job_end(r, 200, resp);
}

static void quality_job(vol_job *j, ss_vhandle *h) {
    ss_req *r = j->r;
    const ss_volume *v = ss_vhandle_volume(h);
    int err = 0;
    void *owned = NULL;
    const void *rebuilt = rebuilt_at_k(j, h, &err, &owned);
    ss_volume_quality vq = {0}, *sq = calloc((size_t)v->nslices, sizeof *sq);
    int rc = !rebuilt ? err : sq ? ss_volume_quality_compute(v, j->k, rebuilt, &vq, sq)
                                 : ss_fail(SS_ENOMEM, "out of memory");
    free(owned);
    if (rc) {
        free(sq);
        fail_kernel(j, rc, "quality");
        return;
    }
    json_t *slices = json_array();
    for (int s = 0; s < v->nslices; s++) json_array_append_new(slices, ss_json_volume_quality(&sq[s], 1));
    free(sq);
    json_t *o = json_pack("{s:s, s:i, s:s, s:i, s:f, s:b, s:o, s:o}", "id", j->id, "k", j->k, "backend",
                          j->be->name, "axis", v->axis, "data_range", ss_volume_data_range(v), "original_kept",
                          !vq.no_original, "volume", ss_json_volume_quality(&vq, 0), "slices", slices);
    if (o && vq.no_original)
        set(o, "note", json_string("the original was not kept (keep-original=false): no mse, psnr or ssim; "
                                   "energy is from the stored singular values"));
    ss_job_end(r, 200, ss_resp_json(o));
}

static void vol_run(ss_pool_job *pj, ss_workspace *ws) {
    vol_job *j = (vol_job *)pj;
    ss_req *r = j->r;
    j->queue_ms = (ss_now() - j->pj.enqueued) * 1e3;
    if (__atomic_load_n(&j->srv->stopping, __ATOMIC_SEQ_CST)) {
        ss_job_fail(r, "overloaded", "server is shutting down");
    } else if (j->kind == VJ_INTAKE) {
        intake(j);
    } else {
        int err = 0;
        ss_vhandle *h = ss_vstore_acquire(j->srv->vstore, j->id, &err);
        if (!h) {
            ss_vol_info info;
            if (err == SS_EINVAL && ss_vstore_info(j->srv->vstore, j->id, &info) == 0)
                ss_job_fail(r, "not_ready", "volume %s is %s", j->id, ss_vol_state_name(info.state));
            else
                ss_job_fail_engine(r, err, SS_FROM_LOOKUP, "load volume");
        } else {
            if (j->kind == VJ_INFO)
                info_job(j, h);
            else if (j->kind == VJ_PNG)
                png_job(j, h, ws);
            else if (j->kind == VJ_NIFTI)
                nifti_job(j, h);
            else
                quality_job(j, h);
            ss_vstore_release(j->srv->vstore, h);
        }
    }
    drop_body(j);
    give_mem(j);
    free(j);
}

static void vol_expire(ss_pool_job *pj, double waited_s) {
    vol_job *j = (vol_job *)pj;
    ss_req *r = j->r;
    int deadline = j->srv->cfg->job_deadline_ms;
    drop_body(j);
    give_mem(j);
    free(j);
    ss_job_fail(r, "overloaded", "queued %.0f ms, past the %d ms deadline; retry later", waited_s * 1e3, deadline);
}

/* Suspends the connection and queues j (reads with the job deadline); answers in every case. */
static enum MHD_Result start(ss_req *r, vol_job *j, int deadline) {
    j->pj.run = vol_run;
    j->pj.expire = vol_expire;
    j->r = r;
    j->srv = r->srv;
    if (ss_job_begin(r) != 0) {
        drop_body(j);
        give_mem(j);
        free(j);
        return ss_reply_error(r, "overloaded", "server is shutting down");
    }
    if (deadline) j->pj.deadline = ss_now() + r->srv->cfg->job_deadline_ms * 1e-3;
    int rc = ss_pool_submit(r->srv->pool, &j->pj);
    if (rc) {
        drop_body(j);
        give_mem(j);
        free(j);
        ss_job_reject(r, rc);
    }
    return MHD_YES;
}

/* ---- handlers -------------------------------------------------------------------- */

static int check_store(ss_req *r, enum MHD_Result *ret) {
    if (ss_vstore_available(r->srv->vstore)) return 1;
    *ret = ss_reply_error(r, "backend_unavailable", "this server's store backend keeps no volumes");
    return 0;
}

/* axis or t: absent -> def; else a decimal in 0..max. -1 when bad. */
static int small_arg(ss_req *r, const char *name, int def, int max) {
    const char *s = ss_arg(r, name);
    if (!s) return def;
    long v = ss_parse_uint(s);
    return v < 0 || v > max ? -1 : (int)v;
}

enum MHD_Result ss_h_vupload(ss_req *r) {
    enum MHD_Result ret;
    if (!check_store(r, &ret)) return ret;
    ss_server *srv = r->srv;
    const char *name = ss_arg(r, "name");
    if (name && (ss_arg_has_nul(r, "name") || (*name && !ss_valid_name(name))))
        return ss_reply_error(r, "invalid_parameter", "name must be printable UTF-8 of at most 255 bytes");
    int axis = small_arg(r, "axis", 2, 2), t = small_arg(r, "t", 0, 1 << 30);
    if (axis < 0) return ss_reply_error(r, "invalid_parameter", "axis must be 0, 1 or 2 (the voxel axes i, j, k)");
    if (t < 0) return ss_reply_error(r, "invalid_parameter", "t must be a volume index of a 4D file: 0, 1, ...");
    ss_target target;
    int keep;
    if (!ss_parse_store_options(r, &target, &keep, &ret)) return ret;
    /* The header is checked here, before anything is queued or allocated: what decoding and
     * factorising it takes is reserved from --memory-mb now, and a file over the budget can
     * never be taken (413), one that does not fit now is a retry (503). */
    if (!r->up.len) return ss_reply_error(r, "unsupported_media_type", "empty body: send the .nii or .nii.gz file");
    long long budget = srv->mem_budget;
    ss_nifti_limits lim = {.max_voxels = budget / 2, .max_file_bytes = budget};
    ss_nifti_info info;
    int rc = ss_nifti_probe(r->up.data, r->up.len, t, &lim, &info);
    if (rc) return ss_reply_engine(r, rc, SS_FROM_VOLUME, "probe");
    int rows = 0, cols = 0, count = 0;
    ss_volume_slice_dims(&info, axis, &rows, &cols, &count);
    ss_pool_stats ps;
    ss_pool_get_stats(srv->pool, &ps);
    int bits = info.bytes_per_voxel == 1 ? 8 : 16;
    long long ws = ss_svd_workspace_bytes(rows, cols, bits);
    long long need = ss_volume_memory_bytes(&info, axis);
    if (ws < 0 || need < 0)
        return ss_reply_error(r, "too_large", "slices of %dx%d cannot be factorised", rows, cols);
    const int nsv = rows < cols ? rows : cols;
    if (target.kind == SS_TARGET_RANK && target.value > nsv)
        return ss_reply_error(r, "invalid_parameter", "rank must be an integer in 1..%d for this volume's %dx%d slices",
                              nsv, rows, cols);
    /* ss_compress_fit's data and product as floats and its quantised factors, per worker */
    if (target.kind != SS_TARGET_NONE || !keep) ws += 8LL * rows * cols + 4LL * nsv * (rows + cols);
    need += (long long)ps.workers * (ws + 4LL * rows * cols);
    if (need > budget)
        return ss_reply_error(r, "too_large",
                              "this %dx%dx%d volume takes %lld MiB to factorise, over the %lld MiB memory budget "
                              "(--memory-mb)",
                              info.nx, info.ny, info.nz, (need + (1 << 20) - 1) >> 20, budget >> 20);
    if (ss_budget_take(&srv->mem_bytes, budget, need) != 0)
        return ss_reply_error(r, "overloaded",
                              "server busy: factorising this volume takes %lld MiB of the %lld MiB memory budget "
                              "(--memory-mb), which is in use; retry later",
                              (need + (1 << 20) - 1) >> 20, budget >> 20);
    vol_job *j = calloc(1, sizeof *j);
    if (!j) {
        ss_upload_give_back(&srv->mem_bytes, (size_t)need);
        return ss_reply(r, 500, NULL);
    }
    j->kind = VJ_INTAKE;
    j->srv = srv;
    j->mem = need;
    j->vo = (ss_volume_opts){.axis = axis, .t = t, .lim = lim, .target = target, .no_original = !keep};
    if (name && *name) snprintf(j->name, sizeof j->name, "%s", name);
    j->body = r->up.data; /* the job owns the body now, and its share of the upload budget */
    j->len = r->up.len;
    j->reserved = r->up.reserved;
    r->up.data = NULL;
    r->up.len = r->up.cap = r->up.reserved = 0;
    return start(r, j, 0);
}

enum MHD_Result ss_h_vlist(ss_req *r) {
    enum MHD_Result ret;
    if (!check_store(r, &ret)) return ret;
    ss_vol_info *all = NULL;
    size_t n = 0;
    int rc = ss_vstore_list(r->srv->vstore, &all, &n);
    if (rc) return rc == SS_ENOMEM ? ss_reply_internal(r, ss_error()) : ss_reply_engine(r, rc, 0, "list volumes");
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) json_array_append_new(arr, volume_json(&all[i], NULL, 0));
    free(all);
    return ss_reply(r, 200, ss_resp_json(arr ? json_pack("{s:o}", "volumes", arr) : NULL));
}

/* The {id} segment and the volume's info: 1, or 0 after answering 400/404. */
static int lookup(ss_req *r, ss_vol_info *info, enum MHD_Result *ret) {
    if (!check_store(r, ret)) return 0;
    if (!ss_valid_id(r->id)) {
        *ret = ss_reply_error(r, "invalid_id", "volume id must match [A-Za-z0-9_-]{1,64}");
        return 0;
    }
    int rc = ss_vstore_info(r->srv->vstore, r->id, info);
    if (rc == SS_EINVAL) {
        *ret = ss_reply_error(r, "not_found", "no volume %s", r->id);
        return 0;
    }
    if (rc) { /* the shared store cannot be reached: 503 store_unavailable */
        *ret = ss_reply_engine(r, rc, 0, "volume");
        return 0;
    }
    return 1;
}

static int parse_bool(const char *s) { return s && (!strcmp(s, "true") || !strcmp(s, "1")); }

enum MHD_Result ss_h_vinfo(ss_req *r) {
    enum MHD_Result ret;
    ss_vol_info info;
    if (!lookup(r, &info, &ret)) return ret;
    const char *sv = ss_arg(r, "singular_values");
    if (sv && !parse_bool(sv) && strcmp(sv, "false") && strcmp(sv, "0"))
        return ss_reply_error(r, "invalid_parameter", "singular_values must be true or false");
    if (info.state != SS_VOL_READY) /* the index says it all */
        return ss_reply(r, 200, ss_resp_json(volume_json(&info, NULL, 0)));
    /* Ready: the ranks need the factors, which may have to be read: on a worker. */
    vol_job *j = calloc(1, sizeof *j);
    if (!j) return ss_reply(r, 500, NULL);
    j->kind = VJ_INFO;
    j->with_sv = parse_bool(sv);
    snprintf(j->id, sizeof j->id, "%s", r->id);
    return start(r, j, 1);
}

enum MHD_Result ss_h_vdelete(ss_req *r) {
    enum MHD_Result ret;
    ss_vol_info info;
    if (!lookup(r, &info, &ret)) return ret;
    int rc = ss_vstore_delete(r->srv->vstore, r->id);
    if (rc == SS_EINVAL) return ss_reply_error(r, "not_found", "no volume %s", r->id);
    ss_respcache_purge_id(r->srv->rc, r->id); /* also on an I/O error: the volume may be gone */
    if (rc) return ss_reply_engine(r, rc, 0, "delete volume");
    return ss_reply(r, 204, MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT));
}

/* k, backend (and for the PNG bits, window, axis, index) of a ready volume. 1, or 0 after answering. */
static int parse_read(ss_req *r, const ss_vol_info *info, vol_job *j, int png, enum MHD_Result *ret) {
    const ss_volume *m = &info->meta;
    int full = m->m < m->n ? m->m : m->n;
    const char *ks = ss_arg(r, "k");
    long k = ks ? ss_parse_uint(ks) : full;
    if (k < 1) {
        *ret = ss_reply_error(r, "invalid_k", "k must be a positive integer (clamped to each slice's rank, at most %d)",
                              full);
        return 0;
    }
    j->k = k > full ? full : (int)k;
    const char *bn = ss_arg(r, "backend");
    if (bn && strcmp(bn, "auto") != 0) {
        if (!(j->be = ss_backend_find(bn))) {
            *ret = ss_reply_error(r, "invalid_backend", "unknown backend; valid: %s", ss_backend_names());
            return 0;
        }
    } else { /* auto: the fastest for one slice of this shape at k */
        ss_factors shape = {.m = m->m, .n = m->n, .rank = full, .nsv = full,
                            .bit_depth = m->nii.bytes_per_voxel == 1 ? 8 : 16};
        j->be = ss_backend_choose(&shape, j->k);
    }
    const char *reason = NULL;
    if (!j->be->available(&reason)) {
        *ret = ss_reply_error(r, "backend_unavailable", "backend %s is unavailable: %s", j->be->name,
                              reason ? reason : "unknown reason");
        return 0;
    }
    if (!j->be->reconstruct_f32 && !(r->srv->gpuq && !strcmp(j->be->device, "gpu"))) {
        *ret = ss_reply_error(r, "backend_unavailable", "backend %s does not rebuild volumes here", j->be->name);
        return 0;
    }
    if (!png) return 1;
    j->axis = small_arg(r, "axis", m->axis, 2);
    if (j->axis < 0) {
        *ret = ss_reply_error(r, "invalid_parameter", "axis must be 0, 1 or 2 (the voxel axes i, j, k)");
        return 0;
    }
    int rows, cols, count;
    ss_volume_slice_dims(&m->nii, j->axis, &rows, &cols, &count);
    const char *is = ss_arg(r, "index");
    long index = is ? ss_parse_uint(is) : count / 2;
    if (index < 0 || index >= count) {
        *ret = ss_reply_error(r, "invalid_parameter", "index must be an integer in 0..%d along axis %d", count - 1,
                              j->axis);
        return 0;
    }
    j->index = (int)index;
    return ss_parse_png_output(r, &j->bits, &j->window, &j->wc, &j->ww, ret);
}

/* The volume is ready: 1, or 0 after answering 409. */
static int check_ready(ss_req *r, const ss_vol_info *info, enum MHD_Result *ret) {
    if (info->state == SS_VOL_READY) return 1;
    if (info->state == SS_VOL_FAILED)
        *ret = ss_reply_error(r, "not_ready", "volume %s failed: %s", r->id, info->error);
    else
        *ret = ss_reply_error(r, "not_ready", "volume %s is %s (%d of %d slices done); retry later", r->id,
                              ss_vol_state_name(info->state), info->slices_done, info->meta.nslices);
    return 0;
}

enum MHD_Result ss_h_vreconstruct(ss_req *r) {
    enum MHD_Result ret;
    ss_vol_info info;
    if (!lookup(r, &info, &ret)) return ret;
    const char *fmt = ss_arg(r, "format");
    int nifti = fmt && (!strcmp(fmt, "nifti") || !strcmp(fmt, "nii.gz"));
    if (fmt && !nifti && strcmp(fmt, "png") != 0)
        return ss_reply_error(r, "invalid_parameter", "format must be png or nifti");
    vol_job *j = calloc(1, sizeof *j);
    if (!j) return ss_reply(r, 500, NULL);
    snprintf(j->id, sizeof j->id, "%s", r->id);
    if (!parse_read(r, &info, j, !nifti, &ret) || !check_ready(r, &info, &ret)) {
        free(j);
        return ret;
    }
    ss_server *srv = r->srv;
    if (nifti) {
        j->kind = VJ_NIFTI;
        snprintf(j->key, sizeof j->key, "vol|%s|%d|%s|nifti", j->id, j->k, j->be->name);
    } else {
        j->kind = VJ_PNG;
        if (j->window)
            snprintf(j->key, sizeof j->key, "vol|%s|%d|%d|%d|%s|%d|1|%.17g|%.17g", j->id, j->axis, j->index, j->k,
                     j->be->name, j->bits, j->wc, j->ww);
        else
            snprintf(j->key, sizeof j->key, "vol|%s|%d|%d|%d|%s|%d|0", j->id, j->axis, j->index, j->k, j->be->name,
                     j->bits);
    }
    snprintf(j->etag, sizeof j->etag, "\"%016llx\"", (unsigned long long)ss_fnv1a64(j->key));
    if (ss_if_none_match(r, j->etag)) {
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (resp) {
            MHD_add_response_header(resp, "ETag", j->etag);
            MHD_add_response_header(resp, "Cache-Control", ss_cache_control(srv));
            MHD_add_response_header(resp, "X-Backend", j->be->name);
        }
        free(j);
        return ss_reply(r, 304, resp);
    }
    if (!nifti && !ss_wants_no_cache(r)) {
        ss_rc_entry *e = ss_respcache_get(srv->rc, j->key);
        if (e) {
            free(j);
            return ss_reply_cached(r, e);
        }
    }
    return start(r, j, 1);
}

enum MHD_Result ss_h_vquality(ss_req *r) {
    enum MHD_Result ret;
    ss_vol_info info;
    if (!lookup(r, &info, &ret)) return ret;
    vol_job *j = calloc(1, sizeof *j);
    if (!j) return ss_reply(r, 500, NULL);
    snprintf(j->id, sizeof j->id, "%s", r->id);
    if (!parse_read(r, &info, j, 0, &ret) || !check_ready(r, &info, &ret)) {
        free(j);
        return ret;
    }
    j->kind = VJ_QUALITY;
    return start(r, j, 1);
}
