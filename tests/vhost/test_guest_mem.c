/* Guest memory table: region add/remove validation, lookups, ranges that
 * span adjacent regions (valid) or holes (rejected), overflow near 2^64,
 * iovec splitting and its limit, and copies in both directions. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fake_driver.h"
#include "vhost/guest_mem.h"

#define KIB 1024ull
#define MIB (1024ull * 1024)

struct fixture {
	struct ub_guest_mem mem;
	struct fake_guest g;
};

/* Two adjacent 1 MiB regions at 0 and 1 MiB, a third at 4 MiB. */
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
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	ub_guest_mem_clear(&f->mem);
	fg_destroy(&f->g);
	free(f);
	return 0;
}

static int memfd_of(uint64_t size)
{
	int fd = memfd_create("t", MFD_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	return fd;
}

static void test_add_rejects(void **state)
{
	struct fixture *f = *state;
	struct ub_err err = {{0}};
	int fd = memfd_of(MIB);

	assert_int_equal(ub_guest_mem_add(&f->mem, 8 * MIB, 0, 0, 0, fd, &err),
			 -EINVAL);
	assert_int_equal(
	    ub_guest_mem_add(&f->mem, UINT64_MAX - 4095, 8192, 0, 0, fd, &err),
	    -EINVAL);
	assert_int_equal(ub_guest_mem_add(&f->mem, 8 * MIB, 4096,
					  UINT64_MAX - 100, 0, fd, &err),
			 -EINVAL);
	assert_int_equal(ub_guest_mem_add(&f->mem, 8 * MIB, 4096, 0,
					  UINT64_MAX - 100, fd, &err),
			 -EINVAL);
	/* Overlaps: inside, straddling the start, covering. */
	assert_int_equal(
	    ub_guest_mem_add(&f->mem, 512 * KIB, 4096, 0, 0, fd, &err),
	    -EINVAL);
	assert_int_equal(
	    ub_guest_mem_add(&f->mem, 4 * MIB - 4096, 8192, 0, 0, fd, &err),
	    -EINVAL);
	assert_int_equal(
	    ub_guest_mem_add(&f->mem, 3 * MIB, 4 * MIB, 0, 0, fd, &err),
	    -EINVAL);
	/* Bad fd. */
	assert_true(ub_guest_mem_add(&f->mem, 8 * MIB, 4096, 0, 0, -1, &err) <
		    0);
	assert_int_equal(f->mem.nregions, 3);
	close(fd);
}

static void test_table_full(void **state)
{
	struct ub_guest_mem mem = {0};
	struct ub_err err = {{0}};
	int fd = memfd_of(4096);

	(void)state;
	for (unsigned i = 0; i < UB_GUEST_MAX_REGIONS; i++)
		assert_int_equal(ub_guest_mem_add(&mem, 8192ull * i, 4096,
						  8192ull * i, 0, fd, &err),
				 0);
	assert_int_equal(
	    ub_guest_mem_add(&mem, 1ull << 40, 4096, 0, 0, fd, &err), -ENOSPC);
	/* Sorted lookups over the full table. */
	for (unsigned i = 0; i < UB_GUEST_MAX_REGIONS; i++) {
		assert_non_null(ub_guest_mem_ptr(&mem, 8192ull * i + 4095, 1));
		assert_null(ub_guest_mem_ptr(&mem, 8192ull * i + 4096, 1));
	}
	ub_guest_mem_clear(&mem);
	assert_int_equal(mem.nregions, 0);
	close(fd);
}

static void test_add_unsorted_and_offset(void **state)
{
	struct ub_guest_mem mem = {0};
	struct ub_err err = {{0}};
	int fd = memfd_of(3 * 4096);
	unsigned char *p, *drv;

	(void)state;
	assert_int_equal(ub_guest_mem_add(&mem, 0x30000, 4096, 0, 0, fd, &err),
			 0);
	/* mmap_offset not page-aligned: gpa 0x10000 is byte 4196 of fd. */
	assert_int_equal(
	    ub_guest_mem_add(&mem, 0x10000, 4096, 0x5000, 4196, fd, &err), 0);
	assert_int_equal(ub_guest_mem_add(&mem, 0x20000, 4096, 0, 0, fd, &err),
			 0);
	assert_true(mem.regions[0].gpa < mem.regions[1].gpa &&
		    mem.regions[1].gpa < mem.regions[2].gpa);
	drv = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(drv != MAP_FAILED);
	drv[4196] = 0x5a;
	p = ub_guest_mem_ptr(&mem, 0x10000, 1);
	assert_non_null(p);
	assert_int_equal(*p, 0x5a);
	munmap(drv, 3 * 4096);
	ub_guest_mem_clear(&mem);
	close(fd);
}

static void test_remove(void **state)
{
	struct fixture *f = *state;
	struct ub_err err = {{0}};

	assert_int_equal(ub_guest_mem_remove(&f->mem, MIB, 4096, &err),
			 -ENOENT);
	assert_int_equal(ub_guest_mem_remove(&f->mem, MIB + 4096, MIB, &err),
			 -ENOENT);
	assert_int_equal(ub_guest_mem_remove(&f->mem, MIB, MIB, &err), 0);
	assert_int_equal(f->mem.nregions, 2);
	assert_null(ub_guest_mem_ptr(&f->mem, MIB, 1));
	assert_non_null(ub_guest_mem_ptr(&f->mem, 0, 1));
	assert_non_null(ub_guest_mem_ptr(&f->mem, 4 * MIB, 1));
}

static void test_va_to_gpa(void **state)
{
	struct fixture *f = *state;
	uint64_t gpa = 0;

	assert_int_equal(
	    ub_guest_mem_va_to_gpa(&f->mem, 0x7f0000000000ull + MIB + 5, &gpa),
	    0);
	assert_int_equal(gpa, MIB + 5);
	assert_int_equal(
	    ub_guest_mem_va_to_gpa(&f->mem, 0x7f0000000000ull + 3 * MIB, &gpa),
	    -EFAULT);
	assert_int_equal(ub_guest_mem_va_to_gpa(&f->mem, 5, &gpa), -EFAULT);
}

static void test_ptr(void **state)
{
	struct fixture *f = *state;
	unsigned char *p;

	p = ub_guest_mem_ptr(&f->mem, 100, 10);
	assert_non_null(p);
	*p = 7;
	assert_int_equal(*(unsigned char *)fg_ptr(&f->g, 100), 7);
	assert_non_null(ub_guest_mem_ptr(&f->mem, MIB - 1, 1));
	assert_non_null(ub_guest_mem_ptr(&f->mem, MIB - 1, 0));
	assert_non_null(ub_guest_mem_ptr(&f->mem, 0, MIB));
	/* Crossing the end of a region, even into an adjacent one. */
	assert_null(ub_guest_mem_ptr(&f->mem, MIB - 1, 2));
	assert_null(ub_guest_mem_ptr(&f->mem, 2 * MIB - 1, 2));
	assert_null(ub_guest_mem_ptr(&f->mem, 2 * MIB, 0));
	assert_null(ub_guest_mem_ptr(&f->mem, 0, UINT64_MAX));
	assert_null(ub_guest_mem_ptr(&f->mem, UINT64_MAX, 1));
	assert_null(ub_guest_mem_ptr(&f->mem, 4 * MIB + 10, UINT64_MAX - 5));
}

static void test_iov(void **state)
{
	struct fixture *f = *state;
	struct iovec iov[4];

	assert_int_equal(ub_guest_mem_iov(&f->mem, 10, 100, iov, 4), 1);
	assert_int_equal(iov[0].iov_len, 100);
	/* Spanning the two adjacent regions. */
	assert_int_equal(ub_guest_mem_iov(&f->mem, MIB - 10, 30, iov, 4), 2);
	assert_int_equal(iov[0].iov_len, 10);
	assert_int_equal(iov[1].iov_len, 20);
	assert_ptr_equal(iov[1].iov_base, ub_guest_mem_ptr(&f->mem, MIB, 1));
	/* Whole 2 MiB. */
	assert_int_equal(ub_guest_mem_iov(&f->mem, 0, 2 * MIB, iov, 4), 2);
	/* Into the hole after 2 MiB. */
	assert_int_equal(ub_guest_mem_iov(&f->mem, MIB, MIB + 1, iov, 4),
			 -EFAULT);
	assert_int_equal(ub_guest_mem_iov(&f->mem, 3 * MIB, 1, iov, 4),
			 -EFAULT);
	/* Not enough entries. */
	assert_int_equal(ub_guest_mem_iov(&f->mem, MIB - 10, 30, iov, 1),
			 -E2BIG);
	/* Length 0, overflow near 2^64. */
	assert_int_equal(ub_guest_mem_iov(&f->mem, 0, 0, iov, 4), 0);
	assert_int_equal(ub_guest_mem_iov(&f->mem, 16, UINT64_MAX, iov, 4),
			 -EFAULT);
	assert_int_equal(ub_guest_mem_iov(&f->mem, UINT64_MAX - 1, 4, iov, 4),
			 -EFAULT);
}

static void test_read_write(void **state)
{
	struct fixture *f = *state;
	unsigned char buf[64], back[64];

	for (unsigned i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)(i + 1);
	assert_int_equal(ub_guest_mem_write(&f->mem, MIB - 20, buf, 64), 0);
	fg_read(&f->g, MIB - 20, back, 64);
	assert_memory_equal(buf, back, 64);
	memset(back, 0, sizeof(back));
	assert_int_equal(ub_guest_mem_read(&f->mem, MIB - 20, back, 64), 0);
	assert_memory_equal(buf, back, 64);
	/* Across the hole: rejected and nothing copied. */
	fg_fill(&f->g, 2 * MIB - 8, 0xee, 8);
	assert_int_equal(ub_guest_mem_write(&f->mem, 2 * MIB - 8, buf, 64),
			 -EFAULT);
	fg_read(&f->g, 2 * MIB - 8, back, 8);
	for (unsigned i = 0; i < 8; i++)
		assert_int_equal(back[i], 0xee);
	memset(back, 0x11, sizeof(back));
	assert_int_equal(ub_guest_mem_read(&f->mem, 2 * MIB - 8, back, 64),
			 -EFAULT);
	assert_int_equal(back[0], 0x11);
	assert_int_equal(ub_guest_mem_read(&f->mem, UINT64_MAX - 3, back, 8),
			 -EFAULT);
	assert_int_equal(ub_guest_mem_read(&f->mem, 5 * MIB, back, 1), -EFAULT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_add_rejects, setup, teardown),
	    cmocka_unit_test(test_table_full),
	    cmocka_unit_test(test_add_unsorted_and_offset),
	    cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_va_to_gpa, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ptr, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_iov, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_write, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
