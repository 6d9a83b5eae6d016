/* Lazy device (storage.md §5.4).
 *
 * queue looks at the fetch state (and, for writes with track_written, the
 * write state) of every stripe a request touches, one acquire load each:
 *
 *   all local (and Written)      -> straight to the base channel;
 *   a Failed stripe              -> completes with -EIO;
 *   read of one unfetched stripe -> the raw image when there is one
 *                                   (clamped to the image end, the rest
 *                                   zero-filled), no fetch;
 *   write whose unfetched stripes are all covered whole -> claim record;
 *   anything else                -> deferred record: the worker is asked
 *                                   for the missing stripes (and WRITTEN
 *                                   bits) and the request waits.
 *
 * poll releases every deferred record whose stripes have become local
 * (oldest first, a blocked record does not hold back later ones: the
 * guest orders nothing among requests in flight) and drives the claim
 * records: wait for the tickets; all granted -> write the whole request to
 * the base device, then commit and complete once the stripes are Fetched;
 * any denied -> abort the granted ones and wait like a deferred record
 * (granting all or nothing keeps two channels from each holding a claim
 * the other waits for).
 *
 * Wake-ups: the channel's event fd is an epoll set over the base and
 * image channels' event fds and an eventfd of our own. The worker signals
 * that eventfd when the stripe state changes; the channel signals it
 * itself when completions are ready that no other fd announces. */
#include "bdev/lazy.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "stripe/metadata.h"
#include "util/log.h"

/* Requests a channel holds when the base channel reports no depth. */
#define LAZY_DEPTH_DEFAULT 256u
/* Entries of the per-channel "already asked the worker" caches. */
#define SENT_CACHE 64u
/* iovecs clamped on the stack for an image read. */
#define CLAMP_IOV_STACK 16

struct lazy_bdev {
	struct ub_bdev dev;
	struct ub_bdev *base;  /* reference */
	struct ub_bdev *image; /* reference, or NULL */
	struct ub_stripe_state *st;
	struct ub_bgworker *w;
	bool track_written;
};

enum lreq_stage {
	L_WAIT,	      /* deferred: waits for its stripes */
	L_TICKETS,    /* claim: waits for the worker's answers */
	L_READY,      /* claim granted: waits for WRITTEN / a base slot */
	L_WRITING,    /* claim: the write is on the base channel */
	L_COMMITTING, /* claim: waits for Fetched */
	L_ABORTING,   /* claim: aborts to send, then complete or wait */
};

struct lazy_claim {
	uint64_t stripe;
	_Atomic int ticket;
	bool end_sent; /* commit or abort sent */
};

struct lazy_req {
	struct lazy_req *next;
	struct ub_bdev_req req; /* iov points at iov[] below */
	uint64_t first, last;	/* stripes touched */
	uint64_t cursor;	/* stripes before it are known ready */
	uint8_t stage;
	bool is_write;
	bool fallback; /* claim: wait like a deferred record after aborts */
	int result;    /* claim: result of an aborted write */
	unsigned nclaims;
	struct lazy_claim *claims; /* nclaims entries after iov[] */
	struct iovec iov[];
};

struct lazy_list {
	struct lazy_req *head, *tail;
};

struct lazy_chan {
	struct ub_bdev_chan ch;
	struct lazy_bdev *ld;
	struct ub_bdev_chan *base;  /* owned */
	struct ub_bdev_chan *image; /* owned, or NULL */
	int efd;		    /* owned: subscribed eventfd */
	int epfd;		    /* owned: epoll over the three fds */
	int base_fd, image_fd;	    /* the inner channels' fds, or -1 */
	struct lazy_list deferred;  /* L_WAIT records, oldest first */
	struct lazy_list claims;    /* claim records */
	unsigned nwriting;	    /* claim records in L_WRITING */
	bool base_dirty;	    /* queued on base since its last submit */
	struct ub_bdev_cqe *local;  /* heap ring of ch.depth entries */
	uint32_t local_head, local_len;
	uint64_t fetch_sent[SENT_CACHE];   /* stripe + 1, 0 = empty */
	uint64_t written_sent[SENT_CACHE]; /* stripe + 1, 0 = empty */
};

static struct lazy_chan *to_lc(struct ub_bdev_chan *ch)
{
	return (struct lazy_chan *)ch;
}

