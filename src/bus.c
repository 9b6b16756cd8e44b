/* bus — see bus.h. Envelopes are in bus_envelope.c; the Lua binding, the thread self-test and the benchmark loops are in bus_lua.c. */
#include "bus.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Types ---- */

/* The seen-window: a ring of 128-bit keys plus a chained hash over ring slots. A canonical UUID is
 * its own key (exact); any other id is hashed to 128 bits. Allocated on first bus_seen. */
#define SEEN_BUCKETS (2 * BUS_SEEN_WINDOW)
#define SEEN_NONE 0xFFFFu
struct seen {
    unsigned char keys[BUS_SEEN_WINDOW][16];
    uint16_t next[BUS_SEEN_WINDOW];
    uint16_t buckets[SEEN_BUCKETS];
    size_t pos, count;
};

struct agent {
    struct agent *next; /* hash chain, under bus->lock */
    char name[BUS_NAME_MAX + 1];
    char *description;
    json_t *caps; /* validated array; replaced (never changed) by bus_describe, under the write lock */

    pthread_mutex_t mu; /* the mailbox: ring, head, count, stats */
    struct bus_envelope **ring;
    size_t ring_cap, head, count;
    unsigned long long delivered, refused_full;

    char **patterns; /* under bus->lock */
    size_t npatterns;

    pthread_mutex_t seen_mu;
    struct seen *seen;
};

struct bus {
    pthread_rwlock_t lock;
    size_t capacity;
    struct agent **buckets;
    size_t nbuckets, count;
    struct agent **subs; /* agents with at least one pattern, in subscription order */
    size_t nsubs, subs_cap;
    void (*notify)(void *ud, const char *agent);
    void *notify_ud;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}


/* ---- Topics ---- */

/* pattern: non-empty segments; `*` and `#` only as whole segments; `#` only last. */
static int pattern_valid(const char *p) {
    size_t len = strlen(p);
    if (len == 0 || len >= sizeof(((struct bus_envelope *)0)->topic)) return 0;
    for (;;) {
        const char *e = strchr(p, '.');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0) return 0;
        int wild = memchr(p, '*', n) || memchr(p, '#', n);
        if (wild && n != 1) return 0;
        if (*p == '#' && e) return 0;
        if (!e) return 1;
        p = e + 1;
    }
}

static int topic_valid(const char *t) {
    size_t len = strlen(t);
    if (len == 0 || t[0] == '.' || t[len - 1] == '.' || strstr(t, "..")) return 0;
    return strpbrk(t, "*#") == NULL;
}

/* Both sides already validated. */
static int match_raw(const char *p, const char *t) {
    for (;;) {
        const char *pe = strchr(p, '.');
        size_t pl = pe ? (size_t)(pe - p) : strlen(p);
        if (pl == 1 && *p == '#') return 1;
        if (!t) return 0;
        const char *te = strchr(t, '.');
        size_t tl = te ? (size_t)(te - t) : strlen(t);
        if (!(pl == 1 && *p == '*') && (pl != tl || memcmp(p, t, pl) != 0)) return 0;
        t = te ? te + 1 : NULL;
        if (!pe) return t == NULL;
        p = pe + 1;
    }
}

int bus_topic_match(const char *pattern, const char *topic) {
    if (!pattern || !topic || !pattern_valid(pattern) || !topic_valid(topic)) return 0;
    return match_raw(pattern, topic);
}

/* ---- Agent table (callers hold bus->lock) ---- */

static size_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return (size_t)(h ^ (h >> 29));
}

static struct agent *find(const struct bus *bus, const char *name) {
    if (!name) return NULL;
    for (struct agent *a = bus->buckets[name_hash(name) & (bus->nbuckets - 1)]; a; a = a->next)
        if (strcmp(a->name, name) == 0) return a;
    return NULL;
}

static int name_valid(const char *name) {
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > BUS_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return 0;
    }
    return 1;
}

static void agent_free(struct agent *a) {
    if (!a) return;
    for (size_t i = 0; i < a->count; i++) bus_envelope_free(a->ring[(a->head + i) % a->ring_cap]);
    free(a->ring);
    for (size_t i = 0; i < a->npatterns; i++) free(a->patterns[i]);
    free(a->patterns);
    free(a->description);
    json_decref(a->caps);
    free(a->seen);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->seen_mu);
    free(a);
}

