/*
 * make_scan.c: writes a synthetic four-channel brain MRI in the BraTS
 * layout (CASE_flair.nii.gz, _t1, _t1ce, _t2), with a known lesion, so
 * that the demo and the tests have a scan without downloading one.
 * An ellipsoidal "brain" with smooth intensity variation, a necrotic
 * core, enhancing rim and surrounding oedema, each with its own contrast
 * per channel, plus noise, and the reference labels (CASE_seg.nii.gz: 1
 * necrosis, 2 oedema, 4 enhancing, as in BraTS 2021). The case name seeds
 * what differs between cases: the lesion's place, size and irregular
 * outline, each channel's gain (as between scanners) and the noise.
 * Uses only the public API.
 *
 *   make_scan OUTDIR [CASE] [NX NY NZ]     (default BraTS-like 240x240x155
 *                                           is large; the demo uses 96x96x32)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "vbseg.h"

static double urand(uint64_t *s) {
    *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17;
    return (double)(*s >> 11) / 9007199254740992.0;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc == 4 || argc == 5 || argc > 6) {
        fprintf(stderr, "usage: make_scan OUTDIR [CASE] [NX NY NZ]\n");
        return 2;
    }
    const char *dir = argv[1], *name = argc > 2 ? argv[2] : "Demo_001";
    int64_t dims[4] = {96, 96, 32, 1};
    if (argc == 6)
        for (int i = 0; i < 3; i++) {
            dims[i] = atoll(argv[3 + i]);
            if (dims[i] < 4 || dims[i] > 1024) { fprintf(stderr, "make_scan: size %s out of 4..1024\n", argv[3 + i]); return 2; }
        }
    const char *chan[4] = {"flair", "t1", "t1ce", "t2"};
    /* per tissue (background, brain, oedema, enhancing rim, necrosis) intensity per channel */
    const double level[4][5] = {{0, 420, 900, 700, 500}, {0, 600, 450, 500, 300}, {0, 550, 500, 1300, 350}, {0, 500, 950, 800, 1100}};
    float pix[3] = {1.f, 1.f, 1.f}, org[3] = {-(float)dims[0] / 2, -(float)dims[1] / 2, -(float)dims[2] / 2};
    uint64_t cs = 0x9E3779B97F4A7C15ull;
    for (const char *p = name; *p; p++) cs = (cs ^ (unsigned char)*p) * 0x100000001B3ull;
    urand(&cs);
    /* the lesion: somewhere inside the brain, 8-15% of the width, a bumpy outline */
    double cx = dims[0] * (0.32 + 0.36 * urand(&cs)), cy = dims[1] * (0.32 + 0.36 * urand(&cs)), cz = dims[2] * (0.35 + 0.3 * urand(&cs));
    double r = dims[0] * (0.08 + 0.07 * urand(&cs)), ph1 = 6.283 * urand(&cs), ph2 = 6.283 * urand(&cs), bump = 0.25 * urand(&cs);
    double gain[4], noise = 0.04 + 0.06 * urand(&cs);
    for (int c = 0; c < 4; c++) gain[c] = 0.8 + 0.4 * urand(&cs);
    float *seg = calloc((size_t)(dims[0] * dims[1] * dims[2]), sizeof(float));
    if (!seg) { fprintf(stderr, "make_scan: out of memory\n"); return 1; }
    static const float seg_value[5] = {0, 0, 2, 4, 1}; /* background, brain, oedema, enhancing rim, necrosis */
    for (int c = 0; c < 4; c++) {
        vbs_volume *v = vbs_volume_create(dims, pix, org);
        if (!v) { fprintf(stderr, "make_scan: out of memory\n"); return 1; }
        float *x = vbs_volume_data(v);
        uint64_t seed = cs + 0x1234567ull + (uint64_t)c;
        for (int64_t k = 0; k < dims[2]; k++)
            for (int64_t j = 0; j < dims[1]; j++)
                for (int64_t i = 0; i < dims[0]; i++) {
                    double u = (i - dims[0] / 2.0) / (dims[0] * 0.42), w = (j - dims[1] / 2.0) / (dims[1] * 0.47),
                           z = (k - dims[2] / 2.0) / (dims[2] * 0.48);
                    double brain = u * u + w * w + z * z;
                    int t = 0;
                    double val = 0;
                    if (brain < 1) {
                        double dx = i - cx, dy = j - cy, dz = (k - cz) * dims[0] / (double)dims[2] * 0.5;
                        double ang = atan2(dy, dx), d = sqrt(dx * dx + dy * dy + dz * dz) / (1 + bump * sin(3 * ang + ph1) * cos(2 * ang + ph2));
                        t = d < 0.5 * r ? 4 : d < 0.75 * r ? 3 : d < 1.4 * r ? 2 : 1;
                        /* partial volume: each tissue fades into the next over about a voxel, as in a
                         * real scan, so the voxels on a boundary are ambiguous; the labels stay sharp */
                        double edge[3] = {0.5 * r, 0.75 * r, 1.4 * r}, inside[3];
                        for (int e = 0; e < 3; e++) inside[e] = 1 / (1 + exp((d - edge[e]) / 0.6));
                        val = level[c][4] * inside[0] + level[c][3] * (inside[1] - inside[0]) + level[c][2] * (inside[2] - inside[1]) +
                              level[c][1] * (1 - inside[2]);
                    }
                    seg[(k * dims[1] + j) * dims[0] + i] = seg_value[t];
                    if (t) val *= gain[c] * (1.0 + 0.08 * sin(i * 0.15) * cos(j * 0.11) + 2 * noise * (urand(&seed) - 0.5));
                    x[(k * dims[1] + j) * dims[0] + i] = (float)val;
                }
        char path[4096], err[1024];
        snprintf(path, sizeof path, "%s/%s_%s.nii.gz", dir, name, chan[c]);
        if (vbs_volume_write_nifti(v, path, x, dims, 0, err, sizeof err)) {
            fprintf(stderr, "make_scan: %s\n", err);
            vbs_volume_free(v);
            return 1;
        }
        printf("wrote %s\n", path);
        if (c == 3) {
            snprintf(path, sizeof path, "%s/%s_seg.nii.gz", dir, name);
            if (vbs_volume_write_nifti(v, path, seg, dims, 1, err, sizeof err)) {
                fprintf(stderr, "make_scan: %s\n", err);
                vbs_volume_free(v);
                return 1;
            }
            printf("wrote %s\n", path);
        }
        vbs_volume_free(v);
    }
    free(seg);
    return 0;
}
