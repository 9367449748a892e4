/*
 * session.c: the public session: single forward passes, and Monte-Carlo
 * runs that stream N weight draws into per-voxel statistics.
 *
 * Threads work on samples, not inside kernels: worker w of round r runs
 * sample r*T + w, with its own plan and buffers and single-threaded BLAS.
 * After every slice the workers' outputs are folded into the statistics
 * in sample order, so each voxel sees its samples in the same order
 * whatever T is, and the output bytes do not depend on the thread count.
 * BLAS is kept single-threaded throughout (a process-wide OpenBLAS
 * setting). A 2D model given a 3D volume runs slice by slice; sample i then uses
 * one weight draw for every slice (the draw is a function of the seed
 * and i only), so each sample is one consistent function of the volume.
 * Every size runs: slices are zero-padded to a size the network takes, or
 * tiled by Gaussian-blended windows where the graph fixes a smaller size
 * (or a 3D card gives a patch); a fixed batch carries several windows per
 * pass when its items are independent. Refusals name the caller's sizes
 * and the sizes the network takes, never an inner node.
 * Not here: the maps themselves (mcstats.c), planning and kernels.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

vbs_mc_opts vbs_mc_defaults(void) {
    vbs_mc_opts o = {.n_samples = 20, .seed = 0, .mode = VBS_MODE_SAMPLE, .threads = 0, .overlap = 0.5f};
    return o;
}

int vbs_default_threads(void) {
    /* Sample-parallel MC scales on this design; measured in the README.
     * Never more workers than cores. */
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 2 ? 2 : 1;
}

const char *vbs_map_name(vbs_map which) {
    static const char *const names[VBS_MAP_COUNT] = {
        [VBS_MAP_PROB_MEAN] = "prob_mean", [VBS_MAP_PROB_VAR] = "prob_var", [VBS_MAP_LABELS] = "labels",
        [VBS_MAP_ENTROPY] = "entropy", [VBS_MAP_EXPECTED_ENTROPY] = "aleatoric_entropy",
        [VBS_MAP_MUTUAL_INFO] = "epistemic_mi", [VBS_MAP_HET_ALEATORIC] = "aleatoric_het",
        [VBS_MAP_HET_EPISTEMIC] = "epistemic_het"};
    return which >= 0 && which < VBS_MAP_COUNT ? names[which] : "unknown";
}

vbs_status vbs_session_new(const vbs_model *m, vbs_session **out) {
    if (!out) return VBS_ERR_ARG;
    *out = NULL;
    if (!m || !m->loaded) return VBS_ERR_ARG;
    vbs_session *s = calloc(1, sizeof *s);
    if (!s) return VBS_ERR_NOMEM;
    s->m = m;
    *out = s;
    return VBS_OK;
}

static void free_maps(vbs_session *s) {
    for (int i = 0; i < VBS_MAP_COUNT; i++) { free(s->maps[i]); s->maps[i] = NULL; }
}

void vbs_session_free(vbs_session *s) {
    if (!s) return;
    for (int i = 0; i < s->n_workers; i++) {
        vbs_worker_free(&s->workers[i]);
        free(s->in_buf[i]);
        free(s->out_buf[i]);
    }
    free(s->workers);
    free(s->in_buf);
    free(s->out_buf);
    free(s->in_cap);
    free(s->out_cap);
    vbs_mc_acc_free(&s->acc);
    free_maps(s);
    free(s);
}

const char *vbs_session_errmsg(const vbs_session *s) {
    if (!s) return "no session";
    return s->err[0] ? s->err : "no error";
}

static vbs_status ensure_workers(vbs_session *s, int n) {
    if (s->n_workers >= n) return VBS_OK;
    vbs_worker *w = realloc(s->workers, sizeof *w * (size_t)n);
    if (!w) return vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: workers");
    s->workers = w;
    float **ib = realloc(s->in_buf, sizeof *ib * (size_t)n);
    if (ib) s->in_buf = ib;
    float **ob = realloc(s->out_buf, sizeof *ob * (size_t)n);
    if (ob) s->out_buf = ob;
    int64_t *ic = realloc(s->in_cap, sizeof *ic * (size_t)n);
    if (ic) s->in_cap = ic;
    int64_t *oc = realloc(s->out_cap, sizeof *oc * (size_t)n);
    if (oc) s->out_cap = oc;
    if (!ib || !ob || !ic || !oc) return vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: workers");
    for (int i = s->n_workers; i < n; i++) {
        memset(&s->workers[i], 0, sizeof s->workers[i]);
        s->in_buf[i] = s->out_buf[i] = NULL;
        s->in_cap[i] = s->out_cap[i] = 0;
    }
    s->n_workers = n;
    return VBS_OK;
}

/* ---- what the network takes, said in the caller's sizes ---------------- */

/* "100x100": k dims */
static const char *size_str(char *buf, size_t n, const int64_t *d, int k) {
    size_t p = 0;
    buf[0] = 0;
    for (int i = 0; i < k && p < n; i++) p += (size_t)snprintf(buf + p, n - p, "%s%lld", i ? "x" : "", (long long)d[i]);
    return buf;
}

