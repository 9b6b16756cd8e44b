/* bus — the in-process message bus agents talk over: FIPA-ACL envelopes, a directory of agents
 * and their capabilities (JADE's yellow pages), bounded per-agent mailboxes (FIFO, owned copies),
 * topic publish/subscribe with `*` and `#` wildcards, a wake-up callback for the scheduler, and a
 * per-agent window of handled envelope ids for idempotent redelivery. Pure C and thread-safe: no
 * Lua state, no database (recording and persistence sit above it). Uses jansson and getrandom(2).
 *
 * Locks, always taken in this order and never the reverse:
 *   1. bus->lock (rwlock over the agent table, subscriptions and the notify callback);
 *   2. one agent's mailbox mutex, or its seen-window mutex (never both, never two agents at once).
 * No lock is held while the notify callback runs, so it may call back into the bus. */
#ifndef ORRERY_BUS_H
#define ORRERY_BUS_H

#include <stddef.h>

#include <jansson.h>

/* Return codes. bus_publish returns a count (>= 0) or one of the negative codes. */
enum {
    BUS_OK = 0,
    BUS_UNKNOWN = -1, /* no agent of that name */
    BUS_FULL = -2,    /* the receiver's mailbox is at capacity: answer with bus_refuse_busy */
    BUS_EMPTY = -3,   /* nothing to take */
    BUS_INVALID = -4, /* malformed envelope, name, pattern or topic */
    BUS_EXISTS = -5,  /* an agent of that name is already registered */
    BUS_ERROR = -6,   /* out of memory, or no randomness */
};

#define BUS_NAME_MAX 63         /* agent names: 1..63 of [a-z0-9_-] */
#define BUS_SEEN_WINDOW 4096    /* handled ids remembered per agent */
#define BUS_DEFAULT_CAPACITY 1024

/* A FIPA-ACL message. Every char array is a NUL-terminated string ("" = absent). content is JSON
 * text (any JSON value; NULL = null) owned by the envelope: bus_envelope_free frees it. */
struct bus_envelope {
    char id[37];
    char performative[16];
    char sender[64];
    char receiver[64];
    char topic[128];
    char conversation_id[64];
    char reply_with[64];
    char in_reply_to[64];
    char user_id[37];
    char *content;
    double created_at; /* seconds since the epoch */
};

struct bus;

/* ---- Envelopes ---- */

/* A zeroed envelope with a fresh UUID v4 id and created_at = now; caller frees. NULL on failure. */
struct bus_envelope *bus_envelope_new(void);
/* Frees env and its content. Accepts NULL. */
void bus_envelope_free(struct bus_envelope *env);
/* Frees env->content only and sets it NULL (for envelopes on the stack). Accepts NULL. */
void bus_envelope_clear(struct bus_envelope *env);
/* A deep copy (content duplicated); caller frees. NULL when out of memory. */
struct bus_envelope *bus_envelope_copy(const struct bus_envelope *env);
/* 1 when p is one of the eleven performatives. */
int bus_performative_valid(const char *p);
/* Checks the performative and that every field is terminated inside its array. The content is
 * not parsed (producers outside C go through bus_envelope_from_json). BUS_OK or BUS_INVALID. */
int bus_envelope_validate(const struct bus_envelope *env, char *err, size_t errlen);
/* Fills id (UUID v4) and created_at when they are empty/zero. BUS_OK or BUS_ERROR. */
int bus_envelope_fill(struct bus_envelope *env);
/* Writes a random UUID v4 (36 chars + NUL) into out. BUS_OK or BUS_ERROR. */
int bus_uuid4(char out[37]);
/* The envelope as compact JSON text (all fields; content embedded as a JSON value). Malloc'd,
 * caller frees with free(). NULL when content is not valid JSON or memory runs out. */
char *bus_envelope_to_json(const struct bus_envelope *env);
/* Parses and validates JSON text: an object whose known keys have the right types and lengths
 * (unknown keys are refused), a valid performative, content any JSON value. Fills id/created_at
 * when missing. Returns a new envelope (caller frees), or NULL with a message in err. */
struct bus_envelope *bus_envelope_from_json(const char *text, char *err, size_t errlen);
/* Builds in *out the `refuse` answer to orig for a full mailbox: receiver = orig->sender,
 * sender = orig->receiver, in_reply_to = orig->reply_with, same conversation and user,
 * content {"reason":"busy"}. out is overwritten (not freed first); its content is owned by out
 * (release with bus_envelope_clear). BUS_OK or BUS_ERROR. */
int bus_refuse_busy(const struct bus_envelope *orig, struct bus_envelope *out);

