/* log — structured logs: one JSON object per line on stderr
 * ({"time","level","request_id","msg", ...fields}). Thread-safe; the request id is per thread,
 * set by the HTTP layer for the request it is serving. Uses jansson to escape values. */
#ifndef ORRERY_LOG_H
#define ORRERY_LOG_H

#include <jansson.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(int level);
int log_get_level(void);
/* Parses "debug|info|warn|error"; returns the level or -1. */
int log_level_parse(const char *s);
const char *log_level_name(int level);

/* The request id printed with every line this thread logs; NULL clears it. Borrowed: the
 * string must stay valid until cleared (the HTTP layer sets it to its request's own copy). */
void log_set_request_id(const char *id);
const char *log_get_request_id(void);

/* Logs msg with optional extra fields (a JSON object; borrowed, may be NULL). */
void log_fields(int level, json_t *fields, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define log_debug(...) log_fields(LOG_DEBUG, NULL, __VA_ARGS__)
#define log_info(...)  log_fields(LOG_INFO,  NULL, __VA_ARGS__)
#define log_warn(...)  log_fields(LOG_WARN,  NULL, __VA_ARGS__)
#define log_error(...) log_fields(LOG_ERROR, NULL, __VA_ARGS__)

#endif
