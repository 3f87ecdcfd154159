/*
 * cmd_convert.c - `leanmoe convert`: a Hugging Face checkpoint folder
 * written as a GGUF file that llama.cpp loads.
 *
 *   leanmoe convert DIR OUT.gguf [--type T] [--vocab-only]
 *
 * The work is lmoe_convert's (leanmoe.h, src/format/hf_convert.c); this
 * checks the arguments and prints the one-line result.
 */
#include <inttypes.h>
#include <stdio.h>

#include "cli.h"

int cmd_convert(const struct args *a) {
    const char *dir = a->text, *out = a->n_pos > 0 ? a->pos[0] : a->out;
    if (!dir || !out || a->n_pos > 1) {
        fprintf(stderr, "leanmoe: usage: leanmoe convert DIR OUT.gguf [--type T] [--vocab-only]\n");
        return 1;
    }
    struct lmoe_convert_options opt = {.type = a->synth_type, .vocab_only = a->vocab_only};
    struct lmoe_convert_report r;
    char err[1024];
    if (lmoe_convert(dir, out, &opt, &r, err, sizeof err)) {
        fprintf(stderr, "leanmoe: %s\n", err);
        return 1;
    }
    if (r.n_tokens)
        fprintf(stderr, "leanmoe: wrote %s: %d tensors, %s, %" PRId64 " tokens, %" PRIu64 " bytes\n", out,
                r.n_tensors, r.type, r.n_tokens, r.file_bytes);
    else
        fprintf(stderr, "leanmoe: wrote %s: %d tensors, %s, no vocabulary (no tokenizer.json), %" PRIu64 " bytes\n",
                out, r.n_tensors, r.type, r.file_bytes);
    return 0;
}
