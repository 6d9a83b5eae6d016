/* vhost-user back end: framing, validation, handlers, replies.
 *
 * A message is handled in fixed steps, each of which may end the
 * connection:
 *   1. receive the 12-byte header (descriptors travel with it), check the
 *      code, version, reserved flags and size;
 *   2. receive exactly size payload bytes;
 *   3. look the code up in the handler table and check what the table says
 *      about it: handled at all, payload size, required protocol feature,
 *      descriptor rule, then the payload's own validity;
 *   4. run the handler (the device model);
 *   5. send the handler's reply, or the REPLY_ACK acknowledgement.
 * A failure in steps 1-3 is a malformed message: the connection ends with
 * no acknowledgement. A failure in step 4 is a well-formed request that the
 * device rejected: when REPLY_ACK applies, the front end gets a 1 before the
 * connection ends (backends.md §3.5, §3.7).
 *
 * Descriptors: every descriptor received lands in vu_msg.fds. A handler
 * that keeps one sets its slot to -1; handle_one closes all the others when
 * the message is done, on every path. */
#include "vhost/vhost_user.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/log.h"

#define VIRTIO_RING_F_EVENT_IDX (1ull << 29)
#define SIZE_VAR		UINT32_MAX

struct vu_hdr {
	uint32_t request;
	uint32_t flags;
	uint32_t size;
};

_Static_assert(sizeof(struct vu_hdr) == UB_VU_HDR_SIZE, "header layout");
_Static_assert(sizeof(struct ub_vu_vring_state) == 8, "vring state layout");
_Static_assert(sizeof(struct ub_vu_vring_addr) == 40, "vring addr layout");
_Static_assert(sizeof(struct ub_vu_region) == 32, "region layout");
_Static_assert(sizeof(struct ub_vu_mem_table_hdr) == 8, "table layout");
_Static_assert(sizeof(struct ub_vu_mem_reg) == 40, "mem reg layout");
_Static_assert(sizeof(struct ub_vu_config_hdr) == 12, "config layout");

struct vu_msg {
	struct vu_hdr hdr;
	unsigned char payload[UB_VU_MAX_PAYLOAD];
	int fds[UB_VU_MAX_FDS]; /* received; -1 once a handler kept it */
	unsigned nfds;
	bool fds_lost; /* more descriptors were sent than fit (all closed) */
};

struct vu_reply {
	bool send; /* the handler produced a reply payload */
	uint32_t size;
	unsigned char payload[UB_VU_MAX_PAYLOAD];
};

/* Descriptor rules (backends.md §3.5, §3.6). */
enum vu_fds {
	FDS_NONE,     /* no descriptor */
	FDS_VRING,    /* one, or none with the "no fd" bit (KICK/CALL/ERR) */
	FDS_TABLE,    /* one per region (SET_MEM_TABLE) */
	FDS_ONE,      /* exactly one */
	FDS_OPTIONAL, /* none or one, ignored (REM_MEM_REG) */
};

struct vu_handler {
	/* Checks the payload's own validity (step 3); NULL = nothing to. */
	int (*check)(const struct ub_vu_conn *c, const struct vu_msg *m,
		     struct ub_err *err);
	/* The device model (step 4). */
	int (*handle)(struct ub_vu_conn *c, struct vu_msg *m,
		      struct vu_reply *r, struct ub_err *err);
	uint32_t size; /* exact payload size, or SIZE_VAR */
	enum vu_fds fds;
	int feature; /* protocol feature bit the request needs, or -1 */
	bool ack;    /* answered only by an acknowledgement */
};

static const char *const request_names[UB_VU_REQUEST_MAX] = {
    [UB_VU_GET_FEATURES] = "GET_FEATURES",
    [UB_VU_SET_FEATURES] = "SET_FEATURES",
    [UB_VU_SET_OWNER] = "SET_OWNER",
    [UB_VU_RESET_OWNER] = "RESET_OWNER",
    [UB_VU_SET_MEM_TABLE] = "SET_MEM_TABLE",
    [UB_VU_SET_LOG_BASE] = "SET_LOG_BASE",
    [UB_VU_SET_LOG_FD] = "SET_LOG_FD",
    [UB_VU_SET_VRING_NUM] = "SET_VRING_NUM",
    [UB_VU_SET_VRING_ADDR] = "SET_VRING_ADDR",
    [UB_VU_SET_VRING_BASE] = "SET_VRING_BASE",
    [UB_VU_GET_VRING_BASE] = "GET_VRING_BASE",
    [UB_VU_SET_VRING_KICK] = "SET_VRING_KICK",
    [UB_VU_SET_VRING_CALL] = "SET_VRING_CALL",
    [UB_VU_SET_VRING_ERR] = "SET_VRING_ERR",
    [UB_VU_GET_PROTOCOL_FEATURES] = "GET_PROTOCOL_FEATURES",
    [UB_VU_SET_PROTOCOL_FEATURES] = "SET_PROTOCOL_FEATURES",
    [UB_VU_GET_QUEUE_NUM] = "GET_QUEUE_NUM",
    [UB_VU_SET_VRING_ENABLE] = "SET_VRING_ENABLE",
    [UB_VU_SEND_RARP] = "SEND_RARP",
    [UB_VU_NET_SET_MTU] = "NET_SET_MTU",
    [UB_VU_SET_BACKEND_REQ_FD] = "SET_BACKEND_REQ_FD",
    [UB_VU_IOTLB_MSG] = "IOTLB_MSG",
    [UB_VU_SET_VRING_ENDIAN] = "SET_VRING_ENDIAN",
    [UB_VU_GET_CONFIG] = "GET_CONFIG",
    [UB_VU_SET_CONFIG] = "SET_CONFIG",
    [UB_VU_CREATE_CRYPTO_SESSION] = "CREATE_CRYPTO_SESSION",
    [UB_VU_CLOSE_CRYPTO_SESSION] = "CLOSE_CRYPTO_SESSION",
    [UB_VU_POSTCOPY_ADVISE] = "POSTCOPY_ADVISE",
    [UB_VU_POSTCOPY_LISTEN] = "POSTCOPY_LISTEN",
    [UB_VU_POSTCOPY_END] = "POSTCOPY_END",
    [UB_VU_GET_INFLIGHT_FD] = "GET_INFLIGHT_FD",
    [UB_VU_SET_INFLIGHT_FD] = "SET_INFLIGHT_FD",
    [UB_VU_GPU_SET_SOCKET] = "GPU_SET_SOCKET",
    [UB_VU_RESET_DEVICE] = "RESET_DEVICE",
    [UB_VU_VRING_KICK] = "VRING_KICK",
    [UB_VU_GET_MAX_MEM_SLOTS] = "GET_MAX_MEM_SLOTS",
    [UB_VU_ADD_MEM_REG] = "ADD_MEM_REG",
    [UB_VU_REM_MEM_REG] = "REM_MEM_REG",
    [UB_VU_SET_STATUS] = "SET_STATUS",
    [UB_VU_GET_STATUS] = "GET_STATUS",
    [UB_VU_GET_SHARED_OBJECT] = "GET_SHARED_OBJECT",
    [UB_VU_SET_DEVICE_STATE_FD] = "SET_DEVICE_STATE_FD",
    [UB_VU_CHECK_DEVICE_STATE] = "CHECK_DEVICE_STATE",
    [UB_VU_GET_SHMEM_CONFIG] = "GET_SHMEM_CONFIG",
};

