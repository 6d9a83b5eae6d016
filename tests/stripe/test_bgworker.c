/* Background worker, stripe fetcher and metadata flusher (storage.md
 * §5.5-§5.8), driven through the real thread over in-memory devices:
 * criteria 63-80 (number in the test name), the order of data and
 * metadata I/O, retries, metadata failures that must fail (not hang) the
 * stripe, size checks at start, claims, yielding to the guest and the
 * status report.
 *
 * The data and metadata devices are wrapped by a recording device and the
 * source by a "gate" that logs every stripe it delivers and can hold
 * completions back until the test releases them. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "bdev/fault.h"
#include "bdev/mem.h"
#include "stripe/bgworker.h"
#include "stripe/metadata.h"
#include "stripe/source.h"
#include "stripe/stripe_state.h"

#include "gate_source.h"

#define SECTOR	512u
#define KIB	1024u
#define MIB	(1024u * 1024u)
#define WAIT_MS 5000u
#define LOG_MAX 8192u

/* ---- I/O log shared by the recording devices and the gate ---- */

struct io_ev {
	char dev; /* 'S' source, 'D' data, 'M' metadata */
	enum ub_bdev_op op;
	uint64_t sector; /* stripe for 'S' */
	uint32_t count;
	int res;
};

static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;
static struct io_ev g_log[LOG_MAX];
static unsigned g_nlog;

static void log_add(char dev, enum ub_bdev_op op, uint64_t sector,
		    uint32_t count, int res)
{
	pthread_mutex_lock(&g_log_lock);
	if (g_nlog < LOG_MAX)
		g_log[g_nlog++] = (struct io_ev){dev, op, sector, count, res};
	pthread_mutex_unlock(&g_log_lock);
}

static unsigned log_snapshot(struct io_ev *out, unsigned max)
{
	unsigned n;

	pthread_mutex_lock(&g_log_lock);
	n = g_nlog < max ? g_nlog : max;
	memcpy(out, g_log, n * sizeof(*out));
	pthread_mutex_unlock(&g_log_lock);
	return n;
}

static void log_clear(void)
{
	pthread_mutex_lock(&g_log_lock);
	g_nlog = 0;
	pthread_mutex_unlock(&g_log_lock);
}

static unsigned log_count(char dev, enum ub_bdev_op op)
{
	unsigned n = 0;

	pthread_mutex_lock(&g_log_lock);
	for (unsigned i = 0; i < g_nlog; i++)
		if (g_log[i].dev == dev && g_log[i].op == op &&
		    g_log[i].res == 0)
			n++;
	pthread_mutex_unlock(&g_log_lock);
	return n;
}

/* ---- recording device: logs every completion it reports ---- */

struct rec_bdev {
	struct ub_bdev dev;
	struct ub_bdev *inner;
	char tag;
};

struct rec_chan {
	struct ub_bdev_chan ch;
	struct ub_bdev_chan *inner;
	/* What each in-flight id is, to log it at completion. */
	struct {
		uint64_t id, sector;
		uint32_t count;
		enum ub_bdev_op op;
		bool used;
	} track[256];
};

static int rec_queue(struct ub_bdev_chan *ch, const struct ub_bdev_req *req)
{
	struct rec_chan *rc = (struct rec_chan *)ch;
	unsigned i;
	int r;

	for (i = 0; i < 256 && rc->track[i].used; i++)
		;
	if (i == 256)
		return -EAGAIN;
	r = ub_bdev_chan_queue(rc->inner, req);
	if (r)
		return r;
	rc->track[i].used = true;
	rc->track[i].id = req->id;
	rc->track[i].sector = req->sector;
	rc->track[i].count = req->count;
	rc->track[i].op = req->op;
	ch->inflight++;
	return 0;
}

static int rec_submit(struct ub_bdev_chan *ch)
{
	return ub_bdev_chan_submit(((struct rec_chan *)ch)->inner);
}

static unsigned rec_poll(struct ub_bdev_chan *ch, struct ub_bdev_cqe *out,
			 unsigned max)
{
	struct rec_chan *rc = (struct rec_chan *)ch;
	char tag = ((struct rec_bdev *)ch->dev)->tag;
	unsigned n = ub_bdev_chan_poll(rc->inner, out, max);

	for (unsigned k = 0; k < n; k++) {
		for (unsigned i = 0; i < 256; i++) {
			if (!rc->track[i].used || rc->track[i].id != out[k].id)
				continue;
			rc->track[i].used = false;
			log_add(tag, rc->track[i].op, rc->track[i].sector,
				rc->track[i].count, out[k].res);
			break;
		}
	}
	ch->inflight -= n;
	return n;
}

static int rec_event_fd(struct ub_bdev_chan *ch)
{
	return ub_bdev_chan_event_fd(((struct rec_chan *)ch)->inner);
}

static void rec_close(struct ub_bdev_chan *ch)
{
	ub_bdev_chan_close(((struct rec_chan *)ch)->inner);
	free(ch);
}

static const struct ub_bdev_chan_ops rec_chan_ops = {
    .queue = rec_queue,
    .submit = rec_submit,
    .poll = rec_poll,
    .event_fd = rec_event_fd,
    .close = rec_close,
};

static int rec_open_chan(struct ub_bdev *dev, struct ub_bdev_chan **out,
			 struct ub_err *err)
{
	struct rec_chan *rc = calloc(1, sizeof(*rc));
	int r;

	if (!rc)
		return -ENOMEM;
	r = ub_bdev_open_chan(((struct rec_bdev *)dev)->inner, &rc->inner, err);
	if (r) {
		free(rc);
		return r;
	}
	rc->ch.ops = &rec_chan_ops;
	rc->ch.dev = ub_bdev_get(dev);
	rc->ch.depth = 256;
	*out = &rc->ch;
	return 0;
}

