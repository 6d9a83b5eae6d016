/* Flaky source (tests, storage.md §6.5): passes everything to the wrapped
 * source, but the first n completions reported for each listed stripe are
 * turned into -EIO. Listing a stripe twice adds the counts up. */
#include "stripe/source.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

struct flaky_rule {
	uint64_t stripe;
	unsigned left; /* completions still to fail */
};

struct flaky_source {
	struct ub_source s;
	struct ub_source *inner; /* owned */
	unsigned nrules;
	struct flaky_rule rules[]; /* nrules entries, distinct stripes */
};

static struct flaky_source *to_flaky(struct ub_source *s)
{
	return (struct flaky_source *)s;
}

static int flaky_request(struct ub_source *s, uint64_t stripe, void *buf)
{
	struct ub_source *in = to_flaky(s)->inner;

	return in->ops->request(in, stripe, buf);
}

static unsigned flaky_poll(struct ub_source *s, struct ub_source_cqe *out,
			   unsigned max)
{
	struct flaky_source *f = to_flaky(s);
	unsigned n, i, k;

	n = f->inner->ops->poll(f->inner, out, max);
	for (i = 0; i < n; i++) {
		for (k = 0; k < f->nrules; k++) {
			if (f->rules[k].stripe != out[i].stripe ||
			    !f->rules[k].left)
				continue;
			f->rules[k].left--;
			out[i].res = -EIO;
			break;
		}
	}
	return n;
}

static bool flaky_busy(struct ub_source *s)
{
	struct ub_source *in = to_flaky(s)->inner;

	return in->ops->busy(in);
}

static int flaky_event_fd(struct ub_source *s)
{
	struct ub_source *in = to_flaky(s)->inner;

	return in->ops->event_fd(in);
}

static bool flaky_has_stripe(struct ub_source *s, uint64_t stripe)
{
	struct ub_source *in = to_flaky(s)->inner;

	return in->ops->has_stripe(in, stripe);
}

static void flaky_close(struct ub_source *s)
{
	struct flaky_source *f = to_flaky(s);

	ub_source_close(f->inner);
	free(f);
}

static const struct ub_source_ops flaky_ops = {
    .request = flaky_request,
    .poll = flaky_poll,
    .busy = flaky_busy,
    .event_fd = flaky_event_fd,
    .has_stripe = flaky_has_stripe,
    .close = flaky_close,
};

int ub_flaky_source_wrap(struct ub_source *inner, const uint64_t *stripes,
			 const unsigned *counts, unsigned n,
			 struct ub_source **out, struct ub_err *err)
{
	struct flaky_source *f; /* owned by *out */
	unsigned i, k;

	f = calloc(1, sizeof(*f) + (size_t)n * sizeof(f->rules[0]));
	if (!f) {
		ub_source_close(inner);
		return ub_err_ret(err, -ENOMEM, "out of memory");
	}
	for (i = 0; i < n; i++) {
		for (k = 0; k < f->nrules; k++)
			if (f->rules[k].stripe == stripes[i])
				break;
		if (k == f->nrules) {
			f->rules[k].stripe = stripes[i];
			f->nrules++;
		}
		f->rules[k].left += counts[i];
	}
	f->inner = inner;
	f->s.ops = &flaky_ops;
	f->s.sectors = inner->sectors;
	f->s.shift = inner->shift;
	snprintf(f->s.desc, sizeof(f->s.desc), "flaky:%.200s", inner->desc);
	*out = &f->s;
	return 0;
}
