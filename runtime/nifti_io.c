/*
 * nifti_io.c: NIfTI-1 and NIfTI-2 volumes (.nii, .nii.gz) in and out. The
 * only file that includes the nifti headers.
 *
 * Reading validates the header before anything is allocated, because
 * Debian's libnifti 3.0.1 zero-fills truncated files and reports success,
 * turns negative dims into 1, accepts a 377-byte file that declares
 * 16 GiB, and its NIfTI-2 reader overflows the stack when dim[0] is 200.
 * So the bytes are read here through zlib (which also reads plain files),
 * checked field by field, and only a validated header is handed to
 * libnifti (nifti_convert_n?hdr2nim) to derive the qform/sform geometry.
 * No size read from the file allocates before its bytes arrive: the header
 * is fixed-size, and the data buffer (whose final size a .nii.gz cannot
 * tell in advance) starts at min(declared, 16 MiB) and doubles only when
 * the previous buffer was filled by real bytes, so memory stays within
 * twice what the stream delivered (plus 16 MiB), then 4 bytes per voxel for
 * the float copy once every byte is there.
 * Writing copies the source header, so every output keeps the input's
 * affine, qform/sform codes, pixdim and units, and goes through
 * vbs_atomic_write.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <nifti2_io.h>

#include "internal.h"

struct vbs_volume {
    int64_t dims[4];        /* x, y, z, t */
    float *data;
    int64_t nan_count;
    int version;            /* 1 or 2 for NIfTI, 0 for .npy */
    nifti_1_header h1;      /* native byte order */
    nifti_2_header h2;
};

void vbs_volume_free(vbs_volume *v) {
    if (!v) return;
    free(v->data);
    free(v);
}

void vbs_volume_dims(const vbs_volume *v, int64_t dims[4]) { memcpy(dims, v->dims, sizeof v->dims); }
float *vbs_volume_data(vbs_volume *v) { return v->data; }
int64_t vbs_volume_nan_count(const vbs_volume *v) { return v->nan_count; }

static int bytes_per_voxel(int datatype, int *is_float, int *is_signed) {
    *is_float = 0;
    *is_signed = 1;
    switch (datatype) {
    case NIFTI_TYPE_UINT8: *is_signed = 0; return 1;
    case NIFTI_TYPE_INT8: return 1;
    case NIFTI_TYPE_INT16: return 2;
    case NIFTI_TYPE_UINT16: *is_signed = 0; return 2;
    case NIFTI_TYPE_INT32: return 4;
    case NIFTI_TYPE_UINT32: *is_signed = 0; return 4;
    case NIFTI_TYPE_INT64: return 8;
    case NIFTI_TYPE_UINT64: *is_signed = 0; return 8;
    case NIFTI_TYPE_FLOAT32: *is_float = 1; return 4;
    case NIFTI_TYPE_FLOAT64: *is_float = 1; return 8;
    default: return 0;
    }
}

static void swap_bytes(void *p, int size, int64_t n) {
    unsigned char *b = p;
    for (int64_t i = 0; i < n; i++, b += size)
        for (int j = 0; j < size / 2; j++) {
            unsigned char t = b[j];
            b[j] = b[size - 1 - j];
            b[size - 1 - j] = t;
        }
}

/* Reads exactly n bytes or reports how many came. */
static int64_t gz_read_full(gzFile f, void *buf, int64_t n) {
    int64_t got = 0;
    while (got < n) {
        unsigned chunk = n - got > (1 << 30) ? (1u << 30) : (unsigned)(n - got);
        int r = gzread(f, (char *)buf + got, chunk);
        if (r <= 0) break;
        got += r;
    }
    return got;
}

