/* image.c - grayscale image allocation */
#include "engine/image.h"
#include "util/error.h"

#include <stdlib.h>
#include <string.h>

int ss_image_alloc(ss_image *img, int width, int height, int bit_depth) {
    memset(img, 0, sizeof *img);
    if (width <= 0 || height <= 0 || (bit_depth != 8 && bit_depth != 16))
        return ss_fail(SS_EINVAL, "bad image shape %dx%d, %d bits", width, height, bit_depth);
    img->px = calloc((size_t)width * (size_t)height, sizeof *img->px);
    if (!img->px) return ss_fail(SS_ENOMEM, "out of memory for a %dx%d image", width, height);
    img->width = width;
    img->height = height;
    img->bit_depth = bit_depth;
    return SS_OK;
}

void ss_image_free(ss_image *img) {
    if (!img) return;
    free(img->px);
    memset(img, 0, sizeof *img);
}
