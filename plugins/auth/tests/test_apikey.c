/* Unit tests for API keys: what `sluice keys` and the admin API write
 * (core/apikeys.c) is what the auth plugin finds and checks
 * (plugins/auth/apikey.c), in a real store under a temporary directory. */
#include "../apikey.h"
#include "apikeys.h"
#include "error.h"
#include "store.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];
static sl_store_t *st;

static int
setup(void **state) {
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/sl-apikey-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    sl_store_options_t o = {.dir = dir};
    return sl_store_open(&o, &st);
}

static int
teardown(void **state) {
    (void)state;
    sl_store_close(st);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd);
}

/* What the plugin does: hash the key, read the record by hash. */
static int
lookup(const char *key, char *buf, size_t cap, size_t *len) {
    unsigned char h[32];
    auth_key_hash(NULL, key, strlen(key), h);
    return sl_store_get(st, SL_STORE_KEYS, AUTH_KEY_NS, h, sizeof(h), buf, cap,
                        len, NULL);
}

static void
test_the_plugin_hash_is_the_store_hash(void **state) {
    (void)state;
    unsigned char a[32], b[32];
    sl_apikey_hash("sk-sl-abc", 9, a);
    auth_key_hash(NULL, "sk-sl-abc", 9, b);
    assert_memory_equal(a, b, 32);
    /* SHA-256("abc"), so the layout is documented, not accidental. */
    static const unsigned char abc[4] = {0xba, 0x78, 0x16, 0xbf};
    auth_key_hash(NULL, "abc", 3, b);
    assert_memory_equal(b, abc, 4);
}

static void
test_created_key_is_found_by_its_hash_and_never_stored_plain(void **state) {
    (void)state;
    char secret[SL_APIKEY_LEN + 1], err[128], buf[2048];
    cJSON *rec = NULL;
    sl_apikey_spec_t spec = {"team-a", NULL, 0, 60, -1};
    assert_int_equal(sl_apikey_create(st, &spec, secret, sizeof(secret), &rec,
                                      err, sizeof(err)),
                     0);
    assert_int_equal(strlen(secret), SL_APIKEY_LEN);
    assert_memory_equal(secret, AUTH_KEY_PREFIX, 6);
    size_t len = 0;
    assert_int_equal(lookup(secret, buf, sizeof(buf), &len), 0);
    assert_null(memmem(buf, len, secret, strlen(secret)));
    assert_null(memmem(buf, len, secret + 6, 20));
    auth_key_info_t info;
    assert_int_equal(auth_key_check(buf, len, "any-model", &info), AUTH_KEY_OK);
    assert_string_equal(info.name, "team-a");
    assert_int_equal(info.rpm, 60);
    assert_int_equal(info.tpm, -1);
    assert_string_equal(
        info.id,
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rec, "id")));
    /* One character off is another key: not found. */
    secret[10] = secret[10] == 'A' ? 'B' : 'A';
    assert_int_equal(lookup(secret, buf, sizeof(buf), &len), SL_ENOTFOUND);
    cJSON_Delete(rec);
}

static void
test_model_restricted_key_allows_only_its_models(void **state) {
    (void)state;
    const char *models[] = {"gpt-a", "gpt-b"};
    char secret[SL_APIKEY_LEN + 1], err[128], buf[2048];
    cJSON *rec = NULL;
    sl_apikey_spec_t spec = {"restricted", models, 2, -1, 1000};
    assert_int_equal(sl_apikey_create(st, &spec, secret, sizeof(secret), &rec,
                                      err, sizeof(err)),
                     0);
    size_t len = 0;
    auth_key_info_t info;
    assert_int_equal(lookup(secret, buf, sizeof(buf), &len), 0);
    assert_int_equal(auth_key_check(buf, len, "gpt-b", &info), AUTH_KEY_OK);
    assert_int_equal(info.tpm, 1000);
    assert_int_equal(auth_key_check(buf, len, "gpt-c", &info),
                     AUTH_KEY_MODEL_DENIED);
    assert_int_equal(auth_key_check(buf, len, NULL, &info),
                     AUTH_KEY_MODEL_DENIED);
    /* What a verified key keeps in memory answers the same. */
    assert_true(info.restricted && info.models_fit);
    assert_true(auth_key_allows(&info, "gpt-a"));
    assert_true(auth_key_allows(&info, "gpt-b"));
    assert_false(auth_key_allows(&info, "gpt-c"));
    assert_false(auth_key_allows(&info, "gpt-"));
    assert_false(auth_key_allows(&info, NULL));
    cJSON_Delete(rec);
}

