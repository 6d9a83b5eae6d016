/* Backend environment: builds the exposed block device. */
#include "vhost/backend.h"

#include <errno.h>

#include "bdev/crypt.h"
#include "bdev/file.h"
#include "util/log.h"

#define MAX_QUEUE_DEPTH 32768u

int ub_backend_open(const struct ub_config *cfg, struct ub_backend *b,
		    struct ub_err *err)
{
	struct ub_file_bdev_opts o = {0};
	struct ub_bdev *data = NULL, *crypt = NULL;
	const struct ub_secret *key;
	int rc;

	b->bdev = NULL;
	if (cfg->device.metadata_path)
		return ub_err_ret(err, -EOPNOTSUPP,
				  "lazy stripe fetching (device.metadata_path) "
				  "is not supported by this build yet");
	o.path = cfg->device.data_path;
	o.readonly = false;
	o.direct = true;
	o.write_through = cfg->tuning.write_through;
	o.queue_depth = cfg->tuning.queue_size < MAX_QUEUE_DEPTH
			    ? cfg->tuning.queue_size
			    : MAX_QUEUE_DEPTH;
	rc = ub_file_bdev_open(cfg->tuning.io_engine, &o, &data, err);
	if (rc)
		goto fail;
	if (!cfg->has_encryption) {
		b->bdev = data;
		goto done;
	}
	key = ub_config_xts_key(cfg);
	if (!key || !key->value) {
		rc = ub_err_ret(err, -EINVAL,
				"the XTS key secret '%s' is missing",
				cfg->xts_key_ref ? cfg->xts_key_ref : "");
		goto err_put;
	}
	rc = ub_crypt_bdev_wrap(data, key->value, key->len, &crypt, err);
	if (rc)
		goto err_put;
	ub_bdev_put(data); /* the crypt device holds its own reference */
	b->bdev = crypt;
done:
	LOG_INFO("exposed device: %s, %llu sectors", b->bdev->name,
		 (unsigned long long)b->bdev->sectors);
	return 0;

err_put:
	ub_bdev_put(data);
fail:
	ub_err_prefix(err, "Failed to build backend environment");
	return rc;
}

void ub_backend_close(struct ub_backend *b)
{
	ub_bdev_put(b->bdev);
	b->bdev = NULL;
}
