/* A shared object that is not a plugin: no `sluice_plugin` symbol. */
#include <sluice/plugin.h>

SLUICE_PLUGIN_EXPORT const int sluice_plugin_not_here = 1;
