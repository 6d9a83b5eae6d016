#include "util/cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef UB_VERSION
#define UB_VERSION "0.0.0"
#endif

int ub_cli_usage_error(const char *prog, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help' for more information.\n", prog);
	return UB_EXIT_USAGE;
}

int ub_cli_bad_option(const char *prog, int opt, char *const argv[],
		      int optind_now)
{
	const char *arg = optind_now > 0 ? argv[optind_now - 1] : "?";

	if (opt == ':')
		return ub_cli_usage_error(prog, "option '%s' needs a value",
					  arg);
	return ub_cli_usage_error(prog, "unknown option '%s'", arg);
}

int ub_cli_fail(const char *prog, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return UB_EXIT_FAILURE;
}

void ub_cli_print_version(const char *display_name)
{
	printf("%s %s\n", display_name, UB_VERSION);
}

int ub_cli_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}
