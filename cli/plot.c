/* plot.c - the bench's SVG chart: grouped bars per k, one per backend, log-scale time axis */
#include "cli/bench.h"

#include <math.h>
#include <string.h>

/* Layout in SVG user units. */
#define PW 960.0
#define PH 520.0
#define ML 80.0  /* left margin: axis labels */
#define MR 170.0 /* right margin: legend */
#define MT 60.0
#define MB 60.0
#define MAX_SERIES 32
#define MAX_GROUPS 64

/* Colour-blind-friendly palette (Okabe-Ito, then Tableau); grey for the baseline. */
static const char *const k_colours[] = {"#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7",
                                        "#56B4E9", "#F0E442", "#8C564B", "#17BECF", "#BCBD22"};

static void xml_text(FILE *fp, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", fp); break;
        case '<': fputs("&lt;", fp); break;
        case '>': fputs("&gt;", fp); break;
        case '"': fputs("&quot;", fp); break;
        default:
            /* control bytes are not allowed in XML 1.0 */
            if ((unsigned char)*s >= 0x20 || *s == '\t') fputc(*s, fp);
        }
    }
}

/* Vertical position of a time on the log axis spanning decades d_lo..d_hi. */
static double y_of(double ms, int d_lo, int d_hi, double y0, double y1) {
    return y0 - (log10(ms) - d_lo) / (d_hi - d_lo) * (y0 - y1);
}

static int timed(const ss_bench_row *r) { return isfinite(r->median_ms) && r->median_ms > 0; }

/* Index of s in list (appending it if new); -1 when full. */
static int intern(const char **list, int *n, int max, const char *s) {
    for (int i = 0; i < *n; i++)
        if (strcmp(list[i], s) == 0) return i;
    if (*n >= max) return -1;
    list[*n] = s;
    return (*n)++;
}

static int intern_k(int *list, int *n, int max, int k) {
    for (int i = 0; i < *n; i++)
        if (list[i] == k) return i;
    if (*n >= max) return -1;
    list[*n] = k;
    return (*n)++;
}

int ss_bench_plot_svg(FILE *fp, const ss_bench_row *rows, size_t n, const char *title) {
    const char *series[MAX_SERIES];
    int ks[MAX_GROUPS], ns = 0, ng = 0;
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (!timed(&rows[i])) continue;
        intern(series, &ns, MAX_SERIES, rows[i].backend);
        intern_k(ks, &ng, MAX_GROUPS, rows[i].k);
        lo = fmin(lo, rows[i].median_ms);
        hi = fmax(hi, rows[i].median_ms);
    }
    /* Decades that enclose every bar; bars rise from the lowest decade. */
    int d_lo = ns ? (int)floor(log10(lo)) : -2, d_hi = ns ? (int)ceil(log10(hi)) : 0;
    if (d_hi <= d_lo) d_hi = d_lo + 1;
    const double x0 = ML, x1 = PW - MR, y0 = PH - MB, y1 = MT;
