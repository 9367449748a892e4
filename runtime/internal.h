/*
 * internal.h: the types shared inside libvbseg. Not installed.
 *
 * Three layers:
 *  - vbs_def: the model definition (graph, tensors, card) as plain C data.
 *    format/ converts it to and from the protobuf header; models/ builds
 *    one; it never touches protobuf itself.
 *  - vbs_graph: the compiled graph: value ids, parsed attributes, a
 *    topological order. Built once per model by graph.c.
 *  - vbs_plan / vbs_session: per input shape, the shapes and buffer
 *    offsets of every value; per thread, the buffers themselves.
 */
#ifndef VBS_INTERNAL_H
#define VBS_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "vbseg.h"

#define VBS_ERRLEN 512
#define VBS_MAX_IN 8
#define VBS_MAX_SPATIAL 3
#define VBS_ALIGN 64

/* ---- arena: every string and array of a definition lives here ------- */

typedef struct vbs_arena_block vbs_arena_block;
typedef struct { vbs_arena_block *head; } vbs_arena;

void *vbs_arena_alloc(vbs_arena *a, size_t n);         /* zeroed, 16-aligned */
char *vbs_arena_strdup(vbs_arena *a, const char *s);
void vbs_arena_free(vbs_arena *a);

/* ---- errors and logging -------------------------------------------- */

