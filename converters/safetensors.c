/*
 * safetensors.c: the safetensors reader and writer (issue 11). A file is an
 * 8-byte little-endian header length N, N bytes of JSON header
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * "__metadata__": {"key": "string"}}, then the data buffer the offsets
 * point into. The reader applies the reference implementation's rules with
 * overflow-checked arithmetic: a header of at most 100 MB, parsed by
 * libjansson with duplicate keys refused; offsets contiguous from 0 with no
 * holes or overlaps (in offset order, not header order); each span equal to
 * the shape's product times the dtype's size; the buffer filled exactly;
 * metadata values strings, so a tensor named __metadata__ is refused.
 * Floating tensors become float32 (F16, BF16, F64 converted bytewise, so
 * unaligned data and the host's byte order do not matter); integer and BOOL
 * tensors are kept by shape only. It is not the converter: it does not
 * interpret names nor refuse NaN or Inf. The writer writes float32 tensors
 * the way the reference does (header padded with spaces to a multiple of 8).
 * This file includes jansson as runtime/json.c does: the header is JSON.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "internal.h"

#define MAX_HEADER ((uint64_t)100000000) /* the reference's MAX_HEADER_SIZE */

static const struct {
    const char *name;
    int size;
} dtypes[] = {{"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"I16", 2}, {"U16", 2},  {"I32", 4},  {"U32", 4},
              {"I64", 8},  {"U64", 8}, {"F16", 2}, {"BF16", 2}, {"F32", 4}, {"F64", 8}};

static int dtype_size(const char *s) {
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (!strcmp(s, dtypes[i].name)) return dtypes[i].size;
    return 0;
}

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* n values of dtype at p (any alignment, little-endian) into out */
static void convert(const char *dtype, const uint8_t *p, int64_t n, float *out) {
    if (!strcmp(dtype, "F32")) {
        for (int64_t i = 0; i < n; i++, p += 4) {
            uint32_t b = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
            memcpy(&out[i], &b, 4);
        }
    } else if (!strcmp(dtype, "F16")) {
        for (int64_t i = 0; i < n; i++, p += 2) out[i] = vbs_ckpt_half((uint16_t)(p[0] | p[1] << 8));
    } else if (!strcmp(dtype, "BF16")) {
        for (int64_t i = 0; i < n; i++, p += 2) out[i] = vbs_ckpt_bf16((uint16_t)(p[0] | p[1] << 8));
    } else { /* F64 */
        for (int64_t i = 0; i < n; i++, p += 8) {
            uint64_t b = le64(p);
            double d;
            memcpy(&d, &b, 8);
            out[i] = vbs_ckpt_double(d);
        }
    }
}

static int is_float_dtype(const char *d) {
    return !strcmp(d, "F32") || !strcmp(d, "F16") || !strcmp(d, "BF16") || !strcmp(d, "F64");
}

/* a tensor's place in the buffer, for the contiguity check */
typedef struct {
    uint64_t begin, end;
    int idx;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx - y->idx; /* stable: equal empty spans stay in header order */
}

/* a non-negative JSON integer */
static int get_u64(json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return 0;
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

/* One header entry into t; its span into s. */
static vbs_status read_entry(const char *name, const char *key, json_t *e, vbs_ckpt_tensor *t, span *s, char *err,
                             size_t errlen) {
    if (!json_is_object(e))
        return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "tensor '%s': must be an object {dtype, shape, data_offsets}", key);
    const char *k;
    json_t *v;
    json_object_foreach(e, k, v) {
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
            return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "tensor '%s': unknown field '%s'", key, k);
    }
    json_t *dt = json_object_get(e, "dtype"), *sh = json_object_get(e, "shape"), *off = json_object_get(e, "data_offsets");
    if (!dt || !sh || !off)
        return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "tensor '%s': missing field '%s'", key,
                    !dt ? "dtype" : !sh ? "shape" : "data_offsets");
    if (!json_is_string(dt)) return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "tensor '%s': dtype must be a string", key);
    const char *ds = json_string_value(dt);
    int size = dtype_size(ds);
    if (!size) return vbs_fail_path(err, errlen, VBS_ERR_UNSUPPORTED, name, "tensor '%s': unknown dtype '%.32s'", key, ds);
    snprintf(t->dtype, sizeof t->dtype, "%s", ds);
    if (!json_is_array(sh))
        return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "tensor '%s': shape must be an array of non-negative integers", key);
    size_t nd = json_array_size(sh);
    if (nd > VBS_MAX_DIMS)
        return vbs_fail_path(err, errlen, VBS_ERR_UNSUPPORTED, name, "tensor '%s': %zu dims, more than %d", key, nd, VBS_MAX_DIMS);
    t->ndim = (int)nd;
    /* the element count, overflow-checked; a zero dim makes it 0 whatever the others are */
    uint64_t numel = 1;
    int zero = 0, over = 0;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (!get_u64(json_array_get(sh, i), &d))
            return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "tensor '%s': shape must be an array of non-negative integers", key);
        t->dims[i] = (int64_t)d; /* jansson's integers are at most INT64_MAX */
        if (!d) zero = 1;
        else if (__builtin_mul_overflow(numel, d, &numel)) over = 1;
    }
    if (zero) numel = 0;
    uint64_t bytes;
    if (!zero && (over || numel > INT64_MAX || __builtin_mul_overflow(numel, (uint64_t)size, &bytes)))
        return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "tensor '%s': shape's element count overflows 64 bits", key);
    if (zero) bytes = 0;
    t->numel = (int64_t)numel;
    if (!json_is_array(off) || json_array_size(off) != 2 || !get_u64(json_array_get(off, 0), &s->begin) ||
        !get_u64(json_array_get(off, 1), &s->end))
        return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "tensor '%s': data_offsets must be [begin, end], non-negative integers",
                    key);
    if (s->end < s->begin)
        return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "tensor '%s': data_offsets [%llu, %llu] end before they begin", key,
                    (unsigned long long)s->begin, (unsigned long long)s->end);
    if (s->end - s->begin != bytes)
        return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name,
                    "tensor '%s': data_offsets [%llu, %llu] span %llu bytes, but %llu elements of %s take %llu", key,
                    (unsigned long long)s->begin, (unsigned long long)s->end, (unsigned long long)(s->end - s->begin),
                    (unsigned long long)numel, ds, (unsigned long long)bytes);
    return VBS_OK;
}

