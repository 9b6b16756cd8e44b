/* api_notes — the notes routes, thin over store_notes (which validates, writes and records the
 * activity): GET/POST /api/notes, GET/PATCH/DELETE /api/notes/{id}. A note's ETag is its version
 * ("3"); PATCH and DELETE honour If-Match, compared strongly (W/"3" never matches). Uses api and
 * store_notes. */
#include <stdio.h>
#include <stdlib.h>

#include "api.h"
#include "routes.h"
#include "store_notes.h"

static void notes_create(struct http_req *req) {
    struct store_ctx sc = api_store(req);
    struct store_err err = {0};
    json_t *note = store_note_create(&sc, http_body_json(req), &err);
    if (!note) {
        api_store_error(req, &err);
        return;
    }
    api_json_created(req, "/api/notes", note);
}

/* Adds the query parameter `name` to in as a JSON string; 400 naming it when it is not UTF-8. */
static int query_string(struct http_req *req, json_t *in, const char *name) {
    const char *s = http_query(req, name);
    if (!s) return 0;
    json_t *v = json_string(s);
    if (!v) {
        char msg[64];
        snprintf(msg, sizeof msg, "%s must be UTF-8 text", name);
        api_bad_field(req, name, msg);
        return -1;
    }
    json_object_set_new(in, name, v);
    return 0;
}

static void notes_list(struct http_req *req) {
    long limit;
    json_t *cursor = NULL;
    if (api_query_int(req, "limit", 50, 1, 200, &limit) || api_cursor_decode(req, &cursor)) return;
    json_t *in = json_pack("{s:I}", "limit", (json_int_t)limit);
    if (!in) {
        json_decref(cursor);
        http_error(req, 500, "internal", "internal error", NULL);
        return;
    }
    if (cursor) json_object_set_new(in, "cursor", cursor);
    if (query_string(req, in, "q") || query_string(req, in, "tag")) {
        json_decref(in);
        return;
    }
    struct store_ctx sc = api_store(req);
    struct store_err err = {0};
    json_t *page = store_notes_list(&sc, in, &err);
    json_decref(in);
    if (!page) {
        api_store_error(req, &err);
        return;
    }
    json_t *next = json_object_get(page, "next");
    char *sealed = json_is_object(next) ? api_cursor_encode(req, next) : NULL;
    json_t *body = json_pack("{s:O, s:o}", "items", json_object_get(page, "items"), "next_cursor",
                             sealed ? json_string(sealed) : json_null());
    free(sealed);
    json_decref(page);
    if (!body) http_error(req, 500, "internal", "internal error", NULL);
    else http_json(req, 200, body);
}

static void notes_get(struct http_req *req) {
    struct store_ctx sc = api_store(req);
    struct store_err err = {0};
    json_t *note = store_note_get(&sc, http_param(req, "id"), &err);
    if (!note) {
        api_store_error(req, &err);
        return;
    }
    api_json_versioned(req, 200, note);
}

static void notes_patch(struct http_req *req) {
    struct store_match m;
    const struct store_match *match = api_if_match_strong(req, &m);
    struct store_ctx sc = api_store(req);
    struct store_err err = {0};
    json_t *note = store_note_update(&sc, http_param(req, "id"), http_body_json(req), match, &err);
    if (!note) {
        api_store_error(req, &err);
        return;
    }
    api_json_versioned(req, 200, note);
}

static void notes_delete(struct http_req *req) {
    struct store_match m;
    const struct store_match *match = api_if_match_strong(req, &m);
    struct store_ctx sc = api_store(req);
    struct store_err err = {0};
    if (store_note_delete(&sc, http_param(req, "id"), match, &err) != 0) {
        api_store_error(req, &err);
        return;
    }
    http_text(req, 204, "application/json", "", 0);
}

const struct route api_notes_routes[] = {
    {"GET", "/api/notes", notes_list, 0},
    {"POST", "/api/notes", notes_create, ROUTE_JSON_BODY},
    {"GET", "/api/notes/{id}", notes_get, 0},
    {"PATCH", "/api/notes/{id}", notes_patch, ROUTE_JSON_BODY},
    {"DELETE", "/api/notes/{id}", notes_delete, 0},
    {NULL, NULL, NULL, 0},
};
