/* Stripe fetcher (storage.md §5.6), run by the background worker.
 *
 * A fetch takes a pool buffer (slot) and goes: source read -> write of the
 * stripe to the data device -> data flush -> FETCHED update in the
 * metadata (flusher.c), which publishes Fetched. Data flushes are shared:
 * one flush is in flight at a time and covers every write that completed
 * before it was queued. Demand fetches (from guest requests) and retries
 * wait in a FIFO and always start before autofetch, which walks the
 * source's stripes in order with a cursor and keeps at most auto_limit
 * fetches in flight (fewer while the guest is busy, see bgworker.c).
 *
 * Per stripe a progress byte says where it is (low nibble) and how many
 * attempts failed (bits 4-5). Claims (bgworker.h) reserve a stripe that
 * is not being fetched: a claimed stripe is never fetched; its commit
 * only needs the data flush before FETCHED is written. */
#include "stripe/bgworker_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

enum prog_state {
	P_NONE = 0,	      /* nothing going on */
	P_QUEUED = 1,	      /* in the FIFO */
	P_ACTIVE = 2,	      /* owns a slot */
	P_DONE = 3,	      /* data durable; FETCHED update queued or done */
	P_CLAIMED = 4,	      /* claimed by a whole-stripe write */
	P_CLAIMED_WANTED = 5, /* claimed, and a fetch was asked for since */
	P_COMMIT = 6,	      /* claim committed: waiting for the data flush */
};

#define PROG_STATE(p)	   ((p)&0x0fu)
#define PROG_RETRIES(p)	   (((p) >> 4) & 0x3u)
#define PROG(state, tries) ((uint8_t)((state) | ((tries) << 4)))
/* Stripes autofetch may skip in one pass before yielding the loop. */
#define AUTO_SKIP_MAX 65536u
/* Completions taken per poll call. */
#define POLL_BATCH 32u

enum slot_stage {
	S_FREE,
	S_SOURCE,     /* reading from the source */
	S_WRITE_WAIT, /* source done; the data write is still to queue */
	S_WRITING,
	S_FLUSH_WAIT, /* written; waits for the next data flush */
	S_FLUSHING,
};

static void set_state(struct ub_fetcher *f, uint64_t stripe, unsigned state)
{
	f->prog[stripe] = PROG(state, PROG_RETRIES(f->prog[stripe]));
}

static unsigned get_state(const struct ub_fetcher *f, uint64_t stripe)
{
	return PROG_STATE(f->prog[stripe]);
}

/* ---- FIFO of stripe ids ---- */

static bool fifo_grow(struct ub_fetcher *f)
{
	size_t cap = f->fifo_cap ? f->fifo_cap * 2 : 64, i;
	uint64_t *v = malloc(cap * sizeof(*v)); /* replaces f->fifo */

	if (!v)
		return false;
	for (i = 0; i < f->fifo_len; i++)
		v[i] = f->fifo[(f->fifo_head + i) % f->fifo_cap];
	free(f->fifo);
	f->fifo = v;
	f->fifo_cap = cap;
	f->fifo_head = 0;
	return true;
}

static bool fifo_push(struct ub_fetcher *f, uint64_t stripe, bool front)
{
	if (f->fifo_len == f->fifo_cap && !fifo_grow(f)) {
		LOG_ERROR("fetcher: out of memory queueing stripe %" PRIu64,
			  stripe);
		return false;
	}
	if (front) {
		f->fifo_head = (f->fifo_head + f->fifo_cap - 1) % f->fifo_cap;
		f->fifo[f->fifo_head] = stripe;
	} else {
		f->fifo[(f->fifo_head + f->fifo_len) % f->fifo_cap] = stripe;
	}
	f->fifo_len++;
	return true;
}

static uint64_t fifo_pop(struct ub_fetcher *f)
{
	uint64_t s = f->fifo[f->fifo_head];

	f->fifo_head = (f->fifo_head + 1) % f->fifo_cap;
	f->fifo_len--;
	return s;
}

/* Queues stripe for a fetch; false (stripe left as it was) when out of
 * memory. */
