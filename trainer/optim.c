/*
 * optim.c: the optimisers and learning-rate schedules of the trainer.
 *   Adam (Kingma & Ba, with bias correction, as torch.optim.Adam; weight
 *   decay added to the gradient), AdamW (decoupled decay, as
 *   torch.optim.AdamW), SGD with momentum (torch.optim.SGD: v = m v + g,
 *   p -= lr v; decay added to the gradient);
 *   schedules: constant; triangular cyclical (Smith 2017) between lr_min and
 *   lr with a half period of `period` steps; ReduceLROnPlateau on the
 *   validation loss (factor gamma after `patience` epochs without
 *   improvement); nnU-Net's poly decay lr (1 - epoch / E)^0.9.
 * Updates are element-wise in a fixed order: the same bytes at any thread count.
 */
#include <math.h>

#include "trainer.h"

void vbs_sched_init(const vbs_opt_cfg *c, vbs_sched_state *s) {
    s->step = 0;
    s->lr = c->lr;
    s->best = INFINITY;
    s->bad_epochs = 0;
}

float vbs_sched_lr(const vbs_opt_cfg *c, const vbs_sched_state *s, int epoch) {
    switch (c->sched) {
    case VBS_SCHED_CYCLIC: {
        int64_t half = c->period > 0 ? c->period : 1;
        int64_t cycle = s->step / (2 * half);
        double x = fabs((double)s->step / (double)half - 2.0 * (double)cycle - 1.0);
        return (float)(c->lr_min + (c->lr - c->lr_min) * fmax(0.0, 1.0 - x));
    }
    case VBS_SCHED_PLATEAU: return s->lr;
    case VBS_SCHED_POLY: {
        double f = c->total_epochs > 0 ? 1.0 - (double)epoch / (double)c->total_epochs : 1.0;
        return (float)(c->lr * pow(f > 0 ? f : 0, 0.9));
    }
    default: return c->lr;
    }
}

void vbs_sched_epoch_end(const vbs_opt_cfg *c, vbs_sched_state *s, double val_loss) {
    if (c->sched != VBS_SCHED_PLATEAU || !isfinite(val_loss)) return;
    /* torch's default threshold: relative 1e-4 */
    if (val_loss < s->best * (1 - 1e-4)) {
        s->best = val_loss;
        s->bad_epochs = 0;
    } else if (++s->bad_epochs > c->patience) {
        s->lr *= c->gamma;
        s->bad_epochs = 0;
    }
}

/* Adam's and AdamW's loop, for the vectoriser (element-wise: the same bits in any width) */
static inline __attribute__((always_inline)) void adam_body(float *restrict p, const float *g, float *restrict m, float *restrict v, int64_t n,
                                                            int adamw, float lr, float wd, float b1, float b2, float step, float bc2,
                                                            float eps) {
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        if (adamw) p[i] -= lr * wd * p[i];
        else gi += wd * p[i];
        m[i] = b1 * m[i] + (1.f - b1) * gi;
        v[i] = b2 * v[i] + (1.f - b2) * gi * gi;
        p[i] -= step * m[i] / (sqrtf(v[i]) / bc2 + eps);
    }
}
VBS_CLONES(adam, (float *restrict p, const float *g, float *restrict m, float *restrict v, int64_t n, int adamw, float lr, float wd, float b1,
                  float b2, float step, float bc2, float eps),
           adam_body(p, g, m, v, n, adamw, lr, wd, b1, b2, step, bc2, eps))

void vbs_opt_step(const vbs_opt_cfg *c, float lr, int64_t t, float *p, const float *g, float *m, float *v, int64_t n, int decay) {
    float wd = decay ? c->weight_decay : 0.f;
    if (c->kind == VBS_OPT_SGD) {
        for (int64_t i = 0; i < n; i++) {
            float gi = g[i] + wd * p[i];
            m[i] = c->momentum * m[i] + gi;
            p[i] -= lr * (c->momentum > 0 ? m[i] : gi);
        }
        return;
    }
    double b1 = c->beta1, b2 = c->beta2;
    float bc1 = (float)(1.0 - pow(b1, (double)t)), bc2 = (float)sqrt(1.0 - pow(b2, (double)t));
    VBS_PICK(adam)(p, g, m, v, n, c->kind == VBS_OPT_ADAMW, lr, wd, (float)b1, (float)b2, lr / bc1, bc2, c->eps);
}

double vbs_grad_norm(const float *g, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return sqrt(s);
}
