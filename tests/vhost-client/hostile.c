/* vhost-client hostile: malformed descriptor chains, requests, rings and
 * vhost-user messages. Each case checks the backend's specified answer and
 * then that a valid request still works (on a new connection when the case
 * ended the old one).
 *
 * What our backend answers (src/vhost/blk.c, virtqueue.c, vhost_user.c):
 * a chain that is not a well-formed virtio-blk request comes back in the
 * used ring with length 0 and no status byte; a well-formed request that
 * cannot be served gets IOERR (or UNSUPP) with used length 1; a head index
 * outside the ring is dropped; avail->idx running ahead of the ring breaks
 * that queue only; any malformed or rejected message ends the connection
 * and the backend accepts a new one.
 *
 * With --peer qsd, cases marked "relaxed" accept whatever
 * qemu-storage-daemon does (libvhost-user stops serving a device that saw
 * a malformed chain, and drops requests it cannot parse) and only require
 * that it serves a new connection afterwards; the observed answer is shown
 * after "#". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "vc.h"

#define MEM_SIZE     (32ull << 20)
#define SENTINEL     0xa5
#define VALID_SECTOR 4096 /* the "valid request after" writes here */
#define DATA_SECTOR  6144 /* cases that write data use this area */

enum { PASS, FAIL, SKIP };

struct hctx {
	const struct vc_args *a;
	struct vc_report r;
	struct vu_client *c;
	struct vu_opts o;
	bool qsd;
	bool connected;	  /* set up and usable */
	bool ended;	  /* the case ended (or spoilt) the connection */
	bool own_check;	  /* the case did its own "valid after" check */
	unsigned check_q; /* queue for the valid request after */
	unsigned seq;	  /* valid-after counter */
	char why[256];	  /* failure reason */
	char note[256];	  /* shown after "#" */
	uint64_t scratch; /* guest scratch area (SCRATCH_SIZE bytes) */
	uint8_t *scr;	  /* its host address */
};

/* Scratch layout (guest addresses relative to h->scratch). */
#define OFF_HDR	     0x0
#define OFF_STATUS   0x40
#define OFF_TABLE2   0x1000  /* second indirect table */
#define OFF_DATA     0x10000 /* 64 KiB data buffer */
#define OFF_TABLE    0x20000 /* indirect table, up to 4096 entries */
#define SCRATCH_SIZE 0x40000

struct hcase {
	const char *name;
	int (*fn)(struct hctx *h);
};

/* --- helpers ------------------------------------------------------------- */

static uint64_t H(struct hctx *h)
{
	return h->scratch + OFF_HDR;
}

static uint64_t S(struct hctx *h)
{
	return h->scratch + OFF_STATUS;
}

static uint64_t D(struct hctx *h)
{
	return h->scratch + OFF_DATA;
}

static uint64_t T(struct hctx *h)
{
	return h->scratch + OFF_TABLE;
}

static uint8_t *status(struct hctx *h)
{
	return h->scr + OFF_STATUS;
}

static struct vu_desc *table(struct hctx *h, uint64_t off)
{
	return (struct vu_desc *)(h->scr + off);
}

