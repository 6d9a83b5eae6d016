/* Process hardening: dumps disabled, SIGPIPE ignored. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "util/process.h"

static void test_disable_dumps_clears_dumpable_and_core_limit(void **state)
{
	struct rlimit rl;

	ub_process_disable_dumps();
	assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
	assert_int_equal(getrlimit(RLIMIT_CORE, &rl), 0);
	assert_int_equal(rl.rlim_cur, 0);
	assert_int_equal(rl.rlim_max, 0);
}

static void test_sigpipe_is_ignored(void **state)
{
	struct sigaction sa;

	ub_process_ignore_sigpipe();
	assert_int_equal(sigaction(SIGPIPE, NULL, &sa), 0);
	assert_ptr_equal(sa.sa_handler, SIG_IGN);
	/* Raising it must not kill us. */
	assert_int_equal(raise(SIGPIPE), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_disable_dumps_clears_dumpable_and_core_limit),
		cmocka_unit_test(test_sigpipe_is_ignored),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
