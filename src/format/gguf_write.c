/*
 * gguf_write.c - GGUF version 3 writer.
 *
 * Each metadata pair is kept serialized: its key, then the bytes the file
 * holds after the key (u32 value type, value). Setting a key again swaps
 * those bytes, copying a pair from a reader copies them, and writing the
 * file concatenates them. Tensor infos are kept as fields; offsets are laid
 * out at write time, each tensor at the next multiple of the alignment
 * after the previous one's data, as llama.cpp's reader requires.
 *
 * Streamed data is produced into one chunk buffer and written with write(2)
 * straight from it, so a file much larger than memory costs one buffer.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "format/gguf_write.h"
#include "leanmoe.h"
#include "quant/quant.h"

#define GGUF_WRITE_MAX_NAME 65535
/* write(2) moves at most about 2 GiB per call on Linux: stay below. */
#define GGUF_WRITE_MAX_SYSCALL ((size_t)1 << 30)

struct wkv {
    char *key;
    uint8_t *val; /* u32 type, then the value as the file stores it */
    size_t vlen;
};

struct wtensor {
    char *name;
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint32_t type;
    uint64_t nbytes, offset;
    size_t block_bytes; /* bytes per block: fill calls are whole blocks */
    const void *data;   /* borrowed; NULL when streamed */
};

struct gguf_writer {
    struct wkv *kv;
    int64_t n_kv, cap_kv;
    struct wtensor *t;
    int64_t n_t, cap_t;
    size_t chunk;
    int rc; /* first error, sticky */
    char err[512];
};

/* Records the first error; later ones keep the first message. */
__attribute__((format(printf, 3, 4))) static int fail(struct gguf_writer *w, int code, const char *fmt, ...) {
    if (w->rc) return w->rc;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof w->err, fmt, ap);
    va_end(ap);
    w->rc = code;
    return code;
}

int gguf_writer_open(struct gguf_writer **out) {
    *out = calloc(1, sizeof(**out));
    if (!*out) return LMOE_ERR_NOMEM;
    (*out)->chunk = GGUF_WRITE_CHUNK_DEFAULT;
    return 0;
}

void gguf_writer_close(struct gguf_writer *w) {
    if (!w) return;
    for (int64_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    for (int64_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

const char *gguf_writer_error(const struct gguf_writer *w) { return w->err; }
int gguf_writer_status(const struct gguf_writer *w) { return w->rc; }
int64_t gguf_writer_n_kv(const struct gguf_writer *w) { return w->n_kv; }

void gguf_writer_set_chunk_size(struct gguf_writer *w, size_t bytes) {
    w->chunk = bytes ? bytes : 1;
}

/* Same rule as the reader's: names end up in messages and strcmp. */
static int name_ok(const char *s, size_t len) {
    if (len == 0 || len > GGUF_WRITE_MAX_NAME) return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return 0;
    return 1;
}

static size_t scalar_size(uint32_t type) {
    switch (type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    }
    return 0;
}

/* Takes ownership of val (vlen bytes) as key's serialized value. */
static int put_kv(struct gguf_writer *w, const char *key, uint8_t *val, size_t vlen) {
    if (w->rc) {
        free(val);
        return w->rc;
    }
    if (!val) return fail(w, LMOE_ERR_NOMEM, "gguf: out of memory setting '%s'", key ? key : "");
    if (!key || !name_ok(key, strlen(key))) {
        free(val);
        return fail(w, LMOE_ERR_ARG, "gguf: metadata key '%s' is empty, too long or has control characters",
                    key ? key : "(null)");
    }
    for (int64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, key)) {
            free(w->kv[i].val);
            w->kv[i].val = val;
            w->kv[i].vlen = vlen;
            return 0;
        }
    if (w->n_kv == w->cap_kv) {
        int64_t cap = w->cap_kv ? 2 * w->cap_kv : 32;
        struct wkv *kv = realloc(w->kv, (size_t)cap * sizeof(*kv));
        if (!kv) {
            free(val);
            return fail(w, LMOE_ERR_NOMEM, "gguf: out of memory setting '%s'", key);
        }
        w->kv = kv;
        w->cap_kv = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(val);
        return fail(w, LMOE_ERR_NOMEM, "gguf: out of memory setting '%s'", key);
    }
    w->kv[w->n_kv++] = (struct wkv){k, val, vlen};
    return 0;
}

/* A value buffer: u32 type, then `extra` bytes for the caller to fill. */
static uint8_t *val_new(uint32_t type, size_t extra) {
    uint8_t *v = malloc(4 + extra);
    if (v) memcpy(v, &type, 4);
    return v;
}

static int set_scalar(struct gguf_writer *w, const char *key, uint32_t type, const void *x) {
    size_t n = scalar_size(type);
    uint8_t *v = val_new(type, n);
    if (v) memcpy(v + 4, x, n);
    return put_kv(w, key, v, 4 + n);
}

int gguf_writer_set_u8(struct gguf_writer *w, const char *key, uint8_t v) { return set_scalar(w, key, GGUF_TYPE_UINT8, &v); }
int gguf_writer_set_i8(struct gguf_writer *w, const char *key, int8_t v) { return set_scalar(w, key, GGUF_TYPE_INT8, &v); }
int gguf_writer_set_u16(struct gguf_writer *w, const char *key, uint16_t v) { return set_scalar(w, key, GGUF_TYPE_UINT16, &v); }
int gguf_writer_set_i16(struct gguf_writer *w, const char *key, int16_t v) { return set_scalar(w, key, GGUF_TYPE_INT16, &v); }
int gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v) { return set_scalar(w, key, GGUF_TYPE_UINT32, &v); }
int gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v) { return set_scalar(w, key, GGUF_TYPE_INT32, &v); }
int gguf_writer_set_u64(struct gguf_writer *w, const char *key, uint64_t v) { return set_scalar(w, key, GGUF_TYPE_UINT64, &v); }
int gguf_writer_set_i64(struct gguf_writer *w, const char *key, int64_t v) { return set_scalar(w, key, GGUF_TYPE_INT64, &v); }
int gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v) { return set_scalar(w, key, GGUF_TYPE_FLOAT32, &v); }
int gguf_writer_set_f64(struct gguf_writer *w, const char *key, double v) { return set_scalar(w, key, GGUF_TYPE_FLOAT64, &v); }

