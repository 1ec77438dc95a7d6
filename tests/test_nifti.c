/* test_nifti.c - NIfTI from untrusted memory: hostile headers, gzip bombs and truncation, byte order, write-back */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "engine/nifti.h"
#include "util/error.h"
#include "util/testutil.h"
#include "util/tu_nifti.h"

/* The bounds every hostile case must keep: a second, and 32 MiB above the test's own peak. */
#define MAX_MS 1000.0
#define MAX_KIB (32L * 1024)

typedef struct hostile {
    const unsigned char *buf;
    size_t len;
    int t;
} hostile;

static int decode_it(void *arg) {
    const hostile *h = arg;
    ss_nifti_info info;
    void *vox = NULL;
    int rc = ss_nifti_decode(h->buf, h->len, h->t, NULL, &info, &vox);
    free(vox);
    return rc;
}

/* Decodes buf in a child and checks the code, the time and the memory; also probes it here. */
static void expect_rejected(const unsigned char *buf, size_t len, int t, int code, const char *what) {
    hostile h = {buf, len, t};
    int rc = 0;
    long kib = 0;
    double ms = 0;
    assert_int_equal(tu_run_measured(decode_it, &h, &rc, &kib, &ms), 0);
    if (rc != code) fail_msg("%s: decode returned %d (%s), expected %d (%s)", what, rc, ss_strcode(rc), code, ss_strcode(code));
    if (ms > MAX_MS) fail_msg("%s: took %.0f ms", what, ms);
    if (kib > MAX_KIB) fail_msg("%s: grew %ld KiB", what, kib);
    /* The same verdict in this process, with a message. */
    ss_nifti_info info;
    void *vox = (void *)1;
    int rc2 = ss_nifti_decode(buf, len, t, NULL, &info, &vox);
    assert_int_equal(rc2, code);
    assert_null(vox);
    assert_true(strlen(ss_error()) > 10);
}

static unsigned char *build(const tu_nii *h, size_t data_len, size_t *len) {
    unsigned char *data = calloc(1, data_len ? data_len : 1);
    assert_non_null(data);
    for (size_t i = 0; i < data_len; i++) data[i] = (unsigned char)(i * 7);
    unsigned char *b = tu_nifti_build(h, data, data_len, 1, len);
    free(data);
    assert_non_null(b);
    return b;
}

static void test_valid_file_decodes(void **state) {
    (void)state;
    for (int version = 1; version <= 2; version++) {
        tu_nii h = tu_nii_3d(version, 5, 4, 3, SS_NII_INT16, 2);
        int16_t data[60];
        for (int i = 0; i < 60; i++) data[i] = (int16_t)(i * 100 - 3000);
        for (int big = 0; big <= 1; big++) {
            h.big_endian = big;
            size_t len;
            unsigned char *b = tu_nifti_build(&h, data, sizeof data, 2, &len);
            for (int gz = 0; gz <= 1; gz++) {
                size_t zl = len;
                unsigned char *z = gz ? tu_gzip(b, len, &zl) : b;
                ss_nifti_info info;
                assert_int_equal(ss_nifti_probe(z, zl, 0, NULL, &info), 0);
                void *vox;
                assert_int_equal(ss_nifti_decode(z, zl, 0, NULL, &info, &vox), 0);
                assert_int_equal(info.version, version);
                assert_int_equal(info.big_endian, big);
                assert_int_equal(info.gzipped, gz);
                assert_int_equal(info.nx, 5);
                assert_int_equal(info.ny, 4);
                assert_int_equal(info.nz, 3);
                assert_int_equal(info.nvox, 60);
                assert_int_equal(info.datatype, SS_NII_INT16);
                assert_true(info.pixdim[2] == 0.75);
                assert_memory_equal(vox, data, sizeof data); /* native order whatever the file's */
                free(vox);
                if (gz) free(z);
            }
            free(b);
        }
        free(tu_nifti_build(&h, data, sizeof data, 2, &(size_t){0}));
    }
}