const char *ub_vu_request_name(uint32_t code)
{
	if (code < UB_VU_REQUEST_MAX && request_names[code])
		return request_names[code];
	return "UNKNOWN";
}

void ub_vu_conn_init(struct ub_vu_conn *c, int sock, int stop_fd,
		     struct ub_vhost_dev *dev)
{
	memset(c, 0, sizeof(*c));
	c->sock = sock;
	c->stop_fd = stop_fd;
	c->dev = dev;
}

/* ---- socket I/O -------------------------------------------------------- */

/* Waits until the socket is ready for ev (POLLIN/POLLOUT) or has hung up;
 * -ECANCELED when stop_fd became readable first. */
static int wait_sock(const struct ub_vu_conn *c, short ev)
{
	struct pollfd p[2] = {
	    {.fd = c->sock, .events = ev},
	    {.fd = c->stop_fd, .events = POLLIN},
	};
	nfds_t n = c->stop_fd >= 0 ? 2 : 1;

	for (;;) {
		if (poll(p, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 2 && p[1].revents)
			return -ECANCELED;
		if (p[0].revents)
			return 0; /* ready, or an error the next call reports */
	}
}

/* Transient socket errors that are retried (backends.md §3.5). */
static bool transient(int e)
{
	return e == EINTR || e == ENOBUFS || e == ENOMEM;
}

/* One recvmsg into buf; received descriptors are appended to m->fds.
 * Returns the byte count (0 = end of stream) or a negative errno. */
static ssize_t recv_some(const struct ub_vu_conn *c, struct vu_msg *m,
			 void *buf, size_t len)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(UB_VU_MAX_FDS * sizeof(int))];
	} ctl;
	struct iovec iov = {.iov_base = buf, .iov_len = len};
	struct msghdr mh = {
	    .msg_iov = &iov,
	    .msg_iovlen = 1,
	    .msg_control = ctl.buf,
	    .msg_controllen = sizeof(ctl.buf),
	};
	struct cmsghdr *cm;
	ssize_t n;

	n = recvmsg(c->sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0)
		return -errno;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		size_t k;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int),
			       sizeof(fd));
			if (m->nfds < UB_VU_MAX_FDS) {
				m->fds[m->nfds++] = fd;
			} else {
				close(fd);
				m->fds_lost = true;
			}
		}
	}
	/* The kernel closed whatever did not fit in the control buffer. */
	if (mh.msg_flags & MSG_CTRUNC)
		m->fds_lost = true;
	return n;
}

/* Receives up to len bytes into buf, stopping early only at the end of the
 * stream; *got says how many arrived. */
static int recv_full(const struct ub_vu_conn *c, struct vu_msg *m, void *buf,
		     size_t len, size_t *got)
{
	*got = 0;
	while (*got < len) {
		ssize_t n = recv_some(c, m, (char *)buf + *got, len - *got);
		int rc;

		if (n > 0) {
			*got += (size_t)n;
			continue;
		}
		if (n == 0)
			return 0;
		if (n == -EAGAIN || n == -EWOULDBLOCK) {
			rc = wait_sock(c, POLLIN);
			if (rc)
				return rc;
			continue;
		}
		if (transient((int)-n)) {
			if (n != -EINTR)
				usleep(1000);
			continue;
		}
		return (int)n;
	}
	return 0;
}

static int send_all(const struct ub_vu_conn *c, const void *buf, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = send(c->sock, (const char *)buf + off, len - off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		int rc;

		if (n >= 0) {
			off += (size_t)n;
			continue;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			rc = wait_sock(c, POLLOUT);
			if (rc)
				return rc;
			continue;
		}
		if (transient(errno)) {
			if (errno != EINTR)
				usleep(1000);
			continue;
		}
		return -errno;
	}
	return 0;
}