static bool enqueue(struct ub_fetcher *f, uint64_t stripe, bool front)
{
	if (!fifo_push(f, stripe, front))
		return false;
	set_state(f, stripe, P_QUEUED);
	return true;
}

static bool claim_vec_push(struct ub_claim_vec *v, uint64_t stripe,
			   unsigned tries)
{
	if (v->len == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 16;
		struct ub_claim_wait *n = realloc(v->v, cap * sizeof(*n));

		if (!n)
			return false;
		v->v = n;
		v->cap = cap;
	}
	v->v[v->len].stripe = stripe;
	v->v[v->len].tries = tries;
	v->len++;
	return true;
}

/* ---- requests ---- */

void ub_fetcher_request(struct ub_fetcher *f, uint64_t stripe)
{
	if (stripe >= f->st->nstripes) {
		LOG_ERROR("fetcher: fetch request for stripe %" PRIu64
			  " past the end (%" PRIu64 " stripes)",
			  stripe, f->st->nstripes);
		return;
	}
	if (ub_stripe_fetch_state(f->st, stripe) != UB_FETCH_NOT_FETCHED)
		return;
	switch (get_state(f, stripe)) {
	case P_NONE:
		enqueue(f, stripe, false);
		break;
	case P_CLAIMED:
		set_state(f, stripe, P_CLAIMED_WANTED);
		break;
	default:
		break; /* queued, in flight or done: it will be published */
	}
}

void ub_fetcher_claim_begin(struct ub_fetcher *f, uint64_t stripe,
			    _Atomic int *ticket)
{
	struct ub_bgworker_ctr *c = ub_bgworker_ctr(f->w);
	int answer = UB_CLAIM_DENIED;
	unsigned p;

	if (stripe >= f->st->nstripes) {
		LOG_ERROR("fetcher: claim for stripe %" PRIu64
			  " past the end (%" PRIu64 " stripes)",
			  stripe, f->st->nstripes);
		goto out;
	}
	if (ub_stripe_fetch_state(f->st, stripe) != UB_FETCH_NOT_FETCHED)
		goto out;
	p = get_state(f, stripe);
	if (p == P_NONE || p == P_QUEUED) {
		/* Not started: the claim wins. A queued fetch entry is
		 * dropped when it reaches the head of the FIFO; whoever
		 * asked for it is served by the claim's commit (or by a
		 * fetch queued when the claim is aborted). */
		f->prog[stripe] =
		    PROG(p == P_QUEUED ? P_CLAIMED_WANTED : P_CLAIMED, 0);
		answer = UB_CLAIM_GRANTED;
	} else if (p == P_CLAIMED) {
		/* Another channel holds it; ours waits for Fetched, so a
		 * fetch is wanted should that claim be aborted. */
		set_state(f, stripe, P_CLAIMED_WANTED);
	}
out:
	ub_ctr_add(answer == UB_CLAIM_GRANTED ? &c->claims_granted
					      : &c->claims_denied,
		   1);
	atomic_store_explicit(ticket, answer, memory_order_release);
	ub_bgworker_mark_notify(f->w);
}

void ub_fetcher_claim_commit(struct ub_fetcher *f, uint64_t stripe)
{
	unsigned p;

	if (stripe >= f->st->nstripes)
		return;
	p = get_state(f, stripe);
	if (p != P_CLAIMED && p != P_CLAIMED_WANTED) {
		LOG_ERROR("fetcher: commit of stripe %" PRIu64
			  " that is not claimed (state %u)",
			  stripe, p);
		return;
	}
	if (!claim_vec_push(&f->claim_wait, stripe, 0)) {
		LOG_ERROR("fetcher: out of memory committing stripe %" PRIu64,
			  stripe);
		ub_stripe_set_fetch_failed(f->st, stripe);
		f->prog[stripe] = PROG(P_NONE, 0);
		ub_bgworker_mark_notify(f->w);
		return;
	}
	set_state(f, stripe, P_COMMIT);
	ub_ctr_add(&ub_bgworker_ctr(f->w)->claims_committed, 1);
}

