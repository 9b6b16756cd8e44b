/* api_notes — the notes routes (being written). */
#include "routes.h"

const struct route api_notes_routes[] = {
    {NULL, NULL, NULL, 0},
};
