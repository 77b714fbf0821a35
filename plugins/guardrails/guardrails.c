/* The guardrails plugin: checks prompts and answers against an operator's
 * policy (rules.h) and blocks, flags or redacts. Blocking never echoes the
 * offending text, only the rule's name. On streams, text that might be the
 * start of a denied pattern is held back until the next event shows it is
 * not (PCRE2 partial matching), so a denied phrase split across two events
 * never reaches the client. */
#include "rules.h"

#include <sluice/plugin.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const sluice_config_field_t schema[] = {
    {"deny", SLUICE_CFG_OBJECT, "{}", 0,
     "request rules: {\"NAME\": {\"pattern\"|\"patterns\": regex(es), "
     "\"action\": \"block\"|\"flag\"|\"redact\"}}, on non-system messages"},
    {"allow", SLUICE_CFG_STRING_LIST, "[]", 0,
     "when set, the last user message must match one of these regexes"},
    {"allow_action", SLUICE_CFG_STRING, "block", 0,
     "rule \"allow\": block or flag"},
    {"injection", SLUICE_CFG_OBJECT, "{}", 0,
     "prompt-injection detector: {\"enabled\": true, \"threshold\": 1.0, "
     "\"action\": \"block\"|\"flag\"}"},
    {"max_prompt_chars", SLUICE_CFG_INT, "0", 0,
     "characters in all messages together; 0: no limit"},
    {"max_prompt_tokens", SLUICE_CFG_INT, "0", 0,
     "estimated tokens (characters / 4) in all messages; 0: no limit"},
    {"size_action", SLUICE_CFG_STRING, "block", 0,
     "rules max_prompt_chars / max_prompt_tokens: block or flag"},
    {"allow_models", SLUICE_CFG_STRING_LIST, "[]", 0,
     "when set, only these models (as the client names them)"},
    {"deny_models", SLUICE_CFG_STRING_LIST, "[]", 0, "models refused"},
    {"model_action", SLUICE_CFG_STRING, "block", 0,
     "rule \"model\": block or flag"},
    {"system_require", SLUICE_CFG_STRING_LIST, "[]", 0,
     "regexes the system prompt must each match"},
    {"system_forbid", SLUICE_CFG_STRING_LIST, "[]", 0,
     "regexes the system prompt must not match"},
    {"system_action", SLUICE_CFG_STRING, "block", 0,
     "rules system_require (block or flag) and system_forbid (also redact)"},
    {"response_deny", SLUICE_CFG_OBJECT, "{}", 0,
     "answer rules, like deny; streams too"},
    {"redaction", SLUICE_CFG_STRING, "[REDACTED]", 0,
     "what a redacted match becomes"},
    {NULL, 0, NULL, 0, NULL},
};

typedef struct {
    const sluice_host_t *h;
    gr_policy_t pol;
    int has_log_field, can_block_stream;
} guard_t;

/* Per request: flagged rule names, and the stream's held-back text. */
typedef struct {
    char flags[256];
    size_t flen;
    char *pending; /* request memory */
    size_t npending;
} greq_t;

static int
create(const sluice_host_t *h, sluice_req_t *ctx, const sluice_config_t *cfg,
       void **instance, char *err, size_t errlen)
{
    const char *json = NULL;
    char where[256];
    if (h->config_json(cfg, NULL, &json) != SLUICE_OK) {
        snprintf(err, errlen, "cannot read the config");
        return SLUICE_EINVAL;
    }
    guard_t *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        snprintf(err, errlen, "out of memory");
        return SLUICE_ENOMEM;
    }
    snprintf(where, sizeof(where), "$.plugins.%s.config",
             h->instance_name(ctx));
    if (gr_policy_build(&g->pol, json, where, err, errlen) != 0) {
        free(g);
        return SLUICE_EINVAL;
    }
    g->h = h;
    g->has_log_field = SLUICE_HOST_HAS(h, log_field_set);
    /* 1.1 gateways take respond() in on_chunk as the stream's last event;
     * an older one only has ERROR, which also ends the stream. */
    g->can_block_stream = h->abi_minor >= 1;
    *instance = g;
    return SLUICE_OK;
}

