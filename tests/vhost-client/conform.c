/* vhost-client conform: protocol and feature conformance of a
 * vhost-user-blk backend, and data round trips on every queue. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vc.h"

#define MEM_SIZE    (48ull << 20)
#define TEST_SECTOR 2048 /* queue q writes at TEST_SECTOR + q * 1024 */
#define MIN_SECTORS 32768

struct conf {
	const struct vc_args *a;
	struct vc_report r;
	struct vu_client *c;
	struct vu_opts o;
	char why[256];
};

static const uint64_t want_all =
    VU_BIT(VU_F_SIZE_MAX) | VU_BIT(VU_F_SEG_MAX) | VU_BIT(VU_F_BLK_SIZE) |
    VU_BIT(VU_F_FLUSH) | VU_BIT(VU_F_TOPOLOGY) | VU_BIT(VU_F_CONFIG_WCE) |
    VU_BIT(VU_F_MQ) | VU_BIT(VU_F_DISCARD) | VU_BIT(VU_F_WRITE_ZEROES) |
    VU_BIT(VU_F_INDIRECT_DESC) | VU_BIT(VU_F_EVENT_IDX) |
    VU_BIT(VU_F_PROTOCOL_FEATURES) | VU_BIT(VU_F_VERSION_1);

/* Fills len bytes with a pattern that names the sector and the seed. */
static void pattern(uint8_t *buf, uint32_t len, uint64_t sector, uint32_t seed)
{
	uint32_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		uint64_t v = ((sector + i / 512) << 20) ^
			     ((uint64_t)seed << 44) ^ (i % 512) ^
			     0x5a5a000000000000ull;

		memcpy(buf + i, &v, 8);
	}
}

static int check_pattern(const uint8_t *buf, uint32_t len, uint64_t sector,
			 uint32_t seed, char *why, size_t n)
{
	uint8_t *want = malloc(len);
	uint32_t i;
	int rc = 0;

	if (!want)
		return -ENOMEM;
	pattern(want, len, sector, seed);
	for (i = 0; i < len; i++) {
		if (buf[i] != want[i]) {
			snprintf(why, n,
				 "data mismatch at byte %u (sector %llu): got "
				 "0x%02x, want 0x%02x",
				 i, (unsigned long long)(sector + i / 512),
				 buf[i], want[i]);
			rc = -1;
			break;
		}
	}
	free(want);
	return rc;
}

static void check(struct conf *k, bool cond, const char *name, const char *note)
{
	if (cond)
		vc_ok(&k->r, name, note);
	else
		vc_not_ok(&k->r, name, "%s", k->why[0] ? k->why : "failed");
	k->why[0] = 0;
}

/* Runs one request; 0 when its status is OK, else -1 with k->why set. */
static int run(struct conf *k, struct vu_req *r, uint32_t type, uint64_t sector,
	       uint32_t len, unsigned nseg, unsigned flags)
{
	int st = vu_req_run(r, type, sector, len, nseg, flags);

	if (st < 0) {
		snprintf(k->why, sizeof(k->why), "%s", vu_errmsg(k->c));
		return -1;
	}
	if (st != VU_BLK_S_OK) {
		snprintf(k->why, sizeof(k->why), "status %d", st);
		return -1;
	}
	return 0;
}

static unsigned ind_flag(struct conf *k)
{
	return (k->c->acked & VU_BIT(VU_F_INDIRECT_DESC)) ? VU_REQ_INDIRECT : 0;
}

/* Write len bytes at sector with a pattern, read them back and compare. */
static int roundtrip(struct conf *k, struct vu_queue *q, uint64_t sector,
		     uint32_t len, uint32_t seed)
{
	struct vu_req *r = vu_req_get(q);

	if (!r) {
		snprintf(k->why, sizeof(k->why), "no free request slot");
		return -1;
	}
	pattern(r->buf, len, sector, seed);
	if (run(k, r, VU_BLK_T_OUT, sector, len, 2, 0) < 0)
		return -1;
	memset(r->buf, 0, len);
	if (run(k, r, VU_BLK_T_IN, sector, len, 2, ind_flag(k)) < 0)
		return -1;
	return check_pattern(r->buf, len, sector, seed, k->why, sizeof(k->why));
}

