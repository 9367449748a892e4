/*
 * curves.c: training_curves.png for `vbseg train`: three panels against the
 * epoch: the training loss and its parts (total, 1 - Dice, CE, weighted
 * KL), the validation Dice (mean mode and Monte-Carlo) with the mean
 * epistemic uncertainty, and the learning rate. Lines on the canvas of
 * canvas.c, written with the project's PNG writer.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "canvas.h"
#include "cli.h"
#include "trainer.h"
#include "train_curves.h"

static const unsigned char WHITE[3] = {255, 255, 255}, GREY[3] = {90, 90, 90}, BG[3] = {20, 20, 24};
static const unsigned char COL[5][3] = {{240, 240, 240}, {240, 80, 80}, {80, 200, 90}, {90, 150, 255}, {250, 210, 40}};

static void line(canvas *c, int x0, int y0, int x1, int y1, const unsigned char rgb[3]) {
    int n = abs(x1 - x0) > abs(y1 - y0) ? abs(x1 - x0) : abs(y1 - y0);
    for (int i = 0; i <= n; i++) {
        int x = n ? x0 + (x1 - x0) * i / n : x0, y = n ? y0 + (y1 - y0) * i / n : y0;
        canvas_fill(c, x, y, 2, 2, rgb);
    }
}

typedef struct { const char *name; double v[4096]; } series;

/* one panel at (x0, y0) of w x h: the series against the epochs, a shared y range */
static void panel(canvas *c, int x0, int y0, int w, int h, const char *title, const series *s, int ns, const int *ep, int n, int logy) {
    double lo = INFINITY, hi = -INFINITY;
    for (int k = 0; k < ns; k++)
        for (int i = 0; i < n; i++) {
            double v = s[k].v[i];
            if (!isfinite(v) || (logy && v <= 0)) continue;
            v = logy ? log10(v) : v;
            lo = fmin(lo, v);
            hi = fmax(hi, v);
        }
    if (!(hi >= lo)) { lo = 0; hi = 1; }
    if (hi - lo < 1e-12) { hi += 0.5; lo -= 0.5; }
    double pad = (hi - lo) * 0.05;
    lo -= pad;
    hi += pad;
    canvas_text(c, x0, y0, TS, title, WHITE);
    int px = x0 + 70, py = y0 + 24, pw = w - 80, ph = h - 60;
    canvas_fill(c, px, py, pw, 1, GREY);
    canvas_fill(c, px, py + ph, pw, 1, GREY);
    canvas_fill(c, px, py, 1, ph, GREY);
    canvas_fill(c, px + pw, py, 1, ph, GREY);
    for (int t = 0; t <= 4; t++) { /* y ticks */
        double v = lo + (hi - lo) * t / 4;
        char lab[32];
        if (logy) snprintf(lab, sizeof lab, "%.0e", pow(10, v));
        else snprintf(lab, sizeof lab, fabs(hi - lo) < 0.1 ? "%.3f" : "%.2f", v);
        int y = py + ph - (int)lround(ph * t / 4.0);
        canvas_fill(c, px - 4, y, 4, 1, GREY);
        canvas_text(c, x0, y - 4, 1, lab, WHITE);
    }
    int e0 = n ? ep[0] : 0, e1 = n ? ep[n - 1] : 1;
    if (e1 == e0) e1 = e0 + 1;
    for (int t = 0; t <= 4; t++) { /* x ticks: epochs */
        char lab[32];
        int e = e0 + (int)lround((e1 - e0) * t / 4.0), x = px + (int)lround(pw * (double)(e - e0) / (e1 - e0));
        snprintf(lab, sizeof lab, "%d", e);
        canvas_fill(c, x, py + ph, 1, 4, GREY);
        canvas_text(c, x - canvas_text_width(lab, 1) / 2, py + ph + 6, 1, lab, WHITE);
    }
    canvas_text(c, px + pw / 2 - 15, py + ph + 18, 1, "epoch", WHITE);
    for (int k = 0; k < ns; k++) {
        int lx = -1, ly = -1;
        for (int i = 0; i < n; i++) {
            double v = s[k].v[i];
            if (!isfinite(v) || (logy && v <= 0)) { lx = -1; continue; }
            v = logy ? log10(v) : v;
            int x = px + (int)lround(pw * (double)(ep[i] - e0) / (e1 - e0)), y = py + ph - (int)lround(ph * (v - lo) / (hi - lo));
            if (lx >= 0) line(c, lx, ly, x, y, COL[k]);
            else canvas_fill(c, x - 1, y - 1, 3, 3, COL[k]);
            lx = x;
            ly = y;
        }
        /* the legend, top right */
        int tx = px + pw - 150, ty = py + 6 + 12 * k;
        canvas_fill(c, tx, ty + 3, 12, 3, COL[k]);
        canvas_text(c, tx + 16, ty, 1, s[k].name, WHITE);
    }
}

int write_training_curves(const char *path, const vbs_epoch_log *log, int n, char *err, size_t errlen) {
    if (n > 4096) { log += n - 4096; n = 4096; }
    int W = 900, H = 300, *ep = malloc(sizeof(int) * (size_t)(n + 1));
    series *s = malloc(sizeof(series) * 8);
    canvas c = {W, 3 * H + 10, calloc((size_t)W * (size_t)(3 * H + 10) * 3, 1)};
    if (!ep || !s || !c.px) { free(ep); free(s); free(c.px); snprintf(err, errlen, "%s: out of memory", path); return 0; }
    canvas_fill(&c, 0, 0, c.w, c.h, BG);
    for (int i = 0; i < n; i++) {
        ep[i] = log[i].epoch;
        s[0].v[i] = log[i].loss;
        s[1].v[i] = log[i].dice_loss;
        s[2].v[i] = log[i].ce;
        s[3].v[i] = log[i].kl;
        s[4].v[i] = log[i].val_dice;
        s[5].v[i] = log[i].val_dice_mc;
        s[6].v[i] = log[i].val_epistemic;
        s[7].v[i] = log[i].lr;
    }
    s[0].name = "total"; s[1].name = "1 - Dice"; s[2].name = "CE / NLL"; s[3].name = "KL (weighted)";
    s[4].name = "Dice (mean mode)"; s[5].name = "Dice (MC)"; s[6].name = "epistemic MI"; s[7].name = "learning rate";
    panel(&c, 10, 8, W - 20, H, "training loss", s, 4, ep, n, 0);
    panel(&c, 10, 8 + H, W - 20, H, "validation", s + 4, 3, ep, n, 0);
    panel(&c, 10, 8 + 2 * H, W - 20, H, "learning rate", s + 7, 1, ep, n, 1);
    vbs_status st = vbs_write_png(path, c.w, c.h, c.px, err, errlen);
    free(ep);
    free(s);
    free(c.px);
    return st == VBS_OK;
}
