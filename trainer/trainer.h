/*
 * trainer.h: vbseg's built-in trainer (Bayes by Backprop), internal to
 * libvbseg. One file per part:
 *   params.c      the parameters being trained (one allocation), the weight
 *                 draw w = mu + softplus(rho) * eps, the gradients of mu and
 *                 rho from the gradient of w, and the KL of q(w) to the prior
 *   loss.c        the data terms (soft Dice, cross-entropy / BCE, the
 *                 heteroscedastic sampled-logit likelihood) and the latent's KL
 *   optim.c       Adam, AdamW, SGD with momentum, learning-rate schedules,
 *                 gradient-norm clipping
 *   data.c        training cases: layouts, checks, the preprocessed cache,
 *                 slices and patches, augmentation
 *   checkpoint.c  the training state in a .vbseg file, written atomically
 *   loop.c        steps, threads, validation, export, logs
 * It holds no kernels: passes go through exec.c (vbs_train_forward and
 * vbs_train_backward) over the ops' own backward slots.
 */
#ifndef VBS_TRAINER_H
#define VBS_TRAINER_H

#include "../runtime/internal.h"

/* ---- params.c ------------------------------------------------------------ */

typedef struct {
    vbs_model *m;              /* borrowed; its tensors' data point into `data` */
    int64_t n;                 /* floats in data (every tensor, 16-float aligned) */
    float *data;               /* owned: all tensors, in tensor order */
    int64_t *toff;             /* per tensor: offset in data */
    char *trained;             /* per tensor: updated by the optimiser (mu, rho and plain weights, not running statistics) */
    char *decay;               /* per tensor: weight decay applies (mu and plain weights, not rho) */
    int64_t *param_off;        /* per graph value: offset of its gradient in a `data`-shaped buffer, -1 = not trained */
    int64_t (*gspan)[2];       /* [offset, floats) of the pieces of `data` that param_off points into (trained weights and
                                  means, split at 4096 floats): all a backward writes, so all of a gradient buffer to zero and sum */
    int n_gspan;
    float *eps;                /* the step's weight noise, by var_off */
    float *wbuf;               /* the step's sampled variational weights, by var_off (vbs_train_forward's wbuf) */
    int n_var;                 /* variational tensors */
    int *var_values;           /* their graph values, in value order */
    int *var_order;            /* the same, largest first (per-tensor work is handed out in this order) */
    struct vbs_var_piece { int v; int64_t e0, n; } *vpiece; /* the element-wise passes' units: value v, elements [e0, e0 + n) */
    int n_vpiece;
    int threads;               /* threads for the passes over the parameters (1 unless the trainer says) */
    double *vkl;               /* per value: its KL (vbs_params_grad) */
    double *sq;                /* per tensor: the sum of squares of its gradient after vbs_params_grad, -1 if it did not make it */
} vbs_params;

/* Takes over m's tensors: copies them into one owned allocation (the model
 * keeps pointing at it), marks what is trained. */
vbs_status vbs_params_init(vbs_params *p, vbs_model *m, char *err);
void vbs_params_free(vbs_params *p);
/* Draws the step's weights: eps from the RNG keyed by (seed, draw, tensor),
 * w = mu + sigma * eps into wbuf. */
void vbs_params_sample(vbs_params *p, uint64_t seed, uint64_t draw);
/* KL(q(w) || prior) summed over the variational tensors: closed form for a
 * Gaussian prior, the one-sample estimate log q(w) - log p(w) at the step's
 * draw for a scale mixture. With grad != NULL (data-shaped) adds
 * scale * dKL/dmu and scale * dKL/drho into it. */
