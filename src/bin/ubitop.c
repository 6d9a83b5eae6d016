/* ubitop: a live per-queue I/O monitor for a running backend, over its RPC
 * socket (backends.md §7, docs/ubitop.md).
 *
 * One connection; every interval it sends "stats" and "queues", computes
 * rates against the previous sample and draws a frame: in a terminal a
 * full-screen view in the alternate screen, redrawn in place with ANSI
 * escape sequences, otherwise (or with --batch) one plain-text frame per
 * interval. A socket error, a closed connection, a stalled server (5 s)
 * or a bad reply closes the connection, forgets the previous sample and
 * retries after an interval. Long waits send a keep-alive request.
 *
 * Signals: the handled ones (SIGINT, SIGTERM, SIGHUP; in a terminal also
 * SIGWINCH, SIGTSTP and SIGCONT) only set flags. They are blocked except
 * inside ppoll(), where every wait happens (so no wake-up is lost), and
 * while writing to stdout (so output that does not drain cannot hold off
 * Ctrl-C). SIGINT (and the q key) print "Stopped by user" and exit 0;
 * SIGTERM and SIGHUP restore the terminal and end the process with that
 * signal. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "rpc/rpc_client.h"
#include "rpc/top_view.h"
#include "util/cli.h"
#include "util/err.h"

#define INTERVAL_DEFAULT 1.0
#define INTERVAL_MAX	 86400.0 /* one day */
#define NSEC_PER_SEC	 1000000000L
#define DEFAULT_COLS	 80u
#define DEFAULT_ROWS	 24u
/* A wait longer than this sends a "version" request every KEEPALIVE_S
 * seconds so that the backend's idle timeout (60 s) keeps the connection. */
#ifndef KEEPALIVE_S
#define KEEPALIVE_S 30.0
#endif

/* SGR parameters of the messages (the reference's colours). */
#define SGR_OK	 "32"
#define SGR_ERR	 "31"
#define SGR_DIM	 "2"
#define SGR_STOP "33"

static const char *prog = "ubitop";

enum { RUN_DONE = 1, RUN_STOP = 2 };

static volatile sig_atomic_t got_int, got_term, got_winch, got_tstp, got_cont;
/* Set with got_int/got_term: aborts a wait inside the RPC client. */
static volatile sig_atomic_t abort_wait;

struct top {
	const char *path;
	double interval;
	char interval_text[40]; /* as the reference prints it: "1.0" */
	bool tty;		/* live full-screen view */
	bool keys;		/* stdin is the terminal: read q */
	bool quit;		/* q pressed */
	uint64_t count;		/* frames to draw; 0 = no limit */
	uint64_t frames;
	struct ub_rpc_client cli;
	struct ub_rpc_stats prev;
	bool have_prev;
	struct ub_top_view view;
	bool have_frame;
	bool live;   /* in the alternate screen */
	bool fatal;  /* the error is not the connection's: give up */
	int out_err; /* a failed message write (negative errno) */
	struct termios saved_tio; /* the terminal's modes before ours */
	bool tio_saved, tio_changed;
	sigset_t handled;   /* signals with a handler, blocked outside waits */
	sigset_t wait_mask; /* mask inside ppoll */
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s --socket PATH [--interval SECONDS] [--batch] "
		"[--count N]\n"
		"Live per-queue I/O rates of a running backend, read from its "
		"RPC socket\n"
		"(device.rpc_socket).\n"
		"\n"
		"Options:\n"
		"  -s, --socket PATH       the backend's RPC socket; "
		"required\n"
		"  -i, --interval SECONDS  time between samples, a positive "
		"number up to\n"
		"                          86400 (default 1)\n"
		"  -b, --batch             plain-text frames, one per "
		"interval, no escape\n"
		"                          sequences (the default when stdout "
		"is not a\n"
		"                          terminal)\n"
		"  -n, --count N           stop after N frames\n"
		"  -h, --help              print this help and exit\n"
		"  -V, --version           print the version and exit\n"
		"\n"
		"Keys: q or Ctrl-C quits.\n"
		"Exit status: 0 stopped (Ctrl-C, q, --count), 1 error, 2 "
		"usage error.\n",
		prog);
}

static void on_signal(int sig)
{
	switch (sig) {
	case SIGINT:
		got_int = 1;
		abort_wait = 1;
		break;
	case SIGWINCH:
		got_winch = 1;
		break;
	case SIGTSTP:
		got_tstp = 1;
		break;
	case SIGCONT:
		got_cont = 1;
		break;
	default:
		got_term = sig;
		abort_wait = 1;
		break;
	}
}

