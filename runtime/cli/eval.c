/*
 * eval.c: `vbseg eval`: segmentation quality against reference labels
 * (Dice, IoU, 95th-percentile Hausdorff distance per case and per label or
 * BraTS region, with means and standard deviations), the file walking, and
 * the CSV and --curves files; the uncertainty measures where maps are
 * present (AUROC, ECE, Dice after discarding the most uncertain voxels, the
 * curves' data) are computed in eval_uncertainty.c. `--merge` joins the
 * summaries of `vbseg infer --shard`.
 * It scores label maps only (integer values, at most 64 labels per file);
 * it reads the files twice (once to learn the labels of all cases, once to
 * score) rather than holding every volume in memory.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "eval_uncertainty.h"

static const char *help =
    "usage: vbseg eval --pred DIR --truth DIR [--labels auto|brats2018|brats2023|values] [--uncertainty epistemic|entropy]\n"
    "                  [--out FILE.csv] [--discard F] [--curves FILE.csv]\n"
    "       vbseg eval --merge DIR\n"
    "\n"
    "For every DIR/CASE.nii.gz written by vbseg infer, finds the reference labels as\n"
    "TRUTH/CASE.nii.gz, CASE_seg, CASE-seg, or CASE/CASE_seg (.nii or .nii.gz) and reports\n"
    "Dice, IoU and HD95 (in the file's units, the larger of the two directed 95th\n"
    "percentiles of surface distances; nan where one side is empty) for every non-zero\n"
    "label value found in the predictions or the references of any case and, for BraTS\n"
    "labels, per region (WT, TC, ET); with CASE_epistemic (or _entropy) the AUROC of\n"
    "the uncertainty for detecting wrong voxels, and with CASE_probabilities the\n"
    "expected calibration error (15 bins), both over the voxels that either side\n"
    "labels. Writes a CSV atomically (per case, then mean and sd rows; default\n"
    "PRED/eval.csv) and prints a table.\n"
    "--discard F (default 0.1; 0: off): with the uncertainty map, also each label's\n"
    "  or region's Dice after dropping the ceil(F n) most uncertain of the n voxels\n"
    "  either side labels (equal uncertainty: the earlier voxel in file order is\n"
    "  dropped first), as columns dicekept_NAME.\n"
    "--curves FILE.csv: writes atomically, pooled over the cases with the maps, the\n"
    "  reliability diagram (15 bins of the max probability: count, mean confidence,\n"
    "  accuracy) and the error rate by uncertainty decile (rank within each case;\n"
    "  decile 9 is the most uncertain tenth).\n"
    "--labels auto: BraTS 2018/2021 (ET = 4) where the references' values are 1, 2, 4\n"
    "  with a 4, BraTS 2023 (ET = 3) where they are 1, 2, 3 with a 3 (else the\n"
    "  predictions' values decide); predictions in the other BraTS convention are\n"
    "  scored with their ET read as the references' (with a warning); otherwise as values.\n"
    "--labels brats2018|brats2023: that convention, with a warning naming any value\n"
    "  of either side that it does not have.\n"
    "--labels values: each label value on its own, no regions.\n"
    "A file that is not a label map (a non-integer value, or more than 64 distinct\n"
    "non-zero values) or a case without reference labels is reported and makes the\n"
    "exit status 1; the other cases are still evaluated.\n"
    "--merge DIR joins DIR/summary.shard-I-of-N.csv into DIR/summary.csv and .json;\n"
    "missing shards are warned about (exit 0, the merge is partial), shards of\n"
    "different N refused (exit 1, nothing written).\n";

#define MAX_LABELS 64 /* distinct non-zero values in one label map */

/* libvbseg's atomic writer (temporary file, fsync, rename; err holds 512 bytes) and its write loop */
vbs_status vbs_atomic_write(const char *path, vbs_status (*fn)(int, void *, char *), void *user, char *err);
int vbs_write_all(int fd, const void *buf, size_t n);

/* ---- writing whole files ----------------------------------------------- */

typedef struct { const char *buf; size_t len; } text;

static vbs_status write_text(int fd, void *user, char *err) {
    const text *t = user;
    if (!vbs_write_all(fd, t->buf, t->len)) return VBS_OK;
    snprintf(err, 512, "write failed: %s", strerror(errno));
    return VBS_ERR_IO;
}

/* Replaces path with len bytes of buf atomically; 1 on success, else 0 after
 * one line saying why, and whether the file left at path is an older one. */
static int save_atomic(const char *path, const char *buf, size_t len) {
    text t = {buf, len};
    char err[512];
    errno = 0;
    if (!vbs_atomic_write(path, write_text, &t, err)) return 1;
    /* the writer fails at a system call and leaves its errno (its message may
     * be cut short by a long path); without one, its message says why */
    const char *why = errno ? strerror(errno) : err;
    struct stat sb;
    int stale = !stat(path, &sb) && S_ISREG(sb.st_mode);
    cli_error("eval", "%s: cannot write: %s%s", path, why, stale ? "; the file there holds an earlier run's results" : "");
    return 0;
}

/* Writes what put(f, user) prints to path atomically (composed in memory
 * first, so that a failure leaves nothing half-written); 1 on success, else
 * 0 after one line. */
static int save_stream(const char *path, void (*put)(FILE *, const void *), const void *user) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f) {
        put(f, user);
        int bad = ferror(f);
        if (fclose(f) || bad) { free(buf); buf = NULL; }
    }
    if (!buf) { cli_error("eval", "%s: out of memory", path); return 0; }
    int ok = save_atomic(path, buf, len);
    free(buf);
    return ok;
}

/* ---- label values -------------------------------------------------------- */

typedef struct { int n, cap; int *v; } intset; /* sorted, distinct */

