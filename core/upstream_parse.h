/* The response side of an upstream HTTP/1.1 exchange, as a pure parser:
 * bytes in, head lines and body bytes out, no I/O. Upstream responses get
 * the same strictness as client requests (RFC 9112): bad framing is an
 * error and the connection is never reused after it. */
#ifndef SL_UPSTREAM_PARSE_H
#define SL_UPSTREAM_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Largest response head we read (all 1xx heads and the final one). */
#define SL_RESP_HEAD_MAX (64 * 1024)

typedef struct {
    int content_lengths;
    int transfer_encodings;
    int64_t content_length;
} sl_resp_check_t;

/* Checks one raw header line, CRLF included, for the framing rules.
 * `state` is zeroed before each head. Returns 0 or SL_EINVAL with *why. */
int sl_upstream_check_header(sl_resp_check_t *state, const char *line,
                             size_t len, const char **why);

typedef struct {
    /* A head line without its CRLF: the status line first, then
     * "Name: value" lines. 1xx heads come through too. */
    void (*on_line)(void *ud, const char *line, size_t len);
    /* Body bytes (chunked framing removed). Return 0 to go on, 1 to stop
     * after these bytes (pause), -1 to abort. */
    int (*on_body)(void *ud, const char *data, size_t len);
} sl_resp_sink_t;

enum {
    SL_RESP_HEAD,
    SL_RESP_LENGTH,     /* Content-Length body */
    SL_RESP_CHUNK_SIZE, /* a chunk-size line */
    SL_RESP_CHUNK_DATA,
    SL_RESP_CHUNK_END, /* the CRLF after chunk data */
    SL_RESP_TRAILER,
    SL_RESP_TO_EOF, /* no length: the body ends when the connection does */
    SL_RESP_DONE,
};

typedef struct {
    int state;
    int status;       /* of the final head; 0 until it is read */
    int keep_alive;   /* the connection may carry another request */
    int no_body;      /* a HEAD request: the head is all */
    int paused;       /* on_body asked to stop */
    int64_t remaining; /* bytes left of the body or chunk */
    size_t scanned;   /* head bytes already searched for its end */
    sl_resp_check_t check;
    const char *why;  /* after an error */
} sl_resp_parser_t;

/* Starts a parser for the answer to one request (head_only: HEAD). */
void sl_resp_init(sl_resp_parser_t *p, int head_only);

/* Feeds buffered bytes. Returns how many were consumed (the caller keeps
 * the rest for the next call, with more bytes appended), or -1 on a framing
 * error (p->why) or when on_body aborted (p->why NULL). Stops early when
 * on_body pauses (p->paused) or the response is complete (SL_RESP_DONE). */
ssize_t sl_resp_feed(sl_resp_parser_t *p, const char *buf, size_t len,
                     const sl_resp_sink_t *sink, void *ud);

/* The connection reached EOF: 0 when that completes the response (a body
 * that runs to EOF), else -1 with p->why. */
int sl_resp_eof(sl_resp_parser_t *p);

#endif
