/* Where upstream calls go: origins (scheme, host and port, each with its
 * pool of idle connections and its resolved address), the request header
 * lists callers build, and the TLS client context. */
#include "upstream_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

sl_headers_t *
sl_headers_append(sl_headers_t *list, const char *line)
{
    size_t n = strlen(line);
    sl_headers_t *h = malloc(sizeof(*h) + n + 3);
    if (h == NULL)
        return NULL;
    char *d = (char *)(h + 1);
    memcpy(d, line, n);
    memcpy(d + n, "\r\n", 3);
    h->data = d;
    h->len = n + 2;
    h->next = NULL;
    if (list == NULL)
        return h;
    sl_headers_t *t = list;
    while (t->next != NULL)
        t = (sl_headers_t *)t->next;
    t->next = h;
    return list;
}

void
sl_headers_free(sl_headers_t *list)
{
    while (list != NULL) {
        sl_headers_t *next = (sl_headers_t *)list->next;
        free(list);
        list = next;
    }
}

void
sl_up_origin_free(sl_origin_t *o)
{
    while (o->idle != NULL)
        sl_up_conn_close(o->idle);
    if (o->session != NULL)
        SSL_SESSION_free(o->session);
    free(o->key);
    free(o->host);
    free(o->hostport);
    free(o);
}

/* Splits "scheme://authority/path": the origin for scheme://authority
 * (made on first use) and the path, "/" when the URL has none. */
sl_origin_t *
sl_up_origin_for(sl_upstream_t *u, const char *url, const char **path,
           const char **why)
{
    int tls;
    size_t skip;
    if (strncasecmp(url, "http://", 7) == 0) {
        tls = 0;
        skip = 7;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        tls = 1;
        skip = 8;
    } else {
        *why = "the upstream URL must start with http:// or https://";
        return NULL;
    }
    const char *auth = url + skip;
    size_t alen = strcspn(auth, "/?#");
    *path = auth[alen] == '/' ? auth + alen : "/";
    size_t klen = skip + alen;
    for (sl_origin_t *o = u->origins; o != NULL; o = o->next)
        if (o->key_len == klen && memcmp(o->key, url, klen) == 0)
            return o;

    if (alen == 0 || memchr(auth, '@', alen) != NULL) {
        *why = "the upstream URL has no host (or has user info)";
        return NULL;
    }
    const char *host = auth, *port = NULL;
    size_t hlen = alen;
    if (auth[0] == '[') { /* [v6]:port */
        const char *close = memchr(auth, ']', alen);
        if (close == NULL) {
            *why = "the upstream URL has a bad IPv6 host";
            return NULL;
        }
        host = auth + 1;
        hlen = (size_t)(close - host);
        if (close + 1 < auth + alen) {
            if (close[1] != ':') {
                *why = "the upstream URL has a bad port";
                return NULL;
            }
            port = close + 2;
        }
    } else {
        const char *colon = memchr(auth, ':', alen);
        if (colon != NULL) {
            hlen = (size_t)(colon - auth);
            port = colon + 1;
        }
    }
    size_t plen = port ? (size_t)(auth + alen - port) : 0;
    if (hlen == 0 || (port != NULL && (plen == 0 || plen > 5 ||
                                       strspn(port, "0123456789") < plen))) {
        *why = "the upstream URL has a bad host or port";
        return NULL;
    }
    sl_origin_t *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return NULL;
    o->u = u;
    o->tls = tls;
    o->key = strndup(url, klen);
    o->key_len = klen;
    o->host = strndup(host, hlen);
    o->hostport = strndup(auth, alen);
    if (port != NULL)
        memcpy(o->port, port, plen);
    else
        strcpy(o->port, tls ? "443" : "80");
    if (o->key == NULL || o->host == NULL || o->hostport == NULL) {
        sl_up_origin_free(o);
        return NULL;
    }
    /* A literal address needs no resolving, ever. */
    struct sockaddr_in *v4 = (struct sockaddr_in *)&o->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&o->addr;
    int pn = atoi(o->port);
    if (inet_pton(AF_INET, o->host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)pn);
        o->addrlen = sizeof(*v4);
        o->addr_until = (time_t)-1;
    } else if (inet_pton(AF_INET6, o->host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)pn);
        o->addrlen = sizeof(*v6);
        o->addr_until = (time_t)-1;
    }
    o->next = u->origins;
    u->origins = o;
    return o;
}

int
sl_up_origin_literal(const sl_origin_t *o)
{
    return o->addr_until == (time_t)-1;
}

static int
on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    sl_upconn_t *k = SSL_get_app_data(ssl);
    if (k == NULL)
        return 0;
    if (k->o->session != NULL)
        SSL_SESSION_free(k->o->session);
    k->o->session = sess;
    return 1; /* we keep the reference */
}

SSL_CTX *
sl_up_tls_ctx(sl_upstream_t *u)
{
    if (u->tls != NULL)
        return u->tls;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* The system's CAs, or SSL_CERT_FILE / SSL_CERT_DIR when set. */
    SSL_CTX_set_default_verify_paths(ctx);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                            SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    u->tls = ctx;
    return ctx;
}