static bool op_writes(enum ub_bdev_op op)
{
	return op == UB_BDEV_WRITE || op == UB_BDEV_WRITE_ZEROES ||
	       op == UB_BDEV_DISCARD;
}

static void kick(struct lazy_chan *lc)
{
	if (eventfd_write(lc->efd, 1) < 0)
		LOG_ERROR("lazy: signalling the channel: %s", strerror(errno));
}

/* A completion made here; the caller's next poll reports it. */
static void local_complete(struct lazy_chan *lc, uint64_t id, int res)
{
	uint32_t depth = lc->ch.depth;
	struct ub_bdev_cqe *c =
	    &lc->local[(lc->local_head + lc->local_len) % depth];

	c->id = id;
	c->res = res;
	lc->local_len++;
}

/* ---- lists ---- */

static void list_append(struct lazy_list *l, struct lazy_req *r)
{
	r->next = NULL;
	if (l->tail)
		l->tail->next = r;
	else
		l->head = r;
	l->tail = r;
}

/* Unlinks r, whose predecessor is prev (NULL for the head). */
static void list_remove(struct lazy_list *l, struct lazy_req *prev,
			struct lazy_req *r)
{
	if (prev)
		prev->next = r->next;
	else
		l->head = r->next;
	if (l->tail == r)
		l->tail = prev;
	r->next = NULL;
}

/* ---- asking the worker ---- */

static bool cache_hit(uint64_t *cache, uint64_t stripe)
{
	return cache[stripe % SENT_CACHE] == stripe + 1;
}

/* Asks for every stripe of [first, last] that is not local yet (and its
 * WRITTEN bit for a write when tracked). Returns 0 or -errno. */
static int ask_worker(struct lazy_chan *lc, uint64_t first, uint64_t last,
		      bool is_write)
{
	struct lazy_bdev *ld = lc->ld;
	uint64_t s;
	int rc;

	for (s = first; s <= last; s++) {
		if (ub_stripe_fetch_state(ld->st, s) != UB_FETCH_NOT_FETCHED ||
		    cache_hit(lc->fetch_sent, s))
			continue;
		rc = ub_bgworker_fetch(ld->w, s);
		if (rc < 0) {
			LOG_ERROR("lazy: failed to send fetch request for "
				  "stripe %" PRIu64 ": %s",
				  s, strerror(-rc));
			return rc;
		}
		lc->fetch_sent[s % SENT_CACHE] = s + 1;
	}
	if (!is_write || !ld->track_written)
		return 0;
	for (s = first; s <= last; s++) {
		if (ub_stripe_write_state(ld->st, s) != UB_WRITE_NOT_WRITTEN ||
		    cache_hit(lc->written_sent, s))
			continue;
		rc = ub_bgworker_set_written(ld->w, s);
		if (rc < 0) {
			LOG_ERROR("lazy: failed to send set written request "
				  "for stripe %" PRIu64 ": %s",
				  s, strerror(-rc));
			return rc;
		}
		lc->written_sent[s % SENT_CACHE] = s + 1;
	}
	return 0;
}

/* ---- readiness ---- */

enum readiness { R_READY, R_PENDING, R_FAILED };

/* Advances r->cursor over the stripes that are ready. */
static enum readiness evaluate(struct lazy_chan *lc, struct lazy_req *r)
{
	struct lazy_bdev *ld = lc->ld;
	bool tw = r->is_write && ld->track_written;

	for (; r->cursor <= r->last; r->cursor++) {
		switch (ub_stripe_fetch_state(ld->st, r->cursor)) {
		case UB_FETCH_FAILED:
			return R_FAILED;
		case UB_FETCH_NOT_FETCHED:
			return R_PENDING;
		default:
			break;
		}
		if (!tw)
			continue;
		switch (ub_stripe_write_state(ld->st, r->cursor)) {
		case UB_WRITE_FAILED:
			return R_FAILED;
		case UB_WRITE_NOT_WRITTEN:
			return R_PENDING;
		default:
			break;
		}
	}
	return R_READY;
}

/* ---- queue ---- */

