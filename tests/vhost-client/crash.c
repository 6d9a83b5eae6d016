/* vhost-client crash-run / crash-verify: crash consistency of a backend
 * that is killed while a guest writes.
 *
 *   crash-run --seed N --journal FILE [--seconds T] [--image IMAGE]
 *       Writes seeded patterns at random sectors with random sizes (small
 *       writes, whole aligned 64-256 KiB chunks, large unaligned ones;
 *       15 in 16 inside a hot 1/16 of the disk chosen per run),
 *       reads some back, and issues a FLUSH regularly. Every 512-byte
 *       sector written carries a pattern derived from (seed, sector, gen):
 *       a header {magic ^ seed, sector, gen} and pseudo-random bytes, so a
 *       sector tells which write put it there and cannot be forged by
 *       anything else. Generations grow across runs: run k (the k-th RUN
 *       record of the journal) uses gens k << 32 | 1, 2, ...
 *       After each successful FLUSH the journal gets (fdatasync'ed) one
 *       DURABLE record per write that completed before the FLUSH was sent
 *       and one PENDING record per write still in flight or completed
 *       since. Overlapping requests are never in flight together, so the
 *       last completed write of a sector is well defined. Reads check each
 *       sector: the exact gen last completed in this run, else a valid
 *       pattern or (with --image) the source data. Runs until T elapses
 *       (final FLUSH, exit 0), the backend goes away (exit 3), or it is
 *       killed.
 *
 *   crash-verify --seed N --journal FILE --image IMAGE
 *                (--socket S [--shift S] |
 *                 --plain FILE --fetched FILE --shift S)
 *       Checks every sector of the disk, read through the backend, or of
 *       the decrypted data file restricted to the stripes listed (the
 *       dump-metadata "fetched stripes" list, stripes of 2^S sectors):
 *       a sector with a durable gen D holds a valid pattern of gen >= D
 *       (D itself or a later write); any other sector holds the image's
 *       data or a valid pattern. Reads through the backend stay inside
 *       one stripe of 2^S sectors (so copy_on_read = false fetches
 *       nothing). With --fetched, every sector with a
 *       durable gen inside the image must lie in a listed stripe.
 *
 * Exit status: 0 pass, 1 a check failed or an I/O error, 2 usage, 3 the
 * backend went away during crash-run. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vc.h"

#define SECT		512u
#define PAT_MAGIC	0x5542435241534821ull /* "UBCRASH!" */
#define J_MAGIC		0x314a4255u	      /* "UBJ1" */
#define MAX_REQ_SECTORS 1024u		      /* 512 KiB */
#define DEF_QD		8u
#define FLUSH_EVERY	24u  /* writes between FLUSHes (at most) */
#define VERIFY_CHUNK	512u /* sectors per verify read */
#define MAX_REPORTED	20u
#define EXIT_PEER_GONE	3

enum { J_RUN = 1, J_DURABLE = 2, J_PENDING = 3 };

struct jrec {
	uint32_t magic;
	uint32_t type;
	uint64_t sector; /* RUN: run index */
	uint64_t gen;	 /* RUN: gen base */
	uint32_t count;
	uint32_t check;
};

struct crash_opts {
	const char *socket;
	const char *journal;
	const char *image;
	const char *plain;
	const char *fetched;
	uint64_t seed;
	bool have_seed;
	double seconds;
	int shift;
	unsigned qd;
	int timeout_ms;
};

/* --- patterns -------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static void fill_sector(uint64_t seed, uint64_t sector, uint64_t gen,
			uint8_t *out)
{
	uint64_t w[SECT / 8], x;
	unsigned i;

	w[0] = PAT_MAGIC ^ seed;
	w[1] = sector;
	w[2] = gen;
	x = mix64(seed ^ mix64(sector ^ mix64(gen)));
	for (i = 3; i < SECT / 8; i++) {
		x = mix64(x + i);
		w[i] = x;
	}
	memcpy(out, w, SECT);
}

/* Gen of the valid pattern for sector in buf, 0 when buf holds no pattern
 * of this seed, UINT64_MAX for a pattern that is damaged or misplaced. */
static uint64_t pattern_gen(uint64_t seed, uint64_t sector, const uint8_t *buf)
{
	uint8_t want[SECT];
	uint64_t w[3];

	memcpy(w, buf, sizeof(w));
	if (w[0] != (PAT_MAGIC ^ seed))
		return 0;
	if (w[1] != sector || w[2] == 0)
		return UINT64_MAX;
	fill_sector(seed, sector, w[2], want);
	return memcmp(want, buf, SECT) ? UINT64_MAX : w[2];
}

