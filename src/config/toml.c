/* TOML 1.0 decoder (see toml.h).
 *
 * The whole input is first checked for well-formed UTF-8 and for carriage
 * returns outside CRLF pairs; a recursive-descent parser then builds the
 * tree. Strings and keys are decoded in two passes (measure, then fill) so
 * their bytes land in exactly one heap buffer, which is wiped before it is
 * freed. Containers are nested at most TOML_MAX_DEPTH deep so that the
 * recursive parser, writer and destructor have a bounded stack. */
#include "config/toml.h"

#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "util/secmem.h"

/* Deepest container (table or array) below the root, which is depth 0. */
#define TOML_MAX_DEPTH 100
/* Tables with at least this many keys get a hash index. */
#define TOML_INDEX_MIN 16

/* How a table or array came to exist; drives the redefinition rules. */
enum toml_kind {
	KIND_API = 0,  /* made by ub_toml_table_insert and friends */
	KIND_ROOT,     /* the document itself */
	KIND_IMPLICIT, /* created on the way to a [header] */
	KIND_HEADER,   /* defined by [header], or an [[array]] element */
	KIND_DOTTED,   /* created by dotted keys */
	KIND_INLINE,   /* inline table: frozen once closed */
	KIND_STATIC,   /* array value [ ... ] */
	KIND_AOT,      /* array of tables made with [[header]] */
};

struct toml_entry {
	char *key; /* owned: key_len + 1 bytes, wiped before free */
	size_t key_len;
	uint32_t hash;
	struct ub_toml_pos key_pos;
	struct ub_toml_value *val; /* owned */
};

struct ub_toml_container {
	size_t len;
	size_t cap;
	struct toml_entry *ents;      /* owned (tables); no key bytes inside */
	struct ub_toml_value **items; /* owned (arrays) */
	uint32_t *index; /* owned: open-addressing slots, entry index + 1 */
	size_t index_cap;
	uint32_t depth;
	enum toml_kind kind;
};

/* ---- values and containers ---------------------------------------- */

static struct ub_toml_value *value_new(enum ub_toml_type type,
				       struct ub_toml_pos pos)
{
	struct ub_toml_value *v = calloc(1, sizeof(*v)); /* owned by caller */

	if (!v)
		return NULL;
	v->type = type;
	v->pos = pos;
	if (type == UB_TOML_TABLE || type == UB_TOML_ARRAY) {
		v->c = calloc(1, sizeof(*v->c)); /* owned by v */
		if (!v->c) {
			free(v);
			return NULL;
		}
	}
	return v;
}

void ub_toml_free(struct ub_toml_value *v)
{
	struct ub_toml_container *c;
	size_t i;

	if (!v)
		return;
	if (v->type == UB_TOML_STRING && v->u.str.ptr) {
		ub_wipe(v->u.str.ptr, v->u.str.len + 1);
		free(v->u.str.ptr);
	}
	c = v->c;
	if (c) {
		for (i = 0; v->type == UB_TOML_TABLE && i < c->len; i++) {
			ub_wipe(c->ents[i].key, c->ents[i].key_len + 1);
			free(c->ents[i].key);
			ub_toml_free(c->ents[i].val);
		}
		for (i = 0; v->type == UB_TOML_ARRAY && i < c->len; i++)
			ub_toml_free(c->items[i]);
		free(c->ents);
		free(c->items);
		free(c->index);
		free(c);
	}
	free(v);
}

const char *ub_toml_type_name(enum ub_toml_type t)
{
	switch (t) {
	case UB_TOML_TABLE:
		return "table";
	case UB_TOML_ARRAY:
		return "array";
	case UB_TOML_STRING:
		return "string";
	case UB_TOML_INTEGER:
		return "integer";
	case UB_TOML_FLOAT:
		return "float";
	case UB_TOML_BOOL:
		return "bool";
	case UB_TOML_DATETIME:
		return "datetime";
	case UB_TOML_DATETIME_LOCAL:
		return "datetime-local";
	case UB_TOML_DATE_LOCAL:
		return "date-local";
	case UB_TOML_TIME_LOCAL:
		return "time-local";
	}
	return "unknown";
}

static uint32_t key_hash(const char *k, size_t n)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= (unsigned char)k[i];
		h *= 16777619u;
	}
	return h;
}

static void index_put(struct ub_toml_container *c, size_t i)
{
	size_t mask = c->index_cap - 1;
	size_t s = c->ents[i].hash & mask;

	while (c->index[s])
		s = (s + 1) & mask;
	c->index[s] = (uint32_t)(i + 1);
}

/* Rebuilds the hash index with room to grow. Small tables, or a failed
 * allocation, leave no index: lookups then scan the entries. */
static void index_rebuild(struct ub_toml_container *c)
{
	size_t want = 64;
	size_t i;

	free(c->index);
	c->index = NULL;
	c->index_cap = 0;
	if (c->len < TOML_INDEX_MIN || c->len >= UINT32_MAX / 8)
		return;
	while (want < c->len * 4)
		want *= 2;
	c->index = calloc(want, sizeof(*c->index)); /* owned by c */
	if (!c->index)
		return;
	c->index_cap = want;
	for (i = 0; i < c->len; i++)
		index_put(c, i);
}

static bool entry_is(const struct toml_entry *e, const char *k, size_t n,
		     uint32_t h)
{
	return e->hash == h && e->key_len == n &&
	       (n == 0 || memcmp(e->key, k, n) == 0);
}

/* Index of key k in table container c, or -1. */
static ssize_t table_find(const struct ub_toml_container *c, const char *k,
			  size_t n)
{
	uint32_t h = key_hash(k, n);
	size_t i, s, mask;

	if (!c)
		return -1;
	if (c->index) {
		mask = c->index_cap - 1;
		for (s = h & mask; c->index[s]; s = (s + 1) & mask) {
			i = c->index[s] - 1;
			if (entry_is(&c->ents[i], k, n, h))
				return (ssize_t)i;
		}
		return -1;
	}
	for (i = 0; i < c->len; i++)
		if (entry_is(&c->ents[i], k, n, h))
			return (ssize_t)i;
	return -1;
}

/* Appends an entry; on success the table owns key and val. */
static int table_add(struct ub_toml_container *c, char *key, size_t key_len,
		     struct ub_toml_pos pos, struct ub_toml_value *val)
{
	struct toml_entry *ne;
	size_t ncap;

