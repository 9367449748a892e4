/*
 * infer.c: `vbseg infer`: Monte-Carlo inference over a folder of scans.
 * Finds the cases (cases.c), matches their files to the model card's
 * channels, checks that the channels agree in shape and affine, runs the
 * samples (any size: the session pads and crops), writes the maps with
 * the input's geometry, and keeps summary.csv/summary.json and a manifest
 * up to date after every case. A bad case gets one row with its error and
 * no output files; the run goes on and exits non-zero at the end. Every
 * file is written atomically, so a killed run leaves only complete files,
 * and a re-run skips the cases its manifest records as done with the same
 * model and options.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cases.h"
#include "crop.h"
#include "cli.h"

static const char *help =
    "usage: vbseg infer --model M --input DIR --output DIR [--layout auto|nnunet|brats2021|brats2023|flat]\n"
    "                   [--samples 20] [--seed 0] [--mode sample|mean] [--threads T] [--save-probabilities]\n"
    "                   [--overlap 0.5] [--no-png] [--no-crop] [--adaptive TOL] [--remap contiguous|brats]\n"
    "                   [--shard I/N] [--overwrite] [--quiet] [--preview-max X]\n"
    "\n"
    "Runs every case of DIR and writes, per case, to the output folder:\n"
    "  CASE.nii.gz                labels in the model card's label values (--remap contiguous:\n"
    "                             class indices; --remap brats: 3 written as 4)\n"
    "  CASE_entropy.nii.gz        predictive entropy (nats)\n"
    "  CASE_epistemic.nii.gz      mutual information (epistemic)\n"
    "  CASE_aleatoric.nii.gz      expected entropy (aleatoric)\n"
    "  CASE_regions.nii.gz        BraTS-convention models: P(WT), P(TC), P(ET)\n"
    "  CASE_probabilities.nii.gz  with --save-probabilities: the mean class probabilities\n"
    "  CASE_preview.png           slices through the lesion: scan, labels, MI heat map (--no-png: none;\n"
    "                             --preview-max X: the MI colour bar's top, else each case's max)\n"
    "and summary.csv / summary.json (one row per case, the most uncertain first) and\n"
    "manifest.tsv (what is done, for re-runs). A 3D model runs in sliding windows of its\n"
    "card's patch size, neighbours sharing --overlap of a patch, blended with Gaussian\n"
    "weights. --adaptive TOL stops a case's sampling once its mutual-information map\n"
    "changes by less than TOL (nats, largest voxel) between blocks of 5 samples.\n"
    "The network sees only the box around the voxels non-zero in any channel (the\n"
    "skull-stripped brain); outside it the maps are background with zero uncertainty\n"
    "(--no-crop: the whole volume).\n"
    "Layouts are detected (see the README);\n"
    "channels are matched to the model card's names. --shard I/N takes every N-th case\n"
    "from the I-th (0-based) and names its summaries and manifest .shard-I-of-N.\n"
    "A re-run skips the cases done with the same model and options (--overwrite redoes\n"
    "them). Exit status 1 if any case failed.\n";

typedef struct {
    char id[256];
    int ok;
    char error[512];
    double seconds;
    int samples;
    int n_cols;
    double vol[16], cv[16], mi[16];   /* per label or region */
    double qc;                        /* mean MI over the predicted foreground */
    double peak_mb;                   /* the process's peak resident memory after this case */
    char row[2048];                   /* the CSV columns after case,status,error (from a manifest) */
} result;

typedef struct {
    int n;
    char name[16][64];
    int n_values[16];
    int values[16][4];                /* label values making up each column */
} columns;

static uint64_t fnv(const char *path) {
    FILE *f = fopen(path, "rb");
    uint64_t h = 1469598103934665603ull;
    if (!f) return 0;
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < n; i++) h = (h ^ buf[i]) * 1099511628211ull;
    fclose(f);
    return h;
}

static void sanitize(const char *in, char *out, size_t n) {
    size_t k = 0;
    for (; *in && k + 1 < n; in++) {
        char c = *in;
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        out[k++] = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ? c : '_';
    }
    out[k] = 0;
}

