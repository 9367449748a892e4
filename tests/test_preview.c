/*
 * test_preview.c: the PNG previews of `vbseg infer` (runtime/cli/preview.c)
 * and vbs_volume_affine. A synthetic head (an ellipsoid "brain", 1 x 1.5 x
 * 2 mm voxels) with a lesion in the patient's left anterior brain is
 * written as NIfTI three ways, headers byte by byte from the NIfTI-1 field
 * offsets: RAS (sform, and a deliberately different qform that must lose),
 * LPS (x and y flipped, qform only) and with the axes permuted and S-I
 * flipped (sform only). Oracles: the matrices written into the headers;
 * the lesion and brain as built here (which slices hold them, where the
 * patient's left and anterior are); the RAS image itself, which its twins
 * must equal pixel for pixel; and text rendered here from the font, found
 * in the decoded PNGs.
 */
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "canvas.h"
#include "cli.h"
#include "vbseg.h"

/* static: libvbseg links libstb, which exports the same names (Debian's
 * stb_image.h then declares one function it never defines: hence the pragma,
 * whose warning comes at the end of the file) */
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb_image.h>

enum { NX = 48, NY = 48, NZ = 30, N = NX * NY * NZ };
static const double SP[3] = {1.0, 1.5, 2.0}, ORG[3] = {-24.0, -36.0, -30.0};
static char dir[] = "/tmp/vbs_test_preview.XXXXXX";

/* ---- NIfTI-1 written by hand ---------------------------------------- */

typedef struct {
    int dims[3];
    double pix[3];
    int qcode, scode;
    double quat[3], qoff[3], qfac;
    double srow[3][4];
} header;

static void put16(unsigned char *h, int off, int v) { int16_t x = (int16_t)v; memcpy(h + off, &x, 2); }
static void putf(unsigned char *h, int off, double v) { float x = (float)v; memcpy(h + off, &x, 4); }

static void write_nifti(const char *path, const header *g, const float *data) {
    unsigned char h[352];
    memset(h, 0, sizeof h);
    int32_t sz = 348;
    memcpy(h, &sz, 4);
    put16(h, 40, 3);
    for (int i = 0; i < 7; i++) put16(h, 42 + 2 * i, i < 3 ? g->dims[i] : 1);
    put16(h, 70, 16); /* float32 */
    put16(h, 72, 32);
    putf(h, 76, g->qfac);
    for (int i = 0; i < 3; i++) putf(h, 80 + 4 * i, g->pix[i]);
    putf(h, 108, 352);
    putf(h, 112, 1);
    h[123] = 2; /* mm */
    put16(h, 252, g->qcode);
    put16(h, 254, g->scode);
    for (int i = 0; i < 3; i++) { putf(h, 256 + 4 * i, g->quat[i]); putf(h, 268 + 4 * i, g->qoff[i]); }
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) putf(h, 280 + 16 * r + 4 * c, g->srow[r][c]);
    memcpy(h + 344, "n+1", 4);
    FILE *f = fopen(path, "wb");
    int n = g->dims[0] * g->dims[1] * g->dims[2];
    if (!f || fwrite(h, 1, sizeof h, f) != sizeof h || fwrite(data, sizeof(float), (size_t)n, f) != (size_t)n) printf("cannot write %s\n", path);
    if (f) fclose(f);
}

/* ---- the head, and its twins ------------------------------------------ */

static float scan[N], labels[N], mi[N];

static double ellipsoid(int i, int j, int k) { /* < 1 inside the brain */
    double u = (i - (NX - 1) / 2.0) / (NX * 0.42), v = (j - (NY - 1) / 2.0) / (NY * 0.45), w = (k - (NZ - 1) / 2.0) / (NZ * 0.45);
    return u * u + v * v + w * w;
}

/* the lesion: a ball of radius R mm (10: 9 slices) around voxel (13, 33,
 * 15): world x = -11 (patient's left), y = +13.5 (anterior), z = 0; and
 * one stray labelled voxel (a false positive) in each of slices 20..28,
 * near-empty slices that must not be shown */
