/* error.c - per-thread error message for the engine */
#include "util/error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char g_msg[512];

int ss_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return code;
}

const char *ss_error(void) { return g_msg[0] ? g_msg : "no error"; }

const char *ss_strcode(int code) {
    switch (code) {
    case SS_OK: return "ok";
    case SS_EINVAL: return "invalid argument";
    case SS_ENOMEM: return "out of memory";
    case SS_EIO: return "I/O error";
    case SS_ENOTPNG: return "not a PNG";
    case SS_ECORRUPT: return "corrupt data";
    case SS_ETOOLARGE: return "too large";
    case SS_EUNAVAIL: return "unavailable";
    case SS_ENUMERIC: return "numerical failure";
    case SS_ENOSPC: return "no space";
    case SS_EBUSY: return "busy";
    case SS_ETIMEDOUT: return "timed out";
    case SS_ENOTNIFTI: return "not a NIfTI file";
    case SS_EUNSUPPORTED: return "unsupported";
    case SS_ESTORE: return "store unavailable";
    default: return "unknown error";
    }
}
