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

#include "../runtime/vmath.h"
#include "trainer.h"

#define LOG_SQRT_2PI 0.91893853320467274178 /* log(2 pi) / 2 */


#define VAR_PIECE 65536 /* floats: a thread's unit of the element-wise passes */

void vbs_params_free(vbs_params *p) {
    if (!p) return;
    free(p->data); free(p->toff); free(p->trained); free(p->decay); free(p->param_off); free(p->gspan); free(p->eps); free(p->wbuf);
    free(p->var_values); free(p->vpiece); free(p->vkl); free(p->sq);
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

/* The variational values in value order and largest first, cut into
 * pieces for threads; per-value and per-tensor sums. */
static int variational_work(vbs_params *p) {
    const vbs_graph *g = &p->m->g;
    int nv = 0;
    int64_t np = 0;
    for (int v = 0; v < g->n_values; v++)
        if (g->values[v].kind == VBS_VAL_VARWEIGHT) { nv++; np += (p->m->def.tensors[g->values[v].tensor].numel + VAR_PIECE - 1) / VAR_PIECE; }
    p->var_values = malloc(sizeof(int) * (size_t)(2 * nv + 1));
    p->vpiece = malloc(sizeof *p->vpiece * (size_t)(np + 1));
    p->vkl = malloc(sizeof(double) * (size_t)(g->n_values + 1));
    p->sq = malloc(sizeof(double) * (size_t)(p->m->def.n_tensors + 1));
    if (!p->var_values || !p->vpiece || !p->vkl || !p->sq || np > INT32_MAX) return -1;
    p->var_order = p->var_values + nv;
    p->n_var = nv = 0;
    p->n_vpiece = 0;
    for (int v = 0; v < g->n_values; v++) {
        if (g->values[v].kind != VBS_VAL_VARWEIGHT) continue;
        int64_t n = p->m->def.tensors[g->values[v].tensor].numel;
        p->var_values[nv] = v;
        /* insertion by size, larger first: the longest tasks start first */
        int j = nv++;
        while (j > 0 && p->m->def.tensors[g->values[p->var_order[j - 1]].tensor].numel < n) { p->var_order[j] = p->var_order[j - 1]; j--; }
        p->var_order[j] = v;
        for (int64_t e0 = 0; e0 < n; e0 += VAR_PIECE)
            p->vpiece[p->n_vpiece++] = (struct vbs_var_piece){v, e0, n - e0 < VAR_PIECE ? n - e0 : VAR_PIECE};
    }
    p->n_var = nv;
    return 0;
}

vbs_status vbs_params_init(vbs_params *p, vbs_model *m, char *err) {
    memset(p, 0, sizeof *p);
    p->threads = 1;
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
    if (gradient_spans(p, d->n_tensors) || variational_work(p)) goto oom;
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

/* the pieces of the variational tensors that threads take (p->vpiece) */
static void var_piece(const vbs_params *p, int i, const vbs_value **val, int64_t *e0, int64_t *n) {
    *val = &p->m->g.values[p->vpiece[i].v];
    *e0 = p->vpiece[i].e0;
    *n = p->vpiece[i].n;
}

void vbs_params_sample(vbs_params *p, uint64_t seed, uint64_t draw) {
    const vbs_graph *g = &p->m->g;
#pragma omp parallel for num_threads(p->threads) schedule(dynamic, 1) if (p->threads > 1)
    for (int i = 0; i < p->n_vpiece; i++) {
        const vbs_value *val;
        int64_t e0, n;
        var_piece(p, i, &val, &e0, &n);
        float *eps = p->eps + val->var_off + e0, *w = p->wbuf + val->var_off + e0;
        const float *mu = p->m->def.tensors[val->tensor].data + e0, *sg = g->sigma[val->tensor] + e0;
        vbs_randn(seed, draw, (uint32_t)val->tensor + 1u, (uint64_t)e0, n, eps);
        for (int64_t e = 0; e < n; e++) w[e] = mu[e] + sg[e] * eps[e];
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

#define KL_BLOCK 256 /* elements per block of var_tensor's vectorised loops */

/* x[0..n) summed in 8 interleaved double lanes, the lanes then pairwise: a
 * fixed order (the same bits on any thread), 8 chains of additions instead of one */
static inline __attribute__((always_inline)) double sum8(const double *x, int n) {
    double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) l[j] += x[i + j];
    for (int j = 0; i + j < n; j++) l[j] += x[i + j];
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

/* Variational value v: its KL and, with grad, its gradient (vbs_params_grad,
 * or without gw_rho vbs_params_kl's); sq[0], sq[1]: the sums of squares of
 * the mean's and rho's gradients after it. Blocks of KL_BLOCK elements in
 * loops the vectoriser takes (omp simd: it cannot see that the tensors do
 * not overlap): sigmoid and log from vmath.h; the rest in double as the
 * formulas say; each sum by blocks in element order (sum8 within one). */
static inline __attribute__((always_inline)) double var_tensor_body(const vbs_params *p, int v, float scale, float *grad,
                                                                    const float *gw_rho, double sq[2]) {
    const vbs_graph *g = &p->m->g;
    const vbs_value *val = &g->values[v];
    const vbs_tensor_def *t = &p->m->def.tensors[val->tensor];
    float *dmu = grad && p->trained[val->tensor] ? grad + p->toff[val->tensor] : NULL;
    float *drho = grad && p->trained[val->rho] ? grad + p->toff[val->rho] : NULL;
    /* the chain rule from w = mu + softplus(rho) eps: dL/drho = dL/dw . eps . sigmoid(rho) */
    const float *dw = drho && gw_rho && p->param_off[v] >= 0 ? gw_rho + p->toff[val->tensor] : NULL;
    const vbs_prior *pr = &t->prior;
    int gauss = !t->has_prior || pr->kind == VBS_PRIOR_GAUSSIAN;
    /* Gaussian: KL(N(mu, s^2) || N(0, sp^2)) = log(sp/s) + (s^2 + mu^2) / (2 sp^2) - 1/2 */
    double sp = t->has_prior && pr->kind == VBS_PRIOR_GAUSSIAN && pr->sigma > 0 ? pr->sigma : 1.0, isp2 = 1.0 / (sp * sp), lsp = log(sp);
    double part = 0, term[KL_BLOCK];
    float sig[KL_BLOCK];
    sq[0] = sq[1] = 0;
    for (int64_t e0 = 0; e0 < t->numel; e0 += KL_BLOCK) {
        int nb = t->numel - e0 < KL_BLOCK ? (int)(t->numel - e0) : KL_BLOCK;
        const float *mu = t->data + e0, *rho = p->data + p->toff[val->rho] + e0, *sg = g->sigma[val->tensor] + e0;
        const float *eps = p->eps + val->var_off + e0;
        float *dm = dmu ? dmu + e0 : NULL, *dr = drho ? drho + e0 : NULL;
#pragma omp simd
        for (int j = 0; j < nb; j++) sig[j] = 1.f / (1.f + vbs_exp_poly(-rho[j]));
        if (dw) { /* before dm changes: dw may be dmu */
            const float *d = dw + e0;
#pragma omp simd
            for (int j = 0; j < nb; j++) dr[j] = d[j] * eps[j] * sig[j];
        }
        if (gauss) {
#pragma omp simd
            for (int j = 0; j < nb; j++) {
                float s = sg[j] > 1e-30f ? sg[j] : 1e-30f;
                term[j] = lsp - (double)vbs_log_poly(s) + 0.5 * ((double)s * s + (double)mu[j] * mu[j]) * isp2 - 0.5;
            }
            if (dm)
#pragma omp simd
                for (int j = 0; j < nb; j++) dm[j] += (float)(scale * (double)mu[j] * isp2);
            if (dr)
#pragma omp simd
                for (int j = 0; j < nb; j++) {
                    double s = sg[j] > 1e-30f ? sg[j] : 1e-30f;
                    dr[j] += (float)(scale * (-1.0 / s + s * isp2) * sig[j]);
                }
        } else
            for (int j = 0; j < nb; j++) {
                /* one-sample estimate at the step's draw: log q(w) - log p(w), w = mu + s eps */
                double s = sg[j] > 1e-30f ? sg[j] : 1e-30, w = mu[j] + s * eps[j], dlp;
                double logq = -log(s) - 0.5 * (double)eps[j] * eps[j] - LOG_SQRT_2PI;
                term[j] = logq - mixture_logp(pr, w, &dlp);
                /* d/dmu = -dlogp/dw; d/drho = (-1/s - dlogp/dw * eps) * sigmoid(rho) */
                if (dm) dm[j] += (float)(scale * -dlp);
                if (dr) dr[j] += (float)(scale * (-1.0 / s - dlp * eps[j]) * sig[j]);
            }
        part += sum8(term, nb);
        for (int k = 0; k < 2; k++) {
            const float *d = k ? dr : dm;
            if (!d) continue;
#pragma omp simd
            for (int j = 0; j < nb; j++) term[j] = (double)d[j] * d[j];
            sq[k] += sum8(term, nb);
        }
    }
    return part;
}

static double var_tensor_base(const vbs_params *p, int v, float scale, float *grad, const float *gw_rho, double sq[2]) {
    return var_tensor_body(p, v, scale, grad, gw_rho, sq);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) static double var_tensor_avx2(const vbs_params *p, int v, float scale, float *grad,
                                                                   const float *gw_rho, double sq[2]) {
    return var_tensor_body(p, v, scale, grad, gw_rho, sq);
}
/* the same loops in 16 lanes (sum8's lanes stay 8): the same bits */
__attribute__((target("avx512f,avx2,fma"))) static double var_tensor_avx512(const vbs_params *p, int v, float scale, float *grad,
                                                                            const float *gw_rho, double sq[2]) {
    return var_tensor_body(p, v, scale, grad, gw_rho, sq);
}
#define var_tensor (vbs_cpu_avx512() ? var_tensor_avx512 : VBS_PICK(var_tensor))
#else
#define var_tensor var_tensor_base
#endif

double vbs_params_grad(vbs_params *p, float scale, float *grad, const float *gw_rho) {
    const vbs_graph *g = &p->m->g;
    for (int i = 0; i < p->m->def.n_tensors; i++) p->sq[i] = -1;
#pragma omp parallel for num_threads(p->threads) schedule(dynamic, 1) if (p->threads > 1)
    for (int i = 0; i < p->n_var; i++) {
        int v = p->var_order[i];
        double sq[2];
        p->vkl[v] = var_tensor(p, v, scale, grad, gw_rho, sq);
        if (grad && p->trained[g->values[v].tensor]) p->sq[g->values[v].tensor] = sq[0];
        if (grad && p->trained[g->values[v].rho]) p->sq[g->values[v].rho] = sq[1];
    }
    double kl = 0; /* in value order */
    for (int i = 0; i < p->n_var; i++) kl += p->vkl[p->var_values[i]];
    return kl;
}

double vbs_params_kl(const vbs_params *p, float scale, float *grad) {
    double kl = 0, sq[2];
    for (int i = 0; i < p->n_var; i++) kl += var_tensor(p, p->var_values[i], scale, grad, NULL, sq);
    return kl;
}

void vbs_params_refresh(vbs_params *p) {
    vbs_graph *g = &p->m->g;
#pragma omp parallel for num_threads(p->threads) schedule(dynamic, 1) if (p->threads > 1)
    for (int i = 0; i < p->n_vpiece; i++) {
        const vbs_value *val;
        int64_t e0, n;
        var_piece(p, i, &val, &e0, &n);
        const float *rho = p->data + p->toff[val->rho] + e0;
        float *s = g->sigma[val->tensor] + e0;
        for (int64_t e = 0; e < n; e++) s[e] = vbs_softplus(rho[e]);
    }
}
