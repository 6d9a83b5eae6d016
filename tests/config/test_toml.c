/* TOML decoder: the accessor API, positions of keys, values and errors,
 * the redefinition rules, number limits, nesting limits and a few tricky
 * documents (the full grammar is covered by the toml-test suite). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/toml.h"

/* Parses a NUL-terminated document that must be valid. */
static struct ub_toml_value *parse_ok(const char *doc)
{
	struct ub_toml_value *root = NULL;
	struct ub_toml_error err;
	int rc;

	rc = ub_toml_parse(doc, strlen(doc), 7, &root, &err);
	if (rc)
		print_error("unexpected error %u:%u: %s\n", err.line, err.col,
			    err.msg);
	assert_int_equal(rc, 0);
	assert_non_null(root);
	assert_int_equal(root->type, UB_TOML_TABLE);
	return root;
}

/* Parses len bytes that must be rejected with a message containing msg
 * at line:col (line 0: any position). */
static void expect_error_n(const char *doc, size_t len, uint32_t line,
			   uint32_t col, const char *msg)
{
	struct ub_toml_value *root = (struct ub_toml_value *)1;
	struct ub_toml_error err;
	int rc;

	rc = ub_toml_parse(doc, len, 0, &root, &err);
	if (rc == 0)
		print_error("accepted: %.*s\n", (int)len, doc);
	assert_int_equal(rc, -EINVAL);
	assert_null(root);
	if (!strstr(err.msg, msg) ||
	    (line && (err.line != line || err.col != col)))
		print_error("got %u:%u: %s, want %u:%u: %s\n", err.line,
			    err.col, err.msg, line, col, msg);
	assert_non_null(strstr(err.msg, msg));
	if (line) {
		assert_int_equal(err.line, line);
		assert_int_equal(err.col, col);
	}
}

static void expect_error(const char *doc, uint32_t line, uint32_t col,
			 const char *msg)
{
	expect_error_n(doc, strlen(doc), line, col, msg);
}

/* Tagged JSON of a tree, as a malloc'ed string. */
static char *to_json(const struct ub_toml_value *v)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	assert_int_equal(ub_toml_write_tagged_json(f, v), 0);
	assert_int_equal(fclose(f), 0);
	return buf;
}

static void assert_json(const char *doc, const char *want)
{
	struct ub_toml_value *root = parse_ok(doc);
	char *got = to_json(root);

	if (strcmp(got, want) != 0)
		print_error("json:\n got  %s\n want %s\n", got, want);
	assert_string_equal(got, want);
	free(got);
	ub_toml_free(root);
}

/* Repeats s n times into a new string. */
static char *repeat(const char *prefix, const char *s, size_t n,
		    const char *suffix)
{
	size_t len = strlen(prefix) + strlen(s) * n + strlen(suffix) + 1;
	char *out = malloc(len);

	assert_non_null(out);
	strcpy(out, prefix);
	for (size_t i = 0; i < n; i++)
		strcat(out, s);
	strcat(out, suffix);
	return out;
}

static void test_empty_document_is_empty_table(void **state)
{
	struct ub_toml_value *root = parse_ok("");

	assert_int_equal(ub_toml_table_len(root), 0);
	assert_null(ub_toml_table_key(root, 0, NULL));
	assert_null(ub_toml_table_value(root, 0));
	ub_toml_free(root);

	root = parse_ok("\n# only a comment\r\n  \t\n");
	assert_int_equal(ub_toml_table_len(root), 0);
	ub_toml_free(root);
}

static void test_scalar_values_and_accessors(void **state)
{
	struct ub_toml_value *root =
	    parse_ok("s = 'lit'\ni = -42\nf = 6.5e-1\nb = true\n"
		     "odt = 1979-05-27T07:32:00.250-07:30\n"
		     "ldt = 1979-05-27 07:32:00\nld = 2024-02-29\n"
		     "lt = 23:59:60.123456789999\nz = 2000-01-01T00:00:00z\n");
	struct ub_toml_value *v;

	v = ub_toml_table_get(root, "s");
	assert_int_equal(v->type, UB_TOML_STRING);
	assert_string_equal(v->u.str.ptr, "lit");
	assert_int_equal(v->u.str.len, 3);
	v = ub_toml_table_get(root, "i");
	assert_int_equal(v->type, UB_TOML_INTEGER);
	assert_int_equal(v->u.integer, -42);
	v = ub_toml_table_get(root, "f");
	assert_int_equal(v->type, UB_TOML_FLOAT);
	assert_true(v->u.flt == 0.65);
	v = ub_toml_table_get(root, "b");
	assert_int_equal(v->type, UB_TOML_BOOL);
	assert_true(v->u.boolean);

	v = ub_toml_table_get(root, "odt");
	assert_int_equal(v->type, UB_TOML_DATETIME);
	assert_int_equal(v->u.dt.year, 1979);
	assert_int_equal(v->u.dt.month, 5);
	assert_int_equal(v->u.dt.day, 27);
	assert_int_equal(v->u.dt.hour, 7);
	assert_int_equal(v->u.dt.minute, 32);
	assert_int_equal(v->u.dt.second, 0);
	assert_int_equal(v->u.dt.nanosecond, 250000000);
	assert_int_equal(v->u.dt.frac_digits, 3);
	assert_int_equal(v->u.dt.offset_minutes, -(7 * 60 + 30));
	assert_false(v->u.dt.offset_z);

	v = ub_toml_table_get(root, "ldt");
	assert_int_equal(v->type, UB_TOML_DATETIME_LOCAL);
	assert_int_equal(v->u.dt.frac_digits, 0);
	v = ub_toml_table_get(root, "ld");
	assert_int_equal(v->type, UB_TOML_DATE_LOCAL);
	assert_int_equal(v->u.dt.day, 29);
	v = ub_toml_table_get(root, "lt");
	assert_int_equal(v->type, UB_TOML_TIME_LOCAL);
	assert_int_equal(v->u.dt.second, 60);
	/* Fractions are truncated to nanoseconds. */
	assert_int_equal(v->u.dt.nanosecond, 123456789);
	assert_int_equal(v->u.dt.frac_digits, 9);
	v = ub_toml_table_get(root, "z");
	assert_true(v->u.dt.offset_z);
	assert_int_equal(v->u.dt.offset_minutes, 0);

	assert_null(ub_toml_table_get(root, "missing"));
	assert_null(ub_toml_table_get(NULL, "s"));
	assert_int_equal(ub_toml_table_len(ub_toml_table_get(root, "s")), 0);
	assert_int_equal(ub_toml_array_len(root), 0);
	assert_null(ub_toml_array_at(root, 0));
	ub_toml_free(root);
}

