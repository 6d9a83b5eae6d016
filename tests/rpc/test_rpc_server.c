/* RPC socket (backends.md §6, criteria 41-48): the exact reply bytes of
 * every command, error replies, and the server over a real Unix socket:
 * framing, limits, backpressure, idle timeout, start and stop. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "rpc/rpc_server.h"

#define VERSION_REQ   "{\"command\":\"version\"}\n"
#define VERSION_REPLY "{\"version\":\"0.5.1\"}"
#define STATS_REQ     "{\"command\":\"stats\"}\n"
#define QUEUES_REPLY                                                           \
	"{\"queues\":[[[\"flush\"],[\"read\",2,3],[\"write\",4,5],"            \
	"[\"flush\"]],[[\"write\",10,20]],[]]}"
#define STATS3_REPLY                                                           \
	"{\"stats\":{\"queues\":[{\"bytes_read\":4096,\"bytes_written\":8192," \
	"\"flush_ops\":1,\"read_ops\":1,\"write_ops\":1},{\"bytes_read\":"     \
	"12800,\"bytes_written\":5120,\"flush_ops\":0,\"read_ops\":2,"         \
	"\"write_ops\":1},{\"bytes_read\":0,\"bytes_written\":0,\"flush_ops\"" \
	":0,\"read_ops\":0,\"write_ops\":0}]}}"
#define INVALID_PREFIX "{\"error\":\"invalid request: "

/* ---- fixture ---- */

struct status_mock {
	int rc;
	struct ub_bgworker_status st;
	unsigned calls;
};

struct fx {
	char dir[256], path[320];
	struct ub_io_tracker *q[3];	/* the §6.3 "queues" example */
	struct ub_io_tracker *s[3];	/* the criterion 48 "stats" trackers */
	struct ub_rpc_source src;	/* q[] */
	struct ub_rpc_source stats_src; /* s[] */
	struct status_mock mock;
	struct ub_rpc_server *srv;
};

static int mock_status(void *arg, struct ub_bgworker_status *st)
{
	struct status_mock *m = arg;

	m->calls++;
	if (m->rc)
		return m->rc;
	*st = m->st;
	return 0;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	unsigned i;

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "%s/ubiblk-rpc.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/rpc.sock", f->dir);
	for (i = 0; i < 3; i++) {
		f->q[i] = ub_io_tracker_new(8);
		f->s[i] = ub_io_tracker_new(8);
		assert_non_null(f->q[i]);
		assert_non_null(f->s[i]);
	}
	ub_io_tracker_flush(f->q[0], 0);
	ub_io_tracker_read(f->q[0], 1, 2, 3);
	ub_io_tracker_write(f->q[0], 2, 4, 5);
	ub_io_tracker_flush(f->q[0], 3);
	ub_io_tracker_write(f->q[1], 0, 10, 20);

	ub_io_tracker_read(f->s[0], 0, 0, 8);
	ub_io_tracker_write(f->s[0], 1, 0, 16);
	ub_io_tracker_flush(f->s[0], 2);
	ub_io_tracker_read(f->s[1], 0, 0, 20);
	ub_io_tracker_clear(f->s[1], 0);
	ub_io_tracker_read(f->s[1], 0, 0, 5);
	ub_io_tracker_write(f->s[1], 1, 0, 10);

	f->src.version = "0.5.1";
	f->src.trackers = f->q;
	f->src.ntrackers = 3;
	f->stats_src.version = "0.5.1";
	f->stats_src.trackers = f->s;
	f->stats_src.ntrackers = 3;
	*state = f;
	return 0;
}

static void rm_tree(const char *dir)
{
	char p[600];
	struct dirent *d;
	DIR *dh = opendir(dir);

	if (!dh)
		return;
	while ((d = readdir(dh))) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, d->d_name);
		if (d->d_type == DT_DIR)
			rm_tree(p);
		else
			unlink(p);
	}
	closedir(dh);
	rmdir(dir);
}

static int teardown(void **state)
{
	struct fx *f = *state;
	unsigned i;

	ub_rpc_server_stop(f->srv);
	rm_tree(f->dir);
	for (i = 0; i < 3; i++) {
		ub_io_tracker_free(f->q[i]);
		ub_io_tracker_free(f->s[i]);
	}
	free(f);
	return 0;
}

static void start(struct fx *f, const struct ub_rpc_limits *lim)
{
	struct ub_err err = {{0}};
	int rc;

	rc = ub_rpc_server_start(f->path, &f->src, lim, &f->srv, &err);
	if (rc)
		fail_msg("start: %d %s", rc, err.msg);
	assert_non_null(f->srv);
}

/* ---- request handling without a socket ---- */

