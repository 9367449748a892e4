/*
 * attr.c: typed access to a node definition's attributes, with the
 * error messages every op's parse function shares ("node 'x' (Conv):
 * attribute 'strides' ..."). Not a kernel.
 */
#include <string.h>

#include "../internal.h"

const vbs_attr *vbs_attr_find(const vbs_node_def *d, const char *name) {
    for (int i = 0; i < d->n_attr; i++)
        if (strcmp(d->attr[i].name, name) == 0) return &d->attr[i];
    return NULL;
}

static vbs_status bad_type(const vbs_node_def *d, const vbs_attr *a, const char *want, char *err) {
    return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): attribute '%s' must be %s", d->name, d->op_type, a->name,
                    want);
}

vbs_status vbs_attr_int(const vbs_node_def *d, const char *name, int64_t dflt, int64_t *out, char *err) {
    const vbs_attr *a = vbs_attr_find(d, name);
    if (!a) { *out = dflt; return VBS_OK; }
    if (a->type != VBS_ATTR_INT) return bad_type(d, a, "an int", err);
    *out = a->i;
    return VBS_OK;
}

vbs_status vbs_attr_float(const vbs_node_def *d, const char *name, float dflt, float *out, char *err) {
    const vbs_attr *a = vbs_attr_find(d, name);
    if (!a) { *out = dflt; return VBS_OK; }
    if (a->type != VBS_ATTR_FLOAT) return bad_type(d, a, "a float", err);
    if (!(a->f == a->f) || a->f > 3.4e38f || a->f < -3.4e38f)
        return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): attribute '%s' is not finite", d->name, d->op_type,
                        name);
    *out = a->f;
    return VBS_OK;
}

vbs_status vbs_attr_ints(const vbs_node_def *d, const char *name, int maxn, int64_t *out, int *n, char *err) {
    const vbs_attr *a = vbs_attr_find(d, name);
    *n = -1;
    if (!a) return VBS_OK;
    if (a->type != VBS_ATTR_INTS) return bad_type(d, a, "a list of ints", err);
    if (a->n > maxn)
        return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): attribute '%s' has %d values, at most %d allowed",
                        d->name, d->op_type, name, a->n, maxn);
    memcpy(out, a->ints, sizeof(int64_t) * (size_t)a->n);
    *n = a->n;
    return VBS_OK;
}

vbs_status vbs_attr_floats(const vbs_node_def *d, const char *name, int maxn, float *out, int *n, char *err) {
    const vbs_attr *a = vbs_attr_find(d, name);
    *n = -1;
    if (!a) return VBS_OK;
    if (a->type != VBS_ATTR_FLOATS) return bad_type(d, a, "a list of floats", err);
    if (a->n > maxn)
        return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): attribute '%s' has %d values, at most %d allowed",
                        d->name, d->op_type, name, a->n, maxn);
    for (int i = 0; i < a->n; i++) {
        float f = a->floats[i];
        if (!(f == f) || f > 3.4e38f || f < -3.4e38f)
            return vbs_fail(err, VBS_ERR_GRAPH, "node '%s' (%s): attribute '%s' is not finite", d->name,
                            d->op_type, name);
        out[i] = f;
    }
    *n = a->n;
    return VBS_OK;
}

const char *vbs_attr_string(const vbs_node_def *d, const char *name, const char *dflt) {
    const vbs_attr *a = vbs_attr_find(d, name);
    return (a && a->type == VBS_ATTR_STRING) ? a->s : dflt;
}

vbs_status vbs_attr_check_known(const vbs_node_def *d, const char *const *known, char *err) {
    for (int i = 0; i < d->n_attr; i++) {
        int ok = 0;
        for (const char *const *k = known; *k && !ok; k++) ok = strcmp(*k, d->attr[i].name) == 0;
        if (!ok)
            return vbs_fail(err, VBS_ERR_UNSUPPORTED, "node '%s' (%s): unsupported attribute '%s'", d->name,
                            d->op_type, d->attr[i].name);
    }
    return VBS_OK;
}
