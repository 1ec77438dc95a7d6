/* multipart.c - upload bodies: a raw PNG (by signature, whatever Content-Type) or a multipart `file` field */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/http.h"

/* The body's first bytes decide its kind; until 8 have arrived it is UNDECIDED. */
enum { UP_UNDECIDED, UP_RAW, UP_MULTIPART, UP_OTHER };

/* Past this a buffer grows by this much at a time, not by doubling: a body the server holds
 * never holds more than this of budget it has not received (doubling held up to twice). */
#define UPLOAD_STEP ((size_t)1 << 20)

static const unsigned char k_png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

int ss_upload_png_shape(const unsigned char *png, size_t len, int *width, int *height, int *bits) {
    /* the signature, then IHDR: length 13, "IHDR", width and height big-endian, bit depth */
    if (!png || len < 33 || memcmp(png, k_png_sig, 8) != 0 || memcmp(png + 12, "IHDR", 4) != 0) return -1;
    const unsigned char *p = png + 16;
    uint32_t w = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    uint32_t h = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
    if (!w || !h || w > INT_MAX || h > INT_MAX) return -1;
    *width = (int)w;
    *height = (int)h;
    *bits = p[8] == 16 ? 16 : 8; /* what ss_png_decode makes of it */
    return 0;
}

void ss_upload_begin(ss_upload *u, size_t limit) {
    memset(u, 0, sizeof *u);
    u->limit = limit;
}

void ss_upload_set_budget(ss_upload *u, long long *held, long long budget) {
    u->held = held;
    u->budget = budget;
}

void ss_upload_give_back(long long *held, size_t n) {
    if (held && n) __atomic_sub_fetch(held, (long long)n, __ATOMIC_RELAXED);
}

int ss_budget_take(long long *held, long long budget, long long n) {
    if (!held || n <= 0) return 0;
    if (__atomic_add_fetch(held, n, __ATOMIC_RELAXED) > budget) {
        __atomic_sub_fetch(held, n, __ATOMIC_RELAXED);
        return -1;
    }
    return 0;
}

/* Takes n more bytes of the server-wide budget for u; -1 when it is spent. */
static int reserve(ss_upload *u, size_t n) {
    if (ss_budget_take(u->held, u->budget, (long long)n) != 0) return -1;
    if (u->held) u->reserved += n;
    return 0;
}

/* Frees the buffered bytes and gives their reservation back. */
static void drop_data(ss_upload *u) {
    free(u->data);
    u->data = NULL;
    u->len = u->cap = 0;
    ss_upload_give_back(u->held, u->reserved);
    u->reserved = 0;
}

void ss_upload_free(ss_upload *u) {
    if (u->pp) MHD_destroy_post_processor(u->pp);
    drop_data(u);
    memset(u, 0, sizeof *u);
}

/* The capacity to grow to for need bytes: doubling from 64 KiB up to UPLOAD_STEP, then
 * UPLOAD_STEP at a time, and never past the declared length (a body cannot outgrow its
 * Content-Length) or the limit. So a 17 MB body holds 17 MB of the budget, not 32, and only
 * once 16 MB of it have arrived: holding what was declared before it arrives would let a
 * client pin the budget with headers alone. */
static size_t next_cap(const ss_upload *u, size_t need) {
    size_t bound = u->limit;
    if (u->declared && u->declared < (unsigned long long)bound) bound = (size_t)u->declared;
    size_t cap = !u->cap ? 65536 : u->cap < UPLOAD_STEP ? 2 * u->cap : u->cap + UPLOAD_STEP;
    if (cap < need) cap = need;
    if (cap > bound) cap = bound;
    return cap < need ? need : cap; /* need <= limit, and MHD ends a body at its Content-Length */
}

/* Appends to u->data within the limit; past it (or past the server-wide
 * budget) sets too_large (overloaded) and keeps nothing more. */
static void append(ss_upload *u, const char *data, size_t size) {
    if (u->too_large || u->overloaded || !size) return;
    if (u->len + size > u->limit) {
        u->too_large = 1;
        drop_data(u);
        return;
    }
    if (u->len + size > u->cap) {
        size_t cap = next_cap(u, u->len + size);
        if (reserve(u, cap - u->cap) != 0) {
            u->overloaded = 1;
            drop_data(u);
            return;
        }
        unsigned char *nd = realloc(u->data, cap);
        if (!nd) { /* treat as too large: the client gets 413, the server survives */
            ss_upload_give_back(u->held, cap - u->cap);
            u->reserved -= cap - u->cap;
            u->too_large = 1;
            return;
        }
        u->data = nd;
        u->cap = cap;
    }
    memcpy(u->data + u->len, data, size);
    u->len += size;
}

