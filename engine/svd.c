/* svd.c - float32 thin SVD of a slice (LAPACKE sgesdd, sgesvd fallback) and its content id (SHA-256) */
#include "engine/svd.h"
#include "util/error.h"
#include "util/le.h"

#include <lapacke.h>
#include <math.h>
#include <nettle/sha2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int norm_rank(int rank, int nsv) { return (rank <= 0 || rank > nsv) ? nsv : rank; }

/* LAPACK returns workspace sizes as a float: round up so large sizes are not cut short. */
static long long lwork_of(double wq) { return (long long)ceil(wq * (1 + 1e-6)) + 1; }

long long ss_stored_bytes(int m, int n, int k) {
    return 4LL * (long long)k * ((long long)m + (long long)n + 1);
}

long long ss_svd_file_bytes(int m, int n, int rank, int with_orig) {
    const long long M = m, N = n, P = m < n ? m : n;
    return SS_SVD_HEADER_BYTES + 4 * (M * rank + P + rank * N) + (with_orig ? 2 * M * N : 0);
}

void ss_factors_free(ss_factors *f) {
    if (!f) return;
    free(f->U);
    free(f->S);
    free(f->Vt);
    free(f->W);
    free(f->orig);
    free(f);
}

int ss_factors_alloc(int m, int n, int rank, int bit_depth, int with_orig, ss_factors **out) {
    *out = NULL;
    int nsv = m < n ? m : n;
    if (m <= 0 || n <= 0 || rank < 1 || rank > nsv || (bit_depth != 8 && bit_depth != 16))
        return ss_fail(SS_EINVAL, "bad factor shape %dx%d rank %d, %d bits", m, n, rank, bit_depth);
    ss_factors *f = calloc(1, sizeof *f);
    if (!f) return ss_fail(SS_ENOMEM, "out of memory for factors");
    f->m = m;
    f->n = n;
    f->bit_depth = bit_depth;
    f->rank = rank;
    f->nsv = nsv;
    size_t mu = (size_t)m, nu = (size_t)n, ru = (size_t)rank;
    f->U = calloc(mu * ru, sizeof(float));
    f->S = calloc((size_t)nsv, sizeof(float));
    f->Vt = calloc(ru * nu, sizeof(float));
    f->W = calloc(ru * nu, sizeof(float));
    if (with_orig) f->orig = calloc(mu * nu, sizeof(uint16_t));
    if (!f->U || !f->S || !f->Vt || !f->W || (with_orig && !f->orig)) {
        ss_factors_free(f);
        return ss_fail(SS_ENOMEM, "out of memory for %dx%d factors of rank %d", m, n, rank);
    }
    *out = f;
    return SS_OK;
}

void ss_factors_update_w(ss_factors *f) {
    for (int p = 0; p < f->rank; p++) {
        const float s = f->S[p];
        const float *v = f->Vt + (size_t)p * (size_t)f->n;
        float *w = f->W + (size_t)p * (size_t)f->n;
        for (int j = 0; j < f->n; j++) w[j] = s * v[j];
    }
}

/* ---- content id ------------------------------------------------------------ */


/* SHA-256 (nettle), all 256 bits in hex: the id is all a client has to tell
 * two slices apart, and the store answers an upload whose id it holds with
 * that slice, so ids must not collide even when someone tries (a 128-bit
 * prefix would leave 2^64 work for a collision). 64 characters is also the
 * id rule's limit, and old ids (32 characters) cannot be mistaken for one. */
/* extra (NULL: none) is hashed after the shape, with its length, for lossy encodings. */
static void content_id(const ss_image *img, int rank, const char *extra, char id[65]) {
    const int m = img->height, n = img->width;
    struct sha256_ctx c;
    sha256_init(&c);
    static const char tag[] = "svdslice-id-2", tag_lossy[] = "svdslice-id-2-lossy";
    if (extra) sha256_update(&c, sizeof tag_lossy - 1, (const uint8_t *)tag_lossy);
    else sha256_update(&c, sizeof tag - 1, (const uint8_t *)tag);
    uint8_t head[16];
    ss_put_le32(head, (uint32_t)m);
    ss_put_le32(head + 4, (uint32_t)n);
    ss_put_le32(head + 8, (uint32_t)img->bit_depth);
    ss_put_le32(head + 12, (uint32_t)norm_rank(rank, m < n ? m : n));
    sha256_update(&c, sizeof head, head);
    if (extra) {
        uint8_t el[4];
        ss_put_le32(el, (uint32_t)strlen(extra));
        sha256_update(&c, sizeof el, el);
        sha256_update(&c, strlen(extra), (const uint8_t *)extra);
    }
    const size_t count = (size_t)m * (size_t)n;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    sha256_update(&c, count * sizeof *img->px, (const uint8_t *)img->px); /* already u16le */
#else
    uint8_t le[4096];
    for (size_t i = 0; i < count;) {
        size_t k = 0;
        for (; k < sizeof le && i < count; i++, k += 2) {
            le[k] = (uint8_t)(img->px[i] & 0xff);
            le[k + 1] = (uint8_t)(img->px[i] >> 8);
        }
        sha256_update(&c, k, le);
    }
#endif
    uint8_t d[SHA256_DIGEST_SIZE];
    sha256_digest(&c, sizeof d, d);
    for (int i = 0; i < SHA256_DIGEST_SIZE; i++) snprintf(id + 2 * i, 3, "%02x", d[i]);
}

