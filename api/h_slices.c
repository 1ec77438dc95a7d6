/* h_slices.c - handlers of /slices: upload (in the worker pool), list, info, original, factors, delete */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/errors.h"
#include "api/http.h"
#include "api/json.h"
#include "util/clock.h"
#include "util/error.h"
#include "engine/compress.h"
#include "engine/png.h"
#include "engine/svd.h"

/* An upload handed to the pool: decoding and factorising take milliseconds
 * to seconds, far too long for the polling thread. */
typedef struct upload_job {
    ss_pool_job pj; /* first: the pool hands this pointer back */
    ss_req *r;
    unsigned char *png;
    size_t len;
    size_t reserved;  /* upload budget bytes png holds (see ss_upload_give_back) */
    long long mem;    /* memory budget bytes reserved to decode and factorise (ss_server.mem_bytes) */
    char name[256];   /* "" = the multipart filename, else the id */
    ss_target target; /* rank=, energy=, psnr= or none (every component) */
    int keep;         /* keep-original */
} upload_job;


/* Frees the body and gives its bytes back to the upload budget. */
static void drop_body(upload_job *j) {
    free(j->png);
    j->png = NULL;
    ss_upload_give_back(&j->r->srv->upload_bytes, j->reserved);
    j->reserved = 0;
}

/* Frees the decoded image and the factors and gives the job's memory back: before any answer,
 * so a client that uploads again as soon as it has its answer finds the memory free. Takes srv,
 * not j->r: once answered, the request may be gone. */
static void drop_work(ss_server *srv, upload_job *j, ss_image *img, ss_factors **f) {
    ss_factors_free(*f);
    *f = NULL;
    ss_image_free(img);
    ss_upload_give_back(&srv->mem_bytes, (size_t)j->mem);
    j->mem = 0;
}

/* When --max-expansion is set and the encoding (file bytes) is more than that many times the
 * upload's bytes: answers 413 and returns 1. */
static int over_expansion(upload_job *j, ss_image *img, ss_factors **f, long long file) {
    const double maxx = j->r->srv->cfg->max_expansion;
    const long long png = (long long)j->len;
    if (maxx <= 0 || (double)file <= maxx * (double)png) return 0;
    const int m = img->height, n = img->width, bits = img->bit_depth, rank = (*f)->rank, kept = (*f)->orig != NULL;
    drop_work(j->r->srv, j, img, f);
    ss_job_fail(j->r, "too_large",
                "this %dx%d %d-bit image at rank %d would be stored in %lld bytes, %.1f times its %lld-byte "
                "upload, over --max-expansion %g: %s",
                n, m, bits, rank, file, (double)file / (double)png, png, maxx,
                kept ? "upload it with keep-original=false (and psnr= or rank=)" : "upload it with a lower psnr= or rank=");
    return 1;
}

/* 200/201 with body (the slice's info, taken) and, for 201, its Location. */
static void reply_info_async(ss_req *r, const char *id, int status, json_t *body) {
    struct MHD_Response *resp = ss_resp_json(body);
    if (resp && status == 201) {
        char loc[96];
        snprintf(loc, sizeof loc, "/slices/%s", id);
        MHD_add_response_header(resp, "Location", loc);
    }
    ss_job_end(r, status, resp);
}

/* The info of what ss_store_put just stored (or found stored) as f, from f itself
 * when it is no longer stored: ids name content, so a DELETE of the same content
 * may remove the slice any time after the put, and the upload still succeeded. */
static json_t *stored_info(ss_server *srv, const ss_factors *f, int existed, long long upload_bytes,
                           long long stored_bytes) {
    ss_slice_info info;
    if (existed && ss_store_info(srv->store, f->id, &info) == 0) { /* the stored slice's name and time */
        json_t *body = ss_json_info(&info, 1);
        ss_slice_info_free(&info);
        return body;
    }
    (void)upload_bytes; /* f carries it */
    return ss_json_slice_info(f, stored_bytes);
}

