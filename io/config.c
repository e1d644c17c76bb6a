/*
 * config.json parsing for Llama-family models (Llama, Mistral, Qwen2). Every
 * field is type-checked, and what fptq cannot compute faithfully (other
 * architectures, activations, RoPE variants, quantized checkpoints) is refused.
 */
#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include "../common/fileio.h"
#include "json_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* A double holds every integer up to 2^53 exactly; past that "integral" means nothing. */
#define JSON_INT_LIMIT 9007199254740992.0

typedef struct {
    const char *model_type;
    const char *architecture;
} arch_entry;

static const arch_entry ARCHS[] = {
    {"llama", "LlamaForCausalLM"},
    {"mistral", "MistralForCausalLM"},
    {"qwen2", "Qwen2ForCausalLM"},
};
#define N_ARCHS (sizeof ARCHS / sizeof ARCHS[0])
#define SUPPORTED_ARCHS "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"
#define SUPPORTED_TYPES "llama, mistral, qwen2"

/* A short rendering of a JSON value for messages ("string \"64\"", "number 64.5"). */
static const char *describe(const cJSON *it, char *buf, size_t cap)
{
    if (!it)
        snprintf(buf, cap, "nothing");
    else if (cJSON_IsString(it))
        snprintf(buf, cap, "string \"%.48s%s\"", it->valuestring,
                 strlen(it->valuestring) > 48 ? "..." : "");
    else if (cJSON_IsNumber(it))
        snprintf(buf, cap, "number %.17g", it->valuedouble);
    else if (cJSON_IsBool(it))
        snprintf(buf, cap, "%s", cJSON_IsTrue(it) ? "true" : "false");
    else if (cJSON_IsNull(it))
        snprintf(buf, cap, "null");
    else if (cJSON_IsArray(it))
        snprintf(buf, cap, "an array");
    else if (cJSON_IsObject(it))
        snprintf(buf, cap, "an object");
    else
        snprintf(buf, cap, "an invalid value");
    return buf;
}

/* Absent and null are the same: transformers writes None for "use the default". */
static const cJSON *field(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return (it && !cJSON_IsNull(it)) ? it : NULL;
}

/* `prefix` qualifies nested fields in messages ("rope_scaling."). */
static fptq_status get_int(const cJSON *obj, const char *prefix, const char *key, const char *src,
                           int required, int64_t dflt, int64_t *out)
{
    char d[96];
    const cJSON *it = field(obj, key);
    if (!it) {
        if (required)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: required field %s%s is %s", src, prefix, key,
                             cJSON_GetObjectItemCaseSensitive(obj, key) ? "null" : "missing");
        *out = dflt;
        return FPTQ_OK;
    }
    if (!cJSON_IsNumber(it))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: field %s%s must be an integer, got %s", src, prefix,
                         key, describe(it, d, sizeof d));
    double v = it->valuedouble;
    if (!isfinite(v) || v != floor(v) || fabs(v) > JSON_INT_LIMIT)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: field %s%s must be an integer, got %s", src, prefix,
                         key, describe(it, d, sizeof d));
    *out = (int64_t)v;
    return FPTQ_OK;
}

static fptq_status get_num(const cJSON *obj, const char *prefix, const char *key, const char *src,
                           int required, double dflt, double *out)
{
    char d[96];
    const cJSON *it = field(obj, key);
    if (!it) {
        if (required)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: required field %s%s is %s", src, prefix, key,
                             cJSON_GetObjectItemCaseSensitive(obj, key) ? "null" : "missing");
        *out = dflt;
        return FPTQ_OK;
    }
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: field %s%s must be a finite number, got %s", src,
                         prefix, key, describe(it, d, sizeof d));
    *out = it->valuedouble;
    return FPTQ_OK;
}

static fptq_status get_bool(const cJSON *obj, const char *key, const char *src, int dflt, int *out)
{
    char d[96];
    const cJSON *it = field(obj, key);
    if (!it) {
        *out = dflt;
        return FPTQ_OK;
    }
    if (!cJSON_IsBool(it))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: field %s must be true or false, got %s", src, key,
                         describe(it, d, sizeof d));
    *out = cJSON_IsTrue(it) ? 1 : 0;
    return FPTQ_OK;
}

/* Sets *out to the string (owned by the cJSON tree) or NULL when absent/null. */
static fptq_status get_str(const cJSON *obj, const char *prefix, const char *key, const char *src,
                           const char **out)
{
    char d[96];
    const cJSON *it = field(obj, key);
    *out = NULL;
    if (!it)
        return FPTQ_OK;
    if (!cJSON_IsString(it))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: field %s%s must be a string, got %s", src, prefix,
                         key, describe(it, d, sizeof d));
    *out = it->valuestring;
    return FPTQ_OK;
}

