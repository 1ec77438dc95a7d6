/* guard.h - per-connection deadlines libmicrohttpd 0.9.75 lacks: header time, body rate, eviction when full */
#ifndef SS_GUARD_H
#define SS_GUARD_H

/* libmicrohttpd bounds only idle time (--timeout), so a client sending one header line
 * every few seconds, or a body byte now and then, holds a connection slot for ever. The
 * guard tracks every connection's phase from MHD's callbacks and closes the ones over
 * their budget by shutdown(2) on their socket: MHD then sees the hang-up and drops the
 * connection itself (it owns the descriptor; the guard never closes it).
 *
 * Phases: WAIT (no complete request headers yet: a new connection, or a kept-alive one
 * between requests), BODY (headers done, body arriving), WORK (handler, job, answer; never
 * touched here). A WAIT connection is closed past header_timeout_s from its accept (from
 * the previous answer + idle_timeout_s when kept alive); a BODY one when a rate window of
 * rate_window_s brings less than min_rate bytes/s; either when its peer has closed and MHD
 * has not noticed (0.9.75 misses a FIN that arrives together with the last bytes it read).
 * When a new connection fills the last slot, or clients wait in the listen queue of a full
 * server, the WAIT connection waiting longest is closed so newcomers
 * are not queued behind clients that never finish their requests.
 *
 * Hooks run on MHD's polling thread; one reaper thread checks deadlines. */

struct ss_gconn;
typedef struct ss_guard ss_guard;

typedef struct ss_guard_limits {
    int max_connections;   /* MHD's connection limit */
    double header_timeout_s; /* 0 = no header deadline */
    double idle_timeout_s; /* --timeout: added to the header deadline of a kept-alive connection */
    double min_rate;       /* body bytes/s; 0 = no rate check */
    double rate_window_s;  /* the window the rate is averaged over (and the grace before the first check) */
} ss_guard_limits;

enum { SS_GUARD_HEADER_TIMEOUT, SS_GUARD_SLOW_BODY, SS_GUARD_PEER_GONE, SS_GUARD_EVICTED, SS_GUARD_NREASONS };
extern const char *const ss_guard_reason[SS_GUARD_NREASONS]; /* "header_timeout", ... */

typedef struct ss_guard_stats {
    int connections;        /* open, not yet being closed */
    int waiting;            /* in WAIT */
    int receiving;          /* in BODY */
    unsigned long long closed[SS_GUARD_NREASONS]; /* connections closed by the guard, by reason */
} ss_guard_stats;

/* Starts the reaper thread. NULL after printing why. */
ss_guard *ss_guard_start(const ss_guard_limits *lim);
/* Stops the reaper and frees g; call after the daemon stopped (no hook may run). NULL-safe. */
void ss_guard_free(ss_guard *g);
void ss_guard_get_stats(ss_guard *g, ss_guard_stats *st);
/* The listening socket, polled to see whether clients wait to be accepted; -1 before it is
 * closed (the guard must not poll a descriptor number that may be reused). */
void ss_guard_set_listen_fd(ss_guard *g, int fd);

/* MHD's NOTIFY_CONNECTION STARTED: tracks fd (WAIT), evicting when it fills the last
 * slot. NULL when out of memory (the connection is then untracked; every hook takes NULL). */
struct ss_gconn *ss_guard_open(ss_guard *g, int fd);
/* NOTIFY_CONNECTION CLOSED, before MHD closes the descriptor. */
void ss_guard_close(ss_guard *g, struct ss_gconn *c);
/* The request's headers are complete (the handler's first call): WAIT -> BODY or WORK.
 * Returns -1 when the guard already closed the connection (refuse the request). */
int ss_guard_headers(ss_guard *g, struct ss_gconn *c, int has_body);
/* n body bytes arrived (no lock: a counter). */
void ss_guard_body_bytes(struct ss_gconn *c, unsigned long long n);
/* The body is complete: BODY -> WORK. */
void ss_guard_body_end(ss_guard *g, struct ss_gconn *c);
/* The request ended (MHD's NOTIFY_COMPLETED); kept_alive: the connection may carry another
 * (WORK -> WAIT), else it is closing (stays WORK until closed). */
void ss_guard_request_end(ss_guard *g, struct ss_gconn *c, int kept_alive);

#endif
