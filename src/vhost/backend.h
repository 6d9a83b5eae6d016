/* The backend environment (backends.md §2.2): the exposed block device
 * built from a configuration, once per process, shared by every front-end
 * connection (vhost-user now, ublk later).
 *
 * Data device: the configured engine on device.data_path, read-write,
 * O_DIRECT, O_DSYNC iff tuning.write_through, queue depth
 * tuning.queue_size (at most 32768); wrapped in AES-XTS iff [encryption]
 * is configured.
 *
 * With device.metadata_path (storage.md §5.10) the exposed device is the
 * lazy device over the data device: the metadata device (same stacking,
 * encrypted with the same key) is loaded, the data capacity is checked
 * against the metadata's stripe count, the shared stripe state is built,
 * the stripe source is opened (raw image read-only, never encrypted; an
 * empty source when there is none or everything is already fetched) and
 * the background worker is started before the lazy device. A progress
 * thread logs fetch progress at info level while stripes are being
 * fetched and "All stripes fetched" once.
 *
 * Teardown (ub_backend_close) runs in reverse: the caller must have
 * stopped every I/O thread (closed its channels) first; then the lazy
 * device is dropped, the progress thread and the background worker are
 * stopped, and the devices are released. */
#ifndef UB_VHOST_BACKEND_H
#define UB_VHOST_BACKEND_H

#include "bdev/bdev.h"
#include "config/config.h"
#include "stripe/bgworker.h"
#include "stripe/stripe_state.h"
#include "util/err.h"

struct ub_backend_progress;

struct ub_backend {
	struct ub_bdev *bdev; /* exposed device (one reference, owned) */
	/* Lazy fetching only (all NULL without metadata_path): */
	struct ub_bdev *data;	       /* (crypt-wrapped) data device */
	struct ub_bdev *metadata;      /* (crypt-wrapped) metadata device */
	struct ub_stripe_state *state; /* heap, shared with the worker */
	struct ub_bgworker *worker;
	struct ub_backend_progress *progress; /* logging thread, or NULL */
};

/* Builds the environment from a loaded configuration. Errors: "Failed to
 * build backend environment: ..." for the devices, the metadata and the
 * source; "Failed to run bgworker thread: Failed to build bgworker: ..."
 * when the background worker cannot start. */
int ub_backend_open(const struct ub_config *cfg, struct ub_backend *b,
		    struct ub_err *err);
/* Fetch progress for the RPC status command: -ENOENT when the backend has
 * no lazy device (the RPC then answers {"status": null}). */
int ub_backend_status(struct ub_backend *b, struct ub_bgworker_status *st);
/* Tears everything down in reverse; a zeroed or already closed backend is
 * accepted. */
void ub_backend_close(struct ub_backend *b);

#endif
