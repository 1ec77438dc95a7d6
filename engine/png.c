/* png.c - PNG decode of untrusted bytes (libpng); grayscale encoders (our Huffman-only deflate, libdeflate, libpng); whole-file reads */
#include "engine/png.h"
#include "util/error.h"

#include <errno.h>
#include <fcntl.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Ancillary chunks (iCCP, zTXt, ...) are never needed; bound what one may allocate.
 * The malloc bound also caps what libpng inflates of each compressed one (iCCP,
 * zTXt, iTXt), and the cache bound how many text chunks it handles at all. */
#define SS_PNG_CHUNK_MALLOC_MAX (1u << 20)
#define SS_PNG_CHUNK_CACHE_MAX 128
/* Compressed image data libpng may still read once the last row is decoded. A
 * real stream ends within a few bytes (end of block, Adler-32); a bomb goes on:
 * 8 MB of IDAT inflate to 8 GB of zeros, ~18 s of CPU inside the last
 * png_read_row (png_read_finish_IDAT inflates the rest to check the stream
 * end, a benign error). 64 KiB inflate to at most ~66 MB. */
#define SS_PNG_IDAT_AFTER_IMAGE_MAX (64u << 10)
#define SS_PNG_CHUNK_IDAT 0x49444154u /* "IDAT", as png_get_io_chunk_type returns it */

/* Shared by the error callback and the caller: libpng's last message. */
typedef struct {
    char msg[160];
} png_errctx;

