/*
 * test_convert.c - the vocabulary `leanmoe convert` writes.
 *
 * A tiny Hugging Face folder (a one-layer Qwen3ForCausalLM of hidden size
 * 16, F16 weights) is written around each shared tokenizer with expected
 * ids (DeepSeek-V3; Qwen3, whose ids llama.cpp's ggml-vocab-qwen2.gguf.out
 * gives), converted by the sanitized program, and the file's vocabulary is
 * then checked three ways:
 *   - leanmoe's own GGUF tokenizer (tokenizer.c, which reads nothing of
 *     tokenizer.json) encodes every shared test string to the expected ids;
 *   - every tokenizer.* key equals, in type and bytes, the one llama.cpp's
 *     convert_hf_to_gguf.py wrote for the same tokenizer
 *     (build/vocab/<name>.gguf, from tools/make_vocab_goldens.py);
 *   - the pre-tokenizer is named from its regexes (gpt-2, llama-bpe on
 *     small tokenizer.json files), and a folder that cannot get a vocabulary
 *     is refused in one line, as llama.cpp's converter refuses it: a
 *     pre-tokenizer llama.cpp has no name for, more tokens than embedding
 *     rows.
 * tools/check_convert_llamacpp.py runs the same folders through llama.cpp.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "format/gguf.h"
#include "leanmoe.h"
#include "test.h"
#include "tokenizer.h"

#define VOCAB_TESTS LMOE_SHARED_DIR "/tokenizers/llama.cpp/"
#define SEPARATOR "\n__ggml_vocab_test__\n"

/* The tiny model's shape (the tokenizer only needs the embedding's rows). */
enum { HIDDEN = 16, HEADS = 2, KV_HEADS = 1, HEAD_DIM = 8, FFN = 32 };

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECKF(f != NULL, "cannot write %s", path);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* model.safetensors of the tiny Qwen3: F16 zeros, norm weights 1.0. */
static void write_weights(const char *path, int n_vocab) {
    static const struct {
        const char *name;
        int rows, cols; /* cols 0: a vector of `rows` */
    } shapes[] = {
        {"model.embed_tokens.weight", -1, HIDDEN},
        {"model.layers.0.input_layernorm.weight", HIDDEN, 0},
        {"model.layers.0.self_attn.q_proj.weight", HEADS * HEAD_DIM, HIDDEN},
        {"model.layers.0.self_attn.k_proj.weight", KV_HEADS * HEAD_DIM, HIDDEN},
        {"model.layers.0.self_attn.v_proj.weight", KV_HEADS * HEAD_DIM, HIDDEN},
        {"model.layers.0.self_attn.o_proj.weight", HIDDEN, HEADS * HEAD_DIM},
        {"model.layers.0.self_attn.q_norm.weight", HEAD_DIM, 0},
        {"model.layers.0.self_attn.k_norm.weight", HEAD_DIM, 0},
        {"model.layers.0.post_attention_layernorm.weight", HIDDEN, 0},
        {"model.layers.0.mlp.gate_proj.weight", FFN, HIDDEN},
        {"model.layers.0.mlp.up_proj.weight", FFN, HIDDEN},
        {"model.layers.0.mlp.down_proj.weight", HIDDEN, FFN},
        {"model.norm.weight", HIDDEN, 0},
    };
    enum { N = sizeof shapes / sizeof shapes[0] };
    char header[4096];
    size_t k = 0, at = 0, bytes[N];
    k += (size_t)snprintf(header + k, sizeof header - k, "{");
    for (int i = 0; i < N; i++) {
        int rows = shapes[i].rows < 0 ? n_vocab : shapes[i].rows;
        bytes[i] = 2 * (size_t)rows * (size_t)(shapes[i].cols ? shapes[i].cols : 1);
        if (shapes[i].cols)
            k += (size_t)snprintf(header + k, sizeof header - k, "%s\"%s\":{\"dtype\":\"F16\",\"shape\":[%d,%d],"
                                  "\"data_offsets\":[%zu,%zu]}", i ? "," : "", shapes[i].name, rows, shapes[i].cols,
                                  at, at + bytes[i]);
        else
            k += (size_t)snprintf(header + k, sizeof header - k, "%s\"%s\":{\"dtype\":\"F16\",\"shape\":[%d],"
                                  "\"data_offsets\":[%zu,%zu]}", i ? "," : "", shapes[i].name, rows, at, at + bytes[i]);
        at += bytes[i];
    }
    k += (size_t)snprintf(header + k, sizeof header - k, "}");
    while (k % 8) header[k++] = ' ';
    FILE *f = fopen(path, "wb");
    CHECKF(f != NULL, "cannot write %s", path);
    if (!f) return;
    uint64_t hlen = k;
    fwrite(&hlen, 8, 1, f);
    fwrite(header, 1, k, f);
    for (int i = 0; i < N; i++) {
        uint16_t v = shapes[i].cols ? 0 : 0x3c00; /* 0.0 or 1.0 */
        for (size_t j = 0; j < bytes[i] / 2; j++) fwrite(&v, 2, 1, f);
    }
    fclose(f);
}

