/*
 * cmd_inspect.c - `leanmoe info` (what a model file holds) and `leanmoe
 * logits` (raw output-head rows, for outside checkers).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Prints s as a JSON string body (quotes not included). */
static void json_str(FILE *f, const char *s) {
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
}

/* "15.71 B", "1.2 MiB": a count with a unit prefix, for people. */
static const char *human(char *buf, uint64_t v, int base, const char *unit) {
    static const char *dec[] = {"", " K", " M", " B", " T"}, *bin[] = {" ", " Ki", " Mi", " Gi", " Ti"};
    double x = (double)v;
    int i = 0;
    while (x >= base && i < 4) { x /= base; i++; }
    snprintf(buf, 32, i ? "%.2f%s%s" : "%.0f%s%s", x, base == 1024 ? bin[i] : dec[i], unit);
    return buf;
}

int cmd_info(const struct args *a) {
    lmoe_engine *e = cli_open_model(a, 1, 0);
    if (!e) return 1;
    struct lmoe_model_info mi;
    lmoe_engine_info(e, &mi);
    const char *names[64];
    int counts[64];
    int nt = lmoe_engine_tensor_types(e, names, counts, 64);
    if (nt > 64) nt = 64;
    double saving = mi.kv_bytes_per_token_full
                        ? 100.0 * (1.0 - (double)mi.kv_bytes_per_token / (double)mi.kv_bytes_per_token_full)
                        : 0.0;
    if (a->json) {
        printf("{\"architecture\": \"");
        json_str(stdout, mi.architecture);
        printf("\", \"name\": \"");
        json_str(stdout, mi.name);
        printf("\", \"params_total\": %llu, \"params_active\": %llu, \"context_length\": %d, "
               "\"n_layer\": %d, \"n_embd\": %d, \"n_vocab\": %d, \"n_head\": %d, \"n_head_kv\": %d, "
               "\"n_expert\": %d, \"n_expert_used\": %d, \"n_expert_shared\": %d, "
               "\"kv_lora_rank\": %d, \"q_lora_rank\": %d, \"weight_bytes\": %llu, \"n_tensors\": %d, "
               "\"kv_bytes_per_token\": %llu, \"kv_bytes_per_token_full\": %llu, \"kv_saving_pct\": %.2f, "
               "\"tensor_types\": {",
               (unsigned long long)mi.params_total, (unsigned long long)mi.params_active, mi.context_length,
               mi.n_layer, mi.n_embd, mi.n_vocab, mi.n_head, mi.n_head_kv, mi.n_expert, mi.n_expert_used,
               mi.n_expert_shared, mi.kv_lora_rank, mi.q_lora_rank, (unsigned long long)mi.weight_bytes,
               mi.n_tensors, (unsigned long long)mi.kv_bytes_per_token,
               (unsigned long long)mi.kv_bytes_per_token_full, saving);
        for (int i = 0; i < nt; i++) printf("%s\"%s\": %d", i ? ", " : "", names[i], counts[i]);
        printf("}}\n");
    } else {
        printf("model         %s\n", a->model);
        printf("architecture  %s%s%s\n", mi.architecture, mi.name[0] ? "  name: " : "", mi.name);
        char tot[32], act[32], bytes[32];
        printf("parameters    %s total, %s active per token\n", human(tot, mi.params_total, 1000, ""),
               human(act, mi.params_active, 1000, ""));
        printf("weights       %s in %d tensors:", human(bytes, mi.weight_bytes, 1024, "B"), mi.n_tensors);
        for (int i = 0; i < nt; i++) printf(" %s x%d", names[i], counts[i]);
        printf("\nshape         %d layers, hidden %d, %d heads (%d kv), vocab %d, context %d\n", mi.n_layer,
               mi.n_embd, mi.n_head, mi.n_head_kv, mi.n_vocab, mi.context_length);
        if (mi.n_expert)
            printf("experts       %d routed, %d used per token, %d shared, %d leading dense layers\n",
                   mi.n_expert, mi.n_expert_used, mi.n_expert_shared, mi.n_layer_dense_lead);
        if (mi.kv_lora_rank)
            printf("attention     multi-head latent: kv_lora_rank %d, q_lora_rank %d\n", mi.kv_lora_rank,
                   mi.q_lora_rank);
        printf("kv cache      %llu bytes/token (f16); a plain per-head cache needs %llu: %.1f%% saved\n",
               (unsigned long long)mi.kv_bytes_per_token, (unsigned long long)mi.kv_bytes_per_token_full,
               saving);
        printf("metadata\n");
        int nm = lmoe_engine_meta(e, -1, NULL, NULL, 0);
        for (int i = 0; i < nm; i++) {
            const char *key;
            char val[400];
            if (lmoe_engine_meta(e, i, &key, val, sizeof val) == 0) printf("  %-44s %s\n", key, val);
        }
    }
    lmoe_engine_close(e);
    return 0;
}