/* ---- The bus ---- */

/* A bus whose mailboxes hold at most mailbox_capacity envelopes (0 = BUS_DEFAULT_CAPACITY).
 * NULL when out of memory. */
struct bus *bus_new(size_t mailbox_capacity);
/* Frees the bus, its agents and every queued envelope. No other thread may use it. Accepts NULL. */
void bus_free(struct bus *bus);

/* Registers an agent. capabilities_json_text: a JSON array (NULL = []) of objects
 * {name (string, 1..63), description? (string), args (object: a JSON schema)}, names unique.
 * BUS_OK, BUS_INVALID or BUS_EXISTS (message in err), or BUS_ERROR. */
int bus_register(struct bus *bus, const char *name, const char *description, const char *capabilities_json_text,
                 char *err, size_t errlen);
/* Replaces a registered agent's description and capabilities (a new version of its source); its
 * mailbox and subscriptions stay. BUS_OK, BUS_INVALID, BUS_UNKNOWN or BUS_ERROR. */
int bus_describe(struct bus *bus, const char *name, const char *description, const char *capabilities_json_text,
                 char *err, size_t errlen);
/* Removes the agent, its subscriptions and its queued envelopes. BUS_OK or BUS_UNKNOWN. */
int bus_unregister(struct bus *bus, const char *name);
/* A new jansson array of {name, description, capabilities} sorted by name; caller decrefs. */
json_t *bus_directory(struct bus *bus);

/* Wake-up callback, called outside every bus lock when an agent's mailbox goes from empty to
 * non-empty (fn may be NULL). agent is only valid during the call. */
void bus_set_notify(struct bus *bus, void (*fn)(void *ud, const char *agent), void *ud);

/* Queues a copy of env (id/created_at filled when empty) in env->receiver's mailbox.
 * BUS_OK, BUS_UNKNOWN, BUS_FULL, BUS_INVALID or BUS_ERROR. env stays the caller's. */
int bus_send(struct bus *bus, const struct bus_envelope *env);

/* 1 when topic matches pattern: dot-separated segments, `*` = exactly one segment, `#` as the
 * last segment = zero or more. Empty segments, wildcards inside a segment or in the topic, and
 * `#` before the end make either side invalid: no match. */
int bus_topic_match(const char *pattern, const char *topic);
/* Subscribes agent to pattern (validated as above; subscribing twice is a no-op).
 * BUS_OK, BUS_UNKNOWN, BUS_INVALID or BUS_ERROR. */
int bus_subscribe(struct bus *bus, const char *agent, const char *pattern);
/* BUS_OK, or BUS_UNKNOWN when the agent or that subscription does not exist. */
int bus_unsubscribe(struct bus *bus, const char *agent, const char *pattern);
/* Delivers one copy of env (receiver = the subscriber; one id shared by all copies) to each agent
 * with a pattern matching env->topic, at most once per agent. Full mailboxes are skipped (counted
 * in refused_full). Returns the number delivered, or BUS_INVALID / BUS_ERROR. */
int bus_publish(struct bus *bus, const struct bus_envelope *env);

/* Pops the oldest envelope of agent's mailbox into *out (caller frees).
 * BUS_OK, BUS_EMPTY or BUS_UNKNOWN. */
int bus_take(struct bus *bus, const char *agent, struct bus_envelope **out);
/* Envelopes waiting for agent (0 for an unknown agent). */
size_t bus_depth(struct bus *bus, const char *agent);

/* Records envelope_id as handled by agent. Returns 1 if it was already among the agent's last
 * BUS_SEEN_WINDOW ids, 0 if new, BUS_UNKNOWN / BUS_INVALID otherwise. */
int bus_seen(struct bus *bus, const char *agent, const char *envelope_id);

/* A new jansson object {agent: {delivered, refused_full, depth}}; caller decrefs. */
json_t *bus_stats_json(struct bus *bus);

/* ---- Checks and measurements (used by specs and bench/bus.lua) ---- */

/* Runs `threads` senders of `messages` envelopes each into one mailbox, a consumer, and a thread
 * that registers, subscribes, publishes and unregisters meanwhile; checks counts and per-sender
 * order. BUS_OK, or BUS_ERROR with a message in err. */
int bus_selftest_threads(int threads, int messages, char *err, size_t errlen);
/* Seconds for n request -> take -> inform -> take round trips between two agents. < 0 on error. */
double bus_bench_roundtrips(long n);
/* Seconds for n publishes to `subscribers` agents, each taking its copy. < 0 on error. */
double bus_bench_publish(long n, int subscribers);

#endif
