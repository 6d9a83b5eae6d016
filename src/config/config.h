/* The main device configuration and the three standalone files
 * (config.md): loading, validation and a redacted dump.
 *
 * Ownership: every string in these structs is a heap copy owned by the
 * struct; the secrets are owned by its ub_secrets (locked memory). Free a
 * loaded configuration with the matching *_free, on every path. A struct
 * that failed to load is left zeroed (safe to free). */
#ifndef UB_CONFIG_CONFIG_H
#define UB_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config/danger_zone.h"
#include "config/secrets.h"
#include "util/err.h"

enum ub_io_engine {
	UB_IO_ENGINE_IO_URING,
	UB_IO_ENGINE_SYNC,
};

struct ub_device_cfg {
	char *data_path;     /* resolved against config_dir */
	char *metadata_path; /* resolved, or NULL */
	char *vhost_socket;  /* resolved, or NULL */
	char *rpc_socket;    /* resolved, or NULL */
	char *device_id;     /* default "ubiblk" */
	bool track_written;
};

struct ub_tuning_cfg {
	uint32_t num_queues;	  /* 1..63, default 1 */
	uint32_t queue_size;	  /* power of two 1..65536, default 64 */
	uint32_t seg_size_max;	  /* 1..1048576, default 65536 */
	uint32_t seg_count_max;	  /* 1..256, default 4 */
	uint64_t poll_timeout_us; /* 0..10000000, default 1000 */
	uint32_t *cpus;		  /* heap, cpus_len == num_queues, or NULL */
	size_t cpus_len;
	enum ub_io_engine io_engine; /* default io_uring */
	bool write_through;
};

struct ub_rate_limited_retry {
	bool enabled;
	uint64_t min_delay_ms;
	uint64_t jitter_ms;
};

enum ub_archive_storage_kind {
	UB_ARCHIVE_FILESYSTEM,
	UB_ARCHIVE_S3,
};

/* Archive storage definition (config.md §10.2); *_ref are secret names. */
struct ub_archive_storage_cfg {
	enum ub_archive_storage_kind kind;
	char *archive_kek_ref; /* or NULL */
	bool autofetch;
	/* filesystem */
	char *path;
	/* s3 */
	char *bucket;
	char *prefix;	/* or NULL */
	char *region;	/* or NULL */
	char *endpoint; /* or NULL */
	char *access_key_id_ref;
	char *secret_access_key_ref;
	char *session_token_ref;	       /* or NULL */
	uint64_t connections;		       /* default 16 */
	uint64_t connect_timeout_ms;	       /* default 5000 */
	uint64_t operation_attempt_timeout_ms; /* default 20000 */
	uint64_t max_attempts;		       /* default 3 */
	struct ub_rate_limited_retry rate_limited_retry;
};

/* Remote stripe server definition (config.md §10.3). */
struct ub_remote_cfg {
	bool has_psk;
	char *psk_identity;   /* when has_psk */
	char *psk_secret_ref; /* when has_psk */
	char *address;
	uint64_t connect_timeout_ms;	       /* default 5000 */
	uint64_t operation_attempt_timeout_ms; /* default 20000 */
	uint64_t connections;		       /* default 16 */
	bool autofetch;
};

enum ub_stripe_source_type {
	UB_STRIPE_SOURCE_NONE,
	UB_STRIPE_SOURCE_RAW,
	UB_STRIPE_SOURCE_ARCHIVE,
	UB_STRIPE_SOURCE_REMOTE,
};

struct ub_raw_source_cfg {
	char *image_path; /* resolved */
	bool autofetch;
	bool copy_on_read;
};

struct ub_stripe_source_cfg {
	enum ub_stripe_source_type type;
	struct ub_raw_source_cfg raw;
	struct ub_archive_storage_cfg archive;
	struct ub_remote_cfg remote;
};

/* Main configuration. */
struct ub_config {
	char *path;	  /* as given to ub_config_load */
	char *config_dir; /* directory part of path ("" = cwd) */
	struct ub_device_cfg device;
	struct ub_tuning_cfg tuning;
	bool has_encryption;
	char *xts_key_ref; /* secret name when has_encryption */
	struct ub_danger_zone danger_zone;
	struct ub_stripe_source_cfg stripe_source;
	struct ub_secrets secrets;
};

/* Queue depth for opening the data, metadata and image devices:
 * tuning.queue_size, at most 32768 (65536 is valid configuration, but no
 * io_uring ring or virtqueue is that large). */
static inline uint32_t ub_config_queue_depth(const struct ub_config *cfg)
{
	return cfg->tuning.queue_size < 32768u ? cfg->tuning.queue_size
					       : 32768u;
}

/* Fills *cfg with the defaults of every optional key (no allocation). */
void ub_config_defaults(struct ub_config *cfg);
/* Loads and validates a main configuration (config.md §2.1, every step);
 * on failure returns a negative errno and err names file, position and key
 * path where known. */
int ub_config_load(const char *path, struct ub_config *cfg, struct ub_err *err);
void ub_config_free(struct ub_config *cfg);
/* For a program's main(): sets up locked memory for secrets and loads
 * path; on failure prints "<prog>: loading configuration failed: <why>",
 * leaves *cfg freed and returns 1 (the runtime-error exit code); 0 when
 * loaded. */
int ub_config_load_for_cli(const char *prog, const char *path,
			   struct ub_config *cfg);
/* The 64-byte XTS key secret (NULL without [encryption]). */
const struct ub_secret *ub_config_xts_key(const struct ub_config *cfg);
/* Prints the effective configuration as TOML, secrets shown as
 * "[REDACTED]" (only their definition and length are shown). */
int ub_config_print(FILE *f, const struct ub_config *cfg);

/* `archive --target-config`: [target]. */
struct ub_target_config {
	char *path;
	char *config_dir;
	struct ub_archive_storage_cfg target; /* path NOT resolved */
	struct ub_danger_zone danger_zone;
	struct ub_secrets secrets;
};
int ub_target_config_load(const char *path, struct ub_target_config *cfg,
			  struct ub_err *err);
void ub_target_config_free(struct ub_target_config *cfg);

/* `export-archive --source`: [archive]. */
struct ub_export_config {
	char *path;
	char *config_dir;
	struct ub_archive_storage_cfg archive; /* filesystem path resolved */
	struct ub_danger_zone danger_zone;
	struct ub_secrets secrets;
};
int ub_export_config_load(const char *path, struct ub_export_config *cfg,
			  struct ub_err *err);
void ub_export_config_free(struct ub_export_config *cfg);

/* `remote-stripe-server --listen-config`, `remote-stripe-shell
 * --server-config`: [server]. */
struct ub_server_config {
	char *path;
	char *config_dir;
	struct ub_remote_cfg server;
	struct ub_danger_zone danger_zone;
	struct ub_secrets secrets;
};
int ub_server_config_load(const char *path, struct ub_server_config *cfg,
			  struct ub_err *err);
void ub_server_config_free(struct ub_server_config *cfg);

#endif