static fptq_status require_positive_int(const char *src, const char *name, int64_t v)
{
    if (v <= 0)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s must be positive, got %lld", src, name,
                         (long long)v);
    return FPTQ_OK;
}

/* A size that later sizes a buffer or a loop: 1..max (the bounds of config.h). */
static fptq_status require_size(const char *src, const char *name, int64_t v, int64_t max)
{
    FPTQ_TRY(require_positive_int(src, name, v));
    if (v > max)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s %lld is larger than fptq accepts (expected at most %lld, %s)",
                         src, name, (long long)v, (long long)max,
                         max == FPTQ_MAX_LAYERS && strcmp(name, "num_hidden_layers") == 0
                             ? "the most layers an fptq checkpoint holds"
                             : "about 16x the largest real models");
    return FPTQ_OK;
}

/* a x b <= max, for sizes already bounded (so the product cannot overflow). */
static fptq_status require_product(const char *src, const char *na, int64_t a, const char *nb, int64_t b,
                                   int64_t max)
{
    if (a > max / b)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                         "%s: %s x %s = %lld x %lld = %lld is larger than fptq accepts (expected at most %lld)",
                         src, na, nb, (long long)a, (long long)b, (long long)(a * b), (long long)max);
    return FPTQ_OK;
}

static fptq_status require_positive_num(const char *src, const char *name, double v)
{
    if (!(v > 0.0))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s must be positive, got %.17g", src, name, v);
    return FPTQ_OK;
}

static fptq_status copy_str(const char *src, const char *name, const char *s, char *dst, size_t cap)
{
    size_t n = strlen(s);
    if (n >= cap)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s \"%.48s\" is too long (%zu characters, at most %zu)",
                         src, name, s, n, cap - 1);
    memcpy(dst, s, n + 1);
    return FPTQ_OK;
}

static fptq_status parse_architecture(const cJSON *root, const char *src, llama_config *c)
{
    char d[96];
    const char *model_type = NULL;
    const cJSON *archs = field(root, "architectures");
    const arch_entry *by_arch = NULL;

    /* The architecture is checked first: for a foreign model it is the most telling name. */
    if (archs) {
        if (!cJSON_IsArray(archs) || cJSON_GetArraySize(archs) < 1)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                             "%s: field architectures must be a non-empty array of strings, got %s",
                             src, cJSON_IsArray(archs) ? "an empty array" : describe(archs, d, sizeof d));
        const cJSON *first = cJSON_GetArrayItem(archs, 0);
        if (!cJSON_IsString(first))
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: architectures[0] must be a string, got %s", src,
                             describe(first, d, sizeof d));
        for (size_t i = 0; i < N_ARCHS; i++)
            if (strcmp(first->valuestring, ARCHS[i].architecture) == 0)
                by_arch = &ARCHS[i];
        if (!by_arch)
            return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                             "%s: architecture \"%.64s\" is not supported (supported: " SUPPORTED_ARCHS ")",
                             src, first->valuestring);
    }

    FPTQ_TRY(get_str(root, "", "model_type", src, &model_type));
    if (!model_type)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: required field model_type is missing (expected one of: "
                         SUPPORTED_TYPES ")", src);
    const arch_entry *by_type = NULL;
    for (size_t i = 0; i < N_ARCHS; i++)
        if (strcmp(model_type, ARCHS[i].model_type) == 0)
            by_type = &ARCHS[i];
    if (!by_type)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                         "%s: model_type \"%.48s\" is not supported (supported: " SUPPORTED_TYPES ")",
                         src, model_type);
    /* transformers would build one class from the other's config; which semantics
     * (biases, sliding window) the checkpoint was trained with is then unclear. */
    if (by_arch && by_arch != by_type)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                         "%s: architecture \"%s\" does not match model_type \"%s\" (expected %s)",
                         src, by_arch->architecture, model_type, by_type->architecture);
    FPTQ_TRY(copy_str(src, "model_type", by_type->model_type, c->model_type, sizeof c->model_type));
    FPTQ_TRY(copy_str(src, "architecture", by_type->architecture, c->architecture,
                      sizeof c->architecture));
    return FPTQ_OK;
}

