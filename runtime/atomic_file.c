/*
 * atomic_file.c: every file vbseg writes goes through here: a temporary
 * file in the target's directory, fsync, rename over the target, fsync of
 * the directory. A crash or an error at any point leaves either the old
 * file or the new one, never half of one; a failed fsync of the directory
 * (after the rename) is reported like any other failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

int vbs_write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

vbs_status vbs_atomic_write(const char *path, vbs_write_fn fn, void *user, char *err) {
    size_t n = strlen(path);
    char *tmp = malloc(n + 16), *dir = malloc(n + 1);
    if (!tmp || !dir) {
        free(tmp); free(dir);
        return vbs_fail(err, VBS_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        vbs_status st = vbs_fail(err, VBS_ERR_IO, "%s: cannot create temporary file: %s", path, strerror(errno));
        free(tmp); free(dir);
        return st;
    }
    fchmod(fd, 0644);
    char e[VBS_ERRLEN];
    e[0] = 0;
    vbs_status st = fn(fd, user, e);
    if (st) vbs_fail(err, st, "%s: %s", path, e[0] ? e : "write failed");
    if (!st && fsync(fd)) st = vbs_fail(err, VBS_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
    if (close(fd) && !st) st = vbs_fail(err, VBS_ERR_IO, "%s: close failed: %s", path, strerror(errno));
    if (!st && rename(tmp, path)) st = vbs_fail(err, VBS_ERR_IO, "%s: rename failed: %s", path, strerror(errno));
    if (st) unlink(tmp);
    else {
        memcpy(dir, path, n + 1);
        int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            /* Some filesystems refuse directory fsync (EINVAL): nothing to do
             * there. Any other failure means the rename may not survive a
             * crash: the new file is in place, but the caller must hear it. */
            if (fsync(dfd) && errno != EINVAL)
                st = vbs_fail(err, VBS_ERR_IO, "%s: fsync of its folder failed: %s", path, strerror(errno));
            close(dfd);
        }
    }
    free(tmp);
    free(dir);
    return st;
}
