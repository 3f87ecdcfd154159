/*
 * test_gguf.c - the GGUF reader against files written here, byte by byte.
 *
 * A tiny writer builds GGUF files in memory: valid ones must parse to the
 * values written; hostile ones (truncated at every byte, huge counts, bad
 * types, shapes and offsets) must be refused with one line naming the
 * problem. Model files go through lmoe_engine_open to check the binder's
 * messages. Real files from ../shared/data and the fuzz corpus are replayed.
 *
 * LMOE_WRITE_SEEDS=dir build/test_runner gguf  rewrites the fuzz seeds.
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format/gguf.h"
#include "leanmoe.h"
#include "model/model.h"
#include "quant/quant.h"
#include "test.h"

/* ---- the writer ---------------------------------------------------------- */

struct wbuf {
    uint8_t *p;
    size_t n, cap;
};

static void w_bytes(struct wbuf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) abort();
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void w_u8(struct wbuf *b, uint8_t v) { w_bytes(b, &v, 1); }
static void w_u16(struct wbuf *b, uint16_t v) { w_bytes(b, &v, 2); }
static void w_u32(struct wbuf *b, uint32_t v) { w_bytes(b, &v, 4); }
static void w_u64(struct wbuf *b, uint64_t v) { w_bytes(b, &v, 8); }
static void w_f32(struct wbuf *b, float v) { w_bytes(b, &v, 4); }
static void w_f64(struct wbuf *b, double v) { w_bytes(b, &v, 8); }
static void w_str(struct wbuf *b, const char *s) {
    w_u64(b, strlen(s));
    w_bytes(b, s, strlen(s));
}
static void w_header(struct wbuf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    w_bytes(b, "GGUF", 4);
    w_u32(b, version);
    w_u64(b, n_tensors);
    w_u64(b, n_kv);
}
/* Key and type of one pair; the value follows. */
static void w_key(struct wbuf *b, const char *key, uint32_t type) {
    w_str(b, key);
    w_u32(b, type);
}
static void w_kv_u32(struct wbuf *b, const char *key, uint32_t v) {
    w_key(b, key, GGUF_TYPE_UINT32);
    w_u32(b, v);
}
static void w_kv_f32(struct wbuf *b, const char *key, float v) {
    w_key(b, key, GGUF_TYPE_FLOAT32);
    w_f32(b, v);
}
static void w_kv_str(struct wbuf *b, const char *key, const char *v) {
    w_key(b, key, GGUF_TYPE_STRING);
    w_str(b, v);
}
static void w_tinfo(struct wbuf *b, const char *name, uint32_t n_dims, const int64_t *ne,
                    uint32_t type, uint64_t offset) {
    w_str(b, name);
    w_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) w_u64(b, (uint64_t)ne[d]);
    w_u32(b, type);
    w_u64(b, offset);
}
static void w_pad(struct wbuf *b, size_t align) {
    while (b->n % align) w_u8(b, 0);
}
/* n bytes of a fixed pattern, so views into the data can be checked. */
static void w_data(struct wbuf *b, size_t n, uint8_t seed) {
    for (size_t i = 0; i < n; i++) w_u8(b, (uint8_t)(seed + i * 7));
}

/* A tensor of a data-driven file; offsets are laid out by write_tensors. */
struct ttensor {
    const char *name;
    uint32_t n_dims;
    int64_t ne[4];
    uint32_t type;
};

static uint64_t t_bytes(const struct ttensor *t) {
    int64_t n = 1;
    for (uint32_t d = 1; d < t->n_dims; d++) n *= t->ne[d];
    return (uint64_t)(lmoe_dtype_row_size(t->type, t->ne[0]) * n);
}

/* Writes the tensor infos, padding and data of n tensors, each at the next
 * aligned offset. The header and metadata must already be in b. */
static void write_tensors(struct wbuf *b, const struct ttensor *t, int n, size_t align) {
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        w_tinfo(b, t[i].name, t[i].n_dims, t[i].ne, t[i].type, off);
        off = (off + t_bytes(&t[i]) + align - 1) / align * align;
    }
    w_pad(b, align);
    for (int i = 0; i < n; i++) {
        if (i) w_pad(b, align); /* none after the last: the file ends there */
        w_data(b, t_bytes(&t[i]), (uint8_t)i);
    }
}

/* Parses a copy of exactly b->n bytes, so that ASan sees any read past the
 * end. *out (if not NULL) receives the file; its buffer is *copy. */
static int parse_exact(const struct wbuf *b, size_t n, struct gguf_file **out, uint8_t **copy,
                       char *err, size_t errlen) {
    uint8_t *c = malloc(n ? n : 1);
    if (n) memcpy(c, b->p, n);
    struct gguf_file *f;
    err[0] = 0;
    int rc = gguf_parse(&f, c, n, err, errlen);
    if (out && !rc) {
        *out = f;
        *copy = c;
        return 0;
    }
    gguf_close(f);
    free(c);
    return rc;
}

static int one_line(const char *err) { return err[0] && !strchr(err, '\n'); }

/* Checks that b is refused with code and a message containing want. */
static void expect_refused_at(const struct wbuf *b, int code, const char *want, const char *what,
                              int line) {
    char err[512];
    int rc = parse_exact(b, b->n, NULL, NULL, err, sizeof err);
    CHECKF(rc == code && strstr(err, want) && one_line(err),
           "line %d, %s: rc %d (want %d), message '%s' (want '%s')", line, what, rc, code, err,
           want);
}
#define expect_refused(b, code, want, what) expect_refused_at(b, code, want, what, __LINE__)

/* ---- valid files --------------------------------------------------------- */

/* A file with a pair of every value type, arrays of numbers, strings and
 * arrays, and tensors of several types at alignment `align`. */
