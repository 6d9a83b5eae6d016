/* Behaviours every file engine shares, run by test_bdev_sync.c and
 * test_bdev_uring.c. The includer defines `static const enum ub_io_engine
 * g_engine` first. Criterion numbers refer to storage.md §11 (sync /
 * io_uring numbering), adapted to bdev.h: a request the device cannot take
 * is refused by queue with a negative errno, and a completion carries an
 * errno instead of ok/false. */
#ifndef UB_TESTS_BDEV_ENGINE_TESTS_H
#define UB_TESTS_BDEV_ENGINE_TESTS_H

#include "bdev_test_util.h"

#include <sys/uio.h>

#define SECT UB_SECTOR_SIZE

/* Criteria 4, 15: 512 x 0xAB written at sector 0 read back unchanged. */
static void test_write_then_read_round_trips(void **state)
{
	unsigned char *buf = ub_bdev_buf_alloc(SECT); /* heap */
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;

	make_file(tpath("rt"), 4 * SECT, 0);
	dev = open_dev(g_engine, tpath("rt"), false, false, 8);
	ch = open_chan(dev);
	memset(buf, 0xAB, SECT);
	assert_int_equal(run1(ch, UB_BDEV_WRITE, 0, 1, buf, 1), 0);
	memset(buf, 0, SECT);
	assert_int_equal(run1(ch, UB_BDEV_READ, 0, 1, buf, 2), 0);
	for (size_t i = 0; i < SECT; i++)
		assert_int_equal(buf[i], 0xAB);
	assert_false(ub_bdev_chan_busy(ch));
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	free(buf);
}

/* Criteria 5, 8, 16: a read-only device reads, and refuses writes,
 * discards and write-zeroes with -EROFS at queue (no completion). */
static void test_readonly_device_reads_and_refuses_writes(void **state)
{
	unsigned char buf[SECT];
	struct iovec iov = {.iov_base = buf, .iov_len = SECT};
	struct ub_bdev_req w = {
	    .op = UB_BDEV_WRITE, .count = 1, .iov = &iov, .iovcnt = 1, .id = 1};
	struct ub_bdev_req d = {.op = UB_BDEV_DISCARD, .count = 1, .id = 2};
	struct ub_bdev_req z = {.op = UB_BDEV_WRITE_ZEROES, .count = 1};
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;

	make_file(tpath("ro"), SECT, 0x5A);
	dev = open_dev(g_engine, tpath("ro"), true, false, 8);
	assert_true(dev->flags & UB_BDEV_F_READONLY);
	ch = open_chan(dev);
	assert_int_equal(run1(ch, UB_BDEV_READ, 0, 1, buf, 1), 0);
	assert_int_equal(buf[0], 0x5A);
	assert_int_equal(ub_bdev_chan_queue(ch, &w), -EROFS);
	assert_int_equal(ub_bdev_chan_queue(ch, &d), -EROFS);
	assert_int_equal(ub_bdev_chan_queue(ch, &z), -EROFS);
	assert_false(ub_bdev_chan_busy(ch));
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
}

/* Criteria 6, 11, 18, 26: a missing path fails with an I/O error. */
static void test_missing_path_fails_with_enoent(void **state)
{
	struct ub_file_bdev_opts o = {.path = tpath("does-not-exist"),
				      .queue_depth = 8};
	struct ub_bdev *dev = NULL;
	struct ub_err err = {{0}};

	assert_int_equal(ub_file_bdev_open(g_engine, &o, &dev, &err), -ENOENT);
	assert_null(dev);
	assert_non_null(strstr(err.msg, "Failed to open file"));
	assert_non_null(strstr(err.msg, "No such file or directory"));
}

/* Criterion 6 (channel side): the file vanishing after construction makes
 * channel creation fail. */
static void test_channel_open_fails_when_file_vanished(void **state)
{
	struct ub_bdev_chan *ch = NULL;
	struct ub_err err = {{0}};
	struct ub_bdev *dev;

	make_file(tpath("vanish"), SECT, 0);
	dev = open_dev(g_engine, tpath("vanish"), false, false, 8);
	unlink(tpath("vanish"));
	assert_int_equal(ub_bdev_open_chan(dev, &ch, &err), -ENOENT);
	assert_null(ch);
	assert_non_null(strstr(err.msg, "Failed to open file"));
	ub_bdev_put(dev);
}

/* Criteria 7, 17: files of 1 and 513 bytes are refused. */
static void test_size_not_multiple_of_sector_is_refused(void **state)
{
	static const size_t sizes[] = {1, 513};
	struct ub_file_bdev_opts o = {.queue_depth = 8};
	struct ub_bdev *dev = NULL;
	struct ub_err err = {{0}};

	for (size_t i = 0; i < 2; i++) {
		make_file(tpath("odd"), sizes[i], 0);
		o.path = tpath("odd");
		assert_int_equal(ub_file_bdev_open(g_engine, &o, &dev, &err),
				 -EINVAL);
		assert_null(dev);
		assert_non_null(strstr(err.msg, "File size is not a multiple "
						"of sector size"));
	}
}

