/*
 * infer_report.c: what `vbseg infer` reports: the summary columns (per
 * label, and per BraTS region), summary.csv and summary.json (one row per
 * case, failures first, then the most uncertain, each with its QC flag),
 * and the manifest (the model hash and options, then the finished cases
 * with their numbers, so that a re-run can skip them and still report
 * them). Also the QC rule, which `vbseg eval --merge` shares.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "infer.h"

/* libvbseg's atomic writer (temporary file, fsync, rename; err: one line "PATH: reason") */
vbs_status vbs_atomic_write(const char *path, vbs_status (*fn)(int, void *, char *), void *user, char *err);

/* err of an atomic writer's body holds 512 bytes (VBS_ERRLEN) */
static vbs_status fail(char *err, vbs_status st, const char *why) {
    snprintf(err, 512, "%s%s", st == VBS_ERR_IO ? "write failed: " : "", why);
    return st;
}

static void sanitize(const char *in, char *out, size_t n) {
    size_t k = 0;
    for (; *in && k + 1 < n; in++) {
        char c = *in;
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        out[k++] = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ? c : '_';
    }
    out[k] = 0;
}

void make_columns(const vbs_card *card, columns *c) {
    memset(c, 0, sizeof *c);
    for (int i = 1; i < card->n_labels && c->n < 12; i++) {
        sanitize(card->labels[i].name && card->labels[i].name[0] ? card->labels[i].name : "label", c->name[c->n], sizeof c->name[0]);
        c->values[c->n][0] = card->labels[i].value;
        c->n_values[c->n++] = 1;
    }
    if (card->n_labels == 0) { snprintf(c->name[0], sizeof c->name[0], "foreground"); c->values[0][0] = 1; c->n_values[0] = 1; c->n = 1; }
    int et = card->label_convention == VBS_LABELS_BRATS_2018 ? 4 : card->label_convention == VBS_LABELS_BRATS_2023 ? 3 : 0;
    if (et) {
        static const char *const names[3] = {"wt", "tc", "et"};
        int sets[3][3] = {{1, 2, et}, {1, et, -1}, {et, -1, -1}};
        for (int r = 0; r < 3; r++) {
            snprintf(c->name[c->n], sizeof c->name[0], "%s", names[r]);
            int k = 0;
            for (int j = 0; j < 3; j++)
                if (sets[r][j] >= 0) c->values[c->n][k++] = sets[r][j];
            c->n_values[c->n++] = k;
        }
    }
}

int in_column(const columns *c, int col, int value) {
    for (int j = 0; j < c->n_values[col]; j++)
        if (c->values[col][j] == value) return 1;
    return 0;
}

int qc_review(double mean_mi, double max_cv, int rank, int n_ok) {
    int quarter = (n_ok + 3) / 4;
    return mean_mi >= QC_MI_REVIEW || max_cv > QC_CV_REVIEW || (rank <= quarter && mean_mi >= QC_MI_FLOOR);
}

static void csv_escape(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s == '\n' ? ' ' : *s, f);
    }
    fputc('"', f);
}

