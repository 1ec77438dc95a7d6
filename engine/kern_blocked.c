/* kern_blocked.c - the blocked backend: cache-blocked, register-tiled SIMD GEMM with fused pixel output */
#include "util/error.h"
#include "engine/kern_internal.h"

#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SS_X86 1
#endif

/* Depth of one k block: the accumulators stay in registers for KC rank-1
 * steps, so up to KC (any slice up to 512 on its short side) the result goes
 * straight from registers to pixels; deeper products store partial sums. A
 * KC x 32 panel of B (64 KiB) stays in L2 while row blocks stream over it.
 * 512 measured ~10% faster than 256 on 1024x1024 at k=1024. */
#define KC 512

typedef void (*rows_fn)(const float *A, int lda, const float *B, int n, int k, int r0, int r1,
                        float *C, uint16_t *P, int maxval);

static inline int imin(int a, int b) { return a < b ? a : b; }

/* ---- portable path: 4 x 16 tile in plain C (auto-vectorised to SSE2) ------ */

enum { G_MR = 4, G_NR = 16 };

static void rows_generic(const float *A, int lda, const float *B, int n, int k, int r0, int r1,
                         float *C, uint16_t *P, int maxval) {
    for (int kb = 0; kb < k; kb += KC) {
        int kc = imin(KC, k - kb), first = kb == 0, last = kb + kc >= k;
        for (int j0 = 0; j0 < n; j0 += G_NR) {
            int w = imin(G_NR, n - j0);
            for (int i = r0; i < r1; i += G_MR) {
                int mr = imin(G_MR, r1 - i);
                const float *a[G_MR];
                float acc[G_MR][G_NR];
                /* Rows past the end repeat the last one; they are computed, not stored. */
                for (int r = 0; r < G_MR; r++)
                    a[r] = A + (size_t)(i + imin(r, mr - 1)) * (size_t)lda + kb;
                memset(acc, 0, sizeof acc);
                if (!first)
                    for (int r = 0; r < mr; r++)
                        memcpy(acc[r], C + (size_t)(i + r) * (size_t)n + j0, (size_t)w * sizeof(float));
                for (int p = 0; p < kc; p++) {
                    const float *b = B + (size_t)(kb + p) * (size_t)n + j0;
                    if (w == G_NR) {
                        for (int r = 0; r < G_MR; r++)
                            for (int c = 0; c < G_NR; c++) acc[r][c] += a[r][p] * b[c];
                    } else {
                        for (int r = 0; r < G_MR; r++)
                            for (int c = 0; c < w; c++) acc[r][c] += a[r][p] * b[c];
                    }
                }
                for (int r = 0; r < mr; r++) {
                    size_t off = (size_t)(i + r) * (size_t)n + j0;
                    if (last && P)
                        ss_pixels_from_float(acc[r], (size_t)w, maxval, P + off);
                    else
                        memcpy(C + off, acc[r], (size_t)w * sizeof(float));
                }
            }
        }
    }
}

#ifdef SS_X86
/* ---- AVX2 + FMA: 6 rows x 16 columns = 12 ymm accumulators ---------------- */

enum { A2_MR = 6, A2_NR = 16 };
#define AVX2 __attribute__((target("avx2,fma")))

/* Round half away from zero and clamp, as ss_pixels_from_float; max() puts
 * its second operand (0) in place of a NaN. */
static inline AVX2 __m256i px_avx2(__m256 v, __m256 hi) {
    v = _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), hi);
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 up = _mm256_cmp_ps(_mm256_sub_ps(v, t), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    return _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(up, _mm256_set1_ps(1.0f))));
}

static inline AVX2 void store_px_avx2(uint16_t *dst, __m256 v, __m256 hi, int cnt) {
    __m256i x = px_avx2(v, hi);
    __m128i h = _mm_packus_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    if (cnt >= 8) {
        _mm_storeu_si128((__m128i *)(void *)dst, h);
    } else if (cnt > 0) {
        uint16_t tmp[8];
        _mm_storeu_si128((__m128i *)(void *)tmp, h);
        memcpy(dst, tmp, (size_t)cnt * sizeof *dst);
    }
}

/* One 6 x 16 tile over kc steps; `full` is a constant at each call site so
 * the unmasked loads of whole panels compile to plain vmovups. */
static inline AVX2 __attribute__((always_inline)) void
tile_avx2(const float *const a[A2_MR], const float *B, int n, int kc, int full, __m256i mk0,
          __m256i mk1, __m256 acc0[A2_MR], __m256 acc1[A2_MR]) {
    for (int p = 0; p < kc; p++) {
        const float *b = B + (size_t)p * (size_t)n;
        __m256 b0 = full ? _mm256_loadu_ps(b) : _mm256_maskload_ps(b, mk0);
        __m256 b1 = full ? _mm256_loadu_ps(b + 8) : _mm256_maskload_ps(b + 8, mk1);
#pragma GCC unroll 6
        for (int r = 0; r < A2_MR; r++) {
            __m256 av = _mm256_broadcast_ss(a[r] + p);
            acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
            acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
        }
    }
}

