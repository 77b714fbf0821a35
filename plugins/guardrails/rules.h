/* The guardrails policy: compiled once from an instance's config (every
 * regex with PCRE2 and JIT), then only read by the hooks. */
#ifndef GR_RULES_H
#define GR_RULES_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "detect.h"

typedef enum { GR_BLOCK = 0, GR_FLAG, GR_REDACT } gr_action_t;

/* One named pattern rule (deny, response_deny). */
typedef struct {
    char *name;
    pcre2_code **re;
    size_t nre;
    gr_action_t action;
} gr_rule_t;

typedef struct {
    gr_rule_t *deny; /* request side, on the non-system messages */
    size_t ndeny;
    gr_rule_t allow; /* nre 0: no allow list */
    gr_rule_t system_require, system_forbid;
    gr_rule_t *resp; /* response side, answers and streams */
    size_t nresp;

    gr_detector_t *det; /* NULL: the injection detector is off */
    double threshold;
    gr_action_t injection_action;

    int64_t max_chars, max_tokens; /* 0: no limit */
    gr_action_t size_action;

    char **allow_models, **deny_models;
    size_t nallow_models, ndeny_models;
    gr_action_t model_action;

    char *redaction; /* what a redacted match becomes */
} gr_policy_t;

/* Builds a policy from the config as JSON text (the instance's whole
 * config, defaults filled in). `where` prefixes every error's JSON path
 * ("$.plugins.NAME.config"). 0, or -1 with err set to "PATH: reason" (for
 * a bad regex: the PCRE2 message and error offset). */
int gr_policy_build(gr_policy_t *p, const char *json, const char *where,
                    char *err, size_t errlen);
void gr_policy_free(gr_policy_t *p);

/* The first match of any of rule's patterns in text[0..len) starting at
 * or after `from`: 1 with [*so, *eo), 0 for none, -1 on error.
 * partial: a match that may go on past the end counts, as a partial one
 * (*partial set), so a stream can hold back what might complete it. */
int gr_rule_find(const gr_rule_t *rule, const char *text, size_t len,
                 size_t from, int partial, size_t *so, size_t *eo,
                 int *is_partial);

/* text with every match of rule replaced by `with`; malloc'd (*outlen
 * gets its length), NULL on error. *count gets the number replaced. */
char *gr_rule_redact(const gr_rule_t *rule, const char *text, size_t len,
                     const char *with, size_t *outlen, size_t *count);

#endif
