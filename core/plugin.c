/* Loads the C plugins of a config: opens each library, checks its ABI,
 * validates the instance's config against the plugin's schema, creates the
 * instance and builds each route's chain. Not the hot path: this runs at
 * start and on reload, off the workers.
 *
 * Libraries are shared by every snapshot that uses them: a process-wide
 * list counts the snapshots holding each one, so a config-only reload
 * reuses the open library and the library is closed when the last
 * snapshot holding it goes. A file that changed since it was opened (a
 * new build copied over the old path) is loaded from a private copy:
 * dlopen() would otherwise hand back the old one, still mapped under the
 * same name, until every old snapshot has gone. */
#include "plugin.h"
#include "error.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The descriptor must reach at least through destroy: a plugin without
 * create/destroy fields is not a 1.x plugin. */
#define SL_DESC_MIN                                                            \
    (offsetof(sluice_plugin_t, destroy) +                                      \
     sizeof(((sluice_plugin_t *)0)->destroy))
#define SL_SCHEMA_MAX 256

struct sl_plugin_lib {
    char *path; /* as configured (resolved) */
    dev_t dev;
    ino_t ino;
    struct timespec mtime;
    off_t size;
    void *handle;
    const sluice_plugin_t *sym;
    int refs; /* sets (snapshots) holding it */
    struct sl_plugin_lib *next;
};

static pthread_mutex_t libs_lock = PTHREAD_MUTEX_INITIALIZER;
static sl_plugin_lib_t *libs;

static int
same_file(const sl_plugin_lib_t *l, const struct stat *st) {
    return l->dev == st->st_dev && l->ino == st->st_ino &&
           l->size == st->st_size && l->mtime.tv_sec == st->st_mtim.tv_sec &&
           l->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* Copies src to a new file in dir; returns its malloc'd name or NULL. */
static char *
copy_to(const char *src, const char *dir) {
    char *name = malloc(strlen(dir) + 32);
    if (name == NULL)
        return NULL;
    sprintf(name, "%s/.sluice-plugin-XXXXXX", dir);
    int out = mkostemp(name, O_CLOEXEC);
    if (out < 0) {
        free(name);
        return NULL;
    }
    int in = open(src, O_RDONLY | O_CLOEXEC), ok = in >= 0;
    char buf[65536];
    ssize_t n;
    while (ok && (n = read(in, buf, sizeof(buf))) != 0) {
        if (n < 0 || write(out, buf, (size_t)n) != n)
            ok = 0;
    }
    if (in >= 0)
        close(in);
    if (close(out) != 0 || !ok) {
        unlink(name);
        free(name);
        return NULL;
    }
    return name;
}

/* dlopen()s a private copy of path: beside it first (same mount, same exec
 * policy), else in TMPDIR. The copy is unlinked at once; the mapping
 * stays. */
static void *
open_copy(const char *path) {
    char *dir = strdup(path), *slash;
    if (dir == NULL)
        return NULL;
    slash = strrchr(dir, '/');
    if (slash != NULL)
        *slash = '\0';
    const char *tmp = getenv("TMPDIR");
    const char *dirs[2] = {slash != NULL && dir[0] ? dir : ".",
                           tmp != NULL && tmp[0] ? tmp : "/tmp"};
    void *h = NULL;
    for (int i = 0; i < 2 && h == NULL; i++) {
        char *copy = copy_to(path, dirs[i]);
        if (copy == NULL)
            continue;
        h = dlopen(copy, RTLD_NOW | RTLD_LOCAL);
        unlink(copy);
        free(copy);
    }
    free(dir);
    return h;
}

/* Opens (or shares) the library at path; NULL with err set. */
static sl_plugin_lib_t *
lib_open(const char *path, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file", path);
        return NULL;
    }
    pthread_mutex_lock(&libs_lock);
    sl_plugin_lib_t *l, *stale = NULL;
    for (l = libs; l != NULL; l = l->next) {
        if (strcmp(l->path, path) != 0)
            continue;
        if (same_file(l, &st)) {
            l->refs++;
            pthread_mutex_unlock(&libs_lock);
            return l;
        }
        stale = l;
    }
    dlerror();
    void *h =
        stale != NULL ? open_copy(path) : dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        const char *why = dlerror();
        if (why != NULL)
            snprintf(err, errlen, "cannot load %s: %s", path, why);
        else /* no copy could be written */
            snprintf(err, errlen,
                     "cannot load the new %s beside the old one: no "
                     "writable directory for a private copy",
                     path);
        pthread_mutex_unlock(&libs_lock);
        return NULL;
    }
    dlerror();
    const sluice_plugin_t *sym = dlsym(h, SLUICE_PLUGIN_SYMBOL);
    if (sym == NULL) {
        snprintf(err, errlen,
                 "%s exports no '" SLUICE_PLUGIN_SYMBOL
                 "' symbol: it is not a Sluice plugin",
                 path);
        dlclose(h);
        pthread_mutex_unlock(&libs_lock);
        return NULL;
    }
    l = calloc(1, sizeof(*l));
    if (l == NULL || (l->path = strdup(path)) == NULL) {
        free(l);
        dlclose(h);
        pthread_mutex_unlock(&libs_lock);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    l->size = st.st_size;
    l->mtime = st.st_mtim;
    l->handle = h;
    l->sym = sym;
    l->refs = 1;
    l->next = libs;
    libs = l;
    pthread_mutex_unlock(&libs_lock);
    return l;
}

