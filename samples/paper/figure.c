/*
 * figure.c (paper_figure): the README's figure, after Fig. 3 of the seed
 * paper: one axial slice of one case as five panels side by side, the
 * FLAIR scan, the reference labels over it, the prediction over it, the
 * predictive entropy and the mutual information (epistemic), with a label
 * legend, a colour bar per map, and a caption naming the case and the slice.
 *
 *   paper_figure OUT.png --image FLAIR.nii.gz --labels SEG.nii.gz --pred PRED.nii.gz
 *                --entropy E.nii.gz --mi MI.nii.gz [--z Z] [--scale S] [--title TEXT]
 *
 * What is shown, so that a reader can check it:
 *  - the slice is cut and oriented as `vbseg infer`'s previews do
 *    (runtime/cli/orient.c): the voxel axis closest to S-I cuts it, and it is
 *    shown radiologically (patient's right on the image's left, anterior at
 *    the top); Z counts along that axis; by default the slice with the most
 *    reference voxels that are not 0 (the first of equals, inferior to
 *    superior; the middle slice when there is no tumour);
 *  - FLAIR in grey, linear from the 0.5th to the 99.5th percentile of the
 *    slice's non-zero voxels (NumPy's linear interpolation between order
 *    statistics), rounded to the nearest of 256 levels;
 *  - labels drawn opaque in the colours of the previews (canvas_palette):
 *    1 necrotic core (230,40,40), 2 oedema (40,200,60), 4 or 3 enhancing
 *    (250,220,0), any other non-zero value white; 0 shows the grey scan;
 *    the legend names the enhancing values found ("4", "3" or "3, 4");
 *  - both maps in viridis (33 control points of matplotlib's table, linear
 *    between them; 0 is (68,1,84), the top (253,231,37)), from 0 to the
 *    slice's largest value, which the line under each bar states.
 * Layout, in pixels, for scripts that look inside: S display pixels per
 * voxel of the finest in-plane spacing (default: the smallest S that makes
 * the larger panel side at least 240); column k (0..4) starts at x = 12 +
 * k * (c + 16) with c = max(panel width, 300) + 32; its title at (x + 16, 12);
 * its panel at (x + 16 + (c - 32 - panel width) / 2, 52); below the panels,
 * the legend under column 1 and the colour bars under columns 3 and 4; the
 * caption and the orientation line at the bottom left.
 *
 * Not a viewer: no resampling of oblique scans, nearest-neighbour scaling,
 * one slice. Errors are one line naming the file, exit 1 (usage: exit 2);
 * the PNG is written atomically (vbs_write_png), so a failed run leaves
 * whatever was at OUT.png untouched.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "canvas.h"
#include "orient.h"
#include "vbseg.h"

enum { MARGIN = 12, CELL_X = 16, CELL_Y = 20, GAP = 16, LINE = 20, MIN_W = 300, BAR_H = 14, MAX_PANEL = 6000 };

static const unsigned char white[3] = {255, 255, 255}, frame[3] = {70, 70, 70};

/* viridis (matplotlib's, CC0) at t = i/32 */
static const unsigned char viridis_cp[33][3] = {
    {68, 1, 84},    {71, 13, 96},   {72, 24, 106},  {72, 35, 116},  {71, 45, 123},  {69, 54, 129},  {66, 64, 134},
    {63, 73, 137},  {59, 82, 139},  {55, 90, 141},  {51, 99, 141},  {47, 106, 142}, {44, 114, 142}, {41, 122, 142},
    {38, 129, 142}, {35, 137, 142}, {33, 144, 140}, {31, 152, 139}, {31, 159, 136}, {33, 166, 133}, {40, 174, 128},
    {49, 181, 123}, {62, 188, 116}, {76, 194, 108}, {93, 201, 99},  {110, 206, 88}, {130, 211, 76}, {150, 216, 63},
    {171, 220, 50}, {192, 223, 36}, {213, 226, 26}, {234, 229, 26}, {253, 231, 37}};

static void viridis(float t, unsigned char out[3]) {
    t = t > 0 ? (t < 1 ? t : 1) : 0; /* NaN -> 0 */
    float x = t * 32;
    int i = (int)x;
    if (i > 31) i = 31;
    float f = x - (float)i;
    for (int c = 0; c < 3; c++) out[c] = (unsigned char)lroundf(viridis_cp[i][c] + f * (viridis_cp[i + 1][c] - viridis_cp[i][c]));
}

