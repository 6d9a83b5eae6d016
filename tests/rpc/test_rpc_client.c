/* RPC client and ubitop's view (backends.md §7): parsing good and hostile
 * stats/queues replies, reply lines over a real socket (split, pipelined,
 * too long, closed, stalled, interrupted), byte and interval formatting,
 * bars and scale growth, rates from two samples (counter resets), and the
 * rendered frame (plain, coloured, narrow terminals); last, the client
 * against the real RPC server. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "rpc/io_tracker.h"
#include "rpc/rpc_client.h"
#include "rpc/rpc_server.h"
#include "rpc/top_view.h"

#define MIB (1024.0 * 1024.0)

#define STATS_DOC                                                              \
	"{\"stats\":{\"queues\":[{\"bytes_read\":4096,\"bytes_written\":8192," \
	"\"flush_ops\":1,\"read_ops\":1,\"write_ops\":1}]}}"
#define QUEUES_DOC                                                             \
	"{\"queues\":[[[\"flush\"],[\"read\",2,3],[\"write\",4,5],"            \
	"[\"flush\"]],[[\"write\",10,20]],[]]}"

/* ---- helpers ---------------------------------------------------------- */

static int parse_stats(const char *s, struct ub_rpc_stats *st,
		       struct ub_err *err)
{
	return ub_rpc_parse_stats(s, strlen(s), st, err);
}

static int parse_queues(const char *s, struct ub_rpc_queues *q,
			struct ub_err *err)
{
	return ub_rpc_parse_queues(s, strlen(s), q, err);
}

/* A stats reply that fails with -EPROTO and a message containing want. */
static void stats_rejected(const char *doc, const char *want)
{
	struct ub_rpc_stats st = {.nr_queues = 99};
	struct ub_err err = {{0}};

	assert_int_equal(parse_stats(doc, &st, &err), -EPROTO);
	if (!strstr(err.msg, want))
		fail_msg("'%s': message '%s' lacks '%s'", doc, err.msg, want);
	assert_int_equal(st.nr_queues, 0);
	assert_null(st.queues);
}

static void queues_rejected(const char *doc, const char *want)
{
	struct ub_rpc_queues q = {.nr_queues = 99};
	struct ub_err err = {{0}};

	assert_int_equal(parse_queues(doc, &q, &err), -EPROTO);
	if (!strstr(err.msg, want))
		fail_msg("'%s': message '%s' lacks '%s'", doc, err.msg, want);
	assert_int_equal(q.nr_queues, 0);
	assert_null(q.inflight);
}

/* A stats document of n queues, every counter = v (heap; caller frees). */
static char *stats_doc_n(size_t n, const char *v)
{
	size_t cap = 64 + n * (120 + 5 * strlen(v)), len = 0, i;
	char *s = malloc(cap);

	assert_non_null(s);
	len += (size_t)snprintf(s + len, cap - len, "{\"stats\":{\"queues\":[");
	for (i = 0; i < n; i++)
		len += (size_t)snprintf(
		    s + len, cap - len,
		    "%s{\"bytes_read\":%s,\"bytes_written\":%s,"
		    "\"flush_ops\":%s,\"read_ops\":%s,\"write_ops\":%s}",
		    i ? "," : "", v, v, v, v, v);
	snprintf(s + len, cap - len, "]}}");
	return s;
}

static struct ub_rpc_queue_stats qs(uint64_t br, uint64_t bw, uint64_t ro,
				    uint64_t wo, uint64_t fo)
{
	struct ub_rpc_queue_stats q = {br, bw, ro, wo, fo};

	return q;
}

/* Characters (not bytes) of a UTF-8 line up to '\n' or the end, escape
 * sequences not counted. */
static size_t columns(const char *s)
{
	size_t n = 0;

	while (*s && *s != '\n') {
		if (*s == '\x1b') {
			s++;
			if (*s == '[') {
				s++;
				while (*s && !(*s >= '@' && *s <= '~'))
					s++;
				if (*s)
					s++;
			}
			continue;
		}
		n += ((unsigned char)*s & 0xc0) != 0x80;
		s++;
	}
	return n;
}

/* Renders v with style into a heap string (caller frees). */
static char *render(const struct ub_top_view *v, bool color, bool panel,
		    unsigned width, unsigned *lines)
{
	struct ub_top_style st = {
	    .color = color, .panel = panel, .width = width};
	FILE *f = tmpfile();
	unsigned n;
	char *text;
	long size;

	assert_non_null(f);
	n = ub_top_render(v, &st, f);
	size = ftell(f);
	assert_true(size >= 0);
	text = calloc(1, (size_t)size + 1);
	assert_non_null(text);
	rewind(f);
	assert_int_equal(fread(text, 1, (size_t)size, f), (size_t)size);
	fclose(f);
	if (lines)
		*lines = n;
	return text;
}

/* ---- stats replies ---------------------------------------------------- */

static void test_stats_reply_of_the_documentation_is_parsed(void **state)
{
	struct ub_rpc_stats st;
	struct ub_err err = {{0}};

	assert_int_equal(parse_stats(STATS_DOC, &st, &err), 0);
	assert_int_equal(st.nr_queues, 1);
	assert_int_equal(st.queues[0].bytes_read, 4096);
	assert_int_equal(st.queues[0].bytes_written, 8192);
	assert_int_equal(st.queues[0].read_ops, 1);
	assert_int_equal(st.queues[0].write_ops, 1);
	assert_int_equal(st.queues[0].flush_ops, 1);
	ub_rpc_stats_free(&st);
	assert_null(st.queues);
	assert_int_equal(st.nr_queues, 0);
}

static void test_stats_members_in_any_order_extra_members_ignored(void **state)
{
	const char *doc =
	    "{\"extra\":[1,2],\"stats\":{\"other\":{},\"queues\":["
	    "{\"write_ops\":4,\"read_ops\":3,\"bytes_written\":2,"
	    "\"bytes_read\":1,\"flush_ops\":5,\"future\":\"x\"},"
	    "{\"bytes_read\":9223372036854775807,\"bytes_written\":0,"
	    "\"read_ops\":0,\"write_ops\":0}]}}";
	struct ub_rpc_stats st;
	struct ub_err err = {{0}};

	assert_int_equal(parse_stats(doc, &st, &err), 0);
	assert_int_equal(st.nr_queues, 2);
	assert_int_equal(st.queues[0].bytes_read, 1);
	assert_int_equal(st.queues[0].bytes_written, 2);
	assert_int_equal(st.queues[0].read_ops, 3);
	assert_int_equal(st.queues[0].write_ops, 4);
	assert_int_equal(st.queues[0].flush_ops, 5);
	/* flush_ops is optional (the reference does not read it) */
	assert_int_equal(st.queues[1].flush_ops, 0);
	assert_true(st.queues[1].bytes_read == INT64_MAX);
	ub_rpc_stats_free(&st);
}

