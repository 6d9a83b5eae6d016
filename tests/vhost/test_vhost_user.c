/* vhost-user control plane (backends.md §3.1-§3.9; §10 criteria 8, 9,
 * 14-16): crafted messages over a socketpair against a memory device: replies,
 * REPLY_ACK, memory tables with memfds, ring set-up, every rejection path
 * (which must end the connection, and only it), descriptor hygiene
 * (/proc/self/fd is counted around every test), then the listening socket
 * and the accept loop. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "bdev/mem.h"
#include "vhost/server.h"
#include "vhost/vhost_user.h"

#define TIMEOUT_MS    5000
#define BASE_FEATURES 0x170001E46ull
#define PF_ALL	      UB_VU_PROTOCOL_FEATURES
#define NEED_REPLY    (UB_VU_VERSION | UB_VU_FLAG_NEED_REPLY)
#define V1	      UB_VU_VERSION

/* Guest memory used by the ring tests: one memfd, mapped here too. */
#define MEM_SIZE  (64 * 1024)
#define USER_BASE 0x7f0000000000ull
#define DESC_GPA  0x1000ull
#define AVAIL_GPA 0x2000ull
#define USED_GPA  0x3000ull

struct srv {
	int peer;    /* the test's end */
	int sock;    /* the server's end, closed by the server thread */
	int stop;    /* eventfd: stop request */
	bool direct; /* ub_vu_serve over dev, else ub_vhost_serve_conn */
	struct ub_vhost_dev *dev; /* direct mode: owned by the test */
	struct ub_vu_conn conn;
	pthread_t th;
	int rc;
	struct ub_err err;
};

struct fixture {
	struct ub_bdev *bdev;
	struct ub_vhost_params params;
	int nfds_before;
	struct srv s;
	int memfd;
	unsigned char *mem; /* the test's mapping of memfd */
};

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f)); /* owned by *state */
	struct ub_err err = {{0}};

	if (!f)
		return -1;
	f->nfds_before = count_fds();
	if (ub_mem_bdev_create(8 * 512, &f->bdev, &err)) {
		free(f);
		return -1;
	}
	f->params.num_queues = 2;
	f->params.queue_size = 64;
	f->params.seg_size_max = 65536;
	f->params.seg_count_max = 4;
	f->params.poll_timeout_us = 100;
	memcpy(f->params.device_id, "ubiblk", 6);
	f->memfd = -1;
	f->s.peer = -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	int n, before;

	if (f->mem)
		munmap(f->mem, MEM_SIZE);
	if (f->memfd >= 0)
		close(f->memfd);
	ub_bdev_put(f->bdev);
	n = count_fds();
	before = f->nfds_before;
	free(f);
	/* Every descriptor the server received or created is gone. */
	if (n != before) {
		fprintf(stderr, "descriptor leak: %d open, %d before\n", n,
			before);
		return -1;
	}
	return 0;
}

/* ---- server thread ------------------------------------------------------ */

static void *srv_main(void *arg)
{
	struct srv *s = arg;
	struct fixture *f =
	    (struct fixture *)((char *)s - offsetof(struct fixture, s));

	if (s->direct)
		s->rc = ub_vu_serve(&s->conn, &s->err);
	else
		s->rc = ub_vhost_serve_conn(s->sock, &f->params, f->bdev,
					    s->stop, &s->err);
	close(s->sock);
	return NULL;
}

static void start_conn(struct fixture *f, bool direct)
{
	struct srv *s = &f->s;
	struct ub_err err = {{0}};
	int sv[2];

	memset(s, 0, sizeof(*s));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
			 0);
	s->peer = sv[0];
	s->sock = sv[1];
	s->stop = eventfd(0, EFD_CLOEXEC);
	assert_true(s->stop >= 0);
	s->direct = direct;
	if (direct) {
		s->dev = calloc(1, sizeof(*s->dev));
		assert_non_null(s->dev);
		ub_vhost_dev_init(s->dev, &f->params, f->bdev);
		for (unsigned q = 0; q < f->params.num_queues; q++)
			assert_int_equal(ub_vq_worker_start(s->dev, q,
							    &s->dev->workers[q],
							    &err),
					 0);
		ub_vu_conn_init(&s->conn, s->sock, s->stop, s->dev);
	}
	assert_int_equal(pthread_create(&s->th, NULL, srv_main, s), 0);
}

/* Waits for the server thread; returns its result. */
static int end_conn(struct fixture *f)
{
	struct srv *s = &f->s;

	pthread_join(s->th, NULL);
	if (s->direct) {
		ub_vhost_dev_fini(s->dev);
		free(s->dev);
		s->dev = NULL;
	}
	close(s->peer);
	close(s->stop);
	s->peer = -1;
	return s->rc;
}

/* Asks the server to stop and waits for it: 1 when it stopped on request
 * (ub_vhost_serve_conn's 1, ub_vu_serve's -ECANCELED). */
static int stop_conn(struct fixture *f)
{
	uint64_t one = 1;
	int rc;

	assert_int_equal(write(f->s.stop, &one, sizeof(one)), sizeof(one));
	rc = end_conn(f);
	return f->s.direct && rc == -ECANCELED ? 1 : rc;
}

/* ---- messages ----------------------------------------------------------- */

static void send_msg_fds(int fd, uint32_t code, uint32_t flags,
			 const void *payload, uint32_t size, const int *fds,
			 unsigned nfds)
{
	unsigned char buf[UB_VU_HDR_SIZE + UB_VU_MAX_PAYLOAD + 64];
	uint32_t h[3] = {code, flags, size};
	union {
		struct cmsghdr align;
		char b[CMSG_SPACE(64 * sizeof(int))];
	} ctl;
	struct iovec iov = {.iov_base = buf};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t n;

	memcpy(buf, h, sizeof(h));
	if (size)
		memcpy(buf + sizeof(h), payload, size);
	iov.iov_len = sizeof(h) + size;
	if (nfds) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.b;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	}
	n = sendmsg(fd, &mh, MSG_NOSIGNAL);
	assert_int_equal(n, (ssize_t)iov.iov_len);
}

static void send_msg(int fd, uint32_t code, uint32_t flags, const void *payload,
		     uint32_t size)
{
	send_msg_fds(fd, code, flags, payload, size, NULL, 0);
}

static void send_u64(int fd, uint32_t code, uint32_t flags, uint64_t v)
{
	send_msg(fd, code, flags, &v, sizeof(v));
}

static void send_state(int fd, uint32_t code, uint32_t flags, uint32_t index,
		       uint32_t num)
{
	struct ub_vu_vring_state st = {index, num};

	send_msg(fd, code, flags, &st, sizeof(st));
}

/* Reads exactly len bytes (5 s timeout); returns bytes read before EOF. */
static size_t read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		assert_int_equal(poll(&p, 1, TIMEOUT_MS), 1);
		n = read(fd, (char *)buf + got, len - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return got;
}

/* Receives a reply to code; returns its payload size (data in out). */
static uint32_t recv_reply(int fd, uint32_t code, void *out, size_t cap)
{
	uint32_t h[3];

	assert_int_equal(read_full(fd, h, sizeof(h)), sizeof(h));
	assert_int_equal(h[0], code);
	assert_int_equal(h[1], UB_VU_VERSION | UB_VU_FLAG_REPLY);
	assert_true(h[2] <= cap);
	assert_int_equal(read_full(fd, out, h[2]), h[2]);
	return h[2];
}

static uint64_t recv_u64(int fd, uint32_t code)
{
	uint64_t v = 0;

	assert_int_equal(recv_reply(fd, code, &v, sizeof(v)), sizeof(v));
	return v;
}

