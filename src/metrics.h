/* metrics — request counters by route, method and status, a latency histogram per route, and
 * gauges, rendered in the Prometheus text format for GET /metrics. Lock-free: counters are
 * atomics sized from the route table at start. Uses router for labels. */
#ifndef ORRERY_METRICS_H
#define ORRERY_METRICS_H

#include <stddef.h>

#include "router.h"

/* routes borrowed; must outlive the metrics. Returns 0 or -1 (out of memory). */
int metrics_init(const struct route *routes, size_t count);
void metrics_free(void);
/* route_index: the matched route or -1 for unmatched requests. */
void metrics_record(int route_index, int status, double seconds);

/* Appends Prometheus text to a growing buffer. */
struct metrics_buf {
    char *data;
    size_t len, cap;
};
void metrics_printf(struct metrics_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends the HTTP series. */
void metrics_render_http(struct metrics_buf *b);

#endif
