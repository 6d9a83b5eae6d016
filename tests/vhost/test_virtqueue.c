/* Split virtqueue, device side: ring mapping, chain walking (direct,
 * indirect, and every hostile shape: loops, bad indexes, nested or
 * malformed indirect tables, length overflow, chains longer than allowed),
 * used-ring publication across the 16-bit wrap, the EVENT_IDX notify rule
 * and re-arming. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "fake_driver.h"
#include "util/log.h"
#include "vhost/virtqueue.h"

#define MIB (1024ull * 1024)
#define QSZ 16

struct fixture {
	struct ub_guest_mem mem;
	struct fake_guest g;
	struct ub_vq vq;
	struct fake_vring v;
	struct ub_vq_seg seg[64];
	struct ub_vq_chain c;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f)); /* owned by *state */

	if (!f)
		return -1;
	f->g.mem = &f->mem;
	if (fg_add_region(&f->g, 0, MIB) || fg_add_region(&f->g, MIB, MIB) ||
	    fg_add_region(&f->g, 4 * MIB, MIB)) {
		fg_destroy(&f->g);
		ub_guest_mem_clear(&f->mem);
		free(f);
		return -1;
	}
	f->g.next = 0x1000;
	f->g.end = 2 * MIB;
	ub_vq_init(&f->vq, QSZ);
	fv_init(&f->v, &f->g, QSZ, &f->vq);
	if (ub_vq_map(&f->vq, &f->mem)) {
		fg_destroy(&f->g);
		ub_guest_mem_clear(&f->mem);
		free(f);
		return -1;
	}
	f->c.seg = f->seg;
	f->c.cap = 64;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	ub_vq_reset(&f->vq);
	ub_guest_mem_clear(&f->mem);
	fg_destroy(&f->g);
	free(f);
	return 0;
}

static uint64_t efd_count(int fd)
{
	eventfd_t v = 0;

	if (eventfd_read(fd, &v) < 0)
		return 0;
	return v;
}

static int pop(struct fixture *f)
{
	return ub_vq_pop(&f->vq, &f->mem, &f->c);
}

/* A valid one-descriptor chain, published: pops fine. */
static void assert_still_works(struct fixture *f)
{
	struct fbuf b = {0x100, 512, true};
	uint16_t head = fv_add_chain(&f->v, &b, 1);

	fv_publish(&f->v, head);
	assert_int_equal(pop(f), 1);
	assert_int_equal(f->c.head, head);
	assert_int_equal(f->c.nseg, 1);
	assert_int_equal(f->c.seg[0].gpa, 0x100);
	assert_int_equal(pop(f), 0);
}

static void test_map(void **state)
{
	struct fixture *f = *state;
	struct ub_vq vq = f->vq;

	assert_int_equal(ub_vq_map(&vq, &f->mem), 0);
	assert_ptr_equal(vq.desc, ub_guest_mem_ptr(&f->mem, f->v.desc, 1));
	vq.desc_gpa += 8; /* misaligned */
	assert_int_equal(ub_vq_map(&vq, &f->mem), -EFAULT);
	assert_null(vq.desc);
	vq = f->vq;
	vq.used_gpa += 2;
	assert_int_equal(ub_vq_map(&vq, &f->mem), -EFAULT);
	vq = f->vq;
	vq.avail_gpa = 3 * MIB; /* hole */
	assert_int_equal(ub_vq_map(&vq, &f->mem), -EFAULT);
	vq = f->vq;
	vq.size = 12; /* not a power of two */
	assert_int_equal(ub_vq_map(&vq, &f->mem), -EFAULT);
	vq.size = 0;
	assert_int_equal(ub_vq_map(&vq, &f->mem), -EFAULT);
	vq = f->vq;
	vq.addr_set = false;
	assert_int_equal(ub_vq_map(&vq, &f->mem), -EFAULT);
	/* Used ring ending exactly at a region end: fits without the
	 * EVENT_IDX field, not with it (no spanning for rings). */
	vq = f->vq;
	vq.used_gpa = MIB - (4 + 8 * QSZ);
	assert_int_equal(ub_vq_map(&vq, &f->mem), 0);
	vq.event_idx = true;
	assert_int_equal(ub_vq_map(&vq, &f->mem), -EFAULT);
	/* Largest ring size. */
	vq = f->vq;
	vq.size = UB_VQ_MAX_SIZE;
	vq.desc_gpa = 0;
	vq.avail_gpa = 4 * MIB;
	vq.used_gpa = 4 * MIB + 0x20000;
	assert_int_equal(ub_vq_map(&vq, &f->mem), 0);
	vq.size = 0; /* 65536 does not fit in u16 */
	assert_int_equal(ub_vq_map(&vq, &f->mem), -EFAULT);
}

