/* test_gpu_math.c - the GPU kernels' tiling, index, batch-packing and pixel arithmetic, checked on the host */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kernels.h"
#include "gpu/gpu_math.h"
#include "tests/util/testutil.h"

/* Awkward shapes: 1-pixel, thinner than a tile, one off a tile multiple. */
static const int k_shapes[][2] = {{1, 1},   {1, 37},  {37, 1},  {31, 33}, {32, 32}, {33, 31},
                                  {64, 65}, {256, 170}, {217, 181}, {7, 300}, {300, 7}};
#define N_SHAPES (int)(sizeof k_shapes / sizeof k_shapes[0])

/* f's factors in the device layout (ss_gm_factor_layout), the pads filled
 * with NaN so that a read of a pad shows in the pixels; sets the job's U, W,
 * ldu, ldw. Returns the buffer (free it). */
static float *device_layout(const ss_factors *f, ss_gm_job *jb) {
    ss_gm_layout l = ss_gm_factor_layout(f->m, f->n, f->rank);
    float *d = malloc(l.floats * sizeof *d);
    assert_non_null(d);
    for (size_t i = 0; i < l.floats; i++) d[i] = NAN;
    for (int i = 0; i < f->m; i++)
        memcpy(d + (size_t)i * l.ldu, f->U + (size_t)i * f->rank, (size_t)f->rank * sizeof(float));
    for (int p = 0; p < f->rank; p++)
        memcpy(d + l.w_off + (size_t)p * l.ldw, f->W + (size_t)p * f->n, (size_t)f->n * sizeof(float));
    jb->U = d;
    jb->W = d + l.w_off;
    jb->ldu = l.ldu;
    jb->ldw = l.ldw;
    return d;
}

/* Every output pixel is written by exactly one (tile, thread, i, j) of the
 * kernel's walk, and no write lands outside the matrix. */
static void test_tiles_cover_each_pixel_once(void **state) {
    (void)state;
    for (int s = 0; s < N_SHAPES; s++) {
        int m = k_shapes[s][0], n = k_shapes[s][1];
        unsigned char *hits = calloc((size_t)m * n, 1);
        assert_non_null(hits);
        long long tiles = ss_gm_tiles(m, n);
        for (long long t = 0; t < tiles; t++) {
            int r0, c0;
            ss_gm_tile_origin(t, n, &r0, &c0);
            assert_true(r0 >= 0 && r0 < m && c0 >= 0 && c0 < n); /* no empty tile */
            for (int ty = 0; ty < SS_GM_TY; ty++)
                for (int tx = 0; tx < SS_GM_TX; tx++)
                    for (int i = 0; i < SS_GM_RM; i++)
                        for (int j = 0; j < SS_GM_RN; j++) {
                            int row = ss_gm_thread_row(r0, ty, i), col = ss_gm_thread_col(c0, tx, j);
                            assert_true(row >= r0 && row < r0 + SS_GM_TM);
                            assert_true(col >= c0 && col < c0 + SS_GM_TN);
                            if (row < m && col < n) hits[(size_t)row * n + col]++;
                        }
        }
        for (size_t p = 0; p < (size_t)m * n; p++) assert_int_equal(hits[p], 1);
        free(hits);
    }
}

/* The shared-memory loads fill each U and W slab exactly once. */
static void test_slab_loads_cover_tile_once(void **state) {
    (void)state;
    int u[SS_GM_TM][SS_GM_TK], w[SS_GM_TK][SS_GM_TN];
    memset(u, 0, sizeof u);
    memset(w, 0, sizeof w);
    for (int lin = 0; lin < SS_GM_THREADS; lin++) {
        for (int e = 0; e < SS_GM_LOADS_U; e++) {
            int r, k;
            ss_gm_load_u(lin, e, &r, &k);
            assert_true(r >= 0 && r < SS_GM_TM && k >= 0 && k < SS_GM_TK);
            u[r][k]++;
        }
        for (int e = 0; e < SS_GM_LOADS_W; e++) {
            int k, c;
            ss_gm_load_w(lin, e, &k, &c);
            assert_true(k >= 0 && k < SS_GM_TK && c >= 0 && c < SS_GM_TN);
            w[k][c]++;
        }
    }
    for (int r = 0; r < SS_GM_TM; r++)
        for (int k = 0; k < SS_GM_TK; k++) assert_int_equal(u[r][k], 1);
    for (int k = 0; k < SS_GM_TK; k++)
        for (int c = 0; c < SS_GM_TN; c++) assert_int_equal(w[k][c], 1);
}

