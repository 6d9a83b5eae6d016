/* The backend environment (backends.md §2.2): the exposed block device
 * built from a configuration, once per process, shared by every front-end
 * connection (vhost-user now, ublk later).
 *
 * Data device: the configured engine on device.data_path, read-write,
 * O_DIRECT, O_DSYNC iff tuning.write_through, queue depth
 * tuning.queue_size (at most 32768); wrapped in AES-XTS iff [encryption]
 * is configured. Lazy stripe fetching (device.metadata_path) is refused
 * for now. */
#ifndef UB_VHOST_BACKEND_H
#define UB_VHOST_BACKEND_H

#include "bdev/bdev.h"
#include "config/config.h"
#include "util/err.h"

struct ub_backend {
	struct ub_bdev *bdev; /* exposed device (one reference, owned) */
};

/* Builds the environment from a loaded configuration. */
int ub_backend_open(const struct ub_config *cfg, struct ub_backend *b,
		    struct ub_err *err);
/* Drops the device; a zeroed or already closed backend is accepted. */
void ub_backend_close(struct ub_backend *b);

#endif
