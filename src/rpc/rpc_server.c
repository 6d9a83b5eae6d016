/* RPC socket (backends.md §6): request handling and the epoll server.
 *
 * One thread serves the listening socket, a stop eventfd and every client.
 * A client has a line buffer of at most max_line + 1 bytes and an output
 * buffer. Input is read once per wake-up, complete lines are answered in
 * order, and while more than max_pending reply bytes wait the client is
 * neither read nor are its buffered lines answered (backpressure). A line
 * that outgrows the buffer is answered with an error at once and its bytes
 * are dropped up to the next '\n'. Clients idle (nothing received or sent)
 * for idle_timeout_ms are closed; epoll_wait sleeps until the nearest such
 * deadline. A connection beyond max_clients gets the error line and EOF,
 * and what it sends is discarded until it closes (at most 1 s). */
#include "rpc/rpc_server.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"
#include "util/utf8.h"

#define DUMP_FLAGS (JSON_COMPACT | JSON_SORT_KEYS)

#define DEFAULT_MAX_CLIENTS 16u
#define DEFAULT_IDLE_MS	    60000u
#define DEFAULT_MAX_LINE    65536u
#define DEFAULT_MAX_PENDING (1u << 20)
#define MAX_LINE_LIMIT	    (1u << 30)

#define SOCKET_UMASK   0177
#define SOCKET_MODE    0600
#define LISTEN_BACKLOG 64
#define MAX_EVENTS     32
#define ACCEPT_BATCH   16
/* After EMFILE and the like: stop accepting for a while, log rarely. */
#define ACCEPT_PAUSE_NS	     100000000ull
#define ACCEPT_LOG_PERIOD_NS 10000000000ull
#define IN_INITIAL	     4096u
#define OUT_INITIAL	     4096u
/* A drained output buffer larger than this is released. */
#define OUT_KEEP 65536u

#define TOO_MANY_CLIENTS "{\"error\":\"too many clients\"}\n"
/* A refused client is kept (its input drained) until it closes, for at
 * most REFUSE_LINGER_NS, so that it reads the error and a clean EOF even
 * when it sent a request first; at most REFUSE_MAX at once. */
#define REFUSE_LINGER_NS 1000000000ull
#define REFUSE_MAX	 16u

/* ---- request handling ------------------------------------------------- */

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
	       c == '\f';
}

/* Serialises j (consumed) into a malloc'ed string; NULL with errno ENOMEM
 * when j is NULL or memory runs out. Sized by a first pass so the result
 * is ours to free() whatever allocator jansson uses. */
static char *dump(json_t *j)
{
	char *buf = NULL; /* returned; caller frees */
	size_t n;

	if (!j)
		goto out;
	n = json_dumpb(j, NULL, 0, DUMP_FLAGS);
	if (n == 0)
		goto out;
	buf = malloc(n + 1);
	if (!buf)
		goto out;
	if (json_dumpb(j, buf, n, DUMP_FLAGS) != n) {
		free(buf);
		buf = NULL;
		goto out;
	}
	buf[n] = '\0';
out:
	json_decref(j);
	if (!buf)
		errno = ENOMEM;
	return buf;
}

/* {key: value}; value is consumed; NULL when anything is NULL. */
static json_t *obj1(const char *key, json_t *value)
{
	json_t *o = json_object();

	if (!o || json_object_set_new(o, key, value) != 0) {
		json_decref(o);
		if (!o)
			json_decref(value);
		return NULL;
	}
	return o;
}

/* {"error": message}; the message is cut at its first invalid UTF-8
 * byte (parser messages may quote a truncated token). */
__attribute__((format(printf, 1, 2))) static json_t *error_json(const char *fmt,
								...)
{
	char *msg = NULL; /* heap; freed here */
	json_t *j;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	j = obj1("error", json_stringn(msg, ub_utf8_valid_prefix(msg, n)));
	free(msg);
	return j;
}

