/* Background worker thread (storage.md §5.5).
 *
 * Requests from I/O threads are pushed on a lock-free stack (one CAS) and
 * announced on an eventfd; the worker takes the whole stack at once and
 * handles it oldest first. Each pass then runs the fetcher and the
 * flusher. When a pass changes the shared state, every subscribed eventfd
 * is signalled once. With nothing to do the thread sleeps in epoll on the
 * request eventfd and the event fds of its data channel, metadata channel
 * and source; channels without one (completions ready at submit) only
 * shorten the sleep to a millisecond while they are busy.
 *
 * Yielding to the guest: I/O threads set a flag (ub_bgworker_note_guest_io)
 * that the worker samples and clears on every pass. While the flag was
 * seen within the last yield_ms, autofetch may start a fetch only while
 * fewer than yield_inflight fetches are in flight; demand fetches are
 * never held back and always start before autofetch. When autofetch is
 * held back the sleep ends when the yield window does. */
#include "stripe/bgworker_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"

#define DEFAULT_INFLIGHT       16u
#define MAX_INFLIGHT	       256u
#define DEFAULT_YIELD_MS       5
#define DEFAULT_YIELD_INFLIGHT 1u
/* Rate samples: one every RATE_STEP_NS while fetching, averaged over the
 * last RATE_WINDOW_NS. */
#define RATE_SAMPLES   64u
#define RATE_STEP_NS   250000000ull
#define RATE_WINDOW_NS 10000000000ull

enum msg_type {
	MSG_FETCH,
	MSG_SET_WRITTEN,
	MSG_CLAIM_BEGIN,
	MSG_CLAIM_COMMIT,
	MSG_CLAIM_ABORT,
};

struct msg {
	struct msg *next;
	enum msg_type type;
	uint64_t stripe;
	_Atomic int *ticket; /* MSG_CLAIM_BEGIN: the channel's */
};

struct rate_sample {
	uint64_t t_ns, bytes;
};

enum { TAG_REQ, TAG_DATA, TAG_MD, TAG_SOURCE };

