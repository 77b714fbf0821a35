/* `sluice usage`: the usage ledger as a terminal table. */
#ifndef SL_CLI_USAGE_H
#define SL_CLI_USAGE_H

/* argv[0] is "usage". Returns the process exit code. */
int sl_cli_usage(int argc, char **argv);

#endif
