/* vhost-backend: serves one disk to a VMM over vhost-user-blk.
 *
 * Start-up (backends.md §2.1): logging, no core dumps, command line,
 * configuration (--check prints it and exits), then the backend
 * environment, the listening socket and the accept loop. SIGTERM, SIGINT
 * and SIGHUP arrive through a signalfd: the current connection is drained
 * and the device flushed, the socket file is removed, exit 0. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "config/config.h"
#include "rpc/io_tracker.h"
#include "rpc/rpc_server.h"
#include "util/cli.h"
#include "util/log.h"
#include "util/process.h"
#include "util/secmem.h"
#include "vhost/backend.h"
#include "vhost/server.h"

static const char *prog = "vhost-backend";

static void usage(FILE *f)
{
	fprintf(
	    f,
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
	    "\n" UB_CLI_HELP_FOOTER,
	    prog);
}

enum { OPT_CHECK = 0x100 };

/* Logs which signal asked for the shutdown. */
static void log_signal(int sfd)
{
	struct signalfd_siginfo si;

	if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		LOG_INFO("received %s, shutting down",
			 strsignal((int)si.ssi_signo));
}

/* The RPC status command's view of the backend. */
static int rpc_status(void *arg, struct ub_bgworker_status *st)
{
	return ub_backend_status(arg, st);
}

/* One tracker per queue with queue_size + 8 slots (backends.md §5); they
 * live for the whole process so the counters survive reconnections. */
static int trackers_new(const struct ub_vhost_params *p,
			struct ub_io_tracker ***out)
{
	struct ub_io_tracker **t = calloc(p->num_queues, sizeof(*t));

	if (!t)
		return -ENOMEM;
	for (unsigned i = 0; i < p->num_queues; i++) {
		t[i] = ub_io_tracker_new(p->queue_size + 8);
		if (!t[i]) {
			while (i--)
				ub_io_tracker_free(t[i]);
			free(t);
			return -ENOMEM;
		}
	}
	*out = t;
	return 0;
}

static void trackers_free(struct ub_io_tracker **t, unsigned n)
{
	if (!t)
		return;
	for (unsigned i = 0; i < n; i++)
		ub_io_tracker_free(t[i]);
	free(t);
}

/* Serves until a shutdown signal (exit 0) or a fatal error (exit 1). */
static int serve(const struct ub_config *cfg)
{
	struct ub_backend be = {0};
	struct ub_vhost_listener l = {.fd = -1};
	struct ub_vhost_params params;
	struct ub_io_tracker **trackers = NULL; /* owned: one per queue */
	struct ub_rpc_server *rpc = NULL;
	struct ub_rpc_source src; /* what the RPC server reads; outlives it */
	struct ub_err err = {{0}};
	int status = UB_EXIT_FAILURE;
	sigset_t set;
	int sfd, rc;

	/* Blocked before any thread exists, so every thread inherits it and
	 * the signals only ever reach the signalfd. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
		return ub_cli_fail(prog, "cannot block signals: %s",
				   strerror(errno));
	sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		return ub_cli_fail(prog, "cannot create a signalfd: %s",
				   strerror(errno));
	rc = ub_backend_open(cfg, &be, &err);
	if (rc) {
		ub_cli_fail(prog, "%s", err.msg);
		goto out_sfd;
	}
	ub_vhost_params_from_config(cfg, &params);
	rc = trackers_new(&params, &trackers);
	if (rc) {
		ub_cli_fail(prog, "cannot allocate the I/O trackers: %s",
			    strerror(-rc));
		goto out_backend;
	}
	params.trackers = trackers;
	src = (struct ub_rpc_source){
	    .version = UB_VERSION,
	    .trackers = trackers,
	    .ntrackers = params.num_queues,
	    .status = rpc_status,
	    .status_arg = &be,
	};
	if (cfg->device.rpc_socket) {
		rc = ub_rpc_server_start(cfg->device.rpc_socket, &src, NULL,
					 &rpc, &err);
		if (rc) {
			ub_cli_fail(prog,
				    "Failed to start RPC server on path: "
				    "\"%s\": %s",
				    cfg->device.rpc_socket, err.msg);
			goto out_backend;
		}
	}
	rc = ub_vhost_listen(cfg->device.vhost_socket, &l, &err);
	if (rc) {
		ub_cli_fail(prog, "%s", err.msg);
		goto out_backend;
	}
	rc = ub_vhost_server_run(l.fd, &params, be.bdev, sfd, &err);
	ub_vhost_listener_close(&l);
	if (rc) {
		ub_cli_fail(prog, "%s", err.msg);
		goto out_backend;
	}
	log_signal(sfd);
	status = UB_EXIT_OK;
out_backend:
	/* The RPC thread reads the trackers and the backend: stop it first. */
	ub_rpc_server_stop(rpc);
	trackers_free(trackers, params.num_queues);
	ub_backend_close(&be);
out_sfd:
	close(sfd);
	return status;
}

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

	if (ub_config_load_for_cli(prog, config_path, &cfg))
		return UB_EXIT_FAILURE;
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
	rc = serve(&cfg);
	ub_config_free(&cfg);
	return rc;
}
