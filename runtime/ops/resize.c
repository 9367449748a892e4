/*
 * resize.c: ONNX Resize in nearest and (n-)linear modes over any axes,
 * with the coordinate_transformation_mode (half_pixel, asymmetric,
 * align_corners, pytorch_half_pixel, tf_half_pixel_for_nn) and nearest_mode
 * of opset 13+.
 * Scales or sizes are attributes here; importers fold the constant inputs
 * into them. Cubic, tf_crop_and_resize, antialias and exclude_outside are
 * refused. The fast kernel precomputes per-axis source indices and
 * weights; the naive one maps every output element on its own in double.
 *
 * Backward: the transpose of the forward. Nearest scatters each dy element
 * to its source element; linear scatters it to the 2^k corners with the
 * interpolation weights. The fast backward uses the forward's per-axis
 * maps (so the two cannot disagree) and walks dy row by row with the
 * corners of the outer axes computed once per row; the naive one scatters
 * every dy element on its own from the spec's formulas in double.
 */
#include <math.h>
#include <string.h>

#include "ops.h"

vbs_status vbs_resize_parse(vbs_node *n, const vbs_node_def *d, char *err) {
    static const char *const known[] = {"mode", "coordinate_transformation_mode", "nearest_mode", "scales", "sizes",
                                        "cubic_coeff_a", "exclude_outside", "extrapolation_value", "antialias", NULL};
    vbs_resize_attr *r = &n->a.resize;
    vbs_status st = vbs_attr_check_known(d, known, err);
    if (st) return st;
    const char *mode = vbs_attr_string(d, "mode", "nearest");
    if (!strcmp(mode, "nearest")) r->mode = VBS_RESIZE_NEAREST;
    else if (!strcmp(mode, "linear")) r->mode = VBS_RESIZE_LINEAR;
    else return vbs_fail(err, VBS_ERR_UNSUPPORTED, "node '%s' (Resize): mode '%s' unsupported (nearest, linear)", d->name, mode);
    const char *ct = vbs_attr_string(d, "coordinate_transformation_mode", "half_pixel");
    if (!strcmp(ct, "half_pixel")) r->coord = VBS_CT_HALF_PIXEL;
    else if (!strcmp(ct, "asymmetric")) r->coord = VBS_CT_ASYMMETRIC;
    else if (!strcmp(ct, "align_corners")) r->coord = VBS_CT_ALIGN_CORNERS;
    else if (!strcmp(ct, "pytorch_half_pixel")) r->coord = VBS_CT_PYTORCH_HALF_PIXEL;
    else if (!strcmp(ct, "tf_half_pixel_for_nn")) r->coord = VBS_CT_TF_HALF_PIXEL_FOR_NN;
    else return vbs_fail(err, VBS_ERR_UNSUPPORTED, "node '%s' (Resize): coordinate_transformation_mode '%s' unsupported", d->name, ct);
    const char *nm = vbs_attr_string(d, "nearest_mode", "round_prefer_floor");
    if (!strcmp(nm, "round_prefer_floor")) r->nearest = VBS_NEAREST_ROUND_PREFER_FLOOR;
    else if (!strcmp(nm, "round_prefer_ceil")) r->nearest = VBS_NEAREST_ROUND_PREFER_CEIL;
    else if (!strcmp(nm, "floor")) r->nearest = VBS_NEAREST_FLOOR;
    else if (!strcmp(nm, "ceil")) r->nearest = VBS_NEAREST_CEIL;
    else return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (Resize): unknown nearest_mode '%s'", d->name, nm);
    int64_t v;
    if ((st = vbs_attr_int(d, "exclude_outside", 0, &v, err))) return st;
    if (v) return vbs_fail(err, VBS_ERR_UNSUPPORTED, "node '%s' (Resize): exclude_outside=1 unsupported", d->name);
    if ((st = vbs_attr_int(d, "antialias", 0, &v, err))) return st;
    if (v) return vbs_fail(err, VBS_ERR_UNSUPPORTED, "node '%s' (Resize): antialias=1 unsupported", d->name);
    if ((st = vbs_attr_floats(d, "scales", VBS_MAX_DIMS, r->scales, &r->n_scales, err))) return st;
    if ((st = vbs_attr_ints(d, "sizes", VBS_MAX_DIMS, r->sizes, &r->n_sizes, err))) return st;
    if ((r->n_scales > 0) == (r->n_sizes > 0))
        return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (Resize): exactly one of 'scales' and 'sizes' is required", d->name);
    for (int i = 0; i < r->n_scales; i++)
        if (!(r->scales[i] > 0.f) || r->scales[i] > 65536.f)
            return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (Resize): scales must be in (0, 65536]", d->name);
    for (int i = 0; i < r->n_sizes; i++)
        if (r->sizes[i] <= 0 || r->sizes[i] > ((int64_t)1 << 31))
            return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (Resize): sizes must be in 1..2^31", d->name);
    return VBS_OK;
}

