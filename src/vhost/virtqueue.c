/* Split virtqueue, device side (virtio 1.2 §2.7).
 *
 * Layouts for a ring of Q entries (little-endian, the host order here):
 *   descriptor table (16-byte aligned): Q x {u64 addr, u32 len, u16 flags,
 *     u16 next};
 *   available ring (2-byte aligned): u16 flags, u16 idx, u16 ring[Q],
 *     u16 used_event (EVENT_IDX);
 *   used ring (4-byte aligned): u16 flags, u16 idx, {u32 id, u32 len}[Q],
 *     u16 avail_event (EVENT_IDX).
 *
 * Guest memory is shared with a driver that may change it at any time, so
 * every value is read exactly once into a local copy (a compiler barrier
 * after the copy keeps the compiler from reading the guest's copy again)
 * and validated before use. Ordering: avail->idx is read with acquire
 * before the ring entries and descriptors it publishes; the used entry is
 * written before used->idx is stored with release; a full fence separates
 * "used->idx written" from "used_event read" and "avail_event written"
 * from "avail->idx read again" (the EVENT_IDX handshakes). */
#include "vhost/virtqueue.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "util/log.h"

#define VRING_DESC_F_NEXT     1
#define VRING_DESC_F_WRITE    2
#define VRING_DESC_F_INDIRECT 4

/* Entries an indirect table may have (its length is a 32-bit byte count;
 * the reference caps it at 65535 entries). */
#define VQ_INDIRECT_MAX 65535u

struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

_Static_assert(sizeof(struct vring_desc) == 16, "descriptor layout");

#define compiler_barrier() __asm__ __volatile__("" ::: "memory")

static uint16_t load_u16(const void *p)
{
	return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED);
}

static uint16_t load_acquire_u16(const void *p)
{
	return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
}

static void store_u16(void *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED);
}

static uint16_t *avail_idx_p(const struct ub_vq *vq)
{
	return (uint16_t *)((unsigned char *)vq->avail + 2);
}

static uint16_t *avail_ring_p(const struct ub_vq *vq, uint16_t slot)
{
	return (uint16_t *)((unsigned char *)vq->avail + 4 + 2u * slot);
}

static uint16_t *used_event_p(const struct ub_vq *vq)
{
	return (uint16_t *)((unsigned char *)vq->avail + 4 + 2u * vq->size);
}

static uint16_t *used_idx_p(const struct ub_vq *vq)
{
	return (uint16_t *)((unsigned char *)vq->used + 2);
}

static uint32_t *used_elem_p(const struct ub_vq *vq, uint16_t slot)
{
	return (uint32_t *)((unsigned char *)vq->used + 4 + 8u * slot);
}

static uint16_t *avail_event_p(const struct ub_vq *vq)
{
	return (uint16_t *)((unsigned char *)vq->used + 4 + 8u * vq->size);
}

void ub_vq_init(struct ub_vq *vq, uint16_t size)
{
	memset(vq, 0, sizeof(*vq));
	vq->size = size;
	vq->kick_fd = -1;
	vq->call_fd = -1;
	vq->err_fd = -1;
}

void ub_vq_reset(struct ub_vq *vq)
{
	if (vq->kick_fd >= 0)
		close(vq->kick_fd);
	if (vq->call_fd >= 0)
		close(vq->call_fd);
	if (vq->err_fd >= 0)
		close(vq->err_fd);
	/* The negotiated ring size stays; everything else starts over. */
	ub_vq_init(vq, vq->size);
}

static bool size_valid(uint16_t size)
{
	return size && size <= UB_VQ_MAX_SIZE && !(size & (size - 1));
}

int ub_vq_map(struct ub_vq *vq, const struct ub_guest_mem *m)
{
	uint64_t ev = vq->event_idx ? 2 : 0;
	void *desc, *avail, *used;

	vq->desc = vq->avail = vq->used = NULL;
	if (!vq->addr_set || !size_valid(vq->size))
		return -EFAULT;
	/* Misaligned rings violate §2.7 (alignment table); refusing them
	 * keeps every ring access naturally aligned. */
	if ((vq->desc_gpa & 15) || (vq->avail_gpa & 1) || (vq->used_gpa & 3))
		return -EFAULT;
	desc = ub_guest_mem_ptr(m, vq->desc_gpa, 16ull * vq->size);
	avail = ub_guest_mem_ptr(m, vq->avail_gpa, 4 + 2ull * vq->size + ev);
	used = ub_guest_mem_ptr(m, vq->used_gpa, 4 + 8ull * vq->size + ev);
	if (!desc || !avail || !used)
		return -EFAULT;
	vq->desc = desc;
	vq->avail = avail;
	vq->used = used;
	return 0;
}

int ub_vq_sync_used_idx(struct ub_vq *vq, const struct ub_guest_mem *m)
{
	uint16_t idx;

	if (ub_guest_mem_read(m, vq->used_gpa + 2, &idx, sizeof(idx)) < 0)
		return -EFAULT;
	vq->next_used = idx;
	return 0;
}

/* Marks the ring broken ("device needs reset") and tells the front end
 * through the error fd. */
static void vq_break(struct ub_vq *vq, const char *why, unsigned a, unsigned b)
{
	vq->broken = true;
	LOG_ERROR("virtqueue broken: %s (%u, %u); the queue is no longer "
		  "served until it is reset",
		  why, a, b);
	if (vq->err_fd >= 0 && eventfd_write(vq->err_fd, 1) < 0)
		LOG_WARN("cannot signal the virtqueue error fd");
}

/* Reads entry idx of a descriptor table: in place when the table lies in
 * one region (host), else through the range-checked copy. */
