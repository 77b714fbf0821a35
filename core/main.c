/* sluice: run the gateway, or check a config. */
#include "cli_usage.h"
#include "config.h"
#include "error.h"
#include "keys_cli.h"
#include "plugin.h"
#include "worker.h"
#include "../lua/host.h"

#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "dev"
#endif

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: sluice [run] -c FILE     run the gateway\n"
            "       sluice check -c FILE     validate FILE and print every "
            "error\n"
            "       sluice plugins describe NAME -c FILE\n"
            "                                print plugin NAME's version, ABI "
            "and config schema\n"
            "       sluice keys create --name NAME [--models m1,m2] [--rpm N] "
            "[--tpm N] -c FILE\n"
            "       sluice keys list [--json] -c FILE\n"
            "       sluice keys revoke ID -c FILE\n"
            "                                manage API keys (shown once, "
            "stored hashed)\n"
            "       sluice usage -c FILE [--consumer C] [--model M] [--from T]\n"
            "                    [--to T] [--group-by hour|day|consumer|model]\n"
            "                                print the usage ledger as a "
            "table\n"
            "       sluice --version | --help\n"
            "\n"
            "FILE is the JSON configuration (see docs/configuration.md).\n"
            "SIGTERM or SIGINT drains: no new connections, requests in "
            "flight finish.\n");
}

static int
load(const char *path, sl_config_t **cfg)
{
    sl_config_errors_t errs = {0};
    int rc = sl_config_load_file(path, cfg, &errs);
    for (size_t i = 0; i < errs.count; i++)
        fprintf(stderr, "%s: %s: %s\n", path, errs.items[i].path,
                errs.items[i].message);
    if (rc != 0 && errs.count == 0)
        fprintf(stderr, "%s: %s\n", path, sl_strerror(rc));
    sl_config_errors_free(&errs);
    return rc;
}

int
main(int argc, char **argv)
{
    const char *cmd = "run", *file = NULL, *plugin = NULL;
    int i = 1;
    if (i < argc && argv[i][0] != '-') {
        cmd = argv[i++];
    }
    if (strcmp(cmd, "keys") == 0)
        return sl_keys_main(argc - i, argv + i);
    if (strcmp(cmd, "usage") == 0)
        return sl_cli_usage(argc - 1, argv + 1);
    if (strcmp(cmd, "plugins") == 0) {
        if (i + 1 >= argc || strcmp(argv[i], "describe") != 0) {
            fprintf(stderr, "sluice: usage: sluice plugins describe NAME "
                            "-c FILE\n");
            return 2;
        }
        plugin = argv[i + 1];
        i += 2;
    }
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
            printf("sluice %s\n", PACKAGE_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--help") == 0 ||
                   strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if ((strcmp(argv[i], "-c") == 0 ||
                    strcmp(argv[i], "--config") == 0) &&
                   i + 1 < argc) {
            file = argv[++i];
        } else {
            fprintf(stderr, "sluice: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (strcmp(cmd, "run") != 0 && strcmp(cmd, "check") != 0 &&
        strcmp(cmd, "plugins") != 0) {
        fprintf(stderr, "sluice: unknown command '%s'\n", cmd);
        usage(stderr);
        return 2;
    }
    if (file == NULL) {
        fprintf(stderr, "sluice: missing -c FILE\n");
        usage(stderr);
        return 2;
    }
    sl_config_t *cfg = NULL;
    if (load(file, &cfg) != 0)
        return 1;
    if (plugin != NULL) {
        char err[512];
        int rc = sl_plugin_describe(cfg, plugin, stdout, err, sizeof(err));
        if (rc != 0)
            fprintf(stderr, "sluice: %s\n", err);
        sl_config_free(cfg);
        return rc == 0 ? 0 : 1;
    }
    if (strcmp(cmd, "check") == 0) {
        /* Plugins load too: their configs are checked against their
         * schemas, and create() must succeed. */
        sl_config_errors_t errs = {0};
        sl_plugins_t *ps = sl_plugins_load(cfg, &errs);
        /* Scripts load too: a syntax error says file:line. */
        sl_lua_set_t *lua = NULL;
        int lrc = sl_lua_load(cfg, 1, &lua, &errs);
        sl_lua_free(lua);
        for (size_t e = 0; e < errs.count; e++)
            fprintf(stderr, "%s: %s: %s\n", file, errs.items[e].path,
                    errs.items[e].message);
        sl_config_errors_free(&errs);
        sl_plugins_free(ps);
        if (ps == NULL || lrc != 0) {
            sl_config_free(cfg);
            return 1;
        }
        printf("%s: ok (%zu provider(s), %zu model(s), %zu route(s))\n", file,
               cfg->nproviders, cfg->nmodels, cfg->nroutes);
        sl_config_free(cfg);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    /* No evthread_use_pthreads(): each event_base is used by one thread
     * only, so libevent needs no locks. */
    int rc = sl_server_run(file, cfg); /* takes cfg */
    libevent_global_shutdown();
    return rc;
}