static void test_sync_used_idx(void **state)
{
	struct fixture *f = *state;

	fv_set_used_idx(&f->v, 4242);
	assert_int_equal(ub_vq_sync_used_idx(&f->vq, &f->mem), 0);
	assert_int_equal(f->vq.next_used, 4242);
	f->vq.used_gpa = 3 * MIB;
	assert_int_equal(ub_vq_sync_used_idx(&f->vq, &f->mem), -EFAULT);
}

static void test_pop_direct(void **state)
{
	struct fixture *f = *state;
	struct fbuf b[3] = {
	    {0x100, 16, false}, {0x200, 512, true}, {0x400, 1, true}};
	uint16_t head;

	assert_int_equal(pop(f), 0);
	head = fv_add_chain(&f->v, b, 3);
	fv_publish(&f->v, head);
	assert_int_equal(pop(f), 1);
	assert_int_equal(f->c.head, head);
	assert_int_equal(f->c.nseg, 3);
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(f->seg[i].gpa, b[i].gpa);
		assert_int_equal(f->seg[i].len, b[i].len);
		assert_int_equal(f->seg[i].write, b[i].write);
	}
	assert_int_equal(pop(f), 0);
	assert_int_equal(f->vq.last_avail, 1);
}

static void test_pop_indirect(void **state)
{
	struct fixture *f = *state;
	struct fbuf b[3] = {
	    {0x100, 16, false}, {0x200, 512, true}, {0x400, 1, true}};
	uint16_t head;

	head = fv_add_indirect(&f->v, b, 3);
	fv_publish(&f->v, head);
	assert_int_equal(pop(f), 1);
	assert_int_equal(f->c.nseg, 3);
	assert_int_equal(f->seg[1].len, 512);
	assert_true(f->seg[2].write);
	assert_still_works(f);
}

/* An indirect table straddling two adjacent regions is valid. */
static void test_pop_indirect_spanning(void **state)
{
	struct fixture *f = *state;
	uint64_t table = MIB - 16;
	uint16_t head = 3;

	fv_put_desc(&f->g, table, 0x100, 16, VRING_DESC_F_NEXT, 1);
	fv_put_desc(&f->g, table + 16, 0x400, 1, VRING_DESC_F_WRITE, 0);
	fv_set_desc(&f->v, head, table, 32, VRING_DESC_F_INDIRECT, 0);
	fv_publish(&f->v, head);
	assert_int_equal(pop(f), 1);
	assert_int_equal(f->c.nseg, 2);
	assert_int_equal(f->seg[1].gpa, 0x400);
	assert_still_works(f);
}

/* Hostile: a loop in the main table (0 -> 1 -> 0). */
static void test_loop_direct(void **state)
{
	struct fixture *f = *state;

	fv_set_desc(&f->v, 0, 0x100, 16, VRING_DESC_F_NEXT, 1);
	fv_set_desc(&f->v, 1, 0x200, 16, VRING_DESC_F_NEXT, 0);
	fv_publish(&f->v, 0);
	assert_int_equal(pop(f), -EINVAL);
	assert_int_equal(f->c.head, 0);
	f->v.next_desc = 2;
	assert_still_works(f);
}

/* Hostile: a self-loop inside an indirect table. */
static void test_loop_indirect(void **state)
{
	struct fixture *f = *state;
	uint64_t table = fg_alloc(&f->g, 32, 16);

	fv_put_desc(&f->g, table, 0x100, 16, VRING_DESC_F_NEXT, 1);
	fv_put_desc(&f->g, table + 16, 0x200, 16, VRING_DESC_F_NEXT, 1);
	fv_set_desc(&f->v, 5, table, 32, VRING_DESC_F_INDIRECT, 0);
	fv_publish(&f->v, 5);
	assert_int_equal(pop(f), -EINVAL);
	assert_int_equal(f->c.head, 5);
	assert_still_works(f);
}

/* Hostile: next index >= ring size, in the main and an indirect table. */
static void test_next_out_of_range(void **state)
{
	struct fixture *f = *state;
	uint64_t table = fg_alloc(&f->g, 32, 16);

	fv_set_desc(&f->v, 0, 0x100, 16, VRING_DESC_F_NEXT, QSZ);
	fv_publish(&f->v, 0);
	assert_int_equal(pop(f), -EINVAL);
	fv_put_desc(&f->g, table, 0x100, 16, VRING_DESC_F_NEXT, 2);
	fv_set_desc(&f->v, 1, table, 32, VRING_DESC_F_INDIRECT, 0);
	fv_publish(&f->v, 1);
	assert_int_equal(pop(f), -EINVAL);
	f->v.next_desc = 2;
	assert_still_works(f);
}

