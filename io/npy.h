/*
 * .npy reader (format versions 1.0-3.0, little-endian, C order) and token
 * loading for calibration and evaluation: int32, int64, uint16, uint32 as a
 * 1-D stream or a 2-D samples x seq_len array.
 */
#ifndef FPTQ_NPY_H
#define FPTQ_NPY_H

#include "../common/status.h"

#define NPY_MAX_DIMS 8

typedef enum npy_dtype { NPY_I32, NPY_I64, NPY_U16, NPY_U32, NPY_F32, NPY_F64, NPY_U8, NPY_I8 } npy_dtype;

typedef struct npy_array {
    npy_dtype dtype;
    int ndim;
    int64_t shape[NPY_MAX_DIMS];
    int64_t numel;
    size_t elem_size;
    void *data;          /* owned, numel * elem_size bytes, native byte order */
} npy_array;

/* Reads a whole .npy file; errors name the file and the problem (bad magic,
 * header, unsupported dtype or Fortran order, data size != file size). */
fptq_status npy_load(const char *path, npy_array *out);
void npy_free(npy_array *a);

/* Writes a C-order little-endian .npy (used by tests and benchmarks). */
fptq_status npy_save(const char *path, npy_dtype dtype, int ndim, const int64_t *shape,
                     const void *data);

typedef struct fptq_tokens {
    int32_t *ids;        /* owned, n_tokens entries */
    int64_t n_tokens;
    int64_t n_rows;      /* 1 for a 1-D stream */
    int64_t row_len;     /* n_tokens for a 1-D stream */
} fptq_tokens;

/* Loads token ids from a .npy of int32/int64/uint16/uint32, 1-D or 2-D.
 * Every id must lie in [0, vocab_size): the first that does not is an error
 * naming the file and its position (flat index, and row/column for 2-D). */
fptq_status tokens_load(const char *path, int64_t vocab_size, fptq_tokens *out);
void tokens_free(fptq_tokens *t);

#endif
