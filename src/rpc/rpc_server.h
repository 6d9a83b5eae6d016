/* The RPC socket (backends.md §6): newline-delimited JSON requests on a
 * Unix stream socket, answered with one compact JSON line each, members
 * sorted by key (the reference's byte-for-byte shape).
 *
 * Commands: version, status, queues, stats (see docs/rpc.md). Bad input
 * (invalid JSON or UTF-8, not an object, missing or non-string command,
 * unknown command, a line longer than the limit) is answered with
 * {"error":"..."} and the connection stays usable; an over-long line is
 * discarded as it arrives, never buffered whole.
 *
 * One thread ("ubiblk-rpc") serves the listening socket and every client
 * with non-blocking sockets and epoll: a slow or stalled client can only
 * delay other RPC clients by one read/write call, never the I/O threads
 * (the data come from ub_io_tracker snapshots and the status callback,
 * both lock-free for the I/O path). At most max_clients connections at
 * once (the next one gets {"error":"too many clients"} and is closed), a
 * client idle for idle_timeout_ms is closed, a client that does not read
 * its replies stops being read once max_pending bytes of replies wait. */
#ifndef UB_RPC_RPC_SERVER_H
#define UB_RPC_RPC_SERVER_H

#include <stddef.h>

#include "rpc/io_tracker.h"
#include "stripe/bgworker.h"
#include "util/err.h"

/* What the commands report. Everything is borrowed and must outlive the
 * server; the callbacks run on the RPC thread. */
struct ub_rpc_source {
	const char *version;		       /* "version" reply */
	struct ub_io_tracker *const *trackers; /* one per queue, in order */
	unsigned ntrackers;
	/* "status": 0 and *st filled, or -ENOENT without a lazy device
	 * ({"status":null}); a NULL callback always answers null. */
	int (*status)(void *arg, struct ub_bgworker_status *st);
	void *status_arg;
};

struct ub_rpc_limits {
	unsigned max_clients;	  /* concurrent connections; 0 = 16 */
	unsigned idle_timeout_ms; /* 0 = 60000 */
	size_t max_line;	  /* request bytes without '\n'; 0 = 65536 */
	size_t max_pending;	  /* unsent reply bytes; 0 = 1 MiB */
};

/* Answers one request line (without its '\n'; leading/trailing
 * whitespace allowed). Returns a malloc'ed compact JSON object without a
 * trailing newline (caller frees), or NULL for an empty line (no reply)
 * and on ENOMEM (errno set). */
char *ub_rpc_handle_line(const struct ub_rpc_source *src, const char *line,
			 size_t len);

struct ub_rpc_server;

/* Creates the socket at path (an existing non-directory file there is
 * removed first: "failed to remove existing RPC socket"; bound under a
 * umask of 0177, then chmod 0600) and starts the RPC thread. lim may be
 * NULL (defaults). Errors: "RPC error: failed to ... RPC socket
 * \"<path>\": <reason>". */
int ub_rpc_server_start(const char *path, const struct ub_rpc_source *src,
			const struct ub_rpc_limits *lim,
			struct ub_rpc_server **out, struct ub_err *err);
/* Stops the thread, closes every client and the listening socket, removes
 * the socket file if it is still the one created. NULL is accepted. */
void ub_rpc_server_stop(struct ub_rpc_server *s);

#endif
