/*
 * vbseg.h: the public C API of vbseg, a runtime for Bayesian (variational)
 * segmentation networks.
 *
 * A quick tour:
 *
 *   vbs_model *m;
 *   if (vbs_model_load("unet.vbseg", &m) != VBS_OK) {
 *       fprintf(stderr, "%s\n", vbs_model_errmsg(m));  // m holds the message
 *       vbs_model_free(m);
 *       return 1;
 *   }
 *   vbs_session *s;
 *   vbs_session_new(m, &s);                         // one per thread
 *   vbs_mc_opts o = vbs_mc_defaults();              // 20 samples, seed 0
 *   int64_t shape[4] = {1, 4, 240, 240};           // N, C, H, W
 *   vbs_session_run_mc(s, image, shape, 4, &o);     // image: float[1*4*240*240]
 *   const float *mi; vbs_map_info info;
 *   vbs_session_map(s, VBS_MAP_MUTUAL_INFO, &mi, &info);
 *   ...
 *   vbs_session_free(s);
 *   vbs_model_free(m);
 *
 * Every weight of a variational layer is a Gaussian N(mu, sigma^2) with
 * sigma = softplus(rho) = log(1 + exp(rho)). Each Monte-Carlo pass draws
 * w = mu + sigma * eps with eps from a counter-based RNG keyed by
 * (seed, sample index, tensor, element), so results never depend on the
 * thread count. N passes are accumulated per voxel into the maps below.
 *
 * Conventions:
 *  - Fallible calls return vbs_status: VBS_OK (0) or a negative error code.
 *    The message of the last error is read with vbs_model_errmsg() or
 *    vbs_session_errmsg(); it names the file, tensor or node at fault.
 *  - The library never exits, aborts or prints. Install a log callback
 *    with vbs_set_log() to receive its diagnostics.
 *  - Pointers returned by the library are borrowed unless marked "owned";
 *    borrowed pointers stay valid until the owning handle is freed or, for
 *    session results, until the next run on that session.
 *  - Freeing NULL is a no-op.
 *  - A model is read-only after loading and may be shared by threads;
 *    a session must be used by one thread at a time.
 */
#ifndef VBSEG_H
#define VBSEG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VBS_VERSION_MAJOR 0
#define VBS_VERSION_MINOR 1
#define VBS_VERSION_PATCH 0
#define VBS_VERSION_STRING "0.1.0"

/* The .vbseg format version this library writes and reads. */
#define VBS_FORMAT_MAJOR 1
#define VBS_FORMAT_MINOR 2

#define VBS_MAX_DIMS 8

typedef enum {
    VBS_OK = 0,
    VBS_ERR_IO = -1,          /* cannot open, read, write or rename a file */
    VBS_ERR_FORMAT = -2,      /* malformed .vbseg file (magic, sizes, protobuf) */
    VBS_ERR_VERSION = -3,     /* .vbseg major version newer than this reader */
    VBS_ERR_GRAPH = -4,       /* unknown op, bad attribute, dangling input, cycle */
    VBS_ERR_SHAPE = -5,       /* inconsistent shapes */
    VBS_ERR_NOMEM = -6,       /* allocation failed */
    VBS_ERR_ARG = -7,         /* invalid argument from the caller */
    VBS_ERR_NUMERIC = -8,     /* NaN or Inf where finite values are required */
    VBS_ERR_UNSUPPORTED = -9, /* valid but not supported by this build */
    VBS_ERR_NIFTI = -10,      /* malformed or unsupported NIfTI file */
    VBS_ERR_STATE = -11,      /* call out of order, e.g. a map before a run */
    VBS_ERR_CANCELLED = -12   /* stopped by the caller (a progress callback returned non-zero) */
} vbs_status;

/* A short constant name for a status code, e.g. "VBS_ERR_FORMAT". */
const char *vbs_status_name(vbs_status st);

/* ---- logging -------------------------------------------------------- */

typedef enum { VBS_LOG_ERROR = 0, VBS_LOG_WARN = 1, VBS_LOG_INFO = 2, VBS_LOG_DEBUG = 3 } vbs_log_level;

/* fn receives one line (no trailing newline) and the user pointer.
 * NULL (the default) silences the library. Not thread-safe: set it once
 * before other calls. */
typedef void (*vbs_log_fn)(vbs_log_level level, const char *msg, void *user);
void vbs_set_log(vbs_log_fn fn, void *user);

