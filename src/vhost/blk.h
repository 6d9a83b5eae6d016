/* virtio-blk requests (virtio 1.2 §5.2) of one virtqueue: parse each
 * popped descriptor chain as a virtio-blk request, execute it on the
 * queue's block channel (zero-copy: data descriptors become iovecs into
 * guest memory) and complete it (status byte, used ring, notification).
 *
 * Only the queue's worker thread calls these functions (no locks). The
 * guest is hostile: a request that cannot be served gets IOERR or UNSUPP
 * in its status byte when the chain has a usable status descriptor, and
 * is otherwise completed with used length 0 and no status byte; either
 * way the queue goes on with the next request.
 *
 * Request layout (the reference's, not full ANY_LAYOUT): first descriptor
 * = 16-byte header {u32 type, u32 reserved, u64 sector}, device-readable;
 * last descriptor = status byte, device-writable; those between = data.
 * Used length = bytes the device wrote: the data (IN, GET_ID) when the
 * request succeeds, plus the status byte. */
#ifndef UB_VHOST_BLK_H
#define UB_VHOST_BLK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "bdev/bdev.h"
#include "vhost/vhost_dev.h"

#define VIRTIO_BLK_T_IN		  0
#define VIRTIO_BLK_T_OUT	  1
#define VIRTIO_BLK_T_FLUSH	  4
#define VIRTIO_BLK_T_GET_ID	  8
#define VIRTIO_BLK_T_DISCARD	  11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK	    0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_F_DISCARD	  13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_WZ_FLAG_UNMAP 1u

#define UB_BLK_HDR_SIZE 16
/* Host iovecs one request may use (data split at region boundaries);
 * more -> IOERR. Also the block layer's limit. */
#define UB_BLK_MAX_IOV 1024
/* Descriptors a chain may have at least (header + status + UB_BLK_MAX_IOV
 * data); a larger ring allows as many as its size (§2.7.5.3.1). */
#define UB_BLK_MIN_CHAIN (UB_BLK_MAX_IOV + 2)
/* Largest IN/OUT data length accepted: this, or seg_max * size_max when
 * that is larger (the reference does not enforce seg_max/size_max, and
 * clients such as libblkio exceed them). Bounds the bounce buffers an
 * engine may have to allocate for one request. */
#define UB_BLK_MAX_DATA_MIN (32u << 20)
/* DISCARD / WRITE_ZEROES limits advertised in the configuration space:
 * one segment per request, at most 2^22 sectors (2 GiB) per segment (and
 * never more than the capacity), 4 KiB alignment hint. */
#define UB_BLK_MAX_ZERO_SECTORS	 (1u << 22)
#define UB_BLK_MAX_ZERO_SEG	 1u
#define UB_BLK_DISCARD_ALIGNMENT 8u

static inline uint32_t ub_blk_max_zero_sectors(uint64_t capacity)
{
	return capacity < UB_BLK_MAX_ZERO_SECTORS ? (uint32_t)capacity
						  : UB_BLK_MAX_ZERO_SECTORS;
}

/* Why a chain is not a virtio-blk request (completed with used length 0
 * and no status byte). */
enum ub_blk_parse_err {
	UB_BLK_PARSE_OK = 0,
	UB_BLK_PARSE_BAD_CHAIN,	    /* the ring could not walk it */
	UB_BLK_PARSE_TOO_SHORT,	    /* no header, or no status descriptor */
	UB_BLK_PARSE_WRITE_ONLY,    /* header is device-writable */
	UB_BLK_PARSE_READ_ONLY,	    /* status, or IN data, device-readable */
	UB_BLK_PARSE_LEN_TOO_SMALL, /* header < 16 bytes, status 0 bytes */
	UB_BLK_PARSE_MEM,	    /* header or status outside guest memory */
};

const char *ub_blk_parse_strerror(enum ub_blk_parse_err e);

