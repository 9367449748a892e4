/*
 * loop.c: the training run: the split into training and validation cases,
 * the epochs of steps (minibatches drawn by data.c, steps by step.c), the
 * validation after each epoch through the same session code deployment
 * uses (mean mode, then Monte-Carlo samples), the export of the best
 * epoch's model with its card filled in, a checkpoint each epoch (and on
 * a stop request), train_log.csv, and the time budget. Reports through the
 * caller's callback; never prints.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "trainer.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* a uniform 32-bit draw keyed by (seed, a, b), for the case choices and the split */
static uint32_t draw32(uint64_t seed, uint64_t a, uint32_t b) {
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)}, ctr[4] = {(uint32_t)a, (uint32_t)(a >> 32), 0xCA5E0000u, b}, out[4];
    vbs_philox4x32(key, ctr, out);
    return out[0];
}

static char *adup(vbs_model *m, const char *s) { return vbs_arena_strdup(&m->def.arena, s ? s : ""); }

/* The card of a model trained here: what the data says, and how it was made. */
static void fill_card(vbs_model *m, const vbs_dataset *ds, const vbs_train_opts *o) {
    vbs_card *c = &m->def.card;
    const char **ch = vbs_arena_alloc(&m->def.arena, sizeof(char *) * (size_t)(ds->C + 1));
    vbs_label *lab = vbs_arena_alloc(&m->def.arena, sizeof(vbs_label) * (size_t)(ds->n_classes + 1));
    int64_t *patch = vbs_arena_alloc(&m->def.arena, sizeof(int64_t) * 3);
    if (!ch || !lab || !patch) return; /* the builder's card stays */
    for (int i = 0; i < ds->C; i++) ch[i] = adup(m, ds->meta.channel[i]);
    c->channels = ch;
    c->n_channels = ds->C;
    if (c->output_activation != VBS_ACT_SIGMOID) {
        for (int k = 0; k < ds->n_classes; k++) { lab[k].value = ds->meta.label_value[k]; lab[k].name = adup(m, ds->meta.label_name[k]); }
        c->labels = lab;
        c->n_labels = ds->n_classes;
    }
    int brats18 = ds->n_classes == 4 && ds->meta.label_value[1] == 1 && ds->meta.label_value[2] == 2 && ds->meta.label_value[3] == 4;
    c->label_convention = ds->layout == VBS_TRAIN_BRATS2023 ? VBS_LABELS_BRATS_2023 : brats18 ? VBS_LABELS_BRATS_2018
                        : ds->layout == VBS_TRAIN_MSD ? VBS_LABELS_MSD : VBS_LABELS_CUSTOM;
    for (int i = 0; i < 3; i++) patch[i] = o->sampler.patch[i];
    c->patch = patch;
    c->n_patch = o->sampler.dims;
    c->spatial_dims = o->sampler.dims;
    c->producer = adup(m, "vbseg train");
    c->producer_version = adup(m, VBS_VERSION_STRING);
    c->training_data = adup(m, ds->meta.name[0] ? ds->meta.name : o->data);
    c->seed = o->tcfg.seed;
    c->description = adup(m, "variational segmentation network trained by Bayes by Backprop (vbseg train)");
}

/* the validation metrics' names: the loss's Dice terms */
static void term_names(const vbs_model *m, const vbs_loss_spec *s, char names[][32]) {
    const vbs_card *c = &m->def.card;
    int regions = c->label_convention != VBS_LABELS_CUSTOM && s->n_terms == 3 && __builtin_popcountll(s->term_classes[0]) == 3;
    for (int t = 0; t < s->n_terms; t++) {
        if (regions) { snprintf(names[t], 32, "%s", t == 0 ? "wt" : t == 1 ? "tc" : "et"); continue; }
        int cls = __builtin_ctzll(s->term_classes[t]);
        const char *n = s->sigmoid ? "foreground" : cls < c->n_labels && c->labels[cls].name && c->labels[cls].name[0] ? c->labels[cls].name : "class";
        int k = 0;
        for (; *n && k < 31; n++) names[t][k++] = (*n >= 'A' && *n <= 'Z') ? (char)(*n - 'A' + 'a') : (*n == ' ' || *n == ',') ? '_' : *n;
        names[t][k] = 0;
    }
}

typedef struct {
    double loss, dice, dice_mc, epistemic;
    double term_dice[VBS_LOSS_MAX_TERMS], term_iou[VBS_LOSS_MAX_TERMS];
} val_result;

