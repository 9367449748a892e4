/*
 * infer_case.c: one case of `vbseg infer`: match its files to the model
 * card's channels, check that the channels agree in shape and affine,
 * crop to the vbs_box around the non-zero voxels, normalise, run the samples
 * (the session pads and crops), and write the maps with the input's
 * geometry. Outputs are written under staging names and renamed together
 * only when every one is written, the label map last: a case that did not
 * finish leaves no finished-looking file, even after SIGKILL (the manifest
 * stays the authority; a start removes staged leftovers).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crop.h"
#include "infer.h"

/* the suffixes of a case's NIfTI outputs; the label map ("") is renamed last */
static const char *const suffixes[] = {"_entropy", "_epistemic", "_aleatoric", "_regions", "_probabilities",
                                       "_aleatoric_het", "_epistemic_het", ""};
#define N_SUFFIXES ((int)(sizeof suffixes / sizeof suffixes[0]))

static void out_path(char *p, size_t n, const char *out, const char *id, const char *suffix, const char *ext, int staged) {
    snprintf(p, n, "%s/%s%s%s%s", out, staged ? STAGE_PREFIX : "", id, suffix, ext);
}

/* which outputs this run writes */
static int wanted(const runner *R, int i) {
    const char *s = suffixes[i];
    if (!strcmp(s, "_regions")) return R->regions;
    if (!strcmp(s, "_probabilities")) return R->probs;
    if (!strcmp(s, "_aleatoric_het") || !strcmp(s, "_epistemic_het")) return R->hetero;
    return 1;
}

static int nonempty(const char *p) {
    struct stat sb;
    return !stat(p, &sb) && S_ISREG(sb.st_mode) && sb.st_size > 0;
}

int case_output_names(const runner *R, const char *id, char names[][CASE_NAME_LEN]) {
    int k = 0;
    if (R->png) snprintf(names[k++], CASE_NAME_LEN, "%s_preview.png", id);
    for (int i = 0; i < N_SUFFIXES; i++)
        if (wanted(R, i)) snprintf(names[k++], CASE_NAME_LEN, "%s%s.nii.gz", id, suffixes[i]);
    return k;
}

/* Only the outputs this run writes: a name it does not write may be another case's output. */
void remove_case_outputs(const runner *R, const char *id) {
    char names[CASE_MAX_OUTPUTS][CASE_NAME_LEN], p[4096];
    int k = case_output_names(R, id, names);
    for (int i = 0; i < k; i++) {
        snprintf(p, sizeof p, "%s/%s", R->out, names[i]);
        unlink(p);
        snprintf(p, sizeof p, "%s/%s%s", R->out, STAGE_PREFIX, names[i]);
        unlink(p);
    }
}

int is_case_temporary(const runner *R, const char *id, const char *name) {
    size_t sp = strlen(STAGE_PREFIX);
    if (strncmp(name, STAGE_PREFIX, sp)) return 0;
    name += sp;
    char names[CASE_MAX_OUTPUTS][CASE_NAME_LEN];
    int k = case_output_names(R, id, names);
    for (int i = 0; i < k; i++) {
        size_t n = strlen(names[i]);
        /* the staged output, or the atomic writer's NAME.tmp.XXXXXX of it */
        if (!strncmp(name, names[i], n) && (!name[n] || (!strncmp(name + n, ".tmp.", 5) && strlen(name + n) == 11))) return 1;
    }
    return 0;
}

int case_outputs_exist(const runner *R, const char *id) {
    char names[CASE_MAX_OUTPUTS][CASE_NAME_LEN], p[4096];
    int k = case_output_names(R, id, names);
    for (int i = 0; i < k; i++) {
        snprintf(p, sizeof p, "%s/%s", R->out, names[i]);
        if (!nonempty(p)) return 0;
    }
    return 1;
}

/* Renames the staged outputs to their final names, the label map last, then
 * makes the renames durable. -1 with err on failure (the staged files stay
 * for the caller to remove). */