static void build_rich(struct wbuf *b, uint32_t version, uint32_t align) {
    static const struct ttensor ts[] = {
        {"a.f32", 1, {4}, LMOE_DTYPE_F32},
        {"b.f16", 2, {8, 3}, LMOE_DTYPE_F16},
        {"c.q8_0", 3, {32, 2, 2}, LMOE_DTYPE_Q8_0},
        {"d.q4_K", 4, {256, 1, 1, 2}, LMOE_DTYPE_Q4_K},
        {"e.bf16", 1, {5}, LMOE_DTYPE_BF16},
    };
    w_header(b, version, 5, 21);
    w_kv_str(b, "general.architecture", "test");
    w_key(b, "t.u8", GGUF_TYPE_UINT8), w_u8(b, 200);
    w_key(b, "t.i8", GGUF_TYPE_INT8), w_u8(b, (uint8_t)-5);
    w_key(b, "t.u16", GGUF_TYPE_UINT16), w_u16(b, 60000);
    w_key(b, "t.i16", GGUF_TYPE_INT16), w_u16(b, (uint16_t)-300);
    w_kv_u32(b, "t.u32", 4000000000u);
    w_key(b, "t.i32", GGUF_TYPE_INT32), w_u32(b, (uint32_t)-70000);
    w_kv_f32(b, "t.f32", 0.25f);
    w_key(b, "t.bool", GGUF_TYPE_BOOL), w_u8(b, 1);
    w_key(b, "t.u64", GGUF_TYPE_UINT64), w_u64(b, (uint64_t)1 << 40);
    w_key(b, "t.i64", GGUF_TYPE_INT64), w_u64(b, (uint64_t)(int64_t)-9);
    w_key(b, "t.f64", GGUF_TYPE_FLOAT64), w_f64(b, -1.5);
    w_kv_u32(b, "general.alignment", align);
    w_key(b, "t.arr_i32", GGUF_TYPE_ARRAY), w_u32(b, GGUF_TYPE_INT32), w_u64(b, 3);
    w_u32(b, 7), w_u32(b, (uint32_t)-8), w_u32(b, 9);
    w_key(b, "t.arr_f32", GGUF_TYPE_ARRAY), w_u32(b, GGUF_TYPE_FLOAT32), w_u64(b, 2);
    w_f32(b, 1.5f), w_f32(b, -2.0f);
    w_key(b, "t.arr_str", GGUF_TYPE_ARRAY), w_u32(b, GGUF_TYPE_STRING), w_u64(b, 3);
    w_str(b, "hello"), w_str(b, ""), w_str(b, "w\xc3\xb6rld");
    w_key(b, "t.arr_empty", GGUF_TYPE_ARRAY), w_u32(b, GGUF_TYPE_UINT64), w_u64(b, 0);
    /* [[1, 2], [], [3]] as u16, and [["x"], ["y", "z"]] */
    w_key(b, "t.arr_nested", GGUF_TYPE_ARRAY), w_u32(b, GGUF_TYPE_ARRAY), w_u64(b, 3);
    w_u32(b, GGUF_TYPE_UINT16), w_u64(b, 2), w_u16(b, 1), w_u16(b, 2);
    w_u32(b, GGUF_TYPE_UINT16), w_u64(b, 0);
    w_u32(b, GGUF_TYPE_UINT16), w_u64(b, 1), w_u16(b, 3);
    w_key(b, "t.arr_nested_str", GGUF_TYPE_ARRAY), w_u32(b, GGUF_TYPE_ARRAY), w_u64(b, 2);
    w_u32(b, GGUF_TYPE_STRING), w_u64(b, 1), w_str(b, "x");
    w_u32(b, GGUF_TYPE_STRING), w_u64(b, 2), w_str(b, "y"), w_str(b, "z");
    w_key(b, "t.arr_u8", GGUF_TYPE_ARRAY), w_u32(b, GGUF_TYPE_UINT8), w_u64(b, 3);
    w_u8(b, 1), w_u8(b, 2), w_u8(b, 255);
    w_kv_str(b, "t.str", "a string");
    write_tensors(b, ts, 5, align);
}

static int str_is(struct gguf_str s, const char *want) {
    return s.len == strlen(want) && !memcmp(s.ptr, want, s.len);
}