/* The graph input as a shape to write: "(N,4,H,W)", "(1,4,240,240)"; from dim `from` on. */
static const char *io_str(char *buf, size_t n, const vbs_io_def *io, int from, const char *open, const char *sep) {
    size_t p = (size_t)snprintf(buf, n, "%s", open);
    for (int i = from; i < io->ndim && p < n; i++) {
        const char *s = i > from ? sep : "";
        if (io->dims[i] >= 0) p += (size_t)snprintf(buf + p, n - p, "%s%lld", s, (long long)io->dims[i]);
        else p += (size_t)snprintf(buf + p, n - p, "%s%s", s, io->param[i] && io->param[i][0] ? io->param[i] : "?");
    }
    if (*open && p < n) snprintf(buf + p, n - p, ")");
    return buf;
}

/* Dims positive, the total bounded, one graph input. */
static vbs_status check_dims(vbs_session *s, const int64_t *shape, int ndim, vbs_shape *sh) {
    if (!shape || ndim < 1 || ndim > VBS_MAX_DIMS) return vbs_fail(s->err, VBS_ERR_ARG, "input shape has %d dims", ndim);
    int64_t n = 1;
    sh->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0 || !vbs_mul_ok(n, shape[i], &n) || n > ((int64_t)1 << 34))
            return vbs_fail(s->err, VBS_ERR_ARG, "input shape: dim %d is %lld (or the total overflows)", i, (long long)shape[i]);
        sh->d[i] = shape[i];
    }
    if (s->m->def.n_inputs != 1)
        return vbs_fail(s->err, VBS_ERR_UNSUPPORTED, "model has %d graph inputs; this call feeds one", s->m->def.n_inputs);
    return VBS_OK;
}

static vbs_status check_channels(vbs_session *s, int64_t c) {
    const vbs_io_def *io = &s->m->def.inputs[0];
    if (io->ndim >= 2 && io->dims[1] >= 0 && io->dims[1] != c)
        return vbs_fail(s->err, VBS_ERR_SHAPE, "input has %lld channels, the network takes %lld", (long long)c, (long long)io->dims[1]);
    return VBS_OK;
}

/* A forward pass takes the input as given: the graph's rank, its fixed
 * batch and channels, and its fixed spatial dims. */
static vbs_status check_forward(vbs_session *s, const int64_t *shape, int ndim, vbs_shape *sh) {
    vbs_status st = check_dims(s, shape, ndim, sh);
    if (st) return st;
    const vbs_io_def *io = &s->m->def.inputs[0];
    char a[128], b[128];
    if (io->ndim && io->ndim != ndim)
        return vbs_fail(s->err, VBS_ERR_SHAPE, "input %s has %d dims, the network takes %d: %s", size_str(a, sizeof a, shape, ndim), ndim,
                        io->ndim, io_str(b, sizeof b, io, 0, "(", ","));
    if (ndim < 3) return vbs_fail(s->err, VBS_ERR_SHAPE, "input has %d dims; (N, C, spatial...) expected", ndim);
    if (io->ndim && io->dims[0] >= 0 && io->dims[0] != shape[0])
        return vbs_fail(s->err, VBS_ERR_SHAPE, "input batch N = %lld: the network's batch is fixed at %lld", (long long)shape[0],
                        (long long)io->dims[0]);
    if ((st = check_channels(s, shape[1]))) return st;
    for (int i = 2; i < io->ndim; i++)
        if (io->dims[i] >= 0 && io->dims[i] != shape[i])
            return vbs_fail(s->err, VBS_ERR_SHAPE, "input %s: this network takes %s only (fixed in the graph); vbs_session_run_mc pads or windows automatically",
                            size_str(a, sizeof a, shape + 2, ndim - 2), io_str(b, sizeof b, io, 2, "", "x"));
    return VBS_OK;
}

/* 1 when the network plans input shape t; with `same`, also only when its
 * first output keeps t's batch and spatial size. Else 0, or -1 when the plan
 * ran out of memory (not a size it refuses), and err says why. */
static int takes(const vbs_model *m, const vbs_shape *t, int same, char *err) {
    vbs_plan pl;
    vbs_status st = vbs_plan_build(&pl, &m->g, t, err);
    if (st) return st == VBS_ERR_NOMEM ? -1 : 0;
    const vbs_shape *ys = &pl.shapes[m->g.output_vals[0]];
    int ok = !same || (ys->ndim == t->ndim && ys->d[0] == t->d[0]);
    for (int i = 2; same && ok && i < t->ndim; i++) ok = ys->d[i] == t->d[i];
    if (!ok) snprintf(err, VBS_ERRLEN, "output '%s' is not the input's spatial size", m->def.outputs[0].name);
    vbs_plan_free(&pl);
    return ok;
}

/* in with its symbolic spatial dims rounded to a multiple of mult: up, or down. */
static vbs_shape rounded(const vbs_io_def *io, const vbs_shape *in, int64_t mult, int up) {
    vbs_shape t = *in;
    for (int i = 2; i < t.ndim; i++)
        if (i >= io->ndim || io->dims[i] < 0) t.d[i] = (in->d[i] + (up ? mult - 1 : 0)) / mult * mult;
    return t;
}

/* The refusal of a spatial size the network cannot take as given: the
 * multiple it needs (the smallest power of two whose next two multiples both
 * plan, so that a lucky size does not pass for the rule) and the nearest
 * sizes. why: the planner's own reason, kept when no multiple fits. */