int gguf_writer_set_bool(struct gguf_writer *w, const char *key, int v) {
    uint8_t b = v != 0;
    return set_scalar(w, key, GGUF_TYPE_BOOL, &b);
}

int gguf_writer_set_str_n(struct gguf_writer *w, const char *key, const char *s, uint64_t len) {
    uint8_t *v = len < SIZE_MAX - 12 ? val_new(GGUF_TYPE_STRING, 8 + (size_t)len) : NULL;
    if (v) {
        memcpy(v + 4, &len, 8);
        if (len) memcpy(v + 12, s, (size_t)len);
    }
    return put_kv(w, key, v, 12 + (size_t)len);
}

int gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *s) {
    if (!s) return put_kv(w, key, NULL, 0);
    return gguf_writer_set_str_n(w, key, s, strlen(s));
}

int gguf_writer_set_arr_num(struct gguf_writer *w, const char *key, uint32_t elem_type,
                            const void *data, uint64_t n) {
    size_t esz = scalar_size(elem_type);
    if (!esz) {
        if (w->rc) return w->rc;
        return fail(w, LMOE_ERR_ARG, "gguf: key '%s': %s is not a number type for an array",
                    key ? key : "", gguf_type_name(elem_type));
    }
    if (n > (SIZE_MAX - 16) / esz) return put_kv(w, key, NULL, 0);
    uint8_t *v = val_new(GGUF_TYPE_ARRAY, 12 + (size_t)n * esz);
    if (v) {
        memcpy(v + 4, &elem_type, 4);
        memcpy(v + 8, &n, 8);
        if (n) memcpy(v + 16, data, (size_t)n * esz);
    }
    return put_kv(w, key, v, 16 + (size_t)n * esz);
}

int gguf_writer_set_arr_str(struct gguf_writer *w, const char *key, const char *const *s, uint64_t n) {
    size_t total = 16;
    for (uint64_t i = 0; i < n; i++) total += 8 + strlen(s[i]);
    uint8_t *v = val_new(GGUF_TYPE_ARRAY, total - 4);
    if (v) {
        uint32_t et = GGUF_TYPE_STRING;
        memcpy(v + 4, &et, 4);
        memcpy(v + 8, &n, 8);
        uint8_t *p = v + 16;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t len = strlen(s[i]);
            memcpy(p, &len, 8);
            memcpy(p + 8, s[i], (size_t)len);
            p += 8 + len;
        }
    }
    return put_kv(w, key, v, total);
}

/* Bytes taken by n array elements of type t starting at p. The reader has
 * already checked every length of the array against its file, so this walk
 * stays inside the mapping. */