static void test_rich(uint32_t version, uint32_t align) {
    struct wbuf b = {0};
    build_rich(&b, version, align);
    struct gguf_file *f = NULL;
    uint8_t *buf = NULL;
    char err[512];
    int rc = parse_exact(&b, b.n, &f, &buf, err, sizeof err);
    CHECKF(rc == 0, "v%u align %u: %s", version, align, err);
    if (rc) { free(b.p); return; }
    CHECK(f->version == version);
    CHECK(f->n_kv == 21 && f->n_tensors == 5);
    CHECK(f->alignment == align);
    CHECK(f->data_offset % align == 0);

    uint64_t u;
    uint32_t u32;
    float x;
    int bo;
    struct gguf_str s;
    /* every scalar type decodes; integers convert when they fit */
    CHECK(gguf_get_u64(f, "t.u8", &u, err, sizeof err) == 0 && u == 200);
    CHECK(gguf_get_u64(f, "t.u16", &u, err, sizeof err) == 0 && u == 60000);
    CHECK(gguf_get_u32(f, "t.u32", &u32, err, sizeof err) == 0 && u32 == 4000000000u);
    CHECK(gguf_get_u64(f, "t.u64", &u, err, sizeof err) == 0 && u == (uint64_t)1 << 40);
    CHECK(gguf_get_u32(f, "t.u64", &u32, err, sizeof err) == LMOE_ERR_FORMAT &&
          strstr(err, "t.u64") && strstr(err, "out of range"));
    CHECK(gguf_get_u64(f, "t.i8", &u, err, sizeof err) == LMOE_ERR_FORMAT &&
          strstr(err, "t.i8") && strstr(err, "non-negative"));
    CHECK(gguf_get_u64(f, "t.i16", &u, err, sizeof err) == LMOE_ERR_FORMAT);
    CHECK(gguf_get_u64(f, "t.i32", &u, err, sizeof err) == LMOE_ERR_FORMAT);
    CHECK(gguf_get_u64(f, "t.i64", &u, err, sizeof err) == LMOE_ERR_FORMAT);
    CHECK(gguf_get_u64(f, "t.f32", &u, err, sizeof err) == LMOE_ERR_FORMAT &&
          strstr(err, "f32"));
    CHECK(gguf_get_u64(f, "t.str", &u, err, sizeof err) == LMOE_ERR_FORMAT &&
          strstr(err, "string"));
    CHECK(gguf_get_u64(f, "t.bool", &u, err, sizeof err) == 0 && u == 1);
    CHECK(gguf_get_bool(f, "t.bool", &bo, err, sizeof err) == 0 && bo == 1);
    CHECK(gguf_get_bool(f, "t.u8", &bo, err, sizeof err) == 0 && bo == 1);
    CHECK(gguf_get_bool(f, "t.str", &bo, err, sizeof err) == LMOE_ERR_FORMAT);
    CHECK(gguf_get_f32(f, "t.f32", &x, err, sizeof err) == 0 && x == 0.25f);
    CHECK(gguf_get_f32(f, "t.f64", &x, err, sizeof err) == 0 && x == -1.5f);
    CHECK(gguf_get_f32(f, "t.i8", &x, err, sizeof err) == 0 && x == -5.0f);
    CHECK(gguf_get_f32(f, "t.i16", &x, err, sizeof err) == 0 && x == -300.0f);
    CHECK(gguf_get_f32(f, "t.i32", &x, err, sizeof err) == 0 && x == -70000.0f);
    CHECK(gguf_get_f32(f, "t.i64", &x, err, sizeof err) == 0 && x == -9.0f);
    CHECK(gguf_get_f32(f, "t.u16", &x, err, sizeof err) == 0 && x == 60000.0f);
    CHECK(gguf_get_f32(f, "t.str", &x, err, sizeof err) == LMOE_ERR_FORMAT &&
          strstr(err, "should be a number"));
    CHECK(gguf_get_f32(f, "t.arr_f32", &x, err, sizeof err) == LMOE_ERR_FORMAT &&
          strstr(err, "array"));
    CHECK(gguf_get_str(f, "t.str", &s, err, sizeof err) == 0 && str_is(s, "a string"));
    CHECK(gguf_get_str(f, "general.architecture", &s, err, sizeof err) == 0 && str_is(s, "test"));
    CHECK(gguf_get_str(f, "t.u8", &s, err, sizeof err) == LMOE_ERR_FORMAT &&
          strstr(err, "should be a string") && strstr(err, "u8"));
    CHECK(gguf_get_u64(f, "t.missing", &u, err, sizeof err) == LMOE_ERR_FORMAT &&
          strstr(err, "missing metadata key 't.missing'"));
    CHECK(gguf_get_str(f, "t.missing", &s, err, sizeof err) == LMOE_ERR_FORMAT);
    CHECK(gguf_get_f32(f, "t.missing", &x, err, sizeof err) == LMOE_ERR_FORMAT);
    const struct gguf_kv *kv = gguf_find_kv(f, "t.i64");
    CHECK(kv && kv->type == GGUF_TYPE_INT64 && kv->v.i64 == -9);
    kv = gguf_find_kv(f, "t.i32");
    CHECK(kv && kv->v.i64 == -70000);
    CHECK(gguf_find_kv(f, "t") == NULL);

    /* arrays */
    kv = gguf_find_kv(f, "t.arr_i32");
    CHECK(kv && kv->type == GGUF_TYPE_ARRAY && kv->arr_type == GGUF_TYPE_INT32 && kv->arr_n == 3);
    if (kv) CHECK(gguf_arr_num(kv, 0) == 7 && gguf_arr_num(kv, 1) == -8 && gguf_arr_num(kv, 2) == 9);
    kv = gguf_find_kv(f, "t.arr_f32");
    CHECK(kv && kv->arr_n == 2);
    if (kv) CHECK(gguf_arr_num(kv, 0) == 1.5 && gguf_arr_num(kv, 1) == -2.0);
    kv = gguf_find_kv(f, "t.arr_u8");
    if (kv) CHECK(gguf_arr_num(kv, 2) == 255);
    kv = gguf_find_kv(f, "t.arr_str");
    CHECK(kv && kv->arr_type == GGUF_TYPE_STRING && kv->arr_n == 3);
    if (kv) {
        CHECK(str_is(gguf_arr_str(kv, 0), "hello"));
        CHECK(str_is(gguf_arr_str(kv, 1), ""));
        CHECK(str_is(gguf_arr_str(kv, 2), "w\xc3\xb6rld"));
    }
    kv = gguf_find_kv(f, "t.arr_empty");
    CHECK(kv && kv->arr_type == GGUF_TYPE_UINT64 && kv->arr_n == 0);
    kv = gguf_find_kv(f, "t.arr_nested");
    CHECK(kv && kv->arr_type == GGUF_TYPE_ARRAY && kv->arr_n == 3);
    kv = gguf_find_kv(f, "t.arr_nested_str");
    CHECK(kv && kv->arr_type == GGUF_TYPE_ARRAY && kv->arr_n == 2);
    CHECK(!strcmp(gguf_type_name(GGUF_TYPE_FLOAT64), "f64"));
    CHECK(!strcmp(gguf_type_name(99), "unknown"));

    /* tensors: shapes, types, sizes, and views at aligned offsets */
    static const struct {
        const char *name;
        int n_dims;
        int64_t ne[4];
        uint32_t type;
        uint64_t nbytes;
    } want[] = {
        {"a.f32", 1, {4, 1, 1, 1}, LMOE_DTYPE_F32, 16},
        {"b.f16", 2, {8, 3, 1, 1}, LMOE_DTYPE_F16, 48},
        {"c.q8_0", 3, {32, 2, 2, 1}, LMOE_DTYPE_Q8_0, 4 * 34},
        {"d.q4_K", 4, {256, 1, 1, 2}, LMOE_DTYPE_Q4_K, 2 * 144},
        {"e.bf16", 1, {5, 1, 1, 1}, LMOE_DTYPE_BF16, 10},
    };
    uint64_t prev_end = 0;
    for (int i = 0; i < 5; i++) {
        const struct gguf_tensor *t = gguf_find_tensor(f, want[i].name);
        CHECKF(t != NULL, "tensor %s", want[i].name);
        if (!t) continue;
        CHECK(t == &f->tensors[i]);
        CHECK(t->n_dims == want[i].n_dims && t->type == want[i].type);
        CHECK(!memcmp(t->ne, want[i].ne, sizeof t->ne));
        CHECKF(t->nbytes == want[i].nbytes, "%s: %" PRIu64, t->name, t->nbytes);
        CHECK(t->offset % align == 0 && t->offset >= prev_end);
        CHECK((const uint8_t *)t->data == buf + f->data_offset + t->offset);
        CHECK(((const uint8_t *)t->data)[0] == (uint8_t)i &&
              ((const uint8_t *)t->data)[1] == (uint8_t)(i + 7));
        prev_end = t->offset + t->nbytes;
    }
    CHECK(gguf_find_tensor(f, "a") == NULL);
    gguf_close(f);
    free(buf);

    /* every proper prefix is refused with one line; only the whole parses */
    int bad = 0;
    for (size_t n = 0; n < b.n; n++) {
        rc = parse_exact(&b, n, NULL, NULL, err, sizeof err);
        if (rc != LMOE_ERR_FORMAT || !one_line(err)) {
            if (bad++ < 3)
                fprintf(stderr, "FAIL prefix %zu of %zu: rc %d '%s'\n", n, b.n, rc, err);
        }
    }
    CHECKF(bad == 0, "%d prefixes of %zu bytes not refused", bad, b.n);
    free(b.p);
}

/* ---- hostile files -------------------------------------------------------- */

/* A header and one pair; the caller writes the value. */
static void one_kv(struct wbuf *b, const char *key, uint32_t type) {
    b->n = 0;
    w_header(b, 3, 0, 1);
    w_key(b, key, type);
}

/* A file with one tensor info as given, and enough data after it. */
static void one_tensor(struct wbuf *b, const char *name, uint32_t n_dims, const int64_t *ne,
                       uint32_t type, uint64_t offset, size_t data) {
    b->n = 0;
    w_header(b, 3, 1, 0);
    w_tinfo(b, name, n_dims, ne, type, offset);
    w_pad(b, 32);
    w_data(b, data, 0);
}

