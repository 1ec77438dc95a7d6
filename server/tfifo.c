/* tfifo.c - an intrusive FIFO of queued jobs that also finds the expired ones in deadline order */
#include "server/tfifo.h"

#include <stddef.h>
#include <time.h>

void ss_tfifo_init(ss_tfifo *q) {
    q->fifo.prev = q->fifo.next = &q->fifo;
    q->by_deadline.dprev = q->by_deadline.dnext = &q->by_deadline;
    q->count = 0;
}

void ss_tfifo_push(ss_tfifo *q, ss_tnode *n) {
    n->next = &q->fifo;
    n->prev = q->fifo.prev;
    q->fifo.prev->next = n;
    q->fifo.prev = n;
    n->dprev = n->dnext = NULL;
    if (n->deadline > 0) {
        /* from the back: a later submission rarely has an earlier deadline */
        ss_tnode *after = q->by_deadline.dprev;
        while (after != &q->by_deadline && after->deadline > n->deadline) after = after->dprev;
        n->dprev = after;
        n->dnext = after->dnext;
        after->dnext->dprev = n;
        after->dnext = n;
    }
    q->count++;
}

static void unlink_node(ss_tfifo *q, ss_tnode *n) {
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = NULL;
    if (n->dprev) {
        n->dprev->dnext = n->dnext;
        n->dnext->dprev = n->dprev;
        n->dprev = n->dnext = NULL;
    }
    q->count--;
}

ss_tnode *ss_tfifo_peek(const ss_tfifo *q) { return q->count ? q->fifo.next : NULL; }

ss_tnode *ss_tfifo_pop(ss_tfifo *q) {
    ss_tnode *n = ss_tfifo_peek(q);
    if (n) unlink_node(q, n);
    return n;
}

ss_tnode *ss_tfifo_pop_expired(ss_tfifo *q, double now) {
    ss_tnode *n = q->by_deadline.dnext;
    if (n == &q->by_deadline || n->deadline > now) return NULL;
    unlink_node(q, n);
    return n;
}

double ss_tfifo_next_deadline(const ss_tfifo *q) {
    const ss_tnode *n = q->by_deadline.dnext;
    return n == &q->by_deadline ? 0 : n->deadline;
}

void ss_tfifo_abstime(double t, struct timespec *ts) {
    ts->tv_sec = (time_t)t;
    ts->tv_nsec = (long)((t - (double)ts->tv_sec) * 1e9);
    if (ts->tv_nsec < 0) ts->tv_nsec = 0;
    if (ts->tv_nsec > 999999999L) ts->tv_nsec = 999999999L;
}