/* Criteria 11, 14, 29-like: capacity is the size in sectors; a clone
 * reports the same. */
static void test_capacity_is_file_size_in_sectors(void **state)
{
	struct ub_bdev *dev, *clone;

	make_file(tpath("cap"), 1024, 0);
	dev = open_dev(g_engine, tpath("cap"), false, false, 8);
	assert_int_equal(dev->sectors, 2);
	clone = ub_bdev_get(dev);
	assert_int_equal(clone->sectors, 2);
	ub_bdev_put(clone);
	ub_bdev_put(dev);
}

/* Criterion 8: requests outside the capacity (or empty, or with the wrong
 * byte count) are refused with -EINVAL and produce no completion. */
static void test_bad_requests_are_refused_at_queue(void **state)
{
	unsigned char buf[2 * SECT];
	struct iovec iov = {.iov_base = buf, .iov_len = SECT};
	struct ub_bdev_req r = {.op = UB_BDEV_READ,
				.sector = 1,
				.count = 1,
				.iov = &iov,
				.iovcnt = 1};
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;

	make_file(tpath("one"), SECT, 0);
	dev = open_dev(g_engine, tpath("one"), false, false, 8);
	ch = open_chan(dev);
	assert_int_equal(ub_bdev_chan_queue(ch, &r), -EINVAL);
	r.sector = UINT64_MAX;
	assert_int_equal(ub_bdev_chan_queue(ch, &r), -EINVAL);
	r.sector = 0;
	r.count = 0;
	iov.iov_len = 0;
	assert_int_equal(ub_bdev_chan_queue(ch, &r), -EINVAL);
	r.count = 1;
	iov.iov_len = 2 * SECT;
	assert_int_equal(ub_bdev_chan_queue(ch, &r), -EINVAL);
	r.op = (enum ub_bdev_op)99;
	iov.iov_len = SECT;
	assert_int_equal(ub_bdev_chan_queue(ch, &r), -EINVAL);
	assert_false(ub_bdev_chan_busy(ch));
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
}

/* Criterion 8 / §13: a read reaching end of file before its full length
 * (the file shrank after construction) is -EIO, including a read that
 * starts before the end (short read, retried, then EOF). */
static void test_read_past_end_of_file_is_eio(void **state)
{
	unsigned char *buf = ub_bdev_buf_alloc(4 * SECT); /* heap */
	struct iovec v[2] = {{buf, 2 * SECT}, {buf + 2 * SECT, 2 * SECT}};
	struct ub_bdev_req r = {.op = UB_BDEV_READ,
				.sector = 1,
				.count = 4,
				.iov = v,
				.iovcnt = 2,
				.id = 4};
	struct ub_err err = {{0}};
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;

	make_file(tpath("shrink"), 8 * SECT, 1);
	dev = open_dev(g_engine, tpath("shrink"), false, false, 8);
	ch = open_chan(dev);
	assert_int_equal(truncate(tpath("shrink"), 4 * SECT), 0);
	assert_int_equal(run1(ch, UB_BDEV_READ, 4, 1, buf, 1), -EIO);
	assert_int_equal(run1(ch, UB_BDEV_READ, 2, 4, buf, 2), -EIO);
	assert_int_equal(run1(ch, UB_BDEV_READ, 0, 4, buf, 3), 0);
	/* Vectored: the short read ends inside the second iovec. */
	assert_int_equal(ub_bdev_run_sync(ch, &r, T_TIMEOUT_MS, &err), -EIO);
	assert_non_null(strstr(err.msg, "Failed request ID: 4"));
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	free(buf);
}

/* Criterion 9, adapted: a FIFO or a character device is not a device. */
static void test_fifo_and_char_device_are_refused(void **state)
{
	struct ub_file_bdev_opts o = {.path = tpath("fifo"), .queue_depth = 8};
	struct ub_bdev *dev = NULL;
	struct ub_err err = {{0}};

	assert_int_equal(mkfifo(tpath("fifo"), 0600), 0);
	assert_int_equal(ub_file_bdev_open(g_engine, &o, &dev, &err), -EINVAL);
	assert_non_null(
	    strstr(err.msg, "is not a regular file or a block device"));
	o.path = "/dev/zero";
	assert_int_equal(ub_file_bdev_open(g_engine, &o, &dev, &err), -EINVAL);
	assert_null(dev);
	unlink(tpath("fifo"));
}

/* Criterion 10: a fresh channel is idle; a flush on a file succeeds. */
static void test_fresh_channel_is_idle_and_flush_succeeds(void **state)
{
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;
	struct ub_err err = {{0}};

	make_file(tpath("fl"), SECT, 0);
	dev = open_dev(g_engine, tpath("fl"), false, false, 8);
	ch = open_chan(dev);
	assert_false(ub_bdev_chan_busy(ch));
	assert_int_equal(ub_bdev_flush_sync(ch, T_TIMEOUT_MS, &err), 0);
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
}

