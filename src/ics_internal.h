/* ics_internal — private to ics.c, ics_write.c and ics_parse.c: the civil-time type and
 * helpers (proleptic Gregorian, no zones) and UTF-8 sequence lengths that the writer and the
 * parser both use, defined in ics.c. Not for other units: the public API is ics.h. */
#ifndef ORRERY_ICS_INTERNAL_H
#define ORRERY_ICS_INTERNAL_H

#include <stddef.h>

struct tm6 {
    int y, mo, d, h, mi, s;
};

int ics_days_in_month(int y, int mo);
/* Days since 1970-01-01. */
long long ics_days_from_civil(int y, int m, int d);
/* 0 = Monday ... 6 = Sunday. */
int ics_weekday(int y, int m, int d);
long long ics_tm_seconds(const struct tm6 *t);
struct tm6 ics_tm_from_seconds(long long secs);
/* A real date (and, with_time, a real time of day). */
int ics_tm_valid(const struct tm6 *t, int with_time);
/* n decimal digits of s into *out: 0, or -1 on a non-digit. */
int ics_num(const char *s, int n, int *out);
/* "2026-03-01T09:30:00" (extended) or "20260301T093000" (basic); dates without the time. out
 * holds 20 bytes. */
void ics_fmt_tm(const struct tm6 *t, int with_time, int basic, char *out);
void ics_fmt_civil(const struct tm6 *t, int with_time, char out[20]);
/* Length of the UTF-8 sequence that starts with byte c (1 for anything unexpected). */
size_t ics_utf8_len(unsigned char c);

#endif
