/* json_out.c - builds API.md's JSON documents with jansson */
#include "server/json_out.h"

#include <stdio.h>
#include <time.h>

#include "engine/kernels.h"

/* "2024-05-01T12:00:00Z" (RFC 3339, UTC) into buf. */
static void rfc3339_utc(int64_t unix_seconds, char *buf, size_t size) {
    time_t t = (time_t)unix_seconds;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        if (size) buf[0] = '\0';
    }
}

/* Adds key: value, consuming the value's reference; keeps the first failure. */
static int put(json_t *obj, const char *key, json_t *val, int ok) {
    if (!val) return 0;
    return json_object_set_new(obj, key, val) == 0 && ok;
}

json_t *ss_json_slice_info(const ss_factors *f) {
    json_t *o = json_object();
    json_t *sv = json_array();
    if (!o || !sv) goto fail;
    for (int i = 0; i < f->nsv; i++)
        if (json_array_append_new(sv, json_real(f->S[i]))) goto fail;
    long long original = (long long)f->m * f->n * f->bit_depth / 8;
    long long stored = ss_stored_bytes(f->m, f->n, f->rank);
    char created[32];
    rfc3339_utc(f->created, created, sizeof created);
    int ok = 1;
    ok = put(o, "id", json_string(f->id), ok);
    /* a name that is not UTF-8 (a raw file name) cannot be JSON: fall back to the id */
    json_t *name = json_string(f->name[0] ? f->name : f->id);
    ok = put(o, "name", name ? name : json_string(f->id), ok);
    ok = put(o, "width", json_integer(f->n), ok);
    ok = put(o, "height", json_integer(f->m), ok);
    ok = put(o, "bit_depth", json_integer(f->bit_depth), ok);
    ok = put(o, "rank", json_integer(f->rank), ok);
    ok = put(o, "stored_bytes", json_integer(stored), ok);
    ok = put(o, "original_bytes", json_integer(original), ok);
    ok = put(o, "compression_ratio", json_real((double)original / (double)stored), ok);
    ok = put(o, "singular_values", sv, ok);
    sv = NULL; /* now owned by o */
    ok = put(o, "created", json_string(created), ok);
    if (ok) return o;
fail:
    json_decref(sv);
    json_decref(o);
    return NULL;
}

json_t *ss_json_quality(const char *id, const char *backend, const ss_quality *q) {
    json_t *o = json_object();
    if (!o) return NULL;
    int ok = 1;
    ok = put(o, "id", json_string(id), ok);
    ok = put(o, "k", json_integer(q->k), ok);
    ok = put(o, "backend", json_string(backend), ok);
    ok = put(o, "mse", json_real(q->mse), ok);
    ok = put(o, "psnr", q->psnr_null ? json_null() : json_real(q->psnr), ok);
    ok = put(o, "ssim", q->ssim_null ? json_null() : json_real(q->ssim), ok);
    ok = put(o, "hausdorff", q->hausdorff_null ? json_null() : json_real(q->hausdorff), ok);
    ok = put(o, "energy", json_real(q->energy), ok);
    ok = put(o, "stored_bytes_at_k", json_integer(q->stored_bytes_at_k), ok);
    ok = put(o, "compression_ratio", json_real(q->compression_ratio), ok);
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
