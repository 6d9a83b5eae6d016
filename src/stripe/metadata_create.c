/* Fresh stripe metadata (storage.md §8.2): the core of init-metadata,
 * also used by ubiblk-init. See metadata_create.h. */
#include "stripe/metadata_create.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bdev/bdev.h"
#include "bdev/file.h"
#include "stripe/metadata.h"
#include "util/log.h"

/* Queue depth of the raw image device (storage.md §3.6). */
#define IMAGE_QUEUE_DEPTH 64

/* Opens a file device the way the backend does (storage.md §3.6). */
static int open_file_dev(const struct ub_config *cfg, const char *path,
			 bool readonly, uint32_t depth, struct ub_bdev **out,
			 struct ub_err *err)
{
	struct ub_file_bdev_opts o = {
	    .path = path,
	    .readonly = readonly,
	    .direct = true,
	    .write_through = cfg->tuning.write_through,
	    .queue_depth = depth,
	};

	return ub_file_bdev_open(cfg->tuning.io_engine, &o, out, err);
}

/* Sector count of the raw image, checked against the data device. The
 * image is opened like the backend's stripe source, one channel included,
 * so an unreadable image fails here rather than at start-up. */
static int raw_image_sectors(const struct ub_config *cfg, uint64_t data_sectors,
			     uint64_t *sectors, struct ub_err *err)
{
	const char *path = cfg->stripe_source.raw.image_path;
	struct ub_bdev *dev = NULL;
	struct ub_bdev_chan *ch = NULL;
	int rc;

	rc = open_file_dev(cfg, path, true, IMAGE_QUEUE_DEPTH, &dev, err);
	if (rc)
		goto out;
	rc = ub_bdev_open_chan(dev, &ch, err);
	if (rc)
		goto out_put;
	if (dev->sectors > data_sectors) {
		rc = ub_err_ret(
		    err, -EINVAL,
		    "Invalid parameter error: raw image %s (%" PRIu64
		    " bytes) is larger than the data device %s "
		    "(%" PRIu64 " bytes)",
		    path, dev->sectors * UB_SECTOR_SIZE, cfg->device.data_path,
		    data_sectors * UB_SECTOR_SIZE);
		goto out_close;
	}
	*sectors = dev->sectors;
out_close:
	ub_bdev_chan_close(ch);
out_put:
	ub_bdev_put(dev);
out:
	if (rc)
		ub_err_prefix(err, "Failed to open stripe source");
	return rc;
}

/* Headers for stripe_count stripes from the configured stripe source. */
static int build_headers(const struct ub_config *cfg, uint8_t shift,
			 uint64_t data_sectors, struct ub_metadata *md,
			 struct ub_err *err)
{
	uint64_t count = ub_stripe_count(data_sectors, shift), image = 0;
	int rc;

	switch (cfg->stripe_source.type) {
	case UB_STRIPE_SOURCE_NONE:
		break;
	case UB_STRIPE_SOURCE_RAW:
		rc = raw_image_sectors(cfg, data_sectors, &image, err);
		if (rc)
			return rc;
		break;
	case UB_STRIPE_SOURCE_ARCHIVE:
	case UB_STRIPE_SOURCE_REMOTE:
		return ub_err_ret(err, -ENOTSUP,
				  "Invalid parameter error: stripe source type "
				  "'%s' is not supported yet by this build",
				  cfg->stripe_source.type ==
					  UB_STRIPE_SOURCE_ARCHIVE
				      ? "archive"
				      : "remote");
	}
	/* A raw source has stripe i iff i * stripe_sectors < image sectors,
	 * a partial last stripe included. */
	return ub_metadata_init(md, shift, count, ub_stripe_count(image, shift),
				err);
}

/* fsync of the directory holding path, so a new entry survives a crash. */
static int fsync_parent(const char *path, struct ub_err *err)
{
	char *copy = strdup(path); /* owned: dirname's scratch, freed below */
	const char *dir;
	int fd, rc = 0;

	if (!copy)
		return ub_err_ret(err, -ENOMEM, "out of memory");
	dir = dirname(copy);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		ub_err_set(err, "I/O error: cannot open directory %s: %s", dir,
			   strerror(-rc));
		goto out;
	}
	if (fsync(fd)) {
		rc = -errno;
		ub_err_set(err, "I/O error: fsync of directory %s: %s", dir,
			   strerror(-rc));
	}
	close(fd);
out:
	free(copy);
	return rc;
}

/* Creates the metadata file (0600, exclusive, no symlinks) or opens the
 * existing one, forces mode 0600, grows it to at least size bytes, and
 * makes all of that durable (storage.md §8.2 step 4). *existed tells
 * whether a file was there before. */
