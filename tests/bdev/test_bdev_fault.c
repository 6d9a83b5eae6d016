/* Fault-injection device over the in-memory device: every rule kind, once
 * and sticky, the byte budget, and that an injected failure never reaches
 * the wrapped device but still completes through poll. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "bdev/fault.h"
#include "bdev/mem.h"

#define SECTOR	512
#define MIB	(1024 * 1024)
#define TIMEOUT 1000

struct fixture {
	struct ub_bdev *mem;
	struct ub_bdev *dev; /* fault over mem */
	struct ub_bdev_chan *ch;
	unsigned char buf[8 * SECTOR];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f)); /* owned by *state */
	struct ub_err err = {{0}};

	if (!f)
		return -1;
	if (ub_mem_bdev_create(MIB, &f->mem, &err) ||
	    ub_fault_bdev_wrap(f->mem, &f->dev, &err) ||
	    ub_bdev_open_chan(f->dev, &f->ch, &err)) {
		ub_bdev_put(f->dev);
		ub_bdev_put(f->mem);
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
	ub_bdev_put(f->mem);
	free(f);
	return 0;
}

static int run(struct ub_bdev_chan *ch, enum ub_bdev_op op, uint64_t sector,
	       uint32_t count, void *buf)
{
	struct iovec iov = {.iov_base = buf, .iov_len = (size_t)count * SECTOR};
	struct ub_bdev_req req = {
	    .op = op,
	    .sector = sector,
	    .count = count,
	    .iov = buf ? &iov : NULL,
	    .iovcnt = buf ? 1 : 0,
	    .id = 7,
	};
	struct ub_err err = {{0}};

	return ub_bdev_run_sync(ch, &req, TIMEOUT, &err);
}

static int rd(struct fixture *f)
{
	return run(f->ch, UB_BDEV_READ, 0, 1, f->buf);
}

static int wr(struct fixture *f, uint64_t sector, uint32_t count)
{
	return run(f->ch, UB_BDEV_WRITE, sector, count, f->buf);
}

static int fl(struct fixture *f)
{
	return run(f->ch, UB_BDEV_FLUSH, 0, 0, NULL);
}

static void test_wrap_keeps_capacity_and_flags(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(f->dev->sectors, f->mem->sectors);
	assert_int_equal(f->dev->flags, f->mem->flags);
	assert_int_equal(ub_fault_bdev_injected(f->dev), 0);
}

static void test_nth_read_once_fails_only_that_read(void **state)
{
	struct fixture *f = *state;

	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_READ, 3, EIO, false);
	assert_int_equal(rd(f), 0);
	assert_int_equal(wr(f, 0, 1), 0); /* writes do not count */
	assert_int_equal(rd(f), 0);
	assert_int_equal(rd(f), -EIO);
	assert_int_equal(rd(f), 0);
	assert_int_equal(rd(f), 0);
	assert_int_equal(ub_fault_bdev_injected(f->dev), 1);
	/* The failed read never reached the memory device. */
	assert_int_equal(ub_mem_bdev_metrics(f->mem).reads, 4);
}

static void test_nth_read_sticky_fails_from_then_on(void **state)
{
	struct fixture *f = *state;

	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_READ, 2, EBADMSG, true);
	assert_int_equal(rd(f), 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(rd(f), -EBADMSG);
	assert_int_equal(fl(f), 0);
	assert_int_equal(ub_fault_bdev_injected(f->dev), 5);
}

static void test_nth_write_fails_and_writes_nothing(void **state)
{
	struct fixture *f = *state;
	unsigned char *data = ub_mem_bdev_data(f->mem);

	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_WRITE, 1, ENOSPC, false);
	assert_int_equal(rd(f), 0);
	memset(f->buf, 0x11, sizeof(f->buf));
	assert_int_equal(wr(f, 4, 2), -ENOSPC);
	assert_int_equal(data[4 * SECTOR], 0);
	assert_int_equal(ub_mem_bdev_metrics(f->mem).writes, 0);
	assert_int_equal(wr(f, 4, 2), 0);
	assert_int_equal(data[4 * SECTOR], 0x11);
}

static void test_write_zeroes_counts_as_a_write(void **state)
{
	struct fixture *f = *state;

	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_WRITE, 2, EIO, false);
	assert_int_equal(run(f->ch, UB_BDEV_DISCARD, 0, 1, NULL), 0);
	assert_int_equal(run(f->ch, UB_BDEV_WRITE_ZEROES, 0, 1, NULL), 0);
	assert_int_equal(run(f->ch, UB_BDEV_WRITE_ZEROES, 0, 1, NULL), -EIO);
}