/* columns: every non-background label, then WT/TC/ET for BraTS conventions */
static void make_columns(const vbs_card *card, columns *c) {
    memset(c, 0, sizeof *c);
    for (int i = 1; i < card->n_labels && c->n < 12; i++) {
        sanitize(card->labels[i].name && card->labels[i].name[0] ? card->labels[i].name : "label", c->name[c->n], sizeof c->name[0]);
        c->values[c->n][0] = card->labels[i].value;
        c->n_values[c->n++] = 1;
    }
    if (card->n_labels == 0) { snprintf(c->name[0], sizeof c->name[0], "foreground"); c->values[0][0] = 1; c->n_values[0] = 1; c->n = 1; }
    int et = card->label_convention == VBS_LABELS_BRATS_2018 ? 4 : card->label_convention == VBS_LABELS_BRATS_2023 ? 3 : 0;
    if (et) {
        static const char *const names[3] = {"wt", "tc", "et"};
        int sets[3][3] = {{1, 2, et}, {1, et, -1}, {et, -1, -1}};
        for (int r = 0; r < 3; r++) {
            snprintf(c->name[c->n], sizeof c->name[0], "%s", names[r]);
            int k = 0;
            for (int j = 0; j < 3; j++)
                if (sets[r][j] >= 0) c->values[c->n][k++] = sets[r][j];
            c->n_values[c->n++] = k;
        }
    }
}

static int in_column(const columns *c, int col, int value) {
    for (int j = 0; j < c->n_values[col]; j++)
        if (c->values[col][j] == value) return 1;
    return 0;
}

static void csv_header(FILE *f, const columns *c) {
    fprintf(f, "case,status,error,seconds,samples,peak_mb,qc_rank,qc_flag,qc_mean_mi");
    for (int i = 0; i < c->n; i++) fprintf(f, ",%s_ml,%s_cv,%s_mean_mi", c->name[i], c->name[i], c->name[i]);
    fprintf(f, "\n");
}

static void csv_escape(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s == '\n' ? ' ' : *s, f);
    }
    fputc('"', f);
}