static double lesion_mm(int i, int j, int k) {
    double dx = (i - 13) * SP[0], dy = (j - 33) * SP[1], dz = (k - 15) * SP[2];
    return sqrt(dx * dx + dy * dy + dz * dz);
}

static void make_head(double radius, float mi_scale) {
    for (int k = 0; k < NZ; k++)
        for (int j = 0; j < NY; j++)
            for (int i = 0; i < NX; i++) {
                int v = (k * NY + j) * NX + i;
                double e = ellipsoid(i, j, k), d = lesion_mm(i, j, k);
                scan[v] = e < 1 ? (float)(100 + 40 * j / NY + (i * 7 + j * 3 + k) % 5) : 0.f;
                labels[v] = 0;
                mi[v] = e < 1 ? mi_scale * 0.02f * (float)((i + j + k) % 3) : 0.f;
                if (e < 1 && d < radius) { /* uncertain in its outer 3 mm */
                    scan[v] = 300;
                    labels[v] = d < radius - 6 ? 1.f : d < radius - 4 ? 4.f : 2.f;
                    mi[v] = mi_scale * (d > radius - 3 ? 0.3f : 0.1f);
                }
                if (radius > 0 && k >= 20 && k <= 28 && i == 30 && j == 20) labels[v] = 2.f;
            }
}

/* where RAS voxel (i, j, k) sits in twin t: 0 RAS, 1 LPS (x, y flipped),
 * 2 permuted (axes: RAS y, then RAS z flipped, then RAS x) */
static int twin_dims(int t, int d[3]) {
    int a[3][3] = {{NX, NY, NZ}, {NX, NY, NZ}, {NY, NZ, NX}};
    memcpy(d, a[t], sizeof a[t]);
    return d[0] * d[1] * d[2];
}
static int twin_index(int t, int i, int j, int k) {
    if (t == 0) return (k * NY + j) * NX + i;
    if (t == 1) return (k * NY + (NY - 1 - j)) * NX + (NX - 1 - i);
    return (i * NZ + (NZ - 1 - k)) * NY + j; /* (a, b, c) = (j, NZ-1-k, i) */
}
static void to_twin(int t, const float *src, float *dst) {
    for (int k = 0; k < NZ; k++)
        for (int j = 0; j < NY; j++)
            for (int i = 0; i < NX; i++) dst[twin_index(t, i, j, k)] = src[(k * NY + j) * NX + i];
}

/* the header of each twin, and the affine it must give */
static header twin_header(int t, double want[4][4], int *code) {
    header g;
    memset(&g, 0, sizeof g);
    memset(want, 0, 16 * sizeof(double));
    want[3][3] = 1;
    g.qfac = 1;
    if (t == 0) {
        int d[3] = {NX, NY, NZ};
        memcpy(g.dims, d, sizeof d);
        for (int i = 0; i < 3; i++) { g.pix[i] = SP[i]; want[i][i] = SP[i]; want[i][3] = ORG[i]; }
        g.scode = 2; g.qcode = 1; *code = 2; /* the sform wins over a qform 100 mm off */
        for (int r = 0; r < 3; r++) { g.qoff[r] = ORG[r] + 100; g.srow[r][r] = SP[r]; g.srow[r][3] = ORG[r]; }
    } else if (t == 1) {
        int d[3] = {NX, NY, NZ};
        memcpy(g.dims, d, sizeof d);
        for (int i = 0; i < 3; i++) g.pix[i] = SP[i];
        /* 180 degrees about z: quaternion (a, b, c, d) = (0, 0, 0, 1) */
        g.qcode = 1; g.scode = 0; *code = 1;
        g.quat[2] = 1;
        g.qoff[0] = ORG[0] + (NX - 1) * SP[0]; g.qoff[1] = ORG[1] + (NY - 1) * SP[1]; g.qoff[2] = ORG[2];
        want[0][0] = -SP[0]; want[1][1] = -SP[1]; want[2][2] = SP[2];
        for (int r = 0; r < 3; r++) want[r][3] = g.qoff[r];
    } else {
        int d[3] = {NY, NZ, NX};
        memcpy(g.dims, d, sizeof d);
        g.pix[0] = SP[1]; g.pix[1] = SP[2]; g.pix[2] = SP[0];
        g.qcode = 0; g.scode = 3; *code = 3;
        want[0][2] = SP[0]; want[0][3] = ORG[0];
        want[1][0] = SP[1]; want[1][3] = ORG[1];
        want[2][1] = -SP[2]; want[2][3] = ORG[2] + (NZ - 1) * SP[2];
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 4; c++) g.srow[r][c] = want[r][c];
    }
    return g;
}

