/*
 * convert.c: `vbseg convert IN.onnx OUT.vbseg`: an ONNX model made
 * variational (MOPED by default), with an optional model card from JSON.
 * The output activation (inferred, or the card's checked against the
 * graph) is decided by the converter; this file only prints it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *help =
    "usage: vbseg convert IN.onnx OUT.vbseg [--sigma-init moped:DELTA | const:SIGMA | none] [--card FILE.json]\n"
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
    "disagree with it, are refused. The choice is printed.\n";

/* libvbseg's model card reader (runtime/json.c) */
int vbs_read_card_json(const char *path, vbs_card *card, char ***pool, int *npool, char *err, size_t errlen);

int cmd_convert(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *card_path = NULL;
    vbs_convert_opts o = vbs_convert_defaults();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(help, stdout); return 0; }
        if (!strcmp(a, "--sigma-init") || !strcmp(a, "--card")) {
            const char *v = cli_value("convert", argc, argv, &i);
            if (!v) return 2;
            if (!strcmp(a, "--card")) { card_path = v; continue; }
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
    if (!in || !out) { cli_error("convert", "IN.onnx and OUT.vbseg are required (see --help)"); return 2; }
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
    }
    vbs_model *m;
    if (vbs_convert_onnx(in, &o, &m)) cli_error("convert", "%s", vbs_model_errmsg(m));
    else if (vbs_model_save(m, out)) cli_error("convert", "%s", vbs_model_errmsg(m));
    else {
        vbs_model_stats s;
        vbs_model_get_stats(m, &s);
        printf("wrote %s: %d nodes, %lld parameters, %lld variational", out, s.n_nodes, (long long)s.n_params, (long long)s.n_variational);
        if (s.n_variational) printf(" (sigma %.3g .. %.3g)", s.sigma_min, s.sigma_max);
        char head[1024];
        cli_head_text(m, head, sizeof head);
        printf("\noutput activation: %s\n", head);
        rc = 0;
    }
    vbs_model_free(m);
out:
    for (int i = 0; i < npool; i++) free(pool[i]);
    free(pool);
    return rc;
}
