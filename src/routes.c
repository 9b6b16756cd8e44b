/* routes — see routes.h. Each data area keeps its routes beside its handlers (api_<area>.c, a
 * table ending in {NULL}); this file puts the whole table together once at start-up. Test
 * fixtures come last so the production table is a prefix. */
#include "routes.h"

#include <string.h>


static const struct route core_routes[] = {
    {"GET", "/healthz", api_healthz, ROUTE_PUBLIC},
    {"GET", "/readyz", api_readyz, ROUTE_PUBLIC},
    {"GET", "/metrics", api_metrics, ROUTE_PUBLIC},
    {"POST", "/api/auth/register", api_auth_register, ROUTE_PUBLIC | ROUTE_JSON_BODY},
    {"POST", "/api/auth/login", api_auth_login, ROUTE_PUBLIC | ROUTE_JSON_BODY},
    {"POST", "/api/auth/refresh", api_auth_refresh, ROUTE_PUBLIC | ROUTE_JSON_BODY},
    {"POST", "/api/auth/logout", api_auth_logout, ROUTE_JSON_BODY},
    {"GET", "/api/me", api_me_get, 0},
    {"PATCH", "/api/me", api_me_patch, ROUTE_JSON_BODY},
    {"DELETE", "/api/me", api_me_delete, ROUTE_JSON_BODY},
    {"PATCH", "/api/users/{id}", api_users_patch, ROUTE_JSON_BODY},
    {"GET", "/api/activity", api_activity_list, 0},
    {NULL, NULL, NULL, 0},
};

/* ORRERY_ENV=test only: lets specs exercise the body middleware and slow uploads. */
static const struct route test_routes[] = {
    {"POST", "/api/_test/echo", api_test_echo, ROUTE_PUBLIC | ROUTE_JSON_BODY},
    {"GET", "/api/_test/unanswered", api_test_unanswered, ROUTE_PUBLIC},
    {NULL, NULL, NULL, 0},
};

#define MAX_ROUTES 256
static struct route all[MAX_ROUTES];

static size_t append(size_t n, const struct route *part) {
    for (; part->method && n < MAX_ROUTES; part++) all[n++] = *part;
    return n;
}

const struct route *routes_table(int with_test_routes, size_t *count) {
    size_t n = 0;
    const struct route *parts[] = {core_routes, api_tasks_routes, api_events_routes, api_calendar_routes,
                                   api_notes_routes, api_agents_routes,
                                   api_agent_messages_routes};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) n = append(n, parts[i]);
    if (with_test_routes) n = append(n, test_routes);
    *count = n;
    return all;
}
