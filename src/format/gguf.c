/*
 * gguf.c - GGUF header, metadata and tensor directory.
 *
 * Layout (little-endian): magic "GGUF", u32 version, u64 tensor count, u64
 * metadata count; the metadata pairs (string key, u32 type, value); the
 * tensor infos (string name, u32 n_dims, u64 ne[n_dims], u32 type, u64
 * offset); padding to general.alignment; then the data section, where each
 * tensor lives at its offset. A string is a u64 length and that many bytes.
 *
 * Parsing walks a cursor that refuses to move past the end of the buffer,
 * so every read is bounds-checked in one place. Counts read from the file
 * are checked against the bytes left before anything is allocated for them:
 * a file cannot make us allocate more than a small multiple of its size.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "format/gguf.h"
#include "leanmoe.h"
#include "quant/quant.h"

/* Nested arrays deeper than this are refused: no real file needs them and
 * recursion depth must be bounded. */
#define GGUF_MAX_NESTING 4
/* Keys and tensor names longer than this are refused as corrupt. */
#define GGUF_MAX_NAME 65535

struct cursor {
    const uint8_t *buf;
    size_t size, pos;
    char *err;
    size_t errlen;
};

static int cur_need(struct cursor *c, uint64_t n, const char *what) {
    if (n > c->size - c->pos)
        return lmoe_errf(c->err, c->errlen, LMOE_ERR_FORMAT,
                         "gguf: truncated file: %s needs %" PRIu64
                         " bytes at offset %zu, file is %zu bytes",
                         what, n, c->pos, c->size);
    return 0;
}

static int cur_read(struct cursor *c, void *dst, size_t n, const char *what) {
    int rc = cur_need(c, n, what);
    if (rc) return rc;
    memcpy(dst, c->buf + c->pos, n);
    c->pos += n;
    return 0;
}

static int cur_u32(struct cursor *c, uint32_t *v, const char *what) {
    return cur_read(c, v, 4, what);
}
static int cur_u64(struct cursor *c, uint64_t *v, const char *what) {
    return cur_read(c, v, 8, what);
}

static int cur_str(struct cursor *c, struct gguf_str *s, const char *what) {
    int rc = cur_u64(c, &s->len, what);
    if (rc) return rc;
    if ((rc = cur_need(c, s->len, what))) return rc;
    s->ptr = (const char *)c->buf + c->pos;
    c->pos += s->len;
    return 0;
}

/* Copies a file string into a NUL-terminated heap string. */
static char *str_dup(struct gguf_str s) {
    char *p = malloc(s.len + 1);
    if (!p) return NULL;
    memcpy(p, s.ptr, s.len);
    p[s.len] = 0;
    return p;
}

/* Keys and tensor names are printed in error lines and compared with
 * strcmp: refuse empty or overlong ones, and any with a NUL or another
 * control byte, which would cut a name short or break the line. */
static int name_ok(struct gguf_str s) {
    if (s.len == 0 || s.len > GGUF_MAX_NAME) return 0;
    for (uint64_t i = 0; i < s.len; i++)
        if ((unsigned char)s.ptr[i] < 0x20 || s.ptr[i] == 0x7f) return 0;
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

const char *gguf_type_name(uint32_t type) {
    static const char *names[GGUF_TYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32",
        "bool", "string", "array", "u64", "i64", "f64"};
    return type < GGUF_TYPE_COUNT ? names[type] : "unknown";
}

/* Decodes one scalar at p into kv's union. */
static void scalar_decode(struct gguf_kv *kv, uint32_t type, const uint8_t *p) {
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32;
            int32_t i32; float f32; uint64_t u64; int64_t i64; double f64; } x;
    memcpy(&x, p, scalar_size(type));
    switch (type) {
    case GGUF_TYPE_UINT8: kv->v.u64 = x.u8; break;
    case GGUF_TYPE_BOOL: kv->v.u64 = x.u8 != 0; break;
    case GGUF_TYPE_INT8: kv->v.i64 = x.i8; break;
    case GGUF_TYPE_UINT16: kv->v.u64 = x.u16; break;
    case GGUF_TYPE_INT16: kv->v.i64 = x.i16; break;
    case GGUF_TYPE_UINT32: kv->v.u64 = x.u32; break;
    case GGUF_TYPE_INT32: kv->v.i64 = x.i32; break;
    case GGUF_TYPE_FLOAT32: kv->v.f64 = x.f32; break;
    case GGUF_TYPE_UINT64: kv->v.u64 = x.u64; break;
    case GGUF_TYPE_INT64: kv->v.i64 = x.i64; break;
    case GGUF_TYPE_FLOAT64: kv->v.f64 = x.f64; break;
    }
}