static void json_escape(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static int cmp_result(const void *a, const void *b) {
    const row *x = *(const row *const *)a, *y = *(const row *const *)b;
    if (x->ok != y->ok) return x->ok - y->ok; /* failures first */
    if (x->qc != y->qc) return x->qc < y->qc ? 1 : -1;
    return strcmp(x->id, y->id);
}

static double max_cv(const row *r, const columns *c) {
    double m = 0;
    for (int k = 0; k < c->n; k++) m = fmax(m, r->cv[k]);
    return m;
}

/* A report being written: the stream on the temporary file and the cases in report order. */
typedef struct { FILE *f; const row **order; int n_ok; } sheet;

static int sheet_open(sheet *s, int fd, const report *rp) {
    s->f = fdopen(dup(fd), "w");
    s->order = malloc(sizeof *s->order * (size_t)(rp->n + 1));
    if (!s->f || !s->order) {
        if (s->f) fclose(s->f);
        free(s->order);
        return 0;
    }
    s->n_ok = 0;
    for (int i = 0; i < rp->n; i++) { s->order[i] = &rp->r[i]; s->n_ok += rp->r[i].ok; }
    qsort(s->order, (size_t)rp->n, sizeof *s->order, cmp_result);
    return 1;
}

static vbs_status sheet_close(sheet *s, char *err) {
    free(s->order);
    int bad = ferror(s->f);
    if (fclose(s->f) || bad) return fail(err, VBS_ERR_IO, strerror(errno ? errno : EIO));
    return VBS_OK;
}

static vbs_status csv_body(int fd, void *user, char *err) {
    const report *rp = user;
    sheet s;
    if (!sheet_open(&s, fd, rp)) return fail(err, VBS_ERR_NOMEM, "out of memory");
    fprintf(s.f, "case,status,error,notes,seconds,samples,peak_mb,qc_rank,qc_flag,qc_mean_mi");
    for (int i = 0; i < rp->c->n; i++) fprintf(s.f, ",%s_ml,%s_cv,%s_mean_mi", rp->c->name[i], rp->c->name[i], rp->c->name[i]);
    fprintf(s.f, "\n");
    for (int i = 0, rank = 0; i < rp->n; i++) {
        const row *r = s.order[i];
        csv_escape(s.f, r->id);
        fprintf(s.f, ",%s,", r->ok ? "ok" : "error");
        csv_escape(s.f, r->error);
        fputc(',', s.f);
        csv_escape(s.f, r->notes);
        if (!r->ok) { fprintf(s.f, ",,,,,,"); for (int k = 0; k < rp->c->n; k++) fprintf(s.f, ",,,"); fprintf(s.f, "\n"); continue; }
        rank++;
        fprintf(s.f, ",%.3f,%d,%.0f,%d,%s,%.6f", r->seconds, r->samples, r->peak_mb, rank,
                qc_review(r->qc, max_cv(r, rp->c), rank, s.n_ok) ? "review" : "ok", r->qc);
        for (int k = 0; k < rp->c->n; k++) fprintf(s.f, ",%.4f,%.4f,%.6f", r->vol[k], r->cv[k], r->mi[k]);
        fprintf(s.f, "\n");
    }
    return sheet_close(&s, err);
}

static vbs_status json_body(int fd, void *user, char *err) {
    const report *rp = user;
    sheet s;
    if (!sheet_open(&s, fd, rp)) return fail(err, VBS_ERR_NOMEM, "out of memory");
    fprintf(s.f, "[\n");
    for (int i = 0, rank = 0; i < rp->n; i++) {
        const row *r = s.order[i];
        fprintf(s.f, "  {\"case\": ");
        json_escape(s.f, r->id);
        fprintf(s.f, ", \"status\": \"%s\", \"error\": ", r->ok ? "ok" : "error");
        json_escape(s.f, r->error);
        fprintf(s.f, ", \"notes\": ");
        json_escape(s.f, r->notes);
        if (r->ok) {
            rank++;
            fprintf(s.f, ", \"seconds\": %.3f, \"samples\": %d, \"peak_mb\": %.0f, \"qc_rank\": %d, \"qc_flag\": \"%s\", \"qc_mean_mi\": %.6f, \"regions\": {",
                    r->seconds, r->samples, r->peak_mb, rank, qc_review(r->qc, max_cv(r, rp->c), rank, s.n_ok) ? "review" : "ok", r->qc);
            for (int k = 0; k < rp->c->n; k++)
                fprintf(s.f, "%s\"%s\": {\"ml\": %.4f, \"cv\": %.4f, \"mean_mi\": %.6f}", k ? ", " : "", rp->c->name[k], r->vol[k],
                        r->cv[k], r->mi[k]);
            fprintf(s.f, "}");
        }
        fprintf(s.f, "}%s\n", i + 1 < rp->n ? "," : "");
    }
    fprintf(s.f, "]\n");
    return sheet_close(&s, err);
}

/* manifest rows: id, "ok", seconds,samples,peak_mb then per column vol,cv,mi then qc, notes (tabs) */
static vbs_status manifest_body(int fd, void *user, char *err) {
    const report *rp = user;
    FILE *f = fdopen(dup(fd), "w");
    if (!f) return fail(err, VBS_ERR_IO, strerror(errno));
    fprintf(f, "%s\n", rp->header);
    for (int i = 0; i < rp->n; i++) {
        const row *r = &rp->r[i];
        if (!r->ok) continue; /* failures are retried */
        fprintf(f, "%s\tok\t%.3f,%d,%.0f", r->id, r->seconds, r->samples, r->peak_mb);
        for (int k = 0; k < rp->c->n; k++) fprintf(f, ",%.4f,%.4f,%.6f", r->vol[k], r->cv[k], r->mi[k]);
        fprintf(f, ",%.6f\t", r->qc);
        for (const char *p = r->notes; *p; p++) fputc(*p == '\t' || *p == '\n' ? ' ' : *p, f);
        fputc('\n', f);
    }
    int bad = ferror(f);
    if (fclose(f) || bad) return fail(err, VBS_ERR_IO, strerror(errno ? errno : EIO));
    return VBS_OK;
}

vbs_status write_summary_csv(const char *path, const report *rp, char *err) { return vbs_atomic_write(path, csv_body, (void *)rp, err); }
vbs_status write_summary_json(const char *path, const report *rp, char *err) { return vbs_atomic_write(path, json_body, (void *)rp, err); }
vbs_status write_manifest(const char *path, const report *rp, char *err) { return vbs_atomic_write(path, manifest_body, (void *)rp, err); }

int row_set(row *w, const result *r) {
    *w = (row){strdup(r->id), strdup(r->error), strdup(r->notes), r->ok, r->seconds, r->samples, r->n_cols, {0}, {0}, {0}, r->qc, r->peak_mb};
    memcpy(w->vol, r->vol, sizeof w->vol);
    memcpy(w->cv, r->cv, sizeof w->cv);
    memcpy(w->mi, r->mi, sizeof w->mi);
    if (w->id && w->error && w->notes) return 1;
    row_free(w);
    return 0;
}

void row_free(row *w) {
    free(w->id);
    free(w->error);
    free(w->notes);
    memset(w, 0, sizeof *w);
}

int parse_manifest_row(result *r, const columns *c, const char *fields) {
    if (strncmp(fields, "ok\t", 3)) return 0;
    const char *p = fields + 3;
    char *e;
    r->seconds = strtod(p, &e); if (*e != ',') return 0; p = e + 1;
    r->samples = (int)strtol(p, &e, 10); if (*e != ',') return 0; p = e + 1;
    r->peak_mb = strtod(p, &e); if (*e != ',') return 0; p = e + 1;
    for (int i = 0; i < c->n; i++) {
        r->vol[i] = strtod(p, &e); if (*e != ',') return 0; p = e + 1;
        r->cv[i] = strtod(p, &e); if (*e != ',') return 0; p = e + 1;
        r->mi[i] = strtod(p, &e); if (*e != ',') return 0; p = e + 1;
    }
    r->qc = strtod(p, &e);
    if (*e != '\t') return 0;
    snprintf(r->notes, sizeof r->notes, "%.*s", (int)strcspn(e + 1, "\n"), e + 1);
    r->n_cols = c->n;
    return 1;
}
