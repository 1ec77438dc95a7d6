/* tu_nifti.h - NIfTI files built byte by byte for the tests (independent of nifticlib), and gzip */
#ifndef SS_TU_NIFTI_H
#define SS_TU_NIFTI_H
#include <stddef.h>
#include <stdint.h>

/* Header fields the tests set; everything else is zero. */
typedef struct tu_nii {
    int version;       /* 1 or 2 */
    int big_endian;    /* write the header and data big-endian */
    int64_t dim[8];    /* dim[0] = ndim */
    int datatype, bitpix;
    double pixdim[8];
    double vox_offset; /* written as is; the data goes there when that is sane, else after the header */
    double slope, inter;
    int qform_code, sform_code;
    float srow[3][4];  /* the sform rows */
    const char *magic; /* NULL: "n+1" / "n+2\0\r\n\032\n" */
} tu_nii;

/* A plain tu_nii of nx x ny x nz voxels of datatype (bytes per voxel bpv), slope 1. */
tu_nii tu_nii_3d(int version, int nx, int ny, int nz, int datatype, int bpv);

/* The file: header, zero bytes up to vox_offset, then data (data_len bytes of native-order
 * values of `bpv` bytes, byte-swapped when big_endian). malloc'd; NULL on ENOMEM. */
unsigned char *tu_nifti_build(const tu_nii *h, const void *data, size_t data_len, int bpv, size_t *len);

/* gzip (zlib, level 6) of in; malloc'd. */
unsigned char *tu_gzip(const void *in, size_t n, size_t *out_len);

/* Runs fn(arg) in a forked child: its result (an engine code, 0 or negative) in *rc, its
 * CPU time (user + system) in *ms and its peak RSS above this process's own peak in *rss_kib (an upper
 * bound of what fn added). The child is killed after 10 s (then -1 is returned). */
int tu_run_measured(int (*fn)(void *arg), void *arg, int *rc, long *rss_kib, double *ms);

#endif
