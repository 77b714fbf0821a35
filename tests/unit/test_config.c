/* Unit tests for core/config.c: defaults, every field, and every class of
 * error with the exact JSON path it is reported at. JSON in this file is
 * written with single quotes, turned into double quotes before parsing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "error.h"

#ifndef SL_SRCDIR
#error "SL_SRCDIR must name the source directory"
#endif

static sl_config_t *cfg;
static sl_config_errors_t errs;

static int
teardown(void **state) {
    (void)state;
    sl_config_free(cfg);
    cfg = NULL;
    sl_config_errors_free(&errs);
    return 0;
}

/* Loads JSON written with ' for " into the globals. */
static int
load(const char *q) {
    size_t n = strlen(q);
    char *s = malloc(n + 1);
    int rc;

    assert_non_null(s);
    for (size_t i = 0; i <= n; i++)
        s[i] = q[i] == '\'' ? '"' : q[i];
    sl_config_free(cfg);
    cfg = NULL;
    sl_config_errors_free(&errs);
    rc = sl_config_load_string(s, n, &cfg, &errs);
    free(s);
    if (rc == 0)
        assert_non_null(cfg);
    else
        assert_null(cfg);
    return rc;
}

static size_t
nerrors(void) {
    size_t n = 0;
    for (size_t i = 0; i < errs.count; i++)
        n += !errs.items[i].warning;
    return n;
}

static void
dump_errors(void) {
    for (size_t i = 0; i < errs.count; i++)
        fprintf(stderr, "  %s: %s\n", errs.items[i].path,
                errs.items[i].message);
}

/* Asserts an error at exactly `path` whose message contains `msg`. */
static void
assert_error(const char *path, const char *msg) {
    for (size_t i = 0; i < errs.count; i++)
        if (!errs.items[i].warning && strcmp(errs.items[i].path, path) == 0 &&
            strstr(errs.items[i].message, msg) != NULL)
            return;
    fprintf(stderr, "expected \"%s: ...%s...\" among:\n", path, msg);
    dump_errors();
    fail();
}

/* A load that must fail with exactly one error, at path, saying msg. */
static void
assert_only_error(const char *json, const char *path, const char *msg) {
    assert_int_equal(load(json), SL_ECONFIG);
    if (nerrors() != 1) {
        fprintf(stderr, "%s\nexpected one error, got:\n", json);
        dump_errors();
        fail();
    }
    assert_error(path, msg);
}

static void
assert_loads(const char *json) {
    if (load(json) != 0) {
        fprintf(stderr, "%s\nunexpected errors:\n", json);
        dump_errors();
        fail();
    }
}

#define LISTEN "'listen':['127.0.0.1:8080']"
#define MOCK "'providers':{'m':{'type':'mock'}}"

static void
test_quickstart_example_validates(void **state) {
    (void)state;
    setenv("OPENAI_API_KEY", "sk-test", 1);
    assert_int_equal(
        sl_config_load_file(SL_SRCDIR "/examples/quickstart.json", &cfg, &errs),
        0);
    assert_int_equal(nerrors(), 0);
    assert_string_equal(cfg->path, SL_SRCDIR "/examples/quickstart.json");
    assert_int_equal(cfg->nlisten, 1);
    assert_string_equal(cfg->listen[0].host, "127.0.0.1");
    assert_int_equal(cfg->listen[0].port, 8080);
    const sl_provider_t *mock = sl_config_provider(cfg, "mock", 4);
    assert_non_null(mock);
    assert_int_equal(mock->type, SL_PROVIDER_MOCK);
    assert_int_equal(mock->mock_delay_ms, 50);
    assert_null(mock->base_url);
    const sl_provider_t *oa = sl_config_provider(cfg, "openai", 6);
    assert_non_null(oa);
    assert_string_equal(oa->chat_url,
                        "https://api.openai.com/v1/chat/completions");
    assert_string_equal(oa->auth_header, "Authorization: Bearer sk-test");
    const sl_model_t *m = sl_config_model(cfg, "mock-chat", 9);
    assert_non_null(m);
    assert_ptr_equal(m->targets[0].provider, mock);
    assert_string_equal(m->targets[0].model, "echo");
    m = sl_config_model(cfg, "gpt-4o-mini", 11);
    assert_non_null(m);
    assert_ptr_equal(m->targets[0].provider, oa);
    assert_string_equal(m->targets[0].model, "gpt-4o-mini");
    assert_true(cfg->allow_direct_models);
    assert_string_equal(cfg->access_log, "stderr");
    unsetenv("OPENAI_API_KEY");
}