/* The server closed the connection (nothing more arrives). */
static void expect_eof(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	char c;
	ssize_t n;

	assert_int_equal(poll(&p, 1, TIMEOUT_MS), 1);
	n = read(fd, &c, 1);
	assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
}

/* The connection ended because of a protocol error mentioning what. */
static void expect_rejected(struct fixture *f, const char *what)
{
	expect_eof(f->s.peer);
	assert_int_not_equal(end_conn(f), 1);
	if (f->s.direct)
		assert_true(f->s.rc < 0);
	if (what && !strstr(f->s.err.msg, what))
		fail_msg("'%s' not in '%s'", what, f->s.err.msg);
}

/* GET_FEATURES, then the protocol features given: REPLY_ACK applies from
 * here on when pf has it. */
static void negotiate(int fd, uint64_t pf)
{
	send_msg(fd, UB_VU_GET_FEATURES, V1, NULL, 0);
	recv_u64(fd, UB_VU_GET_FEATURES);
	send_u64(fd, UB_VU_SET_PROTOCOL_FEATURES, V1, pf);
}

static void expect_ack(int fd, uint32_t code, uint64_t want)
{
	assert_int_equal(recv_u64(fd, code), want);
}

/* ---- guest memory ---------------------------------------------------------
 */

static void make_mem(struct fixture *f)
{
	f->memfd = memfd_create("guest", MFD_CLOEXEC);
	assert_true(f->memfd >= 0);
	assert_int_equal(ftruncate(f->memfd, MEM_SIZE), 0);
	f->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
		      f->memfd, 0);
	assert_true(f->mem != MAP_FAILED);
}

/* SET_MEM_TABLE of n regions (each with its own fd: dups of memfd). */
static void send_mem_table(struct fixture *f, uint32_t flags,
			   const struct ub_vu_region *regs, uint32_t n,
			   unsigned nfds)
{
	unsigned char buf[8 + 32 * 40];
	struct ub_vu_mem_table_hdr h = {n, 0};
	int fds[40];

	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), regs, n * sizeof(*regs));
	for (unsigned i = 0; i < nfds; i++)
		fds[i] = f->memfd;
	send_msg_fds(f->s.peer, UB_VU_SET_MEM_TABLE, flags, buf,
		     (uint32_t)(sizeof(h) + n * sizeof(*regs)), fds, nfds);
}

static const struct ub_vu_region whole_mem = {0, MEM_SIZE, USER_BASE, 0};

static void send_vring_addr(int fd, uint32_t flags, uint32_t index)
{
	struct ub_vu_vring_addr a = {
	    .index = index,
	    .desc = USER_BASE + DESC_GPA,
	    .used = USER_BASE + USED_GPA,
	    .avail = USER_BASE + AVAIL_GPA,
	};

	send_msg(fd, UB_VU_SET_VRING_ADDR, flags, &a, sizeof(a));
}

/* ---- replies --------------------------------------------------------------
 */

static void test_get_features_offers_the_reference_set(void **state)
{
	struct fixture *f = *state;
	uint64_t v;

	start_conn(f, false);
	send_msg(f->s.peer, UB_VU_GET_FEATURES, V1, NULL, 0);
	v = recv_u64(f->s.peer, UB_VU_GET_FEATURES);
	assert_int_equal(v & BASE_FEATURES, BASE_FEATURES);
	/* Beyond the reference only DISCARD and WRITE_ZEROES may appear. */
	assert_int_equal(v & ~(BASE_FEATURES | (1ull << 13) | (1ull << 14)), 0);
	assert_int_equal(stop_conn(f), 1);
}

static void test_get_protocol_features_is_0x8209(void **state)
{
	struct fixture *f = *state;

	start_conn(f, false);
	send_msg(f->s.peer, UB_VU_GET_PROTOCOL_FEATURES, V1, NULL, 0);
	assert_int_equal(recv_u64(f->s.peer, UB_VU_GET_PROTOCOL_FEATURES),
			 0x8209);
	assert_int_equal(stop_conn(f), 1);
}

static void test_get_queue_num_and_max_mem_slots(void **state)
{
	struct fixture *f = *state;

	start_conn(f, false);
	negotiate(f->s.peer, PF_ALL);
	send_msg(f->s.peer, UB_VU_GET_QUEUE_NUM, V1, NULL, 0);
	assert_int_equal(recv_u64(f->s.peer, UB_VU_GET_QUEUE_NUM), 2);
	send_msg(f->s.peer, UB_VU_GET_MAX_MEM_SLOTS, V1, NULL, 0);
	assert_int_equal(recv_u64(f->s.peer, UB_VU_GET_MAX_MEM_SLOTS), 509);
	assert_int_equal(stop_conn(f), 1);
}

static void test_get_queue_num_without_mq_ends_connection(void **state)
{
	struct fixture *f = *state;

	start_conn(f, false);
	send_msg(f->s.peer, UB_VU_GET_QUEUE_NUM, V1, NULL, 0);
	expect_rejected(f, NULL);
	start_conn(f, true);
	send_msg(f->s.peer, UB_VU_GET_QUEUE_NUM, V1, NULL, 0);
	expect_rejected(f, "protocol feature bit 0");
}

static void get_config(int fd, uint32_t offset, uint32_t size,
		       unsigned char *out)
{
	unsigned char buf[12 + 256] = {0};
	struct ub_vu_config_hdr h = {offset, size, 0};
	struct ub_vu_config_hdr rh;

	memcpy(buf, &h, sizeof(h));
	send_msg(fd, UB_VU_GET_CONFIG, V1, buf, 12 + size);
	assert_int_equal(recv_reply(fd, UB_VU_GET_CONFIG, buf, sizeof(buf)),
			 12 + size);
	memcpy(&rh, buf, sizeof(rh));
	assert_int_equal(rh.offset, offset);
	assert_int_equal(rh.size, size);
	memcpy(out, buf + 12, size);
}

/* Criterion 8. */
static void test_get_config_full_size(void **state)
{
	struct fixture *f = *state;
	unsigned char cfg[60];
	uint64_t cap;
	uint32_t blk;
	uint16_t nq;

	f->params.num_queues = 1;
	start_conn(f, false);
	negotiate(f->s.peer, PF_ALL);
	get_config(f->s.peer, 0, 60, cfg);
	memcpy(&cap, cfg, 8);
	memcpy(&blk, cfg + 20, 4);
	memcpy(&nq, cfg + 34, 2);
	assert_int_equal(cap, 8);
	assert_int_equal(blk, 512);
	assert_int_equal(nq, 1);
	assert_int_equal(stop_conn(f), 1);
}

/* Criterion 9. */
static void test_get_config_ignores_offset_and_honours_size(void **state)
{
	struct fixture *f = *state;
	unsigned char a[76], b[76], c[16], d[76], zero[16] = {0};

	start_conn(f, false);
	negotiate(f->s.peer, PF_ALL);
	get_config(f->s.peer, 0, 60, a);
	get_config(f->s.peer, 0x100, 60, b);
	assert_memory_equal(a, b, 60);
	get_config(f->s.peer, 0, 16, c);
	assert_memory_equal(a, c, 16);
	get_config(f->s.peer, 0, 76, d);
	assert_memory_equal(a, d, 60);
	assert_memory_equal(d + 60, zero, 16);
	assert_int_equal(stop_conn(f), 1);
}

