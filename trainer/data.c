/*
 * data.c: the training cases. Finding them is cases.c's (the same module
 * `vbseg infer` uses); this file checks every case before training starts
 * (listing all bad ones at once), preprocesses each exactly as inference
 * does (normalisation as the model card says over the whole volume, then
 * the box around the non-zero voxels), and keeps the result in a cache of
 * one file per case, as nnU-Net's preprocessed folder: memory-mapped, so
 * resident memory does not grow with the number of cases, and reused while
 * the source files and the preprocessing are unchanged. Then it draws the
 * training examples: axial slices (2D) or patches (3D) with a share drawn
 * to hold foreground, and the augmentations (flips, intensity scale and
 * shift, gamma), all keyed by the counter-based RNG so that the same seed
 * and step give the same example on any thread.
 *
 * Cache file (little-endian): "VBSCACHE", u32 version, u32 channels,
 * i64 box dims x y z, i64 box origin, i64 source dims, u64 fingerprint,
 * f64 spacing[3], u8 label values present [32] (a bitset), i64 foreground
 * slices, i64 foreground voxels kept; padding to 128 bytes; float32
 * channels; uint8 label values; i32 foreground slice indices; u32
 * foreground voxel indices. The file's length must be exactly that.
 */
#define _DEFAULT_SOURCE /* madvise(MADV_DONTNEED): glibc's posix_madvise ignores POSIX_MADV_DONTNEED */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cases.h"
#include "crop.h"
#include "trainer.h"

#define CACHE_VERSION 1
#define CACHE_HEADER 256
#define FG_KEEP 4096

