/*
 * cases.c: finding the cases of an input folder for `vbseg infer`, in the
 * layouts people keep scans in:
 *   nnunet     CASE_0000.nii.gz, CASE_0001.nii.gz, ... (channel = the number)
 *   brats2021  one folder per case, CASE_flair/_t1/_t1ce/_t2.nii.gz (also 2018)
 *   brats2023  one folder per case, CASE-t1n/-t1c/-t2w/-t2f.nii.gz
 *   flat       one case per file: a 4D file (channels along t) or one channel
 * Files are matched by name only; reading them is infer.c's business.
 */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cases.h"

static int is_nifti(const char *name) {
    size_t n = strlen(name);
    return (n > 4 && !strcmp(name + n - 4, ".nii")) || (n > 7 && !strcmp(name + n - 7, ".nii.gz"));
}

static size_t stem_len(const char *name) {
    size_t n = strlen(name);
    return n > 7 && !strcmp(name + n - 7, ".nii.gz") ? n - 7 : n - 4;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* sorted names of the entries of dir (no dot files) */
static char **list(const char *dir, int *n) {
    DIR *d = opendir(dir);
    *n = 0;
    if (!d) return NULL;
    char **v = NULL;
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 64;
            char **t = realloc(v, sizeof *t * (size_t)cap);
            if (!t) break;
            v = t;
        }
        v[(*n)++] = strdup(e->d_name);
    }
    closedir(d);
    if (v) qsort(v, (size_t)*n, sizeof *v, cmp_str);
    return v;
}

static void free_list(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

static int is_dir(const char *p) { struct stat s; return !stat(p, &s) && S_ISDIR(s.st_mode); }

static const char *const brats21[4] = {"flair", "t1", "t1ce", "t2"};
static const char *const brats23[4] = {"t2f", "t1n", "t1c", "t2w"}; /* same order as brats21: flair, t1, t1ce, t2 */

const char *vbs_layout_name(vbs_layout l) {
    static const char *const n[] = {"auto", "nnunet", "brats2021", "brats2023", "flat"};
    return n[l];
}

int vbs_layout_parse(const char *s, vbs_layout *l) {
    for (int i = 0; i <= VBS_LAYOUT_FLAT; i++)
        if (!strcmp(s, vbs_layout_name((vbs_layout)i))) { *l = (vbs_layout)i; return 1; }
    return 0;
}

/* which BraTS channel a file name is, for a case folder; -1 none */
static int brats_channel(const char *name, int year23) {
    size_t n = stem_len(name);
    for (int c = 0; c < 4; c++) {
        const char *suf = year23 ? brats23[c] : brats21[c];
        size_t k = strlen(suf);
        if (n > k + 1 && (name[n - k - 1] == (year23 ? '-' : '_')) && !strncmp(name + n - k, suf, k)) return c;
    }
    return -1;
}

static vbs_scan_case *add_case(vbs_scan_case **v, int *n, int *cap, const char *id) {
    if (strlen(id) >= sizeof((*v)->id)) return NULL; /* ids longer than 255 bytes are not cases */
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        vbs_scan_case *t = realloc(*v, sizeof *t * (size_t)*cap);
        if (!t) return NULL;
        *v = t;
    }
    vbs_scan_case *c = &(*v)[(*n)++];
    memset(c, 0, sizeof *c);
    snprintf(c->id, sizeof c->id, "%s", id);
    for (int i = 0; i < VBS_MAX_CHANNELS; i++) c->channel[i] = -1;
    return c;
}

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = malloc(n);
    if (path) snprintf(path, n, "%s/%s", dir, name);
    return path;
}

static void add_file(vbs_scan_case *c, const char *dir, const char *name, int channel) {
    if (c->n_files == VBS_MAX_CHANNELS) { snprintf(c->note, sizeof c->note, "more than %d files", VBS_MAX_CHANNELS); return; }
    char *path = join(dir, name);
    if (!path) return;
    c->files[c->n_files] = path;
    c->channel[c->n_files++] = channel;
}

/* a BraTS case folder's reference labels: CASE_seg (2018/2021) or CASE-seg (2023) */
static int is_seg(const char *name, int year23) {
    size_t n = stem_len(name);
    return n > 4 && name[n - 4] == (year23 ? '-' : '_') && !strncmp(name + n - 3, "seg", 3);
}