static int intset_has(const intset *s, int x) {
    int lo = 0, hi = s->n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (s->v[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo < s->n && s->v[lo] == x;
}

/* 0, or -1 when out of memory */
static int intset_add(intset *s, int x) {
    if (intset_has(s, x)) return 0;
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : MAX_LABELS;
        int *v = realloc(s->v, sizeof *v * (size_t)cap);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    int i = s->n;
    while (i > 0 && s->v[i - 1] > x) { s->v[i] = s->v[i - 1]; i--; }
    s->v[i] = x;
    s->n++;
    return 0;
}

/* "4", "4, 7", ... for messages: at most 8 values, then how many in all */
static void intset_list(const intset *s, char *out, size_t n) {
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; i < s->n && k < n; i++) {
        if (i == 8) { snprintf(out + k, n - k, ", ... (%d in all)", s->n); break; }
        k += (size_t)snprintf(out + k, n - k, "%s%d", i ? ", " : "", s->v[i]);
    }
}

static int cmp_double(const void *a, const void *b);

/* Checks that the voxels of x (dims x, y, z) are a label map: integers, at
 * most MAX_LABELS distinct non-zero ones, which go into s. 1 if so, else 0
 * and why (an intensity image given as labels would score as nonsense). */
static int label_map(const float *x, const int64_t *dims, intset *s, char *why, size_t wn) {
    int64_t n = dims[0] * dims[1] * dims[2];
    float last = 0; /* runs of one value are the rule in label maps */
    s->n = 0;
    for (int64_t i = 0; i < n; i++) {
        float f = x[i];
        if (f == last) continue;
        if (f != truncf(f) || fabsf(f) >= 2147483648.0f) {
            snprintf(why, wn, "%s value %g at voxel (%lld, %lld, %lld)", f != truncf(f) ? "non-integer" : "out-of-range", (double)f,
                     (long long)(i % dims[0]), (long long)(i / dims[0] % dims[1]), (long long)(i / (dims[0] * dims[1])));
            return 0;
        }
        last = f;
        if (f == 0 || intset_has(s, (int)f)) continue;
        if (s->n == MAX_LABELS) {
            /* the refusal path only: count them all, for the message */
            double *d = malloc(sizeof(double) * (size_t)n);
            int64_t k = 0, distinct = 0;
            for (int64_t j = 0; d && j < n; j++)
                if (x[j] != 0) d[k++] = x[j];
            if (d) qsort(d, (size_t)k, sizeof *d, cmp_double);
            for (int64_t j = 0; d && j < k; j++) distinct += !j || d[j] != d[j - 1];
            free(d);
            if (distinct) snprintf(why, wn, "%lld distinct label values (more than %d)", (long long)distinct, MAX_LABELS);
            else snprintf(why, wn, "more than %d distinct label values", MAX_LABELS);
            return 0;
        }
        if (intset_add(s, (int)f)) { snprintf(why, wn, "out of memory"); return 0; }
    }
    return 1;
}

/* The ET value of a BraTS convention that the values s follow: 4 (2018/2021)
 * for a subset of {1, 2, 4} with 4, 3 (2023) for a subset of {1, 2, 3} with
 * 3, else 0 (other values, both 3 and 4, or neither). */
static int brats_et(const intset *s) {
    int et = 0;
    for (int i = 0; i < s->n; i++) {
        int v = s->v[i];
        if (v == 1 || v == 2) continue;
        if ((v != 3 && v != 4) || (et && et != v)) return 0;
        et = v;
    }
    return et;
}

static const char *brats_name(int et) { return et == 4 ? "BraTS 2018/2021" : "BraTS 2023"; }

/* One warning line when the values s of one side are not all labels of the
 * BraTS convention with this ET; who says that the convention holds. */
static void warn_foreign(const char *who, const char *side, const intset *s, int et) {
    intset f = {0};
    for (int i = 0; i < s->n; i++)
        if (s->v[i] != 1 && s->v[i] != 2 && s->v[i] != et && intset_add(&f, s->v[i])) break;
    if (f.n) {
        char list[256];
        intset_list(&f, list, sizeof list);
        fprintf(stderr, "vbseg eval: warning: %s but the %s hold %s, not %s%s label%s; scored on %s own, in no region\n", who, side, list,
                f.n == 1 ? "a " : "", brats_name(et), f.n == 1 ? "" : "s", f.n == 1 ? "its" : "their");
    }
    free(f.v);
}

/* ---- metrics -------------------------------------------------------------- */

/* 1D squared distance transform (Felzenszwalb & Huttenlocher) of f over n
 * samples spaced s apart, in place; v, z are scratch of n and n + 1. */
static void dt1(double *f, int64_t n, double s, double *d, int64_t *v, double *z) {
    int64_t k = 0;
    v[0] = 0;
    z[0] = -INFINITY;
    z[1] = INFINITY;
    for (int64_t q = 1; q < n; q++) {
        if (f[q] == INFINITY) continue;
        if (f[v[0]] == INFINITY) { v[0] = q; continue; }
        double qs = (double)q * s, sv;
        for (;;) {
            double vs = (double)v[k] * s;
            sv = ((f[q] + qs * qs) - (f[v[k]] + vs * vs)) / (2 * (qs - vs));
            if (sv <= z[k] && k > 0) k--;
            else break;
        }
        if (sv <= z[k]) { v[k] = q; continue; }
        k++;
        v[k] = q;
        z[k] = sv;
        z[k + 1] = INFINITY;
    }
    if (f[v[0]] == INFINITY) { for (int64_t q = 0; q < n; q++) d[q] = INFINITY; memcpy(f, d, sizeof(double) * (size_t)n); return; }
    k = 0;
    for (int64_t q = 0; q < n; q++) {
        while (z[k + 1] < (double)q * s) k++;
        double dq = ((double)q - (double)v[k]) * s;
        d[q] = dq * dq + f[v[k]];
    }
    memcpy(f, d, sizeof(double) * (size_t)n);
}

/* Euclidean distance (units of the spacing) from every voxel to the nearest voxel with seed set. */
static double *edt(const unsigned char *seed, const int64_t *dims, const double *sp) {
    int64_t nx = dims[0], ny = dims[1], nz = dims[2], n = nx * ny * nz, m = nx > ny ? (nx > nz ? nx : nz) : (ny > nz ? ny : nz);
    double *f = malloc(sizeof(double) * (size_t)n), *line = malloc(sizeof(double) * (size_t)m), *d = malloc(sizeof(double) * (size_t)m);
    double *z = malloc(sizeof(double) * (size_t)(m + 1));
    int64_t *v = malloc(sizeof(int64_t) * (size_t)m);
    if (!f || !line || !d || !z || !v) { free(f); free(line); free(d); free(z); free(v); return NULL; }
    for (int64_t i = 0; i < n; i++) f[i] = seed[i] ? 0 : INFINITY;
    int64_t len[3] = {nx, ny, nz}, stride[3] = {1, nx, nx * ny};
    for (int ax = 0; ax < 3; ax++) {
        int64_t lines = n / len[ax];
        for (int64_t l = 0; l < lines; l++) {
            /* the start of line l along axis ax */
            int64_t base;
            if (ax == 0) base = l * nx;
            else if (ax == 1) base = (l / nx) * nx * ny + l % nx;
            else base = l;
            for (int64_t q = 0; q < len[ax]; q++) line[q] = f[base + q * stride[ax]];
            dt1(line, len[ax], sp[ax], d, v, z);
            for (int64_t q = 0; q < len[ax]; q++) f[base + q * stride[ax]] = line[q];
        }
    }
    for (int64_t i = 0; i < n; i++) f[i] = sqrt(f[i]);
    free(line); free(d); free(z); free(v);
    return f;
}

static void surface(const unsigned char *in, const int64_t *dims, unsigned char *out) {
    int64_t nx = dims[0], ny = dims[1], nz = dims[2];
    for (int64_t z = 0; z < nz; z++)
        for (int64_t y = 0; y < ny; y++)
            for (int64_t x = 0; x < nx; x++) {
                int64_t i = (z * ny + y) * nx + x;
                out[i] = in[i] && (x == 0 || y == 0 || z == 0 || x == nx - 1 || y == ny - 1 || z == nz - 1 || !in[i - 1] || !in[i + 1] ||
                                   !in[i - nx] || !in[i + nx] || !in[i - nx * ny] || !in[i + nx * ny]);
            }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile95(double *d, int64_t n) {
    if (!n) return NAN;
    qsort(d, (size_t)n, sizeof(double), cmp_double);
    return d[(int64_t)ceil(0.95 * (double)n) - 1 < 0 ? 0 : (int64_t)ceil(0.95 * (double)n) - 1];
}

/* HD95 between masks a and b: max of the directed 95th percentiles of surface distances */
static double hd95(const unsigned char *a, const unsigned char *b, const int64_t *dims, const double *sp) {
    int64_t n = dims[0] * dims[1] * dims[2], na = 0, nb = 0;
    for (int64_t i = 0; i < n; i++) { na += a[i]; nb += b[i]; }
    if (!na && !nb) return 0;
    if (!na || !nb) return NAN;
    unsigned char *sa = malloc((size_t)n), *sb = malloc((size_t)n);
    if (!sa || !sb) { free(sa); free(sb); return NAN; }
    surface(a, dims, sa);
    surface(b, dims, sb);
    double *da = edt(sa, dims, sp), *db = edt(sb, dims, sp), r = NAN;
    double *ab = malloc(sizeof(double) * (size_t)n), *ba = malloc(sizeof(double) * (size_t)n);
    if (da && db && ab && ba) {
        int64_t k1 = 0, k2 = 0;
        for (int64_t i = 0; i < n; i++) {
            if (sa[i]) ab[k1++] = db[i];
            if (sb[i]) ba[k2++] = da[i];
        }
        r = fmax(percentile95(ab, k1), percentile95(ba, k2));
    }
    free(sa); free(sb); free(da); free(db); free(ab); free(ba);
    return r;
}

static int file_exists(const char *p) { struct stat s; return !stat(p, &s) && S_ISREG(s.st_mode); }

/* A case's uncertainty or probability map at path, if there is one; NULL when
 * there is none, and after one warning line when it cannot be read or its x,
 * y, z dims are not the prediction's d (the measures read it voxel by voxel). */
static vbs_volume *read_map(const char *path, const int64_t *d) {
    vbs_volume *v = NULL;
    char err[512];
    int64_t md[4];
    if (!file_exists(path)) return NULL;
    if (vbs_volume_read_nifti(path, &v, err, sizeof err)) {
        fprintf(stderr, "vbseg eval: warning: %s; not used\n", err);
        return NULL;
    }
    vbs_volume_dims(v, md);
    if (md[0] != d[0] || md[1] != d[1] || md[2] != d[2]) {
        fprintf(stderr, "vbseg eval: warning: %s: %lldx%lldx%lld voxels, the prediction %lldx%lldx%lld; not used\n", path, (long long)md[0],
                (long long)md[1], (long long)md[2], (long long)d[0], (long long)d[1], (long long)d[2]);
        vbs_volume_free(v);
        return NULL;
    }
    return v;
}

static void put_curves(FILE *f, const void *curves) { eu_curves_write(f, curves); }

static int find_truth(const char *dir, const char *id, char *out, size_t n) {
    const char *pat[] = {"%s/%s.nii.gz", "%s/%s.nii", "%s/%s_seg.nii.gz", "%s/%s_seg.nii", "%s/%s-seg.nii.gz", "%s/%s-seg.nii"};
    for (size_t i = 0; i < sizeof pat / sizeof pat[0]; i++) {
        snprintf(out, n, pat[i], dir, id);
        if (file_exists(out)) return 1;
    }
    const char *sub[] = {"%s/%s/%s_seg.nii.gz", "%s/%s/%s-seg.nii.gz", "%s/%s/%s_seg.nii", "%s/%s/%s-seg.nii"};
    for (size_t i = 0; i < sizeof sub / sizeof sub[0]; i++) {
        snprintf(out, n, sub[i], dir, id, id);
        if (file_exists(out)) return 1;
    }
    return 0;
}

static int is_map_suffix(const char *stem) {
    static const char *const suf[] = {"_entropy", "_epistemic", "_aleatoric", "_regions", "_probabilities", "_aleatoric_het", "_epistemic_het"};
    size_t n = strlen(stem);
    for (size_t i = 0; i < sizeof suf / sizeof suf[0]; i++) {
        size_t k = strlen(suf[i]);
        if (n > k && !strcmp(stem + n - k, suf[i])) return 1;
    }
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* ---- scoring ------------------------------------------------------------- */

/* What one group of CSV columns scores: the voxels whose label is one of v. */
typedef struct { char name[32]; int n; int v[3]; } region;

/* 1 when both masks are empty */
static double dice_of(int64_t na, int64_t nb, int64_t both) { return na + nb ? 2.0 * (double)both / (double)(na + nb) : 1.0; }

static int in_region(const region *r, float value) {
    for (int j = 0; j < r->n; j++)
        if ((float)r->v[j] == value) return 1;
    return 0;
}

/* a mean and a standard deviation over the cases; nan is left out */
typedef struct { double s, s2; int n; } acc;

static void acc_add(acc *a, double x) {
    if (isnan(x)) return;
    a->s += x;
    a->s2 += x * x;
    a->n++;
}
static double acc_mean(const acc *a) { return a->n ? a->s / a->n : NAN; }
static double acc_sd(const acc *a) { double m = acc_mean(a); return a->n ? sqrt(fmax(0, a->s2 / a->n - m * m)) : NAN; }

/* Reads a case's prediction pp and reference tp: readable label maps of one
 * geometry, their label values into ps and ts. 1 if so; else 0 after one line. */
static int load_case(const char *id, const char *pp, const char *tp, vbs_volume **p, vbs_volume **t, intset *ps, intset *ts) {
    char err[512], why[256];
    *p = *t = NULL;
    if (vbs_volume_read_nifti(pp, p, err, sizeof err) || vbs_volume_read_nifti(tp, t, err, sizeof err)) {
        fprintf(stderr, "vbseg eval: %s\n", err);
    } else if (!vbs_volume_same_geometry(*t, *p, why, sizeof why)) {
        fprintf(stderr, "vbseg eval: %s: prediction and reference differ: %s\n", id, why);
    } else {
        int64_t d[4];
        vbs_volume_dims(*p, d);
        if (!label_map(vbs_volume_data(*p), d, ps, why, sizeof why)) fprintf(stderr, "vbseg eval: %s: not a label map: %s\n", pp, why);
        else if (!label_map(vbs_volume_data(*t), d, ts, why, sizeof why)) fprintf(stderr, "vbseg eval: %s: not a label map: %s\n", tp, why);
        else return 1;
    }
    vbs_volume_free(*p);
    vbs_volume_free(*t);
    *p = *t = NULL;
    return 0;
}

/* The columns: every label value of either side (the predictions' `from`
 * counted as et where from != 0), then with a BraTS ET the regions WT, TC, ET.
 * Returns the count, or -1 when out of memory. */
static int make_regions(const intset *up, const intset *ut, int et, int from, region **out) {
    intset L = {0};
    int bad = 0;
    for (int i = 0; i < ut->n; i++) bad |= intset_add(&L, ut->v[i]);
    for (int i = 0; i < up->n; i++) bad |= intset_add(&L, up->v[i] == from ? et : up->v[i]);
    if (et) bad |= intset_add(&L, 1) | intset_add(&L, 2) | intset_add(&L, et);
    int nr = L.n + (et ? 3 : 0);
    region *R = calloc((size_t)nr + 1, sizeof *R);
    if (bad || !R) { free(L.v); free(R); return -1; }
    for (int i = 0; i < L.n; i++) {
        snprintf(R[i].name, sizeof R[i].name, "label%d", L.v[i]);
        R[i].v[0] = L.v[i];
        R[i].n = 1;
    }
    if (et) {
        static const char *const names[3] = {"wt", "tc", "et"};
        int sets[3][3] = {{1, 2, et}, {1, et, 0}, {et, 0, 0}}, cnt[3] = {3, 2, 1};
        for (int r = 0; r < 3; r++) {
            region *g = &R[L.n + r];
            snprintf(g->name, sizeof g->name, "%s", names[r]);
            memcpy(g->v, sets[r], sizeof sets[r]);
            g->n = cnt[r];
        }
    }
    free(L.v);
    *out = R;
    return nr;
}

/* The BraTS ET value to score regions with (0: none) and the predictions'
 * ET to map to it (0: none), from --labels and the values of each side;
 * warns (one line each) where the values contradict the convention. */
static int convention(const char *labels, const intset *up, const intset *ut, int *from) {
    char who[64];
    int ep = brats_et(up), etr = brats_et(ut), et = 0;
    *from = 0;
    if (!strcmp(labels, "brats2018") || !strcmp(labels, "brats2023")) {
        et = !strcmp(labels, "brats2018") ? 4 : 3;
        snprintf(who, sizeof who, "--labels %s", labels);
        warn_foreign(who, "predictions", up, et);
        warn_foreign(who, "references", ut, et);
    } else if (!strcmp(labels, "auto") && etr) {
        /* the references decide; predictions in the other convention are mapped */
        et = etr;
        if (ep && ep != etr) {
            *from = ep;
            fprintf(stderr, "vbseg eval: warning: the predictions follow %s (ET = %d), the references %s (ET = %d); predicted %d is scored as %d\n",
                    brats_name(ep), ep, brats_name(etr), etr, ep, etr);
        } else {
            snprintf(who, sizeof who, "the references follow %s", brats_name(et));
            warn_foreign(who, "predictions", up, et);
        }
    } else if (!strcmp(labels, "auto") && ep) {
        et = ep;
        snprintf(who, sizeof who, "the predictions follow %s", brats_name(et));
        warn_foreign(who, "references", ut, et);
    }
    return et;
}

int cli_merge(const char *dir); /* below */

int cmd_eval(int argc, char **argv) {
    const char *pred = NULL, *truth = NULL, *labels = "auto", *unc = "epistemic", *outp = NULL, *merge = NULL, *curvesp = NULL;
    double discard = 0.1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(help, stdout); return 0; }
        if (!(v = cli_value("eval", argc, argv, &i))) return 2;
        if (!strcmp(a, "--pred")) pred = v;
        else if (!strcmp(a, "--truth")) truth = v;
        else if (!strcmp(a, "--labels")) labels = v;
        else if (!strcmp(a, "--uncertainty")) unc = v;
        else if (!strcmp(a, "--out")) outp = v;
        else if (!strcmp(a, "--merge")) merge = v;
        else if (!strcmp(a, "--curves")) curvesp = v;
        else if (!strcmp(a, "--discard")) {
            if (!cli_float("eval", a, v, &discard)) return 2;
            if (discard < 0 || discard > 1) { cli_error("eval", "--discard: '%s' is not a fraction in 0..1", v); return 2; }
        }
        else { cli_error("eval", "unknown option '%s' (see --help)", a); return 2; }
    }
    if (merge) return cli_merge(merge);
    if (!pred || !truth) { cli_error("eval", "--pred and --truth are required (see --help)"); return 2; }
    if (strcmp(unc, "epistemic") && strcmp(unc, "entropy")) { cli_error("eval", "--uncertainty must be epistemic or entropy"); return 2; }
    if (strcmp(labels, "auto") && strcmp(labels, "brats2018") && strcmp(labels, "brats2023") && strcmp(labels, "values")) {
        cli_error("eval", "--labels must be auto, brats2018, brats2023 or values");
        return 2;
    }
    DIR *d = opendir(pred);
    if (!d) { cli_error("eval", "%s: not a readable folder", pred); return 1; }
    char **ids = NULL;
    int n = 0, cap = 0, rc = 1;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 8 || strcmp(e->d_name + l - 7, ".nii.gz")) continue;
        char stem[512];
        snprintf(stem, sizeof stem, "%.*s", (int)(l - 7), e->d_name);
        if (is_map_suffix(stem)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **t = realloc(ids, sizeof *t * (size_t)cap);
            if (!t) { closedir(d); cli_error("eval", "out of memory"); goto out; }
            ids = t;
        }
        if (!(ids[n] = strdup(stem))) { closedir(d); cli_error("eval", "out of memory"); goto out; }
        n++;
    }
    closedir(d);
    if (!n) { cli_error("eval", "%s: no CASE.nii.gz label files", pred); goto out; }
    qsort(ids, (size_t)n, sizeof *ids, cmp_str);
    rc = 0;
    /* pass 1: which cases can be scored, and the label values of each side over all of them */
    char path[4096], tp[4096];
    intset ps = {0}, ts = {0}, up = {0}, ut = {0};
    region *R = NULL;
    acc *A = NULL;
    double *kept = NULL;         /* per region: Dice over the voxels --discard keeps */
    eu_voxel *sv = NULL;         /* a case's labelled voxels, ranked; grown, never shrunk */
    int64_t svcap = 0;
    eu_curves curves;
    eu_curves_init(&curves);
    char *good = calloc((size_t)n, 1), *cbuf = NULL;
    size_t clen = 0;
    /* room for one map's labels: label_map then allocates nothing per voxel */
    ps.v = malloc(sizeof(int) * MAX_LABELS);
    ts.v = malloc(sizeof(int) * MAX_LABELS);
    ps.cap = ts.cap = MAX_LABELS;
    if (!good || !ps.v || !ts.v) { cli_error("eval", "out of memory"); rc = 1; goto done; }
    for (int c = 0; c < n; c++) {
        if (!find_truth(truth, ids[c], tp, sizeof tp)) { fprintf(stderr, "vbseg eval: %s: no reference labels in %s\n", ids[c], truth); rc = 1; continue; }
        snprintf(path, sizeof path, "%s/%s.nii.gz", pred, ids[c]);
        vbs_volume *p, *t;
        if (!load_case(ids[c], path, tp, &p, &t, &ps, &ts)) { rc = 1; continue; }
        vbs_volume_free(p);
        vbs_volume_free(t);
        int bad = 0;
        for (int i = 0; i < ps.n; i++) bad |= intset_add(&up, ps.v[i]);
        for (int i = 0; i < ts.n; i++) bad |= intset_add(&ut, ts.v[i]);
        if (bad) { cli_error("eval", "out of memory"); rc = 1; goto done; }
        good[c] = 1;
    }
    int from, et = convention(labels, &up, &ut, &from);
    int nr = make_regions(&up, &ut, et, from, &R);
    int nk = discard > 0 ? nr : 0; /* dicekept columns */
    A = calloc((size_t)(nr > 0 ? nr : 0) * 3 + 2 + (size_t)(nk > 0 ? nk : 0), sizeof *A);
    kept = calloc((size_t)(nr > 0 ? nr : 0) + 1, sizeof *kept);
    FILE *csv = nr >= 0 && A && kept ? open_memstream(&cbuf, &clen) : NULL;
    if (!csv) { cli_error("eval", "out of memory"); rc = 1; goto done; }
    if (et) printf("labels: %s (ET = %d): each label value, and the regions WT, TC, ET\n", brats_name(et), et);
    else printf("labels: each label value on its own (%s)\n", strcmp(labels, "values") ? "no BraTS convention found" : "--labels values");
    /* pass 2: the scores */
    fprintf(csv, "case");
    for (int r = 0; r < nr; r++) fprintf(csv, ",dice_%s,iou_%s,hd95_%s", R[r].name, R[r].name, R[r].name);
    fprintf(csv, ",auroc_%s,ece", unc);
    for (int r = 0; r < nk; r++) fprintf(csv, ",dicekept_%s", R[r].name);
    fprintf(csv, "\n");
    acc *AU = A + 3 * nr, *K = A + 3 * nr + 2; /* AUROC, then ECE; then dicekept per region */
    int evaluated = 0, kept_cases = 0; /* kept_cases: with an uncertainty map */
    for (int c = 0; c < n; c++) {
        if (!good[c]) continue;
        vbs_volume *p, *t, *u = NULL, *pr = NULL;
        find_truth(truth, ids[c], tp, sizeof tp);
        snprintf(path, sizeof path, "%s/%s.nii.gz", pred, ids[c]);
        if (!load_case(ids[c], path, tp, &p, &t, &ps, &ts)) { rc = 1; continue; }
        int64_t dd[4];
        vbs_volume_dims(t, dd);
        int64_t nv = dd[0] * dd[1] * dd[2];
        double sp[3];
        vbs_volume_spacing(t, sp);
        float *pv = vbs_volume_data(p);
        const float *tv = vbs_volume_data(t);
        if (from)
            for (int64_t i = 0; i < nv; i++)
                if (pv[i] == (float)from) pv[i] = (float)et;
        unsigned char *a = malloc((size_t)nv), *b = malloc((size_t)nv);
        if (!a || !b) { free(a); free(b); vbs_volume_free(p); vbs_volume_free(t); cli_error("eval", "%s: out of memory", ids[c]); rc = 1; continue; }
        /* the uncertainty map first: the voxels that --discard drops leave each region's Dice */
        double au = NAN, ece = NAN;
        int64_t k = -1, ndrop = 0; /* k: the ranked voxels in sv; -1 without a map */
        snprintf(path, sizeof path, "%s/%s_%s.nii.gz", pred, ids[c], unc);
        if ((u = read_map(path, dd))) {
            int64_t nl = eu_labelled(pv, tv, nv);
            if (nl > svcap) {
                eu_voxel *g = (uint64_t)nl <= SIZE_MAX / sizeof *g ? realloc(sv, sizeof *g * (size_t)nl) : NULL;
                if (g) { sv = g; svcap = nl; }
                else { cli_error("eval", "%s: out of memory", path); rc = 1; }
            }
            if (nl <= svcap) {
                k = eu_rank(vbs_volume_data(u), pv, tv, nv, sv);
                au = eu_auroc(sv, k);
                ndrop = eu_discard_count(discard, k);
                eu_add_deciles(&curves, sv, k);
                kept_cases++;
            }
        }
        fprintf(csv, "%s", ids[c]);
        for (int r = 0; r < nr; r++) {
            int64_t na = 0, nb = 0, both = 0;
            for (int64_t i = 0; i < nv; i++) {
                a[i] = (unsigned char)in_region(&R[r], pv[i]);
                b[i] = (unsigned char)in_region(&R[r], tv[i]);
                na += a[i]; nb += b[i]; both += a[i] & b[i];
            }
            double dice = dice_of(na, nb, both);
            double iou = na + nb - both ? (double)both / (double)(na + nb - both) : 1.0;
            double h = hd95(a, b, dd, sp), m3[3] = {dice, iou, h};
            fprintf(csv, ",%.6f,%.6f,%.4f", dice, iou, h);
            for (int q = 0; q < 3; q++) acc_add(&A[3 * r + q], m3[q]);
            /* the dropped voxels out of both sides */
            kept[r] = NAN;
            for (int64_t q = 0; k >= 0 && q < ndrop; q++) {
                int64_t i = sv[q].i;
                na -= a[i]; nb -= b[i]; both -= a[i] & b[i];
            }
            if (k >= 0) kept[r] = dice_of(na, nb, both);
        }
        snprintf(path, sizeof path, "%s/%s_probabilities.nii.gz", pred, ids[c]);
        if ((pr = read_map(path, dd))) {
            int64_t pd[4];
            vbs_volume_dims(pr, pd);
            ece = eu_ece(vbs_volume_data(pr), pd[3], pv, tv, nv, &curves);
        }
        fprintf(csv, ",%.6f,%.6f", au, ece);
        acc_add(&AU[0], au);
        acc_add(&AU[1], ece);
        for (int r = 0; r < nk; r++) {
            fprintf(csv, ",%.6f", kept[r]);
            acc_add(&K[r], kept[r]);
        }
        fprintf(csv, "\n");
        evaluated++;
        free(a); free(b);
        vbs_volume_free(p); vbs_volume_free(t); vbs_volume_free(u); vbs_volume_free(pr);
    }
    /* mean and sd rows, and the table */
    printf("%d case%s evaluated\n%-12s %16s %16s %18s\n", evaluated, evaluated == 1 ? "" : "s", "region", "dice", "iou", "hd95");
    for (int row = 0; row < 2; row++) {
        fprintf(csv, "%s", row ? "sd" : "mean");
        for (int q = 0; q < 3 * nr + 2 + nk; q++) fprintf(csv, ",%.6f", row ? acc_sd(&A[q]) : acc_mean(&A[q]));
        fprintf(csv, "\n");
    }
    for (int r = 0; r < nr; r++) {
        printf("%-12s", R[r].name);
        for (int q = 0; q < 3; q++) printf(" %8.4f +- %-6.4f", acc_mean(&A[3 * r + q]), acc_sd(&A[3 * r + q]));
        printf("\n");
    }
    /* a measure no case had the maps for says so, rather than "nan" */
    if (AU[0].n) printf("auroc (%s, wrong voxels): %.4f", unc, acc_mean(&AU[0]));
    else printf("auroc: not computed (no CASE_%s.nii.gz in %s)", unc, pred);
    if (AU[1].n) printf("   ece: %.4f\n", acc_mean(&AU[1]));
    else printf("   ece: not computed (no CASE_probabilities.nii.gz; vbseg infer --save-probabilities writes them)\n");
    if (nk) {
        printf("dice after discarding the %g%% most uncertain voxels (%s):", 100 * discard, unc);
        if (!kept_cases) printf(" not computed (no CASE_%s.nii.gz in %s)", unc, pred);
        for (int r = 0; kept_cases && r < nr; r++) printf(" %s %.4f", R[r].name, acc_mean(&K[r]));
        printf("\n");
    }
    int bad = ferror(csv);
    if (fclose(csv) || bad) { cli_error("eval", "out of memory"); rc = 1; goto done; }
    char out_path[4096];
    if (outp) snprintf(out_path, sizeof out_path, "%s", outp);
    else snprintf(out_path, sizeof out_path, "%s/eval.csv", pred);
    if (save_atomic(out_path, cbuf, clen)) printf("wrote %s\n", out_path);
    else rc = 1;
    if (curvesp) {
        if (!curves.rel_cases) fprintf(stderr, "vbseg eval: warning: %s: no case has CASE_probabilities.nii.gz; its reliability rows are empty\n", curvesp);
        if (!curves.dec_cases) fprintf(stderr, "vbseg eval: warning: %s: no case has CASE_%s.nii.gz; its uncertainty rows are empty\n", curvesp, unc);
        if (save_stream(curvesp, put_curves, &curves)) printf("wrote %s\n", curvesp);
        else rc = 1;
    }
