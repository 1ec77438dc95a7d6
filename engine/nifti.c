/* nifti.c - NIfTI-1/-2 headers checked field by field before any allocation, gzip inflated under a bound */
#include "engine/nifti.h"
#include "util/error.h"

#include <math.h>
#include <nifti2_io.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#ifdef SVDSLICE_HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

#define N1_BYTES 348
#define N2_BYTES 540
#define DEFAULT_MAX_VOXELS (1LL << 28)
#define DEFAULT_MAX_FILE (1LL << 32)
#define CHUNK (64 * 1024) /* inflate scratch for bytes that are not kept */

_Static_assert(sizeof(nifti_1_header) == N1_BYTES, "nifti_1_header size");
_Static_assert(sizeof(nifti_2_header) == N2_BYTES, "nifti_2_header size");

const char *ss_nifti_type_name(int dt) {
    switch (dt) {
    case SS_NII_UINT8: return "uint8";
    case SS_NII_INT8: return "int8";
    case SS_NII_INT16: return "int16";
    case SS_NII_UINT16: return "uint16";
    case SS_NII_INT32: return "int32";
    case SS_NII_FLOAT32: return "float32";
    case SS_NII_FLOAT64: return "float64";
    default: return "unsupported";
    }
}

int ss_nifti_type_bytes(int dt) {
    switch (dt) {
    case SS_NII_UINT8: case SS_NII_INT8: return 1;
    case SS_NII_INT16: case SS_NII_UINT16: return 2;
    case SS_NII_INT32: case SS_NII_FLOAT32: return 4;
    case SS_NII_FLOAT64: return 8;
    default: return 0;
    }
}

void ss_nifti_type_range(int dt, double *lo, double *hi) {
    switch (dt) {
    case SS_NII_UINT8: *lo = 0; *hi = 255; break;
    case SS_NII_INT8: *lo = -128; *hi = 127; break;
    case SS_NII_INT16: *lo = -32768; *hi = 32767; break;
    case SS_NII_UINT16: *lo = 0; *hi = 65535; break;
    case SS_NII_INT32: *lo = -2147483648.0; *hi = 2147483647.0; break;
    default: *lo = -INFINITY; *hi = INFINITY; break;
    }
}

void ss_nifti_scaling(const ss_nifti_info *info, double *slope, double *inter) {
    double s = info->scl_slope, i = info->scl_inter;
    if (s == 0 || !isfinite(s) || !isfinite(i)) {
        s = 1;
        i = 0;
    }
    *slope = s;
    *inter = i;
}

/* nifticlib reports what its checks dislike on stderr unless told otherwise. */
static pthread_once_t g_quiet_once = PTHREAD_ONCE_INIT;
static void quiet_nifticlib(void) { nifti_set_debug_level(0); }

static int is_gzip(const unsigned char *b, size_t len) { return len >= 2 && b[0] == 0x1f && b[1] == 0x8b; }

static int32_t rd_i32(const unsigned char *p, int big) {
    uint32_t v = big ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
                     : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
    return (int32_t)v;
}

static int host_big_endian(void) { return __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__; }

/* ---- gzip under a bound --------------------------------------------------------- */

/* A zlib inflater over the whole input buffer that reads gzip members back to
 * back (as gzip(1) and Python do) and never produces past `bound` bytes. */
typedef struct gz {
    z_stream z;
    int open, ended;
    uint64_t produced;
} gz;

static int gz_open(gz *g, const unsigned char *buf, size_t len) {
    memset(g, 0, sizeof *g);
    if (inflateInit2(&g->z, 16 + MAX_WBITS) != Z_OK) return ss_fail(SS_ENOMEM, "zlib: cannot start inflating");
    g->open = 1;
    g->z.next_in = (unsigned char *)buf;
    g->z.avail_in = len > UINT32_MAX ? UINT32_MAX : (uInt)len; /* refilled in gz_read */
    return SS_OK;
}

