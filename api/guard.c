/* guard.c - connection deadlines: header time, body rate, a peer gone unnoticed, eviction when full */
#include "api/guard.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <poll.h>
#include <sys/socket.h>

#include "util/clock.h"

const char *const ss_guard_reason[SS_GUARD_NREASONS] = {"header_timeout", "slow_body", "peer_gone", "evicted"};

enum { P_WAIT, P_BODY, P_DOOMED, P_WORK }; /* the first three have a list each */

/* A peer seen closed twice this far apart, with no progress between, is gone: once is not
 * enough, MHD may have read a complete request and not yet called the handler. */
#define GONE_CONFIRM_S 0.25
/* A connection shut down this long ago and still not closed by MHD is shut down again. MHD
 * 0.9.75 drains epoll in batches of 128 and, after a full batch, waits again with its full
 * timeout before handling it: with the listening socket out of its set (limit reached) and
 * the remaining connections quiet, the hang-up sat unhandled for seconds. Each shutdown(2)
 * wakes its epoll anew. */
#define NUDGE_AFTER_S 0.05
/* How often one connection's socket is peeked at, and how old its phase must be first. */
#define PEEK_EVERY_S 1.0

typedef struct ss_gconn {
    struct ss_gconn *prev, *next; /* in g->lists[phase] unless WORK */
    int phase;
    int fd;
    int kept;                     /* WAIT after a previous request (kept alive) */
    double t_phase;               /* when the phase began */
    unsigned long long bytes;     /* atomic: body bytes of the current request */
    double t_mark;                /* BODY: start of the current rate window ... */
    unsigned long long mark;      /* ... and the bytes then */
    double t_peek;                /* next peek at the socket */
    double t_gone;                /* peer first seen closed; 0 = not */
    unsigned long long gone_bytes;
} ss_gconn;

typedef struct { ss_gconn *head, *tail; int n; } clist;

struct ss_guard {
    ss_guard_limits lim;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t reaper;
    int stop;
    clist lists[3]; /* P_WAIT, P_BODY, P_DOOMED, each oldest first (entered in time order) */
    int live;       /* tracked and not doomed */
    int listen_fd;  /* -1 when unknown or closed */
    unsigned long long closed[SS_GUARD_NREASONS];
    unsigned long long logged[SS_GUARD_NREASONS];
    double t_logged;
};

static void push(clist *l, ss_gconn *c) {
    c->next = NULL;
    c->prev = l->tail;
    if (l->tail) l->tail->next = c;
    else l->head = c;
    l->tail = c;
    l->n++;
}

static void unlink_c(ss_guard *g, ss_gconn *c) {
    if (c->phase == P_WORK) return;
    clist *l = &g->lists[c->phase];
    if (c->prev) c->prev->next = c->next;
    else l->head = c->next;
    if (c->next) c->next->prev = c->prev;
    else l->tail = c->prev;
    c->prev = c->next = NULL;
    l->n--;
}

static void enter(ss_guard *g, ss_gconn *c, int phase, double now) {
    unlink_c(g, c);
    c->phase = phase;
    c->t_phase = now;
    c->t_peek = now + PEEK_EVERY_S;
    c->t_gone = 0;
    if (phase != P_WORK) push(&g->lists[phase], c);
}

/* Under g->mu, so c->fd is still c's: MHD notifies CLOSED (which takes g->mu) before close(2). */
static void doom(ss_guard *g, ss_gconn *c, int why) {
    enter(g, c, P_DOOMED, ss_now());
    g->live--;
    g->closed[why]++;
    /* Both directions: the hang-up wakes MHD's epoll and it closes the connection. */
    shutdown(c->fd, SHUT_RDWR);
}

/* 1 once the peer has been seen closed twice, GONE_CONFIRM_S apart, with nothing read meanwhile. */
static int peer_gone(ss_gconn *c, double now) {
    if (now < c->t_peek && !c->t_gone) return 0;
    c->t_peek = now + PEEK_EVERY_S;
    unsigned long long b = __atomic_load_n(&c->bytes, __ATOMIC_RELAXED);
    char x;
    ssize_t k = recv(c->fd, &x, 1, MSG_PEEK | MSG_DONTWAIT);
    int closed = k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    if (!closed || (c->t_gone && b != c->gone_bytes)) {
        c->t_gone = 0;
        return 0;
    }
    if (!c->t_gone) {
        c->t_gone = now;
        c->gone_bytes = b;
        return 0;
    }
    return now - c->t_gone >= GONE_CONFIRM_S;
}