/* ---- model ---------------------------------------------------------- */

typedef struct vbs_model vbs_model;

/* Loads and fully validates a .vbseg file: preamble, header CRC, every
 * tensor's offset, length, alignment and dims, the graph (known ops and
 * attributes, defined inputs, no cycles, shape inference), mu/rho pairs,
 * weight finiteness, and the card's channel and label counts against the
 * graph input's channel dim and output 0's class dim. Weights are mmapped, not copied.
 * *out (owned) is always set unless memory runs out: on failure it holds
 * only the error message, for vbs_model_errmsg(); free it either way. */
vbs_status vbs_model_load(const char *path, vbs_model **out);

/* As vbs_model_load, from a buffer (borrowed: it must outlive the model
 * and stay unchanged; its data section must be 4-byte aligned in memory,
 * which a 64-byte aligned buffer guarantees). name is used in messages. */
vbs_status vbs_model_load_memory(const void *buf, size_t len, const char *name, vbs_model **out);

/* Writes the model atomically (temporary file, fsync, rename).
 * Loading a file and saving it gives the same bytes. */
vbs_status vbs_model_save(vbs_model *m, const char *path);

void vbs_model_free(vbs_model *m);

/* The last error message of m; never NULL. */
const char *vbs_model_errmsg(const vbs_model *m);

/* A graph input or output. dims[i] is -1 where the dim is symbolic;
 * dim_param[i] then names it (borrowed), else it is NULL. */
typedef struct {
    const char *name;
    int ndim;
    int64_t dims[VBS_MAX_DIMS];
    const char *dim_param[VBS_MAX_DIMS];
} vbs_value_info;

int vbs_model_n_inputs(const vbs_model *m);
int vbs_model_n_outputs(const vbs_model *m);
vbs_status vbs_model_input(const vbs_model *m, int i, vbs_value_info *out);
vbs_status vbs_model_output(const vbs_model *m, int i, vbs_value_info *out);

typedef enum { VBS_NORM_NONE = 0, VBS_NORM_ZSCORE_NONZERO = 1, VBS_NORM_PERCENTILE = 2 } vbs_norm;
typedef enum {
    VBS_LABELS_CUSTOM = 0,
    VBS_LABELS_BRATS_2018 = 1, /* 0/1/2/4, also BraTS 2021 */
    VBS_LABELS_BRATS_2023 = 2, /* 0/1/2/3 */
    VBS_LABELS_MSD = 3
} vbs_label_convention;
/* How the runtime turns graph output 0 into probabilities. NONE: the graph
 * outputs them already: one channel is P(foreground), K > 1 channels are
 * class probabilities summing to 1 (a Monte-Carlo run refuses values outside
 * [0, 1], or sums away from 1). AUTO is only for a card given to
 * vbs_convert_onnx: infer it from the graph; no model holds it. */
typedef enum { VBS_ACT_SOFTMAX = 0, VBS_ACT_SIGMOID = 1, VBS_ACT_NONE = 2, VBS_ACT_AUTO = 3 } vbs_output_act;

typedef struct { int value; const char *name; } vbs_label;
typedef struct { const char *key; const char *value; } vbs_kv;
typedef struct { const char *name; double value; } vbs_metric;

/* The model card. All pointers are borrowed from the model. */
typedef struct {
    int n_channels;
    const char *const *channels;     /* input channel names, in order */
    vbs_norm normalization;
    float percentile_lo, percentile_hi;
    int spatial_dims;                 /* 2 or 3 */
    int n_patch;
    const int64_t *patch;             /* slice or patch size */
    int n_labels;
    const vbs_label *labels;          /* class index i -> labels[i] */
    vbs_label_convention label_convention;
    int heteroscedastic;
    vbs_output_act output_activation;
    const char *producer, *producer_version, *training_data, *description;
    int epochs;
    uint64_t seed;
    int n_metrics;
    const vbs_metric *metrics;
    int n_extra;
    const vbs_kv *extra;
} vbs_card;

/* Borrowed; valid while m lives. */
const vbs_card *vbs_model_card(const vbs_model *m);

/* Summary numbers for `vbseg info`. */
typedef struct {
    int n_nodes;
    int64_t n_params;           /* mean parameters (plain + mu) */
    int64_t n_variational;      /* of which variational (mu with a rho) */
    float sigma_min, sigma_median, sigma_max; /* over softplus(rho); 0 if none */
} vbs_model_stats;
vbs_status vbs_model_get_stats(const vbs_model *m, vbs_model_stats *out);

