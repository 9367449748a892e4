/*
 * make_brats.c: writes a BraTS-like data set of N synthetic cases, so that
 * the demo, the tests and the reproduction have data that looks like BraTS
 * without a download. Each case is four co-registered modalities (FLAIR, T1,
 * T1ce, T2) of a head and its reference labels, a function of (--seed, case
 * index) only: not of the thread count, the order cases are written in, or
 * the names they get, so `--first K --cases 1` rewrites case K byte for
 * byte. It is a picture of the anatomy, not a physical MR simulation.
 *
 *   make_brats OUTDIR --cases N [--seed S] [--size 240x240x155] [--spacing 1]
 *              [--layout brats2021|brats2023|nnunet] [--difficulty 0.25]
 *              [--prefix NAME] [--first K] [--threads T] [--tissue DIR] [--quiet]
 *
 * Layouts (K = the case index, 5 digits):
 *   brats2021  OUTDIR/CASE/CASE_flair|_t1|_t1ce|_t2|_seg.nii.gz, CASE = BraTS2021_K;
 *              labels 0 background, 1 necrotic core, 2 oedema, 4 enhancing
 *   brats2023  OUTDIR/CASE/CASE-t2f|-t1n|-t1c|-t2w|-seg.nii.gz, CASE = BraTS-GLI-K-000;
 *              labels 0, 1 necrotic core, 2 oedema, 3 enhancing
 *   nnunet     OUTDIR/imagesTr/CASE_0000..0003.nii.gz (0 flair, 1 t1, 2 t1ce, 3 t2),
 *              OUTDIR/labelsTr/CASE.nii.gz, OUTDIR/dataset.json, CASE = BraTS_K;
 *              labels 0, 1 necrotic core, 2 oedema, 3 enhancing (nnU-Net wants
 *              consecutive values)
 * --prefix replaces the part before K. --tissue DIR also writes
 * DIR/CASE_tissue.nii.gz, the tissue each voxel was drawn as (codes below).
 *
 * Geometry: RAS, voxel (i, j, k) at ((i - (nx-1)/2) sx, (j - (ny-1)/2) sy,
 * (k - (nz-1)/2) sz) mm, in both the sform and the qform (code 1): x towards
 * the patient's right, y anterior, z superior. Images are int16, labels uint8.
 *
 * Anatomy, in mm at the default field of view and scaled with it (thin
 * layers keep about a voxel or more, so that small volumes still show
 * them): a head ellipsoid with a bumpy outline, narrower in front; scalp
 * (fat), skull, subarachnoid CSF; a brain with an interhemispheric fissure,
 * sulci cut in from the surface as the zero sheets of a smooth random field,
 * a grey-matter ribbon (~2.5 mm) along the surface, the sulci and the
 * fissure, white matter inside, deep grey nuclei, lateral and third
 * ventricles. 1 or 2 tumours (a third of cases have 2) deep in the brain at
 * random places, each with a lobulated outline: a necrotic core inside an
 * enhancing rim of irregular thickness, and oedema around it; the tumour
 * core displaces CSF, oedema spares it. Everything outside the head is 0 and
 * nothing inside is (as in BraTS, whose volumes are masked).
 *
 * Intensities (arbitrary units; each case scales each tissue by +-4% and
 * each modality by 0.85-1.15, as scanners differ):
 *
 *   tissue (code)       FLAIR   T1   T1ce   T2
 *   scalp fat (1)         400  900    900  550   bright in T1
 *   skull bone (2)         40   60     60   50   a dark rim in all
 *   CSF (3)               150  250    250 1400   dark in FLAIR and T1, bright in T2
 *   grey matter (4)       520  520    530  700
 *   white matter (5)      420  700    700  520   WM > GM in T1, GM > WM in T2 and FLAIR
 *   oedema (6), label 2   900  450    460 1050   bright in FLAIR and T2
 *   enhancing (7), 4|3    700  480   1300  800   bright in T1ce (brightest of the brain)
 *   necrosis (8), label 1 520  300    320 1200   dark in T1ce, bright in T2
 *
 * Image formation: each voxel mixes the tissues by their share of it: every
 * boundary is a ramp, the logistic of the signed distance over a width w
 * (partial volume and the scanner's blur); then a smooth multiplicative bias
 * field (exp of a random quadratic, per modality), then Rician noise (the
 * magnitude of the signal plus complex Gaussian noise of sigma per channel),
 * rounded. The labels are the tissues' sharp boundaries, so voxels near a
 * boundary are truly ambiguous. --difficulty d in [0, 1] sets that:
 *   w = (0.35 + 1.15 d) voxels; sigma = (0.02 + 0.08 d) x the modality's WM
 *   level; the lesion levels are pulled towards WM by a factor (1 - 0.5 d);
 *   the bias field's amplitude is 0.10 + 0.15 d.
 * At the default size and difficulty the mean over each tissue's voxels
 * follows every direction of the table; as d grows the blur mixes thin
 * layers (scalp, skull, cortex) and small necroses with their neighbours,
 * while the lesions against white matter and CSF keep their directions.
 *
 * Uses only the public API for NIfTI (atomic writes); dataset.json is written
 * with libjansson, atomically as well. Cases run in parallel (OpenMP), one
 * case per thread (--threads, default all cores); a thread holds one case,
 * about 170 MB at 240x240x155.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "vbseg.h"

enum { T_AIR, T_SCALP, T_BONE, T_CSF, T_GM, T_WM, T_OEDEMA, T_ENH, T_NEC, N_TISSUE };
enum { L_BRATS2021, L_BRATS2023, L_NNUNET };

static const float base_level[N_TISSUE][4] = {
    /* FLAIR, T1, T1ce, T2 */
    {0, 0, 0, 0},           /* air */
    {400, 900, 900, 550},   /* scalp fat */
    {40, 60, 60, 50},       /* bone */
    {150, 250, 250, 1400},  /* CSF */
    {520, 520, 530, 700},   /* grey matter */
    {420, 700, 700, 520},   /* white matter */
    {900, 450, 460, 1050},  /* oedema */
    {700, 480, 1300, 800},  /* enhancing rim */
    {520, 300, 320, 1200},  /* necrosis */
};

