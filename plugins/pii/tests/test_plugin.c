/* The pii plugin's hooks against a fake host table: what it does when the
 * host cannot read or write (it fails closed), the config errors create()
 * gives, and that every role's message is masked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sluice/plugin.h>

extern const sluice_plugin_t sluice_plugin;

/* ---- the fake host ---- */

struct sluice_req {
    int phase;
};
struct sluice_config {
    const char *json[8][2]; /* key, JSON text */
};

static const char *msgs[8];
static char *set_msgs[8];
static size_t nmsgs;
static int set_text_rc, delta_rc;
static const char *delta;
static char *delta_out;
static void *state;
static void *blocks[4096];
static size_t nblocks;

static const char *
json_of(const sluice_config_t *c, const char *key) {
    for (int i = 0; i < 8 && c->json[i][0]; i++)
        if (strcmp(c->json[i][0], key) == 0)
            return c->json[i][1];
    return NULL;
}

static int
f_config_string(const sluice_config_t *c, const char *k, const char **v) {
    const char *j = json_of(c, k);
    static char buf[8][64];
    static int n;
    if (j == NULL) {
        if (strcmp(k, "mode") == 0)
            *v = "tokenize";
        else if (strcmp(k, "response_mode") == 0)
            *v = "redact";
        else
            *v = "";
        return SLUICE_OK;
    }
    char *b = buf[n++ % 8];
    snprintf(b, 64, "%.*s", (int)strlen(j) - 2, j + 1); /* strip quotes */
    *v = b;
    return SLUICE_OK;
}

static int
f_config_bool(const sluice_config_t *c, const char *k, int *v) {
    const char *j = json_of(c, k);
    *v = j ? strcmp(j, "true") == 0 : strcmp(k, "restore") == 0;
    return SLUICE_OK;
}

static int
f_config_int(const sluice_config_t *c, const char *k, int64_t *v) {
    (void)c;
    (void)k;
    *v = 60;
    return SLUICE_OK;
}

static int
f_config_json(const sluice_config_t *c, const char *k, const char **v) {
    const char *j = json_of(c, k);
    *v = j ? j : "{}";
    return SLUICE_OK;
}

static int
f_message_count(sluice_req_t *r, size_t *n) {
    (void)r;
    *n = nmsgs;
    return SLUICE_OK;
}

static int
f_message_text(sluice_req_t *r, size_t i, const char **t, size_t *len) {
    (void)r;
    if (i >= nmsgs || msgs[i] == NULL)
        return SLUICE_ENOTFOUND;
    *t = msgs[i];
    *len = strlen(msgs[i]);
    return SLUICE_OK;
}

static int
f_message_set_text(sluice_req_t *r, size_t i, const char *t, size_t len) {
    (void)r;
    if (set_text_rc != SLUICE_OK)
        return set_text_rc;
    set_msgs[i] = strndup(t, len);
    blocks[nblocks++] = set_msgs[i];
    return SLUICE_OK;
}

static int
f_delta_text(sluice_req_t *r, const char **t, size_t *len) {
    (void)r;
    if (delta_rc != SLUICE_OK)
        return delta_rc;
    *t = delta;
    *len = strlen(delta);
    return SLUICE_OK;
}

static int
f_delta_set_text(sluice_req_t *r, const char *t, size_t len) {
    (void)r;
    if (delta_rc == SLUICE_ENOTFOUND && delta == NULL)
        return SLUICE_ENOTFOUND; /* no choices[0].delta at all */
    delta_out = strndup(t, len);
    blocks[nblocks++] = delta_out;
    return SLUICE_OK;
}

static int
f_request_header(sluice_req_t *r, const char *n, const char **v, size_t *l) {
    (void)r;
    (void)n;
    (void)v;
    (void)l;
    return SLUICE_ENOTFOUND;
}

static void *
f_alloc(sluice_req_t *r, size_t n) {
    (void)r;
    void *p = calloc(1, n);
    blocks[nblocks++] = p;
    return p;
}

static void *
f_state_get(sluice_req_t *r) {
    (void)r;
    return state;
}

static int
f_state_set(sluice_req_t *r, void *s) {
    (void)r;
    state = s;
    return SLUICE_OK;
}

static void
f_log(sluice_req_t *r, int level, const char *fmt, ...) {
    (void)r;
    (void)level;
    (void)fmt;
}

static int
f_metric_add(sluice_req_t *r, const char *n, const char *l, double v) {
    (void)r;
    (void)n;
    (void)l;
    (void)v;
    return SLUICE_OK;
}

static const char *
f_instance_name(sluice_req_t *r) {
    (void)r;
    return "mypii";
}

static const sluice_host_t host = {
    .size = sizeof(sluice_host_t),
    .abi_major = SLUICE_ABI_MAJOR,
    .abi_minor = SLUICE_ABI_MINOR,
    .config_string = f_config_string,
    .config_int = f_config_int,
    .config_bool = f_config_bool,
    .config_json = f_config_json,
    .request_header = f_request_header,
    .message_count = f_message_count,
    .message_text = f_message_text,
    .message_set_text = f_message_set_text,
    .delta_text = f_delta_text,
    .delta_set_text = f_delta_set_text,
    .alloc = f_alloc,
    .state_get = f_state_get,
    .state_set = f_state_set,
    .log = f_log,
    .metric_add = f_metric_add,
    .instance_name = f_instance_name,
};

static int
reset(void **s) {
    (void)s;
    for (size_t i = 0; i < nblocks; i++)
        free(blocks[i]);
    nblocks = nmsgs = 0;
    memset(set_msgs, 0, sizeof(set_msgs));
    set_text_rc = delta_rc = SLUICE_OK;
    delta = NULL;
    delta_out = NULL;
    state = NULL;
    return 0;
}

