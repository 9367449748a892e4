/*
 * preview.c: the PNG montage `vbseg infer` writes per case: a few axial
 * slices through the lesion (or, without one, the most uncertain slices),
 * each as three panels: the scan, the segmentation over it in distinct
 * colours, and the epistemic (mutual information) map as a heat map with
 * a colour bar. Slices are labelled with their z index. Text comes from a
 * built-in 5x7 bitmap font: no font files are needed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* 5x7 glyphs, one byte per row, bit 4 = leftmost column */
static const struct { char c; unsigned char rows[7]; } font[] = {
    {'0', {14, 17, 19, 21, 25, 17, 14}}, {'1', {4, 12, 4, 4, 4, 4, 14}},    {'2', {14, 17, 1, 2, 4, 8, 31}},
    {'3', {31, 2, 4, 2, 1, 17, 14}},     {'4', {2, 6, 10, 18, 31, 2, 2}},   {'5', {31, 16, 30, 1, 1, 17, 14}},
    {'6', {6, 8, 16, 30, 17, 17, 14}},   {'7', {31, 1, 2, 4, 8, 8, 8}},     {'8', {14, 17, 17, 14, 17, 17, 14}},
    {'9', {14, 17, 17, 15, 1, 2, 12}},   {'.', {0, 0, 0, 0, 0, 12, 12}},    {'=', {0, 0, 31, 0, 31, 0, 0}},
    {'A', {14, 17, 17, 31, 17, 17, 17}}, {'B', {30, 17, 17, 30, 17, 17, 30}}, {'C', {14, 17, 16, 16, 16, 17, 14}},
    {'E', {31, 16, 16, 30, 16, 16, 31}}, {'I', {14, 4, 4, 4, 4, 4, 14}},    {'L', {16, 16, 16, 16, 16, 16, 31}},
    {'M', {17, 27, 21, 21, 17, 17, 17}}, {'N', {17, 25, 21, 19, 17, 17, 17}}, {'P', {30, 17, 17, 30, 16, 16, 16}},
    {'S', {15, 16, 16, 14, 1, 1, 30}},   {'T', {31, 4, 4, 4, 4, 4, 4}},     {'Z', {31, 1, 2, 4, 8, 16, 31}},
    {'X', {17, 17, 10, 4, 10, 17, 17}},  {'(', {2, 4, 8, 8, 8, 4, 2}},      {')', {8, 4, 2, 2, 2, 4, 8}},
};

typedef struct { int w, h; unsigned char *px; } canvas;

static void put(canvas *c, int x, int y, const unsigned char rgb[3]) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    memcpy(c->px + 3 * ((size_t)y * (size_t)c->w + (size_t)x), rgb, 3);
}

/* text at (x, y), each font pixel drawn as s x s */
static void text(canvas *c, int x, int y, int s, const char *str, const unsigned char rgb[3]) {
    for (; *str; str++, x += 6 * s) {
        for (size_t g = 0; g < sizeof font / sizeof font[0]; g++) {
            if (font[g].c != *str) continue;
            for (int r = 0; r < 7; r++)
                for (int b = 0; b < 5; b++)
                    if (font[g].rows[r] >> (4 - b) & 1)
                        for (int dy = 0; dy < s; dy++)
                            for (int dx = 0; dx < s; dx++) put(c, x + b * s + dx, y + r * s + dy, rgb);
        }
    }
}

