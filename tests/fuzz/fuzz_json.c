/* Fuzzes the in-place JSON readers against cJSON: whatever the scanners
 * accept, cJSON must read too, with the same facts (a model, the messages'
 * shape, stream flags, usage counters). What they refuse goes to cJSON in
 * the gateway, so refusing is always safe; disagreeing is not. Any
 * difference abort()s. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat_scan.h"

static void
check_chat(const char *d, size_t n)
{
    sl_chat_facts_t a, b;
    if (sl_chat_scan(d, n, &a) != 0)
        return;
    cJSON *j = cJSON_ParseWithLength(d, n);
    if (!cJSON_IsObject(j))
        abort();
    sl_chat_facts_of(j, &b);
    if (a.model != b.model || a.messages != b.messages ||
        a.nmessages != b.nmessages || a.bad_message != b.bad_message ||
        a.stream != b.stream || a.stream_options != b.stream_options ||
        a.include_usage != b.include_usage || a.input != b.input ||
        a.ninput != b.ninput)
        abort();
    if (a.close == NULL || a.close < d || a.close >= d + n || *a.close != '}')
        abort();
    if (a.model == SL_JSON_STRING) {
        if (a.model_at < d || a.model_at + a.model_at_len > d + n ||
            a.model_at[0] != '"' || a.model_at[a.model_at_len - 1] != '"')
            abort();
        if (!a.model_escaped &&
            (a.model_len != b.model_len ||
             memcmp(a.model_str, b.model_str, a.model_len) != 0))
            abort();
        /* An escaped one is decoded by cJSON from its own text. */
        cJSON *s = cJSON_ParseWithLength(a.model_at, a.model_at_len);
        if (!cJSON_IsString(s) || strcmp(s->valuestring, b.model_str) != 0)
            abort();
        cJSON_Delete(s);
    }
    cJSON_Delete(j);
}

static void
check_usage(const char *d, size_t n)
{
    sl_usage_facts_t a, b;
    if (sl_usage_scan(d, n, &a) != 0)
        return;
    cJSON *j = cJSON_ParseWithLength(d, n);
    if (!cJSON_IsObject(j))
        abort();
    sl_usage_of(j, &b);
    if (a.usage != b.usage || a.has != b.has ||
        a.choices_empty != b.choices_empty || a.prompt != b.prompt ||
        a.completion != b.completion || a.total != b.total ||
        a.cached != b.cached || a.reasoning != b.reasoning)
        abort();
    cJSON_Delete(j);
}

/* Any value the scanner takes whole, cJSON takes. */
static void
check_value(const char *d, size_t n)
{
    sl_jscan_t s;
    sl_jval_t v;
    sl_jscan_init(&s, d, n);
    if (sl_jscan_value(&s, &v) != 0 || sl_jscan_finish(&s) != 0)
        return;
    cJSON *j = cJSON_ParseWithLength(d, n);
    if (j == NULL)
        abort();
    if (v.type == SL_JSON_NUMBER) {
        long a, b = (long)0;
        if (sl_json_long(&v, &a) != 0)
            abort();
        double x = j->valuedouble;
        b = x >= 9.2e18 ? a : x <= -9.2e18 ? a : (long)x;
        if (a != b)
            abort();
    }
    cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy the exact size: reads past the end are caught. */
    char *d = malloc(size ? size : 1);
    if (d == NULL)
        return 0;
    memcpy(d, data, size);
    check_chat(d, size);
    check_usage(d, size);
    check_value(d, size);
    free(d);
    return 0;
}