static float convert(const unsigned char *p, int dt) {
    switch (dt) {
    case NIFTI_TYPE_UINT8: return (float)*p;
    case NIFTI_TYPE_INT8: return (float)*(const int8_t *)p;
    case NIFTI_TYPE_INT16: { int16_t v; memcpy(&v, p, 2); return (float)v; }
    case NIFTI_TYPE_UINT16: { uint16_t v; memcpy(&v, p, 2); return (float)v; }
    case NIFTI_TYPE_INT32: { int32_t v; memcpy(&v, p, 4); return (float)v; }
    case NIFTI_TYPE_UINT32: { uint32_t v; memcpy(&v, p, 4); return (float)v; }
    case NIFTI_TYPE_INT64: { int64_t v; memcpy(&v, p, 8); return (float)v; }
    case NIFTI_TYPE_UINT64: { uint64_t v; memcpy(&v, p, 8); return (float)v; }
    case NIFTI_TYPE_FLOAT32: { float v; memcpy(&v, p, 4); return v; }
    default: { double v; memcpy(&v, p, 8); return (float)v; }
    }
}

vbs_status vbs_volume_read_nifti(const char *path, vbs_volume **out, char *err, size_t errlen) {
    if (!out) return VBS_ERR_ARG;
    *out = NULL;
    if (!path) return VBS_ERR_ARG;
    gzFile f = gzopen(path, "rb");
    if (!f) return vbs_fail_path(err, errlen, VBS_ERR_IO, path, "cannot open: %s", strerror(errno ? errno : ENOENT));
    gzbuffer(f, 1 << 17);
    vbs_volume *v = calloc(1, sizeof *v);
    unsigned char *raw = NULL;
    vbs_status st = VBS_OK;
    if (!v) { gzclose(f); return vbs_fail_path(err, errlen, VBS_ERR_NOMEM, path, "out of memory"); }
    unsigned char hb[540];
    int64_t got = gz_read_full(f, hb, 4);
    int32_t sz;
    memcpy(&sz, hb, 4);
    int swapped = 0;
    if (got == 4 && (sz != 348 && sz != 540)) {
        swap_bytes(&sz, 4, 1);
        swapped = 1;
    }
    if (got < 4 || (sz != 348 && sz != 540)) {
        st = vbs_fail_path(err, errlen, VBS_ERR_NIFTI, path, "not a NIfTI file (sizeof_hdr is neither 348 nor 540)");
        goto done;
    }
    int hsize = sz;
    if (gz_read_full(f, hb + 4, hsize - 4) != hsize - 4) {
        st = vbs_fail_path(err, errlen, VBS_ERR_NIFTI, path, "truncated: the header needs %d bytes", hsize);
        goto done;
    }
    int64_t dim[8], vox_offset;
    int datatype, bitpix;
    double slope, inter;
    if (hsize == 348) {
        v->version = 1;
        memcpy(&v->h1, hb, 348);
        if (swapped) nifti_swap_as_nifti1(&v->h1);
        if (memcmp(v->h1.magic, "n+1", 4)) {
            st = vbs_fail_path(err, errlen, VBS_ERR_NIFTI, path, "field magic: '%.3s' is not 'n+1' (only single-file NIfTI-1 is read)", v->h1.magic);
            goto done;
        }
        for (int i = 0; i < 8; i++) dim[i] = v->h1.dim[i];
        datatype = v->h1.datatype;
        bitpix = v->h1.bitpix;
        /* range (and NaN) before the cast: a float out of int64's range is UB */
        if (!(v->h1.vox_offset >= hsize && v->h1.vox_offset <= (1 << 24))) {
            st = vbs_fail_path(err, errlen, VBS_ERR_NIFTI, path, "field vox_offset %g is outside %d..16 MiB", v->h1.vox_offset, hsize);
            goto done;
        }
        vox_offset = (int64_t)v->h1.vox_offset;
        if ((double)vox_offset != v->h1.vox_offset) { st = vbs_fail_path(err, errlen, VBS_ERR_NIFTI, path, "field vox_offset %g is not an integer", v->h1.vox_offset); goto done; }
        slope = v->h1.scl_slope;
        inter = v->h1.scl_inter;
    } else {
        v->version = 2;
        memcpy(&v->h2, hb, 540);
        if (swapped) nifti_swap_as_nifti2(&v->h2);
        if (memcmp(v->h2.magic, "n+2", 4)) {
            st = vbs_fail_path(err, errlen, VBS_ERR_NIFTI, path, "field magic: not 'n+2' (only single-file NIfTI-2 is read)");
            goto done;
        }
        for (int i = 0; i < 8; i++) dim[i] = v->h2.dim[i];
        datatype = v->h2.datatype;
        bitpix = v->h2.bitpix;
        vox_offset = v->h2.vox_offset;
        slope = v->h2.scl_slope;
        inter = v->h2.scl_inter;
    }
    if (dim[0] < 1 || dim[0] > 7) { st = vbs_fail_path(err, errlen, VBS_ERR_NIFTI, path, "field dim[0] is %lld, must be 1..7", (long long)dim[0]); goto done; }
    int64_t nvox = 1;
    for (int i = 1; i <= dim[0]; i++) {
        if (dim[i] <= 0) { st = vbs_fail_path(err, errlen, VBS_ERR_NIFTI, path, "field dim[%d] is %lld, must be > 0", i, (long long)dim[i]); goto done; }
        if (!vbs_mul_ok(nvox, dim[i], &nvox) || nvox > VBS_NIFTI_MAX_VOXELS) {
            st = vbs_fail_path(err, errlen, VBS_ERR_NIFTI, path, "field dim: more than %lld voxels", (long long)VBS_NIFTI_MAX_VOXELS);
            goto done;
        }
    }
    int is_float, is_signed, bpv = bytes_per_voxel(datatype, &is_float, &is_signed);
    if (!bpv) { st = vbs_fail_path(err, errlen, VBS_ERR_NIFTI, path, "field datatype %d is unsupported (integer or real scalars only)", datatype); goto done; }
    if (bitpix != 8 * bpv) { st = vbs_fail_path(err, errlen, VBS_ERR_NIFTI, path, "field bitpix is %d, datatype %d needs %d", bitpix, datatype, 8 * bpv); goto done; }
    if (vox_offset < hsize || vox_offset > (1 << 24)) {
        st = vbs_fail_path(err, errlen, VBS_ERR_NIFTI, path, "field vox_offset %lld is outside %d..16 MiB", (long long)vox_offset, hsize);
        goto done;
    }
    if (!isfinite(slope) || !isfinite(inter)) { st = vbs_fail_path(err, errlen, VBS_ERR_NIFTI, path, "field scl_slope or scl_inter is not finite"); goto done; }
    /* geometry through libnifti, from the header we just validated; its
     * diagnostics are off, the library prints nothing unasked */
    nifti_set_debug_level(0);
    nifti_image *nim = v->version == 1 ? nifti_convert_n1hdr2nim(v->h1, path) : nifti_convert_n2hdr2nim(v->h2, path);
    if (!nim) { st = vbs_fail_path(err, errlen, VBS_ERR_NIFTI, path, "libnifti rejects the header"); goto done; }
    nifti_image_free(nim);
    /* skip extensions to the data, then read all of it: a short read is truncation */
    int64_t skip = vox_offset - hsize;
    while (skip > 0) {
        unsigned char tmp[4096];
        int64_t n = skip < (int64_t)sizeof tmp ? skip : (int64_t)sizeof tmp;
        if (gz_read_full(f, tmp, n) != n) { st = vbs_fail_path(err, errlen, VBS_ERR_NIFTI, path, "truncated before vox_offset %lld", (long long)vox_offset); goto done; }
        skip -= n;
    }
    int64_t nbytes = nvox * bpv;
    /* The buffer grows as bytes arrive, so a header that declares gigabytes
     * costs nothing until the bytes are really there. */
    int64_t cap = nbytes < (1 << 24) ? nbytes : (1 << 24);
    got = 0;
    raw = malloc((size_t)cap);
    while (raw) {
        got += gz_read_full(f, raw + got, cap - got);
        if (got < cap || cap == nbytes) break;
        cap = cap * 2 < nbytes ? cap * 2 : nbytes;
        unsigned char *r2 = realloc(raw, (size_t)cap);
        if (!r2) { free(raw); raw = NULL; }
        raw = r2;
    }
    if (!raw) { st = vbs_fail_path(err, errlen, VBS_ERR_NOMEM, path, "out of memory for %lld voxels", (long long)nvox); goto done; }
    if (got != nbytes) {
        int zerr;
        const char *zmsg = gzerror(f, &zerr);
        st = vbs_fail_path(err, errlen, VBS_ERR_NIFTI, path, "truncated: data has %lld of %lld bytes%s%s", (long long)got, (long long)nbytes,
                   zerr ? "; zlib: " : "", zerr ? zmsg : "");
        goto done;
    }
    v->data = malloc(sizeof(float) * (size_t)nvox);
    if (!v->data) { st = vbs_fail_path(err, errlen, VBS_ERR_NOMEM, path, "out of memory for %lld voxels", (long long)nvox); goto done; }
    if (swapped && bpv > 1) swap_bytes(raw, bpv, nvox);
    int scale = slope != 0.0 && !(slope == 1.0 && inter == 0.0);
    for (int64_t i = 0; i < nvox; i++) {
        float x = convert(raw + i * bpv, datatype);
        if (scale) x = (float)(x * slope + inter);
        if (x != x || isinf(x)) { v->nan_count++; x = 0.f; }
        v->data[i] = x;
    }
    v->dims[0] = dim[1];
    v->dims[1] = dim[0] >= 2 ? dim[2] : 1;
    v->dims[2] = dim[0] >= 3 ? dim[3] : 1;
    v->dims[3] = 1;
    for (int i = 4; i <= dim[0]; i++) v->dims[3] *= dim[i];
done:
    gzclose(f);
    free(raw);
    if (st) vbs_volume_free(v);
    else *out = v;
    return st;
}

