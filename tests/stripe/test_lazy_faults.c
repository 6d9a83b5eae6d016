/* Fault injection under the lazy device: the base (data) device, the
 * metadata device and the stripe source are each wrapped in a fault
 * device (bdev/fault.h) over in-memory devices, and fail with EIO or
 * ENOSPC, once or for good. In every case:
 *
 *   - the guest request that needs the failing path completes with an
 *     error (or succeeds, when the failure was transient and retried),
 *     within a deadline: nothing hangs;
 *   - every stripe whose FETCHED bit is in the metadata holds the right
 *     data on the base device (the image's, or what the guest wrote), and
 *     every stripe the shared state calls Fetched has its bit stored;
 *   - a Failed stripe is not persisted: a restart fetches it again.
 *
 * The guest's view is checked against a model of the disk: the image,
 * overlaid with every write that completed successfully. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bdev/fault.h"
#include "bdev/lazy.h"
#include "bdev/mem.h"
#include "stripe/bgworker.h"
#include "stripe/metadata.h"
#include "stripe/source.h"
#include "stripe/stripe_state.h"

#define SECTOR	    512u
#define SHIFT	    6u /* 32 KiB stripes */
#define STRIPE_SECT (1u << SHIFT)
#define STRIPE	    (STRIPE_SECT * SECTOR)
#define NSTRIPES    16u
#define DISK	    (NSTRIPES * STRIPE)
#define MD_BYTES    (2u * SECTOR)
#define DEADLINE_MS 10000

