/* rrule — the recurrence rules Orrery supports (an RFC 5545 RRULE subset: FREQ=DAILY|WEEKLY|
 * MONTHLY|YEARLY, INTERVAL, BYDAY, BYMONTHDAY, COUNT, UNTIL) and their expansion. Works on local
 * wall-clock times ("civil" times, no zone): an event at 09:00 in Europe/Berlin recurs at 09:00
 * local whatever DST does; converting each occurrence to an instant is the caller's job
 * (PostgreSQL: local_ts AT TIME ZONE tz). Pure functions, no I/O. */
#ifndef ORRERY_RRULE_H
#define ORRERY_RRULE_H

#include <stddef.h>

struct civil {
    int y, mo, d;      /* 2026, 1..12, 1..31 */
    int h, mi, s;      /* 0..23, 0..59, 0..59 */
};

enum rrule_freq { RRULE_DAILY = 1, RRULE_WEEKLY, RRULE_MONTHLY, RRULE_YEARLY };

struct rrule {
    enum rrule_freq freq;
    int interval;              /* >= 1, default 1 */
    unsigned byday;            /* bit 0 = MO ... bit 6 = SU; 0 = not given */
    int byday_ord[7];          /* MONTHLY/YEARLY "2TU" / "-1FR": ordinal per weekday, 0 = every */
    int bymonthday[31];        /* 1..31 or -31..-1 */
    int nbymonthday;
    int count;                 /* 0 = unbounded */
    int has_until;
    struct civil until;        /* inclusive, local time of the series */
};

/* Parses "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE;COUNT=10" (an optional "RRULE:" prefix allowed;
 * UNTIL as YYYYMMDD or YYYYMMDDTHHMMSS[Z]). Unknown or repeated parts, bad values → -1 with a
 * message naming the part in err. */
int rrule_parse(const char *s, struct rrule *out, char *err, size_t errlen);
/* Writes the canonical text of r into out (as rrule_parse reads it). Returns 0 or -1 if too small. */
int rrule_format(const struct rrule *r, char *out, size_t outlen);

/* Occurrences of r anchored at dtstart (the first occurrence, counted by COUNT even when it does
 * not match BYDAY, as RFC 5545 says) whose start lies in [from, to), in order, skipping the
 * nex starts in exdates. Writes at most max into out and returns how many were written; *more is
 * set when the window held more than max. Months without the day (BYMONTHDAY=31 in April) are
 * skipped, never moved. */
int rrule_expand(const struct rrule *r, struct civil dtstart, struct civil from, struct civil to,
                 const struct civil *exdates, size_t nex, struct civil *out, int max, int *more);

/* The first occurrence strictly after `after`, honouring COUNT and UNTIL. Returns 1 and sets
 * *next, or 0 when the series has ended. */
int rrule_next(const struct rrule *r, struct civil dtstart, struct civil after, struct civil *next);

/* Civil-time helpers: compare (<0, 0, >0), day of week (0 = Monday), days in month, and adding
 * days or seconds with normalization. */
int civil_cmp(struct civil a, struct civil b);
int civil_weekday(int y, int mo, int d);
int civil_days_in_month(int y, int mo);
struct civil civil_add_days(struct civil c, int days);
struct civil civil_add_seconds(struct civil c, long long secs);
/* Parses "YYYY-MM-DDTHH:MM:SS" (the text of a PostgreSQL timestamp without zone) or "YYYY-MM-DD". */
int civil_parse(const char *s, struct civil *out);
/* Formats as "YYYY-MM-DDTHH:MM:SS" (out holds 20 bytes). */
void civil_format(struct civil c, char out[20]);

#endif
