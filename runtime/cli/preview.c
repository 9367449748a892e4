/*
 * preview.c: the PNG montage `vbseg infer` writes per case, for a clinician
 * to glance at: up to 4 slices spread through the labelled region (or, with
 * no labels, through the brain), each as the scan, the labels over it and
 * the mutual-information map, with the case name, each slice's position in
 * mm, orientation marks, a label legend and a titled colour bar.
 *
 * The display orientation comes from the affine, not the voxel order: the
 * voxel axis closest to S-I cuts the slices, and each slice is shown in
 * radiological convention (patient's right on the image's left, anterior
 * at the top), so a scan stored LPS or with permuted axes gives the same
 * pixels as its RAS twin. Everything that picks what is shown (the slices,
 * the grey window, the colour scale) depends on the voxel values only, never
 * on the order they are stored in. Without an affine the voxel order is
 * shown and the image says so.
 *
 * Not a viewer: an oblique scan is cut along its nearest voxel axes (no
 * resampling), and scaling is nearest-neighbour. Text comes from the
 * built-in 5x8 font (canvas.c), which covers printable ASCII: no font files.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "canvas.h"
#include "cli.h"

/* black -> red -> yellow -> white */
static void heat(float t, unsigned char out[3]) {
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    float r = fminf(1.f, 3 * t), g = fminf(1.f, fmaxf(0.f, 3 * t - 1)), b = fmaxf(0.f, 3 * t - 2);
    out[0] = (unsigned char)(255 * r); out[1] = (unsigned char)(255 * g); out[2] = (unsigned char)(255 * b);
}

/* label colours, in the card's order of the non-background labels (BraTS:
 * necrosis red, oedema green, enhancing yellow) */
static const unsigned char palette[12][3] = {{230, 40, 40},  {40, 200, 60},  {250, 220, 0},  {40, 120, 255}, {220, 60, 220}, {0, 220, 220},
                                             {255, 140, 0},  {150, 90, 255}, {170, 255, 80}, {255, 130, 170}, {0, 150, 140}, {170, 110, 40}};

/* How the voxel axes map to the display. */
typedef struct {
    int known;              /* 0: no affine, voxel order */
    int slice, hor, ver;    /* voxel axes: cut by the slices, across, down the image */
    int flip_h, flip_v;     /* the display runs against the voxel index */
    int world, wh, wv;      /* world axes (0 x, 1 y, 2 z) closest to slice, hor, ver */
    int dir;                /* +1: the slice index grows with that world coordinate */
    double sp[3];           /* voxel size along each voxel axis (mm) */
} orient;