static vbs_status size_fail(vbs_session *s, const vbs_shape *in, const char *why) {
    const vbs_io_def *io = &s->m->def.inputs[0];
    int nsp = in->ndim - 2;
    char a[96], lo[96], hi[96], err[VBS_ERRLEN];
    size_str(a, sizeof a, in->d + 2, nsp);
    for (int64_t mult = 2; mult <= 128; mult *= 2) {
        vbs_shape up = rounded(io, in, mult, 1), up2 = up, dn = rounded(io, in, mult, 0);
        for (int i = 2; i < in->ndim; i++)
            if (i >= io->ndim || io->dims[i] < 0) up2.d[i] += mult;
        if (takes(s->m, &up, 0, err) != 1 || takes(s->m, &up2, 0, err) != 1) continue;
        int has_dn = 1;
        for (int i = 2; i < in->ndim; i++) has_dn &= dn.d[i] > 0;
        has_dn = has_dn && takes(s->m, &dn, 0, err) == 1;
        size_str(lo, sizeof lo, dn.d + 2, nsp);
        size_str(hi, sizeof hi, up.d + 2, nsp);
        return vbs_fail(s->err, VBS_ERR_SHAPE,
                        "input %s: this network takes spatial sizes that are multiples of %lld (e.g. %s%s%s); vbs_session_run_mc pads automatically",
                        a, (long long)mult, has_dn ? lo : "", has_dn ? " or " : "", hi);
    }
    return vbs_fail(s->err, VBS_ERR_SHAPE, "input %s: the network takes no size near it (up to multiples of 128): %s", a, why);
}

vbs_status vbs_session_check_input(vbs_session *s, const int64_t *shape, int ndim) {
    if (!s) return VBS_ERR_ARG;
    s->err[0] = 0;
    vbs_shape sh;
    vbs_status st = check_forward(s, shape, ndim, &sh);
    if (st) return st;
    char err[VBS_ERRLEN];
    int tk = takes(s->m, &sh, 0, err);
    return tk == 1 ? VBS_OK : tk < 0 ? vbs_fail(s->err, VBS_ERR_NOMEM, "%s", err) : size_fail(s, &sh, err);
}

vbs_status vbs_session_forward(vbs_session *s, const float *input, const int64_t *shape, int ndim, vbs_mode mode,
                               uint64_t seed, uint64_t sample) {
    if (!s) return VBS_ERR_ARG;
    s->err[0] = 0;
    s->have_forward = 0;
    vbs_shape sh;
    vbs_status st = check_forward(s, shape, ndim, &sh);
    if (st) return st;
    if (!input) return vbs_fail(s->err, VBS_ERR_ARG, "NULL input");
    if ((st = ensure_workers(s, 1))) return st;
    char err[VBS_ERRLEN];
    /* the planner names the node that cannot take the size; the caller gets the size to give */
    if ((st = vbs_worker_run(&s->workers[0], s->m, input, &sh, mode, seed, sample, err)))
        return st == VBS_ERR_SHAPE ? size_fail(s, &sh, err) : vbs_fail(s->err, st, "%s", err);
    s->have_forward = 1;
    return VBS_OK;
}

vbs_status vbs_session_output(vbs_session *s, int i, const float **data, vbs_value_info *info) {
    if (!s || !data) return VBS_ERR_ARG;
    if (!s->have_forward) return vbs_fail(s->err, VBS_ERR_STATE, "no forward pass has run on this session");
    if (i < 0 || i >= s->m->def.n_outputs) return vbs_fail(s->err, VBS_ERR_ARG, "output %d does not exist", i);
    int v = s->m->g.output_vals[i];
    const vbs_worker *w = &s->workers[0];
    *data = vbs_worker_value(w, s->m, v);
    if (info) {
        memset(info, 0, sizeof *info);
        info->name = s->m->def.outputs[i].name;
        info->ndim = w->plan.shapes[v].ndim;
        memcpy(info->dims, w->plan.shapes[v].d, sizeof info->dims);
    }
    return VBS_OK;
}


/* Reports a round of passes to the caller's progress callback; 1 if it asks to stop. */
static int stop_asked(vbs_session *s, const vbs_mc_opts *o, int64_t *done, int64_t add, int64_t total) {
    *done += add;
    if (!o->progress || !o->progress(o->progress_user, *done, total)) return 0;
    vbs_fail(s->err, VBS_ERR_CANCELLED, "stopped by the caller after %lld of %lld passes", (long long)*done, (long long)total);
    return 1;
}

/* Adaptive sampling: after every block of samples, compare the running MI
 * map with the one a block before; 1 when the largest change is below tol. */
static int converged(vbs_session *s, const vbs_mc_opts *o, float **prev) {
    int block = o->adaptive_block > 0 ? o->adaptive_block : 5;
    if (!(o->adaptive_tol > 0) || s->acc.n % block) return 0;
    int64_t nv = s->acc.nvox;
    float *cur = malloc(sizeof(float) * (size_t)nv);
    if (!cur) return 0;
    vbs_mc_acc_map(&s->acc, VBS_MAP_MUTUAL_INFO, &s->m->def.card, cur);
    int done = 0;
    if (*prev) {
        float d = 0;
        for (int64_t v = 0; v < nv; v++) d = fmaxf(d, fabsf(cur[v] - (*prev)[v]));
        done = d < o->adaptive_tol;
    }
    free(*prev);
    *prev = cur;
    return done;
}


/* ---- Monte-Carlo runs: slices, windows, padding, batch slots ------------ */

