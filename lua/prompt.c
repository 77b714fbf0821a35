/* Prompt templates: compiled at config load, so rendering only copies. */
#include "prompt.h"
#include "error.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *name;
    char *version; /* "1" for a plain string */
    sl_template_t *tpl;
    int is_default;
} sl_prompt_t;

struct sl_prompts {
    sl_prompt_t *items;
    size_t n;
};

static int
name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_';
}

/* A variable name: parts of name_char joined by single dots. */
static int
valid_name(const char *s, size_t n) {
    if (n == 0 || s[0] == '.' || s[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.' && s[i + 1] == '.')
            return 0;
        if (s[i] != '.' && !name_char(s[i]))
            return 0;
    }
    return 1;
}

sl_template_t *
sl_template_compile(const char *text, size_t len, char *err, size_t errcap) {
    sl_template_t *t = calloc(1, sizeof(*t));
    size_t cap = 1;
    for (size_t i = 0; i + 1 < len; i++)
        if (text[i] == '{' && text[i + 1] == '{')
            cap += 2;
    if (t != NULL) {
        t->buf = malloc(len + 1);
        t->segs = calloc(cap, sizeof(*t->segs));
    }
    if (t == NULL || t->buf == NULL || t->segs == NULL) {
        snprintf(err, errcap, "out of memory");
        sl_template_free(t);
        return NULL;
    }
    memcpy(t->buf, text, len);
    t->buf[len] = '\0';
    const char *p = t->buf, *end = t->buf + len;
    while (p < end) {
        const char *open = NULL;
        for (const char *q = p; q + 1 < end; q++)
            if (q[0] == '{' && q[1] == '{') {
                open = q;
                break;
            }
        if (open == NULL) {
            t->segs[t->nsegs++] = (sl_template_seg_t){p, (size_t)(end - p), 0};
            break;
        }
        if (open > p)
            t->segs[t->nsegs++] = (sl_template_seg_t){p, (size_t)(open - p), 0};
        const char *close = NULL;
        for (const char *q = open + 2; q + 1 < end; q++)
            if (q[0] == '}' && q[1] == '}') {
                close = q;
                break;
            }
        if (close == NULL) {
            snprintf(err, errcap, "\"{{\" at byte %zu is never closed",
                     (size_t)(open - t->buf));
            sl_template_free(t);
            return NULL;
        }
        const char *a = open + 2, *b = close;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (!valid_name(a, (size_t)(b - a))) {
            snprintf(err, errcap,
                     "\"{{%.*s}}\" at byte %zu is not a variable name "
                     "(letters, digits, '_', parts joined by '.')",
                     (int)(close - open - 2 > 40 ? 40 : close - open - 2),
                     open + 2, (size_t)(open - t->buf));
            sl_template_free(t);
            return NULL;
        }
        t->segs[t->nsegs++] = (sl_template_seg_t){a, (size_t)(b - a), 1};
        p = close + 2;
    }
    return t;
}

void
sl_template_free(sl_template_t *t) {
    if (t == NULL)
        return;
    free(t->segs);
    free(t->buf);
    free(t);
}

void
sl_prompts_free(sl_prompts_t *p) {
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n; i++) {
        free(p->items[i].name);
        free(p->items[i].version);
        sl_template_free(p->items[i].tpl);
    }
    free(p->items);
    free(p);
}

static int
add(sl_prompts_t *p, const char *name, const char *version, const cJSON *text,
    const char *path, sl_config_errors_t *errs) {
    char err[200];
    if (!cJSON_IsString(text)) {
        sl_config_error_add(errs, 0, path, "must be a string (a template)");
        return SL_ECONFIG;
    }
    sl_template_t *t = sl_template_compile(
        text->valuestring, strlen(text->valuestring), err, sizeof(err));
    if (t == NULL) {
        sl_config_error_add(errs, 0, path, "%s", err);
        return SL_ECONFIG;
    }
    sl_prompt_t *it = &p->items[p->n++];
    it->name = strdup(name);
    it->version = strdup(version);
    it->tpl = t;
    return it->name && it->version ? 0 : SL_ENOMEM;
}

