/* png_bench.c - times the two PNG writers behind ss_png_encode on a real slice (not a test)
 *
 * Build by hand against a configured build dir (libdeflate present), e.g.:
 *   cc -O2 -I. bench/png_bench.c BUILD/libsvdcore.a -lpng -lz -ldeflate -lm -o png_bench
 *   ./png_bench SLICE.png [repeat]
 * Prints median and minimum ms per encode and the output size, 8-bit and 16-bit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/error.h"
#include "engine/png.h"

typedef int (*encoder_fn)(const uint16_t *, int, int, int, unsigned char **, size_t *);

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void run(const char *name, encoder_fn enc, const ss_image *img, int bits, int repeat) {
    double *t = malloc((size_t)repeat * sizeof *t);
    size_t len = 0;
    for (int i = 0; i < repeat; i++) {
        unsigned char *png;
        double t0 = now_ms();
        int rc = enc(img->px, img->width, img->height, bits, &png, &len);
        t[i] = now_ms() - t0;
        if (rc) {
            printf("%s: %s\n", name, ss_error());
            free(t);
            return;
        }
        /* Refuse to time a writer whose output does not decode to the input. */
        if (i == 0) {
            ss_image back;
            if (ss_png_decode(png, len, 1 << 15, &back) != SS_OK ||
                memcmp(back.px, img->px, (size_t)img->width * img->height * 2) != 0) {
                printf("%s: output does not round trip\n", name);
                exit(1);
            }
            ss_image_free(&back);
        }
        free(png);
    }
    qsort(t, (size_t)repeat, sizeof *t, cmp_double);
    printf("%-8s %2d-bit %dx%d  median %.4f ms  min %.4f ms  %zu bytes\n", name, bits,
           img->width, img->height, t[repeat / 2], t[0], len);
    free(t);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s SLICE.png [repeat]\n", argv[0]);
        return 2;
    }
    int repeat = argc > 2 ? atoi(argv[2]) : 2000;
    unsigned char *buf;
    size_t n;
    ss_image img;
    if (ss_read_file(argv[1], 1 << 26, &buf, &n) || ss_png_decode(buf, n, 1 << 15, &img)) {
        fprintf(stderr, "%s\n", ss_error());
        return 1;
    }
    free(buf);
    if (repeat < 1) repeat = 1;
    run("libpng", ss_png_encode_libpng, &img, 8, repeat);
    run("deflate", ss_png_encode_deflate, &img, 8, repeat);
    for (size_t i = 0; i < (size_t)img.width * img.height; i++) img.px[i] = (uint16_t)(img.px[i] * 257u);
    run("libpng", ss_png_encode_libpng, &img, 16, repeat);
    run("deflate", ss_png_encode_deflate, &img, 16, repeat);
    ss_image_free(&img);
    return 0;
}