static uint64_t raw_array_bytes(uint32_t t, uint64_t n, const uint8_t *p) {
    size_t esz = scalar_size(t);
    if (esz) return n * esz;
    uint64_t pos = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (t == GGUF_TYPE_STRING) {
            uint64_t len;
            memcpy(&len, p + pos, 8);
            pos += 8 + len;
        } else { /* a nested array: u32 type, u64 count, elements */
            uint32_t et;
            uint64_t m;
            memcpy(&et, p + pos, 4);
            memcpy(&m, p + pos + 4, 8);
            pos += 12;
            pos += raw_array_bytes(et, m, p + pos);
        }
    }
    return pos;
}

int gguf_writer_copy_kv(struct gguf_writer *w, const struct gguf_kv *kv) {
    if (kv->type == GGUF_TYPE_STRING) return gguf_writer_set_str_n(w, kv->key, kv->v.str.ptr, kv->v.str.len);
    if (kv->type == GGUF_TYPE_ARRAY) {
        uint64_t bytes = raw_array_bytes(kv->arr_type, kv->arr_n, kv->arr_data);
        uint8_t *v = bytes < SIZE_MAX - 16 ? val_new(GGUF_TYPE_ARRAY, 12 + (size_t)bytes) : NULL;
        if (v) {
            memcpy(v + 4, &kv->arr_type, 4);
            memcpy(v + 8, &kv->arr_n, 8);
            if (bytes) memcpy(v + 16, kv->arr_data, (size_t)bytes);
        }
        return put_kv(w, kv->key, v, 16 + (size_t)bytes);
    }
    /* Scalars were widened by the reader; narrowing back is exact. */
    switch (kv->type) {
    case GGUF_TYPE_UINT8: return gguf_writer_set_u8(w, kv->key, (uint8_t)kv->v.u64);
    case GGUF_TYPE_INT8: return gguf_writer_set_i8(w, kv->key, (int8_t)kv->v.i64);
    case GGUF_TYPE_UINT16: return gguf_writer_set_u16(w, kv->key, (uint16_t)kv->v.u64);
    case GGUF_TYPE_INT16: return gguf_writer_set_i16(w, kv->key, (int16_t)kv->v.i64);
    case GGUF_TYPE_UINT32: return gguf_writer_set_u32(w, kv->key, (uint32_t)kv->v.u64);
    case GGUF_TYPE_INT32: return gguf_writer_set_i32(w, kv->key, (int32_t)kv->v.i64);
    case GGUF_TYPE_UINT64: return gguf_writer_set_u64(w, kv->key, kv->v.u64);
    case GGUF_TYPE_INT64: return gguf_writer_set_i64(w, kv->key, kv->v.i64);
    case GGUF_TYPE_FLOAT32: return gguf_writer_set_f32(w, kv->key, (float)kv->v.f64);
    case GGUF_TYPE_FLOAT64: return gguf_writer_set_f64(w, kv->key, kv->v.f64);
    case GGUF_TYPE_BOOL: return gguf_writer_set_bool(w, kv->key, kv->v.u64 != 0);
    }
    if (w->rc) return w->rc;
    return fail(w, LMOE_ERR_ARG, "gguf: key '%s' has unknown value type %u", kv->key, kv->type);
}

int gguf_writer_del_kv(struct gguf_writer *w, const char *key) {
    for (int64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, key)) {
            free(w->kv[i].key);
            free(w->kv[i].val);
            memmove(&w->kv[i], &w->kv[i + 1], (size_t)(w->n_kv - i - 1) * sizeof(*w->kv));
            w->n_kv--;
            return 1;
        }
    return 0;
}

