/* Unit tests for the auth plugin's JWT verification: tokens are signed here
 * with OpenSSL (keys generated per run) and checked by jwt.c. */
#define _POSIX_C_SOURCE 200809L
#include "../jwt.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW 1700000000LL
static const char SECRET[] = "0123456789abcdef0123456789abcdef-test";

static EVP_PKEY *rsa_key, *ec_key, *rsa_other;

static size_t
b64url(const unsigned char *in, size_t n, char *out) {
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = tab[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = tab[v & 63];
    }
    out[o] = '\0';
    return o;
}

/* header.payload.signature with alg's real signature by key (NULL key:
 * HS256 with SECRET; alg "none": an empty signature). */
static char *
make_token(const char *header, const char *payload, const char *alg,
           EVP_PKEY *key) {
    static char tok[8192];
    size_t n = b64url((const unsigned char *)header, strlen(header), tok);
    tok[n++] = '.';
    n += b64url((const unsigned char *)payload, strlen(payload), tok + n);
    unsigned char sig[1024];
    size_t slen = 0;
    if (strcmp(alg, "HS256") == 0) {
        unsigned ml = 0;
        HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET),
             (const unsigned char *)tok, n, sig, &ml);
        slen = ml;
    } else if (strcmp(alg, "RS256") == 0 || strcmp(alg, "ES256") == 0) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        unsigned char der[256];
        size_t dl = sizeof(der);
        assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key),
                         1);
        if (alg[0] == 'R') {
            slen = sizeof(sig);
            assert_int_equal(
                EVP_DigestSign(ctx, sig, &slen, (unsigned char *)tok, n), 1);
        } else {
            assert_int_equal(
                EVP_DigestSign(ctx, der, &dl, (unsigned char *)tok, n), 1);
            const unsigned char *p = der;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dl);
            assert_non_null(es);
            BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
            BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
            ECDSA_SIG_free(es);
            slen = 64;
        }
        EVP_MD_CTX_free(ctx);
    }
    tok[n++] = '.';
    b64url(sig, slen, tok + n);
    return tok;
}

static char *
pem_of(EVP_PKEY *k, size_t *len) {
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b, k);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *out = malloc((size_t)n + 1);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    *len = (size_t)n;
    BIO_free(b);
    return out;
}

static auth_jwt_t *
hs_verifier(void) {
    char err[200];
    auth_jwt_t *j = auth_jwt_new(
        AUTH_ALG_HS256 | AUTH_ALG_RS256 | AUTH_ALG_ES256, 30, "sub");
    assert_int_equal(
        auth_jwt_add_secret(j, NULL, SECRET, strlen(SECRET), err, sizeof(err)),
        0);
    return j;
}

static auth_jwt_status_t
check(const auth_jwt_t *j, const char *tok, char *consumer) {
    char dummy[257];
    return auth_jwt_verify(j, tok, strlen(tok), NOW,
                           consumer ? consumer : dummy, 257);
}

