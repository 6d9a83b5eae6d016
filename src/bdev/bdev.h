/* Block devices: one asynchronous interface for every storage target.
 *
 * A device (struct ub_bdev) describes a target: its capacity, what it
 * supports, and how to open channels. It is shared between threads and
 * reference-counted (ub_bdev_get/ub_bdev_put; the last put destroys it).
 *
 * A channel (struct ub_bdev_chan) is a request queue owned by exactly one
 * thread: queue requests, submit them as a batch, then poll completions.
 * No locks on this path. Every I/O thread opens its own channel.
 *
 *   ub_bdev_chan_queue()  -> 0: accepted, exactly one completion will be
 *                            reported by a later poll;
 *                            <0: rejected now (-EAGAIN: channel full, poll
 *                            and retry; -EINVAL: bad request, e.g. out of
 *                            range or misaligned), no completion follows.
 *   ub_bdev_chan_submit() -> hands queued requests to the engine.
 *   ub_bdev_chan_poll()   -> never blocks; fills up to max completions
 *                            {id, res}: res = 0, or a negative errno
 *                            (-EIO, -ENOSPC, ...) for that request. Short
 *                            transfers are retried inside the engine; a
 *                            read past the end of the target is -EIO.
 *
 * Buffers: a request's iovecs stay owned by the caller but must not be
 * touched from queue until the completion is polled. Engines accept any
 * memory alignment and any iovec split whose total is count*512 bytes;
 * when O_DIRECT needs alignment they bounce through their own aligned
 * buffers. ub_bdev_buf_alloc gives buffers that never need bouncing. */
#ifndef UB_BDEV_BDEV_H
#define UB_BDEV_BDEV_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "util/err.h"

#define UB_SECTOR_SHIFT 9
#define UB_SECTOR_SIZE 512u
/* Memory alignment that every engine accepts without bouncing. */
#define UB_BUF_ALIGN 4096u

enum ub_bdev_op {
	UB_BDEV_READ,
	UB_BDEV_WRITE,
	UB_BDEV_FLUSH,	      /* durability of every completed write */
	UB_BDEV_DISCARD,      /* contents of the range become unspecified */
	UB_BDEV_WRITE_ZEROES, /* range reads back as zeros */
};

/* Device capability flags. */
enum {
	UB_BDEV_F_READONLY = 1u << 0,
	UB_BDEV_F_WRITE_THROUGH = 1u << 1, /* every write is durable (O_DSYNC):
					      flush is a no-op */
	UB_BDEV_F_DISCARD = 1u << 2,
	UB_BDEV_F_WRITE_ZEROES = 1u << 3,
};

struct ub_bdev_req {
	enum ub_bdev_op op;
	uint64_t sector;	 /* first 512-byte sector (not for flush) */
	uint32_t count;		 /* sectors (0 for flush) */
	const struct iovec *iov; /* READ/WRITE: count*512 bytes in total;
				    the array itself is copied at queue */
	int iovcnt;
	uint64_t id; /* caller's tag, returned in the completion */
};

struct ub_bdev_cqe {
	uint64_t id;
	int res; /* 0 or -errno */
};

struct ub_bdev;
struct ub_bdev_chan;

struct ub_bdev_chan_ops {
	int (*queue)(struct ub_bdev_chan *ch, const struct ub_bdev_req *req);
	int (*submit)(struct ub_bdev_chan *ch);
	unsigned (*poll)(struct ub_bdev_chan *ch, struct ub_bdev_cqe *out,
			 unsigned max);
	/* An fd that becomes readable when completions may be waiting (an
	 * eventfd; the caller reads it to reset), or -1 when completions are
	 * always ready right after submit. Optional (NULL = -1). */
	int (*event_fd)(struct ub_bdev_chan *ch);
	/* Resets the event fd before the caller sleeps on it. Optional (NULL:
	 * the fd is an eventfd and is read). Layered channels whose event fd
	 * is an epoll set of inner fds reset the inner ones here. */
	void (*event_reset)(struct ub_bdev_chan *ch);
	void (*close)(struct ub_bdev_chan *ch);
};

