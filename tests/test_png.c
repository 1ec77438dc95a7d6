/* test_png.c - PNG codec: round trips (Huffman, libdeflate, libpng writers), every colour type to gray, real slices, hostile input */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "util/error.h"
#include "engine/kernels.h"
#include "engine/png.h"
#include "util/file.h"
#include "engine/svd.h"
#include "tests/util/testutil.h"

#define BIG_SIDE 16384

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) { /* xorshift64*, fixed seed: failures reproduce */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (uint32_t)((g_rng * 2685821657736338717ull) >> 32);
}

/* ---- an independent PNG writer (plain libpng, no project code) ------------ */

typedef struct {
    unsigned char *buf;
    size_t len, cap;
} sink;

static void sink_write(png_structp p, png_bytep d, size_t n) {
    sink *s = png_get_io_ptr(p);
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2;
        s->buf = realloc(s->buf, s->cap);
        assert_non_null(s->buf);
    }
    memcpy(s->buf + s->len, d, n);
    s->len += n;
}
static void sink_flush(png_structp p) { (void)p; }

typedef struct {
    int w, h, color_type, bit_depth, interlace;
    png_color palette[256];
    int npal;
    png_byte trans_alpha[256];
    int ntrans;             /* palette tRNS entries */
    int gray_trans;         /* -1: none, else the transparent gray value */
    uint16_t *samples;      /* h * w * channels, values in 0..2^bit_depth-1 */
} spec;

static int channels_of(int ct) {
    switch (ct) {
    case PNG_COLOR_TYPE_GRAY_ALPHA: return 2;
    case PNG_COLOR_TYPE_RGB: return 3;
    case PNG_COLOR_TYPE_RGBA: return 4;
    default: return 1;
    }
}

/* Writes the spec with libpng; returns a malloc'd PNG (caller frees). */
static unsigned char *write_spec(const spec *s, size_t *len) {
    sink out = {NULL, 0, 0};
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(p);
    assert_non_null(info);
    if (setjmp(png_jmpbuf(p))) fail_msg("test writer: libpng failed");
    png_set_write_fn(p, &out, sink_write, sink_flush);
    png_set_IHDR(p, info, (png_uint_32)s->w, (png_uint_32)s->h, s->bit_depth, s->color_type,
                 s->interlace, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (s->color_type == PNG_COLOR_TYPE_PALETTE) png_set_PLTE(p, info, s->palette, s->npal);
    if (s->ntrans) png_set_tRNS(p, info, s->trans_alpha, s->ntrans, NULL);
    if (s->gray_trans >= 0) {
        png_color_16 tc = {0, 0, 0, 0, (png_uint_16)s->gray_trans};
        png_set_tRNS(p, info, NULL, 0, &tc);
    }
    png_write_info(p, info);
    int ch = channels_of(s->color_type);
    size_t rowbytes = ((size_t)s->w * (size_t)ch * (size_t)s->bit_depth + 7) / 8;
    unsigned char *rows = calloc((size_t)s->h, rowbytes);
    png_bytep *rp = malloc((size_t)s->h * sizeof *rp);
    assert_non_null(rows);
    assert_non_null(rp);
    for (int y = 0; y < s->h; y++) {
        unsigned char *r = rows + (size_t)y * rowbytes;
        rp[y] = r;
        for (int i = 0; i < s->w * ch; i++) {
            unsigned v = s->samples[(size_t)y * (size_t)s->w * (size_t)ch + (size_t)i];
            if (s->bit_depth == 16) {
                r[2 * i] = (unsigned char)(v >> 8); /* PNG is big-endian */
                r[2 * i + 1] = (unsigned char)v;
            } else if (s->bit_depth == 8) {
                r[i] = (unsigned char)v;
            } else { /* sub-byte samples are packed from the high bits */
                int bit = i * s->bit_depth;
                r[bit / 8] |= (unsigned char)(v << (8 - s->bit_depth - bit % 8));
            }
        }
    }
    png_write_image(p, rp); /* does the Adam7 passes itself when interlaced */
    png_write_end(p, NULL);
    png_destroy_write_struct(&p, &info);
    free(rows);
    free(rp);
    *len = out.len;
    return out.buf;
}

static spec make_spec(int w, int h, int ct, int bd, int interlace) {
    spec s;
    memset(&s, 0, sizeof s);
    s.w = w;
    s.h = h;
    s.color_type = ct;
    s.bit_depth = bd;
    s.interlace = interlace;
    s.gray_trans = -1;
    int ch = channels_of(ct);
    size_t n = (size_t)w * (size_t)h * (size_t)ch;
    s.samples = malloc(n * sizeof *s.samples);
    assert_non_null(s.samples);
    if (ct == PNG_COLOR_TYPE_PALETTE) {
        s.npal = 1 << (bd < 8 ? bd : 8);
        if (s.npal > 200) s.npal = 200; /* not a power of two: indices stay < npal */
        for (int i = 0; i < s.npal; i++)
            s.palette[i] = (png_color){(png_byte)rnd(), (png_byte)rnd(), (png_byte)rnd()};
        for (size_t i = 0; i < n; i++) s.samples[i] = (uint16_t)(rnd() % (uint32_t)s.npal);
    } else {
        uint32_t mask = (1u << bd) - 1;
        for (size_t i = 0; i < n; i++) s.samples[i] = (uint16_t)(rnd() & mask);
    }
    return s;
}

/* libpng's rgb_to_gray with its documented default coefficients (6968, 23434,
 * 2366) / 32768. Its result is an integer sample (8-bit: the sum >> 15), and
 * that integer is what gets composited on black when there is alpha. */
static double luma(int bits, double r, double g, double b) {
    double y = (6968.0 * r + 23434.0 * g + 2366.0 * b) / 32768.0;
    return bits == 16 ? floor(y + 0.5) : floor(y);
}

/* The gray value the spec should decode to (PNG spec + libpng's manual). */
static double expected_gray(const spec *s, size_t pix) {
    int ch = channels_of(s->color_type);
    const uint16_t *v = s->samples + pix * (size_t)ch;
    double maxv = (double)((1u << s->bit_depth) - 1), g, a = -1;
    switch (s->color_type) {
    case PNG_COLOR_TYPE_PALETTE: {
        png_color c = s->palette[v[0]];
        g = luma(8, c.red, c.green, c.blue);
        if (v[0] < s->ntrans) a = s->trans_alpha[v[0]] / 255.0;
        return a < 0 ? g : g * a;
    }
    case PNG_COLOR_TYPE_GRAY:
        if (s->gray_trans >= 0 && v[0] == s->gray_trans) return 0;
        return s->bit_depth < 8 ? v[0] * 255.0 / maxv : v[0];
    case PNG_COLOR_TYPE_GRAY_ALPHA: return v[0] * (v[1] / maxv);
    case PNG_COLOR_TYPE_RGB: return luma(s->bit_depth, v[0], v[1], v[2]);
    default: /* RGBA */
        g = luma(s->bit_depth, v[0], v[1], v[2]);
        return g * (v[3] / maxv);
    }
}

/* Writes the spec, decodes it with ss_png_decode, compares within tol. */
static void check_spec(spec *s, double tol) {
    size_t len;
    unsigned char *png = write_spec(s, &len);
    ss_image img;
    int rc = ss_png_decode(png, len, BIG_SIDE, &img);
    assert_int_equal(rc, SS_OK);
    assert_int_equal(img.width, s->w);
    assert_int_equal(img.height, s->h);
    assert_int_equal(img.bit_depth, s->bit_depth == 16 ? 16 : 8);
    for (size_t i = 0; i < (size_t)s->w * (size_t)s->h; i++) {
        double e = expected_gray(s, i);
        if (fabs(img.px[i] - e) > tol)
            fail_msg("type %d depth %d pixel %zu: got %u, expected %.3f", s->color_type,
                     s->bit_depth, i, img.px[i], e);
    }
    ss_image_free(&img);
    free(png);
    free(s->samples);
}

/* ---- round trips ---------------------------------------------------------- */

typedef int (*encoder_fn)(const uint16_t *, int, int, int, unsigned char **, size_t *);

static void round_trip(encoder_fn enc, int bits) {
    static const int sizes[][2] = {{1, 1}, {7, 300}, {300, 7}, {256, 170}};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int w = sizes[k][0], h = sizes[k][1];
        size_t n = (size_t)w * (size_t)h;
        uint16_t *px = malloc(n * sizeof *px);
        assert_non_null(px);
        for (size_t i = 0; i < n; i++) px[i] = (uint16_t)(rnd() & (bits == 8 ? 0xffu : 0xffffu));
        unsigned char *png = NULL;
        size_t len = 0;
        assert_int_equal(enc(px, w, h, bits, &png, &len), SS_OK);
        ss_image img;
        assert_int_equal(ss_png_decode(png, len, BIG_SIDE, &img), SS_OK);
        assert_int_equal(img.width, w);
        assert_int_equal(img.height, h);
        assert_int_equal(img.bit_depth, bits);
        assert_memory_equal(img.px, px, n * sizeof *px);
        ss_image_free(&img);
        free(png);
        free(px);
    }
}

