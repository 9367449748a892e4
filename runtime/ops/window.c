/*
 * window.c: attribute parsing and output-size rules shared by the
 * sliding-window ops (Conv, ConvTranspose, MaxPool, AveragePool):
 * kernel_shape, strides, pads, dilations, auto_pad, ceil_mode, as the
 * ONNX operator spec defines them. Not a kernel.
 */
#include <string.h>

#include "../internal.h"

vbs_status vbs_window_parse(vbs_node *n, const vbs_node_def *d, int is_conv, char *err) {
    vbs_window_attr *w = &n->a.win;
    memset(w, 0, sizeof *w);
    int nk, ns, np, nd, nop, nos;
    vbs_status st;
    if ((st = vbs_attr_ints(d, "kernel_shape", VBS_MAX_SPATIAL, w->kernel, &nk, err))) return st;
    if ((st = vbs_attr_ints(d, "strides", VBS_MAX_SPATIAL, w->stride, &ns, err))) return st;
    if ((st = vbs_attr_ints(d, "pads", 2 * VBS_MAX_SPATIAL, w->pad, &np, err))) return st;
    if ((st = vbs_attr_ints(d, "dilations", VBS_MAX_SPATIAL, w->dil, &nd, err))) return st;
    if ((st = vbs_attr_ints(d, "output_padding", VBS_MAX_SPATIAL, w->out_pad, &nop, err))) return st;
    if ((st = vbs_attr_ints(d, "output_shape", VBS_MAX_SPATIAL, w->out_shape, &nos, err))) return st;
    int64_t v;
    if ((st = vbs_attr_int(d, "group", 1, &w->group, err))) return st;
    if ((st = vbs_attr_int(d, "ceil_mode", 0, &v, err))) return st;
    w->ceil_mode = v != 0;
    if ((st = vbs_attr_int(d, "count_include_pad", 0, &v, err))) return st;
    w->count_include_pad = v != 0;
    const char *ap = vbs_attr_string(d, "auto_pad", "NOTSET");
    if (!strcmp(ap, "NOTSET")) w->auto_pad = VBS_AUTOPAD_NOTSET;
    else if (!strcmp(ap, "SAME_UPPER")) w->auto_pad = VBS_AUTOPAD_SAME_UPPER;
    else if (!strcmp(ap, "SAME_LOWER")) w->auto_pad = VBS_AUTOPAD_SAME_LOWER;
    else if (!strcmp(ap, "VALID")) w->auto_pad = VBS_AUTOPAD_VALID;
    else return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): attribute 'auto_pad' has unknown value '%s'", d->name, d->op_type, ap);

    if (!is_conv && nk < 0)
        return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): missing required attribute 'kernel_shape'", d->name, d->op_type);
    w->has_kernel = nk > 0;
    w->nsp = nk > 0 ? nk : 0;
    /* every list must agree on the number of spatial dims */
    int nsp = w->nsp;
    const struct { const char *name; int n, mult; } lists[] = {
        {"strides", ns, 1}, {"pads", np, 2}, {"dilations", nd, 1}, {"output_padding", nop, 1}, {"output_shape", nos, 1}};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        if (lists[i].n < 0) continue;
        if (lists[i].n % lists[i].mult)
            return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): attribute '%s' needs %d values per spatial dim",
                            d->name, d->op_type, lists[i].name, lists[i].mult);
        int k = lists[i].n / lists[i].mult;
        if (nsp == 0) nsp = k;
        else if (k != nsp)
            return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): attribute '%s' has %d spatial dims, expected %d",
                            d->name, d->op_type, lists[i].name, k, nsp);
    }
    w->nsp = nsp;
    w->has_pads = np > 0;
    w->has_out_shape = nos > 0;
    for (int i = 0; i < VBS_MAX_SPATIAL; i++) {
        if (ns <= 0) w->stride[i] = 1;
        if (nd <= 0) w->dil[i] = 1;
        if (nop <= 0) w->out_pad[i] = 0;
    }
    if (np <= 0) memset(w->pad, 0, sizeof w->pad);
    else if (nsp < VBS_MAX_SPATIAL) {
        /* stored as begins then ends over VBS_MAX_SPATIAL slots */
        int64_t tmp[2 * VBS_MAX_SPATIAL] = {0};
        for (int i = 0; i < nsp; i++) { tmp[i] = w->pad[i]; tmp[VBS_MAX_SPATIAL + i] = w->pad[nsp + i]; }
        memcpy(w->pad, tmp, sizeof tmp);
    } else {
        /* already begins[3], ends[3] */
    }
    for (int i = 0; i < nsp; i++) {
        if (w->has_kernel && w->kernel[i] <= 0)
            return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): kernel_shape must be > 0", d->name, d->op_type);
        if (w->stride[i] <= 0)
            return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): strides must be > 0", d->name, d->op_type);
        if (w->dil[i] <= 0)
            return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): dilations must be > 0", d->name, d->op_type);
        if (w->pad[i] < 0 || w->pad[VBS_MAX_SPATIAL + i] < 0)
            return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): pads must be >= 0", d->name, d->op_type);
        if (w->out_pad[i] < 0)
            return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): output_padding must be >= 0", d->name, d->op_type);
        if (w->kernel[i] > (1 << 20) || w->stride[i] > (1 << 20) || w->dil[i] > (1 << 20) || w->pad[i] > (1 << 20) ||
            w->pad[VBS_MAX_SPATIAL + i] > (1 << 20) || w->out_pad[i] > (1 << 20))
            return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): window attribute too large", d->name, d->op_type);
    }
    if (w->group <= 0)
        return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): group must be > 0", d->name, d->op_type);
    return VBS_OK;
}

