/* http.c - the libmicrohttpd daemon, the one routes table, dispatch, auth, CORS and job hand-off */
#include "api/http.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <stdint.h>

#include "api/assets.h"
#include "api/errors.h"
#include "api/guard.h"
#include "api/json.h"
#include "api/openapi.h"
#include "util/clock.h"
#include "util/error.h"

struct ss_http {
    ss_server *srv;
    struct MHD_Daemon *daemon;
    int inflight; /* atomic: connections suspended on a job */
    MHD_socket quiesced; /* the listening socket after MHD_quiesce_daemon, closed after the stop */
    ss_guard *guard; /* header/body deadlines and eviction (guard.c) */
    json_t *openapi; /* the served document, built at start (openapi.c), and its YAML */
    char *openapi_yaml;
    pthread_mutex_t log_mu; /* log_mhd's rate limit */
    double log_window;
    int log_used;
    unsigned long long log_dropped;
};

/* The whole API. Order matters only between literal paths and "/{asset}". The
 * served OpenAPI document is generated from it (api/openapi.c). */
static const ss_route k_routes[] = {
    {"/slices", M_POST, ss_h_upload, R_BODY | R_AUTH_WRITE | R_STORE,
     "invalid_parameter too_large unsupported_media_type invalid_png overloaded insufficient_storage"},
    {"/slices", M_GET | M_HEAD, ss_h_list, R_AUTH_READ | R_STORE, ""},
    {"/slices/{id}", M_GET | M_HEAD, ss_h_info, R_AUTH_READ | R_STORE, "invalid_id not_found"},
    {"/slices/{id}", M_DELETE, ss_h_delete, R_AUTH_WRITE | R_STORE, "invalid_id not_found"},
    {"/slices/{id}/original", M_GET | M_HEAD, ss_h_original, R_AUTH_READ | R_STORE, "invalid_id not_found original_not_kept overloaded"},
    {"/slices/{id}/factors", M_GET | M_HEAD, ss_h_factors, R_AUTH_READ | R_STORE, "invalid_id not_found overloaded"},
    {"/reconstruct", M_GET | M_HEAD, ss_h_reconstruct, R_AUTH_READ | R_STORE,
     "invalid_id not_found invalid_k invalid_backend invalid_parameter backend_unavailable overloaded"},
    {"/quality", M_GET | M_HEAD, ss_h_quality, R_AUTH_READ | R_STORE,
     "invalid_id not_found invalid_k invalid_backend backend_unavailable overloaded"},
    {"/volumes", M_POST, ss_h_vupload, R_BODY | R_RAW | R_AUTH_WRITE | R_STORE,
     "invalid_parameter too_large unsupported_media_type invalid_nifti unsupported_nifti backend_unavailable "
     "overloaded"},
    {"/volumes", M_GET | M_HEAD, ss_h_vlist, R_AUTH_READ | R_STORE, ""},
    {"/volumes/{id}", M_GET | M_HEAD, ss_h_vinfo, R_AUTH_READ | R_STORE, "invalid_id invalid_parameter not_found overloaded"},
    {"/volumes/{id}", M_DELETE, ss_h_vdelete, R_AUTH_WRITE | R_STORE, "invalid_id not_found"},
    {"/volumes/{id}/reconstruct", M_GET | M_HEAD, ss_h_vreconstruct, R_AUTH_READ | R_STORE,
     "invalid_id not_found not_ready invalid_k invalid_backend invalid_parameter backend_unavailable overloaded"},
    {"/volumes/{id}/quality", M_GET | M_HEAD, ss_h_vquality, R_AUTH_READ | R_STORE,
     "invalid_id not_found not_ready invalid_k invalid_backend backend_unavailable overloaded"},
    {"/backends", M_GET | M_HEAD, ss_h_backends, 0, ""},
    {"/healthz", M_GET | M_HEAD, ss_h_healthz, 0, ""},
    {"/metrics", M_GET | M_HEAD, ss_h_metrics, R_AUTH_READ, ""},
    {"/", M_GET | M_HEAD, ss_h_asset, 0, ""},
    {"/openapi.yaml", M_GET | M_HEAD, ss_h_openapi, 0, ""},
    {"/openapi.json", M_GET | M_HEAD, ss_h_openapi, 0, ""},
    {"/{asset}", M_GET | M_HEAD, ss_h_asset, 0, ""},
};
#define N_ROUTES (int)(sizeof k_routes / sizeof k_routes[0])
const ss_route *const ss_routes = k_routes;
const int ss_nroutes = N_ROUTES;

