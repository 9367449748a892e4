/*
 * cases.h: scan folder layouts and the cases found in them (cases.c), shared
 * by `vbseg infer` and the trainer's data module. Part of libvbseg, not of
 * its public API.
 */
#ifndef VBS_CASES_H
#define VBS_CASES_H

#include <stddef.h>

#define VBS_MAX_CHANNELS 16

typedef enum { VBS_LAYOUT_AUTO = 0, VBS_LAYOUT_NNUNET, VBS_LAYOUT_BRATS2021, VBS_LAYOUT_BRATS2023, VBS_LAYOUT_FLAT } vbs_layout;

typedef struct {
    char id[256];
    int n_files;
    char *files[VBS_MAX_CHANNELS];   /* owned paths */
    int channel[VBS_MAX_CHANNELS];   /* nnunet: the file's number; brats: 0 flair, 1 t1, 2 t1ce, 3 t2; flat: 0 */
    char note[512];              /* extra files ignored, and the like */
    char *label;                 /* owned: the reference labels (BraTS _seg/-seg, nnU-Net and MSD labelsTr), or NULL */
} vbs_scan_case;

/* What a training set says about itself: from dataset.json (nnU-Net raw,
 * MSD), or from the layout's names (BraTS). */
#define VBS_MAX_LABELS 64
typedef struct {
    char name[128];                          /* dataset name, "" if none */
    int n_channels;                          /* 0: unknown */
    char channel[VBS_MAX_CHANNELS][64];
    int n_labels;                            /* 0: take the values found */
    int label_value[VBS_MAX_LABELS];         /* ascending */
    char label_name[VBS_MAX_LABELS][64];
    int from_json;
} vbs_dataset_meta;

typedef enum { VBS_TRAIN_AUTO = 0, VBS_TRAIN_NNUNET, VBS_TRAIN_BRATS2021, VBS_TRAIN_BRATS2023, VBS_TRAIN_MSD } vbs_train_layout;

const char *vbs_layout_name(vbs_layout l);
int vbs_layout_parse(const char *s, vbs_layout *l);
/* Finds the cases of dir, sorted by id; *lay AUTO is replaced by the layout
 * found. Skips what vbseg itself writes (map files, summaries, manifests, and
 * the folder `exclude`, e.g. an output folder inside dir: NULL for none).
 * unused (size unused_len) receives a note on the NIfTI files and folders the
 * layout did not take, and on vbseg outputs skipped ("" if none). 0 and err
 * if dir cannot be read. */
int vbs_find_cases(const char *dir, const char *exclude, vbs_layout *lay, vbs_scan_case **out, int *n, char *unused, size_t unused_len,
               char *err, size_t errlen);
/* 1 if a file name is one vbseg writes next to its outputs (a map such as
 * CASE_epistemic.nii.gz, a summary, a manifest, a preview) */
int vbs_is_vbseg_output(const char *name);
void vbs_free_cases(vbs_scan_case *v, int n);

const char *vbs_train_layout_name(vbs_train_layout l);
int vbs_train_layout_parse(const char *s, vbs_train_layout *l);
/* Finds the labelled cases of a training folder, sorted by id: nnU-Net raw
 * (imagesTr/CASE_XXXX.nii.gz, labelsTr/CASE.nii.gz, dataset.json), BraTS
 * 2018/2021 or 2023 case folders with their _seg / -seg files, or the MSD's
 * Task01 (imagesTr/CASE.nii.gz holding the channels along t, labelsTr,
 * dataset.json with "modality"). *lay AUTO is replaced by the layout found.
 * A case without a label file has label NULL (the caller lists it). meta is
 * filled from dataset.json when there is one (channels, labels, name). 0 and
 * err (one line naming the file and field) on an unreadable folder or a bad
 * dataset.json. */
int vbs_find_training_cases(const char *dir, vbs_train_layout *lay, vbs_scan_case **out, int *n, vbs_dataset_meta *meta, char *err,
                            size_t errlen);
/* json.c: reads an nnU-Net (v2: channel_names, labels name -> value,
 * file_ending) or MSD / nnU-Net v1 (modality, labels value -> name) dataset.json. */
int vbs_read_dataset_json(const char *path, vbs_dataset_meta *meta, char *file_ending, size_t fe_len, char *err, size_t errlen);
/* BraTS channel (0 flair, 1 t1, 2 t1ce, 3 t2) of a model-card channel name, or -1 */
int vbs_brats_channel_index(const char *card_name);

#endif
