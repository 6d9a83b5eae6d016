/* Shared in-memory stripe state: built from the metadata headers, then
 * changed only by the background worker (release stores, read by the I/O
 * threads with acquire loads). */
#include "stripe/stripe_state.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

int ub_stripe_state_init(struct ub_stripe_state *st,
			 const struct ub_metadata *md, struct ub_err *err)
{
	size_t n = (size_t)md->stripe_count;
	uint64_t i;

	memset(st, 0, sizeof(*st));
	if (md->stripe_shift > UB_MD_MAX_SHIFT)
		return ub_err_ret(err, -EINVAL,
				  "Invalid parameter error: stripe sector "
				  "count shift %u exceeds maximum %u",
				  md->stripe_shift, UB_MD_MAX_SHIFT);
	/* Never zero-sized, so a 0-stripe state still has valid arrays. */
	st->fetch = calloc(n ? n : 1, sizeof(*st->fetch));
	st->written = calloc(n ? n : 1, sizeof(*st->written));
	if (!st->fetch || !st->written) {
		free(st->fetch);
		free(st->written);
		st->fetch = NULL;
		st->written = NULL;
		return ub_err_ret(err, -ENOMEM,
				  "out of memory for %" PRIu64 " stripes",
				  md->stripe_count);
	}
	st->nstripes = md->stripe_count;
	st->shift = md->stripe_shift;
	for (i = 0; i < md->stripe_count; i++) {
		uint8_t h = md->headers[i];
		uint8_t f = (h & UB_STRIPE_FETCHED) ? UB_FETCH_FETCHED
						    : UB_FETCH_NOT_FETCHED;

		if (!(h & UB_STRIPE_HAS_SOURCE))
			f = UB_FETCH_NO_SOURCE;
		atomic_init(&st->fetch[i], f);
		atomic_init(&st->written[i], (h & UB_STRIPE_WRITTEN)
						 ? UB_WRITE_WRITTEN
						 : UB_WRITE_NOT_WRITTEN);
		/* Counted as the reference does: FETCHED bits, sourced or
		 * not. */
		if (h & UB_STRIPE_FETCHED)
			st->fetched++;
		if (h & UB_STRIPE_HAS_SOURCE)
			st->source++;
	}
	return 0;
}

void ub_stripe_state_fini(struct ub_stripe_state *st)
{
	if (!st)
		return;
	free(st->fetch);
	free(st->written);
	memset(st, 0, sizeof(*st));
}

void ub_stripe_set_fetched(struct ub_stripe_state *st, uint64_t stripe)
{
	uint8_t prev = atomic_exchange_explicit(
	    &st->fetch[stripe], UB_FETCH_FETCHED, memory_order_acq_rel);

	if (prev != UB_FETCH_FETCHED && prev != UB_FETCH_NO_SOURCE)
		atomic_fetch_add_explicit(&st->fetched, 1,
					  memory_order_release);
}

void ub_stripe_set_written(struct ub_stripe_state *st, uint64_t stripe)
{
	atomic_store_explicit(&st->written[stripe], UB_WRITE_WRITTEN,
			      memory_order_release);
}

void ub_stripe_set_fetch_failed(struct ub_stripe_state *st, uint64_t stripe)
{
	atomic_store_explicit(&st->fetch[stripe], UB_FETCH_FAILED,
			      memory_order_release);
}

void ub_stripe_set_write_failed(struct ub_stripe_state *st, uint64_t stripe)
{
	atomic_store_explicit(&st->written[stripe], UB_WRITE_FAILED,
			      memory_order_release);
}