/* Skips over an array's elements, checking every length on the way. When
 * str_off is not NULL (a top-level string array) it records where each
 * element starts. */
static int skip_array(struct cursor *c, uint32_t elem_type, uint64_t n,
                      int depth, uint64_t *str_off, const char *key) {
    if (depth > GGUF_MAX_NESTING)
        return lmoe_errf(c->err, c->errlen, LMOE_ERR_FORMAT,
                         "gguf: key '%s': arrays nested deeper than %d", key,
                         GGUF_MAX_NESTING);
    if (elem_type >= GGUF_TYPE_COUNT)
        return lmoe_errf(c->err, c->errlen, LMOE_ERR_FORMAT,
                         "gguf: key '%s': unknown array element type %u", key,
                         elem_type);
    size_t esz = scalar_size(elem_type);
    if (esz) {
        if (n > (c->size - c->pos) / esz)
            return lmoe_errf(c->err, c->errlen, LMOE_ERR_FORMAT,
                             "gguf: key '%s': array of %" PRIu64
                             " %s needs more bytes than the file has left",
                             key, n, gguf_type_name(elem_type));
        c->pos += n * esz;
        return 0;
    }
    size_t start = c->pos;
    for (uint64_t i = 0; i < n; i++) {
        if (elem_type == GGUF_TYPE_STRING) {
            struct gguf_str s;
            if (str_off) str_off[i] = c->pos - start;
            int rc = cur_str(c, &s, "array string");
            if (rc) return rc;
        } else if (elem_type == GGUF_TYPE_ARRAY) {
            uint32_t t;
            uint64_t m;
            int rc = cur_u32(c, &t, "nested array type");
            if (!rc) rc = cur_u64(c, &m, "nested array count");
            if (!rc) rc = skip_array(c, t, m, depth + 1, NULL, key);
            if (rc) return rc;
        }
    }
    return 0;
}