/* Criterion 10: fsync fails on /dev/full (a character device, admitted
 * through the test-only flag); the flush carries the errno. */
static void test_flush_on_dev_full_fails(void **state)
{
	struct ub_file_bdev_opts o = {.path = "/dev/full", .queue_depth = 8};
	struct ub_bdev *dev = NULL;
	struct ub_bdev_chan *ch;
	struct ub_err err = {{0}};
	int rc;

	if (access("/dev/full", R_OK | W_OK) < 0) {
		skip();
		return;
	}
	assert_int_equal(ub_file_bdev_open_flags(
			     g_engine, &o, UB_FILE_ALLOW_CHAR, &dev, &err),
			 0);
	assert_int_equal(dev->sectors, 0);
	ch = open_chan(dev);
	rc = ub_bdev_flush_sync(ch, T_TIMEOUT_MS, &err);
	assert_true(rc < 0);
	assert_non_null(strstr(err.msg, "Failed request ID: 0"));
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
}

/* Criteria 12, 24: O_DIRECT round trip of 512 x 0xAC (ext4 accepts
 * O_DIRECT, so the device really is direct). */
static void test_direct_io_round_trips(void **state)
{
	unsigned char *buf = ub_bdev_buf_alloc(SECT); /* heap */
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;

	make_file(tpath("direct"), 8 * SECT, 0);
	dev = open_dev(g_engine, tpath("direct"), false, true, 8);
	assert_true(ub_file_dev(dev)->direct);
	ch = open_chan(dev);
	memset(buf, 0xAC, SECT);
	assert_int_equal(run1(ch, UB_BDEV_WRITE, 3, 1, buf, 1), 0);
	memset(buf, 0, SECT);
	assert_int_equal(run1(ch, UB_BDEV_READ, 3, 1, buf, 2), 0);
	for (size_t i = 0; i < SECT; i++)
		assert_int_equal(buf[i], 0xAC);
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	free(buf);
}

/* Criteria 13, 21: with write_through, writes are durable on completion,
 * the flush completes as a no-op success; it keeps the channel busy from
 * queue until it is polled. */
static void test_write_through_flush_succeeds(void **state)
{
	struct ub_file_bdev_opts o = {
	    .path = tpath("wt"), .write_through = true, .queue_depth = 8};
	unsigned char *buf = ub_bdev_buf_alloc(SECT); /* heap */
	struct ub_bdev_req f = {.op = UB_BDEV_FLUSH, .id = 1};
	struct ub_bdev_cqe c;
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;

	make_file(tpath("wt"), 4 * SECT, 0);
	dev = open_dev_opts(g_engine, &o);
	assert_true(dev->flags & UB_BDEV_F_WRITE_THROUGH);
	assert_true(ub_file_dev(dev)->open_flags & O_DSYNC);
	ch = open_chan(dev);
	memset(buf, 0x33, SECT);
	assert_int_equal(run1(ch, UB_BDEV_WRITE, 1, 1, buf, 9), 0);
	assert_int_equal(ub_bdev_chan_queue(ch, &f), 0);
	assert_true(ub_bdev_chan_busy(ch));
	assert_int_equal(ub_bdev_chan_submit(ch), 0);
	assert_int_equal(collect(ch, &c, 1), 1);
	assert_int_equal(c.id, 1);
	assert_int_equal(c.res, 0);
	assert_false(ub_bdev_chan_busy(ch));
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	free(buf);
}

/* Criteria 14, 25: data written and flushed through a clone's channel is
 * read back through a channel of the original. */
static void test_clone_shares_the_target(void **state)
{
	unsigned char *buf = ub_bdev_buf_alloc(SECT); /* heap */
	struct ub_bdev *dev, *clone;
	struct ub_bdev_chan *a, *b;
	struct ub_err err = {{0}};

	make_file(tpath("clone"), 16 * SECT, 0);
	dev = open_dev(g_engine, tpath("clone"), false, true, 8);
	clone = ub_bdev_get(dev);
	assert_int_equal(clone->sectors, dev->sectors);
	b = open_chan(clone);
	a = open_chan(dev);
	memset(buf, 0x42, SECT);
	assert_int_equal(ub_bdev_write_sync(b, 7, 1, buf, T_TIMEOUT_MS, &err),
			 0);
	assert_int_equal(ub_bdev_flush_sync(b, T_TIMEOUT_MS, &err), 0);
	memset(buf, 0, SECT);
	assert_int_equal(ub_bdev_read_sync(a, 7, 1, buf, T_TIMEOUT_MS, &err),
			 0);
	assert_int_equal(buf[0], 0x42);
	assert_int_equal(buf[SECT - 1], 0x42);
	ub_bdev_put(clone);
	ub_bdev_chan_close(b);
	ub_bdev_chan_close(a);
	ub_bdev_put(dev);
	free(buf);
}