/* Packing a mixed batch: tiles follow one another, every flat tile maps
 * back to its own job, output regions are aligned, disjoint and in bounds. */
static void test_batch_packing(void **state) {
    (void)state;
    ss_gm_job jobs[N_SHAPES * 2];
    int nj = 0;
    for (int s = 0; s < N_SHAPES; s++)
        for (int b = 1; b <= 2; b++) {
            memset(&jobs[nj], 0, sizeof jobs[nj]);
            jobs[nj].m = k_shapes[s][0];
            jobs[nj].n = k_shapes[s][1];
            jobs[nj].out_bytes = b;
            nj++;
        }
    size_t total = 0;
    long long tiles = ss_gm_pack(jobs, nj, &total);
    long long expect_tiles = 0;
    for (int j = 0; j < nj; j++) expect_tiles += (long long)((jobs[j].m + 31) / 32) * ((jobs[j].n + 31) / 32);
    assert_true(tiles == expect_tiles);
    for (int j = 0; j < nj; j++) {
        size_t bytes = (size_t)jobs[j].m * jobs[j].n * jobs[j].out_bytes;
        assert_int_equal(jobs[j].out_off % SS_GM_OUT_ALIGN, 0);
        assert_true(jobs[j].out_off + bytes <= total);
        if (j + 1 < nj) {
            assert_true(jobs[j].out_off + bytes <= jobs[j + 1].out_off);
            assert_true(jobs[j + 1].tile0 == jobs[j].tile0 + ss_gm_tiles(jobs[j].m, jobs[j].n));
        }
    }
    assert_true(jobs[0].tile0 == 0);
    for (long long t = 0; t < tiles; t++) {
        int j = ss_gm_find_job(jobs, nj, t);
        assert_true(t >= jobs[j].tile0 && t < jobs[j].tile0 + ss_gm_tiles(jobs[j].m, jobs[j].n));
    }
    /* One job: everything maps to it. */
    assert_int_equal(ss_gm_find_job(jobs, 1, 0), 0);
}

/* The fused conversion equals the engine's ss_pixels_from_float on edge
 * values of both depths. */
static void test_pixel_matches_engine(void **state) {
    (void)state;
    const float edge[] = {-INFINITY, -1e30f, -1.0f, -0.5f, -0.49999997f, -0.0f, 0.0f, 1e-30f,
                          0.49999997f, 0.5f, 0.50000006f, 1.0f, 1.5f, 2.5f, 127.5f, 253.49998f,
                          254.5f, 254.50002f, 254.99998f, 255.0f, 255.49998f, 255.5f, 256.0f,
                          32767.5f, 65534.5f, 65534.496f, 65535.0f, 65535.5f, 70000.0f, 1e30f,
                          INFINITY, NAN, FLT_MAX, FLT_MIN};
    const int nedge = (int)(sizeof edge / sizeof edge[0]);
    const int maxvals[] = {255, 65535};
    for (int mv = 0; mv < 2; mv++) {
        uint16_t ref[64];
        ss_pixels_from_float(edge, (size_t)nedge, maxvals[mv], ref);
        for (int i = 0; i < nedge; i++) {
            uint16_t got = ss_gm_pixel(edge[i], maxvals[mv]);
            if (got != ref[i]) fail_msg("value %.9g maxval %d: gpu %u, engine %u", (double)edge[i], maxvals[mv], got, ref[i]);
        }
    }
    /* And a dense sweep of halves and their float neighbours. */
    for (int v = -2; v <= 300; v++) {
        float x[3];
        x[1] = (float)v + 0.5f;
        x[0] = nextafterf(x[1], -INFINITY);
        x[2] = nextafterf(x[1], INFINITY);
        uint16_t ref[3];
        ss_pixels_from_float(x, 3, 255, ref);
        for (int i = 0; i < 3; i++) assert_int_equal(ss_gm_pixel(x[i], 255), ref[i]);
    }
}