/* Distinct patterns, for metrics labels; k_label[i] is route i's label index. */
static const char *k_labels[N_ROUTES];
static int k_label[N_ROUTES];
static int k_nlabels;

int ss_http_route_labels(const char *const **labels) {
    if (!k_nlabels)
        for (int i = 0; i < N_ROUTES; i++) {
            int j = 0;
            while (j < k_nlabels && strcmp(k_labels[j], k_routes[i].pattern)) j++;
            if (j == k_nlabels) k_labels[k_nlabels++] = k_routes[i].pattern;
            k_label[i] = j;
        }
    *labels = k_labels;
    return k_nlabels;
}

/* ---- small helpers ------------------------------------------------------- */

int ss_valid_id(const char *id) {
    size_t n = strlen(id);
    if (n < 1 || n > 64) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}

int ss_valid_name(const char *s) {
    size_t n = strlen(s);
    if (n < 1 || n > 255) return 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int extra;
        unsigned cp;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f) return 0;
            p++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            extra = 1, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            extra = 2, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            extra = 3, cp = c & 0x07;
        } else {
            return 0;
        }
        for (int i = 1; i <= extra; i++) {
            if ((p[i] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        /* overlong forms, surrogates, beyond Unicode, C1 controls */
        if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff || (cp >= 0x80 && cp < 0xa0))
            return 0;
        p += extra + 1;
    }
    return 1;
}

const char *ss_arg(ss_req *r, const char *name) {
    const char *v = NULL;
    size_t n = 0;
    if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name), &v, &n) != MHD_YES || !v)
        return NULL;
    /* A decoded %00 would cut the C string short ("5%00abc" read as "5"):
     * hand out "" instead, which no parameter accepts. */
    return strlen(v) == n ? v : "";
}

int ss_arg_has_nul(ss_req *r, const char *name) {
    const char *v = NULL;
    size_t n = 0;
    if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name), &v, &n) != MHD_YES || !v)
        return 0;
    return strlen(v) != n;
}

static void method_list(int mask, char *buf, size_t size) {
    static const struct { int bit; const char *name; } names[] = {
        {M_GET, "GET"}, {M_HEAD, "HEAD"}, {M_POST, "POST"}, {M_DELETE, "DELETE"}, {M_OPTIONS, "OPTIONS"}};
    buf[0] = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (mask & names[i].bit) {
            size_t n = strlen(buf);
            snprintf(buf + n, size - n, "%s%s", n ? ", " : "", names[i].name);
        }
}

void ss_http_methods(int mask, char *buf, size_t size) { method_list(mask, buf, size); }

/* ---- replies ------------------------------------------------------------- */

void ss_add_cors_headers(const ss_server *srv, struct MHD_Response *resp) {
    const ss_config *cfg = srv->cfg;
    if (!cfg->cors_origin[0]) return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", cfg->cors_origin);
    MHD_add_response_header(resp, "Access-Control-Expose-Headers", "ETag, X-Backend, Server-Timing, Location");
    if (strcmp(cfg->cors_origin, "*") != 0) MHD_add_response_header(resp, "Vary", "Origin");
}

enum MHD_Result ss_reply_shared(ss_req *r, int status, struct MHD_Response *resp) {
    r->status = status;
    r->replied = 1;
    if (r->first_call && !r->queue_now) { /* see ss_reply */
        r->held = resp;
        r->held_shared = 1;
        return MHD_YES;
    }
    return MHD_queue_response(r->conn, (unsigned)status, resp);
}

