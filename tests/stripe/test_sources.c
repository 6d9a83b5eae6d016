/* Stripe sources (storage.md §6): the raw image source (whole stripes,
 * a partial last stripe zero-filled, stripes past the end refused), the
 * empty source and the flaky test source; criteria 88 and 90. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bdev/file.h"
#include "bdev/mem.h"
#include "stripe/source.h"

#define SECTOR 512

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Polls until one completion arrives (5 s at most); returns it. */
static struct ub_source_cqe wait_one(struct ub_source *s)
{
	struct ub_source_cqe c = {.stripe = UINT64_MAX, .res = 1};
	uint64_t end = ms_now() + 5000;
	int fd = s->ops->event_fd(s);

	while (ms_now() < end) {
		if (s->ops->poll(s, &c, 1) == 1)
			return c;
		if (fd >= 0) {
			struct pollfd p = {.fd = fd, .events = POLLIN};

			poll(&p, 1, 10);
		} else {
			usleep(100);
		}
	}
	fail_msg("no source completion within 5 s");
	return c;
}

static struct ub_bdev *mem_image(uint64_t sectors)
{
	struct ub_bdev *dev = NULL;
	struct ub_err err = {{0}};
	unsigned char *d;

	assert_int_equal(ub_mem_bdev_create(sectors * SECTOR, &dev, &err), 0);
	d = ub_mem_bdev_data(dev);
	for (uint64_t i = 0; i < sectors * SECTOR; i++)
		d[i] = (unsigned char)(i / SECTOR + 1);
	return dev;
}

static struct ub_source *raw_open(struct ub_bdev *image, unsigned shift)
{
	struct ub_source *s = NULL;
	struct ub_err err = {{0}};

	if (ub_raw_source_open(image, shift, &s, &err) < 0)
		fail_msg("raw source: %s", err.msg);
	return s;
}

static void test_raw_reads_whole_stripes(void **state)
{
	struct ub_bdev *img = mem_image(16);
	struct ub_source *s = raw_open(img, 2);
	unsigned char *buf = ub_bdev_buf_alloc(4 * SECTOR);
	struct ub_source_cqe c;

	(void)state;
	assert_int_equal(s->sectors, 16);
	assert_int_equal(ub_source_stripe_count(s), 4);
	assert_true(s->ops->has_stripe(s, 3));
	assert_false(s->ops->has_stripe(s, 4));
	assert_false(s->ops->busy(s));
	assert_int_equal(s->ops->request(s, 1, buf), 0);
	assert_true(s->ops->busy(s));
	c = wait_one(s);
	assert_int_equal(c.stripe, 1);
	assert_int_equal(c.res, 0);
	assert_false(s->ops->busy(s));
	for (int i = 0; i < 4 * SECTOR; i++)
		assert_int_equal(buf[i], 5 + i / SECTOR);
	assert_int_equal(ub_mem_bdev_metrics(img).reads, 1);
	free(buf);
	ub_source_close(s);
	ub_bdev_put(img);
}

static void test_raw_partial_last_stripe_is_zero_filled(void **state)
{
	struct ub_bdev *img = mem_image(10); /* stripes of 4: 4, 4, 2 */
	struct ub_source *s = raw_open(img, 2);
	unsigned char *buf = ub_bdev_buf_alloc(4 * SECTOR);
	struct ub_source_cqe c;

	(void)state;
	assert_int_equal(ub_source_stripe_count(s), 3);
	memset(buf, 0xEE, 4 * SECTOR); /* stale data of an earlier stripe */
	assert_int_equal(s->ops->request(s, 2, buf), 0);
	c = wait_one(s);
	assert_int_equal(c.stripe, 2);
	assert_int_equal(c.res, 0);
	for (int i = 0; i < 2 * SECTOR; i++)
		assert_int_equal(buf[i], 9 + i / SECTOR);
	for (int i = 2 * SECTOR; i < 4 * SECTOR; i++)
		assert_int_equal(buf[i], 0);
	free(buf);
	ub_source_close(s);
	ub_bdev_put(img);
}

static void test_88_raw_stripe_beyond_end_is_invalid(void **state)
{
	struct ub_bdev *img = mem_image(8);
	struct ub_source *s = raw_open(img, 2);
	unsigned char *buf = ub_bdev_buf_alloc(4 * SECTOR);
	struct ub_source_cqe c;

	(void)state;
	assert_int_equal(s->ops->request(s, 2, buf), -EINVAL);
	assert_false(s->ops->busy(s));
	assert_int_equal(s->ops->poll(s, &c, 1), 0);
	assert_int_equal(ub_mem_bdev_metrics(img).reads, 0);
	free(buf);
	ub_source_close(s);
	ub_bdev_put(img);
}