static void on_png_error(png_structp p, png_const_charp msg) {
    png_errctx *e = png_get_error_ptr(p);
    if (e) snprintf(e->msg, sizeof e->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(p, 1);
}

static void on_png_warning(png_structp p, png_const_charp msg) {
    (void)p;
    (void)msg; /* warnings (bad ancillary chunks) do not change the pixels */
}

/* ---- decode --------------------------------------------------------------- */

typedef struct {
    const unsigned char *p;
    size_t len, pos;
    png_uint_32 rows; /* the image's height once rows are being read, else 0 */
    int interlaced;
    size_t idat_after; /* IDAT bytes read after the last row */
} mem_cursor;

/* Whether every row of every pass has been decoded (libpng counts rows, and
 * for interlaced images passes, before it reads what follows them). */
static int image_done(png_structp p, const mem_cursor *c) {
    if (!c->rows) return 0;
    return c->interlaced ? png_get_current_pass_number(p) >= 7 : png_get_current_row_number(p) >= c->rows;
}

static void read_mem(png_structp p, png_bytep data, size_t n) {
    mem_cursor *c = png_get_io_ptr(p);
    if (n > c->len - c->pos) png_error(p, "truncated PNG");
    if (png_get_io_chunk_type(p) == SS_PNG_CHUNK_IDAT && image_done(p, c) &&
        (c->idat_after += n) > SS_PNG_IDAT_AFTER_IMAGE_MAX)
        png_error(p, "compressed image data goes on past the image");
    memcpy(data, c->p + c->pos, n);
    c->pos += n;
}

static uint32_t be32(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Our own look at IHDR (bytes 8..23) before libpng allocates anything. */
static int check_ihdr_size(const unsigned char *b, size_t len, int max_side) {
    if (len < 24 || memcmp(b + 12, "IHDR", 4) != 0) return SS_OK; /* libpng reports it */
    uint32_t w = be32(b + 16), h = be32(b + 20);
    if (w > (uint32_t)max_side || h > (uint32_t)max_side)
        return ss_fail(SS_ETOOLARGE, "PNG is %ux%u, over the %d pixel side limit", w, h, max_side);
    return SS_OK;
}

/* Asks libpng for one gray channel of 8 or 16 bits whatever the colour type;
 * returns the output bit depth. Gamma is pinned to 1/1 so samples pass through
 * as data values (MRI intensities, not display light). */
static int set_gray_transforms(png_structp p, png_infop info) {
    int ct = png_get_color_type(p, info), bd = png_get_bit_depth(p, info);
    int has_trns = png_get_valid(p, info, PNG_INFO_tRNS) != 0;
    png_set_gamma_fixed(p, PNG_FP_1, PNG_FP_1);
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(p);
    if (ct == PNG_COLOR_TYPE_GRAY && bd < 8) png_set_expand_gray_1_2_4_to_8(p);
    if (has_trns) png_set_tRNS_to_alpha(p);
    if (ct & PNG_COLOR_MASK_COLOR) png_set_rgb_to_gray_fixed(p, 1, -1, -1);
    if ((ct & PNG_COLOR_MASK_ALPHA) || has_trns) {
        /* Composite on black: strip_alpha would keep whatever colour sits under a=0. */
        png_color_16 black = {0, 0, 0, 0, 0};
        png_set_background_fixed(p, &black, PNG_BACKGROUND_GAMMA_SCREEN, 0, PNG_FP_1);
    }
    if (bd == 16) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        png_set_swap(p); /* rows land directly as native uint16 samples */
#endif
        return 16;
    }
    return 8;
}

int ss_png_decode(const void *buf, size_t len, int max_side, ss_image *out) {
    if (!out) return ss_fail(SS_EINVAL, "ss_png_decode: no output image");
    memset(out, 0, sizeof *out);
    if (!buf || max_side <= 0) return ss_fail(SS_EINVAL, "ss_png_decode: bad arguments");
    if (len < 8 || png_sig_cmp((png_const_bytep)buf, 0, 8) != 0)
        return ss_fail(SS_ENOTPNG, "not a PNG (bad signature)");
    int rc = check_ihdr_size(buf, len, max_side);
    if (rc) return rc;

    png_errctx err = {.msg = ""};
    mem_cursor cur = {.p = buf, .len = len};
    png_structp p = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, on_png_error, on_png_warning);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    if (!info) {
        png_destroy_read_struct(p ? &p : NULL, NULL, NULL);
        return ss_fail(SS_ENOMEM, "out of memory for the PNG decoder");
    }
    /* Changed after setjmp, read after a longjmp: must be volatile. */
    uint16_t *volatile px = NULL;
    volatile int failed_code = SS_ECORRUPT;
    if (setjmp(png_jmpbuf(p))) {
        free(px);
        png_destroy_read_struct(&p, &info, NULL);
        return ss_fail(failed_code, "invalid PNG: %s", err.msg);
    }
    png_set_read_fn(p, &cur, read_mem);
    png_set_user_limits(p, (png_uint_32)max_side, (png_uint_32)max_side);
    png_set_chunk_malloc_max(p, SS_PNG_CHUNK_MALLOC_MAX);
    png_set_chunk_cache_max(p, SS_PNG_CHUNK_CACHE_MAX);
    png_set_keep_unknown_chunks(p, PNG_HANDLE_CHUNK_NEVER, NULL, 0);
    png_read_info(p, info);

    png_uint_32 w = png_get_image_width(p, info), h = png_get_image_height(p, info);
    if (w > (png_uint_32)max_side || h > (png_uint_32)max_side) {
        failed_code = SS_ETOOLARGE; /* caught earlier by our IHDR check; kept as a guard */
        png_error(p, "image side over the limit");
    }
    int bits = set_gray_transforms(p, info);
    int passes = png_set_interlace_handling(p);
    png_read_update_info(p, info);
    size_t rowbytes = png_get_rowbytes(p, info);
    size_t stride = (size_t)w * sizeof(uint16_t); /* bytes per output row */
    if (png_get_channels(p, info) != 1 || png_get_bit_depth(p, info) != bits ||
        rowbytes != (size_t)w * (size_t)(bits / 8))
        png_error(p, "unexpected layout after the gray transforms");

    px = malloc((size_t)h * stride);
    if (!px) {
        failed_code = SS_ENOMEM;
        png_error(p, "out of memory for the pixels");
    }
    cur.interlaced = png_get_interlace_type(p, info) != PNG_INTERLACE_NONE;
    cur.rows = h;
    /* Each row is decoded into the start of its own uint16 row, so no second
     * buffer is needed (interlaced passes revisit rows, so expand afterwards). */
    unsigned char *base = (unsigned char *)px;
    for (int pass = 0; pass < passes; pass++)
        for (png_uint_32 y = 0; y < h; y++) png_read_row(p, base + (size_t)y * stride, NULL);
    png_read_end(p, NULL); /* a PNG cut before IEND is corrupt, not accepted */

    if (bits == 8) {
        for (png_uint_32 y = 0; y < h; y++) {
            const unsigned char *src = base + (size_t)y * stride;
            uint16_t *dst = px + (size_t)y * w;
            /* Backwards: sample j's 2 bytes cover bytes 2j..2j+1 >= j, already read. */
            for (size_t j = w; j-- > 0;) {
                unsigned char v = src[j];
                dst[j] = v;
            }
        }
    }
    png_destroy_read_struct(&p, &info, NULL);
    out->width = (int)w;
    out->height = (int)h;
    out->bit_depth = bits;
    out->px = px;
    return SS_OK;
}

/* ---- encode (libpng) -------------------------------------------------------- */

typedef struct {
    unsigned char *buf;
    size_t len, cap;
    int oom;
} mem_sink;

static void write_mem(png_structp p, png_bytep data, size_t n) {
    mem_sink *s = png_get_io_ptr(p);
    if (n > s->cap - s->len) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap - s->len < n) cap *= 2;
        unsigned char *nb = realloc(s->buf, cap);
        if (!nb) {
            s->oom = 1;
            png_error(p, "out of memory for the PNG output");
        }
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, n);
    s->len += n;
}

static void flush_mem(png_structp p) { (void)p; }

