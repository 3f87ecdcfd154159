/*
 * gguf_write.h - writer for GGUF version 3 files.
 *
 * A writer collects metadata pairs and tensor infos in memory, then writes
 * the file in one pass: header, metadata, tensor infos, padding, and each
 * tensor's data padded to general.alignment (32 unless that key is set).
 * Tensor data comes either from memory (a borrowed pointer given when the
 * tensor is added) or from a callback that fills the file chunk by chunk,
 * so a file of many gigabytes is written without holding it in memory.
 *
 * The file is written under a temporary name beside the final one and
 * renamed at the end: an interrupted or failed run never leaves a truncated
 * file under the final name.
 *
 * Errors are sticky: the first failing call stores a one-line message in
 * the writer and every later call (write included) returns the same code,
 * so a long run of setters can be checked once. Usage:
 *
 *   struct gguf_writer *w;
 *   if (gguf_writer_open(&w)) ...;                      // LMOE_ERR_NOMEM
 *   gguf_writer_set_str(w, "general.architecture", "llama");
 *   gguf_writer_set_u32(w, "llama.block_count", 2);
 *   int64_t ne[2] = {4096, 32000};
 *   gguf_writer_add_tensor(w, "token_embd.weight", LMOE_DTYPE_Q8_0, 2, ne, NULL);
 *   if (gguf_writer_write(w, "out.gguf", my_fill, my_ctx))
 *       fprintf(stderr, "%s\n", gguf_writer_error(w));
 *   gguf_writer_close(w);
 */
#ifndef LMOE_GGUF_WRITE_H
#define LMOE_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "format/gguf.h"

struct gguf_writer;

/* Fills dst with bytes [offset, offset + nbytes) of tensor `tensor_index`'s
 * data (the index add_tensor returned). offset and nbytes are whole blocks
 * of the tensor's type; a tensor is filled in order, in chunks of at most
 * the chunk size. Returns 0, or a negative LMOE_ERR_* to stop the write. */
typedef int (*gguf_fill_fn)(void *ctx, int64_t tensor_index, void *dst,
                            uint64_t offset, size_t nbytes);

/* Chunk size of streamed tensor data unless gguf_writer_set_chunk_size. */
#define GGUF_WRITE_CHUNK_DEFAULT ((size_t)32 << 20)

/* A new, empty writer: allocates, free with gguf_writer_close. Returns 0 or
 * LMOE_ERR_NOMEM. */
int gguf_writer_open(struct gguf_writer **out);
void gguf_writer_close(struct gguf_writer *w);

/* The first error's message ("" while none), and its code (0 while none).
 * Borrowed, valid until gguf_writer_close. */
const char *gguf_writer_error(const struct gguf_writer *w);
int gguf_writer_status(const struct gguf_writer *w);

/* Metadata setters. A key that is already present gets the new value (and
 * type) in its old position; a new key is appended. Keys must be non-empty,
 * at most 65535 bytes and free of control characters (LMOE_ERR_ARG). */
int gguf_writer_set_u8(struct gguf_writer *w, const char *key, uint8_t v);
int gguf_writer_set_i8(struct gguf_writer *w, const char *key, int8_t v);
int gguf_writer_set_u16(struct gguf_writer *w, const char *key, uint16_t v);
int gguf_writer_set_i16(struct gguf_writer *w, const char *key, int16_t v);
int gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v);
int gguf_writer_set_u64(struct gguf_writer *w, const char *key, uint64_t v);
int gguf_writer_set_i64(struct gguf_writer *w, const char *key, int64_t v);
int gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v);
int gguf_writer_set_f64(struct gguf_writer *w, const char *key, double v);
int gguf_writer_set_bool(struct gguf_writer *w, const char *key, int v);
/* A NUL-terminated string; gguf_writer_set_str_n takes any len bytes. */
int gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *v);
int gguf_writer_set_str_n(struct gguf_writer *w, const char *key, const char *v,
                          uint64_t len);

/* An array of n numbers (or bools, one byte each) of elem_type, given as
 * their little-endian bytes, n * element size of them; copied. */
int gguf_writer_set_arr_num(struct gguf_writer *w, const char *key,
                            uint32_t elem_type, const void *data, uint64_t n);
/* An array of n NUL-terminated strings; copied. */
int gguf_writer_set_arr_str(struct gguf_writer *w, const char *key,
                            const char *const *v, uint64_t n);

/* Copies a pair read by gguf_open/gguf_parse byte for byte, whatever its
 * type (nested arrays included). The reader must still be open. */
int gguf_writer_copy_kv(struct gguf_writer *w, const struct gguf_kv *kv);

/* Removes a key if present; returns 1 if it was, 0 if not. */
int gguf_writer_del_kv(struct gguf_writer *w, const char *key);

/* Number of pairs so far. */
int64_t gguf_writer_n_kv(const struct gguf_writer *w);

/* Adds a tensor (an enum lmoe_dtype type, 1..4 dims, ne[0] the row length,
 * a whole number of blocks). data is the whole tensor's bytes, borrowed
 * until the write, or NULL to have the fill callback stream it. Returns
 * the tensor's index (0, 1, ... in file order) or a negative error:
 * LMOE_ERR_ARG for a duplicate name or a bad shape, LMOE_ERR_UNSUPPORTED
 * for an unknown type. */
int64_t gguf_writer_add_tensor(struct gguf_writer *w, const char *name,
                               uint32_t type, int n_dims, const int64_t *ne,
                               const void *data);

/* Bytes of tensor i's data (without padding); 0 for a bad index. */
uint64_t gguf_writer_tensor_nbytes(const struct gguf_writer *w, int64_t i);

/* Largest piece of streamed data per fill call (rounded down to whole
 * blocks, at least one block). */
void gguf_writer_set_chunk_size(struct gguf_writer *w, size_t bytes);

/* Writes the file to path (through path.tmp.PID, then rename). fill may be
 * NULL when every tensor has its data in memory. Returns 0, LMOE_ERR_IO
 * (cannot create, disk full, rename failed), LMOE_ERR_FORMAT (a bad
 * general.alignment), LMOE_ERR_NOMEM, LMOE_ERR_ARG (a streamed tensor
 * without a fill), or fill's own error. After a success the writer may be
 * written again (to another path, say); an error is sticky like any other. */
int gguf_writer_write(struct gguf_writer *w, const char *path, gguf_fill_fn fill,
                      void *ctx);

/* Bytes the file will take (header, padding and data), or 0 after an
 * error. */
uint64_t gguf_writer_file_size(struct gguf_writer *w);

#endif
