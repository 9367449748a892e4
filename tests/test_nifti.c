/*
 * test_nifti.c: NIfTI input and output. Headers are written here byte by
 * byte from the NIfTI-1/-2 field offsets, not with libnifti, so the
 * reader is checked against the standard rather than against itself.
 * Covered: data and geometry survive a write/read (.nii and .nii.gz),
 * scl_slope/scl_inter are applied, big-endian files read, NaN voxels are
 * counted, and every malformed header is refused with the field named.
 */
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "vbseg.h"

static char dir[] = "/tmp/vbs_test_nifti.XXXXXX";

static void put16(unsigned char *h, int off, int v, int be) {
    h[off + (be ? 1 : 0)] = (unsigned char)(v & 255);
    h[off + (be ? 0 : 1)] = (unsigned char)((v >> 8) & 255);
}
static void put32(unsigned char *h, int off, uint32_t v, int be) {
    for (int i = 0; i < 4; i++) h[off + (be ? 3 - i : i)] = (unsigned char)(v >> 8 * i);
}
static void putf(unsigned char *h, int off, float f, int be) { uint32_t u; memcpy(&u, &f, 4); put32(h, off, u, be); }
static void put64(unsigned char *h, int off, uint64_t v) { for (int i = 0; i < 8; i++) h[off + i] = (unsigned char)(v >> 8 * i); }

/* A NIfTI-1 single-file header (352 bytes with the extension flag). */
static void hdr1(unsigned char *h, int ndim, const int *dims, int datatype, int bitpix, float vox_offset, float slope, float inter, int be) {
    memset(h, 0, 352);
    put32(h, 0, 348, be);
    put16(h, 40, ndim, be);
    for (int i = 0; i < 7; i++) put16(h, 42 + 2 * i, i < ndim && i < 3 ? dims[i] : 1, be); /* callers pass 3 dims */
    put16(h, 70, datatype, be);
    put16(h, 72, bitpix, be);
    for (int i = 0; i < 8; i++) putf(h, 76 + 4 * i, i == 0 ? 1.f : 1.f + 0.25f * (float)i, be);
    putf(h, 108, vox_offset, be);
    putf(h, 112, slope, be);
    putf(h, 116, inter, be);
    put16(h, 252, 1, be); /* qform_code */
    put16(h, 254, 2, be); /* sform_code */
    putf(h, 280, 1.25f, be); putf(h, 292, 7.f, be); putf(h, 296, 1.5f, be); putf(h, 308, -3.f, be);
    putf(h, 304 + 8, 1.75f, be); putf(h, 324, 11.f, be);
    memcpy(h + 344, "n+1", 4);
}

static void write_file(const char *name, const void *a, size_t na, const void *b, size_t nb, int gz) {
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (gz) {
        gzFile f = gzopen(path, "wb");
        gzwrite(f, a, (unsigned)na);
        if (nb) gzwrite(f, b, (unsigned)nb);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        fwrite(a, 1, na, f);
        if (nb) fwrite(b, 1, nb, f);
        fclose(f);
    }
}

static vbs_status load(const char *name, vbs_volume **v, char *err) {
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return vbs_volume_read_nifti(path, v, err, 512);
}

static void expect_refusal(const char *name, const char *needle) {
    vbs_volume *v = NULL;
    char err[512] = "";
    vbs_status st = load(name, &v, err);
    CHECK(st == VBS_ERR_NIFTI && v == NULL, "%s: status %s (%s)", name, vbs_status_name(st), err);
    CHECK(strstr(err, name) && strstr(err, needle), "%s: message lacks the file or '%s': %s", name, needle, err);
    vbs_volume_free(v);
}

