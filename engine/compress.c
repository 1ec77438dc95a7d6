/* compress.c - rank by quality target, factors quantised with steps that follow the singular
 * values and range coded, and lossless codecs for the original pixels (deflate, JPEG-LS) */
#include "engine/compress.h"
#include "util/error.h"

#include <cblas.h>
#include <charls/charls.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#ifdef SVDSLICE_HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

/* Quantised integers stay within +-2^20: a step is never finer than s_1 * 2^-20, and a
 * dequantised float32 value quantises back to the very same integer. */
#define QMAX (1 << 20)

/* ---- rank from the singular values ------------------------------------------ */

/* Error budget (sum of squared errors) of a PSNR target over m*n values. */
static double psnr_budget(int m, int n, double psnr, double peak) {
    return (double)m * (double)n * peak * peak / pow(10.0, psnr / 10.0);
}

/* tail[k] = sum_{i>=k} s_i^2 for k = 0..nsv (tail[nsv] = 0). */
static void tails(const float *S, int nsv, double *tail) {
    tail[nsv] = 0.0;
    for (int i = nsv - 1; i >= 0; i--) tail[i] = tail[i + 1] + (double)S[i] * (double)S[i];
}

static int rank_from_tails(const double *tail, int nsv, int m, int n, ss_target t, double peak, int round_px) {
    switch (t.kind) {
    case SS_TARGET_RANK: {
        int k = (int)t.value;
        return k < 1 ? 1 : k > nsv ? nsv : k;
    }
    case SS_TARGET_ENERGY:
        for (int k = 1; k <= nsv; k++)
            if (tail[0] <= 0.0 || 1.0 - tail[k] / tail[0] >= t.value - 1e-12) return k;
        return nsv;
    case SS_TARGET_PSNR: {
        double b = psnr_budget(m, n, t.value, peak);
        if (round_px && b > (double)m * n / 12.0) b -= (double)m * n / 12.0; /* pixel rounding's share */
        for (int k = 1; k <= nsv; k++)
            if (tail[k] <= b) return k;
        return nsv;
    }
    default:
        return nsv;
    }
}

int ss_rank_for_target(const float *S, int nsv, int m, int n, ss_target t, double peak, int round_px) {
    double *tail = malloc(sizeof(double) * ((size_t)nsv + 1));
    if (!tail) return nsv;
    tails(S, nsv, tail);
    int k = rank_from_tails(tail, nsv, m, n, t, peak, round_px);
    free(tail);
    return k;
}

/* ---- quantisation steps ------------------------------------------------------- */

/* Quantising u_p and v_p with step c/s_p adds about c^2 (m+n)/12 to ||A - A_k||^2 for every
 * component alike: that spreads the error evenly, which is what minimises the bits for a given
 * error (reverse water-filling): larger singular values get finer steps. */
static float comp_step(float c, float s) {
    if (!(s > 0)) return 1.0f;
    double st = (double)c / (double)s;
    return st > 1e30 ? 1e30f : st < 1e-30 ? 1e-30f : (float)st;
}

/* c for a quantisation error budget q over k components, never finer than s_1 * 2^-20. */
static float c_for_budget(double q, int k, int m, int n, float s1) {
    double c = q > 0 ? sqrt(12.0 * q / ((double)k * ((double)m + (double)n))) : 0.0;
    double floor_c = s1 > 0 ? (double)s1 / (double)QMAX : 1.0;
    if (!(c > floor_c)) c = floor_c;
    return (float)c;
}

float ss_default_qstep(const ss_factors *f) {
    const double mn = (double)f->m * (double)f->n;
    const double rms = f->S[0] > 0 ? (double)f->S[0] / sqrt(mn) / 4096.0 : 0.0;
    return c_for_budget(mn * rms * rms, f->rank, f->m, f->n, f->S[0]);
}

/* ---- range coder (LZMA's binary coder) ------------------------------------------ */

enum { PB = 11, PMOVE = 5, NCLS = 24, NCTX = 13, NUN = 32 };

typedef struct {
    unsigned char *buf;
    size_t len, cap;
    int oom;
} obuf;

static void ob_put(obuf *o, unsigned char c) {
    if (o->len == o->cap) {
        size_t nc = o->cap ? o->cap * 2 : 4096;
        unsigned char *nb = o->oom ? NULL : realloc(o->buf, nc);
        if (!nb) {
            o->oom = 1;
            return;
        }
        o->buf = nb;
        o->cap = nc;
    }
    o->buf[o->len++] = c;
}

