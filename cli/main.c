/*
 * main.c - the leanmoe program: usage, option parsing, subcommand dispatch.
 *
 * Subcommands live in cli/cmd_*.c and use only the public header. Errors
 * are one line on stderr ("leanmoe: ...") and a nonzero exit.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* Where the built-in model is looked for, in order: $LEANMOE_MODEL, then
 * models/ beside the directory holding the program (build/../models), then
 * models/ in the working directory. */
#define BUILTIN_MODEL "leanmoe-tiny.gguf"

static void usage(FILE *f) {
    fprintf(f,
            "usage: leanmoe <command> [options]\n"
            "\n"
            "commands:\n"
            "  run      [-m MODEL] -p TEXT [-n N]     generate text (built-in model without -m)\n"
            "  chat     [-m MODEL] [--system TEXT]    talk, in the model's chat format\n"
            "  tokenize -m MODEL (-f FILE | TEXT) [--pieces]   token ids of the exact bytes\n"
            "  info     [-m MODEL] [--json]           what a model file holds\n"
            "  logits   [-m MODEL] --ids 1,2,3 -o FILE [--decode]\n"
            "                                         every position's logits as float32 rows\n"
            "  bench    [-m MODEL] [--pp N] [--tg N] [-r N] [--json] [--usd-per-hour X]\n"
            "                                         prompt and decode speed, roofline, memory, cost\n"
            "  synth    --model NAME --type TYPE -o FILE [--layers N] [--seed S]   random-weight GGUF shaped\n"
            "           like deepseek-v2-lite, qwen3-30b-a3b or deepseek-v3 (q8_0 q4_0 q4_k_m bf16 f16 f32)\n"
            "  serve    [-m MODEL] [--host H] [--port P] [--parallel N]   OpenAI-compatible HTTP server\n"
            "  perplexity -m MODEL -f TEXT [-c N] [--chunks K] [--kl-base FILE [--save-logits]]\n"
            "                                         perplexity as llama-perplexity computes it; KL divergence\n"
            "                                         against saved base log-probs (llama.cpp's file format)\n"
            "  quantize IN.gguf OUT.gguf TYPE [--pure] [-t N]   F32/F16/BF16 weights quantized per tensor as\n"
            "           llama-quantize chooses; TYPE: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K_S Q3_K_M Q3_K_L\n"
            "           Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K F16 BF16 F32, or Q3_K Q4_K Q5_K (one type everywhere)\n"
            "  convert  DIR OUT.gguf [--type T] [--vocab-only]   a Hugging Face folder (safetensors, FP8 too,\n"
            "           tokenizer.json) as GGUF for llama.cpp; T: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1\n"
            "           q2_k..q6_k (one type), q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m (mixes)\n"
            "\n"
            "options:\n"
            "  -m, --model FILE      GGUF model file, or a Hugging Face folder (config.json + *.safetensors)\n"
            "  -p, --prompt TEXT     prompt (run); -f FILE reads it from a file\n"
            "  -n, --n-predict N     tokens to generate (default 128; -1: until end or context full)\n"
            "  --temp T              temperature (default 0.8; 0 = greedy)\n"
            "  --top-k K, --top-p P, --min-p P   filters (defaults 40, 0.95, 0.05; 0/1/0 = off)\n"
            "  --repeat-penalty X, --repeat-last-n N, --presence-penalty X, --frequency-penalty X\n"
            "  --seed S              make sampling repeatable (default: from the clock, printed)\n"
            "  --stop TEXT           stop when TEXT is generated (repeatable, up to %d)\n"
            "  --ignore-eos          keep going past end-of-sequence tokens\n"
            "  -c, --ctx N           context size in tokens (default: model's, at most 4096)\n"
            "  -t, --threads N       worker threads (default: physical cores)\n"
            "  --kv f16|f32|q8       KV cache precision (default f16; q8 = 8-bit blocks)\n"
            "  --isa ref|avx2|avx512 kernels (default: the best this CPU has; ref = scalar reference)\n"
            "  -h, --help            this text\n"
            "\n"
            "serve options:\n"
            "  --host H              address to listen on (default 127.0.0.1)\n"
            "  --port P              TCP port (default 8080; 0 = any free port, printed)\n"
            "  --parallel N          sequences batched together (default 4)\n"
            "  --kv-pool-mb M        KV cache pages shared by all of them (default: N x ctx tokens)\n"
            "  --max-queue N         requests waiting for a slot before 429 (default 64)\n"
            "  --api-key KEY         require 'Authorization: Bearer KEY' (not on /health)\n"
            "  --usd-per-hour X      machine price for the per-request cost (default 0.10)\n"
            "  --max-body BYTES      larger request bodies get 413 (default 8 MiB)\n"
            "  --grace-seconds S     on SIGTERM, time for in-flight requests (default 10)\n",
            CLI_MAX_STOP);
}