double vbs_params_kl(const vbs_params *p, float scale, float *grad);
/* The step's parameter gradient and the KL in one pass over each variational
 * tensor. On entry grad (data-shaped) holds at each trained mu's offset the
 * gradient of its sampled w, and gw_rho the dL/dw for rho's chain rule (grad
 * itself, or Flipout's signed sums); on return grad holds
 *   dL/dmu = dL/dw + scale dKL/dmu,  dL/drho = gw_rho . eps . sigmoid(rho) + scale dKL/drho,
 * and p->sq each of their sums of squares. Returns the KL (vbs_params_kl's).
 * Tensors go to p->threads threads; each one's sums run in element order and
 * the KL adds them in value order: nothing depends on the thread count. */
double vbs_params_grad(vbs_params *p, float scale, float *grad, const float *gw_rho);
/* sigma = softplus(rho) again after rho changed (the model's cache). */
void vbs_params_refresh(vbs_params *p);

/* ---- loss.c -------------------------------------------------------------- */

#define VBS_LOSS_MAX_TERMS 16

typedef struct {
    int k;                     /* output channels (classes; 1 = one sigmoid class) */
    int sigmoid;               /* one sigmoid channel instead of a softmax */
    int hetero;                /* a log-variance output: Kendall & Gal's sampled-logit likelihood replaces CE/BCE */
    int samples;               /* its logit samples T (10) */
    int n_terms;               /* Dice terms: foreground classes, or BraTS regions */
    uint64_t term_classes[VBS_LOSS_MAX_TERMS]; /* bit c: class c belongs to term t */
    float w_dice, w_ce;        /* 0.9 and 0.1 */
    float smooth;              /* Dice smoothing s: (2I + s) / (P + G + s) */
} vbs_loss_spec;

typedef struct { double dice, ce, total; } vbs_loss_parts;

/* The data loss of one example of V voxels: logits and logvar are K x V
 * (logvar NULL without a heteroscedastic head), target V class indices.
 * Returns the parts (dice = 1 - mean Dice of the terms; ce = the mean over
 * voxels of the cross-entropy, BCE or heteroscedastic negative
 * log-likelihood; total = w_dice * dice + w_ce * ce) and, with dlogits !=
 * NULL, adds scale * d(total) into dlogits (and dlogvar). The heteroscedastic
 * noise comes from the RNG keyed by (seed, key). work: loss_work floats. */
vbs_loss_parts vbs_loss_example(const vbs_loss_spec *s, const float *logits, const float *logvar, const uint8_t *target, int64_t v,
                                float scale, float *dlogits, float *dlogvar, uint64_t seed, uint64_t key, float *work);
size_t vbs_loss_work(const vbs_loss_spec *s, int64_t v);
/* The same data terms from class probabilities p (kk x V; for one sigmoid
 * channel the pair 1 - p, p), without the heteroscedastic likelihood: the
 * validation loss. */
vbs_loss_parts vbs_loss_probs(const vbs_loss_spec *s, const float *p, const uint8_t *target, int64_t v);
/* KL(N(mean, softplus(rho)^2) || N(0, 1)) summed over n latent values; with
 * dmean != NULL adds scale * its gradients. */
double vbs_latent_kl(const float *mean, const float *rho, int64_t n, float scale, float *dmean, float *drho);

/* ---- data.c -------------------------------------------------------------- */

#include "../runtime/cases.h"

typedef struct {
    char id[256];
    int64_t d[3];                  /* x, y, z of the case's box (the non-zero voxels, and any labelled ones) */
    const float *x;                /* C planes of the box (x fastest), normalised as the card says; mapped */
    const uint8_t *y;              /* its label values */
    const int32_t *fg_z;           /* the box's z holding foreground */
    const uint32_t *fg_vox;        /* foreground voxel indices (all, or an even spread of 4096) */
    int64_t n_fg_z, n_fg_vox;
    double spacing[3];
    uint8_t present[32];           /* label values present (a bitset) */
    void *map;
    size_t map_len;
} vbs_data_case;

