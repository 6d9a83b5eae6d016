/* Synchronous engine: every request is carried out with preadv/pwritev,
 * fsync or fallocate inside queue; poll reports the results in the order
 * the requests were queued. */
#include "bdev/file_priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"

/* iovecs handed to one preadv/pwritev call. */
#define SYNC_IOV_WINDOW 64
/* Bytes bounced per system call when O_DIRECT needs aligned memory. */
#define SYNC_BOUNCE_LEN (256u << 10)
/* Consecutive EAGAIN results before a request gives up. */
#define SYNC_AGAIN_MAX 64

struct sync_chan {
	struct ub_bdev_chan base;
	struct ub_file_dev *fdev;
	int fd;
	struct ub_bdev_cqe *done; /* heap ring of depth results, in order */
	uint32_t head;		  /* next result to report */
	void *bounce; /* heap, UB_BUF_ALIGN-aligned, SYNC_BOUNCE_LEN bytes;
			 allocated on the first misaligned O_DIRECT request */
};

/* Transfers every byte of the iovecs at off: short transfers, EINTR and
 * (a few times) EAGAIN are retried; end of file before the full length is
 * -EIO. */
static int rw_full(int fd, bool write, const struct iovec *iov, int iovcnt,
		   uint64_t off)
{
	struct iovec win[SYNC_IOV_WINDOW];
	int idx = 0, n, j, again = 0;
	size_t skip = 0, left;
	ssize_t r;

	for (;;) {
		while (idx < iovcnt && iov[idx].iov_len == skip) {
			idx++;
			skip = 0;
		}
		if (idx == iovcnt)
			return 0;
		for (n = 0, j = idx; j < iovcnt && n < SYNC_IOV_WINDOW; j++) {
			size_t s = j == idx ? skip : 0;

			if (iov[j].iov_len == s)
				continue;
			win[n].iov_base = (char *)iov[j].iov_base + s;
			win[n].iov_len = iov[j].iov_len - s;
			n++;
		}
		if (write)
			r = pwritev(fd, win, n, (off_t)off);
		else
			r = preadv(fd, win, n, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN && ++again < SYNC_AGAIN_MAX)
				continue;
			return -errno;
		}
		if (r == 0) /* end of file, or a write that makes no progress */
			return -EIO;
		again = 0;
		off += (uint64_t)r;
		while (r > 0) {
			left = iov[idx].iov_len - skip;
			if ((size_t)r < left) {
				skip += (size_t)r;
				r = 0;
			} else {
				r -= (ssize_t)left;
				idx++;
				skip = 0;
			}
		}
	}
}

/* O_DIRECT with memory the kernel refuses: copy through the channel's
 * aligned buffer, SYNC_BOUNCE_LEN bytes at a time. */
static int rw_bounced(struct sync_chan *sc, bool write,
		      const struct ub_bdev_req *req)
{
	size_t total = (size_t)req->count << UB_SECTOR_SHIFT, pos, n;
	uint64_t off = req->sector << UB_SECTOR_SHIFT;
	struct iovec one;
	int rc;

	if (!sc->bounce) {
		sc->bounce = ub_bdev_buf_alloc(SYNC_BOUNCE_LEN);
		if (!sc->bounce)
			return -ENOMEM;
	}
	for (pos = 0; pos < total; pos += n) {
		n = total - pos < SYNC_BOUNCE_LEN ? total - pos
						  : SYNC_BOUNCE_LEN;
		one.iov_base = sc->bounce;
		one.iov_len = n;
		if (write)
			ub_iov_copy_out(sc->bounce, req->iov, req->iovcnt, pos,
					n);
		rc = rw_full(sc->fd, write, &one, 1, off + pos);
		if (rc < 0)
			return rc;
		if (!write)
			ub_iov_copy_in(req->iov, req->iovcnt, pos, sc->bounce,
				       n);
	}
	return 0;
}

static int do_flush(struct sync_chan *sc)
{
	int rc;

	if (sc->fdev->base.flags & UB_BDEV_F_WRITE_THROUGH)
		return 0;
	do {
		rc = fsync(sc->fd);
	} while (rc < 0 && errno == EINTR);
	return rc < 0 ? -errno : 0;
}