/* What makes a model's Monte-Carlo samples differ, read from its graph at
 * each call (nothing is stored, so it cannot go stale): variational weights,
 * Dropout nodes (masks drawn in VBS_MODE_SAMPLE, the identity in
 * VBS_MODE_MEAN), both, or none. kind is one of "variational weights",
 * "dropout", "both", "none" (static strings). A GaussianSample latent is
 * counted apart: a "none" model with n_latent > 0 (plain weights, e.g.
 * `vbseg create --deterministic`, and a latent) still differs across
 * samples, by z alone. */
typedef struct {
    const char *kind;
    int64_t n_variational;          /* variational parameters (mu with a rho) */
    int n_dropout;                  /* Dropout nodes with a ratio > 0 */
    float dropout_min, dropout_max; /* their ratios (the probability of dropping); 0 if none */
    int n_latent;                   /* GaussianSample nodes */
} vbs_stochasticity;
vbs_status vbs_model_stochasticity(const vbs_model *m, vbs_stochasticity *out);

/* The prior of the variational weights (what the trainer's KL is taken
 * against): kind 0 a Gaussian N(0, sigma^2), 1 Blundell's scale mixture
 * pi N(0, sigma1^2) + (1 - pi) N(0, sigma2^2). VBS_ERR_STATE if the model has
 * no variational tensor or its tensors' priors differ. */
typedef struct { int kind; float sigma, pi, sigma1, sigma2; } vbs_prior_info;
vbs_status vbs_model_prior(const vbs_model *m, vbs_prior_info *out);

/* For a checkpoint written by the trainer: the epochs and optimiser steps done
 * (1); 0 for a plain model. */
int vbs_model_checkpoint_state(const vbs_model *m, int *epochs, int64_t *steps);

/* Node i's op name (e.g. "Conv") and node name; borrowed. */
int vbs_model_n_nodes(const vbs_model *m);
const char *vbs_model_node_op(const vbs_model *m, int i);
const char *vbs_model_node_name(const vbs_model *m, int i);

/* FLOPs (multiply-add = 2) of one forward pass for the given input shape. */
vbs_status vbs_model_flops(vbs_model *m, const int64_t *shape, int ndim, double *flops);

/* ---- converters --------------------------------------------------------- */

typedef enum {
    VBS_SIGMA_MOPED = 0, /* sigma = value * |w| (MOPED, Krishnan et al. 2020), at least sigma_floor */
    VBS_SIGMA_CONST = 1, /* sigma = value everywhere */
    VBS_SIGMA_NONE = 2   /* weights stay deterministic */
} vbs_sigma_kind;

typedef struct {
    vbs_sigma_kind sigma;
    float value;         /* MOPED's delta, or the constant sigma */
    float sigma_floor;   /* keeps rho finite where w = 0 */
    float prior_sigma;   /* Gaussian prior N(0, prior_sigma^2) recorded for the trainer */
    const vbs_card *card;/* borrowed, copied into the model; NULL: a card saying only where the model came
                          * from (and the output activation inferred from the graph) */
    int keep_batchnorm;  /* 1: never fold BatchNormalization into the Conv before it (with VBS_SIGMA_NONE it is
                          * folded by default); `vbseg convert CKPT --graph` keeps the twin's weights as exported */
} vbs_convert_opts;

/* MOPED with delta 0.1, floor 1e-6, prior N(0, 1). */
vbs_convert_opts vbs_convert_defaults(void);

/* Imports an ONNX model (opset 7+, the ops of this runtime) and makes the
 * weights and biases of Conv, ConvTranspose and PRelu variational as opts
 * says. The card's output activation is checked against the graph's end
 * (a graph ending in Softmax over the channels or in Sigmoid outputs
 * probabilities: NONE; raw logits: SOFTMAX over K > 1 channels or SIGMOID
 * for one); VBS_ACT_AUTO (or no card) infers it. The card's extra
 * "output_activation_source" says which. A contradicting activation, or a
 * channel or label count that disagrees with the graph, is refused.
 * *out is set as by vbs_model_load (on failure it holds only the
 * message, which names the node, its op and the attribute at fault). */