static int encode_args_ok(const uint16_t *px, int width, int height, int bits,
                          unsigned char **out, size_t *out_len) {
    if (!px || !out || !out_len || width <= 0 || height <= 0 || (bits != 8 && bits != 16))
        return ss_fail(SS_EINVAL, "ss_png_encode: bad arguments (%dx%d, %d bits)", width, height, bits);
    if ((size_t)width > 0x7fffffffu / 2 || height > 0x7fffffff)
        return ss_fail(SS_EINVAL, "ss_png_encode: image too wide");
    if (bits == 8) {
        uint16_t any = 0;
        size_t n = (size_t)width * (size_t)height;
        for (size_t i = 0; i < n; i++) any |= px[i];
        if (any > 255) return ss_fail(SS_EINVAL, "ss_png_encode: sample over 255 in an 8-bit image");
    }
    return SS_OK;
}

int ss_png_encode_libpng(const uint16_t *px, int width, int height, int bits,
                         unsigned char **out, size_t *out_len) {
    int rc = encode_args_ok(px, width, height, bits, out, out_len);
    if (rc) return rc;
    *out = NULL;
    *out_len = 0;

    png_errctx err = {.msg = ""};
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, &err, on_png_error, on_png_warning);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    if (!info) {
        png_destroy_write_struct(p ? &p : NULL, NULL);
        return ss_fail(SS_ENOMEM, "out of memory for the PNG encoder");
    }
    size_t raw = (size_t)width * (size_t)height * (size_t)(bits / 8);
    /* Level-1 output of slices is ~45% of raw: start there, grow by doubling. */
    mem_sink sink = {NULL, 0, raw / 2 + 1024, 0};
    unsigned char *volatile row = NULL;
    sink.buf = malloc(sink.cap);
    if (!sink.buf) {
        png_destroy_write_struct(&p, &info);
        return ss_fail(SS_ENOMEM, "out of memory for the PNG output");
    }
    if (setjmp(png_jmpbuf(p))) {
        free(row);
        free(sink.buf);
        png_destroy_write_struct(&p, &info);
        return ss_fail(sink.oom ? SS_ENOMEM : SS_EINVAL, "PNG encode failed: %s", err.msg);
    }
    png_set_write_fn(p, &sink, write_mem, flush_mem);
    png_set_IHDR(p, info, (png_uint_32)width, (png_uint_32)height, bits, PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    /* Level 1 + Up + Z_RLE: ~5x faster than the defaults for ~17% more bytes on slices. */
    png_set_compression_level(p, 1);
    png_set_compression_strategy(p, Z_RLE);
    png_set_filter(p, 0, PNG_FILTER_UP);
    png_write_info(p, info);
    if (bits == 16) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        png_set_swap(p);
#endif
        /* libpng copies each row before transforming it, so the input stays untouched. */
        for (int y = 0; y < height; y++)
            png_write_row(p, (png_const_bytep)(px + (size_t)y * (size_t)width));
    } else {
        row = malloc((size_t)width);
        if (!row) {
            sink.oom = 1;
            png_error(p, "out of memory for a row");
        }
        for (int y = 0; y < height; y++) {
            const uint16_t *src = px + (size_t)y * (size_t)width;
            for (int x = 0; x < width; x++) row[x] = (unsigned char)src[x];
            png_write_row(p, row);
        }
    }
    png_write_end(p, NULL);
    png_destroy_write_struct(&p, &info);
    free(row);
    *out = sink.buf;
    *out_len = sink.len;
    return SS_OK;
}

/* ---- hand-framed PNGs: shared by the libdeflate and Huffman writers ---------- */
#ifdef SVDSLICE_HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

/* Checksums: libdeflate's vectorised ones when linked (several times faster
 * than zlib's on these sizes), zlib's otherwise. */
static uint32_t png_crc32(const unsigned char *b, size_t n) {
#ifdef SVDSLICE_HAVE_LIBDEFLATE
    return libdeflate_crc32(0, b, n);
#else
    return (uint32_t)crc32_z(0, b, n);
#endif
}

static uint32_t zlib_adler32(const unsigned char *b, size_t n) {
#ifdef SVDSLICE_HAVE_LIBDEFLATE
    return libdeflate_adler32(1, b, n);
#else
    return (uint32_t)adler32_z(1, b, n);
#endif
}

