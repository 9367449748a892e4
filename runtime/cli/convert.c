/*
 * convert.c: `vbseg convert IN.onnx OUT.vbseg`: an ONNX model made
 * variational (MOPED by default), with an optional model card from JSON.
 * The output activation (inferred, or the card's checked against the
 * graph) is decided by the converter; this file only prints it.
 * `vbseg convert CKPT --graph TWIN.onnx|MODEL.vbseg OUT.vbseg`: a PyTorch or
 * safetensors checkpoint matched onto a graph (converters/twin.c does the
 * work; this file reads the checkpoint and prints the report).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../converters/twin.h"
#include "cli.h"

static const char *help =
    "usage: vbseg convert IN.onnx OUT.vbseg [--sigma-init moped:DELTA | const:SIGMA | none] [--card FILE.json]\n"
    "       vbseg convert CKPT --graph TWIN.onnx|MODEL.vbseg OUT.vbseg [--naming auto|bayesian-torch|blitz|torchbnn|plain]\n"
    "                     [--key KEY] [--prior normal:SIGMA] [--card FILE.json]\n"
    "\n"
    "Imports an ONNX model (the ops vbseg runs; anything else is refused by node,\n"
    "op and attribute) and makes the weights and biases of Conv, ConvTranspose and\n"
    "PRelu variational with mean = the ONNX weight and\n"
    "  moped:DELTA  sigma = DELTA * |w| (MOPED, Krishnan et al., AAAI 2020; default moped:0.1)\n"
    "  const:SIGMA  sigma = SIGMA everywhere\n"
    "  none         deterministic weights\n"
    "sigma is floored at 1e-6 so that rho stays finite where w = 0; the Gaussian\n"
    "prior N(0, 1) is recorded for the trainer. --card fills the model card from a\n"
    "JSON object with the fields channels, normalization, percentile, spatial_dims,\n"
    "patch, labels, label_convention, output_activation, heteroscedastic,\n"
    "training_data, epochs, seed, description, metrics, extra (see the README).\n"
    "\n"
    "The output activation is inferred from the graph unless the card gives it: a\n"
    "graph ending in Softmax over the channels or in Sigmoid outputs probabilities\n"
    "(none); raw logits get softmax over K > 1 channels, sigmoid for one. A card\n"
    "activation that contradicts the graph, or channel or label counts that\n"
    "disagree with it, are refused. The choice is printed.\n"
    "\n"
    "With --graph, CKPT (a torch.save zip, .pt/.pth/.bin, or a .safetensors file,\n"
    "told apart by content; --key picks a training checkpoint's entry) fills the\n"
    "weights of the graph: an ONNX export of the network's deterministic twin (mu\n"
    "as weights, exported with do_constant_folding=False) or a .vbseg model. Keys\n"
    "are read in the naming convention given or detected (auto):\n"
    "  bayesian-torch  P.mu_kernel/P.rho_kernel (conv), P.mu_weight/P.rho_weight, P.mu_bias/P.rho_bias\n"
    "  blitz           P.weight_mu/P.weight_rho, P.bias_mu/P.bias_rho\n"
    "  torchbnn        P.weight_mu/P.weight_log_sigma, P.bias_mu/P.bias_log_sigma (rho from sigma = exp(l))\n"
    "  plain           P.weight/P.weight.rho, P.bias/P.bias.rho (vbseg's own names)\n"
    "and matched to the graph's P.weight, P.bias (other keys by their own name),\n"
    "then by exact bytes. A mean with a spread makes its weight variational. The\n"
    "report lists the convention, the counts and the unmatched tensors of either\n"
    "side (the graph's keep their values). Refused: NaN/Inf in a mean or spread, a\n"
    "shape that differs, a Conv weight that matches nothing (Conv+BN fusion), a\n"
    "mean the graph lacks. --prior normal:SIGMA records the prior N(0, SIGMA^2);\n"
    "without it N(0, 1) is used and the card says \"prior\": \"unknown\".\n";

/* the checkpoint by content: a zip is PyTorch's, anything else safetensors */
static vbs_status read_ckpt(const char *path, const char *key, vbs_ckpt *c, char *err, size_t len, int *usage) {
    unsigned char head[4] = {0};
    FILE *f = fopen(path, "rb");
    size_t got = f ? fread(head, 1, 4, f) : 0;
    if (f) fclose(f);
    if (got == 4 && !memcmp(head, "PK\x03\x04", 4)) return vbs_ckpt_read_pytorch(path, key, c, err, len);
    if (key) {
        snprintf(err, len, "%s: --key applies to a PyTorch checkpoint (this is read as safetensors)", path);
        *usage = 1;
        return VBS_ERR_ARG;
    }
    return vbs_ckpt_read_safetensors(path, c, err, len);
}

static void list(const char *what, int n, const char *const *names) {
    printf("unmatched in the %s (%d)%s", what, n, n ? ":" : "");
    for (int i = 0; i < n; i++) printf("%s %s", i ? "," : "", names[i]);
    printf("\n");
}

static void print_written(vbs_model *m, const char *out) {
    vbs_model_stats s;
    vbs_model_get_stats(m, &s);
    printf("wrote %s: %d nodes, %lld parameters, %lld variational", out, s.n_nodes, (long long)s.n_params, (long long)s.n_variational);
    if (s.n_variational) printf(" (sigma %.3g .. %.3g)", s.sigma_min, s.sigma_max);
    char head[1024];
    cli_head_text(m, head, sizeof head);
    printf("\noutput activation: %s\n", head);
}

