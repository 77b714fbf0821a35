/* The mock LLM provider: shared types of its small HTTP server, its request
 * handlers and its failure-mode directives. The mock shares no code with the
 * gateway on purpose: a test double that reused the code under test would
 * agree with its bugs. */
#ifndef SLUICE_MOCK_H
#define SLUICE_MOCK_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#define MOCK_MAX_HEADERS 100
#define MOCK_MAX_HEAD (64 * 1024)
#define MOCK_MAX_BODY (64 * 1024 * 1024)
#define MOCK_JOURNAL_SIZE 100
#define MOCK_MAX_WORDS 1000000L
#define MOCK_MAX_MS (3600L * 1000)

/* A growable byte buffer; always NUL-terminated once anything was added. */
typedef struct mock_buf {
    char *p;
    size_t len;
    size_t cap;
} mock_buf_t;

void mock_buf_add(mock_buf_t *b, const void *p, size_t n);
void mock_buf_adds(mock_buf_t *b, const char *s);
void mock_buf_printf(mock_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends s as a quoted, escaped JSON string. */
void mock_buf_json_str(mock_buf_t *b, const char *s, size_t n);
void mock_buf_free(mock_buf_t *b);

/* Words are runs of non-whitespace, as the usage counts define them. */
size_t mock_count_words(const char *s, size_t n);
/* Length of the word at s[pos] plus the whitespace after it; 0 at the end. */
size_t mock_word_span(const char *s, size_t n, size_t pos);

/* One parsed request. Names are lowercased; all strings point into head. */
typedef struct mock_header {
    char *name;
    char *value;
} mock_header_t;

typedef struct mock_req {
    char *head; /* owned copy of the request line and headers */
    char *method;
    char *target; /* path with the query */
    size_t path_len;
    int minor; /* HTTP/1.x */
    mock_header_t hdr[MOCK_MAX_HEADERS];
    int nhdr;
    char *body; /* owned, NUL-terminated */
    size_t body_len;
    bool keep_alive;
} mock_req_t;

const char *mock_req_header(const mock_req_t *r, const char *lname);
bool mock_req_path_is(const mock_req_t *r, const char *path);

/* Failure modes a request asks for; see README.md. */
enum mock_frame {
    MOCK_FRAME_NONE,
    MOCK_FRAME_CL_TE,
    MOCK_FRAME_DUP_CL,
    MOCK_FRAME_TE_GZIP,
    MOCK_FRAME_BAD_CHUNK,
    MOCK_FRAME_OBS_FOLD,
    MOCK_FRAME_BARE_LF,
};

typedef struct mock_directives {
    int status;       /* 0: none */
    long retry_after; /* -1: none */
    bool hang;
    bool garbage;
    long close_after; /* -1: none */
    long first_byte_ms;
    long gap_ms;
    long delay_ms;
    long words; /* -1: echo */
    enum mock_frame frame;
    char tool[128]; /* "": none */
} mock_directives_t;

void mock_directives_init(mock_directives_t *d);
void mock_directives_from_headers(mock_directives_t *d, const mock_req_t *r);
void mock_directives_from_text(mock_directives_t *d, const char *s, size_t n);
/* A malloc'd copy of s without [mock:...] tokens, trimmed; *out_len set. */
char *mock_strip_directives(const char *s, size_t n, size_t *out_len);

/* The text of a message content: a string, or the "text" of its parts
 * (OpenAI) or blocks (Anthropic) whose type is "text". */
struct cJSON;
void mock_content_text(const struct cJSON *content, mock_buf_t *out);
/* A malloc'd "w1 w2 ... wN" for the words directive. */
char *mock_words_reply(long n, size_t *out_len);

/* A stream answer, produced one SSE event at a time so a long stream never
 * sits whole in memory. */
typedef struct mock_stream mock_stream_t;
struct mock_stream {
    /* Appends the next SSE event to out; returns 0 when there is none. */
    int (*next)(mock_stream_t *s, mock_buf_t *out);
    int phase;
    long emitted;
    char *reply;
    size_t reply_len;
    size_t pos;
    char *tool; /* tool name, or NULL for a text answer */
    char *args; /* the tool input as JSON text */
    size_t args_len;
    size_t args_pos;
    char *model;
    char id[48];
    mock_buf_t pre; /* the start every event of this stream shares */
    long long created;
    bool include_usage;
    long prompt_tokens;
    long completion_tokens;
};

mock_stream_t *mock_stream_new(void);
void mock_stream_free(mock_stream_t *s);
/* The next fragment of s->args for a streamed tool call; false when done. */
bool mock_stream_args_fragment(mock_stream_t *s, const char **p, size_t *n);

/* What to send for one request; the HTTP layer carries it out. */
typedef struct mock_plan {
    int status;
    const char *content_type;
    mock_buf_t body;       /* a non-stream answer */
    mock_stream_t *stream; /* or a stream answer */
    long retry_after;      /* -1: no Retry-After */
    bool hang;
    long wait_ms; /* before the first byte */
    long gap_ms;  /* between stream events */
    long close_after;
    enum mock_frame frame;
} mock_plan_t;

void mock_plan_init(mock_plan_t *p);
void mock_plan_free(mock_plan_t *p);
/* Error bodies in each provider's shape. */
void mock_error_openai(mock_plan_t *p, int status, const char *msg);
void mock_error_anthropic(mock_plan_t *p, int status, const char *msg);
/* Applies hang, status and garbage. True when that decides the answer. */
bool mock_plan_early(mock_plan_t *p, const mock_directives_t *d,
                     bool anthropic);
/* Applies timing, close_after and framing to a normal answer. */
void mock_plan_late(mock_plan_t *p, const mock_directives_t *d);
const char *mock_reason(int status);

/* Request handlers, by endpoint. */
void mock_route(const mock_req_t *r, mock_plan_t *p);
void mock_handle_chat(const mock_req_t *r, mock_plan_t *p);
void mock_handle_embeddings(const mock_req_t *r, mock_plan_t *p);
void mock_handle_messages(const mock_req_t *r, mock_plan_t *p);
/* POST /v1beta/models/MODEL:generateContent or :streamGenerateContent. */
void mock_handle_gemini(const mock_req_t *r, mock_plan_t *p);

/* Counters for GET /mock/stats; shared by all workers. */
struct mock_stats {
    atomic_ulong connections_accepted;
    atomic_ulong requests;
    atomic_ulong streams_started;
    atomic_ulong streams_completed;
    atomic_ulong streams_aborted;
    atomic_ulong streams_cut;
    atomic_long open_connections;
};
extern struct mock_stats mock_stats;
/* The N in chatcmpl-mock-N and msg_mock_N. */
unsigned long mock_next_id(void);

/* The last MOCK_JOURNAL_SIZE requests on /v1, for GET /mock/requests. */
void mock_journal_record(const mock_req_t *r);
char *mock_journal_json(void);
void mock_journal_clear(void);

/* Connections of one worker thread (http.c). */
struct event_base;
typedef struct mock_conn mock_conn_t;
typedef struct mock_conns {
    mock_conn_t *head;
} mock_conns_t;
void mock_conn_accept(struct event_base *base, mock_conns_t *list, int fd);
void mock_conns_free_all(mock_conns_t *list);

#endif
