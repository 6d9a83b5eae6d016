/* The front half of every configuration loader: read the root file, warn
 * about its permissions, parse it, merge its includes (config.md §3), check
 * the top-level keys (§4.1), then parse [danger_zone] and resolve
 * [secrets]. */
#include "config/config_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/fileio.h"
#include "util/log.h"
#include "util/secmem.h"

static const char *const main_keys[] = {
    "device",	     "tuning",	"encryption", "danger_zone",
    "stripe_source", "secrets", NULL,
};
static const char *const target_keys[] = {"target", "danger_zone", "secrets",
					  NULL};
static const char *const export_keys[] = {"archive", "danger_zone", "secrets",
					  NULL};
static const char *const server_keys[] = {"server", "danger_zone", "secrets",
					  NULL};

const struct ub_cfg_kind ub_cfg_kind_main = {"Loading config failed",
					     main_keys};
const struct ub_cfg_kind ub_cfg_kind_target = {"Loading target config failed",
					       target_keys};
const struct ub_cfg_kind ub_cfg_kind_export = {
    "Loading export archive config failed", export_keys};
const struct ub_cfg_kind ub_cfg_kind_server = {"Loading listen config failed",
					       server_keys};

#define MERGE_PATH_MAX 1024

/* One validated entry of the root's `include` array. */
struct include_entry {
	char *rel;     /* heap: the path without its optional '?' */
	bool optional; /* written with a trailing '?' */
	struct ub_toml_pos pos;
};

/* Writes s in double quotes with ", \ and control characters escaped, the
 * way the reference prints a path in its include errors. */
static void quote(char *buf, size_t n, const char *s)
{
	size_t used = 0;

	if (n < 3) {
		if (n)
			buf[0] = '\0';
		return;
	}
	buf[used++] = '"';
	for (; *s && used + 8 < n; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			buf[used++] = '\\';
			buf[used++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			used += (size_t)snprintf(buf + used, n - used,
						 "\\u{%x}", c);
		} else {
			buf[used++] = (char)c;
		}
	}
	buf[used++] = '"';
	buf[used] = '\0';
}

/* Parses buf into a new tree whose positions carry file index idx. */
static int parse_buffer(const char *buf, size_t len, uint32_t idx,
			struct ub_toml_value **out, struct ub_toml_error *terr)
{
	memset(terr, 0, sizeof(*terr));
	return ub_toml_parse(buf, len, idx, out, terr);
}

/* True when s holds only Unicode White_Space characters (what the
 * reference's trim() removes); s is valid UTF-8 (the TOML parser saw to it). */
static bool is_blank(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		uint32_t cp;
		size_t n;

		if (*p < 0x80) {
			cp = *p;
			n = 1;
		} else if ((*p & 0xe0) == 0xc0 && p[1]) {
			cp = ((uint32_t)(*p & 0x1f) << 6) | (p[1] & 0x3f);
			n = 2;
		} else if ((*p & 0xf0) == 0xe0 && p[1] && p[2]) {
			cp = ((uint32_t)(*p & 0x0f) << 12) |
			     ((uint32_t)(p[1] & 0x3f) << 6) | (p[2] & 0x3f);
			n = 3;
		} else {
			return false;
		}
		if (!(cp == ' ' || (cp >= '\t' && cp <= '\r') || cp == 0x85 ||
		      cp == 0xa0 || cp == 0x1680 ||
		      (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 ||
		      cp == 0x2029 || cp == 0x202f || cp == 0x205f ||
		      cp == 0x3000))
			return false;
		p += n;
	}
	return true;
}

static bool has_parent_component(const char *s)
{
	const char *p = s;

	while (*p) {
		const char *end = strchr(p, '/');
		size_t n = end ? (size_t)(end - p) : strlen(p);

		if (n == 2 && p[0] == '.' && p[1] == '.')
			return true;
		p += n;
		while (*p == '/')
			p++;
	}
	return false;
}

static void free_entries(struct include_entry *e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(e[i].rel);
	free(e);
}

/* Steps 2-3 of §3: the shape of `include` and every entry, before any file
 * is read. *out is a heap array of *count entries (caller frees). */
