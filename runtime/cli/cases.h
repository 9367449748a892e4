/*
 * cases.h: input folder layouts and the cases found in them (cases.c).
 */
#ifndef VBS_CLI_CASES_H
#define VBS_CLI_CASES_H

#include <stddef.h>

#define MAX_CHANNELS 16

typedef enum { LAYOUT_AUTO = 0, LAYOUT_NNUNET, LAYOUT_BRATS2021, LAYOUT_BRATS2023, LAYOUT_FLAT } layout;

typedef struct {
    char id[256];
    int n_files;
    char *files[MAX_CHANNELS];   /* owned paths */
    int channel[MAX_CHANNELS];   /* nnunet: the file's number; brats: 0 flair, 1 t1, 2 t1ce, 3 t2; flat: 0 */
    char note[512];              /* extra files ignored, and the like */
} scan_case;

const char *layout_name(layout l);
int layout_parse(const char *s, layout *l);
/* Finds the cases of dir, sorted by id; *lay AUTO is replaced by the layout
 * found. Skips what vbseg itself writes (map files, summaries, manifests, and
 * the folder `exclude`, e.g. an output folder inside dir: NULL for none).
 * unused (size unused_len) receives a note on the NIfTI files and folders the
 * layout did not take, and on vbseg outputs skipped ("" if none). 0 and err
 * if dir cannot be read. */
int find_cases(const char *dir, const char *exclude, layout *lay, scan_case **out, int *n, char *unused, size_t unused_len,
               char *err, size_t errlen);
/* 1 if a file name is one vbseg writes next to its outputs (a map such as
 * CASE_epistemic.nii.gz, a summary, a manifest, a preview) */
int is_vbseg_output(const char *name);
void free_cases(scan_case *v, int n);
/* BraTS channel (0 flair, 1 t1, 2 t1ce, 3 t2) of a model-card channel name, or -1 */
int brats_channel_index(const char *card_name);

#endif
