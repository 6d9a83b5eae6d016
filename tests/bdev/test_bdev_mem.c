/* In-memory test device: storage.md §11 criteria 30-31 and the behaviour
 * other tests rely on (shared array, metrics, fail_next, discard and
 * write-zeroes, channel limits). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bdev/mem.h"

#define SECTOR	512
#define MIB	(1024 * 1024)
#define TIMEOUT 1000

struct fixture {
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f)); /* owned by *state */
	struct ub_err err = {{0}};

	if (!f)
		return -1;
	if (ub_mem_bdev_create(MIB, &f->dev, &err) ||
	    ub_bdev_open_chan(f->dev, &f->ch, &err)) {
		ub_bdev_put(f->dev);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	ub_bdev_chan_close(f->ch);
	ub_bdev_put(f->dev);
	free(f);
	return 0;
}

static int run(struct ub_bdev_chan *ch, enum ub_bdev_op op, uint64_t sector,
	       uint32_t count, void *buf, uint64_t id)
{
	struct iovec iov = {.iov_base = buf, .iov_len = (size_t)count * SECTOR};
	struct ub_bdev_req req = {
	    .op = op,
	    .sector = sector,
	    .count = count,
	    .iov = buf ? &iov : NULL,
	    .iovcnt = buf ? 1 : 0,
	    .id = id,
	};
	struct ub_err err = {{0}};

	return ub_bdev_run_sync(ch, &req, TIMEOUT, &err);
}

static void test_create_rejects_size_not_multiple_of_512(void **state)
{
	struct ub_bdev *dev = NULL;
	struct ub_err err = {{0}};

	assert_int_equal(ub_mem_bdev_create(1000, &dev, &err), -EINVAL);
	assert_null(dev);
	assert_non_null(strstr(err.msg, "multiple"));
}

static void test_capacity_is_bytes_over_512(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(f->dev->sectors, MIB / SECTOR);
	assert_true(f->dev->flags & UB_BDEV_F_DISCARD);
	assert_true(f->dev->flags & UB_BDEV_F_WRITE_ZEROES);
	assert_false(f->dev->flags & UB_BDEV_F_READONLY);
}

/* Criterion 30, first half. */
static void test_single_read_succeeds(void **state)
{
	struct fixture *f = *state;
	unsigned char buf[SECTOR];
	struct ub_bdev_req req;
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
	struct ub_bdev_cqe c[4];

	memset(buf, 0xee, sizeof(buf));
	req = (struct ub_bdev_req){.op = UB_BDEV_READ,
				   .sector = 0,
				   .count = 1,
				   .iov = &iov,
				   .iovcnt = 1,
				   .id = 42};
	assert_int_equal(ub_bdev_chan_queue(f->ch, &req), 0);
	assert_true(ub_bdev_chan_busy(f->ch));
	assert_int_equal(ub_bdev_chan_submit(f->ch), 0);
	assert_int_equal(ub_bdev_chan_poll(f->ch, c, 4), 1);
	assert_int_equal(c[0].id, 42);
	assert_int_equal(c[0].res, 0);
	assert_false(ub_bdev_chan_busy(f->ch));
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 0);
	assert_int_equal(ub_mem_bdev_metrics(f->dev).reads, 1);
}

/* Criterion 30, second half. */
static void test_write_flush_read_back_and_metrics(void **state)
{
	struct fixture *f = *state;
	unsigned char wbuf[SECTOR], rbuf[SECTOR];
	struct ub_mem_bdev_metrics m;

	memset(wbuf, 0xab, sizeof(wbuf));
	assert_int_equal(run(f->ch, UB_BDEV_WRITE, 3, 1, wbuf, 1), 0);
	assert_int_equal(run(f->ch, UB_BDEV_FLUSH, 0, 0, NULL, 2), 0);
	assert_int_equal(run(f->ch, UB_BDEV_READ, 3, 1, rbuf, 3), 0);
	assert_memory_equal(rbuf, wbuf, SECTOR);
	m = ub_mem_bdev_metrics(f->dev);
	assert_int_equal(m.reads, 1);
	assert_int_equal(m.writes, 1);
	assert_int_equal(m.flushes, 1);
}