static void subs_remove(struct bus *bus, struct agent *a) {
    for (size_t i = 0; i < bus->nsubs; i++) {
        if (bus->subs[i] == a) {
            memmove(bus->subs + i, bus->subs + i + 1, (bus->nsubs - i - 1) * sizeof *bus->subs);
            bus->nsubs--;
            return;
        }
    }
}

/* ---- The bus ---- */

struct bus *bus_new(size_t mailbox_capacity) {
    struct bus *bus = calloc(1, sizeof *bus);
    if (!bus) return NULL;
    bus->capacity = mailbox_capacity ? mailbox_capacity : BUS_DEFAULT_CAPACITY;
    bus->nbuckets = 64;
    bus->buckets = calloc(bus->nbuckets, sizeof *bus->buckets);
    if (!bus->buckets || pthread_rwlock_init(&bus->lock, NULL) != 0) {
        free(bus->buckets);
        free(bus);
        return NULL;
    }
    return bus;
}

void bus_free(struct bus *bus) {
    if (!bus) return;
    for (size_t i = 0; i < bus->nbuckets; i++) {
        struct agent *a = bus->buckets[i];
        while (a) {
            struct agent *next = a->next;
            agent_free(a);
            a = next;
        }
    }
    free(bus->buckets);
    free(bus->subs);
    pthread_rwlock_destroy(&bus->lock);
    free(bus);
}

void bus_set_notify(struct bus *bus, void (*fn)(void *ud, const char *agent), void *ud) {
    pthread_rwlock_wrlock(&bus->lock);
    bus->notify = fn;
    bus->notify_ud = ud;
    pthread_rwlock_unlock(&bus->lock);
}

/* Parses and checks capabilities; returns a new reference or NULL with err set. */
static json_t *caps_parse(const char *text, char *err, size_t errlen) {
    json_error_t je;
    json_t *caps = json_loads(text ? text : "[]", JSON_REJECT_DUPLICATES, &je);
    if (!caps) {
        set_err(err, errlen, "capabilities: invalid JSON: %s", je.text);
        return NULL;
    }
    if (!json_is_array(caps)) {
        set_err(err, errlen, "capabilities must be a JSON array");
        goto fail;
    }
    size_t i;
    json_t *c;
    json_array_foreach(caps, i, c) {
        if (!json_is_object(c)) {
            set_err(err, errlen, "capabilities[%zu] must be an object", i);
            goto fail;
        }
        json_t *name = json_object_get(c, "name"), *desc = json_object_get(c, "description");
        json_t *args = json_object_get(c, "args");
        if (!json_is_string(name) || json_string_length(name) == 0 || json_string_length(name) > BUS_NAME_MAX) {
            set_err(err, errlen, "capabilities[%zu].name must be a string of 1..%d bytes", i, BUS_NAME_MAX);
            goto fail;
        }
        if (desc && !json_is_string(desc)) {
            set_err(err, errlen, "capabilities[%zu].description must be a string", i);
            goto fail;
        }
        if (!json_is_object(args)) {
            set_err(err, errlen, "capabilities[%zu].args must be a JSON-schema object", i);
            goto fail;
        }
        json_t *type = json_object_get(args, "type");
        if (type && !json_is_string(type) && !json_is_array(type)) {
            set_err(err, errlen, "capabilities[%zu].args.type must be a string or an array", i);
            goto fail;
        }
        const char *key;
        json_t *v;
        json_object_foreach(c, key, v) {
            if (strcmp(key, "name") != 0 && strcmp(key, "description") != 0 && strcmp(key, "args") != 0) {
                set_err(err, errlen, "capabilities[%zu]: unknown key '%s'", i, key);
                goto fail;
            }
        }
        for (size_t j = 0; j < i; j++) {
            if (json_equal(json_object_get(json_array_get(caps, j), "name"), name)) {
                set_err(err, errlen, "capabilities[%zu]: duplicate name '%s'", i, json_string_value(name));
                goto fail;
            }
        }
    }
    return caps;
fail:
    json_decref(caps);
    return NULL;
}