static void test_hostile(void) {
    struct wbuf b = {0};
    /* header */
    w_bytes(&b, "GGUG", 4), w_u32(&b, 3), w_u64(&b, 0), w_u64(&b, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "bad magic", "bad magic");
    b.n = 0, w_header(&b, 1, 0, 0);
    expect_refused(&b, LMOE_ERR_UNSUPPORTED, "version 1", "version 1");
    b.n = 0, w_header(&b, 4, 0, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "version 4", "version 4");
    b.n = 0, w_header(&b, 0x03000000, 0, 0); /* big-endian */
    expect_refused(&b, LMOE_ERR_FORMAT, "version", "big-endian");
    b.n = 0, w_header(&b, 3, 0, (uint64_t)1 << 62), w_data(&b, 100, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "cannot fit", "huge n_kv");
    b.n = 0, w_header(&b, 3, UINT64_MAX, 0), w_data(&b, 100, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "cannot fit", "huge n_tensors");
    b.n = 0, w_header(&b, 3, 0, 0);
    {
        char err[256];
        struct gguf_file *f = NULL;
        uint8_t *buf = NULL;
        CHECK(parse_exact(&b, b.n, &f, &buf, err, sizeof err) == 0); /* empty but valid */
        if (f) CHECK(f->n_kv == 0 && f->n_tensors == 0 && f->data_offset == b.n);
        gguf_close(f);
        free(buf);
    }

    /* metadata */
    b.n = 0, w_header(&b, 3, 0, 1), w_u64(&b, UINT64_MAX), w_data(&b, 40, 1);
    expect_refused(&b, LMOE_ERR_FORMAT, "truncated", "huge key length");
    b.n = 0, w_header(&b, 3, 0, 1), w_u64(&b, 0), w_u32(&b, 4), w_u32(&b, 1);
    expect_refused(&b, LMOE_ERR_FORMAT, "empty, too long or has control", "empty key");
    b.n = 0, w_header(&b, 3, 0, 1), w_str(&b, "a\nb"), w_u32(&b, 4), w_u32(&b, 1);
    expect_refused(&b, LMOE_ERR_FORMAT, "control characters", "newline in key");
    b.n = 0, w_header(&b, 3, 0, 1), w_u64(&b, 3), w_bytes(&b, "a\0b", 3), w_u32(&b, 4), w_u32(&b, 1);
    expect_refused(&b, LMOE_ERR_FORMAT, "control characters", "NUL in key");
    one_kv(&b, "k.str", GGUF_TYPE_STRING), w_u64(&b, (uint64_t)1 << 63), w_data(&b, 40, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "truncated file: k.str", "huge string length");
    one_kv(&b, "k.type", 13), w_u32(&b, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "'k.type' has unknown value type 13", "value type 13");
    one_kv(&b, "k.type", 0xffffffffu), w_u32(&b, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "unknown value type", "value type -1");
    one_kv(&b, "k.arr", GGUF_TYPE_ARRAY), w_u32(&b, GGUF_TYPE_UINT32), w_u64(&b, (uint64_t)1 << 62);
    w_data(&b, 64, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "'k.arr': array of 4611686018427387904 u32", "huge u32 array");
    one_kv(&b, "k.arr", GGUF_TYPE_ARRAY), w_u32(&b, GGUF_TYPE_STRING), w_u64(&b, UINT64_MAX / 2);
    w_data(&b, 64, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "strings cannot fit", "huge string array");
    one_kv(&b, "k.arr", GGUF_TYPE_ARRAY), w_u32(&b, GGUF_TYPE_STRING), w_u64(&b, 2);
    w_str(&b, "ok"), w_u64(&b, 1000), w_data(&b, 10, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "truncated file: array string", "long array element");
    one_kv(&b, "k.arr", GGUF_TYPE_ARRAY), w_u32(&b, GGUF_TYPE_ARRAY), w_u64(&b, UINT64_MAX);
    for (int i = 0; i < 5; i++) w_u32(&b, GGUF_TYPE_UINT8), w_u64(&b, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "truncated file: nested array type", "huge nested count");
    one_kv(&b, "k.arr", GGUF_TYPE_ARRAY), w_u32(&b, 77), w_u64(&b, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "'k.arr': unknown array element type 77", "array type 77");
    one_kv(&b, "k.arr", GGUF_TYPE_ARRAY), w_u32(&b, GGUF_TYPE_ARRAY), w_u64(&b, 1);
    w_u32(&b, 50), w_u64(&b, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "unknown array element type 50", "nested type 50, empty");
    one_kv(&b, "k.arr", GGUF_TYPE_ARRAY), w_u32(&b, GGUF_TYPE_ARRAY), w_u64(&b, 1);
    w_u32(&b, 50), w_u64(&b, 3), w_data(&b, 30, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "unknown array element type 50", "nested type 50");
    for (int depth = 1; depth <= 6; depth++) {
        /* depth levels of single-element arrays around one u8 */
        one_kv(&b, "k.deep", GGUF_TYPE_ARRAY);
        for (int i = 1; i < depth; i++) w_u32(&b, GGUF_TYPE_ARRAY), w_u64(&b, 1);
        w_u32(&b, GGUF_TYPE_UINT8), w_u64(&b, 1), w_u8(&b, 42);
        char err[256];
        int rc = parse_exact(&b, b.n, NULL, NULL, err, sizeof err);
        if (depth <= 4)
            CHECKF(rc == 0, "depth %d: %s", depth, err);
        else
            CHECKF(rc == LMOE_ERR_FORMAT && strstr(err, "'k.deep': arrays nested deeper than 4"),
                   "depth %d: %d %s", depth, rc, err);
    }
    one_kv(&b, "general.alignment", GGUF_TYPE_UINT32), w_u32(&b, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "general.alignment", "alignment 0");
    one_kv(&b, "general.alignment", GGUF_TYPE_UINT32), w_u32(&b, 48);
    expect_refused(&b, LMOE_ERR_FORMAT, "general.alignment must be a power of two", "alignment 48");
    one_kv(&b, "general.alignment", GGUF_TYPE_UINT32), w_u32(&b, 1u << 20);
    expect_refused(&b, LMOE_ERR_FORMAT, "general.alignment", "alignment 2^20");
    one_kv(&b, "general.alignment", GGUF_TYPE_UINT64), w_u64(&b, 32);
    expect_refused(&b, LMOE_ERR_FORMAT, "general.alignment", "alignment as u64");
    one_kv(&b, "general.alignment", GGUF_TYPE_STRING), w_str(&b, "32");
    expect_refused(&b, LMOE_ERR_FORMAT, "general.alignment", "alignment as string");

    /* tensor infos */
    const int64_t ne4[4] = {4, 1, 1, 1};
    one_tensor(&b, "t", 1, ne4, LMOE_DTYPE_F32, 0, 16);
    {
        char err[256];
        CHECKF(parse_exact(&b, b.n, NULL, NULL, err, sizeof err) == 0, "%s", err);
    }
    one_tensor(&b, "t", 0, ne4, LMOE_DTYPE_F32, 0, 16);
    expect_refused(&b, LMOE_ERR_FORMAT, "tensor 't' has 0 dimensions", "n_dims 0");
    one_tensor(&b, "t", 5, (const int64_t[5]){4, 1, 1, 1, 1}, LMOE_DTYPE_F32, 0, 16);
    expect_refused(&b, LMOE_ERR_FORMAT, "tensor 't' has 5 dimensions", "n_dims 5");
    one_tensor(&b, "t", 2, (const int64_t[2]){4, 0}, LMOE_DTYPE_F32, 0, 16);
    expect_refused(&b, LMOE_ERR_FORMAT, "'t' has an invalid shape (dimension 1 is 0)", "zero dim");
    one_tensor(&b, "t", 1, (const int64_t[1]){(int64_t)1 << 41}, LMOE_DTYPE_F32, 0, 16);
    expect_refused(&b, LMOE_ERR_FORMAT, "invalid shape", "huge dim");
    one_tensor(&b, "t", 1, (const int64_t[1]){-1}, LMOE_DTYPE_F32, 0, 16);
    expect_refused(&b, LMOE_ERR_FORMAT, "invalid shape", "dim 2^64-1");
    one_tensor(&b, "t", 4, (const int64_t[4]){1 << 20, 1 << 20, 1 << 20, 1 << 20},
               LMOE_DTYPE_F32, 0, 16);
    expect_refused(&b, LMOE_ERR_FORMAT, "invalid shape (dimension 2", "product overflow");
    one_tensor(&b, "t", 1, ne4, 99, 0, 16);
    expect_refused(&b, LMOE_ERR_UNSUPPORTED, "'t' has tensor type 99", "type 99");
    one_tensor(&b, "t", 1, ne4, 4, 0, 16); /* Q4_2, long gone from ggml */
    expect_refused(&b, LMOE_ERR_UNSUPPORTED, "tensor type 4", "type 4");
    one_tensor(&b, "t", 1, ne4, 0x80000000u, 0, 16);
    expect_refused(&b, LMOE_ERR_UNSUPPORTED, "tensor type 2147483648", "type 2^31");
    one_tensor(&b, "t", 1, (const int64_t[1]){33}, LMOE_DTYPE_Q8_0, 0, 64);
    expect_refused(&b, LMOE_ERR_FORMAT, "row length 33 is not a multiple of the q8_0 block size 32",
                   "row 33 of q8_0");
    one_tensor(&b, "t", 2, (const int64_t[2]){128, 2}, LMOE_DTYPE_Q4_K, 0, 512);
    expect_refused(&b, LMOE_ERR_FORMAT, "block size 256", "row 128 of q4_K");
    one_tensor(&b, "t", 1, ne4, LMOE_DTYPE_F32, 4, 32);
    expect_refused(&b, LMOE_ERR_FORMAT, "'t': data offset 4 is not a multiple of the alignment 32",
                   "misaligned");
    one_tensor(&b, "t", 1, ne4, LMOE_DTYPE_F32, (uint64_t)1 << 40, 32);
    expect_refused(&b, LMOE_ERR_FORMAT, "tensor 't': data ends at byte", "offset past end");
    one_tensor(&b, "t", 1, ne4, LMOE_DTYPE_F32, UINT64_MAX - 31, 32);
    expect_refused(&b, LMOE_ERR_FORMAT, "'t': data ends", "offset near 2^64");
    one_tensor(&b, "t", 1, ne4, LMOE_DTYPE_F32, 0, 15);
    expect_refused(&b, LMOE_ERR_FORMAT, "'t': data ends at byte", "data one byte short");
    one_tensor(&b, "t", 1, ne4, LMOE_DTYPE_F32, 0, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "data ends", "no data section");
    one_tensor(&b, "", 1, ne4, LMOE_DTYPE_F32, 0, 16);
    expect_refused(&b, LMOE_ERR_FORMAT, "tensor name", "empty tensor name");
    one_tensor(&b, "a\x1b[2Jb", 1, ne4, LMOE_DTYPE_F32, 0, 16);
    expect_refused(&b, LMOE_ERR_FORMAT, "control characters", "escape in tensor name");
    /* data section starts past the end: the infos end exactly at EOF */
    b.n = 0, w_header(&b, 3, 1, 0), w_tinfo(&b, "t", 1, ne4, LMOE_DTYPE_F32, 0);
    if (b.n % 32 == 0) w_u8(&b, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "data section starts", "no padding");

    /* two tensors: overlap and duplicate names, in either order */
    const int64_t ne8[1] = {8};
    b.n = 0, w_header(&b, 3, 2, 0);
    w_tinfo(&b, "x", 1, ne8, LMOE_DTYPE_F32, 0), w_tinfo(&b, "y", 1, ne4, LMOE_DTYPE_F32, 0);
    w_pad(&b, 32), w_data(&b, 64, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "tensors 'x' and 'y' overlap", "same offset");
    b.n = 0, w_header(&b, 3, 2, 0);
    w_tinfo(&b, "x", 1, (const int64_t[1]){16}, LMOE_DTYPE_F32, 32);
    w_tinfo(&b, "y", 1, (const int64_t[1]){9}, LMOE_DTYPE_F32, 0);
    w_pad(&b, 32), w_data(&b, 128, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "tensors 'y' and 'x' overlap", "y runs into x");
    b.n = 0, w_header(&b, 3, 2, 0);
    w_tinfo(&b, "x", 1, ne8, LMOE_DTYPE_F32, 32), w_tinfo(&b, "x", 1, ne8, LMOE_DTYPE_F32, 0);
    w_pad(&b, 32), w_data(&b, 64, 0);
    expect_refused(&b, LMOE_ERR_FORMAT, "tensor 'x' appears twice", "duplicate name");

    /* many tensors: the duplicate check is always on */
    for (int dup = 0; dup < 2; dup++) {
        enum { N = 5000 };
        b.n = 0, w_header(&b, 3, N, 0);
        char name[32];
        for (int i = 0; i < N; i++) {
            snprintf(name, sizeof name, "t.%d", (i * 7919) % N);
            if (dup && i == N - 1) snprintf(name, sizeof name, "t.%d", 1234);
            w_tinfo(&b, name, 1, ne4, LMOE_DTYPE_F32, (uint64_t)32 * (uint64_t)(N - 1 - i));
        }
        w_pad(&b, 32), w_data(&b, (size_t)N * 32, 0);
        if (dup) {
            expect_refused(&b, LMOE_ERR_FORMAT, "tensor 't.1234' appears twice", "5000, one dup");
        } else {
            char err[256];
            struct gguf_file *f = NULL;
            uint8_t *buf = NULL;
            CHECKF(parse_exact(&b, b.n, &f, &buf, err, sizeof err) == 0, "%s", err);
            if (f) CHECK(gguf_find_tensor(f, "t.4999") && gguf_find_tensor(f, "t.0"));
            gguf_close(f);
            free(buf);
        }
    }
    free(b.p);
}

