/*
 * fptq export: a finished checkpoint to a Hugging Face model directory in
 * the compressed-tensors format, the GPTQ v1 layout, or dequantized F32.
 * The tensor list and the shards are planned from config.json and the
 * recipe before anything is written; then the shards are written in order,
 * one decoder layer in memory at a time; config.json comes last, so a
 * directory without it is an unfinished export.
 *
 * How fptq's codes map (fptq: w = (q - z) * s, q and z unsigned in
 * [0, 2^b), symmetric z = 2^(b-1)):
 *   compressed-tensors: signed x_q = q - 2^(b-1), zero point z - 2^(b-1)
 *     (absent when symmetric: zero 0); pack_to_int32 adds 2^(b-1) back, so
 *     the packed bits are q and z themselves; w = (x_q - zp) * s.
 *   GPTQ v1: qweight holds q, qzeros holds z - 1 (the loaders add 1 back),
 *     w = (q - (qzeros + 1)) * s; z = 0 cannot be stored.
 */
#define _POSIX_C_SOURCE 200809L
#include "export.h"

#include "../common/fileio.h"

#include "../kernels/quant.h"
#include "checkpoint.h"
#include "config.h"
#include "safetensors_write.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define N_LIN 7
#ifndef EXPORT_CHUNK_BYTES
#define EXPORT_CHUNK_BYTES (32 << 20)   /* tensor bytes produced per piece (a test build makes it tiny) */
#endif
#define CHUNK_BYTES ((size_t)EXPORT_CHUNK_BYTES)
#define MAX_CREATED 64

static const char *const lin_names[N_LIN] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

/* ---- building blocks -------------------------------------------------------- */

int64_t export_packed_words(int64_t n, int bits) { return (n * bits + 31) / 32; }

void export_pack_dense(const uint8_t *vals, int64_t n, int64_t stride, int bits, uint32_t *words)
{
    const int64_t nw = export_packed_words(n, bits);
    const uint32_t mask = (1u << bits) - 1u;
    memset(words, 0, (size_t)nw * sizeof *words);
    for (int64_t i = 0; i < n; i++) {
        const uint64_t v = vals[i * stride] & mask;
        const int64_t bit = i * bits, w = bit / 32;
        const int off = (int)(bit % 32);
        const uint64_t shifted = v << off;          /* up to 39 bits: spills into the next word */
        words[w] |= (uint32_t)shifted;
        if (off + bits > 32)
            words[w + 1] |= (uint32_t)(shifted >> 32);
    }
}

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

uint16_t export_f32_to_bf16(float x)
{
    const uint32_t u = f32_bits(x);
    if (isnan(x))
        return (uint16_t)((u >> 16) | 0x40u);   /* quiet NaN, sign kept */
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

uint16_t export_f32_to_f16(float x)
{
    const uint32_t u = f32_bits(x);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u)
        return sign | 0x7E00u;
    if (a >= 0x477FF000u)   /* 65520 and up: halfway past 65504 rounds (to even) to infinity */
        return sign | 0x7C00u;
    if (a >= 0x38800000u) { /* normal: drop 13 mantissa bits, round half to even, rebias 127 -> 15 */
        const uint32_t r = a + 0x0FFFu + ((a >> 13) & 1u);
        return sign | (uint16_t)((r >> 13) - (112u << 10));
    }
    /* subnormal: multiples of 2^-24; the scaling is exact, nearbyintf rounds
     * half to even, and 1024 is the smallest normal's bit pattern */
    return sign | (uint16_t)nearbyintf(fabsf(x) * 0x1p24f);
}

static float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    float v;
    if (e == 0)
        v = (float)m * 0x1p-24f;
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexpf((float)(m | 0x400u), (int)e - 25);
    return sign ? -v : v;
}

static void put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* One float in a float dtype (F32, BF16, F16) at p; returns bytes written. */
static size_t put_float(unsigned char *p, st_dtype d, float x)
{
    if (d == ST_BF16) {
        put_u16(p, export_f32_to_bf16(x));
        return 2;
    }
    if (d == ST_F16) {
        put_u16(p, export_f32_to_f16(x));
        return 2;
    }
    put_u32(p, f32_bits(x));
    return 4;
}

/* x as it reads back after a trip through dtype d. */
static float round_trip(st_dtype d, float x)
{
    if (d == ST_BF16)
        return bf16_to_f32(export_f32_to_bf16(x));
    if (d == ST_F16)
        return f16_to_f32(export_f32_to_f16(x));
    return x;
}

const char *export_format_name(export_format f)
{
    switch (f) {
    case EXPORT_COMPRESSED_TENSORS: return "compressed-tensors";
    case EXPORT_GPTQ: return "gptq";
    case EXPORT_DEQUANTIZED: return "dequantized";
    }
    return "?";
}

int export_format_parse(const char *s, export_format *f)
{
    if (strcmp(s, "compressed-tensors") == 0)
        *f = EXPORT_COMPRESSED_TENSORS;
    else if (strcmp(s, "gptq") == 0)
        *f = EXPORT_GPTQ;
    else if (strcmp(s, "dequantized") == 0)
        *f = EXPORT_DEQUANTIZED;
    else
        return -1;
    return 0;
}

int export_scale_dtype_parse(const char *s, export_scale_dtype *d)
{
    if (strcmp(s, "f32") == 0)
        *d = EXPORT_SCALES_F32;
    else if (strcmp(s, "model") == 0)
        *d = EXPORT_SCALES_MODEL;
    else if (strcmp(s, "f16") == 0)
        *d = EXPORT_SCALES_F16;
    else if (strcmp(s, "bf16") == 0)
        *d = EXPORT_SCALES_BF16;
    else
        return -1;
    return 0;
}

/* ---- the plan ------------------------------------------------------------------ */

typedef enum { SRC_SHARED, SRC_NORM_ATTN, SRC_NORM_MLP, SRC_LINEAR } src_kind;
typedef enum {
    P_CT_PACKED, P_CT_SCALE, P_CT_ZERO_PACKED, P_CT_SHAPE,   /* pack-quantized */
    P_CT_WEIGHT_I8, P_CT_ZERO_I8, P_CT_WEIGHT_FP8, P_CT_INPUT_SCALE,
    P_GPTQ_QWEIGHT, P_GPTQ_QZEROS, P_GPTQ_SCALES, P_GPTQ_GIDX,
    P_DENSE_WEIGHT, P_BIAS,
} part_kind;

typedef struct planned {
    char name[128];
    st_dtype dtype;
    int ndim;
    int64_t shape[2];
    src_kind src;
    const char *shared;   /* SRC_SHARED: "embed_tokens", "norm", "lm_head" */
    int64_t layer;
    int lin;              /* index into lin_names */
    part_kind part;
    int shard;
} planned;

/* What the recipe says every linear is. */
typedef struct recipe_info {
    quant_spec spec;
    act_quant_kind act;
    int act_order;
    double damp;
    char scheme[16], method[16];
} recipe_info;