static int fail(struct hctx *h, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(struct hctx *h, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(h->why, sizeof(h->why), fmt, ap);
	va_end(ap);
	return FAIL;
}

static void note(struct hctx *h, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void note(struct hctx *h, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(h->note, sizeof(h->note), fmt, ap);
	va_end(ap);
}

/* Header of the scratch request, status preset to the sentinel. */
static void set_hdr(struct hctx *h, uint32_t type, uint64_t sector)
{
	struct vu_blk_hdr hdr = {type, 0, sector};

	memcpy(h->scr + OFF_HDR, &hdr, sizeof(hdr));
	*status(h) = SENTINEL;
}

static struct vu_queue *q0(struct hctx *h)
{
	return &h->c->q[0];
}

/* Publishes a hand-made chain on q and kicks. */
static int submit(struct hctx *h, struct vu_queue *q, const struct vu_desc *d,
		  const int *link, unsigned n, struct vu_chain *ch)
{
	int rc = vu_chain_add(q, d, link, n, ch);

	if (rc < 0)
		return fail(h, "no free descriptors");
	vu_queue_publish(q, ch->head);
	vu_queue_kick(q);
	return PASS;
}

/* Publishes a chain made of one INDIRECT descriptor. */
static int submit_indirect(struct hctx *h, uint64_t gpa, uint32_t len,
			   struct vu_chain *ch)
{
	struct vu_desc d = {gpa, len, VU_DESC_F_INDIRECT, 0};

	return submit(h, q0(h), &d, NULL, 1, ch);
}

static int wait_timeout(struct hctx *h)
{
	/* qsd drops what it cannot parse: do not wait long for it. */
	return h->qsd ? 1000 : h->a->timeout_ms;
}

/* A qsd answer that differs from ours: accepted, shown, and the
 * connection is replaced before the next case. */
static int qsd_relaxed(struct hctx *h, const char *what)
{
	note(h, "qsd: %s", what);
	h->ended = true;
	return PASS;
}

/* The chain must come back with used length 0 and the status byte
 * untouched. */
static int expect_malformed(struct hctx *h, struct vu_queue *q,
			    struct vu_chain *ch)
{
	struct vu_used_elem e;
	char buf[96];

	if (vu_queue_wait_used(q, wait_timeout(h), &e) != 1) {
		if (h->qsd)
			return qsd_relaxed(h, "no completion");
		return fail(h, "no completion within %d ms", wait_timeout(h));
	}
	vu_chain_put(q, ch);
	if (e.id != ch->head)
		return fail(h, "used id %u, want head %u", e.id, ch->head);
	if (h->qsd) {
		snprintf(buf, sizeof(buf), "completed, len %u, status 0x%02x",
			 e.len, *status(h));
		return qsd_relaxed(h, buf);
	}
	if (e.len != 0)
		return fail(h, "used len %u, want 0", e.len);
	if (*status(h) != SENTINEL)
		return fail(h, "status byte written (0x%02x)", *status(h));
	return PASS;
}

/* The chain must complete with status want (and used length want_len
 * unless it is negative); relaxed: qsd may answer otherwise. */
static int expect_status(struct hctx *h, struct vu_queue *q,
			 struct vu_chain *ch, uint8_t want, int want_len,
			 bool relaxed)
{
	struct vu_used_elem e;
	char buf[96];

	if (vu_queue_wait_used(q, wait_timeout(h), &e) != 1) {
		if (h->qsd && relaxed)
			return qsd_relaxed(h, "no completion");
		return fail(h, "no completion within %d ms", wait_timeout(h));
	}
	vu_chain_put(q, ch);
	if (e.id != ch->head)
		return fail(h, "used id %u, want head %u", e.id, ch->head);
	if (*status(h) != want) {
		if (h->qsd && relaxed) {
			snprintf(buf, sizeof(buf), "status 0x%02x, len %u",
				 *status(h), e.len);
			return qsd_relaxed(h, buf);
		}
		return fail(h, "status 0x%02x, want %u", *status(h), want);
	}
	if (!h->qsd && want_len >= 0 && e.len != (uint32_t)want_len)
		return fail(h, "used len %u, want %d", e.len, want_len);
	if (h->qsd)
		note(h, "qsd: status %u, len %u", want, e.len);
	return PASS;
}

/* header / nseg data descriptors of len bytes each / status */
static int simple(struct hctx *h, uint32_t type, uint64_t sector, uint64_t data,
		  uint32_t len, uint16_t dflags, struct vu_chain *ch)
{
	struct vu_desc d[3] = {
	    {H(h), 16, 0, 0},
	    {data, len, dflags, 0},
	    {S(h), 1, VU_DESC_F_WRITE, 0},
	};

	set_hdr(h, type, sector);
	return submit(h, q0(h), d, NULL, 3, ch);
}

static int simple_status(struct hctx *h, uint32_t type, uint64_t sector,
			 uint64_t data, uint32_t len, uint16_t dflags,
			 uint8_t want, bool relaxed)
{
	struct vu_chain ch;

	if (simple(h, type, sector, data, len, dflags, &ch) != PASS)
		return FAIL;
	return expect_status(h, q0(h), &ch, want, 1, relaxed);
}

/* --- "a valid request right after" and reconnection ---------------------- */

static int reconnect(struct hctx *h)
{
	int rc;

	h->connected = false;
	rc = vu_setup(h->c, &h->o, 10000);
	if (rc < 0)
		return fail(h, "cannot set up a new connection: %s",
			    vu_errmsg(h->c));
	h->scratch = vu_alloc(h->c, SCRATCH_SIZE, 4096);
	if (!h->scratch)
		return fail(h, "guest memory too small for the scratch area");
	h->scr = vu_host(h->c, h->scratch);
	h->connected = true;
	return PASS;
}

/* Writes a fresh pattern and reads it back on queue qi. */
static int valid_io(struct hctx *h, unsigned qi)
{
	struct vu_queue *q = &h->c->q[qi];
	struct vu_req *r = vu_req_get(q);
	uint64_t sector = VALID_SECTOR + 8 * (h->seq++ % 64);
	uint32_t i;
	int st;

	if (!r)
		return fail(h, "valid request after: no free slot");
	for (i = 0; i < 4096; i++)
		r->buf[i] = (uint8_t)(i * 7 + h->seq);
	st = vu_req_run(r, VU_BLK_T_OUT, sector, 4096, 1, 0);
	if (st == 0) {
		memset(r->buf, 0, 4096);
		st = vu_req_run(r, VU_BLK_T_IN, sector, 4096, 1, 0);
	}
	if (st < 0)
		return fail(h, "valid request after (queue %u): %s", qi,
			    vu_errmsg(h->c));
	if (st != VU_BLK_S_OK)
		return fail(h, "valid request after (queue %u): status %d", qi,
			    st);
	for (i = 0; i < 4096; i++)
		if (r->buf[i] != (uint8_t)(i * 7 + h->seq))
			return fail(h,
				    "valid request after: data mismatch at "
				    "byte %u",
				    i);
	return PASS;
}

static void run_case(struct hctx *h, const struct hcase *k)
{
	int res;

	h->why[0] = 0;
	h->note[0] = 0;
	if (!h->connected && reconnect(h) != PASS) {
		vc_not_ok(&h->r, k->name, "before the case: %s", h->why);
		return;
	}
	h->ended = false;
	h->own_check = false;
	h->check_q = 0;
	res = k->fn(h);
	if (res == PASS && !h->own_check) {
		if (h->ended)
			res = reconnect(h);
		if (res == PASS)
			res = valid_io(h, h->check_q);
	}
	if (h->ended || res != PASS)
		h->connected = false;
	if (res == SKIP)
		vc_skip(&h->r, k->name, h->why);
	else if (res == PASS)
		vc_ok(&h->r, k->name, h->note);
	else
		vc_not_ok(&h->r, k->name, "%s", h->why);
}

/* --- descriptor chains --------------------------------------------------- */

static int c_loop_two(struct hctx *h)
{
	struct vu_desc d[2] = {{H(h), 16, 0, 0}, {S(h), 1, VU_DESC_F_WRITE, 0}};
	int link[2] = {VU_LINK_AUTO, VU_LINK_POS(0)};
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_IN, 0);
	if (submit(h, q0(h), d, link, 2, &ch) != PASS)
		return FAIL;
	return expect_malformed(h, q0(h), &ch);
}

static int c_loop_self(struct hctx *h)
{
	struct vu_desc d[1] = {{H(h), 16, 0, 0}};
	int link[1] = {VU_LINK_POS(0)};
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_IN, 0);
	if (submit(h, q0(h), d, link, 1, &ch) != PASS)
		return FAIL;
	return expect_malformed(h, q0(h), &ch);
}

static int c_loop_middle(struct hctx *h)
{
	struct vu_desc d[3] = {{H(h), 16, 0, 0},
			       {D(h), 512, VU_DESC_F_WRITE, 0},
			       {S(h), 1, VU_DESC_F_WRITE, 0}};
	int link[3] = {VU_LINK_AUTO, VU_LINK_AUTO, VU_LINK_POS(1)};
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_IN, 0);
	if (submit(h, q0(h), d, link, 3, &ch) != PASS)
		return FAIL;
	return expect_malformed(h, q0(h), &ch);
}

static int c_loop_indirect(struct hctx *h)
{
	struct vu_desc *t = table(h, OFF_TABLE);
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_IN, 0);
	t[0] = (struct vu_desc){H(h), 16, VU_DESC_F_NEXT, 1};
	t[1] = (struct vu_desc){D(h), 512, VU_DESC_F_WRITE | VU_DESC_F_NEXT, 2};
	t[2] = (struct vu_desc){S(h), 1, VU_DESC_F_WRITE | VU_DESC_F_NEXT, 0};
	if (submit_indirect(h, T(h), 3 * 16, &ch) != PASS)
		return FAIL;
	return expect_malformed(h, q0(h), &ch);
}