static void
destroy(void *instance)
{
    guard_t *g = instance;
    if (g == NULL)
        return;
    gr_policy_free(&g->pol);
    free(g);
}

static greq_t *
state(guard_t *g, sluice_req_t *req)
{
    greq_t *st = g->h->state_get(req);
    if (st == NULL) {
        st = g->h->alloc(req, sizeof(*st));
        if (st == NULL)
            return NULL;
        memset(st, 0, sizeof(*st));
        g->h->state_set(req, st);
    }
    return st;
}

/* Answers 400 content_blocked naming the rule (never the text). */
static sluice_verdict_t
block(guard_t *g, sluice_req_t *req, const char *rule, const char *what)
{
    char body[512];
    int n = snprintf(body, sizeof(body),
                     "{\"error\":{\"message\":\"%s blocked by guardrail rule "
                     "'%s'\",\"type\":\"invalid_request_error\","
                     "\"code\":\"content_blocked\",\"param\":null}}",
                     what, rule);
    g->h->log(req, SLUICE_LOG_INFO, "blocked: rule %s (%s)", rule, what);
    g->h->metric_add(req, "guardrail_blocks_total", NULL, 1);
    if (n < 0 || (size_t)n >= sizeof(body) ||
        g->h->respond(req, 400, body, (size_t)n) != SLUICE_OK)
        return SLUICE_ERROR;
    return SLUICE_RESPOND;
}

/* Records a flagged rule: the header and the access log name them all. */
static int
flag(guard_t *g, sluice_req_t *req, const char *rule)
{
    greq_t *st = state(g, req);
    if (st == NULL)
        return -1;
    size_t rl = strlen(rule);
    /* Each rule once. */
    for (const char *p = st->flags; (p = strstr(p, rule)) != NULL; p += rl)
        if ((p == st->flags || p[-1] == ',') && (p[rl] == ',' || p[rl] == 0))
            return 0;
    if (st->flen + rl + 2 > sizeof(st->flags))
        return 0;
    if (st->flen > 0)
        st->flags[st->flen++] = ',';
    memcpy(st->flags + st->flen, rule, rl + 1);
    st->flen += rl;
    g->h->log(req, SLUICE_LOG_INFO, "flagged: rule %s", rule);
    g->h->metric_add(req, "guardrail_flags_total", NULL, 1);
    /* After a stream's head is out the header cannot change: the log
     * still says it. */
    g->h->response_header_set(req, "x-sluice-guardrail", st->flags);
    if (g->has_log_field)
        g->h->log_field_set(req, "guardrail", st->flags);
    return 0;
}

/* Applies a verdict-bearing action: 1 when the hook must return *v. */
static int
act(guard_t *g, sluice_req_t *req, gr_action_t a, const char *rule,
    const char *what, sluice_verdict_t *v)
{
    if (a == GR_BLOCK) {
        *v = block(g, req, rule, what);
        return 1;
    }
    if (flag(g, req, rule) != 0) {
        *v = SLUICE_ERROR;
        return 1;
    }
    return 0;
}

static size_t
utf8_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

static int
is_system(const char *role)
{
    return strcmp(role, "system") == 0 || strcmp(role, "developer") == 0;
}

/* Replaces every match of rule in message i. */
static int
redact_message(guard_t *g, sluice_req_t *req, size_t i, const gr_rule_t *rule,
               const char *text, size_t len)
{
    size_t outlen, count;
    char *out =
        gr_rule_redact(rule, text, len, g->pol.redaction, &outlen, &count);
    if (out == NULL)
        return -1;
    int rc = count > 0 ? g->h->message_set_text(req, i, out, outlen) : 0;
    free(out);
    if (rc == SLUICE_OK && count > 0)
        g->h->log(req, SLUICE_LOG_INFO, "redacted: rule %s, %zu match(es)",
                  rule->name, count);
    return rc == SLUICE_OK ? 0 : -1;
}