typedef struct exporter {
    const export_opts *o;
    export_result *r;
    ckpt *ck;
    llama_config cfg;
    recipe_info rec;
    st_dtype model_dtype, scale_dtype;
    int64_t lin_out[N_LIN], lin_in[N_LIN];
    int lin_bias[N_LIN];
    int tied;
    char digest[65];
    planned *plan;
    size_t n_plan, plan_cap;
    int n_shards;
    ckpt_layer layer;
    int64_t layer_loaded;
    int lin_slot[N_LIN];  /* where each linear sits in the loaded layer */
    unsigned char *buf;   /* a piece of output */
    size_t buf_cap;
    uint8_t *tmp8;        /* [max(out, in)] */
    uint32_t *tmpw;       /* [max words] */
    const char *out_dir;
    char *created[MAX_CREATED];
    int n_created;
} exporter;

static const char *dtype_torch_name(st_dtype d)
{
    return d == ST_BF16 ? "bfloat16" : d == ST_F16 ? "float16" : "float32";
}

static int64_t n_groups_of(const exporter *e, int lin)
{
    quant_spec s = e->rec.spec;
    return quant_n_groups(&s, e->lin_in[lin]);
}

static fptq_status plan_add(exporter *e, const planned *p)
{
    if (e->n_plan == e->plan_cap) {
        size_t cap = e->plan_cap ? 2 * e->plan_cap : 256;
        planned *np = realloc(e->plan, cap * sizeof *np);
        if (!np)
            return FPTQ_FAIL(FPTQ_ERR_NOMEM, "export plan: cannot allocate %zu entries", cap);
        e->plan = np;
        e->plan_cap = cap;
    }
    e->plan[e->n_plan++] = *p;
    return FPTQ_OK;
}

static fptq_status plan_shared(exporter *e, const char *stored, const char *hf_name)
{
    planned p = {.src = SRC_SHARED, .shared = stored, .layer = -1};
    char dtype[8];
    FPTQ_TRY(ckpt_shared_info(e->ck, stored, dtype, &p.ndim, p.shape));
    if (st_dtype_parse(dtype, &p.dtype) != 0)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "shared tensor %s has dtype %s", stored, dtype);
    snprintf(p.name, sizeof p.name, "%s", hf_name);
    return plan_add(e, &p);
}

static fptq_status plan_part(exporter *e, int64_t l, int lin, part_kind part, const char *suffix, st_dtype d,
                             int ndim, int64_t d0, int64_t d1)
{
    planned p = {.src = SRC_LINEAR, .layer = l, .lin = lin, .part = part, .dtype = d, .ndim = ndim,
                 .shape = {d0, d1}};
    snprintf(p.name, sizeof p.name, "model.layers.%lld.%s.%s", (long long)l, lin_names[lin], suffix);
    return plan_add(e, &p);
}

static fptq_status plan_linear(exporter *e, int64_t l, int lin)
{
    const int64_t out = e->lin_out[lin], in = e->lin_in[lin], ng = n_groups_of(e, lin);
    const quant_spec *s = &e->rec.spec;
    const st_dtype sd = e->scale_dtype;
    switch (e->o->format) {
    case EXPORT_DEQUANTIZED:
        FPTQ_TRY(plan_part(e, l, lin, P_DENSE_WEIGHT, "weight", ST_F32, 2, out, in));
        break;
    case EXPORT_GPTQ:
        FPTQ_TRY(plan_part(e, l, lin, P_GPTQ_QWEIGHT, "qweight", ST_I32, 2, in * s->bits / 32, out));
        FPTQ_TRY(plan_part(e, l, lin, P_GPTQ_QZEROS, "qzeros", ST_I32, 2, ng, out * s->bits / 32));
        FPTQ_TRY(plan_part(e, l, lin, P_GPTQ_SCALES, "scales", sd, 2, ng, out));
        FPTQ_TRY(plan_part(e, l, lin, P_GPTQ_GIDX, "g_idx", ST_I32, 1, in, 0));
        break;
    case EXPORT_COMPRESSED_TENSORS:
        if (s->format == QFMT_FP8_E4M3) {
            FPTQ_TRY(plan_part(e, l, lin, P_CT_WEIGHT_FP8, "weight", ST_F8_E4M3, 2, out, in));
            FPTQ_TRY(plan_part(e, l, lin, P_CT_SCALE, "weight_scale", sd, 2, out, 1));
            FPTQ_TRY(plan_part(e, l, lin, P_CT_INPUT_SCALE, "input_scale", ST_F32, 1, 1, 0));
        } else if (e->rec.act != ACTQ_NONE) {
            FPTQ_TRY(plan_part(e, l, lin, P_CT_WEIGHT_I8, "weight", ST_I8, 2, out, in));
            FPTQ_TRY(plan_part(e, l, lin, P_CT_SCALE, "weight_scale", sd, 2, out, ng));
            if (!s->sym)
                FPTQ_TRY(plan_part(e, l, lin, P_CT_ZERO_I8, "weight_zero_point", ST_I8, 2, out, ng));
            if (e->rec.act == ACTQ_INT8_STATIC)
                FPTQ_TRY(plan_part(e, l, lin, P_CT_INPUT_SCALE, "input_scale", ST_F32, 1, 1, 0));
        } else {
            FPTQ_TRY(plan_part(e, l, lin, P_CT_PACKED, "weight_packed", ST_I32, 2, out,
                               export_packed_words(in, s->bits)));
            FPTQ_TRY(plan_part(e, l, lin, P_CT_SCALE, "weight_scale", sd, 2, out, ng));
            if (!s->sym)
                FPTQ_TRY(plan_part(e, l, lin, P_CT_ZERO_PACKED, "weight_zero_point", ST_I32, 2,
                                   export_packed_words(out, s->bits), ng));
            FPTQ_TRY(plan_part(e, l, lin, P_CT_SHAPE, "weight_shape", ST_I64, 1, 2, 0));
        }
        break;
    }
    if (e->lin_bias[lin])
        FPTQ_TRY(plan_part(e, l, lin, P_BIAS, "bias", e->model_dtype, 1, out, 0));
    return FPTQ_OK;
}

static fptq_status plan_all(exporter *e)
{
    FPTQ_TRY(plan_shared(e, "embed_tokens", "model.embed_tokens.weight"));
    for (int64_t l = 0; l < e->cfg.num_hidden_layers; l++) {
        planned p = {.src = SRC_NORM_ATTN, .layer = l, .dtype = e->model_dtype, .ndim = 1,
                     .shape = {e->cfg.hidden_size, 0}};
        snprintf(p.name, sizeof p.name, "model.layers.%lld.input_layernorm.weight", (long long)l);
        FPTQ_TRY(plan_add(e, &p));
        for (int lin = 0; lin < N_LIN; lin++)
            FPTQ_TRY(plan_linear(e, l, lin));
        p.src = SRC_NORM_MLP;
        snprintf(p.name, sizeof p.name, "model.layers.%lld.post_attention_layernorm.weight", (long long)l);
        FPTQ_TRY(plan_add(e, &p));
    }
    FPTQ_TRY(plan_shared(e, "norm", "model.norm.weight"));
    if (!e->tied)
        FPTQ_TRY(plan_shared(e, "lm_head", "lm_head.weight"));
    /* shards in order, each up to the limit; a bigger tensor gets one of its own */
    const int64_t max = e->o->max_shard_bytes > 0 ? e->o->max_shard_bytes : EXPORT_DEFAULT_SHARD_BYTES;
    int shard = 0;
    int64_t used = 0;
    for (size_t i = 0; i < e->n_plan; i++) {
        st_wtensor t = {.dtype = e->plan[i].dtype, .ndim = e->plan[i].ndim,
                        .shape = {e->plan[i].shape[0], e->plan[i].shape[1]}};
        const int64_t nb = st_wtensor_nbytes(&t);
        if (used > 0 && used + nb > max) {
            shard++;
            used = 0;
        }
        e->plan[i].shard = shard;
        used += nb;
        e->r->data_bytes += nb;
    }
    e->n_shards = shard + 1;
    e->r->tensors = (int64_t)e->n_plan;
    e->r->shards = e->n_shards;
    return FPTQ_OK;
}

