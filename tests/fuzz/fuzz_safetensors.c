/*
 * fuzz_safetensors.c - libFuzzer target for the safetensors header reader.
 *
 * The input is a whole .safetensors file. When it parses, every tensor's
 * view is read end to end (so ASan sees any view that escapes the buffer)
 * and looked up by name.
 *
 *   make fuzz FUZZ_SECONDS=300
 *
 * Seeds are in tests/fuzz/safetensors_seeds/ (small files written by
 * safetensors' own save_file; the hf suite replays them).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "format/safetensors.h"

static volatile uint64_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct st_file *f;
    char err[256];
    if (st_parse(&f, data, size, "fuzz", err, sizeof err)) return 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const struct st_tensor *t = &f->tensors[i];
        if (st_find(f, t->name) != t) abort();
        const uint8_t *p = t->data;
        uint64_t s = 0;
        for (uint64_t j = 0; j < t->end - t->begin; j++) s += p[j];
        sink += s + (uint64_t)st_dtype_size(t->dtype);
    }
    st_close(f);
    return 0;
}