/* ---- models through lmoe_engine_open ------------------------------------- */

/* A tiny llama: 1 layer, n_embd 4, 2 heads, n_ff 8, vocab 8, all f32.
 * skip_key / skip_tensor leave one out; bad_shape gives ffn_up a wrong
 * row count; arch names the architecture. */
static void build_llama(struct wbuf *b, const char *arch, const char *skip_key,
                        const char *skip_tensor, int bad_shape) {
    struct ttensor ts[] = {
        {"token_embd.weight", 2, {4, 8}, LMOE_DTYPE_F32},
        {"output_norm.weight", 1, {4}, LMOE_DTYPE_F32},
        {"blk.0.attn_norm.weight", 1, {4}, LMOE_DTYPE_F32},
        {"blk.0.attn_q.weight", 2, {4, 4}, LMOE_DTYPE_F32},
        {"blk.0.attn_k.weight", 2, {4, 4}, LMOE_DTYPE_F32},
        {"blk.0.attn_v.weight", 2, {4, 4}, LMOE_DTYPE_F32},
        {"blk.0.attn_output.weight", 2, {4, 4}, LMOE_DTYPE_F32},
        {"blk.0.ffn_norm.weight", 1, {4}, LMOE_DTYPE_F32},
        {"blk.0.ffn_gate.weight", 2, {4, 8}, LMOE_DTYPE_F32},
        {"blk.0.ffn_up.weight", 2, {4, bad_shape ? 9 : 8}, LMOE_DTYPE_F32},
        {"blk.0.ffn_down.weight", 2, {8, 4}, LMOE_DTYPE_F32},
    };
    struct ttensor keep[sizeof ts / sizeof ts[0]];
    int n = 0;
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        if (!skip_tensor || strcmp(ts[i].name, skip_tensor)) keep[n++] = ts[i];
    static const char *keys[] = {"block_count", "embedding_length", "attention.head_count",
                                 "context_length", "feed_forward_length"};
    static const uint32_t vals[] = {1, 4, 2, 16, 8};
    int n_kv = 2;
    for (int i = 0; i < 5; i++) n_kv += !skip_key || strcmp(keys[i], skip_key);
    b->n = 0;
    w_header(b, 3, (uint64_t)n, (uint64_t)n_kv);
    w_kv_str(b, "general.architecture", arch);
    w_kv_str(b, "general.name", "tiny");
    char key[64];
    for (int i = 0; i < 5; i++) {
        if (skip_key && !strcmp(keys[i], skip_key)) continue;
        snprintf(key, sizeof key, "%s.%s", arch, keys[i]);
        w_kv_u32(b, key, vals[i]);
    }
    write_tensors(b, keep, n, 32);
}

