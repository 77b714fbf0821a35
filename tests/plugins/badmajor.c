/* A plugin built for a future ABI major: the gateway must refuse it. */
#include <sluice/plugin.h>

SLUICE_PLUGIN_EXPORT const sluice_plugin_t sluice_plugin = {
    .abi_major = SLUICE_ABI_MAJOR + 1,
    .abi_minor = 3,
    .struct_size = sizeof(sluice_plugin_t),
    .name = "badmajor",
    .version = "9.9.9",
};