/* the __metadata__ entry: an object of strings, kept as compact JSON text */
static vbs_status read_metadata(const char *name, json_t *m, char **out, char *err, size_t errlen) {
    if (!json_is_object(m))
        return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name,
                    "__metadata__ must be an object of strings (a tensor may not be named __metadata__)");
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v) {
        if (!json_is_string(v))
            return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name,
                        "__metadata__ value of '%s' is not a string (a tensor may not be named __metadata__)", k);
    }
    *out = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!*out) return vbs_fail_path(err, errlen, VBS_ERR_NOMEM, name, "out of memory");
    return VBS_OK;
}

vbs_status vbs_ckpt_read_safetensors_memory(const void *buf, size_t len, const char *name, vbs_ckpt *out, char *err,
                                            size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!name) name = "(memory)";
    const uint8_t *b = buf;
    if (len < 8) return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "%zu bytes, too short for a safetensors header length", len);
    uint64_t n = le64(b);
    if (n > MAX_HEADER)
        return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "header length %llu over the 100 MB limit", (unsigned long long)n);
    if (n > len - 8)
        return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "header length %llu past the end of the file (%zu bytes)",
                    (unsigned long long)n, len);
    if (n == 0 || b[8] != '{') return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "header is not a JSON object");
    /* jansson stops at a NUL and words it "end of file expected near end of file" */
    const uint8_t *nul = memchr(b + 8, 0, (size_t)n);
    if (nul)
        return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "header is not valid JSON: a NUL byte at column %d",
                    (int)(nul - (b + 8)) + 1);
    json_error_t je;
    json_t *root = json_loadb((const char *)b + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "header is not valid JSON: column %d: %s", je.column, je.text);
    vbs_status st = VBS_OK;
    span *spans = NULL;
    if (!json_is_object(root)) { st = vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "header is not a JSON object"); goto done; }
    /* grown as entries are read, not sized by the entry count: "a":0 is 6 bytes of input, a tensor over
     * 100 bytes of memory, but an entry that reads is some 50 bytes */
    const char *key;
    json_t *e;
    int ns = 0, cap = 0;
    json_object_foreach(root, key, e) {
        if (!strcmp(key, "__metadata__")) {
            if ((st = read_metadata(name, e, &out->metadata, err, errlen))) goto done;
            continue;
        }
        if (out->n == cap) {
            if (cap > INT32_MAX / 2) { st = vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "too many tensors"); goto done; }
            int c2 = cap ? 2 * cap : 16;
            vbs_ckpt_tensor *t2 = realloc(out->t, (size_t)c2 * sizeof *t2);
            if (t2) out->t = t2;
            span *s2 = t2 ? realloc(spans, (size_t)c2 * sizeof *s2) : NULL;
            if (!s2) { st = vbs_fail_path(err, errlen, VBS_ERR_NOMEM, name, "out of memory"); goto done; }
            spans = s2;
            memset(out->t + cap, 0, (size_t)(c2 - cap) * sizeof *out->t);
            cap = c2;
        }
        vbs_ckpt_tensor *t = &out->t[out->n];
        if (!(t->name = strdup(key))) { st = vbs_fail_path(err, errlen, VBS_ERR_NOMEM, name, "out of memory"); goto done; }
        out->n++;
        if ((st = read_entry(name, key, e, t, &spans[ns], err, errlen))) goto done;
        spans[ns].idx = ns;
        ns++;
    }
    /* contiguous from 0 in offset order: no hole, no overlap, the buffer filled exactly */
    uint64_t data_len = len - 8 - n;
    if (ns > 1) qsort(spans, (size_t)ns, sizeof *spans, cmp_span); /* spans is NULL when there are no tensors */
    uint64_t at = 0;
    for (int i = 0; i < ns; i++) {
        const span *s = &spans[i];
        const char *tn = out->t[s->idx].name;
        if (s->begin != at) {
            unsigned long long b0 = s->begin, b1 = s->end, a = at;
            if (s->begin < at)
                st = vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name,
                          "tensor '%s': data_offsets [%llu, %llu] overlap the previous tensor's, which end at %llu", tn, b0, b1, a);
            else if (!i)
                st = vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "tensor '%s': data_offsets [%llu, %llu]: the data do not start at 0",
                          tn, b0, b1);
            else
                st = vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name,
                          "tensor '%s': data_offsets [%llu, %llu] leave a hole after the previous tensor's, which end at %llu", tn,
                          b0, b1, a);
            goto done;
        }
        if (s->end > data_len) {
            st = vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "tensor '%s': data_offsets [%llu, %llu] past the end of the data (%llu bytes)",
                      tn, (unsigned long long)s->begin, (unsigned long long)s->end, (unsigned long long)data_len);
            goto done;
        }
        at = s->end;
    }
    if (at != data_len) {
        st = vbs_fail_path(err, errlen, VBS_ERR_FORMAT, name, "%llu trailing bytes after the tensors' data (which end at %llu)",
                  (unsigned long long)(data_len - at), (unsigned long long)at);
        goto done;
    }
    /* every span is now known to lie in the buffer: convert the float tensors */
    const uint8_t *data = b + 8 + n;
    for (int i = 0; i < ns; i++) {
        vbs_ckpt_tensor *t = &out->t[spans[i].idx];
        if (!is_float_dtype(t->dtype) || !t->numel) continue;
        /* numel x 4 is at most twice the span (F16, BF16), which lies in the input */
        t->data = malloc((size_t)t->numel * sizeof(float));
        if (!t->data) { st = vbs_fail_path(err, errlen, VBS_ERR_NOMEM, name, "tensor '%s': out of memory", t->name); goto done; }
        convert(t->dtype, data + spans[i].begin, t->numel, t->data);
    }