/* vbseg's own map files next to a label output, and its reports */
int vbs_is_vbseg_output(const char *name) {
    static const char *const maps[] = {"_entropy", "_epistemic", "_aleatoric", "_regions", "_probabilities", "_aleatoric_het",
                                       "_epistemic_het"};
    size_t n = strlen(name);
    if (!strncmp(name, "summary", 7) && ((n > 4 && !strcmp(name + n - 4, ".csv")) || (n > 5 && !strcmp(name + n - 5, ".json"))))
        return 1;
    if (!strncmp(name, "manifest", 8) && n > 4 && !strcmp(name + n - 4, ".tsv")) return 1;
    if (n > 12 && !strcmp(name + n - 12, "_preview.png")) return 1;
    if (!is_nifti(name)) return 0;
    size_t s = stem_len(name);
    for (size_t i = 0; i < sizeof maps / sizeof maps[0]; i++) {
        size_t k = strlen(maps[i]);
        if (s > k && !strncmp(name + s - k, maps[i], k)) return 1;
    }
    return 0;
}

/* a label map vbseg wrote: CASE.nii.gz with CASE_epistemic.nii.gz beside it */
static int is_label_output(const char *dir, const char *name) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%.*s_epistemic.nii.gz", dir, (int)stem_len(name), name);
    struct stat s;
    return !stat(p, &s) && S_ISREG(s.st_mode);
}

/* what a vbs_layout left unused, for the caller's warning */
typedef struct { int n, outputs; char names[512]; } unused_list;

static void note_unused(unused_list *u, const char *name) {
    size_t k = strlen(u->names);
    if (u->n < 5) snprintf(u->names + k, sizeof u->names - k, "%s%s", u->n ? ", " : "", name);
    else if (u->n == 5) snprintf(u->names + k, sizeof u->names - k, ", ...");
    u->n++;
}