struct ub_bdev_chan {
	const struct ub_bdev_chan_ops *ops;
	struct ub_bdev *dev; /* holds a reference for the channel's life */
	uint32_t inflight;   /* accepted and not yet polled (ops maintain it) */
	uint32_t depth;	     /* most requests in flight at once */
};

struct ub_bdev_ops {
	/* Opens a channel for the calling thread. */
	int (*open_chan)(struct ub_bdev *dev, struct ub_bdev_chan **out,
			 struct ub_err *err);
	/* Frees the device (called by the last ub_bdev_put). */
	void (*destroy)(struct ub_bdev *dev);
};

struct ub_bdev {
	const struct ub_bdev_ops *ops;
	uint64_t sectors; /* capacity in 512-byte sectors, fixed */
	uint32_t flags;	  /* UB_BDEV_F_* */
	atomic_uint refs;
	char name[64]; /* for log messages: "io_uring:/path", "crypt", ... */
};

/* Initialises the common part of a device (refs = 1). */
void ub_bdev_init(struct ub_bdev *dev, const struct ub_bdev_ops *ops,
		  uint64_t sectors, uint32_t flags, const char *name);
/* Takes another reference ("clone": same target, same state). */
struct ub_bdev *ub_bdev_get(struct ub_bdev *dev);
/* Drops a reference; NULL is accepted. */
void ub_bdev_put(struct ub_bdev *dev);

static inline int ub_bdev_open_chan(struct ub_bdev *dev,
				    struct ub_bdev_chan **out,
				    struct ub_err *err)
{
	return dev->ops->open_chan(dev, out, err);
}

static inline int ub_bdev_chan_queue(struct ub_bdev_chan *ch,
				     const struct ub_bdev_req *req)
{
	return ch->ops->queue(ch, req);
}

static inline int ub_bdev_chan_submit(struct ub_bdev_chan *ch)
{
	return ch->ops->submit(ch);
}

static inline unsigned ub_bdev_chan_poll(struct ub_bdev_chan *ch,
					 struct ub_bdev_cqe *out, unsigned max)
{
	return ch->ops->poll(ch, out, max);
}

static inline int ub_bdev_chan_event_fd(struct ub_bdev_chan *ch)
{
	return ch->ops->event_fd ? ch->ops->event_fd(ch) : -1;
}

/* Resets the channel's event fd (if it has one) without blocking; call it
 * before the last poll that precedes sleeping on the fd. */
void ub_bdev_chan_event_reset(struct ub_bdev_chan *ch);

/* True while completions are owed to the caller. */
static inline bool ub_bdev_chan_busy(const struct ub_bdev_chan *ch)
{
	return ch->inflight != 0;
}

/* Closes the channel (waits for its in-flight requests first); NULL ok. */
void ub_bdev_chan_close(struct ub_bdev_chan *ch);

/* Checks a request against the device: known op, range inside capacity
 * without overflow, iovec total == count*512, op allowed by the flags.
 * Returns 0 or -EINVAL / -EROFS / -EOPNOTSUPP. Engines call it in queue. */
int ub_bdev_req_check(const struct ub_bdev *dev, const struct ub_bdev_req *req);

/* Queues one request, submits, and waits up to timeout_ms for its
 * completion on a channel used by nobody else. Returns the request's res,
 * or -ETIMEDOUT (err says "Timeout while waiting for request ID <id>"). */
int ub_bdev_run_sync(struct ub_bdev_chan *ch, const struct ub_bdev_req *req,
		     unsigned timeout_ms, struct ub_err *err);
/* Convenience wrappers around ub_bdev_run_sync for one flat buffer. */
int ub_bdev_read_sync(struct ub_bdev_chan *ch, uint64_t sector, uint32_t count,
		      void *buf, unsigned timeout_ms, struct ub_err *err);
int ub_bdev_write_sync(struct ub_bdev_chan *ch, uint64_t sector,
		       uint32_t count, const void *buf, unsigned timeout_ms,
		       struct ub_err *err);
int ub_bdev_flush_sync(struct ub_bdev_chan *ch, unsigned timeout_ms,
		       struct ub_err *err);

/* Aligned, zeroed buffer of len bytes (UB_BUF_ALIGN); free with free(). */
void *ub_bdev_buf_alloc(size_t len);

#endif