	if (c->len == c->cap) {
		ncap = c->cap ? c->cap * 2 : 4;
		if (ncap > SIZE_MAX / sizeof(*ne))
			return -ENOMEM;
		/* owned by c; entries point at keys, they hold no key bytes */
		ne = realloc(c->ents, ncap * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		c->ents = ne;
		c->cap = ncap;
	}
	ne = &c->ents[c->len++];
	ne->key = key;
	ne->key_len = key_len;
	ne->hash = key_hash(key, key_len);
	ne->key_pos = pos;
	ne->val = val;
	if (c->index && c->len * 2 <= c->index_cap)
		index_put(c, c->len - 1);
	else if (c->len >= TOML_INDEX_MIN)
		index_rebuild(c);
	return 0;
}

static int array_push(struct ub_toml_container *c, struct ub_toml_value *v)
{
	struct ub_toml_value **ni;
	size_t ncap;

	if (c->len == c->cap) {
		ncap = c->cap ? c->cap * 2 : 4;
		if (ncap > SIZE_MAX / sizeof(*ni))
			return -ENOMEM;
		ni = realloc(c->items, ncap * sizeof(*ni)); /* owned by c */
		if (!ni)
			return -ENOMEM;
		c->items = ni;
		c->cap = ncap;
	}
	c->items[c->len++] = v;
	return 0;
}

static const struct ub_toml_container *
table_of(const struct ub_toml_value *table)
{
	if (!table || table->type != UB_TOML_TABLE)
		return NULL;
	return table->c;
}

size_t ub_toml_table_len(const struct ub_toml_value *table)
{
	const struct ub_toml_container *c = table_of(table);

	return c ? c->len : 0;
}

const char *ub_toml_table_key(const struct ub_toml_value *table, size_t i,
			      size_t *key_len)
{
	const struct ub_toml_container *c = table_of(table);

	if (!c || i >= c->len)
		return NULL;
	if (key_len)
		*key_len = c->ents[i].key_len;
	return c->ents[i].key;
}

struct ub_toml_value *ub_toml_table_value(const struct ub_toml_value *table,
					  size_t i)
{
	const struct ub_toml_container *c = table_of(table);

	if (!c || i >= c->len)
		return NULL;
	return c->ents[i].val;
}

struct ub_toml_pos ub_toml_table_key_pos(const struct ub_toml_value *table,
					 size_t i)
{
	const struct ub_toml_container *c = table_of(table);
	struct ub_toml_pos none = {0, 0, 0};

	if (!c || i >= c->len)
		return none;
	return c->ents[i].key_pos;
}

struct ub_toml_value *ub_toml_table_get(const struct ub_toml_value *table,
					const char *key)
{
	const struct ub_toml_container *c = table_of(table);
	ssize_t i;

	if (!c || !key)
		return NULL;
	i = table_find(c, key, strlen(key));
	return i < 0 ? NULL : c->ents[i].val;
}

struct ub_toml_value *ub_toml_table_take(struct ub_toml_value *table,
					 const char *key)
{
	struct ub_toml_container *c;
	struct ub_toml_value *val;
	ssize_t i;

	if (!table || table->type != UB_TOML_TABLE || !table->c || !key)
		return NULL;
	c = table->c;
	i = table_find(c, key, strlen(key));
	if (i < 0)
		return NULL;
	val = c->ents[i].val;
	ub_wipe(c->ents[i].key, c->ents[i].key_len + 1);
	free(c->ents[i].key);
	memmove(&c->ents[i], &c->ents[i + 1],
		(c->len - (size_t)i - 1) * sizeof(c->ents[0]));
	c->len--;
	index_rebuild(c);
	return val;
}

int ub_toml_table_insert(struct ub_toml_value *table, const char *key,
			 size_t key_len, struct ub_toml_pos key_pos,
			 struct ub_toml_value *val)
{
	char *copy = NULL; /* owned until the table takes it */
	int rc;

	if (!table || table->type != UB_TOML_TABLE || !val ||
	    (!key && key_len) || key_len == SIZE_MAX)
		return -EINVAL;
	if (!table->c) {
		table->c = calloc(1, sizeof(*table->c)); /* owned by table */
		if (!table->c)
			return -ENOMEM;
	}
	if (table_find(table->c, key ? key : "", key_len) >= 0)
		return -EEXIST;
	copy = malloc(key_len + 1);
	if (!copy)
		return -ENOMEM;
	if (key_len)
		memcpy(copy, key, key_len);
	copy[key_len] = '\0';
	rc = table_add(table->c, copy, key_len, key_pos, val);
	if (rc) {
		ub_wipe(copy, key_len + 1);
		free(copy);
	}
	return rc;
}

size_t ub_toml_array_len(const struct ub_toml_value *array)
{
	if (!array || array->type != UB_TOML_ARRAY || !array->c)
		return 0;
	return array->c->len;
}

struct ub_toml_value *ub_toml_array_at(const struct ub_toml_value *array,
				       size_t i)
{
	if (i >= ub_toml_array_len(array))
		return NULL;
	return array->c->items[i];
}

/* ---- parser state, positions and errors --------------------------- */

struct parser {
	const unsigned char *buf; /* borrowed input */
	size_t len;
	size_t off;
	uint32_t line;
	size_t line_start;
	size_t col_off;	  /* column cache on the current line: col_off is at */
	uint32_t col_val; /* column col_val */
	uint32_t file;
	bool failed;
	locale_t c_locale; /* owned: made on first float, for strtod_l */
	struct ub_toml_error *err;  /* borrowed from the caller */
	struct ub_toml_value *root; /* owned until handed to the caller */
	struct ub_toml_value *cur;  /* borrowed: table taking key/values */
};

static int peek(const struct parser *p, size_t k)
{
	if (k >= p->len - p->off)
		return -1;
	return p->buf[p->off + k];
}

static int byte_at(const struct parser *p, size_t off)
{
	return off < p->len ? p->buf[off] : -1;
}

static struct ub_toml_pos pos_at(struct parser *p, size_t off)
{
	struct ub_toml_pos pos = {1, 1, p->file};
	uint32_t line = p->line;
	size_t ls = p->line_start;
	uint32_t col = 1;
	size_t i = ls;

