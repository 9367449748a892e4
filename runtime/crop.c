/*
 * crop.c: the vbs_box around a scan's non-zero voxels, and copies into and
 * out of it.
 */
#include <string.h>

#include "crop.h"

int vbs_box_nonzero(const float *x, int C, const int64_t d[3], vbs_box *b) {
    for (int a = 0; a < 3; a++) { b->lo[a] = d[a]; b->hi[a] = 0; }
    int64_t plane = d[0] * d[1] * d[2];
    for (int64_t k = 0; k < d[2]; k++)
        for (int64_t j = 0; j < d[1]; j++) {
            const int64_t row = (k * d[1] + j) * d[0];
            for (int c = 0; c < C; c++) {
                const float *r = x + c * plane + row;
                int64_t i0 = 0, i1 = d[0];
                while (i0 < i1 && r[i0] == 0.f) i0++;
                if (i0 == i1) continue;
                while (r[i1 - 1] == 0.f) i1--;
                if (i0 < b->lo[0]) b->lo[0] = i0;
                if (i1 > b->hi[0]) b->hi[0] = i1;
                if (j < b->lo[1]) b->lo[1] = j;
                if (j + 1 > b->hi[1]) b->hi[1] = j + 1;
                if (k < b->lo[2]) b->lo[2] = k;
                if (k + 1 > b->hi[2]) b->hi[2] = k + 1;
            }
        }
    return b->hi[0] > b->lo[0];
}

int64_t vbs_box_voxels(const vbs_box *b) {
    return (b->hi[0] - b->lo[0]) * (b->hi[1] - b->lo[1]) * (b->hi[2] - b->lo[2]);
}

/* one walk for both directions: to_full copies packed src into full dst */
static void copy_box(const float *src, float *dst, int C, const int64_t d[3], const vbs_box *b, int to_full) {
    const int64_t w = b->hi[0] - b->lo[0], plane = d[0] * d[1] * d[2];
    int64_t p = 0;
    for (int c = 0; c < C; c++)
        for (int64_t k = b->lo[2]; k < b->hi[2]; k++)
            for (int64_t j = b->lo[1]; j < b->hi[1]; j++, p += w) {
                const int64_t f = c * plane + (k * d[1] + j) * d[0] + b->lo[0];
                if (to_full) memcpy(dst + f, src + p, sizeof(float) * (size_t)w);
                else memcpy(dst + p, src + f, sizeof(float) * (size_t)w);
            }
}

void vbs_box_extract(const float *full, int C, const int64_t d[3], const vbs_box *b, float *dst) {
    copy_box(full, dst, C, d, b, 0);
}

void vbs_box_insert(const float *packed, int C, const int64_t d[3], const vbs_box *b, float *full) {
    copy_box(packed, full, C, d, b, 1);
}
