/* File-backed devices: what the io_uring and sync engines share. The target
 * is inspected once at construction (type, capacity, O_DIRECT support and
 * alignment, discard support); every channel then opens it anew. */
#include "bdev/file_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "util/fileio.h"
#include "util/log.h"

/* Length of the fallocate probe that tells whether holes can be punched. */
#define PROBE_LEN 4096u

static int os_err(struct ub_err *err, int e, const char *path)
{
	char os[160];

	return ub_err_ret(err, -e, "Failed to open file %s: I/O error: %s",
			  path, ub_os_error(e, os, sizeof(os)));
}

/* Reads an unsigned number from the block queue attribute attr of the
 * device dev (or of its parent disk, for a partition). */
static int read_queue_attr(dev_t dev, const char *attr, uint64_t *val)
{
	static const char *const fmt[] = {"/sys/dev/block/%u:%u/queue/%s",
					  "/sys/dev/block/%u:%u/../queue/%s"};
	char path[128], buf[32];
	size_t i;
	ssize_t n;
	int fd;

	for (i = 0; i < sizeof(fmt) / sizeof(fmt[0]); i++) {
		snprintf(path, sizeof(path), fmt[i], major(dev), minor(dev),
			 attr);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		*val = strtoull(buf, NULL, 10);
		return 0;
	}
	return -ENOENT;
}

/* Opens the target for the construction-time probes; falls back to
 * buffered I/O when the file system refuses O_DIRECT. */
static int probe_open(struct ub_file_dev *fdev, bool want_direct,
		      struct ub_err *err)
{
	int fd;

	if (want_direct) {
		fd = open(fdev->path, fdev->open_flags | O_DIRECT);
		if (fd >= 0) {
			fdev->open_flags |= O_DIRECT;
			fdev->direct = true;
			return fd;
		}
		if (errno != EINVAL)
			return os_err(err, errno, fdev->path);
		LOG_INFO("%s: O_DIRECT is not supported here, using buffered "
			 "I/O",
			 fdev->path);
	}
	fd = open(fdev->path, fdev->open_flags);
	if (fd < 0)
		return os_err(err, errno, fdev->path);
	return fd;
}

/* Memory and length alignment O_DIRECT needs on fd. */
static void probe_dio_align(struct ub_file_dev *fdev, int fd)
{
	struct statx stx;

	fdev->mem_align = 1;
	fdev->len_align = 1;
	if (!fdev->direct)
		return;
	fdev->mem_align = fdev->lbs;
	fdev->len_align = fdev->lbs;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
	    (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_mem_align &&
	    stx.stx_dio_offset_align) {
		fdev->mem_align = stx.stx_dio_mem_align;
		fdev->len_align = stx.stx_dio_offset_align;
	}
	if (fdev->len_align > UB_SECTOR_SIZE)
		LOG_WARN("%s: direct I/O needs %u-byte alignment; requests "
			 "not aligned to it will fail",
			 fdev->path, fdev->len_align);
}

static int probe_blk(struct ub_file_dev *fdev, int fd, const struct stat *st,
		     uint64_t *bytes, struct ub_err *err)
{
	uint64_t val = 0;
	int lbs = 0;

	if (ioctl(fd, BLKGETSIZE64, bytes) < 0)
		return ub_err_ret(err, -errno,
				  "%s: cannot read the block device size: %s",
				  fdev->path, strerror(errno));
	if (ioctl(fd, BLKSSZGET, &lbs) < 0 || lbs < (int)UB_SECTOR_SIZE)
		lbs = UB_SECTOR_SIZE;
	fdev->lbs = (uint32_t)lbs;
	fdev->base.flags |= UB_BDEV_F_WRITE_ZEROES;
	if (read_queue_attr(st->st_rdev, "discard_max_bytes", &val) == 0 && val)
		fdev->base.flags |= UB_BDEV_F_DISCARD;
	if (fdev->direct &&
	    read_queue_attr(st->st_rdev, "io_poll", &val) == 0 && val == 1)
		fdev->iopoll = true;
	return 0;
}

/* Punching a hole past the end of the file changes nothing and tells
 * whether the file system can deallocate ranges at all. */
static void probe_punch(struct ub_file_dev *fdev, int fd, uint64_t size)
{
	uint64_t off = (size + PROBE_LEN - 1) & ~(uint64_t)(PROBE_LEN - 1);

	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, PROBE_LEN) == 0) {
		fdev->base.flags |= UB_BDEV_F_DISCARD | UB_BDEV_F_WRITE_ZEROES;
		return;
	}
	LOG_DEBUG("%s: no discard / write-zeroes: %s", fdev->path,
		  strerror(errno));
}