typedef struct {
    uint64_t low;
    uint32_t range;
    uint8_t cache;
    uint64_t csize;
    obuf *o;
} rcenc;

static void rc_shift(rcenc *e) {
    if ((uint32_t)e->low < 0xFF000000u || (e->low >> 32) != 0) {
        uint8_t carry = (uint8_t)(e->low >> 32), t = e->cache;
        do {
            ob_put(e->o, (uint8_t)(t + carry));
            t = 0xFF;
        } while (--e->csize != 0);
        e->cache = (uint8_t)(e->low >> 24);
    }
    e->csize++;
    e->low = (e->low & 0x00FFFFFFu) << 8;
}

static void rc_norm(rcenc *e) {
    while (e->range < (1u << 24)) {
        e->range <<= 8;
        rc_shift(e);
    }
}

static void rc_bit(rcenc *e, uint16_t *p, int bit) {
    uint32_t bound = (e->range >> PB) * *p;
    if (!bit) {
        e->range = bound;
        *p += ((1u << PB) - *p) >> PMOVE;
    } else {
        e->low += bound;
        e->range -= bound;
        *p -= *p >> PMOVE;
    }
    rc_norm(e);
}

static void rc_direct(rcenc *e, int bit) {
    e->range >>= 1;
    if (bit) e->low += e->range;
    rc_norm(e);
}

typedef struct {
    const unsigned char *b;
    size_t len, pos;
    uint32_t range, code;
    int over;
} rcdec;

static uint8_t rd_byte(rcdec *d) {
    if (d->pos < d->len) return d->b[d->pos++];
    d->over = 1;
    return 0;
}

static void rd_norm(rcdec *d) {
    while (d->range < (1u << 24)) {
        d->range <<= 8;
        d->code = (d->code << 8) | rd_byte(d);
    }
}

static int rd_bit(rcdec *d, uint16_t *p) {
    uint32_t bound = (d->range >> PB) * *p;
    int bit;
    if (d->code < bound) {
        d->range = bound;
        *p += ((1u << PB) - *p) >> PMOVE;
        bit = 0;
    } else {
        d->code -= bound;
        d->range -= bound;
        *p -= *p >> PMOVE;
        bit = 1;
    }
    rd_norm(d);
    return bit;
}

static int rd_direct(rcdec *d) {
    d->range >>= 1;
    int bit = d->code >= d->range;
    if (bit) d->code -= d->range;
    rd_norm(d);
    return bit;
}

/* Adaptive probabilities: cls is the vector's expected magnitude (from its step), ctx the
 * previous value's bit length; a value is a zero flag, a sign, then Exp-Golomb. */
typedef struct {
    uint16_t zero[NCLS][NCTX];
    uint16_t un[NCLS][NCTX][NUN];
    uint16_t mant[NCLS][NUN];
} model;

static void model_init(model *M) {
    uint16_t *p = (uint16_t *)M;
    for (size_t i = 0; i < sizeof *M / sizeof *p; i++) p[i] = 1u << (PB - 1);
}

static int nbits(uint32_t a) { return a ? 32 - __builtin_clz(a) : 0; }

static int ctx_of(int32_t prev) {
    int b = nbits((uint32_t)(prev < 0 ? -prev : prev));
    return b >= NCTX ? NCTX - 1 : b;
}

/* The expected |q| of a unit vector of len values quantised with step, as a class 0..NCLS-1. */
static int cls_of(float step, size_t len) {
    double e = 1.0 / ((double)step * sqrt((double)len));
    int ex = 0;
    frexp(e, &ex); /* exact: the same class on every machine */
    ex += 4;
    return ex < 0 ? 0 : ex >= NCLS ? NCLS - 1 : ex;
}

static void put_val(rcenc *e, model *M, int cls, int ctx, int32_t r) {
    rc_bit(e, &M->zero[cls][ctx], r != 0);
    if (!r) return;
    rc_direct(e, r < 0);
    uint32_t a = (uint32_t)(r < 0 ? -(int64_t)r : r);
    int nb = nbits(a) - 1; /* a in [2^nb, 2^(nb+1)) */
    for (int i = 0; i < nb; i++) rc_bit(e, &M->un[cls][ctx][i], 1);
    rc_bit(e, &M->un[cls][ctx][nb], 0);
    if (nb > 0) {
        rc_bit(e, &M->mant[cls][nb], (int)((a >> (nb - 1)) & 1));
        for (int i = nb - 2; i >= 0; i--) rc_direct(e, (int)((a >> i) & 1));
    }
}

