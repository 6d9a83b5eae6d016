/* Client side of the RPC socket (docs/rpc.md), as ubitop uses it: one
 * connection to a backend's Unix stream socket, requests sent as
 * {"command": "<name>"}\n, one reply line read per request, and parsers
 * that turn the stats and queues replies into plain structs.
 *
 * The server is not trusted. Every wait has a deadline (timeout_ms for a
 * whole request or reply line, however slowly the bytes trickle in), a
 * reply line longer than line_max is an error and never buffered beyond
 * that, and a reply that is not JSON or not of the expected shape is an
 * error with a message; nothing a server sends can crash the caller or
 * make it allocate more than about line_max bytes plus the parsed JSON.
 *
 * Errors are negative errnos with a message in struct ub_err:
 *   "[Errno <n>] <strerror>" for a failing system call (the reference's
 *   wording), "RPC socket closed" (-ECONNRESET) at end of file,
 *   "timed out waiting for the RPC server" (-ETIMEDOUT), "reply line
 *   exceeds <n> bytes" (-EMSGSIZE), and for replies (-EPROTO) "invalid
 *   JSON in reply: ...", "server error: <error member>" or "malformed
 *   <command> reply: ...". Messages may quote bytes the server sent; print
 *   them through a filter if that matters (ubitop does). */
#ifndef UB_RPC_RPC_CLIENT_H
#define UB_RPC_RPC_CLIENT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Longest reply line accepted, '\n' not counted. */
#define UB_RPC_CLIENT_LINE_MAX (1u << 20)
/* Deadline for sending one request and for reading one reply line. */
#define UB_RPC_CLIENT_TIMEOUT_MS 5000
/* More queues than this in a reply is malformed (a backend has <= 63). */
#define UB_RPC_CLIENT_MAX_QUEUES 1024u

struct ub_rpc_client {
	int fd;		 /* -1 while not connected */
	char *buf;	 /* owned: received bytes, [off, len) not returned */
	size_t off, len; /* consumed prefix, bytes held */
	size_t scanned;	 /* bytes of [off, len) known to hold no '\n' */
	size_t cap;	 /* allocated size of buf */
	size_t line_max; /* UB_RPC_CLIENT_LINE_MAX after init */
	int timeout_ms;	 /* UB_RPC_CLIENT_TIMEOUT_MS after init */
	/* Signal mask while waiting (ppoll); NULL keeps the current mask.
	 * Borrowed, must outlive the client. */
	const sigset_t *wait_mask;
	/* A wait interrupted by a signal returns -EINTR ("interrupted")
	 * when this is set and non-zero, and goes on waiting otherwise.
	 * Borrowed. */
	volatile sig_atomic_t *abort_flag;
};

/* Not connected, default limits, no buffer. Never fails. */
void ub_rpc_client_init(struct ub_rpc_client *c);
/* Connects to the Unix socket at path (closing a previous connection and
 * dropping its unread bytes first). The socket is non-blocking and
 * close-on-exec. A path longer than sun_path is -ENAMETOOLONG
 * ("AF_UNIX path too long"). */
int ub_rpc_client_connect(struct ub_rpc_client *c, const char *path,
			  struct ub_err *err);
/* Closes the connection and frees the buffer; the client can connect
 * again. Safe on a closed or initialised client. */
void ub_rpc_client_close(struct ub_rpc_client *c);
/* Sends {"command": "<command>"}\n. command must be 1-64 characters of
 * [A-Za-z0-9_] (-EINVAL otherwise); it is not escaped. */
int ub_rpc_client_send(struct ub_rpc_client *c, const char *command,
		       struct ub_err *err);
/* Reads the next reply line. On success *line points to it inside the
 * client's buffer, NUL-terminated, '\n' removed (*len its length); it is
 * valid until the next call on c. Bytes after the line are kept for the
 * next call. */
int ub_rpc_client_read_line(struct ub_rpc_client *c, const char **line,
			    size_t *len, struct ub_err *err);
/* ub_rpc_client_send then ub_rpc_client_read_line. */
int ub_rpc_client_request(struct ub_rpc_client *c, const char *command,
			  const char **line, size_t *len, struct ub_err *err);

/* ---- replies ---------------------------------------------------------- */

/* Cumulative counters of one queue ("stats" reply). */
struct ub_rpc_queue_stats {
	uint64_t bytes_read;
	uint64_t bytes_written;
	uint64_t read_ops;
	uint64_t write_ops;
	uint64_t flush_ops; /* 0 when the reply has no flush_ops member */
};

struct ub_rpc_stats {
	size_t nr_queues;
	struct ub_rpc_queue_stats *queues; /* owned (malloc); NULL if none */
};

/* Requests in flight per queue ("queues" reply). */
struct ub_rpc_queues {
	size_t nr_queues;
	size_t *inflight; /* owned (malloc): entries of each queue; or NULL */
};

/* Parses a "stats" reply line:
 *   {"stats":{"queues":[{"bytes_read":N,"bytes_written":N,"read_ops":N,
 *   "write_ops":N[,"flush_ops":N]},...]}}
 * Numbers must be JSON integers in 0..2^63-1; other members are ignored;
 * at most UB_RPC_CLIENT_MAX_QUEUES queues. *out is overwritten (not
 * freed first) and owned by the caller on success, left empty on error. */
int ub_rpc_parse_stats(const char *line, size_t len, struct ub_rpc_stats *out,
		       struct ub_err *err);
/* Parses a "queues" reply line: {"queues":[[E,...],...]} where each entry E
 * is an array whose first member is a string ("read", "write", "flush";
 * other names are counted too). Same ownership and limits as above. */
int ub_rpc_parse_queues(const char *line, size_t len, struct ub_rpc_queues *out,
			struct ub_err *err);
/* Free the arrays and leave the struct empty; safe on an empty struct. */
void ub_rpc_stats_free(struct ub_rpc_stats *s);
void ub_rpc_queues_free(struct ub_rpc_queues *q);

#endif