/* Hostile: an INDIRECT descriptor inside an indirect table. */
static void test_nested_indirect(void **state)
{
	struct fixture *f = *state;
	uint64_t inner = fg_alloc(&f->g, 16, 16);
	uint64_t outer = fg_alloc(&f->g, 16, 16);

	fv_put_desc(&f->g, inner, 0x100, 16, 0, 0);
	fv_put_desc(&f->g, outer, inner, 16, VRING_DESC_F_INDIRECT, 0);
	fv_set_desc(&f->v, 0, outer, 16, VRING_DESC_F_INDIRECT, 0);
	fv_publish(&f->v, 0);
	assert_int_equal(pop(f), -EINVAL);
	f->v.next_desc = 1;
	assert_still_works(f);
}

/* Hostile: indirect table lengths 0, not a multiple of 16, more than
 * 65535 entries, and a table outside guest memory or running into a
 * hole. */
static void test_bad_indirect_tables(void **state)
{
	struct fixture *f = *state;
	uint64_t table = fg_alloc(&f->g, 64, 16);
	const uint32_t lens[] = {0, 17, 65536u * 16, UINT32_MAX & ~15u};

	fv_put_desc(&f->g, table, 0x100, 16, 0, 0);
	for (unsigned i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		fv_set_desc(&f->v, 0, table, lens[i], VRING_DESC_F_INDIRECT, 0);
		fv_publish(&f->v, 0);
		assert_int_equal(pop(f), -EINVAL);
	}
	fv_set_desc(&f->v, 0, 3 * MIB, 32, VRING_DESC_F_INDIRECT, 0);
	fv_publish(&f->v, 0);
	assert_int_equal(pop(f), -EINVAL);
	/* Address wrapping past 2^64. */
	fv_set_desc(&f->v, 0, UINT64_MAX - 15, 32, VRING_DESC_F_INDIRECT, 0);
	fv_publish(&f->v, 0);
	assert_int_equal(pop(f), -EINVAL);
	/* First entry readable, second in the hole after 2 MiB. */
	fv_put_desc(&f->g, 2 * MIB - 16, 0x100, 16, VRING_DESC_F_NEXT, 1);
	fv_set_desc(&f->v, 0, 2 * MIB - 16, 32, VRING_DESC_F_INDIRECT, 0);
	fv_publish(&f->v, 0);
	assert_int_equal(pop(f), -EINVAL);
	f->v.next_desc = 1;
	assert_still_works(f);
}

/* Hostile: a chain with more descriptors than the caller allows; and a
 * chain using every descriptor of the ring, which is valid. */
static void test_chain_too_long(void **state)
{
	struct fixture *f = *state;
	struct fbuf b[QSZ];
	uint16_t head;

	for (unsigned i = 0; i < QSZ; i++)
		b[i] = (struct fbuf){0x100 + 16 * i, 16, false};
	head = fv_add_chain(&f->v, b, QSZ);
	fv_publish(&f->v, head);
	assert_int_equal(pop(f), 1);
	assert_int_equal(f->c.nseg, QSZ);
	f->c.cap = 4;
	head = fv_add_chain(&f->v, b, 5);
	fv_publish(&f->v, head);
	assert_int_equal(pop(f), -EINVAL);
	head = fv_add_indirect(&f->v, b, 5);
	fv_publish(&f->v, head);
	assert_int_equal(pop(f), -EINVAL);
	f->c.cap = 64;
	assert_still_works(f);
}

/* Hostile: total length beyond 32 bits. */
static void test_length_overflow(void **state)
{
	struct fixture *f = *state;
	struct fbuf b[3] = {{0x100, 0x80000000u, false},
			    {0x200, 0x80000000u, true},
			    {0x300, 1, true}};
	uint16_t head;

	head = fv_add_chain(&f->v, b, 2);
	fv_publish(&f->v, head);
	assert_int_equal(pop(f), -EINVAL);
	b[0].len = UINT32_MAX;
	b[1].len = 0;
	head = fv_add_chain(&f->v, b, 3); /* UINT32_MAX + 0 + 1 */
	fv_publish(&f->v, head);
	assert_int_equal(pop(f), -EINVAL);
	head = fv_add_chain(&f->v, b, 2); /* exactly UINT32_MAX: fine */
	fv_publish(&f->v, head);
	assert_int_equal(pop(f), 1);
	assert_int_equal(f->seg[1].len, 0);
	assert_still_works(f);
}

