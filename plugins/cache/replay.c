/* Requests and answers as the cache sees them (replay.h). Canonical
 * requests sort object keys at every level so that two clients sending
 * the same request with keys in another order share an entry; fields that
 * only shape the transport (stream, stream_options, user, metadata) are
 * dropped, so a streamed and a plain request share one too. */
#define _POSIX_C_SOURCE 200809L
#include "replay.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- canonical requests ---- */

static const char *const transport_only[] = {"stream", "stream_options",
                                             "user", "metadata", "store",
                                             "service_tier", NULL};

static int
cmp_items(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(x->string, y->string);
}

/* Sorts the keys of every object under node, in place. */
static int
sort_keys(cJSON *node)
{
    cJSON *it;
    size_t n = 0;
    for (it = node->child; it != NULL; it = it->next) {
        if ((cJSON_IsObject(it) || cJSON_IsArray(it)) && sort_keys(it) != 0)
            return -1;
        n++;
    }
    if (!cJSON_IsObject(node) || n < 2)
        return 0;
    cJSON **v = malloc(n * sizeof(*v));
    if (v == NULL)
        return -1;
    n = 0;
    for (it = node->child; it != NULL; it = it->next)
        v[n++] = it;
    qsort(v, n, sizeof(*v), cmp_items);
    for (size_t i = 0; i < n; i++) {
        v[i]->prev = i > 0 ? v[i - 1] : v[n - 1]; /* cJSON: head->prev is
                                                     the tail */
        v[i]->next = i + 1 < n ? v[i + 1] : NULL;
    }
    node->child = v[0];
    free(v);
    return 0;
}

int
cr_request_parse(const char *json, size_t len, const char *model,
                 cr_request_t *out)
{
    memset(out, 0, sizeof(*out));
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return -1;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "temperature");
    out->temperature_set = cJSON_IsNumber(t) && t->valuedouble > 0;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    out->include_usage =
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    for (size_t i = 0; transport_only[i] != NULL; i++)
        cJSON_DeleteItemFromObjectCaseSensitive(root, transport_only[i]);
    if (model != NULL) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, "model");
        cJSON_AddStringToObject(root, "model", model);
    }
    if (sort_keys(root) == 0)
        out->canonical = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out->canonical != NULL ? 0 : -1;
}

void
cr_request_free(cr_request_t *r)
{
    free(r->canonical);
    r->canonical = NULL;
}

int
cr_answer_ok(const char *json, size_t len)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    int ok = cJSON_IsObject(root) &&
             cJSON_GetObjectItemCaseSensitive(root, "error") == NULL &&
             cJSON_IsArray(choices) && cJSON_GetArraySize(choices) > 0;
    const cJSON *c, *list = ok ? choices : NULL;
    cJSON_ArrayForEach(c, list)
    {
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(c, "finish_reason");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(c, "message");
        if (!cJSON_IsString(fr) || !cJSON_IsObject(msg))
            ok = 0;
    }
    cJSON_Delete(root);
    return ok;
}

/* ---- assembling a stream ---- */

#define CR_MAX_CHOICES 16

typedef struct {
    int seen;
    char *content; /* malloc'd, NUL-terminated */
    size_t len;
    cJSON *tool_calls; /* array, or NULL */
    char *finish;
} cr_choice_t;

struct cr_asm {
    size_t max, bytes;
    int failed;
    cJSON *head; /* id, created, model, system_fingerprint */
    cJSON *usage;
    cr_choice_t c[CR_MAX_CHOICES];
};

cr_asm_t *
cr_asm_new(size_t max_bytes)
{
    cr_asm_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->max = max_bytes;
    a->head = cJSON_CreateObject();
    if (a->head == NULL) {
        free(a);
        return NULL;
    }
    return a;
}

void
cr_asm_free(cr_asm_t *a)
{
    if (a == NULL)
        return;
    cJSON_Delete(a->head);
    cJSON_Delete(a->usage);
    for (int i = 0; i < CR_MAX_CHOICES; i++) {
        free(a->c[i].content);
        free(a->c[i].finish);
        cJSON_Delete(a->c[i].tool_calls);
    }
    free(a);
}

static int
append(cr_choice_t *c, const char *s)
{
    size_t n = strlen(s);
    char *p = realloc(c->content, c->len + n + 1);
    if (p == NULL)
        return -1;
    memcpy(p + c->len, s, n + 1);
    c->content = p;
    c->len += n;
    return 0;
}

/* Tool-call fragments: the first names the call, later ones add to its
 * arguments. */
