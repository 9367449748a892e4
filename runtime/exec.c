/*
 * exec.c: one forward pass on one worker: (re)plan when the input shape
 * changes, draw the variational weights for this (seed, sample) into the
 * worker's weight buffer (once per sample, however many slices follow),
 * then run the nodes in topological order over the planned arena.
 * Nothing is allocated per op or per sample.
 *
 * Training passes walk the same plan: the forward keeps every activation
 * (plan.c's keep_all) and lets ops keep their `saved` floats; the backward
 * walks the order in reverse, calling each op's backward kernel on the
 * forward's own arguments, with activation gradients in a second arena
 * planned by lifetime (vbs_plan_grads) and parameter gradients accumulated
 * into the caller's buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "ops/ops.h"

void vbs_worker_free(vbs_worker *w) {
    if (!w) return;
    vbs_plan_free(&w->plan);
    free(w->arena); free(w->work); free(w->wbuf);
    memset(w, 0, sizeof *w);
}

static int same_keys(const vbs_plan *p, const vbs_shape *in) {
    for (int i = 0; i < p->n_keys; i++) {
        if (p->keys[i].ndim != in[i].ndim) return 0;
        for (int j = 0; j < in[i].ndim; j++)
            if (p->keys[i].d[j] != in[i].d[j]) return 0;
    }
    return 1;
}

static float *grow(float *buf, int64_t *cap, int64_t need) {
    if (need <= *cap) return buf;
    free(buf);
    buf = aligned_alloc(VBS_ALIGN, (size_t)((need * 4 + VBS_ALIGN - 1) / VBS_ALIGN * VBS_ALIGN));
    *cap = buf ? need : 0;
    return buf;
}

/* w = mu + sigma * eps for every variational weight: eps stream = tensor index + 1 */
static void sample_weights(vbs_worker *w, const vbs_model *m, uint64_t seed, uint64_t sample) {
    const vbs_graph *g = &m->g;
    for (int i = 0; i < g->n_values; i++) {
        const vbs_value *v = &g->values[i];
        if (v->kind != VBS_VAL_VARWEIGHT) continue;
        const vbs_tensor_def *t = &m->def.tensors[v->tensor];
        float *dst = w->wbuf + v->var_off;
        const float *mu = t->data, *sg = g->sigma[v->tensor];
        /* eps in L1-sized pieces, combined at once: one pass over the weights */
        enum { PIECE = 2048 };
        float eps[PIECE];
        for (int64_t e0 = 0; e0 < t->numel; e0 += PIECE) {
            int64_t n = t->numel - e0 < PIECE ? t->numel - e0 : PIECE;
            vbs_randn(seed, sample, (uint32_t)v->tensor + 1u, (uint64_t)e0, n, eps);
            for (int64_t e = 0; e < n; e++) dst[e0 + e] = mu[e0 + e] + sg[e0 + e] * eps[e];
        }
    }
}

const float *vbs_worker_value(const vbs_worker *w, const vbs_model *m, int v) {
    const vbs_value *val = &m->g.values[v];
    switch (val->kind) {
    case VBS_VAL_WEIGHT: return m->def.tensors[val->tensor].data;
    case VBS_VAL_VARWEIGHT:
        return w->last_sampled ? w->wbuf + val->var_off : m->def.tensors[val->tensor].data;
    case VBS_VAL_ACT: return w->arena + w->plan.offset[v];
    default: return NULL;
    }
}


/* The arguments of node i's kernel over an arena: graph inputs, the
 * variational weights from wbuf (NULL: their means), other weights from the
 * model, activations from the arena at the plan's offsets. */
static void node_args(const vbs_model *m, const vbs_plan *plan, float *arena, const float *const *inputs, const float *wbuf, int i,
                      vbs_op_args *a) {
    const vbs_graph *g = &m->g;
    const vbs_node *n = &plan->nodes[i];
    memset(a, 0, sizeof *a);
    a->node = n;
    for (int k = 0; k < n->n_in; k++) {
        int v = n->in[k];
        if (v < 0) continue;
        const vbs_value *val = &g->values[v];
        if (val->kind == VBS_VAL_INPUT) a->x[k] = inputs[val->input];
        else if (val->kind == VBS_VAL_VARWEIGHT && wbuf) a->x[k] = wbuf + val->var_off;
        else if (val->kind == VBS_VAL_ACT) a->x[k] = arena + plan->offset[v];
        else a->x[k] = m->def.tensors[val->tensor].data;
        a->xs[k] = &plan->shapes[v];
    }
    for (int o = 0; o < n->n_out; o++) {
        a->y[o] = arena + plan->offset[n->out[o]];
        a->ys[o] = &plan->shapes[n->out[o]];
    }
}

