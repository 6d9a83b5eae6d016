/* Lazy device (storage.md §5.4) over in-memory devices with the real
 * background worker: reads and writes of unfetched stripes with and
 * without copy_on_read, requests spanning fetched and unfetched stripes,
 * whole-stripe writes that claim a stripe instead of fetching it, several
 * channels on several threads hammering the same stripes, track_written,
 * failed stripes and failed metadata updates, request validation, and
 * that the channel's event fd wakes a sleeping poller. Criteria 81-87
 * carry their number in the test name. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bdev/fault.h"
#include "bdev/file.h"
#include "bdev/lazy.h"
#include "bdev/mem.h"
#include "stripe/bgworker.h"
#include "stripe/metadata.h"
#include "stripe/source.h"
#include "stripe/stripe_state.h"

#include "../stripe/gate_source.h"

#define SECTOR	512u
#define KIB	1024u
#define MIB	(1024u * 1024u)
#define WAIT_MS 5000

/* ---- environment ---- */

struct lenv_opts {
	uint64_t image_bytes, data_bytes;
	unsigned shift;
	bool autofetch;
	bool hold;  /* the gate holds source completions */
	bool image; /* copy_on_read = false: reads may use the image */
	bool track_written;
	bool fault_md;	/* metadata device behind a fault device */
	uint64_t flaky; /* stripe failing every attempt, or 0 */
	bool flaky_on;
	int yield_ms;
};

struct lenv {
	struct lenv_opts o;
	struct ub_bdev *image, *data, *md_mem, *md_fault, *md, *lazy;
	struct ub_stripe_state st;
	struct ub_bgworker *w;
	uint64_t stripe_sectors;
};

static void fill(unsigned char *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)(seed * 97u + i * 13u + (i >> 9) + 1);
}

static void lenv_up(struct lenv *e, const struct lenv_opts *o)
{
	struct ub_source *raw = NULL, *src;
	struct ub_metadata md;
	struct ub_err err = {{0}};
	struct ub_bdev_chan *ch;
	struct ub_bgworker_params p = {0};
	struct ub_lazy_params lp = {0};
	uint64_t nstripes, img_stripes;

	memset(e, 0, sizeof(*e));
	e->o = *o;
	e->stripe_sectors = UINT64_C(1) << o->shift;
	assert_int_equal(ub_mem_bdev_create(o->image_bytes, &e->image, &err),
			 0);
	fill(ub_mem_bdev_data(e->image), o->image_bytes, 1);
	assert_int_equal(ub_mem_bdev_create(o->data_bytes, &e->data, &err), 0);
	nstripes = ub_stripe_count(o->data_bytes / SECTOR, (uint8_t)o->shift);
	img_stripes =
	    ub_stripe_count(o->image_bytes / SECTOR, (uint8_t)o->shift);
	assert_int_equal(ub_metadata_init(&md, (uint8_t)o->shift, nstripes,
					  img_stripes, &err),
			 0);
	assert_int_equal(
	    ub_mem_bdev_create(ub_metadata_size(nstripes), &e->md_mem, &err),
	    0);
	assert_int_equal(ub_bdev_open_chan(e->md_mem, &ch, &err), 0);
	assert_int_equal(ub_metadata_save(ch, &md, &err), 0);
	ub_bdev_chan_close(ch);
	if (o->fault_md) {
		assert_int_equal(
		    ub_fault_bdev_wrap(e->md_mem, &e->md_fault, &err), 0);
		e->md = ub_bdev_get(e->md_fault);
	} else {
		e->md = ub_bdev_get(e->md_mem);
	}
	assert_int_equal(ub_stripe_state_init(&e->st, &md, &err), 0);
	ub_metadata_free(&md);
	gate_reset(o->hold);
	g_gate_hook = NULL;
	assert_int_equal(ub_raw_source_open(e->image, o->shift, &raw, &err), 0);
	src = raw;
	if (o->flaky_on) {
		unsigned n = 4;

		assert_int_equal(
		    ub_flaky_source_wrap(raw, &o->flaky, &n, 1, &src, &err), 0);
	}
	p.data = e->data;
	p.metadata = e->md;
	p.source = gate_wrap(src);
	p.state = &e->st;
	p.autofetch = o->autofetch;
	p.yield_ms = o->yield_ms;
	if (ub_bgworker_start(&p, &e->w, &err))
		fail_msg("worker: %s", err.msg);
	lp.base = e->data;
	lp.image = o->image ? e->image : NULL;
	lp.state = &e->st;
	lp.worker = e->w;
	lp.track_written = o->track_written;
	if (ub_lazy_bdev_create(&lp, &e->lazy, &err))
		fail_msg("lazy: %s", err.msg);
}

static void lenv_down(struct lenv *e)
{
	ub_bdev_put(e->lazy);
	ub_bgworker_stop(e->w);
	ub_stripe_state_fini(&e->st);
	ub_bdev_put(e->md);
	ub_bdev_put(e->md_fault);
	ub_bdev_put(e->md_mem);
	ub_bdev_put(e->data);
	ub_bdev_put(e->image);
}

static struct ub_bdev_chan *lchan(struct lenv *e)
{
	struct ub_bdev_chan *ch = NULL;
	struct ub_err err = {{0}};

	if (ub_bdev_open_chan(e->lazy, &ch, &err))
		fail_msg("channel: %s", err.msg);
	return ch;
}

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Queues one request (retrying while the channel is full). */
static int lqueue(struct ub_bdev_chan *ch, enum ub_bdev_op op, uint64_t sector,
		  uint32_t count, void *buf, uint64_t id, struct iovec *iov)
{
	struct ub_bdev_req req = {
	    .op = op, .sector = sector, .count = count, .id = id};

	if (buf) {
		iov->iov_base = buf;
		iov->iov_len = (size_t)count * SECTOR;
		req.iov = iov;
		req.iovcnt = 1;
	}
	return ub_bdev_chan_queue(ch, &req);
}