struct fx {
	struct ub_bdev *img_mem, *img; /* img: fault over img_mem */
	struct ub_bdev *data_mem, *data;
	struct ub_bdev *md_mem, *md;
	struct ub_stripe_state state;
	bool have_state;
	struct ub_bgworker *worker;
	struct ub_bdev *lazy;
	struct ub_bdev_chan *ch;
	unsigned char *model; /* what the guest must read */
	unsigned char *buf;
	bool track_written;
	bool autofetch;
	unsigned shift; /* stripe sector-count shift */
	const uint64_t *flaky_stripes;
	const unsigned *flaky_counts;
	unsigned nflaky;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void fill_random(unsigned char *p, size_t n, uint64_t seed)
{
	size_t i;

	for (i = 0; i < n; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		p[i] = (unsigned char)(seed >> 56);
	}
}

/* Worker + lazy device + channel over the devices as they are now. */
static int start_stack(struct fx *f)
{
	struct ub_err err = {{0}};
	struct ub_metadata md = {0};
	struct ub_bdev_chan *mch = NULL;
	struct ub_source *src = NULL;
	struct ub_bgworker_params wp;
	struct ub_lazy_params lp;
	int rc;

	rc = ub_bdev_open_chan(f->md_mem, &mch, &err);
	if (!rc)
		rc = ub_metadata_load(mch, &md, &err);
	ub_bdev_chan_close(mch);
	if (!rc)
		rc = ub_stripe_state_init(&f->state, &md, &err);
	ub_metadata_free(&md);
	if (rc)
		goto fail;
	f->have_state = true;
	rc = ub_raw_source_open(f->img, f->shift, &src, &err);
	if (rc)
		goto fail;
	if (f->nflaky) {
		struct ub_source *fl = NULL;

		rc =
		    ub_flaky_source_wrap(src, f->flaky_stripes, f->flaky_counts,
					 f->nflaky, &fl, &err);
		if (rc) {
			ub_source_close(src);
			goto fail;
		}
		src = fl;
	}
	wp = (struct ub_bgworker_params){
	    .data = f->data,
	    .metadata = f->md,
	    .source = src,
	    .state = &f->state,
	    .autofetch = f->autofetch,
	    .max_inflight = 4,
	};
	rc = ub_bgworker_start(&wp, &f->worker, &err);
	if (rc)
		goto fail;
	lp = (struct ub_lazy_params){
	    .base = f->data,
	    .image = NULL,
	    .state = &f->state,
	    .worker = f->worker,
	    .track_written = f->track_written,
	};
	rc = ub_lazy_bdev_create(&lp, &f->lazy, &err);
	if (rc)
		goto fail;
	rc = ub_bdev_open_chan(f->lazy, &f->ch, &err);
	if (rc)
		goto fail;
	return 0;
fail:
	print_error("start_stack: %s\n", err.msg);
	return rc;
}

static void stop_stack(struct fx *f)
{
	ub_bdev_chan_close(f->ch);
	f->ch = NULL;
	ub_bdev_put(f->lazy);
	f->lazy = NULL;
	ub_bgworker_stop(f->worker);
	f->worker = NULL;
	if (f->have_state)
		ub_stripe_state_fini(&f->state);
	f->have_state = false;
}

static int setup_with(void **state, bool track_written, bool autofetch)
{
	struct fx *f = calloc(1, sizeof(*f)); /* owned by *state */
	struct ub_err err = {{0}};
	struct ub_metadata md = {0};
	struct ub_bdev_chan *mch = NULL;

	if (!f)
		return -1;
	f->track_written = track_written;
	f->shift = SHIFT;
	f->autofetch = autofetch;
	f->model = malloc(DISK);
	f->buf = ub_bdev_buf_alloc(2 * STRIPE);
	if (!f->model || !f->buf)
		return -1;
	if (ub_mem_bdev_create(DISK, &f->img_mem, &err) ||
	    ub_fault_bdev_wrap(f->img_mem, &f->img, &err) ||
	    ub_mem_bdev_create(DISK, &f->data_mem, &err) ||
	    ub_fault_bdev_wrap(f->data_mem, &f->data, &err) ||
	    ub_mem_bdev_create(MD_BYTES, &f->md_mem, &err) ||
	    ub_fault_bdev_wrap(f->md_mem, &f->md, &err)) {
		print_error("setup: %s\n", err.msg);
		return -1;
	}
	fill_random(ub_mem_bdev_data(f->img_mem), DISK, 42);
	memcpy(f->model, ub_mem_bdev_data(f->img_mem), DISK);
	/* Stale junk on the data device: a fetch must overwrite it. */
	fill_random(ub_mem_bdev_data(f->data_mem), DISK, 7);
	if (ub_metadata_init(&md, SHIFT, NSTRIPES, NSTRIPES, &err) ||
	    ub_bdev_open_chan(f->md_mem, &mch, &err) ||
	    ub_metadata_save(mch, &md, &err)) {
		print_error("setup: %s\n", err.msg);
		ub_bdev_chan_close(mch);
		ub_metadata_free(&md);
		return -1;
	}
	ub_bdev_chan_close(mch);
	ub_metadata_free(&md);
	*state = f;
	return start_stack(f) ? -1 : 0;
}

static int setup(void **state)
{
	return setup_with(state, false, false);
}

static int setup_tw(void **state)
{
	return setup_with(state, true, false);
}

static int teardown(void **state)
{
	struct fx *f = *state;

	if (!f)
		return 0;
	stop_stack(f);
	ub_bdev_put(f->img);
	ub_bdev_put(f->img_mem);
	ub_bdev_put(f->data);
	ub_bdev_put(f->data_mem);
	ub_bdev_put(f->md);
	ub_bdev_put(f->md_mem);
	free(f->model);
	free(f->buf);
	free(f);
	return 0;
}

/* One guest request on the lazy channel, waited for up to the deadline:
 * its result, or -ETIMEDOUT (a hang). */
static int guest_io(struct fx *f, enum ub_bdev_op op, uint64_t sector,
		    uint32_t count)
{
	struct iovec iov = {f->buf, (size_t)count * SECTOR};
	struct ub_bdev_req req = {
	    .op = op,
	    .sector = sector,
	    .count = op == UB_BDEV_FLUSH ? 0 : count,
	    .iov = op == UB_BDEV_FLUSH ? NULL : &iov,
	    .iovcnt = op == UB_BDEV_FLUSH ? 0 : 1,
	    .id = 77,
	};
	uint64_t end = now_ms() + DEADLINE_MS;
	struct ub_bdev_cqe cqe;
	int rc;

	rc = ub_bdev_chan_queue(f->ch, &req);
	if (rc)
		return rc;
	rc = ub_bdev_chan_submit(f->ch);
	if (rc)
		return rc;
	while (now_ms() < end) {
		if (ub_bdev_chan_poll(f->ch, &cqe, 1) == 1) {
			assert_int_equal(cqe.id, 77);
			return cqe.res;
		}
		usleep(200);
	}
	return -ETIMEDOUT;
}

static int guest_read(struct fx *f, uint64_t sector, uint32_t count)
{
	int rc = guest_io(f, UB_BDEV_READ, sector, count);

	if (rc == 0)
		assert_memory_equal(f->buf, f->model + sector * SECTOR,
				    (size_t)count * SECTOR);
	return rc;
}

/* Writes a fresh pattern; the model follows only when it succeeded. */
static int guest_write(struct fx *f, uint64_t sector, uint32_t count,
		       uint64_t seed)
{
	int rc;

	fill_random(f->buf, (size_t)count * SECTOR, seed);
	rc = guest_io(f, UB_BDEV_WRITE, sector, count);
	if (rc == 0)
		memcpy(f->model + sector * SECTOR, f->buf,
		       (size_t)count * SECTOR);
	return rc;
}

/* Lets the worker finish what it is doing (idle state). */
static void settle(void)
{
	usleep(50 * 1000);
}

/* The invariants: FETCHED in the stored metadata => right data on the
 * base device; Fetched in the shared state => FETCHED stored. Stripes
 * in skip (a bit mask) had a failed guest write: their content is
 * unspecified, but their bit must still not be set without data. */
static void check_invariants(struct fx *f, uint32_t skip)
{
	struct ub_metadata md = {0};
	struct ub_err err = {{0}};
	const unsigned char *data = ub_mem_bdev_data(f->data_mem);
	bool in_mem[NSTRIPES];
	uint64_t i;

	/* The state first: a stripe seen Fetched had its bit stored
	 * before, so the metadata read after must show it. */
	for (i = 0; i < NSTRIPES; i++)
		in_mem[i] =
		    f->have_state &&
		    ub_stripe_fetch_state(&f->state, i) == UB_FETCH_FETCHED;
	assert_int_equal(
	    ub_metadata_parse(ub_mem_bdev_data(f->md_mem), MD_BYTES, &md, &err),
	    0);
	for (i = 0; i < NSTRIPES; i++) {
		bool stored = md.headers[i] & UB_STRIPE_FETCHED;

		if (in_mem[i] && !stored)
			fail_msg("stripe %llu is Fetched in memory but its "
				 "FETCHED bit is not stored",
				 (unsigned long long)i);
		if (stored && !(skip & (1u << i)) &&
		    memcmp(data + i * STRIPE, f->model + i * STRIPE, STRIPE))
			fail_msg("stripe %llu is marked FETCHED but holds the "
				 "wrong data",
				 (unsigned long long)i);
	}
	ub_metadata_free(&md);
}

static bool stored_fetched(struct fx *f, uint64_t stripe)
{
	struct ub_metadata md = {0};
	struct ub_err err = {{0}};
	bool set;

	assert_int_equal(
	    ub_metadata_parse(ub_mem_bdev_data(f->md_mem), MD_BYTES, &md, &err),
	    0);
	set = md.headers[stripe] & UB_STRIPE_FETCHED;
	ub_metadata_free(&md);
	return set;
}

/* Restart with every rule cleared: the stripe fetches fine. */
static void restart_and_read(struct fx *f, uint64_t stripe)
{
	stop_stack(f);
	ub_fault_bdev_reset(f->img);
	ub_fault_bdev_reset(f->data);
	ub_fault_bdev_reset(f->md);
	f->nflaky = 0;
	assert_int_equal(start_stack(f), 0);
	assert_int_equal(guest_read(f, stripe * STRIPE_SECT + 3, 5), 0);
	assert_true(stored_fetched(f, stripe));
	check_invariants(f, 0);
}

static void assert_error(int rc)
{
	if (rc == -ETIMEDOUT)
		fail_msg("the guest request hung (no completion in %d ms)",
			 DEADLINE_MS);
	if (rc >= 0)
		fail_msg("the guest request succeeded; an error was expected");
}

/* --- the source ------------------------------------------------------ */

static void test_source_eio_sticky(void **state)
{
	struct fx *f = *state;

	ub_fault_bdev_fail_nth(f->img, UB_FAULT_READ, 1, EIO, true);
	assert_error(guest_read(f, 2 * STRIPE_SECT, 8));
	assert_int_equal(ub_stripe_fetch_state(&f->state, 2), UB_FETCH_FAILED);
	assert_false(stored_fetched(f, 2));
	/* Failed stays failed (reads and writes) until a restart. */
	assert_error(guest_read(f, 2 * STRIPE_SECT + 1, 1));
	assert_error(guest_write(f, 2 * STRIPE_SECT, 4, 1));
	check_invariants(f, 1u << 2);
	restart_and_read(f, 2);
}

static void test_source_eio_transient(void **state)
{
	struct fx *f = *state;

	ub_fault_bdev_fail_nth(f->img, UB_FAULT_READ, 1, EIO, false);
	assert_int_equal(guest_read(f, 3 * STRIPE_SECT + 10, 20), 0);
	assert_true(stored_fetched(f, 3));
	assert_true(ub_fault_bdev_injected(f->img) >= 1);
	check_invariants(f, 0);
}

static void test_source_flaky(void **state)
{
	static const uint64_t stripes[] = {5, 6};
	static const unsigned counts[] = {2, 100};
	struct fx *f = *state;

	stop_stack(f);
	f->flaky_stripes = stripes;
	f->flaky_counts = counts;
	f->nflaky = 2;
	assert_int_equal(start_stack(f), 0);
	/* Two failures are retried away; a hundred are not. */
	assert_int_equal(guest_read(f, 5 * STRIPE_SECT, STRIPE_SECT), 0);
	assert_error(guest_read(f, 6 * STRIPE_SECT, 1));
	assert_false(stored_fetched(f, 6));
	/* A request spanning a good and the failed stripe fails too. */
	assert_error(guest_read(f, 6 * STRIPE_SECT - 4, 8));
	check_invariants(f, 1u << 6);
	restart_and_read(f, 6);
}

/* --- the base (data) device ----------------------------------------- */

static void test_base_write_eio(void **state)
{
	struct fx *f = *state;

	ub_fault_bdev_fail_nth(f->data, UB_FAULT_WRITE, 1, EIO, true);
	assert_error(guest_read(f, 4 * STRIPE_SECT, 8));
	assert_false(stored_fetched(f, 4));
	assert_error(guest_write(f, 7 * STRIPE_SECT + 2, 2, 2));
	check_invariants(f, 1u << 7);
	restart_and_read(f, 4);
}

static void test_base_flush_eio(void **state)
{
	struct fx *f = *state;

	/* The data reached the device but was never flushed: FETCHED must
	 * not be written. */
	ub_fault_bdev_fail_nth(f->data, UB_FAULT_FLUSH, 1, EIO, true);
	assert_error(guest_read(f, 8 * STRIPE_SECT, 8));
	assert_false(stored_fetched(f, 8));
	check_invariants(f, 0);
	restart_and_read(f, 8);
}

static void test_base_enospc(void **state)
{
	struct fx *f = *state;

	/* Room for one stripe, then the disk is full. */
	ub_fault_bdev_fail_after_bytes(f->data, STRIPE, ENOSPC);
	assert_int_equal(guest_read(f, 1 * STRIPE_SECT, 8), 0);
	assert_error(guest_read(f, 9 * STRIPE_SECT, 8));
	assert_false(stored_fetched(f, 9));
	/* A write into the fetched stripe goes to the full base device. */
	assert_error(guest_write(f, 1 * STRIPE_SECT, 8, 3));
	check_invariants(f, (1u << 1) | (1u << 9));
	/* Whole-stripe writes (claims) fail cleanly too. */
	assert_error(guest_write(f, 10 * STRIPE_SECT, STRIPE_SECT, 4));
	assert_false(stored_fetched(f, 10));
	check_invariants(f, (1u << 1) | (1u << 9) | (1u << 10));
	/* After a restart with room again, an aborted claim's stripe reads
	 * as the image: its partial write is not used. */
	restart_and_read(f, 10);
	restart_and_read(f, 9);
}

static void test_base_write_after_fetch(void **state)
{
	struct fx *f = *state;

	assert_int_equal(guest_read(f, 11 * STRIPE_SECT, 8), 0);
	ub_fault_bdev_fail_nth(f->data, UB_FAULT_WRITE, 1, EIO, false);
	assert_error(guest_write(f, 11 * STRIPE_SECT + 8, 8, 5));
	/* The next write goes through. */
	assert_int_equal(guest_write(f, 11 * STRIPE_SECT + 8, 8, 6), 0);
	assert_int_equal(guest_read(f, 11 * STRIPE_SECT, 16), 0);
	assert_int_equal(guest_io(f, UB_BDEV_FLUSH, 0, 0), 0);
	check_invariants(f, 0);
}

static void test_claim_write_eio_refetches(void **state)
{
	struct fx *f = *state;

	/* A whole-stripe write whose base write fails: the stripe stays
	 * fetchable and later reads see the image, not the partial write. */
	ub_fault_bdev_fail_nth(f->data, UB_FAULT_WRITE, 1, EIO, false);
	assert_error(guest_write(f, 12 * STRIPE_SECT, STRIPE_SECT, 7));
	assert_int_equal(ub_fault_bdev_injected(f->data), 1);
	assert_false(stored_fetched(f, 12));
	assert_int_equal(guest_read(f, 12 * STRIPE_SECT, STRIPE_SECT), 0);
	assert_true(stored_fetched(f, 12));
	/* And a whole-stripe write that works is kept. */
	assert_int_equal(guest_write(f, 13 * STRIPE_SECT, 2 * STRIPE_SECT, 8),
			 0);
	assert_int_equal(guest_read(f, 13 * STRIPE_SECT, 2 * STRIPE_SECT), 0);
	check_invariants(f, 0);
}

static void test_autofetch_source_fails(void **state)
{
	struct fx *f = *state;
	struct ub_bgworker_status st;
	uint64_t end = now_ms() + DEADLINE_MS;

	/* Autofetch runs into a source that breaks after two reads: every
	 * stripe ends fetched or failed, none hangs in between. */
	stop_stack(f);
	ub_fault_bdev_fail_nth(f->img, UB_FAULT_READ, 3, EIO, true);
	f->autofetch = true;
	assert_int_equal(start_stack(f), 0);
	do {
		ub_bgworker_status(f->worker, &st);
		if (st.fetched + st.failed >= NSTRIPES)
			break;
		usleep(1000);
	} while (now_ms() < end);
	if (st.fetched + st.failed != NSTRIPES || st.failed < 1)
		fail_msg("autofetch ended with %llu fetched, %llu failed of %u "
			 "(image reads failed: %llu)",
			 (unsigned long long)st.fetched,
			 (unsigned long long)st.failed, NSTRIPES,
			 (unsigned long long)ub_fault_bdev_injected(f->img));
	settle();
	assert_true(st.fetched >= 1);
	assert_int_equal(st.source, NSTRIPES);
	check_invariants(f, 0);
	restart_and_read(f, NSTRIPES - 1);
}

/* --- the metadata device -------------------------------------------- */

static void test_md_write_eio(void **state)
{
	struct fx *f = *state;

	ub_fault_bdev_fail_nth(f->md, UB_FAULT_WRITE, 1, EIO, true);
	assert_error(guest_read(f, 0, 8));
	assert_false(stored_fetched(f, 0));
	assert_error(guest_write(f, 14 * STRIPE_SECT, 1, 9));
	check_invariants(f, 1u << 14);
	restart_and_read(f, 0);
}

static void test_md_write_transient(void **state)
{
	struct fx *f = *state;

	ub_fault_bdev_fail_nth(f->md, UB_FAULT_WRITE, 1, EIO, false);
	assert_int_equal(guest_read(f, 15 * STRIPE_SECT, 8), 0);
	assert_true(stored_fetched(f, 15));
	check_invariants(f, 0);
}

static void test_md_flush_eio(void **state)
{
	struct fx *f = *state;

	ub_fault_bdev_fail_nth(f->md, UB_FAULT_FLUSH, 1, EIO, true);
	assert_error(guest_read(f, 5 * STRIPE_SECT, 8));
	assert_int_not_equal(ub_stripe_fetch_state(&f->state, 5),
			     UB_FETCH_FETCHED);
	/* The sector write may have landed; then the data under it must be
	 * right (checked by the invariants). */
	check_invariants(f, 0);
	restart_and_read(f, 5);
}

static void test_md_enospc(void **state)
{
	struct fx *f = *state;

	ub_fault_bdev_fail_after_bytes(f->md, 0, ENOSPC);
	assert_error(guest_read(f, 6 * STRIPE_SECT, 8));
	assert_false(stored_fetched(f, 6));
	check_invariants(f, 0);
	restart_and_read(f, 6);
}

static void test_md_written_eio(void **state)
{
	struct fx *f = *state;

	/* track_written: the first write to a fetched stripe waits for its
	 * WRITTEN bit; when that cannot be stored, the write fails. */
	assert_int_equal(guest_read(f, 3 * STRIPE_SECT, 8), 0);
	settle();
	ub_fault_bdev_fail_nth(f->md, UB_FAULT_WRITE, 1, EIO, true);
	assert_error(guest_write(f, 3 * STRIPE_SECT, 8, 10));
	check_invariants(f, 1u << 3);
	ub_fault_bdev_reset(f->md);
}

/* --- power cuts ------------------------------------------------------ */

/* A device with a volatile write cache: writes land in the current view
 * and in a log; FLUSH applies the log to the durable view. A power cut
 * keeps the durable view plus a random subset of the logged sectors (any
 * of them may have reached the media, in any order) and freezes every
 * device at once: later writes fail and change nothing. One lock for all
 * cache devices makes the cut a single instant across them. */
#define VC_DEPTH 256u

struct vc_rec {
	uint64_t sector;
	uint32_t count;
	unsigned char *data; /* count sectors, owned */
};

struct vcache {
	struct ub_bdev dev;
	unsigned char *cur, *dur; /* bytes each, owned */
	uint64_t bytes;
	struct vc_rec *log; /* owned, nlog entries */
	size_t nlog, cap;
	bool frozen;
};

struct vc_chan {
	struct ub_bdev_chan ch;
	uint32_t head;
	struct ub_bdev_cqe cq[VC_DEPTH];
};

static pthread_mutex_t vc_lock = PTHREAD_MUTEX_INITIALIZER;

static void vc_log_clear(struct vcache *v)
{
	size_t i;

	for (i = 0; i < v->nlog; i++)
		free(v->log[i].data);
	v->nlog = 0;
}

static int vc_execute(struct vcache *v, const struct ub_bdev_req *req)
{
	size_t off = (size_t)req->sector * SECTOR, len = 0, i;
	unsigned char *p;
	struct vc_rec *r;
	int k;

	if (req->op == UB_BDEV_READ) {
		p = v->cur + off;
		for (k = 0; k < req->iovcnt; k++) {
			memcpy(req->iov[k].iov_base, p, req->iov[k].iov_len);
			p += req->iov[k].iov_len;
		}
		return 0;
	}
	if (v->frozen)
		return -EIO;
	if (req->op == UB_BDEV_FLUSH) {
		for (i = 0; i < v->nlog; i++)
			memcpy(v->dur + v->log[i].sector * SECTOR,
			       v->log[i].data,
			       (size_t)v->log[i].count * SECTOR);
		vc_log_clear(v);
		return 0;
	}
	if (req->op != UB_BDEV_WRITE)
		return -EOPNOTSUPP;
	if (v->nlog == v->cap) {
		size_t cap = v->cap ? 2 * v->cap : 64;
		struct vc_rec *l = realloc(v->log, cap * sizeof(*l));

		if (!l)
			return -ENOMEM;
		v->log = l;
		v->cap = cap;
	}
	p = v->cur + off;
	for (k = 0; k < req->iovcnt; k++) {
		memcpy(p, req->iov[k].iov_base, req->iov[k].iov_len);
		p += req->iov[k].iov_len;
		len += req->iov[k].iov_len;
	}
	r = &v->log[v->nlog];
	r->data = malloc(len);
	if (!r->data)
		return -ENOMEM;
	memcpy(r->data, v->cur + off, len);
	r->sector = req->sector;
	r->count = req->count;
	v->nlog++;
	return 0;
}

static int vc_queue(struct ub_bdev_chan *ch, const struct ub_bdev_req *req)
{
	struct vc_chan *c = (struct vc_chan *)ch;
	struct ub_bdev_cqe *e;
	int rc = ub_bdev_req_check(ch->dev, req);

	if (rc)
		return rc;
	if (ch->inflight >= VC_DEPTH)
		return -EAGAIN;
	e = &c->cq[(c->head + ch->inflight) % VC_DEPTH];
	e->id = req->id;
	pthread_mutex_lock(&vc_lock);
	e->res = vc_execute((struct vcache *)ch->dev, req);
	pthread_mutex_unlock(&vc_lock);
	ch->inflight++;
	return 0;
}

static int vc_submit(struct ub_bdev_chan *ch)
{
	return 0;
}

static unsigned vc_poll(struct ub_bdev_chan *ch, struct ub_bdev_cqe *out,
			unsigned max)
{
	struct vc_chan *c = (struct vc_chan *)ch;
	unsigned n = 0;

	while (n < max && ch->inflight) {
		out[n++] = c->cq[c->head];
		c->head = (c->head + 1) % VC_DEPTH;
		ch->inflight--;
	}
	return n;
}

static void vc_close(struct ub_bdev_chan *ch)
{
	free(ch);
}

static const struct ub_bdev_chan_ops vc_chan_ops = {
    .queue = vc_queue,
    .submit = vc_submit,
    .poll = vc_poll,
    .close = vc_close,
};

static int vc_open_chan(struct ub_bdev *dev, struct ub_bdev_chan **out,
			struct ub_err *err)
{
	struct vc_chan *c = calloc(1, sizeof(*c)); /* owned by *out */

