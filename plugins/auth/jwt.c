/* JWT verification (see jwt.h). The algorithm a token names must be one
 * the config allows AND match the kind of key that checks it: an HMAC
 * secret never verifies an RS256 token and an RSA public key is never used
 * as an HMAC secret, which closes the classic algorithm-confusion hole. */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include "jwt.h"

#include <cjson/cJSON.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKEN 16384

typedef struct {
    unsigned alg; /* AUTH_ALG_* this key verifies */
    char *kid;    /* NULL: any */
    unsigned char *secret;
    size_t secret_len;
    EVP_PKEY *pkey;
} jwt_key_t;

struct auth_jwt {
    unsigned algs;
    long long leeway;
    char *claim;
    char *issuer;
    char **aud;
    size_t naud;
    jwt_key_t *keys;
    size_t nkeys;
};

auth_jwt_t *
auth_jwt_new(unsigned algs, long long leeway_s, const char *consumer_claim) {
    auth_jwt_t *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return NULL;
    j->algs = algs;
    j->leeway = leeway_s < 0 ? 0 : leeway_s;
    j->claim = strdup(consumer_claim ? consumer_claim : "sub");
    if (j->claim == NULL) {
        free(j);
        return NULL;
    }
    return j;
}

void
auth_jwt_free(auth_jwt_t *j) {
    if (j == NULL)
        return;
    for (size_t i = 0; i < j->nkeys; i++) {
        free(j->keys[i].kid);
        if (j->keys[i].secret != NULL) {
            OPENSSL_cleanse(j->keys[i].secret, j->keys[i].secret_len);
            free(j->keys[i].secret);
        }
        EVP_PKEY_free(j->keys[i].pkey);
    }
    for (size_t i = 0; i < j->naud; i++)
        free(j->aud[i]);
    free(j->aud);
    free(j->keys);
    free(j->claim);
    free(j->issuer);
    free(j);
}

int
auth_jwt_set_issuer(auth_jwt_t *j, const char *issuer) {
    free(j->issuer);
    j->issuer = strdup(issuer);
    return j->issuer != NULL ? 0 : -1;
}

int
auth_jwt_add_audience(auth_jwt_t *j, const char *aud) {
    char **a = realloc(j->aud, (j->naud + 1) * sizeof(*a));
    if (a == NULL)
        return -1;
    j->aud = a;
    if ((a[j->naud] = strdup(aud)) == NULL)
        return -1;
    j->naud++;
    return 0;
}

size_t
auth_jwt_key_count(const auth_jwt_t *j) {
    return j->nkeys;
}

static jwt_key_t *
add_key(auth_jwt_t *j, const char *kid, unsigned alg) {
    jwt_key_t *k = realloc(j->keys, (j->nkeys + 1) * sizeof(*k));
    if (k == NULL)
        return NULL;
    j->keys = k;
    k = &j->keys[j->nkeys];
    memset(k, 0, sizeof(*k));
    k->alg = alg;
    if (kid != NULL && (k->kid = strdup(kid)) == NULL)
        return NULL;
    j->nkeys++;
    return k;
}

int
auth_jwt_add_secret(auth_jwt_t *j, const char *kid, const void *secret,
                    size_t len, char *err, size_t errlen) {
    if (len < 32) {
        /* RFC 7518 3.2: an HS256 key as long as the hash at least. */
        snprintf(err, errlen, "an HS256 secret needs at least 32 bytes");
        return -1;
    }
    unsigned char *copy = malloc(len);
    jwt_key_t *k = copy != NULL ? add_key(j, kid, AUTH_ALG_HS256) : NULL;
    if (k == NULL) {
        free(copy);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(copy, secret, len);
    k->secret = copy;
    k->secret_len = len;
    return 0;
}

/* The algorithm a public key verifies, or 0. */
static unsigned
pkey_alg(EVP_PKEY *pk) {
    if (EVP_PKEY_is_a(pk, "RSA"))
        return EVP_PKEY_get_bits(pk) >= 2048 ? AUTH_ALG_RS256 : 0;
    if (EVP_PKEY_is_a(pk, "EC")) {
        char group[64];
        size_t gl = 0;
        if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME,
                                           group, sizeof(group), &gl) == 1 &&
            (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0))
            return AUTH_ALG_ES256;
    }
    return 0;
}

