#include "error.h"

#include <stdio.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

const char *
sl_strerror(int code)
{
    switch (code) {
    case SL_OK: return "ok";
    case SL_ENOMEM: return "out of memory";
    case SL_EINVAL: return "invalid input";
    case SL_EAGAIN: return "need more input";
    case SL_ETOOBIG: return "size limit exceeded";
    case SL_EIO: return "system call failed";
    case SL_ECONFIG: return "invalid configuration";
    case SL_ENOTFOUND: return "not found";
    case SL_EUPSTREAM: return "upstream failed";
    case SL_ETIMEDOUT: return "timed out";
    default: return "unknown error";
    }
}

const char *
sl_error_type_for_status(int status)
{
    switch (status) {
    case 400: case 404: case 405: case 408: case 411: case 413: case 415:
    case 422: case 431: case 501: case 505:
        return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 409: return "conflict_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    case 502: case 504: return "upstream_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

/* The length of the run at s that JSON takes as it is: no '"', '\\',
 * control character or DEL. Text is mostly such runs. */
static size_t
plain_run(const char *s, size_t len)
{
    size_t i = 0;
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
    const __m128i ctl = _mm_set1_epi8(0x1f), del = _mm_set1_epi8(0x7f);
    for (; len - i >= 16; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        __m128i hit = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
            _mm_or_si128(_mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl),
                         _mm_cmpeq_epi8(v, del)));
        int m = _mm_movemask_epi8(hit);
        if (m != 0)
            return i + (size_t)__builtin_ctz((unsigned)m);
    }
#endif
    for (; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == '"' || c == '\\' || c == 0x7f)
            break;
    }
    return i;
}

size_t
sl_json_escape(char *buf, size_t cap, size_t used, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = used;
#define PUT(c)                                                                 \
    do {                                                                       \
        if (n + 1 < cap)                                                       \
            buf[n] = (c);                                                      \
        n++;                                                                   \
    } while (0)
    for (size_t i = 0; i < len; i++) {
        size_t run = plain_run(s + i, len - i);
        if (run > 0) {
            /* what PUT would store of it: up to position cap - 2 */
            size_t room = n + 1 < cap ? cap - 1 - n : 0;
            if (room > 0)
                memcpy(buf + n, s + i, run < room ? run : room);
            n += run;
            i += run;
            if (i == len)
                break;
        }
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': PUT('\\'); PUT('"'); break;
        case '\\': PUT('\\'); PUT('\\'); break;
        case '\n': PUT('\\'); PUT('n'); break;
        case '\r': PUT('\\'); PUT('r'); break;
        case '\t': PUT('\\'); PUT('t'); break;
        default:
            PUT('\\'); PUT('u'); PUT('0'); PUT('0');
            PUT(hex[c >> 4]); PUT(hex[c & 15]);
        }
    }
#undef PUT
    if (cap > 0)
        buf[n < cap ? n : cap - 1] = '\0';
    return n;
}

size_t
sl_error_json(char *buf, size_t cap, const char *message, const char *type,
              const char *code)
{
    size_t n = (size_t)snprintf(buf, cap, "{\"error\":{\"message\":\"");
    n = sl_json_escape(buf, cap, n, message, strlen(message));
    int k = snprintf(n < cap ? buf + n : NULL, n < cap ? cap - n : 0,
                     "\",\"type\":\"%s\",\"code\":", type);
    n += (size_t)k;
    if (code != NULL) {
        if (n + 1 < cap)
            buf[n] = '"';
        n++;
        n = sl_json_escape(buf, cap, n, code, strlen(code));
        if (n + 1 < cap)
            buf[n] = '"';
        n++;
    } else {
        k = snprintf(n < cap ? buf + n : NULL, n < cap ? cap - n : 0, "null");
        n += (size_t)k;
    }
    k = snprintf(n < cap ? buf + n : NULL, n < cap ? cap - n : 0, "}}");
    n += (size_t)k;
    if (cap > 0 && n >= cap)
        buf[cap - 1] = '\0';
    return n;
}
