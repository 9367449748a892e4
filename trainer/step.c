/*
 * step.c: one optimiser step of Bayes by Backprop over a minibatch.
 *
 *   1. the step's weight draw w = mu + softplus(rho) * eps (one per
 *      minibatch, Blundell et al.), or with --flipout a per-example
 *      perturbation w_n = mu + (sigma * eps) . (r_n s_n^T) (Wen et al. 2018)
 *      with random signs over the tensor's first two axes;
 *   2. per example: a training forward (exec.c), the data loss and the
 *      latent's KL into the output and latent gradients (loss.c), the
 *      backward into a gradient buffer;
 *   3. the gradients reduced in a fixed order: the minibatch is cut into a
 *      fixed number of groups (independent of the thread count); threads
 *      take groups, each group's gradient is summed in a buffer of its own,
 *      and the groups are added in group order, so the same seed gives the
 *      same bytes at any thread count;
 *   4. mu and rho from w (params.c), the KL of the weights, optional
 *      gradient-norm clipping, the update (optim.c), sigma refreshed, and
 *      BatchNormalization's running statistics.
 * A model with BatchNormalization in training mode needs the whole
 * minibatch in one pass (its statistics are the batch's): one group of
 * one pass. No kernels here.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/ops/ops.h"
#include "trainer.h"

#define OPT_PIECE 65536 /* floats: a thread's unit of the optimiser step */


void vbs_trainer_free(vbs_trainer *t) {
    if (!t) return;
    for (int w = 0; w < t->threads; w++) {
        if (t->tw) vbs_train_worker_free(&t->tw[w]);
        if (t->gbuf) free(t->gbuf[w]);
        if (t->gdel) free(t->gdel[w]);
        if (t->gex) free(t->gex[w]);
        if (t->wex) free(t->wex[w]);
        if (t->lwork) free(t->lwork[w]);
        if (t->xbuf) free(t->xbuf[w]);
    }
    free(t->tw); free(t->gbuf); free(t->gdel); free(t->gex); free(t->wex); free(t->lwork); free(t->xbuf);
    free(t->grad); free(t->gradd); free(t->adam_m); free(t->adam_v); free(t->pinned); free(t->parts); free(t->opiece);
    vbs_params_free(&t->P);
    memset(t, 0, sizeof *t);
}

/* the Dice terms of a card: BraTS / MSD regions, else each foreground class */
void vbs_loss_spec_from_card(const vbs_card *card, int k, int hetero, vbs_loss_spec *s) {
    memset(s, 0, sizeof *s);
    s->k = k;
    s->sigmoid = k == 1;
    s->hetero = hetero;
    s->samples = 10;
    s->w_dice = 0.9f;
    s->w_ce = 0.1f;
    s->smooth = 1.f;
    if (k == 1) { s->n_terms = 1; s->term_classes[0] = 2; return; } /* the sigmoid's foreground */
    int cls[256];
    for (int v = 0; v < 256; v++) cls[v] = -1;
    for (int c = 0; c < card->n_labels && c < k; c++)
        if (card->labels[c].value >= 0 && card->labels[c].value < 256) cls[card->labels[c].value] = c;
    static const int sets[3][3][3] = {{{1, 2, 4}, {1, 4, -1}, {4, -1, -1}},   /* BraTS 2018/2021: WT, TC, ET */
                                      {{1, 2, 3}, {1, 3, -1}, {3, -1, -1}},   /* BraTS 2023 */
                                      {{1, 2, 3}, {2, 3, -1}, {3, -1, -1}}};  /* MSD Task01: edema, non-enhancing, enhancing */
    int conv = card->label_convention == VBS_LABELS_BRATS_2018 ? 0 : card->label_convention == VBS_LABELS_BRATS_2023 ? 1
             : card->label_convention == VBS_LABELS_MSD && k == 4 ? 2 : -1;
    if (conv >= 0) {
        for (int r = 0; r < 3; r++) {
            uint64_t m = 0;
            for (int j = 0; j < 3; j++)
                if (sets[conv][r][j] >= 0 && cls[sets[conv][r][j]] >= 0) m |= 1ull << cls[sets[conv][r][j]];
            if (m) s->term_classes[s->n_terms++] = m;
        }
        if (s->n_terms == 3) return;
        s->n_terms = 0;
    }
    for (int c = 1; c < k && s->n_terms < VBS_LOSS_MAX_TERMS; c++) s->term_classes[s->n_terms++] = 1ull << c;
}

