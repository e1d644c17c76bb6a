/*
 * Unit tests for io/config.c: the bundled stories260K config, Llama 3.1, Qwen2
 * and Mistral variants, defaults, and one case per refused or malformed field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/config.h"

#ifndef FPTQ_EXAMPLES
#error "FPTQ_EXAMPLES must name the examples directory"
#endif

/* Fails with the whole message shown, so a wording change is easy to diagnose. */
static void check_msg(const char *needle, const char *file, int line)
{
    const char *msg = fptq_last_error();
    if (!strstr(msg, needle)) {
        print_error("error message \"%s\" does not contain \"%s\"\n", msg, needle);
        _fail(file, line);
    }
}
#define assert_msg_has(needle) check_msg((needle), __FILE__, __LINE__)

/* A small, valid Llama config that the cases below edit one field at a time. */
static const char *LLAMA_BASE =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\","
    " \"hidden_size\": 64, \"intermediate_size\": 172, \"num_hidden_layers\": 5,"
    " \"num_attention_heads\": 8, \"num_key_value_heads\": 4, \"vocab_size\": 512,"
    " \"rms_norm_eps\": 1e-05, \"hidden_act\": \"silu\", \"torch_dtype\": \"float32\"}";


/* Applies `edits` (a JSON object; the string "__delete__" removes a key) to the
 * base config and parses the result under the name `source`. */
static fptq_status parse_edited(const char *base, const char *edits, const char *source,
                                llama_config *c)
{
    cJSON *root = cJSON_Parse(base);
    cJSON *ed = cJSON_Parse(edits);
    assert_non_null(root);
    assert_non_null(ed);
    for (cJSON *it = ed->child; it; it = it->next) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, it->string);
        if (cJSON_IsString(it) && strcmp(it->valuestring, "__delete__") == 0)
            continue;
        cJSON_AddItemToObject(root, it->string, cJSON_Duplicate(it, 1));
    }
    char *text = cJSON_Print(root);
    assert_non_null(text);
    fptq_status st = llama_config_parse(text, source, c);
    free(text);
    cJSON_Delete(ed);
    cJSON_Delete(root);
    return st;
}

static void test_stories260k(void **state)
{
    (void)state;
    fptq_clear_error();
    llama_config c;
    assert_int_equal(llama_config_load(FPTQ_EXAMPLES "/stories260K/config.json", &c), FPTQ_OK);
    assert_string_equal(c.model_type, "llama");
    assert_string_equal(c.architecture, "LlamaForCausalLM");
    assert_int_equal(c.hidden_size, 64);
    assert_int_equal(c.intermediate_size, 172);
    assert_int_equal(c.num_hidden_layers, 5);
    assert_int_equal(c.num_attention_heads, 8);
    assert_int_equal(c.num_key_value_heads, 4);
    assert_int_equal(c.head_dim, 8);
    assert_int_equal(c.vocab_size, 512);
    assert_int_equal(c.max_position_embeddings, 512);
    assert_true(c.rms_norm_eps == 1e-5);
    assert_true(c.rope_theta == 10000.0);
    assert_true(c.tie_word_embeddings);
    assert_false(c.attn_qkv_bias);
    assert_false(c.attn_o_bias);
    assert_int_equal(c.sliding_window, 0);
    assert_int_equal(c.rope_scaling.type, ROPE_SCALING_NONE);
    assert_string_equal(c.torch_dtype, "float32");
}

static const char *LLAMA31 =
    "{\n"
    "  \"architectures\": [\"LlamaForCausalLM\"],\n"
    "  \"attention_bias\": false, \"attention_dropout\": 0.0,\n"
    "  \"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008, 128009],\n"
    "  \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 14336, \"max_position_embeddings\": 131072,\n"
    "  \"mlp_bias\": false, \"model_type\": \"llama\", \"num_attention_heads\": 32,\n"
    "  \"num_hidden_layers\": 32, \"num_key_value_heads\": 8, \"pretraining_tp\": 1,\n"
    "  \"rms_norm_eps\": 1e-05,\n"
    "  \"rope_scaling\": {\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,\n"
    "                   \"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"},\n"
    "  \"rope_theta\": 500000.0, \"tie_word_embeddings\": false,\n"
    "  \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.43.0.dev0\",\n"
    "  \"use_cache\": true, \"vocab_size\": 128256\n"
    "}\n";