/* ---- counter-based randomness: splitmix64 of (key + n * gamma) ---------- */

#define GAMMA 0x9E3779B97F4A7C15ull
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/* a stream's key from (seed, case, stream): every case and stream its own */
static uint64_t stream_key(uint64_t seed, uint64_t case_index, uint64_t stream) {
    return mix64(mix64(mix64(seed + GAMMA) + case_index * GAMMA + 1) + stream * GAMMA + 2);
}
typedef struct { uint64_t key, n; } rng;
static double uni(rng *r) { return (double)(mix64(r->key + ++r->n * GAMMA) >> 11) * 0x1.0p-53; }
static double range(rng *r, double lo, double hi) { return lo + (hi - lo) * uni(r); }
static void unit_vector(rng *r, double v[3]) {
    double z = range(r, -1, 1), a = range(r, 0, 6.283185307179586), s = sqrt(1 - z * z);
    v[0] = s * cos(a); v[1] = s * sin(a); v[2] = z;
}

/* ---- one case's anatomy ----------------------------------------------- */

/* a lobulated outline: radius factor 1 + sum_k a_k cos(f_k (u . v_k) + phase_k) over unit directions u */
typedef struct { float a[4], f[4], ph[4], v[4][3]; } lobes;
static void lobes_draw(rng *r, lobes *l, double amp) {
    for (int k = 0; k < 4; k++) {
        double v[3];
        unit_vector(r, v);
        for (int d = 0; d < 3; d++) l->v[k][d] = (float)v[d];
        l->a[k] = (float)(amp * range(r, 0.3, 1) / 2);
        l->f[k] = (float)range(r, 2, 5);
        l->ph[k] = (float)range(r, 0, 6.283185307179586);
    }
}
static float lobes_at(const lobes *l, const float u[3]) {
    float m = 1;
    for (int k = 0; k < 4; k++) m += l->a[k] * cosf(l->f[k] * (u[0] * l->v[k][0] + u[1] * l->v[k][1] + u[2] * l->v[k][2]) + l->ph[k]);
    return m;
}

typedef struct {
    float c[3];                  /* centre, mm from the head's centre */
    float rc, rim, ed;           /* core radius, rim thickness, oedema reach (mm) */
    float reach;                 /* beyond this distance nothing of it shows */
    lobes core, rimv, edv;
} tumour;

typedef struct {
    float head[3];               /* head semi-axes (mm) */
    float ctr[3];                /* head centre (mm from the volume's centre) */
    lobes bumps;                 /* the head outline's bumps, mm */
    float scalp, bone, csf;      /* layer thicknesses (mm) */
    float gyr_k[6], gyr_ph[6];   /* the folding field's wave numbers and phases */
    float t_gm, sulc_depth, sulc_hw, fis_hw, fis_z; /* cortex (mm) */
    float vent_scale, vox;       /* ventricle size factor; the smallest voxel side (mm) */
    float scale;                 /* the anatomy's size against the default field of view */
    int n_tumours;
    tumour t[2];
    float level[N_TISSUE][4];    /* after the case's gains and the difficulty */
    float bias[4][10];           /* per modality: quadratic coefficients of the log bias */
    float sigma[4];              /* Rician noise */
    float w;                     /* boundary ramp width (mm) */
} anatomy;

static float sq(float x) { return x * x; }
static float maxf(float a, float b) { return a > b ? a : b; }
static float minf(float a, float b) { return a < b ? a : b; }

/* approximate signed distance (mm) to the ellipsoid of semi-axes a centred at 0 */
static float ellipsoid(float x, float y, float z, float ax, float ay, float az) {
    float k0 = sqrtf(sq(x / ax) + sq(y / ay) + sq(z / az)), k1 = sqrtf(sq(x / (ax * ax)) + sq(y / (ay * ay)) + sq(z / (az * az)));
    return k1 > 1e-12f ? k0 * (k0 - 1) / k1 : -minf(ax, minf(ay, az));
}

/* The folding field g (a sum of three products of waves) and the distance
 * |g| / |grad g| (mm) to its zero sheets, where the sulci are cut. */
