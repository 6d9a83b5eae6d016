/* Null device: reads return zeros, writes and flushes succeed and are
 * discarded. Used as an empty stripe source and in benchmarks. */
#ifndef UB_BDEV_NULL_H
#define UB_BDEV_NULL_H

#include "bdev/bdev.h"

int ub_null_bdev_create(uint64_t sectors, struct ub_bdev **out,
			struct ub_err *err);

#endif