	if (off > p->len)
		off = p->len;
	if (off < ls) {
		/* Behind the current line: count from the top. */
		line = 1;
		ls = i = 0;
	} else if (off >= p->col_off && p->col_off >= ls) {
		i = p->col_off;
		col = p->col_val;
	}
	for (; i < off; i++) {
		if (p->buf[i] == '\n') {
			line++;
			col = 1;
		} else if ((p->buf[i] & 0xc0) != 0x80) {
			col++;
		}
	}
	if (line == p->line && off >= p->line_start) {
		p->col_off = off;
		p->col_val = col;
	}
	pos.line = line;
	pos.col = col;
	return pos;
}

static struct ub_toml_pos cur_pos(struct parser *p)
{
	return pos_at(p, p->off);
}

__attribute__((format(printf, 4, 5))) static int
fail_rc(struct parser *p, int rc, size_t off, const char *fmt, ...)
{
	struct ub_toml_pos pos;
	va_list ap;

	if (p->failed)
		return rc;
	p->failed = true;
	pos = pos_at(p, off);
	p->err->line = pos.line;
	p->err->col = pos.col;
	va_start(ap, fmt);
	vsnprintf(p->err->msg, sizeof(p->err->msg), fmt, ap);
	va_end(ap);
	return rc;
}

#define fail(p, off, ...) fail_rc(p, -EINVAL, off, __VA_ARGS__)

static int oom(struct parser *p)
{
	return fail_rc(p, -ENOMEM, p->off, "out of memory");
}

static bool is_ctrl(int c)
{
	return (c >= 0 && c < 0x20 && c != '\t') || c == 0x7f;
}

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static bool is_bare(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       is_digit(c) || c == '_' || c == '-';
}

/* Describes the character at off for messages ("'x'", "U+0007", ...). */
static const char *char_desc(const struct parser *p, size_t off, char *buf,
			     size_t sz)
{
	uint32_t cp;
	int c = byte_at(p, off);
	int n, k;

	if (c < 0)
		return "end of input";
	if (c == '\n' || c == '\r')
		return "end of line";
	if (c == '\t')
		return "tab";
	if (c >= 0x20 && c < 0x7f) {
		snprintf(buf, sz, "'%c'", c);
		return buf;
	}
	cp = (uint32_t)c;
	n = 0;
	if (c >= 0xf0) {
		cp = c & 0x07;
		n = 3;
	} else if (c >= 0xe0) {
		cp = c & 0x0f;
		n = 2;
	} else if (c >= 0xc0) {
		cp = c & 0x1f;
		n = 1;
	}
	for (k = 1; k <= n && byte_at(p, off + k) >= 0; k++)
		cp = (cp << 6) | (p->buf[off + k] & 0x3f);
	snprintf(buf, sz, "U+%04" PRIX32, cp);
	return buf;
}

static int fail_found(struct parser *p, const char *what)
{
	char tmp[16];

	return fail(p, p->off, "expected %s, found %s", what,
		    char_desc(p, p->off, tmp, sizeof(tmp)));
}

/* Appends a printable rendition of key bytes to out (a C string of size
 * sz), cutting long keys short. */
static void key_desc_append(char *out, size_t sz, const char *k, size_t n)
{
	size_t o = strlen(out);
	size_t i;

	for (i = 0; i < n && o + 8 < sz; i++) {
		unsigned char c = (unsigned char)k[i];

		if (i >= 48 && (c & 0xc0) != 0x80) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		if (is_ctrl(c))
			o += (size_t)snprintf(out + o, sz - o, "\\x%02x", c);
		else
			out[o++] = (char)c;
	}
	out[o] = '\0';
}

static void new_line(struct parser *p)
{
	p->line++;
	p->line_start = p->off;
	p->col_off = p->off;
	p->col_val = 1;
}

static bool eat_newline(struct parser *p)
{
	if (peek(p, 0) == '\n')
		p->off++;
	else if (peek(p, 0) == '\r' && peek(p, 1) == '\n')
		p->off += 2;
	else
		return false;
	new_line(p);
	return true;
}

/* Moves to end, counting the newlines passed. */
static void skip_to(struct parser *p, size_t end)
{
	size_t i;

	for (i = p->off; i < end; i++) {
		if (p->buf[i] == '\n') {
			p->off = i + 1;
			new_line(p);
		}
	}
	p->off = end;
}

static void skip_ws(struct parser *p)
{
	while (peek(p, 0) == ' ' || peek(p, 0) == '\t')
		p->off++;
}

static int skip_comment(struct parser *p)
{
	char tmp[16];
	size_t i;

	for (i = p->off + 1; i < p->len; i++) {
		int c = p->buf[i];

		/* A CR here always starts a CRLF (checked up front). */
		if (c == '\n' || c == '\r')
			break;
		if (is_ctrl(c))
			return fail(p, i, "control character %s in comment",
				    char_desc(p, i, tmp, sizeof(tmp)));
	}
	p->off = i;
	return 0;
}

/* Skips whitespace, comments and newlines (inside arrays). */
static int skip_blank(struct parser *p)
{
	int rc;

	for (;;) {
		skip_ws(p);
		if (peek(p, 0) == '#') {
			rc = skip_comment(p);
			if (rc)
				return rc;
		} else if (!eat_newline(p)) {
			return 0;
		}
	}
}

/* Checks the whole input: well-formed UTF-8 (no overlong forms, no
 * surrogates, nothing above U+10FFFF) and no CR outside a CRLF pair. */
static int check_encoding(struct parser *p)
{
	const unsigned char *b = p->buf;
	size_t i = p->off;
	size_t n, k;
	uint32_t cp, min;

	while (i < p->len) {
		if (b[i] < 0x80) {
			if (b[i] == '\r' && byte_at(p, i + 1) != '\n')
				return fail(p, i,
					    "carriage return without "
					    "line feed");
			i++;
			continue;
		}
		if (b[i] >= 0xc2 && b[i] <= 0xdf) {
			n = 2;
			cp = b[i] & 0x1f;
			min = 0x80;
		} else if (b[i] >= 0xe0 && b[i] <= 0xef) {
			n = 3;
			cp = b[i] & 0x0f;
			min = 0x800;
		} else if (b[i] >= 0xf0 && b[i] <= 0xf4) {
			n = 4;
			cp = b[i] & 0x07;
			min = 0x10000;
		} else if (b[i] == 0xc0 || b[i] == 0xc1) {
			return fail(p, i, "overlong UTF-8 sequence");
		} else {
			return fail(p, i, "invalid UTF-8 byte 0x%02x", b[i]);
		}
		for (k = 1; k < n; k++) {
			if (i + k >= p->len || (b[i + k] & 0xc0) != 0x80)
				return fail(p, i, "truncated UTF-8 sequence");
			cp = (cp << 6) | (b[i + k] & 0x3f);
		}
		if (cp < min)
			return fail(p, i, "overlong UTF-8 sequence");
		if (cp >= 0xd800 && cp <= 0xdfff)
			return fail(p, i,
				    "UTF-8 encoded surrogate U+%04" PRIX32, cp);
		if (cp > 0x10ffff)
			return fail(p, i, "code point above U+10FFFF");
		i += n;
	}
	return 0;
}

/* ---- strings ------------------------------------------------------ */

static int hex_val(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Output cursor of the string decoder: with buf == NULL it only counts. */
struct sink {
	char *buf; /* borrowed: cap bytes */
	size_t cap;
	size_t len;
};

static void put(struct sink *s, int c)
{
	if (s->buf && s->len < s->cap)
		s->buf[s->len] = (char)c;
	s->len++;
}

static void put_utf8(struct sink *s, uint32_t cp)
{
	if (cp < 0x80) {
		put(s, (int)cp);
	} else if (cp < 0x800) {
		put(s, 0xc0 | (int)(cp >> 6));
		put(s, 0x80 | (int)(cp & 0x3f));
	} else if (cp < 0x10000) {
		put(s, 0xe0 | (int)(cp >> 12));
		put(s, 0x80 | (int)((cp >> 6) & 0x3f));
		put(s, 0x80 | (int)(cp & 0x3f));
	} else {
		put(s, 0xf0 | (int)(cp >> 18));
		put(s, 0x80 | (int)((cp >> 12) & 0x3f));
		put(s, 0x80 | (int)((cp >> 6) & 0x3f));
		put(s, 0x80 | (int)(cp & 0x3f));
	}
}

/* Decodes the escape at *i (a backslash) in a basic string. */
static int scan_escape(struct parser *p, size_t *i, bool ml, struct sink *s)
{
	char tmp[16];
	size_t j, k, nd;
	uint32_t cp;
	int e = byte_at(p, *i + 1);
	int h;

	if (ml && (e == ' ' || e == '\t' || e == '\n' || e == '\r')) {
		/* Line-ending backslash: trims whitespace and newlines. */
		for (j = *i + 1; byte_at(p, j) == ' ' || byte_at(p, j) == '\t';)
			j++;
		if (byte_at(p, j) != '\n' && byte_at(p, j) != '\r')
			return fail(p, *i,
				    "backslash followed by whitespace "
				    "must end the line");
		while (byte_at(p, j) == ' ' || byte_at(p, j) == '\t' ||
		       byte_at(p, j) == '\n' || byte_at(p, j) == '\r')
			j++;
		*i = j;
		return 0;
	}
	switch (e) {
	case 'b':
		put(s, '\b');
		break;
	case 't':
		put(s, '\t');
		break;
	case 'n':
		put(s, '\n');
		break;
	case 'f':
		put(s, '\f');
		break;
	case 'r':
		put(s, '\r');
		break;
	case '"':
		put(s, '"');
		break;
	case '\\':
		put(s, '\\');
		break;
	case 'u':
	case 'U':
		nd = e == 'u' ? 4 : 8;
		cp = 0;
		for (k = 0; k < nd; k++) {
			h = hex_val(byte_at(p, *i + 2 + k));
			if (h < 0)
				return fail(
				    p, *i, "escape '\\%c' needs %zu hex digits",
				    e, nd);
			cp = (cp << 4) | (uint32_t)h;
		}
		if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return fail(p, *i,
				    "escape '\\%c%.*s' is not a Unicode scalar "
				    "value",
				    e, (int)nd, (const char *)p->buf + *i + 2);
		put_utf8(s, cp);
		*i += 2 + nd;
		return 0;
	case -1:
		return fail(p, *i, "unterminated string");
	default:
		if (e >= 0x21 && e < 0x7f)
			return fail(p, *i, "invalid escape '\\%c' in string",
				    e);
		return fail(p, *i, "invalid escape '\\' followed by %s",
			    char_desc(p, *i + 1, tmp, sizeof(tmp)));
	}
	*i += 2;
	return 0;
}

/* Decodes the string starting at p->off (an opening quote) into s (which
 * may only count) and sets *end just past the closing delimiter. */
static int scan_string(struct parser *p, bool is_key, struct sink *s,
		       size_t *end)
{
	char tmp[16];
	size_t i = p->off;
	size_t run, k;
	int q = p->buf[i];
	bool ml = peek(p, 1) == q && peek(p, 2) == q;
	int c, rc;

	if (ml && is_key)
		return fail(p, i, "a key cannot be a multi-line string");
	if (ml) {
		i += 3;
		/* A newline right after the opening delimiter is trimmed. */
		if (byte_at(p, i) == '\n')
			i++;
		else if (byte_at(p, i) == '\r' && byte_at(p, i + 1) == '\n')
			i += 2;
	} else {
		i++;
	}
	for (;;) {
		c = byte_at(p, i);
		if (c < 0)
			return fail(p, p->off, "unterminated string");
		if (c == q) {
			if (!ml) {
				i++;
				break;
			}
			for (run = 0; byte_at(p, i + run) == q; run++)
				;
			if (run < 3) {
				for (k = 0; k < run; k++)
					put(s, q);
				i += run;
				continue;
			}
			if (run > 5)
				return fail(p, i + 5,
					    "too many quotes at the end of a "
					    "multi-line string");
			for (k = 3; k < run; k++)
				put(s, q);
			i += run;
			break;
		}
		if (c == '\\' && q == '"') {
			rc = scan_escape(p, &i, ml, s);
			if (rc)
				return rc;
			continue;
		}
		if (c == '\n' || c == '\r') {
			if (!ml)
				return fail(p, i,
					    "newline in single-line "
					    "string");
			/* CRLF is stored as LF. */
			put(s, '\n');
			i += c == '\r' ? 2 : 1;
			continue;
		}
		if (is_ctrl(c))
			return fail(p, i, "control character %s in string",
				    char_desc(p, i, tmp, sizeof(tmp)));
		put(s, c);
		i++;
	}
	*end = i;
	return 0;
}

/* Parses the string at p->off into a new NUL-terminated buffer. */
static int parse_str(struct parser *p, bool is_key, char **out, size_t *len)
{
	struct sink s = {NULL, 0, 0};
	size_t end = 0;
	char *buf; /* owned by the caller on success, else wiped here */
	int rc;

	rc = scan_string(p, is_key, &s, &end);
	if (rc)
		return rc;
	if (s.len == SIZE_MAX)
		return oom(p);
	buf = malloc(s.len + 1);
	if (!buf)
		return oom(p);
	s.buf = buf;
	s.cap = s.len;
	s.len = 0;
	rc = scan_string(p, is_key, &s, &end);
	if (rc || s.len != s.cap) {
		ub_wipe(buf, s.cap + 1);
		free(buf);
		return rc ? rc : fail(p, p->off, "internal string error");
	}
	buf[s.len] = '\0';
	skip_to(p, end);
	*out = buf;
	*len = s.len;
	return 0;
}

/* ---- keys --------------------------------------------------------- */

struct key_part {
	char *s; /* owned: len + 1 bytes, wiped before free, unless given
		  * to a table (which then owns it and outlives the key) */
	bool given;
	size_t len;
	size_t off;
	struct ub_toml_pos pos;
};

struct key {
	struct key_part *parts; /* owned */
	size_t n;
	size_t cap;
};

static void key_release(struct key *k)
{
	size_t i;

	for (i = 0; i < k->n; i++) {
		if (k->parts[i].s && !k->parts[i].given) {
			ub_wipe(k->parts[i].s, k->parts[i].len + 1);
			free(k->parts[i].s);
		}
	}
	free(k->parts);
	k->parts = NULL;
	k->n = k->cap = 0;
}

/* 'a.b.c' for the first n parts of k, for messages. */
static const char *path_desc(const struct key *k, size_t n, char *out,
			     size_t sz)
{
	size_t i;

	out[0] = '\0';
	for (i = 0; i < n; i++) {
		if (i && strlen(out) + 2 < sz)
			strcat(out, ".");
		key_desc_append(out, sz, k->parts[i].s, k->parts[i].len);
	}
	return out;
}

static int parse_simple_key(struct parser *p, struct key_part *part)
{
	char *s; /* owned by part on success */
	size_t n;
	int c = peek(p, 0);

	part->off = p->off;
	part->pos = cur_pos(p);
	if (c == '"' || c == '\'')
		return parse_str(p, true, &part->s, &part->len);
	if (!is_bare(c))
		return fail_found(p, "a key");
	for (n = 0; is_bare(peek(p, n)); n++)
		;
	s = malloc(n + 1);
	if (!s)
		return oom(p);
	memcpy(s, p->buf + p->off, n);
	s[n] = '\0';
	part->s = s;
	part->len = n;
	p->off += n;
	return 0;
}

/* Parses a (dotted) key and the whitespace after it into k. */
static int parse_key(struct parser *p, struct key *k)
{
	struct key_part *np;
	size_t ncap;
	int rc;

	for (;;) {
		if (k->n == k->cap) {
			ncap = k->cap ? k->cap * 2 : 4;
			if (ncap > SIZE_MAX / sizeof(*np))
				return oom(p);
			np = realloc(k->parts, ncap * sizeof(*np)); /* owned by
								     * k */
			if (!np)
				return oom(p);
			k->parts = np;
			k->cap = ncap;
		}
		memset(&k->parts[k->n], 0, sizeof(k->parts[0]));
		rc = parse_simple_key(p, &k->parts[k->n]);
		if (rc)
			return rc;
		k->n++;
		skip_ws(p);
		if (peek(p, 0) != '.')
			return 0;
		p->off++;
		skip_ws(p);
	}
}

/* ---- table structure ---------------------------------------------- */

static struct ub_toml_value *new_container(struct parser *p,
					   enum ub_toml_type type,
					   enum toml_kind kind, uint32_t depth,
					   struct ub_toml_pos pos)
{
	struct ub_toml_value *v = value_new(type, pos); /* owned by caller */

	if (!v)
		return NULL;
	v->c->kind = kind;
	v->c->depth = depth;
	return v;
}

static int check_depth(struct parser *p, uint32_t depth, size_t off)
{
	if (depth > TOML_MAX_DEPTH)
		return fail(p, off, "nesting too deep (more than %d levels)",
			    TOML_MAX_DEPTH);
	return 0;
}

/* Adds part -> val to table t, giving the part's key buffer to t. */
static int add_part(struct parser *p, struct ub_toml_value *t,
		    struct key_part *part, struct ub_toml_value *val)
{
	int rc = table_add(t->c, part->s, part->len, part->pos, val);

	if (rc)
		return oom(p);
	part->given = true;
	return 0;
}

/* Creates the table for part in t with the given kind. */
static int add_table(struct parser *p, struct ub_toml_value *t,
		     struct key_part *part, enum toml_kind kind,
		     struct ub_toml_value **out)
{
	uint32_t depth = t->c->depth + 1;
	struct ub_toml_value *nt;
	int rc;

	rc = check_depth(p, depth, part->off);
	if (rc)
		return rc;
	nt = new_container(p, UB_TOML_TABLE, kind, depth, part->pos);
	if (!nt)
		return oom(p);
	rc = add_part(p, t, part, nt);
	if (rc) {
		ub_toml_free(nt);
		return rc;
	}
	*out = nt;
	return 0;
}

static bool is_aot(const struct ub_toml_value *v)
{
	return v->type == UB_TOML_ARRAY && v->c && v->c->kind == KIND_AOT &&
	       v->c->len > 0;
}

/* Walks the first k->n - 1 parts of a header key from the root, creating
 * implicit tables, and returns the table that holds the last part. */
static int header_walk(struct parser *p, struct key *k,
		       struct ub_toml_value **out)
{
	struct ub_toml_value *t = p->root;
	struct ub_toml_value *v;
	struct key_part *part;
	char path[128];
	ssize_t i;
	size_t n;
	int rc;

	for (n = 0; n + 1 < k->n; n++) {
		part = &k->parts[n];
		i = table_find(t->c, part->s, part->len);
		if (i < 0) {
			rc = add_table(p, t, part, KIND_IMPLICIT, &t);
			if (rc)
				return rc;
			continue;
		}
		v = t->c->ents[i].val;
		path_desc(k, n + 1, path, sizeof(path));
		if (v->type == UB_TOML_TABLE && v->c->kind == KIND_INLINE)
			return fail(p, part->off,
				    "cannot extend inline table '%s'", path);
		if (v->type == UB_TOML_TABLE) {
			t = v;
		} else if (is_aot(v)) {
			t = v->c->items[v->c->len - 1];
		} else if (v->type == UB_TOML_ARRAY) {
			return fail(p, part->off,
				    "cannot extend static array '%s'", path);
		} else {
			return fail(p, part->off,
				    "key '%s' is already defined as %s", path,
				    ub_toml_type_name(v->type));
		}
	}
	*out = t;
	return 0;
}

/* Applies a [header] (aot false) or [[header]] and makes its table the
 * current one. */
static int define_table(struct parser *p, struct key *k, bool aot,
			struct ub_toml_pos hdr_pos)
{
	struct ub_toml_value *t = NULL, *v, *elem, *arr;
	struct key_part *last = &k->parts[k->n - 1];
	struct toml_entry *e;
	char path[128];
	uint32_t depth;
	ssize_t i;
	int rc;

	rc = header_walk(p, k, &t);
	if (rc)
		return rc;
	path_desc(k, k->n, path, sizeof(path));
	i = table_find(t->c, last->s, last->len);
	e = i < 0 ? NULL : &t->c->ents[i];
	v = e ? e->val : NULL;
	if (!aot) {
		if (!v) {
			rc = add_table(p, t, last, KIND_HEADER, &v);
			if (rc)
				return rc;
			v->pos = hdr_pos;
		} else if (v->type == UB_TOML_TABLE &&
			   v->c->kind == KIND_IMPLICIT) {
			v->c->kind = KIND_HEADER;
			v->pos = hdr_pos;
			e->key_pos = last->pos;
		} else if (v->type == UB_TOML_TABLE &&
			   v->c->kind == KIND_DOTTED) {
			return fail(p, last->off,
				    "table '%s' already defined by dotted keys",
				    path);
		} else if (v->type == UB_TOML_TABLE &&
			   v->c->kind == KIND_INLINE) {
			return fail(p, last->off,
				    "table '%s' already defined as an inline "
				    "table",
				    path);
		} else if (v->type == UB_TOML_TABLE) {
			return fail(p, last->off, "table '%s' already defined",
				    path);
		} else {
			return fail(p, last->off,
				    "key '%s' is already defined as %s", path,
				    ub_toml_type_name(v->type));
		}
		p->cur = v;
		return 0;
	}

	if (v && v->type == UB_TOML_ARRAY && v->c->kind == KIND_AOT) {
		arr = v;
	} else if (v && v->type == UB_TOML_ARRAY) {
		return fail(p, last->off, "cannot append to static array '%s'",
			    path);
	} else if (v) {
		return fail(p, last->off, "key '%s' is already defined as %s",
			    path, ub_toml_type_name(v->type));
	} else {
		depth = t->c->depth + 1;
		rc = check_depth(p, depth + 1, last->off);
		if (rc)
			return rc;
		arr = new_container(p, UB_TOML_ARRAY, KIND_AOT, depth, hdr_pos);
		if (!arr)
			return oom(p);
		rc = add_part(p, t, last, arr);
		if (rc) {
			ub_toml_free(arr);
			return rc;
		}
	}
	elem = new_container(p, UB_TOML_TABLE, KIND_HEADER, arr->c->depth + 1,
			     hdr_pos);
	if (!elem)
		return oom(p);
	if (array_push(arr->c, elem)) {
		ub_toml_free(elem);
		return oom(p);
	}
	p->cur = elem;
	return 0;
}

static int parse_header(struct parser *p)
{
	struct ub_toml_pos hdr_pos = cur_pos(p);
	struct key k = {NULL, 0, 0};
	bool aot = peek(p, 1) == '[';
	int rc;

	p->off += aot ? 2 : 1;
	skip_ws(p);
	rc = parse_key(p, &k);
	if (rc)
		goto out;
	if (peek(p, 0) != ']' || (aot && peek(p, 1) != ']')) {
		rc = fail_found(p, aot ? "']]' closing the array of tables "
					 "header"
				       : "']' closing the table header");
		goto out;
	}
	p->off += aot ? 2 : 1;
	rc = define_table(p, &k, aot, hdr_pos);
out:
	key_release(&k);
	return rc;
}

/* ---- values ------------------------------------------------------- */

static int parse_value(struct parser *p, uint32_t depth,
		       struct ub_toml_value **out);

/* Parses "key = value" into table t (the current table or an inline table
 * being built). */
static int parse_keyval(struct parser *p, struct ub_toml_value *t)
{
	struct ub_toml_value *v = NULL; /* owned until added to a table */
	struct key k = {NULL, 0, 0};
	struct key_part *part;
	char path[128];
	ssize_t i;
	size_t n;
	int rc;

	rc = parse_key(p, &k);
	if (rc)
		goto out;
	if (peek(p, 0) != '=') {
		rc = fail_found(p, "'=' after a key");
		goto out;
	}
	p->off++;
	skip_ws(p);
	for (n = 0; n + 1 < k.n; n++) {
		part = &k.parts[n];
		i = table_find(t->c, part->s, part->len);
		if (i < 0) {
			rc = add_table(p, t, part, KIND_DOTTED, &t);
			if (rc)
				goto out;
			continue;
		}
		v = t->c->ents[i].val;
		path_desc(&k, n + 1, path, sizeof(path));
		if (v->type != UB_TOML_TABLE) {
			rc = fail(p, part->off,
				  "key '%s' is already defined as %s", path,
				  ub_toml_type_name(v->type));
			v = NULL;
			goto out;
		}
		if (v->c->kind == KIND_INLINE) {
			rc = fail(p, part->off,
				  "cannot extend inline table '%s'", path);
			v = NULL;
			goto out;
		}
		if (v->c->kind == KIND_HEADER) {
			rc = fail(p, part->off,
				  "table '%s' was defined by a header; dotted "
				  "keys cannot extend it",
				  path);
			v = NULL;
			goto out;
		}
		if (v->c->kind == KIND_IMPLICIT)
			v->c->kind = KIND_DOTTED;
		t = v;
		v = NULL;
	}
	part = &k.parts[k.n - 1];
	if (table_find(t->c, part->s, part->len) >= 0) {
		rc = fail(p, part->off, "duplicate key '%s'",
			  path_desc(&k, k.n, path, sizeof(path)));
		goto out;
	}
	rc = parse_value(p, t->c->depth + 1, &v);
	if (rc)
		goto out;
	rc = add_part(p, t, part, v);
	if (rc)
		goto out;
	v = NULL;
out:
	ub_toml_free(v);
	key_release(&k);
	return rc;
}

static int parse_array(struct parser *p, uint32_t depth,
		       struct ub_toml_value **out)
{
	struct ub_toml_value *arr; /* owned until handed out */
	struct ub_toml_value *item;
	int rc;

	rc = check_depth(p, depth, p->off);
	if (rc)
		return rc;
	arr = new_container(p, UB_TOML_ARRAY, KIND_STATIC, depth, cur_pos(p));
	if (!arr)
		return oom(p);
	p->off++;
	for (;;) {
		rc = skip_blank(p);
		if (rc)
			goto fail;
		if (peek(p, 0) == ']')
			break;
		rc = parse_value(p, depth + 1, &item);
		if (rc)
			goto fail;
		if (array_push(arr->c, item)) {
			ub_toml_free(item);
			rc = oom(p);
			goto fail;
		}
		rc = skip_blank(p);
		if (rc)
			goto fail;
		if (peek(p, 0) == ']')
			break;
		if (peek(p, 0) != ',') {
			rc = fail_found(p, "',' or ']' in array");
			goto fail;
		}
		p->off++;
	}
	p->off++;
	*out = arr;
	return 0;
fail:
	ub_toml_free(arr);
	return rc;
}

static int parse_inline_table(struct parser *p, uint32_t depth,
			      struct ub_toml_value **out)
{
	struct ub_toml_value *t; /* owned until handed out */
	int rc;

	rc = check_depth(p, depth, p->off);
	if (rc)
		return rc;
	t = new_container(p, UB_TOML_TABLE, KIND_INLINE, depth, cur_pos(p));
	if (!t)
		return oom(p);
	p->off++;
	skip_ws(p);
	if (peek(p, 0) == '}')
		goto done;
	for (;;) {
		rc = parse_keyval(p, t);
		if (rc)
			goto fail;
		skip_ws(p);
		if (peek(p, 0) == '}')
			break;
		if (peek(p, 0) == '\n' || peek(p, 0) == '\r') {
			rc = fail(p, p->off, "newline in inline table");
			goto fail;
		}
		if (peek(p, 0) != ',') {
			rc = fail_found(p, "',' or '}' in inline table");
			goto fail;
		}
		p->off++;
		skip_ws(p);
		if (peek(p, 0) == '}') {
			rc = fail(p, p->off, "trailing comma in inline table");
			goto fail;
		}
	}
done:
	p->off++;
	*out = t;
	return 0;
fail:
	ub_toml_free(t);
	return rc;
}

static bool digits_at(const struct parser *p, size_t off, size_t n)
{
	size_t k;

	for (k = 0; k < n; k++)
		if (!is_digit(byte_at(p, off + k)))
			return false;
	return true;
}

static int num_at(const struct parser *p, size_t off, size_t n)
{
	int v = 0;
	size_t k;

	for (k = 0; k < n; k++)
		v = v * 10 + (p->buf[off + k] - '0');
	return v;
}

static int days_in_month(int year, int month)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30,
				     31, 31, 30, 31, 30, 31};
	bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

