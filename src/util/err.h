/* Error buffer: a fixed-size message that a failing function fills in while
 * it returns a negative errno. The caller owns the buffer (usually on its
 * stack) and prints it; nothing is allocated. */
#ifndef UB_UTIL_ERR_H
#define UB_UTIL_ERR_H

#include <stdarg.h>
#include <stddef.h>

#define UB_ERR_MAX 1024

struct ub_err {
	char msg[UB_ERR_MAX];
};

/* Replaces the message. Always returns 0 so it can be chained. */
__attribute__((format(printf, 2, 3))) int ub_err_set(struct ub_err *e,
						     const char *fmt, ...);
__attribute__((format(printf, 2, 0))) int
ub_err_vset(struct ub_err *e, const char *fmt, va_list ap);
/* Prepends a context: "<context>: <previous message>". */
__attribute__((format(printf, 2, 3))) int ub_err_prefix(struct ub_err *e,
							const char *fmt, ...);
/* Sets the message and returns rc (a negative errno) for one-line returns:
 *   return ub_err_ret(err, -EINVAL, "bad %s", what); */
__attribute__((format(printf, 3, 4))) int ub_err_ret(struct ub_err *e, int rc,
						     const char *fmt, ...);
static inline void ub_err_clear(struct ub_err *e)
{
	if (e)
		e->msg[0] = '\0';
}

#endif
