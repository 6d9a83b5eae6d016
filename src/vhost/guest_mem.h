/* Guest memory as shared by the front end (vhost-user SET_MEM_TABLE /
 * ADD_MEM_REG): regions of guest-physical address space, each an mmap of a
 * file descriptor the front end sent.
 *
 * Threads: the control thread changes the table only while every queue
 * worker is paused (ub_vq_worker_pause: no I/O in flight), so workers read
 * it without locks or atomics. Every access a worker makes on behalf of the
 * guest goes through these functions, which check the whole range against
 * the table (a range may span adjacent regions; overflow is rejected). */
#ifndef UB_VHOST_GUEST_MEM_H
#define UB_VHOST_GUEST_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "util/err.h"

#define UB_GUEST_MAX_REGIONS 509 /* GET_MAX_MEM_SLOTS */

struct ub_guest_region {
	uint64_t gpa;	      /* guest physical base */
	uint64_t size;	      /* bytes */
	uint64_t user_addr;   /* front-end virtual base (ring translation) */
	uint64_t mmap_offset; /* offset of gpa in the fd */
	unsigned char *host;  /* host address of gpa */
	void *map_base;	      /* what was mmap'ed (page-aligned), owned */
	size_t map_len;
};

struct ub_guest_mem {
	struct ub_guest_region *regions; /* heap, sorted by gpa, nregions */
	unsigned nregions;
};

/* Maps size bytes of fd at mmap_offset (shared, read-write) and inserts the
 * region. Rejects size 0, 64-bit overflow of gpa/user_addr/mmap_offset +
 * size, overlap with an existing region, and a full table. fd stays the
 * caller's (it may close it after this returns). */
int ub_guest_mem_add(struct ub_guest_mem *m, uint64_t gpa, uint64_t size,
		     uint64_t user_addr, uint64_t mmap_offset, int fd,
		     struct ub_err *err);
/* Unmaps and removes the region with exactly this gpa and size. */
int ub_guest_mem_remove(struct ub_guest_mem *m, uint64_t gpa, uint64_t size,
			struct ub_err *err);
/* Unmaps every region. */
void ub_guest_mem_clear(struct ub_guest_mem *m);

/* Front-end virtual address -> guest physical (SET_VRING_ADDR). */
int ub_guest_mem_va_to_gpa(const struct ub_guest_mem *m, uint64_t va,
			   uint64_t *gpa);
/* Host pointer for [gpa, gpa+len) when it lies inside ONE region, else
 * NULL. len 0 is allowed (checks gpa only). */
void *ub_guest_mem_ptr(const struct ub_guest_mem *m, uint64_t gpa,
		       uint64_t len);
/* Host iovecs covering [gpa, gpa+len) (split at region boundaries);
 * returns the count, -EFAULT when not fully mapped, -E2BIG when more than
 * max entries are needed. */
int ub_guest_mem_iov(const struct ub_guest_mem *m, uint64_t gpa, uint64_t len,
		     struct iovec *iov, int max);
/* Copies between guest memory and a host buffer; -EFAULT when the range is
 * not fully mapped (nothing is copied then). */
int ub_guest_mem_read(const struct ub_guest_mem *m, uint64_t gpa, void *dst,
		      size_t len);
int ub_guest_mem_write(const struct ub_guest_mem *m, uint64_t gpa,
		       const void *src, size_t len);

#endif