static void upload_run(ss_pool_job *pj, ss_workspace *ws) {
    upload_job *j = (upload_job *)pj;
    ss_req *r = j->r;
    ss_server *srv = r->srv;
    ss_image img = {0};
    ss_factors *f = NULL;
    if (__atomic_load_n(&srv->stopping, __ATOMIC_SEQ_CST)) {
        /* Not acknowledged yet: refusing it lets shutdown finish now instead
         * of factorising the whole queue first. */
        drop_body(j);
        drop_work(srv, j, &img, &f);
        free(j);
        ss_job_fail(r, "overloaded", "server is shutting down");
        return;
    }
    int rc = ss_png_decode(j->png, j->len, srv->cfg->max_side, &img);
    drop_body(j);
    if (rc) {
        drop_work(srv, j, &img, &f);
        ss_job_fail_engine(r, rc, SS_FROM_BODY, "decode");
        goto out;
    }
    int nsv = img.width < img.height ? img.width : img.height;
    if (j->target.kind == SS_TARGET_RANK && j->target.value > nsv) {
        int w = img.width, h = img.height;
        drop_work(srv, j, &img, &f);
        ss_job_fail(r, "invalid_parameter", "rank must be an integer in 1..%d for a %dx%d image", nsv, w, h);
        goto out;
    }
    /* The id names the content and what is kept of it. With the original kept, the factors are
     * computed from it, so the rank alone tells two encodings apart (an id that predates the
     * options); without it, the target does (the quantisation follows from it). */
    char id[65] = "";
    char what[64];
    const int rank_given = j->target.kind == SS_TARGET_RANK ? (int)j->target.value : 0;
    if (j->target.kind == SS_TARGET_ENERGY) snprintf(what, sizeof what, "energy=%.17g", j->target.value);
    else if (j->target.kind == SS_TARGET_PSNR) snprintf(what, sizeof what, "psnr=%.17g", j->target.value);
    else snprintf(what, sizeof what, "rank=%d", rank_given ? rank_given : nsv);
    ss_slice_info have;
    int found = 0; /* a slice found stored may be deleted before its info is read: then store it again */
    if (!j->keep) {
        ss_content_id_lossy(&img, what, id);
        found = ss_store_info(srv->store, id, &have) == 0;
    } else if (j->target.kind == SS_TARGET_NONE || j->target.kind == SS_TARGET_RANK) {
        for (int tries = 0; tries < 3 && !found && ss_store_find_content(srv->store, &img, rank_given, id); tries++)
            found = ss_store_info(srv->store, id, &have) == 0;
    }
    if (found) { /* idempotent: skip the SVD */
        json_t *body = ss_json_info(&have, 1);
        ss_slice_info_free(&have);
        drop_work(srv, j, &img, &f);
        reply_info_async(r, id, 200, body);
        goto out;
    }
    rc = ss_svd_factor(&img, 0, j->keep, &f);
    if (rc) { /* SS_ETOOLARGE: a shape LAPACK cannot take is the body's fault (413) */
        drop_work(srv, j, &img, &f);
        ss_job_fail_engine(r, rc, SS_FROM_BODY, "factorise");
        goto out;
    }
    if (j->target.kind != SS_TARGET_NONE || !j->keep) {
        /* the rank from the target, checked on the quantised, rounded pixels served */
        const size_t mn = (size_t)img.width * (size_t)img.height;
        float *A = malloc(sizeof(float) * mn);
        const int maxval = (1 << img.bit_depth) - 1;
        rc = A ? SS_OK : ss_fail(SS_ENOMEM, "out of memory");
        for (size_t i = 0; A && i < mn; i++) A[i] = img.px[i];
        if (rc == SS_OK) rc = ss_compress_fit(f, A, j->target, maxval, maxval, !j->keep, NULL);
        free(A);
        if (rc) {
            drop_work(srv, j, &img, &f);
            ss_job_fail_engine(r, rc, 0, "compress");
            goto out;
        }
    }
    if (j->keep) {
        ss_content_id(&img, f->rank, id);
        if (j->target.kind != SS_TARGET_NONE && j->target.kind != SS_TARGET_RANK &&
            ss_store_info(srv->store, id, &have) == 0) { /* the same rank stored before */
            json_t *body = ss_json_info(&have, 1);
            ss_slice_info_free(&have);
            drop_work(srv, j, &img, &f);
            reply_info_async(r, id, 200, body);
            goto out;
        }
    }
    memcpy(f->id, id, sizeof f->id);
    const char *name = j->name[0] ? j->name : id;
    snprintf(f->name, sizeof f->name, "%s", name);
    f->created = (int64_t)time(NULL);
    f->upload_bytes = (long long)j->len;
    unsigned char *enc = NULL;
    size_t enc_len = 0;
    rc = ss_svd_serialize(f, &enc, &enc_len);
    if (rc) {
        drop_work(srv, j, &img, &f);
        ss_job_fail_engine(r, rc, 0, "encode");
        goto out;
    }
    const long long file = (long long)enc_len;
    if (over_expansion(j, &img, &f, file)) {
        free(enc);
        goto out;
    }
    int existed = 0;
    rc = ss_store_put_encoded(srv->store, f, enc, enc_len, &existed);
    free(enc);
    json_t *body = rc ? NULL : stored_info(srv, f, existed, (long long)j->len, file);
    if (rc == 0 && !existed) { /* the first /reconstruct needs no load (with the original kept, no SVD) */
        ss_store_cache_factors(srv->store, f);
        f = NULL;
    }
    drop_work(srv, j, &img, &f);
    if (rc) {
        ss_job_fail_engine(r, rc, 0, "store");
    } else {
        if (!existed) {
            ss_store_set_upload_bytes(srv->store, id, (long long)j->len); /* a shared store's column */
            __atomic_add_fetch(&srv->png_bytes_total, (long long)j->len, __ATOMIC_RELAXED);
            __atomic_add_fetch(&srv->file_bytes_total, file, __ATOMIC_RELAXED);
        }
        reply_info_async(r, id, existed ? 200 : 201, body);
    }
out:
    drop_work(srv, j, &img, &f);
    free(j);
}