static int parse_interval(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || errno == ERANGE)
		return -EINVAL;
	while (*end == ' ' || *end == '\t' || *end == '\n')
		end++;
	if (*end || !isfinite(v))
		return -EINVAL;
	*out = v;
	return 0;
}

/* ---- output ----------------------------------------------------------- */

/* Copies a message that may quote bytes from the server, with control
 * characters and non-ASCII bytes as \xNN so that nothing reaches the
 * terminal as an escape sequence. */
static void clean_text(const char *in, char *out, size_t size)
{
	size_t n = 0;
	unsigned char ch;

	for (; *in && n + 5 < size; in++) {
		ch = (unsigned char)*in;
		if (ch < 0x20 || ch >= 0x7f)
			n += (size_t)snprintf(out + n, size - n, "\\x%02x", ch);
		else
			out[n++] = (char)ch;
	}
	out[n] = '\0';
}

static bool stopping(const struct top *t)
{
	return got_int || got_term || t->quit;
}

/* Writes all of buf to stdout with the handled signals deliverable, so
 * that a terminal or pipe that takes no output (Ctrl-S, a reader that
 * stopped) cannot hold off Ctrl-C: a stop signal abandons the write.
 * Returns 0 or a negative errno. */
static int out_write(struct top *t, const char *buf, size_t len)
{
	sigset_t old;
	ssize_t w;
	int rc = 0;

	sigprocmask(SIG_SETMASK, &t->wait_mask, &old);
	while (len) {
		w = write(STDOUT_FILENO, buf, len);
		if (w > 0) {
			buf += w;
			len -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR) {
			if (stopping(t))
				break;
			continue;
		}
		rc = w < 0 ? -errno : -EIO;
		break;
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	return rc;
}

static int out_str(struct top *t, const char *s)
{
	return out_write(t, s, strlen(s));
}

/* One message line on stdout, coloured in the live mode. */
__attribute__((format(printf, 3, 4))) static int
say(struct top *t, const char *sgr, const char *fmt, ...)
{
	char *msg = NULL, *line = NULL;
	va_list ap;
	int n, rc = -ENOMEM;

	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return rc;
	if (t->tty)
		n = asprintf(&line, "\x1b[%sm%s\x1b[0m\n", sgr, msg);
	else
		n = asprintf(&line, "%s\n", msg);
	if (n >= 0)
		rc = out_write(t, line, (size_t)n);
	free(line);
	free(msg);
	if (rc && !stopping(t)) {
		t->fatal = true;
		t->out_err = rc;
	}
	return rc;
}

static void term_enter(struct top *t)
{
	if (t->live)
		return;
	/* Alternate screen, cursor hidden, cleared. */
	out_str(t, "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J");
	t->live = true;
}

static void term_leave(struct top *t)
{
	if (!t->live)
		return;
	out_str(t, "\x1b[0m\x1b[?25h\x1b[?1049l");
	t->live = false;
}

/* Keys without Enter and without echo (Ctrl-C still signals), when stdin
 * is the terminal and we are its foreground job (a background job would
 * be stopped by SIGTTOU/SIGTTIN). The original modes are read once. */
static void tio_set(struct top *t)
{
	struct termios raw;

	if (!t->keys || t->tio_changed || tcgetpgrp(STDIN_FILENO) != getpgrp())
		return;
	if (!t->tio_saved) {
		if (tcgetattr(STDIN_FILENO, &t->saved_tio)) {
			t->keys = false;
			return;
		}
		t->tio_saved = true;
	}
	raw = t->saved_tio;
	raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
	raw.c_cc[VMIN] = 1;
	raw.c_cc[VTIME] = 0;
	if (tcsetattr(STDIN_FILENO, TCSANOW, &raw))
		return;
	t->tio_changed = true;
}

static void tio_restore(struct top *t)
{
	if (!t->tio_changed)
		return;
	tcsetattr(STDIN_FILENO, TCSANOW, &t->saved_tio);
	t->tio_changed = false;
}

static void term_size(unsigned *cols, unsigned *rows)
{
	struct winsize ws;

	*cols = DEFAULT_COLS;
	*rows = DEFAULT_ROWS;
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col &&
	    ws.ws_row) {
		*cols = ws.ws_col;
		*rows = ws.ws_row;
	}
}

/* Renders the view for the terminal: home, each line cleared to its end,
 * the rest of the screen cleared; lines beyond the screen height are left
 * out so the screen never scrolls. */
