/* Log level selection: UBIBLK_LOG over RUST_LOG, reference level names,
 * target=level directives accepted. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "util/log.h"

static void test_bare_level_names_parse_case_insensitively(void **state)
{
	assert_int_equal(ub_log_parse_level("off"), UB_LOG_OFF);
	assert_int_equal(ub_log_parse_level("error"), UB_LOG_ERROR);
	assert_int_equal(ub_log_parse_level("WARN"), UB_LOG_WARN);
	assert_int_equal(ub_log_parse_level("Info"), UB_LOG_INFO);
	assert_int_equal(ub_log_parse_level("debug"), UB_LOG_DEBUG);
	assert_int_equal(ub_log_parse_level("trace"), UB_LOG_TRACE);
}

static void test_target_directives_take_the_most_verbose_level(void **state)
{
	assert_int_equal(ub_log_parse_level("ubiblk=debug,warn"),
			 UB_LOG_DEBUG);
	assert_int_equal(ub_log_parse_level("vhost_backend=info"),
			 UB_LOG_INFO);
}

static void test_unknown_level_is_rejected(void **state)
{
	assert_int_equal(ub_log_parse_level("loud"), -1);
	assert_int_equal(ub_log_parse_level("a=loud"), -1);
}

static void test_default_level_is_error_only(void **state)
{
	unsetenv("UBIBLK_LOG");
	unsetenv("RUST_LOG");
	ub_log_set_level(UB_LOG_ERROR);
	ub_log_init("test");
	assert_int_equal(ub_log_get_level(), UB_LOG_ERROR);
	assert_true(ub_log_enabled(UB_LOG_ERROR));
	assert_false(ub_log_enabled(UB_LOG_WARN));
}

static void test_rust_log_sets_the_level(void **state)
{
	unsetenv("UBIBLK_LOG");
	setenv("RUST_LOG", "debug", 1);
	ub_log_init("test");
	assert_int_equal(ub_log_get_level(), UB_LOG_DEBUG);
	unsetenv("RUST_LOG");
}

static void test_ubiblk_log_takes_precedence_over_rust_log(void **state)
{
	setenv("RUST_LOG", "trace", 1);
	setenv("UBIBLK_LOG", "warn", 1);
	ub_log_init("test");
	assert_int_equal(ub_log_get_level(), UB_LOG_WARN);
	unsetenv("RUST_LOG");
	unsetenv("UBIBLK_LOG");
}

static void test_off_disables_even_errors(void **state)
{
	ub_log_set_level(UB_LOG_OFF);
	assert_false(ub_log_enabled(UB_LOG_ERROR));
	ub_log_set_level(UB_LOG_ERROR);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bare_level_names_parse_case_insensitively),
		cmocka_unit_test(
			test_target_directives_take_the_most_verbose_level),
		cmocka_unit_test(test_unknown_level_is_rejected),
		cmocka_unit_test(test_default_level_is_error_only),
		cmocka_unit_test(test_rust_log_sets_the_level),
		cmocka_unit_test(test_ubiblk_log_takes_precedence_over_rust_log),
		cmocka_unit_test(test_off_disables_even_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
