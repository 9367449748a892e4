/*
 * params.c: the parameters of a model being trained. Every tensor is
 * copied into one owned allocation (as llm.c keeps its parameters) and the
 * model's tensors point into it, so the runtime, the optimiser and the
 * writer all see the same numbers. Bayes by Backprop's parts live here:
 * the step's weight draw w = mu + softplus(rho) * eps, the chain rule from
 * the gradient of w to those of mu and rho, and the KL of q(w) to the
 * prior recorded for each tensor (closed form for a Gaussian, the
 * one-sample estimate of Blundell et al. for the scale mixture).
 * Not here: the data loss (loss.c) and the update (optim.c).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "trainer.h"

#define LOG_SQRT_2PI 0.91893853320467274178 /* log(2 pi) / 2 */

static inline float sigmoidf(float x) { return 1.f / (1.f + expf(-x)); }

void vbs_params_free(vbs_params *p) {
    if (!p) return;
    free(p->data); free(p->toff); free(p->trained); free(p->decay); free(p->param_off); free(p->gspan); free(p->eps); free(p->wbuf);
    memset(p, 0, sizeof *p);
}

/* p->gspan: the tensors that param_off points into, adjacent ones merged,
 * cut into pieces of at most 4096 floats (a reduction's unit of work) */
static int gradient_spans(vbs_params *p, int n_tensors) {
    char *on = calloc((size_t)n_tensors + 1, 1);
    if (!on) return -1;
    const vbs_graph *g = &p->m->g;
    for (int v = 0; v < g->n_values; v++)
        if (p->param_off[v] >= 0) on[g->values[v].tensor] = 1;
    for (int pass = 0; pass < 2; pass++) { /* count, then fill */
        int n = 0;
        for (int i = 0; i < n_tensors;) {
            if (!on[i]) { i++; continue; }
            int64_t off = p->toff[i], end = off;
            while (i < n_tensors && on[i]) end = p->toff[i] + ((p->m->def.tensors[i].numel + 15) & ~(int64_t)15), i++;
            for (; off < end; off += 4096, n++)
                if (pass) { p->gspan[n][0] = off; p->gspan[n][1] = end - off < 4096 ? end - off : 4096; }
        }
        if (!pass && !(p->gspan = malloc(sizeof *p->gspan * (size_t)(n + 1)))) { free(on); return -1; }
        p->n_gspan = n;
    }
    free(on);
    return 0;
}

vbs_status vbs_params_init(vbs_params *p, vbs_model *m, char *err) {
    memset(p, 0, sizeof *p);
    vbs_def *d = &m->def;
    const vbs_graph *g = &m->g;
    p->m = m;
    p->toff = malloc(sizeof(int64_t) * (size_t)(d->n_tensors + 1));
    p->trained = calloc((size_t)d->n_tensors + 1, 1);
    p->decay = calloc((size_t)d->n_tensors + 1, 1);
    p->param_off = malloc(sizeof(int64_t) * (size_t)(g->n_values + 1));
    if (!p->toff || !p->trained || !p->decay || !p->param_off) goto oom;
    int64_t n = 0;
    for (int i = 0; i < d->n_tensors; i++) {
        p->toff[i] = n;
        n += (d->tensors[i].numel + 15) & ~(int64_t)15;
    }
    p->n = n;
    if (!(p->data = calloc((size_t)n + 16, sizeof(float)))) goto oom;
    for (int i = 0; i < d->n_tensors; i++) {
        memcpy(p->data + p->toff[i], d->tensors[i].data, sizeof(float) * (size_t)d->tensors[i].numel);
        d->tensors[i].data = p->data + p->toff[i];
        p->trained[i] = 1;
        p->decay[i] = d->tensors[i].role != VBS_ROLE_RHO;
        p->n_var += d->tensors[i].role == VBS_ROLE_MU;
    }
    /* running statistics follow the batches, not the gradient */
    for (int i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == VBS_OP_BATCH_NORM)
            for (int k = 3; k < 5; k++) {
                int v = g->nodes[i].in[k];
                if (v >= 0 && g->values[v].tensor >= 0) p->trained[g->values[v].tensor] = 0;
            }
    for (int v = 0; v < g->n_values; v++) {
        const vbs_value *val = &g->values[v];
        int on = (val->kind == VBS_VAL_WEIGHT || val->kind == VBS_VAL_VARWEIGHT) && p->trained[val->tensor];
        p->param_off[v] = on ? p->toff[val->tensor] : -1;
    }
    if (gradient_spans(p, d->n_tensors)) goto oom;
    if (g->var_total > 0) {
        p->eps = calloc((size_t)g->var_total + 16, sizeof(float));
        p->wbuf = aligned_alloc(VBS_ALIGN, (size_t)((g->var_total * 4 + VBS_ALIGN - 1) / VBS_ALIGN * VBS_ALIGN));
        if (!p->eps || !p->wbuf) goto oom;
    }
    return VBS_OK;
oom:
    vbs_params_free(p);
    return vbs_fail(err, VBS_ERR_NOMEM, "out of memory: the parameters being trained");
}

