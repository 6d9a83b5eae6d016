/* Internal to the configuration loaders: the front half shared by every file
 * kind (config.md §2.1 steps 1-7, §2.2, §3, §4.1) and helpers used by
 * config.c and config_print.c. */
#ifndef UB_CONFIG_CONFIG_INTERNAL_H
#define UB_CONFIG_CONFIG_INTERNAL_H

#include "config/cfg_map.h"
#include "config/config.h"
#include "config/danger_zone.h"
#include "config/secrets.h"
#include "config/toml.h"
#include "util/err.h"

/* What differs between the file kinds in the front half. */
struct ub_cfg_kind {
	const char *read_context;    /* e.g. "Loading config failed" */
	const char *const *top_keys; /* allowed top-level keys, NULL-ended */
};

extern const struct ub_cfg_kind ub_cfg_kind_main;
extern const struct ub_cfg_kind ub_cfg_kind_target;
extern const struct ub_cfg_kind ub_cfg_kind_export;
extern const struct ub_cfg_kind ub_cfg_kind_server;

/* A root file with its includes merged, its danger zone and its resolved
 * secrets. Owns everything it points to; ub_cfg_doc_free releases it (safe
 * on a zeroed or half-loaded doc). */
struct ub_cfg_doc {
	struct ub_toml_value *root; /* merged tree (strings wiped on free) */
	struct ub_cfg_files files;  /* file names by ub_toml_pos.file */
	char *config_dir;	    /* heap; "" = current directory */
	struct ub_danger_zone dz;
	struct ub_secrets secrets; /* moved out by the caller on success */
};

/* Steps 1-7: read, permission warning, parse, includes, top-level keys,
 * danger zone, secrets. On failure the doc is freed and zeroed. */
int ub_cfg_doc_load(const char *path, const struct ub_cfg_kind *kind,
		    struct ub_cfg_doc *doc, struct ub_err *err);
void ub_cfg_doc_free(struct ub_cfg_doc *doc);

#endif