vbs_status vbs_worker_run(vbs_worker *w, const vbs_model *m, const float *input, const vbs_shape *in_shape,
                          vbs_mode mode, uint64_t seed, uint64_t sample, char *err) {
    const float *inputs[1] = {input};
    return vbs_worker_run_naive(w, m, inputs, in_shape, mode, seed, sample, 0, err);
}

/* The general form: several graph inputs, and the naive kernels on request
 * (tests run whole graphs both ways). */
vbs_status vbs_worker_run_naive(vbs_worker *w, const vbs_model *m, const float *const *inputs, const vbs_shape *in_shapes,
                                vbs_mode mode, uint64_t seed, uint64_t sample, int naive, char *err) {
    const vbs_graph *g = &m->g;
    vbs_status st;
    if (!w->planned || !same_keys(&w->plan, in_shapes)) {
        vbs_plan_free(&w->plan);
        w->planned = 0;
        if ((st = vbs_plan_build(&w->plan, g, in_shapes, err))) return st;
        w->planned = 1;
        w->arena = grow(w->arena, &w->arena_cap, w->plan.arena_floats);
        w->work = grow(w->work, &w->work_cap, w->plan.work_floats);
        if ((!w->arena && w->plan.arena_floats) || (!w->work && w->plan.work_floats)) {
            vbs_worker_free(w);
            return vbs_fail(err, VBS_ERR_NOMEM, "out of memory: activation arena of %lld floats",
                            (long long)w->plan.arena_floats);
        }
    }
    int sampling = mode == VBS_MODE_SAMPLE;
    if (sampling && g->var_total > 0) {
        if (!w->wbuf) {
            int64_t cap = 0;
            w->wbuf = grow(NULL, &cap, g->var_total);
            if (!w->wbuf) return vbs_fail(err, VBS_ERR_NOMEM, "out of memory: sampled weights");
        }
        if (w->wbuf_state != 2 || w->wbuf_seed != seed || w->wbuf_sample != sample) {
            sample_weights(w, m, seed, sample);
            w->wbuf_seed = seed;
            w->wbuf_sample = sample;
        }
        w->wbuf_state = 2;
    }
    /* mean mode reads mu straight from the model and keeps any drawn buffer for reuse */
    int draw_live = sampling && g->var_total > 0;
    w->last_sampled = draw_live;
    for (int pos = 0; pos < g->n_order; pos++) {
        vbs_op_args a;
        node_args(m, &w->plan, w->arena, inputs, draw_live ? w->wbuf : NULL, g->order[pos], &a);
        a.work = w->work;
        a.seed = seed;
        a.sample = sample;
        a.sampling = sampling;
        (naive ? vbs_ops[a.node->op].naive : vbs_ops[a.node->op].forward)(&a);
    }
    return VBS_OK;
}

/* ---- training ------------------------------------------------------------ */

void vbs_train_worker_free(vbs_train_worker *t) {
    if (!t) return;
    vbs_worker_free(&t->w);
    free(t->needs_grad); free(t->pin); free(t->pos); free(t->goff); free(t->soff);
    free(t->garena); free(t->saved); free(t->work);
    memset(t, 0, sizeof *t);
}

/* Plans a training pass for these input shapes: activations kept to the end,
 * which values carry gradients, their arena, the ops' saved floats, scratch. */
