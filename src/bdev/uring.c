/* io_uring engine: one ring per channel (SQ = queue depth, CQ = twice
 * that), the channel's fd registered as fixed file 0. queue only prepares
 * SQEs; submit hands them to the kernel with one io_uring_submit; poll
 * reaps the CQ without blocking. Short transfers and -EAGAIN/-EINTR
 * results are resubmitted for the remainder from poll, so the caller sees
 * exactly one completion per request.
 *
 * O_DIRECT: iovecs the kernel would refuse (memory or length not aligned
 * as statx(STATX_DIOALIGN) says) go through an aligned bounce buffer: a
 * chunk of the channel's pool (registered as fixed buffers, so the
 * transfer uses READ_FIXED/WRITE_FIXED) or, for requests larger than a
 * chunk or when the pool is exhausted, a heap buffer of the request's
 * size. The pool is allocated on the first request that needs it.
 *
 * IOPOLL rings are used only for block devices opened O_DIRECT whose
 * queue polls (queue/io_poll = 1); such a ring carries only reads and
 * writes, so flush and write-zeroes run synchronously in queue there. */
#include "bdev/file_priv.h"

#include <errno.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "util/fileio.h"
#include "util/log.h"

/* iovecs a slot holds without allocating. */
#define UR_IOV_INLINE 4
/* Bytes of one pool chunk: the largest request bounced without a heap
 * buffer. */
#define UR_CHUNK (128u << 10)
/* Chunks in a channel's pool at most (fewer when the depth is smaller). */
#define UR_POOL_MAX 64u
/* Bytes one READ/WRITE SQE asks for; the rest follows as a resubmission. */
#define UR_XFER_MAX (1u << 30)
/* Consecutive -EAGAIN/-EINTR results before a request gives up. */
#define UR_RETRY_MAX 64
/* CQEs taken from the ring per peek. */
#define UR_CQE_BATCH 32u
#define UR_NONE	     UINT32_MAX

enum ur_kind {
	UR_FLAT,  /* one buffer: pos, left */
	UR_VEC,	  /* iovecs: iov, iovcnt, left */
	UR_FSYNC, /* flush */
	UR_FALLOC /* discard / write-zeroes: fmode, off, left */
};

struct ur_slot {
	uint64_t id;
	uint64_t off;		/* file offset of what is left */
	size_t left;		/* bytes still to transfer */
	size_t total;		/* bytes of the request */
	char *pos;		/* UR_FLAT: next byte of the buffer */
	struct iovec *iov;	/* UR_VEC: iovecs left; bounced read: the
				   caller's iovecs to copy into at the end */
	struct iovec *iov_heap; /* heap, iov_cap entries; kept for reuse
				   until the channel closes */
	char *bounce;		/* pool chunk or heap (see chunk); NULL when the
				   caller's memory is used */
	uint32_t iov_cap;
	uint32_t next; /* free list link */
	int iovcnt;
	int buf_index; /* fixed buffer that pos lies in, or -1 */
	int chunk;     /* pool chunk of bounce, -1 for a heap bounce */
	int fmode;     /* UR_FALLOC: fallocate mode */
	uint8_t kind;
	uint8_t op;
	uint8_t retries;
	struct iovec iov_inline[UR_IOV_INLINE];
};

struct ur_chan {
	struct ub_bdev_chan base;
	struct ub_file_dev *fdev;
	struct io_uring ring;
	bool ring_ok;
	bool iopoll;
	bool need_submit; /* SQEs left in the ring by a failed submit */
	bool pool_reg;	  /* pool registered as fixed buffers */
	bool pool_tried;  /* pool allocation attempted */
	int fd;
	int file;	       /* fixed-file index, or fd when not registered */
	unsigned sqe_flags;    /* IOSQE_FIXED_FILE when registered */
	int efd;	       /* eventfd, -1 until event_fd() asks for it */
	struct ur_slot *slots; /* heap, depth entries */
	uint32_t free_head;
	struct ub_bdev_cqe *done; /* heap ring of depth results of requests
				     completed inside queue */
	uint32_t done_head, done_cnt;
	char *pool; /* heap, pool_n chunks, UB_BUF_ALIGN-aligned */
	uint32_t pool_n, pool_nfree;
	uint32_t pool_free[UR_POOL_MAX];
};

