/* serve.c - placeholder until the HTTP service lands (issue 3) */
#include "server/serve.h"

#include <stdio.h>

int ss_cmd_serve(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "svdslice: serve is not built yet\n");
    return 1;
}