/* Output size of a forward window op along one axis; resolves SAME pads. */
vbs_status vbs_window_out(vbs_node *n, const vbs_shape *x, vbs_shape *y, int64_t cout, char *err) {
    vbs_window_attr *w = &n->a.win;
    int nsp = x->ndim - 2;
    if (nsp < 1 || nsp > VBS_MAX_SPATIAL)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s': input has %d dims, expected 3 to 5", n->name, x->ndim);
    if (w->nsp && w->nsp != nsp)
        return vbs_fail(err, VBS_ERR_SHAPE, "node '%s': attributes are %dD but the input is %dD", n->name, w->nsp, nsp);
    y->ndim = x->ndim;
    y->d[0] = x->d[0];
    y->d[1] = cout;
    for (int i = 0; i < nsp; i++) {
        int64_t in = x->d[2 + i], s = w->stride[i], keff = (w->kernel[i] - 1) * w->dil[i] + 1, out;
        int64_t *pb = &w->pad[i], *pe = &w->pad[VBS_MAX_SPATIAL + i];
        if (w->auto_pad == VBS_AUTOPAD_SAME_UPPER || w->auto_pad == VBS_AUTOPAD_SAME_LOWER) {
            out = (in + s - 1) / s;
            int64_t total = (out - 1) * s + keff - in;
            if (total < 0) total = 0;
            *pb = w->auto_pad == VBS_AUTOPAD_SAME_UPPER ? total / 2 : total - total / 2;
            *pe = total - *pb;
        } else {
            if (w->auto_pad == VBS_AUTOPAD_VALID) *pb = *pe = 0;
            int64_t span = in + *pb + *pe - keff;
            if (span < 0)
                return vbs_fail(err, VBS_ERR_SHAPE, "node '%s': window %lld larger than padded input %lld on axis %d",
                                n->name, (long long)keff, (long long)(in + *pb + *pe), 2 + i);
            out = w->ceil_mode ? (span + s - 1) / s + 1 : span / s + 1;
            /* the last window must start inside the input or its begin pad */
            if (w->ceil_mode && (out - 1) * s >= in + *pb) out--;
        }
        y->d[2 + i] = out;
    }
    w->nsp = nsp;
    return VBS_OK;
}