static struct ur_slot *slot_get(struct ur_chan *c, uint32_t *idx)
{
	struct ur_slot *s;

	if (c->free_head == UR_NONE)
		return NULL;
	*idx = c->free_head;
	s = &c->slots[*idx];
	c->free_head = s->next;
	s->bounce = NULL;
	s->chunk = -1;
	s->buf_index = -1;
	s->retries = 0;
	s->pos = NULL;
	s->iov = NULL;
	s->iovcnt = 0;
	return s;
}

static void slot_put(struct ur_chan *c, uint32_t idx)
{
	struct ur_slot *s = &c->slots[idx];

	if (s->bounce) {
		if (s->chunk >= 0)
			c->pool_free[c->pool_nfree++] = (uint32_t)s->chunk;
		else
			free(s->bounce);
		s->bounce = NULL;
	}
	s->next = c->free_head;
	c->free_head = idx;
}

/* Result of a request finished without the ring; the eventfd (if any) is
 * signalled so that a caller sleeping on it wakes up. */
static void push_done(struct ur_chan *c, uint64_t id, int res)
{
	struct ub_bdev_cqe *d;

	d = &c->done[(c->done_head + c->done_cnt) & (c->base.depth - 1)];
	d->id = id;
	d->res = res;
	c->done_cnt++;
	c->base.inflight++;
	if (c->efd >= 0 && eventfd_write(c->efd, 1) < 0)
		LOG_WARN("%s: eventfd write: %s", c->base.dev->name,
			 strerror(errno));
}

/* Allocates the bounce pool once and registers it as fixed buffers. */
static void pool_init(struct ur_chan *c)
{
	struct iovec iov[UR_POOL_MAX];
	uint32_t i, n;
	int rc;

	c->pool_tried = true;
	n = c->base.depth < UR_POOL_MAX ? c->base.depth : UR_POOL_MAX;
	c->pool = ub_bdev_buf_alloc((size_t)n * UR_CHUNK);
	if (!c->pool) {
		LOG_WARN("%s: no memory for a bounce pool", c->base.dev->name);
		return;
	}
	c->pool_n = n;
	for (i = 0; i < n; i++) {
		iov[i].iov_base = c->pool + (size_t)i * UR_CHUNK;
		iov[i].iov_len = UR_CHUNK;
		c->pool_free[i] = n - 1 - i;
	}
	c->pool_nfree = n;
	rc = io_uring_register_buffers(&c->ring, iov, n);
	if (rc < 0)
		LOG_DEBUG("%s: bounce pool not registered: %s",
			  c->base.dev->name, strerror(-rc));
	c->pool_reg = rc == 0;
}

/* Gives the slot an aligned buffer of s->total bytes. */
static int bounce_get(struct ur_chan *c, struct ur_slot *s)
{
	if (s->total <= UR_CHUNK) {
		if (!c->pool_tried)
			pool_init(c);
		if (c->pool_nfree) {
			s->chunk = (int)c->pool_free[--c->pool_nfree];
			s->bounce = c->pool + (size_t)s->chunk * UR_CHUNK;
			if (c->pool_reg)
				s->buf_index = s->chunk;
			return 0;
		}
	}
	s->bounce = ub_bdev_buf_alloc(s->total);
	return s->bounce ? 0 : -ENOMEM;
}

