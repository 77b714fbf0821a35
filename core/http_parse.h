/* Strict HTTP/1.1 request framing (RFC 9112): what a gateway in front of
 * other servers must refuse so that it cannot be smuggled through. Pure
 * functions on byte buffers: no I/O, no allocation. */
#ifndef SL_HTTP_PARSE_H
#define SL_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SL_HTTP_MAX_HEADERS 64

typedef enum {
    SL_METHOD_OTHER = 0,
    SL_METHOD_GET,
    SL_METHOD_HEAD,
    SL_METHOD_POST,
    SL_METHOD_PUT,
    SL_METHOD_DELETE,
    SL_METHOD_OPTIONS,
    SL_METHOD_PATCH,
} sl_method_t;

typedef struct {
    const char *name; /* points into the parsed buffer; not NUL-terminated */
    size_t name_len;
    const char *value; /* leading/trailing SP/HTAB trimmed */
    size_t value_len;
} sl_http_header_t;

typedef struct {
    sl_method_t method;
    const char *method_str;
    size_t method_len;
    const char *target; /* request-target as sent (path and query) */
    size_t target_len;
    const char *path; /* target up to '?' */
    size_t path_len;
    int version_minor; /* HTTP/1.0 -> 0, HTTP/1.1 -> 1 */
    sl_http_header_t headers[SL_HTTP_MAX_HEADERS];
    size_t nheaders;
    int64_t content_length; /* -1 when absent */
    int chunked;            /* Transfer-Encoding: chunked */
    int keep_alive;         /* after version and Connection are applied */
    int expect_continue;    /* Expect: 100-continue */
} sl_http_request_t;

/* Parses a request head at the start of buf[0..len).
 *
 * Returns the number of bytes the head occupies (through the blank line) when
 * it is complete and valid; SL_EAGAIN (negative) when more bytes are needed
 * and nothing seen so far is invalid; another negative SL_E* when the head is
 * invalid, with *status set to the HTTP status to answer (400, 431 when the
 * head would exceed max_head bytes or SL_HTTP_MAX_HEADERS, 501 for a
 * Transfer-Encoding other than chunked, 505 for a version other than 1.0/1.1)
 * and *why to a static, human-readable reason: SL_ETOOBIG with 431,
 * SL_EINVAL otherwise. An invalid prefix is reported as soon as it is seen,
 * even before the head is complete. The parser keeps no state: call it again
 * on the whole buffer when more bytes arrive. Empty lines (CRLF) before the
 * request line are skipped and counted in the returned length and in
 * max_head. req's pointers point into buf.
 *
 * Refused: bare LF line ends; obs-fold (a line starting with SP/HTAB); header
 * names with non-token characters or whitespace before the colon; NUL or
 * control bytes (other than HTAB) in values; both Content-Length and
 * Transfer-Encoding; duplicate or list-valued Content-Length; a
 * Content-Length that is not 1*DIGIT or overflows; Transfer-Encoding other
 * than exactly "chunked" (case-insensitive); a request line that is not
 * exactly METHOD SP TARGET SP HTTP/1.x; a target that does not start with
 * '/' (origin-form) unless it is "*" for OPTIONS; a target byte outside
 * visible ASCII; more than one Host, or a Host with bytes outside uri-host
 * and port; HTTP/1.1 without Host; Transfer-Encoding in HTTP/1.0. Expect:
 * 100-continue is ignored in HTTP/1.0, as RFC 9110 requires. */
int sl_http_parse_request(const char *buf, size_t len, size_t max_head,
                          sl_http_request_t *req, int *status,
                          const char **why);

/* Finds a header by case-insensitive name; NULL when absent. */
const sl_http_header_t *sl_http_header_find(const sl_http_request_t *req,
                                            const char *name);

/* Incremental chunked-body decoder (RFC 9112 section 7.1). Chunk extensions
 * are skipped; trailers are read and dropped. */
typedef struct {
    int state;
    uint64_t remaining; /* bytes left in the current chunk */
    uint64_t total;     /* decoded bytes so far */
    size_t line_len;    /* bytes in the current size/trailer line */
    int done;           /* the last chunk and trailers have been read */
    unsigned trailers;  /* private: trailer fields read (capped) */
} sl_chunked_t;

void sl_chunked_init(sl_chunked_t *c);

/* Decodes from in[0..len): decoded bytes are written to out (which must hold
 * at least len bytes) and their count is stored in *out_len (this call's
 * bytes only). Input may be split anywhere between calls. Returns the number
 * of input bytes consumed (all of them until the body ends; it stops right
 * after the final CRLF, leaving any pipelined bytes, and consumes nothing
 * once done), or a negative SL_E* on malformed framing (bad hex, more than 16
 * hex digits, missing CRLF after data, bare LF or CR, control bytes in an
 * extension, invalid trailer field, size or trailer line over 4096 bytes,
 * more than SL_HTTP_MAX_HEADERS trailers) with *why set: SL_EINVAL, or
 * SL_ETOOBIG when the decoded total would exceed max_body. After an error
 * *out_len still counts the bytes decoded before it, and every later call
 * fails. */
ssize_t sl_chunked_decode(sl_chunked_t *c, const char *in, size_t len,
                          char *out, size_t *out_len, uint64_t max_body,
                          const char **why);

#endif
