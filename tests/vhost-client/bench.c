/* vhost-client bench: fixed queue depth I/O on one or more queues, one
 * thread per queue polling its used ring (it never sleeps while requests
 * are in flight), and one JSON line with the totals.
 *
 * --lat adds per-request latency percentiles. With --lat-split the
 * requests alternate between the area below the split and the area above
 * it, reported apart (e.g. unfetched and fetched stripes of a lazy disk);
 * with --lat-stripe each stripe below the split is read at most once,
 * from the split downwards, so every read there is a first touch. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "vc.h"

enum { MODE_READ = 1, MODE_WRITE = 2, MODE_RAND = 4 };

struct bthread {
	const struct vc_args *a;
	struct vu_queue *q;
	unsigned mode;
	unsigned ind;	  /* VU_REQ_INDIRECT or 0 */
	uint64_t nblocks; /* of bs bytes */
	uint64_t seq;	  /* next block of a sequential run */
	uint64_t rng;
	uint64_t ios, errors;
	int rc;
	pthread_t tid;
	/* --lat */
	uint64_t base;	  /* first block of the area */
	uint64_t split;	  /* first block above the split (0: none) */
	uint64_t lo_next; /* --lat-stripe: next stripe below the split */
	uint64_t lo_stripes;
	unsigned toggle;
	uint8_t *cls; /* per slot: 0 below, 1 above the split */
	struct lat_vec {
		uint64_t *v;
		size_t n, cap;
	} lat[2];
};

