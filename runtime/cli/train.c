/*
 * train.c: `vbseg train`: options, the data (trainer/data.c: found, checked,
 * preprocessed once), a new model from --arch (or --init from a file, or the
 * model of --resume's checkpoint), the memory check before the first step,
 * SIGINT/SIGTERM (checkpoint, then the command that resumes), the progress
 * line, and training_curves.png at the end. The training itself is
 * trainer/loop.c's.
 *
 * Every option that shapes the result is kept, as one canonical line, in
 * the checkpoints: `--resume CKPT` takes them from there (so it continues
 * the same run byte for byte), and refuses any given again with another
 * value. Only --threads, --quiet and the stopping point (--epochs,
 * --minutes) may change on a resume.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "train_curves.h"
#include "trainer.h"
#include "net.h"

static const char *help =
    "usage: vbseg train --data DIR --out MODEL.vbseg [--arch unet|vnet|fcn] [--dims 2|3] [--base 16] [--depth D]\n"
    "                   [--latent 10] [--hetero] [--norm instance|batch|none] [--epochs E | --minutes M]\n"
    "                   [--batch 16] [--lr 1e-3] [--optimizer adam|adamw|sgd] [--schedule constant|cyclic|plateau|poly]\n"
    "                   [--val 0.2 | --val-cases A,B,...] [--seed S] [--threads T] [--checkpoint-dir DIR]\n"
    "                   [--resume CKPT] [--quiet]\n"
    "  data:     [--layout auto|nnunet|brats2021|brats2023|msd] [--skip-bad] [--cache DIR] [--patch 128x128]\n"
    "            [--fg-oversample 0.33] [--augment none|light|default] [--steps-per-epoch N]\n"
    "  model:    [--init MODEL.vbseg] [--rho -5] [--flipout] [--prior gaussian:1 | mixture:PI,SIGMA1,SIGMA2]\n"
    "            [--dropout P (MC dropout: Dropouts of ratio P where vbseg create --help says, any --arch)]\n"
    "            [--deterministic (plain weights, sigma = 0: the baseline; with --dropout, pure MC dropout)]\n"
    "  loss:     [--kl-weight W] [--kl-warmup EPOCHS] [--latent-kl W]\n"
    "  optimiser:[--momentum 0.9] [--weight-decay W] [--clip NORM] [--lr-min 1e-5] [--cycle STEPS]\n"
    "            [--gamma 0.1] [--patience 5]\n"
    "  validation: [--val-samples 4] [--val-examples N (default: about a tenth of an epoch's work, 2D 64-256 slices,\n"
    "               3D 8-32 patches; 0: whole cases)]\n"
    "\n"
    "Trains a variational segmentation network by Bayes by Backprop on the labelled\n"
    "cases of DIR (nnU-Net raw, BraTS 2018/2021/2023 or MSD Task01; the layout is\n"
    "detected and said). The loss is 0.9 soft Dice + 0.1 cross-entropy (for a\n"
    "heteroscedastic head Kendall & Gal's sampled-logit likelihood) + the KL terms\n"
    "(see the README). Each epoch validates on the held-out cases (a fixed set of\n"
    "--val-examples slices or patches spread over them; mean mode and --val-samples\n"
    "Monte-Carlo samples) and exports the best epoch by validation Dice to\n"
    "MODEL.vbseg, ready for vbseg infer; --minutes counts the last validation in\n"
    "its budget. A checkpoint and train_log.csv go\n"
    "to --checkpoint-dir (default MODEL.vbseg's folder + /MODEL.train), and\n"
    "training_curves.png at the end. The preprocessed cases are cached in\n"
    "MODEL.cache (--cache). Ctrl-C writes a checkpoint and prints the command that\n"
    "resumes; --resume continues byte for byte as if the run had not stopped.\n"
    "--arch: unet, vnet (Milletari et al. 2016) or fcn (FCN-8s); each family, its\n"
    "--depth and its default depth as in vbseg create --help.\n";

/* ---- the options that shape the run (kept in checkpoints) ------------------ */

typedef struct {
    char data[PATH_MAX], out[PATH_MAX], arch[16], norm[16], opt[16], sched[16], layout[16], augment[16], patch[64], val_cases[1024];
    char init[PATH_MAX], cache[PATH_MAX], ckdir[PATH_MAX], prior[64];
    long long dims, base, depth, latent, hetero, batch, seed, skip_bad, steps_per_epoch, flipout, kl_warmup, val_samples, val_examples, cycle, patience, epochs;
    long long deterministic;
    double lr, val, fg, rho, kl, latent_kl, momentum, wd, clip, lr_min, gamma, minutes, dropout;
} topts;