enum MHD_Result ss_reply(ss_req *r, int status, struct MHD_Response *resp) {
    if (!resp) {
        fprintf(stderr, "svdslice: %s %s: out of memory building the response\n", r->rid, r->url);
        /* Still the documented error body when a small copy fits; an empty one otherwise. */
        char body[160];
        int n = snprintf(body, sizeof body,
                         "{\"error\":{\"code\":\"internal\",\"message\":"
                         "\"internal error (request %s): out of memory\"}}",
                         r->rid);
        status = ss_api_status("internal");
        resp = MHD_create_response_from_buffer((size_t)n, body, MHD_RESPMEM_MUST_COPY);
        if (resp && MHD_add_response_header(resp, "Content-Type", "application/json") != MHD_YES) {
            MHD_destroy_response(resp);
            resp = NULL;
        }
        if (!resp) resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (!resp) return MHD_NO;
    }
    ss_add_cors_headers(r->srv, resp);
    r->status = status;
    r->replied = 1;
    if (r->first_call && !r->queue_now) {
        /* libmicrohttpd 0.9.75 closes the connection after a response queued
         * on a request's first call; hold it for the final call to keep alive. */
        r->held = resp;
        return MHD_YES;
    }
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result ss_reply_error(ss_req *r, const char *code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int status = ss_api_status(code);
    fprintf(stderr, "svdslice: %s %s -> %d %s: %s\n", r->rid, r->url, status, code, msg);
    return ss_reply(r, status, ss_resp_error(code, msg));
}

enum MHD_Result ss_reply_internal(ss_req *r, const char *what) {
    return ss_reply_error(r, "internal", "internal error (request %s): %s", r->rid, what);
}

enum MHD_Result ss_reply_engine(ss_req *r, int rc, int from, const char *what) {
    const char *code = ss_api_code_of(rc, from);
    if (!strcmp(code, "internal"))
        return ss_reply_error(r, code, "internal error (request %s): %s: %s", r->rid, what, ss_error());
    return ss_reply_error(r, code, "%s", ss_error());
}

/* ---- jobs: suspend / resume ---------------------------------------------- */

int ss_job_begin(ss_req *r) {
    /* Counted before checking `stopping` so shutdown, which sets `stopping`
     * and then waits for the count to drop, cannot miss this connection. */
    __atomic_add_fetch(&r->http->inflight, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&r->srv->stopping, __ATOMIC_SEQ_CST)) {
        __atomic_sub_fetch(&r->http->inflight, 1, __ATOMIC_SEQ_CST);
        return -1;
    }
    r->async = 1;
    MHD_suspend_connection(r->conn);
    return 0;
}

void ss_job_end(ss_req *r, int status, struct MHD_Response *resp) {
    ss_http *h = r->http;
    struct MHD_Connection *c = r->conn;
    r->async_status = status;
    r->async_resp = resp;
    __atomic_store_n(&r->async_done, 1, __ATOMIC_RELEASE);
    MHD_resume_connection(c);
    __atomic_sub_fetch(&h->inflight, 1, __ATOMIC_SEQ_CST);
}

void ss_job_fail(ss_req *r, const char *code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ss_job_end(r, ss_api_status(code), ss_resp_error(code, msg));
}

void ss_job_fail_engine(ss_req *r, int rc, int from, const char *what) {
    const char *code = ss_api_code_of(rc, from);
    if (!strcmp(code, "internal")) {
        fprintf(stderr, "svdslice: %s %s: %s: %s\n", r->rid, r->url, what, ss_error());
        ss_job_fail(r, code, "internal error (request %s): %s: %s", r->rid, what, ss_error());
    } else {
        ss_job_fail(r, code, "%s", ss_error());
    }
}

void ss_job_reject(ss_req *r, int err) {
    const char *code = ss_api_code_of(err, SS_FROM_QUEUE);
    if (err == SS_EBUSY)
        ss_job_fail(r, code, "server busy: work queue full, retry later");
    else if (err == SS_EUNAVAIL)
        ss_job_fail(r, code, "server is shutting down");
    else
        ss_job_fail_engine(r, err, SS_FROM_QUEUE, "queue");
}

/* ---- routing ------------------------------------------------------------- */

static int match(const char *pattern, const char *url, ss_req *r) {
    if (!strcmp(pattern, "/{asset}")) {
        if (url[0] != '/' || !url[1] || strchr(url + 1, '/')) return 0;
        for (const ss_asset *a = ss_assets; a->path; a++)
            if (!strcmp(a->path, url)) return 1;
        return 0;
    }
    const char *p = pattern, *u = url;
    while (*p) {
        if (!strncmp(p, "{id}", 4)) {
            size_t n = strcspn(u, "/");
            if (n == 0) return 0;
            /* An over-long segment still matches (kept truncated, still over
             * 64 characters) so the handler answers 400 invalid_id, not 404. */
            size_t keep = n < sizeof r->id ? n : sizeof r->id - 1;
            memcpy(r->id, u, keep);
            r->id[keep] = 0;
            u += n;
            p += 4;
            continue;
        }
        if (*p != *u) return 0;
        p++, u++;
    }
    return *u == 0;
}

