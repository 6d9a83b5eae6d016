/* [danger_zone]: opt-in switches for unsafe setups (config.md §8). Every
 * allow_* flag counts only when `enabled` is true. */
#ifndef UB_CONFIG_DANGER_ZONE_H
#define UB_CONFIG_DANGER_ZONE_H

#include <stdbool.h>
#include <stddef.h>

#include "config/cfg_map.h"

struct ub_danger_zone {
	bool enabled;
	bool allow_unencrypted_disk;
	bool allow_inline_plaintext_secrets;
	bool allow_secret_over_regular_file;
	bool allow_unencrypted_connection;
	bool allow_env_secrets;
};

/* Parses the `danger_zone` value of a root table (NULL = all false) and logs
 * the ignored-flags warning when flags are set but enabled is false. */
int ub_danger_zone_parse(const struct ub_toml_value *v,
			 const struct ub_cfg_files *files,
			 struct ub_danger_zone *out, struct ub_err *err);
/* Writes the names of set allow_* flags that are ignored because enabled is
 * false, joined by ", " in table order ("" when none). */
void ub_danger_zone_ignored_flags(const struct ub_danger_zone *dz, char *buf,
				  size_t n);

/* Effective flags (enabled && flag). */
static inline bool ub_dz_unencrypted_disk(const struct ub_danger_zone *dz)
{
	return dz->enabled && dz->allow_unencrypted_disk;
}
static inline bool ub_dz_inline_plaintext(const struct ub_danger_zone *dz)
{
	return dz->enabled && dz->allow_inline_plaintext_secrets;
}
static inline bool ub_dz_regular_file(const struct ub_danger_zone *dz)
{
	return dz->enabled && dz->allow_secret_over_regular_file;
}
static inline bool ub_dz_unencrypted_conn(const struct ub_danger_zone *dz)
{
	return dz->enabled && dz->allow_unencrypted_connection;
}
static inline bool ub_dz_env_secrets(const struct ub_danger_zone *dz)
{
	return dz->enabled && dz->allow_env_secrets;
}

#endif
