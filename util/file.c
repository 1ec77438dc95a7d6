/* file.c - whole-file reading with a size bound, and reading one range of a file */
#include "util/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/error.h"

int ss_read_file(const char *path, size_t max_bytes, unsigned char **out, size_t *out_len) {
    if (!path || !out || !out_len) return ss_fail(SS_EINVAL, "ss_read_file: bad arguments");
    *out = NULL;
    *out_len = 0;
    if (max_bytes == SIZE_MAX) max_bytes--; /* max_bytes + 1 is used below */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ss_fail(SS_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ss_fail(SS_EIO, "%s: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return ss_fail(SS_EIO, "%s: is a directory", path);
    }
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max_bytes) {
        close(fd);
        return ss_fail(SS_ETOOLARGE, "%s: %lld bytes, over the %zu byte limit", path,
                       (long long)st.st_size, max_bytes);
    }
    /* Sized from stat for files; pipes and growing files are read until EOF or the bound. */
    size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536;
    if (cap > max_bytes + 1) cap = max_bytes + 1;
    unsigned char *buf = malloc(cap ? cap : 1);
    size_t len = 0;
    if (!buf) {
        close(fd);
        return ss_fail(SS_ENOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (len == cap) {
            if (cap > max_bytes) break; /* read max_bytes + 1: over the bound */
            size_t ncap = cap * 2 > max_bytes + 1 ? max_bytes + 1 : cap * 2;
            unsigned char *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                close(fd);
                return ss_fail(SS_ENOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return ss_fail(SS_EIO, "%s: %s", path, strerror(e));
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    close(fd);
    if (len > max_bytes) {
        free(buf);
        return ss_fail(SS_ETOOLARGE, "%s: over the %zu byte limit", path, max_bytes);
    }
    *out = buf;
    *out_len = len;
    return SS_OK;
}

int ss_read_range(const char *path, size_t off, size_t n, unsigned char *buf, size_t *file_len) {
    if (!path || (!buf && n) || !file_len) return ss_fail(SS_EINVAL, "ss_read_range: bad arguments");
    *file_len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ss_fail(SS_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    int rc = SS_OK;
    if (fstat(fd, &st) != 0)
        rc = ss_fail(SS_EIO, "%s: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = ss_fail(SS_EIO, "%s: not a regular file", path);
    else if ((uint64_t)st.st_size < (uint64_t)off || (uint64_t)st.st_size - (uint64_t)off < (uint64_t)n)
        rc = ss_fail(SS_ECORRUPT, "%s: %lld bytes, shorter than %zu + %zu", path, (long long)st.st_size, off, n);
    for (size_t got = 0; rc == SS_OK && got < n;) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) rc = ss_fail(SS_EIO, "%s: %s", path, strerror(errno));
        else if (r == 0) rc = ss_fail(SS_ECORRUPT, "%s: shrank while being read", path);
        else got += (size_t)r;
    }
    close(fd);
    if (rc == SS_OK) *file_len = (size_t)st.st_size;
    return rc;
}