typedef struct {
    vbs_train_layout layout;
    vbs_dataset_meta meta;         /* channels and labels: dataset.json's, the layout's, or the values found */
    int C, n_classes;
    int n;                         /* usable cases, in id order */
    vbs_data_case *cases;
    uint8_t lut[256];              /* label value -> class index */
    int n_bad;
    char (*bad)[512];              /* one line per case that cannot be used */
} vbs_dataset;

typedef struct {
    const char *dir, *cache;       /* the training folder; where the preprocessed cases go */
    vbs_train_layout layout;
    const vbs_card *norm;          /* the normalisation (the model card's) */
    int skip_bad;
    int (*progress)(void *user, int done, int total, const char *id); /* non-zero stops */
    void *user;
} vbs_data_opts;

/* Finds, checks and preprocesses the training cases (or maps them from the
 * cache). Every bad case is listed in ds->bad; without skip_bad any makes
 * the call fail. Close ds either way. */
vbs_status vbs_dataset_open(const vbs_data_opts *o, vbs_dataset *ds, char *err);
void vbs_dataset_close(vbs_dataset *ds);
/* Drops case ci's mapped pages from the process's resident memory (after validation reads it whole). */
void vbs_data_release(const vbs_dataset *ds, int ci);

typedef struct {
    int dims;                      /* 2: axial slices, 3: patches */
    int64_t patch[3];              /* 2D: H, W; 3D: D, H, W */
    float fg_oversample;           /* share of examples centred on foreground (0.33) */
    int augment;                   /* 0 none, 1 light (flips), 2 default (+ intensity scale/shift, gamma) */
} vbs_sampler;

/* One training example from case ci: x (C x patch) and target (patch) class
 * indices, its randomness keyed by (seed, key). */
void vbs_data_example(const vbs_dataset *ds, const vbs_sampler *s, int ci, uint64_t seed, uint64_t key, float *x, uint8_t *t);

/* ---- optim.c ------------------------------------------------------------- */

typedef enum { VBS_OPT_ADAM = 0, VBS_OPT_ADAMW, VBS_OPT_SGD } vbs_opt_kind;
typedef enum { VBS_SCHED_CONSTANT = 0, VBS_SCHED_CYCLIC, VBS_SCHED_PLATEAU, VBS_SCHED_POLY } vbs_sched_kind;

typedef struct {
    vbs_opt_kind kind;
    float lr, beta1, beta2, eps;      /* Adam: 0.9, 0.999, 1e-8 */
    float momentum, weight_decay;     /* SGD: 0.9, 5e-4 (the paper's) */
    float clip;                       /* > 0: clip the global gradient norm to this */
    vbs_sched_kind sched;
    float lr_min;                     /* cyclic: lower bound; lr is the upper */
    int period;                       /* cyclic: steps per half cycle (Smith's step size) */
    float gamma;                      /* plateau: factor (0.1) */
    int patience;                     /* plateau: epochs without improvement */
    int total_epochs;                 /* poly: E in (1 - e/E)^0.9 */
} vbs_opt_cfg;

/* The schedule's state, saved in checkpoints. */
typedef struct {
    int64_t step;                     /* optimiser steps taken */
    float lr;                         /* plateau: the current rate */
    double best;                      /* plateau: best validation loss */
    int bad_epochs;
} vbs_sched_state;

void vbs_sched_init(const vbs_opt_cfg *c, vbs_sched_state *s);
/* The learning rate of the next step, at epoch (0-based). */
float vbs_sched_lr(const vbs_opt_cfg *c, const vbs_sched_state *s, int epoch);
/* After an epoch's validation: plateau bookkeeping. */
void vbs_sched_epoch_end(const vbs_opt_cfg *c, vbs_sched_state *s, double val_loss);
/* One step over n parameters: grad (read), m and v (Adam moments, or the SGD
 * velocity in m), decay[i] selects weight decay. t is the 1-based step. */
void vbs_opt_step(const vbs_opt_cfg *c, float lr, int64_t t, float *param, const float *grad, float *m, float *v, int64_t n,
                  int decay);
