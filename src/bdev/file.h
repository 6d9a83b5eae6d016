/* File-backed devices: regular files and block devices, through io_uring
 * (the default engine) or plain pread/pwrite ("sync").
 *
 * Capacity: st_size for regular files (must be a multiple of 512:
 * "File size is not a multiple of sector size"), BLKGETSIZE64 for block
 * devices. Each channel opens the file anew (one fd per channel). */
#ifndef UB_BDEV_FILE_H
#define UB_BDEV_FILE_H

#include <stdbool.h>
#include <stdint.h>

#include "bdev/bdev.h"
#include "config/config.h"

struct ub_file_bdev_opts {
	const char *path;     /* borrowed; copied by the constructor */
	bool readonly;	      /* O_RDONLY; writes are rejected (-EROFS) */
	bool direct;	      /* O_DIRECT when the file system accepts it */
	bool write_through;   /* O_DSYNC: every write durable, flush no-op */
	uint32_t queue_depth; /* io_uring entries per channel, power of two
				 1..32768 (sync engine: in-flight limit) */
};

int ub_uring_bdev_open(const struct ub_file_bdev_opts *o, struct ub_bdev **out,
		       struct ub_err *err);
int ub_sync_bdev_open(const struct ub_file_bdev_opts *o, struct ub_bdev **out,
		      struct ub_err *err);
/* Opens with the configured engine. */
int ub_file_bdev_open(enum ub_io_engine engine,
		      const struct ub_file_bdev_opts *o, struct ub_bdev **out,
		      struct ub_err *err);

#endif