/* Hostile: head index >= ring size: reported, never pushed. */
static void test_head_out_of_range(void **state)
{
	struct fixture *f = *state;

	fv_publish(&f->v, QSZ);
	assert_int_equal(pop(f), -EINVAL);
	assert_int_equal(f->c.head, QSZ);
	ub_vq_push(&f->vq, f->c.head, 0);
	assert_int_equal(fv_used_idx(&f->v), 0);
	fv_publish(&f->v, 0xffff);
	assert_int_equal(pop(f), -EINVAL);
	assert_still_works(f);
}

/* Hostile: avail->idx more than size ahead breaks the ring for good. */
static void test_avail_idx_jump(void **state)
{
	struct fixture *f = *state;
	int efd = eventfd(0, EFD_NONBLOCK);

	f->vq.err_fd = efd;
	fv_set_avail_idx(&f->v, QSZ + 1);
	assert_int_equal(pop(f), -EIO);
	assert_true(f->vq.broken);
	assert_int_equal(efd_count(efd), 1);
	assert_int_equal(f->vq.last_avail, 0);
	fv_set_avail_idx(&f->v, 1);
	assert_int_equal(pop(f), -EIO);
	assert_false(ub_vq_rearm(&f->vq));
	/* Reset (as the control thread would) serves again. */
	ub_vq_reset(&f->vq);
	fv_init(&f->v, &f->g, QSZ, &f->vq);
	assert_int_equal(ub_vq_map(&f->vq, &f->mem), 0);
	assert_still_works(f);
}

/* Exactly size entries pending is legal. */
static void test_avail_full_ring(void **state)
{
	struct fixture *f = *state;
	struct fbuf b = {0x100, 16, false};

	fv_set_desc(&f->v, 0, b.gpa, b.len, 0, 0);
	for (unsigned i = 0; i < QSZ; i++)
		fv_publish(&f->v, 0);
	for (unsigned i = 0; i < QSZ; i++)
		assert_int_equal(pop(f), 1);
	assert_int_equal(pop(f), 0);
	assert_false(f->vq.broken);
}

/* Zero-length descriptors are yielded as such; an INDIRECT descriptor's
 * NEXT flag is ignored. */
static void test_zero_len_and_indirect_next(void **state)
{
	struct fixture *f = *state;
	uint64_t table = fg_alloc(&f->g, 16, 16);
	struct fbuf b[2] = {{0x100, 0, false}, {0x200, 0, true}};
	uint16_t head = fv_add_chain(&f->v, b, 2);

	fv_publish(&f->v, head);
	assert_int_equal(pop(f), 1);
	assert_int_equal(f->c.nseg, 2);
	fv_put_desc(&f->g, table, 0x300, 8, 0, 0);
	fv_set_desc(&f->v, 9, table, 16,
		    VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 200);
	fv_publish(&f->v, 9);
	assert_int_equal(pop(f), 1);
	assert_int_equal(f->c.nseg, 1);
	assert_int_equal(f->seg[0].gpa, 0x300);
}

/* Used entries across the 16-bit wrap of the indexes. */
static void test_push_wrap(void **state)
{
	struct fixture *f = *state;
	uint32_t id, len;

	f->vq.next_used = 65534;
	fv_set_used_idx(&f->v, 65534);
	for (uint32_t i = 0; i < 4; i++)
		ub_vq_push(&f->vq, (uint16_t)i, 100 + i);
	assert_int_equal(fv_used_idx(&f->v), 2);
	for (uint32_t i = 0; i < 4; i++) {
		assert_true(fv_get_used(&f->v, &id, &len));
		assert_int_equal(id, i);
		assert_int_equal(len, 100 + i);
	}
	assert_false(fv_get_used(&f->v, &id, &len));
	/* And avail wrap: popping at last_avail 65535. */
	f->vq.last_avail = 65535;
	f->v.avail_idx = 65535;
	assert_still_works(f);
	assert_int_equal(f->vq.last_avail, 0);
}

static void test_notify_no_event_idx(void **state)
{
	struct fixture *f = *state;
	int efd = eventfd(0, EFD_NONBLOCK);

	f->vq.call_fd = efd;
	ub_vq_notify(&f->vq);
	assert_int_equal(efd_count(efd), 0);
	ub_vq_push(&f->vq, 1, 0);
	ub_vq_push(&f->vq, 2, 0);
	ub_vq_notify(&f->vq);
	assert_int_equal(efd_count(efd), 1);
	ub_vq_notify(&f->vq);
	assert_int_equal(efd_count(efd), 0);
}