static const vbs_label card_labels[4] = {{0, "background"}, {1, "necrotic core"}, {2, "edema"}, {4, "enhancing tumour"}};

/* Writes twin t as NIfTI, reads it back, checks its affine and renders the
 * preview to dir/file, whose path goes to png (300 bytes); fills the plan.
 * 1 on success. */
static int render_twin(int t, const char *name, float mi_max, const char *file, char *png, preview_layout *L) {
    double want[4][4], m[4][4];
    int code, d[3], n = twin_dims(t, d);
    header g = twin_header(t, want, &code);
    float *s = malloc(sizeof(float) * (size_t)n), *l = malloc(sizeof(float) * (size_t)n), *u = malloc(sizeof(float) * (size_t)n);
    char path[300], err[512];
    snprintf(path, sizeof path, "%s/twin%d.nii", dir, t);
    snprintf(png, 300, "%s/%s", dir, file);
    to_twin(t, scan, s);
    to_twin(t, labels, l);
    to_twin(t, mi, u);
    write_nifti(path, &g, s);
    vbs_volume *v = NULL;
    int ok = !vbs_volume_read_nifti(path, &v, err, sizeof err);
    CHECK(ok, "%s", err);
    if (ok) {
        int got = vbs_volume_affine(v, m);
        CHECK(got == code, "twin %d: affine code %d, want %d", t, got, code);
        double worst = 0;
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++) worst = fmax(worst, fabs(m[r][c] - want[r][c]));
        CHECK(worst < 1e-4, "twin %d: affine off by %g", t, worst);
        vbs_card card;
        memset(&card, 0, sizeof card);
        card.n_labels = 4;
        card.labels = card_labels;
        preview_in p = {name, vbs_volume_data(v), l, u, {d[0], d[1], d[2]}, {{0}}, 0, &card, 0.f, mi_max};
        p.affine_code = vbs_volume_affine(v, p.affine);
        ok = preview_plan(&p, L, err, sizeof err) && write_preview(png, &p, err, sizeof err);
        CHECK(ok, "twin %d: %s", t, err);
    }
    vbs_volume_free(v);
    free(s); free(l); free(u);
    return ok;
}

/* ---- decoded images and text in them --------------------------------- */

typedef struct { int w, h; unsigned char *px; } image;

static image load(const char *path) {
    image im = {0, 0, NULL};
    int n;
    im.px = stbi_load(path, &im.w, &im.h, &n, 3);
    CHECK(im.px != NULL, "%s does not decode", path);
    return im;
}

static const unsigned char *at(const image *im, int x, int y) { return im->px + 3 * ((size_t)y * (size_t)im->w + (size_t)x); }
static int is_white(const unsigned char *p) { return p[0] == 255 && p[1] == 255 && p[2] == 255; }

/* str drawn white at scale s with its top-left corner in [x0, x1) x [y0, y1):
 * every set font pixel white, every clear one not */
static int has_text(const image *im, int x0, int y0, int x1, int y1, const char *str, int s) {
    int len = (int)strlen(str);
    for (int y = y0 < 0 ? 0 : y0; y < y1 && y + 8 * s <= im->h; y++)
        for (int x = x0 < 0 ? 0 : x0; x < x1 && x + 6 * s * len <= im->w + s; x++) {
            int ok = 1;
            for (int c = 0; c < len && ok; c++) {
                const char *g = preview_glyph((unsigned char)str[c]);
                for (int r = 0; r < 8 && ok; r++)
                    for (int b = 0; b < 5 && ok; b++)
                        ok = (g[5 * r + b] == '#') == is_white(at(im, x + 6 * s * c + b * s, y + r * s));
            }
            if (ok) return 1;
        }
    return 0;
}
static int text_anywhere(const image *im, const char *str, int s) { return has_text(im, 0, 0, im->w, im->h, str, s); }