static void put_be32(unsigned char *b, uint32_t v) {
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

/* Frames the n data bytes already at b + 8 as a chunk (length, type, data,
 * CRC-32 of type and data, PNG spec 5.3); returns the chunk's total size. */
static size_t frame_chunk(unsigned char *b, const char type[4], size_t n) {
    put_be32(b, (uint32_t)n);
    memcpy(b + 4, type, 4);
    put_be32(b + 8 + n, png_crc32(b + 4, n + 4));
    return n + 12;
}

/* Bytes before the zlib stream: signature, IHDR chunk, IDAT length and type. */
#define PNG_HEAD (8 + 25 + 8)
/* Bytes after it: IDAT CRC and the IEND chunk. */
#define PNG_TAIL (4 + 12)

/* Completes a PNG whose zlib stream of zlen bytes sits at buf + PNG_HEAD (buf
 * holds at least PNG_HEAD + zlen + PNG_TAIL bytes), shrinks buf to the result
 * and hands it to *out (caller frees). Frees buf on failure. */
static int png_finish(unsigned char *buf, size_t zlen, int width, int height, int bits,
                      unsigned char **out, size_t *out_len) {
    if (zlen == 0 || zlen > 0x7fffffffu) { /* a chunk length is 31 bits */
        free(buf);
        return ss_fail(SS_ETOOLARGE, "PNG encode failed: deflate output of %zu bytes", zlen);
    }
    static const unsigned char sig[8] = {137, 'P', 'N', 'G', 13, 10, 26, 10};
    memcpy(buf, sig, 8);
    unsigned char *ihdr = buf + 8;
    put_be32(ihdr + 8, (uint32_t)width);
    put_be32(ihdr + 12, (uint32_t)height);
    ihdr[16] = (unsigned char)bits;
    ihdr[17] = 0;                       /* colour type: grayscale */
    ihdr[18] = ihdr[19] = ihdr[20] = 0; /* deflate, adaptive filtering, no interlace */
    size_t len = 8 + frame_chunk(ihdr, "IHDR", 13);
    len += frame_chunk(buf + len, "IDAT", zlen);
    len += frame_chunk(buf + len, "IEND", 0);
    /* Give back the unused bound (and any scratch after it): these buffers may
     * sit in a response cache. */
    unsigned char *shrunk = realloc(buf, len);
    *out = shrunk ? shrunk : buf;
    *out_len = len;
    return SS_OK;
}

/* Writes the Up-filtered scanlines (filter byte 2 then big-endian samples),
 * converting from uint16 in the same pass. Row 0's "previous row" is zeros. */
static void filter_up(const uint16_t *px, int width, int height, int bits, unsigned char *f) {
    size_t w = (size_t)width;
    for (int y = 0; y < height; y++) {
        const uint16_t *cur = px + (size_t)y * w;
        *f++ = 2;
        if (bits == 8) {
            if (y == 0) {
                for (size_t x = 0; x < w; x++) f[x] = (unsigned char)cur[x];
            } else {
                const uint16_t *prev = cur - w;
                for (size_t x = 0; x < w; x++) f[x] = (unsigned char)(cur[x] - prev[x]);
            }
            f += w;
        } else {
            /* Up works bytewise: subtract high and low bytes separately. (Not
             * cur[x - w]: x - w wraps as a size_t, which is undefined pointer
             * arithmetic even where the sum lands right.) */
            const uint16_t *prev = y ? cur - w : NULL;
            for (size_t x = 0; x < w; x++) {
                unsigned c = cur[x], p = prev ? prev[x] : 0;
                f[2 * x] = (unsigned char)((c >> 8) - (p >> 8));
                f[2 * x + 1] = (unsigned char)((c & 0xff) - (p & 0xff));
            }
            f += 2 * w;
        }
    }
}

static size_t filtered_len(int width, int height, int bits) {
    return (size_t)height * (1 + (size_t)width * (size_t)(bits / 8));
}

/* ---- encode (libdeflate) ----------------------------------------------------- */
#ifdef SVDSLICE_HAVE_LIBDEFLATE
int ss_png_encode_deflate(const uint16_t *px, int width, int height, int bits,
                          unsigned char **out, size_t *out_len) {
    int rc = encode_args_ok(px, width, height, bits, out, out_len);
    if (rc) return rc;
    *out = NULL;
    *out_len = 0;
    size_t flen = filtered_len(width, height, bits);
    unsigned char *filtered = malloc(flen);
    /* A compressor per call: measured ~3 us of a ~120 us encode, simpler than a per-thread cache. */
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(1);
    if (!filtered || !c) {
        free(filtered);
        libdeflate_free_compressor(c);
        return ss_fail(SS_ENOMEM, "out of memory for the PNG encoder");
    }
    filter_up(px, width, height, bits, filtered);
    size_t bound = libdeflate_zlib_compress_bound(c, flen);
    unsigned char *buf = malloc(PNG_HEAD + bound + PNG_TAIL);
    if (!buf) {
        free(filtered);
        libdeflate_free_compressor(c);
        return ss_fail(SS_ENOMEM, "out of memory for the PNG output");
    }
    size_t zlen = libdeflate_zlib_compress(c, filtered, flen, buf + PNG_HEAD, bound);
    free(filtered);
    libdeflate_free_compressor(c);
    return png_finish(buf, zlen, width, height, bits, out, out_len);
}
#else
int ss_png_encode_deflate(const uint16_t *px, int width, int height, int bits,
                          unsigned char **out, size_t *out_len) {
    (void)px, (void)width, (void)height, (void)bits, (void)out, (void)out_len;
    return ss_fail(SS_EUNAVAIL, "built without libdeflate");
}
#endif

/* ---- encode (our Huffman-only deflate) ------------------------------------------
 * Low-rank reconstructions ring everywhere, so LZ matching finds almost nothing
 * in their Up-filtered rows: one Huffman code over the bytes gives libdeflate
 * level 1's size at a fraction of its time. Each block of up to HUFF_BLOCK input
 * bytes gets its own code (RFC 1951 3.2.7, dynamic Huffman, literals only), or
 * is stored when that would be smaller (noise), which also bounds the output. */

#define HUFF_BLOCK (1u << 18) /* input bytes per block: ~0.05% header cost, adapts on big images */
#define HUFF_MAXBITS 15       /* RFC 1951 limit for literal/length codes */
#define HUFF_CL_MAXBITS 7     /* ... and for the code-length code */
#define HUFF_HDR_MAX 512      /* bytes: 17 + 19*3 + 259*(7+7) bits, rounded up */
#define STORED_MAX 65535      /* bytes per stored block */

/* In-place minimum-redundancy code lengths (Moffat & Katajainen, "In-place
 * calculation of minimum-redundancy codes", WADS 1995) for n >= 2 weights
 * sorted ascending; on return a[i] is the code length of the i-th weight. */
static void min_redundancy(uint64_t *a, int n) {
    int root = 0, leaf = 2, next;
    a[0] += a[1];
    for (next = 1; next < n - 1; next++) { /* internal nodes, parents by index */
        if (leaf >= n || a[root] < a[leaf]) {
            a[next] = a[root];
            a[root++] = (uint64_t)next;
        } else {
            a[next] = a[leaf++];
        }
        if (leaf >= n || (root < next && a[root] < a[leaf])) {
            a[next] += a[root];
            a[root++] = (uint64_t)next;
        } else {
            a[next] += a[leaf++];
        }
    }
    a[n - 2] = 0; /* parent indices -> internal node depths */
    for (next = n - 3; next >= 0; next--) a[next] = a[a[next]] + 1;
    int avbl = 1, used = 0, depth = 0; /* internal depths -> leaf depths */
    root = n - 2;
    next = n - 1;
    while (avbl > 0) {
        while (root >= 0 && (int)a[root] == depth) {
            used++;
            root--;
        }
        while (avbl > used) {
            a[next--] = (uint64_t)depth;
            avbl--;
        }
        avbl = 2 * used;
        depth++;
        used = 0;
    }
}

int ss_huff_lengths(const uint32_t *counts, int n, int max_bits, uint8_t *lens) {
    if (!counts || !lens || n < 0 || n > SS_HUFF_MAX_SYMS || max_bits < 1 || max_bits > 15) return -1;
    uint32_t key[SS_HUFF_MAX_SYMS], key2[SS_HUFF_MAX_SYMS];
    uint16_t sym[SS_HUFF_MAX_SYMS], sym2[SS_HUFF_MAX_SYMS];
    int m = 0;
    for (int s = 0; s < n; s++) {
        lens[s] = 0;
        if (counts[s]) {
            key[m] = counts[s];
            sym[m++] = (uint16_t)s;
        }
    }
    if (m == 0) return 0;
    if (m == 1) {
        lens[sym[0]] = 1;
        return 0;
    }
    if (m > (1 << max_bits)) return -1; /* no prefix code that short exists */
    /* Stable LSB radix sort by count, 8 bits a pass, skipping passes where all
     * counts share the byte (qsort's calls cost more than the whole code build). */
    for (int shift = 0; shift < 32; shift += 8) {
        unsigned hist[256] = {0};
        for (int i = 0; i < m; i++) hist[(key[i] >> shift) & 0xff]++;
        if (hist[(key[0] >> shift) & 0xff] == (unsigned)m) continue;
        unsigned pos = 0;
        for (int b = 0; b < 256; b++) {
            unsigned c = hist[b];
            hist[b] = pos;
            pos += c;
        }
        for (int i = 0; i < m; i++) {
            unsigned d = hist[(key[i] >> shift) & 0xff]++;
            key2[d] = key[i];
            sym2[d] = sym[i];
        }
        memcpy(key, key2, (size_t)m * sizeof *key);
        memcpy(sym, sym2, (size_t)m * sizeof *sym);
    }
    /* Length limit: while the optimal code is too deep, halve every count
     * (rounding up, so none drops to zero) and rebuild. Halving keeps the
     * order, flattens the skew, and ends at all-ones (depth ceil(log2 m)) at
     * worst; it costs a little optimality only in the rare deep cases. */
    for (int rounds = 0;; rounds++) {
        uint64_t a[SS_HUFF_MAX_SYMS];
        for (int i = 0; i < m; i++) a[i] = key[i];
        min_redundancy(a, m);
        if (a[0] <= (uint64_t)max_bits) { /* a[0]: the longest */
            for (int i = 0; i < m; i++) lens[sym[i]] = (uint8_t)a[i];
            return rounds;
        }
        for (int i = 0; i < m; i++) key[i] = (key[i] >> 1) + (key[i] & 1);
    }
}

/* Canonical codes of RFC 1951 3.2.2, bit-reversed since deflate sends
 * Huffman codes starting from their most significant bit. */
static void canonical_codes(const uint8_t *lens, int n, uint16_t *codes) {
    unsigned count[16] = {0}, next[16];
    for (int s = 0; s < n; s++) count[lens[s]]++;
    count[0] = 0;
    unsigned code = 0;
    for (int b = 1; b < 16; b++) {
        code = (code + count[b - 1]) << 1;
        next[b] = code;
    }
    for (int s = 0; s < n; s++) {
        unsigned len = lens[s];
        if (!len) {
            codes[s] = 0;
            continue;
        }
        unsigned c = next[len]++, r = 0;
        for (unsigned i = 0; i < len; i++, c >>= 1) r = r << 1 | (c & 1);
        codes[s] = (uint16_t)r;
    }
}

/* LSB-first bit writer: bits collect in a 64-bit word and whole bytes are
 * stored 8 at a time (the buffer keeps 8 bytes of slack past the bound). */
typedef struct {
    uint64_t bits;
    unsigned n; /* bits held, < 8 after a flush */
    unsigned char *o;
} bitw;

static inline void bw_flush(bitw *w) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(w->o, &w->bits, 8);
#else
    for (int j = 0; j < 8; j++) w->o[j] = (unsigned char)(w->bits >> (8 * j));
#endif
    w->o += w->n >> 3;
    w->bits >>= w->n & ~7u;
    w->n &= 7;
}

