/*
 * info.c: `vbseg info MODEL [--json]`: graph summary, parameter counts,
 * sigma statistics, whether the weights are checksummed, and the model
 * card, as text or JSON; `vbseg info --verify MODEL` checks the file's
 * checksums and padding without building the graph.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "internal.h"

static const char *help =
    "usage: vbseg info MODEL [--json] [--shape 1x4x240x240]\n"
    "       vbseg info --verify MODEL\n"
    "\n"
    "Prints the op counts, graph inputs and outputs (symbolic dims by name), the\n"
    "mean and variational parameter counts, the FLOPs of one pass (Conv and\n"
    "ConvTranspose, 2 per multiply-add) at --shape or else at the card's patch\n"
    "size padded as vbseg run pads it, min/median/max of sigma = softplus(rho),\n"
    "what makes the Monte-Carlo samples differ (variational weights, dropout with\n"
    "its ratio, both, or none), and the model card: what the runtime does with\n"
    "output 0 (the output activation and whether vbseg convert inferred it) and\n"
    "'not set' for every empty field. The weights line says whether every tensor's\n"
    "CRC-32C was verified (format 1.2 and later) or the file has none (1.0, 1.1).\n"
    "\n"
    "--verify checks the file alone, building and running nothing: the preamble,\n"
    "the header CRC, every tensor's CRC-32C and that every padding byte is zero.\n"
    "It prints one line per problem (exit 1) or \"OK: N tensors verified\" (exit 0;\n"
    "a 1.0/1.1 file: its header and padding verified, its tensors not checksummed).\n";

/* what an empty card field says */
#define NOT_SET "not set (vbseg convert --card card.json sets it)"

static const char *norm_name(vbs_norm n) {
    return n == VBS_NORM_ZSCORE_NONZERO ? "zscore_nonzero" : n == VBS_NORM_PERCENTILE ? "percentile" : "none";
}
static const char *conv_name(vbs_label_convention c) {
    static const char *const n[] = {"custom", "brats2018", "brats2023", "msd"};
    return c >= 0 && c <= VBS_LABELS_MSD ? n[c] : "custom";
}
static const char *act_name(vbs_output_act a) {
    return a == VBS_ACT_SIGMOID ? "sigmoid" : a == VBS_ACT_NONE ? "none" : "softmax";
}

/* the value of the card's extra field `key`, or NULL */
static const char *extra(const vbs_card *c, const char *key) {
    for (int i = 0; i < c->n_extra; i++)
        if (c->extra[i].key && !strcmp(c->extra[i].key, key)) return c->extra[i].value;
    return NULL;
}

void cli_head_text(const vbs_model *m, char *buf, size_t len) {
    const vbs_card *c = vbs_model_card(m);
    vbs_value_info o;
    long long k = -1;
    if (vbs_model_n_outputs(m) > 0 && vbs_model_output(m, 0, &o) == VBS_OK && o.ndim >= 2 && o.dims[1] >= 0) k = o.dims[1];
    char ks[32];
    if (k >= 0) snprintf(ks, sizeof ks, "%lld", k);
    else snprintf(ks, sizeof ks, "K");
    int n;
    if (c->output_activation == VBS_ACT_SOFTMAX) n = snprintf(buf, len, "softmax over %s classes", ks);
    else if (c->output_activation == VBS_ACT_SIGMOID)
        n = k == 1 ? snprintf(buf, len, "sigmoid: one foreground probability, threshold 0.5")
                   : snprintf(buf, len, "sigmoid over %s channels, each its own binary class", ks);
    else
        n = k == 1 ? snprintf(buf, len, "none: the graph outputs one foreground probability, threshold 0.5")
                   : snprintf(buf, len, "none: the graph outputs the probabilities of %s classes", ks);
    const char *src = extra(c, "output_activation_source");
    if (n >= 0 && (size_t)n < len && src) n += snprintf(buf + n, len - (size_t)n, " (%s)", src);
    if (n >= 0 && (size_t)n < len && c->heteroscedastic) snprintf(buf + n, len - (size_t)n, ", heteroscedastic (logit mean + log-variance)");
}

