/*
 * Writes a synthetic Llama-shaped model (config.json + BF16 safetensors)
 * and a token file, for benchmarks at sizes the bundled model cannot reach.
 * Weights are deterministic N(0, std^2) draws (xorshift + Box-Muller),
 * norms are 1, embeddings tied.
 * usage: make_synthetic OUT_DIR [--hidden 1024] [--layers 8] [--intermediate 2816]
 *                       [--heads 16] [--kv-heads 4] [--vocab 2048] [--tokens 65536]
 */
#include "io/npy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static double uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}
static float normal(float std)
{
    return (float)(std * sqrt(-2.0 * log(uniform())) * cos(6.283185307179586 * uniform()));
}
static uint16_t bf16(float f) /* round to nearest even */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

typedef struct tensor {
    char name[96];
    int64_t rows, cols; /* cols 0: 1-D */
    int is_norm;
} tensor;

int main(int argc, char **argv)
{
    /* an OUT_DIR that looks like an option (--help) is a mistake, not a folder to fill */
    if (argc < 2 || argv[1][0] == '-' || argc % 2 != 0) {
        fprintf(stderr, "usage: make_synthetic OUT_DIR [--hidden H] [--layers L] [--intermediate I] [--heads N] "
                        "[--kv-heads K] [--vocab V] [--tokens T]\n");
        return argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) ? 0 : 2;
    }
    const char *out = argv[1];
    long long hidden = 1024, layers = 8, inter = 2816, heads = 16, kv = 4, vocab = 2048, ntok = 65536;
    for (int i = 2; i + 1 < argc; i += 2) {
        long long v = atoll(argv[i + 1]);
        if (!strcmp(argv[i], "--hidden")) hidden = v;
        else if (!strcmp(argv[i], "--layers")) layers = v;
        else if (!strcmp(argv[i], "--intermediate")) inter = v;
        else if (!strcmp(argv[i], "--heads")) heads = v;
        else if (!strcmp(argv[i], "--kv-heads")) kv = v;
        else if (!strcmp(argv[i], "--vocab")) vocab = v;
        else if (!strcmp(argv[i], "--tokens")) ntok = v;
        else { fprintf(stderr, "make_synthetic: unknown option %s\n", argv[i]); return 2; }
    }
    const long long hd = hidden / heads;
    mkdir(out, 0777);

    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", out);
    FILE *f = fopen(path, "w");
    if (!f) { perror(path); return 1; }
    fprintf(f, "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": %lld, "
               "\"intermediate_size\": %lld, \"num_hidden_layers\": %lld, \"num_attention_heads\": %lld, "
               "\"num_key_value_heads\": %lld, \"head_dim\": %lld, \"vocab_size\": %lld, "
               "\"max_position_embeddings\": 2048, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, "
               "\"hidden_act\": \"silu\", \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\"}\n",
            hidden, inter, layers, heads, kv, hd, vocab);
    fclose(f);

    /* the tensor list, in file order */
    const int64_t per_layer = 9, n = 2 + layers * per_layer;
    tensor *t = calloc((size_t)n, sizeof *t);
    int64_t k = 0;
    t[k++] = (tensor){"model.embed_tokens.weight", vocab, hidden, 0};
    for (long long l = 0; l < layers; l++) {
        const struct { const char *name; int64_t rows, cols; int norm; } lin[9] = {
            {"input_layernorm.weight", hidden, 0, 1},          {"self_attn.q_proj.weight", heads * hd, hidden, 0},
            {"self_attn.k_proj.weight", kv * hd, hidden, 0},   {"self_attn.v_proj.weight", kv * hd, hidden, 0},
            {"self_attn.o_proj.weight", hidden, heads * hd, 0}, {"post_attention_layernorm.weight", hidden, 0, 1},
            {"mlp.gate_proj.weight", inter, hidden, 0},        {"mlp.up_proj.weight", inter, hidden, 0},
            {"mlp.down_proj.weight", hidden, inter, 0}};
        for (int i = 0; i < 9; i++) {
            snprintf(t[k].name, sizeof t[k].name, "model.layers.%lld.%s", l, lin[i].name);
            t[k].rows = lin[i].rows;
            t[k].cols = lin[i].cols;
            t[k].is_norm = lin[i].norm;
            k++;
        }
    }
    t[k++] = (tensor){"model.norm.weight", hidden, 0, 1};

    /* header: offsets in BF16 bytes, padded with spaces to a multiple of 8 */
    size_t cap = (size_t)n * 200 + 64, used = 0;
    char *hdr = malloc(cap);
    used += (size_t)snprintf(hdr, cap, "{");
    int64_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t numel = t[i].rows * (t[i].cols ? t[i].cols : 1);
        if (t[i].cols)
            used += (size_t)snprintf(hdr + used, cap - used, "%s\"%s\":{\"dtype\":\"BF16\",\"shape\":[%lld,%lld],\"data_offsets\":[%lld,%lld]}",
                                     i ? "," : "", t[i].name, (long long)t[i].rows, (long long)t[i].cols, (long long)off,
                                     (long long)(off + 2 * numel));
        else
            used += (size_t)snprintf(hdr + used, cap - used, "%s\"%s\":{\"dtype\":\"BF16\",\"shape\":[%lld],\"data_offsets\":[%lld,%lld]}",
                                     i ? "," : "", t[i].name, (long long)t[i].rows, (long long)off, (long long)(off + 2 * numel));
        off += 2 * numel;
    }
    used += (size_t)snprintf(hdr + used, cap - used, "}");
    while (used % 8)
        hdr[used++] = ' ';

    snprintf(path, sizeof path, "%s/model.safetensors", out);
    f = fopen(path, "wb");
    if (!f) { perror(path); return 1; }
    uint64_t hlen = used;
    fwrite(&hlen, 8, 1, f);
    fwrite(hdr, 1, used, f);
    uint16_t *buf = malloc(1 << 20);
    for (int64_t i = 0; i < n; i++) {
        const int64_t numel = t[i].rows * (t[i].cols ? t[i].cols : 1);
        /* std 1/sqrt(fan_in) keeps activations O(1) through the layers */
        const float std = t[i].cols ? (float)(1.0 / sqrt((double)t[i].cols)) : 0.0f;
        for (int64_t j = 0; j < numel; j += 1 << 19) {
            const int64_t m = numel - j < (1 << 19) ? numel - j : (1 << 19);
            for (int64_t q = 0; q < m; q++)
                buf[q] = t[i].is_norm ? bf16(1.0f) : bf16(normal(std));
            if (fwrite(buf, 2, (size_t)m, f) != (size_t)m) { perror(path); return 1; }
        }
    }
    if (fclose(f) != 0) { perror(path); return 1; }

    /* tokens: uniform ids, int32 */
    int32_t *ids = malloc((size_t)ntok * sizeof(int32_t));
    for (long long i = 0; i < ntok; i++)
        ids[i] = (int32_t)(uniform() * (double)vocab) % (int32_t)vocab;
    snprintf(path, sizeof path, "%s/tokens.npy", out);
    int64_t shape[1] = {ntok};
    if (npy_save(path, NPY_I32, 1, shape, ids) != FPTQ_OK) {
        fprintf(stderr, "%s\n", fptq_last_error());
        return 1;
    }
    printf("%s: hidden %lld, %lld layers, intermediate %lld, %lld heads (%lld kv), vocab %lld, %.1f MB of BF16; %lld tokens\n",
           out, hidden, layers, inter, heads, kv, vocab, (double)off / 1e6, ntok);
    free(t); free(hdr); free(buf); free(ids);
    return 0;
}