/* ---- the recipe, and what each format can hold --------------------------------- */

static fptq_status parse_recipe(exporter *e)
{
    const char *text = ckpt_recipe_json(e->ck);
    cJSON *j = cJSON_Parse(text);
    if (!j)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "checkpoint recipe is not JSON: %.200s", text);
    fptq_status st = FPTQ_OK;
    const cJSON *wf = cJSON_GetObjectItemCaseSensitive(j, "weight_format");
    const cJSON *bits = cJSON_GetObjectItemCaseSensitive(j, "bits");
    const cJSON *gs = cJSON_GetObjectItemCaseSensitive(j, "group_size");
    const cJSON *sym = cJSON_GetObjectItemCaseSensitive(j, "sym");
    const cJSON *ao = cJSON_GetObjectItemCaseSensitive(j, "act_order");
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "activations");
    const cJSON *damp = cJSON_GetObjectItemCaseSensitive(j, "damp");
    const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(j, "scheme");
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(j, "method");
    if (!cJSON_IsString(wf) || !cJSON_IsNumber(bits) || !cJSON_IsNumber(gs) || !cJSON_IsBool(sym) ||
        !cJSON_IsBool(ao) || !cJSON_IsString(act) || !cJSON_IsNumber(damp) || !cJSON_IsString(scheme) ||
        !cJSON_IsString(method)) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "checkpoint recipe lacks weight_format, bits, group_size, sym, act_order, "
                                        "activations, damp, scheme or method: %.300s", text);
        goto done;
    }
    recipe_info *r = &e->rec;
    if (strcmp(wf->valuestring, "int") == 0)
        r->spec.format = QFMT_INT;
    else if (strcmp(wf->valuestring, "fp8_e4m3") == 0)
        r->spec.format = QFMT_FP8_E4M3;
    else {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "checkpoint recipe: weight_format \"%.32s\"", wf->valuestring);
        goto done;
    }
    r->spec.bits = (int)bits->valuedouble;
    r->spec.group_size = (int64_t)gs->valuedouble;
    r->spec.sym = cJSON_IsTrue(sym);
    if (r->spec.format == QFMT_FP8_E4M3)
        r->spec.group_size = 0;
    if (r->spec.bits < 2 || r->spec.bits > 8 || r->spec.group_size < 0) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "checkpoint recipe: %d bits, group size %lld", r->spec.bits,
                       (long long)r->spec.group_size);
        goto done;
    }
    r->act_order = cJSON_IsTrue(ao);
    r->damp = damp->valuedouble;
    snprintf(r->scheme, sizeof r->scheme, "%s", scheme->valuestring);
    snprintf(r->method, sizeof r->method, "%s", method->valuestring);
    static const char *const acts[] = {"none", "int8-static", "int8-dynamic", "fp8-static"};
    static const act_quant_kind kinds[] = {ACTQ_NONE, ACTQ_INT8_STATIC, ACTQ_INT8_DYNAMIC, ACTQ_FP8_STATIC};
    int k;
    for (k = 0; k < 4 && strcmp(act->valuestring, acts[k]) != 0; k++)
        ;
    if (k == 4) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "checkpoint recipe: activations \"%.32s\"", act->valuestring);
        goto done;
    }
    r->act = kinds[k];
done:
    cJSON_Delete(j);
    return st;
}

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Refusals that the recipe and the shapes decide, before anything is written. */
static fptq_status check_format(const exporter *e)
{
    const recipe_info *r = &e->rec;
    const quant_spec *s = &r->spec;
    const char *fmt = export_format_name(e->o->format);
    if (e->o->format == EXPORT_DEQUANTIZED)
        return FPTQ_OK;
    if (s->format == QFMT_INT && s->group_size > 0) {
        int64_t g = 0;
        for (int lin = 0; lin < N_LIN; lin++)
            g = gcd64(g, e->lin_in[lin]);
        for (int lin = 0; lin < N_LIN; lin++)
            if (e->lin_in[lin] % s->group_size != 0)
                return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                                 "--format %s: %s has %lld input columns, which groups of %lld do not divide: the "
                                 "last group is ragged, and neither compressed-tensors nor the GPTQ layout can hold "
                                 "a ragged group (both need every group whole; inference kernels assume it). "
                                 "Re-quantize with a --group-size that divides %lld (every input width of this "
                                 "model), or --group-size 0 (per channel); --format dequantized holds any scheme",
                                 fmt, lin_names[lin], (long long)e->lin_in[lin], (long long)s->group_size,
                                 (long long)g);
    }
    if (e->o->format == EXPORT_COMPRESSED_TENSORS) {
        if (s->format == QFMT_FP8_E4M3 && r->act != ACTQ_FP8_STATIC)
            return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                             "--format compressed-tensors: FP8 weights with activations \"%s\": float-quantized holds "
                             "FP8 weights with static FP8 activations (--scheme fp8)",
                             r->act == ACTQ_NONE ? "none" : "int8");
        if (s->format == QFMT_INT && r->act == ACTQ_FP8_STATIC)
            return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                             "--format compressed-tensors: integer weights with FP8 activations have no "
                             "compressed-tensors format; --format dequantized holds them");
        return FPTQ_OK;
    }
    /* GPTQ v1 */
    if (s->format != QFMT_INT)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                         "--format gptq: the GPTQ layout holds integer weights only; FP8 weights export with "
                         "--format compressed-tensors (float-quantized)");
    if (r->act != ACTQ_NONE)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                         "--format gptq: the GPTQ layout has no activation quantization; w8a8 (INT8 activations) "
                         "exports with --format compressed-tensors (int-quantized)");
    if (s->bits != 2 && s->bits != 3 && s->bits != 4 && s->bits != 8)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                         "--format gptq: the GPTQ layout packs 2, 3, 4 or 8 bits, not %d; --format "
                         "compressed-tensors (pack-quantized) holds %d-bit weights", s->bits, s->bits);
    for (int lin = 0; lin < N_LIN; lin++) {
        const int64_t in = e->lin_in[lin], out = e->lin_out[lin];
        if (in * s->bits % 32 != 0 || out * s->bits % 32 != 0)
            return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                             "--format gptq: the GPTQ layout packs input columns (qweight) and output rows (qzeros) "
                             "into whole int32 words: %s is [%lld, %lld], and %lld is not a multiple of %d at %d bits; "
                             "--format compressed-tensors holds it (it pads the last word)",
                             lin_names[lin], (long long)out, (long long)in,
                             (long long)(in * s->bits % 32 != 0 ? in : out), 32 / (int)gcd64(32, s->bits),
                             s->bits);
    }
    return FPTQ_OK;
}