/* "dropout (p=0.3, 2 nodes)", "both: variational weights and dropout (p=0.1..0.5, 3 nodes)", ... */
static void stochastic_text(const vbs_stochasticity *z, char *buf, size_t len) {
    char p[96] = "";
    if (z->n_dropout && z->dropout_min == z->dropout_max)
        snprintf(p, sizeof p, "dropout (p=%g, %d node%s)", z->dropout_min, z->n_dropout, z->n_dropout == 1 ? "" : "s");
    else if (z->n_dropout) snprintf(p, sizeof p, "dropout (p=%g..%g, %d nodes)", z->dropout_min, z->dropout_max, z->n_dropout);
    int none = !strcmp(z->kind, "none");
    int n = !strcmp(z->kind, "both") ? snprintf(buf, len, "both: variational weights and %s", p)
          : !strcmp(z->kind, "dropout") ? snprintf(buf, len, "%s", p)
          : none && !z->n_latent ? snprintf(buf, len, "none: every sample is the mean pass")
          /* plain weights, no dropout: the samples still differ, by z alone */
          : none ? snprintf(buf, len, "none in the weights and no dropout, but a GaussianSample latent: z drawn in sample mode, its mean in mean mode")
                 : snprintf(buf, len, "%s", z->kind);
    if (n >= 0 && (size_t)n < len && z->n_latent && !none) n += snprintf(buf + n, len - (size_t)n, ", with a GaussianSample latent");
    if (n >= 0 && (size_t)n < len && z->n_dropout) snprintf(buf + n, len - (size_t)n, "; masks drawn in sample mode, the identity in mean mode");
}