static void test_hostile_dims(void **state) {
    (void)state;
    size_t len;
    /* 32767^3 voxels (NIfTI-1's most): over the default cap, refused before allocating. */
    tu_nii h = tu_nii_3d(1, 32767, 32767, 32767, SS_NII_UINT8, 1);
    unsigned char *b = build(&h, 64, &len);
    expect_rejected(b, len, 0, SS_ETOOLARGE, "huge dims");
    free(b);
    /* NIfTI-2: each dim 2^40, whose product overflows 64 bits. */
    h = tu_nii_3d(2, 1, 1, 1, SS_NII_UINT8, 1);
    h.dim[1] = h.dim[2] = h.dim[3] = (int64_t)1 << 40;
    b = build(&h, 64, &len);
    expect_rejected(b, len, 0, SS_ETOOLARGE, "dims product overflow");
    free(b);
    /* 4D: small volumes but 2^40 of them: the file would be over the byte cap. */
    h = tu_nii_3d(2, 4, 4, 4, SS_NII_UINT8, 1);
    h.dim[0] = 4;
    h.dim[4] = (int64_t)1 << 40;
    b = build(&h, 64, &len);
    expect_rejected(b, len, 0, SS_ETOOLARGE, "4D count overflow");
    free(b);
    /* Zero and negative dims, dim[0] out of 1..7. */
    const int64_t bad[][2] = {{1, 0}, {2, -5}, {3, 0}, {0, 0}, {0, 8}, {0, -1}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        h = tu_nii_3d(1, 4, 4, 4, SS_NII_UINT8, 1);
        h.dim[bad[i][0]] = bad[i][1];
        b = build(&h, 64, &len);
        expect_rejected(b, len, 0, SS_ECORRUPT, "bad dim");
        free(b);
    }
    /* 5D with a fifth dim > 1: unsupported; with dims 5..7 of 1 it is fine. */
    h = tu_nii_3d(1, 4, 4, 4, SS_NII_UINT8, 1);
    h.dim[0] = 5;
    h.dim[5] = 2;
    b = build(&h, 128, &len);
    expect_rejected(b, len, 0, SS_EUNSUPPORTED, "5D");
    free(b);
    h.dim[5] = 1;
    b = build(&h, 64, &len);
    ss_nifti_info info;
    assert_int_equal(ss_nifti_probe(b, len, 0, NULL, &info), 0);
    free(b);
    /* A caller's tighter cap. */
    h = tu_nii_3d(1, 10, 10, 10, SS_NII_UINT8, 1);
    b = build(&h, 1000, &len);
    ss_nifti_limits lim = {999, 0};
    assert_int_equal(ss_nifti_probe(b, len, 0, &lim, &info), SS_ETOOLARGE);
    lim.max_voxels = 1000;
    assert_int_equal(ss_nifti_probe(b, len, 0, &lim, &info), 0);
    lim.max_file_bytes = 1000; /* header + data is 1352 */
    assert_int_equal(ss_nifti_probe(b, len, 0, &lim, &info), SS_ETOOLARGE);
    free(b);
}

static void test_hostile_offsets_and_sizes(void **state) {
    (void)state;
    size_t len;
    const double offs[] = {-352, 0, 100, 351, 352.5, NAN, 1e30};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        tu_nii h = tu_nii_3d(1, 4, 4, 4, SS_NII_UINT8, 1);
        h.vox_offset = offs[i];
        unsigned char *b = build(&h, 64, &len);
        expect_rejected(b, len, 0, SS_ECORRUPT, "bad vox_offset");
        free(b);
    }
    /* NIfTI-2: a negative int64 offset and one inside the header. */
    const double offs2[] = {-1e6, 540, 543};
    for (size_t i = 0; i < 3; i++) {
        tu_nii h = tu_nii_3d(2, 4, 4, 4, SS_NII_UINT8, 1);
        h.vox_offset = offs2[i];
        unsigned char *b = build(&h, 64, &len);
        expect_rejected(b, len, 0, SS_ECORRUPT, "bad NIfTI-2 vox_offset");
        free(b);
    }
    /* The data past the end: an offset past it, and a file cut short by one byte. */
    tu_nii h = tu_nii_3d(1, 4, 4, 4, SS_NII_UINT8, 1);
    unsigned char *b = build(&h, 64, &len);
    expect_rejected(b, len - 1, 0, SS_ECORRUPT, "one byte short");
    expect_rejected(b, 200, 0, SS_ENOTNIFTI, "shorter than the header");
    expect_rejected(b, 0, 0, SS_ENOTNIFTI, "empty");
    free(b);
    h.vox_offset = 1 << 20;
    b = tu_nifti_build(&h, NULL, 0, 1, &len); /* the builder clamps: the data is absent */
    assert_non_null(b);
    expect_rejected(b, len, 0, SS_ECORRUPT, "offset past the end");
    free(b);
}

