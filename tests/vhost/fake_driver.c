/* Fake virtio driver for the vhost tests (see fake_driver.h). */
#include "fake_driver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define USER_ADDR_OFFSET 0x7f0000000000ull

static void die(const char *what, uint64_t gpa)
{
	fprintf(stderr, "fake driver: %s at gpa 0x%llx\n", what,
		(unsigned long long)gpa);
	abort();
}

int fg_add_region(struct fake_guest *g, uint64_t gpa, uint64_t size)
{
	struct fake_region *r;
	struct ub_err err = {{0}};
	void *p;
	int fd, rc;

	if (g->nr >= FG_MAX_REGIONS)
		return -ENOSPC;
	fd = memfd_create("fake-guest", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0)
		goto err_close;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		goto err_close;
	rc = ub_guest_mem_add(g->mem, gpa, size, gpa + USER_ADDR_OFFSET, 0, fd,
			      &err);
	if (rc < 0) {
		fprintf(stderr, "fake driver: %s\n", err.msg);
		munmap(p, size);
		close(fd);
		return rc;
	}
	r = &g->r[g->nr++];
	r->gpa = gpa;
	r->size = size;
	r->fd = fd;
	r->host = p;
	return 0;

err_close:
	rc = -errno;
	close(fd);
	return rc;
}

void fg_destroy(struct fake_guest *g)
{
	for (unsigned i = 0; i < g->nr; i++) {
		munmap(g->r[i].host, g->r[i].size);
		close(g->r[i].fd);
	}
	g->nr = 0;
}

static struct fake_region *region_of(struct fake_guest *g, uint64_t gpa)
{
	for (unsigned i = 0; i < g->nr; i++)
		if (gpa >= g->r[i].gpa && gpa - g->r[i].gpa < g->r[i].size)
			return &g->r[i];
	return NULL;
}

void *fg_ptr(struct fake_guest *g, uint64_t gpa)
{
	struct fake_region *r = region_of(g, gpa);

	return r ? r->host + (gpa - r->gpa) : NULL;
}

static void copy(struct fake_guest *g, uint64_t gpa, void *buf, size_t len,
		 bool to_guest)
{
	unsigned char *p = buf;

	while (len) {
		struct fake_region *r = region_of(g, gpa);
		size_t n;

		if (!r)
			die("access outside guest memory", gpa);
		n = r->size - (gpa - r->gpa);
		if (n > len)
			n = len;
		if (to_guest)
			memcpy(r->host + (gpa - r->gpa), p, n);
		else
			memcpy(p, r->host + (gpa - r->gpa), n);
		p += n;
		gpa += n;
		len -= n;
	}
}

void fg_write(struct fake_guest *g, uint64_t gpa, const void *src, size_t len)
{
	copy(g, gpa, (void *)src, len, true);
}

void fg_read(struct fake_guest *g, uint64_t gpa, void *dst, size_t len)
{
	copy(g, gpa, dst, len, false);
}

void fg_fill(struct fake_guest *g, uint64_t gpa, int byte, size_t len)
{
	unsigned char buf[256];

	memset(buf, byte, sizeof(buf));
	while (len) {
		size_t n = len < sizeof(buf) ? len : sizeof(buf);

		fg_write(g, gpa, buf, n);
		gpa += n;
		len -= n;
	}
}

uint64_t fg_alloc(struct fake_guest *g, uint64_t len, uint64_t align)
{
	uint64_t at = (g->next + align - 1) & ~(align - 1);

	if (at + len > g->end)
		die("fake guest allocator exhausted", at);
	g->next = at + len;
	return at;
}