static void test_get_config_invalid_requests_end_connection(void **state)
{
	struct fixture *f = *state;
	const struct {
		struct ub_vu_config_hdr h;
		uint32_t payload;
	} bad[] = {
	    {{0, 0, 0}, 12},		    /* size 0 */
	    {{0, 60, 0}, 12 + 59},	    /* payload shorter than size */
	    {{0, 60, 0x4}, 12 + 60},	    /* unknown flag */
	    {{4090, 16, 0}, 12 + 16},	    /* offset + size > 4096 */
	    {{UINT32_MAX, 16, 0}, 12 + 16}, /* overflow */
	};
	unsigned char buf[128] = {0};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		start_conn(f, true);
		negotiate(f->s.peer, PF_ALL);
		memcpy(buf, &bad[i].h, sizeof(bad[i].h));
		send_msg(f->s.peer, UB_VU_GET_CONFIG, V1, buf, bad[i].payload);
		expect_rejected(f, "GET_CONFIG");
	}
	/* Without the CONFIG protocol feature. */
	start_conn(f, true);
	negotiate(f->s.peer, 1);
	memcpy(buf, &bad[2].h, sizeof(bad[2].h));
	send_msg(f->s.peer, UB_VU_GET_CONFIG, V1, buf, 12 + 60);
	expect_rejected(f, "protocol feature bit 9");
}

static void test_set_config_is_accepted_and_ignored(void **state)
{
	struct fixture *f = *state;
	unsigned char before[60], after[60], buf[12 + 60] = {0};
	struct ub_vu_config_hdr h = {32, 1, 0x1};

	start_conn(f, false);
	negotiate(f->s.peer, PF_ALL);
	get_config(f->s.peer, 0, 60, before);
	memcpy(buf, &h, sizeof(h));
	buf[12] = before[32] ? 0 : 1; /* toggle writeback */
	send_msg(f->s.peer, UB_VU_SET_CONFIG, NEED_REPLY, buf, 12 + 1);
	expect_ack(f->s.peer, UB_VU_SET_CONFIG, 0);
	get_config(f->s.peer, 0, 60, after);
	assert_memory_equal(before, after, 60);
	assert_int_equal(stop_conn(f), 1);
}

static void test_device_state_messages_reply_errors(void **state)
{
	struct fixture *f = *state;
	struct ub_vu_vring_state ds = {0, 0};
	int efd = eventfd(0, EFD_CLOEXEC);

	start_conn(f, false);
	send_msg_fds(f->s.peer, UB_VU_SET_DEVICE_STATE_FD, V1, &ds, sizeof(ds),
		     &efd, 1);
	assert_int_equal(recv_u64(f->s.peer, UB_VU_SET_DEVICE_STATE_FD), 0x101);
	send_msg(f->s.peer, UB_VU_CHECK_DEVICE_STATE, V1, NULL, 0);
	assert_int_equal(recv_u64(f->s.peer, UB_VU_CHECK_DEVICE_STATE), 1);
	assert_int_equal(stop_conn(f), 1);
	close(efd);
}

/* ---- REPLY_ACK ------------------------------------------------------------
 */

static void test_reply_ack_acknowledges_need_reply(void **state)
{
	struct fixture *f = *state;

	start_conn(f, false);
	negotiate(f->s.peer, PF_ALL);
	send_msg(f->s.peer, UB_VU_SET_OWNER, NEED_REPLY, NULL, 0);
	expect_ack(f->s.peer, UB_VU_SET_OWNER, 0);
	/* Without NEED_REPLY nothing comes back: the next reply read is the
	 * GET_PROTOCOL_FEATURES one. */
	send_state(f->s.peer, UB_VU_SET_VRING_NUM, V1, 0, 128);
	send_msg(f->s.peer, UB_VU_GET_PROTOCOL_FEATURES, NEED_REPLY, NULL, 0);
	assert_int_equal(recv_u64(f->s.peer, UB_VU_GET_PROTOCOL_FEATURES),
			 0x8209);
	assert_int_equal(stop_conn(f), 1);
}

static void test_reply_ack_needs_features_and_protocol_bit(void **state)
{
	struct fixture *f = *state;

	/* REPLY_ACK set but GET_FEATURES never answered: no ack. */
	start_conn(f, false);
	send_u64(f->s.peer, UB_VU_SET_PROTOCOL_FEATURES, NEED_REPLY, PF_ALL);
	send_msg(f->s.peer, UB_VU_SET_OWNER, NEED_REPLY, NULL, 0);
	send_msg(f->s.peer, UB_VU_GET_QUEUE_NUM, V1, NULL, 0);
	assert_int_equal(recv_u64(f->s.peer, UB_VU_GET_QUEUE_NUM), 2);
	assert_int_equal(stop_conn(f), 1);
	/* GET_FEATURES answered but REPLY_ACK not set: no ack. */
	start_conn(f, false);
	negotiate(f->s.peer, PF_ALL & ~(1ull << UB_VU_PF_REPLY_ACK));
	send_msg(f->s.peer, UB_VU_SET_OWNER, NEED_REPLY, NULL, 0);
	send_msg(f->s.peer, UB_VU_GET_QUEUE_NUM, V1, NULL, 0);
	assert_int_equal(recv_u64(f->s.peer, UB_VU_GET_QUEUE_NUM), 2);
	assert_int_equal(stop_conn(f), 1);
}

static void test_rejected_request_is_nacked_then_closed(void **state)
{
	struct fixture *f = *state;

	start_conn(f, true);
	negotiate(f->s.peer, PF_ALL);
	send_state(f->s.peer, UB_VU_SET_VRING_NUM, NEED_REPLY, 2, 64);
	expect_ack(f->s.peer, UB_VU_SET_VRING_NUM, 1);
	expect_rejected(f, "out of range");
}

static void test_malformed_request_is_closed_without_ack(void **state)
{
	struct fixture *f = *state;
	uint32_t four = 0;

	start_conn(f, true);
	negotiate(f->s.peer, PF_ALL);
	send_msg(f->s.peer, UB_VU_SET_VRING_NUM, NEED_REPLY, &four, 4);
	expect_rejected(f, "expected 8");
}

/* ---- SET_OWNER, SET_FEATURES ----------------------------------------------
 */

static void test_second_set_owner_ends_connection(void **state)
{
	struct fixture *f = *state;

	start_conn(f, true);
	negotiate(f->s.peer, PF_ALL);
	send_msg(f->s.peer, UB_VU_SET_OWNER, NEED_REPLY, NULL, 0);
	expect_ack(f->s.peer, UB_VU_SET_OWNER, 0);
	send_msg(f->s.peer, UB_VU_SET_OWNER, NEED_REPLY, NULL, 0);
	expect_ack(f->s.peer, UB_VU_SET_OWNER, 1);
	expect_rejected(f, "already has an owner");
}

static void test_set_features_rejects_bits_not_offered(void **state)
{
	struct fixture *f = *state;

	start_conn(f, true);
	send_u64(f->s.peer, UB_VU_SET_FEATURES, V1, BASE_FEATURES | 1);
	expect_rejected(f, "not offered");
}

