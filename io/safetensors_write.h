/*
 * safetensors writer: the header (names, dtypes, shapes, offsets) is laid
 * out first from a list of tensors known in advance, then their bytes are
 * streamed in that order, in pieces of any size, so a shard of several GB
 * is written with no more than a block of rows in memory.
 */
#ifndef FPTQ_SAFETENSORS_WRITE_H
#define FPTQ_SAFETENSORS_WRITE_H

#include "safetensors.h"

typedef struct st_wtensor {
    const char *name;
    st_dtype dtype;
    int ndim;                  /* 0 (scalar) .. 4 */
    int64_t shape[4];
} st_wtensor;

/* Bytes of a tensor: product of its extents times the dtype's size. */
int64_t st_wtensor_nbytes(const st_wtensor *t);

typedef struct st_writer st_writer;

/* Creates `path` (an existing file is refused) and writes the header:
 * "__metadata__" from meta, n_meta (key, value) string pairs (may be 0), then
 * the tensors in the order given, data offsets contiguous from 0. The header
 * is padded with spaces to a multiple of 8 bytes. Names must be unique. */
fptq_status st_writer_open(const char *path, const st_wtensor *t, size_t n, const char *const *meta,
                           size_t n_meta, st_writer **out);
/* Appends nbytes of tensor data (the tensors' bytes, in order, little-endian);
 * more than the header announced is an error. */
fptq_status st_writer_write(st_writer *w, const void *data, size_t nbytes);
/* Index of the tensor the next byte belongs to (n when all are written). */
size_t st_writer_current(const st_writer *w);
/* Checks every announced byte was written, fsyncs and closes; frees w. */
fptq_status st_writer_close(st_writer *w);
/* Closes and frees after a failure; the file is left for the caller to remove. */
void st_writer_abort(st_writer *w);

#endif
