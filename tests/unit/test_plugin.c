/* Unit tests for the plugin platform: the loader and its ABI checks
 * (core/plugin.c), the config schema, the host table (core/plugin_host.c)
 * and the pipeline (core/pipeline.c) run on a request built by hand. The
 * plugins are the .so files the test build makes in tests/plugins. The
 * connection's answer functions are replaced by recorders below. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dlfcn.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "pipeline.h"
#include "plugin.h"
#include "providers/provider.h"
#include "snapshot.h"
#include "store.h"

#ifndef SL_TEST_PLUGIN_DIR
#error "SL_TEST_PLUGIN_DIR must name the built test plugins"
#endif
#define PLUGIN(name) SL_TEST_PLUGIN_DIR "/" name ".so"

/* ---- recorders for what the pipeline answers ---- */

static struct {
    int calls, status;
    char body[2048];
    char code[64];
} sent;

void
sl_response_send(sl_request_t *r, int status, const char *content_type,
                 const char *extra, const char *body, size_t len) {
    if (r->pipe != NULL)
        sl_pipeline_response(r, &status, &content_type, &body, &len);
    sent.calls++;
    sent.status = status;
    snprintf(sent.body, sizeof(sent.body), "%.*s", (int)len, body);
    r->status = status;
    r->responded = 1;
}

void
sl_response_error(sl_request_t *r, int status, const char *message,
                  const char *code) {
    char body[1024];
    size_t n = sl_error_json(body, sizeof(body), message, "x", code);
    snprintf(sent.code, sizeof(sent.code), "%s", code);
    sl_response_send(r, status, "application/json", NULL, body, n);
}

/* A respond_stream() answer (ABI 1.1): its events, joined by '|'. */
void
sl_response_stream_start(sl_request_t *r, int status, const char *extra) {
    sent.calls++;
    sent.status = status;
    sent.body[0] = '\0';
    r->status = status;
    r->responded = 1;
    r->streaming = 1;
}

int
sl_response_stream_event(sl_request_t *r, const char *event, size_t event_len,
                         const char *data, size_t len) {
    size_t n = strlen(sent.body);
    snprintf(sent.body + n, sizeof(sent.body) - n, "%s%.*s", n ? "|" : "",
             (int)len, data);
    return 0;
}

void
sl_response_stream_end(sl_request_t *r, int clean) {
    r->stream_ok = clean;
}

/* ---- helpers ---- */

/* Loads a config (JSON with ' for ") and its plugins; the errors, joined
 * one per line as "PATH: MESSAGE", go to errs_text. */
static char errs_text[8192];

static sl_plugins_t *
load(const char *json_sq, sl_config_t **cfg_out) {
    char *json = strdup(json_sq);
    for (char *p = json; *p; p++)
        if (*p == '\'')
            *p = '"';
    sl_config_errors_t errs = {0};
    sl_config_t *cfg = NULL;
    sl_plugins_t *ps = NULL;
    errs_text[0] = '\0';
    if (sl_config_load_string(json, strlen(json), &cfg, &errs) == 0)
        ps = sl_plugins_load(cfg, &errs);
    for (size_t i = 0; i < errs.count; i++) {
        size_t n = strlen(errs_text);
        snprintf(errs_text + n, sizeof(errs_text) - n, "%s: %s\n",
                 errs.items[i].path, errs.items[i].message);
    }
    sl_config_errors_free(&errs);
    free(json);
    if (ps == NULL) {
        sl_config_free(cfg);
        cfg = NULL;
    }
    *cfg_out = cfg;
    return ps;
}

#define BASE                                                                   \
    "{'listen':[{'addr':'127.0.0.1:0'}],"                                      \
    "'plugin_dir':'" SL_TEST_PLUGIN_DIR "',"                                   \
    "'providers':{'m':{'type':'mock'}},"                                       \
    "'models':{'echo':{'targets':[{'provider':'m','model':'echo'}]}},"

static void
assert_errors_contain(const char *a, const char *b) {
    if (strstr(errs_text, a) == NULL ||
        (b != NULL && strstr(errs_text, b) == NULL)) {
        fprintf(stderr, "errors were:\n%s(wanted '%s' and '%s')\n", errs_text,
                a, b ? b : "");
        fail();
    }
}

/* A request on route 0 of cfg with a chat body, ready for the pipeline. */
typedef struct {
    sl_snapshot_t snap;
    sl_request_t r;
    sl_call_t k;
    sl_arena_t *arena;
} fake_t;

static void
fake_init(fake_t *f, sl_config_t *cfg, sl_plugins_t *ps, const char *head,
          const char *body) {
    memset(f, 0, sizeof(*f));
    memset(&sent, 0, sizeof(sent));
    f->arena = sl_arena_create(4096);
    f->snap.cfg = cfg;
    f->snap.plugins = ps;
    f->r.snap = &f->snap;
    f->r.cfg = cfg;
    f->r.arena = f->arena;
    f->r.route = &cfg->routes[0];
    f->r.model = "echo";
    int status;
    const char *why;
    char *h = sl_arena_strndup(f->arena, head, strlen(head));
    assert_true(sl_http_parse_request(h, strlen(h), 16384, &f->r.http, &status,
                                      &why) > 0);
    f->r.body = sl_arena_strndup(f->arena, body, strlen(body));
    f->r.body_len = strlen(body);
    f->k.r = &f->r;
    f->k.kind = SL_CALL_CHAT;
    f->k.json = cJSON_Parse(body);
    assert_non_null(f->k.json);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(f->k.json, "stream");
    f->k.stream = cJSON_IsTrue(st);
}

/* Ends the request: cleanups (on_log among them) run. */
static void
fake_end(fake_t *f) {
    sl_arena_destroy(f->arena);
    cJSON_Delete(f->k.json);
}

#define HEAD                                                                   \
    "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nx-user: bob\r\n\r\n"
#define CHAT                                                                   \
    "{\"model\":\"echo\",\"messages\":[{\"role\":\"system\",\"content\":"      \
    "\"be brief\"},{\"role\":\"user\",\"content\":\"hello\"}]}"

/* ---- the loader ---- */