static void good_files(void) {
    int dims[3] = {7, 5, 3};
    unsigned char h[352];
    float data[105];
    for (int i = 0; i < 105; i++) data[i] = (float)i * 0.5f - 10.f;
    hdr1(h, 3, dims, 16, 32, 352, 0, 0, 0);
    write_file("f32.nii", h, 352, data, sizeof data, 0);
    write_file("f32.nii.gz", h, 352, data, sizeof data, 1);
    for (int gz = 0; gz < 2; gz++) {
        vbs_volume *v;
        char err[512];
        const char *name = gz ? "f32.nii.gz" : "f32.nii";
        CHECK(load(name, &v, err) == VBS_OK, "%s", err);
        if (!v) continue;
        int64_t d[4];
        vbs_volume_dims(v, d);
        CHECK(d[0] == 7 && d[1] == 5 && d[2] == 3 && d[3] == 1, "%s dims %lld %lld %lld %lld", name, (long long)d[0], (long long)d[1], (long long)d[2], (long long)d[3]);
        CHECK(close_enough(name, vbs_volume_data(v), data, 105, 0, 0), "%s data", name);
        /* written maps keep the geometry: pixdim, qform/sform codes, quaternion, srows */
        char out[300];
        snprintf(out, sizeof out, "%s/out%d.nii.gz", dir, gz);
        float lab[105];
        for (int i = 0; i < 105; i++) lab[i] = (float)(i % 3 == 0 ? 4 : i % 3);
        CHECK(vbs_volume_write_nifti(v, out, lab, d, 1, err, sizeof err) == VBS_OK, "%s", err);
        gzFile f = gzopen(out, "rb");
        unsigned char oh[352], ob[105];
        CHECK(gzread(f, oh, 352) == 352 && gzread(f, ob, 105) == 105, "short output");
        gzclose(f);
        CHECK(!memcmp(oh + 76, h + 76, 32) && !memcmp(oh + 252, h + 252, 76), "geometry changed in %s", out);
        CHECK(oh[70] == 2 && oh[72] == 8, "labels not written as uint8");
        int ok = 1;
        for (int i = 0; i < 105; i++) ok &= ob[i] == (unsigned char)lab[i];
        CHECK(ok, "label values changed");
        vbs_volume *back;
        CHECK(vbs_volume_read_nifti(out, &back, err, sizeof err) == VBS_OK, "%s", err);
        if (back) CHECK(close_enough("reread", vbs_volume_data(back), lab, 105, 0, 0), "reread labels");
        vbs_volume_free(back);
        /* a 4D float map */
        int64_t d4[4] = {7, 5, 3, 2};
        float two[210];
        for (int i = 0; i < 210; i++) two[i] = (float)i / 7.f;
        snprintf(out, sizeof out, "%s/map%d.nii", dir, gz);
        CHECK(vbs_volume_write_nifti(v, out, two, d4, 0, err, sizeof err) == VBS_OK, "%s", err);
        CHECK(vbs_volume_read_nifti(out, &back, err, sizeof err) == VBS_OK, "%s", err);
        if (back) {
            int64_t bd[4];
            vbs_volume_dims(back, bd);
            CHECK(bd[3] == 2 && close_enough("4D map", vbs_volume_data(back), two, 210, 0, 0), "4D map round trip");
        }
        vbs_volume_free(back);
        vbs_volume_free(v);
    }
    /* int16 with scl_slope 2, scl_inter 1 */
    int16_t iv[105];
    float want[105];
    for (int i = 0; i < 105; i++) { iv[i] = (int16_t)(i - 50); want[i] = 2.f * (float)(i - 50) + 1.f; }
    hdr1(h, 3, dims, 4, 16, 352, 2, 1, 0);
    write_file("scaled.nii.gz", h, 352, iv, sizeof iv, 1);
    vbs_volume *v;
    char err[512];
    CHECK(load("scaled.nii.gz", &v, err) == VBS_OK, "%s", err);
    if (v) CHECK(close_enough("scaled", vbs_volume_data(v), want, 105, 0, 0), "scl_slope/scl_inter not applied");
    vbs_volume_free(v);
    /* big-endian float32 */
    unsigned char be[105 * 4];
    for (int i = 0; i < 105; i++) putf(be, 4 * i, data[i], 1);
    hdr1(h, 3, dims, 16, 32, 352, 1, 0, 1);
    write_file("bigendian.nii", h, 352, be, sizeof be, 0);
    CHECK(load("bigendian.nii", &v, err) == VBS_OK, "%s", err);
    if (v) CHECK(close_enough("big-endian", vbs_volume_data(v), data, 105, 0, 0), "big-endian data");
    vbs_volume_free(v);
    /* NaN voxels are counted and zeroed */
    float nan_data[105];
    memcpy(nan_data, data, sizeof data);
    nan_data[3] = NAN;
    nan_data[50] = INFINITY;
    hdr1(h, 3, dims, 16, 32, 352, 0, 0, 0);
    write_file("nan.nii", h, 352, nan_data, sizeof nan_data, 0);
    CHECK(load("nan.nii", &v, err) == VBS_OK, "%s", err);
    if (v) CHECK(vbs_volume_nan_count(v) == 2 && vbs_volume_data(v)[3] == 0.f, "NaN voxels: %lld", (long long)vbs_volume_nan_count(v));
    vbs_volume_free(v);
}

