/* Guest memory table: a sorted array of mapped regions, searched by binary
 * search on the guest-physical base. Ranges are checked piecewise: each
 * piece must lie in a region, and the next piece starts exactly where the
 * previous region ends, so a range is accepted across adjacent regions and
 * rejected at the first hole. All arithmetic is done so that it cannot
 * wrap: a range [gpa, gpa+len) whose end overflows 64 bits is rejected. */
#include "vhost/guest_mem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/log.h"

/* Index of the region containing gpa, or -1. */
static int find_region(const struct ub_guest_mem *m, uint64_t gpa)
{
	unsigned lo = 0, hi = m->nregions;

	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		const struct ub_guest_region *r = &m->regions[mid];

		if (gpa < r->gpa)
			hi = mid;
		else if (gpa - r->gpa >= r->size)
			lo = mid + 1;
		else
			return (int)mid;
	}
	return -1;
}

/* True when [a, a+alen) and [b, b+blen) intersect (lengths non-zero, ends
 * known not to overflow). */
static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

int ub_guest_mem_add(struct ub_guest_mem *m, uint64_t gpa, uint64_t size,
		     uint64_t user_addr, uint64_t mmap_offset, int fd,
		     struct ub_err *err)
{
	struct ub_guest_region *regions, *r;
	long page = sysconf(_SC_PAGESIZE);
	uint64_t pgoff, map_off, map_len;
	unsigned i, pos;
	void *base;

	if (page <= 0)
		page = 4096;
	if (!size)
		return ub_err_ret(err, -EINVAL, "memory region of size 0");
	if (gpa + size < gpa || user_addr + size < user_addr ||
	    mmap_offset + size < mmap_offset)
		return ub_err_ret(
		    err, -EINVAL, "memory region 0x%llx+0x%llx overflows",
		    (unsigned long long)gpa, (unsigned long long)size);
	if (m->nregions >= UB_GUEST_MAX_REGIONS)
		return ub_err_ret(err, -ENOSPC,
				  "too many memory regions (at most %u)",
				  UB_GUEST_MAX_REGIONS);
	for (i = 0; i < m->nregions; i++) {
		r = &m->regions[i];
		if (ranges_overlap(gpa, size, r->gpa, r->size))
			return ub_err_ret(err, -EINVAL,
					  "memory region 0x%llx+0x%llx "
					  "overlaps 0x%llx+0x%llx",
					  (unsigned long long)gpa,
					  (unsigned long long)size,
					  (unsigned long long)r->gpa,
					  (unsigned long long)r->size);
	}
	pgoff = mmap_offset & (uint64_t)(page - 1);
	map_off = mmap_offset - pgoff;
	map_len = size + pgoff;
	if (map_len < size || map_len > SIZE_MAX)
		return ub_err_ret(err, -EINVAL, "memory region too large");
	regions = realloc(m->regions, (m->nregions + 1) * sizeof(*regions));
	if (!regions)
		return ub_err_ret(err, -ENOMEM, "out of memory");
	m->regions = regions;
	base = mmap(NULL, (size_t)map_len, PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_NORESERVE, fd, (off_t)map_off);
	if (base == MAP_FAILED)
		return ub_err_ret(err, -errno,
				  "cannot map memory region 0x%llx+0x%llx: %s",
				  (unsigned long long)gpa,
				  (unsigned long long)size, strerror(errno));
	/* Guest memory has no place in a core dump (best effort). */
	madvise(base, (size_t)map_len, MADV_DONTDUMP);
	for (pos = 0; pos < m->nregions && m->regions[pos].gpa < gpa; pos++)
		;
	memmove(&m->regions[pos + 1], &m->regions[pos],
		(m->nregions - pos) * sizeof(*regions));
	r = &m->regions[pos];
	r->gpa = gpa;
	r->size = size;
	r->user_addr = user_addr;
	r->mmap_offset = mmap_offset;
	r->map_base = base;
	r->map_len = (size_t)map_len;
	r->host = (unsigned char *)base + pgoff;
	m->nregions++;
	LOG_DEBUG("guest memory region 0x%llx+0x%llx mapped at %p",
		  (unsigned long long)gpa, (unsigned long long)size,
		  (void *)r->host);
	return 0;
}

