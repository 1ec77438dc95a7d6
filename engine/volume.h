/* volume.h - a 3D volume stored as the SVD factors of its slices, the .svv form, rebuild, quality */
#ifndef SS_VOLUME_H
#define SS_VOLUME_H
#include <stddef.h>
#include <stdint.h>

#include "engine/compress.h"
#include "engine/kernels.h"
#include "engine/nifti.h"
#include "engine/svd.h"

/* Slice layout. The factorisation axis is one of the voxel axes 0, 1, 2
 * (NIfTI's i, j, k; default 2, the file's third axis). A slice along axis a
 * at index s is the 2D array of the two other axes with ROWS along the
 * higher-numbered one and COLUMNS along the lower-numbered one, no flips:
 *   axis 2: rows j (ny), columns i (nx)  -- NIfTI's memory order
 *   axis 1: rows k (nz), columns i (nx)
 *   axis 0: rows k (nz), columns j (ny)
 * so slice[r][c] is voxel (i, j, k) with the axis's coordinate = s. */
void ss_volume_slice_dims(const ss_nifti_info *info, int axis, int *rows, int *cols, int *count);

/* Values. The file's stored values x (its data type, before scaling) and the
 * scaled ones y = slope * x + inter (ss_nifti_scaling: slope 0 means none).
 * The factors hold y (float32). Rebuilt volumes come back as stored values:
 * round-half-away-from-zero and clamp of (y - inter) / slope to the type's
 * range for integer types, the float itself for float types. */

typedef struct ss_volume {
    ss_nifti_info nii;   /* the validated header (nii.t is the 4D volume taken) */
    int axis;            /* 0, 1 or 2 */
    int nslices;         /* voxels along axis */
    int m, n;            /* rows, columns of each slice (see the layout above) */
    void *voxels;        /* the original stored values, nii.nvox of nii.datatype, native
                            byte order, NIfTI order (i fastest): full rank returns them */
    ss_factors **slices; /* nslices entries; NULL until factorised. Full rank (min(m, n)
                            components), no orig (the volume keeps voxels), bit_depth 8
                            for uint8 data, 16 otherwise (a label only: the values are
                            the scaled ones, not 0..2^bits-1 pixels), id "" */
    double vmin, vmax;   /* range of the original stored values */
    char id[65];         /* content id (see ss_volume_from_nifti) */
    char name[256];      /* free text, NUL-terminated; "" if none (the caller sets it) */
    int64_t created;     /* unix seconds, 0 if unknown (the caller sets it) */
    ss_target target;    /* upload option: rank=, energy=, psnr= (per slice) or none */
    int no_original;     /* keep-original=false: voxels dropped once stored, slices quantised */
    long long upload_bytes; /* the upload's bytes, 0 if unknown (kept in .svv v2) */
} ss_volume;

typedef struct ss_volume_opts {
    int axis;            /* 0..2; < 0 means 2 */
    int t;               /* volume of a 4D file; < 0 means 0 */
    ss_nifti_limits lim; /* zeroed: the defaults of nifti.h */
    ss_target target;    /* zeroed: none (every component) */
    int no_original;     /* keep-original=false */
} ss_volume_opts;

/* Decodes a .nii/.nii.gz held in memory (ss_nifti_decode's checks and error
 * codes; o may be NULL for the defaults) into a volume with no slice
 * factorised yet, and computes its id: SHA-256, 64 lowercase hex, over
 * "svdslice-vol-1", the axis and t as u32le, the header ss_nifti_encode
 * would write for it (dims, pixdim, data type, scaling, qform/sform, ...; the
 * same in either byte order, gzipped or not) and the stored voxel values as
 * little-endian: the same file again gives the same id. Upload options other than the
 * defaults (a target, keep-original=false) are hashed after the voxels as text (e.g.
 * "psnr=40;keep-original=false"), so the same file with other options is another volume;
 * with the defaults the id is the one of a volume stored before the options existed.
 * Returns 0 and *out (free with ss_volume_free), or an error. Thread-safe. */
int ss_volume_from_nifti(const void *buf, size_t len, const ss_volume_opts *o, ss_volume **out);
void ss_volume_free(ss_volume *v); /* NULL-safe; frees the slices and voxels */

