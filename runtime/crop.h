/*
 * crop.h: the vbs_box around a scan's non-zero voxels (crop.c). `vbseg infer`
 * runs the network inside it only, as nnU-Net does; the maps outside are
 * background with zero uncertainty.
 */
#ifndef VBS_CROP_H
#define VBS_CROP_H

#include <stdint.h>

typedef struct {
    int64_t lo[3], hi[3];   /* x, y, z (NIfTI i, j, k); hi exclusive */
} vbs_box;

/* The vbs_box around the voxels non-zero in any of C planes of d[0]*d[1]*d[2]
 * (x fastest); 0 if every voxel is zero. */
int vbs_box_nonzero(const float *x, int C, const int64_t d[3], vbs_box *b);
int64_t vbs_box_voxels(const vbs_box *b);
/* The box's part of each of C full planes, packed into dst. */
void vbs_box_extract(const float *full, int C, const int64_t d[3], const vbs_box *b, float *dst);
/* The reverse: packed planes into the vbs_box of each full plane; the rest untouched. */
void vbs_box_insert(const float *packed, int C, const int64_t d[3], const vbs_box *b, float *full);

#endif