static void test_type_names_match_toml_test(void **state)
{
	assert_string_equal(ub_toml_type_name(UB_TOML_TABLE), "table");
	assert_string_equal(ub_toml_type_name(UB_TOML_ARRAY), "array");
	assert_string_equal(ub_toml_type_name(UB_TOML_STRING), "string");
	assert_string_equal(ub_toml_type_name(UB_TOML_INTEGER), "integer");
	assert_string_equal(ub_toml_type_name(UB_TOML_FLOAT), "float");
	assert_string_equal(ub_toml_type_name(UB_TOML_BOOL), "bool");
	assert_string_equal(ub_toml_type_name(UB_TOML_DATETIME), "datetime");
	assert_string_equal(ub_toml_type_name(UB_TOML_DATETIME_LOCAL),
			    "datetime-local");
	assert_string_equal(ub_toml_type_name(UB_TOML_DATE_LOCAL),
			    "date-local");
	assert_string_equal(ub_toml_type_name(UB_TOML_TIME_LOCAL),
			    "time-local");
}

static void test_tables_keep_document_order(void **state)
{
	struct ub_toml_value *root =
	    parse_ok("zeta = 1\nalpha = 2\n[mid]\nz = 1\ny = 2\n"
		     "[aaa]\n[mid.sub]\n");
	const char *want[] = {"zeta", "alpha", "mid", "aaa"};
	struct ub_toml_value *mid;
	size_t len;

	assert_int_equal(ub_toml_table_len(root), 4);
	for (size_t i = 0; i < 4; i++) {
		assert_string_equal(ub_toml_table_key(root, i, &len), want[i]);
		assert_int_equal(len, strlen(want[i]));
	}
	mid = ub_toml_table_value(root, 2);
	assert_int_equal(ub_toml_table_len(mid), 3);
	assert_string_equal(ub_toml_table_key(mid, 0, NULL), "z");
	assert_string_equal(ub_toml_table_key(mid, 1, NULL), "y");
	assert_string_equal(ub_toml_table_key(mid, 2, NULL), "sub");
	ub_toml_free(root);
}

static void test_positions_of_keys_and_values(void **state)
{
	/* "é" is two bytes but one column. */
	struct ub_toml_value *root =
	    parse_ok("# c\n  key = \"é\"   \nx = [1,\n  'é', 3]\n"
		     "[tbl . \"sub\"]\n\"q\"=1979-05-27\n");
	struct ub_toml_value *v, *tbl, *sub;
	struct ub_toml_pos pos;

	pos = ub_toml_table_key_pos(root, 0);
	assert_int_equal(pos.line, 2);
	assert_int_equal(pos.col, 3);
	assert_int_equal(pos.file, 7);
	v = ub_toml_table_value(root, 0);
	assert_int_equal(v->pos.line, 2);
	assert_int_equal(v->pos.col, 9);
	assert_int_equal(v->pos.file, 7);

	v = ub_toml_table_get(root, "x");
	assert_int_equal(v->pos.line, 3);
	assert_int_equal(v->pos.col, 5);
	assert_int_equal(ub_toml_array_at(v, 1)->pos.line, 4);
	assert_int_equal(ub_toml_array_at(v, 1)->pos.col, 3);
	assert_int_equal(ub_toml_array_at(v, 2)->pos.line, 4);
	assert_int_equal(ub_toml_array_at(v, 2)->pos.col, 8);

	tbl = ub_toml_table_get(root, "tbl");
	pos = ub_toml_table_key_pos(root, 2);
	assert_int_equal(pos.line, 5);
	assert_int_equal(pos.col, 2);
	sub = ub_toml_table_get(tbl, "sub");
	assert_int_equal(sub->pos.line, 5);
	assert_int_equal(sub->pos.col, 1);
	pos = ub_toml_table_key_pos(tbl, 0);
	assert_int_equal(pos.line, 5);
	assert_int_equal(pos.col, 8);
	pos = ub_toml_table_key_pos(sub, 0);
	assert_int_equal(pos.line, 6);
	assert_int_equal(pos.col, 1);
	v = ub_toml_table_value(sub, 0);
	assert_int_equal(v->pos.col, 5);

	pos = ub_toml_table_key_pos(root, 99);
	assert_int_equal(pos.line, 0);
	ub_toml_free(root);
}