/* Factorises slice `index` (0..nslices-1) into v->slices[index] (replacing
 * nothing: SS_EINVAL if already done). Thread-safe for DIFFERENT indices of
 * one volume concurrently (each call reads the voxels and writes only its own
 * slot), so a worker pool can run every slice in parallel; the caller must
 * not free or otherwise change v meanwhile. uint8/int8 slices go through
 * float32 sgesdd, wider types through float64 (then stored as float32).
 * With v->target or v->no_original the slice is then fitted (ss_compress_fit on
 * its scaled values: peak ss_volume_psnr_peak, rounding checked for integer
 * types without scaling and with non-negative values) and, without the
 * original, quantised.
 * Returns 0, SS_EINVAL, SS_ENOMEM, SS_ENUMERIC or SS_ETOOLARGE. */
int ss_volume_factor_slice(ss_volume *v, int index);
/* Every slice not yet factorised, over nthreads threads (<= 0: one per core);
 * for the CLI and tests. First error wins. */
int ss_volume_factor_all(ss_volume *v, int nthreads);
/* Runs fn(arg, s, ws) for s in 0..count-1 over nthreads threads (<= 0: one
 * per core; the caller's thread is one of them), slices handed out one at a
 * time, each thread with its own workspace; the first error stops the rest
 * and is returned with its message. What ss_volume_factor_all and
 * ss_volume_rebuild run on; for the bench's baseline run the same way. */
typedef int (*ss_slice_fn)(void *arg, int s, ss_workspace *ws);
int ss_volume_for_each_slice(int count, int nthreads, ss_slice_fn fn, void *arg);
/* The peak ss_compress_fit gets for slice data (scaled values): for a PSNR target the data
 * range of ss_volume_data_range times |scl_slope|, so that a slice's PSNR is the one
 * /volumes/{id}/quality reports; else the stored range (vmax - vmin, at least 1). */
double ss_volume_fit_peak(const ss_volume *v);
/* 1 when every slice is factorised. */
int ss_volume_complete(const ss_volume *v);
/* Peak bytes one ss_volume_factor_slice call allocates (for memory budgets). */
long long ss_volume_slice_workspace_bytes(const ss_volume *v);
/* Bytes of a decoded, fully factorised volume in memory (voxels + factors at
 * full rank), from a probed header: for a budget reserved before decoding. */
long long ss_volume_memory_bytes(const ss_nifti_info *info, int axis);

/* ---- the .svv stored form: one blob per volume ----------------------------
 * All little-endian.
 *   header (SS_SVV_HEADER_BYTES): magic "SVDSLVOL", u32 version (2; 1 still read), u32 header
 *     bytes, u32 NIfTI version, u32 NIfTI header bytes, u32 axis, u32 t,
 *     u32 nslices, u32 m, u32 n, u32 datatype, u32 flags, f64 vmin, f64 vmax,
 *     i64 created, name[256], id[72] (NUL-terminated, zero-padded),
 *     NIfTI header[540] (native order as decoded, zero-padded); version 2 only,
 *     at byte 952: u32 target kind (ss_target_kind), u32 zero, f64 target value,
 *     u64 upload bytes; zeros up to the u32 crc32 of every header byte before it
 *     (at 1020). flags: version 1 0; version 2 bit 0 = the voxels are kept.
 *   index: nslices + 1 entries of {u64 offset, u64 length, u32 crc32,
 *     u32 zero}: entry 0 the voxel section, entry 1 + s slice s; then u32 crc32
 *     of the entries. Sections follow the index back to back in that order
 *     (offsets from the blob's start), ending exactly at the blob's end.
 *   voxel section: a zlib stream of the original stored values (little-endian);
 *     version 2 without the voxels: empty (the only section that may be)
 *   slice sections, version 1: each slice's full-rank float32 factors
 *     (ss_svd_serialize, codec 3). Version 2 with the voxels: u32 stored rank,
 *     u32 0 and nothing more: the factors and singular values are computed
 *     again from the voxels by the upload's SVD (every slice in parallel) when
 *     the volume is read. Without them: u32 stored rank, u32 z, z bytes of a
 *     zlib stream of the nsv exact singular values (f32), then the quantised,
 *     range-coded factors at the stored rank (ss_factors_encode) to the
 *     section's end. No per-slice .svd header.
 * A backend may store the header + index as one row and each section as
 * another, keyed by its index entry, and rejoin them in order.
 * Reading checks magic, version, sizes, every checksum, the NIfTI header
 * (re-validated as on upload), each slice's shape against the volume and the
 * inflated voxel count; anything off is SS_ECORRUPT with a message. */
