/* fuzz_svd.c - libFuzzer harness for the .svd readers (ss_svd_deserialize, _read_header, _read_index, _verify)
 *
 * Not part of the default build. With clang, from the repository root:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. \
 *     fuzz/fuzz_svd.c engine/svdfile.c engine/svd.c util/error.c util/file.c engine/image.c \
 *     -llapacke -lopenblas -lnettle -lz -lm -o fuzz_svd
 *   ./fuzz_svd -max_len=65536 fuzz/corpus_svd
 * Seed the corpus with small files from `svdslice compress`. Checksums make
 * almost every mutation fail early; the harness therefore reseals each input
 * (recomputes both CRCs) half of the time, so the checks behind them - sizes,
 * shapes, finiteness, sample ranges - are exercised too.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "util/error.h"
#include "engine/svd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void run(const uint8_t *buf, size_t len) {
    ss_factors h;
    (void)ss_svd_read_header(buf, len, &h);
    /* The index's partial read: header, then the singular values where it says. */
    int orig;
    size_t sv_off;
    if (len >= SS_SVD_HEADER_BYTES && ss_svd_read_index(buf, len, &h, &orig, &sv_off) == 0) {
        if (sv_off + 4 * (size_t)h.nsv > len) abort(); /* the header vouched for the size */
        float *S = malloc(sizeof(float) * (size_t)h.nsv);
        if (S) (void)ss_svd_read_sv(buf + sv_off, h.nsv, S);
        free(S);
    }
    int verified = ss_svd_verify(buf, len, &h) == 0;
    ss_factors *f = NULL;
    if (ss_svd_deserialize(buf, len, &f) == 0) {
        if (!verified) abort(); /* verify checks a subset of what deserialize does */
        /* Whatever is accepted must serialise back to the same bytes. */
        unsigned char *out;
        size_t out_len;
        if (ss_svd_serialize(f, &out, &out_len) != 0) abort();
        if (out_len != len || memcmp(out, buf, len) != 0) abort();
        free(out);
        ss_factors_free(f);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A copy of exactly `size` bytes, so ASan catches any read past the end. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    run(buf, size);
    if (size > SS_SVD_HEADER_BYTES && (data[size - 1] & 1)) {
        put_u32(buf + 384, (uint32_t)crc32_z(0, buf + SS_SVD_HEADER_BYTES, size - SS_SVD_HEADER_BYTES));
        put_u32(buf + 388, (uint32_t)crc32_z(0, buf, 388));
        run(buf, size);
    }
    free(buf);
    return 0;
}
