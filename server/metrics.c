/* metrics.c - request counters and latency histograms in Prometheus text format 0.0.4 */
#include "server/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Statuses the API can answer; anything else counts under "other". */
static const int k_statuses[] = {200, 201, 204, 304, 400, 401, 404, 405, 413, 415, 422, 500, 503, 507};
#define NSTATUS (int)(sizeof k_statuses / sizeof k_statuses[0])

/* Seconds: a cache hit is ~0.1 ms, a 2048x2048 reconstruction a few hundred. */
static const double k_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                   0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5};
#define NBUCKET (int)(sizeof k_buckets / sizeof k_buckets[0])

typedef struct hist {
    unsigned long long counts[NBUCKET + 1]; /* last: +Inf */
    unsigned long long sum_us;
} hist;

struct ss_metrics {
    const char *const *routes;
    const char *const *backends;
    int nroutes, nbackends;
    unsigned long long *requests; /* (nroutes + 1) x (NSTATUS + 1) */
    hist *recon;                  /* nbackends */
};

ss_metrics *ss_metrics_new(const char *const *routes, int nroutes, const char *const *backends,
                           int nbackends) {
    ss_metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->routes = routes;
    m->backends = backends;
    m->nroutes = nroutes;
    m->nbackends = nbackends;
    m->requests = calloc((size_t)(nroutes + 1) * (NSTATUS + 1), sizeof *m->requests);
    m->recon = calloc((size_t)nbackends, sizeof *m->recon);
    if (!m->requests || !m->recon) {
        ss_metrics_free(m);
        return NULL;
    }
    return m;
}

void ss_metrics_free(ss_metrics *m) {
    if (!m) return;
    free(m->requests);
    free(m->recon);
    free(m);
}

void ss_metrics_request(ss_metrics *m, int route, int status) {
    if (route < 0 || route >= m->nroutes) route = m->nroutes;
    int s = NSTATUS;
    for (int i = 0; i < NSTATUS; i++)
        if (k_statuses[i] == status) s = i;
    __atomic_add_fetch(&m->requests[route * (NSTATUS + 1) + s], 1, __ATOMIC_RELAXED);
}

void ss_metrics_reconstruct(ss_metrics *m, int backend, double seconds) {
    if (backend < 0 || backend >= m->nbackends) return;
    hist *h = &m->recon[backend];
    int b = 0;
    while (b < NBUCKET && seconds > k_buckets[b]) b++;
    __atomic_add_fetch(&h->counts[b], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&h->sum_us, (unsigned long long)(seconds * 1e6), __ATOMIC_RELAXED);
}

void ss_metrics_value(ss_strbuf *sb, const char *name, const char *type, const char *help, double v) {
    ss_sb_printf(sb, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

void ss_metrics_render(ss_metrics *m, ss_strbuf *sb) {
    ss_sb_printf(sb, "# HELP svdslice_requests_total HTTP requests answered, by route and status.\n"
                     "# TYPE svdslice_requests_total counter\n");
    for (int r = 0; r <= m->nroutes; r++)
        for (int s = 0; s <= NSTATUS; s++) {
            unsigned long long v = __atomic_load_n(&m->requests[r * (NSTATUS + 1) + s], __ATOMIC_RELAXED);
            if (!v) continue;
            const char *route = r < m->nroutes ? m->routes[r] : "unmatched";
            if (s < NSTATUS)
                ss_sb_printf(sb, "svdslice_requests_total{route=\"%s\",status=\"%d\"} %llu\n", route,
                             k_statuses[s], v);
            else
                ss_sb_printf(sb, "svdslice_requests_total{route=\"%s\",status=\"other\"} %llu\n", route, v);
        }
    ss_metrics_header(sb, "svdslice_request_duration_seconds", "histogram",
                      "Latency of /reconstruct, by the backend that ran (cache hits under their backend).");
    for (int b = 0; b < m->nbackends; b++) {
        hist *h = &m->recon[b];
        unsigned long long counts[NBUCKET + 1];
        for (int i = 0; i <= NBUCKET; i++) counts[i] = __atomic_load_n(&h->counts[i], __ATOMIC_RELAXED);
        char label[96];
        snprintf(label, sizeof label, "backend=\"%s\"", m->backends[b]);
        ss_metrics_histogram(sb, "svdslice_request_duration_seconds", label, k_buckets, counts, NBUCKET,
                             (double)__atomic_load_n(&h->sum_us, __ATOMIC_RELAXED) * 1e-6);
    }
}

void ss_metrics_header(ss_strbuf *sb, const char *name, const char *type, const char *help) {
    ss_sb_printf(sb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void ss_metrics_histogram(ss_strbuf *sb, const char *name, const char *label, const double *bounds,
                          const unsigned long long *counts, int nbounds, double sum) {
    const char *sep = label && *label ? "," : "";
    if (!label) label = "";
    unsigned long long cum = 0;
    for (int i = 0; i <= nbounds; i++) {
        cum += counts[i];
        if (i < nbounds)
            ss_sb_printf(sb, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, label, sep, bounds[i], cum);
        else
            ss_sb_printf(sb, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, label, sep, cum);
    }
    const char *open = *label ? "{" : "", *close = *label ? "}" : "";
    ss_sb_printf(sb, "%s_sum%s%s%s %.17g\n", name, open, label, close, sum);
    ss_sb_printf(sb, "%s_count%s%s%s %llu\n", name, open, label, close, cum);
}
