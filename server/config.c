/* config.c - parses serve's flags and SVDSLICE_* environment variables (a flag wins) */
#include "server/config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/flags.h"

enum opt_type { OPT_INT, OPT_LLONG, OPT_DBL, OPT_STR, OPT_BOOL };

typedef struct opt {
    const char *name; /* flag without "--"; env is SVDSLICE_ + upper, '-' -> '_' */
    enum opt_type type;
    size_t off, size; /* field offset and, for strings, its capacity */
    double min, max;
    const char *help;
} opt;

#define F(field) offsetof(ss_config, field), sizeof(((ss_config *)0)->field)

/* The one list of serve's settings: parsing, env names and --help come from it. */
static const opt k_opts[] = {
    {"bind", OPT_STR, F(bind), 0, 0, "address to listen on (default 127.0.0.1)"},
    {"port", OPT_INT, F(port), 0, 65535, "TCP port; 0 picks a free one (default 8080)"},
    {"data", OPT_STR, F(data), 0, 0, "data directory (default ./data)"},
    {"store", OPT_STR, F(store), 0, 0,
     "where slices are stored: dir:PATH (one process; the default, dir:DATA) or postgres://... "
     "(shared by replicas)"},
    {"store-connections", OPT_INT, F(store_connections), 1, 1000,
     "PostgreSQL connections each process holds at most (default 8)"},
    {"reuse-port", OPT_BOOL, F(reuse_port), 0, 1,
     "share the port with other servers (SO_REUSEPORT); without it a busy port is an error"},
    {"workers", OPT_INT, F(workers), 0, 1024, "worker threads; 0 = online cores (default 0)"},
    {"kernel-threads", OPT_INT, F(kernel_threads), 0, 64,
     "threads of the `threads` backend's team; 0 = online cores (default 0)"},
    {"api-key", OPT_STR, F(api_key), 0, 0, "POST/DELETE need Authorization: Bearer KEY"},
    {"auth-reads", OPT_BOOL, F(auth_reads), 0, 1, "also require the key for reads"},
    {"cors-origin", OPT_STR, F(cors_origin), 0, 0, "Access-Control-Allow-Origin value"},
    {"cache-mb", OPT_INT, F(cache_mb), 0, 1 << 20, "factors cache (default 256)"},
    {"quota-mb", OPT_INT, F(quota_mb), 0, 1 << 30,
     "bound on the bytes stored (slices' .svd and volumes' .svv); a slice over it -> 507, a volume -> failed; "
     "0 = none (default 0)"},
    {"response-cache-mb", OPT_INT, F(response_cache_mb), 0, 1 << 20,
     "rendered PNG cache; 0 = off (default 64)"},
    {"max-body-mb", OPT_INT, F(max_body_mb), 1, 4096, "upload body limit (default 32)"},
    {"max-body-bytes", OPT_LLONG, F(max_body_bytes), 1, 4294967296.0,
     "upload body limit in bytes (overrides --max-body-mb)"},
    {"upload-buffer-mb", OPT_INT, F(upload_buffer_mb), 1, 1 << 20,
     "body bytes all uploads together may hold (at least one body); over it -> 503 (default 256)"},
    {"memory-mb", OPT_INT, F(memory_mb), 1, 1 << 20,
     "decoded images and SVD workspaces of all uploads together (at least one --max-side 16-bit "
     "upload); over it -> 503 (default 512)"},
    {"max-expansion", OPT_DBL, F(max_expansion), 0, 1e9,
     "largest .svd size over PNG size an upload may store; over it -> 413; 0 = none (default 0)"},
    {"max-side", OPT_INT, F(max_side), 1, 65535, "largest image side accepted (default 2048)"},
    {"max-connections", OPT_INT, F(max_connections), 1, 100000, "default 512"},
    {"per-ip-connections", OPT_INT, F(per_ip_connections), 0, 100000, "0 = unlimited (default 64)"},
    {"timeout", OPT_INT, F(timeout), 1, 86400, "idle connection timeout, seconds (default 30)"},
    {"header-timeout", OPT_INT, F(header_timeout), 0, 86400,
     "seconds a connection gets to send complete request headers (kept alive: --timeout more); "
     "0 = no limit (default 10)"},
    {"min-rate", OPT_INT, F(min_rate), 0, 1 << 30,
     "request bodies slower than this many bytes/s over a --rate-window are cut off; 0 = no limit "
     "(default 4096)"},
    {"rate-window", OPT_INT, F(rate_window), 1, 3600,
     "seconds the body rate is averaged over, and the grace before the first check (default 10)"},
    {"queue", OPT_INT, F(queue), 1, 1 << 20, "worker queue capacity; full -> 503 (default 256)"},
    {"job-deadline-ms", OPT_INT, F(job_deadline_ms), 1, 3600000,
     "reads (reconstruct, quality, original, factors) still queued this long get 503 (default 2000)"},
    {"gpu-max-batch", OPT_INT, F(gpu_max_batch), 1, 4096, "default 64"},
    {"gpu-max-wait-ms", OPT_DBL, F(gpu_max_wait_ms), 0, 1000, "default 0.2"},
    {"gpu-queue", OPT_INT, F(gpu_queue), 1, 1 << 20, "GPU queue capacity (default 1024)"},
    {"gpu-memory-mb", OPT_INT, F(gpu_memory_mb), 1, 1 << 20, "device factors cache (default 1024)"},
    {"gpu-cpu-mode", OPT_BOOL, F(gpu_cpu_mode), 0, 1,
     "test aid: route every reconstruction through the GPU queue run on the CPU"},
};
#define N_OPTS (sizeof k_opts / sizeof k_opts[0])

