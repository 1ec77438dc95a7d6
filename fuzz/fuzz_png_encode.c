/* fuzz_png_encode.c - fuzzes the PNG writers: random sizes, bit depths and pixels must come back
 * exactly through plain libpng (no project code on the reading side)
 *
 * Not part of the default build. From the repository root, with libFuzzer:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -DSVDSLICE_HAVE_LIBDEFLATE \
 *     fuzz/fuzz_png_encode.c engine/png.c engine/image.c util/error.c util/file.c \
 *     -lpng -lz -ldeflate -o fuzz_png_encode
 *   ./fuzz_png_encode -max_len=4096 -max_total_time=60 CORPUS_COPY/ fuzz/corpus/png_encode/
 * (give libFuzzer a scratch copy as the first directory so it does not grow the
 * committed seeds). Without libFuzzer, add -DSS_FUZZ_STANDALONE and drop
 * "fuzzer," from -fsanitize: the binary then runs each file named on its
 * command line once (ctest does that with the committed seeds).
 *
 * Input: byte 0 picks the depth (bit 0: 16-bit), how pixels are made (bits
 * 1-2: the input's bytes as they are, one value, a ramp plus noise, rows
 * repeating the input; smooth images take ss_png_encode's libdeflate path,
 * noisy ones its Huffman writer) and, for 8-bit (bit 3), whether values may
 * exceed 255, which must then be refused; bytes 1-4 the width and height
 * (little-endian u16 each, reduced into 1..64, or with bits 4 and 5 set into
 * 1..1024 and at most 2^17 pixels: small images keep the runs fast, large
 * ones reach the writers' multi-block paths); the rest feeds the pixels. */
#include <png.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"
#include "engine/png.h"
#include "util/file.h"

#define FUZZ_MAX_SIDE 1024
#define FUZZ_MAX_PIXELS (1 << 17)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    const unsigned char *p;
    size_t len, pos;
} cursor;

static void read_mem(png_structp png, png_bytep out, size_t n) {
    cursor *c = png_get_io_ptr(png);
    if (n > c->len - c->pos) png_error(png, "truncated");
    memcpy(out, c->p + c->pos, n);
    c->pos += n;
}

/* Decodes with libpng's plain API, no transforms: 1 if the PNG is exactly a
 * non-interlaced gray image of w x h samples of this depth equal to px. */
static int libpng_matches(const unsigned char *buf, size_t len, const uint16_t *px, int w, int h, int bits) {
    cursor cur = {buf, len, 0};
    png_structp p = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    unsigned char *volatile row = NULL;
    if (!info || setjmp(png_jmpbuf(p))) {
        free(row);
        png_destroy_read_struct(&p, info ? &info : NULL, NULL);
        return 0;
    }
    png_set_read_fn(p, &cur, read_mem);
    png_read_info(p, info);
    if (png_get_image_width(p, info) != (png_uint_32)w || png_get_image_height(p, info) != (png_uint_32)h ||
        png_get_bit_depth(p, info) != bits || png_get_color_type(p, info) != PNG_COLOR_TYPE_GRAY ||
        png_get_interlace_type(p, info) != PNG_INTERLACE_NONE)
        png_error(p, "unexpected header");
    size_t rowbytes = (size_t)w * (size_t)(bits / 8);
    if (png_get_rowbytes(p, info) != rowbytes) png_error(p, "unexpected row size");
    row = malloc(rowbytes);
    if (!row) png_error(p, "out of memory");
    int same = 1;
    for (int y = 0; y < h; y++) {
        png_read_row(p, row, NULL);
        const uint16_t *want = px + (size_t)y * (size_t)w;
        for (int x = 0; x < w; x++) {
            unsigned v = bits == 16 ? (unsigned)row[2 * x] << 8 | row[2 * x + 1] : row[x]; /* big-endian */
            same &= v == want[x];
        }
    }
    png_read_end(p, NULL); /* the IDAT stream must end cleanly, CRCs included */
    free(row);
    png_destroy_read_struct(&p, &info, NULL);
    return same;
}

typedef int (*writer)(const uint16_t *px, int width, int height, int bits, unsigned char **out,
                      size_t *out_len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 5) return 0;
    const int bits = (data[0] & 1) ? 16 : 8, mode = (data[0] >> 1) & 3, wide = (data[0] >> 3) & 1;
    const int side = (data[0] & 0x30) == 0x30 ? FUZZ_MAX_SIDE : 64;
    int w = (int)((data[1] | data[2] << 8) % side) + 1;
    int h = (int)((data[3] | data[4] << 8) % side) + 1;
    if ((size_t)w * (size_t)h > FUZZ_MAX_PIXELS) h = FUZZ_MAX_PIXELS / w;
    const uint8_t *src = data + 5;
    const size_t nsrc = size - 5;
    const size_t n = (size_t)w * (size_t)h;
    uint16_t *px = malloc(n * sizeof *px);
    if (!px) return 0;
    const unsigned mask = bits == 16 || wide ? 0xffff : 0xff;
    for (size_t i = 0; i < n; i++) {
        unsigned b0 = nsrc ? src[(2 * i) % nsrc] : 0, b1 = nsrc ? src[(2 * i + 1) % nsrc] : 0;
        unsigned v;
        switch (mode) {
        case 0: v = b0 | b1 << 8; break;                             /* the bytes as they come */
        case 1: v = nsrc ? (unsigned)(src[0] | src[nsrc - 1] << 8) : 0; break; /* one value */
        case 2: v = (unsigned)(i % (size_t)w * 37 + i / (size_t)w * 11) + (b0 & 3); break; /* smooth */
        default: v = nsrc ? (unsigned)(src[(i % (size_t)w) % nsrc] * 257u) : 0; break; /* rows repeat */
        }
        px[i] = (uint16_t)(v & mask);
    }
    int over = 0; /* an 8-bit image holding a value over 255 must be refused */
    for (size_t i = 0; bits == 8 && i < n; i++) over |= px[i] > 255;

    const writer writers[] = {ss_png_encode, ss_png_encode_huffman, ss_png_encode_deflate, ss_png_encode_libpng};
    for (size_t k = 0; k < sizeof writers / sizeof *writers; k++) {
        unsigned char *png = NULL;
        size_t len = 0;
        int rc = writers[k](px, w, h, bits, &png, &len);
        if (rc == SS_EUNAVAIL && writers[k] == ss_png_encode_deflate) continue; /* built without libdeflate */
        if (over) {
            if (rc != SS_EINVAL || png) abort();
            continue;
        }
        if (rc != SS_OK || !png || len < 8) abort();
        if (!libpng_matches(png, len, px, w, h, bits)) abort();
        free(png);
    }
    free(px);
    return 0;
}

#ifdef SS_FUZZ_STANDALONE
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        unsigned char *buf;
        size_t len;
        if (ss_read_file(argv[i], 1 << 24, &buf, &len) != SS_OK) {
            fprintf(stderr, "%s\n", ss_error());
            return 1;
        }
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
        printf("ok %s\n", argv[i]);
    }
    return 0;
}
#endif