static void
lib_close(sl_plugin_lib_t *l) {
    if (l == NULL)
        return;
    pthread_mutex_lock(&libs_lock);
    if (--l->refs > 0) {
        pthread_mutex_unlock(&libs_lock);
        return;
    }
    for (sl_plugin_lib_t **pp = &libs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    }
    pthread_mutex_unlock(&libs_lock);
    dlclose(l->handle);
    free(l->path);
    free(l);
}

/* ---- the config schema ---- */

static const char *
type_name(sluice_cfg_type_t t) {
    switch (t) {
    case SLUICE_CFG_STRING: return "a string";
    case SLUICE_CFG_INT: return "an integer";
    case SLUICE_CFG_BOOL: return "true or false";
    case SLUICE_CFG_NUMBER: return "a number";
    case SLUICE_CFG_STRING_LIST: return "an array of strings";
    case SLUICE_CFG_OBJECT: return "an object";
    }
    return "?";
}

/* 1 when v is an integral number in int64 range. */
static int
is_int64(const cJSON *v) {
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return 0;
    double d = v->valuedouble;
    return d >= -9223372036854775808.0 && d < 9223372036854775808.0 &&
           floor(d) == d;
}

/* Checks v against type t; on a mismatch reports it at path (or at the
 * first bad item of a list) and returns 0. */
static int
check_type(sl_config_errors_t *errs, const char *path, sluice_cfg_type_t t,
           const cJSON *v) {
    int ok = 0;
    switch (t) {
    case SLUICE_CFG_STRING: ok = cJSON_IsString(v); break;
    case SLUICE_CFG_INT: ok = is_int64(v); break;
    case SLUICE_CFG_BOOL: ok = cJSON_IsBool(v); break;
    case SLUICE_CFG_NUMBER:
        ok = cJSON_IsNumber(v) && isfinite(v->valuedouble);
        break;
    case SLUICE_CFG_OBJECT: ok = cJSON_IsObject(v); break;
    case SLUICE_CFG_STRING_LIST:
        if (!cJSON_IsArray(v))
            break;
        ok = 1;
        int i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, v) {
            if (!cJSON_IsString(it)) {
                char p[256];
                snprintf(p, sizeof(p), "%.240s[%d]", path, i);
                sl_config_error_add(errs, 0, p, "must be a string");
                return 0;
            }
            i++;
        }
        return 1;
    }
    if (!ok)
        sl_config_error_add(errs, 0, path, "must be %s", type_name(t));
    return ok;
}