done:
    free(ps.v); free(ts.v); free(up.v); free(ut.v);
    free(R); free(A); free(kept); free(sv); free(good); free(cbuf);
out:
    for (int c = 0; c < n; c++) free(ids[c]);
    free(ids);
    return rc;
}

/* ---- merging shard summaries ------------------------------------------- */

typedef struct { char *f[128]; int n; double qc; int ok; } csv_row;

/* splits one CSV line (quotes with "" escapes) into owned fields */
static int split_csv(const char *line, csv_row *r) {
    r->n = 0;
    const char *p = line;
    while (*p && *p != '\n' && r->n < 128) {
        char buf[2048];
        size_t k = 0;
        if (*p == '"') {
            p++;
            while (*p && !(*p == '"' && p[1] != '"')) {
                if (*p == '"') p++;
                if (k + 1 < sizeof buf) buf[k++] = *p;
                p++;
            }
            if (*p == '"') p++;
        } else
            while (*p && *p != ',' && *p != '\n') { if (k + 1 < sizeof buf) buf[k++] = *p; p++; }
        buf[k] = 0;
        r->f[r->n++] = strdup(buf);
        if (*p == ',') { p++; if ((!*p || *p == '\n') && r->n < 128) r->f[r->n++] = strdup(""); }
    }
    return r->n;
}

