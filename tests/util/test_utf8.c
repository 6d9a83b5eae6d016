/* UTF-8 validation: every sequence length at its boundaries, and each kind
 * of invalid input (stray continuation, overlong, surrogate, above
 * U+10FFFF, cut short). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "util/utf8.h"

static size_t seq(const char *s)
{
	return ub_utf8_seq((const unsigned char *)s, strlen(s));
}

static void test_valid_sequences_have_their_length(void **state)
{
	assert_int_equal(seq("A"), 1);
	assert_int_equal(seq("\x7f"), 1);
	assert_int_equal(seq("\xc2\x80"), 2);	      /* U+0080 */
	assert_int_equal(seq("\xdf\xbf"), 2);	      /* U+07FF */
	assert_int_equal(seq("\xe0\xa0\x80"), 3);     /* U+0800 */
	assert_int_equal(seq("\xed\x9f\xbf"), 3);     /* U+D7FF */
	assert_int_equal(seq("\xee\x80\x80"), 3);     /* U+E000 */
	assert_int_equal(seq("\xef\xbf\xbf"), 3);     /* U+FFFF */
	assert_int_equal(seq("\xf0\x90\x80\x80"), 4); /* U+10000 */
	assert_int_equal(seq("\xf4\x8f\xbf\xbf"), 4); /* U+10FFFF */
}

static void test_invalid_sequences_are_refused(void **state)
{
	assert_int_equal(seq("\x80"), 0);	      /* stray continuation */
	assert_int_equal(seq("\xc0\x80"), 0);	      /* overlong NUL */
	assert_int_equal(seq("\xc1\xbf"), 0);	      /* overlong */
	assert_int_equal(seq("\xe0\x9f\xbf"), 0);     /* overlong */
	assert_int_equal(seq("\xf0\x8f\xbf\xbf"), 0); /* overlong */
	assert_int_equal(seq("\xed\xa0\x80"), 0);     /* surrogate D800 */
	assert_int_equal(seq("\xed\xbf\xbf"), 0);     /* surrogate DFFF */
	assert_int_equal(seq("\xf4\x90\x80\x80"), 0); /* U+110000 */
	assert_int_equal(seq("\xf8\x88\x80\x80\x80"), 0);
	assert_int_equal(seq("\xff"), 0);
	assert_int_equal(seq("\xc3\x28"), 0); /* bad continuation */
}

static void test_cut_short_sequence_is_not_read_past_avail(void **state)
{
	const unsigned char s[] = {0xe2, 0x82, 0xac}; /* U+20AC */

	assert_int_equal(ub_utf8_seq(s, 3), 3);
	assert_int_equal(ub_utf8_seq(s, 2), 0);
	assert_int_equal(ub_utf8_seq(s, 1), 0);
}

static void test_valid_prefix_stops_at_the_first_bad_byte(void **state)
{
	const char s[] = "ok \xe2\x82\xac \xc0\x80 rest";

	assert_int_equal(ub_utf8_valid_prefix(s, strlen(s)), 7);
	assert_int_equal(ub_utf8_valid_prefix(s, 5), 3); /* cut in the euro */
	assert_int_equal(ub_utf8_valid_prefix("", 0), 0);
	assert_true(ub_utf8_valid("plain ascii"));
	assert_true(ub_utf8_valid("caf\xc3\xa9 \xf0\x9f\x92\xbe"));
	assert_true(ub_utf8_valid(""));
	assert_false(ub_utf8_valid(s));
	assert_false(ub_utf8_valid("end \xe2\x82"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_valid_sequences_have_their_length),
	    cmocka_unit_test(test_invalid_sequences_are_refused),
	    cmocka_unit_test(test_cut_short_sequence_is_not_read_past_avail),
	    cmocka_unit_test(test_valid_prefix_stops_at_the_first_bad_byte),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
