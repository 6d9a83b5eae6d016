#include "config/secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/kek.h"
#include "util/base64.h"
#include "util/log.h"
#include "util/secmem.h"

#define NO_KEK SIZE_MAX

/* Loader state for one ub_secrets_load call. */
struct loader {
	const char *config_dir;		  /* borrowed */
	const struct ub_danger_zone *dz;  /* borrowed */
	const struct ub_cfg_files *files; /* borrowed */
	struct ub_err *err;		  /* borrowed */
	struct ub_secrets s;		  /* owned until handed to the caller */
	const struct ub_toml_value **inl; /* heap array; entries borrowed from
					     the tree: inline source strings */
	size_t *kek;			  /* heap array: KEK index or NO_KEK */
	bool *resolved;			  /* heap array */
};

static const char *const encodings[] = {"plaintext", "base64", NULL};

/* "secrets.<name>", quoted like every other key path. */
static void secret_path(char *buf, size_t n, const char *name)
{
	ub_cfg_keypath(buf, n, "secrets", name);
}

/* Error about secret i: "<file>:<line>:<col>: secrets.<name>: <text>". */
__attribute__((format(printf, 3, 4))) static int
secret_err(struct loader *ld, size_t i, const char *fmt, ...)
{
	const struct ub_secret *s = &ld->s.items[i];
	char path[UB_CFG_PATH_MAX];
	char msg[UB_ERR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	secret_path(path, sizeof(path), s->name);
	return ub_cfg_err(ld->err, ld->files, &s->pos, path, "%s", msg);
}

/* "<strerror> (os error N)", the way the reference renders OS errors. */
static void os_error(char *buf, size_t n, int errnum)
{
	char tmp[128];

	snprintf(buf, n, "%s (os error %d)",
		 strerror_r(errnum, tmp, sizeof(tmp)), errnum);
}

/* Path rendered as a quoted, escaped string (the reference's debug form). */
static void quote_path(char *buf, size_t n, const char *path)
{
	size_t o = 0;

	if (n < 3) {
		if (n)
			buf[0] = '\0';
		return;
	}
	buf[o++] = '"';
	for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
		char esc[16];
		int w;

		if (*p == '"' || *p == '\\')
			w = snprintf(esc, sizeof(esc), "\\%c", *p);
		else if (*p == '\n')
			w = snprintf(esc, sizeof(esc), "\\n");
		else if (*p == '\r')
			w = snprintf(esc, sizeof(esc), "\\r");
		else if (*p == '\t')
			w = snprintf(esc, sizeof(esc), "\\t");
		else if (*p < 0x20 || *p == 0x7f)
			w = snprintf(esc, sizeof(esc), "\\u{%x}", *p);
		else
			w = snprintf(esc, sizeof(esc), "%c", *p);
		if (w < 0 || o + (size_t)w + 2 > n)
			break;
		memcpy(buf + o, esc, (size_t)w);
		o += (size_t)w;
	}
	buf[o++] = '"';
	buf[o] = '\0';
}

/* Strict UTF-8 check: no overlong forms, surrogates or values past
 * U+10FFFF. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];
		uint32_t cp;
		size_t len;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			len = 2;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (size_t j = 1; j < len; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return false;
		i += len;
	}
	return true;
}

/* Heap path: path unchanged when absolute or config_dir is empty, else
 * config_dir joined with it. NULL when out of memory. */
static char *join_path(const char *config_dir, const char *path)
{
	size_t dl = strlen(config_dir);
	char *out;

	if (path[0] == '/' || dl == 0)
		return strdup(path);
	if (asprintf(&out, "%s%s%s", config_dir,
		     config_dir[dl - 1] == '/' ? "" : "/", path) < 0)
		return NULL;
	return out;
}