static uint64_t fnv_add(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* what the cache depends on: the preprocessing and each source file's path, size and time */
static uint64_t fingerprint(const vbs_scan_case *c, int four_d, const vbs_card *norm) {
    uint64_t h = 1469598103934665603ull;
    int v = CACHE_VERSION;
    h = fnv_add(h, &v, sizeof v);
    h = fnv_add(h, &norm->normalization, sizeof norm->normalization);
    h = fnv_add(h, &norm->percentile_lo, sizeof norm->percentile_lo);
    h = fnv_add(h, &norm->percentile_hi, sizeof norm->percentile_hi);
    h = fnv_add(h, &four_d, sizeof four_d);
    for (int f = 0; f <= c->n_files; f++) {
        const char *p = f < c->n_files ? c->files[f] : c->label;
        struct stat s;
        if (!p || stat(p, &s)) continue;
        int ch = f < c->n_files ? c->channel[f] : -1;
        h = fnv_add(h, &ch, sizeof ch);
        h = fnv_add(h, p, strlen(p));
        h = fnv_add(h, &s.st_size, sizeof s.st_size);
        h = fnv_add(h, &s.st_mtim.tv_sec, sizeof s.st_mtim.tv_sec);
        h = fnv_add(h, &s.st_mtim.tv_nsec, sizeof s.st_mtim.tv_nsec);
    }
    return h;
}

typedef struct {
    char magic[8];
    uint32_t version, channels;
    int64_t d[3], lo[3], full[3];
    uint64_t fp;
    double spacing[3];
    uint8_t present[32];
    int64_t n_fg_z, n_fg_vox;
} cache_header;

static int64_t cache_len(const cache_header *h) {
    int64_t nv = h->d[0] * h->d[1] * h->d[2];
    return CACHE_HEADER + 4 * (int64_t)h->channels * nv + ((nv + 3) & ~(int64_t)3) + 4 * h->n_fg_z + 4 * h->n_fg_vox;
}

/* maps a cache file whose header matches fp; 1 on success */
static int map_cache(const char *path, uint64_t fp, int C, vbs_data_case *dc) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat s;
    cache_header h;
    int ok = !fstat(fd, &s) && s.st_size >= CACHE_HEADER && pread(fd, &h, sizeof h, 0) == (ssize_t)sizeof h &&
             !memcmp(h.magic, "VBSCACHE", 8) && h.version == CACHE_VERSION && h.fp == fp && (int)h.channels == C;
    for (int i = 0; ok && i < 3; i++) ok = h.d[i] > 0 && h.d[i] <= 65536 && h.n_fg_z >= 0 && h.n_fg_vox >= 0 && h.n_fg_vox <= FG_KEEP;
    ok = ok && h.n_fg_z <= h.d[2] && cache_len(&h) == (int64_t)s.st_size;
    void *p = ok ? mmap(NULL, (size_t)s.st_size, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    close(fd);
    if (p == MAP_FAILED) return 0;
    int64_t nv = h.d[0] * h.d[1] * h.d[2];
    const char *b = p;
    dc->map = p;
    dc->map_len = (size_t)s.st_size;
    memcpy(dc->d, h.d, sizeof dc->d);
    memcpy(dc->spacing, h.spacing, sizeof dc->spacing);
    memcpy(dc->present, h.present, sizeof dc->present);
    dc->x = (const float *)(b + CACHE_HEADER);
    dc->y = (const uint8_t *)(b + CACHE_HEADER + 4 * (int64_t)C * nv);
    dc->fg_z = (const int32_t *)((const char *)dc->y + ((nv + 3) & ~(int64_t)3));
    dc->n_fg_z = h.n_fg_z;
    dc->fg_vox = (const uint32_t *)(dc->fg_z + h.n_fg_z);
    dc->n_fg_vox = h.n_fg_vox;
    return 1;
}

typedef struct { const cache_header *h; const float *x; const uint8_t *y; const int32_t *fz; const uint32_t *fv; } cache_body;

static vbs_status write_cache_body(int fd, void *user, char *err) {
    const cache_body *b = user;
    char hdr[CACHE_HEADER] = {0};
    memcpy(hdr, b->h, sizeof *b->h);
    int64_t nv = b->h->d[0] * b->h->d[1] * b->h->d[2];
    static const char zero[4] = {0};
    if (vbs_write_all(fd, hdr, sizeof hdr) || vbs_write_all(fd, b->x, 4 * (size_t)(b->h->channels * nv)) ||
        vbs_write_all(fd, b->y, (size_t)nv) || vbs_write_all(fd, zero, (size_t)(((nv + 3) & ~(int64_t)3) - nv)) ||
        vbs_write_all(fd, b->fz, 4 * (size_t)b->h->n_fg_z) || vbs_write_all(fd, b->fv, 4 * (size_t)b->h->n_fg_vox))
        return vbs_fail(err, VBS_ERR_IO, "write failed: %s", strerror(errno));
    return VBS_OK;
}

/* Reads, checks and preprocesses one case into its cache file. 0 and why
 * (one line naming the file) when the case is bad; -1 when the cache cannot
 * be written (not the case's fault). */
static int build_case(const vbs_scan_case *c, vbs_train_layout lay, int C, const vbs_card *norm, const char *path, uint64_t fp,
                      char *why, size_t wlen) {
    vbs_volume *vol[VBS_MAX_CHANNELS] = {0}, *lab = NULL;
    float *x = NULL, *xb = NULL;
    uint8_t *yb = NULL;
    int32_t *fz = NULL;
    uint32_t *fv = NULL;
    int ret = 0, nfiles = lay == VBS_TRAIN_MSD ? 1 : C;
    char e[512];
    const char *file[VBS_MAX_CHANNELS] = {0};
    if (!c->label) { snprintf(why, wlen, "%s: no label file", c->id); return 0; }
    for (int f = 0; f < c->n_files; f++)
        if (c->channel[f] >= 0 && c->channel[f] < C && !file[c->channel[f]]) file[c->channel[f]] = c->files[f];
    if (lay == VBS_TRAIN_MSD) file[0] = c->n_files ? c->files[0] : NULL;
    for (int ch = 0; ch < nfiles; ch++)
        if (!file[ch]) { snprintf(why, wlen, "%s: missing channel %d", c->id, ch); return 0; }
    int64_t d[4] = {0};
    for (int ch = 0; ch < nfiles; ch++) {
        if (vbs_volume_read_nifti(file[ch], &vol[ch], e, sizeof e)) { snprintf(why, wlen, "%s", e); goto done; }
        int64_t dd[4];
        vbs_volume_dims(vol[ch], dd);
        char g[256];
        if (ch == 0) memcpy(d, dd, sizeof d);
        else if (!vbs_volume_same_geometry(vol[0], vol[ch], g, sizeof g)) { snprintf(why, wlen, "%s: %s (against %s)", file[ch], g, file[0]); goto done; }
        if (lay != VBS_TRAIN_MSD && dd[3] != 1) { snprintf(why, wlen, "%s: a 4D file where one channel is expected", file[ch]); goto done; }
    }
    if (lay == VBS_TRAIN_MSD && d[3] != C) { snprintf(why, wlen, "%s: %lld channels along t, expected %d", file[0], (long long)d[3], C); goto done; }
    if (vbs_volume_read_nifti(c->label, &lab, e, sizeof e)) { snprintf(why, wlen, "%s", e); goto done; }
    char g[256];
    if (!vbs_volume_same_geometry(vol[0], lab, g, sizeof g)) { snprintf(why, wlen, "%s: %s (against %s)", c->label, g, file[0]); goto done; }
    int64_t ld[4];
    vbs_volume_dims(lab, ld);
    if (ld[3] != 1) { snprintf(why, wlen, "%s: labels must be one 3D volume, not %lld along t", c->label, (long long)ld[3]); goto done; }
    int64_t nv = d[0] * d[1] * d[2];
    const float *lv = vbs_volume_data(lab);
    cache_header h;
    memset(&h, 0, sizeof h);
    for (int64_t i = 0; i < nv; i++) {
        float v = lv[i];
        if (!(v >= 0 && v <= 255 && v == floorf(v))) {
            snprintf(why, wlen, "%s: not a label map: value %g at voxel %lld (labels are integers 0..255)", c->label, (double)v, (long long)i);
            goto done;
        }
        h.present[(int)v >> 3] |= (uint8_t)(1u << ((int)v & 7));
    }
    if (!(x = malloc(sizeof(float) * (size_t)(nv * C)))) { snprintf(why, wlen, "%s: out of memory", c->id); ret = -1; goto done; }
    for (int ch = 0; ch < nfiles; ch++)
        memcpy(x + (int64_t)ch * nv, vbs_volume_data(vol[ch]), sizeof(float) * (size_t)(nv * (lay == VBS_TRAIN_MSD ? C : 1)));
    /* the box: non-zero image voxels (as inference), grown to any labelled voxel outside them */
    vbs_box bx;
    if (!vbs_box_nonzero(x, C, d, &bx)) bx = (vbs_box){{0, 0, 0}, {d[0], d[1], d[2]}};
    for (int64_t k = 0; k < d[2]; k++)
        for (int64_t j = 0; j < d[1]; j++)
            for (int64_t i = 0; i < d[0]; i++)
                if (lv[(k * d[1] + j) * d[0] + i] != 0.f) {
                    int64_t q[3] = {i, j, k};
                    for (int a = 0; a < 3; a++) {
                        if (q[a] < bx.lo[a]) bx.lo[a] = q[a];
                        if (q[a] + 1 > bx.hi[a]) bx.hi[a] = q[a] + 1;
                    }
                }
    vbs_normalize(norm, x, C, nv);
    for (int a = 0; a < 3; a++) { h.d[a] = bx.hi[a] - bx.lo[a]; h.lo[a] = bx.lo[a]; h.full[a] = d[a]; }
    int64_t nb = vbs_box_voxels(&bx);
    float *lb = malloc(sizeof(float) * (size_t)nb);
    xb = malloc(sizeof(float) * (size_t)(nb * C));
    yb = malloc((size_t)nb + 4);
    fz = malloc(sizeof(int32_t) * (size_t)(h.d[2] + 1));
    fv = malloc(sizeof(uint32_t) * FG_KEEP);
    if (!lb || !xb || !yb || !fz || !fv) { free(lb); snprintf(why, wlen, "%s: out of memory", c->id); ret = -1; goto done; }
    vbs_box_extract(x, C, d, &bx, xb);
    vbs_box_extract(lv, 1, d, &bx, lb);
    int64_t nfg = 0, plane = h.d[0] * h.d[1];
    for (int64_t i = 0; i < nb; i++) { yb[i] = (uint8_t)lb[i]; nfg += yb[i] != 0; }
    free(lb);
    for (int64_t k = 0; k < h.d[2]; k++) {
        int any = 0;
        for (int64_t i = 0; i < plane && !any; i++) any = yb[k * plane + i] != 0;
        if (any) fz[h.n_fg_z++] = (int32_t)k;
    }
    /* foreground voxels for patch centres: all, or an even spread of FG_KEEP */
    for (int64_t i = 0, seen = 0; i < nb && nfg; i++)
        if (yb[i]) {
            if (nfg <= FG_KEEP || seen * FG_KEEP / nfg != (seen + 1) * FG_KEEP / nfg) fv[h.n_fg_vox++] = (uint32_t)i;
            seen++;
        }
    memcpy(h.magic, "VBSCACHE", 8);
    h.version = CACHE_VERSION;
    h.channels = (uint32_t)C;
    h.fp = fp;
    vbs_volume_spacing(vol[0], h.spacing);
    cache_body body = {&h, xb, yb, fz, fv};
    char werr[VBS_ERRLEN];
    if (vbs_atomic_write(path, write_cache_body, &body, werr)) { snprintf(why, wlen, "%s", werr); ret = -1; goto done; }
    ret = 1;
done:
    for (int ch = 0; ch < nfiles; ch++) vbs_volume_free(vol[ch]);
    vbs_volume_free(lab);
    free(x); free(xb); free(yb); free(fz); free(fv);
    return ret;
}

void vbs_dataset_close(vbs_dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->n; i++)
        if (ds->cases[i].map) munmap(ds->cases[i].map, ds->cases[i].map_len);
    free(ds->cases);
    free(ds->bad);
    memset(ds, 0, sizeof *ds);
}

