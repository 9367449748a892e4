/*
 * npy.c: NumPy .npy arrays in (little-endian float32 or float64, C order,
 * any rank up to VBS_MAX_DIMS, or as a volume of up to 4 dims) and out
 * (float32, written atomically). Used by `vbseg run` for array inputs,
 * batched or not, and by `--raw` for checking against other runtimes. It
 * does not decide what the axes mean: `vbseg run` does, from the model.
 * The header is parsed strictly; a malformed one is refused, never guessed.
 * No size read from the file allocates before it is checked against the
 * bytes that remain: the file must be a regular file whose size after the
 * header is exactly the shape's product times the item size (overflow-
 * checked), so a 128-byte file declaring gigabytes costs nothing.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

static vbs_status efail(char *err, size_t n, vbs_status st, const char *path, const char *msg) {
    if (err && n) snprintf(err, n, "%s: %s", path, msg);
    return st;
}

/* An open .npy file after its header: the shape and the element type. */
typedef struct { FILE *f; int64_t dims[VBS_MAX_DIMS], n; int ndim, f8; } npyr;

/* Opens path and parses its header strictly. */
static vbs_status npy_open(const char *path, npyr *r, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    if (!(r->f = fopen(path, "rb"))) return efail(err, errlen, VBS_ERR_IO, path, strerror(errno));
    unsigned char pre[10];
    char hdr[4097];
    if (fread(pre, 1, 10, r->f) != 10 || memcmp(pre, "\x93NUMPY", 6)) return efail(err, errlen, VBS_ERR_FORMAT, path, "not a .npy file (bad magic)");
    size_t hl;
    if (pre[6] == 1) hl = pre[8] | (size_t)pre[9] << 8;
    else if (pre[6] == 2 || pre[6] == 3) {
        unsigned char b[2];
        if (fread(b, 1, 2, r->f) != 2) return efail(err, errlen, VBS_ERR_FORMAT, path, "truncated header");
        hl = pre[8] | (size_t)pre[9] << 8 | (size_t)b[0] << 16 | (size_t)b[1] << 24;
    } else return efail(err, errlen, VBS_ERR_FORMAT, path, "unsupported .npy version");
    if (hl >= sizeof hdr || fread(hdr, 1, hl, r->f) != hl) return efail(err, errlen, VBS_ERR_FORMAT, path, "header too long or truncated");
    hdr[hl] = 0;
    if (strstr(hdr, "'descr': '<f4'")) r->f8 = 0;
    else if (strstr(hdr, "'descr': '<f8'")) r->f8 = 1;
    else return efail(err, errlen, VBS_ERR_FORMAT, path, "field descr: only little-endian float32 '<f4' or float64 '<f8'");
    if (!strstr(hdr, "'fortran_order': False")) return efail(err, errlen, VBS_ERR_FORMAT, path, "field fortran_order: only C order is read");
    char *sp = strstr(hdr, "'shape': (");
    if (!sp) return efail(err, errlen, VBS_ERR_FORMAT, path, "field shape missing");
    sp += 10;
    while (*sp && *sp != ')') {
        char *end;
        errno = 0;
        long long x = strtoll(sp, &end, 10);
        if (end == sp || errno || x <= 0 || r->ndim == VBS_MAX_DIMS) return efail(err, errlen, VBS_ERR_FORMAT, path, "field shape: bad dims");
        r->dims[r->ndim++] = x;
        sp = end;
        while (*sp == ',' || *sp == ' ') sp++;
    }
    if (!r->ndim) return efail(err, errlen, VBS_ERR_FORMAT, path, "field shape: a scalar, not an array");
    r->n = 1;
    for (int i = 0; i < r->ndim; i++)
        if (!vbs_mul_ok(r->n, r->dims[i], &r->n) || r->n > VBS_NIFTI_MAX_VOXELS)
            return efail(err, errlen, VBS_ERR_FORMAT, path, "field shape: too many elements");
    /* the data must be there before anything is allocated for it: the bytes
     * after the header are exactly n * itemsize (n <= 2^31, so no overflow) */
    struct stat sb;
    long pos = ftell(r->f);
    if (fstat(fileno(r->f), &sb) || !S_ISREG(sb.st_mode) || pos < 0)
        return efail(err, errlen, VBS_ERR_FORMAT, path, "not a regular file (its size must be known before its data are read)");
    int64_t need = r->n * (r->f8 ? 8 : 4), have = (int64_t)sb.st_size - pos;
    if (have != need) {
        char msg[160];
        snprintf(msg, sizeof msg, "field shape: declares %lld bytes of data, the file holds %lld after the header", (long long)need,
                 (long long)have);
        return efail(err, errlen, VBS_ERR_FORMAT, path, msg);
    }
    return VBS_OK;
}

