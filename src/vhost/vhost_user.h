/* vhost-user protocol, back-end side (backends.md §3.4-§3.9): message
 * framing and validation, the request handlers that drive a struct
 * ub_vhost_dev, replies and REPLY_ACK acknowledgements, and the message
 * loop of one connection.
 *
 * The front end is untrusted: every header, payload and file descriptor is
 * checked before use, a message never allocates (payloads are at most 4096
 * bytes, at most 32 descriptors), and every descriptor received that is not
 * kept by the device is closed on every path. Any protocol error ends the
 * connection (the caller tears it down and accepts the next one); nothing
 * here exits the process.
 *
 * Threads: one control thread per connection runs ub_vu_serve; it pauses
 * the queue workers concerned before touching a queue or the guest memory
 * table (vhost_dev.h). */
#ifndef UB_VHOST_VHOST_USER_H
#define UB_VHOST_VHOST_USER_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"
#include "vhost/vhost_dev.h"

#define UB_VU_HDR_SIZE		12
#define UB_VU_MAX_PAYLOAD	4096
#define UB_VU_MAX_FDS		32
#define UB_VU_MAX_MEM_SLOTS	509 /* GET_MAX_MEM_SLOTS */
#define UB_VU_MAX_TABLE_REGIONS 32  /* SET_MEM_TABLE */

/* Header flags. */
#define UB_VU_VERSION	      0x1u
#define UB_VU_VERSION_MASK    0x3u
#define UB_VU_FLAG_REPLY      0x4u
#define UB_VU_FLAG_NEED_REPLY 0x8u

/* Virtio feature bit of the vhost-user transport. */
#define UB_VU_F_PROTOCOL_FEATURES (1ull << 30)

/* Protocol feature bits. */
enum {
	UB_VU_PF_MQ = 0,
	UB_VU_PF_LOG_SHMFD = 1,
	UB_VU_PF_REPLY_ACK = 3,
	UB_VU_PF_BACKEND_REQ = 5,
	UB_VU_PF_CONFIG = 9,
	UB_VU_PF_INFLIGHT_SHMFD = 12,
	UB_VU_PF_RESET_DEVICE = 13,
	UB_VU_PF_CONFIGURE_MEM_SLOTS = 15,
	UB_VU_PF_SHARED_OBJECT = 18,
};

/* What GET_PROTOCOL_FEATURES offers: MQ | REPLY_ACK | CONFIG |
 * CONFIGURE_MEM_SLOTS. */
#define UB_VU_PROTOCOL_FEATURES 0x8209ull

/* Request codes (front end to back end). */
enum ub_vu_request {
	UB_VU_GET_FEATURES = 1,
	UB_VU_SET_FEATURES = 2,
	UB_VU_SET_OWNER = 3,
	UB_VU_RESET_OWNER = 4,
	UB_VU_SET_MEM_TABLE = 5,
	UB_VU_SET_LOG_BASE = 6,
	UB_VU_SET_LOG_FD = 7,
	UB_VU_SET_VRING_NUM = 8,
	UB_VU_SET_VRING_ADDR = 9,
	UB_VU_SET_VRING_BASE = 10,
	UB_VU_GET_VRING_BASE = 11,
	UB_VU_SET_VRING_KICK = 12,
	UB_VU_SET_VRING_CALL = 13,
	UB_VU_SET_VRING_ERR = 14,
	UB_VU_GET_PROTOCOL_FEATURES = 15,
	UB_VU_SET_PROTOCOL_FEATURES = 16,
	UB_VU_GET_QUEUE_NUM = 17,
	UB_VU_SET_VRING_ENABLE = 18,
	UB_VU_SEND_RARP = 19,
	UB_VU_NET_SET_MTU = 20,
	UB_VU_SET_BACKEND_REQ_FD = 21,
	UB_VU_IOTLB_MSG = 22,
	UB_VU_SET_VRING_ENDIAN = 23,
	UB_VU_GET_CONFIG = 24,
	UB_VU_SET_CONFIG = 25,
	UB_VU_CREATE_CRYPTO_SESSION = 26,
	UB_VU_CLOSE_CRYPTO_SESSION = 27,
	UB_VU_POSTCOPY_ADVISE = 28,
	UB_VU_POSTCOPY_LISTEN = 29,
	UB_VU_POSTCOPY_END = 30,
	UB_VU_GET_INFLIGHT_FD = 31,
	UB_VU_SET_INFLIGHT_FD = 32,
	UB_VU_GPU_SET_SOCKET = 33,
	UB_VU_RESET_DEVICE = 34,
	UB_VU_VRING_KICK = 35,
	UB_VU_GET_MAX_MEM_SLOTS = 36,
	UB_VU_ADD_MEM_REG = 37,
	UB_VU_REM_MEM_REG = 38,
	UB_VU_SET_STATUS = 39,
	UB_VU_GET_STATUS = 40,
	UB_VU_GET_SHARED_OBJECT = 41,
	UB_VU_SET_DEVICE_STATE_FD = 42,
	UB_VU_CHECK_DEVICE_STATE = 43,
	UB_VU_GET_SHMEM_CONFIG = 44,
	UB_VU_REQUEST_MAX, /* first code that is not defined */
};

