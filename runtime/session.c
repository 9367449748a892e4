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
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

vbs_mc_opts vbs_mc_defaults(void) {
    vbs_mc_opts o = {20, 0, VBS_MODE_SAMPLE, 0};
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
        free(s->slice_buf[i]);
    }
    free(s->workers);
    free(s->slice_buf);
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
    float **b = realloc(s->slice_buf, sizeof *b * (size_t)n);
    if (!b) return vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: workers");
    s->slice_buf = b;
    for (int i = s->n_workers; i < n; i++) {
        memset(&s->workers[i], 0, sizeof s->workers[i]);
        s->slice_buf[i] = NULL;
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

/* Copies slice z of a (1, C, D, H, W) volume into a (1, C, H, W) buffer. */
static void gather_slice(const float *vol, const vbs_shape *vs, int64_t z, float *dst) {
    int64_t c = vs->d[1], d = vs->d[2], hw = vs->d[3] * vs->d[4];
    for (int64_t ch = 0; ch < c; ch++) memcpy(dst + ch * hw, vol + (ch * d + z) * hw, sizeof(float) * (size_t)hw);
}

vbs_status vbs_session_run_mc(vbs_session *s, const float *input, const int64_t *shape, int ndim, const vbs_mc_opts *opts) {
    if (!s) return VBS_ERR_ARG;
    s->err[0] = 0;
    s->have_acc = 0;
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
    vbs_shape vol, sh;
    vbs_status st;
    if (sliced) {
        if (ndim != 5) return vbs_fail(s->err, VBS_ERR_ARG, "bad volume");
        for (int i = 0; i < 5; i++) vol.d[i] = shape[i];
        vol.ndim = 5;
        int64_t sl[4] = {shape[0], shape[1], shape[3], shape[4]};
        if ((st = check_shape(s, sl, 4, &sh))) return st;
    } else if ((st = check_shape(s, shape, ndim, &sh))) return st;
    if (sh.d[0] != 1) return vbs_fail(s->err, VBS_ERR_ARG, "Monte-Carlo runs take a batch of 1, got %lld", (long long)sh.d[0]);
    int64_t nslices = sliced ? vol.d[2] : 1;
    int t = o.threads ? o.threads : vbs_default_threads();
    int nw = t < o.n_samples ? t : o.n_samples;
    if ((st = ensure_workers(s, nw))) return st;
    int64_t slice_in = vbs_shape_numel(&sh);
    for (int w = 0; w < nw && sliced; w++)
        if (!s->slice_buf[w] && !(s->slice_buf[w] = malloc(sizeof(float) * (size_t)slice_in)))
            return vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: slice buffer");
    const vbs_card *card = &m->def.card;
    int hetero = card->heteroscedastic && m->def.n_outputs >= 2;
    char errs[64][VBS_ERRLEN];
    vbs_status sts[64];
    if (nw > 64) nw = 64;
    /* Workers own the cores; BLAS stays single-threaded even for one sample,
     * where two BLAS threads measured slower than one (README, Threads). */
    vbs_blas_set_threads(1);
    int64_t nvox_slice = 0;
    int k = 0;
    for (int64_t first = 0; first < o.n_samples; first += nw) {
        int active = o.n_samples - first < nw ? (int)(o.n_samples - first) : nw;
        for (int64_t z = 0; z < nslices; z++) {
#pragma omp parallel for num_threads(active) schedule(static, 1) if (active > 1)
            for (int w = 0; w < active; w++) {
                const float *x = input;
                if (sliced) {
                    gather_slice(input, &vol, z, s->slice_buf[w]);
                    x = s->slice_buf[w];
                }
                sts[w] = vbs_worker_run(&s->workers[w], m, x, &sh, o.mode, o.seed, (uint64_t)(first + w), errs[w]);
            }
            for (int w = 0; w < active; w++)
                if (sts[w]) return vbs_fail(s->err, sts[w], "%s", errs[w]);
            if (!s->have_acc) {
                /* first pass: learn the output geometry, then size the statistics */
                const vbs_shape *ys = &s->workers[0].plan.shapes[m->g.output_vals[0]];
                if (ys->ndim != sh.ndim || ys->d[0] != 1)
                    return vbs_fail(s->err, VBS_ERR_SHAPE, "output '%s' must be (1, K, spatial...) like the input", m->def.outputs[0].name);
                for (int i = 2; i < sh.ndim; i++)
                    if (ys->d[i] != sh.d[i])
                        return vbs_fail(s->err, VBS_ERR_SHAPE, "output '%s' is not the input's spatial size (axis %d: %lld vs %lld)",
                                        m->def.outputs[0].name, i, (long long)ys->d[i], (long long)sh.d[i]);
                k = (int)ys->d[1];
                if (k > 64) return vbs_fail(s->err, VBS_ERR_UNSUPPORTED, "%d output classes (max 64)", k);
                if (hetero) {
                    const vbs_shape *ls = &s->workers[0].plan.shapes[m->g.output_vals[1]];
                    if (vbs_shape_numel(ls) != vbs_shape_numel(ys))
                        return vbs_fail(s->err, VBS_ERR_SHAPE, "heteroscedastic output '%s' differs in shape from '%s'",
                                        m->def.outputs[1].name, m->def.outputs[0].name);
                }
                nvox_slice = vbs_shape_numel(ys) / k;
                vbs_mc_acc_free(&s->acc);
                if (vbs_mc_acc_init(&s->acc, nvox_slice * nslices, k, card->output_activation, hetero))
                    return vbs_fail(s->err, VBS_ERR_NOMEM, "out of memory: statistics for %lld voxels", (long long)(nvox_slice * nslices));
                s->have_acc = 1;
            }
            for (int w = 0; w < active; w++) {
                const float *lg = vbs_worker_value(&s->workers[w], m, m->g.output_vals[0]);
                const float *lv = hetero ? vbs_worker_value(&s->workers[w], m, m->g.output_vals[1]) : NULL;
                vbs_mc_acc_add(&s->acc, z * nvox_slice, nvox_slice, s->acc.n + w + 1, lg, lv);
            }
        }
        for (int w = 0; w < active; w++) vbs_mc_acc_commit(&s->acc);
    }
    s->map_shape.ndim = sliced ? 3 : sh.ndim - 2;
    if (sliced) { s->map_shape.d[0] = vol.d[2]; s->map_shape.d[1] = vol.d[3]; s->map_shape.d[2] = vol.d[4]; }
    else for (int i = 2; i < sh.ndim; i++) s->map_shape.d[i - 2] = sh.d[i];
    s->have_forward = !sliced && nw >= 1;
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
