/* multipart.c - upload bodies: a raw PNG (by signature, whatever Content-Type) or a multipart `file` field */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/http.h"

/* The body's first bytes decide its kind; until 8 have arrived it is UNDECIDED. */
enum { UP_UNDECIDED, UP_RAW, UP_MULTIPART, UP_OTHER };

static const unsigned char k_png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

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

/* Takes n more bytes of the server-wide budget for u; -1 when it is spent. */
static int reserve(ss_upload *u, size_t n) {
    if (!u->held) return 0;
    if (__atomic_add_fetch(u->held, (long long)n, __ATOMIC_RELAXED) > u->budget) {
        __atomic_sub_fetch(u->held, (long long)n, __ATOMIC_RELAXED);
        return -1;
    }
    u->reserved += n;
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
        size_t cap = u->cap ? u->cap : 65536;
        while (cap < u->len + size) cap *= 2;
        if (cap > u->limit) cap = u->limit;
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
    if (u->len >= 8 && !memcmp(u->data, k_png_sig, 8)) {
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

int ss_upload_feed(ss_upload *u, struct MHD_Connection *c, const char *data, size_t size) {
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
        return NULL;
    }
    if (u->mode == UP_RAW) return NULL;
    *why = "body is neither a PNG nor a multipart form with a PNG 'file' field";
    return "unsupported_media_type";
}
