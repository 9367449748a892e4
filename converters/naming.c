/*
 * naming.c: the checkpoint naming conventions (naming.h): detection, a key
 * split into (graph tensor, kind), a graph tensor joined back into a key.
 * Pure string work on the key's last component; it knows nothing of
 * shapes or values, and does not decide whether a plain-convention
 * "P.weight" is a mean (twin.c does, from whether "P.weight.rho" exists).
 */
#include <stdio.h>
#include <string.h>

#include "naming.h"

static const char *const words[] = {"auto", "plain", "bayesian-torch", "blitz", "torchbnn"};

int vbs_naming_parse(const char *word, vbs_naming *out) {
    for (int i = 0; i < (int)(sizeof words / sizeof *words); i++)
        if (!strcmp(word, words[i])) { *out = (vbs_naming)i; return 1; }
    return 0;
}

const char *vbs_naming_word(vbs_naming n) {
    return (unsigned)n < sizeof words / sizeof *words ? words[n] : "?";
}

/* One convention's suffixes: the last component of a key, which graph
 * tensor of the module it fills and whether it is the spread. */
typedef struct { const char *comp; int bias, spread; } suffix;

static const suffix bt[] = {{"mu_kernel", 0, 0}, {"rho_kernel", 0, 1}, {"mu_weight", 0, 0}, {"rho_weight", 0, 1},
                            {"mu_bias", 1, 0},   {"rho_bias", 1, 1},   {NULL, 0, 0}};
static const suffix blitz[] = {{"weight_mu", 0, 0}, {"weight_rho", 0, 1}, {"bias_mu", 1, 0}, {"bias_rho", 1, 1}, {NULL, 0, 0}};
static const suffix tbnn[] = {{"weight_mu", 0, 0}, {"weight_log_sigma", 0, 1}, {"bias_mu", 1, 0}, {"bias_log_sigma", 1, 1},
                              {NULL, 0, 0}};

static const suffix *table(vbs_naming n) {
    return n == VBS_NAMING_BAYESIAN_TORCH ? bt : n == VBS_NAMING_BLITZ ? blitz : n == VBS_NAMING_TORCHBNN ? tbnn : NULL;
}

/* the key's last component (after the last dot) */
static const char *last(const char *key) {
    const char *d = strrchr(key, '.');
    return d ? d + 1 : key;
}

/* BLiTZ's sub-modules holding aliases of the parameters and the prior's
 * own tensors: a key with one of them as an inner component is no parameter */
static int blitz_alias(const char *key) {
    static const char *const inner[] = {"weight_sampler", "bias_sampler", "weight_prior_dist", "bias_prior_dist"};
    const char *end = last(key);
    for (const char *p = key; p < end;) {
        const char *d = strchr(p, '.');
        if (!d || d >= end) break;
        for (int i = 0; i < 4; i++)
            if ((size_t)(d - p) == strlen(inner[i]) && !strncmp(p, inner[i], (size_t)(d - p))) return 1;
        p = d + 1;
    }
    return 0;
}

static int put(char *dst, size_t len, const char *a, size_t alen, const char *b) {
    int k = snprintf(dst, len, "%.*s%s", (int)alen, a, b);
    return k >= 0 && (size_t)k < len ? 0 : -1;
}

int vbs_naming_split(vbs_naming n, const char *key, char *target, size_t len) {
    const char *comp = last(key);
    size_t plen = (size_t)(comp - key); /* the module path with its trailing dot, or 0 */
    if (len) target[0] = 0;
    if (!strcmp(comp, "num_batches_tracked")) return VBS_KEY_DROPPED;
    if (n == VBS_NAMING_BAYESIAN_TORCH && (!strncmp(comp, "eps_", 4) || !strncmp(comp, "prior_", 6))) return VBS_KEY_DROPPED;
    if (n == VBS_NAMING_BLITZ && blitz_alias(key)) return VBS_KEY_DROPPED;
    if (n == VBS_NAMING_PLAIN && !strcmp(comp, "rho") && plen > 1)
        return put(target, len, key, plen - 1, "") ? -1 : VBS_KEY_SPREAD;
    const suffix *t = table(n);
    for (int i = 0; t && t[i].comp; i++)
        if (!strcmp(comp, t[i].comp))
            return put(target, len, key, plen, t[i].bias ? "bias" : "weight") ? -1 : t[i].spread ? VBS_KEY_SPREAD : VBS_KEY_MU;
    return put(target, len, key, strlen(key), "") ? -1 : VBS_KEY_PLAIN;
}

int vbs_naming_join(vbs_naming n, const char *name, int variational, int spread, int conv, char *key, size_t len) {
    int want = VBS_KEY_PLAIN;
    if (!variational) {
        if (put(key, len, name, strlen(name), "")) return -1;
    } else if (n == VBS_NAMING_PLAIN) {
        if (put(key, len, name, strlen(name), spread ? ".rho" : "")) return -1;
        want = spread ? VBS_KEY_SPREAD : VBS_KEY_PLAIN;
    } else {
        const char *comp = last(name);
        size_t plen = (size_t)(comp - name);
        int bias = !strcmp(comp, "bias");
        if (!table(n) || (!bias && strcmp(comp, "weight"))) return -1;
        const suffix *t = table(n), *s = NULL;
        for (int i = 0; t[i].comp && !s; i++)
            if (t[i].bias == bias && t[i].spread == spread && (n != VBS_NAMING_BAYESIAN_TORCH || bias || !strstr(t[i].comp, "kernel") == !conv))
                s = &t[i];
        if (!s || put(key, len, name, plen, s->comp)) return -1;
        want = spread ? VBS_KEY_SPREAD : VBS_KEY_MU;
    }
    /* the key must read back as the same tensor and kind */
    char back[1024];
    return vbs_naming_split(n, key, back, sizeof back) == want && !strcmp(back, name) ? 0 : -1;
}

int vbs_naming_detect(const char *const *keys, int n, vbs_naming *out, char *err, size_t errlen) {
    const char *first[5] = {0};
    for (int i = 0; i < n; i++) {
        const char *comp = last(keys[i]);
        vbs_naming c = VBS_NAMING_AUTO;
        if (blitz_alias(keys[i])) continue; /* its "...sampler.rho" is no plain spread */
        for (const suffix *s = bt; s->comp && !c; s++) if (!strcmp(comp, s->comp)) c = VBS_NAMING_BAYESIAN_TORCH;
        if (!strcmp(comp, "weight_rho") || !strcmp(comp, "bias_rho")) c = VBS_NAMING_BLITZ;
        if (!strcmp(comp, "weight_log_sigma") || !strcmp(comp, "bias_log_sigma")) c = VBS_NAMING_TORCHBNN;
        if (!strcmp(comp, "rho") && comp != keys[i]) c = VBS_NAMING_PLAIN;
        if (!c || first[c]) continue;
        first[c] = keys[i];
        for (int o = 1; o < 5; o++)
            if (o != (int)c && first[o]) {
                snprintf(err, errlen, "keys of two naming conventions: '%s' (%s) and '%s' (%s); say which with --naming",
                         first[o], words[o], keys[i], words[c]);
                return 0;
            }
    }
    *out = VBS_NAMING_PLAIN;
    for (int o = 2; o < 5; o++)
        if (first[o]) *out = (vbs_naming)o;
    return 1;
}
