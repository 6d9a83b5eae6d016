#include "config/cfg_map.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ub_cfg_files_add(struct ub_cfg_files *f, const char *name,
		     uint32_t *index)
{
	char *copy;

	if (f->count >= UB_CFG_MAX_FILES)
		return -ENOSPC;
	copy = strdup(name);
	if (!copy)
		return -ENOMEM;
	f->names[f->count] = copy;
	*index = f->count++;
	return 0;
}

void ub_cfg_files_free(struct ub_cfg_files *f)
{
	for (uint32_t i = 0; i < f->count; i++)
		free(f->names[i]);
	f->count = 0;
}

int ub_cfg_err(struct ub_err *err, const struct ub_cfg_files *files,
	       const struct ub_toml_pos *pos, const char *keypath,
	       const char *fmt, ...)
{
	char msg[UB_ERR_MAX];
	char where[UB_ERR_MAX / 2] = "";
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (files && pos && pos->file < files->count) {
		if (pos->line)
			snprintf(where, sizeof(where), "%s:%" PRIu32 ":%" PRIu32
				 ": ", files->names[pos->file], pos->line,
				 pos->col);
		else
			snprintf(where, sizeof(where), "%s: ",
				 files->names[pos->file]);
	}
	if (keypath && *keypath)
		ub_err_set(err, "%s%s: %s", where, keypath, msg);
	else
		ub_err_set(err, "%s%s", where, msg);
	return -EINVAL;
}

static bool is_bare_key(const char *k)
{
	if (!*k)
		return false;
	for (const char *p = k; *p; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return false;
	}
	return true;
}

void ub_cfg_keypath(char *buf, size_t n, const char *parent, const char *key)
{
	const char *dot = (parent && *parent) ? "." : "";

	if (!parent)
		parent = "";
	if (is_bare_key(key))
		snprintf(buf, n, "%s%s%s", parent, dot, key);
	else
		snprintf(buf, n, "%s%s\"%s\"", parent, dot, key);
}

void ub_cfg_describe(char *buf, size_t n, const struct ub_toml_value *v,
		     bool redact)
{
	switch (v->type) {
	case UB_TOML_TABLE:
		snprintf(buf, n, "map");
		break;
	case UB_TOML_ARRAY:
		snprintf(buf, n, "sequence");
		break;
	case UB_TOML_STRING:
		if (redact || v->u.str.len > 64)
			snprintf(buf, n, "string");
		else
			snprintf(buf, n, "string \"%s\"", v->u.str.ptr);
		break;
	case UB_TOML_INTEGER:
		snprintf(buf, n, "integer `%" PRId64 "`", v->u.integer);
		break;
	case UB_TOML_FLOAT:
		snprintf(buf, n, "floating point `%g`", v->u.flt);
		break;
	case UB_TOML_BOOL:
		snprintf(buf, n, "boolean `%s`",
			 v->u.boolean ? "true" : "false");
		break;
	default:
		snprintf(buf, n, "%s", ub_toml_type_name(v->type));
		break;
	}
}

static void keypath_of(const struct ub_cfg_map *m, const char *key, char *buf,
		       size_t n)
{
	ub_cfg_keypath(buf, n, m->path, key);
}

/* Error at key's position, with the map's context. */
__attribute__((format(printf, 3, 4))) static int
map_err(struct ub_cfg_map *m, const char *key, const char *fmt, ...)
{
	char msg[UB_ERR_MAX / 2];
	char path[UB_CFG_PATH_MAX];
	struct ub_toml_pos pos = ub_cfg_pos(m, key);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (key)
		keypath_of(m, key, path, sizeof(path));
	else
		snprintf(path, sizeof(path), "%s", m->path);
	if (m->what && *m->what)
		return ub_cfg_err(m->err, m->files, &pos, path, "%s: %s",
				  m->what, msg);
	return ub_cfg_err(m->err, m->files, &pos, path, "%s", msg);
}