/* Unsigned values as JSON integers (clamped to the signed range). */
static json_int_t clamp64(uint64_t v)
{
	return v > INT64_MAX ? INT64_MAX : (json_int_t)v;
}

static json_t *ju64(uint64_t v)
{
	return json_integer(clamp64(v));
}

/* A non-negative double rounded to the nearest integer; NaN and negative
 * values give 0, huge ones INT64_MAX. */
static json_int_t round_nonneg(double v)
{
	json_int_t i;

	if (!(v >= 0))
		return 0;
	if (v >= 9.2e18)
		return INT64_MAX;
	i = (json_int_t)v;
	if (v - (double)i >= 0.5)
		i++;
	return i;
}

static json_t *cmd_version(const struct ub_rpc_source *src)
{
	return obj1("version", json_string(src->version ? src->version : ""));
}

static json_t *cmd_status(const struct ub_rpc_source *src)
{
	struct ub_bgworker_status st;
	json_t *stripes, *fetch, *eta, *status;
	char buf[128];
	int rc = -ENOENT;
	bool ok = true;

	memset(&st, 0, sizeof(st));
	if (src->status)
		rc = src->status(src->status_arg, &st);
	if (rc == -ENOENT)
		return obj1("status", json_null());
	if (rc != 0)
		return error_json(
		    "status unavailable: %s",
		    strerror_r(rc < 0 ? -rc : rc, buf, sizeof(buf)));
	stripes = json_object();
	fetch = json_object();
	status = json_object();
	if (!stripes || !fetch || !status) {
		json_decref(stripes);
		json_decref(fetch);
		json_decref(status);
		return NULL;
	}
	ok &= json_object_set_new(stripes, "failed", ju64(st.failed)) == 0;
	ok &= json_object_set_new(stripes, "fetched", ju64(st.fetched)) == 0;
	ok &= json_object_set_new(stripes, "source", ju64(st.source)) == 0;
	ok &= json_object_set_new(stripes, "total", ju64(st.total)) == 0;
	if (isfinite(st.eta_sec) && st.eta_sec >= 0)
		eta = json_integer(round_nonneg(st.eta_sec));
	else
		eta = json_null();
	ok &= json_object_set_new(
		  fetch, "bytes_per_sec",
		  json_integer(round_nonneg(st.bytes_per_sec))) == 0;
	ok &= json_object_set_new(fetch, "eta_sec", eta) == 0;
	ok &= json_object_set_new(status, "stripes", stripes) == 0;
	ok &= json_object_set_new(status, "fetch", fetch) == 0;
	if (!ok) {
		json_decref(status);
		return NULL;
	}
	return obj1("status", status);
}