/* Runs the cuda kernel's phases on the host, block by block and thread by
 * thread with the kernel's barriers in between, over a packed batch. */
static void simulate_recon(ss_gm_job *jobs, int nj, long long tiles) {
    static float acc[SS_GM_THREADS][SS_GM_RM][SS_GM_RN];
    static ss_gm_uslab Us;
    static ss_gm_wslab Ws;
    for (long long t = 0; t < tiles; t++) {
        const ss_gm_job *jb = &jobs[ss_gm_find_job(jobs, nj, t)];
        int r0, c0;
        ss_gm_tile_origin(t - jb->tile0, jb->n, &r0, &c0);
        memset(acc, 0, sizeof acc);
        for (int k0 = 0; k0 < jb->k; k0 += SS_GM_TK) {
            for (int lin = 0; lin < SS_GM_THREADS; lin++) ss_gm_stage(jb, r0, c0, k0, lin, Us, Ws);
            for (int lin = 0; lin < SS_GM_THREADS; lin++)
                ss_gm_accumulate(lin % SS_GM_TX, lin / SS_GM_TX, (const float(*)[SS_GM_TM + SS_GM_UPAD])Us,
                                 (const float(*)[SS_GM_TN])Ws, acc[lin]);
        }
        for (int lin = 0; lin < SS_GM_THREADS; lin++) ss_gm_store(jb, r0, c0, lin % SS_GM_TX, lin / SS_GM_TX, acc[lin]);
    }
}

/* The cuda kernel's arithmetic (staging, accumulation, fused conversion to
 * uint8/uint16) over a mixed batch of shapes, depths and k matches the
 * float64 reference within 1 level; the cublas conversion kernel's walk
 * turns a float product into exactly ss_pixels_from_float's pixels. */