static int setup(struct conf *k, const char *name)
{
	int rc = vu_setup(k->c, &k->o, 10000);

	if (rc < 0)
		snprintf(k->why, sizeof(k->why), "%s", vu_errmsg(k->c));
	check(k, rc == 0, name, NULL);
	return rc;
}

static void check_features(struct conf *k)
{
	struct vu_client *c = k->c;
	uint64_t f = c->features, pf = c->proto_features, v;
	uint8_t cap[8];
	char note[128];

	snprintf(note, sizeof(note), "features 0x%llx", (unsigned long long)f);
	snprintf(k->why, sizeof(k->why), "features 0x%llx",
		 (unsigned long long)f);
	check(k,
	      (f & VU_BIT(VU_F_VERSION_1)) &&
		  (f & VU_BIT(VU_F_PROTOCOL_FEATURES)),
	      "GET_FEATURES offers VERSION_1 and PROTOCOL_FEATURES", note);
	snprintf(k->why, sizeof(k->why), "features 0x%llx",
		 (unsigned long long)f);
	check(k,
	      !(f & (VU_BIT(VU_F_RING_PACKED) | VU_BIT(VU_F_ACCESS_PLATFORM) |
		     VU_BIT(VU_F_RO))),
	      "no packed ring, ACCESS_PLATFORM or read-only offered", NULL);
	snprintf(k->why, sizeof(k->why), "features 0x%llx",
		 (unsigned long long)f);
	check(k,
	      (f & VU_BIT(VU_F_FLUSH)) && (f & VU_BIT(VU_F_BLK_SIZE)) &&
		  (f & VU_BIT(VU_F_INDIRECT_DESC)) &&
		  (f & VU_BIT(VU_F_EVENT_IDX)),
	      "FLUSH, BLK_SIZE, INDIRECT_DESC, EVENT_IDX offered", NULL);
	if (!k->a->peer_qsd) {
		snprintf(k->why, sizeof(k->why), "features 0x%llx",
			 (unsigned long long)f);
		check(k,
		      !(f &
			(VU_BIT(VU_F_LOG_ALL) | VU_BIT(VU_F_NOTIFY_ON_EMPTY))),
		      "no LOG_ALL or NOTIFY_ON_EMPTY offered", NULL);
	}
	snprintf(note, sizeof(note), "protocol features 0x%llx",
		 (unsigned long long)pf);
	snprintf(k->why, sizeof(k->why), "%s", note);
	check(k,
	      (pf & VU_BIT(VU_PF_MQ)) && (pf & VU_BIT(VU_PF_REPLY_ACK)) &&
		  (pf & VU_BIT(VU_PF_CONFIG)),
	      "protocol features offer MQ, REPLY_ACK and CONFIG", note);
	snprintf(k->why, sizeof(k->why), "config read failed");
	check(k, c->have_config, "GET_CONFIG of 60 bytes", NULL);
	if (!c->have_config)
		return;
	snprintf(note, sizeof(note), "%llu sectors",
		 (unsigned long long)c->capacity);
	snprintf(k->why, sizeof(k->why), "capacity %llu sectors, need %u",
		 (unsigned long long)c->capacity, MIN_SECTORS);
	check(k, c->capacity >= MIN_SECTORS, "config capacity", note);
	snprintf(k->why, sizeof(k->why), "blk_size %llu",
		 (unsigned long long)vu_config_get(c, 20, 4));
	check(k,
	      !(c->acked & VU_BIT(VU_F_BLK_SIZE)) ||
		  vu_config_get(c, 20, 4) == 512,
	      "config blk_size is 512", NULL);
	if (c->acked & VU_BIT(VU_F_MQ)) {
		snprintf(k->why, sizeof(k->why),
			 "config num_queues %llu, GET_QUEUE_NUM %u",
			 (unsigned long long)vu_config_get(c, 34, 2),
			 c->dev_queues);
		snprintf(note, sizeof(note), "%u queues", c->dev_queues);
		check(k, vu_config_get(c, 34, 2) == c->dev_queues,
		      "config num_queues matches GET_QUEUE_NUM", note);
	}
	if (c->acked & VU_BIT(VU_F_SEG_MAX)) {
		snprintf(k->why, sizeof(k->why), "seg_max %llu",
			 (unsigned long long)vu_config_get(c, 12, 4));
		check(k, vu_config_get(c, 12, 4) >= 1, "config seg_max >= 1",
		      NULL);
	}
	memset(cap, 0, sizeof(cap));
	if (vu_get_config(c, 0, 8, cap) < 0)
		snprintf(k->why, sizeof(k->why), "%s", vu_errmsg(c));
	else
		snprintf(k->why, sizeof(k->why), "capacity differs");
	check(k, !memcmp(cap, c->config, 8),
	      "GET_CONFIG of 8 bytes returns the capacity", NULL);
	if (c->proto_acked & VU_BIT(VU_PF_CONFIGURE_MEM_SLOTS)) {
		int rc = vu_get_u64(c, VU_GET_MAX_MEM_SLOTS, &v);

		snprintf(note, sizeof(note), "%llu slots",
			 (unsigned long long)v);
		if (rc < 0)
			snprintf(k->why, sizeof(k->why), "%s", vu_errmsg(c));
		else
			snprintf(k->why, sizeof(k->why), "%llu slots",
				 (unsigned long long)v);
		check(k, rc == 0 && v >= 2, "GET_MAX_MEM_SLOTS >= 2", note);
	}
}

