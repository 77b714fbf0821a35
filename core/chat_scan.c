/* The few members of a request and an answer the proxy needs, read in
 * place, and the same read from a cJSON tree for everything else. */
#include "chat_scan.h"

#include <limits.h>
#include <string.h>

static void
facts_init(sl_chat_facts_t *f)
{
    memset(f, 0, sizeof(*f));
    f->bad_message = -1;
}

/* One message of "messages": an object with a string "role" or not. */
static int
scan_message(sl_jscan_t *s, int *ok)
{
    const char *k;
    size_t kl, n = 0;
    int rc, role = SL_JSON_NONE;
    sl_jval_t v;
    *ok = 0;
    if (sl_jscan_peek(s) != SL_JSON_OBJECT)
        return sl_jscan_value(s, NULL);
    if (sl_jscan_enter(s) != 0)
        return -1;
    while ((rc = sl_jscan_member(s, &n, &k, &kl)) > 0) {
        if (sl_jscan_value(s, &v) != 0)
            return -1;
        if (role == SL_JSON_NONE && sl_json_key_is(k, kl, "role"))
            role = v.type;
    }
    *ok = role == SL_JSON_STRING;
    return rc;
}

static int
scan_messages(sl_jscan_t *s, sl_chat_facts_t *f)
{
    size_t n = 0;
    int rc, ok;
    f->messages = sl_jscan_peek(s);
    if (f->messages != SL_JSON_ARRAY)
        return sl_jscan_value(s, NULL);
    if (sl_jscan_enter(s) != 0)
        return -1;
    while ((rc = sl_jscan_element(s, &n)) > 0) {
        if (scan_message(s, &ok) != 0)
            return -1;
        if (!ok && f->bad_message < 0)
            f->bad_message = (long)n - 1;
    }
    f->nmessages = n;
    return rc;
}

static int
scan_stream_options(sl_jscan_t *s, sl_chat_facts_t *f)
{
    const char *k;
    size_t kl, n = 0;
    int rc, seen = 0;
    sl_jval_t v;
    f->stream_options = sl_jscan_peek(s);
    if (f->stream_options != SL_JSON_OBJECT)
        return sl_jscan_value(s, NULL);
    if (sl_jscan_enter(s) != 0)
        return -1;
    while ((rc = sl_jscan_member(s, &n, &k, &kl)) > 0) {
        if (sl_jscan_value(s, &v) != 0)
            return -1;
        if (!seen && sl_json_key_is(k, kl, "include_usage")) {
            seen = 1;
            f->include_usage = v.type == SL_JSON_TRUE;
        }
    }
    return rc;
}

static int
scan_input(sl_jscan_t *s, sl_chat_facts_t *f)
{
    size_t n = 0;
    int rc;
    f->input = sl_jscan_peek(s);
    if (f->input != SL_JSON_ARRAY)
        return sl_jscan_value(s, NULL);
    if (sl_jscan_enter(s) != 0)
        return -1;
    while ((rc = sl_jscan_element(s, &n)) > 0)
        if (sl_jscan_value(s, NULL) != 0)
            return -1;
    f->ninput = n;
    return rc;
}

static int
scan_type(sl_jscan_t *s, int *type)
{
    sl_jval_t v;
    if (sl_jscan_value(s, &v) != 0)
        return -1;
    *type = v.type;
    return 0;
}

static int
scan_model(sl_jscan_t *s, sl_chat_facts_t *f)
{
    sl_jval_t v;
    if (sl_jscan_value(s, &v) != 0)
        return -1;
    f->model = v.type;
    if (v.type != SL_JSON_STRING)
        return 0;
    f->model_at = v.start;
    f->model_at_len = v.len;
    f->model_escaped = v.escaped;
    if (!v.escaped) {
        f->model_str = v.start + 1;
        f->model_len = v.len - 2;
    }
    return 0;
}