/* black -> red -> yellow -> white */
static void heat(float t, unsigned char out[3]) {
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    float r = fminf(1.f, 3 * t), g = fminf(1.f, fmaxf(0.f, 3 * t - 1)), b = fmaxf(0.f, 3 * t - 2);
    out[0] = (unsigned char)(255 * r); out[1] = (unsigned char)(255 * g); out[2] = (unsigned char)(255 * b);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

int write_preview(const char *path, const float *scan, const float *labels, const float *mi, const int64_t dims[3], float background,
                  char *err, size_t errlen) {
    int64_t nx = dims[0], ny = dims[1], nz = dims[2], plane = nx * ny;
    /* slices: the most labelled, else the most uncertain; up to 4, in z order */
    enum { ROWS = 4 };
    int64_t pick[ROWS];
    int np = 0;
    double *score = malloc(sizeof(double) * (size_t)nz);
    if (!score) { snprintf(err, errlen, "%s: out of memory", path); return 0; }
    for (int64_t z = 0; z < nz; z++) {
        double fg = 0, u = 0;
        for (int64_t i = 0; i < plane; i++) { fg += labels[z * plane + i] != background; u += mi[z * plane + i]; }
        score[z] = fg > 0 ? 1e12 + fg : u;
    }
    for (int k = 0; k < ROWS && k < nz; k++) {
        int64_t best = -1;
        for (int64_t z = 0; z < nz; z++) {
            int taken = 0;
            for (int j = 0; j < np; j++) taken |= pick[j] == z;
            if (!taken && (best < 0 || score[z] > score[best])) best = z;
        }
        pick[np++] = best;
    }
    free(score);
    for (int a = 0; a < np; a++) /* z order (few values: insertion sort) */
        for (int b = a + 1; b < np; b++)
            if (pick[b] < pick[a]) { int64_t t = pick[a]; pick[a] = pick[b]; pick[b] = t; }
    /* windowing from the 1st and 99th percentiles of the non-zero scan, and the MI scale */
    int64_t n = plane * nz, step = n / 20000 + 1, ns = 0;
    float *sample = malloc(sizeof(float) * (size_t)(n / step + 2));
    if (!sample) { snprintf(err, errlen, "%s: out of memory", path); return 0; }
    float mimax = 1e-6f;
    for (int64_t i = 0; i < n; i++) mimax = fmaxf(mimax, mi[i]);
    for (int64_t i = 0; i < n; i += step)
        if (scan[i] != 0.f) sample[ns++] = scan[i];
    float lo = 0, hi = 1;
    if (ns) {
        qsort(sample, (size_t)ns, sizeof(float), cmp_float);
        lo = sample[(int64_t)(0.01 * (double)(ns - 1))];
        hi = sample[(int64_t)(0.99 * (double)(ns - 1))];
    }
    free(sample);
    if (hi <= lo) hi = lo + 1;
    int s = nx < 160 ? (int)((160 + nx - 1) / nx) : 1;
    if (s > 4) s = 4;
    int pw = (int)nx * s, ph = (int)ny * s, left = 60, top = 24, gap = 6, bar = 50;
    canvas c = {left + 3 * pw + 2 * gap + bar, top + np * (ph + gap) + 4, NULL};
    c.px = calloc((size_t)c.w * (size_t)c.h * 3, 1);
    if (!c.px) { snprintf(err, errlen, "%s: out of memory", path); return 0; }
    static const unsigned char white[3] = {255, 255, 255};
    static const unsigned char colours[6][3] = {{230, 40, 40}, {40, 200, 60}, {250, 220, 0}, {40, 120, 255}, {220, 60, 220}, {0, 220, 220}};
    text(&c, left, 6, 2, "SCAN", white);
    text(&c, left + pw + gap, 6, 2, "LABELS", white);
    text(&c, left + 2 * (pw + gap), 6, 2, "MI", white);
    for (int r = 0; r < np; r++) {
        int64_t z = pick[r];
        int y0 = top + r * (ph + gap);
        char lab[32];
        snprintf(lab, sizeof lab, "Z=%lld", (long long)z);
        text(&c, 4, y0 + ph / 2 - 7, 2, lab, white);
        for (int64_t yy = 0; yy < ny; yy++)
            for (int64_t xx = 0; xx < nx; xx++) {
                int64_t v = z * plane + (ny - 1 - yy) * nx + xx; /* anterior up */
                float g = (scan[v] - lo) / (hi - lo);
                unsigned char gray = (unsigned char)(255 * (g < 0 ? 0 : g > 1 ? 1 : g)), px[3] = {gray, gray, gray}, ov[3], hm[3];
                memcpy(ov, px, 3);
                if (labels[v] != background) {
                    int k = ((int)labels[v] - 1) % 6;
                    if (k < 0) k += 6;
                    for (int q = 0; q < 3; q++) ov[q] = (unsigned char)((ov[q] + colours[k][q]) / 2);
                }
                heat(mi[v] / mimax, hm);
                for (int dy = 0; dy < s; dy++)
                    for (int dx = 0; dx < s; dx++) {
                        int x = (int)xx * s + dx, y = y0 + (int)yy * s + dy;
                        put(&c, left + x, y, px);
                        put(&c, left + pw + gap + x, y, ov);
                        put(&c, left + 2 * (pw + gap) + x, y, hm);
                    }
            }
    }
    /* colour bar: 0 at the bottom, the case's largest MI at the top */
    int bx = left + 3 * pw + 2 * gap + 8, by0 = top, by1 = top + np * (ph + gap) - gap - 1;
    for (int y = by0; y <= by1; y++) {
        unsigned char hm[3];
        heat((float)(by1 - y) / (float)(by1 - by0 > 0 ? by1 - by0 : 1), hm);
        for (int x = bx; x < bx + 10; x++) put(&c, x, y, hm);
    }
    char num[32];
    snprintf(num, sizeof num, "%.2f", (double)mimax);
    text(&c, bx - 2, by0 - 10, 1, num, white);
    text(&c, bx + 12, by1 - 6, 1, "0", white);
    vbs_status st = vbs_write_png(path, c.w, c.h, c.px, err, errlen);
    free(c.px);
    return st == VBS_OK;
}