static void test_positions_after_bom_and_crlf(void **state)
{
	struct ub_toml_value *root = parse_ok("\xef\xbb\xbf"
					      "a = 1\r\n\r\n  b = 2\r\n");
	struct ub_toml_pos pos;

	pos = ub_toml_table_key_pos(root, 0);
	assert_int_equal(pos.line, 1);
	assert_int_equal(pos.col, 1);
	pos = ub_toml_table_key_pos(root, 1);
	assert_int_equal(pos.line, 3);
	assert_int_equal(pos.col, 3);
	ub_toml_free(root);
}

static void test_take_detaches_and_insert_appends(void **state)
{
	struct ub_toml_value *root = parse_ok("a = 1\nb = 'two'\nc = [3]\n");
	struct ub_toml_value *b, *again;
	struct ub_toml_pos pos = {9, 8, 1};

	b = ub_toml_table_take(root, "b");
	assert_non_null(b);
	assert_string_equal(b->u.str.ptr, "two");
	assert_int_equal(ub_toml_table_len(root), 2);
	assert_string_equal(ub_toml_table_key(root, 0, NULL), "a");
	assert_string_equal(ub_toml_table_key(root, 1, NULL), "c");
	assert_null(ub_toml_table_get(root, "b"));
	assert_null(ub_toml_table_take(root, "b"));

	assert_int_equal(ub_toml_table_insert(root, "b", 1, pos, b), 0);
	assert_int_equal(ub_toml_table_len(root), 3);
	assert_string_equal(ub_toml_table_key(root, 2, NULL), "b");
	assert_ptr_equal(ub_toml_table_get(root, "b"), b);
	pos = ub_toml_table_key_pos(root, 2);
	assert_int_equal(pos.line, 9);
	assert_int_equal(pos.col, 8);
	assert_int_equal(pos.file, 1);

	/* A present key is refused and the value stays with the caller. */
	again = ub_toml_table_take(root, "a");
	assert_int_equal(ub_toml_table_insert(root, "c", 1, pos, again),
			 -EEXIST);
	assert_int_equal(ub_toml_table_len(root), 2);
	ub_toml_free(again);

	assert_int_equal(ub_toml_table_insert(root, "x", 1, pos, NULL),
			 -EINVAL);
	assert_int_equal(ub_toml_table_insert(b, "x", 1, pos, root), -EINVAL);
	ub_toml_free(root);
	ub_toml_free(NULL);
}

static void test_insert_copies_keys_with_nuls(void **state)
{
	struct ub_toml_value *root = parse_ok("\"a\\u0000b\" = 1\n");
	struct ub_toml_value *other = parse_ok("v = 2");
	struct ub_toml_value *v = ub_toml_table_take(other, "v");
	struct ub_toml_pos pos = {1, 1, 0};
	const char *key;
	size_t len;

	key = ub_toml_table_key(root, 0, &len);
	assert_int_equal(len, 3);
	assert_memory_equal(key, "a\0b", 4);
	/* A NUL-terminated lookup cannot name it. */
	assert_null(ub_toml_table_get(root, "a"));
	assert_int_equal(ub_toml_table_insert(root, "a\0b", 3, pos, v),
			 -EEXIST);
	assert_int_equal(ub_toml_table_insert(root, "a\0c", 3, pos, v), 0);
	assert_int_equal(ub_toml_table_len(root), 2);
	ub_toml_free(root);
	ub_toml_free(other);
}

static void test_take_from_parsed_tree_leaks_nothing(void **state)
{
	/* The taken tree was parsed on its own: free both separately. */
	struct ub_toml_value *doc = parse_ok("[t]\nx = 1\n");
	struct ub_toml_value *t = ub_toml_table_take(doc, "t");

	assert_int_equal(ub_toml_table_len(doc), 0);
	assert_int_equal(ub_toml_table_get(t, "x")->u.integer, 1);
	ub_toml_free(doc);
	ub_toml_free(t);
}

