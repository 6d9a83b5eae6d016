/* Shared in-memory stripe state (storage.md §5.3): one fetch-state byte and
 * one write-state byte per stripe, read by every I/O thread with acquire
 * loads (the lazy fast path: no locks, no messages) and changed only by the
 * background worker with release stores, plus counters for the status
 * report. Built once from the loaded metadata; lives as long as the lazy
 * device. */
#ifndef UB_STRIPE_STRIPE_STATE_H
#define UB_STRIPE_STRIPE_STATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "stripe/metadata.h"
#include "util/err.h"

enum ub_fetch_state {
	UB_FETCH_NOT_FETCHED = 0, /* has a source, not fetched yet */
	UB_FETCH_FETCHED = 1,	  /* data local, FETCHED bit durable */
	UB_FETCH_FAILED = 2,	  /* gave up (memory only): requests fail */
	UB_FETCH_NO_SOURCE = 3,	  /* nothing to fetch */
};

enum ub_write_state {
	UB_WRITE_NOT_WRITTEN = 0,
	UB_WRITE_WRITTEN = 1, /* WRITTEN bit durable */
	UB_WRITE_FAILED = 2,  /* WRITTEN update failed: waiting writes fail */
};

struct ub_stripe_state {
	uint64_t nstripes;
	unsigned shift;		   /* stripe = 2^shift sectors */
	_Atomic uint8_t *fetch;	   /* heap, nstripes: enum ub_fetch_state */
	_Atomic uint8_t *written;  /* heap, nstripes: enum ub_write_state */
	_Atomic uint64_t fetched;  /* stripes Fetched (initial + runtime) */
	uint64_t source;	   /* stripes with HAS_SOURCE (fixed) */
	_Atomic uint64_t fetched_bytes; /* fetched by this process (rate) */
};

/* Builds the state from metadata headers (§5.3 initialisation rule). */
int ub_stripe_state_init(struct ub_stripe_state *st,
			 const struct ub_metadata *md, struct ub_err *err);
void ub_stripe_state_fini(struct ub_stripe_state *st);

static inline enum ub_fetch_state
ub_stripe_fetch_state(const struct ub_stripe_state *st, uint64_t stripe)
{
	return (enum ub_fetch_state)atomic_load_explicit(&st->fetch[stripe],
							 memory_order_acquire);
}

/* Fetched or NoSource: the base device holds the stripe's data. */
static inline bool ub_stripe_is_local(const struct ub_stripe_state *st,
				      uint64_t stripe)
{
	enum ub_fetch_state s = ub_stripe_fetch_state(st, stripe);

	return s == UB_FETCH_FETCHED || s == UB_FETCH_NO_SOURCE;
}

static inline enum ub_write_state
ub_stripe_write_state(const struct ub_stripe_state *st, uint64_t stripe)
{
	return (enum ub_write_state)atomic_load_explicit(
		&st->written[stripe], memory_order_acquire);
}

/* Worker side: publish a durable FETCHED (counts once) / WRITTEN bit, or a
 * failure. */
void ub_stripe_set_fetched(struct ub_stripe_state *st, uint64_t stripe);
void ub_stripe_set_written(struct ub_stripe_state *st, uint64_t stripe);
void ub_stripe_set_fetch_failed(struct ub_stripe_state *st, uint64_t stripe);
void ub_stripe_set_write_failed(struct ub_stripe_state *st, uint64_t stripe);

#endif