static int parse_num(const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || *end || end == s || errno || v < lo || v > hi) {
        fprintf(stderr, "leanmoe: %s needs a number from %g to %g, got '%s'\n", opt, lo, hi, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_args(int argc, char **argv, struct args *a) {
    memset(a, 0, sizeof(*a));
    struct lmoe_sampler_options def = LMOE_SAMPLER_DEFAULTS;
    a->sampling = def;
    a->kv_type = LMOE_KV_F16;
    a->n_predict = 128;
    a->host = "127.0.0.1";
    a->port = 8080;
    a->parallel = 4;
    a->max_queue = 64;
    a->grace_seconds = 10;
    a->max_body = 8 << 20;
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        double v = 0;
        int takes = 1, bad = 0;
        if (!strcmp(s, "-m") || !strcmp(s, "--model")) a->model = next;
        else if (!strcmp(s, "--ids")) a->ids = next;
        else if (!strcmp(s, "-o") || !strcmp(s, "--output")) a->out = next;
        else if (!strcmp(s, "-p") || !strcmp(s, "--prompt")) a->prompt = next;
        else if (!strcmp(s, "-f") || !strcmp(s, "--file")) a->prompt_file = next;
        else if (!strcmp(s, "--system")) a->system = next;
        else if (!strcmp(s, "--isa")) a->isa = next;
        else if (!strcmp(s, "--pp")) { bad = parse_num(s, next, 1, 1 << 20, &v); a->bench_pp = (int)v; }
        else if (!strcmp(s, "--tg")) { bad = parse_num(s, next, 1, 1 << 20, &v); a->bench_tg = (int)v; }
        else if (!strcmp(s, "-r") || !strcmp(s, "--reps")) { bad = parse_num(s, next, 1, 1000, &v); a->bench_reps = (int)v; }
        else if (!strcmp(s, "--type")) a->synth_type = next;
        else if (!strcmp(s, "--chunks")) { bad = parse_num(s, next, 1, 1e9, &v); a->ppl_chunks = (int)v; }
        else if (!strcmp(s, "--kl-base")) a->kl_base = next;
        else if (!strcmp(s, "--layers")) { bad = parse_num(s, next, 1, 4096, &v); a->synth_layers = (int)v; }
        else if (!strcmp(s, "--usd-per-hour")) { bad = parse_num(s, next, 0.0001, 1e6, &v); a->usd_per_hour = v; }
        else if (!strcmp(s, "-t") || !strcmp(s, "--threads")) { bad = parse_num(s, next, 1, 1024, &v); a->threads = (int)v; }
        else if (!strcmp(s, "-n") || !strcmp(s, "--n-predict")) { bad = parse_num(s, next, -1, 1e9, &v); a->n_predict = (int)v; }
        else if (!strcmp(s, "-c") || !strcmp(s, "--ctx")) { bad = parse_num(s, next, 1, 1 << 24, &v); a->n_ctx = (int)v; }
        else if (!strcmp(s, "--temp")) { bad = parse_num(s, next, 0, 100, &v); a->sampling.temperature = (float)v; }
        else if (!strcmp(s, "--top-k")) { bad = parse_num(s, next, 0, 1e9, &v); a->sampling.top_k = (int)v; }
        else if (!strcmp(s, "--top-p")) { bad = parse_num(s, next, 0, 1, &v); a->sampling.top_p = (float)v; }
        else if (!strcmp(s, "--min-p")) { bad = parse_num(s, next, 0, 1, &v); a->sampling.min_p = (float)v; }
        else if (!strcmp(s, "--repeat-penalty")) { bad = parse_num(s, next, 0.01, 100, &v); a->sampling.repeat_penalty = (float)v; }
        else if (!strcmp(s, "--repeat-last-n")) { bad = parse_num(s, next, 0, 1 << 20, &v); a->sampling.repeat_last_n = (int)v; }
        else if (!strcmp(s, "--presence-penalty")) { bad = parse_num(s, next, -10, 10, &v); a->sampling.presence_penalty = (float)v; }
        else if (!strcmp(s, "--frequency-penalty")) { bad = parse_num(s, next, -10, 10, &v); a->sampling.frequency_penalty = (float)v; }
        else if (!strcmp(s, "--seed")) { bad = parse_num(s, next, 0, 1.8e19, &v); a->sampling.seed = (uint64_t)v; a->seed_set = 1; }
        else if (!strcmp(s, "--host")) a->host = next;
        else if (!strcmp(s, "--api-key")) a->api_key = next;
        else if (!strcmp(s, "--port")) { bad = parse_num(s, next, 0, 65535, &v); a->port = (int)v; }
        else if (!strcmp(s, "--parallel")) { bad = parse_num(s, next, 1, 256, &v); a->parallel = (int)v; }
        else if (!strcmp(s, "--max-queue")) { bad = parse_num(s, next, 1, 1e6, &v); a->max_queue = (int)v; }
        else if (!strcmp(s, "--grace-seconds")) { bad = parse_num(s, next, 0, 86400, &v); a->grace_seconds = (int)v; }
        else if (!strcmp(s, "--kv-pool-mb")) { bad = parse_num(s, next, 0.001, 1 << 24, &v); a->kv_pool_mb = v; }
        else if (!strcmp(s, "--max-body")) { bad = parse_num(s, next, 1024, 1 << 30, &v); a->max_body = v; }
        else if (!strcmp(s, "--stop")) {
            if (a->n_stop == CLI_MAX_STOP) {
                fprintf(stderr, "leanmoe: at most %d --stop strings\n", CLI_MAX_STOP);
                return -1;
            }
            if (next && !*next) {
                fprintf(stderr, "leanmoe: --stop needs a non-empty string\n");
                return -1;
            }
            a->stop[a->n_stop++] = next;
        } else if (!strcmp(s, "--kv")) {
            if (next && !strcmp(next, "f16")) a->kv_type = LMOE_KV_F16;
            else if (next && !strcmp(next, "f32")) a->kv_type = LMOE_KV_F32;
            else if (next && !strcmp(next, "q8")) a->kv_type = LMOE_KV_Q8;
            else {
                fprintf(stderr, "leanmoe: --kv takes f16, f32 or q8\n");
                return -1;
            }
        } else {
            takes = 0;
            if (!strcmp(s, "--json")) a->json = 1;
            else if (!strcmp(s, "--decode")) a->decode = 1;
            else if (!strcmp(s, "--pieces")) a->pieces = 1;
            else if (!strcmp(s, "--ignore-eos")) a->ignore_eos = 1;
            else if (!strcmp(s, "--save-logits")) a->save_logits = 1;
            else if (!strcmp(s, "--pure")) a->quant_pure = 1;
            else if (!strcmp(s, "--vocab-only")) a->vocab_only = 1;
            else if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
                usage(stdout);
                exit(0);
            } else if (s[0] != '-' && !a->text) {
                a->text = s; /* positional text, for tokenize */
            } else if (s[0] != '-' && a->n_pos < 2) {
                a->pos[a->n_pos++] = s; /* more positionals: quantize IN OUT TYPE */
            } else {
                fprintf(stderr, "leanmoe: unknown option '%s' (see leanmoe --help)\n", s);
                return -1;
            }
        }
        if (bad) return -1;
        if (takes) {
            if (!next) {
                fprintf(stderr, "leanmoe: option '%s' needs a value\n", s);
                return -1;
            }
            i++;
        }
    }
    if (!a->seed_set) a->sampling.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    return 0;
}

