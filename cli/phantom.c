/* phantom.c - the modified Shepp-Logan head phantom, rendered at any size and depth */
#include "cli/phantom.h"
#include "util/error.h"

#include <math.h>

/* Ellipses of the modified Shepp-Logan phantom (Toft 1996, as in MATLAB's
 * phantom('Modified Shepp-Logan')): additive intensity, semi-axes a (x) and
 * b (y), centre (x0, y0) on [-1, 1]^2 with y up, rotation phi in degrees. */
static const struct { double v, a, b, x0, y0, phi; } k_ellipses[] = {
    {1.0, 0.69, 0.92, 0.0, 0.0, 0.0},
    {-0.8, 0.6624, 0.8740, 0.0, -0.0184, 0.0},
    {-0.2, 0.1100, 0.3100, 0.22, 0.0, -18.0},
    {-0.2, 0.1600, 0.4100, -0.22, 0.0, 18.0},
    {0.1, 0.2100, 0.2500, 0.0, 0.35, 0.0},
    {0.1, 0.0460, 0.0460, 0.0, 0.1, 0.0},
    {0.1, 0.0460, 0.0460, 0.0, -0.1, 0.0},
    {0.1, 0.0460, 0.0230, -0.08, -0.605, 0.0},
    {0.1, 0.0230, 0.0230, 0.0, -0.606, 0.0},
    {0.1, 0.0230, 0.0460, 0.06, -0.605, 0.0},
};

static double phantom_at(double x, double y) {
    const double pi = 3.14159265358979323846;
    double v = 0.0;
    for (size_t e = 0; e < sizeof k_ellipses / sizeof k_ellipses[0]; e++) {
        double c = cos(k_ellipses[e].phi * pi / 180.0), s = sin(k_ellipses[e].phi * pi / 180.0);
        double dx = x - k_ellipses[e].x0, dy = y - k_ellipses[e].y0;
        double u = (dx * c + dy * s) / k_ellipses[e].a;
        double w = (-dx * s + dy * c) / k_ellipses[e].b;
        if (u * u + w * w <= 1.0) v += k_ellipses[e].v;
    }
    return v;
}

int ss_phantom(int height, int width, int bit_depth, ss_image *out) {
    int rc = ss_image_alloc(out, width, height, bit_depth);
    if (rc) return rc;
    const double maxval = bit_depth == 16 ? 65535.0 : 255.0;
    for (int i = 0; i < height; i++) {
        for (int j = 0; j < width; j++) {
            double acc = 0.0;
            /* 2x2 samples per pixel soften the edges like a scanner's point spread */
            for (int si = 0; si < 2; si++) {
                for (int sj = 0; sj < 2; sj++) {
                    double x = -1.0 + 2.0 * (j + 0.25 + 0.5 * sj) / width;
                    double y = 1.0 - 2.0 * (i + 0.25 + 0.5 * si) / height;
                    acc += phantom_at(x, y);
                }
            }
            double v = acc / 4.0;
            if (v < 0.0) v = 0.0;
            if (v > 1.0) v = 1.0;
            out->px[(size_t)i * width + j] = (uint16_t)lround(v * maxval);
        }
    }
    return SS_OK;
}