vbs_status vbs_resize_shape(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err) {
    const vbs_resize_attr *r = &n->a.resize;
    int nd = in[0].ndim, k = r->n_scales > 0 ? r->n_scales : r->n_sizes;
    if (k != nd)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (Resize): %s has %d values, input has %d dims", n->name,
                        r->n_scales > 0 ? "scales" : "sizes", k, nd);
    out->ndim = nd;
    for (int i = 0; i < nd; i++) {
        out->d[i] = r->n_scales > 0 ? (int64_t)floor((double)in[0].d[i] * r->scales[i]) : r->sizes[i];
        if (out->d[i] <= 0)
            return vbs_fail(err, VBS_ERR_SHAPE, "node '%s' (Resize): output size %lld on axis %d", n->name, (long long)out->d[i], i);
    }
    return VBS_OK;
}

/* Source coordinate of output index x on one axis. */
static double src_coord(const vbs_resize_attr *r, int axis, int64_t x, int64_t in, int64_t out) {
    double scale = r->n_scales > 0 ? r->scales[axis] : (double)out / (double)in;
    /* the spec's length_resized: in * scale unrounded when scales are given */
    double len = r->n_scales > 0 ? (double)in * scale : (double)out;
    switch (r->coord) {
    case VBS_CT_ASYMMETRIC: return x / scale;
    case VBS_CT_TF_HALF_PIXEL_FOR_NN: return (x + 0.5) / scale;
    case VBS_CT_ALIGN_CORNERS: return len <= 1 ? 0.0 : (double)x * (double)(in - 1) / (len - 1);
    case VBS_CT_PYTORCH_HALF_PIXEL: return out > 1 ? (x + 0.5) / scale - 0.5 : 0.0;
    default: return (x + 0.5) / scale - 0.5;
    }
}

static int64_t nearest_index(const vbs_resize_attr *r, double c, int64_t in) {
    int64_t i;
    double f = floor(c);
    switch (r->nearest) {
    case VBS_NEAREST_FLOOR: i = (int64_t)f; break;
    case VBS_NEAREST_CEIL: i = (int64_t)ceil(c); break;
    case VBS_NEAREST_ROUND_PREFER_CEIL: i = c - f == 0.5 ? (int64_t)f + 1 : (int64_t)floor(c + 0.5); break;
    default: i = c - f == 0.5 ? (int64_t)f : (int64_t)floor(c + 0.5); break;
    }
    return i < 0 ? 0 : (i >= in ? in - 1 : i);
}

/* Per axis: for each output index, two source indices and the weight of the second. */
typedef struct { int64_t *i0, *i1; float *w; } axis_map;

static void axis_build(const vbs_resize_attr *r, int axis, int64_t in, int64_t out, axis_map *m) {
    for (int64_t x = 0; x < out; x++) {
        double c = src_coord(r, axis, x, in, out);
        if (r->mode == VBS_RESIZE_NEAREST) {
            m->i0[x] = m->i1[x] = nearest_index(r, c, in);
            m->w[x] = 0.f;
            continue;
        }
        if (c < 0) c = 0;
        if (c > (double)(in - 1)) c = (double)(in - 1);
        int64_t f = (int64_t)floor(c);
        m->i0[x] = f;
        m->i1[x] = f + 1 < in ? f + 1 : f;
        m->w[x] = (float)(c - (double)f);
    }
}

/* Scratch: per axis 2 int64 + 1 float per output index. */
size_t vbs_resize_work(const vbs_node *n, const vbs_shape *in, const vbs_shape *out) {
    (void)n; (void)in;
    size_t s = 0;
    for (int i = 0; i < out->ndim; i++) s += (size_t)out->d[i] * 6;
    return s;
}