/* A checkpoint folder dir: config.json (vocab_size n_vocab), the weights,
 * and the tokenizer files of tok_dir linked in (tokenizer.json only when
 * tok_json is given instead). */
static void make_folder(const char *dir, int n_vocab, const char *tok_dir, const char *tok_json) {
    char path[1024], src[1024], cfg[1024];
    mkdir(dir, 0755);
    snprintf(cfg, sizeof cfg,
             "{\"architectures\":[\"Qwen3ForCausalLM\"],\"model_type\":\"qwen3\",\"hidden_size\":%d,"
             "\"intermediate_size\":%d,\"num_hidden_layers\":1,\"num_attention_heads\":%d,"
             "\"num_key_value_heads\":%d,\"head_dim\":%d,\"max_position_embeddings\":4096,"
             "\"rms_norm_eps\":1e-6,\"rope_theta\":10000.0,\"tie_word_embeddings\":true,"
             "\"torch_dtype\":\"float16\",\"vocab_size\":%d}",
             HIDDEN, FFN, HEADS, KV_HEADS, HEAD_DIM, n_vocab);
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_text(path, cfg);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    write_weights(path, n_vocab);
    static const char *const files[] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        remove(path);
        if (tok_dir) {
            snprintf(src, sizeof src, "%s/%s", tok_dir, files[i]);
            CHECKF(symlink(src, path) == 0, "cannot link %s", path);
        } else if (i == 0) {
            write_text(path, tok_json);
        }
    }
}

static void remove_folder(const char *dir) {
    static const char *const files[] = {"config.json", "model.safetensors", "tokenizer.json",
                                        "tokenizer_config.json"};
    char path[1024];
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        remove(path);
    }
    rmdir(dir);
}

