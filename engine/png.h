/* png.h - PNG decode of untrusted bytes to grayscale, fast grayscale encode */
#ifndef SS_PNG_H
#define SS_PNG_H
#include <stddef.h>
#include <stdint.h>

#include "engine/image.h"

/* Decodes a PNG held in memory into an 8- or 16-bit grayscale image: palette,
 * gray below 8 bits, RGB (luma as libpng's rgb_to_gray defaults), alpha
 * composited on black, 16-bit and interlaced inputs are all accepted. The
 * IHDR dimensions are checked against max_side (each side) before any pixel
 * buffer is allocated.
 * Returns 0 and fills *out (caller frees with ss_image_free), or
 * SS_ENOTPNG (bad signature / too short), SS_ETOOLARGE (a side > max_side),
 * SS_ECORRUPT (anything libpng rejects), SS_ENOMEM. */
int ss_png_decode(const void *buf, size_t len, int max_side, ss_image *out);

/* Encodes width x height samples (values already within 0..2^bits-1) as a
 * grayscale PNG of `bits` (8 or 16) bits, tuned for speed (docs/BENCHMARKS.md).
 * On success *out is malloc'd (caller frees with free()) and *out_len set. */
int ss_png_encode(const uint16_t *px, int width, int height, int bits,
                  unsigned char **out, size_t *out_len);

/* Two other writers, for tests and the bench: libpng's
 * (always built) and a libdeflate one (Up filter, one IDAT, hand-framed
 * chunks); the latter returns SS_EUNAVAIL when built without libdeflate.
 * Same contract and ownership as ss_png_encode. */
int ss_png_encode_libpng(const uint16_t *px, int width, int height, int bits,
                         unsigned char **out, size_t *out_len);
int ss_png_encode_deflate(const uint16_t *px, int width, int height, int bits,
                          unsigned char **out, size_t *out_len);

/* Our Huffman-only writer (behind ss_png_encode, which hands images that look
 * smooth enough for LZ matching to pay to libdeflate L1 instead when linked):
 * Up filter, one IDAT
 * holding literal-only dynamic-Huffman deflate blocks, hand-framed chunks.
 * Same contract and ownership as ss_png_encode. */
int ss_png_encode_huffman(const uint16_t *px, int width, int height, int bits,
                          unsigned char **out, size_t *out_len);

/* The Huffman writer's pieces, exported for its tests and bench. */
#define SS_HUFF_MAX_SYMS 288  /* deflate's literal/length alphabet */
#define SS_HUFF_NO_STORED 1   /* flag: never fall back to stored blocks */
/* Code lengths (0 for unused symbols) of a prefix code for counts[0..n) with
 * no length over max_bits (1..15), n <= SS_HUFF_MAX_SYMS; a lone used symbol
 * gets length 1. Optimal (Huffman) when that fits, else rebuilt from halved
 * counts. Returns how many halvings it took (0: plain Huffman), or -1 on bad
 * arguments (more used symbols than 2^max_bits). */
int ss_huff_lengths(const uint32_t *counts, int n, int max_bits, uint8_t *lens);
/* Bytes ss_zlib_huffman may write for n input bytes with these flags. */
size_t ss_zlib_huffman_bound(size_t n, int flags);
/* Compresses in[0..n) into a zlib stream (RFC 1950) of literal-only deflate
 * blocks, each stored instead when that is no larger (unless
 * SS_HUFF_NO_STORED); out holds ss_zlib_huffman_bound(n, flags) bytes.
 * Returns the stream's length. */
size_t ss_zlib_huffman(const unsigned char *in, size_t n, unsigned char *out, int flags);


#endif