static void rec_destroy(struct ub_bdev *dev)
{
	ub_bdev_put(((struct rec_bdev *)dev)->inner);
	free(dev);
}

static const struct ub_bdev_ops rec_ops = {
    .open_chan = rec_open_chan,
    .destroy = rec_destroy,
};

static struct ub_bdev *rec_wrap(struct ub_bdev *inner, char tag)
{
	struct rec_bdev *r = calloc(1, sizeof(*r));

	assert_non_null(r);
	ub_bdev_init(&r->dev, &rec_ops, inner->sectors, inner->flags, "rec");
	r->inner = ub_bdev_get(inner);
	r->tag = tag;
	return &r->dev;
}

static void gate_log(uint64_t stripe, int res)
{
	log_add('S', UB_BDEV_READ, stripe, 0, res);
}

/* ---- environment ---- */

struct env_opts {
	uint64_t image_bytes, data_bytes;
	unsigned shift;
	uint64_t md_stripes; /* 0: from the data device */
	bool autofetch;
	bool hold;	 /* gate holds completions */
	unsigned nflaky; /* flaky stripes */
	uint64_t flaky[4];
	unsigned flaky_n[4];
	bool fault_md;	 /* metadata device behind a fault device */
	bool fault_data; /* data device behind a fault device */
	int yield_ms;
	unsigned max_inflight;
};

struct env {
	struct env_opts o;
	struct ub_bdev *image, *data_mem, *data_fault, *data;
	struct ub_bdev *md_mem, *md_fault, *md;
	struct ub_stripe_state st;
	struct ub_bgworker *w;
	int efd; /* subscribed */
	uint64_t nstripes;
};

static void fill_image(unsigned char *p, uint64_t bytes)
{
	for (uint64_t i = 0; i < bytes; i += 8) {
		uint64_t v = i * 0x9E3779B97F4A7C15ull + 1;

		memcpy(p + i, &v, 8);
	}
}

/* Builds the devices and the metadata; the worker is started by
 * env_start (so a test can inspect the start-up error). */
static void env_build(struct env *e, const struct env_opts *o)
{
	struct ub_metadata md;
	struct ub_err err = {{0}};
	struct ub_bdev_chan *ch;
	uint64_t per = UINT64_C(1) << o->shift;
	uint64_t img_stripes;

	memset(e, 0, sizeof(*e));
	e->o = *o;
	e->efd = -1;
	assert_int_equal(ub_mem_bdev_create(o->image_bytes, &e->image, &err),
			 0);
	fill_image(ub_mem_bdev_data(e->image), o->image_bytes);
	assert_int_equal(ub_mem_bdev_create(o->data_bytes, &e->data_mem, &err),
			 0);
	if (o->fault_data) {
		assert_int_equal(
		    ub_fault_bdev_wrap(e->data_mem, &e->data_fault, &err), 0);
		e->data = rec_wrap(e->data_fault, 'D');
	} else {
		e->data = rec_wrap(e->data_mem, 'D');
	}
	e->nstripes = o->md_stripes ? o->md_stripes
				    : ub_stripe_count(o->data_bytes / SECTOR,
						      (uint8_t)o->shift);
	img_stripes = (o->image_bytes / SECTOR + per - 1) / per;
	assert_int_equal(ub_metadata_init(&md, (uint8_t)o->shift, e->nstripes,
					  img_stripes, &err),
			 0);
	assert_int_equal(
	    ub_mem_bdev_create(ub_metadata_size(e->nstripes), &e->md_mem, &err),
	    0);
	if (o->fault_md) {
		assert_int_equal(
		    ub_fault_bdev_wrap(e->md_mem, &e->md_fault, &err), 0);
		e->md = rec_wrap(e->md_fault, 'M');
	} else {
		e->md = rec_wrap(e->md_mem, 'M');
	}
	assert_int_equal(ub_bdev_open_chan(e->md_mem, &ch, &err), 0);
	assert_int_equal(ub_metadata_save(ch, &md, &err), 0);
	ub_bdev_chan_close(ch);
	assert_int_equal(ub_stripe_state_init(&e->st, &md, &err), 0);
	ub_metadata_free(&md);
	gate_reset(o->hold);
	g_gate_hook = gate_log;
	log_clear();
}

static int env_start(struct env *e, struct ub_err *err)
{
	struct ub_source *raw = NULL, *src;
	struct ub_bgworker_params p = {
	    .data = e->data,
	    .metadata = e->md,
	    .state = &e->st,
	    .autofetch = e->o.autofetch,
	    .max_inflight = e->o.max_inflight,
	    .yield_ms = e->o.yield_ms,
	};
	int rc;

	assert_int_equal(ub_raw_source_open(e->image, e->o.shift, &raw, err),
			 0);
	src = raw;
	if (e->o.nflaky)
		assert_int_equal(ub_flaky_source_wrap(raw, e->o.flaky,
						      e->o.flaky_n, e->o.nflaky,
						      &src, err),
				 0);
	p.source = gate_wrap(src);
	rc = ub_bgworker_start(&p, &e->w, err);
	if (rc)
		return rc;
	e->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	assert_true(e->efd >= 0);
	assert_int_equal(ub_bgworker_subscribe(e->w, e->efd), 0);
	return 0;
}

static void env_up(struct env *e, const struct env_opts *o)
{
	struct ub_err err = {{0}};

	env_build(e, o);
	if (env_start(e, &err))
		fail_msg("start: %s", err.msg);
	log_clear(); /* the worker's metadata load */
}

