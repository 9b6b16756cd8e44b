/* ratelimit — fixed-window counters keyed by string (an IP, an account), in memory, per
 * process: enough to slow password guessing on one replica; with several replicas each keeps its
 * own count. Thread-safe. */
#ifndef ORRERY_RATELIMIT_H
#define ORRERY_RATELIMIT_H

struct ratelimit;

/* At most limit events per window_s seconds per key. NULL on failure. Caller owns it. */
struct ratelimit *ratelimit_new(int limit, int window_s);
void ratelimit_free(struct ratelimit *rl);
/* Adds cost events (0 = only look) for key at time now. Returns 1 when the key is within its
 * limit after adding, 0 when over, with *retry_after = seconds until the window resets. A key
 * already over its limit is not charged further. */
int ratelimit_hit(struct ratelimit *rl, const char *key, int cost, long now, int *retry_after);
/* Forgets key (e.g. after a successful login). */
void ratelimit_reset(struct ratelimit *rl, const char *key);

#endif