static int get_val(rcdec *d, model *M, int cls, int ctx, int32_t *r) {
    if (!rd_bit(d, &M->zero[cls][ctx])) {
        *r = 0;
        return 0;
    }
    int neg = rd_direct(d), nb = 0;
    while (rd_bit(d, &M->un[cls][ctx][nb]))
        if (++nb > 22) return -1; /* residuals stay under 2^22 */
    uint32_t a = 1u << nb;
    if (nb > 0) {
        a |= (uint32_t)rd_bit(d, &M->mant[cls][nb]) << (nb - 1);
        for (int i = nb - 2; i >= 0; i--) a |= (uint32_t)rd_direct(d) << i;
    }
    *r = neg ? -(int32_t)a : (int32_t)a;
    return 0;
}

/* ---- the factor section ------------------------------------------------------------ */

/* Vector p of U (stride = the row length of U) or of Vt, quantised with step. */
static int quantise(const float *x, size_t len, size_t stride, float step, int32_t *q) {
    for (size_t i = 0; i < len; i++) {
        double v = nearbyint((double)x[i * stride] / (double)step);
        if (!(fabs(v) <= QMAX)) return -1;
        q[i] = (int32_t)v;
    }
    return 0;
}

/* Delta coding pays for smooth vectors (the first components), not for noisy ones. */
static int wants_delta(const int32_t *q, size_t len) {
    int64_t raw = 0, dif = 0;
    for (size_t i = 0; i < len; i++) {
        raw += q[i] < 0 ? -(int64_t)q[i] : q[i];
        int64_t d = (int64_t)q[i] - (i ? q[i - 1] : 0);
        dif += d < 0 ? -d : d;
    }
    return dif < raw;
}

static void put_vec(rcenc *e, model *M, const int32_t *q, size_t len, int delta, int cls) {
    int32_t prev = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t r = delta ? q[i] - (i ? q[i - 1] : 0) : q[i];
        put_val(e, M, cls, ctx_of(prev), r);
        prev = r;
    }
}

/* Encodes components 0..k-1 of f (U row stride f->rank) with c. */
static int encode_k(const ss_factors *f, int k, float c, obuf *o) {
    const size_t m = (size_t)f->m, n = (size_t)f->n, K = (size_t)k;
    int32_t *q = malloc(sizeof(int32_t) * (m > n ? m : n));
    model *M = malloc(sizeof *M);
    if (!q || !M) {
        free(q);
        free(M);
        return ss_fail(SS_ENOMEM, "out of memory encoding factors");
    }
    model_init(M);
    /* steps and modes first, then the coded stream */
    size_t head = 5 * K;
    for (size_t i = 0; i < head; i++) ob_put(o, 0);
    rcenc e = {0, 0xFFFFFFFFu, 0, 1, o};
    int rc = SS_OK;
    for (size_t p = 0; p < K && rc == SS_OK; p++) {
        float st = comp_step(c, f->S[p]);
        uint32_t bits;
        memcpy(&bits, &st, 4);
        int mode = 0;
        for (int side = 0; side < 2; side++) {
            const size_t len = side ? n : m;
            const float *x = side ? f->Vt + p * n : f->U + p;
            if (quantise(x, len, side ? 1 : (size_t)f->rank, st, q)) {
                rc = ss_fail(SS_EINVAL, "factor value too large for its quantisation step");
                break;
            }
            int delta = wants_delta(q, len);
            mode |= delta << side;
            put_vec(&e, M, q, len, delta, cls_of(st, len));
        }
        if (!o->oom && o->buf) {
            for (int i = 0; i < 4; i++) o->buf[p * 4 + (size_t)i] = (unsigned char)(bits >> (8 * i));
            o->buf[4 * K + p] = (unsigned char)mode;
        }
    }
    for (int i = 0; i < 5; i++) rc_shift(&e);
    free(q);
    free(M);
    if (rc == SS_OK && o->oom) rc = ss_fail(SS_ENOMEM, "out of memory encoding factors");
    return rc;
}