static void test_stats_with_zero_queues_is_empty(void **state)
{
	struct ub_rpc_stats st;
	struct ub_err err = {{0}};

	assert_int_equal(parse_stats("{\"stats\":{\"queues\":[]}}", &st, &err),
			 0);
	assert_int_equal(st.nr_queues, 0);
	assert_null(st.queues);
	ub_rpc_stats_free(&st);
}

static void test_stats_missing_members_are_rejected(void **state)
{
	stats_rejected("{}", "no \"stats\" member");
	stats_rejected("{\"queues\":[]}", "no \"stats\" member");
	stats_rejected("{\"stats\":{}}", "no \"queues\" member");
	stats_rejected("{\"stats\":{\"queues\":[{\"bytes_written\":1,"
		       "\"read_ops\":1,\"write_ops\":1}]}}",
		       "queue 0 has no \"bytes_read\"");
	stats_rejected("{\"stats\":{\"queues\":[{\"bytes_read\":1,"
		       "\"bytes_written\":1,\"read_ops\":1,\"write_ops\":1},"
		       "{\"bytes_read\":1,\"bytes_written\":1,"
		       "\"read_ops\":1}]}}",
		       "queue 1 has no \"write_ops\"");
}

static void test_stats_wrong_types_are_rejected(void **state)
{
	stats_rejected("{\"stats\":null}", "\"stats\" is not an object");
	stats_rejected("{\"stats\":[1]}", "\"stats\" is not an object");
	stats_rejected("{\"stats\":{\"queues\":{}}}", "not an array");
	stats_rejected("{\"stats\":{\"queues\":\"x\"}}", "not an array");
	stats_rejected("{\"stats\":{\"queues\":[1]}}",
		       "queue 0 is not an object");
	stats_rejected("{\"stats\":{\"queues\":[[]]}}",
		       "queue 0 is not an object");
	stats_rejected("{\"stats\":{\"queues\":[{\"bytes_read\":\"1\","
		       "\"bytes_written\":1,\"read_ops\":1,\"write_ops\":1}]}}",
		       "\"bytes_read\" of queue 0 is not a non-negative");
	stats_rejected("{\"stats\":{\"queues\":[{\"bytes_read\":1.5,"
		       "\"bytes_written\":1,\"read_ops\":1,\"write_ops\":1}]}}",
		       "\"bytes_read\" of queue 0");
	stats_rejected("{\"stats\":{\"queues\":[{\"bytes_read\":1,"
		       "\"bytes_written\":null,\"read_ops\":1,"
		       "\"write_ops\":1}]}}",
		       "\"bytes_written\" of queue 0");
	stats_rejected("{\"stats\":{\"queues\":[{\"bytes_read\":1,"
		       "\"bytes_written\":1,\"read_ops\":true,"
		       "\"write_ops\":1}]}}",
		       "\"read_ops\" of queue 0");
	/* present but bad: flush_ops is optional, not unchecked */
	stats_rejected("{\"stats\":{\"queues\":[{\"bytes_read\":1,"
		       "\"bytes_written\":1,\"read_ops\":1,\"write_ops\":1,"
		       "\"flush_ops\":\"0\"}]}}",
		       "\"flush_ops\" of queue 0");
}

static void test_stats_negative_numbers_are_rejected(void **state)
{
	stats_rejected("{\"stats\":{\"queues\":[{\"bytes_read\":-1,"
		       "\"bytes_written\":1,\"read_ops\":1,\"write_ops\":1}]}}",
		       "\"bytes_read\" of queue 0 is not a non-negative");
	stats_rejected("{\"stats\":{\"queues\":[{\"bytes_read\":1,"
		       "\"bytes_written\":1,\"read_ops\":1,"
		       "\"write_ops\":-9223372036854775808}]}}",
		       "\"write_ops\" of queue 0");
}

static void test_stats_numbers_beyond_int64_are_invalid_json(void **state)
{
	stats_rejected("{\"stats\":{\"queues\":[{\"bytes_read\":"
		       "18446744073709551615,\"bytes_written\":1,"
		       "\"read_ops\":1,\"write_ops\":1}]}}",
		       "invalid JSON in reply");
}

static void test_stats_huge_queue_array_is_rejected(void **state)
{
	struct ub_rpc_stats st;
	struct ub_err err = {{0}};
	char *doc;

	doc = stats_doc_n(UB_RPC_CLIENT_MAX_QUEUES, "7");
	assert_int_equal(parse_stats(doc, &st, &err), 0);
	assert_int_equal(st.nr_queues, UB_RPC_CLIENT_MAX_QUEUES);
	assert_int_equal(st.queues[UB_RPC_CLIENT_MAX_QUEUES - 1].write_ops, 7);
	ub_rpc_stats_free(&st);
	free(doc);

	doc = stats_doc_n(UB_RPC_CLIENT_MAX_QUEUES + 1, "7");
	stats_rejected(doc, "1025 queues (at most 1024)");
	free(doc);
}

static void test_not_json_or_not_an_object_is_rejected(void **state)
{
	stats_rejected("", "invalid JSON in reply");
	stats_rejected("garbage", "invalid JSON in reply");
	stats_rejected("{\"stats\":", "invalid JSON in reply");
	stats_rejected(STATS_DOC " x", "invalid JSON in reply");
	stats_rejected(STATS_DOC STATS_DOC, "invalid JSON in reply");
	stats_rejected("[1,2]", "not a JSON object");
	stats_rejected("\"stats\"", "invalid JSON in reply");
	stats_rejected("{\"stats\":\"\xff\xfe\"}", "invalid JSON in reply");
	queues_rejected("{\"queues\":[[]", "invalid JSON in reply");
	queues_rejected("[]", "not a JSON object");
}

static void test_embedded_nul_is_rejected(void **state)
{
	static const char doc[] = "{\"stats\":{\"queues\":[]}}\0junk";
	struct ub_rpc_stats st;
	struct ub_err err = {{0}};

	assert_int_equal(ub_rpc_parse_stats(doc, sizeof(doc) - 1, &st, &err),
			 -EPROTO);
	assert_non_null(strstr(err.msg, "invalid JSON"));
}

static void test_error_reply_is_the_servers_error(void **state)
{
	stats_rejected("{\"error\":\"unknown command: stats\"}",
		       "server error: unknown command: stats");
	queues_rejected("{\"error\":\"too many clients\"}",
			"server error: too many clients");
	stats_rejected("{\"error\":5,\"stats\":{\"queues\":[]}}",
		       "server error: (not a string)");
}