static void test_nth_flush_once_and_sticky(void **state)
{
	struct fixture *f = *state;

	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_FLUSH, 1, EIO, false);
	assert_int_equal(fl(f), -EIO);
	assert_int_equal(fl(f), 0);
	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_FLUSH, 2, EIO, true);
	assert_int_equal(fl(f), 0);
	assert_int_equal(fl(f), -EIO);
	assert_int_equal(fl(f), -EIO);
	assert_int_equal(ub_mem_bdev_metrics(f->mem).flushes, 2);
	assert_int_equal(ub_fault_bdev_injected(f->dev), 3);
}

static void test_nth_any_counts_every_kind(void **state)
{
	struct fixture *f = *state;

	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_ANY, 4, EIO, false);
	assert_int_equal(rd(f), 0);
	assert_int_equal(wr(f, 0, 1), 0);
	assert_int_equal(run(f->ch, UB_BDEV_DISCARD, 0, 1, NULL), 0);
	assert_int_equal(fl(f), -EIO);
	assert_int_equal(rd(f), 0);
	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_ANY, 1, EIO, true);
	assert_int_equal(rd(f), -EIO);
	assert_int_equal(wr(f, 0, 1), -EIO);
	assert_int_equal(fl(f), -EIO);
}

static void test_own_rule_errno_wins_over_any(void **state)
{
	struct fixture *f = *state;

	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_ANY, 1, EIO, true);
	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_READ, 2, ENODATA, false);
	assert_int_equal(rd(f), -EIO);
	assert_int_equal(rd(f), -ENODATA);
	assert_int_equal(rd(f), -EIO);
}

static void test_zero_disarms_and_reset_clears_every_rule(void **state)
{
	struct fixture *f = *state;

	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_READ, 1, EIO, true);
	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_READ, 0, EIO, true);
	assert_int_equal(rd(f), 0);
	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_WRITE, 1, EIO, true);
	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_FLUSH, 1, EIO, true);
	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_ANY, 1, EIO, true);
	ub_fault_bdev_fail_after_bytes(f->dev, 0, ENOSPC);
	ub_fault_bdev_reset(f->dev);
	assert_int_equal(rd(f), 0);
	assert_int_equal(wr(f, 0, 1), 0);
	assert_int_equal(fl(f), 0);
	assert_int_equal(ub_fault_bdev_injected(f->dev), 0);
}

/* Rearming restarts the count from the moment the rule is set. */
static void test_count_starts_when_rule_is_set(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(rd(f), 0);
	assert_int_equal(rd(f), 0);
	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_READ, 2, EIO, false);
	assert_int_equal(rd(f), 0);
	assert_int_equal(rd(f), -EIO);
	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_READ, 2, EIO, false);
	assert_int_equal(rd(f), 0);
	assert_int_equal(rd(f), -EIO);
}

static void test_rejected_requests_are_not_counted(void **state)
{
	struct fixture *f = *state;
	struct iovec iov = {.iov_base = f->buf, .iov_len = SECTOR};
	struct ub_bdev_req bad = {UB_BDEV_READ, MIB / SECTOR, 1, &iov, 1, 1};

	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_READ, 1, EIO, false);
	assert_int_equal(ub_bdev_chan_queue(f->ch, &bad), -EINVAL);
	assert_int_equal(rd(f), -EIO);
}

static void test_after_bytes_fails_writes_past_the_budget(void **state)
{
	struct fixture *f = *state;
	unsigned char *data = ub_mem_bdev_data(f->mem);

	memset(f->buf, 0x22, sizeof(f->buf));
	ub_fault_bdev_fail_after_bytes(f->dev, 5 * SECTOR, ENOSPC);
	assert_int_equal(wr(f, 0, 4), 0);
	/* 4 + 2 sectors is more than the budget: nothing of it is written. */
	assert_int_equal(wr(f, 10, 2), -ENOSPC);
	assert_int_equal(data[10 * SECTOR], 0);
	assert_int_equal(data[11 * SECTOR], 0);
	/* Reads and flushes are unaffected; one more sector still fits. */
	assert_int_equal(rd(f), 0);
	assert_int_equal(fl(f), 0);
	assert_int_equal(wr(f, 20, 1), 0);
	assert_int_equal(data[20 * SECTOR], 0x22);
	assert_int_equal(wr(f, 21, 1), -ENOSPC);
	assert_int_equal(run(f->ch, UB_BDEV_WRITE_ZEROES, 0, 1, NULL), -ENOSPC);
	assert_int_equal(ub_fault_bdev_injected(f->dev), 3);
	/* Setting the rule again starts a new budget. */
	ub_fault_bdev_fail_after_bytes(f->dev, SECTOR, ENOSPC);
	assert_int_equal(wr(f, 21, 1), 0);
	assert_int_equal(wr(f, 22, 1), -ENOSPC);
}