/* a part of a case's box: origin and size, x y z */
typedef struct { int64_t o[3], s[3]; } val_box;

/* The parts of a validation case checked every epoch, the same for the whole
 * run: all of it when share <= 0 or the case is no bigger than the share;
 * else in 2D `share` axial slices, in 3D `share` patch-sized boxes, half
 * spread evenly over the foreground and half over the whole box. Returns
 * the count (at most max(share, 1)). */
static int val_boxes(const vbs_data_case *dc, const vbs_sampler *s, int share, val_box *b) {
    const int64_t *d = dc->d;
    int three = s->dims == 3;
    int whole = share <= 0 || (!three && share >= d[2]) || (three && d[0] <= s->patch[2] && d[1] <= s->patch[1] && d[2] <= s->patch[0]);
    if (whole) { b[0] = (val_box){{0, 0, 0}, {d[0], d[1], d[2]}}; return 1; }
    int nf = three ? (dc->n_fg_vox ? (share + 1) / 2 : 0) : (dc->n_fg_z ? (share + 1) / 2 : 0), n = 0;
    if (!three) {
        char *taken = calloc((size_t)d[2], 1);
        if (!taken) { b[0] = (val_box){{0, 0, 0}, {d[0], d[1], d[2]}}; return 1; }
        for (int j = 0; j < share; j++) {
            int64_t z = j < nf ? dc->fg_z[(2 * (int64_t)j + 1) * dc->n_fg_z / (2 * nf)] : (2 * (int64_t)(j - nf) + 1) * d[2] / (2 * (share - nf));
            while (taken[z]) z = (z + 1) % d[2]; /* share < d[2]: a free slice exists */
            taken[z] = 1;
        }
        for (int64_t z = 0; z < d[2]; z++)
            if (taken[z]) b[n++] = (val_box){{0, 0, z}, {d[0], d[1], 1}};
        free(taken);
        return n;
    }
    int64_t ps[3] = {s->patch[2], s->patch[1], s->patch[0]}; /* the patch is D H W */
    for (int j = 0; j < share; j++) {
        int64_t c[3];
        if (j < nf) {
            int64_t v = dc->fg_vox[(2 * (int64_t)j + 1) * dc->n_fg_vox / (2 * nf)];
            c[0] = v % d[0]; c[1] = v / d[0] % d[1]; c[2] = v / (d[0] * d[1]);
        } else { /* an evenly spread sequence of points (Kronecker, golden-ratio steps) */
            double u = (j - nf + 0.5) / (share - nf), a[3] = {u, fmod(0.5 + (j - nf) * 0.6180339887, 1.0), fmod(0.5 + (j - nf) * 0.7548776662, 1.0)};
            for (int q = 0; q < 3; q++) c[q] = (int64_t)(a[q] * (double)d[q]);
        }
        val_box *bx = &b[n++];
        for (int q = 0; q < 3; q++) {
            bx->s[q] = ps[q] < d[q] ? ps[q] : d[q];
            int64_t o = c[q] - bx->s[q] / 2;
            bx->o[q] = o < 0 ? 0 : o > d[q] - bx->s[q] ? d[q] - bx->s[q] : o;
        }
    }
    return n;
}

/* Copies boxes of one x-y size, stacked along z, into x (C planes) and t (class indices). */
static void val_gather(const vbs_dataset *ds, const vbs_data_case *dc, const val_box *b, int nb, float *x, uint8_t *t) {
    int64_t plane = dc->d[0] * dc->d[1], nv = dc->d[2] * plane, k = 0;
    for (int i = 0; i < nb; i++) k += b[i].s[0] * b[i].s[1] * b[i].s[2];
    int64_t q = 0;
    for (int i = 0; i < nb; i++)
        for (int64_t z = 0; z < b[i].s[2]; z++)
            for (int64_t y = 0; y < b[i].s[1]; y++, q += b[i].s[0]) {
                int64_t src = (b[i].o[2] + z) * plane + (b[i].o[1] + y) * dc->d[0] + b[i].o[0];
                for (int c = 0; c < ds->C; c++) memcpy(x + c * k + q, dc->x + c * nv + src, sizeof(float) * (size_t)b[i].s[0]);
                for (int64_t v = 0; v < b[i].s[0]; v++) t[q + v] = ds->lut[dc->y[src + v]];
            }
}