static void test_deeply_nested_reply_does_not_crash(void **state)
{
	size_t depth = 100000, i;
	char *doc = malloc(2 * depth + 32);
	size_t n = 0;

	assert_non_null(doc);
	n += (size_t)sprintf(doc, "{\"queues\":");
	for (i = 0; i < depth; i++)
		doc[n++] = '[';
	for (i = 0; i < depth; i++)
		doc[n++] = ']';
	doc[n++] = '}';
	doc[n] = '\0';
	queues_rejected(doc, "invalid JSON in reply");
	free(doc);
}

/* ---- queues replies --------------------------------------------------- */

static void test_queues_reply_counts_entries_flushes_included(void **state)
{
	struct ub_rpc_queues q;
	struct ub_err err = {{0}};

	assert_int_equal(parse_queues(QUEUES_DOC, &q, &err), 0);
	assert_int_equal(q.nr_queues, 3);
	assert_int_equal(q.inflight[0], 4);
	assert_int_equal(q.inflight[1], 1);
	assert_int_equal(q.inflight[2], 0);
	ub_rpc_queues_free(&q);
	assert_null(q.inflight);

	/* an unknown kind is counted too */
	assert_int_equal(
	    parse_queues("{\"queues\":[[[\"discard\",1,2]]]}", &q, &err), 0);
	assert_int_equal(q.inflight[0], 1);
	ub_rpc_queues_free(&q);

	assert_int_equal(parse_queues("{\"queues\":[]}", &q, &err), 0);
	assert_int_equal(q.nr_queues, 0);
	assert_null(q.inflight);
}

static void test_queues_malformed_are_rejected(void **state)
{
	queues_rejected("{\"stats\":{}}", "no \"queues\" member");
	queues_rejected("{\"queues\":null}", "not an array");
	queues_rejected("{\"queues\":{\"0\":[]}}", "not an array");
	queues_rejected("{\"queues\":[[],{}]}", "queue 1 is not an array");
	queues_rejected("{\"queues\":[3]}", "queue 0 is not an array");
	queues_rejected("{\"queues\":[[[\"read\",1,2],\"flush\"]]}",
			"entry 1 of queue 0 is not [kind, ...]");
	queues_rejected("{\"queues\":[[],[[]]]}",
			"entry 0 of queue 1 is not [kind, ...]");
	queues_rejected("{\"queues\":[[[1,2,3]]]}",
			"entry 0 of queue 0 is not [kind, ...]");
}

static void test_queues_huge_arrays(void **state)
{
	size_t n = UB_RPC_CLIENT_MAX_QUEUES + 1, i, len = 0;
	size_t entries = 200000;
	char *doc = malloc(n * 3 + entries * 12 + 64);
	struct ub_rpc_queues q;
	struct ub_err err = {{0}};

	assert_non_null(doc);
	len += (size_t)sprintf(doc, "{\"queues\":[");
	for (i = 0; i < n; i++)
		len += (size_t)sprintf(doc + len, "%s[]", i ? "," : "");
	sprintf(doc + len, "]}");
	queues_rejected(doc, "1025 queues (at most 1024)");

	/* One queue with very many entries is fine (just counted). */
	len = (size_t)sprintf(doc, "{\"queues\":[[");
	for (i = 0; i < entries; i++)
		len +=
		    (size_t)sprintf(doc + len, "%s[\"flush\"]", i ? "," : "");
	sprintf(doc + len, "]]}");
	assert_int_equal(parse_queues(doc, &q, &err), 0);
	assert_int_equal(q.nr_queues, 1);
	assert_int_equal(q.inflight[0], entries);
	ub_rpc_queues_free(&q);
	free(doc);
}

/* ---- formatting ------------------------------------------------------- */

static void expect_bytes(double v, const char *want)
{
	char buf[UB_TOP_BYTES_LEN];

	ub_top_format_bytes(v, buf);
	if (strcmp(buf, want))
		fail_msg("%.17g: got '%s', wanted '%s'", v, buf, want);
}

static void test_format_bytes_units_and_width(void **state)
{
	expect_bytes(0, "   0.00 B");
	expect_bytes(1, "   1.00 B");
	expect_bytes(1023, "1023.00 B");
	expect_bytes(1023.999, "1024.00 B"); /* below 1024: stays in B */
	expect_bytes(1024, "   1.00 KiB");
	expect_bytes(1536, "   1.50 KiB");
	expect_bytes(1048575, "1024.00 KiB");
	expect_bytes(MIB, "   1.00 MiB");
	expect_bytes(12.5 * MIB, "  12.50 MiB");
	expect_bytes(1024 * MIB, "   1.00 GiB");
	expect_bytes(1024.0 * 1024 * MIB, "   1.00 TiB");
	/* TiB is the largest unit */
	expect_bytes(5120.0 * 1024 * 1024 * MIB, "5120.00 TiB");
	expect_bytes((double)UINT64_MAX, "16777216.00 TiB");
	expect_bytes(1e30, "9.09e+17 TiB");
	expect_bytes(INFINITY, "    inf TiB");
}

static void test_format_rate_appends_per_second(void **state)
{
	char buf[UB_TOP_BYTES_LEN];

	ub_top_format_rate(0, buf);
	assert_string_equal(buf, "   0.00 B/s");
	ub_top_format_rate(100.2 * MIB, buf);
	assert_string_equal(buf, " 100.20 MiB/s");
	ub_top_format_rate(1e30, buf);
	assert_string_equal(buf, "9.09e+17 TiB/s");
}

static void expect_seconds(double v, const char *want)
{
	char buf[40];

	ub_top_format_seconds(v, buf, sizeof(buf));
	if (strcmp(buf, want))
		fail_msg("%.17g: got '%s', wanted '%s'", v, buf, want);
}

static void test_format_seconds_like_python_repr(void **state)
{
	expect_seconds(1, "1.0");
	expect_seconds(0.5, "0.5");
	expect_seconds(0.1, "0.1");
	expect_seconds(0.3, "0.3");
	expect_seconds(0.25, "0.25");
	expect_seconds(2.5, "2.5");
	expect_seconds(100, "100.0");
	expect_seconds(86400, "86400.0");
	expect_seconds(123.456, "123.456");
	expect_seconds(0.0001, "0.0001");
	expect_seconds(0.00001, "1e-05");
	expect_seconds(0.000015, "1.5e-05");
	expect_seconds(1e16, "1e+16");
	expect_seconds(1234567890123456.0, "1234567890123456.0");
	expect_seconds(1.0 / 3, "0.3333333333333333");
	expect_seconds(0, "0.0");
}