/* Sends a reply: the request's code, flags VERSION | REPLY, the payload. */
static int send_reply(const struct ub_vu_conn *c, uint32_t request,
		      const void *payload, uint32_t size, struct ub_err *err)
{
	unsigned char buf[UB_VU_HDR_SIZE + UB_VU_MAX_PAYLOAD];
	struct vu_hdr h = {
	    .request = request,
	    .flags = UB_VU_VERSION | UB_VU_FLAG_REPLY,
	    .size = size,
	};
	int rc;

	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), payload, size);
	rc = send_all(c, buf, sizeof(h) + size);
	if (rc && rc != -ECANCELED)
		ub_err_set(err, "sending the reply to %s failed: %s",
			   ub_vu_request_name(request), strerror(-rc));
	return rc;
}

/* ---- device-model helpers --------------------------------------------- */

static unsigned nqueues(const struct ub_vhost_dev *d)
{
	return d->params.num_queues;
}

static void pause_queue(struct ub_vhost_dev *d, unsigned q)
{
	if (d->workers[q])
		ub_vq_worker_pause(d->workers[q]);
}

static void resume_queue(struct ub_vhost_dev *d, unsigned q)
{
	if (d->workers[q])
		ub_vq_worker_resume(d->workers[q]);
}

static void pause_all(struct ub_vhost_dev *d)
{
	for (unsigned q = 0; q < nqueues(d); q++)
		pause_queue(d, q);
}

static void resume_all(struct ub_vhost_dev *d)
{
	for (unsigned q = 0; q < nqueues(d); q++)
		resume_queue(d, q);
}

static int check_index(const struct ub_vhost_dev *d, uint32_t index,
		       const char *what, struct ub_err *err)
{
	if (index < nqueues(d))
		return 0;
	return ub_err_ret(err, -EINVAL,
			  "%s: queue index %" PRIu32 " out of range (%u "
			  "queues)",
			  what, index, nqueues(d));
}

static void reply_u64(struct vu_reply *r, uint64_t v)
{
	r->send = true;
	r->size = sizeof(v);
	memcpy(r->payload, &v, sizeof(v));
}

static uint64_t payload_u64(const struct vu_msg *m)
{
	uint64_t v;

	memcpy(&v, m->payload, sizeof(v));
	return v;
}

static struct ub_vu_vring_state payload_state(const struct vu_msg *m)
{
	struct ub_vu_vring_state s;

	memcpy(&s, m->payload, sizeof(s));
	return s;
}

/* size != 0 and no 64-bit overflow of any end (backends.md §3.8). */
static int check_region(const struct ub_vu_region *r, const char *what,
			struct ub_err *err)
{
	if (r->size == 0)
		return ub_err_ret(err, -EINVAL, "%s: region of size 0", what);
	if (r->gpa + r->size < r->gpa ||
	    r->user_addr + r->size < r->user_addr ||
	    r->mmap_offset + r->size < r->mmap_offset)
		return ub_err_ret(err, -EINVAL,
				  "%s: region 0x%" PRIx64 "+0x%" PRIx64
				  " overflows",
				  what, r->gpa, r->size);
	return 0;
}

/* ---- handlers ---------------------------------------------------------- */

static int h_get_features(struct ub_vu_conn *c, struct vu_msg *m,
			  struct vu_reply *r, struct ub_err *err)
{
	c->features_sent = true;
	reply_u64(r, c->dev->features);
	return 0;
}

static int h_set_features(struct ub_vu_conn *c, struct vu_msg *m,
			  struct vu_reply *r, struct ub_err *err)
{
	struct ub_vhost_dev *d = c->dev;
	uint64_t v = payload_u64(m);
	uint64_t extra = v & ~d->features;

	if (extra)
		return ub_err_ret(err, -EINVAL,
				  "SET_FEATURES: feature bits 0x%" PRIx64
				  " were not offered",
				  extra);
	pause_all(d);
	d->acked_features = v;
	for (unsigned q = 0; q < nqueues(d); q++) {
		/* Without PROTOCOL_FEATURES rings start enabled. */
		if (!(v & UB_VU_F_PROTOCOL_FEATURES))
			d->vqs[q].enabled = true;
		d->vqs[q].event_idx = (v & VIRTIO_RING_F_EVENT_IDX) != 0;
	}
	resume_all(d);
	LOG_INFO("acked_features: 0x%" PRIx64, v);
	return 0;
}

static int h_set_owner(struct ub_vu_conn *c, struct vu_msg *m,
		       struct vu_reply *r, struct ub_err *err)
{
	if (c->dev->owner_set)
		return ub_err_ret(err, -EBUSY,
				  "SET_OWNER: the device already has an owner");
	c->dev->owner_set = true;
	return 0;
}

static int h_reset_owner(struct ub_vu_conn *c, struct vu_msg *m,
			 struct vu_reply *r, struct ub_err *err)
{
	/* The device model forgets its owner and features; the rings and
	 * this connection's protocol state stay (backends.md §3.6). */
	c->dev->owner_set = false;
	c->dev->acked_features = 0;
	c->dev->protocol_features = 0;
	return 0;
}

static int check_mem_table(const struct ub_vu_conn *c, const struct vu_msg *m,
			   struct ub_err *err)
{
	struct ub_vu_mem_table_hdr t;
	struct ub_vu_region reg;