static void env_down(struct env *e)
{
	if (e->w) {
		ub_bgworker_unsubscribe(e->w, e->efd);
		ub_bgworker_stop(e->w);
	}
	if (e->efd >= 0)
		close(e->efd);
	ub_stripe_state_fini(&e->st);
	ub_bdev_put(e->md);
	ub_bdev_put(e->md_fault);
	ub_bdev_put(e->md_mem);
	ub_bdev_put(e->data);
	ub_bdev_put(e->data_fault);
	ub_bdev_put(e->data_mem);
	ub_bdev_put(e->image);
}

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Sleeps on the subscription eventfd (at most ms). */
static void wait_signal(struct env *e, int ms)
{
	struct pollfd p = {.fd = e->efd, .events = POLLIN};
	eventfd_t v;

	if (poll(&p, 1, ms) > 0)
		(void)eventfd_read(e->efd, &v);
}

static bool wait_fetch_state(struct env *e, uint64_t stripe,
			     enum ub_fetch_state want)
{
	uint64_t end = ms_now() + WAIT_MS;

	while (ub_stripe_fetch_state(&e->st, stripe) != want) {
		if (ms_now() > end)
			return false;
		wait_signal(e, 10);
	}
	return true;
}

static bool wait_write_state(struct env *e, uint64_t stripe,
			     enum ub_write_state want)
{
	uint64_t end = ms_now() + WAIT_MS;

	while (ub_stripe_write_state(&e->st, stripe) != want) {
		if (ms_now() > end)
			return false;
		wait_signal(e, 10);
	}
	return true;
}

static bool wait_fetched_count(struct env *e, uint64_t n)
{
	uint64_t end = ms_now() + WAIT_MS;

	while (atomic_load(&e->st.fetched) < n) {
		if (ms_now() > end)
			return false;
		wait_signal(e, 10);
	}
	return true;
}

/* Header byte of stripe as stored in the metadata device. */
static uint8_t md_header(struct env *e, uint64_t stripe)
{
	const unsigned char *d = ub_mem_bdev_data(e->md_mem);

	return d[ub_metadata_stripe_sector(stripe) * SECTOR +
		 ub_metadata_stripe_offset(stripe)];
}

/* The stored metadata passes validation (CRCs fresh). */
static void md_check_valid(struct env *e)
{
	struct ub_metadata md;
	struct ub_err err = {{0}};

	if (ub_metadata_parse(ub_mem_bdev_data(e->md_mem),
			      e->md_mem->sectors * SECTOR, &md, &err))
		fail_msg("stored metadata: %s", err.msg);
	ub_metadata_free(&md);
}

static void assert_stripe_copied(struct env *e, uint64_t stripe)
{
	uint64_t bytes = (uint64_t)SECTOR << e->o.shift;
	uint64_t off = stripe * bytes;

	assert_memory_equal(ub_mem_bdev_data(e->data_mem) + off,
			    ub_mem_bdev_data(e->image) + off, bytes);
}

static struct ub_bgworker_counters counters(struct env *e)
{
	struct ub_bgworker_counters c;

	ub_bgworker_counters(e->w, &c);
	return c;
}

/* 1 MiB source, 2 MiB target, 8-sector stripes (the criteria set-up). */
static const struct env_opts small = {
    .image_bytes = MIB,
    .data_bytes = 2 * MIB,
    .shift = 3,
};

/* ---- tests ---- */

static void test_63_manual_fetch_io_order(void **state)
{
	struct io_ev ev[16];
	struct env e;
	unsigned n;

	(void)state;
	env_up(&e, &small);
	assert_int_equal(ub_bgworker_fetch(e.w, 0), 0);
	assert_true(wait_fetch_state(&e, 0, UB_FETCH_FETCHED));
	n = log_snapshot(ev, 16);
	/* source read -> data write -> data flush -> metadata sector write
	 * -> metadata flush, and only then Fetched. */
	assert_int_equal(n, 5);
	assert_int_equal(ev[0].dev, 'S');
	assert_int_equal(ev[0].sector, 0);
	assert_int_equal(ev[1].dev, 'D');
	assert_int_equal(ev[1].op, UB_BDEV_WRITE);
	assert_int_equal(ev[1].sector, 0);
	assert_int_equal(ev[1].count, 8);
	assert_int_equal(ev[2].dev, 'D');
	assert_int_equal(ev[2].op, UB_BDEV_FLUSH);
	assert_int_equal(ev[3].dev, 'M');
	assert_int_equal(ev[3].op, UB_BDEV_WRITE);
	assert_int_equal(ev[3].sector, 1);
	assert_int_equal(ev[3].count, 1);
	assert_int_equal(ev[4].dev, 'M');
	assert_int_equal(ev[4].op, UB_BDEV_FLUSH);
	for (unsigned i = 0; i < n; i++)
		assert_int_equal(ev[i].res, 0);
	assert_stripe_copied(&e, 0);
	assert_int_equal(md_header(&e, 0),
			 UB_STRIPE_HAS_SOURCE | UB_STRIPE_FETCHED);
	md_check_valid(&e);
	assert_int_equal(atomic_load(&e.st.fetched), 1);
	assert_int_equal(counters(&e).demand_fetches, 1);
	env_down(&e);
}

static void test_64_duplicate_requests_ignored(void **state)
{
	struct env e;

	(void)state;
	env_up(&e, &small);
	for (int i = 0; i < 5; i++)
		assert_int_equal(ub_bgworker_fetch(e.w, 3), 0);
	assert_true(wait_fetch_state(&e, 3, UB_FETCH_FETCHED));
	assert_int_equal(ub_bgworker_fetch(e.w, 3), 0);
	/* NoSource and out-of-range stripes are ignored as well. */
	assert_int_equal(ub_bgworker_fetch(e.w, 300), 0);
	assert_int_equal(ub_bgworker_fetch(e.w, 100000), 0);
	assert_int_equal(ub_bgworker_fetch(e.w, 4), 0);
	assert_true(wait_fetch_state(&e, 4, UB_FETCH_FETCHED));
	assert_int_equal(gate_get(&g_gate.reads[3]), 1);
	assert_int_equal(log_count('D', UB_BDEV_WRITE), 2);
	assert_int_equal(ub_stripe_fetch_state(&e.st, 300), UB_FETCH_NO_SOURCE);
	env_down(&e);
}

