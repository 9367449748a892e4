/*
 * cli.h: helpers shared by the `vbseg` subcommands: option parsing with
 * one-line errors, and the entry points of each subcommand.
 */
#ifndef VBS_CLI_H
#define VBS_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "vbseg.h"

int cmd_create(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_bench_train(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_infer(int argc, char **argv);
int cmd_eval(int argc, char **argv);

/* Prints "vbseg <cmd>: <msg>" to stderr and returns 2 (usage) or 1. */
int cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Strict integer/float parsing: the whole string, within [lo, hi]. */
int cli_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi, long long *out);
int cli_float(const char *cmd, const char *opt, const char *s, double *out);
/* "1x4x240x240" -> dims; returns ndim or -1. */
int cli_shape(const char *s, int64_t *dims, int max);
/* 1 if s ends with t (a file name's suffix) */
int cli_ends_with(const char *s, const char *t);
/* argv[i] is an option taking a value: returns it, or NULL after printing an error. */
const char *cli_value(const char *cmd, int argc, char **argv, int *i);

/* The PNG montage of a case (preview.c). The volumes are x*y*z floats, x
 * fastest, all borrowed. */
typedef struct {
    const char *case_name;
    const float *scan;          /* x*y*z: the first model channel, raw intensities */
    const float *labels;        /* x*y*z: label values */
    const float *mi;            /* x*y*z: mutual information (nats) */
    int64_t dims[3];            /* x, y, z */
    double affine[4][4];        /* voxel (i, j, k, 1) -> world mm (RAS+), as vbs_volume_affine */
    int affine_code;            /* its return value; 0: no affine, the voxel order is shown */
    const vbs_card *card;       /* label names and values for the legend; NULL: the values found */
    float background;           /* the background label value (not coloured) */
    float mi_max;               /* > 0: the colour bar's top (--preview-max); else the case's max */
} preview_in;

/* Where write_preview puts things (for the tests): the slices shown, top row
 * first (the most superior), and the pixel rectangles {x, y, w, h}. */
typedef struct {
    int n_slices;
    int64_t slice[4];           /* index along the slice axis */
    double position[4];         /* mm along the world axis closest to the slice axis */
    int slice_axis;             /* voxel axis 0..2 the slices cut */
    int width, height;          /* the whole image */
    int panel[4][3][4];         /* per row: the scan, labels and MI panels */
    int bar[4];                 /* the colour bar with its title, ticks and note */
    float bar_top;              /* the value at the bar's top end */
} preview_layout;

/* Chooses the slices and lays the image out; 1 on success, else 0 and err. */
int preview_plan(const preview_in *p, preview_layout *out, char *err, size_t errlen);
/* Writes the montage as PNG, atomically; 1 on success, else 0 and err. */
int write_preview(const char *path, const preview_in *p, char *err, size_t errlen);
/* The 5x8 glyph of a character: 40 chars, row by row, '#' set and '.' clear.
 * Every printable ASCII character has one; anything else gets '?'s. */

/* QC of a finished case (summary.csv's qc_flag, infer_report.c): "review" when
 * its mean mutual information over the predicted foreground is at least
 * QC_MI_REVIEW nats, when a label or region volume varies across the samples by
 * more than QC_CV_REVIEW (coefficient of variation), or when it ranks among the
 * most uncertain quarter of the run (rank 1 = the most uncertain of n_ok cases)
 * with a mean MI of at least QC_MI_FLOOR. A case without uncertainty (mean mode,
 * or sigma 0) is never flagged on rank alone. */
#define QC_MI_REVIEW 0.1
#define QC_CV_REVIEW 0.1
#define QC_MI_FLOOR 0.02
int qc_review(double mean_mi, double max_cv, int rank, int n_ok);
/* What the runtime does with graph output 0 (info.c), for `info` and
 * `convert`: e.g. "softmax over 4 classes (inferred: the graph ends in raw
 * logits, node 'head' (Conv))". */
void cli_head_text(const vbs_model *m, char *buf, size_t len);

/* training_curves.png (curves.c): the loss parts, the validation Dice and
 * uncertainty, and the learning rate against the epoch; 1 on success. */
/* Library diagnostics to stderr when --verbose is given. */
void cli_log(vbs_log_level level, const char *msg, void *user);

#endif