#define SS_SVV_HEADER_BYTES 1024
#define SS_SVV_INDEX_ENTRY_BYTES 24
/* Offset of the first section: header, nslices + 1 entries and the index crc. */
size_t ss_svv_sections_offset(int nslices);
/* From a blob's first SS_SVV_HEADER_BYTES bytes (header checksum verified):
 * how many bytes ss_volume_read_header needs (ss_svv_sections_offset of its
 * slice count), or 0 for a bad header. For an index that reads files in part. */
size_t ss_svv_head_bytes(const void *head, size_t n);

/* The volume must be complete. Returns 0 and *out (malloc'd) / *out_len,
 * SS_EINVAL (incomplete) or SS_ENOMEM. Thread-safe (reads v only); encodes
 * the slices on one thread per core. */
int ss_volume_serialize(const ss_volume *v, unsigned char **out, size_t *out_len);
/* The version-1 form (full-rank float32 factors and the voxels), for the tests that prove
 * version-1 files still load: v must be complete at full rank with its voxels. */
int ss_volume_serialize_v1(const ss_volume *v, unsigned char **out, size_t *out_len);
/* Returns 0 and *out (complete; free with ss_volume_free), SS_ECORRUPT or
 * SS_ENOMEM. Thread-safe. */
int ss_volume_deserialize(const void *buf, size_t len, ss_volume **out);
/* For an index: the header's and the index table's checks, the NIfTI header's
 * and the sections' placement; fills out's scalar fields (voxels and slices
 * NULL). buf needs ss_svv_sections_offset(nslices) bytes (at least
 * SS_SVV_HEADER_BYTES to learn nslices); len is the blob's full length. */
int ss_volume_read_header(const void *buf, size_t buf_len, size_t len, ss_volume *out);
/* Every checksum without decoding (a blob served as stored). */
int ss_volume_verify(const void *buf, size_t len);

/* ---- reconstruction ----------------------------------------------------------
 * k: components per slice, clamped to each slice's rank (slices differ in
 * rank); k < 1 is SS_EINVAL. A slice whose clamped k is its full rank
 * (min(m, n)) is the original, exactly, when the voxels are kept. */

/* Bytes of one whole volume of stored values (nvox * bytes per voxel). */
size_t ss_volume_voxel_bytes(const ss_volume *v);

/* The whole volume at k as stored values (v->nii.datatype, native order,
 * NIfTI order) into out (ss_volume_voxel_bytes(v) bytes), one batch: the
 * slices are split over nthreads threads (<= 0: one per core), each running
 * backend b's reconstruct_f32 with its own workspace. b must be a backend
 * with reconstruct_f32 that is available (else SS_EUNAVAIL); `threads`
 * parallelises inside each slice already, so give it nthreads = 1. For the
 * fastest CPU path use `blas` with OpenBLAS set to one thread and nthreads =
 * cores. Returns 0, SS_EINVAL, SS_EUNAVAIL or SS_ENOMEM. Thread-safe. */
int ss_volume_rebuild(const ss_volume *v, int k, const ss_backend *b, int nthreads, void *out);

/* For a batch computed elsewhere (the server's GPU queue: gpu/gpu.h's
 * ss_gpu_run_batch over every slice's factors in one launch), to assemble the
 * volume ss_volume_rebuild would give, one slice at a time (thread-safe for
 * different s into one out):
 * ss_volume_slice_full(v, s, k): 1 when slice s at k (clamped) is at its full
 * rank, so it is the original and needs no product.
 * ss_volume_put_slice: slice s into out (ss_volume_voxel_bytes) from its product
 * C = U[:, :k] W[:k, :] (m*n floats: scaled values), rounded and clamped to the
 * type, or from the original when full (C may be NULL then).
 * ss_volume_put_slice_pixels: the same from a backend's pixels (rounded and
 * clamped to 0..2^bit_depth-1 of the slice's factors), which are the stored
 * values exactly only when ss_volume_pixels_exact(v): uint8 or uint16 data
 * without scaling; SS_EINVAL otherwise. Both return 0 or SS_EINVAL. */