static int cmp_row(const void *a, const void *b) {
    const csv_row *x = a, *y = b;
    if (x->ok != y->ok) return x->ok - y->ok;
    if (x->qc != y->qc) return x->qc < y->qc ? 1 : -1;
    return strcmp(x->f[0], y->f[0]);
}

static void put_csv_field(FILE *f, const char *s, int quote) {
    if (!quote) { fputs(s, f); return; }
    fputc('"', f);
    for (; *s; s++) { if (*s == '"') fputc('"', f); fputc(*s, f); }
    fputc('"', f);
}

/* I and N of a file named exactly summary.shard-I-of-N.csv (as vbseg infer
 * --shard I/N names them, 0 <= I < N); 0 for any other name. */
static int shard_name(const char *name, int *i, int *n) {
    int a, b, end = 0;
    char canon[256];
    if (sscanf(name, "summary.shard-%d-of-%d.csv%n", &a, &b, &end) != 2 || !end || name[end]) return 0;
    snprintf(canon, sizeof canon, "summary.shard-%d-of-%d.csv", a, b);
    if (strcmp(canon, name) || a < 0 || a >= b) return 0;
    *i = a;
    *n = b;
    return 1;
}

static int cmp_int(const void *a, const void *b) { int x = *(const int *)a, y = *(const int *)b; return (x > y) - (x < y); }