/* Appends up to 32 bits and flushes (header use: not the hot loop). */
static inline void bw_put(bitw *w, uint32_t v, unsigned len) {
    w->bits |= (uint64_t)v << w->n;
    w->n += len;
    bw_flush(w);
}

/* Pads to a byte boundary (stored blocks). */
static void bw_align(bitw *w) {
    w->n = (w->n + 7) & ~7u;
    bw_flush(w);
}

/* The 259 code lengths (257 literal/EOB, 2 distance) run-length coded with
 * the code-length alphabet (16: repeat previous 3-6, 17: 3-10 zeros, 18:
 * 11-138 zeros), RFC 1951 3.2.7. Returns the number of tokens. */
static int rle_lengths(const uint8_t *l, int n, uint8_t *tsym, uint8_t *textra) {
    int t = 0;
    for (int i = 0; i < n;) {
        int v = l[i], run = 1;
        while (i + run < n && l[i + run] == v) run++;
        i += run;
        if (v == 0) {
            while (run >= 11) {
                int r = run > 138 ? 138 : run;
                tsym[t] = 18, textra[t++] = (uint8_t)(r - 11);
                run -= r;
            }
            if (run >= 3) {
                tsym[t] = 17, textra[t++] = (uint8_t)(run - 3);
                run = 0;
            }
        } else {
            tsym[t] = (uint8_t)v, textra[t++] = 0;
            run--;
            while (run >= 3) {
                int r = run > 6 ? 6 : run;
                tsym[t] = 16, textra[t++] = (uint8_t)(r - 3);
                run -= r;
            }
        }
        while (run-- > 0) tsym[t] = (uint8_t)v, textra[t++] = 0;
    }
    return t;
}