struct ub_bgworker {
	struct ub_stripe_state *st;
	struct ub_bdev *data, *metadata; /* references */
	struct ub_fetcher fetcher;
	struct ub_flusher flusher;
	pthread_t thread;
	_Atomic(struct msg *) inbox; /* newest first */
	int req_efd;		     /* owned: requests and stop */
	int epfd;		     /* owned */
	int data_fd, md_fd, src_fd;  /* channel / source event fds, or -1 */
	atomic_bool stop;
	atomic_bool guest_io;
	bool notify; /* shared state changed in this pass */
	/* Yielding (worker thread only). */
	uint64_t yield_window_ns;
	unsigned yield_inflight;
	uint64_t last_guest_ns, yield_start_ns;
	bool guest_seen, yielding;
	atomic_bool yielding_pub;
	/* Progress. */
	uint64_t total;
	uint64_t stripe_bytes;
	atomic_uint_least64_t remaining; /* sourced stripes not yet local */
	pthread_mutex_t rate_lock;	 /* guards the samples */
	struct rate_sample samples[RATE_SAMPLES];
	unsigned nsamples, sample_head; /* ring, newest at head - 1 */
	uint64_t last_sample_ns;
	/* Subscribers. */
	pthread_mutex_t sub_lock; /* guards subs; rare control path */
	int *subs;		  /* heap, nsubs of subs_cap */
	unsigned nsubs, subs_cap;
	struct ub_bgworker_ctr ctr;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- callbacks from fetcher.c and flusher.c ---- */

void ub_bgworker_on_fetched(struct ub_bgworker *w, uint64_t stripe)
{
	atomic_fetch_add_explicit(&w->st->fetched_bytes, w->stripe_bytes,
				  memory_order_relaxed);
	if (atomic_load_explicit(&w->remaining, memory_order_relaxed))
		atomic_fetch_sub_explicit(&w->remaining, 1,
					  memory_order_relaxed);
}

void ub_bgworker_mark_notify(struct ub_bgworker *w)
{
	w->notify = true;
}

struct ub_bgworker_ctr *ub_bgworker_ctr(struct ub_bgworker *w)
{
	return &w->ctr;
}

struct ub_flusher *ub_bgworker_flusher(struct ub_bgworker *w)
{
	return &w->flusher;
}

struct ub_fetcher *ub_bgworker_fetcher(struct ub_bgworker *w)
{
	return &w->fetcher;
}

bool ub_bgworker_yielding(const struct ub_bgworker *w)
{
	return w->yielding;
}

/* ---- requests from other threads ---- */

static int send_msg(struct ub_bgworker *w, enum msg_type type, uint64_t stripe,
		    _Atomic int *ticket)
{
	struct msg *m, *head; /* m: owned by the inbox once pushed */

	if (atomic_load_explicit(&w->stop, memory_order_relaxed))
		return -ESHUTDOWN;
	m = malloc(sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->type = type;
	m->stripe = stripe;
	m->ticket = ticket;
	head = atomic_load_explicit(&w->inbox, memory_order_relaxed);
	do {
		m->next = head;
	} while (!atomic_compare_exchange_weak_explicit(
	    &w->inbox, &head, m, memory_order_release, memory_order_relaxed));
	if (eventfd_write(w->req_efd, 1) < 0)
		LOG_ERROR("bgworker: signalling the worker: %s",
			  strerror(errno));
	return 0;
}

int ub_bgworker_fetch(struct ub_bgworker *w, uint64_t stripe)
{
	return send_msg(w, MSG_FETCH, stripe, NULL);
}

int ub_bgworker_set_written(struct ub_bgworker *w, uint64_t stripe)
{
	return send_msg(w, MSG_SET_WRITTEN, stripe, NULL);
}

int ub_bgworker_claim_begin(struct ub_bgworker *w, uint64_t stripe,
			    _Atomic int *ticket)
{
	atomic_store_explicit(ticket, UB_CLAIM_PENDING, memory_order_relaxed);
	return send_msg(w, MSG_CLAIM_BEGIN, stripe, ticket);
}

int ub_bgworker_claim_commit(struct ub_bgworker *w, uint64_t stripe)
{
	return send_msg(w, MSG_CLAIM_COMMIT, stripe, NULL);
}

int ub_bgworker_claim_abort(struct ub_bgworker *w, uint64_t stripe)
{
	return send_msg(w, MSG_CLAIM_ABORT, stripe, NULL);
}

void ub_bgworker_note_guest_io(struct ub_bgworker *w)
{
	/* Read first: the line stays shared while the flag is already set. */
	if (!atomic_load_explicit(&w->guest_io, memory_order_relaxed))
		atomic_store_explicit(&w->guest_io, true, memory_order_relaxed);
}

int ub_bgworker_subscribe(struct ub_bgworker *w, int efd)
{
	int rc = 0;

	pthread_mutex_lock(&w->sub_lock);
	if (w->nsubs == w->subs_cap) {
		unsigned cap = w->subs_cap ? w->subs_cap * 2 : 8;
		int *n = realloc(w->subs, cap * sizeof(*n));

		if (!n) {
			rc = -ENOMEM;
			goto out;
		}
		w->subs = n;
		w->subs_cap = cap;
	}
	w->subs[w->nsubs++] = efd;
out:
	pthread_mutex_unlock(&w->sub_lock);
	return rc;
}

void ub_bgworker_unsubscribe(struct ub_bgworker *w, int efd)
{
	pthread_mutex_lock(&w->sub_lock);
	for (unsigned i = 0; i < w->nsubs; i++) {
		if (w->subs[i] == efd) {
			w->subs[i] = w->subs[--w->nsubs];
			break;
		}
	}
	pthread_mutex_unlock(&w->sub_lock);
}

static void notify_subscribers(struct ub_bgworker *w)
{
	w->notify = false;
	pthread_mutex_lock(&w->sub_lock);
	for (unsigned i = 0; i < w->nsubs; i++)
		if (eventfd_write(w->subs[i], 1) < 0)
			LOG_ERROR("bgworker: signalling subscriber fd %d: %s",
				  w->subs[i], strerror(errno));
	pthread_mutex_unlock(&w->sub_lock);
}

/* ---- the thread ---- */

static void handle_msg(struct ub_bgworker *w, struct msg *m)
{
	switch (m->type) {
	case MSG_FETCH:
		ub_fetcher_request(&w->fetcher, m->stripe);
		break;
	case MSG_SET_WRITTEN:
		if (m->stripe < w->st->nstripes &&
		    ub_stripe_write_state(w->st, m->stripe) ==
			UB_WRITE_NOT_WRITTEN)
			ub_flusher_request(&w->flusher, m->stripe,
					   UB_STRIPE_WRITTEN);
		break;
	case MSG_CLAIM_BEGIN:
		ub_fetcher_claim_begin(&w->fetcher, m->stripe, m->ticket);
		break;
	case MSG_CLAIM_COMMIT:
		ub_fetcher_claim_commit(&w->fetcher, m->stripe);
		break;
	case MSG_CLAIM_ABORT:
		ub_fetcher_claim_abort(&w->fetcher, m->stripe);
		break;
	}
}

/* Takes every pending request and handles them oldest first. */
static bool drain_inbox(struct ub_bgworker *w)
{
	struct msg *m, *next, *fifo = NULL;

	m = atomic_exchange_explicit(&w->inbox, NULL, memory_order_acquire);
	if (!m)
		return false;
	for (; m; m = next) {
		next = m->next;
		m->next = fifo;
		fifo = m;
	}
	for (m = fifo; m; m = next) {
		next = m->next;
		handle_msg(w, m);
		free(m);
	}
	return true;
}

static void update_yield(struct ub_bgworker *w, uint64_t now)
{
	bool y;

	if (atomic_load_explicit(&w->guest_io, memory_order_relaxed) &&
	    atomic_exchange_explicit(&w->guest_io, false,
				     memory_order_relaxed)) {
		w->last_guest_ns = now;
		w->guest_seen = true;
		ub_ctr_add(&w->ctr.guest_io_seen, 1);
	}
	/* A guest waiting on a demand fetch submits nothing meanwhile: the
	 * demand fetch in flight is guest activity too, so autofetch stays
	 * throttled until the guest's stripe is local. */
	if (w->fetcher.nactive > w->fetcher.nauto_active) {
		w->last_guest_ns = now;
		w->guest_seen = true;
	}
	y = w->yield_window_ns && w->guest_seen &&
	    now - w->last_guest_ns < w->yield_window_ns;
	if (y && !w->yielding) {
		w->yield_start_ns = now;
		ub_ctr_add(&w->ctr.yield_periods, 1);
	} else if (!y && w->yielding) {
		ub_ctr_add(&w->ctr.yield_ns, now - w->yield_start_ns);
	}
	w->yielding = y;
}

static void sample_rate(struct ub_bgworker *w, uint64_t now, bool force)
{
	struct rate_sample *s;

	if (!force && now - w->last_sample_ns < RATE_STEP_NS)
		return;
	w->last_sample_ns = now;
	pthread_mutex_lock(&w->rate_lock);
	s = &w->samples[w->sample_head];
	s->t_ns = now;
	s->bytes =
	    atomic_load_explicit(&w->st->fetched_bytes, memory_order_relaxed);
	w->sample_head = (w->sample_head + 1) % RATE_SAMPLES;
	if (w->nsamples < RATE_SAMPLES)
		w->nsamples++;
	pthread_mutex_unlock(&w->rate_lock);
}

static void maybe_disconnect(struct ub_bgworker *w)
{
	uint64_t rem =
	    atomic_load_explicit(&w->remaining, memory_order_relaxed);

	if (!ub_fetcher_can_disconnect(&w->fetcher, rem))
		return;
	/* Unwatch the source's fd before it is closed (its number may be
	 * reused at once). */
	if (w->src_fd >= 0)
		epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->src_fd, NULL);
	ub_fetcher_disconnect(&w->fetcher);
	w->src_fd = -1;
}

/* One pass; true when anything moved. */
static bool run_pass(struct ub_bgworker *w)
{
	uint64_t now = now_ns();
	unsigned limit;
	bool progress;

	progress = drain_inbox(w);
	update_yield(w, now);
	limit = w->yielding ? w->yield_inflight : w->fetcher.nslots;
	progress |= ub_fetcher_update(&w->fetcher, limit);
	progress |= ub_flusher_update(&w->flusher);
	if (w->notify)
		notify_subscribers(w);
	if (progress)
		sample_rate(w, now, false);
	maybe_disconnect(w);
	return progress;
}

static void reset_efd(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	eventfd_t v;

	if (fd >= 0 && poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN))
		(void)eventfd_read(fd, &v);
}