/* How a run covers the caller's input (1, C, [D,] spatial): as `nsl` slices
 * (a 2D network over a volume: D; else 1) of spatial size sz, each tiled by
 * windows of size ws (nst per axis, neighbours overlapping), each window
 * zero-padded, centred, to the size the network runs at (pp; pb before).
 * A window is the whole slice unless the graph fixes a smaller spatial size
 * or a 3D card gives a smaller patch. Spatial arrays hold 3 axes,
 * right-aligned (leading 1s for 1D and 2D networks). One pass carries
 * `slots` windows in a batch of `batch` (the graph's fixed batch, else 1). */
typedef struct {
    int nsp;
    int64_t c, nsl;
    int64_t sz[3], fixed[3];  /* fixed: the graph's spatial dims, 0 where symbolic */
    int64_t ws[3], nst[3], pp[3], pb[3];
    float overlap;
    int64_t batch;
    int slots;
    vbs_shape psh;            /* the network input of one pass */
} tiling;

static int64_t prod3(const int64_t *d) { return d[0] * d[1] * d[2]; }

/* Windows along one axis: first at 0, last at size - ws, about
 * ws * (1 - overlap) apart. */
static int64_t n_starts(int64_t size, int64_t ws, float overlap) {
    if (size <= ws) return 1;
    double step = (double)ws * (1.0 - overlap);
    if (step < 1) step = 1;
    return (int64_t)ceil((double)(size - ws) / step) + 1;
}

/* Tile ti (slices outer, then windows in C order): its slice and window start. */
static int64_t tile_at(const tiling *t, int64_t ti, int64_t o[3]) {
    int64_t nwin = prod3(t->nst), wi = ti % nwin;
    for (int a = 2; a >= 0; a--) {
        int64_t i = wi % t->nst[a], n = t->nst[a];
        wi /= n;
        o[a] = n == 1 ? 0 : (int64_t)llround((double)i * (double)(t->sz[a] - t->ws[a]) / (double)(n - 1));
    }
    return ti / nwin;
}

/* Copies the window at o of slice z of src (C, nsl, sz) into dst (C, pp),
 * zero around it. */
static void tile_in(const float *src, const tiling *t, int64_t z, const int64_t *o, float *dst) {
    int64_t pn = prod3(t->pp), sn = prod3(t->sz);
    if (prod3(t->ws) != pn) memset(dst, 0, sizeof(float) * (size_t)(t->c * pn));
    for (int64_t ch = 0; ch < t->c; ch++) {
        const float *plane = src + (ch * t->nsl + z) * sn;
        float *out = dst + ch * pn;
        for (int64_t a = 0; a < t->ws[0]; a++)
            for (int64_t b = 0; b < t->ws[1]; b++)
                memcpy(out + ((a + t->pb[0]) * t->pp[1] + b + t->pb[1]) * t->pp[2] + t->pb[2],
                       plane + ((o[0] + a) * t->sz[1] + o[1] + b) * t->sz[2] + o[2], sizeof(float) * (size_t)t->ws[2]);
    }
}

/* The inverse for the outputs of a whole-slice window: K planes of pp -> K planes of sz. */
static void crop_out(const float *src, int64_t k, const tiling *t, float *dst) {
    int64_t pn = prod3(t->pp), sn = prod3(t->sz);
    for (int64_t ch = 0; ch < k; ch++)
        for (int64_t a = 0; a < t->sz[0]; a++)
            for (int64_t b = 0; b < t->sz[1]; b++)
                memcpy(dst + ch * sn + (a * t->sz[1] + b) * t->sz[2],
                       src + ch * pn + ((a + t->pb[0]) * t->pp[1] + b + t->pb[1]) * t->pp[2] + t->pb[2], sizeof(float) * (size_t)t->sz[2]);
}

/* Grows *b to need floats; on failure *b is kept (freed with the session). */
static int grow_buf(float **b, int64_t *cap, int64_t need) {
    if (need <= *cap) return 1;
    float *n = realloc(*b, sizeof(float) * (size_t)need);
    if (!n) return 0;
    *b = n;
    *cap = need;
    return 1;
}

/* The size a window runs at: the graph's fixed dims where it has them;
 * elsewhere the window itself if the network keeps its size, else the next
 * multiple of 2, 4, ..., 128 (a U-Net of depth d needs multiples of 2^d). */
static vbs_status fit(vbs_session *s, tiling *t) {
    char err[VBS_ERRLEN], first[VBS_ERRLEN] = "", a[96];
    for (int64_t mult = 1; mult <= 128; mult *= 2) {
        vbs_shape p = {2 + t->nsp, {t->batch, t->c}};
        for (int j = 0; j < t->nsp; j++) {
            int ax = 3 - t->nsp + j;
            p.d[2 + j] = t->fixed[ax] ? t->fixed[ax] : (t->ws[ax] + mult - 1) / mult * mult;
        }
        int tk = takes(s->m, &p, 1, err);
        if (tk < 0) return vbs_fail(s->err, VBS_ERR_NOMEM, "%s", err); /* not a reason to pad more */
        if (!tk) {
            if (!first[0]) snprintf(first, sizeof first, "%s", err);
            continue;
        }
        for (int ax = 0; ax < 3; ax++) {
            int j = ax - (3 - t->nsp);
            t->pp[ax] = j >= 0 ? p.d[2 + j] : 1;
            t->pb[ax] = (t->pp[ax] - t->ws[ax]) / 2;
        }
        t->psh = p;
        return VBS_OK;
    }
    return vbs_fail(s->err, VBS_ERR_SHAPE, "input %s: the network takes no padding of it up to multiples of 128: %s",
                    size_str(a, sizeof a, t->sz + 3 - t->nsp, t->nsp), first);
}

