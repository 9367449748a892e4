/*
 * model.c: the public model object: loading (mmap, then the format
 * reader and the graph compiler), the checks that need the compiled graph
 * (finite weights, shape inference on a probe shape, the card's channel
 * and label counts against the graph's dims), what output 0 carries
 * (probabilities or logits, and which value holds the logits: the
 * converter's card and the trainer's loss), the sigma cache, saving, and
 * the inspection calls behind `vbseg info`.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

vbs_model *vbs_model_alloc(void) { return calloc(1, sizeof(vbs_model)); }

void vbs_model_free(vbs_model *m) {
    if (!m) return;
    vbs_graph_free(&m->g);
    free(m->out_shapes);
    vbs_def_free(&m->def);
    if (m->map) munmap(m->map, m->map_len);
    free(m);
}

const char *vbs_model_errmsg(const vbs_model *m) {
    if (!m) return "out of memory";
    return m->err[0] ? m->err : "no error";
}

/* The shape used to validate a graph at load: fixed dims as stored, each
 * symbolic batch dim 1, each symbolic spatial dim the card's patch size or 64. */
static void probe_shape(const vbs_model *m, int i, vbs_shape *s) {
    const vbs_io_def *io = &m->def.inputs[i];
    const vbs_card *c = &m->def.card;
    s->ndim = io->ndim;
    for (int j = 0; j < io->ndim; j++) {
        if (io->dims[j] >= 0) { s->d[j] = io->dims[j]; continue; }
        int sp = j - (io->ndim - c->n_patch);
        s->d[j] = j == 0 ? 1 : (c->n_patch > 0 && sp >= 0 && j >= 2 ? c->patch[sp] : 64);
    }
}

vbs_status vbs_model_init(vbs_model *m, const char *fname) {
    vbs_def *d = &m->def;
    char err[VBS_ERRLEN];
    vbs_status st;
    /* the file reader refuses these too; a graph built through the API must not reach a session without them */
    if (d->n_inputs < 1 || d->n_outputs < 1)
        return vbs_fail(m->err, VBS_ERR_GRAPH, "%s: the graph has no %s", fname, d->n_inputs < 1 ? "inputs" : "outputs");
    /* a checksummed file's reader made this check in its CRC pass (finite_seen) */
    for (int i = 0; i < d->n_tensors; i++)
        if (d->tensors[i].finite_seen == 2 || (!d->tensors[i].finite_seen && vbs_any_nonfinite(d->tensors[i].data, d->tensors[i].numel)))
            return vbs_fail(m->err, VBS_ERR_NUMERIC, "%s: tensor '%s' contains NaN or Inf", fname, d->tensors[i].name);
    if ((st = vbs_graph_build(&m->g, d, err))) return vbs_fail(m->err, st, "%s: %s", fname, err);
    m->g.sigma = calloc((size_t)d->n_tensors + 1, sizeof(float *));
    if (!m->g.sigma) return vbs_fail(m->err, VBS_ERR_NOMEM, "%s: out of memory", fname);
    m->g.n_sigma = d->n_tensors;
    for (int i = 0; i < m->g.n_values; i++) {
        const vbs_value *v = &m->g.values[i];
        if (v->kind != VBS_VAL_VARWEIGHT) continue;
        const vbs_tensor_def *rho = &d->tensors[v->rho];
        float *s = malloc(sizeof(float) * (size_t)(rho->numel + 1));
        if (!s) return vbs_fail(m->err, VBS_ERR_NOMEM, "%s: out of memory", fname);
        for (int64_t e = 0; e < rho->numel; e++) s[e] = vbs_softplus(rho->data[e]);
        m->g.sigma[v->tensor] = s;
    }
    vbs_shape in[16], in2[16];
    if (d->n_inputs > 16) return vbs_fail(m->err, VBS_ERR_UNSUPPORTED, "%s: more than 16 graph inputs", fname);
    for (int i = 0; i < d->n_inputs; i++) probe_shape(m, i, &in[i]);
    vbs_plan p;
    if ((st = vbs_plan_build(&p, &m->g, in, err))) return vbs_fail(m->err, st, "%s: shape inference: %s", fname, err);
    /* Output shapes for inspection: a second probe with each symbolic dim
     * multiplied by its own factor (2, 3, 4, ...) tells fixed dims from those
     * that follow an input dim, and which one. */
    int factor = 2;
    for (int i = 0; i < d->n_inputs; i++) {
        in2[i] = in[i];
        for (int j = 0; j < in[i].ndim; j++)
            if (d->inputs[i].dims[j] < 0) in2[i].d[j] *= factor++;
    }
    vbs_plan p2;
    vbs_status st2 = vbs_plan_build(&p2, &m->g, in2, err);
    int have2 = st2 == VBS_OK;
    m->out_shapes = calloc((size_t)d->n_outputs + 1, sizeof(vbs_io_def));
    /* out of memory here would report symbolic output dims as fixed, or none: a failure, not a guess */
    if (st2 == VBS_ERR_NOMEM || !m->out_shapes) {
        if (have2) vbs_plan_free(&p2);
        vbs_plan_free(&p);
        return vbs_fail(m->err, VBS_ERR_NOMEM, "%s: out of memory", fname);
    }
    for (int i = 0; i < d->n_outputs; i++) {
        vbs_io_def *o = &m->out_shapes[i];
        *o = d->outputs[i];
        if (o->ndim) continue;
        const vbs_shape *a = &p.shapes[m->g.output_vals[i]], *b = have2 ? &p2.shapes[m->g.output_vals[i]] : a;
        o->ndim = a->ndim;
        for (int j = 0; j < a->ndim; j++) {
            o->dims[j] = a->d[j];
            o->param[j] = NULL;
            if (b->d[j] == a->d[j]) continue;
            o->dims[j] = -1;
            o->param[j] = "?";
            for (int k = 0; k < d->n_inputs; k++)
                for (int q = 0; q < in[k].ndim; q++)
                    if (d->inputs[k].dims[q] < 0 && in[k].d[q] == a->d[j] && in2[k].d[q] == b->d[j]) o->param[j] = d->inputs[k].param[q];
        }
    }
    if (have2) vbs_plan_free(&p2);
    /* declared output dims must agree with inference where fixed */
    for (int i = 0; i < d->n_outputs && !st; i++) {
        const vbs_io_def *io = &d->outputs[i];
        const vbs_shape *s = &p.shapes[m->g.output_vals[i]];
        if (io->ndim && io->ndim != s->ndim)
            st = vbs_fail(m->err, VBS_ERR_SHAPE, "%s: graph output '%s' declared with %d dims, inferred %d", fname, io->name, io->ndim, s->ndim);
        for (int j = 0; j < io->ndim && !st && j < s->ndim; j++)
            if (io->dims[j] >= 0 && j > 0 && io->dims[j] != s->d[j])
                st = vbs_fail(m->err, VBS_ERR_SHAPE, "%s: graph output '%s' dim %d declared %lld, inferred %lld", fname,
                              io->name, j, (long long)io->dims[j], (long long)s->d[j]);
    }
    vbs_plan_free(&p);
    if (!st) st = vbs_model_check_card(m, fname);
    if (st) return st;
    m->loaded = 1;
    return VBS_OK;
}