/* A negative or zero errno is taken as its magnitude, or EIO. */
static void test_errno_sign_is_normalised(void **state)
{
	struct fixture *f = *state;

	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_READ, 1, -ENOSPC, false);
	assert_int_equal(rd(f), -ENOSPC);
	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_READ, 1, 0, false);
	assert_int_equal(rd(f), -EIO);
}

/* Injected failures are queued like real requests: accepted by queue,
 * reported by poll, in flight in between. */
static void test_injected_failure_completes_through_poll(void **state)
{
	struct fixture *f = *state;
	struct iovec iov = {.iov_base = f->buf, .iov_len = SECTOR};
	struct ub_bdev_req req = {UB_BDEV_READ, 0, 1, &iov, 1, 0};
	struct ub_bdev_cqe c[8];
	unsigned n, got = 0;
	int res[4] = {1, 1, 1, 1};

	ub_fault_bdev_fail_nth(f->dev, UB_FAULT_READ, 2, EIO, false);
	for (uint64_t id = 0; id < 4; id++) {
		req.id = UINT64_MAX - id;
		assert_int_equal(ub_bdev_chan_queue(f->ch, &req), 0);
	}
	assert_int_equal(f->ch->inflight, 4);
	assert_int_equal(ub_bdev_chan_submit(f->ch), 0);
	while ((n = ub_bdev_chan_poll(f->ch, c, 1)) > 0) {
		assert_int_equal(n, 1);
		res[UINT64_MAX - c[0].id] = c[0].res;
		got++;
	}
	assert_int_equal(got, 4);
	assert_int_equal(res[0], 0);
	assert_int_equal(res[1], -EIO);
	assert_int_equal(res[2], 0);
	assert_int_equal(res[3], 0);
	assert_false(ub_bdev_chan_busy(f->ch));
}

static void test_clone_and_other_channels_share_the_rules(void **state)
{
	struct fixture *f = *state;
	struct ub_bdev *clone = ub_bdev_get(f->dev);
	struct ub_bdev_chan *ch2 = NULL;
	struct ub_err err = {{0}};

	assert_int_equal(ub_bdev_open_chan(clone, &ch2, &err), 0);
	ub_fault_bdev_fail_nth(clone, UB_FAULT_FLUSH, 2, EIO, false);
	assert_int_equal(run(ch2, UB_BDEV_FLUSH, 0, 0, NULL), 0);
	assert_int_equal(fl(f), -EIO);
	assert_int_equal(ub_fault_bdev_injected(clone), 1);
	ub_bdev_chan_close(ch2);
	ub_bdev_put(clone);
}

/* ---- a wrapped device with an event fd -------------------------------- */

/* Memory channel that also owns an eventfd signalled at each submit. */
struct efd_chan {
	struct ub_bdev_chan ch;
	struct ub_bdev_chan *mem; /* owned */
	int efd;		  /* owned */
};

struct efd_bdev {
	struct ub_bdev dev;
	struct ub_bdev *mem; /* reference */
};

static int efd_queue(struct ub_bdev_chan *ch, const struct ub_bdev_req *req)
{
	struct efd_chan *e = (struct efd_chan *)ch;
	int rc = ub_bdev_chan_queue(e->mem, req);

	if (!rc)
		ch->inflight++;
	return rc;
}

static int efd_submit(struct ub_bdev_chan *ch)
{
	struct efd_chan *e = (struct efd_chan *)ch;

	if (e->mem->inflight)
		assert_int_equal(eventfd_write(e->efd, 1), 0);
	return ub_bdev_chan_submit(e->mem);
}