/* The schema's default for f as JSON, or NULL when it is not valid. */
static cJSON *
parse_default(const sluice_config_field_t *f) {
    const char *d = f->default_value;
    char *end;
    cJSON *v = NULL;
    switch (f->type) {
    case SLUICE_CFG_STRING: return cJSON_CreateString(d);
    case SLUICE_CFG_INT: {
        errno = 0;
        long long n = strtoll(d, &end, 10);
        if (errno == 0 && end != d && *end == '\0' && n > -9007199254740992LL &&
            n < 9007199254740992LL)
            return cJSON_CreateNumber((double)n);
        return NULL;
    }
    case SLUICE_CFG_NUMBER: {
        double n = strtod(d, &end);
        if (end != d && *end == '\0' && isfinite(n))
            return cJSON_CreateNumber(n);
        return NULL;
    }
    case SLUICE_CFG_BOOL:
        if (strcmp(d, "true") == 0)
            return cJSON_CreateTrue();
        if (strcmp(d, "false") == 0)
            return cJSON_CreateFalse();
        return NULL;
    case SLUICE_CFG_STRING_LIST:
    case SLUICE_CFG_OBJECT:
        v = cJSON_Parse(d);
        if (v != NULL && check_type(NULL, "", f->type, v))
            return v;
        cJSON_Delete(v);
        return NULL;
    }
    return NULL;
}

/* Validates the instance's config (JSON text) against its schema and
 * builds the effective config with defaults filled in. Returns 0 or the
 * number of errors added. */
static int
load_config(sl_plugin_inst_t *in, const sl_plugin_conf_t *pc, const char *base,
            sl_config_errors_t *errs) {
    const sluice_config_field_t *schema = in->desc.config_schema;
    char cpath[256], p[256];
    int nerr = 0;
    snprintf(cpath, sizeof(cpath), "%.240s.config", base);

    cJSON *given = cJSON_Parse(pc->config ? pc->config : "{}");
    cJSON *out = cJSON_CreateObject();
    in->config.cache = cJSON_CreateObject();
    if (given == NULL || out == NULL || in->config.cache == NULL) {
        sl_config_error_add(errs, 0, base, "out of memory");
        cJSON_Delete(given);
        cJSON_Delete(out);
        return 1;
    }
    size_t nfields = 0;
    for (; schema != NULL && schema[nfields].name != NULL; nfields++) {
        const sluice_config_field_t *f = &schema[nfields];
        if (nfields == SL_SCHEMA_MAX) {
            sl_config_error_add(errs, 0, base,
                                "plugin '%s' has a config schema of more "
                                "than %d keys (is it terminated?)",
                                in->desc.name, SL_SCHEMA_MAX);
            nerr++;
            break;
        }
        if (f->type < SLUICE_CFG_STRING || f->type > SLUICE_CFG_OBJECT ||
            f->name[0] == '\0' || cJSON_HasObjectItem(out, f->name)) {
            sl_config_error_add(errs, 0, base,
                                "plugin '%s' declares config key '%.64s' "
                                "badly (empty, twice, or of an unknown "
                                "type): a bug in the plugin",
                                in->desc.name, f->name);
            nerr++;
            continue;
        }
        sl_config_path_key(p, sizeof(p), cpath, f->name);
        cJSON *v = cJSON_DetachItemFromObjectCaseSensitive(given, f->name);
        if (v != NULL) {
            if (!check_type(errs, p, f->type, v))
                nerr++;
        } else if (f->required) {
            sl_config_error_add(errs, 0, p, "required by plugin '%s'",
                                in->desc.name);
            nerr++;
        } else if (f->default_value != NULL) {
            v = parse_default(f);
            if (v == NULL) {
                sl_config_error_add(errs, 0, p,
                                    "plugin '%s' declares a default that is "
                                    "not %s: a bug in the plugin",
                                    in->desc.name, type_name(f->type));
                nerr++;
            }
        }
        if (v != NULL) {
            char *text = cJSON_PrintUnformatted(v);
            cJSON_AddItemToObject(out, f->name, v);
            if (text != NULL)
                cJSON_AddItemToObject(in->config.cache, f->name,
                                      cJSON_CreateString(text));
            free(text);
        }
    }
    /* What is left was not declared. cJSON keeps duplicate keys: the
     * first of each went above, a second one is reported here too. */
    for (const cJSON *it = given->child; it != NULL; it = it->next) {
        sl_config_path_key(p, sizeof(p), cpath, it->string);
        int declared = 0;
        for (size_t i = 0; i < nfields; i++)
            declared |= strcmp(schema[i].name, it->string) == 0;
        sl_config_error_add(errs, 0, p,
                            declared ? "duplicate key"
                                     : "unknown key for plugin '%s'",
                            in->desc.name);
        nerr++;
    }
    cJSON_Delete(given);
    in->config.json = out;
    in->config.text = cJSON_PrintUnformatted(out);
    if (in->config.text == NULL && nerr == 0) {
        sl_config_error_add(errs, 0, base, "out of memory");
        nerr++;
    }
    return nerr;
}

