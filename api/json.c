/* json.c - JSON bodies of the API (slice info, errors) built with jansson */
#include "api/json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/svd.h"
#include "server/json_out.h"

/* RFC 3339 UTC of unix seconds. */
static void rfc3339(long long t, char *buf, size_t size) {
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || !strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, size, "1970-01-01T00:00:00Z");
}

json_t *ss_json_info(const ss_slice_info *in, int with_sv) {
    long long original = (long long)in->width * in->height * in->bit_depth / 8;
    long long stored = ss_stored_bytes(in->height, in->width, in->rank);
    char created[32];
    rfc3339(in->created, created, sizeof created);
    json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:I, s:I, s:f}", "id", in->id, "name", in->name,
                          "width", in->width, "height", in->height, "bit_depth", in->bit_depth, "rank",
                          in->rank, "stored_bytes", (json_int_t)stored, "original_bytes",
                          (json_int_t)original, "compression_ratio",
                          stored > 0 ? (double)original / (double)stored : 0.0);
    if (!o) return NULL;
    if (with_sv) {
        json_t *sv = json_array();
        for (int i = 0; sv && in->singular_values && i < in->nsv; i++)
            json_array_append_new(sv, json_real(in->singular_values[i]));
        json_object_set_new(o, "singular_values", sv ? sv : json_null());
    }
    json_object_set_new(o, "created", json_string(created));
    return o;
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
    if (resp && !strcmp(code, "overloaded")) MHD_add_response_header(resp, "Retry-After", "1");
    if (resp && !strcmp(code, "unauthorized")) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
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
