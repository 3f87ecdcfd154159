/*
 * gguf.h - reader for GGUF model files (versions 2 and 3).
 *
 * The file is memory-mapped and never copied: string values and tensor data
 * are views into the mapping. Every count, length, offset and size is checked
 * against the file before it is used, so a truncated or hostile file yields
 * one error line and LMOE_ERR_FORMAT, never an out-of-bounds read.
 */
#ifndef LMOE_GGUF_H
#define LMOE_GGUF_H

#include <stddef.h>
#include <stdint.h>

/* Metadata value types, as stored in the file. */
enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
};

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

/* A string inside the file: not NUL-terminated. */
struct gguf_str {
    const char *ptr;
    uint64_t len;
};

/* One metadata pair. Scalars are decoded into the union; arrays keep a view
 * of their elements plus, for arrays of strings, the offset of each element
 * so element i is reached in O(1). Nested arrays are validated and kept as
 * raw views only. */
struct gguf_kv {
    char *key; /* owned, NUL-terminated */
    uint32_t type;
    union {
        uint64_t u64; /* every unsigned integer type and bool */
        int64_t i64;  /* every signed integer type */
        double f64;   /* FLOAT32 and FLOAT64 */
        struct gguf_str str;
    } v;
    uint32_t arr_type;
    uint64_t arr_n;
    const uint8_t *arr_data;  /* first element */
    uint64_t *arr_str_off;    /* owned; string arrays only */
};

struct gguf_tensor {
    char *name; /* owned, NUL-terminated */
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the row length; unused dims are 1 */
    uint32_t type;             /* enum lmoe_dtype */
    uint64_t offset;           /* from the start of the data section */
    uint64_t nbytes;
    const void *data; /* view into the mapping */
    /* Set only for checkpoint folders (safetensors.h), zero otherwise: see
     * struct lmoe_tensor for their meaning. data is expert 0's matrix. */
    const void *const *expert_data;
    const float *block_scale;
    const float *const *expert_scale;
    int64_t n_col_blocks;
};

struct gguf_file {
    const uint8_t *base; /* the whole file */
    size_t size;
    int mapped; /* 1: base is an mmap we unmap at close */
    uint32_t version;
    uint64_t n_kv;
    struct gguf_kv *kv;
    uint64_t n_tensors;
    struct gguf_tensor *tensors;
    struct gguf_tensor **by_name; /* owned; tensors sorted by name, for lookups */
    uint32_t alignment;
    uint64_t data_offset;
};

/* Maps and parses a file. On failure *out is NULL and err holds the reason. */
int gguf_open(struct gguf_file **out, const char *path, char *err, size_t errlen);

/* Parses a file already in memory (borrowed; must outlive the result).
 * Used by gguf_open and by the fuzz target. */
int gguf_parse(struct gguf_file **out, const void *buf, size_t size, char *err,
               size_t errlen);

void gguf_close(struct gguf_file *f);

/* Lookups; NULL when absent. */
const struct gguf_kv *gguf_find_kv(const struct gguf_file *f, const char *key);
const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f,
                                           const char *name);

/* Typed getters. Integers convert between integer types when the value
 * fits; floats accept any numeric type. Return 0, or LMOE_ERR_FORMAT when
 * the key is absent or of an incompatible type (message in err). */
int gguf_get_u64(const struct gguf_file *f, const char *key, uint64_t *out,
                 char *err, size_t errlen);
int gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out,
                 char *err, size_t errlen);
int gguf_get_f32(const struct gguf_file *f, const char *key, float *out,
                 char *err, size_t errlen);
int gguf_get_bool(const struct gguf_file *f, const char *key, int *out,
                  char *err, size_t errlen);
int gguf_get_str(const struct gguf_file *f, const char *key,
                 struct gguf_str *out, char *err, size_t errlen);

/* Element i of an array kv (no bounds check beyond LMOE_ASSERT). */
struct gguf_str gguf_arr_str(const struct gguf_kv *kv, uint64_t i);
double gguf_arr_num(const struct gguf_kv *kv, uint64_t i);

/* Name of a metadata value type, for messages. */
const char *gguf_type_name(uint32_t type);

#endif
