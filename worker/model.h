/*
 * A Llama-family model as the worker sees it: the config, the mmap'd
 * weights, and one decoder layer at a time converted to fp32. The forward
 * pass is layer-major: every sample of a batch goes through layer 0, then
 * layer 1, ..., so that only one layer's weights are ever in memory; this is
 * the shape calibration uses too.
 */
#ifndef FPTQ_MODEL_H
#define FPTQ_MODEL_H

#include "../io/config.h"
#include "../io/safetensors.h"
#include "../kernels/backend.h"

typedef struct fptq_model {
    llama_config cfg;
    st_model *st;
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
} fptq_layer_weights;

/* Opens DIR/config.json and the safetensors of DIR, and checks (headers
 * only, no weight is read) that every tensor the config implies is present
 * with the shape it implies: a model whose config and tensors disagree is
 * refused before any work starts. */
fptq_status fptq_model_open(const char *dir, fptq_model *m);
void fptq_model_close(fptq_model *m);

fptq_status fptq_layer_alloc(const llama_config *c, fptq_layer_weights *lw);
void fptq_layer_free(fptq_layer_weights *lw);
/* Converts layer `layer`'s tensors to fp32 into lw (allocated by fptq_layer_alloc). */
fptq_status fptq_layer_load(const fptq_model *m, int64_t layer, fptq_layer_weights *lw);

/* The head matrix: lm_head.weight, or the embedding when tied. */
const st_tensor *fptq_model_head(const fptq_model *m);

rope_params fptq_rope_params(const llama_config *c);

#endif