typedef enum { T_STR, T_INT, T_FLOAT, T_FLAG } ttype;
typedef struct { const char *name; ttype type; size_t off, len; double lo, hi; int kept; } tdef;

#define S(f, n) {n, T_STR, offsetof(topts, f), sizeof(((topts *)0)->f), 0, 0, 1}
#define I(f, n, lo, hi) {n, T_INT, offsetof(topts, f), 0, lo, hi, 1}
#define F(f, n, lo, hi) {n, T_FLOAT, offsetof(topts, f), 0, lo, hi, 1}
#define G(f, n) {n, T_FLAG, offsetof(topts, f), 0, 0, 1, 1}
static const tdef defs[] = {
    S(data, "--data"), S(out, "--out"), S(arch, "--arch"), S(norm, "--norm"), S(opt, "--optimizer"), S(sched, "--schedule"),
    S(layout, "--layout"), S(augment, "--augment"), S(patch, "--patch"), S(val_cases, "--val-cases"), S(init, "--init"),
    S(cache, "--cache"), S(ckdir, "--checkpoint-dir"), S(prior, "--prior"),
    I(dims, "--dims", 2, 3), I(base, "--base", 1, 4096), I(depth, "--depth", 0, 8), I(latent, "--latent", 0, 4096), G(hetero, "--hetero"),
    I(batch, "--batch", 1, 4096), I(seed, "--seed", 0, 9007199254740991.0), G(skip_bad, "--skip-bad"),
    I(steps_per_epoch, "--steps-per-epoch", 0, 1000000), G(flipout, "--flipout"), I(kl_warmup, "--kl-warmup", 0, 100000),
    I(val_samples, "--val-samples", 0, 1000), I(val_examples, "--val-examples", -1, 100000000), I(cycle, "--cycle", 1, 100000000), I(patience, "--patience", 0, 100000),
    F(lr, "--lr", 1e-12, 10), F(val, "--val", 0, 0.9), F(fg, "--fg-oversample", 0, 1), F(rho, "--rho", -30, 10), F(kl, "--kl-weight", -1, 1e6),
    F(latent_kl, "--latent-kl", -1, 1e6), F(momentum, "--momentum", 0, 1), F(wd, "--weight-decay", -1, 10), F(clip, "--clip", 0, 1e12),
    F(lr_min, "--lr-min", 0, 10), F(gamma, "--gamma", 1e-6, 1), F(dropout, "--dropout", 0, 0.99), G(deterministic, "--deterministic"),
    /* where the run stops: kept, so that a resume stops where the run would have, but it may change */
    {"--epochs", T_INT, offsetof(topts, epochs), 0, -1, 1000000, 0}, {"--minutes", T_FLOAT, offsetof(topts, minutes), 0, -1, 1e7, 0},
};
#define NDEFS ((int)(sizeof defs / sizeof defs[0]))

static int seen_def(const char *seen, const char *name) {
    for (int d = 0; d < NDEFS; d++)
        if (!strcmp(defs[d].name, name)) return seen[d];
    return 0;
}

static void defaults(topts *o) {
    memset(o, 0, sizeof *o);
    strcpy(o->arch, "unet"); strcpy(o->norm, "instance"); strcpy(o->opt, "adam"); strcpy(o->sched, "constant");
    strcpy(o->layout, "auto"); strcpy(o->augment, "default"); strcpy(o->prior, "gaussian:1");
    o->dims = 2; o->base = 16; o->depth = -1; /* the family's */ o->latent = 10; o->batch = 16; o->steps_per_epoch = 0; o->val_samples = 4; o->val_examples = -1;
    o->cycle = 2000; o->patience = 5; o->lr = 1e-3; o->val = 0.2; o->fg = 0.33; o->rho = -5; o->kl = -1; o->latent_kl = -1;
    o->momentum = 0.9; o->wd = -1; o->clip = 0; o->lr_min = 1e-5; o->gamma = 0.1; o->epochs = -1; o->minutes = -1;
}