/* ---- bars and scales -------------------------------------------------- */

static void test_bar_filled_is_floor_of_the_share_clamped(void **state)
{
	double s = UB_TOP_SCALE_START;

	assert_int_equal(ub_top_bar_filled(0, s), 0);
	assert_int_equal(ub_top_bar_filled(s / 2, s), 15);
	assert_int_equal(ub_top_bar_filled(s, s), 30);
	assert_int_equal(ub_top_bar_filled(3 * s, s), 30);
	assert_int_equal(ub_top_bar_filled(INFINITY, s), 30);
	assert_int_equal(ub_top_bar_filled(s / 30 * 0.999, s), 0);
	assert_int_equal(ub_top_bar_filled(s / 30, s), 1);
	assert_int_equal(ub_top_bar_filled(s * 29.99 / 30, s), 29);
	assert_int_equal(ub_top_bar_filled(-5, s), 0);
	assert_int_equal(ub_top_bar_filled(NAN, s), 0);
	assert_int_equal(ub_top_bar_filled(10, 0), 0);
	assert_int_equal(ub_top_bar_filled(10, -1), 0);
}

static void test_bar_text_is_30_characters(void **state)
{
	char bar[UB_TOP_BAR_LEN], want[UB_TOP_BAR_LEN] = "";
	unsigned i;

	ub_top_bar(0, UB_TOP_SCALE_START, bar);
	assert_int_equal(strlen(bar), 90);
	assert_int_equal(columns(bar), 30);
	for (i = 0; i < 30; i++)
		strcat(want, "\u2581");
	assert_string_equal(bar, want);

	ub_top_bar(UB_TOP_SCALE_START / 2, UB_TOP_SCALE_START, bar);
	want[0] = '\0';
	for (i = 0; i < 30; i++)
		strcat(want, i < 15 ? "\u2584" : "\u2581");
	assert_string_equal(bar, want);

	ub_top_bar(2 * UB_TOP_SCALE_START, UB_TOP_SCALE_START, bar);
	want[0] = '\0';
	for (i = 0; i < 30; i++)
		strcat(want, "\u2584");
	assert_string_equal(bar, want);
}

static void test_scale_grows_to_105_percent_and_never_shrinks(void **state)
{
	double s = UB_TOP_SCALE_START;

	assert_true(s == 50 * MIB);
	ub_top_scale_update(&s, 40 * MIB);
	assert_true(s == 50 * MIB);
	ub_top_scale_update(&s, 50 * MIB); /* equal: not exceeded */
	assert_true(s == 50 * MIB);
	ub_top_scale_update(&s, 100 * MIB);
	assert_true(fabs(s - 105 * MIB) < 1);
	/* the sample that grew the scale draws 28 of 30 */
	assert_int_equal(ub_top_bar_filled(100 * MIB, s), 28);
	ub_top_scale_update(&s, 10 * MIB);
	assert_true(fabs(s - 105 * MIB) < 1);
	ub_top_scale_update(&s, NAN);
	assert_true(fabs(s - 105 * MIB) < 1);
}

/* ---- rates ------------------------------------------------------------ */

static void test_rate_is_delta_over_the_interval(void **state)
{
	assert_true(ub_top_rate(100, 612, 0.5) == 1024);
	assert_true(ub_top_rate(0, 3000, 1.0) == 3000);
	assert_true(ub_top_rate(7, 7, 1.0) == 0);
	assert_true(ub_top_rate(0, UINT64_MAX, 1.0) == (double)UINT64_MAX);
}

static void test_rate_of_a_counter_that_went_down_is_0(void **state)
{
	/* wrapped at 2^64 */
	assert_true(ub_top_rate(UINT64_MAX - 10, 5, 1.0) == 0);
	/* backend restarted */
	assert_true(ub_top_rate(1000000, 4096, 0.5) == 0);
	assert_true(ub_top_rate(1, 2, 0) == 0);
}

static void test_view_first_sample_shows_zero_rates(void **state)
{
	struct ub_rpc_queue_stats c[2] = {qs(4096, 8192, 1, 2, 3),
					  qs(10, 20, 30, 40, 50)};
	struct ub_rpc_stats cur = {2, c};
	size_t infl[2] = {3, 1};
	struct ub_rpc_queues q = {2, infl};
	struct ub_top_view v;

	ub_top_view_init(&v, 1.0);
	assert_true(v.queue_scale == UB_TOP_SCALE_START);
	assert_true(v.total_scale == UB_TOP_SCALE_START);
	assert_int_equal(ub_top_view_update(&v, NULL, &cur, &q), 0);
	assert_int_equal(v.nr_rows, 2);
	assert_true(v.rows[0].read_rate == 0 && v.rows[0].write_rate == 0 &&
		    v.rows[0].iops == 0);
	assert_true(v.rows[0].bytes_read == 4096);
	assert_true(v.rows[1].bytes_written == 20);
	assert_int_equal(v.rows[0].inflight, 3);
	assert_int_equal(v.all.inflight, 4);
	assert_true(v.all.bytes_read == 4106);
	assert_true(v.all.read_rate == 0);
	ub_top_view_free(&v);
}

static void test_view_rates_iops_without_flushes_and_sums(void **state)
{
	struct ub_rpc_queue_stats p[2] = {qs(0, 0, 0, 0, 0),
					  qs(1000, 1000, 10, 10, 10)};
	struct ub_rpc_queue_stats c[2] = {
	    qs(10 * MIB, 5 * MIB, 100, 50, 999),
	    qs(1000 + 2 * MIB, 1000, 30, 10, 5000)};
	struct ub_rpc_stats prev = {2, p}, cur = {2, c};
	size_t infl[1] = {8};
	struct ub_rpc_queues q = {1, infl};
	struct ub_top_view v;

	ub_top_view_init(&v, 0.5);
	assert_int_equal(ub_top_view_update(&v, &prev, &cur, &q), 0);
	assert_true(v.rows[0].read_rate == 20 * MIB);
	assert_true(v.rows[0].write_rate == 10 * MIB);
	assert_true(v.rows[0].iops == 300); /* (100 + 50) / 0.5 */
	assert_true(v.rows[1].read_rate == 4 * MIB);
	assert_true(v.rows[1].write_rate == 0);
	assert_true(v.rows[1].iops == 40); /* flushes excluded */
	assert_int_equal(v.rows[0].inflight, 8);
	assert_int_equal(v.rows[1].inflight, 0); /* absent from queues */
	assert_true(v.all.read_rate == 24 * MIB);
	assert_true(v.all.write_rate == 10 * MIB);
	assert_true(v.all.iops == 340);
	assert_int_equal(v.all.inflight, 8);
	/* nothing above 50 MiB/s: the scales stay */
	assert_true(v.queue_scale == UB_TOP_SCALE_START);
	assert_true(v.total_scale == UB_TOP_SCALE_START);
	ub_top_view_free(&v);
}

