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
 * grayscale PNG of `bits` (8 or 16) bits, tuned for speed (NOTES.md).
 * On success *out is malloc'd (caller frees with free()) and *out_len set. */
int ss_png_encode(const uint16_t *px, int width, int height, int bits,
                  unsigned char **out, size_t *out_len);

/* The two writers behind ss_png_encode, for its tests and bench: libpng's
 * (always built) and a libdeflate one (Up filter, one IDAT, hand-framed
 * chunks); the latter returns SS_EUNAVAIL when built without libdeflate.
 * Same contract and ownership as ss_png_encode. */
int ss_png_encode_libpng(const uint16_t *px, int width, int height, int bits,
                         unsigned char **out, size_t *out_len);
int ss_png_encode_deflate(const uint16_t *px, int width, int height, int bits,
                          unsigned char **out, size_t *out_len);

/* Reads a whole file into memory (malloc'd, caller frees); max_bytes bounds it. */
int ss_read_file(const char *path, size_t max_bytes, unsigned char **out, size_t *out_len);

#endif
