/* The background worker of a lazy device (storage.md §5.5–§5.7): one thread
 * that owns the stripe source, the stripe fetcher (its own channel on the
 * data device) and the metadata flusher (its own channel on the metadata
 * device). I/O threads hand it requests through a lock-free multi-producer
 * queue and an eventfd; it publishes results in the shared stripe state and
 * then signals every subscribed eventfd so sleeping I/O threads re-poll.
 *
 * Ordering (§5.8): a stripe's data is written and flushed on the data
 * device before its FETCHED bit is written and flushed in the metadata
 * file, and the shared state says Fetched only after that. A failed
 * metadata update is retried a few times, then the stripe is marked Failed
 * (fetch) or WriteFailed (written) so waiting guest requests fail instead
 * of hanging. */
#ifndef UB_STRIPE_BGWORKER_H
#define UB_STRIPE_BGWORKER_H

#include <stdbool.h>
#include <stdint.h>

#include "bdev/bdev.h"
#include "stripe/source.h"
#include "stripe/stripe_state.h"
#include "util/err.h"

struct ub_bgworker;

struct ub_bgworker_params {
	struct ub_bdev *data;	  /* data device (reference taken) */
	struct ub_bdev *metadata; /* metadata device (reference taken) */
	struct ub_source *source; /* owned by the worker from start on */
	struct ub_stripe_state *state; /* shared, outlives the worker */
	bool autofetch;
	unsigned max_inflight; /* concurrent fetches, default 16 */
	/* Yield to the guest: while guest I/O was seen in the last yield_ms
	 * milliseconds (0: default 5; negative: never yield), autofetch
	 * starts a fetch only while fewer than yield_inflight (0: default 1)
	 * fetches are in flight. Demand fetches are never held back. */
	int yield_ms;
	unsigned yield_inflight;
};

/* Progress for the status report. */
struct ub_bgworker_status {
	uint64_t total;	      /* ceil(data sectors / stripe sectors) */
	uint64_t source;      /* stripes with a source */
	uint64_t fetched;     /* of those, fetched */
	uint64_t failed;      /* stripes given up on */
	double bytes_per_sec; /* recent fetch rate (moving window) */
	double eta_sec;	      /* remaining / rate, or -1 when unknown */
};

/* Loads its own copy of the metadata, checks the source against it
 * ("Source stripe count <s> exceeds metadata stripe count <m>", "target
 * device too small ..."), starts the thread and waits for its start-up
 * result. On failure nothing is left running and the source is closed. */
int ub_bgworker_start(const struct ub_bgworker_params *p,
		      struct ub_bgworker **out, struct ub_err *err);
/* From any thread: ask for a stripe (deduplicated by the worker). */
int ub_bgworker_fetch(struct ub_bgworker *w, uint64_t stripe);
/* From any thread: make the stripe's WRITTEN bit durable. */
int ub_bgworker_set_written(struct ub_bgworker *w, uint64_t stripe);
/* Whole-stripe writes to an unfetched stripe skip the source read:
 *
 *   1. claim_begin: the channel asks for the stripe with a ticket it owns;
 *      the worker grants it (no fetch is running or will start for that
 *      stripe; other requests on the stripe keep waiting) or denies it
 *      (a fetch is already in flight: wait for Fetched as usual), by
 *      storing UB_CLAIM_GRANTED / UB_CLAIM_DENIED into *ticket (release)
 *      and signalling the subscribers.
 *   2. granted: the channel writes the whole stripe to the base device,
 *      then claim_commit (write succeeded: the worker flushes the data
 *      device, makes FETCHED durable, publishes Fetched) or claim_abort
 *      (write failed: the stripe is fetchable again).
 *   3. the guest write completes once the stripe is Fetched, so a crash
 *      before that point leaves the stripe NotFetched and the
 *      unacknowledged write is simply lost, never mixed with source data.
 */
enum ub_claim_ticket {
	UB_CLAIM_PENDING = 0,
	UB_CLAIM_GRANTED = 1,
	UB_CLAIM_DENIED = 2,
};
int ub_bgworker_claim_begin(struct ub_bgworker *w, uint64_t stripe,
			    _Atomic int *ticket);
int ub_bgworker_claim_commit(struct ub_bgworker *w, uint64_t stripe);
int ub_bgworker_claim_abort(struct ub_bgworker *w, uint64_t stripe);
/* Adds/removes an eventfd to signal after shared-state changes. */
int ub_bgworker_subscribe(struct ub_bgworker *w, int efd);
void ub_bgworker_unsubscribe(struct ub_bgworker *w, int efd);
/* Background fetching yields while guest I/O is active: I/O threads call
 * this (cheap, relaxed atomic) when they submit guest requests. */
void ub_bgworker_note_guest_io(struct ub_bgworker *w);
void ub_bgworker_status(struct ub_bgworker *w, struct ub_bgworker_status *st);
/* What the worker did, for tests and benchmarks (monotonic counters). */
struct ub_bgworker_counters {
	uint64_t demand_fetches; /* fetches started for guest requests */
	uint64_t auto_fetches;	 /* fetches started by autofetch */
	uint64_t fetch_retries;	 /* failed attempts retried */
	uint64_t fetch_failures; /* stripes marked Failed */
	uint64_t data_flushes;	 /* data flushes (shared by fetches) */
	uint64_t claims_granted, claims_denied, claims_committed;
	uint64_t claims_aborted;
	uint64_t md_writes, md_flushes; /* metadata sector writes, flushes */
	uint64_t md_retries, md_failures;
	uint64_t yield_periods; /* times autofetch started yielding */
	uint64_t yield_ns;	/* time spent yielding (closed periods) */
	uint64_t auto_held;	/* passes in which yielding held autofetch */
	uint64_t max_auto_inflight_yielding; /* most autofetches in flight
						when one started while
						yielding */
	uint64_t max_inflight;	/* most fetches in flight at once */
	uint64_t guest_io_seen; /* worker passes that saw guest I/O */
};
void ub_bgworker_counters(struct ub_bgworker *w,
			  struct ub_bgworker_counters *c);
/* Stops the thread (in-flight work is abandoned safely, §5.8) and frees
 * it; NULL is accepted. */
void ub_bgworker_stop(struct ub_bgworker *w);

#endif