static void test_view_scales_grow_separately(void **state)
{
	struct ub_rpc_queue_stats p[2] = {qs(0, 0, 0, 0, 0), qs(0, 0, 0, 0, 0)};
	struct ub_rpc_queue_stats c[2] = {qs(40 * MIB, 0, 1, 0, 0),
					  qs(0, 30 * MIB, 0, 1, 0)};
	struct ub_rpc_stats prev = {2, p}, cur = {2, c};
	struct ub_top_view v;

	ub_top_view_init(&v, 1.0);
	assert_int_equal(ub_top_view_update(&v, &prev, &cur, NULL), 0);
	/* per queue: max 40 MiB/s, under the scale; total read 40, write
	 * 30: under too */
	assert_true(v.queue_scale == UB_TOP_SCALE_START);
	assert_true(v.total_scale == UB_TOP_SCALE_START);

	c[1].bytes_written = 45 * MIB; /* total 40 + 0 / 45: still under */
	c[0].bytes_written = 20 * MIB; /* total write 65 MiB/s: over */
	assert_int_equal(ub_top_view_update(&v, &prev, &cur, NULL), 0);
	assert_true(v.queue_scale == UB_TOP_SCALE_START);
	assert_true(fabs(v.total_scale - 65 * MIB * 1.05) < 1);

	c[0].bytes_read = 80 * MIB;
	assert_int_equal(ub_top_view_update(&v, &prev, &cur, NULL), 0);
	assert_true(fabs(v.queue_scale - 80 * MIB * 1.05) < 1);
	assert_true(fabs(v.total_scale - 80 * MIB * 1.05) < 1);
	ub_top_view_free(&v);
}

static void test_view_counter_reset_and_new_queue_show_0(void **state)
{
	struct ub_rpc_queue_stats p[1] = {qs(10 * MIB, 10 * MIB, 500, 500, 0)};
	struct ub_rpc_queue_stats c[2] = {qs(4096, 20 * MIB, 1, 600, 0),
					  qs(MIB, MIB, 9, 9, 0)};
	struct ub_rpc_stats prev = {1, p}, cur = {2, c};
	struct ub_top_view v;

	ub_top_view_init(&v, 1.0);
	assert_int_equal(ub_top_view_update(&v, &prev, &cur, NULL), 0);
	assert_true(v.rows[0].read_rate == 0);	       /* went down */
	assert_true(v.rows[0].write_rate == 10 * MIB); /* went up */
	assert_true(v.rows[0].iops == 100);	       /* reads reset: 0 */
	assert_true(v.rows[1].read_rate == 0);	       /* not in prev */
	assert_true(v.rows[1].iops == 0);
	ub_top_view_free(&v);
}

static void test_view_with_zero_queues(void **state)
{
	struct ub_rpc_stats cur = {0, NULL};
	struct ub_top_view v;
	unsigned lines;
	char *out;

	ub_top_view_init(&v, 1.0);
	assert_int_equal(ub_top_view_update(&v, NULL, &cur, NULL), 0);
	assert_int_equal(v.nr_rows, 0);
	out = render(&v, false, false, 0, &lines);
	assert_non_null(strstr(out, "ubitop - 0 queues | "));
	assert_non_null(strstr(out, "  ALL "));
	assert_int_equal(lines, 5);
	free(out);
	ub_top_view_free(&v);
}

/* ---- frames ----------------------------------------------------------- */

static void two_queue_view(struct ub_top_view *v)
{
	struct ub_rpc_queue_stats p[2] = {qs(0, 0, 0, 0, 0), qs(0, 0, 0, 0, 0)};
	struct ub_rpc_queue_stats c[2] = {qs(25 * MIB, 0, 6400, 0, 3),
					  qs(0, 5 * MIB, 0, 1280, 0)};
	struct ub_rpc_stats prev = {2, p}, cur = {2, c};
	size_t infl[2] = {8, 2};
	struct ub_rpc_queues q = {2, infl};

	ub_top_view_init(v, 1.0);
	assert_int_equal(ub_top_view_update(v, &prev, &cur, &q), 0);
}

static void test_plain_frame_lines(void **state)
{
	struct ub_top_view v;
	unsigned lines;
	char *out, *l;
	char bar15[UB_TOP_BAR_LEN], bar0[UB_TOP_BAR_LEN], want[600];

	two_queue_view(&v);
	out = render(&v, false, false, 0, &lines);
	assert_int_equal(lines, 7);
	assert_null(strchr(out, '\x1b'));
	l = out;
	assert_memory_equal(l,
			    "ubitop - 2 queues | Total: \u2193  25.00 MiB/s / "
			    "\u2191   5.00 MiB/s | Poll: 1.0s\n\n",
			    strlen("ubitop - 2 queues | Total: \u2193  25.00 "
				   "MiB/s / \u2191   5.00 MiB/s | Poll: "
				   "1.0s\n\n"));
	l = strchr(l, '\n') + 2;
	assert_memory_equal(l, "Queue      Read Rate  Read Bar      ", 35);
	assert_non_null(strstr(l, "  Write Rate  Write Bar "));
	assert_non_null(strstr(l, "      IOPS  Inflt   Total Read  Total "
				  "Write\n"));
	l = strchr(l, '\n') + 1;
	ub_top_bar(25 * MIB, UB_TOP_SCALE_START, bar15);
	ub_top_bar(0, UB_TOP_SCALE_START, bar0);
	snprintf(want, sizeof(want),
		 "    0    25.00 MiB/s  %s       0.00 B/s  %s      6400      8"
		 "    25.00 MiB       0.00 B\n",
		 bar15, bar0);
	assert_memory_equal(l, want, strlen(want));
	l = strchr(l, '\n') + 1;
	assert_memory_equal(l, "    1       0.00 B/s  ", 22);
	l = strchr(l, '\n') + 1;
	assert_memory_equal(l, "\u2501\u2501\u2501\u2501\u2501  \u2501", 18);
	l = strchr(l, '\n') + 1;
	assert_memory_equal(l, "  ALL    25.00 MiB/s  ", 22);
	assert_int_equal(columns(l), 142);
	assert_string_equal(strchr(l, '\n'), "\n");
	free(out);
	ub_top_view_free(&v);
}

