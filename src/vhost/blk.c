/* virtio-blk request handling for one virtqueue: parse, execute, complete.
 *
 * Life of a request: ub_vq_pop gives a walked chain; ub_blk_parse checks
 * its structure (malformed -> used length 0, no status byte); then the
 * request is either answered at once (length or range errors, GET_ID,
 * unsupported types, zero-length transfers) or takes a slot and goes to
 * the block channel with the slot index as its id. A slot remembers only
 * what completion needs: the head, the host address of the status byte
 * and the used length. The guest memory table cannot change while a slot
 * is busy (the control thread pauses the worker until nothing is in
 * flight), so the saved host addresses stay valid.
 *
 * Slots: one per ring entry, so a driver that keeps publishing (even the
 * same head again) can never have more requests in flight than its ring
 * size; when every slot is busy, popping stops until completions free
 * some. A request the channel refuses with -EAGAIN keeps its slot and the
 * scratch iovec array, and popping stops until it has been queued. */
#include "vhost/blk.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rpc/io_tracker.h"
#include "util/log.h"

#define NO_SLOT	  UINT32_MAX
#define CQE_BATCH 64

static const char *const parse_errs[] = {
    [UB_BLK_PARSE_OK] = "ok",
    [UB_BLK_PARSE_BAD_CHAIN] = "descriptor chain cannot be walked",
    [UB_BLK_PARSE_TOO_SHORT] = "descriptor chain too short",
    [UB_BLK_PARSE_WRITE_ONLY] = "unexpected write-only descriptor",
    [UB_BLK_PARSE_READ_ONLY] = "unexpected read-only descriptor",
    [UB_BLK_PARSE_LEN_TOO_SMALL] = "descriptor length too small",
    [UB_BLK_PARSE_MEM] = "guest memory error",
};

