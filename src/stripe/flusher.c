/* Metadata flusher (storage.md §5.7), run by the background worker.
 *
 * Keeps its own copy of the metadata. A request sets a bit (FETCHED or
 * WRITTEN) of one stripe; the bit joins the pending bits of its metadata
 * sector ("group" of 508 stripes). A group with pending bits is written as
 * one 512-byte sector with a fresh CRC, so every bit pending for it when
 * the write starts is carried by the same write. One update per group is
 * in flight at a time; different groups proceed concurrently (up to
 * UB_MD_MAX_INFLIGHT). A metadata flush covers every sector write that
 * completed before it was queued (one flush in flight at a time); only
 * after it succeeds are the bits published in the shared state.
 *
 * A failed write or flush undoes the update in the private copy and
 * retries the group; after UB_MD_MAX_RETRIES failures in a row the
 * stripes it carried are marked Failed (FETCHED) or WriteFailed (WRITTEN)
 * so the guest requests waiting for them fail instead of hanging. */
#include "stripe/bgworker_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

enum group_state {
	G_IDLE = 0,
	G_READY = 1,	/* in the ready ring */
	G_BUSY = 2,	/* an update is in flight */
	G_MORE = 0x80u, /* with G_BUSY: new bits arrived meanwhile */
};

enum rec_stage {
	R_FREE,
	R_WRITING,
	R_FLUSH_WAIT, /* written; waits for the next metadata flush */
	R_FLUSHING,
};

/* Bytes between two record buffers in the pool (I/O alignment). */
#define REC_STRIDE UB_BUF_ALIGN
#define POLL_BATCH 32u

static void ready_push(struct ub_flusher *fl, uint32_t g, bool front)
{
	size_t cap = (size_t)fl->ngroups;

	if (front) {
		fl->ready_head = (fl->ready_head + cap - 1) % cap;
		fl->ready[fl->ready_head] = g;
	} else {
		fl->ready[(fl->ready_head + fl->ready_len) % cap] = g;
	}
	fl->ready_len++;
	fl->sec[g] = G_READY;
}

static uint32_t ready_pop(struct ub_flusher *fl)
{
	uint32_t g = fl->ready[fl->ready_head];

	fl->ready_head = (fl->ready_head + 1) % fl->ngroups;
	fl->ready_len--;
	return g;
}

void ub_flusher_request(struct ub_flusher *fl, uint64_t stripe, uint8_t bit)
{
	uint32_t g;

	if (stripe >= fl->md.stripe_count) {
		LOG_ERROR("flusher: update of stripe %" PRIu64
			  " past the end (%" PRIu64 " stripes)",
			  stripe, fl->md.stripe_count);
		return;
	}
	/* Set in the copy: durable and published, or carried by the update
	 * in flight (which requeues it should it fail). */
	if (fl->md.headers[stripe] & bit)
		return;
	fl->pend[stripe] |= bit;
	g = (uint32_t)(stripe / UB_MD_STRIPES_PER_SECTOR);
	if (fl->sec[g] == G_IDLE)
		ready_push(fl, g, false);
	else if (fl->sec[g] & G_BUSY)
		fl->sec[g] |= G_MORE;
}

static uint64_t group_first(uint32_t g)
{
	return (uint64_t)g * UB_MD_STRIPES_PER_SECTOR;
}

static unsigned group_len(const struct ub_flusher *fl, uint32_t g)
{
	uint64_t left = fl->md.stripe_count - group_first(g);

	return left < UB_MD_STRIPES_PER_SECTOR ? (unsigned)left
					       : UB_MD_STRIPES_PER_SECTOR;
}

static struct ub_md_rec *rec_get(struct ub_flusher *fl)
{
	for (unsigned i = 0; i < UB_MD_MAX_INFLIGHT; i++)
		if (fl->rec[i].stage == R_FREE)
			return &fl->rec[i];
	return NULL;
}

/* Moves the group's pending bits into r and the private copy; false when
 * there were none. */