/* The names of the card's channels, for messages: "flair, t1, ..." */
static void channel_list(const vbs_card *c, char *buf, size_t len) {
    buf[0] = 0;
    for (int i = 0, n = 0; i < c->n_channels; i++) {
        if (i == 4) { snprintf(buf + n, len - (size_t)n, ", ..."); break; }
        n += snprintf(buf + n, len - (size_t)n, "%s%s", i ? ", " : "", c->channels[i] ? c->channels[i] : "");
        if (n >= (int)len) break;
    }
}

vbs_status vbs_model_check_card(vbs_model *m, const char *fname) {
    const vbs_def *d = &m->def;
    const vbs_card *c = &d->card;
    if ((int)c->output_activation < VBS_ACT_SOFTMAX || c->output_activation > VBS_ACT_NONE)
        return vbs_fail(m->err, VBS_ERR_FORMAT, "%s: model card: output activation %d is not softmax, sigmoid or none", fname,
                        (int)c->output_activation);
    /* channels against input 0's channel dim, where it is fixed */
    const vbs_io_def *in = d->n_inputs ? &d->inputs[0] : NULL;
    if (c->n_channels > 0 && in && in->ndim >= 2 && in->dims[1] >= 0 && in->dims[1] != c->n_channels) {
        char names[256];
        channel_list(c, names, sizeof names);
        return vbs_fail(m->err, VBS_ERR_SHAPE, "%s: model card lists %d channel%s (%s) but input '%s' has %lld channel%s", fname,
                        c->n_channels, c->n_channels == 1 ? "" : "s", names, in->name, (long long)in->dims[1],
                        in->dims[1] == 1 ? "" : "s");
    }
    /* labels against output 0's class dim, where it is fixed: one label per
     * class, except a single channel read as P(foreground) (sigmoid, or none:
     * the graph's probability), which takes background and foreground */
    if (d->n_outputs && !m->out_shapes) return vbs_fail(m->err, VBS_ERR_NOMEM, "%s: out of memory", fname);
    const vbs_io_def *out = d->n_outputs ? &m->out_shapes[0] : NULL;
    if (c->n_labels > 0 && out && out->ndim >= 2 && out->dims[1] >= 0) {
        int64_t k = out->dims[1];
        int binary = k == 1 && c->output_activation != VBS_ACT_SOFTMAX;
        int64_t want = binary ? 2 : k;
        if (c->n_labels != want)
            return vbs_fail(m->err, VBS_ERR_SHAPE, "%s: model card lists %d label%s but output '%s' has %lld %s%s", fname,
                            c->n_labels, c->n_labels == 1 ? "" : "s", out->name, (long long)k,
                            binary ? "channel" : k == 1 ? "class" : "classes",
                            binary ? ", a foreground probability: list 2 labels (background, foreground) or none" : "");
    }
    return VBS_OK;
}