static int check_depth(uint32_t depth, struct ub_err *err)
{
	if (depth == 0 || (depth & (depth - 1)))
		return ub_err_ret(err, -EINVAL,
				  "queue_size must be a positive power of two");
	if (depth > UB_FILE_DEPTH_MAX)
		return ub_err_ret(err, -EINVAL,
				  "Invalid io_uring queue size %u (at most "
				  "%u)",
				  depth, UB_FILE_DEPTH_MAX);
	return 0;
}

int ub_file_dev_create(const struct ub_file_bdev_opts *o,
		       const struct ub_bdev_ops *ops, const char *prefix,
		       unsigned flags, struct ub_file_dev **out,
		       struct ub_err *err)
{
	struct ub_file_dev *fdev; /* heap; owned by the caller on success */
	char name[sizeof(fdev->base.name)];
	uint64_t bytes = 0;
	struct stat st;
	int fd = -1, rc;

	*out = NULL;
	if (!o || !o->path || !o->path[0])
		return ub_err_ret(err, -EINVAL, "No device path given");
	rc = check_depth(o->queue_depth, err);
	if (rc < 0)
		return rc;
	fdev = calloc(1, sizeof(*fdev));
	if (!fdev)
		return ub_err_ret(err, -ENOMEM, "Out of memory");
	fdev->path = strdup(o->path);
	if (!fdev->path) {
		rc = ub_err_ret(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	fdev->depth = o->queue_depth;
	fdev->lbs = UB_SECTOR_SIZE;
	fdev->open_flags = (o->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	if (o->write_through)
		fdev->open_flags |= O_DSYNC;
	atomic_init(&fdev->no_zero_range, false);
	snprintf(name, sizeof(name), "%s:%s", prefix, o->path);
	ub_bdev_init(&fdev->base, ops, 0, 0, name);
	if (o->readonly)
		fdev->base.flags |= UB_BDEV_F_READONLY;
	if (o->write_through)
		fdev->base.flags |= UB_BDEV_F_WRITE_THROUGH;

	/* The type is checked before open(2): opening a FIFO would block. */
	if (stat(o->path, &st) < 0) {
		rc = os_err(err, errno, o->path);
		goto fail;
	}
	if (S_ISBLK(st.st_mode)) {
		fdev->is_blk = true;
	} else if (S_ISCHR(st.st_mode) && (flags & UB_FILE_ALLOW_CHAR)) {
		fdev->is_char = true;
	} else if (!S_ISREG(st.st_mode)) {
		rc = ub_err_ret(err, -EINVAL,
				"%s is not a regular file or a block device",
				o->path);
		goto fail;
	}
	fd = probe_open(fdev, o->direct, err);
	if (fd < 0) {
		rc = fd;
		goto fail;
	}
	if (fstat(fd, &st) < 0) {
		rc = os_err(err, errno, o->path);
		goto fail;
	}
	if (fdev->is_blk) {
		rc = probe_blk(fdev, fd, &st, &bytes, err);
		if (rc < 0)
			goto fail;
	} else if (fdev->is_char) {
		bytes = 0;
	} else {
		bytes = (uint64_t)st.st_size;
		if (bytes % UB_SECTOR_SIZE) {
			rc = ub_err_ret(err, -EINVAL,
					"File size is not a multiple of sector "
					"size: %s is %" PRIu64 " bytes",
					o->path, bytes);
			goto fail;
		}
		if (!o->readonly)
			probe_punch(fdev, fd, bytes);
	}
	if (o->readonly)
		fdev->base.flags &=
		    ~(uint32_t)(UB_BDEV_F_DISCARD | UB_BDEV_F_WRITE_ZEROES);
	probe_dio_align(fdev, fd);
	fdev->base.sectors = bytes >> UB_SECTOR_SHIFT;
	close(fd);
	LOG_DEBUG("%s: %" PRIu64 " sectors, direct %d (align %u/%u), flags "
		  "0x%x, iopoll %d",
		  fdev->base.name, fdev->base.sectors, fdev->direct,
		  fdev->mem_align, fdev->len_align, fdev->base.flags,
		  fdev->iopoll);
	*out = fdev;
	return 0;

fail:
	if (fd >= 0)
		close(fd);
	ub_file_dev_free(fdev);
	return rc;
}

void ub_file_dev_free(struct ub_file_dev *fdev)
{
	if (!fdev)
		return;
	free(fdev->path);
	free(fdev);
}

int ub_file_dev_open_fd(const struct ub_file_dev *fdev, struct ub_err *err)
{
	int fd = open(fdev->path, fdev->open_flags);

	if (fd < 0)
		return os_err(err, errno, fdev->path);
	return fd;
}

bool ub_file_iov_direct_ok(const struct ub_file_dev *fdev,
			   const struct iovec *iov, int iovcnt)
{
	uintptr_t mmask = fdev->mem_align - 1;
	size_t lmask = fdev->len_align - 1;
	int i;

	if (!fdev->direct)
		return true;
	for (i = 0; i < iovcnt; i++) {
		if (((uintptr_t)iov[i].iov_base & mmask) ||
		    (iov[i].iov_len & lmask))
			return false;
	}
	return true;
}

static int do_fallocate(int fd, int mode, uint64_t off, uint64_t len)
{
	int rc;

	do {
		rc = fallocate(fd, mode, (off_t)off, (off_t)len);
	} while (rc < 0 && errno == EINTR);
	return rc < 0 ? -errno : 0;
}

static int blk_range_ioctl(int fd, unsigned long req, uint64_t off,
			   uint64_t len)
{
	uint64_t range[2] = {off, len};
	int rc;

	do {
		rc = ioctl(fd, req, range);
	} while (rc < 0 && errno == EINTR);
	return rc < 0 ? -errno : 0;
}

int ub_file_discard(struct ub_file_dev *fdev, int fd, uint64_t off,
		    uint64_t len)
{
	if (fdev->is_blk)
		return blk_range_ioctl(fd, BLKDISCARD, off, len);
	return do_fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
			    len);
}

int ub_file_write_zeroes(struct ub_file_dev *fdev, int fd, uint64_t off,
			 uint64_t len)
{
	int rc;

	if (fdev->is_blk)
		return blk_range_ioctl(fd, BLKZEROOUT, off, len);
	if (!atomic_load_explicit(&fdev->no_zero_range, memory_order_relaxed)) {
		rc = do_fallocate(
		    fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len);
		if (rc != -EOPNOTSUPP)
			return rc;
		atomic_store_explicit(&fdev->no_zero_range, true,
				      memory_order_relaxed);
	}
	/* A punched hole reads back as zeros too. */
	return do_fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
			    len);
}

void ub_iov_copy_out(void *dst, const struct iovec *iov, int iovcnt, size_t pos,
		     size_t len)
{
	unsigned char *d = dst;
	size_t n;
	int i;

	for (i = 0; i < iovcnt && len; i++) {
		if (pos >= iov[i].iov_len) {
			pos -= iov[i].iov_len;
			continue;
		}
		n = iov[i].iov_len - pos;
		if (n > len)
			n = len;
		memcpy(d, (const unsigned char *)iov[i].iov_base + pos, n);
		d += n;
		len -= n;
		pos = 0;
	}
}

void ub_iov_copy_in(const struct iovec *iov, int iovcnt, size_t pos,
		    const void *src, size_t len)
{
	const unsigned char *s = src;
	size_t n;
	int i;

	for (i = 0; i < iovcnt && len; i++) {
		if (pos >= iov[i].iov_len) {
			pos -= iov[i].iov_len;
			continue;
		}
		n = iov[i].iov_len - pos;
		if (n > len)
			n = len;
		memcpy((unsigned char *)iov[i].iov_base + pos, s, n);
		s += n;
		len -= n;
		pos = 0;
	}
}

int ub_file_bdev_open_flags(enum ub_io_engine engine,
			    const struct ub_file_bdev_opts *o, unsigned flags,
			    struct ub_bdev **out, struct ub_err *err)
{
	switch (engine) {
	case UB_IO_ENGINE_IO_URING:
		return ub_uring_bdev_create(o, flags, out, err);
	case UB_IO_ENGINE_SYNC:
		return ub_sync_bdev_create(o, flags, out, err);
	}
	*out = NULL;
	return ub_err_ret(err, -EINVAL, "Unknown I/O engine %d", (int)engine);
}

int ub_file_bdev_open(enum ub_io_engine engine,
		      const struct ub_file_bdev_opts *o, struct ub_bdev **out,
		      struct ub_err *err)
{
	return ub_file_bdev_open_flags(engine, o, 0, out, err);
}
