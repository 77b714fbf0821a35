/* What the proxy reads of a model request and of an answer, without a
 * tree: the scanners read strict JSON in place (json_scan.h); the *_of
 * twins read the same facts from a cJSON tree, for what the scanners
 * refuse. Both must agree wherever the scanner accepts (fuzz_json.c). */
#ifndef SL_CHAT_SCAN_H
#define SL_CHAT_SCAN_H

#include "json_scan.h"

#include <cjson/cJSON.h>
#include <stddef.h>

/* The members of a chat or embeddings request the proxy checks. Types are
 * sl_json_type_t, SL_JSON_NONE when the member is absent; when a key
 * repeats, the first one counts (as in cJSON). */
typedef struct sl_chat_facts {
    int model;             /* its type */
    const char *model_str; /* a string model's value, NUL-free; see below */
    size_t model_len;
    /* The scanner's: the model's text in the body (quotes included), and
     * whether it needs decoding (model_str is then NULL). */
    const char *model_at;
    size_t model_at_len;
    int model_escaped;
    int messages;
    size_t nmessages;
    long bad_message; /* first message not an object with a string "role" */
    int stream;
    int stream_options;
    int include_usage; /* stream_options.include_usage is true */
    int input;
    size_t ninput; /* elements when input is an array */
    const char *close; /* the scanner's: the body's closing brace */
} sl_chat_facts_t;

/* Reads a request body that must be a JSON object. 0, or -1 when it is not
 * strict JSON the scanner takes (cJSON decides then). */
int sl_chat_scan(const char *body, size_t len, sl_chat_facts_t *f);
/* The same facts from a decoded object (model_at and close stay NULL). */
void sl_chat_facts_of(const cJSON *json, sl_chat_facts_t *f);

/* The usage an answer (or one stream event) reports: `has` says which
 * counters it holds as numbers (SL_USAGE_* bits); -1 for the others. */
enum {
    SL_USAGE_PROMPT = 1,
    SL_USAGE_COMPLETION = 2,
    SL_USAGE_TOTAL = 4,
    SL_USAGE_CACHED = 8,
    SL_USAGE_REASONING = 16,
};
typedef struct sl_usage_facts {
    int usage; /* "usage" is an object */
    int has;
    long prompt, completion, total, cached, reasoning;
    int choices_empty; /* "choices" is an empty array */
} sl_usage_facts_t;

/* Reads an answer that must be a JSON object. 0 or -1 as sl_chat_scan. */
int sl_usage_scan(const char *text, size_t len, sl_usage_facts_t *u);
void sl_usage_of(const cJSON *json, sl_usage_facts_t *u);

#endif