void ub_fetcher_claim_abort(struct ub_fetcher *f, uint64_t stripe)
{
	unsigned p;

	if (stripe >= f->st->nstripes)
		return;
	p = get_state(f, stripe);
	if (p != P_CLAIMED && p != P_CLAIMED_WANTED) {
		LOG_ERROR("fetcher: abort of stripe %" PRIu64
			  " that is not claimed (state %u)",
			  stripe, p);
		return;
	}
	ub_ctr_add(&ub_bgworker_ctr(f->w)->claims_aborted, 1);
	f->prog[stripe] = PROG(P_NONE, 0);
	/* Someone waits for it, or autofetch may have passed it already. */
	if (p == P_CLAIMED_WANTED || f->autofetch)
		enqueue(f, stripe, false);
}

/* ---- fetch attempts ---- */

static void slot_release(struct ub_fetcher *f, struct ub_fetch_slot *s)
{
	if (s->autofetch)
		f->nauto_active--;
	f->nactive--;
	s->stage = S_FREE;
	f->free_slots[f->nfree++] = (uint32_t)(s - f->slots);
}

/* A failed attempt: requeue at the back, or give up after the retries. */
static void attempt_failed(struct ub_fetcher *f, struct ub_fetch_slot *s)
{
	struct ub_bgworker_ctr *c = ub_bgworker_ctr(f->w);
	uint64_t stripe = s->stripe;
	unsigned tries = PROG_RETRIES(f->prog[stripe]);

	slot_release(f, s);
	if (tries < UB_FETCH_MAX_RETRIES) {
		f->prog[stripe] = PROG(P_NONE, tries + 1);
		if (enqueue(f, stripe, false)) {
			ub_ctr_add(&c->fetch_retries, 1);
			LOG_WARN("fetcher: stripe %" PRIu64
				 " failed (attempt %u), retrying",
				 stripe, tries + 1);
			return;
		}
	}
	LOG_ERROR("fetcher: giving up on stripe %" PRIu64 " after %u attempts",
		  stripe, tries + 1);
	f->prog[stripe] = PROG(P_NONE, 0);
	ub_stripe_set_fetch_failed(f->st, stripe);
	ub_ctr_add(&c->fetch_failures, 1);
	ub_bgworker_mark_notify(f->w);
}

/* Starts fetching stripe; false when the source cannot take it now (the
 * stripe goes back to the head of the FIFO). */
static bool start_fetch(struct ub_fetcher *f, uint64_t stripe, bool autofetch)
{
	struct ub_bgworker_ctr *c = ub_bgworker_ctr(f->w);
	struct ub_fetch_slot *s = &f->slots[f->free_slots[--f->nfree]];
	int rc;

	s->stripe = stripe;
	s->stage = S_SOURCE;
	s->autofetch = autofetch;
	f->nactive++;
	if (autofetch)
		f->nauto_active++;
	set_state(f, stripe, P_ACTIVE);
	rc = f->source->ops->request(f->source, stripe, s->buf);
	if (rc == -EAGAIN) {
		slot_release(f, s);
		set_state(f, stripe, P_NONE);
		enqueue(f, stripe, true);
		return false;
	}
	ub_ctr_add(autofetch ? &c->auto_fetches : &c->demand_fetches, 1);
	ub_ctr_max(&c->max_inflight, f->nactive);
	if (autofetch && ub_bgworker_yielding(f->w))
		ub_ctr_max(&c->max_auto_inflight_yielding, f->nauto_active);
	if (rc < 0)
		attempt_failed(f, s);
	return true;
}

static bool start_demand(struct ub_fetcher *f)
{
	bool progress = false;
	uint64_t stripe;

	while (f->fifo_len && f->nfree) {
		stripe = fifo_pop(f);
		progress = true;
		/* Claimed (or finished) since it was queued. */
		if (get_state(f, stripe) != P_QUEUED)
			continue;
		if (ub_stripe_fetch_state(f->st, stripe) !=
		    UB_FETCH_NOT_FETCHED) {
			set_state(f, stripe, P_NONE);
			continue;
		}
		if (!start_fetch(f, stripe, false))
			break;
	}
	return progress;
}

