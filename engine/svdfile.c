/* svdfile.c - the .svd file format: explicit little-endian (de)serialisation, validated on read */
#include "util/error.h"
#include "util/file.h"
#include "util/le.h"
#include "engine/svd.h"
#include "engine/compress.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* Header layout, version 1 (all little-endian, offsets in bytes). */
enum {
    OFF_MAGIC = 0,       /* "SVDSLICE" */
    OFF_VERSION = 8,     /* u32 */
    OFF_HDRSIZE = 12,    /* u32, SS_SVD_HEADER_BYTES */
    OFF_M = 16,          /* u32 height */
    OFF_N = 20,          /* u32 width */
    OFF_BITS = 24,       /* u32 8 or 16 */
    OFF_RANK = 28,       /* u32 1..nsv */
    OFF_NSV = 32,        /* u32 min(m, n) */
    OFF_FLAGS = 36,      /* u32 */
    OFF_CREATED = 40,    /* i64 */
    OFF_NAME = 48,       /* 256 bytes, NUL-terminated */
    OFF_ID = 304,        /* 72 bytes, NUL-terminated, [A-Za-z0-9_-]* */
    OFF_PAYLOAD_LEN = 376, /* u64 */
    OFF_PAYLOAD_CRC = 384, /* u32 */
    OFF_HEADER_CRC = 388,  /* u32 over bytes 0..387 */
    HDR_BYTES = 392,
    NAME_BYTES = 256,
    ID_BYTES = 72,
};
_Static_assert(HDR_BYTES == SS_SVD_HEADER_BYTES, "header size");

/* Version 2: the same up to the id, then (all little-endian) */
enum {
    OFF2_UPLOAD = 376,      /* u64 bytes of the upload, 0 = unknown */
    OFF2_FACT_LEN = 384,    /* u64 bytes of the factor section (0 when the original is kept) */
    OFF2_ORIG_LEN = 392,    /* u64 bytes of the original section (0 when not kept) */
    OFF2_ORIG_CODEC = 400,  /* u32 the section's codec: SS_ORIG_DEFLATE or SS_ORIG_JPEGLS for the
                             * original; 0 (quantised, range coded) or FACT_F32 for factors */
    OFF2_RESERVED = 404,    /* u32 0 */
    OFF2_PAYLOAD_LEN = 408, /* u64 4*nsv + factor section + original section */
    OFF2_PAYLOAD_CRC = 416, /* u32 */
    OFF2_HEADER_CRC = 420,  /* u32 over bytes 0..419 */
    HDR2_BYTES = 424,
};
_Static_assert(HDR2_BYTES == SS_SVD2_HEADER_BYTES, "v2 header size");

#define SVD_MAGIC "SVDSLICE"
#define SVD_VERSION 1u
#define SVD_VERSION2 2u
#define FLAG_ORIG 1u
#define FLAG_FACTORS 2u /* v2: factors stored (else derived from the original) */
#define FACT_F32 3u     /* v2 factor codec: U then Vt as float32, unquantised (qstep < 0) */
/* Per side. Far above any slice; keeps every product below 2^63. */
#define SVD_MAX_SIDE (1u << 20)


