/* `sluice usage -c FILE [--consumer X] [--model M] [--from T] [--to T]
 * [--group-by hour|day|consumer|model] [--json]`: reads the ledger
 * straight from the store (LMDB lets it beside a running gateway) and
 * prints what GET /admin/usage answers, as an aligned table. */
#include "cli_usage.h"
#include "config.h"
#include "error.h"
#include "ledger.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void
help(FILE *f) {
    fprintf(f, "usage: sluice usage -c FILE [--consumer NAME] [--model NAME]\n"
               "                    [--from TIME] [--to TIME]\n"
               "                    [--group-by hour|day|consumer|model] "
               "[--json]\n"
               "TIME is 2026-11-22, 2026-11-22T13:00Z or unix seconds (UTC);\n"
               "from is included, to is not. The default grouping is day.\n");
}

static void
cell(char *out, size_t cap, const sl_usage_row_t *row, const int64_t *v,
     int col) {
    if (col == 0) {
        snprintf(out, cap, "%s", row ? row->key : "TOTAL");
        return;
    }
    int f = col - 1;
    if (f == SL_U_COST)
        snprintf(out, cap, "%lld.%06lld", (long long)(v[f] / 1000000),
                 (long long)(v[f] % 1000000));
    else
        snprintf(out, cap, "%lld", (long long)v[f]);
}

static void
print_table(const sl_usage_query_t *q, const sl_usage_result_t *res) {
    enum { NCOL = SL_U_NFIELDS + 1 };
    static const char *const heads[NCOL - 1] = {
        "REQUESTS",  "PROMPT",   "COMPLETION", "CACHED",
        "REASONING", "COST_USD", "CACHE_HITS", "ERRORS"};
    char first[16];
    snprintf(first, sizeof(first), "%s", sl_usage_group_name(q->group));
    for (char *p = first; *p; p++)
        *p = (char)(*p - 'a' + 'A');
    size_t w[NCOL];
    char buf[256];
    w[0] = strlen(first) > 5 ? strlen(first) : 5;
    for (int c = 1; c < NCOL; c++)
        w[c] = strlen(heads[c - 1]);
    for (size_t i = 0; i <= res->n; i++) {
        const sl_usage_row_t *row = i < res->n ? &res->rows[i] : NULL;
        for (int c = 0; c < NCOL; c++) {
            cell(buf, sizeof(buf), row, row ? row->v : res->total, c);
            if (strlen(buf) > w[c])
                w[c] = strlen(buf);
        }
    }
    printf("%-*s", (int)w[0], first);
    for (int c = 1; c < NCOL; c++)
        printf("  %*s", (int)w[c], heads[c - 1]);
    printf("\n");
    for (size_t i = 0; i <= res->n; i++) {
        const sl_usage_row_t *row = i < res->n ? &res->rows[i] : NULL;
        for (int c = 0; c < NCOL; c++) {
            cell(buf, sizeof(buf), row, row ? row->v : res->total, c);
            if (c == 0)
                printf("%-*s", (int)w[0], buf);
            else
                printf("  %*s", (int)w[c], buf);
        }
        printf("\n");
    }
}

int
sl_cli_usage(int argc, char **argv) {
    const char *file = NULL, *from = NULL, *to = NULL, *group = NULL;
    int json = 0;
    sl_usage_query_t q = {.group = SL_GROUP_DAY};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && has)
            file = argv[++i];
        else if (strcmp(a, "--consumer") == 0 && has)
            q.consumer = argv[++i];
        else if (strcmp(a, "--model") == 0 && has)
            q.model = argv[++i];
        else if (strcmp(a, "--from") == 0 && has)
            from = argv[++i];
        else if (strcmp(a, "--to") == 0 && has)
            to = argv[++i];
        else if (strcmp(a, "--group-by") == 0 && has)
            group = argv[++i];
        else if (strcmp(a, "--json") == 0)
            json = 1;
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            help(stdout);
            return 0;
        } else {
            fprintf(stderr, "sluice usage: unknown argument '%s'\n", a);
            help(stderr);
            return 2;
        }
    }
    if (file == NULL) {
        fprintf(stderr, "sluice usage: missing -c FILE\n");
        help(stderr);
        return 2;
    }
    if ((from && sl_usage_parse_time(from, &q.from) != 0) ||
        (to && sl_usage_parse_time(to, &q.to) != 0)) {
        fprintf(stderr, "sluice usage: a time must look like 2026-11-22, "
                        "2026-11-22T13:00Z or unix seconds\n");
        return 2;
    }
    if (group != NULL && sl_usage_parse_group(group, &q.group) != 0) {
        fprintf(stderr, "sluice usage: --group-by is hour, day, consumer "
                        "or model\n");
        return 2;
    }
    sl_config_t *cfg = NULL;
    sl_config_errors_t errs = {0};
    int rc = sl_config_load_file(file, &cfg, &errs);
    for (size_t i = 0; i < errs.count; i++)
        if (!errs.items[i].warning)
            fprintf(stderr, "%s: %s: %s\n", file, errs.items[i].path,
                    errs.items[i].message);
    sl_config_errors_free(&errs);
    if (rc != 0)
        return 1;
    /* A store that does not exist has recorded nothing; opening it would
     * create one. */
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/store", cfg->data_dir);
    sl_usage_result_t res = {0};
    sl_store_t *st = NULL;
    if (stat(path, &sb) == 0) {
        sl_store_options_t so = {
            .dir = cfg->data_dir,
            .map_size = (size_t)cfg->store_map_size_mb << 20,
            .map_size_max = (size_t)cfg->store_map_size_max_mb << 20,
        };
        rc = sl_store_open(&so, &st);
        if (rc != 0) {
            fprintf(stderr, "sluice usage: cannot open the store in %s: %s\n",
                    cfg->data_dir, sl_strerror(rc));
            sl_config_free(cfg);
            return 1;
        }
        rc = sl_ledger_query(st, &q, &res);
        if (rc != 0) {
            fprintf(stderr, "sluice usage: cannot read the ledger: %s\n",
                    sl_strerror(rc));
            sl_usage_result_free(&res);
            sl_store_close(st);
            sl_config_free(cfg);
            return 1;
        }
    }
    if (json) {
        cJSON *j = sl_usage_result_json(&q, &res);
        char *out = j ? cJSON_Print(j) : NULL;
        if (out != NULL)
            printf("%s\n", out);
        free(out);
        cJSON_Delete(j);
    } else {
        print_table(&q, &res);
    }
    sl_usage_result_free(&res);
    if (st != NULL)
        sl_store_close(st);
    sl_config_free(cfg);
    return 0;
}