/* 1 when the items of a batch cannot influence each other, so that one pass
 * may carry several windows and each equals a pass of its own: every
 * activation keeps the batch axis, no op works along it, no constant as wide
 * as the output varies along it, and no GaussianSample (its eps is keyed by
 * element: slot j would draw other numbers than a batch of 1). */
static int batch_separable(const vbs_model *m, const vbs_plan *p) {
    const vbs_graph *g = &m->g;
    for (int pos = 0; pos < g->n_order; pos++) {
        const vbs_node *n = &p->nodes[g->order[pos]];
        const vbs_shape *y = &p->shapes[n->out[0]];
        int nd = y->ndim;
        if (n->op == VBS_OP_GAUSSIAN_SAMPLE || nd < 1) return 0;
        for (int i = 0; i < n->n_in; i++) {
            if (n->in[i] < 0) continue;
            const vbs_shape *x = &p->shapes[n->in[i]];
            vbs_val_kind kind = g->values[n->in[i]].kind;
            if (kind == VBS_VAL_ACT || kind == VBS_VAL_INPUT) {
                if (x->ndim < 1 || x->d[0] != y->d[0]) return 0;
            } else if ((n->op == VBS_OP_ADD || n->op == VBS_OP_MUL || n->op == VBS_OP_PRELU) && x->ndim == nd && x->d[0] > 1)
                return 0;
        }
        int64_t ax = -1;
        if (n->op == VBS_OP_CONCAT) ax = n->a.axis;
        else if (n->op == VBS_OP_SOFTMAX) ax = n->a.softmax.axis;
        if ((ax < 0 ? ax + nd : ax) == 0) return 0;
        if (n->op == VBS_OP_TRANSPOSE && n->a.pad.pads[0] != 0) return 0;
        if (n->op == VBS_OP_PAD && (n->a.pad.pads[0] || n->a.pad.pads[nd])) return 0;
    }
    return 1;
}

/* Sets up the tiling of input sh (sliced: a 2D network over (1, C, D, H, W)). */
static vbs_status plan_tiles(vbs_session *s, const vbs_shape *sh, int sliced, const vbs_mc_opts *o, tiling *t) {
    const vbs_model *m = s->m;
    const vbs_io_def *io = &m->def.inputs[0];
    const vbs_card *cd = &m->def.card;
    memset(t, 0, sizeof *t);
    t->nsp = sliced ? 2 : sh->ndim - 2;
    t->c = sh->d[1];
    t->nsl = sliced ? sh->d[2] : 1;
    t->overlap = o->overlap > 0 ? o->overlap : 0.5f;
    t->batch = io->ndim && io->dims[0] > 0 ? io->dims[0] : 1;
    for (int ax = 0; ax < 3; ax++) {
        int j = ax - (3 - t->nsp); /* the network's spatial axis */
        t->sz[ax] = j >= 0 ? sh->d[sh->ndim - t->nsp + j] : 1;
        t->fixed[ax] = j >= 0 && 2 + j < io->ndim && io->dims[2 + j] > 0 ? io->dims[2 + j] : 0;
        int64_t lim = t->fixed[ax] ? t->fixed[ax] : (j >= 0 && t->nsp == 3 && cd->n_patch == 3 ? cd->patch[j] : 0);
        t->ws[ax] = lim > 0 && lim < t->sz[ax] ? lim : t->sz[ax];
        t->nst[ax] = n_starts(t->sz[ax], t->ws[ax], t->overlap);
    }
    if (prod3(t->nst) > 1 && !(t->overlap < 0.95f))
        return vbs_fail(s->err, VBS_ERR_ARG, "overlap %g is not in 0..0.9", (double)t->overlap);
    vbs_status st = fit(s, t);
    if (st) return st;
    t->slots = 1;
    if (t->batch > 1) {
        vbs_plan pl;
        char err[VBS_ERRLEN];
        if ((st = vbs_plan_build(&pl, &m->g, &t->psh, err))) return vbs_fail(s->err, st, "%s", err);
        if (batch_separable(m, &pl)) t->slots = (int)(t->batch < 1024 ? t->batch : 1024);
        vbs_plan_free(&pl);
    }
    return VBS_OK;
}

/* Gaussian importance of a window's voxels (sigma = ws/8 along every axis
 * that has more than one window; other axes cancel out), and the summed
 * weight at every voxel of a slice. */
static void window_weights(const tiling *t, float *gw, float *wsum) {
    for (int64_t a = 0; a < t->ws[0]; a++)
        for (int64_t b = 0; b < t->ws[1]; b++)
            for (int64_t e = 0; e < t->ws[2]; e++) {
                double g = 1;
                int64_t q[3] = {a, b, e};
                for (int i = 0; i < 3; i++) {
                    if (t->nst[i] == 1) continue;
                    double sig = (double)t->ws[i] / 8.0, dz = (double)q[i] - (double)(t->ws[i] - 1) / 2.0;
                    g *= exp(-0.5 * dz * dz / (sig * sig));
                }
                gw[(a * t->ws[1] + b) * t->ws[2] + e] = (float)(g > 1e-4 ? g : 1e-4); /* no voxel gets weight 0 */
            }
    memset(wsum, 0, sizeof(float) * (size_t)prod3(t->sz));
    int64_t o[3];
    for (int64_t wi = 0; wi < prod3(t->nst); wi++) {
        tile_at(t, wi, o);
        for (int64_t a = 0; a < t->ws[0]; a++)
            for (int64_t b = 0; b < t->ws[1]; b++)
                for (int64_t e = 0; e < t->ws[2]; e++)
                    wsum[((o[0] + a) * t->sz[1] + o[1] + b) * t->sz[2] + o[2] + e] += gw[(a * t->ws[1] + b) * t->ws[2] + e];
    }
}

