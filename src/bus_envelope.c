/* bus_envelope — the envelope half of bus.h: FIPA-ACL envelopes, their ids (UUID v4 from a
 * per-thread getrandom(2) pool), validation, JSON (jansson), and the busy refusal. */
#include "bus.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- Envelopes ---- */

static const char *const PERFORMATIVES[] = {"request", "inform",  "agree",  "refuse", "failure",  "query",
                                            "propose", "accept",  "reject", "cancel", "subscribe", NULL};

int bus_performative_valid(const char *p) {
    if (!p) return 0;
    for (int i = 0; PERFORMATIVES[i]; i++)
        if (strcmp(p, PERFORMATIVES[i]) == 0) return 1;
    return 0;
}

/* A per-thread pool of random bytes: one getrandom(2) per 16 UUIDs. (A process that forks must not
 * make ids in both parent and child from the same pool; the server does not fork after start.) */
static _Thread_local unsigned char rnd_pool[256];
static _Thread_local size_t rnd_pos = sizeof rnd_pool;

int bus_uuid4(char out[37]) {
    if (rnd_pos + 16 > sizeof rnd_pool) {
        size_t got = 0;
        while (got < sizeof rnd_pool) {
            ssize_t n = getrandom(rnd_pool + got, sizeof rnd_pool - got, 0);
            if (n < 0) {
                if (errno == EINTR) continue;
                return BUS_ERROR;
            }
            got += (size_t)n;
        }
        rnd_pos = 0;
    }
    unsigned char b[16];
    memcpy(b, rnd_pool + rnd_pos, 16);
    rnd_pos += 16;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
        *o++ = hex[b[i] >> 4];
        *o++ = hex[b[i] & 15];
    }
    *o = '\0';
    return BUS_OK;
}

int bus_envelope_fill(struct bus_envelope *env) {
    if (env->id[0] == '\0' && bus_uuid4(env->id) != BUS_OK) return BUS_ERROR;
    if (env->created_at == 0) env->created_at = now_s();
    return BUS_OK;
}

struct bus_envelope *bus_envelope_new(void) {
    struct bus_envelope *env = calloc(1, sizeof *env);
    if (env && bus_envelope_fill(env) != BUS_OK) {
        free(env);
        return NULL;
    }
    return env;
}

void bus_envelope_clear(struct bus_envelope *env) {
    if (!env) return;
    free(env->content);
    env->content = NULL;
}

void bus_envelope_free(struct bus_envelope *env) {
    if (!env) return;
    free(env->content);
    free(env);
}

struct bus_envelope *bus_envelope_copy(const struct bus_envelope *env) {
    struct bus_envelope *c = malloc(sizeof *c);
    if (!c) return NULL;
    memcpy(c, env, sizeof *c);
    if (env->content) {
        size_t n = strlen(env->content) + 1;
        c->content = malloc(n);
        if (!c->content) {
            free(c);
            return NULL;
        }
        memcpy(c->content, env->content, n);
    }
    return c;
}

/* The string fields, for validation and JSON. */
struct field {
    const char *name;
    size_t off, size;
};
#define FIELD(f) {#f, offsetof(struct bus_envelope, f), sizeof(((struct bus_envelope *)0)->f)}
static const struct field FIELDS[] = {
    FIELD(id),         FIELD(performative), FIELD(sender),      FIELD(receiver), FIELD(topic),
    FIELD(conversation_id), FIELD(reply_with), FIELD(in_reply_to), FIELD(user_id),
};
#define NFIELDS (sizeof FIELDS / sizeof FIELDS[0])

int bus_envelope_validate(const struct bus_envelope *env, char *err, size_t errlen) {
    if (!env) {
        set_err(err, errlen, "no envelope");
        return BUS_INVALID;
    }
    for (size_t i = 0; i < NFIELDS; i++) {
        if (!memchr((const char *)env + FIELDS[i].off, '\0', FIELDS[i].size)) {
            set_err(err, errlen, "%s is not terminated", FIELDS[i].name);
            return BUS_INVALID;
        }
    }
    if (!bus_performative_valid(env->performative)) {
        set_err(err, errlen, "invalid performative '%s'", env->performative);
        return BUS_INVALID;
    }
    return BUS_OK;
}