/* Strict decimal integer in 1..INT_MAX; 0 when s is not one. */
static int parse_pos_int(const char *s) {
    long long v = 0;
    if (!s || !*s) return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return 0;
        v = v * 10 + (*s - '0');
        if (v > 1000000000) return 0;
    }
    return (int)v;
}

/* Strict decimal number (no exponent, no sign, no spaces); 0 when s is not one. */
static int parse_number(const char *s, double *out) {
    if (!s || !*s || strlen(s) > 32) return 0;
    int dots = 0, digits = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '.') dots++;
        else if (*p >= '0' && *p <= '9') digits++;
        else return 0;
    }
    if (dots > 1 || !digits) return 0;
    *out = strtod(s, NULL);
    return isfinite(*out);
}

/* rank=, energy=, psnr= (one at most) and keep-original=: api/http.h. */
int ss_parse_store_options(ss_req *r, ss_target *t, int *keep, enum MHD_Result *ret) {
    const char *rank_s = ss_arg(r, "rank"), *energy_s = ss_arg(r, "energy"), *psnr_s = ss_arg(r, "psnr");
    const char *keep_s = ss_arg(r, "keep-original");
    *t = (ss_target){SS_TARGET_NONE, 0};
    *keep = 1;
    if (!!rank_s + !!energy_s + !!psnr_s > 1) {
        *ret = ss_reply_error(r, "invalid_parameter", "rank, energy and psnr each choose the rank: give one at most");
        return 0;
    }
    double v = 0;
    if (rank_s) {
        int rank = parse_pos_int(rank_s);
        if (!rank) {
            *ret = ss_reply_error(r, "invalid_parameter", "rank must be a positive integer");
            return 0;
        }
        *t = (ss_target){SS_TARGET_RANK, rank};
    } else if (energy_s) {
        if (!parse_number(energy_s, &v) || !(v > 0 && v <= 1)) {
            *ret = ss_reply_error(r, "invalid_parameter",
                                  "energy must be a decimal fraction of the singular values' energy, in (0, 1]");
            return 0;
        }
        *t = (ss_target){SS_TARGET_ENERGY, v};
    } else if (psnr_s) {
        if (!parse_number(psnr_s, &v) || !(v >= 1 && v <= 200)) {
            *ret = ss_reply_error(r, "invalid_parameter", "psnr must be a decimal number of dB in 1..200");
            return 0;
        }
        *t = (ss_target){SS_TARGET_PSNR, v};
    }
    if (keep_s) {
        if (!strcmp(keep_s, "true")) *keep = 1;
        else if (!strcmp(keep_s, "false")) *keep = 0;
        else {
            *ret = ss_reply_error(r, "invalid_parameter", "keep-original must be true or false");
            return 0;
        }
    }
    return 1;
}