static void json_str(const char *s) {
    putchar('"');
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static void print_dims(const vbs_value_info *v, int json) {
    printf(json ? "[" : "(");
    for (int i = 0; i < v->ndim; i++) {
        if (i) printf(", ");
        if (v->dims[i] >= 0) printf("%lld", (long long)v->dims[i]);
        else if (json) json_str(v->dim_param[i]);
        else printf("%s", v->dim_param[i]);
    }
    printf(json ? "]" : ")");
}

/* graph inputs (outputs = 0) or outputs (1) as a JSON list of {name, shape} */
static void json_values(const vbs_model *m, int outputs) {
    int n = outputs ? vbs_model_n_outputs(m) : vbs_model_n_inputs(m);
    printf("[");
    for (int i = 0; i < n; i++) {
        vbs_value_info v;
        if (outputs) vbs_model_output(m, i, &v);
        else vbs_model_input(m, i, &v);
        printf("%s{\"name\": ", i ? ", " : "");
        json_str(v.name);
        printf(", \"shape\": ");
        print_dims(&v, 1);
        printf("}");
    }
    printf("]");
}

/* The FLOPs of one pass at shape (nd dims; 0: batch 1, the input's
 * channels and the card's patch, or 64, each padded up to the first multiple
 * of 1, 2, 4, ..., 128 the network takes, as vbseg run pads). 0 and a reason
 * in err when the network takes no such size. */
static int pass_flops(vbs_model *m, int64_t *shape, int *nd, double *flops, char *err, size_t n) {
    vbs_value_info in;
    if (vbs_model_n_inputs(m) != 1) { snprintf(err, n, "the graph has %d inputs; vbseg runs graphs of one", vbs_model_n_inputs(m)); return 0; }
    vbs_model_input(m, 0, &in);
    const vbs_card *c = vbs_model_card(m);
    int given = *nd > 0;
    if (!given) {
        *nd = in.ndim;
        for (int i = 0; i < in.ndim; i++) {
            int sp = i - (in.ndim - c->n_patch);
            shape[i] = in.dims[i] >= 0 ? in.dims[i] : i == 0 ? 1 : (sp >= 0 && i >= 2 && c->n_patch ? c->patch[sp] : 64);
        }
    }
    int64_t want[8];
    memcpy(want, shape, sizeof want);
    err[0] = 0;
    for (int64_t mult = 1; mult <= (given ? 1 : 128); mult *= 2) {
        vbs_shape sh = {*nd, {0}};
        for (int i = 0; i < *nd; i++)
            sh.d[i] = shape[i] = i < 2 || (in.ndim == *nd && in.dims[i] >= 0) ? want[i] : (want[i] + mult - 1) / mult * mult;
        vbs_plan p;
        char e[VBS_ERRLEN];
        if (vbs_plan_build(&p, &m->g, &sh, e)) { if (!err[0]) snprintf(err, n, "%s", e); continue; }
        /* as vbseg run: the network must give its output at the input's size */
        const vbs_shape *y = &p.shapes[m->g.output_vals[0]];
        int same = y->ndim == sh.ndim;
        for (int i = 2; same && i < sh.ndim; i++) same = y->d[i] == sh.d[i];
        *flops = p.flops;
        vbs_plan_free(&p);
        if (same) return 1;
        if (!err[0]) snprintf(err, n, "output '%s' is not the input's spatial size", m->def.outputs[0].name);
    }
    return 0;
}

static void report_line(void *user, const char *line) {
    (void)user;
    cli_error("info", "%s", line);
}

/* `vbseg info --verify MODEL` */
static int verify(const char *path) {
    char err[VBS_ERRLEN];
    int n, sums;
    if (vbs_format_verify_file(path, report_line, NULL, &n, &sums, err)) return 1;
    if (sums) printf("OK: %d tensor%s verified (CRC-32C), header CRC and padding verified\n", n, n == 1 ? "" : "s");
    else printf("OK: header CRC and padding verified; the %d tensors are not checksummed (format 1.1 or older)\n", n);
    return 0;
}

int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    int json = 0, nd = 0, check = 0;
    int64_t shape[8];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { fputs(help, stdout); return 0; }
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--verify")) check = 1;
        else if (!strcmp(argv[i], "--shape")) {
            if (i + 1 >= argc || (nd = cli_shape(argv[++i], shape, 8)) < 3) { cli_error("info", "--shape needs a size like 1x4x240x240"); return 2; }
        }
        else if (argv[i][0] == '-') { cli_error("info", "unknown option '%s'", argv[i]); return 2; }
        else if (!path) path = argv[i];
        else { cli_error("info", "one model at a time"); return 2; }
    }
    if (!path) { cli_error("info", "MODEL is required (see --help)"); return 2; }
    if (check && (json || nd)) { cli_error("info", "--verify takes no other option"); return 2; }
    if (check) return verify(path);
    vbs_model *m;
    if (vbs_model_load(path, &m)) {
        cli_error("info", "%s", vbs_model_errmsg(m));
        vbs_model_free(m);
        return 1;
    }
    vbs_model_stats s;
    vbs_model_get_stats(m, &s);
    vbs_stochasticity z;
    vbs_model_stochasticity(m, &z);
    double flops = 0;
    char ferr[1024];
    int given = nd > 0, have_flops = pass_flops(m, shape, &nd, &flops, ferr, sizeof ferr);
    if (given && !have_flops) {
        cli_error("info", "%s: --shape: %s", path, ferr);
        vbs_model_free(m);
        return 1;
    }
    const vbs_card *c = vbs_model_card(m);
    /* op counts in first-seen order */
    const char *ops[64];
    int counts[64], nops = 0;
    for (int i = 0; i < vbs_model_n_nodes(m); i++) {
        const char *op = vbs_model_node_op(m, i);
        int j = 0;
        while (j < nops && strcmp(ops[j], op)) j++;
        if (j == nops && nops < 64) { ops[nops] = op; counts[nops++] = 0; }
        if (j < 64) counts[j]++;
    }
    if (json) {
        printf("{\"file\": ");
        json_str(path);
        printf(", \"nodes\": %d, \"ops\": {", s.n_nodes);
        for (int j = 0; j < nops; j++) { printf("%s", j ? ", " : ""); json_str(ops[j]); printf(": %d", counts[j]); }
        printf("}, \"inputs\": ");
        json_values(m, 0);
        printf(", \"outputs\": ");
        json_values(m, 1);
        printf(", \"format\": \"%d.%d\", \"weights_checksummed\": %s", m->def.format_major, m->def.format_minor,
               m->def.checksummed ? "true" : "false");
        printf(", \"parameters\": %lld, \"variational_parameters\": %lld, ", (long long)s.n_params, (long long)s.n_variational);
        printf("\"flops\": ");
        if (have_flops) {
            printf("{\"per_pass\": %.17g, \"shape\": [", flops);
            for (int i = 0; i < nd; i++) printf("%s%lld", i ? ", " : "", (long long)shape[i]);
            printf("]}, ");
        } else printf("null, ");
        printf("\"sigma\": {\"min\": %.6g, \"median\": %.6g, \"max\": %.6g}, ", s.sigma_min, s.sigma_median, s.sigma_max);
        printf("\"stochasticity\": {\"kind\": \"%s\", \"dropout_nodes\": %d, \"dropout_ratio_min\": %.6g, \"dropout_ratio_max\": %.6g, "
               "\"latent\": %s}, ", z.kind, z.n_dropout, z.dropout_min, z.dropout_max, z.n_latent ? "true" : "false");
        printf("\"card\": {\"channels\": [");
        for (int i = 0; i < c->n_channels; i++) { printf("%s", i ? ", " : ""); json_str(c->channels[i]); }
        printf("], \"normalization\": \"%s\", \"spatial_dims\": %d, \"patch\": [", norm_name(c->normalization), c->spatial_dims);
        for (int i = 0; i < c->n_patch; i++) printf("%s%lld", i ? ", " : "", (long long)c->patch[i]);
        printf("], \"labels\": {");
        for (int i = 0; i < c->n_labels; i++) { printf("%s\"%d\": ", i ? ", " : "", c->labels[i].value); json_str(c->labels[i].name); }
        printf("}, \"label_convention\": \"%s\", \"heteroscedastic\": %s, \"output_activation\": \"%s\", \"output_activation_source\": ",
               conv_name(c->label_convention), c->heteroscedastic ? "true" : "false", act_name(c->output_activation));
        json_str(extra(c, "output_activation_source"));
        printf(", \"producer\": ");
        json_str(c->producer);
        printf(", \"producer_version\": ");
        json_str(c->producer_version);
        printf(", \"training_data\": ");
        json_str(c->training_data);
        printf(", \"epochs\": %d, \"seed\": %llu, \"metrics\": {", c->epochs, (unsigned long long)c->seed);
        for (int i = 0; i < c->n_metrics; i++) { printf("%s", i ? ", " : ""); json_str(c->metrics[i].name); printf(": %.6g", c->metrics[i].value); }
        printf("}, \"extra\": {");
        for (int i = 0; i < c->n_extra; i++) { printf("%s", i ? ", " : ""); json_str(c->extra[i].key); printf(": "); json_str(c->extra[i].value); }
        printf("}}}\n");
    } else {
        printf("model:        %s\n", path);
        printf("nodes:        %d (", s.n_nodes);
        for (int j = 0; j < nops; j++) printf("%s%s x%d", j ? ", " : "", ops[j], counts[j]);
        printf(")\n");
        for (int i = 0; i < vbs_model_n_inputs(m); i++) {
            vbs_value_info v;
            vbs_model_input(m, i, &v);
            printf("input:        %s ", v.name);
            print_dims(&v, 0);
            printf("\n");
        }
        for (int i = 0; i < vbs_model_n_outputs(m); i++) {
            vbs_value_info v;
            vbs_model_output(m, i, &v);
            printf("output:       %s ", v.name);
            print_dims(&v, 0);
            printf("\n");
        }
        if (m->def.checksummed) printf("weights:      CRC-32C verified (format %d.%d)\n", m->def.format_major, m->def.format_minor);
        else printf("weights:      not checksummed (format %d.%d; saving it again writes checksums)\n", m->def.format_major, m->def.format_minor);
        printf("parameters:   %lld mean, of which %lld variational (each with a rho)\n", (long long)s.n_params, (long long)s.n_variational);
        if (have_flops) {
            printf("flops:        %.4g GFLOP per pass at ", flops * 1e-9);
            for (int i = 0; i < nd; i++) printf("%s%lld", i ? "x" : "", (long long)shape[i]);
            printf(" (Conv and ConvTranspose, 2 per multiply-add)\n");
        } else printf("flops:        not computed: %s\n", ferr);
        if (s.n_variational)
            printf("sigma:        min %.4g, median %.4g, max %.4g  (softplus(rho))\n", s.sigma_min, s.sigma_median, s.sigma_max);
        vbs_prior_info pr;
        if (!vbs_model_prior(m, &pr))
            printf(pr.kind ? "prior:        scale mixture %.3g N(0, %.3g^2) + %.3g N(0, %.3g^2)\n" : "prior:        N(0, %.3g^2)\n",
                   pr.kind ? pr.pi : pr.sigma, pr.kind ? pr.sigma1 : 0, 1 - pr.pi, pr.sigma2);
        else if (s.n_variational) printf("prior:        differs between tensors\n");
        char zt[256];
        stochastic_text(&z, zt, sizeof zt);
        printf("stochastic:   %s\n", zt);
        int ep;
        int64_t st;
        if (vbs_model_checkpoint_state(m, &ep, &st))
            printf("checkpoint:   %d epoch%s, %lld steps done (vbseg train --resume %s continues it)\n", ep, ep == 1 ? "" : "s", (long long)st, path);
        printf("channels:     ");
        if (!c->n_channels) printf("%s", NOT_SET);
        for (int i = 0; i < c->n_channels; i++) printf("%s%s", i ? ", " : "", c->channels[i]);
        printf("\nnormalise:    %s\n", norm_name(c->normalization));
        printf("spatial dims: ");
        if (c->spatial_dims) printf("%d", c->spatial_dims);
        else printf("not set");
        printf(", patch ");
        if (!c->n_patch) printf("%s", NOT_SET);
        for (int i = 0; i < c->n_patch; i++) printf("%s%lld", i ? "x" : "", (long long)c->patch[i]);
        printf("\nlabels:       ");
        if (!c->n_labels) printf("not set: class indices are written (vbseg convert --card card.json sets values and names)");
        else printf("%s:", conv_name(c->label_convention));
        for (int i = 0; i < c->n_labels; i++) printf(" %d=%s", c->labels[i].value, c->labels[i].name);
        char head[1024];
        cli_head_text(m, head, sizeof head);
        printf("\nhead:         %s\n", head);
        const char *set[2] = {c->producer, c->training_data};
        for (int i = 0; i < 2; i++)
            if (!set[i] || !set[i][0]) set[i] = "not set";
        printf("producer:     %s %s\n", set[0], c->producer_version ? c->producer_version : "");
        printf("training:     data %s; epochs ", set[1]);
        if (c->epochs) printf("%d", c->epochs);
        else printf("not set");
        printf("; seed %llu\n", (unsigned long long)c->seed);
        if (!c->n_metrics) printf("metrics:      %s\n", NOT_SET);
        for (int i = 0; i < c->n_metrics; i++) printf("metric:       %s = %.4f\n", c->metrics[i].name, c->metrics[i].value);
        for (int i = 0; i < c->n_extra; i++)
            if (strcmp(c->extra[i].key, "output_activation_source")) printf("extra:        %s = %s\n", c->extra[i].key, c->extra[i].value);
        printf("description:  %s\n", c->description && c->description[0] ? c->description : NOT_SET);
    }
    vbs_model_free(m);
    return 0;
}
