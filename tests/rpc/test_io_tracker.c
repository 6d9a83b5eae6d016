/* Per-queue I/O tracker (backends.md §5, criteria 39-40): counters, slots,
 * snapshots, out-of-range slots, logging and a concurrent reader. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rpc/io_tracker.h"
#include "util/log.h"

/* ---- stderr capture for the log checks ---- */

struct capture {
	int saved_fd;
	FILE *file;
};

static void capture_begin(struct capture *c)
{
	fflush(stderr);
	c->file = tmpfile();
	assert_non_null(c->file);
	c->saved_fd = dup(STDERR_FILENO);
	assert_true(c->saved_fd >= 0);
	assert_true(dup2(fileno(c->file), STDERR_FILENO) >= 0);
}

/* Restores stderr and returns what was logged (heap; caller frees). */
static char *capture_end(struct capture *c)
{
	char *text;
	long n;

	fflush(stderr);
	assert_true(dup2(c->saved_fd, STDERR_FILENO) >= 0);
	close(c->saved_fd);
	n = ftell(c->file);
	assert_true(n >= 0);
	text = calloc(1, (size_t)n + 1);
	assert_non_null(text);
	rewind(c->file);
	assert_int_equal(fread(text, 1, (size_t)n, c->file), (size_t)n);
	fclose(c->file);
	return text;
}

static unsigned count_str(const char *hay, const char *needle)
{
	unsigned n = 0;

	while ((hay = strstr(hay, needle))) {
		n++;
		hay += strlen(needle);
	}
	return n;
}

/* ---- counters ---- */

static void test_c39_read_write_flush_counters(void **state)
{
	struct ub_io_tracker *t = ub_io_tracker_new(8);
	struct ub_io_stats st;

	assert_non_null(t);
	ub_io_tracker_read(t, 0, 0, 1);
	ub_io_tracker_write(t, 1, 8, 1);
	ub_io_tracker_flush(t, 2);
	ub_io_tracker_stats(t, &st);
	assert_int_equal(st.bytes_read, 512);
	assert_int_equal(st.bytes_written, 512);
	assert_int_equal(st.read_ops, 1);
	assert_int_equal(st.write_ops, 1);
	assert_int_equal(st.flush_ops, 1);
	ub_io_tracker_free(t);
}

static void test_c40_counters_shared_by_copies_accumulate(void **state)
{
	struct ub_io_tracker *t = ub_io_tracker_new(4);
	struct ub_io_tracker *copy = t; /* a second handle, same tracker */
	struct ub_io_stats st;

	assert_non_null(t);
	ub_io_tracker_read(t, 0, 100, 8);
	ub_io_tracker_clear(t, 0);
	ub_io_tracker_read(copy, 0, 200, 2);
	ub_io_tracker_write(copy, 1, 0, 4);
	ub_io_tracker_write(t, 2, 0, 6);
	ub_io_tracker_flush(copy, 3);
	ub_io_tracker_flush(t, 3);

	ub_io_tracker_stats(copy, &st);
	assert_int_equal(st.bytes_read, 5120);
	assert_int_equal(st.read_ops, 2);
	assert_int_equal(st.bytes_written, 5120);
	assert_int_equal(st.write_ops, 2);
	assert_int_equal(st.flush_ops, 2);
	memset(&st, 0, sizeof(st));
	ub_io_tracker_stats(t, &st);
	assert_int_equal(st.bytes_read, 5120);
	assert_int_equal(st.flush_ops, 2);
	ub_io_tracker_free(t);
}

static void test_counters_wrap_at_2_pow_64(void **state)
{
	struct ub_io_tracker *t = ub_io_tracker_new(1);
	struct ub_io_stats st;

	assert_non_null(t);
	t->stats.bytes_read = UINT64_MAX - 511;
	t->stats.read_ops = UINT64_MAX;
	ub_io_tracker_read(t, 0, 0, 2);
	ub_io_tracker_stats(t, &st);
	assert_int_equal(st.bytes_read, 512);
	assert_int_equal(st.read_ops, 0);
	ub_io_tracker_free(t);
}

/* ---- slots ---- */

static void test_snapshot_lists_busy_slots_in_slot_order(void **state)
{
	struct ub_io_tracker *t = ub_io_tracker_new(8);
	struct ub_io_slot out[8];

	assert_non_null(t);
	ub_io_tracker_write(t, 5, 4, 5);
	ub_io_tracker_flush(t, 0);
	ub_io_tracker_read(t, 2, 2, 3);
	assert_int_equal(ub_io_tracker_snapshot(t, out, 8), 3);
	assert_int_equal(out[0].kind, UB_IO_FLUSH);
	assert_int_equal(out[1].kind, UB_IO_READ);
	assert_int_equal(out[1].offset, 2);
	assert_int_equal(out[1].length, 3);
	assert_int_equal(out[2].kind, UB_IO_WRITE);
	assert_int_equal(out[2].offset, 4);
	assert_int_equal(out[2].length, 5);
	ub_io_tracker_free(t);
}

