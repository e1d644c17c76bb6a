/*
 * Handcrafted bad inputs (model directories, token files, configs), shared by
 * the unit tests and the command-line tests so both check the same failures.
 */
#ifndef FPTQ_BADFILES_H
#define FPTQ_BADFILES_H

#include "../common/status.h"

/* What the case breaks, i.e. which --option of `fptq eval` it is passed to. */
typedef enum badfile_kind {
    BADFILE_MODEL,   /* CASE_DIR is a model directory (config.json is good) */
    BADFILE_TOKENS,  /* CASE_DIR/BADFILE_TOKENS_NAME is the token file */
    BADFILE_CONFIG,  /* CASE_DIR is a model directory with a bad config.json */
    BADFILE_WEIGHTS  /* CASE_DIR is a model directory that opens, whose values make eval fail */
} badfile_kind;

/* For model cases: which reader call is expected to fail. */
typedef enum badfile_stage {
    BADFILE_AT_OPEN,  /* st_model_open */
    BADFILE_AT_GET,   /* st_model_get(tensor) after a successful open */
    BADFILE_AT_READ   /* st_model_read_f32(tensor, ndim, shape) after a successful open */
} badfile_stage;

#define BADFILE_TOKENS_NAME "tokens.npy"
#define BADFILE_MAX_EXPECT 2

typedef struct badfile_case {
    const char *name;     /* also the directory name of the case */
    badfile_kind kind;
    /* Substrings the error message must contain (case-insensitively);
     * unused slots are NULL. */
    const char *expect[BADFILE_MAX_EXPECT];
    badfile_stage stage;
    const char *tensor;   /* AT_GET / AT_READ: the tensor to fetch */
    int ndim;             /* AT_READ: the shape config.json implies */
    int64_t shape[2];
    /* Writes the case into case_dir, which exists; good_dir is a good model
     * directory (config.json + model.safetensors) to start from. */
    fptq_status (*write)(const char *good_dir, const char *case_dir);
} badfile_case;

const badfile_case *badfiles_cases(size_t *n);
const badfile_case *badfiles_find(const char *name);  /* NULL if unknown */
const char *badfile_kind_name(badfile_kind k);        /* "model", "tokens", "config", "weights" */

/* Creates case_dir (its parent must exist; an existing empty one is fine)
 * and writes the case into it. */
fptq_status badfiles_write(const badfile_case *c, const char *good_dir, const char *case_dir);

/* 1 if every expected substring occurs in msg, ignoring case. */
int badfiles_matches(const badfile_case *c, const char *msg);
/* Case-insensitive strstr; 1 if needle occurs in haystack. */
int badfiles_contains(const char *haystack, const char *needle);

#endif