static void test_hostile_sizeof_hdr_magic_and_types(void **state) {
    (void)state;
    size_t len;
    tu_nii h = tu_nii_3d(1, 4, 4, 4, SS_NII_UINT8, 1);
    unsigned char *b = build(&h, 64, &len);
    b[0] = 0x5d; /* sizeof_hdr 349 */
    expect_rejected(b, len, 0, SS_ENOTNIFTI, "bad sizeof_hdr");
    free(b);
    h.magic = "xyz";
    b = build(&h, 64, &len);
    expect_rejected(b, len, 0, SS_ENOTNIFTI, "bad magic");
    free(b);
    h.magic = "ni1";
    b = build(&h, 64, &len);
    expect_rejected(b, len, 0, SS_EUNSUPPORTED, "a .hdr/.img pair");
    free(b);
    /* complex64, RGB, int64, float128, complex128, RGBA, binary, an unknown code. */
    const int types[] = {32, 128, 1024, 1280, 1536, 1792, 2304, 1, 7};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        h = tu_nii_3d(1, 4, 4, 4, types[i], 1);
        b = build(&h, 64 * 32, &len);
        expect_rejected(b, len, 0, SS_EUNSUPPORTED, "data type");
        free(b);
    }
    /* bitpix disagreeing with the type. */
    h = tu_nii_3d(1, 4, 4, 4, SS_NII_INT16, 2);
    h.bitpix = 8;
    b = build(&h, 128, &len);
    expect_rejected(b, len, 0, SS_ECORRUPT, "bitpix");
    free(b);
    /* Every accepted type decodes. */
    const int ok[][2] = {{SS_NII_UINT8, 1}, {SS_NII_INT8, 1},    {SS_NII_INT16, 2},  {SS_NII_UINT16, 2},
                         {SS_NII_INT32, 4}, {SS_NII_FLOAT32, 4}, {SS_NII_FLOAT64, 8}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        h = tu_nii_3d(2, 3, 2, 2, ok[i][0], ok[i][1]);
        b = build(&h, 12 * 8, &len);
        ss_nifti_info info;
        void *vox;
        if (ok[i][0] == SS_NII_FLOAT32 || ok[i][0] == SS_NII_FLOAT64) memset(b + 544, 0, 96); /* finite zeros */
        assert_int_equal(ss_nifti_decode(b, len, 0, NULL, &info, &vox), 0);
        assert_int_equal(info.bytes_per_voxel, ok[i][1]);
        free(vox);
        free(b);
    }
}

static void test_non_finite_floats_refused(void **state) {
    (void)state;
    float data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    data[5] = NAN;
    tu_nii h = tu_nii_3d(1, 2, 2, 2, SS_NII_FLOAT32, 4);
    size_t len;
    unsigned char *b = tu_nifti_build(&h, data, sizeof data, 4, &len);
    expect_rejected(b, len, 0, SS_EUNSUPPORTED, "NaN voxel");
    free(b);
    data[5] = INFINITY;
    b = tu_nifti_build(&h, data, sizeof data, 4, &len);
    expect_rejected(b, len, 0, SS_EUNSUPPORTED, "inf voxel");
    free(b);
}

static void test_4d_takes_volume_t(void **state) {
    (void)state;
    tu_nii h = tu_nii_3d(2, 3, 2, 2, SS_NII_UINT8, 1);
    h.dim[0] = 4;
    h.dim[4] = 3;
    unsigned char data[36];
    for (int i = 0; i < 36; i++) data[i] = (unsigned char)i;
    size_t len, zl;
    unsigned char *b = tu_nifti_build(&h, data, sizeof data, 1, &len);
    unsigned char *z = tu_gzip(b, len, &zl);
    for (int gz = 0; gz <= 1; gz++)
        for (int t = 0; t < 3; t++) {
            ss_nifti_info info;
            void *vox;
            assert_int_equal(ss_nifti_decode(gz ? z : b, gz ? zl : len, t, NULL, &info, &vox), 0);
            assert_int_equal(info.nt, 3);
            assert_int_equal(info.t, t);
            assert_memory_equal(vox, data + 12 * t, 12);
            free(vox);
        }
    expect_rejected(b, len, 3, SS_EINVAL, "t past the volumes");
    expect_rejected(z, zl, -1, SS_EINVAL, "negative t");
    free(b);
    free(z);
}

