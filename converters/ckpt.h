/*
 * ckpt.h: a checkpoint's named tensors, as the PyTorch (pytorch.c) and
 * safetensors (safetensors.c) readers give them to the converter that maps
 * them onto a graph (names, conventions, the ONNX twin). A reader only
 * reads: it validates the container and its sizes, converts floating
 * tensors (F16, BF16, F64) to contiguous row-major float32, and keeps other
 * dtypes (e.g. int64 num_batches_tracked) by shape only. It does not decide
 * what a name means, nor refuse NaN (the converter does, for mu and rho, by
 * name). Errors are one line "FILE: what" in err.
 */
#ifndef VBS_CONVERTERS_CKPT_H
#define VBS_CONVERTERS_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "vbseg.h"

typedef struct {
    char *name;                  /* the state-dict key */
    char dtype[8];               /* as stored, in safetensors' spelling: "F32", "F16", "BF16", "F64", "I64", "U8", ... */
    int ndim;                    /* 0 for a scalar */
    int64_t dims[VBS_MAX_DIMS];
    int64_t numel;               /* product of dims (1 for a scalar) */
    float *data;                 /* numel float32 values, C order; NULL unless dtype is F32, F16, BF16 or F64 */
} vbs_ckpt_tensor;

typedef struct {
    vbs_ckpt_tensor *t;          /* in file order (safetensors: header order; pytorch: the dict's insertion order) */
    int n;
    char *metadata;              /* safetensors' __metadata__ as JSON text; NULL if none */
    char *key;                   /* pytorch: the key of the training checkpoint's dict that held the state dict, or NULL */
} vbs_ckpt;

/* torch.save zip archives (PyTorch >= 1.6). key: the entry of a training
 * checkpoint {'state_dict': ..., 'epoch': ...} to take, or NULL to take the
 * top-level dict if it is a state dict, else 'state_dict', else
 * 'model_state_dict', else refuse naming the keys found. */
vbs_status vbs_ckpt_read_pytorch(const char *path, const char *key, vbs_ckpt *out, char *err, size_t errlen);
vbs_status vbs_ckpt_read_pytorch_memory(const void *buf, size_t len, const char *name, const char *key, vbs_ckpt *out,
                                        char *err, size_t errlen);

/* safetensors files. */
vbs_status vbs_ckpt_read_safetensors(const char *path, vbs_ckpt *out, char *err, size_t errlen);
vbs_status vbs_ckpt_read_safetensors_memory(const void *buf, size_t len, const char *name, vbs_ckpt *out, char *err,
                                            size_t errlen);
/* Writes c's float tensors as F32 (others are skipped) with metadata (a JSON
 * object of string values, or NULL) as __metadata__, atomically. */
vbs_status vbs_ckpt_write_safetensors(const vbs_ckpt *c, const char *metadata, const char *path, char *err, size_t errlen);

/* The readers' element conversions to float32, shared so both convert alike:
 * IEEE half (subnormals, Inf, NaN), bfloat16, and double with round to
 * nearest (2^128 - 2^103 and beyond become +-Inf, defined; NaN kept). */
float vbs_ckpt_half(uint16_t h);
float vbs_ckpt_bf16(uint16_t h);
float vbs_ckpt_double(double d);

/* Frees everything a reader put in c (safe on a zeroed or partly filled c) and zeroes it. */
void vbs_ckpt_free(vbs_ckpt *c);

#endif
