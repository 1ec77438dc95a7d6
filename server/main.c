/* main.c - svdslice entry point: dispatches subcommands */
#include <stdio.h>
#include <string.h>

#include "server/serve.h"

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "serve") == 0) return ss_cmd_serve(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        printf("svdslice %s\n", SVDSLICE_VERSION);
        return 0;
    }
    fprintf(stderr, "usage: svdslice COMMAND ...\n");
    return 2;
}