/* Used length of a completed request: the bytes written to device-writable
 * buffers, data and status byte (qemu-storage-daemon agrees). */
static void check_used_len(struct conf *k, struct vu_req *r, uint32_t want,
			   const char *name)
{
	snprintf(k->why, sizeof(k->why), "used len %u, want %u", r->used_len,
		 want);
	check(k, r->used_len == want, name, NULL);
}

static void check_queue_data(struct conf *k, struct vu_queue *q)
{
	uint64_t sector = TEST_SECTOR + q->idx * 1024ull;
	struct vu_req *r = vu_req_get(q);
	char name[128];
	int rc;

	snprintf(name, sizeof(name),
		 "queue %u: write 64 KiB in 4 direct segments", q->idx);
	pattern(r->buf, 65536, sector, 1 + q->idx);
	rc = run(k, r, VU_BLK_T_OUT, sector, 65536, 4, 0);
	check(k, rc == 0, name, NULL);
	if (rc == 0) {
		snprintf(name, sizeof(name), "queue %u: used len of a write",
			 q->idx);
		check_used_len(k, r, 1, name);
	}
	snprintf(name, sizeof(name), "queue %u: read back in 3 %s segments",
		 q->idx, ind_flag(k) ? "indirect" : "direct");
	memset(r->buf, 0, 65536);
	rc = run(k, r, VU_BLK_T_IN, sector, 65536, 3, ind_flag(k));
	if (rc == 0)
		rc = check_pattern(r->buf, 65536, sector, 1 + q->idx, k->why,
				   sizeof(k->why));
	check(k, rc == 0, name, NULL);
	if (rc == 0) {
		snprintf(name, sizeof(name), "queue %u: used len of a read",
			 q->idx);
		check_used_len(k, r, 65536 + 1, name);
	}
}

/* Every slot of every queue in flight at once, one kick per queue. */
static void check_all_in_flight(struct conf *k)
{
	struct vu_client *c = k->c;
	unsigned qi, i, done = 0, total = 0, bad = 0;
	struct vu_used_elem e;
	int rc = 0;

	for (qi = 0; qi < c->nqueues && rc == 0; qi++) {
		struct vu_queue *q = &c->q[qi];

		for (i = 0; i < q->nreqs && rc == 0; i++) {
			rc = vu_req_submit(&q->reqs[i], VU_BLK_T_IN,
					   TEST_SECTOR + 8ull * i, 4096, 1,
					   ind_flag(k));
			total += rc == 0;
		}
		if (rc == 0)
			rc = vu_queue_kick(q);
	}
	for (qi = 0; qi < c->nqueues; qi++) {
		struct vu_queue *q = &c->q[qi];

		for (i = 0; i < q->nreqs; i++) {
			struct vu_req *r;

			if (!q->reqs[i].inflight)
				continue;
			if (vu_queue_wait_used(q, k->a->timeout_ms, &e) != 1)
				break;
			r = vu_queue_complete(q, &e);
			done++;
			bad += !r || *r->status != VU_BLK_S_OK;
			i = (unsigned)-1; /* rescan from the first slot */
		}
	}
	snprintf(k->why, sizeof(k->why),
		 "submit rc %d, %u of %u completed, %u bad", rc, done, total,
		 bad);
	check(k, rc == 0 && done == total && !bad,
	      "every request slot of every queue in flight at once", NULL);
}

