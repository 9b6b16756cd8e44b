/* store_tasks — the user's tasks: validation, reads, writes with their activity rows, sub-task
 * trees without cycles, keyset-paged lists with filters and full-text search, and the next
 * occurrence of a recurring task when one is completed (rrule, in the user's time zone).
 * Shared by api_tasks.c and later the Lua API. Uses store, rrule and db.
 *
 * The task JSON (what the API returns and takes):
 *   {id, parent_id, title, notes, status, priority, due_at, labels, recurrence, version,
 *    created_at, updated_at, completed_at}
 * status: "open" | "in_progress" | "done" | "cancelled"; priority: 1 (highest) .. 4, also taken as
 * "p1".."p4"; due_at: RFC 3339 in UTC with milliseconds, or a date "YYYY-MM-DD" when it was given
 * as one, or null; labels: lower-case strings without duplicates; recurrence: RRULE text or null;
 * timestamps: RFC 3339 UTC with milliseconds (completed_at null unless done). */
#ifndef ORRERY_STORE_TASKS_H
#define ORRERY_STORE_TASKS_H

#include "store.h"

/* Creates a task from a JSON object {title, notes?, status?, priority?, due_at?, labels?,
 * recurrence?, parent_id?}. Unknown fields, wrong types, invalid values, a parent that is not
 * one of the user's tasks → 400 naming the field. Returns the new task (new reference) or NULL
 * with err. */
json_t *store_task_create(const struct store_ctx *ctx, json_t *in, struct store_err *err);

/* The task with this id, or NULL with err (404 for an unknown, malformed or another user's id). */
json_t *store_task_get(const struct store_ctx *ctx, const char *id, struct store_err *err);

/* Applies a partial update (any of the create fields; null clears due_at, recurrence, parent_id,
 * notes and labels). match (NULL = none) must hold the current version, else 412
 * "precondition_failed". A parent that is the task itself or one of its descendants → 400
 * parent_id. When status becomes "done" on a recurring task with a due date, the next occurrence
 * is created and returned under the key "next" of the result. Returns the updated task (new
 * reference) or NULL with err. */
json_t *store_task_update(const struct store_ctx *ctx, const char *id, json_t *in,
                          const struct store_match *match, struct store_err *err);

/* Deletes the task and its sub-tasks. match as for update. Returns 0 or -1 with err. */
int store_task_delete(const struct store_ctx *ctx, const char *id, const struct store_match *match,
                      struct store_err *err);

/* Lists tasks. query: {status?, label?, due_before?, due_after? (RFC 3339 or dates; due_after
 * inclusive, due_before exclusive), q? (full-text, any text is safe), parent_id? (an id, or
 * "null" for top-level tasks), sort? ("created_at" default, "due_at" (no due date last),
 * "priority"), limit? (1..200, default 50), cursor? (a "next" object of a previous page)}.
 * Bad values → 400 naming the key. Returns {"items": [...], "next": object | null} (new
 * reference) or NULL with err. */
json_t *store_tasks_list(const struct store_ctx *ctx, json_t *query, struct store_err *err);

#endif