/* Validation: the held-out cases (or their parts, see val_boxes) through a
 * fresh session, as deployment runs them: mean mode, then samples. Dice and
 * IoU per case over the parts together, then averaged over the cases. */
static vbs_status validate(vbs_model *m, const vbs_dataset *ds, const int *val, int n_val, const vbs_loss_spec *ls, const vbs_train_opts *o,
                           val_result *r, char *err) {
    memset(r, 0, sizeof *r);
    if (!n_val) return VBS_OK;
    vbs_session *s;
    if (vbs_session_new(m, &s)) return vbs_fail(err, VBS_ERR_NOMEM, "out of memory: validation session");
    int kk = ls->sigmoid ? 2 : ls->k, three = o->sampler.dims == 3;
    double term_mc[VBS_LOSS_MAX_TERMS] = {0};
    int per = o->val_examples > 0 ? o->val_examples / n_val : 0, extra = o->val_examples > 0 ? o->val_examples % n_val : 0;
    val_box *boxes = malloc(sizeof(val_box) * (size_t)(per + 2));
    vbs_status st = boxes ? VBS_OK : vbs_fail(err, VBS_ERR_NOMEM, "out of memory: validation");
    for (int i = 0; i < n_val && !st; i++) {
        const vbs_data_case *dc = &ds->cases[val[i]];
        int nb = val_boxes(dc, &o->sampler, o->val_examples > 0 ? per + (i < extra) : 0, boxes);
        /* runs: 2D slices all in one (the network takes them one by one), 3D boxes one each */
        int runs = three ? nb : 1, whole = nb == 1 && boxes[0].s[0] * boxes[0].s[1] * boxes[0].s[2] == dc->d[0] * dc->d[1] * dc->d[2];
        int64_t cap = 0;
        for (int b = 0; b < nb; b++) cap = three ? (cap > boxes[b].s[0] * boxes[b].s[1] * boxes[b].s[2] ? cap : boxes[b].s[0] * boxes[b].s[1] * boxes[b].s[2])
                                                 : cap + boxes[b].s[0] * boxes[b].s[1] * boxes[b].s[2];
        float *p = malloc(sizeof(float) * (size_t)(kk * cap)), *xb = whole ? NULL : malloc(sizeof(float) * (size_t)(ds->C * cap));
        uint8_t *tg = malloc((size_t)cap), *pred = malloc((size_t)cap);
        if (!p || !tg || !pred || (!whole && !xb)) { free(p); free(xb); free(tg); free(pred); st = vbs_fail(err, VBS_ERR_NOMEM, "out of memory: validation"); break; }
        int64_t cnt[2][VBS_LOSS_MAX_TERMS][3] = {{{0}}}, nvox = 0, nfg = 0;
        double loss = 0, smi = 0;
        for (int run = 0; run < runs && !st; run++) {
            const val_box *bb = three ? &boxes[run] : boxes;
            int nbr = three ? 1 : nb;
            int64_t depth = 0;
            for (int b = 0; b < nbr; b++) depth += bb[b].s[2];
            int64_t nv = depth * bb[0].s[1] * bb[0].s[0], shape[5] = {1, ds->C, depth, bb[0].s[1], bb[0].s[0]};
            if (whole) for (int64_t v = 0; v < nv; v++) tg[v] = ds->lut[dc->y[v]];
            else val_gather(ds, dc, bb, nbr, xb, tg);
            for (int pass = 0; pass < 2 && !st; pass++) {
                vbs_mc_opts mo = vbs_mc_defaults();
                mo.mode = pass ? VBS_MODE_SAMPLE : VBS_MODE_MEAN;
                mo.n_samples = o->val_samples;
                mo.seed = o->tcfg.seed;
                mo.threads = o->tcfg.threads;
                if (pass && o->val_samples < 1) break;
                if (vbs_session_run_mc(s, whole ? dc->x : xb, shape, 5, &mo)) { st = vbs_fail(err, VBS_ERR_SHAPE, "validation case %s: %s", dc->id, vbs_session_errmsg(s)); break; }
                const float *pm, *mi;
                vbs_session_map(s, VBS_MAP_PROB_MEAN, &pm, NULL);
                /* probabilities of every class (the sigmoid's background too), the predicted class */
                for (int64_t v = 0; v < nv; v++) {
                    if (ls->sigmoid) { p[v] = 1.f - pm[v]; p[nv + v] = pm[v]; }
                    else for (int c = 0; c < kk; c++) p[c * nv + v] = pm[c * nv + v];
                    int best = 0;
                    for (int c = 1; c < kk; c++) if (p[c * nv + v] > p[best * nv + v]) best = c;
                    pred[v] = (uint8_t)best;
                }
                if (!pass) loss += vbs_loss_probs(ls, p, tg, nv).total * (double)nv;
                else {
                    vbs_session_map(s, VBS_MAP_MUTUAL_INFO, &mi, NULL);
                    for (int64_t v = 0; v < nv; v++) if (pred[v]) { smi += mi[v]; nfg++; }
                }
                for (int t = 0; t < ls->n_terms; t++)
                    for (int64_t v = 0; v < nv; v++) {
                        int x = ls->term_classes[t] >> pred[v] & 1, y = ls->term_classes[t] >> tg[v] & 1;
                        cnt[pass][t][0] += x; cnt[pass][t][1] += y; cnt[pass][t][2] += x & y;
                    }
            }
            nvox += nv;
        }
        r->loss += loss / (double)(nvox ? nvox : 1) / n_val;
        r->epistemic += (nfg ? smi / (double)nfg : 0) / n_val;
        for (int t = 0; t < ls->n_terms; t++)
            for (int pass = 0; pass < 2; pass++) {
                int64_t a = cnt[pass][t][0], b = cnt[pass][t][1], both = cnt[pass][t][2];
                double dice = a + b ? 2.0 * (double)both / (double)(a + b) : 1.0, iou = a + b - both ? (double)both / (double)(a + b - both) : 1.0;
                if (!pass) { r->term_dice[t] += dice / n_val; r->term_iou[t] += iou / n_val; }
                else term_mc[t] += dice / n_val;
            }
        free(p); free(xb); free(tg); free(pred);
        vbs_data_release(ds, val[i]);
    }
    free(boxes);
    vbs_session_free(s);
    for (int t = 0; t < ls->n_terms; t++) { r->dice += r->term_dice[t] / ls->n_terms; r->dice_mc += term_mc[t] / ls->n_terms; }
    if (o->val_samples < 1) r->dice_mc = r->dice;
    return st;
}

