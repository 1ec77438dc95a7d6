/* svd.h - float32 thin SVD of a slice, and the .svd compressed-slice file format */
#ifndef SS_SVD_H
#define SS_SVD_H
#include <stddef.h>
#include <stdint.h>

#include "engine/image.h"

/* A slice stored as its SVD. All arrays row-major float32 and owned by the
 * struct (one allocation or several: free only with ss_factors_free).
 *   U  : m x rank     (column p is the p-th left singular vector)
 *   S  : nsv = min(m, n) singular values, non-increasing (all of them, even
 *        when rank < nsv, so energy at any k can be computed)
 *   Vt : rank x n
 *   W  : rank x n, W = diag(S[:rank]) * Vt, derived on creation/load (not
 *        stored) so every reconstruction is one GEMM U[:, :k] * W[:k, :]. */
typedef struct ss_factors {
    int m, n;          /* height, width */
    int bit_depth;     /* 8 or 16: the source's; output pixels use it by default */
    int rank;          /* components stored, 1..nsv */
    int nsv;           /* min(m, n) */
    float *U, *S, *Vt, *W;
    uint16_t *orig;    /* m*n original samples, or NULL when not kept */
    char name[256];    /* free text metadata, NUL-terminated ("" if none) */
    int64_t created;   /* unix seconds, 0 if unknown */
    char id[65];       /* content id (see ss_content_id), "" until computed */
    float qstep;       /* quantisation of stored factors (engine/compress.h): 0 = the default,
                        * < 0: stored as float32, unquantised (volume slices) */
    long long upload_bytes; /* bytes of the upload it came from, 0 = unknown (kept in .svd v2) */
} ss_factors;

/* Factorises img with LAPACKE sgesdd (sgesvd fallback) in float32, keeping the
 * first `rank` components (16-bit images go through dgesdd/dgesvd in float64,
 * since float32 would be off by up to half a level at full rank; the stored
 * factors are float32 either way) (rank <= 0 or > min(m,n) means min(m,n)). When
 * keep_original is set the pixels are copied into f->orig.
 * Returns 0 and *out (free with ss_factors_free), SS_EINVAL, SS_ENOMEM,
 * SS_ENUMERIC, or SS_ETOOLARGE for a shape whose workspace LAPACK's 32-bit
 * interface cannot count (square from ~20500 per side), refused before any
 * allocation. Thread-safe. */
int ss_svd_factor(const ss_image *img, int rank, int keep_original, ss_factors **out);
void ss_factors_free(ss_factors *f); /* NULL-safe */
/* The same from float values (row-major m x n, any range: a volume's scaled
 * slice): float32 sgesdd, or float64 dgesdd when use_f64 (wider data types,
 * whose full-rank float32 error would reach a unit); bit_depth (8 or 16) is
 * only the label kept in the factors. No original is kept and the id is "".
 * Same returns as ss_svd_factor, and SS_EINVAL for a non-finite value. */
int ss_svd_factor_values(const float *a, int m, int n, int bit_depth, int rank, int use_f64,
                         ss_factors **out);

/* Allocates zeroed factors of the given shape (U, S, Vt, W, and orig when
 * with_orig) with id "" and created 0, for loaders and tests that fill the
 * arrays themselves; call ss_factors_update_w after filling S and Vt.
 * Returns 0 and *out (free with ss_factors_free), SS_EINVAL or SS_ENOMEM. */
int ss_factors_alloc(int m, int n, int rank, int bit_depth, int with_orig, ss_factors **out);
/* Recomputes W = diag(S[:rank]) * Vt. */
void ss_factors_update_w(ss_factors *f);

/* Content id: SHA-256, as 64 lowercase hex characters, of "svdslice-id-2",
 * then height, width, bit depth and rank (rank <= 0 or > min(m,n) counts as
 * min(m,n)) as little-endian u32, then the samples as little-endian u16, row
 * by row; the same upload gives the same id. Writes 65 bytes (NUL included). */
void ss_content_id(const ss_image *img, int rank, char id[65]);
/* The id of an upload stored without its original (quantised factors): SHA-256 of
 * "svdslice-id-2-lossy", the same shape fields (rank as full), the target as text (e.g.
 * "psnr=40"; its length as u32 first) and the samples. The same upload with the same target
 * gives the same id, never one of a slice that keeps its original. */
void ss_content_id_lossy(const ss_image *img, const char *target, char id[65]);
/* The id before SHA-256 (32 hex characters, a 128-bit non-cryptographic hash
 * of the same fields): slices stored under it keep it, and an upload of the
 * very same pixels is recognised as them (ss_store_find_content). */
void ss_content_id_v1(const ss_image *img, int rank, char id[65]);

/* Bytes used by the factors at k: 4*k*(m+n+1). */
long long ss_stored_bytes(int m, int n, int k);