int ss_factors_encode(const ss_factors *f, unsigned char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    float c = f->qstep > 0 ? f->qstep : ss_default_qstep(f);
    obuf o = {0};
    int rc = encode_k(f, f->rank, c, &o);
    if (rc) {
        free(o.buf);
        return rc;
    }
    *out = o.buf;
    *out_len = o.len;
    return SS_OK;
}

int ss_factors_decode(const unsigned char *buf, size_t len, ss_factors *f) {
    const size_t m = (size_t)f->m, n = (size_t)f->n, K = (size_t)f->rank;
    if (len < 5 * K + 5) return ss_fail(SS_ECORRUPT, ".svd: factor section too short");
    model *M = malloc(sizeof *M);
    if (!M) return ss_fail(SS_ENOMEM, "out of memory decoding factors");
    model_init(M);
    rcdec d = {buf, len, 5 * K, 0xFFFFFFFFu, 0, 0};
    for (int i = 0; i < 5; i++) d.code = (d.code << 8) | rd_byte(&d);
    int bad = 0;
    for (size_t p = 0; p < K && !bad; p++) {
        uint32_t bits = (uint32_t)buf[4 * p] | (uint32_t)buf[4 * p + 1] << 8 | (uint32_t)buf[4 * p + 2] << 16 |
                        (uint32_t)buf[4 * p + 3] << 24;
        float st;
        memcpy(&st, &bits, 4);
        int mode = buf[4 * K + p];
        if (!(isfinite(st) && st > 0) || mode > 3) {
            bad = 1;
            break;
        }
        for (int side = 0; side < 2 && !bad; side++) {
            const size_t vlen = side ? n : m;
            const int delta = (mode >> side) & 1, cls = cls_of(st, vlen);
            int32_t prev = 0, qv = 0;
            for (size_t i = 0; i < vlen; i++) {
                int32_t r;
                if (get_val(&d, M, cls, ctx_of(prev), &r) || d.over) {
                    bad = 1;
                    break;
                }
                prev = r;
                int64_t v = delta ? (int64_t)qv + r : r;
                if (v > QMAX || v < -QMAX) {
                    bad = 1;
                    break;
                }
                qv = (int32_t)v;
                float x = (float)((double)qv * (double)st);
                if (side) f->Vt[p * n + i] = x;
                else f->U[i * K + p] = x;
            }
        }
    }
    free(M);
    if (bad || d.over) return ss_fail(SS_ECORRUPT, ".svd: bad quantised factors");
    return SS_OK;
}

/* ---- fitting a target ------------------------------------------------------------ */

/* Components 0..k-1 of f quantised with c and dequantised: Uq (m x k) and Wq = diag(S) Vq. */
static int dequantised(const ss_factors *f, int k, float c, float *Uq, float *Vq) {
    const size_t m = (size_t)f->m, n = (size_t)f->n, R = (size_t)f->rank;
    for (size_t p = 0; p < (size_t)k; p++) {
        float st = comp_step(c, f->S[p]);
        for (size_t i = 0; i < m; i++) {
            double v = nearbyint((double)f->U[i * R + p] / (double)st);
            if (!(fabs(v) <= QMAX)) return -1;
            Uq[i * (size_t)k + p] = (float)((double)(int32_t)v * (double)st); /* as decoded: no -0 */
        }
        for (size_t j = 0; j < n; j++) {
            double v = nearbyint((double)f->Vt[p * n + j] / (double)st);
            if (!(fabs(v) <= QMAX)) return -1;
            Vq[p * n + j] = (float)((double)(int32_t)v * (double)st);
        }
    }
    return 0;
}

/* Sum of squared errors of what is served from U (m x k, row stride ldu) and W (k x n) against A. */
static double served_sse(const float *U, int ldu, const float *W, int k, int m, int n, const float *A, int maxval,
                         float *C) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, U, ldu, W, n, 0.0f, C, n);
    double sse = 0.0;
    const size_t mn = (size_t)m * (size_t)n;
    for (size_t i = 0; i < mn; i++) {
        double v = C[i];
        if (maxval > 0) { /* round half away from zero and clamp, as the kernels do */
            v = v < 0 ? 0 : v > maxval ? maxval : floor(v + 0.5);
        } else if (maxval < 0) { /* rounded, unclamped: a clamp to a range holding A only helps */
            v = v < 0 ? -floor(-v + 0.5) : floor(v + 0.5);
        }
        double d = v - (double)A[i];
        sse += d * d;
    }
    return sse;
}