static void gz_close(gz *g) {
    if (g->open) inflateEnd(&g->z);
    g->open = 0;
}

/* Fills out[0..n) exactly; SS_ECORRUPT if the stream ends or breaks first.
 * `rest` counts the input not yet handed to zlib (inputs over 4 GiB). */
static int gz_read(gz *g, size_t *rest, unsigned char *out, size_t n) {
    while (n > 0) {
        if (g->ended) return ss_fail(SS_ECORRUPT, "gzip: the stream ends before the data the header declares");
        if (g->z.avail_in == 0 && *rest > 0) {
            uInt take = *rest > UINT32_MAX ? UINT32_MAX : (uInt)*rest;
            g->z.avail_in = take;
            *rest -= take;
        }
        uInt want = n > UINT32_MAX ? UINT32_MAX : (uInt)n;
        g->z.next_out = out;
        g->z.avail_out = want;
        int zr = inflate(&g->z, Z_NO_FLUSH);
        size_t got = want - g->z.avail_out;
        out += got;
        n -= got;
        g->produced += got;
        if (zr == Z_STREAM_END) {
            /* Another member may follow (concatenated .gz); anything else ends it. */
            if (g->z.avail_in >= 2 && g->z.next_in[0] == 0x1f && g->z.next_in[1] == 0x8b) {
                if (inflateReset(&g->z) != Z_OK) return ss_fail(SS_ECORRUPT, "gzip: cannot read the next member");
            } else {
                g->ended = 1;
            }
        } else if (zr == Z_BUF_ERROR && g->z.avail_in == 0 && *rest == 0) {
            return ss_fail(SS_ECORRUPT, "gzip: truncated stream (it ends before the data the header declares)");
        } else if (zr != Z_OK && zr != Z_BUF_ERROR) {
            return ss_fail(SS_ECORRUPT, "gzip: %s", g->z.msg ? g->z.msg : "corrupt stream");
        }
    }
    return SS_OK;
}

/* After the declared bytes: the stream must end there (its trailer checked),
 * not go on: a gzip bomb stops at the bound instead of being inflated. */
static int gz_finish(gz *g, size_t *rest) {
    unsigned char one;
    if (g->ended) return SS_OK;
    for (;;) {
        if (g->z.avail_in == 0 && *rest > 0) {
            uInt take = *rest > UINT32_MAX ? UINT32_MAX : (uInt)*rest;
            g->z.avail_in = take;
            *rest -= take;
        }
        g->z.next_out = &one;
        g->z.avail_out = 1;
        int zr = inflate(&g->z, Z_NO_FLUSH);
        if (g->z.avail_out == 0)
            return ss_fail(SS_ETOOLARGE, "gzip: the stream inflates past the %llu bytes its header declares",
                           (unsigned long long)g->produced);
        if (zr == Z_STREAM_END) return SS_OK;
        if (zr == Z_BUF_ERROR && g->z.avail_in == 0 && *rest == 0)
            return ss_fail(SS_ECORRUPT, "gzip: truncated stream (no end or checksum)");
        if (zr != Z_OK && zr != Z_BUF_ERROR)
            return ss_fail(SS_ECORRUPT, "gzip: %s", g->z.msg ? g->z.msg : "corrupt stream");
    }
}

/* ---- header --------------------------------------------------------------------- */

/* Fields read from either header version into one shape. */
typedef struct raw_hdr {
    int64_t dim[8];
    double pixdim[8];
    double vox_offset, slope, inter;
    int datatype, bitpix;
} raw_hdr;

