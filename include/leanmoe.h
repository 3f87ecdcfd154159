/*
 * leanmoe.h - the public interface of leanmoe, a CPU inference engine for
 * sparse Mixture-of-Experts and latent-attention language models.
 *
 * Two handles carry all state:
 *
 *   lmoe_engine  the read-only weights of one model file, memory-mapped and
 *                never copied, plus the worker threads. Open it once; it can
 *                serve any number of contexts.
 *   lmoe_ctx     one token timeline: positions, the KV cache (for DeepSeek-
 *                class models only the compressed latent and the shared RoPE
 *                key), and scratch memory. One user at a time.
 *
 * Example: the logits of a prompt, then one more token.
 *
 *   lmoe_engine *e; lmoe_ctx *c; char err[256];
 *   if (lmoe_engine_open(&e, "model.gguf", NULL, err, sizeof err)) {
 *       fprintf(stderr, "%s\n", err); return 1;
 *   }
 *   lmoe_ctx_open(&c, e, NULL);
 *   int32_t ids[] = {1, 2, 3};
 *   float *logits = malloc(sizeof(float) * lmoe_engine_n_vocab(e));
 *   lmoe_ctx_eval(c, ids, 3, logits, 0);          // prompt: last row only
 *   int32_t next = 42;
 *   lmoe_ctx_eval(c, &next, 1, logits, 0);        // one decode step
 *   lmoe_ctx_close(c); lmoe_engine_close(e); free(logits);
 *
 * Conventions: every call returns 0 or a negative LMOE_ERR_* code;
 * constructors fill an out parameter; every _close(NULL) does nothing; a
 * failed call leaves a one-line message naming the file, tensor or field
 * (lmoe_ctx_error, or the caller's err buffer for lmoe_engine_open).
 */
#ifndef LEANMOE_H
#define LEANMOE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Errors ------------------------------------------------------------ */

enum lmoe_err {
    LMOE_OK = 0,
    LMOE_ERR_IO = -1,          /* a file could not be opened, read or mapped */
    LMOE_ERR_FORMAT = -2,      /* a file is truncated, corrupt or inconsistent */
    LMOE_ERR_UNSUPPORTED = -3, /* valid, but an architecture or type we lack */
    LMOE_ERR_NOMEM = -4,       /* an allocation failed */
    LMOE_ERR_ARG = -5,         /* a caller passed a bad argument */
    LMOE_ERR_CTX_FULL = -6,    /* the context has no room for more tokens */
    LMOE_ERR_KV_FULL = -7,     /* the shared KV pool has no free page left */
};

/* A short name for a result code. Static string. */
const char *lmoe_strerror(int code);

/* ---- Engine ------------------------------------------------------------ */

typedef struct lmoe_engine lmoe_engine;

struct lmoe_engine_options {
    int n_threads;  /* worker threads; 0 = the number of physical cores */
    int vocab_only; /* 1: read only the vocabulary (tokenize needs no weights) */
    const char *isa; /* kernels: NULL = the best this CPU has (or $LMOE_ISA);
                        "ref" = the scalar reference (float activations, the
                        exact path the golden tests check); "avx2", "avx512" */
};
#define LMOE_DEFAULT_N_THREADS 0

/* Opens a GGUF model file. opt may be NULL for defaults. On failure *out is
 * NULL and err (if not NULL) holds one line saying what is wrong. */
int lmoe_engine_open(lmoe_engine **out, const char *path,
                     const struct lmoe_engine_options *opt, char *err,
                     size_t errlen);
void lmoe_engine_close(lmoe_engine *e);

int lmoe_engine_n_vocab(const lmoe_engine *e);
int lmoe_engine_n_threads(const lmoe_engine *e);

/* What a model file holds, for `leanmoe info`. Strings are borrowed, valid
 * until lmoe_engine_close. */
struct lmoe_model_info {
    const char *architecture; /* general.architecture, e.g. "deepseek2" */
    const char *name;         /* general.name, or "" */
    int n_layer, n_embd, n_vocab, n_head, n_head_kv, context_length;
    int n_expert, n_expert_used, n_expert_shared, n_layer_dense_lead;
    int kv_lora_rank, q_lora_rank; /* 0 when the model has no MLA / no q_lora */
    uint64_t params_total;  /* every weight in the file's tensors */
    uint64_t params_active; /* per token: shared weights + selected experts */
    uint64_t weight_bytes;  /* bytes of tensor data */
    uint64_t bytes_per_token; /* weight bytes one decode step reads */
    uint64_t kv_bytes_per_token;      /* the cache leanmoe keeps (F16) */
    uint64_t kv_bytes_per_token_full; /* a plain per-head K/V cache, F16 */
    int n_tensors;
};
int lmoe_engine_info(const lmoe_engine *e, struct lmoe_model_info *out);

