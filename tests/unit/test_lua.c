/* The Lua host without a server: the sandbox, the limits, the JSON codec,
 * prompt templates and module loading. Code runs the way a script's top
 * level does (the load phase), in a scratch state. */
#include "../../lua/lua_int.h"
#include "error.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static sl_route_t route = {
    .path = "/t",
    .kind = SL_ROUTE_CHAT,
    .lua = "t.lua",
    .lua_instructions = 1000000,
    .lua_timeout_ms = 5000,
    .lua_memory_mb = 8,
};

static sl_lua_script_t
script_of(const char *src) {
    sl_lua_script_t s = {&route, (char *)src, strlen(src), "@t.lua", "lua:/t"};
    return s;
}

/* Runs src as a script's top level. Returns 0 and the JSON of its first
 * value in out, or -1 and the error in out. */
static int
run(sl_lua_vm_t *vm, const char *src, char *out, size_t cap) {
    sl_lua_script_t s = script_of(src);
    sl_lua_inv_t inv;
    lua_State *co = sl_lua_inv_begin(&inv, vm, NULL, SL_LUA_PHASE_LOAD, &s);
    assert_non_null(co);
    if (luaL_loadbufferx(co, src, strlen(src), "@t.lua", "t") != 0) {
        snprintf(out, cap, "%s", lua_tostring(co, -1));
        sl_lua_inv_end(&inv);
        return -1;
    }
    sl_lua_env_new(co);
    lua_setfenv(co, -2);
    sl_lua_result_t res = sl_lua_inv_run(&inv, 0);
    int rc = -1;
    if (res == SL_LUA_OK) {
        char err[200];
        size_t n;
        char *j = lua_gettop(co) > 0
                      ? sl_lua_json_encode(co, 1, &n, err, sizeof(err))
                      : strdup("null");
        snprintf(out, cap, "%s", j ? j : err);
        free(j);
        rc = j ? 0 : -1;
    } else {
        snprintf(out, cap, "%s", inv.error);
    }
    if (res == SL_LUA_WAIT)
        sl_lua_inv_cancel(&inv);
    else
        sl_lua_inv_end(&inv);
    return rc;
}

static int
setup(void **state) {
    *state = sl_lua_vm_new(NULL);
    return *state ? 0 : -1;
}

static int
teardown(void **state) {
    sl_lua_vm_free(*state);
    return 0;
}

#define RUN_OK(vm, src, want)                                                  \
    do {                                                                       \
        char out_[4096];                                                       \
        int rc_ = run(vm, src, out_, sizeof(out_));                            \
        if (rc_ != 0)                                                          \
            fail_msg("%s -> error %s", src, out_);                             \
        assert_string_equal(out_, want);                                       \
    } while (0)

static void
expect_error(sl_lua_vm_t *vm, const char *src, const char *part) {
    char out[4096];
    if (run(vm, src, out, sizeof(out)) == 0)
        fail_msg("%s did not fail: %s", src, out);
    if (strstr(out, part) == NULL)
        fail_msg("%s: error '%s' lacks '%s'", src, out, part);
}

/* ---- sandbox ---- */

static void
test_sandbox_offers_no_way_out(void **state) {
    sl_lua_vm_t *vm = *state;
    RUN_OK(vm,
           "return {io == nil, debug == nil, require == nil, package == nil,"
           " jit == nil, ffi == nil, os.execute == nil, os.exit == nil,"
           " os.getenv == nil, os.remove == nil, dofile == nil,"
           " loadfile == nil, string.dump == nil, getfenv == nil,"
           " setfenv == nil, newproxy == nil, module == nil}",
           "[true,true,true,true,true,true,true,true,true,true,true,true,"
           "true,true,true,true,true]");
    RUN_OK(vm,
           "return {type(os.time()), type(os.clock()), math.floor(2.5),"
           " ('a'):upper(), bit.band(6, 3)}",
           "[\"number\",\"number\",2,\"A\",2]");
}

