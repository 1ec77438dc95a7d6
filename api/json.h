/* json.h - JSON bodies of the API: slice info, errors, responses from jansson values */
#ifndef SS_JSON_H
#define SS_JSON_H
#include <jansson.h>
#include <microhttpd.h>

#include "server/store.h"

/* Slice info per API.md; singular_values only when with_sv. New reference or NULL. */
json_t *ss_json_info(const ss_slice_info *in, int with_sv);
/* A response with j serialised (j is consumed). NULL on ENOMEM. */
struct MHD_Response *ss_resp_json(json_t *j);
/* {"error": {"code", "message"}} with the headers its code carries (overloaded:
 * Retry-After; unauthorized: WWW-Authenticate). NULL on ENOMEM. */
struct MHD_Response *ss_resp_error(const char *code, const char *message);
/* The same with a printf-style message (cut at 511 bytes). */
struct MHD_Response *ss_resp_errorf(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