/* centroid of the coloured (not grey) pixels of a rectangle; returns their count */
static int coloured(const image *im, const int *q, double *cx, double *cy) {
    int n = 0;
    double sx = 0, sy = 0;
    for (int y = q[1]; y < q[1] + q[3]; y++)
        for (int x = q[0]; x < q[0] + q[2]; x++) {
            const unsigned char *p = at(im, x, y);
            if (p[0] != p[1] || p[1] != p[2]) { n++; sx += x; sy += y; }
        }
    *cx = n ? sx / n : 0;
    *cy = n ? sy / n : 0;
    return n;
}

static int same_rect(const image *a, const image *b, const int *q) {
    for (int y = q[1]; y < q[1] + q[3]; y++)
        if (memcmp(at(a, q[0], y), at(b, q[0], y), 3 * (size_t)q[2])) return 0;
    return 1;
}

/* ---- the checks -------------------------------------------------------- */

static void check_font(void) {
    int bad = 0;
    for (int c = 32; c < 127; c++) {
        const char *g = preview_glyph(c);
        int set = 0, ok = g && strlen(g) == 40;
        for (int i = 0; ok && i < 40; i++) { ok = g[i] == '#' || g[i] == '.'; set += g[i] == '#'; }
        ok = ok && (c == ' ' ? set == 0 : set > 0);
        for (int d = 32; ok && d < c; d++) ok = strcmp(g, preview_glyph(d)) != 0;
        if (!ok) { printf("  glyph %d '%c' missing, malformed or a duplicate\n", c, c); bad++; }
    }
    CHECK(bad == 0, "%d printable characters without their own glyph", bad);
    CHECK(!strcmp(preview_glyph(0xC3), preview_glyph('?')) && !strcmp(preview_glyph('\n'), preview_glyph('?')), "non-ASCII is drawn as '?'");
}

/* non-zero voxels per slice k of a RAS volume; returns the most in one slice */
static int slice_counts(const float *vol, int count[NZ], int *first, int *last) {
    int most = 0;
    memset(count, 0, sizeof(int) * NZ);
    for (int v = 0; v < N; v++)
        if (vol[v] != 0) count[v / (NX * NY)]++;
    *first = NZ;
    *last = -1;
    for (int k = 0; k < NZ; k++) {
        most = count[k] > most ? count[k] : most;
        if (count[k]) { *first = k < *first ? k : *first; *last = k; }
    }
    return most;
}

