/* The null device (criteria 27-29), the wait helper (criteria 1-3) and the
 * common block-device code: request checks, reference counting, channel
 * close draining, aligned buffers. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bdev/bdev.h"
#include "bdev/null.h"

static struct ub_bdev *null_dev(uint64_t sectors)
{
	struct ub_bdev *dev = NULL;
	struct ub_err err = {{0}};

	assert_int_equal(ub_null_bdev_create(sectors, &dev, &err), 0);
	assert_non_null(dev);
	return dev;
}

static struct ub_bdev_chan *chan(struct ub_bdev *dev)
{
	struct ub_bdev_chan *ch = NULL;
	struct ub_err err = {{0}};

	assert_int_equal(ub_bdev_open_chan(dev, &ch, &err), 0);
	assert_non_null(ch);
	return ch;
}

/* Criterion 27: a null device created with 0 sectors has capacity 0; it
 * refuses reads (out of range) but flushes. */
static void test_zero_sector_null_device_only_flushes(void **state)
{
	struct ub_bdev *dev = null_dev(0);
	struct ub_bdev_chan *ch = chan(dev);
	unsigned char buf[512];
	struct ub_err err = {{0}};

	assert_int_equal(dev->sectors, 0);
	assert_int_equal(ub_bdev_read_sync(ch, 0, 1, buf, 1000, &err), -EINVAL);
	assert_int_equal(ub_bdev_flush_sync(ch, 1000, &err), 0);
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
}

/* Criterion 28: a read of 2 sectors into a 1024-byte buffer zero-fills it;
 * write and flush succeed; busy before and after submit, idle after
 * poll. */
static void test_null_reads_zeros_and_everything_succeeds(void **state)
{
	struct ub_bdev *dev = null_dev(16);
	struct ub_bdev_chan *ch = chan(dev);
	unsigned char buf[1024], wbuf[1024];
	struct iovec riov = {buf, sizeof(buf)}, wiov = {wbuf, sizeof(wbuf)};
	struct ub_bdev_req r = {
	    .op = UB_BDEV_READ, .count = 2, .iov = &riov, .iovcnt = 1, .id = 1};
	struct ub_bdev_req w = {.op = UB_BDEV_WRITE,
				.sector = 4,
				.count = 2,
				.iov = &wiov,
				.iovcnt = 1,
				.id = 2};
	struct ub_bdev_req f = {.op = UB_BDEV_FLUSH, .id = 3};
	struct ub_bdev_req z = {
	    .op = UB_BDEV_WRITE_ZEROES, .sector = 8, .count = 8, .id = 4};
	struct ub_bdev_cqe c[8];

	memset(buf, 0xFF, sizeof(buf));
	memset(wbuf, 0x11, sizeof(wbuf));
	assert_false(ub_bdev_chan_busy(ch));
	assert_int_equal(ub_bdev_chan_queue(ch, &r), 0);
	assert_int_equal(ub_bdev_chan_queue(ch, &w), 0);
	assert_int_equal(ub_bdev_chan_queue(ch, &f), 0);
	assert_int_equal(ub_bdev_chan_queue(ch, &z), 0);
	assert_true(ub_bdev_chan_busy(ch));
	assert_int_equal(ub_bdev_chan_submit(ch), 0);
	assert_true(ub_bdev_chan_busy(ch));
	assert_int_equal(ub_bdev_chan_event_fd(ch), -1);
	assert_int_equal(ub_bdev_chan_poll(ch, c, 8), 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(c[i].id, (uint64_t)i + 1);
		assert_int_equal(c[i].res, 0);
	}
	assert_false(ub_bdev_chan_busy(ch));
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 0);
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
}

/* Criterion 29: a clone keeps the capacity (5000). */
static void test_null_clone_preserves_capacity(void **state)
{
	struct ub_bdev *dev = null_dev(5000);
	struct ub_bdev *clone = ub_bdev_get(dev);
	struct ub_bdev_chan *ch;

	assert_int_equal(clone->sectors, 5000);
	ub_bdev_put(dev);
	/* The clone still works after the original reference is gone. */
	ch = chan(clone);
	ub_bdev_chan_close(ch);
	ub_bdev_put(clone);
}