static double psnr_of(double sse, int m, int n, double peak) {
    return sse > 0 ? 10.0 * log10(peak * peak * (double)m * (double)n / sse) : INFINITY;
}

/* Truncates f to k components in place (U's rows compacted). */
static void truncate_to(ss_factors *f, int k) {
    if (k >= f->rank) return;
    const size_t m = (size_t)f->m, R = (size_t)f->rank, K = (size_t)k;
    for (size_t i = 0; i < m; i++) memmove(f->U + i * K, f->U + i * R, sizeof(float) * K);
    f->rank = k;
}

int ss_compress_fit(ss_factors *f, const float *A, ss_target t, double peak, int maxval, int quantise,
                    double *psnr_out) {
    if (!f || !A || !(peak > 0) || f->rank < 1) return ss_fail(SS_EINVAL, "compress: bad arguments");
    const int m = f->m, n = f->n, nsv = f->nsv, R = f->rank;
    const size_t mn = (size_t)m * (size_t)n;
    double *tail = malloc(sizeof(double) * ((size_t)nsv + 1));
    float *C = malloc(sizeof(float) * mn);
    float *Uq = quantise ? malloc(sizeof(float) * (size_t)m * (size_t)R) : NULL;
    float *Wq = malloc(sizeof(float) * (size_t)R * (size_t)n);
    int rc = SS_OK;
    if (!tail || !C || !Wq || (quantise && !Uq)) {
        rc = ss_fail(SS_ENOMEM, "out of memory choosing the rank");
        goto done;
    }
    tails(f->S, nsv, tail);
    int k = rank_from_tails(tail, nsv, m, n, t, peak, maxval != 0);
    if (k > R) k = R;
    double sse = -1.0;
    float c = 0.0f;
    const double budget = t.kind == SS_TARGET_PSNR ? psnr_budget(m, n, t.value, peak) : 0.0;
    /* The kernels' float sums may round a few pixels the other way: keep 1% in hand. */
    const double limit = budget * 0.99;
    const double rounding = maxval != 0 ? (double)mn / 12.0 : 0.0;
    const double qbudget_floor = (double)mn * (peak / 4096.0) * (peak / 4096.0);

    if (!quantise) {
        for (;; k++) {
            if (t.kind != SS_TARGET_PSNR) break;
            sse = served_sse(f->U, R, f->W, k, m, n, A, maxval, C);
            if (sse <= limit || k >= R) break;
        }
    } else if (t.kind != SS_TARGET_PSNR) {
        /* No quality target: quantisation costs 1% of the truncation error, at least 1/4096 of peak RMS. */
        double q = 0.01 * tail[k];
        c = c_for_budget(q > qbudget_floor ? q : qbudget_floor, k, m, n, f->S[0]);
    } else {
        double b = budget > rounding * 2 ? budget - rounding : budget * 0.5;
        /* Candidates from the smallest rank up: more components leave more room for coarser steps;
         * the smallest encoding wins. */
        static const double grow[] = {0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.55, 0.75, 1.0};
        size_t best = (size_t)-1;
        int last = -1;
        for (size_t g = 0; g < sizeof grow / sizeof *grow; g++) {
            int kk = k + (int)ceil(grow[g] * k);
            if (kk > R) kk = R;
            if (kk == last) continue;
            last = kk;
            double q = b - tail[kk];
            if (q <= 0) continue;
            float cc = c_for_budget(q, kk, m, n, f->S[0]);
            obuf o = {0};
            int erc = encode_k(f, kk, cc, &o);
            free(o.buf);
            if (erc == SS_ENOMEM) {
                rc = erc;
                goto done;
            }
            if (erc == SS_OK && o.len < best) {
                best = o.len;
                c = cc;
                k = kk;
            }
        }
        if (best == (size_t)-1) c = c_for_budget(b * 0.5, k, m, n, f->S[0]);
        /* Check on what will be served; finer steps, then more components, until it holds. */
        for (int tries = 0;; tries++) {
            if (dequantised(f, k, c, Uq, Wq) == 0) {
                for (int p = 0; p < k; p++)
                    for (int j = 0; j < n; j++) Wq[(size_t)p * n + j] *= f->S[p];
                sse = served_sse(Uq, k, Wq, k, m, n, A, maxval, C);
                if (sse <= limit) break;
            }
            float floor_c = f->S[0] > 0 ? f->S[0] / (float)QMAX : 1.0f;
            if (tries % 4 == 3 && k < R) { /* raise k, with the budget that leaves */
                k++;
                double q = b - tail[k];
                c = c_for_budget(q > 0 ? q : b * 0.01, k, m, n, f->S[0]);
            } else if (c > floor_c) {
                c *= 0.7f;
                if (c < floor_c) c = floor_c;
            } else if (k < R) {
                k++;
            } else {
                break; /* full rank at the finest step: the best there is */
            }
        }
        /* The error model counts every value's full step^2/12, but small values quantise to 0
         * with less: coarser steps usually still hold. Take them while they do. */
        for (int up = 0; up < 12 && sse <= limit; up++) {
            float cc = c * 1.12f;
            if (dequantised(f, k, cc, Uq, Wq) != 0) break;
            for (int p = 0; p < k; p++)
                for (int j = 0; j < n; j++) Wq[(size_t)p * n + j] *= f->S[p];
            double s2 = served_sse(Uq, k, Wq, k, m, n, A, maxval, C);
            if (s2 > limit) break;
            c = cc;
        }
    }

    truncate_to(f, k);
    if (quantise) {
        if (dequantised(f, k, c, Uq, Wq) != 0) {
            rc = ss_fail(SS_EINVAL, "factor value too large for its quantisation step");
            goto done;
        }
        memcpy(f->U, Uq, sizeof(float) * (size_t)m * (size_t)k);
        memcpy(f->Vt, Wq, sizeof(float) * (size_t)k * (size_t)n);
        f->qstep = c;
    }
    ss_factors_update_w(f);
    if (psnr_out) *psnr_out = psnr_of(served_sse(f->U, k, f->W, k, m, n, A, maxval, C), m, n, peak);
done:
    free(tail);
    free(C);
    free(Uq);
    free(Wq);
    return rc;
}