static int execute(struct sync_chan *sc, const struct ub_bdev_req *req)
{
	uint64_t off = req->sector << UB_SECTOR_SHIFT;
	uint64_t len = (uint64_t)req->count << UB_SECTOR_SHIFT;
	bool write = req->op == UB_BDEV_WRITE;

	switch (req->op) {
	case UB_BDEV_READ:
	case UB_BDEV_WRITE:
		if (!ub_file_iov_direct_ok(sc->fdev, req->iov, req->iovcnt))
			return rw_bounced(sc, write, req);
		return rw_full(sc->fd, write, req->iov, req->iovcnt, off);
	case UB_BDEV_FLUSH:
		return do_flush(sc);
	case UB_BDEV_DISCARD:
		return ub_file_discard(sc->fdev, sc->fd, off, len);
	case UB_BDEV_WRITE_ZEROES:
		return ub_file_write_zeroes(sc->fdev, sc->fd, off, len);
	}
	return -EINVAL;
}

static int sync_queue(struct ub_bdev_chan *ch, const struct ub_bdev_req *req)
{
	struct sync_chan *sc = (struct sync_chan *)ch;
	struct ub_bdev_cqe *c;
	int rc;

	if (ch->inflight >= ch->depth)
		return -EAGAIN;
	rc = ub_bdev_req_check(ch->dev, req);
	if (rc < 0)
		return rc;
	c = &sc->done[(sc->head + ch->inflight) & (ch->depth - 1)];
	c->id = req->id;
	c->res = execute(sc, req);
	if (c->res < 0)
		LOG_DEBUG("%s: request %llu failed: %s", ch->dev->name,
			  (unsigned long long)req->id, strerror(-c->res));
	ch->inflight++;
	return 0;
}

static int sync_submit(struct ub_bdev_chan *ch)
{
	return 0;
}

static unsigned sync_poll(struct ub_bdev_chan *ch, struct ub_bdev_cqe *out,
			  unsigned max)
{
	struct sync_chan *sc = (struct sync_chan *)ch;
	unsigned n;

	for (n = 0; n < max && ch->inflight; n++) {
		out[n] = sc->done[sc->head];
		sc->head = (sc->head + 1) & (ch->depth - 1);
		ch->inflight--;
	}
	return n;
}

static void sync_close(struct ub_bdev_chan *ch)
{
	struct sync_chan *sc = (struct sync_chan *)ch;

	free(sc->bounce);
	free(sc->done);
	if (sc->fd >= 0)
		close(sc->fd);
	free(sc);
}

static const struct ub_bdev_chan_ops sync_chan_ops = {
    .queue = sync_queue,
    .submit = sync_submit,
    .poll = sync_poll,
    .close = sync_close,
};

static int sync_open_chan(struct ub_bdev *dev, struct ub_bdev_chan **out,
			  struct ub_err *err)
{
	struct ub_file_dev *fdev = ub_file_dev(dev);
	struct sync_chan *sc; /* heap; the caller's until ub_bdev_chan_close */
	int rc;

	*out = NULL;
	sc = calloc(1, sizeof(*sc));
	if (!sc)
		return ub_err_ret(err, -ENOMEM, "Out of memory");
	sc->fd = -1;
	sc->done = calloc(fdev->depth, sizeof(*sc->done));
	if (!sc->done) {
		rc = ub_err_ret(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	sc->fd = ub_file_dev_open_fd(fdev, err);
	if (sc->fd < 0) {
		rc = sc->fd;
		goto fail;
	}
	sc->fdev = fdev;
	sc->base.ops = &sync_chan_ops;
	sc->base.depth = fdev->depth;
	sc->base.dev = ub_bdev_get(dev);
	*out = &sc->base;
	return 0;

fail:
	sync_close(&sc->base);
	return rc;
}

static void sync_destroy(struct ub_bdev *dev)
{
	ub_file_dev_free(ub_file_dev(dev));
}

static const struct ub_bdev_ops sync_ops = {
    .open_chan = sync_open_chan,
    .destroy = sync_destroy,
};

int ub_sync_bdev_create(const struct ub_file_bdev_opts *o, unsigned flags,
			struct ub_bdev **out, struct ub_err *err)
{
	struct ub_file_dev *fdev = NULL; /* heap; handed to *out */
	int rc;

	*out = NULL;
	rc = ub_file_dev_create(o, &sync_ops, "sync", flags, &fdev, err);
	if (rc < 0)
		return rc;
	*out = &fdev->base;
	return 0;
}

int ub_sync_bdev_open(const struct ub_file_bdev_opts *o, struct ub_bdev **out,
		      struct ub_err *err)
{
	return ub_sync_bdev_create(o, 0, out, err);
}
