/* http.h - the HTTP layer's shared pieces: server context, per-request state, handler helpers */
#ifndef SS_HTTP_H
#define SS_HTTP_H
#include <jansson.h>
#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>

#include "server/server.h"

/* The HTTP front of a server (daemon, suspended-connection count); opaque. */
typedef struct ss_http ss_http;

/* Route labels for ss_metrics_new: the distinct path patterns of the table. */
int ss_http_route_labels(const char *const **labels);

/* Starts the daemon (libmicrohttpd, one epoll polling thread) in front of srv.
 * *port gets the bound port. Returns the handle (free with ss_http_free), or
 * NULL after printing why to stderr (a busy port among the reasons). */
ss_http *ss_http_start(ss_server *srv, unsigned short *port);
/* Stops accepting connections and new jobs, waits up to timeout_s for every
 * suspended connection to be resumed, then stops the daemon. Returns 0, or -1
 * when connections are still suspended (the daemon keeps running). */
int ss_http_stop(ss_http *h, double timeout_s);
/* Stops the daemon if ss_http_stop could not, and frees h. NULL-safe. */
void ss_http_free(ss_http *h);
/* Connections suspended on a job right now (a gauge of /metrics). */
int ss_http_inflight(const ss_http *h);
/* Connections by phase and those the guard closed, by reason (a part of /metrics). */
struct ss_guard_stats;
void ss_http_guard_stats(ss_http *h, struct ss_guard_stats *st);
/* The served OpenAPI document (borrowed) and its YAML text, built at start. */
json_t *ss_http_openapi(const ss_http *h, const char **yaml);

/* ---- per-request state (libmicrohttpd's *con_cls) ------------------------ */
enum { M_GET = 1, M_HEAD = 2, M_POST = 4, M_DELETE = 8, M_OPTIONS = 16, M_OTHER = 32 };

/* A request body: raw PNG bytes, or the `file` field of a multipart form. */
typedef struct ss_upload {
    int mode;               /* UP_* in multipart.c */
    unsigned char *data;    /* the PNG bytes (raw body or the file field), malloc'd */
    size_t len, cap, limit;
    unsigned long long seen; /* body bytes received */
    unsigned long long declared; /* its Content-Length; 0 when chunked (read at the first chunk) */
    int too_large;
    struct MHD_PostProcessor *pp;
    int file_fields;        /* `file` fields seen; only the first is kept */
    char filename[256];
    long long *held;        /* the server-wide count (ss_server.upload_bytes) or NULL */
    long long budget;       /* its bound */
    size_t reserved;        /* bytes of it this upload holds (= cap of data when counted) */
    int overloaded;         /* the budget was spent: answered 503 */
    int any;                /* raw bytes of any kind (a volume), not only a PNG or a form */
} ss_upload;

struct ss_route;
typedef struct ss_req {
    ss_server *srv;
    ss_http *http;
    struct MHD_Connection *conn;
    struct ss_gconn *gc;   /* the connection's guard record (guard.h), NULL if untracked */
    int body_open;         /* a body was announced and has not ended yet */
    const struct ss_route *route;
    int label;             /* metrics route label index, -1 unmatched */
    int method;            /* M_* */
    char url[160];         /* "METHOD /path" for logs */
    char path[160];
    char id[80];           /* the {id} path segment (raw; validate before use) */
    char rid[24];          /* request id for logs and 500 bodies */
    double t_start;
    int status;            /* status queued, for metrics */
    int backend;           /* registry index of the backend that served /reconstruct, -1 */
    int replied;           /* a response was queued (or held) */
    int first_call;        /* inside the request's first handler call */
    int queue_now;         /* queue even on the first call (closes the connection) */
    struct MHD_Response *held; /* decided on the first call, queued on the final one */
    int held_shared;       /* held is shared (ss_reply_shared): never destroyed here */
    void (*release)(void *); /* called with release_arg when the request is done */
    void *release_arg;
    ss_upload up;
    /* async: a job suspended the connection; it sets these then resumes */
    int async;
    int async_done;        /* atomic */
    int async_status;
    struct MHD_Response *async_resp;
} ss_req;

