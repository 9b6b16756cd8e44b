/* api_test — fixtures mounted only when ORRERY_ENV=test (see routes.c). */
#include "http.h"
#include "routes.h"

/* Answers the parsed body back: proves the JSON middleware and serves slow-upload specs. */
void api_test_echo(struct http_req *req) {
    http_json(req, 200, json_pack("{s:O}", "received", http_body_json(req)));
}

/* Sets no response, as a buggy handler would: the server must answer a bare 500. */
void api_test_unanswered(struct http_req *req) {
    (void)req;
}
