/* api_notes — the notes routes, thin over store_notes (which validates, writes and records the
 * activity): GET/POST /api/notes, GET/PATCH/DELETE /api/notes/{id}. A note's ETag is its version
 * ("3"); PATCH and DELETE honour If-Match. Uses api and store_notes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "routes.h"
#include "store_notes.h"

#define IF_MATCH_MAX 8

static void set_etag(struct http_req *req, json_t *note) {
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"", (long long)json_integer_value(json_object_get(note, "version")));
    http_add_header(req, "ETag", etag);
}

/* If-Match → the versions the client accepts (*n = 0: absent or "*", no condition). Entity tags
 * are compared strongly: weak (W/"3") or malformed ones match nothing, so a header made only of
 * those fails with 412. */
static void if_match(struct http_req *req, long *versions, size_t *n) {
    const char *h = http_header(req, "If-Match");
    *n = 0;
    if (!h) return;
    const char *s = h + strspn(h, " \t");
    if (s[0] == '*' && s[1 + strspn(s + 1, " \t")] == '\0') return;
    while (*s && *n < IF_MATCH_MAX) {
        s += strspn(s, " \t,");
        size_t len = strcspn(s, ",");
        while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t')) len--;
        const char *tag = s;
        size_t tlen = len;
        if (tlen >= 2 && tag[0] == '"' && tag[tlen - 1] == '"') {
            tag++;
            tlen -= 2;
        }
        if (tlen > 0 && tlen <= 9 && strspn(tag, "0123456789") >= tlen) {
            char num[16];
            memcpy(num, tag, tlen);
            num[tlen] = '\0';
            versions[(*n)++] = strtol(num, NULL, 10);
        }
        s += strcspn(s, ",");
    }
    if (*n == 0) versions[(*n)++] = 0; /* versions start at 1: matches nothing */
}

static void notes_create(struct http_req *req) {
    struct store_ctx sc = api_store(req);
    struct store_err err = {0};
    json_t *note = store_note_create(&sc, http_body_json(req), &err);
    if (!note) {
        api_store_error(req, &err);
        return;
    }
    char location[96];
    snprintf(location, sizeof location, "/api/notes/%s", json_string_value(json_object_get(note, "id")));
    http_add_header(req, "Location", location);
    set_etag(req, note);
    http_json(req, 201, note);
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
    set_etag(req, note);
    http_json(req, 200, note);
}

static void notes_patch(struct http_req *req) {
    long versions[IF_MATCH_MAX];
    size_t n;
    if_match(req, versions, &n);
    struct store_ctx sc = api_store(req);
    struct store_err err = {0};
    json_t *note = store_note_update(&sc, http_param(req, "id"), http_body_json(req), versions, n, &err);
    if (!note) {
        api_store_error(req, &err);
        return;
    }
    set_etag(req, note);
    http_json(req, 200, note);
}

static void notes_delete(struct http_req *req) {
    long versions[IF_MATCH_MAX];
    size_t n;
    if_match(req, versions, &n);
    struct store_ctx sc = api_store(req);
    struct store_err err = {0};
    if (store_note_delete(&sc, http_param(req, "id"), versions, n, &err) != 0) {
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
