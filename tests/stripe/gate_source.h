/* Test stripe source for the worker and lazy-device tests: wraps a real
 * source, counts every stripe it delivers, records the order of requests,
 * and can hold completions back until the test releases them (to freeze a
 * fetch in flight). Its statistics are global (one worker per test).
 * Include after <cmocka.h>. */
#ifndef UB_TESTS_STRIPE_GATE_SOURCE_H
#define UB_TESTS_STRIPE_GATE_SOURCE_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stripe/source.h"

#define MAX_STRIPE 4096u

struct gate_stats {
	pthread_mutex_t lock;
	unsigned closed;
	bool hold;		  /* completions wait for releases */
	unsigned released;	  /* completions the test let through */
	unsigned outstanding;	  /* requested, not yet reported */
	unsigned max_outstanding; /* since the test last reset it */
	unsigned nreq;
	uint64_t req_order[MAX_STRIPE * 2];
	unsigned reads[MAX_STRIPE];
};

static struct gate_stats g_gate = {.lock = PTHREAD_MUTEX_INITIALIZER};
/* Called (worker thread) for every completion the gate reports. */
static void (*g_gate_hook)(uint64_t stripe, int res);

struct gate_source {
	struct ub_source s;
	struct ub_source *inner;
	struct ub_source_cqe held[64];
	unsigned nheld;
};

static int gate_request(struct ub_source *s, uint64_t stripe, void *buf)
{
	struct gate_source *g = (struct gate_source *)s;
	int rc = g->inner->ops->request(g->inner, stripe, buf);

	if (rc)
		return rc;
	pthread_mutex_lock(&g_gate.lock);
	if (g_gate.nreq < MAX_STRIPE * 2)
		g_gate.req_order[g_gate.nreq++] = stripe;
	if (++g_gate.outstanding > g_gate.max_outstanding)
		g_gate.max_outstanding = g_gate.outstanding;
	pthread_mutex_unlock(&g_gate.lock);
	return 0;
}

static unsigned gate_poll(struct ub_source *s, struct ub_source_cqe *out,
			  unsigned max)
{
	struct gate_source *g = (struct gate_source *)s;
	unsigned n = 0;

	g->nheld +=
	    g->inner->ops->poll(g->inner, g->held + g->nheld, 64 - g->nheld);
	pthread_mutex_lock(&g_gate.lock);
	while (n < max && g->nheld && (!g_gate.hold || g_gate.released)) {
		if (g_gate.hold)
			g_gate.released--;
		out[n] = g->held[0];
		memmove(g->held, g->held + 1, --g->nheld * sizeof(g->held[0]));
		g_gate.outstanding--;
		if (out[n].stripe < MAX_STRIPE)
			g_gate.reads[out[n].stripe]++;
		n++;
	}
	pthread_mutex_unlock(&g_gate.lock);
	for (unsigned i = 0; i < n && g_gate_hook; i++)
		g_gate_hook(out[i].stripe, out[i].res);
	return n;
}

static bool gate_busy(struct ub_source *s)
{
	struct gate_source *g = (struct gate_source *)s;

	return g->nheld || g->inner->ops->busy(g->inner);
}

static int gate_event_fd(struct ub_source *s)
{
	return -1;
}

static bool gate_has_stripe(struct ub_source *s, uint64_t stripe)
{
	struct gate_source *g = (struct gate_source *)s;

	return g->inner->ops->has_stripe(g->inner, stripe);
}

static void gate_close(struct ub_source *s)
{
	struct gate_source *g = (struct gate_source *)s;

	pthread_mutex_lock(&g_gate.lock);
	g_gate.closed = 1;
	pthread_mutex_unlock(&g_gate.lock);
	ub_source_close(g->inner);
	free(g);
}

static const struct ub_source_ops gate_ops = {
    .request = gate_request,
    .poll = gate_poll,
    .busy = gate_busy,
    .event_fd = gate_event_fd,
    .has_stripe = gate_has_stripe,
    .close = gate_close,
};

static struct ub_source *gate_wrap(struct ub_source *inner)
{
	struct gate_source *g = calloc(1, sizeof(*g));

	assert_non_null(g);
	g->s.ops = &gate_ops;
	g->s.sectors = inner->sectors;
	g->s.shift = inner->shift;
	snprintf(g->s.desc, sizeof(g->s.desc), "gate");
	g->inner = inner;
	return &g->s;
}

static void gate_reset(bool hold)
{
	pthread_mutex_lock(&g_gate.lock);
	g_gate.closed = 0;
	g_gate.hold = hold;
	g_gate.released = 0;
	g_gate.outstanding = 0;
	g_gate.max_outstanding = 0;
	g_gate.nreq = 0;
	memset(g_gate.reads, 0, sizeof(g_gate.reads));
	pthread_mutex_unlock(&g_gate.lock);
}

static void gate_release(unsigned n)
{
	pthread_mutex_lock(&g_gate.lock);
	g_gate.released += n;
	pthread_mutex_unlock(&g_gate.lock);
}

static void gate_open(void)
{
	pthread_mutex_lock(&g_gate.lock);
	g_gate.hold = false;
	pthread_mutex_unlock(&g_gate.lock);
}

static unsigned gate_get(unsigned *field)
{
	unsigned v;

	pthread_mutex_lock(&g_gate.lock);
	v = *field;
	pthread_mutex_unlock(&g_gate.lock);
	return v;
}

#endif