vbs_status vbs_convert_onnx(const char *path, const vbs_convert_opts *opts, vbs_model **out);

/* Writes the model as ONNX (opset 17) to path, atomically: VBS_EXPORT_MEAN
 * the weight means, Dropout and the GaussianSample latent as the identity
 * (what VBS_MODE_MEAN computes); VBS_EXPORT_SAMPLING draws anew at every
 * run, as one VBS_MODE_SAMPLE pass does: w = mu + softplus(rho) * eps per
 * variational weight and z = mean + softplus(rho) * eps per latent with
 * RandomNormalLike, and each Dropout as a mask drawn with RandomUniformLike
 * (ONNX Runtime's random numbers, not vbseg's). With seeded set, every
 * random node gets its own "seed" attribute derived from seed (distinct per
 * node), so a new ONNX Runtime session repeats the same sequence of
 * samples; unseeded, each session draws anew. The card is in
 * metadata_props ("vbseg.card": its JSON, as `vbseg convert --card` reads
 * it, and readable "vbseg.*" keys). On failure path is untouched and m's
 * message names the file and the node. */
typedef enum { VBS_EXPORT_MEAN = 0, VBS_EXPORT_SAMPLING = 1 } vbs_export_mode;
typedef struct {
    vbs_export_mode mode;
    int seeded;    /* sampling only: give every random node a seed */
    uint64_t seed;
} vbs_export_opts;
vbs_status vbs_export_onnx(vbs_model *m, const char *path, const vbs_export_opts *opts);

/* ---- session -------------------------------------------------------- */

typedef struct vbs_session vbs_session;

/* A session holds the activation plan and scratch buffers of one thread
 * (or of `threads` worker sessions, see vbs_mc_opts). m is borrowed and
 * must outlive the session. */
vbs_status vbs_session_new(const vbs_model *m, vbs_session **out);
void vbs_session_free(vbs_session *s);
const char *vbs_session_errmsg(const vbs_session *s);

typedef enum {
    VBS_MODE_SAMPLE = 0, /* draw w = mu + sigma * eps and the Dropout masks every pass */
    VBS_MODE_MEAN = 1    /* use mu only, Dropout the identity: deterministic, one pass suffices */
} vbs_mode;

typedef struct {
    int n_samples;   /* >= 1; forced to 1 in VBS_MODE_MEAN */
    uint64_t seed;
    vbs_mode mode;
    int threads;     /* worker threads over samples; 0 = library default */
    float overlap;   /* 3D sliding windows: fraction of the patch shared by neighbours, 0..0.9; 0 = 0.5 */
    float adaptive_tol; /* > 0: stop once the mutual-information map changes by less than this
                           (max over voxels) between blocks of adaptive_block samples */
    int adaptive_block; /* samples per block; 0 = 5 */
    /* Optional: called on the calling thread after every round of passes
     * (a pass is one sample of one slice or window) with the passes done so
     * far and the total planned (adaptive runs may stop before it). A
     * non-zero return stops the run, which then fails with
     * VBS_ERR_CANCELLED and leaves no maps. NULL: not called. */
    int (*progress)(void *user, int64_t done, int64_t total);
    void *progress_user;
} vbs_mc_opts;

vbs_mc_opts vbs_mc_defaults(void);

/* The thread count used when vbs_mc_opts.threads is 0 (measured: see the
 * README's figures). */
int vbs_default_threads(void);

/* One forward pass on the input as given (no padding). input is
 * N x C x spatial (borrowed, not kept) with the graph's rank; N is any batch
 * the graph allows (its fixed batch, or any for a symbolic one). sample
 * selects the weight draw and the Dropout masks in VBS_MODE_SAMPLE (every
 * batch item gets that sample's masks). Outputs are read with
 * vbs_session_output(). A shape the network cannot take fails with
 * VBS_ERR_SHAPE and a message in the caller's sizes naming what it takes,
 * e.g. "input 100x100: this network takes spatial sizes that are multiples
 * of 16 (e.g. 96x96 or 112x112); vbs_session_run_mc pads automatically". */
vbs_status vbs_session_forward(vbs_session *s, const float *input, const int64_t *shape, int ndim,
                               vbs_mode mode, uint64_t seed, uint64_t sample);

/* The checks of vbs_session_forward without running it: VBS_OK if one pass
 * takes this shape as given, else VBS_ERR_SHAPE (or VBS_ERR_ARG) with the
 * same message. */