/* A full null channel refuses with -EAGAIN; poll returns at most max and
 * keeps the rest, in order. */
static void test_null_full_channel_refuses_with_eagain(void **state)
{
	struct ub_bdev *dev = null_dev(1);
	struct ub_bdev_chan *ch = chan(dev);
	struct ub_bdev_req f = {.op = UB_BDEV_FLUSH};
	struct ub_bdev_cqe c[4];
	uint32_t i;

	for (i = 0; i < ch->depth; i++) {
		f.id = i;
		assert_int_equal(ub_bdev_chan_queue(ch, &f), 0);
	}
	assert_int_equal(ub_bdev_chan_queue(ch, &f), -EAGAIN);
	assert_int_equal(ub_bdev_chan_poll(ch, c, 3), 3);
	assert_int_equal(c[2].id, 2);
	assert_int_equal(ub_bdev_chan_queue(ch, &f), 0);
	assert_int_equal(ub_bdev_chan_poll(ch, c, 1), 1);
	assert_int_equal(c[0].id, 3);
	ub_bdev_chan_close(ch); /* drains the rest */
	ub_bdev_put(dev);
}

/* A scripted device: every request completes with fake_res after
 * fake_polls empty polls; counts closes and destroys. */
static int fake_res;
static unsigned fake_polls;
static int fake_destroyed, fake_closed, fake_closed_busy;

struct fake_chan {
	struct ub_bdev_chan base;
	uint64_t ids[8];
	unsigned n, wait;
};

static int fake_queue(struct ub_bdev_chan *ch, const struct ub_bdev_req *req)
{
	struct fake_chan *f = (struct fake_chan *)ch;

	if (f->n == 8)
		return -EAGAIN;
	f->ids[f->n++] = req->id;
	f->wait = fake_polls;
	ch->inflight++;
	return 0;
}

static int fake_submit(struct ub_bdev_chan *ch)
{
	return 0;
}

static unsigned fake_poll(struct ub_bdev_chan *ch, struct ub_bdev_cqe *out,
			  unsigned max)
{
	struct fake_chan *f = (struct fake_chan *)ch;
	unsigned n = 0;

	if (f->wait && fake_polls) {
		f->wait--;
		return 0;
	}
	while (n < max && n < f->n) {
		out[n].id = f->ids[n];
		out[n].res = fake_res;
		n++;
	}
	memmove(f->ids, f->ids + n, (f->n - n) * sizeof(f->ids[0]));
	f->n -= n;
	ch->inflight -= n;
	return n;
}

static void fake_close(struct ub_bdev_chan *ch)
{
	fake_closed++;
	if (ch->inflight)
		fake_closed_busy++;
	free(ch);
}

static const struct ub_bdev_chan_ops fake_chan_ops = {
    .queue = fake_queue,
    .submit = fake_submit,
    .poll = fake_poll,
    .close = fake_close,
};

static int fake_open_chan(struct ub_bdev *dev, struct ub_bdev_chan **out,
			  struct ub_err *err)
{
	struct fake_chan *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->base.ops = &fake_chan_ops;
	f->base.depth = 8;
	f->base.dev = ub_bdev_get(dev);
	*out = &f->base;
	return 0;
}

static void fake_destroy(struct ub_bdev *dev)
{
	fake_destroyed++;
}

static const struct ub_bdev_ops fake_ops = {
    .open_chan = fake_open_chan,
    .destroy = fake_destroy,
};

static int fake_setup(void **state)
{
	fake_res = 0;
	fake_polls = 0;
	fake_destroyed = fake_closed = fake_closed_busy = 0;
	return 0;
}

/* Criterion 1: the wait helper returns success when the awaited id
 * completes together with another id in the same poll. */
