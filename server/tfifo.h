/* tfifo.h - an intrusive FIFO of queued jobs that also finds the expired ones in deadline order */
#ifndef SS_TFIFO_H
#define SS_TFIFO_H

/* Embedded in a queued job. Jobs with a deadline are also on a second list
 * ordered by deadline, so a reaper finds the expired ones without scanning the
 * queue: O(1) per job when deadlines come in submission order (one
 * --job-deadline-ms for all), which is how the server sets them. */
typedef struct ss_tnode {
    struct ss_tnode *prev, *next;   /* FIFO order */
    struct ss_tnode *dprev, *dnext; /* deadline order; both NULL without a deadline */
    double enqueued;                /* CLOCK_MONOTONIC seconds */
    double deadline;                /* CLOCK_MONOTONIC seconds; 0 = none */
} ss_tnode;

typedef struct ss_tfifo {
    ss_tnode fifo, by_deadline; /* sentinels */
    int count;
} ss_tfifo;

void ss_tfifo_init(ss_tfifo *q);
/* Appends n (its enqueued and deadline set by the caller). */
void ss_tfifo_push(ss_tfifo *q, ss_tnode *n);
/* The oldest node, or NULL when empty. */
ss_tnode *ss_tfifo_peek(const ss_tfifo *q);
/* Removes and returns the oldest node, or NULL when empty. */
ss_tnode *ss_tfifo_pop(ss_tfifo *q);
/* Removes and returns the node of the earliest deadline if that is <= now, else NULL. */
ss_tnode *ss_tfifo_pop_expired(ss_tfifo *q, double now);
/* The earliest deadline of a queued node, 0 when none has one. */
double ss_tfifo_next_deadline(const ss_tfifo *q);

struct timespec;
/* CLOCK_MONOTONIC seconds t as the timespec of pthread_cond_timedwait (with a
 * condition variable on CLOCK_MONOTONIC). */
void ss_tfifo_abstime(double t, struct timespec *ts);

#endif
