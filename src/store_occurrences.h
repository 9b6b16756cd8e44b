/* store_occurrences — the occurrences of the user's event series: each series is expanded in its
 * own local time (rrule) and PostgreSQL turns every local start into an instant
 * (local AT TIME ZONE tz); on top of that, the window query, overlapping pairs and free slots of
 * store_events.h. Internal to the events store: store_events.c and store_occurrences.c share what
 * this header declares. Uses store and rrule. */
#ifndef ORRERY_STORE_OCCURRENCES_H
#define ORRERY_STORE_OCCURRENCES_H

#include "store.h"

#define EVENT_YEAR_FIRST 1000
#define EVENT_YEAR_LAST 9000
#define EVENT_EXDATES_MAX 1000

#define FMT_UTC "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'"
#define FMT_UTC_MS "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'"
#define FMT_LOCAL "'YYYY-MM-DD\"T\"HH24:MI:SS'"

/* The event as the API shows it (one JSON text column), from table alias e. */
#define EVENT_JSON                                                                                              \
    "json_build_object('id', e.id, 'title', e.title, 'description', e.description, 'location', e.location, "   \
    "'all_day', e.all_day, "                                                                                    \
    "'starts_at', CASE WHEN e.all_day THEN to_char(e.local_start, 'YYYY-MM-DD') "                               \
    "ELSE to_char(e.starts_at AT TIME ZONE 'UTC', " FMT_UTC ") END, "                                           \
    "'ends_at', CASE WHEN e.all_day THEN to_char(e.local_start + e.duration_s / 86400 * interval '1 day', "     \
    "'YYYY-MM-DD') ELSE to_char(e.ends_at AT TIME ZONE 'UTC', " FMT_UTC ") END, "                               \
    "'timezone', e.timezone, 'recurrence', e.recurrence, "                                                      \
    "'exdates', ARRAY(SELECT CASE WHEN e.all_day THEN to_char(x, 'YYYY-MM-DD') "                                \
    "ELSE to_char((x AT TIME ZONE e.timezone) AT TIME ZONE 'UTC', " FMT_UTC ") END "                            \
    "FROM unnest(e.exdates) x ORDER BY x), "                                                                    \
    "'reminders', e.reminders, 'attendees', e.attendees, 'version', e.version, "                                \
    "'created_at', to_char(e.created_at AT TIME ZONE 'UTC', " FMT_UTC_MS "), "                                  \
    "'updated_at', to_char(e.updated_at AT TIME ZONE 'UTC', " FMT_UTC_MS "))::text"

/* A time as clients send it (RFC 3339 with offset, or a date) that PostgreSQL will also accept:
 * a real calendar day in the years 1000..9000. Returns 1 and sets *is_date, or 0. */
int occ_time_ok(const char *s, int *is_date);

/* The occurrences of other events that overlap an occurrence of event id in [F, T) (epoch
 * seconds), at most 100, each with the overlapped occurrence of id as "with". New reference, or
 * NULL with err. */
json_t *occ_conflicts_of(const struct store_ctx *ctx, const char *id, long long F, long long T,
                         struct store_err *err);

#endif