static void
test_a_record_kept_in_memory_says_when_its_models_do_not_fit(void **state) {
    (void)state;
    char rec[2048];
    int n = snprintf(rec, sizeof(rec),
                     "{\"id\":\"key_1\",\"name\":\"n\",\"revoked\":false,"
                     "\"models\":[\"%0200d\",\"%0200d\"]}",
                     1, 2);
    auth_key_info_t info;
    assert_int_equal(auth_key_check(rec, (size_t)n, "m", &info),
                     AUTH_KEY_MODEL_DENIED);
    assert_false(info.models_fit);
    n = snprintf(rec, sizeof(rec),
                 "{\"id\":\"key_1\",\"name\":\"n\",\"revoked\":false}");
    assert_int_equal(auth_key_check(rec, (size_t)n, NULL, &info), AUTH_KEY_OK);
    assert_false(info.restricted);
    assert_true(auth_key_allows(&info, NULL));
    assert_true(auth_key_allows(&info, "any"));
}

static void
test_revoked_key_is_refused_and_listed_as_revoked(void **state) {
    (void)state;
    char secret[SL_APIKEY_LEN + 1], err[128], buf[2048];
    cJSON *rec = NULL, *rev = NULL, *got = NULL, *all = NULL;
    sl_apikey_spec_t spec = {"to-revoke", NULL, 0, -1, -1};
    assert_int_equal(sl_apikey_create(st, &spec, secret, sizeof(secret), &rec,
                                      err, sizeof(err)),
                     0);
    const char *id =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rec, "id"));
    assert_int_equal(sl_apikey_revoke(st, id, &rev), 0);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rev, "revoked")));
    size_t len = 0;
    auth_key_info_t info;
    assert_int_equal(lookup(secret, buf, sizeof(buf), &len), 0);
    assert_int_equal(auth_key_check(buf, len, "m", &info), AUTH_KEY_REVOKED);
    assert_int_equal(sl_apikey_get(st, id, &got), 0);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(got, "revoked")));
    assert_int_equal(sl_apikey_get(st, "key_nope", &all), SL_ENOTFOUND);
    assert_int_equal(sl_apikey_revoke(st, "key_nope", &all), SL_ENOTFOUND);
    assert_int_equal(sl_apikey_list(st, &all), 0);
    int found = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, all) {
        assert_null(cJSON_GetObjectItemCaseSensitive(it, "key"));
        if (strcmp(cJSON_GetStringValue(
                       cJSON_GetObjectItemCaseSensitive(it, "id")),
                   id) == 0)
            found =
                cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "revoked"));
    }
    assert_true(found);
    cJSON_Delete(rec);
    cJSON_Delete(rev);
    cJSON_Delete(got);
    cJSON_Delete(all);
}

static void
test_bad_specs_are_refused(void **state) {
    (void)state;
    char secret[SL_APIKEY_LEN + 1], err[128];
    cJSON *rec = NULL;
    sl_apikey_spec_t spec = {"", NULL, 0, -1, -1};
    assert_int_equal(sl_apikey_create(st, &spec, secret, sizeof(secret), &rec,
                                      err, sizeof(err)),
                     SL_EINVAL);
    const char *models_buf[4];
    cJSON *j = cJSON_Parse("{\"name\":\"x\",\"rpm\":-1}");
    assert_int_equal(
        sl_apikey_spec_from_json(j, &spec, models_buf, 4, err, sizeof(err)),
        SL_EINVAL);
    assert_non_null(strstr(err, "rpm"));
    cJSON_Delete(j);
    j = cJSON_Parse("{\"name\":\"x\",\"admin\":true}");
    assert_int_equal(
        sl_apikey_spec_from_json(j, &spec, models_buf, 4, err, sizeof(err)),
        SL_EINVAL);
    cJSON_Delete(j);
    j = cJSON_Parse("{\"name\":\"x\",\"models\":[\"a\"],\"tpm\":5}");
    assert_int_equal(
        sl_apikey_spec_from_json(j, &spec, models_buf, 4, err, sizeof(err)), 0);
    assert_int_equal(spec.nmodels, 1);
    assert_int_equal(spec.tpm, 5);
    assert_int_equal(spec.rpm, -1);
    cJSON_Delete(j);
}

static void
test_unreadable_record_is_not_accepted(void **state) {
    (void)state;
    auth_key_info_t info;
    assert_int_equal(auth_key_check("not json", 8, "m", &info),
                     AUTH_KEY_BAD_RECORD);
    assert_int_equal(
        auth_key_check("{\"id\":\"k\",\"name\":\"n\"}", 20, "m", &info),
        AUTH_KEY_BAD_RECORD);
}

int
main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_plugin_hash_is_the_store_hash),
        cmocka_unit_test(
            test_created_key_is_found_by_its_hash_and_never_stored_plain),
        cmocka_unit_test(test_model_restricted_key_allows_only_its_models),
        cmocka_unit_test(
            test_a_record_kept_in_memory_says_when_its_models_do_not_fit),
        cmocka_unit_test(test_revoked_key_is_refused_and_listed_as_revoked),
        cmocka_unit_test(test_bad_specs_are_refused),
        cmocka_unit_test(test_unreadable_record_is_not_accepted),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