static int c_next_out_of_range(struct hctx *h)
{
	struct vu_desc d[1] = {{H(h), 16, 0, 0}};
	int link[1] = {VU_LINK_RAW(q0(h)->size)};
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_IN, 0);
	if (submit(h, q0(h), d, link, 1, &ch) != PASS)
		return FAIL;
	return expect_malformed(h, q0(h), &ch);
}

static int c_next_ffff(struct hctx *h)
{
	struct vu_desc d[2] = {{H(h), 16, 0, 0},
			       {D(h), 512, VU_DESC_F_WRITE, 0}};
	int link[2] = {VU_LINK_AUTO, VU_LINK_RAW(0xffff)};
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_IN, 0);
	if (submit(h, q0(h), d, link, 2, &ch) != PASS)
		return FAIL;
	return expect_malformed(h, q0(h), &ch);
}

static int c_indirect_next_out_of_range(struct hctx *h)
{
	struct vu_desc *t = table(h, OFF_TABLE);
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_IN, 0);
	t[0] = (struct vu_desc){H(h), 16, VU_DESC_F_NEXT, 2};
	t[1] = (struct vu_desc){S(h), 1, VU_DESC_F_WRITE, 0};
	if (submit_indirect(h, T(h), 2 * 16, &ch) != PASS)
		return FAIL;
	return expect_malformed(h, q0(h), &ch);
}

static int c_nested_indirect(struct hctx *h)
{
	struct vu_desc *t = table(h, OFF_TABLE), *t2 = table(h, OFF_TABLE2);
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_IN, 0);
	t[0] = (struct vu_desc){H(h), 16, VU_DESC_F_NEXT, 1};
	t[1] = (struct vu_desc){h->scratch + OFF_TABLE2, 32, VU_DESC_F_INDIRECT,
				0};
	t2[0] =
	    (struct vu_desc){D(h), 512, VU_DESC_F_WRITE | VU_DESC_F_NEXT, 1};
	t2[1] = (struct vu_desc){S(h), 1, VU_DESC_F_WRITE, 0};
	if (submit_indirect(h, T(h), 2 * 16, &ch) != PASS)
		return FAIL;
	return expect_malformed(h, q0(h), &ch);
}

static int indirect_len(struct hctx *h, uint64_t gpa, uint32_t len)
{
	struct vu_desc *t = table(h, OFF_TABLE);
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_IN, 0);
	t[0] = (struct vu_desc){H(h), 16, VU_DESC_F_NEXT, 1};
	t[1] = (struct vu_desc){S(h), 1, VU_DESC_F_WRITE, 0};
	if (submit_indirect(h, gpa, len, &ch) != PASS)
		return FAIL;
	return expect_malformed(h, q0(h), &ch);
}

static int c_indirect_len_24(struct hctx *h)
{
	return indirect_len(h, T(h), 24);
}

static int c_indirect_len_0(struct hctx *h)
{
	return indirect_len(h, T(h), 0);
}

static int c_indirect_unmapped(struct hctx *h)
{
	return indirect_len(h, vu_mem_end(h->c) + 0x100000, 32);
}

static int c_indirect_crossing_end(struct hctx *h)
{
	uint64_t gpa = vu_mem_end(h->c) - 16;
	struct vu_desc *last = vu_host(h->c, gpa);
	struct vu_chain ch;
	int rc;

	set_hdr(h, VU_BLK_T_IN, 0);
	*last = (struct vu_desc){H(h), 16, VU_DESC_F_NEXT, 1};
	if (submit_indirect(h, gpa, 32, &ch) != PASS)
		return FAIL;
	rc = expect_malformed(h, q0(h), &ch);
	memset(last, 0, sizeof(*last));
	return rc;
}

static int c_chain_too_long(struct hctx *h)
{
	struct vu_desc *t = table(h, OFF_TABLE);
	unsigned i, n = 2048;
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_IN, 0);
	t[0] = (struct vu_desc){H(h), 16, VU_DESC_F_NEXT, 1};
	for (i = 1; i < n - 1; i++)
		t[i] = (struct vu_desc){D(h), 512,
					VU_DESC_F_WRITE | VU_DESC_F_NEXT,
					(uint16_t)(i + 1)};
	t[n - 1] = (struct vu_desc){S(h), 1, VU_DESC_F_WRITE, 0};
	if (submit_indirect(h, T(h), n * 16, &ch) != PASS)
		return FAIL;
	return expect_malformed(h, q0(h), &ch);
}

static int c_length_overflow(struct hctx *h)
{
	struct vu_desc d[4] = {{H(h), 16, 0, 0},
			       {D(h), 0x80000000u, VU_DESC_F_WRITE, 0},
			       {D(h), 0x80000000u, VU_DESC_F_WRITE, 0},
			       {S(h), 1, VU_DESC_F_WRITE, 0}};
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_IN, 0);
	if (submit(h, q0(h), d, NULL, 4, &ch) != PASS)
		return FAIL;
	return expect_malformed(h, q0(h), &ch);
}

/* Head index outside the ring: nothing can be completed for it; the
 * request published after it must still be served. */
static int c_head_out_of_range(struct hctx *h)
{
	struct vu_queue *q = q0(h);
	struct vu_req *r = vu_req_get(q);
	struct vu_used_elem e;
	uint16_t bad = q->size;
	int rc;

	vu_queue_publish(q, bad);
	rc = vu_req_submit(r, VU_BLK_T_IN, VALID_SECTOR, 4096, 1, 0);
	if (rc < 0)
		return fail(h, "submit: %s", strerror(-rc));
	vu_queue_kick(q);
	while (vu_queue_wait_used(q, wait_timeout(h), &e) == 1) {
		if (e.id == bad)
			return fail(h, "head %u was completed", bad);
		if (vu_queue_complete(q, &e) != r)
			return fail(h, "unexpected used id %u", e.id);
		if (*r->status != VU_BLK_S_OK)
			return fail(h, "next request: status %u", *r->status);
		if (vu_queue_wait_used(q, 100, &e) == 1)
			return fail(h, "extra used entry id %u", e.id);
		return PASS;
	}
	if (h->qsd)
		return qsd_relaxed(h, "queue stopped");
	return fail(h, "the next request was not completed");
}

/* --- request structure ------------------------------------------------------
 */

static int c_writable_header(struct hctx *h)
{
	struct vu_desc d[3] = {{H(h), 16, VU_DESC_F_WRITE, 0},
			       {D(h), 512, VU_DESC_F_WRITE, 0},
			       {S(h), 1, VU_DESC_F_WRITE, 0}};
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_IN, 0);
	if (submit(h, q0(h), d, NULL, 3, &ch) != PASS)
		return FAIL;
	return expect_malformed(h, q0(h), &ch);
}