static void test_llama31_rope_scaling(void **state)
{
    (void)state;
    fptq_clear_error();
    llama_config c;
    assert_int_equal(llama_config_parse(LLAMA31, "llama31/config.json", &c), FPTQ_OK);
    assert_int_equal(c.hidden_size, 4096);
    assert_int_equal(c.intermediate_size, 14336);
    assert_int_equal(c.num_hidden_layers, 32);
    assert_int_equal(c.num_attention_heads, 32);
    assert_int_equal(c.num_key_value_heads, 8);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.vocab_size, 128256);
    assert_int_equal(c.max_position_embeddings, 131072);
    assert_true(c.rope_theta == 500000.0);
    assert_true(c.rms_norm_eps == 1e-5);
    assert_false(c.tie_word_embeddings);
    assert_int_equal(c.rope_scaling.type, ROPE_SCALING_LLAMA3);
    assert_true(c.rope_scaling.factor == 8.0);
    assert_true(c.rope_scaling.low_freq_factor == 1.0);
    assert_true(c.rope_scaling.high_freq_factor == 4.0);
    assert_int_equal(c.rope_scaling.original_max_position_embeddings, 8192);
    assert_string_equal(c.torch_dtype, "bfloat16");

    /* the pre-4.45 spelling "type" means the same */
    fptq_clear_error();
    assert_int_equal(parse_edited(LLAMA31,
                                  "{\"rope_scaling\": {\"factor\": 8, \"low_freq_factor\": 1,"
                                  " \"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192,"
                                  " \"type\": \"llama3\"}}",
                                  "llama31-legacy.json", &c),
                     FPTQ_OK);
    assert_int_equal(c.rope_scaling.type, ROPE_SCALING_LLAMA3);
    assert_true(c.rope_scaling.factor == 8.0);
}

static void test_defaults(void **state)
{
    (void)state;
    fptq_clear_error();
    llama_config c;
    const char *minimal =
        "{\"model_type\": \"llama\", \"hidden_size\": 128, \"intermediate_size\": 256,"
        " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100,"
        " \"head_dim\": null, \"rope_scaling\": null, \"num_key_value_heads\": null}";
    assert_int_equal(llama_config_parse(minimal, "minimal.json", &c), FPTQ_OK);
    assert_string_equal(c.architecture, "LlamaForCausalLM");
    assert_int_equal(c.num_key_value_heads, 4);
    assert_int_equal(c.head_dim, 32);
    assert_int_equal(c.max_position_embeddings, 2048);
    assert_true(c.rms_norm_eps == 1e-6);
    assert_true(c.rope_theta == 10000.0);
    assert_false(c.tie_word_embeddings);
    assert_false(c.attn_qkv_bias);
    assert_false(c.attn_o_bias);
    assert_int_equal(c.sliding_window, 0);
    assert_int_equal(c.rope_scaling.type, ROPE_SCALING_NONE);
    assert_string_equal(c.torch_dtype, "");
}

static void test_llama_attention_bias(void **state)
{
    (void)state;
    fptq_clear_error();
    llama_config c;
    assert_int_equal(parse_edited(LLAMA_BASE, "{\"attention_bias\": true}", "bias.json", &c),
                     FPTQ_OK);
    assert_true(c.attn_qkv_bias);
    assert_true(c.attn_o_bias);
}

static const char *QWEN2 =
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"attention_dropout\": 0.0,"
    " \"bos_token_id\": 151643, \"eos_token_id\": 151643, \"hidden_act\": \"silu\","
    " \"hidden_size\": 896, \"initializer_range\": 0.02, \"intermediate_size\": 4864,"
    " \"max_position_embeddings\": 32768, \"max_window_layers\": 24, \"model_type\": \"qwen2\","
    " \"num_attention_heads\": 14, \"num_hidden_layers\": 24, \"num_key_value_heads\": 2,"
    " \"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000.0, \"sliding_window\": 32768,"
    " \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\", \"use_cache\": true,"
    " \"use_sliding_window\": false, \"vocab_size\": 151936}";

