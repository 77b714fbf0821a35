/* The cache's view of requests and answers, free of the host: the
 * canonical form of a request (what the key hashes), whether an answer
 * may be stored, a streamed answer assembled into a whole one, and a
 * whole one replayed as a stream. Everything returned is malloc'd. */
#ifndef CR_REPLAY_H
#define CR_REPLAY_H

#include <stddef.h>

/* What the cache needs to know of a request. */
typedef struct {
    char *canonical;      /* sorted, without transport-only fields */
    size_t len;           /* of canonical */
    int temperature_set;  /* the request sets a temperature > 0 */
    int include_usage;    /* stream_options.include_usage */
} cr_request_t;

/* Reads request JSON as the host prints it (request_json: compact, its
 * numbers and strings in cJSON's form); model replaces its "model". 0,
 * or -1 when it is not a JSON object (or on OOM). Free with
 * cr_request_free. */
int cr_request_parse(const char *json, size_t len, const char *model,
                     cr_request_t *out);
void cr_request_free(cr_request_t *r);

/* 1 when json is a complete chat.completion worth storing: an object
 * with choices, no error, and every choice finished. */
int cr_answer_ok(const char *json, size_t len);

/* Assembles a streamed answer event by event. */
typedef struct cr_asm cr_asm_t;
cr_asm_t *cr_asm_new(size_t max_bytes);
/* One event's data (JSON). -1 once the stream cannot be stored (an error
 * event, invalid JSON, past max_bytes); it stays failed. */
int cr_asm_event(cr_asm_t *a, const char *json, size_t len);
/* The whole answer as a chat.completion (NULL when a choice never
 * finished or the stream failed); *len gets its length. */
char *cr_asm_finish(cr_asm_t *a, size_t *len);
void cr_asm_free(cr_asm_t *a);

/* A stored chat.completion as a text/event-stream body: a role event,
 * the content in word-sized events, tool calls, a finish event per
 * choice, the usage event when asked, then [DONE]. NULL on bad input. */
char *cr_sse_from_completion(const char *json, size_t len, int include_usage,
                             size_t *outlen);

#endif