/* The global L2 norm of g over n floats (double accumulation, fixed order). */
double vbs_grad_norm(const float *g, int64_t n);

/* ---- step.c -------------------------------------------------------------- */

typedef struct {
    vbs_opt_cfg opt;
    uint64_t seed;                /* the weight draws, latent and heteroscedastic noise, Flipout signs */
    int threads;                  /* workers taking gradient groups */
    int groups;                   /* gradient groups per minibatch (fixed: the bytes do not depend on threads); 0 = 8 */
    int flipout;
    float kl_weight;              /* multiplies KL(q(w) || prior) */
    float latent_kl_weight;       /* multiplies the mean over examples of KL(q(z|x) || N(0, I)) */
} vbs_trainer_cfg;

/* A minibatch: n examples of c channels over nsp spatial dims, targets as class indices. */
typedef struct {
    int n, c, nsp;
    int64_t spatial[3];
    const float *x;               /* n x c x spatial */
    const uint8_t *y;             /* n x spatial */
} vbs_batch;

typedef struct {
    double loss;                  /* the objective: data terms + weighted KL terms */
    double dice, ce;              /* means over the minibatch: 1 - soft Dice, CE / BCE / heteroscedastic NLL */
    double kl_w;                  /* kl_weight * KL(q(w) || prior) */
    double kl_z;                  /* mean latent KL (unweighted) */
    double grad_norm;             /* before clipping */
    const char *bad_term;         /* the term that was not finite, or NULL */
} vbs_step_stats;

typedef struct {
    vbs_model *m;                 /* borrowed; trained in place */
    vbs_trainer_cfg cfg;
    vbs_params P;
    vbs_loss_spec loss;
    vbs_train_spec spec;
    char *pinned;
    int logits;                   /* the value the loss reads (vbs_model_logits): output 0, or the logits before its Softmax/Sigmoid */
    int hetero, bn, threads, groups;
    float *grad, *gradd;          /* the step's gradient (data-shaped); Flipout: the signed sums */
    float *adam_m, *adam_v;       /* the optimiser's moments (SGD: the velocity in adam_m) */
    vbs_train_worker *tw;         /* per thread */
    float **gbuf, **gdel, **gex, **wex, **lwork, **xbuf;
    size_t lwork_cap[64];
    vbs_loss_parts *parts;        /* per example of the step */
    double *kl_z;
    int parts_cap;
    int64_t fault_step;           /* the tests' injected NaN (VBS_FAULT), -1 none */
    struct vbs_opt_piece { int i; int64_t e0, n; } *opiece; /* the optimiser step's units: tensor i, elements [e0, e0 + n) */
    int n_opiece;
} vbs_trainer;

/* The Dice terms and heads of a model's card: BraTS and MSD Task01 regions
 * (WT, TC, ET), else every foreground class. */
void vbs_loss_spec_from_card(const vbs_card *card, int k, int hetero, vbs_loss_spec *s);
/* Takes over m's parameters (vbs_params_init) and allocates the optimiser
 * state and per-thread buffers. Set t->loss (vbs_loss_spec_from_card) before
 * the first step. */
vbs_status vbs_trainer_init(vbs_trainer *t, vbs_model *m, const vbs_trainer_cfg *cfg, char *err);
/* The objective and its gradient (t->grad: d/dmu, d/drho, d/dplain in the
 * parameters' layout) at the step's draws, without changing anything. */
vbs_status vbs_trainer_grad(vbs_trainer *t, const vbs_batch *b, int64_t step, vbs_step_stats *out, char *err);
/* One optimiser step (t: the 0-based step number, keying every random draw).
 * A loss that is not finite fails with VBS_ERR_NUMERIC and changes nothing. */
vbs_status vbs_trainer_step(vbs_trainer *t, const vbs_batch *b, int64_t step, float lr, vbs_step_stats *out, char *err);
void vbs_trainer_free(vbs_trainer *t);

