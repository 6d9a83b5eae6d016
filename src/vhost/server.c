/* vhost-user-blk server: listening socket, accept loop, per-connection
 * device life cycle. */
#include "vhost/server.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/log.h"
#include "vhost/vhost_user.h"

#define LISTEN_BACKLOG	 8
#define SOCKET_UMASK	 0117
#define SOCKET_MODE	 0660
#define FLUSH_TIMEOUT_MS 60000
#define ACCEPT_RETRY_MS	 100

/* ---- listening socket -------------------------------------------------- */

static int fill_addr(const char *path, struct sockaddr_un *sa,
		     struct ub_err *err)
{
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof(sa->sun_path))
		return ub_err_ret(err, -ENAMETOOLONG,
				  "socket path '%s' is empty or longer than "
				  "%zu bytes",
				  path, sizeof(sa->sun_path) - 1);
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, path, n);
	return 0;
}

/* True when some process accepts connections on the socket at sa (a
 * connection waiting in its backlog counts). */
static bool socket_is_live(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	bool live;

	if (fd < 0)
		return false;
	live = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 ||
	       errno == EAGAIN || errno == EINPROGRESS;
	close(fd);
	return live;
}

/* Makes room for the socket: nothing there, or a socket file left behind
 * by a process that is gone. */
static int remove_stale(const char *path, const struct sockaddr_un *sa,
			struct ub_err *err)
{
	struct stat st;

	if (lstat(path, &st) != 0) {
		if (errno == ENOENT)
			return 0;
		return ub_err_ret(err, -errno, "cannot inspect '%s': %s", path,
				  strerror(errno));
	}
	if (!S_ISSOCK(st.st_mode))
		return ub_err_ret(err, -EEXIST,
				  "refusing to replace '%s': it exists and is "
				  "not a socket",
				  path);
	if (socket_is_live(sa))
		return ub_err_ret(err, -EADDRINUSE,
				  "another process is listening on '%s'", path);
	if (unlink(path) != 0 && errno != ENOENT)
		return ub_err_ret(err, -errno,
				  "cannot remove the stale socket '%s': %s",
				  path, strerror(errno));
	LOG_INFO("removed stale socket %s", path);
	return 0;
}

int ub_vhost_listen(const char *path, struct ub_vhost_listener *l,
		    struct ub_err *err)
{
	struct sockaddr_un sa;
	struct stat st;
	mode_t old_mask;
	int fd, rc;

	l->fd = -1;
	l->path = NULL;
	rc = fill_addr(path, &sa, err);
	if (rc)
		return rc;
	rc = remove_stale(path, &sa, err);
	if (rc)
		return rc;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return ub_err_ret(err, -errno, "cannot create a socket: %s",
				  strerror(errno));
	/* The umask is process-wide: no other thread runs yet. */
	old_mask = umask(SOCKET_UMASK);
	rc = bind(fd, (const struct sockaddr *)&sa, sizeof(sa));
	umask(old_mask);
	if (rc != 0) {
		rc = ub_err_ret(err, -errno,
				"cannot bind the vhost-user socket '%s': %s",
				path, strerror(errno));
		goto err_close;
	}
	if (chmod(path, SOCKET_MODE) != 0 || lstat(path, &st) != 0) {
		rc = ub_err_ret(err, -errno,
				"cannot set the mode of the socket '%s': %s",
				path, strerror(errno));
		goto err_unlink;
	}
	if (listen(fd, LISTEN_BACKLOG) != 0) {
		rc = ub_err_ret(err, -errno, "cannot listen on '%s': %s", path,
				strerror(errno));
		goto err_unlink;
	}
	l->path = strdup(path);
	if (!l->path) {
		rc = ub_err_ret(err, -ENOMEM, "out of memory");
		goto err_unlink;
	}
	l->fd = fd;
	l->st_dev = st.st_dev;
	l->st_ino = st.st_ino;
	LOG_INFO("listening on vhost-user socket %s", path);
	return 0;

err_unlink:
	unlink(path);
err_close:
	close(fd);
	return rc;
}

void ub_vhost_listener_close(struct ub_vhost_listener *l)
{
	struct stat st;

	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	/* Remove the file only if it is still ours (not replaced since). */
	if (l->path && lstat(l->path, &st) == 0 && S_ISSOCK(st.st_mode) &&
	    st.st_dev == l->st_dev && st.st_ino == l->st_ino)
		unlink(l->path);
	free(l->path);
	l->path = NULL;
}

/* ---- parameters -------------------------------------------------------- */

void ub_vhost_params_from_config(const struct ub_config *cfg,
				 struct ub_vhost_params *p)
{
	const char *id = cfg->device.device_id ? cfg->device.device_id : "";
	size_t n = strlen(id);

	memset(p, 0, sizeof(*p));
	p->num_queues = cfg->tuning.num_queues;
	if (p->num_queues > UB_VHOST_MAX_QUEUES)
		p->num_queues = UB_VHOST_MAX_QUEUES;
	p->queue_size = cfg->tuning.queue_size;
	if (p->queue_size > UB_VQ_MAX_SIZE)
		p->queue_size = UB_VQ_MAX_SIZE;
	p->seg_size_max = cfg->tuning.seg_size_max;
	p->seg_count_max = cfg->tuning.seg_count_max;
	p->poll_timeout_us = cfg->tuning.poll_timeout_us;
	p->cpus = cfg->tuning.cpus;
	p->write_through = cfg->tuning.write_through;
	/* GET_ID: the id's bytes truncated to 20, zero-padded. */
	memcpy(p->device_id, id,
	       n < UB_VIRTIO_BLK_ID_BYTES ? n : UB_VIRTIO_BLK_ID_BYTES);
}