/* A tiny deepseek2: MLA without q_lora, one dense and one MoE layer with a
 * shared expert. Used as a fuzz seed for the binder's MLA path. */
static void build_deepseek2(struct wbuf *b) {
    enum { E = 8, V = 8, R = 4, ROPE = 2, QK = 4, VH = 4, H = 2, FF = 8, FFE = 4, X = 2 };
    const struct ttensor ts[] = {
        {"token_embd.weight", 2, {E, V}, LMOE_DTYPE_F32},
        {"output_norm.weight", 1, {E}, LMOE_DTYPE_F32},
        {"blk.0.attn_norm.weight", 1, {E}, LMOE_DTYPE_F32},
        {"blk.0.ffn_norm.weight", 1, {E}, LMOE_DTYPE_F32},
        {"blk.0.attn_kv_a_mqa.weight", 2, {E, R + ROPE}, LMOE_DTYPE_F32},
        {"blk.0.attn_kv_a_norm.weight", 1, {R}, LMOE_DTYPE_F32},
        {"blk.0.attn_output.weight", 2, {H * VH, E}, LMOE_DTYPE_F32},
        {"blk.0.attn_q.weight", 2, {E, H * QK}, LMOE_DTYPE_F32},
        {"blk.0.attn_kv_b.weight", 2, {R, H * (QK - ROPE + VH)}, LMOE_DTYPE_F32},
        {"blk.0.ffn_gate.weight", 2, {E, FF}, LMOE_DTYPE_F32},
        {"blk.0.ffn_up.weight", 2, {E, FF}, LMOE_DTYPE_F32},
        {"blk.0.ffn_down.weight", 2, {FF, E}, LMOE_DTYPE_F32},
        {"blk.1.attn_norm.weight", 1, {E}, LMOE_DTYPE_F32},
        {"blk.1.ffn_norm.weight", 1, {E}, LMOE_DTYPE_F32},
        {"blk.1.attn_kv_a_mqa.weight", 2, {E, R + ROPE}, LMOE_DTYPE_F32},
        {"blk.1.attn_kv_a_norm.weight", 1, {R}, LMOE_DTYPE_F32},
        {"blk.1.attn_output.weight", 2, {H * VH, E}, LMOE_DTYPE_F32},
        {"blk.1.attn_q.weight", 2, {E, H * QK}, LMOE_DTYPE_F32},
        {"blk.1.attn_k_b.weight", 3, {QK - ROPE, R, H}, LMOE_DTYPE_F32},
        {"blk.1.attn_v_b.weight", 3, {R, VH, H}, LMOE_DTYPE_F32},
        {"blk.1.ffn_gate_inp.weight", 2, {E, X}, LMOE_DTYPE_F32},
        {"blk.1.exp_probs_b.bias", 1, {X}, LMOE_DTYPE_F32},
        {"blk.1.ffn_gate_exps.weight", 3, {E, FFE, X}, LMOE_DTYPE_F32},
        {"blk.1.ffn_up_exps.weight", 3, {E, FFE, X}, LMOE_DTYPE_F32},
        {"blk.1.ffn_down_exps.weight", 3, {FFE, E, X}, LMOE_DTYPE_F32},
        {"blk.1.ffn_gate_shexp.weight", 2, {E, FFE}, LMOE_DTYPE_F32},
        {"blk.1.ffn_up_shexp.weight", 2, {E, FFE}, LMOE_DTYPE_F32},
        {"blk.1.ffn_down_shexp.weight", 2, {FFE, E}, LMOE_DTYPE_F32},
    };
    static const struct {
        const char *key;
        uint32_t v;
    } kv[] = {
        {"deepseek2.block_count", 2},
        {"deepseek2.embedding_length", E},
        {"deepseek2.attention.head_count", H},
        {"deepseek2.context_length", 32},
        {"deepseek2.attention.kv_lora_rank", R},
        {"deepseek2.rope.dimension_count", ROPE},
        {"deepseek2.attention.key_length", QK},
        {"deepseek2.attention.value_length", VH},
        {"deepseek2.feed_forward_length", FF},
        {"deepseek2.leading_dense_block_count", 1},
        {"deepseek2.expert_count", X},
        {"deepseek2.expert_used_count", 1},
        {"deepseek2.expert_shared_count", 1},
        {"deepseek2.expert_feed_forward_length", FFE},
        {"deepseek2.expert_gating_func", 2},
    };
    int n_kv = (int)(sizeof kv / sizeof kv[0]);
    b->n = 0;
    w_header(b, 3, sizeof ts / sizeof ts[0], (uint64_t)n_kv + 4);
    w_kv_str(b, "general.architecture", "deepseek2");
    for (int i = 0; i < n_kv; i++) w_kv_u32(b, kv[i].key, kv[i].v);
    w_kv_f32(b, "deepseek2.expert_weights_scale", 2.5f);
    w_key(b, "deepseek2.expert_weights_norm", GGUF_TYPE_BOOL), w_u8(b, 1);
    w_kv_str(b, "deepseek2.rope.scaling.type", "yarn");
    write_tensors(b, ts, (int)(sizeof ts / sizeof ts[0]), 32);
}

