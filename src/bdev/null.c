/* Null device: reads fill the caller's buffers with zeros; writes, flushes,
 * discards and write-zeroes succeed without doing anything. Requests
 * complete in queue and are reported in order by poll. */
#include "bdev/null.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Requests a null channel holds before queue returns -EAGAIN. */
#define NULL_DEPTH 256u

struct null_chan {
	struct ub_bdev_chan base;
	uint32_t head; /* next result to report */
	struct ub_bdev_cqe done[NULL_DEPTH];
};

static int null_queue(struct ub_bdev_chan *ch, const struct ub_bdev_req *req)
{
	struct null_chan *nc = (struct null_chan *)ch;
	struct ub_bdev_cqe *c;
	int rc, i;

	if (ch->inflight >= ch->depth)
		return -EAGAIN;
	rc = ub_bdev_req_check(ch->dev, req);
	if (rc < 0)
		return rc;
	if (req->op == UB_BDEV_READ) {
		for (i = 0; i < req->iovcnt; i++)
			memset(req->iov[i].iov_base, 0, req->iov[i].iov_len);
	}
	c = &nc->done[(nc->head + ch->inflight) % NULL_DEPTH];
	c->id = req->id;
	c->res = 0;
	ch->inflight++;
	return 0;
}

static int null_submit(struct ub_bdev_chan *ch)
{
	return 0;
}

static unsigned null_poll(struct ub_bdev_chan *ch, struct ub_bdev_cqe *out,
			  unsigned max)
{
	struct null_chan *nc = (struct null_chan *)ch;
	unsigned n;

	for (n = 0; n < max && ch->inflight; n++) {
		out[n] = nc->done[nc->head];
		nc->head = (nc->head + 1) % NULL_DEPTH;
		ch->inflight--;
	}
	return n;
}

static void null_close(struct ub_bdev_chan *ch)
{
	free(ch);
}

static const struct ub_bdev_chan_ops null_chan_ops = {
    .queue = null_queue,
    .submit = null_submit,
    .poll = null_poll,
    .close = null_close,
};

static int null_open_chan(struct ub_bdev *dev, struct ub_bdev_chan **out,
			  struct ub_err *err)
{
	struct null_chan *nc; /* heap; the caller's until ub_bdev_chan_close */

	nc = calloc(1, sizeof(*nc));
	if (!nc) {
		*out = NULL;
		return ub_err_ret(err, -ENOMEM, "Out of memory");
	}
	nc->base.ops = &null_chan_ops;
	nc->base.depth = NULL_DEPTH;
	nc->base.dev = ub_bdev_get(dev);
	*out = &nc->base;
	return 0;
}

static void null_destroy(struct ub_bdev *dev)
{
	free(dev);
}

static const struct ub_bdev_ops null_ops = {
    .open_chan = null_open_chan,
    .destroy = null_destroy,
};

int ub_null_bdev_create(uint64_t sectors, struct ub_bdev **out,
			struct ub_err *err)
{
	struct ub_bdev *dev; /* heap; handed to *out */

	dev = calloc(1, sizeof(*dev));
	if (!dev) {
		*out = NULL;
		return ub_err_ret(err, -ENOMEM, "Out of memory");
	}
	ub_bdev_init(dev, &null_ops, sectors,
		     UB_BDEV_F_DISCARD | UB_BDEV_F_WRITE_ZEROES, "null");
	*out = dev;
	return 0;
}