/* Lays the per-axis maps out in work and fills them; returns the number of
 * axes a linear resize interpolates along (in active[], ascending): the
 * others (and every axis in nearest mode) take one source index. */
static int resize_maps(const vbs_op_args *a, float *work, axis_map *m, int *active) {
    const vbs_shape *xs = a->xs[0], *ys = a->ys[0];
    int64_t *p = (int64_t *)work;
    int na = 0;
    for (int i = 0; i < ys->ndim; i++) {
        m[i].i0 = p; p += ys->d[i];
        m[i].i1 = p; p += ys->d[i];
        m[i].w = (float *)p; p = (int64_t *)((float *)p + ys->d[i] + (ys->d[i] & 1));
        axis_build(&a->node->a.resize, i, xs->d[i], ys->d[i], &m[i]);
        int trivial = xs->d[i] == ys->d[i];
        for (int64_t x = 0; trivial && x < ys->d[i]; x++) trivial = m[i].i0[x] == x && m[i].w[x] == 0.f;
        if (!trivial && a->node->a.resize.mode == VBS_RESIZE_LINEAR) active[na++] = i;
    }
    return na;
}

static void xstrides(const vbs_shape *xs, int64_t *xstr) {
    int64_t s = 1;
    for (int i = xs->ndim - 1; i >= 0; i--) { xstr[i] = s; s *= xs->d[i]; }
}

void vbs_resize_forward(const vbs_op_args *a) {
    const vbs_shape *ys = a->ys[0];
    int nd = ys->ndim;
    axis_map m[VBS_MAX_DIMS];
    int active[VBS_MAX_DIMS], na = resize_maps(a, a->work, m, active);
    int64_t xstr[VBS_MAX_DIMS];
    xstrides(a->xs[0], xstr);
    int64_t n = vbs_shape_numel(ys), idx[VBS_MAX_DIMS] = {0};
    for (int64_t e = 0; e < n; e++) {
        int64_t base = 0;
        for (int i = 0; i < nd; i++) base += m[i].i0[idx[i]] * xstr[i];
        float acc = 0.f;
        for (int corner = 0; corner < (1 << na); corner++) {
            int64_t off = base;
            float w = 1.f;
            for (int t = 0; t < na; t++) {
                int ax = active[t];
                float wx = m[ax].w[idx[ax]];
                if (corner >> t & 1) { off += (m[ax].i1[idx[ax]] - m[ax].i0[idx[ax]]) * xstr[ax]; w *= wx; }
                else w *= 1.f - wx;
            }
            acc += w * a->x[0][off];
        }
        a->y[0][e] = acc;
        for (int i = nd - 1; i >= 0; i--) {
            if (++idx[i] < ys->d[i]) break;
            idx[i] = 0;
        }
    }
}

void vbs_resize_backward(const vbs_grad_args *g) {
    const vbs_op_args *a = g->fwd;
    const vbs_shape *ys = a->ys[0];
    float *dx = g->dx[0];
    if (!dx) return;
    int nd = ys->ndim, last = nd - 1;
    axis_map m[VBS_MAX_DIMS];
    int active[VBS_MAX_DIMS], na = resize_maps(a, g->work, m, active);
    int lin_last = na > 0 && active[na - 1] == last, nouter = na - lin_last; /* active axes before the last */
    int64_t xstr[VBS_MAX_DIMS];
    xstrides(a->xs[0], xstr);
    int64_t wid = ys->d[last], rows = vbs_shape_numel(ys) / wid, idx[VBS_MAX_DIMS] = {0};
    const int64_t *i0 = m[last].i0, *i1 = m[last].i1;
    const float *wl = m[last].w;
    int64_t coff[1 << (VBS_MAX_DIMS - 1)];
    float cw[1 << (VBS_MAX_DIMS - 1)];
    for (int64_t r = 0; r < rows; r++) {
        /* this row's source corners over the outer axes: offsets and weights */
        int64_t base = 0;
        for (int i = 0; i < last; i++) base += m[i].i0[idx[i]] * xstr[i];
        for (int c = 0; c < (1 << nouter); c++) {
            coff[c] = base;
            cw[c] = 1.f;
            for (int t = 0; t < nouter; t++) {
                int ax = active[t];
                float wx = m[ax].w[idx[ax]];
                if (c >> t & 1) { coff[c] += (m[ax].i1[idx[ax]] - m[ax].i0[idx[ax]]) * xstr[ax]; cw[c] *= wx; }
                else cw[c] *= 1.f - wx;
            }
        }
        const float *gy = g->dy[0] + r * wid;
        for (int c = 0; c < (1 << nouter); c++) {
            float *d = dx + coff[c], w = cw[c];
            if (lin_last)
                for (int64_t x = 0; x < wid; x++) {
                    float v = w * gy[x];
                    d[i0[x]] += v * (1.f - wl[x]);
                    d[i1[x]] += v * wl[x];
                }
            else
                for (int64_t x = 0; x < wid; x++) d[i0[x]] += w * gy[x];
        }
        for (int i = last - 1; i >= 0; i--) {
            if (++idx[i] < ys->d[i]) break;
            idx[i] = 0;
        }
    }
}

