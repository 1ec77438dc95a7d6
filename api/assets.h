/* assets.h - files of the web page (api/web/...) and api/openapi.yaml, embedded at build time */
#ifndef SS_ASSETS_H
#define SS_ASSETS_H
#include <stddef.h>

typedef struct ss_asset {
    const char *path;          /* "/index.html", "/openapi.yaml", ... */
    const unsigned char *data; /* NUL-terminated for convenience; size excludes it */
    size_t size;
} ss_asset;

/* Table ended by an entry whose path is NULL. */
extern const ss_asset ss_assets[];

#endif