vbs_status vbs_trainer_init(vbs_trainer *t, vbs_model *m, const vbs_trainer_cfg *cfg, char *err) {
    memset(t, 0, sizeof *t);
    t->m = m;
    t->cfg = *cfg;
    vbs_status st = vbs_params_init(&t->P, m, err);
    if (st) return st;
    const vbs_graph *g = &m->g;
    const vbs_card *card = &m->def.card;
    if (m->def.n_inputs != 1) return vbs_fail(err, VBS_ERR_UNSUPPORTED, "training needs a model with one graph input, not %d", m->def.n_inputs);
    t->hetero = card->heteroscedastic && m->def.n_outputs >= 2;
    for (int i = 0; i < g->n_nodes; i++) t->bn |= g->nodes[i].op == VBS_OP_BATCH_NORM;
    if (t->bn && cfg->flipout)
        return vbs_fail(err, VBS_ERR_UNSUPPORTED, "--flipout needs one pass per example, but BatchNormalization trains on the whole minibatch in one pass");
    t->threads = t->bn ? 1 : cfg->threads > 0 ? cfg->threads : 1;
    if (t->threads > 64) t->threads = 64;
    t->P.threads = cfg->threads > 0 ? (cfg->threads < 64 ? cfg->threads : 64) : 1;
    /* the optimiser's units: the trained tensors in pieces of OPT_PIECE */
    int64_t np = 0;
    for (int i = 0; i < m->def.n_tensors; i++) np += t->P.trained[i] ? (m->def.tensors[i].numel + OPT_PIECE - 1) / OPT_PIECE : 0;
    if (np > INT32_MAX || !(t->opiece = malloc(sizeof *t->opiece * (size_t)(np + 1)))) return vbs_fail(err, VBS_ERR_NOMEM, "out of memory");
    for (int i = 0; i < m->def.n_tensors; i++)
        for (int64_t e0 = 0; t->P.trained[i] && e0 < m->def.tensors[i].numel; e0 += OPT_PIECE)
            t->opiece[t->n_opiece++] = (struct vbs_opt_piece){i, e0, m->def.tensors[i].numel - e0 < OPT_PIECE ? m->def.tensors[i].numel - e0 : OPT_PIECE};
    /* the latent's mean and rho receive its KL before the backward */
    t->pinned = calloc((size_t)g->n_values + 1, 1);
    if (!t->pinned) return vbs_fail(err, VBS_ERR_NOMEM, "out of memory");
    for (int i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == VBS_OP_GAUSSIAN_SAMPLE)
            for (int k = 0; k < 2; k++)
                if (g->nodes[i].in[k] >= 0 && g->values[g->nodes[i].in[k]].kind == VBS_VAL_ACT) t->pinned[g->nodes[i].in[k]] = 1;
    /* the loss reads logits: before the graph's own final Softmax or Sigmoid, if it has one */
    if ((st = vbs_model_logits(m, &t->logits, err))) return st;
    t->pinned[t->logits] = 1;
    t->spec.param_off = t->P.param_off;
    t->spec.pinned = t->pinned;
    int64_t n = t->P.n + 16;
    t->grad = calloc((size_t)n, sizeof(float));
    t->gradd = cfg->flipout ? calloc((size_t)n, sizeof(float)) : NULL;
    t->adam_m = calloc((size_t)n, sizeof(float));
    t->adam_v = calloc((size_t)n, sizeof(float));
    t->tw = calloc((size_t)t->threads, sizeof *t->tw);
    t->gbuf = calloc((size_t)t->threads, sizeof(float *));
    t->gdel = calloc((size_t)t->threads, sizeof(float *));
    t->gex = calloc((size_t)t->threads, sizeof(float *));
    t->wex = calloc((size_t)t->threads, sizeof(float *));
    t->lwork = calloc((size_t)t->threads, sizeof(float *));
    t->xbuf = calloc((size_t)t->threads, sizeof(float *));
    if (!t->grad || !t->adam_m || !t->adam_v || !t->tw || !t->gbuf || !t->gdel || !t->gex || !t->wex || !t->lwork || !t->xbuf ||
        (cfg->flipout && !t->gradd))
        return vbs_fail(err, VBS_ERR_NOMEM, "out of memory: optimiser state for %lld parameters", (long long)t->P.n);
    for (int w = 0; w < t->threads; w++) {
        t->gbuf[w] = malloc(sizeof(float) * (size_t)n);
        if (!t->gbuf[w]) return vbs_fail(err, VBS_ERR_NOMEM, "out of memory: gradient buffers");
        if (cfg->flipout) {
            t->gdel[w] = malloc(sizeof(float) * (size_t)n);
            t->gex[w] = malloc(sizeof(float) * (size_t)n);
            t->wex[w] = aligned_alloc(VBS_ALIGN, (size_t)((g->var_total * 4 + VBS_ALIGN - 1) / VBS_ALIGN * VBS_ALIGN + VBS_ALIGN));
            if (!t->gdel[w] || !t->gex[w] || !t->wex[w]) return vbs_fail(err, VBS_ERR_NOMEM, "out of memory: Flipout buffers");
        }
    }
    t->groups = t->bn ? 1 : cfg->groups > 0 ? cfg->groups : 8;
    /* a fault for the tests: VBS_FAULT=train-loss-nan:STEP makes that step's loss NaN */
    const char *f = getenv("VBS_FAULT");
    t->fault_step = f && !strncmp(f, "train-loss-nan:", 15) ? strtoll(f + 15, NULL, 10) : -1;
    return VBS_OK;
}