/* Criterion 31, first half: rejected at queue, nothing completes. */
static void test_out_of_range_read_and_write_are_rejected(void **state)
{
	struct fixture *f = *state;
	unsigned char buf[2 * SECTOR] = {0};
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
	struct ub_bdev_req req = {
	    .op = UB_BDEV_READ,
	    .sector = MIB / SECTOR - 1,
	    .count = 2,
	    .iov = &iov,
	    .iovcnt = 1,
	};
	struct ub_bdev_cqe c[2];

	assert_int_equal(ub_bdev_chan_queue(f->ch, &req), -EINVAL);
	req.op = UB_BDEV_WRITE;
	assert_int_equal(ub_bdev_chan_queue(f->ch, &req), -EINVAL);
	req.sector = UINT64_MAX;
	req.count = 2;
	assert_int_equal(ub_bdev_chan_queue(f->ch, &req), -EINVAL);
	req.op = UB_BDEV_WRITE_ZEROES;
	req.iov = NULL;
	req.iovcnt = 0;
	assert_int_equal(ub_bdev_chan_queue(f->ch, &req), -EINVAL);
	assert_false(ub_bdev_chan_busy(f->ch));
	assert_int_equal(ub_bdev_chan_poll(f->ch, c, 2), 0);
	assert_int_equal(ub_mem_bdev_metrics(f->dev).writes, 0);
}

/* Criterion 31, second half: the array is the device's content. */
static void test_data_helper_round_trips(void **state)
{
	struct fixture *f = *state;
	unsigned char *data = ub_mem_bdev_data(f->dev);
	unsigned char buf[SECTOR];

	memset(data + 7 * SECTOR, 0x5a, SECTOR);
	assert_int_equal(run(f->ch, UB_BDEV_READ, 7, 1, buf, 1), 0);
	assert_memory_equal(buf, data + 7 * SECTOR, SECTOR);
	memset(buf, 0xc3, sizeof(buf));
	assert_int_equal(run(f->ch, UB_BDEV_WRITE, 9, 1, buf, 2), 0);
	assert_memory_equal(data + 9 * SECTOR, buf, SECTOR);
	assert_int_equal(data[9 * SECTOR - 1], 0);
	assert_int_equal(data[10 * SECTOR], 0);
}

static void test_split_iovecs_are_gathered_and_scattered(void **state)
{
	struct fixture *f = *state;
	unsigned char *data = ub_mem_bdev_data(f->dev);
	unsigned char src[3 * SECTOR], dst[3 * SECTOR + 1];
	struct iovec wv[3] = {
	    {src, 1}, {src + 1, 0}, {src + 1, 3 * SECTOR - 1}};
	struct iovec rv[2] = {{dst + 1, 700}, {dst + 701, 3 * SECTOR - 700}};
	struct ub_bdev_req req = {UB_BDEV_WRITE, 20, 3, wv, 3, 1};
	struct ub_err err = {{0}};

	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = (unsigned char)(i * 7);
	assert_int_equal(ub_bdev_run_sync(f->ch, &req, TIMEOUT, &err), 0);
	assert_memory_equal(data + 20 * SECTOR, src, sizeof(src));
	req = (struct ub_bdev_req){UB_BDEV_READ, 20, 3, rv, 2, 2};
	assert_int_equal(ub_bdev_run_sync(f->ch, &req, TIMEOUT, &err), 0);
	assert_memory_equal(dst + 1, src, sizeof(src));
}

static void test_fail_next_fails_one_request_then_clears(void **state)
{
	struct fixture *f = *state;
	unsigned char buf[SECTOR];
	struct ub_mem_bdev_metrics m;

	memset(buf, 1, sizeof(buf));
	ub_mem_bdev_fail_next(f->dev);
	assert_int_equal(run(f->ch, UB_BDEV_WRITE, 0, 1, buf, 1), -EIO);
	assert_int_equal(ub_mem_bdev_data(f->dev)[0], 0);
	assert_int_equal(run(f->ch, UB_BDEV_WRITE, 0, 1, buf, 2), 0);
	ub_mem_bdev_fail_next(f->dev);
	assert_int_equal(run(f->ch, UB_BDEV_READ, 0, 1, buf, 3), -EIO);
	assert_int_equal(run(f->ch, UB_BDEV_READ, 0, 1, buf, 4), 0);
	ub_mem_bdev_fail_next(f->dev);
	assert_int_equal(run(f->ch, UB_BDEV_FLUSH, 0, 0, NULL, 5), -EIO);
	assert_int_equal(run(f->ch, UB_BDEV_FLUSH, 0, 0, NULL, 6), 0);
	m = ub_mem_bdev_metrics(f->dev);
	assert_int_equal(m.writes, 1);
	assert_int_equal(m.reads, 1);
	assert_int_equal(m.flushes, 1);
}

static void test_fail_next_applies_to_any_channel(void **state)
{
	struct fixture *f = *state;
	struct ub_bdev_chan *other = NULL;
	struct ub_err err = {{0}};

	assert_int_equal(ub_bdev_open_chan(f->dev, &other, &err), 0);
	ub_mem_bdev_fail_next(f->dev);
	assert_int_equal(run(other, UB_BDEV_FLUSH, 0, 0, NULL, 1), -EIO);
	assert_int_equal(run(f->ch, UB_BDEV_FLUSH, 0, 0, NULL, 1), 0);
	ub_bdev_chan_close(other);
}

