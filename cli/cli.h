/*
 * cli.h - what the subcommands of the leanmoe program share: parsed
 * options and opening the model. Only leanmoe.h is used below cli/.
 */
#ifndef LMOE_CLI_H
#define LMOE_CLI_H

#include <stdio.h>

#include "leanmoe.h"

#define CLI_MAX_STOP 8

struct args {
    const char *model, *ids, *out, *prompt, *prompt_file, *system, *text, *isa;
    const char *stop[CLI_MAX_STOP];
    int n_stop;
    int json, decode, pieces, ignore_eos, threads, kv_type, n_predict, n_ctx, seed_set;
    struct lmoe_sampler_options sampling;
    int bench_pp, bench_tg, bench_reps; /* bench: -p N, -n N, -r N */
    double usd_per_hour;
    const char *synth_type; /* synth: --type NAME */
    int synth_layers;       /* synth: --layers N */
    /* serve (usd_per_hour above is shared with bench; 0 = 0.10) */
    const char *host, *api_key;
    int port, parallel, max_queue, grace_seconds;
    double kv_pool_mb, max_body;
    /* perplexity: --chunks K, --kl-base FILE, --save-logits */
    int ppl_chunks, save_logits;
    const char *kl_base;
    /* quantize: IN is text (the first positional), pos[] the ones after it */
    const char *pos[2];
    int n_pos, quant_pure;
    int vocab_only; /* convert: --vocab-only */
};

/* Parses argv[2..]; prints one line and returns -1 on a bad option. */
int cli_parse_args(int argc, char **argv, struct args *a);

/* Opens -m MODEL, or the built-in model when no -m was given and
 * allow_builtin is set. Prints the error and returns NULL on failure. */
lmoe_engine *cli_open_model(const struct args *a, int allow_builtin, int vocab_only);

/* Reads a whole file (for -f); NUL-terminated, *len bytes. NULL + message
 * on failure. */
char *cli_read_file(const char *path, size_t *len);

int cmd_info(const struct args *a);
int cmd_logits(const struct args *a);
int cmd_tokenize(const struct args *a);
int cmd_run(const struct args *a);
int cmd_chat(const struct args *a);
int cmd_bench(const struct args *a);
int cmd_synth(const struct args *a);
int cmd_serve(const struct args *a);
int cmd_perplexity(const struct args *a);
int cmd_quantize(const struct args *a);
int cmd_convert(const struct args *a);

#endif