/* One queue's in-flight requests: [["read",o,l],["write",o,l],["flush"]]. */
static json_t *queue_json(const struct ub_io_tracker *t, struct ub_io_slot *buf)
{
	json_t *arr = json_array(), *e;
	uint32_t i, n;

	if (!arr || !t)
		return arr;
	n = ub_io_tracker_snapshot(t, buf, t->nslots);
	if (n > t->nslots)
		n = t->nslots;
	for (i = 0; i < n; i++) {
		switch (buf[i].kind) {
		case UB_IO_READ:
			e = json_pack("[sII]", "read", clamp64(buf[i].offset),
				      clamp64(buf[i].length));
			break;
		case UB_IO_WRITE:
			e = json_pack("[sII]", "write", clamp64(buf[i].offset),
				      clamp64(buf[i].length));
			break;
		case UB_IO_FLUSH:
			e = json_pack("[s]", "flush");
			break;
		default:
			continue;
		}
		if (json_array_append_new(arr, e) != 0) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

static json_t *cmd_queues(const struct ub_rpc_source *src)
{
	struct ub_io_slot *buf = NULL; /* heap; snapshot scratch */
	json_t *queues = json_array();
	uint32_t max = 0;
	unsigned i;

	if (!queues)
		return NULL;
	for (i = 0; i < src->ntrackers; i++)
		if (src->trackers[i] && src->trackers[i]->nslots > max)
			max = src->trackers[i]->nslots;
	if (max) {
		buf = calloc(max, sizeof(*buf));
		if (!buf)
			goto fail;
	}
	for (i = 0; i < src->ntrackers; i++)
		if (json_array_append_new(
			queues, queue_json(src->trackers[i], buf)) != 0)
			goto fail;
	free(buf);
	return obj1("queues", queues);

fail:
	free(buf);
	json_decref(queues);
	return NULL;
}

static json_t *cmd_stats(const struct ub_rpc_source *src)
{
	json_t *queues = json_array(), *q;
	struct ub_io_stats st;
	unsigned i;

	if (!queues)
		return NULL;
	for (i = 0; i < src->ntrackers; i++) {
		memset(&st, 0, sizeof(st));
		if (src->trackers[i])
			ub_io_tracker_stats(src->trackers[i], &st);
		q = json_pack(
		    "{sIsIsIsIsI}", "bytes_read", clamp64(st.bytes_read),
		    "bytes_written", clamp64(st.bytes_written), "flush_ops",
		    clamp64(st.flush_ops), "read_ops", clamp64(st.read_ops),
		    "write_ops", clamp64(st.write_ops));
		if (json_array_append_new(queues, q) != 0) {
			json_decref(queues);
			return NULL;
		}
	}
	return obj1("stats", obj1("queues", queues));
}

char *ub_rpc_handle_line(const struct ub_rpc_source *src, const char *line,
			 size_t len)
{
	json_error_t jerr;
	json_t *req, *cmd, *reply;
	const char *name;
	size_t valid;

	while (len && is_space(line[0])) {
		line++;
		len--;
	}
	while (len && is_space(line[len - 1]))
		len--;
	if (!len) {
		errno = 0;
		return NULL;
	}
	valid = ub_utf8_valid_prefix(line, len);
	if (valid < len)
		return dump(error_json("invalid request: invalid UTF-8 at "
				       "byte %zu",
				       valid));
	req = json_loadb(line, len, JSON_DECODE_ANY, &jerr);
	if (!req) {
		if (json_error_code(&jerr) == json_error_out_of_memory) {
			errno = ENOMEM;
			return NULL;
		}
		return dump(error_json("invalid request: %s at line %d "
				       "column %d",
				       jerr.text, jerr.line, jerr.column));
	}
	if (!json_is_object(req)) {
		reply = error_json("invalid request: expected a JSON object");
		goto out;
	}
	cmd = json_object_get(req, "command");
	if (!cmd) {
		reply = error_json("invalid request: missing field `command`");
		goto out;
	}
	if (!json_is_string(cmd)) {
		reply = error_json("invalid request: field `command` must be "
				   "a string");
		goto out;
	}
	name = json_string_value(cmd);
	if (strcmp(name, "version") == 0)
		reply = cmd_version(src);
	else if (strcmp(name, "status") == 0)
		reply = cmd_status(src);
	else if (strcmp(name, "queues") == 0)
		reply = cmd_queues(src);
	else if (strcmp(name, "stats") == 0)
		reply = cmd_stats(src);
	else
		reply = error_json("unknown command: %.*s",
				   (int)json_string_length(cmd), name);
out:
	json_decref(req);
	return dump(reply);
}

/* ---- server ------------------------------------------------------------ */

struct client {
	struct client *prev, *next;
	int fd;				  /* owned */
	char *in;			  /* owned: unanswered bytes */
	size_t in_len, in_cap;		  /* in_cap <= max_line + 1 */
	char *out;			  /* owned: replies not yet sent */
	size_t out_off, out_len, out_cap; /* pending: out[out_off..out_len) */
	uint64_t last_active_ns;	  /* last byte received or sent */
	uint32_t events;		  /* current epoll interest */
	bool discarding; /* inside an over-long line: drop to its '\n' */
	bool eof;	 /* the peer sent everything it will send */
	bool refused;	 /* got "too many clients": input is discarded */
};

struct ub_rpc_server {
	const struct ub_rpc_source *src; /* borrowed */
	struct ub_rpc_limits lim;	 /* defaults resolved */
	uint64_t idle_ns;
	char *path; /* owned */
	dev_t dev;  /* the socket file we created */
	ino_t ino;
	int listen_fd, epfd, stop_fd; /* owned */
	pthread_t thread;
	bool stopping; /* atomic: set by ub_rpc_server_stop */
	/* RPC thread only: */
	struct client *clients; /* owned list */
	unsigned nclients;	/* served, not counting refused ones */
	unsigned nrefused;
	bool accept_paused;
	uint64_t accept_resume_ns, accept_log_ns;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static size_t pending(const struct client *c)
{
	return c->out_len - c->out_off;
}

static bool over_pending(const struct ub_rpc_server *s, const struct client *c)
{
	return pending(c) > s->lim.max_pending;
}

static bool has_line(const struct client *c)
{
	return c->in_len && memchr(c->in, '\n', c->in_len);
}

static void client_close(struct ub_rpc_server *s, struct client *c)
{
	epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->refused)
		s->nrefused--;
	else
		s->nclients--;
	free(c->in);
	free(c->out);
	free(c);
}

/* Queues reply and a '\n' for sending. */
static int client_queue(struct client *c, const char *reply, size_t n)
{
	size_t need = n + 1, cap;
	char *bigger;

	if (c->out_cap - c->out_len < need && c->out_off) {
		memmove(c->out, c->out + c->out_off, pending(c));
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (c->out_cap - c->out_len < need) {
		cap = c->out_cap ? c->out_cap : OUT_INITIAL;
		while (cap - c->out_len < need) {
			if (cap > SIZE_MAX / 2)
				return -ENOMEM;
			cap *= 2;
		}
		bigger = realloc(c->out, cap);
		if (!bigger)
			return -ENOMEM;
		c->out = bigger;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, reply, n);
	c->out[c->out_len + n] = '\n';
	c->out_len += need;
	return 0;
}

/* Answers one request line; an empty line is not answered. */
static int client_answer(struct ub_rpc_server *s, struct client *c,
			 const char *line, size_t len)
{
	char *reply; /* heap; freed here */
	int rc;

	errno = 0;
	reply = ub_rpc_handle_line(s->src, line, len);
	if (!reply)
		return errno ? -errno : 0;
	rc = client_queue(c, reply, strlen(reply));
	free(reply);
	return rc;
}

/* Sends as much pending output as the socket takes. */
static int client_flush(struct client *c)
{
	ssize_t n;

	while (pending(c)) {
		n = send(c->fd, c->out + c->out_off, pending(c),
			 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -errno;
		}
		c->out_off += (size_t)n;
		c->last_active_ns = now_ns();
	}
	c->out_off = c->out_len = 0;
	if (c->out_cap > OUT_KEEP) {
		free(c->out);
		c->out = NULL;
		c->out_cap = 0;
	}
	return 0;
}

/* Answers the complete lines in the input buffer until backpressure
 * stops it, then handles a partial line that is too long. */
static int client_take_lines(struct ub_rpc_server *s, struct client *c)
{
	size_t start = 0, len;
	char *nl;
	int rc = 0;

	while (!over_pending(s, c) && start < c->in_len) {
		nl = memchr(c->in + start, '\n', c->in_len - start);
		if (!nl)
			break;
		len = (size_t)(nl - (c->in + start));
		if (c->discarding)
			c->discarding = false;
		else
			rc = client_answer(s, c, c->in + start, len);
		start += len + 1;
		if (rc)
			break;
	}
	if (start) {
		memmove(c->in, c->in + start, c->in_len - start);
		c->in_len -= start;
	}
	if (rc || over_pending(s, c) || has_line(c))
		return rc;
	if (c->discarding) {
		c->in_len = 0;
	} else if (c->in_len > s->lim.max_line) {
		char *reply = dump(error_json("invalid request: line exceeds "
					      "%zu bytes",
					      s->lim.max_line));

		if (!reply)
			return -ENOMEM;
		rc = client_queue(c, reply, strlen(reply));
		free(reply);
		c->in_len = 0;
		c->discarding = true;
	}
	return rc;
}

/* Answers buffered lines and sends, alternating while the client keeps
 * taking replies. */
static int client_pump(struct ub_rpc_server *s, struct client *c)
{
	int rc;

	for (;;) {
		rc = client_take_lines(s, c);
		if (rc)
			return rc;
		rc = client_flush(c);
		if (rc)
			return rc;
		if (over_pending(s, c) || !has_line(c))
			return 0;
	}
}

/* One recv() into the line buffer. */
static int client_read(struct ub_rpc_server *s, struct client *c)
{
	size_t max = s->lim.max_line + 1, cap;
	char *bigger;
	ssize_t n;

	if (c->in_len == c->in_cap) {
		cap = c->in_cap ? c->in_cap * 2 : IN_INITIAL;
		if (cap > max)
			cap = max;
		if (cap <= c->in_cap)
			return 0; /* cannot happen: a full buffer is cut */
		bigger = realloc(c->in, cap);
		if (!bigger)
			return -ENOMEM;
		c->in = bigger;
		c->in_cap = cap;
	}
	n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		return -errno;
	}
	if (n == 0) {
		c->eof = true;
		return 0;
	}
	c->in_len += (size_t)n;
	c->last_active_ns = now_ns();
	return 0;
}

static int client_set_events(struct ub_rpc_server *s, struct client *c)
{
	struct epoll_event ev = {.data.ptr = c};

	if (!c->eof && !over_pending(s, c))
		ev.events |= EPOLLIN;
	if (pending(c))
		ev.events |= EPOLLOUT;
	if (ev.events == c->events)
		return 0;
	if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0)
		return -errno;
	c->events = ev.events;
	return 0;
}

/* A refused client: its input is discarded until it closes. */
static void client_drain(struct ub_rpc_server *s, struct client *c)
{
	char tmp[4096];
	ssize_t n;

	n = recv(c->fd, tmp, sizeof(tmp), MSG_DONTWAIT);
	if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
				errno == EINTR)))
		return;
	client_close(s, c);
}