static float fold_distance(const anatomy *a, const float p[3]) {
    const float *k = a->gyr_k, *ph = a->gyr_ph;
    float s0 = sinf(k[0] * p[0] + ph[0]), c0 = cosf(k[0] * p[0] + ph[0]), s1 = sinf(k[1] * p[1] + ph[1]), c1 = cosf(k[1] * p[1] + ph[1]);
    float s2 = sinf(k[2] * p[1] + ph[2]), c2 = cosf(k[2] * p[1] + ph[2]), s3 = sinf(k[3] * p[2] + ph[3]), c3 = cosf(k[3] * p[2] + ph[3]);
    float s4 = sinf(k[4] * p[2] + ph[4]), c4 = cosf(k[4] * p[2] + ph[4]), s5 = sinf(k[5] * p[0] + ph[5]), c5 = cosf(k[5] * p[0] + ph[5]);
    float g = s0 * c1 + s2 * c3 + s4 * c5;
    float gx = k[0] * c0 * c1 - k[5] * s4 * s5, gy = -k[1] * s0 * s1 + k[2] * c2 * c3, gz = -k[3] * s2 * s3 + k[4] * c4 * c5;
    float gn = sqrtf(gx * gx + gy * gy + gz * gz);
    return fabsf(g) / maxf(gn, 0.05f * k[0]);
}

/* The signed distances (mm, negative inside) of one voxel's structures. */
typedef struct { float head, bone_out, skull_in, brain, carve, wm, core, nec, ed; } dists;

static void distances(const anatomy *a, const float pw[3], dists *d) {
    float p[3] = {pw[0] - a->ctr[0], pw[1] - a->ctr[1], pw[2] - a->ctr[2]};
    float r = sqrtf(p[0] * p[0] + p[1] * p[1] + p[2] * p[2]) + 1e-6f, u[3] = {p[0] / r, p[1] / r, p[2] / r};
    /* narrower in front (+y), with bumps */
    float ax = a->head[0] * (1 - 0.06f * maxf(-1, minf(1, p[1] / a->head[1])));
    d->head = ellipsoid(p[0], p[1], p[2], ax, a->head[1], a->head[2]) - (lobes_at(&a->bumps, u) - 1);
    d->bone_out = d->head + a->scalp;
    d->skull_in = d->bone_out + a->bone;
    d->brain = d->skull_in + a->csf;
    const float big = 1e4f, S = a->scale, margin = 6 * a->w;
    d->carve = d->wm = d->core = d->nec = d->ed = big;
    if (d->brain > margin) return;
    float depth = -d->brain;
    /* the interhemispheric fissure, above the corpus callosum; the medial cortex lines it */
    float fis = maxf(fabsf(p[0]) - a->fis_hw, a->fis_z - p[2]);
    /* sulci: the folding field's zero sheets, down to sulc_depth below the surface */
    float sulc = big, fold = big;
    if (depth < a->sulc_depth + a->t_gm + margin) {
        fold = fold_distance(a, p) - a->sulc_hw;
        sulc = maxf(fold, depth - a->sulc_depth);
    }
    /* lateral ventricles: arched banana shapes either side of the midline, frontal horns forward, each a chain of
     * five overlapping ellipsoids along the arch (one long ellipsoid with a moving centre leaves stray sheets of
     * near-zero distance at its tips); the third ventricle */
    float vs = a->vent_scale, vent = big;
    if (fabsf(p[0]) < 45 * S && fabsf(p[1]) < 60 * S && fabsf(p[2]) < 40 * S)
        for (int side = -1; side <= 1; side += 2)
            for (int seg = 0; seg < 5; seg++) {
                float t = -1 + 0.5f * (float)seg;
                float xc = side * (6 + 8 * t * t) * S * vs, yc = 2 * S + 22 * t * S * vs, zc = (9 - 9 * t * t) * S;
                vent = minf(vent, ellipsoid(p[0] - xc, p[1] - yc, p[2] - zc, maxf(3.5f * S * vs, 1.5f * a->vox), 12 * S * vs,
                                            maxf(5.5f * S * vs, 1.5f * a->vox)));
            }
    vent = minf(vent, ellipsoid(p[0], p[1] + 4 * S, p[2] + 4 * S, maxf(1.5f * S * vs, a->vox), 12 * S, 8 * S));
    d->carve = minf(vent, minf(sulc, fis));
    /* deep grey nuclei (thalamus, basal ganglia) */
    float deep = big;
    for (int side = -1; side <= 1; side += 2) deep = minf(deep, ellipsoid(p[0] - side * 15 * S, p[1] + 3 * S, p[2] + 3 * S, 7 * S, 13 * S, 9 * S));
    /* grey matter: within t_gm of the surface, of a sulcus (and below its fundus), of the fissure; white matter the rest */
    float gm = minf(depth - a->t_gm, minf(maxf(fold, depth - a->sulc_depth) - a->t_gm, fis - a->t_gm));
    d->wm = maxf(-gm, -deep);
    for (int i = 0; i < a->n_tumours; i++) {
        const tumour *T = &a->t[i];
        float q[3] = {p[0] - T->c[0], p[1] - T->c[1], p[2] - T->c[2]};
        float rr = sqrtf(q[0] * q[0] + q[1] * q[1] + q[2] * q[2]);
        if (rr > T->reach + margin) continue;
        float v[3] = {q[0] / (rr + 1e-6f), q[1] / (rr + 1e-6f), q[2] / (rr + 1e-6f)};
        /* the necrosis keeps a quarter of the core's radius in every direction: a lobulated ball, never needles */
        float rc = T->rc * lobes_at(&T->core, v), rn = rc - minf(T->rim * maxf(0.4f, lobes_at(&T->rimv, v)), 0.75f * rc);
        float re = rc + T->ed * maxf(0.3f, lobes_at(&T->edv, v));
        d->core = minf(d->core, rr - rc);
        d->nec = minf(d->nec, rr - rn);
        d->ed = minf(d->ed, rr - re);
    }
}

