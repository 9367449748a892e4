/*
 * test_twin.c: the naming conventions (converters/naming.c) on key lists,
 * against issue 11's table written out here key by key: every convention's
 * split (kind and graph tensor), its join back (the export's names), the
 * keys dropped, and auto-detection, with mixed conventions refused naming
 * one key of each. The matching itself is tested through the CLI against
 * PyTorch (twin.sh).
 */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "naming.h"

typedef struct {
    const char *key;
    int kind;
    const char *target;
} split_case;

static void check_split(vbs_naming n, const split_case *c, int count) {
    char t[256];
    for (int i = 0; i < count; i++) {
        int k = vbs_naming_split(n, c[i].key, t, sizeof t);
        CHECK(k == c[i].kind && !strcmp(t, c[i].target), "%s: '%s' -> kind %d '%s', want %d '%s'", vbs_naming_word(n), c[i].key, k, t,
              c[i].kind, c[i].target);
    }
}

/* join(name, variational, spread, conv) gives key, and split gives name back */
static void check_join(vbs_naming n, const char *name, int var, int spread, int conv, const char *key) {
    char k[256];
    int r = vbs_naming_join(n, name, var, spread, conv, k, sizeof k);
    if (key) CHECK(r == 0 && !strcmp(k, key), "%s join '%s' (var %d spread %d conv %d) -> %d '%s', want '%s'", vbs_naming_word(n), name, var,
                   spread, conv, r, r ? "" : k, key);
    else CHECK(r == -1, "%s join '%s' should be refused, gave '%s'", vbs_naming_word(n), name, k);
}

static int count_dropped(vbs_naming n, const char *const *keys, int count) {
    char t[256];
    int d = 0;
    for (int i = 0; i < count; i++) d += vbs_naming_split(n, keys[i], t, sizeof t) == VBS_KEY_DROPPED;
    return d;
}

static void check_detect(const char *const *keys, int n, int ok_want, vbs_naming want, const char *msg_has1, const char *msg_has2) {
    vbs_naming got = VBS_NAMING_AUTO;
    char err[512] = "";
    int ok = vbs_naming_detect(keys, n, &got, err, sizeof err);
    if (ok_want) CHECK(ok && got == want, "detect: %d %s, want %s (%s)", ok, vbs_naming_word(got), vbs_naming_word(want), err);
    else CHECK(!ok && strstr(err, msg_has1) && strstr(err, msg_has2), "detect should refuse naming '%s' and '%s': %d '%s'", msg_has1, msg_has2,
               ok, err);
}

#define N(a) ((int)(sizeof(a) / sizeof *(a)))

