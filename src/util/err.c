#include "util/err.h"

#include <stdio.h>
#include <string.h>

int ub_err_vset(struct ub_err *e, const char *fmt, va_list ap)
{
	if (!e)
		return 0;
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	return 0;
}

int ub_err_set(struct ub_err *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ub_err_vset(e, fmt, ap);
	va_end(ap);
	return 0;
}

int ub_err_ret(struct ub_err *e, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ub_err_vset(e, fmt, ap);
	va_end(ap);
	return rc;
}

int ub_err_prefix(struct ub_err *e, const char *fmt, ...)
{
	char old[UB_ERR_MAX];
	size_t n;
	int w;
	va_list ap;

	if (!e)
		return 0;
	memcpy(old, e->msg, sizeof(old));
	va_start(ap, fmt);
	w = vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	if (w < 0)
		w = 0;
	n = (size_t)w < sizeof(e->msg) ? (size_t)w : sizeof(e->msg) - 1;
	/* Append ": <old>", truncating the old message if it does not fit. */
	if (n + 2 < sizeof(e->msg)) {
		memcpy(e->msg + n, ": ", 2);
		n += 2;
		size_t room = sizeof(e->msg) - 1 - n;
		size_t len = strnlen(old, sizeof(old));
		if (len > room)
			len = room;
		memcpy(e->msg + n, old, len);
		n += len;
	}
	e->msg[n] = '\0';
	return 0;
}