static void test_65_68_autofetch_every_stripe_once_then_disconnect(void **state)
{
	struct env_opts o = small;
	struct env e;
	uint64_t end;

	(void)state;
	o.autofetch = true;
	env_up(&e, &o);
	assert_true(wait_fetched_count(&e, 256));
	for (unsigned i = 0; i < 256; i++) {
		assert_int_equal(gate_get(&g_gate.reads[i]), 1);
		assert_int_equal(md_header(&e, i),
				 UB_STRIPE_HAS_SOURCE | UB_STRIPE_FETCHED);
	}
	assert_memory_equal(ub_mem_bdev_data(e.data_mem),
			    ub_mem_bdev_data(e.image), MIB);
	/* The NoSource half is untouched. */
	for (unsigned i = 256; i < 512; i++)
		assert_int_equal(md_header(&e, i), 0);
	md_check_valid(&e);
	/* Everything local: the source is closed. */
	end = ms_now() + WAIT_MS;
	while (!gate_get(&g_gate.closed) && ms_now() < end)
		usleep(1000);
	assert_true(g_gate.closed);
	assert_int_equal(counters(&e).auto_fetches, 256);
	/* Neighbouring stripes share a metadata sector: updates were
	 * batched, far fewer than 256 sector writes. */
	assert_true(log_count('M', UB_BDEV_WRITE) < 256);
	env_down(&e);
}

static void test_68_no_disconnect_before_everything_fetched(void **state)
{
	struct env e;

	(void)state;
	env_up(&e, &small);
	assert_int_equal(ub_bgworker_fetch(e.w, 1), 0);
	assert_true(wait_fetch_state(&e, 1, UB_FETCH_FETCHED));
	usleep(20000);
	assert_false(gate_get(&g_gate.closed));
	env_down(&e);
}

static void test_66_demand_fetches_jump_ahead_of_autofetch(void **state)
{
	struct env_opts o = small;
	const uint64_t want[3] = {100, 110, 122};
	struct env e;
	uint64_t end;
	unsigned base, i, k;

	(void)state;
	o.autofetch = true;
	o.hold = true;
	o.yield_ms = -1;
	env_up(&e, &o);
	/* Autofetch fills all 16 slots, then waits for the gate. */
	end = ms_now() + WAIT_MS;
	while (gate_get(&g_gate.nreq) < 16 && ms_now() < end)
		usleep(500);
	assert_int_equal(gate_get(&g_gate.nreq), 16);
	gate_release(20);
	end = ms_now() + WAIT_MS;
	while (gate_get(&g_gate.nreq) < 36 && ms_now() < end)
		usleep(500);
	base = gate_get(&g_gate.nreq);
	for (i = 0; i < 3; i++)
		assert_int_equal(ub_bgworker_fetch(e.w, want[i]), 0);
	usleep(20000); /* the worker has seen them */
	gate_release(4);
	end = ms_now() + WAIT_MS;
	while (gate_get(&g_gate.nreq) < base + 4 && ms_now() < end)
		usleep(500);
	/* Each of them is among the next four stripes requested. */
	for (i = 0; i < 3; i++) {
		bool found = false;

		for (k = base; k < base + 4; k++)
			found |= g_gate.req_order[k] == want[i];
		assert_true(found);
	}
	gate_open();
	assert_true(wait_fetched_count(&e, 256));
	for (i = 0; i < 256; i++)
		assert_int_equal(gate_get(&g_gate.reads[i]), 1);
	assert_int_equal(counters(&e).demand_fetches, 3);
	env_down(&e);
}

static void test_67_80_retries_then_failed(void **state)
{
	struct env_opts o = small;
	struct ub_bgworker_counters c;
	struct env e;

	(void)state;
	o.nflaky = 2;
	o.flaky[0] = 0;
	o.flaky_n[0] = 4; /* every attempt fails */
	o.flaky[1] = 1;
	o.flaky_n[1] = 3; /* the fourth attempt succeeds */
	env_up(&e, &o);
	assert_int_equal(ub_bgworker_fetch(e.w, 0), 0);
	assert_int_equal(ub_bgworker_fetch(e.w, 1), 0);
	assert_true(wait_fetch_state(&e, 0, UB_FETCH_FAILED));
	assert_true(wait_fetch_state(&e, 1, UB_FETCH_FETCHED));
	assert_int_equal(gate_get(&g_gate.reads[0]), 4);
	assert_int_equal(gate_get(&g_gate.reads[1]), 4);
	assert_stripe_copied(&e, 1);
	c = counters(&e);
	assert_int_equal(c.fetch_retries, 6);
	assert_int_equal(c.fetch_failures, 1);
	/* Failed is memory only: the metadata still says not fetched. */
	assert_int_equal(md_header(&e, 0), UB_STRIPE_HAS_SOURCE);
	/* A Failed stripe is not fetched again on request. */
	assert_int_equal(ub_bgworker_fetch(e.w, 0), 0);
	usleep(20000);
	assert_int_equal(gate_get(&g_gate.reads[0]), 4);
	env_down(&e);
}