static int same_dir(const char *a, const char *b) {
    struct stat x, y;
    return b && !stat(a, &x) && !stat(b, &y) && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

int vbs_find_cases(const char *dir, const char *exclude, vbs_layout *lay, vbs_scan_case **out, int *n_out, char *unused, size_t unused_len,
               char *err, size_t errlen) {
    int n;
    char **names = list(dir, &n);
    *out = NULL;
    *n_out = 0;
    if (unused && unused_len) unused[0] = 0;
    if (!names && !is_dir(dir)) { snprintf(err, errlen, "%s: not a readable folder", dir); return 0; }
    /* vbseg's own files and the excluded folder are not scans */
    int k = 0;
    unused_list u = {0, 0, ""};
    for (int i = 0; i < n; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        int dir_entry = is_dir(p);
        if ((dir_entry && same_dir(p, exclude)) || (!dir_entry && (vbs_is_vbseg_output(names[i]) || (is_nifti(names[i]) && is_label_output(dir, names[i]))))) {
            u.outputs++;
            free(names[i]);
            continue;
        }
        names[k++] = names[i];
    }
    n = k;
    vbs_layout l = *lay;
    if (l == VBS_LAYOUT_AUTO) {
        int dirs23 = 0, dirs21 = 0, nnunet = 0, files = 0;
        for (int i = 0; i < n; i++) {
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", dir, names[i]);
            if (is_dir(p)) {
                int m;
                char **sub = list(p, &m);
                for (int j = 0; j < m; j++) {
                    if (!is_nifti(sub[j])) continue;
                    dirs23 += brats_channel(sub[j], 1) >= 0;
                    dirs21 += brats_channel(sub[j], 0) >= 0;
                }
                free_list(sub, m);
            } else if (is_nifti(names[i])) {
                files++;
                size_t s = stem_len(names[i]);
                int digits = s > 5 && names[i][s - 5] == '_';
                for (size_t q = s - 4; digits && q < s; q++) digits = names[i][q] >= '0' && names[i][q] <= '9';
                nnunet += digits;
            }
        }
        l = dirs23 > dirs21 ? VBS_LAYOUT_BRATS2023 : dirs21 ? VBS_LAYOUT_BRATS2021 : files && nnunet == files ? VBS_LAYOUT_NNUNET : VBS_LAYOUT_FLAT;
    }
    vbs_scan_case *v = NULL;
    int cap = 0, nc = 0;
    for (int i = 0; i < n; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        int dir_entry = is_dir(p);
        if (l == VBS_LAYOUT_BRATS2021 || l == VBS_LAYOUT_BRATS2023) {
            if (!dir_entry) {
                if (is_nifti(names[i])) note_unused(&u, names[i]);
                continue;
            }
            vbs_scan_case *c = add_case(&v, &nc, &cap, names[i]);
            if (!c) continue;
            int m;
            char **sub = list(p, &m);
            for (int j = 0; j < m; j++) {
                if (!is_nifti(sub[j])) continue;
                int ch = brats_channel(sub[j], l == VBS_LAYOUT_BRATS2023);
                if (ch >= 0) add_file(c, p, sub[j], ch);
                else if (is_seg(sub[j], l == VBS_LAYOUT_BRATS2023) && !c->label) c->label = join(p, sub[j]);
                else {
                    size_t q = strlen(c->note);
                    snprintf(c->note + q, sizeof c->note - q, "%sextra file %s ignored", q ? "; " : "", sub[j]);
                }
            }
            free_list(sub, m);
        } else if (is_nifti(names[i]) && !dir_entry) {
            size_t s = stem_len(names[i]);
            char id[512];
            int ch = 0;
            if (l == VBS_LAYOUT_NNUNET) {
                int digits = s > 5 && names[i][s - 5] == '_';
                for (size_t q = s - 4; digits && q < s; q++) digits = names[i][q] >= '0' && names[i][q] <= '9';
                if (!digits) { note_unused(&u, names[i]); continue; }
                snprintf(id, sizeof id, "%.*s", (int)(s - 5), names[i]);
                ch = atoi(names[i] + s - 4);
            } else snprintf(id, sizeof id, "%.*s", (int)s, names[i]);
            vbs_scan_case *c = nc && !strcmp(v[nc - 1].id, id) ? &v[nc - 1] : add_case(&v, &nc, &cap, id);
            if (!c) continue;
            add_file(c, dir, names[i], ch);
        } else if (dir_entry) {
            char d[300];
            snprintf(d, sizeof d, "%s/", names[i]);
            note_unused(&u, d);
        }
    }
    free_list(names, n);
    if (unused && unused_len) {
        int q = 0;
        if (u.n) q = snprintf(unused, unused_len, "%d file%s or folder%s not used by the %s layout: %s", u.n, u.n == 1 ? "" : "s",
                              u.n == 1 ? "" : "s", vbs_layout_name(l), u.names);
        if (u.outputs && q >= 0 && (size_t)q < unused_len)
            snprintf(unused + q, unused_len - (size_t)q, "%s%d vbseg output%s skipped", q ? "; " : "", u.outputs,
                     u.outputs == 1 ? "" : "s");
    }
    *lay = l;
    *out = v;
    *n_out = nc;
    return 1;
}

void vbs_free_cases(vbs_scan_case *v, int n) {
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < v[i].n_files; j++) free(v[i].files[j]);
        free(v[i].label);
    }
    free(v);
}

const char *vbs_train_layout_name(vbs_train_layout l) {
    static const char *const n[] = {"auto", "nnunet", "brats2021", "brats2023", "msd"};
    return n[l];
}

int vbs_train_layout_parse(const char *s, vbs_train_layout *l) {
    for (int i = 0; i <= VBS_TRAIN_MSD; i++)
        if (!strcmp(s, vbs_train_layout_name((vbs_train_layout)i))) { *l = (vbs_train_layout)i; return 1; }
    return 0;
}

/* labelsTr/CASE + ending for each case, when the file is there */
static void attach_labels(vbs_scan_case *v, int n, const char *dir, const char *ending) {
    for (int i = 0; i < n; i++) {
        char p[4096];
        struct stat s;
        snprintf(p, sizeof p, "%s/labelsTr/%s%s", dir, v[i].id, ending);
        if (!stat(p, &s) && S_ISREG(s.st_mode)) v[i].label = strdup(p);
    }
}