static void client_service(struct ub_rpc_server *s, struct client *c,
			   bool readable)
{
	int rc;

	if (c->refused) {
		client_drain(s, c);
		return;
	}

	rc = client_pump(s, c);
	if (!rc && readable && !c->eof && !over_pending(s, c)) {
		rc = client_read(s, c);
		if (!rc)
			rc = client_pump(s, c);
	}
	/* At end of input a last line without '\n' is answered too. */
	if (!rc && c->eof && !over_pending(s, c) && !has_line(c) && c->in_len) {
		if (!c->discarding)
			rc = client_answer(s, c, c->in, c->in_len);
		c->in_len = 0;
		if (!rc)
			rc = client_flush(c);
	}
	if (rc) {
		if (rc != -EPIPE && rc != -ECONNRESET)
			LOG_DEBUG("RPC client closed: %s", strerror(-rc));
		client_close(s, c);
		return;
	}
	if (c->eof && !pending(c) && !c->in_len) {
		client_close(s, c);
		return;
	}
	rc = client_set_events(s, c);
	if (rc) {
		LOG_ERROR("RPC server: epoll_ctl: %s", strerror(-rc));
		client_close(s, c);
	}
}

static void accept_pause(struct ub_rpc_server *s, int e, uint64_t now)
{
	if (!s->accept_log_ns ||
	    now - s->accept_log_ns >= ACCEPT_LOG_PERIOD_NS) {
		LOG_WARN("RPC server: cannot accept a connection: %s "
			 "(retrying)",
			 strerror(e));
		s->accept_log_ns = now;
	}
	if (epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->listen_fd, NULL) != 0)
		return;
	s->accept_paused = true;
	s->accept_resume_ns = now + ACCEPT_PAUSE_NS;
}