/* ---- one layer in memory, checked against the plan ----------------------------- */

static fptq_status load_layer(exporter *e, int64_t l)
{
    if (e->layer_loaded == l)
        return FPTQ_OK;
    ckpt_layer_free(&e->layer);
    e->layer_loaded = -1;
    FPTQ_TRY(ckpt_read_layer(e->ck, l, &e->layer));
    e->layer_loaded = l;
    ckpt_layer *L = &e->layer;
    const recipe_info *r = &e->rec;
    const char *fmt = export_format_name(e->o->format);
    if (L->hidden != e->cfg.hidden_size || L->n_linears != N_LIN)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "layer %lld: hidden %lld and %d linears, the config says %lld and %d",
                         (long long)l, (long long)L->hidden, L->n_linears, (long long)e->cfg.hidden_size, N_LIN);
    for (int lin = 0; lin < N_LIN; lin++) {
        int slot = -1;
        for (int i = 0; i < L->n_linears; i++)
            if (strcmp(L->lin[i].name, lin_names[lin]) == 0)
                slot = i;
        if (slot < 0)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "layer %lld has no linear %s", (long long)l, lin_names[lin]);
        e->lin_slot[lin] = slot;
        ckpt_linear *cl = &L->lin[slot];
        quant_tensor *q = &cl->q;
        if (q->rows != e->lin_out[lin] || q->cols != e->lin_in[lin] || q->spec.format != r->spec.format ||
            q->spec.bits != r->spec.bits || q->spec.sym != r->spec.sym ||
            (q->spec.format == QFMT_INT && q->spec.group_size != r->spec.group_size) ||
            (cl->bias != NULL) != (e->lin_bias[lin] != 0))
            return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                             "layer %lld %s is [%lld, %lld] %d-bit group %lld sym %d%s; config and recipe say "
                             "[%lld, %lld] %d-bit group %lld sym %d%s",
                             (long long)l, lin_names[lin], (long long)q->rows, (long long)q->cols, q->spec.bits,
                             (long long)q->spec.group_size, q->spec.sym, cl->bias ? " with bias" : "",
                             (long long)e->lin_out[lin], (long long)e->lin_in[lin], r->spec.bits,
                             (long long)r->spec.group_size, r->spec.sym, e->lin_bias[lin] ? " with bias" : "");
        if (cl->act.kind != r->act)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "layer %lld %s: activation quantization %d, the recipe says %d",
                             (long long)l, lin_names[lin], (int)cl->act.kind, (int)r->act);
        const int64_t ng = q->n_groups, n = q->rows * ng;
        if (q->spec.format == QFMT_INT) {
            const int32_t zsym = 1 << (q->spec.bits - 1), maxq = (1 << q->spec.bits) - 1;
            for (int64_t i = 0; i < n; i++) {
                const int32_t z = q->zeros[i];
                if (q->spec.sym ? z != zsym : (z < 0 || z > maxq))
                    return FPTQ_FAIL(FPTQ_ERR_FORMAT, "layer %lld %s: zero point %d at row %lld group %lld (%s, %d bits)",
                                     (long long)l, lin_names[lin], (int)z, (long long)(i / ng), (long long)(i % ng),
                                     q->spec.sym ? "symmetric" : "asymmetric", q->spec.bits);
                if (e->o->format == EXPORT_GPTQ && z == 0)
                    return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                                     "--format gptq: layer %lld %s row %lld group %lld has zero point 0: GPTQ v1 "
                                     "stores zero points minus one and cannot hold 0; --format compressed-tensors "
                                     "holds it (zero points stored as they are)",
                                     (long long)l, lin_names[lin], (long long)(i / ng), (long long)(i % ng));
            }
        }
        if (q->g_idx) {
            const int64_t gs = q->spec.group_size;
            for (int64_t c = 0; c < q->cols; c++) {
                if (q->g_idx[c] == (gs > 0 ? c / gs : 0))
                    continue;
                if (e->o->format == EXPORT_COMPRESSED_TENSORS)
                    return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                                     "--format compressed-tensors: layer %lld %s has act-order groups out of column "
                                     "order (g_idx[%lld] = %d): compressed-tensors holds only groups in column order "
                                     "(actorder \"weight\"); --format gptq holds a g_idx (desc_act)",
                                     (long long)l, lin_names[lin], (long long)c, (int)q->g_idx[c]);
                e->r->desc_act = 1;
                break;
            }
        }
        /* scales in the requested dtype; the rounded values replace fptq's so that
         * every format (dequantized included) is written from the same numbers */
        if (e->scale_dtype != ST_F32) {
            for (int64_t i = 0; i < n; i++) {
                const float s = q->scales[i], t = round_trip(e->scale_dtype, s);
                if (!(isfinite(t) && t != 0.0f) && isfinite(s) && s != 0.0f)
                    return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                                     "--format %s --scale-dtype: layer %lld %s scale %g (row %lld group %lld) becomes "
                                     "%g in %s; keep F32 scales (--scale-dtype f32)",
                                     fmt, (long long)l, lin_names[lin], (double)s, (long long)(i / ng),
                                     (long long)(i % ng), (double)t, st_dtype_name(e->scale_dtype));
                if (t != s) {
                    const double rel = fabs((double)t - (double)s) / fabs((double)s);
                    e->r->scales_rounded++;
                    if (rel > e->r->max_scale_rel_change)
                        e->r->max_scale_rel_change = rel;
                    q->scales[i] = t;
                }
            }
        }
    }
    return FPTQ_OK;
}

/* ---- tensor bytes ---------------------------------------------------------------- */

static fptq_status put_floats(const float *src, int64_t n, st_dtype d, unsigned char *out, const char *what)
{
    for (int64_t i = 0; i < n; i++) {
        if (d == ST_F16 && isfinite(src[i]) && !isfinite(round_trip(d, src[i])))
            return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: value %g at %lld overflows F16, the model's dtype", what,
                             (double)src[i], (long long)i);
        out += put_float(out, d, src[i]);
    }
    return FPTQ_OK;
}

