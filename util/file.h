/* file.h - whole-file reading with a size bound, and reading one range of a file */
#ifndef SS_FILE_H
#define SS_FILE_H
#include <stddef.h>

/* Reads a whole file into memory (malloc'd, caller frees); max_bytes bounds it. */
int ss_read_file(const char *path, size_t max_bytes, unsigned char **out, size_t *out_len);

/* Reads exactly n bytes at offset off of the file at path into buf and gives
 * the file's size, for formats whose header says where the rest lies.
 * SS_EIO (missing, unreadable, not a regular file), SS_ECORRUPT (the file
 * ends before off + n). */
int ss_read_range(const char *path, size_t off, size_t n, unsigned char *buf, size_t *file_len);

#endif
