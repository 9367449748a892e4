/*
 * train_step.c: test helper. Runs optimiser steps of the trainer on a
 * given minibatch and writes what an independent implementation needs to
 * check them:
 *
 *   train_step MODEL X.npy Y.npy OUTDIR [--steps N] [--seed S] [--lr LR]
 *              [--kl-weight W] [--latent-kl W] [--optimizer adam|adamw|sgd]
 *              [--weight-decay D] [--momentum M] [--threads T] [--groups G]
 *              [--flipout] [--clip C] [--save OUT.vbseg]
 *
 * X.npy is (B, C, spatial...) float32, Y.npy (B, spatial...) float32 class
 * indices. Writes OUTDIR/loss.txt (one line per step: loss dice ce kl_w kl_z
 * grad_norm), OUTDIR/manifest.txt ("index role name prior_sigma" per
 * tensor), OUTDIR/grad_<index>.npy (the first step's gradient of each
 * trained tensor, after the KL terms, before clipping and the update),
 * OUTDIR/after_<index>.npy (every tensor after the last step) and
 * OUTDIR/nodes.txt ("index op name" per node, for the latent's RNG stream).
 * The random draws of step s, example n are keyed as the trainer documents:
 * weights (seed, s, tensor + 1); latent (seed, s * B + n, 0x80000000 | node);
 * heteroscedastic noise (seed, s * B + n, 0x40000000 + t).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer.h"

static int dump(const char *dir, const char *what, int i, const float *data, const vbs_tensor_def *t) {
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/%s_%d.npy", dir, what, i);
    if (vbs_write_npy(path, data, t->dims, t->ndim, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 0; }
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: train_step MODEL X.npy Y.npy OUTDIR [options]\n");
        return 2;
    }
    vbs_trainer_cfg cfg = {0};
    cfg.opt = (vbs_opt_cfg){.kind = VBS_OPT_ADAM, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .momentum = 0.9f};
    cfg.threads = 1;
    cfg.kl_weight = 1e-6f;
    cfg.latent_kl_weight = 1e-3f;
    int steps = 1;
    const char *save = NULL;
    for (int i = 5; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--flipout")) { cfg.flipout = 1; continue; }
        i++;
        if (!strcmp(a, "--steps")) steps = atoi(v);
        else if (!strcmp(a, "--seed")) cfg.seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--lr")) cfg.opt.lr = (float)atof(v);
        else if (!strcmp(a, "--kl-weight")) cfg.kl_weight = (float)atof(v);
        else if (!strcmp(a, "--latent-kl")) cfg.latent_kl_weight = (float)atof(v);
        else if (!strcmp(a, "--weight-decay")) cfg.opt.weight_decay = (float)atof(v);
        else if (!strcmp(a, "--momentum")) cfg.opt.momentum = (float)atof(v);
        else if (!strcmp(a, "--threads")) cfg.threads = atoi(v);
        else if (!strcmp(a, "--groups")) cfg.groups = atoi(v);
        else if (!strcmp(a, "--clip")) cfg.opt.clip = (float)atof(v);
        else if (!strcmp(a, "--save")) save = v;
        else if (!strcmp(a, "--optimizer"))
            cfg.opt.kind = !strcmp(v, "sgd") ? VBS_OPT_SGD : !strcmp(v, "adamw") ? VBS_OPT_ADAMW : VBS_OPT_ADAM;
        else { fprintf(stderr, "unknown option %s\n", a); return 2; }
    }
    vbs_model *m;
    if (vbs_model_load(argv[1], &m)) { fprintf(stderr, "%s\n", vbs_model_errmsg(m)); vbs_model_free(m); return 1; }
    float *x, *yf;
    int64_t xd[VBS_MAX_DIMS], yd[VBS_MAX_DIMS], nan;
    int xn, yn;
    char err[VBS_ERRLEN];
    if (vbs_read_npy(argv[2], &x, xd, &xn, &nan, err, sizeof err) || vbs_read_npy(argv[3], &yf, yd, &yn, &nan, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    vbs_batch b = {(int)xd[0], (int)xd[1], xn - 2, {1, 1, 1}, x, NULL};
    int64_t V = 1;
    for (int i = 0; i < b.nsp; i++) { b.spatial[i] = xd[2 + i]; V *= xd[2 + i]; }
    uint8_t *y = malloc((size_t)(b.n * V));
    for (int64_t i = 0; i < b.n * V; i++) y[i] = (uint8_t)yf[i];
    b.y = y;
    vbs_trainer t;
    if (vbs_trainer_init(&t, m, &cfg, err)) { fprintf(stderr, "%s\n", err); return 1; }
    /* the classes: output 0's channels where fixed (as vbseg train takes them), else the card's */
    vbs_value_info oi;
    vbs_model_output(m, 0, &oi);
    int k = (int)(m->def.card.n_labels > 0 ? m->def.card.n_labels : 2);
    if (m->def.card.output_activation == VBS_ACT_SIGMOID) k = 1;
    if (oi.ndim > 1 && oi.dims[1] > 0) k = (int)oi.dims[1];
    vbs_loss_spec_from_card(&m->def.card, k, t.hetero, &t.loss);
    char path[4096];
    snprintf(path, sizeof path, "%s/loss.txt", argv[4]);
    FILE *lf = fopen(path, "w");
    snprintf(path, sizeof path, "%s/manifest.txt", argv[4]);
    FILE *mf = fopen(path, "w");
    snprintf(path, sizeof path, "%s/nodes.txt", argv[4]);
    FILE *nf = fopen(path, "w");
    if (!lf || !mf || !nf) { fprintf(stderr, "%s: cannot write\n", argv[4]); return 1; }
    for (int i = 0; i < m->def.n_nodes; i++) fprintf(nf, "%d %s %s\n", i, m->def.nodes[i].op_type, m->def.nodes[i].name);
    int rc = 0;
    for (int s = 0; s < steps && !rc; s++) {
        vbs_step_stats st;
        if (vbs_trainer_step(&t, &b, s, cfg.opt.lr, &st, err)) { fprintf(stderr, "%s\n", err); rc = 1; break; }
        fprintf(lf, "%.9g %.9g %.9g %.9g %.9g %.9g\n", st.loss, st.dice, st.ce, st.kl_w, st.kl_z, st.grad_norm);
        if (s == 0)
            for (int i = 0; i < m->def.n_tensors && !rc; i++)
                if (t.P.trained[i] && !dump(argv[4], "grad", i, t.grad + t.P.toff[i], &m->def.tensors[i])) rc = 1;
    }
    for (int i = 0; i < m->def.n_tensors && !rc; i++) {
        const vbs_tensor_def *td = &m->def.tensors[i];
        fprintf(mf, "%d %s %s %g %d\n", i, td->role == VBS_ROLE_MU ? "mu" : td->role == VBS_ROLE_RHO ? "rho" : "plain", td->name,
                td->has_prior ? (double)td->prior.sigma : 0.0, t.P.trained[i]);
        if (!dump(argv[4], "after", i, td->data, td)) rc = 1;
    }
    if (!rc && save && vbs_model_save(m, save)) { fprintf(stderr, "%s\n", vbs_model_errmsg(m)); rc = 1; }
    fclose(lf); fclose(mf); fclose(nf);
    vbs_trainer_free(&t);
    vbs_model_free(m);
    free(x); free(yf); free(y);
    return rc;
}
