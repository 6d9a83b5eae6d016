/* A vhost-user-blk front end for tests: it plays the part of the VMM and of
 * the guest driver at once, so that a backend can be driven without a VM.
 *
 * A struct vu_client owns the Unix socket, the guest memory (one or two
 * memfd regions, adjacent in guest-physical space, mapped here and shared
 * with the backend) and one struct vu_queue per virtqueue: the split ring
 * laid out in guest memory, its kick and call eventfds, a descriptor
 * allocator and a set of request slots (struct vu_req) with their header,
 * status byte, data buffer and indirect table.
 *
 * Everything can be done by hand too: raw messages, raw descriptors and raw
 * avail-ring entries, for hostile tests.
 *
 * Threads: one thread may drive each queue once vu_setup() has returned;
 * everything else is single-threaded. Functions return 0 (or a count) or a
 * negative errno and never exit; vu_errmsg() tells what went wrong last. */
#ifndef VU_CLIENT_H
#define VU_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* vhost-user request codes */
enum {
	VU_GET_FEATURES = 1,
	VU_SET_FEATURES = 2,
	VU_SET_OWNER = 3,
	VU_RESET_OWNER = 4,
	VU_SET_MEM_TABLE = 5,
	VU_SET_LOG_BASE = 6,
	VU_SET_LOG_FD = 7,
	VU_SET_VRING_NUM = 8,
	VU_SET_VRING_ADDR = 9,
	VU_SET_VRING_BASE = 10,
	VU_GET_VRING_BASE = 11,
	VU_SET_VRING_KICK = 12,
	VU_SET_VRING_CALL = 13,
	VU_SET_VRING_ERR = 14,
	VU_GET_PROTOCOL_FEATURES = 15,
	VU_SET_PROTOCOL_FEATURES = 16,
	VU_GET_QUEUE_NUM = 17,
	VU_SET_VRING_ENABLE = 18,
	VU_GET_CONFIG = 24,
	VU_SET_CONFIG = 25,
	VU_GET_MAX_MEM_SLOTS = 36,
	VU_ADD_MEM_REG = 37,
	VU_REM_MEM_REG = 38,
};

/* header flags */
#define VU_VERSION    0x1u
#define VU_REPLY      0x4u
#define VU_NEED_REPLY 0x8u

#define VU_HDR_SIZE	12
#define VU_MAX_PAYLOAD	4096
#define VU_VRING_NOFD	0x100u /* SET_VRING_KICK/CALL: no fd attached */
#define VU_MAX_QUEUES	16
#define VU_MAX_REGIONS	2
#define VU_GPA_BASE	0x100000ull /* guest-physical base of region 0 */
#define VU_CONFIG_SIZE	60	    /* struct virtio_blk_config */
#define VU_BLK_ID_BYTES 20

/* vhost-user protocol feature bits */
#define VU_PF_MQ		  0
#define VU_PF_REPLY_ACK		  3
#define VU_PF_CONFIG		  9
#define VU_PF_CONFIGURE_MEM_SLOTS 15

/* virtio feature bits */
#define VU_F_SIZE_MAX	       1
#define VU_F_SEG_MAX	       2
#define VU_F_RO		       5
#define VU_F_BLK_SIZE	       6
#define VU_F_FLUSH	       9
#define VU_F_TOPOLOGY	       10
#define VU_F_CONFIG_WCE	       11
#define VU_F_MQ		       12
#define VU_F_DISCARD	       13
#define VU_F_WRITE_ZEROES      14
#define VU_F_NOTIFY_ON_EMPTY   24
#define VU_F_LOG_ALL	       26
#define VU_F_INDIRECT_DESC     28
#define VU_F_EVENT_IDX	       29
#define VU_F_PROTOCOL_FEATURES 30
#define VU_F_VERSION_1	       32
#define VU_F_ACCESS_PLATFORM   33
#define VU_F_RING_PACKED       34
#define VU_BIT(b)	       (1ull << (b))

