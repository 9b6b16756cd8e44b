/* ratelimit — see ratelimit.h. A chained hash table; entries whose window has passed are swept
 * when the table grows past its size, so memory stays bounded by the keys seen in one window. */
#include "ratelimit.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 4096
#define SWEEP_AT 65536

struct entry {
    struct entry *next;
    long window_start;
    int count;
    char key[];
};

struct ratelimit {
    pthread_mutex_t mu;
    int limit, window_s;
    size_t size;
    struct entry *buckets[NBUCKETS];
};

static uint32_t hash(const char *s) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

struct ratelimit *ratelimit_new(int limit, int window_s) {
    struct ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl) return NULL;
    pthread_mutex_init(&rl->mu, NULL);
    rl->limit = limit;
    rl->window_s = window_s;
    return rl;
}

void ratelimit_free(struct ratelimit *rl) {
    if (!rl) return;
    for (size_t i = 0; i < NBUCKETS; i++) {
        struct entry *e = rl->buckets[i];
        while (e) {
            struct entry *n = e->next;
            free(e);
            e = n;
        }
    }
    pthread_mutex_destroy(&rl->mu);
    free(rl);
}

static void sweep(struct ratelimit *rl, long now) {
    for (size_t i = 0; i < NBUCKETS; i++) {
        struct entry **pp = &rl->buckets[i];
        while (*pp) {
            struct entry *e = *pp;
            if (now - e->window_start >= rl->window_s) {
                *pp = e->next;
                free(e);
                rl->size--;
            } else {
                pp = &e->next;
            }
        }
    }
}

int ratelimit_hit(struct ratelimit *rl, const char *key, int cost, long now, int *retry_after) {
    pthread_mutex_lock(&rl->mu);
    struct entry **head = &rl->buckets[hash(key) % NBUCKETS];
    struct entry *e = *head;
    while (e && strcmp(e->key, key) != 0) e = e->next;
    if (!e) {
        if (rl->size >= SWEEP_AT) sweep(rl, now);
        size_t len = strlen(key);
        e = calloc(1, sizeof *e + len + 1);
        if (!e) {
            pthread_mutex_unlock(&rl->mu);
            return 1; /* out of memory: do not lock people out for it */
        }
        memcpy(e->key, key, len + 1);
        e->window_start = now;
        e->next = *head;
        *head = e;
        rl->size++;
    }
    if (now - e->window_start >= rl->window_s) {
        e->window_start = now;
        e->count = 0;
    }
    int ok = e->count + cost <= rl->limit && e->count < rl->limit;
    if (ok || e->count < rl->limit) e->count += cost;
    if (!ok && retry_after) {
        long left = e->window_start + rl->window_s - now;
        *retry_after = left > 0 ? (int)left : 1;
    }
    pthread_mutex_unlock(&rl->mu);
    return ok;
}

void ratelimit_reset(struct ratelimit *rl, const char *key) {
    pthread_mutex_lock(&rl->mu);
    struct entry **pp = &rl->buckets[hash(key) % NBUCKETS];
    while (*pp) {
        if (!strcmp((*pp)->key, key)) {
            struct entry *e = *pp;
            *pp = e->next;
            free(e);
            rl->size--;
            break;
        }
        pp = &(*pp)->next;
    }
    pthread_mutex_unlock(&rl->mu);
}