/* One warning line naming the shards of N that are missing: the indices not
 * among the sorted have[nh]; at most 8 named. */
static void warn_missing(const int *have, int nh, int N) {
    char idx[256] = "", names[1024] = "";
    size_t ki = 0, kn = 0;
    int listed = 0, expect = 0;
    for (int h = 0; h <= nh && listed < 8; h++) {
        int next = h < nh ? have[h] : N;
        for (int m = expect; m < next && listed < 8; m++, listed++) {
            ki += (size_t)snprintf(idx + ki, sizeof idx - ki, "%s%d", listed ? ", " : "", m);
            kn += (size_t)snprintf(names + kn, sizeof names - kn, "%ssummary.shard-%d-of-%d.csv", listed ? ", " : "", m, N);
        }
        expect = next + 1;
    }
    if (N - nh > listed) {
        snprintf(idx + ki, sizeof idx - ki, ", ... (%d in all)", N - nh);
        snprintf(names + kn, sizeof names - kn, ", ...");
    }
    fprintf(stderr, "vbseg eval: warning: shards %s of %d missing: %s; the merged summary is partial\n", idx, N, names);
}

/* the summary's text columns (quoted in CSV, strings in JSON); the others are numbers */
static int text_column(const char *name) {
    return !strcmp(name, "case") || !strcmp(name, "status") || !strcmp(name, "error") || !strcmp(name, "notes") || !strcmp(name, "qc_flag");
}

