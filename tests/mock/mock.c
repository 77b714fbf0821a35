/* sluice-mock: a mock LLM provider (OpenAI and Anthropic shapes) with
 * failure modes on demand, for the integration tests and the benchmark.
 * One event_base per worker thread, each with its own SO_REUSEPORT
 * listener; the main thread only waits for SIGTERM/SIGINT. See README.md. */
#include <getopt.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>

#include "mock.h"

#define MAX_THREADS 256

typedef struct worker {
    pthread_t thread;
    struct event_base *base;
    struct evconnlistener *listener;
    mock_conns_t conns;
} worker_t;

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
          int socklen, void *arg)
{
    (void)l;
    (void)sa;
    (void)socklen;
    worker_t *w = arg;
    mock_conn_accept(w->base, &w->conns, fd);
}

static void *
worker_main(void *arg)
{
    worker_t *w = arg;
    event_base_dispatch(w->base);
    /* Connections die on the thread that owns them. */
    mock_conns_free_all(&w->conns);
    return NULL;
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: sluice-mock [--host ADDR] [--port N] [--threads N]\n"
               "  --host     address to listen on (default 127.0.0.1)\n"
               "  --port     port; 0 picks a free one (default 0)\n"
               "  --threads  worker threads (default 1)\n"
               "Prints \"READY <port>\" once listening. See "
               "tests/mock/README.md.\n");
}

static long
parse_num(const char *s, long min, long max, const char *what)
{
    char *e;
    long v = strtol(s, &e, 10);
    if (e == s || *e || v < min || v > max) {
        fprintf(stderr, "sluice-mock: bad %s '%s' (%ld..%ld)\n", what, s, min,
                max);
        exit(2);
    }
    return v;
}

/* Binds one listener per worker to the same address; with port 0 the
 * first bind picks the port and the others join it. */
static int
listen_all(worker_t *ws, int n, const char *host, int port, int *bound)
{
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char ports[16];
    snprintf(ports, sizeof(ports), "%d", port);
    int rc = getaddrinfo(host, ports, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "sluice-mock: %s: %s\n", host, gai_strerror(rc));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sslen = ai->ai_addrlen;
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);

    unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                     LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC;
    for (int i = 0; i < n; i++) {
        ws[i].listener =
            evconnlistener_new_bind(ws[i].base, accept_cb, &ws[i], flags, 1024,
                                    (struct sockaddr *)&ss, (int)sslen);
        if (!ws[i].listener) {
            perror("sluice-mock: listen");
            return -1;
        }
        if (i == 0) {
            struct sockaddr_storage got;
            socklen_t gotlen = sizeof(got);
            evutil_socket_t fd = evconnlistener_get_fd(ws[0].listener);
            if (getsockname(fd, (struct sockaddr *)&got, &gotlen) < 0) {
                perror("sluice-mock: getsockname");
                return -1;
            }
            in_port_t p = got.ss_family == AF_INET6
                              ? ((struct sockaddr_in6 *)&got)->sin6_port
                              : ((struct sockaddr_in *)&got)->sin_port;
            if (ss.ss_family == AF_INET6)
                ((struct sockaddr_in6 *)&ss)->sin6_port = p;
            else
                ((struct sockaddr_in *)&ss)->sin_port = p;
            *bound = ntohs(p);
        }
    }
    return 0;
}

int
main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0, threads = 1;
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {"threads", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'H'},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'h': host = optarg; break;
        case 'p': port = (int)parse_num(optarg, 0, 65535, "port"); break;
        case 't':
            threads = (int)parse_num(optarg, 1, MAX_THREADS, "thread count");
            break;
        case 'H': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }

    /* Workers inherit a mask without the stop signals, so only sigwait()
     * in this thread sees them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (evthread_use_pthreads() < 0) {
        fprintf(stderr, "sluice-mock: evthread_use_pthreads failed\n");
        return 1;
    }
    worker_t *ws = calloc((size_t)threads, sizeof(*ws));
    int status = 1, started = 0, bound = 0;
    if (!ws)
        return 1;
    for (int i = 0; i < threads; i++)
        if (!(ws[i].base = event_base_new())) {
            fprintf(stderr, "sluice-mock: event_base_new failed\n");
            goto out;
        }
    if (listen_all(ws, threads, host, port, &bound) < 0)
        goto out;
    for (; started < threads; started++)
        if (pthread_create(&ws[started].thread, NULL, worker_main,
                           &ws[started]) != 0) {
            fprintf(stderr, "sluice-mock: pthread_create failed\n");
            goto out;
        }

    printf("READY %d\n", bound);
    fflush(stdout);
    int sig;
    sigwait(&stop, &sig);
    status = 0;
out:
    for (int i = 0; i < started; i++)
        event_base_loopbreak(ws[i].base);
    for (int i = 0; i < started; i++)
        pthread_join(ws[i].thread, NULL);
    for (int i = 0; i < threads; i++) {
        if (ws[i].listener)
            evconnlistener_free(ws[i].listener);
        if (ws[i].base)
            event_base_free(ws[i].base);
    }
    free(ws);
    mock_journal_clear();
    libevent_global_shutdown();
    return status;
}