/* hard tissue of a voxel, from the sharp boundaries */
static int tissue_of(const dists *d) {
    if (d->head >= 0) return T_AIR;
    if (d->bone_out >= 0) return T_SCALP;
    if (d->skull_in >= 0) return T_BONE;
    if (d->brain >= 0) return T_CSF;
    if (d->core < 0) return d->nec < 0 ? T_NEC : T_ENH;
    if (d->carve < 0) return T_CSF;
    if (d->ed < 0) return T_OEDEMA;
    return d->wm < 0 ? T_WM : T_GM;
}

/* each tissue's share of the voxel: the boundaries as logistic ramps of width w */
static void fractions(const anatomy *a, const dists *d, float f[N_TISSUE]) {
    float iw = 1 / a->w;
#define RAMP(x) (1 / (1 + expf(maxf(-60.f, minf(60.f, (x) * iw)))))
    float h = RAMP(d->head), bo = RAMP(d->bone_out), si = RAMP(d->skull_in), be = RAMP(d->brain);
    float q = RAMP(d->core), n = RAMP(d->nec), c = RAMP(d->carve), e = RAMP(d->ed), m = RAMP(d->wm);
#undef RAMP
    n = minf(n, q); /* the necrosis lies inside the core: its ramp never exceeds the core's */
    float normal = 1 - q, t = normal * (1 - c);
    f[T_AIR] = 1 - h;
    f[T_SCALP] = h - bo;
    f[T_BONE] = bo - si;
    f[T_CSF] = si - be + be * normal * c;
    f[T_NEC] = be * n;
    f[T_ENH] = be * (q - n);
    f[T_OEDEMA] = be * t * e;
    f[T_WM] = be * t * (1 - e) * m;
    f[T_GM] = be * t * (1 - e) * (1 - m);
}

static void make_anatomy(anatomy *a, uint64_t seed, uint64_t index, const int64_t n[3], const float sp[3], double difficulty) {
    rng r = {stream_key(seed, index, 0), 0};
    memset(a, 0, sizeof *a);
    float fov[3] = {(float)n[0] * sp[0], (float)n[1] * sp[1], (float)n[2] * sp[2]};
    const float frac[3] = {0.33f, 0.41f, 0.44f}, ref[3] = {79.2f, 98.4f, 68.2f}; /* at 240x240x155 mm */
    for (int i = 0; i < 3; i++) a->head[i] = (float)(fov[i] * frac[i] * range(&r, 0.95, 1.05));
    a->scale = cbrtf(a->head[0] * a->head[1] * a->head[2] / (ref[0] * ref[1] * ref[2]));
    a->vox = minf(sp[0], minf(sp[1], sp[2]));
    float S = a->scale, v = a->vox;
    for (int i = 0; i < 3; i++) a->ctr[i] = (float)(fov[i] * range(&r, -0.02, 0.02));
    lobes_draw(&r, &a->bumps, 3.0 * S);
    a->scalp = maxf((float)range(&r, 4, 6) * S, 1.5f * v);
    a->bone = maxf((float)range(&r, 5, 7) * S, 1.5f * v);
    a->csf = maxf((float)range(&r, 1.5, 3) * S, 1.0f * v);
    for (int i = 0; i < 6; i++) {
        a->gyr_k[i] = (float)(6.283185307179586 / (range(&r, 22, 30) * S));
        a->gyr_ph[i] = (float)range(&r, 0, 6.283185307179586);
    }
    a->t_gm = maxf(2.5f * S, 1.6f * v);
    a->sulc_depth = 12 * S;
    a->sulc_hw = maxf(0.8f * S, 0.6f * v);
    a->fis_hw = maxf(1.2f * S, 0.6f * v);
    a->fis_z = 14 * S;
    a->vent_scale = (float)range(&r, 0.8, 1.4);
    a->w = (float)(0.35 + 1.15 * difficulty) * v;
    /* the tumours: deep in the brain, off the midline, not centred in a ventricle */
    a->n_tumours = uni(&r) < 1.0 / 3 ? 2 : 1;
    for (int i = 0; i < a->n_tumours; i++) {
        tumour *T = &a->t[i];
        T->rim = maxf((float)range(&r, 2.5, 6) * S, 1.5f * v);
        T->rc = maxf((float)range(&r, 10, 22) * S * (i ? 0.75f : 1), T->rim + 2 * v);
        T->ed = maxf((float)range(&r, 6, 20) * S, 2 * v);
        lobes_draw(&r, &T->core, 0.35);
        lobes_draw(&r, &T->rimv, 0.8);
        lobes_draw(&r, &T->edv, 1.0);
        T->reach = T->rc * 1.5f + T->ed * 2.1f;
        for (int tries = 0; tries < 200; tries++) {
            double q[3];
            do { for (int k = 0; k < 3; k++) q[k] = range(&r, -1, 1); } while (q[0] * q[0] + q[1] * q[1] + q[2] * q[2] > 1);
            for (int k = 0; k < 3; k++) T->c[k] = (float)(q[k] * 0.55 * (a->head[k] - a->scalp - a->bone - a->csf));
            dists d;
            float pw[3] = {T->c[0] + a->ctr[0], T->c[1] + a->ctr[1], T->c[2] + a->ctr[2]};
            int n_t = a->n_tumours;
            a->n_tumours = 0; /* the site's own structures, without tumours */
            distances(a, pw, &d);
            a->n_tumours = n_t;
            if (fabsf(T->c[0]) > 8 * S && d.carve > 0 && -d.brain > T->rc * 1.2f) break;
        }
    }
    /* levels: the case's gains, then the lesions pulled towards white matter as the difficulty grows */
    float gain[4];
    for (int c = 0; c < 4; c++) gain[c] = (float)range(&r, 0.85, 1.15);
    for (int t = 0; t < N_TISSUE; t++)
        for (int c = 0; c < 4; c++) a->level[t][c] = base_level[t][c] * gain[c] * (float)range(&r, 0.96, 1.04);
    float keep = (float)(1 - 0.5 * difficulty);
    for (int t = T_OEDEMA; t <= T_NEC; t++)
        for (int c = 0; c < 4; c++) a->level[t][c] = a->level[T_WM][c] + keep * (a->level[t][c] - a->level[T_WM][c]);
    float amp = (float)(0.10 + 0.15 * difficulty);
    for (int c = 0; c < 4; c++) {
        for (int k = 0; k < 10; k++) a->bias[c][k] = k ? (float)range(&r, -1, 1) * amp / 3 : 0;
        a->sigma[c] = (float)(0.02 + 0.08 * difficulty) * a->level[T_WM][c];
    }
}

