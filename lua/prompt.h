/* Prompt templates for sluice.prompt.render: "{{name}}" placeholders in
 * text, compiled once. Templates live in the config ($.prompts, compiled
 * with the snapshot) or in the store's prompts database (compiled when
 * rendered). */
#ifndef SL_LUA_PROMPT_H
#define SL_LUA_PROMPT_H

#include "config.h"

#include <stddef.h>

/* A compiled template: literal text and variables, in order. */
typedef struct {
    const char *text; /* a literal, or a variable's name ("user.name") */
    size_t len;
    int var;
} sl_template_seg_t;

typedef struct {
    sl_template_seg_t *segs;
    size_t nsegs;
    char *buf; /* the text the segments point into */
} sl_template_t;

/* Compiles text: "{{ name }}" (spaces optional) stands for a variable; a
 * name is letters, digits and '_' in dot-separated parts ("user.name").
 * NULL with a message in err (naming the byte offset) on a syntax error or
 * out of memory. */
sl_template_t *sl_template_compile(const char *text, size_t len, char *err,
                                   size_t errcap);
void sl_template_free(sl_template_t *t);

typedef struct sl_prompts sl_prompts_t;

/* Compiles $.prompts: {"NAME": "template"} or {"NAME": {"versions":
 * {"V": "template", ...}, "default": "V"}}. Problems go to errs with their
 * JSON paths. 0 and *out, or SL_ECONFIG. */
int sl_prompts_load(const char *json, sl_prompts_t **out,
                    sl_config_errors_t *errs);
void sl_prompts_free(sl_prompts_t *p);

/* The template NAME (at version, or its default when version is NULL) of
 * the config; NULL when the config has no prompt of that name (*known 0)
 * or not that version (*known 1). */
const sl_template_t *sl_prompts_find(const sl_prompts_t *p, const char *name,
                                     const char *version, int *known);

#endif