static void test_qwen2(void **state)
{
    (void)state;
    fptq_clear_error();
    llama_config c;
    assert_int_equal(llama_config_parse(QWEN2, "qwen2/config.json", &c), FPTQ_OK);
    assert_string_equal(c.model_type, "qwen2");
    assert_int_equal(c.head_dim, 64);
    assert_true(c.attn_qkv_bias);
    assert_false(c.attn_o_bias);
    assert_true(c.tie_word_embeddings);
    assert_true(c.rope_theta == 1000000.0);
    /* sliding_window is written but disabled by use_sliding_window */
    assert_int_equal(c.sliding_window, 0);

    fptq_clear_error();
    assert_int_equal(parse_edited(QWEN2,
                                  "{\"use_sliding_window\": true, \"max_window_layers\": \"__delete__\"}",
                                  "qwen2-sw.json", &c),
                     FPTQ_OK);
    assert_int_equal(c.sliding_window, 32768);

    /* transformers slides only from layer max_window_layers on: a mixed stack */
    fptq_clear_error();
    assert_int_equal(parse_edited(QWEN2, "{\"use_sliding_window\": true, \"max_window_layers\": 12}",
                                  "qwen2-mixed.json", &c),
                     FPTQ_ERR_UNSUPPORTED);
    assert_msg_has("qwen2-mixed.json");
    assert_msg_has("max_window_layers");
}

static const char *MISTRAL =
    "{\"architectures\": [\"MistralForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": 2,"
    " \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02,"
    " \"intermediate_size\": 14336, \"max_position_embeddings\": 32768,"
    " \"model_type\": \"mistral\", \"num_attention_heads\": 32, \"num_hidden_layers\": 32,"
    " \"num_key_value_heads\": 8, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0,"
    " \"sliding_window\": 4096, \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\","
    " \"use_cache\": true, \"vocab_size\": 32000}";

static void test_mistral_sliding_window(void **state)
{
    (void)state;
    fptq_clear_error();
    llama_config c;
    assert_int_equal(llama_config_parse(MISTRAL, "mistral/config.json", &c), FPTQ_OK);
    assert_string_equal(c.model_type, "mistral");
    assert_string_equal(c.architecture, "MistralForCausalLM");
    assert_int_equal(c.sliding_window, 4096);
    assert_false(c.attn_qkv_bias);
    assert_false(c.attn_o_bias);

    /* Mistral 7B v0.2 and later disable it with null */
    fptq_clear_error();
    assert_int_equal(parse_edited(MISTRAL, "{\"sliding_window\": null, \"rope_theta\": 1000000.0}",
                                  "mistral-v02.json", &c),
                     FPTQ_OK);
    assert_int_equal(c.sliding_window, 0);

    fptq_clear_error();
    assert_int_equal(parse_edited(MISTRAL, "{\"sliding_window\": \"4096\"}", "mistral-str.json", &c),
                     FPTQ_ERR_FORMAT);
    assert_msg_has("mistral-str.json");
    assert_msg_has("sliding_window");
}

/* ---- refusals -------------------------------------------------------------- */

typedef struct {
    const char *source;
    const char *edits;
    fptq_status status;
    const char *needle1;
    const char *needle2;
} refusal;

static void check_refusal(const refusal *r, const char *file, int line)
{
    fptq_clear_error();
    llama_config c;
    memset(&c, 0x5a, sizeof c);
    fptq_status st = parse_edited(LLAMA_BASE, r->edits, r->source, &c);
    if (st != r->status) {
        print_error("%s: status %s, expected %s (message: %s)\n", r->source, fptq_status_name(st),
                    fptq_status_name(r->status), fptq_last_error());
        _fail(file, line);
    }
    assert_int_equal(fptq_last_status(), r->status);
    check_msg(r->source, file, line);
    check_msg(r->needle1, file, line);
    if (r->needle2)
        check_msg(r->needle2, file, line);
    /* a failed parse leaves no half-filled config behind */
    assert_int_equal(c.hidden_size, 0);
}
#define REFUSE(src, edits, st, n1, n2)                                  \
    do {                                                                \
        const refusal r_ = {(src), (edits), (st), (n1), (n2)};          \
        check_refusal(&r_, __FILE__, __LINE__);                         \
    } while (0)