int64_t gguf_writer_add_tensor(struct gguf_writer *w, const char *name, uint32_t type, int n_dims,
                               const int64_t *ne, const void *data) {
    if (w->rc) return w->rc;
    if (!name || !name_ok(name, strlen(name)))
        return fail(w, LMOE_ERR_ARG, "gguf: tensor name '%s' is empty, too long or has control characters",
                    name ? name : "(null)");
    const struct lmoe_dtype_traits *tr = lmoe_dtype_get(type);
    if (!tr) return fail(w, LMOE_ERR_UNSUPPORTED, "gguf: tensor '%s': unknown tensor type %u", name, type);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return fail(w, LMOE_ERR_ARG, "gguf: tensor '%s' has %d dimensions (1..%d allowed)", name, n_dims,
                    GGUF_MAX_DIMS);
    struct wtensor t = {.n_dims = n_dims, .type = type, .data = data};
    uint64_t n_elem = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        int64_t x = d < n_dims ? ne[d] : 1;
        /* The reader's bounds: each dimension up to 2^40, the product 2^50. */
        if (x < 1 || x > ((int64_t)1 << 40) || n_elem > (((uint64_t)1 << 50) / (uint64_t)x))
            return fail(w, LMOE_ERR_ARG, "gguf: tensor '%s' has an invalid shape (dimension %d is %" PRId64 ")",
                        name, d, x);
        t.ne[d] = x;
        n_elem *= (uint64_t)x;
    }
    if (t.ne[0] % tr->block_size)
        return fail(w, LMOE_ERR_ARG, "gguf: tensor '%s': row length %" PRId64 " is not a multiple of the %s block size %d",
                    name, t.ne[0], tr->name, tr->block_size);
    t.nbytes = n_elem / (uint64_t)tr->block_size * (uint64_t)tr->type_size;
    t.block_bytes = (size_t)tr->type_size;
    for (int64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return fail(w, LMOE_ERR_ARG, "gguf: tensor '%s' added twice", name);
    if (w->n_t == w->cap_t) {
        int64_t cap = w->cap_t ? 2 * w->cap_t : 64;
        struct wtensor *nt = realloc(w->t, (size_t)cap * sizeof(*nt));
        if (!nt) return fail(w, LMOE_ERR_NOMEM, "gguf: out of memory adding tensor '%s'", name);
        w->t = nt;
        w->cap_t = cap;
    }
    if (!(t.name = strdup(name))) return fail(w, LMOE_ERR_NOMEM, "gguf: out of memory adding tensor '%s'", name);
    w->t[w->n_t] = t;
    return w->n_t++;
}

uint64_t gguf_writer_tensor_nbytes(const struct gguf_writer *w, int64_t i) {
    return i >= 0 && i < w->n_t ? w->t[i].nbytes : 0;
}

/* The alignment general.alignment asks for (a u32 power of two up to 64 KiB,
 * the reader's rule), or the default. 0 after recording an error. */
static uint32_t alignment_of(struct gguf_writer *w) {
    for (int64_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment")) continue;
        uint32_t type, a = 0;
        memcpy(&type, w->kv[i].val, 4);
        if (type == GGUF_TYPE_UINT32) memcpy(&a, w->kv[i].val + 4, 4);
        if (type != GGUF_TYPE_UINT32 || a == 0 || (a & (a - 1)) || a > 65536) {
            fail(w, LMOE_ERR_FORMAT, "gguf: general.alignment must be a power of two u32 up to 65536");
            return 0;
        }
        return a;
    }
    return GGUF_DEFAULT_ALIGNMENT;
}

static uint64_t align_up(uint64_t x, uint32_t a) { return (x + a - 1) / a * a; }

/* Lays out the data section: fills each tensor's offset. Returns the
 * header's size before padding, or 0 on error. *total gets the file size. */
static uint64_t layout(struct gguf_writer *w, uint32_t *align, uint64_t *total) {
    if (w->rc || !(*align = alignment_of(w))) return 0;
    uint64_t h = 4 + 4 + 8 + 8;
    for (int64_t i = 0; i < w->n_kv; i++) h += 8 + strlen(w->kv[i].key) + w->kv[i].vlen;
    for (int64_t i = 0; i < w->n_t; i++) h += 8 + strlen(w->t[i].name) + 4 + 8 * (uint64_t)w->t[i].n_dims + 4 + 8;
    uint64_t off = 0;
    for (int64_t i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        off += align_up(w->t[i].nbytes, *align);
    }
    *total = align_up(h, *align) + off;
    return h;
}

uint64_t gguf_writer_file_size(struct gguf_writer *w) {
    uint32_t a;
    uint64_t total = 0;
    return layout(w, &a, &total) ? total : 0;
}

static uint8_t *put(uint8_t *p, const void *src, size_t n) {
    memcpy(p, src, n);
    return p + n;
}

/* The header: magic, version, counts, metadata, tensor infos, padding. */
static uint8_t *header_build(const struct gguf_writer *w, uint64_t hsize, uint32_t align, size_t *len) {
    size_t n = (size_t)align_up(hsize, align);
    uint8_t *buf = calloc(1, n), *p = buf;
    if (!buf) return NULL;
    uint32_t version = 3;
    uint64_t nt = (uint64_t)w->n_t, nkv = (uint64_t)w->n_kv;
    p = put(p, "GGUF", 4);
    p = put(p, &version, 4);
    p = put(p, &nt, 8);
    p = put(p, &nkv, 8);
    for (int64_t i = 0; i < w->n_kv; i++) {
        uint64_t kl = strlen(w->kv[i].key);
        p = put(p, &kl, 8);
        p = put(p, w->kv[i].key, (size_t)kl);
        p = put(p, w->kv[i].val, w->kv[i].vlen);
    }
    for (int64_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        uint64_t nl = strlen(t->name);
        uint32_t nd = (uint32_t)t->n_dims;
        p = put(p, &nl, 8);
        p = put(p, t->name, (size_t)nl);
        p = put(p, &nd, 4);
        for (int d = 0; d < t->n_dims; d++) p = put(p, &t->ne[d], 8);
        p = put(p, &t->type, 4);
        p = put(p, &t->offset, 8);
    }
    *len = n;
    return buf;
}