/* Output element e's source corners from the spec's formulas in double:
 * per axis the lower and upper source index and the upper one's weight. */
static void naive_point(const vbs_op_args *a, int64_t e, int64_t *lo, int64_t *hi, double *w) {
    const vbs_resize_attr *r = &a->node->a.resize;
    const vbs_shape *xs = a->xs[0], *ys = a->ys[0];
    int64_t o[VBS_MAX_DIMS], rem = e;
    for (int i = ys->ndim - 1; i >= 0; i--) { o[i] = rem % ys->d[i]; rem /= ys->d[i]; }
    for (int i = 0; i < ys->ndim; i++) {
        double c = src_coord(r, i, o[i], xs->d[i], ys->d[i]);
        if (r->mode == VBS_RESIZE_NEAREST) { lo[i] = hi[i] = nearest_index(r, c, xs->d[i]); w[i] = 0; continue; }
        c = c < 0 ? 0 : (c > (double)(xs->d[i] - 1) ? (double)(xs->d[i] - 1) : c);
        lo[i] = (int64_t)floor(c);
        hi[i] = lo[i] + 1 < xs->d[i] ? lo[i] + 1 : lo[i];
        w[i] = c - (double)lo[i];
    }
}

/* Corner `corner` (bit i: upper index on axis i) of a point: its weight and source offset. */
static double naive_corner(const vbs_shape *xs, int corner, const int64_t *lo, const int64_t *hi, const double *w, int64_t *off) {
    double wt = 1;
    *off = 0;
    for (int i = 0; i < xs->ndim; i++) {
        int up = corner >> i & 1;
        wt *= up ? w[i] : 1 - w[i];
        *off = *off * xs->d[i] + (up ? hi[i] : lo[i]);
    }
    return wt;
}

void vbs_resize_forward_naive(const vbs_op_args *a) {
    const vbs_shape *xs = a->xs[0];
    int nd = xs->ndim;
    int64_t n = vbs_shape_numel(a->ys[0]), lo[VBS_MAX_DIMS], hi[VBS_MAX_DIMS], off;
    double w[VBS_MAX_DIMS];
    for (int64_t e = 0; e < n; e++) {
        naive_point(a, e, lo, hi, w);
        double acc = 0;
        for (int corner = 0; corner < (1 << nd); corner++) {
            double wt = naive_corner(xs, corner, lo, hi, w, &off);
            if (wt != 0) acc += wt * a->x[0][off];
        }
        a->y[0][e] = (float)acc;
    }
}

void vbs_resize_backward_naive(const vbs_grad_args *g) {
    const vbs_shape *xs = g->fwd->xs[0];
    int nd = xs->ndim;
    int64_t n = vbs_shape_numel(g->fwd->ys[0]), lo[VBS_MAX_DIMS], hi[VBS_MAX_DIMS], off;
    double w[VBS_MAX_DIMS];
    if (!g->dx[0]) return;
    for (int64_t e = 0; e < n; e++) {
        naive_point(g->fwd, e, lo, hi, w);
        for (int corner = 0; corner < (1 << nd); corner++) {
            double wt = naive_corner(xs, corner, lo, hi, w, &off);
            if (wt != 0) g->dx[0][off] += (float)(wt * g->dy[0][e]);
        }
    }
}
