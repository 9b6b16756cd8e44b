/* api_calendar — the calendar routes (being written). */
#include "routes.h"

const struct route api_calendar_routes[] = {
    {NULL, NULL, NULL, 0},
};
