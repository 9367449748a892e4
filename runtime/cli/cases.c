/*
 * cases.c: finding the cases of an input folder for `vbseg infer`, in the
 * layouts people keep scans in:
 *   nnunet     CASE_0000.nii.gz, CASE_0001.nii.gz, ... (channel = the number)
 *   brats2021  one folder per case, CASE_flair/_t1/_t1ce/_t2.nii.gz (also 2018)
 *   brats2023  one folder per case, CASE-t1n/-t1c/-t2w/-t2f.nii.gz
 *   flat       one case per file: a 4D file (channels along t) or one channel
 * Files are matched by name only; reading them is infer.c's business.
 */
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

const char *layout_name(layout l) {
    static const char *const n[] = {"auto", "nnunet", "brats2021", "brats2023", "flat"};
    return n[l];
}

int layout_parse(const char *s, layout *l) {
    for (int i = 0; i <= LAYOUT_FLAT; i++)
        if (!strcmp(s, layout_name((layout)i))) { *l = (layout)i; return 1; }
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

static scan_case *add_case(scan_case **v, int *n, int *cap, const char *id) {
    if (strlen(id) >= sizeof((*v)->id)) return NULL; /* ids longer than 255 bytes are not cases */
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        scan_case *t = realloc(*v, sizeof *t * (size_t)*cap);
        if (!t) return NULL;
        *v = t;
    }
    scan_case *c = &(*v)[(*n)++];
    memset(c, 0, sizeof *c);
    snprintf(c->id, sizeof c->id, "%s", id);
    for (int i = 0; i < MAX_CHANNELS; i++) c->channel[i] = -1;
    return c;
}

static void add_file(scan_case *c, const char *dir, const char *name, int channel) {
    if (c->n_files == MAX_CHANNELS) { snprintf(c->note, sizeof c->note, "more than %d files", MAX_CHANNELS); return; }
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = malloc(n);
    if (!path) return;
    snprintf(path, n, "%s/%s", dir, name);
    c->files[c->n_files] = path;
    c->channel[c->n_files++] = channel;
}

int find_cases(const char *dir, layout *lay, scan_case **out, int *n_out, char *err, size_t errlen) {
    int n;
    char **names = list(dir, &n);
    *out = NULL;
    *n_out = 0;
    if (!names && !is_dir(dir)) { snprintf(err, errlen, "%s: not a readable folder", dir); return 0; }
    layout l = *lay;
    if (l == LAYOUT_AUTO) {
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
                for (size_t k = s - 4; digits && k < s; k++) digits = names[i][k] >= '0' && names[i][k] <= '9';
                nnunet += digits;
            }
        }
        l = dirs23 > dirs21 ? LAYOUT_BRATS2023 : dirs21 ? LAYOUT_BRATS2021 : files && nnunet == files ? LAYOUT_NNUNET : LAYOUT_FLAT;
    }
    scan_case *v = NULL;
    int cap = 0, nc = 0;
    for (int i = 0; i < n; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        if (l == LAYOUT_BRATS2021 || l == LAYOUT_BRATS2023) {
            if (!is_dir(p)) continue;
            scan_case *c = add_case(&v, &nc, &cap, names[i]);
            if (!c) continue;
            int m;
            char **sub = list(p, &m);
            for (int j = 0; j < m; j++) {
                if (!is_nifti(sub[j])) continue;
                int ch = brats_channel(sub[j], l == LAYOUT_BRATS2023);
                if (ch >= 0) add_file(c, p, sub[j], ch);
                else {
                    size_t k = strlen(c->note);
                    snprintf(c->note + k, sizeof c->note - k, "%sextra file %s ignored", k ? "; " : "", sub[j]);
                }
            }
            free_list(sub, m);
        } else if (is_nifti(names[i]) && !is_dir(p)) {
            size_t s = stem_len(names[i]);
            char id[512];
            int ch = 0;
            if (l == LAYOUT_NNUNET) {
                if (s <= 5 || names[i][s - 5] != '_') continue;
                snprintf(id, sizeof id, "%.*s", (int)(s - 5), names[i]);
                ch = atoi(names[i] + s - 4);
            } else snprintf(id, sizeof id, "%.*s", (int)s, names[i]);
            scan_case *c = nc && !strcmp(v[nc - 1].id, id) ? &v[nc - 1] : add_case(&v, &nc, &cap, id);
            if (!c) continue;
            add_file(c, dir, names[i], ch);
        }
    }
    free_list(names, n);
    *lay = l;
    *out = v;
    *n_out = nc;
    return 1;
}

void free_cases(scan_case *v, int n) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < v[i].n_files; j++) free(v[i].files[j]);
    free(v);
}

int brats_channel_index(const char *card_name) {
    for (int c = 0; c < 4; c++)
        if (!strcmp(card_name, brats21[c]) || !strcmp(card_name, brats23[c])) return c;
    /* common spellings */
    if (!strcmp(card_name, "t1c") || !strcmp(card_name, "t1gd")) return 2;
    if (!strcmp(card_name, "t2-flair") || !strcmp(card_name, "t2flair")) return 0;
    return -1;
}