static int status_desc(struct hctx *h, uint64_t gpa, uint32_t len,
		       uint16_t flags)
{
	struct vu_desc d[3] = {{H(h), 16, 0, 0},
			       {D(h), 512, VU_DESC_F_WRITE, 0},
			       {gpa, len, flags, 0}};
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_IN, 0);
	if (submit(h, q0(h), d, NULL, 3, &ch) != PASS)
		return FAIL;
	return expect_malformed(h, q0(h), &ch);
}

static int c_readonly_status(struct hctx *h)
{
	return status_desc(h, S(h), 1, 0);
}

static int c_zero_length_status(struct hctx *h)
{
	return status_desc(h, S(h), 0, VU_DESC_F_WRITE);
}

static int c_status_unmapped(struct hctx *h)
{
	return status_desc(h, 0x10, 1, VU_DESC_F_WRITE);
}

static int c_status_past_end(struct hctx *h)
{
	return status_desc(h, vu_mem_end(h->c), 1, VU_DESC_F_WRITE);
}

static int header_desc(struct hctx *h, uint64_t gpa, uint32_t len)
{
	struct vu_desc d[3] = {{gpa, len, 0, 0},
			       {D(h), 512, VU_DESC_F_WRITE, 0},
			       {S(h), 1, VU_DESC_F_WRITE, 0}};
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_IN, 0);
	if (submit(h, q0(h), d, NULL, 3, &ch) != PASS)
		return FAIL;
	return expect_malformed(h, q0(h), &ch);
}

static int c_header_short(struct hctx *h)
{
	return header_desc(h, H(h), 8);
}

/* A header descriptor longer than 16 bytes is still a header. */
static int c_header_long(struct hctx *h)
{
	struct vu_desc d[3] = {{H(h), 64, 0, 0},
			       {D(h), 512, VU_DESC_F_WRITE, 0},
			       {S(h), 1, VU_DESC_F_WRITE, 0}};
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_IN, 0);
	if (submit(h, q0(h), d, NULL, 3, &ch) != PASS)
		return FAIL;
	return expect_status(h, q0(h), &ch, VU_BLK_S_OK, 512 + 1, false);
}

static int c_header_unmapped(struct hctx *h)
{
	return header_desc(h, vu_mem_end(h->c) + 4096, 16);
}

static int c_header_crossing_end(struct hctx *h)
{
	return header_desc(h, vu_mem_end(h->c) - 8, 16);
}

static int c_header_only(struct hctx *h)
{
	struct vu_desc d[1] = {{H(h), 16, 0, 0}};
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_IN, 0);
	if (submit(h, q0(h), d, NULL, 1, &ch) != PASS)
		return FAIL;
	return expect_malformed(h, q0(h), &ch);
}

static int c_read_into_readonly(struct hctx *h)
{
	struct vu_chain ch;

	if (simple(h, VU_BLK_T_IN, 0, D(h), 512, 0, &ch) != PASS)
		return FAIL;
	return expect_malformed(h, q0(h), &ch);
}

/* --- data buffers ------------------------------------------------------------
 */

static int c_read_unmapped(struct hctx *h)
{
	return simple_status(h, VU_BLK_T_IN, 0, vu_mem_end(h->c) + 0x10000,
			     4096, VU_DESC_F_WRITE, VU_BLK_S_IOERR, true);
}

static int c_read_crossing_end(struct hctx *h)
{
	uint64_t gpa = vu_mem_end(h->c) - 2048;
	uint8_t *tail = vu_host(h->c, gpa);
	unsigned i;
	int rc;

	memset(tail, 0xcc, 2048);
	rc = simple_status(h, VU_BLK_T_IN, 0, gpa, 4096, VU_DESC_F_WRITE,
			   VU_BLK_S_IOERR, true);
	for (i = 0; rc == PASS && !h->qsd && i < 2048; i++)
		if (tail[i] != 0xcc)
			return fail(h, "guest memory written before the end");
	return rc;
}

/* A write whose buffer is not in guest memory must not reach the disk. */
static int c_write_unmapped(struct hctx *h)
{
	struct vu_queue *q = q0(h);
	struct vu_req *r = vu_req_get(q);
	uint32_t i;
	int st, rc;

	for (i = 0; i < 4096; i++)
		r->buf[i] = (uint8_t)(i ^ 0x3c);
	st = vu_req_run(r, VU_BLK_T_OUT, DATA_SECTOR, 4096, 1, 0);
	if (st != VU_BLK_S_OK)
		return fail(h, "preparing write: %d", st);
	rc = simple_status(h, VU_BLK_T_OUT, DATA_SECTOR,
			   vu_mem_end(h->c) + 0x10000, 4096, 0, VU_BLK_S_IOERR,
			   true);
	if (rc != PASS || h->ended)
		return rc;
	memset(r->buf, 0, 4096);
	st = vu_req_run(r, VU_BLK_T_IN, DATA_SECTOR, 4096, 1, 0);
	if (st != VU_BLK_S_OK)
		return fail(h, "read back: %d", st);
	for (i = 0; i < 4096; i++)
		if (r->buf[i] != (uint8_t)(i ^ 0x3c))
			return fail(h, "the disk changed at byte %u", i);
	return PASS;
}

static int c_huge_buffer(struct hctx *h)
{
	return simple_status(h, VU_BLK_T_IN, 0, D(h), 0xfffffe00u,
			     VU_DESC_F_WRITE, VU_BLK_S_IOERR, true);
}

static int c_zero_length_data(struct hctx *h)
{
	/* Well-formed but empty: ours answers OK without I/O. */
	return simple_status(h, VU_BLK_T_IN, 0, D(h), 0, VU_DESC_F_WRITE,
			     VU_BLK_S_OK, true);
}

static int c_len_not_multiple(struct hctx *h)
{
	return simple_status(h, VU_BLK_T_IN, 0, D(h), 1000, VU_DESC_F_WRITE,
			     VU_BLK_S_IOERR, false);
}

/* --- sectors
 * --------------------------------------------------------------------- */

static int c_sector_at_capacity(struct hctx *h)
{
	return simple_status(h, VU_BLK_T_IN, h->c->capacity, D(h), 512,
			     VU_DESC_F_WRITE, VU_BLK_S_IOERR, false);
}

static int c_sector_straddles_end(struct hctx *h)
{
	return simple_status(h, VU_BLK_T_IN, h->c->capacity - 1, D(h), 1024,
			     VU_DESC_F_WRITE, VU_BLK_S_IOERR, false);
}