static void test_refuse_architecture(void **state)
{
    (void)state;
    REFUSE("gemma.json", "{\"architectures\": [\"GemmaForCausalLM\"], \"model_type\": \"gemma\"}",
           FPTQ_ERR_UNSUPPORTED, "GemmaForCausalLM", "LlamaForCausalLM");
    REFUSE("mismatch.json", "{\"architectures\": [\"Qwen2ForCausalLM\"]}", FPTQ_ERR_UNSUPPORTED,
           "Qwen2ForCausalLM", "model_type");
    REFUSE("archs-empty.json", "{\"architectures\": []}", FPTQ_ERR_FORMAT, "architectures", NULL);
}

static void test_refuse_model_type(void **state)
{
    (void)state;
    REFUSE("neox.json", "{\"architectures\": \"__delete__\", \"model_type\": \"gpt_neox\"}",
           FPTQ_ERR_UNSUPPORTED, "model_type", "gpt_neox");
    REFUSE("notype.json", "{\"model_type\": \"__delete__\"}", FPTQ_ERR_FORMAT, "model_type",
           "missing");
}

static void test_refuse_rope_scaling(void **state)
{
    (void)state;
    REFUSE("yarn.json",
           "{\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0,"
           " \"original_max_position_embeddings\": 32768}}",
           FPTQ_ERR_UNSUPPORTED, "rope_scaling", "yarn");
    REFUSE("linear.json", "{\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}",
           FPTQ_ERR_UNSUPPORTED, "rope_scaling", "linear");
    REFUSE("nofactor.json",
           "{\"rope_scaling\": {\"rope_type\": \"llama3\", \"low_freq_factor\": 1,"
           " \"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192}}",
           FPTQ_ERR_FORMAT, "rope_scaling.factor", "missing");
    REFUSE("highlow.json",
           "{\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 4,"
           " \"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192}}",
           FPTQ_ERR_FORMAT, "high_freq_factor", "low_freq_factor");
    REFUSE("negfactor.json",
           "{\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": -8, \"low_freq_factor\": 1,"
           " \"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192}}",
           FPTQ_ERR_FORMAT, "rope_scaling.factor", "positive");
}

static void test_refuse_hidden_act(void **state)
{
    (void)state;
    REFUSE("gelu.json", "{\"hidden_act\": \"gelu\"}", FPTQ_ERR_UNSUPPORTED, "hidden_act", "gelu");
}

static void test_refuse_mlp_bias(void **state)
{
    (void)state;
    REFUSE("mlpbias.json", "{\"mlp_bias\": true}", FPTQ_ERR_UNSUPPORTED, "mlp_bias", NULL);
}

static void test_refuse_quantized(void **state)
{
    (void)state;
    REFUSE("gptq.json", "{\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4}}",
           FPTQ_ERR_UNSUPPORTED, "model is already quantized (quantization_config present)", NULL);
}

static void test_refuse_heads(void **state)
{
    (void)state;
    REFUSE("kvheads.json", "{\"num_key_value_heads\": 3}", FPTQ_ERR_FORMAT, "num_attention_heads",
           "num_key_value_heads (3)");
    REFUSE("oddhead.json", "{\"head_dim\": 7}", FPTQ_ERR_FORMAT, "head_dim", "even");
    REFUSE("zerolayers.json", "{\"num_hidden_layers\": 0}", FPTQ_ERR_FORMAT, "num_hidden_layers",
           "positive");
}

static void test_refuse_missing_hidden_size(void **state)
{
    (void)state;
    REFUSE("nohidden.json", "{\"hidden_size\": \"__delete__\"}", FPTQ_ERR_FORMAT, "hidden_size",
           "missing");
}

static void test_refuse_wrong_types(void **state)
{
    (void)state;
    REFUSE("hiddenstr.json", "{\"hidden_size\": \"64\"}", FPTQ_ERR_FORMAT, "hidden_size",
           "integer");
    REFUSE("layersfloat.json", "{\"num_hidden_layers\": 5.5}", FPTQ_ERR_FORMAT,
           "num_hidden_layers", "5.5");
    REFUSE("epsstr.json", "{\"rms_norm_eps\": \"1e-5\"}", FPTQ_ERR_FORMAT, "rms_norm_eps", NULL);
    REFUSE("tiestr.json", "{\"tie_word_embeddings\": 1}", FPTQ_ERR_FORMAT, "tie_word_embeddings",
           NULL);
}

