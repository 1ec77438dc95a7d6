/* testutil.c - small helpers shared by the cmocka tests (see testutil.h) */
#include "tests/util/testutil.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

#include "engine/png.h"
#include "util/file.h"

uint64_t tu_rand_u64(uint64_t *state) {
    uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

double tu_rand_uniform(uint64_t *state) { return (double)(tu_rand_u64(state) >> 11) * 0x1.0p-53; }

ss_factors *tu_random_factors(int m, int n, int rank, int bit_depth, uint64_t seed) {
    ss_factors *f = NULL;
    if (ss_factors_alloc(m, n, rank, bit_depth, 0, &f)) return NULL;
    uint64_t st = seed * 0x9E3779B97F4A7C15ull + 1;
    double half = ((1 << bit_depth) - 1) / 2.0;
    /* Uniform [-1, 1) has variance 1/3, a product of two 1/9: scale the rank-1
     * random terms so their sum has standard deviation `half`. */
    double s1 = rank > 1 ? 3.0 * half / sqrt((double)(rank - 1)) : 0.0;
    double s0 = half > s1 ? half : s1; /* keep S non-increasing */
    for (int p = 0; p < f->nsv; p++) f->S[p] = (float)(p == 0 ? s0 : s1);
    for (int i = 0; i < m; i++)
        for (int p = 0; p < rank; p++)
            f->U[(size_t)i * rank + p] =
                p == 0 ? (float)(half / s0) : (float)(2.0 * tu_rand_uniform(&st) - 1.0);
    for (int p = 0; p < rank; p++)
        for (int j = 0; j < n; j++) {
            size_t o = (size_t)p * n + j;
            f->Vt[o] = p == 0 ? 1.0f : (float)(2.0 * tu_rand_uniform(&st) - 1.0);
            f->W[o] = f->S[p] * f->Vt[o];
        }
    return f;
}

int tu_load_slice(const char *file, ss_image *out) {
    memset(out, 0, sizeof *out);
    const char *dir = getenv("SVDSLICE_TEST_DATA");
    if (!dir || !*dir) return 1;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, file) >= (int)sizeof path) return 1;
    if (access(path, R_OK) != 0) return 1;
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = ss_read_file(path, (size_t)64 << 20, &buf, &len);
    if (rc) return rc;
    rc = ss_png_decode(buf, len, 8192, out);
    free(buf);
    return rc;
}

int tu_capture_stderr(int (*fn)(void *arg), void *arg, char *buf, size_t size) {
    buf[0] = '\0';
    FILE *tmp = tmpfile();
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    if (!tmp || saved < 0 || dup2(fileno(tmp), STDERR_FILENO) < 0) abort();
    int rc = fn(arg);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    size_t n = fread(buf, 1, size - 1, tmp);
    buf[n] = '\0';
    fclose(tmp);
    return rc;
}

char *tu_tmpdir(const char *tag) {
    char tmpl[128];
    snprintf(tmpl, sizeof tmpl, "/tmp/svdslice-%s-XXXXXX", tag);
    char *d = strdup(tmpl);
    if (d && !mkdtemp(d)) {
        free(d);
        d = NULL;
    }
    return d;
}

void tu_rm_rf(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    char p[512];
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

ss_factors *tu_gray_slice(unsigned seed, int h, int w) {
    ss_image img;
    if (ss_image_alloc(&img, w, h, 8) != 0) return NULL;
    unsigned x = seed * 2654435761u + 1;
    for (int i = 0; i < w * h; i++) {
        x = x * 1103515245u + 12345u;
        img.px[i] = (uint16_t)((x >> 16) % 256);
    }
    ss_factors *f = NULL;
    int rc = ss_svd_factor(&img, 0, 1, &f);
    ss_image_free(&img);
    return rc ? NULL : f;
}