/* ---- what output 0 carries ------------------------------------------------- */

static int layout_node(const vbs_node *n) { return n->op == VBS_OP_IDENTITY || n->op == VBS_OP_DROPOUT || n->op == VBS_OP_TRANSPOSE; }

/* Back through a layout node: q[i], the axis of the node's output that holds
 * output 0's axis i, becomes that axis of its input. 0 if the perm does not
 * cover an axis. */
static int layout_back(const vbs_node *n, int rank, int *q) {
    if (n->op != VBS_OP_TRANSPOSE) return 1;
    for (int i = 0; i < rank; i++) { /* output axis j is input axis perm[j]; no perm reverses the axes */
        if (n->a.pad.n < 0) q[i] = rank - 1 - q[i];
        else if (q[i] < n->a.pad.n) q[i] = (int)n->a.pad.pads[q[i]];
        else return 0;
    }
    return 1;
}

/* From value v (axes mapped by q) back through layout nodes to the first
 * value whose axes are output 0's, in order; -1 if there is none. */
static int same_layout_before(const vbs_graph *g, int v, int rank, int *q) {
    for (int steps = 0; steps <= g->n_nodes; steps++) {
        int same = 1;
        for (int i = 0; i < rank; i++) same &= q[i] == i;
        if (same) return v;
        int p = g->values[v].producer;
        if (p < 0 || !layout_node(&g->nodes[p]) || !layout_back(&g->nodes[p], rank, q)) return -1;
        v = g->nodes[p].in[0];
    }
    return -1;
}

vbs_tail_kind vbs_output_tail(const vbs_model *m, int *logits, char *what, size_t len) {
    const vbs_graph *g = &m->g;
    int v = g->output_vals[0], rank = m->out_shapes && m->out_shapes[0].ndim > 2 ? m->out_shapes[0].ndim : 2;
    int q[VBS_MAX_DIMS];
    for (int i = 0; i < VBS_MAX_DIMS; i++) q[i] = i;
    if (logits) *logits = v;
    for (int steps = 0; steps <= g->n_nodes; steps++) {
        int p = g->values[v].producer;
        if (p < 0) break;
        const vbs_node *n = &g->nodes[p];
        if (layout_node(n)) {
            if (!layout_back(n, rank, q)) break;
            v = n->in[0];
            continue;
        }
        vbs_tail_kind kind = VBS_TAIL_LOGITS;
        if (n->op == VBS_OP_SIGMOID) {
            snprintf(what, len, "Sigmoid, node '%s'", n->name);
            kind = VBS_TAIL_SIGMOID;
        } else if (n->op == VBS_OP_SOFTMAX) {
            int64_t ax = n->a.softmax.axis < 0 ? n->a.softmax.axis + rank : n->a.softmax.axis;
            /* opset < 13 flattens from the axis on: one axis only when it is the last */
            if (ax == q[1] && (!n->a.softmax.flatten || q[1] == rank - 1)) {
                snprintf(what, len, "Softmax over the channels, node '%s'", n->name);
                kind = VBS_TAIL_SOFTMAX;
            } else
                snprintf(what, len, "raw logits: a Softmax over %s, not the channels, node '%s'",
                         n->a.softmax.flatten ? "flattened axes" : "another axis", n->name);
        } else
            snprintf(what, len, "raw logits, node '%s' (%s)", n->name, vbs_ops[n->op].name);
        if (kind != VBS_TAIL_LOGITS && logits) *logits = same_layout_before(g, n->in[0], rank, q);
        return kind;
    }
    snprintf(what, len, "raw values, graph input '%s'", g->values[v].name);
    return VBS_TAIL_LOGITS;
}