int main(void) {
    enum { P = VBS_KEY_PLAIN, M = VBS_KEY_MU, S = VBS_KEY_SPREAD, D = VBS_KEY_DROPPED };

    /* bayesian-torch: Conv*Reparameterization and LinearReparameterization */
    static const split_case bt[] = {
        {"enc1.conv.mu_kernel", M, "enc1.conv.weight"}, {"enc1.conv.rho_kernel", S, "enc1.conv.weight"},
        {"fc.mu_weight", M, "fc.weight"},               {"fc.rho_weight", S, "fc.weight"},
        {"enc1.conv.mu_bias", M, "enc1.conv.bias"},     {"enc1.conv.rho_bias", S, "enc1.conv.bias"},
        {"enc1.conv.eps_kernel", D, ""},                {"enc1.conv.eps_bias", D, ""},
        {"enc1.conv.prior_weight_mu", D, ""},           {"enc1.conv.prior_weight_sigma", D, ""},
        {"enc1.conv.prior_bias_mu", D, ""},             {"enc1.conv.prior_bias_sigma", D, ""},
        {"bn.weight", P, "bn.weight"},                  {"bn.running_var", P, "bn.running_var"},
        {"bn.num_batches_tracked", D, ""},              {"mu_kernel", M, "weight"},
        {"head.weight", P, "head.weight"},              {"head.weight_rho", P, "head.weight_rho"},
    };
    check_split(VBS_NAMING_BAYESIAN_TORCH, bt, N(bt));
    /* BLiTZ: BayesianConv2d and friends, with the samplers' aliases and the prior's tensors */
    static const split_case bl[] = {
        {"a.b.weight_mu", M, "a.b.weight"},      {"a.b.weight_rho", S, "a.b.weight"},   {"a.b.bias_mu", M, "a.b.bias"},
        {"a.b.bias_rho", S, "a.b.bias"},         {"a.b.weight_sampler.mu", D, ""},      {"a.b.weight_sampler.rho", D, ""},
        {"a.b.bias_sampler.mu", D, ""},          {"a.b.bias_sampler.rho", D, ""},       {"a.b.weight_prior_dist.mu", D, ""},
        {"a.b.bias_prior_dist.sigma", D, ""},    {"a.weight_samplers.mu", P, "a.weight_samplers.mu"},
        {"a.b.mu_kernel", P, "a.b.mu_kernel"},   {"n.num_batches_tracked", D, ""},     {"a.b.eps_w", P, "a.b.eps_w"},
    };
    check_split(VBS_NAMING_BLITZ, bl, N(bl));
    /* torchbnn: BayesConv2d, BayesLinear */
    static const split_case tb[] = {
        {"x.weight_mu", M, "x.weight"},      {"x.weight_log_sigma", S, "x.weight"}, {"x.bias_mu", M, "x.bias"},
        {"x.bias_log_sigma", S, "x.bias"},   {"x.weight_rho", P, "x.weight_rho"},    {"x.num_batches_tracked", D, ""},
    };
    check_split(VBS_NAMING_TORCHBNN, tb, N(tb));
    /* plain: vbseg's own names ("latent.rho.weight" is a module named rho, not a spread) */
    static const split_case pl[] = {
        {"enc1.conv.weight", P, "enc1.conv.weight"}, {"enc1.conv.weight.rho", S, "enc1.conv.weight"},
        {"enc1.conv.bias.rho", S, "enc1.conv.bias"}, {"latent.rho.weight", P, "latent.rho.weight"},
        {"latent.rho.weight.rho", S, "latent.rho.weight"}, {"rho", P, "rho"},
        {"bn.num_batches_tracked", D, ""},           {"x.mu_kernel", P, "x.mu_kernel"},
    };
    check_split(VBS_NAMING_PLAIN, pl, N(pl));
    char small[8];
    CHECK(vbs_naming_split(VBS_NAMING_PLAIN, "a.long.key.name", small, sizeof small) == -1, "a target that does not fit is refused");

    /* dropped keys counted */
    static const char *const btkeys[] = {"c.mu_kernel", "c.rho_kernel", "c.eps_kernel", "c.prior_weight_mu", "c.prior_weight_sigma",
                                         "c.mu_bias", "c.rho_bias", "c.eps_bias", "c.prior_bias_mu", "c.prior_bias_sigma",
                                         "bn.weight", "bn.num_batches_tracked"};
    CHECK(count_dropped(VBS_NAMING_BAYESIAN_TORCH, btkeys, N(btkeys)) == 7, "bayesian-torch drops 7 of these keys");
    static const char *const blkeys[] = {"c.weight_mu", "c.weight_rho", "c.weight_sampler.mu", "c.weight_sampler.rho", "c.bias_mu",
                                         "c.bias_rho", "c.bias_sampler.mu", "c.bias_sampler.rho", "c.weight_prior_dist.sigma1"};
    CHECK(count_dropped(VBS_NAMING_BLITZ, blkeys, N(blkeys)) == 5, "blitz drops 5 of these keys");

    /* join: the export's names */
    check_join(VBS_NAMING_BAYESIAN_TORCH, "enc1.conv.weight", 1, 0, 1, "enc1.conv.mu_kernel");
    check_join(VBS_NAMING_BAYESIAN_TORCH, "enc1.conv.weight", 1, 1, 1, "enc1.conv.rho_kernel");
    check_join(VBS_NAMING_BAYESIAN_TORCH, "fc.weight", 1, 0, 0, "fc.mu_weight");
    check_join(VBS_NAMING_BAYESIAN_TORCH, "fc.weight", 1, 1, 0, "fc.rho_weight");
    check_join(VBS_NAMING_BAYESIAN_TORCH, "enc1.conv.bias", 1, 0, 1, "enc1.conv.mu_bias");
    check_join(VBS_NAMING_BAYESIAN_TORCH, "enc1.conv.bias", 1, 1, 0, "enc1.conv.rho_bias");
    check_join(VBS_NAMING_BLITZ, "a.weight", 1, 0, 1, "a.weight_mu");
    check_join(VBS_NAMING_BLITZ, "a.weight", 1, 1, 1, "a.weight_rho");
    check_join(VBS_NAMING_BLITZ, "a.bias", 1, 1, 0, "a.bias_rho");
    check_join(VBS_NAMING_TORCHBNN, "a.weight", 1, 0, 0, "a.weight_mu");
    check_join(VBS_NAMING_TORCHBNN, "a.bias", 1, 1, 0, "a.bias_log_sigma");
    check_join(VBS_NAMING_PLAIN, "a.weight", 1, 0, 1, "a.weight");
    check_join(VBS_NAMING_PLAIN, "a.weight", 1, 1, 1, "a.weight.rho");
    check_join(VBS_NAMING_PLAIN, "latent.rho.bias", 1, 1, 0, "latent.rho.bias.rho");
    check_join(VBS_NAMING_BLITZ, "bn.running_mean", 0, 0, 0, "bn.running_mean");
    check_join(VBS_NAMING_BAYESIAN_TORCH, "weight", 1, 0, 1, "mu_kernel");
    /* not writable: a variational tensor not named P.weight / P.bias; a plain tensor that would read back as a mean */
    check_join(VBS_NAMING_BAYESIAN_TORCH, "onnx::Conv_12", 1, 0, 1, NULL);
    check_join(VBS_NAMING_TORCHBNN, "a.scale", 1, 1, 0, NULL);
    check_join(VBS_NAMING_BLITZ, "x.weight_mu", 0, 0, 0, NULL);
    check_join(VBS_NAMING_PLAIN, "x.rho", 0, 0, 0, NULL);
    check_join(VBS_NAMING_BAYESIAN_TORCH, "x.prior_scale", 0, 0, 0, NULL);

    /* detection */
    static const char *const k_bt[] = {"bn.weight", "c.mu_kernel", "c.rho_kernel", "c.eps_kernel"};
    check_detect(k_bt, N(k_bt), 1, VBS_NAMING_BAYESIAN_TORCH, "", "");
    static const char *const k_bl[] = {"c.weight_mu", "c.weight_rho", "c.weight_sampler.mu", "c.weight_sampler.rho"};
    check_detect(k_bl, N(k_bl), 1, VBS_NAMING_BLITZ, "", "");
    static const char *const k_tb[] = {"c.weight_mu", "c.weight_log_sigma", "bn.num_batches_tracked"};
    check_detect(k_tb, N(k_tb), 1, VBS_NAMING_TORCHBNN, "", "");
    static const char *const k_pl[] = {"c.weight", "c.weight.rho", "bn.running_mean"};
    check_detect(k_pl, N(k_pl), 1, VBS_NAMING_PLAIN, "", "");
    static const char *const k_none[] = {"c.weight", "c.bias"}; /* a deterministic state dict */
    check_detect(k_none, N(k_none), 1, VBS_NAMING_PLAIN, "", "");
    static const char *const k_mix1[] = {"a.mu_kernel", "a.rho_kernel", "b.weight_mu", "b.weight_rho"};
    check_detect(k_mix1, N(k_mix1), 0, VBS_NAMING_AUTO, "'a.mu_kernel' (bayesian-torch)", "'b.weight_rho' (blitz)");
    static const char *const k_mix2[] = {"a.weight_log_sigma", "b.weight.rho"};
    check_detect(k_mix2, N(k_mix2), 0, VBS_NAMING_AUTO, "'a.weight_log_sigma' (torchbnn)", "'b.weight.rho' (plain)");
    static const char *const k_mix3[] = {"a.bias_rho", "a.bias_log_sigma"};
    check_detect(k_mix3, N(k_mix3), 0, VBS_NAMING_AUTO, "(blitz)", "(torchbnn)");

    /* the words */
    vbs_naming n;
    CHECK(vbs_naming_parse("bayesian-torch", &n) && n == VBS_NAMING_BAYESIAN_TORCH, "parse bayesian-torch");
    CHECK(vbs_naming_parse("auto", &n) && n == VBS_NAMING_AUTO, "parse auto");
    CHECK(!vbs_naming_parse("Blitz", &n), "parse is exact");
    CHECK(!strcmp(vbs_naming_word(VBS_NAMING_TORCHBNN), "torchbnn"), "word");
    return finish("test_twin");
}