static int method_bit(const char *m) {
    if (!strcmp(m, "GET")) return M_GET;
    if (!strcmp(m, "HEAD")) return M_HEAD;
    if (!strcmp(m, "POST")) return M_POST;
    if (!strcmp(m, "DELETE")) return M_DELETE;
    if (!strcmp(m, "OPTIONS")) return M_OPTIONS;
    return M_OTHER;
}

/* Constant-time comparison of the bearer token with the key. libmicrohttpd
 * 0.9.75 ends every header value at a NUL byte, value and length alike, so
 * "Bearer KEY\0junk" arrives as "Bearer KEY": no length check can tell (1.0
 * answers such a request 400 by default). */
static int authorized(ss_req *r) {
    const char *key = r->srv->cfg->api_key;
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    const char *tok = h + 7;
    while (*tok == ' ' || *tok == '\t') tok++;
    size_t a = strlen(tok), b = strlen(key);
    while (a && (tok[a - 1] == ' ' || tok[a - 1] == '\t')) a--; /* optional whitespace, not the token */
    unsigned char diff = (unsigned char)(a != b);
    for (size_t i = 0; i < b; i++) diff |= (unsigned char)(key[i] ^ (i < a ? tok[i] : 0));
    return diff == 0;
}

static enum MHD_Result preflight(ss_req *r, int allowed) {
    char methods[80];
    method_list(allowed | M_OPTIONS, methods, sizeof methods);
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Allow", methods);
    if (r->srv->cfg->cors_origin[0]) {
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", methods);
        MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                "Authorization, Content-Type, Cache-Control, If-None-Match");
        MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    }
    return ss_reply(r, 204, resp);
}

/* First call of a request: route it, check method and auth. Returns MHD_YES
 * with r->route set when the handler should run, or the result of an answer
 * already queued (r->replied). */
static enum MHD_Result route_request(ss_req *r, const char *url) {
    int allowed = 0;
    const ss_route *hit = NULL;
    for (int i = 0; i < N_ROUTES; i++) {
        if (!match(k_routes[i].pattern, url, r)) continue;
        if (r->label < 0) r->label = k_label[i];
        allowed |= k_routes[i].methods;
        int want = r->method == M_OPTIONS ? 0 : r->method;
        if (!hit && (k_routes[i].methods & want)) {
            hit = &k_routes[i];
            r->label = k_label[i];
        }
    }
    if (!allowed) return ss_reply_error(r, "not_found", "no such path: %s", r->path);
    if (r->method == M_OPTIONS) return preflight(r, allowed);
    if (!hit) {
        char methods[80];
        method_list(allowed | M_OPTIONS, methods, sizeof methods);
        const char *code = "method_not_allowed";
        struct MHD_Response *resp = ss_resp_error(code, "method not allowed here");
        if (resp) MHD_add_response_header(resp, "Allow", methods); /* the value errors.c leaves to us */
        fprintf(stderr, "svdslice: %s %s -> %d %s\n", r->rid, r->url, ss_api_status(code), code);
        return ss_reply(r, ss_api_status(code), resp);
    }
    const ss_config *cfg = r->srv->cfg;
    int need = (hit->flags & R_AUTH_WRITE) || ((hit->flags & R_AUTH_READ) && cfg->auth_reads);
    if (cfg->api_key[0] && need && !authorized(r)) {
        r->queue_now = (hit->flags & R_BODY) != 0; /* refuse the body of an unauthorised upload */
        return ss_reply_error(r, "unauthorized", "missing or wrong Authorization: Bearer key");
    }
    r->route = hit;
    return MHD_YES;
}

/* libmicrohttpd decodes the path in place and hands on_request a C string
 * without its length, so a %00 would cut it short ("/slices/ID%00.svd" read as
 * "/slices/ID"). The raw path is checked here, before it is decoded; what this
 * returns is the request's first *con_cls. (A %00 in the query is ss_arg's.) */
