/*
 * safetensors.c - reader for one .safetensors file.
 *
 * Layout: u64 N (little-endian), N bytes of JSON, then the data section.
 * The JSON maps each tensor name to {"dtype", "shape", "data_offsets":
 * [begin, end]} with offsets relative to the data section; the optional
 * "__metadata__" entry maps strings to strings and is skipped. The file is
 * mapped once; tensors are views. Everything the header claims is checked
 * against the file before a view is made, so a hostile file gives one error
 * line and LMOE_ERR_FORMAT (tests/fuzz/fuzz_safetensors.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "format/safetensors.h"
#include "leanmoe.h"

static const struct {
    const char *name;
    int size;
} dtypes[ST_DTYPE_COUNT] = {
    [ST_F64] = {"F64", 8},           [ST_F32] = {"F32", 4},   [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2},         [ST_F8_E4M3] = {"F8_E4M3", 1},
    [ST_F8_E5M2] = {"F8_E5M2", 1},   [ST_I64] = {"I64", 8},   [ST_I32] = {"I32", 4},
    [ST_I16] = {"I16", 2},           [ST_I8] = {"I8", 1},     [ST_U64] = {"U64", 8},
    [ST_U32] = {"U32", 4},           [ST_U16] = {"U16", 2},   [ST_U8] = {"U8", 1},
    [ST_BOOL] = {"BOOL", 1},
};

const char *st_dtype_name(int dtype) {
    return dtype >= 0 && dtype < ST_DTYPE_COUNT ? dtypes[dtype].name : "?";
}

int st_dtype_size(int dtype) { return dtype >= 0 && dtype < ST_DTYPE_COUNT ? dtypes[dtype].size : 0; }

static int cmp_name(const void *x, const void *y) {
    return strcmp(((const struct st_tensor *)x)->name, ((const struct st_tensor *)y)->name);
}

static int cmp_extent(const void *x, const void *y) {
    const struct st_tensor *const *p = x, *const *q = y;
    if ((*p)->begin != (*q)->begin) return (*p)->begin < (*q)->begin ? -1 : 1;
    return (*p)->end < (*q)->end ? -1 : (*p)->end > (*q)->end;
}

/* A JSON integer that is a valid non-negative size, or -1. */
static int64_t json_size(const json_t *v) {
    if (!json_is_integer(v)) return -1;
    json_int_t i = json_integer_value(v);
    return i < 0 ? -1 : (int64_t)i;
}

/* How much of a name to quote in a message: printable bytes, at most 80. */
static int qlen(const char *s) {
    int n = 0;
    while (s[n] && n < 80 && (unsigned char)s[n] >= 0x20 && s[n] != 0x7f) n++;
    return n;
}

/* Fills t from one header entry; checks it against the data section. */
static int parse_entry(struct st_tensor *t, const char *name, json_t *v, uint64_t data_size,
                       const char *label, char *err, size_t errlen) {
    int nq = qlen(name);
    if (!json_is_object(v))
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: tensor '%.*s': entry is not an object", label, nq,
                         name);
    const char *dt = json_string_value(json_object_get(v, "dtype"));
    json_t *shape = json_object_get(v, "shape"), *offs = json_object_get(v, "data_offsets");
    t->dtype = -1;
    for (int i = 0; dt && i < ST_DTYPE_COUNT; i++)
        if (!strcmp(dt, dtypes[i].name)) t->dtype = i;
    if (t->dtype < 0)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: tensor '%.*s': unknown dtype '%.*s'", label, nq, name,
                         dt ? qlen(dt) : 0, dt ? dt : "");
    if (!json_is_array(shape) || json_array_size(shape) > ST_MAX_DIMS)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: tensor '%.*s': shape must be a list of at most %d sizes",
                         label, nq, name, ST_MAX_DIMS);
    if (!json_is_array(offs) || json_array_size(offs) != 2)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: tensor '%.*s': data_offsets must be [begin, end]", label,
                         nq, name);
    t->n_dims = (int)json_array_size(shape);
    /* The element count times the dtype size, without overflow: each
     * factor is checked against the data size first. */
    uint64_t bytes = (uint64_t)dtypes[t->dtype].size;
    for (int d = 0; d < t->n_dims; d++) {
        int64_t s = json_size(json_array_get(shape, (size_t)d));
        if (s < 0)
            return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: tensor '%.*s': shape[%d] is not a size", label, nq,
                             name, d);
        t->shape[d] = s;
        if (s && bytes > UINT64_MAX / (uint64_t)s) bytes = UINT64_MAX;
        else bytes *= (uint64_t)s;
    }
    int64_t b = json_size(json_array_get(offs, 0)), e = json_size(json_array_get(offs, 1));
    if (b < 0 || e < 0 || b > e)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: tensor '%.*s': bad data_offsets", label, nq, name);
    t->begin = (uint64_t)b;
    t->end = (uint64_t)e;
    if (t->end > data_size)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                         "%s: tensor '%.*s': data ends at byte %" PRIu64 " of a %" PRIu64 "-byte data section",
                         label, nq, name, t->end, data_size);
    if (t->end - t->begin != bytes)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                         "%s: tensor '%.*s': %" PRIu64 " bytes of data, but dtype %s and its shape need %" PRIu64,
                         label, nq, name, t->end - t->begin, dtypes[t->dtype].name, bytes);
    return 0;
}

