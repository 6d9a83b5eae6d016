/* Inside the background worker: the stripe fetcher (source -> data device)
 * and the metadata flusher (single-sector metadata updates), both driven
 * only by the worker thread. Not for use outside src/stripe. */
#ifndef UB_STRIPE_BGWORKER_PRIV_H
#define UB_STRIPE_BGWORKER_PRIV_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "bdev/bdev.h"
#include "stripe/bgworker.h"
#include "stripe/metadata.h"
#include "stripe/source.h"
#include "stripe/stripe_state.h"
#include "util/err.h"

/* Failed attempts retried before giving up (4 attempts in all). */
#define UB_FETCH_MAX_RETRIES 3u
/* Failed metadata writes or flushes of one sector retried before the
 * stripes waiting on it are failed. */
#define UB_MD_MAX_RETRIES 3u
/* Metadata sector updates in flight at once. */
#define UB_MD_MAX_INFLIGHT 16u
/* Request id of a flush on the fetcher's and the flusher's channels. */
#define UB_FLUSH_ID UINT64_MAX

struct ub_bgworker;

/* One fetch in flight: a pool buffer travelling source -> data write ->
 * data flush. */
struct ub_fetch_slot {
	uint64_t stripe;
	void *buf;     /* stripe_bytes, part of the fetcher's pool */
	uint8_t stage; /* enum in fetcher.c */
	bool autofetch;
};

/* A committed claim waiting for (or inside) a data flush. */
struct ub_claim_wait {
	uint64_t stripe;
	unsigned tries; /* failed flushes so far */
};

struct ub_claim_vec {
	struct ub_claim_wait *v; /* heap, cap entries */
	size_t len, cap;
};

struct ub_fetcher {
	struct ub_bgworker *w;
	struct ub_stripe_state *st;
	struct ub_source *source; /* owned */
	struct ub_bdev_chan *ch;  /* owned: channel on the data device */
	uint64_t data_sectors;
	uint64_t stripe_bytes;
	unsigned shift;
	uint8_t *prog; /* heap, st->nstripes: progress and retry count */
	/* Demand fetches and retries, oldest first (a ring). */
	uint64_t *fifo; /* heap, fifo_cap entries */
	size_t fifo_cap, fifo_head, fifo_len;
	bool autofetch;
	uint64_t auto_next, auto_end; /* autofetch cursor and end */
	bool auto_held;		      /* last update held autofetch back */
	struct ub_fetch_slot *slots;  /* heap, nslots */
	unsigned nslots, nactive, nauto_active;
	uint32_t *free_slots; /* heap stack of free slot indexes */
	unsigned nfree;
	void *pool; /* heap, nslots * stripe_bytes, aligned */
	bool flushing;
	struct ub_claim_vec claim_wait, claim_flushing;
	bool disconnected;
};

/* One metadata sector update in flight. */
struct ub_md_rec {
	uint32_t group; /* metadata sector = group + 1 */
	uint8_t stage;	/* enum in flusher.c */
	uint8_t *buf;	/* 512 bytes of the flusher's pool */
	uint8_t newbits[UB_MD_STRIPES_PER_SECTOR]; /* bits this update sets */
};

struct ub_flusher {
	struct ub_bgworker *w;
	struct ub_stripe_state *st;
	struct ub_bdev_chan *ch; /* owned: channel on the metadata device */
	struct ub_metadata md;	 /* owned: the worker's own copy */
	uint64_t ngroups;
	uint8_t *pend;	 /* heap, per stripe: bits asked for, not in flight */
	uint8_t *sec;	 /* heap, per group: state (flusher.c) */
	uint8_t *tries;	 /* heap, per group: failed attempts in a row */
	uint32_t *ready; /* heap ring of groups with work, ngroups entries */
	size_t ready_head, ready_len;
	struct ub_md_rec rec[UB_MD_MAX_INFLIGHT];
	unsigned nbusy;
	uint8_t *pool; /* heap, aligned, one 4096-byte slot per record */
	bool flushing;
};