/* Waits (sleeping on the event fd) for the completion of id; returns its
 * result. Other completions are stored in *others if given. */
static int lwait(struct ub_bdev_chan *ch, uint64_t id)
{
	struct pollfd pfd = {.fd = ub_bdev_chan_event_fd(ch), .events = POLLIN};
	uint64_t end = ms_now() + WAIT_MS;
	struct ub_bdev_cqe c[8];
	unsigned n;

	assert_true(pfd.fd >= 0);
	while (ms_now() < end) {
		ub_bdev_chan_event_reset(ch);
		n = ub_bdev_chan_poll(ch, c, 8);
		for (unsigned i = 0; i < n; i++)
			if (c[i].id == id)
				return c[i].res;
		if (n)
			continue;
		poll(&pfd, 1, 100);
	}
	fail_msg("request %llu did not complete", (unsigned long long)id);
	return -ETIMEDOUT;
}

static int lio(struct ub_bdev_chan *ch, enum ub_bdev_op op, uint64_t sector,
	       uint32_t count, void *buf)
{
	static uint64_t next_id = 1000;
	uint64_t id = __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED);
	struct iovec iov;
	int rc;

	rc = lqueue(ch, op, sector, count, buf, id, &iov);
	if (rc)
		return rc;
	assert_int_equal(ub_bdev_chan_submit(ch), 0);
	return lwait(ch, id);
}

static unsigned char *image_at(struct lenv *e, uint64_t sector)
{
	return ub_mem_bdev_data(e->image) + sector * SECTOR;
}

static unsigned char *data_at(struct lenv *e, uint64_t sector)
{
	return ub_mem_bdev_data(e->data) + sector * SECTOR;
}

static uint8_t md_header(struct lenv *e, uint64_t stripe)
{
	const unsigned char *d = ub_mem_bdev_data(e->md_mem);

	return d[ub_metadata_stripe_sector(stripe) * SECTOR +
		 ub_metadata_stripe_offset(stripe)];
}

/* 4 stripes of 4096 sectors (the criteria's geometry). */
static const struct lenv_opts big = {
    .image_bytes = 8 * MIB,
    .data_bytes = 8 * MIB,
    .shift = 12,
};

/* ---- criteria 81-87 ---- */

static void test_81_copy_on_read(void **state)
{
	unsigned char *buf = ub_bdev_buf_alloc(8 * SECTOR);
	struct ub_mem_bdev_metrics m;
	struct ub_bdev_chan *ch;
	struct lenv e;

	(void)state;
	lenv_up(&e, &big);
	ch = lchan(&e);
	assert_int_equal(lio(ch, UB_BDEV_READ, 0, 1, buf), 0);
	assert_memory_equal(buf, image_at(&e, 0), SECTOR);
	assert_int_equal(ub_stripe_fetch_state(&e.st, 0), UB_FETCH_FETCHED);
	m = ub_mem_bdev_metrics(e.data);
	assert_int_equal(m.writes, 1);
	assert_int_equal(m.reads, 1);
	assert_int_equal(gate_get(&g_gate.reads[0]), 1);
	/* A write to stripe 1 waits for its fetch, then lands. */
	fill(buf, 8 * SECTOR, 7);
	assert_int_equal(lio(ch, UB_BDEV_WRITE, 4096 + 8, 8, buf), 0);
	assert_int_equal(ub_stripe_fetch_state(&e.st, 1), UB_FETCH_FETCHED);
	assert_memory_equal(data_at(&e, 4096 + 8), buf, 8 * SECTOR);
	assert_memory_equal(data_at(&e, 4096), image_at(&e, 4096), 8 * SECTOR);
	assert_memory_equal(data_at(&e, 4096 + 16), image_at(&e, 4096 + 16),
			    8 * SECTOR);
	assert_int_equal(lio(ch, UB_BDEV_FLUSH, 0, 0, NULL), 0);
	ub_bdev_chan_close(ch);
	free(buf);
	lenv_down(&e);
}

static void test_82_no_copy_on_read_reads_the_image(void **state)
{
	struct lenv_opts o = big;
	unsigned char *buf = ub_bdev_buf_alloc(8 * SECTOR);
	struct ub_mem_bdev_metrics m;
	struct ub_bdev_chan *ch;
	struct lenv e;

	(void)state;
	o.image = true;
	lenv_up(&e, &o);
	ch = lchan(&e);
	assert_int_equal(lio(ch, UB_BDEV_READ, 5, 1, buf), 0);
	assert_memory_equal(buf, image_at(&e, 5), SECTOR);
	assert_int_equal(ub_mem_bdev_metrics(e.image).reads, 1);
	m = ub_mem_bdev_metrics(e.data);
	assert_int_equal(m.reads + m.writes + m.flushes, 0);
	assert_int_equal(ub_stripe_fetch_state(&e.st, 0), UB_FETCH_NOT_FETCHED);
	fill(buf, 8 * SECTOR, 3);
	assert_int_equal(lio(ch, UB_BDEV_WRITE, 4096, 4, buf), 0);
	assert_int_equal(ub_stripe_fetch_state(&e.st, 1), UB_FETCH_FETCHED);
	fill(buf, 8 * SECTOR, 4);
	assert_int_equal(lio(ch, UB_BDEV_WRITE, 4100, 4, buf), 0);
	assert_memory_equal(data_at(&e, 4100), buf, 4 * SECTOR);
	assert_int_equal(gate_get(&g_gate.reads[1]), 1);
	assert_int_equal(lio(ch, UB_BDEV_FLUSH, 0, 0, NULL), 0);
	/* Reads of a fetched stripe go to the data device. */
	assert_int_equal(lio(ch, UB_BDEV_READ, 4100, 4, buf), 0);
	assert_int_equal(ub_mem_bdev_metrics(e.data).reads, 1);
	ub_bdev_chan_close(ch);
	free(buf);
	lenv_down(&e);
}