	if (m->hdr.size < sizeof(t))
		return ub_err_ret(err, -EPROTO,
				  "SET_MEM_TABLE: payload of %" PRIu32
				  " bytes is too short",
				  m->hdr.size);
	memcpy(&t, m->payload, sizeof(t));
	if (t.nregions < 1 || t.nregions > UB_VU_MAX_TABLE_REGIONS)
		return ub_err_ret(err, -EPROTO,
				  "SET_MEM_TABLE: %" PRIu32
				  " regions (1..%d allowed)",
				  t.nregions, UB_VU_MAX_TABLE_REGIONS);
	if (t.padding != 0)
		return ub_err_ret(err, -EPROTO,
				  "SET_MEM_TABLE: padding is not zero");
	if (m->hdr.size != sizeof(t) + t.nregions * sizeof(reg))
		return ub_err_ret(err, -EPROTO,
				  "SET_MEM_TABLE: payload of %" PRIu32
				  " bytes for %" PRIu32 " regions",
				  m->hdr.size, t.nregions);
	if (m->nfds != t.nregions)
		return ub_err_ret(err, -EPROTO,
				  "SET_MEM_TABLE: %u file descriptors for "
				  "%" PRIu32 " regions",
				  m->nfds, t.nregions);
	for (uint32_t i = 0; i < t.nregions; i++) {
		memcpy(&reg, m->payload + sizeof(t) + i * sizeof(reg),
		       sizeof(reg));
		if (check_region(&reg, "SET_MEM_TABLE", err))
			return -EPROTO;
	}
	return 0;
}

static int h_set_mem_table(struct ub_vu_conn *c, struct vu_msg *m,
			   struct vu_reply *r, struct ub_err *err)
{
	struct ub_vhost_dev *d = c->dev;
	struct ub_vu_mem_table_hdr t;
	int rc = 0;

	memcpy(&t, m->payload, sizeof(t));
	pause_all(d);
	/* The new table replaces the old one entirely. */
	ub_guest_mem_clear(&d->mem);
	for (uint32_t i = 0; i < t.nregions; i++) {
		struct ub_vu_region reg;

		memcpy(&reg, m->payload + sizeof(t) + i * sizeof(reg),
		       sizeof(reg));
		rc = ub_guest_mem_add(&d->mem, reg.gpa, reg.size, reg.user_addr,
				      reg.mmap_offset, m->fds[i], err);
		if (rc) {
			ub_err_prefix(err, "SET_MEM_TABLE: region %" PRIu32, i);
			ub_guest_mem_clear(&d->mem);
			break;
		}
		LOG_DEBUG("vhost-user: region %" PRIu32 ": guest 0x%" PRIx64
			  " size 0x%" PRIx64 " user 0x%" PRIx64
			  " offset 0x%" PRIx64,
			  i, reg.gpa, reg.size, reg.user_addr, reg.mmap_offset);
	}
	resume_all(d);
	return rc;
}

static int check_vring_addr(const struct ub_vu_conn *c, const struct vu_msg *m,
			    struct ub_err *err)
{
	struct ub_vu_vring_addr a;

	memcpy(&a, m->payload, sizeof(a));
	if (a.flags & ~1u)
		return ub_err_ret(err, -EPROTO,
				  "SET_VRING_ADDR: unknown flags 0x%" PRIx32,
				  a.flags);
	if (a.desc % 16 || a.avail % 2 || a.used % 4)
		return ub_err_ret(err, -EPROTO,
				  "SET_VRING_ADDR: misaligned ring address");
	return 0;
}

static int h_set_vring_addr(struct ub_vu_conn *c, struct vu_msg *m,
			    struct vu_reply *r, struct ub_err *err)
{
	struct ub_vhost_dev *d = c->dev;
	struct ub_vu_vring_addr a;
	uint64_t desc, avail, used;
	struct ub_vq *vq;
	int rc;

	memcpy(&a, m->payload, sizeof(a));
	rc = check_index(d, a.index, "SET_VRING_ADDR", err);
	if (rc)
		return rc;
	if (d->mem.nregions == 0)
		return ub_err_ret(err, -EINVAL,
				  "SET_VRING_ADDR: no guest memory table yet");
	if (ub_guest_mem_va_to_gpa(&d->mem, a.desc, &desc) ||
	    ub_guest_mem_va_to_gpa(&d->mem, a.avail, &avail) ||
	    ub_guest_mem_va_to_gpa(&d->mem, a.used, &used))
		return ub_err_ret(err, -EFAULT,
				  "SET_VRING_ADDR: queue %" PRIu32
				  ": a ring address is not in guest memory",
				  a.index);
	vq = &d->vqs[a.index];
	pause_queue(d, a.index);
	vq->desc_gpa = desc;
	vq->avail_gpa = avail;
	vq->used_gpa = used;
	vq->addr_set = true;
	vq->broken = false; /* new rings: judged afresh */
	rc = ub_vq_map(vq, &d->mem);
	if (rc) {
		ub_err_set(err,
			   "SET_VRING_ADDR: queue %" PRIu32
			   ": the rings do not fit in guest memory",
			   a.index);
		goto fail;
	}
	/* The device continues from the used index the guest sees. */
	rc = ub_vq_sync_used_idx(vq, &d->mem);
	if (rc) {
		ub_err_set(err,
			   "SET_VRING_ADDR: queue %" PRIu32
			   ": cannot read the used index",
			   a.index);
		goto fail;
	}
	LOG_DEBUG("vhost-user: queue %" PRIu32 ": desc 0x%" PRIx64
		  " avail 0x%" PRIx64 " used 0x%" PRIx64 " (guest), used "
		  "idx %u",
		  a.index, desc, avail, used, vq->next_used);
	resume_queue(d, a.index);
	return 0;

fail:
	vq->addr_set = false;
	vq->desc = NULL;
	vq->avail = NULL;
	vq->used = NULL;
	resume_queue(d, a.index);
	return rc;
}

static int h_set_vring_num(struct ub_vu_conn *c, struct vu_msg *m,
			   struct vu_reply *r, struct ub_err *err)
{
	struct ub_vhost_dev *d = c->dev;
	struct ub_vu_vring_state s = payload_state(m);
	int rc;