char *bus_envelope_to_json(const struct bus_envelope *env) {
    json_t *o = json_object();
    if (!o) return NULL;
    for (size_t i = 0; i < NFIELDS; i++)
        json_object_set_new(o, FIELDS[i].name, json_string((const char *)env + FIELDS[i].off));
    json_t *content = json_null();
    if (env->content) {
        content = json_loads(env->content, JSON_DECODE_ANY, NULL);
        if (!content) {
            json_decref(o);
            return NULL;
        }
    }
    json_object_set_new(o, "content", content);
    json_object_set_new(o, "created_at", json_real(env->created_at));
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return text;
}

struct bus_envelope *bus_envelope_from_json(const char *text, char *err, size_t errlen) {
    json_error_t je;
    struct bus_envelope *env = NULL;
    json_t *root = json_loads(text ? text : "", JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        set_err(err, errlen, "invalid JSON: %s", je.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        set_err(err, errlen, "an envelope is a JSON object");
        goto fail;
    }
    env = calloc(1, sizeof *env);
    if (!env) {
        set_err(err, errlen, "out of memory");
        goto fail;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "content") == 0) {
            if (json_is_null(v)) continue;
            env->content = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
            if (!env->content) {
                set_err(err, errlen, "out of memory");
                goto fail;
            }
            continue;
        }
        if (strcmp(key, "created_at") == 0) {
            double t = json_is_number(v) ? json_number_value(v) : -1;
            if (!isfinite(t) || t < 0) {
                set_err(err, errlen, "created_at must be a non-negative number");
                goto fail;
            }
            env->created_at = t;
            continue;
        }
        size_t i = 0;
        while (i < NFIELDS && strcmp(key, FIELDS[i].name) != 0) i++;
        if (i == NFIELDS) {
            set_err(err, errlen, "unknown field '%s'", key);
            goto fail;
        }
        if (!json_is_string(v)) {
            set_err(err, errlen, "%s must be a string", key);
            goto fail;
        }
        size_t len = json_string_length(v);
        if (len >= FIELDS[i].size || strlen(json_string_value(v)) != len) {
            set_err(err, errlen, "%s is too long (max %zu bytes)", key, FIELDS[i].size - 1);
            goto fail;
        }
        memcpy((char *)env + FIELDS[i].off, json_string_value(v), len + 1);
    }
    if (!bus_performative_valid(env->performative)) {
        set_err(err, errlen, "invalid performative '%s'", env->performative);
        goto fail;
    }
    if (bus_envelope_fill(env) != BUS_OK) {
        set_err(err, errlen, "no randomness for the id");
        goto fail;
    }
    json_decref(root);
    return env;
fail:
    json_decref(root);
    bus_envelope_free(env);
    return NULL;
}

int bus_refuse_busy(const struct bus_envelope *orig, struct bus_envelope *out) {
    memset(out, 0, sizeof *out);
    strcpy(out->performative, "refuse");
    memcpy(out->sender, orig->receiver, sizeof out->sender);
    memcpy(out->receiver, orig->sender, sizeof out->receiver);
    memcpy(out->conversation_id, orig->conversation_id, sizeof out->conversation_id);
    memcpy(out->in_reply_to, orig->reply_with, sizeof out->in_reply_to);
    memcpy(out->user_id, orig->user_id, sizeof out->user_id);
    out->content = strdup("{\"reason\":\"busy\"}");
    if (!out->content || bus_envelope_fill(out) != BUS_OK) {
        bus_envelope_clear(out);
        return BUS_ERROR;
    }
    return BUS_OK;
}