typedef struct { int pass; const csv_row *head, *rows; int nr; } merged;

/* The merged rows as CSV (pass 0) or JSON (pass 1) into f. */
static void put_merged(FILE *f, const void *user) {
    const merged *m = user;
    int pass = m->pass, nr = m->nr;
    const csv_row *head = m->head, *rows = m->rows;
    if (!pass) {
        for (int k = 0; k < head->n; k++) { fputs(k ? "," : "", f); fputs(head->f[k], f); }
        fputc('\n', f);
        for (int i = 0; i < nr; i++) {
            for (int k = 0; k < rows[i].n; k++) {
                fputs(k ? "," : "", f);
                put_csv_field(f, rows[i].f[k], k < head->n && text_column(head->f[k]) && strcmp(head->f[k], "status") && strcmp(head->f[k], "qc_flag"));
            }
            fputc('\n', f);
        }
        return;
    }
    fprintf(f, "[\n");
    for (int i = 0; i < nr; i++) {
        fprintf(f, "  {");
        for (int k = 0; k < head->n && k < rows[i].n; k++) {
            const char *v = rows[i].f[k];
            char *end;
            double num = strtod(v, &end);
            int text = text_column(head->f[k]), numeric = *v && !*end && !text;
            fprintf(f, "%s\"%s\": ", k ? ", " : "", head->f[k]);
            if (numeric && isfinite(num)) fputs(v, f);
            else if (!*v && !text) fputs("null", f);
            else {
                fputc('"', f);
                for (const char *s = v; *s; s++) { if (*s == '"' || *s == '\\') fputc('\\', f); fputc(*s, f); }
                fputc('"', f);
            }
        }
        fprintf(f, "}%s\n", i + 1 < nr ? "," : "");
    }
    fprintf(f, "]\n");
}

