/* The io_uring engine: criteria 15-26 of storage.md §11 through the shared
 * engine tests (bdev.h semantics: a read past the end is -EIO, not the
 * reference's silent success), plus what is particular to it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>

#include "bdev/file.h"

static const enum ub_io_engine g_engine = UB_IO_ENGINE_IO_URING;

#include "bdev_engine_tests.h"

/* Waits for the event fd to become readable and resets it. */
static bool wait_event(int efd)
{
	struct pollfd p = {.fd = efd, .events = POLLIN};
	uint64_t v;

	if (poll(&p, 1, (int)T_TIMEOUT_MS) != 1)
		return false;
	return read(efd, &v, sizeof(v)) == sizeof(v);
}

/* The event fd becomes readable once a completion is waiting, for ring
 * completions and for requests finished inside queue (a write-through
 * flush) alike. */
static void test_event_fd_signals_completions(void **state)
{
	struct ub_file_bdev_opts o = {
	    .path = tpath("efd"), .direct = true, .queue_depth = 4};
	unsigned char *buf = ub_bdev_buf_alloc(SECT); /* heap */
	struct iovec iov = {buf, SECT};
	struct ub_bdev_req r = {
	    .op = UB_BDEV_READ, .count = 1, .iov = &iov, .iovcnt = 1, .id = 1};
	struct ub_bdev_req f = {.op = UB_BDEV_FLUSH, .id = 2};
	struct ub_bdev_cqe c;
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;
	int efd;

	make_file(tpath("efd"), 4 * SECT, 0);
	for (int wt = 0; wt < 2; wt++) {
		o.write_through = wt;
		dev = open_dev_opts(g_engine, &o);
		ch = open_chan(dev);
		efd = ub_bdev_chan_event_fd(ch);
		assert_true(efd >= 0);
		assert_int_equal(ub_bdev_chan_event_fd(ch), efd);
		assert_int_equal(ub_bdev_chan_queue(ch, &r), 0);
		assert_int_equal(ub_bdev_chan_submit(ch), 0);
		assert_true(wait_event(efd));
		assert_int_equal(collect(ch, &c, 1), 1);
		assert_int_equal(c.id, 1);
		assert_int_equal(c.res, 0);
		assert_int_equal(ub_bdev_chan_queue(ch, &f), 0);
		assert_int_equal(ub_bdev_chan_submit(ch), 0);
		assert_true(wait_event(efd));
		assert_int_equal(collect(ch, &c, 1), 1);
		assert_int_equal(c.id, 2);
		assert_int_equal(c.res, 0);
		ub_bdev_chan_close(ch);
		ub_bdev_put(dev);
	}
	free(buf);
}

/* More misaligned requests in flight than the bounce pool has chunks (64):
 * the rest get heap bounce buffers, and everything round-trips. */
static void test_bounce_pool_exhaustion_still_round_trips(void **state)
{
	enum { N = 128, LEN = 8192 };
	unsigned char *w = malloc(N * LEN + 1), *r = malloc(N * LEN + 1);
	struct iovec iov[N];
	struct ub_bdev_cqe c[N];
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;
	int pass, i;

	assert_non_null(w);
	assert_non_null(r);
	fill_pattern(w + 1, N * LEN, 9);
	memset(r, 0, N * LEN + 1);
	make_file(tpath("pool"), 2 * N * LEN, 0);
	dev = open_dev(g_engine, tpath("pool"), false, true, N);
	ch = open_chan(dev);
	for (pass = 0; pass < 2; pass++) {
		unsigned char *base = pass ? r + 1 : w + 1;

		for (i = 0; i < N; i++) {
			struct ub_bdev_req q = {
			    .op = pass ? UB_BDEV_READ : UB_BDEV_WRITE,
			    .sector = (uint64_t)i * LEN / SECT,
			    .count = LEN / SECT,
			    .iov = &iov[i],
			    .iovcnt = 1,
			    .id = (uint64_t)i};

			iov[i].iov_base = base + (size_t)i * LEN;
			iov[i].iov_len = LEN;
			assert_int_equal(ub_bdev_chan_queue(ch, &q), 0);
		}
		assert_int_equal(ub_bdev_chan_submit(ch), 0);
		assert_int_equal(collect(ch, c, N), N);
		for (i = 0; i < N; i++)
			assert_int_equal(c[i].res, 0);
	}
	assert_memory_equal(w + 1, r + 1, N * LEN);
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	free(w);
	free(r);
}

/* Submit and poll with nothing to do are no-ops; requests queued and not
 * yet submitted are in flight (busy) and complete after submit. */
static void test_submit_and_poll_without_work_are_no_ops(void **state)
{
	struct ub_bdev_cqe c[4];
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;
	struct ub_bdev_req f = {.op = UB_BDEV_FLUSH, .id = 3};

	make_file(tpath("idle"), SECT, 0);
	dev = open_dev(g_engine, tpath("idle"), false, false, 4);
	ch = open_chan(dev);
	assert_int_equal(ub_bdev_chan_submit(ch), 0);
	assert_int_equal(ub_bdev_chan_poll(ch, c, 4), 0);
	assert_int_equal(ub_bdev_chan_queue(ch, &f), 0);
	usleep(1000);
	assert_int_equal(ub_bdev_chan_poll(ch, c, 4), 0);
	assert_true(ub_bdev_chan_busy(ch));
	assert_int_equal(ub_bdev_chan_submit(ch), 0);
	assert_int_equal(collect(ch, c, 1), 1);
	assert_int_equal(c[0].id, 3);
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    ENGINE_TESTS,
	    cmocka_unit_test(test_event_fd_signals_completions),
	    cmocka_unit_test(test_bounce_pool_exhaustion_still_round_trips),
	    cmocka_unit_test(test_submit_and_poll_without_work_are_no_ops),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
