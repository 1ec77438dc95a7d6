/* strbuf.h - a growing text buffer for rendered documents */
#ifndef SS_STRBUF_H
#define SS_STRBUF_H
#include <stddef.h>

/* A growing text buffer (malloc'd; caller frees buf). */
typedef struct ss_strbuf {
    char *buf;
    size_t len, cap;
    int oom;
} ss_strbuf;
void ss_sb_printf(ss_strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