static int id_char_ok(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

long ss_stored_text_len(const unsigned char *field, size_t size, size_t max_len, int is_id, const char **why) {
    const size_t len = strnlen((const char *)field, size);
    if (len == size || len >= max_len) {
        *why = is_id ? "bad id length" : "unterminated name";
        return -1;
    }
    for (size_t i = 0; is_id && i < len; i++)
        if (!id_char_ok((char)field[i])) {
            *why = "bad id character";
            return -1;
        }
    /* Zero padding keeps the encoding canonical: one file per content. */
    for (size_t i = len; i < size; i++)
        if (field[i]) {
            *why = is_id ? "bad id padding" : "bad name padding";
            return -1;
        }
    return (long)len;
}

/* Payload bytes for a shape; all inputs are <= SVD_MAX_SIDE so nothing overflows. */
static uint64_t payload_bytes(uint64_t m, uint64_t n, uint64_t rank, uint64_t nsv, int orig) {
    return 4 * (m * rank + nsv + rank * n) + (orig ? 2 * m * n : 0);
}

/* The header fields both versions share (magic up to the id). */
static void put_common_header(unsigned char *buf, const ss_factors *f, uint32_t version, uint32_t hdr_bytes,
                              uint32_t flags) {
    memcpy(buf + OFF_MAGIC, SVD_MAGIC, 8);
    ss_put_le32(buf + OFF_VERSION, version);
    ss_put_le32(buf + OFF_HDRSIZE, hdr_bytes);
    ss_put_le32(buf + OFF_M, (uint32_t)f->m);
    ss_put_le32(buf + OFF_N, (uint32_t)f->n);
    ss_put_le32(buf + OFF_BITS, (uint32_t)f->bit_depth);
    ss_put_le32(buf + OFF_RANK, (uint32_t)f->rank);
    ss_put_le32(buf + OFF_NSV, (uint32_t)f->nsv);
    ss_put_le32(buf + OFF_FLAGS, flags);
    ss_put_le64(buf + OFF_CREATED, (uint64_t)f->created);
    /* strnlen bounds the copy even if a caller left a field unterminated. */
    memcpy(buf + OFF_NAME, f->name, strnlen(f->name, NAME_BYTES - 1));
    memcpy(buf + OFF_ID, f->id, strnlen(f->id, sizeof f->id - 1));
}

int ss_svd_serialize_v1(const ss_factors *f, unsigned char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    int nsv = f->m < f->n ? f->m : f->n;
    if (f->m <= 0 || f->n <= 0 || (uint32_t)f->m > SVD_MAX_SIDE || (uint32_t)f->n > SVD_MAX_SIDE ||
        f->nsv != nsv || f->rank < 1 || f->rank > nsv || (f->bit_depth != 8 && f->bit_depth != 16))
        return ss_fail(SS_EINVAL, "cannot serialise factors %dx%d rank %d", f->m, f->n, f->rank);
    const size_t m = (size_t)f->m, n = (size_t)f->n, r = (size_t)f->rank;
    const uint64_t plen = payload_bytes(m, n, r, (uint64_t)nsv, f->orig != NULL);
    if (plen > SIZE_MAX - HDR_BYTES) return ss_fail(SS_ENOMEM, "factors too large to serialise");
    const size_t total = HDR_BYTES + (size_t)plen;
    unsigned char *buf = calloc(1, total);
    if (!buf) return ss_fail(SS_ENOMEM, "out of memory serialising %zu bytes", total);

    unsigned char *p = buf + HDR_BYTES;
    for (size_t i = 0; i < m * r; i++, p += 4) ss_put_lef32(p, f->U[i]);
    for (size_t i = 0; i < (size_t)nsv; i++, p += 4) ss_put_lef32(p, f->S[i]);
    for (size_t i = 0; i < r * n; i++, p += 4) ss_put_lef32(p, f->Vt[i]);
    if (f->orig)
        for (size_t i = 0; i < m * n; i++, p += 2) {
            p[0] = (unsigned char)(f->orig[i] & 0xff);
            p[1] = (unsigned char)(f->orig[i] >> 8);
        }

    put_common_header(buf, f, SVD_VERSION, HDR_BYTES, f->orig ? FLAG_ORIG : 0);
    ss_put_le64(buf + OFF_PAYLOAD_LEN, plen);
    ss_put_le32(buf + OFF_PAYLOAD_CRC, (uint32_t)crc32_z(0, buf + HDR_BYTES, (size_t)plen));
    ss_put_le32(buf + OFF_HEADER_CRC, (uint32_t)crc32_z(0, buf, OFF_HEADER_CRC));
    *out = buf;
    *out_len = total;
    return SS_OK;
}

/* Where a file's parts lie, from its checked header. */
typedef struct layout {
    uint32_t version;
    size_t hdr;          /* header bytes */
    uint64_t plen;       /* payload bytes */
    int orig;            /* original pixels stored */
    uint64_t fact_len;   /* v2: factor section bytes */
    uint64_t orig_len;   /* v2: original section bytes */
    int codec;           /* v2: the original's codec */
} layout;

/* Validates the header against len and fills out's scalars (arrays untouched).
 * Everything is checked before the caller allocates anything. */
static int parse_header(const unsigned char *b, size_t len, ss_factors *out, layout *L) {
    memset(L, 0, sizeof *L);
    if (len < HDR_BYTES)
        return ss_fail(SS_ECORRUPT, ".svd: %zu bytes, shorter than its %d-byte header", len,
                       HDR_BYTES);
    if (memcmp(b + OFF_MAGIC, SVD_MAGIC, 8) != 0) return ss_fail(SS_ECORRUPT, ".svd: bad magic");
    uint32_t version = ss_get_le32(b + OFF_VERSION);
    if (version != SVD_VERSION && version != SVD_VERSION2)
        return ss_fail(SS_ECORRUPT, ".svd: unsupported version %u", (unsigned)version);
    const size_t hdr = version == SVD_VERSION ? HDR_BYTES : HDR2_BYTES;
    if (len < hdr)
        return ss_fail(SS_ECORRUPT, ".svd: %zu bytes, shorter than its %zu-byte header", len, hdr);
    const size_t off_hcrc = version == SVD_VERSION ? OFF_HEADER_CRC : OFF2_HEADER_CRC;
    if ((uint32_t)crc32_z(0, b, off_hcrc) != ss_get_le32(b + off_hcrc))
        return ss_fail(SS_ECORRUPT, ".svd: header checksum mismatch");
    if (ss_get_le32(b + OFF_HDRSIZE) != hdr)
        return ss_fail(SS_ECORRUPT, ".svd: bad header size %u", (unsigned)ss_get_le32(b + OFF_HDRSIZE));
    uint32_t m = ss_get_le32(b + OFF_M), n = ss_get_le32(b + OFF_N), bits = ss_get_le32(b + OFF_BITS);
    uint32_t rank = ss_get_le32(b + OFF_RANK), nsv = ss_get_le32(b + OFF_NSV);
    uint32_t flags = ss_get_le32(b + OFF_FLAGS);
    if (m < 1 || n < 1 || m > SVD_MAX_SIDE || n > SVD_MAX_SIDE)
        return ss_fail(SS_ECORRUPT, ".svd: bad dimensions %ux%u", (unsigned)m, (unsigned)n);
    if (nsv != (m < n ? m : n) || rank < 1 || rank > nsv)
        return ss_fail(SS_ECORRUPT, ".svd: bad rank %u / %u", (unsigned)rank, (unsigned)nsv);
    if (bits != 8 && bits != 16)
        return ss_fail(SS_ECORRUPT, ".svd: bad bit depth %u", (unsigned)bits);
    if (version == SVD_VERSION ? (flags & ~FLAG_ORIG) != 0 : (flags != FLAG_ORIG && flags != FLAG_FACTORS))
        return ss_fail(SS_ECORRUPT, ".svd: bad flags 0x%x", (unsigned)flags);
    const unsigned char *name = b + OFF_NAME, *id = b + OFF_ID;
    const char *why;
    if (ss_stored_text_len(name, NAME_BYTES, NAME_BYTES, 0, &why) < 0) return ss_fail(SS_ECORRUPT, ".svd: %s", why);
    const long idlen = ss_stored_text_len(id, ID_BYTES, sizeof out->id, 1, &why);
    if (idlen < 0) return ss_fail(SS_ECORRUPT, ".svd: %s", why);

    const int orig = (flags & FLAG_ORIG) != 0;
    uint64_t plen, upload = 0;
    if (version == SVD_VERSION) {
        plen = payload_bytes(m, n, rank, nsv, orig);
        if (ss_get_le64(b + OFF_PAYLOAD_LEN) != plen)
            return ss_fail(SS_ECORRUPT, ".svd: payload size field disagrees with the dimensions");
    } else {
        upload = ss_get_le64(b + OFF2_UPLOAD);
        L->fact_len = ss_get_le64(b + OFF2_FACT_LEN);
        L->orig_len = ss_get_le64(b + OFF2_ORIG_LEN);
        L->codec = (int)ss_get_le32(b + OFF2_ORIG_CODEC);
        plen = ss_get_le64(b + OFF2_PAYLOAD_LEN);
        /* every size far below 2^62, so the sums below cannot wrap */
        if (upload > ((uint64_t)1 << 62) || L->fact_len > ((uint64_t)1 << 62) || L->orig_len > ((uint64_t)1 << 62) ||
            ss_get_le32(b + OFF2_RESERVED) != 0 || plen != 4 * (uint64_t)nsv + L->fact_len + L->orig_len)
            return ss_fail(SS_ECORRUPT, ".svd: section sizes disagree");
        /* Compressed sections can expand a long way (a blank slice's original, zero factors):
         * what a file may make a reader allocate is bounded by its size, or 1 GiB, so a forged
         * small file cannot ask for terabytes. Version 1 is bounded by its exact size. */
        const uint64_t decoded = 4 * (uint64_t)rank * (m + 2 * (uint64_t)n) + (orig ? 2 * (uint64_t)m * n : 0);
        if (decoded > ((uint64_t)1 << 30) && decoded / 4096 > (uint64_t)len)
            return ss_fail(SS_ECORRUPT, ".svd: %llu bytes would decode to %llu", (unsigned long long)len,
                           (unsigned long long)decoded);
        if (orig ? (L->fact_len != 0 || L->orig_len == 0 || (L->codec != SS_ORIG_DEFLATE && L->codec != SS_ORIG_JPEGLS))
                 : (L->orig_len != 0 ||
                    (L->codec == 0 ? L->fact_len < 5 * (uint64_t)rank + 5
                                   : L->codec != FACT_F32 || L->fact_len != 4 * (uint64_t)rank * ((uint64_t)m + n))))
            return ss_fail(SS_ECORRUPT, ".svd: bad sections for its flags");
    }
    if ((uint64_t)(len - hdr) != plen)
        return ss_fail(SS_ECORRUPT, ".svd: %zu bytes, expected %llu (truncated or padded)", len,
                       (unsigned long long)(plen + hdr));

    memset(out, 0, sizeof *out);
    out->m = (int)m;
    out->n = (int)n;
    out->bit_depth = (int)bits;
    out->rank = (int)rank;
    out->nsv = (int)nsv;
    out->created = (int64_t)ss_get_le64(b + OFF_CREATED);
    out->upload_bytes = (long long)upload;
    memcpy(out->name, name, NAME_BYTES); /* NUL inside, checked above */
    memcpy(out->id, id, (size_t)idlen);
    L->version = version;
    L->hdr = hdr;
    L->plen = plen;
    L->orig = orig;
    return SS_OK;
}

size_t ss_svd_header_bytes(const void *head, size_t have) {
    const unsigned char *b = head;
    if (have >= OFF_VERSION + 4 && memcmp(b, SVD_MAGIC, 8) == 0 && ss_get_le32(b + OFF_VERSION) == SVD_VERSION2)
        return HDR2_BYTES;
    return HDR_BYTES;
}

int ss_svd_read_header(const void *buf, size_t len, ss_factors *out) {
    layout L;
    return parse_header(buf, len, out, &L);
}

int ss_svd_read_index(const void *head, size_t file_len, ss_factors *out, int *has_orig, size_t *sv_off) {
    layout L;
    int rc = parse_header(head, file_len, out, &L);
    if (rc) return rc;
    *has_orig = L.orig;
    /* v1: after U; v2: first in the payload */
    *sv_off = L.version == SVD_VERSION ? HDR_BYTES + 4 * (size_t)out->m * (size_t)out->rank : HDR2_BYTES;
    return SS_OK;
}

/* As LAPACK returns them: finite, >= 0 (!(s >= 0) also catches NaN), sorted. */
static int sv_bad(const float *S, size_t i) {
    const float s = S[i];
    return !isfinite(s) || !(s >= 0) || (i > 0 && s > S[i - 1]);
}

int ss_svd_read_sv(const void *buf, int nsv, float *S) {
    const unsigned char *p = buf;
    int bad = 0;
    for (size_t i = 0; i < (size_t)nsv; i++, p += 4) {
        S[i] = ss_get_lef32(p);
        bad |= sv_bad(S, i);
    }
    return bad ? ss_fail(SS_ECORRUPT, ".svd: non-finite, negative or unsorted singular values") : SS_OK;
}

/* The header and both checksums: everything short of decoding the values. */
static int parse_verified(const unsigned char *b, size_t len, ss_factors *h, layout *L) {
    int rc = parse_header(b, len, h, L);
    if (rc) return rc;
    const size_t off_pcrc = L->version == SVD_VERSION ? OFF_PAYLOAD_CRC : OFF2_PAYLOAD_CRC;
    if ((uint32_t)crc32_z(0, b + L->hdr, (size_t)L->plen) != ss_get_le32(b + off_pcrc))
        return ss_fail(SS_ECORRUPT, ".svd: payload checksum mismatch");
    return SS_OK;
}

int ss_svd_verify(const void *buf, size_t len, ss_factors *hdr) {
    layout L;
    return parse_verified(buf, len, hdr, &L);
}

static int deserialize_v1(const unsigned char *b, const ss_factors *h, int orig, ss_factors *f) {
    const size_t m = (size_t)h->m, n = (size_t)h->n, r = (size_t)h->rank;
    const unsigned char *p = b + HDR_BYTES;
    int bad = 0;
    for (size_t i = 0; i < m * r; i++, p += 4) bad |= !isfinite(f->U[i] = ss_get_lef32(p));
    for (size_t i = 0; i < (size_t)h->nsv; i++, p += 4) {
        f->S[i] = ss_get_lef32(p);
        bad |= sv_bad(f->S, i);
    }
    for (size_t i = 0; i < r * n; i++, p += 4) bad |= !isfinite(f->Vt[i] = ss_get_lef32(p));
    if (bad) return ss_fail(SS_ECORRUPT, ".svd: non-finite, negative or unsorted factor values");
    if (orig) {
        const unsigned maxv = (1u << h->bit_depth) - 1;
        for (size_t i = 0; i < m * n; i++, p += 2) {
            unsigned v = (unsigned)p[0] | (unsigned)p[1] << 8;
            bad |= v > maxv;
            f->orig[i] = (uint16_t)v;
        }
        if (bad) return ss_fail(SS_ECORRUPT, ".svd: original sample above %u", maxv);
    }
    return SS_OK;
}

/* v2 with the original kept: the factors are computed from it again (what the upload did). */
static int factors_from_orig(ss_factors *f) {
    ss_image img = {.width = f->n, .height = f->m, .bit_depth = f->bit_depth, .px = f->orig};
    ss_factors *g = NULL;
    int rc = ss_svd_factor(&img, f->rank, 0, &g);
    if (rc) return rc == SS_ENOMEM ? rc : ss_fail(SS_ECORRUPT, ".svd: cannot factorise the original: %s", ss_error());
    float *t;
    t = f->U, f->U = g->U, g->U = t;
    t = f->Vt, f->Vt = g->Vt, g->Vt = t;
    t = f->W, f->W = g->W, g->W = t;
    t = f->S, f->S = g->S, g->S = t;
    ss_factors_free(g);
    return SS_OK;
}

static int deserialize_v2(const unsigned char *b, const layout *L, ss_factors *f) {
    const unsigned char *p = b + HDR2_BYTES;
    if (ss_svd_read_sv(p, f->nsv, f->S)) return SS_ECORRUPT;
    p += 4 * (size_t)f->nsv;
    if (!L->orig && L->codec == FACT_F32) {
        int bad = 0;
        const size_t nu = (size_t)f->m * (size_t)f->rank, nv = (size_t)f->rank * (size_t)f->n;
        for (size_t i = 0; i < nu; i++, p += 4) bad |= !isfinite(f->U[i] = ss_get_lef32(p));
        for (size_t i = 0; i < nv; i++, p += 4) bad |= !isfinite(f->Vt[i] = ss_get_lef32(p));
        f->qstep = -1;
        return bad ? ss_fail(SS_ECORRUPT, ".svd: non-finite factor values") : SS_OK;
    }
    if (!L->orig) return ss_factors_decode(p, (size_t)L->fact_len, f);
    int rc = ss_orig_decode(p, (size_t)L->orig_len, L->codec, f->m, f->n, f->bit_depth, f->orig);
    return rc ? rc : factors_from_orig(f);
}

int ss_svd_deserialize(const void *buf, size_t len, ss_factors **out) {
    *out = NULL;
    const unsigned char *b = buf;
    ss_factors h;
    layout L;
    int rc = parse_verified(b, len, &h, &L);
    if (rc) return rc;

    ss_factors *f;
    rc = ss_factors_alloc(h.m, h.n, h.rank, h.bit_depth, L.orig, &f);
    if (rc) return rc;
    f->created = h.created;
    f->upload_bytes = h.upload_bytes;
    memcpy(f->name, h.name, sizeof f->name);
    memcpy(f->id, h.id, sizeof f->id);
    rc = L.version == SVD_VERSION ? deserialize_v1(b, &h, L.orig, f) : deserialize_v2(b, &L, f);
    if (rc) {
        ss_factors_free(f);
        return rc;
    }
    if (L.version == SVD_VERSION || !L.orig) ss_factors_update_w(f);
    *out = f;
    return SS_OK;
}

int ss_svd_read_original(const void *buf, size_t len, ss_factors *hdr, uint16_t **px) {
    *px = NULL;
    layout L;
    int rc = parse_verified(buf, len, hdr, &L);
    if (rc) return rc;
    if (!L.orig) return ss_fail(SS_EINVAL, ".svd: the original was not kept");
    const size_t m = (size_t)hdr->m, n = (size_t)hdr->n, r = (size_t)hdr->rank;
    uint16_t *p = malloc(sizeof(uint16_t) * m * n);
    if (!p) return ss_fail(SS_ENOMEM, "out of memory for %zux%zu pixels", n, m);
    const unsigned char *b = buf;
    if (L.version == SVD_VERSION) {
        const unsigned char *q = b + HDR_BYTES + 4 * (m * r + (size_t)hdr->nsv + r * n);
        const unsigned maxv = (1u << hdr->bit_depth) - 1;
        for (size_t i = 0; i < m * n && rc == SS_OK; i++, q += 2) {
            unsigned v = (unsigned)q[0] | (unsigned)q[1] << 8;
            if (v > maxv) rc = ss_fail(SS_ECORRUPT, ".svd: original sample above %u", maxv);
            p[i] = (uint16_t)v;
        }
    } else {
        rc = ss_orig_decode(b + HDR2_BYTES + 4 * (size_t)hdr->nsv, (size_t)L.orig_len, L.codec, hdr->m, hdr->n,
                            hdr->bit_depth, p);
    }
    if (rc) {
        free(p);
        return rc;
    }
    *px = p;
    return SS_OK;
}

int ss_svd_serialize(const ss_factors *f, unsigned char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    int nsv = f->m < f->n ? f->m : f->n;
    if (f->m <= 0 || f->n <= 0 || (uint32_t)f->m > SVD_MAX_SIDE || (uint32_t)f->n > SVD_MAX_SIDE ||
        f->nsv != nsv || f->rank < 1 || f->rank > nsv || (f->bit_depth != 8 && f->bit_depth != 16) ||
        f->upload_bytes < 0)
        return ss_fail(SS_EINVAL, "cannot serialise factors %dx%d rank %d", f->m, f->n, f->rank);
    unsigned char *sec = NULL;
    size_t sec_len = 0;
    int codec = 0;
    int rc = SS_OK;
    if (f->orig) {
        rc = ss_orig_encode(f->orig, f->m, f->n, f->bit_depth, 0, &sec, &sec_len, &codec);
    } else if (f->qstep < 0) { /* float32, as computed */
        const size_t nu = (size_t)f->m * (size_t)f->rank, nv = (size_t)f->rank * (size_t)f->n;
        sec_len = 4 * (nu + nv);
        codec = FACT_F32;
        if (!(sec = malloc(sec_len))) return ss_fail(SS_ENOMEM, "out of memory serialising factors");
        unsigned char *q = sec;
        for (size_t i = 0; i < nu; i++, q += 4) ss_put_lef32(q, f->U[i]);
        for (size_t i = 0; i < nv; i++, q += 4) ss_put_lef32(q, f->Vt[i]);
    } else {
        rc = ss_factors_encode(f, &sec, &sec_len);
    }
    if (rc) return rc;
    const uint64_t plen = 4 * (uint64_t)nsv + sec_len;
    if (plen > SIZE_MAX - HDR2_BYTES) {
        free(sec);
        return ss_fail(SS_ENOMEM, "factors too large to serialise");
    }
    const size_t total = HDR2_BYTES + (size_t)plen;
    unsigned char *buf = calloc(1, total);
    if (!buf) {
        free(sec);
        return ss_fail(SS_ENOMEM, "out of memory serialising %zu bytes", total);
    }
    unsigned char *p = buf + HDR2_BYTES;
    for (size_t i = 0; i < (size_t)nsv; i++, p += 4) ss_put_lef32(p, f->S[i]);
    memcpy(p, sec, sec_len);
    free(sec);

    put_common_header(buf, f, SVD_VERSION2, HDR2_BYTES, f->orig ? FLAG_ORIG : FLAG_FACTORS);
    ss_put_le64(buf + OFF2_UPLOAD, (uint64_t)f->upload_bytes);
    ss_put_le64(buf + OFF2_FACT_LEN, f->orig ? 0 : sec_len);
    ss_put_le64(buf + OFF2_ORIG_LEN, f->orig ? sec_len : 0);
    ss_put_le32(buf + OFF2_ORIG_CODEC, (uint32_t)codec);
    ss_put_le64(buf + OFF2_PAYLOAD_LEN, plen);
    ss_put_le32(buf + OFF2_PAYLOAD_CRC, (uint32_t)crc32_z(0, buf + HDR2_BYTES, (size_t)plen));
    ss_put_le32(buf + OFF2_HEADER_CRC, (uint32_t)crc32_z(0, buf, OFF2_HEADER_CRC));
    *out = buf;
    *out_len = total;
    return SS_OK;
}

int ss_svd_save(const char *path, const ss_factors *f) {
    unsigned char *buf;
    size_t len;
    int rc = ss_svd_serialize(f, &buf, &len);
    if (rc) return rc;
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        int e = errno;
        free(buf);
        return ss_fail(e == ENOSPC || e == EDQUOT ? SS_ENOSPC : SS_EIO, "cannot create %s: %s",
                       path, strerror(e));
    }
    size_t wrote = fwrite(buf, 1, len, fp);
    int e = errno;
    free(buf);
    if (wrote != len) {
        fclose(fp);
        return ss_fail(e == ENOSPC || e == EDQUOT ? SS_ENOSPC : SS_EIO, "cannot write %s: %s",
                       path, strerror(e));
    }
    if (fclose(fp) != 0) {
        e = errno;
        return ss_fail(e == ENOSPC || e == EDQUOT ? SS_ENOSPC : SS_EIO, "cannot write %s: %s",
                       path, strerror(e));
    }
    return SS_OK;
}

int ss_svd_load(const char *path, ss_factors **out) {
    *out = NULL;
    unsigned char *buf;
    size_t len;
    /* The bound only keeps the allocation sane; parse_header checks the size exactly. */
    int rc = ss_read_file(path, SIZE_MAX / 2, &buf, &len);
    if (rc == SS_ETOOLARGE) return ss_fail(SS_ECORRUPT, "%s: too large for a .svd file", path);
    if (rc != SS_OK) return rc;
    rc = ss_svd_deserialize(buf, len, out);
    free(buf);
    return rc;
}