typedef enum MHD_Result (*ss_handler)(ss_req *r);

/* ---- the routes table (http.c): dispatch reads it, so does the OpenAPI generator */
/* R_STORE: reads or writes the store, so a shared store's outage is a 503 store_unavailable there */
enum { R_BODY = 1, R_AUTH_WRITE = 2, R_AUTH_READ = 4, R_STORE = 8,
       R_RAW = 16 /* with R_BODY: any bytes */ };
typedef struct ss_route {
    const char *pattern; /* "{id}" matches one path segment; "{asset}" an embedded asset */
    int methods;         /* M_* mask; HEAD wherever GET */
    ss_handler handler;
    int flags;          /* R_* */
    const char *errors; /* the handler's error codes, space-separated (the router adds its own) */
} ss_route;
extern const ss_route *const ss_routes;
extern const int ss_nroutes;
/* "GET, HEAD, OPTIONS": the methods of mask as Allow lists them. */
void ss_http_methods(int mask, char *buf, size_t size);

/* Queues resp with status (adds CORS headers, logs errors, destroys resp).
 * resp NULL means out of memory: answers 500 internal (without a body if even
 * that cannot be built). */
enum MHD_Result ss_reply(ss_req *r, int status, struct MHD_Response *resp);
/* Queues a response shared between requests (e.g. a cache entry's): it is not
 * modified (its CORS headers must already be there) and not destroyed. */
enum MHD_Result ss_reply_shared(ss_req *r, int status, struct MHD_Response *resp);
/* Adds the --cors-origin headers to resp. */
void ss_add_cors_headers(const ss_server *srv, struct MHD_Response *resp);
/* Queues the JSON error body {"error": {"code", "message"}} with the status and
 * header of code (api/errors.c). */
