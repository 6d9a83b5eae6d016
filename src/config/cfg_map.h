/* Typed reading of configuration tables with the reference's rules: strict
 * types, required fields, unknown keys rejected, errors that name the file,
 * line, column and dotted key path:
 *
 *   <file>:<line>:<col>: <key.path>: <context>: <problem>
 *
 * Usage: ub_cfg_map_open on a table, one ub_cfg_get_* per known key (each
 * call also registers the key as known), then ub_cfg_map_close, which
 * rejects the first key that no getter asked for. Every function returns 0
 * or a negative errno with the error buffer filled. Strings handed out are
 * heap copies owned by the caller (free()). */
#ifndef UB_CONFIG_CFG_MAP_H
#define UB_CONFIG_CFG_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/toml.h"
#include "util/err.h"

#define UB_CFG_MAX_FILES 16
#define UB_CFG_MAX_KEYS 32
#define UB_CFG_PATH_MAX 256

/* Display names of the files a configuration was read from, indexed by the
 * file number stored in every ub_toml_pos. Names are owned heap copies. */
struct ub_cfg_files {
	char *names[UB_CFG_MAX_FILES];
	uint32_t count;
};

/* Appends a name; stores its index in *index. -ENOSPC when full. */
int ub_cfg_files_add(struct ub_cfg_files *f, const char *name,
		     uint32_t *index);
void ub_cfg_files_free(struct ub_cfg_files *f);

/* Fills err with "<file>:<line>:<col>: <keypath>: <message>" (position and
 * key path left out when NULL/empty) and returns -EINVAL. */
__attribute__((format(printf, 5, 6))) int
ub_cfg_err(struct ub_err *err, const struct ub_cfg_files *files,
	   const struct ub_toml_pos *pos, const char *keypath, const char *fmt,
	   ...);

/* Writes "<parent>.<key>" into buf, quoting key when it is not a bare key. */
void ub_cfg_keypath(char *buf, size_t n, const char *parent, const char *key);

/* Describes a value the way the reference's mapper does, e.g. "integer `5`",
 * "string \"x\"" (strings are never shown for secrets: pass redact). */
void ub_cfg_describe(char *buf, size_t n, const struct ub_toml_value *v,
		     bool redact);

struct ub_cfg_map {
	const struct ub_toml_value *tbl;   /* borrowed */
	char path[UB_CFG_PATH_MAX];	   /* dotted path of tbl ("" = root) */
	const char *what;		   /* context, e.g. "Failed to parse
					      device section" (borrowed) */
	const struct ub_cfg_files *files;  /* borrowed */
	struct ub_err *err;		   /* borrowed */
	bool redact;			   /* never quote string values */
	const char *known[UB_CFG_MAX_KEYS]; /* borrowed key literals */
	unsigned nknown;
};

/* Starts reading value v (found at path, written at *pos) as a table. A
 * non-table value is an "invalid type: …, expected struct <what>" error. */
int ub_cfg_map_open(struct ub_cfg_map *m, const struct ub_toml_value *v,
		    const char *path, const char *what,
		    const struct ub_cfg_files *files, struct ub_err *err);
/* Rejects the first key not requested by a getter: "unknown field `k`,
 * expected one of `a`, `b`". */
int ub_cfg_map_close(struct ub_cfg_map *m);

/* Registers key as known without reading it (for discriminators handled
 * elsewhere, e.g. `type`). */
void ub_cfg_known(struct ub_cfg_map *m, const char *key);

/* Position of key's value (or of the table when absent). */
struct ub_toml_pos ub_cfg_pos(const struct ub_cfg_map *m, const char *key);

/* The raw value of key (NULL when absent), registered as known. */
const struct ub_toml_value *ub_cfg_get(struct ub_cfg_map *m, const char *key);

/* String: *out = heap copy, or NULL when absent and not required ("missing
 * field `key`" when required). Strings with NUL bytes are rejected. */
int ub_cfg_get_str(struct ub_cfg_map *m, const char *key, bool required,
		   char **out);
/* Boolean: *out unchanged when absent. */
int ub_cfg_get_bool(struct ub_cfg_map *m, const char *key, bool *out);
/* Unsigned integer in 0..max (max names the type: UINT32_MAX is u32, ...):
 * *out unchanged and *present false when absent (present may be NULL). */
int ub_cfg_get_uint(struct ub_cfg_map *m, const char *key, uint64_t max,
		    bool *present, uint64_t *out);
/* Array of unsigned integers (each 0..max): *out = heap array (caller
 * frees), *len its length; both untouched when absent. */
int ub_cfg_get_uint_array(struct ub_cfg_map *m, const char *key, uint64_t max,
			  uint64_t **out, size_t *len);
/* One of choices (NULL-terminated list of strings): *out = its index;
 * unchanged when absent and not required. "unknown variant `x`, expected
 * one of `a`, `b`" otherwise. */
int ub_cfg_get_enum(struct ub_cfg_map *m, const char *key,
		    const char *const *choices, bool required, int *out);
/* Secret reference `key = { ref = "name" }` (dotted `key.ref = "name"` is
 * the same): *name = heap copy or NULL when absent and not required. */
int ub_cfg_get_ref(struct ub_cfg_map *m, const char *key, bool required,
		   char **name);

#endif