static int
add_pkey(auth_jwt_t *j, const char *kid, EVP_PKEY *pk, char *err,
         size_t errlen) {
    unsigned alg = pkey_alg(pk);
    if (alg == 0) {
        snprintf(err, errlen,
                 "only RSA (2048 bits or more) and EC P-256 "
                 "public keys are supported");
        EVP_PKEY_free(pk);
        return -1;
    }
    jwt_key_t *k = add_key(j, kid, alg);
    if (k == NULL) {
        snprintf(err, errlen, "out of memory");
        EVP_PKEY_free(pk);
        return -1;
    }
    k->pkey = pk;
    return 0;
}

int
auth_jwt_add_pem(auth_jwt_t *j, const char *kid, const char *pem, size_t len,
                 char *err, size_t errlen) {
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pk = b != NULL ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (pk == NULL) {
        snprintf(err, errlen, "not a PEM public key (BEGIN PUBLIC KEY)");
        return -1;
    }
    return add_pkey(j, kid, pk, err, errlen);
}

long
auth_b64url_decode(const char *in, size_t len, unsigned char *out) {
    while (len > 0 && in[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -1;
    unsigned acc = 0;
    int bits = 0;
    long o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        int v;
        if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '-')
            v = 62;
        else if (c == '_')
            v = 63;
        else
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return o;
}

/* A JWK member decoded into a new buffer; NULL when absent or bad. */
static unsigned char *
jwk_bytes(const cJSON *jwk, const char *name, size_t *n) {
    const char *s =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(jwk, name));
    if (s == NULL)
        return NULL;
    size_t l = strlen(s);
    unsigned char *b = malloc(l * 3 / 4 + 3);
    long r = b != NULL ? auth_b64url_decode(s, l, b) : -1;
    if (r <= 0) {
        free(b);
        return NULL;
    }
    *n = (size_t)r;
    return b;
}

static EVP_PKEY *
pkey_from_params(const char *type, OSSL_PARAM_BLD *bld) {
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pk = NULL;
    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pk = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pk;
}

static EVP_PKEY *
jwk_rsa(const cJSON *jwk) {
    size_t nl = 0, el = 0;
    unsigned char *n = jwk_bytes(jwk, "n", &nl), *e = jwk_bytes(jwk, "e", &el);
    BIGNUM *bn = n ? BN_bin2bn(n, (int)nl, NULL) : NULL;
    BIGNUM *be = e ? BN_bin2bn(e, (int)el, NULL) : NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pk = NULL;
    if (bn != NULL && be != NULL && bld != NULL &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1)
        pk = pkey_from_params("RSA", bld);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    free(n);
    free(e);
    return pk;
}

static EVP_PKEY *
jwk_ec(const cJSON *jwk) {
    const char *crv =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(jwk, "crv"));
    if (crv == NULL || strcmp(crv, "P-256") != 0)
        return NULL;
    size_t xl = 0, yl = 0;
    unsigned char *x = jwk_bytes(jwk, "x", &xl), *y = jwk_bytes(jwk, "y", &yl);
    unsigned char pt[65];
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pk = NULL;
    if (x != NULL && y != NULL && xl == 32 && yl == 32 && bld != NULL) {
        pt[0] = 0x04; /* uncompressed point */
        memcpy(pt + 1, x, 32);
        memcpy(pt + 33, y, 32);
        if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                            "prime256v1", 0) == 1 &&
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt,
                                             sizeof(pt)) == 1)
            pk = pkey_from_params("EC", bld);
    }
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    return pk;
}

int
auth_jwt_add_jwks(auth_jwt_t *j, const char *json, size_t len, char *err,
                  size_t errlen) {
    cJSON *doc = cJSON_ParseWithLength(json, len);
    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(doc, "keys");
    if (!cJSON_IsArray(keys)) {
        snprintf(err, errlen, "not a JWKS document ({\"keys\": [...]})");
        cJSON_Delete(doc);
        return -1;
    }
    int i = 0, rc = 0;
    const cJSON *jwk;
    cJSON_ArrayForEach(jwk, keys) {
        const char *kty =
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(jwk, "kty"));
        const char *kid =
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(jwk, "kid"));
        const char *use =
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(jwk, "use"));
        if (use != NULL && strcmp(use, "sig") != 0) {
            i++;
            continue; /* an encryption key: not ours to use */
        }
        if (kty != NULL && strcmp(kty, "oct") == 0) {
            size_t kl = 0;
            unsigned char *k = jwk_bytes(jwk, "k", &kl);
            rc = k != NULL ? auth_jwt_add_secret(j, kid, k, kl, err, errlen)
                           : -1;
            if (k != NULL)
                OPENSSL_cleanse(k, kl);
            free(k);
        } else if (kty != NULL &&
                   (strcmp(kty, "RSA") == 0 || strcmp(kty, "EC") == 0)) {
            EVP_PKEY *pk = kty[0] == 'R' ? jwk_rsa(jwk) : jwk_ec(jwk);
            rc = pk != NULL ? add_pkey(j, kid, pk, err, errlen) : -1;
        } else
            rc = -1;
        if (rc != 0) {
            char why[160];
            snprintf(why, sizeof(why), "%s", err[0] ? err : "bad key");
            snprintf(err, errlen, "key %d%s%s%s: %s", i, kid ? " (kid " : "",
                     kid ? kid : "", kid ? ")" : "",
                     why[0] && strcmp(why, "bad key") != 0
                         ? why
                         : "an unsupported or incomplete key (RSA, EC "
                           "P-256 or oct)");
            break;
        }
        i++;
    }
    cJSON_Delete(doc);
    return rc;
}

