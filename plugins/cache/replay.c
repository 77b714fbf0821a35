/* Requests and answers as the cache sees them (replay.h). Canonical
 * requests sort object keys at every level so that two clients sending
 * the same request with keys in another order share an entry; fields that
 * only shape the transport (stream, stream_options, user, metadata) are
 * dropped, so a streamed and a plain request share one too. */
#define _POSIX_C_SOURCE 200809L
#include "replay.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- canonical requests ----
 *
 * The request comes as the host prints it (compact JSON), so the
 * canonical form is that text with its object members reordered: the
 * scanner below sorts spans of it and copies them, without building a
 * tree. It prints what cJSON would print for the sorted tree (numbers
 * and strings are already in cJSON's form), so keys stay the same. */

#define CR_LIT(s) {s, sizeof(s) - 1}
static const struct {
    const char *s;
    size_t n;
} transport_only[] = {CR_LIT("stream"), CR_LIT("stream_options"),
                      CR_LIT("user"),   CR_LIT("metadata"),
                      CR_LIT("store"),  CR_LIT("service_tier")};

#define CR_MAX_DEPTH 64

typedef struct {
    const char *p, *end;
    char *out;
    size_t n, cap;
} cr_scan_t;

/* One member of an object being copied: its key (a span of the input,
 * without the quotes) and where its "key":value went in the output. */
typedef struct {
    const char *key;
    size_t klen;
    size_t at, len;
} cr_member_t;

static void
skip_ws(cr_scan_t *s)
{
    while (s->p < s->end &&
           (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

static int
copy_out(cr_scan_t *s, const char *b, size_t n)
{
    if (n > s->cap - s->n)
        return -1; /* cannot happen: the output is never longer */
    memcpy(s->out + s->n, b, n);
    s->n += n;
    return 0;
}

/* Steps over a string at s->p (at its quote). */
static int
skip_string(cr_scan_t *s)
{
    const char *p = s->p + 1;
    for (;;) {
        p = memchr(p, '"', (size_t)(s->end - p));
        if (p == NULL)
            return -1;
        size_t bs = 0; /* an odd run of backslashes escapes it */
        while (p - bs > s->p + 1 && p[-1 - (ptrdiff_t)bs] == '\\')
            bs++;
        if (bs % 2 == 0)
            break;
        p++;
    }
    s->p = p + 1;
    return 0;
}

/* Steps over any value. */
static int
skip_value(cr_scan_t *s)
{
    int depth = 0;
    do {
        skip_ws(s);
        if (s->p >= s->end)
            return -1;
        char c = *s->p;
        if (c == '"') {
            if (skip_string(s) != 0)
                return -1;
        } else if (c == '{' || c == '[') {
            if (++depth > CR_MAX_DEPTH)
                return -1;
            s->p++;
        } else if (c == '}' || c == ']') {
            if (--depth < 0)
                return -1;
            s->p++;
        } else if (c == ',' || c == ':') {
            if (depth == 0)
                return -1;
            s->p++;
        } else {
            while (s->p < s->end && *s->p != ',' && *s->p != '}' &&
                   *s->p != ']' && *s->p != ':' && *s->p != ' ' &&
                   *s->p != '\n' && *s->p != '\r' && *s->p != '\t')
                s->p++;
        }
    } while (depth > 0);
    return 0;
}

static int
key_before(const cr_member_t *x, const cr_member_t *y)
{
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    return c != 0 ? c < 0 : x->klen < y->klen;
}

static int
key_is_n(const char *key, size_t klen, const char *k, size_t n)
{
    return klen == n && memcmp(key, k, n) == 0;
}

/* key_is(key, klen, "literal") */
#define key_is(key, klen, lit) key_is_n(key, klen, lit, sizeof(lit) - 1)

/* The members m[0..n), written back to back from out[base], rewritten
 * in key order with commas between them. */
static int
reorder(cr_scan_t *s, size_t base, cr_member_t *m, size_t n)
{
    for (size_t i = 1; i < n; i++) { /* objects are small: insertion */
        cr_member_t x = m[i];
        size_t j = i;
        for (; j > 0 && key_before(&x, &m[j - 1]); j--)
            m[j] = m[j - 1];
        m[j] = x;
    }
    size_t total = s->n - base + (n > 0 ? n - 1 : 0);
    if (total > s->cap - base)
        return -1;
    char small[1024];
    char *tmp = total <= sizeof(small) ? small : malloc(total);
    if (tmp == NULL)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            tmp[o++] = ',';
        memcpy(tmp + o, s->out + m[i].at, m[i].len);
        o += m[i].len;
    }
    memcpy(s->out + base, tmp, o);
    s->n = base + o;
    if (tmp != small)
        free(tmp);
    return 0;
}

/* The value of member key in the object spanning [p, end), or NULL. */
static const char *
member(const char *p, const char *end, const char *key, const char **vend)
{
    cr_scan_t s = {p + 1, end, NULL, 0, 0};
    for (;;) {
        skip_ws(&s);
        if (s.p >= s.end || *s.p != '"')
            return NULL;
        const char *k = s.p + 1;
        if (skip_string(&s) != 0)
            return NULL;
        size_t klen = (size_t)(s.p - 1 - k);
        skip_ws(&s);
        if (s.p >= s.end || *s.p++ != ':')
            return NULL;
        skip_ws(&s);
        const char *v = s.p;
        if (skip_value(&s) != 0)
            return NULL;
        if (key_is_n(k, klen, key, strlen(key))) {
            *vend = s.p;
            return v;
        }
        skip_ws(&s);
        if (s.p >= s.end || *s.p++ != ',')
            return NULL;
    }
}

/* The JSON string for s as cJSON prints it. Returns its length; writes
 * it when out is not NULL. */
static size_t json_string_n(const char *s, size_t len, char *out);
#define json_string(s, out) json_string_n(s, strlen(s), out)

static int emit_value(cr_scan_t *s, int depth);

/* What the top level of a request needs beside the copy. */
typedef struct {
    const char *model;
    cr_request_t *req;
} cr_top_t;

/* Copies the object at s->p with its members in key order. At the top
 * level (top not NULL) transport-only members are dropped, "model" is
 * replaced, and what the cache decides on is noted. */
static int
emit_object(cr_scan_t *s, int depth, const cr_top_t *top)
{
    cr_member_t local[16], *m = local;
    size_t n = 0, cap = 16;
    int rc = -1, model_seen = 0;
    s->p++; /* '{' */
    if (copy_out(s, "{", 1) != 0)
        return -1;
    size_t base = s->n;
    for (int first = 1;; first = 0) {
        skip_ws(s);
        if (first && s->p < s->end && *s->p == '}') { /* {} */
            s->p++;
            break;
        }
        if (s->p >= s->end || *s->p != '"')
            goto done;
        const char *k = s->p + 1;
        if (skip_string(s) != 0)
            goto done;
        size_t klen = (size_t)(s->p - 1 - k);
        skip_ws(s);
        if (s->p >= s->end || *s->p++ != ':')
            goto done;
        skip_ws(s);
        const char *v = s->p;
        int drop = 0;
        if (top != NULL) {
            for (size_t t = 0;
                 t < sizeof(transport_only) / sizeof(transport_only[0]); t++)
                drop |= key_is_n(k, klen, transport_only[t].s,
                                 transport_only[t].n);
            if (top->model != NULL && !model_seen &&
                key_is(k, klen, "model"))
                drop = model_seen = 1; /* as cJSON deletes one: the first */
        }
        if (n + 1 == cap) { /* one slot spare: the top level's model */
            cr_member_t *g = malloc(2 * cap * sizeof(*g));
            if (g == NULL)
                goto done;
            memcpy(g, m, n * sizeof(*g));
            if (m != local)
                free(m);
            m = g;
            cap *= 2;
        }
        if (drop) {
            if (skip_value(s) != 0)
                goto done;
        } else {
            m[n] = (cr_member_t){k, klen, s->n, 0};
            if (copy_out(s, "\"", 1) != 0 || copy_out(s, k, klen) != 0 ||
                copy_out(s, "\":", 2) != 0 || emit_value(s, depth + 1) != 0)
                goto done;
            m[n].len = s->n - m[n].at;
            n++;
        }
        if (top != NULL && key_is(k, klen, "temperature") &&
            (*v == '-' || (*v >= '0' && *v <= '9')))
            top->req->temperature_set = strtod(v, NULL) > 0;
        const char *iu, *iuend;
        if (top != NULL && key_is(k, klen, "stream_options") && *v == '{' &&
            (iu = member(v, s->p, "include_usage", &iuend)) != NULL)
            top->req->include_usage =
                iuend - iu == 4 && memcmp(iu, "true", 4) == 0;
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            break;
        }
        goto done;
    }
    if (top != NULL && top->model != NULL) { /* as routed, not as asked */
        size_t ml = json_string(top->model, NULL);
        m[n] = (cr_member_t){"model", 5, s->n, 8 + ml};
        if (copy_out(s, "\"model\":", 8) != 0 || ml > s->cap - s->n)
            goto done;
        json_string(top->model, s->out + s->n);
        s->n += ml;
        n++;
    }
    rc = reorder(s, base, m, n) == 0 ? copy_out(s, "}", 1) : -1;
done:
    if (m != local)
        free(m);
    return rc;
}

/* Copies the value at s->p with every object's members sorted by key. */
static int
emit_value(cr_scan_t *s, int depth)
{
    skip_ws(s);
    if (s->p >= s->end || depth > CR_MAX_DEPTH)
        return -1;
    if (*s->p == '{')
        return emit_object(s, depth, NULL);
    if (*s->p == '[') {
        s->p++;
        if (copy_out(s, "[", 1) != 0)
            return -1;
        skip_ws(s);
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            return copy_out(s, "]", 1);
        }
        for (int first = 1;; first = 0) {
            if ((!first && copy_out(s, ",", 1) != 0) ||
                emit_value(s, depth + 1) != 0)
                return -1;
            skip_ws(s);
            if (s->p < s->end && *s->p == ',') {
                s->p++;
                continue;
            }
            if (s->p < s->end && *s->p == ']') {
                s->p++;
                return copy_out(s, "]", 1);
            }
            return -1;
        }
    }
    const char *v = s->p;
    if (skip_value(s) != 0)
        return -1;
    return copy_out(s, v, (size_t)(s->p - v));
}

static size_t
json_string_n(const char *s, size_t len, char *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
#define CR_OUT(c)                                                              \
    do {                                                                       \
        if (out != NULL)                                                       \
            out[n] = (c);                                                      \
        n++;                                                                   \
    } while (0)
    CR_OUT('"');
    const unsigned char *end = (const unsigned char *)s + len;
    for (const unsigned char *c = (const unsigned char *)s; c < end; c++) {
        const char *e = NULL;
        switch (*c) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        default: break;
        }
        if (e != NULL) {
            CR_OUT(e[0]);
            CR_OUT(e[1]);
        } else if (*c < 0x20) {
            CR_OUT('\\');
            CR_OUT('u');
            CR_OUT('0');
            CR_OUT('0');
            CR_OUT(hex[*c >> 4]);
            CR_OUT(hex[*c & 15]);
        } else {
            CR_OUT((char)*c);
        }
    }
    CR_OUT('"');
#undef CR_OUT
    return n;
}