static void check_lesion_case(void) {
    make_head(10, 1.f);
    preview_layout L[3];
    char png[3][300], file[32];
    for (int t = 0; t < 3; t++) {
        snprintf(file, sizeof file, "twin%d.png", t);
        if (!render_twin(t, "Case_007", 0.f, file, png[t], &L[t])) return;
    }
    /* slices: through the lesion, never near-empty, distinct, 2 slices (4 mm) apart, superior first */
    int per_slice[NZ], first, last, most = slice_counts(labels, per_slice, &first, &last);
    CHECK(L[0].slice_axis == 2 && L[0].n_slices == 4, "axis %d, %d slices", L[0].slice_axis, L[0].n_slices);
    for (int r = 0; r < L[0].n_slices; r++) {
        int64_t k = L[0].slice[r];
        CHECK(k >= 0 && k < NZ && per_slice[k] * 4 >= most, "row %d: slice %lld holds %d lesion voxels of at most %d", r, (long long)k,
              k >= 0 && k < NZ ? per_slice[k] : -1, most);
        CHECK(fabs(L[0].position[r] - (ORG[2] + (double)k * SP[2])) < 1e-6, "row %d: z %g", r, L[0].position[r]);
        if (r) CHECK(L[0].slice[r - 1] - k >= 2, "rows %d, %d: slices %lld, %lld", r - 1, r, (long long)L[0].slice[r - 1], (long long)k);
    }
    CHECK(L[1].n_slices == L[0].n_slices && L[2].n_slices == L[0].n_slices, "twins show %d and %d slices", L[1].n_slices, L[2].n_slices);
    CHECK(L[2].slice_axis == 1, "permuted twin: slice axis %d", L[2].slice_axis);
    image im[3];
    for (int t = 0; t < 3; t++) im[t] = load(png[t]);
    if (!im[0].px || !im[1].px || !im[2].px) goto out;
    /* twins: the same pixels */
    for (int t = 1; t < 3; t++)
        CHECK(im[t].w == im[0].w && im[t].h == im[0].h && !memcmp(im[t].px, im[0].px, 3 * (size_t)im[0].w * (size_t)im[0].h),
              "twin %d differs from the RAS image", t);
    /* the lesion (patient's left, anterior) on the image's right, in the upper half */
    for (int r = 0; r < L[0].n_slices; r++) {
        const int *q = L[0].panel[r][1];
        double cx, cy;
        int n = coloured(&im[0], q, &cx, &cy);
        CHECK(n > 0 && cx > q[0] + q[2] / 2.0 && cy < q[1] + q[3] / 2.0, "row %d: %d label pixels centred at (%.0f, %.0f) in panel %d,%d %dx%d", r,
              n, cx, cy, q[0], q[1], q[2], q[3]);
        /* its position in mm, left of the row, and the orientation marks around the panel */
        char z[32];
        snprintf(z, sizeof z, "z=%+.1f mm", ORG[2] + (double)L[0].slice[r] * SP[2]);
        CHECK(has_text(&im[0], 0, q[1], q[0], q[1] + q[3], z, 2), "row %d: '%s' not found", r, z);
        CHECK(has_text(&im[0], q[0] - 16, q[1], q[0], q[1] + q[3], "R", 2), "row %d: no R on the left", r);
        CHECK(has_text(&im[0], q[0] + q[2], q[1], q[0] + q[2] + 16, q[1] + q[3], "L", 2), "row %d: no L on the right", r);
        CHECK(has_text(&im[0], q[0], q[1] - 20, q[0] + q[2], q[1], "A", 2), "row %d: no A above", r);
        CHECK(has_text(&im[0], q[0], q[1] + q[3], q[0] + q[2], q[1] + q[3] + 20, "P", 2), "row %d: no P below", r);
    }
    CHECK(text_anywhere(&im[0], "Case_007", 3), "the case name");
    CHECK(text_anywhere(&im[0], "RADIOLOGICAL: patient's right on image left", 2), "the convention");
    const int *b = L[0].bar;
    CHECK(has_text(&im[0], b[0], b[1], b[0] + b[2], b[1] + b[3], "mutual information (nats)", 2), "the colour bar's title");
    CHECK(has_text(&im[0], b[0], b[1], b[0] + b[2], b[1] + b[3], "this case's max", 2), "the colour bar says the case's max");
    CHECK(fabsf(L[0].bar_top - 0.3f) < 1e-6f, "bar top %g, the case's max is 0.3", L[0].bar_top);
    static const char *const legend[3] = {"necrotic core (1)", "edema (2)", "enhancing tumour (4)"};
    for (int i = 0; i < 3; i++) CHECK(text_anywhere(&im[0], legend[i], 2), "legend entry '%s'", legend[i]);
    CHECK(!text_anywhere(&im[0], "background", 2), "the background is not in the legend");
out:
    for (int t = 0; t < 3; t++) stbi_image_free(im[t].px);
}

