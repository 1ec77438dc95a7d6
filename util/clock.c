/* clock.c - the one monotonic clock and RFC 3339 time stamps */
#include "util/clock.h"

#include <stdio.h>
#include <time.h>

double ss_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double ss_now_ms(void) { return ss_now() * 1e3; }

void ss_rfc3339(int64_t unix_seconds, char *buf, size_t size) {
    time_t t = (time_t)unix_seconds;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, size, "1970-01-01T00:00:00Z");
}