static void
test_minimal_config_gets_every_default(void **state) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    (void)state;

    assert_loads("{" LISTEN "," MOCK "}");
    assert_int_equal(nerrors(), 0);
    assert_null(cfg->path);
    assert_int_equal(cfg->workers, cpus < 1 ? 1 : cpus > 256 ? 256 : cpus);
    assert_string_equal(cfg->data_dir, "./data");
    assert_true(cfg->allow_direct_models);
    assert_string_equal(cfg->access_log, "stderr");
    assert_int_equal(cfg->nmodels, 0);
    assert_int_equal(cfg->nroutes, 5);
    assert_string_equal(cfg->routes[0].path, "/v1/chat/completions");
    assert_int_equal(cfg->routes[0].kind, SL_ROUTE_CHAT);
    assert_string_equal(cfg->routes[1].path, "/v1/embeddings");
    assert_int_equal(cfg->routes[1].kind, SL_ROUTE_EMBEDDINGS);
    assert_string_equal(cfg->routes[2].path, "/v1/models");
    assert_int_equal(cfg->routes[2].kind, SL_ROUTE_MODELS);
    assert_string_equal(cfg->routes[3].path, "/healthz");
    assert_int_equal(cfg->routes[3].kind, SL_ROUTE_HEALTH);
    assert_string_equal(cfg->routes[4].path, "/v1/messages");
    assert_int_equal(cfg->routes[4].kind, SL_ROUTE_MESSAGES);
    assert_int_equal(cfg->routes[0].nplugins, 0);
    assert_null(cfg->routes[0].lua);
    assert_int_equal(cfg->limits.max_header_bytes, 16384);
    assert_int_equal(cfg->limits.max_body_bytes, 4194304);
    assert_int_equal(cfg->limits.header_timeout_ms, 10000);
    assert_int_equal(cfg->limits.body_timeout_ms, 30000);
    assert_int_equal(cfg->limits.idle_timeout_ms, 60000);
    assert_int_equal(cfg->limits.max_connections, 10000);
    assert_int_equal(cfg->limits.drain_timeout_ms, 30000);
    assert_int_equal(cfg->limits.max_response_bytes, 67108864);
    const sl_provider_t *p = &cfg->providers[0];
    assert_string_equal(p->name, "m");
    assert_int_equal(p->connect_timeout_ms, 5000);
    assert_int_equal(p->first_byte_timeout_ms, 60000);
    assert_int_equal(p->timeout_ms, 600000);
    assert_int_equal(p->mock_delay_ms, 0);
    assert_null(p->api_key_env);
    assert_null(p->api_key);
    assert_null(p->auth_header);
    assert_null(p->chat_url);
}

static void
test_full_config_sets_every_field(void **state) {
    (void)state;
    setenv("SL_TEST_KEY", "k-123", 1);
    assert_loads(
        "{'listen':[{'addr':'127.0.0.1:8080'},'[::1]:9090',"
        "           {'addr':'0.0.0.0:0'}],"
        " 'workers':3, 'data_dir':'/var/lib/sluice',"
        " 'admin':{'addr':'127.0.0.1:9091'}, 'plugins':{'auth':{'path':'auth.so'},'rl':{'path':'/x/rl.so'}},"
        " 'providers':{"
        "   'oa':{'type':'openai','base_url':'http://127.0.0.1:11434/v1//',"
        "         'api_key_env':'SL_TEST_KEY','connect_timeout_ms':100,"
        "         'first_byte_timeout_ms':200,'timeout_ms':300},"
        "   'mk':{'type':'mock','mock_delay_ms':0}},"
        " 'models':{'smart':{"
        "   'targets':[{'provider':'oa','model':'gpt-4o','weight':3},"
        "              {'provider':'mk','model':'echo'}],"
        "   'fallback':[{'provider':'mk','model':'backup','weight':2}]}},"
        " 'allow_direct_models':false,"
        " 'routes':[{'path':'/v1/chat/completions','plugins':['auth','rl'],"
        "            'lua':'policies/a.lua'},"
        "           {'path':'/chat','kind':'chat'},"
        "           {'path':'/healthz','kind':'health'}],"
        " 'limits':{'max_header_bytes':1024,'max_body_bytes':1,"
        "   'header_timeout_ms':1,'body_timeout_ms':2,'idle_timeout_ms':3,"
        "   'max_connections':4,'drain_timeout_ms':5,"
        "   'max_response_bytes':6},"
        " 'access_log':'/tmp/access.log'}");
    unsetenv("SL_TEST_KEY");
    assert_int_equal(errs.count, 0);

    assert_int_equal(cfg->nlisten, 3);
    assert_string_equal(cfg->listen[0].addr, "127.0.0.1:8080");
    assert_string_equal(cfg->listen[1].addr, "[::1]:9090");
    assert_string_equal(cfg->listen[1].host, "::1");
    assert_int_equal(cfg->listen[1].port, 9090);
    assert_string_equal(cfg->listen[2].host, "0.0.0.0");
    assert_int_equal(cfg->listen[2].port, 0);
    assert_int_equal(cfg->workers, 3);
    assert_string_equal(cfg->data_dir, "/var/lib/sluice");

    assert_int_equal(cfg->nproviders, 2);
    const sl_provider_t *oa = &cfg->providers[0];
    assert_string_equal(oa->name, "oa");
    assert_int_equal(oa->type, SL_PROVIDER_OPENAI);
    assert_string_equal(oa->base_url, "http://127.0.0.1:11434/v1");
    assert_string_equal(oa->chat_url,
                        "http://127.0.0.1:11434/v1/chat/completions");
    assert_string_equal(oa->embeddings_url,
                        "http://127.0.0.1:11434/v1/embeddings");
    assert_string_equal(oa->api_key_env, "SL_TEST_KEY");
    assert_string_equal(oa->api_key, "k-123");
    assert_string_equal(oa->auth_header, "Authorization: Bearer k-123");
    assert_int_equal(oa->connect_timeout_ms, 100);
    assert_int_equal(oa->first_byte_timeout_ms, 200);
    assert_int_equal(oa->timeout_ms, 300);
    const sl_provider_t *mk = &cfg->providers[1];
    assert_int_equal(mk->type, SL_PROVIDER_MOCK);

    assert_int_equal(cfg->nmodels, 1);
    const sl_model_t *m = &cfg->models[0];
    assert_string_equal(m->name, "smart");
    assert_int_equal(m->ntargets, 2);
    assert_ptr_equal(m->targets[0].provider, oa);
    assert_string_equal(m->targets[0].model, "gpt-4o");
    assert_int_equal(m->targets[0].weight, 3);
    assert_ptr_equal(m->targets[1].provider, mk);
    assert_int_equal(m->targets[1].weight, 1);
    assert_int_equal(m->total_weight, 4);
    assert_int_equal(m->nfallback, 1);
    assert_ptr_equal(m->fallback[0].provider, mk);
    assert_string_equal(m->fallback[0].model, "backup");
    assert_int_equal(m->fallback[0].weight, 2);
    assert_false(cfg->allow_direct_models);

    assert_int_equal(cfg->nroutes, 3);
    assert_int_equal(cfg->routes[0].kind, SL_ROUTE_CHAT);
    assert_int_equal(cfg->routes[0].nplugins, 2);
    assert_string_equal(cfg->routes[0].plugins[0], "auth");
    assert_string_equal(cfg->routes[0].plugins[1], "rl");
    assert_string_equal(cfg->routes[0].lua, "policies/a.lua");
    assert_string_equal(cfg->routes[1].path, "/chat");
    assert_int_equal(cfg->routes[1].kind, SL_ROUTE_CHAT);
    assert_int_equal(cfg->routes[2].kind, SL_ROUTE_HEALTH);

    assert_int_equal(cfg->limits.max_header_bytes, 1024);
    assert_int_equal(cfg->limits.max_body_bytes, 1);
    assert_int_equal(cfg->limits.header_timeout_ms, 1);
    assert_int_equal(cfg->limits.body_timeout_ms, 2);
    assert_int_equal(cfg->limits.idle_timeout_ms, 3);
    assert_int_equal(cfg->limits.max_connections, 4);
    assert_int_equal(cfg->limits.drain_timeout_ms, 5);
    assert_int_equal(cfg->limits.max_response_bytes, 6);
    assert_string_equal(cfg->access_log, "/tmp/access.log");
}

