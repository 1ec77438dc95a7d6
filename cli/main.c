/* main.c - svdslice entry point: dispatches subcommands */
#include <stdio.h>
#include <string.h>

#include <cblas.h>

#include "cli/bench.h"
#include "cli/cli.h"
#include "cli/serve.h"
#include "cli/volume.h"
#include "gpu/gpu.h"

/* The commands as data: name and handler (argv[0] is the command's name). */
static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} k_commands[] = {
    {"serve", ss_cmd_serve},
    {"compress", ss_cmd_compress},
    {"reconstruct", ss_cmd_reconstruct},
    {"quality", ss_cmd_quality},
    {"bench", ss_cmd_bench},
    {"backends", ss_cmd_backends},
    {"compress-volume", ss_cmd_compress_volume},
    {"reconstruct-volume", ss_cmd_reconstruct_volume},
};

int main(int argc, char **argv) {
    /* Parallelism is explicit (worker pool, threads kernel): concurrent
     * multi-threaded OpenBLAS calls serialise and spin (see cli/serve.c). */
    openblas_set_num_threads(1);
    ss_gpu_register();
    if (argc < 2) {
        fputs("svdslice: missing command (try svdslice --help)\n", stderr);
        return SS_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        /* "svdslice help COMMAND" is COMMAND --help */
        if (argc >= 3 && strcmp(cmd, "help") == 0) {
            for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++) {
                if (strcmp(argv[2], k_commands[i].name) == 0) {
                    char *sub[] = {argv[2], "--help", NULL};
                    return k_commands[i].run(2, sub);
                }
            }
            fprintf(stderr, "svdslice: unknown command '%s' (try svdslice --help)\n", argv[2]);
            return SS_EXIT_USAGE;
        }
        ss_cli_print_help();
        return SS_EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
        printf("svdslice %s\n", SVDSLICE_VERSION);
        return SS_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        if (strcmp(cmd, k_commands[i].name) == 0) return k_commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "svdslice: unknown %s '%s' (try svdslice --help)\n", cmd[0] == '-' ? "flag" : "command", cmd);
    return SS_EXIT_USAGE;
}
