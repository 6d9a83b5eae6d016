/* The synchronous file engine (pread/pwrite): criteria 4-14 of storage.md
 * §11 through the shared engine tests, plus what is particular to it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "bdev/file.h"

static const enum ub_io_engine g_engine = UB_IO_ENGINE_SYNC;

#include "bdev_engine_tests.h"

/* §3.1: requests complete inside queue and poll reports them in queue
 * order, at most max at a time, keeping the rest. */
static void test_completions_come_in_queue_order(void **state)
{
	unsigned char *buf = ub_bdev_buf_alloc(8 * SECT); /* heap */
	struct ub_bdev_cqe c[8];
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;
	unsigned n;

	make_file(tpath("order"), 8 * SECT, 0);
	dev = open_dev(g_engine, tpath("order"), false, false, 8);
	ch = open_chan(dev);
	assert_int_equal(ub_bdev_chan_event_fd(ch), -1);
	for (int i = 0; i < 6; i++) {
		struct iovec iov = {buf + i * SECT, SECT};
		struct ub_bdev_req r = {.op = i % 2 ? UB_BDEV_READ
						    : UB_BDEV_WRITE,
					.sector = (uint64_t)i,
					.count = 1,
					.iov = &iov,
					.iovcnt = 1,
					.id = 100 + (uint64_t)i};

		assert_int_equal(ub_bdev_chan_queue(ch, &r), 0);
	}
	assert_int_equal(ub_bdev_chan_submit(ch), 0);
	assert_int_equal(ub_bdev_chan_poll(ch, c, 4), 4);
	n = ub_bdev_chan_poll(ch, c + 4, 4);
	assert_int_equal(n, 2);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(c[i].id, 100 + (uint64_t)i);
		assert_int_equal(c[i].res, 0);
	}
	assert_false(ub_bdev_chan_busy(ch));
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    ENGINE_TESTS,
	    cmocka_unit_test(test_completions_come_in_queue_order),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
