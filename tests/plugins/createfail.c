/* A plugin whose create() fails with the reason its config gives; its
 * schema has a required key. */
#include <sluice/plugin.h>

#include <stdio.h>

static const sluice_config_field_t schema[] = {
    {"reason", SLUICE_CFG_STRING, NULL, 1, "why create fails"},
    {NULL, 0, NULL, 0, NULL},
};

static int
create(const sluice_host_t *host, sluice_req_t *ctx,
       const sluice_config_t *config, void **instance, char *err,
       size_t errlen) {
    const char *reason = "?";
    host->config_string(config, "reason", &reason);
    snprintf(err, errlen, "refusing to start: %s", reason);
    return SLUICE_EINVAL;
}

SLUICE_PLUGIN_EXPORT const sluice_plugin_t sluice_plugin = {
    SLUICE_PLUGIN_HEADER,    .name = "createfail", .version = "1.0.0",
    .config_schema = schema, .create = create,
};