static void accept_resume(struct ub_rpc_server *s, uint64_t now)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->listen_fd};

	if (!s->accept_paused || now < s->accept_resume_ns)
		return;
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->listen_fd, &ev) != 0) {
		s->accept_resume_ns = now + ACCEPT_PAUSE_NS;
		return;
	}
	s->accept_paused = false;
}

/* Takes over fd as a client (served, or refused). */
static void client_add(struct ub_rpc_server *s, int fd, bool refused)
{
	struct epoll_event ev = {.events = EPOLLIN};
	struct client *c;

	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->fd = fd;
	c->refused = refused;
	c->events = EPOLLIN;
	c->last_active_ns = now_ns();
	ev.data.ptr = c;
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
		LOG_ERROR("RPC server: epoll_ctl: %s", strerror(errno));
		close(fd);
		free(c);
		return;
	}
	c->next = s->clients;
	if (c->next)
		c->next->prev = c;
	s->clients = c;
	if (refused)
		s->nrefused++;
	else
		s->nclients++;
}

/* Answers a connection beyond max_clients with the error, ends our
 * sending side and keeps draining its input until it closes: closing with
 * its request unread would reset the connection, and the client could
 * lose the error. */
static void refuse(struct ub_rpc_server *s, int fd)
{
	ssize_t n;

	LOG_DEBUG("RPC server: refusing a client: %u connected", s->nclients);
	/* A new socket's send buffer is empty: this fits at once. */
	n = send(fd, TOO_MANY_CLIENTS, sizeof(TOO_MANY_CLIENTS) - 1,
		 MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n != (ssize_t)sizeof(TOO_MANY_CLIENTS) - 1 ||
	    s->nrefused >= REFUSE_MAX || shutdown(fd, SHUT_WR) != 0) {
		close(fd);
		return;
	}
	client_add(s, fd, true);
}

