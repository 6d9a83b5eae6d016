/* vhost-backend: serves one disk to a VMM over vhost-user-blk.
 *
 * This build loads and validates the configuration (--check prints it);
 * the vhost-user server itself lands with the vhost-backend issue. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

#include "config/config.h"
#include "util/cli.h"
#include "util/log.h"
#include "util/process.h"
#include "util/secmem.h"

static const char *prog = "vhost-backend";

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s -f CONFIG [--check]\n"
		"Serve a disk to QEMU or Cloud Hypervisor over vhost-user-blk.\n"
		"\n"
		"Options:\n"
		"  -f, --config FILE  configuration file (TOML); required\n"
		"      --check        load and validate the configuration, "
		"secrets\n"
		"                     included, print the effective "
		"configuration\n"
		"                     with secrets redacted, and exit\n"
		"  -h, --help         print this help and exit\n"
		"  -V, --version      print the version and exit\n"
		"\n"
		"Environment:\n"
		"  UBIBLK_LOG, RUST_LOG  log level: off, error (default), "
		"warn, info,\n"
		"                        debug, trace (UBIBLK_LOG wins)\n"
		"\n"
		"Exit status: 0 success, 1 error, 2 usage error.\n",
		prog);
}

enum { OPT_CHECK = 0x100 };

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'f'},
		{"check", no_argument, NULL, OPT_CHECK},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	struct ub_config cfg = {0};
	struct ub_err err = {{0}};
	const char *config_path = NULL;
	bool check = false;
	int opt, rc;

	ub_log_init(prog);
	ub_process_disable_dumps();
	ub_process_ignore_sigpipe();

	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":f:hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'f':
			config_path = optarg;
			break;
		case OPT_CHECK:
			check = true;
			break;
		case 'h':
			usage(stdout);
			return UB_EXIT_OK;
		case 'V':
			ub_cli_print_version("vhost-user-blk backend");
			return UB_EXIT_OK;
		case ':':
			return ub_cli_usage_error(prog,
						  "option '%s' needs a value",
						  argv[optind - 1]);
		default:
			return ub_cli_usage_error(prog, "unknown option '%s'",
						  argv[optind - 1]);
		}
	}
	if (optind < argc)
		return ub_cli_usage_error(prog, "unexpected argument '%s'",
					  argv[optind]);
	if (!config_path)
		return ub_cli_usage_error(prog,
					  "the option --config FILE is required");

	ub_secmem_init();
	rc = ub_config_load(config_path, &cfg, &err);
	if (rc) {
		ub_config_free(&cfg);
		return ub_cli_fail(prog, "loading configuration failed: %s",
				   err.msg);
	}
	if (check) {
		rc = ub_config_print(stdout, &cfg);
		ub_config_free(&cfg);
		if (rc || fflush(stdout) != 0)
			return ub_cli_fail(prog, "writing the configuration "
					   "failed");
		return UB_EXIT_OK;
	}
	LOG_INFO("Starting vhost-user-blk backend. Process ID: %d",
		 (int)getpid());
	if (!cfg.device.vhost_socket) {
		ub_config_free(&cfg);
		return ub_cli_fail(prog, "socket must be specified for the "
				   "vhost backend (device.vhost_socket)");
	}
	ub_config_free(&cfg);
	return ub_cli_fail(prog, "serving vhost-user-blk is not available in "
			   "this build yet; only --check works");
}