/* The seconds to keep for the validation after the last step of a time
 * budget: its last duration, or before the first one an estimate from the
 * training speed (a sampled forward pass costs about a third of a training
 * step per voxel). */
/* --val-examples unset: validation gets about a tenth of an epoch's arithmetic
 * (a training example costs about 3 passes of its voxels, a validation
 * example 1 + val_samples passes of its own), so a short --minutes budget
 * goes to training; at least 64 slices (3D: 8 patches), so the best epoch is
 * chosen on enough voxels, and at most 256 (32). train_px: the voxels an
 * epoch trains on. */
static int auto_val_examples(const vbs_dataset *ds, const int *val, int n_val, const vbs_sampler *s, double train_px, int val_samples) {
    int three = s->dims == 3, lo = three ? 8 : 64, hi = three ? 32 : 256;
    if (!n_val) return hi;
    double px = 0;
    for (int i = 0; i < n_val; i++) {
        const int64_t *d = ds->cases[val[i]].d;
        if (!three) px += (double)(d[0] * d[1]);
        else px += (double)((s->patch[2] < d[0] ? s->patch[2] : d[0]) * (s->patch[1] < d[1] ? s->patch[1] : d[1]) * (s->patch[0] < d[2] ? s->patch[0] : d[2]));
    }
    px /= n_val;
    double n = 0.1 * 3 * train_px / (px * (1 + val_samples));
    return n < lo ? lo : n > hi ? hi : (int)n;
}

static double val_reserve(double last, double val_px, const vbs_train_opts *o, double step_px_s) {
    if (last > 0) return last;
    return step_px_s > 0 ? val_px * (1 + o->val_samples) / (3 * step_px_s) : 0;
}