typedef struct {
    const vbs_volume *ref;
    const float *data;
    const int64_t *dims;
    int gz;
    int datatype, bpv;
} nwrite;

static vbs_status write_nifti_body(int fd, void *user, char *err) {
    nwrite *w = user;
    int64_t nvox = w->dims[0] * w->dims[1] * w->dims[2] * w->dims[3];
    int ndim = w->dims[3] > 1 ? 4 : 3;
    unsigned char hdr[544];
    size_t hsize;
    memset(hdr, 0, sizeof hdr);
    if (w->ref->version == 2) {
        nifti_2_header h = w->ref->h2;
        memset(h.dim, 0, sizeof h.dim);
        h.dim[0] = ndim;
        for (int i = 0; i < 4; i++) h.dim[i + 1] = w->dims[i];
        for (int i = ndim + 1; i < 8; i++) h.dim[i] = 1;
        h.datatype = (int16_t)w->datatype;
        h.bitpix = (int16_t)(8 * w->bpv);
        h.vox_offset = 544;
        h.scl_slope = 1.0;
        h.scl_inter = 0.0;
        h.cal_min = h.cal_max = 0.0;
        h.intent_code = 0;
        memcpy(hdr, &h, 540);
        hsize = 544;
    } else {
        nifti_1_header h;
        if (w->ref->version == 1) h = w->ref->h1;
        else {
            /* .npy source: identity geometry, 1 mm voxels */
            memset(&h, 0, sizeof h);
            h.sizeof_hdr = 348;
            for (int i = 0; i < 8; i++) h.pixdim[i] = 1.f;
            h.qform_code = 0;
            h.sform_code = 0;
            memcpy(h.magic, "n+1", 4);
        }
        memset(h.dim, 0, sizeof h.dim);
        h.dim[0] = (int16_t)ndim;
        for (int i = 0; i < 4; i++) h.dim[i + 1] = (int16_t)w->dims[i];
        for (int i = ndim + 1; i < 8; i++) h.dim[i] = 1;
        h.datatype = (int16_t)w->datatype;
        h.bitpix = (int16_t)(8 * w->bpv);
        h.vox_offset = 352.f;
        h.scl_slope = 1.f;
        h.scl_inter = 0.f;
        h.cal_min = h.cal_max = 0.f;
        h.intent_code = 0;
        memcpy(hdr, &h, 348);
        hsize = 352;
    }
    unsigned char *buf = malloc((size_t)(nvox * w->bpv));
    if (!buf) return vbs_fail(err, VBS_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < nvox; i++) {
        float x = w->data[i];
        if (w->datatype == NIFTI_TYPE_FLOAT32) memcpy(buf + 4 * i, &x, 4);
        else if (w->datatype == NIFTI_TYPE_UINT8) buf[i] = (unsigned char)lrintf(x);
        else { int16_t s = (int16_t)lrintf(x); memcpy(buf + 2 * i, &s, 2); }
    }
    vbs_status st = VBS_OK;
    if (w->gz) {
        int fd2 = dup(fd);
        gzFile g = fd2 >= 0 ? gzdopen(fd2, "wb6") : NULL;
        if (!g) {
            if (fd2 >= 0) close(fd2);
            st = vbs_fail(err, VBS_ERR_IO, "cannot start gzip stream");
        } else {
            /* zlib reports a failed write(2) as Z_ERRNO with errno set: keep the reason */
            int ok = gzwrite(g, hdr, (unsigned)hsize) == (int)hsize, why = 0;
            for (int64_t off = 0, n = nvox * w->bpv; ok && off < n;) {
                unsigned chunk = n - off > (1 << 30) ? (1u << 30) : (unsigned)(n - off);
                ok = gzwrite(g, buf + off, chunk) == (int)chunk;
                off += chunk;
            }
            if (!ok) why = errno;
            errno = 0;
            if (gzclose(g) != Z_OK) {
                if (ok) why = errno;
                ok = 0;
            }
            if (!ok) st = vbs_fail(err, VBS_ERR_IO, "write failed: %s", why ? strerror(why) : "gzip stream error");
        }
    } else if (vbs_write_all(fd, hdr, hsize) || vbs_write_all(fd, buf, (size_t)(nvox * w->bpv))) {
        st = vbs_fail(err, VBS_ERR_IO, "write failed: %s", strerror(errno));
    }
    free(buf);
    return st;
}

