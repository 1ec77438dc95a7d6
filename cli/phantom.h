/* phantom.h - a built-in Shepp-Logan-like head phantom, the bench's default image */
#ifndef SS_PHANTOM_H
#define SS_PHANTOM_H

#include "engine/image.h"

/* Renders the modified Shepp-Logan head (Toft's contrasts) stretched over a
 * height x width grid (the study's slices are 256 x 170), 2x2 supersampled,
 * scaled to the full range of bit_depth (8 or 16). Deterministic.
 * Returns 0 and fills *out (caller frees with ss_image_free), or SS_EINVAL
 * (bad shape or depth) / SS_ENOMEM. */
int ss_phantom(int height, int width, int bit_depth, ss_image *out);

#endif