enum MHD_Result ss_h_upload(ss_req *r) {
    const char *name = ss_arg(r, "name");
    ss_target target;
    int keep;
    enum MHD_Result ret;
    if (name && (ss_arg_has_nul(r, "name") || (*name && !ss_valid_name(name))))
        return ss_reply_error(r, "invalid_parameter", "name must be printable UTF-8 of at most 255 bytes");
    if (!ss_parse_store_options(r, &target, &keep, &ret)) return ret;
    /* What the worker will allocate is reserved now, from the PNG's header, before the job is
     * queued: a job never waits in the queue for memory, and a reservation that cannot be had
     * is a 503 the client can retry. A header that does not parse, or is over --max-side, fails
     * the decode before any pixel is allocated: it needs nothing. */
    ss_server *srv = r->srv;
    int w = 0, h = 0, bits = 0;
    long long need = 0;
    if (ss_upload_png_shape(r->up.data, r->up.len, &w, &h, &bits) == 0 && w <= srv->cfg->max_side &&
        h <= srv->cfg->max_side)
        need = ss_server_upload_need(w, h, bits);
    if (need && (target.kind != SS_TARGET_NONE || !keep)) {
        /* ss_compress_fit's data and product as floats and its quantised factors at full rank;
         * never more than the whole budget, so that one such upload can still run alone */
        const long long p = w < h ? w : h;
        need += 8LL * w * h + 4LL * p * (w + h);
        if (need > srv->mem_budget) need = srv->mem_budget;
    }
    if (ss_budget_take(&srv->mem_bytes, srv->mem_budget, need) != 0)
        return ss_reply_error(r, "overloaded",
                              "server busy: decoding and factorising this %dx%d %d-bit image takes %lld MiB "
                              "and %lld of the %lld MiB memory budget (--memory-mb) are in use; retry later",
                              w, h, bits, (need + (1 << 20) - 1) >> 20,
                              (__atomic_load_n(&srv->mem_bytes, __ATOMIC_RELAXED) + (1 << 20) - 1) >> 20,
                              srv->mem_budget >> 20);
    upload_job *j = calloc(1, sizeof *j);
    if (!j) {
        ss_upload_give_back(&srv->mem_bytes, (size_t)need);
        return ss_reply(r, 500, NULL);
    }
    j->pj.run = upload_run;
    j->r = r;
    j->mem = need;
    j->target = target;
    j->keep = keep;
    if (name && *name)
        snprintf(j->name, sizeof j->name, "%s", name);
    else if (ss_valid_name(r->up.filename))
        snprintf(j->name, sizeof j->name, "%s", r->up.filename);
    j->png = r->up.data; /* the job owns the body now, and its share of the budget */
    j->len = r->up.len;
    j->reserved = r->up.reserved;
    r->up.data = NULL;
    r->up.len = r->up.cap = r->up.reserved = 0;
    if (ss_job_begin(r) != 0) {
        drop_body(j);
        ss_upload_give_back(&srv->mem_bytes, (size_t)j->mem);
        free(j);
        return ss_reply_error(r, "overloaded", "server is shutting down");
    }
    int rc = ss_pool_submit(srv->pool, &j->pj);
    if (rc) {
        drop_body(j);
        ss_upload_give_back(&srv->mem_bytes, (size_t)j->mem);
        free(j);
        ss_job_reject(r, rc);
    }
    return MHD_YES;
}

