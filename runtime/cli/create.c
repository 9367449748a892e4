/*
 * create.c: `vbseg create`: an untrained variational U-Net, V-Net or
 * FCN-8s from the builders in models/, written as .vbseg.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "net.h"

static const char *help =
    "usage: vbseg create --arch unet|vnet|fcn --dims 2|3 --in-channels C --classes K --out M.vbseg\n"
    "                    [--base 16] [--depth D] [--norm instance|batch|none] [--hetero] [--latent 10] [--rho -5] [--seed S]\n"
    "                    [--patch 128x128x128] [--dropout P] [--deterministic]\n"
    "\n"
    "Writes an untrained variational network: He-initialised means, rho = --rho\n"
    "(sigma = softplus(rho)), a Gaussian prior N(0,1) recorded for the trainer.\n"
    "  --arch        unet: 3x3 conv blocks, max-pools, skip concatenation (depth = pools, default 4);\n"
    "                vnet: Milletari et al. 2016, residual stages of 5x5 convs, PReLU, stride-2 convs\n"
    "                (depth = down steps, default 4); fcn: FCN-8s, a VGG-like encoder and scores at\n"
    "                three scales (depth = pools, default 5, at least 3). Sizes must be multiples of\n"
    "                2^depth (vbseg run and infer pad to them).\n"
    "  --classes 1   one sigmoid output; K > 1: softmax over K classes\n"
    "  --norm        after each conv: instance (default, as nnU-Net), batch or none\n"
    "  --hetero      add a logit log-variance head (aleatoric/epistemic eq. 10-11 split)\n"
    "  --latent L    VAE-style latent of size L from the pooled bottleneck (default 10, as the\n"
    "                paper; 0: none)\n"
    "  --dropout P   MC dropout: a Dropout of ratio P (masks drawn in sample mode, the identity\n"
    "                in mean mode) after each block (unet) or stage (vnet) or, in fcn, after each\n"
    "                stage's pool and after fc6 and fc7 (FCN's drop6, drop7)\n"
    "  --patch       the card's slice size (2D, default 240x240) or sliding-window size\n"
    "                (3D, default 128x128x128, D x H x W) used by vbseg infer and run\n"
    "  --deterministic  plain weights (sigma = 0: no rho, no prior; the means' He initialisation):\n"
    "                the deterministic baseline of the same network; with --dropout P, pure MC\n"
    "                dropout. The latent's z is still drawn in sample mode\n";

int cmd_create(int argc, char **argv) {
    vbs_net_opts o = vbs_net_defaults(VBS_ARCH_UNET);
    const char *out = NULL, *arch = "unet";
    long long v;
    int depth = -1, rho_given = 0;
    o.latent = 10;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(help, stdout); return 0; }
        if (!strcmp(a, "--hetero")) { o.hetero = 1; continue; }
        if (!strcmp(a, "--deterministic")) { o.deterministic = 1; continue; }
        if (!(val = cli_value("create", argc, argv, &i))) return 2;
        if (!strcmp(a, "--arch")) arch = val;
        else if (!strcmp(a, "--out")) out = val;
        else if (!strcmp(a, "--norm")) {
            if (!strcmp(val, "instance")) o.norm = VBS_NET_NORM_INSTANCE;
            else if (!strcmp(val, "batch")) o.norm = VBS_NET_NORM_BATCH;
            else if (!strcmp(val, "none")) o.norm = VBS_NET_NORM_NONE;
            else { cli_error("create", "--norm must be instance, batch or none, not '%s'", val); return 2; }
        }
        else if (!strcmp(a, "--dims")) { if (!cli_int("create", a, val, 2, 3, &v)) return 2; o.dims = (int)v; }
        else if (!strcmp(a, "--in-channels")) { if (!cli_int("create", a, val, 1, 1024, &v)) return 2; o.in_channels = (int)v; }
        else if (!strcmp(a, "--classes")) { if (!cli_int("create", a, val, 1, 64, &v)) return 2; o.classes = (int)v; }
        else if (!strcmp(a, "--base")) { if (!cli_int("create", a, val, 1, 4096, &v)) return 2; o.base = (int)v; }
        else if (!strcmp(a, "--depth")) { if (!cli_int("create", a, val, 0, 8, &v)) return 2; depth = (int)v; }
        else if (!strcmp(a, "--latent")) { if (!cli_int("create", a, val, 0, 4096, &v)) return 2; o.latent = (int)v; }
        else if (!strcmp(a, "--seed")) { if (!cli_int("create", a, val, 0, 0x7fffffffffffffffLL, &v)) return 2; o.seed = (uint64_t)v; }
        else if (!strcmp(a, "--rho")) { double d; if (!cli_float("create", a, val, &d)) return 2; o.rho0 = (float)d; rho_given = 1; }
        else if (!strcmp(a, "--dropout")) {
            double d;
            if (!cli_float("create", a, val, &d)) return 2;
            if (!(d >= 0 && d < 1)) { cli_error("create", "--dropout %s is not in [0, 1)", val); return 2; }
            o.dropout = (float)d;
        }
        else if (!strcmp(a, "--patch")) {
            int64_t p[8];
            int n = cli_shape(val, p, 8);
            if (n < 2 || n > 3) { cli_error("create", "--patch '%s' is not like 128x128x128", val); return 2; }
            for (int k = 0; k < n; k++) {
                if (p[k] > 65536) { cli_error("create", "--patch size %lld is too large", (long long)p[k]); return 2; }
                o.patch[k] = p[k];
            }
        }
        else { cli_error("create", "unknown option '%s' (see --help)", a); return 2; }
    }
    if (o.deterministic && rho_given) { cli_error("create", "--rho sets the weights' sigma; --deterministic has none (sigma = 0)"); return 2; }
    if (o.patch[0] && (o.patch[2] ? 3 : 2) != o.dims) {
        cli_error("create", "--patch has %d sizes but --dims is %d", o.patch[2] ? 3 : 2, o.dims);
        return 2;
    }
    vbs_arch ar;
    if (!vbs_arch_parse(arch, &ar)) {
        cli_error("create", "--arch '%s' is not unet, vnet or fcn", arch);
        return 2;
    }
    o.depth = depth >= 0 ? depth : vbs_net_defaults(ar).depth;
    if (!out) { cli_error("create", "--out is required"); return 2; }
    char why[256];
    if (!vbs_net_check(ar, &o, why, sizeof why)) { cli_error("create", "%s", why); return 2; }
    /* counted before building: a build allocates and fills every float */
    double floats = vbs_net_floats(ar, &o), have = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (have > 0 && 4 * floats > 0.5 * have)
        return cli_error("create", "%s: this configuration has %.3g floats (%.1f GB), more than half of this machine's %.1f GB; use a smaller --base or --depth",
                         out, floats, 4 * floats / 1e9, have / 1e9);
    vbs_model *m;
    vbs_status st = vbs_net_build(ar, &o, &m);
    if (st) {
        cli_error("create", "%s", vbs_model_errmsg(m));
        vbs_model_free(m);
        return 1;
    }
    st = vbs_model_save(m, out);
    if (st) cli_error("create", "%s", vbs_model_errmsg(m));
    else printf("wrote %s\n", out);
    vbs_model_free(m);
    return st ? 1 : 0;
}
