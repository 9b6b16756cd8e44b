/* routes — see routes.h. Test fixtures come last so the production table is a prefix. */
#include "routes.h"

static const struct route table[] = {
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
    /* ORRERY_ENV=test only: lets specs exercise the body middleware and slow uploads. */
    {"POST", "/api/_test/echo", api_test_echo, ROUTE_PUBLIC | ROUTE_JSON_BODY},
    {"GET", "/api/_test/unanswered", api_test_unanswered, ROUTE_PUBLIC},
};
#define NTEST 2

const struct route *routes_table(int with_test_routes, size_t *count) {
    *count = sizeof table / sizeof table[0] - (with_test_routes ? 0 : NTEST);
    return table;
}
