/* store_dir.h - the directory backend's file operations: a table tests replace to fail any step */
#ifndef SS_STORE_DIR_H
#define SS_STORE_DIR_H
#include <stddef.h>
#include <sys/types.h>

/* Every file call of the directory backend. All but read_file behave like
 * the POSIX call named: the result, or -1 with errno set. ctx is handed to
 * every call. A put is: open (temp file), write (until all is written),
 * fsync (the file), close, rename (onto ID.svd), fsync (the directory). A
 * delete: unlink, fsync (the directory). Opening the store: mkdir, open (the
 * directory), list, unlink (leftover temp files), and for each slice
 * read_range twice (its header, then its singular values). Loading factors
 * and downloading a file: read_file. */
typedef struct ss_fileops {
    void *ctx;
    int (*mkdir)(void *ctx, const char *path, mode_t mode);
    int (*open)(void *ctx, int dirfd, const char *name, int flags, mode_t mode); /* openat */
    ssize_t (*write)(void *ctx, int fd, const void *buf, size_t n);
    int (*fsync)(void *ctx, int fd);
    int (*close)(void *ctx, int fd);
    int (*rename)(void *ctx, int dirfd, const char *from, const char *to); /* within dirfd */
    int (*unlink)(void *ctx, int dirfd, const char *name);
    /* Calls each(arg, name) for every entry but . and ..; a nonzero return
     * stops the listing (the call still returns 0). -1: could not list. */
    int (*list)(void *ctx, int dirfd, int (*each)(void *arg, const char *name), void *arg);
    /* The whole file, malloc'd: an engine code as ss_read_file returns. */
    int (*read_file)(void *ctx, const char *path, size_t max_bytes, unsigned char **buf, size_t *len);
    /* n bytes at off into buf, and the file's size: as ss_read_range. */
    int (*read_range)(void *ctx, const char *path, size_t off, size_t n, unsigned char *buf, size_t *file_len);
} ss_fileops;

extern const ss_fileops ss_fileops_posix;

/* Test only: a table that forwards to inner but fails chosen calls. spec is
 * "OP:N[:ERR]" (several joined by ","): the N-th call (from 1, counted from
 * the store's open) of OP (mkdir, open, write, fsync, close, rename, unlink,
 * list, read for read_file, readrange for read_range) fails with ERR (EIO, the default, ENOSPC or EDQUOT); the call is
 * then not made. Returns 0 and *out (free with ss_fileops_fault_free), or
 * SS_EINVAL for a malformed spec. The server takes spec from the environment
 * variable SVDSLICE_TEST_FAULT when no table is given in ss_store_opts; it is
 * inert unless set, and says so on stderr when it is. */
int ss_fileops_fault_new(const char *spec, const ss_fileops *inner, ss_fileops **out);
void ss_fileops_fault_free(ss_fileops *ops); /* NULL-safe */

#endif