static const char HS[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static void
test_hs256_valid_token_names_the_consumer(void **state) {
    (void)state;
    auth_jwt_t *j = hs_verifier();
    char who[257];
    const char *t = make_token(
        HS, "{\"sub\":\"alice\",\"exp\":1700000100,\"nbf\":1699999000}",
        "HS256", NULL);
    assert_int_equal(check(j, t, who), AUTH_JWT_OK);
    assert_string_equal(who, "alice");
    auth_jwt_free(j);
}

static void
test_expired_token_is_refused_beyond_the_leeway_only(void **state) {
    (void)state;
    auth_jwt_t *j = hs_verifier();
    /* Expired 10 s ago: inside the 30 s leeway. */
    assert_int_equal(check(j,
                           make_token(HS, "{\"sub\":\"a\",\"exp\":1699999990}",
                                      "HS256", NULL),
                           NULL),
                     AUTH_JWT_OK);
    assert_int_equal(check(j,
                           make_token(HS, "{\"sub\":\"a\",\"exp\":1699999960}",
                                      "HS256", NULL),
                           NULL),
                     AUTH_JWT_EXPIRED);
    auth_jwt_free(j);
    /* With no leeway, a token expiring now is expired. */
    char err[200];
    j = auth_jwt_new(AUTH_ALG_HS256, 0, "sub");
    auth_jwt_add_secret(j, NULL, SECRET, strlen(SECRET), err, sizeof(err));
    assert_int_equal(check(j,
                           make_token(HS, "{\"sub\":\"a\",\"exp\":1700000000}",
                                      "HS256", NULL),
                           NULL),
                     AUTH_JWT_EXPIRED);
    auth_jwt_free(j);
}

static void
test_token_before_nbf_is_refused(void **state) {
    (void)state;
    auth_jwt_t *j = hs_verifier();
    assert_int_equal(check(j,
                           make_token(HS, "{\"sub\":\"a\",\"nbf\":1700000100}",
                                      "HS256", NULL),
                           NULL),
                     AUTH_JWT_NOT_YET);
    assert_int_equal(check(j,
                           make_token(HS, "{\"sub\":\"a\",\"nbf\":1700000020}",
                                      "HS256", NULL),
                           NULL),
                     AUTH_JWT_OK);
    auth_jwt_free(j);
}

static void
test_alg_none_is_refused(void **state) {
    (void)state;
    auth_jwt_t *j = hs_verifier();
    const char *t = make_token("{\"alg\":\"none\",\"typ\":\"JWT\"}",
                               "{\"sub\":\"mallory\"}", "none", NULL);
    assert_int_equal(check(j, t, NULL), AUTH_JWT_BAD_ALG);
    t = make_token("{\"alg\":\"None\"}", "{\"sub\":\"mallory\"}", "none", NULL);
    assert_int_equal(check(j, t, NULL), AUTH_JWT_BAD_ALG);
    auth_jwt_free(j);
}

static void
test_wrong_alg_is_refused(void **state) {
    (void)state;
    char err[200];
    /* Only RS256 allowed: an HS256 token is refused even with a secret. */
    auth_jwt_t *j = auth_jwt_new(AUTH_ALG_RS256, 30, "sub");
    auth_jwt_add_secret(j, NULL, SECRET, strlen(SECRET), err, sizeof(err));
    assert_int_equal(
        check(j, make_token(HS, "{\"sub\":\"a\"}", "HS256", NULL), NULL),
        AUTH_JWT_BAD_ALG);
    auth_jwt_free(j);
    /* Algorithm confusion: the RSA public key (PEM text) as an HMAC secret
     * must not verify an HS256 token when only the RSA key is configured. */
    size_t plen;
    char *pem = pem_of(rsa_key, &plen);
    j = auth_jwt_new(AUTH_ALG_HS256 | AUTH_ALG_RS256, 30, "sub");
    assert_int_equal(auth_jwt_add_pem(j, NULL, pem, plen, err, sizeof(err)), 0);
    char tok[8192];
    size_t n = b64url((const unsigned char *)HS, strlen(HS), tok);
    tok[n++] = '.';
    n += b64url((const unsigned char *)"{\"sub\":\"a\"}", 11, tok + n);
    unsigned char mac[32];
    unsigned ml = 0;
    HMAC(EVP_sha256(), pem, (int)plen, (unsigned char *)tok, n, mac, &ml);
    tok[n++] = '.';
    b64url(mac, ml, tok + n);
    assert_int_equal(check(j, tok, NULL), AUTH_JWT_NO_KEY);
    /* An unknown algorithm name. */
    assert_int_equal(check(j,
                           make_token("{\"alg\":\"HS512\"}", "{\"sub\":\"a\"}",
                                      "none", NULL),
                           NULL),
                     AUTH_JWT_BAD_ALG);
    free(pem);
    auth_jwt_free(j);
}

static void
test_tampered_token_is_refused(void **state) {
    (void)state;
    auth_jwt_t *j = hs_verifier();
    char *t = strdup(make_token(HS, "{\"sub\":\"alice\"}", "HS256", NULL));
    /* Another payload under the same signature. */
    char *sig = strrchr(t, '.');
    char *forged = strdup(make_token(HS, "{\"sub\":\"admin\"}", "HS256", NULL));
    strcpy(strrchr(forged, '.'), sig);
    assert_int_equal(check(j, forged, NULL), AUTH_JWT_BAD_SIG);
    /* One signature character changed. */
    sig[3] = sig[3] == 'A' ? 'B' : 'A';
    assert_int_equal(check(j, t, NULL), AUTH_JWT_BAD_SIG);
    /* Not a JWT at all. */
    assert_int_equal(check(j, "abc.def", NULL), AUTH_JWT_MALFORMED);
    assert_int_equal(check(j, "a.b.c.d", NULL), AUTH_JWT_MALFORMED);
    assert_int_equal(check(j, "!!!.???.***", NULL), AUTH_JWT_MALFORMED);
    free(t);
    free(forged);
    auth_jwt_free(j);
}

static void
test_issuer_and_audience_are_checked(void **state) {
    (void)state;
    auth_jwt_t *j = hs_verifier();
    auth_jwt_set_issuer(j, "https://idp.example");
    auth_jwt_add_audience(j, "sluice");
    assert_int_equal(
        check(j,
              make_token(HS,
                         "{\"sub\":\"a\",\"iss\":\"https://idp.example\","
                         "\"aud\":\"sluice\"}",
                         "HS256", NULL),
              NULL),
        AUTH_JWT_OK);
    assert_int_equal(
        check(j,
              make_token(HS,
                         "{\"sub\":\"a\",\"iss\":\"https://idp.example\","
                         "\"aud\":[\"other\",\"sluice\"]}",
                         "HS256", NULL),
              NULL),
        AUTH_JWT_OK);
    assert_int_equal(check(j,
                           make_token(HS,
                                      "{\"sub\":\"a\",\"iss\":\"https://evil\","
                                      "\"aud\":\"sluice\"}",
                                      "HS256", NULL),
                           NULL),
                     AUTH_JWT_BAD_ISSUER);
    assert_int_equal(check(j,
                           make_token(HS, "{\"sub\":\"a\",\"aud\":\"sluice\"}",
                                      "HS256", NULL),
                           NULL),
                     AUTH_JWT_BAD_ISSUER);
    assert_int_equal(
        check(j,
              make_token(HS,
                         "{\"sub\":\"a\",\"iss\":\"https://idp.example\","
                         "\"aud\":[\"other\"]}",
                         "HS256", NULL),
              NULL),
        AUTH_JWT_BAD_AUDIENCE);
    assert_int_equal(
        check(j,
              make_token(HS, "{\"sub\":\"a\",\"iss\":\"https://idp.example\"}",
                         "HS256", NULL),
              NULL),
        AUTH_JWT_BAD_AUDIENCE);
    auth_jwt_free(j);
}

static void
test_consumer_comes_from_the_configured_claim(void **state) {
    (void)state;
    char err[200], who[257];
    auth_jwt_t *j = auth_jwt_new(AUTH_ALG_HS256, 0, "client_id");
    auth_jwt_add_secret(j, NULL, SECRET, strlen(SECRET), err, sizeof(err));
    assert_int_equal(
        check(j,
              make_token(HS, "{\"sub\":\"u1\",\"client_id\":\"app-7\"}",
                         "HS256", NULL),
              who),
        AUTH_JWT_OK);
    assert_string_equal(who, "app-7");
    assert_int_equal(
        check(j, make_token(HS, "{\"sub\":\"u1\"}", "HS256", NULL), NULL),
        AUTH_JWT_NO_CONSUMER);
    auth_jwt_free(j);
}

static void
test_short_hs256_secret_is_refused(void **state) {
    (void)state;
    char err[200];
    auth_jwt_t *j = auth_jwt_new(AUTH_ALG_HS256, 0, "sub");
    assert_int_equal(auth_jwt_add_secret(j, NULL, "short", 5, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "32 bytes"));
    auth_jwt_free(j);
}

static void
test_rs256_and_es256_with_pem_keys(void **state) {
    (void)state;
    char err[200], who[257];
    size_t l1, l2;
    char *p1 = pem_of(rsa_key, &l1), *p2 = pem_of(ec_key, &l2);
    auth_jwt_t *j = auth_jwt_new(AUTH_ALG_RS256 | AUTH_ALG_ES256, 30, "sub");
    assert_int_equal(auth_jwt_add_pem(j, NULL, p1, l1, err, sizeof(err)), 0);
    assert_int_equal(auth_jwt_add_pem(j, NULL, p2, l2, err, sizeof(err)), 0);
    assert_int_equal(check(j,
                           make_token("{\"alg\":\"RS256\"}", "{\"sub\":\"r\"}",
                                      "RS256", rsa_key),
                           who),
                     AUTH_JWT_OK);
    assert_string_equal(who, "r");
    assert_int_equal(check(j,
                           make_token("{\"alg\":\"ES256\"}", "{\"sub\":\"e\"}",
                                      "ES256", ec_key),
                           who),
                     AUTH_JWT_OK);
    assert_string_equal(who, "e");
    /* Signed by a key we do not know. */
    assert_int_equal(check(j,
                           make_token("{\"alg\":\"RS256\"}", "{\"sub\":\"r\"}",
                                      "RS256", rsa_other),
                           NULL),
                     AUTH_JWT_BAD_SIG);
    /* An ES256 token's signature relabelled RS256. */
    char *t = strdup(
        make_token("{\"alg\":\"ES256\"}", "{\"sub\":\"e\"}", "ES256", ec_key));
    char *relabel = strdup(
        make_token("{\"alg\":\"RS256\"}", "{\"sub\":\"e\"}", "none", NULL));
    char *joined = malloc(strlen(relabel) + strlen(t));
    sprintf(joined, "%s%s", relabel, strrchr(t, '.') + 1);
    assert_int_equal(check(j, joined, NULL), AUTH_JWT_BAD_SIG);
    free(joined);
    free(relabel);
    free(t);
    free(p1);
    free(p2);
    auth_jwt_free(j);
}

static void
b64_bn(EVP_PKEY *k, const char *param, char *out) {
    BIGNUM *bn = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(k, param, &bn), 1);
    unsigned char buf[600];
    int n = BN_bn2bin(bn, buf);
    b64url(buf, (size_t)n, out);
    BN_free(bn);
}