static char k_nul_path; /* its address marks a path with a %00 */

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c) {
    if (!uri) return NULL; /* a request line without one */
    return memmem(uri, strcspn(uri, "?"), "%00", 3) ? &k_nul_path : NULL;
}

/* ---- connections: the guard's hooks (guard.h) ------------------------------ */

static struct ss_gconn *gconn_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info ? info->socket_context : NULL;
}

/* MHD's NOTIFY_CONNECTION: both calls come from the polling thread, CLOSED before MHD
 * closes the socket, so the guard never shuts down a descriptor that was reused. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    ss_http *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        *socket_context = info ? ss_guard_open(h->guard, info->connect_fd) : NULL;
    } else {
        ss_guard_close(h->guard, *socket_context);
        *socket_context = NULL;
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size,
                                  void **con_cls) {
    ss_http *h = cls;
    ss_server *srv = h->srv;
    ss_req *r = *con_cls;
    int nul_path = r == (void *)&k_nul_path;
    if (nul_path) r = *con_cls = NULL;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        *con_cls = r;
        r->srv = srv;
        r->http = h;
        r->conn = c;
        r->label = -1;
        r->backend = -1;
        r->t_start = ss_now();
        r->method = method_bit(method);
        snprintf(r->url, sizeof r->url, "%s %s", method, url);
        snprintf(r->path, sizeof r->path, "%s", url);
        snprintf(r->rid, sizeof r->rid, "%llx-%llx", (unsigned long long)getpid() & 0xffff,
                 __atomic_add_fetch(&srv->next_rid, 1, __ATOMIC_RELAXED));
        r->first_call = 1;
        r->gc = gconn_of(c);
        const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Transfer-Encoding");
        const char *len = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        r->body_open = te || (len && strtoull(len, NULL, 10) > 0);
        if (ss_guard_headers(h->guard, r->gc, r->body_open) != 0)
            return MHD_NO; /* the guard closed it while its headers were being read */
        enum MHD_Result ret = nul_path ? ss_reply_error(r, "not_found", "no such path: it holds a NUL (%%00)")
                                       : route_request(r, url);
        if (!r->replied && ret == MHD_YES && (r->route->flags & R_BODY)) {
            const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
            if (cl && strtoull(cl, NULL, 10) > (unsigned long long)srv->cfg->max_body_bytes) {
                r->queue_now = 1; /* answer before the client sends it all */
                ret = ss_reply_error(r, "too_large", "body of %s bytes is over the limit of %lld bytes", cl,
                                     srv->cfg->max_body_bytes);
            } else {
                ss_upload_begin(&r->up, (size_t)srv->cfg->max_body_bytes);
                ss_upload_set_budget(&r->up, &srv->upload_bytes, srv->upload_budget);
                r->up.any = (r->route->flags & R_RAW) != 0;
            }
        }
        r->first_call = 0;
        return ret;
    }
    if (r->async) { /* resumed by the job: queue what it built */
        if (!__atomic_load_n(&r->async_done, __ATOMIC_ACQUIRE)) return MHD_YES;
        struct MHD_Response *resp = r->async_resp;
        r->async_resp = NULL;
        r->async = 0;
        if (!resp) return ss_reply(r, 500, NULL);
        if (r->async_status >= 400)
            fprintf(stderr, "svdslice: %s %s -> %d\n", r->rid, r->url, r->async_status);
        return ss_reply(r, r->async_status, resp);
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        ss_guard_body_bytes(r->gc, n);
        if (!r->replied && r->route && (r->route->flags & R_BODY))
            return ss_upload_feed(&r->up, c, upload_data, n) == 0 ? MHD_YES : MHD_NO;
        /* a body nobody reads: discard, but not forever */
        r->up.seen += n;
        return r->up.seen > (unsigned long long)srv->cfg->max_body_bytes ? MHD_NO : MHD_YES;
    }
    if (r->body_open) { /* the body is complete: its rate check ends */
        r->body_open = 0;
        ss_guard_body_end(h->guard, r->gc);
    }
    if (r->held) { /* the final call: send what the first call decided */
        struct MHD_Response *resp = r->held;
        r->held = NULL;
        enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
        if (!r->held_shared) MHD_destroy_response(resp);
        return ret;
    }
    if (r->replied) return MHD_YES;
    if (!(r->route->flags & R_BODY)) return r->route->handler(r);
    const char *why = NULL;
    const char *err = ss_upload_finish(&r->up, c, &why);
    if (err) return ss_reply_error(r, err, "%s", why);
    return r->route->handler(r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    ss_http *h = cls;
    ss_server *srv = h->srv;
    ss_req *r = *con_cls;
    /* The connection waits for its next request now (header deadline again), or closes. */
    ss_guard_request_end(h->guard, gconn_of(c), toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
    if (!r || r == (void *)&k_nul_path) return; /* the mark alone: on_request never ran */
    if (r->status) ss_metrics_request(srv->metrics, r->label, r->status);
    if (r->route && r->route->handler == ss_h_reconstruct && r->backend >= 0 && r->status < 400)
        ss_metrics_reconstruct(srv->metrics, r->backend, ss_now() - r->t_start);
    if (r->async_resp) MHD_destroy_response(r->async_resp);
    if (r->held && !r->held_shared) MHD_destroy_response(r->held);
    if (r->release) r->release(r->release_arg);
    ss_upload_free(&r->up);
    free(r);
    *con_cls = NULL;
}

/* ---- daemon -------------------------------------------------------------- */

/* libmicrohttpd logs a line for every connection it drops mid-request: under attack that is
 * thousands a second, and a write(2) held up by a busy disk stalled the polling thread for
 * seconds. So at most LOG_PER_S lines a second; the rest are counted, and the count reported
 * with the next line let through. */
#define LOG_PER_S 20
static void log_mhd(void *cls, const char *fmt, va_list ap) {
    ss_http *h = cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    pthread_mutex_lock(&h->log_mu);
    double now = ss_now();
    if (now - h->log_window >= 1.0) {
        h->log_window = now;
        h->log_used = 0;
    }
    if (h->log_used >= LOG_PER_S) {
        h->log_dropped++;
        pthread_mutex_unlock(&h->log_mu);
        return;
    }
    h->log_used++;
    unsigned long long dropped = h->log_dropped;
    h->log_dropped = 0;
    pthread_mutex_unlock(&h->log_mu);
    if (dropped)
        fprintf(stderr, "svdslice: http: %s(%llu earlier messages of libmicrohttpd left out)\n", line, dropped);
    else
        fprintf(stderr, "svdslice: http: %s", line);
}

ss_http *ss_http_start(ss_server *srv, unsigned short *port) {
    const ss_config *cfg = srv->cfg;
    struct sockaddr_in sa4;
    struct sockaddr_in6 sa6;
    struct sockaddr *sa;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    memset(&sa4, 0, sizeof sa4);
    memset(&sa6, 0, sizeof sa6);
    if (inet_pton(AF_INET, cfg->bind, &sa4.sin_addr) == 1) {
        sa4.sin_family = AF_INET;
        sa4.sin_port = htons((uint16_t)cfg->port);
        sa = (struct sockaddr *)&sa4;
    } else if (inet_pton(AF_INET6, cfg->bind, &sa6.sin6_addr) == 1) {
        sa6.sin6_family = AF_INET6;
        sa6.sin6_port = htons((uint16_t)cfg->port);
        sa = (struct sockaddr *)&sa6;
        flags |= MHD_USE_IPv6;
    } else {
        fprintf(stderr, "svdslice serve: --bind: not an IPv4 or IPv6 address: %s\n", cfg->bind);
        return NULL;
    }
    ss_http *h = calloc(1, sizeof *h);
    if (!h) {
        fprintf(stderr, "svdslice serve: out of memory\n");
        return NULL;
    }
    h->srv = srv;
    h->quiesced = MHD_INVALID_SOCKET;
    pthread_mutex_init(&h->log_mu, NULL);
    h->openapi = ss_openapi_build(cfg);
    h->openapi_yaml = h->openapi ? ss_yaml_dump(h->openapi) : NULL;
    if (!h->openapi_yaml) {
        fprintf(stderr, "svdslice serve: cannot build the OpenAPI document\n");
        ss_http_free(h);
        return NULL;
    }
    ss_guard_limits lim = {.max_connections = cfg->max_connections,
                           .header_timeout_s = cfg->header_timeout,
                           .idle_timeout_s = cfg->timeout,
                           .min_rate = cfg->min_rate,
                           .rate_window_s = cfg->rate_window};
    h->guard = ss_guard_start(&lim);
    if (!h->guard) {
        ss_http_free(h);
        return NULL;
    }
    errno = 0;
    h->daemon = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, log_mhd, h,
        MHD_OPTION_SOCK_ADDR, sa,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
        MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)cfg->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->per_ip_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->timeout,
        /* Headers and one read buffer live here; bodies are copied out chunk by
         * chunk. 0.9.75 zeroes this pool for every request: 32 KiB (the default)
         * measured ~8% faster on cached /reconstruct than 64 KiB. */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)32768,
        /* SO_REUSEPORT only when asked: two servers with different settings
         * sharing a port would answer at random. */
        MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)(cfg->reuse_port != 0), MHD_OPTION_END);
    if (!h->daemon) {
        int e = errno;
        if (e == EADDRINUSE)
            fprintf(stderr, "svdslice serve: cannot listen on %s:%d: the port is in use by another program "
                            "(--reuse-port shares it on purpose)\n", cfg->bind, cfg->port);
        else
            fprintf(stderr, "svdslice serve: cannot listen on %s:%d%s%s\n", cfg->bind, cfg->port,
                    e ? ": " : "", e ? strerror(e) : "");
        ss_http_free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    *port = info ? info->port : (unsigned short)cfg->port;
    info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_LISTEN_FD);
    if (info) ss_guard_set_listen_fd(h->guard, info->listen_fd);
    return h;
}

