/* Prompt templates in the store, for Lua scripts' sluice.prompt.render:
 * GET /admin/prompts lists them, PUT /admin/prompts/NAME[@VERSION] stores
 * one ({"template": "..."}, checked before it is stored), DELETE removes
 * one. Templates in the config's $.prompts take precedence. */
#ifndef SL_ADMIN_PROMPTS_H
#define SL_ADMIN_PROMPTS_H

#include "request.h"

/* Answers r and returns 1 when its path is /admin/prompts[/...]; 0 (r
 * untouched) otherwise. The caller has checked the admin token. */
int sl_admin_prompts(sl_request_t *r);

#endif
