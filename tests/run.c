/*
 * run.c - the test runner: a table of suites.
 *
 *   build/test_runner            runs every suite
 *   build/test_runner gguf quant runs the named ones
 *
 * Ends with "N passed, N failed"; the exit status is nonzero on any failure.
 */
#include <stdlib.h>
#include <string.h>

#include "test.h"

int lmoe_test_passed, lmoe_test_failed;

void test_gguf(void);
void test_quant(void);
void test_kernels(void);
void test_model(void);
void test_cli(void);
void test_tokenizer(void);
void test_sampler(void);
void test_writer(void);
void test_chat(void);
void test_jinja(void);
void test_quantize(void);
void test_server(void);
void test_hf(void);
void test_convert(void);
void test_kvpool(void);

static const struct {
    const char *name;
    void (*run)(void);
} suites[] = {
    {"gguf", test_gguf},       /* reader, metadata, hostile files, fuzz seeds */
    {"quant", test_quant},     /* dequantizers against the gguf package */
    {"kernels", test_kernels}, /* fast paths against the scalar reference */
    {"model", test_model},     /* logits against transformers goldens */
    {"kvpool", test_kvpool},   /* paged KV pool: accounting, exhaustion, same logits */
    {"tokenizer", test_tokenizer}, /* BPE and SPM against reference ids */
    {"sampler", test_sampler},     /* token choice */
    {"chat", test_chat},           /* chat formats against jinja2 renders */
    {"jinja", test_jinja},         /* chat templates rendered as jinja2 does */
    {"writer", test_writer},   /* GGUF writer round trips through the reader */
    {"cli", test_cli},         /* the leanmoe program's interfaces */
    {"quantize", test_quantize}, /* quantizers vs gguf-py and ggml; quantize, perplexity */
    {"server", test_server},   /* leanmoe serve, black-box over HTTP */
    {"hf", test_hf},           /* safetensors folders, FP8, convert, hostile headers */
    {"convert", test_convert}, /* the vocabulary convert writes, against llama.cpp's */
};

void *test_read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return NULL; }
    long n = ftell(f);
    rewind(f);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    fclose(f);
    if (buf) { buf[n] = 0; if (size) *size = (size_t)n; }
    return buf;
}

int main(int argc, char **argv) {
    int n_suites = (int)(sizeof(suites) / sizeof(suites[0]));
    for (int i = 0; i < n_suites; i++) {
        int wanted = argc < 2;
        for (int a = 1; a < argc; a++) wanted |= strcmp(argv[a], suites[i].name) == 0;
        if (!wanted) continue;
        int before_fail = lmoe_test_failed, before_pass = lmoe_test_passed;
        suites[i].run();
        fprintf(stderr, "suite %-8s %d passed, %d failed\n", suites[i].name,
                lmoe_test_passed - before_pass, lmoe_test_failed - before_fail);
    }
    printf("%d passed, %d failed\n", lmoe_test_passed, lmoe_test_failed);
    return lmoe_test_failed ? 1 : 0;
}
