/* Common block-device code: reference counting, request validation, the
 * synchronous wait helper and aligned buffers. */
#include "bdev/bdev.h"

#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"

/* Most iovecs one request may carry (the kernel's UIO_MAXIOV). */
#define UB_BDEV_IOV_MAX 1024
/* Completions taken per poll call by the helpers below. */
#define UB_BDEV_DRAIN_BATCH 32

void ub_bdev_init(struct ub_bdev *dev, const struct ub_bdev_ops *ops,
		  uint64_t sectors, uint32_t flags, const char *name)
{
	dev->ops = ops;
	dev->sectors = sectors;
	dev->flags = flags;
	atomic_init(&dev->refs, 1);
	snprintf(dev->name, sizeof(dev->name), "%s", name ? name : "");
}

struct ub_bdev *ub_bdev_get(struct ub_bdev *dev)
{
	atomic_fetch_add_explicit(&dev->refs, 1, memory_order_relaxed);
	return dev;
}

void ub_bdev_put(struct ub_bdev *dev)
{
	if (!dev)
		return;
	if (atomic_fetch_sub_explicit(&dev->refs, 1, memory_order_acq_rel) == 1)
		dev->ops->destroy(dev);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits up to ms milliseconds for the channel's event fd, or sleeps that
 * long when it has none; resets the event fd. */
static void wait_a_little(struct ub_bdev_chan *ch, int ms)
{
	int efd = ub_bdev_chan_event_fd(ch);
	struct pollfd pfd = {.fd = efd, .events = POLLIN};

	if (efd < 0) {
		struct timespec ts = {.tv_sec = ms / 1000,
				      .tv_nsec = (long)(ms % 1000) * 1000000};

		nanosleep(&ts, NULL);
		return;
	}
	/* Layered channels expose an epoll set: reset through the op. */
	if (poll(&pfd, 1, ms) > 0)
		ub_bdev_chan_event_reset(ch);
}

void ub_bdev_chan_close(struct ub_bdev_chan *ch)
{
	struct ub_bdev_cqe cqe[UB_BDEV_DRAIN_BATCH];
	struct timespec pause = {.tv_nsec = 50000};
	uint64_t start, warned = 0;
	struct ub_bdev *dev;

	if (!ch)
		return;
	dev = ch->dev;
	start = now_ms();
	/* The kernel may still use the buffers of in-flight requests: their
	 * completions are awaited (and dropped) before anything is freed. */
	if (ch->inflight && ch->ops->submit(ch) < 0)
		LOG_WARN("%s: submit while closing a channel failed",
			 dev->name);
	while (ch->inflight) {
		if (ch->ops->poll(ch, cqe, UB_BDEV_DRAIN_BATCH))
			continue;
		if (now_ms() - start >= 10000 * (warned + 1)) {
			warned++;
			LOG_WARN("%s: still waiting for %u in-flight requests "
				 "to close a channel",
				 dev->name, ch->inflight);
		}
		nanosleep(&pause, NULL);
	}
	ch->ops->close(ch);
	ub_bdev_put(dev);
}

static int check_iov(const struct ub_bdev_req *req)
{
	uint64_t want = (uint64_t)req->count << UB_SECTOR_SHIFT;
	uint64_t total = 0;
	int i;

	if (req->iovcnt <= 0 || req->iovcnt > UB_BDEV_IOV_MAX || !req->iov)
		return -EINVAL;
	for (i = 0; i < req->iovcnt; i++) {
		if (req->iov[i].iov_len && !req->iov[i].iov_base)
			return -EINVAL;
		total += req->iov[i].iov_len;
		if (total > want)
			return -EINVAL;
	}
	return total == want ? 0 : -EINVAL;
}

int ub_bdev_req_check(const struct ub_bdev *dev, const struct ub_bdev_req *req)
{
	bool needs_iov = false;

	switch (req->op) {
	case UB_BDEV_READ:
		needs_iov = true;
		break;
	case UB_BDEV_WRITE:
		needs_iov = true;
		/* fallthrough */
	case UB_BDEV_DISCARD:
	case UB_BDEV_WRITE_ZEROES:
		if (dev->flags & UB_BDEV_F_READONLY)
			return -EROFS;
		if (req->op == UB_BDEV_DISCARD &&
		    !(dev->flags & UB_BDEV_F_DISCARD))
			return -EOPNOTSUPP;
		if (req->op == UB_BDEV_WRITE_ZEROES &&
		    !(dev->flags & UB_BDEV_F_WRITE_ZEROES))
			return -EOPNOTSUPP;
		break;
	case UB_BDEV_FLUSH:
		return 0;
	default:
		return -EINVAL;
	}
	/* Zero-length requests and ranges ending past the capacity (the
	 * subtraction cannot wrap: count is checked against sectors first). */
	if (req->count == 0 || req->count > dev->sectors ||
	    req->sector > dev->sectors - req->count)
		return -EINVAL;
	return needs_iov ? check_iov(req) : 0;
}

int ub_bdev_run_sync(struct ub_bdev_chan *ch, const struct ub_bdev_req *req,
		     unsigned timeout_ms, struct ub_err *err)
{
	struct ub_bdev_cqe cqe[UB_BDEV_DRAIN_BATCH];
	uint64_t start = now_ms(), elapsed;
	unsigned n, i;
	int rc;

	rc = ub_bdev_chan_queue(ch, req);
	if (rc < 0)
		return ub_err_ret(err, rc, "Failed request ID: %llu: %s",
				  (unsigned long long)req->id, strerror(-rc));
	rc = ub_bdev_chan_submit(ch);
	if (rc < 0)
		LOG_WARN("%s: submit failed: %s", ch->dev->name, strerror(-rc));
	for (;;) {
		n = ub_bdev_chan_poll(ch, cqe, UB_BDEV_DRAIN_BATCH);
		for (i = 0; i < n; i++) {
			if (cqe[i].id != req->id) {
				LOG_DEBUG("%s: dropping completion of request "
					  "%llu while waiting for %llu",
					  ch->dev->name,
					  (unsigned long long)cqe[i].id,
					  (unsigned long long)req->id);
				continue;
			}
			rc = cqe[i].res;
			if (rc < 0)
				return ub_err_ret(
				    err, rc, "Failed request ID: %llu: %s",
				    (unsigned long long)req->id, strerror(-rc));
			return 0;
		}
		if (n)
			continue;
		elapsed = now_ms() - start;
		if (elapsed >= timeout_ms)
			break;
		wait_a_little(ch, elapsed + 1 < timeout_ms ? 1 : 0);
	}
	/* The request stays in flight: its buffer belongs to the channel until
	 * the channel is closed. */
	return ub_err_ret(err, -ETIMEDOUT,
			  "Timeout while waiting for request ID %llu",
			  (unsigned long long)req->id);
}

int ub_bdev_read_sync(struct ub_bdev_chan *ch, uint64_t sector, uint32_t count,
		      void *buf, unsigned timeout_ms, struct ub_err *err)
{
	struct iovec iov = {.iov_base = buf,
			    .iov_len = (size_t)count << UB_SECTOR_SHIFT};
	struct ub_bdev_req req = {.op = UB_BDEV_READ,
				  .sector = sector,
				  .count = count,
				  .iov = &iov,
				  .iovcnt = 1};

	return ub_bdev_run_sync(ch, &req, timeout_ms, err);
}

int ub_bdev_write_sync(struct ub_bdev_chan *ch, uint64_t sector, uint32_t count,
		       const void *buf, unsigned timeout_ms, struct ub_err *err)
{
	struct iovec iov = {.iov_base = (void *)buf,
			    .iov_len = (size_t)count << UB_SECTOR_SHIFT};
	struct ub_bdev_req req = {.op = UB_BDEV_WRITE,
				  .sector = sector,
				  .count = count,
				  .iov = &iov,
				  .iovcnt = 1};

	return ub_bdev_run_sync(ch, &req, timeout_ms, err);
}

int ub_bdev_flush_sync(struct ub_bdev_chan *ch, unsigned timeout_ms,
		       struct ub_err *err)
{
	struct ub_bdev_req req = {.op = UB_BDEV_FLUSH};

	return ub_bdev_run_sync(ch, &req, timeout_ms, err);
}

void *ub_bdev_buf_alloc(size_t len)
{
	size_t size = (len + UB_BUF_ALIGN - 1) & ~(size_t)(UB_BUF_ALIGN - 1);
	void *p; /* heap, UB_BUF_ALIGN-aligned; the caller frees it */

	if (size < len)
		return NULL;
	if (!size)
		size = UB_BUF_ALIGN;
	if (posix_memalign(&p, UB_BUF_ALIGN, size))
		return NULL;
	memset(p, 0, size);
	return p;
}

void ub_bdev_chan_event_reset(struct ub_bdev_chan *ch)
{
	struct pollfd pfd;
	eventfd_t v;
	int fd;

	if (ch->ops->event_reset) {
		ch->ops->event_reset(ch);
		return;
	}
	fd = ub_bdev_chan_event_fd(ch);
	if (fd < 0)
		return;
	/* Only read when readable: the fd may be in blocking mode. */
	pfd.fd = fd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	if (poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN))
		(void)eventfd_read(fd, &v);
}