static void test_kernel_phases_match_reference(void **state) {
    (void)state;
    enum { NJ = 7 };
    static const int sh[NJ][4] = {/* m, n, k, bits */
                                  {1, 1, 1, 8},    {37, 20, 17, 16}, {64, 65, 33, 8}, {33, 31, 31, 16},
                                  {256, 170, 50, 8}, {7, 300, 7, 16}, {100, 3, 2, 8}};
    ss_factors *fs[NJ];
    ss_gm_job jobs[NJ];
    float *dev[NJ];
    for (int j = 0; j < NJ; j++) {
        int m = sh[j][0], n = sh[j][1], r = m < n ? m : n;
        fs[j] = tu_random_factors(m, n, r, sh[j][3], 40 + j);
        assert_non_null(fs[j]);
        memset(&jobs[j], 0, sizeof jobs[j]);
        dev[j] = device_layout(fs[j], &jobs[j]);
        jobs[j].m = m;
        jobs[j].n = n;
        jobs[j].ldc = ss_gm_ldc(n);
        jobs[j].k = sh[j][2];
        jobs[j].maxval = sh[j][3] == 8 ? 255 : 65535;
        jobs[j].out_bytes = sh[j][3] / 8;
    }
    size_t total = 0;
    long long tiles = ss_gm_pack(jobs, NJ, &total);
    unsigned char *stage = malloc(total);
    assert_non_null(stage);
    memset(stage, 0xA5, total);
    for (int j = 0; j < NJ; j++) jobs[j].out = stage + jobs[j].out_off;
    simulate_recon(jobs, NJ, tiles);
    for (int j = 0; j < NJ; j++) {
        const ss_factors *f = fs[j];
        size_t px = (size_t)f->m * f->n;
        double *C = malloc(px * sizeof *C);
        float *Cf = malloc(px * sizeof *Cf), *Cp = malloc(ss_gm_c_floats(f->m, f->n) * sizeof *Cp);
        uint16_t *want = malloc(px * sizeof *want);
        assert_non_null(Cp);
        assert_non_null(C);
        assert_non_null(Cf);
        assert_non_null(want);
        ss_reference_f64(f, jobs[j].k, C);
        for (size_t p = 0; p < px; p++) {
            double r = round(C[p]);
            r = r < 0 ? 0 : r > jobs[j].maxval ? jobs[j].maxval : r;
            int got = jobs[j].out_bytes == 1 ? ((unsigned char *)jobs[j].out)[p] : ((uint16_t *)jobs[j].out)[p];
            if (abs(got - (int)r) > 1) fail_msg("job %d pixel %zu: kernel %d, reference %.0f", j, p, got, r);
            Cf[p] = (float)C[p];
        }
        /* The conversion kernel's walk over the same tiles, from the product
         * in its padded layout (row stride ldc, pads NaN). */
        ss_pixels_from_float(Cf, px, jobs[j].maxval, want);
        for (size_t q = 0; q < ss_gm_c_floats(f->m, f->n); q++) Cp[q] = NAN;
        for (int i = 0; i < f->m; i++)
            memcpy(Cp + (size_t)i * jobs[j].ldc, Cf + (size_t)i * f->n, (size_t)f->n * sizeof(float));
        memset(jobs[j].out, 0xA5, px * (size_t)jobs[j].out_bytes);
        jobs[j].C = Cp;
        for (long long t = 0; t < ss_gm_tiles(f->m, f->n); t++) {
            int r0, c0;
            ss_gm_tile_origin(t, f->n, &r0, &c0);
            for (int lin = 0; lin < SS_GM_THREADS; lin++) ss_gm_convert(&jobs[j], r0, c0, lin % SS_GM_TX, lin / SS_GM_TX);
        }
        for (size_t p = 0; p < px; p++) {
            int got = jobs[j].out_bytes == 1 ? ((unsigned char *)jobs[j].out)[p] : ((uint16_t *)jobs[j].out)[p];
            assert_int_equal(got, want[p]);
        }
        jobs[j].C = NULL;
        free(C);
        free(Cf);
        free(Cp);
        free(want);
    }
    free(stage);
    for (int j = 0; j < NJ; j++) {
        ss_factors_free(fs[j]);
        free(dev[j]);
    }
}

/* cuBLAS's column-major sgemm, N/N, as the reference BLAS defines it:
 * C[r + c*ldc] = sum_p A[r + p*lda] * B[p + c*ldb] for r < rows, c < cols.
 * It also checks the argument rules cuBLAS enforces (an INVALID_VALUE there
 * would fail every batch of that shape). */
static void colmajor_sgemm_nn(int rows, int cols, int k, const float *A, int lda, const float *B, int ldb,
                              float *C, int ldc) {
    assert_true(rows >= 1 && cols >= 1 && k >= 1);
    assert_true(lda >= rows && ldb >= k && ldc >= rows);
    for (int c = 0; c < cols; c++)
        for (int r = 0; r < rows; r++) {
            double acc = 0;
            for (int p = 0; p < k; p++) acc += (double)A[r + (size_t)p * lda] * B[p + (size_t)c * ldb];
            C[r + (size_t)c * ldc] = (float)acc;
        }
}

/* The cublas backend's calls, emulated: jobs grouped by shape, the pointer
 * arrays as uploaded, one batched column-major GEMM per group with
 * ss_gm_gemm_args; every job's C (row-major m x n) must be its own U[:, :k]
 * W[:k, :] (k < rank included, so ldu != k), each job in exactly one group. */
