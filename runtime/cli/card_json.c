/*
 * card_json.c: reads a model card from a JSON file for `vbseg convert
 * --card`. A small strict JSON reader (objects, arrays, strings with
 * escapes, numbers, true/false/null; nesting limited to 16 levels) and
 * the mapping of its keys onto vbs_card. Unknown keys are refused so that
 * a typo does not pass silently. Strings live in the caller's pool.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;
typedef struct jval {
    jtype t;
    double num;
    char *str;
    int n;              /* items (arrays) or members (objects) */
    char **keys;        /* objects */
    struct jval *items;
} jval;

typedef struct { const char *p, *end; char err[256]; int depth; } jparser;

static void jfree(jval *v) {
    if (!v) return;
    free(v->str);
    for (int i = 0; i < v->n; i++) {
        if (v->keys) free(v->keys[i]);
        jfree(&v->items[i]);
    }
    free(v->keys);
    free(v->items);
}

static void ws(jparser *j) { while (j->p < j->end && strchr(" \t\r\n", *j->p)) j->p++; }

static int jerr(jparser *j, const char *msg) {
    if (!j->err[0]) snprintf(j->err, sizeof j->err, "%s", msg);
    return 0;
}

static int jstring(jparser *j, char **out) {
    if (j->p >= j->end || *j->p != '"') return jerr(j, "expected a string");
    j->p++;
    size_t cap = 32, n = 0;
    char *s = malloc(cap);
    while (s && j->p < j->end && *j->p != '"') {
        char c = *j->p++;
        if ((unsigned char)c < 0x20) { free(s); return jerr(j, "control character in a string"); }
        if (c == '\\') {
            if (j->p >= j->end) break;
            char e = *j->p++;
            c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == 'b' ? '\b' : e == 'f' ? '\f' : e;
            if (e == 'u') { free(s); return jerr(j, "\\u escapes are not supported in card strings"); }
            if (!strchr("\"\\/ntrbf", e)) { free(s); return jerr(j, "bad escape in a string"); }
        }
        if (n + 2 > cap) { char *t = realloc(s, cap *= 2); if (!t) { free(s); s = NULL; break; } s = t; }
        s[n++] = c;
    }
    if (!s) return jerr(j, "out of memory");
    if (j->p >= j->end) { free(s); return jerr(j, "unterminated string"); }
    j->p++;
    s[n] = 0;
    *out = s;
    return 1;
}

static int jvalue(jparser *j, jval *v) {
    memset(v, 0, sizeof *v);
    ws(j);
    if (j->p >= j->end) return jerr(j, "unexpected end of file");
    if (++j->depth > 16) return jerr(j, "nested deeper than 16 levels");
    int ok = 1;
    char c = *j->p;
    if (c == '"') { v->t = J_STR; ok = jstring(j, &v->str); }
    else if (c == '{' || c == '[') {
        int obj = c == '{';
        v->t = obj ? J_OBJ : J_ARR;
        j->p++;
        ws(j);
        if (j->p < j->end && *j->p == (obj ? '}' : ']')) j->p++;
        else
            for (;;) {
                jval *it = realloc(v->items, sizeof *it * (size_t)(v->n + 1));
                if (!it) return jerr(j, "out of memory");
                v->items = it;
                if (obj) {
                    char **k = realloc(v->keys, sizeof *k * (size_t)(v->n + 1));
                    if (!k) return jerr(j, "out of memory");
                    v->keys = k;
                    ws(j);
                    v->keys[v->n] = NULL;
                    if (!jstring(j, &v->keys[v->n])) { memset(&v->items[v->n++], 0, sizeof(jval)); return 0; }
                    ws(j);
                    if (j->p >= j->end || *j->p++ != ':') { memset(&v->items[v->n++], 0, sizeof(jval)); return jerr(j, "expected ':'"); }
                }
                if (!jvalue(j, &v->items[v->n++])) return 0;
                ws(j);
                if (j->p < j->end && *j->p == ',') { j->p++; continue; }
                if (j->p < j->end && *j->p == (obj ? '}' : ']')) { j->p++; break; }
                return jerr(j, obj ? "expected ',' or '}'" : "expected ',' or ']'");
            }
    } else if (!strncmp(j->p, "true", 4) || !strncmp(j->p, "false", 5)) {
        v->t = J_BOOL;
        v->num = *j->p == 't';
        j->p += *j->p == 't' ? 4 : 5;
    } else if (!strncmp(j->p, "null", 4)) { v->t = J_NULL; j->p += 4; }
    else {
        char *e;
        errno = 0;
        v->t = J_NUM;
        v->num = strtod(j->p, &e);
        if (e == j->p || errno || e > j->end) return jerr(j, "bad value");
        j->p = e;
    }
    j->depth--;
    return ok;
}