/* Formats into err (VBS_ERRLEN bytes) and returns st. */
vbs_status vbs_fail(char *err, vbs_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same, as "FILE: message" (the form of every file-related refusal), as
 * one printable line like vbs_fail_path's; FILE keeps at most 250 bytes and
 * the message has the rest. */
vbs_status vbs_fail_file(char *err, vbs_status st, const char *file, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* The same into a caller's buffer of len bytes (the public readers' err,
 * errlen), as one printable line: control bytes in the path or in names
 * read from a file are written as \n, \t, \xNN. */
vbs_status vbs_fail_path(char *err, size_t len, vbs_status st, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void vbs_log(vbs_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* json.c: a model card from JSON (the README's card format) into card; its
 * strings and arrays are registered in the caller's pool (free each, then the
 * pool). 0 and a one-line err naming the file and the field on failure. */
int vbs_read_card_json(const char *path, vbs_card *card, char ***pool, int *npool, char *err, size_t errlen);
/* json.c: the card as a compact JSON object of the fields vbs_read_card_json
 * reads (owned, free()); NULL if memory runs out. */
char *vbs_card_json(const vbs_card *card);

/* crc32c.c: CRC-32C (Castagnoli) of len bytes, continuing crc (0 to start;
 * pre- and post-inverted like zlib's crc32, so calls chain). vbs_crc32c
 * takes the SSE4.2 instruction where the CPU has it (VBS_NO_SSE42=1 in the
 * environment forces the table, for tests); _hw and _sw are the two paths,
 * for tests and benchmarks (_hw only where vbs_crc32c_hw_available()). */
uint32_t vbs_crc32c(uint32_t crc, const void *buf, size_t len);
/* 1 if any of the n floats at p is NaN or Inf (read as bits: no trap on a
 * signalling NaN, and -ffast-math cannot fold it away). */
static inline int vbs_any_nonfinite(const float *p, int64_t n) {
    const uint32_t *u = (const uint32_t *)p;
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad |= (u[i] & 0x7f800000u) == 0x7f800000u;
    return (int)bad;
}
uint32_t vbs_crc32c_hw(uint32_t crc, const void *buf, size_t len);
uint32_t vbs_crc32c_sw(uint32_t crc, const void *buf, size_t len);
int vbs_crc32c_hw_available(void);

/* a*b with overflow detection; returns 0 on overflow. */
int vbs_mul_ok(int64_t a, int64_t b, int64_t *out);

/* ---- definition ----------------------------------------------------- */

typedef enum { VBS_ATTR_INT = 1, VBS_ATTR_FLOAT = 2, VBS_ATTR_STRING = 3, VBS_ATTR_INTS = 4, VBS_ATTR_FLOATS = 5 } vbs_attr_type;

typedef struct {
    char *name;
    vbs_attr_type type;
    int64_t i;
    float f;
    char *s;
    int n;          /* length of ints or floats */
    int64_t *ints;
    float *floats;
} vbs_attr;

typedef struct {
    char *name, *op_type;
    int n_in, n_out, n_attr;
    char **in, **out;   /* "" = omitted optional input */
    vbs_attr *attr;
} vbs_node_def;

typedef struct {
    char *name;
    int ndim;
    int64_t dims[VBS_MAX_DIMS];   /* -1 where symbolic */
    char *param[VBS_MAX_DIMS];    /* name of a symbolic dim, else NULL */
} vbs_io_def;

typedef enum { VBS_ROLE_PLAIN = 0, VBS_ROLE_MU = 1, VBS_ROLE_RHO = 2, VBS_ROLE_OPTIM = 3 } vbs_role;
typedef enum { VBS_PRIOR_GAUSSIAN = 0, VBS_PRIOR_MIXTURE = 1 } vbs_prior_kind;

typedef struct {
    vbs_prior_kind kind;
    float sigma, pi, sigma1, sigma2;
} vbs_prior;

typedef struct {
    char *name;
    int ndim;
    int64_t dims[VBS_MAX_DIMS];
    int64_t numel;
    vbs_role role;
    char *rho;          /* ROLE_MU: its rho tensor */
    int has_prior;
    vbs_prior prior;
    uint64_t offset, nbytes;   /* in the data section */
    const float *data;         /* borrowed: mmap, caller buffer or builder */
    int finite_seen;           /* the reader's finite check, made in its CRC pass: 1 all finite, 2 a NaN or
                                * Inf, 0 not looked at (no CRC, or not from a file); vbs_model_init checks the rest */
} vbs_tensor_def;

/* A checkpoint's training state (format 1.1+; trainer/checkpoint.c): kept
 * by the reader and writer, ignored by the runtime. */
typedef struct {
    int epoch;
    int64_t step;
    double loss, dice_loss, ce, kl, val_loss, val_dice, val_dice_mc, val_epistemic, lr, seconds, images_per_s;
} vbs_epoch_log;

typedef struct {
    char *options, *data_id;
    int64_t step;
    int epoch, step_in_epoch;
    float sched_lr;
    double sched_best;
    int sched_bad;
    double best_metric;
    int best_epoch;
    double elapsed;
    int n_log;
    vbs_epoch_log *log;
} vbs_train_state;

typedef struct {
    int opset;
    char *graph_name;
    int n_nodes, n_inputs, n_outputs, n_tensors;
    vbs_node_def *nodes;
    vbs_io_def *inputs, *outputs;
    vbs_tensor_def *tensors;
    vbs_card card;             /* strings and arrays in the arena */
    vbs_train_state *train;    /* checkpoints only (in the arena), else NULL */
    int format_major, format_minor; /* as read (0.0 for a built definition) */
    int checksummed;           /* as read: every tensor's CRC-32C was verified (format 1.2+) */
    vbs_arena arena;
} vbs_def;

void vbs_def_free(vbs_def *d);

/* ---- format (format/) ---------------------------------------------- */

/* Parses and validates the file layout and header of buf (len bytes),
 * verifying every tensor's CRC-32C and that every padding byte is zero.
 * Fills d; tensor data pointers point into buf. name is for messages. */
vbs_status vbs_format_parse(const uint8_t *buf, size_t len, const char *name, vbs_def *d, char *err);

/* `vbseg info --verify`: checks the file at path as the parser does (the
 * preamble, the header CRC, every tensor checksum, the zero padding) but
 * goes on past a bad checksum or padding, calling report with one line
 * ("FILE: what") per problem; builds no graph. *n_tensors: the tensors
 * verified; *checksummed: 0 for a 1.0/1.1 file (its tensors have no
 * CRC). VBS_OK when there is no problem; otherwise err holds the first. */
typedef void (*vbs_report_fn)(void *user, const char *line);
vbs_status vbs_format_verify_file(const char *path, vbs_report_fn report, void *user, int *n_tensors, int *checksummed, char *err);

/* Assigns tensor offsets (64-byte aligned, in order) and writes the file
 * atomically, as format 1.2 with a CRC-32C per tensor. */
vbs_status vbs_format_write(const vbs_def *d, const char *path, char *err);
/* The same with flags: VBS_WRITE_NO_CHECKSUMS writes the 1.0/1.1 layout of
 * earlier versions (no checksums), so tests can make an old file. */
#define VBS_WRITE_NO_CHECKSUMS 1
vbs_status vbs_format_write_flags(const vbs_def *d, const char *path, int flags, char *err);

/* Writes a file atomically: fn writes to fd (a temporary file beside
 * path), then fsync, rename over path, fsync of the directory. On any
 * failure before the rename the temporary file is removed and path is
 * untouched; if only the directory's fsync fails, path is the whole new
 * file but the call still fails. Either way err
 * holds one line "PATH: reason" (fn's own message, which should end with
 * strerror's reason, e.g. "write failed: No space left on device"). */
typedef vbs_status (*vbs_write_fn)(int fd, void *user, char *err);
vbs_status vbs_atomic_write(const char *path, vbs_write_fn fn, void *user, char *err);
/* write(2) until done; 0 on success. */
int vbs_write_all(int fd, const void *buf, size_t n);

/* ---- ops ------------------------------------------------------------ */

typedef enum {
    VBS_OP_INVALID = 0,
    VBS_OP_CONV,
    VBS_OP_CONV_TRANSPOSE,
    VBS_OP_MAX_POOL,
    VBS_OP_AVERAGE_POOL,
    VBS_OP_GLOBAL_AVERAGE_POOL,
    VBS_OP_BATCH_NORM,
    VBS_OP_INSTANCE_NORM,
    VBS_OP_RELU,
    VBS_OP_LEAKY_RELU,
    VBS_OP_PRELU,
    VBS_OP_SIGMOID,
    VBS_OP_SOFTMAX,
    VBS_OP_SOFTPLUS,
    VBS_OP_ADD,
    VBS_OP_MUL,
    VBS_OP_CONCAT,
    VBS_OP_RESIZE,
    VBS_OP_PAD,
    VBS_OP_IDENTITY,
    VBS_OP_DROPOUT,
    VBS_OP_GAUSSIAN_SAMPLE,
    VBS_OP_SPATIAL_BROADCAST,
    VBS_OP_TRANSPOSE,
    VBS_OP_COUNT           /* new ops go just above this line */
} vbs_op;

typedef struct { int ndim; int64_t d[VBS_MAX_DIMS]; } vbs_shape;

int64_t vbs_shape_numel(const vbs_shape *s);

typedef enum { VBS_AUTOPAD_NOTSET = 0, VBS_AUTOPAD_SAME_UPPER, VBS_AUTOPAD_SAME_LOWER, VBS_AUTOPAD_VALID } vbs_autopad;

/* Conv, ConvTranspose, MaxPool, AveragePool. */
typedef struct {
    int nsp;                                  /* spatial dims, 0 until known */
    int64_t kernel[VBS_MAX_SPATIAL];
    int64_t stride[VBS_MAX_SPATIAL];
    int64_t dil[VBS_MAX_SPATIAL];
    int64_t pad[2 * VBS_MAX_SPATIAL];         /* begins, then ends */
    int64_t out_pad[VBS_MAX_SPATIAL];         /* ConvTranspose */
    int64_t out_shape[VBS_MAX_SPATIAL];       /* ConvTranspose output_shape */
    int has_kernel, has_pads, has_out_shape;
    vbs_autopad auto_pad;
    int64_t group;
    int ceil_mode, count_include_pad;
} vbs_window_attr;

typedef enum { VBS_RESIZE_NEAREST = 0, VBS_RESIZE_LINEAR } vbs_resize_mode;
typedef enum { VBS_CT_HALF_PIXEL = 0, VBS_CT_ASYMMETRIC, VBS_CT_ALIGN_CORNERS, VBS_CT_PYTORCH_HALF_PIXEL,
               VBS_CT_HALF_PIXEL_SYMMETRIC, VBS_CT_TF_HALF_PIXEL_FOR_NN } vbs_coord_mode;
typedef enum { VBS_NEAREST_ROUND_PREFER_FLOOR = 0, VBS_NEAREST_ROUND_PREFER_CEIL, VBS_NEAREST_FLOOR,
               VBS_NEAREST_CEIL } vbs_nearest_mode;

typedef struct {
    vbs_resize_mode mode;
    vbs_coord_mode coord;
    vbs_nearest_mode nearest;
    int n_scales, n_sizes;
    float scales[VBS_MAX_DIMS];
    int64_t sizes[VBS_MAX_DIMS];
} vbs_resize_attr;

typedef struct { int n; int64_t pads[2 * VBS_MAX_DIMS]; float value; } vbs_pad_attr;

/* One compiled node. Per-op attributes share a union: each op reads its own. */
typedef struct {
    vbs_op op;
    const char *name;       /* borrowed from the def */
    int n_in, n_out;
    int in[VBS_MAX_IN];     /* value ids; -1 = omitted */
    int out[2];
    uint32_t rng_stream;    /* GaussianSample, Dropout: stream id for their draws (0x80000000 | node index) */
    int fused_relu;         /* Conv: a following Relu folded into the epilogue (graph.c) */
    union {
        vbs_window_attr win;
        vbs_resize_attr resize;
        vbs_pad_attr pad;
        int64_t axis;       /* Concat */
        struct { int64_t axis; int flatten; } softmax;
        float alpha;        /* LeakyRelu */
        float ratio;        /* Dropout: the probability of dropping an element, in [0, 1) */
        struct { float eps, momentum; } norm; /* InstanceNormalization; BatchNormalization (+ momentum) */
    } a;
} vbs_node;

/* What a kernel sees. Shapes and buffers are indexed like the node's
 * inputs and outputs; omitted inputs have x[i] == NULL. */
typedef struct {
    const vbs_node *node;
    const float *x[VBS_MAX_IN];
    const vbs_shape *xs[VBS_MAX_IN];
    float *y[2];
    const vbs_shape *ys[2];
    float *work;            /* scratch of the size the op's work fn asked */
    uint64_t seed, sample;  /* for ops that sample */
    int sampling;           /* 0 in VBS_MODE_MEAN */
    int training;           /* 1 in a training pass: BatchNormalization uses the batch statistics, Dropout keys item j by sample + j */
    float *saved;           /* training: the node's own floats (the op's `saved` fn), kept until its backward */
} vbs_op_args;

/* A backward call. The forward's inputs and outputs are still live in
 * fwd (same pointers, same shapes). Each kernel *accumulates* (+=) the
 * gradient of every input whose dx[i] is non-NULL (an op with
 * backward_fresh writes those that fresh marks instead) and leaves the
 * others alone; it never writes dy. For a Conv whose Relu the graph fused, the
 * executor has already multiplied dy by (y > 0), so the kernel ignores
 * fused_relu. Random draws (GaussianSample's eps, Dropout's mask) are
 * recomputed from fwd's seed, sample and the node's stream, never stored. */
typedef struct {
    const vbs_op_args *fwd;
    const float *dy[2];       /* gradients of the outputs, shaped like fwd->ys */
    float *dx[VBS_MAX_IN];    /* gradients of the inputs, shaped like fwd->xs; NULL = not wanted */
    float *work;              /* scratch of the size the op's backward_work fn asked */
    unsigned fresh;           /* bit i: dx[i] holds nothing yet, so the op writes it instead of adding to it (only
                                 where the op's backward_fresh has bit i; the executor zeroes the others) */
} vbs_grad_args;

typedef vbs_status (*vbs_parse_fn)(vbs_node *n, const vbs_node_def *d, char *err);
typedef vbs_status (*vbs_shape_fn)(vbs_node *n, const vbs_shape *in, vbs_shape *out, char *err);
typedef size_t (*vbs_work_fn)(const vbs_node *n, const vbs_shape *in, const vbs_shape *out); /* floats */
typedef void (*vbs_forward_fn)(const vbs_op_args *a);
typedef void (*vbs_backward_fn)(const vbs_grad_args *g);
typedef double (*vbs_flops_fn)(const vbs_node *n, const vbs_shape *in, const vbs_shape *out);

typedef struct {
    const char *name;          /* ONNX op_type */
    vbs_parse_fn parse;        /* attributes and arity */
    vbs_shape_fn shape;
    vbs_forward_fn forward;    /* fast kernel */
    vbs_forward_fn naive;      /* reference kernel the tests compare against */
    vbs_work_fn work;          /* NULL: no scratch */
    vbs_flops_fn flops;        /* NULL: counted as 0 */
    int min_in, max_in, max_out;
    vbs_backward_fn backward;        /* fast backward kernel (lowers to GEMM where the forward does) */
    vbs_backward_fn backward_naive;  /* reference backward the tests compare against */
    vbs_work_fn backward_work;       /* NULL: no scratch */
    vbs_work_fn saved;               /* training: floats the forward keeps for the backward; NULL: none */
    unsigned backward_fresh;         /* bit i: the fast backward honours vbs_grad_args.fresh for input i */
} vbs_op_info;

extern const vbs_op_info vbs_ops[VBS_OP_COUNT];
vbs_op vbs_op_from_name(const char *name);

/* Attribute helpers for parse functions. */
const vbs_attr *vbs_attr_find(const vbs_node_def *d, const char *name);
vbs_status vbs_attr_int(const vbs_node_def *d, const char *name, int64_t dflt, int64_t *out, char *err);
vbs_status vbs_attr_float(const vbs_node_def *d, const char *name, float dflt, float *out, char *err);
vbs_status vbs_attr_ints(const vbs_node_def *d, const char *name, int maxn, int64_t *out, int *n, char *err);
vbs_status vbs_attr_floats(const vbs_node_def *d, const char *name, int maxn, float *out, int *n, char *err);
const char *vbs_attr_string(const vbs_node_def *d, const char *name, const char *dflt);
/* Refuses attributes not in the NULL-terminated list `known`. */
vbs_status vbs_attr_check_known(const vbs_node_def *d, const char *const *known, char *err);

/* Window (conv/pool) helpers shared by conv.c, conv_transpose.c, pool.c. */
vbs_status vbs_window_parse(vbs_node *n, const vbs_node_def *d, int is_conv, char *err);
/* Resolves auto_pad and computes the output spatial size of a forward
 * window op (Conv, pools). */
vbs_status vbs_window_out(vbs_node *n, const vbs_shape *x, vbs_shape *y, int64_t cout, char *err);

/* Hot loops written for the vectoriser are compiled twice: for the
 * baseline x86-64 the binary targets, and for AVX2+FMA. VBS_CLONES(name,
 * (params), body-call) defines name_base and name_avx2 (static) around an
 * always-inline body; VBS_PICK(name) returns the one this CPU runs. One
 * CPU always takes the same clone, so results stay reproducible on it. */
#if defined(__x86_64__) && defined(__GNUC__)
#define VBS_CLONES(name, params, call)                                  \
    static void name##_base params { call; }                           \
    __attribute__((target("avx2,fma"))) static void name##_avx2 params { call; }
#define VBS_PICK(name) (vbs_cpu_avx2() ? name##_avx2 : name##_base)
#define VBS_HAVE_AVX2() vbs_cpu_avx2()
int vbs_cpu_avx2(void); /* util.c; VBS_NO_AVX2=1 in the environment forces the baseline path (tests) */
/* util.c: the AVX2 path may use AVX-512 (gemm.c); VBS_NO_AVX512=1 (or VBS_NO_AVX2=1) keeps it to AVX2 (tests) */
int vbs_cpu_avx512(void);
#else
#define VBS_CLONES(name, params, call) static void name##_base params { call; }
#define VBS_PICK(name) (name##_base)
#define VBS_HAVE_AVX2() 0
#endif

/* ---- RNG ------------------------------------------------------------ */

/* Philox4x32-10. Keyed by the seed; the counter is (element/4, stream,
 * sample). Fills n standard normals for elements [first, first+n). */
void vbs_philox4x32(const uint32_t key[2], const uint32_t ctr[4], uint32_t out[4]);
void vbs_randn(uint64_t seed, uint64_t sample, uint32_t stream, uint64_t first, int64_t n, float *out);
/* The raw 32-bit words instead (Dropout's masks): element e is word e%4 of
 * the Philox block of counter (e/4, stream, sample) as above, so a value
 * depends only on (seed, sample, stream, e). */
void vbs_randu32(uint64_t seed, uint64_t sample, uint32_t stream, uint64_t first, int64_t n, uint32_t *out);

/* Scalar math shared by ops, stats and weight sampling. */
static inline float vbs_softplus(float x) {
    /* log(1+exp(x)) without overflow */
    return x > 20.f ? x : (x < -20.f ? __builtin_expf(x) : __builtin_log1pf(__builtin_expf(x)));
}
/* softplus^-1(sigma) = log(exp(sigma) - 1), in double (exact enough there);
 * a large sigma is its own inverse. Builders' rho from a sigma, and
 * torchbnn's log-sigma converted to rho (converters/twin.c). */
static inline double vbs_softplus_inv(double sigma) {
    return sigma > 30 ? sigma : __builtin_log(__builtin_expm1(sigma));
}
/* d softplus / dx = sigmoid(x), branch by branch of vbs_softplus (its
 * derivative as computed: 1 above 20, exp(x) below -20). */
static inline float vbs_softplus_grad(float x) {
    return x > 20.f ? 1.f : (x < -20.f ? __builtin_expf(x) : 1.f / (1.f + __builtin_expf(-x)));
}

/* ---- compiled graph and model --------------------------------------- */

typedef enum { VBS_VAL_ACT = 0, VBS_VAL_INPUT, VBS_VAL_WEIGHT, VBS_VAL_VARWEIGHT } vbs_val_kind;

typedef struct {
    const char *name;
    vbs_val_kind kind;
    int tensor;      /* WEIGHT/VARWEIGHT: def tensor index (the mu for VARWEIGHT) */
    int rho;         /* VARWEIGHT: def tensor index of rho */
    int input;       /* INPUT: graph input index */
    int producer;    /* ACT: node index, else -1 */
    int last_use;    /* position in the order of the last consumer, -1 = none */
    int is_output;
    vbs_shape wshape;/* WEIGHT/VARWEIGHT: fixed shape */
    int64_t var_off; /* VARWEIGHT: offset of its sampled copy in the session's weight buffer */
} vbs_value;

typedef struct {
    int n_values, n_nodes;
    vbs_value *values;
    vbs_node *nodes;
    int *order;          /* topological order of node indices (fused-away nodes removed) */
    int n_order;         /* nodes in order */
    int *input_vals;     /* per graph input: value id */
    int *output_vals;    /* per graph output: value id */
    int64_t var_total;   /* floats of all sampled weights */
    float **sigma;       /* per def tensor (mu): softplus(rho), owned; NULL otherwise */
    int n_sigma;
} vbs_graph;

struct vbs_model {
    vbs_def def;
    vbs_graph g;
    vbs_io_def *out_shapes;       /* per graph output: the declared shape, or one inferred at load */
    int loaded;
    void *map; size_t map_len;    /* mmap of the file, or NULL */
    char err[VBS_ERRLEN];
};

vbs_status vbs_graph_build(vbs_graph *g, const vbs_def *d, char *err);
void vbs_graph_free(vbs_graph *g);

/* Finishes a model from a filled def: compile, validate shapes, check
 * weights, cache sigma. Used by the loader and by builders. */
vbs_status vbs_model_init(vbs_model *m, const char *name);
/* The card against the compiled graph (part of vbs_model_init): a known
 * output activation; the channel count against input 0's channel dim and
 * the label count against output 0's class dim, where those are fixed.
 * Needs m->out_shapes. */
vbs_status vbs_model_check_card(vbs_model *m, const char *name);
vbs_model *vbs_model_alloc(void);

typedef enum { VBS_TAIL_LOGITS = 0, VBS_TAIL_SOFTMAX, VBS_TAIL_SIGMOID } vbs_tail_kind;
/* What graph output 0 carries, looking back through trailing Identity,
 * Dropout and Transpose nodes (exporters before opset 13 wrap a Softmax over
 * channels in two Transposes): probabilities from a Softmax over the channel
 * axis or from a Sigmoid, or anything else, read as raw logits. `what`
 * receives a phrase naming the deciding node, for messages and the card.
 * logits (may be NULL) receives the value holding output 0's logits with
 * output 0's axes in their order: output 0 for raw logits, else the
 * Softmax's or Sigmoid's input, back through layout nodes until the axes
 * are in order again (-1 if they never are). Needs m->out_shapes. */
vbs_tail_kind vbs_output_tail(const vbs_model *m, int *logits, char *what, size_t len);
/* The value a training loss reads as output 0's logits: output 0 when the
 * card's activation is softmax or sigmoid; for a graph that outputs its own
 * probabilities (none), the logits before its final Softmax over the
 * channels or Sigmoid over one channel (vbs_output_tail). Refuses a Sigmoid
 * over several channels and probabilities whose logits cannot be found. */
vbs_status vbs_model_logits(const vbs_model *m, int *v, char *err);

/* ---- plan and session ----------------------------------------------- */

typedef struct {
    vbs_shape *keys; int n_keys;   /* the graph input shapes planned for */
    vbs_node *nodes;       /* copies: shape inference resolves pads per plan */
    vbs_shape *shapes;     /* per value */
    int64_t *offset;       /* per ACT/INPUT value: float offset in the arena, -1 = none */
    int64_t arena_floats;
    int64_t work_floats;
    double flops;
} vbs_plan;

/* Infers every value's shape for graph input shapes in[] and plans the
 * activation arena (values whose lifetimes do not overlap share memory). */
vbs_status vbs_plan_build(vbs_plan *p, const vbs_graph *g, const vbs_shape *in, char *err);
/* The same; keep_all keeps every activation to the end of the pass (training:
 * the backward reads them). */
vbs_status vbs_plan_build_ex(vbs_plan *p, const vbs_graph *g, const vbs_shape *in, int keep_all, char *err);
/* Plans the backward's activation gradients: the gradient of value v (where
 * needs_grad[v] and v is an activation) lives from the backward of its last
 * consumer (from the start when pinned[v]: graph outputs and values the loss
 * feeds) to the backward of its producer, and gradients whose lifetimes do
 * not overlap share memory. goff[v]: float offset, -1 for none. */
void vbs_plan_grads(const vbs_plan *p, const vbs_graph *g, const char *needs_grad, const char *pinned, int64_t *goff,
                    int64_t *total);
void vbs_plan_free(vbs_plan *p);

/* One forward-pass worker: a plan and its buffers. */
typedef struct {
    vbs_plan plan;
    int planned;
    float *arena, *work, *wbuf;   /* owned; wbuf = sampled variational weights */
    int64_t arena_cap, work_cap;
    uint64_t wbuf_seed, wbuf_sample; int wbuf_state; /* 2: wbuf holds that draw */
    int last_sampled;             /* the last run read wbuf */
} vbs_worker;

vbs_status vbs_worker_run(vbs_worker *w, const vbs_model *m, const float *input, const vbs_shape *in_shape,
                          vbs_mode mode, uint64_t seed, uint64_t sample, char *err);
/* General form: one buffer per graph input; naive = use the reference kernels. */
vbs_status vbs_worker_run_naive(vbs_worker *w, const vbs_model *m, const float *const *inputs, const vbs_shape *in_shapes,
                                vbs_mode mode, uint64_t seed, uint64_t sample, int naive, char *err);
void vbs_worker_free(vbs_worker *w);
/* Pointer to value v's data after a run. */
const float *vbs_worker_value(const vbs_worker *w, const vbs_model *m, int v);

/* ---- training passes (exec.c): the same graph, plan and node walk ---- */

/* Which parameters a training pass differentiates, and where their gradients
 * go: param_off[v] is the float offset of value v's gradient in the caller's
 * buffer (weights and variational weights; for a variational weight the
 * gradient of the sampled w), -1 for a value that is not trained. pinned[v]
 * (may be NULL) marks activations whose gradient the caller adds to before
 * the backward (besides the graph outputs, e.g. a latent's mean and rho for
 * its KL term). Constant for a worker's life. */
typedef struct {
    const int64_t *param_off;
    const char *pinned;
} vbs_train_spec;

typedef struct {
    vbs_worker w;                  /* the plan (every activation kept to the end), arena, work */
    int ready;                     /* grads planned for w.plan */
    char *needs_grad, *pin;        /* per value */
    int *pos;                      /* per node: position in the order, -1 if fused away */
    int64_t *goff;                 /* per value: offset in garena, -1 none */
    int64_t *soff;                 /* per node: offset in saved, -1 none */
    float *garena, *saved;
    int64_t garena_cap, saved_cap, work_cap;
    float *work;                   /* scratch for forward and backward kernels */
    /* the last forward's arguments, for its backward */
    const float *inputs[16];
    const float *wbuf;
    int sampling;
    uint64_t seed, sample;
} vbs_train_worker;

/* A training forward pass: inputs as for vbs_worker_run_naive; wbuf holds the
 * weights of the variational values (laid out by var_off; NULL: their means);
 * seed and sample key the ops that sample (GaussianSample; Dropout, whose
 * batch item j takes sample + j) when sampling is set; BatchNormalization
 * uses batch statistics. naive: reference kernels. */
vbs_status vbs_train_forward(vbs_train_worker *t, const vbs_model *m, const vbs_train_spec *spec, const float *const *inputs,
                             const vbs_shape *in_shapes, const float *wbuf, int sampling, uint64_t seed, uint64_t sample,
                             int naive, char *err);
/* After vbs_train_forward: the gradient buffer of a graph output or pinned
 * value (zeroed by the forward, for the caller to add the loss's gradient to),
 * else NULL. Shaped like the value (t->w.plan.shapes[v]). */
float *vbs_train_grad(vbs_train_worker *t, int v);
/* The backward of the last forward: walks the order in reverse and
 * accumulates (+=) every trained parameter's gradient into pgrad at
 * spec->param_off. naive: reference kernels. */
vbs_status vbs_train_backward(vbs_train_worker *t, const vbs_model *m, const vbs_train_spec *spec, float *pgrad, int naive,
                              char *err);
void vbs_train_worker_free(vbs_train_worker *t);

/* Streaming Monte-Carlo statistics (mcstats.c): per-voxel sums over
 * samples, so memory does not grow with the number of samples. */
typedef struct {
    int64_t nvox;            /* spatial voxels */
    int k;                   /* classes */
    int hetero;
    vbs_output_act act;
    int64_t n;               /* samples committed */
    float *mean_p, *m2_p;   /* k * nvox: running mean of p, sum of squared deviations */
    float *mean_h;            /* nvox: running mean of per-sample entropies */
    float *mean_mu, *m2_mu, *mean_var; /* hetero: k * nvox: mean and m2 of logits, mean variance */
    int64_t *counts;         /* per sample and class: voxels whose argmax is that class */
    int64_t counts_cap;      /* samples the counts array holds */
    int counts_lost;         /* the array could not grow: the counts of this run are incomplete */
    /* act NONE (the graph's own probabilities): what vbs_mc_acc_check reports */
    int64_t n_out_of_range;  /* values outside [0, 1] beyond rounding, NaN included */
    int64_t n_nan;
    int64_t n_bad_sum;       /* K > 1: voxels whose probabilities do not sum to 1 */
    float lo, hi;            /* the smallest and largest value seen */
    float sum_lo, sum_hi;    /* K > 1: the smallest and largest sum over classes */
} vbs_mc_acc;

vbs_status vbs_mc_acc_init(vbs_mc_acc *a, int64_t nvox, int k, vbs_output_act act, int hetero);
/* Adds one sample's outputs for voxels [off, off+cnt): logits is k x cnt
 * (graph output 0), logvar k x cnt or NULL; nth is this sample's 1-based
 * number for these voxels. Call vbs_mc_acc_commit once per sample after
 * all its regions. */
void vbs_mc_acc_add(vbs_mc_acc *a, int64_t off, int64_t cnt, int64_t nth, const float *logits, const float *logvar);
/* As vbs_mc_acc_add with the class probabilities given (probs, k x cnt);
 * logits and logvar feed only the heteroscedastic statistics (may be NULL). */
void vbs_mc_acc_add_probs(vbs_mc_acc *a, int64_t off, int64_t cnt, int64_t nth, const float *probs, const float *logits,
                          const float *logvar);
void vbs_mc_acc_commit(vbs_mc_acc *a);
/* With act NONE, values outside [0, 1] (or, for K > 1, sums away from 1)
 * are not probabilities: the samples added so far are checked, and on
 * failure a one-line message naming `output` and the range found is
 * written to err (VBS_ERRLEN) and VBS_ERR_NUMERIC returned. The statistics
 * themselves clamp such values into [0, 1] (no log of a negative). */
vbs_status vbs_mc_acc_check(const vbs_mc_acc *a, const char *output, char *err);
/* Number of floats of a map. */
int64_t vbs_mc_map_size(const vbs_mc_acc *a, vbs_map which);
/* Writes a map into out (vbs_mc_map_size floats). */
void vbs_mc_acc_map(const vbs_mc_acc *a, vbs_map which, const vbs_card *card, float *out);
void vbs_mc_acc_free(vbs_mc_acc *a);

struct vbs_session {
    const vbs_model *m;
    vbs_worker *workers;
    int n_workers;
    vbs_mc_acc acc;
    int have_acc;
    vbs_shape map_shape;    /* spatial shape of the last MC run */
    float *maps[VBS_MAP_COUNT];   /* computed on first request, owned */
    float **in_buf, **out_buf;  /* per worker: the padded input of a pass, the cropped outputs */
    int64_t *in_cap, *out_cap;  /* their sizes in floats */
    int have_forward;       /* worker 0 holds a forward pass readable by vbs_session_output */
    char err[VBS_ERRLEN];
};

/* ---- BLAS wrapper (blas.c is the only file that includes cblas.h) ---- */

/* C (m x n, row-major, ldc) = A (m x k, lda) * B (k x n, ldb) + beta C */
void vbs_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
               const float *b, int64_t ldb, float beta, float *c, int64_t ldc);
void vbs_blas_set_threads(int n);
/* C (m x n) = A (m x k) B (k x n), dense row-major; the small-matrix kernel
 * of gemm.c (AVX2), or vbs_sgemm. */
void vbs_gemm(int64_t m, int64_t n, int64_t k, const float *a, const float *b, float *c);
/* C (m x n) = A (m x k) B^T, B (n x k), or C += that with acc; dense
 * row-major; scratch: n k floats (B^T for the AVX2 kernel), or vbs_sgemm. */
void vbs_gemm_nt(int64_t m, int64_t n, int64_t k, const float *a, const float *b, int acc, float *c, float *scratch);
/* dst (cols x rows) = src (rows x cols) transposed (gemm.c: 8x8 blocks in AVX2 registers) */
void vbs_transpose(const float *src, int64_t rows, int64_t cols, float *dst);

/* ---- volumes (nifti_io.c, npy.c) ----------------------------------- */

/* A headerless volume of dims (x, y, z, t); data uninitialised. */
vbs_volume *vbs_volume_new_raw(const int64_t dims[4]);
/* Counts NaN/Inf voxels into nan_count and zeroes them. */
void vbs_volume_count_nan(vbs_volume *v);

#endif /* VBS_INTERNAL_H */