static void test_set_features_without_protocol_bit_enables_rings(void **state)
{
	struct fixture *f = *state;
	struct ub_vhost_dev *d;

	start_conn(f, true);
	d = f->s.dev;
	negotiate(f->s.peer, PF_ALL);
	send_u64(f->s.peer, UB_VU_SET_FEATURES, NEED_REPLY,
		 (1ull << 32) | (1ull << 29));
	expect_ack(f->s.peer, UB_VU_SET_FEATURES, 0);
	assert_true(d->vqs[0].enabled && d->vqs[1].enabled);
	assert_true(d->vqs[0].event_idx && d->vqs[1].event_idx);
	assert_int_equal(d->acked_features, (1ull << 32) | (1ull << 29));
	assert_int_equal(stop_conn(f), 1);

	/* With PROTOCOL_FEATURES the rings start disabled. */
	start_conn(f, true);
	d = f->s.dev;
	negotiate(f->s.peer, PF_ALL);
	send_u64(f->s.peer, UB_VU_SET_FEATURES, NEED_REPLY, BASE_FEATURES);
	expect_ack(f->s.peer, UB_VU_SET_FEATURES, 0);
	assert_false(d->vqs[0].enabled || d->vqs[1].enabled);
	send_state(f->s.peer, UB_VU_SET_VRING_ENABLE, NEED_REPLY, 1, 1);
	expect_ack(f->s.peer, UB_VU_SET_VRING_ENABLE, 0);
	assert_false(d->vqs[0].enabled);
	assert_true(d->vqs[1].enabled);
	assert_int_equal(stop_conn(f), 1);
}

static void test_set_vring_enable_needs_protocol_features(void **state)
{
	struct fixture *f = *state;

	start_conn(f, true);
	negotiate(f->s.peer, PF_ALL);
	send_u64(f->s.peer, UB_VU_SET_FEATURES, V1, 1ull << 32);
	send_state(f->s.peer, UB_VU_SET_VRING_ENABLE, NEED_REPLY, 0, 1);
	expect_ack(f->s.peer, UB_VU_SET_VRING_ENABLE, 1);
	expect_rejected(f, "PROTOCOL_FEATURES");
	/* A value other than 0 or 1. */
	start_conn(f, true);
	negotiate(f->s.peer, PF_ALL);
	send_u64(f->s.peer, UB_VU_SET_FEATURES, V1, BASE_FEATURES);
	send_state(f->s.peer, UB_VU_SET_VRING_ENABLE, V1, 0, 2);
	expect_rejected(f, "not 0 or 1");
}

/* ---- memory table ---------------------------------------------------------
 */

static void test_set_mem_table_maps_memfds(void **state)
{
	struct fixture *f = *state;
	struct ub_vu_region regs[2] = {
	    {0, MEM_SIZE / 2, USER_BASE, 0},
	    {MEM_SIZE / 2, MEM_SIZE / 2, USER_BASE + MEM_SIZE / 2,
	     MEM_SIZE / 2},
	};
	struct ub_vhost_dev *d;
	unsigned char *p;

	make_mem(f);
	start_conn(f, true);
	d = f->s.dev;
	negotiate(f->s.peer, PF_ALL);
	send_mem_table(f, NEED_REPLY, regs, 2, 2);
	expect_ack(f->s.peer, UB_VU_SET_MEM_TABLE, 0);
	assert_int_equal(d->mem.nregions, 2);
	/* The server's mapping is the guest's memory. */
	f->mem[MEM_SIZE / 2 + 5] = 0xa5;
	p = ub_guest_mem_ptr(&d->mem, MEM_SIZE / 2 + 5, 1);
	assert_non_null(p);
	assert_int_equal(*p, 0xa5);
	/* A new table replaces the old one. */
	send_mem_table(f, NEED_REPLY, &whole_mem, 1, 1);
	expect_ack(f->s.peer, UB_VU_SET_MEM_TABLE, 0);
	assert_int_equal(d->mem.nregions, 1);
	assert_int_equal(stop_conn(f), 1);
}

static void test_set_mem_table_wrong_fd_count(void **state)
{
	struct fixture *f = *state;
	struct ub_vu_region regs[2] = {
	    {0, 4096, USER_BASE, 0},
	    {4096, 4096, USER_BASE + 4096, 4096},
	};

	make_mem(f);
	start_conn(f, true);
	negotiate(f->s.peer, PF_ALL);
	send_mem_table(f, NEED_REPLY, regs, 2, 1);
	expect_rejected(f, "1 file descriptors for 2 regions");
	start_conn(f, true);
	negotiate(f->s.peer, PF_ALL);
	send_mem_table(f, NEED_REPLY, regs, 1, 2);
	expect_rejected(f, "2 file descriptors for 1 regions");
}

static void test_set_mem_table_overlap_is_nacked(void **state)
{
	struct fixture *f = *state;
	struct ub_vu_region regs[2] = {
	    {0, 8192, USER_BASE, 0},
	    {4096, 8192, USER_BASE + 8192, 0},
	};

	make_mem(f);
	start_conn(f, true);
	negotiate(f->s.peer, PF_ALL);
	send_mem_table(f, NEED_REPLY, regs, 2, 2);
	expect_ack(f->s.peer, UB_VU_SET_MEM_TABLE, 1);
	expect_rejected(f, "overlaps");
}

static void test_set_mem_table_bad_regions(void **state)
{
	struct fixture *f = *state;
	const struct ub_vu_region bad[] = {
	    {0, 0, USER_BASE, 0},		    /* zero size */
	    {UINT64_MAX - 100, 4096, USER_BASE, 0}, /* gpa overflow */
	    {0, 4096, UINT64_MAX - 100, 0},	    /* user overflow */
	    {0, 4096, USER_BASE, UINT64_MAX - 100}, /* offset overflow */
	};
	const char *why[] = {"size 0", "overflows", "overflows", "overflows"};

	make_mem(f);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		start_conn(f, true);
		negotiate(f->s.peer, PF_ALL);
		send_mem_table(f, NEED_REPLY, &bad[i], 1, 1);
		expect_rejected(f, why[i]);
	}
}

static void test_set_mem_table_bad_header(void **state)
{
	struct fixture *f = *state;
	struct ub_vu_mem_table_hdr h = {0, 0};
	unsigned char buf[8 + 32] = {0};

	make_mem(f);
	/* No region. */
	start_conn(f, true);
	send_msg(f->s.peer, UB_VU_SET_MEM_TABLE, V1, &h, sizeof(h));
	expect_rejected(f, "0 regions");
	/* Non-zero padding. */
	h.nregions = 1;
	h.padding = 1;
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + 8, &whole_mem, sizeof(whole_mem));
	start_conn(f, true);
	send_msg_fds(f->s.peer, UB_VU_SET_MEM_TABLE, V1, buf, sizeof(buf),
		     &f->memfd, 1);
	expect_rejected(f, "padding");
	/* Size that does not match the count. */
	h.padding = 0;
	memcpy(buf, &h, sizeof(h));
	start_conn(f, true);
	send_msg_fds(f->s.peer, UB_VU_SET_MEM_TABLE, V1, buf, sizeof(buf) - 8,
		     &f->memfd, 1);
	expect_rejected(f, "bytes for 1 regions");
}

static void test_set_mem_table_unmappable_fd_is_nacked(void **state)
{
	struct fixture *f = *state;
	int efd = eventfd(0, EFD_CLOEXEC);

	start_conn(f, true);
	negotiate(f->s.peer, PF_ALL);
	send_msg_fds(f->s.peer, UB_VU_SET_MEM_TABLE, NEED_REPLY,
		     (unsigned char[8 + 32]){1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
					     0, 0, 0, 0, 0, 0x10},
		     8 + 32, &efd, 1);
	expect_ack(f->s.peer, UB_VU_SET_MEM_TABLE, 1);
	expect_rejected(f, "SET_MEM_TABLE");
	close(efd);
}

static void send_mem_reg(int fd, uint32_t code, uint32_t flags,
			 const struct ub_vu_region *r, const int *fds,
			 unsigned nfds)
{
	struct ub_vu_mem_reg m = {0, *r};

	send_msg_fds(fd, code, flags, &m, sizeof(m), fds, nfds);
}

