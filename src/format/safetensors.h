/*
 * safetensors.h - Hugging Face checkpoints as published: .safetensors files
 * and the folders that hold them.
 *
 * Two layers:
 *
 *   st_*   one .safetensors file: an 8-byte little-endian header length, a
 *          JSON header (parsed with jansson) naming each tensor's dtype,
 *          shape and [begin, end) byte range in the data section that
 *          follows. The file is memory-mapped and never copied; every
 *          length, offset and size is checked before a view is made.
 *
 *   hf_*   a checkpoint folder: config.json plus model.safetensors, or
 *          model.safetensors.index.json and the shards it names. Opening
 *          one builds a struct gguf_file directory - metadata keys as
 *          llama.cpp's converter writes them for the architecture, tensors
 *          under their GGUF names and shapes - whose tensors point into the
 *          shards' mappings, so model/arch.c binds it as it binds a GGUF
 *          file. Where the converter would rearrange bytes, the directory
 *          describes the published layout instead:
 *            - experts stay separate: a 3-D *_exps tensor carries
 *              expert_data, one pointer per expert (gguf.h);
 *            - FP8 weights keep their bytes and point at their
 *              weight_scale_inv blocks (LMOE_DTYPE_F8_E4M3_B128, quant.h);
 *            - DeepSeek's kv_b_proj stays joined (attn_kv_b);
 *            - llama q/k rows are not permuted: the synthetic key
 *              "leanmoe.rope_neox" tells the binder to rotate halves;
 *            - norm weights and biases (vectors) that are not aligned F32
 *              are converted to F32 copies: the only copies made.
 */
#ifndef LMOE_SAFETENSORS_H
#define LMOE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "format/gguf.h"

/* Element types a safetensors header may name. */
enum st_dtype {
    ST_F64, ST_F32, ST_F16, ST_BF16, ST_F8_E4M3, ST_F8_E5M2,
    ST_I64, ST_I32, ST_I16, ST_I8, ST_U64, ST_U32, ST_U16, ST_U8, ST_BOOL,
    ST_DTYPE_COUNT
};

#define ST_MAX_DIMS 8
/* Largest header we read (the format's reference reader uses 100 MB). */
#define ST_MAX_HEADER ((uint64_t)100 << 20)

struct st_tensor {
    char *name; /* owned */
    int dtype;  /* enum st_dtype */
    int n_dims;
    int64_t shape[ST_MAX_DIMS]; /* outermost first, as in the file */
    uint64_t begin, end;        /* byte range within the data section */
    const void *data;           /* view into the file */
};

struct st_file {
    const uint8_t *base; /* the whole file */
    size_t size;
    int mapped;           /* 1: base is an mmap st_close unmaps */
    uint64_t data_start;  /* 8 + header length */
    size_t n_tensors;
    struct st_tensor *tensors; /* sorted by name */
};

/* Parses a file already in memory (borrowed; must outlive the result).
 * label names the file in messages. Checks: the header length against the
 * file, the JSON, every entry's dtype, shape and offsets, that the byte
 * count equals the element count times the dtype size, that no two
 * tensors overlap, and that no name appears twice. */
int st_parse(struct st_file **out, const void *buf, size_t size, const char *label, char *err,
             size_t errlen);
/* Maps and parses path. */
int st_open(struct st_file **out, const char *path, char *err, size_t errlen);
void st_close(struct st_file *f);
const struct st_tensor *st_find(const struct st_file *f, const char *name);
const char *st_dtype_name(int dtype);
int st_dtype_size(int dtype);

/* ---- Checkpoint folders ------------------------------------------------ */

struct hf_model;

/* 1 if path is a directory. */
int hf_is_dir(const char *path);

/* Opens a checkpoint folder (see above). On failure *out is NULL and err
 * holds one line naming the file, tensor or config field. */
int hf_model_open(struct hf_model **out, const char *dir, char *err, size_t errlen);
/* The same from config.json alone: the metadata, no tensors, no shards
 * needed (a vocabulary-only conversion). */
int hf_model_open_config(struct hf_model **out, const char *dir, char *err, size_t errlen);
void hf_model_close(struct hf_model *m);

/* The directory in GGUF terms. Borrowed, valid until hf_model_close; do
 * not gguf_close it. */
struct gguf_file *hf_model_gguf(const struct hf_model *m);

/* The Hugging Face name a GGUF tensor of the directory came from (for an
 * expert tensor, expert 0's), or NULL. */
const char *hf_model_source_name(const struct hf_model *m, const char *gguf_name);

#endif
