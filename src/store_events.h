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

#endif
