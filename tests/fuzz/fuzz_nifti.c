/*
 * fuzz_nifti.c: libFuzzer target for the NIfTI reader (vbs_volume_read_nifti,
 * its public path entry point) on .nii and .nii.gz: the input is written to
 * a scratch file named .nii.gz when it starts with the gzip magic, else .nii
 * (the reader goes by content; the name is what a user would give it). The
 * bytes present for the allocation cap (fuzz.h) are those the stream
 * delivers, counted through zlib as the reader reads them, so a small
 * .nii.gz that inflates to megabytes may allocate for them.
 */
#include <zlib.h>

#include "fuzz.h"
#include "vbseg.h"

/* What zlib delivers from path (plain files as they are), counted up to a
 * limit beyond which the cap does not matter. */
static size_t inflated(const char *path) {
    gzFile f = gzopen(path, "rb");
    if (!f) return 0;
    static char buf[1 << 16];
    size_t n = 0;
    int r;
    while (n < ((size_t)1 << 32) && (r = gzread(f, buf, sizeof buf)) > 0) n += (size_t)r;
    gzclose(f);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
    const char *path = fuzz_path(gz ? "input.nii.gz" : "input.nii");
    fuzz_status = -1;
    if (fuzz_write(path, data, size)) return 0;
    size_t present = gz ? inflated(path) : size;
    char err[512];
    vbs_volume *v = NULL;
    fuzz_cap_on(present > size ? present : size, 0);
    vbs_status st = vbs_volume_read_nifti(path, &v, err, sizeof err);
    fuzz_cap_off();
    if (!st) {
        /* what a caller does next: geometry and every voxel */
        int64_t d[4];
        double m[4][4], sp[3];
        vbs_volume_dims(v, d);
        vbs_volume_affine(v, m);
        vbs_volume_spacing(v, sp);
        const float *x = vbs_volume_data(v);
        volatile float sink = x[d[0] * d[1] * d[2] * d[3] - 1];
        (void)sink;
    }
    vbs_volume_free(v);
    fuzz_status = (int)st;
    return 0;
}