static void test_raw_read_failure_is_reported(void **state)
{
	struct ub_bdev *img = mem_image(8);
	struct ub_source *s = raw_open(img, 2);
	unsigned char *buf = ub_bdev_buf_alloc(4 * SECTOR);
	struct ub_source_cqe c;

	(void)state;
	ub_mem_bdev_fail_next(img);
	assert_int_equal(s->ops->request(s, 0, buf), 0);
	c = wait_one(s);
	assert_int_equal(c.stripe, 0);
	assert_int_equal(c.res, -EIO);
	free(buf);
	ub_source_close(s);
	ub_bdev_put(img);
}

static void test_raw_over_io_uring_file(void **state)
{
	char path[] = "/var/tmp/ubiblk-src.XXXXXX";
	struct ub_file_bdev_opts o = {
	    .path = path, .readonly = true, .direct = true, .queue_depth = 64};
	unsigned char *data = malloc(12 * SECTOR);
	unsigned char *buf = ub_bdev_buf_alloc(8 * SECTOR);
	struct ub_bdev *img = NULL;
	struct ub_err err = {{0}};
	struct ub_source *s;
	struct ub_source_cqe c;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	for (int i = 0; i < 12 * SECTOR; i++)
		data[i] = (unsigned char)(i * 7 + 3);
	assert_int_equal(write(fd, data, 12 * SECTOR), 12 * SECTOR);
	close(fd);
	if (ub_uring_bdev_open(&o, &img, &err) < 0)
		fail_msg("open: %s", err.msg);
	s = raw_open(img, 3);
	assert_true(s->ops->event_fd(s) >= 0);
	memset(buf, 0xAA, 8 * SECTOR);
	assert_int_equal(s->ops->request(s, 1, buf), 0);
	c = wait_one(s);
	assert_int_equal(c.res, 0);
	assert_memory_equal(buf, data + 8 * SECTOR, 4 * SECTOR);
	for (int i = 4 * SECTOR; i < 8 * SECTOR; i++)
		assert_int_equal(buf[i], 0);
	ub_source_close(s);
	ub_bdev_put(img);
	unlink(path);
	free(buf);
	free(data);
}

static void test_empty_source(void **state)
{
	struct ub_source *s = NULL;
	struct ub_err err = {{0}};
	struct ub_source_cqe c;
	char buf[SECTOR];

	(void)state;
	assert_int_equal(ub_empty_source_open(11, &s, &err), 0);
	assert_int_equal(s->sectors, 0);
	assert_int_equal(s->shift, 11);
	assert_int_equal(ub_source_stripe_count(s), 0);
	assert_false(s->ops->has_stripe(s, 0));
	assert_false(s->ops->busy(s));
	assert_int_equal(s->ops->event_fd(s), -1);
	assert_int_equal(s->ops->poll(s, &c, 1), 0);
	assert_int_equal(s->ops->request(s, 0, buf), -EINVAL);
	ub_source_close(s);
	ub_source_close(NULL);
}

static void test_90_flaky_fails_then_succeeds(void **state)
{
	struct ub_bdev *img = mem_image(16);
	struct ub_source *s = NULL;
	/* Stripe 1 listed twice: 1 + 1 failures. */
	const uint64_t stripes[] = {1, 3, 1};
	const unsigned counts[] = {1, 0, 1};
	unsigned char *buf = ub_bdev_buf_alloc(4 * SECTOR);
	struct ub_err err = {{0}};
	struct ub_source_cqe c;
	int i;

	(void)state;
	assert_int_equal(ub_flaky_source_wrap(raw_open(img, 2), stripes, counts,
					      3, &s, &err),
			 0);
	assert_int_equal(s->sectors, 16);
	assert_int_equal(s->shift, 2);
	assert_true(s->ops->has_stripe(s, 3));
	assert_false(s->ops->has_stripe(s, 4));
	for (i = 0; i < 3; i++) {
		assert_int_equal(s->ops->request(s, 1, buf), 0);
		assert_true(s->ops->busy(s));
		c = wait_one(s);
		assert_int_equal(c.stripe, 1);
		assert_int_equal(c.res, i < 2 ? -EIO : 0);
	}
	assert_int_equal(buf[0], 5);
	/* Other stripes pass through. */
	assert_int_equal(s->ops->request(s, 0, buf), 0);
	c = wait_one(s);
	assert_int_equal(c.res, 0);
	assert_int_equal(s->ops->request(s, 3, buf), 0);
	c = wait_one(s);
	assert_int_equal(c.res, 0);
	assert_int_equal(s->ops->request(s, 4, buf), -EINVAL);
	free(buf);
	ub_source_close(s);
	ub_bdev_put(img);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_raw_reads_whole_stripes),
	    cmocka_unit_test(test_raw_partial_last_stripe_is_zero_filled),
	    cmocka_unit_test(test_88_raw_stripe_beyond_end_is_invalid),
	    cmocka_unit_test(test_raw_read_failure_is_reported),
	    cmocka_unit_test(test_raw_over_io_uring_file),
	    cmocka_unit_test(test_empty_source),
	    cmocka_unit_test(test_90_flaky_fails_then_succeeds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