/* data_known: len is the whole file's length, so the data must fit in it. */
static int check_header(const unsigned char *h, size_t have, int gzipped, int data_known, size_t len, int t,
                        const ss_nifti_limits *lim, ss_nifti_info *out) {
    pthread_once(&g_quiet_once, quiet_nifticlib);
    if (have < 4) return ss_fail(SS_ENOTNIFTI, "not a NIfTI file: %zu bytes", have);
    int version = 0, big = 0;
    if (rd_i32(h, 0) == N1_BYTES) version = 1;
    else if (rd_i32(h, 1) == N1_BYTES) version = 1, big = 1;
    else if (rd_i32(h, 0) == N2_BYTES) version = 2;
    else if (rd_i32(h, 1) == N2_BYTES) version = 2, big = 1;
    else return ss_fail(SS_ENOTNIFTI, "not a NIfTI file: sizeof_hdr is neither 348 nor 540");
    const size_t hb = version == 1 ? N1_BYTES : N2_BYTES;
    if (have < hb) return ss_fail(SS_ENOTNIFTI, "not a NIfTI file: %zu bytes, shorter than its %zu-byte header", have, hb);

    memset(out, 0, sizeof *out);
    memcpy(out->hdr, h, hb);
    const int swap = big != host_big_endian();
    raw_hdr r;
    if (version == 1) {
        nifti_1_header n1;
        memcpy(&n1, h, hb);
        if (swap) nifti_swap_as_nifti1(&n1);
        if (memcmp(n1.magic, "n+1", 4) != 0) {
            if (memcmp(n1.magic, "ni1", 4) == 0)
                return ss_fail(SS_EUNSUPPORTED, "a NIfTI-1 header of a .hdr/.img pair: send one .nii file");
            return ss_fail(SS_ENOTNIFTI, "not a NIfTI file: bad NIfTI-1 magic");
        }
        for (int i = 0; i < 8; i++) r.dim[i] = n1.dim[i], r.pixdim[i] = n1.pixdim[i];
        r.vox_offset = n1.vox_offset;
        r.slope = n1.scl_slope;
        r.inter = n1.scl_inter;
        r.datatype = n1.datatype;
        r.bitpix = n1.bitpix;
        memcpy(out->hdr, &n1, hb);
    } else {
        nifti_2_header n2;
        memcpy(&n2, h, hb);
        if (swap) nifti_swap_as_nifti2(&n2);
        if (memcmp(n2.magic, "n+2\0\r\n\032\n", 8) != 0) {
            if (memcmp(n2.magic, "ni2", 4) == 0)
                return ss_fail(SS_EUNSUPPORTED, "a NIfTI-2 header of a .hdr/.img pair: send one .nii file");
            return ss_fail(SS_ENOTNIFTI, "not a NIfTI file: bad NIfTI-2 magic");
        }
        for (int i = 0; i < 8; i++) r.dim[i] = n2.dim[i], r.pixdim[i] = n2.pixdim[i];
        r.vox_offset = (double)n2.vox_offset;
        r.slope = n2.scl_slope;
        r.inter = n2.scl_inter;
        r.datatype = n2.datatype;
        r.bitpix = n2.bitpix;
        memcpy(out->hdr, &n2, hb);
    }

    /* Dimensions: dim[0] says how many are used; unused ones count as 1. */
    const int64_t nd = r.dim[0];
    if (nd < 1 || nd > 7) return ss_fail(SS_ECORRUPT, "NIfTI: dim[0] is %lld, not 1..7", (long long)nd);
    for (int i = 1; i <= nd; i++)
        if (r.dim[i] < 1) return ss_fail(SS_ECORRUPT, "NIfTI: dim[%d] is %lld, not >= 1", i, (long long)r.dim[i]);
    for (int i = (int)nd + 1; i < 8; i++) r.dim[i] = 1;
    for (int i = 5; i <= 7; i++)
        if (r.dim[i] > 1)
            return ss_fail(SS_EUNSUPPORTED, "NIfTI: %lldD data (dim[%d] = %lld): only 3D volumes, or one volume of a 4D file",
                           (long long)nd, i, (long long)r.dim[i]);
    const int64_t max_vox = lim && lim->max_voxels > 0 ? lim->max_voxels : DEFAULT_MAX_VOXELS;
    const int64_t max_file = lim && lim->max_file_bytes > 0 ? lim->max_file_bytes : DEFAULT_MAX_FILE;
    /* Each factor is >= 1, so a running product stays <= max_vox when checked by division. */
    int64_t nvox = 1;
    for (int i = 1; i <= 3; i++) {
        if (r.dim[i] > INT32_MAX || r.dim[i] > max_vox / nvox)
            return ss_fail(SS_ETOOLARGE, "NIfTI: %lld x %lld x %lld voxels, over the limit of %lld",
                           (long long)r.dim[1], (long long)r.dim[2], (long long)r.dim[3], (long long)max_vox);
        nvox *= r.dim[i];
    }
    const int64_t nt = r.dim[4];
    if (nt > INT32_MAX) return ss_fail(SS_ETOOLARGE, "NIfTI: %lld volumes in a 4D file", (long long)nt);

    const int bpv = ss_nifti_type_bytes(r.datatype);
    if (!bpv) {
        const char *why = "";
        switch (r.datatype) {
        case 32: case 1792: case 2048: why = " (complex)"; break;
        case 128: case 2304: why = " (RGB)"; break;
        case 1024: case 1280: why = " (64-bit integer)"; break;
        case 1536: why = " (float128)"; break;
        case 1: why = " (binary)"; break;
        }
        return ss_fail(SS_EUNSUPPORTED, "NIfTI: data type %d%s is not supported (uint8, int8, int16, uint16, int32, float32, float64 are)",
                       r.datatype, why);
    }
    if (r.bitpix != 8 * bpv)
        return ss_fail(SS_ECORRUPT, "NIfTI: bitpix %d disagrees with data type %s", r.bitpix, ss_nifti_type_name(r.datatype));

    /* vox_offset: after the header and its 4 extension bytes, a whole number, and the data of
     * every volume after it within the file. */
    if (!(r.vox_offset >= (double)(hb + 4)) || r.vox_offset != floor(r.vox_offset) ||
        r.vox_offset > (double)max_file)
        return ss_fail(SS_ECORRUPT, "NIfTI: vox_offset %g is not a whole number >= %zu within the file", r.vox_offset, hb + 4);
    const int64_t off = (int64_t)r.vox_offset;
    const int64_t vol_bytes = nvox * bpv; /* <= 2^28 * 8 by default; max_vox bounds it */
    if (vol_bytes / bpv != nvox || nt > (max_file - off) / vol_bytes)
        return ss_fail(SS_ETOOLARGE, "NIfTI: %lld volume(s) of %lld bytes after offset %lld: over the %lld-byte limit",
                       (long long)nt, (long long)vol_bytes, (long long)off, (long long)max_file);
    const int64_t end = off + nt * vol_bytes;
    if (data_known && (uint64_t)end > (uint64_t)len)
        return ss_fail(SS_ECORRUPT, "NIfTI: the data ends at byte %lld, past the file's %zu bytes", (long long)end, len);
    if (t < 0 || t >= nt)
        return ss_fail(SS_EINVAL, "NIfTI: t = %d, but the file holds %lld volume(s) (t in 0..%lld)", t, (long long)nt,
                       (long long)nt - 1);

    /* nifticlib's own sanity checks, on the swapped (native) header, as a last gate. */
    int good = version == 1 ? nifti_hdr1_looks_good((const nifti_1_header *)out->hdr)
                            : nifti_hdr2_looks_good((const nifti_2_header *)out->hdr);
    if (!good) return ss_fail(SS_ECORRUPT, "NIfTI: nifticlib rejects the header");

    out->version = version;
    out->gzipped = gzipped;
    out->big_endian = big;
    out->ndim = (int)nd;
    for (int i = 0; i < 8; i++) out->dim[i] = r.dim[i], out->pixdim[i] = r.pixdim[i];
    out->nx = (int)r.dim[1];
    out->ny = (int)r.dim[2];
    out->nz = (int)r.dim[3];
    out->nt = (int)nt;
    out->t = t;
    out->datatype = r.datatype;
    out->bytes_per_voxel = bpv;
    out->scl_slope = r.slope;
    out->scl_inter = r.inter;
    out->vox_offset = off;
    out->nvox = nvox;
    out->hdr_bytes = hb;
    return SS_OK;
}