static void test_every_table_line_has_the_same_width(void **state)
{
	struct ub_top_view v;
	char *out, *l;
	unsigned i;

	two_queue_view(&v);
	out = render(&v, false, false, 0, NULL);
	l = strchr(out, '\n') + 2; /* the table */
	for (i = 0; i < 5; i++) {
		assert_int_equal(columns(l), 142);
		l = strchr(l, '\n') + 1;
	}
	free(out);
	ub_top_view_free(&v);
}

static void test_colour_frame_in_a_panel(void **state)
{
	struct ub_top_view v;
	unsigned lines;
	char *out, *l;

	two_queue_view(&v);
	out = render(&v, true, true, 160, &lines);
	assert_int_equal(lines, 11); /* 7 + borders + padding */
	assert_memory_equal(out, "\x1b[32m\u256d\u2500",
			    strlen("\x1b[32m\u256d\u2500"));
	assert_non_null(strstr(out, "\x1b[34m\u2584"));	  /* read bar blue */
	assert_non_null(strstr(out, "\x1b[31m\u2584"));	  /* write bar red */
	assert_non_null(strstr(out, "\x1b[1;36m\u2584")); /* ALL cyan */
	assert_non_null(strstr(out, "\x1b[1;33m\u2584")); /* ALL yellow */
	assert_non_null(strstr(out, "\x1b[1;35mQueue"));
	assert_non_null(strstr(out, "\x1b[32m\u2570"));
	for (l = out; *l; l = strchr(l, '\n') + 1)
		assert_int_equal(columns(l), 160);
	free(out);
	ub_top_view_free(&v);
}

static void test_narrow_terminal_drops_bars_then_cuts(void **state)
{
	struct ub_top_view v;
	char *out, *l;

	two_queue_view(&v);
	out = render(&v, true, true, 80, NULL);
	assert_null(strstr(out, "Read Bar"));
	assert_non_null(strstr(out, "Total Write"));
	assert_null(strstr(out, "\u2584"));
	for (l = out; *l; l = strchr(l, '\n') + 1)
		assert_int_equal(columns(l), 80);
	free(out);

	out = render(&v, false, true, 40, NULL);
	for (l = out; *l; l = strchr(l, '\n') + 1)
		assert_int_equal(columns(l), 40);
	free(out);

	out = render(&v, false, false, 30, NULL);
	for (l = out; *l; l = strchr(l, '\n') + 1)
		assert_true(columns(l) <= 30);
	free(out);

	out = render(&v, false, true, 2, NULL); /* no room for a border */
	for (l = out; *l; l = strchr(l, '\n') + 1)
		assert_true(columns(l) <= 2);
	free(out);
	ub_top_view_free(&v);
}

/* ---- the client over a socket ----------------------------------------- */

struct sock_fx {
	char dir[128], path[256];
	int lfd;  /* listening */
	int peer; /* accepted server side of the client's connection */
	struct ub_rpc_client c;
};

static int sock_setup(void **state)
{
	struct sock_fx *f = calloc(1, sizeof(*f));
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "%s/ubitop-test.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/rpc.sock", f->dir);
	assert_true(strlen(f->path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, f->path, strlen(f->path) + 1);
	f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(f->lfd, 4), 0);
	ub_rpc_client_init(&f->c);
	f->peer = -1;
	*state = f;
	return 0;
}