struct rng {
	uint64_t s;
};

static uint64_t rnd(struct rng *r)
{
	r->s = mix64(r->s);
	return r->s;
}

static uint64_t rnd_below(struct rng *r, uint64_t n)
{
	return n ? rnd(r) % n : 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- journal --------------------------------------------------------- */

static uint32_t jcheck(const struct jrec *j)
{
	uint64_t h = mix64(((uint64_t)j->magic << 32) ^ j->type);

	h = mix64(h ^ j->sector);
	h = mix64(h ^ j->gen);
	h = mix64(h ^ j->count);
	return (uint32_t)h;
}

struct journal {
	int fd;
	struct jrec *recs; /* valid records read at open */
	size_t n;
	uint64_t runs;
};

/* Opens (creating) the journal, reads its valid prefix and cuts a torn
 * tail so appends stay aligned. */
static int journal_open(struct journal *j, const char *path, bool create)
{
	struct stat st;
	size_t cap, i;

	memset(j, 0, sizeof(*j));
	j->fd = open(path, (create ? O_RDWR | O_CREAT : O_RDONLY) | O_CLOEXEC,
		     0644);
	if (j->fd < 0) {
		fprintf(stderr, "crash: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fstat(j->fd, &st) < 0)
		return -1;
	cap = (size_t)st.st_size / sizeof(struct jrec);
	j->recs = calloc(cap ? cap : 1, sizeof(struct jrec));
	if (!j->recs)
		return -1;
	if (cap && pread(j->fd, j->recs, cap * sizeof(struct jrec), 0) !=
		       (ssize_t)(cap * sizeof(struct jrec))) {
		fprintf(stderr, "crash: reading %s: %s\n", path,
			strerror(errno));
		return -1;
	}
	for (i = 0; i < cap; i++) {
		if (j->recs[i].magic != J_MAGIC ||
		    j->recs[i].check != jcheck(&j->recs[i]))
			break;
		if (j->recs[i].type == J_RUN)
			j->runs++;
	}
	j->n = i;
	if (create && (off_t)(i * sizeof(struct jrec)) != st.st_size &&
	    ftruncate(j->fd, (off_t)(i * sizeof(struct jrec))) < 0)
		return -1;
	return 0;
}

static void journal_close(struct journal *j)
{
	if (j->fd >= 0)
		close(j->fd);
	free(j->recs);
	j->recs = NULL;
	j->fd = -1;
}

/* Appends n records at the end and makes them durable. */
static int journal_append(struct journal *j, struct jrec *r, size_t n)
{
	size_t i;
	off_t end;

	if (!n)
		return 0;
	for (i = 0; i < n; i++) {
		r[i].magic = J_MAGIC;
		r[i].check = jcheck(&r[i]);
	}
	end = lseek(j->fd, 0, SEEK_END);
	if (end < 0 ||
	    pwrite(j->fd, r, n * sizeof(*r), end) !=
		(ssize_t)(n * sizeof(*r)) ||
	    fdatasync(j->fd) < 0) {
		fprintf(stderr, "crash: journal write: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

/* --- connection ------------------------------------------------------ */

static int connect_client(const struct crash_opts *o, unsigned qd,
			  struct vu_client **out)
{
	uint64_t slot = MAX_REQ_SECTORS * SECT + 4096;
	uint64_t mem = qd * slot + 64 * 128 + 8 * 4096 + (4 << 20);
	struct vu_opts vo = {0};
	struct vu_client *c = NULL;
	int rc;

	rc = vu_client_new(&c, o->socket, mem, 1);
	if (rc < 0) {
		fprintf(stderr, "crash: guest memory: %s\n", strerror(-rc));
		return -1;
	}
	c->timeout_ms = o->timeout_ms;
	vo.want_features = VU_BIT(VU_F_VERSION_1) |
			   VU_BIT(VU_F_PROTOCOL_FEATURES) | VU_BIT(VU_F_FLUSH) |
			   VU_BIT(VU_F_BLK_SIZE) | VU_BIT(VU_F_EVENT_IDX);
	vo.nqueues = 1;
	vo.ring_size = 128;
	vo.slots = qd;
	vo.slot_bytes = MAX_REQ_SECTORS * SECT;
	vo.ind_entries = 4;
	rc = vu_setup(c, &vo, 10000);
	if (rc < 0) {
		fprintf(stderr, "crash: setup: %s\n", vu_errmsg(c));
		vu_client_free(c);
		return -1;
	}
	if (!(c->acked & VU_BIT(VU_F_FLUSH)) || !c->capacity) {
		fprintf(stderr, "crash: the device offers no FLUSH or has no "
				"capacity\n");
		vu_client_free(c);
		return -1;
	}
	*out = c;
	return 0;
}

static bool peer_gone(struct vu_client *c)
{
	char b;
	ssize_t n = recv(c->sock, &b, 1, MSG_PEEK | MSG_DONTWAIT);

	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* Waits up to 10 ms for completions or the peer going away: 1 peer
 * gone, 0 otherwise. */
static int wait_event(struct vu_queue *q)
{
	struct pollfd p[2] = {
	    {.fd = q->call_fd, .events = POLLIN},
	    {.fd = q->c->sock, .events = POLLIN | POLLRDHUP},
	};
	uint64_t cnt;

	vu_queue_want_irq(q, true);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (poll(p, 2, 10) > 0) {
		if ((p[0].revents & POLLIN) &&
		    read(q->call_fd, &cnt, sizeof(cnt)) < 0)
			cnt = 0;
		if (p[1].revents && peer_gone(q->c))
			return 1;
	}
	return 0;
}

/* --- source image ---------------------------------------------------- */

struct image {
	int fd;
	uint64_t sectors;
};

static int image_open(struct image *im, const char *path)
{
	struct stat st;

	im->fd = -1;
	im->sectors = 0;
	if (!path)
		return 0;
	im->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (im->fd < 0 || fstat(im->fd, &st) < 0) {
		fprintf(stderr, "crash: %s: %s\n", path, strerror(errno));
		return -1;
	}
	im->sectors = (uint64_t)st.st_size / SECT;
	return 0;
}

/* 1 when buf equals the image's sector, 0 when not, -1 on error. */
static int image_match(const struct image *im, uint64_t sector,
		       const uint8_t *buf)
{
	uint8_t want[SECT];

	if (im->fd < 0 || sector >= im->sectors)
		return 0;
	if (pread(im->fd, want, SECT, (off_t)(sector * SECT)) != SECT)
		return -1;
	return memcmp(want, buf, SECT) == 0;
}

/* --- crash-run ------------------------------------------------------- */

enum { OP_NONE, OP_READ, OP_WRITE, OP_FLUSH };

struct op {
	int type;
	uint64_t sector;
	uint32_t count;
	uint64_t gen; /* writes */
};

struct wvec {
	struct jrec *v;
	size_t n, cap;
};

static int wvec_push(struct wvec *w, uint32_t type, const struct op *op)
{
	if (w->n == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 64;
		struct jrec *v = realloc(w->v, cap * sizeof(*v));

		if (!v)
			return -1;
		w->v = v;
		w->cap = cap;
	}
	w->v[w->n++] = (struct jrec){.type = type,
				     .sector = op->sector,
				     .gen = op->gen,
				     .count = op->count};
	return 0;
}

struct run {
	const struct crash_opts *o;
	struct vu_client *c;
	struct vu_queue *q;
	struct journal j;
	struct image im;
	struct rng rng;
	uint64_t cap;	       /* sectors */
	uint64_t hot, hot_len; /* most requests: [hot, hot + hot_len) */
	uint8_t *busy;	       /* per sector: a request in flight covers it */
	uint64_t *last;	       /* per sector: gen last completed in this run */
	struct op *ops;	       /* per slot */
	struct wvec done;      /* completed, not yet covered by a FLUSH */
	struct wvec covered;   /* completed before the FLUSH in flight */
	struct wvec out;       /* journal batch */
	uint64_t gen;
	unsigned inflight;
	bool flush_inflight;
	unsigned since_flush;
	uint64_t writes, reads, flushes, sectors_checked;
	unsigned failures;
};

static bool range_free(struct run *r, uint64_t s, uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n; i++)
		if (r->busy[s + i])
			return false;
	return true;
}

static void range_mark(struct run *r, uint64_t s, uint32_t n, uint8_t v)
{
	memset(r->busy + s, v, n);
}

/* Picks a write or read range: small, whole aligned chunks (which cover
 * whole stripes of 64-256 KiB), or large unaligned ones. */
static bool pick_range(struct run *r, uint64_t *sector, uint32_t *count)
{
	unsigned attempt;

	for (attempt = 0; attempt < 8; attempt++) {
		uint64_t k = rnd_below(&r->rng, 16), s;
		uint32_t n;

		if (k < 9) {
			n = 1 + (uint32_t)rnd_below(&r->rng, 8);
		} else if (k < 13) {
			n = 128u << rnd_below(&r->rng, 3);
		} else {
			n = 1 + (uint32_t)rnd_below(&r->rng, MAX_REQ_SECTORS);
		}
		if (n > r->cap)
			n = (uint32_t)r->cap;
		if (k >= 9 && k < 13)
			s = rnd_below(&r->rng, r->cap / n) * n;
		else
			s = rnd_below(&r->rng, r->cap - n + 1);
		/* Fifteen requests in sixteen stay in this run's hot area,
		 * so most stripes are left for autofetch (and stay
		 * unfetched for a while). */
		if (rnd_below(&r->rng, 16) && r->hot_len > n) {
			s = r->hot + s % (r->hot_len - n + 1);
			if (k >= 9 && k < 13)
				s &= ~(uint64_t)(n - 1); /* hot is aligned */
		}
		if (range_free(r, s, n)) {
			*sector = s;
			*count = n;
			return true;
		}
	}
	return false;
}

static void fail(struct run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void fail(struct run *r, const char *fmt, ...)
{
	va_list ap;

	r->failures++;
	if (r->failures > MAX_REPORTED)
		return;
	printf("FAIL: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

static int submit_op(struct run *r, int type)
{
	struct vu_req *req = vu_req_get(r->q);
	struct op *op;
	uint32_t i;
	int rc;

	if (!req)
		return 0;
	op = &r->ops[req->slot];
	memset(op, 0, sizeof(*op));
	op->type = type;
	if (type == OP_FLUSH) {
		/* What completed so far becomes durable with this FLUSH. */
		struct wvec t = r->covered;

		r->covered = r->done;
		r->done = t;
		r->done.n = 0;
		rc = vu_req_submit(req, VU_BLK_T_FLUSH, 0, 0, 0, 0);
		if (rc < 0)
			return rc;
		r->flush_inflight = true;
		r->since_flush = 0;
		r->inflight++;
		return 1;
	}
	if (!pick_range(r, &op->sector, &op->count))
		return 0;
	if (type == OP_WRITE) {
		op->gen = ++r->gen;
		for (i = 0; i < op->count; i++)
			fill_sector(r->o->seed, op->sector + i, op->gen,
				    req->buf + (size_t)i * SECT);
		rc = vu_req_submit(req, VU_BLK_T_OUT, op->sector,
				   op->count * SECT, 1, 0);
	} else {
		rc = vu_req_submit(req, VU_BLK_T_IN, op->sector,
				   op->count * SECT, 1, 0);
	}
	if (rc < 0)
		return rc;
	range_mark(r, op->sector, op->count, 1);
	r->inflight++;
	return 1;
}

static void check_read(struct run *r, const struct op *op, const uint8_t *buf)
{
	uint32_t i;

	for (i = 0; i < op->count; i++) {
		uint64_t s = op->sector + i;
		const uint8_t *b = buf + (size_t)i * SECT;
		uint64_t g = pattern_gen(r->o->seed, s, b);

		r->sectors_checked++;
		if (r->last[s]) {
			if (g != r->last[s])
				fail(r,
				     "read of sector %" PRIu64 ": gen %#" PRIx64
				     ", last completed write was %#" PRIx64,
				     s, g, r->last[s]);
			continue;
		}
		if (g == UINT64_MAX)
			fail(r, "read of sector %" PRIu64 ": damaged pattern",
			     s);
		else if (g == 0 && r->im.fd >= 0 && s < r->im.sectors &&
			 image_match(&r->im, s, b) != 1)
			fail(r,
			     "read of sector %" PRIu64 ": neither a pattern "
			     "nor the source data",
			     s);
	}
}

/* Journals what the completed FLUSH made durable, and what may have
 * landed too. */
static int flush_done(struct run *r)
{
	size_t i;
	unsigned k;

	r->out.n = 0;
	for (i = 0; i < r->covered.n; i++) {
		struct op op = {.sector = r->covered.v[i].sector,
				.count = r->covered.v[i].count,
				.gen = r->covered.v[i].gen};

		if (wvec_push(&r->out, J_DURABLE, &op))
			return -1;
	}
	for (i = 0; i < r->done.n; i++) {
		struct op op = {.sector = r->done.v[i].sector,
				.count = r->done.v[i].count,
				.gen = r->done.v[i].gen};

		if (wvec_push(&r->out, J_PENDING, &op))
			return -1;
	}
	for (k = 0; k < r->q->nreqs; k++)
		if (r->q->reqs[k].inflight && r->ops[k].type == OP_WRITE &&
		    wvec_push(&r->out, J_PENDING, &r->ops[k]))
			return -1;
	r->covered.n = 0;
	r->flush_inflight = false;
	r->flushes++;
	return journal_append(&r->j, r->out.v, r->out.n);
}

static int complete_one(struct run *r, const struct vu_used_elem *e)
{
	struct vu_req *req = vu_queue_complete(r->q, e);
	struct op *op;
	uint32_t i;

	if (!req) {
		fprintf(stderr, "crash: unknown completion %u\n", e->id);
		return -1;
	}
	op = &r->ops[req->slot];
	r->inflight--;
	if (*req->status != VU_BLK_S_OK) {
		fail(r, "%s at sector %" PRIu64 " (+%u) failed: status %u",
		     op->type == OP_FLUSH   ? "FLUSH"
		     : op->type == OP_WRITE ? "write"
					    : "read",
		     op->sector, op->count, *req->status);
		if (op->type != OP_FLUSH)
			range_mark(r, op->sector, op->count, 0);
		else
			r->flush_inflight = false;
		return -1;
	}
	switch (op->type) {
	case OP_FLUSH:
		return flush_done(r);
	case OP_WRITE:
		for (i = 0; i < op->count; i++)
			r->last[op->sector + i] = op->gen;
		r->writes++;
		r->since_flush++;
		if (wvec_push(&r->done, J_DURABLE, op))
			return -1;
		break;
	case OP_READ:
		check_read(r, op, req->buf);
		r->reads++;
		break;
	}
	range_mark(r, op->sector, op->count, 0);
	op->type = OP_NONE;
	return 0;
}

/* Completes what is ready; waits when nothing is. 1 = peer gone. */
static int reap(struct run *r, bool wait, double *last_progress)
{
	struct vu_used_elem e;
	bool any = false;

	while (vu_queue_next_used(r->q, &e)) {
		if (complete_one(r, &e))
			return -1;
		any = true;
	}
	if (any) {
		*last_progress = now_s();
		return 0;
	}
	if (!wait)
		return 0;
	if (wait_event(r->q))
		return 1;
	if (r->inflight &&
	    now_s() - *last_progress > r->o->timeout_ms / 1000.0) {
		fprintf(stderr, "crash: no completion for %d ms\n",
			r->o->timeout_ms);
		return -1;
	}
	return 0;
}

static int crash_run(const struct crash_opts *o)
{
	struct run r = {.o = o};
	struct jrec rec = {.type = J_RUN};
	double t0, last_progress, end;
	int rc, status = 1;
	bool ending = false;

	r.j.fd = -1;
	if (journal_open(&r.j, o->journal, true) || image_open(&r.im, o->image))
		goto out;
	rec.sector = r.j.runs + 1;
	rec.gen = rec.sector << 32;
	r.gen = rec.gen;
	r.rng.s = mix64(o->seed ^ mix64(rec.sector));
	if (connect_client(o, o->qd, &r.c))
		goto out;
	r.q = &r.c->q[0];
	r.cap = r.c->capacity;
	r.hot_len = r.cap / 16 > MAX_REQ_SECTORS ? r.cap / 16 : r.cap;
	r.hot = rnd_below(&r.rng, r.cap - r.hot_len + 1) & ~511ull;
	r.busy = calloc(r.cap, 1);
	r.last = calloc(r.cap, sizeof(*r.last));
	r.ops = calloc(r.q->nreqs, sizeof(*r.ops));
	if (!r.busy || !r.last || !r.ops)
		goto out;
	/* Written only once the connection works: the run's gens start
	 * above every gen an earlier run may have issued. */
	if (journal_append(&r.j, &rec, 1))
		goto out;
	printf("crash-run: run %" PRIu64 ", seed %" PRIu64 ", %" PRIu64
	       " sectors, gens from %#" PRIx64 "\n",
	       rec.sector, o->seed, r.cap, rec.gen + 1);
	t0 = last_progress = now_s();
	end = t0 + o->seconds;
	for (;;) {
		int added = 0;

		if (!ending && now_s() >= end)
			ending = true;
		while (!ending && r.inflight < r.q->nreqs) {
			int type;

			if (!r.flush_inflight &&
			    (r.since_flush >= FLUSH_EVERY ||
			     (r.done.n && rnd_below(&r.rng, 8) == 0)))
				type = OP_FLUSH;
			else
				type = rnd_below(&r.rng, 10) < 7 ? OP_WRITE
								 : OP_READ;
			rc = submit_op(&r, type);
			if (rc < 0) {
				fprintf(stderr, "crash: submit: %s\n",
					strerror(-rc));
				goto out;
			}
			if (rc == 0)
				break;
			added++;
		}
		if (ending && !r.inflight) {
			if (!r.done.n)
				break;
			if (submit_op(&r, OP_FLUSH) != 1)
				goto out;
			added++;
		}
		if (added && vu_queue_kick(r.q) < 0) {
			if (peer_gone(r.c)) {
				status = EXIT_PEER_GONE;
				goto report;
			}
			fprintf(stderr, "crash: kick failed\n");
			goto out;
		}
		rc = reap(&r, !added, &last_progress);
		if (rc == 1) {
			status = EXIT_PEER_GONE;
			goto report;
		}
		if (rc < 0)
			goto report;
	}
	status = r.failures ? 1 : 0;
report:
	printf("crash-run: %.1f s, %" PRIu64 " writes, %" PRIu64
	       " reads (%" PRIu64 " sectors checked), %" PRIu64
	       " flushes, %u failures%s\n",
	       now_s() - t0, r.writes, r.reads, r.sectors_checked, r.flushes,
	       r.failures,
	       status == EXIT_PEER_GONE ? "; the backend went away" : "");
	if (r.failures)
		status = 1;
out:
	vu_client_free(r.c);
	journal_close(&r.j);
	if (r.im.fd >= 0)
		close(r.im.fd);
	free(r.busy);
	free(r.last);
	free(r.ops);
	free(r.done.v);
	free(r.covered.v);
	free(r.out.v);
	return status;
}

/* --- crash-verify ---------------------------------------------------- */

struct verify {
	const struct crash_opts *o;
	struct image im;
	uint64_t cap;
	uint64_t *durable; /* per sector: last durable gen, 0 = none */
	uint8_t *fetched;  /* per stripe (plain mode) */
	uint64_t nstripes;
	uint32_t chunk; /* sectors per read through the backend */
	uint64_t checked, pattern, newer, source, durable_ok, unknown;
	unsigned failures;
};

static void vfail(struct verify *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void vfail(struct verify *v, const char *fmt, ...)
{
	va_list ap;

	v->failures++;
	if (v->failures > MAX_REPORTED)
		return;
	printf("FAIL: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

static int load_durable(struct verify *v, const struct journal *j)
{
	size_t i;
	uint32_t k;

	for (i = 0; i < j->n; i++) {
		const struct jrec *r = &j->recs[i];

		if (r->type != J_DURABLE)
			continue;
		if (r->sector + r->count > v->cap) {
			fprintf(stderr,
				"crash: journal record past the disk end "
				"(sector %" PRIu64 ")\n",
				r->sector);
			return -1;
		}
		for (k = 0; k < r->count; k++)
			if (r->gen > v->durable[r->sector + k])
				v->durable[r->sector + k] = r->gen;
	}
	return 0;
}

static void verify_sector(struct verify *v, uint64_t s, const uint8_t *b)
{
	uint64_t g = pattern_gen(v->o->seed, s, b), d = v->durable[s];
	int m;

	v->checked++;
	if (g == UINT64_MAX) {
		vfail(v, "sector %" PRIu64 ": damaged or misplaced pattern", s);
		return;
	}
	if (g) {
		v->pattern++;
		if (d && g < d)
			vfail(v,
			      "sector %" PRIu64 ": stale gen %#" PRIx64
			      " under durable gen %#" PRIx64,
			      s, g, d);
		else if (d && g == d)
			v->durable_ok++;
		else if (d)
			v->newer++;
		return;
	}
	if (s >= v->im.sectors) {
		if (d)
			vfail(v,
			      "sector %" PRIu64 ": durable gen %#" PRIx64
			      " lost (past the image)",
			      s, d);
		else
			v->unknown++;
		return;
	}
	m = image_match(&v->im, s, b);
	if (m < 0) {
		vfail(v, "sector %" PRIu64 ": cannot read the image", s);
	} else if (m == 0) {
		vfail(v,
		      "sector %" PRIu64 ": neither a pattern nor the source "
		      "data%s",
		      s, d ? " (a durable write was lost)" : "");
	} else if (d) {
		vfail(v,
		      "sector %" PRIu64 ": source data over durable gen "
		      "%#" PRIx64 " (refetched or never written back)",
		      s, d);
	} else {
		v->source++;
	}
}

/* Reads the whole disk through the backend, QD requests at once. */
static int verify_backend(struct verify *v, struct vu_client *c)
{
	struct vu_queue *q = &c->q[0];
	uint64_t next = 0, *at = calloc(q->nreqs, sizeof(*at));
	unsigned inflight = 0;
	struct vu_used_elem e;
	int rc = -1;

	if (!at)
		return -1;
	while (next < v->cap || inflight) {
		struct vu_req *req;
		bool added = false;

		while (next < v->cap && (req = vu_req_get(q))) {
			uint32_t n = v->cap - next < v->chunk
					 ? (uint32_t)(v->cap - next)
					 : v->chunk;

			if (vu_req_submit(req, VU_BLK_T_IN, next, n * SECT, 1,
					  0) < 0)
				goto out;
			at[req->slot] = next;
			next += n;
			inflight++;
			added = true;
		}
		if (added && vu_queue_kick(q) < 0)
			goto out;
		if (vu_queue_wait_used(q, v->o->timeout_ms, &e) != 1) {
			fprintf(stderr, "crash: verify read timed out\n");
			goto out;
		}
		do {
			uint64_t s, i;
			uint32_t n;

			req = vu_queue_complete(q, &e);
			if (!req)
				goto out;
			inflight--;
			s = at[req->slot];
			if (*req->status != VU_BLK_S_OK) {
				vfail(v, "read at sector %" PRIu64 " failed",
				      s);
				continue;
			}
			n = v->cap - s < v->chunk ? (uint32_t)(v->cap - s)
						  : v->chunk;
			for (i = 0; i < n; i++)
				verify_sector(v, s + i,
					      req->buf + (size_t)i * SECT);
		} while (vu_queue_next_used(q, &e));
	}
	rc = 0;
out:
	free(at);
	return rc;
}

/* "0-3, 5, 7, 8, 10-12" (dump-metadata) into a per-stripe map. */
static int load_fetched(struct verify *v, const char *path)
{
	FILE *f = fopen(path, "r");
	unsigned long long a, b;
	int c;

	if (!f) {
		fprintf(stderr, "crash: %s: %s\n", path, strerror(errno));
		return -1;
	}
	for (;;) {
		c = fgetc(f);
		if (c == EOF)
			break;
		if (c < '0' || c > '9')
			continue;
		ungetc(c, f);
		if (fscanf(f, "%llu", &a) != 1)
			break;
		b = a;
		c = fgetc(f);
		if (c == '-' && fscanf(f, "%llu", &b) != 1)
			break;
		if (b < a || b >= v->nstripes) {
			fprintf(stderr,
				"crash: fetched stripe %llu out of "
				"range\n",
				b);
			fclose(f);
			return -1;
		}
		while (a <= b)
			v->fetched[a++] = 1;
	}
	fclose(f);
	return 0;
}

/* The decrypted data file, fetched stripes only. */
static int verify_plain(struct verify *v)
{
	uint64_t per = 1ull << v->o->shift, st, s, i;
	uint8_t *buf = malloc(per * SECT);
	int fd = open(v->o->plain, O_RDONLY | O_CLOEXEC), rc = -1;
	uint64_t nfetched = 0;

	if (fd < 0 || !buf) {
		fprintf(stderr, "crash: %s: %s\n", v->o->plain,
			strerror(errno));
		goto out;
	}
	for (st = 0; st < v->nstripes; st++) {
		uint64_t first = st * per;
		uint64_t n = v->cap - first < per ? v->cap - first : per;

		if (!v->fetched[st]) {
			for (i = 0; i < n; i++) {
				s = first + i;
				if (v->durable[s] && s < v->im.sectors)
					vfail(v,
					      "sector %" PRIu64
					      " has durable gen %#" PRIx64
					      " but stripe %" PRIu64
					      " is not marked fetched",
					      s, v->durable[s], st);
			}
			continue;
		}
		nfetched++;
		if (pread(fd, buf, n * SECT, (off_t)(first * SECT)) !=
		    (ssize_t)(n * SECT)) {
			fprintf(stderr, "crash: reading %s: %s\n", v->o->plain,
				strerror(errno));
			goto out;
		}
		for (i = 0; i < n; i++)
			verify_sector(v, first + i, buf + i * SECT);
	}
	printf("crash-verify: %" PRIu64 " fetched stripes of %" PRIu64
	       " checked in the data file\n",
	       nfetched, v->nstripes);
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}

static int crash_verify(const struct crash_opts *o)
{
	struct verify v = {.o = o};
	struct journal j;
	struct vu_client *c = NULL;
	struct stat st;
	int status = 1;

	j.fd = -1;
	j.recs = NULL;
	if (journal_open(&j, o->journal, false) || image_open(&v.im, o->image))
		goto out;
	if (o->plain) {
		if (stat(o->plain, &st) < 0) {
			fprintf(stderr, "crash: %s: %s\n", o->plain,
				strerror(errno));
			goto out;
		}
		v.cap = (uint64_t)st.st_size / SECT;
		v.nstripes = (v.cap + (1ull << o->shift) - 1) >> o->shift;
		v.fetched = calloc(v.nstripes ? v.nstripes : 1, 1);
		if (!v.fetched || load_fetched(&v, o->fetched))
			goto out;
	} else {
		if (connect_client(o, 4, &c))
			goto out;
		v.cap = c->capacity;
		/* Reads within one stripe: with copy_on_read = false they
		 * come from the image and fetch nothing. */
		v.chunk = o->shift >= 0 && o->shift < 9 ? 1u << o->shift
							: VERIFY_CHUNK;
	}
	v.durable = calloc(v.cap, sizeof(*v.durable));
	if (!v.durable || load_durable(&v, &j))
		goto out;
	if (o->plain ? verify_plain(&v) : verify_backend(&v, c))
		goto out;
	printf("crash-verify: %" PRIu64 " sectors checked: %" PRIu64
	       " patterns (%" PRIu64 " at their durable gen, %" PRIu64
	       " newer), %" PRIu64 " source data, %" PRIu64
	       " unconstrained; journal: %zu records, %" PRIu64
	       " runs; %u failures\n",
	       v.checked, v.pattern, v.durable_ok, v.newer, v.source, v.unknown,
	       j.n, j.runs, v.failures);
	status = v.failures ? 1 : 0;
out:
	vu_client_free(c);
	journal_close(&j);
	if (v.im.fd >= 0)
		close(v.im.fd);
	free(v.durable);
	free(v.fetched);
	return status;
}

/* --- command line ---------------------------------------------------- */

static void crash_usage(FILE *f)
{
	fprintf(f,
		"Usage: vhost-client --socket S crash-run --seed N "
		"--journal FILE\n"
		"                    [--seconds T] [--image IMAGE] [--qd N]\n"
		"       vhost-client --socket S crash-verify --seed N "
		"--journal FILE\n"
		"                    --image IMAGE [--shift S]\n"
		"       vhost-client crash-verify --seed N --journal FILE "
		"--image IMAGE\n"
		"                    --plain DATA --fetched LIST --shift S\n");
}

enum {
	C_SEED = 0x200,
	C_JOURNAL,
	C_SECONDS,
	C_IMAGE,
	C_PLAIN,
	C_FETCHED,
	C_SHIFT,
	C_QD,
	C_TIMEOUT,
};

int vc_crash_main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"seed", required_argument, NULL, C_SEED},
	    {"journal", required_argument, NULL, C_JOURNAL},
	    {"seconds", required_argument, NULL, C_SECONDS},
	    {"image", required_argument, NULL, C_IMAGE},
	    {"plain", required_argument, NULL, C_PLAIN},
	    {"fetched", required_argument, NULL, C_FETCHED},
	    {"shift", required_argument, NULL, C_SHIFT},
	    {"qd", required_argument, NULL, C_QD},
	    {"timeout", required_argument, NULL, C_TIMEOUT},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct crash_opts o = {
	    .seconds = 1e9,
	    .shift = -1,
	    .qd = DEF_QD,
	    .timeout_ms = 30000,
	};
	const char *cmd = NULL;
	char *end;
	int opt;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "s:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 's':
			o.socket = optarg;
			break;
		case C_SEED:
			o.seed = strtoull(optarg, &end, 0);
			o.have_seed = *optarg && !*end;
			break;
		case C_JOURNAL:
			o.journal = optarg;
			break;
		case C_SECONDS:
			o.seconds = atof(optarg);
			break;
		case C_IMAGE:
			o.image = optarg;
			break;
		case C_PLAIN:
			o.plain = optarg;
			break;
		case C_FETCHED:
			o.fetched = optarg;
			break;
		case C_SHIFT:
			o.shift = atoi(optarg);
			break;
		case C_QD:
			o.qd = (unsigned)atoi(optarg);
			break;
		case C_TIMEOUT:
			o.timeout_ms = atoi(optarg);
			break;
		case 'h':
			crash_usage(stdout);
			return 0;
		default:
			crash_usage(stderr);
			return 2;
		}
	}
	if (optind == argc - 1)
		cmd = argv[optind];
	if (!cmd || !o.have_seed || !o.journal || o.seconds <= 0 || o.qd < 1 ||
	    o.qd > 64 || o.timeout_ms <= 0) {
		crash_usage(stderr);
		return 2;
	}
	if (!strcmp(cmd, "crash-run")) {
		if (!o.socket) {
			crash_usage(stderr);
			return 2;
		}
		return crash_run(&o);
	}
	if (!strcmp(cmd, "crash-verify")) {
		if (!o.image || (!o.socket && !o.plain) ||
		    (o.plain && (!o.fetched || o.shift < 0 || o.shift > 20))) {
			crash_usage(stderr);
			return 2;
		}
		return crash_verify(&o);
	}
	crash_usage(stderr);
	return 2;
}