vbs_status vbs_volume_write_nifti(const vbs_volume *ref, const char *path, const float *data, const int64_t dims[4],
                                  int as_labels, char *err, size_t errlen) {
    if (!ref || !path || !data || !dims) return VBS_ERR_ARG;
    int64_t n = 1;
    for (int i = 0; i < 4; i++)
        if (dims[i] <= 0 || !vbs_mul_ok(n, dims[i], &n) || n > VBS_NIFTI_MAX_VOXELS)
            return vbs_fail_path(err, errlen, VBS_ERR_ARG, path, "bad output dims");
    if (ref->version != 2)
        for (int i = 0; i < 4; i++)
            if (dims[i] > 32767) return vbs_fail_path(err, errlen, VBS_ERR_ARG, path, "dim %lld too large for NIfTI-1", (long long)dims[i]);
    nwrite w = {ref, data, dims, 0, NIFTI_TYPE_FLOAT32, 4};
    size_t len = strlen(path);
    w.gz = len > 3 && !strcmp(path + len - 3, ".gz");
    if (as_labels) {
        float mx = 0, mn = 0;
        for (int64_t i = 0; i < n; i++) { mx = data[i] > mx ? data[i] : mx; mn = data[i] < mn ? data[i] : mn; }
        if (mn >= 0 && mx <= 255) { w.datatype = NIFTI_TYPE_UINT8; w.bpv = 1; }
        else { w.datatype = NIFTI_TYPE_INT16; w.bpv = 2; }
    }
    char e[VBS_ERRLEN];
    vbs_status st = vbs_atomic_write(path, write_nifti_body, &w, e);
    if (st && err && errlen) snprintf(err, errlen, "%s", e);
    return st;
}