static void test_large_tables_find_every_key(void **state)
{
	char *doc = malloc(200 * 32);
	struct ub_toml_value *root, *v;
	struct ub_toml_pos pos = {0, 0, 0};
	char key[32];
	size_t o = 0;
	int i;

	assert_non_null(doc);
	for (i = 0; i < 200; i++)
		o += (size_t)sprintf(doc + o, "k%d = %d\n", i, i);
	root = parse_ok(doc);
	free(doc);
	assert_int_equal(ub_toml_table_len(root), 200);
	for (i = 0; i < 200; i++) {
		sprintf(key, "k%d", i);
		v = ub_toml_table_get(root, key);
		assert_non_null(v);
		assert_int_equal(v->u.integer, i);
	}
	/* Removing keys keeps lookups and order right. */
	for (i = 0; i < 200; i += 2) {
		sprintf(key, "k%d", i);
		v = ub_toml_table_take(root, key);
		assert_non_null(v);
		assert_int_equal(v->u.integer, i);
		if (i == 100) {
			assert_int_equal(
			    ub_toml_table_insert(root, "k101", 4, pos, v),
			    -EEXIST);
			assert_int_equal(
			    ub_toml_table_insert(root, "new", 3, pos, v), 0);
		} else {
			ub_toml_free(v);
		}
	}
	assert_int_equal(ub_toml_table_len(root), 101);
	assert_string_equal(ub_toml_table_key(root, 0, NULL), "k1");
	assert_string_equal(ub_toml_table_key(root, 100, NULL), "new");
	for (i = 1; i < 200; i += 2) {
		sprintf(key, "k%d", i);
		assert_non_null(ub_toml_table_get(root, key));
	}
	assert_int_equal(ub_toml_table_get(root, "new")->u.integer, 100);
	ub_toml_free(root);
}

static void test_arrays_and_arrays_of_tables(void **state)
{
	struct ub_toml_value *root =
	    parse_ok("mixed = [1, 'two', [3.0], {four = 4},]\n"
		     "[[aot]]\nn = 1\n[aot.sub]\nx = 1\n[[aot]]\nn = 2\n");
	struct ub_toml_value *mixed, *aot;

	mixed = ub_toml_table_get(root, "mixed");
	assert_int_equal(mixed->type, UB_TOML_ARRAY);
	assert_int_equal(ub_toml_array_len(mixed), 4);
	assert_int_equal(ub_toml_array_at(mixed, 0)->type, UB_TOML_INTEGER);
	assert_int_equal(ub_toml_array_at(mixed, 1)->type, UB_TOML_STRING);
	assert_int_equal(ub_toml_array_at(mixed, 2)->type, UB_TOML_ARRAY);
	assert_int_equal(ub_toml_array_at(mixed, 3)->type, UB_TOML_TABLE);
	assert_null(ub_toml_array_at(mixed, 4));

	aot = ub_toml_table_get(root, "aot");
	assert_int_equal(ub_toml_array_len(aot), 2);
	assert_int_equal(
	    ub_toml_table_get(ub_toml_array_at(aot, 0), "n")->u.integer, 1);
	assert_non_null(ub_toml_table_get(ub_toml_array_at(aot, 0), "sub"));
	assert_int_equal(
	    ub_toml_table_get(ub_toml_array_at(aot, 1), "n")->u.integer, 2);
	assert_int_equal(ub_toml_array_at(aot, 1)->pos.line, 6);
	ub_toml_free(root);
}

static void test_error_positions_are_one_based(void **state)
{
	expect_error("a = 1\nb = \"x\\qy\"\n", 2, 7,
		     "invalid escape '\\q' in string");
	expect_error("a = 1\na = 2\n", 2, 1, "duplicate key 'a'");
	expect_error("x = \"é\" y", 1, 9, "expected end of line, found 'y'");
	expect_error("x = 1\n\n   = 2", 3, 4, "expected a key, found '='");
	expect_error("s = \"abc", 1, 5, "unterminated string");
	expect_error("s = \"\"\"\nabc\n\x01\"\"\"", 3, 1,
		     "control character U+0001 in string");
	expect_error("# ok\n# bad \x7f", 2, 7,
		     "control character U+007F in comment");
	expect_error("a = 1 b = 2", 1, 7, "expected end of line");
	expect_error("a = ", 1, 5, "expected a value, found end of input");
	expect_error("a.b.c = 1\na.b = 2", 2, 3, "duplicate key 'a.b'");
}

static void test_error_struct_is_optional(void **state)
{
	struct ub_toml_value *root = NULL;

	assert_int_equal(ub_toml_parse("a = ", 4, 0, &root, NULL), -EINVAL);
	assert_null(root);
	assert_int_equal(ub_toml_parse(NULL, 0, 0, &root, NULL), 0);
	assert_int_equal(ub_toml_table_len(root), 0);
	ub_toml_free(root);
	assert_int_equal(ub_toml_parse(NULL, 3, 0, &root, NULL), -EINVAL);
}

static void test_input_need_not_be_nul_terminated(void **state)
{
	struct ub_toml_value *root = NULL;
	struct ub_toml_error err;
	const char doc[] = {'a', ' ', '=', ' ', '1', '2', '3'};

	/* Only the first five bytes count. */
	assert_int_equal(ub_toml_parse(doc, 5, 0, &root, &err), 0);
	assert_int_equal(ub_toml_table_get(root, "a")->u.integer, 1);
	ub_toml_free(root);
}