vbs_status vbs_session_check_input(vbs_session *s, const int64_t *shape, int ndim);

/* Graph output i of the last forward pass (borrowed). */
vbs_status vbs_session_output(vbs_session *s, int i, const float **data, vbs_value_info *info);

/* Runs opts->n_samples passes with a fresh weight draw each and streams
 * them into per-voxel statistics; memory does not grow with n_samples.
 * input (borrowed, not kept) is one image, 1 x C x spatial with the model's
 * rank, or 1 x C x D x H x W for a 2D model, which then runs slice by slice
 * along D with one weight draw per sample for all slices (a batch of N
 * images is N calls). Any spatial size works:
 *  - a size the network cannot take is zero-padded (centred) to the next
 *    size it takes (multiples of 2, 4, ..., 128) and the maps are cropped back;
 *  - where the graph fixes a spatial dim, smaller inputs are padded to it and
 *    larger ones run in sliding windows of that size (2D and 3D); a 3D model
 *    whose card gives a 3D patch size runs in windows of that size. Windows
 *    overlap by opts->overlap, each window's probabilities are weighted by a
 *    Gaussian (sigma = window / 8) and blended; sample i uses one weight
 *    draw for every window and slice;
 *  - a graph with a fixed batch B > 1 carries B windows or slices per pass
 *    when its items cannot influence each other (no GaussianSample, no op
 *    along the batch axis), else one, the other slots zero.
 * Threads: opts->threads workers run samples in parallel; the results are
 * the same bytes for any thread count. */
vbs_status vbs_session_run_mc(vbs_session *s, const float *input, const int64_t *shape, int ndim,
                              const vbs_mc_opts *opts);

typedef enum {
    VBS_MAP_PROB_MEAN = 0,   /* K x spatial: mean class probability */
    VBS_MAP_PROB_VAR,        /* K x spatial: variance of p across samples */
    VBS_MAP_LABELS,          /* spatial: label value (card's label map), as float */
    VBS_MAP_ENTROPY,         /* spatial: predictive entropy H[E p] (nats) */
    VBS_MAP_EXPECTED_ENTROPY,/* spatial: E[H p], aleatoric */
    VBS_MAP_MUTUAL_INFO,     /* spatial: H[E p] - E[H p], epistemic */
    VBS_MAP_HET_ALEATORIC,   /* K x spatial: mean predicted logit variance (heteroscedastic) */
    VBS_MAP_HET_EPISTEMIC,   /* K x spatial: variance of predicted logit means (heteroscedastic) */
    VBS_MAP_COUNT
} vbs_map;

typedef struct {
    int ndim;                 /* dims of the map, without the batch axis */
    int64_t dims[VBS_MAX_DIMS];
    int64_t n_samples;        /* samples accumulated */
} vbs_map_info;

/* A short file-name-friendly name for a map, e.g. "mutual_info". */
const char *vbs_map_name(vbs_map which);

/* A map of the last vbs_session_run_mc (borrowed). The heteroscedastic maps
 * fail with VBS_ERR_STATE for a model without such a head. */
vbs_status vbs_session_map(vbs_session *s, vbs_map which, const float **data, vbs_map_info *info);

/* Per-sample label volumes of the last vbs_session_run_mc: counts[i * k + c]
 * is the number of voxels whose most probable class in sample i is c (for a
 * single sigmoid class, the voxels at p >= 0.5). Borrowed. */
vbs_status vbs_session_label_counts(vbs_session *s, const int64_t **counts, int64_t *n_samples, int *k);

/* ---- preprocessing ---------------------------------------------------- */

/* Normalises channel-major data (channels blocks of nvox floats) in place as
 * the card says: VBS_NORM_ZSCORE_NONZERO subtracts the mean and divides by
 * the standard deviation of each channel's non-zero voxels (zeros stay 0);
 * VBS_NORM_PERCENTILE clips to the card's [percentile_lo, percentile_hi]
 * percentiles and scales to [0, 1]; VBS_NORM_NONE leaves the data alone. */
vbs_status vbs_normalize(const vbs_card *card, float *data, int channels, int64_t nvox);

/* ---- volumes (NIfTI and .npy) -------------------------------------- */

typedef struct vbs_volume vbs_volume;