vbs_status vbs_model_logits(const vbs_model *m, int *v, char *err) {
    *v = m->g.output_vals[0];
    if (m->def.card.output_activation != VBS_ACT_NONE) return VBS_OK;
    char what[600];
    vbs_tail_kind tail = vbs_output_tail(m, v, what, sizeof what);
    const vbs_io_def *o = &m->out_shapes[0];
    int64_t k = o->ndim >= 2 ? o->dims[1] : -1;
    if (tail == VBS_TAIL_SIGMOID && k != 1)
        return vbs_fail(err, VBS_ERR_UNSUPPORTED, "output '%s': the graph ends in %s, over %lld channels: independent probabilities, "
                        "which the trainer's softmax loss cannot train; export the network without the final Sigmoid and convert it "
                        "with output_activation sigmoid",
                        o->name, what, (long long)k);
    if (tail == VBS_TAIL_LOGITS || *v < 0)
        return vbs_fail(err, VBS_ERR_UNSUPPORTED, "output '%s': the model card says the graph outputs probabilities, but the logits before "
                        "them cannot be found (the graph ends in %s)", o->name, what);
    return VBS_OK;
}

static vbs_status load_buffer(vbs_model *m, const uint8_t *buf, size_t len, const char *name) {
    char err[VBS_ERRLEN];
    vbs_status st = vbs_format_parse(buf, len, name, &m->def, err);
    if (st) return vbs_fail(m->err, st, "%s", err);
    return vbs_model_init(m, name);
}

vbs_status vbs_model_load_memory(const void *buf, size_t len, const char *name, vbs_model **out) {
    vbs_model *m = vbs_model_alloc();
    *out = m;
    if (!m) return VBS_ERR_NOMEM;
    if (!buf) return vbs_fail(m->err, VBS_ERR_ARG, "vbs_model_load_memory: NULL buffer");
    return load_buffer(m, buf, len, name ? name : "<memory>");
}