static void test_discard_and_write_zeroes_zero_the_range(void **state)
{
	struct fixture *f = *state;
	unsigned char *data = ub_mem_bdev_data(f->dev);

	memset(data, 0xff, 16 * SECTOR);
	assert_int_equal(run(f->ch, UB_BDEV_DISCARD, 2, 3, NULL, 1), 0);
	assert_int_equal(run(f->ch, UB_BDEV_WRITE_ZEROES, 8, 4, NULL, 2), 0);
	for (size_t i = 0; i < 16 * SECTOR; i++) {
		size_t s = i / SECTOR;
		bool zero = (s >= 2 && s < 5) || (s >= 8 && s < 12);

		assert_int_equal(data[i], zero ? 0 : 0xff);
	}
}

static void test_clone_and_channels_share_the_array(void **state)
{
	struct fixture *f = *state;
	struct ub_bdev *clone = ub_bdev_get(f->dev);
	struct ub_bdev_chan *ch2 = NULL;
	struct ub_err err = {{0}};
	unsigned char w[SECTOR], r[SECTOR];

	assert_int_equal(ub_bdev_open_chan(clone, &ch2, &err), 0);
	memset(w, 0x77, sizeof(w));
	assert_int_equal(run(f->ch, UB_BDEV_WRITE, 100, 1, w, 1), 0);
	assert_int_equal(run(ch2, UB_BDEV_READ, 100, 1, r, 1), 0);
	assert_memory_equal(r, w, SECTOR);
	assert_int_equal(ub_mem_bdev_metrics(clone).writes, 1);
	assert_int_equal(ub_mem_bdev_metrics(clone).reads, 1);
	ub_bdev_chan_close(ch2);
	ub_bdev_put(clone);
}

/* Completions come back in order, at most max per poll; a full channel
 * says -EAGAIN until it is polled. */
static void test_full_channel_returns_eagain_until_polled(void **state)
{
	struct fixture *f = *state;
	struct ub_bdev_req req = {.op = UB_BDEV_FLUSH};
	struct ub_bdev_cqe c[64];
	uint32_t depth = f->ch->depth;
	uint64_t next = 0;
	unsigned n;

	assert_true(depth > 0);
	for (uint32_t i = 0; i < depth; i++) {
		req.id = 1000 + i;
		assert_int_equal(ub_bdev_chan_queue(f->ch, &req), 0);
	}
	req.id = 1;
	assert_int_equal(ub_bdev_chan_queue(f->ch, &req), -EAGAIN);
	assert_int_equal(ub_bdev_chan_submit(f->ch), 0);
	assert_int_equal(ub_bdev_chan_poll(f->ch, c, 1), 1);
	assert_int_equal(c[0].id, 1000);
	assert_int_equal(ub_bdev_chan_queue(f->ch, &req), 0);
	next = 1001;
	while ((n = ub_bdev_chan_poll(f->ch, c, 64)) > 0) {
		for (unsigned i = 0; i < n; i++) {
			assert_int_equal(c[i].id,
					 next == 1000 + depth ? 1 : next);
			next++;
		}
	}
	assert_int_equal(next, 1001 + depth);
	assert_false(ub_bdev_chan_busy(f->ch));
	assert_int_equal(ub_bdev_chan_event_fd(f->ch), -1);
}

static void test_bad_iovec_total_is_rejected(void **state)
{
	struct fixture *f = *state;
	unsigned char buf[SECTOR];
	struct iovec iov = {.iov_base = buf, .iov_len = SECTOR - 1};
	struct ub_bdev_req req = {UB_BDEV_WRITE, 0, 1, &iov, 1, 1};

	assert_int_equal(ub_bdev_chan_queue(f->ch, &req), -EINVAL);
	assert_false(ub_bdev_chan_busy(f->ch));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_create_rejects_size_not_multiple_of_512),
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	    T(test_capacity_is_bytes_over_512),
	    T(test_single_read_succeeds),
	    T(test_write_flush_read_back_and_metrics),
	    T(test_out_of_range_read_and_write_are_rejected),
	    T(test_data_helper_round_trips),
	    T(test_split_iovecs_are_gathered_and_scattered),
	    T(test_fail_next_fails_one_request_then_clears),
	    T(test_fail_next_applies_to_any_channel),
	    T(test_discard_and_write_zeroes_zero_the_range),
	    T(test_clone_and_channels_share_the_array),
	    T(test_full_channel_returns_eagain_until_polled),
	    T(test_bad_iovec_total_is_rejected),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