static void do_accept(struct ub_rpc_server *s)
{
	int i, fd;

	for (i = 0; i < ACCEPT_BATCH; i++) {
		fd = accept4(s->listen_fd, NULL, NULL,
			     SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			switch (errno) {
			case EINTR:
			case ECONNABORTED:
			case EPROTO:
				continue;
			case EAGAIN:
#if EAGAIN != EWOULDBLOCK
			case EWOULDBLOCK:
#endif
				return;
			default: /* EMFILE, ENFILE, ENOBUFS, ENOMEM ... */
				accept_pause(s, errno, now_ns());
				return;
			}
		}
		if (s->nclients >= s->lim.max_clients)
			refuse(s, fd);
		else
			client_add(s, fd, false);
	}
}

/* When the client is closed if nothing happens: idle timeout, or the end
 * of a refused client's linger time. */
static uint64_t client_deadline(const struct ub_rpc_server *s,
				const struct client *c)
{
	return c->last_active_ns + (c->refused ? REFUSE_LINGER_NS : s->idle_ns);
}

static void close_idle(struct ub_rpc_server *s, uint64_t now)
{
	struct client *c, *next;

	for (c = s->clients; c; c = next) {
		next = c->next;
		if (now >= client_deadline(s, c)) {
			LOG_DEBUG("RPC server: closing an idle client");
			client_close(s, c);
		}
	}
}

/* Milliseconds until the nearest idle deadline or accept retry; -1 for
 * none. */