static void test_83_multi_stripe_read_fetches_both(void **state)
{
	struct lenv_opts o = big;
	unsigned char *buf = ub_bdev_buf_alloc(4 * SECTOR);
	struct ub_bdev_chan *ch;
	struct lenv e;

	(void)state;
	o.image = true;
	lenv_up(&e, &o);
	ch = lchan(&e);
	assert_int_equal(lio(ch, UB_BDEV_READ, 4094, 4, buf), 0);
	assert_memory_equal(buf, image_at(&e, 4094), 4 * SECTOR);
	assert_int_equal(ub_mem_bdev_metrics(e.image).reads, 2);
	assert_int_equal(ub_mem_bdev_metrics(e.data).writes, 2);
	assert_int_equal(ub_mem_bdev_metrics(e.data).reads, 1);
	assert_int_equal(lio(ch, UB_BDEV_READ, 4094, 4, buf), 0);
	assert_int_equal(ub_mem_bdev_metrics(e.image).reads, 2);
	assert_int_equal(ub_mem_bdev_metrics(e.data).reads, 2);
	ub_bdev_chan_close(ch);
	free(buf);
	lenv_down(&e);
}

static void test_84_track_written(void **state)
{
	unsigned char *buf = ub_bdev_buf_alloc(SECTOR);

	(void)state;
	for (int img = 0; img < 2; img++) {
		struct lenv_opts o = big;
		struct ub_bdev_chan *ch;
		struct lenv e;

		o.image = img;
		o.track_written = true;
		lenv_up(&e, &o);
		ch = lchan(&e);
		fill(buf, SECTOR, 9);
		assert_int_equal(lio(ch, UB_BDEV_WRITE, 4096 + 3, 1, buf), 0);
		assert_int_equal(ub_stripe_write_state(&e.st, 1),
				 UB_WRITE_WRITTEN);
		assert_int_equal(md_header(&e, 1), UB_STRIPE_HAS_SOURCE |
						       UB_STRIPE_FETCHED |
						       UB_STRIPE_WRITTEN);
		assert_memory_equal(data_at(&e, 4096 + 3), buf, SECTOR);
		/* Later writes go straight through. */
		assert_int_equal(lio(ch, UB_BDEV_WRITE, 4096 + 4, 1, buf), 0);
		assert_int_equal(ub_stripe_write_state(&e.st, 0),
				 UB_WRITE_NOT_WRITTEN);
		ub_bdev_chan_close(ch);
		lenv_down(&e);
	}
	free(buf);
}

static void test_85_failed_stripe_fails_requests(void **state)
{
	struct lenv_opts o = big;
	unsigned char *buf = ub_bdev_buf_alloc(SECTOR);
	struct ub_bdev_chan *ch;
	struct lenv e;

	(void)state;
	o.flaky_on = true;
	o.flaky = 2;
	lenv_up(&e, &o);
	ch = lchan(&e);
	assert_int_equal(lio(ch, UB_BDEV_READ, 2 * 4096, 1, buf), -EIO);
	assert_int_equal(ub_stripe_fetch_state(&e.st, 2), UB_FETCH_FAILED);
	assert_int_equal(lio(ch, UB_BDEV_WRITE, 2 * 4096 + 1, 1, buf), -EIO);
	assert_int_equal(lio(ch, UB_BDEV_READ, 2 * 4096 - 1, 2, buf), -EIO);
	/* Failed at queue: busy until polled. */
	{
		struct iovec iov;
		struct ub_bdev_cqe c;

		assert_int_equal(
		    lqueue(ch, UB_BDEV_READ, 2 * 4096, 1, buf, 77, &iov), 0);
		assert_true(ub_bdev_chan_busy(ch));
		assert_int_equal(ub_bdev_chan_poll(ch, &c, 1), 1);
		assert_int_equal(c.id, 77);
		assert_int_equal(c.res, -EIO);
		assert_false(ub_bdev_chan_busy(ch));
	}
	/* Other stripes are fine. */
	assert_int_equal(lio(ch, UB_BDEV_READ, 4096, 1, buf), 0);
	ub_bdev_chan_close(ch);
	free(buf);
	lenv_down(&e);
}

static void test_86_clone_serves_the_same_data(void **state)
{
	unsigned char *buf = ub_bdev_buf_alloc(SECTOR);
	unsigned char *rd = ub_bdev_buf_alloc(SECTOR);
	struct ub_bdev_chan *a, *b;
	struct ub_bdev *clone;
	struct ub_err err = {{0}};
	struct lenv e;

	(void)state;
	lenv_up(&e, &big);
	clone = ub_bdev_get(e.lazy);
	a = lchan(&e);
	assert_int_equal(ub_bdev_open_chan(clone, &b, &err), 0);
	assert_int_equal(clone->sectors, e.lazy->sectors);
	fill(buf, SECTOR, 11);
	assert_int_equal(lio(a, UB_BDEV_WRITE, 3 * 4096 + 1, 1, buf), 0);
	assert_int_equal(lio(b, UB_BDEV_READ, 3 * 4096 + 1, 1, rd), 0);
	assert_memory_equal(rd, buf, SECTOR);
	ub_bdev_chan_close(a);
	ub_bdev_chan_close(b);
	ub_bdev_put(clone);
	free(buf);
	free(rd);
	lenv_down(&e);
}

/* ---- spanning, partial stripes, clamping ---- */