/* Payload layouts (little-endian, no padding). */
struct ub_vu_vring_state {
	uint32_t index;
	uint32_t num;
};

struct ub_vu_vring_addr {
	uint32_t index;
	uint32_t flags; /* bit 0: LOG (ignored) */
	uint64_t desc;	/* front-end virtual addresses */
	uint64_t used;
	uint64_t avail;
	uint64_t log;
};

struct ub_vu_region {
	uint64_t gpa;
	uint64_t size;
	uint64_t user_addr;
	uint64_t mmap_offset;
};

struct ub_vu_mem_table_hdr {
	uint32_t nregions; /* followed by nregions struct ub_vu_region */
	uint32_t padding;
};

struct ub_vu_mem_reg {
	uint64_t padding;
	struct ub_vu_region region;
};

struct ub_vu_config_hdr {
	uint32_t offset;
	uint32_t size; /* followed by size bytes */
	uint32_t flags;
};

/* SET_VRING_KICK/CALL/ERR payload bits. */
#define UB_VU_VRING_IDX_MASK 0xffull
#define UB_VU_VRING_NOFD     (1ull << 8)

/* GET_CONFIG / SET_CONFIG flags. */
#define UB_VU_CONFIG_FLAGS (0x1u | 0x2u) /* WRITABLE | LIVE_MIGRATION */

/* One connection's protocol state. */
struct ub_vu_conn {
	int sock;    /* connected socket (borrowed) */
	int stop_fd; /* readable = stop serving, or -1 (borrowed) */
	struct ub_vhost_dev *dev;   /* device model (borrowed) */
	uint64_t protocol_features; /* last SET_PROTOCOL_FEATURES */
	bool features_sent;	    /* a GET_FEATURES was answered */
	uint64_t nmsgs;		    /* messages handled */
};

void ub_vu_conn_init(struct ub_vu_conn *c, int sock, int stop_fd,
		     struct ub_vhost_dev *dev);

/* Serves messages until the connection ends. Returns 0 when the front end
 * closed the socket between two messages, -ECANCELED when stop_fd became
 * readable (nothing is read from it), -ECONNRESET or -EPIPE when the socket
 * broke, any other negative errno for a protocol error (err says what was
 * wrong). The socket is not closed. */
int ub_vu_serve(struct ub_vu_conn *c, struct ub_err *err);

/* Receives and handles exactly one message: 0 handled, 1 end of stream
 * before a header, negative errno as for ub_vu_serve. */
int ub_vu_handle_one(struct ub_vu_conn *c, struct ub_err *err);

/* "GET_FEATURES", ..., or "UNKNOWN". */
const char *ub_vu_request_name(uint32_t code);

#endif