#define YOF(v) y_of((v), d_lo, d_hi, y0, y1)

    fprintf(fp, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" "
                "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n",
            PW, PH, PW, PH);
    fprintf(fp, "<rect x=\"0\" y=\"0\" width=\"%g\" height=\"%g\" fill=\"#ffffff\"/>\n", PW, PH);
    fputs("<text x=\"", fp);
    fprintf(fp, "%g\" y=\"28\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">", PW / 2);
    xml_text(fp, title);
    fputs("</text>\n", fp);
    fprintf(fp, "<text x=\"%g\" y=\"46\" text-anchor=\"middle\" fill=\"#555555\">median time per reconstruction "
                "(pixels out), log scale; lower is faster</text>\n", PW / 2);

    /* Grid: decades labelled, 2..9 as faint minor lines. */
    fputs("<g class=\"grid\">\n", fp);
    for (int d = d_lo; d <= d_hi; d++) {
        double y = YOF(pow(10.0, d));
        fprintf(fp, "<line x1=\"%g\" y1=\"%.2f\" x2=\"%g\" y2=\"%.2f\" stroke=\"#999999\" stroke-width=\"1\"/>\n",
                x0, y, x1, y);
        fprintf(fp, "<text class=\"tick\" x=\"%g\" y=\"%.2f\" text-anchor=\"end\" dominant-baseline=\"middle\">%g ms</text>\n",
                x0 - 6, y, pow(10.0, d));
        for (int m = 2; m <= 9 && d < d_hi; m++) {
            double ym = YOF(m * pow(10.0, d));
            fprintf(fp, "<line x1=\"%g\" y1=\"%.2f\" x2=\"%g\" y2=\"%.2f\" stroke=\"#e4e4e4\" stroke-width=\"1\"/>\n",
                    x0, ym, x1, ym);
        }
    }
    fputs("</g>\n", fp);
    fprintf(fp, "<text x=\"18\" y=\"%g\" text-anchor=\"middle\" transform=\"rotate(-90 18 %g)\">time (ms)</text>\n",
            (y0 + y1) / 2, (y0 + y1) / 2);

    /* Bars: one group per k, one slot per series within it. */
    double gw = ng ? (x1 - x0) / ng : (x1 - x0);
    double bw = ns ? gw * 0.8 / ns : 0;
    fputs("<g class=\"bars\">\n", fp);
    for (size_t i = 0; i < n; i++) {
        const ss_bench_row *r = &rows[i];
        if (!timed(r)) continue;
        int s = intern(series, &ns, MAX_SERIES, r->backend), g = intern_k(ks, &ng, MAX_GROUPS, r->k);
        if (s < 0 || g < 0) continue;
        int baseline = strcmp(r->status, "baseline") == 0;
        const char *colour = baseline ? "#7f7f7f" : k_colours[s % (int)(sizeof k_colours / sizeof k_colours[0])];
        double x = x0 + g * gw + gw * 0.1 + s * bw, y = YOF(r->median_ms);
        fprintf(fp, "<rect class=\"bar\" data-backend=\"");
        xml_text(fp, r->backend);
        fprintf(fp, "\" data-k=\"%d\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"%s>"
                    "<title>",
                r->k, x, y, bw * 0.92, y0 - y, colour, baseline ? " fill-opacity=\"0.6\"" : "");
        xml_text(fp, r->backend);
        fprintf(fp, " k=%d: %.4g ms, %.3g GFLOP/s</title></rect>\n", r->k, r->median_ms, r->gflops);
    }
    fputs("</g>\n", fp);
    for (int g = 0; g < ng; g++)
        fprintf(fp, "<text x=\"%.2f\" y=\"%g\" text-anchor=\"middle\">k = %d</text>\n", x0 + (g + 0.5) * gw, y0 + 20,
                ks[g]);
    fprintf(fp, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#000000\"/>\n", x0, y0, x1, y0);
    fprintf(fp, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#000000\"/>\n", x0, y0, x0, y1);

    /* Legend, in series order. */
    fputs("<g class=\"legend\">\n", fp);
    for (int s = 0; s < ns; s++) {
        int baseline = strcmp(series[s], "sgemm") == 0;
        double y = MT + 10 + s * 22;
        fprintf(fp, "<rect x=\"%g\" y=\"%g\" width=\"14\" height=\"14\" fill=\"%s\"%s/>\n", x1 + 20, y,
                baseline ? "#7f7f7f" : k_colours[s % (int)(sizeof k_colours / sizeof k_colours[0])],
                baseline ? " fill-opacity=\"0.6\"" : "");
        fprintf(fp, "<text x=\"%g\" y=\"%g\">", x1 + 40, y + 11);
        xml_text(fp, series[s]);
        if (baseline) fputs(" (baseline)", fp);
        fputs("</text>\n", fp);
    }
    fputs("</g>\n</svg>\n", fp);
#undef YOF
    return ferror(fp) ? -1 : 0;
}
