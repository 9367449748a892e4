/*
 * fuzz.h: what the fuzz targets of tests/fuzz/ share: the allocation cap
 * (fuzz.c), the scratch file that path-based readers are given, and the
 * status the replay driver checks. Not a test framework: each target is one
 * LLVMFuzzerTestOneInput through vbseg's public entry point (or, for the
 * model card, the one internal reader there is).
 *
 * The allocation cap: while a target's library call runs, any single
 * malloc/calloc/realloc/aligned_alloc/posix_memalign request from vbseg's
 * own code larger than FUZZ_CAP_MULT x the bytes present + FUZZ_CAP_CONST
 * aborts with a one-line message: a size read from a file that is
 * allocated before it is checked against the bytes that remain is a
 * finding. The calls are redirected with the linker's --wrap (see
 * tests/fuzz/CMakeLists.txt), so they cover vbseg's objects, not the shared
 * libraries it calls (protobuf-c, zlib, jansson, libnifti).
 */
#ifndef VBS_FUZZ_H
#define VBS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#define FUZZ_CAP_MULT 8
#define FUZZ_CAP_CONST ((size_t)16 << 20) /* the NIfTI reader's first buffer is min(declared, 16 MiB) by design */

/* The cap for `present` input bytes, plus `extra` (a planned forward pass's
 * own buffers, see fuzz_vbseg.c); 0 turns the cap off. */
void fuzz_cap_on(size_t present, size_t extra);
void fuzz_cap_off(void);

/* A path in this process's private scratch folder (made once, empty but for
 * what the targets write, removed at exit); name is the file name. */
const char *fuzz_path(const char *name);
/* Writes data to path (truncating); 0 on success. */
int fuzz_write(const char *path, const uint8_t *data, size_t size);

/* What the last input gave: 0 when the library accepted it (and any run of
 * it succeeded), else the vbs_status or -1. The replay driver checks that
 * seeds are accepted and regression inputs refused. */
extern int fuzz_status;

/* Called once before the first input (LLVMFuzzerInitialize and the replay
 * driver): one thread, so a run is the same at any machine size. */
void fuzz_init(void);

/* A violated property of the library's answer (not a refusal): one line on
 * stderr and abort, which libFuzzer saves as a crash. */
void fuzz_fail(const char *what);

typedef struct vbs_model vbs_model;
/* What a caller does with a model that loaded (vbseg info, run): its
 * summaries, then one mean forward pass and a 2-sample Monte-Carlo run on a
 * small input of its declared shape (symbolic dims 8, 16 or 32, the first it
 * takes). A model whose pass would plan more than FUZZ_FORWARD_FLOATS
 * floats of activations and scratch, or FUZZ_FORWARD_FLOPS, is not run (a
 * legitimately big network is not a timeout); while it runs, the cap also
 * allows 4 bytes per planned float. present: the input's size for the cap.
 * Returns 0, or the status of the call that refused. */
#define FUZZ_FORWARD_FLOATS ((int64_t)8 << 20)
#define FUZZ_FORWARD_FLOPS 2e8
int fuzz_run_model(vbs_model *m, size_t present);

/* vbs_model_load_memory on a 64-byte aligned copy of data (*buf, to free
 * after the model). A mutated header fails its CRC (format/vbseg.proto:
 * zlib's CRC-32 of the header at offset 12) before anything behind it is
 * read, so when the loader refuses the checksum the copy gets the CRC of
 * its header and is loaded again: the fuzzer reaches the protobuf header
 * and what follows. The checksum's own refusal is tested by test_format. */
int fuzz_load_model(const uint8_t *data, size_t size, const char *name, vbs_model **m, void **buf);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
