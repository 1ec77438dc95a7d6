/* assets.h - files of the web page (api/web/...), embedded at build time */
#ifndef SS_ASSETS_H
#define SS_ASSETS_H
#include <stddef.h>

typedef struct ss_asset {
    const char *path;          /* "/index.html", ... */
    const unsigned char *data; /* NUL-terminated for convenience; size excludes it */
    size_t size;
} ss_asset;

/* Table ended by an entry whose path is NULL. */
extern const ss_asset ss_assets[];

/* The asset at path, or NULL (h_misc.c). */
const ss_asset *ss_asset_find(const char *path);
/* The Content-Type an asset is served with, by its extension (h_misc.c). */
const char *ss_asset_content_type(const char *path);

#endif
