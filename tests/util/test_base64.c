/* Strict base64: RFC 4648 vectors both ways, and every rejection the
 * decoder makes (bad byte, length, padding, unused bits). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "util/base64.h"

struct vector {
	const char *plain;
	const char *encoded;
};

/* RFC 4648 §10. */
static const struct vector rfc4648[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

#define NVEC (sizeof(rfc4648) / sizeof(rfc4648[0]))

/* Decodes a NUL-terminated string; returns the rc, fills out/len/err. */
static int decode(const char *in, unsigned char *out, size_t cap, size_t *len,
		  struct ub_err *err)
{
	return ub_base64_decode(in, strlen(in), out, cap, len, err);
}

static void assert_rejected(const char *in, const char *detail)
{
	unsigned char out[64];
	struct ub_err err = {{0}};
	size_t len = 12345;

	assert_int_equal(decode(in, out, sizeof(out), &len, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "invalid base64: "));
	assert_non_null(strstr(err.msg, detail));
	/* The validate-only mode rejects exactly the same inputs. */
	assert_int_equal(decode(in, NULL, 0, &len, &err), -EINVAL);
}

static void test_rfc4648_vectors_decode(void **state)
{
	for (size_t i = 0; i < NVEC; i++) {
		unsigned char out[16];
		struct ub_err err = {{0}};
		size_t len = 99;

		assert_int_equal(
		    decode(rfc4648[i].encoded, out, sizeof(out), &len, &err),
		    0);
		assert_int_equal(len, strlen(rfc4648[i].plain));
		assert_memory_equal(out, rfc4648[i].plain, len);
	}
}

static void test_rfc4648_vectors_encode(void **state)
{
	for (size_t i = 0; i < NVEC; i++) {
		size_t n = strlen(rfc4648[i].plain);
		char out[16];

		assert_int_equal(ub_base64_encoded_len(n),
				 strlen(rfc4648[i].encoded));
		memset(out, 'x', sizeof(out));
		ub_base64_encode((const unsigned char *)rfc4648[i].plain, n,
				 out);
		assert_string_equal(out, rfc4648[i].encoded);
	}
}

static void test_validate_only_reports_exact_length(void **state)
{
	struct ub_err err = {{0}};
	size_t len = 0;

	assert_int_equal(decode("Zm9vYmE=", NULL, 0, &len, &err), 0);
	assert_int_equal(len, 5);
	assert_int_equal(decode("", NULL, 0, &len, &err), 0);
	assert_int_equal(len, 0);
}

static void test_decoded_max_bounds_every_vector(void **state)
{
	for (size_t i = 0; i < NVEC; i++)
		assert_true(ub_base64_decoded_max(strlen(rfc4648[i].encoded)) >=
			    strlen(rfc4648[i].plain));
	assert_int_equal(ub_base64_decoded_max(12), 9);
}

static void test_all_byte_values_round_trip(void **state)
{
	unsigned char in[256], out[256];
	char enc[345];
	struct ub_err err = {{0}};
	size_t len;

	for (int i = 0; i < 256; i++)
		in[i] = (unsigned char)i;
	for (size_t n = 0; n <= sizeof(in); n += 37) {
		ub_base64_encode(in, n, enc);
		assert_int_equal(strlen(enc), ub_base64_encoded_len(n));
		assert_int_equal(decode(enc, out, sizeof(out), &len, &err), 0);
		assert_int_equal(len, n);
		assert_memory_equal(in, out, n);
	}
}

static void test_non_alphabet_byte_is_rejected_with_offset(void **state)
{
	assert_rejected("Zm9*", "invalid byte 0x2a at offset 3");
	assert_rejected("Zm-v", "invalid byte 0x2d at offset 2");
	assert_rejected("Zm_v", "invalid byte 0x5f at offset 2");
	assert_rejected("Zm9v\x80", "invalid byte 0x80 at offset 4");
}

static void test_embedded_and_leading_whitespace_is_rejected(void **state)
{
	assert_rejected("Zm9v Zm9v", "invalid byte 0x20 at offset 4");
	assert_rejected("Zm9v\nZm9v", "invalid byte 0x0a at offset 4");
	assert_rejected(" Zm9v", "invalid byte 0x20 at offset 0");
	/* The decoder itself does not strip trailing whitespace either. */
	assert_rejected("Zm9v\n", "invalid byte 0x0a at offset 4");
}

static void test_nul_byte_is_rejected(void **state)
{
	unsigned char out[8];
	struct ub_err err = {{0}};
	size_t len;

	assert_int_equal(
	    ub_base64_decode("Zm\0v", 4, out, sizeof(out), &len, &err),
	    -EINVAL);
	assert_non_null(strstr(err.msg, "invalid byte 0x00 at offset 2"));
}

static void test_length_not_multiple_of_four_is_rejected(void **state)
{
	assert_rejected("Z", "invalid length 1");
	assert_rejected("Zm9", "invalid length 3");
	assert_rejected("Zm9vY", "invalid length 5");
	/* Padding is required: unpadded forms are not accepted. */
	assert_rejected("Zg", "invalid length 2");
	assert_rejected("Zm8", "invalid length 3");
	assert_rejected("Zg=", "invalid length 3");
}

static void test_misplaced_padding_is_rejected(void **state)
{
	assert_rejected("Zg==Zm9v", "invalid padding at offset 2");
	assert_rejected("Z===", "invalid padding at offset 1");
	assert_rejected("====", "invalid padding at offset 0");
	assert_rejected("Zm=v", "invalid padding at offset 2");
	assert_rejected("Zm9=Zm9v", "invalid padding at offset 3");
	assert_rejected("Zg======", "invalid padding at offset 2");
}

static void test_non_zero_unused_bits_are_rejected(void **state)
{
	/* "Zh==" and "Zm9=" differ from the canonical forms "Zg==" and
	 * "Zm8=" only in bits that the output does not use. */
	assert_rejected("Zh==", "non-zero unused bits in the last symbol at "
				"offset 1");
	assert_rejected("Zm9=", "non-zero unused bits in the last symbol at "
				"offset 2");
	assert_rejected("Zm9vZh==", "at offset 5");
}

static void test_error_never_shows_alphabet_symbols(void **state)
{
	unsigned char out[8];
	struct ub_err err = {{0}};
	size_t len;

	assert_int_equal(decode("Zm9=", out, sizeof(out), &len, &err), -EINVAL);
	assert_null(strstr(err.msg, "Zm9"));
	assert_null(strstr(err.msg, "0x39"));
}

static void test_small_output_buffer_is_refused(void **state)
{
	unsigned char out[5];
	struct ub_err err = {{0}};
	size_t len;

	assert_int_equal(decode("Zm9vYmFy", out, sizeof(out), &len, &err),
			 -ENOBUFS);
	assert_int_equal(decode("Zm9vYmE=", out, sizeof(out), &len, &err), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(out, "fooba", 5);
}

static void test_trailing_whitespace_trim(void **state)
{
	const char *s = "Zm9v \t\n\f\r";

	assert_int_equal(ub_base64_trim_trailing_ws(s, strlen(s)), 4);
	assert_int_equal(ub_base64_trim_trailing_ws(" \n", 2), 0);
	assert_int_equal(ub_base64_trim_trailing_ws("", 0), 0);
	/* Vertical tab is not ASCII whitespace in this sense. */
	assert_int_equal(ub_base64_trim_trailing_ws("Zm9v\v", 5), 5);
	/* Leading and embedded whitespace stays. */
	assert_int_equal(ub_base64_trim_trailing_ws(" Zm 9v\n", 7), 6);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc4648_vectors_decode),
	    cmocka_unit_test(test_rfc4648_vectors_encode),
	    cmocka_unit_test(test_validate_only_reports_exact_length),
	    cmocka_unit_test(test_decoded_max_bounds_every_vector),
	    cmocka_unit_test(test_all_byte_values_round_trip),
	    cmocka_unit_test(test_non_alphabet_byte_is_rejected_with_offset),
	    cmocka_unit_test(test_embedded_and_leading_whitespace_is_rejected),
	    cmocka_unit_test(test_nul_byte_is_rejected),
	    cmocka_unit_test(test_length_not_multiple_of_four_is_rejected),
	    cmocka_unit_test(test_misplaced_padding_is_rejected),
	    cmocka_unit_test(test_non_zero_unused_bits_are_rejected),
	    cmocka_unit_test(test_error_never_shows_alphabet_symbols),
	    cmocka_unit_test(test_small_output_buffer_is_refused),
	    cmocka_unit_test(test_trailing_whitespace_trim),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