static void test_cublas_calls_emulated(void **state) {
    (void)state;
    enum { NJ = 12 };
    static const int sh[NJ][3] = {/* m, n, k: repeats form groups */
                                  {256, 170, 50}, {31, 33, 5},   {256, 170, 50}, {1, 1, 1},
                                  {40, 1, 1},     {256, 170, 50}, {31, 33, 5},  {1, 40, 1},
                                  {256, 170, 17}, {65, 64, 64},  {31, 33, 31}, {1, 1, 1}};
    ss_factors *fs[NJ];
    ss_gm_job jobs[NJ];
    float *C[NJ], *dev[NJ];
    for (int j = 0; j < NJ; j++) {
        int m = sh[j][0], n = sh[j][1], r = m < n ? m : n;
        fs[j] = tu_random_factors(m, n, r, 8, 900 + j);
        assert_non_null(fs[j]);
        C[j] = malloc(ss_gm_c_floats(m, n) * sizeof(float));
        assert_non_null(C[j]);
        for (size_t p = 0; p < ss_gm_c_floats(m, n); p++) C[j][p] = NAN;
        memset(&jobs[j], 0, sizeof jobs[j]);
        dev[j] = device_layout(fs[j], &jobs[j]);
        jobs[j].C = C[j];
        jobs[j].m = m;
        jobs[j].n = n;
        jobs[j].ldc = ss_gm_ldc(n);
        jobs[j].k = sh[j][2];
    }
    ss_gm_gkey keys[NJ];
    const float *ptrs[3 * NJ];
    ss_gm_group(jobs, NJ, keys, ptrs);
    int seen[NJ] = {0}, groups = 0, batched = 0;
    for (int s = 0; s < NJ;) {
        int e = ss_gm_group_end(keys, NJ, s);
        groups++;
        if (e - s > 1) batched++;
        ss_gm_gemm g = ss_gm_gemm_args(&jobs[keys[s].j]);
        for (int q = s; q < e; q++) { /* what cublasSgemmBatched does with each pointer triple */
            const ss_gm_job *jb = &jobs[keys[q].j];
            seen[keys[q].j]++;
            assert_true(jb->m == jobs[keys[s].j].m && jb->n == jobs[keys[s].j].n && jb->k == g.k &&
                        jb->ldu == g.ldb && jb->ldw == g.lda && jb->ldc == g.ldc);
            /* cuBLAS gets 256-byte-aligned matrices and 16-byte rows (the
             * test's buffers are malloc'd: check the offsets' alignment). */
            assert_int_equal(g.lda % SS_GM_LD_ALIGN, 0);
            assert_int_equal(g.ldb % SS_GM_LD_ALIGN, 0);
            assert_int_equal(g.ldc % SS_GM_LD_ALIGN, 0);
            assert_int_equal(((size_t)(ptrs[q] - jb->U) * sizeof(float)) % SS_GM_BASE_ALIGN, 0);
            colmajor_sgemm_nn(g.rows, g.cols, g.k, ptrs[q], g.lda, ptrs[NJ + q], g.ldb, (float *)ptrs[2 * NJ + q],
                              g.ldc);
        }
        s = e;
    }
    assert_int_equal(groups, 8);
    assert_int_equal(batched, 3); /* 256x170x50 x3, 31x33x5 x2, 1x1x1 x2 */
    for (int j = 0; j < NJ; j++) {
        assert_int_equal(seen[j], 1);
        size_t px = (size_t)jobs[j].m * jobs[j].n;
        double *ref = malloc(px * sizeof *ref);
        assert_non_null(ref);
        ss_reference_f64(fs[j], jobs[j].k, ref);
        for (size_t p = 0; p < px; p++) {
            float got = C[j][(p / jobs[j].n) * jobs[j].ldc + p % jobs[j].n];
            if (!(fabs(got - ref[p]) <= 1e-3 * (1.0 + fabs(ref[p]))))
                fail_msg("job %d (%dx%d k=%d) element %zu: %g, reference %g", j, jobs[j].m, jobs[j].n, jobs[j].k,
                         p, (double)got, ref[p]);
        }
        free(ref);
        free(C[j]);
        free(dev[j]);
        ss_factors_free(fs[j]);
    }
}

/* Float jobs (volumes: out_bytes SS_GM_OUT_F32) mixed with pixel jobs in one
 * packed batch: each float output region holds m rows of ldc floats, aligned
 * and disjoint from the others; the cuda kernel's phases write each product
 * unrounded (values far outside 0..65535 and negative, as scaled volume data
 * are) within float tolerance of the float64 reference and never touch a
 * row's pad; the cublas path's GEMM writes a float job's product straight
 * into its output (C = out, ldc) and the conversion walk of the pixel jobs
 * leaves the float outputs alone. */