static bool start_auto(struct ub_fetcher *f, unsigned limit)
{
	unsigned skipped = 0;
	bool progress = false;
	uint64_t stripe;

	f->auto_held = false;
	if (!f->autofetch || f->fifo_len)
		return false;
	while (f->auto_next < f->auto_end && f->nfree) {
		if (f->nactive >= limit) {
			f->auto_held = limit < f->nslots;
			if (f->auto_held)
				ub_ctr_add(&ub_bgworker_ctr(f->w)->auto_held,
					   1);
			break;
		}
		stripe = f->auto_next;
		if (ub_stripe_fetch_state(f->st, stripe) !=
			UB_FETCH_NOT_FETCHED ||
		    get_state(f, stripe) != P_NONE) {
			f->auto_next++;
			progress = true;
			if (++skipped >= AUTO_SKIP_MAX)
				break;
			continue;
		}
		if (!start_fetch(f, stripe, true))
			break;
		f->auto_next++;
		progress = true;
	}
	return progress;
}

static struct ub_fetch_slot *slot_of_stripe(struct ub_fetcher *f,
					    uint64_t stripe)
{
	for (unsigned i = 0; i < f->nslots; i++)
		if (f->slots[i].stage == S_SOURCE &&
		    f->slots[i].stripe == stripe)
			return &f->slots[i];
	return NULL;
}

static bool poll_source(struct ub_fetcher *f)
{
	struct ub_source_cqe cqe[POLL_BATCH];
	struct ub_fetch_slot *s;
	bool progress = false;
	unsigned n, i;

	do {
		n = f->source->ops->poll(f->source, cqe, POLL_BATCH);
		for (i = 0; i < n; i++) {
			progress = true;
			s = slot_of_stripe(f, cqe[i].stripe);
			if (!s) {
				LOG_ERROR("fetcher: unexpected source "
					  "completion for stripe %" PRIu64,
					  cqe[i].stripe);
				continue;
			}
			if (cqe[i].res < 0)
				attempt_failed(f, s);
			else
				s->stage = S_WRITE_WAIT;
		}
	} while (n == POLL_BATCH);
	return progress;
}

/* Queues the data writes of stripes the source delivered. */
static bool queue_writes(struct ub_fetcher *f, bool *submit)
{
	uint64_t per = UINT64_C(1) << f->shift, first, count;
	struct ub_bdev_req req = {.op = UB_BDEV_WRITE, .iovcnt = 1};
	struct iovec iov;
	bool progress = false;
	int rc;

	req.iov = &iov;
	for (unsigned i = 0; i < f->nslots; i++) {
		struct ub_fetch_slot *s = &f->slots[i];

		if (s->stage != S_WRITE_WAIT)
			continue;
		first = s->stripe << f->shift;
		count = f->data_sectors - first < per ? f->data_sectors - first
						      : per;
		iov.iov_base = s->buf;
		iov.iov_len = (size_t)count << UB_SECTOR_SHIFT;
		req.sector = first;
		req.count = (uint32_t)count;
		req.id = i;
		rc = ub_bdev_chan_queue(f->ch, &req);
		if (rc == -EAGAIN)
			break;
		progress = true;
		if (rc < 0) {
			LOG_ERROR("fetcher: writing stripe %" PRIu64 ": %s",
				  s->stripe, strerror(-rc));
			attempt_failed(f, s);
			continue;
		}
		s->stage = S_WRITING;
		*submit = true;
	}
	return progress;
}

static void fetch_done(struct ub_fetcher *f, struct ub_fetch_slot *s,
		       struct ub_flusher *fl)
{
	uint64_t stripe = s->stripe;

	slot_release(f, s);
	f->prog[stripe] = PROG(P_DONE, 0);
	ub_flusher_request(fl, stripe, UB_STRIPE_FETCHED);
}

static void claim_flush_failed(struct ub_fetcher *f, struct ub_claim_wait *cw)
{
	struct ub_bgworker_ctr *c = ub_bgworker_ctr(f->w);

	if (cw->tries < UB_FETCH_MAX_RETRIES &&
	    claim_vec_push(&f->claim_wait, cw->stripe, cw->tries + 1)) {
		ub_ctr_add(&c->fetch_retries, 1);
		return;
	}
	LOG_ERROR("fetcher: giving up on claimed stripe %" PRIu64
		  ": the data flush failed",
		  cw->stripe);
	f->prog[cw->stripe] = PROG(P_NONE, 0);
	ub_stripe_set_fetch_failed(f->st, cw->stripe);
	ub_ctr_add(&c->fetch_failures, 1);
	ub_bgworker_mark_notify(f->w);
}