/* At the limit MHD stops accepting; while someone waits in the listen queue, free a slot
 * from the longest-waiting connection (accepting the newcomer then frees the next one). */
static void evict_for_queue(ss_guard *g) {
    ss_gconn *old = g->lists[P_WAIT].head;
    if (g->live < g->lim.max_connections || g->listen_fd < 0 || !old) return;
    struct pollfd p = {.fd = g->listen_fd, .events = POLLIN};
    if (poll(&p, 1, 0) == 1 && (p.revents & POLLIN)) doom(g, old, SS_GUARD_EVICTED);
}

static void check(ss_guard *g, double now) {
    const ss_guard_limits *lim = &g->lim;
    ss_gconn *next;
    for (ss_gconn *c = g->lists[P_WAIT].head; c; c = next) {
        next = c->next;
        double budget = lim->header_timeout_s + (c->kept ? lim->idle_timeout_s : 0);
        if (lim->header_timeout_s > 0 && now - c->t_phase >= budget)
            doom(g, c, SS_GUARD_HEADER_TIMEOUT);
        else if (now - c->t_phase >= PEEK_EVERY_S && peer_gone(c, now))
            doom(g, c, SS_GUARD_PEER_GONE);
    }
    for (ss_gconn *c = g->lists[P_BODY].head; c; c = next) {
        next = c->next;
        unsigned long long b = __atomic_load_n(&c->bytes, __ATOMIC_RELAXED);
        double span = now - c->t_mark;
        if (lim->min_rate > 0 && span >= lim->rate_window_s) {
            if ((double)(b - c->mark) < lim->min_rate * span) {
                doom(g, c, SS_GUARD_SLOW_BODY);
                continue;
            }
            c->t_mark = now;
            c->mark = b;
        }
        if (now - c->t_phase >= PEEK_EVERY_S && peer_gone(c, now)) doom(g, c, SS_GUARD_PEER_GONE);
    }
    evict_for_queue(g);
    for (ss_gconn *c = g->lists[P_DOOMED].head; c && now - c->t_phase >= NUDGE_AFTER_S; c = c->next)
        shutdown(c->fd, SHUT_RDWR);
}

/* One line now and then, not one per connection: under attack that would be thousands a
 * second. Composed into line (empty: nothing to say) under g->mu, written after it is
 * released: a write(2) to a log on a busy disk can block for seconds, and the polling
 * thread must never wait on g->mu that long. */
static void log_closed(ss_guard *g, double now, char *line, size_t size) {
    line[0] = 0;
    if (now - g->t_logged < 10.0) return;
    unsigned long long d[SS_GUARD_NREASONS], sum = 0;
    for (int i = 0; i < SS_GUARD_NREASONS; i++) sum += d[i] = g->closed[i] - g->logged[i];
    if (!sum) return;
    snprintf(line, size,
             "svdslice: http: closed %llu connections: %llu past --header-timeout, %llu under --min-rate, "
             "%llu gone peers, %llu evicted to admit new ones (limit full)\n",
             sum, d[SS_GUARD_HEADER_TIMEOUT], d[SS_GUARD_SLOW_BODY], d[SS_GUARD_PEER_GONE], d[SS_GUARD_EVICTED]);
    memcpy(g->logged, g->closed, sizeof g->logged);
    g->t_logged = now;
}

