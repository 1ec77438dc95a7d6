/* file.h - whole-file reading with a size bound */
#ifndef SS_FILE_H
#define SS_FILE_H
#include <stddef.h>

/* Reads a whole file into memory (malloc'd, caller frees); max_bytes bounds it. */
int ss_read_file(const char *path, size_t max_bytes, unsigned char **out, size_t *out_len);

#endif