int
sl_chat_scan(const char *body, size_t len, sl_chat_facts_t *f)
{
    sl_jscan_t s;
    const char *k;
    size_t kl, n = 0;
    int rc;
    facts_init(f);
    sl_jscan_init(&s, body, len);
    if (sl_jscan_peek(&s) != SL_JSON_OBJECT || sl_jscan_enter(&s) != 0)
        return -1;
    while ((rc = sl_jscan_member(&s, &n, &k, &kl)) > 0) {
        if (f->model == SL_JSON_NONE && sl_json_key_is(k, kl, "model"))
            rc = scan_model(&s, f);
        else if (f->messages == SL_JSON_NONE &&
                 sl_json_key_is(k, kl, "messages"))
            rc = scan_messages(&s, f);
        else if (f->stream == SL_JSON_NONE && sl_json_key_is(k, kl, "stream"))
            rc = scan_type(&s, &f->stream);
        else if (f->stream_options == SL_JSON_NONE &&
                 sl_json_key_is(k, kl, "stream_options"))
            rc = scan_stream_options(&s, f);
        else if (f->input == SL_JSON_NONE && sl_json_key_is(k, kl, "input"))
            rc = scan_input(&s, f);
        else
            rc = sl_jscan_value(&s, NULL);
        if (rc != 0)
            return -1;
    }
    if (rc < 0)
        return -1;
    f->close = s.p - 1;
    return sl_jscan_finish(&s);
}

static int
type_of(const cJSON *j)
{
    if (j == NULL)
        return SL_JSON_NONE;
    if (cJSON_IsString(j))
        return SL_JSON_STRING;
    if (cJSON_IsNumber(j))
        return SL_JSON_NUMBER;
    if (cJSON_IsObject(j))
        return SL_JSON_OBJECT;
    if (cJSON_IsArray(j))
        return SL_JSON_ARRAY;
    if (cJSON_IsTrue(j))
        return SL_JSON_TRUE;
    if (cJSON_IsFalse(j))
        return SL_JSON_FALSE;
    return SL_JSON_NULL;
}