static fptq_status parse_rope_scaling(const cJSON *rs, const char *name, const char *src,
                                      llama_config *c)
{
    char d[96], prefix[32];
    snprintf(prefix, sizeof prefix, "%s.", name);
    if (!cJSON_IsObject(rs))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: field %s must be an object or null, got %s", src, name,
                         describe(rs, d, sizeof d));
    const char *type = NULL;
    FPTQ_TRY(get_str(rs, prefix, "rope_type", src, &type));
    if (!type)  /* the key before transformers 4.45 */
        FPTQ_TRY(get_str(rs, prefix, "type", src, &type));
    if (!type)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s has no rope_type (or type) field", src, name);
    if (strcmp(type, "default") == 0) {
        c->rope_scaling.type = ROPE_SCALING_NONE;
        return FPTQ_OK;
    }
    if (strcmp(type, "llama3") != 0)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                         "%s: %s type \"%.48s\" is not supported (supported: llama3, or null for none)",
                         src, name, type);

    c->rope_scaling.type = ROPE_SCALING_LLAMA3;
    FPTQ_TRY(get_num(rs, prefix, "factor", src, 1, 0, &c->rope_scaling.factor));
    FPTQ_TRY(get_num(rs, prefix, "low_freq_factor", src, 1, 0, &c->rope_scaling.low_freq_factor));
    FPTQ_TRY(get_num(rs, prefix, "high_freq_factor", src, 1, 0, &c->rope_scaling.high_freq_factor));
    FPTQ_TRY(get_int(rs, prefix, "original_max_position_embeddings", src, 1, 0,
                     &c->rope_scaling.original_max_position_embeddings));
    char fname[96];
    snprintf(fname, sizeof fname, "%sfactor", prefix);
    FPTQ_TRY(require_positive_num(src, fname, c->rope_scaling.factor));
    snprintf(fname, sizeof fname, "%slow_freq_factor", prefix);
    FPTQ_TRY(require_positive_num(src, fname, c->rope_scaling.low_freq_factor));
    snprintf(fname, sizeof fname, "%shigh_freq_factor", prefix);
    FPTQ_TRY(require_positive_num(src, fname, c->rope_scaling.high_freq_factor));
    snprintf(fname, sizeof fname, "%soriginal_max_position_embeddings", prefix);
    FPTQ_TRY(require_size(src, fname, c->rope_scaling.original_max_position_embeddings, FPTQ_MAX_CONTEXT));
    /* the llama3 ramp divides by (high - low) */
    if (!(c->rope_scaling.high_freq_factor > c->rope_scaling.low_freq_factor))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                         "%s: %shigh_freq_factor (%g) must be greater than %slow_freq_factor (%g)",
                         src, prefix, c->rope_scaling.high_freq_factor, prefix,
                         c->rope_scaling.low_freq_factor);
    return FPTQ_OK;
}

static fptq_status parse_sliding_window(const cJSON *root, const char *src, llama_config *c)
{
    c->sliding_window = 0;
    if (strcmp(c->model_type, "mistral") == 0) {
        FPTQ_TRY(get_int(root, "", "sliding_window", src, 0, 0, &c->sliding_window));
        if (field(root, "sliding_window"))
            FPTQ_TRY(require_size(src, "sliding_window", c->sliding_window, FPTQ_MAX_CONTEXT));
    } else if (strcmp(c->model_type, "qwen2") == 0) {
        int use = 0;
        FPTQ_TRY(get_bool(root, "use_sliding_window", src, 0, &use));
        if (!use)
            return FPTQ_OK;
        FPTQ_TRY(get_int(root, "", "sliding_window", src, 0, 0, &c->sliding_window));
        if (!field(root, "sliding_window"))
            return FPTQ_OK;
        FPTQ_TRY(require_size(src, "sliding_window", c->sliding_window, FPTQ_MAX_CONTEXT));
        /* transformers slides only in layers >= max_window_layers; one window for
         * all layers is all fptq models, so a mixed stack is refused. */
        if (field(root, "max_window_layers")) {
            int64_t mwl = 0;
            FPTQ_TRY(get_int(root, "", "max_window_layers", src, 0, 0, &mwl));
            if (mwl >= c->num_hidden_layers)
                c->sliding_window = 0;
            else if (mwl > 0)
                return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                                 "%s: use_sliding_window with max_window_layers %lld < "
                                 "num_hidden_layers %lld (sliding window in only some layers) "
                                 "is not supported",
                                 src, (long long)mwl, (long long)c->num_hidden_layers);
        }
    }
    return FPTQ_OK;
}

