/* log — see log.h. Each line is built in memory and written with one write(2), so lines from
 * different threads never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int current_level = LOG_INFO;
/* Points at the id inside the request being served (which outlives the call that set it). */
static _Thread_local const char *thread_request_id;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(int level) {
    if (level >= LOG_DEBUG && level <= LOG_ERROR) atomic_store(&current_level, level);
}

int log_get_level(void) { return atomic_load(&current_level); }

int log_level_parse(const char *s) {
    if (!s) return -1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, level_names[i])) return i;
    if (!strcmp(s, "warning")) return LOG_WARN;
    return -1;
}

const char *log_level_name(int level) {
    return (level >= LOG_DEBUG && level <= LOG_ERROR) ? level_names[level] : "info";
}

void log_set_request_id(const char *id) { thread_request_id = (id && *id) ? id : NULL; }

const char *log_get_request_id(void) { return thread_request_id; }

void log_fields(int level, json_t *fields, const char *fmt, ...) {
    if (level < atomic_load(&current_level)) return;

    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* libpq and others end messages with a newline: keep one line per record. */
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[80];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

    json_t *o = json_object();
    if (!o) return;
    json_object_set_new(o, "time", json_string(when));
    json_object_set_new(o, "level", json_string(log_level_name(level)));
    if (thread_request_id) json_object_set_new(o, "request_id", json_string(thread_request_id));
    /* Invalid UTF-8 (from a client or a script) must not drop the line: mask non-ASCII bytes. */
    json_t *m = json_string(msg);
    if (!m) {
        for (char *p = msg; *p; p++)
            if ((unsigned char)*p >= 0x80) *p = '?';
        m = json_string(msg);
    }
    json_object_set_new(o, "msg", m);
    if (fields && json_is_object(fields)) {
        const char *k;
        json_t *v;
        json_object_foreach(fields, k, v) {
            if (!json_object_get(o, k)) json_object_set(o, k, v);
        }
    }
    char *line = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    if (!line) return;
    size_t len = strlen(line);
    char *buf = malloc(len + 2);
    if (buf) {
        memcpy(buf, line, len);
        buf[len] = '\n';
        ssize_t w = write(STDERR_FILENO, buf, len + 1);
        (void)w; /* nowhere left to report a failed log write */
        free(buf);
    }
    free(line);
}