/* A vocabulary-only file, as llama.cpp's ggml-vocab-*.gguf: no tensors. */
static void build_vocab(struct wbuf *b) {
    static const char *toks[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81the", "a", "b", "<0x0A>"};
    int n = (int)(sizeof toks / sizeof toks[0]);
    b->n = 0;
    w_header(b, 3, 0, 6);
    w_kv_str(b, "general.architecture", "llama");
    w_kv_str(b, "tokenizer.ggml.model", "llama");
    w_key(b, "tokenizer.ggml.tokens", GGUF_TYPE_ARRAY), w_u32(b, GGUF_TYPE_STRING), w_u64(b, (uint64_t)n);
    for (int i = 0; i < n; i++) w_str(b, toks[i]);
    w_key(b, "tokenizer.ggml.scores", GGUF_TYPE_ARRAY), w_u32(b, GGUF_TYPE_FLOAT32), w_u64(b, (uint64_t)n);
    for (int i = 0; i < n; i++) w_f32(b, -(float)i);
    w_key(b, "tokenizer.ggml.token_type", GGUF_TYPE_ARRAY), w_u32(b, GGUF_TYPE_INT32), w_u64(b, (uint64_t)n);
    for (int i = 0; i < n; i++) w_u32(b, i < 3 ? 3 : (i == 6 ? 6 : 1));
    w_key(b, "tokenizer.ggml.merges", GGUF_TYPE_ARRAY), w_u32(b, GGUF_TYPE_STRING), w_u64(b, 2);
    w_str(b, "a b"), w_str(b, "\xe2\x96\x81 t");
}

static int write_file(const char *path, const struct wbuf *b) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    size_t w = fwrite(b->p, 1, b->n, fp);
    return fclose(fp) == 0 && w == b->n ? 0 : -1;
}

/* Writes b to a temp file and opens it as a model. */
static int open_model(const struct wbuf *b, char *err, size_t errlen) {
    char path[] = "/tmp/lmoe_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        snprintf(err, errlen, "mkstemp failed");
        return LMOE_ERR_IO;
    }
    close(fd);
    int rc = write_file(path, b);
    lmoe_engine *e = NULL;
    struct lmoe_engine_options opt = {.n_threads = 1};
    if (!rc) rc = lmoe_engine_open(&e, path, &opt, err, errlen);
    lmoe_engine_close(e);
    unlink(path);
    return rc;
}

static void expect_model_error(const struct wbuf *b, int code, const char *w1, const char *w2,
                               const char *what) {
    char err[512] = "";
    int rc = open_model(b, err, sizeof err);
    CHECKF(rc == code && strstr(err, w1) && (!w2 || strstr(err, w2)) && one_line(err),
           "%s: rc %d, '%s'", what, rc, err);
}

static void test_models(void) {
    struct wbuf b = {0};
    char err[512] = "";
    build_llama(&b, "llama", NULL, NULL, 0);
    CHECKF(open_model(&b, err, sizeof err) == 0, "tiny llama: %s", err);
    build_deepseek2(&b);
    CHECKF(open_model(&b, err, sizeof err) == 0, "tiny deepseek2: %s", err);
    build_llama(&b, "llama", "block_count", NULL, 0);
    expect_model_error(&b, LMOE_ERR_FORMAT, "missing metadata key 'llama.block_count'", NULL,
                       "no block_count");
    build_llama(&b, "llama", "embedding_length", NULL, 0);
    expect_model_error(&b, LMOE_ERR_FORMAT, "'llama.embedding_length'", NULL, "no n_embd");
    build_llama(&b, "llama", NULL, "blk.0.attn_k.weight", 0);
    expect_model_error(&b, LMOE_ERR_FORMAT, "missing tensor 'blk.0.attn_k.weight'", NULL,
                       "no attn_k");
    build_llama(&b, "llama", NULL, "token_embd.weight", 0);
    expect_model_error(&b, LMOE_ERR_FORMAT, "missing tensor 'token_embd.weight'", NULL,
                       "no token_embd");
    build_llama(&b, "llama", NULL, NULL, 1);
    expect_model_error(&b, LMOE_ERR_FORMAT, "tensor 'blk.0.ffn_up.weight' has shape [4, 9, 1, 1]",
                       "expected [4, 8, 1]", "wrong shape");
    /* a huge block_count must not size an allocation */
    build_llama(&b, "llama", NULL, NULL, 0);
    uint8_t *at = memmem(b.p, b.n, "llama.block_count", 17);
    CHECK(at != NULL);
    if (at) {
        uint32_t huge = 1u << 30;
        memcpy(at + 17 + 4, &huge, 4);
        expect_model_error(&b, LMOE_ERR_FORMAT, "llama.block_count is 1073741824", "11 tensors",
                           "huge block_count");
    }
    build_llama(&b, "gpt2", NULL, NULL, 0);
    expect_model_error(&b, LMOE_ERR_UNSUPPORTED, "architecture 'gpt2' is not supported", NULL,
                       "gpt2");
    /* a control byte in the architecture does not break the line */
    build_llama(&b, "gpt2x", NULL, NULL, 0);
    at = memmem(b.p, b.n, "gpt2x", 5); /* the value, before any key uses it */
    if (at) at[2] = '\n';
    expect_model_error(&b, LMOE_ERR_UNSUPPORTED, "architecture 'gp' is not supported", NULL,
                       "newline in architecture");
    /* a reader error comes through the engine with the file name */
    build_llama(&b, "llama", NULL, NULL, 0);
    b.n -= 4;
    expect_model_error(&b, LMOE_ERR_FORMAT, "/tmp/lmoe_test_gguf_", "data ends", "truncated model");
    free(b.p);
}