static void test_encode_8bit_round_trips(void **st) {
    (void)st;
    round_trip(ss_png_encode, 8);
    round_trip(ss_png_encode_libpng, 8);
}

static void test_encode_16bit_round_trips(void **st) {
    (void)st;
    round_trip(ss_png_encode, 16);
    round_trip(ss_png_encode_libpng, 16);
}

static void test_deflate_writer_round_trips_or_is_unavailable(void **st) {
    (void)st;
    uint16_t one = 7;
    unsigned char *png = NULL;
    size_t len;
    int rc = ss_png_encode_deflate(&one, 1, 1, 8, &png, &len);
    free(png);
    if (rc == SS_EUNAVAIL) skip(); /* built without libdeflate */
    assert_int_equal(rc, SS_OK);
    round_trip(ss_png_encode_deflate, 8);
    round_trip(ss_png_encode_deflate, 16);
}

/* Both writers on a smooth image: same pixels back, and real compression. */
static void test_writers_compress_a_smooth_slice(void **st) {
    (void)st;
    int w = 170, h = 256;
    uint16_t *px = malloc((size_t)w * h * sizeof *px);
    assert_non_null(px);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) px[y * w + x] = (uint16_t)((x * x + y * 3) % 251);
    encoder_fn encs[] = {ss_png_encode, ss_png_encode_huffman, ss_png_encode_libpng,
                         ss_png_encode_deflate};
    for (size_t e = 0; e < 4; e++) {
        unsigned char *png = NULL;
        size_t len;
        int rc = encs[e](px, w, h, 8, &png, &len);
        if (rc == SS_EUNAVAIL) continue;
        assert_int_equal(rc, SS_OK);
        assert_true(len < (size_t)w * h / 2);
        ss_image img;
        assert_int_equal(ss_png_decode(png, len, BIG_SIDE, &img), SS_OK);
        assert_memory_equal(img.px, px, (size_t)w * h * sizeof *px);
        ss_image_free(&img);
        free(png);
    }
    free(px);
}

static void test_encode_rejects_bad_arguments(void **st) {
    (void)st;
    uint16_t px[4] = {1, 2, 256, 4};
    unsigned char *png = NULL;
    size_t len;
    assert_int_equal(ss_png_encode(px, 2, 2, 8, &png, &len), SS_EINVAL); /* 256 in 8 bits */
    assert_int_equal(ss_png_encode(px, 2, 2, 12, &png, &len), SS_EINVAL);
    assert_int_equal(ss_png_encode(px, 0, 2, 16, &png, &len), SS_EINVAL);
    assert_int_equal(ss_png_encode_libpng(px, 2, 2, 8, &png, &len), SS_EINVAL);
    assert_int_equal(ss_png_encode_huffman(px, 2, 2, 8, &png, &len), SS_EINVAL);
    assert_int_equal(ss_png_encode_huffman(px, 2, -1, 16, &png, &len), SS_EINVAL);
    int rc = ss_png_encode_deflate(px, 2, 2, 8, &png, &len);
    assert_true(rc == SS_EINVAL || rc == SS_EUNAVAIL);
    assert_null(png);
}

/* ---- the Huffman writer ----------------------------------------------------- */

/* The Huffman tests draw from their own stream so the older tests below keep
 * the sequence of rnd() they were written against. */
static uint64_t h_rng = 0x2545f4914f6cdd1dull;
static uint32_t hrnd(void) {
    uint64_t saved = g_rng;
    g_rng = h_rng;
    uint32_t r = rnd();
    h_rng = g_rng;
    g_rng = saved;
    return r;
}

/* Up-filtered scanlines computed the plain way (rows serialised big-endian
 * first, then each byte minus the byte above): what the IDAT must inflate to. */