const char *ub_blk_parse_strerror(enum ub_blk_parse_err e)
{
	if ((unsigned)e >= sizeof(parse_errs) / sizeof(parse_errs[0]))
		return "unknown parse error";
	return parse_errs[e];
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* True when one more guest-triggered message may be logged now. */
static bool ratelimit_ok(struct ub_blk_ratelimit *rl, unsigned qidx)
{
	uint64_t now;

	if (!ub_log_enabled(UB_LOG_ERROR))
		return false;
	now = now_ms();
	if (now - rl->window_ms >= 1000) {
		if (rl->suppressed)
			LOG_ERROR("queue %u: %u similar messages suppressed",
				  qidx, rl->suppressed);
		rl->window_ms = now;
		rl->logged = 0;
		rl->suppressed = 0;
	}
	if (rl->logged < UB_BLK_LOG_BURST) {
		rl->logged++;
		return true;
	}
	rl->suppressed++;
	return false;
}

#define GUEST_ERR(q, fmt, ...)                                                 \
	do {                                                                   \
		if (ratelimit_ok(&(q)->rl, (q)->qidx))                         \
			ub_log(UB_LOG_ERROR, "queue %u: " fmt, (q)->qidx,      \
			       ##__VA_ARGS__);                                 \
	} while (0)

enum ub_blk_parse_err ub_blk_parse(const struct ub_guest_mem *m,
				   const struct ub_vq_chain *c,
				   struct ub_blk_parsed *p)
{
	const struct ub_vq_seg *hdr, *st;
	unsigned char raw[UB_BLK_HDR_SIZE];

	memset(p, 0, sizeof(*p));
	if (c->nseg < 1)
		return UB_BLK_PARSE_TOO_SHORT;
	hdr = &c->seg[0];
	if (hdr->write)
		return UB_BLK_PARSE_WRITE_ONLY;
	if (hdr->len < UB_BLK_HDR_SIZE)
		return UB_BLK_PARSE_LEN_TOO_SMALL;
	if (ub_guest_mem_read(m, hdr->gpa, raw, sizeof(raw)) < 0)
		return UB_BLK_PARSE_MEM;
	memcpy(&p->type, raw, 4);
	memcpy(&p->sector, raw + 8, 8);
	if (c->nseg < 2)
		return UB_BLK_PARSE_TOO_SHORT;
	p->data_first = 1;
	p->data_count = c->nseg - 2;
	for (unsigned i = 1; i < c->nseg - 1; i++) {
		if (p->type == VIRTIO_BLK_T_IN && !c->seg[i].write)
			return UB_BLK_PARSE_READ_ONLY;
		p->data_len += c->seg[i].len;
	}
	st = &c->seg[c->nseg - 1];
	if (!st->write)
		return UB_BLK_PARSE_READ_ONLY;
	if (st->len < 1)
		return UB_BLK_PARSE_LEN_TOO_SMALL;
	p->status = ub_guest_mem_ptr(m, st->gpa, 1);
	if (!p->status)
		return UB_BLK_PARSE_MEM;
	p->status_gpa = st->gpa;
	return UB_BLK_PARSE_OK;
}

void ub_blk_queue_init(struct ub_blk_queue *q, struct ub_vhost_dev *dev,
		       unsigned qidx, struct ub_bdev_chan *ch)
{
	uint64_t segs =
	    (uint64_t)dev->params.seg_count_max * dev->params.seg_size_max;

	memset(q, 0, sizeof(*q));
	q->dev = dev;
	q->vq = &dev->vqs[qidx];
	q->qidx = qidx;
	q->ch = ch;
	q->trk = dev->params.trackers ? dev->params.trackers[qidx] : NULL;
	q->capacity = dev->bdev->sectors;
	q->max_data = segs > UB_BLK_MAX_DATA_MIN ? segs : UB_BLK_MAX_DATA_MIN;
	if (q->max_data > UINT32_MAX)
		q->max_data = UINT32_MAX;
	q->free_head = NO_SLOT;
}

int ub_blk_queue_resize(struct ub_blk_queue *q, struct ub_err *err)
{
	uint16_t size = q->vq->size;
	unsigned cap = size > UB_BLK_MIN_CHAIN ? size : UB_BLK_MIN_CHAIN;
	struct ub_blk_slot *slots; /* owned by q once stored */
	struct ub_vq_seg *seg;	   /* owned by q once stored */

	if (q->nbusy)
		return ub_err_ret(err, -EBUSY,
				  "queue %u: resize with requests in flight",
				  q->qidx);
	if (size == q->size && q->slots)
		return 0;
	if (!size || size > UB_VQ_MAX_SIZE)
		return ub_err_ret(err, -EINVAL, "queue %u: bad ring size %u",
				  q->qidx, size);
	slots = calloc(size, sizeof(*slots));
	if (!slots)
		return ub_err_ret(err, -ENOMEM, "queue %u: out of memory",
				  q->qidx);
	seg = calloc(cap, sizeof(*seg));
	if (!seg) {
		free(slots);
		return ub_err_ret(err, -ENOMEM, "queue %u: out of memory",
				  q->qidx);
	}
	free(q->slots);
	free(q->seg);
	q->slots = slots;
	q->seg = seg;
	q->seg_cap = cap;
	q->size = size;
	for (uint32_t i = 0; i < size; i++)
		slots[i].next_free = i + 1 < size ? i + 1 : NO_SLOT;
	q->free_head = 0;
	return 0;
}

void ub_blk_queue_fini(struct ub_blk_queue *q)
{
	free(q->slots);
	free(q->seg);
	q->slots = NULL;
	q->seg = NULL;
	q->size = 0;
	q->free_head = NO_SLOT;
}

static uint32_t slot_take(struct ub_blk_queue *q)
{
	uint32_t idx = q->free_head;
	struct ub_blk_slot *s;

	if (idx == NO_SLOT)
		return NO_SLOT;
	s = &q->slots[idx];
	q->free_head = s->next_free;
	s->busy = true;
	q->nbusy++;
	return idx;
}

static void slot_put(struct ub_blk_queue *q, uint32_t idx)
{
	struct ub_blk_slot *s = &q->slots[idx];

	s->busy = false;
	if (q->trk)
		ub_io_tracker_clear(q->trk, idx);
	s->next_free = q->free_head;
	q->free_head = idx;
	q->nbusy--;
}

/* Delivers a status: status byte, then the used entry (ub_vq_push stores
 * used->idx with release, so the byte is visible first). */
static void complete(struct ub_blk_queue *q, uint16_t head, uint8_t *status,
		     uint8_t st, uint32_t used_len)
{
	__atomic_store_n(status, st, __ATOMIC_RELAXED);
	ub_vq_push(q->vq, head, used_len);
}

/* Copies len bytes of the request's data descriptors into buf. */
static int read_data(const struct ub_guest_mem *m, const struct ub_vq_chain *c,
		     const struct ub_blk_parsed *p, void *buf, size_t len)
{
	unsigned char *out = buf;

	for (unsigned i = 0; i < p->data_count && len; i++) {
		const struct ub_vq_seg *s = &c->seg[p->data_first + i];
		size_t n = s->len < len ? s->len : len;

		if (ub_guest_mem_read(m, s->gpa, out, n) < 0)
			return -EFAULT;
		out += n;
		len -= n;
	}
	return len ? -EFAULT : 0;
}

/* Builds q->iov from the data descriptors; returns the count or < 0. */
static int build_iov(struct ub_blk_queue *q, const struct ub_vq_chain *c,
		     const struct ub_blk_parsed *p)
{
	int n = 0;

	for (unsigned i = 0; i < p->data_count; i++) {
		const struct ub_vq_seg *s = &c->seg[p->data_first + i];
		int k;

		if (!s->len)
			continue;
		k = ub_guest_mem_iov(&q->dev->mem, s->gpa, s->len, q->iov + n,
				     UB_BLK_MAX_IOV - n);
		if (k < 0)
			return k;
		n += k;
	}
	return n;
}

/* True when [sector, sector+count) lies inside the device. */
static bool range_ok(const struct ub_blk_queue *q, uint64_t sector,
		     uint64_t count)
{
	return count <= q->capacity && sector <= q->capacity - count;
}

/* Submits what the channel holds. */
static void submit(struct ub_blk_queue *q)
{
	int rc;

	q->need_submit = false;
	q->unsubmitted = 0;
	rc = ub_bdev_chan_submit(q->ch);
	if (rc < 0)
		LOG_ERROR("queue %u: submit failed: %s", q->qidx,
			  strerror(-rc));
}

/* Records a request in the queue's tracker when it goes to the device
 * (backends.md §5: counted at submission, so failures count too). DISCARD
 * and WRITE_ZEROES have no tracker kind and are not counted. */
static void track(struct ub_blk_queue *q, uint32_t idx,
		  const struct ub_bdev_req *req)
{
	if (!q->trk)
		return;
	switch (req->op) {
	case UB_BDEV_READ:
		ub_io_tracker_read(q->trk, idx, req->sector, req->count);
		break;
	case UB_BDEV_WRITE:
		ub_io_tracker_write(q->trk, idx, req->sector, req->count);
		break;
	case UB_BDEV_FLUSH:
		ub_io_tracker_flush(q->trk, idx);
		break;
	default:
		break;
	}
}

/* Hands a request to the channel under a fresh slot. Returns the number of
 * requests completed at once (0 or 1). */
static unsigned start_io(struct ub_blk_queue *q, const struct ub_vq_chain *c,
			 const struct ub_blk_parsed *p, struct ub_bdev_req *req,
			 uint32_t used_len)
{
	uint32_t idx = slot_take(q);
	struct ub_blk_slot *s;
	int rc;

	/* Popping stops while no slot is free, so this cannot fail. */
	if (idx == NO_SLOT) {
		complete(q, c->head, p->status, VIRTIO_BLK_S_IOERR, 1);
		return 1;
	}
	s = &q->slots[idx];
	s->status = p->status;
	s->used_len = used_len;
	s->head = c->head;
	s->type = (uint8_t)p->type;
	req->id = idx;
	track(q, idx, req);
	rc = ub_bdev_chan_queue(q->ch, req);
	if (rc == -EAGAIN) {
		q->deferred = true;
		q->deferred_slot = idx;
		q->deferred_req = *req;
		return 0;
	}
	if (rc < 0) {
		GUEST_ERR(q, "request type %u sector %llu refused: %s", p->type,
			  (unsigned long long)p->sector, strerror(-rc));
		complete(q, c->head, p->status,
			 rc == -EOPNOTSUPP ? VIRTIO_BLK_S_UNSUPP
					   : VIRTIO_BLK_S_IOERR,
			 1);
		slot_put(q, idx);
		return 1;
	}
	q->need_submit = true;
	q->unsubmitted += (uint64_t)req->count << UB_SECTOR_SHIFT;
	if (q->unsubmitted >= UB_BLK_SUBMIT_BATCH_BYTES)
		submit(q);
	return 0;
}

static unsigned do_rw(struct ub_blk_queue *q, const struct ub_vq_chain *c,
		      const struct ub_blk_parsed *p)
{
	bool in = p->type == VIRTIO_BLK_T_IN;
	struct ub_bdev_req req = {.op = in ? UB_BDEV_READ : UB_BDEV_WRITE};
	uint64_t count = p->data_len >> UB_SECTOR_SHIFT;
	int n;

	if (p->data_len % UB_SECTOR_SIZE) {
		GUEST_ERR(q, "%s length %llu is not a multiple of 512",
			  in ? "read" : "write",
			  (unsigned long long)p->data_len);
		goto ioerr;
	}
	if (!p->data_len) {
		complete(q, c->head, p->status, VIRTIO_BLK_S_OK, 1);
		return 1;
	}
	if (p->data_len > q->max_data || !range_ok(q, p->sector, count)) {
		GUEST_ERR(q, "%s of %llu bytes at sector %llu out of range",
			  in ? "read" : "write",
			  (unsigned long long)p->data_len,
			  (unsigned long long)p->sector);
		goto ioerr;
	}
	n = build_iov(q, c, p);
	if (n <= 0) {
		GUEST_ERR(q, "%s buffer at sector %llu: %s",
			  in ? "read" : "write", (unsigned long long)p->sector,
			  n == -E2BIG ? "too many segments"
				      : "outside guest memory");
		goto ioerr;
	}
	req.sector = p->sector;
	req.count = (uint32_t)count;
	req.iov = q->iov;
	req.iovcnt = n;
	return start_io(q, c, p, &req, in ? (uint32_t)p->data_len + 1 : 1);

ioerr:
	complete(q, c->head, p->status, VIRTIO_BLK_S_IOERR, 1);
	return 1;
}

static unsigned do_get_id(struct ub_blk_queue *q, const struct ub_vq_chain *c,
			  const struct ub_blk_parsed *p)
{
	const struct ub_vq_seg *s = &c->seg[p->data_first];

	/* Only the first data descriptor is used; it must be writable. */
	if (!p->data_count || !s->write || s->len < UB_VIRTIO_BLK_ID_BYTES ||
	    ub_guest_mem_write(&q->dev->mem, s->gpa, q->dev->params.device_id,
			       UB_VIRTIO_BLK_ID_BYTES) < 0) {
		GUEST_ERR(q, "GET_ID without a writable 20-byte buffer");
		complete(q, c->head, p->status, VIRTIO_BLK_S_IOERR, 1);
		return 1;
	}
	complete(q, c->head, p->status, VIRTIO_BLK_S_OK,
		 UB_VIRTIO_BLK_ID_BYTES + 1);
	return 1;
}

/* DISCARD / WRITE_ZEROES: the data is an array of 16-byte segments
 * {u64 sector, u32 num_sectors, u32 flags}; one segment is supported. */
static unsigned do_zero(struct ub_blk_queue *q, const struct ub_vq_chain *c,
			const struct ub_blk_parsed *p)
{
	bool discard = p->type == VIRTIO_BLK_T_DISCARD;
	uint64_t bit = 1ull << (discard ? VIRTIO_BLK_F_DISCARD
					: VIRTIO_BLK_F_WRITE_ZEROES);
	struct ub_bdev_req req = {.op = discard ? UB_BDEV_DISCARD
						: UB_BDEV_WRITE_ZEROES};
	unsigned char raw[16];
	uint64_t sector;
	uint32_t num, flags;
	uint8_t st = VIRTIO_BLK_S_IOERR;

	if (!(q->dev->features & bit)) {
		st = VIRTIO_BLK_S_UNSUPP;
		goto out;
	}
	if (!p->data_len || p->data_len % sizeof(raw)) {
		GUEST_ERR(q, "%s with %llu bytes of segments",
			  discard ? "discard" : "write-zeroes",
			  (unsigned long long)p->data_len);
		goto out;
	}
	/* Checked before anything is read: a huge segment array costs
	 * nothing. */
	if (p->data_len / sizeof(raw) > UB_BLK_MAX_ZERO_SEG) {
		st = VIRTIO_BLK_S_UNSUPP;
		goto out;
	}
	if (read_data(&q->dev->mem, c, p, raw, sizeof(raw)) < 0) {
		GUEST_ERR(q, "discard segment outside guest memory");
		goto out;
	}
	memcpy(&sector, raw, 8);
	memcpy(&num, raw + 8, 4);
	memcpy(&flags, raw + 12, 4);
	/* Unknown flags, or unmap on a discard: UNSUPP (§5.2.6.2). */
	if ((flags & ~VIRTIO_BLK_WZ_FLAG_UNMAP) ||
	    (discard && (flags & VIRTIO_BLK_WZ_FLAG_UNMAP))) {
		st = VIRTIO_BLK_S_UNSUPP;
		goto out;
	}
	if (num > ub_blk_max_zero_sectors(q->capacity) ||
	    !range_ok(q, sector, num)) {
		GUEST_ERR(q, "%s of %u sectors at %llu out of range",
			  discard ? "discard" : "write-zeroes", num,
			  (unsigned long long)sector);
		goto out;
	}
	if (!num) {
		st = VIRTIO_BLK_S_OK;
		goto out;
	}
	req.sector = sector;
	req.count = num;
	return start_io(q, c, p, &req, 1);

out:
	complete(q, c->head, p->status, st, 1);
	return 1;
}

/* Starts or answers one parsed request; returns how many requests were
 * completed at once (0 or 1). */
static unsigned execute(struct ub_blk_queue *q, const struct ub_vq_chain *c,
			const struct ub_blk_parsed *p)
{
	struct ub_bdev_req req = {.op = UB_BDEV_FLUSH};

	switch (p->type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		return do_rw(q, c, p);
	case VIRTIO_BLK_T_FLUSH:
		if (p->sector) {
			GUEST_ERR(q, "flush with sector %llu",
				  (unsigned long long)p->sector);
			complete(q, c->head, p->status, VIRTIO_BLK_S_IOERR, 1);
			return 1;
		}
		return start_io(q, c, p, &req, 1);
	case VIRTIO_BLK_T_GET_ID:
		return do_get_id(q, c, p);
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		return do_zero(q, c, p);
	default:
		complete(q, c->head, p->status, VIRTIO_BLK_S_UNSUPP, 1);
		return 1;
	}
}

/* Retries the request the channel refused with -EAGAIN; true once it is
 * no longer deferred. */
static bool retry_deferred(struct ub_blk_queue *q)
{
	struct ub_blk_slot *s;
	int rc;

	if (!q->deferred)
		return true;
	rc = ub_bdev_chan_queue(q->ch, &q->deferred_req);
	if (rc == -EAGAIN && q->ch->inflight)
		return false; /* completions will make room */
	q->deferred = false;
	if (rc == 0) {
		q->need_submit = true;
		return true;
	}
	/* Refused for good, or -EAGAIN with nothing in flight that could
	 * ever make room. */
	s = &q->slots[q->deferred_slot];
	GUEST_ERR(q, "request type %u refused by the device: %s", s->type,
		  strerror(-rc));
	complete(q, s->head, s->status, VIRTIO_BLK_S_IOERR, 1);
	slot_put(q, q->deferred_slot);
	return true;
}

/* Completes what the channel reports; returns the count. */
static unsigned reap(struct ub_blk_queue *q)
{
	struct ub_bdev_cqe cqe[CQE_BATCH];
	unsigned total = 0, n;

	do {
		n = ub_bdev_chan_poll(q->ch, cqe, CQE_BATCH);
		for (unsigned i = 0; i < n; i++) {
			struct ub_blk_slot *s;
			uint64_t id = cqe[i].id;

			if (id >= q->size || !q->slots[id].busy ||
			    (q->deferred && id == q->deferred_slot)) {
				LOG_ERROR("queue %u: completion for unknown "
					  "request %llu ignored",
					  q->qidx, (unsigned long long)id);
				continue;
			}
			s = &q->slots[id];
			if (cqe[i].res < 0) {
				GUEST_ERR(q, "request type %u failed: %s",
					  s->type, strerror(-cqe[i].res));
				complete(q, s->head, s->status,
					 VIRTIO_BLK_S_IOERR, 1);
			} else {
				complete(q, s->head, s->status, VIRTIO_BLK_S_OK,
					 s->used_len);
			}
			slot_put(q, (uint32_t)id);
			total++;
		}
	} while (n == CQE_BATCH);
	return total;
}

/* Pops and starts available requests; returns how many were popped. */
static unsigned fetch(struct ub_blk_queue *q)
{
	struct ub_vq_chain c = {.seg = q->seg, .cap = q->seg_cap};
	struct ub_blk_parsed p;
	enum ub_blk_parse_err pe;
	unsigned popped = 0;
	int rc;

	/* Bounded by the ring size, so a driver publishing as fast as the
	 * device consumes cannot keep one pass going forever. */
	while (popped < q->size && q->free_head != NO_SLOT && !q->deferred) {
		rc = ub_vq_pop(q->vq, &q->dev->mem, &c);
		if (rc == 0 || rc == -EIO)
			break;
		popped++;
		pe = rc < 0 ? UB_BLK_PARSE_BAD_CHAIN
			    : ub_blk_parse(&q->dev->mem, &c, &p);
		if (pe != UB_BLK_PARSE_OK) {
			GUEST_ERR(q, "malformed request (head %u): %s", c.head,
				  ub_blk_parse_strerror(pe));
			/* A head outside the ring has no used entry. */
			if (c.head < q->vq->size)
				ub_vq_push(q->vq, c.head, 0);
			continue;
		}
		execute(q, &c, &p);
	}
	return popped;
}

unsigned ub_blk_queue_process(struct ub_blk_queue *q, bool fetch_new)
{
	unsigned progress = 0;

	if (!q->slots)
		return 0;
	progress += reap(q);
	if (q->deferred && retry_deferred(q))
		progress++;
	if (!q->deferred && fetch_new)
		progress += fetch(q);
	if (q->need_submit)
		submit(q);
	progress += reap(q);
	ub_vq_notify(q->vq);
	return progress;
}