void st_close(struct st_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    if (f->mapped && f->size) munmap((void *)f->base, f->size);
    free(f);
}

int st_parse(struct st_file **out, const void *buf, size_t size, const char *label, char *err, size_t errlen) {
    *out = NULL;
    if (size < 8)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: %zu bytes is too short for a safetensors file", label,
                         size);
    const uint8_t *p = buf;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | p[i];
    if (n > size - 8)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                         "%s: header length %" PRIu64 " runs past the end of the %zu-byte file", label, n, size);
    if (n > ST_MAX_HEADER)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: header length %" PRIu64 " exceeds %" PRIu64, label, n,
                         ST_MAX_HEADER);
    json_error_t je;
    json_t *root = json_loadb((const char *)p + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: header is not valid JSON (byte %d: %s)", label,
                         je.position, je.text);
    struct st_file *f = calloc(1, sizeof(*f));
    int rc = 0;
    if (!f) rc = lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "%s: out of memory", label);
    else if (!json_is_object(root)) rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: header is not an object", label);
    if (rc) {
        json_decref(root);
        free(f);
        return rc;
    }
    f->base = buf;
    f->size = size;
    f->data_start = 8 + n;
    uint64_t data_size = size - f->data_start;
    size_t cap = json_object_size(root);
    f->tensors = calloc(cap ? cap : 1, sizeof(*f->tensors));
    if (!f->tensors) rc = lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "%s: out of memory", label);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (rc) break;
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(v))
                rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: __metadata__ is not an object", label);
            continue;
        }
        struct st_tensor *t = &f->tensors[f->n_tensors];
        if (!(t->name = strdup(key))) {
            rc = lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "%s: out of memory", label);
            break;
        }
        f->n_tensors++;
        if (!*key)
            rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: a tensor has an empty name", label);
        if (!rc) rc = parse_entry(t, key, v, data_size, label, err, errlen);
        if (!rc) t->data = p + f->data_start + t->begin;
    }
    json_decref(root);
    /* No two tensors may share bytes (empty ones take none). */
    if (!rc && f->n_tensors > 1) {
        struct st_tensor **order = malloc(f->n_tensors * sizeof(*order));
        if (!order) rc = lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "%s: out of memory", label);
        size_t m = 0;
        for (size_t i = 0; order && i < f->n_tensors; i++)
            if (f->tensors[i].end > f->tensors[i].begin) order[m++] = &f->tensors[i];
        if (order) qsort(order, m, sizeof(*order), cmp_extent);
        for (size_t i = 1; order && i < m && !rc; i++)
            if (order[i - 1]->end > order[i]->begin)
                rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: tensors '%.*s' and '%.*s' overlap in the file", label,
                               qlen(order[i - 1]->name), order[i - 1]->name, qlen(order[i]->name), order[i]->name);
        free(order);
    }
    /* Sorted by name for st_find; JSON_REJECT_DUPLICATES already refused
     * a name given twice. */
    if (!rc) qsort(f->tensors, f->n_tensors, sizeof(*f->tensors), cmp_name);
    if (rc) {
        st_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

int st_open(struct st_file **out, const char *path, char *err, size_t errlen) {
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return lmoe_errf(err, errlen, LMOE_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return lmoe_errf(err, errlen, LMOE_ERR_IO, "'%s' is not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    void *map = size ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close(fd);
    if (map == MAP_FAILED) return lmoe_errf(err, errlen, LMOE_ERR_IO, "cannot map '%s': %s", path, strerror(errno));
    int rc = st_parse(out, map ? map : "", size, path, err, errlen);
    if (rc) {
        if (map) munmap(map, size);
        return rc;
    }
    (*out)->mapped = map != NULL;
    return 0;
}

const struct st_tensor *st_find(const struct st_file *f, const char *name) {
    size_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->tensors[mid].name, name);
        if (c == 0) return &f->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}