/* Flipout: signs r over axis 0 and s over axis 1 of each variational tensor,
 * from the RNG keyed by (seed, key); w = mu + sign * (w_drawn - mu) */
static void flipout_weights(const vbs_trainer *t, uint64_t key, float *w) {
    const vbs_graph *g = &t->m->g;
    for (int v = 0; v < g->n_values; v++) {
        const vbs_value *val = &g->values[v];
        if (val->kind != VBS_VAL_VARWEIGHT) continue;
        const vbs_tensor_def *td = &t->m->def.tensors[val->tensor];
        const float *mu = td->data, *wd = t->P.wbuf + val->var_off;
        float *out = w + val->var_off;
        int64_t d0 = td->dims[0], d1 = td->ndim > 1 ? td->dims[1] : 1, inner = td->numel / (d0 * d1);
        float sg[1024];
        for (int64_t a = 0; a < d0; a += 1) {
            for (int64_t b0 = 0; b0 < d1; b0 += 512) {
                int64_t nb = d1 - b0 < 512 ? d1 - b0 : 512;
                /* r_a and s_b: the sign bits of normals drawn for this tensor and example */
                float ra;
                vbs_randn(t->cfg.seed, key, 0x20000000u + (uint32_t)val->tensor * 2u, (uint64_t)a, 1, &ra);
                vbs_randn(t->cfg.seed, key, 0x20000001u + (uint32_t)val->tensor * 2u, (uint64_t)b0, nb, sg);
                for (int64_t b = 0; b < nb; b++) {
                    float sign = (ra >= 0) == (sg[b] >= 0) ? 1.f : -1.f;
                    int64_t base = (a * d1 + b0 + b) * inner;
                    for (int64_t e = 0; e < inner; e++) out[base + e] = mu[base + e] + sign * (wd[base + e] - mu[base + e]);
                }
            }
        }
    }
}

/* gdel += g . sign (the same signs), at each variational tensor's offset */
static void flipout_accumulate(const vbs_trainer *t, uint64_t key, const float *gex, float *gdel) {
    const vbs_graph *g = &t->m->g;
    for (int v = 0; v < g->n_values; v++) {
        const vbs_value *val = &g->values[v];
        if (val->kind != VBS_VAL_VARWEIGHT || t->P.param_off[v] < 0) continue;
        const vbs_tensor_def *td = &t->m->def.tensors[val->tensor];
        int64_t off = t->P.toff[val->tensor], d0 = td->dims[0], d1 = td->ndim > 1 ? td->dims[1] : 1, inner = td->numel / (d0 * d1);
        float sg[512];
        for (int64_t a = 0; a < d0; a++) {
            float ra;
            vbs_randn(t->cfg.seed, key, 0x20000000u + (uint32_t)val->tensor * 2u, (uint64_t)a, 1, &ra);
            for (int64_t b0 = 0; b0 < d1; b0 += 512) {
                int64_t nb = d1 - b0 < 512 ? d1 - b0 : 512;
                vbs_randn(t->cfg.seed, key, 0x20000001u + (uint32_t)val->tensor * 2u, (uint64_t)b0, nb, sg);
                for (int64_t b = 0; b < nb; b++) {
                    float sign = (ra >= 0) == (sg[b] >= 0) ? 1.f : -1.f;
                    int64_t base = off + (a * d1 + b0 + b) * inner;
                    for (int64_t e = 0; e < inner; e++) gdel[base + e] += sign * gex[base + e];
                }
            }
        }
    }
}

