/* store_notes — the user's notes: validation, writes (each with its activity row), listing newest
 * first, the tag filter and ranked full-text search with highlighted snippets. Shared by
 * api_notes.c and later the Lua API (orrery.notes). Uses store; the search itself is PostgreSQL's
 * (a generated tsvector of title, weight A, and body, weight B, in migrations/V6__notes.sql).
 *
 * The note JSON: {id, title, body, tags, version, created_at, updated_at}
 *   title: 0..500 characters; body: markdown, at most STORE_NOTE_BODY_MAX bytes of UTF-8;
 *   tags: at most 50 strings of 1..50 characters, stored lower-cased (PostgreSQL's lower()),
 *   duplicates dropped, first occurrence's order kept; version: 1, +1 on every change.
 * List items carry `excerpt` (the body's first 200 characters) instead of `body`, and `snippet`
 * (ts_headline of the body, matches in <mark>...</mark>, not HTML-escaped) when searching. */
#ifndef ORRERY_STORE_NOTES_H
#define ORRERY_STORE_NOTES_H

#include <stddef.h>

#include "store.h"

#define STORE_NOTE_BODY_MAX 1048576 /* bytes: 1 MiB */
#define STORE_NOTE_TITLE_MAX 500    /* characters */
#define STORE_NOTE_TAGS_MAX 50
#define STORE_NOTE_TAG_MAX 50       /* characters */
#define STORE_NOTE_QUERY_MAX 500    /* characters of a search */

/* Creates a note from {title?, body?, tags?} (unknown fields, wrong types, too long → 400 naming
 * the field). Returns the note (new reference) or NULL with err. */
json_t *store_note_create(const struct store_ctx *ctx, json_t *in, struct store_err *err);

/* The note with this id, or NULL with err (404 for another user's, an unknown or a malformed id).
 * New reference. */
json_t *store_note_get(const struct store_ctx *ctx, const char *id, struct store_err *err);

/* Changes the fields present in `in` ({title?, body?, tags?}); the others keep their value.
 * match (store.h; NULL = unconditional) holds the versions the caller accepts: any other current
 * version fails with 412 "precondition_failed" and changes nothing. A patch that changes
 * nothing returns the note as it is (same version, no activity row). Returns the note (new
 * reference) or NULL with err. */
json_t *store_note_update(const struct store_ctx *ctx, const char *id, json_t *in,
                          const struct store_match *match, struct store_err *err);

/* Deletes the note (match as for update). Returns 0, or -1 with err. */
int store_note_delete(const struct store_ctx *ctx, const char *id, const struct store_match *match,
                      struct store_err *err);

/* One page of notes. in: {q?, tag?, limit? (1..200, default 50), cursor? (an object a previous
 * page returned as `next`)}. Without q: newest first; with q: by relevance, then id, only notes
 * matching q (websearch_to_tsquery syntax: "quoted phrases", or, -word; any text is safe).
 * Returns {"items": [...], "next": object | null} (new reference) or NULL with err (400 naming
 * q, tag, limit or cursor). */
json_t *store_notes_list(const struct store_ctx *ctx, json_t *in, struct store_err *err);

#endif