static void test_add_and_remove_memory_regions(void **state)
{
	struct fixture *f = *state;
	struct ub_vu_region a = {0, 8192, USER_BASE, 0};
	struct ub_vu_region b = {8192, 8192, USER_BASE + 8192, 8192};
	struct ub_vhost_dev *d;

	make_mem(f);
	start_conn(f, true);
	d = f->s.dev;
	negotiate(f->s.peer, PF_ALL);
	send_mem_reg(f->s.peer, UB_VU_ADD_MEM_REG, NEED_REPLY, &a, &f->memfd,
		     1);
	expect_ack(f->s.peer, UB_VU_ADD_MEM_REG, 0);
	send_mem_reg(f->s.peer, UB_VU_ADD_MEM_REG, NEED_REPLY, &b, &f->memfd,
		     1);
	expect_ack(f->s.peer, UB_VU_ADD_MEM_REG, 0);
	assert_int_equal(d->mem.nregions, 2);
	send_mem_reg(f->s.peer, UB_VU_REM_MEM_REG, NEED_REPLY, &a, NULL, 0);
	expect_ack(f->s.peer, UB_VU_REM_MEM_REG, 0);
	/* An old front end sends the fd along: accepted and closed. */
	send_mem_reg(f->s.peer, UB_VU_REM_MEM_REG, NEED_REPLY, &b, &f->memfd,
		     1);
	expect_ack(f->s.peer, UB_VU_REM_MEM_REG, 0);
	assert_int_equal(d->mem.nregions, 0);
	/* Removing what is not there. */
	send_mem_reg(f->s.peer, UB_VU_REM_MEM_REG, NEED_REPLY, &b, NULL, 0);
	expect_ack(f->s.peer, UB_VU_REM_MEM_REG, 1);
	expect_rejected(f, "REM_MEM_REG");
}

static void test_add_mem_reg_rules(void **state)
{
	struct fixture *f = *state;
	struct ub_vu_region a = {0, 8192, USER_BASE, 0};
	int two[2];

	make_mem(f);
	two[0] = two[1] = f->memfd;
	/* Needs CONFIGURE_MEM_SLOTS. */
	start_conn(f, true);
	negotiate(f->s.peer, 1ull << UB_VU_PF_REPLY_ACK);
	send_mem_reg(f->s.peer, UB_VU_ADD_MEM_REG, NEED_REPLY, &a, &f->memfd,
		     1);
	expect_rejected(f, "protocol feature bit 15");
	/* Exactly one fd. */
	start_conn(f, true);
	negotiate(f->s.peer, PF_ALL);
	send_mem_reg(f->s.peer, UB_VU_ADD_MEM_REG, NEED_REPLY, &a, NULL, 0);
	expect_rejected(f, "0 file descriptors");
	start_conn(f, true);
	negotiate(f->s.peer, PF_ALL);
	send_mem_reg(f->s.peer, UB_VU_ADD_MEM_REG, NEED_REPLY, &a, two, 2);
	expect_rejected(f, "2 file descriptors");
	/* Overlap with an existing region. */
	start_conn(f, true);
	negotiate(f->s.peer, PF_ALL);
	send_mem_reg(f->s.peer, UB_VU_ADD_MEM_REG, NEED_REPLY, &a, &f->memfd,
		     1);
	expect_ack(f->s.peer, UB_VU_ADD_MEM_REG, 0);
	a.gpa = 4096;
	send_mem_reg(f->s.peer, UB_VU_ADD_MEM_REG, NEED_REPLY, &a, &f->memfd,
		     1);
	expect_ack(f->s.peer, UB_VU_ADD_MEM_REG, 1);
	expect_rejected(f, "overlaps");
}

/* ---- rings ------------------------------------------------------------------
 */

static void test_vring_setup_and_stop(void **state)
{
	struct fixture *f = *state;
	struct ub_vu_vring_state st;
	struct ub_vhost_dev *d;
	struct ub_vq *vq;
	uint16_t used_idx = 7, avail_idx = 3;
	int kick = eventfd(0, EFD_CLOEXEC), call = eventfd(0, EFD_CLOEXEC);

	make_mem(f);
	memcpy(f->mem + USED_GPA + 2, &used_idx, 2);
	memcpy(f->mem + AVAIL_GPA + 2, &avail_idx, 2);
	start_conn(f, true);
	d = f->s.dev;
	vq = &d->vqs[1];
	negotiate(f->s.peer, PF_ALL);
	send_u64(f->s.peer, UB_VU_SET_FEATURES, NEED_REPLY, BASE_FEATURES);
	expect_ack(f->s.peer, UB_VU_SET_FEATURES, 0);
	send_mem_table(f, NEED_REPLY, &whole_mem, 1, 1);
	expect_ack(f->s.peer, UB_VU_SET_MEM_TABLE, 0);
	send_state(f->s.peer, UB_VU_SET_VRING_NUM, NEED_REPLY, 1, 8);
	expect_ack(f->s.peer, UB_VU_SET_VRING_NUM, 0);
	send_state(f->s.peer, UB_VU_SET_VRING_BASE, NEED_REPLY, 1, 0x10003);
	expect_ack(f->s.peer, UB_VU_SET_VRING_BASE, 0);
	send_vring_addr(f->s.peer, NEED_REPLY, 1);
	expect_ack(f->s.peer, UB_VU_SET_VRING_ADDR, 0);
	assert_int_equal(vq->size, 8);
	assert_int_equal(vq->last_avail, 3);
	assert_int_equal(vq->next_used, 7); /* read from guest memory */
	assert_int_equal(vq->desc_gpa, DESC_GPA);
	assert_int_equal(vq->avail_gpa, AVAIL_GPA);
	assert_int_equal(vq->used_gpa, USED_GPA);
	assert_true(vq->event_idx);
	assert_false(vq->ready);
	send_msg_fds(f->s.peer, UB_VU_SET_VRING_CALL, NEED_REPLY,
		     &(uint64_t){1}, 8, &call, 1);
	expect_ack(f->s.peer, UB_VU_SET_VRING_CALL, 0);
	assert_false(vq->ready); /* no kick fd yet */
	send_msg_fds(f->s.peer, UB_VU_SET_VRING_KICK, NEED_REPLY,
		     &(uint64_t){1}, 8, &kick, 1);
	expect_ack(f->s.peer, UB_VU_SET_VRING_KICK, 0);
	assert_true(vq->ready);
	assert_false(vq->enabled);
	send_state(f->s.peer, UB_VU_SET_VRING_ENABLE, NEED_REPLY, 1, 1);
	expect_ack(f->s.peer, UB_VU_SET_VRING_ENABLE, 0);
	assert_true(vq->enabled);
	/* Queue 0 was not touched. */
	assert_false(d->vqs[0].addr_set || d->vqs[0].ready);
	/* GET_VRING_BASE stops the ring and returns the next avail index. */
	send_state(f->s.peer, UB_VU_GET_VRING_BASE, NEED_REPLY, 1, 0);
	assert_int_equal(
	    recv_reply(f->s.peer, UB_VU_GET_VRING_BASE, &st, sizeof(st)),
	    sizeof(st));
	assert_int_equal(st.index, 1);
	assert_int_equal(st.num, 3);
	assert_false(vq->ready);
	assert_int_equal(vq->kick_fd, -1);
	assert_int_equal(vq->call_fd, -1);
	/* The memory under a configured ring may go and come back (QEMU
	 * reshuffles regions): both steps are accepted. */
	send_mem_reg(f->s.peer, UB_VU_REM_MEM_REG, NEED_REPLY, &whole_mem, NULL,
		     0);
	expect_ack(f->s.peer, UB_VU_REM_MEM_REG, 0);
	send_mem_reg(f->s.peer, UB_VU_ADD_MEM_REG, NEED_REPLY, &whole_mem,
		     &f->memfd, 1);
	expect_ack(f->s.peer, UB_VU_ADD_MEM_REG, 0);
	assert_int_equal(stop_conn(f), 1);
	close(kick);
	close(call);
}