static void test_redefining_tables_is_rejected(void **state)
{
	expect_error("[a]\n[a]\n", 2, 2, "table 'a' already defined");
	expect_error("[a.b]\n[a]\n[a]\n", 3, 2, "table 'a' already defined");
	expect_error("[a]\nb = 1\n[a.b]\n", 3, 4,
		     "key 'a.b' is already defined as integer");
	expect_error("a.b = 1\n[a]\n", 2, 2,
		     "table 'a' already defined by dotted keys");
	expect_error("[t1]\nt2.t3.v = 0\n[t1.t2.t3]\n", 3, 8,
		     "already defined by dotted keys");
	expect_error("a = {}\n[a]\n", 2, 2, "already defined as an inline");
	expect_error("a = {b = 1}\n[a.c]\n", 2, 2,
		     "cannot extend inline table 'a'");
	expect_error("a = {b = 1}\na.c = 2\n", 2, 1,
		     "cannot extend inline table 'a'");
	expect_error("a = {b = {c = 1}, b.d = 2}\n", 1, 19,
		     "cannot extend inline table 'b'");
	expect_error("a = {b = 1, b.c = 2}\n", 1, 13,
		     "key 'b' is already defined as integer");
	/* Paths in messages are the key as written on that line. */
	expect_error("[a.b.c]\nz = 9\n[a]\nb.c.t = 1\n", 4, 3,
		     "table 'b.c' was defined by a header");
	expect_error("[[a]]\n[a]\n", 2, 2, "already defined as array");
	expect_error("[a]\n[[a]]\n", 2, 3, "already defined as table");
	expect_error("a = []\n[[a]]\n", 2, 3,
		     "cannot append to static array 'a'");
	expect_error("a = [{}]\n[a.b]\n", 2, 2,
		     "cannot extend static array 'a'");
	expect_error("[[a.b]]\n[a]\nb.y = 2\n", 3, 1,
		     "key 'b' is already defined as array");
	expect_error("[[albums.songs]]\n[[albums]]\n", 2, 3,
		     "already defined as table");
}

static void test_allowed_table_extensions(void **state)
{
	struct ub_toml_value *root;

	/* Implicit tables may be defined later, once. */
	root = parse_ok("[a.b.c]\n[a]\nx = 1\n[a.b]\ny = 2\n");
	assert_int_equal(ub_toml_table_len(ub_toml_table_get(root, "a")), 2);
	ub_toml_free(root);
	/* Sub-tables of tables made by dotted keys. */
	root = parse_ok("[fruit]\napple.color = 'red'\n"
			"[fruit.apple.texture]\nsmooth = true\n"
			"[[fruit.apple.seeds]]\n");
	ub_toml_free(root);
	/* Dotted keys in one section extend each other. */
	root =
	    parse_ok("a.b.c = 1\na.b.d = 2\na.e = 3\nf = {g.h = 1, g.i = 2}");
	ub_toml_free(root);
	/* [[x]] sub-tables go into the latest element. */
	root = parse_ok("[[x]]\n[x.y]\n[[x]]\n[x.y]\n");
	assert_int_equal(ub_toml_array_len(ub_toml_table_get(root, "x")), 2);
	ub_toml_free(root);
}

static void test_dotted_keys_may_define_implicit_tables_once(void **state)
{
	struct ub_toml_value *root;

	/* a.b exists only implicitly; dotted keys then define it. */
	root = parse_ok("[a.b.c]\n[a]\nb.d = 1\n");
	assert_non_null(ub_toml_table_get(
	    ub_toml_table_get(ub_toml_table_get(root, "a"), "b"), "d"));
	ub_toml_free(root);
	expect_error("[a.b.c]\n[a]\nb.d = 1\n[a.b]\n", 4, 4,
		     "table 'a.b' already defined by dotted keys");
}

static void test_integer_limits_and_overflow(void **state)
{
	assert_json("a = 9223372036854775807\nb = -9223372036854775808\n"
		    "c = 0x7FFF_FFFF_FFFF_FFFF\nd = 0o777\ne = 0b1010\n"
		    "f = +0\ng = -0\nh = 1_000\n",
		    "{\"a\":{\"type\":\"integer\",\"value\":"
		    "\"9223372036854775807\"},"
		    "\"b\":{\"type\":\"integer\",\"value\":"
		    "\"-9223372036854775808\"},"
		    "\"c\":{\"type\":\"integer\",\"value\":"
		    "\"9223372036854775807\"},"
		    "\"d\":{\"type\":\"integer\",\"value\":\"511\"},"
		    "\"e\":{\"type\":\"integer\",\"value\":\"10\"},"
		    "\"f\":{\"type\":\"integer\",\"value\":\"0\"},"
		    "\"g\":{\"type\":\"integer\",\"value\":\"0\"},"
		    "\"h\":{\"type\":\"integer\",\"value\":\"1000\"}}");
	expect_error("a = 9223372036854775808", 1, 5, "integer overflow");
	expect_error("a = -9223372036854775809", 1, 5, "integer overflow");
	expect_error("a = 0x8000000000000000", 1, 5, "integer overflow");
	expect_error("a = 0b11111111111111111111111111111111111111111111111111"
		     "111111111111111",
		     1, 5, "integer overflow");
	expect_error("a = 99999999999999999999999999", 1, 5,
		     "integer overflow");
}