int ub_cfg_map_open(struct ub_cfg_map *m, const struct ub_toml_value *v,
		    const char *path, const char *what,
		    const struct ub_cfg_files *files, struct ub_err *err)
{
	char desc[128];

	memset(m, 0, sizeof(*m));
	m->tbl = v;
	snprintf(m->path, sizeof(m->path), "%s", path ? path : "");
	m->what = what;
	m->files = files;
	m->err = err;
	if (!v || v->type != UB_TOML_TABLE) {
		struct ub_toml_pos pos = v ? v->pos : (struct ub_toml_pos){0};

		if (!v)
			return ub_cfg_err(err, files, NULL, m->path,
					  "%s: missing table", what ? what : "");
		ub_cfg_describe(desc, sizeof(desc), v, true);
		m->tbl = NULL;
		return ub_cfg_err(err, files, &pos, m->path,
				  "%s%sinvalid type: %s, expected a table",
				  what ? what : "", what ? ": " : "", desc);
	}
	return 0;
}

void ub_cfg_known(struct ub_cfg_map *m, const char *key)
{
	for (unsigned i = 0; i < m->nknown; i++)
		if (strcmp(m->known[i], key) == 0)
			return;
	if (m->nknown < UB_CFG_MAX_KEYS)
		m->known[m->nknown++] = key;
}

struct ub_toml_pos ub_cfg_pos(const struct ub_cfg_map *m, const char *key)
{
	const struct ub_toml_value *v;

	if (!m->tbl)
		return (struct ub_toml_pos){0};
	if (key) {
		size_t n = ub_toml_table_len(m->tbl);
		for (size_t i = 0; i < n; i++) {
			size_t klen;
			const char *k = ub_toml_table_key(m->tbl, i, &klen);
			if (klen == strlen(key) && memcmp(k, key, klen) == 0)
				return ub_toml_table_key_pos(m->tbl, i);
		}
	}
	v = m->tbl;
	return v->pos;
}

int ub_cfg_map_close(struct ub_cfg_map *m)
{
	size_t n;

	if (!m->tbl)
		return 0;
	n = ub_toml_table_len(m->tbl);
	for (size_t i = 0; i < n; i++) {
		size_t klen;
		const char *k = ub_toml_table_key(m->tbl, i, &klen);
		bool found = false;
		char expected[UB_ERR_MAX / 4] = "";
		size_t used = 0;

		for (unsigned j = 0; j < m->nknown; j++) {
			if (strlen(m->known[j]) == klen &&
			    memcmp(m->known[j], k, klen) == 0) {
				found = true;
				break;
			}
		}
		if (found)
			continue;
		for (unsigned j = 0; j < m->nknown && used < sizeof(expected);
		     j++) {
			int w = snprintf(expected + used,
					 sizeof(expected) - used, "%s`%s`",
					 j ? ", " : "", m->known[j]);
			if (w < 0)
				break;
			used += (size_t)w;
		}
		if (m->nknown)
			return map_err(m, k, "unknown field `%s`, expected %s%s",
				       k, m->nknown > 1 ? "one of " : "",
				       expected);
		return map_err(m, k, "unknown field `%s`, there are no fields",
			       k);
	}
	return 0;
}

const struct ub_toml_value *ub_cfg_get(struct ub_cfg_map *m, const char *key)
{
	ub_cfg_known(m, key);
	if (!m->tbl)
		return NULL;
	return ub_toml_table_get(m->tbl, key);
}

static int type_err(struct ub_cfg_map *m, const char *key,
		    const struct ub_toml_value *v, const char *expected)
{
	char desc[128];

	ub_cfg_describe(desc, sizeof(desc), v, m->redact);
	return map_err(m, key, "invalid type: %s, expected %s", desc,
		       expected);
}

int ub_cfg_get_str(struct ub_cfg_map *m, const char *key, bool required,
		   char **out)
{
	const struct ub_toml_value *v = ub_cfg_get(m, key);

	*out = NULL;
	if (!v) {
		if (required)
			return map_err(m, NULL, "missing field `%s`", key);
		return 0;
	}
	if (v->type != UB_TOML_STRING)
		return type_err(m, key, v, "a string");
	if (strlen(v->u.str.ptr) != v->u.str.len)
		return map_err(m, key, "string contains a NUL character");
	*out = strdup(v->u.str.ptr);
	if (!*out)
		return ub_err_ret(m->err, -ENOMEM, "out of memory");
	return 0;
}

