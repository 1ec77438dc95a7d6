/* strbuf.c - a growing text buffer for rendered documents */
#include "util/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void ss_sb_printf(ss_strbuf *sb, const char *fmt, ...) {
    if (sb->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(sb->buf ? sb->buf + sb->len : NULL, sb->buf ? sb->cap - sb->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            sb->oom = 1;
            return;
        }
        if (sb->buf && sb->len + (size_t)n < sb->cap) {
            sb->len += (size_t)n;
            return;
        }
        size_t cap = sb->cap ? sb->cap * 2 : 4096;
        while (cap < sb->len + (size_t)n + 1) cap *= 2;
        char *nb = realloc(sb->buf, cap);
        if (!nb) {
            sb->oom = 1;
            return;
        }
        sb->buf = nb;
        sb->cap = cap;
    }
}