static void test_malformed_numbers_are_rejected(void **state)
{
	expect_error("a = 01", 1, 5, "leading zeros");
	expect_error("a = -01.5", 1, 5, "leading zeros");
	expect_error("a = 1__0", 1, 6, "'_' must be between digits");
	expect_error("a = 1_", 1, 6, "'_' must be between digits");
	expect_error("a = _1", 1, 5, "expected a value");
	expect_error("a = 0x_1", 1, 7, "'_' must be between digits");
	expect_error("a = +0x1", 1, 5, "sign not allowed");
	expect_error("a = 0X1", 1, 6, "invalid character 'X' in number");
	expect_error("a = 1.", 1, 7, "expected digits after '.'");
	expect_error("a = .5", 1, 5, "expected a value");
	expect_error("a = 1e", 1, 7, "expected digits in exponent");
	expect_error("a = 1.5e+_2", 1, 10, "'_' must be between digits");
	expect_error("a = 1e400", 1, 5, "float out of range");
	expect_error("a = infinity", 1, 5, "invalid number");
	expect_error("a = 0b102", 1, 9, "invalid character '2' in number");
}

static void test_floats_round_trip_in_json(void **state)
{
	assert_json("a = 0.1\nb = -0.0\nc = 1e300\nd = 5e-324\ne = 3\n"
		    "f = +inf\ng = -inf\nh = -nan\ni = 1_0.0_1e1_0\n",
		    "{\"a\":{\"type\":\"float\",\"value\":\"0.1\"},"
		    "\"b\":{\"type\":\"float\",\"value\":\"-0.0\"},"
		    "\"c\":{\"type\":\"float\",\"value\":\"1e+300\"},"
		    "\"d\":{\"type\":\"float\",\"value\":\"5e-324\"},"
		    "\"e\":{\"type\":\"integer\",\"value\":\"3\"},"
		    "\"f\":{\"type\":\"float\",\"value\":\"inf\"},"
		    "\"g\":{\"type\":\"float\",\"value\":\"-inf\"},"
		    "\"h\":{\"type\":\"float\",\"value\":\"nan\"},"
		    "\"i\":{\"type\":\"float\",\"value\":\"1.001e+11\"}}");
}

static void test_dates_are_validated(void **state)
{
	struct ub_toml_value *root = parse_ok("a = 2000-02-29\nb = 2024-02-29"
					      "\nc = 2023-12-31T23:59:60Z\n");

	ub_toml_free(root);
	expect_error("a = 1900-02-29", 1, 13, "day out of range");
	expect_error("a = 2023-02-29", 1, 13, "day out of range");
	expect_error("a = 2023-04-31", 1, 13, "day out of range");
	expect_error("a = 2023-13-01", 1, 10, "month out of range");
	expect_error("a = 2023-00-01", 1, 10, "month out of range");
	expect_error("a = 2023-01-00", 1, 13, "day out of range");
	expect_error("a = 24:00:00", 1, 5, "hour out of range");
	expect_error("a = 23:60:00", 1, 8, "minute out of range");
	expect_error("a = 23:59:61", 1, 11, "second out of range");
	expect_error("a = 23:59", 1, 5, "invalid time");
	expect_error("a = 2023-01-01T", 1, 16, "invalid time");
	expect_error("a = 2023-01-01T10:00:00+24:00", 1, 24,
		     "time offset out of range");
	expect_error("a = 2023-01-01T10:00:00+1:00", 1, 24,
		     "invalid time offset");
	expect_error("a = 2023-01-01T10:00:00.", 1, 25, "expected digits");
	expect_error("a = 10:00:00Z", 1, 13, "expected end of line");
}

static void test_datetimes_print_as_written(void **state)
{
	assert_json("a = 1979-05-27t07:32:00.120-00:00\n"
		    "b = 1979-05-27 07:32:00.000001\nc = 0001-01-01\n"
		    "d = 00:00:00.5\ne = 1979-05-27T07:32:00+05:45\n",
		    "{\"a\":{\"type\":\"datetime\",\"value\":"
		    "\"1979-05-27T07:32:00.120+00:00\"},"
		    "\"b\":{\"type\":\"datetime-local\",\"value\":"
		    "\"1979-05-27T07:32:00.000001\"},"
		    "\"c\":{\"type\":\"date-local\",\"value\":\"0001-01-01\"},"
		    "\"d\":{\"type\":\"time-local\",\"value\":\"00:00:00.5\"},"
		    "\"e\":{\"type\":\"datetime\",\"value\":"
		    "\"1979-05-27T07:32:00+05:45\"}}");
}