int ss_http_stop(ss_http *h, double timeout_s) {
    if (!h || !h->daemon) return 0;
    ss_guard_set_listen_fd(h->guard, -1); /* about to be shut down, later closed */
    if (h->quiesced == MHD_INVALID_SOCKET) {
        /* New connections are refused from here (shutdown stops a Linux listening
         * socket), but the fd is closed only after MHD_stop_daemon: MHD's thread
         * may still use it (libmicrohttpd's documentation; TSan saw it race). */
        h->quiesced = MHD_quiesce_daemon(h->daemon);
        if (h->quiesced != MHD_INVALID_SOCKET) shutdown(h->quiesced, SHUT_RDWR);
    }
    __atomic_store_n(&h->srv->stopping, 1, __ATOMIC_SEQ_CST);
    /* Every suspended connection must be resumed before MHD_stop_daemon; the
     * queues keep running their jobs meanwhile. */
    double end = ss_now() + timeout_s;
    while (__atomic_load_n(&h->inflight, __ATOMIC_SEQ_CST) > 0 && ss_now() < end) usleep(2000);
    /* Give resumed connections a moment to send what their jobs built. */
    end = ss_now() + 1.0;
    while (ss_now() < end) {
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (!info || info->num_connections == 0) break;
        usleep(5000);
    }
    if (__atomic_load_n(&h->inflight, __ATOMIC_SEQ_CST) > 0) {
        fprintf(stderr, "svdslice: jobs still running at shutdown; the daemon stops after the queues drain\n");
        return -1; /* stopping with suspended connections would abort */
    }
    MHD_stop_daemon(h->daemon);
    h->daemon = NULL;
    if (h->quiesced != MHD_INVALID_SOCKET) close(h->quiesced);
    h->quiesced = MHD_INVALID_SOCKET;
    return 0;
}

void ss_http_free(ss_http *h) {
    if (!h) return;
    if (h->daemon && ss_http_stop(h, 0.0) != 0) {
        /* Never free state a running daemon still uses. */
        fprintf(stderr, "svdslice: connections still suspended; leaving the daemon to the exit\n");
        return;
    }
    ss_guard_free(h->guard); /* after the daemon: no hook runs any more */
    json_decref(h->openapi);
    free(h->openapi_yaml);
    pthread_mutex_destroy(&h->log_mu);
    free(h);
}

json_t *ss_http_openapi(const ss_http *h, const char **yaml) {
    *yaml = h->openapi_yaml;
    return h->openapi;
}

int ss_http_inflight(const ss_http *h) { return __atomic_load_n(&h->inflight, __ATOMIC_RELAXED); }

void ss_http_guard_stats(ss_http *h, ss_guard_stats *st) { ss_guard_get_stats(h->guard, st); }