/* virtio-blk request types and status values */
#define VU_BLK_T_IN	      0
#define VU_BLK_T_OUT	      1
#define VU_BLK_T_FLUSH	      4
#define VU_BLK_T_GET_ID	      8
#define VU_BLK_T_DISCARD      11
#define VU_BLK_T_WRITE_ZEROES 13
#define VU_BLK_S_OK	      0
#define VU_BLK_S_IOERR	      1
#define VU_BLK_S_UNSUPP	      2

/* split-ring descriptor flags */
#define VU_DESC_F_NEXT		1
#define VU_DESC_F_WRITE		2
#define VU_DESC_F_INDIRECT	4
#define VU_USED_F_NO_NOTIFY	1
#define VU_AVAIL_F_NO_INTERRUPT 1

struct vu_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct vu_used_elem {
	uint32_t id;
	uint32_t len;
};

struct vu_blk_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

/* virtio-blk discard / write-zeroes segment */
struct vu_blk_dwz {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};

struct vu_region {
	int fd;	       /* memfd, owned */
	uint8_t *host; /* our mapping, owned */
	uint64_t gpa;  /* guest-physical base */
	uint64_t size;
};

struct vu_queue;

/* One request slot: guest buffers for one virtio-blk request. */
struct vu_req {
	struct vu_queue *q;
	unsigned slot;
	bool inflight;
	uint16_t head;	  /* head descriptor while in flight */
	uint16_t desc[8]; /* main-table descriptors it holds */
	unsigned ndesc;
	struct vu_blk_hdr *hdr; /* 16 bytes, device-readable */
	uint64_t hdr_gpa;
	uint8_t *status; /* 1 byte, device-writable */
	uint64_t status_gpa;
	uint8_t *buf; /* data */
	uint64_t buf_gpa;
	uint32_t buf_cap;
	struct vu_desc *ind; /* indirect table */
	uint64_t ind_gpa;
	unsigned ind_cap;
	uint32_t used_len; /* from the used ring, on completion */
	uint64_t user;	   /* caller's use */
};

struct vu_queue {
	struct vu_client *c;
	unsigned idx;
	uint16_t size;
	bool event_idx;
	struct vu_desc *desc;
	uint16_t *avail; /* flags, idx, ring[size], used_event */
	uint8_t *used;	 /* flags, idx, {id,len}[size], avail_event */
	uint64_t desc_gpa, avail_gpa, used_gpa;
	int kick_fd, call_fd; /* eventfds, owned */
	uint16_t avail_idx;   /* next avail->idx we publish */
	uint16_t kicked_idx;  /* avail_idx at the last kick */
	uint16_t last_used;   /* next used entry to consume */
	uint16_t *free_desc;  /* stack of free descriptor indexes */
	unsigned nfree;
	struct vu_req **owner; /* head -> request slot, NULL for raw chains */
	struct vu_req *reqs;
	unsigned nreqs;
};

/* What vu_setup() negotiates and builds. */
struct vu_opts {
	uint64_t want_features;	   /* acked = offered & want_features */
	bool no_protocol_features; /* do not ack bit 30 even if offered */
	bool no_reply_ack;	   /* do not ack REPLY_ACK */
	bool add_mem_reg;	   /* second region via ADD_MEM_REG */
	unsigned nqueues;	   /* 0 = every queue the device offers */
	uint16_t ring_size;	   /* 0 = 128 */
	unsigned slots;		   /* request slots per queue (0 = 8) */
	uint32_t slot_bytes;	   /* data bytes per slot (0 = 64 KiB) */
	unsigned ind_entries;	   /* indirect entries per slot (0 = 16) */
};