/* Tensor types present: fills up to max (name, count) pairs, returns how
 * many distinct types the file has. Names borrowed (static). */
int lmoe_engine_tensor_types(const lmoe_engine *e, const char **names,
                             int *counts, int max);

/* Metadata key/value pairs of the file, for display: the i-th key and its
 * value rendered as text into buf (long arrays are abbreviated). Returns
 * the number of pairs for i < 0. */
int lmoe_engine_meta(const lmoe_engine *e, int i, const char **key, char *buf,
                     size_t buflen);

/* ---- Context ----------------------------------------------------------- */

typedef struct lmoe_ctx lmoe_ctx;

/* KV cache precision. Q8 keeps 8-bit blocks (32 values + an f16 scale)
 * where the rows allow it (DeepSeek: the latent; others: heads of a
 * multiple of 32), F16 elsewhere. */
enum lmoe_kv_type { LMOE_KV_F32 = 0, LMOE_KV_F16 = 1, LMOE_KV_Q8 = 2 };

/* A KV pool: fixed-size pages of KV cache, each holding page_tokens
 * consecutive positions of every layer, shared by the contexts opened on
 * it. A context maps its positions to pages through a small page table,
 * takes a page when its timeline enters one, and gives pages back when it
 * is truncated, reset or closed; so a context may grow into whatever its
 * neighbours leave free, up to its own n_ctx. Pages are allocated once, at
 * pool open; taking and returning them allocates nothing and is
 * thread-safe. Which pages a context holds never changes its results: the
 * logits equal those of a context with its own cache. */
typedef struct lmoe_kv_pool lmoe_kv_pool;

struct lmoe_kv_pool_options {
    int n_pages;     /* pages in the pool (> 0) */
    int page_tokens; /* positions per page, a power of two; 0 = 16 */
    int kv_type;     /* enum lmoe_kv_type of every page */
};
#define LMOE_DEFAULT_PAGE_TOKENS 16

/* Bytes one page of page_tokens positions takes (both parts, every
 * layer), to size a pool from a memory budget. 0 for a vocabulary-only
 * engine or a page_tokens that is not a power of two. */
size_t lmoe_kv_page_bytes(const lmoe_engine *e, int page_tokens, int kv_type);

/* The pool borrows e, which must outlive it; every context opened on the
 * pool must be closed before lmoe_kv_pool_close. */
int lmoe_kv_pool_open(lmoe_kv_pool **out, lmoe_engine *e,
                      const struct lmoe_kv_pool_options *opt);
void lmoe_kv_pool_close(lmoe_kv_pool *p);

struct lmoe_kv_pool_info {
    int n_pages, n_free, page_tokens;
    size_t page_bytes;
};
void lmoe_kv_pool_info(lmoe_kv_pool *p, struct lmoe_kv_pool_info *out);

struct lmoe_ctx_options {
    int n_ctx;   /* tokens the cache holds; 0 = min(model context, 4096) */
    int kv_type; /* enum lmoe_kv_type; F16 by default; ignored with a pool */
    /* NULL: the context owns a cache of n_ctx positions, one contiguous
     * block per layer. Otherwise its KV rows live in pages of this pool,
     * taken as the timeline grows; an eval that needs a page the pool no
     * longer has fails with LMOE_ERR_KV_FULL and evaluates nothing. A
     * context holds ceil(n_past / page_tokens) pages. */
    lmoe_kv_pool *pool;
};
#define LMOE_DEFAULT_N_CTX 4096

/* opt may be NULL for defaults. The context borrows e, which must outlive it. */
int lmoe_ctx_open(lmoe_ctx **out, lmoe_engine *e,
                  const struct lmoe_ctx_options *opt);
void lmoe_ctx_close(lmoe_ctx *c);

/* Runs n tokens at the next positions of the timeline (a prompt when n > 1,
 * a decode step when n == 1) and appends them to the KV cache. If logits is
 * not NULL it receives n_vocab floats: for the last token only, or, with
 * all_rows != 0, one row per token (n * n_vocab floats). */
int lmoe_ctx_eval(lmoe_ctx *c, const int32_t *tokens, int n, float *logits,
                  int all_rows);

/* Runs several contexts of one engine in a single forward step (continuous
 * batching): context i gets n[i] tokens from tokens[i], and logits[i] (if
 * not NULL) receives its last row, or all its rows with all_rows. Each
 * weight, and each selected expert, is read once per step for all of them,
 * and the results equal what each context would get alone. A context may
 * appear only once. On an error nothing is evaluated. */
int lmoe_batch_eval(lmoe_ctx **ctxs, const int32_t *const *tokens, const int *n, float **logits,
                    int all_rows, int n_seq);