void ss_content_id(const ss_image *img, int rank, char id[65]) { content_id(img, rank, NULL, id); }

void ss_content_id_lossy(const ss_image *img, const char *target, char id[65]) {
    content_id(img, 0, target ? target : "", id);
}

/* The version-1 id: two unrelated 64-bit hashes over the same canonical byte
 * stream, FNV-1a 64 (byte-wise) and a multiply-rotate hash over 64-bit words
 * whose finaliser is splitmix64's. Not collision resistant. */
typedef struct {
    uint64_t fnv, mix, word;
    unsigned nbytes; /* bytes pending in word */
    uint64_t total;
} idhash;

static uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static void idh_init(idhash *h) {
    h->fnv = 0xcbf29ce484222325ULL; /* FNV offset basis */
    h->mix = 0x9e3779b97f4a7c15ULL;
    h->word = 0;
    h->nbytes = 0;
    h->total = 0;
}

static void idh_mix_word(idhash *h, uint64_t w) {
    w *= 0x87c37b91114253d5ULL; /* murmur3 x64 constants */
    w = rotl64(w, 31);
    w *= 0x4cf5ad432745937fULL;
    h->mix ^= w;
    h->mix = rotl64(h->mix, 27) * 5 + 0x52dce729;
}

static void idh_byte(idhash *h, unsigned char b) {
    h->fnv = (h->fnv ^ b) * 0x100000001b3ULL; /* FNV-1a 64 prime */
    h->word |= (uint64_t)b << (8 * h->nbytes);
    if (++h->nbytes == 8) {
        idh_mix_word(h, h->word);
        h->word = 0;
        h->nbytes = 0;
    }
    h->total++;
}

static void idh_u32(idhash *h, uint32_t v) {
    for (int i = 0; i < 4; i++) idh_byte(h, (unsigned char)(v >> (8 * i)));
}

static uint64_t fmix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

void ss_content_id_v1(const ss_image *img, int rank, char id[65]) {
    const int m = img->height, n = img->width;
    const int nsv = m < n ? m : n;
    idhash h;
    idh_init(&h);
    static const char tag[] = "svdslice-id-1";
    for (const char *c = tag; *c; c++) idh_byte(&h, (unsigned char)*c);
    idh_u32(&h, (uint32_t)m);
    idh_u32(&h, (uint32_t)n);
    idh_u32(&h, (uint32_t)img->bit_depth);
    idh_u32(&h, (uint32_t)norm_rank(rank, nsv));
    const size_t count = (size_t)m * (size_t)n;
    for (size_t i = 0; i < count; i++) {
        idh_byte(&h, (unsigned char)(img->px[i] & 0xff));
        idh_byte(&h, (unsigned char)(img->px[i] >> 8));
    }
    uint64_t last = h.word ^ ((uint64_t)h.nbytes << 56);
    idh_mix_word(&h, last);
    uint64_t a = fmix64(h.fnv ^ h.total), b = fmix64(h.mix ^ h.total);
    snprintf(id, 65, "%016llx%016llx", (unsigned long long)a, (unsigned long long)b);
}

/* ---- factorisation ----------------------------------------------------------- */

/* LAPACK counts its workspace, and the offsets into it, in lapack_int: 32 bits
 * in the usual (LP64) build. gesdd/gesvd on an m x n image (p = min, M = max)
 * sum terms up to M p + 4 p^2 + 7 p (+ blocking terms of a few hundred times
 * p and M) in that type; past its range the sums wrap (a 30000^2 query answers
 * 2 million elements for 3.6 billion) and LAPACK would work outside the
 * buffer. Such shapes (square from ~20500 per side) are refused up front. */
