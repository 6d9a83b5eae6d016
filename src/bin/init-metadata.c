/* init-metadata: writes fresh stripe metadata (storage.md §8.2) for the
 * data device of a configuration: every stripe unfetched and unwritten,
 * HAS_SOURCE where the stripe source has data. The whole metadata file is
 * rewritten, encrypted when the configuration has a key. The work is done
 * by ub_metadata_create (src/stripe/metadata_create.c). */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

#include "config/config.h"
#include "stripe/metadata.h"
#include "stripe/metadata_create.h"
#include "util/cli.h"
#include "util/err.h"
#include "util/log.h"
#include "util/process.h"

static const char *prog = "init-metadata";

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s -f CONFIG [-s SHIFT]\n"
		"Write fresh stripe metadata for the data device of CONFIG: "
		"every stripe\n"
		"unfetched and unwritten, marked as having a source where the "
		"stripe\n"
		"source has data. The whole metadata file is overwritten "
		"(encrypted when\n"
		"the configuration has an encryption key); any fetch state "
		"is lost.\n"
		"\n"
		"Options:\n"
		"  -f, --config FILE       configuration file (TOML); "
		"required\n"
		"  -s, --stripe-sector-count-shift SHIFT\n"
		"                          stripes of 2^SHIFT sectors, 6..16 "
		"(default 11:\n"
		"                          1 MiB stripes)\n"
		"  -h, --help              print this help and exit\n"
		"  -V, --version           print the version and exit\n"
		"\n" UB_CLI_HELP_FOOTER,
		prog);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'f'},
	    {"stripe-sector-count-shift", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	struct ub_config cfg = {0};
	struct ub_err err = {{0}};
	const char *config_path = NULL;
	uint64_t shift = UB_MD_DEFAULT_SHIFT;
	int opt, rc;

	ub_log_init(prog);
	ub_process_disable_dumps();

	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":f:s:hV", longopts, NULL)) !=
	       -1) {
		switch (opt) {
		case 'f':
			config_path = optarg;
			break;
		case 's':
			if (ub_cli_parse_u64(optarg, UINT8_MAX, &shift))
				return ub_cli_usage_error(
				    prog,
				    "invalid value '%s' for "
				    "--stripe-sector-count-shift: expected "
				    "an integer 0..255",
				    optarg);
			break;
		case 'h':
			usage(stdout);
			return UB_EXIT_OK;
		case 'V':
			ub_cli_print_version(prog);
			return UB_EXIT_OK;
		default:
			return ub_cli_bad_option(prog, opt, argv, optind);
		}
	}
	if (optind < argc)
		return ub_cli_usage_error(prog, "unexpected argument '%s'",
					  argv[optind]);
	if (!config_path)
		return ub_cli_usage_error(
		    prog, "the option --config FILE is required");
	if (shift < UB_MD_INIT_MIN_SHIFT || shift > UB_MD_INIT_MAX_SHIFT)
		return ub_cli_fail(prog,
				   "initializing metadata failed: Invalid "
				   "parameter error: stripe-sector-count-shift "
				   "must be between %u and %u.",
				   UB_MD_INIT_MIN_SHIFT, UB_MD_INIT_MAX_SHIFT);

	if (ub_config_load_for_cli(prog, config_path, &cfg))
		return UB_EXIT_FAILURE;
	rc = ub_metadata_create(&cfg, (uint8_t)shift, &err);
	ub_config_free(&cfg);
	if (rc)
		return ub_cli_fail(prog, "initializing metadata failed: %s",
				   err.msg);
	return UB_EXIT_OK;
}
