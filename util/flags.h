/* flags.h - the program's one flag parser: glibc getopt_long with the rules serve and the CLI share */
#ifndef SS_FLAGS_H
#define SS_FLAGS_H
#include <getopt.h>

/* What ss_flags_next found when it is not a flag (a flag gives its index, >= 0). */
enum {
    SS_FLAGS_END = -1,     /* argv is used up */
    SS_FLAGS_ARG = -2,     /* a positional argument, in ->value; everything after "--" is one */
    SS_FLAGS_UNKNOWN = -3, /* ->text is no flag here (an abbreviation of one is not either) */
    SS_FLAGS_MISSING = -4, /* ->text needs a value and argv ends */
    SS_FLAGS_EXTRA = -5,   /* ->text is "--name=V" for a flag without a value (->opt) */
};

typedef struct ss_flags {
    int argc;
    char **argv;
    const struct option *longopts;
    char optstring[64];
    int rest;                 /* "--" seen: what follows is positional */
    const char *value;        /* the flag's value (NULL: none given) or the positional */
    const char *text;         /* the argv element read, for messages */
    const struct option *opt; /* the flag read, NULL if none */
} ss_flags;

/* Starts parsing argv[1..]. longopts as getopt_long's, ending in a zeroed
 * entry; a flag with a short form ("-k") has that letter as its val and in
 * shortopts ("hk:"), the others val 0. Resets getopt's global state, so
 * parses may follow one another, but not interleave or run in two threads. */
void ss_flags_begin(ss_flags *f, int argc, char **argv, const char *shortopts,
                    const struct option *longopts);

/* The next item of argv, in argv's order: a flag's index in longopts (its
 * value in ->value: "--name=V", "--name V", "-kV", "-k=V", "-k V"; the next
 * element is the value even when it starts with '-'), or an SS_FLAGS_* code. */
int ss_flags_next(ss_flags *f);

#endif