/* the bias field's log at normalised head coordinates x, y, z (about -1..1) */
static float log_bias(const float *b, float x, float y, float z) {
    return b[1] * x + b[2] * y + b[3] * z + b[4] * x * x + b[5] * y * y + b[6] * z * z + b[7] * x * y + b[8] * y * z + b[9] * x * z;
}

/* Fills img[c] (float, x fastest), labels and tissue codes of one case. */
static void render(const anatomy *a, uint64_t seed, uint64_t index, const int64_t n[3], const float sp[3], float *img[4],
                   uint8_t *tissue) {
    uint64_t nkey[4];
    for (int c = 0; c < 4; c++) nkey[c] = stream_key(seed, index, 1 + (uint64_t)c);
    float o[3];
    for (int i = 0; i < 3; i++) o[i] = -0.5f * (float)(n[i] - 1) * sp[i];
    for (int64_t k = 0; k < n[2]; k++)
        for (int64_t j = 0; j < n[1]; j++)
            for (int64_t i = 0; i < n[0]; i++) {
                int64_t idx = (k * n[1] + j) * n[0] + i;
                float p[3] = {o[0] + (float)i * sp[0], o[1] + (float)j * sp[1], o[2] + (float)k * sp[2]};
                dists d;
                distances(a, p, &d);
                int t = tissue_of(&d);
                tissue[idx] = (uint8_t)t;
                if (t == T_AIR) {
                    for (int c = 0; c < 4; c++) img[c][idx] = 0;
                    continue;
                }
                float f[N_TISSUE];
                fractions(a, &d, f);
                float hx = (p[0] - a->ctr[0]) / a->head[0], hy = (p[1] - a->ctr[1]) / a->head[1], hz = (p[2] - a->ctr[2]) / a->head[2];
                for (int c = 0; c < 4; c++) {
                    float s = 0;
                    for (int q = 1; q < N_TISSUE; q++) s += f[q] * a->level[q][c];
                    s *= expf(log_bias(a->bias[c], hx, hy, hz));
                    /* Rician: |s + sigma (n1 + i n2)|, (n1, n2) by Box-Muller from one 64-bit draw of this voxel */
                    uint64_t h = mix64(nkey[c] + (uint64_t)idx * GAMMA);
                    float u1 = ((float)(h >> 40) + 0.5f) * 0x1.0p-24f, u2 = (float)(h & 0xffffff) * 0x1.0p-24f;
                    float rad = a->sigma[c] * sqrtf(-2 * logf(u1)), ang = 6.2831853f * u2;
                    float re = s + rad * cosf(ang), im = rad * sinf(ang);
                    float x = rintf(sqrtf(re * re + im * im));
                    img[c][idx] = x < 1 ? 1 : x > 32767 ? 32767 : x; /* nothing inside the head is 0 */
                }
            }
}

/* ---- writing ---------------------------------------------------------- */

typedef struct {
    const char *out, *prefix, *tissue_dir;
    int layout, quiet;
    uint64_t seed;
    int64_t n[3];
    float sp[3];
    double difficulty;
} config;

static const char *const chan_2021[4] = {"flair", "t1", "t1ce", "t2"}, *const chan_2023[4] = {"t2f", "t1n", "t1c", "t2w"};

static int make_dir(const char *p, char *err, size_t errlen) {
    if (!mkdir(p, 0755) || errno == EEXIST) {
        struct stat s;
        if (!stat(p, &s) && S_ISDIR(s.st_mode)) return 1;
        snprintf(err, errlen, "%s: exists and is not a folder", p);
        return 0;
    }
    snprintf(err, errlen, "%s: cannot create: %s", p, strerror(errno));
    return 0;
}

