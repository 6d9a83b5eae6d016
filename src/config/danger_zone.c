#include "config/danger_zone.h"

#include <stdio.h>
#include <string.h>

#include "util/log.h"

struct dz_flag {
	const char *name;
	size_t offset;
};

/* In the order of config.md §8, which the ignored-flags warning keeps. */
static const struct dz_flag dz_flags[] = {
	{"allow_unencrypted_disk",
	 offsetof(struct ub_danger_zone, allow_unencrypted_disk)},
	{"allow_inline_plaintext_secrets",
	 offsetof(struct ub_danger_zone, allow_inline_plaintext_secrets)},
	{"allow_secret_over_regular_file",
	 offsetof(struct ub_danger_zone, allow_secret_over_regular_file)},
	{"allow_unencrypted_connection",
	 offsetof(struct ub_danger_zone, allow_unencrypted_connection)},
	{"allow_env_secrets",
	 offsetof(struct ub_danger_zone, allow_env_secrets)},
};

#define DZ_FLAG(dz, i) ((bool *)((char *)(dz) + dz_flags[i].offset))

void ub_danger_zone_ignored_flags(const struct ub_danger_zone *dz, char *buf,
				  size_t n)
{
	size_t used = 0;

	if (n)
		buf[0] = '\0';
	if (dz->enabled)
		return;
	for (size_t i = 0; i < sizeof(dz_flags) / sizeof(dz_flags[0]); i++) {
		int w;

		if (!*DZ_FLAG(dz, i))
			continue;
		w = snprintf(buf + used, n > used ? n - used : 0, "%s%s",
			     used ? ", " : "", dz_flags[i].name);
		if (w < 0 || (size_t)w >= n - used)
			return;
		used += (size_t)w;
	}
}

int ub_danger_zone_parse(const struct ub_toml_value *v,
			 const struct ub_cfg_files *files,
			 struct ub_danger_zone *out, struct ub_err *err)
{
	struct ub_cfg_map m;
	char ignored[256];
	int rc;

	memset(out, 0, sizeof(*out));
	if (!v)
		return 0;
	rc = ub_cfg_map_open(&m, v, "danger_zone",
			     "Failed to parse danger_zone section", files, err);
	if (rc)
		return rc;
	rc = ub_cfg_get_bool(&m, "enabled", &out->enabled);
	for (size_t i = 0; !rc && i < sizeof(dz_flags) / sizeof(dz_flags[0]);
	     i++)
		rc = ub_cfg_get_bool(&m, dz_flags[i].name, DZ_FLAG(out, i));
	if (!rc)
		rc = ub_cfg_map_close(&m);
	if (rc) {
		memset(out, 0, sizeof(*out));
		return rc;
	}
	ub_danger_zone_ignored_flags(out, ignored, sizeof(ignored));
	if (ignored[0])
		LOG_WARN("danger_zone has flags set but enabled = false; "
			 "ignored flags: %s",
			 ignored);
	return 0;
}
