/*
 * config.json of Llama-family models (Llama 2/3/3.1, Mistral, Qwen2). What
 * fptq cannot run faithfully is refused with a message naming the field.
 */
#ifndef FPTQ_CONFIG_H
#define FPTQ_CONFIG_H

#include "../common/status.h"

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
