/* config.h - `svdslice serve` settings from flags and SVDSLICE_* environment variables */
#ifndef SS_CONFIG_H
#define SS_CONFIG_H
#include <stddef.h>

typedef struct ss_config {
    char bind[64];
    int port;
    int reuse_port;            /* SO_REUSEPORT: share the port on purpose */
    char data[1024];
    char store[1024];          /* "" = dir:data; dir:PATH or postgres://... */
    int store_connections;     /* PostgreSQL connection pool size */
    int workers;               /* 0 = online cores */
    int kernel_threads;        /* team of the `threads` backend; 0 = online cores */
    char api_key[256];         /* "" = no key */
    int auth_reads;
    char cors_origin[256];     /* "" = no CORS */
    int cache_mb;              /* factors cache of the store */
    int quota_mb;              /* 0 = none */
    int response_cache_mb;
    int max_body_mb;
    long long max_body_bytes;  /* derived from max_body_mb unless given */
    int upload_buffer_mb;      /* bound on body bytes held by all uploads together */
    int memory_mb;             /* bound on decoded images + SVD workspaces of uploads together */
    double max_expansion;      /* .svd bytes over PNG bytes an upload may reach; 0 = no bound */
    int max_side;
    int max_connections;
    int per_ip_connections;
    int timeout;               /* seconds, idle connections */
    int header_timeout;        /* seconds from accept to complete request headers; 0 = none */
    int min_rate;              /* request body bytes/s averaged over rate_window; 0 = none */
    int rate_window;           /* seconds */
    int queue;                 /* worker pool queue capacity */
    int job_deadline_ms;       /* queued reconstruct/quality jobs */
    int gpu_max_batch;
    double gpu_max_wait_ms;
    int gpu_queue;
    int gpu_memory_mb;
    int gpu_cpu_mode;          /* test aid: run the GPU queue on the CPU for every job */
} ss_config;

/* Fills cfg from defaults, then SVDSLICE_<FLAG> variables, then argv (argv[0]
 * is "serve"; a flag wins over the environment). Returns 0, 1 when --help was
 * printed (exit 0), or 2 after printing one usage error line to stderr. */
int ss_config_parse(ss_config *cfg, int argc, char **argv);

#endif
