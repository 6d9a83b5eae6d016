/* Empty stripe source: no sectors, no stripes. Used when no source is
 * configured and once every stripe is local (the real source is closed). */
#include "stripe/source.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "util/log.h"

static int empty_request(struct ub_source *s, uint64_t stripe, void *buf)
{
	LOG_ERROR("Invalid parameter error: Stripe %" PRIu64
		  " beyond end of source",
		  stripe);
	return -EINVAL;
}

static unsigned empty_poll(struct ub_source *s, struct ub_source_cqe *out,
			   unsigned max)
{
	return 0;
}

static bool empty_busy(struct ub_source *s)
{
	return false;
}

static int empty_event_fd(struct ub_source *s)
{
	return -1;
}

static bool empty_has_stripe(struct ub_source *s, uint64_t stripe)
{
	return false;
}

static void empty_close(struct ub_source *s)
{
	free(s);
}

static const struct ub_source_ops empty_ops = {
    .request = empty_request,
    .poll = empty_poll,
    .busy = empty_busy,
    .event_fd = empty_event_fd,
    .has_stripe = empty_has_stripe,
    .close = empty_close,
};

int ub_empty_source_open(unsigned shift, struct ub_source **out,
			 struct ub_err *err)
{
	struct ub_source *s = calloc(1, sizeof(*s)); /* owned by *out */

	if (!s)
		return ub_err_ret(err, -ENOMEM, "out of memory");
	s->ops = &empty_ops;
	s->sectors = 0;
	s->shift = shift;
	snprintf(s->desc, sizeof(s->desc), "empty");
	*out = s;
	return 0;
}
