/* ics — iCalendar (RFC 5545) for the calendar routes: a writer that turns event JSON into a
 * VCALENDAR (CRLF lines folded at 75 octets without splitting UTF-8 sequences, TEXT escaping,
 * TZID local times, all-day dates, RRULE, EXDATE, ATTENDEE, one VALARM per reminder, VTIMEZONE
 * blocks from offsets the caller supplies), and a tolerant parser of what Google Calendar,
 * Thunderbird, Apple and Outlook export (folded lines, escapes, parameters, TZID / UTC / floating
 * / DATE values, DURATION, EXDATE lists, VALARM triggers, mailto: attendees, overridden and
 * cancelled occurrences). Pure functions on jansson values: no I/O, no time zone database — the
 * caller converts between UTC and local times (api_calendar.c asks PostgreSQL).
 *
 * Time strings on both sides (writer input, parser output):
 *   "2026-03-01"                            a date (all-day events; ends are exclusive)
 *   "2026-03-01T08:30:00Z"                  UTC (a fraction is accepted and dropped)
 *   "2026-03-01T09:30:00"                   local time in the event's `timezone` (floating if none)
 *   "2026-03-01T09:30:00[America/Denver]"   local time in another zone (RFC 9557 suffix)
 * Uses jansson and Lua (for the core.ics_write / core.ics_parse bindings). */
#ifndef ORRERY_ICS_H
#define ORRERY_ICS_H

#include <jansson.h>
#include <stddef.h>

struct lua_State;

/* Why a parse failed, precise enough for a 400 that names the event and the field. */
struct ics_err {
    int index;          /* the VEVENT's position in the text (0-based), -1 when not about one */
    int line;           /* 1-based line of the text, 0 when none */
    char uid[128];      /* that VEVENT's UID, "" when unknown */
    char field[32];     /* the event field ("starts_at", "recurrence", "timezone", ...) or "ics" */
    char message[320];
};

/* Parses an iCalendar text of len bytes (any of CRLF, LF, CR line ends; a UTF-8 BOM allowed).
 * Returns a JSON array (new reference) with one object per imported VEVENT, in the event shape
 * of store_events.h plus "uid" (string or null) and "index" (the VEVENT's position) — remove
 * both before storing:
 *   {uid, index, title, description?, location?, all_day, starts_at, ends_at, timezone?,
 *    recurrence?, exdates, reminders, attendees}
 * `timezone` is the DTSTART's TZID (Windows names mapped to IANA ones, other names passed through
 * for the caller to check), else X-WR-TIMEZONE, else absent (the caller's default). An overridden
 * occurrence (RECURRENCE-ID) becomes an EXDATE of its series plus, unless cancelled, an event of
 * its own. Malformed text, more than max_events VEVENTs (0 = no cap), an RRULE part the store
 * does not support, or an unknown Windows zone → NULL with err. */
json_t *ics_parse(const char *text, size_t len, size_t max_events, struct ics_err *err);

/* What the writer puts around the events. */
struct ics_calendar {
    const char *name;      /* X-WR-CALNAME */
    const char *timezone;  /* X-WR-TIMEZONE, or NULL */
    /* Offsets of the zones the events name, for VTIMEZONE blocks (borrowed, may be NULL; a zone
     * without an entry gets no block): {"Europe/Berlin": {"offset": 3600, "name": "CET",
     * "transitions": [{"start": "2026-03-29T02:00:00", "from": 3600, "to": 7200, "name": "CEST"},
     * ...]}} with "start" the local wall-clock time (in the `from` offset) of one year's changes. */
    json_t *zones;
    long long now;         /* epoch seconds: DTSTAMP of events without updated_at */
};

/* Writes the events (a JSON array of event objects as store_events.h shapes them, times in the
 * forms above: the caller converts UTC to the event's local time to get TZID= values) as one
 * VCALENDAR. Returns the malloc'd text (length in *len) or NULL with a message in err. */
char *ics_write(json_t *events, const struct ics_calendar *cal, size_t *len, char *err, size_t errlen);

enum ics_time_kind { ICS_TIME_BAD = 0, ICS_TIME_DATE, ICS_TIME_UTC, ICS_TIME_LOCAL };

/* Classifies one of the time strings above and checks it is a real calendar date and time.
 * Copies the date or "YYYY-MM-DDTHH:MM:SS" part into civil and a [zone] suffix (or "") into zone. */
enum ics_time_kind ics_time_split(const char *s, char civil[20], char *zone, size_t zonelen);

/* The IANA name for a TZID: Windows names of the common zones ("W. Europe Standard Time" →
 * "Europe/Berlin"), vendor-prefixed names ("/mozilla.org/20070129_1/Europe/Berlin") and other
 * names as they are (a borrowed pointer into name or a static string); NULL for a name with a
 * space that is not in the table. */
const char *ics_zone_name(const char *name);

/* core.ics_write(events_json, cal_name[, opts_json]) -> text | nil, err and
 * core.ics_parse(text[, max_events]) -> events_json | nil, err, {index, uid, field, line}. */
void ics_lua_register(struct lua_State *L);

#endif