static void flush_done(struct ub_fetcher *f, int res)
{
	struct ub_flusher *fl = ub_bgworker_flusher(f->w);
	size_t i;

	f->flushing = false;
	if (res < 0)
		LOG_ERROR("fetcher: data flush failed: %s", strerror(-res));
	for (unsigned k = 0; k < f->nslots; k++) {
		struct ub_fetch_slot *s = &f->slots[k];

		if (s->stage != S_FLUSHING)
			continue;
		if (res < 0)
			attempt_failed(f, s);
		else
			fetch_done(f, s, fl);
	}
	for (i = 0; i < f->claim_flushing.len; i++) {
		struct ub_claim_wait *cw = &f->claim_flushing.v[i];

		if (res < 0) {
			claim_flush_failed(f, cw);
			continue;
		}
		f->prog[cw->stripe] = PROG(P_DONE, 0);
		ub_flusher_request(fl, cw->stripe, UB_STRIPE_FETCHED);
	}
	f->claim_flushing.len = 0;
}

static bool poll_data(struct ub_fetcher *f)
{
	struct ub_bdev_cqe cqe[POLL_BATCH];
	bool progress = false;
	unsigned n, i;

	do {
		n = ub_bdev_chan_poll(f->ch, cqe, POLL_BATCH);
		for (i = 0; i < n; i++) {
			struct ub_fetch_slot *s;

			progress = true;
			if (cqe[i].id == UB_FLUSH_ID) {
				flush_done(f, cqe[i].res);
				continue;
			}
			if (cqe[i].id >= f->nslots ||
			    f->slots[cqe[i].id].stage != S_WRITING) {
				LOG_ERROR("fetcher: unexpected data "
					  "completion %" PRIu64,
					  cqe[i].id);
				continue;
			}
			s = &f->slots[cqe[i].id];
			if (cqe[i].res < 0) {
				LOG_ERROR("fetcher: data write of stripe "
					  "%" PRIu64 " failed: %s",
					  s->stripe, strerror(-cqe[i].res));
				attempt_failed(f, s);
			} else {
				s->stage = S_FLUSH_WAIT;
			}
		}
	} while (n == POLL_BATCH);
	return progress;
}

/* Starts a data flush for everything written since the last one. */
static bool start_flush(struct ub_fetcher *f, bool *submit)
{
	struct ub_bdev_req req = {.op = UB_BDEV_FLUSH, .id = UB_FLUSH_ID};
	struct ub_claim_vec tmp;
	bool any = f->claim_wait.len != 0;
	unsigned i;
	int rc;

	if (f->flushing)
		return false;
	for (i = 0; i < f->nslots && !any; i++)
		any = f->slots[i].stage == S_FLUSH_WAIT;
	if (!any)
		return false;
	rc = ub_bdev_chan_queue(f->ch, &req);
	if (rc == -EAGAIN)
		return false;
	ub_ctr_add(&ub_bgworker_ctr(f->w)->data_flushes, 1);
	f->flushing = true;
	for (i = 0; i < f->nslots; i++)
		if (f->slots[i].stage == S_FLUSH_WAIT)
			f->slots[i].stage = S_FLUSHING;
	tmp = f->claim_flushing;
	f->claim_flushing = f->claim_wait;
	f->claim_wait = tmp;
	f->claim_wait.len = 0;
	if (rc < 0) {
		LOG_ERROR("fetcher: queueing a data flush: %s", strerror(-rc));
		flush_done(f, rc);
		return true;
	}
	*submit = true;
	return true;
}

bool ub_fetcher_update(struct ub_fetcher *f, unsigned auto_limit)
{
	bool progress = false, submit = false;
	int rc;

	progress |= start_demand(f);
	progress |= start_auto(f, auto_limit);
	progress |= poll_source(f);
	progress |= poll_data(f);
	progress |= queue_writes(f, &submit);
	progress |= start_flush(f, &submit);
	if (submit) {
		rc = ub_bdev_chan_submit(f->ch);
		if (rc < 0)
			LOG_WARN("fetcher: data submit: %s", strerror(-rc));
	}
	return progress;
}