/* sets one option from its text; 0 (and a message) if the value is bad */
static int set_opt(topts *o, const tdef *d, const char *v) {
    char *p = (char *)o + d->off;
    if (d->type == T_STR) {
        if (strlen(v) >= d->len) { cli_error("train", "%s: value too long", d->name); return 0; }
        strcpy(p, v);
        return 1;
    }
    if (d->type == T_FLAG) { *(long long *)p = strcmp(v, "0") != 0; return 1; }
    if (d->type == T_INT) return cli_int("train", d->name, v, (long long)d->lo, (long long)d->hi, (long long *)p);
    double x;
    if (!cli_float("train", d->name, v, &x)) return 0;
    if (x < d->lo || x > d->hi) { cli_error("train", "%s %g is not in %g..%g", d->name, x, d->lo, d->hi); return 0; }
    *(double *)p = x;
    return 1;
}

static void opt_text(const topts *o, const tdef *d, char *buf, size_t n) {
    const char *p = (const char *)o + d->off;
    if (d->type == T_STR) snprintf(buf, n, "%s", p);
    else if (d->type == T_INT || d->type == T_FLAG) snprintf(buf, n, "%lld", *(const long long *)p);
    else snprintf(buf, n, "%.17g", *(const double *)p);
}

/* the canonical line: every kept option as NAME=VALUE separated by tabs */
static void canonical(const topts *o, char *buf, size_t n) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < NDEFS && k < n; i++) {
        char v[PATH_MAX + 64];
        opt_text(o, &defs[i], v, sizeof v);
        k += (size_t)snprintf(buf + k, n - k, "%s%s=%s", i ? "\t" : "", defs[i].name + 2, v);
    }
}

static int parse_canonical(topts *o, const char *line) {
    defaults(o);
    char *copy = strdup(line), *save = NULL;
    if (!copy) return 0;
    int ok = 1;
    for (char *tok = strtok_r(copy, "\t", &save); tok && ok; tok = strtok_r(NULL, "\t", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) { ok = 0; break; }
        *eq = 0;
        int i = 0;
        while (i < NDEFS && strcmp(defs[i].name + 2, tok)) i++;
        if (i == NDEFS) { ok = 0; break; }
        ok = set_opt(o, &defs[i], eq + 1);
    }
    free(copy);
    return ok;
}

/* ---- progress ----------------------------------------------------------------- */

typedef struct {
    int quiet, tty, epochs;
    double minutes, t0, last;
    const char *out;
    double last_val_dice;
    int have_val;
    int three, val_samples;
} reporter;

static const char *dur(double s, char *b, size_t n) {
    if (s < 0) s = 0;
    if (s < 3600) snprintf(b, n, "%d:%02d", (int)s / 60, (int)s % 60);
    else snprintf(b, n, "%d:%02d:%02d", (int)s / 3600, (int)s / 60 % 60, (int)s % 60);
    return b;
}

