/*
 * net.c: the families of models/ by name: defaults, the sizes each takes,
 * and one entry to build or size any of them. No graph is built here.
 */
#include <stdio.h>
#include <string.h>

#include "fcn.h"
#include "net.h"
#include "unet.h"
#include "vnet.h"

static const char *const names[] = {"unet", "vnet", "fcn"};

int vbs_arch_parse(const char *name, vbs_arch *a) {
    for (int i = 0; i < 3; i++)
        if (name && !strcmp(name, names[i])) { *a = (vbs_arch)i; return 1; }
    return 0;
}

const char *vbs_arch_name(vbs_arch a) { return a >= 0 && a <= VBS_ARCH_FCN ? names[a] : "?"; }

vbs_net_opts vbs_net_defaults(vbs_arch a) {
    vbs_net_opts o = vbs_unet_defaults();
    if (a == VBS_ARCH_FCN) o.depth = 5;
    return o;
}

int vbs_net_check(vbs_arch a, const vbs_net_opts *o, char *err, size_t n) {
    if (o->dims < 2 || o->dims > 3) { snprintf(err, n, "--dims must be 2 or 3"); return 0; }
    if (o->depth < 0 || o->depth > 8) { snprintf(err, n, "--depth must be 0..8"); return 0; }
    if (a == VBS_ARCH_FCN && o->depth < 3) {
        snprintf(err, n, "fcn needs --depth 3 or more (FCN-8s scores three scales: after the last three pools)");
        return 0;
    }
    for (int i = 0; i < o->dims; i++)
        if (o->patch[i] % ((int64_t)1 << o->depth)) {
            snprintf(err, n, "--patch size %lld is not a multiple of 2^%d = %lld, which %s of --depth %d takes", (long long)o->patch[i], o->depth,
                     1LL << o->depth, vbs_arch_name(a), o->depth);
            return 0;
        }
    if (o->base < 1 || (int64_t)o->base << o->depth > (1 << 16)) {
        snprintf(err, n, "--base %d with --depth %d is too wide", o->base, o->depth);
        return 0;
    }
    return 1;
}

vbs_status vbs_net_build(vbs_arch a, const vbs_net_opts *o, vbs_model **out) {
    return a == VBS_ARCH_VNET ? vbs_vnet_build(o, out) : a == VBS_ARCH_FCN ? vbs_fcn_build(o, out) : vbs_unet_build(o, out);
}

double vbs_net_floats(vbs_arch a, const vbs_net_opts *o) {
    return a == VBS_ARCH_VNET ? vbs_vnet_floats(o) : a == VBS_ARCH_FCN ? vbs_fcn_floats(o) : vbs_unet_floats(o);
}
