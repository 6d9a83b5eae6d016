/* toml-decode: reads a TOML document on standard input and prints it as
 * toml-test tagged JSON (the decoder interface of toml-lang/toml-test). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/toml.h"
#include "util/secmem.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: toml-decode [--help]\n"
		"\n"
		"Reads one TOML document on standard input. A valid document "
		"is printed\n"
		"to standard output in the toml-test tagged JSON form (exit "
		"0); for an\n"
		"invalid one, \"toml-decode: LINE:COL: MESSAGE\" goes to "
		"standard error\n"
		"(exit 1).\n");
}

/* Reads all of f into *out (len in *len). The buffer may hold secrets, so
 * it grows by copy-and-wipe rather than realloc. */
static int read_all(FILE *f, char **out, size_t *len)
{
	char *buf = NULL; /* owned: cap bytes, wiped before free */
	char *nbuf;
	size_t cap = 0, n = 0, got;
	int rc = 0;

	for (;;) {
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 65536;

			if (ncap < cap) {
				rc = -ENOMEM;
				goto out;
			}
			nbuf = malloc(ncap); /* replaces buf */
			if (!nbuf) {
				rc = -ENOMEM;
				goto out;
			}
			if (n)
				memcpy(nbuf, buf, n);
			ub_wipe(buf, cap);
			free(buf);
			buf = nbuf;
			cap = ncap;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0) {
			if (ferror(f))
				rc = -EIO;
			break;
		}
	}
out:
	if (rc) {
		ub_wipe(buf, cap);
		free(buf);
		return rc;
	}
	*out = buf;
	*len = n;
	return 0;
}

int main(int argc, char **argv)
{
	struct ub_toml_value *root = NULL; /* owned: the decoded document */
	struct ub_toml_error err;
	char *buf = NULL; /* owned: the input, wiped before free */
	size_t len = 0;
	int status = 1;
	int rc;

	if (argc > 1) {
		if (strcmp(argv[1], "--help") == 0 ||
		    strcmp(argv[1], "-h") == 0) {
			usage(stdout);
			return 0;
		}
		usage(stderr);
		return 2;
	}
	rc = read_all(stdin, &buf, &len);
	if (rc) {
		fprintf(stderr, "toml-decode: cannot read input: %s\n",
			strerror(-rc));
		goto out;
	}
	rc = ub_toml_parse(buf, len, 0, &root, &err);
	if (rc) {
		fprintf(stderr, "toml-decode: %u:%u: %s\n", err.line, err.col,
			err.msg);
		goto out;
	}
	rc = ub_toml_write_tagged_json(stdout, root);
	if (!rc && (fputc('\n', stdout) == EOF || fflush(stdout) != 0))
		rc = -EIO;
	if (rc) {
		fprintf(stderr, "toml-decode: cannot write output: %s\n",
			strerror(-rc));
		goto out;
	}
	status = 0;
out:
	ub_toml_free(root);
	if (buf) {
		ub_wipe(buf, len);
		free(buf);
	}
	return status;
}