/* Criteria 19, 26: the queue depth is a power of two, 1..32768. */
static void test_queue_depth_must_be_a_power_of_two(void **state)
{
	static const uint32_t bad[] = {0, 3, 65536};
	struct ub_file_bdev_opts o = {.path = tpath("qd")};
	struct ub_bdev *dev = NULL;
	struct ub_err err = {{0}};

	make_file(tpath("qd"), SECT, 0);
	for (size_t i = 0; i < 3; i++) {
		o.queue_depth = bad[i];
		assert_int_equal(ub_file_bdev_open(g_engine, &o, &dev, &err),
				 -EINVAL);
		assert_null(dev);
	}
	o.queue_depth = 3;
	ub_file_bdev_open(g_engine, &o, &dev, &err);
	assert_non_null(
	    strstr(err.msg, "queue_size must be a positive power of two"));
	o.queue_depth = 65536;
	ub_file_bdev_open(g_engine, &o, &dev, &err);
	assert_non_null(strstr(err.msg, "Invalid io_uring queue size"));
	o.queue_depth = 1;
	assert_int_equal(ub_file_bdev_open(g_engine, &o, &dev, &err), 0);
	ub_bdev_put(dev);
}

/* Criterion 20: after a write and a flush are queued, the channel is busy
 * before and after submit, both complete, then it is idle. */
static void test_busy_until_every_completion_is_polled(void **state)
{
	unsigned char *buf = ub_bdev_buf_alloc(SECT); /* heap */
	struct iovec iov = {.iov_base = buf, .iov_len = SECT};
	struct ub_bdev_req w = {
	    .op = UB_BDEV_WRITE, .count = 1, .iov = &iov, .iovcnt = 1, .id = 1};
	struct ub_bdev_req f = {.op = UB_BDEV_FLUSH, .id = 2};
	struct ub_bdev_cqe c[2];
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;

	make_file(tpath("busy"), SECT, 0);
	dev = open_dev(g_engine, tpath("busy"), false, false, 8);
	ch = open_chan(dev);
	assert_int_equal(ub_bdev_chan_queue(ch, &w), 0);
	assert_int_equal(ub_bdev_chan_queue(ch, &f), 0);
	assert_true(ub_bdev_chan_busy(ch));
	assert_int_equal(ub_bdev_chan_submit(ch), 0);
	assert_true(ub_bdev_chan_busy(ch));
	assert_int_equal(collect(ch, c, 2), 2);
	assert_true((c[0].id == 1 && c[1].id == 2) ||
		    (c[0].id == 2 && c[1].id == 1));
	assert_int_equal(c[0].res, 0);
	assert_int_equal(c[1].res, 0);
	assert_false(ub_bdev_chan_busy(ch));
	assert_int_equal(ub_bdev_chan_poll(ch, c, 2), 0);
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	free(buf);
}

/* Criterion 22: with queue depth 1 the second request (queued before the
 * first completes) is refused with -EAGAIN, buffered and direct; once the
 * first is polled, the channel accepts again. */
static void test_full_queue_refuses_with_eagain(void **state)
{
	unsigned char *buf = ub_bdev_buf_alloc(SECT); /* heap */
	struct iovec iov = {.iov_base = buf, .iov_len = SECT};
	struct ub_bdev_req w = {
	    .op = UB_BDEV_WRITE, .count = 1, .iov = &iov, .iovcnt = 1, .id = 1};
	struct ub_bdev_req f = {.op = UB_BDEV_FLUSH, .id = 3};
	struct ub_bdev_cqe c;
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;

	make_file(tpath("full"), SECT, 0);
	for (int direct = 0; direct < 2; direct++) {
		dev = open_dev(g_engine, tpath("full"), false, direct, 1);
		ch = open_chan(dev);
		assert_int_equal(ch->depth, 1);
		w.id = 1;
		assert_int_equal(ub_bdev_chan_queue(ch, &w), 0);
		w.id = 2;
		assert_int_equal(ub_bdev_chan_queue(ch, &w), -EAGAIN);
		assert_int_equal(ub_bdev_chan_queue(ch, &f), -EAGAIN);
		assert_int_equal(ub_bdev_chan_submit(ch), 0);
		assert_int_equal(collect(ch, &c, 1), 1);
		assert_int_equal(c.id, 1);
		assert_int_equal(c.res, 0);
		assert_int_equal(ub_bdev_chan_queue(ch, &w), 0);
		assert_int_equal(ub_bdev_chan_submit(ch), 0);
		assert_int_equal(collect(ch, &c, 1), 1);
		assert_int_equal(c.id, 2);
		ub_bdev_chan_close(ch);
		ub_bdev_put(dev);
	}
	free(buf);
}

/* Criterion 23: a failed request keeps the channel busy until it is
 * polled; the failure is reported once with its errno. */