/* A read of one unfetched stripe, served by the raw image. */
static int image_read(struct lazy_chan *lc, const struct ub_bdev_req *req)
{
	struct iovec stack_iov[CLAMP_IOV_STACK], *iov = stack_iov;
	uint64_t isz = lc->ld->image->sectors;
	struct ub_bdev_req r = *req;
	size_t keep, off = 0;
	int i, rc;

	if (req->sector + req->count <= isz) {
		rc = ub_bdev_chan_queue(lc->image, req);
		goto out;
	}
	/* Past the image end: read what exists, zero the rest. */
	keep = req->sector < isz
		   ? (size_t)(isz - req->sector) << UB_SECTOR_SHIFT
		   : 0;
	if (req->iovcnt > CLAMP_IOV_STACK) {
		iov = malloc((size_t)req->iovcnt * sizeof(*iov));
		if (!iov)
			return -ENOMEM;
	}
	r.iovcnt = 0;
	for (i = 0; i < req->iovcnt; i++) {
		const struct iovec *v = &req->iov[i];
		size_t take = keep > off ? keep - off : 0;

		if (take > v->iov_len)
			take = v->iov_len;
		if (take)
			iov[r.iovcnt++] = (struct iovec){
			    .iov_base = v->iov_base, .iov_len = take};
		if (take < v->iov_len)
			memset((char *)v->iov_base + take, 0,
			       v->iov_len - take);
		off += v->iov_len;
	}
	if (!keep) {
		local_complete(lc, req->id, 0);
		rc = 0;
		goto out_free;
	}
	r.iov = iov;
	r.count = (uint32_t)(keep >> UB_SECTOR_SHIFT);
	rc = ub_bdev_chan_queue(lc->image, &r);
out_free:
	if (iov != stack_iov)
		free(iov);
out:
	if (!rc)
		lc->ch.inflight++;
	return rc;
}

/* Allocates a record for req with room for nclaims claims. */
static struct lazy_req *req_new(const struct ub_bdev_req *req, uint64_t first,
				uint64_t last, bool is_write, unsigned nclaims)
{
	size_t iov_len =
	    (size_t)(req->iovcnt > 0 ? req->iovcnt : 0) * sizeof(struct iovec);
	struct lazy_req *r; /* heap; freed when the request completes or
			       is handed to the base channel */

	r = calloc(1, sizeof(*r) + iov_len +
			  (size_t)nclaims * sizeof(struct lazy_claim));
	if (!r)
		return NULL;
	r->req = *req;
	if (iov_len)
		memcpy(r->iov, req->iov, iov_len);
	r->req.iov = iov_len ? r->iov : NULL;
	r->first = first;
	r->cursor = first;
	r->last = last;
	r->is_write = is_write;
	r->claims = (struct lazy_claim *)((char *)r->iov + iov_len);
	return r;
}

/* Stripes that a claim would take over: true when every unfetched stripe
 * of the write is covered whole; *n = how many. */
static bool claimable(struct lazy_chan *lc, const struct ub_bdev_req *req,
		      uint64_t first, uint64_t last, unsigned *n)
{
	struct lazy_bdev *ld = lc->ld;
	unsigned shift = ld->st->shift;
	uint64_t end = req->sector + req->count, s, s0, s1;

	*n = 0;
	for (s = first; s <= last; s++) {
		if (ub_stripe_fetch_state(ld->st, s) != UB_FETCH_NOT_FETCHED)
			continue;
		s0 = s << shift;
		s1 = (s + 1) << shift;
		if (s1 > ld->dev.sectors)
			s1 = ld->dev.sectors;
		if (req->sector > s0 || end < s1)
			return false;
		(*n)++;
	}
	return *n > 0;
}

static int defer(struct lazy_chan *lc, const struct ub_bdev_req *req,
		 uint64_t first, uint64_t last, bool is_write)
{
	struct lazy_bdev *ld = lc->ld;
	unsigned nclaims = 0, i = 0;
	struct lazy_req *r;
	uint64_t s;
	int rc;

	if (!is_write || !claimable(lc, req, first, last, &nclaims))
		nclaims = 0;
	r = req_new(req, first, last, is_write, nclaims);
	if (!r)
		return -ENOMEM;
	lc->ch.inflight++;
	if (!nclaims) {
		rc = ask_worker(lc, first, last, is_write);
		if (rc < 0) {
			free(r);
			local_complete(lc, req->id, -EIO);
			return 0;
		}
		r->stage = L_WAIT;
		list_append(&lc->deferred, r);
		return 0;
	}
	r->stage = L_TICKETS;
	for (s = first; s <= last; s++) {
		if (ub_stripe_fetch_state(ld->st, s) != UB_FETCH_NOT_FETCHED)
			continue;
		r->claims[i].stripe = s;
		if (ub_bgworker_claim_begin(ld->w, s, &r->claims[i].ticket) <
		    0) {
			/* Wait for the answers already asked for, then
			 * give back what was granted and fetch. */
			r->fallback = true;
			break;
		}
		i++;
	}
	r->nclaims = i;
	if (ld->track_written && ask_worker(lc, first, last, true) < 0)
		r->result = -EIO;
	list_append(&lc->claims, r);
	return 0;
}