static void
test_unset_api_key_env_is_a_warning_not_an_error(void **state) {
    (void)state;
    unsetenv("SL_TEST_NO_SUCH_KEY");
    assert_loads("{" LISTEN ",'providers':{'oa':{'type':'openai',"
                 "'base_url':'https://x.test','api_key_env':"
                 "'SL_TEST_NO_SUCH_KEY'}}}");
    assert_string_equal(cfg->providers[0].api_key_env, "SL_TEST_NO_SUCH_KEY");
    assert_null(cfg->providers[0].api_key);
    assert_null(cfg->providers[0].auth_header);
    assert_int_equal(errs.count, 1);
    assert_true(errs.items[0].warning);
    assert_string_equal(errs.items[0].path, "$.providers.oa.api_key_env");
    assert_non_null(strstr(errs.items[0].message, "SL_TEST_NO_SUCH_KEY"));
}

static void
test_api_key_with_line_break_is_refused(void **state) {
    (void)state;
    setenv("SL_TEST_BAD_KEY", "abc\r\nX-Evil: 1", 1);
    assert_only_error("{" LISTEN ",'providers':{'oa':{'type':'openai',"
                      "'base_url':'https://x.test','api_key_env':"
                      "'SL_TEST_BAD_KEY'}}}",
                      "$.providers.oa.api_key_env", "line break");
    unsetenv("SL_TEST_BAD_KEY");
}

static void
test_unknown_keys_are_reported_at_every_level(void **state) {
    (void)state;
    assert_only_error("{" LISTEN ",'listne':1}", "$.listne", "unknown key");
    assert_only_error("{'Listen':['127.0.0.1:1']," LISTEN "}", "$.Listen",
                      "unknown key");
    assert_only_error("{'listen':[{'addr':'127.0.0.1:1','tlz':{}}]}",
                      "$.listen[0].tlz", "unknown key");
    assert_only_error("{'listen':[{'addr':'127.0.0.1:1','tls':{'cert':'"
                      SL_SRCDIR "/README.md','key':'" SL_SRCDIR
                      "/README.md','ocsp':1}}]}",
                      "$.listen[0].tls.ocsp", "unknown key");
    assert_int_equal(load("{'listen':[{'addr':'127.0.0.1:1','tls':{}}]}"),
                     SL_ECONFIG);
    assert_error("$.listen[0].tls.cert", "required");
    assert_error("$.listen[0].tls.key", "required");
    assert_int_equal(load("{'listen':[{'addr':'127.0.0.1:1','tls':{"
                          "'cert':'/nonexistent.pem','key':'/nonexistent.key',"
                          "'require_client_cert':true}}]}"),
                     SL_ECONFIG);
    assert_error("$.listen[0].tls.cert", "cannot read");
    assert_error("$.listen[0].tls.require_client_cert", "client_ca");
    assert_only_error("{" LISTEN ",'providers':{'m':{'type':'mock',"
                      "'Type':'mock'}}}",
                      "$.providers.m.Type", "unknown key");
    assert_only_error("{" LISTEN "," MOCK ",'models':{'a':{'targets':"
                      "[{'provider':'m','model':'x'}],'weight':1}}}",
                      "$.models.a.weight", "unknown key");
    assert_only_error("{" LISTEN "," MOCK ",'models':{'a':{'targets':"
                      "[{'provider':'m','model':'x','prio':1}]}}}",
                      "$.models.a.targets[0].prio", "unknown key");
    assert_only_error("{" LISTEN "," MOCK ",'models':{'a':{'targets':"
                      "[{'provider':'m','model':'x'}],'fallback':"
                      "[{'provider':'m','model':'y','w':1}]}}}",
                      "$.models.a.fallback[0].w", "unknown key");
    assert_only_error("{" LISTEN ",'routes':[{'path':'/healthz',"
                      "'method':'GET'}]}",
                      "$.routes[0].method", "unknown key");
    assert_only_error("{" LISTEN ",'limits':{'max_body':1}}",
                      "$.limits.max_body", "unknown key");
}

