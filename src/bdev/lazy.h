/* Lazy device (storage.md §5.4): the guest-visible device of a disk that
 * starts from a stripe source. Requests touching only local stripes go
 * straight to the base (data) device; others wait in a per-channel FIFO
 * until the background worker has fetched what they need. Reads of an
 * unfetched single stripe come from the raw image when copy_on_read is
 * off (clamped to the image end, the rest zero-filled); a write covering
 * a whole unfetched stripe is written directly and then claimed (no
 * source read); with track_written the first write to a stripe waits for
 * its WRITTEN bit. A Failed stripe fails the requests that touch it.
 *
 * The channel's event fd becomes readable on base/image completions and
 * when the worker publishes a stripe state change. */
#ifndef UB_BDEV_LAZY_H
#define UB_BDEV_LAZY_H

#include <stdbool.h>

#include "bdev/bdev.h"
#include "stripe/bgworker.h"
#include "stripe/stripe_state.h"

struct ub_lazy_params {
	struct ub_bdev *base;	     /* data device (reference taken) */
	struct ub_bdev *image;	     /* raw image for copy_on_read = false
					reads, or NULL (reference taken) */
	struct ub_stripe_state *state; /* shared, outlives the device */
	struct ub_bgworker *worker;  /* outlives the device */
	bool track_written;
};

int ub_lazy_bdev_create(const struct ub_lazy_params *p, struct ub_bdev **out,
			struct ub_err *err);

#endif
