/* cli.h - the svdslice subcommands (compress, reconstruct, quality, backends) and their flag parser */
#ifndef SS_CLI_H
#define SS_CLI_H
#include <stddef.h>

/* Process exit codes of API.md "Command line". */
enum { SS_EXIT_OK = 0, SS_EXIT_FAIL = 1, SS_EXIT_USAGE = 2 };

/* Each command takes argv[0] = its own name, prints its result on stdout,
 * one error line on stderr, and returns the exit code. */
int ss_cmd_compress(int argc, char **argv);
int ss_cmd_reconstruct(int argc, char **argv);
int ss_cmd_quality(int argc, char **argv);
int ss_cmd_backends(int argc, char **argv);

/* The program's own --help text and the per-command help, on stdout. */
void ss_cli_print_help(void);

/* One flag of a command. `name` is the long name without "--"; short_name is
 * 0 or a letter usable as "-x". A flag with takes_value stores a pointer
 * into argv in *value (a later one wins); one without sets *seen = 1.
 * "--name=V", "--name V", "-xV", "-x=V" and "-x V" are all accepted, names
 * exactly (no abbreviations); "--" ends the flags. */
typedef struct ss_opt {
    const char *name;
    char short_name;
    int takes_value;
    const char **value;
    int *seen;
} ss_opt;

/* Parses argv[1..] of command `cmd` (opts ends with a {NULL} entry) with
 * util/flags.h (getopt_long), in argv's order; argv is not reordered. Stores
 * at most max_pos positionals, which may come before, between or after the
 * flags, in pos and their count in *npos. "--help"/"-h" sets *help and stops.
 * Returns 0, or SS_EXIT_USAGE after printing one line on stderr (unknown
 * flag, missing value, too many positionals). */
int ss_cli_parse(const char *cmd, int argc, char **argv, const ss_opt *opts,
                 const char **pos, int max_pos, int *npos, int *help);

/* Strict positive int: digits only, 1..INT_MAX. Returns 1 if valid. */
int ss_cli_posint(const char *s, int *out);

/* Writes len bytes to path (created or truncated): 0, or -1 with errno. */
int ss_cli_write_file(const char *path, const unsigned char *buf, size_t len);
/* Prints the JSON document j (consumed; NULL means out of memory) on stdout with a
 * final newline: 0, or SS_EXIT_FAIL after one line on stderr. */
struct json_t;
int ss_cli_print_json(const char *cmd, struct json_t *j);

/* Prints "svdslice CMD: message" on stderr and returns code. */
int ss_cli_error(const char *cmd, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