int ss_nifti_probe(const void *buf, size_t len, int t, const ss_nifti_limits *lim, ss_nifti_info *out) {
    if (!buf || !out) return ss_fail(SS_EINVAL, "no NIfTI buffer");
    const unsigned char *b = buf;
    if (!is_gzip(b, len)) return check_header(b, len, 0, 1, len, t, lim, out);
    unsigned char h[N2_BYTES];
    gz g;
    int rc = gz_open(&g, b, len);
    if (rc) return rc;
    size_t rest = len > UINT32_MAX ? len - UINT32_MAX : 0;
    /* The first 348 bytes say which header; a NIfTI-2 one needs 540. */
    rc = gz_read(&g, &rest, h, N1_BYTES);
    size_t have = N1_BYTES;
    if (rc == SS_OK && (rd_i32(h, 0) == N2_BYTES || rd_i32(h, 1) == N2_BYTES)) {
        rc = gz_read(&g, &rest, h + N1_BYTES, N2_BYTES - N1_BYTES);
        have = N2_BYTES;
    }
    gz_close(&g);
    if (rc) return rc;
    return check_header(h, have, 1, 0, len, t, lim, out);
}

int ss_nifti_check_header(const void *hdr, size_t len, int t, const ss_nifti_limits *lim, ss_nifti_info *out) {
    if (!hdr || !out) return ss_fail(SS_EINVAL, "no NIfTI header");
    return check_header(hdr, len, 0, 0, len, t, lim, out);
}

