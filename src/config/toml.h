/* TOML 1.0 decoder: parses a document into a tree of ub_toml_value nodes.
 *
 * Ownership: ub_toml_parse returns a root table that the caller frees with
 * ub_toml_free, which frees every node, key and string below it and wipes
 * every string and key byte first (inline secrets pass through here). A
 * value taken out of a table with ub_toml_table_take belongs to the caller;
 * a value passed to ub_toml_table_insert belongs to the table. Accessors
 * return borrowed pointers valid until the tree is freed or changed. */
#ifndef UB_CONFIG_TOML_H
#define UB_CONFIG_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ub_toml_type {
	UB_TOML_TABLE,
	UB_TOML_ARRAY,
	UB_TOML_STRING,
	UB_TOML_INTEGER,
	UB_TOML_FLOAT,
	UB_TOML_BOOL,
	UB_TOML_DATETIME,	/* offset date-time */
	UB_TOML_DATETIME_LOCAL, /* local date-time */
	UB_TOML_DATE_LOCAL,
	UB_TOML_TIME_LOCAL,
};

/* Where something starts in the source: 1-based line and column (column
 * counts Unicode code points), plus the caller's file index passed to
 * ub_toml_parse so merged trees can still name their file. */
struct ub_toml_pos {
	uint32_t line;
	uint32_t col;
	uint32_t file;
};

struct ub_toml_datetime {
	int year, month, day;	    /* valid for DATETIME*, DATE_LOCAL */
	int hour, minute, second;   /* valid for DATETIME*, TIME_LOCAL */
	uint32_t nanosecond;	    /* fraction, truncated to 9 digits */
	int frac_digits;	    /* digits written (0 = no fraction), max 9 */
	int offset_minutes;	    /* DATETIME only; Z is 0 */
	bool offset_z;		    /* written as Z/z rather than +00:00 */
};

struct ub_toml_value;

struct ub_toml_value {
	enum ub_toml_type type;
	struct ub_toml_pos pos;
	union {
		struct {
			char *ptr; /* NUL-terminated; may also hold NULs */
			size_t len;
		} str;
		int64_t integer;
		double flt;
		bool boolean;
		struct ub_toml_datetime dt;
	} u;
	/* Tables and arrays: use the accessors below. */
	struct ub_toml_container *c;
};

/* Parse error: 1-based position and a message without position. */
struct ub_toml_error {
	uint32_t line;
	uint32_t col;
	char msg[256];
};

/* Parses len bytes (need not be NUL-terminated; must be UTF-8). On success
 * stores a new root table in *out and returns 0; on failure returns -EINVAL
 * (or -ENOMEM) and fills *err. file_index is copied into every pos. */
int ub_toml_parse(const char *buf, size_t len, uint32_t file_index,
		  struct ub_toml_value **out, struct ub_toml_error *err);
/* Frees (and wipes) a tree or a detached value; NULL is accepted. */
void ub_toml_free(struct ub_toml_value *v);

const char *ub_toml_type_name(enum ub_toml_type t);

/* Tables keep keys in insertion (document) order. */
size_t ub_toml_table_len(const struct ub_toml_value *table);
/* i-th key (NUL-terminated; may hold NULs, length in *key_len if not NULL)
 * and its value, and where the key was written. */
const char *ub_toml_table_key(const struct ub_toml_value *table, size_t i,
			      size_t *key_len);
struct ub_toml_value *ub_toml_table_value(const struct ub_toml_value *table,
					  size_t i);
struct ub_toml_pos ub_toml_table_key_pos(const struct ub_toml_value *table,
					 size_t i);
/* Value for a NUL-terminated key, or NULL. */
struct ub_toml_value *ub_toml_table_get(const struct ub_toml_value *table,
					const char *key);
/* Removes key from the table and hands its value to the caller (NULL if the
 * key is absent). */
struct ub_toml_value *ub_toml_table_take(struct ub_toml_value *table,
					 const char *key);
/* Appends key -> val (the table takes val; the key is copied). Returns
 * -EEXIST if the key is present (val not taken), -ENOMEM on failure. */
int ub_toml_table_insert(struct ub_toml_value *table, const char *key,
			 size_t key_len, struct ub_toml_pos key_pos,
			 struct ub_toml_value *val);

size_t ub_toml_array_len(const struct ub_toml_value *array);
struct ub_toml_value *ub_toml_array_at(const struct ub_toml_value *array,
				       size_t i);

/* Writes the toml-test tagged-JSON encoding of a tree (see
 * shared/conformance/run-toml-test) to f. Returns 0 or -errno. */
#include <stdio.h>
int ub_toml_write_tagged_json(FILE *f, const struct ub_toml_value *root);

#endif