/* Writes descriptor i of the table at DESC_GPA. */
static void put_desc(unsigned char *mem, unsigned i, uint64_t addr,
		     uint32_t len, uint16_t flags, uint16_t next)
{
	unsigned char *d = mem + DESC_GPA + 16 * i;

	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

/* What the control plane wires up, the data plane serves: a GET_ID
 * request on a ring whose memory was removed and added back. */
static void test_ring_set_up_here_serves_a_request(void **state)
{
	struct fixture *f = *state;
	int kick = eventfd(0, EFD_CLOEXEC), call = eventfd(0, EFD_CLOEXEC);
	uint32_t hdr[4] = {8, 0, 0, 0}; /* GET_ID, sector 0 */
	uint16_t head = 0, idx = 1, used_idx;
	struct pollfd p = {.fd = call, .events = POLLIN};
	uint64_t one = 1, n;
	char id[20] = {0};

	make_mem(f);
	memcpy(f->mem + 0x4000, hdr, sizeof(hdr));
	f->mem[0x6000] = 0xff;
	put_desc(f->mem, 0, 0x4000, 16, 1, 1);	   /* header, NEXT */
	put_desc(f->mem, 1, 0x5000, 20, 1 | 2, 2); /* id, NEXT | WRITE */
	put_desc(f->mem, 2, 0x6000, 1, 2, 0);	   /* status, WRITE */
	start_conn(f, false);
	negotiate(f->s.peer, PF_ALL);
	send_u64(f->s.peer, UB_VU_SET_FEATURES, NEED_REPLY, BASE_FEATURES);
	expect_ack(f->s.peer, UB_VU_SET_FEATURES, 0);
	send_mem_reg(f->s.peer, UB_VU_ADD_MEM_REG, NEED_REPLY, &whole_mem,
		     &f->memfd, 1);
	expect_ack(f->s.peer, UB_VU_ADD_MEM_REG, 0);
	send_state(f->s.peer, UB_VU_SET_VRING_NUM, NEED_REPLY, 0, 8);
	expect_ack(f->s.peer, UB_VU_SET_VRING_NUM, 0);
	send_state(f->s.peer, UB_VU_SET_VRING_BASE, NEED_REPLY, 0, 0);
	expect_ack(f->s.peer, UB_VU_SET_VRING_BASE, 0);
	send_vring_addr(f->s.peer, NEED_REPLY, 0);
	expect_ack(f->s.peer, UB_VU_SET_VRING_ADDR, 0);
	send_msg_fds(f->s.peer, UB_VU_SET_VRING_CALL, NEED_REPLY,
		     &(uint64_t){0}, 8, &call, 1);
	expect_ack(f->s.peer, UB_VU_SET_VRING_CALL, 0);
	send_msg_fds(f->s.peer, UB_VU_SET_VRING_KICK, NEED_REPLY,
		     &(uint64_t){0}, 8, &kick, 1);
	expect_ack(f->s.peer, UB_VU_SET_VRING_KICK, 0);
	send_state(f->s.peer, UB_VU_SET_VRING_ENABLE, NEED_REPLY, 0, 1);
	expect_ack(f->s.peer, UB_VU_SET_VRING_ENABLE, 0);
	/* The front end reshuffles its regions while the ring is live. */
	send_mem_reg(f->s.peer, UB_VU_REM_MEM_REG, NEED_REPLY, &whole_mem, NULL,
		     0);
	expect_ack(f->s.peer, UB_VU_REM_MEM_REG, 0);
	send_mem_reg(f->s.peer, UB_VU_ADD_MEM_REG, NEED_REPLY, &whole_mem,
		     &f->memfd, 1);
	expect_ack(f->s.peer, UB_VU_ADD_MEM_REG, 0);
	/* The driver publishes the chain and kicks. */
	memcpy(f->mem + AVAIL_GPA + 4, &head, 2);
	__atomic_store_n((uint16_t *)(f->mem + AVAIL_GPA + 2), idx,
			 __ATOMIC_RELEASE);
	assert_int_equal(write(kick, &one, sizeof(one)), sizeof(one));
	assert_int_equal(poll(&p, 1, TIMEOUT_MS), 1);
	assert_int_equal(read(call, &n, sizeof(n)), sizeof(n));
	used_idx = __atomic_load_n((uint16_t *)(f->mem + USED_GPA + 2),
				   __ATOMIC_ACQUIRE);
	assert_int_equal(used_idx, 1);
	assert_int_equal(f->mem[0x6000], 0); /* VIRTIO_BLK_S_OK */
	memcpy(id, f->mem + 0x5000, sizeof(id));
	assert_memory_equal(id, "ubiblk\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 20);
	assert_int_equal(stop_conn(f), 1);
	close(kick);
	close(call);
}

static void test_vring_index_out_of_range(void **state)
{
	struct fixture *f = *state;
	const uint32_t codes[] = {UB_VU_SET_VRING_NUM, UB_VU_SET_VRING_BASE,
				  UB_VU_GET_VRING_BASE, UB_VU_SET_VRING_ENABLE};
	int efd = eventfd(0, EFD_CLOEXEC);

	make_mem(f);
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		start_conn(f, true);
		negotiate(f->s.peer, PF_ALL);
		send_u64(f->s.peer, UB_VU_SET_FEATURES, V1, BASE_FEATURES);
		send_state(f->s.peer, codes[i], V1, 2, 1);
		expect_rejected(f, "out of range");
	}
	start_conn(f, true);
	negotiate(f->s.peer, PF_ALL);
	send_mem_table(f, V1, &whole_mem, 1, 1);
	send_vring_addr(f->s.peer, V1, 2);
	expect_rejected(f, "out of range");
	for (uint32_t code = UB_VU_SET_VRING_KICK; code <= UB_VU_SET_VRING_ERR;
	     code++) {
		start_conn(f, true);
		send_msg_fds(f->s.peer, code, V1, &(uint64_t){255}, 8, &efd, 1);
		expect_rejected(f, "out of range");
	}
	close(efd);
}

static void test_set_vring_num_sizes(void **state)
{
	struct fixture *f = *state;
	const uint32_t bad[] = {0, 3, 65536, 32767, 1u << 31};
	struct ub_vhost_dev *d;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		start_conn(f, true);
		send_state(f->s.peer, UB_VU_SET_VRING_NUM, V1, 0, bad[i]);
		expect_rejected(f, "power of two");
	}
	/* Any power of two up to 32768, beyond queue_size. */
	start_conn(f, true);
	d = f->s.dev;
	negotiate(f->s.peer, PF_ALL);
	send_state(f->s.peer, UB_VU_SET_VRING_NUM, NEED_REPLY, 0, 32768);
	expect_ack(f->s.peer, UB_VU_SET_VRING_NUM, 0);
	send_state(f->s.peer, UB_VU_SET_VRING_NUM, NEED_REPLY, 1, 1);
	expect_ack(f->s.peer, UB_VU_SET_VRING_NUM, 0);
	assert_int_equal(d->vqs[0].size, 32768);
	assert_int_equal(d->vqs[1].size, 1);
	assert_int_equal(stop_conn(f), 1);
}

