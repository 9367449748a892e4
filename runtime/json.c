/*
 * json.c: the JSON files vbseg reads, through Debian's libjansson (the one
 * file that includes it), always with JSON_REJECT_DUPLICATES: a key given
 * twice is an error, never a silent choice. Today: the dataset.json of
 * nnU-Net (v2: "channel_names" {"0": "T2"}, "labels" {"background": 0},
 * "file_ending") and of the Medical Segmentation Decathlon / nnU-Net v1
 * ("modality" {"0": "FLAIR"}, "labels" {"0": "background"}), and model
 * cards (`vbseg convert --card`), whose unknown fields are refused so that a
 * typo does not pass silently. Every refusal names the file and the field.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cases.h"
#include "internal.h"

static int bad(char *err, size_t n, const char *path, const char *field, const char *what) {
    snprintf(err, n, "%s: field '%s' %s", path, field, what);
    return 0;
}

/* "0", "1", ... -> index; -1 if the key is not a small non-negative integer */
static int index_key(const char *k) {
    char *e;
    errno = 0;
    long v = strtol(k, &e, 10);
    return *k && !*e && !errno && v >= 0 && v < 1000000 ? (int)v : -1;
}

static int cmp_label(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

int vbs_read_dataset_json(const char *path, vbs_dataset_meta *meta, char *file_ending, size_t fe_len, char *err, size_t errlen) {
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    memset(meta, 0, sizeof *meta);
    if (file_ending && fe_len) snprintf(file_ending, fe_len, ".nii.gz");
    if (!root) {
        snprintf(err, errlen, "%s: line %d: %s", path, je.line, je.text);
        return 0;
    }
    int ok = 1;
    if (!json_is_object(root)) { ok = bad(err, errlen, path, "(top level)", "must be an object"); goto done; }
    const char *key;
    json_t *v;
    /* channels: v2 channel_names, or v1 modality; {"index": "name"} */
    const char *chk = json_object_get(root, "channel_names") ? "channel_names" : "modality";
    json_t *ch = json_object_get(root, chk);
    if (ch) {
        if (!json_is_object(ch)) { ok = bad(err, errlen, path, chk, "must be an object {\"0\": \"name\"}"); goto done; }
        int n = (int)json_object_size(ch);
        if (n < 1 || n > VBS_MAX_CHANNELS) { ok = bad(err, errlen, path, chk, "must list 1 to 16 channels"); goto done; }
        char seen[VBS_MAX_CHANNELS] = {0};
        json_object_foreach(ch, key, v) {
            int i = index_key(key);
            if (i < 0 || i >= n || seen[i] || !json_is_string(v)) {
                ok = bad(err, errlen, path, chk, "must map the indices 0..N-1 to channel names");
                goto done;
            }
            seen[i] = 1;
            snprintf(meta->channel[i], sizeof meta->channel[i], "%s", json_string_value(v));
        }
        meta->n_channels = n;
    }
    json_t *lab = json_object_get(root, "labels");
    if (lab) {
        if (!json_is_object(lab)) { ok = bad(err, errlen, path, "labels", "must be an object"); goto done; }
        int n = (int)json_object_size(lab);
        if (n < 1 || n > VBS_MAX_LABELS) { ok = bad(err, errlen, path, "labels", "must list 1 to 64 labels"); goto done; }
        struct { int value; char name[64]; } l[VBS_MAX_LABELS];
        int k = 0;
        json_object_foreach(lab, key, v) {
            int value;
            const char *name;
            if (json_is_integer(v)) { value = (int)json_integer_value(v); name = key; }             /* v2: name -> value */
            else if (json_is_string(v) && index_key(key) >= 0) { value = index_key(key); name = json_string_value(v); } /* v1 */
            else if (json_is_array(v)) {
                ok = bad(err, errlen, path, "labels", "holds a region (a list of values): region-based training is not supported");
                goto done;
            } else { ok = bad(err, errlen, path, "labels", "must map names to integer values (or values to names)"); goto done; }
            if (value < 0 || value > 255) { ok = bad(err, errlen, path, "labels", "has a value outside 0..255"); goto done; }
            for (int j = 0; j < k; j++)
                if (l[j].value == value) { ok = bad(err, errlen, path, "labels", "gives one value two names"); goto done; }
            l[k].value = value;
            snprintf(l[k].name, sizeof l[k].name, "%s", name);
            k++;
        }
        qsort(l, (size_t)k, sizeof l[0], cmp_label);
        if (l[0].value != 0) { ok = bad(err, errlen, path, "labels", "must include the background, value 0"); goto done; }
        for (int j = 0; j < k; j++) {
            meta->label_value[j] = l[j].value;
            snprintf(meta->label_name[j], sizeof meta->label_name[j], "%s", l[j].name);
        }
        meta->n_labels = k;
    }
    json_t *fe = json_object_get(root, "file_ending");
    if (fe) {
        if (!json_is_string(fe) || (strcmp(json_string_value(fe), ".nii.gz") && strcmp(json_string_value(fe), ".nii"))) {
            ok = bad(err, errlen, path, "file_ending", "must be \".nii.gz\" or \".nii\" (the formats vbseg reads)");
            goto done;
        }
        if (file_ending && fe_len) snprintf(file_ending, fe_len, "%s", json_string_value(fe));
    }
    json_t *name = json_object_get(root, "name");
    if (!name) name = json_object_get(root, "dataset_name");
    if (name && json_is_string(name)) snprintf(meta->name, sizeof meta->name, "%s", json_string_value(name));
    meta->from_json = 1;
done:
    json_decref(root);
    return ok;
}

/* ---- model cards (vbseg convert --card) ------------------------------------ */

/* registers an allocation with the caller's pool (freed with the card) */
static void *pool_add(char ***pool, int *npool, void *x) {
    char **p = x ? realloc(*pool, sizeof *p * (size_t)(*npool + 1)) : NULL;
    if (!p) { free(x); return NULL; }
    *pool = p;
    p[(*npool)++] = x;
    return x;
}

static char *pool_dup(char ***pool, int *npool, const char *s) { return pool_add(pool, npool, strdup(s)); }

/* a card field as one of names[] (n of them); -1 if it is not */
static int one_of(json_t *v, const char *const *names, int n) {
    for (int k = 0; json_is_string(v) && k < n; k++)
        if (!strcmp(json_string_value(v), names[k])) return k;
    return -1;
}

int vbs_read_card_json(const char *path, vbs_card *card, char ***pool, int *npool, char *err, size_t errlen) {
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        if (je.position == 0 && je.line <= 0) snprintf(err, errlen, "%s: %s", path, je.text);
        else snprintf(err, errlen, "%s: invalid JSON at line %d, column %d: %s", path, je.line, je.column, je.text);
        return 0;
    }
    int ok = 1;
    const char *key;
    json_t *v;
#define BAD(field, what) do { snprintf(err, errlen, "%s: field '%s' must be %s", path, field, what); ok = 0; goto done; } while (0)
#define OOM() do { snprintf(err, errlen, "%s: out of memory", path); ok = 0; goto done; } while (0)
    if (!json_is_object(root)) { snprintf(err, errlen, "%s: the card must be a JSON object", path); ok = 0; goto done; }
    static const char *const known[] = {"channels", "normalization", "percentile", "spatial_dims", "patch", "labels", "label_convention",
                                        "output_activation", "heteroscedastic", "training_data", "epochs", "seed", "description",
                                        "metrics", "extra", NULL};
    json_object_foreach(root, key, v) {
        int k = 0;
        while (known[k] && strcmp(known[k], key)) k++;
        if (!known[k]) { snprintf(err, errlen, "%s: field '%s' is not a model card field", path, key); ok = 0; goto done; }
    }
    if ((v = json_object_get(root, "channels"))) {
        if (!json_is_array(v) || json_array_size(v) > 1024) BAD("channels", "a list of names");
        size_t n = json_array_size(v);
        const char **ch = pool_add(pool, npool, calloc(n + 1, sizeof *ch));
        if (!ch) OOM();
        for (size_t i = 0; i < n; i++) {
            json_t *it = json_array_get(v, i);
            if (!json_is_string(it)) BAD("channels", "a list of names");
            if (!(ch[i] = pool_dup(pool, npool, json_string_value(it)))) OOM();
        }
        card->channels = ch;
        card->n_channels = (int)n;
    }
    if ((v = json_object_get(root, "normalization"))) {
        static const char *const names[] = {"none", "zscore_nonzero", "percentile"};
        int k = one_of(v, names, 3);
        if (k < 0) BAD("normalization", "\"none\", \"zscore_nonzero\" or \"percentile\"");
        card->normalization = (vbs_norm)k;
    }
    if ((v = json_object_get(root, "percentile"))) {
        json_t *lo = json_array_get(v, 0), *hi = json_array_get(v, 1);
        if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_number(lo) || !json_is_number(hi) || json_number_value(lo) < 0 ||
            json_number_value(hi) > 100 || json_number_value(lo) >= json_number_value(hi))
            BAD("percentile", "[low, high] with 0 <= low < high <= 100");
        card->percentile_lo = (float)json_number_value(lo);
        card->percentile_hi = (float)json_number_value(hi);
    }
    if ((v = json_object_get(root, "spatial_dims"))) {
        if (!json_is_integer(v) || (json_integer_value(v) != 2 && json_integer_value(v) != 3)) BAD("spatial_dims", "2 or 3");
        card->spatial_dims = (int)json_integer_value(v);
    }
    if ((v = json_object_get(root, "patch"))) {
        size_t n = json_array_size(v);
        if (!json_is_array(v) || n < 1 || n > 3) BAD("patch", "a list of 1 to 3 sizes");
        int64_t *p = pool_add(pool, npool, calloc(3, sizeof *p));
        if (!p) OOM();
        for (size_t i = 0; i < n; i++) {
            json_t *it = json_array_get(v, i);
            if (!json_is_integer(it) || json_integer_value(it) < 1 || json_integer_value(it) > 65536) BAD("patch", "sizes in 1..65536");
            p[i] = json_integer_value(it);
        }
        card->patch = p;
        card->n_patch = (int)n;
    }
    if ((v = json_object_get(root, "labels"))) {
        if (!json_is_object(v) || json_object_size(v) > 1024) BAD("labels", "an object {\"value\": \"name\"}");
        vbs_label *l = pool_add(pool, npool, calloc(json_object_size(v) + 1, sizeof *l));
        if (!l) OOM();
        int i = 0;
        json_t *it;
        json_object_foreach(v, key, it) {
            int val = index_key(key);
            if (val < 0 || val > 32767 || !json_is_string(it)) BAD("labels", "an object {\"value\": \"name\"} with values 0..32767");
            l[i].value = val;
            if (!(l[i++].name = pool_dup(pool, npool, json_string_value(it)))) OOM();
        }
        card->labels = l;
        card->n_labels = i;
    }
    if ((v = json_object_get(root, "label_convention"))) {
        static const char *const names[] = {"custom", "brats2018", "brats2023", "msd"};
        int k = one_of(v, names, 4);
        if (k < 0) BAD("label_convention", "custom, brats2018, brats2023 or msd");
        card->label_convention = (vbs_label_convention)k;
    }
    if ((v = json_object_get(root, "output_activation"))) {
        static const char *const names[] = {"softmax", "sigmoid", "none"};
        int k = one_of(v, names, 3);
        if (k < 0) BAD("output_activation", "softmax, sigmoid or none");
        card->output_activation = (vbs_output_act)k;
    }
    if ((v = json_object_get(root, "heteroscedastic"))) {
        if (!json_is_boolean(v)) BAD("heteroscedastic", "true or false");
        card->heteroscedastic = json_is_true(v);
    }
    const char *strs[] = {"training_data", "description"};
    const char **dst[] = {&card->training_data, &card->description};
    for (int i = 0; i < 2; i++)
        if ((v = json_object_get(root, strs[i]))) {
            if (!json_is_string(v)) BAD(strs[i], "a string");
            if (!(*dst[i] = pool_dup(pool, npool, json_string_value(v)))) OOM();
        }
    if ((v = json_object_get(root, "epochs"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000000) BAD("epochs", "a count");
        card->epochs = (int)json_integer_value(v);
    }
    if ((v = json_object_get(root, "seed"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0) BAD("seed", "a non-negative integer");
        card->seed = (uint64_t)json_integer_value(v);
    }
    if ((v = json_object_get(root, "metrics"))) {
        if (!json_is_object(v) || json_object_size(v) > 1024) BAD("metrics", "an object {\"name\": number}");
        vbs_metric *mt = pool_add(pool, npool, calloc(json_object_size(v) + 1, sizeof *mt));
        if (!mt) OOM();
        int i = 0;
        json_t *it;
        json_object_foreach(v, key, it) {
            if (!json_is_number(it)) BAD("metrics", "an object {\"name\": number}");
            mt[i].value = json_number_value(it);
            if (!(mt[i++].name = pool_dup(pool, npool, key))) OOM();
        }
        card->metrics = mt;
        card->n_metrics = i;
    }
    if ((v = json_object_get(root, "extra"))) {
        if (!json_is_object(v) || json_object_size(v) > 1024) BAD("extra", "an object {\"key\": \"value\"}");
        vbs_kv *kv = pool_add(pool, npool, calloc(json_object_size(v) + 1, sizeof *kv));
        if (!kv) OOM();
        int i = 0;
        json_t *it;
        json_object_foreach(v, key, it) {
            if (!json_is_string(it)) BAD("extra", "an object {\"key\": \"value\"}");
            kv[i].key = pool_dup(pool, npool, key);
            if (!kv[i].key || !(kv[i++].value = pool_dup(pool, npool, json_string_value(it)))) OOM();
        }
        card->extra = kv;
        card->n_extra = i;
    }
#undef BAD
#undef OOM
done:
    json_decref(root);
    return ok;
}

/* ---- model cards as JSON (vbseg export's metadata) -------------------------- */

/* The card in the form vbs_read_card_json reads, so that an exported card
 * goes back through `vbseg convert --card`. producer and producer_version are
 * not card-file fields (the converter sets them) and are left out. */
char *vbs_card_json(const vbs_card *c) {
    static const char *const norms[] = {"none", "zscore_nonzero", "percentile"};
    static const char *const convs[] = {"custom", "brats2018", "brats2023", "msd"};
    static const char *const acts[] = {"softmax", "sigmoid", "none"};
    json_t *o = json_object(), *a;
    int ok = o != NULL;
    if (ok && c->n_channels > 0) {
        ok = !json_object_set_new(o, "channels", a = json_array());
        for (int i = 0; ok && a && i < c->n_channels; i++) ok = !json_array_append_new(a, json_string(c->channels[i]));
    }
    if (ok && (unsigned)c->normalization < 3) ok = !json_object_set_new(o, "normalization", json_string(norms[c->normalization]));
    if (ok && c->normalization == VBS_NORM_PERCENTILE) {
        ok = !json_object_set_new(o, "percentile", a = json_array());
        if (ok) ok = !json_array_append_new(a, json_real(c->percentile_lo)) && !json_array_append_new(a, json_real(c->percentile_hi));
    }
    if (ok && (c->spatial_dims == 2 || c->spatial_dims == 3)) ok = !json_object_set_new(o, "spatial_dims", json_integer(c->spatial_dims));
    if (ok && c->n_patch > 0) {
        ok = !json_object_set_new(o, "patch", a = json_array());
        for (int i = 0; ok && i < c->n_patch; i++) ok = !json_array_append_new(a, json_integer(c->patch[i]));
    }
    if (ok && c->n_labels > 0) {
        ok = !json_object_set_new(o, "labels", a = json_object());
        for (int i = 0; ok && i < c->n_labels; i++) {
            char k[16];
            snprintf(k, sizeof k, "%d", c->labels[i].value);
            ok = !json_object_set_new(a, k, json_string(c->labels[i].name ? c->labels[i].name : ""));
        }
    }
    if (ok && (unsigned)c->label_convention < 4) ok = !json_object_set_new(o, "label_convention", json_string(convs[c->label_convention]));
    if (ok && (unsigned)c->output_activation < 3) ok = !json_object_set_new(o, "output_activation", json_string(acts[c->output_activation]));
    if (ok) ok = !json_object_set_new(o, "heteroscedastic", json_boolean(c->heteroscedastic));
    if (ok && c->training_data) ok = !json_object_set_new(o, "training_data", json_string(c->training_data));
    if (ok && c->description) ok = !json_object_set_new(o, "description", json_string(c->description));
    if (ok) ok = !json_object_set_new(o, "epochs", json_integer(c->epochs));
    if (ok && c->seed <= (uint64_t)INT64_MAX) ok = !json_object_set_new(o, "seed", json_integer((json_int_t)c->seed));
    if (ok && c->n_metrics > 0) {
        ok = !json_object_set_new(o, "metrics", a = json_object());
        for (int i = 0; ok && i < c->n_metrics; i++) ok = !json_object_set_new(a, c->metrics[i].name, json_real(c->metrics[i].value));
    }
    if (ok && c->n_extra > 0) {
        ok = !json_object_set_new(o, "extra", a = json_object());
        for (int i = 0; ok && i < c->n_extra; i++) ok = !json_object_set_new(a, c->extra[i].key, json_string(c->extra[i].value));
    }
    char *s = ok ? json_dumps(o, JSON_PRESERVE_ORDER | JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}
