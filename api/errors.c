/* errors.c - the API's error codes (docs/API.md's table) and the engine's errors mapped onto them */
#include "api/errors.h"

#include <stddef.h>
#include <string.h>

#include "util/error.h"

const ss_api_error ss_api_errors[] = {
    {"invalid_k", 400, "k not an integer in 1..rank", {0}},
    {"invalid_backend", 400, "unknown backend name (the message lists the valid ones)", {0}},
    {"invalid_id", 400, "id not of the form [A-Za-z0-9_-]{1,64}", {0}},
    {"invalid_parameter", 400, "any other bad parameter (bits, window, rank, energy, psnr, keep-original, name)", {0}},
    {"unauthorized",
     401,
     "missing or wrong Authorization: Bearer KEY",
     {"WWW-Authenticate", "Bearer", "string", "Bearer"}},
    {"not_found", 404, "unknown slice, volume or path", {0}},
    {"original_not_kept", 404, "the slice was uploaded with keep-original=false: its original pixels are not stored", {0}},
    {"method_not_allowed",
     405,
     "the path does not serve this method",
     {"Allow", NULL, "string", "The methods the path serves"}},
    {"too_large",
     413,
     "body over the byte limit, image over the size limit, or .svd size over --max-expansion x PNG size",
     {0}},
    {"unsupported_media_type", 415, "body is not a PNG, nor a multipart form with a PNG `file` field", {0}},
    {"invalid_png", 422, "a PNG that does not decode", {0}},
    {"not_ready", 409, "the volume is queued, factorising or failed: GET /volumes/{id} says which", {0}},
    {"invalid_nifti",
     422,
     "a NIfTI file that does not decode: impossible header fields (dims, vox_offset, bitpix), data past the "
     "end, a truncated or broken gzip stream",
     {0}},
    {"unsupported_nifti", 422, "a valid NIfTI file svdslice does not take: complex, RGB or 64-bit integer data, "
     "5 or more dimensions, NaN or infinite voxels", {0}},
    {"backend_unavailable", 503, "backend known but unable to run here (the message says why)", {0}},
    /* One second: queues drain in milliseconds, and clients back off further on repeats. */
    {"overloaded",
     503,
     "queue full, job past its deadline, upload buffer or memory budget spent, or shutting down",
     {"Retry-After", "1", "integer", "Seconds to wait before retrying"}},
    {"store_unavailable",
     503,
     "the shared store (--store postgres://...) cannot be reached or timed out (the message says why)",
     {"Retry-After", "1", "integer", "Seconds to wait before retrying"}},
    {"insufficient_storage", 507, "the data directory is full or over its quota", {0}},
    {"internal", 500, "a bug: logged with a request id, which the message carries", {0}},
    {NULL, 0, NULL, {0}},
};

const ss_api_error *ss_api_error_find(const char *code) {
    for (const ss_api_error *e = ss_api_errors; code && e->code; e++)
        if (!strcmp(e->code, code)) return e;
    return NULL;
}

int ss_api_status(const char *code) {
    const ss_api_error *e = ss_api_error_find(code);
    return e ? e->status : 500;
}

/* Engine error -> API code. `from` 0 rows apply wherever the error came from. */
static const struct {
    int rc, from;
    const char *code;
} k_engine[] = {
    {SS_EINVAL, SS_FROM_LOOKUP, "not_found"},
    {SS_ENOTPNG, SS_FROM_BODY, "unsupported_media_type"},
    {SS_ECORRUPT, SS_FROM_BODY, "invalid_png"}, /* a corrupt .svd in the store stays internal */
    {SS_ETOOLARGE, SS_FROM_BODY, "too_large"},
    {SS_ENOTNIFTI, SS_FROM_VOLUME, "unsupported_media_type"},
    {SS_ECORRUPT, SS_FROM_VOLUME, "invalid_nifti"},
    {SS_EUNSUPPORTED, SS_FROM_VOLUME, "unsupported_nifti"},
    {SS_ETOOLARGE, SS_FROM_VOLUME, "too_large"},
    {SS_EINVAL, SS_FROM_VOLUME, "invalid_parameter"},
    {SS_ENOSPC, 0, "insufficient_storage"},
    {SS_EBUSY, 0, "overloaded"},
    {SS_ETIMEDOUT, 0, "overloaded"},
    {SS_ESTORE, 0, "store_unavailable"},
    {SS_EUNAVAIL, SS_FROM_QUEUE, "overloaded"},
    {SS_EUNAVAIL, SS_FROM_KERNEL, "backend_unavailable"},
};

const char *ss_api_code_of(int rc, int from) {
    for (size_t i = 0; i < sizeof k_engine / sizeof k_engine[0]; i++)
        if (k_engine[i].rc == rc && (!k_engine[i].from || (k_engine[i].from & from))) return k_engine[i].code;
    return "internal";
}