/* ---- verification ---- */

static unsigned
alg_of(const char *name) {
    if (name == NULL)
        return 0;
    if (strcmp(name, "HS256") == 0)
        return AUTH_ALG_HS256;
    if (strcmp(name, "RS256") == 0)
        return AUTH_ALG_RS256;
    if (strcmp(name, "ES256") == 0)
        return AUTH_ALG_ES256;
    return 0; /* "none" and everything else */
}

static int
verify_with(const jwt_key_t *k, const char *input, size_t ilen,
            const unsigned char *sig, size_t slen) {
    if (k->alg == AUTH_ALG_HS256) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned mlen = 0;
        if (HMAC(EVP_sha256(), k->secret, (int)k->secret_len,
                 (const unsigned char *)input, ilen, mac, &mlen) == NULL)
            return 0;
        return slen == mlen && CRYPTO_memcmp(mac, sig, mlen) == 0;
    }
    unsigned char *der = NULL;
    const unsigned char *s = sig;
    int ok = 0;
    if (k->alg == AUTH_ALG_ES256) {
        /* JOSE sends r || s; OpenSSL wants DER. */
        if (slen != 64)
            return 0;
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, 32, NULL),
               *ss = BN_bin2bn(sig + 32, 32, NULL);
        int dl = -1;
        if (es != NULL && r != NULL && ss != NULL &&
            ECDSA_SIG_set0(es, r, ss) == 1) {
            r = ss = NULL;
            dl = i2d_ECDSA_SIG(es, &der);
        }
        BN_free(r);
        BN_free(ss);
        ECDSA_SIG_free(es);
        if (dl <= 0)
            return 0;
        s = der;
        slen = (size_t)dl;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx != NULL &&
        EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, k->pkey) == 1)
        ok = EVP_DigestVerify(ctx, s, slen, (const unsigned char *)input,
                              ilen) == 1;
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    return ok;
}

static cJSON *
decode_json(const char *seg, size_t len) {
    unsigned char buf[MAX_TOKEN];
    long n = auth_b64url_decode(seg, len, buf);
    return n > 0 ? cJSON_ParseWithLength((const char *)buf, (size_t)n) : NULL;
}

static int
aud_ok(const auth_jwt_t *j, const cJSON *aud) {
    if (j->naud == 0)
        return 1;
    if (cJSON_IsString(aud)) {
        for (size_t i = 0; i < j->naud; i++)
            if (strcmp(aud->valuestring, j->aud[i]) == 0)
                return 1;
        return 0;
    }
    const cJSON *it;
    if (cJSON_IsArray(aud))
        cJSON_ArrayForEach(it, aud) if (cJSON_IsString(it) &&
                                        aud_ok(j, it)) return 1;
    return 0;
}

/* A NumericDate claim: 1 with *v set, 0 when absent, -1 when not a
 * number. */
static int
num_claim(const cJSON *p, const char *name, double *v) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(p, name);
    if (c == NULL)
        return 0;
    if (!cJSON_IsNumber(c))
        return -1;
    *v = c->valuedouble;
    return 1;
}