struct vu_client {
	char path[108];
	int sock;
	int timeout_ms; /* for replies and completions */
	struct vu_region reg[VU_MAX_REGIONS];
	unsigned nregions;
	uint64_t mem_size; /* sum of the regions */
	uint64_t brk;	   /* bump allocator, guest-physical */
	/* negotiated */
	uint64_t features;	 /* offered by the device */
	uint64_t acked;		 /* what we set */
	uint64_t proto_features; /* offered */
	uint64_t proto_acked;
	bool reply_ack;	     /* REPLY_ACK in use: NEED_REPLY on every setter */
	unsigned dev_queues; /* GET_QUEUE_NUM, or 1 */
	uint8_t config[VU_CONFIG_SIZE];
	bool have_config;
	uint64_t capacity; /* sectors, from the config space */
	struct vu_queue q[VU_MAX_QUEUES];
	unsigned nqueues; /* queues set up */
	char err[256];
};

/* Creates the guest memory (mem_size bytes in nregions memfd regions,
 * nregions 1 or 2) and remembers the socket path; no connection yet.
 * Free with vu_client_free(). */
int vu_client_new(struct vu_client **out, const char *path, uint64_t mem_size,
		  unsigned nregions);
void vu_client_free(struct vu_client *c);
const char *vu_errmsg(const struct vu_client *c);

/* Connects, retrying for up to timeout_ms while the socket is absent,
 * refused, or reset before a GET_FEATURES probe answers (a backend that
 * re-listens after a connection ended). Drops any previous connection. */
int vu_connect(struct vu_client *c, int timeout_ms);
/* Closes the socket and the queues' eventfds (guest memory is kept). */
void vu_disconnect(struct vu_client *c);
/* vu_connect + feature/protocol negotiation + SET_OWNER + GET_CONFIG +
 * SET_MEM_TABLE (+ ADD_MEM_REG) + every queue started and enabled. Resets
 * the allocator and zeroes guest memory first. */
int vu_setup(struct vu_client *c, const struct vu_opts *o, int timeout_ms);

/* --- messages -------------------------------------------------------- */

/* Sends one message: header {code, flags, size} then size payload bytes
 * (payload may be shorter than size only through vu_send_raw). */
int vu_send(struct vu_client *c, uint32_t code, uint32_t flags,
	    const void *payload, uint32_t size, const int *fds, int nfds);
/* Sends len arbitrary bytes with fds attached (hostile tests). */
int vu_send_raw(struct vu_client *c, const void *buf, size_t len,
		const int *fds, int nfds);
/* Receives one reply to code; its payload must be exactly size bytes.
 * -ECONNRESET when the peer closed, -ETIMEDOUT after c->timeout_ms. */
int vu_recv(struct vu_client *c, uint32_t code, void *payload, uint32_t size);
/* A request without a reply payload: sent with NEED_REPLY when REPLY_ACK is
 * in use, then the acknowledgement must be 0 (-EPROTO otherwise). */
int vu_set(struct vu_client *c, uint32_t code, const void *payload,
	   uint32_t size, const int *fds, int nfds);
int vu_set_u64(struct vu_client *c, uint32_t code, uint64_t v);
int vu_set_state(struct vu_client *c, uint32_t code, uint32_t index,
		 uint32_t num);
/* A request answered by a u64 (GET_FEATURES and the like). */
int vu_get_u64(struct vu_client *c, uint32_t code, uint64_t *v);
int vu_get_vring_base(struct vu_client *c, unsigned qi, uint32_t *num);
/* GET_CONFIG of size bytes at offset into buf. */
int vu_get_config(struct vu_client *c, uint32_t offset, uint32_t size,
		  void *buf);
/* 1 when the backend ended the connection (a GET_FEATURES probe gets EOF or
 * a reset within timeout_ms), 0 when it still answers, <0 on other errors. */
int vu_peer_closed(struct vu_client *c, int timeout_ms);

/* A non-blocking close-on-exec eventfd, or -errno. */
int vu_eventfd(void);

/* --- guest memory ---------------------------------------------------- */

/* Bump allocation of guest memory inside one region; returns the gpa or 0
 * when full. */
