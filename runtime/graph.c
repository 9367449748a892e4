/*
 * graph.c: compiles a definition into a graph: resolves every name to a
 * value (graph input, weight, variational weight or node output), parses
 * each node's attributes through the op table, refuses unknown ops,
 * dangling inputs, duplicate producers and cycles, and sorts the nodes
 * topologically. No shapes here (plan.c) and no buffers.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* open-addressing name -> value id map */
typedef struct { const char **keys; int *vals; size_t cap; } name_map;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static int map_init(name_map *m, size_t n) {
    m->cap = 16;
    while (m->cap < 2 * n + 1) m->cap *= 2;
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->vals = calloc(m->cap, sizeof *m->vals);
    return m->keys && m->vals;
}

static int *map_slot(name_map *m, const char *k, int insert) {
    size_t i = hash_str(k) & (m->cap - 1);
    while (m->keys[i]) {
        if (!strcmp(m->keys[i], k)) return &m->vals[i];
        i = (i + 1) & (m->cap - 1);
    }
    if (!insert) return NULL;
    m->keys[i] = k;
    m->vals[i] = -1;
    return &m->vals[i];
}

static void map_free(name_map *m) { free(m->keys); free(m->vals); }

void vbs_graph_free(vbs_graph *g) {
    if (!g) return;
    if (g->sigma)
        for (int i = 0; i < g->n_sigma; i++) free(g->sigma[i]);
    free(g->sigma);
    free(g->values); free(g->nodes); free(g->order); free(g->input_vals); free(g->output_vals);
    memset(g, 0, sizeof *g);
}

static int add_value(vbs_graph *g, const char *name, vbs_val_kind kind) {
    vbs_value *v = &g->values[g->n_values];
    memset(v, 0, sizeof *v);
    v->name = name;
    v->kind = kind;
    v->tensor = v->rho = v->input = v->producer = v->last_use = -1;
    return g->n_values++;
}

/* A Conv whose only consumer is a Relu writes the Relu's output itself,
 * rectified in its epilogue, and the Relu leaves the order. Exact: the
 * same max(0, x) on the same values, one memory pass fewer. */
static void fuse_conv_relu(vbs_graph *g) {
    int *consumers = calloc((size_t)g->n_values + 1, sizeof(int));
    if (!consumers) return; /* fusion is optional */
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_in; k++)
            if (g->nodes[i].in[k] >= 0) consumers[g->nodes[i].in[k]]++;
    int w = 0;
    for (int p = 0; p < g->n_order; p++) {
        vbs_node *r = &g->nodes[g->order[p]];
        if (r->op == VBS_OP_RELU && r->in[0] >= 0) {
            const vbs_value *x = &g->values[r->in[0]];
            if (x->kind == VBS_VAL_ACT && !x->is_output && consumers[r->in[0]] == 1 && g->nodes[x->producer].op == VBS_OP_CONV &&
                !g->nodes[x->producer].fused_relu) {
                vbs_node *c = &g->nodes[x->producer];
                c->fused_relu = 1;
                c->out[0] = r->out[0];
                g->values[r->out[0]].producer = x->producer;
                continue; /* drop the Relu from the order */
            }
        }
        g->order[w++] = g->order[p];
    }
    g->n_order = w;
    free(consumers);
}