/* In place, n values of `size` bytes. */
static void swap_bytes(unsigned char *p, size_t n, int size) {
    if (size == 1) return;
    for (size_t i = 0; i < n; i++, p += size)
        for (int a = 0, z = size - 1; a < z; a++, z--) {
            unsigned char c = p[a];
            p[a] = p[z];
            p[z] = c;
        }
}

static int check_finite(const ss_nifti_info *info, const void *vox) {
    size_t n = (size_t)info->nvox;
    if (info->datatype == SS_NII_FLOAT32) {
        const float *f = vox;
        int bad = 0;
        for (size_t i = 0; i < n; i++) bad |= !isfinite(f[i]);
        if (bad) return ss_fail(SS_EUNSUPPORTED, "NIfTI: the volume holds NaN or infinite values, which an SVD cannot take");
    } else if (info->datatype == SS_NII_FLOAT64) {
        const double *d = vox;
        int bad = 0;
        for (size_t i = 0; i < n; i++) bad |= !isfinite(d[i]);
        if (bad) return ss_fail(SS_EUNSUPPORTED, "NIfTI: the volume holds NaN or infinite values, which an SVD cannot take");
    }
    return SS_OK;
}

int ss_nifti_decode(const void *buf, size_t len, int t, const ss_nifti_limits *lim, ss_nifti_info *info,
                    void **voxels) {
    if (voxels) *voxels = NULL;
    if (!voxels) return ss_fail(SS_EINVAL, "no output for the voxels");
    int rc = ss_nifti_probe(buf, len, t, lim, info);
    if (rc) return rc;
    const size_t vol_bytes = (size_t)info->nvox * (size_t)info->bytes_per_voxel;
    const uint64_t start = (uint64_t)info->vox_offset + (uint64_t)t * vol_bytes;
    unsigned char *vox = malloc(vol_bytes ? vol_bytes : 1);
    if (!vox) return ss_fail(SS_ENOMEM, "out of memory for %zu bytes of voxels", vol_bytes);
    const unsigned char *b = buf;
    if (!info->gzipped) {
        memcpy(vox, b + start, vol_bytes);
    } else {
        /* Everything before volume t and after it goes through a fixed scratch buffer. */
        unsigned char *scratch = malloc(CHUNK);
        gz g;
        rc = scratch ? gz_open(&g, b, len) : ss_fail(SS_ENOMEM, "out of memory inflating");
        if (rc) {
            free(scratch);
            free(vox);
            return rc;
        }
        size_t rest = len > UINT32_MAX ? len - UINT32_MAX : 0;
        const uint64_t end = (uint64_t)info->vox_offset + (uint64_t)info->nt * vol_bytes;
        for (uint64_t pos = 0; rc == SS_OK && pos < start;) {
            size_t n = start - pos > CHUNK ? CHUNK : (size_t)(start - pos);
            rc = gz_read(&g, &rest, scratch, n);
            pos += n;
        }
        if (rc == SS_OK) rc = gz_read(&g, &rest, vox, vol_bytes);
        for (uint64_t pos = start + vol_bytes; rc == SS_OK && pos < end;) {
            size_t n = end - pos > CHUNK ? CHUNK : (size_t)(end - pos);
            rc = gz_read(&g, &rest, scratch, n);
            pos += n;
        }
        if (rc == SS_OK) rc = gz_finish(&g, &rest);
        gz_close(&g);
        free(scratch);
        if (rc) {
            free(vox);
            return rc;
        }
    }
    if (info->big_endian != host_big_endian()) swap_bytes(vox, (size_t)info->nvox, info->bytes_per_voxel);
    rc = check_finite(info, vox);
    if (rc) {
        free(vox);
        return rc;
    }
    *voxels = vox;
    return SS_OK;
}