static void
test_jwks_keys_are_chosen_by_kid(void **state) {
    (void)state;
    char n[1024], e[16], x[64], y[64], err[200], doc[4096], who[257];
    b64_bn(rsa_key, OSSL_PKEY_PARAM_RSA_N, n);
    b64_bn(rsa_key, OSSL_PKEY_PARAM_RSA_E, e);
    unsigned char pt[65];
    size_t ptl = 0;
    assert_int_equal(EVP_PKEY_get_octet_string_param(
                         ec_key, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &ptl),
                     1);
    assert_int_equal(ptl, 65);
    b64url(pt + 1, 32, x);
    b64url(pt + 33, 32, y);
    char k[64];
    b64url((const unsigned char *)SECRET, strlen(SECRET), k);
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r1\",\"n\":\"%s\","
             "\"e\":\"%s\"},{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"e1\","
             "\"x\":\"%s\",\"y\":\"%s\"},{\"kty\":\"oct\",\"kid\":\"h1\","
             "\"k\":\"%s\"},{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"x\"}]}",
             n, e, x, y, k);
    auth_jwt_t *j = auth_jwt_new(7, 30, "sub");
    assert_int_equal(auth_jwt_add_jwks(j, doc, strlen(doc), err, sizeof(err)),
                     0);
    assert_int_equal(auth_jwt_key_count(j), 3);
    assert_int_equal(check(j,
                           make_token("{\"alg\":\"RS256\",\"kid\":\"r1\"}",
                                      "{\"sub\":\"jr\"}", "RS256", rsa_key),
                           who),
                     AUTH_JWT_OK);
    assert_string_equal(who, "jr");
    assert_int_equal(check(j,
                           make_token("{\"alg\":\"ES256\",\"kid\":\"e1\"}",
                                      "{\"sub\":\"je\"}", "ES256", ec_key),
                           who),
                     AUTH_JWT_OK);
    assert_int_equal(check(j,
                           make_token("{\"alg\":\"HS256\",\"kid\":\"h1\"}",
                                      "{\"sub\":\"jh\"}", "HS256", NULL),
                           who),
                     AUTH_JWT_OK);
    /* A kid nobody has. */
    assert_int_equal(check(j,
                           make_token("{\"alg\":\"RS256\",\"kid\":\"zz\"}",
                                      "{\"sub\":\"x\"}", "RS256", rsa_key),
                           NULL),
                     AUTH_JWT_NO_KEY);
    auth_jwt_free(j);
    /* A bad document says so. */
    j = auth_jwt_new(7, 30, "sub");
    assert_int_equal(auth_jwt_add_jwks(j, "{\"k\":1}", 7, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "JWKS"));
    auth_jwt_free(j);
}

