/*
 * twin.c: a checkpoint's named tensors (ckpt.h) onto a graph, and a model
 * back into a checkpoint (issue 11 §2, §3, §4).
 *
 * The graph is an ONNX twin (the network with mu as its weights, imported
 * deterministic with BatchNormalization kept, so its weights are the
 * checkpoint's bytes) or a .vbseg model. Every graph tensor (plain or a
 * mean; rho and optimiser state aside) is matched to a checkpoint tensor,
 * first by the name the convention gives (naming.c), then, for those left,
 * by exact bytes (an exporter that renamed its initializers keeps their
 * values). A matched mean with a spread becomes a variational weight (its
 * rho from the checkpoint, torchbnn's log sigma converted), one without
 * becomes plain; unmatched graph tensors keep the graph's values and are
 * reported, as are unmatched plain checkpoint tensors. Refused, naming the
 * tensor: NaN/Inf in a mean or spread, a spread without its mean, a shape
 * that differs, a Conv/ConvTranspose weight left unmatched (Conv+BN
 * fusion), a mean the graph lacks, and byte matches that could pair a mean
 * with the wrong spread. Tensor order is kept (a rho stays where it was, a
 * new rho follows its mean): sampling streams follow tensor indices, so a
 * model exported and converted back samples the same bytes.
 *
 * Not here: reading files (pytorch.c, safetensors.c), ONNX (onnx.c).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../format/layout.h"
#include "../models/builder.h"
#include "twin.h"

typedef struct {
    int kind;        /* vbs_key_kind; MU also for a plain-convention tensor that has a spread */
    char *target;    /* graph tensor it fills */
    int spread;      /* MU: index of its spread, else -1 */
    int match;       /* graph tensor index, or -1 */
} entry;