static unsigned efd_poll(struct ub_bdev_chan *ch, struct ub_bdev_cqe *out,
			 unsigned max)
{
	struct efd_chan *e = (struct efd_chan *)ch;
	unsigned n = ub_bdev_chan_poll(e->mem, out, max);

	ch->inflight -= n;
	return n;
}

static int efd_event_fd(struct ub_bdev_chan *ch)
{
	return ((struct efd_chan *)ch)->efd;
}

static void efd_close(struct ub_bdev_chan *ch)
{
	struct efd_chan *e = (struct efd_chan *)ch;

	ub_bdev_chan_close(e->mem);
	close(e->efd);
	free(e);
}

static const struct ub_bdev_chan_ops efd_chan_ops = {
    .queue = efd_queue,
    .submit = efd_submit,
    .poll = efd_poll,
    .event_fd = efd_event_fd,
    .close = efd_close,
};

static int efd_open_chan(struct ub_bdev *dev, struct ub_bdev_chan **out,
			 struct ub_err *err)
{
	struct efd_chan *e = calloc(1, sizeof(*e)); /* owned by *out */

	assert_non_null(e);
	assert_int_equal(
	    ub_bdev_open_chan(((struct efd_bdev *)dev)->mem, &e->mem, err), 0);
	e->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	assert_true(e->efd >= 0);
	e->ch.ops = &efd_chan_ops;
	e->ch.dev = ub_bdev_get(dev);
	e->ch.depth = e->mem->depth;
	*out = &e->ch;
	return 0;
}

static void efd_destroy(struct ub_bdev *dev)
{
	ub_bdev_put(((struct efd_bdev *)dev)->mem);
	free(dev);
}

static const struct ub_bdev_ops efd_ops = {
    .open_chan = efd_open_chan,
    .destroy = efd_destroy,
};

static bool readable(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return poll(&p, 1, 0) == 1;
}

/* An injected failure wakes a caller sleeping on the event fd although
 * the wrapped device never saw the request. */
static void test_injected_failure_signals_the_event_fd(void **state)
{
	struct fixture *f = *state;
	struct efd_bdev *eb = calloc(1, sizeof(*eb)); /* freed by destroy */
	struct ub_bdev *dev = NULL;
	struct ub_bdev_chan *ch = NULL;
	struct ub_err err = {{0}};
	struct ub_bdev_req req = {.op = UB_BDEV_FLUSH, .id = 5};
	struct ub_bdev_cqe c[2];
	eventfd_t v;
	int fd;

	assert_non_null(eb);
	ub_bdev_init(&eb->dev, &efd_ops, f->mem->sectors, f->mem->flags, "efd");
	eb->mem = ub_bdev_get(f->mem);
	assert_int_equal(ub_fault_bdev_wrap(&eb->dev, &dev, &err), 0);
	assert_int_equal(ub_bdev_open_chan(dev, &ch, &err), 0);
	fd = ub_bdev_chan_event_fd(ch);
	assert_true(fd >= 0);
	ub_fault_bdev_fail_nth(dev, UB_FAULT_FLUSH, 1, EIO, false);
	assert_int_equal(ub_bdev_chan_queue(ch, &req), 0);
	assert_false(readable(fd));
	assert_int_equal(ub_bdev_chan_submit(ch), 0);
	assert_true(readable(fd));
	assert_int_equal(eventfd_read(fd, &v), 0);
	assert_int_equal(ub_bdev_chan_poll(ch, c, 2), 1);
	assert_int_equal(c[0].id, 5);
	assert_int_equal(c[0].res, -EIO);
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	ub_bdev_put(&eb->dev);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	    T(test_wrap_keeps_capacity_and_flags),
	    T(test_nth_read_once_fails_only_that_read),
	    T(test_nth_read_sticky_fails_from_then_on),
	    T(test_nth_write_fails_and_writes_nothing),
	    T(test_write_zeroes_counts_as_a_write),
	    T(test_nth_flush_once_and_sticky),
	    T(test_nth_any_counts_every_kind),
	    T(test_own_rule_errno_wins_over_any),
	    T(test_zero_disarms_and_reset_clears_every_rule),
	    T(test_count_starts_when_rule_is_set),
	    T(test_rejected_requests_are_not_counted),
	    T(test_after_bytes_fails_writes_past_the_budget),
	    T(test_errno_sign_is_normalised),
	    T(test_injected_failure_completes_through_poll),
	    T(test_clone_and_other_channels_share_the_rules),
	    T(test_injected_failure_signals_the_event_fd),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