static int next_timeout(const struct ub_rpc_server *s, uint64_t now)
{
	const struct client *c;
	uint64_t when = UINT64_MAX, d;

	for (c = s->clients; c; c = c->next) {
		d = client_deadline(s, c);
		if (d < when)
			when = d;
	}
	if (s->accept_paused && s->accept_resume_ns < when)
		when = s->accept_resume_ns;
	if (when == UINT64_MAX)
		return -1;
	if (when <= now)
		return 0;
	d = (when - now + 999999) / 1000000;
	return d > INT_MAX ? INT_MAX : (int)d;
}

static void *rpc_thread(void *arg)
{
	struct ub_rpc_server *s = arg;
	struct epoll_event ev[MAX_EVENTS];
	uint64_t now;
	bool run = true;
	int i, n;

	while (run && !__atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE)) {
		n = epoll_wait(s->epfd, ev, MAX_EVENTS,
			       next_timeout(s, now_ns()));
		if (n < 0) {
			if (errno != EINTR) {
				LOG_ERROR("RPC server: epoll_wait: %s",
					  strerror(errno));
				usleep(10000);
			}
			continue;
		}
		for (i = 0; i < n && run; i++) {
			if (ev[i].data.ptr == &s->stop_fd)
				run = false;
			else if (ev[i].data.ptr == &s->listen_fd)
				do_accept(s);
			else
				client_service(
				    s, ev[i].data.ptr,
				    ev[i].events &
					(EPOLLIN | EPOLLHUP | EPOLLERR));
		}
		now = now_ns();
		close_idle(s, now);
		accept_resume(s, now);
	}
	return NULL;
}

/* ---- start and stop ---------------------------------------------------- */

static void resolve_limits(const struct ub_rpc_limits *lim,
			   struct ub_rpc_limits *out)
{
	memset(out, 0, sizeof(*out));
	if (lim)
		*out = *lim;
	if (!out->max_clients)
		out->max_clients = DEFAULT_MAX_CLIENTS;
	if (!out->idle_timeout_ms)
		out->idle_timeout_ms = DEFAULT_IDLE_MS;
	if (!out->max_line)
		out->max_line = DEFAULT_MAX_LINE;
	if (!out->max_pending)
		out->max_pending = DEFAULT_MAX_PENDING;
}

static bool same_file(const struct ub_rpc_server *s)
{
	struct stat st;

	return lstat(s->path, &st) == 0 && S_ISSOCK(st.st_mode) &&
	       st.st_dev == s->dev && st.st_ino == s->ino;
}

int ub_rpc_server_start(const char *path, const struct ub_rpc_source *src,
			const struct ub_rpc_limits *lim,
			struct ub_rpc_server **out, struct ub_err *err)
{
	struct epoll_event ev = {.events = EPOLLIN};
	struct ub_rpc_server *s; /* returned in *out; ub_rpc_server_stop */
	struct sockaddr_un sa;
	struct stat st;
	char ebuf[128];
	mode_t old_mask;
	size_t n;
	int rc;