static vbs_status write_log_body(int fd, void *user, char *err) {
    const vbs_train_state *s = user;
    char line[512];
    int n = snprintf(line, sizeof line, "epoch,step,loss,dice_loss,ce,kl,val_loss,val_dice,val_dice_mc,val_epistemic,lr,seconds,images_per_s\n");
    if (vbs_write_all(fd, line, (size_t)n)) return vbs_fail(err, VBS_ERR_IO, "write failed: %s", strerror(errno));
    for (int i = 0; i < s->n_log; i++) {
        const vbs_epoch_log *e = &s->log[i];
        n = snprintf(line, sizeof line, "%d,%lld,%.6f,%.6f,%.6f,%.6g,%.6f,%.6f,%.6f,%.6f,%.6g,%.1f,%.2f\n", e->epoch, (long long)e->step, e->loss,
                     e->dice_loss, e->ce, e->kl, e->val_loss, e->val_dice, e->val_dice_mc, e->val_epistemic, e->lr, e->seconds, e->images_per_s);
        if (vbs_write_all(fd, line, (size_t)n)) return vbs_fail(err, VBS_ERR_IO, "write failed: %s", strerror(errno));
    }
    return VBS_OK;
}

static void emit(const vbs_train_opts *o, vbs_train_event *e) {
    if (o->on_event) o->on_event(o->user, e);
}