static auth_jwt_status_t
check_claims(const auth_jwt_t *j, const cJSON *p, long long now, char *consumer,
             size_t cap) {
    double t;
    int r = num_claim(p, "exp", &t);
    if (r < 0)
        return AUTH_JWT_MALFORMED;
    if (r > 0 && (double)now >= t + (double)j->leeway)
        return AUTH_JWT_EXPIRED;
    if ((r = num_claim(p, "nbf", &t)) < 0)
        return AUTH_JWT_MALFORMED;
    if (r > 0 && (double)now + (double)j->leeway < t)
        return AUTH_JWT_NOT_YET;
    if (j->issuer != NULL) {
        const char *iss =
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p, "iss"));
        if (iss == NULL || strcmp(iss, j->issuer) != 0)
            return AUTH_JWT_BAD_ISSUER;
    }
    if (!aud_ok(j, cJSON_GetObjectItemCaseSensitive(p, "aud")))
        return AUTH_JWT_BAD_AUDIENCE;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(p, j->claim);
    int n = -1;
    if (cJSON_IsString(c))
        n = snprintf(consumer, cap, "%s", c->valuestring);
    else if (cJSON_IsNumber(c) &&
             c->valuedouble == (double)(long long)c->valuedouble)
        n = snprintf(consumer, cap, "%lld", (long long)c->valuedouble);
    if (n <= 0 || (size_t)n >= cap)
        return AUTH_JWT_NO_CONSUMER;
    for (const char *s = consumer; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return AUTH_JWT_NO_CONSUMER;
    return AUTH_JWT_OK;
}

auth_jwt_status_t
auth_jwt_verify(const auth_jwt_t *j, const char *token, size_t len,
                long long now, char *consumer, size_t cap) {
    if (len == 0 || len >= MAX_TOKEN)
        return AUTH_JWT_MALFORMED;
    const char *d1 = memchr(token, '.', len);
    const char *d2 =
        d1 != NULL ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (d2 == NULL || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)))
        return AUTH_JWT_MALFORMED;
    cJSON *hdr = decode_json(token, (size_t)(d1 - token));
    if (!cJSON_IsObject(hdr)) {
        cJSON_Delete(hdr);
        return AUTH_JWT_MALFORMED;
    }
    unsigned alg = alg_of(
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(hdr, "alg")));
    const char *kid =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(hdr, "kid"));
    auth_jwt_status_t st = AUTH_JWT_OK;
    if (alg == 0 || !(alg & j->algs))
        st = AUTH_JWT_BAD_ALG;
    unsigned char sig[MAX_TOKEN];
    const char *s = d2 + 1;
    long slen = st == AUTH_JWT_OK
                    ? auth_b64url_decode(s, len - (size_t)(s - token), sig)
                    : 0;
    if (st == AUTH_JWT_OK && slen <= 0)
        st = AUTH_JWT_MALFORMED;
    if (st == AUTH_JWT_OK) {
        int tried = 0, ok = 0;
        for (size_t i = 0; i < j->nkeys && !ok; i++) {
            const jwt_key_t *k = &j->keys[i];
            if (k->alg != alg ||
                (kid != NULL && k->kid != NULL && strcmp(kid, k->kid) != 0))
                continue;
            tried = 1;
            ok = verify_with(k, token, (size_t)(d2 - token), sig, (size_t)slen);
        }
        st = ok ? AUTH_JWT_OK : tried ? AUTH_JWT_BAD_SIG : AUTH_JWT_NO_KEY;
    }
    cJSON_Delete(hdr);
    if (st != AUTH_JWT_OK)
        return st;
    /* Claims only once the signature holds: nothing unsigned is read. */
    cJSON *payload = decode_json(d1 + 1, (size_t)(d2 - d1 - 1));
    st = cJSON_IsObject(payload) ? check_claims(j, payload, now, consumer, cap)
                                 : AUTH_JWT_MALFORMED;
    cJSON_Delete(payload);
    return st;
}

const char *
auth_jwt_status_text(auth_jwt_status_t st) {
    switch (st) {
    case AUTH_JWT_OK: return "ok";
    case AUTH_JWT_MALFORMED: return "the token is malformed";
    case AUTH_JWT_BAD_ALG: return "the token's algorithm is not accepted";
    case AUTH_JWT_NO_KEY: return "no key can verify this token";
    case AUTH_JWT_BAD_SIG: return "the token's signature is invalid";
    case AUTH_JWT_EXPIRED: return "the token has expired";
    case AUTH_JWT_NOT_YET: return "the token is not valid yet";
    case AUTH_JWT_BAD_ISSUER: return "the token's issuer is not accepted";
    case AUTH_JWT_BAD_AUDIENCE: return "the token's audience is not accepted";
    case AUTH_JWT_NO_CONSUMER: return "the token names no consumer";
    }
    return "the token is invalid";
}
