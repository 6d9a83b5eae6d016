/* UTF-8 validation (RFC 3629): overlong forms, surrogates and code points
 * above U+10FFFF are invalid. Pure functions, nothing allocated. */
#ifndef UB_UTIL_UTF8_H
#define UB_UTIL_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Length (1..4) of the valid sequence at s, which has avail > 0 readable
 * bytes; 0 when the sequence there is invalid or cut short. */
size_t ub_utf8_seq(const unsigned char *s, size_t avail);
/* Length of the longest valid UTF-8 prefix of s[0..len). */
size_t ub_utf8_valid_prefix(const char *s, size_t len);
/* True when the NUL-terminated s is valid UTF-8. */
bool ub_utf8_valid(const char *s);

#endif