/* ---- instances ---- */

static int
name_ok(const char *s) {
    size_t n = 0;
    for (; s[n] != '\0'; n++)
        if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9') ||
              s[n] == '_' || s[n] == '-'))
            return 0;
    return n > 0 && n <= 64;
}

/* Opens the library and takes its descriptor; 0 or the errors added. */
static int
open_inst(sl_plugins_t *ps, sl_plugin_inst_t *in, const sl_plugin_conf_t *pc,
          const char *base, sl_config_errors_t *errs) {
    char p[256], err[512] = "";
    sl_config_path_key(p, sizeof(p), base, "path");
    if (pc->file == NULL) {
        sl_config_error_add(errs, 0, p, "required");
        return 1;
    }
    in->lib = lib_open(pc->file, err, sizeof(err));
    if (in->lib == NULL) {
        sl_config_error_add(errs, 0, p, "%s", err);
        return 1;
    }
    const sluice_plugin_t *d = in->lib->sym;
    if (d->abi_major != SLUICE_ABI_MAJOR) {
        sl_config_error_add(errs, 0, p,
                            "%.150s is built for plugin ABI %u.%u; this "
                            "gateway speaks ABI %d.%d (the major versions "
                            "must match: rebuild the plugin)",
                            pc->file, (unsigned)d->abi_major,
                            (unsigned)d->abi_minor, SLUICE_ABI_MAJOR,
                            SLUICE_ABI_MINOR);
        return 1;
    }
    if (d->struct_size < SL_DESC_MIN) {
        sl_config_error_add(errs, 0, p,
                            "%.150s has a descriptor of %zu bytes, smaller "
                            "than any ABI %d plugin's",
                            pc->file, d->struct_size, SLUICE_ABI_MAJOR);
        return 1;
    }
    /* Only the fields the plugin knew about: the rest stay NULL. */
    memcpy(&in->desc, d,
           d->struct_size < sizeof(in->desc) ? d->struct_size
                                             : sizeof(in->desc));
    if (in->desc.name == NULL || !name_ok(in->desc.name)) {
        sl_config_error_add(errs, 0, p,
                            "%.150s declares no valid plugin name (1 to 64 "
                            "of a-z, 0-9, '_', '-')",
                            pc->file);
        return 1;
    }
    if (in->desc.version == NULL)
        in->desc.version = "";
    for (size_t i = 0; i < ps->ninsts; i++) {
        const sl_plugin_inst_t *o = &ps->insts[i];
        if (o->lib == NULL || o->lib->handle == in->lib->handle ||
            o->desc.name == NULL || strcmp(o->desc.name, in->desc.name) != 0)
            continue;
        sl_config_error_add(errs, 0, p,
                            "%.100s is plugin '%s', and so is %.100s "
                            "($.plugins.%s): two plugins cannot share a name",
                            pc->file, in->desc.name, o->lib->path, o->name);
        return 1;
    }
    return 0;
}

