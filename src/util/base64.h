/* Standard-alphabet base64 (RFC 4648 §4, `A-Z a-z 0-9 + /`, `=` padding).
 *
 * The decoder is strict: the length must be a multiple of 4, padding is
 * required and canonical (only `xx==` or `xxx=` in the last quantum), the
 * unused bits of the last symbol must be zero and any other byte, including
 * whitespace, is rejected. The empty string decodes to zero bytes. Errors
 * read `invalid base64: <detail>`; the only input byte a detail shows is a
 * rejected non-alphabet byte (never part of valid data), with its offset.
 *
 * Nothing here allocates: callers own every buffer. */
#ifndef UB_UTIL_BASE64_H
#define UB_UTIL_BASE64_H

#include <stddef.h>

#include "util/err.h"

/* Upper bound of the decoded size of len input bytes. */
size_t ub_base64_decoded_max(size_t len);

/* Length of len without its trailing ASCII whitespace (space, TAB, LF, FF,
 * CR); leading and embedded whitespace is kept (config.md §9.3). */
size_t ub_base64_trim_trailing_ws(const char *in, size_t len);

/* Decodes len bytes of in. With out == NULL the input is only validated
 * and *out_len receives the exact decoded size; otherwise the bytes are
 * written to out (cap bytes available; -ENOBUFS when too small). Returns 0
 * or -EINVAL with err filled. On error out may hold partial output: the
 * caller wipes it. */
int ub_base64_decode(const char *in, size_t len, unsigned char *out, size_t cap,
		     size_t *out_len, struct ub_err *err);

/* Length of the encoding of len bytes, without the terminating NUL. */
size_t ub_base64_encoded_len(size_t len);

/* Encodes len bytes of in into out, which must hold
 * ub_base64_encoded_len(len) + 1 bytes; out is NUL-terminated. */
void ub_base64_encode(const unsigned char *in, size_t len, char *out);

#endif
