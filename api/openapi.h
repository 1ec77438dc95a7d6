/* openapi.h - the served OpenAPI document: the hand-written api/openapi.base.json (embedded)
 * completed from the routes table (http.c) and the error table (errors.c) for this server's flags */
#ifndef SS_OPENAPI_H
#define SS_OPENAPI_H
#include <jansson.h>
#include <stddef.h>

#include "server/config.h"

/* The base document, embedded by cmake/embed.cmake. */
extern const unsigned char ss_openapi_base[];
extern const size_t ss_openapi_base_size;

/* The document for cfg: a new reference, or NULL after printing why (a base that does not parse,
 * or that disagrees with the routes table: a route without its operation, or the reverse). */
json_t *ss_openapi_build(const ss_config *cfg);
/* j as block-style YAML that YAML 1.1 and 1.2 readers both load back as j. malloc'd, or NULL. */
char *ss_yaml_dump(const json_t *j);

#endif