static int
create_inst(sl_plugin_inst_t *in, const char *base, sl_config_errors_t *errs) {
    if (in->desc.create == NULL) {
        in->created = 1;
        return 0;
    }
    char err[256] = "";
    void *instance = NULL;
    struct sluice_req ctx = {.inst = in, .phase = SLUICE_PHASE_LOAD};
    int rc = in->desc.create(sl_plugin_host(), &ctx, &in->config, &instance,
                             err, sizeof(err));
    if (rc != SLUICE_OK) {
        err[sizeof(err) - 1] = '\0';
        sl_config_error_add(errs, 0, base, "plugin '%s' %s failed to start: %s",
                            in->desc.name, in->desc.version,
                            err[0] ? err : "(it gave no reason)");
        return 1;
    }
    in->instance = instance;
    in->created = 1;
    return 0;
}

static unsigned
hooks_of(const sluice_plugin_t *d) {
    return (d->on_request ? SL_HOOK_REQUEST : 0) |
           (d->on_response ? SL_HOOK_RESPONSE : 0) |
           (d->on_chunk ? SL_HOOK_CHUNK : 0) | (d->on_log ? SL_HOOK_LOG : 0);
}

static int
build_chains(sl_plugins_t *ps, const sl_config_t *cfg,
             sl_config_errors_t *errs) {
    int nerr = 0;
    ps->routes = calloc(cfg->nroutes + 1, sizeof(*ps->routes));
    if (ps->routes == NULL)
        return 1;
    ps->nroutes = cfg->nroutes;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const sl_route_t *r = &cfg->routes[i];
        sl_plugin_chain_t *ch = &ps->routes[i];
        if (r->nplugins == 0)
            continue;
        ch->items = calloc(r->nplugins, sizeof(*ch->items));
        if (ch->items == NULL)
            return nerr + 1;
        for (size_t k = 0; k < r->nplugins; k++) {
            sl_plugin_inst_t *in = NULL;
            for (size_t j = 0; j < ps->ninsts && r->plugins[k]; j++)
                if (strcmp(ps->insts[j].name, r->plugins[k]) == 0)
                    in = &ps->insts[j];
            if (in == NULL) { /* config.c checks this first */
                char p[256];
                snprintf(p, sizeof(p), "$.routes[%zu].plugins[%zu]", i, k);
                sl_config_error_add(errs, 0, p, "no such plugin");
                nerr++;
                continue;
            }
            ch->items[ch->n++] = in;
            ch->hooks |= in->hooks;
        }
    }
    return nerr;
}

sl_plugins_t *
sl_plugins_load(const sl_config_t *cfg, sl_config_errors_t *errs) {
    int nerr = 0;
    sl_plugins_t *ps = calloc(1, sizeof(*ps));
    if (ps == NULL)
        goto oom;
    ps->insts = calloc(cfg->nplugins + 1, sizeof(*ps->insts));
    if (ps->insts == NULL)
        goto oom;
    /* Every library first, so a name clash is reported whatever the
     * order, then each config, then the instances. */
    for (size_t i = 0; i < cfg->nplugins; i++) {
        const sl_plugin_conf_t *pc = &cfg->plugins[i];
        sl_plugin_inst_t *in = &ps->insts[ps->ninsts++];
        char base[256];
        sl_config_path_key(base, sizeof(base), "$.plugins", pc->name);
        in->name = strdup(pc->name);
        in->kv_ns = malloc(strlen(pc->name) + 8);
        if (in->name == NULL || in->kv_ns == NULL)
            goto oom;
        sprintf(in->kv_ns, "plugin:%s", pc->name);
        if (open_inst(ps, in, pc, base, errs) != 0) {
            nerr++;
            continue;
        }
        nerr += load_config(in, pc, base, errs);
        in->fail_open =
            pc->fail_open >= 0 ? pc->fail_open : in->desc.fail_open != 0;
        in->hooks = hooks_of(&in->desc);
    }
    for (size_t i = 0; i < ps->ninsts && nerr == 0; i++) {
        char base[256];
        sl_config_path_key(base, sizeof(base), "$.plugins", ps->insts[i].name);
        nerr += create_inst(&ps->insts[i], base, errs);
    }
    if (nerr == 0)
        nerr += build_chains(ps, cfg, errs);
    if (nerr == 0)
        return ps;
    sl_plugins_free(ps);
    return NULL;
oom:
    sl_config_error_add(errs, 0, "$.plugins", "out of memory");
    sl_plugins_free(ps);
    return NULL;
}

