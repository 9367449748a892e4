/*
 * dropout.c: ONNX Dropout as MC dropout. In sample mode (and in every
 * training pass) it keeps each element with probability 1 - ratio and
 * scales the kept ones by 1 / (1 - ratio) (inverted dropout, as PyTorch);
 * in mean mode it is the identity, so E[sample] = mean pass element by
 * element. Not ONNX's training_mode semantics: the run's mode decides,
 * and the ratio is the node's attribute (the converter moves ONNX's ratio
 * input there); the seed attribute is accepted and unused, and the mask
 * output is refused.
 *
 * The mask is never stored: element e of batch item j keeps when the
 * 32-bit Philox word u(seed, s, stream, e) >= round(ratio * 2^32), the
 * stream being the node's (0x80000000 | node index) and s the pass's
 * sample key, plus j in a training pass. So at inference every item of a
 * pass (slices, windows, a batch) gets sample s's mask, as a pass of its
 * own would; in training, item j of a minibatch pass gets the mask of
 * example key s + j, the key a pass of that example alone has. Nothing
 * depends on the thread count or on how elements are split.
 *
 * Backward: dx += dy * keep / (1 - ratio) with the mask drawn again (the
 * identity's dx += dy in mean mode). The fast kernels draw in chunks on
 * the stack (vbs_randu32); the naive ones call Philox element by element.
 */
#include <string.h>

#include "ops.h"

vbs_status vbs_dropout_parse(vbs_node *n, const vbs_node_def *d, char *err) {
    static const char *const known[] = {"seed", "ratio", NULL};
    if (d->n_out > 1)
        return vbs_fail(err, VBS_ERR_UNSUPPORTED, "node '%s' (Dropout): the mask output is unsupported", d->name);
    if (d->n_in > 1)
        return vbs_fail(err, VBS_ERR_UNSUPPORTED,
                        "node '%s' (Dropout): %d inputs; in a .vbseg file the ratio is the attribute 'ratio' (vbseg convert moves "
                        "ONNX's ratio input there) and training_mode is the run's mode",
                        d->name, d->n_in);
    vbs_status st = vbs_attr_check_known(d, known, err);
    if (!st) st = vbs_attr_float(d, "ratio", 0.5f, &n->a.ratio, err);
    if (!st && !(n->a.ratio >= 0.f && n->a.ratio < 1.f))
        return vbs_fail(err, VBS_ERR_FORMAT, "node '%s' (Dropout): ratio %g is outside [0, 1)", d->name, n->a.ratio);
    return st;
}

vbs_status vbs_dropout_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) { return vbs_shape_same(n, in, out, err); }

/* What a pass's mask needs: the threshold on the 32-bit words, the scale of
 * the kept elements, the elements per batch item and the key of item 0. */
typedef struct {
    int on;           /* 0: the identity (mean mode, or ratio 0) */
    uint32_t thr;
    float scale;
    int64_t items, per;
    uint64_t key;
    int per_item_key; /* training: item j's key is key + j */
} mask_spec;

static mask_spec mask_of(const vbs_op_args *a) {
    mask_spec m = {0};
    const vbs_shape *xs = a->xs[0];
    float r = a->node->a.ratio;
    m.on = a->sampling && r > 0.f;
    double t = (double)r * 4294967296.0 + 0.5;
    m.thr = t >= 4294967295.0 ? 0xFFFFFFFFu : (uint32_t)t;
    m.scale = 1.f / (1.f - r);
    int64_t n = vbs_shape_numel(xs);
    m.items = xs->ndim >= 1 && xs->d[0] > 0 ? xs->d[0] : 1;
    m.per = n / m.items;
    m.key = a->sample;
    m.per_item_key = a->training;
    return m;
}