static int lazy_queue(struct ub_bdev_chan *ch, const struct ub_bdev_req *req)
{
	struct lazy_chan *lc = to_lc(ch);
	struct lazy_bdev *ld = lc->ld;
	bool is_write = op_writes(req->op), pending = false;
	uint64_t first, last, s;
	int rc;

	if (ch->inflight >= ch->depth)
		return -EAGAIN;
	if (req->op == UB_BDEV_FLUSH) {
		rc = ub_bdev_chan_queue(lc->base, req);
		if (!rc) {
			ch->inflight++;
			lc->base_dirty = true;
		}
		return rc;
	}
	rc = ub_bdev_req_check(ch->dev, req);
	if (rc < 0)
		return rc;
	first = req->sector >> ld->st->shift;
	last = (req->sector + req->count - 1) >> ld->st->shift;
	if (last >= ld->st->nstripes)
		return -EINVAL;
	ub_bgworker_note_guest_io(ld->w);
	for (s = first; s <= last; s++) {
		enum ub_fetch_state f = ub_stripe_fetch_state(ld->st, s);

		if (f == UB_FETCH_FAILED)
			goto failed;
		if (f == UB_FETCH_NOT_FETCHED)
			pending = true;
		if (!is_write || !ld->track_written)
			continue;
		switch (ub_stripe_write_state(ld->st, s)) {
		case UB_WRITE_FAILED:
			goto failed;
		case UB_WRITE_NOT_WRITTEN:
			pending = true;
			break;
		default:
			break;
		}
	}
	if (!pending) {
		rc = ub_bdev_chan_queue(lc->base, req);
		if (!rc) {
			ch->inflight++;
			lc->base_dirty = true;
		}
		return rc;
	}
	if (!is_write && first == last && lc->image)
		return image_read(lc, req);
	return defer(lc, req, first, last, is_write);

failed:
	LOG_ERROR("lazy: %s request for a failed stripe (sector %" PRIu64
		  ", %u sectors)",
		  is_write ? "write" : "read", req->sector, req->count);
	ch->inflight++;
	local_complete(lc, req->id, -EIO);
	return 0;
}

/* ---- poll ---- */

/* Sends the commits (or aborts) of the granted claims not sent yet;
 * false when one could not be sent (retried by the next poll). */
static bool send_ends(struct lazy_chan *lc, struct lazy_req *r, bool commit)
{
	struct ub_bgworker *w = lc->ld->w;
	unsigned i;
	int rc;

	for (i = 0; i < r->nclaims; i++) {
		struct lazy_claim *c = &r->claims[i];

		if (c->end_sent ||
		    atomic_load_explicit(&c->ticket, memory_order_acquire) !=
			UB_CLAIM_GRANTED)
			continue;
		rc = commit ? ub_bgworker_claim_commit(w, c->stripe)
			    : ub_bgworker_claim_abort(w, c->stripe);
		if (rc < 0) {
			LOG_ERROR("lazy: cannot send the claim %s of stripe "
				  "%" PRIu64 ": %s",
				  commit ? "commit" : "abort", c->stripe,
				  strerror(-rc));
			return false;
		}
		c->end_sent = true;
	}
	return true;
}

/* Ends the claim record r (predecessor prev) with res. */
static void claim_finish(struct lazy_chan *lc, struct lazy_req *prev,
			 struct lazy_req *r, int res)
{
	list_remove(&lc->claims, prev, r);
	local_complete(lc, r->req.id, res);
	free(r);
}

/* Claimed stripes all local: 0; one Failed: -EIO; else 1 (wait). */
static int claims_fetched(struct lazy_chan *lc, struct lazy_req *r)
{
	bool wait = false;

	for (unsigned i = 0; i < r->nclaims; i++) {
		switch (
		    ub_stripe_fetch_state(lc->ld->st, r->claims[i].stripe)) {
		case UB_FETCH_FAILED:
			return -EIO;
		case UB_FETCH_NOT_FETCHED:
			wait = true;
			break;
		default:
			break;
		}
	}
	return wait ? 1 : 0;
}