static int table_grow(struct bus *bus) {
    size_t n = bus->nbuckets * 2;
    struct agent **b = calloc(n, sizeof *b);
    if (!b) return BUS_ERROR;
    for (size_t i = 0; i < bus->nbuckets; i++) {
        struct agent *a = bus->buckets[i];
        while (a) {
            struct agent *next = a->next;
            size_t h = name_hash(a->name) & (n - 1);
            a->next = b[h];
            b[h] = a;
            a = next;
        }
    }
    free(bus->buckets);
    bus->buckets = b;
    bus->nbuckets = n;
    return BUS_OK;
}

int bus_register(struct bus *bus, const char *name, const char *description, const char *capabilities_json_text,
                 char *err, size_t errlen) {
    if (!name_valid(name)) {
        set_err(err, errlen, "agent name must be 1..%d characters of [a-z0-9_-]", BUS_NAME_MAX);
        return BUS_INVALID;
    }
    json_t *caps = caps_parse(capabilities_json_text, err, errlen);
    if (!caps) return BUS_INVALID;
    struct agent *a = calloc(1, sizeof *a);
    if (!a || !(a->description = strdup(description ? description : ""))) {
        free(a);
        json_decref(caps);
        set_err(err, errlen, "out of memory");
        return BUS_ERROR;
    }
    strcpy(a->name, name);
    a->caps = caps;
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->seen_mu, NULL);

    pthread_rwlock_wrlock(&bus->lock);
    int rc = BUS_OK;
    if (find(bus, name)) {
        set_err(err, errlen, "agent '%s' is already registered", name);
        rc = BUS_EXISTS;
    } else if (bus->count >= bus->nbuckets && table_grow(bus) != BUS_OK) {
        set_err(err, errlen, "out of memory");
        rc = BUS_ERROR;
    } else {
        size_t h = name_hash(name) & (bus->nbuckets - 1);
        a->next = bus->buckets[h];
        bus->buckets[h] = a;
        bus->count++;
    }
    pthread_rwlock_unlock(&bus->lock);
    if (rc != BUS_OK) agent_free(a);
    return rc;
}

int bus_describe(struct bus *bus, const char *name, const char *description, const char *capabilities_json_text,
                 char *err, size_t errlen) {
    json_t *caps = caps_parse(capabilities_json_text, err, errlen);
    if (!caps) return BUS_INVALID;
    char *desc = strdup(description ? description : "");
    if (!desc) {
        json_decref(caps);
        set_err(err, errlen, "out of memory");
        return BUS_ERROR;
    }
    pthread_rwlock_wrlock(&bus->lock);
    struct agent *a = find(bus, name);
    if (a) {
        char *old_desc = a->description;
        json_t *old_caps = a->caps;
        a->description = desc;
        a->caps = caps;
        desc = old_desc;
        caps = old_caps;
    }
    pthread_rwlock_unlock(&bus->lock);
    free(desc);
    json_decref(caps);
    if (!a) set_err(err, errlen, "no agent '%s'", name);
    return a ? BUS_OK : BUS_UNKNOWN;
}

int bus_unregister(struct bus *bus, const char *name) {
    pthread_rwlock_wrlock(&bus->lock);
    struct agent *a = NULL;
    if (name) {
        for (struct agent **pp = &bus->buckets[name_hash(name) & (bus->nbuckets - 1)]; *pp; pp = &(*pp)->next) {
            if (strcmp((*pp)->name, name) == 0) {
                a = *pp;
                *pp = a->next;
                bus->count--;
                subs_remove(bus, a);
                break;
            }
        }
    }
    pthread_rwlock_unlock(&bus->lock);
    /* No one else can reach a: every path to it went through the table under the lock. */
    agent_free(a);
    return a ? BUS_OK : BUS_UNKNOWN;
}

static int by_name(const void *x, const void *y) {
    return strcmp((*(struct agent *const *)x)->name, (*(struct agent *const *)y)->name);
}