static void json_escape(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

/* the numeric part of a row: seconds,samples then per column vol,cv,mi */
static void row_numbers(const result *r, const columns *c, char *out, size_t n) {
    int k = snprintf(out, n, "%.3f,%d,%.0f", r->seconds, r->samples, r->peak_mb);
    for (int i = 0; i < c->n && k < (int)n; i++) k += snprintf(out + k, n - (size_t)k, ",%.4f,%.4f,%.6f", r->vol[i], r->cv[i], r->mi[i]);
    k += snprintf(out + k, n - (size_t)k, ",%.6f", r->qc);
}

static int parse_numbers(result *r, const columns *c, const char *row) {
    const char *p = row;
    char *e;
    r->seconds = strtod(p, &e); if (*e != ',') return 0; p = e + 1;
    r->samples = (int)strtol(p, &e, 10); if (*e != ',') return 0; p = e + 1;
    r->peak_mb = strtod(p, &e); if (*e != ',') return 0; p = e + 1;
    for (int i = 0; i < c->n; i++) {
        r->vol[i] = strtod(p, &e); if (*e != ',') return 0; p = e + 1;
        r->cv[i] = strtod(p, &e); if (*e != ',') return 0; p = e + 1;
        r->mi[i] = strtod(p, &e); if (*e != ',') return 0; p = e + 1;
    }
    r->qc = strtod(p, &e);
    return *e == 0 || *e == '\n';
}

typedef struct { const result *r; int n; const columns *c; } report;

static int cmp_result(const void *a, const void *b) {
    const result *x = *(const result *const *)a, *y = *(const result *const *)b;
    if (x->ok != y->ok) return x->ok - y->ok; /* failures first */
    if (x->qc != y->qc) return x->qc < y->qc ? 1 : -1;
    return strcmp(x->id, y->id);
}

/* The report's order (failures first, then the most uncertain) and how many
 * of the successful cases to flag for review: the most uncertain quarter. */
static const result **ranked(const report *rp, int *review) {
    const result **order = malloc(sizeof *order * (size_t)(rp->n + 1));
    if (!order) return NULL;
    for (int i = 0; i < rp->n; i++) order[i] = &rp->r[i];
    qsort(order, (size_t)rp->n, sizeof *order, cmp_result);
    int n_ok = 0;
    for (int i = 0; i < rp->n; i++) n_ok += rp->r[i].ok;
    *review = (n_ok + 3) / 4;
    return order;
}

static int flagged(const result *r, const columns *c, int rank, int review) {
    double maxcv = 0;
    for (int k = 0; k < c->n; k++) maxcv = fmax(maxcv, r->cv[k]);
    return rank <= review || maxcv > 0.1;
}

/* A stream on fd and the cases in report order; NULL when either fails. */
static FILE *open_report(int fd, const report *rp, const result ***order, int *review) {
    FILE *f = fdopen(dup(fd), "w");
    if (!f) return NULL;
    if (!(*order = ranked(rp, review))) { fclose(f); return NULL; }
    return f;
}

static vbs_status close_report(FILE *f, const result **order, char *err) {
    free(order);
    int bad = ferror(f);
    if (fclose(f) || bad) { snprintf(err, 512, "write failed"); return VBS_ERR_IO; }
    return VBS_OK;
}

static vbs_status write_csv(int fd, void *user, char *err) {
    const report *rp = user;
    const result **order;
    int review;
    FILE *f = open_report(fd, rp, &order, &review);
    if (!f) return VBS_ERR_IO;
    csv_header(f, rp->c);
    for (int i = 0, rank = 0; i < rp->n; i++) {
        const result *r = order[i];
        csv_escape(f, r->id);
        fprintf(f, ",%s,", r->ok ? "ok" : "error");
        csv_escape(f, r->error);
        if (!r->ok) { fprintf(f, ",,,,,,"); for (int k = 0; k < rp->c->n; k++) fprintf(f, ",,,"); fprintf(f, "\n"); continue; }
        rank++;
        fprintf(f, ",%.3f,%d,%.0f,%d,%s,%.6f", r->seconds, r->samples, r->peak_mb, rank, flagged(r, rp->c, rank, review) ? "review" : "ok", r->qc);
        for (int k = 0; k < rp->c->n; k++) fprintf(f, ",%.4f,%.4f,%.6f", r->vol[k], r->cv[k], r->mi[k]);
        fprintf(f, "\n");
    }
    return close_report(f, order, err);
}

static vbs_status write_json(int fd, void *user, char *err) {
    const report *rp = user;
    const result **order;
    int review;
    FILE *f = open_report(fd, rp, &order, &review);
    if (!f) return VBS_ERR_IO;
    fprintf(f, "[\n");
    for (int i = 0, rank = 0; i < rp->n; i++) {
        const result *r = order[i];
        fprintf(f, "  {\"case\": ");
        json_escape(f, r->id);
        fprintf(f, ", \"status\": \"%s\", \"error\": ", r->ok ? "ok" : "error");
        json_escape(f, r->error);
        if (r->ok) {
            rank++;
            fprintf(f, ", \"seconds\": %.3f, \"samples\": %d, \"peak_mb\": %.0f, \"qc_rank\": %d, \"qc_flag\": \"%s\", \"qc_mean_mi\": %.6f, \"regions\": {",
                    r->seconds, r->samples, r->peak_mb, rank, flagged(r, rp->c, rank, review) ? "review" : "ok", r->qc);
            for (int k = 0; k < rp->c->n; k++)
                fprintf(f, "%s\"%s\": {\"ml\": %.4f, \"cv\": %.4f, \"mean_mi\": %.6f}", k ? ", " : "", rp->c->name[k], r->vol[k], r->cv[k], r->mi[k]);
            fprintf(f, "}");
        }
        fprintf(f, "}%s\n", i + 1 < rp->n ? "," : "");
    }
    fprintf(f, "]\n");
    return close_report(f, order, err);
}

typedef struct { const char *header; const result *r; int n; const columns *c; } manifest;

static vbs_status write_manifest(int fd, void *user, char *err) {
    const manifest *mf = user;
    FILE *f = fdopen(dup(fd), "w");
    if (!f) return VBS_ERR_IO;
    fprintf(f, "%s\n", mf->header);
    for (int i = 0; i < mf->n; i++) {
        if (!mf->r[i].ok) continue; /* failures are retried */
        char nums[2048];
        row_numbers(&mf->r[i], mf->c, nums, sizeof nums);
        fprintf(f, "%s\tok\t%s\n", mf->r[i].id, nums);
    }
    int bad = ferror(f);
    if (fclose(f) || bad) { snprintf(err, 512, "write failed"); return VBS_ERR_IO; }
    return VBS_OK;
}

/* libvbseg's atomic writer (temporary file, fsync, rename; err holds 512 bytes) */
vbs_status vbs_atomic_write(const char *path, vbs_status (*fn)(int, void *, char *), void *user, char *err);

static void remove_outputs(const char *out, const char *id) {
    static const char *const suf[] = {"", "_entropy", "_epistemic", "_aleatoric", "_regions", "_probabilities", "_aleatoric_het", "_epistemic_het"};
    for (size_t i = 0; i < sizeof suf / sizeof suf[0]; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s%s.nii.gz", out, id, suf[i]);
        unlink(p);
    }
    char p[4096];
    snprintf(p, sizeof p, "%s/%s_preview.png", out, id);
    unlink(p);
}

static int outputs_exist(const char *out, const char *id, int regions, int probs, int png) {
    if (png) {
        char p[4096];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s_preview.png", out, id);
        if (stat(p, &sb) || sb.st_size == 0) return 0;
    }
    const char *suf[6] = {"", "_entropy", "_epistemic", "_aleatoric", regions ? "_regions" : NULL, probs ? "_probabilities" : NULL};
    for (int i = 0; i < 6; i++) {
        if (!suf[i]) continue;
        char p[4096];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s%s.nii.gz", out, id, suf[i]);
        if (stat(p, &sb) || sb.st_size == 0) return 0;
    }
    return 1;
}

typedef struct {
    const char *out;
    vbs_model *m;
    vbs_session *s;
    const columns *cols;
    vbs_mc_opts o;
    int probs, regions, png, remap, crop;
    float preview_max;                /* --preview-max; 0: each case's own max */
} runner;

/* One case, start to end; 0 and r->error on failure (nothing left behind). */
static int run_case(runner *R, layout lay, const scan_case *sc, result *r) {
    const vbs_card *card = vbs_model_card(R->m);
    vbs_value_info in;
    vbs_model_input(R->m, 0, &in);
    int C = in.dims[1] > 0 ? (int)in.dims[1] : card->n_channels;
    if (C < 1 || C > MAX_CHANNELS) { snprintf(r->error, sizeof r->error, "model takes %d channels", C); return 0; }
    /* which file holds each model channel */
    const char *file[MAX_CHANNELS] = {0};
    if (lay == LAYOUT_FLAT) file[0] = sc->n_files ? sc->files[0] : NULL;
    for (int c = 0; c < C && lay != LAYOUT_FLAT; c++) {
        int want = c;
        if (lay == LAYOUT_BRATS2021 || lay == LAYOUT_BRATS2023) {
            want = c < card->n_channels ? brats_channel_index(card->channels[c]) : c;
            if (want < 0) { snprintf(r->error, sizeof r->error, "model channel '%s' has no BraTS file name", card->channels[c]); return 0; }
        }
        for (int f = 0; f < sc->n_files; f++)
            if (sc->channel[f] == want) file[c] = sc->files[f];
        if (!file[c]) {
            snprintf(r->error, sizeof r->error, "missing channel %s", c < card->n_channels ? card->channels[c] : "?");
            return 0;
        }
    }
    for (int f = 0; f < sc->n_files && lay == LAYOUT_NNUNET; f++)
        if (sc->channel[f] >= C) {
            size_t k = strlen(r->error);
            snprintf(r->error + k, sizeof r->error - k, "%sextra channel file %s ignored", k ? "; " : "", sc->files[f]);
        }
    vbs_volume *vols[MAX_CHANNELS] = {0};
    float *x = NULL, *xbox = NULL, *full = NULL;
    int ok = 0, nfiles = lay == LAYOUT_FLAT ? 1 : C;
    char err[480];
    int64_t d0[4] = {0};
    for (int c = 0; c < nfiles; c++) {
        if (vbs_volume_read_nifti(file[c], &vols[c], err, sizeof err)) { snprintf(r->error, sizeof r->error, "%s", err); goto done; }
        int64_t d[4];
        vbs_volume_dims(vols[c], d);
        if (c == 0) memcpy(d0, d, sizeof d);
        char why[256];
        if (c && !vbs_volume_same_geometry(vols[0], vols[c], why, sizeof why)) {
            snprintf(r->error, sizeof r->error, "%s: %s (against %s)", file[c], why, file[0]);
            goto done;
        }
        if (lay != LAYOUT_FLAT && d[3] != 1) { snprintf(r->error, sizeof r->error, "%s: a 4D file where one channel is expected", file[c]); goto done; }
    }
    if (lay == LAYOUT_FLAT && d0[3] != C) {
        snprintf(r->error, sizeof r->error, "%s: %lld channel(s) along t, the model takes %d", file[0], (long long)d0[3], C);
        goto done;
    }
    int64_t nvox = d0[0] * d0[1] * d0[2];
    x = malloc(sizeof(float) * (size_t)(nvox * C));
    if (!x) { snprintf(r->error, sizeof r->error, "out of memory"); goto done; }
    for (int c = 0; c < nfiles; c++) memcpy(x + (int64_t)c * nvox, vbs_volume_data(vols[c]), sizeof(float) * (size_t)(nvox * (lay == LAYOUT_FLAT ? C : 1)));
    /* the network sees only the box around the non-zero voxels (found before
     * normalisation, which may move the background off zero) */
    box bx = {{0, 0, 0}, {d0[0], d0[1], d0[2]}};
    int cropped = R->crop && box_nonzero(x, C, d0, &bx) && box_voxels(&bx) < nvox;
    if (!cropped) bx = (box){{0, 0, 0}, {d0[0], d0[1], d0[2]}};
    vbs_normalize(card, x, C, nvox);
    const int64_t nbox = box_voxels(&bx);
    if (cropped) {
        xbox = malloc(sizeof(float) * (size_t)(nbox * C));
        if (!xbox) { snprintf(r->error, sizeof r->error, "out of memory"); goto done; }
        box_extract(x, C, d0, &bx, xbox);
    }
    int64_t shape[5] = {1, C, bx.hi[2] - bx.lo[2], bx.hi[1] - bx.lo[1], bx.hi[0] - bx.lo[0]};
    int nd = 5;
    if (in.ndim == 4 && shape[2] == 1) { shape[2] = shape[3]; shape[3] = shape[4]; nd = 4; }
    if (vbs_session_run_mc(R->s, cropped ? xbox : x, shape, nd, &R->o)) { snprintf(r->error, sizeof r->error, "%s", vbs_session_errmsg(R->s)); goto done; }
    const float *lab, *ent, *mi, *ale, *pm;
    vbs_map_info li, pi;
    vbs_session_map(R->s, VBS_MAP_LABELS, &lab, &li);
    vbs_session_map(R->s, VBS_MAP_ENTROPY, &ent, NULL);
    vbs_session_map(R->s, VBS_MAP_MUTUAL_INFO, &mi, NULL);
    vbs_session_map(R->s, VBS_MAP_EXPECTED_ENTROPY, &ale, NULL);
    vbs_session_map(R->s, VBS_MAP_PROB_MEAN, &pm, &pi);
    r->samples = (int)li.n_samples;
    int K = (int)pi.dims[0];
    const int softmax = !(card->output_activation == VBS_ACT_SIGMOID);
    float bg = card->n_labels ? (float)card->labels[0].value : 0.f;
    if (cropped) {
        /* outside the box: background, certain (p = 1 for class 0 of a softmax) */
        full = calloc((size_t)(nvox * (4 + K)), sizeof(float));
        if (!full) { snprintf(r->error, sizeof r->error, "out of memory"); goto done; }
        float *fl = full, *fe = full + nvox, *fm = full + 2 * nvox, *fa = full + 3 * nvox, *fp = full + 4 * nvox;
        for (int64_t v = 0; v < nvox; v++) fl[v] = bg;
        if (softmax && K > 1)
            for (int64_t v = 0; v < nvox; v++) fp[v] = 1.f;
        box_insert(lab, 1, d0, &bx, fl);
        box_insert(ent, 1, d0, &bx, fe);
        box_insert(mi, 1, d0, &bx, fm);
        box_insert(ale, 1, d0, &bx, fa);
        box_insert(pm, K, d0, &bx, fp);
        lab = fl; ent = fe; mi = fm; ale = fa; pm = fp;
    }
    float *lab_out = NULL;
    if (R->remap) {
        /* contiguous: the class index of each label value; brats: 0,1,2,3 -> 0,1,2,4 */
        lab_out = malloc(sizeof(float) * (size_t)nvox);
        if (!lab_out) { snprintf(r->error, sizeof r->error, "out of memory"); goto done; }
        for (int64_t v = 0; v < nvox; v++) {
            float val = lab[v];
            if (R->remap == 1)
                for (int k = 0; k < card->n_labels; k++) { if ((float)card->labels[k].value == val) { val = (float)k; break; } }
            else if (val == 3.f) val = 4.f;
            lab_out[v] = val;
        }
    }
    /* outputs, each atomic; on any failure none of this case's stays */
    int64_t d3[4] = {d0[0], d0[1], d0[2], 1};
    struct { const char *suffix; const float *data; int labels; int64_t t; } outs[6] = {
        {"", lab_out ? lab_out : lab, 1, 1}, {"_entropy", ent, 0, 1}, {"_epistemic", mi, 0, 1}, {"_aleatoric", ale, 0, 1}, {NULL, NULL, 0, 0}, {NULL, NULL, 0, 0}};
    float *regions = NULL;
    if (R->regions) {
        regions = calloc((size_t)(3 * nvox), sizeof(float));
        if (!regions) { snprintf(r->error, sizeof r->error, "out of memory"); goto done; }
        for (int col = R->cols->n - 3, rg = 0; rg < 3; col++, rg++)
            for (int k = 0; k < K && k < card->n_labels; k++)
                if (in_column(R->cols, col, card->labels[k].value))
                    for (int64_t v = 0; v < nvox; v++) regions[rg * nvox + v] += pm[k * nvox + v];
        outs[4].suffix = "_regions"; outs[4].data = regions; outs[4].t = 3;
    }
    if (R->probs) { outs[5].suffix = "_probabilities"; outs[5].data = pm; outs[5].t = K; }
    for (int i = 0; i < 6; i++) {
        if (!outs[i].suffix) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s%s.nii.gz", R->out, sc->id, outs[i].suffix);
        d3[3] = outs[i].t;
        if (vbs_volume_write_nifti(vols[0], path, outs[i].data, d3, outs[i].labels, err, sizeof err)) {
            snprintf(r->error, sizeof r->error, "%s", err);
            remove_outputs(R->out, sc->id);
            free(regions);
            free(lab_out);
            goto done;
        }
    }
    free(regions);
    free(lab_out);
    if (R->png) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s_preview.png", R->out, sc->id);
        preview_in pv = {sc->id, vbs_volume_data(vols[0]), lab, mi, {d0[0], d0[1], d0[2]}, {{0}}, 0, card, bg, R->preview_max};
        pv.affine_code = vbs_volume_affine(vols[0], pv.affine);
        if (!write_preview(path, &pv, err, sizeof err)) {
            snprintf(r->error, sizeof r->error, "%s", err);
            remove_outputs(R->out, sc->id);
            goto done;
        }
    }
    /* volumes per label/region and their spread across samples; MI inside them */
    const int64_t *counts;
    int64_t ns;
    int kc;
    double ml = vbs_volume_voxel_ml(vols[0]);
    if (!vbs_session_label_counts(R->s, &counts, &ns, &kc)) {
        for (int col = 0; col < R->cols->n; col++) {
            double s1 = 0, s2 = 0;
            for (int64_t i = 0; i < ns; i++) {
                double v = 0;
                for (int k = 0; k < kc; k++) {
                    int value = k < card->n_labels ? card->labels[k].value : k;
                    if (card->output_activation == VBS_ACT_SIGMOID && kc == 1) value = card->n_labels > 1 ? card->labels[1].value : 1;
                    /* the voxels outside the box are class 0 in every sample */
                    int64_t outside = k == 0 && softmax && kc > 1 ? nvox - nbox : 0;
                    if (in_column(R->cols, col, value)) v += (double)(counts[i * kc + k] + outside);
                }
                v *= ml;
                s1 += v;
                s2 += v * v;
            }
            double mean = ns ? s1 / (double)ns : 0, var = ns ? s2 / (double)ns - mean * mean : 0;
            r->vol[col] = mean;
            r->cv[col] = mean > 0 ? sqrt(var > 0 ? var : 0) / mean : 0;
        }
    }
    double fg_mi = 0;
    int64_t fg = 0;
    for (int col = 0; col < R->cols->n; col++) {
        double s = 0;
        int64_t n = 0;
        for (int64_t v = 0; v < nvox; v++)
            if (in_column(R->cols, col, (int)lab[v])) { s += mi[v]; n++; }
        r->mi[col] = n ? s / (double)n : 0;
    }
    for (int64_t v = 0; v < nvox; v++)
        if (lab[v] != bg) { fg_mi += mi[v]; fg++; }
    r->qc = fg ? fg_mi / (double)fg : 0;
    r->n_cols = R->cols->n;
    ok = 1;
done:
    for (int c = 0; c < nfiles; c++) vbs_volume_free(vols[c]);
    free(x);
    free(xbox);
    free(full);
    return ok;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int cmd_infer(int argc, char **argv) {
    const char *model = NULL, *input = NULL, *out = NULL;
    layout lay = LAYOUT_AUTO;
    long long samples = 20, seed = 0, threads = 0, shard_i = 0, shard_n = 1;
    double overlap = 0.5, adaptive = 0, preview_max = 0;
    int remap = 0; /* 0 keep the card's values, 1 contiguous class indices, 2 BraTS 2018 values (0,1,2,4) */
    int probs = 0, quiet = 0, overwrite = 0, png = 1, crop = 1;
    vbs_mode mode = VBS_MODE_SAMPLE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(help, stdout); return 0; }
        if (!strcmp(a, "--save-probabilities")) { probs = 1; continue; }
        if (!strcmp(a, "--quiet")) { quiet = 1; continue; }
        if (!strcmp(a, "--overwrite")) { overwrite = 1; continue; }
        if (!strcmp(a, "--no-png")) { png = 0; continue; }
        if (!strcmp(a, "--no-crop")) { crop = 0; continue; }
        if (!(v = cli_value("infer", argc, argv, &i))) return 2;
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--input")) input = v;
        else if (!strcmp(a, "--output")) out = v;
        else if (!strcmp(a, "--layout")) { if (!layout_parse(v, &lay)) { cli_error("infer", "--layout '%s' is not auto, nnunet, brats2021, brats2023 or flat", v); return 2; } }
        else if (!strcmp(a, "--samples")) { if (!cli_int("infer", a, v, 1, 100000, &samples)) return 2; }
        else if (!strcmp(a, "--seed")) { if (!cli_int("infer", a, v, 0, 0x7fffffffffffffffLL, &seed)) return 2; }
        else if (!strcmp(a, "--threads")) { if (!cli_int("infer", a, v, 0, 256, &threads)) return 2; }
        else if (!strcmp(a, "--adaptive")) {
            if (!cli_float("infer", a, v, &adaptive)) return 2;
            if (adaptive <= 0 || adaptive > 1) { cli_error("infer", "--adaptive %g is not in (0, 1] nats", adaptive); return 2; }
        } else if (!strcmp(a, "--remap")) {
            if (!strcmp(v, "contiguous")) remap = 1;
            else if (!strcmp(v, "brats")) remap = 2;
            else { cli_error("infer", "--remap must be contiguous or brats, not '%s'", v); return 2; }
        } else if (!strcmp(a, "--preview-max")) {
            if (!cli_float("infer", a, v, &preview_max)) return 2;
            if (!(preview_max > 0 && preview_max < 1e30)) { cli_error("infer", "--preview-max %g is not a positive number of nats", preview_max); return 2; }
        } else if (!strcmp(a, "--overlap")) {
            if (!cli_float("infer", a, v, &overlap)) return 2;
            if (overlap < 0 || overlap > 0.9) { cli_error("infer", "--overlap %g is not in 0..0.9", overlap); return 2; }
        }
        else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "sample")) mode = VBS_MODE_SAMPLE;
            else if (!strcmp(v, "mean")) mode = VBS_MODE_MEAN;
            else { cli_error("infer", "--mode must be sample or mean, not '%s'", v); return 2; }
        } else if (!strcmp(a, "--shard")) {
            if (sscanf(v, "%lld/%lld", &shard_i, &shard_n) != 2 || shard_n < 1 || shard_i < 0 || shard_i >= shard_n) {
                cli_error("infer", "--shard '%s' is not I/N with 0 <= I < N", v);
                return 2;
            }
        } else { cli_error("infer", "unknown option '%s' (see --help)", a); return 2; }
    }
    if (!model || !input || !out) { cli_error("infer", "--model, --input and --output are required (see --help)"); return 2; }
    vbs_model *m;
    if (vbs_model_load(model, &m)) {
        cli_error("infer", "%s", vbs_model_errmsg(m));
        vbs_model_free(m);
        return 1;
    }
    scan_case *cases = NULL;
    int n = 0, rc = 1;
    char err[1024];
    result *res = NULL;
    vbs_session *s = NULL;
    if (!find_cases(input, &lay, &cases, &n, err, sizeof err)) { cli_error("infer", "%s", err); goto out; }
    if (mkdir(out, 0755) && errno != EEXIST) { cli_error("infer", "%s: cannot create: %s", out, strerror(errno)); goto out; }
    const vbs_card *card = vbs_model_card(m);
    columns cols;
    make_columns(card, &cols);
    int regions = card->label_convention == VBS_LABELS_BRATS_2018 || card->label_convention == VBS_LABELS_BRATS_2023;
    /* the manifest: model and options must match for a case to be skipped */
    char header[512], mpath[4096];
    snprintf(header, sizeof header, "vbseg-infer 2\tmodel %016llx\tsamples %lld seed %lld mode %s probabilities %d overlap %g png %d adaptive %g remap %d crop %d preview_max %g",
             (unsigned long long)fnv(model), mode == VBS_MODE_MEAN ? 1 : samples, seed, mode == VBS_MODE_MEAN ? "mean" : "sample", probs, overlap, png, adaptive, remap, crop, preview_max);
    /* shards of one folder keep their own manifest and summaries (merged later) */
    char tag[64] = "";
    if (shard_n > 1) snprintf(tag, sizeof tag, ".shard-%lld-of-%lld", shard_i, shard_n);
    snprintf(mpath, sizeof mpath, "%s/manifest%s.tsv", out, tag);
    res = calloc((size_t)n + 1, sizeof *res);
    if (!res) { cli_error("infer", "out of memory"); goto out; }
    int mine = 0;
    for (int i = 0; i < n; i++) mine += i % shard_n == shard_i;
    if (!quiet) fprintf(stderr, "vbseg infer: %s layout, %d case%s%s\n", layout_name(lay), n, n == 1 ? "" : "s",
                        shard_n > 1 ? " (this shard takes every N-th)" : "");
    FILE *mf = overwrite ? NULL : fopen(mpath, "r");
    char line[4096];
    int manifest_ok = mf && fgets(line, sizeof line, mf) && !strncmp(line, header, strlen(header)) && line[strlen(header)] == '\n';
    vbs_session_new(m, &s);
    runner R = {out, m, s, &cols, {(int)samples, (uint64_t)seed, mode, (int)threads, overlap > 0 ? (float)overlap : 1e-6f, (float)adaptive, 5},
                probs, regions, png, remap, crop, (float)preview_max};
    int nres = 0, failed = 0, done = 0;
    double t0 = now();
    int tty = isatty(2);
    for (int i = 0; i < n; i++) {
        if (i % shard_n != shard_i) continue;
        result *r = &res[nres++];
        snprintf(r->id, sizeof r->id, "%s", cases[i].id);
        /* done before with this model and these options? */
        int skipped = 0;
        if (manifest_ok) {
            rewind(mf);
            if (fgets(line, sizeof line, mf))
                while (fgets(line, sizeof line, mf)) {
                    char *tab = strchr(line, '\t');
                    if (!tab || (size_t)(tab - line) != strlen(r->id) || strncmp(line, r->id, (size_t)(tab - line))) continue;
                    if (strncmp(tab + 1, "ok\t", 3)) continue;
                    if (parse_numbers(r, &cols, tab + 4) && outputs_exist(out, r->id, regions, probs, png)) { r->ok = 1; skipped = 1; }
                }
        }
        if (!skipped) {
            double tc = now();
            r->ok = run_case(&R, lay, &cases[i], r);
            r->seconds = now() - tc;
            struct rusage ru;
            if (!getrusage(RUSAGE_SELF, &ru)) r->peak_mb = (double)ru.ru_maxrss / 1024.0;
            if (r->ok && cases[i].note[0] && !r->error[0]) snprintf(r->error, sizeof r->error, "%s", cases[i].note);
        }
        failed += !r->ok;
        done++;
        /* the report and the manifest after every case: a killed run loses at most the case in flight */
        report rp = {res, nres, &cols};
        manifest mn = {header, res, nres, &cols};
        char path[4096], e2[512];
        snprintf(path, sizeof path, "%s/summary%s.csv", out, tag);
        if (vbs_atomic_write(path, write_csv, &rp, e2)) cli_error("infer", "%s: %s", path, e2);
        snprintf(path, sizeof path, "%s/summary%s.json", out, tag);
        if (vbs_atomic_write(path, write_json, &rp, e2)) cli_error("infer", "%s: %s", path, e2);
        if (vbs_atomic_write(mpath, write_manifest, &mn, e2)) cli_error("infer", "%s: %s", mpath, e2);
        if (!quiet) {
            double el = now() - t0, eta = done ? el / done * (mine - done) : 0;
            char msg[1024];
            snprintf(msg, sizeof msg, "[%d/%d] %s: %s%s%s, %d samples, %.1f s elapsed, ETA %.0f s", done, mine, r->id,
                     skipped ? "already done" : r->ok ? "ok" : "FAILED", r->ok ? "" : ": ", r->ok ? "" : r->error, r->samples, el, eta);
            if (tty) fprintf(stderr, "\r\033[K%s%s", msg, done == mine || !r->ok ? "\n" : "");
            else fprintf(stderr, "%s\n", msg);
        }
    }
    if (mf) fclose(mf);
    if (failed) cli_error("infer", "%d of %d case%s failed (see %s/summary%s.csv)", failed, nres, nres == 1 ? "" : "s", out, tag);
    else rc = 0;
out:
    vbs_session_free(s);
    free(res);
    free_cases(cases, n);
    vbs_model_free(m);
    return rc;
}