/* ---- original pixels: PNG filters + deflate ----------------------------------------- */

static int paeth(int a, int b, int c) {
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return (pa <= pb && pa <= pc) ? a : pb <= pc ? b : c;
}

/* Filter type t of row `cur` (prev = the row above or zeros), bpp bytes per sample. */
static void filter_row(int t, const unsigned char *cur, const unsigned char *prev, size_t rb, int bpp,
                       unsigned char *out) {
    for (size_t i = 0; i < rb; i++) {
        int a = i >= (size_t)bpp ? cur[i - bpp] : 0, b = prev[i], c = i >= (size_t)bpp ? prev[i - bpp] : 0;
        int pred = t == 0 ? 0 : t == 1 ? a : t == 2 ? b : t == 3 ? (a + b) / 2 : paeth(a, b, c);
        out[i] = (unsigned char)(cur[i] - pred);
    }
}

static void unfilter_row(int t, unsigned char *cur, const unsigned char *prev, size_t rb, int bpp) {
    for (size_t i = 0; i < rb; i++) {
        int a = i >= (size_t)bpp ? cur[i - bpp] : 0, b = prev[i], c = i >= (size_t)bpp ? prev[i - bpp] : 0;
        int pred = t == 0 ? 0 : t == 1 ? a : t == 2 ? b : t == 3 ? (a + b) / 2 : paeth(a, b, c);
        cur[i] = (unsigned char)(cur[i] + pred);
    }
}