static int c_sector_max(struct hctx *h)
{
	return simple_status(h, VU_BLK_T_IN, UINT64_MAX, D(h), 512,
			     VU_DESC_F_WRITE, VU_BLK_S_IOERR, false);
}

static int c_sector_bytes_wrap(struct hctx *h)
{
	/* sector * 512 wraps to 0 in 64 bits */
	return simple_status(h, VU_BLK_T_IN, 1ull << 55, D(h), 512,
			     VU_DESC_F_WRITE, VU_BLK_S_IOERR, false);
}

static int c_write_past_end(struct hctx *h)
{
	uint8_t cap[8];
	uint64_t v;
	int rc;

	rc = simple_status(h, VU_BLK_T_OUT, h->c->capacity, D(h), 4096, 0,
			   VU_BLK_S_IOERR, false);
	if (rc != PASS)
		return rc;
	if (vu_get_config(h->c, 0, 8, cap) < 0)
		return fail(h, "GET_CONFIG: %s", vu_errmsg(h->c));
	memcpy(&v, cap, 8);
	if (v != h->c->capacity)
		return fail(h, "capacity changed to %llu",
			    (unsigned long long)v);
	return PASS;
}

/* --- request types
 * ------------------------------------------------------------------- */

static int c_get_id_no_buffer(struct hctx *h)
{
	struct vu_desc d[2] = {{H(h), 16, 0, 0}, {S(h), 1, VU_DESC_F_WRITE, 0}};
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_GET_ID, 0);
	if (submit(h, q0(h), d, NULL, 2, &ch) != PASS)
		return FAIL;
	return expect_status(h, q0(h), &ch, VU_BLK_S_IOERR, 1, true);
}

static int c_get_id_short(struct hctx *h)
{
	return simple_status(h, VU_BLK_T_GET_ID, 0, D(h), 10, VU_DESC_F_WRITE,
			     VU_BLK_S_IOERR, true);
}

static int c_get_id_readonly(struct hctx *h)
{
	memset(h->scr + OFF_DATA, 0xcc, 20);
	return simple_status(h, VU_BLK_T_GET_ID, 0, D(h), 20, 0, VU_BLK_S_IOERR,
			     true);
}

static int c_flush_with_sector(struct hctx *h)
{
	struct vu_desc d[2] = {{H(h), 16, 0, 0}, {S(h), 1, VU_DESC_F_WRITE, 0}};
	struct vu_chain ch;

	set_hdr(h, VU_BLK_T_FLUSH, 1);
	if (submit(h, q0(h), d, NULL, 2, &ch) != PASS)
		return FAIL;
	return expect_status(h, q0(h), &ch, VU_BLK_S_IOERR, 1, true);
}

static int c_unknown_type(struct hctx *h)
{
	return simple_status(h, 0x42, 0, D(h), 512, VU_DESC_F_WRITE,
			     VU_BLK_S_UNSUPP, false);
}

static int c_barrier_bit(struct hctx *h)
{
	return simple_status(h, 0x80000000u | VU_BLK_T_IN, 0, D(h), 512,
			     VU_DESC_F_WRITE, VU_BLK_S_UNSUPP, true);
}

static int dwz(struct hctx *h, uint32_t type, uint64_t sector, uint32_t num,
	       uint32_t flags, uint8_t want, unsigned nseg)
{
	unsigned bit =
	    type == VU_BLK_T_DISCARD ? VU_F_DISCARD : VU_F_WRITE_ZEROES;
	struct vu_blk_dwz seg = {sector, num, flags};
	unsigned i;

	if (!(h->c->acked & VU_BIT(bit))) {
		snprintf(h->why, sizeof(h->why), "%s not offered",
			 type == VU_BLK_T_DISCARD ? "DISCARD" : "WRITE_ZEROES");
		return SKIP;
	}
	for (i = 0; i < nseg; i++)
		memcpy(h->scr + OFF_DATA + 16 * i, &seg, 16);
	return simple_status(h, type, 0, D(h), 16 * nseg, 0, want, true);
}

static int c_discard_out_of_range(struct hctx *h)
{
	return dwz(h, VU_BLK_T_DISCARD, h->c->capacity, 8, 0, VU_BLK_S_IOERR,
		   1);
}

static int c_discard_unmap_flag(struct hctx *h)
{
	return dwz(h, VU_BLK_T_DISCARD, DATA_SECTOR, 8, 1, VU_BLK_S_UNSUPP, 1);
}

static int c_write_zeroes_bad_flags(struct hctx *h)
{
	return dwz(h, VU_BLK_T_WRITE_ZEROES, DATA_SECTOR, 8, 0x2,
		   VU_BLK_S_UNSUPP, 1);
}

static int c_write_zeroes_wrap(struct hctx *h)
{
	return dwz(h, VU_BLK_T_WRITE_ZEROES, UINT64_MAX - 3, 8, 0,
		   VU_BLK_S_IOERR, 1);
}

/* --- rings
 * ------------------------------------------------------------------------------
 */

/* avail->idx more than the ring size ahead: that queue stops, the others
 * keep serving. */
static int c_avail_idx_jump(struct hctx *h)
{
	struct vu_queue *q = q0(h);
	struct vu_used_elem e;
	struct vu_req *r;
	int rc;

	vu_queue_set_avail_idx(q, (uint16_t)(q->avail_idx + q->size + 1));
	vu_queue_kick(q);
	if (vu_queue_wait_used(q, 300, &e) == 1 && !h->qsd)
		return fail(h, "used entry id %u after the jump", e.id);
	h->own_check = true;
	h->ended = true;
	if (h->c->nqueues < 2) {
		note(h, "one queue only: recovery checked on a new connection");
		rc = reconnect(h);
		return rc == PASS ? valid_io(h, 0) : rc;
	}
	rc = valid_io(h, 1);
	if (rc != PASS) {
		if (h->qsd)
			return qsd_relaxed(h, "every queue stopped");
		return rc;
	}
	/* Queue 0 itself serves nothing more. */
	r = vu_req_get(q);
	vu_queue_set_avail_idx(q, (uint16_t)(q->avail_idx - q->size - 1));
	if (vu_req_submit(r, VU_BLK_T_IN, VALID_SECTOR, 4096, 1, 0) == 0) {
		vu_queue_kick(q);
		if (vu_queue_wait_used(q, 300, &e) == 1 && !h->qsd)
			return fail(h, "queue 0 still serves");
	}
	rc = reconnect(h);
	return rc == PASS ? valid_io(h, 0) : rc;
}

