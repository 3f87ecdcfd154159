/*
 * test_writer.c - the GGUF writer, checked through the reader.
 *
 * Every file written here is read back with gguf_open and compared field by
 * field: each metadata value type, arrays of numbers, bools and strings,
 * tensors from memory and streamed through a callback in small chunks,
 * general.alignment, and pairs copied verbatim from real files (which must
 * then come out byte for byte as they went in). Failure paths: bad keys,
 * shapes and types, a file that cannot be created, a failing fill; none
 * leaves a file under the final name.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format/gguf.h"
#include "format/gguf_write.h"
#include "leanmoe.h"
#include "quant/quant.h"
#include "test.h"

#ifndef LMOE_BUILD_DIR
#define LMOE_BUILD_DIR "build"
#endif

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/test_writer_%ld_%s", LMOE_BUILD_DIR, (long)getpid(), name);
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static uint64_t file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* No temporary left beside path (path.tmp.PID). */
static int no_temp_left(const char *path) {
    char t[600];
    snprintf(t, sizeof t, "%s.tmp.%ld", path, (long)getpid());
    return !file_exists(t);
}

/* Deterministic bytes of tensor i at offset: what the fill callback makes,
 * so a reader can check streamed data without keeping it. */
static uint8_t pattern_byte(int64_t i, uint64_t off) {
    uint64_t x = (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull + off * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return (uint8_t)(x * 0x94D049BB133111EBull >> 56);
}

struct fill_log {
    int calls, misaligned, out_of_order;
    uint64_t next[16];   /* expected next offset per tensor */
    size_t block[16];    /* bytes per block per tensor */
    int fail_at_tensor;  /* -1: never fail */
};

static int fill_pattern(void *ctx, int64_t i, void *dst, uint64_t off, size_t n) {
    struct fill_log *log = ctx;
    log->calls++;
    if (i == log->fail_at_tensor) return LMOE_ERR_IO;
    if (i < 16) {
        if (off != log->next[i]) log->out_of_order++;
        log->next[i] = off + n;
        if (log->block[i] && (off % log->block[i] || n % log->block[i])) log->misaligned++;
    }
    uint8_t *d = dst;
    for (size_t k = 0; k < n; k++) d[k] = pattern_byte(i, off + k);
    return 0;
}

static void test_all_value_types(void) {
    char path[512];
    tmp_path(path, sizeof path, "values.gguf");
    struct gguf_writer *w;
    CHECK(gguf_writer_open(&w) == 0);
    gguf_writer_set_str(w, "general.architecture", "test");
    gguf_writer_set_u8(w, "v.u8", 250);
    gguf_writer_set_i8(w, "v.i8", -128);
    gguf_writer_set_u16(w, "v.u16", 65535);
    gguf_writer_set_i16(w, "v.i16", -32768);
    gguf_writer_set_u32(w, "v.u32", 4000000000u);
    gguf_writer_set_i32(w, "v.i32", -2000000000);
    gguf_writer_set_u64(w, "v.u64", 18000000000000000000ull);
    gguf_writer_set_i64(w, "v.i64", -9000000000000000000ll);
    gguf_writer_set_f32(w, "v.f32", 0.1f);
    gguf_writer_set_f64(w, "v.f64", -1e300);
    gguf_writer_set_bool(w, "v.true", 7);
    gguf_writer_set_bool(w, "v.false", 0);
    gguf_writer_set_str(w, "v.str", "w\xc3\xb6rld");
    gguf_writer_set_str(w, "v.empty", "");
    gguf_writer_set_str_n(w, "v.nul", "a\0b", 3);
    /* Set twice: the value changes, the position stays. */
    gguf_writer_set_u32(w, "v.replaced", 1);
    gguf_writer_set_f32(w, "v.replaced", 2.5f);
    gguf_writer_set_u32(w, "v.deleted", 1);
    CHECK(gguf_writer_del_kv(w, "v.deleted") == 1);
    CHECK(gguf_writer_del_kv(w, "v.deleted") == 0);

    uint8_t a_u8[] = {0, 1, 255};
    int8_t a_i8[] = {-1, 2};
    uint16_t a_u16[] = {1, 65535};
    int16_t a_i16[] = {-5, 5};
    uint32_t a_u32[] = {1, 2, 3, 4000000000u};
    int32_t a_i32[] = {-7, 8};
    uint64_t a_u64[] = {1ull << 60};
    int64_t a_i64[] = {-(1ll << 60), 3};
    float a_f32[] = {1.5f, -0.25f, 3e38f};
    double a_f64[] = {1e-300, 2};
    uint8_t a_bool[] = {1, 0, 1};
    const char *a_str[] = {"<unk>", "", "\xe2\x96\x81the", "<0x0A>"};
    gguf_writer_set_arr_num(w, "a.u8", GGUF_TYPE_UINT8, a_u8, 3);
    gguf_writer_set_arr_num(w, "a.i8", GGUF_TYPE_INT8, a_i8, 2);
    gguf_writer_set_arr_num(w, "a.u16", GGUF_TYPE_UINT16, a_u16, 2);
    gguf_writer_set_arr_num(w, "a.i16", GGUF_TYPE_INT16, a_i16, 2);
    gguf_writer_set_arr_num(w, "a.u32", GGUF_TYPE_UINT32, a_u32, 4);
    gguf_writer_set_arr_num(w, "a.i32", GGUF_TYPE_INT32, a_i32, 2);
    gguf_writer_set_arr_num(w, "a.u64", GGUF_TYPE_UINT64, a_u64, 1);
    gguf_writer_set_arr_num(w, "a.i64", GGUF_TYPE_INT64, a_i64, 2);
    gguf_writer_set_arr_num(w, "a.f32", GGUF_TYPE_FLOAT32, a_f32, 3);
    gguf_writer_set_arr_num(w, "a.f64", GGUF_TYPE_FLOAT64, a_f64, 2);
    gguf_writer_set_arr_num(w, "a.bool", GGUF_TYPE_BOOL, a_bool, 3);
    gguf_writer_set_arr_num(w, "a.empty", GGUF_TYPE_INT32, NULL, 0);
    gguf_writer_set_arr_str(w, "a.str", a_str, 4);
    gguf_writer_set_arr_str(w, "a.str_empty", NULL, 0);
    CHECK(gguf_writer_status(w) == 0);
    CHECK(gguf_writer_n_kv(w) == 31);
    uint64_t predicted = gguf_writer_file_size(w);
    CHECK(gguf_writer_write(w, path, NULL, NULL) == 0);
    CHECK(file_size(path) == predicted);
    CHECK(no_temp_left(path));
    gguf_writer_close(w);

    struct gguf_file *f;
    char err[256];
    int rc = gguf_open(&f, path, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    if (rc) return;
    CHECK(f->version == 3 && f->n_kv == 31 && f->n_tensors == 0);
    const struct gguf_kv *kv;
#define KV(key, t) ((kv = gguf_find_kv(f, key)) != NULL && kv->type == (t))
    CHECK(KV("v.u8", GGUF_TYPE_UINT8) && kv->v.u64 == 250);
    CHECK(KV("v.i8", GGUF_TYPE_INT8) && kv->v.i64 == -128);
    CHECK(KV("v.u16", GGUF_TYPE_UINT16) && kv->v.u64 == 65535);
    CHECK(KV("v.i16", GGUF_TYPE_INT16) && kv->v.i64 == -32768);
    CHECK(KV("v.u32", GGUF_TYPE_UINT32) && kv->v.u64 == 4000000000u);
    CHECK(KV("v.i32", GGUF_TYPE_INT32) && kv->v.i64 == -2000000000);
    CHECK(KV("v.u64", GGUF_TYPE_UINT64) && kv->v.u64 == 18000000000000000000ull);
    CHECK(KV("v.i64", GGUF_TYPE_INT64) && kv->v.i64 == -9000000000000000000ll);
    CHECK(KV("v.f32", GGUF_TYPE_FLOAT32) && (float)kv->v.f64 == 0.1f);
    CHECK(KV("v.f64", GGUF_TYPE_FLOAT64) && kv->v.f64 == -1e300);
    CHECK(KV("v.true", GGUF_TYPE_BOOL) && kv->v.u64 == 1);
    CHECK(KV("v.false", GGUF_TYPE_BOOL) && kv->v.u64 == 0);
    CHECK(KV("v.str", GGUF_TYPE_STRING) && kv->v.str.len == 6 && !memcmp(kv->v.str.ptr, "w\xc3\xb6rld", 6));
    CHECK(KV("v.empty", GGUF_TYPE_STRING) && kv->v.str.len == 0);
    CHECK(KV("v.nul", GGUF_TYPE_STRING) && kv->v.str.len == 3 && !memcmp(kv->v.str.ptr, "a\0b", 3));
    CHECK(KV("v.replaced", GGUF_TYPE_FLOAT32) && kv->v.f64 == 2.5);
    CHECK(!strcmp(f->kv[16].key, "v.replaced")); /* kept its position */
    CHECK(gguf_find_kv(f, "v.deleted") == NULL);
    CHECK(!strcmp(f->kv[0].key, "general.architecture"));
#define ARR(key, t, n) (KV(key, GGUF_TYPE_ARRAY) && kv->arr_type == (t) && kv->arr_n == (n))
    CHECK(ARR("a.u8", GGUF_TYPE_UINT8, 3) && !memcmp(kv->arr_data, a_u8, sizeof a_u8));
    CHECK(ARR("a.i8", GGUF_TYPE_INT8, 2) && !memcmp(kv->arr_data, a_i8, sizeof a_i8));
    CHECK(ARR("a.u16", GGUF_TYPE_UINT16, 2) && !memcmp(kv->arr_data, a_u16, sizeof a_u16));
    CHECK(ARR("a.i16", GGUF_TYPE_INT16, 2) && !memcmp(kv->arr_data, a_i16, sizeof a_i16));
    CHECK(ARR("a.u32", GGUF_TYPE_UINT32, 4) && gguf_arr_num(kv, 3) == 4000000000.0);
    CHECK(ARR("a.i32", GGUF_TYPE_INT32, 2) && gguf_arr_num(kv, 0) == -7);
    CHECK(ARR("a.u64", GGUF_TYPE_UINT64, 1) && !memcmp(kv->arr_data, a_u64, sizeof a_u64));
    CHECK(ARR("a.i64", GGUF_TYPE_INT64, 2) && !memcmp(kv->arr_data, a_i64, sizeof a_i64));
    CHECK(ARR("a.f32", GGUF_TYPE_FLOAT32, 3) && gguf_arr_num(kv, 1) == -0.25);
    CHECK(ARR("a.f64", GGUF_TYPE_FLOAT64, 2) && gguf_arr_num(kv, 0) == 1e-300);
    CHECK(ARR("a.bool", GGUF_TYPE_BOOL, 3) && !memcmp(kv->arr_data, a_bool, sizeof a_bool));
    CHECK(ARR("a.empty", GGUF_TYPE_INT32, 0));
    CHECK(ARR("a.str_empty", GGUF_TYPE_STRING, 0));
    CHECK(ARR("a.str", GGUF_TYPE_STRING, 4));
    if (kv && kv->arr_n == 4)
        for (int i = 0; i < 4; i++) {
            struct gguf_str s = gguf_arr_str(kv, (uint64_t)i);
            CHECKF(s.len == strlen(a_str[i]) && !memcmp(s.ptr, a_str[i], s.len), "string %d", i);
        }
#undef ARR
#undef KV
    gguf_close(f);
    unlink(path);
}

/* Tensors of several types, from memory and streamed in chunks smaller than
 * one tensor and not a multiple of any block, with general.alignment 64. */
static void test_tensors(void) {
    char path[512];
    tmp_path(path, sizeof path, "tensors.gguf");
    struct {
        const char *name;
        uint32_t type;
        int n_dims;
        int64_t ne[4];
        int streamed;
    } spec[] = {
        {"a.f32", LMOE_DTYPE_F32, 1, {5}, 0},
        {"b.q8_0", LMOE_DTYPE_Q8_0, 2, {64, 3}, 1},
        {"c.q4_k", LMOE_DTYPE_Q4_K, 3, {512, 2, 3}, 1},
        {"d.f16", LMOE_DTYPE_F16, 2, {7, 9}, 1},
        {"e.bf16", LMOE_DTYPE_BF16, 2, {3, 2}, 0},
        {"f.q6_k", LMOE_DTYPE_Q6_K, 4, {256, 1, 2, 2}, 1},
        {"g.q4_0", LMOE_DTYPE_Q4_0, 2, {32, 1}, 0},
        {"h.q5_0", LMOE_DTYPE_Q5_0, 2, {96, 5}, 1},
    };
    enum { N = sizeof spec / sizeof spec[0] };
    uint8_t *mem[N] = {0};
    struct fill_log log = {.fail_at_tensor = -1};
    struct gguf_writer *w;
    CHECK(gguf_writer_open(&w) == 0);
    gguf_writer_set_str(w, "general.architecture", "test");
    gguf_writer_set_u32(w, "general.alignment", 64);
    gguf_writer_set_chunk_size(w, 1000);
    for (int i = 0; i < N; i++) {
        int64_t idx = gguf_writer_add_tensor(w, spec[i].name, spec[i].type, spec[i].n_dims, spec[i].ne, NULL);
        CHECKF(idx == i, "add %s -> %lld", spec[i].name, (long long)idx);
        uint64_t nb = gguf_writer_tensor_nbytes(w, i);
        log.block[i] = (size_t)lmoe_dtype_get(spec[i].type)->type_size;
        if (!spec[i].streamed) {
            mem[i] = malloc(nb);
            for (uint64_t k = 0; k < nb; k++) mem[i][k] = pattern_byte(i, k);
        }
    }
    CHECK(gguf_writer_status(w) == 0);
    gguf_writer_close(w);

    /* The first writer only sized the tensors; now add them for real, with
     * memory data where the spec says so. */
    CHECK(gguf_writer_open(&w) == 0);
    gguf_writer_set_str(w, "general.architecture", "test");
    gguf_writer_set_u32(w, "general.alignment", 64);
    gguf_writer_set_chunk_size(w, 1000);
    for (int i = 0; i < N; i++)
        gguf_writer_add_tensor(w, spec[i].name, spec[i].type, spec[i].n_dims, spec[i].ne, mem[i]);
    uint64_t predicted = gguf_writer_file_size(w);
    int rc = gguf_writer_write(w, path, fill_pattern, &log);
    CHECKF(rc == 0, "%s", gguf_writer_error(w));
    CHECK(file_size(path) == predicted);
    CHECK(log.misaligned == 0 && log.out_of_order == 0);
    int n_streamed = 0;
    for (int i = 0; i < N; i++) n_streamed += spec[i].streamed;
    CHECK(log.calls > n_streamed); /* the q4_k tensor needs two chunks */
    for (int i = 0; i < N; i++)
        if (spec[i].streamed) CHECKF(log.next[i] == gguf_writer_tensor_nbytes(w, i), "tensor %d filled to the end", i);
    gguf_writer_close(w);

    struct gguf_file *f;
    char err[256];
    rc = gguf_open(&f, path, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    if (!rc) {
        CHECK(f->alignment == 64 && f->data_offset % 64 == 0 && f->n_tensors == N);
        for (int i = 0; i < N && (uint64_t)i < f->n_tensors; i++) {
            const struct gguf_tensor *t = &f->tensors[i];
            CHECKF(!strcmp(t->name, spec[i].name) && t->type == spec[i].type && t->n_dims == spec[i].n_dims,
                   "tensor %d is %s", i, t->name);
            for (int d = 0; d < 4; d++) CHECK(t->ne[d] == (d < spec[i].n_dims ? spec[i].ne[d] : 1));
            CHECK(t->offset % 64 == 0);
            const uint8_t *p = t->data;
            uint64_t bad = 0;
            for (uint64_t k = 0; k < t->nbytes; k++) bad += p[k] != pattern_byte(i, k);
            CHECKF(bad == 0, "tensor %s: %llu bytes differ", t->name, (unsigned long long)bad);
            if (i + 1 < N) CHECK(f->tensors[i + 1].offset == (t->offset + t->nbytes + 63) / 64 * 64);
        }
        gguf_close(f);
    }
    unlink(path);
    for (int i = 0; i < N; i++) free(mem[i]);
}

/* Copies every pair and tensor of src into a new file and checks that the
 * copy reads back equal; byte-identical too when `identical` (a file that
 * llama.cpp or gguf-py wrote: tensors in order, each padded, the last too). */
static void copy_file(const char *src, const char *name, int identical) {
    char path[512];
    tmp_path(path, sizeof path, name);
    struct gguf_file *in, *out;
    char err[256];
    int rc = gguf_open(&in, src, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    if (rc) return;
    struct gguf_writer *w;
    CHECK(gguf_writer_open(&w) == 0);
    for (uint64_t i = 0; i < in->n_kv; i++) gguf_writer_copy_kv(w, &in->kv[i]);
    for (uint64_t i = 0; i < in->n_tensors; i++) {
        const struct gguf_tensor *t = &in->tensors[i];
        gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data);
    }
    rc = gguf_writer_write(w, path, NULL, NULL);
    CHECKF(rc == 0, "%s", gguf_writer_error(w));
    gguf_writer_close(w);
    rc = rc ? rc : gguf_open(&out, path, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    if (!rc) {
        CHECK(out->n_kv == in->n_kv && out->n_tensors == in->n_tensors && out->alignment == in->alignment);
        for (uint64_t i = 0; i < in->n_kv && i < out->n_kv; i++) {
            const struct gguf_kv *a = &in->kv[i], *b = &out->kv[i];
            int same = !strcmp(a->key, b->key) && a->type == b->type;
            if (same && a->type == GGUF_TYPE_STRING)
                same = a->v.str.len == b->v.str.len && !memcmp(a->v.str.ptr, b->v.str.ptr, a->v.str.len);
            else if (same && a->type == GGUF_TYPE_ARRAY) {
                /* Both arrays end where the next pair (or the tensor infos)
                 * starts: compare the raw bytes in between. */
                same = a->arr_type == b->arr_type && a->arr_n == b->arr_n;
                if (same && a->arr_type == GGUF_TYPE_STRING)
                    for (uint64_t k = 0; k < a->arr_n && same; k++) {
                        struct gguf_str x = gguf_arr_str(a, k), y = gguf_arr_str(b, k);
                        same = x.len == y.len && !memcmp(x.ptr, y.ptr, x.len);
                    }
                else if (same && a->arr_type != GGUF_TYPE_ARRAY)
                    for (uint64_t k = 0; k < a->arr_n && same; k++) same = gguf_arr_num(a, k) == gguf_arr_num(b, k);
            } else if (same)
                same = a->v.u64 == b->v.u64;
            CHECKF(same, "%s: pair '%s' differs after the copy", src, a->key);
        }
        for (uint64_t i = 0; i < in->n_tensors && i < out->n_tensors; i++) {
            const struct gguf_tensor *a = &in->tensors[i], *b = &out->tensors[i];
            CHECKF(!strcmp(a->name, b->name) && a->type == b->type && a->nbytes == b->nbytes &&
                       !memcmp(a->ne, b->ne, sizeof a->ne) && !memcmp(a->data, b->data, a->nbytes),
                   "%s: tensor '%s' differs after the copy", src, a->name);
        }
        /* The header after the version, nested arrays included, is the
         * same bytes in any case. */
        CHECKF(out->data_offset == in->data_offset && !memcmp(out->base + 8, in->base + 8, in->data_offset - 8),
               "%s: header differs after the copy", src);
        if (identical)
            CHECKF(out->size == in->size && !memcmp(out->base, in->base, in->size),
                   "%s: copy is not byte-identical (%zu vs %zu bytes)", src, out->size, in->size);
        gguf_close(out);
    }
    gguf_close(in);
    unlink(path);
}

static void test_copy(void) {
    copy_file(LMOE_SHARED_DIR "/models/stories260K.gguf", "stories.gguf", 1);
    copy_file(LMOE_TEST_DIR "/golden/models/ds3q-q4_K_M.gguf", "ds3q.gguf", 1); /* llama-quantize's */
    /* Hand-made seeds with nested arrays, no padding after the last tensor
     * (and version 2): equal in content, not in bytes. */
    copy_file(LMOE_TEST_DIR "/fuzz/gguf_seeds/rich_v3_align64.gguf", "rich3.gguf", 0);
    copy_file(LMOE_TEST_DIR "/fuzz/gguf_seeds/rich_v2.gguf", "rich2.gguf", 0);

    /* Copy, then change one value as `quantize` will (file_type). */
    struct gguf_file *in;
    char err[256], path[512];
    tmp_path(path, sizeof path, "edited.gguf");
    if (gguf_open(&in, LMOE_SHARED_DIR "/models/stories260K.gguf", err, sizeof err) == 0) {
        struct gguf_writer *w;
        CHECK(gguf_writer_open(&w) == 0);
        for (uint64_t i = 0; i < in->n_kv; i++) gguf_writer_copy_kv(w, &in->kv[i]);
        gguf_writer_set_u32(w, "llama.block_count", 9);
        gguf_writer_set_u32(w, "general.file_type", 7);
        CHECK(gguf_writer_write(w, path, NULL, NULL) == 0);
        gguf_writer_close(w);
        struct gguf_file *out;
        if (gguf_open(&out, path, err, sizeof err) == 0) {
            uint32_t v = 0;
            CHECK(out->n_kv == in->n_kv + 1);
            CHECK(gguf_get_u32(out, "llama.block_count", &v, NULL, 0) == 0 && v == 9);
            CHECK(gguf_get_u32(out, "general.file_type", &v, NULL, 0) == 0 && v == 7);
            CHECK(!strcmp(out->kv[out->n_kv - 1].key, "general.file_type"));
            gguf_close(out);
        } else {
            CHECKF(0, "%s", err);
        }
        gguf_close(in);
    } else {
        CHECKF(0, "%s", err);
    }
    unlink(path);
}

static void test_errors(void) {
    char path[512];
    struct gguf_writer *w;
    int64_t ne[2] = {33, 2};

    /* Each bad call is refused with its own code and message, and the
     * error sticks: later good calls and the write return it too. */
    CHECK(gguf_writer_open(&w) == 0);
    CHECK(gguf_writer_set_u32(w, "", 1) == LMOE_ERR_ARG);
    CHECK(strstr(gguf_writer_error(w), "metadata key") != NULL);
    CHECK(gguf_writer_set_u32(w, "fine", 1) == LMOE_ERR_ARG);
    tmp_path(path, sizeof path, "never.gguf");
    CHECK(gguf_writer_write(w, path, NULL, NULL) == LMOE_ERR_ARG);
    CHECK(!file_exists(path));
    gguf_writer_close(w);

    CHECK(gguf_writer_open(&w) == 0);
    CHECK(gguf_writer_set_str(w, "bad\nkey", "x") == LMOE_ERR_ARG);
    gguf_writer_close(w);

    CHECK(gguf_writer_open(&w) == 0);
    CHECK(gguf_writer_add_tensor(w, "t", LMOE_DTYPE_Q8_0, 2, ne, NULL) == LMOE_ERR_ARG);
    CHECK(strstr(gguf_writer_error(w), "block size 32") != NULL);
    gguf_writer_close(w);

    CHECK(gguf_writer_open(&w) == 0);
    CHECK(gguf_writer_add_tensor(w, "t", 77, 2, ne, NULL) == LMOE_ERR_UNSUPPORTED);
    gguf_writer_close(w);

    CHECK(gguf_writer_open(&w) == 0);
    int64_t zero[2] = {32, 0};
    CHECK(gguf_writer_add_tensor(w, "t", LMOE_DTYPE_F32, 2, zero, NULL) == LMOE_ERR_ARG);
    gguf_writer_close(w);

    CHECK(gguf_writer_open(&w) == 0);
    CHECK(gguf_writer_add_tensor(w, "t", LMOE_DTYPE_F32, 5, ne, NULL) == LMOE_ERR_ARG);
    gguf_writer_close(w);

    CHECK(gguf_writer_open(&w) == 0);
    CHECK(gguf_writer_add_tensor(w, "t", LMOE_DTYPE_F32, 2, ne, NULL) == 0);
    CHECK(gguf_writer_add_tensor(w, "t", LMOE_DTYPE_F32, 2, ne, NULL) == LMOE_ERR_ARG);
    CHECK(strstr(gguf_writer_error(w), "added twice") != NULL);
    gguf_writer_close(w);

    CHECK(gguf_writer_open(&w) == 0);
    CHECK(gguf_writer_set_arr_num(w, "a", GGUF_TYPE_STRING, "x", 1) == LMOE_ERR_ARG);
    gguf_writer_close(w);

    /* A streamed tensor without a fill. */
    CHECK(gguf_writer_open(&w) == 0);
    gguf_writer_add_tensor(w, "t", LMOE_DTYPE_F32, 2, ne, NULL);
    CHECK(gguf_writer_write(w, path, NULL, NULL) == LMOE_ERR_ARG);
    CHECK(!file_exists(path) && no_temp_left(path));
    gguf_writer_close(w);

    /* Bad general.alignment. */
    CHECK(gguf_writer_open(&w) == 0);
    gguf_writer_set_u32(w, "general.alignment", 48);
    CHECK(gguf_writer_write(w, path, NULL, NULL) == LMOE_ERR_FORMAT);
    gguf_writer_close(w);
    CHECK(gguf_writer_open(&w) == 0);
    gguf_writer_set_u64(w, "general.alignment", 64);
    CHECK(gguf_writer_write(w, path, NULL, NULL) == LMOE_ERR_FORMAT);
    gguf_writer_close(w);

    /* Cannot create the file. */
    CHECK(gguf_writer_open(&w) == 0);
    CHECK(gguf_writer_write(w, "/nonexistent-dir/x.gguf", NULL, NULL) == LMOE_ERR_IO);
    CHECK(strstr(gguf_writer_error(w), "cannot create") != NULL);
    gguf_writer_close(w);

    /* A failing fill: the old file under the final name survives intact,
     * and no temporary is left. */
    FILE *old = fopen(path, "wb");
    if (old) {
        fputs("old", old);
        fclose(old);
    }
    struct fill_log log = {.fail_at_tensor = 1};
    CHECK(gguf_writer_open(&w) == 0);
    gguf_writer_add_tensor(w, "a", LMOE_DTYPE_F32, 2, ne, NULL);
    gguf_writer_add_tensor(w, "b", LMOE_DTYPE_F32, 2, ne, NULL);
    CHECK(gguf_writer_write(w, path, fill_pattern, &log) == LMOE_ERR_IO);
    CHECK(strstr(gguf_writer_error(w), "tensor 'b'") != NULL);
    CHECK(file_size(path) == 3 && no_temp_left(path));
    gguf_writer_close(w);

    /* Writing over an existing file replaces it. */
    CHECK(gguf_writer_open(&w) == 0);
    gguf_writer_set_str(w, "general.architecture", "x");
    CHECK(gguf_writer_write(w, path, NULL, NULL) == 0);
    CHECK(file_size(path) == gguf_writer_file_size(w) && file_size(path) > 3);
    gguf_writer_close(w);
    unlink(path);
    gguf_writer_close(NULL);
}

void test_writer(void) {
    test_all_value_types();
    test_tensors();
    test_copy();
    test_errors();
}
