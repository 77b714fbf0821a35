/* Compiling an instance's guardrails config into a policy, and matching
 * its rules. A bad config is refused with the JSON path of the offending
 * value, and for a regex the PCRE2 message and the offset it points at. */
#include "rules.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static char *
dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

static int
compile(const char *pattern, const char *path, pcre2_code **out, char *err,
        size_t errlen)
{
    int ec;
    PCRE2_SIZE off;
    *out = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                         PCRE2_UTF | PCRE2_MATCH_INVALID_UTF,
                         &ec, &off, NULL);
    if (*out == NULL) {
        char msg[160];
        pcre2_get_error_message(ec, (PCRE2_UCHAR *)msg, sizeof(msg));
        return fail(err, errlen, "%s: invalid regex at offset %zu: %s", path,
                    (size_t)off, msg);
    }
    pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE | PCRE2_JIT_PARTIAL_HARD);
    return 0;
}

static int
parse_action(const cJSON *v, const char *path, int allow_redact,
             gr_action_t *out, char *err, size_t errlen)
{
    if (v == NULL)
        return 0; /* keep the default */
    if (!cJSON_IsString(v))
        return fail(err, errlen, "%s: must be a string", path);
    if (strcmp(v->valuestring, "block") == 0)
        *out = GR_BLOCK;
    else if (strcmp(v->valuestring, "flag") == 0)
        *out = GR_FLAG;
    else if (strcmp(v->valuestring, "redact") == 0 && allow_redact)
        *out = GR_REDACT;
    else
        return fail(err, errlen, "%s: unknown action \"%s\" (%s)", path,
                    v->valuestring,
                    allow_redact ? "block, flag or redact" : "block or flag");
    return 0;
}

static int
rule_name_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') ||
              (s[n] >= '0' && s[n] <= '9') || s[n] == '_' || s[n] == '-' ||
              s[n] == '.'))
            return 0;
    return n > 0 && n <= 64;
}

/* A string or an array of strings at v into rule's patterns. */
static int
patterns(gr_rule_t *rule, const cJSON *v, const char *path, char *err,
         size_t errlen)
{
    char p[512];
    if (cJSON_IsString(v)) {
        rule->re = calloc(1, sizeof(*rule->re));
        if (rule->re == NULL)
            return fail(err, errlen, "out of memory");
        rule->nre = 1;
        return compile(v->valuestring, path, &rule->re[0], err, errlen);
    }
    if (!cJSON_IsArray(v))
        return fail(err, errlen, "%s: must be a string or a list of strings",
                    path);
    size_t n = (size_t)cJSON_GetArraySize(v);
    rule->re = calloc(n ? n : 1, sizeof(*rule->re));
    if (rule->re == NULL)
        return fail(err, errlen, "out of memory");
    const cJSON *it;
    size_t i = 0;
    cJSON_ArrayForEach(it, v)
    {
        snprintf(p, sizeof(p), "%s[%zu]", path, i);
        if (!cJSON_IsString(it))
            return fail(err, errlen, "%s: must be a string", p);
        rule->nre = i + 1;
        if (compile(it->valuestring, p, &rule->re[i], err, errlen) != 0)
            return -1;
        i++;
    }
    return 0;
}

