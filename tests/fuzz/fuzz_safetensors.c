/*
 * fuzz_safetensors.c: libFuzzer target for the safetensors reader
 * (converters/safetensors.c): the input is read from a scratch file
 * (vbs_ckpt_read_safetensors, mmapped) and from memory at an odd address
 * (vbs_ckpt_read_safetensors_memory); the two must agree. A checkpoint that
 * reads must be consistent (numel the product of dims; every value of a
 * float tensor readable) and must survive the writer: written back
 * (vbs_ckpt_write_safetensors, its metadata included) and read again, it
 * gives the same float tensors bit for bit and the same metadata.
 */
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "fuzz.h"

static int same_floats(const vbs_ckpt *a, const vbs_ckpt *w) {
    int j = 0;
    for (int i = 0; i < a->n; i++) {
        const vbs_ckpt_tensor *x = &a->t[i];
        if (!x->data && !(x->numel == 0 && (!strcmp(x->dtype, "F32") || !strcmp(x->dtype, "F16") ||
                                             !strcmp(x->dtype, "BF16") || !strcmp(x->dtype, "F64"))))
            continue; /* the writer skips non-float tensors */
        if (j >= w->n) return 0;
        const vbs_ckpt_tensor *y = &w->t[j++];
        if (strcmp(x->name, y->name) || strcmp(y->dtype, "F32") || x->ndim != y->ndim || x->numel != y->numel ||
            memcmp(x->dims, y->dims, (size_t)x->ndim * sizeof x->dims[0]) || !x->data != !y->data ||
            (x->data && memcmp(x->data, y->data, (size_t)x->numel * sizeof(float))))
            return 0;
    }
    return j == w->n && !a->metadata == !w->metadata && (!a->metadata || !strcmp(a->metadata, w->metadata));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path("input.safetensors");
    fuzz_status = -1;
    if (fuzz_write(path, data, size)) return 0;
    uint8_t *odd = malloc(size + 1);
    if (!odd) return 0;
    if (size) memcpy(odd + 1, data, size);
    char err[512], err2[512];
    vbs_ckpt c, m;
    fuzz_cap_on(size, 0);
    vbs_status a = vbs_ckpt_read_safetensors(path, &c, err, sizeof err);
    vbs_status b = vbs_ckpt_read_safetensors_memory(odd + 1, size, path, &m, err2, sizeof err2);
    fuzz_cap_off();
    free(odd);
    if (a != b || (a && strcmp(err, err2))) fuzz_fail("the path and memory readers disagree");
    vbs_ckpt_free(&m);
    if (a) {
        if (!err[0] || strchr(err, '\n')) fuzz_fail("a refusal without a one-line message");
        fuzz_status = (int)a;
        return 0;
    }
    for (int i = 0; i < c.n; i++) {
        const vbs_ckpt_tensor *t = &c.t[i];
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= t->dims[d];
        if (n != t->numel || t->ndim < 0 || t->ndim > VBS_MAX_DIMS) fuzz_fail("numel is not the product of dims");
        if (t->data) {
            volatile float sink = t->data[0] + t->data[t->numel - 1];
            (void)sink;
        }
    }
    /* the writer takes what the reader gave, and the reader reads it back the same */
    const char *out = fuzz_path("written.safetensors");
    fuzz_cap_on(size, 0);
    vbs_status w = vbs_ckpt_write_safetensors(&c, c.metadata, out, err, sizeof err);
    vbs_ckpt back;
    vbs_status r = w ? w : vbs_ckpt_read_safetensors(out, &back, err, sizeof err);
    fuzz_cap_off();
    if (w) fuzz_fail("the writer refused what the reader accepted");
    if (r) fuzz_fail("the reader refused what the writer wrote");
    if (!same_floats(&c, &back)) fuzz_fail("a written checkpoint reads back different");
    vbs_ckpt_free(&back);
    vbs_ckpt_free(&c);
    fuzz_status = 0;
    return 0;
}