json_t *bus_directory(struct bus *bus) {
    json_t *out = json_array();
    if (!out) return NULL;
    pthread_rwlock_rdlock(&bus->lock);
    struct agent **list = malloc((bus->count ? bus->count : 1) * sizeof *list);
    size_t n = 0;
    if (list) {
        for (size_t i = 0; i < bus->nbuckets; i++)
            for (struct agent *a = bus->buckets[i]; a; a = a->next) list[n++] = a;
        qsort(list, n, sizeof *list, by_name);
        /* Deep copies: the caller's references must not share refcounts with the bus. */
        for (size_t i = 0; i < n; i++)
            json_array_append_new(out, json_pack("{s:s, s:s, s:o}", "name", list[i]->name, "description",
                                                 list[i]->description, "capabilities", json_deep_copy(list[i]->caps)));
    }
    pthread_rwlock_unlock(&bus->lock);
    if (!list) {
        json_decref(out);
        return NULL;
    }
    free(list);
    return out;
}

/* ---- Mailboxes ---- */

/* Appends e (taken over on BUS_OK). Sets *woke when the mailbox was empty. Caller holds bus->lock. */
static int mailbox_push(struct bus *bus, struct agent *a, struct bus_envelope *e, int *woke) {
    int rc = BUS_OK;
    pthread_mutex_lock(&a->mu);
    if (a->count >= bus->capacity) {
        a->refused_full++;
        rc = BUS_FULL;
        goto done;
    }
    if (a->count == a->ring_cap) { /* grow by doubling, up to the capacity */
        size_t ncap = a->ring_cap ? a->ring_cap * 2 : 16;
        if (ncap > bus->capacity) ncap = bus->capacity;
        struct bus_envelope **r = malloc(ncap * sizeof *r);
        if (!r) {
            rc = BUS_ERROR;
            goto done;
        }
        for (size_t i = 0; i < a->count; i++) r[i] = a->ring[(a->head + i) % a->ring_cap];
        free(a->ring);
        a->ring = r;
        a->ring_cap = ncap;
        a->head = 0;
    }
    a->ring[(a->head + a->count) % a->ring_cap] = e;
    *woke = a->count == 0;
    a->count++;
    a->delivered++;
done:
    pthread_mutex_unlock(&a->mu);
    return rc;
}

int bus_send(struct bus *bus, const struct bus_envelope *env) {
    if (bus_envelope_validate(env, NULL, 0) != BUS_OK || env->receiver[0] == '\0') return BUS_INVALID;
    struct bus_envelope *e = bus_envelope_copy(env);
    if (!e || bus_envelope_fill(e) != BUS_OK) {
        bus_envelope_free(e);
        return BUS_ERROR;
    }
    void (*notify)(void *, const char *) = NULL;
    void *ud = NULL;
    int woke = 0, rc;
    pthread_rwlock_rdlock(&bus->lock);
    struct agent *a = find(bus, env->receiver);
    rc = a ? mailbox_push(bus, a, e, &woke) : BUS_UNKNOWN;
    if (woke) {
        notify = bus->notify;
        ud = bus->notify_ud;
    }
    pthread_rwlock_unlock(&bus->lock);
    if (rc != BUS_OK) bus_envelope_free(e);
    /* e->receiver is the agent's name; e itself may already be taken, so use the caller's copy. */
    if (notify) notify(ud, env->receiver);
    return rc;
}

int bus_take(struct bus *bus, const char *agent, struct bus_envelope **out) {
    *out = NULL;
    int rc = BUS_EMPTY;
    pthread_rwlock_rdlock(&bus->lock);
    struct agent *a = find(bus, agent);
    if (!a) {
        rc = BUS_UNKNOWN;
    } else {
        pthread_mutex_lock(&a->mu);
        if (a->count > 0) {
            *out = a->ring[a->head];
            a->head = (a->head + 1) % a->ring_cap;
            a->count--;
            rc = BUS_OK;
        }
        pthread_mutex_unlock(&a->mu);
    }
    pthread_rwlock_unlock(&bus->lock);
    return rc;
}

size_t bus_depth(struct bus *bus, const char *agent) {
    size_t n = 0;
    pthread_rwlock_rdlock(&bus->lock);
    struct agent *a = find(bus, agent);
    if (a) {
        pthread_mutex_lock(&a->mu);
        n = a->count;
        pthread_mutex_unlock(&a->mu);
    }
    pthread_rwlock_unlock(&bus->lock);
    return n;
}