static void
test_load_takes_text_only_in_the_callers_environment(void **state) {
    sl_lua_vm_t *vm = *state;
    RUN_OK(vm, "x = 41 return load('return x + 1')()", "42");
    RUN_OK(vm,
           "local f, err = load('\\27LJ\\2junk') return {f == nil, err ~= nil}",
           "[true,true]");
    RUN_OK(vm, "return load('return y', 'c', 't', {y = 7})()", "7");
    expect_error(vm, "return collectgarbage('stop')",
                 "only \"count\" is allowed");
    RUN_OK(vm, "return type(collectgarbage('count'))", "\"number\"");
}

static void
test_shared_tables_are_read_only(void **state) {
    sl_lua_vm_t *vm = *state;
    expect_error(vm, "string.upper = nil", "t.lua:1: cannot set 'upper'");
    expect_error(vm, "sluice.llm = nil", "read-only");
    expect_error(vm, "sluice.json.encode = print", "read-only");
    expect_error(vm, "rawset(table, 'insert', 1)",
                 "rawset: this table is "
                 "read-only");
    expect_error(vm, "setmetatable(sluice, {})", "protected metatable");
    RUN_OK(vm,
           "return getmetatable('') == false and getmetatable(sluice) "
           "== false and getmetatable(_G) == false",
           "true");
    /* A script's globals are its own. */
    RUN_OK(vm, "print = nil; string2 = 1; return type(string)", "\"table\"");
    RUN_OK(vm, "return {print == nil, string2 == nil}", "[false,true]");
}

/* ---- limits ---- */

static void
test_instruction_limit_cannot_be_caught(void **state) {
    sl_lua_vm_t *vm = *state;
    expect_error(vm, "while true do end",
                 "t.lua:1: instruction limit (1000000) exceeded");
    expect_error(vm,
                 "local n = 0\n"
                 "while true do\n"
                 "  pcall(function() while true do end end)\n"
                 "  n = n + 1\n"
                 "end",
                 "instruction limit (1000000) exceeded");
    expect_error(vm,
                 "while true do\n"
                 "  xpcall(error, function() while true do end end)\n"
                 "end",
                 "instruction limit");
    expect_error(vm,
                 "while true do\n"
                 "  coroutine.resume(coroutine.create(function()\n"
                 "    while true do end end))\n"
                 "end",
                 "instruction limit");
    /* The state is fine afterwards. */
    RUN_OK(vm, "local s = 0 for i = 1, 1000 do s = s + i end return s",
           "500500");
}

static void
test_memory_limit_cannot_be_caught(void **state) {
    sl_lua_vm_t *vm = *state;
    expect_error(vm, "local s = string.rep('x', 64 * 1024 * 1024)",
                 "t.lua:1: memory limit (8 MB) exceeded");
    expect_error(vm,
                 "local t = {}\n"
                 "for i = 1, 1e7 do\n"
                 "  local ok = pcall(function() t[i] = string.rep('y', 1000)"
                 " .. i end)\n"
                 "end",
                 "memory limit (8 MB) exceeded");
    /* Garbage is collected: 64 MB made and dropped in 64 KB pieces, then
     * 100 MB in 1 MB pieces. */
    RUN_OK(vm,
           "local n = 0\n"
           "for i = 1, 1000 do n = n + #(string.rep('z', 65536) .. i)"
           " end\n"
           "return n > 0",
           "true");
    RUN_OK(vm,
           "local n = 0\n"
           "for i = 1, 100 do n = n + #(string.rep('z', 1024 * 1024) .. i)"
           " end\n"
           "return n",
           "104857792");
    RUN_OK(vm, "return #string.rep('x', 1000)", "1000");
}

static void
test_a_stray_yield_is_an_error(void **state) {
    expect_error(*state, "coroutine.yield()", "yielded outside sluice's");
}

static void
test_request_functions_refuse_the_load_phase(void **state) {
    sl_lua_vm_t *vm = *state;
    expect_error(vm, "sluice.sleep(1)",
                 "t.lua:1: sluice.sleep: cannot be called while the script "
                 "loads");
    expect_error(vm, "sluice.llm.chat{model = 'x', prompt = 'y'}",
                 "sluice.llm.chat: cannot be called while the script loads");
    expect_error(vm, "sluice.kv.get('k')", "sluice.kv.get: cannot be called");
    expect_error(vm, "sluice.respond(200, 'x')", "sluice.respond: cannot");
}

