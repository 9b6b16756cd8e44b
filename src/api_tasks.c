/* api_tasks — the tasks routes: GET/POST /api/tasks, GET/PATCH/DELETE /api/tasks/{id}. Thin
 * handlers over store_tasks: they turn the query string, the If-Match header and the sealed
 * cursor into store arguments, and versions into ETags. Uses api and store_tasks. */
#include <stdlib.h>

#include "api.h"
#include "routes.h"
#include "store_tasks.h"

static void tasks_list(struct http_req *req) {
    static const char *const names[] = {"status", "label", "due_before", "due_after", "q", "parent_id", "sort", NULL};
    long limit;
    json_t *cursor = NULL;
    if (api_query_int(req, "limit", 50, 1, 200, &limit) || api_cursor_decode(req, &cursor)) return;
    json_t *query = json_pack("{s:I}", "limit", (json_int_t)limit);
    if (cursor) json_object_set_new(query, "cursor", cursor);
    for (const char *const *n = names; *n; n++) {
        const char *v = http_query(req, *n);
        if (!v) continue;
        json_t *s = json_string(v);
        if (!s) {
            json_decref(query);
            api_bad_field(req, *n, "query parameters must be UTF-8 text");
            return;
        }
        json_object_set_new(query, *n, s);
    }
    struct store_ctx ctx = api_store(req);
    struct store_err err = {0};
    json_t *page = store_tasks_list(&ctx, query, &err);
    json_decref(query);
    if (!page) {
        api_store_error(req, &err);
        return;
    }
    json_t *next = json_object_get(page, "next"), *body = json_pack("{s:O}", "items", json_object_get(page, "items"));
    char *sealed = json_is_object(next) ? api_cursor_encode(req, next) : NULL;
    json_object_set_new(body, "next_cursor", sealed ? json_string(sealed) : json_null());
    free(sealed);
    json_decref(page);
    http_json(req, 200, body);
}

static void tasks_create(struct http_req *req) {
    struct store_ctx ctx = api_store(req);
    struct store_err err = {0};
    json_t *task = store_task_create(&ctx, http_body_json(req), &err);
    if (!task) {
        api_store_error(req, &err);
        return;
    }
    api_json_created(req, "/api/tasks", task);
}

static void tasks_get(struct http_req *req) {
    struct store_ctx ctx = api_store(req);
    struct store_err err = {0};
    json_t *task = store_task_get(&ctx, http_param(req, "id"), &err);
    if (!task) api_store_error(req, &err);
    else api_json_versioned(req, 200, task);
}

static void tasks_patch(struct http_req *req) {
    struct store_ctx ctx = api_store(req);
    struct store_err err = {0};
    struct store_match m;
    json_t *task = store_task_update(&ctx, http_param(req, "id"), http_body_json(req), api_if_match(req, &m), &err);
    if (!task) api_store_error(req, &err);
    else api_json_versioned(req, 200, task);
}

static void tasks_delete(struct http_req *req) {
    struct store_ctx ctx = api_store(req);
    struct store_err err = {0};
    struct store_match m;
    if (store_task_delete(&ctx, http_param(req, "id"), api_if_match(req, &m), &err) != 0) api_store_error(req, &err);
    else http_text(req, 204, "application/json", "", 0);
}

const struct route api_tasks_routes[] = {
    {"GET", "/api/tasks", tasks_list, 0},
    {"POST", "/api/tasks", tasks_create, ROUTE_JSON_BODY},
    {"GET", "/api/tasks/{id}", tasks_get, 0},
    {"PATCH", "/api/tasks/{id}", tasks_patch, ROUTE_JSON_BODY},
    {"DELETE", "/api/tasks/{id}", tasks_delete, 0},
    {NULL, NULL, NULL, 0},
};