/* Used by npy.c: a volume without a NIfTI header. */
vbs_volume *vbs_volume_new_raw(const int64_t dims[4]) {
    vbs_volume *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    memcpy(v->dims, dims, sizeof v->dims);
    v->data = malloc(sizeof(float) * (size_t)(dims[0] * dims[1] * dims[2] * dims[3]));
    if (!v->data) { free(v); return NULL; }
    return v;
}

void vbs_volume_count_nan(vbs_volume *v) {
    int64_t n = v->dims[0] * v->dims[1] * v->dims[2] * v->dims[3];
    for (int64_t i = 0; i < n; i++)
        if (v->data[i] != v->data[i] || isinf(v->data[i])) { v->nan_count++; v->data[i] = 0.f; }
}

vbs_volume *vbs_volume_create(const int64_t dims[4], const float pixdim[3], const float origin[3]) {
    int64_t n = 1;
    for (int i = 0; i < 4; i++)
        if (dims[i] <= 0 || dims[i] > 32767 || !vbs_mul_ok(n, dims[i], &n) || n > VBS_NIFTI_MAX_VOXELS) return NULL;
    vbs_volume *v = vbs_volume_new_raw(dims);
    if (!v) return NULL;
    memset(v->data, 0, sizeof(float) * (size_t)n);
    v->version = 1;
    nifti_1_header *h = &v->h1;
    memset(h, 0, sizeof *h);
    h->sizeof_hdr = 348;
    h->dim[0] = dims[3] > 1 ? 4 : 3;
    for (int i = 0; i < 4; i++) h->dim[i + 1] = (short)dims[i];
    for (int i = 5; i < 8; i++) h->dim[i] = 1;
    h->pixdim[0] = 1.f; /* qfac */
    for (int i = 0; i < 3; i++) h->pixdim[i + 1] = pixdim[i];
    for (int i = 4; i < 8; i++) h->pixdim[i] = 1.f;
    h->xyzt_units = NIFTI_UNITS_MM;
    h->qform_code = NIFTI_XFORM_SCANNER_ANAT;
    h->sform_code = NIFTI_XFORM_SCANNER_ANAT;
    h->qoffset_x = origin[0]; h->qoffset_y = origin[1]; h->qoffset_z = origin[2];
    h->srow_x[0] = pixdim[0]; h->srow_x[3] = origin[0];
    h->srow_y[1] = pixdim[1]; h->srow_y[3] = origin[1];
    h->srow_z[2] = pixdim[2]; h->srow_z[3] = origin[2];
    h->datatype = NIFTI_TYPE_FLOAT32;
    h->bitpix = 32;
    h->vox_offset = 352.f;
    h->scl_slope = 1.f;
    memcpy(h->magic, "n+1", 4);
    return v;
}

