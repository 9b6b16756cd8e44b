/* replica — fan-out between `orrery serve` processes sharing one database, over PostgreSQL
 * LISTEN/NOTIFY: topic publishes (bus envelopes) and agent source changes made on one replica reach
 * the others. NOTIFY takes a global lock at commit, so it is used as a wake-up carrying small
 * payloads or ids, never as the data channel: an envelope whose payload would exceed
 * REPLICA_INLINE_MAX bytes is written to agent_messages (its publication row, receiver '') in the
 * same transaction as the NOTIFY that carries only its id, and receivers read it back by id.
 * Everything a batch of queued items needs is sent in one transaction (one commit, one lock).
 *
 * One thread and one libpq connection of its own (not the pool): it LISTENs, sends what is queued,
 * and hands incoming notifications to the handlers. It waits in poll(2) on the connection's socket
 * and an eventfd that replica_publish/replica_agent_changed write to; after a lost connection it
 * reconnects with backoff and LISTENs again. Delivery is at most once per live listener: a replica
 * that is disconnected misses what was sent meanwhile (docs/replicas.md).
 *
 * Payloads (compact JSON, untrusted on receipt: malformed ones are logged and ignored):
 *   orrery_bus     {"i":instance,"e":envelope}  or  {"i":instance,"id":envelope id}
 *   orrery_agents  {"i":instance,"agent":name,"v":version}
 * A replica ignores the notifications whose "i" is its own instance id.
 * Uses libpq, jansson, bus (envelopes), db (db_exec, db_exec_batch) and log. */
#ifndef ORRERY_REPLICA_H
#define ORRERY_REPLICA_H

#include <stddef.h>

#include "bus.h"

#define REPLICA_CHANNEL_BUS "orrery_bus"
#define REPLICA_CHANNEL_AGENTS "orrery_agents"
#define REPLICA_INLINE_MAX 7000          /* payload bytes sent inline (PostgreSQL's limit is 8000) */
#define REPLICA_QUEUE_MAX 4096           /* queued items; beyond, replica_publish refuses (counted) */
#define REPLICA_QUEUE_BYTES (64u << 20)  /* queued envelope bytes; beyond, likewise */
#define REPLICA_FLUSH_MS 2000            /* how long replica_free may spend sending what is queued */

struct replica;

struct replica_handlers {
    /* A topic envelope published on another replica; ownership of env passes to the callee. */
    void (*on_publish)(void *ud, struct bus_envelope *env);
    /* An agent's source changed on another replica (this process's own changes are not echoed). */
    void (*on_agent)(void *ud, const char *name, long version);
    void *ud;
    /* Listening again after a lost connection: what was sent meanwhile was missed (NOTIFY does not
     * replay), so re-read from the database what must not be missed (agent versions). May be NULL. */
    void (*on_resync)(void *ud);
};

struct replica_stats {
    unsigned long sent;       /* notifications committed */
    unsigned long received;   /* notifications from other replicas handed to a handler */
    unsigned long dropped;    /* items refused (queue full) or that PostgreSQL rejected, or left at shutdown */
    unsigned long reconnects; /* connections re-established after one was lost */
    unsigned long fetched;    /* large envelopes read back from agent_messages */
    unsigned long invalid;    /* received payloads ignored: malformed, or naming a row that is not there */
    unsigned long queued;     /* items waiting to be sent right now */
    int connected;            /* 1 while LISTENing */
};

/* Starts the replica thread for the database at url; instance_uuid (a UUID, this process's
 * agent_instances id) marks what this process sends. Connecting happens in the thread, so this
 * succeeds while PostgreSQL is down (see replica_stats().connected). Handlers run on the replica
 * thread; any may be NULL. Returns NULL with a message in err on bad arguments or when the
 * thread cannot start. Caller owns the result (replica_free). */
struct replica *replica_new(const char *url, const char *instance_uuid, const struct replica_handlers *h, char *err,
                            size_t errlen);
/* Sends what is queued (for at most REPLICA_FLUSH_MS), stops the thread and closes the connection.
 * No handler runs once it has returned (none starts after it was called). Accepts NULL. */
void replica_free(struct replica *r);

/* Queues a copy of env (id and created_at filled when empty) for the other replicas. Never blocks
 * on the network. 0, or -1 when the envelope is invalid, memory runs out, or the queue is full
 * (counted in dropped). env stays the caller's. */
int replica_publish(struct replica *r, const struct bus_envelope *env);
/* Queues "agent name is now at version" (name: 1..63 of [a-z0-9_-]). 0, or -1 as above. */
int replica_agent_changed(struct replica *r, const char *name, long version);

void replica_stats(struct replica *r, struct replica_stats *out);

#endif