/* Parses "1,2,3" into a malloc'd array. */
static int32_t *parse_ids(const char *s, int *n) {
    int cap = 16, cnt = 0;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    while (ids && *s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            fprintf(stderr, "leanmoe: --ids must be comma-separated token ids, got '%s'\n", s);
            free(ids);
            return NULL;
        }
        if (cnt == cap) {
            int32_t *bigger = realloc(ids, sizeof(int32_t) * (size_t)(cap *= 2));
            if (!bigger) { free(ids); return NULL; }
            ids = bigger;
        }
        ids[cnt++] = (int32_t)v;
        s = *end ? end + 1 : end;
    }
    if (ids && cnt == 0) {
        fprintf(stderr, "leanmoe: --ids is empty\n");
        free(ids);
        return NULL;
    }
    *n = cnt;
    return ids;
}

int cmd_logits(const struct args *a) {
    if (!a->ids || !a->out) {
        fprintf(stderr, "leanmoe: logits needs --ids 1,2,3 and -o FILE\n");
        return 1;
    }
    int n;
    int32_t *ids = parse_ids(a->ids, &n);
    if (!ids) return 1;
    lmoe_engine *e = cli_open_model(a, 1, 0);
    if (!e) { free(ids); return 1; }
    int rc = 1, n_vocab = lmoe_engine_n_vocab(e);
    lmoe_ctx *c = NULL;
    float *logits = malloc(sizeof(float) * (size_t)n * (size_t)n_vocab);
    struct lmoe_ctx_options copt = {.n_ctx = n, .kv_type = a->kv_type};
    FILE *f = NULL;
    if (!logits || lmoe_ctx_open(&c, e, &copt)) {
        fprintf(stderr, "leanmoe: out of memory for %d positions\n", n);
        goto done;
    }
    /* The prompt path runs all ids as one batch; --decode feeds them one at
     * a time through the decode path, as generation does. */
    int err = 0;
    if (a->decode)
        for (int i = 0; i < n && !err; i++) err = lmoe_ctx_eval(c, ids + i, 1, logits + (size_t)i * n_vocab, 0);
    else
        err = lmoe_ctx_eval(c, ids, n, logits, 1);
    if (err) {
        fprintf(stderr, "leanmoe: %s\n", lmoe_ctx_error(c));
        goto done;
    }
    if (!(f = fopen(a->out, "wb"))) {
        fprintf(stderr, "leanmoe: cannot write '%s': %s\n", a->out, strerror(errno));
        goto done;
    }
    if (fwrite(logits, sizeof(float) * (size_t)n_vocab, (size_t)n, f) != (size_t)n || fclose(f)) {
        f = NULL;
        fprintf(stderr, "leanmoe: writing '%s' failed\n", a->out);
        goto done;
    }
    f = NULL;
    rc = 0;
done:
    if (f) fclose(f);
    lmoe_ctx_close(c);
    lmoe_engine_close(e);
    free(logits);
    free(ids);
    return rc;
}