static void test_data_write_and_flush_failures_are_retried(void **state)
{
	struct env_opts o = small;
	struct env e;

	(void)state;
	o.fault_data = true;
	env_up(&e, &o);
	ub_fault_bdev_fail_nth(e.data_fault, UB_FAULT_WRITE, 1, EIO, false);
	assert_int_equal(ub_bgworker_fetch(e.w, 5), 0);
	assert_true(wait_fetch_state(&e, 5, UB_FETCH_FETCHED));
	assert_int_equal(gate_get(&g_gate.reads[5]), 2);
	assert_stripe_copied(&e, 5);
	/* A failed data flush: fetched again, never marked before a
	 * successful flush. */
	ub_fault_bdev_fail_nth(e.data_fault, UB_FAULT_FLUSH, 1, EIO, false);
	assert_int_equal(ub_bgworker_fetch(e.w, 6), 0);
	assert_true(wait_fetch_state(&e, 6, UB_FETCH_FETCHED));
	assert_int_equal(gate_get(&g_gate.reads[6]), 2);
	assert_stripe_copied(&e, 6);
	assert_int_equal(counters(&e).fetch_retries, 2);
	assert_int_equal(log_count('M', UB_BDEV_WRITE), 2);
	env_down(&e);
}

static void test_69_set_written_and_fetched_visible_when_durable(void **state)
{
	struct env e;

	(void)state;
	env_up(&e, &small);
	assert_int_equal(ub_bgworker_set_written(e.w, 7), 0);
	assert_true(wait_write_state(&e, 7, UB_WRITE_WRITTEN));
	assert_int_equal(ub_stripe_fetch_state(&e.st, 7), UB_FETCH_NOT_FETCHED);
	assert_int_equal(md_header(&e, 7),
			 UB_STRIPE_HAS_SOURCE | UB_STRIPE_WRITTEN);
	assert_int_equal(log_count('S', UB_BDEV_READ), 0);
	assert_int_equal(log_count('M', UB_BDEV_WRITE), 1);
	assert_int_equal(log_count('M', UB_BDEV_FLUSH), 1);
	assert_int_equal(ub_bgworker_fetch(e.w, 5), 0);
	assert_int_equal(ub_bgworker_fetch(e.w, 6), 0);
	assert_true(wait_fetch_state(&e, 5, UB_FETCH_FETCHED));
	assert_true(wait_fetch_state(&e, 6, UB_FETCH_FETCHED));
	assert_int_equal(ub_stripe_write_state(&e.st, 5), UB_WRITE_NOT_WRITTEN);
	assert_int_equal(md_header(&e, 7),
			 UB_STRIPE_HAS_SOURCE | UB_STRIPE_WRITTEN);
	md_check_valid(&e);
	env_down(&e);
}

static void test_71_74_updates_in_one_sector_all_land(void **state)
{
	struct env e;
	unsigned i;

	(void)state;
	env_up(&e, &small);
	for (i = 0; i < 3; i++)
		assert_int_equal(ub_bgworker_set_written(e.w, 9), 0);
	for (i = 0; i < 2; i++)
		assert_int_equal(ub_bgworker_fetch(e.w, 9), 0);
	assert_true(wait_fetch_state(&e, 9, UB_FETCH_FETCHED));
	assert_true(wait_write_state(&e, 9, UB_WRITE_WRITTEN));
	/* Never more than one write per requested bit. */
	assert_true(log_count('M', UB_BDEV_WRITE) <= 2);
	assert_true(log_count('M', UB_BDEV_FLUSH) <= 2);
	/* Interleaved requests over one sector. */
	for (i = 20; i < 60; i++) {
		if (i % 3)
			assert_int_equal(ub_bgworker_set_written(e.w, i), 0);
		if (i % 2)
			assert_int_equal(ub_bgworker_fetch(e.w, i), 0);
		if (i % 5 == 0)
			assert_int_equal(ub_bgworker_set_written(e.w, i - 1),
					 0);
	}
	for (i = 20; i < 60; i++) {
		if (i % 2)
			assert_true(wait_fetch_state(&e, i, UB_FETCH_FETCHED));
		if (i % 3 || (i + 1) % 5 == 0)
			assert_true(wait_write_state(&e, i, UB_WRITE_WRITTEN));
	}
	/* Everything asked for is published, hence on the device. */
	for (i = 20; i < 60; i++) {
		uint8_t want = UB_STRIPE_HAS_SOURCE;

		if (i % 3 || (i + 1) % 5 == 0)
			want |= UB_STRIPE_WRITTEN;
		if (i % 2)
			want |= UB_STRIPE_FETCHED;
		assert_int_equal(md_header(&e, i), want);
	}
	md_check_valid(&e);
	env_down(&e);
}

static void test_72_md_write_failure_is_retried(void **state)
{
	struct env_opts o = small;
	struct env e;

	(void)state;
	o.fault_md = true;
	env_up(&e, &o);
	ub_fault_bdev_fail_nth(e.md_fault, UB_FAULT_WRITE, 1, EIO, false);
	assert_int_equal(ub_bgworker_fetch(e.w, 2), 0);
	assert_true(wait_fetch_state(&e, 2, UB_FETCH_FETCHED));
	assert_int_equal(md_header(&e, 2),
			 UB_STRIPE_HAS_SOURCE | UB_STRIPE_FETCHED);
	assert_int_equal(counters(&e).md_retries, 1);
	/* Data fetched once only. */
	assert_int_equal(gate_get(&g_gate.reads[2]), 1);
	/* 73: a failed WRITTEN update leaves FETCHED intact. */
	ub_fault_bdev_fail_nth(e.md_fault, UB_FAULT_FLUSH, 1, EIO, false);
	assert_int_equal(ub_bgworker_set_written(e.w, 2), 0);
	assert_true(wait_write_state(&e, 2, UB_WRITE_WRITTEN));
	assert_int_equal(md_header(&e, 2), UB_STRIPE_HAS_SOURCE |
					       UB_STRIPE_FETCHED |
					       UB_STRIPE_WRITTEN);
	assert_int_equal(counters(&e).md_retries, 2);
	md_check_valid(&e);
	env_down(&e);
}

