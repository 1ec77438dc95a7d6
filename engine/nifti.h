/* nifti.h - NIfTI-1/-2 (.nii, .nii.gz) from untrusted memory, and back to .nii.gz */
#ifndef SS_NIFTI_H
#define SS_NIFTI_H
#include <stddef.h>
#include <stdint.h>

/* The data types accepted, with NIfTI's codes. Anything else (complex, RGB,
 * int64, float128, ...) is SS_EUNSUPPORTED. */
enum {
    SS_NII_UINT8 = 2,
    SS_NII_INT16 = 4,
    SS_NII_INT32 = 8,
    SS_NII_FLOAT32 = 16,
    SS_NII_FLOAT64 = 64,
    SS_NII_INT8 = 256,
    SS_NII_UINT16 = 512,
};

/* Bytes of the largest header (NIfTI-2), kept verbatim for writing back. */
#define SS_NII_HDR_MAX 540

/* What the caller allows, checked on the header before anything is allocated. */
typedef struct ss_nifti_limits {
    int64_t max_voxels;      /* of the one 3D volume kept (nx*ny*nz); <= 0: 1 << 28 */
    int64_t max_file_bytes;  /* of the decompressed file (header, extensions and every
                                volume of a 4D file); <= 0: 1 << 32 */
} ss_nifti_limits;

/* The facts of a validated header. A plain value (no pointers): copy freely. */
typedef struct ss_nifti_info {
    int version;        /* 1 or 2 */
    int gzipped;        /* the input was a gzip stream */
    int big_endian;     /* the file's byte order (decoded data is native) */
    int ndim;           /* dim[0]: 1..4, or more when the extra dims are all 1 */
    int64_t dim[8];     /* dim[1..7] as in the file (dim[0] = ndim); unused ones 1 */
    int nx, ny, nz;     /* the 3 voxel axes i, j, k (a 2D file has nz = 1) */
    int nt;             /* volumes in a 4D file (1 otherwise) */
    int t;              /* the volume chosen (0..nt-1) */
    double pixdim[8];   /* as in the file; pixdim[1..3] are the voxel sizes */
    int datatype;       /* SS_NII_* */
    int bytes_per_voxel;
    double scl_slope;   /* as the file says; see ss_nifti_scaling for the effective pair */
    double scl_inter;
    int64_t vox_offset; /* validated: >= header bytes (+4 for a .nii), data within the file */
    int64_t nvox;       /* nx * ny * nz */
    size_t hdr_bytes;   /* 348 (NIfTI-1) or 540 (NIfTI-2) */
    /* The header as read, converted to native byte order: the source of the
     * qform/sform, codes, descrip, units etc. written back by ss_nifti_encode. */
    unsigned char hdr[SS_NII_HDR_MAX];
} ss_nifti_info;

/* Effective scaling per the standard: a slope of 0 (or a non-finite slope or
 * intercept) means none, i.e. 1 and 0. value = slope * stored + inter. */
void ss_nifti_scaling(const ss_nifti_info *info, double *slope, double *inter);

/* Cheap validation of the header only (the server answers 202 after it): the
 * first bytes of a .nii or .nii.gz (gzip detected by its magic; only the
 * header is inflated). Checks sizeof_hdr and magic (either byte order), dims
 * (each used one >= 1, product overflow-checked against limits), datatype,
 * vox_offset, and for an uncompressed buffer that the data of every volume is
 * within len. For gzip the data length is checked only by ss_nifti_decode.
 * t: the volume of a 4D file to take (0 is the default callers should use);
 * t >= nt is SS_EINVAL. A file with dim[5..7] > 1 (5D+) is SS_EUNSUPPORTED.
 * Returns 0 and *out, or:
 *   SS_ENOTNIFTI   not a NIfTI header (bad sizeof_hdr or magic, too short)
 *   SS_ECORRUPT    a NIfTI header with impossible fields (dim < 1, bad
 *                  vox_offset, bitpix disagreeing with the datatype, data past
 *                  the end, a broken gzip stream)
 *   SS_EUNSUPPORTED a data type or dimensionality svdslice does not handle
 *   SS_ETOOLARGE   over limits
 *   SS_EINVAL      t out of range or NULL arguments
 * with the reason in ss_error(). Thread-safe; allocates nothing but zlib's
 * inflate state (~40 KiB) for a gzip input. */