static void test_failed_request_is_busy_until_polled(void **state)
{
	unsigned char *buf = ub_bdev_buf_alloc(SECT); /* heap */
	struct iovec iov = {.iov_base = buf, .iov_len = SECT};
	struct ub_bdev_req r = {.op = UB_BDEV_READ,
				.sector = 3,
				.count = 1,
				.iov = &iov,
				.iovcnt = 1,
				.id = 5};
	struct ub_bdev_cqe c;
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;

	make_file(tpath("fail"), 4 * SECT, 0);
	dev = open_dev(g_engine, tpath("fail"), false, false, 4);
	ch = open_chan(dev);
	assert_int_equal(truncate(tpath("fail"), SECT), 0);
	assert_int_equal(ub_bdev_chan_queue(ch, &r), 0);
	assert_int_equal(ub_bdev_chan_submit(ch), 0);
	assert_true(ub_bdev_chan_busy(ch));
	assert_int_equal(collect(ch, &c, 1), 1);
	assert_int_equal(c.id, 5);
	assert_int_equal(c.res, -EIO);
	assert_false(ub_bdev_chan_busy(ch));
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	free(buf);
}

/* Misaligned memory and odd iovec splits on an O_DIRECT file: written and
 * read back correctly (the engine bounces them), across sizes that fit a
 * bounce chunk and sizes that do not. */
static void test_misaligned_split_iovecs_round_trip_on_direct_file(void **s)
{
	static const uint32_t counts[] = {1, 8, 255, 600, 2048};
	size_t max = 2048 * SECT;
	unsigned char *wmem = malloc(max + 64), *rmem = malloc(max + 64);
	unsigned char *w = wmem + 1, *r = rmem + 3; /* odd addresses */
	struct iovec wi[5], ri[5];
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;
	struct ub_err err = {{0}};

	assert_non_null(wmem);
	assert_non_null(rmem);
	make_file(tpath("mis"), 4096 * SECT, 0);
	dev = open_dev(g_engine, tpath("mis"), false, true, 8);
	assert_true(ub_file_dev(dev)->direct);
	ch = open_chan(dev);
	for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
		size_t len = (size_t)counts[k] * SECT;
		size_t a = len / 5, b = len / 3 + 1;
		struct ub_bdev_req req = {.op = UB_BDEV_WRITE,
					  .sector = 100 + k,
					  .count = counts[k],
					  .iov = wi,
					  .iovcnt = 3,
					  .id = k};

		fill_pattern(w, len, (unsigned)k + 1);
		memset(r, 0, len);
		/* Writes: a, b, rest; reads: 1 byte, 0 bytes, b, rest. */
		wi[0] = (struct iovec){w, a};
		wi[1] = (struct iovec){w + a, b};
		wi[2] = (struct iovec){w + a + b, len - a - b};
		assert_int_equal(ub_bdev_run_sync(ch, &req, T_TIMEOUT_MS, &err),
				 0);
		ri[0] = (struct iovec){r, 1};
		ri[1] = (struct iovec){r + 1, 0};
		ri[2] = (struct iovec){r + 1, b};
		ri[3] = (struct iovec){r + 1 + b, len - 1 - b};
		req.op = UB_BDEV_READ;
		req.iov = ri;
		req.iovcnt = 4;
		assert_int_equal(ub_bdev_run_sync(ch, &req, T_TIMEOUT_MS, &err),
				 0);
		assert_memory_equal(w, r, len);
	}
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	free(wmem);
	free(rmem);
}

/* Aligned buffers split into several iovecs go to the kernel as they are
 * (vectored I/O) and round-trip. */
static void test_aligned_split_iovecs_round_trip(void **state)
{
	unsigned char *w = ub_bdev_buf_alloc(16 * SECT); /* heap */
	unsigned char *r = ub_bdev_buf_alloc(16 * SECT); /* heap */
	struct iovec wi[6], ri[2];
	struct ub_bdev_req req = {.op = UB_BDEV_WRITE,
				  .sector = 5,
				  .count = 16,
				  .iov = wi,
				  .iovcnt = 6};
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;
	struct ub_err err = {{0}};

	fill_pattern(w, 16 * SECT, 77);
	for (int i = 0; i < 5; i++)
		wi[i] = (struct iovec){w + i * 2 * SECT, 2 * SECT};
	wi[5] = (struct iovec){w + 10 * SECT, 6 * SECT};
	ri[0] = (struct iovec){r, 8 * SECT};
	ri[1] = (struct iovec){r + 8 * SECT, 8 * SECT};
	make_file(tpath("vec"), 64 * SECT, 0);
	dev = open_dev(g_engine, tpath("vec"), false, true, 8);
	ch = open_chan(dev);
	assert_int_equal(ub_bdev_run_sync(ch, &req, T_TIMEOUT_MS, &err), 0);
	req.op = UB_BDEV_READ;
	req.iov = ri;
	req.iovcnt = 2;
	assert_int_equal(ub_bdev_run_sync(ch, &req, T_TIMEOUT_MS, &err), 0);
	assert_memory_equal(w, r, 16 * SECT);
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	free(w);
	free(r);
}

#define MIX_BLOCKS 1024u /* 4 KiB blocks of the test file */
#define MIX_QD	   32u
#define MIX_OPS	   4000u

struct mix_slot {
	unsigned char *mem; /* heap, 4 KiB + 64 */
	unsigned char *buf; /* mem, or mem + 1 for a misaligned request */
	uint32_t block, count;
	bool write, busy;
	struct iovec iov;
};