/* qform/sform matrices from libnifti, as the header defines them */
static int geometry(const vbs_volume *v, int *qc, int *sc, double q[4][4], double sm[4][4], double pix[3]) {
    nifti_image *nim = v->version == 1 ? nifti_convert_n1hdr2nim(v->h1, NULL) : v->version == 2 ? nifti_convert_n2hdr2nim(v->h2, NULL) : NULL;
    if (!nim) return 0;
    *qc = nim->qform_code;
    *sc = nim->sform_code;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) { q[i][j] = nim->qto_xyz.m[i][j]; sm[i][j] = nim->sto_xyz.m[i][j]; }
    pix[0] = nim->dx; pix[1] = nim->dy; pix[2] = nim->dz;
    nifti_image_free(nim);
    return 1;
}

int vbs_volume_same_geometry(const vbs_volume *a, const vbs_volume *b, char *why, size_t n) {
    if (a->dims[0] != b->dims[0] || a->dims[1] != b->dims[1] || a->dims[2] != b->dims[2]) {
        if (why) snprintf(why, n, "dims %lldx%lldx%lld differ from %lldx%lldx%lld", (long long)b->dims[0], (long long)b->dims[1],
                          (long long)b->dims[2], (long long)a->dims[0], (long long)a->dims[1], (long long)a->dims[2]);
        return 0;
    }
    if (!a->version || !b->version) return a->version == b->version;
    int qa, sa, qb, sb;
    double qma[4][4], sma[4][4], qmb[4][4], smb[4][4], pa[3], pb[3];
    nifti_set_debug_level(0);
    if (!geometry(a, &qa, &sa, qma, sma, pa) || !geometry(b, &qb, &sb, qmb, smb, pb)) {
        if (why) snprintf(why, n, "unreadable geometry");
        return 0;
    }
    if (qa != qb || sa != sb) {
        if (why) snprintf(why, n, "qform/sform codes %d/%d differ from %d/%d", qb, sb, qa, sa);
        return 0;
    }
    for (int i = 0; i < 3; i++)
        if (fabs(pa[i] - pb[i]) > 1e-4 * (1 + fabs(pa[i]))) {
            if (why) snprintf(why, n, "pixdim differs on axis %d", i);
            return 0;
        }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            if ((qa > 0 && fabs(qma[i][j] - qmb[i][j]) > 1e-4 * (1 + fabs(qma[i][j]))) ||
                (sa > 0 && fabs(sma[i][j] - smb[i][j]) > 1e-4 * (1 + fabs(sma[i][j])))) {
                if (why) snprintf(why, n, "affine differs (row %d, column %d)", i, j);
                return 0;
            }
    return 1;
}