/* `leanmoe-san convert DIR OUT`; its stderr into err. Returns the status. */
static int convert(const char *dir, const char *out, char *err, size_t errlen) {
    char cmd[4096], errpath[512];
    snprintf(errpath, sizeof errpath, "%s/convert_err_%d", LMOE_BUILD_DIR, (int)getpid());
    snprintf(cmd, sizeof cmd, "%s/leanmoe-san convert %s %s >/dev/null 2>%s", LMOE_BUILD_DIR, dir, out, errpath);
    int st = system(cmd);
    char *b = test_read_file(errpath, NULL);
    snprintf(err, errlen, "%s", b ? b : "");
    free(b);
    remove(errpath);
    return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

/* Every shared case encodes to its expected ids; returns how many do. */
static int check_cases(const char *name, const struct lmoe_tokenizer *t, const char *inp_path,
                       const char *out_path) {
    char *inp = test_read_file(inp_path, NULL), *out = test_read_file(out_path, NULL);
    CHECKF(inp && out, "%s: cannot read %s or %s", name, inp_path, out_path);
    int n = 0, good = 0;
    char *text = inp, *line = out;
    /* Cases are separated (and ended) by SEPARATOR; .out has a line each. */
    while (inp && out && text && *text && line) {
        char *end = strstr(text, SEPARATOR);
        if (end) *end = 0;
        char *eol = strchr(line, '\n');
        if (eol) *eol = 0;
        int32_t want[2048], *ids = NULL;
        int n_want = 0, n_ids = 0;
        for (char *p = line, *q; n_want < 2048; p = q) {
            long v = strtol(p, &q, 10);
            if (q == p) break;
            want[n_want++] = (int32_t)v;
        }
        char err[256] = "";
        int rc = lmoe_tokenizer_encode(t, text, strlen(text), 0, &ids, &n_ids, err, sizeof err);
        int same = rc == 0 && n_ids == n_want && !memcmp(ids, want, (size_t)n_ids * sizeof(*ids));
        CHECKF(same, "%s case %d (\"%.40s\"): rc %d %s, %d ids, expected %d", name, n, text, rc, err, n_ids, n_want);
        free(ids);
        good += same;
        n++;
        text = end ? end + strlen(SEPARATOR) : NULL;
        line = eol ? eol + 1 : NULL;
    }
    fprintf(stderr, "convert: %-12s %d/%d cases match through the converted GGUF\n", name, good, n);
    free(inp);
    free(out);
    return good;
}

/* Bytes of a pair's value as the file holds it (for comparing two files). */
static int same_kv(const struct gguf_kv *a, const struct gguf_kv *b) {
    if (a->type != b->type) return 0;
    if (a->type == GGUF_TYPE_STRING) return a->v.str.len == b->v.str.len && !memcmp(a->v.str.ptr, b->v.str.ptr, a->v.str.len);
    if (a->type != GGUF_TYPE_ARRAY) return a->v.u64 == b->v.u64;
    if (a->arr_type != b->arr_type || a->arr_n != b->arr_n) return 0;
    if (a->arr_type == GGUF_TYPE_STRING) {
        for (uint64_t i = 0; i < a->arr_n; i++) {
            struct gguf_str x = gguf_arr_str(a, i), y = gguf_arr_str(b, i);
            if (x.len != y.len || memcmp(x.ptr, y.ptr, x.len)) return 0;
        }
        return 1;
    }
    size_t size = a->arr_type == GGUF_TYPE_INT32 || a->arr_type == GGUF_TYPE_UINT32 || a->arr_type == GGUF_TYPE_FLOAT32 ? 4 : 0;
    return size && !memcmp(a->arr_data, b->arr_data, (size_t)a->arr_n * size);
}

/* Every tokenizer.* key of llama.cpp's file is in ours with the same value,
 * and ours has no tokenizer.* key that it lacks. */
static void check_keys(const char *name, const struct gguf_file *ours, const char *ref_path) {
    struct gguf_file *ref = NULL;
    char err[512];
    if (gguf_open(&ref, ref_path, err, sizeof err)) {
        fprintf(stderr, "convert: skipped: %s missing (tools/make_vocab_goldens.py)\n", ref_path);
        return;
    }
    int n = 0;
    for (uint64_t i = 0; i < ref->n_kv; i++) {
        const struct gguf_kv *r = &ref->kv[i];
        if (strncmp(r->key, "tokenizer.", 10)) continue;
        const struct gguf_kv *o = gguf_find_kv(ours, r->key);
        CHECKF(o && same_kv(o, r), "%s: %s differs from llama.cpp's converter", name, r->key);
        n++;
    }
    for (uint64_t i = 0; i < ours->n_kv; i++)
        if (!strncmp(ours->kv[i].key, "tokenizer.", 10))
            CHECKF(gguf_find_kv(ref, ours->kv[i].key) != NULL, "%s: %s is not in llama.cpp's file", name,
                   ours->kv[i].key);
    CHECKF(n >= 9, "%s: only %d tokenizer keys in %s", name, n, ref_path);
    gguf_close(ref);
}

/* Converts a folder around a shared tokenizer and checks its vocabulary. */
static void check_shared(const char *name, int n_vocab, const char *tok_dir, const char *inp, const char *out,
                         const char *pre, int n_cases) {
    char dir[512], gguf[600], err[2048];
    snprintf(dir, sizeof dir, "%s/convert_%s_%d", LMOE_BUILD_DIR, name, (int)getpid());
    snprintf(gguf, sizeof gguf, "%s.gguf", dir);
    make_folder(dir, n_vocab, tok_dir, NULL);
    int rc = convert(dir, gguf, err, sizeof err);
    CHECKF(rc == 0 && !strstr(err, "warning"), "convert %s: exit %d: %s", name, rc, err);
    struct gguf_file *g = NULL;
    struct lmoe_tokenizer *t = NULL;
    if (rc == 0 && gguf_open(&g, gguf, err, sizeof err) == 0) {
        CHECKF(lmoe_tokenizer_open(&t, g, err, sizeof err) == 0, "%s: %s", name, err);
        if (t) {
            CHECKF(!strcmp(lmoe_tokenizer_pre(t), pre), "%s: pre '%s'", name, lmoe_tokenizer_pre(t));
            CHECK(lmoe_tokenizer_n_vocab(t) == n_vocab);
            CHECK(check_cases(name, t, inp, out) == n_cases);
        }
        char ref[600];
        snprintf(ref, sizeof ref, "%s/vocab/%s.gguf", LMOE_BUILD_DIR, name);
        check_keys(name, g, ref);
    } else {
        CHECKF(0, "%s: cannot open the converted file: %s", name, err);
    }
    lmoe_tokenizer_close(t);
    gguf_close(g);
    remove(gguf);
    remove_folder(dir);
}

/* A tokenizer.json of 6 byte tokens whose pre-tokenizer is given. */
static const char *small_tokenizer(const char *pre_tokenizer, char *buf, size_t n) {
    snprintf(buf, n,
             "{\"added_tokens\":[{\"id\":6,\"content\":\"<|end|>\",\"special\":true}],"
             "\"pre_tokenizer\":%s,\"decoder\":{\"type\":\"ByteLevel\"},"
             "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"\\u0120\":3,\"ab\":4,\"\\u0120a\":5},"
             "\"merges\":[\"a b\",\"\\u0120 a\"]}}",
             pre_tokenizer);
    return buf;
}

/* Status and stderr of converting a folder around a small tokenizer.json
 * with the given pre-tokenizer and embedding rows; *g gets the file (or
 * NULL) and gguf its path. */
static int convert_small(const char *dir, const char *gguf, const char *pre_tokenizer, int n_vocab,
                         struct gguf_file **g, char *err, size_t errlen) {
    char json[4096];
    *g = NULL;
    make_folder(dir, n_vocab, NULL, small_tokenizer(pre_tokenizer, json, sizeof json));
    remove(gguf);
    int rc = convert(dir, gguf, err, errlen);
    char gerr[512];
    if (rc == 0 && gguf_open(g, gguf, gerr, sizeof gerr)) CHECKF(0, "cannot open %s: %s", gguf, gerr);
    return rc;
}

/* Llama 3's pre-tokenizer as its tokenizer.json has it, with the Split's
 * behavior given. */
#define LLAMA3_SPLIT(behavior)                                                                                  \
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"                       \
    "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}"            \
    "\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"" behavior "\","     \
    "\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}"