/* Rows [r0, r1) of planned tensor p (the first dimension) into e->buf. */
static fptq_status produce_rows(exporter *e, const planned *p, int64_t r0, int64_t r1, size_t *nbytes)
{
    unsigned char *out = e->buf;
    const ckpt_linear *cl = p->src == SRC_LINEAR ? &e->layer.lin[e->lin_slot[p->lin]] : NULL;
    const quant_tensor *q = cl ? &cl->q : NULL;
    const int64_t cols = q ? q->cols : 0, rows = q ? q->rows : 0, ng = q ? q->n_groups : 0;
    const int bits = q ? q->spec.bits : 0, half = bits ? 1 << (bits - 1) : 0;
    size_t n = 0;
    switch (p->src) {
    case SRC_SHARED: {
        FPTQ_TRY(ckpt_read_shared_raw(e->ck, p->shared, p->ndim == 2 ? r0 : 0, p->ndim == 2 ? r1 - r0 : 1, out));
        st_wtensor t = {.dtype = p->dtype, .ndim = p->ndim, .shape = {r1 - r0, p->shape[1]}};
        *nbytes = (size_t)st_wtensor_nbytes(&t);
        return FPTQ_OK;
    }
    case SRC_NORM_ATTN:
    case SRC_NORM_MLP:
        FPTQ_TRY(put_floats(p->src == SRC_NORM_ATTN ? e->layer.attn_norm : e->layer.mlp_norm, p->shape[0],
                            p->dtype, out, p->name));
        *nbytes = (size_t)p->shape[0] * st_dtype_size(p->dtype);
        return FPTQ_OK;
    case SRC_LINEAR:
        break;
    }
    switch (p->part) {
    case P_BIAS:
        FPTQ_TRY(put_floats(cl->bias, rows, p->dtype, out, p->name));
        n = (size_t)rows * st_dtype_size(p->dtype);
        break;
    case P_DENSE_WEIGHT: {
        quant_tensor v = *q;   /* a view of rows [r0, r1) */
        v.rows = r1 - r0;
        v.codes = q->codes + r0 * cols;
        v.scales = q->scales + r0 * ng;
        v.zeros = q->zeros ? q->zeros + r0 * ng : NULL;
        float *w = (float *)(void *)out;
        quant_dequantize(&v, w);
        for (int64_t i = 0; i < v.rows * cols; i++)
            put_u32(out + 4 * i, f32_bits(w[i]));   /* in place, little-endian */
        n = (size_t)(v.rows * cols) * 4;
        break;
    }
    case P_CT_PACKED: {
        const int64_t nw = export_packed_words(cols, bits);
        for (int64_t r = r0; r < r1; r++) {
            export_pack_dense(q->codes + r * cols, cols, 1, bits, e->tmpw);
            for (int64_t k = 0; k < nw; k++, n += 4)
                put_u32(out + n, e->tmpw[k]);
        }
        break;
    }
    case P_CT_SCALE:
        for (int64_t i = r0 * ng; i < r1 * ng; i++)
            n += put_float(out + n, p->dtype, q->scales[i]);
        break;
    case P_CT_ZERO_PACKED: {
        /* word rows [r0, r1) of [words(out), ng]: column g is group g's zero
         * points packed over the output rows */
        for (int64_t g = 0; g < ng; g++) {
            for (int64_t r = 0; r < rows; r++)
                e->tmp8[r] = (uint8_t)q->zeros[r * ng + g];
            export_pack_dense(e->tmp8, rows, 1, bits, e->tmpw);
            for (int64_t k = r0; k < r1; k++)
                put_u32(out + 4 * ((k - r0) * ng + g), e->tmpw[k]);
        }
        n = (size_t)((r1 - r0) * ng) * 4;
        break;
    }
    case P_CT_SHAPE:
        put_u64(out, (uint64_t)rows);
        put_u64(out + 8, (uint64_t)cols);
        n = 16;
        break;
    case P_CT_WEIGHT_I8:
        for (int64_t i = r0 * cols; i < r1 * cols; i++)
            out[n++] = (unsigned char)(int8_t)((int)q->codes[i] - half);
        break;
    case P_CT_ZERO_I8:
        for (int64_t i = r0 * ng; i < r1 * ng; i++)
            out[n++] = (unsigned char)(int8_t)(q->zeros[i] - half);
        break;
    case P_CT_WEIGHT_FP8:
        memcpy(out, q->codes + r0 * cols, (size_t)((r1 - r0) * cols));
        n = (size_t)((r1 - r0) * cols);
        break;
    case P_CT_INPUT_SCALE:
        put_u32(out, f32_bits(cl->act.scale));
        n = 4;
        break;
    case P_GPTQ_QWEIGHT: {
        /* rows [r0, r1) of [in * bits / 32, out]; r0 is a multiple of `bits`
         * words, which hold 32 whole input columns */
        const int64_t k0 = r0 * 32 / bits, k1 = r1 * 32 / bits < cols ? r1 * 32 / bits : cols;
        for (int64_t j = 0; j < rows; j++) {
            export_pack_dense(q->codes + j * cols + k0, k1 - k0, 1, bits, e->tmpw);
            for (int64_t k = 0; k < r1 - r0; k++)
                put_u32(out + 4 * (k * rows + j), e->tmpw[k]);
        }
        n = (size_t)((r1 - r0) * rows) * 4;
        break;
    }
    case P_GPTQ_QZEROS: {
        const int64_t nw = rows * bits / 32;
        for (int64_t g = r0; g < r1; g++) {
            for (int64_t r = 0; r < rows; r++)
                e->tmp8[r] = (uint8_t)(q->zeros[r * ng + g] - 1);   /* v1: zero minus one */
            export_pack_dense(e->tmp8, rows, 1, bits, e->tmpw);
            for (int64_t k = 0; k < nw; k++, n += 4)
                put_u32(out + n, e->tmpw[k]);
        }
        break;
    }
    case P_GPTQ_SCALES:
        for (int64_t g = r0; g < r1; g++)
            for (int64_t r = 0; r < rows; r++)
                n += put_float(out + n, p->dtype, q->scales[r * ng + g]);
        break;
    case P_GPTQ_GIDX: {
        const int64_t gs = q->spec.group_size;
        for (int64_t c = 0; c < cols; c++, n += 4)
            put_u32(out + n, (uint32_t)(q->g_idx ? q->g_idx[c] : gs > 0 ? (int32_t)(c / gs) : 0));
        break;
    }
    }
    *nbytes = n;
    return FPTQ_OK;
}

/* Rows of p per piece: a piece fits CHUNK_BYTES (one row at least; the
 * buffer is sized for the widest row), and GPTQ qweight pieces hold whole
 * runs of 32 input columns. */
static int64_t rows_per_piece(const exporter *e, const planned *p)
{
    if (p->ndim < 2)
        return p->ndim == 0 ? 1 : p->shape[0];
    const int64_t row_bytes = p->shape[1] * (int64_t)st_dtype_size(p->dtype);
    int64_t k = (int64_t)CHUNK_BYTES / (row_bytes > 0 ? row_bytes : 1);
    if (p->src == SRC_LINEAR && p->part == P_GPTQ_QWEIGHT) {
        const int bits = e->rec.spec.bits;
        k = k / bits * bits;
        if (k < bits)
            k = bits;
    }
    return k < 1 ? 1 : k;
}

static fptq_status emit_tensor(exporter *e, st_writer *w, const planned *p)
{
    if (p->src != SRC_SHARED)
        FPTQ_TRY(load_layer(e, p->layer));
    const int64_t total = p->ndim == 0 ? 1 : p->shape[0], step = rows_per_piece(e, p);
    for (int64_t r0 = 0; r0 < total; r0 += step) {
        const int64_t r1 = r0 + step < total ? r0 + step : total;
        size_t nb = 0;
        const int64_t es = (int64_t)st_dtype_size(p->dtype);
        const int64_t need = p->ndim < 2 ? (p->ndim ? p->shape[0] : 1) * es : (r1 - r0) * p->shape[1] * es;
        if (need > (int64_t)e->buf_cap)
            return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "export: a piece of %s needs %lld bytes, the buffer holds %zu",
                             p->name, (long long)need, e->buf_cap);
        FPTQ_TRY(produce_rows(e, p, r0, r1, &nb));
        FPTQ_TRY(st_writer_write(w, e->buf, nb));
    }
    return FPTQ_OK;
}