/* Queue depth 32 of random reads and writes of 1-8 sectors (some from
 * misaligned memory) over a 4 MiB direct file; every read is checked
 * against a shadow copy. No two requests in flight overlap. */
static void test_qd32_mixed_reads_and_writes_verify(void **state)
{
	unsigned char *shadow = calloc(MIX_BLOCKS, 4096);  /* heap */
	bool *inflight = calloc(MIX_BLOCKS, sizeof(bool)); /* heap */
	struct mix_slot slot[MIX_QD];
	struct ub_bdev_cqe c[MIX_QD];
	unsigned seed = 12345, started = 0, done = 0, reads = 0, i, n;
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;

	assert_non_null(shadow);
	assert_non_null(inflight);
	make_file(tpath("mix"), MIX_BLOCKS * 4096, 0);
	dev = open_dev(g_engine, tpath("mix"), false, true, MIX_QD);
	ch = open_chan(dev);
	for (i = 0; i < MIX_QD; i++) {
		slot[i].mem = ub_bdev_buf_alloc(4096 + 64);
		assert_non_null(slot[i].mem);
		slot[i].busy = false;
	}
	while (done < MIX_OPS) {
		for (i = 0; i < MIX_QD && started < MIX_OPS; i++) {
			struct mix_slot *m = &slot[i];
			struct ub_bdev_req req = {.iov = &m->iov, .iovcnt = 1};

			if (m->busy)
				continue;
			do {
				m->block = (uint32_t)rand_r(&seed) % MIX_BLOCKS;
			} while (inflight[m->block]);
			m->count = 1 + (uint32_t)rand_r(&seed) % 8;
			m->write = rand_r(&seed) & 1;
			m->buf = m->mem + (rand_r(&seed) % 4 == 0);
			m->iov.iov_base = m->buf;
			m->iov.iov_len = m->count * SECT;
			if (m->write) {
				fill_pattern(m->buf, m->iov.iov_len, started);
				memcpy(shadow + (size_t)m->block * 4096, m->buf,
				       m->iov.iov_len);
			}
			req.op = m->write ? UB_BDEV_WRITE : UB_BDEV_READ;
			req.sector = (uint64_t)m->block * 8;
			req.count = m->count;
			req.id = i;
			assert_int_equal(ub_bdev_chan_queue(ch, &req), 0);
			inflight[m->block] = true;
			m->busy = true;
			started++;
		}
		assert_int_equal(ub_bdev_chan_submit(ch), 0);
		n = collect(ch, c, 1);
		assert_int_equal(n, 1);
		n += ub_bdev_chan_poll(ch, c + 1, MIX_QD - 1);
		for (i = 0; i < n; i++) {
			struct mix_slot *m = &slot[c[i].id];

			assert_int_equal(c[i].res, 0);
			assert_true(m->busy);
			if (!m->write) {
				assert_memory_equal(
				    m->buf, shadow + (size_t)m->block * 4096,
				    m->iov.iov_len);
				reads++;
			}
			inflight[m->block] = false;
			m->busy = false;
			done++;
		}
	}
	assert_true(reads > MIX_OPS / 4);
	assert_false(ub_bdev_chan_busy(ch));
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	for (i = 0; i < MIX_QD; i++)
		free(slot[i].mem);
	free(shadow);
	free(inflight);
}

/* WRITE_ZEROES makes the range read back as zeros and leaves its
 * neighbours alone; DISCARD succeeds (contents unspecified) and keeps the
 * file size. */
static void test_write_zeroes_reads_back_zeros_and_discard_succeeds(void **s)
{
	unsigned char *buf = ub_bdev_buf_alloc(64 * SECT); /* heap */
	struct ub_bdev_req z = {
	    .op = UB_BDEV_WRITE_ZEROES, .sector = 16, .count = 16, .id = 1};
	struct ub_bdev_req d = {
	    .op = UB_BDEV_DISCARD, .sector = 40, .count = 8, .id = 2};
	struct ub_bdev_cqe c[2];
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;
	struct stat st;

	make_file(tpath("wz"), 64 * SECT, 0xEE);
	dev = open_dev(g_engine, tpath("wz"), false, true, 8);
	assert_true(dev->flags & UB_BDEV_F_WRITE_ZEROES);
	assert_true(dev->flags & UB_BDEV_F_DISCARD);
	ch = open_chan(dev);
	assert_int_equal(ub_bdev_chan_queue(ch, &z), 0);
	assert_int_equal(ub_bdev_chan_queue(ch, &d), 0);
	assert_int_equal(ub_bdev_chan_submit(ch), 0);
	assert_int_equal(collect(ch, c, 2), 2);
	assert_int_equal(c[0].res, 0);
	assert_int_equal(c[1].res, 0);
	assert_int_equal(run1(ch, UB_BDEV_READ, 0, 64, buf, 3), 0);
	for (size_t i = 0; i < 64 * SECT; i++) {
		size_t sec = i / SECT;

		if (sec >= 16 && sec < 32)
			assert_int_equal(buf[i], 0);
		else if (sec < 40 || sec >= 48)
			assert_int_equal(buf[i], 0xEE);
	}
	assert_int_equal(stat(tpath("wz"), &st), 0);
	assert_int_equal(st.st_size, 64 * SECT);
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	free(buf);
}