/* Copies the caller's iovec array into the slot. */
static int copy_iov(struct ur_slot *s, const struct ub_bdev_req *req)
{
	struct iovec *arr = s->iov_inline;

	if (req->iovcnt > UR_IOV_INLINE) {
		if ((uint32_t)req->iovcnt > s->iov_cap) {
			arr = realloc(s->iov_heap,
				      (size_t)req->iovcnt * sizeof(*arr));
			if (!arr)
				return -ENOMEM;
			s->iov_heap = arr;
			s->iov_cap = (uint32_t)req->iovcnt;
		}
		arr = s->iov_heap;
	}
	memcpy(arr, req->iov, (size_t)req->iovcnt * sizeof(*arr));
	s->iov = arr;
	s->iovcnt = req->iovcnt;
	return 0;
}

/* Prepares the SQE for what is left of slot idx. */
static int prep(struct ur_chan *c, uint32_t idx)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
	struct ur_slot *s = &c->slots[idx];
	bool wr = s->op == UB_BDEV_WRITE;
	unsigned len;

	if (!sqe)
		return -EBUSY;
	switch (s->kind) {
	case UR_FLAT:
		len = s->left < UR_XFER_MAX ? (unsigned)s->left : UR_XFER_MAX;
		if (s->buf_index >= 0 && wr)
			io_uring_prep_write_fixed(sqe, c->file, s->pos, len,
						  s->off, s->buf_index);
		else if (s->buf_index >= 0)
			io_uring_prep_read_fixed(sqe, c->file, s->pos, len,
						 s->off, s->buf_index);
		else if (wr)
			io_uring_prep_write(sqe, c->file, s->pos, len, s->off);
		else
			io_uring_prep_read(sqe, c->file, s->pos, len, s->off);
		break;
	case UR_VEC:
		if (wr)
			io_uring_prep_writev(sqe, c->file, s->iov,
					     (unsigned)s->iovcnt, s->off);
		else
			io_uring_prep_readv(sqe, c->file, s->iov,
					    (unsigned)s->iovcnt, s->off);
		break;
	case UR_FSYNC:
		io_uring_prep_fsync(sqe, c->file, 0);
		break;
	default:
		io_uring_prep_fallocate(sqe, c->file, s->fmode, (off_t)s->off,
					(off_t)s->left);
		break;
	}
	sqe->flags |= (__u8)c->sqe_flags;
	io_uring_sqe_set_data64(sqe, idx);
	return 0;
}

static int queue_rw(struct ur_chan *c, struct ur_slot *s,
		    const struct ub_bdev_req *req)
{
	int rc;

	s->off = req->sector << UB_SECTOR_SHIFT;
	s->total = (size_t)req->count << UB_SECTOR_SHIFT;
	s->left = s->total;
	if (ub_file_iov_direct_ok(c->fdev, req->iov, req->iovcnt)) {
		if (req->iovcnt == 1) {
			s->kind = UR_FLAT;
			s->pos = req->iov[0].iov_base;
			return 0;
		}
		s->kind = UR_VEC;
		return copy_iov(s, req);
	}
	rc = bounce_get(c, s);
	if (rc < 0)
		return rc;
	s->kind = UR_FLAT;
	s->pos = s->bounce;
	if (req->op == UB_BDEV_READ)
		return copy_iov(s, req);
	ub_iov_copy_out(s->bounce, req->iov, req->iovcnt, 0, s->total);
	return 0;
}

/* Requests this channel carries out inside queue: returns 1 when done
 * (result pushed), 0 when the ring must carry it. */
static int queue_inline(struct ur_chan *c, const struct ub_bdev_req *req)
{
	struct ub_file_dev *fdev = c->fdev;
	uint64_t off = req->sector << UB_SECTOR_SHIFT;
	uint64_t len = (uint64_t)req->count << UB_SECTOR_SHIFT;
	int res;

	switch (req->op) {
	case UB_BDEV_FLUSH:
		if (fdev->base.flags & UB_BDEV_F_WRITE_THROUGH) {
			res = 0;
			break;
		}
		if (!c->iopoll)
			return 0;
		do {
			res = fsync(c->fd) < 0 ? -errno : 0;
		} while (res == -EINTR);
		break;
	case UB_BDEV_DISCARD:
		/* BLKDISCARD has no io_uring opcode before URING_CMD. */
		if (!fdev->is_blk)
			return 0;
		res = ub_file_discard(fdev, c->fd, off, len);
		break;
	case UB_BDEV_WRITE_ZEROES:
		if (!c->iopoll)
			return 0;
		res = ub_file_write_zeroes(fdev, c->fd, off, len);
		break;
	default:
		return 0;
	}
	push_done(c, req->id, res);
	return 1;
}

