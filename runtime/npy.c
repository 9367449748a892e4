/*
 * npy.c: NumPy .npy arrays in (little-endian float32 or float64, C order,
 * up to 4 dims) and out (float32, written atomically). Used by `vbseg run`
 * for array inputs and by `--raw` for checking against other runtimes.
 * The header is parsed strictly; a malformed one is refused, never guessed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static vbs_status efail(char *err, size_t n, vbs_status st, const char *path, const char *msg) {
    if (err && n) snprintf(err, n, "%s: %s", path, msg);
    return st;
}

vbs_status vbs_volume_read_npy(const char *path, vbs_volume **out, char *err, size_t errlen) {
    if (!out || !path) return VBS_ERR_ARG;
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return efail(err, errlen, VBS_ERR_IO, path, strerror(errno));
    unsigned char pre[10];
    char hdr[4097];
    vbs_status st = VBS_OK;
    vbs_volume *v = NULL;
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6)) { st = efail(err, errlen, VBS_ERR_FORMAT, path, "not a .npy file (bad magic)"); goto done; }
    size_t hl;
    if (pre[6] == 1) hl = pre[8] | (size_t)pre[9] << 8;
    else if (pre[6] == 2 || pre[6] == 3) {
        unsigned char b[2];
        if (fread(b, 1, 2, f) != 2) { st = efail(err, errlen, VBS_ERR_FORMAT, path, "truncated header"); goto done; }
        hl = pre[8] | (size_t)pre[9] << 8 | (size_t)b[0] << 16 | (size_t)b[1] << 24;
    } else { st = efail(err, errlen, VBS_ERR_FORMAT, path, "unsupported .npy version"); goto done; }
    if (hl >= sizeof hdr || fread(hdr, 1, hl, f) != hl) { st = efail(err, errlen, VBS_ERR_FORMAT, path, "header too long or truncated"); goto done; }
    hdr[hl] = 0;
    int f8;
    if (strstr(hdr, "'descr': '<f4'")) f8 = 0;
    else if (strstr(hdr, "'descr': '<f8'")) f8 = 1;
    else { st = efail(err, errlen, VBS_ERR_FORMAT, path, "field descr: only little-endian float32 '<f4' or float64 '<f8'"); goto done; }
    if (!strstr(hdr, "'fortran_order': False")) { st = efail(err, errlen, VBS_ERR_FORMAT, path, "field fortran_order: only C order is read"); goto done; }
    char *sp = strstr(hdr, "'shape': (");
    if (!sp) { st = efail(err, errlen, VBS_ERR_FORMAT, path, "field shape missing"); goto done; }
    sp += 10;
    int64_t shp[8];
    int nd = 0;
    while (*sp && *sp != ')') {
        char *end;
        errno = 0;
        long long x = strtoll(sp, &end, 10);
        if (end == sp || errno || x <= 0 || nd == 8) { st = efail(err, errlen, VBS_ERR_FORMAT, path, "field shape: bad dims"); goto done; }
        shp[nd++] = x;
        sp = end;
        while (*sp == ',' || *sp == ' ') sp++;
    }
    if (nd < 2 || nd > 4) { st = efail(err, errlen, VBS_ERR_FORMAT, path, "field shape: need (C,H,W) or (C,D,H,W)"); goto done; }
    int64_t n = 1;
    for (int i = 0; i < nd; i++)
        if (!vbs_mul_ok(n, shp[i], &n) || n > VBS_NIFTI_MAX_VOXELS) { st = efail(err, errlen, VBS_ERR_FORMAT, path, "field shape: too many elements"); goto done; }
    /* (C,H,W) -> x=W, y=H, z=1, t=C; (C,D,H,W) -> z=D; (H,W) -> one channel */
    int64_t dims[4] = {shp[nd - 1], shp[nd - 2], nd == 4 ? shp[1] : 1, nd >= 3 ? shp[0] : 1};
    if (!(v = vbs_volume_new_raw(dims))) { st = efail(err, errlen, VBS_ERR_NOMEM, path, "out of memory"); goto done; }
    if (!f8) {
        if (fread(vbs_volume_data(v), 4, (size_t)n, f) != (size_t)n) { st = efail(err, errlen, VBS_ERR_FORMAT, path, "truncated data"); goto done; }
    } else {
        for (int64_t i = 0; i < n; i++) {
            double d;
            if (fread(&d, 8, 1, f) != 1) { st = efail(err, errlen, VBS_ERR_FORMAT, path, "truncated data"); goto done; }
            vbs_volume_data(v)[i] = (float)d;
        }
    }
    if (fgetc(f) != EOF) { st = efail(err, errlen, VBS_ERR_FORMAT, path, "trailing bytes after the data"); goto done; }
    vbs_volume_count_nan(v);
done:
    fclose(f);
    if (st) vbs_volume_free(v);
    else *out = v;
    return st;
}

typedef struct { const float *data; const int64_t *dims; int ndim; } npyw;

static vbs_status write_npy_body(int fd, void *user, char *err) {
    npyw *w = user;
    char shape[256];
    int p = 0;
    int64_t n = 1;
    for (int i = 0; i < w->ndim; i++) {
        p += snprintf(shape + p, sizeof shape - (size_t)p, "%lld,%s", (long long)w->dims[i], i + 1 < w->ndim ? " " : "");
        n *= w->dims[i];
    }
    if (w->ndim > 1) shape[p - 1] = 0; /* (a, b) not (a, b,) */
    char hdr[512];
    int hl = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", shape);
    int total = 10 + hl + 1;
    int pad = (64 - total % 64) % 64;
    memset(hdr + hl, ' ', (size_t)pad);
    hdr[hl + pad] = '\n';
    hl += pad + 1;
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 255), (unsigned char)(hl >> 8)};
    if (vbs_write_all(fd, pre, 10) || vbs_write_all(fd, hdr, (size_t)hl) || vbs_write_all(fd, w->data, sizeof(float) * (size_t)n))
        return vbs_fail(err, VBS_ERR_IO, "write failed: %s", strerror(errno));
    return VBS_OK;
}

vbs_status vbs_write_npy(const char *path, const float *data, const int64_t *dims, int ndim, char *err, size_t errlen) {
    if (!path || !data || !dims || ndim < 1 || ndim > 8) return VBS_ERR_ARG;
    npyw w = {data, dims, ndim};
    char e[VBS_ERRLEN];
    vbs_status st = vbs_atomic_write(path, write_npy_body, &w, e);
    if (st && err && errlen) snprintf(err, errlen, "%s", e);
    return st;
}
