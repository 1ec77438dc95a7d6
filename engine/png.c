/* png.c - PNG decode of untrusted bytes (libpng), libpng grayscale encoder, whole-file reads */
#include "engine/png.h"
#include "engine/error.h"

#include <errno.h>
#include <fcntl.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Ancillary chunks (iCCP, zTXt, ...) are never needed; bound what one may allocate. */
#define SS_PNG_CHUNK_MALLOC_MAX (1u << 20)
#define SS_PNG_CHUNK_CACHE_MAX 128

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
} mem_cursor;

static void read_mem(png_structp p, png_bytep data, size_t n) {
    mem_cursor *c = png_get_io_ptr(p);
    if (n > c->len - c->pos) png_error(p, "truncated PNG");
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
    mem_cursor cur = {buf, len, 0};
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
    /* NOTES.md: level 1 + Up + Z_RLE is ~5x faster than the defaults for ~17% more bytes. */
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

/* ---- encode (libdeflate) ----------------------------------------------------- */
#ifdef SVDSLICE_HAVE_LIBDEFLATE
#include <libdeflate.h>

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
    put_be32(b + 8 + n, libdeflate_crc32(0, b + 4, n + 4));
    return n + 12;
}

/* Writes the Up-filtered scanlines (filter byte 2 then big-endian samples). */
static void filter_up(const uint16_t *px, int width, int height, int bits, unsigned char *f) {
    size_t w = (size_t)width;
    for (int y = 0; y < height; y++) {
        const uint16_t *cur = px + (size_t)y * w;
        const uint16_t *prev = y ? cur - w : NULL;
        *f++ = 2;
        if (bits == 8) {
            for (size_t x = 0; x < w; x++)
                f[x] = (unsigned char)(cur[x] - (prev ? prev[x] : 0));
            f += w;
        } else {
            /* Up works bytewise: subtract high and low bytes separately. */
            for (size_t x = 0; x < w; x++) {
                unsigned p = prev ? prev[x] : 0;
                f[2 * x] = (unsigned char)((cur[x] >> 8) - (p >> 8));
                f[2 * x + 1] = (unsigned char)((cur[x] & 0xff) - (p & 0xff));
            }
            f += 2 * w;
        }
    }
}

int ss_png_encode_deflate(const uint16_t *px, int width, int height, int bits,
                          unsigned char **out, size_t *out_len) {
    int rc = encode_args_ok(px, width, height, bits, out, out_len);
    if (rc) return rc;
    *out = NULL;
    *out_len = 0;
    size_t flen = (size_t)height * (1 + (size_t)width * (size_t)(bits / 8));
    unsigned char *filtered = malloc(flen);
    /* A compressor per call: measured ~3 us of a ~120 us encode, simpler than a per-thread cache. */
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(1);
    if (!filtered || !c) {
        free(filtered);
        libdeflate_free_compressor(c);
        return ss_fail(SS_ENOMEM, "out of memory for the PNG encoder");
    }
    filter_up(px, width, height, bits, filtered);

    static const unsigned char sig[8] = {137, 'P', 'N', 'G', 13, 10, 26, 10};
    size_t bound = libdeflate_zlib_compress_bound(c, flen);
    size_t head = 8 + 25 + 8; /* signature, IHDR chunk, IDAT length and type */
    unsigned char *buf = malloc(head + bound + 4 + 12);
    if (!buf) {
        free(filtered);
        libdeflate_free_compressor(c);
        return ss_fail(SS_ENOMEM, "out of memory for the PNG output");
    }
    size_t zlen = libdeflate_zlib_compress(c, filtered, flen, buf + head, bound);
    free(filtered);
    libdeflate_free_compressor(c);
    if (zlen == 0 || zlen > 0x7fffffffu) { /* a chunk length is 31 bits */
        free(buf);
        return ss_fail(SS_EINVAL, "PNG encode failed: deflate output of %zu bytes", zlen);
    }
    memcpy(buf, sig, 8);
    unsigned char *ihdr = buf + 8;
    put_be32(ihdr + 8, (uint32_t)width);
    put_be32(ihdr + 12, (uint32_t)height);
    ihdr[16] = (unsigned char)bits;
    ihdr[17] = 0; /* colour type: grayscale */
    ihdr[18] = ihdr[19] = ihdr[20] = 0; /* deflate, adaptive filtering, no interlace */
    size_t len = 8 + frame_chunk(ihdr, "IHDR", 13);
    len += frame_chunk(buf + len, "IDAT", zlen);
    len += frame_chunk(buf + len, "IEND", 0);
    /* Give back the unused bound: these buffers may sit in a response cache. */
    unsigned char *shrunk = realloc(buf, len);
    *out = shrunk ? shrunk : buf;
    *out_len = len;
    return SS_OK;
}
#else
int ss_png_encode_deflate(const uint16_t *px, int width, int height, int bits,
                          unsigned char **out, size_t *out_len) {
    (void)px, (void)width, (void)height, (void)bits, (void)out, (void)out_len;
    return ss_fail(SS_EUNAVAIL, "built without libdeflate");
}
#endif

/* The libdeflate writer when linked: measured 1.5-3.4x faster than libpng's on
 * real slices (bench/png_bench.c), its output decoded by libpng in the tests. */
int ss_png_encode(const uint16_t *px, int width, int height, int bits,
                  unsigned char **out, size_t *out_len) {
#ifdef SVDSLICE_HAVE_LIBDEFLATE
    return ss_png_encode_deflate(px, width, height, bits, out, out_len);
#else
    return ss_png_encode_libpng(px, width, height, bits, out, out_len);
#endif
}

/* ---- files -------------------------------------------------------------------- */

int ss_read_file(const char *path, size_t max_bytes, unsigned char **out, size_t *out_len) {
    if (!path || !out || !out_len) return ss_fail(SS_EINVAL, "ss_read_file: bad arguments");
    *out = NULL;
    *out_len = 0;
    if (max_bytes == SIZE_MAX) max_bytes--; /* max_bytes + 1 is used below */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ss_fail(SS_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ss_fail(SS_EIO, "%s: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return ss_fail(SS_EIO, "%s: is a directory", path);
    }
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max_bytes) {
        close(fd);
        return ss_fail(SS_ETOOLARGE, "%s: %lld bytes, over the %zu byte limit", path,
                       (long long)st.st_size, max_bytes);
    }
    /* Sized from stat for files; pipes and growing files are read until EOF or the bound. */
    size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536;
    if (cap > max_bytes + 1) cap = max_bytes + 1;
    unsigned char *buf = malloc(cap ? cap : 1);
    size_t len = 0;
    if (!buf) {
        close(fd);
        return ss_fail(SS_ENOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (len == cap) {
            if (cap > max_bytes) break; /* read max_bytes + 1: over the bound */
            size_t ncap = cap * 2 > max_bytes + 1 ? max_bytes + 1 : cap * 2;
            unsigned char *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                close(fd);
                return ss_fail(SS_ENOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return ss_fail(SS_EIO, "%s: %s", path, strerror(e));
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    close(fd);
    if (len > max_bytes) {
        free(buf);
        return ss_fail(SS_ETOOLARGE, "%s: over the %zu byte limit", path, max_bytes);
    }
    *out = buf;
    *out_len = len;
    return SS_OK;
}