static int parse_kv(struct cursor *c, struct gguf_kv *kv) {
    struct gguf_str key;
    int rc = cur_str(c, &key, "metadata key");
    if (rc) return rc;
    if (!name_ok(key))
        return lmoe_errf(c->err, c->errlen, LMOE_ERR_FORMAT,
                         "gguf: metadata key before offset %zu (length %" PRIu64
                         ") is empty, too long or has control characters",
                         c->pos, key.len);
    if (!(kv->key = str_dup(key)))
        return lmoe_errf(c->err, c->errlen, LMOE_ERR_NOMEM, "gguf: out of memory");
    if ((rc = cur_u32(c, &kv->type, kv->key))) return rc;
    if (kv->type == GGUF_TYPE_STRING) return cur_str(c, &kv->v.str, kv->key);
    if (kv->type == GGUF_TYPE_ARRAY) {
        if ((rc = cur_u32(c, &kv->arr_type, kv->key))) return rc;
        if ((rc = cur_u64(c, &kv->arr_n, kv->key))) return rc;
        if (kv->arr_type >= GGUF_TYPE_COUNT)
            return lmoe_errf(c->err, c->errlen, LMOE_ERR_FORMAT,
                             "gguf: key '%s': unknown array element type %u",
                             kv->key, kv->arr_type);
        kv->arr_data = c->buf + c->pos;
        if (kv->arr_type == GGUF_TYPE_STRING) {
            /* Each string takes at least its 8-byte length: bound the count
             * before allocating the offset table. */
            if (kv->arr_n > (c->size - c->pos) / 8)
                return lmoe_errf(c->err, c->errlen, LMOE_ERR_FORMAT,
                                 "gguf: key '%s': array of %" PRIu64
                                 " strings cannot fit in the file",
                                 kv->key, kv->arr_n);
            kv->arr_str_off = malloc((kv->arr_n ? kv->arr_n : 1) * sizeof(uint64_t));
            if (!kv->arr_str_off)
                return lmoe_errf(c->err, c->errlen, LMOE_ERR_NOMEM, "gguf: out of memory");
        }
        return skip_array(c, kv->arr_type, kv->arr_n, 1, kv->arr_str_off, kv->key);
    }
    size_t sz = scalar_size(kv->type);
    if (!sz)
        return lmoe_errf(c->err, c->errlen, LMOE_ERR_FORMAT,
                         "gguf: key '%s' has unknown value type %u", kv->key,
                         kv->type);
    if ((rc = cur_need(c, sz, kv->key))) return rc;
    scalar_decode(kv, kv->type, c->buf + c->pos);
    c->pos += sz;
    return 0;
}