/* Closing a channel with requests queued, submitted and unpolled waits
 * for them (the kernel may still write into the buffers) and leaks
 * nothing. */
static void test_close_waits_for_inflight_requests(void **state)
{
	unsigned char *buf = ub_bdev_buf_alloc(32 * 4096); /* heap */
	struct iovec iov[32];
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;

	make_file(tpath("drain"), 256 * 4096, 9);
	dev = open_dev(g_engine, tpath("drain"), false, true, 32);
	ch = open_chan(dev);
	for (int i = 0; i < 32; i++) {
		struct ub_bdev_req r = {.op = i % 2 ? UB_BDEV_WRITE
						    : UB_BDEV_READ,
					.sector = (uint64_t)i * 64,
					.count = 8,
					.iov = &iov[i],
					.iovcnt = 1,
					.id = (uint64_t)i};

		iov[i].iov_base = buf + i * 4096 + (i % 3 == 0);
		iov[i].iov_len = 4096;
		assert_int_equal(ub_bdev_chan_queue(ch, &r), 0);
		if (i == 15)
			assert_int_equal(ub_bdev_chan_submit(ch), 0);
	}
	assert_true(ub_bdev_chan_busy(ch));
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	free(buf);
}

/* A full file system fails the write with -ENOSPC on that request
 * (tmpfs of 1 MiB in a private mount namespace). */
static void test_full_file_system_gives_enospc(void **state)
{
	char mnt[128], why[160], path[192];
	unsigned char *buf = ub_bdev_buf_alloc(64 * 1024); /* heap */
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;
	int fd, rc = 0;
	uint64_t s;

	if (!mount_scratch("tmpfs-full", "tmpfs", "size=1m", mnt, sizeof(mnt),
			   why, sizeof(why))) {
		free(buf);
		print_message("skipped: %s\n", why);
		skip();
		return;
	}
	snprintf(path, sizeof(path), "%s/data", mnt);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 4 << 20), 0);
	close(fd);
	dev = open_dev(g_engine, path, false, false, 8);
	ch = open_chan(dev);
	memset(buf, 0x11, 64 * 1024);
	for (s = 0; s < dev->sectors && rc == 0; s += 128)
		rc = run1(ch, UB_BDEV_WRITE, s, 128, buf, s);
	assert_int_equal(rc, -ENOSPC);
	assert_true(s > 128); /* some writes fitted */
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	umount_scratch(mnt);
	free(buf);
}

/* A file system that refuses O_DIRECT (ramfs) gets buffered I/O instead;
 * it cannot punch holes either, so DISCARD is refused with -EOPNOTSUPP.
 * On tmpfs, which punches holes but has no ZERO_RANGE, WRITE_ZEROES still
 * reads back zeros. */
static void test_direct_falls_back_and_discard_follows_the_fs(void **state)
{
	char mnt[128], why[160], path[192];
	unsigned char *buf = ub_bdev_buf_alloc(8 * SECT); /* heap */
	struct ub_bdev_req d = {.op = UB_BDEV_DISCARD, .count = 1};
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;

	if (!mount_scratch("ramfs", "ramfs", NULL, mnt, sizeof(mnt), why,
			   sizeof(why))) {
		free(buf);
		print_message("skipped: %s\n", why);
		skip();
		return;
	}
	snprintf(path, sizeof(path), "%s/data", mnt);
	make_file(path, 8 * SECT, 0x77);
	dev = open_dev(g_engine, path, false, true, 8);
	assert_false(ub_file_dev(dev)->direct);
	assert_false(dev->flags & UB_BDEV_F_DISCARD);
	ch = open_chan(dev);
	assert_int_equal(ub_bdev_chan_queue(ch, &d), -EOPNOTSUPP);
	assert_int_equal(run1(ch, UB_BDEV_READ, 0, 8, buf, 1), 0);
	assert_int_equal(buf[8 * SECT - 1], 0x77);
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	umount_scratch(mnt);

	assert_true(mount_scratch("tmpfs-wz", "tmpfs", "size=1m", mnt,
				  sizeof(mnt), why, sizeof(why)));
	snprintf(path, sizeof(path), "%s/data", mnt);
	make_file(path, 8 * SECT, 0x77);
	dev = open_dev(g_engine, path, false, true, 8);
	assert_true(dev->flags & UB_BDEV_F_WRITE_ZEROES);
	ch = open_chan(dev);
	assert_int_equal(run1(ch, UB_BDEV_WRITE_ZEROES, 2, 3, NULL, 2), 0);
	assert_int_equal(run1(ch, UB_BDEV_WRITE_ZEROES, 5, 1, NULL, 3), 0);
	assert_int_equal(run1(ch, UB_BDEV_READ, 0, 8, buf, 4), 0);
	for (size_t i = 0; i < 8 * SECT; i++)
		assert_int_equal(buf[i],
				 i >= 2 * SECT && i < 6 * SECT ? 0 : 0x77);
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	umount_scratch(mnt);
	free(buf);
}