static void compose_live(const struct top *t, FILE *out)
{
	struct ub_top_style style = {.color = true, .panel = true};
	char *frame = NULL, *p, *nl;
	size_t size = 0;
	unsigned rows, shown = 0;
	FILE *mem;

	term_size(&style.width, &rows);
	mem = open_memstream(&frame, &size);
	if (!mem)
		return;
	ub_top_render(&t->view, &style, mem);
	if (fclose(mem))
		return;
	fputs("\x1b[H", out);
	for (p = frame; shown < rows && (nl = strchr(p, '\n')); p = nl + 1) {
		if (shown)
			fputs("\r\n", out);
		fwrite(p, 1, (size_t)(nl - p), out);
		fputs("\x1b[K", out);
		shown++;
	}
	fputs("\x1b[J", out);
	free(frame);
}

/* Draws the current view: in place in the live mode, else a plain frame
 * and a blank line. */
static int draw(struct top *t, struct ub_err *err)
{
	struct ub_top_style style = {0};
	char *buf = NULL;
	size_t size = 0;
	FILE *mem;
	int rc;

	mem = open_memstream(&buf, &size);
	if (!mem) {
		rc = -ENOMEM;
		goto fatal;
	}
	if (t->tty) {
		compose_live(t, mem);
	} else {
		ub_top_render(&t->view, &style, mem);
		fputc('\n', mem);
	}
	if (fclose(mem) || !buf) {
		free(buf);
		rc = -ENOMEM;
		goto fatal;
	}
	if (t->tty)
		term_enter(t);
	rc = out_write(t, buf, size);
	free(buf);
	if (!rc)
		return 0;
fatal:
	t->fatal = true;
	if (rc == -ENOMEM)
		return ub_err_ret(err, rc, "out of memory");
	return ub_err_ret(err, rc, "writing to standard output: %s",
			  strerror(-rc));
}

/* ---- signals and waiting ---------------------------------------------- */

static void install(int sig)
{
	struct sigaction sa = {.sa_handler = on_signal};

	sigemptyset(&sa.sa_mask);
	sigaction(sig, &sa, NULL); /* no SA_RESTART: waits see EINTR */
}

/* Handles SIGINT and SIGHUP unless they are ignored (nohup, a background
 * job), SIGTERM always, SIGWINCH, SIGTSTP and SIGCONT in the live mode. */
static void signals_setup(struct top *t)
{
	static const int live_only[] = {SIGWINCH, SIGTSTP, SIGCONT};
	static const int always[] = {SIGINT, SIGTERM, SIGHUP};
	struct sigaction old;
	unsigned i;

	sigemptyset(&t->handled);
	for (i = 0; i < sizeof(always) / sizeof(always[0]); i++) {
		if (always[i] != SIGTERM &&
		    sigaction(always[i], NULL, &old) == 0 &&
		    old.sa_handler == SIG_IGN)
			continue;
		sigaddset(&t->handled, always[i]);
	}
	if (t->tty)
		for (i = 0; i < sizeof(live_only) / sizeof(live_only[0]); i++)
			sigaddset(&t->handled, live_only[i]);
	sigprocmask(SIG_BLOCK, &t->handled, &t->wait_mask);
	for (i = 1; i < NSIG; i++)
		if (sigismember(&t->handled, (int)i) == 1) {
			sigdelset(&t->wait_mask, (int)i);
			install((int)i);
		}
}

/* Ctrl-Z: restore the terminal, stop, and take it back on SIGCONT. */
static void suspend(struct top *t)
{
	bool was_live = t->live;
	struct ub_err err;
	sigset_t s;

	term_leave(t);
	tio_restore(t);
	signal(SIGTSTP, SIG_DFL);
	sigemptyset(&s);
	sigaddset(&s, SIGTSTP);
	raise(SIGTSTP); /* pending: blocked */
	sigprocmask(SIG_UNBLOCK, &s, NULL);
	/* stopped here until SIGCONT */
	sigprocmask(SIG_BLOCK, &s, NULL);
	install(SIGTSTP);
	tio_set(t);
	if (was_live && t->have_frame)
		draw(t, &err);
}

static void read_keys(struct top *t)
{
	char keys[64];
	ssize_t n, i;

	n = read(STDIN_FILENO, keys, sizeof(keys));
	if (n <= 0) {
		if (n == 0 || (errno != EINTR && errno != EAGAIN))
			t->keys = false; /* end of input: stop watching */
		if (!t->keys)
			tio_restore(t);
		return;
	}
	for (i = 0; i < n; i++)
		if (keys[i] == 'q' || keys[i] == 'Q')
			t->quit = true;
}