static int publish(const runner *R, const char *id, char *err, size_t errlen) {
    char from[2048], to[2048];
    if (R->png) {
        out_path(from, sizeof from, R->out, id, "_preview", ".png", 1);
        out_path(to, sizeof to, R->out, id, "_preview", ".png", 0);
        if (rename(from, to)) { snprintf(err, errlen, "%.900s: rename failed: %s", to, strerror(errno)); return -1; }
    }
    for (int i = 0; i < N_SUFFIXES; i++) {
        if (!wanted(R, i)) continue;
        out_path(from, sizeof from, R->out, id, suffixes[i], ".nii.gz", 1);
        out_path(to, sizeof to, R->out, id, suffixes[i], ".nii.gz", 0);
        if (rename(from, to)) { snprintf(err, errlen, "%.900s: rename failed: %s", to, strerror(errno)); return -1; }
    }
    int dfd = open(R->out, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        /* EINVAL: a filesystem without directory fsync; anything else and the renames may not last */
        int bad = fsync(dfd) && errno != EINVAL, e = errno;
        close(dfd);
        if (bad) { snprintf(err, errlen, "%.900s: fsync of the folder failed: %s", R->out, strerror(e)); return -1; }
    }
    return 0;
}

static void add_note(char *notes, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add_note(char *notes, size_t n, const char *fmt, ...) {
    size_t k = strlen(notes);
    if (k + 3 >= n) return;
    if (k) { snprintf(notes + k, n - k, "; "); k += 2; }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(notes + k, n - k, fmt, ap);
    va_end(ap);
}

case_status run_case(runner *R, vbs_layout lay, const vbs_scan_case *sc, result *r) {
    const vbs_card *card = vbs_model_card(R->m);
    vbs_value_info in;
    vbs_model_input(R->m, 0, &in);
    int C = in.dims[1] > 0 ? (int)in.dims[1] : card->n_channels;
    if (C < 1 || C > VBS_MAX_CHANNELS) { snprintf(r->error, sizeof r->error, "model takes %d channels", C); return CASE_FAILED; }
    if (sc->note[0]) snprintf(r->notes, sizeof r->notes, "%s", sc->note);
    /* which file holds each model channel */
    const char *file[VBS_MAX_CHANNELS] = {0};
    if (lay == VBS_LAYOUT_FLAT) file[0] = sc->n_files ? sc->files[0] : NULL;
    for (int c = 0; c < C && lay != VBS_LAYOUT_FLAT; c++) {
        int want = c;
        if (lay == VBS_LAYOUT_BRATS2021 || lay == VBS_LAYOUT_BRATS2023) {
            want = c < card->n_channels ? vbs_brats_channel_index(card->channels[c]) : c;
            if (want < 0) { snprintf(r->error, sizeof r->error, "model channel '%s' has no BraTS file name", card->channels[c]); return CASE_FAILED; }
        }
        for (int f = 0; f < sc->n_files; f++)
            if (sc->channel[f] == want) file[c] = sc->files[f];
        if (!file[c]) {
            snprintf(r->error, sizeof r->error, "missing channel %s", c < card->n_channels ? card->channels[c] : "?");
            return CASE_FAILED;
        }
    }
    for (int f = 0; f < sc->n_files && lay == VBS_LAYOUT_NNUNET; f++)
        if (sc->channel[f] >= C) add_note(r->notes, sizeof r->notes, "extra channel file %s ignored", sc->files[f]);
    vbs_volume *vols[VBS_MAX_CHANNELS] = {0};
    float *x = NULL, *xbox = NULL, *full = NULL, *regions = NULL, *lab_out = NULL;
    case_status ret = CASE_FAILED;
    int nfiles = lay == VBS_LAYOUT_FLAT ? 1 : C;
    char err[1024];
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
        if (lay != VBS_LAYOUT_FLAT && d[3] != 1) { snprintf(r->error, sizeof r->error, "%s: a 4D file where one channel is expected", file[c]); goto done; }
        if (vbs_volume_nan_count(vols[c]))
            add_note(r->notes, sizeof r->notes, "%s: %lld NaN/Inf voxels set to 0", file[c], (long long)vbs_volume_nan_count(vols[c]));
    }
    if (lay == VBS_LAYOUT_FLAT && d0[3] != C) {
        snprintf(r->error, sizeof r->error, "%s: %lld channel(s) along t, the model takes %d", file[0], (long long)d0[3], C);
        goto done;
    }
    int64_t nvox = d0[0] * d0[1] * d0[2];
    x = malloc(sizeof(float) * (size_t)(nvox * C));
    if (!x) { snprintf(r->error, sizeof r->error, "out of memory"); goto done; }
    for (int c = 0; c < nfiles; c++) memcpy(x + (int64_t)c * nvox, vbs_volume_data(vols[c]), sizeof(float) * (size_t)(nvox * (lay == VBS_LAYOUT_FLAT ? C : 1)));
    /* the network sees only the vbs_box around the non-zero voxels (found before
     * normalisation, which may move the background off zero) */
    vbs_box bx = {{0, 0, 0}, {d0[0], d0[1], d0[2]}};
    int cropped = R->crop && vbs_box_nonzero(x, C, d0, &bx) && vbs_box_voxels(&bx) < nvox;
    if (!cropped) bx = (vbs_box){{0, 0, 0}, {d0[0], d0[1], d0[2]}};
    vbs_normalize(card, x, C, nvox);
    const int64_t nbox = vbs_box_voxels(&bx);
    if (cropped) {
        xbox = malloc(sizeof(float) * (size_t)(nbox * C));
        if (!xbox) { snprintf(r->error, sizeof r->error, "out of memory"); goto done; }
        vbs_box_extract(x, C, d0, &bx, xbox);
    }
    int64_t shape[5] = {1, C, bx.hi[2] - bx.lo[2], bx.hi[1] - bx.lo[1], bx.hi[0] - bx.lo[0]};
    int nd = 5;
    if (in.ndim == 4 && shape[2] == 1) { shape[2] = shape[3]; shape[3] = shape[4]; nd = 4; }
    vbs_status st = vbs_session_run_mc(R->s, cropped ? xbox : x, shape, nd, &R->o);
    if (st) {
        /* the session saw the non-zero box: say so, with the scan's own size */
        if (cropped && st == VBS_ERR_SHAPE)
            snprintf(r->error, sizeof r->error, "scan %lldx%lldx%lld, run on its non-zero box %lldx%lldx%lld (x, y, z): %s", (long long)d0[0],
                     (long long)d0[1], (long long)d0[2], (long long)(bx.hi[0] - bx.lo[0]), (long long)(bx.hi[1] - bx.lo[1]),
                     (long long)(bx.hi[2] - bx.lo[2]), vbs_session_errmsg(R->s));
        else snprintf(r->error, sizeof r->error, "%s", vbs_session_errmsg(R->s));
        if (st == VBS_ERR_CANCELLED) ret = CASE_CANCELLED;
        goto done;
    }
    /* maps: labels, entropy, MI, expected entropy, probabilities, and eq. 10-11 for hetero heads */
    enum { M_LAB, M_ENT, M_MI, M_ALE, M_PROB, M_HALE, M_HEPI, M_N };
    static const vbs_map which[M_N] = {VBS_MAP_LABELS, VBS_MAP_ENTROPY, VBS_MAP_MUTUAL_INFO, VBS_MAP_EXPECTED_ENTROPY,
                                       VBS_MAP_PROB_MEAN, VBS_MAP_HET_ALEATORIC, VBS_MAP_HET_EPISTEMIC};
    const float *map[M_N] = {0};
    vbs_map_info li, pi;
    for (int i = 0; i < M_N; i++) {
        if ((i == M_HALE || i == M_HEPI) && !R->hetero) continue;
        if (vbs_session_map(R->s, which[i], &map[i], i == M_LAB ? &li : i == M_PROB ? &pi : NULL)) {
            snprintf(r->error, sizeof r->error, "%s", vbs_session_errmsg(R->s));
            goto done;
        }
    }
    r->samples = (int)li.n_samples;
    int K = (int)pi.dims[0];
    const int softmax = !(card->output_activation == VBS_ACT_SIGMOID);
    float bg = card->n_labels ? (float)card->labels[0].value : 0.f;
    if (cropped) {
        /* outside the box: background, certain (p = 1 for class 0 of a softmax), no heteroscedastic variance */
        int64_t planes[M_N] = {1, 1, 1, 1, K, R->hetero ? K : 0, R->hetero ? K : 0}, tot = 0;
        for (int i = 0; i < M_N; i++) tot += planes[i];
        full = calloc((size_t)(nvox * tot), sizeof(float));
        if (!full) { snprintf(r->error, sizeof r->error, "out of memory"); goto done; }
        float *f = full;
        for (int64_t v = 0; v < nvox; v++) f[v] = bg;
        if (softmax && K > 1)
            for (int64_t v = 0; v < nvox; v++) f[4 * nvox + v] = 1.f;
        for (int i = 0; i < M_N; i++) {
            if (!planes[i]) continue;
            vbs_box_insert(map[i], (int)planes[i], d0, &bx, f);
            map[i] = f;
            f += planes[i] * nvox;
        }
    }
    const float *lab = map[M_LAB], *mi = map[M_MI], *pm = map[M_PROB];
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
    if (R->regions) {
        regions = calloc((size_t)(3 * nvox), sizeof(float));
        if (!regions) { snprintf(r->error, sizeof r->error, "out of memory"); goto done; }
        for (int col = R->cols->n - 3, rg = 0; rg < 3; col++, rg++)
            for (int k = 0; k < K && k < card->n_labels; k++)
                if (in_column(R->cols, col, card->labels[k].value))
                    for (int64_t v = 0; v < nvox; v++) regions[rg * nvox + v] += pm[k * nvox + v];
    }
    /* every output under its staging name; any failure removes them all */
    const float *data[N_SUFFIXES] = {map[M_ENT], mi, map[M_ALE], regions, pm, map[M_HALE], map[M_HEPI], lab_out ? lab_out : lab};
    const int64_t planes[N_SUFFIXES] = {1, 1, 1, 3, K, K, K, 1};
    for (int i = 0; i < N_SUFFIXES; i++) {
        if (!wanted(R, i)) continue;
        char path[4096];
        out_path(path, sizeof path, R->out, sc->id, suffixes[i], ".nii.gz", 1);
        int64_t d3[4] = {d0[0], d0[1], d0[2], planes[i]};
        if (vbs_volume_write_nifti(vols[0], path, data[i], d3, !suffixes[i][0], err, sizeof err)) {
            snprintf(r->error, sizeof r->error, "%s", err);
            ret = CASE_WRITE_FAILED;
            goto done;
        }
    }
    if (R->png) {
        char path[4096];
        out_path(path, sizeof path, R->out, sc->id, "_preview", ".png", 1);
        preview_in pv = {sc->id, vbs_volume_data(vols[0]), lab, mi, {d0[0], d0[1], d0[2]}, {{0}}, 0, card, bg, R->preview_max};
        pv.affine_code = vbs_volume_affine(vols[0], pv.affine);
        if (!write_preview(path, &pv, err, sizeof err)) {
            snprintf(r->error, sizeof r->error, "%s", err);
            ret = CASE_WRITE_FAILED;
            goto done;
        }
    }
    if (publish(R, sc->id, err, sizeof err)) {
        snprintf(r->error, sizeof r->error, "%s", err);
        ret = CASE_WRITE_FAILED;
        goto done;
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
                    /* one channel (sigmoid, or the graph's own probability): counts are foreground voxels */
                    if (card->output_activation != VBS_ACT_SOFTMAX && kc == 1) value = card->n_labels > 1 ? card->labels[1].value : 1;
                    /* the voxels outside the vbs_box are class 0 in every sample */
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
    ret = CASE_OK;
done:
    if (ret != CASE_OK) remove_case_outputs(R, sc->id);
    for (int c = 0; c < nfiles; c++) vbs_volume_free(vols[c]);
    free(x);
    free(xbox);
    free(full);
    free(regions);
    free(lab_out);
    return ret;
}