/* ---- Publish / subscribe ---- */

int bus_subscribe(struct bus *bus, const char *agent, const char *pattern) {
    if (!pattern || !pattern_valid(pattern)) return BUS_INVALID;
    int rc = BUS_OK;
    pthread_rwlock_wrlock(&bus->lock);
    struct agent *a = find(bus, agent);
    if (!a) {
        rc = BUS_UNKNOWN;
        goto done;
    }
    for (size_t i = 0; i < a->npatterns; i++)
        if (strcmp(a->patterns[i], pattern) == 0) goto done;
    char **p = realloc(a->patterns, (a->npatterns + 1) * sizeof *p);
    if (!p) {
        rc = BUS_ERROR;
        goto done;
    }
    a->patterns = p;
    if (a->npatterns == 0 && bus->nsubs == bus->subs_cap) {
        size_t ncap = bus->subs_cap ? bus->subs_cap * 2 : 16;
        struct agent **s = realloc(bus->subs, ncap * sizeof *s);
        if (!s) {
            rc = BUS_ERROR;
            goto done;
        }
        bus->subs = s;
        bus->subs_cap = ncap;
    }
    if (!(p[a->npatterns] = strdup(pattern))) {
        rc = BUS_ERROR;
        goto done;
    }
    if (a->npatterns++ == 0) bus->subs[bus->nsubs++] = a;
done:
    pthread_rwlock_unlock(&bus->lock);
    return rc;
}

int bus_unsubscribe(struct bus *bus, const char *agent, const char *pattern) {
    int rc = BUS_UNKNOWN;
    pthread_rwlock_wrlock(&bus->lock);
    struct agent *a = find(bus, agent);
    for (size_t i = 0; a && pattern && i < a->npatterns; i++) {
        if (strcmp(a->patterns[i], pattern) == 0) {
            free(a->patterns[i]);
            a->patterns[i] = a->patterns[--a->npatterns];
            if (a->npatterns == 0) subs_remove(bus, a);
            rc = BUS_OK;
            break;
        }
    }
    pthread_rwlock_unlock(&bus->lock);
    return rc;
}

int bus_publish(struct bus *bus, const struct bus_envelope *env) {
    if (bus_envelope_validate(env, NULL, 0) != BUS_OK || !topic_valid(env->topic)) return BUS_INVALID;
    struct bus_envelope tmpl;
    memcpy(&tmpl, env, sizeof tmpl); /* content stays env's: copies duplicate it */
    if (bus_envelope_fill(&tmpl) != BUS_OK) return BUS_ERROR;

    char stack_wake[16][BUS_NAME_MAX + 1];
    char(*wake)[BUS_NAME_MAX + 1] = stack_wake;
    size_t nwake = 0;
    int delivered = 0, rc = BUS_OK;
    void (*notify)(void *, const char *);
    void *ud;

    pthread_rwlock_rdlock(&bus->lock);
    notify = bus->notify;
    ud = bus->notify_ud;
    if (notify && bus->nsubs > 16 && !(wake = malloc(bus->nsubs * sizeof *wake))) rc = BUS_ERROR;
    for (size_t i = 0; rc == BUS_OK && i < bus->nsubs; i++) {
        struct agent *a = bus->subs[i];
        size_t j = 0;
        while (j < a->npatterns && !match_raw(a->patterns[j], tmpl.topic)) j++;
        if (j == a->npatterns) continue;
        memcpy(tmpl.receiver, a->name, sizeof a->name);
        struct bus_envelope *e = bus_envelope_copy(&tmpl);
        if (!e) {
            rc = BUS_ERROR;
            break;
        }
        int woke = 0;
        int r = mailbox_push(bus, a, e, &woke);
        if (r != BUS_OK) {
            bus_envelope_free(e);
            if (r == BUS_ERROR) rc = r;
            continue;
        }
        delivered++;
        if (woke && notify) memcpy(wake[nwake++], a->name, sizeof a->name);
    }
    pthread_rwlock_unlock(&bus->lock);
    for (size_t i = 0; i < nwake; i++) notify(ud, wake[i]);
    if (wake != stack_wake) free(wake);
    return rc == BUS_OK ? delivered : rc;
}