enum MHD_Result ss_h_list(ss_req *r) {
    ss_slice_info *all = NULL;
    size_t n = 0;
    int rc = ss_store_list(r->srv->store, &all, &n);
    if (rc) return ss_reply_engine(r, rc, 0, "list");
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) json_array_append_new(arr, ss_json_info(&all[i], 0));
    free(all);
    return ss_reply(r, 200, ss_resp_json(arr ? json_pack("{s:o}", "slices", arr) : NULL));
}

/* Validates r->id: answers 400 and returns 0 when malformed. */
static int check_id(ss_req *r, enum MHD_Result *ret) {
    if (ss_valid_id(r->id)) return 1;
    *ret = ss_reply_error(r, "invalid_id", "slice id must match [A-Za-z0-9_-]{1,64}");
    return 0;
}

enum MHD_Result ss_h_info(ss_req *r) {
    enum MHD_Result ret;
    if (!check_id(r, &ret)) return ret;
    ss_slice_info info;
    int rc = ss_store_info(r->srv->store, r->id, &info);
    if (rc) return ss_reply_engine(r, rc, SS_FROM_LOOKUP, "info");
    struct MHD_Response *resp = ss_resp_json(ss_json_info(&info, 1));
    ss_slice_info_free(&info);
    return ss_reply(r, 200, resp);
}

enum MHD_Result ss_h_delete(ss_req *r) {
    enum MHD_Result ret;
    if (!check_id(r, &ret)) return ret;
    int rc = ss_store_delete(r->srv->store, r->id);
    if (rc == SS_EINVAL) return ss_reply_engine(r, rc, SS_FROM_LOOKUP, "delete");
    ss_respcache_purge_id(r->srv->rc, r->id); /* also on an I/O error: the slice may be gone */
    if (rc) return ss_reply_engine(r, rc, SS_FROM_LOOKUP, "delete");
    return ss_reply(r, 204, MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT));
}

/* GET /slices/{id}/original and /factors on a worker: encoding a 2048x2048
 * PNG or reading a whole .svd file takes tens of milliseconds, which on the
 * polling thread would stall every other connection. */
typedef struct read_job {
    ss_pool_job pj; /* first: the pool hands this pointer back */
    ss_req *r;
    char id[80];  /* as r->id, validated */
    int factors; /* 1: the .svd file, 0: the original as PNG */
} read_job;