static int validate_includes(const struct ub_toml_value *inc,
			     const struct ub_cfg_files *files,
			     struct include_entry **out, size_t *count,
			     struct ub_err *err)
{
	struct include_entry *e; /* heap array, freed on error */
	size_t n;
	int rc = 0;

	*out = NULL;
	*count = 0;
	if (inc->type != UB_TOML_ARRAY)
		return ub_cfg_err(err, files, &inc->pos, NULL,
				  "'include' must be an array of strings");
	n = ub_toml_array_len(inc);
	for (size_t i = 0; i < n; i++) {
		const struct ub_toml_value *v = ub_toml_array_at(inc, i);

		if (v->type != UB_TOML_STRING)
			return ub_cfg_err(
			    err, files, &v->pos, NULL,
			    "'include' must be an array of strings");
	}
	e = calloc(n ? n : 1, sizeof(*e));
	if (!e)
		return ub_err_ret(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const struct ub_toml_value *v = ub_toml_array_at(inc, i);
		size_t len = strlen(v->u.str.ptr);
		char q[UB_ERR_MAX / 4];

		e[i].pos = v->pos;
		e[i].optional = len > 0 && v->u.str.ptr[len - 1] == '?';
		if (e[i].optional)
			len--;
		e[i].rel = strndup(v->u.str.ptr, len);
		if (!e[i].rel) {
			rc = ub_err_ret(err, -ENOMEM, "out of memory");
			goto err_free;
		}
		quote(q, sizeof(q), e[i].rel);
		if (is_blank(e[i].rel)) {
			rc = ub_cfg_err(err, files, &v->pos, NULL,
					"include '%s': include path must not "
					"be empty",
					q);
			goto err_free;
		}
		if (e[i].rel[0] == '/') {
			rc = ub_cfg_err(err, files, &v->pos, NULL,
					"include '%s': include path must be "
					"relative",
					q);
			goto err_free;
		}
		if (has_parent_component(e[i].rel) ||
		    v->u.str.len != strlen(v->u.str.ptr)) {
			rc = ub_cfg_err(
			    err, files, &v->pos, NULL,
			    "include '%s': include path must be strictly "
			    "relative and must not contain '..', drive "
			    "prefixes, or root components",
			    q);
			goto err_free;
		}
	}
	*out = e;
	*count = n;
	return 0;

err_free:
	free_entries(e, n);
	return rc;
}

static struct ub_toml_value *find_key(const struct ub_toml_value *t,
				      const char *k, size_t klen, size_t *idx)
{
	size_t n = ub_toml_table_len(t);

	for (size_t i = 0; i < n; i++) {
		size_t l;
		const char *key = ub_toml_table_key(t, i, &l);

		if (l == klen && memcmp(key, k, klen) == 0) {
			*idx = i;
			return ub_toml_table_value(t, i);
		}
	}
	return NULL;
}

struct merge_ctx {
	const struct ub_cfg_files *files;
	const char *entry; /* quoted include entry, for messages */
	struct ub_err *err;
	char path[MERGE_PATH_MAX]; /* dotted path of the tables being merged */
};

/* Moves every key of src into dst (config.md §3 merge rule). src is left
 * empty on success; on failure both are partly merged (the caller frees
 * them). */
static int merge_tables(struct merge_ctx *mc, struct ub_toml_value *dst,
			struct ub_toml_value *src)
{
	size_t base = strlen(mc->path);
	int rc = 0;