/* Reads `source`: a table with exactly one of file, inline, env. */
static int parse_source(struct loader *ld, struct ub_cfg_map *m, size_t i)
{
	struct ub_secret *s = &ld->s.items[i];
	const struct ub_toml_value *src = ub_cfg_get(m, "source");
	const struct ub_toml_value *v;
	struct ub_toml_pos pos;
	struct ub_cfg_map sm;
	char spath[UB_CFG_PATH_MAX];
	char kpath[UB_CFG_PATH_MAX];
	char desc[64];
	const char *key;
	size_t klen;
	int rc;

	if (!src) {
		pos = ub_cfg_pos(m, NULL);
		return ub_cfg_err(ld->err, ld->files, &pos, m->path,
				  "secrets: missing field `source`");
	}
	ub_cfg_keypath(spath, sizeof(spath), m->path, "source");
	rc = ub_cfg_map_open(&sm, src, spath, "secrets", ld->files, ld->err);
	if (rc)
		return rc;
	sm.redact = true;
	if (ub_toml_table_len(src) != 1)
		return ub_cfg_err(ld->err, ld->files, &src->pos, spath,
				  "secrets: expected exactly one source kind "
				  "(`file`, `inline` or `env`), found %zu keys",
				  ub_toml_table_len(src));
	key = ub_toml_table_key(src, 0, &klen);
	if (klen == 4 && strcmp(key, "file") == 0) {
		s->source = UB_SECRET_SOURCE_FILE;
		return ub_cfg_get_str(&sm, "file", true, &s->source_arg);
	}
	if (klen == 3 && strcmp(key, "env") == 0) {
		s->source = UB_SECRET_SOURCE_ENV;
		return ub_cfg_get_str(&sm, "env", true, &s->source_arg);
	}
	pos = ub_toml_table_key_pos(src, 0);
	if (klen != 6 || strcmp(key, "inline") != 0)
		return ub_cfg_err(ld->err, ld->files, &pos, spath,
				  "secrets: unknown variant `%.64s`, expected "
				  "one of `file`, `inline`, `env`",
				  key);
	s->source = UB_SECRET_SOURCE_INLINE;
	v = ub_cfg_get(&sm, "inline");
	if (v->type != UB_TOML_STRING) {
		ub_cfg_keypath(kpath, sizeof(kpath), spath, "inline");
		ub_cfg_describe(desc, sizeof(desc), v, true);
		return ub_cfg_err(ld->err, ld->files, &pos, kpath,
				  "secrets: invalid type: %s, expected a "
				  "string",
				  desc);
	}
	ld->inl[i] = v;
	return 0;
}

/* Reads the definition of the i-th entry of the secrets table. */
static int parse_def(struct loader *ld, const struct ub_toml_value *tbl,
		     size_t i)
{
	struct ub_secret *s = &ld->s.items[i];
	size_t klen;
	const char *key = ub_toml_table_key(tbl, i, &klen);
	char path[UB_CFG_PATH_MAX];
	struct ub_cfg_map m;
	char *joined;
	int enc = UB_SECRET_ENCODING_PLAINTEXT;
	int rc;

	s->pos = ub_toml_table_key_pos(tbl, i);
	secret_path(path, sizeof(path), key);
	if (strlen(key) != klen)
		return ub_cfg_err(ld->err, ld->files, &s->pos, path,
				  "secrets: secret name contains a NUL "
				  "character");
	s->name = strdup(key);
	if (!s->name)
		return ub_err_ret(ld->err, -ENOMEM, "out of memory");
	rc = ub_cfg_map_open(&m, ub_toml_table_value(tbl, i), path, "secrets",
			     ld->files, ld->err);
	if (rc)
		return rc;
	m.redact = true;
	rc = parse_source(ld, &m, i);
	if (rc)
		return rc;
	rc = ub_cfg_get_enum(&m, "encoding", encodings, false, &enc);
	if (rc)
		return rc;
	s->encoding = (enum ub_secret_encoding)enc;
	rc = ub_cfg_get_ref(&m, "encrypted_by", false, &s->encrypted_by);
	if (rc)
		return rc;
	rc = ub_cfg_map_close(&m);
	if (rc)
		return rc;
	if (s->source == UB_SECRET_SOURCE_FILE) {
		joined = join_path(ld->config_dir, s->source_arg);
		if (!joined)
			return ub_err_ret(ld->err, -ENOMEM, "out of memory");
		free(s->source_arg);
		s->source_arg = joined;
	}
	return 0;
}

