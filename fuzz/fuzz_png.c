/* fuzz_png.c - fuzzes ss_png_decode with untrusted bytes, and re-encodes what decodes
 *
 * Not part of the default build. From the repository root, with libFuzzer:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -DSVDSLICE_HAVE_LIBDEFLATE \
 *     fuzz/fuzz_png.c engine/png.c engine/image.c util/error.c util/file.c \
 *     -lpng -lz -ldeflate -o fuzz_png
 *   ./fuzz_png -max_len=65536 -max_total_time=60 CORPUS_COPY/ fuzz/corpus/png/
 * (give libFuzzer a scratch copy as the first directory so it does not grow the
 * committed seeds). Without libFuzzer, add -DSS_FUZZ_STANDALONE and drop
 * "fuzzer," from -fsanitize: the binary then runs each file named on its
 * command line once, e.g. to replay a crash or the corpus. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"
#include "engine/png.h"
#include "util/file.h"

/* Small enough that a fuzzed header cannot ask for a huge (slow) buffer. */
#define FUZZ_MAX_SIDE 2048

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ss_image img;
    int rc = ss_png_decode(data, size, FUZZ_MAX_SIDE, &img);
    if (rc != SS_OK) {
        /* Every failure is one of the documented codes and leaves no image. */
        if ((rc != SS_ENOTPNG && rc != SS_ECORRUPT && rc != SS_ETOOLARGE && rc != SS_ENOMEM) || img.px)
            abort();
        return 0;
    }
    if (img.width < 1 || img.height < 1 || img.width > FUZZ_MAX_SIDE || img.height > FUZZ_MAX_SIDE)
        abort();
    /* Whatever decodes must survive our own encode -> decode unchanged. */
    unsigned char *png = NULL;
    size_t len = 0;
    if (ss_png_encode(img.px, img.width, img.height, img.bit_depth, &png, &len) != SS_OK) abort();
    ss_image back;
    if (ss_png_decode(png, len, FUZZ_MAX_SIDE, &back) != SS_OK || back.bit_depth != img.bit_depth ||
        memcmp(back.px, img.px, (size_t)img.width * (size_t)img.height * sizeof *img.px) != 0)
        abort();
    ss_image_free(&back);
    free(png);
    ss_image_free(&img);
    return 0;
}

#ifdef SS_FUZZ_STANDALONE
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        unsigned char *buf;
        size_t len;
        if (ss_read_file(argv[i], 1 << 24, &buf, &len) != SS_OK) {
            fprintf(stderr, "%s\n", ss_error());
            return 1;
        }
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
        printf("ok %s\n", argv[i]);
    }
    return 0;
}
#endif
