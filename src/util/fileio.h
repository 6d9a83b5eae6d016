/* Small file helpers for configuration loading: whole-file reads with a size
 * cap, path joining and splitting as the configuration rules define them
 * (config.md §2.3), and the "readable by others" permission warning.
 *
 * Ownership: every returned buffer or string is a new heap allocation that
 * the caller frees (free(), after ub_wipe() when it may hold secrets). */
#ifndef UB_UTIL_FILEIO_H
#define UB_UTIL_FILEIO_H

#include <stdbool.h>
#include <stddef.h>

#include "util/err.h"

/* Largest configuration file the loaders read. */
#define UB_CONFIG_FILE_MAX (1u << 20)

/* Reads the whole file at path (symlinks followed) into *buf: NUL-terminated
 * heap copy, *len excludes the NUL. A file longer than max bytes fails with
 * -EFBIG. On failure *buf is NULL and err reads "I/O error: <strerror> (os
 * error <n>)" (or the size message); nothing is left allocated. */
int ub_read_file(const char *path, size_t max, char **buf, size_t *len,
		 struct ub_err *err);

/* "<strerror(e)> (os error <e>)", the way the reference prints OS errors;
 * e is a positive errno. Writes into buf and returns it. */
const char *ub_os_error(int e, char *buf, size_t n);

/* dir joined with rel: rel unchanged when it is absolute or dir is empty,
 * otherwise "<dir>/<rel>" (one separator). No normalisation. Heap string,
 * NULL when out of memory. */
char *ub_path_join(const char *dir, const char *rel);

/* Directory part of path: "" for a bare file name, "/" for a file in the
 * root, otherwise everything before the last component with trailing
 * separators removed ("a/b/c" -> "a/b", "./c" -> "."). Heap string, NULL
 * when out of memory. */
char *ub_path_dirname(const char *path);

/* stat()s path (following symlinks) and logs a warning when any of the
 * mode bits 077 is set. Never fails; returns true when it warned. */
bool ub_warn_if_accessible_to_others(const char *path);

#endif
