/* png_bench.c - times the PNG writers (Huffman, libdeflate L1, libpng L1) on slices and their reconstructions (not a test)
 *
 * Build by hand against a configured build dir (libdeflate present), e.g.:
 *   cc -O2 -I. bench/png_bench.c BUILD/libss_engine.a BUILD/libss_util.a -lpng -lz -ldeflate \
 *      -lopenblas -llapacke -lpthread -lm -o png_bench
 *   ./png_bench [-r ROUNDS] [-k] SLICE.png...
 * For each slice: the original (8-bit, and 16-bit as v*257), then with -k its
 * reconstructions at every k = 1..min(m,n) (SVD + the blas backend) encoded
 * one after the other (the mix the HTTP /reconstruct path sees): 8-bit, the
 * same converted to 16 bits, and those of the slice factored as 16-bit. Prints per
 * writer the median over ROUNDS of the mean ms per image, and mean bytes.
 * Every writer's output is decoded (libpng) and compared before timing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/clock.h"
#include "util/error.h"
#include "engine/kernels.h"
#include "engine/png.h"
#include "util/file.h"
#include "engine/svd.h"

typedef int (*encoder_fn)(const uint16_t *, int, int, int, unsigned char **, size_t *);

static const struct {
    const char *name;
    encoder_fn fn;
} writers[] = {
    {"huffman", ss_png_encode_huffman},
    {"default", ss_png_encode}, /* Huffman, libdeflate L1 for smooth images */
    {"deflate1", ss_png_encode_deflate},
    {"libpng1", ss_png_encode_libpng},
};
#define NWRITERS (sizeof writers / sizeof writers[0])

/* A set of same-sized images encoded back to back. */
typedef struct {
    int w, h, bits, count;
    uint16_t **px;
} image_set;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Refuses to time a writer whose output does not decode to its input. */
static int verify(encoder_fn enc, const image_set *s) {
    for (int i = 0; i < s->count; i++) {
        unsigned char *png;
        size_t len;
        ss_image back;
        if (enc(s->px[i], s->w, s->h, s->bits, &png, &len) != SS_OK) return -1;
        int ok = ss_png_decode(png, len, 1 << 15, &back) == SS_OK && back.bit_depth == s->bits &&
                 memcmp(back.px, s->px[i], (size_t)s->w * s->h * 2) == 0;
        ss_image_free(&back);
        free(png);
        if (!ok) return 1;
    }
    return 0;
}

static void run_set(const char *label, const image_set *s, int rounds) {
    double base = 0;
    for (size_t wi = 0; wi < NWRITERS; wi++) {
        int v = verify(writers[wi].fn, s);
        if (v < 0) {
            printf("  %-9s %s\n", writers[wi].name, ss_error());
            continue;
        }
        if (v > 0) {
            printf("  %-9s output does not round trip: not timed\n", writers[wi].name);
            exit(1);
        }
        double *t = malloc((size_t)rounds * sizeof *t);
        size_t bytes = 0;
        for (int r = 0; r < rounds; r++) {
            bytes = 0;
            double t0 = ss_now_ms();
            for (int i = 0; i < s->count; i++) {
                unsigned char *png;
                size_t len;
                writers[wi].fn(s->px[i], s->w, s->h, s->bits, &png, &len);
                bytes += len;
                free(png);
            }
            t[r] = (ss_now_ms() - t0) / s->count;
        }
        qsort(t, (size_t)rounds, sizeof *t, cmp_double);
        double med = t[rounds / 2];
        if (wi == 0) base = med;
        printf("%-28s %2d-bit %-9s %8.4f ms/img (min %.4f)  %8.0f B/img  x%.2f of huffman's time\n",
               label, s->bits, writers[wi].name, med, t[0], (double)bytes / s->count, med / base);
        free(t);
    }
}

static void free_set(image_set *s) {
    for (int i = 0; i < s->count; i++) free(s->px[i]);
    free(s->px);
}

/* Encodes img's reconstructions at k = 1..rank; with also_16, also the same
 * ones converted to 16 bits (v*257, API.md's 8->16). */
