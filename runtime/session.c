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
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

vbs_mc_opts vbs_mc_defaults(void) {
    vbs_mc_opts o = {20, 0, VBS_MODE_SAMPLE, 0, 0.5f, 0.f, 0};
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

static vbs_status check_shape(vbs_session *s, const int64_t *shape, int ndim, vbs_shape *sh) {
    if (!shape || ndim < 1 || ndim > VBS_MAX_DIMS) return vbs_fail(s->err, VBS_ERR_ARG, "input shape has %d dims", ndim);
    int64_t n = 1;
    sh->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0 || !vbs_mul_ok(n, shape[i], &n) || n > ((int64_t)1 << 34))
            return vbs_fail(s->err, VBS_ERR_ARG, "input shape: dim %d is %lld (or the total overflows)", i, (long long)shape[i]);
        sh->d[i] = shape[i];
    }
    const vbs_io_def *io = &s->m->def.inputs[0];
    if (s->m->def.n_inputs != 1)
        return vbs_fail(s->err, VBS_ERR_UNSUPPORTED, "model has %d graph inputs; this call feeds one", s->m->def.n_inputs);
    if (io->ndim && io->ndim != ndim)
        return vbs_fail(s->err, VBS_ERR_SHAPE, "input '%s' has %d dims, got %d", io->name, io->ndim, ndim);
    for (int i = 0; i < ndim && i < io->ndim; i++)
        if (io->dims[i] >= 0 && io->dims[i] != shape[i])
            return vbs_fail(s->err, VBS_ERR_SHAPE, "input '%s' dim %d must be %lld, got %lld", io->name, i, (long long)io->dims[i],
                            (long long)shape[i]);
    return VBS_OK;
}