static bool collect(struct ub_flusher *fl, struct ub_md_rec *r, uint32_t g)
{
	uint64_t first = group_first(g);
	unsigned n = group_len(fl, g), i;
	bool any = false;

	memset(r->newbits, 0, sizeof(r->newbits));
	for (i = 0; i < n; i++) {
		uint8_t b = fl->pend[first + i] & ~fl->md.headers[first + i];

		fl->pend[first + i] = 0;
		if (!b)
			continue;
		r->newbits[i] = b;
		fl->md.headers[first + i] |= b;
		any = true;
	}
	return any;
}

/* Takes r's bits out of the private copy and back into the pending set. */
static void uncollect(struct ub_flusher *fl, struct ub_md_rec *r)
{
	uint64_t first = group_first(r->group);
	unsigned n = group_len(fl, r->group), i;

	for (i = 0; i < n; i++) {
		fl->md.headers[first + i] &= (uint8_t)~r->newbits[i];
		fl->pend[first + i] |= r->newbits[i];
	}
}

static bool group_has_pending(const struct ub_flusher *fl, uint32_t g)
{
	uint64_t first = group_first(g);
	unsigned n = group_len(fl, g), i;

	for (i = 0; i < n; i++)
		if (fl->pend[first + i])
			return true;
	return false;
}

/* The group's update is over: pick up what arrived meanwhile. */
static void group_release(struct ub_flusher *fl, uint32_t g)
{
	bool more = (fl->sec[g] & G_MORE) || group_has_pending(fl, g);

	fl->sec[g] = G_IDLE;
	if (more)
		ready_push(fl, g, false);
}

static void rec_free(struct ub_flusher *fl, struct ub_md_rec *r)
{
	r->stage = R_FREE;
	fl->nbusy--;
}

static void rec_failed(struct ub_flusher *fl, struct ub_md_rec *r)
{
	struct ub_bgworker_ctr *c = ub_bgworker_ctr(fl->w);
	uint32_t g = r->group;
	uint64_t first = group_first(g);
	unsigned n = group_len(fl, g), i;

	uncollect(fl, r);
	if (++fl->tries[g] <= UB_MD_MAX_RETRIES) {
		ub_ctr_add(&c->md_retries, 1);
		LOG_WARN("flusher: metadata sector %u update failed (attempt "
			 "%u), retrying",
			 g + 1, fl->tries[g]);
		goto out;
	}
	LOG_ERROR("flusher: giving up on metadata sector %u after %u "
		  "attempts; failing the stripes waiting for it",
		  g + 1, fl->tries[g]);
	fl->tries[g] = 0;
	ub_ctr_add(&c->md_failures, 1);
	for (i = 0; i < n; i++) {
		uint8_t b = r->newbits[i];

		if (!b)
			continue;
		fl->pend[first + i] &= (uint8_t)~b;
		if (b & UB_STRIPE_FETCHED)
			ub_fetcher_md_failed(ub_bgworker_fetcher(fl->w),
					     first + i);
		if (b & UB_STRIPE_WRITTEN)
			ub_stripe_set_write_failed(fl->st, first + i);
	}
	ub_bgworker_mark_notify(fl->w);
out:
	rec_free(fl, r);
	group_release(fl, g);
}

static void publish(struct ub_flusher *fl, struct ub_md_rec *r)
{
	uint64_t first = group_first(r->group);
	unsigned n = group_len(fl, r->group), i;

	for (i = 0; i < n; i++) {
		uint8_t b = r->newbits[i];

		if (b & UB_STRIPE_WRITTEN)
			ub_stripe_set_written(fl->st, first + i);
		if (b & UB_STRIPE_FETCHED) {
			ub_stripe_set_fetched(fl->st, first + i);
			ub_bgworker_on_fetched(fl->w, first + i);
		}
	}
	ub_bgworker_mark_notify(fl->w);
}

