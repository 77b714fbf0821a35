/* Byte buffers, JSON string escaping, word counting and the shared
 * counters of the mock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "mock.h"

struct mock_stats mock_stats;
static atomic_ulong next_id = 1;

unsigned long
mock_next_id(void)
{
    return atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
}

static void
buf_reserve(mock_buf_t *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        abort(); /* a test double: running out of memory is fatal */
    b->p = p;
    b->cap = cap;
}

void
mock_buf_add(mock_buf_t *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void
mock_buf_adds(mock_buf_t *b, const char *s)
{
    mock_buf_add(b, s, strlen(s));
}

void
mock_buf_printf(mock_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_reserve(b, 64);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    if ((size_t)n >= b->cap - b->len) {
        buf_reserve(b, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void
mock_buf_json_str(mock_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    buf_reserve(b, n + 2);
    mock_buf_add(b, "\"", 1);
    size_t run = 0; /* bytes that need no escaping are copied in runs */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        mock_buf_add(b, s + run, i - run);
        run = i + 1;
        char esc[7] = {'\\', 0};
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            mock_buf_add(b, esc, 6);
            continue;
        }
        mock_buf_add(b, esc, 2);
    }
    mock_buf_add(b, s + run, n - run);
    mock_buf_add(b, "\"", 1);
}

void
mock_buf_free(mock_buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static bool
is_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

size_t
mock_count_words(const char *s, size_t n)
{
    size_t words = 0;
    bool in_word = false;
    for (size_t i = 0; i < n; i++) {
        bool sp = is_space((unsigned char)s[i]);
        if (!sp && !in_word)
            words++;
        in_word = !sp;
    }
    return words;
}

size_t
mock_word_span(const char *s, size_t n, size_t pos)
{
    size_t i = pos;
    while (i < n && !is_space((unsigned char)s[i]))
        i++;
    while (i < n && is_space((unsigned char)s[i]))
        i++;
    return i - pos;
}

mock_stream_t *
mock_stream_new(void)
{
    mock_stream_t *s = calloc(1, sizeof(*s));
    if (!s)
        abort();
    return s;
}

void
mock_stream_free(mock_stream_t *s)
{
    if (!s)
        return;
    free(s->reply);
    free(s->tool);
    free(s->args);
    free(s->model);
    mock_buf_free(&s->pre);
    free(s);
}

bool
mock_stream_args_fragment(mock_stream_t *s, const char **p, size_t *n)
{
    if (s->args_pos >= s->args_len)
        return false;
    /* At least three fragments, at most 32 bytes each, so a client has to
     * join partial JSON; cut only at UTF-8 character starts. */
    size_t size = (s->args_len + 2) / 3;
    if (size > 32)
        size = 32;
    size_t end = s->args_pos + size;
    if (end > s->args_len)
        end = s->args_len;
    while (end < s->args_len && ((unsigned char)s->args[end] & 0xC0) == 0x80)
        end++;
    *p = s->args + s->args_pos;
    *n = end - s->args_pos;
    s->args_pos = end;
    return true;
}

void
mock_content_text(const cJSON *content, mock_buf_t *out)
{
    if (cJSON_IsString(content)) {
        mock_buf_adds(out, content->valuestring);
        return;
    }
    const cJSON *part;
    cJSON_ArrayForEach(part, content) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (cJSON_IsString(type) && strcmp(type->valuestring, "text") == 0 &&
            cJSON_IsString(text))
            mock_buf_adds(out, text->valuestring);
    }
}

char *
mock_words_reply(long n, size_t *out_len)
{
    mock_buf_t b = {0};
    mock_buf_add(&b, "", 0);
    for (long i = 1; i <= n; i++)
        mock_buf_printf(&b, i == 1 ? "w%ld" : " w%ld", i);
    *out_len = b.len;
    return b.p;
}