static unsigned char *ref_filtered(const uint16_t *px, int w, int h, int bits, size_t *n) {
    size_t bpr = (size_t)w * (size_t)(bits / 8), stride = 1 + bpr;
    unsigned char *raw = malloc((size_t)h * bpr), *f = malloc((size_t)h * stride);
    assert_non_null(raw);
    assert_non_null(f);
    for (size_t i = 0; i < (size_t)w * (size_t)h; i++) {
        if (bits == 8) {
            raw[i] = (unsigned char)px[i];
        } else {
            raw[2 * i] = (unsigned char)(px[i] >> 8);
            raw[2 * i + 1] = (unsigned char)px[i];
        }
    }
    for (int y = 0; y < h; y++) {
        f[(size_t)y * stride] = 2;
        for (size_t b = 0; b < bpr; b++) {
            unsigned above = y ? raw[(size_t)(y - 1) * bpr + b] : 0;
            f[(size_t)y * stride + 1 + b] = (unsigned char)(raw[(size_t)y * bpr + b] - above);
        }
    }
    free(raw);
    *n = (size_t)h * stride;
    return f;
}

/* Checks the chunk CRCs, concatenates the IDATs and inflates them with zlib
 * itself (a second decoder next to libpng); returns the bytes (caller frees). */
static unsigned char *inflate_idat(const unsigned char *png, size_t len, size_t expect) {
    unsigned char *z = malloc(len);
    assert_non_null(z);
    size_t zlen = 0, off = 8;
    int iend = 0;
    while (off + 12 <= len && !iend) {
        uint32_t n = (uint32_t)png[off] << 24 | (uint32_t)png[off + 1] << 16 |
                     (uint32_t)png[off + 2] << 8 | png[off + 3];
        assert_true(off + 12 + n <= len);
        const unsigned char *c = png + off + 8 + n;
        uint32_t crc = (uint32_t)c[0] << 24 | (uint32_t)c[1] << 16 | (uint32_t)c[2] << 8 | c[3];
        assert_int_equal(crc, (uint32_t)crc32(0, png + off + 4, n + 4));
        if (memcmp(png + off + 4, "IDAT", 4) == 0) {
            memcpy(z + zlen, png + off + 8, n);
            zlen += n;
        }
        iend = memcmp(png + off + 4, "IEND", 4) == 0;
        off += 12 + n;
    }
    assert_true(iend);
    assert_int_equal(off, len); /* nothing after IEND */
    unsigned char *raw = malloc(expect + 1);
    assert_non_null(raw);
    uLongf rlen = (uLongf)expect + 1;
    assert_int_equal(uncompress(raw, &rlen, z, (uLong)zlen), Z_OK);
    assert_int_equal(rlen, expect);
    free(z);
    return raw;
}

/* Encodes with the Huffman writer; libpng must give the pixels back and zlib
 * must inflate the IDAT to exactly our reference filtered rows. Returns the
 * PNG's size. */
static size_t huffman_check(const uint16_t *px, int w, int h, int bits) {
    unsigned char *png = NULL;
    size_t len = 0, flen;
    assert_int_equal(ss_png_encode_huffman(px, w, h, bits, &png, &len), SS_OK);
    ss_image img;
    assert_int_equal(ss_png_decode(png, len, BIG_SIDE, &img), SS_OK);
    assert_int_equal(img.width, w);
    assert_int_equal(img.height, h);
    assert_int_equal(img.bit_depth, bits);
    assert_memory_equal(img.px, px, (size_t)w * h * sizeof *px);
    ss_image_free(&img);
    unsigned char *ref = ref_filtered(px, w, h, bits, &flen);
    unsigned char *raw = inflate_idat(png, len, flen);
    assert_memory_equal(raw, ref, flen);
    free(raw);
    free(ref);
    free(png);
    return len;
}

/* Compresses bytes with ss_zlib_huffman into a buffer of exactly the bound
 * (ASan builds catch any write past it) and inflates them back with zlib. */
static size_t zlib_huffman_check(const unsigned char *in, size_t n, int flags) {
    size_t bound = ss_zlib_huffman_bound(n, flags);
    unsigned char *z = malloc(bound);
    assert_non_null(z);
    size_t zlen = ss_zlib_huffman(in, n, z, flags);
    assert_true(zlen > 0 && zlen <= bound);
    unsigned char *back = malloc(n + 1);
    assert_non_null(back);
    uLongf blen = (uLongf)n + 1;
    assert_int_equal(uncompress(back, &blen, z, (uLong)zlen), Z_OK);
    assert_int_equal(blen, n);
    assert_memory_equal(back, in, n);
    free(back);
    free(z);
    return zlen;
}

static void test_huffman_round_trips_awkward_sizes(void **st) {
    (void)st;
    static const int sizes[][2] = {{1, 1},   {1, 500},   {500, 1},  {7, 300},
                                   {300, 7}, {256, 170}, {513, 257}};
    for (int bits = 8; bits <= 16; bits += 8) {
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            int w = sizes[k][0], h = sizes[k][1];
            size_t n = (size_t)w * (size_t)h;
            uint16_t *px = malloc(n * sizeof *px);
            assert_non_null(px);
            /* Noise over a smooth ramp: some blocks code, pure noise is stored. */
            for (size_t i = 0; i < n; i++) {
                unsigned smooth = (unsigned)((i % (size_t)w) * 3 + i / (size_t)w);
                unsigned v = k & 1 ? hrnd() : smooth + hrnd() % 5;
                px[i] = (uint16_t)(v & (bits == 8 ? 0xffu : 0xffffu));
            }
            huffman_check(px, w, h, bits);
            free(px);
        }
    }
}

/* One sample value everywhere: row 0 filters to that value, the rest to 0, so
 * the histogram has one or two byte values (plus EOB). */
static void test_huffman_constant_images(void **st) {
    (void)st;
    static const struct {
        int bits;
        uint16_t v;
    } cases[] = {{8, 0}, {8, 255}, {8, 2}, {16, 0}, {16, 65535}, {16, 0x0202}};
    static const int sizes[][2] = {{1, 1}, {1, 3}, {64, 1}, {99, 101}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            int w = sizes[s][0], h = sizes[s][1];
            uint16_t *px = malloc((size_t)w * h * sizeof *px);
            assert_non_null(px);
            for (size_t i = 0; i < (size_t)w * h; i++) px[i] = cases[c].v;
            size_t len = huffman_check(px, w, h, cases[c].bits);
            if (w * h > 1000) /* ~1 bit a byte (Huffman's floor): an eighth of the raw size */
                assert_true(len < (size_t)w * h * (size_t)(cases[c].bits / 8) / 8 + 300);
            free(px);
        }
}

/* Rebuilds an image from the Up-filter deltas it must produce (row 0 is the
 * deltas themselves): lets a test choose the filtered bytes' histogram. */
static uint16_t *image_from_deltas(const unsigned char *d, int w, int h) {
    uint16_t *px = malloc((size_t)w * h * sizeof *px);
    assert_non_null(px);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t i = (size_t)y * w + x;
            unsigned above = y ? px[i - (size_t)w] : 0;
            px[i] = (uint16_t)((above + d[i]) & 0xff);
        }
    return px;
}