/* Adds one window's class probabilities (and for a heteroscedastic head its
 * logits and log-variances), weighted by gw, into the slice buffer vp
 * (nout x k planes of the slice). lg, lv: k planes of the network size. */
static void blend_window(const tiling *t, const int64_t *o, int k, vbs_output_act act, const float *lg, const float *lv,
                         const float *gw, float *vp) {
    int64_t pn = prod3(t->pp), sn = prod3(t->sz);
    for (int64_t a = 0; a < t->ws[0]; a++)
        for (int64_t b = 0; b < t->ws[1]; b++)
            for (int64_t e = 0; e < t->ws[2]; e++) {
                int64_t pv = ((a + t->pb[0]) * t->pp[1] + b + t->pb[1]) * t->pp[2] + t->pb[2] + e;
                int64_t v = ((o[0] + a) * t->sz[1] + o[1] + b) * t->sz[2] + o[2] + e;
                float g = gw[(a * t->ws[1] + b) * t->ws[2] + e], pr[64];
                if (act == VBS_ACT_SIGMOID)
                    for (int q = 0; q < k; q++) pr[q] = 1.f / (1.f + expf(-lg[q * pn + pv]));
                else if (act == VBS_ACT_SOFTMAX) {
                    float mx = lg[pv], sum = 0;
                    for (int q = 1; q < k; q++) mx = fmaxf(mx, lg[q * pn + pv]);
                    for (int q = 0; q < k; q++) sum += pr[q] = expf(lg[q * pn + pv] - mx);
                    for (int q = 0; q < k; q++) pr[q] /= sum;
                } else
                    for (int q = 0; q < k; q++) pr[q] = lg[q * pn + pv];
                for (int q = 0; q < k; q++) {
                    vp[q * sn + v] += g * pr[q];
                    if (lv) {
                        vp[(k + q) * sn + v] += g * lg[q * pn + pv];
                        vp[(2 * k + q) * sn + v] += g * lv[q * pn + pv];
                    }
                }
            }
}

