/* api_tasks — the tasks routes (being written). */
#include "routes.h"

const struct route api_tasks_routes[] = {
    {NULL, NULL, NULL, 0},
};
