/*
 * test_cli.c - the leanmoe program as outside checkers use it: `info
 * --json`, `logits` (raw float32 rows), and one-line errors with a nonzero
 * exit for bad input. Runs the sanitized build (build/leanmoe-san).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

#ifndef LMOE_BUILD_DIR
#define LMOE_BUILD_DIR "build"
#endif

/* Runs `leanmoe-san ARGS`, capturing stdout and stderr into files; returns
 * the exit status (or -1). */
static int run(const char *args, char *out, size_t outlen, char *err, size_t errlen) {
    char cmd[2048], o[64], e[64];
    snprintf(o, sizeof o, "/tmp/lmoe_cli_out_%d", (int)getpid());
    snprintf(e, sizeof e, "/tmp/lmoe_cli_err_%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "%s/leanmoe-san %s >%s 2>%s", LMOE_BUILD_DIR, args, o, e);
    int st = system(cmd);
    size_t n;
    char *b = test_read_file(o, &n);
    snprintf(out, outlen, "%s", b ? b : "");
    free(b);
    b = test_read_file(e, &n);
    snprintf(err, errlen, "%s", b ? b : "");
    free(b);
    remove(o);
    remove(e);
    return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

/* An error is one line, ends with a newline, names the tool. */
static int one_line_error(const char *err) {
    const char *nl = strchr(err, '\n');
    return nl && nl[1] == 0 && !strncmp(err, "leanmoe: ", 9);
}

static void check_errors(void) {
    char out[4096], err[4096], args[1024], tmp[256];
    int rc = run("info -m /nonexistent.gguf", out, sizeof out, err, sizeof err);
    CHECKF(rc == 1 && one_line_error(err) && strstr(err, "/nonexistent.gguf"), "missing file: %d '%s'", rc, err);
    rc = run("info -m " LMOE_TEST_DIR "/run.c", out, sizeof out, err, sizeof err);
    CHECKF(rc == 1 && one_line_error(err) && strstr(err, "not a GGUF"), "not gguf: %d '%s'", rc, err);
    rc = run("frobnicate", out, sizeof out, err, sizeof err);
    CHECKF(rc == 1 && one_line_error(err) && strstr(err, "unknown command"), "unknown command: '%s'", err);
    rc = run("logits -m " LMOE_TEST_DIR "/golden/models/llama-f32.gguf --ids 1,x -o /dev/null", out, sizeof out,
             err, sizeof err);
    CHECKF(rc == 1 && one_line_error(err) && strstr(err, "--ids"), "bad ids: '%s'", err);
    rc = run("logits -m " LMOE_TEST_DIR "/golden/models/llama-f32.gguf --ids 1,99999 -o /dev/null", out,
             sizeof out, err, sizeof err);
    CHECKF(rc == 1 && one_line_error(err) && strstr(err, "99999"), "id out of range: '%s'", err);
    rc = run("run", out, sizeof out, err, sizeof err);
    CHECKF(rc == 1 && one_line_error(err) && strstr(err, "prompt"), "no prompt: '%s'", err);
    rc = run("run -m " LMOE_TEST_DIR "/golden/models/llama-f32.gguf -p hello --ctx 2", out, sizeof out, err,
             sizeof err);
    CHECKF(rc == 1 && one_line_error(err) && strstr(err, "context"), "prompt longer than the context: '%s'", err);
    rc = run("run -m " LMOE_SHARED_DIR "/tokenizers/llama.cpp/ggml-vocab-llama-spm.gguf -p hello", out, sizeof out,
             err, sizeof err);
    CHECKF(rc == 1 && one_line_error(err) && strstr(err, "no tensors"), "vocabulary-only file: '%s'", err);
    rc = run("run -p \"$(printf '\\377\\376')\"", out, sizeof out, err, sizeof err);
    CHECKF(rc == 1 && one_line_error(err) && strstr(err, "UTF-8"), "invalid UTF-8: '%s'", err);
    /* Every truncation of a real file is refused with one line. */
    size_t size;
    char *file = test_read_file(LMOE_TEST_DIR "/golden/models/ds3-f32.gguf", &size);
    CHECK(file != NULL);
    snprintf(tmp, sizeof tmp, "/tmp/lmoe_cli_trunc_%d.gguf", (int)getpid());
    size_t cuts[] = {0, 3, 20, 100, 1000, size / 2, size - 1};
    for (size_t i = 0; file && i < sizeof cuts / sizeof cuts[0]; i++) {
        FILE *f = fopen(tmp, "wb");
        fwrite(file, 1, cuts[i], f);
        fclose(f);
        snprintf(args, sizeof args, "info -m %s", tmp);
        rc = run(args, out, sizeof out, err, sizeof err);
        CHECKF(rc == 1 && one_line_error(err), "truncated at %zu: rc %d '%s'", cuts[i], rc, err);
    }
    remove(tmp);
    free(file);
}

static void check_info(void) {
    char out[8192], err[4096];
    int rc = run("info --json -m " LMOE_TEST_DIR "/golden/models/ds3-f32.gguf", out, sizeof out, err, sizeof err);
    CHECKF(rc == 0, "info --json failed: %s", err);
    const char *keys[] = {"\"architecture\": \"deepseek2\"", "\"params_total\": ", "\"params_active\": ",
                          "\"context_length\": 256", "\"tensor_types\": {\"f32\": 34}",
                          "\"kv_bytes_per_token\": 160", "\"kv_bytes_per_token_full\": 640"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        CHECKF(strstr(out, keys[i]) != NULL, "info --json lacks %s: %s", keys[i], out);
    rc = run("info -m " LMOE_TEST_DIR "/golden/models/ds3-f32.gguf", out, sizeof out, err, sizeof err);
    CHECKF(rc == 0 && strstr(out, "75.0% saved") && strstr(out, "deepseek2"), "info text: %s", out);
}

/* `logits` writes n_ids rows of n_vocab float32, matching the reference. */
static void check_logits(void) {
    size_t size;
    uint8_t *ref = test_read_file(LMOE_TEST_DIR "/golden/models/ds3-q8_0.ref", &size);
    CHECK(ref != NULL);
    if (!ref) return;
    uint32_t n_ids, n_vocab;
    memcpy(&n_ids, ref + 4, 4);
    memcpy(&n_vocab, ref + 8, 4);
    char ids[1024] = "", args[2048], out[256], err[4096], path[256];
    for (uint32_t i = 0; i < n_ids; i++) {
        int32_t id;
        memcpy(&id, ref + 16 + 4 * i, 4);
        snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%d", i ? "," : "", id);
    }
    const float *want = (const float *)(ref + 16 + 4 * n_ids);
    snprintf(path, sizeof path, "/tmp/lmoe_cli_logits_%d.f32", (int)getpid());
    for (int decode = 0; decode < 2; decode++) {
        /* The reference kernels: the golden is the exact float computation. */
        snprintf(args, sizeof args, "logits -m %s/golden/models/ds3-q8_0.gguf --ids %s -o %s --kv f32 --isa ref%s",
                 LMOE_TEST_DIR, ids, path, decode ? " --decode" : "");
        int rc = run(args, out, sizeof out, err, sizeof err);
        CHECKF(rc == 0, "logits failed: %s", err);
        float *got = test_read_file(path, &size);
        CHECKF(got && size == (size_t)n_ids * n_vocab * 4, "logits file has %zu bytes", got ? size : 0);
        if (got && size == (size_t)n_ids * n_vocab * 4) {
            double md = 0, mx = 0;
            for (size_t i = 0; i < (size_t)n_ids * n_vocab; i++) {
                md = fmax(md, fabs(got[i] - want[i]));
                mx = fmax(mx, fabs(want[i]));
            }
            CHECKF(md <= 1e-3 * mx, "logits%s differ from reference by %g (max %g)", decode ? " --decode" : "",
                   md, mx);
        }
        free(got);
    }
    remove(path);
    free(ref);
}

void test_cli(void) {
    check_errors();
    check_info();
    check_logits();
}