static enum MHD_Result on_field(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                                const char *content_type, const char *transfer_encoding, const char *data,
                                uint64_t off, size_t size) {
    ss_upload *u = cls;
    if (!key || strcmp(key, "file") != 0) return MHD_YES; /* other fields are skipped, not kept */
    if (off == 0 && (size > 0 || !u->file_fields)) {
        if (++u->file_fields == 1 && filename) {
            size_t n = strlen(filename);
            if (n < sizeof u->filename) memcpy(u->filename, filename, n + 1);
        }
    }
    if (u->file_fields == 1) append(u, data, size);
    return MHD_YES;
}

static int is_multipart(struct MHD_Connection *c) {
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    return ct && !strncasecmp(ct, "multipart/form-data", 19);
}

/* Chooses the body's kind from its first bytes (held in u->data). */
static void decide(ss_upload *u, struct MHD_Connection *c) {
    if (u->any || (u->len >= 8 && !memcmp(u->data, k_png_sig, 8))) {
        u->mode = UP_RAW;
        return;
    }
    if (is_multipart(c)) {
        u->pp = MHD_create_post_processor(c, 65536, on_field, u);
        if (u->pp) {
            unsigned char *prefix = u->data;
            size_t n = u->len, prefix_reserved = u->reserved;
            u->data = NULL;
            u->len = u->cap = u->reserved = 0;
            u->mode = UP_MULTIPART;
            MHD_post_process(u->pp, (const char *)prefix, n);
            free(prefix);
            ss_upload_give_back(u->held, prefix_reserved);
            return;
        }
    }
    u->mode = UP_OTHER;
    drop_data(u);
}

static int feed_rest(ss_upload *u, const char *data, size_t size) {
    if (u->mode == UP_RAW)
        append(u, data, size);
    else if (u->mode == UP_MULTIPART && MHD_post_process(u->pp, data, size) != MHD_YES)
        u->mode = UP_OTHER; /* malformed form: answered 415 at the end */
    return 0;
}

/* The request's Content-Length, 0 when absent or not a plain number (chunked). */
static unsigned long long declared_length(struct MHD_Connection *c) {
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Transfer-Encoding");
    if (!cl || te) return 0; /* with both, MHD reads the chunks */
    char *end = NULL;
    unsigned long long n = strtoull(cl, &end, 10);
    return end != cl && !*end ? n : 0;
}

int ss_upload_feed(ss_upload *u, struct MHD_Connection *c, const char *data, size_t size) {
    if (!u->seen) u->declared = declared_length(c);
    u->seen += size;
    /* Past the limit nothing is kept; a client streaming on and on is dropped. */
    if (u->seen > (unsigned long long)u->limit) {
        u->too_large = 1;
        if (u->seen > 4ULL * u->limit + (1ULL << 20)) return -1;
        return 0;
    }
    switch (u->mode) {
    case UP_UNDECIDED: {
        size_t take = size;
        if (u->len + take > 8) take = 8 - u->len;
        append(u, data, take);
        if (u->len < 8) return 0;
        decide(u, c);
        data += take;
        size -= take;
        return size ? feed_rest(u, data, size) : 0;
    }
    default:
        return feed_rest(u, data, size);
    }
}

/* Once the body is whole: gives back what the buffer holds beyond it (a chunked body's last
 * step, a multipart form's framing), so a body queued for decoding holds its own size. */
static void trim(ss_upload *u) {
    if (!u->data || u->cap - u->len < 4096) return;
    unsigned char *nd = realloc(u->data, u->len ? u->len : 1);
    if (!nd) return; /* keeps the larger buffer, still counted */
    ss_upload_give_back(u->held, u->cap - u->len);
    if (u->held) u->reserved -= u->cap - u->len;
    u->data = nd;
    u->cap = u->len;
}

const char *ss_upload_finish(ss_upload *u, struct MHD_Connection *c, const char **why) {
    if (u->too_large) {
        *why = "body over the byte limit";
        return "too_large";
    }
    if (u->overloaded) {
        *why = "server busy: too many upload bytes in flight, retry later";
        return "overloaded";
    }
    if (u->mode == UP_UNDECIDED) decide(u, c);
    if (u->mode == UP_MULTIPART) {
        MHD_destroy_post_processor(u->pp);
        u->pp = NULL;
        if (u->too_large) {
            *why = "file over the byte limit";
            return "too_large";
        }
        if (u->overloaded) {
            *why = "server busy: too many upload bytes in flight, retry later";
            return "overloaded";
        }
        if (!u->file_fields) {
            *why = "multipart form has no 'file' field";
            return "unsupported_media_type";
        }
        if (u->len < 8 || memcmp(u->data, k_png_sig, 8) != 0) {
            *why = "the 'file' field is not a PNG";
            return "unsupported_media_type";
        }
        trim(u);
        return NULL;
    }
    if (u->mode == UP_RAW) {
        trim(u);
        return NULL;
    }
    *why = "body is neither a PNG nor a multipart form with a PNG 'file' field";
    return "unsupported_media_type";
}