static void test_md_failure_fails_the_stripe_instead_of_hanging(void **state)
{
	struct env_opts o = small;
	struct ub_bgworker_counters c;
	struct env e;

	(void)state;
	o.fault_md = true;
	env_up(&e, &o);
	ub_fault_bdev_fail_nth(e.md_fault, UB_FAULT_WRITE, 1, EIO, true);
	assert_int_equal(ub_bgworker_fetch(e.w, 3), 0);
	assert_true(wait_fetch_state(&e, 3, UB_FETCH_FAILED));
	assert_int_equal(ub_bgworker_set_written(e.w, 600 % 256), 0);
	assert_true(wait_write_state(&e, 600 % 256, UB_WRITE_FAILED));
	c = counters(&e);
	assert_int_equal(c.md_failures, 2);
	assert_int_equal(c.md_retries, 6);
	assert_int_equal(md_header(&e, 3), UB_STRIPE_HAS_SOURCE);
	/* Flush failures take the same path. */
	ub_fault_bdev_reset(e.md_fault);
	ub_fault_bdev_fail_nth(e.md_fault, UB_FAULT_FLUSH, 1, EIO, true);
	assert_int_equal(ub_bgworker_fetch(e.w, 200), 0);
	assert_true(wait_fetch_state(&e, 200, UB_FETCH_FAILED));
	/* And once the device recovers, other stripes work again. */
	ub_fault_bdev_reset(e.md_fault);
	assert_int_equal(ub_bgworker_fetch(e.w, 201), 0);
	assert_true(wait_fetch_state(&e, 201, UB_FETCH_FETCHED));
	md_check_valid(&e);
	env_down(&e);
}

static void test_70_source_larger_than_metadata_refused(void **state)
{
	struct env_opts o = {
	    .image_bytes = 4 * MIB, .data_bytes = MIB, .shift = 11};
	struct ub_err err = {{0}};
	struct env e;

	(void)state;
	env_build(&e, &o);
	assert_int_equal(env_start(&e, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "Source stripe count 4 exceeds "
					"metadata stripe count 1"));
	assert_non_null(strstr(err.msg, "Failed to build bgworker"));
	/* The source was closed on the failure path. */
	assert_true(g_gate.closed);
	assert_null(e.w);
	env_down(&e);
}

static void test_target_smaller_than_source_refused(void **state)
{
	struct env_opts o = {.image_bytes = 4 * MIB,
			     .data_bytes = MIB,
			     .shift = 11,
			     .md_stripes = 4};
	struct ub_err err = {{0}};
	struct env e;

	(void)state;
	env_build(&e, &o);
	assert_int_equal(env_start(&e, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "target device too small (2048 "
					"sectors) for source device (8192 "
					"sectors)"));
	env_down(&e);
}

static void test_data_larger_than_metadata_refused(void **state)
{
	struct env_opts o = {.image_bytes = MIB,
			     .data_bytes = 4 * MIB,
			     .shift = 11,
			     .md_stripes = 2};
	struct ub_err err = {{0}};
	struct env e;

	(void)state;
	env_build(&e, &o);
	assert_int_equal(env_start(&e, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "larger than the metadata covers"));
	env_down(&e);
}

static void test_source_smaller_than_disk(void **state)
{
	/* 3.5 stripes of source on an 8-stripe disk: stripes 4-7 are
	 * NoSource; the last sourced stripe is zero-filled past the image. */
	struct env_opts o = {.image_bytes = 7 * 2 * KIB,
			     .data_bytes = 8 * 4 * KIB,
			     .shift = 3,
			     .autofetch = true};
	unsigned char *d;
	struct env e;

	(void)state;
	env_build(&e, &o);
	d = ub_mem_bdev_data(e.data_mem);
	memset(d, 0x77, 8 * 4 * KIB); /* stale data on the target */
	assert_int_equal(ub_stripe_fetch_state(&e.st, 4), UB_FETCH_NO_SOURCE);
	{
		struct ub_err err = {{0}};

		if (env_start(&e, &err))
			fail_msg("start: %s", err.msg);
	}
	assert_true(wait_fetched_count(&e, 4));
	assert_memory_equal(d, ub_mem_bdev_data(e.image), 14 * KIB);
	for (unsigned i = 14 * KIB; i < 16 * KIB; i++)
		assert_int_equal(d[i], 0);
	for (unsigned i = 16 * KIB; i < 32 * KIB; i++)
		assert_int_equal(d[i], 0x77);
	env_down(&e);
}