static void bad_files(void) {
    int dims[3] = {7, 5, 3};
    unsigned char h[352];
    float data[105] = {0};
    hdr1(h, 3, dims, 16, 32, 352, 1, 0, 0);
    write_file("trunc.nii", h, 352, data, sizeof data - 4, 0);
    expect_refusal("trunc.nii", "truncated");
    write_file("trunc.nii.gz", h, 352, data, sizeof data - 40, 1);
    expect_refusal("trunc.nii.gz", "truncated");
    write_file("trunc_header.nii", h, 200, NULL, 0, 0);
    expect_refusal("trunc_header.nii", "truncated");
    /* gzip stream cut in the middle */
    {
        char path[300];
        snprintf(path, sizeof path, "%s/trunc.nii.gz", dir);
        write_file("cut.nii.gz", h, 352, data, sizeof data, 1);
        snprintf(path, sizeof path, "%s/cut.nii.gz", dir);
        FILE *f = fopen(path, "rb+");
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        if (ftruncate(fileno(f), n / 2)) printf("truncate failed\n");
        fclose(f);
        expect_refusal("cut.nii.gz", "truncated");
    }
    hdr1(h, 0, dims, 16, 32, 352, 1, 0, 0);
    write_file("dim0_zero.nii", h, 352, data, sizeof data, 0);
    expect_refusal("dim0_zero.nii", "dim[0]");
    hdr1(h, 8, dims, 16, 32, 352, 1, 0, 0);
    write_file("dim0_eight.nii", h, 352, data, sizeof data, 0);
    expect_refusal("dim0_eight.nii", "dim[0]");
    int neg[3] = {7, -5, 3};
    hdr1(h, 3, neg, 16, 32, 352, 1, 0, 0);
    write_file("negdim.nii", h, 352, data, sizeof data, 0);
    expect_refusal("negdim.nii", "dim[2]");
    hdr1(h, 3, dims, 1234, 32, 352, 1, 0, 0);
    write_file("datatype.nii", h, 352, data, sizeof data, 0);
    expect_refusal("datatype.nii", "datatype");
    hdr1(h, 3, dims, 16, 64, 352, 1, 0, 0);
    write_file("bitpix.nii", h, 352, data, sizeof data, 0);
    expect_refusal("bitpix.nii", "bitpix");
    hdr1(h, 3, dims, 16, 32, 1e9f, 1, 0, 0);
    write_file("voxoffset.nii", h, 352, data, sizeof data, 0);
    expect_refusal("voxoffset.nii", "vox_offset");
    hdr1(h, 3, dims, 16, 32, NAN, 1, 0, 0);
    write_file("voxoffset_nan.nii", h, 352, data, sizeof data, 0);
    expect_refusal("voxoffset_nan.nii", "vox_offset");
    hdr1(h, 3, dims, 16, 32, 352, NAN, 0, 0);
    write_file("slope.nii", h, 352, data, sizeof data, 0);
    expect_refusal("slope.nii", "scl_slope");
    /* 377 bytes that declare 16 GiB: refused by the voxel cap; 1 GiB under the cap: refused as truncated */
    int huge[3] = {2048, 2048, 1024};
    hdr1(h, 3, huge, 16, 32, 352, 1, 0, 0);
    write_file("liar16g.nii", h, 352, data, 25, 0);
    expect_refusal("liar16g.nii", "voxels");
    int big[3] = {1024, 1024, 256};
    hdr1(h, 3, big, 16, 32, 352, 1, 0, 0);
    write_file("liar1g.nii.gz", h, 352, data, 25, 1);
    expect_refusal("liar1g.nii.gz", "truncated");
    hdr1(h, 3, dims, 16, 32, 352, 1, 0, 0);
    memcpy(h + 344, "ni1", 4);
    write_file("twofile.nii", h, 352, data, sizeof data, 0);
    expect_refusal("twofile.nii", "magic");
    write_file("text.nii", "this is not a scan at all, just some text padding it out", 57, NULL, 0, 0);
    expect_refusal("text.nii", "not a NIfTI");
    /* NIfTI-2 with dim[0] = 200 (libnifti 3.0.1's reader smashes its stack on it) */
    unsigned char h2[544] = {0};
    put32(h2, 0, 540, 0);
    memcpy(h2 + 4, "n+2\0\r\n\032\n", 8);
    put16(h2, 12, 16, 0);
    put16(h2, 14, 32, 0);
    put64(h2, 16, 200);
    for (int i = 1; i < 8; i++) put64(h2, 16 + 8 * i, 4);
    put64(h2, 168, 544);
    write_file("nifti2_dim200.nii", h2, 544, data, sizeof data, 0);
    expect_refusal("nifti2_dim200.nii", "dim[0]");
    /* a well-formed NIfTI-2 file reads */
    put64(h2, 16, 3);
    put64(h2, 24, 7); put64(h2, 32, 5); put64(h2, 40, 3);
    double one = 1.0;
    memcpy(h2 + 176, &one, 8);
    write_file("nifti2_ok.nii", h2, 544, data, sizeof data, 0);
    vbs_volume *v;
    char err[512];
    CHECK(load("nifti2_ok.nii", &v, err) == VBS_OK, "NIfTI-2: %s", err);
    vbs_volume_free(v);
    CHECK(load("missing.nii", &v, err) == VBS_ERR_IO, "missing file: %s", err);
}