/* ---- JSON ---- */

static void
test_json_decode_and_encode_values(void **state) {
    sl_lua_vm_t *vm = *state;
    /* Objects are encoded in table order: look at one key at a time. */
    RUN_OK(vm,
           "local v = sluice.json.decode('{\"a\":[1,2.5,-300,true,false,"
           "null,\"s\"],\"b\":{},\"c\":[]}')\n"
           "return {v.a, v.b, v.c, v.a[6] == sluice.json.null}",
           "[[1,2.5,-300,true,false,null,\"s\"],{},[],true]");
    RUN_OK(vm,
           "return sluice.json.decode('\"\\\\u00e9\\\\ud83d\\\\ude00"
           "\\\\n\\\\\"\"')",
           "\"\xc3\xa9\xf0\x9f\x98\x80\\n\\\"\"");
    RUN_OK(vm, "return sluice.json.encode({1, 2, 3})", "\"[1,2,3]\"");
    RUN_OK(vm, "return sluice.json.encode('tab\\there\\1')",
           "\"\\\"tab\\\\there\\\\u0001\\\"\"");
    RUN_OK(vm, "return sluice.json.encode({[2] = 'b'})",
           "\"{\\\"2\\\":\\\"b\\\"}\"");
    RUN_OK(vm,
           "return sluice.json.encode({1, 2, x = 3}):find('\\\"x\\\":3')"
           " ~= nil",
           "true");
    RUN_OK(vm, "return {0.1, 1e300, -0.5, 2^53, 123456789012}",
           "[0.1,1e+300,-0.5,9007199254740992,123456789012]");
    RUN_OK(vm, "return sluice.json.array()", "[]");
    RUN_OK(vm, "return {}", "{}");
}

static void
test_json_errors_say_where(void **state) {
    sl_lua_vm_t *vm = *state;
    RUN_OK(vm,
           "local v, err = sluice.json.decode('{\"a\":1,}')\n"
           "return {v == nil, err}",
           "[true,\"invalid JSON at byte 7: expected a key\"]");
    RUN_OK(vm, "return select(2, sluice.json.decode('[1] x'))",
           "\"invalid JSON at byte 4: text after the value\"");
    RUN_OK(vm, "return select(2, sluice.json.decode('01'))",
           "\"invalid JSON at byte 1: text after the value\"");
    RUN_OK(vm, "return select(2, sluice.json.decode(string.rep('[', 200)))",
           "\"invalid JSON at byte 129: nested too deep\"");
    RUN_OK(vm, "return select(2, sluice.json.encode({f = print}))",
           "\"cannot encode a function in JSON\"");
    RUN_OK(vm, "local t = {} t.t = t return select(2, sluice.json.encode(t))",
           "\"table nested too deep (or a cycle)\"");
    RUN_OK(vm, "return select(2, sluice.json.encode(0/0))",
           "\"cannot encode NaN in JSON\"");
    RUN_OK(vm, "return select(2, sluice.json.encode({1/0}))",
           "\"cannot encode an infinity in JSON\"");
}

/* ---- prompts ---- */

static void
test_template_compile_and_errors(void **state) {
    char err[200];
    sl_template_t *t =
        sl_template_compile("a {{x}} b {{ y.z }}!", 20, err, sizeof(err));
    assert_non_null(t);
    assert_int_equal(t->nsegs, 5);
    assert_true(t->segs[1].var);
    assert_int_equal(t->segs[3].len, 3);
    assert_memory_equal(t->segs[3].text, "y.z", 3);
    sl_template_free(t);
    assert_null(sl_template_compile("a {{x", 5, err, sizeof(err)));
    assert_string_equal(err, "\"{{\" at byte 2 is never closed");
    assert_null(sl_template_compile("{{a b}}", 7, err, sizeof(err)));
    assert_non_null(strstr(err, "is not a variable name"));
    assert_null(sl_template_compile("{{a..b}}", 8, err, sizeof(err)));
}