int
cr_request_parse(const char *json, size_t len, const char *model,
                 cr_request_t *out)
{
    memset(out, 0, sizeof(*out));
    /* Never longer than the input plus the model and its quotes (each of
     * its bytes escapes to at most six). */
    size_t cap = len + 16 + (model != NULL ? 6 * strlen(model) : 0);
    cr_scan_t s = {json, json + len, malloc(cap + 1), 0, cap};
    if (s.out == NULL)
        return -1;
    cr_top_t top = {model, out};
    skip_ws(&s);
    int rc = s.p < s.end && *s.p == '{' ? emit_object(&s, 0, &top) : -1;
    skip_ws(&s);
    if (rc != 0 || s.p != s.end) {
        free(s.out);
        memset(out, 0, sizeof(*out));
        return -1;
    }
    s.out[s.n] = '\0';
    out->canonical = s.out;
    out->len = s.n;
    return 0;
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
    cJSON *ev = NULL;
    if (a->bytes > a->max) /* too big to store: not parsed at all */
        goto fail;
    ev = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(ev) ||
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

/* s[0..n) as a JSON string the way cJSON prints it, appended. */
static void
put_string(buf_t *b, const char *s, size_t n)
{
    if (b->oom || n > (SIZE_MAX - b->len) / 6 - 2)
        return;
    if (b->len + 6 * n + 3 > b->cap) { /* each byte escapes to <= 6 */
        size_t cap = b->len + 6 * n + 3 + 256;
        char *p = realloc(b->s, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    b->len += json_string_n(s, n, b->s + b->len);
    b->s[b->len] = '\0';
}

/* A cJSON item as compact JSON, appended. */
static void
put_json(buf_t *b, const cJSON *item)
{
    char *s = cJSON_PrintUnformatted(item);
    if (s == NULL) {
        b->oom = 1;
        return;
    }
    put(b, s, strlen(s));
    free(s);
}

/* One "data: {...}\n\n" event of choice `index`: the chunk head (printed
 * once, without its closing brace), the delta (JSON), the finish reason
 * (JSON, or NULL for null); or, with usage (JSON), the usage event. The
 * same bytes cJSON printed when each event was a tree. */
static void
event(buf_t *b, const char *head, size_t hlen, int index, const char *delta,
      size_t dlen, const char *finish, const char *usage)
{
    char num[32];
    put(b, "data: ", 6);
    put(b, head, hlen);
    if (usage != NULL) {
        put(b, ",\"choices\":[],\"usage\":", 22);
        put(b, usage, strlen(usage));
        put(b, "}\n\n", 3);
        return;
    }
    put(b, ",\"choices\":[{\"index\":", 21);
    put(b, num, (size_t)snprintf(num, sizeof(num), "%d", index));
    put(b, ",\"delta\":", 9);
    put(b, delta, dlen);
    put(b, ",\"finish_reason\":", 17);
    if (finish != NULL)
        put(b, finish, strlen(finish));
    else
        put(b, "null", 4);
    put(b, "}]}\n\n", 5);
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
    /* Every event starts with the head's members: printed once. */
    buf_t h = {0}, b = {0}, d = {0};
    put_json(&h, head);
    cJSON_Delete(head);
    if (h.oom || h.len < 2) {
        free(h.s);
        cJSON_Delete(root);
        return NULL;
    }
    /* Without its closing brace; never "{" alone: it has "object". */
    const char *hs = h.s;
    size_t hl = h.len - 1;
    const cJSON *c;
    int index = 0;
    cJSON_ArrayForEach(c, choices)
    {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(c, "message");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(c, "finish_reason");
        static const char role[] = "{\"role\":\"assistant\",\"content\":\"\"}";
        event(&b, hs, hl, index, role, sizeof(role) - 1, NULL, NULL);
        if (cJSON_IsString(content)) {
            const char *s = content->valuestring;
            size_t n = strlen(s);
            while (n > 0) {
                size_t k = next_piece(s, n);
                d.len = 0;
                put(&d, "{\"content\":", 11);
                put_string(&d, s, k);
                put(&d, "}", 1);
                if (!d.oom)
                    event(&b, hs, hl, index, d.s, d.len, NULL, NULL);
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
            d.len = 0;
            put(&d, "{\"tool_calls\":", 14);
            put_json(&d, tc);
            put(&d, "}", 1);
            cJSON_Delete(tc);
            if (!d.oom)
                event(&b, hs, hl, index, d.s, d.len, NULL, NULL);
        }
        char *f = fr != NULL ? cJSON_PrintUnformatted(fr) : NULL;
        event(&b, hs, hl, index, "{}", 2, f, NULL);
        free(f);
        index++;
    }
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (include_usage && cJSON_IsObject(usage)) {
        char *u = cJSON_PrintUnformatted(usage);
        if (u == NULL)
            b.oom = 1;
        else
            event(&b, hs, hl, 0, NULL, 0, NULL, u);
        free(u);
    }
    put(&b, "data: [DONE]\n\n", 14);
    cJSON_Delete(root);
    free(h.s);
    if (b.oom || d.oom) {
        free(d.s);
        free(b.s);
        return NULL;
    }
    free(d.s);
    *outlen = b.len;
    return b.s;
}
