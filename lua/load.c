/* A snapshot's scripts and prompts: read and checked once when the config
 * is loaded (start, reload, `sluice check`), then shared read-only by the
 * workers, each of which builds its own Lua state from them. */
#include "error.h"
#include "lua_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_LUA_SCRIPT_MAX (4u << 20)

static char *
read_file(const char *path, size_t *len, char *err, size_t cap) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, cap, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(SL_LUA_SCRIPT_MAX + 1);
    size_t n = buf ? fread(buf, 1, SL_LUA_SCRIPT_MAX + 1, f) : 0;
    int bad = buf == NULL || ferror(f);
    fclose(f);
    if (bad || n > SL_LUA_SCRIPT_MAX) {
        snprintf(err, cap, "cannot read %s: %s", path,
                 buf == NULL ? "out of memory"
                 : bad       ? "read error"
                             : "larger than 4 MiB");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void
set_free(sl_lua_set_t *set) {
    if (set == NULL)
        return;
    for (int i = 0; set->vms != NULL && i < set->nslots; i++)
        sl_lua_vm_free(set->vms[i]);
    free(set->vms);
    for (size_t i = 0; set->scripts != NULL && i < set->nroutes; i++) {
        free(set->scripts[i].source);
        free(set->scripts[i].chunkname);
        free(set->scripts[i].kv_ns);
    }
    free(set->scripts);
    sl_prompts_free(set->prompts);
    free(set);
}

void
sl_lua_free(void *set) {
    set_free(set);
}

/* A scratch state compiles each script and runs its top level, as each
 * worker will: syntax errors say file:line here. */
static int
check_scripts(sl_lua_set_t *set, sl_config_errors_t *errs) {
    char path[64];
    int rc = 0;
    sl_lua_vm_t *vm = sl_lua_vm_new(NULL);
    if (vm == NULL)
        return SL_ENOMEM;
    vm->set = set;
    for (size_t i = 0; i < set->nroutes; i++) {
        sl_lua_mod_t mod;
        if (set->scripts[i].route == NULL)
            continue;
        if (sl_lua_vm_load(vm, &set->scripts[i], &mod) != 0) {
            snprintf(path, sizeof(path), "$.routes[%zu].lua", i);
            sl_config_error_add(errs, 0, path, "%s", mod.error);
            rc = SL_ECONFIG;
        }
    }
    sl_lua_vm_free(vm);
    return rc;
}

int
sl_lua_load(const sl_config_t *cfg, int nslots, sl_lua_set_t **out,
            sl_config_errors_t *errs) {
    int rc = 0, any = cfg->prompts != NULL;
    char path[300], err[400];
    *out = NULL;
    for (size_t i = 0; i < cfg->nroutes; i++)
        any |= cfg->routes[i].lua != NULL;
    if (!any)
        return 0;
    sl_lua_set_t *set = calloc(1, sizeof(*set));
    if (set == NULL)
        return SL_ENOMEM;
    set->cfg = cfg;
    set->nroutes = cfg->nroutes;
    set->nslots = nslots;
    set->scripts = calloc(cfg->nroutes + 1, sizeof(*set->scripts));
    set->vms = calloc((size_t)nslots + 1, sizeof(*set->vms));
    if (set->scripts == NULL || set->vms == NULL) {
        set_free(set);
        return SL_ENOMEM;
    }
    /* Every problem is reported: scripts are checked even when a prompt
     * is wrong. */
    if (cfg->prompts != NULL &&
        (rc = sl_prompts_load(cfg->prompts, &set->prompts, errs)) ==
            SL_ENOMEM) {
        set_free(set);
        return rc;
    }
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const sl_route_t *rt = &cfg->routes[i];
        sl_lua_script_t *s = &set->scripts[i];
        if (rt->lua == NULL)
            continue;
        snprintf(path, sizeof(path), "$.routes[%zu].lua", i);
        if (rt->kind != SL_ROUTE_CHAT && rt->kind != SL_ROUTE_MESSAGES) {
            sl_config_error_add(errs, 0, path,
                                "Lua scripts run on chat and messages "
                                "routes only");
            rc = SL_ECONFIG;
            continue;
        }
        s->source = read_file(rt->lua_file ? rt->lua_file : rt->lua, &s->len,
                              err, sizeof(err));
        if (s->source == NULL) {
            sl_config_error_add(errs, 0, path, "%s", err);
            rc = SL_ECONFIG;
            continue;
        }
        size_t n = strlen(rt->lua);
        s->chunkname = malloc(n + 2);
        s->kv_ns = malloc(strlen(rt->path) + 5);
        if (s->chunkname == NULL || s->kv_ns == NULL) {
            set_free(set);
            return SL_ENOMEM;
        }
        s->chunkname[0] = '@';
        memcpy(s->chunkname + 1, rt->lua, n + 1);
        sprintf(s->kv_ns, "lua:%s", rt->path);
        s->route = rt;
    }
    int crc = check_scripts(set, errs);
    if (crc != 0)
        rc = crc;
    if (rc != 0) {
        set_free(set);
        return rc;
    }
    *out = set;
    return 0;
}