/* ---- bounds on sizes (issue 14, item 1) ----------------------------------- */

/* Sizes whose products wrap modulo 2^64 once passed every check and crashed
 * the forward pass; every size that later sizes a buffer or a loop is bounded. */
static void test_refuse_huge_sizes(void **state)
{
    (void)state;
    /* heads * head_dim = 406961350020066 * 90656 wraps to a small number */
    REFUSE("wrap.json",
           "{\"num_attention_heads\": 406961350020066, \"num_key_value_heads\": 203480675010033,"
           " \"head_dim\": 90656}",
           FPTQ_ERR_FORMAT, "num_attention_heads 406961350020066", "at most 2048");
    REFUSE("pow40.json",
           "{\"num_attention_heads\": 1099511627776, \"num_key_value_heads\": 1099511627776,"
           " \"head_dim\": 1099511627776}",
           FPTQ_ERR_FORMAT, "num_attention_heads", "at most");
    REFUSE("headdim.json", "{\"head_dim\": 8192}", FPTQ_ERR_FORMAT, "head_dim 8192", "at most 4096");
    REFUSE("hidden.json", "{\"hidden_size\": 1099511627776}", FPTQ_ERR_FORMAT, "hidden_size",
           "at most 262144");
    REFUSE("inter.json", "{\"intermediate_size\": 4194304}", FPTQ_ERR_FORMAT, "intermediate_size",
           "at most 1048576");
    REFUSE("vocab.json", "{\"vocab_size\": 2147483647}", FPTQ_ERR_FORMAT, "vocab_size", "at most 4194304");
    REFUSE("ctx.json", "{\"max_position_embeddings\": 4503599627370496}", FPTQ_ERR_FORMAT,
           "max_position_embeddings", "at most 268435456");
    /* each within its bound, the products not */
    REFUSE("hxi.json", "{\"hidden_size\": 262144, \"intermediate_size\": 1048576, \"num_attention_heads\": 1024,"
           " \"num_key_value_heads\": 1024, \"head_dim\": 256}",
           FPTQ_ERR_FORMAT, "hidden_size x intermediate_size", "at most");
    REFUSE("vxh.json", "{\"hidden_size\": 262144, \"vocab_size\": 4194304, \"num_attention_heads\": 64,"
           " \"num_key_value_heads\": 64, \"head_dim\": 256}",
           FPTQ_ERR_FORMAT, "vocab_size x hidden_size", "at most");
    REFUSE("hxq.json", "{\"hidden_size\": 262144, \"num_attention_heads\": 1024, \"num_key_value_heads\": 1024,"
           " \"head_dim\": 256}",
           FPTQ_ERR_FORMAT, "hidden_size x num_attention_heads x head_dim", "at most");
    REFUSE("qdim.json", "{\"num_attention_heads\": 2048, \"num_key_value_heads\": 2048, \"head_dim\": 4096}",
           FPTQ_ERR_FORMAT, "num_attention_heads x head_dim", "at most");
    REFUSE("window.json", "{\"model_type\": \"mistral\", \"architectures\": [\"MistralForCausalLM\"],"
           " \"sliding_window\": 4503599627370496}",
           FPTQ_ERR_FORMAT, "sliding_window", "at most");
}

/* num_hidden_layers is capped where the checkpoint caps it (issue 14, item 5). */
static void test_layers_cap(void **state)
{
    (void)state;
    llama_config c;
    char edit[96];
    snprintf(edit, sizeof edit, "{\"num_hidden_layers\": %d}", 65536);
    fptq_clear_error();
    assert_int_equal(parse_edited(LLAMA_BASE, edit, "max-layers.json", &c), FPTQ_OK);
    assert_int_equal(c.num_hidden_layers, 65536);
    REFUSE("too-many-layers.json", "{\"num_hidden_layers\": 65537}", FPTQ_ERR_FORMAT,
           "num_hidden_layers 65537", "at most 65536");
    REFUSE("1e8-layers.json", "{\"num_hidden_layers\": 100000000}", FPTQ_ERR_FORMAT,
           "num_hidden_layers", "at most 65536");
}

