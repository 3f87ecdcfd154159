/*
 * cmd_quantize.c - `leanmoe quantize`: a GGUF file of F32/F16/BF16 weights
 * rewritten with quantized ones, as llama-quantize does it.
 *
 *   leanmoe quantize model-f16.gguf model-q4_k_m.gguf Q4_K_M [--pure] [-t N]
 *
 * TYPE is a llama-quantize file type: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0
 * Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K (any case).
 * Each tensor gets the type llama-quantize would give it (below); --pure
 * gives every quantizable tensor the file type's base type instead, as
 * llama-quantize --pure does, and the bare names Q3_K, Q4_K and Q5_K mean
 * `--pure Q3_K_M`, `--pure Q4_K_M` and `--pure Q5_K_M`.
 *
 * Per-tensor choices are llama-quantize's (src/quant/mix.c lists them; the
 * same rules serve `leanmoe convert --type Q4_K_M`).
 *
 * The output keeps every metadata pair of the input, sets
 * general.file_type to the llama.cpp file type id and
 * general.quantization_version to 2, drops split.* keys, and lists tensors
 * in llama-quantize's order (by layer, then by name). Tensors are converted
 * chunk by chunk while the file is written, on -t threads; an input tensor
 * that is already quantized is copied if its type stays, and refused if it
 * would have to change (requantizing loses precision twice).
 *
 * This command reaches below leanmoe.h, to the GGUF reader and writer, the
 * quantizers and the thread pool: it is a file tool, not an engine client.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "format/gguf.h"
#include "format/gguf_write.h"
#include "quant/mix.h"
#include "quant/quant.h"
#include "threadpool.h"

/* general.quantization_version that llama.cpp writes (GGML_QNT_VERSION). */
#define QUANT_VERSION 2

/* ---- Reading the model's shape from metadata ------------------------------ */

/* A u32 key, or element 0 of an array key (per-layer head counts); def if
 * absent. */
static uint32_t meta_u32(const struct gguf_file *f, const char *arch, const char *suffix, uint32_t def) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    const struct gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return def;
    if (kv->type == GGUF_TYPE_ARRAY) {
        if (kv->arr_n == 0 || kv->arr_type == GGUF_TYPE_STRING || kv->arr_type == GGUF_TYPE_ARRAY) return def;
        double v = gguf_arr_num(kv, 0);
        return v >= 0 && v < 4294967296.0 ? (uint32_t)v : def;
    }
    uint32_t v;
    char err[128];
    return gguf_get_u32(f, key, &v, err, sizeof err) ? def : v;
}

/* ---- Converting tensor data while the file is written --------------------- */

/* Elements one worker converts per step: 256 super-blocks. */
#define QUANT_PIECE_ELEMS (256 * LMOE_QK_K)

struct out_tensor {
    const struct gguf_tensor *src;
    uint32_t type; /* output type */
};

struct convert_job {
    struct out_tensor *ot; /* indexed by the writer's tensor index */
    struct lmoe_pool *pool;
    float *scratch; /* QUANT_PIECE_ELEMS floats per thread */
    /* the chunk being filled */
    const struct out_tensor *cur;
    uint8_t *dst;
    int64_t block0; /* first output block of the chunk */
};

/* Converts output blocks [begin, end) of the current chunk: source elements
 * to f32 through the source type's dequantizer, then the quantizer. */
static void convert_range(void *arg, int begin, int end, int ith) {
    struct convert_job *j = arg;
    const struct lmoe_dtype_traits *st = lmoe_dtype_get(j->cur->src->type);
    const struct lmoe_dtype_traits *dt = lmoe_dtype_get(j->cur->type);
    float *buf = j->scratch + (size_t)ith * QUANT_PIECE_ELEMS;
    const int per_piece = QUANT_PIECE_ELEMS / dt->block_size;
    for (int b = begin; b < end; b += per_piece) {
        const int nb = end - b < per_piece ? end - b : per_piece;
        const int64_t e0 = (j->block0 + b) * dt->block_size, ne = (int64_t)nb * dt->block_size;
        /* Float sources have block size 1, so any element offset is a block. */
        st->dequantize((const uint8_t *)j->cur->src->data + e0 * st->type_size, buf, ne);
        lmoe_quantize(j->cur->type, buf, j->dst + (size_t)b * dt->type_size, ne);
    }
}