/* "deny"/"response_deny": {"RULE": {"pattern(s)": ..., "action": ...}}. */
static int
rule_map(const cJSON *obj, const char *where, const char *key,
         gr_rule_t **out, size_t *nout, char *err, size_t errlen)
{
    char path[512];
    if (obj == NULL)
        return 0;
    snprintf(path, sizeof(path), "%s.%s", where, key);
    if (!cJSON_IsObject(obj))
        return fail(err, errlen, "%s: must be an object of named rules", path);
    size_t n = (size_t)cJSON_GetArraySize(obj);
    *out = calloc(n ? n : 1, sizeof(**out));
    if (*out == NULL)
        return fail(err, errlen, "out of memory");
    const cJSON *r;
    cJSON_ArrayForEach(r, obj)
    {
        gr_rule_t *rule = &(*out)[(*nout)++];
        snprintf(path, sizeof(path), "%s.%s.%s", where, key, r->string);
        if (!rule_name_ok(r->string))
            return fail(err, errlen,
                        "%s: a rule name is 1..64 of [A-Za-z0-9_.-]", path);
        rule->name = dup(r->string);
        if (rule->name == NULL)
            return fail(err, errlen, "out of memory");
        if (!cJSON_IsObject(r))
            return fail(err, errlen, "%s: must be an object", path);
        const cJSON *it;
        cJSON_ArrayForEach(it, r)
        {
            if (strcmp(it->string, "pattern") != 0 &&
                strcmp(it->string, "patterns") != 0 &&
                strcmp(it->string, "action") != 0)
                return fail(err, errlen, "%s.%s: unknown key", path,
                            it->string);
        }
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(r, "pattern");
        const char *pk = "pattern";
        if (pat == NULL) {
            pat = cJSON_GetObjectItemCaseSensitive(r, "patterns");
            pk = "patterns";
        }
        char pp[600];
        snprintf(pp, sizeof(pp), "%s.%s", path, pk);
        if (pat == NULL)
            return fail(err, errlen, "%s: needs \"pattern\" or \"patterns\"",
                        path);
        if (patterns(rule, pat, pp, err, errlen) != 0)
            return -1;
        snprintf(pp, sizeof(pp), "%s.action", path);
        rule->action = GR_BLOCK;
        if (parse_action(cJSON_GetObjectItemCaseSensitive(r, "action"), pp, 1,
                         &rule->action, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static int
string_list(const cJSON *v, const char *path, char ***out, size_t *n,
            char *err, size_t errlen)
{
    if (v == NULL)
        return 0;
    if (!cJSON_IsArray(v))
        return fail(err, errlen, "%s: must be a list of strings", path);
    *n = 0;
    *out = calloc((size_t)cJSON_GetArraySize(v) + 1, sizeof(char *));
    if (*out == NULL)
        return fail(err, errlen, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, v)
    {
        if (!cJSON_IsString(it))
            return fail(err, errlen, "%s[%zu]: must be a string", path, *n);
        if (((*out)[(*n)++] = dup(it->valuestring)) == NULL)
            return fail(err, errlen, "out of memory");
    }
    return 0;
}

/* A named rule from a list of patterns and an action key. */
static int
list_rule(gr_rule_t *rule, const char *name, const cJSON *root,
          const char *where, const char *key, const char *action_key,
          int allow_redact, char *err, size_t errlen)
{
    char path[512];
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    rule->name = dup(name);
    rule->action = GR_BLOCK;
    if (rule->name == NULL)
        return fail(err, errlen, "out of memory");
    snprintf(path, sizeof(path), "%s.%s", where, action_key);
    if (parse_action(cJSON_GetObjectItemCaseSensitive(root, action_key), path,
                     allow_redact, &rule->action, err, errlen) != 0)
        return -1;
    if (v == NULL || (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0))
        return 0;
    snprintf(path, sizeof(path), "%s.%s", where, key);
    return patterns(rule, v, path, err, errlen);
}

static const char *const known_keys[] = {
    "deny", "allow", "allow_action", "injection", "max_prompt_chars",
    "max_prompt_tokens", "size_action", "allow_models", "deny_models",
    "model_action", "system_require", "system_forbid", "system_action",
    "response_deny", "redaction", NULL};

int
gr_policy_build(gr_policy_t *p, const char *json, const char *where,
                char *err, size_t errlen)
{
    char path[512];
    int rc = -1;
    memset(p, 0, sizeof(*p));
    cJSON *root = cJSON_Parse(json);
    if (!cJSON_IsObject(root)) {
        fail(err, errlen, "%s: not a JSON object", where);
        goto out;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        size_t i = 0;
        while (known_keys[i] && strcmp(known_keys[i], it->string) != 0)
            i++;
        if (known_keys[i] == NULL) {
            fail(err, errlen, "%s.%s: unknown key", where, it->string);
            goto out;
        }
    }
    if (rule_map(cJSON_GetObjectItemCaseSensitive(root, "deny"), where, "deny",
                 &p->deny, &p->ndeny, err, errlen) != 0 ||
        rule_map(cJSON_GetObjectItemCaseSensitive(root, "response_deny"),
                 where, "response_deny", &p->resp, &p->nresp, err,
                 errlen) != 0 ||
        list_rule(&p->allow, "allow", root, where, "allow", "allow_action", 0,
                  err, errlen) != 0 ||
        list_rule(&p->system_require, "system_require", root, where,
                  "system_require", "system_action", 1, err, errlen) != 0 ||
        list_rule(&p->system_forbid, "system_forbid", root, where,
                  "system_forbid", "system_action", 1, err, errlen) != 0)
        goto out;
    /* Nothing to redact when required text is missing: it blocks. */
    if (p->system_require.action == GR_REDACT)
        p->system_require.action = GR_BLOCK;

    const cJSON *inj = cJSON_GetObjectItemCaseSensitive(root, "injection");
    int inj_on = 1;
    p->threshold = 1.0;
    p->injection_action = GR_BLOCK;
    if (inj != NULL) {
        snprintf(path, sizeof(path), "%s.injection", where);
        if (!cJSON_IsObject(inj)) {
            fail(err, errlen, "%s: must be an object", path);
            goto out;
        }
        cJSON_ArrayForEach(it, inj)
        {
            if (strcmp(it->string, "enabled") != 0 &&
                strcmp(it->string, "threshold") != 0 &&
                strcmp(it->string, "action") != 0) {
                fail(err, errlen, "%s.%s: unknown key", path, it->string);
                goto out;
            }
        }
        const cJSON *en = cJSON_GetObjectItemCaseSensitive(inj, "enabled");
        const cJSON *th = cJSON_GetObjectItemCaseSensitive(inj, "threshold");
        if (en != NULL && !cJSON_IsBool(en)) {
            fail(err, errlen, "%s.enabled: must be true or false", path);
            goto out;
        }
        inj_on = en == NULL || cJSON_IsTrue(en);
        if (th != NULL && (!cJSON_IsNumber(th) || th->valuedouble <= 0)) {
            fail(err, errlen, "%s.threshold: must be a number above 0", path);
            goto out;
        }
        if (th != NULL)
            p->threshold = th->valuedouble;
        snprintf(path, sizeof(path), "%s.injection.action", where);
        if (parse_action(cJSON_GetObjectItemCaseSensitive(inj, "action"), path,
                         0, &p->injection_action, err, errlen) != 0)
            goto out;
    }
    if (inj_on && gr_detector_create(&p->det, err, errlen) != 0)
        goto out;

    static const char *const sizes[] = {"max_prompt_chars",
                                        "max_prompt_tokens"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, sizes[i]);
        if (v == NULL)
            continue;
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 ||
            v->valuedouble != (double)(int64_t)v->valuedouble) {
            fail(err, errlen, "%s.%s: must be an integer >= 0 (0: no limit)",
                 where, sizes[i]);
            goto out;
        }
        *(i == 0 ? &p->max_chars : &p->max_tokens) = (int64_t)v->valuedouble;
    }
    snprintf(path, sizeof(path), "%s.size_action", where);
    if (parse_action(cJSON_GetObjectItemCaseSensitive(root, "size_action"),
                     path, 0, &p->size_action, err, errlen) != 0)
        goto out;
    snprintf(path, sizeof(path), "%s.allow_models", where);
    if (string_list(cJSON_GetObjectItemCaseSensitive(root, "allow_models"),
                    path, &p->allow_models, &p->nallow_models, err,
                    errlen) != 0)
        goto out;
    snprintf(path, sizeof(path), "%s.deny_models", where);
    if (string_list(cJSON_GetObjectItemCaseSensitive(root, "deny_models"),
                    path, &p->deny_models, &p->ndeny_models, err, errlen) != 0)
        goto out;
    snprintf(path, sizeof(path), "%s.model_action", where);
    if (parse_action(cJSON_GetObjectItemCaseSensitive(root, "model_action"),
                     path, 0, &p->model_action, err, errlen) != 0)
        goto out;
    const cJSON *red = cJSON_GetObjectItemCaseSensitive(root, "redaction");
    if (red != NULL && !cJSON_IsString(red)) {
        fail(err, errlen, "%s.redaction: must be a string", where);
        goto out;
    }
    p->redaction = dup(red != NULL ? red->valuestring : "[REDACTED]");
    if (p->redaction == NULL) {
        fail(err, errlen, "out of memory");
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(root);
    if (rc != 0)
        gr_policy_free(p);
    return rc;
}

static void
rule_free(gr_rule_t *r)
{
    for (size_t i = 0; i < r->nre; i++)
        pcre2_code_free(r->re[i]);
    free(r->re);
    free(r->name);
}

static void
list_free(char **l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

void
gr_policy_free(gr_policy_t *p)
{
    for (size_t i = 0; i < p->ndeny; i++)
        rule_free(&p->deny[i]);
    free(p->deny);
    for (size_t i = 0; i < p->nresp; i++)
        rule_free(&p->resp[i]);
    free(p->resp);
    rule_free(&p->allow);
    rule_free(&p->system_require);
    rule_free(&p->system_forbid);
    gr_detector_free(p->det);
    list_free(p->allow_models, p->nallow_models);
    list_free(p->deny_models, p->ndeny_models);
    free(p->redaction);
    memset(p, 0, sizeof(*p));
}

int
gr_rule_find(const gr_rule_t *rule, const char *text, size_t len,
             size_t from, int partial, size_t *so, size_t *eo,
             int *is_partial)
{
    int found = 0;
    if (is_partial != NULL)
        *is_partial = 0;
    for (size_t i = 0; i < rule->nre; i++) {
        pcre2_match_data *md =
            pcre2_match_data_create_from_pattern(rule->re[i], NULL);
        if (md == NULL)
            return -1;
        int rc = pcre2_match(rule->re[i], (PCRE2_SPTR)text, len, from,
                             partial ? PCRE2_PARTIAL_HARD : 0, md, NULL);
        if (rc > 0 || rc == PCRE2_ERROR_PARTIAL) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            /* The earliest start wins: it is what must be held back. */
            if (!found || ov[0] < *so) {
                *so = ov[0];
                *eo = rc == PCRE2_ERROR_PARTIAL ? len : ov[1];
                if (is_partial != NULL)
                    *is_partial = rc == PCRE2_ERROR_PARTIAL;
            }
            found = 1;
        } else if (rc != PCRE2_ERROR_NOMATCH) {
            pcre2_match_data_free(md);
            return -1; /* bad UTF-8, match limit */
        }
        pcre2_match_data_free(md);
    }
    return found;
}

char *
gr_rule_redact(const gr_rule_t *rule, const char *text, size_t len,
               const char *with, size_t *outlen, size_t *count)
{
    size_t cap = len + 1, wl = strlen(with);
    char *cur = malloc(cap);
    if (cur == NULL)
        return NULL;
    memcpy(cur, text, len);
    cur[len] = '\0';
    size_t n = len;
    *count = 0;
    for (size_t i = 0; i < rule->nre; i++) {
        size_t from = 0;
        for (;;) {
            pcre2_match_data *md =
                pcre2_match_data_create_from_pattern(rule->re[i], NULL);
            if (md == NULL) {
                free(cur);
                return NULL;
            }
            int rc = pcre2_match(rule->re[i], (PCRE2_SPTR)cur, n, from, 0, md,
                                 NULL);
            if (rc <= 0) {
                pcre2_match_data_free(md);
                break;
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t so = ov[0], eo = ov[1];
            pcre2_match_data_free(md);
            size_t nn = n - (eo - so) + wl;
            char *next = malloc(nn + 1);
            if (next == NULL) {
                free(cur);
                return NULL;
            }
            memcpy(next, cur, so);
            memcpy(next + so, with, wl);
            memcpy(next + so + wl, cur + eo, n - eo);
            next[nn] = '\0';
            free(cur);
            cur = next;
            n = nn;
            (*count)++;
            from = so + wl + (eo == so ? 1 : 0);
            if (from > n)
                break;
        }
    }
    *outlen = n;
    return cur;
}
