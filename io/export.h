/*
 * Export of a finished fptq checkpoint to a Hugging Face model directory
 * that inference engines load: compressed-tensors (what vLLM loads:
 * pack-quantized, int-quantized, float-quantized), the GPTQ v1 layout
 * (AutoGPTQ / GPTQModel, checkpoint_format "gptq"), or dequantized F32
 * weights (any loader; the reference the export tests compare against).
 * One decoder layer is in memory at a time; shards hold at most
 * max_shard_bytes of tensor data each, tied by model.safetensors.index.json.
 */
#ifndef FPTQ_EXPORT_H
#define FPTQ_EXPORT_H

#include "../common/status.h"

#include <stdint.h>

typedef enum { EXPORT_COMPRESSED_TENSORS = 0, EXPORT_GPTQ, EXPORT_DEQUANTIZED } export_format;

/* dtype of the weight scales written: F32 (fptq's own, so every client
 * dequantizes to exactly fptq's weights; engines cast them to their compute
 * dtype on load), the input model's dtype, F16 or BF16 (rounded to nearest
 * even; weights then dequantize with the rounded scales). */
typedef enum { EXPORT_SCALES_F32 = 0, EXPORT_SCALES_MODEL, EXPORT_SCALES_F16, EXPORT_SCALES_BF16 } export_scale_dtype;

#define EXPORT_DEFAULT_SHARD_BYTES 5000000000LL   /* 5 GB, as Hugging Face counts */

typedef struct export_opts {
    export_format format;
    export_scale_dtype scales;
    int64_t max_shard_bytes;      /* 0: EXPORT_DEFAULT_SHARD_BYTES */
    const char *tokenizer_dir;    /* optional: tokenizer and generation files copied from here */
    int progress;                 /* 0 quiet, 1 a line per shard */
} export_opts;

typedef struct export_result {
    int64_t layers, tensors, shards, data_bytes;
    int64_t scales_rounded;       /* scales whose value changed in the requested dtype */
    double max_scale_rel_change;  /* largest |rounded - fptq| / fptq over them */
    int desc_act;                 /* GPTQ: some g_idx is not c / group_size */
    double seconds;
} export_result;

const char *export_format_name(export_format f);          /* "compressed-tensors", "gptq", "dequantized" */
int export_format_parse(const char *s, export_format *f); /* 0 ok, -1 unknown */
int export_scale_dtype_parse(const char *s, export_scale_dtype *d); /* f32, model, f16, bf16 */

/* Writes out_dir (which must not exist; its parents are created) from the
 * checkpoint at ckpt_dir, every layer of which must be done. A scheme the
 * format cannot hold is refused before anything is written, with a message
 * saying why and which format holds it; a property only the data shows (a
 * GPTQ zero point of 0) is refused when met, and what was written is removed. */
fptq_status fptq_export(const char *ckpt_dir, const char *out_dir, const export_opts *o, export_result *r);

/* ---- building blocks, public for the unit tests ---------------------------- */

/* int32 words for n values of `bits` bits packed densely: ceil(n * bits / 32). */
int64_t export_packed_words(int64_t n, int bits);
/* Value i (vals[i * stride], masked to `bits`) at bit i * bits of the
 * little-endian concatenation of the words, least significant bits first; a
 * value may straddle two words (3 bits: 32 values in 3 words). This is
 * compressed-tensors' pack_to_int32 and the GPTQ v1 qweight / qzeros layout
 * (both identical to 32 / bits values per word for 2, 4 and 8 bits). */
void export_pack_dense(const uint8_t *vals, int64_t n, int64_t stride, int bits, uint32_t *words);
/* fp32 to bf16 / fp16, round to nearest even (fp16: overflow to infinity,
 * gradual underflow); NaN stays NaN. */
uint16_t export_f32_to_bf16(float x);
uint16_t export_f32_to_f16(float x);

#endif
