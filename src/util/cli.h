/* Command-line conventions shared by every program: exit codes, usage
 * errors, --version, and "program: what failed: why" messages. */
#ifndef UB_UTIL_CLI_H
#define UB_UTIL_CLI_H

#include <stdint.h>

/* The end of every program's --help: the log environment and the exit
 * codes (a string literal, to close a usage text). */
#define UB_CLI_HELP_FOOTER                                                     \
	"Environment:\n"                                                       \
	"  UBIBLK_LOG, RUST_LOG  log level: off, error (default), warn, "      \
	"info,\n"                                                              \
	"                        debug, trace (UBIBLK_LOG wins)\n"             \
	"\n"                                                                   \
	"Exit status: 0 success, 1 error, 2 usage error.\n"

enum {
	UB_EXIT_OK = 0,
	UB_EXIT_FAILURE = 1, /* runtime or configuration error */
	UB_EXIT_USAGE = 2,   /* bad command line */
};

/* Prints "<prog>: <message>" and a hint to try --help on stderr; returns
 * UB_EXIT_USAGE for `return ub_cli_usage_error(...)` in main. */
__attribute__((format(printf, 2, 3))) int
ub_cli_usage_error(const char *prog, const char *fmt, ...);
/* Reports what getopt_long returned for a bad option (':' = missing
 * value, anything else = unknown option) as a usage error; returns
 * UB_EXIT_USAGE. argv and optind are getopt's. */
int ub_cli_bad_option(const char *prog, int opt, char *const argv[],
		      int optind_now);
/* Prints "<prog>: <message>" on stderr; returns UB_EXIT_FAILURE. */
__attribute__((format(printf, 2, 3))) int ub_cli_fail(const char *prog,
						      const char *fmt, ...);
/* Prints "<display name> <version>" on stdout (the reference's format). */
void ub_cli_print_version(const char *display_name);
/* Parses a whole decimal unsigned number in 0..max; -EINVAL otherwise. */
int ub_cli_parse_u64(const char *s, uint64_t max, uint64_t *out);

#endif
