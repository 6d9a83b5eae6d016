#include "util/utf8.h"

#include <stdint.h>
#include <string.h>

size_t ub_utf8_seq(const unsigned char *s, size_t avail)
{
	uint32_t cp, min;
	size_t n, k;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0) {
		n = 2;
		cp = s[0] & 0x1f;
		min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3;
		cp = s[0] & 0x0f;
		min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 4;
		cp = s[0] & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (avail < n)
		return 0;
	for (k = 1; k < n; k++) {
		if ((s[k] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[k] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

size_t ub_utf8_valid_prefix(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, n;

	while (i < len) {
		n = ub_utf8_seq(p + i, len - i);
		if (!n)
			break;
		i += n;
	}
	return i;
}

bool ub_utf8_valid(const char *s)
{
	size_t len = strlen(s);

	return ub_utf8_valid_prefix(s, len) == len;
}
