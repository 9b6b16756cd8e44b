/* workpool — a few threads for CPU-heavy work that must not run on an HTTP worker (argon2id
 * password hashing costs 20–30 ms): the HTTP layer suspends the connection, submits the job
 * here, and resumes the connection when it is done. Bounded queue: a full queue refuses. */
#ifndef ORRERY_WORKPOOL_H
#define ORRERY_WORKPOOL_H

#include <stddef.h>

struct workpool;
typedef void (*workpool_fn)(void *arg);

/* threads workers, at most queue_max jobs waiting. NULL on failure. Caller owns the pool. */
struct workpool *workpool_new(int threads, size_t queue_max);
/* Queues fn(arg). Returns 0, or -1 when the queue is full or the pool is stopping. */
int workpool_submit(struct workpool *p, workpool_fn fn, void *arg);
/* Runs every queued job to the end, joins the threads and frees the pool. Accepts NULL. */
void workpool_free(struct workpool *p);

#endif