/* zeroes the pieces of a gradient buffer that a backward writes (gspan) */
static void zero_spans(const vbs_params *P, float *g) {
    for (int c = 0; c < P->n_gspan; c++) memset(g + P->gspan[c][0], 0, sizeof(float) * (size_t)P->gspan[c][1]);
}

static vbs_status ensure_lwork(vbs_trainer *t, int w, size_t need, char *err) {
    if (need <= t->lwork_cap[w]) return VBS_OK;
    free(t->lwork[w]);
    t->lwork[w] = malloc(sizeof(float) * need);
    t->lwork_cap[w] = t->lwork[w] ? need : 0;
    return t->lwork[w] ? VBS_OK : vbs_fail(err, VBS_ERR_NOMEM, "out of memory: loss scratch");
}

/* One pass over examples [n0, n0 + nb) of the minibatch on worker w (nb > 1
 * only for BatchNormalization models): forward, loss, latent KL, backward
 * into gacc (and, with Flipout, the signed gradient into gdel). */
static vbs_status pass(vbs_trainer *t, int w, const vbs_batch *b, int n0, int nb, int64_t step, float *gacc, float *gdel, char *err) {
    const vbs_model *m = t->m;
    const vbs_graph *g = &m->g;
    vbs_train_worker *tw = &t->tw[w];
    int64_t V = 1;
    for (int i = 0; i < b->nsp; i++) V *= b->spatial[i];
    vbs_shape in = {2 + b->nsp, {nb, b->c}};
    for (int i = 0; i < b->nsp; i++) in.d[2 + i] = b->spatial[i];
    const float *x = b->x + (int64_t)n0 * b->c * V;
    uint64_t key = (uint64_t)step * (uint64_t)b->n + (uint64_t)n0;
    const float *wb = g->var_total > 0 ? t->P.wbuf : NULL;
    if (t->cfg.flipout && wb) {
        flipout_weights(t, key, t->wex[w]);
        wb = t->wex[w];
    }
    const float *inputs[1] = {x};
    vbs_status st = vbs_train_forward(tw, m, &t->spec, inputs, &in, wb, 1, t->cfg.seed, key, 0, err);
    if (st) return st;
    int v0 = t->logits, v1 = t->hetero ? g->output_vals[1] : -1;
    const vbs_shape *ys = &tw->w.plan.shapes[v0];
    if (ys->ndim != in.ndim || ys->d[1] != t->loss.k || vbs_shape_numel(ys) != (int64_t)nb * t->loss.k * V)
        return vbs_fail(err, VBS_ERR_SHAPE, "output '%s' is not %d classes at the input's size", m->def.outputs[0].name, t->loss.k);
    if ((st = ensure_lwork(t, w, vbs_loss_work(&t->loss, V), err))) return st;
    const float *lg = vbs_worker_value(&tw->w, m, v0), *lv = v1 >= 0 ? vbs_worker_value(&tw->w, m, v1) : NULL;
    float *dz = vbs_train_grad(tw, v0), *ds = v1 >= 0 ? vbs_train_grad(tw, v1) : NULL;
    float scale = 1.f / (float)b->n;
    for (int j = 0; j < nb; j++) {
        int64_t o = (int64_t)j * t->loss.k * V;
        vbs_loss_parts lp = vbs_loss_example(&t->loss, lg + o, lv ? lv + o : NULL, b->y + (int64_t)(n0 + j) * V, V, scale, dz + o,
                                             ds ? ds + o : NULL, t->cfg.seed, key + (uint64_t)j, t->lwork[w]);
        t->parts[n0 + j] = lp;
        t->kl_z[n0 + j] = 0;
    }
    /* the latent's KL per example, into its mean and rho */
    for (int i = 0; i < g->n_nodes; i++) {
        const vbs_node *nd = &g->nodes[i];
        if (nd->op != VBS_OP_GAUSSIAN_SAMPLE || nd->in[0] < 0 || nd->in[1] < 0 || !t->pinned[nd->in[0]]) continue;
        int64_t cnt = vbs_shape_numel(&tw->w.plan.shapes[nd->in[0]]) / nb;
        const float *mean = vbs_worker_value(&tw->w, m, nd->in[0]), *rho = vbs_worker_value(&tw->w, m, nd->in[1]);
        float *dm = vbs_train_grad(tw, nd->in[0]), *dr = vbs_train_grad(tw, nd->in[1]);
        for (int j = 0; j < nb; j++)
            t->kl_z[n0 + j] += vbs_latent_kl(mean + j * cnt, rho + j * cnt, cnt, t->cfg.latent_kl_weight * scale, dm ? dm + j * cnt : NULL,
                                             dr ? dr + j * cnt : NULL);
    }
    float *gb = gacc;
    if (gdel) { zero_spans(&t->P, t->gex[w]); gb = t->gex[w]; }
    if ((st = vbs_train_backward(tw, m, &t->spec, gb, 0, err))) return st;
    if (gdel) {
        for (int c = 0; c < t->P.n_gspan; c++) {
            int64_t off = t->P.gspan[c][0], cnt = t->P.gspan[c][1];
            for (int64_t i = off; i < off + cnt; i++) gacc[i] += gb[i];
        }
        flipout_accumulate(t, key, gb, gdel);
    }
    return VBS_OK;
}