/* --- vhost-user messages
 * ------------------------------------------------------------------ */

/* The backend must end the connection; a new one must work. */
static int expect_closed(struct hctx *h, bool relaxed)
{
	int rc = vu_peer_closed(h->c, h->a->timeout_ms);

	h->ended = true;
	if (rc == 1)
		return PASS;
	if (h->qsd && relaxed) {
		note(h, "qsd: %s",
		     rc == 0 ? "kept the connection"
			     : "connection state unknown");
		return PASS;
	}
	return fail(h, "%s",
		    rc == 0 ? "the connection stayed open" : vu_errmsg(h->c));
}

static int send_hdr(struct hctx *h, uint32_t code, uint32_t flags,
		    const void *p, uint32_t size, const int *fds, int nfds)
{
	int rc = vu_send(h->c, code, flags, p, size, fds, nfds);

	if (rc < 0 && rc != -ECONNRESET)
		return fail(h, "send: %s", vu_errmsg(h->c));
	return PASS;
}

static int msg_closes(struct hctx *h, uint32_t code, uint32_t flags,
		      const void *p, uint32_t size, bool relaxed)
{
	if (send_hdr(h, code, flags, p, size, NULL, 0) != PASS)
		return FAIL;
	return expect_closed(h, relaxed);
}

static int p_bad_version(struct hctx *h)
{
	return msg_closes(h, VU_GET_FEATURES, 0x2, NULL, 0, true);
}

static int p_reserved_flags(struct hctx *h)
{
	return msg_closes(h, VU_GET_FEATURES, VU_VERSION | 0x100, NULL, 0,
			  true);
}

static int p_oversized_payload(struct hctx *h)
{
	static uint8_t buf[VU_HDR_SIZE + 8192];
	uint32_t hdr[3] = {VU_SET_FEATURES, VU_VERSION, 8192};

	memcpy(buf, hdr, sizeof(hdr));
	if (vu_send_raw(h->c, buf, sizeof(buf), NULL, 0) < 0 && h->c->sock < 0)
		return fail(h, "send: %s", vu_errmsg(h->c));
	return expect_closed(h, true);
}

static int p_unknown_code(struct hctx *h)
{
	return msg_closes(h, 1000, VU_VERSION, NULL, 0, true);
}

static int p_code_zero(struct hctx *h)
{
	return msg_closes(h, 0, VU_VERSION, NULL, 0, true);
}

static int p_unhandled_code(struct hctx *h)
{
	/* SEND_RARP: defined by the protocol, meaningless for a disk */
	uint64_t v = 0;

	return msg_closes(h, 19, VU_VERSION, &v, 8, true);
}

static int p_fd_on_get_features(struct hctx *h)
{
	int fd = vu_eventfd(), rc;

	if (fd < 0)
		return fail(h, "eventfd: %s", strerror(-fd));
	rc = send_hdr(h, VU_GET_FEATURES, VU_VERSION, NULL, 0, &fd, 1);
	close(fd);
	return rc == PASS ? expect_closed(h, true) : rc;
}

static int p_fd_on_set_vring_num(struct hctx *h)
{
	uint32_t s[2] = {0, 128};
	int fd = vu_eventfd(), rc;

	if (fd < 0)
		return fail(h, "eventfd: %s", strerror(-fd));
	rc = send_hdr(h, VU_SET_VRING_NUM, VU_VERSION, s, 8, &fd, 1);
	close(fd);
	return rc == PASS ? expect_closed(h, true) : rc;
}

static int vring_num(struct hctx *h, uint32_t index, uint32_t num)
{
	uint32_t s[2] = {index, num};

	return msg_closes(h, VU_SET_VRING_NUM, VU_VERSION, s, 8, true);
}

static int p_vring_num_too_big(struct hctx *h)
{
	return vring_num(h, 0, 65536);
}

static int p_vring_num_zero(struct hctx *h)
{
	return vring_num(h, 0, 0);
}

static int p_vring_num_not_pow2(struct hctx *h)
{
	return vring_num(h, 0, 100);
}

static int p_vring_index_out_of_range(struct hctx *h)
{
	return vring_num(h, h->c->dev_queues, 128);
}

/* Part of a message, then end of stream: the backend must notice and
 * close its side. */