static void check_queue0_extras(struct conf *k)
{
	struct vu_client *c = k->c;
	struct vu_queue *q = &c->q[0];
	struct vu_req *r = vu_req_get(q);
	struct vu_used_elem e;
	char note[128];
	uint64_t cnt;
	int rc;

	check(k, run(k, r, VU_BLK_T_FLUSH, 0, 0, 0, 0) == 0, "FLUSH", NULL);

	memset(r->buf, 0xee, 64);
	rc = run(k, r, VU_BLK_T_GET_ID, 0, VU_BLK_ID_BYTES, 1, 0);
	snprintf(note, sizeof(note), "id \"%.20s\"", (char *)r->buf);
	check(k, rc == 0, "GET_ID with a 20-byte buffer", note);
	if (rc == 0)
		check_used_len(k, r, VU_BLK_ID_BYTES + 1, "used len of GET_ID");
	memset(r->buf, 0xee, 64);
	rc = run(k, r, VU_BLK_T_GET_ID, 0, 64, 1, 0);
	if (rc == 0 && r->buf[VU_BLK_ID_BYTES] != 0xee) {
		snprintf(k->why, sizeof(k->why),
			 "byte 20 of a 64-byte buffer was written");
		rc = -1;
	}
	check(k, rc == 0, "GET_ID writes at most 20 bytes", NULL);

	if (c->have_config) {
		rc = run(k, r, VU_BLK_T_IN, c->capacity - 1, 512, 1, 0);
		check(k, rc == 0, "read of the last sector", NULL);
	}

	/* A buffer across the boundary of the two memory regions. */
	if (c->nregions == 2 && c->brk + 16384 < c->reg[1].gpa) {
		uint64_t gpa = c->reg[1].gpa - 4096;
		uint8_t *a = vu_host(c, gpa), *b = vu_host(c, c->reg[1].gpa);
		struct vu_desc d[3] = {
		    {r->hdr_gpa, 16, 0, 0},
		    {gpa, 8192, 0, 0},
		    {r->status_gpa, 1, VU_DESC_F_WRITE, 0},
		};
		struct vu_chain ch;

		pattern(r->buf, 8192, TEST_SECTOR + 512, 9);
		memcpy(a, r->buf, 4096);
		memcpy(b, r->buf + 4096, 4096);
		r->hdr->type = VU_BLK_T_OUT;
		r->hdr->sector = TEST_SECTOR + 512;
		*r->status = 0xff;
		rc = vu_chain_add(q, d, NULL, 3, &ch);
		if (rc == 0) {
			vu_queue_publish(q, ch.head);
			vu_queue_kick(q);
			rc = vu_queue_wait_used(q, k->a->timeout_ms, &e) == 1 &&
				     e.id == ch.head &&
				     *r->status == VU_BLK_S_OK
				 ? 0
				 : -1;
			vu_chain_put(q, &ch);
		}
		if (rc == 0) {
			memset(r->buf, 0, 8192);
			rc = run(k, r, VU_BLK_T_IN, TEST_SECTOR + 512, 8192, 1,
				 0);
		}
		if (rc == 0)
			rc = check_pattern(r->buf, 8192, TEST_SECTOR + 512, 9,
					   k->why, sizeof(k->why));
		check(k, rc == 0,
		      "write from a buffer spanning two memory regions", NULL);
	}

	/* The call eventfd is signalled when a completion is wanted. */
	while (read(q->call_fd, &cnt, sizeof(cnt)) == sizeof(cnt))
		;
	vu_queue_want_irq(q, true);
	rc = vu_req_submit(r, VU_BLK_T_IN, TEST_SECTOR, 4096, 1, 0);
	if (rc == 0)
		rc = vu_queue_kick(q);
	if (rc == 0) {
		struct pollfd p = {.fd = q->call_fd, .events = POLLIN};

		rc = poll(&p, 1, k->a->timeout_ms) == 1 ? 0 : -ETIMEDOUT;
		snprintf(k->why, sizeof(k->why), "no call within %d ms",
			 k->a->timeout_ms);
	}
	while (vu_queue_wait_used(q, k->a->timeout_ms, &e) == 1)
		if (vu_queue_complete(q, &e) == r)
			break;
	check(k, rc == 0, "call eventfd signalled on completion", NULL);

	if (c->acked & VU_BIT(VU_F_WRITE_ZEROES)) {
		struct vu_blk_dwz *s = (struct vu_blk_dwz *)r->buf;
		uint64_t sec = TEST_SECTOR + 600;
		unsigned i;

		pattern(r->buf, 4096, sec, 3);
		rc = run(k, r, VU_BLK_T_OUT, sec, 4096, 1, 0);
		*s = (struct vu_blk_dwz){sec, 8, 0};
		if (rc == 0)
			rc = run(k, r, VU_BLK_T_WRITE_ZEROES, 0, sizeof(*s), 1,
				 0);
		memset(r->buf, 0xee, 4096);
		if (rc == 0)
			rc = run(k, r, VU_BLK_T_IN, sec, 4096, 1, 0);
		for (i = 0; rc == 0 && i < 4096; i++) {
			if (r->buf[i]) {
				snprintf(k->why, sizeof(k->why),
					 "byte %u is 0x%02x after WRITE_ZEROES",
					 i, r->buf[i]);
				rc = -1;
			}
		}
		check(k, rc == 0, "WRITE_ZEROES reads back as zeroes", NULL);
	}
	if (c->acked & VU_BIT(VU_F_DISCARD)) {
		struct vu_blk_dwz *s = (struct vu_blk_dwz *)r->buf;

		*s = (struct vu_blk_dwz){TEST_SECTOR + 608, 8, 0};
		check(k, run(k, r, VU_BLK_T_DISCARD, 0, sizeof(*s), 1, 0) == 0,
		      "DISCARD of 8 sectors", NULL);
	}
}