static const jval *member(const jval *o, const char *key) {
    for (int i = 0; i < o->n; i++)
        if (!strcmp(o->keys[i], key)) return &o->items[i];
    return NULL;
}

/* registers an allocation with the caller's pool (freed with the card) */
static void *pool_add(char ***pool, int *npool, void *x) {
    char **p = x ? realloc(*pool, sizeof *p * (size_t)(*npool + 1)) : NULL;
    if (!p) { free(x); return NULL; }
    *pool = p;
    p[(*npool)++] = x;
    return x;
}

static char *pool_dup(char ***pool, int *npool, const char *s) { return pool_add(pool, npool, strdup(s)); }

int cli_read_card(const char *path, vbs_card *card, char ***pool, int *npool, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) { snprintf(err, errlen, "%s: %s", path, strerror(errno)); return 0; }
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    int big = buf && fgetc(f) != EOF;
    fclose(f);
    if (!buf || big) { free(buf); snprintf(err, errlen, "%s: larger than 1 MiB", path); return 0; }
    jparser j = {buf, buf + n, "", 0};
    jval root;
    int ok = jvalue(&j, &root);
    ws(&j);
    if (ok && j.p != j.end) ok = jerr(&j, "trailing characters after the value");
    if (ok && root.t != J_OBJ) ok = jerr(&j, "the card must be a JSON object");
    if (!ok) {
        snprintf(err, errlen, "%s: invalid JSON at byte %ld: %s", path, (long)(j.p - buf), j.err);
        jfree(&root);
        free(buf);
        return 0;
    }
    static const char *const known[] = {"channels", "normalization", "percentile", "spatial_dims", "patch", "labels", "label_convention",
                                        "output_activation", "heteroscedastic", "training_data", "epochs", "seed", "description",
                                        "metrics", "extra", NULL};
    ok = 1;
    for (int i = 0; i < root.n && ok; i++) {
        int k = 0;
        while (known[k] && strcmp(known[k], root.keys[i])) k++;
        if (!known[k]) { snprintf(err, errlen, "%s: field '%s' is not a model card field", path, root.keys[i]); ok = 0; }
    }
    const jval *v;