/* The pre-tokenizer is named from its regexes alone; one llama.cpp has no
 * name for, or more tokens than embedding rows, is a one-line error and no
 * file (as llama.cpp's converter refuses both). */
static void check_names_and_failures(void) {
    static const struct {
        const char *pre_tokenizer, *name; /* NULL: no name, an error */
    } cases[] = {
        {"{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}", "gpt-2"},
        {LLAMA3_SPLIT("Isolated"), "llama-bpe"},
        /* the same regex, but its matches removed: not what llama.cpp does */
        {LLAMA3_SPLIT("Removed"), NULL},
        /* a prefix space: llama.cpp's gpt-2 has none, so the ids would differ */
        {"{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":true}", NULL},
        {"{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{L}+\"},"
         "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
         "\"use_regex\":false}]}",
         NULL},
    };
    char dir[512], gguf[600], err[2048];
    snprintf(dir, sizeof dir, "%s/convert_small_%d", LMOE_BUILD_DIR, (int)getpid());
    snprintf(gguf, sizeof gguf, "%s.gguf", dir);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct gguf_file *g;
        int rc = convert_small(dir, gguf, cases[i].pre_tokenizer, 64, &g, err, sizeof err);
        if (cases[i].name) {
            const struct gguf_kv *kv = g ? gguf_find_kv(g, "tokenizer.ggml.pre") : NULL;
            CHECKF(rc == 0 && kv && kv->type == GGUF_TYPE_STRING && kv->v.str.len == strlen(cases[i].name) &&
                       !memcmp(kv->v.str.ptr, cases[i].name, kv->v.str.len),
                   "small %zu: exit %d, pre '%.*s', expected %s: %s", i, rc, kv ? (int)kv->v.str.len : 0,
                   kv ? kv->v.str.ptr : "", cases[i].name, err);
        } else {
            CHECKF(rc != 0 && strstr(err, "pre-tokenizer") && strchr(err, '\n') == err + strlen(err) - 1,
                   "small %zu: exit %d: %s", i, rc, err);
            CHECK(access(gguf, F_OK) != 0);
        }
        gguf_close(g);
    }

    /* More tokens than embedding rows. */
    struct gguf_file *g;
    int rc = convert_small(dir, gguf, cases[0].pre_tokenizer, 4, &g, err, sizeof err);
    CHECKF(rc != 0 && strchr(err, '\n') == err + strlen(err) - 1, "too many tokens: exit %d: %s", rc, err);
    CHECK(access(gguf, F_OK) != 0);
    gguf_close(g);

    /* A small one that fits: padded to the rows, the special token CONTROL. */
    rc = convert_small(dir, gguf, cases[0].pre_tokenizer, 64, &g, err, sizeof err);
    struct lmoe_tokenizer *t = NULL;
    if (rc == 0 && g && lmoe_tokenizer_open(&t, g, err, sizeof err) == 0) {
        CHECK(lmoe_tokenizer_n_vocab(t) == 64 && !strcmp(lmoe_tokenizer_pre(t), "gpt-2"));
        CHECK(lmoe_tokenizer_token_type(t, 6) == LMOE_TOKEN_TYPE_CONTROL);
        CHECK(lmoe_tokenizer_token_type(t, 63) == LMOE_TOKEN_TYPE_UNUSED);
        size_t n = 0;
        const char *p = lmoe_tokenizer_piece(t, 63, &n);
        CHECK(p && n == 7 && !memcmp(p, "[PAD63]", 7));
        int32_t want[] = {4, 5}, *ids = NULL;
        int n_ids = 0;
        CHECK(lmoe_tokenizer_encode(t, "ab a", 4, 0, &ids, &n_ids, err, sizeof err) == 0 && n_ids == 2 &&
              !memcmp(ids, want, sizeof want));
        free(ids);
    } else {
        CHECKF(0, "small: exit %d: %s", rc, err);
    }
    lmoe_tokenizer_close(t);
    gguf_close(g);
    remove(gguf);
    remove_folder(dir);
}

void test_convert(void) {
    check_shared("deepseek-v3", 129280, LMOE_SHARED_DIR "/tokenizers/deepseek-v3",
                 LMOE_SHARED_DIR "/tokenizers/deepseek-v3/deepseek-v3.inp",
                 LMOE_SHARED_DIR "/tokenizers/deepseek-v3/deepseek-v3.out", "deepseek-v3", 46);
    check_shared("qwen3", 151936, LMOE_SHARED_DIR "/tokenizers/qwen3", VOCAB_TESTS "ggml-vocab-qwen2.gguf.inp",
                 VOCAB_TESTS "ggml-vocab-qwen2.gguf.out", "qwen2", 46);
    check_names_and_failures();
}