/* GET_VRING_BASE stops queue 0 and tells where it stopped; the queue then
 * restarts from there (what a VMM does around a migration or a stop). */
static void check_stop_restart(struct conf *k)
{
	struct vu_client *c = k->c;
	struct vu_queue *q = &c->q[0];
	struct {
		uint32_t index, flags;
		uint64_t desc, used, avail, log;
	} addr = {0,
		  0,
		  (uint64_t)(uintptr_t)q->desc,
		  (uint64_t)(uintptr_t)q->used,
		  (uint64_t)(uintptr_t)q->avail,
		  0};
	uint32_t base = 0;
	char note[64];
	int rc;

	rc = vu_get_vring_base(c, 0, &base);
	if (rc < 0)
		snprintf(k->why, sizeof(k->why), "%s", vu_errmsg(c));
	else
		snprintf(k->why, sizeof(k->why), "base %u, avail idx %u", base,
			 q->avail_idx);
	snprintf(note, sizeof(note), "base %u", base);
	check(k, rc == 0 && base == q->avail_idx,
	      "GET_VRING_BASE returns the next avail index", note);
	if (rc < 0)
		return;
	close(q->kick_fd);
	close(q->call_fd);
	q->kick_fd = -1;
	q->call_fd = -1;
	rc = vu_set_state(c, VU_SET_VRING_BASE, 0, base);
	if (rc == 0)
		rc = vu_set(c, VU_SET_VRING_ADDR, &addr, sizeof(addr), NULL, 0);
	if (rc == 0) {
		q->kick_fd = vu_eventfd();
		q->call_fd = vu_eventfd();
		rc = vu_set(c, VU_SET_VRING_CALL, &(uint64_t){0},
			    sizeof(uint64_t), &q->call_fd, 1);
	}
	if (rc == 0)
		rc = vu_set(c, VU_SET_VRING_KICK, &(uint64_t){0},
			    sizeof(uint64_t), &q->kick_fd, 1);
	if (rc == 0 && (c->acked & VU_BIT(VU_F_PROTOCOL_FEATURES)))
		rc = vu_set_state(c, VU_SET_VRING_ENABLE, 0, 1);
	if (rc < 0)
		snprintf(k->why, sizeof(k->why), "%s", vu_errmsg(c));
	if (rc == 0)
		rc = roundtrip(k, q, TEST_SECTOR + 700, 4096, 11);
	check(k, rc == 0, "queue 0 serves again after SET_VRING_BASE", NULL);
}

