/* compress_bench.c - what the store keeps of each PNG given: one JSON line per image with the
 * bytes of the .svd at psnr 35/40/45 without the original and at the defaults, the original's
 * lossless codecs, the PSNR reached, and the times of a cache miss (decode, or factorise).
 * bench/compress/table.py turns these lines into docs/COMPRESSION.md's table.
 *   compress_bench IMAGE.png... */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/compress.h"
#include "engine/kernels.h"
#include "engine/png.h"
#include "engine/svd.h"
#include "util/clock.h"
#include "util/file.h"

static double ms_since(double t0) { return (ss_now() - t0) * 1e3; }

/* Median of three runs of decoding buf (a cache miss), in ms. */
static double load_ms(const unsigned char *buf, size_t len) {
    double t[3];
    for (int i = 0; i < 3; i++) {
        ss_factors *g = NULL;
        double t0 = ss_now();
        if (ss_svd_deserialize(buf, len, &g)) return -1;
        t[i] = ms_since(t0);
        ss_factors_free(g);
    }
    double a = t[0] < t[1] ? t[0] : t[1], b = t[0] < t[1] ? t[1] : t[0];
    return t[2] < a ? a : t[2] > b ? b : t[2];
}

int main(int argc, char **argv) {
    for (int a = 1; a < argc; a++) {
        unsigned char *png;
        size_t plen;
        ss_image img = {0};
        if (ss_read_file(argv[a], 1 << 28, &png, &plen) || ss_png_decode(png, plen, 1 << 14, &img)) {
            fprintf(stderr, "compress_bench: cannot read %s\n", argv[a]);
            return 1;
        }
        const int m = img.height, n = img.width;
        const size_t mn = (size_t)m * (size_t)n;
        const int maxval = (1 << img.bit_depth) - 1;
        float *A = malloc(sizeof(float) * mn);
        for (size_t i = 0; i < mn; i++) A[i] = img.px[i];
        printf("{\"file\":\"%s\",\"width\":%d,\"height\":%d,\"bits\":%d,\"png_bytes\":%zu", argv[a], n, m,
               img.bit_depth, plen);
        for (int codec = SS_ORIG_DEFLATE; codec <= SS_ORIG_JPEGLS; codec++) {
            unsigned char *o;
            size_t ol;
            int used;
            double t0 = ss_now();
            if (ss_orig_encode(img.px, m, n, img.bit_depth, codec, &o, &ol, &used) == 0) {
                double enc = ms_since(t0);
                uint16_t *px = malloc(sizeof(uint16_t) * mn);
                t0 = ss_now();
                int ok = ss_orig_decode(o, ol, used, m, n, img.bit_depth, px) == 0 &&
                         !memcmp(px, img.px, sizeof(uint16_t) * mn);
                printf(",\"%s_bytes\":%zu,\"%s_encode_ms\":%.2f,\"%s_decode_ms\":%.2f,\"%s_exact\":%s",
                       codec == SS_ORIG_DEFLATE ? "deflate" : "jpegls", ol,
                       codec == SS_ORIG_DEFLATE ? "deflate" : "jpegls", enc,
                       codec == SS_ORIG_DEFLATE ? "deflate" : "jpegls", ms_since(t0),
                       codec == SS_ORIG_DEFLATE ? "deflate" : "jpegls", ok ? "true" : "false");
                free(px);
                free(o);
            }
        }
        /* the defaults: the original kept, every rank */
        ss_factors *f = NULL;
        if (ss_svd_factor(&img, 0, 1, &f)) return 1;
        unsigned char *buf;
        size_t len;
        if (ss_svd_serialize(f, &buf, &len)) return 1;
        printf(",\"default_bytes\":%zu,\"default_miss_ms\":%.2f", len, load_ms(buf, len));
        free(buf);
        ss_factors_free(f);
        static const double targets[] = {35, 40, 45};
        for (int t = 0; t < 3; t++) {
            if (ss_svd_factor(&img, 0, 0, &f)) return 1;
            double psnr = 0, t0 = ss_now();
            ss_target tg = {SS_TARGET_PSNR, targets[t]};
            if (ss_compress_fit(f, A, tg, maxval, maxval, 1, &psnr)) return 1;
            double fit = ms_since(t0);
            if (ss_svd_serialize(f, &buf, &len)) return 1;
            /* PSNR of what a backend serves from the stored file */
            ss_factors *g = NULL;
            if (ss_svd_deserialize(buf, len, &g)) return 1;
            uint16_t *px = malloc(sizeof(uint16_t) * mn);
            ss_workspace *ws = ss_workspace_new();
            const ss_backend *be = ss_backend_find("blas");
            double kms = 1e9; /* the best of five: the first call also wakes the BLAS threads */
            for (int rep = 0; rep < 5; rep++) {
                double t1 = ss_now();
                be->reconstruct(g, g->rank, px, ws);
                if (ms_since(t1) < kms) kms = ms_since(t1);
            }
            double sse = 0;
            for (size_t i = 0; i < mn; i++) sse += ((double)px[i] - img.px[i]) * ((double)px[i] - img.px[i]);
            double served = sse > 0 ? 10 * log10((double)maxval * maxval * (double)mn / sse) : INFINITY;
            printf(",\"psnr%g\":{\"bytes\":%zu,\"rank\":%d,\"psnr\":%.3f,\"fit_ms\":%.1f,\"miss_ms\":%.2f,"
                   "\"recon_ms\":%.3f}",
                   targets[t], len, g->rank, served, fit, load_ms(buf, len), kms);
            ss_workspace_free(ws);
            free(px);
            ss_factors_free(g);
            ss_factors_free(f);
            free(buf);
        }
        printf("}\n");
        fflush(stdout);
        free(A);
        free(png);
        ss_image_free(&img);
    }
    return 0;
}