static void check_no_labels(void) {
    make_head(0, 1.f);
    preview_layout L;
    char png[300];
    if (!render_twin(1, "Brain_only", 0.f, "brain.png", png, &L)) return;
    int per_slice[NZ], first, last, most = slice_counts(scan, per_slice, &first, &last);
    CHECK(L.n_slices == 4, "%d slices through the brain", L.n_slices);
    for (int r = 0; r < L.n_slices; r++) {
        int64_t k = L.slice[r];
        CHECK(k > first && k < last && per_slice[k] * 4 >= most, "row %d: slice %lld holds %d brain voxels of at most %d (brain %d..%d)", r,
              (long long)k, k >= 0 && k < NZ ? per_slice[k] : -1, most, first, last);
    }
    image im = load(png);
    if (!im.px) return;
    for (int r = 0; r < L.n_slices; r++) { /* the brain is in the scan panel */
        const int *q = L.panel[r][0];
        int lit = 0;
        for (int y = q[1]; y < q[1] + q[3]; y++)
            for (int x = q[0]; x < q[0] + q[2]; x++) lit += at(&im, x, y)[0] > 0;
        CHECK(lit * 4 > q[2] * q[3], "row %d: %d of %d scan pixels lit", r, lit, q[2] * q[3]);
    }
    stbi_image_free(im.px);
}

static void check_colour_bar(void) {
    /* one case at --preview-max 0.5 and 1, a second case (MI doubled) at 0.5,
     * both at their own max: the bar follows the option, not the case */
    preview_layout L[5];
    char png[5][300], file[32];
    float scale[5] = {1, 1, 2, 1, 2}, top[5] = {0.5f, 1.f, 0.5f, 0, 0};
    image im[5];
    for (int c = 0; c < 5; c++) {
        make_head(10, scale[c]);
        snprintf(file, sizeof file, "bar%d.png", c);
        im[c].px = NULL;
        if (render_twin(0, "Case_bar", top[c], file, png[c], &L[c])) im[c] = load(png[c]);
    }
    for (int c = 0; c < 5; c++)
        if (!im[c].px) goto out;
    CHECK(!memcmp(L[0].bar, L[1].bar, sizeof L[0].bar) && !memcmp(L[0].bar, L[2].bar, sizeof L[0].bar), "the bar moved");
    CHECK(!same_rect(&im[0], &im[1], L[0].bar), "--preview-max 0.5 and 1 give the same bar");
    CHECK(same_rect(&im[0], &im[2], L[0].bar), "two cases at --preview-max 0.5 give different bars");
    CHECK(!same_rect(&im[3], &im[4], L[3].bar), "two cases with different maxima share a bar without --preview-max");
    CHECK(L[0].bar_top == 0.5f && L[1].bar_top == 1.f && L[3].bar_top == 0.3f && fabsf(L[4].bar_top - 0.6f) < 1e-6f, "bar tops %g %g %g %g",
          L[0].bar_top, L[1].bar_top, L[3].bar_top, L[4].bar_top);
    const int *b = L[0].bar;
    CHECK(has_text(&im[0], b[0], b[1], b[0] + b[2], b[1] + b[3], "0.5", 2) && !has_text(&im[0], b[0], b[1], b[0] + b[2], b[1] + b[3], "1.0", 2),
          "ticks up to 0.5");
    CHECK(has_text(&im[1], b[0], b[1], b[0] + b[2], b[1] + b[3], "1.0", 2), "ticks up to 1.0");
    CHECK(has_text(&im[0], b[0], b[1], b[0] + b[2], b[1] + b[3], "--preview-max", 2), "the bar says --preview-max");
    /* the heat map uses that scale: the lesion's shell (0.3 and 0.6 nats) at 0.5 saturates only in the second case */
    int sat[2] = {0, 0};
    for (int c = 0; c < 2; c++)
        for (int r = 0; r < L[2 * c].n_slices; r++) {
            const int *q = L[2 * c].panel[r][2];
            for (int y = q[1]; y < q[1] + q[3]; y++)
                for (int x = q[0]; x < q[0] + q[2]; x++) sat[c] += is_white(at(&im[2 * c], x, y));
        }
    CHECK(sat[0] == 0 && sat[1] > 0, "white (saturated) MI pixels: %d at 0.3/0.5, %d at 0.6/0.5", sat[0], sat[1]);
    /* steps of 2.5 keep their decimal: ticks 2.5, 5.0, 7.5, ... */
    preview_layout L25;
    char png25[300];
    if (render_twin(0, "Case_bar", 12.5f, "bar25.png", png25, &L25)) {
        image i25 = load(png25);
        const int *q = L25.bar;
        if (i25.px) CHECK(has_text(&i25, q[0], q[1], q[0] + q[2], q[1] + q[3], "7.5", 2), "the 7.5 tick of a 0..12.5 bar");
        stbi_image_free(i25.px);
    }
out:
    for (int c = 0; c < 5; c++) stbi_image_free(im[c].px);
}