static void shuffle(unsigned char *a, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = hrnd() % i;
        unsigned char t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

/* Every byte value equally often: codes of 8 and 9 bits, which cannot beat a
 * stored block, so the writer stores; the forced Huffman path must still be
 * exact. */
static void test_huffman_uniform_filtered_bytes(void **st) {
    (void)st;
    int w = 256, h = 200;
    size_t n = (size_t)w * h;
    unsigned char *d = malloc(n);
    assert_non_null(d);
    for (size_t i = 0; i < n; i++) d[i] = (unsigned char)i;
    shuffle(d, n);
    uint16_t *px = image_from_deltas(d, w, h);
    size_t len = huffman_check(px, w, h, 8);
    size_t flen = (size_t)h * (1 + (size_t)w);
    assert_true(len <= flen + 100); /* stored: no expansion beyond framing */
    size_t forced = zlib_huffman_check(d, n, SS_HUFF_NO_STORED);
    assert_true(forced > n && forced < n + n / 100 + 600); /* ~8 bits each + EOB's share */
    zlib_huffman_check(d, n, 0);
    free(px);
    free(d);
}

/* An independent Huffman code: repeatedly merge the two lightest nodes
 * (O(n^2), fine for a test). Returns the optimal cost sum(count * length)
 * and the deepest leaf in *depth. */
static uint64_t naive_huffman(const uint32_t *counts, int n, int *depth) {
    uint64_t w[2 * SS_HUFF_MAX_SYMS];
    int parent[2 * SS_HUFF_MAX_SYMS], alive[2 * SS_HUFF_MAX_SYMS], nodes = 0, leaves = 0;
    uint64_t cost = 0;
    for (int s = 0; s < n; s++)
        if (counts[s]) {
            w[nodes] = counts[s];
            alive[nodes] = 1;
            parent[nodes++] = -1;
            leaves++;
        }
    for (int live = leaves; live > 1; live--) {
        int a = -1, b = -1;
        for (int i = 0; i < nodes; i++) {
            if (!alive[i]) continue;
            if (a < 0 || w[i] < w[a]) {
                b = a;
                a = i;
            } else if (b < 0 || w[i] < w[b]) {
                b = i;
            }
        }
        w[nodes] = w[a] + w[b];
        cost += w[nodes];
        alive[a] = alive[b] = 0;
        alive[nodes] = 1;
        parent[nodes] = -1;
        parent[a] = parent[b] = nodes++;
    }
    *depth = 0;
    for (int i = 0; i < leaves; i++) {
        int d = 0;
        for (int p = parent[i]; p >= 0; p = parent[p]) d++;
        if (d > *depth) *depth = d;
    }
    return cost;
}

/* Kraft sum scaled by 2^15: exactly 2^15 for a complete prefix code. */
static uint32_t kraft(const uint8_t *lens, int n) {
    uint32_t k = 0;
    for (int s = 0; s < n; s++)
        if (lens[s]) k += 1u << (15 - lens[s]);
    return k;
}

static void test_huffman_lengths_are_optimal_and_complete(void **st) {
    (void)st;
    for (int t = 0; t < 200; t++) {
        uint32_t counts[257];
        uint8_t lens[257];
        int n = t < 100 ? 257 : 2 + (int)(hrnd() % 30);
        for (int s = 0; s < n; s++) {
            /* Mixed scales and zeros; some tries with huge counts. */
            uint32_t c = hrnd() % 4 == 0 ? 0 : hrnd() >> (hrnd() % 32);
            counts[s] = t % 7 == 0 ? c : c % 5000;
        }
        counts[0] = counts[1] = 1; /* at least two used */
        int depth, rounds = ss_huff_lengths(counts, n, 15, lens);
        uint64_t best = naive_huffman(counts, n, &depth), cost = 0;
        for (int s = 0; s < n; s++) {
            assert_true(lens[s] <= 15);
            assert_true((lens[s] == 0) == (counts[s] == 0));
            cost += (uint64_t)counts[s] * lens[s];
        }
        assert_int_equal(kraft(lens, n), 1u << 15);
        /* Optimal codes that tie can differ in depth: compare where that cannot matter. */
        if (depth < 15) { /* the plain Huffman code fits: ours must cost the same */
            assert_int_equal(rounds, 0);
            assert_int_equal(cost, best);
        } else {
            assert_true(cost >= best);
        }
    }
    /* One used symbol gets a 1-bit code; bad arguments are refused. */
    uint32_t one[5] = {0, 0, 9, 0, 0};
    uint8_t l5[5];
    assert_int_equal(ss_huff_lengths(one, 5, 7, l5), 0);
    assert_int_equal(l5[2], 1);
    assert_int_equal(l5[0] + l5[1] + l5[3] + l5[4], 0);
    uint32_t many[19];
    for (int s = 0; s < 19; s++) many[s] = 1;
    uint8_t l19[19];
    assert_int_equal(ss_huff_lengths(many, 19, 4, l19), -1); /* 19 symbols need 5 bits */
}

/* Counts growing a little faster than Fibonacci's (c[i] = c[i-1] + c[i-2] + 2,
 * from 1, 2) never tie while Huffman merges them, even with an extra count of
 * 1 (EOB), so the optimal tree is the one comb: n symbols, depth n-1.
 * (Plain Fibonacci counts tie at every step, and some optimal trees are
 * shallow.) */
static void skewed_counts(uint32_t *c, int n) {
    c[0] = 1;
    c[1] = 2;
    for (int i = 2; i < n; i++) c[i] = c[i - 1] + c[i - 2] + 2;
}

static void test_huffman_length_limit_on_skewed_counts(void **st) {
    (void)st;
    enum { NSYM = 22 };
    uint32_t counts[257] = {0};
    skewed_counts(counts, NSYM);
    int depth;
    naive_huffman(counts, NSYM, &depth);
    assert_int_equal(depth, NSYM - 1); /* a plain Huffman code would be too deep */
    uint8_t lens[257];
    int rounds = ss_huff_lengths(counts, NSYM, 15, lens);
    assert_true(rounds > 0); /* the limit path ran */
    int maxlen = 0;
    for (int s = 0; s < NSYM; s++) maxlen = lens[s] > maxlen ? lens[s] : maxlen;
    assert_true(maxlen <= 15 && maxlen >= 5); /* 22 symbols need 5 bits */
    assert_int_equal(kraft(lens, NSYM), 1u << 15);
    /* And the code-length alphabet's 7-bit limit. */
    rounds = ss_huff_lengths(counts, 19, 7, lens);
    assert_true(rounds > 0);
    for (int s = 0; s < 19; s++) assert_true(lens[s] >= 1 && lens[s] <= 7);
    assert_int_equal(kraft(lens, 19), 1u << 15);

    /* A byte stream with that histogram (one block) through the encoder: the
     * biggest count goes to byte 2, the PNG filter byte, for the image below. */
    uint32_t bytecounts[257] = {0};
    size_t n = 0;
    for (int s = 0; s < NSYM; s++) {
        bytecounts[s == NSYM - 1 ? 2 : s + 3] = counts[s];
        n += counts[s];
    }
    bytecounts[256] = 1; /* EOB */
    naive_huffman(bytecounts, 257, &depth);
    assert_int_equal(depth, NSYM);
    assert_true(ss_huff_lengths(bytecounts, 257, 15, lens) > 0); /* what the writer builds */
    unsigned char *d = malloc(n + 500);
    assert_non_null(d);
    size_t i = 0;
    for (int v = 0; v < 256; v++)
        for (uint32_t c = 0; c < bytecounts[v]; c++) d[i++] = (unsigned char)v;
    shuffle(d, n);
    size_t z = zlib_huffman_check(d, n, SS_HUFF_NO_STORED);
    assert_true(z < n * 3 / 8); /* ~2.2 bits a byte */
    assert_int_equal(zlib_huffman_check(d, n, 0), z);

    /* The same as an image's Up deltas (the filter bytes and padding add to
     * byte 2's count, the biggest), through the PNG writer. */
    int w = 500, h = (int)((n + 499) / 500);
    while (i < (size_t)w * h) d[i++] = 2;
    uint16_t *px = image_from_deltas(d, w, h);
    size_t flen;
    unsigned char *f = ref_filtered(px, w, h, 8, &flen);
    memset(bytecounts, 0, sizeof bytecounts);
    for (size_t j = 0; j < flen; j++) bytecounts[f[j]]++;
    bytecounts[256] = 1;
    assert_true(ss_huff_lengths(bytecounts, 257, 15, lens) > 0); /* the writer's histogram */
    free(f);
    huffman_check(px, w, h, 8);
    free(px);
    free(d);
}

/* Big enough for several deflate blocks: smooth halves get coded, a noise
 * band in the middle gets stored; the 16-bit samples are real 16-bit. */
static void test_huffman_multi_block_image(void **st) {
    (void)st;
    int w = 700, h = 900;
    uint16_t *px = malloc((size_t)w * h * sizeof *px);
    assert_non_null(px);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            unsigned v = (y > 300 && y < 500) ? hrnd() : (unsigned)(x * 37 + y * 11) + hrnd() % 64;
            px[(size_t)y * w + x] = (uint16_t)v;
        }
    size_t len = huffman_check(px, w, h, 16);
    size_t raw = (size_t)h * (1 + 2 * (size_t)w);
    assert_true(len < raw * 9 / 10);
    free(px);
    /* Empty and tiny inputs of the raw encoder. */
    zlib_huffman_check((const unsigned char *)"", 0, 0);
    zlib_huffman_check((const unsigned char *)"x", 1, 0);
    zlib_huffman_check((const unsigned char *)"x", 1, SS_HUFF_NO_STORED);
}

