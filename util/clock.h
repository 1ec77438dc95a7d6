/* clock.h - the one monotonic clock and RFC 3339 time stamps */
#ifndef SS_CLOCK_H
#define SS_CLOCK_H
#include <stddef.h>
#include <stdint.h>

/* Seconds on CLOCK_MONOTONIC: for durations and deadlines, never wall time. */
double ss_now(void);
/* Milliseconds on the same clock. */
double ss_now_ms(void);
/* "2024-05-01T12:00:00Z" (RFC 3339, UTC) of unix seconds into buf (>= 21 bytes);
 * the epoch's stamp when t cannot be represented. */
void ss_rfc3339(int64_t unix_seconds, char *buf, size_t size);

#endif
