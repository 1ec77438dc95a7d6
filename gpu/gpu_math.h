/* gpu_math.h - index, tiling, batch-packing and pixel arithmetic shared by the CUDA kernels and host tests */
#ifndef SS_GPU_MATH_H
#define SS_GPU_MATH_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* nvcc sees __host__ __device__ functions; a C compiler sees plain static
 * inline ones, so tests/test_gpu_math.c checks on the host the very
 * arithmetic the kernels run. */
#ifdef __CUDACC__
#define SS_GM_FN __host__ __device__ static inline
#else
#define SS_GM_FN static inline
#endif
/* Unrolled in the device pass only (keeps the register tile in registers). */
#ifdef __CUDA_ARCH__
#define SS_GM_UNROLL _Pragma("unroll")
#else
#define SS_GM_UNROLL
#endif

/* Output tile of one thread block: TM x TN pixels, computed by TY x TX
 * threads each holding a (TM/TY) x (TN/TX) register tile; the reduction
 * dimension advances TK at a time through shared memory. */
#define SS_GM_TM 32
#define SS_GM_TN 32
#define SS_GM_TK 16
#define SS_GM_TX 8
#define SS_GM_TY 8
#define SS_GM_THREADS (SS_GM_TX * SS_GM_TY)
#define SS_GM_RM (SS_GM_TM / SS_GM_TY) /* rows per thread */
#define SS_GM_RN (SS_GM_TN / SS_GM_TX) /* cols per thread */
/* Shared-memory loads: each thread loads this many elements of each tile. */
#define SS_GM_LOADS_U ((SS_GM_TM * SS_GM_TK) / SS_GM_THREADS)
#define SS_GM_LOADS_W ((SS_GM_TK * SS_GM_TN) / SS_GM_THREADS)
/* Byte alignment of each job's output region in the batch's staging buffer. */
#define SS_GM_OUT_ALIGN 256
/* Pad of the U slab's rows (TM + pad floats): stores by a warp hit 32
 * distinct banks with 34 (33 gives 2-way conflicts; tests/test_gpu_math.c
 * models the banks). */
#define SS_GM_UPAD 2
/* Device layout of factors and cuBLAS products: every matrix starts on
 * SS_GM_BASE_ALIGN bytes and every row on SS_GM_LD_ALIGN floats (16 bytes),
 * so cuBLAS sees aligned pointers and leading dimensions (a 4-byte-aligned W
 * at d + m*rank with lda = 170 sends it to slower kernels). */
#define SS_GM_BASE_ALIGN 256
#define SS_GM_LD_ALIGN 4

/* One job of a batch launch, as the kernel reads it from device memory.
 * Pointers are device addresses; out holds m*n samples of out_bytes each
 * (1: uint8 staging for 8-bit slices, 2: uint16, 4: the float product itself,
 * unrounded, in rows of ldc floats so that cuBLAS writes it there directly).
 * C is the float product (m x n, ld ldc) for the cuBLAS path (the conversion
 * kernel reads it; for a float job it is out), else NULL. */
typedef struct ss_gm_job {
    const float *U;      /* m x ldu, row-major; columns 0..k-1 used */
    const float *W;      /* >= k x ldw, row-major; columns 0..n-1 used */
    const float *C;      /* m x ldc floats to convert (cuBLAS path) or NULL */
    void *out;           /* device output (set by the caller from out_off) */
    long long tile0;     /* first flat tile index of this job in the launch */
    size_t out_off;      /* byte offset of this job's output in the staging buffer */
    int m, n, ldu, k;
    int ldw, ldc;        /* row strides of W and C (>= n) */
    int maxval;          /* 255 or 65535 (pixel jobs) */
    int out_bytes;       /* 1 or 2 (pixels), SS_GM_OUT_F32 (floats) */
} ss_gm_job;

/* out_bytes of a job that returns C = U[:, :k] W[:k, :] as floats (volumes of
 * any data type: the engine maps them to stored values). */
#define SS_GM_OUT_F32 4

SS_GM_FN int ss_gm_cdiv(int a, int b) { return (a + b - 1) / b; }
SS_GM_FN size_t ss_gm_align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* Where one slice's factors live in their device allocation: U (m x ldu) at
 * float 0, W (rank x ldw) at float w_off; `floats` in all. */
typedef struct ss_gm_layout {
    int ldu, ldw;
    size_t w_off, floats;
} ss_gm_layout;