static int parse_tensor_info(struct cursor *c, struct gguf_tensor *t) {
    struct gguf_str name;
    int rc = cur_str(c, &name, "tensor name");
    if (rc) return rc;
    if (!name_ok(name))
        return lmoe_errf(c->err, c->errlen, LMOE_ERR_FORMAT,
                         "gguf: tensor name before offset %zu (length %" PRIu64
                         ") is empty, too long or has control characters",
                         c->pos, name.len);
    if (!(t->name = str_dup(name)))
        return lmoe_errf(c->err, c->errlen, LMOE_ERR_NOMEM, "gguf: out of memory");
    uint32_t n_dims;
    if ((rc = cur_u32(c, &n_dims, t->name))) return rc;
    if (n_dims == 0 || n_dims > GGUF_MAX_DIMS)
        return lmoe_errf(c->err, c->errlen, LMOE_ERR_FORMAT,
                         "gguf: tensor '%s' has %u dimensions (1..%d allowed)",
                         t->name, n_dims, GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    uint64_t n_elem = 1;
    for (int d = 0; d < t->n_dims; d++) {
        uint64_t ne;
        if ((rc = cur_u64(c, &ne, t->name))) return rc;
        /* Each dimension, and the product, must stay far below 2^63 so
         * that later int64 arithmetic on shapes cannot overflow. */
        if (ne == 0 || ne > ((uint64_t)1 << 40) || n_elem > (((uint64_t)1 << 50) / ne))
            return lmoe_errf(c->err, c->errlen, LMOE_ERR_FORMAT,
                             "gguf: tensor '%s' has an invalid shape "
                             "(dimension %d is %" PRIu64 ")", t->name, d, ne);
        t->ne[d] = (int64_t)ne;
        n_elem *= ne;
    }
    if ((rc = cur_u32(c, &t->type, t->name))) return rc;
    if ((rc = cur_u64(c, &t->offset, t->name))) return rc;
    const struct lmoe_dtype_traits *tr = lmoe_dtype_get(t->type);
    if (!tr)
        return lmoe_errf(c->err, c->errlen, LMOE_ERR_UNSUPPORTED,
                         "gguf: tensor '%s' has tensor type %u, which leanmoe "
                         "does not know", t->name, t->type);
    if (t->ne[0] % tr->block_size)
        return lmoe_errf(c->err, c->errlen, LMOE_ERR_FORMAT,
                         "gguf: tensor '%s': row length %" PRId64
                         " is not a multiple of the %s block size %d",
                         t->name, t->ne[0], tr->name, tr->block_size);
    t->nbytes = n_elem / (uint64_t)tr->block_size * (uint64_t)tr->type_size;
    return 0;
}

static void free_contents(struct gguf_file *f) {
    if (f->kv)
        for (uint64_t i = 0; i < f->n_kv; i++) {
            free(f->kv[i].key);
            free(f->kv[i].arr_str_off);
        }
    if (f->tensors)
        for (uint64_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->kv);
    free(f->tensors);
    free(f->by_name);
}

void gguf_close(struct gguf_file *f) {
    if (!f) return;
    free_contents(f);
    if (f->mapped && f->size) munmap((void *)f->base, f->size);
    free(f);
}

/* Tensors may appear in any order; checks that none overlap by sorting
 * their extents, and that no name appears twice by sorting the names. */
static int cmp_extent(const void *x, const void *y) {
    const struct gguf_tensor *const *p = x, *const *q = y;
    if ((*p)->offset != (*q)->offset) return (*p)->offset < (*q)->offset ? -1 : 1;
    return 0;
}

static int cmp_name(const void *x, const void *y) {
    const struct gguf_tensor *const *p = x, *const *q = y;
    return strcmp((*p)->name, (*q)->name);
}

static int check_tensors(struct gguf_file *f, char *err, size_t errlen) {
    uint64_t data_size = f->size - f->data_offset;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        struct gguf_tensor *t = &f->tensors[i];
        if (t->offset % f->alignment)
            return lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                             "gguf: tensor '%s': data offset %" PRIu64
                             " is not a multiple of the alignment %u",
                             t->name, t->offset, f->alignment);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                             "gguf: tensor '%s': data ends at byte %" PRIu64
                             ", file is %zu",
                             t->name, f->data_offset + t->offset + t->nbytes, f->size);
        t->data = f->base + f->data_offset + t->offset;
    }
    if (f->n_tensors == 0) return 0;
    struct gguf_tensor **order = malloc(f->n_tensors * sizeof(*order));
    if (!order) return lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "gguf: out of memory");
    for (uint64_t i = 0; i < f->n_tensors; i++) order[i] = &f->tensors[i];
    qsort(order, f->n_tensors, sizeof(*order), cmp_extent);
    int rc = 0;
    for (uint64_t i = 1; i < f->n_tensors && !rc; i++)
        if (order[i - 1]->offset + order[i - 1]->nbytes > order[i]->offset)
            rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                           "gguf: tensors '%s' and '%s' overlap in the file",
                           order[i - 1]->name, order[i]->name);
    /* Equal names would make lookups ambiguous; sort names to find them. */
    if (!rc) qsort(order, f->n_tensors, sizeof(*order), cmp_name);
    for (uint64_t i = 1; i < f->n_tensors && !rc; i++)
        if (!strcmp(order[i - 1]->name, order[i]->name))
            rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                           "gguf: tensor '%s' appears twice", order[i]->name);
    /* Kept sorted by name: gguf_find_tensor searches it in O(log n), so
     * binding thousands of tensors stays fast even for a crafted file. */
    if (rc) free(order);
    else f->by_name = order;
    return rc;
}