/* Reads a NIfTI-1 or NIfTI-2 file (.nii or .nii.gz). The header is
 * validated before anything is allocated: dim[0] in 1..7, used dims > 0,
 * a known datatype and bitpix, a sane vox_offset, finite scl_slope, a voxel
 * count under VBS_NIFTI_MAX_VOXELS, and the full data length present.
 * Data are converted to float32 with scl_slope/scl_inter applied.
 * *out (owned) is NULL on failure; err (size errlen) receives the message. */
#define VBS_NIFTI_MAX_VOXELS ((int64_t)1 << 31)
vbs_status vbs_volume_read_nifti(const char *path, vbs_volume **out, char *err, size_t errlen);

/* Reads a little-endian float32 or float64 C-order .npy array shaped
 * (H, W), (C, H, W) or (C, D, H, W) as a volume (x = W, y = H, z = D,
 * t = C). Batched arrays: vbs_read_npy. */
vbs_status vbs_volume_read_npy(const char *path, vbs_volume **out, char *err, size_t errlen);

/* Reads a little-endian float32 or float64 C-order .npy array of 1 to
 * VBS_MAX_DIMS dims, of at most 2^31 elements, as float32: *data (owned,
 * release with free()), dims[0..*ndim). NaN/Inf elements are set to 0 and
 * counted in *nan_count (may be NULL). On failure *data is NULL. */
vbs_status vbs_read_npy(const char *path, float **data, int64_t dims[VBS_MAX_DIMS], int *ndim, int64_t *nan_count,
                        char *err, size_t errlen);

/* A new zero-filled NIfTI-1 volume of dims (x, y, z, t) with voxel size
 * pixdim (mm) and a scanner-space qform/sform (code 1) placing voxel (0,0,0)
 * at origin[]; for generators and tests. NULL if out of memory or dims bad. */
vbs_volume *vbs_volume_create(const int64_t dims[4], const float pixdim[3], const float origin[3]);

void vbs_volume_free(vbs_volume *v);

/* 1 if a and b have the same dims (x, y, z), pixdim and affine (qform and
 * sform codes and matrices, within 1e-4); else 0 and why (size n) says what
 * differs. */
int vbs_volume_same_geometry(const vbs_volume *a, const vbs_volume *b, char *why, size_t n);

/* Volume of one voxel in millilitres (pixdim x*y*z, in the file's units). */
double vbs_volume_voxel_ml(const vbs_volume *v);

/* Voxel spacing along x, y, z (pixdim, absolute; 1 for .npy volumes). */
void vbs_volume_spacing(const vbs_volume *v, double out[3]);

/* The voxel-to-world transform: m maps (i, j, k, 1) to (x, y, z, 1) in mm,
 * RAS+ as NIfTI defines world space (x grows towards the patient's right,
 * y anterior, z superior). Returns the code of the transform used: the
 * sform code if it is > 0 (and the matrix is finite and invertible), else the
 * qform code if > 0 (likewise), else 0 with m = diag(pixdim x, y, z, 1): voxel
 * order, the orientation unknown. .npy volumes always give 0. */
int vbs_volume_affine(const vbs_volume *v, double m[4][4]);

/* Spatial dims x, y, z (z = 1 for 2D) and t (channels of a 4D file). */
void vbs_volume_dims(const vbs_volume *v, int64_t dims[4]);
/* Voxel data, x fastest (NIfTI order), x*y*z*t floats; borrowed. */
float *vbs_volume_data(vbs_volume *v);
/* Number of NaN voxels found (they are replaced by 0). */
int64_t vbs_volume_nan_count(const vbs_volume *v);

/* Writes data (x fastest, dims nx*ny*nz*nt) with the geometry (affine,
 * qform/sform codes, pixdim, units) of ref, atomically: temporary file,
 * fsync, rename. as_labels writes uint8 (or int16 if values exceed 255). */
vbs_status vbs_volume_write_nifti(const vbs_volume *ref, const char *path, const float *data,
                                  const int64_t dims[4], int as_labels, char *err, size_t errlen);

/* Writes an 8-bit RGB image (w x h, rows top to bottom) as PNG, atomically. */
vbs_status vbs_write_png(const char *path, int w, int h, const unsigned char *rgb, char *err, size_t errlen);

/* Writes a float32 .npy array atomically. */
vbs_status vbs_write_npy(const char *path, const float *data, const int64_t *dims, int ndim,
                         char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif /* VBSEG_H */