static void
test_odd_keys_get_bracketed_paths(void **state) {
    (void)state;
    assert_only_error("{" LISTEN ",'models':{'gpt-4.1':{'targets':"
                      "[{'provider':'nope','model':'x'}]}}}",
                      "$.models[\"gpt-4.1\"].targets[0].provider",
                      "unknown provider \"nope\"");
}

static void
test_duplicate_keys_are_errors(void **state) {
    (void)state;
    assert_only_error("{" LISTEN ",'workers':2,'workers':3}", "$.workers",
                      "duplicate key");
    assert_only_error("{" LISTEN ",'providers':{'m':{'type':'mock'},"
                      "'m':{'type':'mock'}}}",
                      "$.providers.m", "duplicate key");
    assert_only_error("{" LISTEN ",'providers':{'m':{'type':'mock',"
                      "'type':'openai'}}}",
                      "$.providers.m.type", "duplicate key");
    assert_only_error("{" LISTEN "," MOCK ",'models':{'a':{'targets':"
                      "[{'provider':'m','model':'x','model':'y'}]}}}",
                      "$.models.a.targets[0].model", "duplicate key");
}

static void
test_wrong_types_are_errors(void **state) {
    (void)state;
    assert_only_error("[]", "$", "must be an object");
    assert_only_error("{'listen':'127.0.0.1:80'}", "$.listen",
                      "must be an array");
    assert_only_error("{'listen':[80]}", "$.listen[0]", "must be an object");
    assert_only_error("{'listen':[{'addr':80}]}", "$.listen[0].addr",
                      "must be a string");
    assert_only_error("{" LISTEN ",'workers':'4'}", "$.workers",
                      "must be an integer");
    assert_only_error("{" LISTEN ",'workers':true}", "$.workers",
                      "must be an integer");
    assert_only_error("{" LISTEN ",'data_dir':1}", "$.data_dir",
                      "must be a string");
    assert_only_error("{" LISTEN ",'data_dir':''}", "$.data_dir",
                      "must not be empty");
    assert_only_error("{" LISTEN ",'admin':[]}", "$.admin",
                      "must be an object");
    assert_only_error("{" LISTEN ",'plugins':'x'}", "$.plugins",
                      "must be an object");
    assert_only_error("{" LISTEN ",'providers':[]}", "$.providers",
                      "must be an object");
    assert_only_error("{" LISTEN ",'providers':{'m':'mock'}}", "$.providers.m",
                      "must be an object");
    assert_only_error("{" LISTEN ",'providers':{'m':{'type':1}}}",
                      "$.providers.m.type", "must be a string");
    assert_only_error("{" LISTEN ",'models':1}", "$.models",
                      "must be an object");
    assert_only_error("{" LISTEN "," MOCK ",'models':{'a':[]}}", "$.models.a",
                      "must be an object");
    assert_only_error("{" LISTEN "," MOCK ",'models':{'a':{'targets':{}}}}",
                      "$.models.a.targets", "must be an array");
    assert_only_error("{" LISTEN "," MOCK ",'models':{'a':{'targets':[1]}}}",
                      "$.models.a.targets[0]", "must be an object");
    assert_only_error("{" LISTEN "," MOCK ",'models':{'a':{'targets':"
                      "[{'provider':'m','model':null}]}}}",
                      "$.models.a.targets[0].model", "must be a string");
    assert_only_error("{" LISTEN ",'allow_direct_models':1}",
                      "$.allow_direct_models", "must be true or false");
    assert_only_error("{" LISTEN ",'routes':{}}", "$.routes",
                      "must be an array");
    assert_only_error("{" LISTEN ",'routes':['/healthz']}", "$.routes[0]",
                      "must be an object");
    assert_only_error("{" LISTEN ",'routes':[{'path':'/healthz',"
                      "'plugins':'auth'}]}",
                      "$.routes[0].plugins", "must be an array");
    assert_only_error("{" LISTEN ",'plugins':{'a':{'path':'a.so'}},"
                      "'routes':[{'path':'/v1/embeddings',"
                      "'plugins':['a',2]}]}",
                      "$.routes[0].plugins[1]", "must be a string");
    assert_only_error("{" LISTEN ",'routes':[{'path':'/healthz','lua':[]}]}",
                      "$.routes[0].lua", "must be a string");
    assert_only_error("{" LISTEN ",'limits':[]}", "$.limits",
                      "must be an object");
    assert_only_error("{" LISTEN ",'access_log':false}", "$.access_log",
                      "must be a string");
}