static void test_float_jobs_in_mixed_batch(void **state) {
    (void)state;
    enum { NJ = 6 };
    static const int sh[NJ][4] = {/* m, n, k, out: 0 float, else bits */
                                  {217, 181, 50, 0}, {37, 20, 17, 16}, {33, 31, 31, 0},
                                  {64, 65, 33, 8},   {1, 1, 1, 0},     {7, 300, 7, 0}};
    ss_factors *fs[NJ];
    ss_gm_job jobs[NJ];
    float *dev[NJ];
    for (int j = 0; j < NJ; j++) {
        int m = sh[j][0], n = sh[j][1], r = m < n ? m : n;
        fs[j] = tu_random_factors(m, n, r, sh[j][3] ? sh[j][3] : 16, 70 + j);
        assert_non_null(fs[j]);
        if (!sh[j][3])
            for (size_t p = 0; p < (size_t)m * r; p++) fs[j]->U[p] *= -4000.0f;
        memset(&jobs[j], 0, sizeof jobs[j]);
        dev[j] = device_layout(fs[j], &jobs[j]);
        jobs[j].m = m;
        jobs[j].n = n;
        jobs[j].ldc = ss_gm_ldc(n);
        jobs[j].k = sh[j][2];
        jobs[j].maxval = sh[j][3] == 8 ? 255 : 65535;
        jobs[j].out_bytes = sh[j][3] ? sh[j][3] / 8 : SS_GM_OUT_F32;
    }
    size_t total = 0;
    long long tiles = ss_gm_pack(jobs, NJ, &total);
    for (int j = 0; j < NJ; j++) {
        size_t want = sh[j][3] ? (size_t)jobs[j].m * jobs[j].n * (size_t)(sh[j][3] / 8)
                               : (size_t)jobs[j].m * (size_t)jobs[j].ldc * sizeof(float);
        assert_int_equal(ss_gm_out_size(&jobs[j]), want);
        assert_int_equal(jobs[j].out_off % SS_GM_OUT_ALIGN, 0);
        assert_true(jobs[j].out_off + want <= (j + 1 < NJ ? jobs[j + 1].out_off : total));
    }
    unsigned char *stage = malloc(total);
    assert_non_null(stage);
    for (int pass = 0; pass < 2; pass++) { /* 0: the cuda kernel, 1: the cublas path */
        for (size_t b = 0; b < total / sizeof(float); b++) ((float *)stage)[b] = NAN; /* pads stay NaN */
        for (int j = 0; j < NJ; j++) jobs[j].out = stage + jobs[j].out_off;
        float *Cpix[NJ] = {0};
        if (pass == 0) {
            simulate_recon(jobs, NJ, tiles);
        } else {
            for (int j = 0; j < NJ; j++) {
                if (jobs[j].out_bytes == SS_GM_OUT_F32) {
                    jobs[j].C = (const float *)jobs[j].out;
                } else {
                    Cpix[j] = malloc(ss_gm_c_floats(jobs[j].m, jobs[j].n) * sizeof(float));
                    assert_non_null(Cpix[j]);
                    jobs[j].C = Cpix[j];
                }
            }
            ss_gm_gkey keys[NJ];
            const float *ptrs[3 * NJ];
            ss_gm_group(jobs, NJ, keys, ptrs);
            for (int q = 0; q < NJ; q++) {
                ss_gm_gemm g = ss_gm_gemm_args(&jobs[keys[q].j]);
                colmajor_sgemm_nn(g.rows, g.cols, g.k, ptrs[q], g.lda, ptrs[NJ + q], g.ldb, (float *)ptrs[2 * NJ + q],
                                  g.ldc);
            }
            for (long long t = 0; t < tiles; t++) { /* the conversion kernel: float jobs' blocks return */
                const ss_gm_job *jb = &jobs[ss_gm_find_job(jobs, NJ, t)];
                if (jb->out_bytes == SS_GM_OUT_F32) continue;
                int r0, c0;
                ss_gm_tile_origin(t - jb->tile0, jb->n, &r0, &c0);
                for (int lin = 0; lin < SS_GM_THREADS; lin++) ss_gm_convert(jb, r0, c0, lin % SS_GM_TX, lin / SS_GM_TX);
            }
        }
        for (int j = 0; j < NJ; j++) {
            const ss_gm_job *jb = &jobs[j];
            size_t px = (size_t)jb->m * jb->n;
            double *ref = malloc(px * sizeof *ref);
            assert_non_null(ref);
            ss_reference_f64(fs[j], jb->k, ref);
            const ss_factors *f = fs[j];
            for (int r = 0; r < jb->m; r++)
                for (int c = 0; c < jb->ldc && jb->out_bytes == SS_GM_OUT_F32; c++) {
                    float got = ((const float *)jb->out)[(size_t)r * jb->ldc + c];
                    double want = c < jb->n ? ref[(size_t)r * jb->n + c] : NAN;
                    if (c >= jb->n) {
                        if (!isnan(got)) fail_msg("pass %d job %d: pad (%d, %d) written", pass, j, r, c);
                        continue;
                    }
                    /* float accumulation of k terms: |error| <= k eps sum |U_ip W_pj| (+ a rounding) */
                    double mag = 0;
                    for (int p = 0; p < jb->k; p++)
                        mag += fabs((double)f->U[(size_t)r * f->rank + p] * f->W[(size_t)p * f->n + c]);
                    if (!(fabs(got - want) <= 2.0 * jb->k * FLT_EPSILON * mag + 1e-6)) {
                        fail_msg("pass %d job %d (%d, %d): %g, reference %g", pass, j, r, c, (double)got, want);
                    }
                }
            for (size_t p = 0; p < px && jb->out_bytes != SS_GM_OUT_F32; p++) {
                double r = round(ref[p]);
                r = r < 0 ? 0 : r > jb->maxval ? jb->maxval : r;
                int got = jb->out_bytes == 1 ? ((unsigned char *)jb->out)[p] : ((uint16_t *)jb->out)[p];
                if (abs(got - (int)r) > 1) fail_msg("pass %d job %d pixel %zu: %d, reference %.0f", pass, j, p, got, r);
            }
            free(ref);
            free(Cpix[j]);
            jobs[j].C = NULL;
        }
    }
    free(stage);
    for (int j = 0; j < NJ; j++) {
        ss_factors_free(fs[j]);
        free(dev[j]);
    }
}

