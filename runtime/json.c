/*
 * json.c: the JSON files vbseg reads, through Debian's libjansson (the one
 * file that includes it), always with JSON_REJECT_DUPLICATES: a key given
 * twice is an error, never a silent choice. Today: the dataset.json of
 * nnU-Net (v2: "channel_names" {"0": "T2"}, "labels" {"background": 0},
 * "file_ending") and of the Medical Segmentation Decathlon / nnU-Net v1
 * ("modality" {"0": "FLAIR"}, "labels" {"0": "background"}). Every
 * refusal names the file and the field.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cases.h"

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