	if (month == 2 && leap)
		return 29;
	return days[month - 1];
}

/* Parses HH:MM:SS[.frac] at *i into dt. */
static int parse_time(struct parser *p, size_t *i, struct ub_toml_datetime *dt)
{
	size_t s = *i;
	size_t j;

	if (!digits_at(p, s, 2) || byte_at(p, s + 2) != ':' ||
	    !digits_at(p, s + 3, 2) || byte_at(p, s + 5) != ':' ||
	    !digits_at(p, s + 6, 2))
		return fail(p, s, "invalid time (expected HH:MM:SS)");
	dt->hour = num_at(p, s, 2);
	dt->minute = num_at(p, s + 3, 2);
	dt->second = num_at(p, s + 6, 2);
	if (dt->hour > 23)
		return fail(p, s, "hour out of range");
	if (dt->minute > 59)
		return fail(p, s + 3, "minute out of range");
	if (dt->second > 60)
		return fail(p, s + 6, "second out of range");
	j = s + 8;
	if (byte_at(p, j) == '.') {
		j++;
		if (!is_digit(byte_at(p, j)))
			return fail(p, j, "expected digits after '.' in time");
		for (; is_digit(byte_at(p, j)); j++) {
			if (dt->frac_digits < 9) {
				dt->nanosecond = dt->nanosecond * 10 +
						 (uint32_t)(p->buf[j] - '0');
				dt->frac_digits++;
			}
		}
		for (int k = dt->frac_digits; k < 9; k++)
			dt->nanosecond *= 10;
	}
	*i = j;
	return 0;
}