static void
test_integers_refuse_fractions_negatives_and_out_of_range(void **state) {
    (void)state;
    assert_only_error("{" LISTEN ",'workers':1.5}", "$.workers",
                      "must be an integer");
    assert_only_error("{" LISTEN ",'workers':0}", "$.workers",
                      "between 1 and 256");
    assert_only_error("{" LISTEN ",'workers':-1}", "$.workers",
                      "between 1 and 256");
    assert_only_error("{" LISTEN ",'workers':257}", "$.workers",
                      "between 1 and 256");
    assert_only_error("{" LISTEN ",'workers':1e400}", "$.workers",
                      "must be an integer");
    assert_only_error("{" LISTEN ",'limits':{'max_header_bytes':1023}}",
                      "$.limits.max_header_bytes", "between 1024 and 1048576");
    assert_only_error("{" LISTEN ",'limits':{'max_header_bytes':1048577}}",
                      "$.limits.max_header_bytes", "between 1024 and 1048576");
    assert_only_error("{" LISTEN ",'limits':{'max_body_bytes':0}}",
                      "$.limits.max_body_bytes", "between 1 and 1073741824");
    assert_only_error("{" LISTEN ",'limits':{'max_body_bytes':1073741825}}",
                      "$.limits.max_body_bytes", "between 1 and 1073741824");
    assert_only_error("{" LISTEN ",'limits':{'idle_timeout_ms':0}}",
                      "$.limits.idle_timeout_ms", "between 1 and");
    assert_only_error("{" LISTEN ",'limits':{'max_connections':-5}}",
                      "$.limits.max_connections", "between 1 and");
    assert_only_error("{" LISTEN ",'limits':{'drain_timeout_ms':0.5}}",
                      "$.limits.drain_timeout_ms", "must be an integer");
    assert_only_error("{" LISTEN ",'providers':{'m':{'type':'mock',"
                      "'timeout_ms':0}}}",
                      "$.providers.m.timeout_ms", "between 1 and");
    assert_only_error("{" LISTEN ",'providers':{'m':{'type':'mock',"
                      "'mock_delay_ms':-1}}}",
                      "$.providers.m.mock_delay_ms", "between 0 and");
    assert_only_error("{" LISTEN "," MOCK ",'models':{'a':{'targets':"
                      "[{'provider':'m','model':'x','weight':0}]}}}",
                      "$.models.a.targets[0].weight", "between 1 and 1000000");
    assert_only_error("{" LISTEN "," MOCK ",'models':{'a':{'targets':"
                      "[{'provider':'m','model':'x','weight':1000001}]}}}",
                      "$.models.a.targets[0].weight", "between 1 and 1000000");
    /* the bounds themselves are fine */
    assert_loads("{" LISTEN ",'workers':256,'limits':{'max_header_bytes':"
                 "1048576,'max_body_bytes':1073741824}}");
    assert_int_equal(cfg->workers, 256);
    assert_loads("{" LISTEN ",'workers':1e0}");
    assert_int_equal(cfg->workers, 1);
}

static void
test_listen_addresses_are_checked(void **state) {
    (void)state;
    assert_only_error("{}", "$.listen", "required");
    assert_only_error("{'listen':[]}", "$.listen", "must not be empty");
    assert_only_error("{'listen':[{}]}", "$.listen[0].addr", "required");
    assert_only_error("{'listen':['127.0.0.1']}", "$.listen[0]",
                      "\"IPv4:port\" or \"[IPv6]:port\"");
    assert_only_error("{'listen':['127.0.0.1:']}", "$.listen[0]",
                      "between 0 and 65535");
    assert_only_error("{'listen':['127.0.0.1:65536']}", "$.listen[0]",
                      "between 0 and 65535");
    assert_only_error("{'listen':['127.0.0.1:80a']}", "$.listen[0]",
                      "between 0 and 65535");
    assert_only_error("{'listen':['127.0.0.1:-1']}", "$.listen[0]",
                      "between 0 and 65535");
    assert_only_error("{'listen':['localhost:80']}", "$.listen[0]",
                      "not an IPv4 address");
    assert_only_error("{'listen':['::1:80']}", "$.listen[0]",
                      "not an IPv4 address");
    assert_only_error("{'listen':[{'addr':'[::1]'}]}", "$.listen[0].addr",
                      "\"[IPv6]:port\"");
    assert_only_error("{'listen':['[1.2.3.4]:80']}", "$.listen[0]",
                      "not an IPv6 address");
    assert_only_error("{'listen':['127.0.0.1:80','127.0.0.1:80']}",
                      "$.listen[1]", "duplicate listen address");
    assert_loads("{'listen':['0.0.0.0:65535','[::]:0','[::]:0']}");
    assert_int_equal(cfg->listen[0].port, 65535);
    assert_string_equal(cfg->listen[1].host, "::");
}