static void test_set_vring_addr_rules(void **state)
{
	struct fixture *f = *state;
	struct ub_vu_vring_addr a = {
	    .index = 0,
	    .desc = USER_BASE + DESC_GPA,
	    .used = USER_BASE + USED_GPA,
	    .avail = USER_BASE + AVAIL_GPA,
	};
	struct ub_vu_vring_addr b;

	make_mem(f);
	/* No memory table yet. */
	start_conn(f, true);
	send_vring_addr(f->s.peer, V1, 0);
	expect_rejected(f, "no guest memory table");
	/* Misaligned rings, unknown flags, addresses outside memory. */
	for (int i = 0; i < 5; i++) {
		b = a;
		if (i == 0)
			b.desc += 8;
		else if (i == 1)
			b.avail += 1;
		else if (i == 2)
			b.used += 2;
		else if (i == 3)
			b.flags = 2;
		else
			b.used = USER_BASE + MEM_SIZE;
		start_conn(f, true);
		send_mem_table(f, V1, &whole_mem, 1, 1);
		send_msg(f->s.peer, UB_VU_SET_VRING_ADDR, V1, &b, sizeof(b));
		expect_rejected(f, "SET_VRING_ADDR");
	}
	/* Rings that run past the end of the region. */
	start_conn(f, true);
	send_mem_table(f, V1, &whole_mem, 1, 1);
	b = a;
	b.desc = USER_BASE + MEM_SIZE - 16;
	send_msg(f->s.peer, UB_VU_SET_VRING_ADDR, V1, &b, sizeof(b));
	expect_rejected(f, "do not fit");
	/* The LOG flag is accepted (and ignored). */
	start_conn(f, true);
	negotiate(f->s.peer, PF_ALL);
	send_mem_table(f, NEED_REPLY, &whole_mem, 1, 1);
	expect_ack(f->s.peer, UB_VU_SET_MEM_TABLE, 0);
	b = a;
	b.flags = 1;
	send_msg(f->s.peer, UB_VU_SET_VRING_ADDR, NEED_REPLY, &b, sizeof(b));
	expect_ack(f->s.peer, UB_VU_SET_VRING_ADDR, 0);
	assert_int_equal(stop_conn(f), 1);
}

static void test_vring_fd_flag_must_match(void **state)
{
	struct fixture *f = *state;
	int efd = eventfd(0, EFD_CLOEXEC);

	/* "No fd" flag with an fd. */
	start_conn(f, true);
	send_msg_fds(f->s.peer, UB_VU_SET_VRING_KICK, V1,
		     &(uint64_t){UB_VU_VRING_NOFD}, 8, &efd, 1);
	expect_rejected(f, "no-fd flag set");
	/* No flag and no fd. */
	start_conn(f, true);
	send_u64(f->s.peer, UB_VU_SET_VRING_CALL, V1, 0);
	expect_rejected(f, "no-fd flag clear");
	/* Polling mode is accepted but the ring never starts. */
	start_conn(f, true);
	negotiate(f->s.peer, PF_ALL);
	send_u64(f->s.peer, UB_VU_SET_VRING_KICK, NEED_REPLY, UB_VU_VRING_NOFD);
	expect_ack(f->s.peer, UB_VU_SET_VRING_KICK, 0);
	assert_false(f->s.dev->vqs[0].ready);
	assert_int_equal(stop_conn(f), 1);
	close(efd);
}

/* ---- framing ----------------------------------------------------------------
 */

static void test_unknown_and_unsupported_codes(void **state)
{
	struct fixture *f = *state;
	const uint32_t codes[] = {0,
				  45,
				  99,
				  UB_VU_SET_LOG_FD,
				  UB_VU_SEND_RARP,
				  UB_VU_VRING_KICK,
				  UB_VU_GET_STATUS};

	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		start_conn(f, true);
		send_msg(f->s.peer, codes[i], V1, NULL, 0);
		expect_rejected(f, codes[i] == 0 || codes[i] >= 45
				       ? "unknown request code"
				       : "unsupported request");
	}
}

static void test_bad_header_flags(void **state)
{
	struct fixture *f = *state;
	const uint32_t flags[] = {0, 2, 3, 0x10 | V1, 0x80000000u | V1};
	const char *why[] = {"version 0", "version 2", "version 3",
			     "reserved flag", "reserved flag"};

	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		start_conn(f, true);
		send_msg(f->s.peer, UB_VU_GET_FEATURES, flags[i], NULL, 0);
		expect_rejected(f, why[i]);
	}
	/* A REPLY sent to the back end. */
	start_conn(f, true);
	send_msg(f->s.peer, UB_VU_GET_FEATURES, V1 | UB_VU_FLAG_REPLY, NULL, 0);
	expect_rejected(f, "REPLY flag");
}

static void test_payload_larger_than_4096(void **state)
{
	struct fixture *f = *state;
	uint32_t h[3] = {UB_VU_SET_CONFIG, V1, 4097};

	start_conn(f, true);
	assert_int_equal(write(f->s.peer, h, sizeof(h)), sizeof(h));
	expect_rejected(f, "4097 bytes");
}

static void test_truncated_header(void **state)
{
	struct fixture *f = *state;
	uint32_t h[3] = {UB_VU_GET_FEATURES, V1, 0};

	start_conn(f, true);
	assert_int_equal(write(f->s.peer, h, 5), 5);
	shutdown(f->s.peer, SHUT_WR);
	expect_rejected(f, "partial message");
	/* In the full server path a truncated header is just the end of the
	 * connection (criterion 15). */
	start_conn(f, false);
	assert_int_equal(write(f->s.peer, h, 5), 5);
	shutdown(f->s.peer, SHUT_WR);
	expect_eof(f->s.peer);
	assert_int_equal(end_conn(f), 0);
}

static void test_truncated_payload(void **state)
{
	struct fixture *f = *state;
	uint32_t m[5] = {UB_VU_SET_FEATURES, V1, 8, 0, 0};

	start_conn(f, true);
	assert_int_equal(write(f->s.peer, m, 16), 16);
	shutdown(f->s.peer, SHUT_WR);
	expect_rejected(f, "truncated");
}

static void test_clean_close_between_messages(void **state)
{
	struct fixture *f = *state;

	start_conn(f, true);
	send_msg(f->s.peer, UB_VU_GET_FEATURES, V1, NULL, 0);
	recv_u64(f->s.peer, UB_VU_GET_FEATURES);
	shutdown(f->s.peer, SHUT_WR);
	expect_eof(f->s.peer);
	assert_int_equal(end_conn(f), 0);
}

static void test_fds_on_a_message_without_fds_are_closed(void **state)
{
	struct fixture *f = *state;
	int fds[3];
	int before;

	for (int i = 0; i < 3; i++)
		fds[i] = eventfd(0, EFD_CLOEXEC);
	before = count_fds();
	start_conn(f, true);
	send_msg_fds(f->s.peer, UB_VU_GET_FEATURES, V1, NULL, 0, fds, 3);
	expect_rejected(f, "3 file descriptors");
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	assert_int_equal(count_fds(), before - 3);
}

static void test_too_many_fds_are_closed(void **state)
{
	struct fixture *f = *state;
	int fds[40];
	int before;

	make_mem(f);
	for (int i = 0; i < 40; i++)
		fds[i] = f->memfd;
	before = count_fds();
	start_conn(f, true);
	send_msg_fds(f->s.peer, UB_VU_SET_MEM_TABLE, V1, NULL, 0, fds, 40);
	expect_rejected(f, NULL);
	assert_int_equal(count_fds(), before);
}

/* ---- connection life cycle -------------------------------------------------
 */

