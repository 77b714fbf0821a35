/* `sluice keys create|list|revoke`: manage API keys in the store under the
 * config's data_dir, from a process of its own (a running gateway sees the
 * change at its next lookup: the auth plugin reads the store every time). */
#include "keys_cli.h"
#include "apikeys.h"
#include "config.h"
#include "error.h"
#include "store.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_MODELS 64

static void
keys_usage(FILE *f) {
    fprintf(f, "usage: sluice keys create --name NAME [--models m1,m2] "
               "[--rpm N] [--tpm N] -c FILE\n"
               "       sluice keys list [--json] -c FILE\n"
               "       sluice keys revoke ID -c FILE\n");
}

static int
parse_count(const char *s, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0)
        return -1;
    *out = v;
    return 0;
}

static void
print_record(const cJSON *rec) {
    const char *id =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rec, "id"));
    const char *name =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rec, "name"));
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(rec, "models");
    char mbuf[512] = "*";
    if (cJSON_IsArray(models)) {
        size_t o = 0;
        const cJSON *m;
        mbuf[0] = '\0';
        cJSON_ArrayForEach(m, models) {
            int w = snprintf(mbuf + o, sizeof(mbuf) - o, "%s%s", o ? "," : "",
                             cJSON_GetStringValue(m) ? m->valuestring : "");
            if (w < 0 || (size_t)w >= sizeof(mbuf) - o)
                break;
            o += (size_t)w;
        }
    }
    char lim[2][24];
    static const char *const names[] = {"rpm", "tpm"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, names[i]);
        if (cJSON_IsNumber(v))
            snprintf(lim[i], sizeof(lim[i]), "%.0f", v->valuedouble);
        else
            snprintf(lim[i], sizeof(lim[i]), "-");
    }
    time_t created = (time_t)cJSON_GetNumberValue(
        cJSON_GetObjectItemCaseSensitive(rec, "created"));
    struct tm tm;
    char when[32];
    gmtime_r(&created, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    int revoked =
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "revoked"));
    printf("%-20s  %-20s  %-24s  %8s  %10s  %-20s  %s\n", id ? id : "?",
           name ? name : "?", mbuf, lim[0], lim[1], when,
           revoked ? "revoked" : "active");
}

static int
cmd_create(sl_store_t *st, const char *name, char *models, long long rpm,
           long long tpm) {
    const char *list[MAX_MODELS];
    sl_apikey_spec_t spec = {name, NULL, 0, rpm, tpm};
    if (models != NULL) {
        for (char *save = NULL, *m = strtok_r(models, ",", &save); m != NULL;
             m = strtok_r(NULL, ",", &save)) {
            if (spec.nmodels == MAX_MODELS) {
                fprintf(stderr, "sluice: at most %d models\n", MAX_MODELS);
                return 2;
            }
            list[spec.nmodels++] = m;
        }
        spec.models = list;
    }
    char secret[SL_APIKEY_LEN + 1], err[256] = "";
    cJSON *rec = NULL;
    int rc = sl_apikey_create(st, &spec, secret, sizeof(secret), &rec, err,
                              sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "sluice: keys create: %s\n",
                err[0] ? err : sl_strerror(rc));
        return rc == SL_EINVAL ? 2 : 1;
    }
    /* The key alone on stdout, so KEY=$(sluice keys create ...) works; the
     * rest is for the person at the terminal. */
    printf("%s\n", secret);
    fflush(stdout);
    fprintf(stderr,
            "created %s (%s); the key above is shown only now: store it "
            "safely\n",
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rec, "id")),
            name);
    OPENSSL_cleanse(secret, sizeof(secret));
    cJSON_Delete(rec);
    return 0;
}