int lmoe_ctx_n_past(const lmoe_ctx *c); /* tokens in the cache */
/* Forgets every token from position n on (n <= n_past), so a timeline can
 * be rewound to a shared prefix and continued differently. Pages of a pool
 * that no longer hold a position go back to it, as they do on reset. */
int lmoe_ctx_truncate(lmoe_ctx *c, int n);
int lmoe_ctx_n_ctx(const lmoe_ctx *c);  /* its capacity */
void lmoe_ctx_reset(lmoe_ctx *c);       /* forget every token */
/* Makes dst hold the first n tokens of src's cache (n <= src's n_past) as
 * if it had evaluated them itself: dst forgets its own tokens, takes pages
 * for n positions and gets a copy of src's KV rows, so a prompt that
 * starts like another context's is not computed twice. Both contexts must
 * come from one engine with the same KV type.
 * LMOE_ERR_ARG (dst untouched), or LMOE_ERR_CTX_FULL / LMOE_ERR_KV_FULL
 * with dst left empty. */
int lmoe_ctx_copy_prefix(lmoe_ctx *dst, const lmoe_ctx *src, int n);

/* The message of the last failed call on c. Borrowed. */
const char *lmoe_ctx_error(const lmoe_ctx *c);

/* ---- Tokenizer and chat ------------------------------------------------ */

/* Text to token ids with the model's own vocabulary (byte-level BPE or
 * SentencePiece, from the file's tokenizer.ggml.* keys). add_bos prepends
 * BOS when the model wants one (lmoe_token_bos >= 0 and the file's
 * add_bos_token); parse_special turns the text of control tokens such as
 * "<|im_end|>" into those tokens. *ids is owned: free with free(). Invalid
 * UTF-8 is LMOE_ERR_ARG; a file without a vocabulary LMOE_ERR_UNSUPPORTED.
 * The message of a failure goes to err. */
int lmoe_tokenize(const lmoe_engine *e, const char *text, size_t len, int add_bos,
                  int parse_special, int32_t **ids, int *n, char *err, size_t errlen);

/* The bytes a token stands for, written to buf (at most buflen); returns the
 * full count like snprintf, or a negative code for an id out of range. The
 * bytes may end inside a UTF-8 character: stream output through
 * lmoe_text_stream so only whole characters are printed. */
int lmoe_token_bytes(const lmoe_engine *e, int32_t id, char *buf, size_t buflen);
/* The token's stored piece (for `tokenize --pieces`). Borrowed. */
const char *lmoe_token_piece(const lmoe_engine *e, int32_t id);
int32_t lmoe_token_bos(const lmoe_engine *e); /* -1 if none */
int32_t lmoe_token_eos(const lmoe_engine *e);
int32_t lmoe_token_eot(const lmoe_engine *e); /* end of turn, -1 if none */
int lmoe_token_is_control(const lmoe_engine *e, int32_t id);
/* True for tokens that end a generation: EOS and end-of-turn. */
int lmoe_token_is_eog(const lmoe_engine *e, int32_t id);

/* Streams token bytes as whole UTF-8 characters: push returns how many
 * bytes of out to print (out needs 3 * (n + 4) bytes); flush ends the
 * stream, turning a dangling partial character into U+FFFD. */
typedef struct lmoe_text_stream { unsigned char pend[4]; int n_pend; } lmoe_text_stream;
size_t lmoe_text_stream_push(lmoe_text_stream *s, const char *in, size_t n, char *out);
size_t lmoe_text_stream_flush(lmoe_text_stream *s, char *out);

/* One chat message; role is "system", "user" or "assistant". */
struct lmoe_chat_msg {
    const char *role;
    const char *content;
};

/* The chat format lmoe_chat_render uses: "template" when the model's own
 * Jinja chat template (GGUF tokenizer.chat_template, or tokenizer_config.json's
 * chat_template in a folder) is rendered, as transformers'
 * apply_chat_template does; otherwise the hand-written format recognised
 * from that template or the architecture: "deepseek2", "deepseek3",
 * "chatml", "llama3", "mistral" or "plain". Static string. */
const char *lmoe_chat_format(const lmoe_engine *e);

/* Renders a conversation as prompt text, BOS included where the format has
 * it, ending with the assistant header when add_assistant is set. With the
 * model's template, a conversation it refuses (raise_exception) or text that
 * is not UTF-8 falls back to the hand-written format. Encode the result
 * with add_bos = 0 and parse_special = 1. Owned: free with free(). */
char *lmoe_chat_render(const lmoe_engine *e, const struct lmoe_chat_msg *msgs, int n,
                       int add_assistant);

/* ---- Sampler ----------------------------------------------------------- */

/* Chooses tokens from logits: penalties, then temperature, top-k, top-p,
 * min-p and a seeded draw (the order of Hugging Face's generate()).
 * temperature <= 0 is greedy. */