static void
test_good_plugin_loads_with_its_defaults_and_route_chain(void **state) {
    sl_config_t *cfg;
    sl_plugins_t *ps = load(BASE "'plugins':{'g':{'path':'testgood.so'}},"
                                 "'routes':[{'path':'/v1/chat/completions',"
                                 "'plugins':['g']},{'path':'/healthz'}]}",
                            &cfg);
    assert_non_null(ps);
    assert_int_equal(ps->ninsts, 1);
    sl_plugin_inst_t *in = &ps->insts[0];
    assert_string_equal(in->name, "g");
    assert_string_equal(in->desc.name, "tgood");
    assert_string_equal(in->desc.version, "1.0.0");
    assert_int_equal(in->fail_open, 0);
    assert_int_equal(in->hooks, SL_HOOK_REQUEST | SL_HOOK_RESPONSE |
                                    SL_HOOK_CHUNK | SL_HOOK_LOG);
    const sl_plugin_chain_t *ch = sl_plugins_route(ps, 0);
    assert_non_null(ch);
    assert_int_equal(ch->n, 1);
    assert_ptr_equal(ch->items[0], in);
    assert_null(sl_plugins_route(ps, 1));
    assert_null(sl_plugins_route(ps, 7));

    /* Defaults of every type, read through the host table. */
    const sluice_host_t *h = sl_plugin_host();
    const char *s;
    int64_t i64;
    double d;
    int b;
    size_t n;
    assert_int_equal(h->config_string(&in->config, "header", &s), 0);
    assert_string_equal(s, "x-tgood");
    assert_int_equal(h->config_int(&in->config, "limit", &i64), 0);
    assert_int_equal(i64, 10);
    assert_int_equal(h->config_number(&in->config, "ratio", &d), 0);
    assert_true(d == 0.5);
    assert_int_equal(h->config_bool(&in->config, "delta_upper", &b), 0);
    assert_int_equal(b, 0);
    assert_int_equal(h->config_list_count(&in->config, "tags", &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(h->config_list_item(&in->config, "tags", 1, &s), 0);
    assert_string_equal(s, "b");
    assert_int_equal(h->config_list_item(&in->config, "tags", 2, &s),
                     SLUICE_ENOTFOUND);
    assert_int_equal(h->config_json(&in->config, "extra", &s), 0);
    assert_string_equal(s, "{}");
    assert_int_equal(h->config_json(&in->config, NULL, &s), 0);
    assert_non_null(strstr(s, "\"limit\":10"));
    assert_int_equal(h->config_string(&in->config, "deny_header", &s),
                     SLUICE_ENOTFOUND); /* no value, no default */
    assert_int_equal(h->config_string(&in->config, "limit", &s), SLUICE_EINVAL);
    assert_int_equal(h->config_string(&in->config, "nope", &s),
                     SLUICE_ENOTFOUND);
    sl_plugins_free(ps);
    sl_config_free(cfg);
}

static void
test_wrong_abi_major_is_refused_naming_both_versions(void **state) {
    sl_config_t *cfg;
    assert_null(load(BASE "'plugins':{'x':{'path':'badmajor.so'}}}", &cfg));
    assert_errors_contain("$.plugins.x.path: ", "built for plugin ABI 2.3");
    assert_errors_contain("this gateway speaks ABI 1.1", NULL);
}

static void
test_a_library_without_the_symbol_is_refused(void **state) {
    sl_config_t *cfg;
    assert_null(load(BASE "'plugins':{'x':{'path':'nosymbol.so'}}}", &cfg));
    assert_errors_contain("$.plugins.x.path: ",
                          "exports no 'sluice_plugin' symbol");
}

static void
test_a_missing_file_is_a_clear_error(void **state) {
    sl_config_t *cfg;
    assert_null(load(BASE "'plugins':{'x':{'path':'nothere.so'}}}", &cfg));
    assert_errors_contain("$.plugins.x.path: cannot open ",
                          "No such file or directory");
}

static void
test_a_failing_create_is_an_error_with_its_reason(void **state) {
    sl_config_t *cfg;
    assert_null(load(BASE "'plugins':{'x':{'path':'createfail.so',"
                          "'config':{'reason':'no licence'}}}}",
                     &cfg));
    assert_errors_contain("$.plugins.x: plugin 'createfail' 1.0.0 failed to "
                          "start: refusing to start: no licence",
                          NULL);
}

static void
test_a_required_key_missing_is_reported_with_its_path(void **state) {
    sl_config_t *cfg;
    assert_null(load(BASE "'plugins':{'x':{'path':'createfail.so'}}}", &cfg));
    assert_errors_contain("$.plugins.x.config.reason: required", NULL);
    /* create never ran: its failure is not reported. */
    assert_null(strstr(errs_text, "failed to start"));
}

static void
test_schema_errors_have_json_paths(void **state) {
    sl_config_t *cfg;
    assert_null(load(BASE "'plugins':{'x':{'path':'testgood.so','config':{"
                          "'limit':1.5,'ratio':'a','delta_upper':1,"
                          "'tags':['a',3],'extra':[],'header':7,"
                          "'colour':'red','we ird':1}}}}",
                     &cfg));
    assert_errors_contain("$.plugins.x.config.limit: must be an integer", NULL);
    assert_errors_contain("$.plugins.x.config.ratio: must be a number", NULL);
    assert_errors_contain("$.plugins.x.config.delta_upper: must be true or "
                          "false",
                          NULL);
    assert_errors_contain("$.plugins.x.config.tags[1]: must be a string", NULL);
    assert_errors_contain("$.plugins.x.config.extra: must be an object", NULL);
    assert_errors_contain("$.plugins.x.config.header: must be a string", NULL);
    assert_errors_contain("$.plugins.x.config.colour: unknown key for plugin "
                          "'tgood'",
                          NULL);
    assert_errors_contain("$.plugins.x.config[\"we ird\"]: unknown key", NULL);
}

static void
test_an_older_smaller_descriptor_loads_without_the_newer_hooks(void **state) {
    /* oldabi's descriptor ends before on_chunk; the hooks stored past it
     * abort() if called. */
    sl_config_t *cfg;
    sl_plugins_t *ps = load(BASE "'plugins':{'o':{'path':'oldabi.so'}},"
                                 "'routes':[{'path':'/v1/chat/completions',"
                                 "'plugins':['o']}]}",
                            &cfg);
    assert_non_null(ps);
    sl_plugin_inst_t *in = &ps->insts[0];
    assert_string_equal(in->desc.version, "0.9.0");
    assert_non_null(in->desc.on_request);
    assert_null(in->desc.on_chunk);
    assert_null(in->desc.on_log);
    assert_int_equal(in->hooks, SL_HOOK_REQUEST);

    fake_t f;
    fake_init(&f, cfg, ps, HEAD,
              "{\"model\":\"echo\",\"stream\":true,\"messages\":[]}");
    assert_int_equal(sl_pipeline_request(&f.r, &f.k), 0);
    assert_string_equal(f.r.plugin_headers, "x-old-plugin: 0.9.0\r\n");
    const char *data = "{\"choices\":[{\"delta\":{\"content\":\"x\"}}]}";
    size_t len = strlen(data);
    assert_int_equal(sl_pipeline_chunk(&f.r, &data, &len), 0);
    fake_end(&f); /* no on_log to run */
    sl_plugins_free(ps);
    sl_config_free(cfg);
}

static void
test_two_libraries_with_one_plugin_name_are_refused(void **state) {
    sl_config_t *cfg;
    assert_null(load(BASE "'plugins':{'a':{'path':'testgood.so'},"
                          "'b':{'path':'oldabi.so'}}}",
                     &cfg));
    assert_errors_contain("$.plugins.b.path: ", "is plugin 'tgood', and so is");
    assert_errors_contain("two plugins cannot share a name", NULL);
}

static void
test_one_library_serves_two_instances_and_is_opened_once(void **state) {
    sl_config_t *cfg;
    sl_plugins_t *ps =
        load(BASE "'plugins':{'a':{'path':'testgood.so'},"
                  "'b':{'path':'" PLUGIN("testgood") "','fail_open':true,"
                                                     "'config':{'limit':3}}}}",
             &cfg);
    assert_non_null(ps);
    assert_ptr_equal(ps->insts[0].lib, ps->insts[1].lib);
    assert_ptr_not_equal(ps->insts[0].instance, ps->insts[1].instance);
    assert_int_equal(ps->insts[1].fail_open, 1);
    int64_t v;
    assert_int_equal(
        sl_plugin_host()->config_int(&ps->insts[1].config, "limit", &v), 0);
    assert_int_equal(v, 3);
    sl_plugins_free(ps);
    sl_config_free(cfg);
}

static void
test_a_library_stays_open_until_its_last_set_goes(void **state) {
    sl_config_t *c1, *c2;
    const char *cfg = BASE "'plugins':{'a':{'path':'testgood.so'}}}";
    void *h;
    assert_null(dlopen(PLUGIN("testgood"), RTLD_NOW | RTLD_NOLOAD));
    sl_plugins_t *p1 = load(cfg, &c1);
    sl_plugins_t *p2 = load(cfg, &c2); /* a config-only reload */
    assert_non_null(p1);
    assert_non_null(p2);
    assert_ptr_equal(p1->insts[0].lib, p2->insts[0].lib);
    sl_plugins_free(p1);
    sl_config_free(c1);
    h = dlopen(PLUGIN("testgood"), RTLD_NOW | RTLD_NOLOAD);
    assert_non_null(h); /* still there for p2 */
    dlclose(h);
    sl_plugins_free(p2);
    sl_config_free(c2);
    assert_null(dlopen(PLUGIN("testgood"), RTLD_NOW | RTLD_NOLOAD));
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    return remove(path);
}

static void
copy_file(const char *from, const char *to) {
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%s.tmp", to);
    FILE *in = fopen(from, "rb"), *out = fopen(tmp, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
    assert_int_equal(rename(tmp, to), 0); /* as `install` does */
}

static void
test_a_replaced_library_file_loads_beside_the_old_one(void **state) {
    char dir[] = "/tmp/sluice-plugin-test-XXXXXX", path[256], json[1024];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/p.so", dir);
    snprintf(json, sizeof(json), BASE "'plugins':{'p':{'path':'%s'}}}", path);
    sl_config_t *c1, *c2;
    copy_file(PLUGIN("testgood"), path);
    sl_plugins_t *p1 = load(json, &c1);
    assert_non_null(p1);
    copy_file(PLUGIN("oldabi"), path); /* a new build of "tgood" */
    sl_plugins_t *p2 = load(json, &c2);
    assert_non_null(p2);
    assert_string_equal(p1->insts[0].desc.version, "1.0.0");
    assert_string_equal(p2->insts[0].desc.version, "0.9.0");
    assert_ptr_not_equal(p1->insts[0].lib, p2->insts[0].lib);
    sl_plugins_free(p1);
    sl_config_free(c1);
    assert_string_equal(p2->insts[0].desc.version, "0.9.0");
    sl_plugins_free(p2);
    sl_config_free(c2);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void
test_plugin_paths_resolve_against_the_config_files_directory(void **state) {
    char dir[] = "/tmp/sluice-plugin-cfg-XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/sluice.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"listen\":[{\"addr\":\"127.0.0.1:0\"}],"
          "\"plugins\":{\"a\":{\"path\":\"a.so\"},"
          "\"b\":{\"path\":\"/abs/b.so\"}}}",
          f);
    fclose(f);
    sl_config_t *cfg = NULL;
    assert_int_equal(sl_config_load_file(path, &cfg, NULL), 0);
    assert_string_equal(cfg->plugin_dir, dir);
    char want[300];
    snprintf(want, sizeof(want), "%s/a.so", dir);
    assert_string_equal(cfg->plugins[0].file, want);
    assert_string_equal(cfg->plugins[1].file, "/abs/b.so");
    assert_int_equal(cfg->plugins[0].fail_open, -1);
    sl_config_free(cfg);

    f = fopen(path, "w");
    fputs("{\"listen\":[{\"addr\":\"127.0.0.1:0\"}],\"plugin_dir\":\"lib\","
          "\"plugins\":{\"a\":{\"path\":\"a.so\"}}}",
          f);
    fclose(f);
    assert_int_equal(sl_config_load_file(path, &cfg, NULL), 0);
    snprintf(want, sizeof(want), "%s/lib/a.so", dir);
    assert_string_equal(cfg->plugins[0].file, want);
    sl_config_free(cfg);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void
test_routes_may_name_only_configured_plugins(void **state) {
    sl_config_t *cfg;
    assert_null(load(BASE "'plugins':{'a':{'path':'testgood.so'}},"
                          "'routes':[{'path':'/v1/chat/completions',"
                          "'plugins':['a','zz','a']},{'path':'/healthz',"
                          "'plugins':['a']}]}",
                     &cfg));
    assert_errors_contain("$.routes[0].plugins[1]: no plugin named \"zz\"",
                          NULL);
    assert_errors_contain("$.routes[0].plugins[2]: \"a\" is listed twice",
                          NULL);
    assert_errors_contain("$.routes[1].plugins: plugins run around model "
                          "calls: not on a health route",
                          NULL);
    assert_null(load(BASE "'plugins':{'a b':{'path':'x.so'},"
                          "'c':{'config':[],'fail_open':1}}}",
                     &cfg));
    assert_errors_contain("$.plugins[\"a b\"]: a plugin name is", NULL);
    assert_errors_contain("$.plugins.c.path: required", NULL);
    assert_errors_contain("$.plugins.c.config: must be an object", NULL);
    assert_errors_contain("$.plugins.c.fail_open: must be true or false", NULL);
}

/* ---- the pipeline ---- */

#define ROUTE(plugins)                                                         \
    "'routes':[{'path':'/v1/chat/completions','plugins':[" plugins "]}]}"

static void
test_request_phase_rewrites_the_prompt_and_sets_consumer_and_headers(
    void **state) {
    sl_config_t *cfg;
    sl_plugins_t *ps = load(
        BASE "'plugins':{'rw1':{'path':'testgood.so','config':{"
             "'prompt_prefix':'[safe] ','consumer_header':'x-user'}},"
             "'rw2':{'path':'testgood.so','config':{'header':'x-two'}}}," ROUTE(
                 "'rw1','rw2'"),
        &cfg);
    assert_non_null(ps);
    fake_t f;
    fake_init(&f, cfg, ps, HEAD, CHAT);
    assert_int_equal(sl_pipeline_request(&f.r, &f.k), 0);
    assert_int_equal(sent.calls, 0);
    assert_string_equal(f.r.consumer, "bob");
    assert_string_equal(f.r.plugin_headers, "x-tgood: rw1\r\nx-two: rw2\r\n");
    /* The body the upstream gets carries the new text; the system message
     * is untouched. */
    cJSON *j = cJSON_ParseWithLength(f.r.body, f.r.body_len);
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(msgs, 1), "content")
            ->valuestring,
        "[safe] hello");
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(msgs, 0), "content")
            ->valuestring,
        "be brief");
    cJSON_Delete(j);
    assert_true(sl_plugin_metric_get("rw1", "requests_total",
                                     "hook=\"on_request\"") == 1);
    assert_true(sl_plugin_metric_get("rw1", "logs_total", NULL) == 0);
    fake_end(&f);
    assert_true(sl_plugin_metric_get("rw1", "logs_total", NULL) == 1);
    assert_true(sl_plugin_metric_get("rw2", "logs_total", NULL) == 1);
    sl_plugins_free(ps);
    sl_config_free(cfg);
}

