/* workpool — see workpool.h. A mutex-protected ring of jobs and a condition variable. */
#include "workpool.h"

#include <pthread.h>
#include <stdlib.h>

#include "log.h"

struct job {
    workpool_fn fn;
    void *arg;
};

struct workpool {
    pthread_mutex_t mu;
    pthread_cond_t ready;
    struct job *ring;      /* queue_max slots (owned) */
    size_t cap, head, count;
    int stopping;
    int nthreads;
    pthread_t *threads;    /* owned */
};

static void *worker(void *arg) {
    struct workpool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->count == 0 && !p->stopping) pthread_cond_wait(&p->ready, &p->mu);
        if (p->count == 0) break; /* stopping and drained */
        struct job j = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->count--;
        pthread_mutex_unlock(&p->mu);
        j.fn(j.arg);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

struct workpool *workpool_new(int threads, size_t queue_max) {
    if (threads < 1 || queue_max < 1) return NULL;
    struct workpool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->ring = calloc(queue_max, sizeof *p->ring);
    p->threads = calloc((size_t)threads, sizeof *p->threads);
    if (!p->ring || !p->threads) goto fail;
    p->cap = queue_max;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->ready, NULL);
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0) {
            log_error("workpool: cannot start thread %d", i);
            break;
        }
        p->nthreads++;
    }
    if (p->nthreads == 0) {
        pthread_cond_destroy(&p->ready);
        pthread_mutex_destroy(&p->mu);
        goto fail;
    }
    return p;
fail:
    free(p->ring);
    free(p->threads);
    free(p);
    return NULL;
}

int workpool_submit(struct workpool *p, workpool_fn fn, void *arg) {
    pthread_mutex_lock(&p->mu);
    if (p->stopping || p->count == p->cap) {
        pthread_mutex_unlock(&p->mu);
        return -1;
    }
    p->ring[(p->head + p->count) % p->cap] = (struct job){fn, arg};
    p->count++;
    pthread_cond_signal(&p->ready);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void workpool_free(struct workpool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->ready);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->ready);
    pthread_mutex_destroy(&p->mu);
    free(p->ring);
    free(p->threads);
    free(p);
}