/* Asserts the exact reply to one request line. */
static void expect_reply(const struct ub_rpc_source *src, const char *req,
			 const char *want)
{
	char *got = ub_rpc_handle_line(src, req, strlen(req));

	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static void expect_invalid(const struct ub_rpc_source *src, const char *req,
			   size_t len)
{
	char *got = ub_rpc_handle_line(src, req, len);
	size_t n;

	assert_non_null(got);
	n = strlen(got);
	if (strncmp(got, INVALID_PREFIX, strlen(INVALID_PREFIX)) != 0 ||
	    n < 3 || strcmp(got + n - 2, "\"}") != 0)
		fail_msg("not an invalid request error: %s", got);
	free(got);
}

static void test_c42_version_returns_the_program_version(void **state)
{
	struct fx *f = *state;

	expect_reply(&f->src, "{\"command\":\"version\"}", VERSION_REPLY);
	f->src.version = "1.2.3-test";
	expect_reply(&f->src, "{\"command\":\"version\"}",
		     "{\"version\":\"1.2.3-test\"}");
}

static void test_c43_status_with_lazy_device(void **state)
{
	struct fx *f = *state;

	f->src.status = mock_status;
	f->src.status_arg = &f->mock;
	f->mock.st = (struct ub_bgworker_status){
	    .total = 64,
	    .source = 16,
	    .fetched = 2,
	    .failed = 1,
	    .bytes_per_sec = 1048576.4,
	    .eta_sec = 24.5,
	};
	expect_reply(&f->src, "{\"command\":\"status\"}",
		     "{\"status\":{\"fetch\":{\"bytes_per_sec\":1048576,"
		     "\"eta_sec\":25},\"stripes\":{\"failed\":1,\"fetched\":2,"
		     "\"source\":16,\"total\":64}}}");
	assert_int_equal(f->mock.calls, 1);
}

static void test_c43_status_without_reporter_is_null(void **state)
{
	struct fx *f = *state;

	expect_reply(&f->src, "{\"command\":\"status\"}", "{\"status\":null}");
	f->src.status = mock_status;
	f->src.status_arg = &f->mock;
	f->mock.rc = -ENOENT;
	expect_reply(&f->src, "{\"command\":\"status\"}", "{\"status\":null}");
	assert_int_equal(f->mock.calls, 1);
}

static void test_status_with_unknown_eta_reports_null(void **state)
{
	struct fx *f = *state;

	f->src.status = mock_status;
	f->src.status_arg = &f->mock;
	f->mock.st = (struct ub_bgworker_status){
	    .total = 64, .source = 16, .bytes_per_sec = 0, .eta_sec = -1};
	expect_reply(
	    &f->src, "{\"command\":\"status\"}",
	    "{\"status\":{\"fetch\":{\"bytes_per_sec\":0,"
	    "\"eta_sec\":null},\"stripes\":{\"failed\":0,\"fetched\":0,"
	    "\"source\":16,\"total\":64}}}");
}

static void test_status_clamps_out_of_range_numbers(void **state)
{
	struct fx *f = *state;

	f->src.status = mock_status;
	f->src.status_arg = &f->mock;
	f->mock.st = (struct ub_bgworker_status){
	    .total = UINT64_MAX,
	    .bytes_per_sec = NAN,
	    .eta_sec = 1e300,
	};
	expect_reply(&f->src, "{\"command\":\"status\"}",
		     "{\"status\":{\"fetch\":{\"bytes_per_sec\":0,"
		     "\"eta_sec\":9223372036854775807},\"stripes\":{\"failed\":"
		     "0,\"fetched\":0,\"source\":0,\"total\":"
		     "9223372036854775807}}}");
}

static void test_status_error_reports_status_unavailable(void **state)
{
	struct fx *f = *state;

	f->src.status = mock_status;
	f->src.status_arg = &f->mock;
	f->mock.rc = -EIO;
	expect_reply(&f->src, "{\"command\":\"status\"}",
		     "{\"error\":\"status unavailable: Input/output error\"}");
}

static void test_c44_queues_three_trackers(void **state)
{
	struct fx *f = *state;

	expect_reply(&f->src, "{\"command\":\"queues\"}", QUEUES_REPLY);
}

static void test_c44_queues_without_trackers_is_empty(void **state)
{
	struct ub_rpc_source src = {.version = "0.5.1"};

	expect_reply(&src, "{\"command\":\"queues\"}", "{\"queues\":[]}");
}

static void test_c45_unknown_command_is_an_error(void **state)
{
	struct fx *f = *state;

	expect_reply(&f->src, "{\"command\":\"destroy_world\"}",
		     "{\"error\":\"unknown command: destroy_world\"}");
	expect_reply(&f->src, "{\"command\":\"\"}",
		     "{\"error\":\"unknown command: \"}");
	expect_reply(&f->src, "{\"command\":\"VERSION\"}",
		     "{\"error\":\"unknown command: VERSION\"}");
	expect_reply(&f->src, "{\"command\":\"a\\\"b\\u00e9\"}",
		     "{\"error\":\"unknown command: a\\\"b\xc3\xa9\"}");
}

static void test_c46_empty_lines_are_not_answered(void **state)
{
	struct fx *f = *state;
	const char *lines[] = {"", " ", "\t \r", "\n"};
	unsigned i;

	for (i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		errno = EINVAL;
		assert_null(
		    ub_rpc_handle_line(&f->src, lines[i], strlen(lines[i])));
		assert_int_equal(errno, 0);
	}
}

static void test_c47_malformed_json_is_an_invalid_request(void **state)
{
	struct fx *f = *state;
	char *got;

	/* The parser's message follows the prefix, with its position. */
	got = ub_rpc_handle_line(&f->src, "{ not valid json }", 18);
	assert_non_null(got);
	assert_memory_equal(got, INVALID_PREFIX, strlen(INVALID_PREFIX));
	assert_non_null(strstr(got, " at line 1 column "));
	free(got);
	expect_invalid(&f->src, "{\"command\":\"version\"", 20);
	expect_invalid(&f->src, "{\"command\":\"version\"} x", 23);
	expect_invalid(&f->src, "{\"command\":\"version\"}{}", 23);
	expect_invalid(&f->src, "{\"command\":\"version\"}\0", 22);
}

static void test_non_object_or_bad_command_is_an_invalid_request(void **state)
{
	struct fx *f = *state;

	expect_reply(&f->src, "[]",
		     "{\"error\":\"invalid request: expected a JSON object\"}");
	expect_invalid(&f->src, "\"version\"", 9);
	expect_invalid(&f->src, "42", 2);
	expect_invalid(&f->src, "null", 4);
	expect_reply(&f->src, "{}",
		     "{\"error\":\"invalid request: missing field "
		     "`command`\"}");
	expect_reply(&f->src, "{\"Command\":\"version\"}",
		     "{\"error\":\"invalid request: missing field "
		     "`command`\"}");
	expect_reply(&f->src, "{\"command\":1}",
		     "{\"error\":\"invalid request: field `command` must be a "
		     "string\"}");
	expect_invalid(&f->src, "{\"command\":null}", 16);
	expect_invalid(&f->src, "{\"command\":[\"version\"]}", 23);
}

static void test_invalid_utf8_is_an_invalid_request(void **state)
{
	struct fx *f = *state;

	expect_reply(&f->src, "{\"command\":\"\xff\"}",
		     "{\"error\":\"invalid request: invalid UTF-8 at byte "
		     "12\"}");
	expect_invalid(&f->src, "{\"command\":\"\xc3\x28\"}", 16);
	/* Overlong '/', a surrogate, a truncated sequence. */
	expect_invalid(&f->src, "{\"command\":\"\xc0\xaf\"}", 16);
	expect_invalid(&f->src, "{\"command\":\"\xed\xa0\x80\"}", 17);
	expect_invalid(&f->src, "{\"x\":1} \xe2\x82", 10);
}

static void test_whitespace_and_other_members_are_accepted(void **state)
{
	struct fx *f = *state;

	expect_reply(&f->src, "  \t{\"command\":\"version\"}\r ",
		     VERSION_REPLY);
	expect_reply(&f->src,
		     "{ \"id\" : 7, \"command\" : \"version\", \"x\" : [1, "
		     "{\"y\": \"\xc3\xa9\"}] }",
		     VERSION_REPLY);
}

static void test_c48_stats_three_trackers(void **state)
{
	struct fx *f = *state;

	expect_reply(&f->stats_src, "{\"command\":\"stats\"}", STATS3_REPLY);
	/* The single-queue example of §6.3. */
	f->stats_src.ntrackers = 1;
	expect_reply(&f->stats_src, "{\"command\":\"stats\"}",
		     "{\"stats\":{\"queues\":[{\"bytes_read\":4096,"
		     "\"bytes_written\":8192,\"flush_ops\":1,\"read_ops\":1,"
		     "\"write_ops\":1}]}}");
}

static void test_c48_stats_without_trackers_is_empty(void **state)
{
	struct ub_rpc_source src = {.version = "0.5.1"};

	expect_reply(&src, "{\"command\":\"stats\"}",
		     "{\"stats\":{\"queues\":[]}}");
}

/* ---- socket client helpers ---- */

struct conn {
	int fd;
	size_t len;
	char buf[1 << 17];
};

static void set_timeouts(int fd, int ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = ms % 1000 * 1000};

	assert_int_equal(
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	assert_int_equal(
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
}

static int try_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static struct conn *conn_open(const char *path)
{
	struct conn *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->fd = try_connect(path);
	assert_true(c->fd >= 0);
	set_timeouts(c->fd, 5000);
	return c;
}

static void conn_close(struct conn *c)
{
	if (!c)
		return;
	close(c->fd);
	free(c);
}

static void send_bytes(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t n;

	while (len) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			fail_msg("send: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
}

static void conn_send(struct conn *c, const char *s)
{
	send_bytes(c->fd, s, strlen(s));
}

/* Next reply line without its '\n' (NUL-terminated in out); -1 on EOF,
 * error or the 5 s receive timeout. */
static ssize_t conn_line(struct conn *c, char *out, size_t cap)
{
	char *nl;
	size_t n;
	ssize_t r;

	for (;;) {
		nl = memchr(c->buf, '\n', c->len);
		if (nl) {
			n = (size_t)(nl - c->buf);
			assert_true(n < cap);
			memcpy(out, c->buf, n);
			out[n] = '\0';
			memmove(c->buf, nl + 1, c->len - n - 1);
			c->len -= n + 1;
			return (ssize_t)n;
		}
		assert_true(c->len < sizeof(c->buf));
		r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		c->len += (size_t)r;
	}
}

static void conn_expect(struct conn *c, const char *want)
{
	char line[8192];

	if (conn_line(c, line, sizeof(line)) < 0)
		fail_msg("no reply (wanted %s): %s", want, strerror(errno));
	assert_string_equal(line, want);
}

static void conn_expect_invalid(struct conn *c)
{
	char line[8192];

	assert_true(conn_line(c, line, sizeof(line)) >= 0);
	if (strncmp(line, INVALID_PREFIX, strlen(INVALID_PREFIX)) != 0)
		fail_msg("not an invalid request error: %s", line);
}

/* True when the server closed the connection within ms milliseconds
 * (buffered replies are skipped). */
static bool conn_closed_within(struct conn *c, int ms)
{
	struct pollfd p = {.fd = c->fd, .events = POLLIN};
	char tmp[4096];
	ssize_t r;

	for (;;) {
		if (poll(&p, 1, ms) <= 0)
			return false;
		r = recv(c->fd, tmp, sizeof(tmp), MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return true;
		if (r < 0 && errno != EAGAIN && errno != EINTR)
			return true;
	}
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* CPU time of the whole process. */
static uint64_t cpu_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- start and the socket file ---- */

static void test_c41_start_fails_in_missing_directory(void **state)
{
	struct fx *f = *state;
	struct ub_err err = {{0}};
	char path[400], want[600];

	snprintf(path, sizeof(path), "%s/missing/rpc.sock", f->dir);
	assert_true(ub_rpc_server_start(path, &f->src, NULL, &f->srv, &err) <
		    0);
	assert_null(f->srv);
	snprintf(want, sizeof(want),
		 "RPC error: failed to bind RPC socket \"%s\": No such file "
		 "or directory",
		 path);
	assert_string_equal(err.msg, want);
}

static void test_c41_start_fails_for_a_directory_path(void **state)
{
	struct fx *f = *state;
	struct ub_err err = {{0}};
	char want[600];
	struct stat st;

	assert_int_equal(mkdir(f->path, 0700), 0);
	assert_int_equal(
	    ub_rpc_server_start(f->path, &f->src, NULL, &f->srv, &err),
	    -EISDIR);
	assert_null(f->srv);
	snprintf(want, sizeof(want),
		 "RPC error: failed to remove existing RPC socket \"%s\": Is "
		 "a directory",
		 f->path);
	assert_string_equal(err.msg, want);
	assert_int_equal(stat(f->path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
}

static void test_start_fails_for_a_path_longer_than_sun_path(void **state)
{
	struct fx *f = *state;
	struct ub_err err = {{0}};
	char path[300];

	memset(path, 'a', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = '\0';
	assert_int_equal(
	    ub_rpc_server_start(path, &f->src, NULL, &f->srv, &err),
	    -ENAMETOOLONG);
	assert_null(f->srv);
	assert_non_null(strstr(err.msg, "RPC error: failed to bind RPC "
					"socket \"/aaa"));
	assert_non_null(strstr(err.msg, "longer than 107 bytes"));
}

static void test_socket_mode_is_0600_and_umask_restored(void **state)
{
	struct fx *f = *state;
	mode_t old = umask(0);
	struct stat st;

	start(f, NULL);
	assert_int_equal(umask(old), 0);
	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
}

static void test_regular_file_at_the_path_is_replaced(void **state)
{
	struct fx *f = *state;
	struct stat st;
	struct conn *c;
	int fd;

	fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "old", 3), 3);
	close(fd);
	start(f, NULL);
	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	c = conn_open(f->path);
	conn_send(c, VERSION_REQ);
	conn_expect(c, VERSION_REPLY);
	conn_close(c);
}

static void test_stale_socket_file_at_the_path_is_replaced(void **state)
{
	struct fx *f = *state;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct conn *c;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	memcpy(sa.sun_path, f->path, strlen(f->path) + 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	start(f, NULL);
	c = conn_open(f->path);
	conn_send(c, VERSION_REQ);
	conn_expect(c, VERSION_REPLY);
	conn_close(c);
}

static void test_stop_removes_the_socket_file(void **state)
{
	struct fx *f = *state;
	struct stat st;

	start(f, NULL);
	assert_int_equal(lstat(f->path, &st), 0);
	ub_rpc_server_stop(f->srv);
	f->srv = NULL;
	assert_int_equal(lstat(f->path, &st), -1);
	assert_int_equal(errno, ENOENT);
	ub_rpc_server_stop(NULL);
}

static void test_stop_leaves_a_file_that_replaced_the_socket(void **state)
{
	struct fx *f = *state;
	struct stat st;
	int fd;

	start(f, NULL);
	assert_int_equal(unlink(f->path), 0);
	fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);
	ub_rpc_server_stop(f->srv);
	f->srv = NULL;
	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
}

static void test_server_thread_is_named_ubiblk_rpc(void **state)
{
	struct fx *f = *state;
	char p[300], name[64];
	struct dirent *d;
	bool found = false;
	DIR *dh;
	FILE *fp;

	start(f, NULL);
	dh = opendir("/proc/self/task");
	assert_non_null(dh);
	while ((d = readdir(dh))) {
		if (d->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/proc/self/task/%s/comm", d->d_name);
		fp = fopen(p, "r");
		if (!fp)
			continue;
		if (fgets(name, sizeof(name), fp) &&
		    strcmp(name, "ubiblk-rpc\n") == 0)
			found = true;
		fclose(fp);
	}
	closedir(dh);
	assert_true(found);
}

/* ---- framing ---- */

static void test_requests_on_one_connection_are_answered_in_order(void **state)
{
	struct fx *f = *state;
	struct conn *c;
	unsigned i;

	f->src.status = mock_status;
	f->src.status_arg = &f->mock;
	f->mock.st = (struct ub_bgworker_status){
	    .total = 64, .source = 16, .fetched = 2, .eta_sec = -1};
	start(f, NULL);
	c = conn_open(f->path);
	for (i = 0; i < 20; i++) {
		conn_send(c, VERSION_REQ);
		conn_expect(c, VERSION_REPLY);
		conn_send(c, "{\"command\":\"queues\"}\n");
		conn_expect(c, QUEUES_REPLY);
		conn_send(c, "{\"command\":\"status\"}\n");
		conn_expect(c, "{\"status\":{\"fetch\":{\"bytes_per_sec\":0,"
			       "\"eta_sec\":null},\"stripes\":{\"failed\":0,"
			       "\"fetched\":2,\"source\":16,\"total\":64}}}");
		conn_send(c, "{\"command\":\"destroy_world\"}\n");
		conn_expect(c, "{\"error\":\"unknown command: "
			       "destroy_world\"}");
	}
	conn_close(c);
}

static void test_request_split_across_writes_is_answered(void **state)
{
	struct fx *f = *state;
	const char *parts[] = {"{\"comm", "and\":\"ver", "sion", "\"}", "\n"};
	struct pollfd p;
	struct conn *c;
	unsigned i;

	start(f, NULL);
	c = conn_open(f->path);
	for (i = 0; i < 5; i++) {
		conn_send(c, parts[i]);
		if (i < 4) {
			/* Nothing is answered before the '\n'. */
			p = (struct pollfd){.fd = c->fd, .events = POLLIN};
			assert_int_equal(poll(&p, 1, 30), 0);
		}
	}
	conn_expect(c, VERSION_REPLY);
	conn_close(c);
}

static void test_several_requests_in_one_write_are_answered(void **state)
{
	struct fx *f = *state;
	struct conn *c;

	start(f, NULL);
	c = conn_open(f->path);
	conn_send(c, VERSION_REQ
		  "{\"command\":\"queues\"}\n"
		  "{\"command\":\"stats\"}\n{\"command\":\"nope\"}\n"
		  "[]\n" VERSION_REQ);
	conn_expect(c, VERSION_REPLY);
	conn_expect(c, QUEUES_REPLY);
	conn_expect(c, "{\"stats\":{\"queues\":[{\"bytes_read\":1536,"
		       "\"bytes_written\":2560,\"flush_ops\":2,\"read_ops\":1,"
		       "\"write_ops\":1},{\"bytes_read\":0,\"bytes_written\":"
		       "10240,\"flush_ops\":0,\"read_ops\":0,\"write_ops\":1},"
		       "{\"bytes_read\":0,\"bytes_written\":0,\"flush_ops\":0,"
		       "\"read_ops\":0,\"write_ops\":0}]}}");
	conn_expect(c, "{\"error\":\"unknown command: nope\"}");
	conn_expect_invalid(c);
	conn_expect(c, VERSION_REPLY);
	conn_close(c);
}

static void test_c46_empty_lines_before_a_request_are_ignored(void **state)
{
	struct fx *f = *state;
	struct conn *c;

	start(f, NULL);
	c = conn_open(f->path);
	conn_send(c, "\n\n   \n\t\r\n" VERSION_REQ);
	conn_expect(c, VERSION_REPLY);
	conn_send(c, "\r\n");
	conn_send(c, "{\"command\":\"bogus\"}\n");
	conn_expect(c, "{\"error\":\"unknown command: bogus\"}");
	conn_close(c);
}

static void test_c47_invalid_json_then_valid_request(void **state)
{
	struct fx *f = *state;
	struct conn *c;

	start(f, NULL);
	c = conn_open(f->path);
	conn_send(c, "{ not valid json }\n");
	conn_expect_invalid(c);
	conn_send(c, VERSION_REQ);
	conn_expect(c, VERSION_REPLY);
	conn_close(c);
}

static void test_invalid_utf8_over_the_socket_keeps_the_connection(void **state)
{
	struct fx *f = *state;
	struct conn *c;

	start(f, NULL);
	c = conn_open(f->path);
	conn_send(c, "{\"command\":\"\xc3\x28\"}\n");
	conn_expect(c, "{\"error\":\"invalid request: invalid UTF-8 at byte "
		       "12\"}");
	conn_send(c, "\xff\xfe\n" VERSION_REQ);
	conn_expect_invalid(c);
	conn_expect(c, VERSION_REPLY);
	conn_close(c);
}

static void test_last_line_without_newline_is_answered_at_eof(void **state)
{
	struct fx *f = *state;
	struct conn *c;

	start(f, NULL);
	c = conn_open(f->path);
	conn_send(c, VERSION_REQ "{\"command\":\"version\"}");
	assert_int_equal(shutdown(c->fd, SHUT_WR), 0);
	conn_expect(c, VERSION_REPLY);
	conn_expect(c, VERSION_REPLY);
	assert_true(conn_closed_within(c, 2000));
	conn_close(c);
}

/* ---- limits ---- */

static void test_100k_line_is_rejected_without_buffering_it(void **state)
{
	struct fx *f = *state;
	size_t first = 70 * 1024, rest = 30 * 1024;
	char *junk = malloc(first);
	struct conn *c;

	assert_non_null(junk);
	memset(junk, 'x', first);
	start(f, NULL);
	c = conn_open(f->path);
	/* The error arrives while the line is still unterminated: the
	 * server answered once it held 65537 bytes, without waiting for
	 * the rest of the line. */
	send_bytes(c->fd, junk, first);
	conn_expect(c, "{\"error\":\"invalid request: line exceeds 65536 "
		       "bytes\"}");
	send_bytes(c->fd, junk, rest);
	conn_send(c, "\n" VERSION_REQ);
	conn_expect(c, VERSION_REPLY);
	/* Exactly one error for the long line. */
	conn_send(c, "{\"command\":\"x\"}\n");
	conn_expect(c, "{\"error\":\"unknown command: x\"}");
	conn_close(c);
	free(junk);
}

static void test_line_limit_boundary_uses_the_configured_limit(void **state)
{
	struct fx *f = *state;
	struct ub_rpc_limits lim = {.max_line = 64};
	char line[80];
	struct conn *c;
	size_t n = strlen(VERSION_REQ) - 1;

	start(f, &lim);
	c = conn_open(f->path);
	/* 64 bytes before the '\n': accepted. */
	memset(line, ' ', sizeof(line));
	memcpy(line, VERSION_REQ, n);
	line[64] = '\n';
	send_bytes(c->fd, line, 65);
	conn_expect(c, VERSION_REPLY);
	/* 65 bytes: rejected, one error. */
	line[64] = ' ';
	line[65] = '\n';
	send_bytes(c->fd, line, 66);
	conn_expect(c, "{\"error\":\"invalid request: line exceeds 64 "
		       "bytes\"}");
	conn_send(c, VERSION_REQ);
	conn_expect(c, VERSION_REPLY);
	conn_close(c);
}

static void test_client_beyond_max_clients_is_refused(void **state)
{
	struct fx *f = *state;
	struct ub_rpc_limits lim = {.max_clients = 2};
	struct conn *a, *b, *x, *d = NULL;
	char line[256];
	uint64_t end;

	start(f, &lim);
	a = conn_open(f->path);
	b = conn_open(f->path);
	conn_send(a, VERSION_REQ);
	conn_expect(a, VERSION_REPLY);
	conn_send(b, VERSION_REQ);
	conn_expect(b, VERSION_REPLY);

	x = conn_open(f->path);
	conn_expect(x, "{\"error\":\"too many clients\"}");
	assert_true(conn_closed_within(x, 2000));
	conn_close(x);

	conn_send(a, VERSION_REQ);
	conn_expect(a, VERSION_REPLY);
	conn_send(b, "{\"command\":\"queues\"}\n");
	conn_expect(b, QUEUES_REPLY);

	/* A freed place is taken by the next client. */
	conn_close(a);
	end = mono_ms() + 3000;
	while (mono_ms() < end) {
		d = conn_open(f->path);
		conn_send(d, VERSION_REQ);
		assert_true(conn_line(d, line, sizeof(line)) >= 0);
		if (strcmp(line, VERSION_REPLY) == 0)
			break;
		assert_string_equal(line, "{\"error\":\"too many clients\"}");
		conn_close(d);
		d = NULL;
		usleep(10000);
	}
	assert_non_null(d);
	conn_close(d);
	conn_close(b);
}

/* The refused client sends its request before reading, as `socat` does:
 * it still reads the error line and then a clean EOF (no reset). */
static void
test_refused_client_that_sent_a_request_reads_the_error(void **state)
{
	struct fx *f = *state;
	struct ub_rpc_limits lim = {.max_clients = 1};
	struct conn *a, *x;
	char tmp[64];
	unsigned i;
	ssize_t n;

	start(f, &lim);
	a = conn_open(f->path);
	conn_send(a, VERSION_REQ);
	conn_expect(a, VERSION_REPLY);
	for (i = 0; i < 10; i++) {
		x = conn_open(f->path);
		conn_send(x, VERSION_REQ "{\"command\":\"stats\"}\n");
		usleep(20000);
		conn_send(x, VERSION_REQ);
		conn_expect(x, "{\"error\":\"too many clients\"}");
		assert_int_equal(x->len, 0);
		n = recv(x->fd, tmp, sizeof(tmp), 0);
		if (n != 0)
			fail_msg("wanted EOF, got %zd (%s)", n,
				 n < 0 ? strerror(errno) : "data");
		conn_close(x);
	}
	conn_send(a, VERSION_REQ);
	conn_expect(a, VERSION_REPLY);
	conn_close(a);
}

static void test_idle_client_is_closed_after_the_timeout(void **state)
{
	struct fx *f = *state;
	struct ub_rpc_limits lim = {.idle_timeout_ms = 200};
	struct conn *idle, *busy;
	uint64_t t0, waited;
	unsigned i;

	start(f, &lim);
	idle = conn_open(f->path);
	busy = conn_open(f->path);
	t0 = mono_ms();
	conn_send(idle, VERSION_REQ);
	conn_expect(idle, VERSION_REPLY);
	/* The busy client talks every 50 ms for 600 ms and stays. */
	for (i = 0; i < 12; i++) {
		conn_send(busy, VERSION_REQ);
		conn_expect(busy, VERSION_REPLY);
		usleep(50000);
	}
	assert_true(conn_closed_within(idle, 2000));
	waited = mono_ms() - t0;
	assert_true(waited >= 190);
	conn_send(busy, VERSION_REQ);
	conn_expect(busy, VERSION_REPLY);
	conn_close(idle);
	conn_close(busy);
}

/* Sends stats requests without reading until the server stops taking
 * them (no progress for 500 ms); returns the complete requests sent and
 * leaves the unsent tail of the last one in *tail. */
static unsigned flood_until_stalled(int fd, size_t *tail)
{
	const char *req = STATS_REQ;
	size_t len = strlen(req), off = 0;
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	unsigned sent = 0;
	ssize_t n;

	for (;;) {
		n = send(fd, req + off, len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			off += (size_t)n;
			if (off == len) {
				sent++;
				off = 0;
			}
			assert_true(sent < 10000000);
			continue;
		}
		assert_true(n < 0 && (errno == EAGAIN || errno == EINTR));
		if (poll(&p, 1, 500) == 0)
			break;
	}
	*tail = len - off;
	return sent;
}

/* Reads replies (each must be want) while sending the tail of the last
 * request, until expected replies came. */
static void drain_replies(struct conn *c, unsigned expected, size_t tail,
			  const char *want)
{
	const char *req = STATS_REQ;
	size_t len = strlen(req), wl = strlen(want);
	unsigned got = 0;
	uint64_t end = mono_ms() + 30000;
	char *nl;
	ssize_t n;

	while (got < expected) {
		struct pollfd p = {.fd = c->fd,
				   .events = POLLIN | (tail ? POLLOUT : 0)};

		assert_true(mono_ms() < end);
		assert_true(poll(&p, 1, 1000) >= 0);
		if (tail && (p.revents & POLLOUT)) {
			n = send(c->fd, req + len - tail, tail,
				 MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n > 0)
				tail -= (size_t)n;
		}
		if (!(p.revents & POLLIN))
			continue;
		n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len,
			 MSG_DONTWAIT);
		assert_true(n > 0 || (n < 0 && errno == EAGAIN));
		if (n > 0)
			c->len += (size_t)n;
		while ((nl = memchr(c->buf, '\n', c->len))) {
			assert_int_equal((size_t)(nl - c->buf), wl);
			assert_memory_equal(c->buf, want, wl);
			memmove(c->buf, nl + 1, c->len - wl - 1);
			c->len -= wl + 1;
			got++;
		}
	}
	assert_int_equal(c->len, 0);
}

static void test_client_not_reading_does_not_block_others(void **state)
{
	struct fx *f = *state;
	struct ub_rpc_limits lim = {.max_pending = 4096};
	struct conn *stalled, *other;
	unsigned sent;
	size_t tail;

	f->src.trackers = f->s;
	start(f, &lim);
	stalled = conn_open(f->path);
	sent = flood_until_stalled(stalled->fd, &tail);
	assert_true(sent > 0);

	other = conn_open(f->path);
	conn_send(other, VERSION_REQ);
	conn_expect(other, VERSION_REPLY);
	conn_send(other, STATS_REQ);
	conn_expect(other, STATS3_REPLY);

	/* Once it reads, every request is answered, in order. */
	drain_replies(stalled, sent + (tail ? 1 : 0), tail, STATS3_REPLY);
	conn_send(stalled, VERSION_REQ);
	conn_expect(stalled, VERSION_REPLY);
	conn_close(stalled);
	conn_close(other);
}

static void test_stop_with_clients_connected_returns_promptly(void **state)
{
	struct fx *f = *state;
	struct ub_rpc_limits lim = {.max_pending = 4096};
	struct conn *a, *b, *stalled;
	uint64_t t0;
	struct stat st;
	size_t tail;

	start(f, &lim);
	a = conn_open(f->path);
	b = conn_open(f->path);
	stalled = conn_open(f->path);
	conn_send(a, VERSION_REQ);
	conn_expect(a, VERSION_REPLY);
	conn_send(b, "{\"comm");
	assert_true(flood_until_stalled(stalled->fd, &tail) > 0);

	t0 = mono_ms();
	ub_rpc_server_stop(f->srv);
	f->srv = NULL;
	assert_true(mono_ms() - t0 < 1000);
	assert_int_equal(lstat(f->path, &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_true(conn_closed_within(a, 1000));
	assert_true(conn_closed_within(b, 1000));
	assert_true(conn_closed_within(stalled, 1000));
	conn_close(a);
	conn_close(b);
	conn_close(stalled);
}

static void test_accept_failure_emfile_keeps_serving(void **state)
{
	struct fx *f = *state;
	struct rlimit old, rl;
	struct pollfd p;
	struct conn *a, *b;
	int fillers[256], n = 0, fd;
	uint64_t cpu0;

	start(f, NULL);
	a = conn_open(f->path);
	conn_send(a, VERSION_REQ);
	conn_expect(a, VERSION_REPLY);

	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	rl = old;
	if (rl.rlim_cur > 128)
		rl.rlim_cur = 128;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	while ((fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0) {
		assert_true(n < 256);
		fillers[n++] = fd;
	}
	assert_int_equal(errno, EMFILE);
	assert_true(n > 0);
	close(fillers[--n]);
	/* The client takes the last descriptor; the server's accept has
	 * none left. */
	b = calloc(1, sizeof(*b));
	assert_non_null(b);
	b->fd = try_connect(f->path);
	assert_true(b->fd >= 0);
	set_timeouts(b->fd, 5000);
	conn_send(b, VERSION_REQ);

	/* The connected client keeps being served meanwhile. */
	conn_send(a, VERSION_REQ);
	conn_expect(a, VERSION_REPLY);
	/* ... and the server does not spin on the failing accept. */
	cpu0 = cpu_ms();
	p = (struct pollfd){.fd = b->fd, .events = POLLIN};
	assert_int_equal(poll(&p, 1, 300), 0);
	assert_true(cpu_ms() - cpu0 < 100);
	conn_send(a, VERSION_REQ);
	conn_expect(a, VERSION_REPLY);

	/* With a descriptor free again the waiting client is accepted. */
	close(fillers[--n]);
	conn_expect(b, VERSION_REPLY);
	while (n)
		close(fillers[--n]);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	conn_close(a);
	conn_close(b);
}

/* ---- a live tracker ---- */

struct hammer {
	struct ub_io_tracker *t;
	int stop; /* atomic */
	uint64_t ops;
};

static void *hammer_writer(void *arg)
{
	struct hammer *h = arg;
	uint32_t slot;
	uint64_t i = 0;

	while (!__atomic_load_n(&h->stop, __ATOMIC_ACQUIRE)) {
		slot = (uint32_t)(i % 16);
		ub_io_tracker_clear(h->t, slot);
		switch (i % 3) {
		case 0:
			ub_io_tracker_read(h->t, slot, i, 8);
			break;
		case 1:
			ub_io_tracker_write(h->t, slot, i, 16);
			break;
		default:
			ub_io_tracker_flush(h->t, slot);
			break;
		}
		i++;
	}
	h->ops = i;
	return NULL;
}

static uint64_t member_u64(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	assert_true(json_is_integer(v));
	assert_true(json_integer_value(v) >= 0);
	return (uint64_t)json_integer_value(v);
}

static void test_tracker_written_while_a_client_polls(void **state)
{
	struct fx *f = *state;
	struct hammer h = {.t = ub_io_tracker_new(16)};
	struct ub_io_tracker *one[1] = {h.t};
	uint64_t prev[5] = {0}, cur[5];
	static const char *const keys[5] = {"bytes_read", "bytes_written",
					    "flush_ops", "read_ops",
					    "write_ops"};
	json_t *j, *q, *e, *kind;
	size_t k, idx;
	char *line;
	struct conn *c;
	pthread_t th;
	unsigned i, m;

	assert_non_null(h.t);
	line = malloc(1 << 16);
	assert_non_null(line);
	f->src.trackers = one;
	f->src.ntrackers = 1;
	start(f, NULL);
	c = conn_open(f->path);
	assert_int_equal(pthread_create(&th, NULL, hammer_writer, &h), 0);
	for (i = 0; i < 400; i++) {
		conn_send(c, STATS_REQ "{\"command\":\"queues\"}\n");
		assert_true(conn_line(c, line, 1 << 16) > 0);
		j = json_loads(line, 0, NULL);
		assert_non_null(j);
		q = json_array_get(
		    json_object_get(json_object_get(j, "stats"), "queues"), 0);
		assert_true(json_is_object(q));
		for (m = 0; m < 5; m++) {
			cur[m] = member_u64(q, keys[m]);
			assert_true(cur[m] >= prev[m]);
			prev[m] = cur[m];
		}
		json_decref(j);

		assert_true(conn_line(c, line, 1 << 16) > 0);
		j = json_loads(line, 0, NULL);
		assert_non_null(j);
		q = json_array_get(json_object_get(j, "queues"), 0);
		assert_true(json_is_array(q));
		assert_true(json_array_size(q) <= 16);
		json_array_foreach(q, idx, e)
		{
			kind = json_array_get(e, 0);
			assert_true(json_is_string(kind));
			k = json_array_size(e);
			if (!strcmp(json_string_value(kind), "flush"))
				assert_int_equal(k, 1);
			else
				assert_true(
				    (!strcmp(json_string_value(kind), "read") ||
				     !strcmp(json_string_value(kind),
					     "write")) &&
				    k == 3);
		}
		json_decref(j);
	}
	__atomic_store_n(&h.stop, 1, __ATOMIC_RELEASE);
	assert_int_equal(pthread_join(th, NULL), 0);
	conn_send(c, STATS_REQ);
	assert_true(conn_line(c, line, 1 << 16) > 0);
	j = json_loads(line, 0, NULL);
	assert_non_null(j);
	q = json_array_get(
	    json_object_get(json_object_get(j, "stats"), "queues"), 0);
	assert_int_equal(member_u64(q, "read_ops") +
			     member_u64(q, "write_ops") +
			     member_u64(q, "flush_ops"),
			 h.ops);
	json_decref(j);
	conn_close(c);
	ub_rpc_server_stop(f->srv);
	f->srv = NULL;
	ub_io_tracker_free(h.t);
	free(line);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_c42_version_returns_the_program_version),
	    T(test_c43_status_with_lazy_device),
	    T(test_c43_status_without_reporter_is_null),
	    T(test_status_with_unknown_eta_reports_null),
	    T(test_status_clamps_out_of_range_numbers),
	    T(test_status_error_reports_status_unavailable),
	    T(test_c44_queues_three_trackers),
	    T(test_c44_queues_without_trackers_is_empty),
	    T(test_c45_unknown_command_is_an_error),
	    T(test_c46_empty_lines_are_not_answered),
	    T(test_c47_malformed_json_is_an_invalid_request),
	    T(test_non_object_or_bad_command_is_an_invalid_request),
	    T(test_invalid_utf8_is_an_invalid_request),
	    T(test_whitespace_and_other_members_are_accepted),
	    T(test_c48_stats_three_trackers),
	    T(test_c48_stats_without_trackers_is_empty),
	    T(test_c41_start_fails_in_missing_directory),
	    T(test_c41_start_fails_for_a_directory_path),
	    T(test_start_fails_for_a_path_longer_than_sun_path),
	    T(test_socket_mode_is_0600_and_umask_restored),
	    T(test_regular_file_at_the_path_is_replaced),
	    T(test_stale_socket_file_at_the_path_is_replaced),
	    T(test_stop_removes_the_socket_file),
	    T(test_stop_leaves_a_file_that_replaced_the_socket),
	    T(test_server_thread_is_named_ubiblk_rpc),
	    T(test_requests_on_one_connection_are_answered_in_order),
	    T(test_request_split_across_writes_is_answered),
	    T(test_several_requests_in_one_write_are_answered),
	    T(test_c46_empty_lines_before_a_request_are_ignored),
	    T(test_c47_invalid_json_then_valid_request),
	    T(test_invalid_utf8_over_the_socket_keeps_the_connection),
	    T(test_last_line_without_newline_is_answered_at_eof),
	    T(test_100k_line_is_rejected_without_buffering_it),
	    T(test_line_limit_boundary_uses_the_configured_limit),
	    T(test_client_beyond_max_clients_is_refused),
	    T(test_refused_client_that_sent_a_request_reads_the_error),
	    T(test_idle_client_is_closed_after_the_timeout),
	    T(test_client_not_reading_does_not_block_others),
	    T(test_stop_with_clients_connected_returns_promptly),
	    T(test_tracker_written_while_a_client_polls),
	    /* Last: a failure here leaves descriptors exhausted. */
	    T(test_accept_failure_emfile_keeps_serving),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