SS_GM_FN ss_gm_layout ss_gm_factor_layout(int m, int n, int rank) {
    ss_gm_layout l;
    l.ldu = (int)ss_gm_align_up((size_t)rank, SS_GM_LD_ALIGN);
    l.ldw = (int)ss_gm_align_up((size_t)n, SS_GM_LD_ALIGN);
    l.w_off = ss_gm_align_up((size_t)m * (size_t)l.ldu, SS_GM_BASE_ALIGN / sizeof(float));
    l.floats = l.w_off + (size_t)rank * (size_t)l.ldw;
    return l;
}

/* Row stride of a cuBLAS product (m x n) and the floats it takes in the
 * batch's product buffer, so that the next one starts aligned too. */
SS_GM_FN int ss_gm_ldc(int n) { return (int)ss_gm_align_up((size_t)n, SS_GM_LD_ALIGN); }
SS_GM_FN size_t ss_gm_c_floats(int m, int n) {
    return ss_gm_align_up((size_t)m * (size_t)ss_gm_ldc(n), SS_GM_BASE_ALIGN / sizeof(float));
}

/* Tiles of an m x n output; row-major order of tiles. */
SS_GM_FN long long ss_gm_tiles(int m, int n) {
    return (long long)ss_gm_cdiv(m, SS_GM_TM) * (long long)ss_gm_cdiv(n, SS_GM_TN);
}

/* Top-left pixel of local tile t of an m x n output. A launch has at most
 * INT_MAX tiles (the dispatcher checks), so 32-bit division suffices (a
 * 64-bit one is a stack-using subroutine call on the device). */
SS_GM_FN void ss_gm_tile_origin(long long t, int n, int *r0, int *c0) {
    int tn = ss_gm_cdiv(n, SS_GM_TN), ti = (int)t;
    *r0 = (ti / tn) * SS_GM_TM;
    *c0 = (ti % tn) * SS_GM_TN;
}

/* Pixel (i, j) of a thread's register tile: rows ty, ty+TY, ...; columns
 * tx, tx+TX, ... so that neighbouring threads touch neighbouring columns
 * (coalesced stores). */
SS_GM_FN int ss_gm_thread_row(int r0, int ty, int i) { return r0 + ty + i * SS_GM_TY; }
SS_GM_FN int ss_gm_thread_col(int c0, int tx, int j) { return c0 + tx + j * SS_GM_TX; }

/* Shared-memory load of the U tile (TM rows x TK cols): thread lin's e-th
 * element. Consecutive threads read consecutive k (one row's run). */
SS_GM_FN void ss_gm_load_u(int lin, int e, int *row, int *kk) {
    int idx = lin + e * SS_GM_THREADS;
    *row = idx / SS_GM_TK;
    *kk = idx % SS_GM_TK;
}
/* Load of the W tile (TK rows x TN cols): consecutive threads, consecutive columns. */
SS_GM_FN void ss_gm_load_w(int lin, int e, int *kk, int *col) {
    int idx = lin + e * SS_GM_THREADS;
    *kk = idx / SS_GM_TN;
    *col = idx % SS_GM_TN;
}

/* Which job owns flat tile t: the last j with jobs[j].tile0 <= t (tile0
 * non-decreasing, jobs[0].tile0 == 0). Binary search: a 512-job batch
 * costs each block 9 probes. */
