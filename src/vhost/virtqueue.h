/* Split virtqueues (virtio 1.2 §2.7) as a device sees them, hardened
 * against a hostile driver: every index, length and address coming from
 * guest memory is validated before use, descriptor chains are bounded
 * (loops, length overflow, nested indirect tables), and a ring that
 * violates the spec is marked broken instead of trusted.
 *
 * The control thread sets size, addresses and fds while the queue's worker
 * is paused; the worker owns last_avail/next_used and the notification
 * state while it runs. */
#ifndef UB_VHOST_VIRTQUEUE_H
#define UB_VHOST_VIRTQUEUE_H

#include <stdbool.h>
#include <stdint.h>

#include "vhost/guest_mem.h"

#define UB_VQ_MAX_SIZE 32768

/* One guest buffer of a chain, after indirection. */
struct ub_vq_seg {
	uint64_t gpa;
	uint32_t len;
	bool write; /* device-writable */
};

struct ub_vq_chain {
	uint16_t head; /* id to push to the used ring */
	unsigned nseg;
	struct ub_vq_seg *seg; /* caller's array of cap entries */
	unsigned cap;
};

struct ub_vq {
	/* Set by the control thread (worker paused). */
	uint16_t size;	   /* ring size (SET_VRING_NUM) */
	uint64_t desc_gpa; /* SET_VRING_ADDR, translated to guest phys */
	uint64_t avail_gpa;
	uint64_t used_gpa;
	bool addr_set;
	bool ready;   /* started: has a kick fd after SET_VRING_KICK/CALL */
	bool enabled; /* SET_VRING_ENABLE(1), or no PROTOCOL_FEATURES */
	bool event_idx;
	int kick_fd; /* -1 when none; owned */
	int call_fd; /* -1 when none; owned */
	int err_fd;  /* -1 when none; owned */
	/* Ring indexes: control thread sets them at SET_VRING_BASE / ADDR;
	 * the worker advances them. */
	uint16_t last_avail; /* next available-ring slot to read */
	uint16_t next_used;  /* next used-ring slot to write */
	/* Worker state. */
	void *desc, *avail, *used; /* host pointers, set by ub_vq_map */
	uint16_t added;		   /* used entries since last signal check */
	bool broken;		   /* spec violation seen: serve nothing */
};

/* Resets every field (fds to -1) without closing anything. */
void ub_vq_init(struct ub_vq *vq, uint16_t size);
/* Closes the fds the queue owns and resets it (the ring size stays). */
void ub_vq_reset(struct ub_vq *vq);
/* Translates the three ring areas (each must lie inside one region, with
 * the sizes the ring size and event_idx imply, aligned 16/2/4 as §2.7
 * requires; the size a power of two <= UB_VQ_MAX_SIZE). -EFAULT
 * otherwise. */
int ub_vq_map(struct ub_vq *vq, const struct ub_guest_mem *m);
/* Reads used->idx from guest memory into next_used (SET_VRING_ADDR rule). */
int ub_vq_sync_used_idx(struct ub_vq *vq, const struct ub_guest_mem *m);

/* Pops the next available chain into c: 1 = got one, 0 = ring empty,
 * -EINVAL = a chain that cannot be walked (loop, bad index, overflow, bad
 * indirect table, too many segments): c->head is still valid and the
 * caller completes it as malformed; -EIO = the ring itself is corrupt
 * (avail->idx ran more than size ahead): the queue is marked broken. */
int ub_vq_pop(struct ub_vq *vq, const struct ub_guest_mem *m,
	      struct ub_vq_chain *c);
/* Publishes {head, len} in the used ring (release ordering). */
void ub_vq_push(struct ub_vq *vq, uint16_t head, uint32_t len);
/* Signals the call fd if the driver wants an interrupt for what was pushed
 * since the last call (EVENT_IDX rule, or always without it). */
void ub_vq_notify(struct ub_vq *vq);
/* Before sleeping: EVENT_IDX: publish avail_event = last_avail, fence.
 * Returns true when more work arrived meanwhile (do not sleep). */
bool ub_vq_rearm(struct ub_vq *vq);

#endif