/* Parses a date, date-time or time at p->off. */
static int parse_datetime(struct parser *p, struct ub_toml_value *v)
{
	struct ub_toml_datetime *dt = &v->u.dt;
	size_t i = p->off;
	bool has_date = false;
	bool has_time = true;
	int c, hh, mm;
	int rc;

	memset(dt, 0, sizeof(*dt));
	if (digits_at(p, i, 4) && byte_at(p, i + 4) == '-') {
		if (!digits_at(p, i + 5, 2) || byte_at(p, i + 7) != '-' ||
		    !digits_at(p, i + 8, 2))
			return fail(p, i, "invalid date (expected YYYY-MM-DD)");
		dt->year = num_at(p, i, 4);
		dt->month = num_at(p, i + 5, 2);
		dt->day = num_at(p, i + 8, 2);
		if (dt->month < 1 || dt->month > 12)
			return fail(p, i + 5, "month out of range");
		if (dt->day < 1 || dt->day > days_in_month(dt->year, dt->month))
			return fail(p, i + 8, "day out of range");
		has_date = true;
		i += 10;
		c = byte_at(p, i);
		if (c == 'T' || c == 't') {
			i++;
		} else if (c == ' ' && digits_at(p, i + 1, 2) &&
			   byte_at(p, i + 3) == ':') {
			i++;
		} else {
			has_time = false;
		}
	}
	if (has_time) {
		rc = parse_time(p, &i, dt);
		if (rc)
			return rc;
	}
	if (has_date && has_time) {
		c = byte_at(p, i);
		if (c == 'Z' || c == 'z') {
			dt->offset_z = true;
			i++;
			v->type = UB_TOML_DATETIME;
		} else if (c == '+' || c == '-') {
			if (!digits_at(p, i + 1, 2) ||
			    byte_at(p, i + 3) != ':' || !digits_at(p, i + 4, 2))
				return fail(p, i,
					    "invalid time offset "
					    "(expected +HH:MM)");
			hh = num_at(p, i + 1, 2);
			mm = num_at(p, i + 4, 2);
			if (hh > 23 || mm > 59)
				return fail(p, i, "time offset out of range");
			dt->offset_minutes =
			    (c == '-' ? -1 : 1) * (hh * 60 + mm);
			i += 6;
			v->type = UB_TOML_DATETIME;
		} else {
			v->type = UB_TOML_DATETIME_LOCAL;
		}
	} else {
		v->type = has_date ? UB_TOML_DATE_LOCAL : UB_TOML_TIME_LOCAL;
	}
	p->off = i;
	return 0;
}