/* A granted claim may write: 0; wait for WRITTEN bits: 1; -EIO when a
 * stripe of the request failed. The stripes not claimed were local when
 * the claims were asked for (local stripes stay local, but may have
 * failed in between if they were unfetched then). */
static int claim_ready(struct lazy_chan *lc, struct lazy_req *r)
{
	struct lazy_bdev *ld = lc->ld;
	uint64_t s;

	for (s = r->first; s <= r->last; s++)
		if (ub_stripe_fetch_state(ld->st, s) == UB_FETCH_FAILED)
			return -EIO;
	if (!ld->track_written)
		return 0;
	for (; r->cursor <= r->last; r->cursor++) {
		switch (ub_stripe_write_state(ld->st, r->cursor)) {
		case UB_WRITE_FAILED:
			return -EIO;
		case UB_WRITE_NOT_WRITTEN:
			return 1;
		default:
			break;
		}
	}
	return 0;
}

/* Advances one claim record; true when it left the claim list. */
static bool claim_step(struct lazy_chan *lc, struct lazy_req *prev,
		       struct lazy_req *r)
{
	unsigned i;
	int rc;

	switch (r->stage) {
	case L_TICKETS:
		for (i = 0; i < r->nclaims; i++) {
			int t = atomic_load_explicit(&r->claims[i].ticket,
						     memory_order_acquire);

			if (t == UB_CLAIM_PENDING)
				return false;
			if (t == UB_CLAIM_DENIED)
				r->fallback = true;
		}
		if (r->fallback || r->result) {
			r->stage = L_ABORTING;
			return claim_step(lc, prev, r);
		}
		r->stage = L_READY;
		/* fallthrough */
	case L_READY:
		rc = claim_ready(lc, r);
		if (rc > 0)
			return false;
		if (rc < 0) {
			r->result = rc;
			r->stage = L_ABORTING;
			return claim_step(lc, prev, r);
		}
		rc = ub_bdev_chan_queue(lc->base, &r->req);
		if (rc == -EAGAIN)
			return false;
		if (rc < 0) {
			r->result = rc;
			r->stage = L_ABORTING;
			return claim_step(lc, prev, r);
		}
		lc->base_dirty = true;
		r->stage = L_WRITING;
		lc->nwriting++;
		return false;
	case L_WRITING:
		return false;
	case L_COMMITTING:
		if (!send_ends(lc, r, true))
			return false;
		rc = claims_fetched(lc, r);
		if (rc > 0)
			return false;
		claim_finish(lc, prev, r, rc);
		return true;
	case L_ABORTING:
		if (!send_ends(lc, r, false))
			return false;
		if (r->result) {
			claim_finish(lc, prev, r, r->result);
			return true;
		}
		/* Denied somewhere: wait for the stripes like any other
		 * write. */
		list_remove(&lc->claims, prev, r);
		r->nclaims = 0;
		r->cursor = r->first;
		r->stage = L_WAIT;
		if (ask_worker(lc, r->first, r->last, true) < 0) {
			local_complete(lc, r->req.id, -EIO);
			free(r);
			return true;
		}
		list_append(&lc->deferred, r);
		return true;
	}
	return false;
}

static void process_claims(struct lazy_chan *lc)
{
	struct lazy_req *prev = NULL, *r = lc->claims.head, *next;

	while (r) {
		next = r->next;
		if (!claim_step(lc, prev, r))
			prev = r;
		r = next;
	}
}

static void process_deferred(struct lazy_chan *lc)
{
	struct lazy_req *prev = NULL, *r = lc->deferred.head, *next;
	int rc;

	for (; r; r = next) {
		next = r->next;
		switch (evaluate(lc, r)) {
		case R_PENDING:
			prev = r;
			continue;
		case R_FAILED:
			LOG_ERROR("lazy: %s request for a failed stripe "
				  "(sector %" PRIu64 ")",
				  r->is_write ? "write" : "read",
				  r->req.sector);
			rc = -EIO;
			break;
		case R_READY:
			rc = ub_bdev_chan_queue(lc->base, &r->req);
			if (rc == -EAGAIN)
				return;
			if (!rc)
				lc->base_dirty = true;
			break;
		}
		list_remove(&lc->deferred, prev, r);
		if (rc)
			local_complete(lc, r->req.id, rc);
		free(r);
	}
}