static void test_read_spanning_fetched_and_unfetched(void **state)
{
	struct lenv_opts o = big;
	unsigned char *w = ub_bdev_buf_alloc(4 * SECTOR);
	unsigned char *r = ub_bdev_buf_alloc(8 * SECTOR);
	struct ub_bdev_chan *ch;
	struct lenv e;

	(void)state;
	o.image = true;
	lenv_up(&e, &o);
	ch = lchan(&e);
	fill(w, 4 * SECTOR, 21);
	/* Stripe 0 fetched and partly overwritten, stripe 1 not fetched. */
	assert_int_equal(lio(ch, UB_BDEV_WRITE, 4092, 4, w), 0);
	assert_int_equal(ub_stripe_fetch_state(&e.st, 1), UB_FETCH_NOT_FETCHED);
	assert_int_equal(lio(ch, UB_BDEV_READ, 4090, 8, r), 0);
	assert_memory_equal(r, image_at(&e, 4090), 2 * SECTOR);
	assert_memory_equal(r + 2 * SECTOR, w, 4 * SECTOR);
	assert_memory_equal(r + 6 * SECTOR, image_at(&e, 4096), 2 * SECTOR);
	assert_int_equal(ub_stripe_fetch_state(&e.st, 1), UB_FETCH_FETCHED);
	/* The written part was never fetched over. */
	assert_memory_equal(data_at(&e, 4092), w, 4 * SECTOR);
	ub_bdev_chan_close(ch);
	free(w);
	free(r);
	lenv_down(&e);
}

static void test_image_reads_clamped_and_zero_filled(void **state)
{
	/* Stripes of 8 sectors; the image ends 3 sectors into stripe 2; the
	 * disk has 6 stripes. */
	struct lenv_opts o = {.image_bytes = 19 * SECTOR,
			      .data_bytes = 48 * SECTOR,
			      .shift = 3,
			      .image = true};
	unsigned char *r = ub_bdev_buf_alloc(8 * SECTOR);
	struct ub_bdev_chan *ch;
	struct lenv e;

	(void)state;
	lenv_up(&e, &o);
	ch = lchan(&e);
	assert_int_equal(ub_stripe_fetch_state(&e.st, 2), UB_FETCH_NOT_FETCHED);
	assert_int_equal(ub_stripe_fetch_state(&e.st, 3), UB_FETCH_NO_SOURCE);
	memset(r, 0xEE, 8 * SECTOR);
	assert_int_equal(lio(ch, UB_BDEV_READ, 16, 8, r), 0);
	assert_memory_equal(r, image_at(&e, 16), 3 * SECTOR);
	for (unsigned i = 3 * SECTOR; i < 8 * SECTOR; i++)
		assert_int_equal(r[i], 0);
	/* Entirely past the image end. */
	memset(r, 0xEE, 8 * SECTOR);
	assert_int_equal(lio(ch, UB_BDEV_READ, 20, 2, r), 0);
	for (unsigned i = 0; i < 2 * SECTOR; i++)
		assert_int_equal(r[i], 0);
	assert_int_equal(ub_stripe_fetch_state(&e.st, 2), UB_FETCH_NOT_FETCHED);
	/* Copy on read of the partial stripe: zero-filled too. */
	memset(data_at(&e, 16), 0x55, 8 * SECTOR);
	memset(r, 0xEE, 8 * SECTOR);
	assert_int_equal(lio(ch, UB_BDEV_READ, 15, 2, r), 0);
	assert_int_equal(ub_stripe_fetch_state(&e.st, 2), UB_FETCH_FETCHED);
	for (unsigned i = 3 * SECTOR; i < 8 * SECTOR; i++)
		assert_int_equal(data_at(&e, 16)[i], 0);
	ub_bdev_chan_close(ch);
	free(r);
	lenv_down(&e);
}

static void test_out_of_range_and_zero_length_rejected(void **state)
{
	unsigned char *buf = ub_bdev_buf_alloc(2 * SECTOR);
	struct ub_bdev_chan *ch;
	struct iovec iov;
	struct lenv e;
	uint64_t end;

	(void)state;
	lenv_up(&e, &big);
	ch = lchan(&e);
	end = e.lazy->sectors;
	assert_int_equal(end, 4 * 4096);
	assert_int_equal(lqueue(ch, UB_BDEV_READ, end, 1, buf, 1, &iov),
			 -EINVAL);
	assert_int_equal(lqueue(ch, UB_BDEV_WRITE, end - 1, 2, buf, 1, &iov),
			 -EINVAL);
	assert_int_equal(lqueue(ch, UB_BDEV_READ, 0, 0, buf, 1, &iov), -EINVAL);
	assert_int_equal(
	    lqueue(ch, UB_BDEV_READ, UINT64_MAX - 1, 2, buf, 1, &iov), -EINVAL);
	assert_false(ub_bdev_chan_busy(ch));
	assert_int_equal(gate_get(&g_gate.nreq), 0);
	assert_int_equal(lio(ch, UB_BDEV_READ, end - 1, 1, buf), 0);
	ub_bdev_chan_close(ch);
	free(buf);
	lenv_down(&e);
}

/* ---- writes, claims, autofetch ---- */

static void test_write_to_unfetched_survives_autofetch(void **state)
{
	struct lenv_opts o = {.image_bytes = 256 * KIB,
			      .data_bytes = 256 * KIB,
			      .shift = 3,
			      .autofetch = true,
			      .hold = true,
			      .yield_ms = -1};
	unsigned char *w = ub_bdev_buf_alloc(2 * SECTOR);
	struct ub_bdev_chan *ch;
	struct iovec iov;
	struct lenv e;

	(void)state;
	lenv_up(&e, &o);
	ch = lchan(&e);
	fill(w, 2 * SECTOR, 31);
	/* Stripe 40 is far ahead of autofetch: demand-fetched first. */
	assert_int_equal(lqueue(ch, UB_BDEV_WRITE, 40 * 8 + 3, 2, w, 5, &iov),
			 0);
	assert_int_equal(ub_bdev_chan_submit(ch), 0);
	gate_open();
	assert_int_equal(lwait(ch, 5), 0);
	/* Let autofetch run past it. */
	for (uint64_t end = ms_now() + WAIT_MS;
	     atomic_load(&e.st.fetched) < 64 && ms_now() < end;)
		usleep(1000);
	assert_int_equal(atomic_load(&e.st.fetched), 64);
	assert_int_equal(gate_get(&g_gate.reads[40]), 1);
	assert_memory_equal(data_at(&e, 40 * 8 + 3), w, 2 * SECTOR);
	assert_memory_equal(data_at(&e, 40 * 8), image_at(&e, 40 * 8),
			    3 * SECTOR);
	assert_memory_equal(data_at(&e, 0), image_at(&e, 0), 40 * 8 * SECTOR);
	ub_bdev_chan_close(ch);
	free(w);
	lenv_down(&e);
}