/* Shared-memory bank model (32 banks of 4 bytes): the degree of a warp's
 * access is the most distinct words that fall in one bank (1: conflict
 * free; equal words are a broadcast). addr[t] are word offsets, t < 32. */
static int bank_degree(const int *addr) {
    int worst = 0;
    for (int b = 0; b < 32; b++) {
        int words[32], nw = 0;
        for (int t = 0; t < 32; t++) {
            if (addr[t] % 32 != b) continue;
            int seen = 0;
            for (int q = 0; q < nw; q++) seen |= words[q] == addr[t];
            if (!seen) words[nw++] = addr[t];
        }
        if (nw > worst) worst = nw;
    }
    return worst;
}

/* Worst degree of the U slab's stores (ss_gm_stage) with rows of TM + pad floats. */
static int uslab_store_degree(int pad) {
    int worst = 0;
    for (int w = 0; w < SS_GM_THREADS / 32; w++)
        for (int e = 0; e < SS_GM_LOADS_U; e++) {
            int addr[32];
            for (int t = 0; t < 32; t++) {
                int rr, kk;
                ss_gm_load_u(32 * w + t, e, &rr, &kk);
                addr[t] = kk * (SS_GM_TM + pad) + rr;
            }
            int d = bank_degree(addr);
            if (d > worst) worst = d;
        }
    return worst;
}

/* The slabs' stores and the accumulation's loads are conflict free with
 * SS_GM_UPAD; a pad of one (the old 33-float rows) gives the U stores
 * 2-way conflicts, so the model can tell. */