static int
model_listed(char **list, size_t n, const char *model)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], model) == 0)
            return 1;
    return 0;
}

/* A message as the hooks read it, fetched once per request. */
typedef struct {
    const char *role, *text; /* NULL: none */
    size_t len;
} gmsg_t;

static int
fetch_text(const sluice_host_t *h, sluice_req_t *req, size_t i, gmsg_t *m)
{
    if (h->message_text(req, i, &m->text, &m->len) != SLUICE_OK)
        m->text = NULL;
    return m->text != NULL;
}

static sluice_verdict_t
on_request(void *instance, sluice_req_t *req)
{
    guard_t *g = instance;
    const sluice_host_t *h = g->h;
    const gr_policy_t *p = &g->pol;
    sluice_verdict_t v = SLUICE_CONTINUE;
    const char *model = NULL;
    size_t count = 0, so, eo;
    if (state(g, req) == NULL)
        return SLUICE_ERROR;

    if (h->model(req, &model) == SLUICE_OK &&
        ((p->nallow_models > 0 &&
          !model_listed(p->allow_models, p->nallow_models, model)) ||
         model_listed(p->deny_models, p->ndeny_models, model)) &&
        act(g, req, p->model_action, "model", "request", &v))
        return v;

    h->message_count(req, &count);
    gmsg_t *m = count > 0 ? h->alloc(req, count * sizeof(*m)) : NULL;
    if (count > 0 && m == NULL)
        return SLUICE_ERROR;
    size_t chars = 0, last_user = (size_t)-1;
    for (size_t i = 0; i < count; i++) {
        if (h->message_role(req, i, &m[i].role) != SLUICE_OK)
            m[i].role = NULL;
        if (m[i].role != NULL && strcmp(m[i].role, "user") == 0)
            last_user = i;
        if (fetch_text(h, req, i, &m[i]))
            chars += utf8_chars(m[i].text, m[i].len);
    }
    if (p->max_chars > 0 && chars > (size_t)p->max_chars &&
        act(g, req, p->size_action, "max_prompt_chars", "request", &v))
        return v;
    if (p->max_tokens > 0 && (chars + 3) / 4 > (size_t)p->max_tokens &&
        act(g, req, p->size_action, "max_prompt_tokens", "request", &v))
        return v;

    /* The system prompt: each required pattern somewhere in it. */
    for (size_t r = 0; r < p->system_require.nre; r++) {
        gr_rule_t one = {.re = &p->system_require.re[r], .nre = 1};
        int found = 0;
        for (size_t i = 0; i < count && !found; i++)
            if (m[i].role != NULL && is_system(m[i].role) &&
                m[i].text != NULL)
                found = gr_rule_find(&one, m[i].text, m[i].len, 0, 0, &so,
                                     &eo, NULL) == 1;
        if (!found && act(g, req, p->system_require.action, "system_require",
                          "request", &v))
            return v;
    }

    for (size_t i = 0; i < count; i++) {
        if (m[i].role == NULL || m[i].text == NULL)
            continue;
        int sys = is_system(m[i].role);
        size_t nrules = sys ? (p->system_forbid.nre > 0) : p->ndeny;
        for (size_t r = 0; r < nrules; r++) {
            const gr_rule_t *rule = sys ? &p->system_forbid : &p->deny[r];
            int f = gr_rule_find(rule, m[i].text, m[i].len, 0, 0, &so, &eo,
                                 NULL);
            if (f < 0)
                return SLUICE_ERROR;
            if (f == 0)
                continue;
            if (rule->action == GR_REDACT) {
                if (redact_message(g, req, i, rule, m[i].text, m[i].len) != 0)
                    return SLUICE_ERROR;
                if (!fetch_text(h, req, i, &m[i]))
                    break;
            } else if (act(g, req, rule->action, rule->name, "request", &v)) {
                return v;
            }
        }
    }

    if (p->allow.nre > 0) {
        int ok = last_user != (size_t)-1 && m[last_user].text != NULL &&
                 gr_rule_find(&p->allow, m[last_user].text, m[last_user].len,
                              0, 0, &so, &eo, NULL) == 1;
        if (!ok && act(g, req, p->allow.action, "allow", "request", &v))
            return v;
    }

    if (p->det != NULL) {
        for (size_t i = 0; i < count; i++) {
            if (m[i].role == NULL ||
                (strcmp(m[i].role, "user") != 0 &&
                 strcmp(m[i].role, "tool") != 0) ||
                m[i].text == NULL)
                continue;
            const char *top = NULL;
            double score =
                gr_injection_score(p->det, m[i].text, m[i].len, &top);
            if (score < 0)
                return SLUICE_ERROR;
            if (score >= p->threshold) {
                h->log(req, SLUICE_LOG_INFO,
                       "injection score %.2f in message %zu (strongest: %s)",
                       score, i, top ? top : "-");
                if (act(g, req, p->injection_action, "injection", "request",
                        &v))
                    return v;
                break;
            }
        }
    }
    return SLUICE_CONTINUE;
}