static void reset_events(struct ub_bgworker *w)
{
	eventfd_t v;

	(void)eventfd_read(w->req_efd, &v);
	ub_bdev_chan_event_reset(w->fetcher.ch);
	ub_bdev_chan_event_reset(w->flusher.ch);
	reset_efd(w->src_fd);
}

/* How long to sleep (ms, -1 = until an event). */
static int sleep_timeout(struct ub_bgworker *w)
{
	struct ub_source *src = w->fetcher.source;
	uint64_t now, end;
	int t = -1;

	if ((w->data_fd < 0 && ub_bdev_chan_busy(w->fetcher.ch)) ||
	    (w->md_fd < 0 && ub_bdev_chan_busy(w->flusher.ch)) ||
	    (w->src_fd < 0 && src->ops->busy(src)))
		t = 1;
	if (w->fetcher.auto_held && w->yielding) {
		now = now_ns();
		end = w->last_guest_ns + w->yield_window_ns;
		if (end > now) {
			uint64_t ms = (end - now + 999999) / 1000000;

			if (t < 0 || ms < (uint64_t)t)
				t = (int)ms;
		} else {
			t = 0;
		}
	}
	return t;
}

static void *worker_main(void *arg)
{
	struct ub_bgworker *w = arg;
	struct epoll_event ev[4];

	pthread_setname_np(pthread_self(), "bgworker");
	sample_rate(w, now_ns(), true);
	while (!atomic_load_explicit(&w->stop, memory_order_acquire)) {
		if (run_pass(w))
			continue;
		/* Reset, then look once more: anything signalled after the
		 * reset keeps its fd readable for epoll_wait. */
		reset_events(w);
		if (run_pass(w))
			continue;
		if (atomic_load_explicit(&w->stop, memory_order_acquire))
			break;
		if (epoll_wait(w->epfd, ev, 4, sleep_timeout(w)) < 0 &&
		    errno != EINTR) {
			LOG_ERROR("bgworker: epoll_wait: %s", strerror(errno));
			usleep(1000);
		}
	}
	if (w->yielding)
		ub_ctr_add(&w->ctr.yield_ns, now_ns() - w->yield_start_ns);
	return NULL;
}