static void
test_anthropic_provider_gets_its_defaults_and_header(void **state) {
    (void)state;
    setenv("SL_TEST_ANTHROPIC_KEY", "sk-ant-test", 1);
    assert_int_equal(load("{" LISTEN ",'providers':{'c':{'type':'anthropic',"
                          "'api_key_env':'SL_TEST_ANTHROPIC_KEY'}}}"),
                     0);
    const sl_provider_t *p = &cfg->providers[0];
    assert_int_equal(p->type, SL_PROVIDER_ANTHROPIC);
    assert_string_equal(p->messages_url,
                        "https://api.anthropic.com/v1/messages");
    assert_string_equal(p->anthropic_version, "2023-06-01");
    assert_int_equal(p->default_max_tokens, 4096);
    assert_string_equal(p->auth_header, "x-api-key: sk-ant-test");
    assert_int_equal(load("{" LISTEN ",'providers':{'c':{'type':'anthropic',"
                          "'base_url':'http://127.0.0.1:9/',"
                          "'default_max_tokens':100}}}"),
                     0);
    assert_string_equal(cfg->providers[0].messages_url,
                        "http://127.0.0.1:9/v1/messages");
    assert_int_equal(cfg->providers[0].default_max_tokens, 100);
    assert_int_not_equal(load("{" LISTEN ",'providers':{'o':{'type':'openai',"
                              "'base_url':'http://x','default_max_tokens':5}}}"),
                         0);
    assert_error("$.providers.o.default_max_tokens", "only for type");
}

static void
test_azure_and_gemini_targets_get_their_urls(void **state) {
    (void)state;
    assert_int_equal(
        load("{" LISTEN ",'providers':{"
             "'az':{'type':'azure','base_url':'https://r.openai.azure.com/'},"
             "'g':{'type':'gemini'}},"
             "'models':{'a':{'targets':[{'provider':'az','model':'dep-1'}]},"
             "'g':{'targets':[{'provider':'g','model':'gemini-2.0-flash'}]}}}"),
        0);
    const sl_target_t *a = &cfg->models[0].targets[0];
    assert_string_equal(a->chat_url,
                        "https://r.openai.azure.com/openai/deployments/dep-1/"
                        "chat/completions?api-version=2024-10-21");
    assert_string_equal(a->embeddings_url,
                        "https://r.openai.azure.com/openai/deployments/dep-1/"
                        "embeddings?api-version=2024-10-21");
    const sl_target_t *g = &cfg->models[1].targets[0];
    assert_string_equal(g->chat_url,
                        "https://generativelanguage.googleapis.com/v1beta/"
                        "models/gemini-2.0-flash:generateContent");
    assert_string_equal(g->stream_url,
                        "https://generativelanguage.googleapis.com/v1beta/"
                        "models/gemini-2.0-flash:streamGenerateContent"
                        "?alt=sse");
    /* A deployment name that would change the URL is refused. */
    assert_int_not_equal(
        load("{" LISTEN ",'providers':{"
             "'az':{'type':'azure','base_url':'https://r.example'}},"
             "'models':{'a':{'targets':[{'provider':'az',"
             "'model':'x/../y?z'}]}}}"),
        0);
    assert_error("$.models.a.targets[0].model", "may hold only");
    /* azure needs a base_url; api_version is azure's alone. */
    assert_int_not_equal(load("{" LISTEN ",'providers':{'az':{'type':'azure'},"
                              "'o':{'type':'openai','base_url':'http://x',"
                              "'api_version':'1'}}}"),
                         0);
    assert_error("$.providers.az.base_url", "required");
    assert_error("$.providers.o.api_version", "only for type");
}

static void
test_provider_fields_are_checked(void **state) {
    (void)state;
    assert_only_error("{" LISTEN ",'providers':{'p':{}}}", "$.providers.p.type",
                      "required");
    assert_only_error("{" LISTEN ",'providers':{'p':{'type':'vertex'}}}",
                      "$.providers.p.type",
                      "must be \"openai\", \"anthropic\", \"azure\", "
                      "\"gemini\" or \"mock\"");
    assert_only_error("{" LISTEN ",'providers':{'p':{'type':'openai'}}}",
                      "$.providers.p.base_url", "required");
    assert_only_error("{" LISTEN ",'providers':{'p':{'type':'openai',"
                      "'base_url':'ftp://x'}}}",
                      "$.providers.p.base_url", "http:// or https://");
    assert_only_error("{" LISTEN ",'providers':{'p':{'type':'openai',"
                      "'base_url':'https://'}}}",
                      "$.providers.p.base_url", "must name a host");
    assert_only_error("{" LISTEN ",'providers':{'p':{'type':'openai',"
                      "'base_url':'https://a b'}}}",
                      "$.providers.p.base_url", "spaces");
    assert_only_error("{" LISTEN ",'providers':{'p':{'type':'mock',"
                      "'base_url':'https://x'}}}",
                      "$.providers.p.base_url",
                      "not for type \"mock\"");
    assert_only_error("{" LISTEN ",'providers':{'p':{'type':'openai',"
                      "'base_url':'https://x','mock_delay_ms':5}}}",
                      "$.providers.p.mock_delay_ms", "only for type \"mock\"");
    assert_only_error("{" LISTEN ",'providers':{'a/b':{'type':'mock'}}}",
                      "$.providers[\"a/b\"]", "without '/'");
    assert_only_error("{" LISTEN ",'providers':{'':{'type':'mock'}}}",
                      "$.providers[\"\"]", "non-empty");
    assert_loads("{" LISTEN ",'providers':{'p':{'type':'openai',"
                 "'base_url':'https://api.example.com/'}}}");
    assert_string_equal(cfg->providers[0].base_url, "https://api.example.com");
    assert_string_equal(cfg->providers[0].embeddings_url,
                        "https://api.example.com/embeddings");
}