static fptq_status parse_root(const cJSON *root, const char *src, llama_config *c)
{
    if (field(root, "quantization_config"))
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                         "%s: model is already quantized (quantization_config present)", src);

    FPTQ_TRY(parse_architecture(root, src, c));

    FPTQ_TRY(get_int(root, "", "hidden_size", src, 1, 0, &c->hidden_size));
    FPTQ_TRY(get_int(root, "", "intermediate_size", src, 1, 0, &c->intermediate_size));
    FPTQ_TRY(get_int(root, "", "num_hidden_layers", src, 1, 0, &c->num_hidden_layers));
    FPTQ_TRY(get_int(root, "", "num_attention_heads", src, 1, 0, &c->num_attention_heads));
    FPTQ_TRY(get_int(root, "", "vocab_size", src, 1, 0, &c->vocab_size));
    /* Every size is bounded before any product is formed: sizes whose products
     * wrap modulo 2^64 would otherwise pass every later check. */
    FPTQ_TRY(require_size(src, "hidden_size", c->hidden_size, FPTQ_MAX_HIDDEN));
    FPTQ_TRY(require_size(src, "intermediate_size", c->intermediate_size, FPTQ_MAX_INTERMEDIATE));
    FPTQ_TRY(require_size(src, "num_hidden_layers", c->num_hidden_layers, FPTQ_MAX_LAYERS));
    FPTQ_TRY(require_size(src, "num_attention_heads", c->num_attention_heads, FPTQ_MAX_HEADS));
    /* token ids are stored as int32; the bound is far below */
    FPTQ_TRY(require_size(src, "vocab_size", c->vocab_size, FPTQ_MAX_VOCAB));

    FPTQ_TRY(get_int(root, "", "num_key_value_heads", src, 0, c->num_attention_heads,
                     &c->num_key_value_heads));
    FPTQ_TRY(require_size(src, "num_key_value_heads", c->num_key_value_heads, FPTQ_MAX_HEADS));
    if (c->num_attention_heads % c->num_key_value_heads != 0)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                         "%s: num_attention_heads (%lld) is not divisible by num_key_value_heads (%lld)",
                         src, (long long)c->num_attention_heads, (long long)c->num_key_value_heads);

    if (field(root, "head_dim")) {
        FPTQ_TRY(get_int(root, "", "head_dim", src, 0, 0, &c->head_dim));
        FPTQ_TRY(require_size(src, "head_dim", c->head_dim, FPTQ_MAX_HEAD_DIM));
    } else {
        if (c->hidden_size % c->num_attention_heads != 0)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                             "%s: head_dim is absent and hidden_size (%lld) is not divisible by "
                             "num_attention_heads (%lld)",
                             src, (long long)c->hidden_size, (long long)c->num_attention_heads);
        c->head_dim = c->hidden_size / c->num_attention_heads;
        FPTQ_TRY(require_size(src, "head_dim (hidden_size / num_attention_heads)", c->head_dim,
                              FPTQ_MAX_HEAD_DIM));
    }
    /* the products that size the linears, the embedding and the head (the
     * k/v width is at most the q width: kv heads divide the heads) */
    FPTQ_TRY(require_product(src, "num_attention_heads", c->num_attention_heads, "head_dim", c->head_dim,
                             FPTQ_MAX_ATTN_DIM));
    FPTQ_TRY(require_product(src, "hidden_size", c->hidden_size, "intermediate_size", c->intermediate_size,
                             FPTQ_MAX_LINEAR_ELEMS));
    FPTQ_TRY(require_product(src, "hidden_size", c->hidden_size, "num_attention_heads x head_dim",
                             c->num_attention_heads * c->head_dim, FPTQ_MAX_LINEAR_ELEMS));
    FPTQ_TRY(require_product(src, "vocab_size", c->vocab_size, "hidden_size", c->hidden_size,
                             FPTQ_MAX_LINEAR_ELEMS));
    /* RoPE rotates pairs of dimensions */
    if (c->head_dim % 2 != 0)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: head_dim must be even, got %lld", src,
                         (long long)c->head_dim);

    FPTQ_TRY(get_int(root, "", "max_position_embeddings", src, 0, 2048, &c->max_position_embeddings));
    FPTQ_TRY(require_size(src, "max_position_embeddings", c->max_position_embeddings, FPTQ_MAX_CONTEXT));
    FPTQ_TRY(get_num(root, "", "rms_norm_eps", src, 0, 1e-6, &c->rms_norm_eps));
    FPTQ_TRY(require_positive_num(src, "rms_norm_eps", c->rms_norm_eps));

    /* transformers >= 5 folds rope_theta and rope_scaling into rope_parameters */
    const cJSON *rope_params = field(root, "rope_parameters");
    double theta_default = 10000.0;
    if (rope_params && cJSON_IsObject(rope_params) && field(rope_params, "rope_theta"))
        FPTQ_TRY(get_num(rope_params, "rope_parameters.", "rope_theta", src, 0, 10000.0,
                         &theta_default));
    FPTQ_TRY(get_num(root, "", "rope_theta", src, 0, theta_default, &c->rope_theta));
    FPTQ_TRY(require_positive_num(src, "rope_theta", c->rope_theta));

    const cJSON *rs = field(root, "rope_scaling");
    c->rope_scaling.type = ROPE_SCALING_NONE;
    if (rs)
        FPTQ_TRY(parse_rope_scaling(rs, "rope_scaling", src, c));
    else if (rope_params)
        FPTQ_TRY(parse_rope_scaling(rope_params, "rope_parameters", src, c));

    FPTQ_TRY(get_bool(root, "tie_word_embeddings", src, 0, &c->tie_word_embeddings));

    const char *act = NULL;
    FPTQ_TRY(get_str(root, "", "hidden_act", src, &act));
    if (act && strcmp(act, "silu") != 0)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                         "%s: hidden_act \"%.48s\" is not supported (supported: silu)", src, act);

    int mlp_bias = 0;
    FPTQ_TRY(get_bool(root, "mlp_bias", src, 0, &mlp_bias));
    if (mlp_bias)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: mlp_bias true is not supported", src);

    int attention_bias = 0;
    FPTQ_TRY(get_bool(root, "attention_bias", src, 0, &attention_bias));
    if (strcmp(c->model_type, "qwen2") == 0) {
        /* Qwen2's q/k/v always carry a bias and o_proj never does; the flag is not read */
        c->attn_qkv_bias = 1;
        c->attn_o_bias = 0;
    } else if (strcmp(c->model_type, "mistral") == 0) {
        /* transformers' Mistral ignores the flag and builds no biases; honouring it
         * silently would expect tensors the checkpoint may not have */
        if (attention_bias)
            return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                             "%s: attention_bias true is not supported for model_type mistral", src);
    } else {
        c->attn_qkv_bias = attention_bias;
        c->attn_o_bias = attention_bias;
    }

    FPTQ_TRY(parse_sliding_window(root, src, c));

    const char *dtype = NULL;
    FPTQ_TRY(get_str(root, "", "torch_dtype", src, &dtype));
    if (!dtype)  /* the name transformers >= 4.56 writes */
        FPTQ_TRY(get_str(root, "", "dtype", src, &dtype));
    if (dtype)
        FPTQ_TRY(copy_str(src, "torch_dtype", dtype, c->torch_dtype, sizeof c->torch_dtype));
    return FPTQ_OK;
}

