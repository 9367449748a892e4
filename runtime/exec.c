/*
 * exec.c: one forward pass on one worker: (re)plan when the input shape
 * changes, draw the variational weights for this (seed, sample) into the
 * worker's weight buffer (once per sample, however many slices follow),
 * then run the nodes in topological order over the planned arena.
 * Nothing is allocated per op or per sample.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

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
        const vbs_node *n = &w->plan.nodes[g->order[pos]];
        vbs_op_args a;
        memset(&a, 0, sizeof a);
        a.node = n;
        for (int k = 0; k < n->n_in; k++) {
            int v = n->in[k];
            if (v < 0) continue;
            const vbs_value *val = &g->values[v];
            if (val->kind == VBS_VAL_INPUT) a.x[k] = inputs[val->input];
            else if (val->kind == VBS_VAL_VARWEIGHT && draw_live) a.x[k] = w->wbuf + val->var_off;
            else if (val->kind == VBS_VAL_ACT) a.x[k] = w->arena + w->plan.offset[v];
            else a.x[k] = m->def.tensors[val->tensor].data;
            a.xs[k] = &w->plan.shapes[v];
        }
        for (int o = 0; o < n->n_out; o++) {
            a.y[o] = w->arena + w->plan.offset[n->out[o]];
            a.ys[o] = &w->plan.shapes[n->out[o]];
        }
        a.work = w->work;
        a.seed = seed;
        a.sample = sample;
        a.sampling = sampling;
        (naive ? vbs_ops[n->op].naive : vbs_ops[n->op].forward)(&a);
    }
    return VBS_OK;
}
