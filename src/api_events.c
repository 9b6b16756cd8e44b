/* api_events — the calendar routes: events CRUD (/api/events, /api/events/{id}), the occurrences
 * of a window (GET /api/events?from=&to=), overlapping occurrences (/api/events/conflicts) and
 * free slots in working hours (/api/freebusy). Thin: store_events validates and writes.
 * Uses api, store_events and http. */
#include "api.h"
#include "routes.h"
#include "store_events.h"

static void events_create(struct http_req *req) {
    struct store_ctx ctx = api_store(req);
    struct store_err err;
    json_t *conflicts = NULL;
    json_t *ev = store_event_create_checked(&ctx, http_body_json(req), &conflicts, &err);
    if (!ev) {
        if (err.status == 409 && conflicts)
            http_error(req, 409, "conflict", err.message, json_pack("{s:o}", "conflicts", conflicts));
        else
            api_store_error(req, &err);
        return;
    }
    api_json_created(req, "/api/events", ev);
}

static void events_get(struct http_req *req) {
    struct store_ctx ctx = api_store(req);
    struct store_err err;
    json_t *ev = store_event_get(&ctx, http_param(req, "id"), &err);
    if (!ev) {
        api_store_error(req, &err);
        return;
    }
    api_json_versioned(req, 200, ev);
}

static void events_patch(struct http_req *req) {
    struct store_ctx ctx = api_store(req);
    struct store_err err;
    struct store_match m;
    json_t *ev = store_event_update(&ctx, http_param(req, "id"), http_body_json(req), api_if_match(req, &m), &err);
    if (!ev) {
        api_store_error(req, &err);
        return;
    }
    api_json_versioned(req, 200, ev);
}

static void events_delete(struct http_req *req) {
    struct store_ctx ctx = api_store(req);
    struct store_err err;
    struct store_match m;
    if (store_event_delete(&ctx, http_param(req, "id"), api_if_match(req, &m), &err)) {
        api_store_error(req, &err);
        return;
    }
    http_text(req, 204, "application/json", "", 0);
}

static void events_list(struct http_req *req) {
    struct store_ctx ctx = api_store(req);
    struct store_err err;
    long limit;
    if (api_query_int(req, "limit", 5000, 1, 5000, &limit)) return;
    json_t *out = store_events_window(&ctx, http_query(req, "from"), http_query(req, "to"), (int)limit, &err);
    if (!out) api_store_error(req, &err);
    else http_json(req, 200, out);
}

static void events_conflicts(struct http_req *req) {
    struct store_ctx ctx = api_store(req);
    struct store_err err;
    json_t *out = store_events_conflicts(&ctx, http_query(req, "from"), http_query(req, "to"), &err);
    if (!out) api_store_error(req, &err);
    else http_json(req, 200, out);
}

static void freebusy(struct http_req *req) {
    struct store_ctx ctx = api_store(req);
    struct store_err err;
    long duration;
    if (api_query_int(req, "duration", 30, 5, 1440, &duration)) return;
    json_t *out = store_events_freebusy(&ctx, http_query(req, "from"), http_query(req, "to"), duration, &err);
    if (!out) api_store_error(req, &err);
    else http_json(req, 200, out);
}

const struct route api_events_routes[] = {
    {"GET", "/api/events", events_list, 0},
    {"POST", "/api/events", events_create, ROUTE_JSON_BODY},
    {"GET", "/api/events/conflicts", events_conflicts, 0},
    {"GET", "/api/events/{id}", events_get, 0},
    {"PATCH", "/api/events/{id}", events_patch, ROUTE_JSON_BODY},
    {"DELETE", "/api/events/{id}", events_delete, 0},
    {"GET", "/api/freebusy", freebusy, 0},
    {NULL, NULL, NULL, 0},
};
