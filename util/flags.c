/* flags.c - getopt_long with exact flag names, in-order positionals and the caller's messages */
#include "util/flags.h"

#include <stdio.h>
#include <string.h>

void ss_flags_begin(ss_flags *f, int argc, char **argv, const char *shortopts,
                    const struct option *longopts) {
    memset(f, 0, sizeof *f);
    f->argc = argc;
    f->argv = argv;
    f->longopts = longopts;
    /* '-': positionals come back in place (argv is not permuted, whatever
     * POSIXLY_CORRECT says), so errors are met in argv's order; ':': getopt
     * prints nothing and reports a missing value apart from an unknown flag. */
    snprintf(f->optstring, sizeof f->optstring, "-:%s", shortopts);
    optind = 0; /* glibc: 0 re-initialises getopt completely, 1 only rewinds */
}

/* The long flag named exactly by s ("name" or "name=V"), NULL if none. */
static const struct option *exact(const struct option *lo, const char *s) {
    size_t n = strcspn(s, "=");
    for (; lo->name; lo++)
        if (strlen(lo->name) == n && !strncmp(lo->name, s, n)) return lo;
    return NULL;
}

int ss_flags_next(ss_flags *f) {
    f->value = f->text = NULL;
    f->opt = NULL;
    if (f->rest) {
        if (optind >= f->argc) return SS_FLAGS_END;
        f->value = f->text = f->argv[optind++];
        return SS_FLAGS_ARG;
    }
    /* Nothing is skipped in '-' mode: getopt reads argv[optind] (1 on the first call). */
    int at = optind > 0 ? optind : 1;
    int c = getopt_long(f->argc, f->argv, f->optstring, f->longopts, NULL);
    if (c == -1) { /* at the end, or past "--" with optind on what follows */
        f->rest = 1;
        return ss_flags_next(f);
    }
    const char *el = f->argv[at];
    f->text = el;
    if (c == 1) {
        f->value = optarg;
        return SS_FLAGS_ARG;
    }
    if (el[1] == '-') {
        /* getopt_long also takes a unique prefix ("--po" for --port); the
         * names stay exact so that a new flag cannot break a command line. */
        f->opt = exact(f->longopts, el + 2);
        if (!f->opt) return SS_FLAGS_UNKNOWN;
        if (c == '?') return SS_FLAGS_EXTRA; /* the only '?' for an exact name */
    } else {
        if (c == '?') return SS_FLAGS_UNKNOWN;
        int letter = c == ':' ? optopt : c;
        for (const struct option *lo = f->longopts; lo->name && !f->opt; lo++)
            if (lo->val == letter) f->opt = lo;
        if (!f->opt) return SS_FLAGS_UNKNOWN; /* a letter in shortopts without a long entry */
    }
    if (c == ':') return SS_FLAGS_MISSING;
    f->value = optarg;
    /* "-k=5" means 5 as "-k5" does; "-k =5" (two elements) is left alone */
    if (el[1] != '-' && optarg && optind == at + 1 && optarg[0] == '=') f->value++;
    return (int)(f->opt - f->longopts);
}