static void test_whole_stripe_write_claims_without_fetch(void **state)
{
	struct lenv_opts o = big;
	unsigned char *w = ub_bdev_buf_alloc(4096 * SECTOR);
	struct ub_bgworker_counters c;
	struct ub_bdev_chan *ch;
	struct lenv e;

	(void)state;
	o.track_written = true;
	lenv_up(&e, &o);
	ch = lchan(&e);
	fill(w, 4096 * SECTOR, 41);
	assert_int_equal(lio(ch, UB_BDEV_WRITE, 2 * 4096, 4096, w), 0);
	assert_int_equal(ub_stripe_fetch_state(&e.st, 2), UB_FETCH_FETCHED);
	assert_int_equal(gate_get(&g_gate.reads[2]), 0);
	assert_int_equal(ub_mem_bdev_metrics(e.image).reads, 0);
	assert_int_equal(md_header(&e, 2), UB_STRIPE_HAS_SOURCE |
					       UB_STRIPE_FETCHED |
					       UB_STRIPE_WRITTEN);
	assert_memory_equal(data_at(&e, 2 * 4096), w, 4096 * SECTOR);
	/* A local part plus a whole unfetched stripe in one write: only the
	 * unfetched stripe is claimed. */
	assert_int_equal(lio(ch, UB_BDEV_WRITE, 4096 - 4, 4, w), 0);
	assert_int_equal(gate_get(&g_gate.reads[0]), 1);
	{
		unsigned char *w2 = ub_bdev_buf_alloc(4100 * SECTOR);

		fill(w2, 4100 * SECTOR, 42);
		assert_int_equal(lio(ch, UB_BDEV_WRITE, 4096 - 4, 4100, w2), 0);
		assert_int_equal(gate_get(&g_gate.reads[1]), 0);
		assert_memory_equal(data_at(&e, 4096 - 4), w2, 4100 * SECTOR);
		free(w2);
	}
	/* Whole-stripe write-zeroes claims too. */
	memset(data_at(&e, 3 * 4096), 0x5A, 4096 * SECTOR);
	assert_int_equal(lio(ch, UB_BDEV_WRITE_ZEROES, 3 * 4096, 4096, NULL),
			 0);
	assert_int_equal(gate_get(&g_gate.reads[3]), 0);
	for (unsigned i = 0; i < 4096 * SECTOR; i++)
		assert_int_equal(data_at(&e, 3 * 4096)[i], 0);
	assert_int_equal(ub_stripe_fetch_state(&e.st, 3), UB_FETCH_FETCHED);
	ub_bgworker_counters(e.w, &c);
	assert_int_equal(c.claims_granted, 3);
	assert_int_equal(c.claims_committed, 3);
	ub_bdev_chan_close(ch);
	free(w);
	lenv_down(&e);
}

static void test_claim_denied_for_one_stripe_falls_back_to_fetch(void **state)
{
	/* 8-sector stripes; stripe 2 is being fetched (held by the gate)
	 * when a write covering stripes 1 and 2 whole asks for claims: 1 is
	 * granted, 2 denied, so 1 is given back and both are fetched. */
	struct lenv_opts o = {.image_bytes = 64 * SECTOR,
			      .data_bytes = 64 * SECTOR,
			      .shift = 3,
			      .hold = true};
	unsigned char *w = ub_bdev_buf_alloc(16 * SECTOR);
	unsigned char *r = ub_bdev_buf_alloc(SECTOR);
	struct ub_bgworker_counters c;
	struct ub_bdev_chan *a, *b;
	struct iovec iov, iov2;
	struct lenv e;
	uint64_t end;

	(void)state;
	lenv_up(&e, &o);
	a = lchan(&e);
	b = lchan(&e);
	assert_int_equal(lqueue(b, UB_BDEV_READ, 2 * 8 + 1, 1, r, 1, &iov), 0);
	assert_int_equal(ub_bdev_chan_submit(b), 0);
	end = ms_now() + WAIT_MS;
	while (gate_get(&g_gate.nreq) < 1 && ms_now() < end)
		usleep(200);
	fill(w, 16 * SECTOR, 61);
	assert_int_equal(lqueue(a, UB_BDEV_WRITE, 8, 16, w, 2, &iov2), 0);
	assert_int_equal(ub_bdev_chan_submit(a), 0);
	end = ms_now() + WAIT_MS;
	do {
		struct ub_bdev_cqe cq;

		assert_int_equal(ub_bdev_chan_poll(a, &cq, 1), 0);
		ub_bgworker_counters(e.w, &c);
		usleep(200);
	} while (c.claims_aborted < 1 && ms_now() < end);
	assert_int_equal(c.claims_granted, 1);
	assert_int_equal(c.claims_denied, 1);
	assert_int_equal(c.claims_aborted, 1);
	gate_open();
	/* b is polled first: its read is issued before a's write. */
	assert_int_equal(lwait(b, 1), 0);
	assert_int_equal(lwait(a, 2), 0);
	assert_memory_equal(r, image_at(&e, 17), SECTOR);
	assert_memory_equal(data_at(&e, 8), w, 16 * SECTOR);
	assert_int_equal(gate_get(&g_gate.reads[1]), 1);
	assert_int_equal(gate_get(&g_gate.reads[2]), 1);
	ub_bdev_chan_close(a);
	ub_bdev_chan_close(b);
	free(w);
	free(r);
	lenv_down(&e);
}