/* Peak bytes ss_svd_factor(img, any rank, keep_original = 1) allocates for an m x n image of
 * bit_depth bits: the factors at full rank, the full-rank scratch factors, the float32 or
 * float64 copies of the image and LAPACK's work arrays (as LAPACK's workspace query sizes
 * them). Not the image itself. -1 for a bad shape. For budgets reserved before a factorisation. */
long long ss_svd_workspace_bytes(int m, int n, int bit_depth);

/* .svd file format (little-endian), docs/COMPRESSION.md:
 * version 1 (still read; written only by ss_svd_serialize_v1):
 *   header: magic "SVDSLICE", u32 version, u32 header size, u32 m, n,
 *           bit_depth, rank, nsv, u32 flags (bit0: original pixels present),
 *           i64 created, name[256], id[72] (NUL-terminated, zero-padded),
 *           u64 payload bytes, u32 payload crc32 (zlib), u32 header crc32
 *           (of every header byte before it)
 *   payload: U (m*rank f32), S (nsv f32), Vt (rank*n f32), orig (m*n u16)?
 * version 2 (written): the same header up to the id, then u64 upload bytes,
 *   u64 factor section bytes, u64 original section bytes, u32 original codec,
 *   u32 0, u64 payload bytes, u32 payload crc32, u32 header crc32 (424 bytes);
 *   flags: exactly one of bit0 (original kept: the factors are computed from it
 *   on load) or bit1 (factors: quantised and range coded, engine/compress.h, codec 0;
 *   or float32 U then Vt, codec 3);
 *   payload: S (nsv f32, exact), then the factor section or the original's.
 * Reading verifies magic, version, sizes, both checksums and finiteness,
 * and rejects a truncated or corrupted file with SS_ECORRUPT and a message. */
/* Header bytes of a version-1 file (offsets in svdfile.c), and of a version-2 one. */
#define SS_SVD_HEADER_BYTES 392
#define SS_SVD2_HEADER_BYTES 424
#define SS_SVD_HEADER_MAX SS_SVD2_HEADER_BYTES
/* The header size of the file that starts with head (have bytes of it, at least
 * SS_SVD_HEADER_BYTES): SS_SVD2_HEADER_BYTES for a version-2 file, else SS_SVD_HEADER_BYTES. */
size_t ss_svd_header_bytes(const void *head, size_t have);
/* Size of the version-1 .svd file of m x n factors at rank, with or without the original pixels. */
long long ss_svd_file_bytes(int m, int n, int rank, int with_orig);
/* Version 2 (malloc'd): with f->orig the original losslessly compressed and the factors not
 * stored (computed again on load); without it U and Vt quantised with f->qstep (engine/compress.h),
 * or as float32 when f->qstep < 0. */
int ss_svd_serialize(const ss_factors *f, unsigned char **out, size_t *out_len);
/* Version 1, the old code path: float32 factors and raw samples (tests, compatibility). */
int ss_svd_serialize_v1(const ss_factors *f, unsigned char **out, size_t *out_len);
int ss_svd_deserialize(const void *buf, size_t len, ss_factors **out);
/* Reads only the header (for an index): fills *out's scalar fields and name,
 * leaves arrays NULL. Still checks the header checksum and the file size.
 * buf needs only the header (ss_svd_header_bytes); len is the file's size. */
int ss_svd_read_header(const void *buf, size_t len, ss_factors *out);
/* For an index that reads only part of each file: ss_svd_read_header's checks,
 * whether the original pixels are stored, and the offset of the nsv singular
 * values (4 * nsv bytes), which ss_svd_read_sv then decodes into S and checks
 * as ss_svd_deserialize does (finite, >= 0, non-increasing). The payload
 * checksum is not verified: ss_svd_deserialize or ss_svd_verify do that. */
int ss_svd_read_index(const void *head, size_t file_len, ss_factors *out, int *has_orig, size_t *sv_off);
int ss_svd_read_sv(const void *buf, int nsv, float *S);
/* The checks of ss_svd_deserialize that need no allocation (header, sizes,
 * both checksums), with the header into *hdr: for a file served as stored. */
int ss_svd_verify(const void *buf, size_t len, ss_factors *hdr);
/* A fixed-size text field of a stored header (the .svd's and .svv's name and id):
 * NUL-terminated within `size` bytes and shorter than max_len, zero-padded after it
 * (one encoding per content), and for an id only [A-Za-z0-9_-]. Returns its length,
 * or -1 and *why ("unterminated name", "bad id character", ...: static text). */
long ss_stored_text_len(const unsigned char *field, size_t size, size_t max_len, int is_id, const char **why);
/* Only the original pixels of a verified file (either version), malloc'd into *px, its header
 * into *hdr: no factors decoded, no SVD. SS_EINVAL when the original was not kept, SS_ECORRUPT. */
int ss_svd_read_original(const void *buf, size_t len, ss_factors *hdr, uint16_t **px);
int ss_svd_save(const char *path, const ss_factors *f); /* plain write, no fsync */
int ss_svd_load(const char *path, ss_factors **out);

#endif