static int stop_flag;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t next_rand(struct bthread *t)
{
	uint64_t x = t->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	t->rng = x;
	return x * 0x2545f4914f6cdd1dull;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* --lat-split: alternate between the two areas; with --lat-stripe each
 * stripe below the split is read once, from the split downwards (then
 * only the area above). */
static uint64_t pick_split(struct bthread *t, struct vu_req *r)
{
	const struct vc_args *a = t->a;
	uint64_t per = a->lat_stripe / a->bs;

	t->toggle ^= 1;
	if (t->toggle || (per && t->lo_next >= t->lo_stripes)) {
		t->cls[r->slot] = 1;
		return t->split + next_rand(t) % (t->nblocks - t->split);
	}
	t->cls[r->slot] = 0;
	if (!per)
		return next_rand(t) % t->split;
	/* Downwards from the split: away from a background copy that
	 * starts at the bottom. */
	return (t->lo_stripes - 1 - t->lo_next++) * per + next_rand(t) % per;
}

static int submit_one(struct bthread *t, struct vu_req *r)
{
	uint32_t bs = t->a->bs;
	uint64_t block;
	uint32_t type;

	if (t->split)
		block = pick_split(t, r);
	else if (t->mode & MODE_RAND)
		block = next_rand(t) % t->nblocks;
	else
		block = t->seq++ % t->nblocks;
	block += t->base;
	if (t->a->lat)
		r->user = now_ns();
	if ((t->mode & (MODE_READ | MODE_WRITE)) == (MODE_READ | MODE_WRITE))
		type = (next_rand(t) >> 32) & 1 ? VU_BLK_T_OUT : VU_BLK_T_IN;
	else
		type = (t->mode & MODE_READ) ? VU_BLK_T_IN : VU_BLK_T_OUT;
	return vu_req_submit(r, type, block * (bs / 512), bs, 1, t->ind);
}

static void lat_record(struct bthread *t, const struct vu_req *r)
{
	struct lat_vec *l = &t->lat[t->cls[r->slot]];

	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 4096;
		uint64_t *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = now_ns() - r->user;
}

static void *bench_thread(void *arg)
{
	struct bthread *t = arg;
	struct vu_queue *q = t->q;
	struct vu_used_elem e;
	unsigned i, inflight = 0;
	int rc = 0;

	for (i = 0; i < q->nreqs && rc == 0; i++) {
		rc = submit_one(t, &q->reqs[i]);
		inflight += rc == 0;
	}
	if (rc == 0)
		rc = vu_queue_kick(q);
	while (rc == 0 && !__atomic_load_n(&stop_flag, __ATOMIC_RELAXED)) {
		unsigned resubmitted = 0;

		while (vu_queue_next_used(q, &e)) {
			struct vu_req *r = vu_queue_complete(q, &e);

			if (!r) {
				t->errors++;
				continue;
			}
			inflight--;
			t->ios++;
			if (*r->status != VU_BLK_S_OK)
				t->errors++;
			else if (t->a->lat)
				lat_record(t, r);
			if (t->a->think_us)
				usleep((useconds_t)t->a->think_us);
			rc = submit_one(t, r);
			if (rc < 0)
				break;
			inflight++;
			resubmitted++;
		}
		if (resubmitted) {
			/* Like a guest driver: interrupts stay wanted, kicks
			 * only when the device asked for them. */
			vu_queue_want_irq(q, true);
			rc = rc < 0 ? rc : vu_queue_kick_if_needed(q);
		} else {
			cpu_relax();
		}
	}
	/* Drain what is still in flight (not counted). */
	while (inflight && vu_queue_wait_used(q, t->a->timeout_ms, &e) == 1) {
		vu_queue_complete(q, &e);
		inflight--;
	}
	if (inflight && rc == 0)
		rc = -ETIMEDOUT;
	t->rc = rc;
	return NULL;
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

/* ,"lat_us":{"all"|"below","above":{"n":N,"p50":..,"p99":..,"max":..}} */
static void print_lat(struct bthread *t, unsigned nt, bool split)
{
	static const char *const names[2][2] = {{"all", ""},
						{"below", "above"}};
	unsigned k, i;

	printf(",\"lat_us\":{");
	for (k = 0; k < (split ? 2u : 1u); k++) {
		size_t n = 0, j = 0;
		uint64_t *v;

		for (i = 0; i < nt; i++)
			n += t[i].lat[k].n;
		v = malloc((n ? n : 1) * sizeof(*v));
		if (!v)
			break;
		for (i = 0; i < nt; i++) {
			memcpy(v + j, t[i].lat[k].v,
			       t[i].lat[k].n * sizeof(*v));
			j += t[i].lat[k].n;
		}
		qsort(v, n, sizeof(*v), cmp_u64);
		printf("%s\"%s\":{\"n\":%zu,\"p50\":%.1f,\"p99\":%.1f,"
		       "\"max\":%.1f}",
		       k ? "," : "", names[split][k], n,
		       n ? (double)v[n / 2] / 1e3 : 0.0,
		       n ? (double)v[n * 99 / 100] / 1e3 : 0.0,
		       n ? (double)v[n - 1] / 1e3 : 0.0);
		free(v);
	}
	printf("}");
}

static unsigned parse_mode(const char *rw)
{
	if (!strcmp(rw, "randread"))
		return MODE_RAND | MODE_READ;
	if (!strcmp(rw, "randwrite"))
		return MODE_RAND | MODE_WRITE;
	if (!strcmp(rw, "read"))
		return MODE_READ;
	if (!strcmp(rw, "write"))
		return MODE_WRITE;
	if (!strcmp(rw, "randrw"))
		return MODE_RAND | MODE_READ | MODE_WRITE;
	return 0;
}

int vc_bench(const struct vc_args *a)
{
	unsigned mode = parse_mode(a->rw), i, ind;
	struct bthread t[VU_MAX_QUEUES];
	uint64_t mem, size, ios = 0, errors = 0, slot;
	struct vu_client *c = NULL;
	struct vu_opts o = {0};
	uint16_t ring = 128;
	double t0, t1;
	int rc, ret = 1;

	if (!mode) {
		fprintf(stderr, "vhost-client: bad --rw '%s'\n", a->rw);
		return 2;
	}
	ind = a->direct ? 0 : VU_REQ_INDIRECT;
	while (ring < (ind ? a->qd : 3 * a->qd))
		ring *= 2;
	slot = ((a->bs + 4095ull) & ~4095ull) + 4096;
	mem = a->queues * (a->qd * slot + 26ull * ring + 3 * 4096) + (4 << 20);
	rc = vu_client_new(&c, a->socket, mem, 1);
	if (rc < 0) {
		fprintf(stderr, "vhost-client: guest memory: %s\n",
			strerror(-rc));
		return 1;
	}
	c->timeout_ms = a->timeout_ms;
	o.want_features =
	    VU_BIT(VU_F_VERSION_1) | VU_BIT(VU_F_PROTOCOL_FEATURES) |
	    VU_BIT(VU_F_INDIRECT_DESC) | VU_BIT(VU_F_EVENT_IDX) |
	    VU_BIT(VU_F_MQ) | VU_BIT(VU_F_FLUSH) | VU_BIT(VU_F_BLK_SIZE);
	o.nqueues = a->queues;
	o.ring_size = ring;
	o.slots = a->qd;
	o.slot_bytes = a->bs;
	o.ind_entries = 4;
	rc = vu_setup(c, &o, 10000);
	if (rc < 0) {
		fprintf(stderr, "vhost-client: setup: %s\n", vu_errmsg(c));
		goto out;
	}
	if (ind && !(c->acked & VU_BIT(VU_F_INDIRECT_DESC))) {
		fprintf(stderr,
			"vhost-client: no INDIRECT_DESC; use --direct\n");
		goto out;
	}
	if (a->offset % a->bs ||
	    (c->have_config && a->offset >= c->capacity * 512)) {
		fprintf(stderr, "vhost-client: bad --offset\n");
		goto out;
	}
	size = a->size ? a->size : c->capacity * 512 - a->offset;
	if (c->have_config && a->offset + size > c->capacity * 512) {
		fprintf(stderr, "vhost-client: --size beyond the capacity\n");
		goto out;
	}
	if (a->lat_split &&
	    (a->lat_split <= a->offset || a->lat_split >= a->offset + size ||
	     a->lat_split % a->bs || a->lat_stripe % a->bs)) {
		fprintf(stderr, "vhost-client: bad --lat-split/--lat-stripe\n");
		goto out;
	}
	if (size < a->bs) {
		fprintf(stderr, "vhost-client: disk size unknown or too small "
				"(give --size)\n");
		goto out;
	}
	memset(t, 0, sizeof(t));
	__atomic_store_n(&stop_flag, 0, __ATOMIC_RELAXED);
	t0 = now_s();
	for (i = 0; i < a->queues; i++) {
		t[i].a = a;
		t[i].q = &c->q[i];
		t[i].mode = mode;
		t[i].ind = ind;
		t[i].nblocks = size / a->bs;
		t[i].seq = t[i].nblocks / a->queues * i;
		t[i].rng = 0x9e3779b97f4a7c15ull * (i + 1);
		t[i].base = a->offset / a->bs;
		if (a->lat_split) {
			t[i].split = (a->lat_split - a->offset) / a->bs;
			if (a->lat_stripe)
				t[i].lo_stripes =
				    t[i].split / (a->lat_stripe / a->bs);
		}
		t[i].cls = calloc(c->q[i].nreqs, 1);
		if (!t[i].cls) {
			rc = ENOMEM;
			goto thread_fail;
		}
		rc = pthread_create(&t[i].tid, NULL, bench_thread, &t[i]);
		if (rc) {
		thread_fail:
			__atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
			free(t[i].cls);
			while (i--) {
				pthread_join(t[i].tid, NULL);
				free(t[i].cls);
				free(t[i].lat[0].v);
				free(t[i].lat[1].v);
			}
			fprintf(stderr, "vhost-client: pthread_create: %s\n",
				strerror(rc));
			goto out;
		}
	}
	{
		double end = t0 + a->seconds;
		struct timespec ts = {0, 20 * 1000 * 1000};

		while (now_s() < end)
			nanosleep(&ts, NULL);
	}
	__atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
	t1 = now_s();
	rc = 0;
	for (i = 0; i < a->queues; i++) {
		pthread_join(t[i].tid, NULL);
		ios += t[i].ios;
		errors += t[i].errors;
		if (t[i].rc < 0 && rc == 0)
			rc = t[i].rc;
	}
	printf("{\"rw\":\"%s\",\"bs\":%u,\"qd\":%u,\"queues\":%u,"
	       "\"seconds\":%.3f,\"ios\":%llu,\"iops\":%.0f,\"mbps\":%.1f,"
	       "\"errors\":%llu,\"indirect\":%s",
	       a->rw, a->bs, a->qd, a->queues, t1 - t0, (unsigned long long)ios,
	       (double)ios / (t1 - t0), (double)ios * a->bs / (t1 - t0) / 1e6,
	       (unsigned long long)errors, ind ? "true" : "false");
	if (a->lat)
		print_lat(t, a->queues, a->lat_split != 0);
	printf("}\n");
	for (i = 0; i < a->queues; i++) {
		free(t[i].cls);
		free(t[i].lat[0].v);
		free(t[i].lat[1].v);
	}
	if (rc < 0)
		fprintf(stderr, "vhost-client: bench: %s\n", strerror(-rc));
	ret = rc < 0 || errors ? 1 : 0;
out:
	vu_client_free(c);
	return ret;
}
