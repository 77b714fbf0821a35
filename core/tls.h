/* TLS for client listeners (OpenSSL): one server context per listen entry
 * that has "tls", built with the config snapshot so certificates reload
 * with the config while open connections keep the context they began
 * with (OpenSSL counts its references). */
#ifndef SL_TLS_H
#define SL_TLS_H

#include "config.h"

#include <openssl/ssl.h>

/* Builds cfg->nlisten contexts (NULL where a listener is plain). Problems
 * (unreadable files, a key that does not match) are appended to errs with
 * their JSON paths. 0, or SL_ECONFIG with *out NULL. */
int sl_tls_build(const sl_config_t *cfg, SSL_CTX ***out,
                 sl_config_errors_t *errs);
void sl_tls_free(SSL_CTX **ctxs, size_t n);

/* The common name of a verified client certificate (malloc'd), or NULL. */
char *sl_tls_peer_name(SSL *ssl);

#endif