static void test_slab_banks_conflict_free(void **state) {
    (void)state;
    assert_int_equal(uslab_store_degree(SS_GM_UPAD), 1);
    assert_int_equal(uslab_store_degree(1), 2);
    assert_int_equal((int)(sizeof(ss_gm_uslab) / sizeof(float)), SS_GM_TK * (SS_GM_TM + SS_GM_UPAD));
    for (int w = 0; w < SS_GM_THREADS / 32; w++) {
        for (int e = 0; e < SS_GM_LOADS_W; e++) { /* W stores */
            int addr[32];
            for (int t = 0; t < 32; t++) {
                int kk, cc;
                ss_gm_load_w(32 * w + t, e, &kk, &cc);
                addr[t] = kk * SS_GM_TN + cc;
            }
            assert_int_equal(bank_degree(addr), 1);
        }
        for (int kk = 0; kk < SS_GM_TK; kk++) { /* ss_gm_accumulate's loads */
            for (int i = 0; i < SS_GM_RM; i++) {
                int addr[32];
                for (int t = 0; t < 32; t++) addr[t] = kk * (SS_GM_TM + SS_GM_UPAD) + (32 * w + t) / SS_GM_TX + i * SS_GM_TY;
                assert_int_equal(bank_degree(addr), 1);
            }
            for (int j = 0; j < SS_GM_RN; j++) {
                int addr[32];
                for (int t = 0; t < 32; t++) addr[t] = kk * SS_GM_TN + (32 * w + t) % SS_GM_TX + j * SS_GM_TX;
                assert_int_equal(bank_degree(addr), 1);
            }
        }
    }
}

/* The device layout gives cuBLAS 256-byte-aligned matrices and 16-byte rows
 * and holds everything it must: W after U, products one after another. The
 * study's 217x181 slices are the case the old layout (W at d + m*rank,
 * lda = n) left 4-byte aligned. */
static void test_factor_layout_aligned(void **state) {
    (void)state;
    static const int sh[][3] = {{217, 181, 181}, {256, 170, 170}, {256, 170, 50}, {1, 1, 1},
                                {1, 37, 1}, {37, 1, 1}, {181, 217, 181}, {33, 31, 31}, {512, 512, 512}};
    assert_true(((size_t)217 * 181 * sizeof(float)) % SS_GM_BASE_ALIGN != 0); /* the old W offset */
    for (size_t s = 0; s < sizeof sh / sizeof sh[0]; s++) {
        int m = sh[s][0], n = sh[s][1], rank = sh[s][2];
        ss_gm_layout l = ss_gm_factor_layout(m, n, rank);
        assert_true(l.ldu >= rank && l.ldu < rank + SS_GM_LD_ALIGN);
        assert_true(l.ldw >= n && l.ldw < n + SS_GM_LD_ALIGN);
        assert_int_equal(((size_t)l.ldu * sizeof(float)) % 16, 0);
        assert_int_equal(((size_t)l.ldw * sizeof(float)) % 16, 0);
        assert_int_equal((l.w_off * sizeof(float)) % SS_GM_BASE_ALIGN, 0);
        assert_true(l.w_off >= (size_t)m * l.ldu);
        assert_true(l.w_off < (size_t)m * l.ldu + SS_GM_BASE_ALIGN / sizeof(float));
        assert_true(l.floats == l.w_off + (size_t)rank * l.ldw);
        int ldc = ss_gm_ldc(n);
        assert_true(ldc >= n && ldc % SS_GM_LD_ALIGN == 0);
        size_t cf = ss_gm_c_floats(m, n);
        assert_true(cf >= (size_t)m * ldc);
        assert_int_equal((cf * sizeof(float)) % SS_GM_BASE_ALIGN, 0);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiles_cover_each_pixel_once),
        cmocka_unit_test(test_slab_loads_cover_tile_once),
        cmocka_unit_test(test_batch_packing),
        cmocka_unit_test(test_pixel_matches_engine),
        cmocka_unit_test(test_kernel_phases_match_reference),
        cmocka_unit_test(test_cublas_calls_emulated),
        cmocka_unit_test(test_float_jobs_in_mixed_batch),
        cmocka_unit_test(test_slab_banks_conflict_free),
        cmocka_unit_test(test_factor_layout_aligned),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