vbs_status vbs_trainer_grad(vbs_trainer *t, const vbs_batch *b, int64_t step, vbs_step_stats *out, char *err) {
    const vbs_model *m = t->m;
    const vbs_graph *g = &m->g;
    memset(out, 0, sizeof *out);
    if (b->n < 1 || b->n > 4096) return vbs_fail(err, VBS_ERR_ARG, "minibatch of %d examples", b->n);
    if (b->n > t->parts_cap) {
        free(t->parts);
        t->parts = calloc((size_t)b->n, sizeof *t->parts + sizeof(double));
        if (!t->parts) { t->parts_cap = 0; return vbs_fail(err, VBS_ERR_NOMEM, "out of memory"); }
        t->kl_z = (double *)(t->parts + b->n);
        t->parts_cap = b->n;
    }
    if (g->var_total > 0) vbs_params_sample(&t->P, t->cfg.seed, (uint64_t)step);
    int64_t n = t->P.n;
    memset(t->grad, 0, sizeof(float) * (size_t)n);
    if (t->gradd) memset(t->gradd, 0, sizeof(float) * (size_t)n);
    int G = t->bn ? 1 : (t->groups < b->n ? t->groups : b->n), T = t->threads < G ? t->threads : G;
    char errs[64][VBS_ERRLEN];
    vbs_status sts[64];
    vbs_blas_set_threads(1);
    for (int r0 = 0; r0 < G; r0 += T) {
        int active = G - r0 < T ? G - r0 : T;
#pragma omp parallel for num_threads(active) schedule(static, 1) if (active > 1)
        for (int w = 0; w < active; w++) {
            int grp = r0 + w, e0 = (int)((int64_t)grp * b->n / G), e1 = (int)((int64_t)(grp + 1) * b->n / G);
            zero_spans(&t->P, t->gbuf[w]);
            if (t->gdel[w]) zero_spans(&t->P, t->gdel[w]);
            sts[w] = VBS_OK;
            if (t->bn) sts[w] = pass(t, w, b, 0, b->n, step, t->gbuf[w], NULL, errs[w]);
            else
                for (int e = e0; e < e1 && !sts[w]; e++) sts[w] = pass(t, w, b, e, 1, step, t->gbuf[w], t->gdel[w], errs[w]);
        }
        for (int w = 0; w < active; w++)
            if (sts[w]) return vbs_fail(err, sts[w], "%s", errs[w]);
        /* the groups in group order; the written pieces split between threads */
#pragma omp parallel for num_threads(T) schedule(static) if (T > 1)
        for (int c = 0; c < t->P.n_gspan; c++) {
            int64_t c0 = t->P.gspan[c][0], c1 = c0 + t->P.gspan[c][1];
            for (int w = 0; w < active; w++) {
                vbs_grad_add(t->grad + c0, t->gbuf[w] + c0, c1 - c0);
                if (t->gradd) vbs_grad_add(t->gradd + c0, t->gdel[w] + c0, c1 - c0);
            }
        }
    }
    /* BatchNormalization: the running statistics follow this batch (one pass: worker 0 holds it) */
    if (t->bn) {
        const vbs_train_worker *tw = &t->tw[0];
        for (int i = 0; i < g->n_nodes; i++) {
            const vbs_node *nd = &tw->w.plan.nodes[i];
            if (nd->op != VBS_OP_BATCH_NORM || tw->soff[i] < 0 || nd->in[3] < 0 || nd->in[4] < 0) continue;
            const vbs_shape *xs = &tw->w.plan.shapes[nd->in[0]];
            int64_t ch = xs->d[1], count = vbs_shape_numel(xs) / ch;
            float *rm = t->P.data + t->P.toff[g->values[nd->in[3]].tensor], *rv = t->P.data + t->P.toff[g->values[nd->in[4]].tensor];
            vbs_batch_norm_update_running(nd, ch, count, tw->saved + tw->soff[i], rm, rv);
        }
    }
    /* dL/dw -> dL/dmu, dL/drho and the KL; with Flipout the rho part comes from the signed sums */
    double klw = vbs_params_grad(&t->P, t->cfg.kl_weight, t->grad, t->gradd ? t->gradd : t->grad) * t->cfg.kl_weight;
    for (int e = 0; e < b->n; e++) {
        out->dice += t->parts[e].dice / b->n;
        out->ce += t->parts[e].ce / b->n;
        out->loss += t->parts[e].total / b->n;
        out->kl_z += t->kl_z[e] / b->n;
    }
    out->kl_w = klw;
    if (step == t->fault_step) out->ce = NAN;
    out->loss += klw + t->cfg.latent_kl_weight * out->kl_z;
    /* a NaN or Inf anywhere stops here, before any parameter changes */
    const char *bad = !isfinite(out->dice) ? "Dice" : !isfinite(out->ce) ? (t->hetero ? "heteroscedastic NLL" : "cross-entropy")
                    : !isfinite(out->kl_w) ? "weight KL" : !isfinite(out->kl_z) ? "latent KL" : NULL;
    double norm2 = 0;
    for (int i = 0; i < m->def.n_tensors && !bad; i++) {
        if (!t->P.trained[i]) continue;
        const float *gi = t->grad + t->P.toff[i];
        double s = t->P.sq[i]; /* the variational tensors' from vbs_params_grad */
        if (s < 0)
            for (int64_t e = s = 0; e < m->def.tensors[i].numel; e++) s += (double)gi[e] * gi[e];
        norm2 += s;
    }
    out->grad_norm = sqrt(norm2);
    /* beyond 1e18 Adam's squared gradient overflows float: as bad as a NaN */
    if (!bad && !(out->grad_norm < 1e18)) bad = isfinite(out->grad_norm) ? "gradient (its norm overflows the update)" : "gradient";
    if (bad) {
        out->bad_term = bad;
        return vbs_fail(err, VBS_ERR_NUMERIC, "step %lld: the %s is not finite (loss %g); parameters unchanged", (long long)step, bad, out->loss);
    }
    return VBS_OK;
}

vbs_status vbs_trainer_step(vbs_trainer *t, const vbs_batch *b, int64_t step, float lr, vbs_step_stats *out, char *err) {
    vbs_status st = vbs_trainer_grad(t, b, step, out, err);
    if (st) return st;
    float clip = t->cfg.opt.clip > 0 && out->grad_norm > t->cfg.opt.clip ? (float)(t->cfg.opt.clip / out->grad_norm) : 1.f;
    /* element-wise: pieces of the trained tensors in any order, on any thread */
#pragma omp parallel for num_threads(t->P.threads) schedule(dynamic, 1) if (t->P.threads > 1)
    for (int k = 0; k < t->n_opiece; k++) {
        int i = t->opiece[k].i;
        int64_t off = t->P.toff[i] + t->opiece[k].e0, cnt = t->opiece[k].n;
        if (clip != 1.f)
            for (int64_t e = off; e < off + cnt; e++) t->grad[e] *= clip;
        vbs_opt_step(&t->cfg.opt, lr, step + 1, t->P.data + off, t->grad + off, t->adam_m + off, t->adam_v + off, cnt, t->P.decay[i]);
    }
    vbs_params_refresh(&t->P);
    return VBS_OK;
}