static int fill_tensor(void *ctx, int64_t index, void *dst, uint64_t offset, size_t nbytes) {
    struct convert_job *j = ctx;
    j->cur = &j->ot[index];
    const struct lmoe_dtype_traits *dt = lmoe_dtype_get(j->cur->type);
    j->dst = dst;
    j->block0 = (int64_t)(offset / (uint64_t)dt->type_size);
    const int n_blocks = (int)(nbytes / (size_t)dt->type_size);
    const int min_chunk = dt->block_size >= LMOE_QK_K ? 16 : 128;
    lmoe_pool_for(j->pool, n_blocks, min_chunk, convert_range, j);
    return 0;
}

/* llama-quantize's tensor order (lmoe_mix_cmp_names). */
static int cmp_tensor_order(const void *a, const void *b) {
    const struct gguf_tensor *x = *(const struct gguf_tensor *const *)a, *y = *(const struct gguf_tensor *const *)b;
    return lmoe_mix_cmp_names(x->name, y->name);
}

static int is_float_type(uint32_t t) { return t == LMOE_DTYPE_F32 || t == LMOE_DTYPE_F16 || t == LMOE_DTYPE_BF16; }

int cmd_quantize(const struct args *a) {
    const char *in = a->text ? a->text : a->model;
    const char *out = a->n_pos > 0 ? a->pos[0] : a->out;
    const char *type = a->n_pos > 1 ? a->pos[1] : NULL;
    if (!in || !out || !type || a->n_pos > 2) {
        fprintf(stderr, "leanmoe: usage: leanmoe quantize IN.gguf OUT.gguf TYPE [--pure] [-t N]\n");
        return 1;
    }
    const struct lmoe_ftype *fd = lmoe_ftype_find(type);
    if (!fd) {
        fprintf(stderr, "leanmoe: unknown quantization type '%s' (" LMOE_FTYPE_NAMES ")\n", type);
        return 1;
    }
    char err[512];
    struct gguf_file *f;
    if (gguf_open(&f, in, err, sizeof err)) {
        fprintf(stderr, "leanmoe: %s\n", err);
        return 1;
    }
    int rc = 1;
    struct gguf_writer *w = NULL;
    struct lmoe_pool *pool = NULL;
    struct convert_job job = {0};
    const struct gguf_tensor **order = malloc(sizeof(*order) * (f->n_tensors ? f->n_tensors : 1));
    job.ot = malloc(sizeof(*job.ot) * (f->n_tensors ? f->n_tensors : 1));
    if (!order || !job.ot || gguf_writer_open(&w)) {
        fprintf(stderr, "leanmoe: out of memory\n");
        goto done;
    }

    /* The model's shape, for the mixes. */
    char arch[128] = "";
    struct gguf_str s;
    if (!gguf_get_str(f, "general.architecture", &s, err, sizeof err))
        snprintf(arch, sizeof arch, "%.*s", (int)(s.len < 127 ? s.len : 127), s.ptr);
    struct lmoe_mix p;
    const uint32_t n_head = meta_u32(f, arch, "attention.head_count", 1);
    lmoe_mix_init(&p, fd, a->quant_pure, arch, (int)meta_u32(f, arch, "block_count", 0),
                  (int)meta_u32(f, arch, "expert_count", 0), (int)n_head,
                  (int)meta_u32(f, arch, "attention.head_count_kv", n_head));
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        order[i] = &f->tensors[i];
        lmoe_mix_count(&p, f->tensors[i].name);
    }
    qsort(order, f->n_tensors, sizeof(*order), cmp_tensor_order);

    /* Metadata: everything, then the file type. */
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const char *k = f->kv[i].key;
        if (!strcmp(k, "split.no") || !strcmp(k, "split.count") || !strcmp(k, "split.tensors.count")) continue;
        gguf_writer_copy_kv(w, &f->kv[i]);
    }
    /* Set as llama.cpp does: removed, then appended at the end. */
    gguf_writer_del_kv(w, "general.quantization_version");
    gguf_writer_del_kv(w, "general.file_type");
    gguf_writer_set_u32(w, "general.quantization_version", QUANT_VERSION);
    gguf_writer_set_u32(w, "general.file_type", (uint32_t)fd->ftype);

    /* Tensors: choose each type, in llama-quantize's order. */
    uint64_t bytes_in = 0, bytes_out = 0;
    int n_converted = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = order[i];
        uint32_t fell_back;
        const uint32_t nt = lmoe_mix_type(&p, t->name, t->n_dims, t->ne, t->type, &fell_back);
        if (nt == LMOE_DTYPE_COUNT) {
            fprintf(stderr, "leanmoe: %s: cannot tell its layer (blk.N.) in a %d-expert model\n", t->name,
                    p.n_expert);
            goto done;
        }
        if (fell_back != LMOE_DTYPE_COUNT)
            fprintf(stderr, "leanmoe: %s: %" PRId64 " columns are not a multiple of %d (%s): using %s\n", t->name,
                    t->ne[0], lmoe_dtype_get(fell_back)->block_size, lmoe_dtype_get(fell_back)->name,
                    lmoe_dtype_get(nt)->name);
        if (nt != t->type && !is_float_type(t->type)) {
            fprintf(stderr, "leanmoe: %s is %s already; requantizing to %s is not supported\n", t->name,
                    lmoe_dtype_get(t->type) ? lmoe_dtype_get(t->type)->name : "an unknown type",
                    lmoe_dtype_get(nt)->name);
            goto done;
        }
        const int64_t idx = gguf_writer_add_tensor(w, t->name, nt, t->n_dims, t->ne, nt == t->type ? t->data : NULL);
        if (idx < 0) break; /* the writer's sticky error is reported below */
        job.ot[idx].src = t;
        job.ot[idx].type = nt;
        bytes_in += t->nbytes;
        bytes_out += gguf_writer_tensor_nbytes(w, idx);
        n_converted += nt != t->type;
        fprintf(stderr, "[%4" PRIu64 "/%4" PRIu64 "] %-36s %-5s -> %s\n", i + 1, f->n_tensors, t->name,
                lmoe_dtype_get(t->type) ? lmoe_dtype_get(t->type)->name : "?", lmoe_dtype_get(nt)->name);
    }
    if (gguf_writer_status(w)) {
        fprintf(stderr, "leanmoe: %s\n", gguf_writer_error(w));
        goto done;
    }

    const int n_threads = a->threads > 0 ? a->threads : lmoe_physical_cores();
    pool = lmoe_pool_open(n_threads);
    job.pool = pool;
    job.scratch = malloc(sizeof(float) * QUANT_PIECE_ELEMS * (size_t)(n_threads > 0 ? n_threads : 1));
    if (!pool || !job.scratch) {
        fprintf(stderr, "leanmoe: out of memory\n");
        goto done;
    }
    /* Whole pieces per fill call keep every thread busy on big tensors. */
    gguf_writer_set_chunk_size(w, (size_t)8 << 20);
    if (gguf_writer_write(w, out, fill_tensor, &job)) {
        fprintf(stderr, "leanmoe: %s\n", gguf_writer_error(w));
        goto done;
    }
    fprintf(stderr, "leanmoe: %s: %d of %" PRIu64 " tensors converted, file type %s (%d), %.2f MiB -> %.2f MiB\n", out,
            n_converted, f->n_tensors, fd->name, fd->ftype, bytes_in / 1048576.0, bytes_out / 1048576.0);
    rc = 0;
done:
    free(job.scratch);
    lmoe_pool_close(pool);
    gguf_writer_close(w);
    free(job.ot);
    free(order);
    gguf_close(f);
    return rc;
}