	if (!c)
		return ub_err_ret(err, -ENOMEM, "out of memory");
	c->ch.ops = &vc_chan_ops;
	c->ch.dev = ub_bdev_get(dev);
	c->ch.depth = VC_DEPTH;
	*out = &c->ch;
	return 0;
}

static void vc_destroy(struct ub_bdev *dev)
{
	struct vcache *v = (struct vcache *)dev;

	vc_log_clear(v);
	free(v->log);
	free(v->cur);
	free(v->dur);
	free(v);
}

static const struct ub_bdev_ops vc_ops = {
    .open_chan = vc_open_chan,
    .destroy = vc_destroy,
};

static struct ub_bdev *vc_create(uint64_t bytes)
{
	struct vcache *v = calloc(1, sizeof(*v));

	if (!v)
		return NULL;
	v->cur = calloc(1, bytes);
	v->dur = calloc(1, bytes);
	if (!v->cur || !v->dur) {
		free(v->cur);
		free(v->dur);
		free(v);
		return NULL;
	}
	v->bytes = bytes;
	ub_bdev_init(&v->dev, &vc_ops, bytes / SECTOR, 0, "vcache");
	return &v->dev;
}

struct pc_rng {
	uint64_t s;
};

static uint64_t pc_rand(struct pc_rng *r, uint64_t n)
{
	uint64_t x = (r->s += 0x9e3779b97f4a7c15ull);

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	x ^= x >> 31;
	return n ? x % n : x;
}

/* The cut: durable view plus a random subset of the logged sectors, on
 * every device at the same instant; then frozen. */
static void vc_power_cut(struct ub_bdev **devs, unsigned n, struct pc_rng *rng)
{
	unsigned d;
	size_t i;
	uint32_t k;

	pthread_mutex_lock(&vc_lock);
	for (d = 0; d < n; d++) {
		struct vcache *v = (struct vcache *)devs[d];

		for (i = 0; i < v->nlog; i++)
			for (k = 0; k < v->log[i].count; k++)
				if (pc_rand(rng, 2))
					memcpy(v->dur + (v->log[i].sector + k) *
							    SECTOR,
					       v->log[i].data +
						   (size_t)k * SECTOR,
					       SECTOR);
		vc_log_clear(v);
		v->frozen = true;
	}
	pthread_mutex_unlock(&vc_lock);
}

/* Power back on: what survived is all there is. */
static void vc_power_on(struct ub_bdev *dev)
{
	struct vcache *v = (struct vcache *)dev;

	pthread_mutex_lock(&vc_lock);
	vc_log_clear(v);
	memcpy(v->cur, v->dur, v->bytes);
	v->frozen = false;
	pthread_mutex_unlock(&vc_lock);
}

#define PC_SHIFT    3u /* 4 KiB stripes */
#define PC_SSECT    (1u << PC_SHIFT)
#define PC_STRIPES  1100u /* three metadata sectors */
#define PC_SECTORS  (PC_STRIPES * PC_SSECT)
#define PC_MD_BYTES (4u * SECTOR)
#define PC_MAGIC    0x5043555442554255ull
#define PC_CYCLES   240u
#define PC_EPOCH    4u /* cycles between fresh disks */

/* Guest sector content of write version ver. */
static void pc_fill(uint64_t sector, uint64_t ver, unsigned char *out)
{
	uint64_t w[3] = {PC_MAGIC, sector, ver};

	memset(out, (int)(ver * 31 + sector * 7) & 0xff, SECTOR);
	memcpy(out, w, sizeof(w));
}

/* Version in a sector: 0 = the image's data, UINT64_MAX = neither. */
static uint64_t pc_version(const unsigned char *img, uint64_t sector,
			   const unsigned char *buf)
{
	unsigned char want[SECTOR];
	uint64_t w[3];

	memcpy(w, buf, sizeof(w));
	if (w[0] == PC_MAGIC && w[1] == sector) {
		pc_fill(sector, w[2], want);
		if (!memcmp(want, buf, SECTOR))
			return w[2];
	}
	return memcmp(buf, img + sector * SECTOR, SECTOR) ? UINT64_MAX : 0;
}

struct pc {
	struct fx f;
	struct pc_rng rng;
	uint64_t ver;
	uint64_t *durable; /* per sector: version a FLUSH made durable */
	uint64_t *last;	   /* per sector: last completed write */
	unsigned cuts, fetched_at_cut, claims;
};

static void pc_fresh_disk(struct pc *p)
{
	struct ub_err err = {{0}};
	struct ub_metadata md = {0};
	struct vcache *d = (struct vcache *)p->f.data;
	struct vcache *m = (struct vcache *)p->f.md;

	fill_random(d->dur, d->bytes, pc_rand(&p->rng, 0)); /* stale junk */
	assert_int_equal(
	    ub_metadata_init(&md, PC_SHIFT, PC_STRIPES, PC_STRIPES, &err), 0);
	memset(m->dur, 0, m->bytes);
	assert_int_equal(ub_metadata_serialize(&md, m->dur, m->bytes, &err), 0);
	ub_metadata_free(&md);
	vc_power_on(p->f.data);
	vc_power_on(p->f.md);
	memset(p->durable, 0, PC_SECTORS * sizeof(*p->durable));
	memset(p->last, 0, PC_SECTORS * sizeof(*p->last));
}

static void pc_write(struct pc *p, uint64_t s, uint32_t n, bool wait)
{
	struct ub_bdev_req req;
	struct iovec iov = {p->f.buf, (size_t)n * SECTOR};
	uint64_t ver = ++p->ver;
	uint32_t i;
	int rc;

	for (i = 0; i < n; i++)
		pc_fill(s + i, ver, p->f.buf + (size_t)i * SECTOR);
	if (!wait) {
		/* In flight at the cut: queued and submitted, never polled. */
		req = (struct ub_bdev_req){.op = UB_BDEV_WRITE,
					   .sector = s,
					   .count = n,
					   .iov = &iov,
					   .iovcnt = 1,
					   .id = 78};
		assert_int_equal(ub_bdev_chan_queue(p->f.ch, &req), 0);
		assert_int_equal(ub_bdev_chan_submit(p->f.ch), 0);
		return;
	}
	rc = guest_io(&p->f, UB_BDEV_WRITE, s, n);
	assert_int_equal(rc, 0);
	for (i = 0; i < n; i++)
		p->last[s + i] = ver;
}

static void pc_read_check(struct pc *p, uint64_t s, uint32_t n)
{
	const unsigned char *img = ub_mem_bdev_data(p->f.img_mem);
	uint32_t i;

	assert_int_equal(guest_io(&p->f, UB_BDEV_READ, s, n), 0);
	for (i = 0; i < n; i++)
		if (pc_version(img, s + i, p->f.buf + (size_t)i * SECTOR) !=
		    p->last[s + i])
			fail_msg("read of sector %llu: not the last write "
				 "(version %llu)",
				 (unsigned long long)(s + i),
				 (unsigned long long)p->last[s + i]);
}

/* After the cut, on the surviving media: a stripe with a durable guest
 * write is FETCHED; every FETCHED stripe holds, per sector, its durable
 * version or a later one (or the image where nothing was durable). The
 * model then takes what survived as the new truth. */
static void pc_check_media(struct pc *p)
{
	const unsigned char *img = ub_mem_bdev_data(p->f.img_mem);
	struct vcache *d = (struct vcache *)p->f.data;
	struct vcache *m = (struct vcache *)p->f.md;
	struct ub_metadata md = {0};
	struct ub_err err = {{0}};
	uint64_t st, s, v;

	if (ub_metadata_parse(m->dur, m->bytes, &md, &err))
		fail_msg("metadata after a power cut: %s", err.msg);
	for (st = 0; st < PC_STRIPES; st++) {
		bool fetched = md.headers[st] & UB_STRIPE_FETCHED;

		p->fetched_at_cut += fetched;
		for (s = st * PC_SSECT; s < (st + 1) * PC_SSECT; s++) {
			if (!fetched) {
				if (p->durable[s])
					fail_msg(
					    "cut %u: sector %llu has "
					    "durable version %llu but "
					    "stripe %llu is not FETCHED",
					    p->cuts, (unsigned long long)s,
					    (unsigned long long)p->durable[s],
					    (unsigned long long)st);
				p->durable[s] = p->last[s] = 0;
				continue;
			}
			v = pc_version(img, s, d->dur + s * SECTOR);
			if (v == UINT64_MAX || v < p->durable[s])
				fail_msg("cut %u: FETCHED stripe %llu, sector "
					 "%llu: %s (durable version %llu)",
					 p->cuts, (unsigned long long)st,
					 (unsigned long long)s,
					 v == UINT64_MAX ? "garbage"
							 : "older data",
					 (unsigned long long)p->durable[s]);
			p->durable[s] = p->last[s] = v;
		}
	}
	ub_metadata_free(&md);
}

static void pc_cycle(struct pc *p)
{
	struct ub_bdev *devs[2] = {p->f.data, p->f.md};
	unsigned ops = 1 + (unsigned)pc_rand(&p->rng, 30), i;

	p->f.autofetch = pc_rand(&p->rng, 4) == 0;
	assert_int_equal(start_stack(&p->f), 0);
	for (i = 0; i < ops; i++) {
		uint64_t k = pc_rand(&p->rng, 10), s;
		uint32_t n;

		if (k < 2) {
			assert_int_equal(guest_io(&p->f, UB_BDEV_FLUSH, 0, 0),
					 0);
			memcpy(p->durable, p->last,
			       PC_SECTORS * sizeof(*p->durable));
			continue;
		}
		if (k < 4) {
			n = 1 + (uint32_t)pc_rand(&p->rng, 3 * PC_SSECT);
			s = pc_rand(&p->rng, PC_SECTORS - n + 1);
			pc_read_check(p, s, n);
			continue;
		}
		if (k < 6) { /* whole stripes: the claim path */
			n = PC_SSECT * (1 + (uint32_t)pc_rand(&p->rng, 3));
			s = pc_rand(&p->rng, PC_STRIPES - n / PC_SSECT + 1) *
			    PC_SSECT;
			p->claims++;
		} else {
			n = 1 + (uint32_t)pc_rand(&p->rng, 2 * PC_SSECT);
			s = pc_rand(&p->rng, PC_SECTORS - n + 1);
		}
		pc_write(p, s, n, true);
	}
	if (pc_rand(&p->rng, 2)) {
		uint32_t n = PC_SSECT * (1 + (uint32_t)pc_rand(&p->rng, 2));

		pc_write(p, pc_rand(&p->rng, PC_STRIPES - 1) * PC_SSECT, n,
			 false);
	}
	if (pc_rand(&p->rng, 2))
		usleep((useconds_t)pc_rand(&p->rng, 400));
	vc_power_cut(devs, 2, &p->rng);
	p->cuts++;
	stop_stack(&p->f);
	vc_power_on(p->f.data);
	vc_power_on(p->f.md);
	pc_check_media(p);
}

static void test_power_cuts(void **state)
{
	struct pc *p = calloc(1, sizeof(*p));
	const char *env = getenv("UBIBLK_POWERCUT_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
	struct ub_err err = {{0}};
	unsigned c;

	(void)state;
	assert_non_null(p);
	print_message("power cuts: seed %llu (UBIBLK_POWERCUT_SEED)\n",
		      (unsigned long long)seed);
	p->rng.s = seed;
	p->f.shift = PC_SHIFT;
	p->durable = calloc(PC_SECTORS, sizeof(*p->durable));
	p->last = calloc(PC_SECTORS, sizeof(*p->last));
	p->f.buf = ub_bdev_buf_alloc(4 * PC_SSECT * SECTOR);
	assert_true(p->durable && p->last && p->f.buf);
	assert_int_equal(ub_mem_bdev_create((uint64_t)PC_SECTORS * SECTOR,
					    &p->f.img_mem, &err),
			 0);
	assert_int_equal(ub_fault_bdev_wrap(p->f.img_mem, &p->f.img, &err), 0);
	fill_random(ub_mem_bdev_data(p->f.img_mem), (size_t)PC_SECTORS * SECTOR,
		    seed ^ 0x55);
	p->f.data = vc_create((uint64_t)PC_SECTORS * SECTOR);
	p->f.md = vc_create(PC_MD_BYTES);
	assert_true(p->f.data && p->f.md);
	/* ub_metadata_load in start_stack reads md_mem: the same device. */
	p->f.md_mem = ub_bdev_get(p->f.md);
	for (c = 0; c < PC_CYCLES; c++) {
		if (c % PC_EPOCH == 0)
			pc_fresh_disk(p);
		pc_cycle(p);
	}
	print_message("power cuts: %u cuts, %u claims, %.1f stripes FETCHED "
		      "per cut on average\n",
		      p->cuts, p->claims, (double)p->fetched_at_cut / p->cuts);
	ub_bdev_put(p->f.md_mem);
	ub_bdev_put(p->f.md);
	ub_bdev_put(p->f.data);
	ub_bdev_put(p->f.img);
	ub_bdev_put(p->f.img_mem);
	free(p->f.buf);
	free(p->durable);
	free(p->last);
	free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_source_eio_sticky, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_source_eio_transient, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_source_flaky, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_base_write_eio, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_base_flush_eio, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_base_enospc, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_base_write_after_fetch, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_claim_write_eio_refetches,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_autofetch_source_fails, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_md_write_eio, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_md_write_transient, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_md_flush_eio, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_md_enospc, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_md_written_eio, setup_tw,
					    teardown),
	    cmocka_unit_test(test_power_cuts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