static size_t find_index(const struct ub_secrets *s, const char *name)
{
	for (size_t i = 0; i < s->count; i++)
		if (strcmp(s->items[i].name, name) == 0)
			return i;
	return NO_KEK;
}

/* Every encrypted_by must name a defined secret (checked before any load). */
static int link_keks(struct loader *ld)
{
	for (size_t i = 0; i < ld->s.count; i++) {
		const char *kek = ld->s.items[i].encrypted_by;

		ld->kek[i] = NO_KEK;
		if (!kek)
			continue;
		ld->kek[i] = find_index(&ld->s, kek);
		if (ld->kek[i] == NO_KEK)
			return secret_err(ld, i, "missing KEK reference '%s'",
					  kek);
	}
	return 0;
}

/* Reads a file source into *buf (secmem, UB_SECRET_FILE_READ_CAP bytes,
 * owned by the caller even on failure). */
static int read_file(struct loader *ld, size_t i, unsigned char **buf,
		     size_t *len)
{
	const char *path = ld->s.items[i].source_arg;
	char qpath[UB_CFG_PATH_MAX * 2];
	char oserr[160];
	struct stat st;
	size_t got = 0;
	int fd, rc;

	quote_path(qpath, sizeof(qpath), path);
	do {
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	} while (fd < 0 && errno == EINTR);
	if (fd < 0) {
		os_error(oserr, sizeof(oserr), errno);
		return secret_err(ld, i, "failed to open '%s': %s", qpath,
				  oserr);
	}
	if (fstat(fd, &st)) {
		os_error(oserr, sizeof(oserr), errno);
		rc = secret_err(ld, i, "failed to stat '%s': %s", qpath, oserr);
		goto out_close;
	}
	if (S_ISREG(st.st_mode)) {
		if (!ub_dz_regular_file(ld->dz)) {
			rc = secret_err(ld, i,
					"regular file cannot be used as source "
					"unless danger_zone."
					"allow_secret_over_regular_file is "
					"enabled.");
			goto out_close;
		}
		if (st.st_mode & 077)
			LOG_WARN("secret file '%s' is accessible to other "
				 "users (mode %04o); consider restricting to "
				 "0600",
				 path, (unsigned)(st.st_mode & 07777));
	}
	*buf = ub_secmem_alloc(UB_SECRET_FILE_READ_CAP);
	if (!*buf) {
		rc = ub_err_ret(ld->err, -ENOMEM, "out of memory");
		goto out_close;
	}
	while (got < UB_SECRET_FILE_READ_CAP) {
		ssize_t r = read(fd, *buf + got, UB_SECRET_FILE_READ_CAP - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			os_error(oserr, sizeof(oserr), errno);
			secret_err(ld, i, "failed to read '%s': I/O error: %s",
				   qpath, oserr);
			goto out_close;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	*len = got;
	rc = 0;
out_close:
	close(fd);
	return rc;
}

/* Borrows the bytes of an env source into *raw. */
static int read_env(struct loader *ld, size_t i, const unsigned char **raw,
		    size_t *len)
{
	const char *var = ld->s.items[i].source_arg;
	const char *val = NULL; /* borrowed from the environment */

	if (!ub_dz_env_secrets(ld->dz))
		return secret_err(ld, i,
				  "source.env requires danger_zone."
				  "allow_env_secrets to be enabled "
				  "(environment variables persist in "
				  "/proc/PID/environ)");
	if (*var && !strchr(var, '='))
		val = getenv(var);
	if (!val)
		return secret_err(ld, i,
				  "failed to read environment variable '%s': "
				  "environment variable not found",
				  var);
	if (!utf8_valid((const unsigned char *)val, strlen(val)))
		return secret_err(ld, i,
				  "failed to read environment variable '%s': "
				  "environment variable was not valid unicode",
				  var);
	*raw = (const unsigned char *)val;
	*len = strlen(val);
	return 0;
}

/* Loads, decodes, size-checks and (with a KEK) opens secret i. */
static int resolve_one(struct loader *ld, size_t i)
{
	struct ub_secret *s = &ld->s.items[i];
	const unsigned char *raw = NULL; /* borrowed: file buffer, TOML string
					    or environment */
	size_t raw_len = 0;
	unsigned char *fbuf = NULL; /* secmem, UB_SECRET_FILE_READ_CAP bytes:
				       file contents */
	unsigned char *envl = NULL; /* secmem, dlen bytes: decoded envelope */
	unsigned char *val = NULL;  /* secmem, vlen bytes: the value until
				       handed to s */
	const unsigned char *data;  /* borrowed: decoded bytes */
	size_t dlen = 0, vlen = 0;
	const struct ub_secret *kek;
	struct ub_err sub;
	int rc;

	switch (s->source) {
	case UB_SECRET_SOURCE_FILE:
		rc = read_file(ld, i, &fbuf, &raw_len);
		raw = fbuf;
		break;
	case UB_SECRET_SOURCE_INLINE:
		rc = 0;
		if (!s->encrypted_by && !ub_dz_inline_plaintext(ld->dz))
			rc = secret_err(ld, i,
					"inline secret source requires a KEK "
					"unless danger_zone."
					"allow_inline_plaintext_secrets is "
					"enabled");
		raw = (const unsigned char *)ld->inl[i]->u.str.ptr;
		raw_len = ld->inl[i]->u.str.len;
		break;
	default:
		rc = read_env(ld, i, &raw, &raw_len);
		break;
	}
	if (rc)
		goto out;

	if (s->encoding == UB_SECRET_ENCODING_BASE64) {
		raw_len =
		    ub_base64_trim_trailing_ws((const char *)raw, raw_len);
		rc = ub_base64_decode((const char *)raw, raw_len, NULL, 0,
				      &dlen, &sub);
		if (rc) {
			rc = secret_err(ld, i, "failed to decode: %s", sub.msg);
			goto out;
		}
	} else {
		dlen = raw_len;
	}
	if (dlen > UB_SECRET_MAX_BYTES) {
		rc = secret_err(ld, i,
				"secret data exceeds maximum allowed size of "
				"%d bytes",
				UB_SECRET_MAX_BYTES);
		goto out;
	}

	data = raw;
	if (s->encoding == UB_SECRET_ENCODING_BASE64) {
		/* Decoded straight into the value when there is no KEK. */
		unsigned char **dst = s->encrypted_by ? &envl : &val;

		*dst = ub_secmem_alloc(dlen);
		if (!*dst) {
			rc = ub_err_ret(ld->err, -ENOMEM, "out of memory");
			goto out;
		}
		if (!s->encrypted_by)
			vlen = dlen;
		rc = ub_base64_decode((const char *)raw, raw_len, *dst, dlen,
				      &dlen, &sub);
		if (rc) {
			rc = secret_err(ld, i, "failed to decode: %s", sub.msg);
			goto out;
		}
		data = *dst;
	}

	if (!s->encrypted_by) {
		if (!val) {
			val = ub_secmem_alloc(dlen);
			if (!val) {
				rc = ub_err_ret(ld->err, -ENOMEM,
						"out of memory");
				goto out;
			}
			vlen = dlen;
			memcpy(val, data, dlen);
		}
	} else {
		kek = &ld->s.items[ld->kek[i]];
		vlen = dlen > UB_KEK_OVERHEAD ? dlen - UB_KEK_OVERHEAD : 0;
		val = ub_secmem_alloc(vlen);
		if (!val) {
			rc = ub_err_ret(ld->err, -ENOMEM, "out of memory");
			goto out;
		}
		rc = ub_kek_open(kek->value, kek->len, s->name, strlen(s->name),
				 data, dlen, val, &sub);
		if (rc) {
			secret_err(ld, i,
				   "failed to decrypt using KEK '%s': %s",
				   s->encrypted_by, sub.msg);
			goto out;
		}
	}
	s->value = val;
	s->len = vlen;
	val = NULL;
	rc = 0;
out:
	ub_secmem_free(val, vlen);
	ub_secmem_free(envl, envl ? dlen : 0);
	ub_secmem_free(fbuf, UB_SECRET_FILE_READ_CAP);
	return rc;
}

/* Names the cycle that the first unresolved secret runs into. */
static int cycle_err(struct loader *ld)
{
	char chain[UB_ERR_MAX / 2] = "";
	size_t used = 0, start = 0, i;
	bool *seen; /* heap: secrets visited on the walk */

	while (start < ld->s.count && ld->resolved[start])
		start++;
	seen = calloc(ld->s.count, sizeof(*seen));
	if (!seen)
		return ub_err_ret(ld->err, -ENOMEM, "out of memory");
	/* Every unresolved secret has an unresolved KEK: the walk loops. */
	for (i = start; !seen[i]; i = ld->kek[i])
		seen[i] = true;
	start = i;
	do {
		int w = snprintf(chain + used, sizeof(chain) - used, "'%s' -> ",
				 ld->s.items[i].name);

		if (w < 0 || (size_t)w >= sizeof(chain) - used)
			break;
		used += (size_t)w;
		i = ld->kek[i];
	} while (i != start);
	free(seen);
	return ub_cfg_err(ld->err, ld->files, &ld->s.items[start].pos, NULL,
			  "circular secret references detected: %s'%s'", chain,
			  ld->s.items[start].name);
}

/* KEKs before the secrets they open; among ready secrets the earliest
 * definition first. */
static int resolve_all(struct loader *ld)
{
	size_t done = 0;
	int rc;

	while (done < ld->s.count) {
		size_t next = NO_KEK;

		for (size_t i = 0; i < ld->s.count; i++) {
			if (ld->resolved[i])
				continue;
			if (ld->kek[i] == NO_KEK || ld->resolved[ld->kek[i]]) {
				next = i;
				break;
			}
		}
		if (next == NO_KEK)
			return cycle_err(ld);
		rc = resolve_one(ld, next);
		if (rc)
			return rc;
		ld->resolved[next] = true;
		done++;
	}
	return 0;
}

int ub_secrets_load(const struct ub_toml_value *secrets, const char *config_dir,
		    const struct ub_danger_zone *dz,
		    const struct ub_cfg_files *files, struct ub_secrets *out,
		    struct ub_err *err)
{
	struct loader ld = {
	    .config_dir = config_dir ? config_dir : "",
	    .dz = dz,
	    .files = files,
	    .err = err,
	};
	size_t n;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!secrets)
		return 0;
	if (secrets->type != UB_TOML_TABLE)
		return ub_cfg_err(err, files, &secrets->pos, NULL,
				  "[secrets] must be a table");
	n = ub_toml_table_len(secrets);
	if (!n)
		return 0;
	ld.s.items = calloc(n, sizeof(*ld.s.items));
	ld.inl = calloc(n, sizeof(*ld.inl));
	ld.kek = calloc(n, sizeof(*ld.kek));
	ld.resolved = calloc(n, sizeof(*ld.resolved));
	if (!ld.s.items || !ld.inl || !ld.kek || !ld.resolved) {
		rc = ub_err_ret(err, -ENOMEM, "out of memory");
		goto out;
	}
	ld.s.count = n;
	for (size_t i = 0; i < n; i++) {
		rc = parse_def(&ld, secrets, i);
		if (rc)
			goto out;
	}
	rc = link_keks(&ld);
	if (rc)
		goto out;
	rc = resolve_all(&ld);
	if (rc)
		goto out;
	*out = ld.s;
	ld.s = (struct ub_secrets){0};
out:
	ub_secrets_free(&ld.s);
	free(ld.resolved);
	free(ld.kek);
	free(ld.inl);
	return rc;
}

void ub_secrets_free(struct ub_secrets *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->count; i++) {
		struct ub_secret *it = &s->items[i];

		free(it->name);
		free(it->source_arg);
		free(it->encrypted_by);
		ub_secmem_free(it->value, it->len);
	}
	free(s->items);
	memset(s, 0, sizeof(*s));
}

const struct ub_secret *ub_secrets_find(const struct ub_secrets *s,
					const char *name)
{
	size_t i = find_index(s, name);

	return i == NO_KEK ? NULL : &s->items[i];
}
