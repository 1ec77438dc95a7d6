/* testutil.h - small helpers shared by the cmocka tests: seeded random numbers, random factors, real slices */
#ifndef SS_TESTUTIL_H
#define SS_TESTUTIL_H
#include <stdint.h>

#include "engine/image.h"
#include "engine/svd.h"

/* xorshift64*: the same seed gives the same sequence on every machine. */
uint64_t tu_rand_u64(uint64_t *state);
double tu_rand_uniform(uint64_t *state); /* [0, 1) */

/* Random factors of an m x n slice with `rank` components (1..min(m,n)) and
 * W = diag(S) Vt: a constant component at half the range plus random ones
 * whose full-rank sum has a standard deviation of half the range, so many
 * products fall below 0 and above 2^bit_depth-1 (clamping gets exercised).
 * Returns NULL on bad arguments or ENOMEM; free with ss_factors_free. */
ss_factors *tu_random_factors(int m, int n, int rank, int bit_depth, uint64_t seed);

/* Decodes $SVDSLICE_TEST_DATA/file (a real MRI slice, e.g.
 * "BrainProtonDensitySlice.png") into *out (free with ss_image_free).
 * Returns 0, 1 when the variable is unset or the file is missing (skip the
 * test), or a negative engine error when it does not read or decode. */
int tu_load_slice(const char *file, ss_image *out);

/* Runs fn(arg) with stderr going to a buffer: buf gets its first size-1
 * bytes, NUL-terminated. Returns fn's result. */
int tu_capture_stderr(int (*fn)(void *arg), void *arg, char *buf, size_t size);

/* A fresh directory /tmp/svdslice-TAG-XXXXXX (malloc'd), NULL on failure. */
char *tu_tmpdir(const char *tag);
/* Removes the files of a flat directory, then the directory. */
void tu_rm_rf(const char *dir);
/* An h x w 8-bit slice of pseudo-random pixels (seed changes them), factorised at full rank;
 * id, name and created are left for the caller. NULL on failure. */
ss_factors *tu_gray_slice(unsigned seed, int h, int w);

#endif
