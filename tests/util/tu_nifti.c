/* tu_nifti.c - NIfTI files built byte by byte for the tests, gzip, a measured child run */
#include "tu_nifti.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

tu_nii tu_nii_3d(int version, int nx, int ny, int nz, int datatype, int bpv) {
    tu_nii h;
    memset(&h, 0, sizeof h);
    h.version = version;
    h.dim[0] = 3;
    h.dim[1] = nx;
    h.dim[2] = ny;
    h.dim[3] = nz;
    for (int i = 4; i < 8; i++) h.dim[i] = 1;
    h.datatype = datatype;
    h.bitpix = 8 * bpv;
    for (int i = 0; i < 8; i++) h.pixdim[i] = 1;
    h.pixdim[1] = 0.5;
    h.pixdim[2] = 0.75;
    h.pixdim[3] = 2.0;
    h.slope = 1;
    h.qform_code = 1;
    h.sform_code = 2;
    h.vox_offset = version == 2 ? 544 : 352;
    h.srow[0][0] = 0.5f;
    h.srow[1][1] = 0.75f;
    h.srow[2][2] = 2.0f;
    h.srow[0][3] = -10;
    return h;
}

static void put(unsigned char *p, const void *v, int n, int big) {
    const unsigned char *s = v;
    for (int i = 0; i < n; i++) p[i] = big ? s[n - 1 - i] : s[i]; /* the host is little-endian */
}
static void put_i16(unsigned char *p, int v, int big) { int16_t x = (int16_t)v; put(p, &x, 2, big); }
static void put_i32(unsigned char *p, int32_t v, int big) { put(p, &v, 4, big); }
static void put_i64(unsigned char *p, int64_t v, int big) { put(p, &v, 8, big); }
static void put_f32(unsigned char *p, double v, int big) { float x = (float)v; put(p, &x, 4, big); }
static void put_f64(unsigned char *p, double v, int big) { put(p, &v, 8, big); }

unsigned char *tu_nifti_build(const tu_nii *h, const void *data, size_t data_len, int bpv, size_t *len) {
    const int big = h->big_endian, v2 = h->version == 2;
    const size_t hb = v2 ? 540 : 348;
    double off = h->vox_offset;
    size_t start = off >= (double)(hb + 4) && off < 1e9 ? (size_t)off : hb + 4;
    *len = start + data_len;
    unsigned char *b = calloc(1, *len);
    if (!b) return NULL;
    if (!v2) {
        put_i32(b, 348, big);
        for (int i = 0; i < 8; i++) put_i16(b + 40 + 2 * i, (int)h->dim[i], big);
        put_i16(b + 70, h->datatype, big);
        put_i16(b + 72, h->bitpix, big);
        for (int i = 0; i < 8; i++) put_f32(b + 76 + 4 * i, h->pixdim[i], big);
        put_f32(b + 108, off, big);
        put_f32(b + 112, h->slope, big);
        put_f32(b + 116, h->inter, big);
        put_i16(b + 252, h->qform_code, big);
        put_i16(b + 254, h->sform_code, big);
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 4; c++) put_f32(b + 280 + 16 * r + 4 * c, h->srow[r][c], big);
        memcpy(b + 344, h->magic ? h->magic : "n+1", 4);
    } else {
        put_i32(b, 540, big);
        memcpy(b + 4, h->magic ? h->magic : "n+2\0\r\n\032\n", 8);
        put_i16(b + 12, h->datatype, big);
        put_i16(b + 14, h->bitpix, big);
        for (int i = 0; i < 8; i++) put_i64(b + 16 + 8 * i, h->dim[i], big);
        for (int i = 0; i < 8; i++) put_f64(b + 104 + 8 * i, h->pixdim[i], big);
        put_i64(b + 168, (int64_t)off, big);
        put_f64(b + 176, h->slope, big);
        put_f64(b + 184, h->inter, big);
        put_i32(b + 344, h->qform_code, big);
        put_i32(b + 348, h->sform_code, big);
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 4; c++) put_f64(b + 400 + 32 * r + 8 * c, h->srow[r][c], big);
    }
    const unsigned char *d = data;
    for (size_t i = 0; data && i + (size_t)bpv <= data_len; i += (size_t)bpv) put(b + start + i, d + i, bpv, big);
    return b;
}

unsigned char *tu_gzip(const void *in, size_t n, size_t *out_len) {
    z_stream s;
    memset(&s, 0, sizeof s);
    if (deflateInit2(&s, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) return NULL;
    size_t cap = deflateBound(&s, n);
    unsigned char *o = malloc(cap);
    if (!o) {
        deflateEnd(&s);
        return NULL;
    }
    s.next_in = (unsigned char *)in;
    s.avail_in = (uInt)n;
    s.next_out = o;
    s.avail_out = (uInt)cap;
    int zr = deflate(&s, Z_FINISH);
    *out_len = cap - s.avail_out;
    deflateEnd(&s);
    if (zr != Z_STREAM_END) {
        free(o);
        return NULL;
    }
    return o;
}

int tu_run_measured(int (*fn)(void *arg), void *arg, int *rc, long *rss_kib, double *ms) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        alarm(10); /* a hang dies by SIGALRM: the parent sees no exit status */
        int r = fn(arg);
        _exit(-r & 0xff); /* engine codes are small negatives; the peak RSS comes from wait4 */
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid) return -1;
    /* CPU time, not wall time: the machine may be shared, and a hang is the alarm's. */
    *ms = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
          (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
    /* The child's peak includes what it inherited: subtract this process's own peak. */
    struct rusage self;
    getrusage(RUSAGE_SELF, &self);
    *rss_kib = ru.ru_maxrss - self.ru_maxrss;
    if (!WIFEXITED(status)) return -1;
    *rc = -WEXITSTATUS(status);
    return 0;
}