vbs_status vbs_model_load(const char *path, vbs_model **out) {
    vbs_model *m = vbs_model_alloc();
    *out = m;
    if (!m) return VBS_ERR_NOMEM;
    if (!path) return vbs_fail(m->err, VBS_ERR_ARG, "vbs_model_load: NULL path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return vbs_fail(m->err, VBS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        return vbs_fail(m->err, VBS_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_size == 0) {
        close(fd);
        return vbs_fail(m->err, VBS_ERR_FORMAT, "%s: empty file", path);
    }
    void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return vbs_fail(m->err, VBS_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
    m->map = p;
    m->map_len = (size_t)sb.st_size;
    return load_buffer(m, p, m->map_len, path);
}

vbs_status vbs_model_save(vbs_model *m, const char *path) {
    if (!m || !path) return VBS_ERR_ARG;
    if (!m->loaded) return vbs_fail(m->err, VBS_ERR_STATE, "vbs_model_save: model did not load");
    char err[VBS_ERRLEN];
    vbs_status st = vbs_format_write(&m->def, path, err);
    if (st) vbs_fail(m->err, st, "%s", err);
    return st;
}

int vbs_model_n_inputs(const vbs_model *m) { return m && m->loaded ? m->def.n_inputs : 0; }
int vbs_model_n_outputs(const vbs_model *m) { return m && m->loaded ? m->def.n_outputs : 0; }

static vbs_status io_info(const vbs_io_def *io, vbs_value_info *out) {
    memset(out, 0, sizeof *out);
    out->name = io->name;
    out->ndim = io->ndim;
    for (int i = 0; i < io->ndim; i++) {
        out->dims[i] = io->dims[i];
        out->dim_param[i] = io->param[i];
    }
    return VBS_OK;
}

vbs_status vbs_model_input(const vbs_model *m, int i, vbs_value_info *out) {
    if (!m || !m->loaded || i < 0 || i >= m->def.n_inputs || !out) return VBS_ERR_ARG;
    return io_info(&m->def.inputs[i], out);
}

vbs_status vbs_model_output(const vbs_model *m, int i, vbs_value_info *out) {
    if (!m || !m->loaded || i < 0 || i >= m->def.n_outputs || !out) return VBS_ERR_ARG;
    return io_info(m->out_shapes ? &m->out_shapes[i] : &m->def.outputs[i], out);
}

const vbs_card *vbs_model_card(const vbs_model *m) { return m && m->loaded ? &m->def.card : NULL; }

int vbs_model_n_nodes(const vbs_model *m) { return m && m->loaded ? m->def.n_nodes : 0; }
const char *vbs_model_node_op(const vbs_model *m, int i) {
    return m && m->loaded && i >= 0 && i < m->def.n_nodes ? m->def.nodes[i].op_type : NULL;
}
const char *vbs_model_node_name(const vbs_model *m, int i) {
    return m && m->loaded && i >= 0 && i < m->def.n_nodes ? m->def.nodes[i].name : NULL;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

vbs_status vbs_model_get_stats(const vbs_model *m, vbs_model_stats *out) {
    if (!m || !m->loaded || !out) return VBS_ERR_ARG;
    memset(out, 0, sizeof *out);
    out->n_nodes = m->def.n_nodes;
    int64_t nsig = 0;
    for (int i = 0; i < m->def.n_tensors; i++) {
        const vbs_tensor_def *t = &m->def.tensors[i];
        if (t->role == VBS_ROLE_RHO) { nsig += t->numel; continue; }
        if (t->role == VBS_ROLE_OPTIM) continue;
        out->n_params += t->numel;
        if (t->role == VBS_ROLE_MU) out->n_variational += t->numel;
    }
    if (!nsig) return VBS_OK;
    float *all = malloc(sizeof(float) * (size_t)nsig);
    if (!all) return VBS_ERR_NOMEM;
    int64_t k = 0;
    for (int i = 0; i < m->def.n_tensors; i++)
        if (m->g.sigma[i]) {
            memcpy(all + k, m->g.sigma[i], sizeof(float) * (size_t)m->def.tensors[i].numel);
            k += m->def.tensors[i].numel;
        }
    qsort(all, (size_t)k, sizeof(float), cmp_float);
    out->sigma_min = all[0];
    out->sigma_max = all[k - 1];
    out->sigma_median = k % 2 ? all[k / 2] : 0.5f * (all[k / 2 - 1] + all[k / 2]);
    free(all);
    return VBS_OK;
}

vbs_status vbs_model_stochasticity(const vbs_model *m, vbs_stochasticity *out) {
    if (!m || !m->loaded || !out) return VBS_ERR_ARG;
    memset(out, 0, sizeof *out);
    for (int i = 0; i < m->def.n_tensors; i++)
        if (m->def.tensors[i].role == VBS_ROLE_MU) out->n_variational += m->def.tensors[i].numel;
    for (int i = 0; i < m->g.n_nodes; i++) {
        const vbs_node *n = &m->g.nodes[i];
        out->n_latent += n->op == VBS_OP_GAUSSIAN_SAMPLE;
        if (n->op != VBS_OP_DROPOUT || !(n->a.ratio > 0.f)) continue;
        if (!out->n_dropout++ || n->a.ratio < out->dropout_min) out->dropout_min = n->a.ratio;
        if (n->a.ratio > out->dropout_max) out->dropout_max = n->a.ratio;
    }
    out->kind = out->n_variational && out->n_dropout ? "both" : out->n_variational ? "variational weights" : out->n_dropout ? "dropout" : "none";
    return VBS_OK;
}

vbs_status vbs_model_flops(vbs_model *m, const int64_t *shape, int ndim, double *flops) {
    if (!m || !m->loaded || !shape || !flops || ndim < 1 || ndim > VBS_MAX_DIMS || m->def.n_inputs != 1) return VBS_ERR_ARG;
    vbs_shape in = {ndim, {0}};
    memcpy(in.d, shape, sizeof(int64_t) * (size_t)ndim);
    vbs_plan p;
    char err[VBS_ERRLEN];
    vbs_status st = vbs_plan_build(&p, &m->g, &in, err);
    if (st) return vbs_fail(m->err, st, "%s", err);
    *flops = p.flops;
    vbs_plan_free(&p);
    return VBS_OK;
}

vbs_status vbs_model_prior(const vbs_model *m, vbs_prior_info *out) {
    if (!m || !m->loaded || !out) return VBS_ERR_ARG;
    int n = 0;
    for (int i = 0; i < m->def.n_tensors; i++) {
        const vbs_tensor_def *t = &m->def.tensors[i];
        if (t->role != VBS_ROLE_MU) continue;
        vbs_prior_info p = {t->prior.kind == VBS_PRIOR_MIXTURE, t->prior.sigma, t->prior.pi, t->prior.sigma1, t->prior.sigma2};
        if (n++ && memcmp(&p, out, sizeof p)) return VBS_ERR_STATE;
        *out = p;
    }
    return n ? VBS_OK : VBS_ERR_STATE;
}

int vbs_model_checkpoint_state(const vbs_model *m, int *epochs, int64_t *steps) {
    if (!m || !m->loaded || !m->def.train) return 0;
    if (epochs) *epochs = m->def.train->epoch;
    if (steps) *steps = m->def.train->step;
    return 1;
}