static void set_defaults(ss_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->bind, sizeof c->bind, "127.0.0.1");
    c->port = 8080;
    snprintf(c->data, sizeof c->data, "./data");
    c->store_connections = 8;
    c->cache_mb = 256;
    c->response_cache_mb = 64;
    c->max_body_mb = 32;
    c->upload_buffer_mb = 256;
    c->memory_mb = 512; /* one 2048x2048 16-bit upload needs 320 MiB */
    c->max_side = 2048;
    c->max_connections = 512;
    c->per_ip_connections = 64;
    c->timeout = 30;
    c->header_timeout = 10;
    c->min_rate = 4096;
    c->rate_window = 10;
    c->queue = 256;
    c->job_deadline_ms = 2000;
    c->gpu_max_batch = 64;
    c->gpu_max_wait_ms = 0.2;
    c->gpu_queue = 1024;
    c->gpu_memory_mb = 1024;
}

/* Stores text into o's field; returns 0 or -1 after printing why (src: "--x" or "SVDSLICE_X"). */
static int set_value(ss_config *c, const opt *o, const char *v, const char *src) {
    char *p = (char *)c + o->off;
    char *end = NULL;
    errno = 0;
    switch (o->type) {
    case OPT_STR:
        if (strlen(v) >= o->size) {
            fprintf(stderr, "svdslice serve: %s: value too long\n", src);
            return -1;
        }
        memcpy(p, v, strlen(v) + 1);
        return 0;
    case OPT_BOOL:
        if (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"))
            *(int *)p = 1;
        else if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") ||
                 !strcasecmp(v, "off") || !*v)
            *(int *)p = 0;
        else {
            fprintf(stderr, "svdslice serve: %s: expected 1/0/true/false, got '%s'\n", src, v);
            return -1;
        }
        return 0;
    case OPT_INT:
    case OPT_LLONG: {
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end || x < o->min || x > o->max) {
            fprintf(stderr, "svdslice serve: %s: expected an integer in %.0f..%.0f, got '%s'\n", src,
                    o->min, o->max, v);
            return -1;
        }
        if (o->type == OPT_INT)
            *(int *)p = (int)x;
        else
            *(long long *)p = x;
        return 0;
    }
    case OPT_DBL: {
        double x = strtod(v, &end);
        if (errno || end == v || *end || !(x >= o->min && x <= o->max)) {
            fprintf(stderr, "svdslice serve: %s: expected a number in %g..%g, got '%s'\n", src, o->min,
                    o->max, v);
            return -1;
        }
        *(double *)p = x;
        return 0;
    }
    }
    return -1;
}

static void usage(FILE *f) {
    fprintf(f, "usage: svdslice serve [--FLAG VALUE]...\n"
               "Serves the HTTP API. Every flag can also be set as SVDSLICE_<FLAG> in the\n"
               "environment (upper case, '-' -> '_'); a flag wins.\n\n");
    for (size_t i = 0; i < N_OPTS; i++)
        fprintf(f, "  --%-20s %s\n", k_opts[i].name, k_opts[i].help);
}

int ss_config_parse(ss_config *c, int argc, char **argv) {
    set_defaults(c);
    int body_bytes_set = 0;
    for (size_t i = 0; i < N_OPTS; i++) {
        char env[64] = "SVDSLICE_";
        size_t n = strlen(env);
        for (const char *s = k_opts[i].name; *s && n + 1 < sizeof env; s++)
            env[n++] = *s == '-' ? '_' : (char)toupper((unsigned char)*s);
        env[n] = 0;
        const char *v = getenv(env);
        if (!v) continue;
        if (set_value(c, &k_opts[i], v, env)) return 2;
        if (!strcmp(k_opts[i].name, "max-body-bytes")) body_bytes_set = 1;
    }
    /* getopt_long's table is k_opts in order, so the index found is k_opts's;
     * --help last. A bool flag takes no value or "=VALUE", never the next word. */
    struct option lo[N_OPTS + 2];
    for (size_t i = 0; i < N_OPTS; i++)
        lo[i] = (struct option){k_opts[i].name, k_opts[i].type == OPT_BOOL ? optional_argument : required_argument,
                                NULL, 0};
    lo[N_OPTS] = (struct option){"help", no_argument, NULL, 'h'};
    lo[N_OPTS + 1] = (struct option){0};
    ss_flags fl;
    ss_flags_begin(&fl, argc, argv, "h", lo);
    for (int i; (i = ss_flags_next(&fl)) != SS_FLAGS_END;) {
        switch (i) {
        case SS_FLAGS_ARG: /* serve takes no positionals */
            fprintf(stderr, "svdslice serve: unexpected argument '%s' (see --help)\n", fl.text);
            return 2;
        case SS_FLAGS_UNKNOWN:
            fprintf(stderr, "svdslice serve: unknown flag '%s' (see --help)\n", fl.text);
            return 2;
        case SS_FLAGS_MISSING:
            fprintf(stderr, "svdslice serve: %s needs a value\n", fl.text);
            return 2;
        case SS_FLAGS_EXTRA:
            fprintf(stderr, "svdslice serve: --%s takes no value\n", fl.opt->name);
            return 2;
        }
        if ((size_t)i == N_OPTS) {
            usage(stdout);
            return 1;
        }
        const opt *o = &k_opts[i];
        if (set_value(c, o, fl.value ? fl.value : "1", fl.text)) return 2; /* a bare bool flag is 1 */
        if (!strcmp(o->name, "max-body-bytes")) body_bytes_set = 1;
    }
    if (!body_bytes_set) c->max_body_bytes = (long long)c->max_body_mb << 20;
    if (c->auth_reads && !c->api_key[0]) {
        fprintf(stderr, "svdslice serve: --auth-reads needs --api-key\n");
        return 2;
    }
    return 0;
}
