/* `sluice keys ...`: API-key management from the command line. */
#ifndef SL_KEYS_CLI_H
#define SL_KEYS_CLI_H

/* argv[0] is the subcommand (create, list, revoke); returns the exit
 * status (0 ok, 1 failure, 2 usage). */
int sl_keys_main(int argc, char **argv);

#endif
