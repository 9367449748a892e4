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
 * resampling), and scaling is nearest-neighbour (orient.c, shared with
 * samples/paper/figure.c). Text comes from the
 * built-in 5x8 font (canvas.c), which covers printable ASCII: no font files.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "canvas.h"
#include "cli.h"
#include "orient.h"

/* black -> red -> yellow -> white */
static void heat(float t, unsigned char out[3]) {
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    float r = fminf(1.f, 3 * t), g = fminf(1.f, fmaxf(0.f, 3 * t - 1)), b = fmaxf(0.f, 3 * t - 2);
    out[0] = (unsigned char)(255 * r); out[1] = (unsigned char)(255 * g); out[2] = (unsigned char)(255 * b);
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
    if (!orient_slice_counts(p->dims, o->slice, p->labels, p->background, count)) orient_slice_counts(p->dims, o->slice, p->scan, 0.f, count);
    /* shown slices differ visibly: at least 2 slices and 4 mm apart */
    int64_t gap = (int64_t)fmax(2, ceil(4.0 / o->sp[o->slice] - 1e-9));
    int np = pick_slices(count, ns, o->dir, gap, pick);
    free(count);
    L->slice_axis = o->slice;
    L->n_slices = np;
    for (int r = 0; r < np; r++) { /* the most superior (anterior, right) row first */
        L->slice[r] = pick[np - 1 - r];
        L->position[r] = orient_slice_position(p->dims, p->affine, o, L->slice[r]);
        orient_slice_text(o, L->position[r], L->slice[r], P->row_label[r], sizeof P->row_label[r]);
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
    canvas_ticks(top, &P->step, &P->decimals);
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
    orient_from_affine(p->dims, p->affine, p->affine_code, o);
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
    orient_line(o, P->orient_line, sizeof P->orient_line);
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
    for (int r = 0; r < P->L.n_slices; r++) {
        const int *q0 = P->L.panel[r][0];
        canvas_text(c, MARGIN, q0[1] + P->ph / 2 - 8, TS, P->row_label[r], white);
        for (int k = 0; k < 3; k++) {
            const int *q = P->L.panel[r][k];
            canvas_fill(c, q[0] - 1, q[1] - 1, q[2] + 2, q[3] + 2, frame);
            orient_marks(c, o, q, CELL_X, CELL_Y, white);
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
                        ov[q] = (unsigned char)((ov[q] + 3 * (k < 0 ? 255 : canvas_palette[k][q])) / 4);
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
        canvas_fill(c, P->leg_x, y, 14, 14, canvas_palette[i % 12]); /* entry i is the i-th non-background label */
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
    canvas_colour_bar(c, bx, by, BAR_W, BAR_H, heat, P->L.bar_top, P->step, P->decimals, white);
    canvas_text(c, bx, by + BAR_H + 7 + LINE, TS, P->note, white);
}

int write_preview(const char *path, const preview_in *p, char *err, size_t errlen) {
    plan *P = malloc(sizeof *P);
    if (!P) { snprintf(err, errlen, "%s: out of memory", path); return 0; }
    char e[256];
    if (!make_plan(p, P, e, sizeof e)) { snprintf(err, errlen, "%s: %s", path, e); free(P); return 0; }
    canvas c = {P->L.width, P->L.height, calloc((size_t)P->L.width * (size_t)P->L.height * 3, 1)};
    int *th = malloc(sizeof(int) * (size_t)(P->pw + P->ph)), *tv = th ? th + P->pw : NULL;
    if (!c.px || !th) {
        snprintf(err, errlen, "%s: out of memory", path);
        free(c.px); free(th); free(P);
        return 0;
    }
    orient_pixel_map(&P->o, p->dims, P->pw, P->ph, th, tv);
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
