/* Stripe sources (storage.md §6): where unfetched stripes come from. A
 * source is single-threaded and poll-driven, used only by the background
 * worker: request(stripe, buf) starts a fetch into a stripe-sized buffer,
 * poll() reports {stripe, res} completions exactly once. On success the
 * buffer holds the stripe's bytes and every byte past the source's data is
 * zero (a partial last stripe is zero-filled).
 *
 * Implementations: raw image or block device (raw_source.c), empty (no
 * stripes: nothing configured, or everything fetched), flaky (tests: fails
 * chosen completions). Archive and remote sources come later. */
#ifndef UB_STRIPE_SOURCE_H
#define UB_STRIPE_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include "bdev/bdev.h"
#include "util/err.h"

struct ub_source;

struct ub_source_cqe {
	uint64_t stripe;
	int res; /* 0 or -errno */
};

struct ub_source_ops {
	int (*request)(struct ub_source *s, uint64_t stripe, void *buf);
	unsigned (*poll)(struct ub_source *s, struct ub_source_cqe *out,
			 unsigned max);
	bool (*busy)(struct ub_source *s);
	/* An fd readable when completions may be waiting, or -1. */
	int (*event_fd)(struct ub_source *s);
	bool (*has_stripe)(struct ub_source *s, uint64_t stripe);
	void (*close)(struct ub_source *s);
};

struct ub_source {
	const struct ub_source_ops *ops;
	uint64_t sectors;     /* size of the source; 0 = empty */
	unsigned shift;	      /* stripe = 2^shift sectors */
	char desc[256];	      /* for logs and dump-metadata */
};

/* Raw image: reads through a channel of image (a reference is taken).
 * Stripes past the end: request fails with -EINVAL ("Stripe <i> beyond end
 * of source"). */
int ub_raw_source_open(struct ub_bdev *image, unsigned shift,
		       struct ub_source **out, struct ub_err *err);
/* Empty source: 0 sectors, has no stripe. */
int ub_empty_source_open(unsigned shift, struct ub_source **out,
			 struct ub_err *err);
/* Test helper: wraps inner (taking ownership); the first n completions of
 * each listed stripe become -EIO. */
int ub_flaky_source_wrap(struct ub_source *inner, const uint64_t *stripes,
			 const unsigned *counts, unsigned n,
			 struct ub_source **out, struct ub_err *err);

static inline uint64_t ub_source_stripe_count(const struct ub_source *s)
{
	uint64_t per = 1ull << s->shift;

	return (s->sectors + per - 1) >> s->shift;
}

/* Closes and frees; NULL is accepted. */
void ub_source_close(struct ub_source *s);

#endif
