/* vhost-user-blk server (backends.md §3.1, §3.2): the listening socket, the
 * accept loop, and the per-connection device (built when a front end
 * connects, torn down when it goes).
 *
 * One connection is served at a time; the listening socket stays bound for
 * the whole process, so a front end that reconnects always finds the path
 * (a second concurrent connection waits in the backlog). Every
 * per-connection error is logged and ends that connection only. Shutdown
 * is requested through stop_fd (a signalfd in the program, an eventfd in
 * tests): when it becomes readable the current connection is torn down
 * (workers drained, device flushed) and the loop returns. */
#ifndef UB_VHOST_SERVER_H
#define UB_VHOST_SERVER_H

#include <stdbool.h>
#include <sys/types.h>

#include "bdev/bdev.h"
#include "config/config.h"
#include "util/err.h"
#include "vhost/vhost_dev.h"

struct ub_vhost_listener {
	int fd;	      /* listening socket, or -1 */
	char *path;   /* heap copy of the socket path */
	dev_t st_dev; /* identity of the socket file we created */
	ino_t st_ino;
};

/* Creates the listening socket at path: an existing socket file that
 * nobody listens on is replaced, anything else (a live socket, a file of
 * another type) is refused; bound under umask 0117, then chmod 0660. */
int ub_vhost_listen(const char *path, struct ub_vhost_listener *l,
		    struct ub_err *err);
/* Closes the socket and removes the socket file if it is still the one we
 * created; a zeroed or already closed listener is accepted. */
void ub_vhost_listener_close(struct ub_vhost_listener *l);

/* The device parameters from the configuration (cpus borrowed from cfg;
 * queue_size clamped to 32768). */
void ub_vhost_params_from_config(const struct ub_config *cfg,
				 struct ub_vhost_params *p);

/* Serves one connected socket (sock stays the caller's): builds the device
 * over bdev, starts one worker per queue, handles messages until the
 * connection ends, then stops the workers (draining in-flight I/O),
 * releases the rings and guest memory and flushes bdev. Returns 0 when the
 * connection ended (why is logged), 1 when stop_fd became readable,
 * negative errno (err set) when the device could not be built. */
int ub_vhost_serve_conn(int sock, const struct ub_vhost_params *p,
			struct ub_bdev *bdev, int stop_fd, struct ub_err *err);

/* Accepts and serves connections one at a time until stop_fd becomes
 * readable (returns 0; nothing is read from it) or accepting fails for
 * good (negative errno, err set). */
int ub_vhost_server_run(int listen_fd, const struct ub_vhost_params *p,
			struct ub_bdev *bdev, int stop_fd, struct ub_err *err);

#endif