	rc = check_index(d, s.index, "SET_VRING_NUM", err);
	if (rc)
		return rc;
	/* Any power of two the rings can address; the worker sizes its
	 * request slots per ring. */
	if (s.num == 0 || s.num > UB_VQ_MAX_SIZE || (s.num & (s.num - 1)))
		return ub_err_ret(err, -EINVAL,
				  "SET_VRING_NUM: queue %" PRIu32
				  ": size %" PRIu32
				  " is not a power of two in 1..%d",
				  s.index, s.num, UB_VQ_MAX_SIZE);
	pause_queue(d, s.index);
	d->vqs[s.index].size = (uint16_t)s.num;
	resume_queue(d, s.index);
	return 0;
}

static int h_set_vring_base(struct ub_vu_conn *c, struct vu_msg *m,
			    struct vu_reply *r, struct ub_err *err)
{
	struct ub_vhost_dev *d = c->dev;
	struct ub_vu_vring_state s = payload_state(m);
	int rc;

	rc = check_index(d, s.index, "SET_VRING_BASE", err);
	if (rc)
		return rc;
	pause_queue(d, s.index);
	d->vqs[s.index].last_avail = (uint16_t)s.num;
	resume_queue(d, s.index);
	return 0;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static int h_get_vring_base(struct ub_vu_conn *c, struct vu_msg *m,
			    struct vu_reply *r, struct ub_err *err)
{
	struct ub_vhost_dev *d = c->dev;
	struct ub_vu_vring_state s = payload_state(m);
	struct ub_vq *vq;
	int rc;

	rc = check_index(d, s.index, "GET_VRING_BASE", err);
	if (rc)
		return rc;
	vq = &d->vqs[s.index];
	/* Stop the ring: once paused, nothing is in flight on it. */
	pause_queue(d, s.index);
	vq->ready = false;
	close_fd(&vq->kick_fd);
	close_fd(&vq->call_fd);
	/* The ring's next life (a guest reboot on the same connection)
	 * starts clean. */
	vq->broken = false;
	s.num = vq->last_avail;
	resume_queue(d, s.index);
	r->send = true;
	r->size = sizeof(s);
	memcpy(r->payload, &s, sizeof(s));
	return 0;
}

static int check_vring_fd(const struct ub_vu_conn *c, const struct vu_msg *m,
			  struct ub_err *err)
{
	uint64_t v = payload_u64(m);
	unsigned want = (v & UB_VU_VRING_NOFD) ? 0 : 1;

	if (m->nfds != want)
		return ub_err_ret(err, -EPROTO,
				  "%s: %u file descriptors with the no-fd flag "
				  "%s",
				  ub_vu_request_name(m->hdr.request), m->nfds,
				  want ? "clear" : "set");
	return 0;
}

static int h_set_vring_fd(struct ub_vu_conn *c, struct vu_msg *m,
			  struct vu_reply *r, struct ub_err *err)
{
	struct ub_vhost_dev *d = c->dev;
	uint64_t v = payload_u64(m);
	uint32_t index = (uint32_t)(v & UB_VU_VRING_IDX_MASK);
	int fd = (v & UB_VU_VRING_NOFD) ? -1 : m->fds[0];
	struct ub_vq *vq;
	int *slot;
	int rc;

	rc = check_index(d, index, ub_vu_request_name(m->hdr.request), err);
	if (rc)
		return rc;
	vq = &d->vqs[index];
	if (m->hdr.request == UB_VU_SET_VRING_KICK)
		slot = &vq->kick_fd;
	else if (m->hdr.request == UB_VU_SET_VRING_CALL)
		slot = &vq->call_fd;
	else
		slot = &vq->err_fd;
	pause_queue(d, index);
	close_fd(slot);
	*slot = fd; /* the queue owns it now */
	if (fd >= 0)
		m->fds[0] = -1;
	/* A ring starts once it has a kick descriptor (§3.9); without one
	 * (polling mode) it never does. */
	if (m->hdr.request != UB_VU_SET_VRING_ERR && !vq->ready &&
	    vq->kick_fd >= 0) {
		vq->ready = true;
		LOG_DEBUG("vhost-user: queue %" PRIu32 " started", index);
	}
	resume_queue(d, index);
	return 0;
}

static int h_get_protocol_features(struct ub_vu_conn *c, struct vu_msg *m,
				   struct vu_reply *r, struct ub_err *err)
{
	reply_u64(r, UB_VU_PROTOCOL_FEATURES);
	return 0;
}

static int h_set_protocol_features(struct ub_vu_conn *c, struct vu_msg *m,
				   struct vu_reply *r, struct ub_err *err)
{
	/* Stored as sent (backends.md §3.4): later checks use this value. */
	c->protocol_features = payload_u64(m);
	c->dev->protocol_features = c->protocol_features;
	LOG_DEBUG("vhost-user: protocol features 0x%" PRIx64,
		  c->protocol_features);
	return 0;
}

static int h_get_queue_num(struct ub_vu_conn *c, struct vu_msg *m,
			   struct vu_reply *r, struct ub_err *err)
{
	reply_u64(r, nqueues(c->dev));
	return 0;
}

static int h_set_vring_enable(struct ub_vu_conn *c, struct vu_msg *m,
			      struct vu_reply *r, struct ub_err *err)
{
	struct ub_vhost_dev *d = c->dev;
	struct ub_vu_vring_state s = payload_state(m);
	int rc;