done:
    free(spans);
    json_decref(root);
    if (st) vbs_ckpt_free(out);
    return st;
}

vbs_status vbs_ckpt_read_safetensors(const char *path, vbs_ckpt *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return vbs_fail_path(err, errlen, VBS_ERR_IO, path, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb)) {
        vbs_status st = vbs_fail_path(err, errlen, VBS_ERR_IO, path, "cannot stat: %s", strerror(errno));
        close(fd);
        return st;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return vbs_fail_path(err, errlen, VBS_ERR_IO, path, "not a regular file");
    }
    size_t len = (size_t)sb.st_size;
    if (len < 8) { /* mmap takes no empty file; the memory reader words the refusal */
        uint8_t small[8];
        ssize_t r = read(fd, small, len);
        close(fd);
        if (r != (ssize_t)len) return vbs_fail_path(err, errlen, VBS_ERR_IO, path, "read failed");
        return vbs_ckpt_read_safetensors_memory(small, len, path, out, err, errlen);
    }
    /* mapped, not read: a big checkpoint is not copied, and only the float tensors are converted */
    void *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return vbs_fail_path(err, errlen, VBS_ERR_IO, path, "mmap failed: %s", strerror(errno));
    vbs_status st = vbs_ckpt_read_safetensors_memory(p, len, path, out, err, errlen);
    munmap(p, len);
    return st;
}

/* ---- writer ------------------------------------------------------------ */

/* the tensors the writer writes: those with values, and empty float ones (which have none) */
static int written(const vbs_ckpt_tensor *t) { return t->data || (!t->numel && is_float_dtype(t->dtype)); }

typedef struct {
    const vbs_ckpt *c;
    const char *header; /* padded to a multiple of 8 */
    size_t hlen;
} write_ctx;