static vbs_status train_plan(vbs_train_worker *t, const vbs_model *m, const vbs_train_spec *spec, const vbs_shape *in, char *err) {
    const vbs_graph *g = &m->g;
    vbs_worker *w = &t->w;
    vbs_plan_free(&w->plan);
    w->planned = 0;
    t->ready = 0;
    vbs_status st = vbs_plan_build_ex(&w->plan, g, in, 1, err);
    if (st) return st;
    w->planned = 1;
    size_t nv = (size_t)g->n_values + 1, nn = (size_t)g->n_nodes + 1;
    free(t->needs_grad); free(t->pin); free(t->pos); free(t->goff); free(t->soff);
    t->needs_grad = calloc(nv, 1);
    t->pin = calloc(nv, 1);
    t->pos = malloc(sizeof(int) * nn);
    t->goff = malloc(sizeof(int64_t) * nv);
    t->soff = malloc(sizeof(int64_t) * nn);
    if (!t->needs_grad || !t->pin || !t->pos || !t->goff || !t->soff) return vbs_fail(err, VBS_ERR_NOMEM, "out of memory planning the backward");
    for (int i = 0; i < g->n_nodes; i++) { t->pos[i] = -1; t->soff[i] = -1; }
    /* a value carries a gradient if it is a trained parameter or depends on one */
    for (int v = 0; v < g->n_values; v++) {
        const vbs_value *val = &g->values[v];
        t->needs_grad[v] = (val->kind == VBS_VAL_WEIGHT || val->kind == VBS_VAL_VARWEIGHT) && spec->param_off[v] >= 0;
        t->pin[v] = val->kind == VBS_VAL_ACT && (val->is_output || (spec->pinned && spec->pinned[v]));
    }
    int64_t saved = 0, work = w->plan.work_floats;
    for (int q = 0; q < g->n_order; q++) {
        int i = g->order[q];
        const vbs_node *n = &w->plan.nodes[i];
        t->pos[i] = q;
        int any = 0;
        for (int k = 0; k < n->n_in; k++) any |= n->in[k] >= 0 && t->needs_grad[n->in[k]];
        for (int o = 0; o < n->n_out; o++) t->needs_grad[n->out[o]] = (char)any;
        const vbs_op_info *op = &vbs_ops[n->op];
        vbs_shape ins[VBS_MAX_IN], outs[2];
        memset(ins, 0, sizeof ins);
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0) ins[k] = w->plan.shapes[n->in[k]];
        for (int o = 0; o < n->n_out; o++) outs[o] = w->plan.shapes[n->out[o]];
        if (op->saved) {
            t->soff[i] = saved;
            saved += ((int64_t)op->saved(n, ins, outs) + 15) & ~(int64_t)15;
        }
        if (any && !op->backward)
            return vbs_fail(err, VBS_ERR_UNSUPPORTED, "node '%s' (%s): no backward pass for this op", n->name, op->name);
        if (any && op->backward_work) {
            int64_t bw = (int64_t)op->backward_work(n, ins, outs);
            if (bw > work) work = bw;
        }
    }
    int64_t gfloats;
    vbs_plan_grads(&w->plan, g, t->needs_grad, t->pin, t->goff, &gfloats);
    if (gfloats < 0) return vbs_fail(err, VBS_ERR_NOMEM, "out of memory planning the backward");
    w->arena = grow(w->arena, &w->arena_cap, w->plan.arena_floats);
    t->garena = grow(t->garena, &t->garena_cap, gfloats);
    t->saved = grow(t->saved, &t->saved_cap, saved);
    t->work = grow(t->work, &t->work_cap, work);
    if ((!w->arena && w->plan.arena_floats) || (!t->garena && gfloats) || (!t->saved && saved) || (!t->work && work))
        return vbs_fail(err, VBS_ERR_NOMEM, "out of memory: training buffers of %lld floats",
                        (long long)(w->plan.arena_floats + gfloats + saved + work));
    t->ready = 1;
    return VBS_OK;
}