static void send_original(ss_req *r, const char *id) {
    /* From the factors cache when there; else only the original is decoded from the file (a
     * load into the cache would factorise it) */
    const ss_factors *f = ss_store_acquire_cached(r->srv->store, id);
    ss_factors hdr;
    uint16_t *px = NULL;
    int rc;
    if (f && f->orig) {
        hdr = *f;
        px = f->orig;
    } else {
        if (f) ss_store_release(r->srv->store, f);
        f = NULL;
        unsigned char *buf = NULL;
        size_t blen = 0;
        rc = ss_store_read_file(r->srv->store, id, &buf, &blen); /* verified, a corrupt file dropped */
        if (rc == SS_OK) {
            rc = ss_svd_read_original(buf, blen, &hdr, &px);
            if (rc == SS_EINVAL) rc = ss_fail(SS_EINVAL, "no slice %s", id); /* not kept: checked before */
        }
        free(buf);
        if (rc) {
            ss_job_fail_engine(r, rc, SS_FROM_LOOKUP, "load");
            return;
        }
    }
    unsigned char *png = NULL;
    size_t len = 0;
    rc = ss_png_encode(px, hdr.n, hdr.m, hdr.bit_depth, &png, &len);
    if (f) ss_store_release(r->srv->store, f);
    else free(px);
    if (rc) {
        ss_job_fail_engine(r, rc, 0, "encode");
        return;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(len, png, free);
    if (!resp) {
        free(png);
    } else {
        MHD_add_response_header(resp, "Content-Type", "image/png");
        MHD_add_response_header(resp, "Cache-Control", r->srv->cfg->auth_reads ? "private, max-age=3600"
                                                                              : "public, max-age=31536000, immutable");
    }
    ss_job_end(r, 200, resp); /* NULL: answered 500 out of memory */
}

static void send_factors(ss_req *r, const char *id) {
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = ss_store_read_file(r->srv->store, id, &buf, &len);
    if (rc) {
        ss_job_fail_engine(r, rc, SS_FROM_LOOKUP, "read");
        return;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(len, buf, free);
    if (!resp) {
        free(buf);
    } else {
        char cd[128];
        snprintf(cd, sizeof cd, "attachment; filename=\"%s.svd\"", id);
        MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
        MHD_add_response_header(resp, "Content-Disposition", cd);
    }
    ss_job_end(r, 200, resp);
}

static void read_run(ss_pool_job *pj, ss_workspace *ws) {
    (void)ws;
    read_job *j = (read_job *)pj;
    ss_req *r = j->r;
    if (__atomic_load_n(&r->srv->stopping, __ATOMIC_SEQ_CST))
        ss_job_fail(r, "overloaded", "server is shutting down");
    else if (j->factors)
        send_factors(r, j->id);
    else
        send_original(r, j->id);
    free(j);
}

static void read_expire(ss_pool_job *pj, double waited_s) {
    read_job *j = (read_job *)pj;
    ss_req *r = j->r;
    free(j);
    ss_job_fail(r, "overloaded", "queued %.0f ms, past the %d ms deadline; retry later", waited_s * 1e3,
                r->srv->cfg->job_deadline_ms);
}

static enum MHD_Result start_read(ss_req *r, int factors) {
    enum MHD_Result ret;
    if (!check_id(r, &ret)) return ret;
    ss_slice_info info; /* an unknown id is answered here: a lookup, no I/O */
    int rc = ss_store_info_scalars(r->srv->store, r->id, &info);
    if (rc) return ss_reply_engine(r, rc, SS_FROM_LOOKUP, "info");
    if (!factors && !info.has_original)
        return ss_reply_error(r, "original_not_kept",
                              "slice %s was uploaded with keep-original=false: its original pixels are not stored; "
                              "/reconstruct serves it at k = 1..%d",
                              r->id, info.rank);
    read_job *j = calloc(1, sizeof *j);
    if (!j) return ss_reply(r, 500, NULL);
    j->pj.run = read_run;
    j->pj.expire = read_expire;
    j->r = r;
    snprintf(j->id, sizeof j->id, "%s", r->id);
    j->factors = factors;
    if (ss_job_begin(r) != 0) {
        free(j);
        return ss_reply_error(r, "overloaded", "server is shutting down");
    }
    j->pj.deadline = ss_now() + r->srv->cfg->job_deadline_ms * 1e-3;
    rc = ss_pool_submit(r->srv->pool, &j->pj);
    if (rc) {
        free(j);
        ss_job_reject(r, rc);
    }
    return MHD_YES;
}

enum MHD_Result ss_h_original(ss_req *r) { return start_read(r, 0); }

enum MHD_Result ss_h_factors(ss_req *r) { return start_read(r, 1); }