static const char *base(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int finite_all(const float *v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

/* the checkpoint tensor fits the graph tensor (an ONNX scalar was imported as [1]) */
static int same_shape(const vbs_ckpt_tensor *c, const vbs_tensor_def *t) {
    if (c->ndim == 0) return t->numel == 1;
    if (c->ndim != t->ndim) return 0;
    for (int i = 0; i < c->ndim; i++)
        if (c->dims[i] != t->dims[i]) return 0;
    return 1;
}

static void dims_text(char *buf, size_t n, int ndim, const int64_t *d) {
    size_t l = 0;
    l += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && l < n; i++) l += (size_t)snprintf(buf + l, n - l, "%s%lld", i ? ", " : "", (long long)d[i]);
    if (l < n) snprintf(buf + l, n - l, "]");
}

/* the graph tensors a Conv or ConvTranspose reads as its weight */
static int is_conv_weight(const vbs_def *d, const char *name) {
    for (int i = 0; i < d->n_nodes; i++) {
        const vbs_node_def *n = &d->nodes[i];
        if ((!strcmp(n->op_type, "Conv") || !strcmp(n->op_type, "ConvTranspose")) && n->n_in > 1 && !strcmp(n->in[1], name)) return 1;
    }
    return 0;
}

/* equal bytes (and shape) of checkpoint tensors a and b, either may be absent (-1) */
static int same_bytes(const vbs_ckpt *c, int a, int b) {
    if (a < 0 || b < 0) return a == b;
    const vbs_ckpt_tensor *x = &c->t[a], *y = &c->t[b];
    return x->numel == y->numel && !memcmp(x->data, y->data, sizeof(float) * (size_t)x->numel);
}

/* the graph from its file: a .vbseg by its magic bytes, else ONNX */
static vbs_status load_graph(const char *path, const vbs_twin_opts *o, vbs_model **m) {
    uint8_t head[8] = {0};
    FILE *f = fopen(path, "rb");
    size_t got = f ? fread(head, 1, sizeof head, f) : 0;
    if (f) fclose(f);
    if (got == sizeof head && !memcmp(head, vbs_magic, sizeof head)) {
        vbs_status st = vbs_model_load(path, m);
        if (!st && o->card)
            st = vbs_fail_file((*m)->err, VBS_ERR_ARG, path, "--card applies to an ONNX twin (a .vbseg graph keeps its own card)");
        return st;
    }
    vbs_convert_opts co = vbs_convert_defaults();
    co.sigma = VBS_SIGMA_NONE;
    co.keep_batchnorm = 1;
    co.card = o->card;
    return vbs_convert_onnx(path, &co, m);
}

/* the card's extra fields with naming, prior and checkpoint (re)set, and an
 * ONNX import's sigma_init (none: not what the weights are) removed */
static vbs_status set_extra(vbs_model *m, const char *ckpt_path, const vbs_twin_opts *o, vbs_naming nm) {
    vbs_card *card = &m->def.card;
    static const char *const ours[] = {"sigma_init", "naming", "prior", "checkpoint"};
    vbs_kv *kv = vbs_arena_alloc(&m->def.arena, sizeof(vbs_kv) * (size_t)(card->n_extra + 4));
    if (!kv) return vbs_fail_file(m->err, VBS_ERR_NOMEM, ckpt_path, "out of memory");
    int n = 0;
    for (int i = 0; i < card->n_extra; i++) {
        int drop = 0;
        for (int k = 0; k < 4; k++) drop |= card->extra[i].key && !strcmp(card->extra[i].key, ours[k]);
        if (!drop) kv[n++] = card->extra[i];
    }
    char prior[64];
    if (o->prior_given) snprintf(prior, sizeof prior, "normal:%g", (double)o->prior_sigma);
    else snprintf(prior, sizeof prior, "unknown");
    const char *val[3] = {vbs_naming_word(nm), prior, base(ckpt_path)};
    for (int k = 0; k < 3; k++) {
        kv[n].key = vbs_arena_strdup(&m->def.arena, ours[k + 1]);
        kv[n].value = vbs_arena_strdup(&m->def.arena, val[k]);
        if (!kv[n].key || !kv[n].value) return vbs_fail_file(m->err, VBS_ERR_NOMEM, ckpt_path, "out of memory");
        n++;
    }
    card->extra = kv;
    card->n_extra = n;
    return VBS_OK;
}

/* Classifies the checkpoint's keys: kinds, targets, spreads; the refusals
 * that need no graph. */
static vbs_status classify(vbs_model *m, const vbs_ckpt *c, const char *path, vbs_naming nm, entry *e, int *n_dropped) {
    char t[1024], other[1024], a[64], b[64];
    for (int i = 0; i < c->n; i++) {
        e[i].spread = e[i].match = -1;
        e[i].kind = vbs_naming_split(nm, c->t[i].name, t, sizeof t);
        if (e[i].kind < 0) return vbs_fail_file(m->err, VBS_ERR_ARG, path, "key '%.200s...' is too long", c->t[i].name);
        if (e[i].kind == VBS_KEY_DROPPED) { (*n_dropped)++; continue; }
        /* a spread of another convention taken as a plain tensor would convert
         * its layer silently deterministic (its mean matched by bytes, the
         * spread listed as unmatched): the wrong --naming, refused */
        for (vbs_naming o = VBS_NAMING_PLAIN; e[i].kind == VBS_KEY_PLAIN && o <= VBS_NAMING_TORCHBNN; o++)
            if (o != nm && vbs_naming_split(o, c->t[i].name, other, sizeof other) == VBS_KEY_SPREAD)
                return vbs_fail_file(m->err, VBS_ERR_FORMAT, path,
                                     "tensor '%s' is a spread under the %s convention, not under %s: its weight would lose it (--naming %s or auto)",
                                     c->t[i].name, vbs_naming_word(o), vbs_naming_word(nm), vbs_naming_word(o));
        if (!(e[i].target = strdup(t))) return vbs_fail_file(m->err, VBS_ERR_NOMEM, path, "out of memory");
        if (e[i].kind != VBS_KEY_PLAIN && !c->t[i].data)
            return vbs_fail_file(m->err, VBS_ERR_FORMAT, path, "tensor '%s' is %s, not floating point", c->t[i].name, c->t[i].dtype);
        for (int j = 0; j < i; j++) {
            if (!e[j].target || (e[j].kind == VBS_KEY_SPREAD) != (e[i].kind == VBS_KEY_SPREAD) || strcmp(e[j].target, t)) continue;
            return vbs_fail_file(m->err, VBS_ERR_FORMAT, path, "tensors '%s' and '%s' both give the %s of '%s'", c->t[j].name,
                                 c->t[i].name, e[i].kind == VBS_KEY_SPREAD ? "spread" : "values", t);
        }
    }
    for (int i = 0; i < c->n; i++) {
        if (e[i].kind != VBS_KEY_SPREAD) continue;
        int mu = -1;
        for (int j = 0; j < c->n && mu < 0; j++)
            if (e[j].target && e[j].kind != VBS_KEY_SPREAD && !strcmp(e[j].target, e[i].target)) mu = j;
        if (mu < 0)
            return vbs_fail_file(m->err, VBS_ERR_FORMAT, path, "tensor '%s' is the spread of '%s', which has no mean in the checkpoint",
                                 c->t[i].name, e[i].target);
        const vbs_ckpt_tensor *x = &c->t[mu], *s = &c->t[i];
        if (!x->data)
            return vbs_fail_file(m->err, VBS_ERR_FORMAT, path, "tensor '%s' is %s, not floating point", x->name, x->dtype);
        int same = x->ndim == s->ndim;
        for (int k = 0; same && k < x->ndim; k++) same = x->dims[k] == s->dims[k];
        if (!same) {
            dims_text(a, sizeof a, x->ndim, x->dims);
            dims_text(b, sizeof b, s->ndim, s->dims);
            return vbs_fail_file(m->err, VBS_ERR_SHAPE, path, "tensor '%s' has shape %s but its mean '%s' has %s", s->name, b, x->name, a);
        }
        e[mu].kind = VBS_KEY_MU;
        e[mu].spread = i;
    }
    for (int i = 0; i < c->n; i++) {
        /* every library stores a spread beside each mean: one missing is the wrong convention or a damaged file */
        if (e[i].kind == VBS_KEY_MU && e[i].spread < 0)
            return vbs_fail_file(m->err, VBS_ERR_FORMAT, path, "tensor '%s' is a mean without its spread under the %s convention",
                                 c->t[i].name, vbs_naming_word(nm));
        if (e[i].kind != VBS_KEY_MU && e[i].kind != VBS_KEY_SPREAD) continue;
        if (!finite_all(c->t[i].data, c->t[i].numel))
            return vbs_fail_file(m->err, VBS_ERR_NUMERIC, path, "tensor '%s' (the %s of '%s') contains NaN or Inf", c->t[i].name,
                                 e[i].kind == VBS_KEY_MU ? "mean" : "spread", e[i].target);
    }
    return VBS_OK;
}

/* Name matching, then byte matching, then the refusals that need both sides. */
static vbs_status match(vbs_model *m, const vbs_ckpt *c, const char *path, const char *gpath, entry *e, int *gm, vbs_twin_report *rep) {
    const vbs_def *d = &m->def;
    char a[64], b[64];
    for (int t = 0; t < d->n_tensors; t++) gm[t] = -1;
    for (int pass = 0; pass < 2; pass++)
        for (int t = 0; t < d->n_tensors; t++) {
            const vbs_tensor_def *g = &d->tensors[t];
            if (gm[t] >= 0 || (g->role != VBS_ROLE_PLAIN && g->role != VBS_ROLE_MU) || !g->data) continue;
            int found = -1, other = -1;
            for (int i = 0; i < c->n; i++) {
                const vbs_ckpt_tensor *x = &c->t[i];
                if (e[i].match >= 0 || !x->data || (e[i].kind != VBS_KEY_PLAIN && e[i].kind != VBS_KEY_MU)) continue;
                int hit = pass == 0 ? !strcmp(e[i].target, g->name)
                                    : same_shape(x, g) && !memcmp(x->data, g->data, sizeof(float) * (size_t)g->numel);
                if (!hit) continue;
                if (found < 0) found = i;
                else if (other < 0) other = i;
            }
            if (found < 0) continue;
            /* equal means with different spreads: either pairing could be the wrong one */
            if (other >= 0 && !same_bytes(c, e[found].spread, e[other].spread))
                return vbs_fail_file(m->err, VBS_ERR_FORMAT, path,
                                     "graph tensor '%s' has the bytes of both '%s' and '%s', whose spreads differ: export the twin "
                                     "with the checkpoint's module paths", g->name, c->t[found].name, c->t[other].name);
            if (!same_shape(&c->t[found], g)) {
                dims_text(a, sizeof a, c->t[found].ndim, c->t[found].dims);
                dims_text(b, sizeof b, g->ndim, g->dims);
                return vbs_fail_file(m->err, VBS_ERR_SHAPE, path, "tensor '%s' has shape %s but the graph's '%s' has %s", c->t[found].name,
                                     a, g->name, b);
            }
            gm[t] = found;
            e[found].match = t;
            if (pass == 0) rep->n_by_name++;
            else rep->n_by_bytes++;
        }
    for (int t = 0; t < d->n_tensors; t++)
        if (gm[t] < 0 && (d->tensors[t].role == VBS_ROLE_PLAIN || d->tensors[t].role == VBS_ROLE_MU) && is_conv_weight(d, d->tensors[t].name))
            return vbs_fail_file(m->err, VBS_ERR_FORMAT, gpath,
                                 "Conv weight '%s' matches no checkpoint tensor: export the twin with do_constant_folding=False "
                                 "(Conv+BN fusion changes the weights) and training=TrainingMode.PRESERVE", d->tensors[t].name);
    for (int i = 0; i < c->n; i++)
        if (e[i].kind == VBS_KEY_MU && e[i].match < 0)
            return vbs_fail_file(m->err, VBS_ERR_FORMAT, path, "tensor '%s' is a mean the graph lacks: no tensor '%s', none with its bytes",
                                 c->t[i].name, e[i].target);
    return VBS_OK;
}

/* The index of the mean whose rho is tensor r, or -1. */
static int mean_of(const vbs_def *d, int r) {
    for (int k = 0; k < d->n_tensors; k++)
        if (d->tensors[k].role == VBS_ROLE_MU && d->tensors[k].rho && !strcmp(d->tensors[k].rho, d->tensors[r].name)) return k;
    return -1;
}

/* The graph's tensor list rebuilt in its order with the checkpoint's values:
 * rho[t] (arena) is the rho of matched mean t when the checkpoint gives a
 * spread; a graph rho keeps its place, a new one follows its mean. */
static vbs_status rebuild(vbs_model *m, const vbs_ckpt *c, const char *path, const vbs_twin_opts *o, vbs_naming nm, const entry *e,
                          const int *gm, float **rho, vbs_twin_report *rep) {
    vbs_def *d = &m->def;
    vbs_arena *ar = &d->arena;
    for (int t = 0; t < d->n_tensors; t++) {
        int64_t numel = d->tensors[t].numel;
        if (gm[t] < 0 || e[gm[t]].spread < 0) continue;
        const vbs_ckpt_tensor *sp = &c->t[e[gm[t]].spread];
        if (!(rho[t] = vbs_arena_alloc(ar, sizeof(float) * (size_t)numel))) return vbs_fail_file(m->err, VBS_ERR_NOMEM, path, "out of memory");
        for (int64_t i = 0; i < numel; i++) {
            /* torchbnn: sigma = exp(l), rho = softplus^-1(sigma) = log(expm1(exp l)) = l + O(exp l) below -30,
             * where exp(l) would underflow in double from -745 */
            double l = sp->data[i];
            rho[t][i] = nm != VBS_NAMING_TORCHBNN ? sp->data[i] : l < -30 ? (float)l : (float)vbs_softplus_inv(exp(l));
            if (!isfinite(rho[t][i]))
                return vbs_fail_file(m->err, VBS_ERR_NUMERIC, path, "tensor '%s': log sigma %g has no finite rho in float", sp->name,
                                     (double)sp->data[i]);
        }
    }
    vbs_tensor_def *nt = vbs_arena_alloc(ar, sizeof *nt * (size_t)(2 * d->n_tensors + 1));
    if (!nt) return vbs_fail_file(m->err, VBS_ERR_NOMEM, path, "out of memory");
    float prior = o->prior_given ? o->prior_sigma : 1.0f;
    int n = 0;
    for (int t = 0; t < d->n_tensors; t++) {
        const vbs_tensor_def *g = &d->tensors[t];
        if (g->role == VBS_ROLE_OPTIM) continue; /* a training checkpoint's state: the output is a model */
        if (g->role == VBS_ROLE_RHO) {
            int mu = mean_of(d, t);
            if (mu >= 0 && gm[mu] >= 0 && !rho[mu]) continue; /* its mean became plain */
            nt[n] = *g;
            if (mu >= 0 && rho[mu]) nt[n].data = rho[mu];
            n++;
            continue;
        }
        nt[n] = *g;
        if (gm[t] < 0) {
            rep->unmatched_graph[rep->n_unmatched_graph++] = g->name;
            n++;
            continue;
        }
        float *v = vbs_arena_alloc(ar, sizeof(float) * (size_t)g->numel);
        if (!v) return vbs_fail_file(m->err, VBS_ERR_NOMEM, path, "out of memory");
        memcpy(v, c->t[gm[t]].data, sizeof(float) * (size_t)g->numel);
        nt[n].data = v;
        if (!rho[t]) {
            nt[n].role = VBS_ROLE_PLAIN;
            nt[n].rho = NULL;
            nt[n].has_prior = 0;
            n++;
            continue;
        }
        rep->n_variational++;
        const char *rname = g->role == VBS_ROLE_MU ? g->rho : NULL;
        char buf[1024];
        if (!rname) {
            snprintf(buf, sizeof buf, "%s.rho", g->name);
            if (!(rname = vbs_arena_strdup(ar, buf))) return vbs_fail_file(m->err, VBS_ERR_NOMEM, path, "out of memory");
        }
        vbs_tensor_set_mu(&nt[n++], rname, prior);
        if (g->role == VBS_ROLE_MU) continue; /* its rho is in the list at its own place */
        vbs_tensor_def *rt = &nt[n++];
        memset(rt, 0, sizeof *rt);
        rt->name = (char *)rname;
        rt->ndim = g->ndim;
        memcpy(rt->dims, g->dims, sizeof rt->dims);
        rt->numel = g->numel;
        rt->nbytes = g->nbytes;
        rt->role = VBS_ROLE_RHO;
        rt->data = rho[t];
    }
    d->tensors = nt;
    d->n_tensors = n;
    d->train = NULL;
    return VBS_OK;
}

void vbs_twin_report_free(vbs_twin_report *r) {
    if (!r) return;
    free(r->unmatched_ckpt);
    free(r->unmatched_graph);
    memset(r, 0, sizeof *r);
}

vbs_status vbs_twin_convert(const vbs_ckpt *c, const char *ckpt_path, const char *graph_path, const vbs_twin_opts *o,
                            vbs_model **out, vbs_twin_report *rep) {
    memset(rep, 0, sizeof *rep);
    vbs_status st = load_graph(graph_path, o, out);
    vbs_model *m = *out;
    if (st) return st;
    vbs_naming nm = o->naming;
    char err[VBS_ERRLEN];
    if (nm == VBS_NAMING_AUTO) {
        const char **keys = malloc(sizeof *keys * (size_t)(c->n + 1));
        if (!keys) return vbs_fail_file(m->err, VBS_ERR_NOMEM, ckpt_path, "out of memory");
        for (int i = 0; i < c->n; i++) keys[i] = c->t[i].name;
        int ok = vbs_naming_detect(keys, c->n, &nm, err, sizeof err);
        free(keys);
        if (!ok) return vbs_fail_file(m->err, VBS_ERR_FORMAT, ckpt_path, "%s", err);
        rep->detected = 1;
    }
    rep->naming = nm;
    entry *e = calloc((size_t)c->n + 1, sizeof *e);
    int *gm = calloc((size_t)m->def.n_tensors + 1, sizeof *gm);
    float **rho = calloc((size_t)m->def.n_tensors + 1, sizeof *rho);
    rep->unmatched_ckpt = calloc((size_t)c->n + 1, sizeof *rep->unmatched_ckpt);
    rep->unmatched_graph = calloc((size_t)m->def.n_tensors + 1, sizeof *rep->unmatched_graph);
    if (!e || !gm || !rho || !rep->unmatched_ckpt || !rep->unmatched_graph) st = vbs_fail_file(m->err, VBS_ERR_NOMEM, ckpt_path, "out of memory");
    if (!st) st = classify(m, c, ckpt_path, nm, e, &rep->n_dropped);
    if (!st) st = match(m, c, ckpt_path, graph_path, e, gm, rep);
    if (!st) st = rebuild(m, c, ckpt_path, o, nm, e, gm, rho, rep);
    for (int i = 0; !st && i < c->n; i++)
        if (e[i].kind == VBS_KEY_PLAIN && e[i].match < 0) rep->unmatched_ckpt[rep->n_unmatched_ckpt++] = c->t[i].name;
    if (!st) st = set_extra(m, ckpt_path, o, nm);
    for (int i = 0; i < c->n; i++) free(e[i].target);
    free(e);
    free(gm);
    free(rho);
    if (!st) {
        /* recompile the edited definition as a loaded one */
        vbs_graph_free(&m->g);
        free(m->out_shapes);
        m->out_shapes = NULL;
        m->loaded = 0;
        st = vbs_model_init(m, graph_path);
    }
    if (st) vbs_twin_report_free(rep);
    return st;
}

/* ---- export ------------------------------------------------------------------- */

vbs_status vbs_twin_export_safetensors(vbs_model *m, vbs_naming nm, const char *path) {
    if (!m || !m->loaded || !path || nm == VBS_NAMING_AUTO) return m ? vbs_fail(m->err, VBS_ERR_ARG, "vbs_twin_export_safetensors: bad arguments") : VBS_ERR_ARG;
    const vbs_def *d = &m->def;
    vbs_ckpt c = {0};
    c.t = calloc((size_t)(2 * d->n_tensors + 1), sizeof *c.t);
    float **owned = calloc((size_t)d->n_tensors + 1, sizeof *owned);
    vbs_status st = VBS_OK;
    char key[1024], err[VBS_ERRLEN];
    if (!c.t || !owned) st = vbs_fail_file(m->err, VBS_ERR_NOMEM, path, "out of memory");
    for (int t = 0; t < d->n_tensors && !st; t++) {
        const vbs_tensor_def *g = &d->tensors[t];
        if (g->role == VBS_ROLE_RHO || g->role == VBS_ROLE_OPTIM) continue; /* a rho goes with its mean */
        const vbs_tensor_def *rho = NULL;
        for (int k = 0; g->role == VBS_ROLE_MU && k < d->n_tensors && !rho; k++)
            if (!strcmp(d->tensors[k].name, g->rho)) rho = &d->tensors[k];
        if (g->role == VBS_ROLE_MU && !rho) { st = vbs_fail_file(m->err, VBS_ERR_FORMAT, path, "mean '%s' has no rho", g->name); break; }
        int conv = is_conv_weight(d, g->name);
        for (int s = 0; s < 1 + (rho != NULL) && !st; s++) {
            if (vbs_naming_join(nm, g->name, rho != NULL, s, conv, key, sizeof key)) {
                st = vbs_fail_file(m->err, VBS_ERR_ARG, path, "tensor '%s' has no name in the %s convention (%s); export with --naming plain",
                                   g->name, vbs_naming_word(nm),
                                   rho ? "a variational tensor must be named P.weight or P.bias" : "its name reads as a convention's key");
                break;
            }
            vbs_ckpt_tensor *x = &c.t[c.n];
            if (!(x->name = strdup(key))) { st = vbs_fail_file(m->err, VBS_ERR_NOMEM, path, "out of memory"); break; }
            c.n++;
            memcpy(x->dtype, "F32", 4);
            x->ndim = g->ndim;
            memcpy(x->dims, g->dims, sizeof x->dims);
            x->numel = g->numel;
            x->data = (float *)(s ? rho->data : g->data); /* borrowed: only read by the writer */
            if (s && nm == VBS_NAMING_TORCHBNN) {
                float *l = malloc(sizeof(float) * (size_t)g->numel + 1);
                if (!l) { st = vbs_fail_file(m->err, VBS_ERR_NOMEM, path, "out of memory"); break; }
                owned[t] = l;
                for (int64_t i = 0; i < g->numel; i++) {
                    double r = rho->data[i];
                    /* log sigma = log softplus(rho), in double; rho + O(exp rho) below -30, where softplus
                     * would underflow to 0 from -745 and give -inf */
                    l[i] = r < -30 ? (float)r : (float)log(r > 30 ? r : log1p(exp(r)));
                }
                x->data = l;
            }
        }
    }
    char *card = NULL, *meta = NULL;
    if (!st) {
        card = vbs_card_json(&d->card);
        json_t *o = card ? json_pack("{s:s, s:s}", "vbseg.card", card, "vbseg.naming", vbs_naming_word(nm)) : NULL;
        meta = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!meta) st = vbs_fail_file(m->err, VBS_ERR_NOMEM, path, "out of memory");
    }
    if (!st && (st = vbs_ckpt_write_safetensors(&c, meta, path, err, sizeof err))) vbs_fail(m->err, st, "%s", err);
    free(card);
    free(meta);
    for (int i = 0; i < c.n; i++) free(c.t[i].name);
    for (int t = 0; owned && t < d->n_tensors; t++) free(owned[t]);
    free(owned);
    free(c.t);
    return st;
}