/* Writes all n bytes, retrying short writes; names the file on failure. */
static int write_all(struct gguf_writer *w, int fd, const char *path, const void *p, uint64_t n) {
    const uint8_t *b = p;
    while (n) {
        size_t k = n < GGUF_WRITE_MAX_SYSCALL ? (size_t)n : GGUF_WRITE_MAX_SYSCALL;
        ssize_t r = write(fd, b, k);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : ENOSPC;
            if (e == ENOSPC || e == EDQUOT)
                return fail(w, LMOE_ERR_IO, "gguf: disk full writing '%s'", path);
            return fail(w, LMOE_ERR_IO, "gguf: cannot write '%s': %s", path, strerror(e));
        }
        b += r;
        n -= (uint64_t)r;
    }
    return 0;
}

/* Writes tensor i's data, then its padding. */
static int write_tensor(struct gguf_writer *w, int fd, const char *path, int64_t i, gguf_fill_fn fill,
                        void *ctx, uint8_t *buf, size_t buf_size, uint32_t align) {
    const struct wtensor *t = &w->t[i];
    static const uint8_t zeros[65536];
    int rc = 0;
    if (t->data) {
        rc = write_all(w, fd, path, t->data, t->nbytes);
    } else {
        /* Whole blocks per chunk, so a fill never starts inside a block. */
        size_t step = buf_size / t->block_bytes * t->block_bytes;
        for (uint64_t off = 0; !rc && off < t->nbytes; off += step) {
            size_t n = t->nbytes - off < step ? (size_t)(t->nbytes - off) : step;
            int frc = fill(ctx, i, buf, off, n);
            if (frc)
                return fail(w, frc < 0 ? frc : LMOE_ERR_ARG, "gguf: filling tensor '%s' at byte %" PRIu64 " failed (%s)",
                            t->name, off, lmoe_strerror(frc < 0 ? frc : LMOE_ERR_ARG));
            rc = write_all(w, fd, path, buf, n);
        }
    }
    uint64_t pad = align_up(t->nbytes, align) - t->nbytes;
    if (!rc && pad) rc = write_all(w, fd, path, zeros, pad);
    return rc;
}

int gguf_writer_write(struct gguf_writer *w, const char *path, gguf_fill_fn fill, void *ctx) {
    uint32_t align = 0;
    uint64_t total = 0, hsize = layout(w, &align, &total);
    if (!hsize) return w->rc;
    /* The chunk buffer: one chunk, or less when no streamed tensor needs
     * that much; always at least the largest block. */
    size_t buf_size = 0;
    for (int64_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        if (t->data) continue;
        if (!fill) return fail(w, LMOE_ERR_ARG, "gguf: tensor '%s' has no data and no fill callback", t->name);
        size_t want = t->nbytes < w->chunk ? (size_t)t->nbytes : w->chunk;
        if (want < t->block_bytes) want = t->block_bytes;
        if (want > buf_size) buf_size = want;
    }
    size_t hlen = 0;
    uint8_t *header = header_build(w, hsize, align, &hlen);
    uint8_t *buf = buf_size ? malloc(buf_size) : NULL;
    size_t tlen = strlen(path) + 32;
    char *tmp = malloc(tlen);
    if (!header || (buf_size && !buf) || !tmp) {
        free(header);
        free(buf);
        free(tmp);
        return fail(w, LMOE_ERR_NOMEM, "gguf: out of memory writing '%s'", path);
    }
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = 0;
    if (fd < 0)
        rc = fail(w, LMOE_ERR_IO, "gguf: cannot create '%s': %s", tmp, strerror(errno));
    if (!rc) rc = write_all(w, fd, tmp, header, hlen);
    for (int64_t i = 0; !rc && i < w->n_t; i++) rc = write_tensor(w, fd, tmp, i, fill, ctx, buf, buf_size, align);
    if (fd >= 0 && close(fd) != 0 && !rc)
        rc = fail(w, LMOE_ERR_IO, "gguf: cannot write '%s': %s", tmp, strerror(errno));
    if (!rc && rename(tmp, path) != 0)
        rc = fail(w, LMOE_ERR_IO, "gguf: cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    if (rc && fd >= 0) unlink(tmp);
    free(header);
    free(buf);
    free(tmp);
    return rc;
}