#define SS_LAPACK_INT_MAX (sizeof(lapack_int) >= 8 ? (double)INT64_MAX : (double)INT32_MAX)

static int lapack_can_count(int m, int n) {
    const double p = m < n ? m : n, big = m < n ? n : m;
    return big * p + 4 * p * p + 1024 * (p + big) < SS_LAPACK_INT_MAX;
}

/* Workspace elements from a query's answer (which comes back as a float, so
 * round up); 0 when lapack_int cannot hold it. */
static lapack_int lwork_from_query(double wq) {
    const double w = ceil(wq * (1 + 1e-6)) + 1;
    return w >= 1 && w < SS_LAPACK_INT_MAX ? (lapack_int)w : 0;
}

/* The image is row-major m x n, i.e. a column-major n x m matrix A^T (lda = n).
 * LAPACK factors A^T = U' S V'^T with U' (n x p, ld n) and V'^T (p x m, ld p)
 * column-major; then A = V' S U'^T, so V'^T's storage is A's U row-major
 * (m x p) and U''s storage is A's Vt row-major (p x n). No transposes, and no
 * copies inside row-major LAPACKE.
 * SVD_FULL(name, T, gesdd, gesvd) defines
 *   int name(T *a, const T *a_copy, int m, int n, T *s, T *U, T *Vt)
 * running gesdd, and gesvd from a_copy when gesdd does not converge (gesdd
 * destroys a). */
#define SVD_FULL(NAME, T, GESDD, GESVD)                                                          \
    static int NAME(T *a, const T *a_copy, int m, int n, T *s, T *Ufull, T *Vtfull) {            \
        const int p = m < n ? m : n;                                                             \
        T wq = 0;                                                                                \
        lapack_int *iwork = malloc(sizeof(lapack_int) * 8 * (size_t)p);                          \
        if (!iwork) return ss_fail(SS_ENOMEM, "out of memory for the SVD workspace");            \
        lapack_int info =                                                                        \
            GESDD(LAPACK_COL_MAJOR, 'S', n, m, a, n, s, Vtfull, n, Ufull, p, &wq, -1, iwork);   \
        if (info != 0) {                                                                         \
            free(iwork);                                                                         \
            return ss_fail(SS_ENUMERIC, "gesdd workspace query failed (info %d)", (int)info);    \
        }                                                                                        \
        lapack_int lwork = lwork_from_query((double)wq);                                         \
        T *work = lwork ? malloc(sizeof(T) * (size_t)lwork) : NULL;                              \
        if (!work) {                                                                             \
            free(iwork);                                                                         \
            if (!lwork) return ss_fail(SS_ETOOLARGE, "SVD workspace over LAPACK's int range");   \
            return ss_fail(SS_ENOMEM, "out of memory for the SVD workspace");                    \
        }                                                                                        \
        info = GESDD(LAPACK_COL_MAJOR, 'S', n, m, a, n, s, Vtfull, n, Ufull, p, work, lwork,     \
                     iwork);                                                                     \
        free(iwork);                                                                             \
        if (info > 0) {                                                                          \
            /* Divide and conquer did not converge: QR iteration is slower, more robust. */     \
            memcpy(a, a_copy, sizeof(T) * (size_t)m * (size_t)n);                                \
            info = GESVD(LAPACK_COL_MAJOR, 'S', 'S', n, m, a, n, s, Vtfull, n, Ufull, p, &wq,   \
                         -1);                                                                    \
            if (info == 0) {                                                                     \
                lapack_int lw2 = lwork_from_query((double)wq);                                   \
                if (!lw2) {                                                                      \
                    free(work);                                                                  \
                    return ss_fail(SS_ETOOLARGE, "SVD workspace over LAPACK's int range");       \
                }                                                                                \
                if (lw2 > lwork) {                                                               \
                    T *w2 = realloc(work, sizeof(T) * (size_t)lw2);                              \
                    if (!w2) {                                                                   \
                        free(work);                                                              \
                        return ss_fail(SS_ENOMEM, "out of memory for the SVD workspace");        \
                    }                                                                            \
                    work = w2;                                                                   \
                    lwork = lw2;                                                                 \
                }                                                                                \
                info = GESVD(LAPACK_COL_MAJOR, 'S', 'S', n, m, a, n, s, Vtfull, n, Ufull, p,    \
                             work, lwork);                                                       \
            }                                                                                    \
            if (info > 0) {                                                                      \
                free(work);                                                                      \
                return ss_fail(SS_ENUMERIC, "SVD of the %dx%d image did not converge", m, n);    \
            }                                                                                    \
        }                                                                                        \
        free(work);                                                                              \
        if (info < 0) return ss_fail(SS_ENUMERIC, "LAPACK rejected argument %d", (int)-info);    \
        return SS_OK;                                                                            \
    }