/* ---- real files and the fuzz corpus --------------------------------------- */

/* Parses a file as the fuzz target does; returns gguf_parse's code. */
static int parse_bytes(const void *data, size_t n, char *err, size_t errlen) {
    uint8_t *c = malloc(n ? n : 1);
    if (n) memcpy(c, data, n);
    struct gguf_file *f = NULL;
    int rc = gguf_parse(&f, c, n, err, errlen);
    if (!rc) {
        struct lmoe_model m;
        if (lmoe_model_load(&m, f, err, errlen) == 0) lmoe_model_free(&m);
        for (uint64_t i = 0; i < f->n_kv; i++) {
            const struct gguf_kv *kv = &f->kv[i];
            if (kv->type == GGUF_TYPE_ARRAY && kv->arr_type == GGUF_TYPE_STRING)
                for (uint64_t j = 0; j < kv->arr_n; j++) (void)gguf_arr_str(kv, j);
        }
    }
    gguf_close(f);
    free(c);
    return rc;
}

static void test_real_files(void) {
    static const char *files[] = {
        "models/stories260K.gguf",
        "models/llama-2-tiny-random.gguf",
        "tokenizers/llama.cpp/ggml-vocab-llama-spm.gguf",
        "tokenizers/llama.cpp/ggml-vocab-deepseek-llm.gguf",
        "tokenizers/llama.cpp/ggml-vocab-deepseek-coder.gguf",
    };
    char path[512], err[512];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", LMOE_SHARED_DIR, files[i]);
        if (access(path, R_OK) != 0) {
            fprintf(stderr, "gguf: skipping %s (not present)\n", path);
            continue;
        }
        struct gguf_file *f = NULL;
        int rc = gguf_open(&f, path, err, sizeof err);
        CHECKF(rc == 0, "%s: %s", path, err);
        if (rc) continue;
        CHECK(f->version >= 2 && f->version <= 3);
        const struct gguf_kv *tok = gguf_find_kv(f, "tokenizer.ggml.tokens");
        CHECKF(tok && tok->arr_type == GGUF_TYPE_STRING && tok->arr_n > 0, "%s: tokens", path);
        if (tok && tok->arr_n) {
            struct gguf_str last = gguf_arr_str(tok, tok->arr_n - 1);
            CHECK(last.ptr + last.len <= (const char *)f->base + f->size);
        }
        if (strstr(files[i], "models/")) {
            CHECKF(f->n_tensors > 0, "%s", path);
            lmoe_engine *e = NULL;
            struct lmoe_engine_options opt = {.n_threads = 1};
            rc = lmoe_engine_open(&e, path, &opt, err, sizeof err);
            CHECKF(rc == 0, "%s: %s", path, err);
            lmoe_engine_close(e);
        }
        gguf_close(f);
    }
    /* not a regular file, absent, empty */
    struct gguf_file *f = NULL;
    CHECK(gguf_open(&f, "/tmp", err, sizeof err) == LMOE_ERR_IO && !f);
    CHECK(gguf_open(&f, "/nonexistent/x.gguf", err, sizeof err) == LMOE_ERR_IO &&
          strstr(err, "/nonexistent/x.gguf"));
    char empty[] = "/tmp/lmoe_test_gguf_XXXXXX";
    int fd = mkstemp(empty);
    if (fd >= 0) {
        close(fd);
        CHECK(gguf_open(&f, empty, err, sizeof err) == LMOE_ERR_FORMAT && strstr(err, "empty"));
        unlink(empty);
    }
}

/* Replays every file of a corpus folder; a missing folder is no failure. */
static void replay_dir(const char *sub, int *count) {
    char dir[512], path[1024], err[512];
    snprintf(dir, sizeof dir, "%s/fuzz/%s", LMOE_TEST_DIR, sub);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        size_t n = 0;
        void *data = test_read_file(path, &n);
        if (!data) continue;
        err[0] = 0;
        int rc = parse_bytes(data, n, err, sizeof err);
        CHECKF(rc == 0 || (rc < 0 && one_line(err)), "%s: rc %d '%s'", path, rc, err);
        free(data);
        (*count)++;
    }
    closedir(d);
}

/* LMOE_WRITE_SEEDS=dir: writes the seed corpus of tests/fuzz/fuzz_gguf.c. */
static void write_seeds(const char *dir) {
    struct wbuf b = {0};
    char path[512];
    build_rich(&b, 3, 64);
    snprintf(path, sizeof path, "%s/rich_v3_align64.gguf", dir), write_file(path, &b);
    b.n = 0, build_rich(&b, 2, 32);
    snprintf(path, sizeof path, "%s/rich_v2.gguf", dir), write_file(path, &b);
    build_llama(&b, "llama", NULL, NULL, 0);
    snprintf(path, sizeof path, "%s/llama_tiny.gguf", dir), write_file(path, &b);
    build_deepseek2(&b);
    snprintf(path, sizeof path, "%s/deepseek2_tiny.gguf", dir), write_file(path, &b);
    build_vocab(&b);
    snprintf(path, sizeof path, "%s/vocab.gguf", dir), write_file(path, &b);
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", LMOE_SHARED_DIR);
    size_t n = 0;
    void *data = test_read_file(path, &n);
    if (data) {
        b.n = 0, w_bytes(&b, data, n < 8000 ? n : 8000);
        snprintf(path, sizeof path, "%s/stories260K_head.gguf", dir), write_file(path, &b);
        free(data);
    }
    free(b.p);
    fprintf(stderr, "gguf: wrote seeds to %s\n", dir);
}

void test_gguf(void) {
    if (getenv("LMOE_WRITE_SEEDS")) write_seeds(getenv("LMOE_WRITE_SEEDS"));
    test_rich(3, 32);
    test_rich(3, 64);
    test_rich(2, 32);
    test_rich(3, 8);
    test_hostile();
    test_models();
    {
        struct wbuf b = {0};
        char err[512];
        build_vocab(&b);
        CHECKF(parse_bytes(b.p, b.n, err, sizeof err) == 0, "vocab: %s", err);
        free(b.p);
    }
    test_real_files();
    int n_seeds = 0, n_crashes = 0;
    replay_dir("gguf_seeds", &n_seeds);
    replay_dir("gguf_crashes", &n_crashes);
    CHECKF(n_seeds > 0, "no seeds in %s/fuzz/gguf_seeds", LMOE_TEST_DIR);
}