static int
cmd_list(sl_store_t *st, int json) {
    cJSON *recs = NULL;
    int rc = sl_apikey_list(st, &recs);
    if (rc != 0) {
        fprintf(stderr, "sluice: keys list: %s\n", sl_strerror(rc));
        return 1;
    }
    if (json) {
        char *out = cJSON_Print(recs);
        printf("%s\n", out ? out : "[]");
        free(out);
    } else {
        printf("%-20s  %-20s  %-24s  %8s  %10s  %-20s  %s\n", "ID", "NAME",
               "MODELS", "RPM", "TPM", "CREATED", "STATUS");
        const cJSON *rec;
        cJSON_ArrayForEach(rec, recs) print_record(rec);
    }
    cJSON_Delete(recs);
    return 0;
}

static int
cmd_revoke(sl_store_t *st, const char *id) {
    cJSON *rec = NULL;
    int rc = sl_apikey_revoke(st, id, &rec);
    if (rc == SL_ENOTFOUND) {
        fprintf(stderr, "sluice: keys revoke: no key with id '%s'\n", id);
        return 1;
    }
    if (rc != 0) {
        fprintf(stderr, "sluice: keys revoke: %s\n", sl_strerror(rc));
        return 1;
    }
    printf("revoked %s\n", id);
    cJSON_Delete(rec);
    return 0;
}

int
sl_keys_main(int argc, char **argv) {
    const char *sub = argc > 0 ? argv[0] : NULL, *file = NULL, *name = NULL,
               *id = NULL;
    char *models = NULL;
    long long rpm = -1, tpm = -1;
    int json = 0;
    if (sub == NULL ||
        (strcmp(sub, "create") != 0 && strcmp(sub, "list") != 0 &&
         strcmp(sub, "revoke") != 0)) {
        keys_usage(stderr);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && more)
            file = argv[++i];
        else if (strcmp(a, "--name") == 0 && more)
            name = argv[++i];
        else if (strcmp(a, "--models") == 0 && more)
            models = argv[++i];
        else if ((strcmp(a, "--rpm") == 0 || strcmp(a, "--tpm") == 0) && more) {
            if (parse_count(argv[i + 1], a[2] == 'r' ? &rpm : &tpm) != 0) {
                fprintf(stderr, "sluice: %s wants a whole number >= 0\n", a);
                return 2;
            }
            i++;
        } else if (strcmp(a, "--json") == 0)
            json = 1;
        else if (a[0] != '-' && id == NULL && strcmp(sub, "revoke") == 0)
            id = a;
        else {
            fprintf(stderr, "sluice: keys %s: unknown argument '%s'\n", sub, a);
            keys_usage(stderr);
            return 2;
        }
    }
    if (file == NULL || (strcmp(sub, "create") == 0 && name == NULL) ||
        (strcmp(sub, "revoke") == 0 && id == NULL)) {
        keys_usage(stderr);
        return 2;
    }
    sl_config_t *cfg = NULL;
    sl_config_errors_t errs = {0};
    int rc = sl_config_load_file(file, &cfg, &errs);
    for (size_t e = 0; e < errs.count; e++)
        if (!errs.items[e].warning || rc != 0)
            fprintf(stderr, "%s: %s: %s\n", file, errs.items[e].path,
                    errs.items[e].message);
    sl_config_errors_free(&errs);
    if (rc != 0)
        return 1;
    sl_store_options_t so = {
        .dir = cfg->data_dir,
        .map_size = (size_t)cfg->store_map_size_mb << 20,
        .map_size_max = (size_t)cfg->store_map_size_max_mb << 20,
        .flush_interval_ms = cfg->store_flush_ms,
    };
    sl_store_t *st = NULL;
    rc = sl_store_open(&so, &st);
    if (rc != 0) {
        fprintf(stderr, "sluice: cannot open the store in %s: %s\n",
                cfg->data_dir, sl_strerror(rc));
        sl_config_free(cfg);
        return 1;
    }
    if (strcmp(sub, "create") == 0)
        rc = cmd_create(st, name, models, rpm, tpm);
    else if (strcmp(sub, "list") == 0)
        rc = cmd_list(st, json);
    else
        rc = cmd_revoke(st, id);
    sl_store_close(st);
    sl_config_free(cfg);
    return rc;
}