static void test_wait_helper_ignores_other_ids(void **state)
{
	struct ub_bdev *dev = null_dev(8);
	struct ub_bdev_chan *ch = chan(dev);
	struct ub_bdev_req other = {.op = UB_BDEV_FLUSH, .id = 5};
	struct ub_bdev_req mine = {.op = UB_BDEV_FLUSH, .id = 6};
	struct ub_err err = {{0}};

	assert_int_equal(ub_bdev_chan_queue(ch, &other), 0);
	assert_int_equal(ub_bdev_run_sync(ch, &mine, 1000, &err), 0);
	assert_false(ub_bdev_chan_busy(ch));
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
}

/* Criterion 2: a failed completion becomes the request's errno with
 * "Failed request ID: 7". */
static void test_wait_helper_reports_the_failed_request(void **state)
{
	struct ub_bdev dev;
	struct ub_bdev_chan *ch;
	struct ub_bdev_req req = {.op = UB_BDEV_FLUSH, .id = 7};
	struct ub_err err = {{0}};

	ub_bdev_init(&dev, &fake_ops, 8, 0, "fake");
	ch = chan(&dev);
	fake_res = -EIO;
	assert_int_equal(ub_bdev_run_sync(ch, &req, 1000, &err), -EIO);
	assert_string_equal(err.msg,
			    "Failed request ID: 7: Input/output error");
	ub_bdev_chan_close(ch);
	ub_bdev_put(&dev);
	assert_int_equal(fake_destroyed, 1);
}

/* Criterion 3: the wait helper times out with -ETIMEDOUT and "Timeout
 * while waiting for request ID 1" after the given time. */
static void test_wait_helper_times_out(void **state)
{
	struct ub_bdev dev;
	struct ub_bdev_chan *ch;
	struct ub_bdev_req req = {.op = UB_BDEV_FLUSH, .id = 1};
	struct ub_err err = {{0}};
	struct timespec a, b;
	long ms;

	ub_bdev_init(&dev, &fake_ops, 8, 0, "fake");
	ch = chan(&dev);
	fake_polls = 1000000;
	clock_gettime(CLOCK_MONOTONIC, &a);
	assert_int_equal(ub_bdev_run_sync(ch, &req, 50, &err), -ETIMEDOUT);
	clock_gettime(CLOCK_MONOTONIC, &b);
	ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	assert_true(ms >= 49);
	assert_true(ms < 2000);
	assert_string_equal(err.msg, "Timeout while waiting for request ID 1");
	/* Closing waits for the request still in flight. */
	fake_polls = 0;
	ub_bdev_chan_close(ch);
	assert_int_equal(fake_closed, 1);
	assert_int_equal(fake_closed_busy, 0);
	ub_bdev_put(&dev);
}

/* ub_bdev_chan_close drains in-flight requests before ops->close, then
 * drops the channel's device reference (the last one destroys it). */
static void test_close_drains_then_closes_then_puts(void **state)
{
	struct ub_bdev dev;
	struct ub_bdev_chan *ch;
	struct ub_bdev_req req = {.op = UB_BDEV_FLUSH};

	ub_bdev_init(&dev, &fake_ops, 8, 0, "fake");
	ch = chan(&dev);
	fake_polls = 20;
	for (int i = 0; i < 3; i++) {
		req.id = (uint64_t)i;
		assert_int_equal(ub_bdev_chan_queue(ch, &req), 0);
	}
	ub_bdev_put(&dev); /* the channel holds the last reference */
	assert_int_equal(fake_destroyed, 0);
	ub_bdev_chan_close(ch);
	assert_int_equal(fake_closed, 1);
	assert_int_equal(fake_closed_busy, 0);
	assert_int_equal(fake_destroyed, 1);
	ub_bdev_chan_close(NULL);
	ub_bdev_put(NULL);
}

