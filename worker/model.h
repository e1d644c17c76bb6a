/*
 * A Llama-family model as the worker sees it: the config, the mmap'd
 * weights, and one decoder layer at a time converted to fp32. The forward
 * pass is layer-major: every sample of a batch goes through layer 0, then
 * layer 1, ..., so that only one layer's weights are ever in memory; this is
 * the shape calibration uses too.
 */
#ifndef FPTQ_MODEL_H
#define FPTQ_MODEL_H

#include "../io/checkpoint.h"
#include "../io/config.h"
#include "../io/safetensors.h"
#include "../kernels/backend.h"
#include "../kernels/quant.h"

/* A model comes from a Hugging Face directory (st) or from an fptq
 * checkpoint (ck): exactly one of the two is set. */
typedef struct fptq_model {
    llama_config cfg;
    st_model *st;
    ckpt *ck;
    char dir[4096];
} fptq_model;

/* The linears of a decoder layer, in the order they run. */
typedef enum {
    LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, LIN_COUNT
} fptq_linear_id;

const char *fptq_linear_name(fptq_linear_id id);       /* "self_attn.q_proj", ... */
void fptq_linear_shape(const llama_config *c, fptq_linear_id id, int64_t *out, int64_t *in);

typedef struct fptq_layer_weights {
    float *attn_norm, *mlp_norm;       /* [hidden] */
    float *w[LIN_COUNT];               /* [out, in] fp32 */
    float *bias[LIN_COUNT];            /* [out] or NULL when the model has none */
    act_quant act[LIN_COUNT];          /* fake-quantization of each linear's input */
} fptq_layer_weights;

/* Linears that read the same input, in true-sequential order. */
typedef enum { LGROUP_QKV, LGROUP_O, LGROUP_GATE_UP, LGROUP_DOWN, LGROUP_COUNT } fptq_linear_group;
/* The linears of group g: first and count (they are consecutive ids). */
void fptq_linear_group_members(fptq_linear_group g, fptq_linear_id *first, int *count);
const char *fptq_linear_group_name(fptq_linear_group g);
/* A layer's extents: the widest linear input, the largest weight matrix
 * (elements), and each group's input width (group_cols may be NULL). */
void fptq_layer_extents(const llama_config *c, int64_t *max_cols, int64_t *max_w, int64_t *group_cols);

/* Opens DIR/config.json and the safetensors of DIR, and checks (headers
 * only, no weight is read) that every tensor the config implies is present
 * with the shape it implies: a model whose config and tensors disagree is
 * refused before any work starts. */
fptq_status fptq_model_open(const char *dir, fptq_model *m);
void fptq_model_close(fptq_model *m);

fptq_status fptq_layer_alloc(const llama_config *c, fptq_layer_weights *lw);
void fptq_layer_free(fptq_layer_weights *lw);
/* The same in the backend's page-locked host memory (be->host_alloc), from
 * which uploads run at the bus rate and overlap the backend's work. */
fptq_status fptq_layer_alloc_host(const fptq_backend *be, const llama_config *c, fptq_layer_weights *lw);
void fptq_layer_free_host(const fptq_backend *be, fptq_layer_weights *lw);
/* Opens an fptq checkpoint as a model (its config, shared tensors, and
 * layers dequantized on load). */
fptq_status fptq_model_open_checkpoint(const char *dir, fptq_model *m);

/* Layer `layer` in fp32 into lw (allocated by fptq_layer_alloc): converted
 * from safetensors, or dequantized from the checkpoint with its activation
 * quantization. */
fptq_status fptq_layer_load(const fptq_model *m, int64_t layer, fptq_layer_weights *lw);
/* A stored layer in fp32: weights dequantized, folded norms, biases, act quant.
 * Resume, eval and the quantizer's own hand-off all go through this one
 * function, so a layer's output is the same bits whichever path made it. */
fptq_status fptq_layer_from_ckpt(const llama_config *c, const ckpt_layer *cl, fptq_layer_weights *lw);

/* Rows [row0, row0 + n) of the embedding / of the head (lm_head, or the
 * embedding when tied), and the final norm weight, in fp32. */
fptq_status fptq_model_embed_rows(const fptq_model *m, int64_t row0, int64_t n, float *dst);
fptq_status fptq_model_head_rows(const fptq_model *m, int64_t row0, int64_t n, float *dst);
fptq_status fptq_model_final_norm(const fptq_model *m, float *dst);

rope_params fptq_rope_params(const llama_config *c);

#endif