SVD_FULL(svd_full_f32, float, LAPACKE_sgesdd_work, LAPACKE_sgesvd_work)
SVD_FULL(svd_full_f64, double, LAPACKE_dgesdd_work, LAPACKE_dgesvd_work)

/* The larger of the work arrays svd_full can hold (gesdd's, or gesvd's on the fallback), in
 * elements, from LAPACK's own queries on the same shapes; 0 when a query fails (the SVD then
 * fails before allocating it). Query mode reads only the scalar arguments. */
#define SVD_LWORK(NAME, T, GESDD, GESVD)                                                           \
    static long long NAME(int m, int n) {                                                          \
        const int p = m < n ? m : n;                                                               \
        T dummy[1] = {0}, wq = 0;                                                                  \
        lapack_int idummy[1] = {0};                                                                \
        if (GESDD(LAPACK_COL_MAJOR, 'S', n, m, dummy, n, dummy, dummy, n, dummy, p, &wq, -1, idummy)) \
            return 0;                                                                              \
        long long dd = lwork_of((double)wq);                                                       \
        if (GESVD(LAPACK_COL_MAJOR, 'S', 'S', n, m, dummy, n, dummy, dummy, n, dummy, p, &wq, -1))  \
            return dd;                                                                             \
        long long sv = lwork_of((double)wq);                                                       \
        return dd > sv ? dd : sv;                                                                  \
    }

SVD_LWORK(lwork_f32, float, LAPACKE_sgesdd_work, LAPACKE_sgesvd_work)
SVD_LWORK(lwork_f64, double, LAPACKE_dgesdd_work, LAPACKE_dgesvd_work)

long long ss_svd_workspace_bytes(int m, int n, int bit_depth) {
    if (m <= 0 || n <= 0 || (bit_depth != 8 && bit_depth != 16)) return -1;
    const long long M = m, N = n, P = m < n ? m : n, MN = M * N;
    /* ss_factors_alloc at full rank with the original pixels, then Ufull and Vtfull */
    long long b = (long long)sizeof(ss_factors) + 4 * (M * P + P + 2 * P * N) + 2 * MN;
    b += 4 * (M * P + P * N);
    if (bit_depth == 8) /* factor_image: a and its copy in float32 */
        b += 4 * 2 * MN + 4 * lwork_f32(m, n);
    else /* a, its copy, U, Vt and S in float64 */
        b += 8 * (2 * MN + M * P + P * N + P) + 8 * lwork_f64(m, n);
    b += (long long)sizeof(lapack_int) * 8 * P; /* gesdd's iwork */
    return b + 12 * 4096; /* the allocator rounds each of the (at most 12) blocks up, by a page at most */
}

/* Full-p factors of an m x n array into float arrays: the samples come from
 * px (u16) or fx (float), whichever is not NULL. 8-bit images are factorised
 * in float32 (full-rank error ~1e-3 of a level on real slices). For 16-bit
 * ones float32's backward error, ~eps * ||A|| = 6e-8 * (65535 * sqrt(m n)),
 * reaches half a level, so they go through float64 (about 1.3x the time) and
 * only the results are rounded to float32. */