/* Seeded random damage to the header and data of a valid file, plain and
 * gzip: every read ends in a status, never a crash (ASan in CI). */
static void mutations(void) {
    int dims[3] = {7, 5, 3};
    unsigned char h[352 + 420];
    float data[105];
    for (int i = 0; i < 105; i++) data[i] = (float)i;
    hdr1(h, 3, dims, 16, 32, 352, 1, 0, 0);
    memcpy(h + 352, data, sizeof data);
    uint64_t r = 0x2545F4914F6CDD1Dull;
    int refused = 0;
    for (int t = 0; t < 600; t++) {
        unsigned char m[sizeof h];
        memcpy(m, h, sizeof h);
        size_t n = sizeof h;
        for (int e = 0; e < 1 + t % 4; e++) {
            r ^= r << 13; r ^= r >> 7; r ^= r << 17;
            size_t at = (size_t)(r % 360); /* mostly the header */
            if (t % 3 == 0) m[at] ^= (unsigned char)(1u << (r >> 61));
            else if (t % 3 == 1) m[at] = (unsigned char)(r >> 56);
            else n = (size_t)(r % sizeof h);
        }
        const char *name = t % 2 ? "mut.nii.gz" : "mut.nii";
        write_file(name, m, n, NULL, 0, t % 2);
        vbs_volume *v = NULL;
        char err[512] = "";
        vbs_status st = load(name, &v, err);
        if (st) {
            refused++;
            CHECK(v == NULL && strstr(err, name), "mutant %d: status %d without a proper message: %s", t, (int)st, err);
        }
        vbs_volume_free(v);
    }
    printf("mutations: %d of 600 refused\n", refused);
    CHECK(refused > 200, "only %d damaged files refused", refused);
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    good_files();
    bad_files();
    mutations();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) printf("could not remove %s\n", dir);
    return finish("test_nifti");
}