/* mkdir -p */
static int make_dirs(const char *path, char *err, size_t errlen) {
    char p[4096];
    if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p) { snprintf(err, errlen, "%.100s...: path too long", path); return 0; }
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            struct stat st;
            if (stat(p, &st) && !make_dir(p, err, errlen)) return 0;
            *s = '/';
        }
    return make_dir(p, err, errlen);
}

static void case_name(const config *cf, uint64_t index, char *name, size_t n) {
    if (cf->layout == L_BRATS2023) snprintf(name, n, "%s%05llu-000", cf->prefix, (unsigned long long)index);
    else snprintf(name, n, "%s%05llu", cf->prefix, (unsigned long long)index);
}

/* the path of channel c (0..3), or of the labels (c = 4) */
static void file_path(const config *cf, const char *name, int c, char *p, size_t n) {
    if (cf->layout == L_NNUNET) {
        if (c < 4) snprintf(p, n, "%s/imagesTr/%s_%04d.nii.gz", cf->out, name, c);
        else snprintf(p, n, "%s/labelsTr/%s.nii.gz", cf->out, name);
    } else if (cf->layout == L_BRATS2023) {
        snprintf(p, n, "%s/%s/%s-%s.nii.gz", cf->out, name, name, c < 4 ? chan_2023[c] : "seg");
    } else {
        snprintf(p, n, "%s/%s/%s_%s.nii.gz", cf->out, name, name, c < 4 ? chan_2021[c] : "seg");
    }
}

/* buffers one thread reuses from case to case */
typedef struct {
    vbs_volume *ref;   /* the geometry; its data is image 0 */
    float *img[4];
    uint8_t *tissue;
} workspace;

static int write_case(const config *cf, workspace *ws, uint64_t index, char *err, size_t errlen) {
    anatomy a;
    make_anatomy(&a, cf->seed, index, cf->n, cf->sp, cf->difficulty);
    render(&a, cf->seed, index, cf->n, cf->sp, ws->img, ws->tissue);
    char name[256], path[4096], e[1024];
    case_name(cf, index, name, sizeof name);
    if (cf->layout != L_NNUNET) {
        snprintf(path, sizeof path, "%s/%s", cf->out, name);
        if (!make_dir(path, err, errlen)) return 0;
    }
    int64_t dims[4] = {cf->n[0], cf->n[1], cf->n[2], 1}, nvox = dims[0] * dims[1] * dims[2];
    for (int c = 0; c < 5; c++) {
        float *x = c < 4 ? ws->img[c] : ws->img[0];
        if (c == 4) { /* the labels, in the layout's values, into image 0's buffer (written by now) */
            const float enh = cf->layout == L_BRATS2021 ? 4 : 3;
            for (int64_t i = 0; i < nvox; i++) {
                int t = ws->tissue[i];
                x[i] = t == T_NEC ? 1 : t == T_OEDEMA ? 2 : t == T_ENH ? enh : 0;
            }
        }
        file_path(cf, name, c, path, sizeof path);
        /* integer intensities: the library writes int16 for integer data above 255 (uint8 for labels) */
        if (vbs_volume_write_nifti(ws->ref, path, x, dims, 1, e, sizeof e)) { snprintf(err, errlen, "%s", e); return 0; }
    }
    if (cf->tissue_dir) {
        for (int64_t i = 0; i < nvox; i++) ws->img[0][i] = ws->tissue[i];
        snprintf(path, sizeof path, "%s/%s_tissue.nii.gz", cf->tissue_dir, name);
        if (vbs_volume_write_nifti(ws->ref, path, ws->img[0], dims, 1, e, sizeof e)) { snprintf(err, errlen, "%s", e); return 0; }
    }
    return 1;
}

/* text to path atomically: a temporary file in the same folder, fsync, rename */
static int write_atomic(const char *path, const char *text, char *err, size_t errlen) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) { snprintf(err, errlen, "%.3000s: cannot create: %s", path, strerror(errno)); return 0; }
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t k = write(fd, text + off, len - off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        off += (size_t)k;
    }
    int why = off < len ? errno : 0;
    if (!why && fsync(fd)) why = errno;
    if (close(fd) && !why) why = errno;
    if (!why && rename(tmp, path)) why = errno;
    if (why) {
        unlink(tmp);
        snprintf(err, errlen, "%.3000s: write failed: %s", path, strerror(why));
        return 0;
    }
    return 1;
}

