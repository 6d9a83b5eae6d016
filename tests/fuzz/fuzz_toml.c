/* libFuzzer target for the TOML decoder: parses arbitrary bytes and, when
 * they form a document, walks the whole tree through the accessors and
 * writes its tagged JSON to /dev/null. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "config/toml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads every node through the public accessors so that a corrupt tree
 * trips the sanitizers. */
static size_t walk(const struct ub_toml_value *v)
{
	size_t n = 1, i, len, key_len;
	const char *key;

	if (v->type == UB_TOML_TABLE) {
		len = ub_toml_table_len(v);
		for (i = 0; i < len; i++) {
			key = ub_toml_table_key(v, i, &key_len);
			if (!key || key[key_len] != '\0' ||
			    ub_toml_table_key_pos(v, i).line == 0)
				__builtin_trap();
			/* Lookups by name find the same entry. */
			if (strlen(key) == key_len &&
			    ub_toml_table_get(v, key) !=
				ub_toml_table_value(v, i))
				__builtin_trap();
			n += walk(ub_toml_table_value(v, i));
		}
	} else if (v->type == UB_TOML_ARRAY) {
		len = ub_toml_array_len(v);
		for (i = 0; i < len; i++)
			n += walk(ub_toml_array_at(v, i));
	} else if (v->type == UB_TOML_STRING) {
		if (v->u.str.ptr[v->u.str.len] != '\0')
			__builtin_trap();
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ub_toml_value *root = NULL; /* owned: the parsed tree */
	struct ub_toml_error err;
	FILE *f;

	if (ub_toml_parse((const char *)data, size, 0, &root, &err) != 0) {
		if (err.line == 0 || err.col == 0 || err.msg[0] == '\0' || root)
			__builtin_trap();
		return 0;
	}
	walk(root);
	f = fopen("/dev/null", "w");
	if (f) {
		if (ub_toml_write_tagged_json(f, root) != 0)
			__builtin_trap();
		fclose(f);
	}
	ub_toml_free(root);
	return 0;
}