static void
test_prompts_load_reports_paths(void **state) {
    sl_config_errors_t errs = {0};
    sl_prompts_t *p = NULL;
    assert_int_equal(
        sl_prompts_load("{\"a\":\"x {{v}}\",\"b\":{\"versions\":{\"1\":"
                        "\"one\",\"2\":\"two\"},\"default\":\"2\"}}",
                        &p, &errs),
        0);
    int known;
    const sl_template_t *t = sl_prompts_find(p, "b", NULL, &known);
    assert_non_null(t);
    assert_memory_equal(t->segs[0].text, "two", 3);
    assert_non_null(sl_prompts_find(p, "b", "1", &known));
    assert_null(sl_prompts_find(p, "b", "3", &known));
    assert_int_equal(known, 1);
    assert_null(sl_prompts_find(p, "c", NULL, &known));
    assert_int_equal(known, 0);
    sl_prompts_free(p);
    assert_int_equal(
        sl_prompts_load("{\"a\":1,\"b\":{\"versions\":{}},\"c\":{\"versions"
                        "\":{\"1\":\"{{\"},\"x\":1},\"d\":{\"versions\":{"
                        "\"1\":\"a\",\"2\":\"b\"}}}",
                        &p, &errs),
        SL_ECONFIG);
    assert_null(p);
    assert_int_equal(errs.count, 5);
    assert_string_equal(errs.items[0].path, "$.prompts.a");
    assert_string_equal(errs.items[1].path, "$.prompts.b.versions");
    assert_string_equal(errs.items[2].path, "$.prompts.c.x");
    assert_string_equal(errs.items[3].path, "$.prompts.c.versions.1");
    assert_string_equal(errs.items[4].path, "$.prompts.d.default");
    sl_config_errors_free(&errs);
}

static void
test_render_fills_variables_from_config_prompts(void **state) {
    sl_config_errors_t errs = {0};
    sl_lua_set_t set = {0};
    assert_int_equal(
        sl_prompts_load("{\"hi\":{\"versions\":{\"a\":\"Hi {{u.name}}, {{n}}"
                        " {{ok}}\"},\"default\":\"a\"}}",
                        &set.prompts, &errs),
        0);
    sl_lua_vm_t *vm = sl_lua_vm_new(NULL);
    vm->set = &set;
    RUN_OK(vm,
           "return sluice.prompt.render('hi', {u = {name = 'Ann'}, "
           "n = 3, ok = true})",
           "\"Hi Ann, 3 true\"");
    RUN_OK(vm, "return select(2, sluice.prompt.render('hi', {n = 1}))",
           "\"prompt 'hi': variable 'u.name' is missing\"");
    RUN_OK(vm, "return select(2, sluice.prompt.render('hi', {}, 'b'))",
           "\"prompt 'hi' has no version 'b'\"");
    sl_lua_vm_free(vm);
    sl_prompts_free(set.prompts);
}

/* ---- modules ---- */

static void
expect_load_error(const char *src, const char *part) {
    sl_lua_vm_t *vm = sl_lua_vm_new(NULL);
    sl_lua_script_t s = script_of(src);
    sl_lua_mod_t mod;
    assert_int_equal(sl_lua_vm_load(vm, &s, &mod), -1);
    if (strstr(mod.error, part) == NULL)
        fail_msg("'%s' lacks '%s'", mod.error, part);
    sl_lua_vm_free(vm);
}

static void
test_module_loading(void **state) {
    expect_load_error("local x = (\n", "t.lua:2:");
    expect_load_error("return 1", "t.lua: the script must return a table");
    expect_load_error("return {on_reqest = function() end}",
                      "unknown phase 'on_reqest'");
    expect_load_error("return {on_chunk = 1}", "'on_chunk' must be a function");
    expect_load_error("\n\nerror('bad')", "t.lua:3: bad");
    sl_lua_vm_t *vm = sl_lua_vm_new(NULL);
    sl_lua_script_t s =
        script_of("local M = {}\nfunction M.on_request() end\nM.helper = 1\n"
                  "return M");
    sl_lua_mod_t mod;
    assert_int_equal(sl_lua_vm_load(vm, &s, &mod), 0);
    assert_int_equal(mod.loaded, 1);
    assert_int_not_equal(mod.on_request, LUA_NOREF);
    assert_int_equal(mod.on_chunk, LUA_NOREF);
    sl_lua_vm_free(vm);
}