static sluice_verdict_t
on_response(void *instance, sluice_req_t *req)
{
    guard_t *g = instance;
    const sluice_host_t *h = g->h;
    sluice_verdict_t v = SLUICE_CONTINUE;
    int status = 0;
    if (g->pol.nresp == 0 || h->response_status(req, &status) != SLUICE_OK ||
        status != 200)
        return SLUICE_CONTINUE;
    const char *text;
    size_t len, so, eo;
    for (size_t c = 0; h->response_text(req, c, &text, &len) == SLUICE_OK;
         c++) {
        for (size_t r = 0; r < g->pol.nresp; r++) {
            const gr_rule_t *rule = &g->pol.resp[r];
            int m = gr_rule_find(rule, text, len, 0, 0, &so, &eo, NULL);
            if (m < 0)
                return SLUICE_ERROR;
            if (m == 0)
                continue;
            if (rule->action == GR_REDACT) {
                size_t outlen, n;
                char *out = gr_rule_redact(rule, text, len, g->pol.redaction,
                                           &outlen, &n);
                if (out == NULL)
                    return SLUICE_ERROR;
                int rc = h->response_set_text(req, c, out, outlen);
                free(out);
                if (rc != SLUICE_OK ||
                    h->response_text(req, c, &text, &len) != SLUICE_OK)
                    return SLUICE_ERROR;
            } else if (act(g, req, rule->action, rule->name, "response", &v)) {
                return v;
            }
        }
    }
    return SLUICE_CONTINUE;
}

/* How much of buf[0..len) the stream can settle now: all of it when no
 * more text comes (final), else up to the earliest place where a rule
 * might still match with text yet to come (PCRE2 hard partial matching:
 * a match that could grow past the end counts as partial too, so "PIN 98"
 * waits for the digits that may follow). -1 on a match error. */
static long
settled(guard_t *g, const char *buf, size_t len, int final)
{
    size_t keep = len, so, eo;
    for (size_t r = 0; !final && r < g->pol.nresp; r++) {
        size_t from = 0;
        int partial = 0;
        while (from <= len) {
            int m = gr_rule_find(&g->pol.resp[r], buf, len, from, 1, &so, &eo,
                                 &partial);
            if (m < 0)
                return -1;
            if (m == 0 || partial)
                break;
            from = eo > so ? eo : so + 1; /* complete: settled below */
        }
        if (partial && so < keep)
            keep = so;
    }
    return (long)keep;
}

