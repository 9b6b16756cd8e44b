/* api_events — the events routes (being written). */
#include "routes.h"

const struct route api_events_routes[] = {
    {NULL, NULL, NULL, 0},
};