static void test_clear_makes_a_slot_idle(void **state)
{
	struct ub_io_tracker *t = ub_io_tracker_new(4);
	struct ub_io_slot out[4];

	assert_non_null(t);
	ub_io_tracker_read(t, 1, 7, 1);
	ub_io_tracker_write(t, 3, 9, 1);
	ub_io_tracker_clear(t, 1);
	assert_int_equal(ub_io_tracker_snapshot(t, out, 4), 1);
	assert_int_equal(out[0].kind, UB_IO_WRITE);
	assert_int_equal(out[0].offset, 9);
	ub_io_tracker_clear(t, 3);
	assert_int_equal(ub_io_tracker_snapshot(t, out, 4), 0);
	ub_io_tracker_free(t);
}

static void test_flush_leaves_offset_and_length_untouched(void **state)
{
	struct ub_io_tracker *t = ub_io_tracker_new(2);

	assert_non_null(t);
	ub_io_tracker_read(t, 0, 42, 3);
	ub_io_tracker_clear(t, 0);
	ub_io_tracker_flush(t, 0);
	assert_int_equal(t->slots[0].kind, UB_IO_FLUSH);
	assert_int_equal(t->slots[0].offset, 42);
	assert_int_equal(t->slots[0].length, 3);
	ub_io_tracker_free(t);
}

static void test_snapshot_returns_the_full_count_beyond_cap(void **state)
{
	struct ub_io_tracker *t = ub_io_tracker_new(8);
	struct ub_io_slot out[2];
	uint32_t i;

	assert_non_null(t);
	for (i = 0; i < 5; i++)
		ub_io_tracker_read(t, i, i * 10, 1);
	assert_int_equal(ub_io_tracker_snapshot(t, out, 2), 5);
	assert_int_equal(out[0].offset, 0);
	assert_int_equal(out[1].offset, 10);
	assert_int_equal(ub_io_tracker_snapshot(t, NULL, 0), 5);
	ub_io_tracker_free(t);
}

static void test_out_of_range_slot_is_counted_not_listed(void **state)
{
	struct ub_io_tracker *t = ub_io_tracker_new(2);
	struct ub_io_slot out[2];
	struct ub_io_stats st;

	assert_non_null(t);
	ub_io_tracker_read(t, 2, 1, 8);
	ub_io_tracker_write(t, 1000, 1, 2);
	ub_io_tracker_flush(t, UINT32_MAX);
	ub_io_tracker_clear(t, 2);
	ub_io_tracker_clear(t, UINT32_MAX);
	assert_int_equal(ub_io_tracker_snapshot(t, out, 2), 0);
	ub_io_tracker_stats(t, &st);
	assert_int_equal(st.bytes_read, 4096);
	assert_int_equal(st.read_ops, 1);
	assert_int_equal(st.bytes_written, 1024);
	assert_int_equal(st.write_ops, 1);
	assert_int_equal(st.flush_ops, 1);
	ub_io_tracker_free(t);
}

static void test_zero_slot_tracker_counts_and_lists_nothing(void **state)
{
	struct ub_io_tracker *t = ub_io_tracker_new(0);
	struct ub_io_slot out[1];
	struct ub_io_stats st;

	assert_non_null(t);
	assert_int_equal(t->nslots, 0);
	ub_io_tracker_read(t, 0, 0, 1);
	ub_io_tracker_flush(t, 0);
	ub_io_tracker_clear(t, 0);
	assert_int_equal(ub_io_tracker_snapshot(t, out, 1), 0);
	ub_io_tracker_stats(t, &st);
	assert_int_equal(st.read_ops, 1);
	assert_int_equal(st.flush_ops, 1);
	ub_io_tracker_free(t);
	ub_io_tracker_free(NULL);
}

/* ---- logging ---- */

static void test_busy_slot_warns_and_is_overwritten(void **state)
{
	struct ub_io_tracker *t = ub_io_tracker_new(4);
	enum ub_log_level old = ub_log_get_level();
	struct ub_io_slot out[4];
	struct capture c;
	char *log;

	assert_non_null(t);
	ub_log_set_level(UB_LOG_WARN);
	capture_begin(&c);
	ub_io_tracker_read(t, 3, 1, 1);
	ub_io_tracker_write(t, 3, 5, 6);
	log = capture_end(&c);
	ub_log_set_level(old);
	/* Warned once: marking the idle slot did not warn. */
	assert_int_equal(count_str(log, "IO slot 3 is already in use"), 1);
	free(log);
	assert_int_equal(ub_io_tracker_snapshot(t, out, 4), 1);
	assert_int_equal(out[0].kind, UB_IO_WRITE);
	assert_int_equal(out[0].offset, 5);
	assert_int_equal(out[0].length, 6);
	ub_io_tracker_free(t);
}

