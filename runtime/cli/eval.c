/*
 * eval.c: `vbseg eval`: segmentation quality against reference labels
 * (Dice, IoU, 95th-percentile Hausdorff distance per case and per label or
 * BraTS region, with means and standard deviations), and the quality of the
 * uncertainty where maps are present: the AUROC of voxel-wise uncertainty
 * for finding wrong voxels, and the expected calibration error of the mean
 * probabilities. `--merge` joins the summaries of `vbseg infer --shard`.
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static const char *help =
    "usage: vbseg eval --pred DIR --truth DIR [--labels auto|brats2018|brats2023|values] [--uncertainty epistemic|entropy]\n"
    "                  [--out FILE.csv]\n"
    "       vbseg eval --merge DIR\n"
    "\n"
    "For every DIR/CASE.nii.gz written by vbseg infer, finds the reference labels as\n"
    "TRUTH/CASE.nii.gz, CASE_seg, CASE-seg, or CASE/CASE_seg (.nii or .nii.gz) and reports\n"
    "Dice, IoU and HD95 (in the file's units, the larger of the two directed 95th\n"
    "percentiles of surface distances; nan where one side is empty) per label and,\n"
    "for BraTS labels, per region (WT, TC, ET); with CASE_epistemic (or _entropy) the\n"
    "AUROC of the uncertainty for detecting wrong voxels, and with\n"
    "CASE_probabilities the expected calibration error (15 bins), both over the voxels\n"
    "that either side labels. Writes a CSV (per case, then mean and sd rows; default\n"
    "PRED/eval.csv) and prints a table.\n"
    "--merge DIR joins DIR/summary.shard-I-of-N.csv into DIR/summary.csv and .json.\n";

#define MAXR 16

typedef struct { int n; char name[MAXR][32]; int nv[MAXR]; int v[MAXR][4]; } regions;

static int in_region(const regions *r, int k, int value) {
    for (int j = 0; j < r->nv[k]; j++)
        if (r->v[k][j] == value) return 1;
    return 0;
}

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

typedef struct { float u; char wrong; } uv;

static int cmp_uv(const void *a, const void *b) {
    float x = ((const uv *)a)->u, y = ((const uv *)b)->u;
    return (x > y) - (x < y);
}

/* AUROC of u for separating wrong (positive) from right voxels, ties counted half */
static double auroc(uv *s, int64_t n) {
    int64_t pos = 0;
    for (int64_t i = 0; i < n; i++) pos += s[i].wrong;
    if (!pos || pos == n) return NAN;
    qsort(s, (size_t)n, sizeof(uv), cmp_uv);
    double rank_sum = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        while (j < n && s[j].u == s[i].u) j++;
        double avg = 0.5 * (double)(i + 1 + j); /* average rank of the tie block (1-based) */
        for (int64_t k = i; k < j; k++)
            if (s[k].wrong) rank_sum += avg;
        i = j;
    }
    double neg = (double)(n - pos);
    return (rank_sum - (double)pos * ((double)pos + 1) / 2) / ((double)pos * neg);
}

static int file_exists(const char *p) { struct stat s; return !stat(p, &s) && S_ISREG(s.st_mode); }

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

int cli_merge(const char *dir); /* below */