int ss_volume_slice_full(const ss_volume *v, int s, int k);
int ss_volume_put_slice(const ss_volume *v, int s, int k, const float *C, void *out);
int ss_volume_pixels_exact(const ss_volume *v);
int ss_volume_put_slice_pixels(const ss_volume *v, int s, int k, const uint16_t *px, void *out);
/* n scaled floats of a product (one slice's C, from wherever it was computed)
 * as stored values, rounded and clamped as ss_volume_slice gives them. */
void ss_volume_stored_values(const ss_volume *v, const float *C, size_t n, double *out);

/* The whole volume at k (stored values as from ss_volume_rebuild) as a
 * .nii.gz in memory (ss_nifti_encode with gzip). */
int ss_volume_to_nifti(const ss_volume *v, const void *stored, unsigned char **out, size_t *out_len);

/* One slice at (axis, index, k) as stored values (double, rows x cols as
 * ss_volume_slice_dims says) into out. Along v->axis it is reconstructed
 * directly from that slice's factors with b (rebuilt may be NULL); along
 * another axis it is read from `rebuilt`, the whole volume at the same k
 * from ss_volume_rebuild (the caller caches it), and SS_EINVAL without it.
 * ws: the caller's workspace (one per thread). Thread-safe. */
int ss_volume_slice(const ss_volume *v, const void *rebuilt, int axis, int index, int k,
                    const ss_backend *b, ss_workspace *ws, double *out);

/* PNG pixels of slice values (stored values, n of them). Returns the PNG's
 * bit depth: uint8 data -> 8 (values as they are), uint16 -> 16 (as they
 * are), other types -> 16 by the linear map of the ORIGINAL volume's stored
 * range: round((x - vmin) / (vmax - vmin) * 65535), clamped (all 0 when
 * vmax == vmin). */
int ss_volume_pixels(const ss_volume *v, const double *vals, size_t n, uint16_t *px);
/* 8-bit pixels through a window on the SCALED values y = slope * x + inter:
 * clamp(round((y - center + width/2) / width * 255), 0, 255) (as
 * ss_pixels_window; width <= 0 is a step at center). */
void ss_volume_window(const ss_volume *v, const double *vals, size_t n, double center, double width,
                      uint16_t *px);

/* ---- quality ----------------------------------------------------------------
 * Of the volume rebuilt at k (stored values, rounded as the .nii.gz holds
 * them) against the original stored values (before scaling; with slope 1 and
 * inter 0, the common case, the same as the scaled ones).
 * Data range R: 255 for uint8, 65535 for uint16, vmax - vmin of the original
 * for other types (1 if that is 0). mse = mean((a - b)^2); psnr =
 * 10 log10(R^2 / mse), null when mse == 0; ssim = skimage's
 * structural_similarity(orig, rebuilt, data_range=R) with its defaults (7-wide
 * uniform window in every dimension, reflect padding, K1 0.01, K2 0.03, sample
 * covariance, the 3-voxel border cropped), 3D for the volume, 2D per slice,
 * null when a dimension is under 7; energy = sum of the kept s_i^2 over all
 * s_i^2 (over every slice for the volume). */
typedef struct ss_volume_quality {
    int index; /* slice index (per-slice entries); -1 for the volume */
    int k;     /* components used (per slice: k clamped to its rank; volume: k asked) */
    double mse;
    double psnr;
    int psnr_null;
    double ssim;
    int ssim_null;
    double energy;
    int no_original; /* keep-original=false: only k and energy (mse, psnr, ssim unknown) */
} ss_volume_quality;

double ss_volume_data_range(const ss_volume *v);
/* rebuilt: the volume at k from ss_volume_rebuild. slices: nslices entries
 * (along v->axis) or NULL to skip them. Allocates two float64 copies of the
 * volume (16 bytes per voxel) and the SSIM's plane buffers (~40 x 8 bytes per
 * slice voxel); without the voxels (keep-original=false) only k and energy, no_original
 * set. Returns 0, SS_EINVAL or SS_ENOMEM. Thread-safe. */
int ss_volume_quality_compute(const ss_volume *v, int k, const void *rebuilt,
                              ss_volume_quality *vol, ss_volume_quality *slices);

#endif