static void
test_b64url_decode_rejects_bad_input(void **state) {
    (void)state;
    unsigned char out[16];
    assert_int_equal(auth_b64url_decode("aGk", 3, out), 2);
    assert_memory_equal(out, "hi", 2);
    assert_int_equal(auth_b64url_decode("aGk=", 4, out), 2);
    assert_int_equal(auth_b64url_decode("a+/=", 4, out), -1);
    assert_int_equal(auth_b64url_decode("a", 1, out), -1);
}

static int
setup(void **state) {
    (void)state;
    rsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    rsa_other = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    ec_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    return rsa_key && rsa_other && ec_key ? 0 : -1;
}

static int
teardown(void **state) {
    (void)state;
    EVP_PKEY_free(rsa_key);
    EVP_PKEY_free(rsa_other);
    EVP_PKEY_free(ec_key);
    return 0;
}

int
main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hs256_valid_token_names_the_consumer),
        cmocka_unit_test(test_expired_token_is_refused_beyond_the_leeway_only),
        cmocka_unit_test(test_token_before_nbf_is_refused),
        cmocka_unit_test(test_alg_none_is_refused),
        cmocka_unit_test(test_wrong_alg_is_refused),
        cmocka_unit_test(test_tampered_token_is_refused),
        cmocka_unit_test(test_issuer_and_audience_are_checked),
        cmocka_unit_test(test_consumer_comes_from_the_configured_claim),
        cmocka_unit_test(test_short_hs256_secret_is_refused),
        cmocka_unit_test(test_rs256_and_es256_with_pem_keys),
        cmocka_unit_test(test_jwks_keys_are_chosen_by_kid),
        cmocka_unit_test(test_b64url_decode_rejects_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
