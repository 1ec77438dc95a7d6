/* metrics.h - request counters and latency histograms, rendered as Prometheus text 0.0.4 */
#ifndef SS_METRICS_H
#define SS_METRICS_H
#include <stddef.h>

#include "util/strbuf.h"

typedef struct ss_metrics ss_metrics;

/* routes: labels of the route table (n of them; the strings must outlive the
 * metrics); requests that match no route count under "unmatched". backends:
 * labels of the reconstruct histogram. Returns NULL on ENOMEM; free with _free. */
ss_metrics *ss_metrics_new(const char *const *routes, int nroutes, const char *const *backends,
                           int nbackends);
void ss_metrics_free(ss_metrics *m);

/* route: index into routes or -1 for unmatched. Thread-safe (atomics). */
void ss_metrics_request(ss_metrics *m, int route, int status);
/* backend: index into backends; seconds: the reconstruct request's latency. */
void ss_metrics_reconstruct(ss_metrics *m, int backend, double seconds);


/* Appends the counters and histograms with their HELP/TYPE lines. */
void ss_metrics_render(ss_metrics *m, ss_strbuf *sb);
/* Appends the HELP and TYPE lines of a metric family. */
void ss_metrics_header(ss_strbuf *sb, const char *name, const char *type, const char *help);
/* Appends one histogram series: counts[i] observations in bucket i (not
 * cumulative; counts[nbounds] is above the last bound), label (e.g.
 * backend="blas") or NULL, and the sum of the observations: cumulative
 * _bucket lines up to le="+Inf", _sum and _count, as Prometheus expects. */
void ss_metrics_histogram(ss_strbuf *sb, const char *name, const char *label, const double *bounds,
                          const unsigned long long *counts, int nbounds, double sum);
/* Appends one gauge or counter sample with its HELP/TYPE header. */
void ss_metrics_value(ss_strbuf *sb, const char *name, const char *type, const char *help, double v);

#endif