void ub_fetcher_md_failed(struct ub_fetcher *f, uint64_t stripe)
{
	f->prog[stripe] = PROG(P_NONE, 0);
	ub_stripe_set_fetch_failed(f->st, stripe);
	ub_ctr_add(&ub_bgworker_ctr(f->w)->fetch_failures, 1);
	ub_bgworker_mark_notify(f->w);
}

bool ub_fetcher_busy(const struct ub_fetcher *f)
{
	return f->fifo_len || f->nactive || f->flushing || f->claim_wait.len ||
	       f->claim_flushing.len || f->source->ops->busy(f->source) ||
	       ub_bdev_chan_busy(f->ch) || ub_fetcher_auto_pending(f);
}

bool ub_fetcher_auto_pending(const struct ub_fetcher *f)
{
	return f->autofetch && f->auto_next < f->auto_end;
}

bool ub_fetcher_can_disconnect(const struct ub_fetcher *f, uint64_t remaining)
{
	return !f->disconnected && !remaining && !ub_fetcher_busy(f);
}

void ub_fetcher_disconnect(struct ub_fetcher *f)
{
	struct ub_source *empty;
	bool had = f->source->sectors != 0;

	/* Nothing is in flight, so the old source can go. */
	if (ub_empty_source_open(f->shift, &empty, NULL) < 0)
		return;
	ub_source_close(f->source);
	f->source = empty;
	f->disconnected = true;
	if (had)
		LOG_INFO("All stripes fetched, disconnected from source "
			 "device");
}

int ub_fetcher_init(struct ub_fetcher *f, struct ub_bgworker *w,
		    struct ub_stripe_state *st, struct ub_bdev *data,
		    struct ub_source *source, bool autofetch, unsigned nslots,
		    struct ub_err *err)
{
	uint64_t src_stripes = ub_source_stripe_count(source);
	unsigned i;
	int rc;

	memset(f, 0, sizeof(*f));
	f->w = w;
	f->st = st;
	f->source = source;
	f->shift = st->shift;
	f->data_sectors = data->sectors;
	f->stripe_bytes = UINT64_C(512) << st->shift;
	f->nslots = nslots;
	if (data->sectors < source->sectors) {
		rc = ub_err_ret(err, -EINVAL,
				"Invalid parameter error: target device too "
				"small (%" PRIu64 " sectors) for source "
				"device (%" PRIu64 " sectors)",
				data->sectors, source->sectors);
		goto err;
	}
	f->autofetch = autofetch;
	f->auto_end = src_stripes < st->nstripes ? src_stripes : st->nstripes;
	rc = -ENOMEM;
	f->prog = calloc(st->nstripes ? st->nstripes : 1, 1);
	f->slots = calloc(nslots, sizeof(*f->slots));
	f->free_slots = calloc(nslots, sizeof(*f->free_slots));
	f->pool = ub_bdev_buf_alloc((size_t)(nslots * f->stripe_bytes));
	if (!f->prog || !f->slots || !f->free_slots || !f->pool) {
		ub_err_set(err,
			   "out of memory for %u fetch buffers of "
			   "%" PRIu64 " bytes",
			   nslots, f->stripe_bytes);
		goto err;
	}
	for (i = 0; i < nslots; i++) {
		f->slots[i].buf = (char *)f->pool + i * f->stripe_bytes;
		f->free_slots[i] = nslots - 1 - i;
	}
	f->nfree = nslots;
	rc = ub_bdev_open_chan(data, &f->ch, err);
	if (rc < 0)
		goto err;
	return 0;

err:
	ub_fetcher_fini(f);
	return rc;
}

void ub_fetcher_fini(struct ub_fetcher *f)
{
	/* Closing waits for the requests in flight, which use the pool. */
	ub_source_close(f->source);
	ub_bdev_chan_close(f->ch);
	free(f->pool);
	free(f->free_slots);
	free(f->slots);
	free(f->prog);
	free(f->fifo);
	free(f->claim_wait.v);
	free(f->claim_flushing.v);
	memset(f, 0, sizeof(*f));
}