static int sock_teardown(void **state)
{
	struct sock_fx *f = *state;

	ub_rpc_client_close(&f->c);
	if (f->peer >= 0)
		close(f->peer);
	close(f->lfd);
	unlink(f->path);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void sock_connect(struct sock_fx *f)
{
	struct ub_err err = {{0}};

	assert_int_equal(ub_rpc_client_connect(&f->c, f->path, &err), 0);
	f->peer = accept(f->lfd, NULL, NULL);
	assert_true(f->peer >= 0);
}

static void peer_send(struct sock_fx *f, const char *s)
{
	assert_int_equal(write(f->peer, s, strlen(s)), (ssize_t)strlen(s));
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_connect_to_a_missing_socket_fails_like_python(void **state)
{
	struct sock_fx *f = *state;
	struct ub_err err = {{0}};
	char p[300];

	snprintf(p, sizeof(p), "%s/nothing.sock", f->dir);
	assert_int_equal(ub_rpc_client_connect(&f->c, p, &err), -ENOENT);
	assert_string_equal(err.msg, "[Errno 2] No such file or directory");
	assert_int_equal(f->c.fd, -1);
}

static void test_connect_to_a_dead_socket_is_refused(void **state)
{
	struct sock_fx *f = *state;
	struct ub_err err = {{0}};

	close(f->lfd); /* the file stays, nobody listens */
	f->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(ub_rpc_client_connect(&f->c, f->path, &err),
			 -ECONNREFUSED);
	assert_string_equal(err.msg, "[Errno 111] Connection refused");
}

static void test_connect_path_too_long_or_empty(void **state)
{
	struct sock_fx *f = *state;
	struct ub_err err = {{0}};
	char p[200];

	memset(p, 'a', sizeof(p) - 1);
	p[sizeof(p) - 1] = '\0';
	assert_int_equal(ub_rpc_client_connect(&f->c, p, &err), -ENAMETOOLONG);
	assert_string_equal(err.msg, "AF_UNIX path too long");
	assert_int_equal(ub_rpc_client_connect(&f->c, "", &err), -EINVAL);
}

static void test_request_bytes_are_the_references(void **state)
{
	struct sock_fx *f = *state;
	struct ub_err err = {{0}};
	char buf[128];
	ssize_t n;

	sock_connect(f);
	assert_int_equal(ub_rpc_client_send(&f->c, "stats", &err), 0);
	assert_int_equal(ub_rpc_client_send(&f->c, "queues", &err), 0);
	usleep(20000);
	n = read(f->peer, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, "{\"command\": \"stats\"}\n"
				 "{\"command\": \"queues\"}\n");
	assert_int_equal(ub_rpc_client_send(&f->c, "a\"b", &err), -EINVAL);
	assert_int_equal(ub_rpc_client_send(&f->c, "", &err), -EINVAL);
}

static void test_send_or_read_while_not_connected(void **state)
{
	struct sock_fx *f = *state;
	struct ub_err err = {{0}};
	const char *line;
	size_t len;

	assert_int_equal(ub_rpc_client_send(&f->c, "stats", &err), -ENOTCONN);
	assert_int_equal(ub_rpc_client_read_line(&f->c, &line, &len, &err),
			 -ENOTCONN);
}

static void test_lines_split_and_pipelined(void **state)
{
	struct sock_fx *f = *state;
	struct ub_err err = {{0}};
	const char *line;
	size_t len;

	sock_connect(f);
	peer_send(f, "{\"a\":");
	peer_send(f, "1}\n{\"b\":2}\n{\"c\"");
	assert_int_equal(ub_rpc_client_read_line(&f->c, &line, &len, &err), 0);
	assert_string_equal(line, "{\"a\":1}");
	assert_int_equal(len, 7);
	assert_int_equal(ub_rpc_client_read_line(&f->c, &line, &len, &err), 0);
	assert_string_equal(line, "{\"b\":2}");
	peer_send(f, ":3}\n\n");
	assert_int_equal(ub_rpc_client_read_line(&f->c, &line, &len, &err), 0);
	assert_string_equal(line, "{\"c\":3}");
	assert_int_equal(ub_rpc_client_read_line(&f->c, &line, &len, &err), 0);
	assert_string_equal(line, "");
	assert_int_equal(len, 0);
}

static void test_line_at_the_limit_passes_one_more_fails(void **state)
{
	struct sock_fx *f = *state;
	struct ub_err err = {{0}};
	const char *line;
	size_t len;

	sock_connect(f);
	f->c.line_max = 16;
	peer_send(f, "0123456789abcdef\n0123456789abcdefg\n");
	assert_int_equal(ub_rpc_client_read_line(&f->c, &line, &len, &err), 0);
	assert_int_equal(len, 16);
	assert_int_equal(ub_rpc_client_read_line(&f->c, &line, &len, &err),
			 -EMSGSIZE);
	assert_string_equal(err.msg, "reply line exceeds 16 bytes");
}

struct flood {
	int fd;
	size_t sent;
};

static void *flood_thread(void *arg)
{
	struct flood *fl = arg;
	char chunk[65536];
	ssize_t w;

	memset(chunk, 'x', sizeof(chunk));
	for (;;) {
		w = write(fl->fd, chunk, sizeof(chunk));
		if (w <= 0)
			break;
		fl->sent += (size_t)w;
	}
	return NULL;
}

static void test_endless_line_stops_at_1_mib(void **state)
{
	struct sock_fx *f = *state;
	struct ub_err err = {{0}};
	struct flood fl;
	pthread_t th;
	const char *line;
	size_t len;

	signal(SIGPIPE, SIG_IGN);
	sock_connect(f);
	fl.fd = f->peer;
	fl.sent = 0;
	assert_int_equal(pthread_create(&th, NULL, flood_thread, &fl), 0);
	assert_int_equal(ub_rpc_client_read_line(&f->c, &line, &len, &err),
			 -EMSGSIZE);
	assert_string_equal(err.msg, "reply line exceeds 1048576 bytes");
	assert_true(f->c.cap <= UB_RPC_CLIENT_LINE_MAX + 1);
	ub_rpc_client_close(&f->c); /* the writer gets EPIPE */
	pthread_join(th, NULL);
}

static void test_closed_connection_is_reported(void **state)
{
	struct sock_fx *f = *state;
	struct ub_err err = {{0}};
	const char *line;
	size_t len;

	sock_connect(f);
	peer_send(f, "{\"partial\":");
	close(f->peer);
	f->peer = -1;
	assert_int_equal(ub_rpc_client_read_line(&f->c, &line, &len, &err),
			 -ECONNRESET);
	assert_string_equal(err.msg, "RPC socket closed");
}

static void test_silent_server_times_out(void **state)
{
	struct sock_fx *f = *state;
	struct ub_err err = {{0}};
	const char *line;
	size_t len;
	double t0;

	sock_connect(f);
	f->c.timeout_ms = 200;
	t0 = now_s();
	assert_int_equal(ub_rpc_client_read_line(&f->c, &line, &len, &err),
			 -ETIMEDOUT);
	assert_true(now_s() - t0 >= 0.19);
	assert_true(now_s() - t0 < 2);
	assert_string_equal(err.msg, "timed out waiting for the RPC server");
}

struct drip {
	int fd;
	volatile int stop;
};

static void *drip_thread(void *arg)
{
	struct drip *d = arg;

	while (!d->stop) {
		if (write(d->fd, "x", 1) != 1)
			break;
		usleep(20000);
	}
	return NULL;
}

static void test_slow_drip_cannot_extend_the_deadline(void **state)
{
	struct sock_fx *f = *state;
	struct ub_err err = {{0}};
	struct drip d;
	pthread_t th;
	const char *line;
	size_t len;
	double t0;

	sock_connect(f);
	f->c.timeout_ms = 300;
	d.fd = f->peer;
	d.stop = 0;
	assert_int_equal(pthread_create(&th, NULL, drip_thread, &d), 0);
	t0 = now_s();
	assert_int_equal(ub_rpc_client_read_line(&f->c, &line, &len, &err),
			 -ETIMEDOUT);
	assert_true(now_s() - t0 < 2);
	d.stop = 1;
	pthread_join(th, NULL);
}

static void on_usr1(int sig)
{
	(void)sig;
}

struct kicker {
	pthread_t target;
};

static void *kick_thread(void *arg)
{
	struct kicker *k = arg;

	usleep(50000);
	pthread_kill(k->target, SIGUSR1);
	return NULL;
}

static void test_signal_aborts_a_wait_only_when_flagged(void **state)
{
	struct sock_fx *f = *state;
	struct sigaction sa = {.sa_handler = on_usr1};
	volatile sig_atomic_t flag = 0;
	struct ub_err err = {{0}};
	struct kicker k = {pthread_self()};
	pthread_t th;
	const char *line;
	size_t len;
	double t0;

	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGUSR1, &sa, NULL), 0);
	sock_connect(f);
	f->c.abort_flag = &flag;
	f->c.timeout_ms = 400;

	/* not flagged: the signal is ignored, the wait runs to its end */
	assert_int_equal(pthread_create(&th, NULL, kick_thread, &k), 0);
	t0 = now_s();
	assert_int_equal(ub_rpc_client_read_line(&f->c, &line, &len, &err),
			 -ETIMEDOUT);
	assert_true(now_s() - t0 >= 0.39);
	pthread_join(th, NULL);

	flag = 1;
	assert_int_equal(pthread_create(&th, NULL, kick_thread, &k), 0);
	t0 = now_s();
	assert_int_equal(ub_rpc_client_read_line(&f->c, &line, &len, &err),
			 -EINTR);
	assert_true(now_s() - t0 < 0.3);
	pthread_join(th, NULL);
	signal(SIGUSR1, SIG_DFL);
}