/* ---- one connection ---------------------------------------------------- */

/* Writes back everything the connection wrote, so that a front end that
 * restarts finds its data durable. */
static void flush_bdev(struct ub_bdev *bdev)
{
	struct ub_bdev_chan *ch;
	struct ub_err e = {{0}};

	if (ub_bdev_open_chan(bdev, &ch, &e) != 0) {
		LOG_ERROR("flushing %s failed: %s", bdev->name, e.msg);
		return;
	}
	if (ub_bdev_flush_sync(ch, FLUSH_TIMEOUT_MS, &e) != 0)
		LOG_ERROR("flushing %s failed: %s", bdev->name, e.msg);
	ub_bdev_chan_close(ch);
}

static void log_end(int rc, const struct ub_err *e)
{
	switch (rc) {
	case 0:
		LOG_INFO("Client disconnected: the front end closed the "
			 "connection");
		break;
	case -ECANCELED:
		LOG_INFO("shutdown requested: closing the vhost-user "
			 "connection");
		break;
	case -ECONNRESET:
	case -EPIPE:
		LOG_INFO("Client disconnected: %s", e->msg);
		break;
	default:
		LOG_ERROR("vhost-user front end error, closing the connection: "
			  "%s",
			  e->msg);
		break;
	}
}

int ub_vhost_serve_conn(int sock, const struct ub_vhost_params *p,
			struct ub_bdev *bdev, int stop_fd, struct ub_err *err)
{
	struct ub_vhost_dev *dev;
	struct ub_vu_conn c;
	struct ub_err cerr = {{0}};
	unsigned q;
	int rc;

	dev = calloc(1, sizeof(*dev)); /* owned until the connection ends */
	if (!dev)
		return ub_err_ret(err, -ENOMEM, "out of memory");
	ub_vhost_dev_init(dev, p, bdev);
	for (q = 0; q < p->num_queues; q++) {
		rc = ub_vq_worker_start(dev, q, &dev->workers[q], err);
		if (rc) {
			ub_err_prefix(err, "starting the worker of queue %u",
				      q);
			goto out;
		}
	}
	ub_vu_conn_init(&c, sock, stop_fd, dev);
	rc = ub_vu_serve(&c, &cerr);
	log_end(rc, &cerr);
	rc = rc == -ECANCELED ? 1 : 0;
out:
	/* Workers first (draining their I/O), then rings, guest memory. */
	ub_vhost_dev_fini(dev);
	free(dev);
	flush_bdev(bdev);
	LOG_INFO("Finished serving socket!");
	return rc;
}

/* Sleeps ms milliseconds unless stop_fd becomes readable (returns true). */
static bool wait_stop(int stop_fd, int ms)
{
	struct pollfd p = {.fd = stop_fd, .events = POLLIN};

	if (stop_fd < 0) {
		usleep((useconds_t)ms * 1000);
		return false;
	}
	return poll(&p, 1, ms) > 0;
}

int ub_vhost_server_run(int listen_fd, const struct ub_vhost_params *p,
			struct ub_bdev *bdev, int stop_fd, struct ub_err *err)
{
	for (;;) {
		struct pollfd pfd[2] = {
		    {.fd = listen_fd, .events = POLLIN},
		    {.fd = stop_fd, .events = POLLIN},
		};
		nfds_t n = stop_fd >= 0 ? 2 : 1;
		struct ub_err cerr = {{0}};
		int sock, rc;

		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			return ub_err_ret(err, -errno, "poll failed: %s",
					  strerror(errno));
		}
		if (n == 2 && pfd[1].revents)
			return 0;
		if (pfd[0].revents & (POLLERR | POLLNVAL))
			return ub_err_ret(err, -EIO,
					  "the listening socket failed");
		if (!(pfd[0].revents & POLLIN))
			continue;
		sock = accept4(listen_fd, NULL, NULL,
			       SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (sock < 0) {
			switch (errno) {
			case EINTR:
			case EAGAIN:
			case ECONNABORTED:
			case EPROTO:
				continue;
			case EMFILE:
			case ENFILE:
			case ENOBUFS:
			case ENOMEM:
				LOG_ERROR("accepting a vhost-user connection "
					  "failed: %s; retrying",
					  strerror(errno));
				if (wait_stop(stop_fd, ACCEPT_RETRY_MS))
					return 0;
				continue;
			default:
				return ub_err_ret(err, -errno,
						  "accepting a vhost-user "
						  "connection failed: %s",
						  strerror(errno));
			}
		}
		LOG_INFO("vhost-user front end connected");
		rc = ub_vhost_serve_conn(sock, p, bdev, stop_fd, &cerr);
		close(sock);
		if (rc == 1)
			return 0;
		if (rc < 0)
			LOG_ERROR("cannot serve the vhost-user connection: %s",
				  cerr.msg);
	}
}