static void test_partial_write_zeroes_and_discard_fetch_first(void **state)
{
	struct lenv_opts o = big;
	unsigned char *r = ub_bdev_buf_alloc(8 * SECTOR);
	struct ub_bdev_chan *ch;
	struct lenv e;

	(void)state;
	lenv_up(&e, &o);
	ch = lchan(&e);
	assert_int_equal(lio(ch, UB_BDEV_WRITE_ZEROES, 4096 + 2, 2, NULL), 0);
	assert_int_equal(gate_get(&g_gate.reads[1]), 1);
	assert_int_equal(lio(ch, UB_BDEV_READ, 4096, 8, r), 0);
	assert_memory_equal(r, image_at(&e, 4096), 2 * SECTOR);
	for (unsigned i = 2 * SECTOR; i < 4 * SECTOR; i++)
		assert_int_equal(r[i], 0);
	assert_memory_equal(r + 4 * SECTOR, image_at(&e, 4100), 4 * SECTOR);
	assert_int_equal(lio(ch, UB_BDEV_DISCARD, 2 * 4096 + 8, 8, NULL), 0);
	assert_int_equal(ub_stripe_fetch_state(&e.st, 2), UB_FETCH_FETCHED);
	ub_bdev_chan_close(ch);
	free(r);
	lenv_down(&e);
}

static void test_md_write_failure_fails_the_request(void **state)
{
	struct lenv_opts o = big;
	unsigned char *buf = ub_bdev_buf_alloc(4096 * SECTOR);
	struct ub_bdev_chan *ch;
	struct lenv e;

	(void)state;
	o.fault_md = true;
	o.track_written = true;
	lenv_up(&e, &o);
	ch = lchan(&e);
	ub_fault_bdev_fail_nth(e.md_fault, UB_FAULT_WRITE, 1, EIO, true);
	fill(buf, SECTOR, 51);
	/* Needs FETCHED and WRITTEN: both updates fail for good. */
	assert_int_equal(lio(ch, UB_BDEV_WRITE, 1, 1, buf), -EIO);
	assert_int_equal(lio(ch, UB_BDEV_READ, 4096, 1, buf), -EIO);
	/* A claimed write whose FETCHED update fails. */
	assert_int_equal(lio(ch, UB_BDEV_WRITE, 2 * 4096, 4096, buf), -EIO);
	ub_fault_bdev_reset(e.md_fault);
	assert_int_equal(lio(ch, UB_BDEV_WRITE, 3 * 4096, 1, buf), 0);
	ub_bdev_chan_close(ch);
	free(buf);
	lenv_down(&e);
}

/* ---- threads ---- */

#define HAMMER_STRIPES 32u /* 8-sector stripes */
#define HAMMER_OPS     300
/* Partial writes into the claimed half race with the claims at the byte
 * level on purpose (a guest may do that); ThreadSanitizer would report
 * that race of the test itself, so it is left out there. */
#if defined(__SANITIZE_THREAD__)
#define HAMMER_OVERLAP 0
#else
#define HAMMER_OVERLAP 1
#endif

struct hammer {
	struct lenv *e;
	int who; /* 0, 1: partial writers with read-back; 2: claimer */
	unsigned seed;
	unsigned char last[HAMMER_STRIPES * 8]; /* tag per sector */
	int failures;
};

static void hammer_claims(struct hammer *h, struct ub_bdev_chan *ch,
			  unsigned char *w)
{
	/* Whole stripes of the upper half, once each, from the top down
	 * (autofetch comes up from the bottom). */
	for (unsigned i = 0; i < HAMMER_STRIPES / 2; i++) {
		uint64_t stripe = HAMMER_STRIPES - 1 - i;

		memset(w, 0xC0 | (int)(stripe & 0xf), 8 * SECTOR);
		if (lio(ch, UB_BDEV_WRITE, stripe * 8, 8, w))
			h->failures++;
	}
}

static void *hammer_thread(void *arg)
{
	struct hammer *h = arg;
	struct ub_bdev_chan *ch = NULL;
	struct ub_err err = {{0}};
	unsigned char *w = ub_bdev_buf_alloc(8 * SECTOR);
	unsigned char *r = ub_bdev_buf_alloc(SECTOR);

	if (ub_bdev_open_chan(h->e->lazy, &ch, &err)) {
		h->failures++;
		goto out;
	}
	if (h->who == 2) {
		hammer_claims(h, ch, w);
		goto out_close;
	}
	for (int i = 0; i < HAMMER_OPS; i++) {
		unsigned x = rand_r(&h->seed);
		unsigned char tag = (unsigned char)(1 + i % 250);
		uint64_t stripe, sector;

		stripe =
		    x % (HAMMER_OVERLAP ? HAMMER_STRIPES : HAMMER_STRIPES / 2);
		sector = stripe * 8 + ((x >> 8) % 4) * 2 + (unsigned)h->who;
		memset(w, tag, SECTOR);
		if (lio(ch, UB_BDEV_WRITE, sector, 1, w)) {
			h->failures++;
			continue;
		}
		h->last[sector] = tag;
		/* Claims only touch the upper half: read back below it. */
		if (stripe >= HAMMER_STRIPES / 2)
			continue;
		if (lio(ch, UB_BDEV_READ, sector, 1, r) || r[0] != tag ||
		    r[SECTOR - 1] != tag)
			h->failures++;
	}
out_close:
	ub_bdev_chan_close(ch);
out:
	free(w);
	free(r);
	return NULL;
}

static atomic_bool g_trickle_stop;

/* Lets source completions through one at a time, so that fetches stay in
 * flight while the channels work. */
static void *trickle_thread(void *arg)
{
	(void)arg;
	while (!atomic_load(&g_trickle_stop)) {
		gate_release(1);
		usleep(300);
	}
	gate_open();
	return NULL;
}

