/* Internal to the file-backed engines (file.c, sync.c, uring.c) and their
 * tests: the shared device description and its helpers. */
#ifndef UB_BDEV_FILE_PRIV_H
#define UB_BDEV_FILE_PRIV_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "bdev/file.h"

/* Largest queue_depth an io_uring SQ accepts on current kernels. */
#define UB_FILE_DEPTH_MAX 32768u

/* ub_file_dev_create flags. */
enum {
	/* Tests only: accept character devices as 0-sector devices (e.g. a
	 * flush on /dev/full). */
	UB_FILE_ALLOW_CHAR = 1u << 0,
};

struct ub_file_dev {
	struct ub_bdev base;
	char *path;	    /* heap copy of the configured path */
	int open_flags;	    /* for every channel's open(2) */
	uint32_t depth;	    /* requests in flight per channel */
	uint32_t lbs;	    /* logical block size (512 for regular files) */
	uint32_t mem_align; /* O_DIRECT memory alignment, 1 when buffered */
	uint32_t len_align; /* O_DIRECT length/offset alignment, 1 when
			       buffered */
	bool direct;	    /* channels open with O_DIRECT */
	bool is_blk;	    /* block special file */
	bool is_char;	    /* character device (tests only) */
	bool iopoll;	    /* the queue supports polled I/O (io_uring) */
	/* FALLOC_FL_ZERO_RANGE refused once: punch holes instead. */
	atomic_bool no_zero_range;
};

static inline struct ub_file_dev *ub_file_dev(struct ub_bdev *dev)
{
	return (struct ub_file_dev *)dev;
}

/* Validates the options, inspects the target and fills a new device
 * (refs = 1) whose ops are ops; name is "<prefix>:<path>". */
int ub_file_dev_create(const struct ub_file_bdev_opts *o,
		       const struct ub_bdev_ops *ops, const char *prefix,
		       unsigned flags, struct ub_file_dev **out,
		       struct ub_err *err);
/* Frees what ub_file_dev_create allocated. */
void ub_file_dev_free(struct ub_file_dev *fdev);
/* Opens the target for a new channel; returns the fd or a negative errno
 * (err: "Failed to open file <path>: ..."). */
int ub_file_dev_open_fd(const struct ub_file_dev *fdev, struct ub_err *err);
/* True when the iovecs can go to the kernel as they are (always true
 * without O_DIRECT). */
bool ub_file_iov_direct_ok(const struct ub_file_dev *fdev,
			   const struct iovec *iov, int iovcnt);
/* Synchronous DISCARD / WRITE_ZEROES of len bytes at off on fd: fallocate
 * for regular files, BLKDISCARD / BLKZEROOUT for block devices. */
int ub_file_discard(struct ub_file_dev *fdev, int fd, uint64_t off,
		    uint64_t len);
int ub_file_write_zeroes(struct ub_file_dev *fdev, int fd, uint64_t off,
			 uint64_t len);
/* Copies len bytes starting pos bytes into the iovecs out to dst, or from
 * src into them. */
void ub_iov_copy_out(void *dst, const struct iovec *iov, int iovcnt, size_t pos,
		     size_t len);
void ub_iov_copy_in(const struct iovec *iov, int iovcnt, size_t pos,
		    const void *src, size_t len);

/* The engines' constructors with ub_file_dev_create flags. */
int ub_uring_bdev_create(const struct ub_file_bdev_opts *o, unsigned flags,
			 struct ub_bdev **out, struct ub_err *err);
int ub_sync_bdev_create(const struct ub_file_bdev_opts *o, unsigned flags,
			struct ub_bdev **out, struct ub_err *err);
/* Test-only entry point: ub_file_bdev_open with ub_file_dev_create flags. */
int ub_file_bdev_open_flags(enum ub_io_engine engine,
			    const struct ub_file_bdev_opts *o, unsigned flags,
			    struct ub_bdev **out, struct ub_err *err);

#endif
