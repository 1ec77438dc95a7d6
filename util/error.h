/* error.h - error codes and a per-thread error message for the engine (libvips style) */
#ifndef SS_ERROR_H
#define SS_ERROR_H

/* Engine functions return 0 on success or one of these negative codes; the
 * detail is in ss_error(), valid until the same thread's next error. */
enum {
    SS_OK = 0,
    SS_EINVAL = -1,     /* bad argument (k out of range, bad dims, ...) */
    SS_ENOMEM = -2,     /* allocation failed */
    SS_EIO = -3,        /* read/write/fsync failed */
    SS_ENOTPNG = -4,    /* input is not a PNG (bad signature) */
    SS_ECORRUPT = -5,   /* PNG or .svd that does not decode / fails its checksum */
    SS_ETOOLARGE = -6,  /* image over the size limit */
    SS_EUNAVAIL = -7,   /* backend cannot run here (reason in ss_error()) */
    SS_ENUMERIC = -8,   /* SVD did not converge */
    SS_ENOSPC = -9,     /* disk full or quota exceeded */
    SS_EBUSY = -10,     /* queue full: try again later */
    SS_ETIMEDOUT = -11, /* a queued job passed its deadline */
    SS_ENOTNIFTI = -12,    /* input is not a NIfTI-1/-2 file (sizeof_hdr, magic) */
    SS_EUNSUPPORTED = -13, /* a valid input svdslice does not handle (data type, 5D, NaN) */
    SS_ESTORE = -14,       /* the shared store (PostgreSQL) cannot be reached: try again later */
};

/* printf-style; always returns `code` so callers can `return ss_fail(...)`. */
int ss_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *ss_error(void);
const char *ss_strcode(int code); /* "invalid argument", ... */

#endif