static int ur_queue(struct ub_bdev_chan *ch, const struct ub_bdev_req *req)
{
	struct ur_chan *c = (struct ur_chan *)ch;
	struct ur_slot *s;
	uint32_t idx;
	int rc;

	if (ch->inflight >= ch->depth)
		return -EAGAIN;
	rc = ub_bdev_req_check(ch->dev, req);
	if (rc < 0)
		return rc;
	if (queue_inline(c, req))
		return 0;
	s = slot_get(c, &idx);
	if (!s)
		return -EAGAIN;
	s->id = req->id;
	s->op = (uint8_t)req->op;
	switch (req->op) {
	case UB_BDEV_READ:
	case UB_BDEV_WRITE:
		rc = queue_rw(c, s, req);
		break;
	case UB_BDEV_FLUSH:
		s->kind = UR_FSYNC;
		break;
	default:
		s->kind = UR_FALLOC;
		s->off = req->sector << UB_SECTOR_SHIFT;
		s->left = (size_t)req->count << UB_SECTOR_SHIFT;
		s->total = s->left;
		s->fmode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
		if (req->op == UB_BDEV_WRITE_ZEROES &&
		    (c->fdev->is_blk ||
		     !atomic_load_explicit(&c->fdev->no_zero_range,
					   memory_order_relaxed)))
			s->fmode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
		break;
	}
	if (rc == 0)
		rc = prep(c, idx);
	if (rc < 0) {
		slot_put(c, idx);
		return rc == -EBUSY ? -EAGAIN : rc;
	}
	ch->inflight++;
	return 0;
}

/* Hands every prepared SQE to the kernel. SQEs a failed io_uring_enter
 * leaves in the ring are retried by the next submit or poll. */
static int flush_sq(struct ur_chan *c)
{
	int rc;

	if (!io_uring_sq_ready(&c->ring)) {
		c->need_submit = false;
		return 0;
	}
	rc = io_uring_submit(&c->ring);
	c->need_submit = io_uring_sq_ready(&c->ring) != 0;
	if (rc >= 0 || rc == -EINTR || rc == -EAGAIN || rc == -EBUSY)
		return 0;
	LOG_ERROR("%s: io_uring submit failed: %s", c->base.dev->name,
		  strerror(-rc));
	return rc;
}

static int ur_submit(struct ub_bdev_chan *ch)
{
	return flush_sq((struct ur_chan *)ch);
}

/* Moves the slot past res transferred bytes. */
static void advance(struct ur_slot *s, size_t res)
{
	s->off += res;
	s->left -= res;
	if (s->kind == UR_FLAT) {
		s->pos += res;
		return;
	}
	while (res && s->iovcnt) {
		if (res >= s->iov->iov_len) {
			res -= s->iov->iov_len;
			s->iov++;
			s->iovcnt--;
		} else {
			s->iov->iov_base = (char *)s->iov->iov_base + res;
			s->iov->iov_len -= res;
			res = 0;
		}
	}
}

/* Applies a CQE result to slot s: returns true with *out set when the
 * request is finished, false when what is left must be resubmitted. */
