/* Process-wide hardening shared by every program. */
#ifndef UB_UTIL_PROCESS_H
#define UB_UTIL_PROCESS_H

/* PR_SET_DUMPABLE = 0 (no core dumps, no ptrace attach, no /proc/PID/mem
 * for same-user processes) and RLIMIT_CORE = 0. Failures only warn. Call
 * first thing in programs that hold keys. */
void ub_process_disable_dumps(void);
/* Ignores SIGPIPE so a peer closing a socket never kills the process. */
void ub_process_ignore_sigpipe(void);

#endif
