/* Fault injection: wraps any device and fails chosen requests, for tests
 * of every layer above the block devices. Rules are set from the test
 * thread before or between I/O (they are atomics, read by the I/O thread).
 *
 *   fail the Nth read / write / flush / any request (1-based, counted from
 *   when the rule is set) with a chosen errno, once or from then on;
 *   fail every write once more than N bytes have been written (-ENOSPC
 *   style "disk full"). */
#ifndef UB_BDEV_FAULT_H
#define UB_BDEV_FAULT_H

#include <stdbool.h>

#include "bdev/bdev.h"

enum ub_fault_kind {
	UB_FAULT_READ,
	UB_FAULT_WRITE,
	UB_FAULT_FLUSH,
	UB_FAULT_ANY,
};

/* Takes a reference on inner. */
int ub_fault_bdev_wrap(struct ub_bdev *inner, struct ub_bdev **out,
		       struct ub_err *err);
/* The nth request of kind from now fails with -errnum (sticky: that one and
 * every later one). n = 0 disarms. */
void ub_fault_bdev_fail_nth(struct ub_bdev *dev, enum ub_fault_kind kind,
			    uint64_t n, int errnum, bool sticky);
/* Writes fail with -errnum once more than bytes have been written through
 * this device from now on (the failing write writes nothing). */
void ub_fault_bdev_fail_after_bytes(struct ub_bdev *dev, uint64_t bytes,
				    int errnum);
/* Clears every rule. */
void ub_fault_bdev_reset(struct ub_bdev *dev);
/* Requests failed by injection so far. */
uint64_t ub_fault_bdev_injected(struct ub_bdev *dev);

#endif