static void add_bad(vbs_dataset *ds, const char *line) {
    char (*b)[512] = realloc(ds->bad, sizeof *b * (size_t)(ds->n_bad + 1));
    if (!b) return;
    ds->bad = b;
    snprintf(ds->bad[ds->n_bad++], sizeof ds->bad[0], "%.500s", line);
}

/* the BraTS conventions' labels when no dataset.json names them */
static void brats_labels(vbs_dataset_meta *m, int year23) {
    static const char *const names[4] = {"background", "necrotic core", "edema", "enhancing tumour"};
    m->n_labels = 4;
    for (int i = 0; i < 4; i++) {
        m->label_value[i] = i == 3 && !year23 ? 4 : i;
        snprintf(m->label_name[i], sizeof m->label_name[i], "%s", names[i]);
    }
}

vbs_status vbs_dataset_open(const vbs_data_opts *o, vbs_dataset *ds, char *err) {
    memset(ds, 0, sizeof *ds);
    vbs_scan_case *sc = NULL;
    int n = 0;
    char e[1024];
    ds->layout = o->layout;
    if (!vbs_find_training_cases(o->dir, &ds->layout, &sc, &n, &ds->meta, e, sizeof e)) return vbs_fail(err, VBS_ERR_IO, "%s", e);
    if (!n) { vbs_free_cases(sc, n); return vbs_fail(err, VBS_ERR_ARG, "%s: no training cases found (%s layout)", o->dir, vbs_train_layout_name(ds->layout)); }
    if ((ds->layout == VBS_TRAIN_BRATS2021 || ds->layout == VBS_TRAIN_BRATS2023) && !ds->meta.n_labels)
        brats_labels(&ds->meta, ds->layout == VBS_TRAIN_BRATS2023);
    /* channels: from dataset.json, the layout, or the files of the first case */
    int C = ds->meta.n_channels;
    if (!C) {
        for (int f = 0; f < sc[0].n_files; f++) C = sc[0].channel[f] + 1 > C ? sc[0].channel[f] + 1 : C;
        if (ds->layout == VBS_TRAIN_MSD) {
            vbs_volume *v;
            int64_t dd[4] = {0};
            if (sc[0].n_files && !vbs_volume_read_nifti(sc[0].files[0], &v, e, sizeof e)) { vbs_volume_dims(v, dd); vbs_volume_free(v); }
            C = (int)dd[3];
        }
        if (C < 1 || C > VBS_MAX_CHANNELS) { vbs_free_cases(sc, n); return vbs_fail(err, VBS_ERR_ARG, "%s: cannot tell the channel count", o->dir); }
        ds->meta.n_channels = C;
        for (int c = 0; c < C; c++) snprintf(ds->meta.channel[c], sizeof ds->meta.channel[c], "ch%d", c);
    }
    ds->C = C;
    if (mkdir(o->cache, 0755) && errno != EEXIST) {
        vbs_free_cases(sc, n);
        return vbs_fail(err, VBS_ERR_IO, "%s: cannot create the cache folder: %s", o->cache, strerror(errno));
    }
    ds->cases = calloc((size_t)n + 1, sizeof *ds->cases);
    if (!ds->cases) { vbs_free_cases(sc, n); return vbs_fail(err, VBS_ERR_NOMEM, "out of memory"); }
    vbs_status st = VBS_OK;
    for (int i = 0; i < n && !st; i++) {
        vbs_data_case *dc = &ds->cases[ds->n];
        snprintf(dc->id, sizeof dc->id, "%s", sc[i].id);
        if (o->progress && o->progress(o->user, i, n, sc[i].id)) { st = vbs_fail(err, VBS_ERR_CANCELLED, "stopped while preparing the data"); break; }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.vbsc", o->cache, sc[i].id);
        uint64_t fp = fingerprint(&sc[i], ds->layout == VBS_TRAIN_MSD, o->norm);
        if (!sc[i].label) { snprintf(e, sizeof e, "%s: no label file", sc[i].id); add_bad(ds, e); continue; }
        if (!map_cache(path, fp, C, dc)) {
            int r = build_case(&sc[i], ds->layout, C, o->norm, path, fp, e, sizeof e);
            if (r < 0) { st = vbs_fail(err, VBS_ERR_IO, "%s", e); break; }
            if (r == 0) { add_bad(ds, e); continue; }
            if (!map_cache(path, fp, C, dc)) { st = vbs_fail(err, VBS_ERR_IO, "%s: cannot read back the cache file", path); break; }
        }
        ds->n++;
    }
    vbs_free_cases(sc, n);
    if (st) return st;
    /* the label map: dataset.json's or the layout's, else the values found */
    if (!ds->meta.n_labels) {
        uint8_t all[32] = {0};
        for (int i = 0; i < ds->n; i++)
            for (int b = 0; b < 32; b++) all[b] |= ds->cases[i].present[b];
        all[0] |= 1; /* background */
        for (int v = 0; v < 256 && ds->meta.n_labels < VBS_MAX_LABELS; v++)
            if (all[v >> 3] >> (v & 7) & 1) {
                ds->meta.label_value[ds->meta.n_labels] = v;
                snprintf(ds->meta.label_name[ds->meta.n_labels++], sizeof ds->meta.label_name[0], v ? "label%d" : "background", v);
            }
    }
    memset(ds->lut, 0xff, sizeof ds->lut);
    for (int k = 0; k < ds->meta.n_labels; k++) ds->lut[ds->meta.label_value[k]] = (uint8_t)k;
    ds->n_classes = ds->meta.n_labels;
    /* label values the map does not know make a case bad */
    for (int i = 0; i < ds->n; i++) {
        vbs_data_case *dc = &ds->cases[i];
        for (int v = 0; v < 256; v++)
            if ((dc->present[v >> 3] >> (v & 7) & 1) && ds->lut[v] == 0xff) {
                snprintf(e, sizeof e, "%s: label value %d is not in the label map (values:", dc->id, v);
                for (int k = 0; k < ds->meta.n_labels; k++) snprintf(e + strlen(e), sizeof e - strlen(e), " %d", ds->meta.label_value[k]);
                snprintf(e + strlen(e), sizeof e - strlen(e), ")");
                add_bad(ds, e);
                munmap(dc->map, dc->map_len);
                ds->cases[i--] = ds->cases[--ds->n];
                break;
            }
    }
    if (ds->n_bad && !o->skip_bad)
        return vbs_fail(err, VBS_ERR_ARG, "%s: %d of %d case%s cannot be used (listed above); fix them or train without them with --skip-bad",
                        o->dir, ds->n_bad, ds->n + ds->n_bad, ds->n + ds->n_bad == 1 ? "" : "s");
    if (ds->n < 1) return vbs_fail(err, VBS_ERR_ARG, "%s: no usable training case", o->dir);
    /* cases in id order: the split and the data order depend on nothing else */
    for (int i = 1; i < ds->n; i++)
        for (int j = i; j > 0 && strcmp(ds->cases[j - 1].id, ds->cases[j].id) > 0; j--) {
            vbs_data_case t = ds->cases[j];
            ds->cases[j] = ds->cases[j - 1];
            ds->cases[j - 1] = t;
        }
    return VBS_OK;
}

