/* routes — see routes.h. Test fixtures come last so the production table is a prefix. */
#include "routes.h"

static const struct route table[] = {
    {"GET", "/healthz", api_healthz, ROUTE_PUBLIC},
    {"GET", "/readyz", api_readyz, ROUTE_PUBLIC},
    {"GET", "/metrics", api_metrics, ROUTE_PUBLIC},
    /* ORRERY_ENV=test only: lets specs exercise the body middleware and slow uploads. */
    {"POST", "/api/_test/echo", api_test_echo, ROUTE_PUBLIC | ROUTE_JSON_BODY},
    {"GET", "/api/_test/unanswered", api_test_unanswered, ROUTE_PUBLIC},
};
#define NTEST 2

const struct route *routes_table(int with_test_routes, size_t *count) {
    *count = sizeof table / sizeof table[0] - (with_test_routes ? 0 : NTEST);
    return table;
}