/* ---- finding values in JSON text (jtext.c) ---- */

static const char *
member_of(const char *s, const char *key, int *escaped) {
    return sl_lua_jtext_member(s, s + strlen(s), key, strlen(key), escaped);
}

static void
test_jtext_member_finds_a_key_after_values_of_every_kind(void **state) {
    (void)state;
    const char *s = " { \"a\" : \"x\\\"}\\\\\" , \"b\":[1,{\"c\":\"]\"}],"
                    "\"n\":-1.5e3,\"t\":true,\"o\":{\"x\":{}},\n"
                    "\"content\" :\t\"hit\" }";
    int esc = 0;
    const char *v = member_of(s, "content", &esc);
    assert_non_null(v);
    assert_memory_equal(v, "\"hit\"", 5);
    assert_int_equal(esc, 0);
    assert_ptr_equal(sl_lua_jtext_skip(v, s + strlen(s)), v + 5);
    /* The key must be a key: a string value with its text does not count,
     * nor does a key of a nested object. */
    assert_null(member_of("{\"a\":\"c\",\"o\":{\"c\":1}}", "c", NULL));
    assert_null(member_of("[\"c\",1]", "c", NULL));
    assert_null(member_of("{\"c\" 1}", "c", NULL));
}

static void
test_jtext_member_tells_about_keys_written_with_escapes(void **state) {
    (void)state;
    int esc = 0;
    /* "\u0063" is "c": a byte compare cannot see it, so the caller is told
     * to ask a decoder instead. */
    assert_null(member_of("{\"\\u0063\":1}", "c", &esc));
    assert_int_equal(esc, 1);
    esc = 0;
    assert_non_null(member_of("{\"c\":\"\\n\"}", "c", &esc));
    assert_int_equal(esc, 0);
}

static void
test_jtext_skip_refuses_what_is_not_a_whole_value(void **state) {
    (void)state;
    static const char *const bad[] = {
        "\"open", "\"esc\\\"", "[1,2", "{\"a\":[1}", "[{]}", "}", ",", "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_null(sl_lua_jtext_skip(bad[i], bad[i] + strlen(bad[i])));
    const char *ok = "[{\"a\":[\"]\",{}]},\"x\"] tail";
    assert_ptr_equal(sl_lua_jtext_skip(ok, ok + strlen(ok)), ok + 20);
    /* Deeper than 64 levels is refused, not followed. */
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    assert_null(sl_lua_jtext_skip(deep, deep + 200));
}

/* The span sl_lua_jtext_prompt finds in s, as a string ("" for -1). */
static const char *
prompt_of(const char *s, char *out, size_t cap) {
    const char *v, *e;
    if (sl_lua_jtext_prompt(s, strlen(s), &v, &e) != 0)
        return "";
    snprintf(out, cap, "%.*s", (int)(e - v), v);
    return out;
}

static void
test_jtext_prompt_is_the_last_user_content_or_unsure(void **state) {
    (void)state;
    char b[200];
    assert_string_equal(
        prompt_of("{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                  "\"content\":\"a\"},{\"content\":[{\"t\":1}], \"role\" : "
                  "\"user\"},{\"role\":\"assistant\",\"content\":\"z\"}]}",
                  b, sizeof(b)),
        "[{\"t\":1}]");
    assert_string_equal(prompt_of(" { \"messages\" : [ { \"role\" : \"user\" "
                                  ", \"content\" : \"x\\\"y\" } ] } ",
                                  b, sizeof(b)),
                        "\"x\\\"y\"");
    /* The first of repeated keys counts, as in cJSON. */
    assert_string_equal(
        prompt_of("{\"messages\":[{\"role\":\"user\",\"content\":\"1\","
                  "\"content\":\"2\"}]}",
                  b, sizeof(b)),
        "\"1\"");
    /* What a byte walk cannot be sure of is left to the decoder. */
    static const char *const unsure[] = {
        "{\"messages\":[{\"role\":\"\\u0075ser\",\"content\":\"x\"}]}",
        "{\"messages\":[{\"role\":\"user\",\"\\u0063ontent\":\"x\"}]}",
        "{\"\\u006dessages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
        "{\"messages\":[{\"role\":\"user\"}]}",
        "{\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",}]}",
        "{\"messages\":[\"user\"]}",
        "{\"messages\":[]}",
        "{\"messages\":{\"role\":\"user\",\"content\":\"x\"}}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}",
    };
    for (size_t i = 0; i < sizeof(unsure) / sizeof(unsure[0]); i++)
        assert_string_equal(prompt_of(unsure[i], b, sizeof(b)), "");
}