	while (ub_toml_table_len(src) > 0) {
		size_t klen, di;
		const char *k = ub_toml_table_key(src, 0, &klen);
		struct ub_toml_pos kpos = ub_toml_table_key_pos(src, 0);
		struct ub_toml_value *sv = ub_toml_table_value(src, 0);
		struct ub_toml_value *dv = find_key(dst, k, klen, &di);
		char *key; /* heap copy: taking the value frees k */

		snprintf(mc->path + base, sizeof(mc->path) - base, "%s%s",
			 base ? "." : "", k);
		if (klen != strlen(k))
			return ub_cfg_err(mc->err, mc->files, &kpos, NULL,
					  "include '%s': key '%s' contains a "
					  "NUL character",
					  mc->entry, mc->path);
		if (dv) {
			struct ub_toml_pos dpos =
			    ub_toml_table_key_pos(dst, di);
			const char *first = dpos.file < mc->files->count
						? mc->files->names[dpos.file]
						: "?";
			bool dt = dv->type == UB_TOML_TABLE;
			bool st = sv->type == UB_TOML_TABLE;

			if (dt != st)
				return ub_cfg_err(
				    mc->err, mc->files, &kpos, NULL,
				    "include '%s': type mismatch for key "
				    "'%s' during merge (first defined at "
				    "%s:%u:%u)",
				    mc->entry, mc->path, first, dpos.line,
				    dpos.col);
			if (!dt)
				return ub_cfg_err(
				    mc->err, mc->files, &kpos, NULL,
				    "include '%s': duplicate key '%s' "
				    "during merge (first defined at "
				    "%s:%u:%u)",
				    mc->entry, mc->path, first, dpos.line,
				    dpos.col);
			rc = merge_tables(mc, dv, sv);
			if (rc)
				return rc;
		}
		key = strdup(k);
		if (!key)
			return ub_err_ret(mc->err, -ENOMEM, "out of memory");
		sv = ub_toml_table_take(src, key);
		if (dv) {
			ub_toml_free(sv);
		} else {
			rc = ub_toml_table_insert(dst, key, klen, kpos, sv);
			if (rc) {
				ub_toml_free(sv);
				free(key);
				return ub_err_ret(mc->err, rc, "out of memory");
			}
		}
		free(key);
		mc->path[base] = '\0';
	}
	return 0;
}

/* Step 5 of §3 for one entry: read, parse, refuse nested includes, merge. */
static int merge_one(struct ub_cfg_doc *doc, const struct include_entry *e,
		     struct ub_err *err)
{
	struct merge_ctx mc = {.files = &doc->files, .err = err};
	struct ub_toml_value *tree = NULL; /* the included file's tree */
	struct ub_toml_error terr;
	char q[UB_ERR_MAX / 4];
	char *full; /* heap: config_dir joined with the entry */
	char *buf;  /* heap: file content, wiped before free */
	size_t len;
	uint32_t idx;
	int rc;

	quote(q, sizeof(q), e->rel);
	mc.entry = q;
	full = ub_path_join(doc->config_dir, e->rel);
	if (!full)
		return ub_err_ret(err, -ENOMEM, "out of memory");
	rc = ub_read_file(full, UB_CONFIG_FILE_MAX, &buf, &len, err);
	if (rc == -ENOENT && e->optional) {
		LOG_DEBUG("optional include '%s' not found, skipped", full);
		rc = 0;
		goto out_free_path;
	}
	if (rc) {
		char os[160];

		if (rc == -EFBIG || rc == -ENOMEM)
			snprintf(os, sizeof(os), "%.150s", err->msg);
		else
			ub_os_error(-rc, os, sizeof(os));
		ub_cfg_err(err, &doc->files, &e->pos, NULL,
			   "include '%s': failed to read: %s", q, os);
		goto out_free_path;
	}
	rc = ub_cfg_files_add(&doc->files, full, &idx);
	if (rc) {
		ub_cfg_err(err, &doc->files, &e->pos, NULL,
			   "include '%s': too many configuration files "
			   "(at most %d)",
			   q, UB_CFG_MAX_FILES);
		goto out_free_buf;
	}
	rc = parse_buffer(buf, len, idx, &tree, &terr);
	if (rc) {
		if (rc == -ENOMEM)
			ub_err_set(err, "out of memory");
		else
			ub_err_set(err,
				   "include '%s': parse error: %s:%u:%u: %s", q,
				   full, terr.line, terr.col, terr.msg);
		goto out_free_buf;
	}
	for (size_t i = 0; i < ub_toml_table_len(tree); i++) {
		size_t klen;
		const char *k = ub_toml_table_key(tree, i, &klen);

		if (klen == 7 && memcmp(k, "include", 7) == 0) {
			struct ub_toml_pos pos = ub_toml_table_key_pos(tree, i);

			rc = ub_cfg_err(err, &doc->files, &pos, NULL,
					"include '%s': nested includes are not "
					"allowed",
					q);
			goto out_free_tree;
		}
	}
	rc = merge_tables(&mc, doc->root, tree);

out_free_tree:
	ub_toml_free(tree);
out_free_buf:
	ub_wipe(buf, len);
	free(buf);
out_free_path:
	free(full);
	return rc;
}

