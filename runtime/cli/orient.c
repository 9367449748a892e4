/*
 * orient.c: display orientation from the affine, for the PNG pictures
 * (infer's previews, the paper's figure). The voxel axis closest to S-I
 * cuts the slices, and each slice is shown in radiological convention
 * (patient's right on the image's left, anterior at the top), so a scan
 * stored LPS or with permuted axes gives the same pixels as its RAS twin.
 *
 * Not a resampler: an oblique scan is cut along its nearest voxel axes, and
 * the pixel maps are nearest-neighbour.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "orient.h"

void orient_from_affine(const int64_t dims[3], const double affine[4][4], int affine_code, orient *o) {
    double u[3][3];
    int ok = affine_code > 0;
    memset(o, 0, sizeof *o);
    for (int i = 0; i < 3; i++) {
        double n = 0;
        for (int r = 0; r < 3; r++) n += affine[r][i] * affine[r][i];
        n = sqrt(n);
        if (!(n > 0) || !isfinite(n)) { ok = 0; n = 1; }
        for (int r = 0; r < 3; r++) u[i][r] = affine[r][i] / n;
        /* rounded so that a qform's float noise cannot change a panel's size */
        o->sp[i] = round(n * 1e4) / 1e4;
        if (!(o->sp[i] > 0)) o->sp[i] = 1;
    }
    if (!ok) {
        /* voxel order: x across, y up, slices along z */
        o->slice = 2; o->hor = 0; o->ver = 1; o->flip_v = 1; o->world = 2; o->wv = 1; o->dir = 1;
        return;
    }
    o->known = 1;
    int s = 0, single = -1, n_single = 0;
    for (int i = 1; i < 3; i++)
        if (fabs(u[i][2]) > fabs(u[s][2])) s = i;
    for (int i = 0; i < 3; i++)
        if (dims[i] == 1) { single = i; n_single++; }
    if (n_single == 1) s = single; /* one slice: it is the one to show */
    int a = s == 0 ? 1 : 0, b = s == 2 ? 1 : 2;
    o->slice = s;
    o->hor = fabs(u[a][0]) >= fabs(u[b][0]) ? a : b;
    o->ver = o->hor == a ? b : a;
    int ax[3] = {s, o->hor, o->ver}, *w[3] = {&o->world, &o->wh, &o->wv};
    for (int k = 0; k < 3; k++) {
        *w[k] = 0;
        for (int r = 1; r < 3; r++)
            if (fabs(u[ax[k]][r]) > fabs(u[ax[k]][*w[k]])) *w[k] = r;
    }
    /* radiological: the positive world direction (R, A, S) on the left and at the top */
    o->flip_h = u[o->hor][o->wh] > 0;
    o->flip_v = u[o->ver][o->wv] > 0;
    o->dir = u[s][o->world] > 0 ? 1 : -1;
}

double orient_slice_position(const int64_t dims[3], const double affine[4][4], const orient *o, int64_t k) {
    double c[3];
    for (int i = 0; i < 3; i++) c[i] = (double)(dims[i] - 1) / 2;
    c[o->slice] = (double)k;
    if (!o->known) return (double)k * o->sp[o->slice];
    double x = affine[o->world][3];
    for (int i = 0; i < 3; i++) x += affine[o->world][i] * c[i];
    return x;
}

void orient_slice_text(const orient *o, double pos, int64_t k, char *buf, size_t n) {
    double shown = round(pos * 10) / 10 + 0.0; /* never "-0.0" */
    if (o->known) snprintf(buf, n, "%c=%+.1f mm", "xyz"[o->world], shown);
    else snprintf(buf, n, "slice %lld", (long long)k);
}

int64_t orient_slice_counts(const int64_t dims[3], int axis, const float *vol, float not, int64_t *count) {
    int64_t nx = dims[0], ny = dims[1], nz = dims[2], total = 0;
    memset(count, 0, sizeof(int64_t) * (size_t)dims[axis]);
    for (int64_t k = 0; k < nz; k++)
        for (int64_t j = 0; j < ny; j++)
            for (int64_t i = 0; i < nx; i++)
                if (vol[(k * ny + j) * nx + i] != not) {
                    count[axis == 0 ? i : axis == 1 ? j : k]++;
                    total++;
                }
    return total;
}

void orient_line(const orient *o, char *buf, size_t n) {
    if (!o->known) snprintf(buf, n, "VOXEL ORDER: no affine, orientation unknown");
    else if (o->wh == 0) snprintf(buf, n, "RADIOLOGICAL: patient's right on image left");
    else snprintf(buf, n, "RADIOLOGICAL");
}

void orient_pixel_map(const orient *o, const int64_t dims[3], int pw, int ph, int *th, int *tv) {
    int64_t nh = dims[o->hor], nv = dims[o->ver];
    for (int x = 0; x < pw; x++) {
        int64_t t = (int64_t)(((double)x + 0.5) * (double)nh / pw);
        t = t < nh ? t : nh - 1;
        th[x] = (int)(o->flip_h ? nh - 1 - t : t);
    }
    for (int y = 0; y < ph; y++) {
        int64_t t = (int64_t)(((double)y + 0.5) * (double)nv / ph);
        t = t < nv ? t : nv - 1;
        tv[y] = (int)(o->flip_v ? nv - 1 - t : t);
    }
}

void orient_marks(canvas *c, const orient *o, const int q[4], int cell_x, int cell_y, const unsigned char rgb[3]) {
    if (!o->known) return;
    const char pos[3] = {'R', 'A', 'S'}, neg[3] = {'L', 'P', 'I'};
    char m[2] = {0, 0};
    m[0] = pos[o->wv]; canvas_text(c, q[0] + q[2] / 2 - 5, q[1] - cell_y + 3, TS, m, rgb);
    m[0] = neg[o->wv]; canvas_text(c, q[0] + q[2] / 2 - 5, q[1] + q[3] + 4, TS, m, rgb);
    m[0] = pos[o->wh]; canvas_text(c, q[0] - cell_x + 3, q[1] + q[3] / 2 - 7, TS, m, rgb);
    m[0] = neg[o->wh]; canvas_text(c, q[0] + q[2] + 4, q[1] + q[3] / 2 - 7, TS, m, rgb);
}