static void
test_respond_answers_at_once_and_skips_later_plugins_but_not_on_log(
    void **state) {
    sl_config_t *cfg;
    sl_plugins_t *ps =
        load(BASE "'plugins':{'den':{'path':'testgood.so','config':{"
                  "'deny_header':'x-user'}},"
                  "'after':{'path':'testgood.so'}}," ROUTE("'den','after'"),
             &cfg);
    assert_non_null(ps);
    fake_t f;
    fake_init(&f, cfg, ps, HEAD, CHAT);
    assert_int_equal(sl_pipeline_request(&f.r, &f.k), 1);
    assert_int_equal(sent.calls, 1);
    assert_int_equal(sent.status, 403);
    assert_non_null(strstr(sent.body, "denied by tgood"));
    assert_true(sl_plugin_metric_get("after", "requests_total",
                                     "hook=\"on_request\"") == 0);
    fake_end(&f);
    assert_true(sl_plugin_metric_get("den", "logs_total", NULL) == 1);
    assert_true(sl_plugin_metric_get("after", "logs_total", NULL) == 1);
    sl_plugins_free(ps);
    sl_config_free(cfg);
}

static void
test_error_fails_closed_unless_the_instance_fails_open(void **state) {
    sl_config_t *cfg;
    sl_plugins_t *ps =
        load(BASE "'plugins':{'shut':{'path':'testgood.so','config':{"
                  "'fail_in':'request'}}}," ROUTE("'shut'"),
             &cfg);
    assert_non_null(ps);
    fake_t f;
    fake_init(&f, cfg, ps, HEAD, CHAT);
    assert_int_equal(sl_pipeline_request(&f.r, &f.k), 1);
    assert_int_equal(sent.status, 500);
    assert_non_null(strstr(sent.body, "plugin 'shut' failed in on_request"));
    assert_non_null(strstr(sent.body, "\"code\":\"plugin_error\""));
    assert_string_equal(f.r.error_code, "plugin_error");
    fake_end(&f);
    sl_plugins_free(ps);
    sl_config_free(cfg);

    ps = load(BASE "'plugins':{'open':{'path':'testgood.so','fail_open':true,"
                   "'config':{'fail_in':'request'}}}," ROUTE("'open'"),
              &cfg);
    assert_non_null(ps);
    fake_init(&f, cfg, ps, HEAD, CHAT);
    assert_int_equal(sl_pipeline_request(&f.r, &f.k), 0);
    assert_int_equal(sent.calls, 0);
    fake_end(&f);
    sl_plugins_free(ps);
    sl_config_free(cfg);
}

