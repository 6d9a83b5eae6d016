/* [secrets]: named secrets loaded from a file/pipe, an inline string or an
 * environment variable, decoded (plaintext/base64) and optionally opened
 * with a KEK (AES-256-GCM envelope, AAD = the secret's name), config.md §9.
 *
 * Ownership: a ub_secrets owns its array, every name/description string
 * (heap) and every value (ub_secmem_alloc: locked, wiped on free);
 * ub_secrets_free releases all of it. Values are never logged or printed. */
#ifndef UB_CONFIG_SECRETS_H
#define UB_CONFIG_SECRETS_H

#include <stddef.h>

#include "config/cfg_map.h"
#include "config/danger_zone.h"

#define UB_SECRET_MAX_BYTES 8192
/* ceil(8192 / 3) * 4 + 4 + 1: the most a file source reads. */
#define UB_SECRET_FILE_READ_CAP 10929

enum ub_secret_source {
	UB_SECRET_SOURCE_FILE,
	UB_SECRET_SOURCE_INLINE,
	UB_SECRET_SOURCE_ENV,
};

enum ub_secret_encoding {
	UB_SECRET_ENCODING_PLAINTEXT,
	UB_SECRET_ENCODING_BASE64,
};

struct ub_secret {
	char *name;			  /* heap */
	enum ub_secret_source source;
	char *source_arg;		  /* heap: resolved file path or env
					     variable name; NULL for inline */
	enum ub_secret_encoding encoding;
	char *encrypted_by;		  /* heap KEK name, or NULL */
	struct ub_toml_pos pos;		  /* where the definition was read */
	unsigned char *value;		  /* ub_secmem_alloc'ed, len bytes */
	size_t len;
};

struct ub_secrets {
	struct ub_secret *items; /* heap array of count entries */
	size_t count;
};

/* Parses the `secrets` value of a (merged) root table (NULL = no secrets)
 * and resolves every secret: relative file paths joined to config_dir
 * ("" = current directory), sources read once, decoded, size-checked and
 * decrypted, KEKs first (deterministic topological order, ties in
 * definition order). On failure *out is empty and every intermediate
 * buffer has been wiped. */
int ub_secrets_load(const struct ub_toml_value *secrets,
		    const char *config_dir, const struct ub_danger_zone *dz,
		    const struct ub_cfg_files *files, struct ub_secrets *out,
		    struct ub_err *err);
void ub_secrets_free(struct ub_secrets *s);
/* The secret called name, or NULL. */
const struct ub_secret *ub_secrets_find(const struct ub_secrets *s,
					const char *name);

#endif