static void *
make(const sluice_config_t *cfg, char *err, size_t errlen, int *rc) {
    struct sluice_req ctx = {SLUICE_PHASE_LOAD};
    void *inst = NULL;
    *rc = sluice_plugin.create(&host, &ctx, cfg, &inst, err, errlen);
    return inst;
}

/* ---- tests ---- */

static void
test_create_names_path_and_offset_of_a_bad_pattern(void **s) {
    (void)s;
    sluice_config_t cfg = {{{"custom", "{\"emp\":{\"pattern\":\"a(b\"}}"}}};
    char err[256] = "";
    int rc;
    assert_null(make(&cfg, err, sizeof(err), &rc));
    assert_int_equal(rc, SLUICE_EINVAL);
    assert_non_null(strstr(err, "$.plugins.mypii.config.custom.emp.pattern: "
                                "invalid regex at offset 3"));
    sluice_config_t cfg2 = {{{"detectors", "{\"fax\":true}"}}};
    assert_null(make(&cfg2, err, sizeof(err), &rc));
    assert_non_null(
        strstr(err, "$.plugins.mypii.config.detectors.fax: unknown detector"));
    sluice_config_t cfg3 = {{{"mode", "\"scramble\""}}};
    assert_null(make(&cfg3, err, sizeof(err), &rc));
    assert_non_null(strstr(err, "$.plugins.mypii.config.mode: 'scramble'"));
}

static void
test_every_role_is_masked_and_one_value_one_placeholder(void **s) {
    (void)s;
    sluice_config_t cfg = {{{NULL, NULL}}};
    char err[256];
    int rc;
    void *inst = make(&cfg, err, sizeof(err), &rc);
    assert_int_equal(rc, SLUICE_OK);
    const char *in[] = {"sys a@example.com", "user 4111 1111 1111 1111", NULL,
                        "tool a@example.com 123-45-6780", "plain"};
    for (nmsgs = 0; nmsgs < 5; nmsgs++)
        msgs[nmsgs] = in[nmsgs];
    struct sluice_req req = {SLUICE_PHASE_REQUEST};
    assert_int_equal(sluice_plugin.on_request(inst, &req), SLUICE_CONTINUE);
    assert_string_equal(set_msgs[0], "sys <EMAIL_1>");
    assert_string_equal(set_msgs[1], "user <CARD_1>");
    assert_null(set_msgs[2]);
    assert_string_equal(set_msgs[3], "tool <EMAIL_1> <SSN_1>");
    assert_null(set_msgs[4]); /* nothing found: left as it is */
    sluice_plugin.destroy(inst);
}

static void
test_a_message_that_cannot_be_rewritten_refuses_the_request(void **s) {
    (void)s;
    sluice_config_t cfg = {{{NULL, NULL}}};
    char err[256];
    int rc;
    void *inst = make(&cfg, err, sizeof(err), &rc);
    msgs[0] = "mail a@example.com";
    nmsgs = 1;
    set_text_rc = SLUICE_ENOMEM;
    struct sluice_req req = {SLUICE_PHASE_REQUEST};
    assert_int_equal(sluice_plugin.on_request(inst, &req), SLUICE_ERROR);
    sluice_plugin.destroy(inst);
}

static void
test_stream_fails_closed_on_unreadable_event_or_nowhere_to_flush(void **s) {
    (void)s;
    sluice_config_t cfg = {{{NULL, NULL}}};
    char err[256];
    int rc;
    void *inst = make(&cfg, err, sizeof(err), &rc);
    msgs[0] = "mail a@example.com";
    nmsgs = 1;
    struct sluice_req req = {SLUICE_PHASE_REQUEST};
    assert_int_equal(sluice_plugin.on_request(inst, &req), SLUICE_CONTINUE);
    struct sluice_req chunk = {SLUICE_PHASE_CHUNK};
    /* A partial placeholder is held... */
    delta = "to <EMA";
    assert_int_equal(sluice_plugin.on_chunk(inst, &chunk), SLUICE_CONTINUE);
    assert_string_equal(delta_out, "to ");
    /* ...and completed by the next event. */
    delta = "IL_1> ok";
    assert_int_equal(sluice_plugin.on_chunk(inst, &chunk), SLUICE_CONTINUE);
    assert_string_equal(delta_out, "a@example.com ok");
    /* An event the host cannot read ends the stream. */
    delta_rc = SLUICE_EINVAL;
    assert_int_equal(sluice_plugin.on_chunk(inst, &chunk), SLUICE_ERROR);
    /* Held text with no delta to carry it ends the stream too. */
    delta_rc = SLUICE_OK;
    delta = "<EMAIL_";
    assert_int_equal(sluice_plugin.on_chunk(inst, &chunk), SLUICE_CONTINUE);
    delta_rc = SLUICE_ENOTFOUND;
    delta = NULL;
    assert_int_equal(sluice_plugin.on_chunk(inst, &chunk), SLUICE_ERROR);
    sluice_plugin.destroy(inst);
}

int
main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            test_create_names_path_and_offset_of_a_bad_pattern, reset),
        cmocka_unit_test_teardown(
            test_every_role_is_masked_and_one_value_one_placeholder, reset),
        cmocka_unit_test_teardown(
            test_a_message_that_cannot_be_rewritten_refuses_the_request, reset),
        cmocka_unit_test_teardown(
            test_stream_fails_closed_on_unreadable_event_or_nowhere_to_flush,
            reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