/* ---- files -------------------------------------------------------------------------- */

static fptq_status path_join(const char *dir, const char *name, char **out)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    FPTQ_TRY(fptq_calloc(n, 1, "path", out));
    snprintf(*out, n, "%s/%s", dir, name);
    return FPTQ_OK;
}

static fptq_status note_created(exporter *e, const char *name, char **path_out)
{
    if (e->n_created == MAX_CREATED)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "export: more than %d files", MAX_CREATED);
    char *p;
    FPTQ_TRY(path_join(e->out_dir, name, &p));
    e->created[e->n_created++] = p;
    *path_out = p;
    return FPTQ_OK;
}

static fptq_status write_bytes(exporter *e, const char *name, const char *text, size_t n)
{
    char *path;
    FPTQ_TRY(note_created(e, name, &path));
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return FPTQ_FAIL(FPTQ_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    size_t off = 0;
    while (off < n) {
        ssize_t k = write(fd, text + off, n - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            int er = errno;
            close(fd);
            return FPTQ_FAIL(FPTQ_ERR_IO, "cannot write %s: %s", path, strerror(er));
        }
        off += (size_t)k;
    }
    if (fsync(fd) != 0) {
        int er = errno;
        close(fd);
        return FPTQ_FAIL(FPTQ_ERR_IO, "fsync of %s failed: %s", path, strerror(er));
    }
    if (close(fd) != 0)
        return FPTQ_FAIL(FPTQ_ERR_IO, "close of %s failed: %s", path, strerror(errno));
    return FPTQ_OK;
}

static fptq_status write_text(exporter *e, const char *name, const char *text)
{
    return write_bytes(e, name, text, strlen(text));
}

static fptq_status write_json(exporter *e, const char *name, cJSON *j)
{
    char *s = cJSON_Print(j);
    if (!s)
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "cannot print %s", name);
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (!t) {
        free(s);
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "cannot print %s", name);
    }
    t[n] = '\n';
    t[n + 1] = '\0';
    fptq_status st = write_text(e, name, t);
    free(t);
    return st;
}

static void shard_name(const exporter *e, int k, char *buf, size_t cap)
{
    snprintf(buf, cap, "model-%05d-of-%05d.safetensors", k + 1, e->n_shards);
}

static fptq_status write_shards(exporter *e)
{
    const char *recipe = ckpt_recipe_json(e->ck);
    const char *meta[] = {"format", "pt", "fptq_export_format", export_format_name(e->o->format),
                          "fptq_checkpoint_digest", e->digest, "fptq_recipe", recipe};
    st_wtensor *list = NULL;
    FPTQ_TRY(fptq_calloc(e->n_plan, sizeof *list, "shard tensor list", &list));
    fptq_status st = FPTQ_OK;
    st_writer *w = NULL;
    size_t i = 0;
    for (int k = 0; k < e->n_shards; k++) {
        size_t first = i, n = 0;
        while (i < e->n_plan && e->plan[i].shard == k) {
            const planned *p = &e->plan[i];
            list[n++] = (st_wtensor){.name = p->name, .dtype = p->dtype, .ndim = p->ndim,
                                     .shape = {p->shape[0], p->shape[1]}};
            i++;
        }
        char name[64], *path;
        shard_name(e, k, name, sizeof name);
        FPTQ_TRY_GOTO(note_created(e, name, &path), st, done);
        FPTQ_TRY_GOTO(st_writer_open(path, list, n, meta, 4, &w), st, done);
        for (size_t t = first; t < i; t++) {
            st = emit_tensor(e, w, &e->plan[t]);
            if (st != FPTQ_OK) {
                fptq_error_context("writing %s to %s", e->plan[t].name, path);
                goto done;
            }
        }
        st = st_writer_close(w);
        w = NULL;
        if (st != FPTQ_OK)
            goto done;
        if (e->o->progress)
            fptq_info("export: %s (%zu tensors)", path, n);
    }
done:
    if (w)
        st_writer_abort(w);
    free(list);
    return st;
}

static fptq_status write_index(exporter *e)
{
    cJSON *j = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(j, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)e->r->data_bytes);
    cJSON *map = cJSON_AddObjectToObject(j, "weight_map");
    for (size_t i = 0; i < e->n_plan; i++) {
        char name[64];
        shard_name(e, e->plan[i].shard, name, sizeof name);
        cJSON_AddStringToObject(map, e->plan[i].name, name);
    }
    fptq_status st = write_json(e, "model.safetensors.index.json", j);
    cJSON_Delete(j);
    return st;
}

/* compressed-tensors QuantizationArgs of the weights or the activations. */
static cJSON *ct_args(int bits, const char *type, int sym, int64_t group_size, const char *strategy, int dynamic,
                      const char *actorder)
{
    cJSON *a = cJSON_CreateObject();
    cJSON_AddNumberToObject(a, "num_bits", bits);
    cJSON_AddStringToObject(a, "type", type);
    cJSON_AddBoolToObject(a, "symmetric", sym);
    if (group_size > 0)
        cJSON_AddNumberToObject(a, "group_size", (double)group_size);
    else
        cJSON_AddNullToObject(a, "group_size");
    cJSON_AddStringToObject(a, "strategy", strategy);
    cJSON_AddBoolToObject(a, "dynamic", dynamic);
    if (actorder)
        cJSON_AddStringToObject(a, "actorder", actorder);
    return a;
}

static const char *ct_format_name(const exporter *e)
{
    if (e->rec.spec.format == QFMT_FP8_E4M3)
        return "float-quantized";
    return e->rec.act != ACTQ_NONE ? "int-quantized" : "pack-quantized";
}

