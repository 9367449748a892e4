/*
 * plan.c: per set of input shapes, infers every value's shape through the
 * op table and lays the activations out in one arena: a value occupies
 * its slot from the node that produces it to its last consumer, and
 * values whose lifetimes do not overlap share memory. Graph outputs live
 * to the end. Planned once per input shape, reused by every MC sample.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void vbs_plan_free(vbs_plan *p) {
    if (!p) return;
    free(p->keys); free(p->nodes); free(p->shapes); free(p->offset);
    memset(p, 0, sizeof *p);
}

typedef struct { int64_t off, len; int dead_after; } slot;

/* lowest offset where len floats fit between live slots */
static int64_t place(const slot *live, int n, int64_t len) {
    int64_t off = 0;
    for (;;) {
        int moved = 0;
        for (int i = 0; i < n; i++)
            if (off < live[i].off + live[i].len && live[i].off < off + len) {
                off = live[i].off + live[i].len;
                moved = 1;
            }
        if (!moved) return off;
    }
}

vbs_status vbs_plan_build(vbs_plan *p, const vbs_graph *g, const vbs_shape *in, char *err) {
    return vbs_plan_build_ex(p, g, in, 0, err);
}

vbs_status vbs_plan_build_ex(vbs_plan *p, const vbs_graph *g, const vbs_shape *in, int keep_all, char *err) {
    memset(p, 0, sizeof *p);
    int nin = 0;
    for (int i = 0; i < g->n_values; i++) nin += g->values[i].kind == VBS_VAL_INPUT;
    p->keys = malloc(sizeof(vbs_shape) * (size_t)(nin + 1));
    p->nodes = malloc(sizeof(vbs_node) * (size_t)(g->n_nodes + 1));
    p->shapes = calloc((size_t)g->n_values + 1, sizeof(vbs_shape));
    p->offset = malloc(sizeof(int64_t) * (size_t)(g->n_values + 1));
    slot *live = malloc(sizeof(slot) * (size_t)(g->n_values + 1));
    vbs_status st = VBS_OK;
    if (!p->keys || !p->nodes || !p->shapes || !p->offset || !live) {
        st = vbs_fail(err, VBS_ERR_NOMEM, "out of memory planning the graph");
        goto done;
    }
    p->n_keys = nin;
    memcpy(p->keys, in, sizeof(vbs_shape) * (size_t)nin);
    memcpy(p->nodes, g->nodes, sizeof(vbs_node) * (size_t)g->n_nodes);
    for (int i = 0; i < g->n_values; i++) {
        const vbs_value *v = &g->values[i];
        p->offset[i] = -1;
        if (v->kind == VBS_VAL_WEIGHT || v->kind == VBS_VAL_VARWEIGHT) p->shapes[i] = v->wshape;
        else if (v->kind == VBS_VAL_INPUT) p->shapes[i] = in[v->input];
    }
    int nlive = 0;
    for (int pos = 0; pos < g->n_order; pos++) {
        vbs_node *n = &p->nodes[g->order[pos]];
        const vbs_op_info *op = &vbs_ops[n->op];
        vbs_shape ins[VBS_MAX_IN], outs[2];
        memset(ins, 0, sizeof ins);
        memset(outs, 0, sizeof outs);
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0) ins[k] = p->shapes[n->in[k]];
        if ((st = op->shape(n, ins, outs, err))) goto done;
        for (int o = 0; o < n->n_out; o++) {
            int64_t numel = 1;
            for (int j = 0; j < outs[o].ndim; j++)
                if (outs[o].d[j] <= 0 || !vbs_mul_ok(numel, outs[o].d[j], &numel) || numel > ((int64_t)1 << 34)) {
                    st = vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (%s): output shape too large or empty", n->name, op->name);
                    goto done;
                }
            p->shapes[n->out[o]] = outs[o];
        }
        if (op->work) {
            int64_t w = (int64_t)op->work(n, ins, outs);
            if (w > p->work_floats) p->work_floats = w;
        }
        if (op->flops) p->flops += op->flops(n, ins, outs);
        /* free slots whose last consumer came before this node */
        for (int i = 0; i < nlive;)
            if (live[i].dead_after < pos) live[i] = live[--nlive];
            else i++;
        for (int o = 0; o < n->n_out; o++) {
            int v = n->out[o];
            int64_t len = (vbs_shape_numel(&p->shapes[v]) + 15) & ~(int64_t)15;
            int64_t off = place(live, nlive, len);
            p->offset[v] = off;
            int dead = g->values[v].is_output || keep_all ? g->n_order : g->values[v].last_use;
            if (dead < pos) dead = pos; /* unused outputs still need a slot while written */
            live[nlive++] = (slot){off, len, dead};
            if (off + len > p->arena_floats) p->arena_floats = off + len;
        }
    }
done:
    free(live);
    if (st) vbs_plan_free(p);
    return st;
}

void vbs_plan_grads(const vbs_plan *p, const vbs_graph *g, const char *needs_grad, const char *pinned, int64_t *goff,
                    int64_t *total) {
    /* time runs backwards: the backward of order position q happens at t = n - 1 - q */
    int n = g->n_order;
    int *born = malloc(sizeof(int) * (size_t)(g->n_values + 1)), *dies = malloc(sizeof(int) * (size_t)(g->n_values + 1));
    int *pos = malloc(sizeof(int) * (size_t)(g->n_nodes + 1));
    slot *live = malloc(sizeof(slot) * (size_t)(g->n_values + 1));
    *total = 0;
    for (int v = 0; v < g->n_values; v++) goff[v] = -1;
    if (!born || !dies || !pos || !live) { free(born); free(dies); free(pos); free(live); *total = -1; return; }
    for (int i = 0; i < g->n_nodes; i++) pos[i] = -1;
    for (int q = 0; q < n; q++) pos[g->order[q]] = q;
    for (int v = 0; v < g->n_values; v++) {
        born[v] = dies[v] = -1;
        const vbs_value *val = &g->values[v];
        if (val->kind != VBS_VAL_ACT || !needs_grad[v] || val->producer < 0 || pos[val->producer] < 0) continue;
        dies[v] = n - 1 - pos[val->producer];
        born[v] = val->is_output || (pinned && pinned[v]) || val->last_use < 0 ? (val->is_output || (pinned && pinned[v]) ? 0 : dies[v])
                                                                               : n - 1 - val->last_use;
    }
    int nlive = 0;
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < nlive;)
            if (live[i].dead_after < t) live[i] = live[--nlive];
            else i++;
        for (int v = 0; v < g->n_values; v++) {
            if (born[v] != t) continue;
            int64_t len = (vbs_shape_numel(&p->shapes[v]) + 15) & ~(int64_t)15;
            int64_t off = place(live, nlive, len);
            goff[v] = off;
            live[nlive++] = (slot){off, len, dies[v]};
            if (off + len > *total) *total = off + len;
        }
    }
    free(born); free(dies); free(pos); free(live);
}