static void test_claims(void **state)
{
	_Atomic int t1 = -1, t2 = -1, t3 = -1, t4 = -1;
	struct ub_bgworker_counters c;
	struct env e;
	uint64_t end;

	(void)state;
	env_up(&e, &small);
	/* Granted: no fetch; a second claim and a fetch of the same stripe
	 * wait for the first one's commit. */
	assert_int_equal(ub_bgworker_claim_begin(e.w, 10, &t1), 0);
	assert_int_equal(ub_bgworker_claim_begin(e.w, 10, &t2), 0);
	assert_int_equal(ub_bgworker_fetch(e.w, 10), 0);
	end = ms_now() + WAIT_MS;
	while ((atomic_load(&t1) == UB_CLAIM_PENDING ||
		atomic_load(&t2) == UB_CLAIM_PENDING) &&
	       ms_now() < end)
		wait_signal(&e, 10);
	assert_int_equal(atomic_load(&t1), UB_CLAIM_GRANTED);
	assert_int_equal(atomic_load(&t2), UB_CLAIM_DENIED);
	usleep(20000);
	assert_int_equal(gate_get(&g_gate.reads[10]), 0);
	memset(ub_mem_bdev_data(e.data_mem) + 10 * 8 * SECTOR, 0xC1,
	       8 * SECTOR);
	assert_int_equal(ub_bgworker_claim_commit(e.w, 10), 0);
	assert_true(wait_fetch_state(&e, 10, UB_FETCH_FETCHED));
	assert_int_equal(gate_get(&g_gate.reads[10]), 0);
	assert_int_equal(md_header(&e, 10),
			 UB_STRIPE_HAS_SOURCE | UB_STRIPE_FETCHED);
	/* The claimed data is not overwritten by a later fetch. */
	assert_int_equal(ub_mem_bdev_data(e.data_mem)[10 * 8 * SECTOR], 0xC1);
	/* Abort with a waiter: the stripe is fetched afterwards. */
	assert_int_equal(ub_bgworker_claim_begin(e.w, 11, &t3), 0);
	end = ms_now() + WAIT_MS;
	while (atomic_load(&t3) == UB_CLAIM_PENDING && ms_now() < end)
		wait_signal(&e, 10);
	assert_int_equal(atomic_load(&t3), UB_CLAIM_GRANTED);
	assert_int_equal(ub_bgworker_fetch(e.w, 11), 0);
	assert_int_equal(ub_bgworker_claim_abort(e.w, 11), 0);
	assert_true(wait_fetch_state(&e, 11, UB_FETCH_FETCHED));
	assert_stripe_copied(&e, 11);
	/* A claim on a fetched stripe is denied. */
	assert_int_equal(ub_bgworker_claim_begin(e.w, 11, &t4), 0);
	end = ms_now() + WAIT_MS;
	while (atomic_load(&t4) == UB_CLAIM_PENDING && ms_now() < end)
		wait_signal(&e, 10);
	assert_int_equal(atomic_load(&t4), UB_CLAIM_DENIED);
	c = counters(&e);
	assert_int_equal(c.claims_granted, 2);
	assert_int_equal(c.claims_denied, 2);
	assert_int_equal(c.claims_committed, 1);
	assert_int_equal(c.claims_aborted, 1);
	env_down(&e);
}

static void test_claim_denied_while_fetch_in_flight(void **state)
{
	struct env_opts o = small;
	_Atomic int t = -1;
	struct env e;
	uint64_t end;

	(void)state;
	o.hold = true;
	env_up(&e, &o);
	assert_int_equal(ub_bgworker_fetch(e.w, 12), 0);
	end = ms_now() + WAIT_MS;
	while (gate_get(&g_gate.nreq) < 1 && ms_now() < end)
		usleep(500);
	assert_int_equal(ub_bgworker_claim_begin(e.w, 12, &t), 0);
	end = ms_now() + WAIT_MS;
	while (atomic_load(&t) == UB_CLAIM_PENDING && ms_now() < end)
		wait_signal(&e, 10);
	assert_int_equal(atomic_load(&t), UB_CLAIM_DENIED);
	gate_open();
	assert_true(wait_fetch_state(&e, 12, UB_FETCH_FETCHED));
	assert_int_equal(gate_get(&g_gate.reads[12]), 1);
	env_down(&e);
}

struct noter {
	struct ub_bgworker *w;
	atomic_bool stop;
};

static void *guest_thread(void *arg)
{
	struct noter *n = arg;

	while (!atomic_load(&n->stop)) {
		ub_bgworker_note_guest_io(n->w);
		usleep(200);
	}
	return NULL;
}

static bool demand_seen(uint64_t stripe)
{
	bool seen = false;

	pthread_mutex_lock(&g_gate.lock);
	for (unsigned i = 0; i < g_gate.nreq && !seen; i++)
		seen = g_gate.req_order[i] == stripe;
	pthread_mutex_unlock(&g_gate.lock);
	return seen;
}

/* Static: outlives a failing test, whose thread is still running. */
static struct noter g_noter;

static void test_autofetch_yields_to_guest_io(void **state)
{
	struct env_opts o = small;
	struct ub_bgworker_counters c;
	unsigned max_out, nreq, out_demand;
	pthread_t th;
	struct env e;
	uint64_t end;

	(void)state;
	o.autofetch = true;
	o.hold = true;
	/* A window far longer than a scheduling hiccup of the thread that
	 * plays the guest, so the test holds on a loaded machine. */
	o.yield_ms = 200;
	env_up(&e, &o);
	end = ms_now() + WAIT_MS;
	while (gate_get(&g_gate.nreq) < 16 && ms_now() < end)
		usleep(500);
	/* The guest gets busy: let the 16 finish, then autofetch must keep
	 * at most one fetch in flight. */
	g_noter.w = e.w;
	atomic_store(&g_noter.stop, false);
	assert_int_equal(pthread_create(&th, NULL, guest_thread, &g_noter), 0);
	/* Until the worker has noticed. */
	end = ms_now() + WAIT_MS;
	do {
		usleep(1000);
		c = counters(&e);
	} while (!c.yield_periods && ms_now() < end);
	gate_release(16);
	end = ms_now() + WAIT_MS;
	while (gate_get(&g_gate.outstanding) > 1 && ms_now() < end)
		usleep(500);
	pthread_mutex_lock(&g_gate.lock);
	g_gate.max_outstanding = g_gate.outstanding;
	pthread_mutex_unlock(&g_gate.lock);
	for (int i = 0; i < 40; i++) {
		gate_release(1);
		usleep(2000);
	}
	max_out = gate_get(&g_gate.max_outstanding);
	nreq = gate_get(&g_gate.nreq);
	/* A demand fetch is not held back (autofetch may hold one more). */
	assert_int_equal(ub_bgworker_fetch(e.w, 250), 0);
	end = ms_now() + WAIT_MS;
	while (!demand_seen(250) && ms_now() < end)
		usleep(500);
	out_demand = gate_get(&g_gate.outstanding);
	c = counters(&e);
	/* The guest goes quiet. */
	atomic_store(&g_noter.stop, true);
	pthread_join(th, NULL);
	assert_true(max_out <= 1);
	assert_true(nreq > 16 + 5); /* still moving */
	assert_true(demand_seen(250));
	assert_true(out_demand >= 1 && out_demand <= 2);
	assert_true(c.yield_periods >= 1);
	assert_true(c.auto_held >= 1);
	assert_true(c.max_auto_inflight_yielding <= 1);
	assert_true(c.guest_io_seen >= 1);
	/* Autofetch opens up to 16 again once the window has passed. */
	gate_release(2);
	end = ms_now() + WAIT_MS;
	while (gate_get(&g_gate.outstanding) < 16 && ms_now() < end)
		usleep(500);
	assert_int_equal(gate_get(&g_gate.outstanding), 16);
	gate_open();
	assert_true(wait_fetched_count(&e, 256));
	c = counters(&e);
	assert_true(c.yield_ns > 0);
	assert_int_equal(c.max_inflight, 16);
	env_down(&e);
}