/* ---- Idempotency window ---- */

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A canonical UUID becomes its 16 bytes; anything else a 128-bit hash. */
static void seen_key(const char *id, unsigned char key[16]) {
    size_t n = strlen(id);
    if (n == 36 && id[8] == '-' && id[13] == '-' && id[18] == '-' && id[23] == '-') {
        int k = 0, ok = 1;
        for (size_t i = 0; i < 36 && ok; i++) {
            if (i == 8 || i == 13 || i == 18 || i == 23) continue;
            int h = hexval(id[i]), l = (i + 1 < 36) ? hexval(id[i + 1]) : -1;
            if (h < 0 || l < 0) ok = 0;
            else key[k++] = (unsigned char)(h << 4 | l);
            i++;
        }
        if (ok && k == 16) return;
    }
    uint64_t h1 = 0x9e3779b97f4a7c15ULL ^ n, h2 = 0xc2b2ae3d27d4eb4fULL ^ n;
    for (size_t i = 0; i < n; i++) {
        h1 = mix64(h1 ^ (unsigned char)id[i]);
        h2 = mix64(h2 + (unsigned char)id[i] * 0x100000001b3ULL);
    }
    memcpy(key, &h1, 8);
    memcpy(key + 8, &h2, 8);
}

static size_t seen_bucket(const unsigned char key[16]) {
    uint64_t x;
    memcpy(&x, key + 8, 8); /* the random half of a v4 UUID */
    return (size_t)(mix64(x) & (SEEN_BUCKETS - 1));
}

/* 1 if key was there; otherwise inserts it (evicting the oldest) and returns 0. */
static int seen_check_insert(struct seen *s, const unsigned char key[16]) {
    size_t b = seen_bucket(key);
    for (uint16_t i = s->buckets[b]; i != SEEN_NONE; i = s->next[i])
        if (memcmp(s->keys[i], key, 16) == 0) return 1;
    size_t slot = s->pos;
    if (s->count == BUS_SEEN_WINDOW) { /* unlink the oldest, which lives in this slot */
        uint16_t *pp = &s->buckets[seen_bucket(s->keys[slot])];
        while (*pp != slot) pp = &s->next[*pp];
        *pp = s->next[slot];
    } else {
        s->count++;
    }
    memcpy(s->keys[slot], key, 16);
    s->next[slot] = s->buckets[b];
    s->buckets[b] = (uint16_t)slot;
    s->pos = (slot + 1) % BUS_SEEN_WINDOW;
    return 0;
}

int bus_seen(struct bus *bus, const char *agent, const char *envelope_id) {
    if (!envelope_id || !*envelope_id) return BUS_INVALID;
    unsigned char key[16];
    seen_key(envelope_id, key);
    int rc;
    pthread_rwlock_rdlock(&bus->lock);
    struct agent *a = find(bus, agent);
    if (!a) {
        rc = BUS_UNKNOWN;
    } else {
        pthread_mutex_lock(&a->seen_mu);
        if (!a->seen && (a->seen = malloc(sizeof *a->seen))) {
            memset(a->seen->buckets, 0xFF, sizeof a->seen->buckets);
            a->seen->pos = a->seen->count = 0;
        }
        rc = a->seen ? seen_check_insert(a->seen, key) : BUS_ERROR;
        pthread_mutex_unlock(&a->seen_mu);
    }
    pthread_rwlock_unlock(&bus->lock);
    return rc;
}

/* ---- Stats ---- */

json_t *bus_stats_json(struct bus *bus) {
    json_t *out = json_object();
    if (!out) return NULL;
    pthread_rwlock_rdlock(&bus->lock);
    for (size_t i = 0; i < bus->nbuckets; i++) {
        for (struct agent *a = bus->buckets[i]; a; a = a->next) {
            pthread_mutex_lock(&a->mu);
            json_t *s = json_pack("{s:I, s:I, s:I}", "delivered", (json_int_t)a->delivered, "refused_full",
                                  (json_int_t)a->refused_full, "depth", (json_int_t)a->count);
            pthread_mutex_unlock(&a->mu);
            json_object_set_new(out, a->name, s);
        }
    }
    pthread_rwlock_unlock(&bus->lock);
    return out;
}
