#include "util/base64.h"

#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>

/* Value 0..63 of a standard-alphabet symbol, -1 for any other byte. */
static int sym_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

static int is_trailing_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r';
}

size_t ub_base64_decoded_max(size_t len)
{
	return len / 4 * 3;
}

size_t ub_base64_trim_trailing_ws(const char *in, size_t len)
{
	while (len && is_trailing_ws((unsigned char)in[len - 1]))
		len--;
	return len;
}

/* Checks bytes, length and padding; *npad receives 0, 1 or 2. */
static int check_shape(const unsigned char *in, size_t len, size_t *npad,
		       struct ub_err *err)
{
	size_t first_pad = len;

	for (size_t i = 0; i < len; i++) {
		if (in[i] == '=') {
			if (first_pad == len)
				first_pad = i;
			continue;
		}
		if (sym_value(in[i]) < 0)
			return ub_err_ret(err, -EINVAL,
					  "invalid base64: invalid byte 0x%02x "
					  "at offset %zu",
					  in[i], i);
	}
	if (len % 4)
		return ub_err_ret(err, -EINVAL,
				  "invalid base64: invalid length %zu (not a "
				  "multiple of 4)",
				  len);
	/* Padding: one or two '=' that end the input, nothing after them. */
	*npad = len - first_pad;
	if (*npad > 2)
		return ub_err_ret(err, -EINVAL,
				  "invalid base64: invalid padding at offset "
				  "%zu",
				  first_pad);
	for (size_t i = first_pad; i < len; i++)
		if (in[i] != '=')
			return ub_err_ret(err, -EINVAL,
					  "invalid base64: invalid padding at "
					  "offset %zu",
					  first_pad);
	return 0;
}

int ub_base64_decode(const char *in, size_t len, unsigned char *out, size_t cap,
		     size_t *out_len, struct ub_err *err)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t npad = 0, n, o = 0;
	int rc;

	rc = check_shape(s, len, &npad, err);
	if (rc)
		return rc;
	n = ub_base64_decoded_max(len) - npad;
	if (npad) {
		/* The last symbol before the padding carries unused bits. */
		size_t last = len - npad - 1;
		unsigned mask = npad == 2 ? 0x0f : 0x03;

		if ((unsigned)sym_value(s[last]) & mask)
			return ub_err_ret(err, -EINVAL,
					  "invalid base64: non-zero unused "
					  "bits in the last symbol at offset "
					  "%zu",
					  last);
	}
	*out_len = n;
	if (!out)
		return 0;
	if (cap < n)
		return ub_err_ret(err, -ENOBUFS,
				  "invalid base64: output buffer too small");
	for (size_t i = 0; i < len; i += 4) {
		unsigned long q = 0;
		unsigned syms = 0;

		for (size_t j = 0; j < 4 && s[i + j] != '='; j++, syms++)
			q |= (unsigned long)sym_value(s[i + j]) << (18 - 6 * j);
		out[o++] = (unsigned char)(q >> 16);
		if (syms > 2)
			out[o++] = (unsigned char)(q >> 8);
		if (syms > 3)
			out[o++] = (unsigned char)q;
	}
	return 0;
}

size_t ub_base64_encoded_len(size_t len)
{
	return (len + 2) / 3 * 4;
}

void ub_base64_encode(const unsigned char *in, size_t len, char *out)
{
	/* EVP_EncodeBlock takes an int length: feed it whole 3-byte groups. */
	const size_t chunk = (size_t)INT_MAX / 4 * 3;

	out[0] = '\0';
	while (len) {
		size_t n = len < chunk ? len : chunk;
		int w = EVP_EncodeBlock((unsigned char *)out, in, (int)n);

		out += w;
		in += n;
		len -= n;
	}
}