vbs_status vbs_train_run(vbs_model *m, vbs_dataset *ds, const vbs_checkpoint *ck, const vbs_train_opts *o, char *err) {
    vbs_status st;
    float *x = NULL;
    uint8_t *y = NULL;
    vbs_trainer t;
    val_result vr;
    double t_start = now();
    /* the split: cases in id order, shuffled by the seed; the last share validates */
    int n = ds->n, *order = malloc(sizeof(int) * (size_t)(n + 1)), n_val = 0;
    char *is_val = calloc((size_t)n + 1, 1);
    if (!order || !is_val) { free(order); free(is_val); return vbs_fail(err, VBS_ERR_NOMEM, "out of memory"); }
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(draw32(o->tcfg.seed, (uint64_t)i, 0x5EED) % (uint32_t)(i + 1)), tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    if (o->val_cases && o->val_cases[0]) {
        const char *p = o->val_cases;
        while (*p) {
            size_t len = strcspn(p, ",");
            int found = 0;
            for (int i = 0; i < n; i++)
                if (strlen(ds->cases[i].id) == len && !strncmp(ds->cases[i].id, p, len)) { is_val[i] = 1; found = 1; }
            if (!found) {
                free(order); free(is_val);
                return vbs_fail(err, VBS_ERR_ARG, "--val: case '%.*s' is not among the training cases", (int)len, p);
            }
            p += len + (p[len] == ',');
        }
    } else {
        int want = (int)floor(o->val_frac * n + 0.5);
        if (o->val_frac > 0 && want < 1 && n > 1) want = 1;
        if (want >= n) want = n - 1;
        for (int i = 0; i < want; i++) is_val[order[n - 1 - i]] = 1;
    }
    int *train = malloc(sizeof(int) * (size_t)(n + 1)), *val = malloc(sizeof(int) * (size_t)(n + 1)), n_train = 0;
    if (!train || !val) { free(order); free(is_val); free(train); free(val); return vbs_fail(err, VBS_ERR_NOMEM, "out of memory"); }
    for (int i = 0; i < n; i++) {
        if (is_val[i]) val[n_val++] = i;
        else train[n_train++] = i;
    }
    free(order);
    free(is_val);
    if (!n_train) { free(train); free(val); return vbs_fail(err, VBS_ERR_ARG, "no training cases left after the validation split"); }
    /* steps per epoch: one pass over the training slices (2D) or cases (3D), at most 250 (nnU-Net's epoch) */
    int64_t examples = 0, voxels = 0, pvox = o->sampler.patch[0] * o->sampler.patch[1] * (o->sampler.dims == 3 ? o->sampler.patch[2] : 1);
    for (int i = 0; i < n_train; i++) {
        const vbs_data_case *dc = &ds->cases[train[i]];
        examples += o->sampler.dims == 2 ? dc->d[2] : 1;
        voxels += dc->d[0] * dc->d[1] * dc->d[2];
    }
    int spe = o->steps_per_epoch > 0 ? o->steps_per_epoch : (int)((examples + o->batch - 1) / o->batch);
    if (o->steps_per_epoch <= 0 && spe > 250) spe = 250;
    if (spe < 1) spe = 1;
    vbs_train_opts oo = *o;
    if (oo.val_examples < 0) oo.val_examples = auto_val_examples(ds, val, n_val, &o->sampler, (double)spe * o->batch * (double)pvox, o->val_samples);
    o = &oo;
    vbs_trainer_cfg cfg = o->tcfg;
    /* the ELBO per voxel: the data terms are means over voxels, so the weights' KL counts once per training voxel */
    cfg.kl_weight = o->kl_weight >= 0 ? (float)o->kl_weight : (float)(1.0 / (double)(voxels > 0 ? voxels : 1));
    if (o->latent_kl_weight >= 0) cfg.latent_kl_weight = (float)o->latent_kl_weight;
    else cfg.latent_kl_weight = (float)(1.0 / (double)pvox);
    if (!ck) fill_card(m, ds, o);
    if ((st = vbs_trainer_init(&t, m, &cfg, err))) { vbs_trainer_free(&t); free(train); free(val); return st; }
    vbs_value_info oi;
    vbs_model_output(m, 0, &oi);
    int k = oi.ndim > 1 && oi.dims[1] > 0 ? (int)oi.dims[1] : ds->n_classes;
    if (k != (m->def.card.output_activation == VBS_ACT_SIGMOID ? 1 : ds->n_classes) && !(k == 1 && ds->n_classes == 2)) {
        vbs_trainer_free(&t); free(train); free(val);
        return vbs_fail(err, VBS_ERR_SHAPE, "the model outputs %d classes but the data has %d labels", k, ds->n_classes);
    }
    vbs_loss_spec_from_card(&m->def.card, k, t.hetero, &t.loss);
    char names[VBS_LOSS_MAX_TERMS][32];
    term_names(m, &t.loss, names);
    /* the state: fresh, or the checkpoint's */
    vbs_train_state S;
    memset(&S, 0, sizeof S);
    vbs_sched_state sched;
    vbs_sched_init(&cfg.opt, &sched);
    S.best_metric = -1;
    int cap_log = 0;
    if (ck) {
        if ((st = vbs_checkpoint_restore(&t, ck, o->resume, err))) goto done;
        S = ck->state;
        sched.step = S.step;
        sched.lr = S.sched_lr;
        sched.best = S.sched_best;
        sched.bad_epochs = S.sched_bad;
        S.log = NULL;
        S.n_log = 0;
        if (ck->state.n_log) {
            cap_log = ck->state.n_log + 16;
            S.log = malloc(sizeof *S.log * (size_t)cap_log);
            if (!S.log) { st = vbs_fail(err, VBS_ERR_NOMEM, "out of memory"); goto done; }
            memcpy(S.log, ck->state.log, sizeof *S.log * (size_t)ck->state.n_log);
            S.n_log = ck->state.n_log;
        }
    }
    S.options = (char *)o->options;
    S.data_id = (char *)o->data_id;
    double elapsed0 = S.elapsed;
    /* for the time budget: the voxels validation reads, its last duration, the training speed */
    double val_px = 0, val_last = 0, step_px_s = 0;
    int val_n = 0; /* slices (2D) or patches and whole cases (3D) validated each epoch */
    {
        int per = o->val_examples > 0 ? o->val_examples / (n_val ? n_val : 1) : 0, extra = o->val_examples > 0 ? o->val_examples % (n_val ? n_val : 1) : 0;
        val_box *bx = malloc(sizeof(val_box) * (size_t)(per + 2));
        if (!bx) { st = vbs_fail(err, VBS_ERR_NOMEM, "out of memory"); goto done; }
        for (int i = 0; i < n_val; i++) {
            int nb = val_boxes(&ds->cases[val[i]], &o->sampler, o->val_examples > 0 ? per + (i < extra) : 0, bx);
            for (int q = 0; q < nb; q++) {
                val_px += (double)(bx[q].s[0] * bx[q].s[1] * bx[q].s[2]);
                val_n += o->sampler.dims == 3 ? 1 : (int)bx[q].s[2];
            }
        }
        free(bx);
    }
    vbs_train_event ev = {0};
    ev.n_train = n_train;
    ev.n_val = n_val;
    ev.val_examples = val_n;
    ev.steps_per_epoch = spe;
    ev.epochs = o->epochs;
    ev.n_terms = t.loss.n_terms;
    for (int i = 0; i < t.loss.n_terms; i++) ev.term_names[i] = names[i];
    ev.kind = VBS_EV_START;
    ev.kl_weight = cfg.kl_weight;
    ev.latent_kl_weight = cfg.latent_kl_weight;
    ev.threads = t.threads;
    ev.epoch = S.epoch;
    emit(o, &ev);
    /* the minibatch buffers */
    int C = ds->C;
    x = malloc(sizeof(float) * (size_t)(o->batch * C * pvox));
    y = malloc((size_t)(o->batch * pvox));
    if (!x || !y) { st = vbs_fail(err, VBS_ERR_NOMEM, "out of memory: a minibatch of %d", o->batch); goto done; }
    vbs_batch b = {o->batch, C, o->sampler.dims, {o->sampler.patch[0], o->sampler.patch[1], o->sampler.patch[2]}, x, y};
    int stop_reason = 0; /* 1 epochs, 2 time, 3 signal */
    while (!stop_reason) {
        if (o->epochs > 0 && S.epoch >= o->epochs) { stop_reason = 1; break; }
        double t_epoch = now(), sum_loss = 0, sum_dice = 0, sum_ce = 0, sum_kl = 0;
        int steps_done = 0;
        float lr = 0;
        while (S.step_in_epoch < spe) {
            if (o->stop && *o->stop) { stop_reason = 3; break; }
            /* the budget holds the validation that follows the last step: its time last epoch, or an estimate */
            if (o->minutes > 0 && elapsed0 + (now() - t_start) + val_reserve(val_last, val_px, o, step_px_s) >= o->minutes * 60) { stop_reason = 2; break; }
            /* the minibatch of this step: cases and examples keyed by (seed, step, n) */
            for (int e = 0; e < o->batch; e++) {
                uint64_t key = (uint64_t)S.step * (uint64_t)o->batch + (uint64_t)e;
                int ci = train[draw32(o->tcfg.seed, key, 0xCA5E) % (uint32_t)n_train];
                vbs_data_example(ds, &o->sampler, ci, o->tcfg.seed, key, x + (int64_t)e * C * pvox, y + (int64_t)e * pvox);
            }
            lr = vbs_sched_lr(&cfg.opt, &sched, S.epoch);
            /* KL warm-up: the weight grows linearly over the first epochs */
            float kw = cfg.kl_weight, lkw = cfg.latent_kl_weight;
            if (o->kl_warmup > 0) {
                double f = ((double)S.epoch + (double)S.step_in_epoch / spe + 1.0 / spe) / o->kl_warmup;
                if (f < 1) { t.cfg.kl_weight = (float)(kw * f); t.cfg.latent_kl_weight = (float)(lkw * f); }
            }
            double ts = now();
            vbs_step_stats ss;
            st = vbs_trainer_step(&t, &b, S.step, lr, &ss, err);
            t.cfg.kl_weight = kw;
            t.cfg.latent_kl_weight = lkw;
            if (st) goto done;
            step_px_s = (double)o->batch * (double)pvox / (now() - ts);
            S.step++;
            sched.step = S.step;
            S.step_in_epoch++;
            steps_done++;
            sum_loss += ss.loss; sum_dice += ss.dice; sum_ce += ss.ce; sum_kl += ss.kl_w + lkw * ss.kl_z;
            ev.kind = VBS_EV_STEP;
            ev.epoch = S.epoch;
            ev.step = S.step;
            ev.step_in_epoch = S.step_in_epoch;
            ev.st = ss;
            ev.lr = lr;
            ev.img_per_s = o->batch / (now() - ts);
            ev.elapsed = elapsed0 + now() - t_start;
            emit(o, &ev);
        }
        if (stop_reason == 3 || (stop_reason == 2 && !steps_done)) break;
        /* an epoch (or the part of one the budget allowed): validate, log, keep the best */
        double t_val = now();
        if ((st = validate(m, ds, val, n_val, &t.loss, o, &vr, err))) goto done;
        val_last = now() - t_val;
        double metric = n_val ? vr.dice_mc : -sum_loss / (steps_done ? steps_done : 1);
        vbs_sched_epoch_end(&cfg.opt, &sched, n_val ? vr.loss : sum_loss / (steps_done ? steps_done : 1));
        S.epoch++;
        S.step_in_epoch = 0;
        if (S.n_log == cap_log) {
            cap_log = cap_log ? 2 * cap_log : 64;
            vbs_epoch_log *l = realloc(S.log, sizeof *l * (size_t)cap_log);
            if (!l) { st = vbs_fail(err, VBS_ERR_NOMEM, "out of memory"); goto done; }
            S.log = l;
        }
        double sec = now() - t_epoch;
        vbs_epoch_log *el = &S.log[S.n_log++];
        *el = (vbs_epoch_log){S.epoch, S.step, sum_loss / (steps_done ? steps_done : 1), sum_dice / (steps_done ? steps_done : 1),
                              sum_ce / (steps_done ? steps_done : 1), sum_kl / (steps_done ? steps_done : 1), vr.loss, vr.dice, vr.dice_mc,
                              vr.epistemic, lr, sec, steps_done ? (double)steps_done * o->batch / (t_val - t_epoch) : 0};
        S.elapsed = elapsed0 + now() - t_start;
        S.sched_lr = sched.lr;
        S.sched_best = sched.best;
        S.sched_bad = sched.bad_epochs;
        /* the first epoch is the best so far whatever its metric: without
         * validation the metric is minus the loss, which can be below -1 */
        int improved = !S.best_epoch || metric > S.best_metric;
        ev.kind = VBS_EV_EPOCH;
        ev.epoch = S.epoch;
        ev.step = S.step;
        ev.log = el;
        ev.best = improved;
        for (int i = 0; i < t.loss.n_terms; i++) { ev.term_dice[i] = vr.term_dice[i]; ev.term_iou[i] = vr.term_iou[i]; }
        ev.elapsed = S.elapsed;
        emit(o, &ev);
        if (improved) {
            S.best_metric = metric;
            S.best_epoch = S.epoch;
            /* the card: the epoch and its validation metrics */
            vbs_card *c = &m->def.card;
            vbs_metric *mt = vbs_arena_alloc(&m->def.arena, sizeof(vbs_metric) * (size_t)(2 * t.loss.n_terms + 4));
            if (mt) {
                int q = 0;
                for (int i = 0; i < t.loss.n_terms; i++) {
                    char nm[64];
                    snprintf(nm, sizeof nm, "val_dice_%.31s", names[i]);
                    mt[q].name = adup(m, nm);
                    mt[q++].value = vr.term_dice[i];
                    snprintf(nm, sizeof nm, "val_iou_%.31s", names[i]);
                    mt[q].name = adup(m, nm);
                    mt[q++].value = vr.term_iou[i];
                }
                mt[q].name = adup(m, "val_dice_mc");
                mt[q++].value = vr.dice_mc;
                mt[q].name = adup(m, "val_epistemic_mi");
                mt[q++].value = vr.epistemic;
                c->metrics = mt;
                c->n_metrics = q;
            }
            c->epochs = S.epoch;
            if ((st = vbs_model_save(m, o->out))) { vbs_fail(err, st, "%s", vbs_model_errmsg(m)); goto done; }
            ev.kind = VBS_EV_EXPORT;
            emit(o, &ev);
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/train_log.csv", o->ckpt_dir);
        if ((st = vbs_atomic_write(path, write_log_body, &S, err))) goto done;
        snprintf(path, sizeof path, "%s/checkpoint.vbseg", o->ckpt_dir);
        if ((st = vbs_checkpoint_save(&t, &S, path, err))) goto done;
        ev.kind = VBS_EV_CHECKPOINT;
        emit(o, &ev);
        if (stop_reason == 2) break;
    }
    if (stop_reason == 3) {
        /* a stop request mid-epoch: keep everything so far in the checkpoint */
        S.elapsed = elapsed0 + now() - t_start;
        S.sched_lr = sched.lr;
        S.sched_best = sched.best;
        S.sched_bad = sched.bad_epochs;
        char path[4096];
        snprintf(path, sizeof path, "%s/checkpoint.vbseg", o->ckpt_dir);
        if ((st = vbs_checkpoint_save(&t, &S, path, err))) goto done;
        ev.kind = VBS_EV_CHECKPOINT;
        emit(o, &ev);
        st = vbs_fail(err, VBS_ERR_CANCELLED, "stopped at step %lld (epoch %d); checkpoint %s", (long long)S.step, S.epoch + 1, path);
    }
    ev.kind = VBS_EV_END;
    ev.stop_reason = stop_reason;
    ev.best_metric = S.best_metric;
    ev.best_epoch = S.best_epoch;
    ev.log = S.log;
    ev.n_log = S.n_log;
    if (!st) emit(o, &ev);
done:
    free(x);
    free(y);
    vbs_trainer_free(&t);
    free(train);
    free(val);
    free(S.log);
    return st;
}
