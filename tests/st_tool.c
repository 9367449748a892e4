/*
 * st_tool.c: the C side of tests/safetensors.py, a thin driver over
 * converters/safetensors.c (no checks of its own beyond the two readers
 * agreeing; the script holds the oracles):
 *   st_tool read FILE VALUES   reads FILE by path and from memory at an odd
 *                              address; prints "ok N", "meta JSON|-" and per
 *                              tensor "t HEXNAME DTYPE NDIM DIMS... NUMEL
 *                              HASDATA", and writes the float values, in
 *                              order, as float32 to VALUES; on a refusal
 *                              prints "error STATUS: MESSAGE" and exits 1
 *   st_tool copy IN OUT [META] reads IN, writes OUT with metadata META
 *   st_tool dup OUT            writes a checkpoint naming a tensor twice
 *                              (must be refused; prints the error)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "internal.h"

static int same(const vbs_ckpt *a, const vbs_ckpt *b) {
    if (a->n != b->n || !a->metadata != !b->metadata || (a->metadata && strcmp(a->metadata, b->metadata))) return 0;
    for (int i = 0; i < a->n; i++) {
        const vbs_ckpt_tensor *x = &a->t[i], *y = &b->t[i];
        if (strcmp(x->name, y->name) || strcmp(x->dtype, y->dtype) || x->ndim != y->ndim || x->numel != y->numel ||
            memcmp(x->dims, y->dims, sizeof x->dims) || !x->data != !y->data ||
            (x->data && memcmp(x->data, y->data, (size_t)x->numel * 4)))
            return 0;
    }
    return 1;
}

static int cmd_read(const char *path, const char *values) {
    char err[VBS_ERRLEN], err2[VBS_ERRLEN];
    vbs_ckpt c, m;
    vbs_status st = vbs_ckpt_read_safetensors(path, &c, err, sizeof err);
    /* the same bytes from memory, one byte off alignment */
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return 2; }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (!buf || fread(buf + 1, 1, (size_t)len, f) != (size_t)len) { fclose(f); free(buf); return 2; }
    fclose(f);
    vbs_status st2 = vbs_ckpt_read_safetensors_memory(buf + 1, (size_t)len, path, &m, err2, sizeof err2);
    free(buf);
    if (st != st2 || (st && strcmp(err, err2)) || (!st && !same(&c, &m))) {
        printf("disagree: path %d '%s', memory %d '%s'\n", st, st ? err : "", st2, st2 ? err2 : "");
        vbs_ckpt_free(&c);
        vbs_ckpt_free(&m);
        return 2;
    }
    vbs_ckpt_free(&m);
    if (st) {
        printf("error %s: %s\n", vbs_status_name(st), err);
        return 1;
    }
    FILE *o = fopen(values, "wb");
    if (!o) { perror(values); vbs_ckpt_free(&c); return 2; }
    printf("ok %d\nmeta %s\n", c.n, c.metadata ? c.metadata : "-");
    for (int i = 0; i < c.n; i++) {
        const vbs_ckpt_tensor *t = &c.t[i];
        printf("t ");
        for (const char *p = t->name; *p; p++) printf("%02x", (unsigned char)*p);
        printf("%s %s %d", *t->name ? "" : "-", t->dtype, t->ndim);
        for (int d = 0; d < t->ndim; d++) printf(" %lld", (long long)t->dims[d]);
        printf(" %lld %d\n", (long long)t->numel, t->data != NULL);
        if (t->data && fwrite(t->data, 4, (size_t)t->numel, o) != (size_t)t->numel) { fclose(o); vbs_ckpt_free(&c); return 2; }
    }
    vbs_ckpt_free(&c);
    return fclose(o) ? 2 : 0;
}

static int cmd_copy(const char *in, const char *out, const char *meta) {
    char err[VBS_ERRLEN];
    vbs_ckpt c;
    vbs_status st = vbs_ckpt_read_safetensors(in, &c, err, sizeof err);
    if (!st) st = vbs_ckpt_write_safetensors(&c, meta, out, err, sizeof err);
    vbs_ckpt_free(&c);
    if (st) { printf("error %s: %s\n", vbs_status_name(st), err); return 1; }
    printf("ok\n");
    return 0;
}

static int cmd_dup(const char *out) {
    float v[2] = {1, 2};
    vbs_ckpt_tensor t[2] = {{.name = "w", .dtype = "F32", .ndim = 1, .dims = {1}, .numel = 1, .data = v},
                            {.name = "w", .dtype = "F32", .ndim = 1, .dims = {1}, .numel = 1, .data = v + 1}};
    vbs_ckpt c = {.t = t, .n = 2};
    char err[VBS_ERRLEN];
    vbs_status st = vbs_ckpt_write_safetensors(&c, NULL, out, err, sizeof err);
    if (st) { printf("error %s: %s\n", vbs_status_name(st), err); return 1; }
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "read")) return cmd_read(argv[2], argv[3]);
    if ((argc == 4 || argc == 5) && !strcmp(argv[1], "copy")) return cmd_copy(argv[2], argv[3], argc == 5 ? argv[4] : NULL);
    if (argc == 3 && !strcmp(argv[1], "dup")) return cmd_dup(argv[2]);
    fprintf(stderr, "usage: st_tool read FILE VALUES | copy IN OUT [META] | dup OUT\n");
    return 2;
}