vbs_status vbs_graph_build(vbs_graph *g, const vbs_def *d, char *err) {
    memset(g, 0, sizeof *g);
    size_t nval = (size_t)d->n_inputs + (size_t)d->n_tensors;
    for (int i = 0; i < d->n_nodes; i++) nval += (size_t)d->nodes[i].n_out;
    g->values = calloc(nval + 1, sizeof *g->values);
    g->nodes = calloc((size_t)d->n_nodes + 1, sizeof *g->nodes);
    g->order = calloc((size_t)d->n_nodes + 1, sizeof *g->order);
    g->input_vals = calloc((size_t)d->n_inputs + 1, sizeof(int));
    g->output_vals = calloc((size_t)d->n_outputs + 1, sizeof(int));
    int *indeg = calloc((size_t)d->n_nodes + 1, sizeof(int));
    name_map m = {0}, tens = {0};
    vbs_status st = VBS_OK;
    if (!g->values || !g->nodes || !g->order || !g->input_vals || !g->output_vals || !indeg || !map_init(&m, nval) ||
        !map_init(&tens, (size_t)d->n_tensors)) {
        st = vbs_fail(err, VBS_ERR_NOMEM, "out of memory compiling the graph");
        goto done;
    }
    g->n_nodes = d->n_nodes;
    for (int i = 0; i < d->n_tensors; i++) {
        int *s = map_slot(&tens, d->tensors[i].name, 1);
        if (*s >= 0) { st = vbs_fail(err, VBS_ERR_FORMAT, "tensor '%s' is defined twice", d->tensors[i].name); goto done; }
        *s = i;
    }
    /* weights: plain and mu tensors are values; rho tensors hang off their mu */
    for (int i = 0; i < d->n_tensors; i++) {
        const vbs_tensor_def *t = &d->tensors[i];
        if (t->role == VBS_ROLE_RHO || t->role == VBS_ROLE_OPTIM) continue; /* optimiser state is no value */
        int *s = map_slot(&m, t->name, 1);
        int v = add_value(g, t->name, t->role == VBS_ROLE_MU ? VBS_VAL_VARWEIGHT : VBS_VAL_WEIGHT);
        *s = v;
        g->values[v].tensor = i;
        g->values[v].wshape.ndim = t->ndim;
        memcpy(g->values[v].wshape.d, t->dims, sizeof t->dims);
        if (t->role == VBS_ROLE_MU) {
            int *r = t->rho && t->rho[0] ? map_slot(&tens, t->rho, 0) : NULL;
            if (!r || d->tensors[*r].role != VBS_ROLE_RHO) {
                st = vbs_fail(err, VBS_ERR_FORMAT, "tensor '%s': variational mean without a rho tensor ('%s' missing)", t->name,
                              t->rho ? t->rho : "");
                goto done;
            }
            const vbs_tensor_def *rt = &d->tensors[*r];
            if (rt->ndim != t->ndim || memcmp(rt->dims, t->dims, sizeof(int64_t) * (size_t)t->ndim)) {
                st = vbs_fail(err, VBS_ERR_SHAPE, "tensor '%s': mu and rho ('%s') differ in shape", t->name, rt->name);
                goto done;
            }
            g->values[v].rho = *r;
            g->values[v].var_off = g->var_total;
            g->var_total += (t->numel + 15) & ~(int64_t)15;
        }
    }
    /* every rho must belong to exactly one mu */
    for (int i = 0; i < d->n_tensors; i++) {
        if (d->tensors[i].role != VBS_ROLE_RHO) continue;
        int owners = 0;
        for (int j = 0; j < g->n_values; j++) owners += g->values[j].rho == i;
        if (owners != 1) {
            st = vbs_fail(err, VBS_ERR_FORMAT, "tensor '%s': rho tensor used by %d variational means, expected 1", d->tensors[i].name, owners);
            goto done;
        }
    }
    for (int i = 0; i < d->n_inputs; i++) {
        int *s = map_slot(&m, d->inputs[i].name, 1);
        if (*s >= 0) { st = vbs_fail(err, VBS_ERR_GRAPH, "graph input '%s' is also a tensor or input", d->inputs[i].name); goto done; }
        *s = add_value(g, d->inputs[i].name, VBS_VAL_INPUT);
        g->values[*s].input = i;
        g->input_vals[i] = *s;
    }
    /* node outputs, then node inputs */
    for (int i = 0; i < d->n_nodes; i++) {
        const vbs_node_def *nd = &d->nodes[i];
        vbs_node *n = &g->nodes[i];
        n->name = nd->name;
        for (int k = 0; k < VBS_MAX_IN; k++) n->in[k] = -1; /* inputs beyond n_in are absent */
        n->op = vbs_op_from_name(nd->op_type);
        n->rng_stream = 0x80000000u | (uint32_t)i;
        if (n->op == VBS_OP_INVALID) {
            st = vbs_fail(err, VBS_ERR_GRAPH, "node '%s': unknown op '%s'", nd->name, nd->op_type);
            goto done;
        }
        const vbs_op_info *op = &vbs_ops[n->op];
        if (nd->n_in < op->min_in || nd->n_in > op->max_in || nd->n_out < 1 || nd->n_out > op->max_out) {
            st = vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): %d inputs and %d outputs; expected %d..%d inputs and 1..%d outputs",
                          nd->name, nd->op_type, nd->n_in, nd->n_out, op->min_in, op->max_in, op->max_out);
            goto done;
        }
        n->n_in = nd->n_in;
        n->n_out = nd->n_out;
        for (int o = 0; o < nd->n_out; o++) {
            if (!nd->out[o][0]) { st = vbs_fail(err, VBS_ERR_GRAPH, "node '%s': empty output name", nd->name); goto done; }
            int *s = map_slot(&m, nd->out[o], 1);
            if (*s >= 0) {
                st = vbs_fail(err, VBS_ERR_GRAPH, "node '%s': output '%s' is already defined", nd->name, nd->out[o]);
                goto done;
            }
            *s = add_value(g, nd->out[o], VBS_VAL_ACT);
            g->values[*s].producer = i;
            n->out[o] = *s;
        }
        if ((st = op->parse(n, nd, err))) goto done;
    }
    for (int i = 0; i < d->n_nodes; i++) {
        const vbs_node_def *nd = &d->nodes[i];
        vbs_node *n = &g->nodes[i];
        for (int k = 0; k < nd->n_in; k++) {
            if (!nd->in[k][0]) {
                if (k < vbs_ops[n->op].min_in) {
                    st = vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): required input %d is empty", nd->name, nd->op_type, k);
                    goto done;
                }
                n->in[k] = -1;
                continue;
            }
            int *s = map_slot(&m, nd->in[k], 0);
            if (!s) {
                int *t = map_slot(&tens, nd->in[k], 0);
                st = vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): input '%s' %s", nd->name, nd->op_type, nd->in[k],
                              t ? "is a rho tensor, which nodes cannot read" : "is not defined by any node, tensor or graph input");
                goto done;
            }
            n->in[k] = *s;
            if (g->values[*s].producer >= 0) indeg[i]++;
        }
    }
    for (int i = 0; i < d->n_outputs; i++) {
        int *s = map_slot(&m, d->outputs[i].name, 0);
        if (!s || g->values[*s].kind != VBS_VAL_ACT) {
            st = vbs_fail(err, VBS_ERR_GRAPH, "graph output '%s' is not produced by any node", d->outputs[i].name);
            goto done;
        }
        g->output_vals[i] = *s;
        g->values[*s].is_output = 1;
    }
    /* Kahn's algorithm; ties keep file order so the order is deterministic */
    int head = 0, tail = 0;
    for (int i = 0; i < d->n_nodes; i++)
        if (!indeg[i]) g->order[tail++] = i;
    while (head < tail) {
        int i = g->order[head++];
        for (int o = 0; o < g->nodes[i].n_out; o++) {
            int v = g->nodes[i].out[o];
            for (int j = 0; j < d->n_nodes; j++)
                for (int k = 0; k < g->nodes[j].n_in; k++)
                    if (g->nodes[j].in[k] == v && --indeg[j] == 0) g->order[tail++] = j;
        }
    }
    if (tail != d->n_nodes) {
        for (int i = 0; i < d->n_nodes; i++)
            if (indeg[i]) {
                st = vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s) is on a cycle", d->nodes[i].name, d->nodes[i].op_type);
                break;
            }
        goto done;
    }
    g->n_order = d->n_nodes;
    fuse_conv_relu(g);
    for (int p = 0; p < g->n_order; p++) {
        const vbs_node *n = &g->nodes[g->order[p]];
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0) g->values[n->in[k]].last_use = p;
    }
done:
    free(indeg);
    map_free(&m);
    map_free(&tens);
    if (st) vbs_graph_free(g);
    return st;
}