static bool complete(struct ur_chan *c, struct ur_slot *s, int res, int *out)
{
	if (res == -EAGAIN || res == -EINTR) {
		if (++s->retries <= UR_RETRY_MAX)
			return false;
		*out = res;
		return true;
	}
	if (s->kind == UR_FALLOC && res == -EOPNOTSUPP && !c->fdev->is_blk &&
	    (s->fmode & FALLOC_FL_ZERO_RANGE)) {
		/* A punched hole reads back as zeros too. */
		atomic_store_explicit(&c->fdev->no_zero_range, true,
				      memory_order_relaxed);
		s->fmode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
		return false;
	}
	if (res < 0 || s->kind == UR_FSYNC || s->kind == UR_FALLOC) {
		*out = res < 0 ? res : 0;
		return true;
	}
	if (res == 0 || (size_t)res > s->left) {
		/* End of file before the full length (or a write that makes
		 * no progress). */
		*out = -EIO;
		return true;
	}
	s->retries = 0;
	advance(s, (size_t)res);
	if (s->left)
		return false;
	if (s->bounce && s->op == UB_BDEV_READ)
		ub_iov_copy_in(s->iov, s->iovcnt, 0, s->bounce, s->total);
	*out = 0;
	return true;
}

static unsigned ur_poll(struct ub_bdev_chan *ch, struct ub_bdev_cqe *out,
			unsigned max)
{
	struct ur_chan *c = (struct ur_chan *)ch;
	struct io_uring_cqe *cqes[UR_CQE_BATCH];
	bool resubmit = false;
	unsigned n = 0, k, i, want;
	uint32_t idx;
	int res;

	while (n < max && c->done_cnt) {
		out[n++] = c->done[c->done_head];
		c->done_head = (c->done_head + 1) & (ch->depth - 1);
		c->done_cnt--;
	}
	if (c->iopoll && n < max && ch->inflight > c->done_cnt + n)
		io_uring_get_events(&c->ring);
	while (n < max) {
		want = max - n < UR_CQE_BATCH ? max - n : UR_CQE_BATCH;
		k = io_uring_peek_batch_cqe(&c->ring, cqes, want);
		if (!k)
			break;
		for (i = 0; i < k; i++) {
			idx = (uint32_t)io_uring_cqe_get_data64(cqes[i]);
			if (!complete(c, &c->slots[idx], cqes[i]->res, &res)) {
				res = prep(c, idx);
				if (res == 0) {
					resubmit = true;
					continue;
				}
			}
			if (res < 0)
				LOG_DEBUG("%s: request %llu failed: %s",
					  ch->dev->name,
					  (unsigned long long)c->slots[idx].id,
					  strerror(-res));
			out[n].id = c->slots[idx].id;
			out[n].res = res;
			n++;
			slot_put(c, idx);
		}
		io_uring_cq_advance(&c->ring, k);
	}
	if (resubmit || c->need_submit)
		flush_sq(c);
	ch->inflight -= n;
	return n;
}

static int ur_event_fd(struct ub_bdev_chan *ch)
{
	struct ur_chan *c = (struct ur_chan *)ch;
	int rc;

	/* Polled completions never signal: the caller has to poll. */
	if (c->iopoll)
		return -1;
	if (c->efd >= 0)
		return c->efd;
	c->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->efd < 0) {
		LOG_ERROR("%s: eventfd: %s", ch->dev->name, strerror(errno));
		return -1;
	}
	rc = io_uring_register_eventfd(&c->ring, c->efd);
	if (rc < 0) {
		LOG_ERROR("%s: registering the eventfd: %s", ch->dev->name,
			  strerror(-rc));
		close(c->efd);
		c->efd = -1;
		return -1;
	}
	/* Completions already queued must not be missed by a sleeper. */
	if (c->done_cnt || io_uring_cq_ready(&c->ring))
		eventfd_write(c->efd, 1);
	return c->efd;
}

static void ur_close(struct ub_bdev_chan *ch)
{
	struct ur_chan *c = (struct ur_chan *)ch;
	uint32_t i;

	if (c->ring_ok)
		io_uring_queue_exit(&c->ring);
	if (c->efd >= 0)
		close(c->efd);
	if (c->fd >= 0)
		close(c->fd);
	if (c->slots) {
		for (i = 0; i < ch->depth; i++) {
			free(c->slots[i].iov_heap);
			if (c->slots[i].bounce && c->slots[i].chunk < 0)
				free(c->slots[i].bounce);
		}
	}
	free(c->pool);
	free(c->slots);
	free(c->done);
	free(c);
}

