/* serve.h - `svdslice serve`: the HTTP service */
#ifndef SS_SERVE_H
#define SS_SERVE_H

/* Parses serve's flags (argv[0] is "serve") and environment, runs the server
 * until SIGTERM/SIGINT. Returns the process exit code (0, 1, or 2 on usage). */
int ss_cmd_serve(int argc, char **argv);

#endif
