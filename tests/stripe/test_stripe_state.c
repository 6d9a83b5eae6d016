/* Shared stripe state (storage.md §5.3): initialisation from metadata
 * headers and the worker-side transitions, acceptance criteria 59-62. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "stripe/metadata.h"
#include "stripe/stripe_state.h"

#define F UB_STRIPE_FETCHED
#define W UB_STRIPE_WRITTEN
#define S UB_STRIPE_HAS_SOURCE

/* 11 stripes, shift 0, the first five sourced; 0 = F|S, 1 = W|S,
 * 2 = F|W|S. */
static void make_state(struct ub_stripe_state *st)
{
	struct ub_metadata md;
	struct ub_err err = {{0}};

	assert_int_equal(ub_metadata_init(&md, 0, 11, 5, &err), 0);
	md.headers[0] = F | S;
	md.headers[1] = W | S;
	md.headers[2] = F | W | S;
	assert_int_equal(ub_stripe_state_init(st, &md, &err), 0);
	ub_metadata_free(&md);
}

static void test_59_init_from_headers(void **state)
{
	struct ub_stripe_state st;

	(void)state;
	make_state(&st);
	assert_int_equal(st.nstripes, 11);
	assert_int_equal(st.shift, 0);
	assert_int_equal(ub_stripe_fetch_state(&st, 0), UB_FETCH_FETCHED);
	assert_int_equal(ub_stripe_write_state(&st, 0), UB_WRITE_NOT_WRITTEN);
	assert_int_equal(ub_stripe_fetch_state(&st, 1), UB_FETCH_NOT_FETCHED);
	assert_int_equal(ub_stripe_write_state(&st, 1), UB_WRITE_WRITTEN);
	assert_int_equal(ub_stripe_fetch_state(&st, 2), UB_FETCH_FETCHED);
	assert_int_equal(ub_stripe_write_state(&st, 2), UB_WRITE_WRITTEN);
	assert_int_equal(ub_stripe_fetch_state(&st, 4), UB_FETCH_NOT_FETCHED);
	assert_int_equal(ub_stripe_write_state(&st, 4), UB_WRITE_NOT_WRITTEN);
	assert_int_equal(ub_stripe_fetch_state(&st, 6), UB_FETCH_NO_SOURCE);
	assert_int_equal(st.fetched, 2);
	assert_int_equal(st.source, 5);
	ub_stripe_state_fini(&st);
}

static void test_60_set_fetched_counts_once(void **state)
{
	struct ub_stripe_state st;

	(void)state;
	make_state(&st);
	ub_stripe_set_fetched(&st, 4);
	ub_stripe_set_fetched(&st, 4);
	assert_int_equal(ub_stripe_fetch_state(&st, 4), UB_FETCH_FETCHED);
	assert_int_equal(st.fetched, 3);
	/* NoSource stays counted as the reference does: no increment. */
	ub_stripe_set_fetched(&st, 6);
	assert_int_equal(st.fetched, 3);
	ub_stripe_set_written(&st, 4);
	assert_int_equal(ub_stripe_write_state(&st, 4), UB_WRITE_WRITTEN);
	ub_stripe_state_fini(&st);
}

static void test_61_local_means_fetched_or_no_source(void **state)
{
	struct ub_stripe_state st;

	(void)state;
	make_state(&st);
	assert_true(ub_stripe_is_local(&st, 0));
	assert_true(ub_stripe_is_local(&st, 6));
	assert_false(ub_stripe_is_local(&st, 1));
	assert_false(ub_stripe_is_local(&st, 3));
	ub_stripe_state_fini(&st);
}

static void test_62_failed_is_not_fetched(void **state)
{
	struct ub_stripe_state st;

	(void)state;
	make_state(&st);
	ub_stripe_set_fetch_failed(&st, 3);
	assert_int_equal(ub_stripe_fetch_state(&st, 3), UB_FETCH_FAILED);
	assert_false(ub_stripe_is_local(&st, 3));
	assert_int_equal(st.fetched, 2);
	ub_stripe_set_write_failed(&st, 3);
	assert_int_equal(ub_stripe_write_state(&st, 3), UB_WRITE_FAILED);
	ub_stripe_state_fini(&st);
}

static void test_fetched_without_source_is_counted(void **state)
{
	struct ub_stripe_state st;
	struct ub_metadata md;
	struct ub_err err = {{0}};

	(void)state;
	assert_int_equal(ub_metadata_init(&md, 3, 4, 2, &err), 0);
	md.headers[3] = F; /* oddity kept from the reference */
	assert_int_equal(ub_stripe_state_init(&st, &md, &err), 0);
	assert_int_equal(ub_stripe_fetch_state(&st, 3), UB_FETCH_NO_SOURCE);
	assert_int_equal(st.fetched, 1);
	assert_int_equal(st.source, 2);
	ub_stripe_state_fini(&st);
	ub_metadata_free(&md);
}

static void test_zero_stripes(void **state)
{
	struct ub_stripe_state st;
	struct ub_metadata md;
	struct ub_err err = {{0}};

	(void)state;
	assert_int_equal(ub_metadata_init(&md, 11, 0, 0, &err), 0);
	assert_int_equal(ub_stripe_state_init(&st, &md, &err), 0);
	assert_int_equal(st.nstripes, 0);
	assert_int_equal(st.fetched, 0);
	ub_stripe_state_fini(&st);
	ub_stripe_state_fini(&st); /* zeroed: safe twice */
	ub_metadata_free(&md);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_59_init_from_headers),
	    cmocka_unit_test(test_60_set_fetched_counts_once),
	    cmocka_unit_test(test_61_local_means_fetched_or_no_source),
	    cmocka_unit_test(test_62_failed_is_not_fetched),
	    cmocka_unit_test(test_fetched_without_source_is_counted),
	    cmocka_unit_test(test_zero_stripes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
