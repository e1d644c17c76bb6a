/*
 * config.json of Llama-family models (Llama 2/3/3.1, Mistral, Qwen2). What
 * fptq cannot run faithfully is refused with a message naming the field.
 */
#ifndef FPTQ_CONFIG_H
#define FPTQ_CONFIG_H

#include "../common/status.h"

/* Upper bounds on the sizes a config may give, about 16x the largest real
 * models (Llama 3.1 405B: hidden 16384, intermediate 53248, 128 heads of 128,
 * 126 layers; Gemma 3: vocabulary 262144, head_dim 256; Llama 4 Scout: a
 * context of 10M), so that every product fptq forms from them (buffer sizes,
 * loop bounds, byte counts, times the layer count) fits in int64_t with room
 * to spare. A config past one is refused, naming the field and the bound. */
#define FPTQ_MAX_HIDDEN ((int64_t)1 << 18)          /* hidden_size */
#define FPTQ_MAX_INTERMEDIATE ((int64_t)1 << 20)    /* intermediate_size */
#define FPTQ_MAX_HEADS ((int64_t)2048)              /* num_attention_heads, num_key_value_heads */
#define FPTQ_MAX_HEAD_DIM ((int64_t)4096)           /* head_dim */
#define FPTQ_MAX_VOCAB ((int64_t)1 << 22)           /* vocab_size */
#define FPTQ_MAX_CONTEXT ((int64_t)1 << 28)         /* max_position_embeddings, sliding_window, ... */
#define FPTQ_MAX_ATTN_DIM ((int64_t)1 << 20)        /* num_attention_heads x head_dim */
#define FPTQ_MAX_LINEAR_ELEMS ((int64_t)1 << 35)    /* hidden x intermediate, vocab x hidden, ... */
/* num_hidden_layers: the fptq checkpoint's cap (io/checkpoint.c stores at
 * most this many layers); the one constant for both. */
#define FPTQ_MAX_LAYERS ((int64_t)65536)

typedef enum { ROPE_SCALING_NONE = 0, ROPE_SCALING_LLAMA3 } rope_scaling_type;

typedef struct llama_config {
    char model_type[32];          /* "llama", "mistral", "qwen2" */
    char architecture[64];        /* "LlamaForCausalLM", ... */
    int64_t hidden_size;
    int64_t intermediate_size;
    int64_t num_hidden_layers;
    int64_t num_attention_heads;
    int64_t num_key_value_heads;  /* defaults to num_attention_heads */
    int64_t head_dim;             /* defaults to hidden_size / num_attention_heads */
    int64_t vocab_size;
    int64_t max_position_embeddings;
    int64_t sliding_window;       /* 0 when absent / null / disabled */
    double rms_norm_eps;
    double rope_theta;            /* default 10000 */
    int tie_word_embeddings;      /* default: false for llama/mistral/qwen2 unless given */
    int attn_qkv_bias;            /* q/k/v projections carry a bias (qwen2, attention_bias) */
    int attn_o_bias;              /* o_proj carries a bias (llama attention_bias: true) */
    struct {
        rope_scaling_type type;
        double factor;
        double low_freq_factor;
        double high_freq_factor;
        int64_t original_max_position_embeddings;
    } rope_scaling;
    char torch_dtype[16];         /* as given, "" if absent */
} llama_config;

/* Parses JSON text; `source` (a path) names it in error messages. */
fptq_status llama_config_parse(const char *json_text, const char *source, llama_config *out);
/* Reads and parses a config.json file. */
fptq_status llama_config_load(const char *path, llama_config *out);

#endif