#define BAD(field, what) do { snprintf(err, errlen, "%s: field '%s' must be %s", path, field, what); ok = 0; } while (0)
    if (ok && (v = member(&root, "channels"))) {
        if (v->t != J_ARR) BAD("channels", "a list of names");
        const char **ch = calloc((size_t)v->n + 1, sizeof *ch);
        if (!ch) { snprintf(err, errlen, "out of memory"); ok = 0; }
        for (int i = 0; ok && ch && i < v->n; i++) {
            if (v->items[i].t != J_STR) BAD("channels", "a list of names");
            else ch[i] = pool_dup(pool, npool, v->items[i].str);
        }
        pool_add(pool, npool, ch);
        card->channels = ch;
        card->n_channels = v->n;
    }
    if (ok && (v = member(&root, "normalization"))) {
        if (v->t != J_STR) BAD("normalization", "\"none\", \"zscore_nonzero\" or \"percentile\"");
        else if (!strcmp(v->str, "none")) card->normalization = VBS_NORM_NONE;
        else if (!strcmp(v->str, "zscore_nonzero")) card->normalization = VBS_NORM_ZSCORE_NONZERO;
        else if (!strcmp(v->str, "percentile")) card->normalization = VBS_NORM_PERCENTILE;
        else BAD("normalization", "\"none\", \"zscore_nonzero\" or \"percentile\"");
    }
    if (ok && (v = member(&root, "percentile"))) {
        if (v->t != J_ARR || v->n != 2 || v->items[0].t != J_NUM || v->items[1].t != J_NUM || v->items[0].num < 0 ||
            v->items[1].num > 100 || v->items[0].num >= v->items[1].num)
            BAD("percentile", "[low, high] with 0 <= low < high <= 100");
        else { card->percentile_lo = (float)v->items[0].num; card->percentile_hi = (float)v->items[1].num; }
    }
    if (ok && (v = member(&root, "spatial_dims"))) {
        if (v->t != J_NUM || (v->num != 2 && v->num != 3)) BAD("spatial_dims", "2 or 3");
        else card->spatial_dims = (int)v->num;
    }
    if (ok && (v = member(&root, "patch"))) {
        if (v->t != J_ARR || v->n < 1 || v->n > 3) BAD("patch", "a list of 1 to 3 sizes");
        int64_t *p = calloc(3, sizeof *p);
        if (!p) { snprintf(err, errlen, "out of memory"); ok = 0; }
        for (int i = 0; ok && p && i < v->n; i++) {
            if (v->items[i].t != J_NUM || v->items[i].num < 1 || v->items[i].num > 65536) BAD("patch", "sizes in 1..65536");
            else p[i] = (int64_t)v->items[i].num;
        }
        pool_add(pool, npool, p);
        card->patch = p;
        card->n_patch = v->n;
    }
    if (ok && (v = member(&root, "labels"))) {
        if (v->t != J_OBJ) BAD("labels", "an object {\"value\": \"name\"}");
        vbs_label *l = calloc((size_t)v->n + 1, sizeof *l);
        if (!l) { snprintf(err, errlen, "out of memory"); ok = 0; }
        for (int i = 0; ok && l && i < v->n; i++) {
            char *e;
            long val = strtol(v->keys[i], &e, 10);
            if (*e || e == v->keys[i] || val < 0 || val > 32767 || v->items[i].t != J_STR) BAD("labels", "an object {\"value\": \"name\"}");
            else { l[i].value = (int)val; l[i].name = pool_dup(pool, npool, v->items[i].str); }
        }
        pool_add(pool, npool, l);
        card->labels = l;
        card->n_labels = v->n;
    }
    if (ok && (v = member(&root, "label_convention"))) {
        static const char *const names[] = {"custom", "brats2018", "brats2023", "msd"};
        int k = 0;
        while (v->t == J_STR && k < 4 && strcmp(names[k], v->str)) k++;
        if (v->t != J_STR || k == 4) BAD("label_convention", "custom, brats2018, brats2023 or msd");
        else card->label_convention = (vbs_label_convention)k;
    }
    if (ok && (v = member(&root, "output_activation"))) {
        if (v->t == J_STR && !strcmp(v->str, "softmax")) card->output_activation = VBS_ACT_SOFTMAX;
        else if (v->t == J_STR && !strcmp(v->str, "sigmoid")) card->output_activation = VBS_ACT_SIGMOID;
        else if (v->t == J_STR && !strcmp(v->str, "none")) card->output_activation = VBS_ACT_NONE;
        else BAD("output_activation", "softmax, sigmoid or none");
    }
    if (ok && (v = member(&root, "heteroscedastic"))) {
        if (v->t != J_BOOL) BAD("heteroscedastic", "true or false");
        else card->heteroscedastic = v->num != 0;
    }
    const char *strs[] = {"training_data", "description"};
    const char **dst[] = {&card->training_data, &card->description};
    for (int i = 0; ok && i < 2; i++)
        if ((v = member(&root, strs[i]))) {
            if (v->t != J_STR) BAD(strs[i], "a string");
            else *dst[i] = pool_dup(pool, npool, v->str);
        }
    if (ok && (v = member(&root, "epochs"))) {
        if (v->t != J_NUM || v->num < 0 || v->num > 1e9) BAD("epochs", "a count");
        else card->epochs = (int)v->num;
    }
    if (ok && (v = member(&root, "seed"))) {
        if (v->t != J_NUM || v->num < 0) BAD("seed", "a non-negative integer");
        else card->seed = (uint64_t)v->num;
    }
    if (ok && (v = member(&root, "metrics"))) {
        if (v->t != J_OBJ) BAD("metrics", "an object {\"name\": number}");
        vbs_metric *mt = calloc((size_t)v->n + 1, sizeof *mt);
        if (!mt) { snprintf(err, errlen, "out of memory"); ok = 0; }
        for (int i = 0; ok && mt && i < v->n; i++) {
            if (v->items[i].t != J_NUM) BAD("metrics", "an object {\"name\": number}");
            else { mt[i].name = pool_dup(pool, npool, v->keys[i]); mt[i].value = v->items[i].num; }
        }
        pool_add(pool, npool, mt);
        card->metrics = mt;
        card->n_metrics = v->n;
    }
    if (ok && (v = member(&root, "extra"))) {
        if (v->t != J_OBJ) BAD("extra", "an object {\"key\": \"value\"}");
        vbs_kv *kv = calloc((size_t)v->n + 1, sizeof *kv);
        if (!kv) { snprintf(err, errlen, "out of memory"); ok = 0; }
        for (int i = 0; ok && kv && i < v->n; i++) {
            if (v->items[i].t != J_STR) BAD("extra", "an object {\"key\": \"value\"}");
            else { kv[i].key = pool_dup(pool, npool, v->keys[i]); kv[i].value = pool_dup(pool, npool, v->items[i].str); }
        }
        pool_add(pool, npool, kv);
        card->extra = kv;
        card->n_extra = v->n;
    }
#undef BAD
    jfree(&root);
    free(buf);
    return ok;
}
