/* In-memory device for tests: a zeroed array shared by every channel and
 * clone, with metrics and one-shot fault flags (storage.md §3.5). All
 * operations complete at queue time. */
#ifndef UB_BDEV_MEM_H
#define UB_BDEV_MEM_H

#include "bdev/bdev.h"

struct ub_mem_bdev_metrics {
	uint64_t reads, writes, flushes; /* successful requests */
};

/* bytes must be a multiple of 512. */
int ub_mem_bdev_create(uint64_t bytes, struct ub_bdev **out,
		       struct ub_err *err);
/* The backing array (bytes long), for tests to inspect or fill. */
unsigned char *ub_mem_bdev_data(struct ub_bdev *dev);
struct ub_mem_bdev_metrics ub_mem_bdev_metrics(struct ub_bdev *dev);
/* The next read/write/flush on any channel fails with -EIO. */
void ub_mem_bdev_fail_next(struct ub_bdev *dev);

#endif