/* A block device (a loop device over a 4 MiB file): capacity from
 * BLKGETSIZE64, direct round trip, write-zeroes, discard, flush. */
static void test_loop_device_capacity_and_io(void **state)
{
	char devpath[32], why[160];
	unsigned char *buf = ub_bdev_buf_alloc(8 * SECT); /* heap */
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;
	struct ub_err err = {{0}};
	int lfd;

	make_file(tpath("loop-backing"), 4 << 20, 0x3C);
	lfd = loop_attach(tpath("loop-backing"), devpath, sizeof(devpath), why,
			  sizeof(why));
	if (lfd < 0) {
		free(buf);
		print_message("skipped: no loop device: %s\n", why);
		skip();
		return;
	}
	dev = open_dev(g_engine, devpath, false, true, 8);
	assert_int_equal(dev->sectors, (4 << 20) / SECT);
	assert_true(ub_file_dev(dev)->is_blk);
	assert_true(dev->flags & UB_BDEV_F_WRITE_ZEROES);
	ch = open_chan(dev);
	assert_int_equal(run1(ch, UB_BDEV_READ, 8191, 1, buf, 1), 0);
	assert_int_equal(buf[0], 0x3C);
	fill_pattern(buf, 8 * SECT, 5);
	assert_int_equal(run1(ch, UB_BDEV_WRITE, 100, 8, buf, 2), 0);
	memset(buf, 0, 8 * SECT);
	assert_int_equal(run1(ch, UB_BDEV_READ, 100, 8, buf, 3), 0);
	assert_int_equal(buf[1], (unsigned char)(5 * 131 + 7));
	assert_int_equal(run1(ch, UB_BDEV_WRITE_ZEROES, 100, 8, NULL, 4), 0);
	assert_int_equal(run1(ch, UB_BDEV_READ, 100, 8, buf, 5), 0);
	for (size_t i = 0; i < 8 * SECT; i++)
		assert_int_equal(buf[i], 0);
	if (dev->flags & UB_BDEV_F_DISCARD)
		assert_int_equal(run1(ch, UB_BDEV_DISCARD, 0, 8, NULL, 6), 0);
	assert_int_equal(ub_bdev_flush_sync(ch, T_TIMEOUT_MS, &err), 0);
	/* Out of range on the block device, too. */
	assert_int_equal(run1(ch, UB_BDEV_READ, 8192, 1, buf, 7), -EINVAL);
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	close(lfd);
	free(buf);
}

#define ENGINE_TESTS                                                           \
	cmocka_unit_test(test_write_then_read_round_trips),                    \
	    cmocka_unit_test(test_readonly_device_reads_and_refuses_writes),   \
	    cmocka_unit_test(test_missing_path_fails_with_enoent),             \
	    cmocka_unit_test(test_channel_open_fails_when_file_vanished),      \
	    cmocka_unit_test(test_size_not_multiple_of_sector_is_refused),     \
	    cmocka_unit_test(test_capacity_is_file_size_in_sectors),           \
	    cmocka_unit_test(test_bad_requests_are_refused_at_queue),          \
	    cmocka_unit_test(test_read_past_end_of_file_is_eio),               \
	    cmocka_unit_test(test_fifo_and_char_device_are_refused),           \
	    cmocka_unit_test(test_fresh_channel_is_idle_and_flush_succeeds),   \
	    cmocka_unit_test(test_flush_on_dev_full_fails),                    \
	    cmocka_unit_test(test_direct_io_round_trips),                      \
	    cmocka_unit_test(test_write_through_flush_succeeds),               \
	    cmocka_unit_test(test_clone_shares_the_target),                    \
	    cmocka_unit_test(test_queue_depth_must_be_a_power_of_two),         \
	    cmocka_unit_test(test_busy_until_every_completion_is_polled),      \
	    cmocka_unit_test(test_full_queue_refuses_with_eagain),             \
	    cmocka_unit_test(test_failed_request_is_busy_until_polled),        \
	    cmocka_unit_test(                                                  \
		test_misaligned_split_iovecs_round_trip_on_direct_file),       \
	    cmocka_unit_test(test_aligned_split_iovecs_round_trip),            \
	    cmocka_unit_test(test_qd32_mixed_reads_and_writes_verify),         \
	    cmocka_unit_test(                                                  \
		test_write_zeroes_reads_back_zeros_and_discard_succeeds),      \
	    cmocka_unit_test(test_close_waits_for_inflight_requests),          \
	    cmocka_unit_test(test_full_file_system_gives_enospc),              \
	    cmocka_unit_test(                                                  \
		test_direct_falls_back_and_discard_follows_the_fs),            \
	    cmocka_unit_test(test_loop_device_capacity_and_io)

#endif
