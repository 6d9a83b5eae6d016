/* RPC socket client (docs/rpc.md): connection, requests, reply lines with
 * a deadline and a length cap, and the stats/queues reply parsers.
 *
 * The socket is non-blocking; every wait is a ppoll() bounded by the
 * deadline of the whole operation, so a server that sends one byte at a
 * time cannot stretch a read beyond timeout_ms. Received bytes accumulate
 * in one buffer of at most line_max + 1 bytes: a line is returned in place
 * (its '\n' replaced by NUL) and dropped at the next call. */
#include "rpc/rpc_client.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BUF_INITIAL	 4096u
#define COMMAND_MAX	 64u
#define NSEC_PER_SEC	 1000000000L
#define NSEC_PER_MSEC	 1000000L
#define REQUEST_OVERHEAD 20u /* {"command": ""}\n and the NUL */

void ub_rpc_client_init(struct ub_rpc_client *c)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->line_max = UB_RPC_CLIENT_LINE_MAX;
	c->timeout_ms = UB_RPC_CLIENT_TIMEOUT_MS;
}

void ub_rpc_client_close(struct ub_rpc_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->buf);
	c->buf = NULL;
	c->off = c->len = c->scanned = c->cap = 0;
}

/* "[Errno <n>] <text>", as the reference (Python) words OS errors. */
static int sys_err(struct ub_err *err, int errnum)
{
	return ub_err_ret(err, -errnum, "[Errno %d] %s", errnum,
			  strerror(errnum));
}

static void deadline_after(struct timespec *d, int ms)
{
	clock_gettime(CLOCK_MONOTONIC, d);
	d->tv_sec += ms / 1000;
	d->tv_nsec += (long)(ms % 1000) * NSEC_PER_MSEC;
	if (d->tv_nsec >= NSEC_PER_SEC) {
		d->tv_sec++;
		d->tv_nsec -= NSEC_PER_SEC;
	}
}

/* Waits until fd reports one of events (or an error/hangup, which the
 * next system call on fd then reports) or the deadline passes. */
static int wait_fd(struct ub_rpc_client *c, short events,
		   const struct timespec *deadline, struct ub_err *err)
{
	struct pollfd pfd = {.fd = c->fd, .events = events};
	struct timespec now, left;
	int r;

	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		left.tv_sec = deadline->tv_sec - now.tv_sec;
		left.tv_nsec = deadline->tv_nsec - now.tv_nsec;
		if (left.tv_nsec < 0) {
			left.tv_sec--;
			left.tv_nsec += NSEC_PER_SEC;
		}
		if (left.tv_sec < 0)
			return ub_err_ret(err, -ETIMEDOUT,
					  "timed out waiting for the RPC "
					  "server");
		r = ppoll(&pfd, 1, &left, c->wait_mask);
		if (r > 0)
			return 0;
		if (r == 0)
			continue; /* the clock check above ends it */
		if (errno != EINTR)
			return sys_err(err, errno);
		if (c->abort_flag && *c->abort_flag)
			return ub_err_ret(err, -EINTR, "interrupted");
	}
}