void
sl_plugins_free(sl_plugins_t *ps) {
    if (ps == NULL)
        return;
    for (size_t i = 0; i < ps->ninsts; i++) {
        sl_plugin_inst_t *in = &ps->insts[i];
        if (in->created && in->desc.destroy != NULL)
            in->desc.destroy(in->instance);
        cJSON_Delete(in->config.json);
        cJSON_Delete(in->config.cache);
        free(in->config.text);
        lib_close(in->lib);
        free(in->name);
        free(in->kv_ns);
    }
    for (size_t i = 0; i < ps->nroutes; i++)
        free(ps->routes[i].items);
    free(ps->routes);
    free(ps->insts);
    free(ps);
}

const sl_plugin_chain_t *
sl_plugins_route(const sl_plugins_t *ps, size_t i) {
    if (ps == NULL || i >= ps->nroutes || ps->routes[i].n == 0)
        return NULL;
    return &ps->routes[i];
}

/* ---- sluice plugins describe ---- */

static const char *
cfg_type_name(sluice_cfg_type_t t) {
    switch (t) {
    case SLUICE_CFG_STRING: return "string";
    case SLUICE_CFG_INT: return "int";
    case SLUICE_CFG_BOOL: return "bool";
    case SLUICE_CFG_NUMBER: return "number";
    case SLUICE_CFG_STRING_LIST: return "string list";
    case SLUICE_CFG_OBJECT: return "object";
    default: return "?";
    }
}

int
sl_plugin_describe(const sl_config_t *cfg, const char *name, FILE *out,
                   char *err, size_t errlen) {
    const sl_plugin_conf_t *pc = NULL;
    for (size_t i = 0; i < cfg->nplugins; i++)
        if (strcmp(cfg->plugins[i].name, name) == 0)
            pc = &cfg->plugins[i];
    if (pc == NULL) {
        snprintf(err, errlen, "no plugin \"%s\" in $.plugins", name);
        return SL_ENOTFOUND;
    }
    sl_plugin_lib_t *l = lib_open(pc->file, err, errlen);
    if (l == NULL)
        return SL_EINVAL;
    const sluice_plugin_t *d = l->sym;
    /* Only what fits in the descriptor the plugin was built with. */
    size_t have = d->struct_size;
#define HAS(f) (have >= offsetof(sluice_plugin_t, f) + sizeof(d->f))
    fprintf(out, "%s %s (ABI %u.%u; this gateway speaks %d.%d)\n",
            HAS(name) && d->name ? d->name : "?",
            HAS(version) && d->version ? d->version : "",
            (unsigned)d->abi_major, (unsigned)d->abi_minor,
            SLUICE_ABI_MAJOR, SLUICE_ABI_MINOR);
    fprintf(out, "library: %s\n", pc->file);
    if (HAS(description) && d->description)
        fprintf(out, "%s\n", d->description);
    fprintf(out, "fails %s on error by default\n",
            HAS(fail_open) && d->fail_open ? "open" : "closed");
    const sluice_config_field_t *f =
        HAS(config_schema) ? d->config_schema : NULL;
    fprintf(out, "\nconfig:\n");
    if (f == NULL || f->name == NULL)
        fprintf(out, "  (no keys)\n");
    for (; f != NULL && f->name != NULL; f++)
        fprintf(out, "  %-24s %-12s %-9s default %-12s %s\n", f->name,
                cfg_type_name(f->type), f->required ? "required" : "optional",
                f->default_value ? f->default_value : "-",
                f->description ? f->description : "");
#undef HAS
    lib_close(l);
    return 0;
}