static cJSON *ct_quantization_config(const exporter *e)
{
    const recipe_info *r = &e->rec;
    const quant_spec *s = &r->spec;
    const char *fmt = ct_format_name(e);
    cJSON *qc = cJSON_CreateObject();
    cJSON_AddStringToObject(qc, "quant_method", "compressed-tensors");
    cJSON_AddStringToObject(qc, "format", fmt);
    cJSON_AddStringToObject(qc, "quantization_status", "compressed");
    cJSON *groups = cJSON_AddObjectToObject(qc, "config_groups");
    cJSON *g = cJSON_AddObjectToObject(groups, "group_0");
    cJSON *targets = cJSON_AddArrayToObject(g, "targets");
    cJSON_AddItemToArray(targets, cJSON_CreateString("Linear"));
    const int is_fp8 = s->format == QFMT_FP8_E4M3;
    const int grouped = !is_fp8 && s->group_size > 0;
    /* fptq's act-order keeps groups in column order (static groups):
     * compressed-tensors calls that actorder "weight" and needs no g_idx */
    cJSON_AddItemToObject(g, "weights",
                          ct_args(s->bits, is_fp8 ? "float" : "int", is_fp8 ? 1 : s->sym, grouped ? s->group_size : 0,
                                  grouped ? "group" : "channel", 0, r->act_order ? "weight" : NULL));
    if (r->act == ACTQ_NONE)
        cJSON_AddNullToObject(g, "input_activations");
    else if (r->act == ACTQ_INT8_DYNAMIC)
        cJSON_AddItemToObject(g, "input_activations", ct_args(8, "int", 1, 0, "token", 1, NULL));
    else
        cJSON_AddItemToObject(g, "input_activations",
                              ct_args(8, r->act == ACTQ_FP8_STATIC ? "float" : "int", 1, 0, "tensor", 0, NULL));
    cJSON_AddNullToObject(g, "output_activations");
    cJSON_AddStringToObject(g, "format", fmt);
    cJSON *ignore = cJSON_AddArrayToObject(qc, "ignore");
    cJSON_AddItemToArray(ignore, cJSON_CreateString("lm_head"));
    cJSON_AddNullToObject(qc, "kv_cache_scheme");
    cJSON_AddNullToObject(qc, "global_compression_ratio");
    return qc;
}

static cJSON *gptq_quantization_config(const exporter *e)
{
    const recipe_info *r = &e->rec;
    cJSON *qc = cJSON_CreateObject();
    cJSON_AddNumberToObject(qc, "bits", r->spec.bits);
    cJSON_AddNumberToObject(qc, "group_size", r->spec.group_size > 0 ? (double)r->spec.group_size : -1.0);
    char damp[32];   /* the recipe holds a float: 0.01, not 0.00999999977648258 */
    snprintf(damp, sizeof damp, "%.6g", r->damp);
    cJSON_AddNumberToObject(qc, "damp_percent", strtod(damp, NULL));
    cJSON_AddBoolToObject(qc, "desc_act", e->r->desc_act);
    cJSON_AddBoolToObject(qc, "static_groups", r->act_order);
    cJSON_AddBoolToObject(qc, "sym", r->spec.sym);
    cJSON_AddBoolToObject(qc, "true_sequential", 1);
    cJSON_AddBoolToObject(qc, "lm_head", 0);
    cJSON_AddStringToObject(qc, "quant_method", "gptq");
    cJSON_AddStringToObject(qc, "checkpoint_format", "gptq");
    cJSON_AddNullToObject(qc, "model_name_or_path");
    cJSON_AddNullToObject(qc, "model_file_base_name");
    return qc;
}

static fptq_status write_configs(exporter *e)
{
    cJSON *cfg = cJSON_Parse(ckpt_config_json(e->ck));
    if (!cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "the checkpoint's config.json is not a JSON object");
    }
    fptq_status st = FPTQ_OK;
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "quantization_config");
    if (!cJSON_GetObjectItemCaseSensitive(cfg, "torch_dtype"))
        cJSON_AddStringToObject(cfg, "torch_dtype", dtype_torch_name(e->model_dtype));
    if (e->o->format == EXPORT_GPTQ) {
        cJSON *qc = gptq_quantization_config(e);
        /* AutoGPTQ reads quantize_config.json; transformers and vLLM read config.json */
        st = write_json(e, "quantize_config.json", qc);
        cJSON_AddItemToObject(cfg, "quantization_config", qc);
    } else if (e->o->format == EXPORT_COMPRESSED_TENSORS) {
        cJSON_AddItemToObject(cfg, "quantization_config", ct_quantization_config(e));
    }
    if (st == FPTQ_OK)
        st = write_json(e, "config.json", cfg);
    cJSON_Delete(cfg);
    return st;
}

static fptq_status copy_file(exporter *e, const char *src, const char *name)
{
    /* a regular file only (a FIFO would block), at most 256 MiB */
    char *data = NULL;
    int64_t n = 0;
    FPTQ_TRY(fptq_read_file(src, name, (int64_t)256 << 20, 1, &data, &n));
    fptq_status st = write_bytes(e, name, data, (size_t)n);
    free(data);
    return st;
}

static fptq_status copy_tokenizer(exporter *e)
{
    static const char *const files[] = {"tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                                        "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                                        "generation_config.json", "chat_template.jinja", "chat_template.json"};
    int copied = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *src;
        FPTQ_TRY(path_join(e->o->tokenizer_dir, files[i], &src));
        struct stat sb;
        int present = stat(src, &sb) == 0 && S_ISREG(sb.st_mode);
        fptq_status st = present ? copy_file(e, src, files[i]) : FPTQ_OK;
        free(src);
        FPTQ_TRY(st);
        copied += present;
    }
    if (!copied)
        fptq_warn("export: --tokenizer %s holds no tokenizer files (tokenizer.json, tokenizer.model, ...)",
                  e->o->tokenizer_dir);
    return FPTQ_OK;
}

/* The export is written into a hidden sibling of DIR, unique to this
 * process (.NAME.fptq-export.PID), and renamed to DIR only once every file
 * is fsync'd: DIR either does not exist or is a finished export, so a
 * killed export never blocks its own re-run nor leaves an empty
 * config.json beside complete shards (what a SIGKILL leaves is the hidden
 * sibling, which no reader takes for a model). */
static fptq_status make_out_dir(const char *dir, char **staging)
{
    *staging = NULL;
    struct stat sb;
    if (lstat(dir, &sb) == 0)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "export directory %s already exists: pick another one (an export never "
                                       "overwrites)", dir);
    char path[4096];
    if (strlen(dir) >= sizeof path - 64)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "export directory path too long: %s", dir);
    snprintf(path, sizeof path, "%s", dir);
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        path[--n] = '\0';
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            return FPTQ_FAIL(FPTQ_ERR_IO, "cannot create folder %s for %s: %s", path, dir, strerror(errno));
        *p = '/';
    }
    const char *slash = strrchr(path, '/');
    const int plen = slash ? (int)(slash - path) : 0;
    const char *base = slash ? slash + 1 : path;
    size_t cap = strlen(path) + 64;
    FPTQ_TRY(fptq_calloc(cap, 1, "export staging path", staging));
    snprintf(*staging, cap, "%.*s%s.%s.fptq-export.%ld", plen, path, slash ? "/" : "", base, (long)getpid());
    if (mkdir(*staging, 0777) != 0) {
        fptq_status st = FPTQ_FAIL(FPTQ_ERR_IO, "cannot create export directory %s (for %s): %s", *staging, dir,
                                   strerror(errno));
        free(*staging);
        *staging = NULL;
        return st;
    }
    return FPTQ_OK;
}