/* Random bytes cannot be coded below 8 bits: the output stays within a few
 * bytes per 64 KiB of the input (stored blocks), never 15/8 of it. */
static void test_huffman_does_not_expand_noise(void **st) {
    (void)st;
    size_t n = 600000; /* three blocks */
    unsigned char *d = malloc(n);
    assert_non_null(d);
    for (size_t i = 0; i < n; i++) d[i] = (unsigned char)hrnd();
    size_t z = zlib_huffman_check(d, n, 0);
    assert_true(z <= n + 6 * (n / 65535 + 4));
    free(d);
}

/* Real slices and their low-rank reconstructions (ringing everywhere), 8-bit
 * and as 16-bit slices: exact round trips, and bytes close to libdeflate L1's. */
static void test_huffman_real_slices_and_reconstructions(void **st) {
    (void)st;
    static const char *files[] = {"BrainProtonDensitySlice.png", "BrainT1Slice.png",
                                  "BrainMidSagittalSlice.png", "FatMRISlice.png"};
    const ss_backend *blas = ss_backend_find("blas");
    assert_non_null(blas);
    ss_workspace *ws = ss_workspace_new();
    assert_non_null(ws);
    int ran = 0;
    for (size_t fi = 0; fi < sizeof files / sizeof files[0]; fi++) {
        ss_image img;
        int rc = tu_load_slice(files[fi], &img);
        if (rc == 1) continue;
        assert_int_equal(rc, SS_OK);
        ran++;
        int start = img.bit_depth;
        for (int bits = start; bits <= 16; bits += 8) {
            if (bits == 16 && start == 8) /* a 16-bit slice whose reconstructions use all 16 bits */
                for (size_t i = 0; i < (size_t)img.width * img.height; i++) img.px[i] *= 257;
            img.bit_depth = bits;
            huffman_check(img.px, img.width, img.height, bits);
            ss_factors *f;
            assert_int_equal(ss_svd_factor(&img, 0, 0, &f), SS_OK);
            uint16_t *rec = malloc((size_t)img.width * img.height * sizeof *rec);
            assert_non_null(rec);
            const int ks[] = {1, 3, 10, 40, f->rank};
            for (size_t j = 0; j < 5; j++) {
                assert_int_equal(blas->reconstruct(f, ks[j], rec, ws), SS_OK);
                size_t len = huffman_check(rec, img.width, img.height, bits);
                unsigned char *png, *dpng;
                size_t dlen, elen;
                /* The default writer (Huffman or, for smooth images, LZ). */
                assert_int_equal(ss_png_encode(rec, img.width, img.height, bits, &png, &elen), SS_OK);
                ss_image back;
                assert_int_equal(ss_png_decode(png, elen, BIG_SIDE, &back), SS_OK);
                assert_memory_equal(back.px, rec, (size_t)img.width * img.height * sizeof *rec);
                ss_image_free(&back);
                free(png);
                if (ss_png_encode_deflate(rec, img.width, img.height, bits, &dpng, &dlen) != SS_OK)
                    continue; /* built without libdeflate */
                free(dpng);
                /* Huffman-only matches L1 once the ringing sets in (k >= 40
                 * here); at small k LZ finds the smooth runs, which the
                 * default writer then uses. At full rank the 16-bit slice is
                 * v*257 again (high byte = low byte), pairs only LZ can use. */
                if (bits == 16 && ks[j] == f->rank) continue;
                if ((ks[j] >= 40 && len > dlen + dlen / 10) || elen > dlen + dlen / 4)
                    fail_msg("%s %d-bit k=%d: Huffman %zu bytes, default %zu, libdeflate L1 %zu",
                             files[fi], bits, ks[j], len, elen, dlen);
            }
            free(rec);
            ss_factors_free(f);
        }
        ss_image_free(&img);
    }
    ss_workspace_free(ws);
    if (!ran) skip();
}

