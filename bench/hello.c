/* bench/hello — the ceiling for `make bench`: the same libmicrohttpd daemon, options and
 * response path as `orrery serve` (http_start), in bare mode: no router, no middleware, no
 * logging, no metrics. usage: orrery-bench-hello PORT */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "../src/http.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    struct http_options opt = {
        .host = "127.0.0.1",
        .port = atoi(argv[1]),
        .workers = cores > 0 ? (int)cores : 2,
        .max_connections = 1024,
        .max_connections_per_ip = 0,
        .conn_timeout_s = 30,
        .max_body = 1 << 20,
        .bare = 1,
    };
    char err[256];
    struct http_server *s = http_start(&opt, NULL, NULL, err, sizeof err);
    if (!s) {
        fprintf(stderr, "orrery-bench-hello: %s\n", err);
        return 1;
    }
    int sig;
    sigwait(&sigs, &sig);
    http_stop(s);
    return 0;
}