double vbs_volume_voxel_ml(const vbs_volume *v) {
    double d[3] = {1, 1, 1};
    if (v->version == 1) for (int i = 0; i < 3; i++) d[i] = fabs((double)v->h1.pixdim[i + 1]);
    else if (v->version == 2) for (int i = 0; i < 3; i++) d[i] = fabs(v->h2.pixdim[i + 1]);
    double ml = d[0] * d[1] * d[2] / 1000.0; /* mm^3 -> mL */
    return ml > 0 && isfinite(ml) ? ml : 0.001;
}

void vbs_volume_spacing(const vbs_volume *v, double out[3]) {
    for (int i = 0; i < 3; i++) {
        double d = v->version == 1 ? fabs((double)v->h1.pixdim[i + 1]) : v->version == 2 ? fabs(v->h2.pixdim[i + 1]) : 1.0;
        out[i] = d > 0 && isfinite(d) ? d : 1.0;
    }
}

/* a usable transform: finite, and the three voxel axes span space */
static int affine_ok(double m[4][4]) {
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            if (!isfinite(m[i][j])) return 0;
    double det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
                 m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    return fabs(det) > 1e-12;
}

int vbs_volume_affine(const vbs_volume *v, double m[4][4]) {
    int qc = 0, sc = 0;
    double q[4][4], s[4][4], pix[3];
    nifti_set_debug_level(0);
    if (v->version && geometry(v, &qc, &sc, q, s, pix)) {
        if (sc > 0 && affine_ok(s)) { memcpy(m, s, sizeof s); return sc; }
        if (qc > 0 && affine_ok(q)) { memcpy(m, q, sizeof q); return qc; }
    }
    /* no usable transform: voxel order, scaled by the voxel size */
    double sp[3];
    vbs_volume_spacing(v, sp);
    memset(m, 0, 16 * sizeof(double));
    for (int i = 0; i < 3; i++) m[i][i] = sp[i];
    m[3][3] = 1;
    return 0;
}