static void test_status_rate_and_eta(void **state)
{
	struct env_opts o = small;
	struct ub_bgworker_status s;
	struct env e;
	uint64_t end;

	(void)state;
	o.autofetch = true;
	o.hold = true;
	o.yield_ms = -1;
	env_up(&e, &o);
	ub_bgworker_status(e.w, &s);
	assert_int_equal(s.total, 512);
	assert_int_equal(s.source, 256);
	assert_int_equal(s.fetched, 0);
	assert_int_equal(s.failed, 0);
	assert_true(s.eta_sec == -1); /* no rate yet */
	for (int i = 0; i < 10; i++) {
		gate_release(8);
		usleep(20000);
	}
	assert_true(wait_fetched_count(&e, 80));
	ub_bgworker_status(e.w, &s);
	assert_true(s.fetched >= 80);
	/* 80 stripes of 4 KiB in about 0.2 s: some 1.6 MB/s. */
	assert_true(s.bytes_per_sec > 100 * KIB);
	assert_true(s.bytes_per_sec < 1000 * MIB);
	assert_true(s.eta_sec > 0);
	gate_open();
	assert_true(wait_fetched_count(&e, 256));
	end = ms_now() + WAIT_MS;
	do {
		ub_bgworker_status(e.w, &s);
	} while (s.eta_sec != 0 && ms_now() < end);
	assert_int_equal(s.fetched, 256);
	assert_true(s.eta_sec == 0);
	env_down(&e);
}

static void test_78_79_start_stop_empty_source(void **state)
{
	struct ub_bdev *data = NULL, *mdd = NULL;
	struct ub_stripe_state st;
	struct ub_metadata md;
	struct ub_err err = {{0}};
	struct ub_bdev_chan *ch;
	struct ub_bgworker *w = NULL;
	struct ub_bgworker_params p = {0};

	(void)state;
	assert_int_equal(ub_mem_bdev_create(MIB, &data, &err), 0);
	assert_int_equal(ub_mem_bdev_create(8 * KIB, &mdd, &err), 0);
	assert_int_equal(ub_metadata_init(&md, 11, 1, 0, &err), 0);
	assert_int_equal(ub_bdev_open_chan(mdd, &ch, &err), 0);
	assert_int_equal(ub_metadata_save(ch, &md, &err), 0);
	ub_bdev_chan_close(ch);
	assert_int_equal(ub_stripe_state_init(&st, &md, &err), 0);
	p.data = data;
	p.metadata = mdd;
	p.state = &st;
	p.autofetch = true;
	assert_int_equal(ub_empty_source_open(11, &p.source, &err), 0);
	assert_int_equal(ub_bgworker_start(&p, &w, &err), 0);
	assert_int_equal(ub_bgworker_set_written(w, 0), 0);
	ub_bgworker_stop(w);
	ub_bgworker_stop(NULL);
	ub_stripe_state_fini(&st);
	ub_metadata_free(&md);
	ub_bdev_put(mdd);
	ub_bdev_put(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_63_manual_fetch_io_order),
	    cmocka_unit_test(test_64_duplicate_requests_ignored),
	    cmocka_unit_test(
		test_65_68_autofetch_every_stripe_once_then_disconnect),
	    cmocka_unit_test(test_68_no_disconnect_before_everything_fetched),
	    cmocka_unit_test(test_66_demand_fetches_jump_ahead_of_autofetch),
	    cmocka_unit_test(test_67_80_retries_then_failed),
	    cmocka_unit_test(test_data_write_and_flush_failures_are_retried),
	    cmocka_unit_test(
		test_69_set_written_and_fetched_visible_when_durable),
	    cmocka_unit_test(test_71_74_updates_in_one_sector_all_land),
	    cmocka_unit_test(test_72_md_write_failure_is_retried),
	    cmocka_unit_test(
		test_md_failure_fails_the_stripe_instead_of_hanging),
	    cmocka_unit_test(test_70_source_larger_than_metadata_refused),
	    cmocka_unit_test(test_target_smaller_than_source_refused),
	    cmocka_unit_test(test_data_larger_than_metadata_refused),
	    cmocka_unit_test(test_source_smaller_than_disk),
	    cmocka_unit_test(test_claims),
	    cmocka_unit_test(test_claim_denied_while_fetch_in_flight),
	    cmocka_unit_test(test_autofetch_yields_to_guest_io),
	    cmocka_unit_test(test_status_rate_and_eta),
	    cmocka_unit_test(test_78_79_start_stop_empty_source),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