static void on_event(void *user, const vbs_train_event *e) {
    reporter *r = user;
    if (r->quiet) return;
    char a[32], b[32];
    switch (e->kind) {
    case VBS_EV_START:
        fprintf(stderr, "vbseg train: %d training and %d validation cases; %d steps per epoch; %d thread%s; KL weights %.3g (weights), %.3g (latent)\n",
                e->n_train, e->n_val, e->steps_per_epoch, e->threads, e->threads == 1 ? "" : "s", (double)e->kl_weight, (double)e->latent_kl_weight);
        if (e->n_val)
            fprintf(stderr, "vbseg train: validation each epoch: %d %s of %d held-out case%s, mean mode and %d sample%s\n", e->val_examples,
                    r->three ? (e->val_examples == 1 ? "patch or case" : "patches or cases") : (e->val_examples == 1 ? "slice" : "slices"), e->n_val,
                    e->n_val == 1 ? "" : "s", r->val_samples, r->val_samples == 1 ? "" : "s");
        if (e->epoch) fprintf(stderr, "vbseg train: resuming after epoch %d, step %lld\n", e->epoch, (long long)e->step);
        break;
    case VBS_EV_STEP: {
        double now_s = e->elapsed, total_steps = r->epochs > 0 ? (double)r->epochs * e->steps_per_epoch : 0;
        double done = (double)e->epoch * e->steps_per_epoch + e->step_in_epoch;
        double eta = r->minutes > 0 ? r->minutes * 60 - now_s : total_steps > 0 && done > 0 ? now_s / done * (total_steps - done) : 0;
        if (!r->tty && e->step_in_epoch != e->steps_per_epoch && now_s - r->last < 30) break;
        r->last = now_s;
        char val[64] = "", of[24] = "";
        if (r->have_val) snprintf(val, sizeof val, " | val Dice %.3f", r->last_val_dice);
        if (r->epochs > 0) snprintf(of, sizeof of, "/%d", r->epochs);
        fprintf(stderr, "%sepoch %d%s step %d/%d | loss %.4f (Dice %.3f, CE %.3f, KL %.3g)%s | lr %.2g | %.1f img/s | %s elapsed, ETA %s%s",
                r->tty ? "\r\033[K" : "", e->epoch + 1, of, e->step_in_epoch,
                e->steps_per_epoch, e->st.loss, 1 - e->st.dice, e->st.ce, e->st.kl_w, val, (double)e->lr, e->img_per_s, dur(now_s, a, sizeof a),
                dur(eta, b, sizeof b), r->tty ? "" : "\n");
        break;
    }
    case VBS_EV_EPOCH: {
        const vbs_epoch_log *l = e->log;
        r->last_val_dice = l->val_dice_mc;
        r->have_val = e->n_val > 0;
        if (r->tty) fprintf(stderr, "\r\033[K");
        fprintf(stderr, "epoch %d: loss %.4f (1-Dice %.3f, CE %.3f, KL %.3g)", l->epoch, l->loss, l->dice_loss, l->ce, l->kl);
        if (e->n_val) {
            fprintf(stderr, " | val loss %.4f, Dice %.3f (MC %.3f), epistemic %.4f |", l->val_loss, l->val_dice, l->val_dice_mc, l->val_epistemic);
            for (int i = 0; i < e->n_terms; i++) fprintf(stderr, " %s %.3f/%.3f", e->term_names[i], e->term_dice[i], e->term_iou[i]);
            fprintf(stderr, " (Dice/IoU)");
        }
        fprintf(stderr, " | %.1f img/s, %s%s\n", l->images_per_s, dur(e->elapsed, a, sizeof a), e->best ? " | best so far: exported" : "");
        break;
    }
    default: break;
    }
}

static volatile int g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

/* the memory a step needs, from a training plan of one pass, against the machine's */
static int check_memory(vbs_model *m, const vbs_sampler *s, int C, int passes_batch, int threads, int64_t cache_bytes, char *msg, size_t n) {
    vbs_shape in = {2 + s->dims, {passes_batch, C}};
    for (int i = 0; i < s->dims; i++) in.d[2 + i] = s->patch[i];
    vbs_plan p;
    char err[VBS_ERRLEN];
    if (vbs_plan_build_ex(&p, &m->g, &in, 1, err)) { snprintf(msg, n, "%s", err); return 0; }
    int64_t params = 0;
    for (int i = 0; i < m->def.n_tensors; i++) params += m->def.tensors[i].numel;
    /* activations and their gradients and scratch per worker; parameters, moments and gradient buffers */
    double bytes = 4.0 * ((double)(2 * p.arena_floats + p.work_floats) * threads + (double)params * (5 + 2 * threads));
    vbs_plan_free(&p);
    double have = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    (void)cache_bytes;
    if (have > 0 && bytes > 0.8 * have) {
        snprintf(msg, n, "this configuration needs about %.1f GB for a step (%d thread%s, minibatch pass of %d), more than 80%% of this machine's %.1f GB; "
                 "use a smaller --batch, --patch, --base or --threads", bytes / 1e9, threads, threads == 1 ? "" : "s", passes_batch, have / 1e9);
        return 0;
    }
    snprintf(msg, n, "about %.0f MB for a step", bytes / 1e6);
    return 1;
}

