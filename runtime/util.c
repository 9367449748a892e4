/*
 * util.c: the small things every part of libvbseg uses: the arena that
 * owns a definition's strings and arrays, error formatting, the optional
 * log callback and overflow-checked arithmetic. No I/O happens here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct vbs_arena_block {
    vbs_arena_block *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

void *vbs_arena_alloc(vbs_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    vbs_arena_block *b = a->head;
    if (!b || b->size - b->used < n) {
        size_t size = n > 16384 ? n : 16384;
        b = malloc(sizeof *b + size);
        if (!b) return NULL;
        b->size = size;
        b->used = 0;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

char *vbs_arena_strdup(vbs_arena *a, const char *s) {
    if (!s) s = "";
    size_t n = strlen(s) + 1;
    char *p = vbs_arena_alloc(a, n);
    if (p) memcpy(p, s, n);
    return p;
}

void vbs_arena_free(vbs_arena *a) {
    vbs_arena_block *b = a->head;
    while (b) {
        vbs_arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}

void vbs_def_free(vbs_def *d) {
    if (!d) return;
    vbs_arena_free(&d->arena);
    memset(d, 0, sizeof *d);
}

vbs_status vbs_fail(char *err, vbs_status st, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, VBS_ERRLEN, fmt, ap);
        va_end(ap);
    }
    return st;
}

/* Appends src to dst[k..len) as printable bytes (control bytes as \n, \t,
 * \xNN), stopping at len - 1 with room for the NUL; returns the new k. */
static size_t put_printable(char *dst, size_t len, size_t k, const char *src) {
    for (const unsigned char *c = (const unsigned char *)src; *c && k + 5 < len; c++) {
        if (*c >= 0x20 && *c != 0x7f) dst[k++] = (char)*c;
        else k += (size_t)snprintf(dst + k, len - k, *c == '\n' ? "\\n" : *c == '\t' ? "\\t" : "\\x%02x", *c);
    }
    return k;
}

/* "FILE: MSG" into err (len >= 1 bytes) as one line, whatever a path or a
 * name read from a file holds. cut_file: the file name, escaped, keeps at
 * most 250 bytes and the message has the rest. */
static void fail_line(char *err, size_t len, const char *file, int cut_file, const char *fmt, va_list ap) {
    char msg[VBS_ERRLEN];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t k = put_printable(err, cut_file && len > 256 ? 256 : len, 0, file ? file : "(null)");
    if (k + 3 < len) {
        memcpy(err + k, ": ", 2);
        k = put_printable(err, len, k + 2, msg);
    }
    err[k < len ? k : len - 1] = 0;
}

vbs_status vbs_fail_file(char *err, vbs_status st, const char *file, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        fail_line(err, VBS_ERRLEN, file, 1, fmt, ap);
        va_end(ap);
    }
    return st;
}

vbs_status vbs_fail_path(char *err, size_t len, vbs_status st, const char *path, const char *fmt, ...) {
    if (err && len) {
        va_list ap;
        va_start(ap, fmt);
        fail_line(err, len, path, 0, fmt, ap);
        va_end(ap);
    }
    return st;
}

static vbs_log_fn log_fn;
static void *log_user;

void vbs_set_log(vbs_log_fn fn, void *user) {
    log_fn = fn;
    log_user = user;
}

void vbs_log(vbs_log_level level, const char *fmt, ...) {
    if (!log_fn) return;
    char buf[VBS_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_fn(level, buf, log_user);
}

int vbs_mul_ok(int64_t a, int64_t b, int64_t *out) {
    if (a < 0 || b < 0) return 0;
    return !__builtin_mul_overflow(a, b, out);
}

int64_t vbs_shape_numel(const vbs_shape *s) {
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->d[i];
    return n;
}

const char *vbs_status_name(vbs_status st) {
    switch (st) {
    case VBS_OK: return "VBS_OK";
    case VBS_ERR_IO: return "VBS_ERR_IO";
    case VBS_ERR_FORMAT: return "VBS_ERR_FORMAT";
    case VBS_ERR_VERSION: return "VBS_ERR_VERSION";
    case VBS_ERR_GRAPH: return "VBS_ERR_GRAPH";
    case VBS_ERR_SHAPE: return "VBS_ERR_SHAPE";
    case VBS_ERR_NOMEM: return "VBS_ERR_NOMEM";
    case VBS_ERR_ARG: return "VBS_ERR_ARG";
    case VBS_ERR_NUMERIC: return "VBS_ERR_NUMERIC";
    case VBS_ERR_UNSUPPORTED: return "VBS_ERR_UNSUPPORTED";
    case VBS_ERR_NIFTI: return "VBS_ERR_NIFTI";
    case VBS_ERR_STATE: return "VBS_ERR_STATE";
    case VBS_ERR_CANCELLED: return "VBS_ERR_CANCELLED";
    }
    return "VBS_ERR_UNKNOWN";
}

#if defined(__x86_64__) && defined(__GNUC__)
int vbs_cpu_avx2(void) {
    static int cached = -1; /* benign race: every thread computes the same value */
    if (cached < 0) {
        const char *off = getenv("VBS_NO_AVX2");
        cached = !(off && off[0] == '1') && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached;
}

int vbs_cpu_avx512(void) {
    static int cached = -1;
    if (cached < 0) {
        const char *off = getenv("VBS_NO_AVX512");
        cached = vbs_cpu_avx2() && !(off && off[0] == '1') && __builtin_cpu_supports("avx512f");
    }
    return cached;
}
#endif