static int
merge_tool_calls(cr_choice_t *c, const cJSON *calls)
{
    const cJSON *tc;
    if (c->tool_calls == NULL && (c->tool_calls = cJSON_CreateArray()) == NULL)
        return -1;
    cJSON_ArrayForEach(tc, calls)
    {
        const cJSON *idx = cJSON_GetObjectItemCaseSensitive(tc, "index");
        int i = cJSON_IsNumber(idx) ? idx->valueint : 0;
        if (i < 0 || i > 64)
            return -1;
        while (cJSON_GetArraySize(c->tool_calls) <= i) {
            cJSON *o = cJSON_CreateObject();
            cJSON *f = cJSON_CreateObject();
            if (o == NULL || f == NULL ||
                !cJSON_AddStringToObject(o, "type", "function") ||
                !cJSON_AddStringToObject(f, "name", "") ||
                !cJSON_AddStringToObject(f, "arguments", "")) {
                cJSON_Delete(o);
                cJSON_Delete(f);
                return -1;
            }
            cJSON_AddItemToObject(o, "function", f);
            cJSON_AddItemToArray(c->tool_calls, o);
        }
        cJSON *dst = cJSON_GetArrayItem(c->tool_calls, i);
        cJSON *df = cJSON_GetObjectItemCaseSensitive(dst, "function");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(tc, "id");
        if (cJSON_IsString(id)) {
            cJSON_DeleteItemFromObjectCaseSensitive(dst, "id");
            cJSON_AddStringToObject(dst, "id", id->valuestring);
        }
        const cJSON *sf = cJSON_GetObjectItemCaseSensitive(tc, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(sf, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(sf, "arguments");
        if (cJSON_IsString(name) && name->valuestring[0] != '\0')
            cJSON_SetValuestring(
                cJSON_GetObjectItemCaseSensitive(df, "name"),
                name->valuestring);
        if (cJSON_IsString(args)) {
            cJSON *da = cJSON_GetObjectItemCaseSensitive(df, "arguments");
            size_t n1 = strlen(da->valuestring), n2 = strlen(args->valuestring);
            char *joined = malloc(n1 + n2 + 1);
            if (joined == NULL)
                return -1;
            memcpy(joined, da->valuestring, n1);
            memcpy(joined + n1, args->valuestring, n2 + 1);
            cJSON_SetValuestring(da, joined);
            free(joined);
        }
    }
    return 0;
}

int
cr_asm_event(cr_asm_t *a, const char *json, size_t len)
{
    if (a->failed)
        return -1;
    a->bytes += len;
    cJSON *ev = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(ev) || a->bytes > a->max ||
        cJSON_GetObjectItemCaseSensitive(ev, "error") != NULL)
        goto fail;
    static const char *const head_keys[] = {"id", "created", "model",
                                            "system_fingerprint", NULL};
    for (size_t i = 0; head_keys[i] != NULL; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(ev, head_keys[i]);
        if (v != NULL && !cJSON_IsNull(v) &&
            cJSON_GetObjectItemCaseSensitive(a->head, head_keys[i]) == NULL)
            cJSON_AddItemToObject(a->head, head_keys[i],
                                  cJSON_Duplicate(v, 1));
    }
    cJSON *usage = cJSON_GetObjectItemCaseSensitive(ev, "usage");
    if (cJSON_IsObject(usage)) {
        cJSON_Delete(a->usage);
        a->usage = cJSON_DetachItemViaPointer(ev, usage);
    }
    const cJSON *ch;
    cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(ev, "choices"))
    {
        const cJSON *idx = cJSON_GetObjectItemCaseSensitive(ch, "index");
        int i = cJSON_IsNumber(idx) ? idx->valueint : 0;
        if (i < 0 || i >= CR_MAX_CHOICES)
            goto fail;
        cr_choice_t *c = &a->c[i];
        c->seen = 1;
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(ch, "delta");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(d, "content");
        if (cJSON_IsString(content) && append(c, content->valuestring) != 0)
            goto fail;
        const cJSON *calls = cJSON_GetObjectItemCaseSensitive(d, "tool_calls");
        if (cJSON_IsArray(calls) && merge_tool_calls(c, calls) != 0)
            goto fail;
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(ch, "finish_reason");
        if (cJSON_IsString(fr)) {
            free(c->finish);
            c->finish = strdup(fr->valuestring);
            if (c->finish == NULL)
                goto fail;
        }
    }
    cJSON_Delete(ev);
    return 0;
fail:
    cJSON_Delete(ev);
    a->failed = 1;
    return -1;
}

char *
cr_asm_finish(cr_asm_t *a, size_t *len)
{
    if (a->failed || !a->c[0].seen)
        return NULL;
    cJSON *root = cJSON_Duplicate(a->head, 1);
    if (root == NULL)
        return NULL;
    cJSON_DeleteItemFromObjectCaseSensitive(root, "object");
    cJSON_AddStringToObject(root, "object", "chat.completion");
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    char *out = NULL;
    for (int i = 0; i < CR_MAX_CHOICES && a->c[i].seen; i++) {
        cr_choice_t *c = &a->c[i];
        if (c->finish == NULL)
            goto done; /* a choice that never finished: a cut stream */
        cJSON *o = cJSON_CreateObject(), *m = cJSON_CreateObject();
        cJSON_AddItemToArray(choices, o);
        cJSON_AddNumberToObject(o, "index", i);
        cJSON_AddItemToObject(o, "message", m);
        cJSON_AddStringToObject(m, "role", "assistant");
        if (c->content != NULL || c->tool_calls == NULL)
            cJSON_AddStringToObject(m, "content",
                                    c->content ? c->content : "");
        else
            cJSON_AddNullToObject(m, "content");
        if (c->tool_calls != NULL)
            cJSON_AddItemToObject(m, "tool_calls",
                                  cJSON_Duplicate(c->tool_calls, 1));
        cJSON_AddStringToObject(o, "finish_reason", c->finish);
    }
    if (a->usage != NULL)
        cJSON_AddItemToObject(root, "usage", cJSON_Duplicate(a->usage, 1));
    out = cJSON_PrintUnformatted(root);
    if (out != NULL)
        *len = strlen(out);
done:
    cJSON_Delete(root);
    return out;
}