vbs_status vbs_session_forward(vbs_session *s, const float *input, const int64_t *shape, int ndim, vbs_mode mode,
                               uint64_t seed, uint64_t sample) {
    if (!s) return VBS_ERR_ARG;
    s->err[0] = 0;
    vbs_shape sh;
    vbs_status st = check_shape(s, shape, ndim, &sh);
    if (st) return st;
    if (!input) return vbs_fail(s->err, VBS_ERR_ARG, "NULL input");
    if ((st = ensure_workers(s, 1))) return st;
    char err[VBS_ERRLEN];
    if ((st = vbs_worker_run(&s->workers[0], s->m, input, &sh, mode, seed, sample, err))) return vbs_fail(s->err, st, "%s", err);
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

/* Spatial geometry of one network pass: the region of the caller's data it
 * covers (`sp`, up to 3 dims) and the zero-padded size it runs at (`pp`,
 * centred: `pb` before, the rest after). */
typedef struct { int nsp; int64_t sp[3], pp[3], pb[3]; } padding;

/* Copies channel planes of the region into the padded buffer, zero elsewhere.
 * src is C planes of sp voxels (or, sliced, slice z of (C, D, H, W)). */
static void pad_in(const float *src, int64_t c, const padding *p, int sliced, int64_t depth, int64_t z, float *dst) {
    int64_t pn = p->pp[0] * p->pp[1] * p->pp[2], sn = p->sp[0] * p->sp[1] * p->sp[2];
    int padded = pn != sn;
    if (padded) memset(dst, 0, sizeof(float) * (size_t)(c * pn));
    for (int64_t ch = 0; ch < c; ch++) {
        const float *plane = sliced ? src + (ch * depth + z) * sn : src + ch * sn;
        float *out = dst + ch * pn;
        if (!padded) { memcpy(out, plane, sizeof(float) * (size_t)sn); continue; }
        for (int64_t a = 0; a < p->sp[0]; a++)
            for (int64_t b = 0; b < p->sp[1]; b++)
                memcpy(out + ((a + p->pb[0]) * p->pp[1] + b + p->pb[1]) * p->pp[2] + p->pb[2], plane + (a * p->sp[1] + b) * p->sp[2],
                       sizeof(float) * (size_t)p->sp[2]);
    }
}

/* The inverse for outputs: K padded planes -> K planes of the region. */
static void crop_out(const float *src, int64_t k, const padding *p, float *dst) {
    int64_t pn = p->pp[0] * p->pp[1] * p->pp[2], sn = p->sp[0] * p->sp[1] * p->sp[2];
    for (int64_t ch = 0; ch < k; ch++)
        for (int64_t a = 0; a < p->sp[0]; a++)
            for (int64_t b = 0; b < p->sp[1]; b++)
                memcpy(dst + ch * sn + (a * p->sp[1] + b) * p->sp[2],
                       src + ch * pn + ((a + p->pb[0]) * p->pp[1] + b + p->pb[1]) * p->pp[2] + p->pb[2], sizeof(float) * (size_t)p->sp[2]);
}

static float *grow_buf(float *b, int64_t *cap, int64_t need) {
    if (need <= *cap) return b;
    float *n = realloc(b, sizeof(float) * (size_t)need);
    if (n) *cap = need;
    return n;
}

/* Finds the padded size a network accepts for spatial size sp: the input
 * itself if its output keeps the size, else the next multiple of 2, 4, ...,
 * 128 on every spatial axis (a U-Net of depth d needs multiples of 2^d). */
static vbs_status fit(vbs_session *s, const vbs_shape *in, padding *p) {
    const vbs_model *m = s->m;
    char err[VBS_ERRLEN], first[VBS_ERRLEN] = "";
    for (int64_t mult = 1; mult <= 128; mult *= 2) {
        vbs_shape t = *in;
        for (int i = 0; i < p->nsp; i++) t.d[2 + i] = (in->d[2 + i] + mult - 1) / mult * mult;
        vbs_plan pl;
        vbs_status st = vbs_plan_build(&pl, &m->g, &t, err);
        if (st) {
            if (!first[0]) snprintf(first, sizeof first, "%s", err);
            continue;
        }
        const vbs_shape *ys = &pl.shapes[m->g.output_vals[0]];
        int same = ys->ndim == t.ndim && ys->d[0] == 1;
        for (int i = 2; same && i < t.ndim; i++) same = ys->d[i] == t.d[i];
        vbs_plan_free(&pl);
        if (!same) {
            if (!first[0]) snprintf(first, sizeof first, "output '%s' is not the input's spatial size", m->def.outputs[0].name);
            continue;
        }
        for (int i = 0; i < p->nsp; i++) {
            p->pp[i] = t.d[2 + i];
            p->pb[i] = (t.d[2 + i] - in->d[2 + i]) / 2;
        }
        return VBS_OK;
    }
    return vbs_fail(s->err, VBS_ERR_SHAPE, "the network takes no padding of this input up to multiples of 128: %s", first);
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

/* Window starts along one axis: first at 0, last at size - patch, about
 * patch * (1 - overlap) apart. */
static int64_t starts(int64_t size, int64_t patch, float overlap, int64_t *out, int64_t max) {
    if (size <= patch) { out[0] = 0; return 1; }
    double step = (double)patch * (1.0 - overlap);
    if (step < 1) step = 1;
    int64_t n = (int64_t)ceil((double)(size - patch) / step) + 1;
    if (n > max) n = max;
    for (int64_t i = 0; i < n; i++) out[i] = n == 1 ? 0 : (int64_t)llround((double)i * (double)(size - patch) / (double)(n - 1));
    return n;
}

/* 3D sliding windows with Gaussian blending of the class probabilities.
 * vol is (1, C, D, H, W); patch the card's (D, H, W) patch size. */
static vbs_status run_windows(vbs_session *s, const float *input, const vbs_shape *vol, const int64_t *patch, const vbs_mc_opts *o) {
    const vbs_model *m = s->m;
    const vbs_card *card = &m->def.card;
    int64_t c = vol->d[1], sz[3] = {vol->d[2], vol->d[3], vol->d[4]}, ws[3], st[3][4096], nst[3];
    float overlap = o->overlap > 0 ? o->overlap : 0.5f;
    if (!(overlap < 0.95f)) return vbs_fail(s->err, VBS_ERR_ARG, "overlap %g is not in 0..0.9", (double)overlap);
    for (int i = 0; i < 3; i++) {
        ws[i] = sz[i] < patch[i] ? sz[i] : patch[i];
        nst[i] = starts(sz[i], ws[i], overlap, st[i], 4096);
    }
    /* the window's network size: the patch, padded to what the network takes */
    vbs_shape wsh = {5, {1, c, ws[0], ws[1], ws[2]}};
    padding pad = {3, {ws[0], ws[1], ws[2]}, {1, 1, 1}, {0, 0, 0}};
    vbs_status stt = fit(s, &wsh, &pad);
    if (stt) return stt;
    vbs_shape psh = {5, {1, c, pad.pp[0], pad.pp[1], pad.pp[2]}};
    int64_t wn = ws[0] * ws[1] * ws[2], pn = pad.pp[0] * pad.pp[1] * pad.pp[2], nvox = sz[0] * sz[1] * sz[2];
    int hetero = card->heteroscedastic && m->def.n_outputs >= 2;
    int t = o->threads ? o->threads : vbs_default_threads();
    int nw = t < o->n_samples ? t : o->n_samples;
    if (nw > 64) nw = 64;
    int block = o->adaptive_block > 0 ? o->adaptive_block : 5;
    if (o->adaptive_tol > 0) while (nw > 1 && block % nw) nw--;
    float *prev_mi = NULL;
    vbs_status st2 = ensure_workers(s, nw);
    if (st2) return st2;
    /* Gaussian importance of a window's voxels, and the blended weight of every voxel */
    float *gw = malloc(sizeof(float) * (size_t)wn), *wsum = calloc((size_t)nvox, sizeof(float));
    if (!gw || !wsum) { free(gw); free(wsum); return vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: window weights"); }
    for (int64_t a = 0; a < ws[0]; a++)
        for (int64_t b = 0; b < ws[1]; b++)
            for (int64_t e = 0; e < ws[2]; e++) {
                double g = 1;
                int64_t q[3] = {a, b, e};
                for (int i = 0; i < 3; i++) {
                    double sig = (double)ws[i] / 8.0, dz = (double)q[i] - (double)(ws[i] - 1) / 2.0;
                    g *= exp(-0.5 * dz * dz / (sig * sig));
                }
                gw[(a * ws[1] + b) * ws[2] + e] = (float)(g > 1e-4 ? g : 1e-4); /* no voxel gets weight 0 */
            }
    for (int64_t i0 = 0; i0 < nst[0]; i0++)
        for (int64_t i1 = 0; i1 < nst[1]; i1++)
            for (int64_t i2 = 0; i2 < nst[2]; i2++)
                for (int64_t a = 0; a < ws[0]; a++)
                    for (int64_t b = 0; b < ws[1]; b++)
                        for (int64_t e = 0; e < ws[2]; e++)
                            wsum[((st[0][i0] + a) * sz[1] + st[1][i1] + b) * sz[2] + st[2][i2] + e] += gw[(a * ws[1] + b) * ws[2] + e];
    char errs[64][VBS_ERRLEN];
    vbs_status sts[64];
    vbs_blas_set_threads(1);
    int k = 0, nout = hetero ? 3 : 1; /* blended planes per class: probabilities (+ logits, log-variances) */
    vbs_status ret = VBS_OK;
    for (int64_t first = 0; first < o->n_samples && !ret; first += nw) {
        int active = o->n_samples - first < nw ? (int)(o->n_samples - first) : nw;
        for (int64_t i0 = 0; i0 < nst[0] && !ret; i0++)
            for (int64_t i1 = 0; i1 < nst[1] && !ret; i1++)
                for (int64_t i2 = 0; i2 < nst[2] && !ret; i2++) {
                    for (int w = 0; w < active; w++) {
                        s->in_buf[w] = grow_buf(s->in_buf[w], &s->in_cap[w], c * pn);
                        if (!s->in_buf[w]) { ret = vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: window buffer"); break; }
                    }
                    if (ret) break;
#pragma omp parallel for num_threads(active) schedule(static, 1) if (active > 1)
                    for (int w = 0; w < active; w++) {
                        float *dst = s->in_buf[w];
                        memset(dst, 0, sizeof(float) * (size_t)(c * pn));
                        for (int64_t ch = 0; ch < c; ch++)
                            for (int64_t a = 0; a < ws[0]; a++)
                                for (int64_t b = 0; b < ws[1]; b++)
                                    memcpy(dst + ch * pn + ((a + pad.pb[0]) * pad.pp[1] + b + pad.pb[1]) * pad.pp[2] + pad.pb[2],
                                           input + ((ch * sz[0] + st[0][i0] + a) * sz[1] + st[1][i1] + b) * sz[2] + st[2][i2],
                                           sizeof(float) * (size_t)ws[2]);
                        sts[w] = vbs_worker_run(&s->workers[w], m, dst, &psh, o->mode, o->seed, (uint64_t)(first + w), errs[w]);
                    }
                    for (int w = 0; w < active && !ret; w++)
                        if (sts[w]) ret = vbs_fail(s->err, sts[w], "%s", errs[w]);
                    if (ret) break;
                    if (!s->have_acc) {
                        const vbs_shape *ys = &s->workers[0].plan.shapes[m->g.output_vals[0]];
                        k = (int)ys->d[1];
                        if (k > 64) { ret = vbs_fail(s->err, VBS_ERR_UNSUPPORTED, "%d output classes (max 64)", k); break; }
                        vbs_mc_acc_free(&s->acc);
                        if (vbs_mc_acc_init(&s->acc, nvox, k, card->output_activation, hetero)) {
                            ret = vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: statistics for %lld voxels", (long long)nvox);
                            break;
                        }
                        s->have_acc = 1;
                    }
                    /* each worker's window, as probabilities (and logits), weighted into its sample's volume */
                    for (int w = 0; w < active && !ret; w++) {
                        int64_t need = (int64_t)nout * k * nvox;
                        if (s->out_cap[w] < need || i0 + i1 + i2 == 0) {
                            s->out_buf[w] = grow_buf(s->out_buf[w], &s->out_cap[w], need);
                            if (!s->out_buf[w]) { ret = vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: blended volume"); break; }
                        }
                        if (i0 + i1 + i2 == 0) memset(s->out_buf[w], 0, sizeof(float) * (size_t)need);
                        const float *lg = vbs_worker_value(&s->workers[w], m, m->g.output_vals[0]);
                        const float *lv = hetero ? vbs_worker_value(&s->workers[w], m, m->g.output_vals[1]) : NULL;
                        float *vp = s->out_buf[w];
                        for (int64_t a = 0; a < ws[0]; a++)
                            for (int64_t b = 0; b < ws[1]; b++)
                                for (int64_t e = 0; e < ws[2]; e++) {
                                    int64_t pv = ((a + pad.pb[0]) * pad.pp[1] + b + pad.pb[1]) * pad.pp[2] + pad.pb[2] + e;
                                    int64_t v = ((st[0][i0] + a) * sz[1] + st[1][i1] + b) * sz[2] + st[2][i2] + e;
                                    float g = gw[(a * ws[1] + b) * ws[2] + e], pr[64];
                                    if (card->output_activation == VBS_ACT_SIGMOID)
                                        for (int q = 0; q < k; q++) pr[q] = 1.f / (1.f + expf(-lg[q * pn + pv]));
                                    else if (card->output_activation == VBS_ACT_SOFTMAX) {
                                        float mx = lg[pv], sum = 0;
                                        for (int q = 1; q < k; q++) mx = fmaxf(mx, lg[q * pn + pv]);
                                        for (int q = 0; q < k; q++) sum += pr[q] = expf(lg[q * pn + pv] - mx);
                                        for (int q = 0; q < k; q++) pr[q] /= sum;
                                    } else
                                        for (int q = 0; q < k; q++) pr[q] = lg[q * pn + pv];
                                    for (int q = 0; q < k; q++) {
                                        vp[q * nvox + v] += g * pr[q];
                                        if (hetero) {
                                            vp[(k + q) * nvox + v] += g * lg[q * pn + pv];
                                            vp[(2 * k + q) * nvox + v] += g * lv[q * pn + pv];
                                        }
                                    }
                                }
                    }
                }
        if (ret) break;
        /* the round's samples, normalised by the weights, into the statistics in sample order */
        for (int w = 0; w < active; w++) {
            float *vp = s->out_buf[w];
            for (int q = 0; q < nout * k; q++)
                for (int64_t v = 0; v < nvox; v++) vp[q * nvox + v] /= wsum[v];
            vbs_mc_acc_add_probs(&s->acc, 0, nvox, s->acc.n + w + 1, vp, hetero ? vp + k * nvox : NULL, hetero ? vp + 2 * k * nvox : NULL);
        }
        for (int w = 0; w < active; w++) vbs_mc_acc_commit(&s->acc);
        if ((ret = vbs_mc_acc_check(&s->acc, m->def.outputs[0].name, s->err))) break; /* card says probabilities: are they? */
        if (converged(s, o, &prev_mi)) break;
    }
    free(prev_mi);
    free(gw);
    free(wsum);
    if (ret) { s->have_acc = 0; return ret; }
    s->map_shape.ndim = 3;
    for (int i = 0; i < 3; i++) s->map_shape.d[i] = sz[i];
    return VBS_OK;
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
    const vbs_io_def *io = &m->def.inputs[0];
    /* a 2D model (rank-4 input) fed a (1, C, D, H, W) volume runs slice by slice */
    int sliced = io->ndim == 4 && ndim == 5;
    vbs_shape vol = {0, {0}}, sh;
    vbs_status st;
    if (sliced) {
        for (int i = 0; i < 5; i++) vol.d[i] = shape[i];
        vol.ndim = 5;
        int64_t sl[4] = {shape[0], shape[1], shape[3], shape[4]};
        if ((st = check_shape(s, sl, 4, &sh))) return st;
    } else if ((st = check_shape(s, shape, ndim, &sh))) return st;
    if (sh.d[0] != 1) return vbs_fail(s->err, VBS_ERR_ARG, "Monte-Carlo runs take a batch of 1, got %lld", (long long)sh.d[0]);
    /* a 3D model with a 3D patch on a larger volume: sliding windows */
    const vbs_card *cd = &m->def.card;
    if (!sliced && sh.ndim == 5 && cd->n_patch == 3 &&
        (sh.d[2] > cd->patch[0] || sh.d[3] > cd->patch[1] || sh.d[4] > cd->patch[2]))
        return run_windows(s, input, &sh, cd->patch, &o);
    if (sh.ndim < 3 || sh.ndim > 5) return vbs_fail(s->err, VBS_ERR_ARG, "input has %d dims; 1 to 3 spatial dims expected", sh.ndim);
    /* pad to a size the network takes, crop the outputs back */
    padding pad = {sh.ndim - 2, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}};
    for (int i = 0; i < pad.nsp; i++) pad.sp[3 - pad.nsp + i] = sh.d[2 + i];
    padding fitted = pad;
    if ((st = fit(s, &sh, &fitted))) return st;
    for (int i = 0; i < pad.nsp; i++) { pad.pp[3 - pad.nsp + i] = fitted.pp[i]; pad.pb[3 - pad.nsp + i] = fitted.pb[i]; }
    for (int i = 0; i < 3 - pad.nsp; i++) { pad.pp[i] = 1; pad.pb[i] = 0; }
    vbs_shape psh = sh;
    for (int i = 0; i < pad.nsp; i++) psh.d[2 + i] = pad.pp[3 - pad.nsp + i];
    int64_t nslices = sliced ? vol.d[2] : 1, c = sh.d[1], sn = pad.sp[0] * pad.sp[1] * pad.sp[2];
    int64_t pn = pad.pp[0] * pad.pp[1] * pad.pp[2];
    int padded = pn != sn;
    int t = o.threads ? o.threads : vbs_default_threads();
    int nw = t < o.n_samples ? t : o.n_samples;
    float *prev_mi = NULL;
    /* rounds of samples must end on block boundaries for adaptive stopping */
    int block = o.adaptive_block > 0 ? o.adaptive_block : 5;
    if (o.adaptive_tol > 0) while (nw > 1 && block % nw) nw--;
    if (nw > 64) nw = 64;
    if ((st = ensure_workers(s, nw))) return st;
    const vbs_card *card = &m->def.card;
    int hetero = card->heteroscedastic && m->def.n_outputs >= 2;
    char errs[64][VBS_ERRLEN];
    vbs_status sts[64];
    /* Workers own the cores; BLAS stays single-threaded even for one sample,
     * where two BLAS threads measured slower than one (README, Threads). */
    vbs_blas_set_threads(1);
    int k = 0;
    for (int64_t first = 0; first < o.n_samples; first += nw) {
        int active = o.n_samples - first < nw ? (int)(o.n_samples - first) : nw;
        for (int64_t z = 0; z < nslices; z++) {
            for (int w = 0; w < active && (sliced || padded); w++) {
                s->in_buf[w] = grow_buf(s->in_buf[w], &s->in_cap[w], c * pn);
                if (!s->in_buf[w]) return vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: input buffer");
            }
#pragma omp parallel for num_threads(active) schedule(static, 1) if (active > 1)
            for (int w = 0; w < active; w++) {
                const float *x = input;
                if (sliced || padded) {
                    pad_in(input, c, &pad, sliced, sliced ? vol.d[2] : 1, z, s->in_buf[w]);
                    x = s->in_buf[w];
                }
                sts[w] = vbs_worker_run(&s->workers[w], m, x, &psh, o.mode, o.seed, (uint64_t)(first + w), errs[w]);
            }
            for (int w = 0; w < active; w++)
                if (sts[w]) { free(prev_mi); return vbs_fail(s->err, sts[w], "%s", errs[w]); }
            if (!s->have_acc) {
                /* first pass: learn the classes, then size the statistics */
                const vbs_shape *ys = &s->workers[0].plan.shapes[m->g.output_vals[0]];
                k = (int)ys->d[1];
                if (k > 64) return vbs_fail(s->err, VBS_ERR_UNSUPPORTED, "%d output classes (max 64)", k);
                if (hetero) {
                    const vbs_shape *ls = &s->workers[0].plan.shapes[m->g.output_vals[1]];
                    if (vbs_shape_numel(ls) != vbs_shape_numel(ys))
                        return vbs_fail(s->err, VBS_ERR_SHAPE, "heteroscedastic output '%s' differs in shape from '%s'",
                                        m->def.outputs[1].name, m->def.outputs[0].name);
                }
                vbs_mc_acc_free(&s->acc);
                if (vbs_mc_acc_init(&s->acc, sn * nslices, k, card->output_activation, hetero))
                    return vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: statistics for %lld voxels", (long long)(sn * nslices));
                s->have_acc = 1;
            }
            for (int w = 0; w < active; w++) {
                const float *lg = vbs_worker_value(&s->workers[w], m, m->g.output_vals[0]);
                const float *lv = hetero ? vbs_worker_value(&s->workers[w], m, m->g.output_vals[1]) : NULL;
                if (padded) {
                    /* cropped copies of the outputs, in one scratch per worker */
                    s->out_buf[w] = grow_buf(s->out_buf[w], &s->out_cap[w], (hetero ? 2 : 1) * k * sn);
                    if (!s->out_buf[w]) return vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: output buffer");
                    crop_out(lg, k, &pad, s->out_buf[w]);
                    lg = s->out_buf[w];
                    if (lv) {
                        crop_out(lv, k, &pad, s->out_buf[w] + k * sn);
                        lv = s->out_buf[w] + k * sn;
                    }
                }
                vbs_mc_acc_add(&s->acc, z * sn, sn, s->acc.n + w + 1, lg, lv);
            }
        }
        for (int w = 0; w < active; w++) vbs_mc_acc_commit(&s->acc);
        if ((st = vbs_mc_acc_check(&s->acc, m->def.outputs[0].name, s->err))) { free(prev_mi); s->have_acc = 0; return st; }
        if (converged(s, &o, &prev_mi)) break;
    }
    free(prev_mi);
    s->map_shape.ndim = sliced ? 3 : sh.ndim - 2;
    if (sliced) { s->map_shape.d[0] = vol.d[2]; s->map_shape.d[1] = vol.d[3]; s->map_shape.d[2] = vol.d[4]; }
    else for (int i = 2; i < sh.ndim; i++) s->map_shape.d[i - 2] = sh.d[i];
    s->have_forward = !sliced && !padded;
    return VBS_OK;
}

vbs_status vbs_session_label_counts(vbs_session *s, const int64_t **counts, int64_t *n_samples, int *k) {
    if (!s || !counts || !n_samples || !k) return VBS_ERR_ARG;
    if (!s->have_acc || !s->acc.counts) return vbs_fail(s->err, VBS_ERR_STATE, "no Monte-Carlo run has completed on this session");
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