void vbs_params_sample(vbs_params *p, uint64_t seed, uint64_t draw) {
    const vbs_graph *g = &p->m->g;
    for (int v = 0; v < g->n_values; v++) {
        const vbs_value *val = &g->values[v];
        if (val->kind != VBS_VAL_VARWEIGHT) continue;
        const vbs_tensor_def *t = &p->m->def.tensors[val->tensor];
        float *eps = p->eps + val->var_off, *w = p->wbuf + val->var_off;
        const float *mu = t->data, *sg = g->sigma[val->tensor];
        vbs_randn(seed, draw, (uint32_t)val->tensor + 1u, 0, t->numel, eps);
        for (int64_t e = 0; e < t->numel; e++) w[e] = mu[e] + sg[e] * eps[e];
    }
}

void vbs_params_reparam(const vbs_params *p, float *gw) {
    const vbs_graph *g = &p->m->g;
    for (int v = 0; v < g->n_values; v++) {
        const vbs_value *val = &g->values[v];
        if (val->kind != VBS_VAL_VARWEIGHT || p->param_off[v] < 0) continue;
        const vbs_tensor_def *t = &p->m->def.tensors[val->tensor];
        const float *dw = gw + p->toff[val->tensor], *eps = p->eps + val->var_off, *rho = p->data + p->toff[val->rho];
        float *drho = gw + p->toff[val->rho];
        for (int64_t e = 0; e < t->numel; e++) drho[e] = dw[e] * eps[e] * sigmoidf(rho[e]);
    }
}

/* log of the scale-mixture prior density at w, and its derivative */
static double mixture_logp(const vbs_prior *pr, double w, double *dlogp) {
    double s1 = pr->sigma1, s2 = pr->sigma2, pi = pr->pi;
    double a = pi / s1 * exp(-0.5 * w * w / (s1 * s1)), b = (1 - pi) / s2 * exp(-0.5 * w * w / (s2 * s2)), sum = a + b;
    if (!(sum > 0)) { /* far in the tails: the wider component dominates */
        double sw = s1 > s2 ? s1 : s2, pw = s1 > s2 ? pi : 1 - pi;
        *dlogp = -w / (sw * sw);
        return log(pw / sw) - 0.5 * w * w / (sw * sw) - LOG_SQRT_2PI;
    }
    *dlogp = (-a * w / (s1 * s1) - b * w / (s2 * s2)) / sum;
    return log(sum) - LOG_SQRT_2PI;
}

double vbs_params_kl(const vbs_params *p, float scale, float *grad) {
    const vbs_graph *g = &p->m->g;
    double kl = 0;
    for (int v = 0; v < g->n_values; v++) {
        const vbs_value *val = &g->values[v];
        if (val->kind != VBS_VAL_VARWEIGHT) continue;
        const vbs_tensor_def *t = &p->m->def.tensors[val->tensor];
        const float *mu = t->data, *rho = p->data + p->toff[val->rho], *sg = g->sigma[val->tensor];
        float *dmu = grad && p->trained[val->tensor] ? grad + p->toff[val->tensor] : NULL;
        float *drho = grad && p->trained[val->rho] ? grad + p->toff[val->rho] : NULL;
        const vbs_prior *pr = &t->prior;
        double part = 0;
        if (!t->has_prior || pr->kind == VBS_PRIOR_GAUSSIAN) {
            /* KL(N(mu, s^2) || N(0, sp^2)) = log(sp/s) + (s^2 + mu^2) / (2 sp^2) - 1/2 */
            double sp = t->has_prior && pr->sigma > 0 ? pr->sigma : 1.0, isp2 = 1.0 / (sp * sp);
            for (int64_t e = 0; e < t->numel; e++) {
                double s = sg[e] > 1e-30f ? sg[e] : 1e-30, m = mu[e];
                part += log(sp / s) + 0.5 * (s * s + m * m) * isp2 - 0.5;
                if (dmu) dmu[e] += (float)(scale * m * isp2);
                if (drho) drho[e] += (float)(scale * (-1.0 / s + s * isp2) * sigmoidf(rho[e]));
            }
        } else {
            /* one-sample estimate at the step's draw: log q(w) - log p(w), w = mu + s eps */
            const float *eps = p->eps + val->var_off;
            for (int64_t e = 0; e < t->numel; e++) {
                double s = sg[e] > 1e-30f ? sg[e] : 1e-30, w = mu[e] + s * eps[e], dlp;
                double logq = -log(s) - 0.5 * (double)eps[e] * eps[e] - LOG_SQRT_2PI;
                part += logq - mixture_logp(pr, w, &dlp);
                /* d/dmu = -dlogp/dw; d/drho = (-1/s - dlogp/dw * eps) * sigmoid(rho) */
                if (dmu) dmu[e] += (float)(scale * -dlp);
                if (drho) drho[e] += (float)(scale * (-1.0 / s - dlp * eps[e]) * sigmoidf(rho[e]));
            }
        }
        kl += part;
    }
    return kl;
}

void vbs_params_refresh(vbs_params *p) {
    vbs_graph *g = &p->m->g;
    for (int v = 0; v < g->n_values; v++) {
        const vbs_value *val = &g->values[v];
        if (val->kind != VBS_VAL_VARWEIGHT) continue;
        const float *rho = p->data + p->toff[val->rho];
        float *s = g->sigma[val->tensor];
        for (int64_t e = 0; e < p->m->def.tensors[val->tensor].numel; e++) s[e] = vbs_softplus(rho[e]);
    }
}