static int bench_recon(const char *label, const ss_image *img, int rounds, int also_16) {
    ss_factors *f;
    const ss_backend *blas = ss_backend_find("blas");
    ss_workspace *ws = ss_workspace_new();
    if (!blas || !ws || ss_svd_factor(img, 0, 0, &f)) {
        fprintf(stderr, "%s: %s\n", label, ss_error());
        ss_workspace_free(ws);
        return 1;
    }
    size_t npx = (size_t)img->width * img->height;
    image_set rs = {img->width, img->height, img->bit_depth, f->rank, NULL};
    rs.px = malloc((size_t)f->rank * sizeof *rs.px);
    for (int k = 1; k <= f->rank; k++) {
        rs.px[k - 1] = malloc(npx * sizeof **rs.px);
        if (blas->reconstruct(f, k, rs.px[k - 1], ws)) {
            fprintf(stderr, "blas: %s\n", ss_error());
            return 1;
        }
    }
    char l2[80];
    snprintf(l2, sizeof l2, "%s k=1..%d", label, f->rank);
    run_set(l2, &rs, rounds);
    /* Small k (smooth), middle, large k (ringing) apart. */
    static const int lo[] = {1, 11, 41}, hi[] = {10, 40, 1 << 30};
    for (int r = 0; r < 3 && f->rank > 40; r++) {
        int top = hi[r] < f->rank ? hi[r] : f->rank;
        image_set sub = {rs.w, rs.h, rs.bits, top - lo[r] + 1, rs.px + lo[r] - 1};
        snprintf(l2, sizeof l2, "%s k=%d..%d", label, lo[r], top);
        run_set(l2, &sub, rounds);
    }
    if (also_16) {
        for (int k = 0; k < rs.count; k++)
            for (size_t i = 0; i < npx; i++) rs.px[k][i] = (uint16_t)(rs.px[k][i] * 257u);
        rs.bits = 16;
        snprintf(l2, sizeof l2, "%s 8->16", label);
        run_set(l2, &rs, rounds);
    }
    free_set(&rs);
    ss_factors_free(f);
    ss_workspace_free(ws);
    return 0;
}

static int bench_slice(const char *path, int rounds, int recon) {
    unsigned char *buf;
    size_t n;
    ss_image img;
    if (ss_read_file(path, 1 << 26, &buf, &n) || ss_png_decode(buf, n, 1 << 15, &img)) {
        fprintf(stderr, "%s: %s\n", path, ss_error());
        return 1;
    }
    free(buf);
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t npx = (size_t)img.width * img.height;
    char label[64];
    snprintf(label, sizeof label, "%.16s %dx%d", base, img.width, img.height);

    /* The original, 8-bit then stretched to 16-bit. */
    uint16_t *p16 = malloc(npx * sizeof *p16);
    for (size_t i = 0; i < npx; i++) p16[i] = (uint16_t)(img.px[i] * 257u);
    uint16_t *one8[1] = {img.px}, *one16[1] = {p16};
    image_set o8 = {img.width, img.height, img.bit_depth, 1, one8};
    image_set o16 = {img.width, img.height, 16, 1, one16};
    run_set(label, &o8, rounds * 50);
    run_set(label, &o16, rounds * 50);
    free(p16);

    if (recon) {
        snprintf(label, sizeof label, "%.16s recon", base);
        if (bench_recon(label, &img, rounds, 1)) return 1;
        /* A 16-bit slice (v*257) factored as such: its reconstructions are true
         * 16-bit values, unlike the 8->16 conversion of the 8-bit ones above. */
        ss_image i16 = img;
        i16.bit_depth = 16;
        i16.px = malloc(npx * sizeof *i16.px);
        for (size_t i = 0; i < npx; i++) i16.px[i] = (uint16_t)(img.px[i] * 257u);
        int rc = bench_recon(label, &i16, rounds, 0);
        free(i16.px);
        if (rc) return 1;
    }
    ss_image_free(&img);
    return 0;
}

int main(int argc, char **argv) {
    int rounds = 5, recon = 0, rc = 0, i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-r") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-k")) recon = 1;
        else break;
    }
    if (i >= argc) {
        fprintf(stderr, "usage: %s [-r ROUNDS] [-k] SLICE.png...\n", argv[0]);
        return 2;
    }
    if (rounds < 1) rounds = 1;
    for (; i < argc; i++) rc |= bench_slice(argv[i], rounds, recon);
    return rc;
}