/* seconds: 0 .. INTERVAL_MAX */
static void ts_add(struct timespec *ts, double seconds)
{
	time_t whole = (time_t)seconds; /* truncation = floor for >= 0 */

	ts->tv_sec += whole;
	ts->tv_nsec += (long)((seconds - (double)whole) * NSEC_PER_SEC);
	while (ts->tv_nsec >= NSEC_PER_SEC) {
		ts->tv_sec++;
		ts->tv_nsec -= NSEC_PER_SEC;
	}
}

static bool ts_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec ||
	       (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Waits until the monotonic deadline, redrawing on a resize and after
 * SIGCONT, handling Ctrl-Z and keys. Returns true when the program is to
 * stop. */
static bool wait_until(struct top *t, const struct timespec *deadline)
{
	struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
	struct timespec now, left;
	struct ub_err err;
	int r;

	for (;;) {
		if (stopping(t))
			return true;
		if (got_cont) {
			/* Continued (after SIGSTOP, maybe in the background
			 * now): the shell may have reset the terminal. */
			got_cont = 0;
			t->tio_changed = false;
			tio_set(t);
			got_winch = 1;
		}
		if (got_winch) {
			got_winch = 0;
			if (t->live && t->have_frame)
				draw(t, &err);
		}
		if (got_tstp) {
			got_tstp = 0;
			suspend(t);
			continue;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (!ts_before(&now, deadline))
			return false;
		left.tv_sec = deadline->tv_sec - now.tv_sec;
		left.tv_nsec = deadline->tv_nsec - now.tv_nsec;
		if (left.tv_nsec < 0) {
			left.tv_sec--;
			left.tv_nsec += NSEC_PER_SEC;
		}
		r = ppoll(&pfd, t->tio_changed ? 1 : 0, &left, &t->wait_mask);
		if (r > 0) {
			if (pfd.revents & POLLIN)
				read_keys(t);
			else
				t->keys = false; /* hangup or error */
			if (!t->keys)
				tio_restore(t);
		}
	}
}

/* ---- sampling --------------------------------------------------------- */

/* One sample: stats and queues on the connection, then the view. */
static int sample(struct top *t, struct ub_err *err)
{
	struct ub_rpc_stats cur;
	struct ub_rpc_queues q;
	const char *line;
	size_t len;
	int rc;

	rc = ub_rpc_client_request(&t->cli, "stats", &line, &len, err);
	if (rc)
		return rc;
	rc = ub_rpc_parse_stats(line, len, &cur, err);
	if (rc)
		return rc;
	rc = ub_rpc_client_request(&t->cli, "queues", &line, &len, err);
	if (rc)
		goto out_stats;
	rc = ub_rpc_parse_queues(line, len, &q, err);
	if (rc)
		goto out_stats;
	rc = ub_top_view_update(&t->view, t->have_prev ? &t->prev : NULL, &cur,
				&q);
	ub_rpc_queues_free(&q);
	if (rc) {
		ub_err_set(err, "out of memory");
		goto out_stats;
	}
	ub_rpc_stats_free(&t->prev);
	t->prev = cur;
	t->have_prev = true;
	t->have_frame = true;
	return 0;
out_stats:
	ub_rpc_stats_free(&cur);
	return rc;
}

/* wait_until on a connected client, with a keep-alive request every
 * KEEPALIVE_S seconds (its reply is read and ignored). Returns 0 at the
 * deadline, RUN_STOP, or a negative errno (a connection error). */
static int wait_connected(struct top *t, const struct timespec *deadline,
			  struct ub_err *err)
{
	struct timespec step;
	const char *line;
	size_t len;
	int rc;

	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &step);
		ts_add(&step, KEEPALIVE_S);
		if (!ts_before(&step, deadline))
			return wait_until(t, deadline) ? RUN_STOP : 0;
		if (wait_until(t, &step))
			return RUN_STOP;
		rc =
		    ub_rpc_client_request(&t->cli, "version", &line, &len, err);
		if (rc)
			return rc;
	}
}

/* Samples and draws every interval on a connected client. Returns
 * RUN_DONE, RUN_STOP or a negative errno. */
static int monitor(struct top *t, struct ub_err *err)
{
	struct timespec next, now;
	int rc;

	clock_gettime(CLOCK_MONOTONIC, &next);
	for (;;) {
		rc = sample(t, err);
		if (rc)
			return rc;
		rc = draw(t, err);
		if (rc)
			return rc;
		t->frames++;
		if (t->count && t->frames >= t->count)
			return RUN_DONE;
		/* A fixed schedule; after a late sample, the next at once. */
		ts_add(&next, t->interval);
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (ts_before(&next, &now))
			next = now;
		rc = wait_connected(t, &next, err);
		if (rc)
			return rc;
	}
}