int cmd_eval(int argc, char **argv) {
    const char *pred = NULL, *truth = NULL, *labels = "auto", *unc = "epistemic", *outp = NULL, *merge = NULL;
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
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 8 || strcmp(e->d_name + l - 7, ".nii.gz")) continue;
        char stem[512];
        snprintf(stem, sizeof stem, "%.*s", (int)(l - 7), e->d_name);
        if (is_map_suffix(stem)) continue;
        if (n == cap) { cap = cap ? 2 * cap : 64; char **t = realloc(ids, sizeof *t * (size_t)cap); if (!t) break; ids = t; }
        ids[n++] = strdup(stem);
    }
    closedir(d);
    if (!n) { cli_error("eval", "%s: no CASE.nii.gz label files", pred); free(ids); return 1; }
    qsort(ids, (size_t)n, sizeof *ids, cmp_str);
    /* regions: from the first case's values when auto */
    regions R = {0};
    int et = !strcmp(labels, "brats2023") ? 3 : !strcmp(labels, "brats2018") ? 4 : 0;
    char path[4096], err[512];
    int rc = 0;
    int values_seen[256] = {0};
    for (int c = 0; c < n; c++) {
        if (!find_truth(truth, ids[c], path, sizeof path)) continue;
        vbs_volume *t;
        if (vbs_volume_read_nifti(path, &t, err, sizeof err)) continue;
        int64_t dd[4];
        vbs_volume_dims(t, dd);
        const float *tv = vbs_volume_data(t);
        for (int64_t i = 0; i < dd[0] * dd[1] * dd[2]; i++) {
            int v = (int)tv[i];
            if (v > 0 && v < 256) values_seen[v] = 1;
        }
        vbs_volume_free(t);
    }
    if (!strcmp(labels, "auto")) et = values_seen[4] ? 4 : (values_seen[3] && values_seen[1] && values_seen[2] ? 0 : 0);
    for (int v = 1; v < 256 && R.n < MAXR - 3; v++)
        if (values_seen[v] || (et && (v == 1 || v == 2 || v == et))) {
            snprintf(R.name[R.n], sizeof R.name[0], "label%d", v);
            R.v[R.n][0] = v;
            R.nv[R.n++] = 1;
        }
    if (et) {
        static const char *const names[3] = {"wt", "tc", "et"};
        int sets[3][3] = {{1, 2, et}, {1, et, 0}, {et, 0, 0}}, cnt[3] = {3, 2, 1};
        for (int r = 0; r < 3; r++) {
            snprintf(R.name[R.n], sizeof R.name[0], "%s", names[r]);
            memcpy(R.v[R.n], sets[r], sizeof sets[r]);
            R.nv[R.n++] = cnt[r];
        }
    }
    FILE *csv = NULL;
    char out_path[4096];
    snprintf(out_path, sizeof out_path, "%s", outp ? outp : "");
    if (!outp) snprintf(out_path, sizeof out_path, "%s/eval.csv", pred);
    char tmp_path[4200];
    snprintf(tmp_path, sizeof tmp_path, "%s.tmp", out_path);
    csv = fopen(tmp_path, "w");
    if (!csv) { cli_error("eval", "%s: cannot write", tmp_path); goto out; }
    fprintf(csv, "case");
    for (int r = 0; r < R.n; r++) fprintf(csv, ",dice_%s,iou_%s,hd95_%s", R.name[r], R.name[r], R.name[r]);
    fprintf(csv, ",auroc_%s,ece\n", unc);
    double sum[MAXR][3] = {{0}}, sum2[MAXR][3] = {{0}}, su[2] = {0}, su2[2] = {0};
    int cnt[MAXR][3] = {{0}}, cu[2] = {0}, evaluated = 0;
    for (int c = 0; c < n; c++) {
        vbs_volume *p = NULL, *t = NULL, *u = NULL, *pr = NULL;
        char tp[4096];
        snprintf(path, sizeof path, "%s/%s.nii.gz", pred, ids[c]);
        if (!find_truth(truth, ids[c], tp, sizeof tp)) { fprintf(stderr, "vbseg eval: %s: no reference labels in %s\n", ids[c], truth); rc = 1; continue; }
        if (vbs_volume_read_nifti(path, &p, err, sizeof err) || vbs_volume_read_nifti(tp, &t, err, sizeof err)) {
            fprintf(stderr, "vbseg eval: %s\n", err);
            rc = 1;
            vbs_volume_free(p);
            continue;
        }
        char why[256];
        if (!vbs_volume_same_geometry(t, p, why, sizeof why)) {
            fprintf(stderr, "vbseg eval: %s: prediction and reference differ: %s\n", ids[c], why);
            rc = 1;
            vbs_volume_free(p); vbs_volume_free(t);
            continue;
        }
        int64_t dd[4];
        vbs_volume_dims(t, dd);
        int64_t nv = dd[0] * dd[1] * dd[2];
        double sp[3];
        vbs_volume_spacing(t, sp);
        const float *pv = vbs_volume_data(p), *tv = vbs_volume_data(t);
        unsigned char *a = malloc((size_t)nv), *b = malloc((size_t)nv);
        if (!a || !b) { free(a); free(b); vbs_volume_free(p); vbs_volume_free(t); rc = 1; continue; }
        fprintf(csv, "%s", ids[c]);
        for (int r = 0; r < R.n; r++) {
            int64_t na = 0, nb = 0, both = 0;
            for (int64_t i = 0; i < nv; i++) {
                a[i] = (unsigned char)in_region(&R, r, (int)pv[i]);
                b[i] = (unsigned char)in_region(&R, r, (int)tv[i]);
                na += a[i]; nb += b[i]; both += a[i] & b[i];
            }
            double dice = na + nb ? 2.0 * (double)both / (double)(na + nb) : 1.0;
            double iou = na + nb - both ? (double)both / (double)(na + nb - both) : 1.0;
            double h = hd95(a, b, dd, sp), m3[3] = {dice, iou, h};
            fprintf(csv, ",%.6f,%.6f,%.4f", dice, iou, h);
            for (int q = 0; q < 3; q++)
                if (!isnan(m3[q])) { sum[r][q] += m3[q]; sum2[r][q] += m3[q] * m3[q]; cnt[r][q]++; }
        }
        /* uncertainty quality over the voxels either side labels */
        double au = NAN, ece = NAN;
        snprintf(path, sizeof path, "%s/%s_%s.nii.gz", pred, ids[c], unc);
        if (file_exists(path) && !vbs_volume_read_nifti(path, &u, err, sizeof err)) {
            const float *uu = vbs_volume_data(u);
            uv *sv = malloc(sizeof(uv) * (size_t)nv);
            int64_t k = 0;
            for (int64_t i = 0; sv && i < nv; i++)
                if (pv[i] != 0 || tv[i] != 0) { sv[k].u = uu[i]; sv[k++].wrong = pv[i] != tv[i]; }
            if (sv) au = auroc(sv, k);
            free(sv);
        }
        snprintf(path, sizeof path, "%s/%s_probabilities.nii.gz", pred, ids[c]);
        if (file_exists(path) && !vbs_volume_read_nifti(path, &pr, err, sizeof err)) {
            int64_t pd[4];
            vbs_volume_dims(pr, pd);
            const float *pp = vbs_volume_data(pr);
            double bc[15] = {0}, bacc[15] = {0}, bconf[15] = {0}, tot = 0;
            for (int64_t i = 0; i < nv && pd[0] * pd[1] * pd[2] == nv; i++) {
                if (pv[i] == 0 && tv[i] == 0) continue;
                float conf = 0;
                for (int64_t q = 0; q < pd[3]; q++) conf = fmaxf(conf, pp[q * nv + i]);
                int bin = (int)(conf * 15);
                if (bin > 14) bin = 14;
                if (bin < 0) bin = 0;
                bc[bin]++;
                bacc[bin] += pv[i] == tv[i];
                bconf[bin] += conf;
                tot++;
            }
            if (tot > 0) {
                ece = 0;
                for (int q = 0; q < 15; q++)
                    if (bc[q] > 0) ece += bc[q] / tot * fabs(bacc[q] / bc[q] - bconf[q] / bc[q]);
            }
        }
        fprintf(csv, ",%.6f,%.6f\n", au, ece);
        double um[2] = {au, ece};
        for (int q = 0; q < 2; q++)
            if (!isnan(um[q])) { su[q] += um[q]; su2[q] += um[q] * um[q]; cu[q]++; }
        evaluated++;
        free(a); free(b);
        vbs_volume_free(p); vbs_volume_free(t); vbs_volume_free(u); vbs_volume_free(pr);
    }
    /* mean and sd rows, and the table */
    printf("%d case%s evaluated\n%-12s %16s %16s %18s\n", evaluated, evaluated == 1 ? "" : "s", "region", "dice", "iou", "hd95");
    for (int row = 0; row < 2; row++) {
        fprintf(csv, "%s", row ? "sd" : "mean");
        for (int r = 0; r < R.n; r++)
            for (int q = 0; q < 3; q++) {
                double m = cnt[r][q] ? sum[r][q] / cnt[r][q] : NAN, sd = cnt[r][q] ? sqrt(fmax(0, sum2[r][q] / cnt[r][q] - m * m)) : NAN;
                fprintf(csv, ",%.6f", row ? sd : m);
            }
        for (int q = 0; q < 2; q++) {
            double m = cu[q] ? su[q] / cu[q] : NAN, sd = cu[q] ? sqrt(fmax(0, su2[q] / cu[q] - m * m)) : NAN;
            fprintf(csv, ",%.6f", row ? sd : m);
        }
        fprintf(csv, "\n");
    }
    for (int r = 0; r < R.n; r++) {
        printf("%-12s", R.name[r]);
        for (int q = 0; q < 3; q++) {
            double m = cnt[r][q] ? sum[r][q] / cnt[r][q] : NAN, sd = cnt[r][q] ? sqrt(fmax(0, sum2[r][q] / cnt[r][q] - m * m)) : NAN;
            printf(" %8.4f +- %-6.4f", m, sd);
        }
        printf("\n");
    }
    printf("auroc (%s, wrong voxels): %.4f   ece: %.4f\n", unc, cu[0] ? su[0] / cu[0] : NAN, cu[1] ? su[1] / cu[1] : NAN);
    int bad = ferror(csv) | fflush(csv) | fsync(fileno(csv));
    if (fclose(csv) || bad || rename(tmp_path, out_path)) { cli_error("eval", "%s: cannot write", out_path); unlink(tmp_path); rc = 1; }
    else printf("wrote %s\n", out_path);
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
        if (*p == ',') { p++; if (!*p || *p == '\n') r->f[r->n++] = strdup(""); }
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

