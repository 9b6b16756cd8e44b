/* msglog — the agent bus's record in PostgreSQL (table agent_messages, migrations/V8): every
 * envelope is queued by the thread that sent it (a copy, never blocking) and written by one
 * writer thread in batches (one multi-row INSERT per batch, the batch one JSON parameter), so
 * a conversation can be traced and a message accepted into a mailbox but not yet handled is
 * redelivered once after its process died.
 *
 * The writer keeps its own libpq connection (not the pool) and, on it, a session advisory lock
 * on this process's agent_instances.lock_key for its whole life: "is that process alive" is
 * "is its lock in pg_locks", with no heartbeat. It reconnects with backoff after the server went
 * away, taking the lock again. Uses bus (envelopes), libpq, jansson, log and pthreads.
 *
 * Threads: msglog_record, msglog_handled, msglog_flush and msglog_stats may be called from any
 * thread; msglog_new, msglog_redeliver and msglog_free from one owner thread. */
#ifndef ORRERY_MSGLOG_H
#define ORRERY_MSGLOG_H

#include <stddef.h>

#include "bus.h"

struct msglog;

struct msglog_stats {
    unsigned long written;        /* records in committed batches (duplicates skipped by the key count too) */
    unsigned long dropped;        /* records and handled marks not queued (queue full) or never written (shutdown) */
    unsigned long failed_batches; /* batches given up after their retries (their records are lost) */
    unsigned long reconnects;     /* connections remade after the server went away */
    unsigned long rejected;       /* records the table cannot hold (id not a UUID, bad receiver, invalid JSON...) */
    size_t queued;                /* records and marks waiting for the writer right now */
};

/* Connects to url (the app role; its own connection), takes a session advisory lock on a random
 * lock_key and registers instance_uuid (a canonical UUID) in agent_instances with it, then starts
 * the writer. queue_max (>= 1): records and handled marks waiting at most — a full queue drops
 * and counts, it never blocks; flush_ms (>= 1): the longest a queued record waits for its batch.
 * Refuses an instance_uuid whose registered process is alive (after waiting up to 2 s for the
 * session of a run that just died to go). Returns the log (caller frees with msglog_free), or
 * NULL with a message in err. */
struct msglog *msglog_new(const char *url, const char *instance_uuid, size_t queue_max, int flush_ms, char *err,
                          size_t errlen);
/* Writes what is queued (for at most MSGLOG_SHUTDOWN_MS), stops the writer, removes this
 * process's agent_instances row and closes the connection (releasing the lock). Accepts NULL. */
void msglog_free(struct msglog *ml);
/* Simulates a crash (for specs): stops the writer without writing anything more — queued
 * records and marks are lost, the instance row stays — closes the connection and frees ml.
 * Accepts NULL. */
void msglog_abandon(struct msglog *ml);

#define MSGLOG_SHUTDOWN_MS 5000

/* Queues a copy of env (env stays the caller's). pending = 1: accepted into env->receiver's
 * mailbox, to be handled (state 'pending'; a receiver is required); 0: trace only (receiver ""
 * with a topic is the publication itself). Non-blocking and thread-safe. 0, or -1 when the queue
 * is full (counted in dropped) or the envelope cannot be recorded (counted in rejected: its id
 * is not a UUID, its receiver not an agent name, its user_id neither "" nor a UUID). */
int msglog_record(struct msglog *ml, const struct bus_envelope *env, int pending);
/* Queues "agent handled envelope_id": its row (envelope_id, agent) becomes 'handled'. A mark
 * that reaches the writer before the record it is about still wins (kept for a minute).
 * Non-blocking and thread-safe. 0, or -1 (queue full: counted in dropped; or bad arguments). */
int msglog_handled(struct msglog *ml, const char *agent, const char *envelope_id);
/* Waits until everything queued before the call was written, for at most timeout_ms. 0, or -1
 * on timeout or when a batch holding some of it was given up. */
int msglog_flush(struct msglog *ml, int timeout_ms);
/* Called once at start, before agents run. Claims, exactly once across concurrently starting
 * processes, every 'pending' row whose process is not alive — its instance holds no advisory
 * lock, or it is this process's previous run (same instance_uuid, recorded before this run
 * registered) — marking it 'redelivered' and this instance's; then calls fn for each envelope
 * (fn owns it: bus_envelope_free) in created_at, seq order. Removes the agent_instances rows of
 * dead processes left without pending rows. Returns how many, or -1 with a message in err (rows
 * claimed before an error were delivered to fn). Uses a connection of its own. */
int msglog_redeliver(struct msglog *ml, void (*fn)(void *ud, struct bus_envelope *env), void *ud, char *err,
                     size_t errlen);
void msglog_stats(struct msglog *ml, struct msglog_stats *out);

#endif