fptq_status llama_config_parse(const char *json_text, const char *source, llama_config *out)
{
    const char *src = source ? source : "<config.json>";
    if (!out)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: llama_config_parse called without an output", src);
    memset(out, 0, sizeof *out);
    if (!json_text)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: llama_config_parse called without text", src);

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json_text, &end, 1);
    if (!root) {
        /* report line/column so a hand-edited config can be fixed */
        int line = 1, col = 1;
        for (const char *p = json_text; end && p < end && *p; p++) {
            if (*p == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: invalid JSON at line %d, column %d", src, line, col);
    }
    fptq_status st;
    if (!cJSON_IsObject(root)) {
        char d[96];
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: top level must be a JSON object, got %s", src,
                       describe(root, d, sizeof d));
    } else if ((st = json_check_unique_keys(root, src)) == FPTQ_OK) {
        llama_config c;
        memset(&c, 0, sizeof c);
        st = parse_root(root, src, &c);
        if (st == FPTQ_OK)
            *out = c;
    }
    cJSON_Delete(root);
    return st;
}

fptq_status llama_config_load(const char *path, llama_config *out)
{
    if (!out || !path)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "llama_config_load called without a path or output");
    memset(out, 0, sizeof *out);

    /* a regular file only (a FIFO would block), at most the JSON cap */
    char *buf = NULL;
    int64_t size = 0;
    FPTQ_TRY(fptq_read_file(path, "config", FPTQ_JSON_MAX_BYTES, 0, &buf, &size));
    fptq_status st = FPTQ_OK;
    /* cJSON would stop at a NUL and report a confusing position */
    const char *nul = memchr(buf, '\0', (size_t)size);
    if (nul) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: config contains a NUL byte at offset %lld (expected JSON text)",
                       path, (long long)(nul - buf));
        goto done;
    }
    FPTQ_TRY_GOTO(llama_config_parse(buf, path, out), st, done);
done:
    free(buf);
    return st;
}