/* nnU-Net's dataset.json; numTraining counts every label file in labelsTr (earlier runs' too) */
static int write_dataset_json(const config *cf, char *err, size_t errlen) {
    char p[4096];
    snprintf(p, sizeof p, "%s/labelsTr", cf->out);
    DIR *d = opendir(p);
    if (!d) { snprintf(err, errlen, "%.3000s: cannot list: %s", p, strerror(errno)); return 0; }
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        count += e->d_name[0] != '.' && n > 7 && !strcmp(e->d_name + n - 7, ".nii.gz");
    }
    closedir(d);
    json_t *root = json_object(), *ch = json_object(), *lab = json_object();
    int ok = root && ch && lab;
    for (int c = 0; ok && c < 4; c++) {
        char k[8];
        snprintf(k, sizeof k, "%d", c);
        ok = !json_object_set_new(ch, k, json_string(chan_2021[c]));
    }
    static const char *const ln[4] = {"background", "necrotic core", "edema", "enhancing tumour"};
    for (int l = 0; ok && l < 4; l++) ok = !json_object_set_new(lab, ln[l], json_integer(l));
    char desc[512];
    snprintf(desc, sizeof desc, "synthetic BraTS-like cases from make_brats (seed %llu, difficulty %g, %lldx%lldx%lld at %gx%gx%g mm)",
             (unsigned long long)cf->seed, cf->difficulty, (long long)cf->n[0], (long long)cf->n[1], (long long)cf->n[2], cf->sp[0], cf->sp[1],
             cf->sp[2]);
    ok = ok && !json_object_set_new(root, "name", json_string("SyntheticBraTS")) && !json_object_set_new(root, "description", json_string(desc)) &&
         !json_object_set(root, "channel_names", ch) && !json_object_set(root, "labels", lab) &&
         !json_object_set_new(root, "numTraining", json_integer(count)) && !json_object_set_new(root, "file_ending", json_string(".nii.gz"));
    char *text = ok ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(ch);
    json_decref(lab);
    json_decref(root);
    if (!text) { snprintf(err, errlen, "%s/dataset.json: out of memory", cf->out); return 0; }
    snprintf(p, sizeof p, "%s/dataset.json", cf->out);
    size_t n = strlen(text);
    char *t2 = malloc(n + 2);
    if (!t2) { free(text); snprintf(err, errlen, "%.3000s: out of memory", p); return 0; }
    memcpy(t2, text, n);
    memcpy(t2 + n, "\n", 2);
    free(text);
    ok = write_atomic(p, t2, err, errlen);
    free(t2);
    return ok;
}

/* ---- command line ----------------------------------------------------- */

static const char usage[] =
    "usage: make_brats OUTDIR --cases N [--seed 0] [--size 240x240x155] [--spacing 1 | SXxSYxSZ]\n"
    "                  [--layout brats2021|brats2023|nnunet] [--difficulty 0.25] [--prefix NAME] [--first K]\n"
    "                  [--threads T] [--tissue DIR] [--quiet]\n";

static int bad(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "make_brats: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    return 2;
}

static int parse_int(const char *s, long long lo, long long hi, long long *v) {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || end == s || *end || x < lo || x > hi) return 0;
    *v = x;
    return 1;
}

static int parse_real(const char *s, double lo, double hi, double *v) {
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end || !(x >= lo && x <= hi)) return 0;
    *v = x;
    return 1;
}

/* "AxBxC" (or one value for all three when one_ok) */
static int parse_triple(const char *s, int one_ok, int integer, double lo, double hi, double v[3]) {
    char buf[128], *parts[3];
    if (strlen(s) >= sizeof buf) return 0;
    strcpy(buf, s);
    int n = 0;
    for (char *t = buf, *x; n < 4; t = NULL) {
        if (!(x = strtok(t, "x"))) break;
        if (n == 3) return 0;
        parts[n++] = x;
    }
    if (!(n == 3 || (n == 1 && one_ok)) || strstr(s, "xx") || s[0] == 'x' || s[strlen(s) - 1] == 'x') return 0;
    for (int i = 0; i < n; i++) {
        long long k;
        if (integer ? !parse_int(parts[i], (long long)lo, (long long)hi, &k) : !parse_real(parts[i], lo, hi, &v[i])) return 0;
        if (integer) v[i] = (double)k;
    }
    if (n == 1) v[1] = v[2] = v[0];
    return 1;
}

