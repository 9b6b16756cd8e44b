/* routes — the route table of `orrery serve`, in one place, with the handlers it names.
 * Handlers live in src/api_<area>.c. */
#ifndef ORRERY_ROUTES_H
#define ORRERY_ROUTES_H

#include <stddef.h>

#include "router.h"

/* The table (built on each call into one static array: call once, at start-up);
 * with_test_routes adds the fixtures mounted only when ORRERY_ENV=test. */
const struct route *routes_table(int with_test_routes, size_t *count);

/* Each data area's routes, ending in {NULL}, defined beside its handlers. */
extern const struct route api_tasks_routes[];    /* api_tasks.c */
extern const struct route api_events_routes[];   /* api_events.c */
extern const struct route api_calendar_routes[]; /* api_calendar.c */
extern const struct route api_notes_routes[];    /* api_notes.c */
extern const struct route api_agents_routes[];   /* api_agents.c */
extern const struct route api_agent_messages_routes[]; /* api_agent_messages.c */

/* api_health.c */
void api_healthz(struct http_req *req);
void api_readyz(struct http_req *req);
void api_metrics(struct http_req *req);
/* api_auth.c */
void api_auth_register(struct http_req *req);
void api_auth_login(struct http_req *req);
void api_auth_refresh(struct http_req *req);
void api_auth_logout(struct http_req *req);
/* api_me.c */
void api_me_get(struct http_req *req);
void api_me_patch(struct http_req *req);
void api_me_delete(struct http_req *req);
void api_users_patch(struct http_req *req);
/* api_activity.c */
void api_activity_list(struct http_req *req);
/* api_test.c */
void api_test_echo(struct http_req *req);
void api_test_unanswered(struct http_req *req);

#endif
