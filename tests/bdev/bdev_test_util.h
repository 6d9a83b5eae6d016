/* Helpers shared by the block-device tests: a scratch directory under
 * /var/tmp, test files, device and channel set-up, completion collection,
 * loop devices and a private mount namespace. Include after <cmocka.h>. */
#ifndef UB_TESTS_BDEV_TEST_UTIL_H
#define UB_TESTS_BDEV_TEST_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/loop.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bdev/bdev.h"
#include "bdev/file_priv.h"

#define T_TIMEOUT_MS 5000u

static char g_dir[64];	 /* scratch directory of the test program */
static char g_path[256]; /* last path built by tpath() */

static int rm_entry(const char *p, const struct stat *st, int flag,
		    struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static bool private_mounts(char *why, size_t n);

static int group_setup(void **state)
{
	char why[160];

	(void)state;
	/* Before any io_uring exists: its worker threads would make the
	 * process multi-threaded, and unshare(CLONE_NEWUSER) refuses that. */
	private_mounts(why, sizeof(why));
	snprintf(g_dir, sizeof(g_dir), "/var/tmp/ubiblk-bdev.XXXXXX");
	return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	return nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *tpath(const char *name)
{
	snprintf(g_path, sizeof(g_path), "%s/%s", g_dir, name);
	return g_path;
}

/* Creates (or replaces) a file of size bytes, every byte = fill. */
static void make_file(const char *path, size_t size, int fill)
{
	unsigned char *buf = malloc(size ? size : 1); /* heap, freed here */
	int fd;

	assert_non_null(buf);
	memset(buf, fill, size);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, size), (ssize_t)size);
	close(fd);
	free(buf);
}

static struct ub_bdev *open_dev_opts(enum ub_io_engine engine,
				     const struct ub_file_bdev_opts *o)
{
	struct ub_bdev *dev = NULL;
	struct ub_err err = {{0}};
	int rc = ub_file_bdev_open(engine, o, &dev, &err);

	if (rc < 0)
		fail_msg("open %s: %s", o->path, err.msg);
	assert_non_null(dev);
	return dev;
}

static struct ub_bdev *open_dev(enum ub_io_engine engine, const char *path,
				bool readonly, bool direct, uint32_t depth)
{
	struct ub_file_bdev_opts o = {.path = path,
				      .readonly = readonly,
				      .direct = direct,
				      .queue_depth = depth};

	return open_dev_opts(engine, &o);
}

static struct ub_bdev_chan *open_chan(struct ub_bdev *dev)
{
	struct ub_bdev_chan *ch = NULL;
	struct ub_err err = {{0}};

	if (ub_bdev_open_chan(dev, &ch, &err) < 0)
		fail_msg("open channel on %s: %s", dev->name, err.msg);
	assert_non_null(ch);
	return ch;
}

static uint64_t t_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Polls until n completions arrived or T_TIMEOUT_MS passed; returns how
 * many arrived. */
static unsigned collect(struct ub_bdev_chan *ch, struct ub_bdev_cqe *out,
			unsigned n)
{
	uint64_t end = t_now_ms() + T_TIMEOUT_MS;
	unsigned got = 0, k;

	while (got < n && t_now_ms() < end) {
		k = ub_bdev_chan_poll(ch, out + got, n - got);
		got += k;
		if (!k)
			usleep(50);
	}
	return got;
}

/* Queues one request, submits it and returns its result. */
static int run1(struct ub_bdev_chan *ch, enum ub_bdev_op op, uint64_t sector,
		uint32_t count, void *buf, uint64_t id)
{
	struct iovec iov = {.iov_base = buf,
			    .iov_len = (size_t)count * UB_SECTOR_SIZE};
	struct ub_bdev_req req = {.op = op,
				  .sector = sector,
				  .count = count,
				  .iov = buf ? &iov : NULL,
				  .iovcnt = buf ? 1 : 0,
				  .id = id};
	struct ub_err err = {{0}};

	return ub_bdev_run_sync(ch, &req, T_TIMEOUT_MS, &err);
}

static void fill_pattern(unsigned char *p, size_t n, unsigned seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)(seed * 131u + i * 7u + (i >> 9));
}

