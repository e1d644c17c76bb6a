/*
 * safetensors reader: one mmap'd file, or a directory of shards tied by
 * model.safetensors.index.json. Every header field is checked before use;
 * tensors are converted to fp32 one at a time, so no more than one tensor
 * (or one layer) is ever copied into memory.
 */
#ifndef FPTQ_SAFETENSORS_H
#define FPTQ_SAFETENSORS_H

#include "../common/status.h"

#define ST_MAX_DIMS 8

typedef enum st_dtype {
    ST_F64, ST_F32, ST_F16, ST_BF16,
    ST_I64, ST_I32, ST_I16, ST_I8,
    ST_U64, ST_U32, ST_U16, ST_U8,
    ST_BOOL, ST_F8_E4M3, ST_F8_E5M2,
    ST_DTYPE_COUNT
} st_dtype;

const char *st_dtype_name(st_dtype d);      /* "F32", "BF16", ... */
size_t st_dtype_size(st_dtype d);           /* bytes per element */
/* Parses a safetensors dtype string; returns 0 and sets *d, or -1 if unknown. */
int st_dtype_parse(const char *s, st_dtype *d);

typedef struct st_tensor {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const unsigned char *data;   /* into the mapping; may be unaligned */
    size_t nbytes;
    const char *path;            /* the file that holds it */
} st_tensor;

typedef struct st_file st_file;   /* one mmap'd .safetensors file */
typedef struct st_model st_model; /* a model directory (one file or shards) */

/* Opens and validates one .safetensors file. Errors name the file and the
 * problem: file shorter than 8 bytes, header length past the end of file,
 * header not JSON, unknown dtype, bad shape, data_offsets out of range or
 * overlapping, shape x dtype size != byte range, duplicate names. */
fptq_status st_file_open(const char *path, st_file **out);
void st_file_close(st_file *f);
size_t st_file_count(const st_file *f);
const st_tensor *st_file_tensor(const st_file *f, size_t i);
const st_tensor *st_file_find(const st_file *f, const char *name); /* NULL if absent */

/* Opens a model directory: DIR/model.safetensors.index.json if present
 * (every shard it names is opened and validated; a name listed in the index
 * but absent from its shard, or a shard file that is missing, is an error),
 * otherwise DIR/model.safetensors. */
fptq_status st_model_open(const char *dir, st_model **out);
void st_model_close(st_model *m);
const char *st_model_dir(const st_model *m);
const st_tensor *st_model_find(const st_model *m, const char *name); /* NULL if absent */
/* All tensors of all shards, in name order (to enumerate a model's weights). */
size_t st_model_count(const st_model *m);
const st_tensor *st_model_tensor(const st_model *m, size_t i);  /* NULL if i >= count */
/* Like st_model_find, but a missing tensor is an error naming it and the directory. */
fptq_status st_model_get(const st_model *m, const char *name, const st_tensor **out);

/* Converts a F32 / F16 / BF16 tensor to fp32 into dst, which holds dst_numel
 * floats; a different element count or another dtype is an error naming the tensor. */
fptq_status st_tensor_to_f32(const st_tensor *t, float *dst, int64_t dst_numel);

/* Converts rows [row0, row0 + nrows) of a 2-D (or higher: rows are the
 * first dimension) F32 / F16 / BF16 tensor to fp32; lets big matrices such
 * as the LM head stream through memory a block at a time. */
fptq_status st_tensor_rows_to_f32(const st_tensor *t, int64_t row0, int64_t nrows, float *dst);

/* Reads tensor `name` as fp32 into dst after checking that its shape is
 * exactly shape[0..ndim) (error names tensor, file, actual and expected shape). */
fptq_status st_model_read_f32(const st_model *m, const char *name, int ndim,
                              const int64_t *shape, float *dst);

/* fp16 / bf16 bit patterns to fp32 (exact). */
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t b);

#endif