/* Applies the answer rules to text that is settled: block ends the stream
 * (1, *v set), flag records, redact rewrites (*out: malloc'd, or NULL
 * when unchanged). */
static int
apply_rules(guard_t *g, sluice_req_t *req, const char *text, size_t len,
            char **out, size_t *outlen, sluice_verdict_t *v)
{
    const char *cur = text;
    size_t n = len, so, eo;
    *out = NULL;
    *outlen = len;
    for (size_t r = 0; r < g->pol.nresp; r++) {
        const gr_rule_t *rule = &g->pol.resp[r];
        int m = gr_rule_find(rule, cur, n, 0, 0, &so, &eo, NULL);
        if (m < 0)
            goto error;
        if (m == 0)
            continue;
        if (rule->action == GR_REDACT) {
            size_t nn, cnt;
            char *red =
                gr_rule_redact(rule, cur, n, g->pol.redaction, &nn, &cnt);
            if (red == NULL)
                goto error;
            free(*out);
            *out = red;
            cur = red;
            n = nn;
        } else if (act(g, req, rule->action, rule->name, "response", v)) {
            free(*out);
            *out = NULL;
            return 1;
        }
    }
    *outlen = n;
    return 0;
error:
    free(*out);
    *out = NULL;
    *v = SLUICE_ERROR;
    return 1;
}

static sluice_verdict_t
on_chunk(void *instance, sluice_req_t *req)
{
    guard_t *g = instance;
    const sluice_host_t *h = g->h;
    if (g->pol.nresp == 0)
        return SLUICE_CONTINUE;
    greq_t *st = state(g, req);
    if (st == NULL)
        return SLUICE_ERROR;
    const char *text;
    size_t len, outlen = 0;
    char *out = NULL;
    sluice_verdict_t v = SLUICE_CONTINUE;
    int has_text = h->delta_text(req, &text, &len) == SLUICE_OK;
    if (!has_text && st->npending == 0)
        return SLUICE_CONTINUE;
    if (!has_text) {
        text = "";
        len = 0;
    }
    /* What is held, then this event's text. */
    char *buf = h->alloc(req, st->npending + len + 1);
    if (buf == NULL)
        return SLUICE_ERROR;
    memcpy(buf, st->pending ? st->pending : "", st->npending);
    memcpy(buf + st->npending, text, len);
    size_t n = st->npending + len;
    buf[n] = '\0';
    /* An event without text (the finish event) ends the text: flush. */
    long keep = settled(g, buf, n, !has_text);
    if (keep < 0)
        return SLUICE_ERROR;
    if (apply_rules(g, req, buf, (size_t)keep, &out, &outlen, &v)) {
        st->npending = 0;
        if (v == SLUICE_RESPOND && !g->can_block_stream)
            v = SLUICE_ERROR;
        return v;
    }
    int rc = h->delta_set_text(req, out != NULL ? out : buf, outlen);
    free(out);
    if (rc == SLUICE_OK) {
        /* The unsettled tail waits, as it came, for the next event. */
        st->pending = buf + keep;
        st->npending = n - (size_t)keep;
        return SLUICE_CONTINUE;
    }
    if (has_text)
        return SLUICE_ERROR;
    /* This event has no delta to carry the text: keep holding it all. */
    st->pending = buf;
    st->npending = n;
    return SLUICE_CONTINUE;
}

SLUICE_PLUGIN_EXPORT const sluice_plugin_t sluice_plugin = {
    SLUICE_PLUGIN_HEADER,
    .name = "guardrails",
    .version = "1.0.0",
    .description = "prompt and answer policy: deny/allow patterns, "
                   "prompt-injection detection, size, model and system "
                   "prompt rules; block, flag or redact",
    .config_schema = schema,
    .fail_open = 0,
    .create = create,
    .destroy = destroy,
    .on_request = on_request,
    .on_response = on_response,
    .on_chunk = on_chunk,
};