enum { IMAGE, LABELS, PRED, ENTROPY, MI, NVOL };
static const char *const opt_name[NVOL] = {"--image", "--labels", "--pred", "--entropy", "--mi"};

static int usage(const char *msg) {
    if (msg) fprintf(stderr, "paper_figure: %s\n", msg);
    fprintf(msg ? stderr : stdout,
            "usage: paper_figure OUT.png --image FLAIR.nii.gz --labels SEG.nii.gz --pred PRED.nii.gz\n"
            "                    --entropy E.nii.gz --mi MI.nii.gz [--z Z] [--scale S] [--title TEXT]\n"
            "One axial slice as five panels: FLAIR, the reference and the predicted labels over it,\n"
            "the predictive entropy and the mutual information (viridis, 0 to the slice's max).\n"
            "--z: the slice along the voxel axis closest to S-I (default: the most tumour);\n"
            "--scale: pixels per voxel, 1-16 (default: panels at least 240 pixels);\n"
            "--title: the case's name in the caption (default: from the image's file name).\n");
    return msg ? 2 : 0;
}

static int parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

/* BraTS2021_00001_flair.nii.gz -> BraTS2021_00001 */
static void case_name(const char *path, char *out, size_t n) {
    const char *b = strrchr(path, '/');
    snprintf(out, n, "%s", b ? b + 1 : path);
    size_t len = strlen(out);
    static const char *const ext[] = {".nii.gz", ".nii"}, *const chan[] = {"t2_flair", "t2-flair", "flair", "t2f", "0000"};
    for (int i = 0; i < 2; i++) {
        size_t e = strlen(ext[i]);
        if (len > e && !strcmp(out + len - e, ext[i])) { out[len -= e] = 0; break; }
    }
    for (int i = 0; i < 5; i++) {
        size_t e = strlen(chan[i]);
        if (len > e + 1 && !strcasecmp(out + len - e, chan[i]) && strchr("_-.", out[len - e - 1])) { out[len - e - 1] = 0; break; }
    }
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* q-quantile of sorted a[n], NumPy's default (linear) */
static double quantile(const float *a, int64_t n, double q) {
    double pos = q * (double)(n - 1);
    int64_t i = (int64_t)floor(pos);
    if (i >= n - 1) return a[n - 1];
    return a[i] + (pos - (double)i) * ((double)a[i + 1] - a[i]);
}

/* what the figure shows, decided before a pixel is set */
typedef struct {
    orient o;
    double affine[4][4];
    int64_t dims[3], z, nh, nv;
    int pw, ph, iw, cw, w, h, yb, yc;
    int n_leg;                 /* legend entries: 3, and "other labels" when another value occurs */
    const char *enh;           /* the enhancing label's values found: "4", "3" or "3, 4" */
    double lo, hi, top[2];     /* grey window; the maps' tops (entropy, MI) */
    char caption[160], orient_line[96];
} plan;

static int label_colour(float v, const unsigned char **rgb) {
    if (v == 0.f) return 0;
    *rgb = v == 1.f ? canvas_palette[0] : v == 2.f ? canvas_palette[1] : (v == 3.f || v == 4.f) ? canvas_palette[2] : white;
    return 1;
}

static int64_t voxel(const plan *P, int64_t h, int64_t v) {
    int64_t a[3];
    a[P->o.slice] = P->z;
    a[P->o.hor] = h;
    a[P->o.ver] = v;
    return (a[2] * P->dims[1] + a[1]) * P->dims[0] + a[0];
}

/* the grey window and the maps' tops, from the slice; 0 if out of memory */
static int slice_stats(plan *P, float *const vol[NVOL]) {
    float *nz = malloc(sizeof(float) * (size_t)(P->nh * P->nv));
    if (!nz) return 0;
    int64_t n = 0;
    int has[5] = {0};
    P->top[0] = P->top[1] = 0;
    for (int64_t v = 0; v < P->nv; v++)
        for (int64_t h = 0; h < P->nh; h++) {
            int64_t i = voxel(P, h, v);
            if (vol[IMAGE][i] != 0.f) nz[n++] = vol[IMAGE][i];
            P->top[0] = fmax(P->top[0], vol[ENTROPY][i]);
            P->top[1] = fmax(P->top[1], vol[MI][i]);
        }
    for (int64_t i = 0; i < P->dims[0] * P->dims[1] * P->dims[2]; i++)
        for (int k = LABELS; k <= PRED; k++) {
            float l = vol[k][i];
            has[l == 3.f ? 3 : l == 4.f ? 4 : l == 1.f || l == 2.f || l == 0.f ? 0 : 1] = 1;
        }
    P->enh = has[3] && has[4] ? "3, 4" : has[3] ? "3" : "4";
    P->n_leg = 3 + has[1];
    P->lo = 0; P->hi = 1;
    if (n) {
        qsort(nz, (size_t)n, sizeof(float), cmp_float);
        P->lo = quantile(nz, n, 0.005);
        P->hi = quantile(nz, n, 0.995);
        if (!(P->hi > P->lo)) P->lo = P->hi - 1;
    }
    free(nz);
    return 1;
}

/* the slice, the sizes and the text; 0 with err if it cannot be drawn */
static int make_plan(plan *P, float *const vol[NVOL], const char *img_path, const char *title, long z, long scale, char *err, size_t n) {
    const orient *o = &P->o;
    int64_t ns = P->dims[o->slice];
    P->nh = P->dims[o->hor];
    P->nv = P->dims[o->ver];
    if (z >= ns) {
        snprintf(err, n, "%s: --z %ld is out of range: its slices along voxel axis %c are 0..%lld", img_path, z, "ijk"[o->slice], (long long)ns - 1);
        return 0;
    }
    if (z < 0) { /* the most tumour; equals: the first from inferior to superior */
        int64_t *count = malloc(sizeof(int64_t) * (size_t)ns), most = 0;
        if (!count) { snprintf(err, n, "%s: out of memory", img_path); return 0; }
        z = (long)(ns / 2);
        orient_slice_counts(P->dims, o->slice, vol[LABELS], 0.f, count);
        for (int64_t t = 0; t < ns; t++) {
            int64_t k = o->dir > 0 ? t : ns - 1 - t;
            if (count[k] > most) { most = count[k]; z = (long)k; }
        }
        free(count);
    }
    P->z = z;
    /* square pixels: `scale` of them per voxel of the finest in-plane spacing */
    double sh = o->sp[o->hor], sv = o->sp[o->ver], base = fmin(sh, sv);
    double eh = (double)P->nh * sh / base, ev = (double)P->nv * sv / base;
    if (scale <= 0) scale = (long)fmax(1, ceil(240 / fmax(eh, ev)));
    if (eh * (double)scale > MAX_PANEL || ev * (double)scale > MAX_PANEL) {
        snprintf(err, n, "%s: a slice of %.0fx%.0f pixels at --scale %ld is larger than %d", img_path, eh * scale, ev * scale, scale, MAX_PANEL);
        return 0;
    }
    P->pw = (int)fmax(1, lround(eh * (double)scale));
    P->ph = (int)fmax(1, lround(ev * (double)scale));
    P->iw = P->pw > MIN_W ? P->pw : MIN_W;
    P->cw = P->iw + 2 * CELL_X;
    char name[96], where[48];
    if (title) snprintf(name, sizeof name, "%s", title);
    else case_name(img_path, name, sizeof name);
    double pos = orient_slice_position(P->dims, P->affine, o, z);
    if (o->known) orient_slice_text(o, pos, z, where, sizeof where);
    else snprintf(where, sizeof where, "%.1f mm from slice 0", pos);
    snprintf(P->caption, sizeof P->caption, "%s: slice %ld of 0..%lld, %s", name, z, (long long)ns - 1, where);
    orient_line(o, P->orient_line, sizeof P->orient_line);
    if (!slice_stats(P, vol)) { snprintf(err, n, "%s: out of memory", img_path); return 0; }
    int panel_y = MARGIN + LINE + CELL_Y;
    P->yb = panel_y + P->ph + CELL_Y + 4;
    int below = P->n_leg * LINE > BAR_H + 7 + LINE + 16 ? P->n_leg * LINE : BAR_H + 7 + LINE + 16;
    P->yc = P->yb + below + 12;
    P->h = P->yc + LINE + 16 + MARGIN;
    P->w = 2 * MARGIN + 5 * P->cw + 4 * GAP;
    int tw = canvas_text_width(P->caption, TS) > canvas_text_width(P->orient_line, TS) ? canvas_text_width(P->caption, TS) : canvas_text_width(P->orient_line, TS);
    if (2 * MARGIN + tw > P->w) P->w = 2 * MARGIN + tw;
    return 1;
}

static void draw(canvas *c, const plan *P, float *const vol[NVOL], const int *th, const int *tv) {
    static const char *const heads[5] = {"FLAIR", "reference", "prediction", "entropy (nats)", "mutual information (nats)"};
    const int panel_y = MARGIN + LINE + CELL_Y;
    int q[5][4];
    for (int k = 0; k < 5; k++) {
        int x = MARGIN + k * (P->cw + GAP);
        canvas_text(c, x + CELL_X, MARGIN, TS, heads[k], white);
        q[k][0] = x + CELL_X + (P->iw - P->pw) / 2; q[k][1] = panel_y; q[k][2] = P->pw; q[k][3] = P->ph;
        canvas_fill(c, q[k][0] - 1, q[k][1] - 1, q[k][2] + 2, q[k][3] + 2, frame);
        orient_marks(c, &P->o, q[k], CELL_X, CELL_Y, white);
    }
    for (int y = 0; y < P->ph; y++)
        for (int x = 0; x < P->pw; x++) {
            int64_t i = voxel(P, th[x], tv[y]);
            double g = ((double)vol[IMAGE][i] - P->lo) / (P->hi - P->lo);
            unsigned char grey = (unsigned char)lround(255 * (g < 0 ? 0 : g > 1 ? 1 : g)), px[5][3];
            const unsigned char *l;
            memset(px[0], grey, 3);
            for (int k = LABELS; k <= PRED; k++) memcpy(px[k], label_colour(vol[k][i], &l) ? l : px[0], 3);
            for (int m = 0; m < 2; m++) viridis((float)(vol[ENTROPY + m][i] / (P->top[m] > 0 ? P->top[m] : 1)), px[ENTROPY + m]);
            for (int k = 0; k < 5; k++) canvas_fill(c, q[k][0] + x, q[k][1] + y, 1, 1, px[k]);
        }
    /* the legend under the reference */
    char name[4][32];
    snprintf(name[0], sizeof name[0], "necrotic core (1)");
    snprintf(name[1], sizeof name[1], "oedema (2)");
    snprintf(name[2], sizeof name[2], "enhancing (%s)", P->enh);
    snprintf(name[3], sizeof name[3], "other labels");
    const unsigned char *sw[4] = {canvas_palette[0], canvas_palette[1], canvas_palette[2], white};
    int lx = MARGIN + (P->cw + GAP) + CELL_X;
    for (int e = 0; e < P->n_leg; e++) {
        canvas_fill(c, lx, P->yb + e * LINE, 14, 14, sw[e]);
        canvas_text(c, lx + 20, P->yb + e * LINE, TS, name[e], white);
    }
    /* a bar under each map, 0 to the slice's max */
    for (int m = 0; m < 2; m++) {
        int bx = MARGIN + (3 + m) * (P->cw + GAP) + CELL_X;
        double top = P->top[m] > 0 ? P->top[m] : 1, step;
        int decimals;
        canvas_ticks(top, &step, &decimals);
        canvas_colour_bar(c, bx, P->yb, P->iw, BAR_H, viridis, top, step, decimals, white);
        char note[64];
        if (P->top[m] > 0) snprintf(note, sizeof note, "slice max %.3g nats", top); /* at most 23 characters: 274 pixels */
        else snprintf(note, sizeof note, "all 0 in this slice");
        canvas_text(c, bx, P->yb + BAR_H + 7 + LINE, TS, note, white);
    }
    canvas_text(c, MARGIN, P->yc, TS, P->caption, white);
    canvas_text(c, MARGIN, P->yc + LINE, TS, P->orient_line, white);
}

int main(int argc, char **argv) {
    const char *out = NULL, *path[NVOL] = {0}, *title = NULL;
    long z = -1, scale = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(NULL);
        int k = 0;
        while (k < NVOL && strcmp(a, opt_name[k])) k++;
        int known = k < NVOL || !strcmp(a, "--z") || !strcmp(a, "--scale") || !strcmp(a, "--title");
        if (a[0] == '-' && a[1] && !known) {
            char msg[128];
            snprintf(msg, sizeof msg, "unknown option '%.80s'", a);
            return usage(msg);
        }
        if (!known) {
            if (out) return usage("more than one output file");
            out = a;
            continue;
        }
        if (i + 1 >= argc) {
            char msg[64];
            snprintf(msg, sizeof msg, "%s needs a value", a);
            return usage(msg);
        }
        const char *v = argv[++i];
        if (k < NVOL) path[k] = v;
        else if (!strcmp(a, "--title")) title = v;
        else if (!strcmp(a, "--z") && !parse_int(v, 0, 1L << 30, &z)) return usage("--z takes a slice index, 0 or more");
        else if (!strcmp(a, "--scale") && !parse_int(v, 1, 16, &scale)) return usage("--scale takes pixels per voxel, 1 to 16");
    }
    if (!out) return usage("no output file");
    for (int k = 0; k < NVOL; k++)
        if (!path[k]) {
            char msg[64];
            snprintf(msg, sizeof msg, "%s is required", opt_name[k]);
            return usage(msg);
        }
    struct stat so, si;
    for (int k = 0; k < NVOL; k++) /* never write the picture over an input */
        if (!strcmp(out, path[k]) || (!stat(out, &so) && !stat(path[k], &si) && so.st_dev == si.st_dev && so.st_ino == si.st_ino)) {
            fprintf(stderr, "paper_figure: %s: is the %s input; the figure needs a file of its own\n", out, opt_name[k]);
            return 1;
        }
    vbs_volume *v[NVOL] = {0};
    float *vol[NVOL];
    plan *P = calloc(1, sizeof *P);
    canvas c = {0, 0, NULL};
    int *th = NULL, rc = 1;
    char err[600];
    if (!P) { fprintf(stderr, "paper_figure: %s: out of memory\n", out); return 1; }
    int code = 0;
    for (int k = 0; k < NVOL; k++) {
        if (vbs_volume_read_nifti(path[k], &v[k], err, sizeof err) != VBS_OK) {
            fprintf(stderr, "paper_figure: %s\n", err);
            goto done;
        }
        int64_t d[4];
        double a[4][4];
        int ck = vbs_volume_affine(v[k], a);
        vbs_volume_dims(v[k], d);
        vol[k] = vbs_volume_data(v[k]);
        if (k == IMAGE) {
            memcpy(P->dims, d, sizeof P->dims);
            memcpy(P->affine, a, sizeof a);
            code = ck;
        }
        if (d[0] != P->dims[0] || d[1] != P->dims[1] || d[2] != P->dims[2] || d[3] != 1) {
            fprintf(stderr, "paper_figure: %s: dims %lldx%lldx%lldx%lld differ from %s's %lldx%lldx%lldx1\n", path[k], (long long)d[0],
                    (long long)d[1], (long long)d[2], (long long)d[3], path[IMAGE], (long long)P->dims[0], (long long)P->dims[1],
                    (long long)P->dims[2]);
            goto done;
        }
        /* an overlay on a flipped or shifted grid would show the wrong voxels; a file without an affine is taken to share the image's */
        for (int r = 0; r < 3 && ck > 0 && code > 0; r++)
            for (int col = 0; col < 4; col++)
                if (fabs(a[r][col] - P->affine[r][col]) > 1e-4 * (1 + fabs(P->affine[r][col]))) {
                    fprintf(stderr, "paper_figure: %s: its voxel-to-world affine differs from %s's (row %d, column %d)\n", path[k], path[IMAGE], r, col);
                    goto done;
                }
    }
    orient_from_affine(P->dims, P->affine, code, &P->o);
    if (!make_plan(P, vol, path[IMAGE], title, z, scale, err, sizeof err)) {
        fprintf(stderr, "paper_figure: %s\n", err);
        goto done;
    }
    c.w = P->w; c.h = P->h;
    c.px = calloc((size_t)c.w * (size_t)c.h, 3);
    th = malloc(sizeof(int) * (size_t)(P->pw + P->ph));
    if (!c.px || !th) { fprintf(stderr, "paper_figure: %s: out of memory\n", out); goto done; }
    orient_pixel_map(&P->o, P->dims, P->pw, P->ph, th, th + P->pw);
    draw(&c, P, vol, th, th + P->pw);
    err[0] = 0;
    if (vbs_write_png(out, c.w, c.h, c.px, err, sizeof err) != VBS_OK) {
        fprintf(stderr, "paper_figure: %s\n", err[0] ? err : out);
        goto done;
    }
    rc = 0;
done:
    for (int k = 0; k < NVOL; k++) vbs_volume_free(v[k]);
    free(c.px);
    free(th);
    free(P);
    return rc;
}