static int deflate_encode(const uint16_t *px, int m, int n, int bits, unsigned char **out, size_t *out_len) {
    const int bpp = bits / 8;
    const size_t rb = (size_t)n * (size_t)bpp, flen = (size_t)m * (rb + 1);
    unsigned char *raw = malloc(2 * rb + flen + 5 * rb);
    if (!raw) return ss_fail(SS_ENOMEM, "out of memory compressing the original");
    unsigned char *prev = raw, *cur = raw + rb, *filt = cur + rb, *cand = filt + flen;
    memset(prev, 0, rb);
    for (int y = 0; y < m; y++) {
        for (int x = 0; x < n; x++) { /* big-endian samples, as PNG */
            uint16_t v = px[(size_t)y * n + x];
            if (bpp == 2) {
                cur[2 * (size_t)x] = (unsigned char)(v >> 8);
                cur[2 * (size_t)x + 1] = (unsigned char)v;
            } else {
                cur[x] = (unsigned char)v;
            }
        }
        /* PNG's heuristic: the filter whose bytes, as signed, sum smallest */
        int best = 0;
        long long best_sum = -1;
        for (int t = 0; t < 5; t++) {
            filter_row(t, cur, prev, rb, bpp, cand + (size_t)t * rb);
            long long s = 0;
            for (size_t i = 0; i < rb; i++) s += abs((int)(signed char)cand[(size_t)t * rb + i]);
            if (best_sum < 0 || s < best_sum) {
                best_sum = s;
                best = t;
            }
        }
        unsigned char *row = filt + (size_t)y * (rb + 1);
        row[0] = (unsigned char)best;
        memcpy(row + 1, cand + (size_t)best * rb, rb);
        memcpy(prev, cur, rb);
    }
    size_t cap = compressBound((uLong)flen) + 64;
    unsigned char *z = malloc(cap);
    size_t zlen = 0;
    int rc = SS_OK;
    if (!z) {
        rc = ss_fail(SS_ENOMEM, "out of memory compressing the original");
    } else {
#ifdef SVDSLICE_HAVE_LIBDEFLATE
        struct libdeflate_compressor *c = libdeflate_alloc_compressor(12);
        zlen = c ? libdeflate_zlib_compress(c, filt, flen, z, cap) : 0;
        libdeflate_free_compressor(c);
#else
        uLongf zl = (uLongf)cap;
        zlen = compress2(z, &zl, filt, (uLong)flen, 9) == Z_OK ? (size_t)zl : 0;
#endif
        if (!zlen) rc = ss_fail(SS_ENOMEM, "cannot deflate the original");
    }
    free(raw);
    if (rc) {
        free(z);
        return rc;
    }
    *out = z;
    *out_len = zlen;
    return SS_OK;
}

static int deflate_decode(const unsigned char *buf, size_t len, int m, int n, int bits, uint16_t *px) {
    const int bpp = bits / 8;
    const size_t rb = (size_t)n * (size_t)bpp, flen = (size_t)m * (rb + 1);
    unsigned char *filt = malloc(flen + rb);
    if (!filt) return ss_fail(SS_ENOMEM, "out of memory decoding the original");
    uLongf dl = (uLongf)flen;
    int zrc = uncompress(filt, &dl, buf, (uLong)len);
    if (zrc != Z_OK || dl != flen) {
        free(filt);
        return zrc == Z_MEM_ERROR ? ss_fail(SS_ENOMEM, "out of memory inflating the original")
                                  : ss_fail(SS_ECORRUPT, ".svd: the original pixels do not inflate");
    }
    unsigned char *zero = filt + flen;
    memset(zero, 0, rb);
    for (int y = 0; y < m; y++) {
        unsigned char *row = filt + (size_t)y * (rb + 1);
        if (row[0] > 4) {
            free(filt);
            return ss_fail(SS_ECORRUPT, ".svd: bad filter type in the original");
        }
        unfilter_row(row[0], row + 1, y ? row - rb : zero, rb, bpp);
        for (int x = 0; x < n; x++)
            px[(size_t)y * n + x] =
                bpp == 2 ? (uint16_t)(row[1 + 2 * (size_t)x] << 8 | row[2 + 2 * (size_t)x]) : row[1 + x];
    }
    free(filt);
    return SS_OK;
}

/* ---- original pixels: JPEG-LS (CharLS) -------------------------------------------- */

static int jpegls_encode(const uint16_t *px, int m, int n, int bits, unsigned char **out, size_t *out_len) {
    const size_t mn = (size_t)m * (size_t)n;
    unsigned char *src8 = NULL;
    const void *src = px;
    size_t src_len = mn * 2;
    if (bits == 8) {
        if (!(src8 = malloc(mn))) return ss_fail(SS_ENOMEM, "out of memory compressing the original");
        for (size_t i = 0; i < mn; i++) src8[i] = (unsigned char)px[i];
        src = src8;
        src_len = mn;
    }
    charls_jpegls_encoder *e = charls_jpegls_encoder_create();
    charls_frame_info fi = {(uint32_t)n, (uint32_t)m, bits, 1};
    size_t cap = 0, wrote = 0;
    unsigned char *dst = NULL;
    int ok = e && charls_jpegls_encoder_set_frame_info(e, &fi) == 0 &&
             charls_jpegls_encoder_get_estimated_destination_size(e, &cap) == 0 &&
             (cap = cap > 2 * src_len + 4096 ? cap : 2 * src_len + 4096) && (dst = malloc(cap)) &&
             charls_jpegls_encoder_set_destination_buffer(e, dst, cap) == 0 &&
             charls_jpegls_encoder_encode_from_buffer(e, src, src_len, 0) == 0 &&
             charls_jpegls_encoder_get_bytes_written(e, &wrote) == 0;
    charls_jpegls_encoder_destroy(e);
    free(src8);
    if (!ok) {
        free(dst);
        return ss_fail(SS_ENOMEM, "JPEG-LS encoding of the original failed");
    }
    *out = dst;
    *out_len = wrote;
    return SS_OK;
}