static void emit_stored(bitw *w, const unsigned char *in, size_t n, int final) {
    do {
        size_t len = n > STORED_MAX ? STORED_MAX : n;
        n -= len;
        bw_put(w, (final && n == 0) ? 1u : 0u, 3); /* BFINAL, BTYPE 00 */
        bw_align(w);
        bw_put(w, (uint32_t)len | (uint32_t)(len ^ 0xffff) << 16, 32); /* LEN, NLEN */
        memcpy(w->o, in, len);
        w->o += len;
        in += len;
    } while (n);
}

/* One block over in[0..n) (n >= 1): dynamic Huffman, or stored when that is
 * no larger (unless flags has SS_HUFF_NO_STORED). */
static void emit_block(bitw *w, const unsigned char *in, size_t n, int final, int flags) {
    /* Four sub-histograms so runs of equal bytes do not serialise on one counter. */
    uint32_t h[4][256];
    memset(h, 0, sizeof h);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        h[0][in[i]]++;
        h[1][in[i + 1]]++;
        h[2][in[i + 2]]++;
        h[3][in[i + 3]]++;
    }
    for (; i < n; i++) h[0][in[i]]++;
    uint32_t cnt[257];
    int used = 0;
    for (int s = 0; s < 256; s++) {
        cnt[s] = h[0][s] + h[1][s] + h[2][s] + h[3][s];
        used += cnt[s] != 0;
    }
    cnt[256] = 1; /* end of block */
    /* A valid (complete) code needs two used literals: n >= 1 already gives a
     * byte plus EOB, this only guards the invariant. */
    if (used == 0) cnt[0] = 1;

    uint8_t len[259];
    uint16_t code[257];
    ss_huff_lengths(cnt, 257, HUFF_MAXBITS, len); /* cannot fail: 257 symbols fit 15 bits */
    len[257] = len[258] = 1; /* two 1-bit distance codes: complete, never used */
    canonical_codes(len, 257, code);

    uint8_t tsym[259], textra[259];
    int ntok = rle_lengths(len, 259, tsym, textra);
    uint32_t clcnt[19] = {0};
    for (int t = 0; t < ntok; t++) clcnt[tsym[t]]++;
    int clused = 0;
    for (int s = 0; s < 19; s++) clused += clcnt[s] != 0;
    /* zlib rejects an incomplete code-length code: give it a second symbol. */
    if (clused < 2) clcnt[clcnt[0] ? 1 : 0] = 1;
    uint8_t cllen[19];
    uint16_t clcode[19];
    ss_huff_lengths(clcnt, 19, HUFF_CL_MAXBITS, cllen);
    canonical_codes(cllen, 19, clcode);
    static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    int hclen = 19;
    while (hclen > 4 && cllen[order[hclen - 1]] == 0) hclen--;

    if (!(flags & SS_HUFF_NO_STORED)) {
        static const uint8_t extra_bits[19] = {[16] = 2, [17] = 3, [18] = 7};
        uint64_t huff = 17 + 3 * (uint64_t)hclen;
        for (int t = 0; t < ntok; t++) huff += cllen[tsym[t]] + extra_bits[tsym[t]];
        for (int s = 0; s < 257; s++) huff += (uint64_t)cnt[s] * len[s];
        uint64_t chunks = (n + STORED_MAX - 1) / STORED_MAX;
        uint64_t stored = 8 * (uint64_t)n + chunks * (3 + 7 + 32); /* padding at its worst */
        if (huff >= stored) {
            emit_stored(w, in, n, final);
            return;
        }
    }

    bw_put(w, (final ? 1u : 0u) | 2u << 1, 3); /* BFINAL, BTYPE 10 */
    bw_put(w, 0 | 1u << 5 | (uint32_t)(hclen - 4) << 10, 14); /* HLIT-257, HDIST-1, HCLEN-4 */
    for (int k = 0; k < hclen; k++) bw_put(w, cllen[order[k]], 3);
    for (int t = 0; t < ntok; t++) {
        static const uint8_t extra_bits[19] = {[16] = 2, [17] = 3, [18] = 7};
        int s = tsym[t];
        bw_put(w, clcode[s] | (uint32_t)textra[t] << cllen[s], cllen[s] + extra_bits[s]);
    }

    /* The hot loop: three codes of at most 15 bits plus up to 7 held bits
     * fit the 64-bit word, so flush once per three bytes. */
    uint64_t bits = w->bits;
    unsigned nb = w->n;
    unsigned char *o = w->o;