static void test_concurrent_channels_on_threads(void **state)
{
	struct lenv_opts o = {.image_bytes = HAMMER_STRIPES * 8 * SECTOR,
			      .data_bytes = HAMMER_STRIPES * 8 * SECTOR,
			      .shift = 3,
			      .autofetch = true,
			      .hold = true,
			      .yield_ms = -1};
	struct hammer h[3];
	pthread_t th[3], tr;
	struct lenv e;

	(void)state;
	lenv_up(&e, &o);
	atomic_store(&g_trickle_stop, false);
	assert_int_equal(pthread_create(&tr, NULL, trickle_thread, NULL), 0);
	for (int i = 0; i < 3; i++) {
		memset(&h[i], 0, sizeof(h[i]));
		h[i].e = &e;
		h[i].who = i;
		h[i].seed = 1234u + (unsigned)i;
		assert_int_equal(
		    pthread_create(&th[i], NULL, hammer_thread, &h[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(h[i].failures, 0);
	}
	atomic_store(&g_trickle_stop, true);
	pthread_join(tr, NULL);
	for (uint64_t end = ms_now() + WAIT_MS;
	     atomic_load(&e.st.fetched) < HAMMER_STRIPES && ms_now() < end;)
		usleep(1000);
	assert_int_equal(atomic_load(&e.st.fetched), HAMMER_STRIPES);
	for (unsigned s = 0; s < HAMMER_STRIPES * 8; s++) {
		unsigned stripe = s / 8, who = s % 2;
		unsigned char mine = h[who].last[s];
		const unsigned char *d = data_at(&e, s);

		if (stripe < HAMMER_STRIPES / 2) {
			/* Last acknowledged write, else the image. */
			if (mine)
				assert_int_equal(d[0], mine);
			else
				assert_memory_equal(d, image_at(&e, s), SECTOR);
			continue;
		}
		/* Claimed: the claim's data or a partial write, never the
		 * image. */
		if (d[0] != (0xC0 | (stripe & 0xf)))
			assert_true(mine && d[0] == mine);
		for (unsigned i = 1; i < SECTOR; i++)
			assert_int_equal(d[i], d[0]);
	}
	lenv_down(&e);
}

/* ---- wake-ups ---- */

struct sleeper {
	struct lenv *e;
	struct ub_bdev_chan *ch;
	int res;
	int wakeups;
	uint64_t woke_ms;
	unsigned char *buf;
};

static void *sleeper_thread(void *arg)
{
	struct sleeper *s = arg;
	int epfd = ub_bdev_chan_event_fd(s->ch);
	uint64_t end = ms_now() + WAIT_MS;
	struct epoll_event ev;
	struct ub_bdev_cqe c;

	s->res = 1;
	while (ms_now() < end) {
		ub_bdev_chan_event_reset(s->ch);
		if (ub_bdev_chan_poll(s->ch, &c, 1)) {
			s->res = c.res;
			s->woke_ms = ms_now();
			return NULL;
		}
		if (epoll_wait(epfd, &ev, 1, 1000) > 0)
			s->wakeups++;
	}
	return NULL;
}

static void test_event_fd_wakes_a_sleeping_poller(void **state)
{
	struct lenv_opts o = big;
	struct sleeper s = {0};
	struct iovec iov;
	pthread_t th;
	uint64_t released;
	struct lenv e;

	(void)state;
	o.hold = true;
	lenv_up(&e, &o);
	s.e = &e;
	s.ch = lchan(&e);
	s.buf = ub_bdev_buf_alloc(SECTOR);
	assert_int_equal(
	    lqueue(s.ch, UB_BDEV_READ, 3 * 4096, 1, s.buf, 9, &iov), 0);
	assert_int_equal(ub_bdev_chan_submit(s.ch), 0);
	assert_int_equal(pthread_create(&th, NULL, sleeper_thread, &s), 0);
	usleep(100000);
	released = ms_now();
	gate_release(1);
	pthread_join(th, NULL);
	assert_int_equal(s.res, 0);
	assert_true(s.woke_ms >= released);
	assert_true(s.woke_ms - released < 1000);
	/* It slept: a handful of wake-ups, not a spin. */
	assert_true(s.wakeups < 20);
	assert_memory_equal(s.buf, image_at(&e, 3 * 4096), SECTOR);
	ub_bdev_chan_close(s.ch);
	free(s.buf);
	lenv_down(&e);
}

/* ---- real engines ---- */

static struct ub_bdev *uring_file(const char *path, uint64_t bytes,
				  const unsigned char *content, bool ro)
{
	struct ub_file_bdev_opts fo = {
	    .path = path, .readonly = ro, .direct = true, .queue_depth = 64};
	struct ub_bdev *dev = NULL;
	struct ub_err err = {{0}};
	int fd;

	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	if (content)
		assert_int_equal(write(fd, content, bytes), (ssize_t)bytes);
	else
		assert_int_equal(ftruncate(fd, (off_t)bytes), 0);
	close(fd);
	if (ub_uring_bdev_open(&fo, &dev, &err))
		fail_msg("%s: %s", path, err.msg);
	return dev;
}

static int64_t cpu_us(void)
{
	struct rusage u;

	getrusage(RUSAGE_SELF, &u);
	return (int64_t)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000 +
	       u.ru_utime.tv_usec + u.ru_stime.tv_usec;
}

/* Process CPU time (ms) used while the test thread sleeps for ms. */
static int64_t cpu_ms_during_sleep(unsigned ms)
{
	int64_t before = cpu_us();

	usleep(ms * 1000);
	return (cpu_us() - before) / 1000;
}

/* The same paths over io_uring files: the worker and the channel sleep
 * on real completion eventfds. */
static void test_over_io_uring_files(void **state)
{
	const uint64_t bytes = 2 * MIB, shift = 7; /* 64 KiB stripes */
	const uint64_t nstripes = bytes / SECTOR >> shift;
	char dir[] = "/var/tmp/ubiblk-lazy.XXXXXX", p_img[64], p_data[64],
	     p_md[64];
	unsigned char *img = malloc(bytes), *w = ub_bdev_buf_alloc(64 * KIB),
		      *r = ub_bdev_buf_alloc(64 * KIB);
	struct ub_bdev *image, *data, *mdd, *lazy = NULL;
	struct ub_bgworker_params p = {0};
	struct ub_lazy_params lp = {0};
	struct ub_stripe_state st;
	struct ub_bgworker *wk = NULL;
	struct ub_bdev_chan *ch;
	struct ub_err err = {{0}};
	struct ub_metadata md;
	uint64_t end;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(p_img, sizeof(p_img), "%s/img", dir);
	snprintf(p_data, sizeof(p_data), "%s/data", dir);
	snprintf(p_md, sizeof(p_md), "%s/md", dir);
	fill(img, bytes, 77);
	image = uring_file(p_img, bytes, img, true);
	data = uring_file(p_data, bytes, NULL, false);
	mdd = uring_file(p_md, ub_metadata_size(nstripes), NULL, false);
	assert_int_equal(
	    ub_metadata_init(&md, (uint8_t)shift, nstripes, nstripes, &err), 0);
	assert_int_equal(ub_bdev_open_chan(mdd, &ch, &err), 0);
	assert_int_equal(ub_metadata_save(ch, &md, &err), 0);
	ub_bdev_chan_close(ch);
	assert_int_equal(ub_stripe_state_init(&st, &md, &err), 0);
	assert_int_equal(
	    ub_raw_source_open(image, (unsigned)shift, &p.source, &err), 0);
	p.data = data;
	p.metadata = mdd;
	p.state = &st;
	p.autofetch = true;
	if (ub_bgworker_start(&p, &wk, &err))
		fail_msg("worker: %s", err.msg);
	lp.base = data;
	lp.image = image;
	lp.state = &st;
	lp.worker = wk;
	lp.track_written = true;
	assert_int_equal(ub_lazy_bdev_create(&lp, &lazy, &err), 0);
	assert_int_equal(ub_bdev_open_chan(lazy, &ch, &err), 0);
	fill(w, 64 * KIB, 78);
	assert_int_equal(lio(ch, UB_BDEV_WRITE, 5 * 128 + 3, 9, w), 0);
	assert_int_equal(lio(ch, UB_BDEV_WRITE, 9 * 128, 128, w), 0);
	assert_int_equal(lio(ch, UB_BDEV_FLUSH, 0, 0, NULL), 0);
	assert_int_equal(lio(ch, UB_BDEV_READ, 5 * 128, 128, r), 0);
	assert_memory_equal(r, img + 5 * 128 * SECTOR, 3 * SECTOR);
	assert_memory_equal(r + 3 * SECTOR, w, 9 * SECTOR);
	assert_memory_equal(r + 12 * SECTOR, img + (5 * 128 + 12) * SECTOR,
			    116 * SECTOR);
	end = ms_now() + WAIT_MS;
	while (atomic_load(&st.fetched) < nstripes && ms_now() < end)
		usleep(1000);
	assert_int_equal(atomic_load(&st.fetched), nstripes);
	assert_int_equal(lio(ch, UB_BDEV_READ, 9 * 128, 128, r), 0);
	assert_memory_equal(r, w, 64 * KIB);
	assert_int_equal(lio(ch, UB_BDEV_READ, 20 * 128, 128, r), 0);
	assert_memory_equal(r, img + 20 * 128 * SECTOR, 64 * KIB);
	/* Idle: the worker sleeps instead of spinning. */
	assert_true(cpu_ms_during_sleep(300) < 60);
	ub_bdev_chan_close(ch);
	ub_bdev_put(lazy);
	ub_bgworker_stop(wk);
	ub_stripe_state_fini(&st);
	ub_metadata_free(&md);
	/* The metadata on disk says everything is fetched. */
	assert_int_equal(ub_bdev_open_chan(mdd, &ch, &err), 0);
	assert_int_equal(ub_metadata_load(ch, &md, &err), 0);
	assert_true(ub_metadata_has_fetched_all(&md));
	assert_int_equal(md.headers[9], UB_STRIPE_HAS_SOURCE |
					    UB_STRIPE_FETCHED |
					    UB_STRIPE_WRITTEN);
	ub_metadata_free(&md);
	ub_bdev_chan_close(ch);
	ub_bdev_put(mdd);
	ub_bdev_put(data);
	ub_bdev_put(image);
	unlink(p_img);
	unlink(p_data);
	unlink(p_md);
	rmdir(dir);
	free(img);
	free(w);
	free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_81_copy_on_read),
	    cmocka_unit_test(test_82_no_copy_on_read_reads_the_image),
	    cmocka_unit_test(test_83_multi_stripe_read_fetches_both),
	    cmocka_unit_test(test_84_track_written),
	    cmocka_unit_test(test_85_failed_stripe_fails_requests),
	    cmocka_unit_test(test_86_clone_serves_the_same_data),
	    cmocka_unit_test(test_read_spanning_fetched_and_unfetched),
	    cmocka_unit_test(test_image_reads_clamped_and_zero_filled),
	    cmocka_unit_test(test_out_of_range_and_zero_length_rejected),
	    cmocka_unit_test(test_write_to_unfetched_survives_autofetch),
	    cmocka_unit_test(test_whole_stripe_write_claims_without_fetch),
	    cmocka_unit_test(
		test_claim_denied_for_one_stripe_falls_back_to_fetch),
	    cmocka_unit_test(test_partial_write_zeroes_and_discard_fetch_first),
	    cmocka_unit_test(test_md_write_failure_fails_the_request),
	    cmocka_unit_test(test_concurrent_channels_on_threads),
	    cmocka_unit_test(test_event_fd_wakes_a_sleeping_poller),
	    cmocka_unit_test(test_over_io_uring_files),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