enum MHD_Result ss_reply_error(ss_req *r, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* 500 internal: logs what with the request id; the message carries the id. */
enum MHD_Result ss_reply_internal(ss_req *r, const char *what);
/* The error of engine code rc (SS_E*) raised at `from` (SS_FROM_*, api/errors.h): ss_error()'s
 * text when the client caused it, else internal with what and the detail. */
enum MHD_Result ss_reply_engine(ss_req *r, int rc, int from, const char *what);

/* Suspends r's connection for a job; call right before handing the job to a
 * queue. Returns 0, or -1 when the server is stopping (nothing suspended). */
int ss_job_begin(ss_req *r);
/* From the job's thread: hands the response to r and resumes the connection.
 * r must not be touched afterwards. */
void ss_job_end(ss_req *r, int status, struct MHD_Response *resp);
/* ss_job_end with the error body of code, at its status. */
void ss_job_fail(ss_req *r, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* ss_reply_engine's answer, from a job's thread. */
void ss_job_fail_engine(ss_req *r, int rc, int from, const char *what);
/* The job could not be queued (after ss_job_begin): answer the engine error err now. */
void ss_job_reject(ss_req *r, int err);

/* Query argument or NULL; "" when its decoded value holds a NUL byte (%00). */
const char *ss_arg(ss_req *r, const char *name);
/* 1 if the decoded argument holds a NUL byte (%00), which C strings hide. */
int ss_arg_has_nul(ss_req *r, const char *name);
/* 1 if id matches [A-Za-z0-9_-]{1,64}. */
int ss_valid_id(const char *id);
/* 1 if s is printable UTF-8 (no control characters) of 1..255 bytes. */
int ss_valid_name(const char *s);

/* ---- uploads (multipart.c) ----------------------------------------------- */
void ss_upload_begin(ss_upload *u, size_t limit);
/* Counts the upload's buffer against *held, bounded by budget (call after begin). */
void ss_upload_set_budget(ss_upload *u, long long *held, long long budget);
/* Gives n bytes back to the count (held may be NULL): for the owner of a body taken from u->data,
 * which takes u->reserved along with it. */
void ss_upload_give_back(long long *held, size_t n);
/* Adds n to the server-wide count *held unless that passes budget: 0, or -1 (nothing taken).
 * held NULL: no bound, 0. Give the bytes back with ss_upload_give_back. */
int ss_budget_take(long long *held, long long budget, long long n);
/* Takes a body chunk. Returns 0, or -1 when the connection should be dropped
 * (a client streaming far beyond the limit). */
int ss_upload_feed(ss_upload *u, struct MHD_Connection *c, const char *data, size_t size);
/* After the last chunk: NULL and the PNG bytes in u->data/len, or the error code
 * (too_large, unsupported_media_type, overloaded when the server-wide budget is
 * spent) with *why set. */
const char *ss_upload_finish(ss_upload *u, struct MHD_Connection *c, const char **why);
void ss_upload_free(ss_upload *u);
/* The image shape a PNG's header declares: width, height and the depth ss_png_decode gives it
 * (16 for 16-bit sources, else 8). 0, or -1 when there is no well-formed IHDR up front. */
int ss_upload_png_shape(const unsigned char *png, size_t len, int *width, int *height, int *bits);

/* ---- helpers of /reconstruct (h_recon.c) the volume routes share ---------- */
long ss_parse_uint(const char *s);                /* strict decimal 0..1e9, else -1 */
/* bits (8, 16; 0 when absent) and window-center/window-width (both, width > 0: *window = 1)
 * of a PNG rendering: 1, or 0 after answering 400 invalid_parameter. */
int ss_parse_png_output(ss_req *r, int *bits, int *window, double *wc, double *ww, enum MHD_Result *ret);
uint64_t ss_fnv1a64(const char *s);               /* ETags from cache keys */
int ss_if_none_match(ss_req *r, const char *etag);
int ss_wants_no_cache(ss_req *r);                 /* Cache-Control/Pragma no-cache */
const char *ss_cache_control(const ss_server *srv); /* of content-addressed renderings */
/* A response cache hit queued as /reconstruct queues one; and a fresh entry's response
 * (Content-Type image/png, ETag, Cache-Control, X-Backend, Server-Timing timing). */
enum MHD_Result ss_reply_cached(ss_req *r, ss_rc_entry *e);
struct MHD_Response *ss_cached_response(ss_server *srv, ss_rc_entry *e, const char *timing);

/* The upload options of slices and volumes: rank=, energy=, psnr= (one at most) and
 * keep-original=true|false (default true). 1, or 0 after answering 400 (into *ret). */
struct ss_target;
int ss_parse_store_options(ss_req *r, struct ss_target *t, int *keep, enum MHD_Result *ret);

/* ---- handlers ------------------------------------------------------------ */
enum MHD_Result ss_h_upload(ss_req *r);
enum MHD_Result ss_h_list(ss_req *r);
enum MHD_Result ss_h_info(ss_req *r);
enum MHD_Result ss_h_delete(ss_req *r);
enum MHD_Result ss_h_original(ss_req *r);
enum MHD_Result ss_h_factors(ss_req *r);
enum MHD_Result ss_h_reconstruct(ss_req *r);
enum MHD_Result ss_h_quality(ss_req *r);
enum MHD_Result ss_h_backends(ss_req *r);
enum MHD_Result ss_h_healthz(ss_req *r);
enum MHD_Result ss_h_metrics(ss_req *r);
enum MHD_Result ss_h_asset(ss_req *r);
enum MHD_Result ss_h_openapi(ss_req *r);
enum MHD_Result ss_h_vupload(ss_req *r);
enum MHD_Result ss_h_vlist(ss_req *r);
enum MHD_Result ss_h_vinfo(ss_req *r);
enum MHD_Result ss_h_vdelete(ss_req *r);
enum MHD_Result ss_h_vreconstruct(ss_req *r);
enum MHD_Result ss_h_vquality(ss_req *r);

#endif