static int jpegls_decode(const unsigned char *buf, size_t len, int m, int n, int bits, uint16_t *px) {
    const size_t mn = (size_t)m * (size_t)n, want = mn * (size_t)(bits / 8);
    charls_jpegls_decoder *d = charls_jpegls_decoder_create();
    charls_frame_info fi;
    size_t need = 0;
    unsigned char *dst = NULL;
    int rc = SS_OK;
    if (!d) return ss_fail(SS_ENOMEM, "out of memory decoding the original");
    /* the frame must be what the header says before anything is decoded */
    if (charls_jpegls_decoder_set_source_buffer(d, buf, len) != 0 || charls_jpegls_decoder_read_header(d) != 0 ||
        charls_jpegls_decoder_get_frame_info(d, &fi) != 0 || fi.width != (uint32_t)n || fi.height != (uint32_t)m ||
        fi.bits_per_sample != bits || fi.component_count != 1 ||
        charls_jpegls_decoder_get_destination_size(d, 0, &need) != 0 || need != want) {
        rc = ss_fail(SS_ECORRUPT, ".svd: the original's JPEG-LS stream does not match its header");
    } else if (!(dst = malloc(want))) {
        rc = ss_fail(SS_ENOMEM, "out of memory decoding the original");
    } else if (charls_jpegls_decoder_decode_to_buffer(d, dst, want, 0) != 0) {
        rc = ss_fail(SS_ECORRUPT, ".svd: the original's JPEG-LS stream does not decode");
    } else {
        const unsigned maxv = (1u << bits) - 1;
        for (size_t i = 0; i < mn && rc == SS_OK; i++) {
            unsigned v = bits == 8 ? dst[i] : ((const uint16_t *)(const void *)dst)[i];
            if (v > maxv) rc = ss_fail(SS_ECORRUPT, ".svd: original sample above %u", maxv);
            px[i] = (uint16_t)v;
        }
    }
    free(dst);
    charls_jpegls_decoder_destroy(d);
    return rc;
}

int ss_orig_encode(const uint16_t *px, int m, int n, int bits, int codec, unsigned char **out, size_t *out_len,
                   int *codec_out) {
    *out = NULL;
    *out_len = 0;
    if (m < 1 || n < 1 || (bits != 8 && bits != 16) || codec < 0 || codec > SS_ORIG_JPEGLS)
        return ss_fail(SS_EINVAL, "cannot compress a %dx%d %d-bit original", n, m, bits);
    unsigned char *a = NULL, *b = NULL;
    size_t al = 0, bl = 0;
    int rc = SS_OK;
    if (codec != SS_ORIG_JPEGLS) rc = deflate_encode(px, m, n, bits, &a, &al);
    if (rc == SS_OK && codec != SS_ORIG_DEFLATE) {
        rc = jpegls_encode(px, m, n, bits, &b, &bl);
        if (rc && codec == 0 && a) rc = SS_OK; /* CharLS refused it: deflate alone */
    }
    if (rc) {
        free(a);
        free(b);
        return rc;
    }
    if (a && (!b || al <= bl)) {
        free(b);
        *out = a;
        *out_len = al;
        *codec_out = SS_ORIG_DEFLATE;
    } else {
        free(a);
        *out = b;
        *out_len = bl;
        *codec_out = SS_ORIG_JPEGLS;
    }
    return SS_OK;
}

int ss_orig_decode(const unsigned char *buf, size_t len, int codec, int m, int n, int bits, uint16_t *px) {
    if (codec == SS_ORIG_DEFLATE) return deflate_decode(buf, len, m, n, bits, px);
    if (codec == SS_ORIG_JPEGLS) return jpegls_decode(buf, len, m, n, bits, px);
    return ss_fail(SS_ECORRUPT, ".svd: unknown codec %d for the original", codec);
}