static void test_reconnect_drops_unread_bytes(void **state)
{
	struct sock_fx *f = *state;
	struct ub_err err = {{0}};
	const char *line;
	size_t len;

	sock_connect(f);
	peer_send(f, "{\"old\":1}\n{\"old\":2}\n");
	assert_int_equal(ub_rpc_client_read_line(&f->c, &line, &len, &err), 0);
	close(f->peer);
	sock_connect(f);
	peer_send(f, "{\"new\":1}\n");
	assert_int_equal(ub_rpc_client_read_line(&f->c, &line, &len, &err), 0);
	assert_string_equal(line, "{\"new\":1}");
}

/* ---- against the real server ------------------------------------------ */

static void test_client_against_the_rpc_server(void **state)
{
	struct sock_fx *f = *state;
	struct ub_io_tracker *t[2];
	struct ub_rpc_source src = {
	    .version = "0.5.1", .trackers = t, .ntrackers = 2};
	struct ub_rpc_server *srv = NULL;
	struct ub_rpc_stats st;
	struct ub_rpc_queues q;
	struct ub_err err = {{0}};
	const char *line;
	char p[300];
	size_t len;

	t[0] = ub_io_tracker_new(8);
	t[1] = ub_io_tracker_new(8);
	assert_non_null(t[0]);
	assert_non_null(t[1]);
	ub_io_tracker_read(t[0], 0, 0, 8);
	ub_io_tracker_write(t[0], 1, 0, 16);
	ub_io_tracker_flush(t[0], 2);
	ub_io_tracker_read(t[1], 3, 100, 1);
	ub_io_tracker_clear(t[1], 3);

	snprintf(p, sizeof(p), "%s/real.sock", f->dir);
	assert_int_equal(ub_rpc_server_start(p, &src, NULL, &srv, &err), 0);
	assert_int_equal(ub_rpc_client_connect(&f->c, p, &err), 0);

	assert_int_equal(
	    ub_rpc_client_request(&f->c, "stats", &line, &len, &err), 0);
	assert_int_equal(ub_rpc_parse_stats(line, len, &st, &err), 0);
	assert_int_equal(st.nr_queues, 2);
	assert_int_equal(st.queues[0].bytes_read, 4096);
	assert_int_equal(st.queues[0].bytes_written, 8192);
	assert_int_equal(st.queues[0].flush_ops, 1);
	assert_int_equal(st.queues[1].read_ops, 1);
	assert_int_equal(st.queues[1].bytes_read, 512);

	assert_int_equal(
	    ub_rpc_client_request(&f->c, "queues", &line, &len, &err), 0);
	assert_int_equal(ub_rpc_parse_queues(line, len, &q, &err), 0);
	assert_int_equal(q.nr_queues, 2);
	assert_int_equal(q.inflight[0], 3);
	assert_int_equal(q.inflight[1], 0);

	/* an unknown command is the server's error */
	assert_int_equal(
	    ub_rpc_client_request(&f->c, "bogus", &line, &len, &err), 0);
	ub_rpc_stats_free(&st);
	assert_int_equal(ub_rpc_parse_stats(line, len, &st, &err), -EPROTO);
	assert_string_equal(err.msg, "server error: unknown command: bogus");

	ub_rpc_queues_free(&q);
	ub_rpc_client_close(&f->c);
	ub_rpc_server_stop(srv);
	ub_io_tracker_free(t[0]);
	ub_io_tracker_free(t[1]);
}

#define S(fn) cmocka_unit_test_setup_teardown(fn, sock_setup, sock_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_stats_reply_of_the_documentation_is_parsed),
	    cmocka_unit_test(
		test_stats_members_in_any_order_extra_members_ignored),
	    cmocka_unit_test(test_stats_with_zero_queues_is_empty),
	    cmocka_unit_test(test_stats_missing_members_are_rejected),
	    cmocka_unit_test(test_stats_wrong_types_are_rejected),
	    cmocka_unit_test(test_stats_negative_numbers_are_rejected),
	    cmocka_unit_test(test_stats_numbers_beyond_int64_are_invalid_json),
	    cmocka_unit_test(test_stats_huge_queue_array_is_rejected),
	    cmocka_unit_test(test_not_json_or_not_an_object_is_rejected),
	    cmocka_unit_test(test_embedded_nul_is_rejected),
	    cmocka_unit_test(test_error_reply_is_the_servers_error),
	    cmocka_unit_test(test_deeply_nested_reply_does_not_crash),
	    cmocka_unit_test(test_queues_reply_counts_entries_flushes_included),
	    cmocka_unit_test(test_queues_malformed_are_rejected),
	    cmocka_unit_test(test_queues_huge_arrays),
	    cmocka_unit_test(test_format_bytes_units_and_width),
	    cmocka_unit_test(test_format_rate_appends_per_second),
	    cmocka_unit_test(test_format_seconds_like_python_repr),
	    cmocka_unit_test(test_bar_filled_is_floor_of_the_share_clamped),
	    cmocka_unit_test(test_bar_text_is_30_characters),
	    cmocka_unit_test(test_scale_grows_to_105_percent_and_never_shrinks),
	    cmocka_unit_test(test_rate_is_delta_over_the_interval),
	    cmocka_unit_test(test_rate_of_a_counter_that_went_down_is_0),
	    cmocka_unit_test(test_view_first_sample_shows_zero_rates),
	    cmocka_unit_test(test_view_rates_iops_without_flushes_and_sums),
	    cmocka_unit_test(test_view_scales_grow_separately),
	    cmocka_unit_test(test_view_counter_reset_and_new_queue_show_0),
	    cmocka_unit_test(test_view_with_zero_queues),
	    cmocka_unit_test(test_plain_frame_lines),
	    cmocka_unit_test(test_every_table_line_has_the_same_width),
	    cmocka_unit_test(test_colour_frame_in_a_panel),
	    cmocka_unit_test(test_narrow_terminal_drops_bars_then_cuts),
	    S(test_connect_to_a_missing_socket_fails_like_python),
	    S(test_connect_to_a_dead_socket_is_refused),
	    S(test_connect_path_too_long_or_empty),
	    S(test_request_bytes_are_the_references),
	    S(test_send_or_read_while_not_connected),
	    S(test_lines_split_and_pipelined),
	    S(test_line_at_the_limit_passes_one_more_fails),
	    S(test_endless_line_stops_at_1_mib),
	    S(test_closed_connection_is_reported),
	    S(test_silent_server_times_out),
	    S(test_slow_drip_cannot_extend_the_deadline),
	    S(test_signal_aborts_a_wait_only_when_flagged),
	    S(test_reconnect_drops_unread_bytes),
	    S(test_client_against_the_rpc_server),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