#define HUFF_PUT(b)                                                                                \
    do {                                                                                           \
        bits |= (uint64_t)code[b] << nb;                                                           \
        nb += len[b];                                                                              \
    } while (0)
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HUFF_FLUSH()                                                                               \
    do {                                                                                           \
        memcpy(o, &bits, 8);                                                                       \
        o += nb >> 3;                                                                              \
        bits >>= nb & ~7u;                                                                         \
        nb &= 7;                                                                                   \
    } while (0)
#else
#define HUFF_FLUSH()                                                                               \
    do {                                                                                           \
        for (int j_ = 0; j_ < 8; j_++) o[j_] = (unsigned char)(bits >> (8 * j_));                  \
        o += nb >> 3;                                                                              \
        bits >>= nb & ~7u;                                                                         \
        nb &= 7;                                                                                   \
    } while (0)
#endif
    for (i = 0; i + 3 <= n; i += 3) {
        HUFF_PUT(in[i]);
        HUFF_PUT(in[i + 1]);
        HUFF_PUT(in[i + 2]);
        HUFF_FLUSH();
    }
    for (; i < n; i++) {
        HUFF_PUT(in[i]);
        HUFF_FLUSH();
    }
    HUFF_PUT(256);
    HUFF_FLUSH();
#undef HUFF_PUT
#undef HUFF_FLUSH
    w->bits = bits;
    w->n = nb;
    w->o = o;
}

size_t ss_zlib_huffman_bound(size_t n, int flags) {
    size_t blocks = n / HUFF_BLOCK + 1;
    if (flags & SS_HUFF_NO_STORED) /* every byte at 15 bits, plus headers */
        return n / 8 * 15 + 15 + blocks * (HUFF_HDR_MAX + 2) + 6 + 8;
    /* Never more than stored blocks: 5 header bytes (+1 of bits) each. */
    return n + (n / STORED_MAX + blocks + 1) * 6 + 6 + 8;
}