static void test_strings_escapes_and_multiline_rules(void **state)
{
	struct ub_toml_value *root = parse_ok(
	    "a = \"tab\\there \\\"q\\\" \\\\ \\u00e9 \\U0001F600 \\u0000!\"\n"
	    "b = \"\"\"\nline1\r\nline2 \\\n   \n  joined\"\"\"\n"
	    "c = \"\"\"two quotes at the end\"\"\"\"\"\n"
	    "d = '''\n'raw' \\n''''\n"
	    "e = ''\nf = \"\"\"\"\"\"\n");
	struct ub_toml_value *v;

	v = ub_toml_table_get(root, "a");
	assert_int_equal(v->u.str.len, strlen("tab\there \"q\" \\ é 😀 ") + 2);
	assert_memory_equal(v->u.str.ptr, "tab\there \"q\" \\ é 😀 \0!",
			    v->u.str.len + 1);
	v = ub_toml_table_get(root, "b");
	assert_string_equal(v->u.str.ptr, "line1\nline2 joined");
	v = ub_toml_table_get(root, "c");
	assert_string_equal(v->u.str.ptr, "two quotes at the end\"\"");
	v = ub_toml_table_get(root, "d");
	assert_string_equal(v->u.str.ptr, "'raw' \\n'");
	v = ub_toml_table_get(root, "e");
	assert_int_equal(v->u.str.len, 0);
	v = ub_toml_table_get(root, "f");
	assert_int_equal(v->u.str.len, 0);
	ub_toml_free(root);
}

static void test_bad_strings_are_rejected(void **state)
{
	expect_error("a = \"\\uD800\"", 1, 6, "not a Unicode scalar value");
	expect_error("a = \"\\U00110000\"", 1, 6, "not a Unicode scalar value");
	expect_error("a = \"\\u12\"", 1, 6, "needs 4 hex digits");
	expect_error("a = \"\\x41\"", 1, 6, "invalid escape '\\x'");
	expect_error("a = \"\\e\"", 1, 6, "invalid escape '\\e'");
	expect_error("a = \"a\nb\"", 1, 7, "newline in single-line string");
	expect_error("a = 'a\tb\x1f'", 1, 9, "control character U+001F");
	expect_error("a = \"\"\"x\"\"\"\"\"\"", 1, 14, "too many quotes");
	expect_error("a = \"\"\"x \\ y\"\"\"", 1, 10,
		     "backslash followed by whitespace must end the line");
	expect_error("\"\"\"k\"\"\" = 1", 1, 1,
		     "a key cannot be a multi-line string");
	expect_error("a = '''abc", 1, 5, "unterminated string");
}

static void test_encoding_errors_are_rejected(void **state)
{
	expect_error_n("a = 'x'\rb = 1", 13, 1, 8, "carriage return");
	expect_error_n("a = '\xc0\x80'", 8, 1, 6, "overlong");
	expect_error_n("a = '\xe0\x80\x80'", 9, 1, 6, "overlong");
	expect_error_n("a = '\xed\xa0\x80'", 9, 1, 6, "surrogate");
	expect_error_n("a = '\xf4\x90\x80\x80'", 10, 1, 6, "above U+10FFFF");
	expect_error_n("# \xff\n", 4, 1, 3, "invalid UTF-8 byte 0xff");
	expect_error_n("a = '\xe2\x82'", 8, 1, 6, "truncated UTF-8");
	expect_error_n("a = 1\n\xef\xbb\xbf", 9, 2, 1, "expected a key");
	expect_error_n("a = 1\0", 6, 1, 6, "expected end of line");
}

static void test_inline_table_rules(void **state)
{
	expect_error("a = {b = 1,}", 1, 12, "trailing comma in inline table");
	expect_error("a = {b = 1\n}", 1, 11, "newline in inline table");
	expect_error("a = {\nb = 1}", 1, 6, "expected a key");
	expect_error("a = {b = 1 # c\n}", 1, 12, "expected ',' or '}'");
	expect_error("a = {b = 1, b = 2}", 1, 13, "duplicate key 'b'");
	/* Newlines are fine inside an array inside an inline table. */
	assert_json("a = {b = [\n1, # one\n2,\n]}",
		    "{\"a\":{\"b\":[{\"type\":\"integer\",\"value\":\"1\"},"
		    "{\"type\":\"integer\",\"value\":\"2\"}]}}");
}

static void test_header_syntax_errors(void **state)
{
	expect_error("[a", 1, 3, "expected ']' closing the table header");
	expect_error("[[a]\n", 1, 4, "expected ']]'");
	expect_error("[[a] ]\n", 1, 4, "expected ']]'");
	expect_error("[a] b = 1\n", 1, 5, "expected end of line");
	expect_error("[]\n", 1, 2, "expected a key");
	expect_error("[a.]\n", 1, 4, "expected a key");
	expect_error("a..b = 1\n", 1, 3, "expected a key");
	expect_error("a = 1\n[ [b] ]\n", 2, 3, "expected a key, found '['");
}

