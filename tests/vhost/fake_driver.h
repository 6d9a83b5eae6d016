/* A fake virtio driver for the vhost tests: guest memory made of memfd
 * regions (mapped twice, once by the "driver" here and once by the device
 * through ub_guest_mem_add), a bump allocator of guest-physical space, and
 * a split ring laid out in that memory with helpers to add chains (direct
 * or indirect), publish them, read used entries and play with the
 * EVENT_IDX fields. Every helper that the hostile tests need to abuse has
 * a raw variant. */
#ifndef UB_TESTS_VHOST_FAKE_DRIVER_H
#define UB_TESTS_VHOST_FAKE_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vhost/guest_mem.h"
#include "vhost/virtqueue.h"

#define FG_MAX_REGIONS 4

#define VRING_DESC_F_NEXT     1
#define VRING_DESC_F_WRITE    2
#define VRING_DESC_F_INDIRECT 4

struct fake_region {
	uint64_t gpa, size;
	int fd;		     /* memfd, owned */
	unsigned char *host; /* the driver's own mapping, owned */
};

struct fake_guest {
	struct ub_guest_mem *mem; /* device-side table (not owned) */
	struct fake_region r[FG_MAX_REGIONS];
	unsigned nr;
	uint64_t next, end; /* bump allocator over [next, end) */
};

/* Creates a memfd region at gpa (user_addr = gpa + 0x7f0000000000) and
 * adds it to g->mem. Returns 0 or -errno. */
int fg_add_region(struct fake_guest *g, uint64_t gpa, uint64_t size);
/* Unmaps and closes the driver side (g->mem is the caller's). */
void fg_destroy(struct fake_guest *g);
/* Driver pointer for gpa (inside one region), or NULL. */
void *fg_ptr(struct fake_guest *g, uint64_t gpa);
/* Copies across regions; aborts the test on a hole. */
void fg_write(struct fake_guest *g, uint64_t gpa, const void *src, size_t len);
void fg_read(struct fake_guest *g, uint64_t gpa, void *dst, size_t len);
void fg_fill(struct fake_guest *g, uint64_t gpa, int byte, size_t len);
/* Allocates len bytes aligned to align from [next, end). */
uint64_t fg_alloc(struct fake_guest *g, uint64_t len, uint64_t align);

struct fbuf {
	uint64_t gpa;
	uint32_t len;
	bool write;
};

struct fake_vring {
	struct fake_guest *g;
	uint16_t size;
	uint64_t desc, avail, used; /* guest-physical addresses */
	uint16_t avail_idx;	    /* driver's shadow of avail->idx */
	uint16_t last_used;
	uint16_t next_desc; /* descriptors are handed out round-robin */
};

/* Allocates and zeroes a ring of size entries (with the EVENT_IDX
 * fields) and points vq at it (vq->size, addresses, addr_set). */
void fv_init(struct fake_vring *v, struct fake_guest *g, uint16_t size,
	     struct ub_vq *vq);
/* Raw descriptor writes: main table entry idx / table entry at gpa. */
void fv_set_desc(struct fake_vring *v, uint16_t idx, uint64_t addr,
		 uint32_t len, uint16_t flags, uint16_t next);
void fv_put_desc(struct fake_guest *g, uint64_t gpa, uint64_t addr,
		 uint32_t len, uint16_t flags, uint16_t next);
/* Writes a chain of n direct descriptors; returns its head. */
uint16_t fv_add_chain(struct fake_vring *v, const struct fbuf *b, unsigned n);
/* Writes an indirect table of n entries (allocated) and one main
 * descriptor pointing at it; returns its head. */
uint16_t fv_add_indirect(struct fake_vring *v, const struct fbuf *b,
			 unsigned n);
/* Appends head to the available ring and publishes avail->idx. */
void fv_publish(struct fake_vring *v, uint16_t head);
/* Raw: writes slot (avail_idx) = head without publishing / sets idx. */
void fv_set_avail_slot(struct fake_vring *v, uint16_t slot, uint16_t head);
void fv_set_avail_idx(struct fake_vring *v, uint16_t idx);
/* Next used entry, if any. */
bool fv_get_used(struct fake_vring *v, uint32_t *id, uint32_t *len);
uint16_t fv_used_idx(struct fake_vring *v);
void fv_set_used_idx(struct fake_vring *v, uint16_t idx);
void fv_set_used_event(struct fake_vring *v, uint16_t idx);
uint16_t fv_avail_event(struct fake_vring *v);

/* virtio-blk request helper: header (allocated), optional data buffer,
 * status byte (allocated, preset to 0xff). Returns the head (not yet
 * published); *status_gpa receives the status byte's address. */
uint16_t fv_add_blk(struct fake_vring *v, uint32_t type, uint64_t sector,
		    uint64_t data, uint32_t len, bool data_write, bool indirect,
		    uint64_t *status_gpa);
uint8_t fg_status(struct fake_guest *g, uint64_t status_gpa);

#endif
