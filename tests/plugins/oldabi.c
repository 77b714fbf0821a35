/* A plugin as an older 1.x minor built it: its descriptor ends before
 * on_chunk. The memory past struct_size holds hooks that abort, so a
 * loader that reads past struct_size is caught. Its name clashes with
 * testgood's on purpose. */
#include <sluice/plugin.h>

#include <stdlib.h>

static const sluice_host_t *host;

static int
create(const sluice_host_t *h, sluice_req_t *ctx, const sluice_config_t *config,
       void **instance, char *err, size_t errlen) {
    host = h;
    *instance = NULL;
    return SLUICE_OK;
}

static sluice_verdict_t
on_request(void *instance, sluice_req_t *req) {
    host->response_header_set(req, "x-old-plugin", "0.9.0");
    return SLUICE_CONTINUE;
}

static sluice_verdict_t
must_not_run(void *instance, sluice_req_t *req) {
    abort();
}

SLUICE_PLUGIN_EXPORT const sluice_plugin_t sluice_plugin = {
    .abi_major = SLUICE_ABI_MAJOR,
    .abi_minor = 0,
    .struct_size = offsetof(sluice_plugin_t, on_chunk),
    .name = "tgood",
    .version = "0.9.0",
    .create = create,
    .on_request = on_request,
    .on_response = NULL,
    .on_chunk = must_not_run,
    .on_log = must_not_run,
};