static int resolve_includes(struct ub_cfg_doc *doc, struct ub_err *err)
{
	struct ub_toml_value *inc; /* taken out of the root; freed here */
	struct include_entry *entries = NULL; /* heap array */
	size_t count = 0;
	int rc;

	if (!ub_toml_table_get(doc->root, "include"))
		return 0;
	rc = validate_includes(ub_toml_table_get(doc->root, "include"),
			       &doc->files, &entries, &count, err);
	if (rc)
		return rc;
	inc = ub_toml_table_take(doc->root, "include");
	for (size_t i = 0; i < count && !rc; i++)
		rc = merge_one(doc, &entries[i], err);
	ub_toml_free(inc);
	free_entries(entries, count);
	return rc;
}

static int check_top_level(const struct ub_cfg_doc *doc,
			   const struct ub_cfg_kind *kind, struct ub_err *err)
{
	size_t n = ub_toml_table_len(doc->root);

	for (size_t i = 0; i < n; i++) {
		size_t klen;
		const char *k = ub_toml_table_key(doc->root, i, &klen);
		bool ok = false;

		for (const char *const *a = kind->top_keys; *a && !ok; a++)
			ok = strlen(*a) == klen && memcmp(*a, k, klen) == 0;
		if (!ok) {
			struct ub_toml_pos pos =
			    ub_toml_table_key_pos(doc->root, i);

			return ub_cfg_err(err, &doc->files, &pos, NULL,
					  "Unknown top-level config key '%s'",
					  k);
		}
	}
	return 0;
}

void ub_cfg_doc_free(struct ub_cfg_doc *doc)
{
	ub_secrets_free(&doc->secrets);
	ub_toml_free(doc->root);
	ub_cfg_files_free(&doc->files);
	free(doc->config_dir);
	memset(doc, 0, sizeof(*doc));
}

int ub_cfg_doc_load(const char *path, const struct ub_cfg_kind *kind,
		    struct ub_cfg_doc *doc, struct ub_err *err)
{
	struct ub_toml_error terr;
	char *buf = NULL; /* heap: root file content, wiped before free */
	size_t len = 0;
	uint32_t idx;
	int rc;

	memset(doc, 0, sizeof(*doc));
	/* 1. read */
	rc = ub_read_file(path, UB_CONFIG_FILE_MAX, &buf, &len, err);
	if (rc) {
		ub_err_prefix(err, "%s: '%s'", kind->read_context, path);
		goto err_out;
	}
	/* 2. permissions */
	ub_warn_if_accessible_to_others(path);
	doc->config_dir = ub_path_dirname(path);
	if (!doc->config_dir) {
		rc = ub_err_ret(err, -ENOMEM, "out of memory");
		goto err_free_buf;
	}
	rc = ub_cfg_files_add(&doc->files, path, &idx);
	if (rc) {
		rc = ub_err_ret(err, rc, "out of memory");
		goto err_free_buf;
	}
	/* 3. parse */
	rc = parse_buffer(buf, len, idx, &doc->root, &terr);
	if (rc) {
		if (rc == -ENOMEM)
			ub_err_set(err, "out of memory");
		else
			ub_err_set(err,
				   "Failed to parse TOML config: %s:%u:%u: %s",
				   path, terr.line, terr.col, terr.msg);
		goto err_free_buf;
	}
	ub_wipe(buf, len);
	free(buf);
	buf = NULL;
	/* 4. includes, 5. top-level keys */
	rc = resolve_includes(doc, err);
	if (rc)
		goto err_out;
	rc = check_top_level(doc, kind, err);
	if (rc)
		goto err_out;
	/* 6. danger zone, 7. secrets */
	rc = ub_danger_zone_parse(ub_toml_table_get(doc->root, "danger_zone"),
				  &doc->files, &doc->dz, err);
	if (rc)
		goto err_out;
	rc = ub_secrets_load(ub_toml_table_get(doc->root, "secrets"),
			     doc->config_dir, &doc->dz, &doc->files,
			     &doc->secrets, err);
	if (rc)
		goto err_out;
	return 0;

err_free_buf:
	ub_wipe(buf, len);
	free(buf);
err_out:
	ub_cfg_doc_free(doc);
	return rc;
}