uint64_t vu_alloc(struct vu_client *c, uint64_t size, uint64_t align);
/* Host pointer for gpa (NULL when unmapped). */
void *vu_host(struct vu_client *c, uint64_t gpa);
/* First gpa past the end of guest memory. */
uint64_t vu_mem_end(const struct vu_client *c);

/* --- queues ---------------------------------------------------------- */

/* Publishes head in the avail ring (release) without kicking. */
void vu_queue_publish(struct vu_queue *q, uint16_t head);
/* Sets avail->idx to an arbitrary value (hostile tests). */
void vu_queue_set_avail_idx(struct vu_queue *q, uint16_t idx);
/* Kicks unconditionally / only when the device asked for it. */
int vu_queue_kick(struct vu_queue *q);
int vu_queue_kick_if_needed(struct vu_queue *q);
/* Asks for an interrupt at the next completion (used_event, or clears
 * NO_INTERRUPT). */
void vu_queue_want_irq(struct vu_queue *q, bool want);
/* Consumes the next used entry: 1 with *e filled, 0 when none. */
int vu_queue_next_used(struct vu_queue *q, struct vu_used_elem *e);
/* Waits up to timeout_ms for the next used entry (call eventfd, and
 * re-checking the ring every few ms): 1, or 0 on timeout. */
int vu_queue_wait_used(struct vu_queue *q, int timeout_ms,
		       struct vu_used_elem *e);
/* Takes a free descriptor index (-ENOSPC when none) / gives it back. */
int vu_desc_get(struct vu_queue *q);
void vu_desc_put(struct vu_queue *q, uint16_t i);
/* Raw descriptor i of the main table. */
struct vu_desc *vu_queue_desc(struct vu_queue *q, uint16_t i);

/* A hand-made chain of main-table descriptors. */
#define VU_CHAIN_MAX   64
#define VU_LINK_AUTO   (-1)	       /* NEXT -> the following entry of d[] */
#define VU_LINK_NONE   (-2)	       /* flags exactly as given in d[] */
#define VU_LINK_POS(k) (k)	       /* NEXT -> entry k of d[] */
#define VU_LINK_RAW(v) (0x10000 + (v)) /* NEXT -> raw table index v */

struct vu_chain {
	uint16_t head;
	uint16_t desc[VU_CHAIN_MAX];
	unsigned n;
};

/* Takes n free descriptors and writes d[] into them; link[i] (NULL = all
 * AUTO, the last one without NEXT) says where entry i points. Nothing is
 * published: publish ch->head (or anything else) with vu_queue_publish. */
int vu_chain_add(struct vu_queue *q, const struct vu_desc *d, const int *link,
		 unsigned n, struct vu_chain *ch);
/* Gives the chain's descriptors back. */
void vu_chain_put(struct vu_queue *q, struct vu_chain *ch);

/* --- requests -------------------------------------------------------- */

#define VU_REQ_INDIRECT 0x1u /* one INDIRECT descriptor in the main table */

/* A free request slot of q, or NULL. */
struct vu_req *vu_req_get(struct vu_queue *q);
/* Builds header / len data bytes of r->buf in nseg segments / status
 * (status preset to 0xff) and publishes the chain (no kick). Data
 * descriptors are device-writable for IN and GET_ID. */
int vu_req_submit(struct vu_req *r, uint32_t type, uint64_t sector,
		  uint32_t len, unsigned nseg, unsigned flags);
/* Matches a used entry to its request slot, releases its descriptors and
 * marks it done; NULL for a raw chain (id then still the caller's). */
struct vu_req *vu_queue_complete(struct vu_queue *q,
				 const struct vu_used_elem *e);
/* Submit + kick + wait for that request (other requests completed on the
 * way are completed too). Returns the status byte (>= 0) or -errno,
 * -ETIMEDOUT when no completion arrived. */
int vu_req_run(struct vu_req *r, uint32_t type, uint64_t sector, uint32_t len,
	       unsigned nseg, unsigned flags);

/* Reads a little-endian field of the config space. */
uint64_t vu_config_get(const struct vu_client *c, unsigned off, unsigned size);

#endif