typedef atomic_uint_least64_t ub_counter;

/* Counters, written by the worker thread only (relaxed), read anywhere. */
struct ub_bgworker_ctr {
	ub_counter demand_fetches, auto_fetches, fetch_retries, fetch_failures;
	ub_counter data_flushes;
	ub_counter claims_granted, claims_denied, claims_committed;
	ub_counter claims_aborted;
	ub_counter md_writes, md_flushes, md_retries, md_failures;
	ub_counter yield_periods, yield_ns, auto_held;
	ub_counter max_auto_inflight_yielding, max_inflight;
	ub_counter guest_io_seen;
};

static inline void ub_ctr_add(ub_counter *c, uint64_t n)
{
	atomic_store_explicit(c,
			      atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline void ub_ctr_max(ub_counter *c, uint64_t v)
{
	if (v > atomic_load_explicit(c, memory_order_relaxed))
		atomic_store_explicit(c, v, memory_order_relaxed);
}

/* ---- fetcher.c ---- */

/* Takes ownership of source (closed on failure too). */
int ub_fetcher_init(struct ub_fetcher *f, struct ub_bgworker *w,
		    struct ub_stripe_state *st, struct ub_bdev *data,
		    struct ub_source *source, bool autofetch, unsigned nslots,
		    struct ub_err *err);
void ub_fetcher_fini(struct ub_fetcher *f);
void ub_fetcher_request(struct ub_fetcher *f, uint64_t stripe);
void ub_fetcher_claim_begin(struct ub_fetcher *f, uint64_t stripe,
			    _Atomic int *ticket);
void ub_fetcher_claim_commit(struct ub_fetcher *f, uint64_t stripe);
void ub_fetcher_claim_abort(struct ub_fetcher *f, uint64_t stripe);
/* One pass: start fetches (at most auto_limit in flight counting
 * autofetch), poll source and data channel, flush. True on progress. */
bool ub_fetcher_update(struct ub_fetcher *f, unsigned auto_limit);
/* The metadata update of a fetched stripe failed for good. */
void ub_fetcher_md_failed(struct ub_fetcher *f, uint64_t stripe);
bool ub_fetcher_busy(const struct ub_fetcher *f);
/* Autofetch still has stripes to look at. */
bool ub_fetcher_auto_pending(const struct ub_fetcher *f);
/* Every sourced stripe is local (remaining == 0) and nothing is going
 * on: the source may be closed. */
bool ub_fetcher_can_disconnect(const struct ub_fetcher *f, uint64_t remaining);
/* Replaces the source by an empty one. */
void ub_fetcher_disconnect(struct ub_fetcher *f);

/* ---- flusher.c ---- */

/* Loads the worker's own copy of the metadata through a new channel on
 * metadata and checks it against the shared state. */
int ub_flusher_init(struct ub_flusher *fl, struct ub_bgworker *w,
		    struct ub_stripe_state *st, struct ub_bdev *metadata,
		    struct ub_err *err);
void ub_flusher_fini(struct ub_flusher *fl);
/* Queues making bit (UB_STRIPE_FETCHED or UB_STRIPE_WRITTEN) durable. */
void ub_flusher_request(struct ub_flusher *fl, uint64_t stripe, uint8_t bit);
bool ub_flusher_update(struct ub_flusher *fl);
bool ub_flusher_busy(const struct ub_flusher *fl);

/* ---- bgworker.c: callbacks of the two parts ---- */

/* A stripe's FETCHED bit is durable and published. */
void ub_bgworker_on_fetched(struct ub_bgworker *w, uint64_t stripe);
/* The shared state changed: signal the subscribers after this pass. */
void ub_bgworker_mark_notify(struct ub_bgworker *w);
struct ub_bgworker_ctr *ub_bgworker_ctr(struct ub_bgworker *w);
struct ub_flusher *ub_bgworker_flusher(struct ub_bgworker *w);
struct ub_fetcher *ub_bgworker_fetcher(struct ub_bgworker *w);
bool ub_bgworker_yielding(const struct ub_bgworker *w);

#endif