int gguf_parse(struct gguf_file **out, const void *buf, size_t size, char *err,
               size_t errlen) {
    *out = NULL;
    struct gguf_file *f = calloc(1, sizeof(*f));
    if (!f) return lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "gguf: out of memory");
    f->base = buf;
    f->size = size;
    struct cursor c = {buf, size, 0, err, errlen};
    char magic[4];
    int rc = cur_read(&c, magic, 4, "magic");
    if (!rc && memcmp(magic, "GGUF", 4))
        rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "gguf: not a GGUF file (bad magic)");
    if (!rc) rc = cur_u32(&c, &f->version, "version");
    if (!rc && (f->version < 2 || f->version > 3))
        rc = lmoe_errf(err, errlen, f->version == 1 ? LMOE_ERR_UNSUPPORTED : LMOE_ERR_FORMAT,
                       "gguf: version %u is not supported (2 and 3 are)", f->version);
    uint64_t n_tensors = 0, n_kv = 0;
    if (!rc) rc = cur_u64(&c, &n_tensors, "tensor count");
    if (!rc) rc = cur_u64(&c, &n_kv, "metadata count");
    /* A key/value takes at least 8+1+4+1 bytes and a tensor info at least
     * 8+1+4+8+4+8: bound both counts by the file size before allocating. */
    if (!rc && (n_kv > size / 14 || n_tensors > size / 33))
        rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                       "gguf: %" PRIu64 " metadata pairs and %" PRIu64
                       " tensors cannot fit in a %zu-byte file", n_kv, n_tensors, size);
    if (!rc && !(f->kv = calloc(n_kv ? n_kv : 1, sizeof(*f->kv))))
        rc = lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "gguf: out of memory");
    for (uint64_t i = 0; !rc && i < n_kv; i++) {
        f->n_kv = i + 1;
        rc = parse_kv(&c, &f->kv[i]);
    }
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const struct gguf_kv *al = rc ? NULL : gguf_find_kv(f, "general.alignment");
    if (al) {
        uint64_t a = al->v.u64;
        if (al->type != GGUF_TYPE_UINT32 || a == 0 || (a & (a - 1)) || a > 65536)
            rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                           "gguf: general.alignment must be a power of two u32, got %" PRIu64, a);
        else
            f->alignment = (uint32_t)a;
    }
    if (!rc && !(f->tensors = calloc(n_tensors ? n_tensors : 1, sizeof(*f->tensors))))
        rc = lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "gguf: out of memory");
    for (uint64_t i = 0; !rc && i < n_tensors; i++) {
        f->n_tensors = i + 1;
        rc = parse_tensor_info(&c, &f->tensors[i]);
    }
    if (!rc) {
        f->data_offset = (c.pos + f->alignment - 1) / f->alignment * f->alignment;
        if (f->data_offset > size) {
            if (n_tensors)
                rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                               "gguf: truncated file: data section starts at %" PRIu64
                               ", file is %zu bytes", f->data_offset, size);
            else
                f->data_offset = size;
        }
    }
    if (!rc) rc = check_tensors(f, err, errlen);
    if (rc) {
        f->mapped = 0;
        gguf_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

int gguf_open(struct gguf_file **out, const char *path, char *err, size_t errlen) {
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return lmoe_errf(err, errlen, LMOE_ERR_IO, "gguf: cannot open '%s': %s",
                         path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return lmoe_errf(err, errlen, LMOE_ERR_IO, "gguf: '%s' is not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    if (size == 0) {
        close(fd);
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "gguf: '%s' is empty", path);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return lmoe_errf(err, errlen, LMOE_ERR_IO, "gguf: cannot map '%s': %s", path,
                         strerror(errno));
    char sub[512];
    int rc = gguf_parse(out, map, size, sub, sizeof sub);
    if (rc) {
        munmap(map, size);
        /* Prefix the file name so the one line says which file is bad. */
        return lmoe_errf(err, errlen, rc, "%s: %s", path, sub);
    }
    (*out)->mapped = 1;
    return 0;
}

const struct gguf_kv *gguf_find_kv(const struct gguf_file *f, const char *key) {
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (f->kv[i].key && !strcmp(f->kv[i].key, key)) return &f->kv[i];
    return NULL;
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name) {
    size_t lo = 0, hi = f->by_name ? f->n_tensors : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->by_name[mid]->name, name);
        if (c == 0) return f->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static int is_unsigned(uint32_t t) {
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
           t == GGUF_TYPE_UINT64 || t == GGUF_TYPE_BOOL;
}
static int is_signed(uint32_t t) {
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_INT64;
}

static const struct gguf_kv *need_kv(const struct gguf_file *f, const char *key,
                                     char *err, size_t errlen) {
    const struct gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "gguf: missing metadata key '%s'", key);
    return kv;
}

int gguf_get_u64(const struct gguf_file *f, const char *key, uint64_t *out,
                 char *err, size_t errlen) {
    const struct gguf_kv *kv = need_kv(f, key, err, errlen);
    if (!kv) return LMOE_ERR_FORMAT;
    if (is_unsigned(kv->type)) { *out = kv->v.u64; return 0; }
    if (is_signed(kv->type) && kv->v.i64 >= 0) { *out = (uint64_t)kv->v.i64; return 0; }
    return lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                     "gguf: metadata '%s' should be a non-negative integer, is %s",
                     key, gguf_type_name(kv->type));
}

int gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out,
                 char *err, size_t errlen) {
    uint64_t v;
    int rc = gguf_get_u64(f, key, &v, err, errlen);
    if (rc) return rc;
    if (v > UINT32_MAX)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                         "gguf: metadata '%s' = %" PRIu64 " is out of range", key, v);
    *out = (uint32_t)v;
    return 0;
}

int gguf_get_f32(const struct gguf_file *f, const char *key, float *out,
                 char *err, size_t errlen) {
    const struct gguf_kv *kv = need_kv(f, key, err, errlen);
    if (!kv) return LMOE_ERR_FORMAT;
    if (kv->type == GGUF_TYPE_FLOAT32 || kv->type == GGUF_TYPE_FLOAT64) *out = (float)kv->v.f64;
    else if (is_unsigned(kv->type)) *out = (float)kv->v.u64;
    else if (is_signed(kv->type)) *out = (float)kv->v.i64;
    else
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                         "gguf: metadata '%s' should be a number, is %s", key,
                         gguf_type_name(kv->type));
    return 0;
}

int gguf_get_bool(const struct gguf_file *f, const char *key, int *out,
                  char *err, size_t errlen) {
    uint64_t v;
    int rc = gguf_get_u64(f, key, &v, err, errlen);
    if (!rc) *out = v != 0;
    return rc;
}

int gguf_get_str(const struct gguf_file *f, const char *key, struct gguf_str *out,
                 char *err, size_t errlen) {
    const struct gguf_kv *kv = need_kv(f, key, err, errlen);
    if (!kv) return LMOE_ERR_FORMAT;
    if (kv->type != GGUF_TYPE_STRING)
        return lmoe_errf(err, errlen, LMOE_ERR_FORMAT,
                         "gguf: metadata '%s' should be a string, is %s", key,
                         gguf_type_name(kv->type));
    *out = kv->v.str;
    return 0;
}

struct gguf_str gguf_arr_str(const struct gguf_kv *kv, uint64_t i) {
    LMOE_ASSERT(kv->type == GGUF_TYPE_ARRAY && kv->arr_type == GGUF_TYPE_STRING && i < kv->arr_n);
    const uint8_t *p = kv->arr_data + kv->arr_str_off[i];
    struct gguf_str s;
    memcpy(&s.len, p, 8);
    s.ptr = (const char *)p + 8;
    return s;
}

double gguf_arr_num(const struct gguf_kv *kv, uint64_t i) {
    LMOE_ASSERT(kv->type == GGUF_TYPE_ARRAY && i < kv->arr_n);
    size_t sz = scalar_size(kv->arr_type);
    if (!sz) return 0;
    struct gguf_kv tmp;
    scalar_decode(&tmp, kv->arr_type, kv->arr_data + i * sz);
    if (kv->arr_type == GGUF_TYPE_FLOAT32 || kv->arr_type == GGUF_TYPE_FLOAT64) return tmp.v.f64;
    if (is_signed(kv->arr_type)) return (double)tmp.v.i64;
    return (double)tmp.v.u64;
}