int cli_merge(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) { cli_error("eval", "%s: not a readable folder", dir); return 1; }
    char **files = NULL;
    int nf = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "summary.shard-", 14) || strlen(e->d_name) < 5 || strcmp(e->d_name + strlen(e->d_name) - 4, ".csv")) continue;
        char **t = realloc(files, sizeof *t * (size_t)(nf + 1));
        if (!t) break;
        files = t;
        files[nf++] = strdup(e->d_name);
    }
    closedir(d);
    if (!nf) { cli_error("eval", "%s: no summary.shard-*.csv files", dir); free(files); return 1; }
    qsort(files, (size_t)nf, sizeof *files, cmp_str);
    csv_row head = {0}, *rows = NULL;
    int nr = 0, rc = 0;
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
    qsort(rows, (size_t)nr, sizeof *rows, cmp_row);
    int n_ok = 0, rank_col = -1, flag_col = -1;
    for (int i = 0; i < nr; i++) n_ok += rows[i].ok;
    for (int k = 0; k < head.n; k++) {
        if (!strcmp(head.f[k], "qc_rank")) rank_col = k;
        if (!strcmp(head.f[k], "qc_flag")) flag_col = k;
    }
    int review = (n_ok + 3) / 4;
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
        r->f[flag_col] = strdup(rank <= review || maxcv > 0.1 ? "review" : "ok");
    }
    char p[4096], tmp[4200];
    for (int pass = 0; pass < 2 && !rc; pass++) {
        snprintf(p, sizeof p, "%s/summary.%s", dir, pass ? "json" : "csv");
        snprintf(tmp, sizeof tmp, "%s.tmp", p);
        FILE *f = fopen(tmp, "w");
        if (!f) { cli_error("eval", "%s: cannot write", tmp); rc = 1; break; }
        if (!pass) {
            for (int k = 0; k < head.n; k++) { fputs(k ? "," : "", f); fputs(head.f[k], f); }
            fputc('\n', f);
            for (int i = 0; i < nr; i++) {
                for (int k = 0; k < rows[i].n; k++) { fputs(k ? "," : "", f); put_csv_field(f, rows[i].f[k], k == 0 || k == 2); }
                fputc('\n', f);
            }
        } else {
            fprintf(f, "[\n");
            for (int i = 0; i < nr; i++) {
                fprintf(f, "  {");
                for (int k = 0; k < head.n && k < rows[i].n; k++) {
                    const char *v = rows[i].f[k];
                    char *end;
                    double num = strtod(v, &end);
                    int numeric = *v && !*end && k != 0 && k != 2;
                    fprintf(f, "%s\"%s\": ", k ? ", " : "", head.f[k]);
                    if (numeric && isfinite(num)) fputs(v, f);
                    else if (!*v && k > 2) fputs("null", f);
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
        int bad = ferror(f) | fflush(f) | fsync(fileno(f));
        if (fclose(f) || bad || rename(tmp, p)) { cli_error("eval", "%s: cannot write", p); unlink(tmp); rc = 1; }
    }
    if (!rc) printf("merged %d shard summar%s: %d cases into %s/summary.csv and summary.json\n", nf, nf == 1 ? "y" : "ies", nr, dir);
    for (int i = 0; i < nr; i++)
        for (int k = 0; k < rows[i].n; k++) free(rows[i].f[k]);
    for (int k = 0; k < head.n; k++) free(head.f[k]);
    for (int i = 0; i < nf; i++) free(files[i]);
    free(rows);
    free(files);
    return rc;
}
