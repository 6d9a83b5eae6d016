/* vhost-user-blk test front end: socket, messages, guest memory, split
 * rings and virtio-blk requests. See vu_client.h. */
#include "vu_client.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define VU_MAX_FDS 8

static int fail(struct vu_client *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct vu_client *c, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	return rc;
}

const char *vu_errmsg(const struct vu_client *c)
{
	return c->err[0] ? c->err : "no error";
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/* --- client and guest memory ------------------------------------------ */

int vu_client_new(struct vu_client **out, const char *path, uint64_t mem_size,
		  unsigned nregions)
{
	struct vu_client *c;
	uint64_t per, gpa = VU_GPA_BASE;
	unsigned i;
	int rc;

	if (nregions < 1 || nregions > VU_MAX_REGIONS ||
	    strlen(path) >= sizeof(c->path))
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	snprintf(c->path, sizeof(c->path), "%s", path);
	c->sock = -1;
	c->timeout_ms = 5000;
	for (i = 0; i < VU_MAX_QUEUES; i++) {
		c->q[i].kick_fd = -1;
		c->q[i].call_fd = -1;
	}
	per = ((mem_size / nregions) + 0xfffff) & ~0xfffffull;
	for (i = 0; i < nregions; i++) {
		struct vu_region *r = &c->reg[i];

		r->fd = memfd_create("vu-guest", MFD_CLOEXEC);
		if (r->fd < 0) {
			rc = -errno;
			goto err_free;
		}
		c->nregions++;
		if (ftruncate(r->fd, (off_t)per) < 0) {
			rc = -errno;
			goto err_free;
		}
		r->host = mmap(NULL, per, PROT_READ | PROT_WRITE, MAP_SHARED,
			       r->fd, 0);
		if (r->host == MAP_FAILED) {
			r->host = NULL;
			rc = -errno;
			goto err_free;
		}
		r->gpa = gpa;
		r->size = per;
		gpa += per;
		c->mem_size += per;
	}
	c->brk = VU_GPA_BASE;
	*out = c;
	return 0;

err_free:
	vu_client_free(c);
	return rc;
}

void vu_client_free(struct vu_client *c)
{
	unsigned i;

	if (!c)
		return;
	vu_disconnect(c);
	for (i = 0; i < VU_MAX_QUEUES; i++) {
		free(c->q[i].free_desc);
		free(c->q[i].owner);
		free(c->q[i].reqs);
	}
	for (i = 0; i < c->nregions; i++) {
		if (c->reg[i].host)
			munmap(c->reg[i].host, c->reg[i].size);
		close(c->reg[i].fd);
	}
	free(c);
}

uint64_t vu_mem_end(const struct vu_client *c)
{
	return VU_GPA_BASE + c->mem_size;
}

void *vu_host(struct vu_client *c, uint64_t gpa)
{
	unsigned i;

	for (i = 0; i < c->nregions; i++) {
		struct vu_region *r = &c->reg[i];

		if (gpa >= r->gpa && gpa - r->gpa < r->size)
			return r->host + (gpa - r->gpa);
	}
	return NULL;
}

uint64_t vu_alloc(struct vu_client *c, uint64_t size, uint64_t align)
{
	unsigned i;

	if (!align)
		align = 8;
	for (i = 0; i < c->nregions; i++) {
		struct vu_region *r = &c->reg[i];
		uint64_t at = c->brk < r->gpa ? r->gpa : c->brk;

		at = (at + align - 1) & ~(align - 1);
		if (at >= r->gpa && at + size <= r->gpa + r->size) {
			c->brk = at + size;
			return at;
		}
	}
	return 0;
}

uint64_t vu_config_get(const struct vu_client *c, unsigned off, unsigned size)
{
	uint64_t v = 0;
	unsigned i;

	for (i = 0; i < size && off + i < VU_CONFIG_SIZE; i++)
		v |= (uint64_t)c->config[off + i] << (8 * i);
	return v;
}

/* --- socket I/O -------------------------------------------------------- */

static int wait_fd(int fd, short events, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = events};
	int rc;

	do {
		rc = poll(&p, 1, timeout_ms);
	} while (rc < 0 && errno == EINTR);
	if (rc < 0)
		return -errno;
	return rc == 0 ? -ETIMEDOUT : 0;
}