int cli_merge(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) { cli_error("eval", "%s: not a readable folder", dir); return 1; }
    char **files = NULL;
    int nf = 0, rc = 0, *idx = NULL, N = 0, nr = 0;
    csv_row head = {0}, *rows = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, "summary.shard-", 14) || l < 5 || strcmp(e->d_name + l - 4, ".csv")) continue;
        int i, n;
        if (!shard_name(e->d_name, &i, &n)) {
            fprintf(stderr, "vbseg eval: warning: %s/%s: not named summary.shard-I-of-N.csv with 0 <= I < N; ignored\n", dir, e->d_name);
            continue;
        }
        char **t = realloc(files, sizeof *t * (size_t)(nf + 1));
        if (t) files = t;
        if (!t || !(files[nf] = strdup(e->d_name))) { cli_error("eval", "out of memory"); rc = 1; break; }
        nf++;
    }
    closedir(d);
    if (!nf && !rc) { cli_error("eval", "%s: no summary.shard-I-of-N.csv files", dir); rc = 1; }
    if (rc) goto out;
    qsort(files, (size_t)nf, sizeof *files, cmp_str);
    /* one run's shards only: all of one N; then say which of them are missing */
    if (!(idx = malloc(sizeof *idx * (size_t)nf))) { cli_error("eval", "out of memory"); rc = 1; goto out; }
    shard_name(files[0], &idx[0], &N);
    for (int k = 1; k < nf; k++) {
        int n;
        shard_name(files[k], &idx[k], &n);
        if (n != N) {
            cli_error("eval", "%s/%s: a shard of %d, but %s is a shard of %d (shards of different runs); nothing merged", dir, files[k], n, files[0], N);
            rc = 1;
            goto out;
        }
    }
    qsort(idx, (size_t)nf, sizeof *idx, cmp_int);
    if (nf < N) warn_missing(idx, nf, N);
    for (int i = 0; i < nf; i++) {
        char p[4096], line[16384];
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        FILE *f = fopen(p, "r");
        if (!f || !fgets(line, sizeof line, f)) { cli_error("eval", "%s: unreadable", p); rc = 1; if (f) fclose(f); continue; }
        csv_row h;
        split_csv(line, &h);
        if (!head.n) head = h;
        else {
            int same = h.n == head.n;
            for (int k = 0; same && k < h.n; k++) same = !strcmp(h.f[k], head.f[k]);
            for (int k = 0; k < h.n; k++) free(h.f[k]);
            if (!same) { cli_error("eval", "%s: columns differ from the other shards", p); rc = 1; fclose(f); continue; }
        }
        while (fgets(line, sizeof line, f)) {
            csv_row *t = realloc(rows, sizeof *t * (size_t)(nr + 1));
            if (!t) break;
            rows = t;
            csv_row *r = &rows[nr++];
            split_csv(line, r);
            r->ok = r->n > 1 && !strcmp(r->f[1], "ok");
            r->qc = 0;
            for (int k = 0; k < head.n && k < r->n; k++)
                if (!strcmp(head.f[k], "qc_mean_mi")) r->qc = atof(r->f[k]);
        }
        fclose(f);
    }
    if (rows) qsort(rows, (size_t)nr, sizeof *rows, cmp_row);
    int n_ok = 0, rank_col = -1, flag_col = -1;
    for (int i = 0; i < nr; i++) n_ok += rows[i].ok;
    for (int k = 0; k < head.n; k++) {
        if (!strcmp(head.f[k], "qc_rank")) rank_col = k;
        if (!strcmp(head.f[k], "qc_flag")) flag_col = k;
    }
    for (int i = 0, rank = 0; i < nr; i++) {
        csv_row *r = &rows[i];
        if (!r->ok || rank_col < 0 || flag_col < 0 || r->n <= flag_col) continue;
        rank++;
        double maxcv = 0;
        for (int k = 0; k < head.n && k < r->n; k++) {
            size_t l = strlen(head.f[k]);
            if (l > 3 && !strcmp(head.f[k] + l - 3, "_cv")) maxcv = fmax(maxcv, atof(r->f[k]));
        }
        char num[32];
        snprintf(num, sizeof num, "%d", rank);
        free(r->f[rank_col]);
        r->f[rank_col] = strdup(num);
        free(r->f[flag_col]);
        r->f[flag_col] = strdup(qc_review(r->qc, maxcv, rank, n_ok) ? "review" : "ok");
    }
    for (int pass = 0; pass < 2 && !rc; pass++) {
        char p[4096];
        merged m = {pass, &head, rows, nr};
        snprintf(p, sizeof p, "%s/summary.%s", dir, pass ? "json" : "csv");
        if (!save_stream(p, put_merged, &m)) rc = 1;
    }
    if (!rc) printf("merged %d shard summar%s: %d cases into %s/summary.csv and summary.json\n", nf, nf == 1 ? "y" : "ies", nr, dir);
out:
    for (int i = 0; i < nr; i++)
        for (int k = 0; k < rows[i].n; k++) free(rows[i].f[k]);
    for (int k = 0; k < head.n; k++) free(head.f[k]);
    for (int i = 0; i < nf; i++) free(files[i]);
    free(rows);
    free(files);
    free(idx);
    return rc;
}