static bool base_digit(int c, int base)
{
	if (base == 16)
		return hex_val(c) >= 0;
	return c >= '0' && c < '0' + base;
}

/* Scans digits of base with single underscores between them, from *i up
 * to e. Returns the number of digits or a negative errno. */
static ssize_t scan_digits(struct parser *p, size_t *i, size_t e, int base)
{
	ssize_t count = 0;
	size_t j = *i;

	while (j < e) {
		int c = p->buf[j];

		if (base_digit(c, base)) {
			count++;
			j++;
		} else if (c == '_') {
			if (!count || j + 1 >= e ||
			    !base_digit(p->buf[j + 1], base))
				return fail(p, j, "'_' must be between digits");
			j++;
		} else {
			break;
		}
	}
	*i = j;
	return count;
}

static int to_float(struct parser *p, size_t s, size_t e, double *out)
{
	char small[64];
	char *tmp = small; /* owned if not small: a number, not a secret */
	char *end = NULL;
	size_t i, n = 0;
	int rc = 0;

	if (!p->c_locale) {
		p->c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
		if (!p->c_locale)
			return oom(p);
	}
	if (e - s >= sizeof(small)) {
		tmp = malloc(e - s + 1);
		if (!tmp)
			return oom(p);
	}
	for (i = s; i < e; i++)
		if (p->buf[i] != '_')
			tmp[n++] = (char)p->buf[i];
	tmp[n] = '\0';
	errno = 0;
	*out = strtod_l(tmp, &end, p->c_locale);
	if (end != tmp + n)
		rc = fail(p, s, "invalid float");
	else if (errno == ERANGE && isinf(*out))
		rc = fail(p, s, "float out of range");
	if (tmp != small)
		free(tmp);
	return rc;
}

