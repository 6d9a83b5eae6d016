/* Fresh stripe metadata for the data device of a configuration (storage.md
 * §8.2), the core of init-metadata, shared with ubiblk-init: every stripe
 * unfetched and unwritten, HAS_SOURCE where the stripe source has data.
 * The whole metadata file is rewritten, encrypted when the configuration
 * has a key.
 *
 * Ownership: nothing is handed to the caller; cfg is only read. */
#ifndef UB_STRIPE_METADATA_CREATE_H
#define UB_STRIPE_METADATA_CREATE_H

#include <stdint.h>

#include "config/config.h"
#include "util/err.h"

/* Writes metadata for cfg->device.data_path with stripes of 2^shift
 * sectors (UB_MD_INIT_MIN_SHIFT..UB_MD_INIT_MAX_SHIFT) to
 * cfg->device.metadata_path: created 0600 (exclusive, no symbolic link)
 * or reused (mode forced to 0600, grown to the metadata size, never
 * shrunk), then overwritten through the device stack the backend uses.
 * A raw stripe source is opened like the backend opens it and must not be
 * larger than the data device. Resetting metadata that records fetched or
 * written stripes logs a warning. Logs "Initialized metadata ..." at info
 * level on success.
 *
 * Returns 0 or a negative errno with err set to the message init-metadata
 * prints after "initializing metadata failed: ", e.g. "Invalid parameter
 * error: metadata_path is none", "Failed to open stripe source: ...",
 * "Failed to ensure metadata file exists with secure permissions: ...". */
int ub_metadata_create(const struct ub_config *cfg, uint8_t shift,
		       struct ub_err *err);

#endif
