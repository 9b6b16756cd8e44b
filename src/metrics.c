/* metrics — see metrics.h. One slot per route plus one for unmatched requests; each slot holds
 * a counter per status code (100–599) and a histogram of durations. */
#include "metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NSTATUS 500 /* codes 100..599 */
static const double bucket_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NBUCKETS (sizeof bucket_bounds / sizeof bucket_bounds[0])

struct slot {
    atomic_ulong status[NSTATUS];
    atomic_ulong bucket[NBUCKETS + 1]; /* last = +Inf */
    atomic_ulong sum_us;
};

static const struct route *routes;
static size_t nroutes;
static struct slot *slots; /* nroutes + 1 */

int metrics_init(const struct route *r, size_t count) {
    metrics_free();
    slots = calloc(count + 1, sizeof *slots);
    if (!slots) return -1;
    routes = r;
    nroutes = count;
    return 0;
}

void metrics_free(void) {
    free(slots);
    slots = NULL;
    nroutes = 0;
}

void metrics_record(int route_index, int status, double seconds) {
    if (!slots) return;
    size_t i = (route_index >= 0 && (size_t)route_index < nroutes) ? (size_t)route_index : nroutes;
    struct slot *s = &slots[i];
    if (status >= 100 && status <= 599) atomic_fetch_add_explicit(&s->status[status - 100], 1, memory_order_relaxed);
    size_t b = 0;
    while (b < NBUCKETS && seconds > bucket_bounds[b]) b++;
    atomic_fetch_add_explicit(&s->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_us, (unsigned long)(seconds * 1e6), memory_order_relaxed);
}

void metrics_printf(struct metrics_buf *b, const char *fmt, ...) {
    va_list ap;
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(b->data ? b->data + b->len : NULL, b->data ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len <= (size_t)n) cap *= 2;
        char *nd = realloc(b->data, cap);
        if (!nd) return;
        b->data = nd;
        b->cap = cap;
    }
}

static void labels(size_t i, char *out, size_t cap) {
    if (i < nroutes) snprintf(out, cap, "route=\"%s\",method=\"%s\"", routes[i].pattern, routes[i].method);
    else snprintf(out, cap, "route=\"unmatched\",method=\"\"");
}

void metrics_render_http(struct metrics_buf *b) {
    char lab[320];
    metrics_printf(b, "# HELP orrery_http_requests_total HTTP requests by route, method and status.\n"
                      "# TYPE orrery_http_requests_total counter\n");
    for (size_t i = 0; slots && i <= nroutes; i++) {
        labels(i, lab, sizeof lab);
        for (int st = 0; st < NSTATUS; st++) {
            unsigned long n = atomic_load_explicit(&slots[i].status[st], memory_order_relaxed);
            if (n) metrics_printf(b, "orrery_http_requests_total{%s,status=\"%d\"} %lu\n", lab, st + 100, n);
        }
    }
    metrics_printf(b, "# HELP orrery_http_request_duration_seconds Time from request headers to response.\n"
                      "# TYPE orrery_http_request_duration_seconds histogram\n");
    for (size_t i = 0; slots && i <= nroutes; i++) {
        unsigned long count = 0;
        for (size_t k = 0; k <= NBUCKETS; k++) count += atomic_load_explicit(&slots[i].bucket[k], memory_order_relaxed);
        if (!count) continue;
        labels(i, lab, sizeof lab);
        unsigned long cum = 0;
        for (size_t k = 0; k < NBUCKETS; k++) {
            cum += atomic_load_explicit(&slots[i].bucket[k], memory_order_relaxed);
            metrics_printf(b, "orrery_http_request_duration_seconds_bucket{%s,le=\"%g\"} %lu\n", lab, bucket_bounds[k], cum);
        }
        metrics_printf(b, "orrery_http_request_duration_seconds_bucket{%s,le=\"+Inf\"} %lu\n", lab, count);
        metrics_printf(b, "orrery_http_request_duration_seconds_sum{%s} %.6f\n", lab,
                       (double)atomic_load_explicit(&slots[i].sum_us, memory_order_relaxed) / 1e6);
        metrics_printf(b, "orrery_http_request_duration_seconds_count{%s} %lu\n", lab, count);
    }
}
