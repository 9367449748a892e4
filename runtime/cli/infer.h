/*
 * infer.h: the pieces of `vbseg infer` shared by its files: one case's
 * result (infer_case.c computes it), the summary columns and the reports
 * (infer_report.c writes summary.csv/.json and the manifest), and the
 * command itself (infer.c: options, checks, the loop, interruption).
 */
#ifndef VBS_CLI_INFER_H
#define VBS_CLI_INFER_H

#include "cases.h"
#include "cli.h"

#define INFER_MAX_COLS 16

typedef struct {
    char id[256];
    int ok;
    char error[1024];
    char notes[512];                  /* not errors: extra files ignored, NaN voxels set to 0 */
    double seconds;
    int samples;
    int n_cols;
    double vol[INFER_MAX_COLS], cv[INFER_MAX_COLS], mi[INFER_MAX_COLS]; /* per label or region */
    double qc;                        /* mean MI over the predicted foreground */
    double peak_mb;                   /* the process's peak resident memory after this case */
} result;

/* A finished case as the reports keep it, one per case of the run: the
 * messages on the heap at their own length (a result's buffers take 2 kB,
 * and a long run keeps a row per case). */
typedef struct {
    char *id, *error, *notes;         /* owned, never NULL */
    int ok;
    double seconds;
    int samples;
    int n_cols;
    double vol[INFER_MAX_COLS], cv[INFER_MAX_COLS], mi[INFER_MAX_COLS];
    double qc;
    double peak_mb;
} row;
/* Copies r into w; 0 when out of memory (w then holds nothing to free). */
int row_set(row *w, const result *r);
void row_free(row *w);

typedef struct {
    int n;
    char name[INFER_MAX_COLS][64];
    int n_values[INFER_MAX_COLS];
    int values[INFER_MAX_COLS][4];    /* label values making up each column */
} columns;

/* columns: every non-background label, then WT/TC/ET for BraTS conventions */
void make_columns(const vbs_card *card, columns *c);
int in_column(const columns *c, int col, int value);

/* The reports. Each write is atomic; 0 and a one-line err on failure. */
typedef struct {
    const row *r;
    int n;
    const columns *c;
    const char *header;               /* the manifest's first line (model hash and options) */
} report;
vbs_status write_summary_csv(const char *path, const report *rp, char *err);
vbs_status write_summary_json(const char *path, const report *rp, char *err);
vbs_status write_manifest(const char *path, const report *rp, char *err);
/* Fills r from a manifest row's fields after the id ("ok\tNUMBERS\tNOTES"); 1 on success. */
int parse_manifest_row(result *r, const columns *c, const char *fields);

/* What one case needs from the run. */
typedef struct {
    const char *out;                  /* output folder */
    vbs_model *m;
    vbs_session *s;
    const columns *cols;
    vbs_mc_opts o;
    int probs, regions, png, remap, crop, hetero;
    float preview_max;                /* --preview-max; 0: each case's own max */
} runner;

typedef enum { CASE_OK = 1, CASE_FAILED = 0, CASE_WRITE_FAILED = -1, CASE_CANCELLED = -2 } case_status;

/* One case, start to end: reads its files, runs the samples, writes every
 * output under a staging name and renames them all only when all are
 * written (labels last), so no finished-looking file exists for an
 * unfinished case. On any failure nothing of the case stays. Fills r. */
case_status run_case(runner *R, vbs_layout lay, const vbs_scan_case *sc, result *r);
/* The file names (no folder) of case id's outputs under the run's options,
 * the preview first and the label map last; returns how many. */
#define CASE_MAX_OUTPUTS 9
#define CASE_NAME_LEN 320
int case_output_names(const runner *R, const char *id, char names[][CASE_NAME_LEN]);
/* Removes a case's outputs, finished or staged (those the options write). */
void remove_case_outputs(const runner *R, const char *id);
/* 1 if every output the options ask for exists for case id. */
int case_outputs_exist(const runner *R, const char *id);
/* 1 if name is a staged output of case id, or the atomic writer's temporary of one. */
int is_case_temporary(const runner *R, const char *id, const char *name);
/* The staging prefix of unfinished outputs; a start removes leftovers. */
#define STAGE_PREFIX ".vbseg-part."

#endif