/* ---- replaying as a stream ---- */

typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} buf_t;

static void
put(buf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 4096) + n;
        char *p = realloc(b->s, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

/* One "data: {...}\n\n" event: the chunk head plus choices (consumed). */
static void
event(buf_t *b, const cJSON *head, cJSON *choices, cJSON *usage)
{
    cJSON *ev = cJSON_Duplicate(head, 1);
    if (ev == NULL) {
        b->oom = 1;
        cJSON_Delete(choices);
        cJSON_Delete(usage);
        return;
    }
    cJSON_AddItemToObject(ev, "choices", choices);
    if (usage != NULL)
        cJSON_AddItemToObject(ev, "usage", usage);
    char *s = cJSON_PrintUnformatted(ev);
    cJSON_Delete(ev);
    if (s == NULL) {
        b->oom = 1;
        return;
    }
    put(b, "data: ", 6);
    put(b, s, strlen(s));
    put(b, "\n\n", 2);
    free(s);
}

static cJSON *
one_choice(int index, cJSON *delta, const cJSON *finish)
{
    cJSON *arr = cJSON_CreateArray(), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(arr, c);
    cJSON_AddNumberToObject(c, "index", index);
    cJSON_AddItemToObject(c, "delta", delta);
    if (finish != NULL)
        cJSON_AddItemToObject(c, "finish_reason", cJSON_Duplicate(finish, 1));
    else
        cJSON_AddNullToObject(c, "finish_reason");
    return arr;
}

/* The length of the next piece of text: a word and the space after it,
 * never cutting a UTF-8 sequence. */
static size_t
next_piece(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && s[i] == ' ')
        i++;
    while (i < n && s[i] != ' ' && i < 64)
        i++;
    while (i < n && ((unsigned char)s[i] & 0xc0) == 0x80)
        i++;
    return i > 0 ? i : (n > 0 ? 1 : 0);
}

char *
cr_sse_from_completion(const char *json, size_t len, int include_usage,
                       size_t *outlen)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    if (!cJSON_IsArray(choices)) {
        cJSON_Delete(root);
        return NULL;
    }
    cJSON *head = cJSON_CreateObject();
    static const char *const keys[] = {"id", "created", "model",
                                       "system_fingerprint", NULL};
    for (size_t i = 0; keys[i] != NULL; i++) {
        if (i == 2)
            cJSON_AddStringToObject(head, "object", "chat.completion.chunk");
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, keys[i]);
        if (v != NULL)
            cJSON_AddItemToObject(head, keys[i], cJSON_Duplicate(v, 1));
    }
    buf_t b = {0};
    const cJSON *c;
    int index = 0;
    cJSON_ArrayForEach(c, choices)
    {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(c, "message");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(c, "finish_reason");
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "role", "assistant");
        cJSON_AddStringToObject(d, "content", "");
        event(&b, head, one_choice(index, d, NULL), NULL);
        if (cJSON_IsString(content)) {
            const char *s = content->valuestring;
            size_t n = strlen(s);
            while (n > 0) {
                size_t k = next_piece(s, n);
                char *piece = strndup(s, k);
                d = cJSON_CreateObject();
                cJSON_AddStringToObject(d, "content", piece ? piece : "");
                free(piece);
                event(&b, head, one_choice(index, d, NULL), NULL);
                s += k;
                n -= k;
            }
        }
        if (cJSON_IsArray(calls)) {
            cJSON *tc = cJSON_Duplicate(calls, 1);
            cJSON *t;
            int i = 0;
            cJSON_ArrayForEach(t, tc)
            {
                cJSON_DeleteItemFromObjectCaseSensitive(t, "index");
                cJSON_AddNumberToObject(t, "index", i++);
            }
            d = cJSON_CreateObject();
            cJSON_AddItemToObject(d, "tool_calls", tc);
            event(&b, head, one_choice(index, d, NULL), NULL);
        }
        event(&b, head, one_choice(index, cJSON_CreateObject(), fr), NULL);
        index++;
    }
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (include_usage && cJSON_IsObject(usage))
        event(&b, head, cJSON_CreateArray(), cJSON_Duplicate(usage, 1));
    put(&b, "data: [DONE]\n\n", 14);
    cJSON_Delete(head);
    cJSON_Delete(root);
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    *outlen = b.len;
    return b.s;
}
