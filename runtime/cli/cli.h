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
int cmd_convert(int argc, char **argv);
int cmd_infer(int argc, char **argv);
int cmd_eval(int argc, char **argv);

/* Prints "vbseg <cmd>: <msg>" to stderr and returns 2 (usage) or 1. */
int cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Strict integer/float parsing: the whole string, within [lo, hi]. */
int cli_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi, long long *out);
int cli_float(const char *cmd, const char *opt, const char *s, double *out);
/* "1x4x240x240" -> dims; returns ndim or -1. */
int cli_shape(const char *s, int64_t *dims, int max);
/* argv[i] is an option taking a value: returns it, or NULL after printing an error. */
const char *cli_value(const char *cmd, int argc, char **argv, int *i);

/* The PNG montage of a case (preview.c): scan, labels over it and the MI heat
 * map for up to 4 axial slices; dims are x, y, z of the volumes. 1 on success. */
int write_preview(const char *path, const float *scan, const float *labels, const float *mi, const int64_t dims[3], float background,
                  char *err, size_t errlen);

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

/* Library diagnostics to stderr when --verbose is given. */
void cli_log(vbs_log_level level, const char *msg, void *user);

#endif