static int factor_full(const uint16_t *px, const float *fx, int m, int n, int use_f64, float *S,
                       float *Ufull, float *Vtfull) {
    const int p = m < n ? m : n;
    const size_t mn = (size_t)m * (size_t)n;
    int rc;
    if (!use_f64) {
        float *a = malloc(sizeof(float) * mn * 2); /* a and its copy for the fallback */
        if (!a) return ss_fail(SS_ENOMEM, "out of memory factorising a %dx%d image", m, n);
        if (px)
            for (size_t i = 0; i < mn; i++) a[i] = (float)px[i];
        else
            memcpy(a, fx, sizeof(float) * mn);
        memcpy(a + mn, a, sizeof(float) * mn);
        rc = svd_full_f32(a, a + mn, m, n, S, Ufull, Vtfull);
        free(a);
        return rc;
    }
    const size_t pu = (size_t)m * (size_t)p, pv = (size_t)p * (size_t)n;
    double *a = malloc(sizeof(double) * (mn * 2 + pu + pv + (size_t)p));
    if (!a) return ss_fail(SS_ENOMEM, "out of memory factorising a %dx%d image", m, n);
    double *a_copy = a + mn, *Ud = a_copy + mn, *Vtd = Ud + pu, *Sd = Vtd + pv;
    if (px)
        for (size_t i = 0; i < mn; i++) a[i] = (double)px[i];
    else
        for (size_t i = 0; i < mn; i++) a[i] = (double)fx[i];
    memcpy(a_copy, a, sizeof(double) * mn);
    rc = svd_full_f64(a, a_copy, m, n, Sd, Ud, Vtd);
    if (rc == 0) {
        for (size_t i = 0; i < pu; i++) Ufull[i] = (float)Ud[i];
        for (size_t i = 0; i < pv; i++) Vtfull[i] = (float)Vtd[i];
        for (int i = 0; i < p; i++) S[i] = (float)Sd[i];
    }
    free(a);
    return rc;
}

/* Factors at `rank` of px or fx (see factor_full), without id or original. */
static int factor_into(const uint16_t *px, const float *fx, int m, int n, int bit_depth, int rank,
                       int use_f64, int keep_original, ss_factors **out) {
    const int p = m < n ? m : n;
    if (!lapack_can_count(m, n))
        return ss_fail(SS_ETOOLARGE, "a %dx%d image is over what LAPACK's %d-bit interface can factorise", n, m,
                       (int)(8 * sizeof(lapack_int)));
    rank = norm_rank(rank, p);
    ss_factors *f;
    int rc = ss_factors_alloc(m, n, rank, bit_depth, keep_original, &f);
    if (rc) return rc;
    float *Ufull = malloc(sizeof(float) * (size_t)m * (size_t)p);
    float *Vtfull = malloc(sizeof(float) * (size_t)p * (size_t)n);
    if (!Ufull || !Vtfull) {
        rc = ss_fail(SS_ENOMEM, "out of memory factorising a %dx%d image", m, n);
        goto done;
    }
    rc = factor_full(px, fx, m, n, use_f64, f->S, Ufull, Vtfull);
    if (rc) goto done;
    for (int i = 0; i < p; i++) {
        if (!isfinite(f->S[i])) {
            rc = ss_fail(SS_ENUMERIC, "SVD produced a non-finite singular value");
            goto done;
        }
    }
    for (int i = 0; i < m; i++)
        memcpy(f->U + (size_t)i * (size_t)rank, Ufull + (size_t)i * (size_t)p, sizeof(float) * (size_t)rank);
    memcpy(f->Vt, Vtfull, sizeof(float) * (size_t)rank * (size_t)n);
    ss_factors_update_w(f);
done:
    free(Ufull);
    free(Vtfull);
    if (rc) {
        ss_factors_free(f);
        return rc;
    }
    *out = f;
    return SS_OK;
}

int ss_svd_factor_values(const float *a, int m, int n, int bit_depth, int rank, int use_f64,
                         ss_factors **out) {
    *out = NULL;
    if (!a || m <= 0 || n <= 0 || (bit_depth != 8 && bit_depth != 16))
        return ss_fail(SS_EINVAL, "bad values to factorise");
    const size_t mn = (size_t)m * (size_t)n;
    for (size_t i = 0; i < mn; i++)
        if (!isfinite(a[i])) return ss_fail(SS_EINVAL, "non-finite value to factorise");
    return factor_into(NULL, a, m, n, bit_depth, rank, use_f64, 0, out);
}

int ss_svd_factor(const ss_image *img, int rank, int keep_original, ss_factors **out) {
    *out = NULL;
    if (!img || !img->px || img->width <= 0 || img->height <= 0 ||
        (img->bit_depth != 8 && img->bit_depth != 16))
        return ss_fail(SS_EINVAL, "bad image to factorise");
    const int m = img->height, n = img->width;
    ss_factors *f;
    int rc = factor_into(img->px, NULL, m, n, img->bit_depth, rank, img->bit_depth != 8, keep_original, &f);
    if (rc) return rc;
    if (keep_original) memcpy(f->orig, img->px, sizeof(uint16_t) * (size_t)m * (size_t)n);
    ss_content_id(img, f->rank, f->id);
    *out = f;
    return SS_OK;
}