/* Parses an integer or float token [s, e) into v. */
static int parse_number(struct parser *p, size_t s, size_t e,
			struct ub_toml_value *v)
{
	char tmp[16];
	const char *t = (const char *)p->buf;
	uint64_t acc = 0, limit = INT64_MAX;
	size_t i = s, int_start;
	bool neg = false, sign = false, is_float = false;
	ssize_t nd;
	int base = 10;
	int d;

	if (t[i] == '+' || t[i] == '-') {
		sign = true;
		neg = t[i] == '-';
		i++;
	}
	if (e - i == 3 &&
	    (memcmp(t + i, "inf", 3) == 0 || memcmp(t + i, "nan", 3) == 0)) {
		v->type = UB_TOML_FLOAT;
		v->u.flt = t[i] == 'i' ? INFINITY : NAN;
		if (neg)
			v->u.flt = -v->u.flt;
		return 0;
	}
	if (e - i >= 2 && t[i] == '0' &&
	    (t[i + 1] == 'x' || t[i + 1] == 'o' || t[i + 1] == 'b')) {
		base = t[i + 1] == 'x' ? 16 : t[i + 1] == 'o' ? 8 : 2;
		if (sign)
			return fail(p, s,
				    "sign not allowed on a hexadecimal, "
				    "octal or binary integer");
		i += 2;
	}
	int_start = i;
	nd = scan_digits(p, &i, e, base);
	if (nd < 0)
		return (int)nd;
	if (nd == 0)
		return fail(p, base == 10 ? s : i, "invalid number");
	if (base == 10 && t[int_start] == '0' && nd > 1)
		return fail(p, s, "leading zeros are not allowed");
	if (base == 10 && i < e && t[i] == '.') {
		i++;
		is_float = true;
		nd = scan_digits(p, &i, e, 10);
		if (nd < 0)
			return (int)nd;
		if (nd == 0)
			return fail(p, i, "expected digits after '.'");
	}
	if (base == 10 && i < e && (t[i] == 'e' || t[i] == 'E')) {
		i++;
		is_float = true;
		if (i < e && (t[i] == '+' || t[i] == '-'))
			i++;
		nd = scan_digits(p, &i, e, 10);
		if (nd < 0)
			return (int)nd;
		if (nd == 0)
			return fail(p, i, "expected digits in exponent");
	}
	if (i != e)
		return fail(p, i, "invalid character %s in number",
			    char_desc(p, i, tmp, sizeof(tmp)));
	if (is_float) {
		v->type = UB_TOML_FLOAT;
		return to_float(p, s, e, &v->u.flt);
	}
	if (neg)
		limit = (uint64_t)INT64_MAX + 1;
	for (i = int_start; i < e; i++) {
		if (t[i] == '_')
			continue;
		d = hex_val(t[i]);
		if (acc > (limit - (uint64_t)d) / (uint64_t)base)
			return fail(p, s, "integer overflow");
		acc = acc * (uint64_t)base + (uint64_t)d;
	}
	v->type = UB_TOML_INTEGER;
	if (neg)
		v->u.integer =
		    acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc;
	else
		v->u.integer = (int64_t)acc;
	return 0;
}

static bool is_num_char(int c)
{
	return is_bare(c) || c == '.' || c == '+';
}

/* Parses a non-string, non-container value: bool, number, date/time. */
static int parse_scalar(struct parser *p, struct ub_toml_value *v)
{
	size_t e;
	int c = peek(p, 0);
	int rc;

	if (c == 't' && p->len - p->off >= 4 &&
	    memcmp(p->buf + p->off, "true", 4) == 0) {
		v->type = UB_TOML_BOOL;
		v->u.boolean = true;
		p->off += 4;
		return 0;
	}
	if (c == 'f' && p->len - p->off >= 5 &&
	    memcmp(p->buf + p->off, "false", 5) == 0) {
		v->type = UB_TOML_BOOL;
		v->u.boolean = false;
		p->off += 5;
		return 0;
	}
	if ((digits_at(p, p->off, 4) && peek(p, 4) == '-') ||
	    (digits_at(p, p->off, 2) && peek(p, 2) == ':'))
		return parse_datetime(p, v);
	if (!is_digit(c) && c != '+' && c != '-' && c != 'i' && c != 'n')
		return fail_found(p, "a value");
	for (e = p->off; is_num_char(byte_at(p, e)); e++)
		;
	rc = parse_number(p, p->off, e, v);
	if (rc)
		return rc;
	p->off = e;
	return 0;
}

static int parse_value(struct parser *p, uint32_t depth,
		       struct ub_toml_value **out)
{
	struct ub_toml_value *v; /* owned until handed out */
	int c = peek(p, 0);
	int rc;

	if (c == '[')
		return parse_array(p, depth, out);
	if (c == '{')
		return parse_inline_table(p, depth, out);
	v = value_new(UB_TOML_BOOL, cur_pos(p));
	if (!v)
		return oom(p);
	if (c == '"' || c == '\'') {
		v->type = UB_TOML_STRING;
		rc = parse_str(p, false, &v->u.str.ptr, &v->u.str.len);
	} else {
		rc = parse_scalar(p, v);
	}
	if (rc) {
		ub_toml_free(v);
		return rc;
	}
	*out = v;
	return 0;
}