/* ub_bdev_req_check: op, range, overflow, iovec total, flags. */
static void test_request_check_rules(void **state)
{
	unsigned char buf[1024];
	struct iovec iov[2] = {{buf, 512}, {buf + 512, 512}};
	struct ub_bdev dev;
	struct ub_bdev_req r = {.op = UB_BDEV_READ,
				.sector = 6,
				.count = 2,
				.iov = iov,
				.iovcnt = 2};

	ub_bdev_init(&dev, &fake_ops, 8, 0,
		     "a very long name that does not "
		     "fit in the sixty-four bytes of "
		     "the name field");
	assert_int_equal(strlen(dev.name), sizeof(dev.name) - 1);
	assert_int_equal(ub_bdev_req_check(&dev, &r), 0);
	r.sector = 7;
	assert_int_equal(ub_bdev_req_check(&dev, &r), -EINVAL);
	r.sector = UINT64_MAX - 1;
	assert_int_equal(ub_bdev_req_check(&dev, &r), -EINVAL);
	r.sector = 0;
	r.count = 3;
	assert_int_equal(ub_bdev_req_check(&dev, &r), -EINVAL);
	r.count = 2;
	r.iovcnt = 1;
	assert_int_equal(ub_bdev_req_check(&dev, &r), -EINVAL);
	r.iovcnt = 0;
	assert_int_equal(ub_bdev_req_check(&dev, &r), -EINVAL);
	r.iovcnt = 2;
	r.count = 0;
	assert_int_equal(ub_bdev_req_check(&dev, &r), -EINVAL);
	r.count = 2;
	r.op = UB_BDEV_WRITE;
	assert_int_equal(ub_bdev_req_check(&dev, &r), 0);
	r.op = UB_BDEV_DISCARD;
	assert_int_equal(ub_bdev_req_check(&dev, &r), -EOPNOTSUPP);
	r.op = UB_BDEV_WRITE_ZEROES;
	assert_int_equal(ub_bdev_req_check(&dev, &r), -EOPNOTSUPP);
	dev.flags = UB_BDEV_F_DISCARD | UB_BDEV_F_WRITE_ZEROES;
	r.iov = NULL;
	r.iovcnt = 0;
	assert_int_equal(ub_bdev_req_check(&dev, &r), 0);
	r.sector = 8;
	assert_int_equal(ub_bdev_req_check(&dev, &r), -EINVAL);
	dev.flags |= UB_BDEV_F_READONLY;
	assert_int_equal(ub_bdev_req_check(&dev, &r), -EROFS);
	r.op = UB_BDEV_FLUSH;
	assert_int_equal(ub_bdev_req_check(&dev, &r), 0);
	r.op = (enum ub_bdev_op)42;
	assert_int_equal(ub_bdev_req_check(&dev, &r), -EINVAL);
}

/* ub_bdev_buf_alloc: UB_BUF_ALIGN-aligned and zeroed, any length. */
static void test_buffers_are_aligned_and_zeroed(void **state)
{
	static const size_t lens[] = {0, 1, 512, 4096, 5000, 1 << 20};

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		unsigned char *p = ub_bdev_buf_alloc(lens[i]); /* heap */

		assert_non_null(p);
		assert_int_equal((uintptr_t)p % UB_BUF_ALIGN, 0);
		for (size_t j = 0; j < lens[i]; j++)
			assert_int_equal(p[j], 0);
		free(p);
	}
	assert_null(ub_bdev_buf_alloc(SIZE_MAX - 10));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_zero_sector_null_device_only_flushes),
	    cmocka_unit_test(test_null_reads_zeros_and_everything_succeeds),
	    cmocka_unit_test(test_null_clone_preserves_capacity),
	    cmocka_unit_test(test_null_full_channel_refuses_with_eagain),
	    cmocka_unit_test_setup(test_wait_helper_ignores_other_ids,
				   fake_setup),
	    cmocka_unit_test_setup(test_wait_helper_reports_the_failed_request,
				   fake_setup),
	    cmocka_unit_test_setup(test_wait_helper_times_out, fake_setup),
	    cmocka_unit_test_setup(test_close_drains_then_closes_then_puts,
				   fake_setup),
	    cmocka_unit_test(test_request_check_rules),
	    cmocka_unit_test(test_buffers_are_aligned_and_zeroed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