static void test_deep_nesting_is_rejected(void **state)
{
	struct ub_toml_value *root;
	char *doc;

	/* 100 levels are fine, 128 are not. */
	doc = repeat("a = ", "[", 100, "1");
	doc = realloc(doc, strlen(doc) + 101);
	assert_non_null(doc);
	memset(doc + strlen(doc), ']', 100);
	doc[4 + 100 + 1 + 100] = '\0';
	root = parse_ok(doc);
	ub_toml_free(root);
	free(doc);

	doc = repeat("a = ", "[", 128, "");
	expect_error(doc, 1, 105, "nesting too deep");
	free(doc);
	doc = repeat("a = ", "{b = ", 128, "1");
	expect_error(doc, 0, 0, "nesting too deep");
	free(doc);
	doc = repeat("a", ".a", 128, " = 1");
	expect_error(doc, 1, 201, "nesting too deep");
	free(doc);
	doc = repeat("[a", ".a", 128, "]");
	expect_error(doc, 0, 0, "nesting too deep");
	free(doc);
	doc = repeat("[[a", ".a", 99, "]]");
	expect_error(doc, 0, 0, "nesting too deep");
	free(doc);
	doc = repeat("a = ", "[{b = ", 100, "");
	expect_error(doc, 0, 0, "nesting too deep");
	free(doc);
}

static void test_json_escapes_strings_and_keys(void **state)
{
	assert_json(
	    "\"k\\n\\u0001\" = \"q\\\"b\\\\\\u0000\\u007f\\b\\f\\r\\té\"",
	    "{\"k\\n\\u0001\":{\"type\":\"string\",\"value\":"
	    "\"q\\\"b\\\\\\u0000\\u007f\\b\\f\\r\\té\"}}");
	assert_json("[[t]]\n[[t]]\nx.y = true\n",
		    "{\"t\":[{},{\"x\":{\"y\":{\"type\":\"bool\",\"value\":"
		    "\"true\"}}}]}");
}

static void test_tricky_valid_documents(void **state)
{
	/* Keys that look like other things. */
	assert_json("1979-05-27 = 1\ntrue = false\n3.14 = 'pi'\n'' = 0\n",
		    "{\"1979-05-27\":{\"type\":\"integer\",\"value\":\"1\"},"
		    "\"true\":{\"type\":\"bool\",\"value\":\"false\"},"
		    "\"3\":{\"14\":{\"type\":\"string\",\"value\":\"pi\"}},"
		    "\"\":{\"type\":\"integer\",\"value\":\"0\"}}");
	/* Whitespace around dots and brackets; comments everywhere. */
	assert_json("[ a . \"b\" . 'c' ] # x\n d . e = [ # y\n 1 , # z\n ] #\n",
		    "{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":[{\"type\":"
		    "\"integer\",\"value\":\"1\"}]}}}}}");
}

static void test_tricky_invalid_documents(void **state)
{
	expect_error("a = [1,,2]", 1, 8, "expected a value, found ','");
	expect_error("a = [1 2]", 1, 8, "expected ',' or ']' in array");
	expect_error("a = truex", 1, 9, "expected end of line");
	expect_error("a = tru", 1, 5, "expected a value");
	expect_error("a = 1\n= 2", 2, 1, "expected a key");
	expect_error("a b = 1", 1, 3, "expected '=' after a key");
	expect_error_n("a = 1 # x\0y", 11, 1, 10, "control character U+0000");
	expect_error("é = 1", 1, 1, "expected a key, found U+00E9");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_empty_document_is_empty_table),
	    cmocka_unit_test(test_scalar_values_and_accessors),
	    cmocka_unit_test(test_type_names_match_toml_test),
	    cmocka_unit_test(test_tables_keep_document_order),
	    cmocka_unit_test(test_positions_of_keys_and_values),
	    cmocka_unit_test(test_positions_after_bom_and_crlf),
	    cmocka_unit_test(test_take_detaches_and_insert_appends),
	    cmocka_unit_test(test_insert_copies_keys_with_nuls),
	    cmocka_unit_test(test_take_from_parsed_tree_leaks_nothing),
	    cmocka_unit_test(test_large_tables_find_every_key),
	    cmocka_unit_test(test_arrays_and_arrays_of_tables),
	    cmocka_unit_test(test_error_positions_are_one_based),
	    cmocka_unit_test(test_error_struct_is_optional),
	    cmocka_unit_test(test_input_need_not_be_nul_terminated),
	    cmocka_unit_test(test_redefining_tables_is_rejected),
	    cmocka_unit_test(test_allowed_table_extensions),
	    cmocka_unit_test(test_dotted_keys_may_define_implicit_tables_once),
	    cmocka_unit_test(test_integer_limits_and_overflow),
	    cmocka_unit_test(test_malformed_numbers_are_rejected),
	    cmocka_unit_test(test_floats_round_trip_in_json),
	    cmocka_unit_test(test_dates_are_validated),
	    cmocka_unit_test(test_datetimes_print_as_written),
	    cmocka_unit_test(test_strings_escapes_and_multiline_rules),
	    cmocka_unit_test(test_bad_strings_are_rejected),
	    cmocka_unit_test(test_encoding_errors_are_rejected),
	    cmocka_unit_test(test_inline_table_rules),
	    cmocka_unit_test(test_header_syntax_errors),
	    cmocka_unit_test(test_deep_nesting_is_rejected),
	    cmocka_unit_test(test_json_escapes_strings_and_keys),
	    cmocka_unit_test(test_tricky_valid_documents),
	    cmocka_unit_test(test_tricky_invalid_documents),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