/* ---- writing -------------------------------------------------------------------- */

/* The header to write for info: its own fields, one 3D (or lower) volume, no extensions. */
size_t ss_nifti_write_header(const ss_nifti_info *info, unsigned char h[SS_NII_HDR_MAX + 4]) {
    const size_t hb = info->hdr_bytes;
    if (hb != (info->version == 1 ? N1_BYTES : N2_BYTES) || (info->version != 1 && info->version != 2)) return 0;
    memcpy(h, info->hdr, hb);
    const int nd = info->ndim > 3 ? 3 : info->ndim;
    if (info->version == 1) {
        nifti_1_header n1;
        memcpy(&n1, h, hb);
        n1.dim[0] = (short)nd;
        for (int i = nd + 1; i < 8; i++) n1.dim[i] = 1;
        n1.vox_offset = (float)(N1_BYTES + 4);
        memcpy(n1.magic, "n+1", 4);
        if (host_big_endian()) nifti_swap_as_nifti1(&n1);
        memcpy(h, &n1, hb);
    } else {
        nifti_2_header n2;
        memcpy(&n2, h, hb);
        n2.dim[0] = nd;
        for (int i = nd + 1; i < 8; i++) n2.dim[i] = 1;
        n2.vox_offset = N2_BYTES + 4;
        memcpy(n2.magic, "n+2\0\r\n\032\n", 8);
        if (host_big_endian()) nifti_swap_as_nifti2(&n2);
        memcpy(h, &n2, hb);
    }
    memset(h + hb, 0, 4); /* extension flag: none */
    return hb + 4;
}

