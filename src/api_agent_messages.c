/* api_agent_messages — GET /api/agents/messages?conversation_id=: one conversation's trace from
 * the message log (agent_messages, written by src/msglog.c), oldest first (created_at, seq),
 * paged with an opaque cursor. The caller sees their own rows (row-level security on
 * orrery.user_id, and the query says so too); an admin sees every row of the conversation,
 * system traffic included. A conversation with nothing visible is an empty list, never a 404:
 * whether someone else's conversation exists is not the caller's to learn. Uses api. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "log.h"
#include "routes.h"
#include "store.h"

#define TS_US "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'"

static const char SQL_TRACE[] =
    "SELECT id::text, receiver, performative, sender, topic, conversation_id, reply_with, in_reply_to, "
    "user_id::text, content::text, to_char(created_at AT TIME ZONE 'UTC', " TS_US "), state, seq "
    "FROM agent_messages WHERE conversation_id = $1 AND ($2::boolean OR user_id = orrery_uid()) "
    "AND ($3::timestamptz IS NULL OR (created_at, seq) > ($3::timestamptz, $4::bigint)) "
    "ORDER BY created_at, seq LIMIT $5::int";

/* The row as the API shows it. New reference, NULL when out of memory. */
static json_t *item_json(const PGresult *r, int i) {
    json_t *content = json_null();
    if (!PQgetisnull(r, i, 9)) {
        /* jsonb prints numbers in full decimal form; as reals, the big ones still parse. */
        content = json_loads(PQgetvalue(r, i, 9), JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
        if (!content) {
            log_warn("agents: message %s has content jansson cannot read; shown as null", PQgetvalue(r, i, 0));
            content = json_null();
        }
    }
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:s, s:s}", "id", PQgetvalue(r, i, 0),
                     "receiver", PQgetvalue(r, i, 1), "performative", PQgetvalue(r, i, 2), "sender",
                     PQgetvalue(r, i, 3), "topic", PQgetvalue(r, i, 4), "conversation_id", PQgetvalue(r, i, 5),
                     "reply_with", PQgetvalue(r, i, 6), "in_reply_to", PQgetvalue(r, i, 7), "user_id",
                     PQgetisnull(r, i, 8) ? json_null() : json_string(PQgetvalue(r, i, 8)), "content", content,
                     "created_at", PQgetvalue(r, i, 10), "state", PQgetvalue(r, i, 11));
}

static void api_agent_messages_list(struct http_req *req) {
    struct api_ctx *c = api_ctx(req);
    const char *conv = http_query(req, "conversation_id");
    if (!conv || !*conv) {
        api_bad_field(req, "conversation_id", "conversation_id is required");
        return;
    }
    json_t *checked = json_string(conv); /* NULL for invalid UTF-8 */
    int utf8 = checked != NULL;
    json_decref(checked);
    if (!utf8 || store_utf8_chars(conv) > 63) {
        api_bad_field(req, "conversation_id", "conversation_id must be UTF-8 text of 1 to 63 characters");
        return;
    }
    long limit;
    json_t *cursor = NULL;
    if (api_query_int(req, "limit", 100, 1, 500, &limit) || api_cursor_decode(req, &cursor)) return;
    /* A cursor is {c: conversation, t: created_at of the last row shown, s: its seq}. */
    const char *after_t = NULL;
    char after_s[24] = "";
    if (cursor) {
        json_t *cc = json_object_get(cursor, "c"), *t = json_object_get(cursor, "t"), *s = json_object_get(cursor, "s");
        if (!json_is_string(cc) || strcmp(json_string_value(cc), conv) || !json_is_string(t) || !json_is_integer(s)) {
            json_decref(cursor);
            api_bad_field(req, "cursor", "cursor is not valid for this conversation: pass back the next_cursor of a "
                                         "previous page");
            return;
        }
        after_t = json_string_value(t);
        snprintf(after_s, sizeof after_s, "%lld", (long long)json_integer_value(s));
    }
    int admin = !strcmp(c->role, "admin");
    if (admin && api_tx_set_ctx(req, "admin") != 0) {
        json_decref(cursor);
        return;
    }
    char lim[24];
    snprintf(lim, sizeof lim, "%ld", limit + 1); /* one more tells whether there is a next page */
    const char *p[5] = {conv, admin ? "t" : "f", after_t, after_t ? after_s : NULL, lim};
    PGresult *r = api_exec(req, SQL_TRACE, 5, p);
    json_decref(cursor); /* after_t pointed into it */
    if (!r) return;
    int n = PQntuples(r), shown = n > limit ? (int)limit : n;
    json_t *items = json_array();
    for (int i = 0; i < shown; i++) json_array_append_new(items, item_json(r, i));
    json_t *body = json_pack("{s:o}", "items", items);
    json_t *next = json_null();
    if (n > limit) {
        json_t *pos = json_pack("{s:s, s:s, s:I}", "c", conv, "t", PQgetvalue(r, shown - 1, 10), "s",
                                (json_int_t)strtoll(PQgetvalue(r, shown - 1, 12), NULL, 10));
        char *sealed = pos ? api_cursor_encode(req, pos) : NULL;
        json_decref(pos);
        if (sealed) next = json_string(sealed);
        free(sealed);
    }
    json_object_set_new(body, "next_cursor", next);
    PQclear(r);
    http_json(req, 200, body);
}

const struct route api_agent_messages_routes[] = {
    {"GET", "/api/agents/messages", api_agent_messages_list, 0},
    {NULL, NULL, NULL, 0},
};
