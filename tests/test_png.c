/* test_png.c - PNG codec: round trips, every colour type to gray, real slices, hostile input */
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

#include "engine/error.h"
#include "engine/png.h"

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
    encoder_fn encs[] = {ss_png_encode, ss_png_encode_libpng, ss_png_encode_deflate};
    for (size_t e = 0; e < 3; e++) {
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
    int rc = ss_png_encode_deflate(px, 2, 2, 8, &png, &len);
    assert_true(rc == SS_EINVAL || rc == SS_EUNAVAIL);
    assert_null(png);
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
        cmocka_unit_test(test_max_side_is_inclusive),
        cmocka_unit_test(test_read_file_respects_the_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
