/* store_events — events of the user's calendar: validation, writes (with activity rows), the
 * expansion of recurring series into occurrences in the event's own time zone, conflicts and free
 * slots. Shared by api_events.c, api_calendar.c (iCalendar import/export) and later the Lua API.
 *
 * The event JSON (what the API returns and takes):
 *   {id, title, description, location, all_day, starts_at, ends_at, timezone, recurrence,
 *    exdates, reminders, attendees, version, created_at, updated_at}
 * starts_at/ends_at: RFC 3339 in UTC ("2026-03-01T08:30:00Z"), or dates ("2026-03-01") when
 * all_day (ends_at exclusive, as in iCalendar); timezone: IANA name (default the user's);
 * recurrence: RRULE text ("FREQ=WEEKLY;BYDAY=MO") or null; exdates: array of excluded occurrence
 * starts in the same form as starts_at; reminders: minutes before (ints 0..40320); attendees:
 * emails. */
#ifndef ORRERY_STORE_EVENTS_H
#define ORRERY_STORE_EVENTS_H

#include "store.h"

/* Creates an event from a JSON object as POST /api/events takes it (unknown fields, bad types,
 * invalid dates or RRULE, ends_at not after starts_at → 400 naming the field). Returns the new
 * event (new reference) or NULL with err. */
json_t *store_event_create(const struct store_ctx *ctx, json_t *in, struct store_err *err);

/* Every event series of the user (not expanded), oldest first, as a JSON array of event objects
 * (new reference), or NULL with err. For iCalendar export. */
json_t *store_events_all(const struct store_ctx *ctx, struct store_err *err);

/* ---- Beyond the contract above: what api_events.c (and later the Lua API) needs ---- */

/* The same as store_event_create; when the body asks "check_conflicts": true and the new event
 * overlaps other occurrences, nothing is written, err is 409 "conflict" and *conflicts (may be
 * NULL) receives the overlapping occurrences (new reference). Without the flag the new event
 * carries them in its "conflicts" member. */
json_t *store_event_create_checked(const struct store_ctx *ctx, json_t *in, json_t **conflicts,
                                   struct store_err *err);
/* One event series (new reference), or NULL with err (404 for a malformed or unknown id). */
json_t *store_event_get(const struct store_ctx *ctx, const char *id, struct store_err *err);
/* Changes the fields present in patch (null clears an optional one); match (store.h; NULL = none)
 * must hold the event's version (else 412 "precondition_failed"). Returns the updated event (new
 * reference) or NULL with err. */
json_t *store_event_update(const struct store_ctx *ctx, const char *id, json_t *patch,
                           const struct store_match *match, struct store_err *err);
/* Deletes one event series (match as above). Returns 0 or -1 with err. */
int store_event_delete(const struct store_ctx *ctx, const char *id, const struct store_match *match,
                       struct store_err *err);
/* The occurrences overlapping [from, to) (RFC 3339 or dates, at most 366 days apart), sorted by
 * start: {items: [event + occurrence_start, occurrence_end, series_id], truncated} with at most
 * max items (1..5000). New reference, or NULL with err (400 naming "from" or "to"). */
json_t *store_events_window(const struct store_ctx *ctx, const char *from, const char *to, int max,
                            struct store_err *err);
/* Overlapping pairs of occurrences in [from, to): {items: [{a, b}], truncated}. */
json_t *store_events_conflicts(const struct store_ctx *ctx, const char *from, const char *to, struct store_err *err);
/* Busy time and free slots of duration_min minutes (5..1440) inside the user's working hours in
 * [from, to) (at most 31 days): {busy: [{start, end}], free: [{start, end}], duration}. */
json_t *store_events_freebusy(const struct store_ctx *ctx, const char *from, const char *to, long duration_min,
                              struct store_err *err);

#endif
