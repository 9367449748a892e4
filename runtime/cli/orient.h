/*
 * orient.h: how a volume is shown on screen (orient.c), shared by the
 * previews of `vbseg infer` (preview.c) and the paper's figure
 * (samples/paper/figure.c): the display orientation from the affine, the
 * position of a slice in mm, the display-pixel-to-voxel maps, and the
 * orientation marks and line.
 */
#ifndef VBS_CLI_ORIENT_H
#define VBS_CLI_ORIENT_H

#include <stddef.h>
#include <stdint.h>

#include "canvas.h"

/* How the voxel axes map to the display. */
typedef struct {
    int known;              /* 0: no affine, voxel order */
    int slice, hor, ver;    /* voxel axes: cut by the slices, across, down the image */
    int flip_h, flip_v;     /* the display runs against the voxel index */
    int world, wh, wv;      /* world axes (0 x, 1 y, 2 z) closest to slice, hor, ver */
    int dir;                /* +1: the slice index grows with that world coordinate */
    double sp[3];           /* voxel size along each voxel axis (mm) */
} orient;

/* The display of a volume of dims (x, y, z) with the voxel-to-world affine
 * (RAS+ mm, as vbs_volume_affine; affine_code its return value, 0: none):
 * the voxel axis closest to S-I cuts the slices (a volume one voxel thick
 * along one axis is cut along it), shown in radiological convention
 * (patient's right on the image's left, anterior or superior at the top).
 * Without an affine: x across, y up, slices along z. */
void orient_from_affine(const int64_t dims[3], const double affine[4][4], int affine_code, orient *o);

/* The world coordinate o->world (mm) of the centre of slice k (voxel
 * order: k times the slice spacing). */
double orient_slice_position(const int64_t dims[3], const double affine[4][4], const orient *o, int64_t k);

/* "z=+12.5 mm" for slice k at world position pos, or "slice 7" without an
 * affine; in buf (size n). */
void orient_slice_text(const orient *o, double pos, int64_t k, char *buf, size_t n);

/* count[k] (dims[axis] of them): the voxels of slice k along voxel axis
 * `axis` whose value in vol (x*y*z floats, x fastest) differs from `not`.
 * Returns their total. */
int64_t orient_slice_counts(const int64_t dims[3], int axis, const float *vol, float not, int64_t *count);

/* One line saying how the image is oriented ("RADIOLOGICAL: ..."). */
void orient_line(const orient *o, char *buf, size_t n);

/* For a panel of pw x ph display pixels: th[x] (pw ints) and tv[y] (ph
 * ints) are the voxel indices along o->hor and o->ver shown at display
 * column x and row y (nearest neighbour, mirrored where the display runs
 * against the voxels). */
void orient_pixel_map(const orient *o, const int64_t dims[3], int pw, int ph, int *th, int *tv);

/* The orientation letters (R/L, A/P, S/I) around the panel q = {x, y, w, h},
 * in a band cell_x wide on its sides and cell_y high above and below; none
 * without an affine. */
void orient_marks(canvas *c, const orient *o, const int q[4], int cell_x, int cell_y, const unsigned char rgb[3]);

#endif