static AVX2 void rows_avx2(const float *A, int lda, const float *B, int n, int k, int r0, int r1,
                           float *C, uint16_t *P, int maxval) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 hi = _mm256_set1_ps((float)maxval);
    for (int kb = 0; kb < k; kb += KC) {
        int kc = imin(KC, k - kb), first = kb == 0, last = kb + kc >= k;
        const float *Bk = B + (size_t)kb * (size_t)n;
        for (int j0 = 0; j0 < n; j0 += A2_NR) {
            int w = imin(A2_NR, n - j0), full = w == A2_NR;
            __m256i mk0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(w), iota);
            __m256i mk1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(w - 8), iota);
            for (int i = r0; i < r1; i += A2_MR) {
                int mr = imin(A2_MR, r1 - i);
                const float *a[A2_MR];
                __m256 acc0[A2_MR], acc1[A2_MR];
#pragma GCC unroll 6
                for (int r = 0; r < A2_MR; r++) {
                    a[r] = A + (size_t)(i + imin(r, mr - 1)) * (size_t)lda + kb;
                    acc0[r] = acc1[r] = _mm256_setzero_ps();
                    if (!first && r < mr) {
                        const float *c = C + (size_t)(i + r) * (size_t)n + j0;
                        acc0[r] = _mm256_maskload_ps(c, mk0);
                        acc1[r] = _mm256_maskload_ps(c + 8, mk1);
                    }
                }
                if (full)
                    tile_avx2(a, Bk + j0, n, kc, 1, mk0, mk1, acc0, acc1);
                else
                    tile_avx2(a, Bk + j0, n, kc, 0, mk0, mk1, acc0, acc1);
#pragma GCC unroll 6
                for (int r = 0; r < A2_MR; r++) {
                    if (r >= mr) break;
                    size_t off = (size_t)(i + r) * (size_t)n + j0;
                    if (last && P) {
                        store_px_avx2(P + off, acc0[r], hi, w);
                        store_px_avx2(P + off + 8, acc1[r], hi, w - 8);
                    } else {
                        _mm256_maskstore_ps(C + off, mk0, acc0[r]);
                        _mm256_maskstore_ps(C + off + 8, mk1, acc1[r]);
                    }
                }
            }
        }
    }
}

/* ---- AVX-512: 8 rows x 32 columns = 16 zmm accumulators, masked edges ----- */

enum { A5_MR = 8, A5_NR = 32 };
#define AVX512 __attribute__((target("avx512f")))

static inline AVX512 __m512i px_avx512(__m512 v, __m512 hi) {
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), hi);
    __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __mmask16 up = _mm512_cmp_ps_mask(_mm512_sub_ps(v, t), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    return _mm512_cvttps_epi32(_mm512_mask_add_ps(t, up, t, _mm512_set1_ps(1.0f)));
}

/* One 8 x 16*nv tile over kc steps; nv (1 or 2) is a constant at each call site. */
static inline AVX512 __attribute__((always_inline)) void
tile_avx512(const float *const a[A5_MR], const float *b, int n, int kc, int nv, __mmask16 m0,
            __mmask16 m1, __m512 acc0[A5_MR], __m512 acc1[A5_MR]) {
    for (int p = 0; p < kc; p++, b += n) {
        __m512 b0 = _mm512_maskz_loadu_ps(m0, b);
        __m512 b1 = nv == 2 ? _mm512_maskz_loadu_ps(m1, b + 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int r = 0; r < A5_MR; r++) {
            __m512 av = _mm512_set1_ps(a[r][p]);
            acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
            if (nv == 2) acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
        }
    }
}