int vu_send_raw(struct vu_client *c, const void *buf, size_t len,
		const int *fds, int nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * VU_MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t n;

	if (c->sock < 0)
		return fail(c, -ENOTCONN, "not connected");
	if (nfds < 0 || nfds > VU_MAX_FDS)
		return -EINVAL;
	if (nfds > 0) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		m.msg_control = ctl.buf;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	while (iov.iov_len > 0) {
		n = sendmsg(c->sock, &m, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return fail(c, errno == EPIPE ? -ECONNRESET : -errno,
				    "send: %s", strerror(errno));
		iov.iov_base = (char *)iov.iov_base + n;
		iov.iov_len -= (size_t)n;
		m.msg_control = NULL;
		m.msg_controllen = 0;
	}
	return 0;
}

int vu_send(struct vu_client *c, uint32_t code, uint32_t flags,
	    const void *payload, uint32_t size, const int *fds, int nfds)
{
	uint8_t buf[VU_HDR_SIZE + VU_MAX_PAYLOAD];
	uint32_t hdr[3] = {code, flags, size};

	if (size > VU_MAX_PAYLOAD)
		return -EINVAL;
	memcpy(buf, hdr, sizeof(hdr));
	if (size)
		memcpy(buf + VU_HDR_SIZE, payload, size);
	return vu_send_raw(c, buf, VU_HDR_SIZE + size, fds, nfds);
}

/* Reads exactly len bytes within the client timeout. */
static int recv_exact(struct vu_client *c, void *buf, size_t len,
		      int64_t deadline)
{
	size_t got = 0;
	ssize_t n;
	int rc;

	while (got < len) {
		int64_t left = deadline - now_ms();

		rc = wait_fd(c->sock, POLLIN, left > 0 ? (int)left : 0);
		if (rc < 0)
			return fail(c, rc, "no reply within %d ms",
				    c->timeout_ms);
		n = recv(c->sock, (char *)buf + got, len - got, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return fail(c,
				    errno == ECONNRESET ? -ECONNRESET : -errno,
				    "recv: %s", strerror(errno));
		if (n == 0)
			return fail(c, -ECONNRESET,
				    "connection closed by peer");
		got += (size_t)n;
	}
	return 0;
}

/* Receives one message of any code; payload up to cap bytes. */
static int recv_msg(struct vu_client *c, uint32_t hdr[3], void *payload,
		    uint32_t cap, int64_t deadline)
{
	uint8_t sink[VU_MAX_PAYLOAD];
	int rc;

	rc = recv_exact(c, hdr, VU_HDR_SIZE, deadline);
	if (rc < 0)
		return rc;
	if (hdr[2] > VU_MAX_PAYLOAD)
		return fail(c, -EPROTO, "reply payload of %u bytes", hdr[2]);
	rc = recv_exact(c, hdr[2] <= cap ? payload : sink, hdr[2], deadline);
	if (rc < 0)
		return rc;
	return hdr[2] <= cap ? 0
			     : fail(c, -EPROTO, "reply of %u bytes", hdr[2]);
}

int vu_recv(struct vu_client *c, uint32_t code, void *payload, uint32_t size)
{
	uint32_t hdr[3];
	int rc;

	rc = recv_msg(c, hdr, payload, size, now_ms() + c->timeout_ms);
	if (rc < 0)
		return rc;
	if (hdr[0] != code)
		return fail(c, -EPROTO, "reply code %u to request %u", hdr[0],
			    code);
	if ((hdr[1] & 0x3) != VU_VERSION || !(hdr[1] & VU_REPLY) ||
	    (hdr[1] & ~0x7u))
		return fail(c, -EPROTO, "reply flags 0x%x to request %u",
			    hdr[1], code);
	if (hdr[2] != size)
		return fail(c, -EPROTO, "reply size %u to request %u (want %u)",
			    hdr[2], code, size);
	return 0;
}

int vu_set(struct vu_client *c, uint32_t code, const void *payload,
	   uint32_t size, const int *fds, int nfds)
{
	uint64_t ack;
	int rc;

	rc = vu_send(c, code, VU_VERSION | (c->reply_ack ? VU_NEED_REPLY : 0),
		     payload, size, fds, nfds);
	if (rc < 0 || !c->reply_ack)
		return rc;
	rc = vu_recv(c, code, &ack, sizeof(ack));
	if (rc < 0)
		return rc;
	if (ack != 0)
		return fail(c, -EPROTO, "request %u acknowledged with %llu",
			    code, (unsigned long long)ack);
	return 0;
}

int vu_set_u64(struct vu_client *c, uint32_t code, uint64_t v)
{
	return vu_set(c, code, &v, sizeof(v), NULL, 0);
}

int vu_set_state(struct vu_client *c, uint32_t code, uint32_t index,
		 uint32_t num)
{
	uint32_t s[2] = {index, num};

	return vu_set(c, code, s, sizeof(s), NULL, 0);
}

int vu_get_u64(struct vu_client *c, uint32_t code, uint64_t *v)
{
	int rc;

	rc = vu_send(c, code, VU_VERSION, NULL, 0, NULL, 0);
	if (rc < 0)
		return rc;
	return vu_recv(c, code, v, sizeof(*v));
}

int vu_get_vring_base(struct vu_client *c, unsigned qi, uint32_t *num)
{
	uint32_t s[2] = {qi, 0};
	int rc;

	rc = vu_send(c, VU_GET_VRING_BASE, VU_VERSION, s, sizeof(s), NULL, 0);
	if (rc < 0)
		return rc;
	rc = vu_recv(c, VU_GET_VRING_BASE, s, sizeof(s));
	if (rc < 0)
		return rc;
	if (s[0] != qi)
		return fail(c, -EPROTO, "GET_VRING_BASE answered for queue %u",
			    s[0]);
	*num = s[1];
	return 0;
}

int vu_get_config(struct vu_client *c, uint32_t offset, uint32_t size,
		  void *buf)
{
	uint8_t msg[12 + VU_MAX_PAYLOAD] = {0};
	uint32_t h[3] = {offset, size, 0};
	int rc;

	if (size > VU_MAX_PAYLOAD - 12)
		return -EINVAL;
	memcpy(msg, h, sizeof(h));
	rc = vu_send(c, VU_GET_CONFIG, VU_VERSION, msg, 12 + size, NULL, 0);
	if (rc < 0)
		return rc;
	rc = vu_recv(c, VU_GET_CONFIG, msg, 12 + size);
	if (rc < 0)
		return rc;
	memcpy(h, msg, sizeof(h));
	if (h[0] != offset || h[1] != size)
		return fail(c, -EPROTO,
			    "GET_CONFIG reply {offset %u, size %u}, asked "
			    "{%u, %u}",
			    h[0], h[1], offset, size);
	memcpy(buf, msg + 12, size);
	return 0;
}

int vu_peer_closed(struct vu_client *c, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	uint8_t payload[VU_MAX_PAYLOAD];
	uint32_t hdr[3];
	int rc;

	if (c->sock < 0)
		return 1;
	rc = vu_send(c, VU_GET_FEATURES, VU_VERSION, NULL, 0, NULL, 0);
	if (rc == -ECONNRESET)
		return 1;
	if (rc < 0)
		return rc;
	for (;;) {
		rc = recv_msg(c, hdr, payload, sizeof(payload), deadline);
		if (rc == -ECONNRESET)
			return 1;
		if (rc == -ETIMEDOUT)
			return 0;
		if (rc < 0)
			return rc;
		if (hdr[0] == VU_GET_FEATURES)
			return 0;
	}
}

/* --- connection and negotiation ------------------------------------------ */

static void queue_close_fds(struct vu_queue *q)
{
	if (q->kick_fd >= 0)
		close(q->kick_fd);
	if (q->call_fd >= 0)
		close(q->call_fd);
	q->kick_fd = -1;
	q->call_fd = -1;
}

void vu_disconnect(struct vu_client *c)
{
	unsigned i;

	if (c->sock >= 0)
		close(c->sock);
	c->sock = -1;
	for (i = 0; i < VU_MAX_QUEUES; i++)
		queue_close_fds(&c->q[i]);
	c->nqueues = 0;
	c->reply_ack = false;
}

static int connect_once(struct vu_client *c)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd, rc;

	memcpy(a.sun_path, c->path, strlen(c->path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	c->sock = fd;
	return 0;
}

int vu_connect(struct vu_client *c, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	int saved = c->timeout_ms;
	int rc;

	vu_disconnect(c);
	for (;;) {
		rc = connect_once(c);
		if (rc == 0) {
			/* A backend may still be tearing the last connection
			 * down: only an answer proves we are being served. */
			c->timeout_ms = 1000;
			rc = vu_get_u64(c, VU_GET_FEATURES, &c->features);
			c->timeout_ms = saved;
			if (rc == 0)
				return 0;
			vu_disconnect(c);
		}
		if (rc != -ENOENT && rc != -ECONNREFUSED && rc != -EAGAIN &&
		    rc != -ECONNRESET && rc != -ETIMEDOUT)
			return fail(c, rc, "connect %s: %s", c->path,
				    strerror(-rc));
		if (now_ms() >= deadline)
			return fail(c, rc,
				    "connect %s: %s (gave up after %d ms)",
				    c->path, strerror(-rc), timeout_ms);
		sleep_ms(20);
	}
}

static int set_mem_table(struct vu_client *c, unsigned n)
{
	uint8_t msg[8 + 32 * VU_MAX_REGIONS] = {0};
	int fds[VU_MAX_REGIONS];
	uint32_t num = n;
	unsigned i;

	memcpy(msg, &num, sizeof(num));
	for (i = 0; i < n; i++) {
		uint64_t r[4] = {c->reg[i].gpa, c->reg[i].size,
				 (uint64_t)(uintptr_t)c->reg[i].host, 0};

		memcpy(msg + 8 + 32 * i, r, sizeof(r));
		fds[i] = c->reg[i].fd;
	}
	return vu_set(c, VU_SET_MEM_TABLE, msg, 8 + 32 * n, fds, (int)n);
}

static int add_mem_reg(struct vu_client *c, unsigned i)
{
	uint64_t r[5] = {0, c->reg[i].gpa, c->reg[i].size,
			 (uint64_t)(uintptr_t)c->reg[i].host, 0};

	return vu_set(c, VU_ADD_MEM_REG, r, sizeof(r), &c->reg[i].fd, 1);
}

static int queue_alloc(struct vu_client *c, struct vu_queue *q,
		       const struct vu_opts *o)
{
	uint16_t n = q->size;
	unsigned i, slots = o->slots ? o->slots : 8;
	uint32_t bytes = o->slot_bytes ? o->slot_bytes : 65536;
	unsigned ind = o->ind_entries ? o->ind_entries : 16;

	free(q->free_desc);
	free(q->owner);
	free(q->reqs);
	q->free_desc = calloc(n, sizeof(*q->free_desc));
	q->owner = calloc(n, sizeof(*q->owner));
	q->reqs = calloc(slots, sizeof(*q->reqs));
	if (!q->free_desc || !q->owner || !q->reqs)
		return -ENOMEM;
	q->desc_gpa = vu_alloc(c, 16ull * n, 4096);
	q->avail_gpa = vu_alloc(c, 6 + 2ull * n, 4096);
	q->used_gpa = vu_alloc(c, 6 + 8ull * n, 4096);
	if (!q->desc_gpa || !q->avail_gpa || !q->used_gpa)
		return fail(c, -ENOMEM, "guest memory too small for rings");
	q->desc = vu_host(c, q->desc_gpa);
	q->avail = vu_host(c, q->avail_gpa);
	q->used = vu_host(c, q->used_gpa);
	q->nfree = n;
	for (i = 0; i < n; i++)
		q->free_desc[i] = (uint16_t)(n - 1 - i);
	q->nreqs = slots;
	for (i = 0; i < slots; i++) {
		struct vu_req *r = &q->reqs[i];
		uint64_t meta = vu_alloc(c, 64 + 16ull * ind, 64);

		r->q = q;
		r->slot = i;
		r->buf_cap = bytes;
		r->buf_gpa = vu_alloc(c, bytes, 4096);
		if (!meta || !r->buf_gpa)
			return fail(c, -ENOMEM,
				    "guest memory too small for %u slots of "
				    "%u bytes",
				    slots, bytes);
		r->hdr_gpa = meta;
		r->status_gpa = meta + 16;
		r->ind_gpa = meta + 64;
		r->ind_cap = ind;
		r->hdr = vu_host(c, r->hdr_gpa);
		r->status = vu_host(c, r->status_gpa);
		r->ind = vu_host(c, r->ind_gpa);
		r->buf = vu_host(c, r->buf_gpa);
	}
	return 0;
}

int vu_eventfd(void)
{
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	return fd < 0 ? -errno : fd;
}

static int queue_start(struct vu_client *c, struct vu_queue *q)
{
	struct {
		uint32_t index, flags;
		uint64_t desc, used, avail, log;
	} addr = {
	    .index = q->idx,
	    .desc = (uint64_t)(uintptr_t)q->desc,
	    .used = (uint64_t)(uintptr_t)q->used,
	    .avail = (uint64_t)(uintptr_t)q->avail,
	};
	int rc;

	q->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	q->call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (q->kick_fd < 0 || q->call_fd < 0)
		return fail(c, -errno, "eventfd: %s", strerror(errno));
	rc = vu_set_state(c, VU_SET_VRING_NUM, q->idx, q->size);
	if (rc == 0)
		rc = vu_set_state(c, VU_SET_VRING_BASE, q->idx, 0);
	if (rc == 0)
		rc = vu_set(c, VU_SET_VRING_ADDR, &addr, sizeof(addr), NULL, 0);
	if (rc == 0)
		rc = vu_set(c, VU_SET_VRING_CALL, &(uint64_t){q->idx},
			    sizeof(uint64_t), &q->call_fd, 1);
	if (rc == 0)
		rc = vu_set(c, VU_SET_VRING_KICK, &(uint64_t){q->idx},
			    sizeof(uint64_t), &q->kick_fd, 1);
	if (rc == 0 && (c->acked & VU_BIT(VU_F_PROTOCOL_FEATURES)))
		rc = vu_set_state(c, VU_SET_VRING_ENABLE, q->idx, 1);
	if (rc < 0 && !strstr(c->err, "queue"))
		snprintf(c->err + strlen(c->err),
			 sizeof(c->err) - strlen(c->err), " (queue %u)",
			 q->idx);
	return rc;
}

int vu_setup(struct vu_client *c, const struct vu_opts *o, int timeout_ms)
{
	uint64_t v;
	unsigned i, nq;
	int rc;

	rc = vu_connect(c, timeout_ms);
	if (rc < 0)
		return rc;
	for (i = 0; i < c->nregions; i++)
		memset(c->reg[i].host, 0, c->reg[i].size);
	c->brk = VU_GPA_BASE;
	c->acked = c->features & o->want_features;
	if (o->no_protocol_features)
		c->acked &= ~VU_BIT(VU_F_PROTOCOL_FEATURES);
	c->proto_features = 0;
	c->proto_acked = 0;
	c->dev_queues = 1;
	c->have_config = false;
	if (c->acked & VU_BIT(VU_F_PROTOCOL_FEATURES)) {
		rc =
		    vu_get_u64(c, VU_GET_PROTOCOL_FEATURES, &c->proto_features);
		if (rc < 0)
			return rc;
		c->proto_acked =
		    c->proto_features &
		    (VU_BIT(VU_PF_MQ) | VU_BIT(VU_PF_REPLY_ACK) |
		     VU_BIT(VU_PF_CONFIG) | VU_BIT(VU_PF_CONFIGURE_MEM_SLOTS));
		if (o->no_reply_ack)
			c->proto_acked &= ~VU_BIT(VU_PF_REPLY_ACK);
		rc = vu_set_u64(c, VU_SET_PROTOCOL_FEATURES, c->proto_acked);
		if (rc < 0)
			return rc;
		c->reply_ack = c->proto_acked & VU_BIT(VU_PF_REPLY_ACK);
	}
	if (c->proto_acked & VU_BIT(VU_PF_MQ)) {
		rc = vu_get_u64(c, VU_GET_QUEUE_NUM, &v);
		if (rc < 0)
			return rc;
		if (v < 1 || v > 0xffff)
			return fail(c, -EPROTO, "GET_QUEUE_NUM = %llu",
				    (unsigned long long)v);
		c->dev_queues = (unsigned)v;
	}
	rc = vu_set(c, VU_SET_OWNER, NULL, 0, NULL, 0);
	if (rc < 0)
		return rc;
	if (c->proto_acked & VU_BIT(VU_PF_CONFIG)) {
		rc = vu_get_config(c, 0, VU_CONFIG_SIZE, c->config);
		if (rc < 0)
			return rc;
		c->have_config = true;
		c->capacity = vu_config_get(c, 0, 8);
	}
	rc = vu_set_u64(c, VU_SET_FEATURES, c->acked);
	if (rc < 0)
		return rc;
	if (c->nregions > 1 && o->add_mem_reg &&
	    (c->proto_acked & VU_BIT(VU_PF_CONFIGURE_MEM_SLOTS))) {
		rc = set_mem_table(c, 1);
		for (i = 1; rc == 0 && i < c->nregions; i++)
			rc = add_mem_reg(c, i);
	} else {
		rc = set_mem_table(c, c->nregions);
	}
	if (rc < 0)
		return rc;
	nq = o->nqueues ? o->nqueues : c->dev_queues;
	if (nq > c->dev_queues || nq > VU_MAX_QUEUES)
		return fail(c, -EINVAL, "%u queues asked, device has %u", nq,
			    c->dev_queues);
	for (i = 0; i < nq; i++) {
		struct vu_queue *q = &c->q[i];

		q->c = c;
		q->idx = i;
		q->size = o->ring_size ? o->ring_size : 128;
		q->event_idx = c->acked & VU_BIT(VU_F_EVENT_IDX);
		q->avail_idx = 0;
		q->kicked_idx = 0;
		q->last_used = 0;
		rc = queue_alloc(c, q, o);
		if (rc < 0)
			return rc;
		rc = queue_start(c, q);
		if (rc < 0)
			return rc;
		c->nqueues = i + 1;
	}
	/* Without acknowledgements, a round trip proves every message before
	 * it was handled (messages are processed in order). */
	if (!c->reply_ack)
		return vu_get_u64(c, VU_GET_FEATURES, &v);
	return 0;
}

/* --- rings ---------------------------------------------------------------- */

static inline uint16_t *used_idx_p(struct vu_queue *q)
{
	return (uint16_t *)(q->used + 2);
}

static inline uint16_t *avail_event_p(struct vu_queue *q)
{
	return (uint16_t *)(q->used + 4 + 8 * (size_t)q->size);
}

struct vu_desc *vu_queue_desc(struct vu_queue *q, uint16_t i)
{
	return &q->desc[i];
}

void vu_queue_publish(struct vu_queue *q, uint16_t head)
{
	q->avail[2 + q->avail_idx % q->size] = head;
	q->avail_idx++;
	__atomic_store_n(&q->avail[1], q->avail_idx, __ATOMIC_RELEASE);
}

void vu_queue_set_avail_idx(struct vu_queue *q, uint16_t idx)
{
	q->avail_idx = idx;
	__atomic_store_n(&q->avail[1], idx, __ATOMIC_RELEASE);
}

int vu_queue_kick(struct vu_queue *q)
{
	uint64_t one = 1;

	q->kicked_idx = q->avail_idx;
	if (write(q->kick_fd, &one, sizeof(one)) != sizeof(one))
		return -errno;
	return 0;
}

int vu_queue_kick_if_needed(struct vu_queue *q)
{
	uint16_t old = q->kicked_idx, now = q->avail_idx;
	bool need;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (q->event_idx) {
		uint16_t ev =
		    __atomic_load_n(avail_event_p(q), __ATOMIC_RELAXED);

		need = (uint16_t)(now - ev - 1) < (uint16_t)(now - old);
	} else {
		need =
		    !(__atomic_load_n((uint16_t *)q->used, __ATOMIC_RELAXED) &
		      VU_USED_F_NO_NOTIFY);
	}
	q->kicked_idx = now;
	return need ? vu_queue_kick(q) : 0;
}

void vu_queue_want_irq(struct vu_queue *q, bool want)
{
	if (q->event_idx)
		__atomic_store_n(
		    &q->avail[2 + q->size],
		    (uint16_t)(want ? q->last_used : q->last_used + 0x8000),
		    __ATOMIC_RELAXED);
	else
		__atomic_store_n(&q->avail[0],
				 (uint16_t)(want ? 0 : VU_AVAIL_F_NO_INTERRUPT),
				 __ATOMIC_RELAXED);
}

int vu_queue_next_used(struct vu_queue *q, struct vu_used_elem *e)
{
	uint16_t idx = __atomic_load_n(used_idx_p(q), __ATOMIC_ACQUIRE);

	if (idx == q->last_used)
		return 0;
	memcpy(e, q->used + 4 + 8 * (size_t)(q->last_used % q->size),
	       sizeof(*e));
	q->last_used++;
	return 1;
}

int vu_queue_wait_used(struct vu_queue *q, int timeout_ms,
		       struct vu_used_elem *e)
{
	int64_t deadline = now_ms() + timeout_ms;
	uint64_t cnt;

	for (;;) {
		int64_t left;

		if (vu_queue_next_used(q, e))
			return 1;
		vu_queue_want_irq(q, true);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (vu_queue_next_used(q, e))
			return 1;
		left = deadline - now_ms();
		if (left <= 0)
			return 0;
		/* The ring is re-read every 10 ms too: a backend need not
		 * signal completions of chains it rejected. */
		if (wait_fd(q->call_fd, POLLIN, left < 10 ? (int)left : 10) ==
		    0) {
			if (read(q->call_fd, &cnt, sizeof(cnt)) < 0)
				cnt = 0;
		}
	}
}

int vu_desc_get(struct vu_queue *q)
{
	if (!q->nfree)
		return -ENOSPC;
	return q->free_desc[--q->nfree];
}

void vu_desc_put(struct vu_queue *q, uint16_t i)
{
	if (q->nfree < q->size)
		q->free_desc[q->nfree++] = i;
}

int vu_chain_add(struct vu_queue *q, const struct vu_desc *d, const int *link,
		 unsigned n, struct vu_chain *ch)
{
	unsigned i;

	if (n == 0 || n > VU_CHAIN_MAX || q->nfree < n)
		return -ENOSPC;
	ch->n = n;
	for (i = 0; i < n; i++)
		ch->desc[i] = (uint16_t)vu_desc_get(q);
	for (i = 0; i < n; i++) {
		int l =
		    link ? link[i] : (i + 1 < n ? VU_LINK_AUTO : VU_LINK_NONE);
		struct vu_desc *t = &q->desc[ch->desc[i]];

		*t = d[i];
		if (l == VU_LINK_NONE)
			continue;
		t->flags |= VU_DESC_F_NEXT;
		if (l == VU_LINK_AUTO)
			t->next = i + 1 < n ? ch->desc[i + 1] : ch->desc[0];
		else if (l >= 0x10000)
			t->next = (uint16_t)(l - 0x10000);
		else
			t->next = ch->desc[(unsigned)l < n ? l : 0];
	}
	ch->head = ch->desc[0];
	return 0;
}

void vu_chain_put(struct vu_queue *q, struct vu_chain *ch)
{
	unsigned i;

	for (i = 0; i < ch->n; i++)
		vu_desc_put(q, ch->desc[i]);
	ch->n = 0;
}

/* --- requests ------------------------------------------------------------ */

struct vu_req *vu_req_get(struct vu_queue *q)
{
	unsigned i;

	for (i = 0; i < q->nreqs; i++)
		if (!q->reqs[i].inflight)
			return &q->reqs[i];
	return NULL;
}

int vu_req_submit(struct vu_req *r, uint32_t type, uint64_t sector,
		  uint32_t len, unsigned nseg, unsigned flags)
{
	struct vu_queue *q = r->q;
	struct vu_desc d[2 + 16];
	uint16_t wflag = (type == VU_BLK_T_IN || type == VU_BLK_T_GET_ID)
			     ? VU_DESC_F_WRITE
			     : 0;
	unsigned n = 0, i, need;
	uint32_t off = 0;

	if (r->inflight)
		return -EBUSY;
	if (len > r->buf_cap || nseg > 16 || (len && !nseg) || nseg > len)
		return -EINVAL;
	d[n++] = (struct vu_desc){r->hdr_gpa, sizeof(*r->hdr), 0, 0};
	for (i = 0; i < nseg; i++) {
		uint32_t sl = i + 1 < nseg ? len / nseg : len - off;

		d[n++] = (struct vu_desc){r->buf_gpa + off, sl, wflag, 0};
		off += sl;
	}
	d[n++] = (struct vu_desc){r->status_gpa, 1, VU_DESC_F_WRITE, 0};
	need = (flags & VU_REQ_INDIRECT) ? 1 : n;
	if (q->nfree < need || ((flags & VU_REQ_INDIRECT) && n > r->ind_cap))
		return -ENOSPC;
	r->hdr->type = type;
	r->hdr->reserved = 0;
	r->hdr->sector = sector;
	*r->status = 0xff;
	r->ndesc = need;
	for (i = 0; i < need; i++)
		r->desc[i] = (uint16_t)vu_desc_get(q);
	if (flags & VU_REQ_INDIRECT) {
		for (i = 0; i < n; i++) {
			r->ind[i] = d[i];
			if (i + 1 < n) {
				r->ind[i].flags |= VU_DESC_F_NEXT;
				r->ind[i].next = (uint16_t)(i + 1);
			}
		}
		q->desc[r->desc[0]] =
		    (struct vu_desc){r->ind_gpa, 16 * n, VU_DESC_F_INDIRECT, 0};
	} else {
		for (i = 0; i < n; i++) {
			q->desc[r->desc[i]] = d[i];
			if (i + 1 < n) {
				q->desc[r->desc[i]].flags |= VU_DESC_F_NEXT;
				q->desc[r->desc[i]].next = r->desc[i + 1];
			}
		}
	}
	r->head = r->desc[0];
	r->inflight = true;
	r->used_len = 0;
	q->owner[r->head] = r;
	vu_queue_publish(q, r->head);
	return 0;
}

struct vu_req *vu_queue_complete(struct vu_queue *q,
				 const struct vu_used_elem *e)
{
	struct vu_req *r;
	unsigned i;

	if (e->id >= q->size || !q->owner[e->id])
		return NULL;
	r = q->owner[e->id];
	q->owner[e->id] = NULL;
	for (i = 0; i < r->ndesc; i++)
		vu_desc_put(q, r->desc[i]);
	r->ndesc = 0;
	r->inflight = false;
	r->used_len = e->len;
	return r;
}

int vu_req_run(struct vu_req *r, uint32_t type, uint64_t sector, uint32_t len,
	       unsigned nseg, unsigned flags)
{
	struct vu_queue *q = r->q;
	struct vu_used_elem e;
	int rc;

	rc = vu_req_submit(r, type, sector, len, nseg, flags);
	if (rc < 0)
		return rc;
	rc = vu_queue_kick(q);
	if (rc < 0)
		return rc;
	while (vu_queue_wait_used(q, q->c->timeout_ms, &e)) {
		if (vu_queue_complete(q, &e) == r)
			return *r->status;
	}
	return fail(q->c, -ETIMEDOUT, "no completion on queue %u within %d ms",
		    q->idx, q->c->timeout_ms);
}