int ub_guest_mem_remove(struct ub_guest_mem *m, uint64_t gpa, uint64_t size,
			struct ub_err *err)
{
	for (unsigned i = 0; i < m->nregions; i++) {
		struct ub_guest_region *r = &m->regions[i];

		if (r->gpa != gpa || r->size != size)
			continue;
		munmap(r->map_base, r->map_len);
		memmove(r, r + 1, (m->nregions - i - 1) * sizeof(*r));
		m->nregions--;
		return 0;
	}
	return ub_err_ret(err, -ENOENT, "no memory region 0x%llx+0x%llx",
			  (unsigned long long)gpa, (unsigned long long)size);
}

void ub_guest_mem_clear(struct ub_guest_mem *m)
{
	for (unsigned i = 0; i < m->nregions; i++)
		munmap(m->regions[i].map_base, m->regions[i].map_len);
	free(m->regions);
	m->regions = NULL;
	m->nregions = 0;
}

int ub_guest_mem_va_to_gpa(const struct ub_guest_mem *m, uint64_t va,
			   uint64_t *gpa)
{
	for (unsigned i = 0; i < m->nregions; i++) {
		const struct ub_guest_region *r = &m->regions[i];

		if (va >= r->user_addr && va - r->user_addr < r->size) {
			*gpa = r->gpa + (va - r->user_addr);
			return 0;
		}
	}
	return -EFAULT;
}

void *ub_guest_mem_ptr(const struct ub_guest_mem *m, uint64_t gpa, uint64_t len)
{
	int i = find_region(m, gpa);
	const struct ub_guest_region *r;
	uint64_t off;

	if (i < 0)
		return NULL;
	r = &m->regions[i];
	off = gpa - r->gpa;
	if (len > r->size - off)
		return NULL;
	return r->host + off;
}

int ub_guest_mem_iov(const struct ub_guest_mem *m, uint64_t gpa, uint64_t len,
		     struct iovec *iov, int max)
{
	int n = 0;

	if (gpa + len < gpa)
		return -EFAULT;
	while (len) {
		int i = find_region(m, gpa);
		const struct ub_guest_region *r;
		uint64_t off, chunk;

		if (i < 0)
			return -EFAULT;
		if (n >= max)
			return -E2BIG;
		r = &m->regions[i];
		off = gpa - r->gpa;
		chunk = r->size - off;
		if (chunk > len)
			chunk = len;
		iov[n].iov_base = r->host + off;
		iov[n].iov_len = (size_t)chunk;
		n++;
		gpa += chunk;
		len -= chunk;
	}
	return n;
}

/* Checks that [gpa, gpa+len) is fully mapped. */
static bool range_mapped(const struct ub_guest_mem *m, uint64_t gpa,
			 uint64_t len)
{
	if (gpa + len < gpa)
		return false;
	while (len) {
		int i = find_region(m, gpa);
		uint64_t chunk;

		if (i < 0)
			return false;
		chunk = m->regions[i].size - (gpa - m->regions[i].gpa);
		if (chunk >= len)
			return true;
		gpa += chunk;
		len -= chunk;
	}
	return true;
}

/* Copies len bytes between guest memory at gpa and buf (to_guest selects
 * the direction), after checking the whole range. */
static int copy_guest(const struct ub_guest_mem *m, uint64_t gpa, void *buf,
		      size_t len, bool to_guest)
{
	unsigned char *p = buf;

	if (!range_mapped(m, gpa, len))
		return -EFAULT;
	while (len) {
		const struct ub_guest_region *r =
		    &m->regions[find_region(m, gpa)];
		uint64_t off = gpa - r->gpa;
		size_t chunk = len;

		if (chunk > r->size - off)
			chunk = (size_t)(r->size - off);
		if (to_guest)
			memcpy(r->host + off, p, chunk);
		else
			memcpy(p, r->host + off, chunk);
		p += chunk;
		gpa += chunk;
		len -= chunk;
	}
	return 0;
}

int ub_guest_mem_read(const struct ub_guest_mem *m, uint64_t gpa, void *dst,
		      size_t len)
{
	return copy_guest(m, gpa, dst, len, false);
}

int ub_guest_mem_write(const struct ub_guest_mem *m, uint64_t gpa,
		       const void *src, size_t len)
{
	return copy_guest(m, gpa, (void *)src, len, true);
}