static void
test_jtext_answer_is_the_first_choice_message_content(void **state) {
    (void)state;
    const char *s = "{\"id\":\"x\",\"choices\":[{\"index\":0,\"message\":"
                    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":"
                    "[]}},{\"message\":{\"content\":\"second\"}}]}";
    const char *v, *e;
    assert_int_equal(sl_lua_jtext_answer(s, strlen(s), &v, &e), 0);
    assert_int_equal(e - v, 4);
    assert_memory_equal(v, "null", 4);
    const char *none = "{\"choices\":[],\"content\":\"top\"}";
    assert_int_equal(sl_lua_jtext_answer(none, strlen(none), &v, &e), -1);
    const char *err = "{\"error\":{\"message\":{\"content\":\"no\"}}}";
    assert_int_equal(sl_lua_jtext_answer(err, strlen(err), &v, &e), -1);
}

static void
test_json_quote_escapes_as_the_encoder_does(void **state) {
    (void)state;
    char in[130], out[1024], want[1024];
    size_t n = 0, w = 0;
    want[w++] = '"';
    for (int c = 1; c < 128; c++) {
        in[n++] = (char)c;
        if (c == '"' || c == '\\') {
            w += (size_t)snprintf(want + w, sizeof(want) - w, "\\%c", c);
        } else if (c == '\n' || c == '\r' || c == '\t' || c == '\b' ||
                   c == '\f') {
            const char *e = c == '\n'   ? "\\n"
                            : c == '\r' ? "\\r"
                            : c == '\t' ? "\\t"
                            : c == '\b' ? "\\b"
                                        : "\\f";
            w += (size_t)snprintf(want + w, sizeof(want) - w, "%s", e);
        } else if (c < 0x20) {
            w += (size_t)snprintf(want + w, sizeof(want) - w, "\\u%04x", c);
        } else {
            want[w++] = (char)c;
        }
    }
    want[w++] = '"';
    assert_int_equal(sl_lua_json_quoted_len(in, n), w);
    assert_int_equal(sl_lua_json_quote(out, in, n), w);
    assert_memory_equal(out, want, w);
    /* The first byte to escape is found in every lane of a word. */
    char text[40];
    for (size_t at = 0; at < sizeof(text); at++) {
        memset(text, 'a', sizeof(text));
        text[at] = "\"\\\x01\x1f"[at % 4];
        assert_int_equal(sl_lua_json_plain(text, sizeof(text)), at);
        assert_int_equal(sl_lua_json_plain(text, at), at);
    }
    assert_int_equal(sl_lua_json_plain("\x7f\xc3\xa9 ok", 6), 6);
}

int
main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sandbox_offers_no_way_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_load_takes_text_only_in_the_callers_environment, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_shared_tables_are_read_only, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_instruction_limit_cannot_be_caught,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_limit_cannot_be_caught,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_stray_yield_is_an_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_request_functions_refuse_the_load_phase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_decode_and_encode_values,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_errors_say_where, setup,
                                        teardown),
        cmocka_unit_test(test_template_compile_and_errors),
        cmocka_unit_test(test_prompts_load_reports_paths),
        cmocka_unit_test(test_render_fills_variables_from_config_prompts),
        cmocka_unit_test(test_module_loading),
        cmocka_unit_test(
            test_jtext_member_finds_a_key_after_values_of_every_kind),
        cmocka_unit_test(
            test_jtext_member_tells_about_keys_written_with_escapes),
        cmocka_unit_test(test_jtext_skip_refuses_what_is_not_a_whole_value),
        cmocka_unit_test(test_jtext_prompt_is_the_last_user_content_or_unsure),
        cmocka_unit_test(test_jtext_answer_is_the_first_choice_message_content),
        cmocka_unit_test(test_json_quote_escapes_as_the_encoder_does),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