static int ring_init(struct ur_chan *c, struct ub_err *err)
{
	unsigned extra = IORING_SETUP_SUBMIT_ALL;
	struct io_uring_params p;
	char os[160];
	int rc;

	for (;;) {
		memset(&p, 0, sizeof(p));
		p.flags = extra | (c->iopoll ? IORING_SETUP_IOPOLL : 0);
		rc = io_uring_queue_init_params(c->base.depth, &c->ring, &p);
		if (rc != -EINVAL)
			break;
		/* Older kernels: drop the optional flags one at a time. */
		if (extra)
			extra = 0;
		else if (c->iopoll)
			c->iopoll = false;
		else
			break;
	}
	if (rc < 0)
		return ub_err_ret(err, rc,
				  "Failed to create io_uring instance: I/O "
				  "error: %s",
				  ub_os_error(-rc, os, sizeof(os)));
	c->ring_ok = true;
	rc = io_uring_register_files(&c->ring, &c->fd, 1);
	if (rc == 0) {
		c->file = 0;
		c->sqe_flags = IOSQE_FIXED_FILE;
	} else {
		LOG_DEBUG("%s: file not registered: %s", c->base.dev->name,
			  strerror(-rc));
		c->file = c->fd;
	}
	return 0;
}

static const struct ub_bdev_chan_ops ur_chan_ops = {
    .queue = ur_queue,
    .submit = ur_submit,
    .poll = ur_poll,
    .event_fd = ur_event_fd,
    .close = ur_close,
};

static int ur_open_chan(struct ub_bdev *dev, struct ub_bdev_chan **out,
			struct ub_err *err)
{
	struct ub_file_dev *fdev = ub_file_dev(dev);
	struct ur_chan *c; /* heap; the caller's until ub_bdev_chan_close */
	uint32_t i;
	int rc;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return ub_err_ret(err, -ENOMEM, "Out of memory");
	c->fd = -1;
	c->efd = -1;
	c->base.ops = &ur_chan_ops;
	c->base.depth = fdev->depth;
	c->base.dev = dev;
	c->fdev = fdev;
	c->iopoll = fdev->iopoll;
	c->slots = calloc(fdev->depth, sizeof(*c->slots));
	c->done = calloc(fdev->depth, sizeof(*c->done));
	if (!c->slots || !c->done) {
		rc = ub_err_ret(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	for (i = 0; i < fdev->depth; i++)
		c->slots[i].next = i + 1 < fdev->depth ? i + 1 : UR_NONE;
	c->free_head = 0;
	c->fd = ub_file_dev_open_fd(fdev, err);
	if (c->fd < 0) {
		rc = c->fd;
		goto fail;
	}
	rc = ring_init(c, err);
	if (rc < 0)
		goto fail;
	c->base.dev = ub_bdev_get(dev);
	*out = &c->base;
	return 0;

fail:
	ur_close(&c->base);
	return rc;
}

static void ur_destroy(struct ub_bdev *dev)
{
	ub_file_dev_free(ub_file_dev(dev));
}

static const struct ub_bdev_ops ur_ops = {
    .open_chan = ur_open_chan,
    .destroy = ur_destroy,
};

int ub_uring_bdev_create(const struct ub_file_bdev_opts *o, unsigned flags,
			 struct ub_bdev **out, struct ub_err *err)
{
	struct ub_file_dev *fdev = NULL; /* heap; handed to *out */
	int rc;

	*out = NULL;
	rc = ub_file_dev_create(o, &ur_ops, "io_uring", flags, &fdev, err);
	if (rc < 0)
		return rc;
	*out = &fdev->base;
	return 0;
}

int ub_uring_bdev_open(const struct ub_file_bdev_opts *o, struct ub_bdev **out,
		       struct ub_err *err)
{
	return ub_uring_bdev_create(o, 0, out, err);
}