/* ---- every colour type decodes to the right gray -------------------------- */

static void test_gray_depths_decode_exactly(void **st) {
    (void)st;
    static const int depths[] = {1, 2, 4, 8, 16};
    for (size_t i = 0; i < 5; i++) {
        spec s = make_spec(13, 9, PNG_COLOR_TYPE_GRAY, depths[i], PNG_INTERLACE_NONE);
        check_spec(&s, 0);
    }
}

static void test_palette_decodes_to_luma(void **st) {
    (void)st;
    static const int depths[] = {1, 2, 4, 8};
    for (size_t i = 0; i < 4; i++) {
        spec s = make_spec(17, 5, PNG_COLOR_TYPE_PALETTE, depths[i], PNG_INTERLACE_NONE);
        check_spec(&s, 1);
    }
}

static void test_palette_trns_composites_on_black(void **st) {
    (void)st;
    spec s = make_spec(31, 8, PNG_COLOR_TYPE_PALETTE, 8, PNG_INTERLACE_NONE);
    s.ntrans = s.npal / 2; /* the other entries stay opaque */
    for (int i = 0; i < s.ntrans; i++) s.trans_alpha[i] = (png_byte)rnd();
    s.trans_alpha[0] = 0;
    s.trans_alpha[1] = 255;
    check_spec(&s, 1);
}

static void test_gray_trns_becomes_black(void **st) {
    (void)st;
    spec s = make_spec(20, 20, PNG_COLOR_TYPE_GRAY, 8, PNG_INTERLACE_NONE);
    s.gray_trans = 77;
    for (int i = 0; i < 400; i += 3) s.samples[i] = 77;
    check_spec(&s, 0);
}

static void test_rgb_decodes_to_luma(void **st) {
    (void)st;
    spec s8 = make_spec(23, 11, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE);
    check_spec(&s8, 1);
    spec s16 = make_spec(23, 11, PNG_COLOR_TYPE_RGB, 16, PNG_INTERLACE_NONE);
    check_spec(&s16, 1);
}

static void test_alpha_composites_on_black(void **st) {
    (void)st;
    spec ga8 = make_spec(19, 7, PNG_COLOR_TYPE_GRAY_ALPHA, 8, PNG_INTERLACE_NONE);
    check_spec(&ga8, 1);
    spec ga16 = make_spec(19, 7, PNG_COLOR_TYPE_GRAY_ALPHA, 16, PNG_INTERLACE_NONE);
    check_spec(&ga16, 1);
    spec rgba8 = make_spec(19, 7, PNG_COLOR_TYPE_RGBA, 8, PNG_INTERLACE_NONE);
    check_spec(&rgba8, 1);
    spec rgba16 = make_spec(19, 7, PNG_COLOR_TYPE_RGBA, 16, PNG_INTERLACE_NONE);
    check_spec(&rgba16, 1);
}

static void test_interlaced_decodes_like_plain(void **st) {
    (void)st;
    /* Odd sizes leave some Adam7 passes empty or partial. */
    spec g8 = make_spec(13, 11, PNG_COLOR_TYPE_GRAY, 8, PNG_INTERLACE_ADAM7);
    check_spec(&g8, 0);
    spec g16 = make_spec(3, 1, PNG_COLOR_TYPE_GRAY, 16, PNG_INTERLACE_ADAM7);
    check_spec(&g16, 0);
    spec g2 = make_spec(9, 14, PNG_COLOR_TYPE_GRAY, 2, PNG_INTERLACE_ADAM7);
    check_spec(&g2, 0);
    spec rgb = make_spec(29, 17, PNG_COLOR_TYPE_RGB, 16, PNG_INTERLACE_ADAM7);
    check_spec(&rgb, 1);
    spec pal = make_spec(29, 17, PNG_COLOR_TYPE_PALETTE, 4, PNG_INTERLACE_ADAM7);
    check_spec(&pal, 1);
}

/* ---- real slices (Debian insighttoolkit4-examples) ------------------------- */

static ss_image load_slice(const char *name) {
    const char *dir = getenv("SVDSLICE_TEST_DATA");
    char path[4096];
    ss_image img = {0};
    if (!dir) return img;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unsigned char *buf;
    size_t len;
    if (ss_read_file(path, 1u << 24, &buf, &len) != SS_OK) return img;
    assert_int_equal(ss_png_decode(buf, len, BIG_SIDE, &img), SS_OK);
    free(buf);
    return img;
}

/* Expected figures read with PIL (python3-pil): size, sum of gray, one pixel. */
static void test_real_palette_slice_decodes(void **st) {
    (void)st;
    ss_image img = load_slice("BrainProtonDensitySlice.png");
    if (!img.px) skip();
    assert_int_equal(img.width, 181);
    assert_int_equal(img.height, 217);
    assert_int_equal(img.bit_depth, 8);
    uint64_t sum = 0;
    for (size_t i = 0; i < 181u * 217u; i++) sum += img.px[i];
    assert_int_equal(sum, 4860107);
    assert_int_equal(img.px[100 * 181 + 90], 189);
    ss_image_free(&img);
}

static void test_real_rgb_slice_decodes(void **st) {
    (void)st;
    ss_image img = load_slice("BrainT1Slice.png");
    if (!img.px) skip();
    assert_int_equal(img.width, 181);
    assert_int_equal(img.height, 217);
    uint64_t sum = 0;
    for (size_t i = 0; i < 181u * 217u; i++) sum += img.px[i];
    assert_int_equal(sum, 2673952); /* R = G = B, so the luma is exact */
    ss_image_free(&img);
}

/* ---- hostile input ------------------------------------------------------- */

static void test_random_bytes_are_not_png(void **st) {
    (void)st;
    unsigned char junk[1000];
    for (int t = 0; t < 50; t++) {
        for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)rnd();
        junk[0] = 0; /* a PNG starts with 137 */
        ss_image img;
        assert_int_equal(ss_png_decode(junk, sizeof junk - (size_t)t, BIG_SIDE, &img), SS_ENOTPNG);
        assert_null(img.px);
    }
    ss_image img;
    assert_int_equal(ss_png_decode(junk, 0, BIG_SIDE, &img), SS_ENOTPNG);
}

static unsigned char *small_png(int interlace, size_t *len) {
    spec s = make_spec(21, 13, PNG_COLOR_TYPE_GRAY, 8, interlace);
    unsigned char *png = write_spec(&s, len);
    free(s.samples);
    return png;
}