/* A base completion of a claimed write: consumed here (true) or not. */
static bool claim_write_done(struct lazy_chan *lc, const struct ub_bdev_cqe *c)
{
	struct lazy_req *r;

	for (r = lc->claims.head; r; r = r->next) {
		if (r->stage != L_WRITING || r->req.id != c->id)
			continue;
		lc->nwriting--;
		if (c->res < 0) {
			r->result = c->res;
			r->stage = L_ABORTING;
		} else {
			r->stage = L_COMMITTING;
		}
		return true;
	}
	return false;
}

static unsigned lazy_poll(struct ub_bdev_chan *ch, struct ub_bdev_cqe *out,
			  unsigned max)
{
	struct lazy_chan *lc = to_lc(ch);
	unsigned n = 0, k, i, j;
	bool again;

	do {
		process_claims(lc);
		process_deferred(lc);
		if (lc->base_dirty) {
			lc->base_dirty = false;
			if (ub_bdev_chan_submit(lc->base) < 0)
				LOG_WARN("lazy: base submit failed");
		}
		while (n < max && lc->local_len) {
			out[n++] = lc->local[lc->local_head];
			lc->local_head = (lc->local_head + 1) % ch->depth;
			lc->local_len--;
		}
		again = false;
		if (n < max) {
			k = ub_bdev_chan_poll(lc->base, out + n, max - n);
			for (i = j = 0; i < k; i++) {
				/* A claimed write finished: go round again
				 * to send its commit right away. */
				if (lc->nwriting &&
				    claim_write_done(lc, &out[n + i])) {
					again = true;
					continue;
				}
				out[n + j++] = out[n + i];
			}
			n += j;
		}
	} while (again);
	if (n < max && lc->image)
		n += ub_bdev_chan_poll(lc->image, out + n, max - n);
	ch->inflight -= n;
	/* Completions left over that no fd will announce. */
	if (lc->local_len || (lc->base_fd < 0 && lc->base->inflight) ||
	    (lc->image && lc->image_fd < 0 && lc->image->inflight))
		kick(lc);
	return n;
}

static int lazy_submit(struct ub_bdev_chan *ch)
{
	struct lazy_chan *lc = to_lc(ch);
	int rc = 0, rc2;

	if (lc->image)
		rc = ub_bdev_chan_submit(lc->image);
	lc->base_dirty = false;
	rc2 = ub_bdev_chan_submit(lc->base);
	if (lc->local_len || (lc->base_fd < 0 && lc->base->inflight) ||
	    (lc->image && lc->image_fd < 0 && lc->image->inflight))
		kick(lc);
	return rc ? rc : rc2;
}

static int lazy_event_fd(struct ub_bdev_chan *ch)
{
	return to_lc(ch)->epfd;
}

static void lazy_event_reset(struct ub_bdev_chan *ch)
{
	struct lazy_chan *lc = to_lc(ch);
	eventfd_t v;

	ub_bdev_chan_event_reset(lc->base);
	if (lc->image)
		ub_bdev_chan_event_reset(lc->image);
	(void)eventfd_read(lc->efd, &v);
}

static void lazy_chan_free(struct lazy_chan *lc)
{
	struct lazy_req *r, *next;

	for (r = lc->deferred.head; r; r = next) {
		next = r->next;
		free(r);
	}
	for (r = lc->claims.head; r; r = next) {
		next = r->next;
		free(r);
	}
	if (lc->efd >= 0) {
		ub_bgworker_unsubscribe(lc->ld->w, lc->efd);
		close(lc->efd);
	}
	if (lc->epfd >= 0)
		close(lc->epfd);
	ub_bdev_chan_close(lc->image);
	ub_bdev_chan_close(lc->base);
	free(lc->local);
	free(lc);
}

static void lazy_close(struct ub_bdev_chan *ch)
{
	lazy_chan_free(to_lc(ch));
}

static const struct ub_bdev_chan_ops lazy_chan_ops = {
    .queue = lazy_queue,
    .submit = lazy_submit,
    .poll = lazy_poll,
    .event_fd = lazy_event_fd,
    .event_reset = lazy_event_reset,
    .close = lazy_close,
};