int ss_nifti_probe(const void *buf, size_t len, int t, const ss_nifti_limits *lim,
                   ss_nifti_info *out);

/* Full decode: ss_nifti_probe's checks, then the voxels of volume t, converted
 * to native byte order and kept in the file's data type (NOT scaled), in
 * NIfTI's memory order (i fastest, then j, then k): info->nvox values of
 * info->bytes_per_voxel bytes. gzip is inflated with a bound computed from the
 * validated header: a stream that ends early is SS_ECORRUPT, one that inflates
 * past vox_offset + nt * nvox * bytes_per_voxel is SS_ETOOLARGE (a gzip bomb
 * stops there: memory and time stay bounded by the header's claim, itself
 * bounded by limits). Volumes after t are inflated into a fixed scratch buffer
 * and dropped (checked, not kept). Non-finite float voxels (NaN, inf) are
 * SS_EUNSUPPORTED: the SVD cannot take them.
 * Returns 0, *info and *voxels (malloc'd, free with free()), or the codes of
 * ss_nifti_probe and SS_ENOMEM. Thread-safe. */
int ss_nifti_decode(const void *buf, size_t len, int t, const ss_nifti_limits *lim,
                    ss_nifti_info *info, void **voxels);

/* Writes a single-volume .nii (gzip = 0) or .nii.gz (gzip = 1) in memory from
 * info (as a decode filled it) and info->nvox voxels of info->datatype in
 * native order: the same NIfTI version, dims (a 4D input becomes 3D: dim[0] =
 * 3, dim[4] = 1), pixdim, qform/sform codes and parameters, scl_slope/inter,
 * units, descrip and intent as info->hdr; little-endian; no extensions;
 * vox_offset 352 (NIfTI-1) or 544 (NIfTI-2). gzip: libdeflate level 1 when
 * built with it, else zlib level 1.
 * Returns 0 and *out (malloc'd, free with free()) / *out_len, SS_EINVAL or
 * SS_ENOMEM. Thread-safe. */
int ss_nifti_encode(const ss_nifti_info *info, const void *voxels, int gzip, unsigned char **out,
                    size_t *out_len);

/* The header ss_nifti_encode writes for info (little-endian, the header and
 * its 4 extension bytes: 352 or 544 bytes) into h. Returns its length, 0 for
 * a bad info. Deterministic: the same volume gives the same bytes. */
size_t ss_nifti_write_header(const ss_nifti_info *info, unsigned char h[SS_NII_HDR_MAX + 4]);
/* ss_nifti_probe's checks of a header alone, without the data-length check:
 * for a stored copy of info->hdr (which is in native order). */
int ss_nifti_check_header(const void *hdr, size_t len, int t, const ss_nifti_limits *lim,
                          ss_nifti_info *out);

/* What a viewer shows from the header: cal_min/cal_max as the file says (both 0
 * when unset) and, per voxel axis i, j, k, the direction it points to in NIfTI's
 * codes (1 L->R, 2 R->L, 3 P->A, 4 A->P, 5 I->S, 6 S->I; 0 when neither qform nor
 * sform is set), from the sform if its code is set, else the qform. */
void ss_nifti_display(const ss_nifti_info *info, double *cal_min, double *cal_max, int orient[3]);

/* "uint8", "int16", ... for a SS_NII_* code; "unsupported" otherwise. */
const char *ss_nifti_type_name(int datatype);
/* Bytes per voxel of an accepted type, 0 otherwise. */
int ss_nifti_type_bytes(int datatype);
/* The representable range of an integer type (lo, hi); for float types
 * -inf..inf. */
void ss_nifti_type_range(int datatype, double *lo, double *hi);

#endif