static int parse_document(struct parser *p)
{
	int c, rc;

	for (;;) {
		skip_ws(p);
		c = peek(p, 0);
		if (c < 0)
			return 0;
		if (c == '[') {
			rc = parse_header(p);
			if (rc)
				return rc;
		} else if (c != '#' && c != '\n' && c != '\r') {
			rc = parse_keyval(p, p->cur);
			if (rc)
				return rc;
		}
		skip_ws(p);
		if (peek(p, 0) == '#') {
			rc = skip_comment(p);
			if (rc)
				return rc;
		}
		if (peek(p, 0) < 0)
			return 0;
		if (!eat_newline(p))
			return fail_found(p, "end of line");
	}
}

int ub_toml_parse(const char *buf, size_t len, uint32_t file_index,
		  struct ub_toml_value **out, struct ub_toml_error *err)
{
	struct ub_toml_error dummy;
	struct ub_toml_pos top = {1, 1, file_index};
	struct parser p;
	int rc;

	memset(&p, 0, sizeof(p));
	if (!err)
		err = &dummy;
	memset(err, 0, sizeof(*err));
	p.err = err;
	p.buf = (const unsigned char *)buf;
	p.len = buf ? len : 0;
	p.line = 1;
	p.col_val = 1;
	p.file = file_index;
	if (out)
		*out = NULL;
	if (!out || (!buf && len)) {
		rc = fail(&p, 0, "invalid arguments");
		goto out;
	}
	/* A byte order mark may open the document. */
	if (p.len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
		p.off = p.line_start = p.col_off = 3;
	rc = check_encoding(&p);
	if (rc)
		goto out;
	p.root = new_container(&p, UB_TOML_TABLE, KIND_ROOT, 0, top);
	if (!p.root) {
		rc = oom(&p);
		goto out;
	}
	p.cur = p.root;
	rc = parse_document(&p);
out:
	if (p.c_locale)
		freelocale(p.c_locale);
	if (rc) {
		ub_toml_free(p.root);
		return rc;
	}
	*out = p.root;
	return 0;
}

/* ---- tagged JSON -------------------------------------------------- */

static void json_string(FILE *f, const char *s, size_t n)
{
	size_t i;

	fputc('"', f);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		switch (c) {
		case '"':
			fputs("\\\"", f);
			break;
		case '\\':
			fputs("\\\\", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		case '\t':
			fputs("\\t", f);
			break;
		case '\r':
			fputs("\\r", f);
			break;
		case '\b':
			fputs("\\b", f);
			break;
		case '\f':
			fputs("\\f", f);
			break;
		default:
			if (c < 0x20 || c == 0x7f)
				fprintf(f, "\\u%04x", c);
			else
				fputc(c, f);
		}
	}
	fputc('"', f);
}

/* Rewrites a printf'ed number so its decimal point is '.' whatever the
 * locale. */
static void fix_decimal_point(char *s)
{
	char *w = s;
	bool in_point = false;

	for (; *s; s++) {
		if (is_digit(*s) || *s == '-' || *s == '+' || *s == 'e') {
			*w++ = *s;
			in_point = false;
		} else if (!in_point) {
			*w++ = '.';
			in_point = true;
		}
	}
	*w = '\0';
}

/* Shortest text that reads back as d. */
static void format_float(double d, locale_t loc, char *buf, size_t sz)
{
	int prec;

	if (isnan(d)) {
		snprintf(buf, sz, "nan");
		return;
	}
	if (isinf(d)) {
		snprintf(buf, sz, d < 0 ? "-inf" : "inf");
		return;
	}
	for (prec = loc ? 1 : 17; prec <= 17; prec++) {
		snprintf(buf, sz, "%.*g", prec, d);
		fix_decimal_point(buf);
		if (!loc || strtod_l(buf, NULL, loc) == d)
			break;
	}
	if (!strpbrk(buf, ".e") && strlen(buf) + 3 <= sz)
		strcat(buf, ".0");
}

static void format_datetime(const struct ub_toml_value *v, char *buf, size_t sz)
{
	const struct ub_toml_datetime *dt = &v->u.dt;
	bool date = v->type != UB_TOML_TIME_LOCAL;
	bool time = v->type != UB_TOML_DATE_LOCAL;
	size_t o = 0;
	int off;

	buf[0] = '\0';
	if (date)
		o += (size_t)snprintf(buf + o, sz - o, "%04d-%02d-%02d",
				      dt->year, dt->month, dt->day);
	if (date && time && o < sz)
		buf[o++] = 'T';
	if (time && o < sz)
		o += (size_t)snprintf(buf + o, sz - o, "%02d:%02d:%02d",
				      dt->hour, dt->minute, dt->second);
	if (time && dt->frac_digits > 0 && dt->frac_digits <= 9 && o < sz) {
		uint32_t frac = dt->nanosecond;
		int k;

		for (k = dt->frac_digits; k < 9; k++)
			frac /= 10;
		o += (size_t)snprintf(buf + o, sz - o, ".%0*" PRIu32,
				      dt->frac_digits, frac);
	}
	if (v->type == UB_TOML_DATETIME && o < sz) {
		off = dt->offset_minutes;
		if (dt->offset_z)
			snprintf(buf + o, sz - o, "Z");
		else
			snprintf(buf + o, sz - o, "%c%02ld:%02ld",
				 off < 0 ? '-' : '+', labs((long)off) / 60,
				 labs((long)off) % 60);
	}
}

static void json_value(FILE *f, const struct ub_toml_value *v, locale_t loc)
{
	char text[256]; /* room for any datetime fields, however odd */
	size_t i, n;

	switch (v->type) {
	case UB_TOML_TABLE:
		n = ub_toml_table_len(v);
		fputc('{', f);
		for (i = 0; i < n; i++) {
			if (i)
				fputc(',', f);
			json_string(f, v->c->ents[i].key,
				    v->c->ents[i].key_len);
			fputc(':', f);
			json_value(f, v->c->ents[i].val, loc);
		}
		fputc('}', f);
		return;
	case UB_TOML_ARRAY:
		n = ub_toml_array_len(v);
		fputc('[', f);
		for (i = 0; i < n; i++) {
			if (i)
				fputc(',', f);
			json_value(f, v->c->items[i], loc);
		}
		fputc(']', f);
		return;
	case UB_TOML_STRING:
		fputs("{\"type\":\"string\",\"value\":", f);
		if (v->u.str.ptr)
			json_string(f, v->u.str.ptr, v->u.str.len);
		else
			json_string(f, "", 0);
		fputc('}', f);
		return;
	case UB_TOML_INTEGER:
		snprintf(text, sizeof(text), "%" PRId64, v->u.integer);
		break;
	case UB_TOML_FLOAT:
		format_float(v->u.flt, loc, text, sizeof(text));
		break;
	case UB_TOML_BOOL:
		snprintf(text, sizeof(text), "%s",
			 v->u.boolean ? "true" : "false");
		break;
	case UB_TOML_DATETIME:
	case UB_TOML_DATETIME_LOCAL:
	case UB_TOML_DATE_LOCAL:
	case UB_TOML_TIME_LOCAL:
		format_datetime(v, text, sizeof(text));
		break;
	default:
		snprintf(text, sizeof(text), "?");
		break;
	}
	fprintf(f, "{\"type\":\"%s\",\"value\":\"%s\"}",
		ub_toml_type_name(v->type), text);
}

int ub_toml_write_tagged_json(FILE *f, const struct ub_toml_value *root)
{
	locale_t loc;

	if (!f || !root)
		return -EINVAL;
	/* owned: "C" number formatting for the round-trip check */
	loc = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
	json_value(f, root, loc);
	if (loc)
		freelocale(loc);
	if (ferror(f))
		return -EIO;
	return 0;
}