/* ---- checkpoint.c ------------------------------------------------------ */

typedef struct {
    vbs_train_state state;          /* borrowed from the checkpoint's model */
    const vbs_tensor_def *optim;    /* the optimiser tensors (borrowed) */
    int n_optim;
} vbs_checkpoint;

/* Writes the model, the optimiser's moments and state atomically. */
vbs_status vbs_checkpoint_save(const vbs_trainer *t, const vbs_train_state *state, const char *path, char *err);
/* Splits a loaded checkpoint into its model (m keeps the model tensors only)
 * and its training state; refuses a plain model. */
vbs_status vbs_checkpoint_open(vbs_model *m, const char *path, vbs_checkpoint *ck, char *err);
/* The optimiser's moments into an initialised trainer; refuses what does not fit. */
vbs_status vbs_checkpoint_restore(vbs_trainer *t, const vbs_checkpoint *ck, const char *path, char *err);

/* ---- loop.c -------------------------------------------------------------- */

typedef enum { VBS_EV_START = 0, VBS_EV_STEP, VBS_EV_EPOCH, VBS_EV_EXPORT, VBS_EV_CHECKPOINT, VBS_EV_END } vbs_event_kind;

/* What the loop reports to its caller (on the calling thread). */
typedef struct {
    vbs_event_kind kind;
    int n_train, n_val, steps_per_epoch, epochs, threads;
    int val_examples;                /* START: slices (2D) or patches (3D) validated each epoch */
    float kl_weight, latent_kl_weight;
    int epoch;                       /* epochs done (STEP: the one in progress is epoch + 1) */
    int64_t step;                    /* optimiser steps done */
    int step_in_epoch;
    vbs_step_stats st;               /* STEP */
    float lr;
    double img_per_s, elapsed;
    const vbs_epoch_log *log;        /* EPOCH: this epoch's record; END: all n_log */
    int n_log;
    int best;                        /* EPOCH: a new best (exported) */
    int n_terms;
    const char *term_names[VBS_LOSS_MAX_TERMS];
    double term_dice[VBS_LOSS_MAX_TERMS], term_iou[VBS_LOSS_MAX_TERMS];
    int stop_reason;                 /* END: 1 epochs done, 2 time budget */
    double best_metric;
    int best_epoch;
} vbs_train_event;

typedef struct {
    const char *data, *out, *ckpt_dir, *resume;
    double val_frac;
    const char *val_cases;           /* comma-separated case ids, or NULL */
    vbs_sampler sampler;
    vbs_trainer_cfg tcfg;
    int batch, epochs, steps_per_epoch, kl_warmup, val_samples;
    int val_examples;                /* per epoch: slices (2D) or patches (3D) of the held-out cases, spread over them; 0 = whole cases;
                                        < 0: about a tenth of an epoch's arithmetic, 64..256 slices (3D: 8..32 patches) */
    double minutes;
    double kl_weight, latent_kl_weight; /* < 0: the defaults (1 / training voxels; 1 / patch voxels) */
    const char *options, *data_id;   /* recorded in checkpoints */
    volatile int *stop;              /* set (by a signal handler): checkpoint and stop */
    void (*on_event)(void *user, const vbs_train_event *e);
    void *user;
} vbs_train_opts;

/* Trains m (fresh, or restored from ck) on ds until o->epochs or o->minutes,
 * exporting the best epoch to o->out and a checkpoint and train_log.csv to
 * o->ckpt_dir each epoch. A stop request writes a checkpoint and fails with
 * VBS_ERR_CANCELLED; a loss that is not finite fails with VBS_ERR_NUMERIC
 * and leaves the last checkpoint as it was. */
vbs_status vbs_train_run(vbs_model *m, vbs_dataset *ds, const vbs_checkpoint *ck, const vbs_train_opts *o, char *err);

#endif