static int truncated(struct hctx *h, const void *buf, size_t len)
{
	struct timespec ts = {0, 10 * 1000 * 1000};
	char c;
	ssize_t n;
	int i;

	if (vu_send_raw(h->c, buf, len, NULL, 0) < 0)
		return fail(h, "send: %s", vu_errmsg(h->c));
	shutdown(h->c->sock, SHUT_WR);
	h->ended = true;
	for (i = 0; i < h->a->timeout_ms / 10; i++) {
		n = recv(h->c->sock, &c, 1, MSG_DONTWAIT);
		if (n == 0 ||
		    (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
			return PASS;
		nanosleep(&ts, NULL);
	}
	if (h->qsd)
		return qsd_relaxed(h, "kept the connection");
	return fail(h, "the connection stayed open");
}

static int p_truncated_header(struct hctx *h)
{
	uint32_t hdr[3] = {VU_GET_FEATURES, VU_VERSION, 0};

	return truncated(h, hdr, 8);
}

static int p_truncated_payload(struct hctx *h)
{
	uint8_t buf[VU_HDR_SIZE + 4];
	uint32_t hdr[3] = {VU_SET_FEATURES, VU_VERSION, 8};

	memcpy(buf, hdr, sizeof(hdr));
	memset(buf + VU_HDR_SIZE, 0, 4);
	return truncated(h, buf, sizeof(buf));
}

static int p_unknown_features(struct hctx *h)
{
	uint64_t v = h->c->acked | (1ull << 63);

	return msg_closes(h, VU_SET_FEATURES, VU_VERSION, &v, 8, true);
}

static int p_payload_size_mismatch(struct hctx *h)
{
	uint32_t v = 0;

	return msg_closes(h, VU_SET_FEATURES, VU_VERSION, &v, 4, true);
}

static int p_reply_flag(struct hctx *h)
{
	uint64_t v = h->c->acked;

	return msg_closes(h, VU_SET_FEATURES, VU_VERSION | VU_REPLY, &v, 8,
			  true);
}

static int p_mem_table_fd_mismatch(struct hctx *h)
{
	uint8_t msg[8 + 64] = {0};
	uint32_t n = 2;
	uint64_t r[4] = {h->c->reg[0].gpa, h->c->reg[0].size,
			 (uint64_t)(uintptr_t)h->c->reg[0].host, 0};
	int rc;

	memcpy(msg, &n, 4);
	memcpy(msg + 8, r, 32);
	r[0] = h->c->reg[1].gpa;
	r[2] = (uint64_t)(uintptr_t)h->c->reg[1].host;
	memcpy(msg + 40, r, 32);
	rc = send_hdr(h, VU_SET_MEM_TABLE, VU_VERSION, msg, sizeof(msg),
		      &h->c->reg[0].fd, 1);
	return rc == PASS ? expect_closed(h, true) : rc;
}

static int p_mem_table_zero_size(struct hctx *h)
{
	uint8_t msg[8 + 32] = {0};
	uint32_t n = 1;
	uint64_t r[4] = {h->c->reg[0].gpa, 0,
			 (uint64_t)(uintptr_t)h->c->reg[0].host, 0};
	int rc;

	memcpy(msg, &n, 4);
	memcpy(msg + 8, r, 32);
	rc = send_hdr(h, VU_SET_MEM_TABLE, VU_VERSION, msg, sizeof(msg),
		      &h->c->reg[0].fd, 1);
	return rc == PASS ? expect_closed(h, true) : rc;
}

static int p_mem_table_wraps(struct hctx *h)
{
	uint8_t msg[8 + 32] = {0};
	uint32_t n = 1;
	uint64_t r[4] = {UINT64_MAX - 4095, 8192,
			 (uint64_t)(uintptr_t)h->c->reg[0].host, 0};
	int rc;

	memcpy(msg, &n, 4);
	memcpy(msg + 8, r, 32);
	rc = send_hdr(h, VU_SET_MEM_TABLE, VU_VERSION, msg, sizeof(msg),
		      &h->c->reg[0].fd, 1);
	return rc == PASS ? expect_closed(h, true) : rc;
}

static int p_vring_addr_misaligned(struct hctx *h)
{
	struct vu_queue *q = q0(h);
	struct {
		uint32_t index, flags;
		uint64_t desc, used, avail, log;
	} a = {0,
	       0,
	       (uint64_t)(uintptr_t)q->desc + 8,
	       (uint64_t)(uintptr_t)q->used,
	       (uint64_t)(uintptr_t)q->avail,
	       0};

	return msg_closes(h, VU_SET_VRING_ADDR, VU_VERSION, &a, sizeof(a),
			  true);
}

static int p_vring_addr_unmapped(struct hctx *h)
{
	struct vu_queue *q = q0(h);
	struct {
		uint32_t index, flags;
		uint64_t desc, used, avail, log;
	} a = {0,
	       0,
	       0x1000,
	       (uint64_t)(uintptr_t)q->used,
	       (uint64_t)(uintptr_t)q->avail,
	       0};

	return msg_closes(h, VU_SET_VRING_ADDR, VU_VERSION, &a, sizeof(a),
			  true);
}

static int get_config(struct hctx *h, uint32_t offset, uint32_t size,
		      uint32_t total)
{
	uint8_t msg[12 + 64] = {0};
	uint32_t c[3] = {offset, size, 0};

	memcpy(msg, c, sizeof(c));
	return msg_closes(h, VU_GET_CONFIG, VU_VERSION, msg, total, true);
}

static int p_get_config_size_zero(struct hctx *h)
{
	return get_config(h, 0, 0, 12);
}

static int p_get_config_size_mismatch(struct hctx *h)
{
	return get_config(h, 0, 60, 12 + 8);
}

static int p_get_config_offset_wrap(struct hctx *h)
{
	return get_config(h, UINT32_MAX - 3, 8, 12 + 8);
}

static int p_second_set_owner(struct hctx *h)
{
	return msg_closes(h, VU_SET_OWNER, VU_VERSION, NULL, 0, true);
}

static int p_kick_nofd_with_fd(struct hctx *h)
{
	uint64_t v = VU_VRING_NOFD;
	int fd = vu_eventfd(), rc;

	if (fd < 0)
		return fail(h, "eventfd: %s", strerror(-fd));
	rc = send_hdr(h, VU_SET_VRING_KICK, VU_VERSION, &v, 8, &fd, 1);
	close(fd);
	return rc == PASS ? expect_closed(h, true) : rc;
}

static int p_kick_without_fd(struct hctx *h)
{
	uint64_t v = 0;

	return msg_closes(h, VU_SET_VRING_KICK, VU_VERSION, &v, 8, true);
}

static int p_vring_enable_two(struct hctx *h)
{
	uint32_t s[2] = {0, 2};

	return msg_closes(h, VU_SET_VRING_ENABLE, VU_VERSION, s, 8, true);
}

static int p_too_many_fds(struct hctx *h)
{
	uint64_t v = 0;
	int fds[8], i, rc;

	for (i = 0; i < 8; i++)
		fds[i] = h->c->reg[0].fd;
	rc = send_hdr(h, VU_SET_VRING_CALL, VU_VERSION, &v, 8, fds, 8);
	return rc == PASS ? expect_closed(h, true) : rc;
}

static int p_need_reply_error_acked(struct hctx *h)
{
	/* A rejected request with NEED_REPLY: ack 1 (or nothing) and the end
	 * of the connection. */
	uint32_t s[2] = {h->c->dev_queues + 5, 1};

	return msg_closes(h, VU_SET_VRING_ENABLE, VU_VERSION | VU_NEED_REPLY, s,
			  8, true);
}

static const struct hcase cases[] = {
    /* descriptor chains: used length 0, no status byte */
    {"descriptor loop of two in the ring", c_loop_two},
    {"descriptor pointing at itself", c_loop_self},
    {"loop back into the middle of a chain", c_loop_middle},
    {"descriptor loop in an indirect table", c_loop_indirect},
    {"next index = ring size", c_next_out_of_range},
    {"next index 0xffff", c_next_ffff},
    {"indirect next index past the table", c_indirect_next_out_of_range},
    {"nested indirect table", c_nested_indirect},
    {"indirect table of 24 bytes", c_indirect_len_24},
    {"indirect table of 0 bytes", c_indirect_len_0},
    {"indirect table outside guest memory", c_indirect_unmapped},
    {"indirect table crossing the end of memory", c_indirect_crossing_end},
    {"chain of 2048 descriptors (longer than the ring)", c_chain_too_long},
    {"data lengths overflowing 32 bits", c_length_overflow},
    {"avail ring head index = ring size (dropped)", c_head_out_of_range},
    /* request structure */
    {"device-writable header", c_writable_header},
    {"read-only status descriptor", c_readonly_status},
    {"zero-length status descriptor", c_zero_length_status},
    {"status at guest address 0x10 (unmapped)", c_status_unmapped},
    {"status just past the end of memory", c_status_past_end},
    {"8-byte header", c_header_short},
    {"64-byte header descriptor (OK: 16 bytes used)", c_header_long},
    {"header outside guest memory", c_header_unmapped},
    {"header crossing the end of memory", c_header_crossing_end},
    {"header only, no status descriptor", c_header_only},
    {"read into a device-readable buffer", c_read_into_readonly},
    /* data buffers: IOERR */
    {"read into unmapped memory", c_read_unmapped},
    {"read into a buffer crossing the end of memory", c_read_crossing_end},
    {"write from unmapped memory leaves the disk as it was", c_write_unmapped},
    {"data buffer of 0xfffffe00 bytes", c_huge_buffer},
    {"zero-length data buffer (OK, no I/O)", c_zero_length_data},
    {"read of 1000 bytes (not a multiple of 512)", c_len_not_multiple},
    /* sectors: IOERR */
    {"read at sector = capacity", c_sector_at_capacity},
    {"read straddling the end of the disk", c_sector_straddles_end},
    {"read at sector 2^64-1", c_sector_max},
    {"read at sector 2^55 (byte offset wraps)", c_sector_bytes_wrap},
    {"write past the end does not grow the disk", c_write_past_end},
    /* request types */
    {"GET_ID without a data buffer", c_get_id_no_buffer},
    {"GET_ID into 10 bytes", c_get_id_short},
    {"GET_ID into a device-readable buffer", c_get_id_readonly},
    {"FLUSH with sector 1", c_flush_with_sector},
    {"unknown request type 0x42 (UNSUPP)", c_unknown_type},
    {"legacy barrier bit in the type (UNSUPP)", c_barrier_bit},
    {"DISCARD past the end", c_discard_out_of_range},
    {"DISCARD with the unmap flag (UNSUPP)", c_discard_unmap_flag},
    {"WRITE_ZEROES with unknown flags (UNSUPP)", c_write_zeroes_bad_flags},
    {"WRITE_ZEROES with a wrapping sector range", c_write_zeroes_wrap},
    /* rings */
    {"avail idx jumps past the ring (queue stops, others serve)",
     c_avail_idx_jump},
    /* vhost-user messages: the connection ends, a new one works */
    {"message with protocol version 2", p_bad_version},
    {"message with a reserved flag bit", p_reserved_flags},
    {"payload of 8192 bytes", p_oversized_payload},
    {"unknown request code 1000", p_unknown_code},
    {"request code 0", p_code_zero},
    {"SEND_RARP (not for a disk)", p_unhandled_code},
    {"fd attached to GET_FEATURES", p_fd_on_get_features},
    {"fd attached to SET_VRING_NUM", p_fd_on_set_vring_num},
    {"SET_VRING_NUM 65536", p_vring_num_too_big},
    {"SET_VRING_NUM 0", p_vring_num_zero},
    {"SET_VRING_NUM 100 (not a power of two)", p_vring_num_not_pow2},
    {"SET_VRING_NUM for a queue that does not exist",
     p_vring_index_out_of_range},
    {"truncated header", p_truncated_header},
    {"truncated payload", p_truncated_payload},
    {"SET_FEATURES with an unknown bit", p_unknown_features},
    {"SET_FEATURES with a 4-byte payload", p_payload_size_mismatch},
    {"request with the REPLY flag", p_reply_flag},
    {"SET_MEM_TABLE of 2 regions with 1 fd", p_mem_table_fd_mismatch},
    {"SET_MEM_TABLE region of size 0", p_mem_table_zero_size},
    {"SET_MEM_TABLE region wrapping 2^64", p_mem_table_wraps},
    {"SET_VRING_ADDR with a misaligned descriptor table",
     p_vring_addr_misaligned},
    {"SET_VRING_ADDR outside the memory table", p_vring_addr_unmapped},
    {"GET_CONFIG of size 0", p_get_config_size_zero},
    {"GET_CONFIG size and payload disagree", p_get_config_size_mismatch},
    {"GET_CONFIG offset + size wraps", p_get_config_offset_wrap},
    {"second SET_OWNER", p_second_set_owner},
    {"SET_VRING_KICK no-fd flag with an fd", p_kick_nofd_with_fd},
    {"SET_VRING_KICK without fd or no-fd flag", p_kick_without_fd},
    {"SET_VRING_ENABLE 2", p_vring_enable_two},
    {"8 fds on SET_VRING_CALL", p_too_many_fds},
    {"rejected request with NEED_REPLY", p_need_reply_error_acked},
};

int vc_hostile(const struct vc_args *a)
{
	struct hctx h = {.a = a, .qsd = a->peer_qsd};
	size_t i;
	int rc;

	rc = vu_client_new(&h.c, a->socket, MEM_SIZE, 2);
	if (rc < 0) {
		fprintf(stderr, "vhost-client: guest memory: %s\n",
			strerror(-rc));
		return 1;
	}
	h.c->timeout_ms = a->timeout_ms;
	h.o = (struct vu_opts){
	    .want_features =
		VU_BIT(VU_F_VERSION_1) | VU_BIT(VU_F_PROTOCOL_FEATURES) |
		VU_BIT(VU_F_INDIRECT_DESC) | VU_BIT(VU_F_EVENT_IDX) |
		VU_BIT(VU_F_MQ) | VU_BIT(VU_F_FLUSH) | VU_BIT(VU_F_BLK_SIZE) |
		VU_BIT(VU_F_DISCARD) | VU_BIT(VU_F_WRITE_ZEROES) |
		VU_BIT(VU_F_SEG_MAX) | VU_BIT(VU_F_SIZE_MAX),
	    .add_mem_reg = true,
	    .nqueues = 0,
	    .slots = 4,
	    .slot_bytes = 65536,
	};
	if (reconnect(&h) != PASS) {
		printf("not ok 1 - set up: %s\n", h.why);
		printf("0 passed, 1 failed\n");
		vu_client_free(h.c);
		return 1;
	}
	if (!h.c->have_config || h.c->capacity < 8192) {
		printf("not ok 1 - set up: capacity unknown or below 4 MiB\n");
		printf("0 passed, 1 failed\n");
		vu_client_free(h.c);
		return 1;
	}
	if (h.c->nqueues > 2) {
		/* two queues are enough; fewer threads to wake up */
		h.o.nqueues = 2;
		h.connected = false;
	}
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_case(&h, &cases[i]);
	vu_client_free(h.c);
	return vc_summary(&h.r);
}