static void
test_model_targets_are_checked(void **state) {
    (void)state;
    assert_only_error("{" LISTEN "," MOCK ",'models':{'smart':{'targets':"
                      "[{'provider':'nope','model':'x'}]}}}",
                      "$.models.smart.targets[0].provider",
                      "unknown provider \"nope\"");
    assert_only_error("{" LISTEN "," MOCK ",'models':{'smart':{}}}",
                      "$.models.smart.targets", "required");
    assert_only_error("{" LISTEN "," MOCK ",'models':{'smart':{'targets':[]}}}",
                      "$.models.smart.targets", "must not be empty");
    assert_only_error("{" LISTEN "," MOCK ",'models':{'smart':{'targets':"
                      "[{'model':'x'}]}}}",
                      "$.models.smart.targets[0].provider", "required");
    assert_only_error("{" LISTEN "," MOCK ",'models':{'smart':{'targets':"
                      "[{'provider':'m'}]}}}",
                      "$.models.smart.targets[0].model", "required");
    assert_only_error("{" LISTEN "," MOCK ",'models':{'smart':{'targets':"
                      "[{'provider':'m','model':''}]}}}",
                      "$.models.smart.targets[0].model", "must not be empty");
    assert_only_error("{" LISTEN "," MOCK ",'models':{'smart':{'targets':"
                      "[{'provider':'m','model':'a'}],'fallback':"
                      "[{'provider':'zz','model':'b'}]}}}",
                      "$.models.smart.fallback[0].provider",
                      "unknown provider \"zz\"");
    /* a provider with a broken body is still known to the models */
    assert_only_error("{" LISTEN ",'providers':{'p':{'type':'nope'}},"
                      "'models':{'a':{'targets':[{'provider':'p',"
                      "'model':'x'}]}}}",
                      "$.providers.p.type", "must be");
}

static void
test_routes_are_checked(void **state) {
    (void)state;
    assert_only_error("{" LISTEN ",'routes':[{'path':'/v1/models'},"
                      "{'path':'/v1/models'}]}",
                      "$.routes[1].path", "duplicate route \"/v1/models\"");
    assert_only_error("{" LISTEN ",'routes':[{'path':'/custom'}]}",
                      "$.routes[0].kind", "required");
    assert_only_error("{" LISTEN ",'routes':[{'path':'/x','kind':'chats'}]}",
                      "$.routes[0].kind", "must be \"chat\"");
    assert_only_error("{" LISTEN ",'routes':[{'kind':'chat'}]}",
                      "$.routes[0].path", "required");
    assert_only_error("{" LISTEN ",'routes':[{'path':'v1/models'}]}",
                      "$.routes[0].path", "must start with '/'");
    assert_only_error("{" LISTEN ",'routes':[{'path':'/a?b','kind':'chat'}]}",
                      "$.routes[0].path", "'?'");
    assert_loads("{" LISTEN ",'routes':[{'path':'/v1/embeddings'},"
                 "{'path':'/v1/models'},{'path':'/healthz'},"
                 "{'path':'/embed','kind':'embeddings'}]}");
    assert_int_equal(cfg->nroutes, 4);
    assert_int_equal(cfg->routes[0].kind, SL_ROUTE_EMBEDDINGS);
    assert_int_equal(cfg->routes[1].kind, SL_ROUTE_MODELS);
    assert_int_equal(cfg->routes[2].kind, SL_ROUTE_HEALTH);
    assert_int_equal(cfg->routes[3].kind, SL_ROUTE_EMBEDDINGS);
}

static void
test_access_log_accepts_off_and_paths(void **state) {
    (void)state;
    assert_loads("{" LISTEN ",'access_log':'off'}");
    assert_string_equal(cfg->access_log, "off");
    assert_only_error("{" LISTEN ",'access_log':''}", "$.access_log",
                      "must not be empty");
}

static void
test_allow_direct_models_parses_both_values(void **state) {
    (void)state;
    assert_loads("{" LISTEN ",'allow_direct_models':false}");
    assert_false(cfg->allow_direct_models);
    assert_loads("{" LISTEN ",'allow_direct_models':true}");
    assert_true(cfg->allow_direct_models);
}