/* The finished staging folder renamed to DIR, then DIR's parent fsync'd. */
static fptq_status publish_out_dir(const char *staging, const char *dir)
{
    struct stat sb;
    /* rename() replaces only an empty folder; a non-empty one that appeared meanwhile makes it fail */
    if (lstat(dir, &sb) == 0)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "export directory %s appeared while exporting (another export?): the "
                         "finished export is not moved over it", dir);
    if (rename(staging, dir) != 0)
        return FPTQ_FAIL(FPTQ_ERR_IO, "cannot move the finished export %s to %s: %s", staging, dir,
                         strerror(errno));
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", dir);
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/')
        parent[--n] = '\0';
    char *slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, sizeof parent, ".");
    else if (slash == parent)
        parent[1] = '\0';
    else
        *slash = '\0';
    int fd = open(parent, O_RDONLY | O_DIRECTORY);
    if (fd < 0 || fsync(fd) != 0) {
        fptq_status st = FPTQ_FAIL(FPTQ_ERR_IO, "fsync of %s failed: %s", parent, strerror(errno));
        if (fd >= 0)
            close(fd);
        return st;
    }
    close(fd);
    return FPTQ_OK;
}

/* ---- the whole export ------------------------------------------------------------- */

static fptq_status setup(exporter *e, const char *ckpt_dir)
{
    FPTQ_TRY(ckpt_open(ckpt_dir, &e->ck));
    char source[4200];
    snprintf(source, sizeof source, "%s/index.h5 (config)", ckpt_dir);
    FPTQ_TRY(llama_config_parse(ckpt_config_json(e->ck), source, &e->cfg));
    for (int64_t l = 0; l < ckpt_n_layers(e->ck); l++)
        if (!ckpt_layer_done(e->ck, l))
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "checkpoint %s: layer %lld is not finished; run fptq quantize --resume "
                                           "first", ckpt_dir, (long long)l);
    if (ckpt_n_layers(e->ck) != e->cfg.num_hidden_layers)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "checkpoint %s has %lld layers, its config %lld", ckpt_dir,
                         (long long)ckpt_n_layers(e->ck), (long long)e->cfg.num_hidden_layers);
    FPTQ_TRY(ckpt_digest(e->ck, e->digest));
    FPTQ_TRY(parse_recipe(e));

    char dtype[8];
    int ndim;
    int64_t shape[2];
    FPTQ_TRY(ckpt_shared_info(e->ck, "embed_tokens", dtype, &ndim, shape));
    if (st_dtype_parse(dtype, &e->model_dtype) != 0)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "checkpoint %s: embedding dtype %s", ckpt_dir, dtype);
    e->tied = !ckpt_has_shared_tensor(e->ck, "lm_head");
    if (e->tied != (e->cfg.tie_word_embeddings != 0))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "checkpoint %s: tie_word_embeddings is %s but lm_head is %s", ckpt_dir,
                         e->cfg.tie_word_embeddings ? "true" : "false", e->tied ? "absent" : "present");
    switch (e->o->scales) {
    case EXPORT_SCALES_F32: e->scale_dtype = ST_F32; break;
    case EXPORT_SCALES_MODEL: e->scale_dtype = e->model_dtype; break;
    case EXPORT_SCALES_F16: e->scale_dtype = ST_F16; break;
    case EXPORT_SCALES_BF16: e->scale_dtype = ST_BF16; break;
    }

    const llama_config *c = &e->cfg;
    const int64_t q_dim = c->num_attention_heads * c->head_dim, kv_dim = c->num_key_value_heads * c->head_dim;
    const int64_t outs[N_LIN] = {q_dim, kv_dim, kv_dim, c->hidden_size, c->intermediate_size, c->intermediate_size,
                                 c->hidden_size};
    const int64_t ins[N_LIN] = {c->hidden_size, c->hidden_size, c->hidden_size, q_dim, c->hidden_size, c->hidden_size,
                                c->intermediate_size};
    int64_t widest = 1;
    for (int lin = 0; lin < N_LIN; lin++) {
        e->lin_out[lin] = outs[lin];
        e->lin_in[lin] = ins[lin];
        e->lin_bias[lin] = lin <= 2 ? c->attn_qkv_bias : lin == 3 ? c->attn_o_bias : 0;
        widest = outs[lin] > widest ? outs[lin] : widest;
        widest = ins[lin] > widest ? ins[lin] : widest;
    }
    FPTQ_TRY(check_format(e));
    /* the output buffer holds a piece, or one row of the widest tensor (a
     * shared row or a dense row of fp32), whichever is larger */
    int64_t row = widest * 4;
    if (shape[ndim == 2 ? 1 : 0] * 4 > row)
        row = shape[ndim == 2 ? 1 : 0] * 4;
    e->buf_cap = 2 * ((size_t)row * 32 > CHUNK_BYTES ? (size_t)row * 32 : CHUNK_BYTES);
    FPTQ_TRY(fptq_calloc(e->buf_cap, 1, "export buffer", &e->buf));
    FPTQ_TRY(fptq_calloc((size_t)widest, 1, "export row", &e->tmp8));
    FPTQ_TRY(fptq_calloc((size_t)export_packed_words(widest, 8) + 2, sizeof *e->tmpw, "export words", &e->tmpw));
    return FPTQ_OK;
}

fptq_status fptq_export(const char *ckpt_dir, const char *out_dir, const export_opts *o, export_result *r)
{
    memset(r, 0, sizeof *r);
    const double t0 = fptq_now();
    exporter e = {.o = o, .r = r, .layer_loaded = -1, .out_dir = out_dir};
    fptq_status st = FPTQ_OK;
    int dir_made = 0;
    char *staging = NULL;
    FPTQ_TRY_GOTO(setup(&e, ckpt_dir), st, done);
    FPTQ_TRY_GOTO(plan_all(&e), st, done);
    r->layers = e.cfg.num_hidden_layers;
    FPTQ_TRY_GOTO(make_out_dir(out_dir, &staging), st, done);
    dir_made = 1;
    e.out_dir = staging;
    FPTQ_TRY_GOTO(write_shards(&e), st, done);
    FPTQ_TRY_GOTO(write_index(&e), st, done);
    if (o->tokenizer_dir)
        FPTQ_TRY_GOTO(copy_tokenizer(&e), st, done);
    {
        /* for the tests: a kill before the last file (FPTQ_TEST_EXPORT_KILL=1) */
        const char *k = getenv("FPTQ_TEST_EXPORT_KILL");
        if (k && strcmp(k, "1") == 0)
            raise(SIGKILL);
    }
    FPTQ_TRY_GOTO(write_configs(&e), st, done);
    int fd = open(staging, O_RDONLY | O_DIRECTORY);
    if (fd < 0 || fsync(fd) != 0)
        st = FPTQ_FAIL(FPTQ_ERR_IO, "fsync of %s failed: %s", staging, strerror(errno));
    if (fd >= 0)
        close(fd);
    if (st == FPTQ_OK)
        st = publish_out_dir(staging, out_dir);
done:
    if (st != FPTQ_OK && dir_made) {
        /* only what this export created, in its own staging folder */
        for (int i = 0; i < e.n_created; i++)
            unlink(e.created[i]);
        rmdir(staging);
        fptq_error_context("exporting %s to %s (nothing left behind)", ckpt_dir, out_dir);
    }
    free(staging);
    for (int i = 0; i < e.n_created; i++)
        free(e.created[i]);
    ckpt_layer_free(&e.layer);
    ckpt_close(e.ck);
    free(e.plan);
    free(e.buf);
    free(e.tmp8);
    free(e.tmpw);
    r->seconds = fptq_now() - t0;
    return st;
}