static void test_truncated_gzip_and_bombs(void **state) {
    (void)state;
    tu_nii h = tu_nii_3d(1, 40, 30, 20, SS_NII_UINT8, 1);
    size_t len, zl;
    unsigned char *b = build(&h, 24000, &len);
    unsigned char *z = tu_gzip(b, len, &zl);
    /* Cut anywhere: inside the header, inside the data, inside the 8-byte trailer. */
    const size_t cuts[] = {10, 100, zl / 2, zl - 9, zl - 4, zl - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
        expect_rejected(z, cuts[i], 0, SS_ECORRUPT, "truncated gzip");
    /* A flipped byte of the stream's CRC-32 (the data decodes, the check does not). */
    z[zl - 6] ^= 0x55;
    expect_rejected(z, zl, 0, SS_ECORRUPT, "gzip CRC mismatch");
    free(z);
    free(b);

    /* A bomb: a header claiming 16x16x16 bytes, then 256 MiB of zeros in ~256 KiB of gzip. */
    h = tu_nii_3d(1, 16, 16, 16, SS_NII_UINT8, 1);
    b = build(&h, 4096, &len);
    z_stream s;
    memset(&s, 0, sizeof s);
    assert_int_equal(deflateInit2(&s, 9, Z_DEFLATED, 16 + MAX_WBITS, 9, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = 1 << 20;
    unsigned char *bomb = malloc(cap), *zeros = calloc(1, 1 << 20);
    assert_non_null(bomb);
    assert_non_null(zeros);
    s.next_out = bomb;
    s.avail_out = (uInt)cap;
    s.next_in = b;
    s.avail_in = (uInt)len;
    assert_int_equal(deflate(&s, Z_NO_FLUSH), Z_OK);
    for (int i = 0; i < 256; i++) {
        s.next_in = zeros;
        s.avail_in = 1 << 20;
        assert_int_equal(deflate(&s, i == 255 ? Z_FINISH : Z_NO_FLUSH), i == 255 ? Z_STREAM_END : Z_OK);
    }
    size_t bl = cap - s.avail_out;
    deflateEnd(&s);
    assert_true(bl < 512 * 1024);
    expect_rejected(bomb, bl, 0, SS_ETOOLARGE, "gzip bomb");
    /* The header alone is valid: the probe answers fast and says yes (the bomb is the decode's). */
    ss_nifti_info info;
    assert_int_equal(ss_nifti_probe(bomb, bl, 0, NULL, &info), 0);
    free(bomb);
    free(zeros);
    free(b);

    /* Two gzip members back to back (as `cat a.gz b.gz`) are one file. */
    h = tu_nii_3d(1, 8, 8, 8, SS_NII_UINT8, 1);
    b = build(&h, 512, &len);
    size_t l1, l2;
    unsigned char *m1 = tu_gzip(b, 400, &l1), *m2 = tu_gzip(b + 400, len - 400, &l2);
    unsigned char *cat = malloc(l1 + l2);
    memcpy(cat, m1, l1);
    memcpy(cat + l1, m2, l2);
    void *vox;
    assert_int_equal(ss_nifti_decode(cat, l1 + l2, 0, NULL, &info, &vox), 0);
    assert_memory_equal(vox, b + 352, 512);
    free(vox);
    free(cat);
    free(m1);
    free(m2);
    free(b);
}

static void test_encode_round_trip(void **state) {
    (void)state;
    for (int version = 1; version <= 2; version++) {
        tu_nii h = tu_nii_3d(version, 7, 5, 3, SS_NII_INT16, 2);
        h.dim[0] = 4; /* a 4D input becomes one 3D volume */
        h.dim[4] = 2;
        h.slope = 0.25;
        h.inter = -7;
        h.big_endian = version == 2;
        int16_t data[210];
        for (int i = 0; i < 210; i++) data[i] = (int16_t)(i * 37 - 4000);
        size_t len;
        unsigned char *b = tu_nifti_build(&h, data, sizeof data, 2, &len);
        ss_nifti_info in;
        void *vox;
        assert_int_equal(ss_nifti_decode(b, len, 1, NULL, &in, &vox), 0);
        for (int gz = 0; gz <= 1; gz++) {
            unsigned char *out;
            size_t ol;
            assert_int_equal(ss_nifti_encode(&in, vox, gz, &out, &ol), 0);
            assert_int_equal(out[0] == 0x1f && out[1] == 0x8b, gz);
            ss_nifti_info back;
            void *vox2;
            assert_int_equal(ss_nifti_decode(out, ol, 0, NULL, &back, &vox2), 0);
            assert_int_equal(back.version, version);
            assert_int_equal(back.big_endian, 0);
            assert_int_equal(back.ndim, 3);
            assert_int_equal(back.nt, 1);
            assert_int_equal(back.vox_offset, version == 1 ? 352 : 544);
            assert_int_equal(back.datatype, SS_NII_INT16);
            assert_true(back.scl_slope == 0.25 && back.scl_inter == -7);
            for (int i = 1; i <= 3; i++) assert_true(back.pixdim[i] == in.pixdim[i]);
            assert_memory_equal(vox2, data + 105, 105 * 2);
            /* Every header byte but dims 0/4 and vox_offset (and NIfTI-1's ext flag) survives. */
            unsigned char hdr[SS_NII_HDR_MAX + 4];
            assert_int_equal(ss_nifti_write_header(&in, hdr), version == 1 ? 352 : 544);
            assert_memory_equal(back.hdr, hdr, back.hdr_bytes);
            free(vox2);
            free(out);
        }
        free(vox);
        free(b);
    }
}

static void test_scaling_rule(void **state) {
    (void)state;
    ss_nifti_info i;
    memset(&i, 0, sizeof i);
    double s, c;
    i.scl_slope = 0, i.scl_inter = 5;
    ss_nifti_scaling(&i, &s, &c);
    assert_true(s == 1 && c == 0); /* slope 0: no scaling, the intercept too */
    i.scl_slope = 2, i.scl_inter = 5;
    ss_nifti_scaling(&i, &s, &c);
    assert_true(s == 2 && c == 5);
    i.scl_slope = NAN;
    ss_nifti_scaling(&i, &s, &c);
    assert_true(s == 1 && c == 0);
}

/* Random bytes of valid files' headers changed, many times: every answer is a known code, and an
 * accepted header describes what the buffer holds (the decode read it, under the caps). */
static void test_mutated_headers(void **state) {
    (void)state;
    uint64_t rng = 0x9e3779b97f4a7c15ULL;
    int accepted = 0, refused = 0;
    for (int version = 1; version <= 2; version++) {
        tu_nii h = tu_nii_3d(version, 6, 5, 4, SS_NII_INT16, 2);
        h.dim[0] = 4;
        h.dim[4] = 2;
        size_t len;
        unsigned char *good = build(&h, 6 * 5 * 4 * 2 * 2, &len);
        unsigned char *b = malloc(len);
        const size_t hb = version == 1 ? 348 : 540;
        for (int it = 0; it < 4000; it++) {
            memcpy(b, good, len);
            const int flips = 1 + (int)(tu_rand_u64(&rng) % 4);
            for (int f = 0; f < flips; f++) {
                /* Mostly the fields that matter: sizeof_hdr, magic, dims, type, offset, scaling. */
                size_t at = tu_rand_u64(&rng) % 3 ? tu_rand_u64(&rng) % (version == 1 ? 124u : 192u)
                                                  : tu_rand_u64(&rng) % hb;
                b[at] = (unsigned char)tu_rand_u64(&rng);
            }
            const int t = (int)(tu_rand_u64(&rng) % 3);
            for (int gz = 0; gz <= (it % 8 == 0); gz++) {
                size_t zl = len;
                unsigned char *z = gz ? tu_gzip(b, len, &zl) : b;
                ss_nifti_info info;
                void *vox = NULL;
                int rc = ss_nifti_decode(z, zl, t, NULL, &info, &vox);
                if (rc == 0) {
                    accepted++;
                    assert_non_null(vox);
                    assert_int_equal(info.nvox, (int64_t)info.nx * info.ny * info.nz);
                    assert_true(info.t < info.nt);
                    assert_true(info.vox_offset + (int64_t)info.nt * info.nvox * info.bytes_per_voxel <= (int64_t)len);
                    free(vox);
                } else {
                    refused++;
                    assert_true(rc == SS_ENOTNIFTI || rc == SS_ECORRUPT || rc == SS_EUNSUPPORTED ||
                                rc == SS_ETOOLARGE || rc == SS_EINVAL);
                    assert_null(vox);
                }
                if (gz) free(z);
            }
        }
        free(b);
        free(good);
    }
    /* Both outcomes happen: the mutations reach past the first check. */
    assert_true(accepted > 100);
    assert_true(refused > 100);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_file_decodes),
        cmocka_unit_test(test_hostile_dims),
        cmocka_unit_test(test_hostile_offsets_and_sizes),
        cmocka_unit_test(test_hostile_sizeof_hdr_magic_and_types),
        cmocka_unit_test(test_non_finite_floats_refused),
        cmocka_unit_test(test_4d_takes_volume_t),
        cmocka_unit_test(test_truncated_gzip_and_bombs),
        cmocka_unit_test(test_encode_round_trip),
        cmocka_unit_test(test_scaling_rule),
        cmocka_unit_test(test_mutated_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