static void test_out_of_range_slot_logs_at_debug_only(void **state)
{
	struct ub_io_tracker *t = ub_io_tracker_new(2);
	enum ub_log_level old = ub_log_get_level();
	struct capture c;
	char *log;

	assert_non_null(t);
	ub_log_set_level(UB_LOG_INFO);
	capture_begin(&c);
	ub_io_tracker_read(t, 7, 3, 4);
	log = capture_end(&c);
	assert_string_equal(log, "");
	free(log);

	ub_log_set_level(UB_LOG_DEBUG);
	capture_begin(&c);
	ub_io_tracker_read(t, 7, 3, 4);
	ub_io_tracker_write(t, 8, 5, 6);
	ub_io_tracker_flush(t, 9);
	log = capture_end(&c);
	ub_log_set_level(old);
	assert_non_null(strstr(log, "Large IO (read): slot 7, offset 3 "
				    "sectors, length 4 sectors"));
	assert_non_null(strstr(log, "Large IO (write): slot 8, offset 5 "
				    "sectors, length 6 sectors"));
	assert_non_null(strstr(log, "Large IO (flush): slot 9"));
	free(log);
	ub_io_tracker_free(t);
}

/* ---- one writer, one reader ---- */

#define RACE_SLOTS 16u
#define RACE_OPS   200000u

struct race {
	struct ub_io_tracker *t;
	int done; /* atomic */
};

static void *race_writer(void *arg)
{
	struct race *r = arg;
	uint32_t i, slot;

	for (i = 0; i < RACE_OPS; i++) {
		slot = i % RACE_SLOTS;
		switch (i % 3) {
		case 0:
			ub_io_tracker_read(r->t, slot, i, 8);
			break;
		case 1:
			ub_io_tracker_write(r->t, slot, i, 16);
			break;
		default:
			ub_io_tracker_flush(r->t, slot);
			break;
		}
		ub_io_tracker_clear(r->t, (slot + RACE_SLOTS - 4) % RACE_SLOTS);
	}
	__atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void test_concurrent_reader_sees_monotonic_counters(void **state)
{
	struct race r = {.t = ub_io_tracker_new(RACE_SLOTS)};
	struct ub_io_stats prev = {0}, st;
	struct ub_io_slot out[RACE_SLOTS];
	uint32_t n, i;
	pthread_t th;
	unsigned rounds = 0;

	assert_non_null(r.t);
	assert_int_equal(pthread_create(&th, NULL, race_writer, &r), 0);
	while (!__atomic_load_n(&r.done, __ATOMIC_ACQUIRE) || rounds < 10) {
		ub_io_tracker_stats(r.t, &st);
		assert_true(st.bytes_read >= prev.bytes_read);
		assert_true(st.bytes_written >= prev.bytes_written);
		assert_true(st.read_ops >= prev.read_ops);
		assert_true(st.write_ops >= prev.write_ops);
		assert_true(st.flush_ops >= prev.flush_ops);
		/* Byte counters only ever grow in whole requests. */
		assert_int_equal(st.bytes_read % (8 * 512), 0);
		assert_int_equal(st.bytes_written % (16 * 512), 0);
		prev = st;
		n = ub_io_tracker_snapshot(r.t, out, RACE_SLOTS);
		assert_true(n <= RACE_SLOTS);
		for (i = 0; i < n; i++) {
			assert_true(out[i].kind >= UB_IO_READ &&
				    out[i].kind <= UB_IO_FLUSH);
			assert_true(out[i].offset < RACE_OPS);
		}
		rounds++;
	}
	assert_int_equal(pthread_join(th, NULL), 0);
	ub_io_tracker_stats(r.t, &st);
	assert_int_equal(st.read_ops + st.write_ops + st.flush_ops, RACE_OPS);
	assert_int_equal(st.bytes_read, st.read_ops * 8 * 512);
	assert_int_equal(st.bytes_written, st.write_ops * 16 * 512);
	ub_io_tracker_free(r.t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_c39_read_write_flush_counters),
	    cmocka_unit_test(test_c40_counters_shared_by_copies_accumulate),
	    cmocka_unit_test(test_counters_wrap_at_2_pow_64),
	    cmocka_unit_test(test_snapshot_lists_busy_slots_in_slot_order),
	    cmocka_unit_test(test_clear_makes_a_slot_idle),
	    cmocka_unit_test(test_flush_leaves_offset_and_length_untouched),
	    cmocka_unit_test(test_snapshot_returns_the_full_count_beyond_cap),
	    cmocka_unit_test(test_out_of_range_slot_is_counted_not_listed),
	    cmocka_unit_test(test_zero_slot_tracker_counts_and_lists_nothing),
	    cmocka_unit_test(test_busy_slot_warns_and_is_overwritten),
	    cmocka_unit_test(test_out_of_range_slot_logs_at_debug_only),
	    cmocka_unit_test(test_concurrent_reader_sees_monotonic_counters),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