/* A parsed virtio-blk request. */
struct ub_blk_parsed {
	uint32_t type;
	uint64_t sector;
	unsigned data_first; /* data descriptors: c->seg[data_first...] */
	unsigned data_count;
	uint64_t data_len; /* sum of the data descriptors' lengths */
	uint64_t status_gpa;
	uint8_t *status; /* host address of the status byte */
};

/* Parses chain c (header read once from guest memory). */
enum ub_blk_parse_err ub_blk_parse(const struct ub_guest_mem *m,
				   const struct ub_vq_chain *c,
				   struct ub_blk_parsed *p);

/* Data queued in one pass before the channel is submitted early: small
 * requests are batched into one submission, while large ones (which the
 * crypt device encrypts as they are queued) reach the device while the
 * worker goes on with the next. */
#define UB_BLK_SUBMIT_BATCH_BYTES (128u << 10)

/* Guest-triggered error messages: at most UB_BLK_LOG_BURST per second per
 * queue, then a count of what was suppressed. */
#define UB_BLK_LOG_BURST 5
struct ub_blk_ratelimit {
	uint64_t window_ms;
	unsigned logged;
	unsigned suppressed;
};

/* A request accepted by the block channel (or waiting for room in it). */
struct ub_blk_slot {
	uint8_t *status;   /* status byte in guest memory */
	uint32_t used_len; /* used length if the I/O succeeds */
	uint32_t next_free;
	uint16_t head;
	uint8_t type;
	bool busy;
};

struct ub_blk_queue {
	struct ub_vhost_dev *dev; /* shared; the memory table, config */
	struct ub_vq *vq;	  /* &dev->vqs[qidx] */
	unsigned qidx;
	struct ub_bdev_chan *ch;   /* the worker's channel (not owned) */
	struct ub_io_tracker *trk; /* the queue's tracker, or NULL */
	uint64_t capacity;	   /* sectors */
	uint64_t max_data;	   /* largest IN/OUT data length */
	uint16_t size;		   /* ring size the slots were made for */
	struct ub_blk_slot *slots; /* owned: size entries */
	uint32_t free_head;	   /* UINT32_MAX when every slot is busy */
	uint32_t nbusy;
	struct ub_vq_seg *seg; /* owned: popped chain, seg_cap entries */
	unsigned seg_cap;
	struct iovec iov[UB_BLK_MAX_IOV]; /* the request being queued */
	bool deferred; /* req/deferred_slot wait for -EAGAIN */
	uint32_t deferred_slot;
	struct ub_bdev_req deferred_req; /* iov points into iov[] */
	bool need_submit;
	uint64_t unsubmitted; /* data bytes queued since the last submit */
	struct ub_blk_ratelimit rl;
};

/* Binds q to queue qidx of dev and to channel ch; no ring yet. */
void ub_blk_queue_init(struct ub_blk_queue *q, struct ub_vhost_dev *dev,
		       unsigned qidx, struct ub_bdev_chan *ch);
/* Sizes the request slots and the chain buffer for the ring's current
 * size. Only with nothing in flight (ub_blk_queue_busy false). */
int ub_blk_queue_resize(struct ub_blk_queue *q, struct ub_err *err);
void ub_blk_queue_fini(struct ub_blk_queue *q);

/* One pass: reap completions, retry a deferred request, then (fetch) pop
 * and start every available request (bounded by the free slots and the
 * ring size), submit once, reap again, push the used entries and notify
 * the driver as EVENT_IDX asks. Returns how many requests were popped or
 * completed (0 = no progress). */
unsigned ub_blk_queue_process(struct ub_blk_queue *q, bool fetch);

/* True when a pass could pop a new request now (a slot is free and no
 * request waits for room in the channel). */
static inline bool ub_blk_queue_can_fetch(const struct ub_blk_queue *q)
{
	return q->slots && q->free_head != UINT32_MAX && !q->deferred;
}

/* True while requests are accepted by the channel or deferred. */
static inline bool ub_blk_queue_busy(const struct ub_blk_queue *q)
{
	return q->nbusy != 0;
}

#endif