/* Drops a mapped range from the process's resident set (MADV_DONTNEED on a
 * shared read-only file mapping: the pages stay in the page cache and read
 * back unchanged), so that resident memory does not grow with the number of
 * cases sampled. Page-aligned inward; a no-op for ranges under a page. */
static void release(const vbs_data_case *dc, const char *p, size_t len) {
    const char *base = dc->map;
    uintptr_t a = (uintptr_t)p, b = a + len, pg = 4096;
    a = (a + pg - 1) & ~(pg - 1);
    b &= ~(pg - 1);
    if (b > a && a >= (uintptr_t)base && b <= (uintptr_t)base + dc->map_len) madvise((void *)a, b - a, MADV_DONTNEED);
}

void vbs_data_release(const vbs_dataset *ds, int ci) {
    const vbs_data_case *dc = &ds->cases[ci];
    release(dc, (const char *)dc->map, dc->map_len);
}

/* ---- examples ---------------------------------------------------------------- */

/* uniform draws from Philox keyed by (seed, key): draw i of the example */
typedef struct { uint32_t key[2]; uint32_t ctr[4]; uint32_t buf[4]; int used; } rng;

static void rng_init(rng *r, uint64_t seed, uint64_t key) {
    r->key[0] = (uint32_t)seed;
    r->key[1] = (uint32_t)(seed >> 32);
    r->ctr[0] = 0;
    r->ctr[1] = 0xDA7A0000u;
    r->ctr[2] = (uint32_t)key;
    r->ctr[3] = (uint32_t)(key >> 32);
    r->used = 4;
}

