/* json_out.h - the JSON documents of API.md (slice info, quality, backends) as jansson values */
#ifndef SS_JSON_OUT_H
#define SS_JSON_OUT_H
#include <stdint.h>

#include <jansson.h>

#include "engine/quality.h"
#include "engine/svd.h"

/* Each returns a new reference (caller json_decref()s it), NULL on ENOMEM. */

/* API.md "Slice info" of f: id, name, width, height, bit_depth, rank,
 * stored_bytes, original_bytes, compression_ratio, singular_values (all nsv),
 * created (RFC 3339 UTC). */
json_t *ss_json_slice_info(const ss_factors *f);
/* API.md /quality: id, k, backend, mse, psnr, ssim, hausdorff, energy,
 * stored_bytes_at_k, compression_ratio; null where quality.h flags null. */
json_t *ss_json_quality(const char *id, const char *backend, const ss_quality *q);
/* {"backends": [{name, device, available, reason, description}]}: the eight. */
json_t *ss_json_backends(void);

#endif