	if (!(d->acked_features & UB_VU_F_PROTOCOL_FEATURES))
		return ub_err_ret(err, -EINVAL,
				  "SET_VRING_ENABLE: PROTOCOL_FEATURES was "
				  "not acknowledged");
	if (s.num > 1)
		return ub_err_ret(
		    err, -EINVAL,
		    "SET_VRING_ENABLE: value %" PRIu32 " is not 0 or 1", s.num);
	rc = check_index(d, s.index, "SET_VRING_ENABLE", err);
	if (rc)
		return rc;
	pause_queue(d, s.index);
	d->vqs[s.index].enabled = s.num == 1;
	resume_queue(d, s.index);
	LOG_DEBUG("vhost-user: queue %" PRIu32 " %s", s.index,
		  s.num ? "enabled" : "disabled");
	return 0;
}

static int check_config(const struct ub_vu_conn *c, const struct vu_msg *m,
			struct ub_err *err)
{
	struct ub_vu_config_hdr h;
	const char *name = ub_vu_request_name(m->hdr.request);

	if (m->hdr.size < sizeof(h))
		return ub_err_ret(err, -EPROTO, "%s: payload too short", name);
	memcpy(&h, m->payload, sizeof(h));
	if (h.size == 0 || (uint64_t)h.offset + h.size > UB_VU_MAX_PAYLOAD ||
	    h.flags & ~UB_VU_CONFIG_FLAGS ||
	    m->hdr.size != sizeof(h) + (uint64_t)h.size)
		return ub_err_ret(err, -EPROTO,
				  "%s: invalid request (offset %" PRIu32
				  ", size %" PRIu32 ", flags 0x%" PRIx32
				  ", payload %" PRIu32 " bytes)",
				  name, h.offset, h.size, h.flags, m->hdr.size);
	return 0;
}

static int h_get_config(struct ub_vu_conn *c, struct vu_msg *m,
			struct vu_reply *r, struct ub_err *err)
{
	struct ub_vu_config_hdr h;
	uint32_t n;

	memcpy(&h, m->payload, sizeof(h));
	/* The offset is ignored: QEMU asks at 0, Cloud Hypervisor at 0x100,
	 * both mean the start of the virtio-blk configuration (§3.4). */
	n = h.size < UB_VIRTIO_BLK_CONFIG_SIZE ? h.size
					       : UB_VIRTIO_BLK_CONFIG_SIZE;
	if (h.size > UB_VIRTIO_BLK_CONFIG_SIZE)
		LOG_WARN("GET_CONFIG: %" PRIu32 " bytes asked, the "
			 "configuration has %d; the rest reads as zeros",
			 h.size, UB_VIRTIO_BLK_CONFIG_SIZE);
	memcpy(r->payload, &h, sizeof(h));
	memcpy(r->payload + sizeof(h), c->dev->config, n);
	memset(r->payload + sizeof(h) + n, 0, h.size - n);
	r->send = true;
	r->size = (uint32_t)sizeof(h) + h.size;
	return 0;
}

static int h_set_config(struct ub_vu_conn *c, struct vu_msg *m,
			struct vu_reply *r, struct ub_err *err)
{
	/* Accepted and ignored: the cache mode is fixed by write_through. */
	LOG_DEBUG("vhost-user: SET_CONFIG ignored");
	return 0;
}

static int h_reset_device(struct ub_vu_conn *c, struct vu_msg *m,
			  struct vu_reply *r, struct ub_err *err)
{
	struct ub_vhost_dev *d = c->dev;

	pause_all(d);
	for (unsigned q = 0; q < nqueues(d); q++)
		d->vqs[q].enabled = false;
	d->acked_features = 0;
	resume_all(d);
	return 0;
}

static int h_get_max_mem_slots(struct ub_vu_conn *c, struct vu_msg *m,
			       struct vu_reply *r, struct ub_err *err)
{
	reply_u64(r, UB_VU_MAX_MEM_SLOTS);
	return 0;
}

static int check_mem_reg(const struct ub_vu_conn *c, const struct vu_msg *m,
			 struct ub_err *err)
{
	struct ub_vu_mem_reg mr;

	memcpy(&mr, m->payload, sizeof(mr));
	if (check_region(&mr.region, ub_vu_request_name(m->hdr.request), err))
		return -EPROTO;
	return 0;
}

static int h_add_mem_reg(struct ub_vu_conn *c, struct vu_msg *m,
			 struct vu_reply *r, struct ub_err *err)
{
	struct ub_vhost_dev *d = c->dev;
	struct ub_vu_mem_reg mr;
	int rc;

	memcpy(&mr, m->payload, sizeof(mr));
	pause_all(d);
	rc = ub_guest_mem_add(&d->mem, mr.region.gpa, mr.region.size,
			      mr.region.user_addr, mr.region.mmap_offset,
			      m->fds[0], err);
	if (rc)
		ub_err_prefix(err, "ADD_MEM_REG");
	resume_all(d);
	LOG_DEBUG("vhost-user: add region guest 0x%" PRIx64 " size 0x%" PRIx64
		  " user 0x%" PRIx64 " offset 0x%" PRIx64 ": %s",
		  mr.region.gpa, mr.region.size, mr.region.user_addr,
		  mr.region.mmap_offset, rc ? "failed" : "ok");
	return rc;
}

static int h_rem_mem_reg(struct ub_vu_conn *c, struct vu_msg *m,
			 struct vu_reply *r, struct ub_err *err)
{
	struct ub_vhost_dev *d = c->dev;
	struct ub_vu_mem_reg mr;
	int rc;