static void test_every_truncation_is_rejected(void **st) {
    (void)st;
    for (int il = 0; il < 2; il++) {
        size_t len;
        unsigned char *png = small_png(il ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, &len);
        for (size_t n = 0; n < len; n++) {
            unsigned char *cut = malloc(n ? n : 1); /* exact size: ASan sees any overread */
            memcpy(cut, png, n);
            ss_image img;
            int rc = ss_png_decode(cut, n, BIG_SIDE, &img);
            if (n < 8) assert_int_equal(rc, SS_ENOTPNG);
            else if (rc != SS_ECORRUPT) fail_msg("prefix of %zu/%zu bytes gave %d", n, len, rc);
            assert_null(img.px);
            free(cut);
        }
        free(png);
    }
}

/* Offset of the first chunk of this type (its length field), or 0. */
static size_t find_chunk(const unsigned char *png, size_t len, const char *type) {
    size_t off = 8;
    while (off + 12 <= len) {
        uint32_t n = (uint32_t)png[off] << 24 | (uint32_t)png[off + 1] << 16 |
                     (uint32_t)png[off + 2] << 8 | png[off + 3];
        if (memcmp(png + off + 4, type, 4) == 0) return off;
        off += 12 + n;
    }
    return 0;
}

static void put32(unsigned char *b, uint32_t v) {
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

static void test_corrupt_idat_never_crashes(void **st) {
    (void)st;
    size_t len;
    unsigned char *png = small_png(PNG_INTERLACE_NONE, &len);
    size_t idat = find_chunk(png, len, "IDAT");
    assert_true(idat > 0);
    uint32_t n = (uint32_t)png[idat] << 24 | (uint32_t)png[idat + 1] << 16 |
                 (uint32_t)png[idat + 2] << 8 | png[idat + 3];
    unsigned char *bad = malloc(len);
    for (uint32_t i = 0; i < n; i++) {
        memcpy(bad, png, len);
        bad[idat + 8 + i] ^= (unsigned char)(1 + rnd() % 255);
        /* Re-sign the chunk so the zlib stream itself is what gets tested. */
        put32(bad + idat + 8 + n, (uint32_t)crc32(0, bad + idat + 4, n + 4));
        ss_image img;
        int rc = ss_png_decode(bad, len, BIG_SIDE, &img);
        if (rc == SS_OK) {
            assert_int_equal(img.width, 21);
            ss_image_free(&img);
        } else {
            assert_int_equal(rc, SS_ECORRUPT);
        }
    }
    /* A flipped CRC byte, with intact data, must be caught. */
    for (int k = 0; k < 4; k++) {
        memcpy(bad, png, len);
        bad[idat + 8 + n + (size_t)k] ^= 0x5a;
        ss_image img;
        assert_int_equal(ss_png_decode(bad, len, BIG_SIDE, &img), SS_ECORRUPT);
        assert_null(img.px);
    }
    free(bad);
    free(png);
}

/* A bare signature + IHDR + IEND with the given dimensions and valid CRCs. */
static size_t header_only_png(unsigned char *b, uint32_t w, uint32_t h) {
    static const unsigned char sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    memcpy(b, sig, 8);
    put32(b + 8, 13);
    memcpy(b + 12, "IHDR", 4);
    put32(b + 16, w);
    put32(b + 20, h);
    b[24] = 8; /* gray 8-bit, deflate, no filter method, no interlace */
    b[25] = b[26] = b[27] = b[28] = 0;
    put32(b + 29, (uint32_t)crc32(0, b + 12, 17));
    put32(b + 33, 0);
    memcpy(b + 37, "IEND", 4);
    put32(b + 41, (uint32_t)crc32(0, b + 37, 4));
    return 45;
}

static void test_huge_header_is_too_large(void **st) {
    (void)st;
    unsigned char b[64];
    size_t n = header_only_png(b, 100000, 100000);
    ss_image img;
    assert_int_equal(ss_png_decode(b, n, BIG_SIDE, &img), SS_ETOOLARGE);
    assert_null(img.px);
    n = header_only_png(b, 10, 0x7fffffff);
    assert_int_equal(ss_png_decode(b, n, BIG_SIDE, &img), SS_ETOOLARGE);
    /* Within the limit but no IDAT: libpng's complaint, not a size one. */
    n = header_only_png(b, 10, 10);
    assert_int_equal(ss_png_decode(b, n, BIG_SIDE, &img), SS_ECORRUPT);
}

/* Appends a chunk (length, type, data, CRC) to b at *off. */
static void put_chunk(unsigned char *b, size_t *off, const char *type, const unsigned char *d, size_t n) {
    put32(b + *off, (uint32_t)n);
    memcpy(b + *off + 4, type, 4);
    if (n) memcpy(b + *off + 8, d, n);
    put32(b + *off + 8 + n, (uint32_t)crc32(0, b + *off + 4, (uInt)(n + 4)));
    *off += 12 + n;
}

/* Filtered bytes of an 8-bit gray side x side image: rows of filter byte + samples,
 * per Adam7 pass when interlaced (PNG spec 8.2). */
static size_t filtered_bytes(uint32_t side, int interlace) {
    if (!interlace) return (size_t)side * (side + 1);
    static const uint32_t x0[7] = {0, 4, 0, 2, 0, 1, 0}, dx[7] = {8, 8, 4, 4, 2, 2, 1};
    static const uint32_t y0[7] = {0, 0, 4, 0, 2, 0, 1}, dy[7] = {8, 8, 8, 4, 4, 2, 2};
    size_t n = 0;
    for (int i = 0; i < 7; i++) {
        uint32_t w = (side + dx[i] - 1 - x0[i]) / dx[i], h = (side + dy[i] - 1 - y0[i]) / dy[i];
        if (w && h) n += (size_t)h * (w + 1);
    }
    return n;
}

/* An all-black side x side 8-bit gray PNG whose zlib stream holds `extra` more zero
 * bytes after the image: a decompression bomb when extra is large. The stream is
 * built from one deflated MiB of zeros, ended by a full flush (byte-aligned, no
 * reference back) and repeated, so no test deflates hundreds of MiB. */
static unsigned char *bomb_png(uint32_t side, int interlace, size_t extra, size_t *len) {
    const size_t mib = (size_t)1 << 20, total = filtered_bytes(side, interlace) + extra;
    unsigned char *zeros = calloc(1, mib);
    unsigned char seg[4096], tail[4096];
    assert_non_null(zeros);
    size_t seglen = 0, taillen = 0;
    for (int part = 0; part < 2; part++) { /* 0: a full MiB segment; 1: the rest, ending the stream */
        z_stream z;
        memset(&z, 0, sizeof z);
        assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
        z.next_in = zeros;
        z.avail_in = (uInt)(part ? total % mib : mib);
        z.next_out = part ? tail : seg;
        z.avail_out = sizeof seg;
        assert_int_equal(deflate(&z, part ? Z_FINISH : Z_FULL_FLUSH), part ? Z_STREAM_END : Z_OK);
        *(part ? &taillen : &seglen) = sizeof seg - z.avail_out;
        deflateEnd(&z);
    }
    free(zeros);
    size_t nseg = total / mib, zlen = 2 + nseg * seglen + taillen + 4;
    unsigned char *zs = malloc(zlen);
    assert_non_null(zs);
    zs[0] = 0x78, zs[1] = 0xda; /* deflate, 32 KiB window, level 9 */
    for (size_t i = 0; i < nseg; i++) memcpy(zs + 2 + i * seglen, seg, seglen);
    memcpy(zs + 2 + nseg * seglen, tail, taillen);
    put32(zs + zlen - 4, (uint32_t)(total % 65521) << 16 | 1); /* Adler-32 of zeros */

    const size_t idat = 64 << 10; /* IDAT chunks of 64 KiB */
    unsigned char *b = malloc(8 + 25 + zlen + (zlen / idat + 1) * 12 + 12);
    assert_non_null(b);
    static const unsigned char sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    memcpy(b, sig, 8);
    size_t off = 8;
    unsigned char ihdr[13] = {0};
    put32(ihdr, side);
    put32(ihdr + 4, side);
    ihdr[8] = 8; /* gray 8-bit */
    ihdr[12] = (unsigned char)(interlace ? 1 : 0);
    put_chunk(b, &off, "IHDR", ihdr, sizeof ihdr);
    for (size_t i = 0; i < zlen; i += idat) put_chunk(b, &off, "IDAT", zs + i, zlen - i < idat ? zlen - i : idat);
    put_chunk(b, &off, "IEND", NULL, 0);
    free(zs);
    *len = off;
    return b;
}

static void test_inflating_past_the_image_is_refused(void **st) {
    (void)st;
    for (int il = 0; il < 2; il++) {
        /* 256 MiB of zeros after a 16x16 image: ~260 KB of compressed tail */
        size_t len;
        unsigned char *png = bomb_png(16, il, (size_t)256 << 20, &len);
        ss_image img;
        int rc = ss_png_decode(png, len, BIG_SIDE, &img);
        if (rc != SS_ECORRUPT) fail_msg("interlace %d: bomb gave %d, not SS_ECORRUPT", il, rc);
        assert_null(img.px);
        assert_non_null(strstr(ss_error(), "past the image"));
        free(png);

        /* The control: a short tail (1 MiB of zeros, ~1 KB compressed) is still a PNG. */
        png = bomb_png(16, il, (size_t)1 << 20, &len);
        assert_int_equal(ss_png_decode(png, len, BIG_SIDE, &img), SS_OK);
        assert_int_equal(img.width, 16);
        assert_int_equal(img.height, 16);
        for (int i = 0; i < 16 * 16; i++) assert_int_equal(img.px[i], 0);
        ss_image_free(&img);
        free(png);
        /* and so is the image without any */
        png = bomb_png(16, il, 0, &len);
        assert_int_equal(ss_png_decode(png, len, BIG_SIDE, &img), SS_OK);
        ss_image_free(&img);
        free(png);
    }
}

static void test_max_side_is_inclusive(void **st) {
    (void)st;
    for (int turn = 0; turn < 2; turn++) {
        int w = turn ? 30 : 40, h = turn ? 40 : 30;
        uint16_t *px = calloc((size_t)w * h, sizeof *px);
        unsigned char *png;
        size_t len;
        assert_int_equal(ss_png_encode(px, w, h, 8, &png, &len), SS_OK);
        ss_image img;
        assert_int_equal(ss_png_decode(png, len, 40, &img), SS_OK);
        ss_image_free(&img);
        assert_int_equal(ss_png_decode(png, len, 39, &img), SS_ETOOLARGE);
        assert_null(img.px);
        free(png);
        free(px);
    }
}

/* ---- ss_read_file -------------------------------------------------------- */

static void test_read_file_respects_the_bound(void **st) {
    (void)st;
    const char *tmp = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/test_png_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unsigned char data[3000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (unsigned char)rnd();
    assert_int_equal(write(fd, data, sizeof data), (ssize_t)sizeof data);
    close(fd);

    unsigned char *buf;
    size_t len;
    assert_int_equal(ss_read_file(path, sizeof data, &buf, &len), SS_OK);
    assert_int_equal(len, sizeof data);
    assert_memory_equal(buf, data, sizeof data);
    free(buf);
    assert_int_equal(ss_read_file(path, sizeof data - 1, &buf, &len), SS_ETOOLARGE);
    assert_null(buf);
    unlink(path);
    assert_int_equal(ss_read_file(path, sizeof data, &buf, &len), SS_EIO);
    assert_non_null(strstr(ss_error(), path));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_8bit_round_trips),
        cmocka_unit_test(test_encode_16bit_round_trips),
        cmocka_unit_test(test_deflate_writer_round_trips_or_is_unavailable),
        cmocka_unit_test(test_writers_compress_a_smooth_slice),
        cmocka_unit_test(test_encode_rejects_bad_arguments),
        cmocka_unit_test(test_huffman_round_trips_awkward_sizes),
        cmocka_unit_test(test_huffman_constant_images),
        cmocka_unit_test(test_huffman_uniform_filtered_bytes),
        cmocka_unit_test(test_huffman_lengths_are_optimal_and_complete),
        cmocka_unit_test(test_huffman_length_limit_on_skewed_counts),
        cmocka_unit_test(test_huffman_multi_block_image),
        cmocka_unit_test(test_huffman_does_not_expand_noise),
        cmocka_unit_test(test_huffman_real_slices_and_reconstructions),
        cmocka_unit_test(test_gray_depths_decode_exactly),
        cmocka_unit_test(test_palette_decodes_to_luma),
        cmocka_unit_test(test_palette_trns_composites_on_black),
        cmocka_unit_test(test_gray_trns_becomes_black),
        cmocka_unit_test(test_rgb_decodes_to_luma),
        cmocka_unit_test(test_alpha_composites_on_black),
        cmocka_unit_test(test_interlaced_decodes_like_plain),
        cmocka_unit_test(test_real_palette_slice_decodes),
        cmocka_unit_test(test_real_rgb_slice_decodes),
        cmocka_unit_test(test_random_bytes_are_not_png),
        cmocka_unit_test(test_every_truncation_is_rejected),
        cmocka_unit_test(test_corrupt_idat_never_crashes),
        cmocka_unit_test(test_huge_header_is_too_large),
        cmocka_unit_test(test_inflating_past_the_image_is_refused),
        cmocka_unit_test(test_max_side_is_inclusive),
        cmocka_unit_test(test_read_file_respects_the_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
