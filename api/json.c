/* json.c - the one JSON serialiser: API.md's documents (slice info, quality, backends, errors) with jansson */
#include "api/json.h"

#include "engine/volume.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/errors.h"
#include "engine/kernels.h"
#include "engine/svd.h"
#include "util/clock.h"

/* Adds key: value, consuming the value's reference; keeps the first failure. */
static int put(json_t *obj, const char *key, json_t *val, int ok) {
    if (!val) return 0;
    return json_object_set_new(obj, key, val) == 0 && ok;
}

json_t *ss_json_info(const ss_slice_info *in, int with_sv) {
    json_t *o = json_object();
    if (!o) return NULL;
    long long original = (long long)in->width * in->height * in->bit_depth / 8;
    long long stored = in->file_bytes; /* what the store holds: the .svd file's bytes */
    char created[32];
    ss_rfc3339(in->created, created, sizeof created);
    int ok = 1;
    ok = put(o, "id", json_string(in->id), ok);
    /* a name that is not UTF-8 (a raw file name) cannot be JSON: fall back to the id */
    json_t *name = json_string(in->name[0] ? in->name : in->id);
    ok = put(o, "name", name ? name : json_string(in->id), ok);
    ok = put(o, "width", json_integer(in->width), ok);
    ok = put(o, "height", json_integer(in->height), ok);
    ok = put(o, "bit_depth", json_integer(in->bit_depth), ok);
    ok = put(o, "rank", json_integer(in->rank), ok);
    ok = put(o, "original_kept", json_boolean(in->has_original), ok);
    /* what the slice takes in the store against what was sent (the quota counts the former);
     * a ratio named by what it divides, so that nobody reads it upside down */
    ok = put(o, "stored_bytes", json_integer(stored), ok);
    ok = put(o, "upload_bytes", in->upload_bytes > 0 ? json_integer(in->upload_bytes) : json_null(), ok);
    ok = put(o, "stored_vs_upload",
             in->upload_bytes > 0 ? json_real((double)stored / (double)in->upload_bytes) : json_null(), ok);
    ok = put(o, "original_bytes", json_integer(original), ok);
    ok = put(o, "file_bytes", json_integer(in->file_bytes), ok); /* = stored_bytes, for older clients */
    if (with_sv) {
        json_t *sv = json_array();
        for (int i = 0; sv && in->singular_values && i < in->nsv; i++)
            if (json_array_append_new(sv, json_real(in->singular_values[i]))) ok = 0;
        ok = put(o, "singular_values", sv ? sv : json_null(), ok);
    }
    ok = put(o, "created", json_string(created), ok);
    if (ok) return o;
    json_decref(o);
    return NULL;
}

json_t *ss_json_slice_info(const ss_factors *f, long long stored_bytes) {
    ss_slice_info in;
    memset(&in, 0, sizeof in);
    snprintf(in.id, sizeof in.id, "%s", f->id);
    snprintf(in.name, sizeof in.name, "%s", f->name);
    in.width = f->n;
    in.height = f->m;
    in.bit_depth = f->bit_depth;
    in.rank = f->rank;
    in.nsv = f->nsv;
    in.created = f->created;
    in.file_bytes = stored_bytes;
    in.upload_bytes = f->upload_bytes;
    in.has_original = f->orig != NULL;
    in.singular_values = (float *)f->S; /* read only here */
    return ss_json_info(&in, 1);
}

json_t *ss_json_volume_quality(const ss_volume_quality *q, int with_index) {
    json_t *o = json_object();
    if (!o) return NULL;
    if (with_index) json_object_set_new(o, "index", json_integer(q->index));
    json_object_set_new(o, "k", json_integer(q->k));
    json_object_set_new(o, "mse", q->no_original ? json_null() : json_real(q->mse));
    json_object_set_new(o, "psnr", q->psnr_null ? json_null() : json_real(q->psnr));
    json_object_set_new(o, "ssim", q->ssim_null ? json_null() : json_real(q->ssim));
    json_object_set_new(o, "energy", json_real(q->energy));
    return o;
}

json_t *ss_json_quality(const char *id, const char *backend, const ss_quality *q) {
    json_t *o = json_object();
    if (!o) return NULL;
    int ok = 1;
    ok = put(o, "id", json_string(id), ok);
    ok = put(o, "k", json_integer(q->k), ok);
    ok = put(o, "backend", json_string(backend), ok);
    ok = put(o, "rank", json_integer(q->rank), ok);
    ok = put(o, "original_kept", json_boolean(!q->no_original), ok);
    ok = put(o, "mse", q->no_original ? json_null() : json_real(q->mse), ok);
    ok = put(o, "psnr", q->psnr_null ? json_null() : json_real(q->psnr), ok);
    ok = put(o, "psnr_data_range", q->psnr_dr_null ? json_null() : json_real(q->psnr_data_range), ok);
    ok = put(o, "ssim", q->ssim_null ? json_null() : json_real(q->ssim), ok);
    ok = put(o, "hausdorff", q->hausdorff_null ? json_null() : json_real(q->hausdorff), ok);
    ok = put(o, "energy", json_real(q->energy), ok);
    ok = put(o, "float32_bytes_at_k", json_integer(q->stored_bytes_at_k), ok);
    if (q->no_original)
        ok = put(o, "note", json_string("the original was not kept (keep-original=false): no mse, psnr, ssim or "
                                        "hausdorff; energy is from the stored singular values"), ok);
    if (ok) return o;
    json_decref(o);
    return NULL;
}

json_t *ss_json_backends(void) {
    json_t *arr = json_array();
    json_t *o = json_object();
    if (!arr || !o || json_object_set(o, "backends", arr)) goto fail;
    for (int i = 0; i < ss_backend_count(); i++) {
        const ss_backend *b = ss_backend_at(i);
        const char *reason = NULL;
        int avail = b->available(&reason);
        json_t *e = json_object();
        if (!e) goto fail;
        int ok = 1;
        ok = put(e, "name", json_string(b->name), ok);
        ok = put(e, "device", json_string(b->device), ok);
        ok = put(e, "available", json_boolean(avail), ok);
        ok = put(e, "reason", avail ? json_null() : json_string(reason ? reason : "unavailable"), ok);
        ok = put(e, "description", json_string(b->description), ok);
        if (!ok || json_array_append_new(arr, e)) {
            json_decref(e);
            goto fail;
        }
    }
    json_decref(arr);
    return o;
fail:
    json_decref(arr);
    json_decref(o);
    return NULL;
}

struct MHD_Response *ss_resp_json(json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) return NULL;
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(strlen(s), s, free);
    if (!r) {
        free(s);
        return NULL;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    return r;
}

struct MHD_Response *ss_resp_error(const char *code, const char *message) {
    /* json_pack validates UTF-8: fall back to a generic text if a message is not. */
    json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", message);
    if (!j) j = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", "invalid request");
    struct MHD_Response *resp = ss_resp_json(j);
    const ss_api_error *e = ss_api_error_find(code);
    if (resp && e && e->header.name && e->header.value)
        MHD_add_response_header(resp, e->header.name, e->header.value);
    return resp;
}

struct MHD_Response *ss_resp_errorf(const char *code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ss_resp_error(code, msg);
}