static vbs_status write_body(int fd, void *user, char *err) {
    const write_ctx *w = user;
    uint8_t len8[8], chunk[4096];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)w->hlen >> (8 * i));
    if (vbs_write_all(fd, len8, 8) || vbs_write_all(fd, w->header, w->hlen)) goto fail;
    for (int i = 0; i < w->c->n; i++) {
        const vbs_ckpt_tensor *t = &w->c->t[i];
        if (!written(t)) continue;
        /* little-endian bytes whatever the host's order */
        size_t k = 0;
        for (int64_t j = 0; j < t->numel; j++) {
            uint32_t b;
            memcpy(&b, &t->data[j], 4);
            for (int s = 0; s < 4; s++) chunk[k++] = (uint8_t)(b >> (8 * s));
            if (k == sizeof chunk) {
                if (vbs_write_all(fd, chunk, k)) goto fail;
                k = 0;
            }
        }
        if (k && vbs_write_all(fd, chunk, k)) goto fail;
    }
    return VBS_OK;
fail:
    return vbs_fail(err, VBS_ERR_IO, "write failed: %s", strerror(errno));
}

vbs_status vbs_ckpt_write_safetensors(const vbs_ckpt *c, const char *metadata, const char *path, char *err, size_t errlen) {
    vbs_status st = VBS_OK;
    json_t *root = json_object(), *meta = NULL;
    char *text = NULL;
    if (!root) return vbs_fail_path(err, errlen, VBS_ERR_NOMEM, path, "out of memory");
    if (metadata) {
        json_error_t je;
        meta = json_loads(metadata, JSON_REJECT_DUPLICATES, &je);
        if (!meta) { st = vbs_fail_path(err, errlen, VBS_ERR_ARG, path, "metadata is not valid JSON: %s", je.text); goto done; }
        const char *k;
        json_t *v;
        int strings = json_is_object(meta);
        if (strings) json_object_foreach(meta, k, v) strings &= json_is_string(v);
        if (!strings) { st = vbs_fail_path(err, errlen, VBS_ERR_ARG, path, "metadata must be a JSON object of string values"); goto done; }
        if (json_object_set(root, "__metadata__", meta)) { st = vbs_fail_path(err, errlen, VBS_ERR_NOMEM, path, "out of memory"); goto done; }
    }
    uint64_t at = 0;
    for (int i = 0; i < c->n; i++) {
        const vbs_ckpt_tensor *t = &c->t[i];
        if (!written(t)) continue;
        if (!t->name || !strcmp(t->name, "__metadata__") || json_object_get(root, t->name)) {
            st = vbs_fail_path(err, errlen, VBS_ERR_ARG, path, "tensor '%s': %s", t->name ? t->name : "(null)",
                      !t->name ? "has no name" : !strcmp(t->name, "__metadata__") ? "may not be named __metadata__" : "name given twice");
            goto done;
        }
        if (t->ndim < 0 || t->ndim > VBS_MAX_DIMS) {
            st = vbs_fail_path(err, errlen, VBS_ERR_ARG, path, "tensor '%s': %d dims", t->name, t->ndim);
            goto done;
        }
        int64_t numel = 1;
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim && shape; d++)
            if (t->dims[d] < 0 || __builtin_mul_overflow(numel, t->dims[d], &numel) ||
                json_array_append_new(shape, json_integer(t->dims[d])))
                numel = -1;
        uint64_t bytes;
        if (!shape || numel != t->numel || __builtin_mul_overflow((uint64_t)numel, 4u, &bytes) ||
            __builtin_add_overflow(at, bytes, &bytes)) {
            json_decref(shape);
            st = vbs_fail_path(err, errlen, VBS_ERR_ARG, path, "tensor '%s': dims and numel %lld disagree", t->name, (long long)t->numel);
            goto done;
        }
        json_t *off = json_pack("[II]", (json_int_t)at, (json_int_t)bytes);
        json_t *e = json_pack("{s:s, s:o, s:o}", "dtype", "F32", "shape", shape, "data_offsets", off);
        if (!e || json_object_set_new(root, t->name, e)) {
            st = vbs_fail_path(err, errlen, VBS_ERR_ARG, path, "tensor '%s': name not valid UTF-8 (or out of memory)", t->name);
            goto done;
        }
        at = bytes;
    }
    text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) { st = vbs_fail_path(err, errlen, VBS_ERR_NOMEM, path, "out of memory"); goto done; }
    /* padded with spaces to a multiple of 8, as the reference writer does, so the data start aligned */
    size_t hlen = strlen(text), padded = (hlen + 7) / 8 * 8;
    char *h = realloc(text, padded + 1);
    if (!h) { st = vbs_fail_path(err, errlen, VBS_ERR_NOMEM, path, "out of memory"); goto done; }
    text = h;
    memset(text + hlen, ' ', padded - hlen);
    text[padded] = 0;
    write_ctx w = {c, text, padded};
    char e[VBS_ERRLEN];
    st = vbs_atomic_write(path, write_body, &w, e);
    if (st && err && errlen) snprintf(err, errlen, "%s", e);
done:
    free(text);
    json_decref(meta);
    json_decref(root);
    return st;
}