int main(int argc, char **argv) {
    config cf = {.out = NULL, .prefix = NULL, .tissue_dir = NULL, .layout = L_BRATS2021, .seed = 0, .n = {240, 240, 155},
                 .sp = {1, 1, 1}, .difficulty = 0.25};
    long long cases = -1, first = 0, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); return 0; }
        if (!strcmp(a, "--quiet")) { cf.quiet = 1; continue; }
        if (a[0] != '-') {
            if (cf.out) return bad("a second output folder '%s' (the first is '%s')", a, cf.out);
            cf.out = a;
            continue;
        }
        if (i + 1 >= argc) return bad("%s needs a value%s", a, "");
        const char *v = argv[++i];
        if (!strcmp(a, "--cases")) {
            if (!parse_int(v, 1, 100000, &cases)) return bad("--cases %s: want a whole number in 1..100000%s", v, "");
        } else if (!strcmp(a, "--first")) {
            if (!parse_int(v, 0, 99999, &first)) return bad("--first %s: want a whole number in 0..99999%s", v, "");
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') return bad("--seed %s: want a whole number in 0..2^64-1%s", v, "");
            cf.seed = s;
        } else if (!strcmp(a, "--size")) {
            double d[3];
            if (!parse_triple(v, 0, 1, 16, 2048, d)) return bad("--size %s: want NXxNYxNZ, each 16..2048 (e.g. 240x240x155)%s", v, "");
            for (int k = 0; k < 3; k++) cf.n[k] = (int64_t)d[k];
        } else if (!strcmp(a, "--spacing")) {
            double d[3];
            if (!parse_triple(v, 1, 0, 0.01, 100, d)) return bad("--spacing %s: want S or SXxSYxSZ in mm, each 0.01..100%s", v, "");
            for (int k = 0; k < 3; k++) cf.sp[k] = (float)d[k];
        } else if (!strcmp(a, "--layout")) {
            if (!strcmp(v, "brats2021")) cf.layout = L_BRATS2021;
            else if (!strcmp(v, "brats2023")) cf.layout = L_BRATS2023;
            else if (!strcmp(v, "nnunet")) cf.layout = L_NNUNET;
            else return bad("--layout %s: want brats2021, brats2023 or nnunet%s", v, "");
        } else if (!strcmp(a, "--difficulty")) {
            if (!parse_real(v, 0, 1, &cf.difficulty)) return bad("--difficulty %s: want a number in 0..1%s", v, "");
        } else if (!strcmp(a, "--prefix")) {
            size_t n = strlen(v);
            if (n < 1 || n > 100 || strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.") != n)
                return bad("--prefix '%s': want 1 to 100 letters, digits, '_', '-' or '.'%s", v, "");
            cf.prefix = v;
        } else if (!strcmp(a, "--threads")) {
            if (!parse_int(v, 1, 256, &threads)) return bad("--threads %s: want a whole number in 1..256%s", v, "");
        } else if (!strcmp(a, "--tissue")) {
            cf.tissue_dir = v;
        } else {
            return bad("unknown option %s (see --help)%s", a, "");
        }
    }
    if (!cf.out) return bad("no output folder given (see --help)%s%s", "", "");
    if (cases < 0) return bad("--cases N is required%s%s", "", "");
    if (first + cases > 100000) return bad("--first + --cases goes past case 99999%s%s", "", "");
    if (!cf.prefix) cf.prefix = cf.layout == L_BRATS2021 ? "BraTS2021_" : cf.layout == L_BRATS2023 ? "BraTS-GLI-" : "BraTS_";
    int64_t nvox = cf.n[0] * cf.n[1] * cf.n[2]; /* at most 2048^3: no overflow */
    if (nvox > VBS_NIFTI_MAX_VOXELS) {
        fprintf(stderr, "make_brats: --size %lldx%lldx%lld: %lld voxels, more than a volume holds (2^31)\n", (long long)cf.n[0],
                (long long)cf.n[1], (long long)cf.n[2], (long long)nvox);
        return 2;
    }
    if (strlen(cf.out) > 3000 || (cf.tissue_dir && strlen(cf.tissue_dir) > 3000)) return bad("a folder name longer than 3000 bytes%s%s", "", "");

    char err[4096];
    if (!make_dirs(cf.out, err, sizeof err) || (cf.tissue_dir && !make_dirs(cf.tissue_dir, err, sizeof err))) {
        fprintf(stderr, "make_brats: %s\n", err);
        return 1;
    }
    if (cf.layout == L_NNUNET) {
        char p[4096];
        snprintf(p, sizeof p, "%s/imagesTr", cf.out);
        int ok = make_dir(p, err, sizeof err);
        snprintf(p, sizeof p, "%s/labelsTr", cf.out);
        if (!ok || !make_dir(p, err, sizeof err)) { fprintf(stderr, "make_brats: %s\n", err); return 1; }
    }
    int nthreads = threads ? (int)threads : omp_get_max_threads();
    if (nthreads > cases) nthreads = (int)cases;
    int failed = 0, done = 0;
    char first_err[4096] = "";
#pragma omp parallel num_threads(nthreads)
    {
        workspace ws = {0};
        float org[3] = {0};
        for (int k = 0; k < 3; k++) org[k] = -0.5f * (float)(cf.n[k] - 1) * cf.sp[k];
        int64_t dims[4] = {cf.n[0], cf.n[1], cf.n[2], 1};
        int ok = (ws.ref = vbs_volume_create(dims, cf.sp, org)) != NULL;
        if (ok) ws.img[0] = vbs_volume_data(ws.ref);
        for (int c = 1; c < 4 && ok; c++) ok = (ws.img[c] = malloc(sizeof(float) * (size_t)nvox)) != NULL;
        ok = ok && (ws.tissue = malloc((size_t)nvox)) != NULL;
        if (!ok) {
#pragma omp critical
            {
                if (!failed++) snprintf(first_err, sizeof first_err, "out of memory for a %lldx%lldx%lld case", (long long)cf.n[0],
                                        (long long)cf.n[1], (long long)cf.n[2]);
            }
        }
#pragma omp for schedule(dynamic, 1)
        for (long long i = first; i < first + cases; i++) {
            int stop;
#pragma omp atomic read
            stop = failed;
            if (stop || !ok) continue;
            char e[4096];
            if (!write_case(&cf, &ws, (uint64_t)i, e, sizeof e)) {
#pragma omp critical
                {
                    if (!failed++) snprintf(first_err, sizeof first_err, "%s", e);
                }
                continue;
            }
#pragma omp critical
            {
                done++;
                if (!cf.quiet) {
                    char name[256];
                    case_name(&cf, (uint64_t)i, name, sizeof name);
                    printf("make_brats: %s (%d/%lld)\n", name, done, cases);
                    fflush(stdout);
                }
            }
        }
        vbs_volume_free(ws.ref);
        for (int c = 1; c < 4; c++) free(ws.img[c]);
        free(ws.tissue);
    }
    if (failed) { fprintf(stderr, "make_brats: %s\n", first_err); return 1; }
    if (cf.layout == L_NNUNET && !write_dataset_json(&cf, err, sizeof err)) { fprintf(stderr, "make_brats: %s\n", err); return 1; }
    return 0;
}