/* ---- start, status, stop ---- */

static int watch(struct ub_bgworker *w, int fd, uint32_t tag)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = tag};

	if (fd < 0)
		return 0;
	return epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static uint64_t count_not_fetched(const struct ub_stripe_state *st)
{
	uint64_t i, n = 0;

	for (i = 0; i < st->nstripes; i++)
		if (ub_stripe_fetch_state(st, i) == UB_FETCH_NOT_FETCHED)
			n++;
	return n;
}

static int check_params(const struct ub_bgworker_params *p, struct ub_err *err)
{
	if (!p->data || !p->metadata || !p->state || !p->source)
		return ub_err_ret(err, -EINVAL,
				  "Invalid parameter error: the background "
				  "worker needs a data device, a metadata "
				  "device, a stripe state and a source");
	if (p->max_inflight > MAX_INFLIGHT)
		return ub_err_ret(err, -EINVAL,
				  "Invalid parameter error: %u concurrent "
				  "fetches (at most %u)",
				  p->max_inflight, MAX_INFLIGHT);
	return 0;
}

/* The source, the data device and the metadata must agree (§5.6, §5.7,
 * §13). */
static int check_sizes(struct ub_bgworker *w,
		       const struct ub_bgworker_params *p, struct ub_err *err)
{
	unsigned shift = w->st->shift;
	uint64_t md_stripes = w->flusher.md.stripe_count;
	uint64_t src = ub_stripe_count(p->source->sectors, (uint8_t)shift);
	uint64_t data = ub_stripe_count(p->data->sectors, (uint8_t)shift);

	if (src > md_stripes)
		return ub_err_ret(err, -EINVAL,
				  "Invalid parameter error: Source stripe "
				  "count %" PRIu64 " exceeds metadata stripe "
				  "count %" PRIu64,
				  src, md_stripes);
	if (p->source->sectors && p->source->shift != shift)
		return ub_err_ret(err, -EINVAL,
				  "Invalid parameter error: source stripe "
				  "size 2^%u sectors differs from the "
				  "metadata's 2^%u",
				  p->source->shift, shift);
	if (data > md_stripes)
		return ub_err_ret(err, -EINVAL,
				  "Invalid parameter error: data device "
				  "(%" PRIu64 " sectors, %" PRIu64 " stripes) "
				  "is larger than the metadata covers "
				  "(%" PRIu64 " stripes)",
				  p->data->sectors, data, md_stripes);
	return 0;
}

