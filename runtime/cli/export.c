/*
 * export.c: `vbseg export MODEL.vbseg OUT.onnx --mean|--sampling [--seed S]`: the model
 * as an ONNX graph for ONNX Runtime (converters/onnx_export.c does the work);
 * `vbseg export MODEL.vbseg OUT.safetensors [--naming N]`: its means and
 * spreads under a PyTorch library's names (converters/twin.c). Other
 * suffixes are a usage error naming it.
 */
#include <stdio.h>
#include <string.h>

#include "../../converters/twin.h"
#include "cli.h"

static const char *help =
    "usage: vbseg export MODEL.vbseg OUT.onnx --mean | --sampling [--seed S]\n"
    "       vbseg export MODEL.vbseg OUT.safetensors [--naming plain|bayesian-torch|blitz|torchbnn]\n"
    "\n"
    "Writes the model as ONNX (opset 17), atomically, with the model card in\n"
    "metadata_props (\"vbseg.card\": its JSON, which `vbseg convert --card` reads;\n"
    "\"vbseg.channels\", \"vbseg.labels\", ... readable keys). Input and output names\n"
    "and shapes are the model's, symbolic dims kept as dim_param.\n"
    "  --mean      the weight means; Dropout and the latent's z = mean as the identity:\n"
    "              what `vbseg run --mode mean` computes\n"
    "  --sampling  every ONNX Runtime run is one Monte-Carlo sample: each variational\n"
    "              weight w = mu + softplus(rho) * eps and the latent z = mean +\n"
    "              softplus(rho) * eps with eps from RandomNormalLike, and each Dropout\n"
    "              as a mask drawn with RandomUniformLike (ONNX Runtime's optimiser\n"
    "              removes Dropout nodes). The random numbers are ONNX Runtime's,\n"
    "              so a run matches vbseg's samples in distribution, not draw by draw.\n"
    "  --seed S    with --sampling: give every random node a seed of its own derived\n"
    "              from S, so each new ONNX Runtime session repeats the same sequence\n"
    "              of samples (successive runs in a session still differ). Without\n"
    "              it every session draws anew.\n"
    "The graph outputs what the model's graph outputs (logits for a softmax or\n"
    "sigmoid card): apply the card's output activation to get probabilities.\n"
    "\n"
    "OUT.safetensors: every variational weight's mean and spread and every plain\n"
    "tensor, F32, under the convention's names (default plain: P.weight and\n"
    "P.weight.rho; bayesian-torch: P.mu_kernel/P.rho_kernel for conv weights,\n"
    "P.mu_weight, P.mu_bias/P.rho_bias; blitz: P.weight_mu/P.weight_rho;\n"
    "torchbnn: P.weight_mu/P.weight_log_sigma with log sigma = log(softplus(rho))),\n"
    "the card's JSON in __metadata__[\"vbseg.card\"] and the convention in\n"
    "__metadata__[\"vbseg.naming\"]. `vbseg convert OUT.safetensors --graph\n"
    "MODEL.vbseg` reads it back.\n";

int cmd_export(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    int mode = -1;
    long long seed = -1;
    const char *naming = NULL;
    vbs_naming nm = VBS_NAMING_PLAIN;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(help, stdout); return 0; }
        if (!strcmp(a, "--mean") || !strcmp(a, "--sampling")) {
            int m = !strcmp(a, "--sampling") ? VBS_EXPORT_SAMPLING : VBS_EXPORT_MEAN;
            if (mode >= 0 && mode != m) { cli_error("export", "--mean and --sampling exclude each other"); return 2; }
            mode = m;
            continue;
        }
        if (!strcmp(a, "--seed")) {
            const char *v = cli_value("export", argc, argv, &i);
            if (!v || !cli_int("export", a, v, 0, 0x7fffffffffffffffLL, &seed)) return 2;
            continue;
        }
        if (!strcmp(a, "--naming")) {
            if (!(naming = cli_value("export", argc, argv, &i))) return 2;
            if (!vbs_naming_parse(naming, &nm) || nm == VBS_NAMING_AUTO) {
                cli_error("export", "--naming '%s' is not plain, bayesian-torch, blitz or torchbnn", naming);
                return 2;
            }
            continue;
        }
        if (a[0] == '-') { cli_error("export", "unknown option '%s' (see --help)", a); return 2; }
        if (!in) in = a;
        else if (!out) out = a;
        else { cli_error("export", "too many arguments (see --help)"); return 2; }
    }
    if (!in || !out) { cli_error("export", "MODEL.vbseg and OUT.onnx or OUT.safetensors are required (see --help)"); return 2; }
    if (cli_ends_with(out, ".safetensors")) {
        if (mode >= 0 || seed >= 0) { cli_error("export", "--mean, --sampling and --seed apply to OUT.onnx (a .safetensors holds mu and rho)"); return 2; }
        vbs_model *m;
        int rc = 1;
        if (vbs_model_load(in, &m)) cli_error("export", "%s", vbs_model_errmsg(m));
        else if (vbs_twin_export_safetensors(m, nm, out)) cli_error("export", "%s", vbs_model_errmsg(m));
        else {
            vbs_model_stats s;
            vbs_model_get_stats(m, &s);
            printf("wrote %s: %s naming, %lld parameters, %lld variational (mu and %s)\n", out, vbs_naming_word(nm), (long long)s.n_params,
                   (long long)s.n_variational, nm == VBS_NAMING_TORCHBNN ? "log sigma" : "rho");
            rc = 0;
        }
        vbs_model_free(m);
        return rc;
    }
    if (!cli_ends_with(out, ".onnx")) { cli_error("export", "%s: the output must end in .onnx or .safetensors", out); return 2; }
    if (naming) { cli_error("export", "--naming applies to OUT.safetensors, not .onnx"); return 2; }
    if (mode < 0) { cli_error("export", "say --mean or --sampling (see --help)"); return 2; }
    if (seed >= 0 && mode != VBS_EXPORT_SAMPLING) { cli_error("export", "--seed applies to --sampling only (the mean graph draws nothing)"); return 2; }
    vbs_export_opts eo = {.mode = (vbs_export_mode)mode, .seeded = seed >= 0, .seed = seed >= 0 ? (uint64_t)seed : 0};
    vbs_model *m;
    int rc = 1;
    if (vbs_model_load(in, &m)) cli_error("export", "%s", vbs_model_errmsg(m));
    else if (vbs_export_onnx(m, out, &eo)) cli_error("export", "%s", vbs_model_errmsg(m));
    else {
        vbs_stochasticity s;
        vbs_model_stochasticity(m, &s);
        printf("wrote %s: %s graph, opset 17", out, mode == VBS_EXPORT_SAMPLING ? "sampling" : "mean");
        if (mode == VBS_EXPORT_SAMPLING)
            printf(" (%lld variational weights, %d Dropout, %d latent sampled per run%s)", (long long)s.n_variational, s.n_dropout, s.n_latent,
                   seed >= 0 ? "; seeded" : "");
        printf("\n");
        rc = 0;
    }
    vbs_model_free(m);
    return rc;
}