/* Connects, monitors, and on a connection error reports it and retries
 * after an interval. Returns RUN_DONE, RUN_STOP or a negative errno for
 * an error that is not the connection's (out of memory, stdout). */
static int run(struct top *t, struct ub_err *err)
{
	char msg[4 * UB_ERR_MAX + 1];
	struct timespec deadline;
	int rc;

	for (;;) {
		if (stopping(t))
			return RUN_STOP;
		rc = ub_rpc_client_connect(&t->cli, t->path, err);
		if (!rc && !say(t, SGR_OK, "Connected to %s", t->path)) {
			rc = monitor(t, err);
			if (rc > 0)
				return rc;
		}
		if (stopping(t))
			return RUN_STOP;
		if (t->out_err)
			break;
		if (t->fatal || rc == -ENOMEM)
			return rc;
		term_leave(t);
		ub_rpc_client_close(&t->cli);
		ub_rpc_stats_free(&t->prev);
		t->have_prev = false;
		t->have_frame = false;
		clean_text(err->msg, msg, sizeof(msg));
		if (say(t, SGR_ERR, "Connection error: %s", msg) ||
		    say(t, SGR_DIM, "Retrying in %ss...", t->interval_text)) {
			if (stopping(t))
				return RUN_STOP;
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &deadline);
		ts_add(&deadline, t->interval);
		if (wait_until(t, &deadline))
			return RUN_STOP;
	}
	return ub_err_ret(err, t->out_err, "writing to standard output: %s",
			  strerror(-t->out_err));
}

enum { OPT_BATCH = 'b', OPT_COUNT = 'n' };

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"interval", required_argument, NULL, 'i'},
	    {"batch", no_argument, NULL, OPT_BATCH},
	    {"count", required_argument, NULL, OPT_COUNT},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	struct top t = {.interval = INTERVAL_DEFAULT};
	struct ub_err err = {{0}};
	const char *term = getenv("TERM");
	bool batch = false;
	int opt, rc;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":s:i:bn:hV", longopts, NULL)) !=
	       -1) {
		switch (opt) {
		case 's':
			t.path = optarg;
			break;
		case 'i':
			if (parse_interval(optarg, &t.interval))
				return ub_cli_usage_error(
				    prog,
				    "invalid value '%s' for --interval: "
				    "expected a number of seconds",
				    optarg);
			if (!(t.interval > 0))
				return ub_cli_usage_error(
				    prog, "--interval must be a positive "
					  "number");
			if (t.interval > INTERVAL_MAX)
				return ub_cli_usage_error(
				    prog, "--interval must be at most 86400 "
					  "seconds");
			break;
		case OPT_BATCH:
			batch = true;
			break;
		case OPT_COUNT:
			if (ub_cli_parse_u64(optarg, UINT64_MAX, &t.count) ||
			    !t.count)
				return ub_cli_usage_error(
				    prog,
				    "invalid value '%s' for --count: "
				    "expected a positive number of frames",
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
	if (!t.path)
		return ub_cli_usage_error(
		    prog, "the option --socket PATH is required");
	if (!*t.path)
		return ub_cli_usage_error(prog, "the socket path is empty");
	if (optind < argc)
		return ub_cli_usage_error(prog, "unexpected argument '%s'",
					  argv[optind]);

	ub_top_format_seconds(t.interval, t.interval_text,
			      sizeof(t.interval_text));
	t.tty = !batch && isatty(STDOUT_FILENO) && term && *term &&
		strcmp(term, "dumb");
	t.keys = t.tty && isatty(STDIN_FILENO);
	ub_top_view_init(&t.view, t.interval);
	ub_rpc_client_init(&t.cli);
	signals_setup(&t);
	t.cli.wait_mask = &t.wait_mask;
	t.cli.abort_flag = &abort_wait;
	tio_set(&t);

	rc = run(&t, &err);

	term_leave(&t);
	tio_restore(&t);
	ub_rpc_client_close(&t.cli);
	ub_rpc_stats_free(&t.prev);
	ub_top_view_free(&t.view);
	if (rc == RUN_STOP && got_term) {
		/* End the way the signal would have ended us. */
		fflush(stdout);
		signal(got_term, SIG_DFL);
		sigprocmask(SIG_UNBLOCK, &t.handled, NULL);
		raise(got_term);
		return UB_EXIT_FAILURE;
	}
	if (rc == RUN_STOP) {
		say(&t, SGR_STOP, "%sStopped by user", t.tty ? "\n" : "");
		return UB_EXIT_OK;
	}
	if (rc == RUN_DONE)
		return UB_EXIT_OK;
	return ub_cli_fail(prog, "%s", err.msg);
}
