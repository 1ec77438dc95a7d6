/* image.h - a grayscale image of 8- or 16-bit samples, the engine's pixel currency */
#ifndef SS_IMAGE_H
#define SS_IMAGE_H
#include <stddef.h>
#include <stdint.h>

/* Samples are stored as uint16_t whatever the depth (values 0..2^bit_depth-1),
 * row-major, height rows of width samples. */
typedef struct ss_image {
    int width, height;
    int bit_depth; /* 8 or 16 */
    uint16_t *px;  /* owned; free with ss_image_free */
} ss_image;

/* Allocates px (zeroed). Returns 0 or SS_ENOMEM/SS_EINVAL. */
int ss_image_alloc(ss_image *img, int width, int height, int bit_depth);
void ss_image_free(ss_image *img); /* frees px, zeroes the struct; NULL-safe */

#endif