typedef struct lmoe_sampler lmoe_sampler;

struct lmoe_sampler_options {
    float temperature;       /* 0 = greedy */
    int top_k;               /* 0 = off */
    float top_p;             /* 1 = off */
    float min_p;             /* 0 = off; relative to the most likely token */
    float repeat_penalty;    /* 1 = off; divides positive, multiplies negative logits */
    int repeat_last_n;       /* how many recent tokens the penalties look at */
    float presence_penalty;  /* 0 = off; subtracted once per seen token */
    float frequency_penalty; /* 0 = off; subtracted per occurrence */
    uint64_t seed;
};
#define LMOE_SAMPLER_DEFAULTS {0.8f, 40, 0.95f, 0.05f, 1.0f, 64, 0.0f, 0.0f, 0}

int lmoe_sampler_open(lmoe_sampler **out, const struct lmoe_sampler_options *opt, int n_vocab);
void lmoe_sampler_close(lmoe_sampler *s);
/* Picks a token; penalties modify logits in place. */
int32_t lmoe_sampler_sample(lmoe_sampler *s, float *logits);
/* Records a token (prompt or generated) for the penalties. */
void lmoe_sampler_accept(lmoe_sampler *s, int32_t token);
void lmoe_sampler_reset(lmoe_sampler *s);

/* ---- Converting checkpoints -------------------------------------------- */

/*
 * lmoe_convert writes a Hugging Face checkpoint folder (config.json, one or
 * many *.safetensors, tokenizer.json, tokenizer_config.json) as one GGUF
 * file with the tensor names, layout, metadata and vocabulary llama.cpp's
 * convert_hf_to_gguf.py writes, so llama.cpp loads it as it loads its own:
 *
 *   struct lmoe_convert_options o = {.type = "q4_k_m"};
 *   struct lmoe_convert_report r;
 *   if (lmoe_convert("DeepSeek-V2-Lite", "v2lite-q4_k_m.gguf", &o, &r, err, sizeof err))
 *       fprintf(stderr, "%s\n", err);
 *
 * Weights are streamed (converted row by row while the file is written), so
 * memory stays small whatever the model's size; the file is written under a
 * temporary name and renamed at the end.
 */
struct lmoe_convert_options {
    /* Tensor type. Pure types, one for every matrix as the converter's
     * --outtype: "f32" "f16" "bf16" "q8_0" "q4_0" "q4_1" "q5_0" "q5_1"
     * "q2_k" "q3_k" "q4_k" "q5_k" "q6_k" (vectors, norms and the router stay
     * F32; rows a block does not divide fall back to F16). llama-quantize
     * mixes, per tensor as `leanmoe quantize` chooses: "q3_k_s" "q3_k_m"
     * "q3_k_l" "q4_k_s" "q4_k_m" "q5_k_s" "q5_k_m". Any case. NULL: bf16
     * for bf16 or fp8 checkpoints, f16 for f16 ones, else f32. */
    const char *type;
    /* 1: metadata and vocabulary only, no tensors (config.json and
     * tokenizer.json suffice), as the converter's --vocab-only. */
    int vocab_only;
};

/* What was written. type is static. */
struct lmoe_convert_report {
    int n_tensors;       /* tensors in the file */
    int64_t n_tokens;    /* vocabulary entries; 0 when the folder has no tokenizer.json */
    uint64_t file_bytes; /* size of the file */
    const char *type;    /* the type's name, e.g. "q8_0", "Q4_K_M" */
};

/* Converts folder dir into out_path. opt and report may be NULL. Errors:
 * LMOE_ERR_ARG (not a folder, unknown type), LMOE_ERR_IO, LMOE_ERR_FORMAT
 * (a config or tensor that disagrees), LMOE_ERR_UNSUPPORTED (an
 * architecture or tokenizer the converter has no form for), LMOE_ERR_NOMEM;
 * err gets one line and no file is left at out_path. A folder without
 * tokenizer.json gives a file without vocabulary (tokenizer.ggml.model
 * "none"), which llama.cpp loads but cannot tokenize with. */
int lmoe_convert(const char *dir, const char *out_path, const struct lmoe_convert_options *opt,
                 struct lmoe_convert_report *report, char *err, size_t errlen);

/* ---- Measurement ------------------------------------------------------- */

/* Memory read bandwidth in GB/s (1e9 bytes/s) with n_threads threads
 * streaming a buffer of `bytes` (use well above the last-level cache, e.g.
 * 1 GiB): the denominator of the decode roofline. Best of 5 passes; 0 if
 * the buffer could not be allocated. */
double lmoe_measure_read_bandwidth(int n_threads, size_t bytes);

#ifdef __cplusplus
}
#endif
#endif