size_t ss_zlib_huffman(const unsigned char *in, size_t n, unsigned char *out, int flags) {
    out[0] = 0x78; /* CM 8, 32K window; FLEVEL 0 (fastest); FCHECK makes it a multiple of 31 */
    out[1] = 0x01;
    bitw w = {0, 0, out + 2};
    size_t pos = 0;
    do {
        size_t len = n - pos > HUFF_BLOCK ? HUFF_BLOCK : n - pos;
        if (len == 0) { /* empty input: one empty stored block */
            emit_stored(&w, in, 0, 1);
            break;
        }
        emit_block(&w, in + pos, len, pos + len == n, flags);
        pos += len;
    } while (pos < n);
    bw_align(&w);
    put_be32(w.o, zlib_adler32(in, n));
    return (size_t)(w.o + 4 - out);
}

/* Smooth images (low-rank reconstructions at small k, flat backgrounds) are
 * where LZ matching pays: libdeflate L1 is 15-40% smaller than Huffman-only
 * on a 256x170 slice's reconstructions at k <= 10, the same from k ~ 20 on.
 * Below this many bits per byte (estimated from a sample) ss_png_encode hands
 * the filtered rows to libdeflate instead. */
#define LZ_BELOW_BITS_PER_BYTE 5.0

/* Huffman-coded size of every 7th byte's histogram (odd: both bytes of 16-bit
 * samples get sampled), in bits per byte. */
static double sampled_bits_per_byte(const unsigned char *f, size_t n) {
    uint32_t cnt[256] = {0};
    size_t taken = 0;
    for (size_t i = 0; i < n; i += 7, taken++) cnt[f[i]]++;
    uint8_t len[256];
    if (ss_huff_lengths(cnt, 256, HUFF_MAXBITS, len) < 0) return 8;
    uint64_t bitsum = 0;
    for (int s = 0; s < 256; s++) bitsum += (uint64_t)cnt[s] * len[s];
    return (double)bitsum / (double)taken;
}

#ifdef SVDSLICE_HAVE_LIBDEFLATE
/* libdeflate L1 into out (cap bytes); 0 when it does not fit or on ENOMEM.
 * A compressor per call, only for the images that take this path. */
static size_t lz_compress(const unsigned char *in, size_t n, unsigned char *out, size_t cap) {
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(1);
    if (!c) return 0;
    size_t len = libdeflate_zlib_compress(c, in, n, out, cap);
    libdeflate_free_compressor(c);
    return len;
}
#endif

/* The Huffman writer, or with allow_lz (and libdeflate linked) libdeflate L1
 * on the same rows when they look smooth. */
static int encode_huffman_or_lz(const uint16_t *px, int width, int height, int bits, int allow_lz,
                                unsigned char **out, size_t *out_len) {
    int rc = encode_args_ok(px, width, height, bits, out, out_len);
    if (rc) return rc;
    *out = NULL;
    *out_len = 0;
    size_t flen = filtered_len(width, height, bits);
    size_t zcap = ss_zlib_huffman_bound(flen, 0);
    size_t cap = PNG_HEAD + zcap + PNG_TAIL;
    /* One allocation: the PNG in front, the filtered rows behind it; the
     * final realloc trims the rows away. */
    unsigned char *buf = malloc(cap + flen);
    if (!buf) return ss_fail(SS_ENOMEM, "out of memory for the PNG output");
    unsigned char *filtered = buf + cap;
    filter_up(px, width, height, bits, filtered);
    size_t zlen = 0;
#ifdef SVDSLICE_HAVE_LIBDEFLATE
    /* Smooth rows compress to well under zcap; should LZ not fit (or fail), Huffman does. */
    if (allow_lz && sampled_bits_per_byte(filtered, flen) < LZ_BELOW_BITS_PER_BYTE)
        zlen = lz_compress(filtered, flen, buf + PNG_HEAD, zcap);
#else
    (void)allow_lz;
#endif
    if (!zlen) zlen = ss_zlib_huffman(filtered, flen, buf + PNG_HEAD, 0);
    return png_finish(buf, zlen, width, height, bits, out, out_len);
}

int ss_png_encode_huffman(const uint16_t *px, int width, int height, int bits,
                          unsigned char **out, size_t *out_len) {
    return encode_huffman_or_lz(px, width, height, bits, 0, out, out_len);
}

/* Our Huffman writer, with libdeflate L1 for smooth images (see above):
 * measured several times faster than libdeflate L1 alone for about the same
 * bytes on reconstructions (bench/png_bench.c); outputs decoded by libpng and
 * zlib in the tests. */
int ss_png_encode(const uint16_t *px, int width, int height, int bits,
                  unsigned char **out, size_t *out_len) {
    return encode_huffman_or_lz(px, width, height, bits, 1, out, out_len);
}
