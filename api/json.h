/* json.h - the one JSON serialiser: API.md's documents and error bodies, responses from jansson values */
#ifndef SS_JSON_H
#define SS_JSON_H
#include <jansson.h>
#include <microhttpd.h>

#include "engine/quality.h"
#include "engine/svd.h"
#include "server/store.h"

/* Each json_t * returned is a new reference (caller json_decref()s it), NULL on ENOMEM. */

/* API.md "Slice info": id, name, width, height, bit_depth, rank, original_kept,
 * stored_bytes (the .svd's bytes), upload_bytes, stored_vs_upload, original_bytes,
 * file_bytes, singular_values (only when with_sv), created (RFC 3339 UTC). */
json_t *ss_json_info(const ss_slice_info *in, int with_sv);
/* The same for factors in memory whose encoding takes stored_bytes, with singular values. */
json_t *ss_json_slice_info(const ss_factors *f, long long stored_bytes);
/* API.md /quality: id, k, backend, rank, original_kept, mse, psnr, psnr_data_range, ssim,
 * hausdorff, energy, float32_bytes_at_k (and a note without the original); null where
 * quality.h flags null. */
json_t *ss_json_quality(const char *id, const char *backend, const ss_quality *q);
/* A volume's or one slice's quality (engine/volume.h): {"index" (with_index), "k", "mse",
 * "psnr", "ssim", "energy"}, null where flagged; for /volumes/{id}/quality and the CLI. */
struct ss_volume_quality;
json_t *ss_json_volume_quality(const struct ss_volume_quality *q, int with_index);
/* {"backends": [{name, device, available, reason, description}]}: the eight. */
json_t *ss_json_backends(void);
/* A response with j serialised (j is consumed). NULL on ENOMEM. */
struct MHD_Response *ss_resp_json(json_t *j);
/* {"error": {"code", "message"}} with the header its code carries (api/errors.c). NULL on ENOMEM. */
struct MHD_Response *ss_resp_error(const char *code, const char *message);
/* The same with a printf-style message (cut at 511 bytes). */
struct MHD_Response *ss_resp_errorf(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