static void
test_response_phase_rewrites_the_answer_in_reverse_order(void **state) {
    sl_config_t *cfg;
    sl_plugins_t *ps =
        load(BASE "'plugins':{'r1':{'path':'testgood.so','config':{"
                  "'response_suffix':' one'}},'r2':{'path':'testgood.so',"
                  "'config':{'response_suffix':' two'}}}," ROUTE("'r1','r2'"),
             &cfg);
    assert_non_null(ps);
    fake_t f;
    fake_init(&f, cfg, ps, HEAD, CHAT);
    assert_int_equal(sl_pipeline_request(&f.r, &f.k), 0);
    const char *answer = "{\"choices\":[{\"index\":0,\"message\":{\"role\":"
                         "\"assistant\",\"content\":\"hi\"}}]}";
    sl_response_send(&f.r, 200, "application/json", NULL, answer,
                     strlen(answer));
    /* r2 runs first on the way out, then r1. */
    assert_non_null(strstr(sent.body, "\"content\":\"hi two one\""));
    assert_int_equal(sent.status, 200);
    fake_end(&f);
    sl_plugins_free(ps);
    sl_config_free(cfg);
}

static void
test_response_phase_error_fails_closed(void **state) {
    sl_config_t *cfg;
    sl_plugins_t *ps =
        load(BASE "'plugins':{'rf':{'path':'testgood.so','config':{"
                  "'fail_in':'response'}}}," ROUTE("'rf'"),
             &cfg);
    assert_non_null(ps);
    fake_t f;
    fake_init(&f, cfg, ps, HEAD, CHAT);
    assert_int_equal(sl_pipeline_request(&f.r, &f.k), 0);
    sl_response_send(&f.r, 200, "application/json", NULL, "{}", 2);
    assert_int_equal(sent.status, 500);
    assert_non_null(strstr(sent.body, "plugin 'rf' failed in on_response"));
    fake_end(&f);
    sl_plugins_free(ps);
    sl_config_free(cfg);
}

static void
test_chunk_phase_rewrites_deltas_and_a_failure_ends_the_stream(void **state) {
    sl_config_t *cfg;
    sl_plugins_t *ps =
        load(BASE "'plugins':{'up':{'path':'testgood.so','config':{"
                  "'delta_upper':true}}}," ROUTE("'up'"),
             &cfg);
    assert_non_null(ps);
    fake_t f;
    fake_init(&f, cfg, ps, HEAD,
              "{\"model\":\"echo\",\"stream\":true,\"messages\":[]}");
    assert_int_equal(sl_pipeline_request(&f.r, &f.k), 0);
    const char *ev = "{\"choices\":[{\"index\":0,\"delta\":{\"content\":"
                     "\"hello \"}}]}";
    const char *data = ev;
    size_t len = strlen(ev);
    assert_int_equal(sl_pipeline_chunk(&f.r, &data, &len), 0);
    assert_ptr_not_equal(data, ev);
    assert_int_equal(len, strlen(data));
    assert_non_null(strstr(data, "\"content\":\"HELLO \""));
    /* An event without text passes as it is; so does [DONE]. */
    const char *fin = "{\"choices\":[{\"index\":0,\"delta\":{},"
                      "\"finish_reason\":\"stop\"}]}";
    data = fin;
    len = strlen(fin);
    assert_int_equal(sl_pipeline_chunk(&f.r, &data, &len), 0);
    assert_ptr_equal(data, fin);
    data = "[DONE]";
    len = 6;
    assert_int_equal(sl_pipeline_chunk(&f.r, &data, &len), 0);
    fake_end(&f);
    sl_plugins_free(ps);
    sl_config_free(cfg);

    ps = load(BASE "'plugins':{'cf':{'path':'testgood.so','config':{"
                   "'fail_in':'chunk'}}}," ROUTE("'cf'"),
              &cfg);
    assert_non_null(ps);
    fake_init(&f, cfg, ps, HEAD,
              "{\"model\":\"echo\",\"stream\":true,\"messages\":[]}");
    assert_int_equal(sl_pipeline_request(&f.r, &f.k), 0);
    data = ev;
    len = strlen(ev);
    assert_int_equal(sl_pipeline_chunk(&f.r, &data, &len), 0);
    assert_non_null(strstr(data, "plugin 'cf' failed in on_chunk"));
    data = ev;
    len = strlen(ev);
    assert_int_equal(sl_pipeline_chunk(&f.r, &data, &len), 1); /* dropped */
    data = "[DONE]";
    len = 6;
    assert_int_equal(sl_pipeline_chunk(&f.r, &data, &len), 1);
    fake_end(&f);
    sl_plugins_free(ps);
    sl_config_free(cfg);
}

/* ---- host functions, called directly ---- */

static void
test_host_functions_refuse_the_wrong_phase(void **state) {
    sl_config_t *cfg;
    sl_plugins_t *ps = load(
        BASE "'plugins':{'ph':{'path':'testgood.so'}}," ROUTE("'ph'"), &cfg);
    assert_non_null(ps);
    const sluice_host_t *h = sl_plugin_host();
    const char *s;
    size_t n;
    struct sluice_req load_ctx = {.inst = &ps->insts[0],
                                  .phase = SLUICE_PHASE_LOAD};
    assert_int_equal(h->request_method(&load_ctx, &s, &n), SLUICE_EPHASE);
    assert_int_equal(h->respond(&load_ctx, 200, "{}", 2), SLUICE_EPHASE);
    assert_null(h->alloc(&load_ctx, 8));
    assert_int_equal(h->phase(&load_ctx), SLUICE_PHASE_LOAD);
    assert_string_equal(h->instance_name(&load_ctx), "ph");
    /* kv is allowed at load; without a store it says so. */
    assert_int_equal(h->kv_set(&load_ctx, "k", 1, "v", 1, 0), SLUICE_EUNAVAIL);

    fake_t f;
    fake_init(&f, cfg, ps, HEAD, CHAT);
    assert_int_equal(sl_pipeline_request(&f.r, &f.k), 0);
    sl_pipe_t *p = f.r.pipe;
    assert_non_null(p);
    struct sluice_req resp = {
        .pipe = p, .inst = &ps->insts[0], .phase = SLUICE_PHASE_RESPONSE};
    assert_int_equal(h->message_set_text(&resp, 0, "x", 1), SLUICE_EPHASE);
    assert_int_equal(h->consumer_set(&resp, "eve"), SLUICE_EPHASE);
    assert_int_equal(h->delta_text(&resp, &s, &n), SLUICE_EPHASE);
    assert_int_equal(h->request_method(&resp, &s, &n), SLUICE_OK);
    assert_int_equal(n, 4);
    assert_memory_equal(s, "POST", 4);
    struct sluice_req logp = {
        .pipe = p, .inst = &ps->insts[0], .phase = SLUICE_PHASE_LOG};
    assert_int_equal(h->response_header_set(&logp, "x-a", "b"), SLUICE_EPHASE);
    sluice_header_name_t xa;
    assert_int_equal(h->response_header_prepare(&xa, "x-a"), 0);
    assert_int_equal(h->response_header_set_prepared(&logp, &xa, "b", 1),
                     SLUICE_EPHASE);
    assert_int_equal(h->respond(&logp, 200, "{}", 2), SLUICE_EPHASE);
    fake_end(&f);
    sl_plugins_free(ps);
    sl_config_free(cfg);
}