/* ---- duplicate keys (issue 14, item 8) --------------------------------------- */

/* Python's json keeps the last of two equal keys, cJSON finds the first: the
 * model Hugging Face builds would not be the one fptq quantizes. */
static void test_refuse_duplicate_keys(void **state)
{
    (void)state;
    llama_config c;
    fptq_clear_error();
    assert_int_equal(llama_config_parse("{\"model_type\": \"llama\", \"hidden_size\": 64, \"hidden_size\": 128}",
                                        "dup-top.json", &c),
                     FPTQ_ERR_FORMAT);
    assert_msg_has("dup-top.json");
    assert_msg_has("duplicate key \"hidden_size\"");

    char *text = NULL;
    cJSON *root = cJSON_Parse(LLAMA_BASE);
    assert_non_null(root);
    char *base = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    assert_non_null(base);
    size_t n = strlen(base);
    const char *tail = ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 1,"
                       " \"high_freq_factor\": 4, \"factor\": 2, \"original_max_position_embeddings\": 8192}}";
    text = malloc(n + strlen(tail) + 1);
    assert_non_null(text);
    memcpy(text, base, n - 1);  /* without the closing brace */
    strcpy(text + n - 1, tail);
    free(base);
    fptq_clear_error();
    assert_int_equal(llama_config_parse(text, "dup-nested.json", &c), FPTQ_ERR_FORMAT);
    free(text);
    assert_msg_has("dup-nested.json");
    assert_msg_has("duplicate key \"factor\"");
    assert_msg_has("rope_scaling.factor");

    /* inside an array: the path names the index */
    fptq_clear_error();
    assert_int_equal(llama_config_parse("{\"x\": [1, {\"a\": 1, \"a\": 2}]}", "dup-array.json", &c),
                     FPTQ_ERR_FORMAT);
    assert_msg_has("x[1].a");
    /* equal names in different objects are fine */
    fptq_clear_error();
    assert_int_equal(llama_config_parse("{\"a\": {\"b\": 1}, \"c\": {\"b\": 2}, \"b\": 3}", "nodup.json", &c),
                     FPTQ_ERR_FORMAT);
    assert_true(strstr(fptq_last_error(), "duplicate") == NULL);
}

static void test_bad_json_and_files(void **state)
{
    (void)state;
    llama_config c;
    fptq_clear_error();
    assert_int_equal(llama_config_parse("{\n  \"hidden_size\": 64,\n  oops\n}", "broken.json", &c),
                     FPTQ_ERR_FORMAT);
    assert_msg_has("broken.json");
    assert_msg_has("line 3");

    fptq_clear_error();
    assert_int_equal(llama_config_parse("[1, 2]", "array.json", &c), FPTQ_ERR_FORMAT);
    assert_msg_has("array.json");
    assert_msg_has("object");

    fptq_clear_error();
    assert_int_equal(llama_config_load("/nonexistent/fptq/config.json", &c), FPTQ_ERR_IO);
    assert_msg_has("/nonexistent/fptq/config.json");

    /* a directory opens but is not a config */
    fptq_clear_error();
    assert_int_equal(llama_config_load(FPTQ_EXAMPLES, &c), FPTQ_ERR_IO);
    assert_msg_has(FPTQ_EXAMPLES);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k),
        cmocka_unit_test(test_llama31_rope_scaling),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_llama_attention_bias),
        cmocka_unit_test(test_qwen2),
        cmocka_unit_test(test_mistral_sliding_window),
        cmocka_unit_test(test_refuse_architecture),
        cmocka_unit_test(test_refuse_model_type),
        cmocka_unit_test(test_refuse_rope_scaling),
        cmocka_unit_test(test_refuse_hidden_act),
        cmocka_unit_test(test_refuse_mlp_bias),
        cmocka_unit_test(test_refuse_quantized),
        cmocka_unit_test(test_refuse_heads),
        cmocka_unit_test(test_refuse_missing_hidden_size),
        cmocka_unit_test(test_refuse_wrong_types),
        cmocka_unit_test(test_bad_json_and_files),
        cmocka_unit_test(test_refuse_huge_sizes),
        cmocka_unit_test(test_layers_cap),
        cmocka_unit_test(test_refuse_duplicate_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
