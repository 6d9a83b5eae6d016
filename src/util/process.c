#include "util/process.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "util/log.h"

void ub_process_disable_dumps(void)
{
	struct rlimit zero = {0, 0};

	LOG_DEBUG("disabling core dumps");
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		LOG_WARN("failed to set PR_SET_DUMPABLE=0: %s",
			 strerror(errno));
	if (setrlimit(RLIMIT_CORE, &zero) != 0)
		LOG_WARN("failed to set RLIMIT_CORE=0: %s", strerror(errno));
}

void ub_process_ignore_sigpipe(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGPIPE, &sa, NULL) != 0)
		LOG_WARN("failed to ignore SIGPIPE: %s", strerror(errno));
}