SS_GM_FN int ss_gm_find_job(const ss_gm_job *jobs, int njobs, long long t) {
    int lo = 0, hi = njobs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (jobs[mid].tile0 <= t) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* The engine's pixel rule (ss_pixels_from_float): round half away from zero,
 * clamp to 0..maxval; NaN and negatives give 0. */
SS_GM_FN uint16_t ss_gm_pixel(float v, int maxval) {
    if (!(v > 0.0f)) return 0;
    if (v >= (float)maxval) return (uint16_t)maxval;
    return (uint16_t)roundf(v);
}

/* Read-only global loads: the non-coherent cache on the device. */
#ifdef __CUDA_ARCH__
#define SS_GM_LDG(p) __ldg(p)
#else
#define SS_GM_LDG(p) (*(p))
#endif

/* The kernel's three phases, one thread's share each (the kernel puts a
 * barrier between them; tests/test_gpu_math.c runs them on the host for
 * every thread of every block and compares with the float64 reference).
 * Us holds the U slab transposed with SS_GM_UPAD pad columns: stores by
 * consecutive threads (consecutive kk) and reads (broadcast) are
 * bank-conflict free. The job is passed by pointer to a copy the kernel
 * holds in registers. */
typedef float ss_gm_uslab[SS_GM_TK][SS_GM_TM + SS_GM_UPAD];
typedef float ss_gm_wslab[SS_GM_TK][SS_GM_TN];

/* Stage the slab k0..k0+TK-1 of tile (r0, c0); zeros outside the matrix or past k. */
SS_GM_FN void ss_gm_stage(const ss_gm_job *jb, int r0, int c0, int k0, int lin, ss_gm_uslab Us,
                          ss_gm_wslab Ws) {
    SS_GM_UNROLL
    for (int e = 0; e < SS_GM_LOADS_U; e++) {
        int rr, kk;
        ss_gm_load_u(lin, e, &rr, &kk);
        int row = r0 + rr, p = k0 + kk;
        Us[kk][rr] = (row < jb->m && p < jb->k) ? SS_GM_LDG(&jb->U[(size_t)row * jb->ldu + p]) : 0.0f;
    }
    SS_GM_UNROLL
    for (int e = 0; e < SS_GM_LOADS_W; e++) {
        int kk, cc;
        ss_gm_load_w(lin, e, &kk, &cc);
        int col = c0 + cc, p = k0 + kk;
        Ws[kk][cc] = (col < jb->n && p < jb->k) ? SS_GM_LDG(&jb->W[(size_t)p * jb->ldw + col]) : 0.0f;
    }
}

/* acc += the staged slab's contribution to this thread's register tile. */
SS_GM_FN void ss_gm_accumulate(int tx, int ty, const ss_gm_uslab Us, const ss_gm_wslab Ws,
                               float acc[SS_GM_RM][SS_GM_RN]) {
    SS_GM_UNROLL
    for (int kk = 0; kk < SS_GM_TK; kk++) {
        float a[SS_GM_RM], b[SS_GM_RN];
        SS_GM_UNROLL
        for (int i = 0; i < SS_GM_RM; i++) a[i] = Us[kk][ty + i * SS_GM_TY];
        SS_GM_UNROLL
        for (int j = 0; j < SS_GM_RN; j++) b[j] = Ws[kk][tx + j * SS_GM_TX];
        SS_GM_UNROLL
        for (int i = 0; i < SS_GM_RM; i++)
            SS_GM_UNROLL
            for (int j = 0; j < SS_GM_RN; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
}

/* Writes output sample (row, col): the float as it is (rows of ldc), or
 * rounded and clamped as uint8 or uint16 staging (rows of n). */
SS_GM_FN void ss_gm_put(const ss_gm_job *jb, int row, int col, float v) {
    if (jb->out_bytes == SS_GM_OUT_F32) {
        ((float *)jb->out)[(size_t)row * jb->ldc + col] = v;
        return;
    }
    const size_t o = (size_t)row * jb->n + col;
    uint16_t px = ss_gm_pixel(v, jb->maxval);
    if (jb->out_bytes == 1) ((unsigned char *)jb->out)[o] = (unsigned char)px;
    else ((uint16_t *)jb->out)[o] = px;
}

/* Rounds, clamps and stores this thread's register tile (the cuda backend). */
SS_GM_FN void ss_gm_store(const ss_gm_job *jb, int r0, int c0, int tx, int ty,
                          float acc[SS_GM_RM][SS_GM_RN]) {
    SS_GM_UNROLL
    for (int i = 0; i < SS_GM_RM; i++) {
        int row = ss_gm_thread_row(r0, ty, i);
        if (row >= jb->m) continue;
        SS_GM_UNROLL
        for (int j = 0; j < SS_GM_RN; j++) {
            int col = ss_gm_thread_col(c0, tx, j);
            if (col < jb->n) ss_gm_put(jb, row, col, acc[i][j]);
        }
    }
}

/* Converts this thread's pixels of the float product jb->C (the cublas
 * backend; never called for a float job, whose C is its output). */
SS_GM_FN void ss_gm_convert(const ss_gm_job *jb, int r0, int c0, int tx, int ty) {
    SS_GM_UNROLL
    for (int i = 0; i < SS_GM_RM; i++) {
        int row = ss_gm_thread_row(r0, ty, i);
        if (row >= jb->m) continue;
        SS_GM_UNROLL
        for (int j = 0; j < SS_GM_RN; j++) {
            int col = ss_gm_thread_col(c0, tx, j);
            if (col < jb->n) {
                ss_gm_put(jb, row, col, SS_GM_LDG(&jb->C[(size_t)row * jb->ldc + col]));
            }
        }
    }
}

/* Bytes of a job's output region: m*n samples, or m rows of ldc floats. */
SS_GM_FN size_t ss_gm_out_size(const ss_gm_job *jb) {
    if (jb->out_bytes == SS_GM_OUT_F32) return (size_t)jb->m * (size_t)jb->ldc * sizeof(float);
    return (size_t)jb->m * (size_t)jb->n * (size_t)jb->out_bytes;
}

/* Fills tile0 and out_off of jobs[0..n) (m, n, out_bytes and, for float
 * jobs, ldc set) so tiles and output regions follow one another; returns the
 * launch's tile count and the staging bytes in *out_bytes_total. */
SS_GM_FN long long ss_gm_pack(ss_gm_job *jobs, int n, size_t *out_bytes_total) {
    long long tiles = 0;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        jobs[i].tile0 = tiles;
        jobs[i].out_off = off;
        tiles += ss_gm_tiles(jobs[i].m, jobs[i].n);
        size_t bytes = ss_gm_out_size(&jobs[i]);
        off += (bytes + SS_GM_OUT_ALIGN - 1) / SS_GM_OUT_ALIGN * SS_GM_OUT_ALIGN;
    }
    *out_bytes_total = off;
    return tiles;
}

/* ---- the cublas backend's GEMM calls (host side) ------------------------- */

/* cuBLAS is column-major. The row-major product C = U[:, :k] W[:k, :]
 * (m x n, ld ldc) is, read column-major, C^T (n x m, ld ldc) = W^T U^T: the
 * row-major W (ld ldw) read column-major is W^T (n x rank, ld ldw) and the
 * row-major U (ld ldu) is U^T (ldu x m, ld ldu), of which the first k rows
 * are used. So cublasSgemm(N, N, rows, cols, k, A = W, lda, B = U, ldb, C, ldc). */
typedef struct ss_gm_gemm {
    int rows, cols, k; /* of C^T: n x m; k */
    int lda, ldb, ldc; /* ldw, ldu, ldc: multiples of SS_GM_LD_ALIGN */
} ss_gm_gemm;

SS_GM_FN ss_gm_gemm ss_gm_gemm_args(const ss_gm_job *jb) {
    ss_gm_gemm g;
    g.rows = jb->n;
    g.cols = jb->m;
    g.k = jb->k;
    g.lda = jb->ldw;
    g.ldb = jb->ldu;
    g.ldc = jb->ldc;
    return g;
}

/* Jobs with the same GEMM shape share one cublasSgemmBatched call. */
typedef struct ss_gm_gkey {
    int m, n, k, ldu, ldw, ldc, j; /* j: the job's index in the batch */
} ss_gm_gkey;

static inline int ss_gm_gkey_cmp(const void *a, const void *b) {
    const ss_gm_gkey *x = (const ss_gm_gkey *)a, *y = (const ss_gm_gkey *)b;
    if (x->m != y->m) return x->m < y->m ? -1 : 1;
    if (x->n != y->n) return x->n < y->n ? -1 : 1;
    if (x->k != y->k) return x->k < y->k ? -1 : 1;
    if (x->ldu != y->ldu) return x->ldu < y->ldu ? -1 : 1;
    if (x->ldw != y->ldw) return x->ldw < y->ldw ? -1 : 1;
    if (x->ldc != y->ldc) return x->ldc < y->ldc ? -1 : 1;
    return x->j - y->j;
}

/* Sorts keys[0..nj) of jobs[0..nj) by shape and fills the pointer arrays
 * that cublasSgemmBatched reads (3*nj pointers, uploaded as they are): A =
 * W pointers in [0, nj), B = U in [nj, 2nj), C in [2nj, 3nj), all in sorted
 * order, so the group starting at sorted index s passes ptrs + s,
 * ptrs + nj + s and ptrs + 2*nj + s. Host only (qsort). */
static inline void ss_gm_group(const ss_gm_job *jobs, int nj, ss_gm_gkey *keys, const float **ptrs) {
    for (int j = 0; j < nj; j++) {
        keys[j].m = jobs[j].m;
        keys[j].n = jobs[j].n;
        keys[j].k = jobs[j].k;
        keys[j].ldu = jobs[j].ldu;
        keys[j].ldw = jobs[j].ldw;
        keys[j].ldc = jobs[j].ldc;
        keys[j].j = j;
    }
    qsort(keys, (size_t)nj, sizeof *keys, ss_gm_gkey_cmp);
    for (int s = 0; s < nj; s++) {
        const ss_gm_job *jb = &jobs[keys[s].j];
        ptrs[s] = jb->W;
        ptrs[nj + s] = jb->U;
        ptrs[2 * nj + s] = jb->C;
    }
}

/* One past the last sorted key of the group that starts at s. */
static inline int ss_gm_group_end(const ss_gm_gkey *keys, int nj, int s) {
    int e = s + 1;
    while (e < nj && keys[e].m == keys[s].m && keys[e].n == keys[s].n && keys[e].k == keys[s].k &&
           keys[e].ldu == keys[s].ldu && keys[e].ldw == keys[s].ldw && keys[e].ldc == keys[s].ldc)
        e++;
    return e;
}

#endif
