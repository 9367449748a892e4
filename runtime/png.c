/*
 * png.c: PNG output through stb_image_write (Debian's libstb); the one
 * file that includes it. The image is encoded in memory and written with
 * vbs_atomic_write, like every other file vbseg writes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image_write.h>

#include "internal.h"

/* exported by libstb but declared only in stb_image_write.h's implementation
 * section; the buffer comes from libstb's malloc */
unsigned char *stbi_write_png_to_mem(const unsigned char *pixels, int stride_bytes, int x, int y, int n, int *out_len);

typedef struct { unsigned char *data; int len; } png_buf;

static vbs_status write_png_body(int fd, void *user, char *err) {
    png_buf *b = user;
    return vbs_write_all(fd, b->data, (size_t)b->len) ? vbs_fail(err, VBS_ERR_IO, "write failed: %s", strerror(errno)) : VBS_OK;
}

vbs_status vbs_write_png(const char *path, int w, int h, const unsigned char *rgb, char *err, size_t errlen) {
    if (!path || !rgb || w <= 0 || h <= 0 || w > 32768 || h > 32768) return VBS_ERR_ARG;
    png_buf b = {NULL, 0};
    b.data = stbi_write_png_to_mem(rgb, w * 3, w, h, 3, &b.len);
    if (!b.data) {
        if (err && errlen) snprintf(err, errlen, "%s: PNG encoding failed", path);
        return VBS_ERR_NOMEM;
    }
    char e[VBS_ERRLEN];
    vbs_status st = vbs_atomic_write(path, write_png_body, &b, e);
    free(b.data);
    if (st && err && errlen) snprintf(err, errlen, "%s", e);
    return st;
}