int vbs_find_training_cases(const char *dir, vbs_train_layout *lay, vbs_scan_case **out, int *n, vbs_dataset_meta *meta, char *err,
                            size_t errlen) {
    char p[4096], ending[16] = ".nii.gz", unused[512];
    *out = NULL;
    *n = 0;
    memset(meta, 0, sizeof *meta);
    if (!is_dir(dir)) { snprintf(err, errlen, "%s: not a readable folder", dir); return 0; }
    snprintf(p, sizeof p, "%s/imagesTr", dir);
    int raw = is_dir(p);
    vbs_train_layout l = *lay;
    if (raw) {
        char js[4096];
        snprintf(js, sizeof js, "%s/dataset.json", dir);
        struct stat s;
        if (!stat(js, &s) && !vbs_read_dataset_json(js, meta, ending, sizeof ending, err, errlen)) return 0;
        /* MSD keeps all channels of a case in one 4D file: no _XXXX channel numbers */
        vbs_layout il = VBS_LAYOUT_AUTO;
        vbs_scan_case *v;
        int nv;
        if (!vbs_find_cases(p, NULL, &il, &v, &nv, unused, sizeof unused, err, errlen)) return 0;
        if (l == VBS_TRAIN_AUTO) l = il == VBS_LAYOUT_NNUNET ? VBS_TRAIN_NNUNET : VBS_TRAIN_MSD;
        if ((l == VBS_TRAIN_NNUNET) != (il == VBS_LAYOUT_NNUNET)) {
            vbs_free_cases(v, nv);
            vbs_layout want = l == VBS_TRAIN_NNUNET ? VBS_LAYOUT_NNUNET : VBS_LAYOUT_FLAT;
            if (!vbs_find_cases(p, NULL, &want, &v, &nv, unused, sizeof unused, err, errlen)) return 0;
        }
        attach_labels(v, nv, dir, ending);
        *out = v;
        *n = nv;
    } else {
        vbs_layout il = l == VBS_TRAIN_BRATS2023 ? VBS_LAYOUT_BRATS2023 : l == VBS_TRAIN_BRATS2021 ? VBS_LAYOUT_BRATS2021 : VBS_LAYOUT_AUTO;
        if (l == VBS_TRAIN_NNUNET || l == VBS_TRAIN_MSD) {
            snprintf(err, errlen, "%s: no imagesTr folder (the %s layout keeps its training images there)", dir, vbs_train_layout_name(l));
            return 0;
        }
        if (!vbs_find_cases(dir, NULL, &il, out, n, unused, sizeof unused, err, errlen)) return 0;
        if (il != VBS_LAYOUT_BRATS2021 && il != VBS_LAYOUT_BRATS2023) {
            vbs_free_cases(*out, *n);
            *out = NULL;
            *n = 0;
            snprintf(err, errlen, "%s: not a training folder: no imagesTr/ (nnU-Net raw, MSD) and no BraTS case folders", dir);
            return 0;
        }
        l = il == VBS_LAYOUT_BRATS2023 ? VBS_TRAIN_BRATS2023 : VBS_TRAIN_BRATS2021;
        static const char *const b21[4] = {"flair", "t1", "t1ce", "t2"}, *const b23[4] = {"t2f", "t1n", "t1c", "t2w"};
        meta->n_channels = 4;
        for (int c = 0; c < 4; c++) snprintf(meta->channel[c], sizeof meta->channel[c], "%s", l == VBS_TRAIN_BRATS2023 ? b23[c] : b21[c]);
    }
    *lay = l;
    return 1;
}

/* A card's channel name to its BraTS channel (0 flair, 1 t1, 2 t1ce, 3 t2),
 * whatever the case and separators ("FLAIR", "T1-CE", "t2_flair"), in the
 * spellings of BraTS 2021 and 2023, MSD Task01 (FLAIR, T1w, t1gd, T2w) and
 * common use; -1 for any other name. */
int vbs_brats_channel_index(const char *card_name) {
    static const struct { const char *name; int c; } known[] = {
        {"flair", 0}, {"t2f", 0}, {"t2flair", 0}, {"t1", 1}, {"t1n", 1}, {"t1w", 1}, {"t1ce", 2}, {"t1c", 2}, {"t1gd", 2}, {"t2", 3}, {"t2w", 3},
    };
    char k[16];
    size_t n = 0;
    for (const char *p = card_name; *p; p++) {
        if (*p == '-' || *p == '_' || *p == ' ' || *p == '.') continue;
        if (n + 1 >= sizeof k) return -1;
        k[n++] = (char)tolower((unsigned char)*p);
    }
    k[n] = 0;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(k, known[i].name)) return known[i].c;
    return -1;
}
