/* JWT verification for the auth plugin: HS256, RS256 and ES256 with
 * OpenSSL, exp/nbf with a leeway, iss and aud checks, and the consumer
 * taken from a configured claim. A verifier is built once (create()) and
 * then only read, so hooks on many threads share it. */
#ifndef AUTH_JWT_H
#define AUTH_JWT_H

#include <stddef.h>

enum {
    AUTH_ALG_HS256 = 1,
    AUTH_ALG_RS256 = 2,
    AUTH_ALG_ES256 = 4,
};

typedef struct auth_jwt auth_jwt_t;

/* A verifier that accepts the algorithms in `algs` (AUTH_ALG_* bits),
 * tolerates clocks leeway_s seconds apart, and reads the consumer from
 * claim `consumer_claim`. NULL on OOM. */
auth_jwt_t *auth_jwt_new(unsigned algs, long long leeway_s,
                         const char *consumer_claim);
void auth_jwt_free(auth_jwt_t *j);
/* Requires "iss" to equal issuer. */
int auth_jwt_set_issuer(auth_jwt_t *j, const char *issuer);
/* Requires "aud" (a string or an array) to hold one of the audiences
 * added; none added: "aud" is not checked. */
int auth_jwt_add_audience(auth_jwt_t *j, const char *aud);

/* Keys. Each returns 0, or -1 with a one-line reason in err. kid may be
 * NULL (the key then serves tokens without a "kid" or with any kid). */
int auth_jwt_add_secret(auth_jwt_t *j, const char *kid, const void *secret,
                        size_t len, char *err, size_t errlen);
/* A PEM public key: RSA (RS256) or EC P-256 (ES256). */
int auth_jwt_add_pem(auth_jwt_t *j, const char *kid, const char *pem,
                     size_t len, char *err, size_t errlen);
/* A JWKS document ({"keys":[...]}: kty RSA, EC P-256, oct). */
int auth_jwt_add_jwks(auth_jwt_t *j, const char *json, size_t len, char *err,
                      size_t errlen);
size_t auth_jwt_key_count(const auth_jwt_t *j);

/* Why a token was refused. */
typedef enum {
    AUTH_JWT_OK = 0,
    AUTH_JWT_MALFORMED,
    AUTH_JWT_BAD_ALG, /* none, unknown, or not allowed */
    AUTH_JWT_NO_KEY,  /* no key of that algorithm (and kid) */
    AUTH_JWT_BAD_SIG,
    AUTH_JWT_EXPIRED,
    AUTH_JWT_NOT_YET, /* nbf in the future */
    AUTH_JWT_BAD_ISSUER,
    AUTH_JWT_BAD_AUDIENCE,
    AUTH_JWT_NO_CONSUMER, /* the consumer claim is missing or not text */
} auth_jwt_status_t;

/* Verifies token[0..len) at time now (unix seconds). On AUTH_JWT_OK the
 * consumer claim's value is copied into consumer (cap bytes, truncated
 * never: too long is AUTH_JWT_NO_CONSUMER). */
auth_jwt_status_t auth_jwt_verify(const auth_jwt_t *j, const char *token,
                                  size_t len, long long now, char *consumer,
                                  size_t cap);
/* A short client-safe text for a status. */
const char *auth_jwt_status_text(auth_jwt_status_t st);

/* base64url without padding (padding accepted on input); decode returns
 * the length or -1. out needs (len * 3) / 4 + 3 bytes. */
long auth_b64url_decode(const char *in, size_t len, unsigned char *out);

#endif