static uint32_t rng_u32(rng *r) {
    if (r->used == 4) {
        vbs_philox4x32(r->key, r->ctr, r->buf);
        r->ctr[0]++;
        r->used = 0;
    }
    return r->buf[r->used++];
}

static double rng_unif(rng *r) { return (rng_u32(r) + 0.5) / 4294967296.0; }
static int64_t rng_below(rng *r, int64_t n) { return n > 0 ? (int64_t)(rng_unif(r) * (double)n) % n : 0; }

void vbs_data_example(const vbs_dataset *ds, const vbs_sampler *s, int ci, uint64_t seed, uint64_t key, float *x, uint8_t *t) {
    const vbs_data_case *dc = &ds->cases[ci];
    rng r;
    rng_init(&r, seed, key);
    int C = ds->C;
    /* the output window (pz, py, px) and where it sits in the box: centred on a
     * foreground voxel for the foreground share, anywhere otherwise */
    int64_t pz = s->dims == 2 ? 1 : s->patch[0], py = s->dims == 2 ? s->patch[0] : s->patch[1], px = s->dims == 2 ? s->patch[1] : s->patch[2];
    int64_t nx = dc->d[0], ny = dc->d[1], nz = dc->d[2], plane = nx * ny;
    int fg = rng_unif(&r) < s->fg_oversample && dc->n_fg_vox > 0;
    int64_t cz, cy, cx;
    if (fg) {
        uint32_t v;
        if (s->dims == 2) { /* a foreground slice, then a foreground voxel in it */
            int64_t z = dc->fg_z[rng_below(&r, dc->n_fg_z)], cnt = 0;
            for (int64_t i = 0; i < plane; i++) cnt += dc->y[z * plane + i] != 0;
            int64_t pick = rng_below(&r, cnt);
            v = (uint32_t)(z * plane);
            for (int64_t i = 0; i < plane; i++)
                if (dc->y[z * plane + i] && pick-- == 0) { v = (uint32_t)(z * plane + i); break; }
        } else v = dc->fg_vox[rng_below(&r, dc->n_fg_vox)];
        cz = v / plane;
        cy = v % plane / nx;
        cx = v % nx;
        /* jitter so the lesion is not always in the middle */
        cy += rng_below(&r, py / 2 + 1) - py / 4;
        cx += rng_below(&r, px / 2 + 1) - px / 4;
        if (s->dims == 3) cz += rng_below(&r, pz / 2 + 1) - pz / 4;
    } else {
        cz = rng_below(&r, nz);
        cy = rng_below(&r, ny);
        cx = rng_below(&r, nx);
    }
    /* window origin: centred on (cz, cy, cx), kept inside the box where the box is larger, centred where smaller */
    int64_t oz, oy, ox;
#define ORIGIN(o, c, p, n) do { o = (n) <= (p) ? -((p) - (n)) / 2 : (c) - (p) / 2; if ((n) > (p)) { if (o < 0) o = 0; if (o > (n) - (p)) o = (n) - (p); } } while (0)
    if (s->dims == 2) oz = cz;
    else ORIGIN(oz, cz, pz, nz);
    ORIGIN(oy, cy, py, ny);
    ORIGIN(ox, cx, px, nx);
#undef ORIGIN
    int flip[3] = {0, 0, 0};
    if (s->augment >= 1)
        for (int a = 0; a < 3; a++) flip[a] = (a > 0 || s->dims == 3) && (rng_u32(&r) & 1);
    int64_t pn = pz * py * px;
    for (int64_t z = 0; z < pz; z++)
        for (int64_t y = 0; y < py; y++)
            for (int64_t xx = 0; xx < px; xx++) {
                int64_t sz = oz + (flip[0] ? pz - 1 - z : z), sy = oy + (flip[1] ? py - 1 - y : y), sx = ox + (flip[2] ? px - 1 - xx : xx);
                int64_t o = (z * py + y) * px + xx;
                int in = sz >= 0 && sz < nz && sy >= 0 && sy < ny && sx >= 0 && sx < nx;
                int64_t src = (sz * ny + sy) * nx + sx;
                for (int c = 0; c < C; c++) x[(int64_t)c * pn + o] = in ? dc->x[(int64_t)c * nz * plane + src] : 0.f;
                t[o] = in ? ds->lut[dc->y[src]] : 0;
            }
    /* the slices read, out of this process's resident memory again (they stay in the page cache) */
    int64_t z0 = oz < 0 ? 0 : oz, z1 = oz + pz > nz ? nz : oz + pz;
    for (int c = 0; c < C; c++) release(dc, (const char *)(dc->x + (int64_t)c * nz * plane + z0 * plane), (size_t)((z1 - z0) * plane) * 4);
    release(dc, (const char *)(dc->y + z0 * plane), (size_t)((z1 - z0) * plane));
    if (s->augment >= 2)
        for (int c = 0; c < C; c++) {
            float *xc = x + (int64_t)c * pn;
            /* intensity scale and shift (p = 0.5 each), on the brain only: zero stays "outside" */
            float scale = rng_unif(&r) < 0.5 ? (float)(0.9 + 0.2 * rng_unif(&r)) : 1.f;
            float shift = rng_unif(&r) < 0.5 ? (float)(0.2 * rng_unif(&r) - 0.1) : 0.f;
            int gamma_on = rng_unif(&r) < 0.3;
            float gamma = (float)(0.7 + 0.8 * rng_unif(&r));
            if (scale != 1.f || shift != 0.f)
                for (int64_t i = 0; i < pn; i++)
                    if (xc[i] != 0.f) xc[i] = xc[i] * scale + shift;
            if (gamma_on) { /* nnU-Net's gamma on the range of the brain voxels */
                float lo = INFINITY, hi = -INFINITY;
                for (int64_t i = 0; i < pn; i++)
                    if (xc[i] != 0.f) { lo = fminf(lo, xc[i]); hi = fmaxf(hi, xc[i]); }
                if (hi > lo)
                    for (int64_t i = 0; i < pn; i++)
                        if (xc[i] != 0.f) xc[i] = lo + (hi - lo) * powf((xc[i] - lo) / (hi - lo), gamma);
            }
        }
}