/* One $.prompts member: a template, or versions and a default. */
static int
load_one(sl_prompts_t *p, const cJSON *v, const char *path,
         sl_config_errors_t *errs) {
    char vp[300];
    int rc = 0;
    if (cJSON_IsString(v)) {
        rc = add(p, v->string, "1", v, path, errs);
        if (rc == 0)
            p->items[p->n - 1].is_default = 1;
        return rc;
    }
    if (!cJSON_IsObject(v)) {
        sl_config_error_add(errs, 0, path,
                            "must be a template string or an object with "
                            "\"versions\" and \"default\"");
        return SL_ECONFIG;
    }
    const cJSON *vers = cJSON_GetObjectItemCaseSensitive(v, "versions");
    const cJSON *def = cJSON_GetObjectItemCaseSensitive(v, "default");
    for (const cJSON *it = v->child; it != NULL; it = it->next)
        if (strcmp(it->string, "versions") != 0 &&
            strcmp(it->string, "default") != 0) {
            sl_config_path_key(vp, sizeof(vp), path, it->string);
            sl_config_error_add(errs, 0, vp, "unknown key");
            rc = SL_ECONFIG;
        }
    sl_config_path_key(vp, sizeof(vp), path, "versions");
    if (!cJSON_IsObject(vers) || vers->child == NULL) {
        sl_config_error_add(errs, 0, vp,
                            "required: an object of version -> template");
        return SL_ECONFIG;
    }
    size_t first = p->n;
    for (const cJSON *it = vers->child; it != NULL; it = it->next) {
        char ip[300];
        sl_config_path_key(ip, sizeof(ip), vp, it->string);
        if (it->string[0] == '\0') {
            sl_config_error_add(errs, 0, ip, "a version name is not empty");
            rc = SL_ECONFIG;
            continue;
        }
        int r = add(p, v->string, it->string, it, ip, errs);
        if (r != 0)
            rc = r;
    }
    sl_config_path_key(vp, sizeof(vp), path, "default");
    if (def == NULL) {
        if (cJSON_GetArraySize(vers) == 1) {
            if (p->n > first)
                p->items[first].is_default = 1;
        } else {
            sl_config_error_add(errs, 0, vp,
                                "required when there is more than one "
                                "version");
            rc = SL_ECONFIG;
        }
        return rc;
    }
    if (!cJSON_IsString(def)) {
        sl_config_error_add(errs, 0, vp, "must be a string (a version)");
        return SL_ECONFIG;
    }
    for (size_t i = first; i < p->n; i++)
        if (strcmp(p->items[i].version, def->valuestring) == 0) {
            p->items[i].is_default = 1;
            return rc;
        }
    sl_config_error_add(errs, 0, vp, "no version \"%s\" in versions",
                        def->valuestring);
    return SL_ECONFIG;
}

int
sl_prompts_load(const char *json, sl_prompts_t **out,
                sl_config_errors_t *errs) {
    char path[300];
    int rc = 0;
    *out = NULL;
    cJSON *root = cJSON_Parse(json);
    sl_prompts_t *p = calloc(1, sizeof(*p));
    size_t cap = 0;
    if (root == NULL || p == NULL) {
        cJSON_Delete(root);
        free(p);
        return SL_ENOMEM;
    }
    for (const cJSON *v = root->child; v != NULL; v = v->next)
        cap += cJSON_IsObject(v)
                   ? (size_t)cJSON_GetArraySize(
                         cJSON_GetObjectItemCaseSensitive(v, "versions"))
                   : 1;
    p->items = calloc(cap + 1, sizeof(*p->items));
    if (p->items == NULL) {
        cJSON_Delete(root);
        free(p);
        return SL_ENOMEM;
    }
    for (const cJSON *v = root->child; v != NULL; v = v->next) {
        sl_config_path_key(path, sizeof(path), "$.prompts", v->string);
        if (v->string[0] == '\0') {
            sl_config_error_add(errs, 0, path, "a prompt name is not empty");
            rc = SL_ECONFIG;
            continue;
        }
        int r = load_one(p, v, path, errs);
        if (r != 0)
            rc = rc == SL_ENOMEM ? rc : r;
    }
    cJSON_Delete(root);
    if (rc != 0) {
        sl_prompts_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

const sl_template_t *
sl_prompts_find(const sl_prompts_t *p, const char *name, const char *version,
                int *known) {
    *known = 0;
    for (size_t i = 0; p != NULL && i < p->n; i++) {
        const sl_prompt_t *it = &p->items[i];
        if (strcmp(it->name, name) != 0)
            continue;
        *known = 1;
        if (version == NULL ? it->is_default
                            : strcmp(it->version, version) == 0)
            return it->tpl;
    }
    return NULL;
}