static int convert_ckpt(const char *ckpt, const char *graph, const char *out, const char *key, const vbs_twin_opts *o) {
    vbs_ckpt c = {0};
    char err[1024];
    int usage = 0, rc = 1;
    if (read_ckpt(ckpt, key, &c, err, sizeof err, &usage)) {
        cli_error("convert", "%s", err);
        return usage ? 2 : 1;
    }
    vbs_model *m;
    vbs_twin_report r;
    if (vbs_twin_convert(&c, ckpt, graph, o, &m, &r)) cli_error("convert", "%s", vbs_model_errmsg(m));
    else if (vbs_model_save(m, out)) cli_error("convert", "%s", vbs_model_errmsg(m));
    else {
        printf("naming: %s (%s)\n", vbs_naming_word(r.naming), r.detected ? "auto" : "--naming");
        printf("matched: %d by name, %d by bytes; %d variational; %d non-parameter key%s dropped\n", r.n_by_name, r.n_by_bytes,
               r.n_variational, r.n_dropped, r.n_dropped == 1 ? "" : "s");
        list("checkpoint", r.n_unmatched_ckpt, r.unmatched_ckpt);
        list("graph, kept as they are", r.n_unmatched_graph, r.unmatched_graph);
        print_written(m, out);
        rc = 0;
    }
    vbs_twin_report_free(&r);
    vbs_model_free(m);
    vbs_ckpt_free(&c);
    return rc;
}

/* libvbseg's model card reader (runtime/json.c) */
int vbs_read_card_json(const char *path, vbs_card *card, char ***pool, int *npool, char *err, size_t errlen);

int cmd_convert(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *card_path = NULL, *graph = NULL, *key = NULL, *naming = NULL, *sigma_init = NULL;
    vbs_convert_opts o = vbs_convert_defaults();
    vbs_twin_opts to = {VBS_NAMING_AUTO, 0, 1.0f, NULL};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(help, stdout); return 0; }
        if (!strcmp(a, "--graph") || !strcmp(a, "--naming") || !strcmp(a, "--key") || !strcmp(a, "--prior")) {
            const char *v = cli_value("convert", argc, argv, &i);
            if (!v) return 2;
            double d;
            if (!strcmp(a, "--graph")) graph = v;
            else if (!strcmp(a, "--key")) key = v;
            else if (!strcmp(a, "--naming")) {
                naming = v;
                if (!vbs_naming_parse(v, &to.naming)) {
                    cli_error("convert", "--naming '%s' is not auto, bayesian-torch, blitz, torchbnn or plain", v);
                    return 2;
                }
            } else if (!strncmp(v, "normal:", 7) && cli_float("convert", a, v + 7, &d) && d > 0 && d <= 1e3) {
                to.prior_given = 1;
                to.prior_sigma = (float)d;
            } else { cli_error("convert", "--prior '%s' is not normal:SIGMA (0 < SIGMA <= 1000)", v); return 2; }
            continue;
        }
        if (!strcmp(a, "--sigma-init") || !strcmp(a, "--card")) {
            const char *v = cli_value("convert", argc, argv, &i);
            if (!v) return 2;
            if (!strcmp(a, "--card")) { card_path = v; continue; }
            sigma_init = v;
            double d;
            if (!strcmp(v, "none")) o.sigma = VBS_SIGMA_NONE;
            else if (!strncmp(v, "moped:", 6) && cli_float("convert", a, v + 6, &d) && d > 0 && d <= 10) { o.sigma = VBS_SIGMA_MOPED; o.value = (float)d; }
            else if (!strncmp(v, "const:", 6) && cli_float("convert", a, v + 6, &d) && d > 0 && d <= 1e3) { o.sigma = VBS_SIGMA_CONST; o.value = (float)d; }
            else { cli_error("convert", "--sigma-init '%s' is not moped:DELTA (0 < DELTA <= 10), const:SIGMA (0 < SIGMA <= 1000) or none", v); return 2; }
            continue;
        }
        if (a[0] == '-') { cli_error("convert", "unknown option '%s' (see --help)", a); return 2; }
        if (!in) in = a;
        else if (!out) out = a;
        else { cli_error("convert", "too many arguments (see --help)"); return 2; }
    }
    if (!in || !out) { cli_error("convert", graph ? "CKPT and OUT.vbseg are required (see --help)" : "IN.onnx and OUT.vbseg are required (see --help)"); return 2; }
    if (graph && sigma_init) { cli_error("convert", "--sigma-init applies to IN.onnx alone (with --graph the checkpoint gives the spreads)"); return 2; }
    if (!graph && (naming || key || to.prior_given)) { cli_error("convert", "--naming, --key and --prior need --graph (see --help)"); return 2; }
    vbs_card card;
    char **pool = NULL, err[1024];
    int npool = 0, rc = 1;
    if (card_path) {
        memset(&card, 0, sizeof card);
        card.output_activation = VBS_ACT_AUTO; /* unless the card gives it */
        if (!vbs_read_card_json(card_path, &card, &pool, &npool, err, sizeof err)) {
            cli_error("convert", "%s", err);
            goto out;
        }
        o.card = &card;
        to.card = &card;
    }
    if (graph) {
        rc = convert_ckpt(in, graph, out, key, &to);
        goto out;
    }
    vbs_model *m;
    if (vbs_convert_onnx(in, &o, &m)) cli_error("convert", "%s", vbs_model_errmsg(m));
    else if (vbs_model_save(m, out)) cli_error("convert", "%s", vbs_model_errmsg(m));
    else {
        print_written(m, out);
        rc = 0;
    }
    vbs_model_free(m);
out:
    for (int i = 0; i < npool; i++) free(pool[i]);
    free(pool);
    return rc;
}