/* Reads the r->n elements into dst as float32; nothing may follow them. */
static vbs_status npy_data(const char *path, npyr *r, float *dst, char *err, size_t errlen) {
    if (!r->f8) {
        if (fread(dst, 4, (size_t)r->n, r->f) != (size_t)r->n) return efail(err, errlen, VBS_ERR_FORMAT, path, "truncated data");
    } else {
        for (int64_t i = 0; i < r->n; i++) {
            double d;
            if (fread(&d, 8, 1, r->f) != 1) return efail(err, errlen, VBS_ERR_FORMAT, path, "truncated data");
            dst[i] = (float)d;
        }
    }
    if (fgetc(r->f) != EOF) return efail(err, errlen, VBS_ERR_FORMAT, path, "trailing bytes after the data");
    return VBS_OK;
}

vbs_status vbs_volume_read_npy(const char *path, vbs_volume **out, char *err, size_t errlen) {
    if (!out || !path) return VBS_ERR_ARG;
    *out = NULL;
    npyr r;
    vbs_volume *v = NULL;
    vbs_status st = npy_open(path, &r, err, errlen);
    if (!st && (r.ndim < 2 || r.ndim > 4)) st = efail(err, errlen, VBS_ERR_FORMAT, path, "field shape: need (C,H,W) or (C,D,H,W)");
    if (!st) {
        /* (C,H,W) -> x=W, y=H, z=1, t=C; (C,D,H,W) -> z=D; (H,W) -> one channel */
        int nd = r.ndim;
        int64_t dims[4] = {r.dims[nd - 1], r.dims[nd - 2], nd == 4 ? r.dims[1] : 1, nd >= 3 ? r.dims[0] : 1};
        if (!(v = vbs_volume_new_raw(dims))) st = efail(err, errlen, VBS_ERR_NOMEM, path, "out of memory");
    }
    if (!st) st = npy_data(path, &r, vbs_volume_data(v), err, errlen);
    if (r.f) fclose(r.f);
    if (st) { vbs_volume_free(v); return st; }
    vbs_volume_count_nan(v);
    *out = v;
    return VBS_OK;
}

vbs_status vbs_read_npy(const char *path, float **data, int64_t dims[VBS_MAX_DIMS], int *ndim, int64_t *nan_count, char *err,
                        size_t errlen) {
    if (!data || !path || !dims || !ndim) return VBS_ERR_ARG;
    *data = NULL;
    npyr r;
    float *x = NULL;
    vbs_status st = npy_open(path, &r, err, errlen);
    if (!st && !(x = malloc(sizeof(float) * (size_t)r.n))) st = efail(err, errlen, VBS_ERR_NOMEM, path, "out of memory");
    if (!st) st = npy_data(path, &r, x, err, errlen);
    if (r.f) fclose(r.f);
    if (st) { free(x); return st; }
    int64_t bad = 0;
    for (int64_t i = 0; i < r.n; i++)
        if (!isfinite(x[i])) { x[i] = 0.f; bad++; }
    if (nan_count) *nan_count = bad;
    memcpy(dims, r.dims, sizeof(int64_t) * (size_t)r.ndim);
    *ndim = r.ndim;
    *data = x;
    return VBS_OK;
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