static int read_desc(const struct ub_guest_mem *m, const unsigned char *host,
		     uint64_t gpa, uint32_t idx, struct vring_desc *d)
{
	if (host) {
		memcpy(d, host + 16u * idx, sizeof(*d));
		compiler_barrier();
		return 0;
	}
	return ub_guest_mem_read(m, gpa + 16ull * idx, d, sizeof(*d));
}

/* Walks the chain starting at c->head into c->seg. Every descriptor visit
 * is charged to a budget (the table's entry count), so a loop ends the
 * walk after at most Q + 65535 reads. */
static int walk_chain(const struct ub_vq *vq, const struct ub_guest_mem *m,
		      struct ub_vq_chain *c)
{
	const unsigned char *table = vq->desc;
	uint64_t table_gpa = 0, total = 0;
	uint32_t nentries = vq->size, budget = vq->size;
	bool indirect = false;
	uint32_t idx = c->head;
	struct vring_desc d;

	for (;;) {
		if (idx >= nentries)
			return -EINVAL; /* index outside the table */
		if (!budget--)
			return -EINVAL; /* loop, or chain longer than table */
		if (read_desc(m, table, table_gpa, idx, &d) < 0)
			return -EINVAL; /* table entry outside guest memory */
		if (d.flags & VRING_DESC_F_INDIRECT) {
			/* One table per chain, never nested; the INDIRECT
			 * descriptor's own WRITE and NEXT flags are
			 * ignored (§2.7.5.3.2). */
			if (indirect)
				return -EINVAL;
			if (!d.len || d.len % 16 ||
			    d.len / 16 > VQ_INDIRECT_MAX ||
			    d.addr + d.len < d.addr)
				return -EINVAL;
			indirect = true;
			nentries = budget = d.len / 16;
			table_gpa = d.addr;
			/* NULL when the table is not inside one region: its
			 * entries are then copied one by one, and one
			 * outside guest memory ends the chain. */
			table = ub_guest_mem_ptr(m, d.addr, d.len);
			idx = 0;
			continue;
		}
		if (c->nseg >= c->cap)
			return -EINVAL;
		total += d.len;
		if (total > UINT32_MAX)
			return -EINVAL;
		c->seg[c->nseg].gpa = d.addr;
		c->seg[c->nseg].len = d.len;
		c->seg[c->nseg].write = d.flags & VRING_DESC_F_WRITE;
		c->nseg++;
		if (!(d.flags & VRING_DESC_F_NEXT))
			return 0;
		idx = d.next;
	}
}

int ub_vq_pop(struct ub_vq *vq, const struct ub_guest_mem *m,
	      struct ub_vq_chain *c)
{
	uint16_t avail_idx, pending, head;

	c->nseg = 0;
	if (vq->broken)
		return -EIO;
	if (!vq->desc || !vq->avail || !vq->used)
		return 0;
	avail_idx = load_acquire_u16(avail_idx_p(vq));
	pending = (uint16_t)(avail_idx - vq->last_avail);
	if (!pending)
		return 0;
	if (pending > vq->size) {
		vq_break(vq, "available index ran ahead of the ring", avail_idx,
			 vq->last_avail);
		return -EIO;
	}
	head = load_u16(avail_ring_p(vq, vq->last_avail & (vq->size - 1)));
	vq->last_avail++;
	c->head = head;
	if (head >= vq->size)
		return -EINVAL;
	return walk_chain(vq, m, c) < 0 ? -EINVAL : 1;
}

void ub_vq_push(struct ub_vq *vq, uint16_t head, uint32_t len)
{
	uint32_t *elem;

	if (!vq->used)
		return;
	if (head >= vq->size) {
		LOG_ERROR("virtqueue: not completing head %u of a ring of %u",
			  head, vq->size);
		return;
	}
	elem = used_elem_p(vq, vq->next_used & (vq->size - 1));
	__atomic_store_n(&elem[0], (uint32_t)head, __ATOMIC_RELAXED);
	__atomic_store_n(&elem[1], len, __ATOMIC_RELAXED);
	vq->next_used++;
	__atomic_store_n(used_idx_p(vq), vq->next_used, __ATOMIC_RELEASE);
	if (vq->added < UINT16_MAX)
		vq->added++;
}

void ub_vq_notify(struct ub_vq *vq)
{
	uint16_t used_event, new_idx, old_idx;

	if (!vq->added || !vq->avail)
		return;
	if (vq->event_idx) {
		/* used->idx must be visible before used_event is read, or a
		 * driver re-enabling interrupts meanwhile is missed. */
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		used_event = load_u16(used_event_p(vq));
		new_idx = vq->next_used;
		old_idx = (uint16_t)(new_idx - vq->added);
		vq->added = 0;
		/* Signal iff used_event lies in [old, new). */
		if ((uint16_t)(new_idx - used_event - 1) >=
		    (uint16_t)(new_idx - old_idx))
			return;
	} else {
		vq->added = 0;
	}
	if (vq->call_fd >= 0 && eventfd_write(vq->call_fd, 1) < 0)
		LOG_WARN("virtqueue: cannot signal the call fd");
}

bool ub_vq_rearm(struct ub_vq *vq)
{
	if (vq->broken || !vq->avail || !vq->used)
		return false;
	if (vq->event_idx) {
		store_u16(avail_event_p(vq), vq->last_avail);
		/* avail_event must be visible before avail->idx is read
		 * again, or a driver publishing meanwhile skips the kick. */
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
	}
	return load_acquire_u16(avail_idx_p(vq)) != vq->last_avail;
}