	memcpy(&mr, m->payload, sizeof(mr));
	pause_all(d);
	rc = ub_guest_mem_remove(&d->mem, mr.region.gpa, mr.region.size, err);
	if (rc)
		ub_err_prefix(err, "REM_MEM_REG");
	resume_all(d);
	LOG_DEBUG("vhost-user: remove region guest 0x%" PRIx64
		  " size 0x%" PRIx64 ": %s",
		  mr.region.gpa, mr.region.size, rc ? "failed" : "ok");
	return rc;
}

static int h_set_device_state_fd(struct ub_vu_conn *c, struct vu_msg *m,
				 struct vu_reply *r, struct ub_err *err)
{
	/* Migration of device state is not supported: error + "no fd". */
	reply_u64(r, 0x101);
	return 0;
}

static int h_check_device_state(struct ub_vu_conn *c, struct vu_msg *m,
				struct vu_reply *r, struct ub_err *err)
{
	reply_u64(r, 1);
	return 0;
}

#define U64   sizeof(uint64_t)
#define STATE sizeof(struct ub_vu_vring_state)

/* Requests not listed (or with no handler) end the connection. */
static const struct vu_handler handlers[UB_VU_REQUEST_MAX] = {
    [UB_VU_GET_FEATURES] = {NULL, h_get_features, 0, FDS_NONE, -1, false},
    [UB_VU_SET_FEATURES] = {NULL, h_set_features, U64, FDS_NONE, -1, true},
    [UB_VU_SET_OWNER] = {NULL, h_set_owner, 0, FDS_NONE, -1, true},
    [UB_VU_RESET_OWNER] = {NULL, h_reset_owner, 0, FDS_NONE, -1, true},
    [UB_VU_SET_MEM_TABLE] = {check_mem_table, h_set_mem_table, SIZE_VAR,
			     FDS_TABLE, -1, true},
    [UB_VU_SET_VRING_NUM] = {NULL, h_set_vring_num, STATE, FDS_NONE, -1, true},
    [UB_VU_SET_VRING_ADDR] = {check_vring_addr, h_set_vring_addr,
			      sizeof(struct ub_vu_vring_addr), FDS_NONE, -1,
			      true},
    [UB_VU_SET_VRING_BASE] = {NULL, h_set_vring_base, STATE, FDS_NONE, -1,
			      true},
    [UB_VU_GET_VRING_BASE] = {NULL, h_get_vring_base, STATE, FDS_NONE, -1,
			      false},
    [UB_VU_SET_VRING_KICK] = {check_vring_fd, h_set_vring_fd, U64, FDS_VRING,
			      -1, true},
    [UB_VU_SET_VRING_CALL] = {check_vring_fd, h_set_vring_fd, U64, FDS_VRING,
			      -1, true},
    [UB_VU_SET_VRING_ERR] = {check_vring_fd, h_set_vring_fd, U64, FDS_VRING, -1,
			     true},
    [UB_VU_GET_PROTOCOL_FEATURES] = {NULL, h_get_protocol_features, 0, FDS_NONE,
				     -1, false},
    [UB_VU_SET_PROTOCOL_FEATURES] = {NULL, h_set_protocol_features, U64,
				     FDS_NONE, -1, true},
    [UB_VU_GET_QUEUE_NUM] = {NULL, h_get_queue_num, 0, FDS_NONE, UB_VU_PF_MQ,
			     false},
    [UB_VU_SET_VRING_ENABLE] = {NULL, h_set_vring_enable, STATE, FDS_NONE, -1,
				true},
    [UB_VU_GET_CONFIG] = {check_config, h_get_config, SIZE_VAR, FDS_NONE,
			  UB_VU_PF_CONFIG, false},
    [UB_VU_SET_CONFIG] = {check_config, h_set_config, SIZE_VAR, FDS_NONE,
			  UB_VU_PF_CONFIG, true},
    [UB_VU_RESET_DEVICE] = {NULL, h_reset_device, 0, FDS_NONE,
			    UB_VU_PF_RESET_DEVICE, true},
    [UB_VU_GET_MAX_MEM_SLOTS] = {NULL, h_get_max_mem_slots, 0, FDS_NONE,
				 UB_VU_PF_CONFIGURE_MEM_SLOTS, false},
    [UB_VU_ADD_MEM_REG] = {check_mem_reg, h_add_mem_reg,
			   sizeof(struct ub_vu_mem_reg), FDS_ONE,
			   UB_VU_PF_CONFIGURE_MEM_SLOTS, true},
    /* QEMU before 7.1 sends the region's descriptor along; it is
     * accepted and closed, as the vhost-user specification allows. */
    [UB_VU_REM_MEM_REG] = {check_mem_reg, h_rem_mem_reg,
			   sizeof(struct ub_vu_mem_reg), FDS_OPTIONAL,
			   UB_VU_PF_CONFIGURE_MEM_SLOTS, true},
    [UB_VU_SET_DEVICE_STATE_FD] = {NULL, h_set_device_state_fd, 8, FDS_ONE, -1,
				   false},
    [UB_VU_CHECK_DEVICE_STATE] = {NULL, h_check_device_state, 0, FDS_NONE, -1,
				  false},
};

/* ---- one message ------------------------------------------------------- */

/* Step 1: the header alone. */
static int check_header(const struct vu_msg *m, struct ub_err *err)
{
	const struct vu_hdr *h = &m->hdr;

	if (h->request == 0 || h->request >= UB_VU_REQUEST_MAX)
		return ub_err_ret(err, -EPROTO,
				  "invalid message: unknown request code "
				  "%" PRIu32,
				  h->request);
	if ((h->flags & UB_VU_VERSION_MASK) != UB_VU_VERSION)
		return ub_err_ret(err, -EPROTO,
				  "invalid message: %s with protocol version "
				  "%" PRIu32 " (only 1 is supported)",
				  ub_vu_request_name(h->request),
				  h->flags & UB_VU_VERSION_MASK);
	if (h->flags &
	    ~(UB_VU_VERSION_MASK | UB_VU_FLAG_REPLY | UB_VU_FLAG_NEED_REPLY))
		return ub_err_ret(err, -EPROTO,
				  "invalid message: %s with reserved flag bits "
				  "0x%" PRIx32,
				  ub_vu_request_name(h->request), h->flags);
	if (h->size > UB_VU_MAX_PAYLOAD)
		return ub_err_ret(err, -EPROTO,
				  "invalid message: %s with a payload of "
				  "%" PRIu32 " bytes (at most %d)",
				  ub_vu_request_name(h->request), h->size,
				  UB_VU_MAX_PAYLOAD);
	return 0;
}

/* Step 3: everything the table says about the request. */
static int check_request(const struct ub_vu_conn *c, const struct vu_msg *m,
			 const struct vu_handler *h, struct ub_err *err)
{
	const char *name = ub_vu_request_name(m->hdr.request);
	bool fds_ok;

	if (!h->handle)
		return ub_err_ret(err, -EPROTO,
				  "unsupported request %s (%" PRIu32 ")", name,
				  m->hdr.request);
	if (m->hdr.flags & UB_VU_FLAG_REPLY)
		return ub_err_ret(err, -EPROTO,
				  "invalid message: %s with the REPLY flag",
				  name);
	if (h->size != SIZE_VAR && m->hdr.size != h->size)
		return ub_err_ret(err, -EPROTO,
				  "invalid message: %s with a payload of "
				  "%" PRIu32 " bytes (expected %" PRIu32 ")",
				  name, m->hdr.size, h->size);
	if (h->feature >= 0 && !(c->protocol_features & (1ull << h->feature)))
		return ub_err_ret(err, -EPROTO,
				  "%s needs protocol feature bit %d, which "
				  "was not negotiated",
				  name, h->feature);
	if (m->fds_lost)
		return ub_err_ret(err, -EPROTO,
				  "invalid message: %s with more than %d file "
				  "descriptors",
				  name, UB_VU_MAX_FDS);
	switch (h->fds) {
	case FDS_NONE:
		fds_ok = m->nfds == 0;
		break;
	case FDS_ONE:
		fds_ok = m->nfds == 1;
		break;
	case FDS_VRING:
	case FDS_OPTIONAL:
		fds_ok = m->nfds <= 1;
		break;
	case FDS_TABLE:
	default:
		fds_ok = true; /* check_mem_table counts them */
		break;
	}
	if (!fds_ok)
		return ub_err_ret(err, -EPROTO,
				  "invalid message: %s with %u file "
				  "descriptors",
				  name, m->nfds);
	return h->check ? h->check(c, m, err) : 0;
}

static bool reply_ack_enabled(const struct ub_vu_conn *c)
{
	return c->features_sent &&
	       (c->dev->features & UB_VU_F_PROTOCOL_FEATURES) &&
	       (c->protocol_features & (1ull << UB_VU_PF_REPLY_ACK));
}

static int dispatch(struct ub_vu_conn *c, struct vu_msg *m, struct ub_err *err)
{
	const struct vu_handler *h = &handlers[m->hdr.request];
	struct vu_reply r;
	struct ub_err ack_err;
	int rc, src;

	rc = check_request(c, m, h, err);
	if (rc)
		return rc;
	r.send = false;
	r.size = 0;
	rc = h->handle(c, m, &r, err);
	if (h->ack) {
		uint64_t v = rc ? 1 : 0;

		if (!(m->hdr.flags & UB_VU_FLAG_NEED_REPLY) ||
		    !reply_ack_enabled(c))
			return rc;
		src = send_reply(c, m->hdr.request, &v, sizeof(v),
				 rc ? &ack_err : err);
		return rc ? rc : src;
	}
	if (rc)
		return rc;
	return r.send ? send_reply(c, m->hdr.request, r.payload, r.size, err)
		      : 0;
}

int ub_vu_handle_one(struct ub_vu_conn *c, struct ub_err *err)
{
	struct vu_msg m;
	size_t got;
	int rc;

	m.nfds = 0;
	m.fds_lost = false;
	rc = recv_full(c, &m, &m.hdr, sizeof(m.hdr), &got);
	if (rc)
		goto sock_err;
	if (got == 0 && m.nfds == 0 && !m.fds_lost)
		return 1; /* closed between two messages */
	if (got < sizeof(m.hdr)) {
		rc = ub_err_ret(err, -EPROTO,
				"partial message: the connection ended after "
				"%zu header bytes",
				got);
		goto out;
	}
	rc = check_header(&m, err);
	if (rc)
		goto out;
	rc = recv_full(c, &m, m.payload, m.hdr.size, &got);
	if (rc)
		goto sock_err;
	if (got < m.hdr.size) {
		rc = ub_err_ret(err, -EPROTO,
				"invalid message: %s payload truncated "
				"(%zu of %" PRIu32 " bytes)",
				ub_vu_request_name(m.hdr.request), got,
				m.hdr.size);
		goto out;
	}
	c->nmsgs++;
	LOG_DEBUG("vhost-user: %s (%" PRIu32 "), flags 0x%" PRIx32 ", %" PRIu32
		  " bytes, %u fds",
		  ub_vu_request_name(m.hdr.request), m.hdr.request, m.hdr.flags,
		  m.hdr.size, m.nfds);
	rc = dispatch(c, &m, err);
	goto out;

sock_err:
	if (rc != -ECANCELED)
		ub_err_set(err, "receiving from the front end failed: %s",
			   strerror(-rc));
out:
	for (unsigned i = 0; i < m.nfds; i++)
		if (m.fds[i] >= 0)
			close(m.fds[i]);
	return rc;
}

int ub_vu_serve(struct ub_vu_conn *c, struct ub_err *err)
{
	for (;;) {
		int rc = ub_vu_handle_one(c, err);

		if (rc == 1)
			return 0;
		if (rc)
			return rc;
	}
}
