#include "tls.h"
#include "error.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
add_error(sl_config_errors_t *errs, const char *path, const char *what,
          const char *file)
{
    if (errs == NULL)
        return;
    if (errs->count == errs->cap) {
        size_t cap = errs->cap ? errs->cap * 2 : 8;
        sl_config_error_t *items = realloc(errs->items, cap * sizeof(*items));
        if (items == NULL)
            return;
        errs->items = items;
        errs->cap = cap;
    }
    sl_config_error_t *e = &errs->items[errs->count++];
    memset(e, 0, sizeof(*e));
    snprintf(e->path, sizeof(e->path), "%s", path);
    char ssl[160] = "";
    unsigned long code = ERR_peek_last_error();
    if (code != 0)
        ERR_error_string_n(code, ssl, sizeof(ssl));
    ERR_clear_error();
    snprintf(e->message, sizeof(e->message), "%s %s%s%s", what, file,
             ssl[0] ? ": " : "", ssl);
}

/* Only HTTP/1.1 is spoken: say so in ALPN rather than let a client guess. */
static int
select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
            const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char h11[] = "\x08http/1.1";
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, h11, sizeof(h11) - 1, in,
                              inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *
build_one(const sl_listen_t *l, size_t i, sl_config_errors_t *errs)
{
    char path[128];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        return NULL;
    /* Modern defaults: TLS 1.2 and 1.3 only, no compression, no
     * renegotiation, server cipher order. */
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
                                 SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    snprintf(path, sizeof(path), "$.listen[%zu].tls.cert", i);
    if (SSL_CTX_use_certificate_chain_file(ctx, l->tls_cert) != 1) {
        add_error(errs, path, "cannot use the certificate chain", l->tls_cert);
        goto fail;
    }
    snprintf(path, sizeof(path), "$.listen[%zu].tls.key", i);
    if (SSL_CTX_use_PrivateKey_file(ctx, l->tls_key, SSL_FILETYPE_PEM) != 1) {
        add_error(errs, path, "cannot use the private key", l->tls_key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        add_error(errs, path, "the key does not match the certificate in",
                  l->tls_cert);
        goto fail;
    }
    if (l->tls_client_ca != NULL) {
        snprintf(path, sizeof(path), "$.listen[%zu].tls.client_ca", i);
        if (SSL_CTX_load_verify_locations(ctx, l->tls_client_ca, NULL) != 1) {
            add_error(errs, path, "cannot load client CAs from",
                      l->tls_client_ca);
            goto fail;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(l->tls_client_ca);
        if (names != NULL)
            SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx,
                           SSL_VERIFY_PEER |
                               (l->tls_require_client_cert
                                    ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                    : 0),
                           NULL);
    }
    /* Sessions resume across workers' connections within one context. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int
sl_tls_build(const sl_config_t *cfg, SSL_CTX ***out, sl_config_errors_t *errs)
{
    *out = NULL;
    SSL_CTX **ctxs = calloc(cfg->nlisten + 1, sizeof(*ctxs));
    if (ctxs == NULL)
        return SL_ENOMEM;
    int bad = 0;
    for (size_t i = 0; i < cfg->nlisten; i++) {
        if (cfg->listen[i].tls_cert == NULL)
            continue;
        ctxs[i] = build_one(&cfg->listen[i], i, errs);
        bad |= ctxs[i] == NULL;
    }
    if (bad) {
        sl_tls_free(ctxs, cfg->nlisten);
        return SL_ECONFIG;
    }
    *out = ctxs;
    return 0;
}

void
sl_tls_free(SSL_CTX **ctxs, size_t n)
{
    if (ctxs == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        SSL_CTX_free(ctxs[i]);
    free(ctxs);
}

char *
sl_tls_peer_name(SSL *ssl)
{
    X509 *cert = SSL_get_peer_certificate(ssl);
    if (cert == NULL)
        return NULL;
    char cn[256] = "";
    char *out = NULL;
    if (SSL_get_verify_result(ssl) == X509_V_OK &&
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName,
                                  cn, sizeof(cn)) > 0)
        out = strdup(cn);
    X509_free(cert);
    return out;
}
