/* A vhost-user-blk device: what the control thread (vhost_user.c, one per
 * connection) and the queue workers (worker.c, one thread per virtqueue)
 * share.
 *
 * Ownership and threads: the device is built per connection by the server
 * over the long-lived exposed block device (it holds a reference). The
 * control thread is the only writer of every field below except each
 * queue's ring indexes, which belong to that queue's worker while it runs.
 * Before touching a queue or the guest memory table, the control thread
 * pauses the workers concerned (ub_vq_worker_pause: returns once the worker
 * is parked with no request in flight) and resumes them afterwards; this
 * hand-off is the only synchronisation, so the I/O path takes no locks. */
#ifndef UB_VHOST_VHOST_DEV_H
#define UB_VHOST_VHOST_DEV_H

#include <stdbool.h>
#include <stdint.h>

#include "bdev/bdev.h"
#include "vhost/guest_mem.h"
#include "vhost/virtqueue.h"

#define UB_VHOST_MAX_QUEUES	  63
#define UB_VIRTIO_BLK_CONFIG_SIZE 60
#define UB_VIRTIO_BLK_ID_BYTES	  20

struct ub_vq_worker;
struct ub_io_tracker;

/* What the device offers and how it serves requests; fixed per process. */
struct ub_vhost_params {
	unsigned num_queues;	  /* 1..63 */
	uint32_t queue_size;	  /* largest ring accepted (power of two) */
	uint32_t seg_size_max;	  /* virtio size_max */
	uint32_t seg_count_max;	  /* virtio seg_max */
	uint64_t poll_timeout_us; /* busy-poll before sleeping */
	const uint32_t *cpus;	  /* cpus[i] for worker i, or NULL */
	/* trackers[i] for queue i (borrowed, outlive every connection), or
	 * NULL: no I/O tracking. */
	struct ub_io_tracker *const *trackers;
	bool write_through;			/* virtio writeback = 0 */
	char device_id[UB_VIRTIO_BLK_ID_BYTES]; /* GET_ID bytes, 0-padded */
};

struct ub_vhost_dev {
	struct ub_vhost_params params;
	struct ub_bdev *bdev; /* exposed device (reference held) */
	uint64_t features;    /* offered virtio features */
	uint64_t acked_features;
	uint64_t protocol_features; /* as set by the front end */
	bool owner_set;
	struct ub_guest_mem mem;
	uint8_t config[UB_VIRTIO_BLK_CONFIG_SIZE]; /* virtio-blk config */
	struct ub_vq vqs[UB_VHOST_MAX_QUEUES];
	struct ub_vq_worker *workers[UB_VHOST_MAX_QUEUES];
};

/* Fills the virtio-blk configuration space (60 bytes, little-endian) and
 * the offered feature set from params and the device capacity/flags.
 * Resets every other field (queues at params->queue_size, no memory, no
 * workers) and takes a reference on bdev. */
void ub_vhost_dev_init(struct ub_vhost_dev *dev,
		       const struct ub_vhost_params *params,
		       struct ub_bdev *bdev);
/* Stops every worker, resets every queue (closing its fds), unmaps the
 * guest memory and drops the reference on bdev taken by init. */
void ub_vhost_dev_fini(struct ub_vhost_dev *dev);

/* Starts worker qidx: opens its own block channel, creates its thread
 * (pinned to params.cpus[qidx] when set), which sleeps until the queue is
 * ready and enabled and its kick fd fires. */
int ub_vq_worker_start(struct ub_vhost_dev *dev, unsigned qidx,
		       struct ub_vq_worker **out, struct ub_err *err);
/* Parks the worker: returns once it has finished its current pass and
 * every request it submitted has completed (and been pushed to the used
 * ring). Idempotent; pairs with ub_vq_worker_resume. */
void ub_vq_worker_pause(struct ub_vq_worker *w);
/* Lets a paused worker run again; it re-reads the queue state (ready,
 * enabled, kick fd, ring addresses, guest memory) before its next pass. */
void ub_vq_worker_resume(struct ub_vq_worker *w);
/* Stops the thread after draining in-flight I/O, closes the channel and
 * frees w; NULL is accepted. */
void ub_vq_worker_stop(struct ub_vq_worker *w);

#endif