static void flush_done(struct ub_flusher *fl, int res)
{
	fl->flushing = false;
	if (res < 0)
		LOG_ERROR("flusher: metadata flush failed: %s", strerror(-res));
	for (unsigned i = 0; i < UB_MD_MAX_INFLIGHT; i++) {
		struct ub_md_rec *r = &fl->rec[i];

		if (r->stage != R_FLUSHING)
			continue;
		if (res < 0) {
			rec_failed(fl, r);
			continue;
		}
		publish(fl, r);
		fl->tries[r->group] = 0;
		rec_free(fl, r);
		group_release(fl, r->group);
	}
}

static bool poll_md(struct ub_flusher *fl)
{
	struct ub_bdev_cqe cqe[POLL_BATCH];
	bool progress = false;
	unsigned n, i;

	do {
		n = ub_bdev_chan_poll(fl->ch, cqe, POLL_BATCH);
		for (i = 0; i < n; i++) {
			struct ub_md_rec *r;

			progress = true;
			if (cqe[i].id == UB_FLUSH_ID) {
				flush_done(fl, cqe[i].res);
				continue;
			}
			if (cqe[i].id >= UB_MD_MAX_INFLIGHT ||
			    fl->rec[cqe[i].id].stage != R_WRITING) {
				LOG_ERROR("flusher: unexpected response "
					  "%" PRIu64,
					  cqe[i].id);
				continue;
			}
			r = &fl->rec[cqe[i].id];
			if (cqe[i].res < 0) {
				LOG_ERROR("flusher: writing metadata sector "
					  "%u: %s",
					  r->group + 1, strerror(-cqe[i].res));
				rec_failed(fl, r);
				continue;
			}
			ub_ctr_add(&ub_bgworker_ctr(fl->w)->md_writes, 1);
			r->stage = R_FLUSH_WAIT;
		}
	} while (n == POLL_BATCH);
	return progress;
}

static bool start_writes(struct ub_flusher *fl, bool *submit)
{
	struct ub_bdev_req req = {.op = UB_BDEV_WRITE, .count = 1, .iovcnt = 1};
	struct iovec iov = {.iov_len = UB_MD_SECTOR_SIZE};
	bool progress = false;
	struct ub_md_rec *r;
	struct ub_err err;
	uint32_t g;
	int rc;

	req.iov = &iov;
	while (fl->ready_len && (r = rec_get(fl))) {
		g = ready_pop(fl);
		progress = true;
		if (!collect(fl, r, g)) {
			fl->sec[g] = G_IDLE;
			continue;
		}
		r->group = g;
		rc = ub_metadata_render_sector(
		    fl->md.stripe_shift, fl->md.stripe_count, fl->md.headers,
		    (uint64_t)g + 1, r->buf, &err);
		if (rc < 0) {
			LOG_ERROR("flusher: %s", err.msg);
			r->stage = R_WRITING;
			fl->sec[g] = G_BUSY;
			fl->nbusy++;
			rec_failed(fl, r);
			continue;
		}
		iov.iov_base = r->buf;
		req.sector = (uint64_t)g + 1;
		req.id = (uint64_t)(r - fl->rec);
		rc = ub_bdev_chan_queue(fl->ch, &req);
		if (rc == -EAGAIN) {
			uncollect(fl, r);
			ready_push(fl, g, true);
			break;
		}
		r->stage = R_WRITING;
		fl->sec[g] = G_BUSY;
		fl->nbusy++;
		if (rc < 0) {
			LOG_ERROR("flusher: queueing metadata sector %u: %s",
				  g + 1, strerror(-rc));
			rec_failed(fl, r);
			continue;
		}
		*submit = true;
	}
	return progress;
}