int ub_bgworker_start(const struct ub_bgworker_params *p,
		      struct ub_bgworker **out, struct ub_err *err)
{
	struct ub_source *source = p->source; /* ours until the fetcher */
	struct ub_bgworker *w;		      /* owned by *out */
	unsigned nslots;
	int rc;

	rc = check_params(p, err);
	if (rc < 0)
		goto err_source;
	w = calloc(1, sizeof(*w));
	if (!w) {
		rc = ub_err_ret(err, -ENOMEM, "out of memory");
		goto err_source;
	}
	w->st = p->state;
	w->req_efd = w->epfd = -1;
	w->data_fd = w->md_fd = w->src_fd = -1;
	w->stripe_bytes = UINT64_C(512) << p->state->shift;
	w->total = ub_stripe_count(p->data->sectors, (uint8_t)p->state->shift);
	w->yield_window_ns =
	    p->yield_ms < 0
		? 0
		: (uint64_t)(p->yield_ms ? p->yield_ms : DEFAULT_YIELD_MS) *
		      1000000ull;
	w->yield_inflight =
	    p->yield_inflight ? p->yield_inflight : DEFAULT_YIELD_INFLIGHT;
	pthread_mutex_init(&w->sub_lock, NULL);
	pthread_mutex_init(&w->rate_lock, NULL);
	w->data = ub_bdev_get(p->data);
	w->metadata = ub_bdev_get(p->metadata);
	rc = ub_flusher_init(&w->flusher, w, p->state, p->metadata, err);
	if (rc < 0)
		goto err_free;
	rc = check_sizes(w, p, err);
	if (rc < 0)
		goto err_flusher;
	nslots = p->max_inflight ? p->max_inflight : DEFAULT_INFLIGHT;
	/* The fetcher owns the source from here on, on failure too. */
	rc = ub_fetcher_init(&w->fetcher, w, p->state, p->data, source,
			     p->autofetch, nslots, err);
	source = NULL;
	if (rc < 0)
		goto err_flusher;
	atomic_init(&w->remaining, count_not_fetched(p->state));
	w->req_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->req_efd < 0 || w->epfd < 0) {
		rc = ub_err_ret(err, -errno, "eventfd/epoll: %s",
				strerror(errno));
		goto err_fetcher;
	}
	w->data_fd = ub_bdev_chan_event_fd(w->fetcher.ch);
	w->md_fd = ub_bdev_chan_event_fd(w->flusher.ch);
	w->src_fd = w->fetcher.source->ops->event_fd(w->fetcher.source);
	rc = watch(w, w->req_efd, TAG_REQ);
	if (!rc)
		rc = watch(w, w->data_fd, TAG_DATA);
	if (!rc)
		rc = watch(w, w->md_fd, TAG_MD);
	if (!rc)
		rc = watch(w, w->src_fd, TAG_SOURCE);
	if (rc < 0) {
		ub_err_set(err, "epoll_ctl: %s", strerror(-rc));
		goto err_fetcher;
	}
	rc = -pthread_create(&w->thread, NULL, worker_main, w);
	if (rc < 0) {
		ub_err_set(err, "Thread creation error: %s", strerror(-rc));
		goto err_fetcher;
	}
	*out = w;
	return 0;

err_fetcher:
	if (w->epfd >= 0)
		close(w->epfd);
	if (w->req_efd >= 0)
		close(w->req_efd);
	ub_fetcher_fini(&w->fetcher);
err_flusher:
	ub_flusher_fini(&w->flusher);