static void put16(struct fake_guest *g, uint64_t gpa, uint16_t v)
{
	uint16_t *p = fg_ptr(g, gpa);

	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static uint16_t get16(struct fake_guest *g, uint64_t gpa)
{
	uint16_t *p = fg_ptr(g, gpa);

	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

void fv_init(struct fake_vring *v, struct fake_guest *g, uint16_t size,
	     struct ub_vq *vq)
{
	memset(v, 0, sizeof(*v));
	v->g = g;
	v->size = size;
	v->desc = fg_alloc(g, 16ull * size, 16);
	v->avail = fg_alloc(g, 6 + 2ull * size, 2);
	v->used = fg_alloc(g, 6 + 8ull * size, 4);
	fg_fill(g, v->desc, 0, 16ull * size);
	fg_fill(g, v->avail, 0, 6 + 2ull * size);
	fg_fill(g, v->used, 0, 6 + 8ull * size);
	if (vq) {
		vq->size = size;
		vq->desc_gpa = v->desc;
		vq->avail_gpa = v->avail;
		vq->used_gpa = v->used;
		vq->addr_set = true;
	}
}

void fv_put_desc(struct fake_guest *g, uint64_t gpa, uint64_t addr,
		 uint32_t len, uint16_t flags, uint16_t next)
{
	unsigned char d[16];

	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
	fg_write(g, gpa, d, sizeof(d));
}

void fv_set_desc(struct fake_vring *v, uint16_t idx, uint64_t addr,
		 uint32_t len, uint16_t flags, uint16_t next)
{
	fv_put_desc(v->g, v->desc + 16ull * idx, addr, len, flags, next);
}

uint16_t fv_add_chain(struct fake_vring *v, const struct fbuf *b, unsigned n)
{
	uint16_t head = v->next_desc % v->size;

	for (unsigned i = 0; i < n; i++) {
		uint16_t idx = (uint16_t)((head + i) % v->size);
		uint16_t next = (uint16_t)((idx + 1) % v->size);
		uint16_t flags = (b[i].write ? VRING_DESC_F_WRITE : 0) |
				 (i + 1 < n ? VRING_DESC_F_NEXT : 0);

		fv_set_desc(v, idx, b[i].gpa, b[i].len, flags, next);
	}
	v->next_desc = (uint16_t)((head + n) % v->size);
	return head;
}

uint16_t fv_add_indirect(struct fake_vring *v, const struct fbuf *b, unsigned n)
{
	uint64_t table = fg_alloc(v->g, 16ull * n, 16);
	uint16_t head = v->next_desc % v->size;

	for (unsigned i = 0; i < n; i++) {
		uint16_t flags = (b[i].write ? VRING_DESC_F_WRITE : 0) |
				 (i + 1 < n ? VRING_DESC_F_NEXT : 0);

		fv_put_desc(v->g, table + 16ull * i, b[i].gpa, b[i].len, flags,
			    (uint16_t)(i + 1));
	}
	fv_set_desc(v, head, table, 16u * n, VRING_DESC_F_INDIRECT, 0);
	v->next_desc = (uint16_t)((head + 1) % v->size);
	return head;
}

void fv_set_avail_slot(struct fake_vring *v, uint16_t slot, uint16_t head)
{
	put16(v->g, v->avail + 4 + 2ull * (slot % v->size), head);
}

void fv_set_avail_idx(struct fake_vring *v, uint16_t idx)
{
	v->avail_idx = idx;
	put16(v->g, v->avail + 2, idx);
}

void fv_publish(struct fake_vring *v, uint16_t head)
{
	fv_set_avail_slot(v, v->avail_idx, head);
	fv_set_avail_idx(v, (uint16_t)(v->avail_idx + 1));
}

uint16_t fv_used_idx(struct fake_vring *v)
{
	return get16(v->g, v->used + 2);
}

void fv_set_used_idx(struct fake_vring *v, uint16_t idx)
{
	put16(v->g, v->used + 2, idx);
	v->last_used = idx;
}

bool fv_get_used(struct fake_vring *v, uint32_t *id, uint32_t *len)
{
	uint64_t e;
	uint32_t w[2];

	if (fv_used_idx(v) == v->last_used)
		return false;
	e = v->used + 4 + 8ull * (v->last_used % v->size);
	fg_read(v->g, e, w, sizeof(w));
	*id = w[0];
	*len = w[1];
	v->last_used++;
	return true;
}

void fv_set_used_event(struct fake_vring *v, uint16_t idx)
{
	put16(v->g, v->avail + 4 + 2ull * v->size, idx);
}

uint16_t fv_avail_event(struct fake_vring *v)
{
	return get16(v->g, v->used + 4 + 8ull * v->size);
}

uint16_t fv_add_blk(struct fake_vring *v, uint32_t type, uint64_t sector,
		    uint64_t data, uint32_t len, bool data_write, bool indirect,
		    uint64_t *status_gpa)
{
	uint64_t hdr = fg_alloc(v->g, 16, 8);
	uint64_t st = fg_alloc(v->g, 1, 1);
	unsigned char h[16] = {0};
	struct fbuf b[3];
	unsigned n = 0;

	memcpy(h, &type, 4);
	memcpy(h + 8, &sector, 8);
	fg_write(v->g, hdr, h, sizeof(h));
	fg_fill(v->g, st, 0xff, 1);
	b[n++] = (struct fbuf){hdr, 16, false};
	if (len)
		b[n++] = (struct fbuf){data, len, data_write};
	b[n++] = (struct fbuf){st, 1, true};
	if (status_gpa)
		*status_gpa = st;
	return indirect ? fv_add_indirect(v, b, n) : fv_add_chain(v, b, n);
}

uint8_t fg_status(struct fake_guest *g, uint64_t status_gpa)
{
	uint8_t s;

	fg_read(g, status_gpa, &s, 1);
	return s;
}