void
sl_chat_facts_of(const cJSON *json, sl_chat_facts_t *f)
{
    facts_init(f);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(json, "model");
    f->model = type_of(model);
    if (f->model == SL_JSON_STRING) {
        f->model_str = model->valuestring;
        f->model_len = strlen(model->valuestring);
    }
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(json, "messages");
    f->messages = type_of(msgs);
    if (f->messages == SL_JSON_ARRAY) {
        const cJSON *m;
        long i = 0;
        cJSON_ArrayForEach(m, msgs)
        {
            const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
            if ((!cJSON_IsObject(m) || !cJSON_IsString(role)) &&
                f->bad_message < 0)
                f->bad_message = i;
            i++;
        }
        f->nmessages = (size_t)i;
    }
    f->stream = type_of(cJSON_GetObjectItemCaseSensitive(json, "stream"));
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(json, "stream_options");
    f->stream_options = type_of(so);
    if (f->stream_options == SL_JSON_OBJECT)
        f->include_usage = cJSON_IsTrue(
            cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(json, "input");
    f->input = type_of(input);
    if (f->input == SL_JSON_ARRAY)
        f->ninput = (size_t)cJSON_GetArraySize(input);
}

/* ---- answers ---- */

static void
usage_init(sl_usage_facts_t *u)
{
    u->usage = u->choices_empty = u->has = 0;
    u->prompt = u->completion = u->total = u->cached = u->reasoning = -1;
}

static int
scan_counter(sl_jscan_t *s, long *out, int *has, int bit)
{
    sl_jval_t v;
    if (sl_jscan_value(s, &v) != 0)
        return -1;
    if (v.type != SL_JSON_NUMBER)
        return 0;
    *has |= bit;
    return sl_json_long(&v, out);
}

/* A *_tokens_details object: its first `name` member, when a number. */
static int
scan_detail(sl_jscan_t *s, const char *name, long *out, int *seen,
            int *has, int bit)
{
    const char *k;
    size_t kl, n = 0;
    int rc, found = 0;
    if (*seen)
        return sl_jscan_value(s, NULL);
    *seen = 1;
    if (sl_jscan_peek(s) != SL_JSON_OBJECT)
        return sl_jscan_value(s, NULL);
    if (sl_jscan_enter(s) != 0)
        return -1;
    while ((rc = sl_jscan_member(s, &n, &k, &kl)) > 0) {
        sl_jval_t v;
        if (sl_jscan_value(s, &v) != 0)
            return -1;
        if (!found && sl_json_key_is(k, kl, name)) {
            found = 1;
            if (v.type == SL_JSON_NUMBER) {
                *has |= bit;
                if (sl_json_long(&v, out) != 0)
                    return -1;
            }
        }
    }
    return rc;
}

static int
scan_usage(sl_jscan_t *s, sl_usage_facts_t *u)
{
    const char *k;
    size_t kl, n = 0;
    int rc, seen_p = 0, seen_c = 0, seen_t = 0, seen_pd = 0, seen_cd = 0;
    if (sl_jscan_peek(s) != SL_JSON_OBJECT)
        return sl_jscan_value(s, NULL);
    u->usage = 1;
    if (sl_jscan_enter(s) != 0)
        return -1;
    while ((rc = sl_jscan_member(s, &n, &k, &kl)) > 0) {
        long scratch = 0, *to = &scratch;
        int bit = 0;
        /* Only the first of a repeated key counts (as in cJSON): later
         * ones are read into scratch. */
        if (sl_json_key_is(k, kl, "prompt_tokens") && !seen_p++)
            to = &u->prompt, bit = SL_USAGE_PROMPT;
        else if (sl_json_key_is(k, kl, "completion_tokens") && !seen_c++)
            to = &u->completion, bit = SL_USAGE_COMPLETION;
        else if (sl_json_key_is(k, kl, "total_tokens") && !seen_t++)
            to = &u->total, bit = SL_USAGE_TOTAL;
        else if (sl_json_key_is(k, kl, "prompt_tokens_details")) {
            if (scan_detail(s, "cached_tokens", &u->cached, &seen_pd,
                            &u->has, SL_USAGE_CACHED) != 0)
                return -1;
            continue;
        } else if (sl_json_key_is(k, kl, "completion_tokens_details")) {
            if (scan_detail(s, "reasoning_tokens", &u->reasoning, &seen_cd,
                            &u->has, SL_USAGE_REASONING) != 0)
                return -1;
            continue;
        }
        int ignored = 0;
        if (scan_counter(s, to, bit ? &u->has : &ignored, bit) != 0)
            return -1;
    }
    return rc;
}

int
sl_usage_scan(const char *text, size_t len, sl_usage_facts_t *u)
{
    sl_jscan_t s;
    const char *k;
    size_t kl, n = 0;
    int rc, seen_usage = 0, seen_choices = 0;
    usage_init(u);
    sl_jscan_init(&s, text, len);
    if (sl_jscan_peek(&s) != SL_JSON_OBJECT || sl_jscan_enter(&s) != 0)
        return -1;
    while ((rc = sl_jscan_member(&s, &n, &k, &kl)) > 0) {
        if (!seen_usage && sl_json_key_is(k, kl, "usage")) {
            seen_usage = 1;
            rc = scan_usage(&s, u);
        } else if (!seen_choices && sl_json_key_is(k, kl, "choices")) {
            seen_choices = 1;
            sl_jval_t v;
            rc = sl_jscan_value(&s, &v);
            if (rc == 0 && v.type == SL_JSON_ARRAY) {
                /* "[" white space "]" is the only empty array text */
                sl_jscan_t in;
                sl_jscan_init(&in, v.start + 1, v.len - 2);
                u->choices_empty = sl_jscan_peek(&in) < 0;
            }
        } else {
            rc = sl_jscan_value(&s, NULL);
        }
        if (rc != 0)
            return -1;
    }
    if (rc < 0)
        return -1;
    return sl_jscan_finish(&s);
}

static long
counter_of(const cJSON *j, int *has, int bit)
{
    if (!cJSON_IsNumber(j))
        return -1;
    *has |= bit;
    double d = j->valuedouble;
    if (d >= (double)LONG_MAX)
        return LONG_MAX;
    if (d <= (double)LONG_MIN)
        return LONG_MIN;
    return (long)d;
}

void
sl_usage_of(const cJSON *json, sl_usage_facts_t *u)
{
    usage_init(u);
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(json, "usage");
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(json, "choices");
    u->choices_empty =
        cJSON_IsArray(choices) && cJSON_GetArraySize(choices) == 0;
    if (!cJSON_IsObject(usage))
        return;
    u->usage = 1;
    u->prompt =
        counter_of(cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens"),
                   &u->has, SL_USAGE_PROMPT);
    u->completion = counter_of(
        cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens"),
        &u->has, SL_USAGE_COMPLETION);
    u->total =
        counter_of(cJSON_GetObjectItemCaseSensitive(usage, "total_tokens"),
                   &u->has, SL_USAGE_TOTAL);
    const cJSON *d =
        cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens_details");
    u->cached =
        counter_of(cJSON_GetObjectItemCaseSensitive(d, "cached_tokens"),
                   &u->has, SL_USAGE_CACHED);
    d = cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens_details");
    u->reasoning =
        counter_of(cJSON_GetObjectItemCaseSensitive(d, "reasoning_tokens"),
                   &u->has, SL_USAGE_REASONING);
}