static int watch(int epfd, int fd)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};

	if (fd < 0)
		return 0;
	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static int lazy_open_chan(struct ub_bdev *dev, struct ub_bdev_chan **out,
			  struct ub_err *err)
{
	struct lazy_bdev *ld = (struct lazy_bdev *)dev;
	struct lazy_chan *lc; /* owned by *out */
	int rc;

	lc = calloc(1, sizeof(*lc));
	if (!lc)
		return ub_err_ret(err, -ENOMEM, "lazy: out of memory");
	lc->ld = ld;
	lc->efd = lc->epfd = -1;
	rc = ub_bdev_open_chan(ld->base, &lc->base, err);
	if (rc < 0)
		goto err;
	if (ld->image) {
		rc = ub_bdev_open_chan(ld->image, &lc->image, err);
		if (rc < 0)
			goto err;
	}
	lc->ch.depth = lc->base->depth ? lc->base->depth : LAZY_DEPTH_DEFAULT;
	lc->local = calloc(lc->ch.depth, sizeof(*lc->local));
	if (!lc->local) {
		rc = ub_err_ret(err, -ENOMEM, "lazy: out of memory");
		goto err;
	}
	lc->base_fd = ub_bdev_chan_event_fd(lc->base);
	lc->image_fd = lc->image ? ub_bdev_chan_event_fd(lc->image) : -1;
	lc->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	lc->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (lc->efd < 0 || lc->epfd < 0) {
		rc = ub_err_ret(err, -errno, "lazy: eventfd/epoll: %s",
				strerror(errno));
		goto err;
	}
	rc = watch(lc->epfd, lc->efd);
	if (!rc)
		rc = watch(lc->epfd, lc->base_fd);
	if (!rc)
		rc = watch(lc->epfd, lc->image_fd);
	if (rc < 0) {
		ub_err_set(err, "lazy: epoll_ctl: %s", strerror(-rc));
		goto err;
	}
	rc = ub_bgworker_subscribe(ld->w, lc->efd);
	if (rc < 0) {
		ub_err_set(err, "lazy: subscribing to the worker: %s",
			   strerror(-rc));
		close(lc->efd);
		lc->efd = -1;
		goto err;
	}
	lc->ch.ops = &lazy_chan_ops;
	lc->ch.dev = ub_bdev_get(dev);
	*out = &lc->ch;
	return 0;

err:
	lazy_chan_free(lc);
	return rc;
}

static void lazy_destroy(struct ub_bdev *dev)
{
	struct lazy_bdev *ld = (struct lazy_bdev *)dev;

	ub_bdev_put(ld->image);
	ub_bdev_put(ld->base);
	free(ld);
}

static const struct ub_bdev_ops lazy_ops = {
    .open_chan = lazy_open_chan,
    .destroy = lazy_destroy,
};

int ub_lazy_bdev_create(const struct ub_lazy_params *p, struct ub_bdev **out,
			struct ub_err *err)
{
	struct lazy_bdev *ld; /* owned by *out */
	uint64_t stripes;

	if (!p->base || !p->state || !p->worker)
		return ub_err_ret(err, -EINVAL,
				  "Invalid parameter error: a lazy device "
				  "needs a base device, a stripe state and a "
				  "worker");
	stripes = ub_stripe_count(p->base->sectors, (uint8_t)p->state->shift);
	if (stripes > p->state->nstripes)
		return ub_err_ret(err, -EINVAL,
				  "Invalid parameter error: data device "
				  "(%" PRIu64 " sectors, %" PRIu64 " stripes) "
				  "is larger than the metadata covers "
				  "(%" PRIu64 " stripes)",
				  p->base->sectors, stripes,
				  p->state->nstripes);
	ld = calloc(1, sizeof(*ld));
	if (!ld)
		return ub_err_ret(err, -ENOMEM, "lazy: out of memory");
	ld->base = ub_bdev_get(p->base);
	ld->image = p->image ? ub_bdev_get(p->image) : NULL;
	ld->st = p->state;
	ld->w = p->worker;
	ld->track_written = p->track_written;
	ub_bdev_init(&ld->dev, &lazy_ops, p->base->sectors,
		     p->base->flags &
			 (UB_BDEV_F_READONLY | UB_BDEV_F_WRITE_THROUGH |
			  UB_BDEV_F_DISCARD | UB_BDEV_F_WRITE_ZEROES),
		     "lazy");
	*out = &ld->dev;
	return 0;
}