static void
test_every_error_is_reported_at_once(void **state) {
    (void)state;
    assert_int_equal(
        load("{'listne':[],"
             " 'workers':0,"
             " 'providers':{'oa':{'type':'openai','base_url':'x'}},"
             " 'models':{'smart':{'targets':[{'provider':'nope','model':'m'},"
             "                               {'provider':'oa','weight':1.5}]}},"
             " 'routes':[{'path':'/a','kind':'chat'},{'path':'/a'}],"
             " 'limits':{'max_body_bytes':-1}}"),
        SL_ECONFIG);
    assert_error("$.listne", "unknown key");
    assert_error("$.listen", "required");
    assert_error("$.workers", "between");
    assert_error("$.providers.oa.base_url", "http://");
    assert_error("$.models.smart.targets[0].provider", "unknown provider");
    assert_error("$.models.smart.targets[1].model", "required");
    assert_error("$.models.smart.targets[1].weight", "must be an integer");
    assert_error("$.routes[1].path", "duplicate route");
    assert_error("$.routes[1].kind", "required");
    assert_error("$.limits.max_body_bytes", "between");
    assert_int_equal(nerrors(), 10);
}

static void
test_not_json_names_the_line_and_column(void **state) {
    (void)state;
    assert_int_equal(load("{\n  'listen': [\n    'a' 'b'\n  ]\n}"), SL_ECONFIG);
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.items[0].path, "$");
    assert_non_null(strstr(errs.items[0].message, "not valid JSON"));
    assert_non_null(strstr(errs.items[0].message, "line 3"));
    assert_only_error("", "$", "line 1");
    assert_only_error("{" LISTEN "} {}", "$", "not valid JSON");
    assert_only_error("{" LISTEN ",}", "$", "not valid JSON");
    assert_loads("\n {" LISTEN "} \n\t");
}

static void
test_file_that_is_not_json_fails_with_path_dollar(void **state) {
    char path[] = "/tmp/sl_test_config_XXXXXX";
    int fd = mkstemp(path);
    (void)state;

    assert_true(fd >= 0);
    assert_int_equal(write(fd, "listen = 1\n", 11), 11);
    close(fd);
    assert_int_equal(sl_config_load_file(path, &cfg, &errs), SL_ECONFIG);
    assert_null(cfg);
    unlink(path);
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.items[0].path, "$");
    assert_non_null(strstr(errs.items[0].message, "line 1, column 1"));
}

static void
test_missing_file_names_the_system_error(void **state) {
    (void)state;
    cfg = (sl_config_t *)1; /* must be reset to NULL */
    assert_int_equal(
        sl_config_load_file("/nonexistent/sluice.json", &cfg, &errs),
        SL_ECONFIG);
    assert_null(cfg);
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.items[0].path, "$");
    assert_non_null(strstr(errs.items[0].message, "/nonexistent/sluice.json"));
    assert_non_null(strstr(errs.items[0].message, strerror(ENOENT)));
}

static void
test_errors_list_may_be_null(void **state) {
    static const char bad[] = "{\"workers\":0}";
    static const char good[] = "{\"listen\":[\"127.0.0.1:1\"]}";
    (void)state;

    assert_int_equal(sl_config_load_string(bad, strlen(bad), &cfg, NULL),
                     SL_ECONFIG);
    assert_null(cfg);
    assert_int_equal(sl_config_load_string(good, strlen(good), &cfg, NULL), 0);
    assert_non_null(cfg);
}

static void
test_lookups_match_whole_names_only(void **state) {
    (void)state;
    assert_loads("{" LISTEN ",'providers':{'mock':{'type':'mock'},"
                 "'mo':{'type':'mock'}},'models':{'fast':{'targets':"
                 "[{'provider':'mo','model':'x'}]}}}");
    assert_ptr_equal(sl_config_provider(cfg, "mock", 4), &cfg->providers[0]);
    assert_ptr_equal(sl_config_provider(cfg, "mockery", 2), &cfg->providers[1]);
    assert_null(sl_config_provider(cfg, "moc", 3));
    assert_null(sl_config_provider(cfg, "mo\0k", 4));
    assert_ptr_equal(sl_config_model(cfg, "fast-x", 4), &cfg->models[0]);
    assert_null(sl_config_model(cfg, "fas", 3));
    assert_null(sl_config_model(cfg, "Fast", 4));
}

int
main(void) {
#define T(f) cmocka_unit_test_teardown(f, teardown)
    const struct CMUnitTest tests[] = {
        T(test_quickstart_example_validates),
        T(test_minimal_config_gets_every_default),
        T(test_full_config_sets_every_field),
        T(test_unset_api_key_env_is_a_warning_not_an_error),
        T(test_api_key_with_line_break_is_refused),
        T(test_unknown_keys_are_reported_at_every_level),
        T(test_odd_keys_get_bracketed_paths),
        T(test_duplicate_keys_are_errors),
        T(test_wrong_types_are_errors),
        T(test_integers_refuse_fractions_negatives_and_out_of_range),
        T(test_listen_addresses_are_checked),
        T(test_provider_fields_are_checked),
        T(test_anthropic_provider_gets_its_defaults_and_header),
        T(test_azure_and_gemini_targets_get_their_urls),
        T(test_model_targets_are_checked),
        T(test_routes_are_checked),
        T(test_access_log_accepts_off_and_paths),
        T(test_allow_direct_models_parses_both_values),
        T(test_every_error_is_reported_at_once),
        T(test_not_json_names_the_line_and_column),
        T(test_file_that_is_not_json_fails_with_path_dollar),
        T(test_missing_file_names_the_system_error),
        T(test_errors_list_may_be_null),
        T(test_lookups_match_whole_names_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