int ub_cfg_get_bool(struct ub_cfg_map *m, const char *key, bool *out)
{
	const struct ub_toml_value *v = ub_cfg_get(m, key);

	if (!v)
		return 0;
	if (v->type != UB_TOML_BOOL)
		return type_err(m, key, v, "a boolean");
	*out = v->u.boolean;
	return 0;
}

static const char *uint_type_name(uint64_t max)
{
	if (max == UINT8_MAX)
		return "u8";
	if (max == UINT16_MAX)
		return "u16";
	if (max == UINT32_MAX)
		return "u32";
	return "u64";
}

static int check_uint(struct ub_cfg_map *m, const char *key,
		      const struct ub_toml_value *v, uint64_t max,
		      uint64_t *out)
{
	if (v->type != UB_TOML_INTEGER)
		return type_err(m, key, v, uint_type_name(max));
	if (v->u.integer < 0 || (uint64_t)v->u.integer > max)
		return map_err(m, key,
			       "invalid value: integer `%" PRId64
			       "`, expected %s",
			       v->u.integer, uint_type_name(max));
	*out = (uint64_t)v->u.integer;
	return 0;
}

int ub_cfg_get_uint(struct ub_cfg_map *m, const char *key, uint64_t max,
		    bool *present, uint64_t *out)
{
	const struct ub_toml_value *v = ub_cfg_get(m, key);

	if (present)
		*present = false;
	if (!v)
		return 0;
	if (check_uint(m, key, v, max, out))
		return -EINVAL;
	if (present)
		*present = true;
	return 0;
}

int ub_cfg_get_uint_array(struct ub_cfg_map *m, const char *key, uint64_t max,
			  uint64_t **out, size_t *len)
{
	const struct ub_toml_value *v = ub_cfg_get(m, key);
	uint64_t *arr;
	size_t n;

	if (!v)
		return 0;
	if (v->type != UB_TOML_ARRAY)
		return type_err(m, key, v, "a sequence");
	n = ub_toml_array_len(v);
	arr = calloc(n ? n : 1, sizeof(*arr));
	if (!arr)
		return ub_err_ret(m->err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		if (check_uint(m, key, ub_toml_array_at(v, i), max, &arr[i])) {
			free(arr);
			return -EINVAL;
		}
	}
	*out = arr;
	*len = n;
	return 0;
}

int ub_cfg_get_enum(struct ub_cfg_map *m, const char *key,
		    const char *const *choices, bool required, int *out)
{
	const struct ub_toml_value *v = ub_cfg_get(m, key);
	char expected[256] = "";
	size_t used = 0;
	int count = 0;

	if (!v) {
		if (required)
			return map_err(m, NULL, "missing field `%s`", key);
		return 0;
	}
	if (v->type != UB_TOML_STRING)
		return type_err(m, key, v, "a string");
	for (int i = 0; choices[i]; i++) {
		int w;

		if (strlen(choices[i]) == v->u.str.len &&
		    memcmp(choices[i], v->u.str.ptr, v->u.str.len) == 0) {
			*out = i;
			return 0;
		}
		w = snprintf(expected + used, sizeof(expected) - used,
			     "%s`%s`", i ? ", " : "", choices[i]);
		if (w > 0 && (size_t)w < sizeof(expected) - used)
			used += (size_t)w;
		count++;
	}
	return map_err(m, key, "unknown variant `%.64s`, expected %s%s",
		       v->u.str.ptr, count > 1 ? "one of " : "", expected);
}

int ub_cfg_get_ref(struct ub_cfg_map *m, const char *key, bool required,
		   char **name)
{
	const struct ub_toml_value *v = ub_cfg_get(m, key);
	struct ub_cfg_map sub;
	char path[UB_CFG_PATH_MAX];
	int rc;

	*name = NULL;
	if (!v) {
		if (required)
			return map_err(m, NULL, "missing field `%s`", key);
		return 0;
	}
	keypath_of(m, key, path, sizeof(path));
	if (v->type != UB_TOML_TABLE)
		return type_err(m, key, v,
				"a secret reference table { ref = \"name\" }");
	rc = ub_cfg_map_open(&sub, v, path, m->what, m->files, m->err);
	if (rc)
		return rc;
	rc = ub_cfg_get_str(&sub, "ref", true, name);
	if (!rc)
		rc = ub_cfg_map_close(&sub);
	if (rc) {
		free(*name);
		*name = NULL;
	}
	return rc;
}