static void *reaper(void *arg) {
    ss_guard *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        double now = ss_now();
        check(g, now);
        char line[256];
        log_closed(g, now, line, sizeof line);
        if (line[0]) {
            pthread_mutex_unlock(&g->mu);
            fputs(line, stderr);
            pthread_mutex_lock(&g->mu);
        }
        /* A tick, not the next deadline: deadlines are whole seconds, a quarter is precise enough. */
        double wait = g->lists[P_DOOMED].n ? NUDGE_AFTER_S : g->lists[P_WAIT].n || g->lists[P_BODY].n ? 0.25 : 1.0;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        long long ns = ts.tv_nsec + (long long)(wait * 1e9);
        ts.tv_sec += (time_t)(ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        while (!g->stop && pthread_cond_timedwait(&g->cv, &g->mu, &ts) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

ss_guard *ss_guard_start(const ss_guard_limits *lim) {
    ss_guard *g = calloc(1, sizeof *g);
    if (!g) {
        fprintf(stderr, "svdslice serve: out of memory\n");
        return NULL;
    }
    g->lim = *lim;
    g->listen_fd = -1;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    int e = pthread_create(&g->reaper, NULL, reaper, g);
    if (e) {
        fprintf(stderr, "svdslice serve: cannot start the connection reaper: %s\n", strerror(e));
        pthread_cond_destroy(&g->cv);
        pthread_mutex_destroy(&g->mu);
        free(g);
        return NULL;
    }
    return g;
}

void ss_guard_free(ss_guard *g) {
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->stop = 1;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->reaper, NULL);
    /* The daemon has stopped: every connection was closed and freed through ss_guard_close. */
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

void ss_guard_set_listen_fd(ss_guard *g, int fd) {
    pthread_mutex_lock(&g->mu);
    g->listen_fd = fd;
    pthread_mutex_unlock(&g->mu);
}

void ss_guard_get_stats(ss_guard *g, ss_guard_stats *st) {
    pthread_mutex_lock(&g->mu);
    st->connections = g->live;
    st->waiting = g->lists[P_WAIT].n;
    st->receiving = g->lists[P_BODY].n;
    memcpy(st->closed, g->closed, sizeof st->closed);
    pthread_mutex_unlock(&g->mu);
}

ss_gconn *ss_guard_open(ss_guard *g, int fd) {
    ss_gconn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->fd = fd;
    c->phase = P_WORK; /* not in a list yet */
    pthread_mutex_lock(&g->mu);
    enter(g, c, P_WAIT, ss_now());
    g->live++;
    /* This one takes the last slot: MHD would stop accepting, and the next client would wait
     * in the listen queue until some connection ends. Free a slot now, at the expense of the
     * connection that has waited longest for its own request to arrive. */
    ss_gconn *old = g->lists[P_WAIT].head;
    if (g->live >= g->lim.max_connections && old && old != c) doom(g, old, SS_GUARD_EVICTED);
    pthread_mutex_unlock(&g->mu);
    return c;
}

void ss_guard_close(ss_guard *g, ss_gconn *c) {
    if (!c) return;
    pthread_mutex_lock(&g->mu);
    if (c->phase != P_DOOMED) g->live--;
    unlink_c(g, c);
    pthread_mutex_unlock(&g->mu);
    free(c);
}

int ss_guard_headers(ss_guard *g, ss_gconn *c, int has_body) {
    if (!c) return 0;
    int ret = 0;
    pthread_mutex_lock(&g->mu);
    if (c->phase == P_DOOMED) {
        ret = -1;
    } else {
        double now = ss_now();
        __atomic_store_n(&c->bytes, 0, __ATOMIC_RELAXED);
        enter(g, c, has_body ? P_BODY : P_WORK, now);
        c->t_mark = now;
        c->mark = 0;
    }
    pthread_mutex_unlock(&g->mu);
    return ret;
}

void ss_guard_body_bytes(ss_gconn *c, unsigned long long n) {
    if (c) __atomic_add_fetch(&c->bytes, n, __ATOMIC_RELAXED);
}

void ss_guard_body_end(ss_guard *g, ss_gconn *c) {
    if (!c) return;
    pthread_mutex_lock(&g->mu);
    if (c->phase == P_BODY) enter(g, c, P_WORK, ss_now());
    pthread_mutex_unlock(&g->mu);
}

void ss_guard_request_end(ss_guard *g, ss_gconn *c, int kept_alive) {
    if (!c) return;
    pthread_mutex_lock(&g->mu);
    if (c->phase != P_DOOMED) {
        if (kept_alive) {
            enter(g, c, P_WAIT, ss_now());
            c->kept = 1;
        } else {
            enter(g, c, P_WORK, ss_now());
        }
    }
    pthread_mutex_unlock(&g->mu);
}
