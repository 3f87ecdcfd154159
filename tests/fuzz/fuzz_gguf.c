/*
 * fuzz_gguf.c - libFuzzer target for the GGUF reader and the tensor binder.
 *
 * The input is a whole file. When it parses, every accessor is exercised on
 * every pair and tensor (reading the bytes each view points at, so ASan
 * sees any view that escapes the buffer), and the model binder runs on it.
 *
 *   make fuzz FUZZ_SECONDS=300
 *
 * Seeds are in tests/fuzz/gguf_seeds/ (rewritten by LMOE_WRITE_SEEDS=dir
 * build/test_runner gguf); crash reproducers go in tests/fuzz/gguf_crashes/,
 * which the gguf suite replays.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "format/gguf.h"
#include "leanmoe.h"
#include "model/model.h"

static volatile uint64_t sink;

/* Reads every byte of a view. */
static void touch(const void *p, uint64_t n) {
    const uint8_t *b = p;
    uint64_t s = 0;
    for (uint64_t i = 0; i < n; i++) s += b[i];
    sink += s;
}

static void walk(const struct gguf_file *f) {
    char err[256];
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const struct gguf_kv *kv = &f->kv[i];
        if (gguf_find_kv(f, kv->key) == NULL) abort();
        uint64_t u;
        uint32_t u32;
        float x;
        int b;
        struct gguf_str s;
        if (!gguf_get_u64(f, kv->key, &u, err, sizeof err)) sink += u;
        if (!gguf_get_u32(f, kv->key, &u32, err, sizeof err)) sink += u32;
        if (!gguf_get_f32(f, kv->key, &x, err, sizeof err)) sink += (uint64_t)(x == x);
        if (!gguf_get_bool(f, kv->key, &b, err, sizeof err)) sink += (uint64_t)b;
        if (!gguf_get_str(f, kv->key, &s, err, sizeof err)) touch(s.ptr, s.len);
        sink += strlen(gguf_type_name(kv->type));
        if (kv->type != GGUF_TYPE_ARRAY) continue;
        sink += strlen(gguf_type_name(kv->arr_type));
        for (uint64_t j = 0; j < kv->arr_n; j++) {
            if (kv->arr_type == GGUF_TYPE_STRING) {
                s = gguf_arr_str(kv, j);
                touch(s.ptr, s.len);
            } else if (kv->arr_type != GGUF_TYPE_ARRAY) {
                double v = gguf_arr_num(kv, j);
                sink += (uint64_t)(v == v);
            }
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        if (gguf_find_tensor(f, t->name) != t) abort(); /* names are unique */
        if (t->nbytes == 0 || t->data == NULL) abort();
        const uint8_t *d = t->data;
        sink += d[0] + d[t->nbytes - 1];
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A private copy of exactly `size` bytes: reads past it are caught. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    struct gguf_file *f = NULL;
    char err[512];
    if (gguf_parse(&f, buf, size, err, sizeof err) == 0) {
        walk(f);
        struct lmoe_model m;
        if (lmoe_model_load(&m, f, err, sizeof err) == 0) {
            uint64_t total, active, bytes;
            lmoe_model_count_params(&m, &total, &active, &bytes);
            sink += total + active + bytes;
            lmoe_model_free(&m);
        } else if (err[0] == 0 || strchr(err, '\n')) {
            abort();
        }
        gguf_close(f);
    } else if (f != NULL || err[0] == 0 || strchr(err, '\n')) {
        abort(); /* a failure leaves no file and one line */
    }
    free(buf);
    return 0;
}