	*out = NULL;
	if (!path || !src)
		return ub_err_ret(err, -EINVAL,
				  "RPC error: no RPC socket path "
				  "or no data source");
	n = strlen(path);
	if (n == 0 || n >= sizeof(sa.sun_path))
		return ub_err_ret(
		    err, -ENAMETOOLONG,
		    "RPC error: failed to bind RPC socket \"%s\": "
		    "the path is empty or longer than %zu bytes",
		    path, sizeof(sa.sun_path) - 1);
	if (lim && lim->max_line > MAX_LINE_LIMIT)
		return ub_err_ret(err, -EINVAL,
				  "RPC error: RPC line limit %zu exceeds %u "
				  "bytes",
				  lim->max_line, MAX_LINE_LIMIT);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, n);

	s = calloc(1, sizeof(*s));
	if (!s)
		return ub_err_ret(err, -ENOMEM, "RPC error: out of memory");
	s->src = src;
	resolve_limits(lim, &s->lim);
	s->idle_ns = (uint64_t)s->lim.idle_timeout_ms * 1000000ull;
	s->listen_fd = s->epfd = s->stop_fd = -1;
	s->path = strdup(path);
	if (!s->path) {
		rc = ub_err_ret(err, -ENOMEM, "RPC error: out of memory");
		goto err_free;
	}

	/* Whatever is at the path goes, except a directory. */
	if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
		errno = EISDIR;
	else if (unlink(path) == 0 || errno == ENOENT)
		errno = 0;
	if (errno) {
		rc = ub_err_ret(err, -errno,
				"RPC error: failed to remove existing RPC "
				"socket \"%s\": %s",
				path, strerror_r(errno, ebuf, sizeof(ebuf)));
		goto err_free;
	}

	s->listen_fd =
	    socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->listen_fd < 0) {
		rc = ub_err_ret(err, -errno,
				"RPC error: failed to create RPC socket "
				"\"%s\": %s",
				path, strerror_r(errno, ebuf, sizeof(ebuf)));
		goto err_free;
	}
	/* The umask is process-wide; this runs before the front end's
	 * threads create files. */
	old_mask = umask(SOCKET_UMASK);
	rc = bind(s->listen_fd, (const struct sockaddr *)&sa, sizeof(sa));
	umask(old_mask);
	if (rc != 0) {
		rc = ub_err_ret(err, -errno,
				"RPC error: failed to bind RPC socket \"%s\": "
				"%s",
				path, strerror_r(errno, ebuf, sizeof(ebuf)));
		goto err_close;
	}
	if (lstat(path, &st) != 0 || chmod(path, SOCKET_MODE) != 0) {
		rc = ub_err_ret(err, -errno,
				"RPC error: failed to set the mode of RPC "
				"socket \"%s\": %s",
				path, strerror_r(errno, ebuf, sizeof(ebuf)));
		goto err_unlink;
	}
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	if (listen(s->listen_fd, LISTEN_BACKLOG) != 0) {
		rc = ub_err_ret(err, -errno,
				"RPC error: failed to listen on RPC socket "
				"\"%s\": %s",
				path, strerror_r(errno, ebuf, sizeof(ebuf)));
		goto err_unlink;
	}

	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (s->epfd < 0)
		goto err_sys;
	s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->stop_fd < 0)
		goto err_sys;
	ev.data.ptr = &s->listen_fd;
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->listen_fd, &ev) != 0)
		goto err_sys;
	ev.data.ptr = &s->stop_fd;
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->stop_fd, &ev) != 0)
		goto err_sys;
	rc = pthread_create(&s->thread, NULL, rpc_thread, s);
	if (rc) {
		errno = rc;
		goto err_sys;
	}
	/* Named here so the name is set when start returns. */
	pthread_setname_np(s->thread, "ubiblk-rpc");
	LOG_INFO("RPC server listening on \"%s\"", path);
	*out = s;
	return 0;

err_sys:
	rc = ub_err_ret(err, -errno,
			"RPC error: failed to start the RPC server on RPC "
			"socket \"%s\": %s",
			path, strerror_r(errno, ebuf, sizeof(ebuf)));
	if (s->stop_fd >= 0)
		close(s->stop_fd);
	if (s->epfd >= 0)
		close(s->epfd);
err_unlink:
	unlink(path);
err_close:
	close(s->listen_fd);
err_free:
	free(s->path);
	free(s);
	return rc;
}

void ub_rpc_server_stop(struct ub_rpc_server *s)
{
	uint64_t one = 1;
	ssize_t n;

	if (!s)
		return;
	__atomic_store_n(&s->stopping, true, __ATOMIC_RELEASE);
	n = write(s->stop_fd, &one, sizeof(one));
	(void)n;
	pthread_join(s->thread, NULL);
	while (s->clients)
		client_close(s, s->clients);
	close(s->listen_fd);
	if (same_file(s))
		unlink(s->path);
	close(s->stop_fd);
	close(s->epfd);
	free(s->path);
	free(s);
}