static bool command_ok(const char *command)
{
	size_t i;

	for (i = 0; command[i]; i++) {
		char ch = command[i];

		if (i >= COMMAND_MAX ||
		    !((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_'))
			return false;
	}
	return i > 0;
}

int ub_rpc_client_connect(struct ub_rpc_client *c, const char *path,
			  struct ub_err *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t n = strlen(path);
	int fd, rc;

	ub_rpc_client_close(c);
	if (n == 0)
		return ub_err_ret(err, -EINVAL, "empty socket path");
	if (n >= sizeof(sa.sun_path))
		return ub_err_ret(err, -ENAMETOOLONG, "AF_UNIX path too long");
	memcpy(sa.sun_path, path, n + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return sys_err(err, errno);
	/* A Unix stream connect completes or fails at once; EAGAIN means
	 * the listener's backlog is full. */
	do {
		rc =
		    connect(fd, (const struct sockaddr *)&sa,
			    (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
					n + 1));
	} while (rc && errno == EINTR);
	if (rc) {
		rc = sys_err(err, errno);
		close(fd);
		return rc;
	}
	c->fd = fd;
	return 0;
}

int ub_rpc_client_send(struct ub_rpc_client *c, const char *command,
		       struct ub_err *err)
{
	char req[COMMAND_MAX + REQUEST_OVERHEAD];
	struct timespec deadline;
	size_t n, done = 0;
	ssize_t w;
	int rc;

	if (!command_ok(command))
		return ub_err_ret(err, -EINVAL, "invalid command name");
	if (c->fd < 0)
		return ub_err_ret(err, -ENOTCONN, "not connected");
	n = (size_t)snprintf(req, sizeof(req), "{\"command\": \"%s\"}\n",
			     command);
	deadline_after(&deadline, c->timeout_ms);
	while (done < n) {
		w = send(c->fd, req + done, n - done, MSG_NOSIGNAL);
		if (w > 0) {
			done += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return sys_err(err, errno);
		rc = wait_fd(c, POLLOUT, &deadline, err);
		if (rc)
			return rc;
	}
	return 0;
}

/* Room for at least one more byte, up to line_max + 1 bytes in all. */
static int grow(struct ub_rpc_client *c, struct ub_err *err)
{
	size_t limit = c->line_max + 1, ncap;
	char *nbuf;

	if (c->len < c->cap)
		return 0;
	ncap = c->cap ? c->cap * 2 : BUF_INITIAL;
	if (ncap > limit || ncap < c->cap)
		ncap = limit;
	if (ncap <= c->len)
		return ub_err_ret(err, -EMSGSIZE,
				  "reply line exceeds %zu bytes", c->line_max);
	nbuf = realloc(c->buf, ncap);
	if (!nbuf)
		return ub_err_ret(err, -ENOMEM, "out of memory");
	c->buf = nbuf;
	c->cap = ncap;
	return 0;
}

int ub_rpc_client_read_line(struct ub_rpc_client *c, const char **line,
			    size_t *len, struct ub_err *err)
{
	struct timespec deadline;
	char *nl;
	size_t l;
	ssize_t r;
	int rc;

	if (c->fd < 0)
		return ub_err_ret(err, -ENOTCONN, "not connected");
	if (c->off) { /* drop the line returned last time */
		memmove(c->buf, c->buf + c->off, c->len - c->off);
		c->len -= c->off;
		c->off = 0;
		c->scanned = 0;
	}
	deadline_after(&deadline, c->timeout_ms);
	for (;;) {
		nl = c->len > c->scanned ? memchr(c->buf + c->scanned, '\n',
						  c->len - c->scanned)
					 : NULL;
		if (nl) {
			l = (size_t)(nl - c->buf);
			if (l > c->line_max)
				break;
			*nl = '\0';
			*line = c->buf;
			*len = l;
			c->off = l + 1;
			c->scanned = 0;
			return 0;
		}
		c->scanned = c->len;
		if (c->len > c->line_max)
			break;
		rc = grow(c, err);
		if (rc)
			return rc;
		r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		if (r > 0) {
			c->len += (size_t)r;
			continue;
		}
		if (r == 0)
			return ub_err_ret(err, -ECONNRESET,
					  "RPC socket closed");
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return sys_err(err, errno);
		rc = wait_fd(c, POLLIN, &deadline, err);
		if (rc)
			return rc;
	}
	return ub_err_ret(err, -EMSGSIZE, "reply line exceeds %zu bytes",
			  c->line_max);
}

int ub_rpc_client_request(struct ub_rpc_client *c, const char *command,
			  const char **line, size_t *len, struct ub_err *err)
{
	int rc = ub_rpc_client_send(c, command, err);

	if (rc)
		return rc;
	return ub_rpc_client_read_line(c, line, len, err);
}

/* ---- replies ---------------------------------------------------------- */

/* Parses line as a JSON object; an "error" member is the server's error,
 * otherwise *member is root[what] (borrowed from *root, which the caller
 * releases with json_decref). */
static int load_reply(const char *line, size_t len, const char *what,
		      json_t **root, json_t **member, struct ub_err *err)
{
	json_error_t je;
	json_t *r, *e;

	*root = NULL;
	r = json_loadb(line, len, 0, &je);
	if (!r)
		return ub_err_ret(err, -EPROTO,
				  "invalid JSON in reply: %s at line %d "
				  "column %d",
				  je.text, je.line, je.column);
	if (!json_is_object(r)) {
		json_decref(r);
		return ub_err_ret(err, -EPROTO,
				  "malformed %s reply: not a JSON object",
				  what);
	}
	e = json_object_get(r, "error");
	if (e) {
		ub_err_set(err, "server error: %s",
			   json_is_string(e) ? json_string_value(e)
					     : "(not a string)");
		json_decref(r);
		return -EPROTO;
	}
	*member = json_object_get(r, what);
	if (!*member) {
		json_decref(r);
		return ub_err_ret(err, -EPROTO,
				  "malformed %s reply: no \"%s\" member", what,
				  what);
	}
	*root = r;
	return 0;
}

/* Checks the size of a reply's per-queue array. */
static int check_queue_array(const json_t *a, const char *what,
			     struct ub_err *err)
{
	if (!json_is_array(a))
		return ub_err_ret(err, -EPROTO,
				  "malformed %s reply: the queue list is not "
				  "an array",
				  what);
	if (json_array_size(a) > UB_RPC_CLIENT_MAX_QUEUES)
		return ub_err_ret(err, -EPROTO,
				  "malformed %s reply: %zu queues (at most "
				  "%u)",
				  what, json_array_size(a),
				  UB_RPC_CLIENT_MAX_QUEUES);
	return 0;
}

/* obj[name] as a non-negative integer; absent: -ENOENT (message set). */
static int get_counter(const json_t *obj, const char *name, size_t queue,
		       uint64_t *out, struct ub_err *err)
{
	const json_t *v = json_object_get(obj, name);

	if (!v)
		return ub_err_ret(err, -ENOENT,
				  "malformed stats reply: queue %zu has no "
				  "\"%s\"",
				  queue, name);
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return ub_err_ret(err, -EPROTO,
				  "malformed stats reply: \"%s\" of queue %zu "
				  "is not a non-negative integer",
				  name, queue);
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

int ub_rpc_parse_stats(const char *line, size_t len, struct ub_rpc_stats *out,
		       struct ub_err *err)
{
	struct ub_rpc_queue_stats *qs = NULL;
	json_t *root, *stats, *list, *q;
	size_t i, n;
	int rc;

	out->nr_queues = 0;
	out->queues = NULL;
	rc = load_reply(line, len, "stats", &root, &stats, err);
	if (rc)
		return rc;
	if (!json_is_object(stats)) {
		rc = ub_err_ret(err, -EPROTO,
				"malformed stats reply: \"stats\" is not an "
				"object");
		goto out;
	}
	list = json_object_get(stats, "queues");
	if (!list) {
		rc = ub_err_ret(err, -EPROTO,
				"malformed stats reply: no \"queues\" member");
		goto out;
	}
	rc = check_queue_array(list, "stats", err);
	if (rc)
		goto out;
	n = json_array_size(list);
	if (n) {
		qs = calloc(n, sizeof(*qs));
		if (!qs) {
			rc = ub_err_ret(err, -ENOMEM, "out of memory");
			goto out;
		}
	}
	for (i = 0; i < n; i++) {
		q = json_array_get(list, i);
		if (!json_is_object(q)) {
			rc = ub_err_ret(err, -EPROTO,
					"malformed stats reply: queue %zu is "
					"not an object",
					i);
			goto out_free;
		}
		rc = get_counter(q, "bytes_read", i, &qs[i].bytes_read, err);
		if (!rc)
			rc = get_counter(q, "bytes_written", i,
					 &qs[i].bytes_written, err);
		if (!rc)
			rc =
			    get_counter(q, "read_ops", i, &qs[i].read_ops, err);
		if (!rc)
			rc = get_counter(q, "write_ops", i, &qs[i].write_ops,
					 err);
		if (rc) {
			rc = -EPROTO;
			goto out_free;
		}
		/* Not used for any figure; optional as for the reference. */
		rc = get_counter(q, "flush_ops", i, &qs[i].flush_ops, err);
		if (rc == -ENOENT)
			rc = 0;
		if (rc)
			goto out_free;
	}
	out->nr_queues = n;
	out->queues = qs;
	qs = NULL;
out_free:
	free(qs);
out:
	json_decref(root);
	return rc;
}

int ub_rpc_parse_queues(const char *line, size_t len, struct ub_rpc_queues *out,
			struct ub_err *err)
{
	json_t *root, *list, *q, *e;
	size_t *counts = NULL;
	size_t i, j, n;
	int rc;

	out->nr_queues = 0;
	out->inflight = NULL;
	rc = load_reply(line, len, "queues", &root, &list, err);
	if (rc)
		return rc;
	rc = check_queue_array(list, "queues", err);
	if (rc)
		goto out;
	n = json_array_size(list);
	if (n) {
		counts = calloc(n, sizeof(*counts));
		if (!counts) {
			rc = ub_err_ret(err, -ENOMEM, "out of memory");
			goto out;
		}
	}
	for (i = 0; i < n; i++) {
		q = json_array_get(list, i);
		if (!json_is_array(q)) {
			rc = ub_err_ret(err, -EPROTO,
					"malformed queues reply: queue %zu is "
					"not an array",
					i);
			goto out_free;
		}
		for (j = 0; j < json_array_size(q); j++) {
			e = json_array_get(q, j);
			if (!json_is_array(e) ||
			    !json_is_string(json_array_get(e, 0))) {
				rc = ub_err_ret(err, -EPROTO,
						"malformed queues reply: entry "
						"%zu of queue %zu is not "
						"[kind, ...]",
						j, i);
				goto out_free;
			}
		}
		counts[i] = json_array_size(q);
	}
	out->nr_queues = n;
	out->inflight = counts;
	counts = NULL;
out_free:
	free(counts);
out:
	json_decref(root);
	return rc;
}

void ub_rpc_stats_free(struct ub_rpc_stats *s)
{
	free(s->queues);
	s->queues = NULL;
	s->nr_queues = 0;
}

void ub_rpc_queues_free(struct ub_rpc_queues *q)
{
	free(q->inflight);
	q->inflight = NULL;
	q->nr_queues = 0;
}