int ss_nifti_encode(const ss_nifti_info *info, const void *voxels, int gzip, unsigned char **out,
                    size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (!info || !voxels || (info->version != 1 && info->version != 2) || info->nvox < 1 ||
        !ss_nifti_type_bytes(info->datatype) || info->bytes_per_voxel != ss_nifti_type_bytes(info->datatype))
        return ss_fail(SS_EINVAL, "nothing to write as NIfTI");
    const size_t vb = (size_t)info->nvox * (size_t)info->bytes_per_voxel;
    unsigned char h[N2_BYTES + 4];
    const size_t hl = ss_nifti_write_header(info, h);
    const size_t raw_len = hl + vb;
    unsigned char *raw = malloc(raw_len);
    if (!raw) return ss_fail(SS_ENOMEM, "out of memory writing NIfTI");
    memcpy(raw, h, hl);
    memcpy(raw + hl, voxels, vb);
    if (host_big_endian()) swap_bytes(raw + hl, (size_t)info->nvox, info->bytes_per_voxel);
    if (!gzip) {
        *out = raw;
        *out_len = raw_len;
        return SS_OK;
    }
#ifdef SVDSLICE_HAVE_LIBDEFLATE
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(1);
    size_t bound = c ? libdeflate_gzip_compress_bound(c, raw_len) : 0;
    unsigned char *z = c ? malloc(bound) : NULL;
    size_t zl = z ? libdeflate_gzip_compress(c, raw, raw_len, z, bound) : 0;
    if (c) libdeflate_free_compressor(c);
    free(raw);
    if (!zl) {
        free(z);
        return ss_fail(SS_ENOMEM, "out of memory compressing NIfTI");
    }
#else
    z_stream s;
    memset(&s, 0, sizeof s);
    unsigned char *z = NULL;
    size_t zl = 0;
    if (deflateInit2(&s, 1, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK) {
        size_t bound = deflateBound(&s, raw_len);
        z = malloc(bound);
        if (z) {
            s.next_in = raw;
            s.avail_in = (uInt)raw_len;
            s.next_out = z;
            s.avail_out = (uInt)bound;
            if (deflate(&s, Z_FINISH) == Z_STREAM_END) zl = bound - s.avail_out;
        }
        deflateEnd(&s);
    }
    free(raw);
    if (!zl) {
        free(z);
        return ss_fail(SS_ENOMEM, "out of memory compressing NIfTI");
    }
#endif
    unsigned char *shrunk = realloc(z, zl);
    *out = shrunk ? shrunk : z;
    *out_len = zl;
    return SS_OK;
}

/* cal_min/cal_max and the axes' directions, from the native-order header kept in info. */
void ss_nifti_display(const ss_nifti_info *info, double *cal_min, double *cal_max, int orient[3]) {
    nifti_dmat44 R;
    int qcode, scode;
    double qb, qc, qd, qx, qy, qz, qfac;
    memset(&R, 0, sizeof R);
    if (info->version == 1) {
        nifti_1_header n1;
        memcpy(&n1, info->hdr, sizeof n1);
        *cal_min = n1.cal_min;
        *cal_max = n1.cal_max;
        qcode = n1.qform_code;
        scode = n1.sform_code;
        qb = n1.quatern_b, qc = n1.quatern_c, qd = n1.quatern_d;
        qx = n1.qoffset_x, qy = n1.qoffset_y, qz = n1.qoffset_z, qfac = n1.pixdim[0];
        for (int i = 0; i < 4; i++) R.m[0][i] = n1.srow_x[i], R.m[1][i] = n1.srow_y[i], R.m[2][i] = n1.srow_z[i];
    } else {
        nifti_2_header n2;
        memcpy(&n2, info->hdr, sizeof n2);
        *cal_min = n2.cal_min;
        *cal_max = n2.cal_max;
        qcode = n2.qform_code;
        scode = n2.sform_code;
        qb = n2.quatern_b, qc = n2.quatern_c, qd = n2.quatern_d;
        qx = n2.qoffset_x, qy = n2.qoffset_y, qz = n2.qoffset_z, qfac = n2.pixdim[0];
        for (int i = 0; i < 4; i++) R.m[0][i] = n2.srow_x[i], R.m[1][i] = n2.srow_y[i], R.m[2][i] = n2.srow_z[i];
    }
    R.m[3][3] = 1;
    orient[0] = orient[1] = orient[2] = 0;
    /* The sform when set (as nibabel prefers it), else the qform; neither: unknown. */
    if (scode <= 0 && qcode > 0)
        R = nifti_quatern_to_dmat44(qb, qc, qd, qx, qy, qz, info->pixdim[1], info->pixdim[2], info->pixdim[3],
                                    qfac < 0 ? -1.0 : 1.0);
    if (scode > 0 || qcode > 0) nifti_dmat44_to_orientation(R, &orient[0], &orient[1], &orient[2]);
}