static bool start_flush(struct ub_flusher *fl, bool *submit)
{
	struct ub_bdev_req req = {.op = UB_BDEV_FLUSH, .id = UB_FLUSH_ID};
	bool any = false;
	unsigned i;
	int rc;

	if (fl->flushing)
		return false;
	for (i = 0; i < UB_MD_MAX_INFLIGHT && !any; i++)
		any = fl->rec[i].stage == R_FLUSH_WAIT;
	if (!any)
		return false;
	rc = ub_bdev_chan_queue(fl->ch, &req);
	if (rc == -EAGAIN)
		return false;
	for (i = 0; i < UB_MD_MAX_INFLIGHT; i++)
		if (fl->rec[i].stage == R_FLUSH_WAIT)
			fl->rec[i].stage = R_FLUSHING;
	fl->flushing = true;
	ub_ctr_add(&ub_bgworker_ctr(fl->w)->md_flushes, 1);
	if (rc < 0) {
		LOG_ERROR("flusher: queueing a metadata flush: %s",
			  strerror(-rc));
		flush_done(fl, rc);
		return true;
	}
	*submit = true;
	return true;
}

bool ub_flusher_update(struct ub_flusher *fl)
{
	bool progress = false, submit = false;
	int rc;

	progress |= poll_md(fl);
	progress |= start_writes(fl, &submit);
	progress |= start_flush(fl, &submit);
	if (submit) {
		rc = ub_bdev_chan_submit(fl->ch);
		if (rc < 0)
			LOG_WARN("flusher: metadata submit: %s", strerror(-rc));
	}
	return progress;
}

bool ub_flusher_busy(const struct ub_flusher *fl)
{
	return fl->nbusy || fl->ready_len || fl->flushing ||
	       ub_bdev_chan_busy(fl->ch);
}

int ub_flusher_init(struct ub_flusher *fl, struct ub_bgworker *w,
		    struct ub_stripe_state *st, struct ub_bdev *metadata,
		    struct ub_err *err)
{
	size_t ns, ng;
	unsigned i;
	int rc;

	memset(fl, 0, sizeof(*fl));
	fl->w = w;
	fl->st = st;
	rc = ub_bdev_open_chan(metadata, &fl->ch, err);
	if (rc < 0)
		return rc;
	rc = ub_metadata_load(fl->ch, &fl->md, err);
	if (rc < 0)
		goto err;
	if (fl->md.stripe_shift != st->shift ||
	    fl->md.stripe_count != st->nstripes) {
		rc = ub_err_ret(err, -EINVAL,
				"Invalid parameter error: metadata (%" PRIu64
				" stripes, shift %u) does not match the stripe "
				"state (%" PRIu64 " stripes, shift %u)",
				fl->md.stripe_count, fl->md.stripe_shift,
				st->nstripes, st->shift);
		goto err;
	}
	fl->ngroups = ub_metadata_group_count(fl->md.stripe_count);
	ns = (size_t)fl->md.stripe_count;
	ng = (size_t)fl->ngroups;
	rc = -ENOMEM;
	fl->pend = calloc(ns ? ns : 1, 1);
	fl->sec = calloc(ng ? ng : 1, 1);
	fl->tries = calloc(ng ? ng : 1, 1);
	fl->ready = calloc(ng ? ng : 1, sizeof(*fl->ready));
	fl->pool = ub_bdev_buf_alloc(UB_MD_MAX_INFLIGHT * REC_STRIDE);
	if (!fl->pend || !fl->sec || !fl->tries || !fl->ready || !fl->pool) {
		ub_err_set(err, "out of memory for the metadata flusher");
		goto err;
	}
	for (i = 0; i < UB_MD_MAX_INFLIGHT; i++)
		fl->rec[i].buf = fl->pool + i * REC_STRIDE;
	return 0;

err:
	ub_flusher_fini(fl);
	return rc;
}

void ub_flusher_fini(struct ub_flusher *fl)
{
	/* Closing waits for the requests in flight, which use the pool. */
	ub_bdev_chan_close(fl->ch);
	free(fl->pool);
	free(fl->ready);
	free(fl->tries);
	free(fl->sec);
	free(fl->pend);
	ub_metadata_free(&fl->md);
	memset(fl, 0, sizeof(*fl));
}