static void test_connection_end_flushes_the_device(void **state)
{
	struct fixture *f = *state;
	struct ub_mem_bdev_metrics m0 = ub_mem_bdev_metrics(f->bdev);

	start_conn(f, false);
	send_msg(f->s.peer, UB_VU_GET_FEATURES, V1, NULL, 0);
	recv_u64(f->s.peer, UB_VU_GET_FEATURES);
	shutdown(f->s.peer, SHUT_WR);
	expect_eof(f->s.peer);
	assert_int_equal(end_conn(f), 0);
	assert_int_equal(ub_mem_bdev_metrics(f->bdev).flushes, m0.flushes + 1);
}

struct run_args {
	int listen_fd;
	int stop;
	struct fixture *f;
	int rc;
	struct ub_err err;
};

static void *run_main(void *arg)
{
	struct run_args *a = arg;

	a->rc = ub_vhost_server_run(a->listen_fd, &a->f->params, a->f->bdev,
				    a->stop, &a->err);
	return NULL;
}

static int connect_to(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void make_tmpdir(char *dir, size_t n)
{
	snprintf(dir, n, "%s/ubiblk-vu.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	assert_non_null(mkdtemp(dir));
}

static void test_server_serves_the_next_connection(void **state)
{
	struct fixture *f = *state;
	struct ub_vhost_listener l;
	struct run_args a = {0};
	struct ub_err err = {{0}};
	char dir[256], path[300];
	struct stat st;
	pthread_t th;
	uint64_t one = 1;
	int c;

	make_tmpdir(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/vhost.sock", dir);
	assert_int_equal(ub_vhost_listen(path, &l, &err), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0660);
	a.listen_fd = l.fd;
	a.stop = eventfd(0, EFD_CLOEXEC);
	a.f = f;
	assert_int_equal(pthread_create(&th, NULL, run_main, &a), 0);
	/* Connect and close at once (criterion 15). */
	close(connect_to(path));
	/* A bad message ends that connection only. */
	c = connect_to(path);
	send_msg(c, 99, V1, NULL, 0);
	expect_eof(c);
	close(c);
	/* A second client waits in the backlog while one is served. */
	c = connect_to(path);
	send_msg(c, UB_VU_GET_FEATURES, V1, NULL, 0);
	recv_u64(c, UB_VU_GET_FEATURES);
	{
		int c2 = connect_to(path);

		send_msg(c2, UB_VU_GET_PROTOCOL_FEATURES, V1, NULL, 0);
		close(c);
		assert_int_equal(recv_u64(c2, UB_VU_GET_PROTOCOL_FEATURES),
				 0x8209);
		c = c2;
	}
	/* Stop while a connection is up: torn down, loop returns 0. */
	assert_int_equal(write(a.stop, &one, sizeof(one)), sizeof(one));
	expect_eof(c);
	close(c);
	pthread_join(th, NULL);
	assert_int_equal(a.rc, 0);
	ub_vhost_listener_close(&l);
	assert_int_not_equal(access(path, F_OK), 0);
	close(a.stop);
	rmdir(dir);
}

static void test_listen_rules(void **state)
{
	struct ub_vhost_listener l, l2;
	struct ub_err err = {{0}};
	char dir[256], path[300], bad[320];
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd;

	make_tmpdir(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/vhost.sock", dir);
	/* A stale socket file (bound, nobody listening) is replaced. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_int_equal(ub_vhost_listen(path, &l, &err), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0660);
	/* A live socket is not taken over. */
	assert_int_equal(ub_vhost_listen(path, &l2, &err), -EADDRINUSE);
	assert_non_null(strstr(err.msg, "another process"));
	ub_vhost_listener_close(&l);
	assert_int_not_equal(access(path, F_OK), 0);
	/* A regular file is not removed. */
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	close(fd);
	assert_int_equal(ub_vhost_listen(path, &l, &err), -EEXIST);
	assert_non_null(strstr(err.msg, "not a socket"));
	assert_int_equal(access(path, F_OK), 0);
	unlink(path);
	/* A missing directory (criterion 16). */
	snprintf(bad, sizeof(bad), "%s/missing/vhost.sock", dir);
	assert_int_equal(ub_vhost_listen(bad, &l, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "cannot bind"));
	/* A path too long for a socket address. */
	memset(bad, 'a', sizeof(bad) - 1);
	bad[sizeof(bad) - 1] = '\0';
	assert_int_equal(ub_vhost_listen(bad, &l, &err), -ENAMETOOLONG);
	/* The listener's file is left alone once replaced by another. */
	assert_int_equal(ub_vhost_listen(path, &l, &err), 0);
	unlink(path);
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	close(fd);
	ub_vhost_listener_close(&l);
	assert_int_equal(access(path, F_OK), 0);
	unlink(path);
	rmdir(dir);
}

static void test_params_from_config(void **state)
{
	struct ub_config cfg;
	struct ub_vhost_params p;
	uint32_t cpus[2] = {0, 1};

	ub_config_defaults(&cfg);
	cfg.tuning.num_queues = 2;
	cfg.tuning.queue_size = 65536;
	cfg.tuning.cpus = cpus;
	cfg.tuning.cpus_len = 2;
	cfg.device.device_id = "a-device-id-longer-than-twenty";
	ub_vhost_params_from_config(&cfg, &p);
	assert_int_equal(p.num_queues, 2);
	assert_int_equal(p.queue_size, 32768);
	assert_ptr_equal(p.cpus, cpus);
	assert_memory_equal(p.device_id, "a-device-id-longer-t", 20);
	cfg.device.device_id = "ubiblk";
	ub_vhost_params_from_config(&cfg, &p);
	assert_memory_equal(p.device_id, "ubiblk\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
			    20);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_get_features_offers_the_reference_set),
	    T(test_get_protocol_features_is_0x8209),
	    T(test_get_queue_num_and_max_mem_slots),
	    T(test_get_queue_num_without_mq_ends_connection),
	    T(test_get_config_full_size),
	    T(test_get_config_ignores_offset_and_honours_size),
	    T(test_get_config_invalid_requests_end_connection),
	    T(test_set_config_is_accepted_and_ignored),
	    T(test_device_state_messages_reply_errors),
	    T(test_reply_ack_acknowledges_need_reply),
	    T(test_reply_ack_needs_features_and_protocol_bit),
	    T(test_rejected_request_is_nacked_then_closed),
	    T(test_malformed_request_is_closed_without_ack),
	    T(test_second_set_owner_ends_connection),
	    T(test_set_features_rejects_bits_not_offered),
	    T(test_set_features_without_protocol_bit_enables_rings),
	    T(test_set_vring_enable_needs_protocol_features),
	    T(test_set_mem_table_maps_memfds),
	    T(test_set_mem_table_wrong_fd_count),
	    T(test_set_mem_table_overlap_is_nacked),
	    T(test_set_mem_table_bad_regions),
	    T(test_set_mem_table_bad_header),
	    T(test_set_mem_table_unmappable_fd_is_nacked),
	    T(test_add_and_remove_memory_regions),
	    T(test_add_mem_reg_rules),
	    T(test_vring_setup_and_stop),
	    T(test_ring_set_up_here_serves_a_request),
	    T(test_vring_index_out_of_range),
	    T(test_set_vring_num_sizes),
	    T(test_set_vring_addr_rules),
	    T(test_vring_fd_flag_must_match),
	    T(test_unknown_and_unsupported_codes),
	    T(test_bad_header_flags),
	    T(test_payload_larger_than_4096),
	    T(test_truncated_header),
	    T(test_truncated_payload),
	    T(test_clean_close_between_messages),
	    T(test_fds_on_a_message_without_fds_are_closed),
	    T(test_too_many_fds_are_closed),
	    T(test_connection_end_flushes_the_device),
	    T(test_server_serves_the_next_connection),
	    T(test_listen_rules),
	    T(test_params_from_config),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