/* a lesion of 5 slices: 2, not 4 adjacent ones */
static void check_thin_lesion(void) {
    make_head(5, 1.f);
    preview_layout L;
    char png[300];
    if (!render_twin(0, "Thin", 0.f, "thin.png", png, &L)) return;
    CHECK(L.n_slices == 2 && L.slice[0] - L.slice[1] >= 2, "%d slices, the first two %lld, %lld", L.n_slices, (long long)L.slice[0],
          (long long)L.slice[1]);
    for (int r = 0; r < L.n_slices; r++) CHECK(L.slice[r] >= 13 && L.slice[r] <= 17, "row %d: slice %lld is not in the lesion", r, (long long)L.slice[r]);
}

static void check_voxel_order(void) {
    make_head(10, 1.f);
    header g;
    memset(&g, 0, sizeof g);
    int d[3] = {NX, NY, NZ};
    memcpy(g.dims, d, sizeof d);
    for (int i = 0; i < 3; i++) g.pix[i] = SP[i];
    g.qfac = 1;
    char path[300], png[300], err[512];
    snprintf(path, sizeof path, "%s/plain.nii", dir);
    snprintf(png, sizeof png, "%s/plain.png", dir);
    write_nifti(path, &g, scan);
    vbs_volume *v = NULL;
    if (vbs_volume_read_nifti(path, &v, err, sizeof err)) { CHECK(0, "%s", err); return; }
    preview_in p = {"Plain", vbs_volume_data(v), labels, mi, {NX, NY, NZ}, {{0}}, 0, NULL, 0.f, 0.f};
    p.affine_code = vbs_volume_affine(v, p.affine);
    CHECK(p.affine_code == 0, "no sform or qform: code %d", p.affine_code);
    double worst = 0;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) worst = fmax(worst, fabs(p.affine[r][c] - (r == c ? (r < 3 ? SP[r] : 1) : 0)));
    CHECK(worst < 1e-6, "no sform or qform: not diag(pixdim), off by %g", worst);
    preview_layout L;
    CHECK(preview_plan(&p, &L, err, sizeof err) && write_preview(png, &p, err, sizeof err), "%s", err);
    image im = load(png);
    if (im.px) {
        CHECK(text_anywhere(&im, "VOXEL ORDER: no affine, orientation unknown", 2), "the voxel-order notice");
        CHECK(!text_anywhere(&im, "RADIOLOGICAL", 2), "no convention claimed");
        char s[32];
        snprintf(s, sizeof s, "slice %lld", (long long)L.slice[0]);
        CHECK(text_anywhere(&im, s, 2), "'%s' not found", s);
        /* without a card, the legend lists the values found */
        CHECK(text_anywhere(&im, "label 1", 2) && text_anywhere(&im, "label 4", 2), "the legend of values");
        stbi_image_free(im.px);
    }
    /* a failed write names the file */
    char bad[400];
    snprintf(bad, sizeof bad, "%s/missing/x.png", dir);
    CHECK(!write_preview(bad, &p, err, sizeof err) && strstr(err, bad), "error: %s", err);
    vbs_volume_free(v);
}

int main(void) {
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    check_font();
    check_lesion_case();
    check_no_labels();
    check_thin_lesion();
    check_colour_bar();
    check_voxel_order();
    if (!getenv("VBS_KEEP")) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd)) printf("cannot remove %s\n", dir);
    } else printf("kept %s\n", dir);
    return finish("test_preview");
}
