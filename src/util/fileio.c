#include "util/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"
#include "util/secmem.h"

const char *ub_os_error(int e, char *buf, size_t n)
{
	char tmp[128];
	const char *s = strerror_r(e, tmp, sizeof(tmp));

	snprintf(buf, n, "%s (os error %d)", s, e);
	return buf;
}

static int io_err(struct ub_err *err, int e)
{
	char os[160];

	return ub_err_ret(err, -e, "I/O error: %s",
			  ub_os_error(e, os, sizeof(os)));
}

int ub_read_file(const char *path, size_t max, char **buf, size_t *len,
		 struct ub_err *err)
{
	size_t cap = 4096, used = 0;
	char *data; /* heap, grows; wiped before every free */
	int fd, rc;

	*buf = NULL;
	*len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return io_err(err, errno);
	data = malloc(cap);
	if (!data) {
		rc = ub_err_ret(err, -ENOMEM, "out of memory");
		goto err_close;
	}
	for (;;) {
		ssize_t n;

		if (used + 1 >= cap) {
			char *bigger;

			/* Copy rather than realloc so no stale copy of the
			 * content is left behind unwiped. */
			bigger = malloc(cap * 2);
			if (!bigger) {
				rc = ub_err_ret(err, -ENOMEM, "out of memory");
				goto err_free;
			}
			memcpy(bigger, data, used);
			ub_wipe(data, cap);
			free(data);
			data = bigger;
			cap *= 2;
		}
		n = read(fd, data + used, cap - used - 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = io_err(err, errno);
			goto err_free;
		}
		if (n == 0)
			break;
		used += (size_t)n;
		if (used > max) {
			rc = ub_err_ret(err, -EFBIG,
					"file is larger than %zu bytes", max);
			goto err_free;
		}
	}
	close(fd);
	data[used] = '\0';
	*buf = data;
	*len = used;
	return 0;

err_free:
	ub_wipe(data, cap);
	free(data);
err_close:
	close(fd);
	return rc;
}

char *ub_path_join(const char *dir, const char *rel)
{
	size_t dl = strlen(dir);
	char *out;

	if (rel[0] == '/' || dl == 0)
		return strdup(rel);
	if (asprintf(&out, "%s%s%s", dir, dir[dl - 1] == '/' ? "" : "/", rel) <
	    0)
		return NULL;
	return out;
}

char *ub_path_dirname(const char *path)
{
	size_t n = strlen(path);

	while (n > 1 && path[n - 1] == '/')
		n--;
	while (n > 0 && path[n - 1] != '/')
		n--;
	if (n == 0)
		return strdup("");
	/* path[n - 1] is the separator before the last component. */
	while (n > 1 && path[n - 1] == '/')
		n--;
	return strndup(path, n);
}

bool ub_warn_if_accessible_to_others(const char *path)
{
	struct stat st;

	if (stat(path, &st) != 0)
		return false;
	if (!(st.st_mode & 077))
		return false;
	LOG_WARN("config file '%s' is accessible to other users (mode %04o); "
		 "consider restricting to 0600",
		 path, (unsigned)(st.st_mode & 07777));
	return true;
}