/* vring_need_event: signal iff used_event is in [old, new), mod 2^16. */
static void test_notify_event_idx(void **state)
{
	struct fixture *f = *state;
	int efd = eventfd(0, EFD_NONBLOCK);
	const struct {
		uint16_t old;
		unsigned added;
		uint16_t used_event;
		bool signal;
	} cases[] = {
	    {0, 1, 0, true},	     {0, 1, 1, false},
	    {0, 1, 65535, false},    {10, 5, 10, true},
	    {10, 5, 14, true},	     {10, 5, 15, false},
	    {10, 5, 9, false},	     {65534, 3, 65534, true}, /* new = 1 */
	    {65534, 3, 65535, true}, {65534, 3, 0, true},
	    {65534, 3, 1, false},    {65534, 3, 65533, false},
	    {65535, 1, 65535, true}, /* new = 0 */
	    {65535, 1, 0, false},
	};

	f->vq.call_fd = efd;
	f->vq.event_idx = true;
	assert_int_equal(ub_vq_map(&f->vq, &f->mem), 0);
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		f->vq.next_used = cases[i].old;
		f->vq.added = 0;
		fv_set_used_event(&f->v, cases[i].used_event);
		for (unsigned k = 0; k < cases[i].added; k++)
			ub_vq_push(&f->vq, 0, 0);
		ub_vq_notify(&f->vq);
		assert_int_equal(f->vq.added, 0);
		if (efd_count(efd) != (cases[i].signal ? 1u : 0u))
			fail_msg("case %u: old %u added %u used_event %u", i,
				 cases[i].old, cases[i].added,
				 cases[i].used_event);
	}
}

static void test_rearm(void **state)
{
	struct fixture *f = *state;
	struct fbuf b = {0x100, 16, false};
	uint16_t head = fv_add_chain(&f->v, &b, 1);

	/* Without EVENT_IDX: only the recheck. */
	assert_false(ub_vq_rearm(&f->vq));
	fv_publish(&f->v, head);
	assert_true(ub_vq_rearm(&f->vq));
	assert_int_equal(fv_avail_event(&f->v), 0);
	assert_int_equal(pop(f), 1);
	/* With it: avail_event = last_avail, also across the wrap. */
	f->vq.event_idx = true;
	assert_int_equal(ub_vq_map(&f->vq, &f->mem), 0);
	assert_false(ub_vq_rearm(&f->vq));
	assert_int_equal(fv_avail_event(&f->v), 1);
	f->vq.last_avail = 65535;
	f->v.avail_idx = 65535;
	fv_set_avail_idx(&f->v, 65535);
	assert_false(ub_vq_rearm(&f->vq));
	assert_int_equal(fv_avail_event(&f->v), 65535);
	fv_publish(&f->v, head);
	assert_true(ub_vq_rearm(&f->vq));
	assert_int_equal(pop(f), 1);
	assert_false(ub_vq_rearm(&f->vq));
	assert_int_equal(fv_avail_event(&f->v), 0);
}

static void test_unmapped_queue(void **state)
{
	struct fixture *f = *state;
	struct ub_vq vq;

	ub_vq_init(&vq, QSZ);
	assert_int_equal(vq.kick_fd, -1);
	assert_int_equal(ub_vq_pop(&vq, &f->mem, &f->c), 0);
	ub_vq_push(&vq, 0, 0);
	ub_vq_notify(&vq);
	assert_false(ub_vq_rearm(&vq));
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_map),
	    T(test_sync_used_idx),
	    T(test_pop_direct),
	    T(test_pop_indirect),
	    T(test_pop_indirect_spanning),
	    T(test_loop_direct),
	    T(test_loop_indirect),
	    T(test_next_out_of_range),
	    T(test_nested_indirect),
	    T(test_bad_indirect_tables),
	    T(test_chain_too_long),
	    T(test_length_overflow),
	    T(test_head_out_of_range),
	    T(test_avail_idx_jump),
	    T(test_avail_full_ring),
	    T(test_zero_len_and_indirect_next),
	    T(test_push_wrap),
	    T(test_notify_no_event_idx),
	    T(test_notify_event_idx),
	    T(test_rearm),
	    T(test_unmapped_queue),
	};
#undef T

	ub_log_init("test_virtqueue");
	if (!getenv("UBIBLK_LOG"))
		ub_log_set_level(UB_LOG_OFF);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
