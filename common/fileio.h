/*
 * Reading whole input files safely: only regular files are read (a FIFO, a
 * device or a directory is refused before anything blocks on it), with a
 * size cap named by the caller, and every failure names the file.
 */
#ifndef FPTQ_FILEIO_H
#define FPTQ_FILEIO_H

#include "status.h"

#include <stdint.h>
#include <stdio.h>

/* The one cap for JSON files fptq reads whole (config.json, the safetensors
 * index, tokenizer.json, tokenizer_config.json). The largest real
 * tokenizer.json files (Gemma 3, 262k tokens) are about 33 MB. */
#define FPTQ_JSON_MAX_BYTES ((int64_t)64 * 1024 * 1024)

/* Opens `path` for reading without blocking (O_NONBLOCK, then cleared) and
 * refuses anything but a regular file. `what` names the file's role in
 * messages ("config", "tokenizer.json"). On success *fd_out is open and
 * *size_out is its size. */
fptq_status fptq_open_regular(const char *path, const char *what, int *fd_out, int64_t *size_out);

/* fptq_open_regular wrapped in a stdio stream ("rb"). */
fptq_status fptq_fopen_regular(const char *path, const char *what, FILE **f_out, int64_t *size_out);

/* Reads a whole regular file of at most max_bytes into a NUL-terminated
 * buffer (owned by the caller, free()). An empty file is an error when
 * allow_empty is 0. */
fptq_status fptq_read_file(const char *path, const char *what, int64_t max_bytes, int allow_empty,
                           char **buf_out, int64_t *len_out);

#endif