static void
test_host_reads_and_rewrites_messages_with_content_parts(void **state) {
    sl_config_t *cfg;
    sl_plugins_t *ps = load(
        BASE "'plugins':{'mp':{'path':'testgood.so'}}," ROUTE("'mp'"), &cfg);
    assert_non_null(ps);
    fake_t f;
    fake_init(&f, cfg, ps, HEAD,
              "{\"model\":\"echo\",\"messages\":[{\"role\":\"user\","
              "\"content\":[{\"type\":\"text\",\"text\":\"one\"},"
              "{\"type\":\"image_url\",\"image_url\":{\"url\":\"u\"}},"
              "{\"type\":\"text\",\"text\":\"two\"}]},"
              "{\"role\":\"assistant\",\"content\":null}]}");
    assert_int_equal(sl_pipeline_request(&f.r, &f.k), 0);
    const sluice_host_t *h = sl_plugin_host();
    struct sluice_req req = {
        .pipe = f.r.pipe, .inst = &ps->insts[0], .phase = SLUICE_PHASE_REQUEST};
    size_t n, len;
    const char *s;
    assert_int_equal(h->message_count(&req, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(h->message_role(&req, 1, &s), 0);
    assert_string_equal(s, "assistant");
    assert_int_equal(h->message_text(&req, 0, &s, &len), 0);
    assert_string_equal(s, "one\ntwo");
    assert_int_equal(len, 7);
    assert_int_equal(h->message_text(&req, 1, &s, &len), SLUICE_ENOTFOUND);
    assert_int_equal(h->message_text(&req, 2, &s, &len), SLUICE_ENOTFOUND);
    assert_int_equal(h->message_text(&req, 0, &s, &len), 0);
    assert_int_equal(h->message_set_text(&req, 0, "three", 5), 0);
    assert_string_equal(s, "one\ntwo"); /* old pointers stay valid */
    assert_int_equal(h->message_text(&req, 0, &s, NULL), 0);
    assert_string_equal(s, "three");
    assert_int_equal(h->message_set_text(&req, 0, "a\0b", 3), SLUICE_EINVAL);
    char *printed = cJSON_PrintUnformatted(
        cJSON_GetObjectItemCaseSensitive(f.k.json, "messages"));
    assert_string_equal(printed,
                        "[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
                        "\"text\":\"three\"},{\"type\":\"image_url\","
                        "\"image_url\":{\"url\":\"u\"}}]},{\"role\":"
                        "\"assistant\",\"content\":null}]");
    free(printed);
    assert_int_equal(h->message_set_text(&req, 1, "now text", 8), 0);
    assert_int_equal(h->message_text(&req, 1, &s, NULL), 0);
    assert_string_equal(s, "now text");
    assert_int_equal(h->message_set_text(&req, 1, "later", 5), 0);
    assert_string_equal(s, "now text");
    assert_int_equal(h->model(&req, &s), 0);
    assert_string_equal(s, "echo");
    assert_int_equal(h->stream(&req), 0);
    assert_int_equal(h->request_header(&req, "X-USER", &s, &len), 0);
    assert_int_equal(len, 3);
    assert_int_equal(h->request_header(&req, "x-none", &s, &len),
                     SLUICE_ENOTFOUND);
    fake_end(&f);
    sl_plugins_free(ps);
    sl_config_free(cfg);
}

static void
test_host_checks_response_headers_consumer_respond_and_metrics(void **state) {
    sl_config_t *cfg;
    sl_plugins_t *ps = load(
        BASE "'plugins':{'hd':{'path':'testgood.so'}}," ROUTE("'hd'"), &cfg);
    assert_non_null(ps);
    fake_t f;
    fake_init(&f, cfg, ps, HEAD, CHAT);
    assert_int_equal(sl_pipeline_request(&f.r, &f.k), 0);
    const sluice_host_t *h = sl_plugin_host();
    struct sluice_req req = {
        .pipe = f.r.pipe, .inst = &ps->insts[0], .phase = SLUICE_PHASE_REQUEST};
    assert_int_equal(h->response_header_set(&req, "Content-Length", "1"),
                     SLUICE_EINVAL);
    assert_int_equal(h->response_header_set(&req, "x-sluice-model", "m"),
                     SLUICE_EINVAL);
    assert_int_equal(h->response_header_set(&req, "bad name", "v"),
                     SLUICE_EINVAL);
    assert_int_equal(h->response_header_set(&req, "x-a", "v\r\nx-b: 1"),
                     SLUICE_EINVAL);
    /* Bad bytes anywhere in a long name or value, in or after the
     * first eight. */
    assert_int_equal(h->response_header_set(&req, "x-abcdefgh(ij", "v"),
                     SLUICE_EINVAL);
    assert_int_equal(h->response_header_set(&req, "x-abcdefghijk\x80", "v"),
                     SLUICE_EINVAL);
    assert_int_equal(h->response_header_set(&req, "x-a", "0123456789\x01"),
                     SLUICE_EINVAL);
    assert_int_equal(h->response_header_set(&req, "x-a",
                                            "01234\x7f"
                                            "6789"),
                     SLUICE_EINVAL);
    assert_int_equal(h->response_header_set(&req, "", "v"), SLUICE_EINVAL);
    assert_true(f.r.plugin_headers == NULL ||
                (strstr(f.r.plugin_headers, "x-abc") == NULL &&
                 strstr(f.r.plugin_headers, "x-a:") == NULL));
    assert_int_equal(h->response_header_set(&req, "X-TGOOD", "again"), 0);
    assert_string_equal(f.r.plugin_headers, "X-TGOOD: again\r\n");
    /* Any tchar, any case; UTF-8 and tabs in a value. */
    assert_int_equal(h->response_header_set(&req, "x-Ab9!#$%&'*+.^_`|~",
                                            "caf\xc3\xa9\tlong value here"),
                     0);
    assert_int_equal(h->response_header_set(&req, "X-AB9!#$%&'*+.^_`|~", "2"),
                     0); /* the same name: replaced */
    assert_string_equal(f.r.plugin_headers,
                        "X-TGOOD: again\r\nX-AB9!#$%&'*+.^_`|~: 2\r\n");
    /* '^' and '~' differ by the case bit only: two names. */
    assert_int_equal(h->response_header_set(&req, "x-Ab9!#$%&'*+.~_`|^", "3"),
                     0);
    assert_non_null(strstr(f.r.plugin_headers, "x-Ab9!#$%&'*+.~_`|^: 3\r\n"));
    assert_int_equal(h->response_header_set(&req, "X-AB9!#$%&'*+.^_`|~", "v"),
                     0);
    assert_int_equal(h->response_header_set(&req, "x-Ab9!#$%&'*+.~_`|^", "v"),
                     0);
    /* A name checked once, then set with a value of a given length. */
    sluice_header_name_t hn = {0}, bad = {0};
    assert_int_equal(h->response_header_set_prepared(&req, &bad, "v", 1),
                     SLUICE_EINVAL);
    assert_int_equal(h->response_header_prepare(&bad, "Content-Type"),
                     SLUICE_EINVAL);
    assert_int_equal(h->response_header_prepare(&bad, "bad name"),
                     SLUICE_EINVAL);
    assert_int_equal(h->response_header_set_prepared(&req, &bad, "v", 1),
                     SLUICE_EINVAL);
    assert_int_equal(h->response_header_prepare(&hn, "x-prepared"), 0);
    assert_int_equal(h->response_header_set_prepared(&req, &hn, "12345", 2), 0);
    assert_non_null(strstr(f.r.plugin_headers, "x-prepared: 12\r\n"));
    assert_int_equal(h->response_header_set_prepared(&req, &hn, "a\0b", 3),
                     SLUICE_EINVAL);
    assert_int_equal(h->response_header_set_prepared(&req, &hn, "a\nb", 3),
                     SLUICE_EINVAL);
    assert_int_equal(h->response_header_set(&req, "X-Prepared", "again"), 0);
    assert_non_null(strstr(f.r.plugin_headers, "X-Prepared: again\r\n"));
    assert_null(strstr(f.r.plugin_headers, "x-prepared: 12"));
    f.r.pipe->nheaders = 1; /* back to X-TGOOD alone for what follows */
    f.r.pipe->hlen = strlen("X-TGOOD: again\r\n");
    char name[16];
    for (int i = 1; i < SL_PIPE_MAX_HEADERS; i++) {
        snprintf(name, sizeof(name), "x-h%d", i);
        assert_int_equal(h->response_header_set(&req, name, "v"), 0);
    }
    assert_int_equal(h->response_header_set(&req, "x-one-more", "v"),
                     SLUICE_ETOOBIG);
    assert_int_equal(h->response_header_set(&req, "x-h1", "w"), 0);
    /* Set again (any case): replaced where it stood, the others kept. */
    assert_int_equal(h->response_header_set(&req, "X-H2", "longer value"), 0);
    assert_non_null(strstr(f.r.plugin_headers,
                           "X-TGOOD: again\r\nx-h1: w\r\nX-H2: longer "
                           "value\r\nx-h3: v\r\n"));
    assert_null(strstr(f.r.plugin_headers, "x-h2:"));
    size_t hl = strlen(f.r.plugin_headers);
    assert_string_equal(f.r.plugin_headers + hl - 10, "x-h15: v\r\n");
    /* A value that would pass the byte budget is refused, nothing set. */
    char big[SL_PIPE_HEADER_BYTES];
    memset(big, 'b', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    const char *before = f.r.plugin_headers;
    assert_int_equal(h->response_header_set(&req, "x-h3", big), SLUICE_ETOOBIG);
    assert_ptr_equal(f.r.plugin_headers, before);
    assert_int_equal(h->response_header_set(&req, "x-h3", "v\x7f"),
                     SLUICE_EINVAL);
    assert_int_equal(h->response_header_set(&req, "x-h3", "tab\tok"), 0);

    const char *id;
    assert_int_equal(h->consumer(&req, &id), SLUICE_ENOTFOUND);
    assert_int_equal(h->consumer_set(&req, ""), SLUICE_EINVAL);
    assert_int_equal(h->consumer_set(&req, "a\nb"), SLUICE_EINVAL);
    assert_int_equal(h->consumer_set(&req, "team-7"), 0);
    assert_int_equal(h->consumer(&req, &id), 0);
    assert_string_equal(id, "team-7");

    assert_int_equal(h->respond(&req, 99, "{}", 2), SLUICE_EINVAL);
    assert_int_equal(h->respond(&req, 429, "{nope", 5), SLUICE_EINVAL);
    assert_int_equal(h->respond(&req, 429, "{\"a\":1}", 7), 0);

    assert_non_null(h->state_get(&req)); /* testgood's on_request set it */
    long x = 0; /* on_log reads it as testgood's state: a chunk count */
    assert_int_equal(h->state_set(&req, &x), 0);
    assert_ptr_equal(h->state_get(&req), &x);
    void *m = h->alloc(&req, 33);
    assert_non_null(m);
    assert_int_equal((uintptr_t)m % 16, 0);

    assert_int_equal(h->metric_add(&req, "9bad", NULL, 1), SLUICE_EINVAL);
    assert_int_equal(h->metric_add(&req, "ok_total", "a=\"1\"}", 1),
                     SLUICE_EINVAL);
    assert_int_equal(h->metric_add(&req, "ok_total", NULL, -1), SLUICE_EINVAL);
    assert_int_equal(h->metric_add(&req, "ok_total", "a=\"1\"", 2.5), 0);
    assert_int_equal(h->metric_add(&req, "ok_total", "a=\"1\"", 1), 0);
    assert_true(sl_plugin_metric_get("hd", "ok_total", "a=\"1\"") == 3.5);
    assert_true(sl_plugin_metric_get("hd", "ok_total", "a=\"2\"") == 0);
    fake_end(&f);
    sl_plugins_free(ps);
    sl_config_free(cfg);
}

/* ABI 1.1 for caches and policies: request_json, log_field_set,
 * respond_stream / respond_answer and their checks. */
static void
test_host_gives_the_whole_request_log_fields_and_replayed_answers(
    void **state) {
    sl_config_t *cfg;
    sl_plugins_t *ps = load(
        BASE "'plugins':{'hd':{'path':'testgood.so'}}," ROUTE("'hd'"), &cfg);
    assert_non_null(ps);
    fake_t f;
    fake_init(&f, cfg, ps, HEAD, CHAT);
    assert_int_equal(sl_pipeline_request(&f.r, &f.k), 0);
    const sluice_host_t *h = sl_plugin_host();
    struct sluice_req req = {
        .pipe = f.r.pipe, .inst = &ps->insts[0], .phase = SLUICE_PHASE_REQUEST};

    const char *json;
    size_t len;
    assert_int_equal(h->request_json(&req, &json, &len), 0);
    assert_int_equal(strlen(json), len);
    assert_non_null(strstr(json, "\"messages\""));

    assert_int_equal(h->log_field_set(&req, "status", "x"), SLUICE_EINVAL);
    assert_int_equal(h->log_field_set(&req, "Bad-Key", "x"), SLUICE_EINVAL);
    char big[300];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(h->log_field_set(&req, "big", big), SLUICE_EINVAL);
    assert_int_equal(h->log_field_set(&req, "cache", "miss"), 0);
    assert_int_equal(h->log_field_set(&req, "note", "a \"q\""), 0);
    assert_int_equal(h->log_field_set(&req, "cache", "hit"), 0);
    assert_string_equal(f.r.plugin_log,
                        ",\"cache\":\"hit\",\"note\":\"a \\\"q\\\"\"");
    char key[16];
    for (int i = 2; i < SL_PIPE_MAX_LOG_FIELDS; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(h->log_field_set(&req, key, "v"), 0);
    }
    assert_int_equal(h->log_field_set(&req, "one_more", "v"), SLUICE_ETOOBIG);

    assert_int_equal(h->response_header_set(&req, "x-sluice-cache", "hit"), 0);
    assert_int_equal(h->response_header_set(&req, "x-sluice-guardrail", "r"),
                     0);
    assert_int_equal(h->response_header_set(&req, "x-sluice-other", "r"),
                     SLUICE_EINVAL);

    assert_int_equal(h->respond_stream(&req, 200, "event: x\n\n", 10),
                     SLUICE_EINVAL); /* no data event */
    assert_int_equal(h->respond_stream(&req, 700, "data: {}\n\n", 10),
                     SLUICE_EINVAL);
    assert_int_equal(h->respond_stream(&req, 200, "data: {}\n\n", 10), 0);
    assert_int_equal(h->respond_answer(&req, 200, "{nope", 5), SLUICE_EINVAL);
    assert_int_equal(h->respond_answer(&req, 200, "{}", 2), 0);
    assert_true(f.r.pipe->answer_replay && !f.r.pipe->answer_stream);
    assert_int_equal(h->respond(&req, 403, "{}", 2), 0); /* the last wins */
    assert_true(!f.r.pipe->answer_replay && !f.r.pipe->answer_stream);
    /* A kept answer is not parsed again: the plugin vouches for it. */
    assert_true(SLUICE_HOST_HAS(h, respond_kept));
    assert_int_equal(h->respond_kept(&req, 200, "{kept", 5, 0), 0);
    assert_true(f.r.pipe->answer_replay && !f.r.pipe->answer_stream);
    assert_int_equal(f.r.pipe->answer_len, 5);
    assert_memory_equal(f.r.pipe->answer, "{kept", 5);
    assert_int_equal(h->respond_kept(&req, 200, "data: {}\n\n", 10, 1), 0);
    assert_true(!f.r.pipe->answer_replay && f.r.pipe->answer_stream);
    assert_int_equal(h->respond_kept(&req, 200, "event: x\n\n", 10, 1),
                     SLUICE_EINVAL); /* no data event */
    assert_int_equal(h->respond_kept(&req, 600, "{}", 2, 0), SLUICE_EINVAL);
    assert_int_equal(h->respond_kept(&req, 200, "", 0, 0), SLUICE_EINVAL);
    assert_int_equal(h->response_complete(&req), SLUICE_EPHASE);
    assert_int_equal(h->response_body(&req, &json, &len), SLUICE_EPHASE);

    struct sluice_req logp = req;
    logp.phase = SLUICE_PHASE_LOG;
    assert_int_equal(h->log_field_set(&logp, "late", "v"), SLUICE_EPHASE);
    assert_int_equal(h->respond_stream(&logp, 200, "data: {}\n\n", 10),
                     SLUICE_EPHASE);
    assert_int_equal(h->respond_kept(&logp, 200, "{}", 2, 0), SLUICE_EPHASE);
    assert_int_equal(h->response_complete(&logp), 0); /* nothing sent */
    fake_end(&f);
    sl_plugins_free(ps);
    sl_config_free(cfg);
}

static void
test_kv_is_namespaced_per_instance_and_counts(void **state) {
    char dir[] = "/tmp/sluice-plugin-kv-XXXXXX";
    assert_non_null(mkdtemp(dir));
    sl_store_options_t o = {.dir = dir, .map_size = (size_t)16 << 20};
    sl_store_t *st = NULL;
    assert_int_equal(sl_store_open(&o, &st), 0);
    sl_plugin_host_set_store(st);

    sl_config_t *cfg;
    sl_plugins_t *ps = load(BASE "'plugins':{'k1':{'path':'testgood.so'},"
                                 "'k2':{'path':'testgood.so'}}}",
                            &cfg);
    assert_non_null(ps);
    const sluice_host_t *h = sl_plugin_host();
    struct sluice_req a = {.inst = &ps->insts[0], .phase = SLUICE_PHASE_LOAD};
    struct sluice_req b = {.inst = &ps->insts[1], .phase = SLUICE_PHASE_LOAD};
    char buf[16];
    size_t len = 0;
    int64_t v = 0;
    assert_int_equal(h->kv_set(&a, "key", 3, "apple", 5, 0), 0);
    assert_int_equal(h->kv_get(&a, "", 0, buf, sizeof(buf), &len),
                     SLUICE_EINVAL);
    assert_int_equal(sl_store_flush(st), 0);
    assert_int_equal(h->kv_get(&a, "key", 3, buf, sizeof(buf), &len), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(buf, "apple", 5);
    assert_int_equal(h->kv_get(&a, "key", 3, buf, 2, &len), SLUICE_ETOOBIG);
    assert_int_equal(h->kv_get(&b, "key", 3, buf, sizeof(buf), &len),
                     SLUICE_ENOTFOUND);
    assert_int_equal(h->kv_incr(&b, "n", 1, 2, 0, &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(sl_store_flush(st), 0);
    assert_int_equal(h->kv_incr(&b, "n", 1, 3, 0, &v), 0);
    assert_int_equal(v, 5);
    assert_int_equal(h->kv_incr(&a, "key", 3, 1, 0, &v), SLUICE_EINVAL);
    assert_int_equal(h->kv_delete(&a, "key", 3), 0);
    assert_int_equal(sl_store_flush(st), 0);
    assert_int_equal(h->kv_get(&a, "key", 3, buf, sizeof(buf), &len),
                     SLUICE_ENOTFOUND);
    int64_t c = 0;
    assert_int_equal(
        sl_store_get_counter(st, SL_STORE_KV, "plugin:k2", "n", 1, &c, NULL),
        0);
    assert_int_equal(c, 5);

    /* A handle writes to its instance's namespace outside any hook. */
    sluice_kv_t *kv = h->kv_handle(&b);
    assert_non_null(kv);
    assert_int_equal(h->kv_handle_set(kv, "late", 4, "pear", 4, 0), 0);
    assert_int_equal(h->kv_handle_set(kv, "", 0, "x", 1, 0), SLUICE_EINVAL);
    assert_int_equal(sl_store_flush(st), 0);
    assert_int_equal(h->kv_get(&b, "late", 4, buf, sizeof(buf), &len), 0);
    assert_memory_equal(buf, "pear", 4);
    assert_int_equal(h->kv_get(&a, "late", 4, buf, sizeof(buf), &len),
                     SLUICE_ENOTFOUND);

    /* The KEYS version moves with a write to KEYS, not with kv writes. */
    uint64_t v1 = 0, v2 = 0, v3 = 0;
    assert_int_equal(h->keys_version(&a, &v1), 0);
    assert_int_equal(h->kv_set(&a, "other", 5, "x", 1, 0), 0);
    assert_int_equal(sl_store_flush(st), 0);
    assert_int_equal(h->keys_version(&a, &v2), 0);
    assert_true(v2 == v1);
    assert_int_equal(
        sl_store_put_sync(st, SL_STORE_KEYS, "apikey", "k", 1, "{}", 2, 0), 0);
    assert_int_equal(h->keys_version(&a, &v3), 0);
    assert_true(v3 != v2);

    sl_plugins_free(ps);
    sl_config_free(cfg);
    sl_plugin_host_set_store(NULL);
    assert_int_equal(h->keys_version(&a, &v1), SLUICE_EUNAVAIL);
    sl_store_close(st);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void
test_a_kv_handle_is_only_given_at_load(void **state) {
    sl_config_t *cfg;
    sl_plugins_t *ps = load(
        BASE "'plugins':{'hd':{'path':'testgood.so'}}," ROUTE("'hd'"), &cfg);
    assert_non_null(ps);
    fake_t f;
    fake_init(&f, cfg, ps, HEAD, CHAT);
    assert_int_equal(sl_pipeline_request(&f.r, &f.k), 0);
    const sluice_host_t *h = sl_plugin_host();
    struct sluice_req req = {
        .pipe = f.r.pipe, .inst = &ps->insts[0], .phase = SLUICE_PHASE_REQUEST};
    assert_null(h->kv_handle(&req));
    assert_null(h->kv_handle(NULL));
    fake_end(&f);
    sl_plugins_free(ps);
    sl_config_free(cfg);
}

/* A host call context on f's request with no hook run: the pipe is built
 * by hand so that no plugin decodes the body first. */
static struct sluice_req
bare_req(fake_t *f, sl_pipe_t *p, const sl_plugin_inst_t *in) {
    memset(p, 0, sizeof(*p));
    p->r = &f->r;
    p->k = &f->k;
    f->r.pipe = p;
    struct sluice_req req = {
        .pipe = p, .inst = in, .phase = SLUICE_PHASE_REQUEST};
    return req;
}

static void
test_host_reads_a_body_in_place_as_it_reads_its_tree(void **state) {
    sl_config_t *cfg;
    sl_plugins_t *ps = load(
        BASE "'plugins':{'hd':{'path':'testgood.so'}}," ROUTE("'hd'"), &cfg);
    assert_non_null(ps);
    static const char *const bodies[] = {
        CHAT,
        "{\"model\":\"echo\",\"max_tokens\":7,\"messages\":["
        "{\"role\":\"user\",\"content\":\"a\\n\\\"b\\\" \\u00e9\"},"
        "{\"role\":\"assistant\",\"content\":null},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
        "\"x\"},{\"type\":\"image_url\",\"image_url\":{}},{\"text\":\"y\"}]},"
        "{\"role\":\"tool\"},{\"content\":\"first\",\"content\":\"2nd\","
        "\"role\":\"user\"}]}",
        "{\"model\":\"echo\",\"max_completion_tokens\":-0.5,"
        "\"max_tokens\":1e3,\"messages\":[{\"role\":\"user\","
        "\"content\":\"\"}]}",
        "{\"model\":\"echo\",\"max_tokens\":1.9,\"max_tokens\":5,"
        "\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
        "{\"model\":\"echo\",\"max_completion_tokens\":1e300,"
        "\"max_tokens\":\"3\",\"messages\":[{\"role\":\"user\","
        "\"content\":5}]}",
        "{\"model\":\"echo\",\"max_tokens\":-0,\"messages\":[{\"role\":"
        "\"user\",\"content\":\"a\\u0000b\"}]}",
        "{\"model\":\"echo\",\"max_completion_tokens\":12345678901234567,"
        "\"messages\":[{\"role\":\"user\",\"content\":\"z\"}]}",
    };
    const sluice_host_t *h = sl_plugin_host();
    for (size_t b = 0; b < sizeof(bodies) / sizeof(bodies[0]); b++) {
        fake_t t, s;
        sl_pipe_t tp, sp;
        fake_init(&t, cfg, ps, HEAD, bodies[b]);
        fake_init(&s, cfg, ps, HEAD, bodies[b]);
        /* s as the proxy leaves a body it read in place: facts, no tree */
        cJSON_Delete(s.k.json);
        s.k.json = NULL;
        assert_int_equal(sl_chat_scan(s.r.body, s.r.body_len, &s.k.facts), 0);
        s.k.scanned = s.r.body;
        struct sluice_req tr = bare_req(&t, &tp, &ps->insts[0]);
        struct sluice_req sr = bare_req(&s, &sp, &ps->insts[0]);

        size_t tn = 99, sn = 99;
        assert_int_equal(h->message_count(&tr, &tn), 0);
        assert_int_equal(h->message_count(&sr, &sn), 0);
        assert_int_equal(tn, sn);
        int64_t tm = -1, sm = -1;
        assert_int_equal(h->request_max_tokens(&sr, &sm),
                         h->request_max_tokens(&tr, &tm));
        assert_true(tm == sm);
        for (size_t i = 0; i <= tn; i++) {
            const char *tt = NULL, *st = NULL;
            size_t tl = 0, sl = 0;
            int trc = h->message_text(&tr, i, &tt, &tl);
            int src = h->message_text(&sr, i, &st, &sl);
            assert_int_equal(src, trc);
            if (trc == 0) {
                assert_int_equal(sl, tl);
                assert_string_equal(st, tt);
            }
        }
        for (size_t i = tn + 1; i-- > 0;) { /* backwards: read again */
            const char *tt = NULL, *st = NULL;
            int trc = h->message_text(&tr, i, &tt, NULL);
            assert_int_equal(h->message_text(&sr, i, &st, NULL), trc);
            if (trc == 0)
                assert_string_equal(st, tt);
        }
        if (b == 0) /* plain strings: read in place, never decoded */
            assert_null(s.k.json);
        s.k.json = NULL; /* a tree decoded on demand is the arena's */
        fake_end(&t);
        fake_end(&s);
    }
    sl_plugins_free(ps);
    sl_config_free(cfg);
}

static void
test_host_table_starts_with_its_size(void **state) {
    const sluice_host_t *h = sl_plugin_host();
    assert_int_equal(h->size, sizeof(sluice_host_t));
    assert_int_equal(h->abi_major, SLUICE_ABI_MAJOR);
    assert_true(SLUICE_HOST_HAS(h, instance_name));
    /* A table from an older gateway, cut before `phase`. */
    sluice_host_t old = *h;
    old.size = offsetof(sluice_host_t, phase);
    assert_false(SLUICE_HOST_HAS(&old, phase));
    assert_true(SLUICE_HOST_HAS(&old, metric_add));
}

int
main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_good_plugin_loads_with_its_defaults_and_route_chain),
        cmocka_unit_test(test_wrong_abi_major_is_refused_naming_both_versions),
        cmocka_unit_test(test_a_library_without_the_symbol_is_refused),
        cmocka_unit_test(test_a_missing_file_is_a_clear_error),
        cmocka_unit_test(test_a_failing_create_is_an_error_with_its_reason),
        cmocka_unit_test(test_a_required_key_missing_is_reported_with_its_path),
        cmocka_unit_test(test_schema_errors_have_json_paths),
        cmocka_unit_test(
            test_an_older_smaller_descriptor_loads_without_the_newer_hooks),
        cmocka_unit_test(test_two_libraries_with_one_plugin_name_are_refused),
        cmocka_unit_test(
            test_one_library_serves_two_instances_and_is_opened_once),
        cmocka_unit_test(test_a_library_stays_open_until_its_last_set_goes),
        cmocka_unit_test(test_a_replaced_library_file_loads_beside_the_old_one),
        cmocka_unit_test(
            test_plugin_paths_resolve_against_the_config_files_directory),
        cmocka_unit_test(test_routes_may_name_only_configured_plugins),
        cmocka_unit_test(
            test_request_phase_rewrites_the_prompt_and_sets_consumer_and_headers),
        cmocka_unit_test(
            test_respond_answers_at_once_and_skips_later_plugins_but_not_on_log),
        cmocka_unit_test(
            test_error_fails_closed_unless_the_instance_fails_open),
        cmocka_unit_test(
            test_response_phase_rewrites_the_answer_in_reverse_order),
        cmocka_unit_test(test_response_phase_error_fails_closed),
        cmocka_unit_test(
            test_chunk_phase_rewrites_deltas_and_a_failure_ends_the_stream),
        cmocka_unit_test(test_host_functions_refuse_the_wrong_phase),
        cmocka_unit_test(
            test_host_reads_and_rewrites_messages_with_content_parts),
        cmocka_unit_test(
            test_host_checks_response_headers_consumer_respond_and_metrics),
        cmocka_unit_test(
            test_host_gives_the_whole_request_log_fields_and_replayed_answers),
        cmocka_unit_test(test_kv_is_namespaced_per_instance_and_counts),
        cmocka_unit_test(test_a_kv_handle_is_only_given_at_load),
        cmocka_unit_test(test_host_reads_a_body_in_place_as_it_reads_its_tree),
        cmocka_unit_test(test_host_table_starts_with_its_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