static void orientation(const preview_in *p, orient *o) {
    double u[3][3];
    int ok = p->affine_code > 0;
    memset(o, 0, sizeof *o);
    for (int i = 0; i < 3; i++) {
        double n = 0;
        for (int r = 0; r < 3; r++) n += p->affine[r][i] * p->affine[r][i];
        n = sqrt(n);
        if (!(n > 0) || !isfinite(n)) { ok = 0; n = 1; }
        for (int r = 0; r < 3; r++) u[i][r] = p->affine[r][i] / n;
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
        if (p->dims[i] == 1) { single = i; n_single++; }
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

/* the world coordinate o->world of the centre of slice k */
static double slice_position(const preview_in *p, const orient *o, int64_t k) {
    double c[3];
    for (int i = 0; i < 3; i++) c[i] = (double)(p->dims[i] - 1) / 2;
    c[o->slice] = (double)k;
    if (!o->known) return (double)k * o->sp[o->slice];
    double x = p->affine[o->world][3];
    for (int i = 0; i < 3; i++) x += p->affine[o->world][i] * c[i];
    return x;
}

/* voxels per slice whose value differs from `not` */
static int64_t slice_counts(const preview_in *p, int axis, const float *vol, float not, int64_t *count) {
    int64_t nx = p->dims[0], ny = p->dims[1], nz = p->dims[2], total = 0;
    memset(count, 0, sizeof(int64_t) * (size_t)p->dims[axis]);
    for (int64_t k = 0; k < nz; k++)
        for (int64_t j = 0; j < ny; j++)
            for (int64_t i = 0; i < nx; i++)
                if (vol[(k * ny + j) * nx + i] != not) {
                    count[axis == 0 ? i : axis == 1 ? j : k]++;
                    total++;
                }
    return total;
}

enum { MAX_ROWS = 4 };

/* The slices at the quantiles 1/(n+1) .. n/(n+1) of the weights w (sum
 * total), walked in world order so that a flipped copy picks the same ones. */
static int quantiles(const int64_t *w, int64_t ns, int64_t total, int dir, int n, int64_t *pick) {
    int got = 0;
    int64_t cum = 0;
    for (int64_t t = 0; t < ns && got < n; t++) {
        int64_t k = dir > 0 ? t : ns - 1 - t;
        cum += w[k];
        while (got < n && cum * (n + 1) >= (int64_t)(got + 1) * total) pick[got++] = k;
    }
    return got;
}

/* Up to MAX_ROWS slices evenly spread over the region's slices: those that
 * hold at least a tenth of the fullest slice's count, so never a near-empty
 * cap; fewer when the region is too thin for them to be `gap` apart.
 * count[] becomes those 0/1 weights. Returns how many; pick[] ascends in
 * world position. */
static int pick_slices(int64_t *count, int64_t ns, int dir, int64_t gap, int64_t pick[MAX_ROWS]) {
    int64_t most = 0, total = 0;
    for (int64_t k = 0; k < ns; k++) most = count[k] > most ? count[k] : most;
    for (int64_t k = 0; k < ns; k++) {
        count[k] = most > 0 && count[k] * 10 >= most;
        total += count[k];
    }
    if (!total) { pick[0] = ns / 2; return 1; }
    for (int n = MAX_ROWS;; n--) {
        int got = quantiles(count, ns, total, dir, n, pick), ok = got == n;
        for (int r = 1; r < got; r++) ok &= llabs((long long)(pick[r] - pick[r - 1])) >= gap;
        if (ok || n == 1) return got;
    }
}

/* pixels: CELL_X/CELL_Y around a panel hold its orientation marks, GAP_X and
 * GAP_Y keep the marks of neighbouring panels apart */
enum { MAX_LEGEND = 16, BAR_W = 300, BAR_H = 16, MARGIN = 12, CELL_X = 16, CELL_Y = 20, GAP_X = 24, GAP_Y = 10, LINE = 20 };

/* Everything write_preview draws, decided before a pixel is set. */
typedef struct {
    preview_layout L;
    orient o;
    int pw, ph;                  /* panel size */
    char title[96], orient_line[96], row_label[MAX_ROWS][32];
    int title_y, orient_y, head_y, col_x[3];
    int leg_x, leg_y, n_leg, leg_more;
    float leg_value[MAX_LEGEND];
    char leg_name[MAX_LEGEND][64];
    float lo, hi;                /* grey window */
    double step;                 /* colour bar tick step */
    int decimals;
    char note[64];
} plan;

/* grey window: the 1st and 99th percentiles of the non-zero scan, from a
 * histogram (exact counts: the same for any voxel order) */
static void window(const preview_in *p, int64_t n, float *lo, float *hi) {
    enum { NB = 4096 };
    float mn = INFINITY, mx = -INFINITY;
    int64_t nnz = 0;
    for (int64_t i = 0; i < n; i++)
        if (p->scan[i] != 0.f) { mn = fminf(mn, p->scan[i]); mx = fmaxf(mx, p->scan[i]); nnz++; }
    *lo = 0; *hi = 1;
    if (!nnz) return;
    if (!(mx > mn)) { *lo = mn - 1; *hi = mx; return; }
    int64_t h[NB];
    memset(h, 0, sizeof h);
    double w = ((double)mx - mn) / (NB - 1);
    for (int64_t i = 0; i < n; i++)
        if (p->scan[i] != 0.f) {
            int b = (int)(((double)p->scan[i] - mn) / w);
            h[b < NB ? b : NB - 1]++;
        }
    int64_t cum = 0;
    int blo = -1, bhi = NB - 1;
    for (int b = 0; b < NB; b++) {
        cum += h[b];
        if (blo < 0 && cum * 100 >= nnz) blo = b;
        if (cum * 100 >= nnz * 99) { bhi = b; break; }
    }
    *lo = (float)(mn + blo * w);
    *hi = (float)(mn + (bhi + 1) * w);
}

static int imax(int a, int b) { return a > b ? a : b; }

/* the slices and their labels; 0 if out of memory */
static int choose_slices(const preview_in *p, plan *P) {
    const orient *o = &P->o;
    preview_layout *L = &P->L;
    int64_t ns = p->dims[o->slice], pick[MAX_ROWS];
    int64_t *count = malloc(sizeof(int64_t) * (size_t)ns);
    if (!count) return 0;
    /* through the labels, else through the brain */
    if (!slice_counts(p, o->slice, p->labels, p->background, count)) slice_counts(p, o->slice, p->scan, 0.f, count);
    /* shown slices differ visibly: at least 2 slices and 4 mm apart */
    int64_t gap = (int64_t)fmax(2, ceil(4.0 / o->sp[o->slice] - 1e-9));
    int np = pick_slices(count, ns, o->dir, gap, pick);
    free(count);
    L->slice_axis = o->slice;
    L->n_slices = np;
    for (int r = 0; r < np; r++) { /* the most superior (anterior, right) row first */
        L->slice[r] = pick[np - 1 - r];
        L->position[r] = slice_position(p, o, L->slice[r]);
        double shown = round(L->position[r] * 10) / 10 + 0.0; /* never "-0.0" */
        if (o->known) snprintf(P->row_label[r], sizeof P->row_label[r], "%c=%+.1f mm", "xyz"[o->world], shown);
        else snprintf(P->row_label[r], sizeof P->row_label[r], "slice %lld", (long long)L->slice[r]);
    }
    return 1;
}

/* the legend: the card's labels, else the values found */
static void make_legend(const preview_in *p, plan *P, int64_t n) {
    const vbs_card *card = p->card;
    if (card && card->n_labels) {
        for (int i = 0; i < card->n_labels; i++) {
            if ((float)card->labels[i].value == p->background) continue;
            if (P->n_leg == MAX_LEGEND) { P->leg_more++; continue; }
            const char *nm = card->labels[i].name;
            P->leg_value[P->n_leg] = (float)card->labels[i].value;
            if (nm && nm[0]) snprintf(P->leg_name[P->n_leg], sizeof P->leg_name[0], "%.40s (%d)", nm, card->labels[i].value);
            else snprintf(P->leg_name[P->n_leg], sizeof P->leg_name[0], "label %d", card->labels[i].value);
            P->n_leg++;
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        float v = p->labels[i];
        if (v == p->background) continue;
        int at = 0;
        while (at < P->n_leg && P->leg_value[at] < v) at++;
        if (at < P->n_leg && P->leg_value[at] == v) continue;
        if (P->n_leg == MAX_LEGEND) { P->leg_more = 1; continue; }
        memmove(P->leg_value + at + 1, P->leg_value + at, sizeof(float) * (size_t)(P->n_leg - at));
        P->leg_value[at] = v;
        P->n_leg++;
    }
    for (int i = 0; i < P->n_leg; i++) snprintf(P->leg_name[i], sizeof P->leg_name[0], "label %g", (double)P->leg_value[i]);
}

/* the colour scale, its note and ticks: 1, 2, 2.5 or 5 x 10^k, at most 5
 * steps, ending on the top when a step divides it */
static void make_scale(const preview_in *p, plan *P, int64_t n) {
    float case_max = 0;
    for (int64_t i = 0; i < n; i++) case_max = fmaxf(case_max, p->mi[i]);
    float top = p->mi_max > 0 ? p->mi_max : case_max > 0 ? case_max : 1.f;
    P->L.bar_top = top;
    if (p->mi_max > 0) snprintf(P->note, sizeof P->note, "top %.3g: set by --preview-max", (double)top);
    else if (case_max > 0) snprintf(P->note, sizeof P->note, "top %.3g: this case's max", (double)top);
    else snprintf(P->note, sizeof P->note, "top 1: this case's MI is 0");
    double mag = pow(10, floor(log10(top))), mult[8] = {0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5};
    P->step = 0;
    for (int i = 0; i < 8 && !P->step; i++)
        if (top / (mult[i] * mag) <= 5 + 1e-9) P->step = mult[i] * mag;
    for (int i = 0; i < 8; i++) {
        double k = top / (mult[i] * mag);
        if (k >= 2 - 1e-9 && k <= 5 + 1e-9 && fabs(k - round(k)) < 1e-6) { P->step = mult[i] * mag; break; }
    }
    /* as many decimals as the step needs: 0.05 -> 2, 0.25 -> 2, 2.5 -> 1 */
    int d = P->step >= 1 ? 0 : (int)ceil(-log10(P->step) - 1e-9);
    while (d < 9 && fabs(P->step * pow(10, d) - round(P->step * pow(10, d))) > 1e-6 * P->step * pow(10, d)) d++;
    P->decimals = d;
}

/* where everything goes, top to bottom */
static void lay_out(plan *P) {
    preview_layout *L = &P->L;
    int np = L->n_slices, lw = 0;
    for (int r = 0; r < np; r++) lw = imax(lw, canvas_text_width(P->row_label[r], TS));
    P->title_y = MARGIN;
    P->orient_y = P->title_y + 8 * 3 + 8;
    P->head_y = P->orient_y + LINE + 8;
    int y0 = P->head_y + LINE, cw = P->pw + 2 * CELL_X, ch = P->ph + 2 * CELL_Y;
    for (int c = 0; c < 3; c++) P->col_x[c] = MARGIN + lw + GAP_X + c * (cw + GAP_X);
    for (int r = 0; r < np; r++)
        for (int c = 0; c < 3; c++) {
            int *q = L->panel[r][c];
            q[0] = P->col_x[c] + CELL_X; q[1] = y0 + r * (ch + GAP_Y) + CELL_Y; q[2] = P->pw; q[3] = P->ph;
        }
    int right = P->col_x[2] + imax(cw, CELL_X + canvas_text_width("MI (epistemic)", TS));
    /* below the rows: the legend on the left, the colour bar on the right */
    int yb = y0 + np * (ch + GAP_Y) + 10, legw = canvas_text_width("labels", TS);
    P->leg_x = P->col_x[0] + CELL_X;
    P->leg_y = yb;
    for (int i = 0; i < P->n_leg; i++) legw = imax(legw, 20 + canvas_text_width(P->leg_name[i], TS));
    if (P->leg_more) legw = imax(legw, canvas_text_width("and 99 more", TS));
    int bottom = yb + LINE * (1 + P->n_leg + (P->leg_more > 0));
    int bx = imax(P->col_x[2] + CELL_X, P->leg_x + legw + 30);
    /* as wide as the longest note can be, so that the bar never moves between cases */
    int bw = imax(BAR_W + 20, imax(canvas_text_width("mutual information (nats)", TS), canvas_text_width("top 0.00e-00: set by --preview-max", TS) + 10));
    L->bar[0] = bx - 10; L->bar[1] = yb; L->bar[2] = bw + 10; L->bar[3] = LINE + BAR_H + 6 + LINE + LINE;
    right = imax(right, L->bar[0] + L->bar[2]);
    bottom = imax(bottom, L->bar[1] + L->bar[3]);
    right = imax(right, MARGIN + imax(canvas_text_width(P->title, 3), canvas_text_width(P->orient_line, TS)));
    L->width = right + MARGIN;
    L->height = bottom + MARGIN;
}

static int make_plan(const preview_in *p, plan *P, char *err, size_t errlen) {
    memset(P, 0, sizeof *P);
    for (int i = 0; i < 3; i++)
        if (p->dims[i] <= 0 || p->dims[i] > (1 << 20)) { snprintf(err, errlen, "bad dims"); return 0; }
    int64_t n = p->dims[0] * p->dims[1] * p->dims[2];
    orient *o = &P->o;
    orientation(p, o);
    if (!choose_slices(p, P)) { snprintf(err, errlen, "out of memory"); return 0; }
    /* panel size: square pixels, 180-256 of them across the larger side */
    int64_t nh = p->dims[o->hor], nv = p->dims[o->ver];
    double sh = o->sp[o->hor], sv = o->sp[o->ver], base = fmin(sh, sv), ext = fmax((double)nh * sh, (double)nv * sv);
    double mmpp = base, e = ext / base;
    if (e < 180) mmpp = base / fmin(4, ceil(180 / e));
    else if (e > 256) mmpp = ext / 256;
    P->pw = (int)fmax(1, lround((double)nh * sh / mmpp));
    P->ph = (int)fmax(1, lround((double)nv * sv / mmpp));
    snprintf(P->title, sizeof P->title, "%.60s", p->case_name ? p->case_name : "");
    if (!o->known) snprintf(P->orient_line, sizeof P->orient_line, "VOXEL ORDER: no affine, orientation unknown");
    else if (o->wh == 0) snprintf(P->orient_line, sizeof P->orient_line, "RADIOLOGICAL: patient's right on image left");
    else snprintf(P->orient_line, sizeof P->orient_line, "RADIOLOGICAL");
    make_legend(p, P, n);
    make_scale(p, P, n);
    window(p, n, &P->lo, &P->hi);
    lay_out(P);
    return 1;
}

int preview_plan(const preview_in *p, preview_layout *out, char *err, size_t errlen) {
    plan *P = malloc(sizeof *P);
    if (!P) { snprintf(err, errlen, "out of memory"); return 0; }
    int ok = make_plan(p, P, err, errlen);
    if (ok) *out = P->L;
    free(P);
    return ok;
}

static const unsigned char white[3] = {255, 255, 255}, frame[3] = {70, 70, 70};

static int label_colour(const plan *P, const vbs_card *card, float background, float v) {
    int k = 0;
    if (card && card->n_labels) {
        for (int i = 0; i < card->n_labels; i++) {
            if ((float)card->labels[i].value == background) continue;
            if ((float)card->labels[i].value == v) return k % 12;
            k++;
        }
    } else {
        for (int i = 0; i < P->n_leg; i++)
            if (P->leg_value[i] == v) return i % 12;
    }
    return -1; /* not in the legend: white */
}

static void draw_panels(canvas *c, const preview_in *p, const plan *P, const int *th, const int *tv) {
    const orient *o = &P->o;
    const int64_t nx = p->dims[0], ny = p->dims[1];
    const char pos[3] = {'R', 'A', 'S'}, neg[3] = {'L', 'P', 'I'};
    for (int r = 0; r < P->L.n_slices; r++) {
        const int *q0 = P->L.panel[r][0];
        canvas_text(c, MARGIN, q0[1] + P->ph / 2 - 8, TS, P->row_label[r], white);
        for (int k = 0; k < 3; k++) {
            const int *q = P->L.panel[r][k];
            canvas_fill(c, q[0] - 1, q[1] - 1, q[2] + 2, q[3] + 2, frame);
            if (!o->known) continue;
            char m[2] = {0, 0};
            m[0] = pos[o->wv]; canvas_text(c, q[0] + q[2] / 2 - 5, q[1] - CELL_Y + 3, TS, m, white);
            m[0] = neg[o->wv]; canvas_text(c, q[0] + q[2] / 2 - 5, q[1] + q[3] + 4, TS, m, white);
            m[0] = pos[o->wh]; canvas_text(c, q[0] - CELL_X + 3, q[1] + q[3] / 2 - 7, TS, m, white);
            m[0] = neg[o->wh]; canvas_text(c, q[0] + q[2] + 4, q[1] + q[3] / 2 - 7, TS, m, white);
        }
        for (int yy = 0; yy < P->ph; yy++)
            for (int xx = 0; xx < P->pw; xx++) {
                int64_t v3[3];
                v3[o->slice] = P->L.slice[r];
                v3[o->hor] = th[xx];
                v3[o->ver] = tv[yy];
                int64_t v = (v3[2] * ny + v3[1]) * nx + v3[0];
                float g = (p->scan[v] - P->lo) / (P->hi - P->lo);
                unsigned char gray = (unsigned char)(255 * (g < 0 ? 0 : g > 1 ? 1 : g)), px[3] = {gray, gray, gray}, ov[3], hm[3];
                memcpy(ov, px, 3);
                if (p->labels[v] != p->background) {
                    int k = label_colour(P, p->card, p->background, p->labels[v]);
                    for (int q = 0; q < 3; q++) /* mostly the legend's colour, a little of the scan */
                        ov[q] = (unsigned char)((ov[q] + 3 * (k < 0 ? 255 : palette[k][q])) / 4);
                }
                heat(p->mi[v] / P->L.bar_top, hm);
                for (int q = 0; q < 3; q++) /* the anatomy, faint, under the heat */
                    if (hm[q] < gray / 4) hm[q] = (unsigned char)(gray / 4);
                const unsigned char *src[3] = {px, ov, hm};
                for (int k = 0; k < 3; k++) canvas_fill(c, P->L.panel[r][k][0] + xx, P->L.panel[r][k][1] + yy, 1, 1, src[k]);
            }
    }
}

static void draw_legend_and_bar(canvas *c, const plan *P) {
    int y = P->leg_y;
    canvas_text(c, P->leg_x, y, TS, "labels", white);
    for (int i = 0; i < P->n_leg; i++) {
        y += LINE;
        canvas_fill(c, P->leg_x, y, 14, 14, palette[i % 12]); /* entry i is the i-th non-background label */
        canvas_text(c, P->leg_x + 20, y, TS, P->leg_name[i], white);
    }
    if (P->leg_more) {
        char more[32];
        snprintf(more, sizeof more, "and %d more", P->leg_more);
        canvas_text(c, P->leg_x, y + LINE, TS, more, white);
    }
    const int *b = P->L.bar;
    int bx = b[0] + 10, by = b[1] + LINE;
    canvas_text(c, bx, b[1], TS, "mutual information (nats)", white);
    for (int x = 0; x < BAR_W; x++) {
        unsigned char hm[3];
        heat((float)x / (BAR_W - 1), hm);
        canvas_fill(c, bx + x, by, 1, BAR_H, hm);
    }
    double top = P->L.bar_top;
    for (int t = 0; t * P->step <= top * (1 + 1e-9); t++) {
        double v = t * P->step;
        int x = bx + (int)lround(v / top * (BAR_W - 1));
        canvas_fill(c, x, by + BAR_H, 1, 5, white);
        char num[32];
        if (t == 0) snprintf(num, sizeof num, "0");
        else snprintf(num, sizeof num, "%.*f", P->decimals, v);
        canvas_text(c, x - canvas_text_width(num, TS) / 2, by + BAR_H + 7, TS, num, white);
    }
    canvas_text(c, bx, by + BAR_H + 7 + LINE, TS, P->note, white);
}

int write_preview(const char *path, const preview_in *p, char *err, size_t errlen) {
    plan *P = malloc(sizeof *P);
    if (!P) { snprintf(err, errlen, "%s: out of memory", path); return 0; }
    char e[256];
    if (!make_plan(p, P, e, sizeof e)) { snprintf(err, errlen, "%s: %s", path, e); free(P); return 0; }
    const orient *o = &P->o;
    canvas c = {P->L.width, P->L.height, calloc((size_t)P->L.width * (size_t)P->L.height * 3, 1)};
    int *th = malloc(sizeof(int) * (size_t)(P->pw + P->ph)), *tv = th ? th + P->pw : NULL;
    if (!c.px || !th) {
        snprintf(err, errlen, "%s: out of memory", path);
        free(c.px); free(th); free(P);
        return 0;
    }
    /* display pixel -> voxel index (nearest), mirrored where the display runs against the voxels */
    int64_t nh = p->dims[o->hor], nv = p->dims[o->ver];
    for (int x = 0; x < P->pw; x++) {
        int64_t t = (int64_t)(((double)x + 0.5) * (double)nh / P->pw);
        t = t < nh ? t : nh - 1;
        th[x] = (int)(o->flip_h ? nh - 1 - t : t);
    }
    for (int y = 0; y < P->ph; y++) {
        int64_t t = (int64_t)(((double)y + 0.5) * (double)nv / P->ph);
        t = t < nv ? t : nv - 1;
        tv[y] = (int)(o->flip_v ? nv - 1 - t : t);
    }
    canvas_text(&c, MARGIN, P->title_y, 3, P->title, white);
    canvas_text(&c, MARGIN, P->orient_y, TS, P->orient_line, white);
    static const char *const heads[3] = {"scan", "labels", "MI (epistemic)"};
    for (int k = 0; k < 3; k++) canvas_text(&c, P->col_x[k] + CELL_X, P->head_y, TS, heads[k], white);
    draw_panels(&c, p, P, th, tv);
    draw_legend_and_bar(&c, P);
    vbs_status st = vbs_write_png(path, c.w, c.h, c.px, err, errlen);
    free(c.px);
    free(th);
    free(P);
    return st == VBS_OK;
}