static AVX512 void rows_avx512(const float *A, int lda, const float *B, int n, int k, int r0,
                               int r1, float *C, uint16_t *P, int maxval) {
    const __m512 hi = _mm512_set1_ps((float)maxval);
    for (int kb = 0; kb < k; kb += KC) {
        int kc = imin(KC, k - kb), first = kb == 0, last = kb + kc >= k;
        const float *Bk = B + (size_t)kb * (size_t)n;
        for (int j0 = 0; j0 < n; j0 += A5_NR) {
            int w = imin(A5_NR, n - j0);
            __mmask16 m0 = (__mmask16)(w >= 16 ? 0xFFFFu : (1u << w) - 1u);
            __mmask16 m1 = (__mmask16)(w >= 32 ? 0xFFFFu : w > 16 ? (1u << (w - 16)) - 1u : 0u);
            for (int i = r0; i < r1; i += A5_MR) {
                int mr = imin(A5_MR, r1 - i);
                const float *a[A5_MR];
                __m512 acc0[A5_MR], acc1[A5_MR];
#pragma GCC unroll 8
                for (int r = 0; r < A5_MR; r++) {
                    a[r] = A + (size_t)(i + imin(r, mr - 1)) * (size_t)lda + kb;
                    acc0[r] = acc1[r] = _mm512_setzero_ps();
                    if (!first && r < mr) {
                        const float *c = C + (size_t)(i + r) * (size_t)n + j0;
                        acc0[r] = _mm512_maskz_loadu_ps(m0, c);
                        acc1[r] = _mm512_maskz_loadu_ps(m1, c + 16);
                    }
                }
                /* Masked loads cost what plain ones do here, so one loop serves
                 * whole and partial panels; a panel of 16 columns or fewer
                 * skips the second vector (n = 170 ends in one of 10). */
                if (m1)
                    tile_avx512(a, Bk + j0, n, kc, 2, m0, m1, acc0, acc1);
                else
                    tile_avx512(a, Bk + j0, n, kc, 1, m0, m1, acc0, acc1);
#pragma GCC unroll 8
                for (int r = 0; r < A5_MR; r++) {
                    if (r >= mr) break;
                    size_t off = (size_t)(i + r) * (size_t)n + j0;
                    if (last && P) {
                        _mm512_mask_cvtusepi32_storeu_epi16(P + off, m0, px_avx512(acc0[r], hi));
                        _mm512_mask_cvtusepi32_storeu_epi16(P + off + 16, m1, px_avx512(acc1[r], hi));
                    } else {
                        _mm512_mask_storeu_ps(C + off, m0, acc0[r]);
                        _mm512_mask_storeu_ps(C + off + 16, m1, acc1[r]);
                    }
                }
            }
        }
    }
}

static int has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static int has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}
#endif /* SS_X86 */

/* ---- runtime dispatch ----------------------------------------------------- */

typedef struct isa {
    const char *name;
    rows_fn fn;
    int mr;
    int (*supported)(void);
} isa;

static int always(void) { return 1; }

/* Best first. */
static const isa g_isas[] = {
#ifdef SS_X86
    {"avx512", rows_avx512, A5_MR, has_avx512},
    {"avx2", rows_avx2, A2_MR, has_avx2},
#endif
    {"generic", rows_generic, G_MR, always},
};

static _Atomic(const isa *) g_isa;

static const isa *current(void) {
    const isa *p = atomic_load_explicit(&g_isa, memory_order_acquire);
    if (p) return p;
    /* Racing first callers compute the same answer; any of them may store it. */
    for (size_t i = 0; i < sizeof g_isas / sizeof g_isas[0]; i++)
        if (g_isas[i].supported()) {
            p = &g_isas[i];
            break;
        }
    atomic_store_explicit(&g_isa, p, memory_order_release);
    return p;
}

int ss_blocked_select(const char *name) {
    for (size_t i = 0; i < sizeof g_isas / sizeof g_isas[0]; i++) {
        const isa *p = &g_isas[i];
        if (name && strcmp(name, p->name) != 0) continue;
        if (!p->supported()) {
            if (!name) continue;
            return ss_fail(SS_EUNAVAIL, "this CPU lacks %s", name);
        }
        atomic_store_explicit(&g_isa, p, memory_order_release);
        return SS_OK;
    }
    return ss_fail(SS_EUNAVAIL, "no ISA path named %s", name ? name : "(best)");
}

const char *ss_blocked_isa(void) { return current()->name; }
int ss_blocked_kc(void) { return KC; }
int ss_blocked_mr(void) { return current()->mr; }

void ss_blocked_rows(const float *A, int lda, const float *B, int n, int k, int r0, int r1,
                     float *C, uint16_t *P, int maxval) {
    const isa *p = current();
    /* Row chunks keep the A block (MC x KC) in L2 while B panels are reused. */
    int mc = p->mr * 16;
    for (int i = r0; i < r1; i += mc) p->fn(A, lda, B, n, k, i, imin(i + mc, r1), C, P, maxval);
}

/* ---- the backend ---------------------------------------------------------- */

static int blocked_f32(const ss_factors *f, int k, float *C, ss_workspace *ws) {
    (void)ws;
    int rc = ss_kern_check(f, k);
    if (rc) return rc;
    ss_blocked_rows(f->U, f->rank, f->W, f->n, k, 0, f->m, C, NULL, 0);
    return SS_OK;
}

/* Fused: pixels come from the registers; the float buffer is only needed for
 * the partial sums of products deeper than KC. */
static int blocked_px(const ss_factors *f, int k, uint16_t *out, ss_workspace *ws) {
    int rc = ss_kern_check(f, k);
    if (rc) return rc;
    if (!out) return ss_fail(SS_EINVAL, "no output buffer");
    float *C = NULL;
    if (k > KC && !(C = ss_workspace_floats(ws, (size_t)f->m * (size_t)f->n)))
        return ws ? SS_ENOMEM : SS_EINVAL;
    ss_blocked_rows(f->U, f->rank, f->W, f->n, k, 0, f->m, C, out, ss_kern_maxval(f));
    return SS_OK;
}

const ss_backend ss_backend_blocked = {
    "blocked", "cpu", "cache-blocked, SIMD-vectorised C (the compiled/Numba variant)",
    ss_kern_cpu_available, blocked_px, blocked_f32};