/* Data written in the first connection reads back in a new one. */
static void check_persisted(struct conf *k, const char *name)
{
	struct vu_queue *q = &k->c->q[0];
	struct vu_req *r = vu_req_get(q);
	uint64_t sector = TEST_SECTOR;
	int rc;

	memset(r->buf, 0, 65536);
	rc = run(k, r, VU_BLK_T_IN, sector, 65536, 1, 0);
	if (rc == 0)
		rc = check_pattern(r->buf, 65536, sector, 1, k->why,
				   sizeof(k->why));
	check(k, rc == 0, name, NULL);
}

static void reconnect_variant(struct conf *k, const char *name,
			      const struct vu_opts *o)
{
	char full[160];
	int rc;

	k->o = *o;
	snprintf(full, sizeof(full), "reconnect %s", name);
	if (setup(k, full) < 0)
		return;
	snprintf(full, sizeof(full), "%s: data of the first connection", name);
	check_persisted(k, full);
	snprintf(full, sizeof(full), "%s: write/read round trip", name);
	rc = roundtrip(k, &k->c->q[k->c->nqueues - 1], TEST_SECTOR + 800, 16384,
		       21);
	check(k, rc == 0, full, NULL);
}

int vc_conform(const struct vc_args *a)
{
	struct conf k = {.a = a};
	struct vu_opts base = {
	    .want_features = want_all,
	    .add_mem_reg = true,
	    .slots = 8,
	    .slot_bytes = 65536,
	};
	struct vu_opts o;
	unsigned i;
	int rc;

	rc = vu_client_new(&k.c, a->socket, MEM_SIZE, 2);
	if (rc < 0) {
		fprintf(stderr, "vhost-client: guest memory: %s\n",
			strerror(-rc));
		return 1;
	}
	k.c->timeout_ms = a->timeout_ms;
	k.o = base;
	if (setup(&k, "handshake, memory table (+ADD_MEM_REG), all queues") < 0)
		goto out;
	check_features(&k);
	if (!k.c->have_config || k.c->capacity < MIN_SECTORS)
		goto out;
	for (i = 0; i < k.c->nqueues; i++)
		check_queue_data(&k, &k.c->q[i]);
	check_all_in_flight(&k);
	check_queue0_extras(&k);
	check_stop_restart(&k);

	reconnect_variant(&k, "with the same features", &base);
	o = base;
	o.want_features &=
	    ~(VU_BIT(VU_F_EVENT_IDX) | VU_BIT(VU_F_INDIRECT_DESC));
	o.add_mem_reg = false;
	reconnect_variant(&k, "without EVENT_IDX/INDIRECT, one SET_MEM_TABLE",
			  &o);
	o = base;
	o.no_reply_ack = true;
	reconnect_variant(&k, "without REPLY_ACK", &o);
	o = base;
	o.no_protocol_features = true;
	reconnect_variant(&k, "without PROTOCOL_FEATURES (rings start enabled)",
			  &o);
	o = base;
	o.nqueues = 1;
	o.slots = 2;
	o.ring_size = a->peer_qsd ? 1024 : 32768;
	reconnect_variant(&k,
			  a->peer_qsd ? "with a 1024-entry ring"
				      : "with a 32768-entry ring",
			  &o);
out:
	vu_client_free(k.c);
	return vc_summary(&k.r);
}