vbs_status vbs_train_forward(vbs_train_worker *t, const vbs_model *m, const vbs_train_spec *spec, const float *const *inputs,
                             const vbs_shape *in_shapes, const float *wbuf, int sampling, uint64_t seed, uint64_t sample,
                             int naive, char *err) {
    const vbs_graph *g = &m->g;
    vbs_status st;
    if (m->def.n_inputs > 16) return vbs_fail(err, VBS_ERR_UNSUPPORTED, "more than 16 graph inputs");
    if (!t->ready || !same_keys(&t->w.plan, in_shapes)) {
        if ((st = train_plan(t, m, spec, in_shapes, err))) { t->ready = 0; return st; }
    }
    for (int i = 0; i < m->def.n_inputs; i++) t->inputs[i] = inputs[i];
    t->wbuf = wbuf;
    t->sampling = sampling;
    t->seed = seed;
    t->sample = sample;
    for (int q = 0; q < g->n_order; q++) {
        vbs_op_args a;
        node_args(m, &t->w.plan, t->w.arena, inputs, wbuf, g->order[q], &a);
        a.work = t->work;
        a.seed = seed;
        a.sample = sample;
        a.sampling = sampling;
        a.training = 1;
        a.saved = t->soff[g->order[q]] >= 0 ? t->saved + t->soff[g->order[q]] : NULL;
        (naive ? vbs_ops[a.node->op].naive : vbs_ops[a.node->op].forward)(&a);
    }
    /* the loss adds into these */
    for (int v = 0; v < g->n_values; v++)
        if (t->pin[v] && t->goff[v] >= 0)
            memset(t->garena + t->goff[v], 0, sizeof(float) * (size_t)vbs_shape_numel(&t->w.plan.shapes[v]));
    return VBS_OK;
}

float *vbs_train_grad(vbs_train_worker *t, int v) {
    if (!t->ready || v < 0 || !t->pin[v] || t->goff[v] < 0) return NULL;
    return t->garena + t->goff[v];
}

vbs_status vbs_train_backward(vbs_train_worker *t, const vbs_model *m, const vbs_train_spec *spec, float *pgrad, int naive,
                              char *err) {
    const vbs_graph *g = &m->g;
    if (!t->ready) return vbs_fail(err, VBS_ERR_STATE, "no training forward pass to differentiate");
    for (int q = g->n_order - 1; q >= 0; q--) {
        int i = g->order[q];
        const vbs_node *n = &t->w.plan.nodes[i];
        int any = 0;
        for (int o = 0; o < n->n_out; o++) any |= t->needs_grad[n->out[o]];
        if (!any) continue;
        vbs_op_args a;
        node_args(m, &t->w.plan, t->w.arena, t->inputs, t->wbuf, i, &a);
        a.work = t->work;
        a.seed = t->seed;
        a.sample = t->sample;
        a.sampling = t->sampling;
        a.training = 1;
        a.saved = t->soff[i] >= 0 ? t->saved + t->soff[i] : NULL;
        vbs_grad_args ga;
        memset(&ga, 0, sizeof ga);
        ga.fwd = &a;
        ga.work = t->work;
        for (int o = 0; o < n->n_out; o++) {
            int vo = n->out[o];
            float *dy = t->garena + t->goff[vo];
            if (!t->pin[vo] && g->values[vo].last_use < 0) /* an output nothing reads: no gradient */
                memset(dy, 0, sizeof(float) * (size_t)vbs_shape_numel(&t->w.plan.shapes[vo]));
            if (n->fused_relu) /* the Relu folded into this Conv: its gradient first */
                vbs_relu_mask(dy, a.y[o], vbs_shape_numel(&t->w.plan.shapes[n->out[o]]));
            ga.dy[o] = dy;
        }
        for (int k = 0; k < n->n_in; k++) {
            int v = n->in[k];
            if (v < 0 || !t->needs_grad[v]) continue;
            const vbs_value *val = &g->values[v];
            if (val->kind == VBS_VAL_ACT) {
                float *gx = t->garena + t->goff[v];
                /* born here: the first backward to reach it (its last consumer) zeroes it, or writes it */
                if (!t->pin[v] && val->last_use == q) {
                    int first = 1;
                    for (int j = 0; j < k; j++) first &= n->in[j] != v;
                    if (first && (vbs_ops[n->op].backward_fresh >> k & 1) && !naive) ga.fresh |= 1u << k;
                    else if (first) memset(gx, 0, sizeof(float) * (size_t)vbs_shape_numel(&t->w.plan.shapes[v]));
                }
                ga.dx[k] = gx;
            } else ga.dx[k] = pgrad + spec->param_off[v];
        }
        (naive ? vbs_ops[n->op].backward_naive : vbs_ops[n->op].backward)(&ga);
    }
    return VBS_OK;
}