static int ensure_metadata_file(const char *path, uint64_t size, bool *existed,
				struct ub_err *err)
{
	struct stat st;
	bool created = true;
	int fd, rc = 0;

	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		  0600);
	if (fd < 0 && errno == EEXIST) {
		created = false;
		/* O_NONBLOCK: a FIFO or device must not hang the open; it is
		 * rejected just below. */
		fd = open(path, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	}
	if (fd < 0) {
		rc = -errno;
		if (rc == -ELOOP)
			ub_err_set(err,
				   "Invalid parameter error: Metadata path "
				   "%s is a symbolic link",
				   path);
		else if (rc == -EISDIR)
			ub_err_set(err,
				   "Invalid parameter error: Metadata path "
				   "%s is not a regular file",
				   path);
		else
			ub_err_set(err, "I/O error: cannot open %s: %s", path,
				   strerror(-rc));
		goto out;
	}
	*existed = !created;
	if (fstat(fd, &st)) {
		rc = -errno;
		ub_err_set(err, "I/O error: stat %s: %s", path, strerror(-rc));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = ub_err_ret(err, -EINVAL,
				"Invalid parameter error: Metadata path %s is "
				"not a regular file",
				path);
		goto out_close;
	}
	if ((st.st_mode & 07777) != 0600 && fchmod(fd, 0600)) {
		rc = -errno;
		ub_err_set(err, "I/O error: chmod 0600 %s: %s", path,
			   strerror(-rc));
		goto out_close;
	}
	if ((uint64_t)st.st_size < size && ftruncate(fd, (off_t)size)) {
		rc = -errno;
		ub_err_set(err, "I/O error: resize %s to %" PRIu64 " bytes: %s",
			   path, size, strerror(-rc));
		goto out_close;
	}
	if (fsync(fd)) {
		rc = -errno;
		ub_err_set(err, "I/O error: fsync %s: %s", path, strerror(-rc));
		goto out_close;
	}
	if (created)
		rc = fsync_parent(path, err);
out_close:
	if (close(fd) && !rc) {
		rc = -errno;
		ub_err_set(err, "I/O error: close %s: %s", path, strerror(-rc));
	}
out:
	if (rc)
		ub_err_prefix(err, "Failed to ensure metadata file exists with "
				   "secure permissions");
	return rc;
}

/* Warns when the metadata about to be overwritten records fetched or
 * written stripes (a live volume being reset). Unreadable or invalid old
 * content is overwritten without a word. */
static void warn_on_reset(struct ub_bdev_chan *ch, const char *path)
{
	struct ub_metadata old = {0};
	struct ub_err err = {{0}};
	uint64_t i, fetched = 0, written = 0;

	if (ub_metadata_load(ch, &old, &err)) {
		LOG_DEBUG("Existing metadata %s is not readable, overwriting "
			  "it: %s",
			  path, err.msg);
		return;
	}
	for (i = 0; i < old.stripe_count; i++) {
		fetched += !!(old.headers[i] & UB_STRIPE_FETCHED);
		written += !!(old.headers[i] & UB_STRIPE_WRITTEN);
	}
	if (fetched || written)
		LOG_WARN("Resetting metadata %s: the state of %" PRIu64
			 " fetched and %" PRIu64
			 " written stripes is discarded",
			 path, fetched, written);
	ub_metadata_free(&old);
}

int ub_metadata_create(const struct ub_config *cfg, uint8_t shift,
		       struct ub_err *err)
{
	const char *mpath = cfg->device.metadata_path;
	struct ub_metadata md = {0};
	struct ub_bdev *data = NULL, *meta = NULL;
	struct ub_bdev_chan *ch = NULL;
	bool existed = false;
	int rc;

	if (shift < UB_MD_INIT_MIN_SHIFT || shift > UB_MD_INIT_MAX_SHIFT)
		return ub_err_ret(err, -EINVAL,
				  "Invalid parameter error: "
				  "stripe-sector-count-shift must be between "
				  "%u and %u.",
				  UB_MD_INIT_MIN_SHIFT, UB_MD_INIT_MAX_SHIFT);
	if (!mpath)
		return ub_err_ret(err, -EINVAL,
				  "Invalid parameter error: "
				  "metadata_path is none");
	rc = open_file_dev(cfg, cfg->device.data_path, false,
			   ub_config_queue_depth(cfg), &data, err);
	if (rc)
		goto out;
	rc = build_headers(cfg, shift, data->sectors, &md, err);
	if (rc)
		goto out_put_data;
	rc = ensure_metadata_file(mpath, ub_metadata_size(md.stripe_count),
				  &existed, err);
	if (rc)
		goto out_free_md;
	rc = ub_metadata_dev_open(cfg, false, &meta, err);
	if (rc)
		goto out_free_md;
	rc = ub_bdev_open_chan(meta, &ch, err);
	if (rc)
		goto out_put_meta;
	if (existed)
		warn_on_reset(ch, mpath);
	rc = ub_metadata_save(ch, &md, err);
	if (!rc)
		LOG_INFO("Initialized metadata %s: %" PRIu64
			 " stripes of %u sectors",
			 mpath, md.stripe_count, 1u << shift);
	ub_bdev_chan_close(ch);
out_put_meta:
	ub_bdev_put(meta);
out_free_md:
	ub_metadata_free(&md);
out_put_data:
	ub_bdev_put(data);
out:
	return rc;
}
