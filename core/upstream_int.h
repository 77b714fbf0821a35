/* The upstream client's insides, shared by its three files: upstream.c
 * (calls), upstream_conn.c (connections and the exchange on them) and
 * upstream_origin.c (origins, header lists, the TLS context). */
#ifndef SL_UPSTREAM_INT_H
#define SL_UPSTREAM_INT_H

#include "upstream.h"

#include <event2/dns.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <time.h>

#define SL_UPCALL_POOL_MAX 1024
#define SL_UP_BUF 16384          /* a connection's first read buffer */
#define SL_UP_IDLE_MAX 512       /* idle connections kept per origin */
#define SL_UP_IDLE_S 30          /* an idle connection is closed after */
#define SL_UP_SWEEP_S 5          /* how often idle connections are aged */
#define SL_UP_DNS_TTL_S 60       /* a resolved address is used this long */

typedef struct sl_origin sl_origin_t;
typedef struct sl_upconn sl_upconn_t;

enum { CONN_CONNECTING, CONN_HANDSHAKE, CONN_READY };

struct sl_origin {
    sl_upstream_t *u;
    sl_origin_t *next;
    char *key; /* "scheme://authority" as the URL spells it */
    size_t key_len;
    char *host;     /* for DNS, SNI and certificate checks */
    char *hostport; /* the Host header */
    char port[8];
    int tls;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    time_t addr_until; /* 0: not resolved (a literal never expires) */
    sl_upconn_t *idle; /* most recently used first */
    size_t nidle;
    SSL_SESSION *session; /* for resumption on the next connection */
};

struct sl_upconn {
    sl_origin_t *o;
    sl_upconn_t *prev, *next; /* in the origin's idle list */
    sl_upcall_t *call;        /* NULL while idle */
    evutil_socket_t fd;
    SSL *ssl;
    struct event *ev;
    short ev_kind; /* what ev waits for; 0: not added */
    int state;
    int idle;   /* in the origin's idle list */
    int reused; /* has answered a request before */
    time_t idle_since;
    char *buf; /* bytes read and not yet parsed */
    size_t len, cap;
};

struct sl_upcall {
    sl_upstream_t *u;
    sl_upcall_t *next_free;
    const sl_upcall_ops_t *ops;
    void *ud;
    void (*on_header)(void *ud, const char *line, size_t len);
    sl_origin_t *o;
    sl_upconn_t *conn;
    struct event *t_total, *t_first_byte, *t_connect;
    struct event *later; /* reports a result or resumes, from the loop */
    struct evdns_getaddrinfo_request *dns;
    long connect_timeout_ms;
    sl_resp_parser_t parser;
    char *head; /* the request head, built once: a retry writes it again */
    size_t head_len, head_cap;
    const char *body;
    size_t body_len;
    size_t written; /* of head and body */
    int later_result;
    const char *later_why;
    int dns_pending;
    int retried;
    int got_body;
    int paused;
    int in_cb;     /* inside a callback of the caller's */
    int cancelled; /* cancelled inside one: freed when it returns */
    char retry_after[32];
    char content_type[128];
    char why[192];
};

struct sl_upstream {
    struct event_base *base;
    struct evdns_base *dns;
    SSL_CTX *tls;
    struct event *sweep;
    sl_origin_t *origins;
    sl_upcall_t *free_list;
    size_t nfree;
    size_t active;
};

/* upstream.c */
void sl_up_finish(sl_upcall_t *c, int result, const char *why);
void sl_up_call_put(sl_upcall_t *c);
void sl_up_arm(struct event *ev, long ms);

/* upstream_conn.c */
void sl_up_connect(sl_upcall_t *c);
int sl_up_conn_write(sl_upconn_t *k);
int sl_up_conn_watch(sl_upconn_t *k, short kind);
void sl_up_conn_event(evutil_socket_t fd, short what, void *arg);
void sl_up_conn_close(sl_upconn_t *k);
void sl_up_idle_unlink(sl_upconn_t *k);

/* upstream_origin.c */
sl_origin_t *sl_up_origin_for(sl_upstream_t *u, const char *url,
                              const char **path, const char **why);
void sl_up_origin_free(sl_origin_t *o);
int sl_up_origin_literal(const sl_origin_t *o);
SSL_CTX *sl_up_tls_ctx(sl_upstream_t *u);

#endif