static bool write_proc(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	bool ok;

	if (fd < 0)
		return false;
	ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
	close(fd);
	return ok;
}

/* Without CAP_SYS_ADMIN: a user namespace mapping our ids to root, in
 * which tmpfs and ramfs may be mounted. */
static int enter_user_ns(void)
{
	char map[64];
	uid_t uid = getuid();
	gid_t gid = getgid();

	if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
		return -errno;
	snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)uid);
	if (!write_proc("/proc/self/uid_map", map))
		return -EPERM;
	write_proc("/proc/self/setgroups", "deny");
	snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)gid);
	if (!write_proc("/proc/self/gid_map", map))
		return -EPERM;
	return 0;
}

/* A private mount namespace (once per process), so that test mounts are
 * invisible outside and vanish with the process. Returns false with the
 * reason when it cannot be had. */
static bool private_mounts(char *why, size_t n)
{
	static int state; /* 0 untried, 1 ok, -1 failed */
	static char reason[160];
	int rc;

	if (state == 0) {
		state = -1;
		rc = unshare(CLONE_NEWNS) < 0 ? -errno : 0;
		if (rc == -EPERM)
			rc = enter_user_ns();
		if (rc < 0)
			snprintf(reason, sizeof(reason),
				 "no private mount namespace: %s",
				 strerror(-rc));
		else if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
			snprintf(reason, sizeof(reason), "making / private: %s",
				 strerror(errno));
		else
			state = 1;
	}
	snprintf(why, n, "%s", reason);
	return state == 1;
}

/* Mounts a file system of type fstype (options opts) on the new directory
 * tpath(name); returns false with the reason when it cannot. */
static bool mount_scratch(const char *name, const char *fstype,
			  const char *opts, char *mnt, size_t mntlen, char *why,
			  size_t n)
{
	if (!private_mounts(why, n))
		return false;
	snprintf(mnt, mntlen, "%s/%s", g_dir, name);
	if (mkdir(mnt, 0700) < 0 && errno != EEXIST) {
		snprintf(why, n, "mkdir %s: %s", mnt, strerror(errno));
		return false;
	}
	if (mount(fstype, mnt, fstype, 0, opts) < 0) {
		snprintf(why, n, "mount -t %s: %s", fstype, strerror(errno));
		rmdir(mnt);
		return false;
	}
	return true;
}

static void umount_scratch(const char *mnt)
{
	assert_int_equal(umount2(mnt, MNT_DETACH), 0);
	rmdir(mnt);
}

/* Attaches backing to a free loop device (auto-cleared on last close);
 * fills devpath and returns the loop fd, which the caller keeps open while
 * it uses the device. Returns -1 with the reason when not possible. */
static int loop_attach(const char *backing, char *devpath, size_t devlen,
		       char *why, size_t n)
{
	struct loop_config cfg;
	int ctl, bfd, lfd = -1, nr, tries;

	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0) {
		snprintf(why, n, "/dev/loop-control: %s", strerror(errno));
		return -1;
	}
	bfd = open(backing, O_RDWR | O_CLOEXEC);
	if (bfd < 0) {
		snprintf(why, n, "%.100s: %s", backing, strerror(errno));
		close(ctl);
		return -1;
	}
	for (tries = 0; tries < 8 && lfd < 0; tries++) {
		nr = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (nr < 0) {
			snprintf(why, n, "LOOP_CTL_GET_FREE: %s",
				 strerror(errno));
			break;
		}
		snprintf(devpath, devlen, "/dev/loop%d", nr);
		lfd = open(devpath, O_RDWR | O_CLOEXEC);
		if (lfd < 0) {
			snprintf(why, n, "%s: %s", devpath, strerror(errno));
			break;
		}
		memset(&cfg, 0, sizeof(cfg));
		cfg.fd = (unsigned)bfd;
		cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
		if (ioctl(lfd, LOOP_CONFIGURE, &cfg) < 0) {
			int e = errno;

			snprintf(why, n, "LOOP_CONFIGURE: %s", strerror(e));
			close(lfd);
			lfd = -1;
			if (e != EBUSY)
				break;
		}
	}
	close(bfd);
	close(ctl);
	return lfd;
}

#endif
