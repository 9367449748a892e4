/*
 * create.c: `vbseg create`: an untrained variational U-Net from the
 * builders in models/, written as .vbseg.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "unet.h"

static const char *help =
    "usage: vbseg create --arch unet --dims 2|3 --in-channels C --classes K --out M.vbseg\n"
    "                    [--base 16] [--depth 4] [--norm instance|batch|none] [--hetero] [--latent L] [--rho -5] [--seed S]\n"
    "                    [--patch 128x128x128] [--dropout P]\n"
    "\n"
    "Writes an untrained variational U-Net: He-initialised means, rho = --rho\n"
    "(sigma = softplus(rho)), a Gaussian prior N(0,1) recorded for the trainer.\n"
    "  --classes 1   one sigmoid output; K > 1: softmax over K classes\n"
    "  --norm        after each 3x3 conv: instance (default, as nnU-Net), batch or none\n"
    "  --hetero      add a logit log-variance head (aleatoric/epistemic eq. 10-11 split)\n"
    "  --latent L    VAE-style latent of size L at the bottleneck (the paper uses 10)\n"
    "  --dropout P   a Dropout of ratio P after each block (MC dropout: masks drawn in\n"
    "                sample mode, the identity in mean mode)\n"
    "  --patch       the card's slice size (2D, default 240x240) or sliding-window size\n"
    "                (3D, default 128x128x128, D x H x W) used by vbseg infer and run\n";

int cmd_create(int argc, char **argv) {
    vbs_unet_opts o = vbs_unet_defaults();
    const char *out = NULL, *arch = "unet";
    long long v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(help, stdout); return 0; }
        if (!strcmp(a, "--hetero")) { o.hetero = 1; continue; }
        if (!(val = cli_value("create", argc, argv, &i))) return 2;
        if (!strcmp(a, "--arch")) arch = val;
        else if (!strcmp(a, "--out")) out = val;
        else if (!strcmp(a, "--norm")) {
            if (!strcmp(val, "instance")) o.norm = VBS_UNET_NORM_INSTANCE;
            else if (!strcmp(val, "batch")) o.norm = VBS_UNET_NORM_BATCH;
            else if (!strcmp(val, "none")) o.norm = VBS_UNET_NORM_NONE;
            else { cli_error("create", "--norm must be instance, batch or none, not '%s'", val); return 2; }
        }
        else if (!strcmp(a, "--dims")) { if (!cli_int("create", a, val, 2, 3, &v)) return 2; o.dims = (int)v; }
        else if (!strcmp(a, "--in-channels")) { if (!cli_int("create", a, val, 1, 1024, &v)) return 2; o.in_channels = (int)v; }
        else if (!strcmp(a, "--classes")) { if (!cli_int("create", a, val, 1, 64, &v)) return 2; o.classes = (int)v; }
        else if (!strcmp(a, "--base")) { if (!cli_int("create", a, val, 1, 4096, &v)) return 2; o.base = (int)v; }
        else if (!strcmp(a, "--depth")) { if (!cli_int("create", a, val, 0, 8, &v)) return 2; o.depth = (int)v; }
        else if (!strcmp(a, "--latent")) { if (!cli_int("create", a, val, 0, 4096, &v)) return 2; o.latent = (int)v; }
        else if (!strcmp(a, "--seed")) { if (!cli_int("create", a, val, 0, 0x7fffffffffffffffLL, &v)) return 2; o.seed = (uint64_t)v; }
        else if (!strcmp(a, "--rho")) { double d; if (!cli_float("create", a, val, &d)) return 2; o.rho0 = (float)d; }
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
    if (o.patch[0] && (o.patch[2] ? 3 : 2) != o.dims) {
        cli_error("create", "--patch has %d sizes but --dims is %d", o.patch[2] ? 3 : 2, o.dims);
        return 2;
    }
    if (strcmp(arch, "unet")) {
        cli_error("create", "--arch '%s' is not available (unet; V-Net and FCN are planned)", arch);
        return 2;
    }
    if (!out) { cli_error("create", "--out is required"); return 2; }
    if ((int64_t)o.base << o.depth > (1 << 16)) return cli_error("create", "--base %d with --depth %d is too wide", o.base, o.depth);
    vbs_model *m;
    vbs_status st = vbs_unet_build(&o, &m);
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