err_free:
	ub_bdev_put(w->data);
	ub_bdev_put(w->metadata);
	pthread_mutex_destroy(&w->sub_lock);
	pthread_mutex_destroy(&w->rate_lock);
	free(w);
err_source:
	ub_source_close(source);
	ub_err_prefix(err, "Failed to build bgworker");
	return rc;
}

void ub_bgworker_status(struct ub_bgworker *w, struct ub_bgworker_status *st)
{
	uint64_t now = now_ns(), cur, rem;
	struct rate_sample base = {now, 0};
	double dt;

	st->total = w->total;
	st->source = w->st->source;
	st->fetched = atomic_load(&w->st->fetched);
	st->failed = atomic_load(&w->ctr.fetch_failures);
	cur = atomic_load(&w->st->fetched_bytes);
	pthread_mutex_lock(&w->rate_lock);
	/* The newest sample at least a window old, else the oldest. */
	for (unsigned i = 1; i <= w->nsamples; i++) {
		base = w->samples[(w->sample_head + RATE_SAMPLES - i) %
				  RATE_SAMPLES];
		if (now - base.t_ns >= RATE_WINDOW_NS)
			break;
	}
	pthread_mutex_unlock(&w->rate_lock);
	dt = (double)(now - base.t_ns) / 1e9;
	st->bytes_per_sec = dt > 0.001 && cur > base.bytes
				? (double)(cur - base.bytes) / dt
				: 0.0;
	rem = atomic_load(&w->remaining);
	if (!rem)
		st->eta_sec = 0;
	else if (st->bytes_per_sec > 0)
		st->eta_sec =
		    (double)rem * (double)w->stripe_bytes / st->bytes_per_sec;
	else
		st->eta_sec = -1;
}

void ub_bgworker_counters(struct ub_bgworker *w, struct ub_bgworker_counters *c)
{
	struct ub_bgworker_ctr *k = &w->ctr;

	c->demand_fetches = atomic_load(&k->demand_fetches);
	c->auto_fetches = atomic_load(&k->auto_fetches);
	c->fetch_retries = atomic_load(&k->fetch_retries);
	c->fetch_failures = atomic_load(&k->fetch_failures);
	c->data_flushes = atomic_load(&k->data_flushes);
	c->claims_granted = atomic_load(&k->claims_granted);
	c->claims_denied = atomic_load(&k->claims_denied);
	c->claims_committed = atomic_load(&k->claims_committed);
	c->claims_aborted = atomic_load(&k->claims_aborted);
	c->md_writes = atomic_load(&k->md_writes);
	c->md_flushes = atomic_load(&k->md_flushes);
	c->md_retries = atomic_load(&k->md_retries);
	c->md_failures = atomic_load(&k->md_failures);
	c->yield_periods = atomic_load(&k->yield_periods);
	c->yield_ns = atomic_load(&k->yield_ns);
	c->auto_held = atomic_load(&k->auto_held);
	c->max_auto_inflight_yielding =
	    atomic_load(&k->max_auto_inflight_yielding);
	c->max_inflight = atomic_load(&k->max_inflight);
	c->guest_io_seen = atomic_load(&k->guest_io_seen);
}

void ub_bgworker_stop(struct ub_bgworker *w)
{
	struct msg *m, *next;

	if (!w)
		return;
	atomic_store_explicit(&w->stop, true, memory_order_release);
	if (eventfd_write(w->req_efd, 1) < 0)
		LOG_ERROR("bgworker: signalling stop: %s", strerror(errno));
	pthread_join(w->thread, NULL);
	/* Requests that arrived too late: a claim is denied so that nobody
	 * waits on its ticket. */
	m = atomic_exchange(&w->inbox, NULL);
	for (; m; m = next) {
		next = m->next;
		if (m->type == MSG_CLAIM_BEGIN)
			atomic_store_explicit(m->ticket, UB_CLAIM_DENIED,
					      memory_order_release);
		free(m);
	}
	close(w->epfd);
	close(w->req_efd);
	ub_fetcher_fini(&w->fetcher);
	ub_flusher_fini(&w->flusher);
	ub_bdev_put(w->data);
	ub_bdev_put(w->metadata);
	pthread_mutex_destroy(&w->sub_lock);
	pthread_mutex_destroy(&w->rate_lock);
	free(w->subs);
	free(w);
}