vbs_status vbs_session_run_mc(vbs_session *s, const float *input, const int64_t *shape, int ndim, const vbs_mc_opts *opts) {
    if (!s) return VBS_ERR_ARG;
    s->err[0] = 0;
    s->have_acc = 0;
    s->have_forward = 0;
    free_maps(s);
    vbs_mc_opts o = opts ? *opts : vbs_mc_defaults();
    if (!input) return vbs_fail(s->err, VBS_ERR_ARG, "NULL input");
    if (o.mode != VBS_MODE_SAMPLE && o.mode != VBS_MODE_MEAN) return vbs_fail(s->err, VBS_ERR_ARG, "unknown mode %d", (int)o.mode);
    if (o.mode == VBS_MODE_MEAN) o.n_samples = 1;
    if (o.n_samples < 1 || o.n_samples > 100000) return vbs_fail(s->err, VBS_ERR_ARG, "samples must be in 1..100000, got %d", o.n_samples);
    if (o.threads < 0 || o.threads > 256) return vbs_fail(s->err, VBS_ERR_ARG, "threads must be in 0..256, got %d", o.threads);
    const vbs_model *m = s->m;
    if (m->def.n_inputs < 1 || m->def.n_outputs < 1) return vbs_fail(s->err, VBS_ERR_GRAPH, "the model's graph has no %s", m->def.n_inputs < 1 ? "inputs" : "outputs");
    const vbs_io_def *io = &m->def.inputs[0];
    vbs_shape sh;
    vbs_status st = check_dims(s, shape, ndim, &sh);
    if (st) return st;
    int rank = io->ndim ? io->ndim : ndim;
    /* a 2D network (rank-4 input) fed a (1, C, D, H, W) volume runs slice by slice */
    int sliced = rank == 4 && ndim == 5;
    char a[128], b[128];
    if (ndim != rank && !sliced)
        return vbs_fail(s->err, VBS_ERR_SHAPE, "input %s has %d dims; this network takes one image (1,%s%s", size_str(a, sizeof a, shape, ndim),
                        ndim, io_str(b, sizeof b, io, 1, "", ","), rank == 4 ? ") or a volume (1,C,D,H,W) run slice by slice" : ")");
    if (rank < 3 || rank > 5) return vbs_fail(s->err, VBS_ERR_SHAPE, "input has %d dims; 1 to 3 spatial dims expected", rank);
    if (sh.d[0] != 1)
        return vbs_fail(s->err, VBS_ERR_ARG, "Monte-Carlo runs take one image (N = 1), got N = %lld; run each image in turn", (long long)sh.d[0]);
    if ((st = check_channels(s, sh.d[1]))) return st;
    tiling t;
    if ((st = plan_tiles(s, &sh, sliced, &o, &t))) return st;
    const int64_t nwin = prod3(t.nst), ntiles = t.nsl * nwin, pn = prod3(t.pp), sn = prod3(t.sz), c = t.c;
    {
        char sz[96], ws[96], pp[96];
        int off = 3 - t.nsp;
        vbs_log(VBS_LOG_INFO, "run_mc: %lld slice%s of %s, %lld window%s of %s per slice, run at %s, %d per pass of batch %lld",
                (long long)t.nsl, t.nsl == 1 ? "" : "s", size_str(sz, sizeof sz, t.sz + off, t.nsp), (long long)nwin, nwin == 1 ? "" : "s",
                size_str(ws, sizeof ws, t.ws + off, t.nsp), size_str(pp, sizeof pp, t.pp + off, t.nsp), t.slots, (long long)t.batch);
    }
    const int blended = nwin > 1, padded = pn != sn, direct = ntiles == 1 && !padded && t.batch == 1;
    int tc = o.threads ? o.threads : vbs_default_threads();
    int nw = tc < o.n_samples ? tc : o.n_samples;
    /* rounds of samples must end on block boundaries for adaptive stopping */
    int block = o.adaptive_block > 0 ? o.adaptive_block : 5;
    if (o.adaptive_tol > 0) while (nw > 1 && block % nw) nw--;
    if (nw > 64) nw = 64;
    if ((st = ensure_workers(s, nw))) return st;
    const vbs_card *card = &m->def.card;
    int hetero = card->heteroscedastic && m->def.n_outputs >= 2;
    float *gw = NULL, *wsum = NULL, *prev_mi = NULL;
    if (blended) {
        gw = malloc(sizeof(float) * (size_t)prod3(t.ws));
        wsum = malloc(sizeof(float) * (size_t)sn);
        if (!gw || !wsum) { free(gw); free(wsum); return vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: window weights"); }
        window_weights(&t, gw, wsum);
    }
    char errs[64][VBS_ERRLEN];
    vbs_status sts[64];
    /* Workers own the cores; BLAS stays single-threaded even for one sample,
     * where two BLAS threads measured slower than one (README, Threads). */
    vbs_blas_set_threads(1);
    int k = 0, nout = hetero ? 3 : 1; /* blended planes per class: probabilities (+ logits, log-variances) */
    vbs_status ret = VBS_OK;
    int64_t passes = 0, total = (int64_t)o.n_samples * ntiles;
    for (int64_t first = 0; first < o.n_samples && !ret; first += nw) {
        int active = o.n_samples - first < nw ? (int)(o.n_samples - first) : nw;
        for (int64_t t0 = 0; t0 < ntiles && !ret; t0 += t.slots) {
            int used = ntiles - t0 < t.slots ? (int)(ntiles - t0) : t.slots;
            for (int w = 0; w < active && !direct; w++)
                if (!grow_buf(&s->in_buf[w], &s->in_cap[w], t.batch * c * pn)) ret = vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: input buffer");
            if (ret) break;
#pragma omp parallel for num_threads(active) schedule(static, 1) if (active > 1)
            for (int w = 0; w < active; w++) {
                const float *x = input;
                if (!direct) {
                    /* this pass's windows in its first slots; the batch's other slots zero */
                    for (int64_t j = 0; j < t.batch; j++) {
                        int64_t o3[3];
                        float *dst = s->in_buf[w] + j * c * pn;
                        if (j < used) {
                            int64_t z = tile_at(&t, t0 + j, o3);
                            tile_in(input, &t, z, o3, dst);
                        } else
                            memset(dst, 0, sizeof(float) * (size_t)(c * pn));
                    }
                    x = s->in_buf[w];
                }
                sts[w] = vbs_worker_run(&s->workers[w], m, x, &t.psh, o.mode, o.seed, (uint64_t)(first + w), errs[w]);
            }
            for (int w = 0; w < active && !ret; w++)
                if (sts[w]) ret = vbs_fail(s->err, sts[w], "%s", errs[w]);
            if (ret) break;
            if (!s->have_acc) {
                /* first pass: learn the classes, then size the statistics */
                const vbs_shape *ys = &s->workers[0].plan.shapes[m->g.output_vals[0]];
                k = (int)ys->d[1];
                if (k > 64) { ret = vbs_fail(s->err, VBS_ERR_UNSUPPORTED, "%d output classes (max 64)", k); break; }
                if (hetero) {
                    const vbs_shape *ls = &s->workers[0].plan.shapes[m->g.output_vals[1]];
                    if (vbs_shape_numel(ls) != vbs_shape_numel(ys)) {
                        ret = vbs_fail(s->err, VBS_ERR_SHAPE, "heteroscedastic output '%s' differs in shape from '%s'", m->def.outputs[1].name,
                                       m->def.outputs[0].name);
                        break;
                    }
                }
                vbs_mc_acc_free(&s->acc);
                if (vbs_mc_acc_init(&s->acc, sn * t.nsl, k, card->output_activation, hetero)) {
                    ret = vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: statistics for %lld voxels", (long long)(sn * t.nsl));
                    break;
                }
                s->have_acc = 1;
            }
            /* each worker's windows, in tile order, into its sample's statistics */
            for (int w = 0; w < active && !ret; w++) {
                int64_t nth = s->acc.n + w + 1;
                for (int j = 0; j < used; j++) {
                    int64_t o3[3], ti = t0 + j, z = tile_at(&t, ti, o3), wi = ti % nwin;
                    const float *lg = vbs_worker_value(&s->workers[w], m, m->g.output_vals[0]) + (int64_t)j * k * pn;
                    const float *lv = hetero ? vbs_worker_value(&s->workers[w], m, m->g.output_vals[1]) + (int64_t)j * k * pn : NULL;
                    if (!blended) {
                        if (padded) {
                            /* cropped copies of the outputs, in one scratch per worker */
                            if (!grow_buf(&s->out_buf[w], &s->out_cap[w], (hetero ? 2 : 1) * k * sn)) {
                                ret = vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: output buffer");
                                break;
                            }
                            crop_out(lg, k, &t, s->out_buf[w]);
                            lg = s->out_buf[w];
                            if (lv) {
                                crop_out(lv, k, &t, s->out_buf[w] + k * sn);
                                lv = s->out_buf[w] + k * sn;
                            }
                        }
                        vbs_mc_acc_add(&s->acc, z * sn, sn, nth, lg, lv);
                        continue;
                    }
                    /* windows of a slice blend in one buffer per worker, kept across passes */
                    if (wi == 0) {
                        if (!grow_buf(&s->out_buf[w], &s->out_cap[w], (int64_t)nout * k * sn)) {
                            ret = vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: blended volume");
                            break;
                        }
                        memset(s->out_buf[w], 0, sizeof(float) * (size_t)(nout * k * sn));
                    }
                    float *vp = s->out_buf[w];
                    blend_window(&t, o3, k, card->output_activation, lg, lv, gw, vp);
                    if (wi == nwin - 1) {
                        for (int q = 0; q < nout * k; q++)
                            for (int64_t v = 0; v < sn; v++) vp[q * sn + v] /= wsum[v];
                        vbs_mc_acc_add_probs(&s->acc, z * sn, sn, nth, vp, hetero ? vp + k * sn : NULL, hetero ? vp + 2 * k * sn : NULL);
                    }
                }
            }
            if (!ret && stop_asked(s, &o, &passes, (int64_t)active * used, total)) ret = VBS_ERR_CANCELLED;
        }
        if (ret) break;
        for (int w = 0; w < active; w++) vbs_mc_acc_commit(&s->acc);
        if ((ret = vbs_mc_acc_check(&s->acc, m->def.outputs[0].name, s->err))) break; /* the card says probabilities: are they? */
        if (converged(s, &o, &prev_mi)) break;
    }
    free(prev_mi);
    free(gw);
    free(wsum);
    if (ret) { s->have_acc = 0; return ret; }
    s->map_shape.ndim = sliced ? 3 : t.nsp;
    if (sliced) { s->map_shape.d[0] = t.nsl; s->map_shape.d[1] = t.sz[1]; s->map_shape.d[2] = t.sz[2]; }
    else for (int i = 0; i < t.nsp; i++) s->map_shape.d[i] = t.sz[3 - t.nsp + i];
    s->have_forward = direct;
    return VBS_OK;
}

vbs_status vbs_session_label_counts(vbs_session *s, const int64_t **counts, int64_t *n_samples, int *k) {
    if (!s || !counts || !n_samples || !k) return VBS_ERR_ARG;
    if (!s->have_acc || (!s->acc.counts && !s->acc.counts_lost))
        return vbs_fail(s->err, VBS_ERR_STATE, "no Monte-Carlo run has completed on this session");
    /* the run could not grow the table (mcstats.c goes on without it) */
    if (s->acc.counts_lost) return vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: the per-sample label volumes of the last run");
    *counts = s->acc.counts;
    *n_samples = s->acc.n;
    *k = s->acc.k;
    return VBS_OK;
}

vbs_status vbs_session_map(vbs_session *s, vbs_map which, const float **data, vbs_map_info *info) {
    if (!s || !data) return VBS_ERR_ARG;
    if (which < 0 || which >= VBS_MAP_COUNT) return vbs_fail(s->err, VBS_ERR_ARG, "unknown map %d", (int)which);
    if (!s->have_acc) return vbs_fail(s->err, VBS_ERR_STATE, "no Monte-Carlo run has completed on this session");
    if ((which == VBS_MAP_HET_ALEATORIC || which == VBS_MAP_HET_EPISTEMIC) && !s->acc.hetero)
        return vbs_fail(s->err, VBS_ERR_STATE, "map '%s' needs a heteroscedastic model", vbs_map_name(which));
    if (!s->maps[which]) {
        int64_t n = vbs_mc_map_size(&s->acc, which);
        if (!(s->maps[which] = malloc(sizeof(float) * (size_t)n))) return vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: map");
        vbs_mc_acc_map(&s->acc, which, &s->m->def.card, s->maps[which]);
    }
    *data = s->maps[which];
    if (info) {
        memset(info, 0, sizeof *info);
        int per_class = vbs_mc_map_size(&s->acc, which) != s->acc.nvox || which == VBS_MAP_PROB_MEAN || which == VBS_MAP_PROB_VAR ||
                        which == VBS_MAP_HET_ALEATORIC || which == VBS_MAP_HET_EPISTEMIC;
        int j = 0;
        if (per_class) info->dims[j++] = s->acc.k;
        for (int i = 0; i < s->map_shape.ndim; i++) info->dims[j++] = s->map_shape.d[i];
        info->ndim = j;
        info->n_samples = s->acc.n;
    }
    return VBS_OK;
}
