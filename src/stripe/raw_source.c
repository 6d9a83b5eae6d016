/* Raw image source (storage.md §6.2): stripe i is sectors
 * [i << shift, (i + 1) << shift) of a plaintext image, read through one
 * channel of the image device. The last stripe may be partial: only the
 * sectors the image has are read and the rest of the buffer is zeroed
 * before the read is queued. */
#include "stripe/source.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stripe/metadata.h"
#include "util/log.h"

/* Completions taken from the channel per poll call. */
#define RAW_POLL_BATCH 32u

struct raw_source {
	struct ub_source s;
	struct ub_bdev *image;	 /* reference */
	struct ub_bdev_chan *ch; /* owned: channel on image */
};

static struct raw_source *to_raw(struct ub_source *s)
{
	return (struct raw_source *)s;
}

static int raw_request(struct ub_source *s, uint64_t stripe, void *buf)
{
	struct raw_source *r = to_raw(s);
	uint64_t per = UINT64_C(1) << s->shift;
	uint64_t first = stripe << s->shift;
	struct iovec iov;
	struct ub_bdev_req req = {.op = UB_BDEV_READ, .iovcnt = 1, .iov = &iov};
	uint64_t count;
	int rc;

	if (stripe >= ub_source_stripe_count(s)) {
		LOG_ERROR("Invalid parameter error: Stripe %" PRIu64
			  " beyond end of source",
			  stripe);
		return -EINVAL;
	}
	count = s->sectors - first < per ? s->sectors - first : per;
	if (count < per)
		memset((char *)buf + (count << UB_SECTOR_SHIFT), 0,
		       (size_t)((per - count) << UB_SECTOR_SHIFT));
	iov.iov_base = buf;
	iov.iov_len = (size_t)count << UB_SECTOR_SHIFT;
	req.sector = first;
	req.count = (uint32_t)count;
	req.id = stripe;
	rc = ub_bdev_chan_queue(r->ch, &req);
	if (rc < 0)
		return rc;
	rc = ub_bdev_chan_submit(r->ch);
	if (rc < 0)
		LOG_WARN("%s: submit: %s (the read stays queued)", s->desc,
			 strerror(-rc));
	return 0;
}

static unsigned raw_poll(struct ub_source *s, struct ub_source_cqe *out,
			 unsigned max)
{
	struct ub_bdev_cqe cqe[RAW_POLL_BATCH];
	unsigned n, i;

	if (max > RAW_POLL_BATCH)
		max = RAW_POLL_BATCH;
	n = ub_bdev_chan_poll(to_raw(s)->ch, cqe, max);
	for (i = 0; i < n; i++) {
		out[i].stripe = cqe[i].id;
		out[i].res = cqe[i].res;
		if (cqe[i].res < 0)
			LOG_ERROR("%s: reading stripe %" PRIu64 ": %s", s->desc,
				  cqe[i].id, strerror(-cqe[i].res));
	}
	return n;
}

static bool raw_busy(struct ub_source *s)
{
	return ub_bdev_chan_busy(to_raw(s)->ch);
}

static int raw_event_fd(struct ub_source *s)
{
	return ub_bdev_chan_event_fd(to_raw(s)->ch);
}

static bool raw_has_stripe(struct ub_source *s, uint64_t stripe)
{
	return stripe < ub_source_stripe_count(s);
}

static void raw_close(struct ub_source *s)
{
	struct raw_source *r = to_raw(s);

	ub_bdev_chan_close(r->ch);
	ub_bdev_put(r->image);
	free(r);
}

static const struct ub_source_ops raw_ops = {
    .request = raw_request,
    .poll = raw_poll,
    .busy = raw_busy,
    .event_fd = raw_event_fd,
    .has_stripe = raw_has_stripe,
    .close = raw_close,
};

int ub_raw_source_open(struct ub_bdev *image, unsigned shift,
		       struct ub_source **out, struct ub_err *err)
{
	struct raw_source *r; /* owned by *out */
	int rc;

	if (shift > UB_MD_MAX_SHIFT)
		return ub_err_ret(err, -EINVAL,
				  "Invalid parameter error: stripe sector "
				  "count shift %u is too large",
				  shift);
	r = calloc(1, sizeof(*r));
	if (!r)
		return ub_err_ret(err, -ENOMEM, "out of memory");
	rc = ub_bdev_open_chan(image, &r->ch, err);
	if (rc < 0)
		goto err_free;
	r->image = ub_bdev_get(image);
	r->s.ops = &raw_ops;
	r->s.sectors = image->sectors;
	r->s.shift = shift;
	snprintf(r->s.desc, sizeof(r->s.desc), "raw:%s", image->name);
	*out = &r->s;
	return 0;

err_free:
	free(r);
	return rc;
}