static int file_exists(const char *p) { return access(p, R_OK) == 0; }

/* Finds the built-in model; fills path or returns -1. */
static int builtin_path(char *path, size_t len) {
    const char *env = getenv("LEANMOE_MODEL");
    if (env && *env) {
        snprintf(path, len, "%s", env);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(path, len, "%s/../models/" BUILTIN_MODEL, exe);
            if (file_exists(path)) return 0;
        }
    }
    snprintf(path, len, "models/" BUILTIN_MODEL);
    return file_exists(path) ? 0 : -1;
}

lmoe_engine *cli_open_model(const struct args *a, int allow_builtin, int vocab_only) {
    char path[PATH_MAX + 64];
    const char *model = a->model;
    if (!model) {
        if (!allow_builtin) {
            fprintf(stderr, "leanmoe: no model given (-m FILE)\n");
            return NULL;
        }
        if (builtin_path(path, sizeof path)) {
            fprintf(stderr, "leanmoe: no -m given and the built-in model models/" BUILTIN_MODEL
                            " was not found (set LEANMOE_MODEL)\n");
            return NULL;
        }
        model = path;
    }
    struct lmoe_engine_options opt = {.n_threads = a->threads, .vocab_only = vocab_only, .isa = a->isa};
    lmoe_engine *e;
    char err[768];
    if (lmoe_engine_open(&e, model, &opt, err, sizeof err)) {
        fprintf(stderr, "leanmoe: %s\n", err);
        return NULL;
    }
    return e;
}

char *cli_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "leanmoe: cannot read '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (size_t k; buf && (k = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += k;
        if (n + 1 == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger) { free(buf); buf = NULL; }
            buf = bigger;
        }
    }
    int failed = ferror(f);
    fclose(f);
    if (!buf || failed) {
        fprintf(stderr, "leanmoe: reading '%s' failed\n", path);
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 1 : 0;
    }
    static const struct { const char *name; int (*fn)(const struct args *); } cmds[] = {
        {"run", cmd_run}, {"chat", cmd_chat}, {"tokenize", cmd_tokenize},
        {"info", cmd_info}, {"logits", cmd_logits}, {"bench", cmd_bench},
        {"synth", cmd_synth}, {"serve", cmd_serve},
        {"perplexity", cmd_perplexity}, {"quantize", cmd_quantize},
        {"convert", cmd_convert},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(argv[1], cmds[i].name)) continue;
        struct args a;
        if (cli_parse_args(argc, argv, &a)) return 1;
        return cmds[i].fn(&a);
    }
    fprintf(stderr, "leanmoe: unknown command '%s' (see leanmoe --help)\n", argv[1]);
    return 1;
}