int cmd_train(int argc, char **argv) {
    topts o, given;
    defaults(&o);
    char seen[NDEFS];
    memset(seen, 0, sizeof seen);
    const char *resume = NULL;
    int quiet = 0;
    long long threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(help, stdout); return 0; }
        if (!strcmp(a, "--quiet")) { quiet = 1; continue; }
        int d = 0;
        while (d < NDEFS && strcmp(defs[d].name, a)) d++;
        if (d < NDEFS && defs[d].type == T_FLAG) { set_opt(&o, &defs[d], "1"); seen[d] = 1; continue; }
        if (!(v = cli_value("train", argc, argv, &i))) return 2;
        if (d < NDEFS) { if (!set_opt(&o, &defs[d], v)) return 2; seen[d] = 1; }
        else if (!strcmp(a, "--resume")) resume = v;
        else if (!strcmp(a, "--threads")) { if (!cli_int("train", a, v, 0, 64, &threads)) return 2; }
        else { cli_error("train", "unknown option '%s' (see --help)", a); return 2; }
    }
    given = o;
    vbs_model *m = NULL;
    vbs_checkpoint ck;
    int have_ck = 0;
    if (resume) {
        if (vbs_model_load(resume, &m)) { cli_error("train", "%s", vbs_model_errmsg(m)); vbs_model_free(m); return 1; }
        char err[VBS_ERRLEN];
        if (vbs_checkpoint_open(m, resume, &ck, err)) { cli_error("train", "%s", err); vbs_model_free(m); return 1; }
        if (!ck.state.options || !parse_canonical(&o, ck.state.options)) {
            cli_error("train", "%s: field 'train_state.options' is not this version's", resume);
            vbs_model_free(m);
            return 1;
        }
        for (int d = 0; d < NDEFS; d++) {
            if (!seen[d]) continue;
            if (!defs[d].kept) { /* the stopping point: the given value wins */
                char v[PATH_MAX + 64];
                opt_text(&given, &defs[d], v, sizeof v);
                set_opt(&o, &defs[d], v);
                continue;
            }
            char a[PATH_MAX + 64], b[PATH_MAX + 64];
            opt_text(&given, &defs[d], a, sizeof a);
            opt_text(&o, &defs[d], b, sizeof b);
            if (strcmp(a, b)) {
                cli_error("train", "%s: %s %s differs from the checkpoint's %s; a resume continues the same run (only --threads, --quiet, --epochs and --minutes may change)",
                          resume, defs[d].name, a, b);
                vbs_model_free(m);
                return 2;
            }
        }
        have_ck = 1;
    }
    if (!o.data[0] || !o.out[0]) { cli_error("train", "--data and --out are required (see --help)"); vbs_model_free(m); return 2; }
    if (o.init[0] && o.dropout > 0) {
        cli_error("train", "--dropout builds Dropout into a new network; the --init model keeps its own graph (and its Dropout nodes)");
        vbs_model_free(m);
        return 2;
    }
    if (o.init[0] && o.deterministic) {
        cli_error("train", "--deterministic builds a new network with plain weights; the --init model keeps its own tensors");
        vbs_model_free(m);
        return 2;
    }
    if (o.deterministic && (o.flipout || seen_def(seen, "--rho") || seen_def(seen, "--prior"))) {
        cli_error("train", "--%s is for variational weights; --deterministic has none (sigma = 0)",
                  o.flipout ? "flipout" : seen_def(seen, "--rho") ? "rho" : "prior");
        vbs_model_free(m);
        return 2;
    }
    if ((seen_def(seen, "--epochs") && o.epochs < 1) || (seen_def(seen, "--minutes") && !(o.minutes > 0))) {
        cli_error("train", "--epochs and --minutes must be positive");
        vbs_model_free(m);
        return 2;
    }
    if (o.epochs < 0 && o.minutes < 0) o.epochs = 50;
    long long epochs = o.epochs;
    double minutes = o.minutes;
    vbs_arch arch;
    if (!vbs_arch_parse(o.arch, &arch)) { cli_error("train", "--arch '%s' is not unet, vnet or fcn", o.arch); vbs_model_free(m); return 2; }
    if (o.depth < 0) o.depth = vbs_net_defaults(arch).depth;
    vbs_sampler smp = {(int)o.dims, {0, 0, 0}, (float)o.fg, 2};
    if (!strcmp(o.augment, "none")) smp.augment = 0;
    else if (!strcmp(o.augment, "light")) smp.augment = 1;
    else if (strcmp(o.augment, "default")) { cli_error("train", "--augment must be none, light or default"); vbs_model_free(m); return 2; }
    if (o.patch[0]) {
        int64_t p[8];
        int np = cli_shape(o.patch, p, 8);
        if (np != smp.dims) { cli_error("train", "--patch '%s' needs %d sizes for --dims %d", o.patch, smp.dims, smp.dims); vbs_model_free(m); return 2; }
        for (int i = 0; i < np; i++) smp.patch[i] = p[i];
    } else for (int i = 0; i < smp.dims; i++) smp.patch[i] = smp.dims == 2 ? 128 : 64;
    vbs_prior prior = {VBS_PRIOR_GAUSSIAN, 1.f, 0, 0, 0};
    {
        double a, b, c;
        char tail;
        if (sscanf(o.prior, "gaussian:%lf%c", &a, &tail) == 1 && a > 0 && a < 1e6) prior.sigma = (float)a;
        else if (sscanf(o.prior, "mixture:%lf,%lf,%lf%c", &a, &b, &c, &tail) == 3 && a >= 0 && a <= 1 && b > 0 && c > 0 && b < 1e6 && c < 1e6)
            prior = (vbs_prior){VBS_PRIOR_MIXTURE, 0, (float)a, (float)b, (float)c};
        else { cli_error("train", "--prior '%s' is not gaussian:SIGMA or mixture:PI,SIGMA1,SIGMA2", o.prior); vbs_model_free(m); return 2; }
    }
    vbs_train_layout lay;
    if (!vbs_train_layout_parse(o.layout, &lay)) { cli_error("train", "--layout must be auto, nnunet, brats2021, brats2023 or msd"); vbs_model_free(m); return 2; }
    vbs_opt_cfg oc = {.kind = VBS_OPT_ADAM, .lr = (float)o.lr, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .momentum = (float)o.momentum,
                      .weight_decay = (float)(o.wd >= 0 ? o.wd : 0), .clip = (float)o.clip, .lr_min = (float)o.lr_min, .period = (int)o.cycle,
                      .gamma = (float)o.gamma, .patience = (int)o.patience, .total_epochs = epochs > 0 ? (int)epochs : 0};
    if (!strcmp(o.opt, "adamw")) oc.kind = VBS_OPT_ADAMW;
    else if (!strcmp(o.opt, "sgd")) { oc.kind = VBS_OPT_SGD; if (o.wd < 0) oc.weight_decay = 5e-4f; } /* the paper's SGD: momentum 0.9, decay 5e-4 */
    else if (strcmp(o.opt, "adam")) { cli_error("train", "--optimizer must be adam, adamw or sgd"); vbs_model_free(m); return 2; }
    static const char *const sch[] = {"constant", "cyclic", "plateau", "poly"};
    int si = 0;
    while (si < 4 && strcmp(sch[si], o.sched)) si++;
    if (si == 4) { cli_error("train", "--schedule must be constant, cyclic, plateau or poly"); vbs_model_free(m); return 2; }
    oc.sched = (vbs_sched_kind)si;
    if (oc.sched == VBS_SCHED_POLY && !oc.total_epochs) { cli_error("train", "--schedule poly needs --epochs"); vbs_model_free(m); return 2; }
    /* where things go: the model, its cache, its checkpoints */
    char cache[PATH_MAX], ckdir[PATH_MAX];
    snprintf(cache, sizeof cache, "%s", o.cache[0] ? o.cache : "");
    if (!cache[0]) snprintf(cache, sizeof cache, "%.4000s.cache", o.out);
    if (o.ckdir[0]) snprintf(ckdir, sizeof ckdir, "%s", o.ckdir);
    else snprintf(ckdir, sizeof ckdir, "%.4000s.train", o.out);
    if (mkdir(ckdir, 0755) && errno != EEXIST) { cli_error("train", "%s: cannot create the checkpoint folder: %s", ckdir, strerror(errno)); vbs_model_free(m); return 1; }
    /* the data */
    vbs_dataset ds;
    memset(&ds, 0, sizeof ds);
    vbs_card norm_card;
    memset(&norm_card, 0, sizeof norm_card);
    norm_card.normalization = VBS_NORM_ZSCORE_NONZERO;
    const vbs_card *nc = &norm_card;
    vbs_model *init = NULL;
    if (!have_ck && o.init[0]) {
        if (vbs_model_load(o.init, &init)) { cli_error("train", "%s", vbs_model_errmsg(init)); vbs_model_free(init); return 1; }
        nc = vbs_model_card(init);
        if (nc->normalization == VBS_NORM_NONE && !quiet)
            fprintf(stderr, "vbseg train: %s: the model card's normalization is none: training on raw intensities "
                            "(set it with vbseg convert --card, e.g. \"normalization\": \"zscore_nonzero\")\n", o.init);
    } else if (have_ck) nc = vbs_model_card(m);
    vbs_data_opts dopt = {o.data, cache, lay, nc, (int)o.skip_bad, NULL, NULL};
    char err[2048];
    int rc = 1;
    if (!quiet) fprintf(stderr, "vbseg train: reading %s (preprocessed cases are cached in %s)\n", o.data, cache);
    vbs_status st = vbs_dataset_open(&dopt, &ds, err);
    for (int i = 0; i < ds.n_bad; i++) fprintf(stderr, "vbseg train: %s\n", ds.bad[i]);
    if (st) { cli_error("train", "%s", err); goto out; }
    if (!quiet) {
        fprintf(stderr, "vbseg train: %s layout, %d case%s, %d channel%s (", vbs_train_layout_name(ds.layout), ds.n, ds.n == 1 ? "" : "s", ds.C,
                ds.C == 1 ? "" : "s");
        for (int c = 0; c < ds.C; c++) fprintf(stderr, "%s%s", c ? ", " : "", ds.meta.channel[c]);
        fprintf(stderr, "), labels");
        for (int k = 0; k < ds.n_classes; k++) fprintf(stderr, " %d=%s", ds.meta.label_value[k], ds.meta.label_name[k]);
        fprintf(stderr, "%s\n", ds.n_bad ? " (bad cases skipped)" : "");
    }
    /* the model: the checkpoint's, --init's, or a new one */
    if (!have_ck) {
        if (init) { m = init; init = NULL; }
        else {
            vbs_net_opts u = vbs_net_defaults(arch);
            u.dims = (int)o.dims; u.in_channels = ds.C; u.classes = ds.n_classes; u.base = (int)o.base; u.depth = (int)o.depth;
            u.latent = (int)o.latent; u.hetero = (int)o.hetero; u.rho0 = (float)o.rho; u.seed = (uint64_t)o.seed;
            u.dropout = (float)o.dropout;
            u.deterministic = (int)o.deterministic;
            u.norm = !strcmp(o.norm, "none") ? VBS_NET_NORM_NONE : !strcmp(o.norm, "batch") ? VBS_NET_NORM_BATCH : VBS_NET_NORM_INSTANCE;
            if (strcmp(o.norm, "none") && strcmp(o.norm, "batch") && strcmp(o.norm, "instance")) { cli_error("train", "--norm must be instance, batch or none"); rc = 2; goto out; }
            char why[256];
            if (!vbs_net_check(arch, &u, why, sizeof why)) { cli_error("train", "%s", why); rc = 2; goto out; }
            for (int i = 0; i < smp.dims; i++) u.patch[i] = smp.patch[i];
            /* the parameters alone, before building them: moments, gradients and copies make about 8 of each */
            double floats = vbs_net_floats(arch, &u);
            double have = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE), need = 4.0 * 8 * floats;
            if (have > 0 && need > 0.8 * have) {
                cli_error("train", "this configuration needs about %.1f GB for its %.3g parameters alone, more than 80%% of this machine's %.1f GB; "
                          "use a smaller --base or --depth", need / 1e9, floats / 2, have / 1e9);
                goto out;
            }
            if ((st = vbs_net_build(arch, &u, &m))) { cli_error("train", "%s", vbs_model_errmsg(m)); goto out; }
        }
        /* the prior of every variational tensor: the given one (a new model's default is N(0, 1)) */
        if (!o.init[0] || seen_def(seen, "--prior"))
            for (int i = 0; i < m->def.n_tensors; i++)
                if (m->def.tensors[i].role == VBS_ROLE_MU) { m->def.tensors[i].prior = prior; m->def.tensors[i].has_prior = 1; }
    }
    {
        vbs_value_info in;
        vbs_model_input(m, 0, &in);
        if (in.ndim != 2 + smp.dims) { cli_error("train", "%s: the model takes %dD input, --dims is %d", o.init[0] ? o.init : "--arch", in.ndim - 2, smp.dims); goto out; }
        if (in.dims[1] > 0 && in.dims[1] != ds.C) { cli_error("train", "%s: the model takes %lld channels, the data has %d", o.init[0] ? o.init : "--arch", (long long)in.dims[1], ds.C); goto out; }
    }
    int bn = 0;
    for (int i = 0; i < m->g.n_nodes; i++) bn |= m->g.nodes[i].op == VBS_OP_BATCH_NORM;
    int nthreads = threads ? (int)threads : vbs_default_threads();
    char mem[512];
    if (!check_memory(m, &smp, ds.C, bn ? (int)o.batch : 1, bn ? 1 : nthreads, 0, mem, sizeof mem)) { cli_error("train", "%s", mem); goto out; }
    /* what a resume must match: the options and the data */
    char canon[8192], data_id[64];
    canonical(&o, canon, sizeof canon);
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < ds.n; i++)
        for (const char *p = ds.cases[i].id; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    for (int i = 0; i < ds.n; i++)
        for (int q = 0; q < 3; q++) h = (h ^ (uint64_t)ds.cases[i].d[q]) * 1099511628211ull;
    snprintf(data_id, sizeof data_id, "%d cases %016llx", ds.n, (unsigned long long)h);
    if (have_ck && (!ck.state.data_id || strcmp(ck.state.data_id, data_id))) {
        cli_error("train", "%s: the checkpoint was made with other training data (%s, now %s)", resume, ck.state.data_id ? ck.state.data_id : "?", data_id);
        goto out;
    }
    reporter rep = {quiet, isatty(2), (int)epochs, minutes, 0, -1e9, o.out, 0, 0, smp.dims == 3, (int)o.val_samples};
    vbs_train_opts to = {.data = o.data, .out = o.out, .ckpt_dir = ckdir, .resume = resume, .val_frac = o.val, .val_cases = o.val_cases,
                         .sampler = smp, .batch = (int)o.batch, .epochs = epochs > 0 ? (int)epochs : 0, .steps_per_epoch = (int)o.steps_per_epoch,
                         .kl_warmup = (int)o.kl_warmup, .val_samples = (int)o.val_samples,
                         .val_examples = (int)o.val_examples, .minutes = minutes > 0 ? minutes : 0,
                         .kl_weight = o.kl, .latent_kl_weight = o.latent_kl, .options = canon, .data_id = data_id, .stop = &g_stop,
                         .on_event = on_event, .user = &rep};
    to.tcfg = (vbs_trainer_cfg){.opt = oc, .seed = (uint64_t)o.seed, .threads = nthreads, .groups = 0, .flipout = (int)o.flipout};
    if (!quiet) fprintf(stderr, "vbseg train: %s\n", mem);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    st = vbs_train_run(m, &ds, have_ck ? &ck : NULL, &to, err);
    if (rep.tty && !quiet) fprintf(stderr, "\r\033[K");
    /* the curves from the log the run wrote */
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/train_log.csv", ckdir);
    FILE *lf = fopen(path, "r");
    int curves_failed = 0; /* said, and the run exits 1: the disk that refused it may refuse the next file too */
    if (lf) {
        vbs_epoch_log *log = malloc(sizeof *log * 4096);
        int nl = 0;
        char line[1024];
        if (log && fgets(line, sizeof line, lf))
            while (nl < 4096 && fgets(line, sizeof line, lf)) {
                vbs_epoch_log *e = &log[nl];
                long long step;
                if (sscanf(line, "%d,%lld,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf", &e->epoch, &step, &e->loss, &e->dice_loss, &e->ce, &e->kl,
                           &e->val_loss, &e->val_dice, &e->val_dice_mc, &e->val_epistemic, &e->lr, &e->seconds, &e->images_per_s) == 13) {
                    e->step = step;
                    nl++;
                }
            }
        fclose(lf);
        snprintf(path, sizeof path, "%s/training_curves.png", ckdir);
        char e2[1024];
        if (nl && !write_training_curves(path, log, nl, e2, sizeof e2)) { cli_error("train", "%s", e2); curves_failed = 1; }
        free(log);
    }
    if (st == VBS_ERR_CANCELLED) {
        fprintf(stderr, "vbseg train: %s\nvbseg train: to continue: vbseg train --resume %s/checkpoint.vbseg\n", err, ckdir);
        rc = 130;
        goto out;
    }
    if (st == VBS_ERR_NUMERIC) {
        struct stat sb;
        snprintf(path, sizeof path, "%s/checkpoint.vbseg", ckdir);
        if (!stat(path, &sb)) cli_error("train", "%s; the last checkpoint, %s, is as it was; train again with a lower --lr or with --clip", err, path);
        else cli_error("train", "%s; no epoch had finished, so there is no checkpoint", err);
        goto out;
    }
    /* the model does not fit the data or the trainer: name the file it came from */
    if (st == VBS_ERR_SHAPE || st == VBS_ERR_UNSUPPORTED) { cli_error("train", "%s: %s", have_ck ? resume : o.init[0] ? o.init : "--arch", err); goto out; }
    if (st) { cli_error("train", "%s", err); goto out; }
    if (curves_failed) goto out;
    if (!quiet) fprintf(stderr, "vbseg train: done; the best epoch is in %s; log, curves and checkpoint in %s\n", o.out, ckdir);
    rc = 0;
out:
    vbs_dataset_close(&ds);
    vbs_model_free(init);
    vbs_model_free(m);
    return rc;
}
