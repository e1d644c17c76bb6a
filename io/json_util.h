/*
 * Checks on parsed JSON shared by the readers of config.json, the safetensors
 * index and header, and tokenizer.json. cJSON keeps every member of an object,
 * and its lookups find the first of two equal keys, where Python's json (and so
 * transformers and vLLM) keeps the last: a duplicate key means fptq and
 * Hugging Face would read different models, so it is refused.
 */
#ifndef FPTQ_JSON_UTIL_H
#define FPTQ_JSON_UTIL_H

#include "../common/status.h"

#include <cjson/cJSON.h>

/* FPTQ_ERR_FORMAT when any object in the tree, at any depth, has two members
 * with the same key; the message names `src` (a path), the key and its JSON
 * path ("rope_scaling.factor", "x[1].a"). O(n log n) in the members of each
 * object. */
fptq_status json_check_unique_keys(const cJSON *root, const char *src);

#endif