/* the word of element e of item j (the naive path: one Philox block per element) */
static uint32_t word_naive(const vbs_op_args *a, const mask_spec *m, int64_t j, int64_t e) {
    uint64_t s = m->key + (m->per_item_key ? (uint64_t)j : 0), blk = (uint64_t)e / 4;
    uint32_t key[2] = {(uint32_t)a->seed, (uint32_t)(a->seed >> 32)};
    uint32_t ctr[4] = {(uint32_t)blk, (uint32_t)(blk >> 32) ^ ((uint32_t)(s >> 32) << 16), a->node->rng_stream, (uint32_t)s}, out[4];
    vbs_philox4x32(key, ctr, out);
    return out[e % 4];
}

/* dst[t] (+)= src[t] * (u[t] >= thr ? scale : 0), as PyTorch's input * noise
 * (a dropped -x gives -0): the unsigned compare as a signed one on
 * sign-flipped words and no conditional load, so that the loop vectorises */
static inline __attribute__((always_inline)) void mask_body(const uint32_t *u, uint32_t thr, float scale, const float *src,
                                                              float *restrict dst, int64_t n, int add) {
    int32_t t0 = (int32_t)(thr ^ 0x80000000u);
    if (add)
        for (int64_t t = 0; t < n; t++) dst[t] += src[t] * ((int32_t)(u[t] ^ 0x80000000u) >= t0 ? scale : 0.f);
    else
        for (int64_t t = 0; t < n; t++) dst[t] = src[t] * ((int32_t)(u[t] ^ 0x80000000u) >= t0 ? scale : 0.f);
}
VBS_CLONES(mask_apply, (const uint32_t *u, uint32_t thr, float scale, const float *src, float *restrict dst, int64_t n, int add),
           mask_body(u, thr, scale, src, dst, n, add))

/* dst (+)= keep * scale * src over the whole tensor, the mask drawn in
 * chunks on the stack; add = 1 for the backward's accumulation */
static void apply_mask(const vbs_op_args *a, const mask_spec *m, const float *src, float *dst, int add) {
    enum { CHUNK = 1024 }; /* a multiple of the RNG's groups: whole groups are drawn once */
    uint32_t u[CHUNK];
    void (*fn)(const uint32_t *, uint32_t, float, const float *, float *restrict, int64_t, int) = VBS_PICK(mask_apply);
    for (int64_t j = 0; j < m->items; j++)
        for (int64_t e0 = 0; e0 < m->per; e0 += CHUNK) {
            int64_t nc = m->per - e0 < CHUNK ? m->per - e0 : CHUNK, o = j * m->per + e0;
            vbs_randu32(a->seed, m->key + (m->per_item_key ? (uint64_t)j : 0), a->node->rng_stream, (uint64_t)e0, nc, u);
            fn(u, m->thr, m->scale, src + o, dst + o, nc, add);
        }
}

void vbs_dropout_forward(const vbs_op_args *a) {
    mask_spec m = mask_of(a);
    if (!m.on) { vbs_identity_forward(a); return; }
    apply_mask(a, &m, a->x[0], a->y[0], 0);
}

void vbs_dropout_forward_naive(const vbs_op_args *a) {
    mask_spec m = mask_of(a);
    for (int64_t j = 0; j < m.items; j++)
        for (int64_t e = 0; e < m.per; e++) {
            int64_t i = j * m.per + e;
            a->y[0][i] = !m.on ? a->x[0][i] : a->x[0][i] * (word_naive(a, &m, j, e) >= m.thr ? m.scale : 0.f);
        }
}

void vbs_dropout_backward(const vbs_grad_args *g) {
    if (!g->dx[0]) return;
    mask_spec m = mask_of(g->fwd);
    if (!m.on) { vbs_identity_backward(g); return; }
    apply_mask(g->fwd, &m, g->dy[0], g->dx[0], 1);
}

void vbs_dropout_backward_naive(const vbs_grad_args *g) {
    if (!g->dx[0]) return;
    mask_spec m = mask_of(g->fwd);
    for (int64_t j = 0; j < m.items; j++)
        for (int64_t e = 0; e < m.per; e++) {
            int64_t i = j * m.per + e;
            g->dx[0][i] += !m.on ? g->dy[0][i] : g->dy[0][i] * (word_naive(g->fwd, &m, j, e) >= m.thr ? m.scale : 0.f);
        }
}
