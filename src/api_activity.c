/* api_activity — GET /api/activity: the caller's activity log, newest first, filtered by object
 * type and actor type, paged with an opaque cursor (keyset on the row id). Uses api. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "routes.h"

void api_activity_list(struct http_req *req) {
    long limit;
    json_t *cursor = NULL;
    const char *type = http_query(req, "object_type"), *actor = http_query(req, "actor_type");
    if (api_query_int(req, "limit", 50, 1, 200, &limit) || api_cursor_decode(req, &cursor)) return;
    if (type && (strlen(type) < 1 || strlen(type) > 40)) {
        json_decref(cursor);
        api_bad_field(req, "object_type", "object_type must be 1 to 40 characters");
        return;
    }
    if (actor && strcmp(actor, "user") && strcmp(actor, "agent") && strcmp(actor, "workflow") && strcmp(actor, "system")) {
        json_decref(cursor);
        api_bad_field(req, "actor_type", "actor_type must be user, agent, workflow or system");
        return;
    }
    char before[32] = "", lim[24];
    json_t *b = cursor ? json_object_get(cursor, "before") : NULL;
    if (cursor && !json_is_integer(b)) {
        json_decref(cursor);
        api_bad_field(req, "cursor", "cursor is not valid: pass back the next_cursor of a previous page");
        return;
    }
    if (b) snprintf(before, sizeof before, "%lld", (long long)json_integer_value(b));
    json_decref(cursor);
    snprintf(lim, sizeof lim, "%ld", limit + 1); /* one more tells whether there is a next page */
    const char *p[4] = {type, actor, before[0] ? before : NULL, lim};
    PGresult *r = api_exec(req,
                           "SELECT id, actor_type, actor_id, action, object_type, object_id, diff::text, "
                           "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') "
                           "FROM activity_log WHERE user_id = orrery_uid() "
                           "AND ($1::text IS NULL OR object_type = $1) AND ($2::text IS NULL OR actor_type = $2) "
                           "AND ($3::bigint IS NULL OR id < $3::bigint) ORDER BY id DESC LIMIT $4::int",
                           4, p);
    if (!r) return;
    int n = PQntuples(r), shown = n > limit ? (int)limit : n;
    json_t *items = json_array();
    for (int i = 0; i < shown; i++) {
        json_t *diff = json_loads(PQgetvalue(r, i, 6), 0, NULL);
        json_array_append_new(items, json_pack("{s:I, s:{s:s, s:s}, s:s, s:s, s:s, s:o, s:s}", "id",
                                               (json_int_t)strtoll(PQgetvalue(r, i, 0), NULL, 10), "actor", "type",
                                               PQgetvalue(r, i, 1), "id", PQgetvalue(r, i, 2), "action",
                                               PQgetvalue(r, i, 3), "object_type", PQgetvalue(r, i, 4), "object_id",
                                               PQgetvalue(r, i, 5), "diff", diff ? diff : json_object(), "created_at",
                                               PQgetvalue(r, i, 7)));
    }
    json_t *body = json_pack("{s:o}", "items", items);
    if (n > limit) {
        json_t *pos = json_pack("{s:I}", "before", (json_int_t)strtoll(PQgetvalue(r, shown - 1, 0), NULL, 10));
        char *next = api_cursor_encode(req, pos);
        json_decref(pos);
        json_object_set_new(body, "next_cursor", next ? json_string(next) : json_null());
        free(next);
    } else {
        json_object_set_new(body, "next_cursor", json_null());
    }
    PQclear(r);
    http_json(req, 200, body);
}
