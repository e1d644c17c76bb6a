/*
 * Opening a model directory and loading one decoder layer at a time.
 * Tensor names follow the Hugging Face Llama layout.
 */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const linear_names[LIN_COUNT] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

const char *fptq_linear_name(fptq_linear_id id) { return linear_names[id]; }

void fptq_linear_group_members(fptq_linear_group g, fptq_linear_id *first, int *count)
{
    static const fptq_linear_id firsts[LGROUP_COUNT] = {LIN_Q, LIN_O, LIN_GATE, LIN_DOWN};
    static const int counts[LGROUP_COUNT] = {3, 1, 2, 1};
    *first = firsts[g];
    *count = counts[g];
}

const char *fptq_linear_group_name(fptq_linear_group g)
{
    static const char *const names[LGROUP_COUNT] = {"q/k/v", "o", "gate/up", "down"};
    return names[g];
}

void fptq_linear_shape(const llama_config *c, fptq_linear_id id, int64_t *out, int64_t *in)
{
    const int64_t q_dim = c->num_attention_heads * c->head_dim;
    const int64_t kv_dim = c->num_key_value_heads * c->head_dim;
    switch (id) {
    case LIN_Q: *out = q_dim; *in = c->hidden_size; break;
    case LIN_K:
    case LIN_V: *out = kv_dim; *in = c->hidden_size; break;
    case LIN_O: *out = c->hidden_size; *in = q_dim; break;
    case LIN_GATE:
    case LIN_UP: *out = c->intermediate_size; *in = c->hidden_size; break;
    default: *out = c->hidden_size; *in = c->intermediate_size; break;
    }
}

static int linear_has_bias(const llama_config *c, fptq_linear_id id)
{
    if (id == LIN_Q || id == LIN_K || id == LIN_V)
        return c->attn_qkv_bias;
    if (id == LIN_O)
        return c->attn_o_bias;
    return 0;
}

void fptq_layer_extents(const llama_config *c, int64_t *max_cols, int64_t *max_w, int64_t *group_cols)
{
    *max_cols = *max_w = 0;
    for (int id = 0; id < LIN_COUNT; id++) {
        int64_t out, in;
        fptq_linear_shape(c, (fptq_linear_id)id, &out, &in);
        *max_cols = in > *max_cols ? in : *max_cols;
        *max_w = out * in > *max_w ? out * in : *max_w;
    }
    for (int g = 0; group_cols && g < LGROUP_COUNT; g++) {
        fptq_linear_id first;
        int count;
        int64_t out;
        fptq_linear_group_members((fptq_linear_group)g, &first, &count);
        fptq_linear_shape(c, first, &out, &group_cols[g]);
    }
}

rope_params fptq_rope_params(const llama_config *c)
{
    rope_params p = {.head_dim = c->head_dim, .theta = c->rope_theta};
    if (c->rope_scaling.type == ROPE_SCALING_LLAMA3) {
        p.factor = c->rope_scaling.factor;
        p.low_freq_factor = c->rope_scaling.low_freq_factor;
        p.high_freq_factor = c->rope_scaling.high_freq_factor;
        p.original_max_position_embeddings = c->rope_scaling.original_max_position_embeddings;
    }
    return p;
}

static void format_shape(const int64_t *shape, int ndim, char *buf, size_t cap)
{
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
}

/* A tensor that must exist with exactly this shape (checked from the header). */
static fptq_status expect_tensor(const fptq_model *m, const char *name, int ndim, int64_t d0, int64_t d1)
{
    const st_tensor *t;
    FPTQ_TRY(st_model_get(m->st, name, &t));
    const int64_t want[2] = {d0, d1};
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == want[i];
    if (!ok) {
        char got[128], expected[128];
        format_shape(t->shape, t->ndim, got, sizeof got);
        format_shape(want, ndim, expected, sizeof expected);
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "tensor %s in %s: shape %s, expected %s from %s/config.json",
                         name, t->path, got, expected, m->dir);
    }
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "tensor %s in %s: dtype %s, expected F32, F16 or BF16",
                         name, t->path, st_dtype_name(t->dtype));
    return FPTQ_OK;
}

static fptq_status check_tensors(const fptq_model *m)
{
    const llama_config *c = &m->cfg;
    char name[256];
    FPTQ_TRY(expect_tensor(m, "model.embed_tokens.weight", 2, c->vocab_size, c->hidden_size));
    FPTQ_TRY(expect_tensor(m, "model.norm.weight", 1, c->hidden_size, 0));
    if (!c->tie_word_embeddings)
        FPTQ_TRY(expect_tensor(m, "lm_head.weight", 2, c->vocab_size, c->hidden_size));
    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        snprintf(name, sizeof name, "model.layers.%lld.input_layernorm.weight", (long long)l);
        FPTQ_TRY(expect_tensor(m, name, 1, c->hidden_size, 0));
        snprintf(name, sizeof name, "model.layers.%lld.post_attention_layernorm.weight", (long long)l);
        FPTQ_TRY(expect_tensor(m, name, 1, c->hidden_size, 0));
        for (int id = 0; id < LIN_COUNT; id++) {
            int64_t out, in;
            fptq_linear_shape(c, (fptq_linear_id)id, &out, &in);
            snprintf(name, sizeof name, "model.layers.%lld.%s.weight", (long long)l, linear_names[id]);
            FPTQ_TRY(expect_tensor(m, name, 2, out, in));
            if (linear_has_bias(c, (fptq_linear_id)id)) {
                snprintf(name, sizeof name, "model.layers.%lld.%s.bias", (long long)l, linear_names[id]);
                FPTQ_TRY(expect_tensor(m, name, 1, out, 0));
            }
        }
    }
    return FPTQ_OK;
}

fptq_status fptq_model_open(const char *dir, fptq_model *m)
{
    memset(m, 0, sizeof *m);
    if (strlen(dir) >= sizeof m->dir - 32)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "model directory path too long: %s", dir);
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    char path[sizeof m->dir + 16];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FPTQ_TRY(llama_config_load(path, &m->cfg));
    FPTQ_TRY(st_model_open(dir, &m->st));
    fptq_status st = check_tensors(m);
    if (st != FPTQ_OK) {
        fptq_trace(__FILE__, __LINE__, "check_tensors");
        fptq_model_close(m);
    }
    return st;
}

fptq_status fptq_model_open_checkpoint(const char *dir, fptq_model *m)
{
    memset(m, 0, sizeof *m);
    if (strlen(dir) >= sizeof m->dir - 32)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint path too long: %s", dir);
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    FPTQ_TRY(ckpt_open(dir, &m->ck));
    char source[sizeof m->dir + 32];
    snprintf(source, sizeof source, "%s/index.h5 (config)", dir);
    fptq_status st = llama_config_parse(ckpt_config_json(m->ck), source, &m->cfg);
    for (int64_t l = 0; st == FPTQ_OK && l < m->cfg.num_hidden_layers; l++)
        if (!ckpt_layer_done(m->ck, l))
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "checkpoint %s: layer %lld is not finished; run fptq quantize --resume first",
                           dir, (long long)l);
    if (st != FPTQ_OK)
        fptq_model_close(m);
    return st;
}

void fptq_model_close(fptq_model *m)
{
    st_model_close(m->st);
    m->st = NULL;
    ckpt_close(m->ck);
    m->ck = NULL;
}

static fptq_status host_calloc(size_t bytes, const char *what, void **out)
{
    return fptq_calloc(bytes, 1, what, out);
}

static fptq_status layer_alloc(fptq_status (*alloc)(size_t, const char *, void **), void (*release)(void *),
                               const llama_config *c, fptq_layer_weights *lw)
{
    memset(lw, 0, sizeof *lw);
    const size_t f = sizeof(float);
    fptq_status st;
    FPTQ_TRY_GOTO(alloc((size_t)c->hidden_size * f, "attention norm", (void **)&lw->attn_norm), st, fail);
    FPTQ_TRY_GOTO(alloc((size_t)c->hidden_size * f, "MLP norm", (void **)&lw->mlp_norm), st, fail);
    for (int id = 0; id < LIN_COUNT; id++) {
        int64_t out, in;
        fptq_linear_shape(c, (fptq_linear_id)id, &out, &in);
        FPTQ_TRY_GOTO(alloc((size_t)(out * in) * f, linear_names[id], (void **)&lw->w[id]), st, fail);
        if (linear_has_bias(c, (fptq_linear_id)id))
            FPTQ_TRY_GOTO(alloc((size_t)out * f, linear_names[id], (void **)&lw->bias[id]), st, fail);
    }
    return FPTQ_OK;
fail:
    release(lw->attn_norm);
    release(lw->mlp_norm);
    for (int id = 0; id < LIN_COUNT; id++) {
        release(lw->w[id]);
        release(lw->bias[id]);
    }
    memset(lw, 0, sizeof *lw);
    return st;
}

fptq_status fptq_layer_alloc(const llama_config *c, fptq_layer_weights *lw)
{
    return layer_alloc(host_calloc, free, c, lw);
}

void fptq_layer_free(fptq_layer_weights *lw)
{
    free(lw->attn_norm);
    free(lw->mlp_norm);
    for (int id = 0; id < LIN_COUNT; id++) {
        free(lw->w[id]);
        free(lw->bias[id]);
    }
    memset(lw, 0, sizeof *lw);
}

fptq_status fptq_layer_alloc_host(const fptq_backend *be, const llama_config *c, fptq_layer_weights *lw)
{
    return layer_alloc(be->host_alloc, be->host_free, c, lw);
}

void fptq_layer_free_host(const fptq_backend *be, fptq_layer_weights *lw)
{
    be->host_free(lw->attn_norm);
    be->host_free(lw->mlp_norm);
    for (int id = 0; id < LIN_COUNT; id++) {
        be->host_free(lw->w[id]);
        be->host_free(lw->bias[id]);
    }
    memset(lw, 0, sizeof *lw);
}

fptq_status fptq_layer_from_ckpt(const llama_config *c, const ckpt_layer *cl, fptq_layer_weights *lw)
{
    if (cl->hidden != c->hidden_size || cl->n_linears != LIN_COUNT)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "stored layer %lld: hidden %lld and %d linears, expected %lld and %d",
                         (long long)cl->index, (long long)cl->hidden, cl->n_linears,
                         (long long)c->hidden_size, LIN_COUNT);
    memcpy(lw->attn_norm, cl->attn_norm, (size_t)c->hidden_size * sizeof(float));
    memcpy(lw->mlp_norm, cl->mlp_norm, (size_t)c->hidden_size * sizeof(float));
    for (int id = 0; id < LIN_COUNT; id++) {
        const ckpt_linear *cn = &cl->lin[id];
        int64_t out, in;
        fptq_linear_shape(c, (fptq_linear_id)id, &out, &in);
        if (strcmp(cn->name, linear_names[id]) != 0 || cn->q.rows != out || cn->q.cols != in ||
            (cn->bias != NULL) != (lw->bias[id] != NULL))
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "stored layer %lld: linear %d is %s [%lld, %lld]%s, expected %s [%lld, %lld]%s",
                             (long long)cl->index, id, cn->name, (long long)cn->q.rows, (long long)cn->q.cols,
                             cn->bias ? " with bias" : "", linear_names[id], (long long)out, (long long)in,
                             lw->bias[id] ? " with bias" : "");
        quant_dequantize(&cn->q, lw->w[id]);
        if (cn->bias)
            memcpy(lw->bias[id], cn->bias, (size_t)out * sizeof(float));
        lw->act[id] = cn->act;
    }
    return FPTQ_OK;
}

static fptq_status layer_load_checkpoint(const fptq_model *m, int64_t layer, fptq_layer_weights *lw)
{
    ckpt_layer cl;
    memset(&cl, 0, sizeof cl);
    fptq_status st = ckpt_read_layer(m->ck, layer, &cl);
    if (st == FPTQ_OK)
        st = fptq_layer_from_ckpt(&m->cfg, &cl, lw);
    ckpt_layer_free(&cl);
    return st;
}

fptq_status fptq_layer_load(const fptq_model *m, int64_t layer, fptq_layer_weights *lw)
{
    const llama_config *c = &m->cfg;
    if (m->ck)
        return layer_load_checkpoint(m, layer, lw);
    for (int id = 0; id < LIN_COUNT; id++)
        lw->act[id] = (act_quant){.kind = ACTQ_NONE};
    char name[256];
    const int64_t hidden = c->hidden_size;
    snprintf(name, sizeof name, "model.layers.%lld.input_layernorm.weight", (long long)layer);
    FPTQ_TRY(st_model_read_f32(m->st, name, 1, &hidden, lw->attn_norm));
    snprintf(name, sizeof name, "model.layers.%lld.post_attention_layernorm.weight", (long long)layer);
    FPTQ_TRY(st_model_read_f32(m->st, name, 1, &hidden, lw->mlp_norm));
    for (int id = 0; id < LIN_COUNT; id++) {
        int64_t shape[2];
        fptq_linear_shape(c, (fptq_linear_id)id, &shape[0], &shape[1]);
        snprintf(name, sizeof name, "model.layers.%lld.%s.weight", (long long)layer, linear_names[id]);
        FPTQ_TRY(st_model_read_f32(m->st, name, 2, shape, lw->w[id]));
        if (lw->bias[id]) {
            snprintf(name, sizeof name, "model.layers.%lld.%s.bias", (long long)layer, linear_names[id]);
            FPTQ_TRY(st_model_read_f32(m->st, name, 1, shape, lw->bias[id]));
        }
    }
    return FPTQ_OK;
}

fptq_status fptq_model_embed_rows(const fptq_model *m, int64_t row0, int64_t n, float *dst)
{
    if (m->ck)
        return ckpt_read_shared_rows(m->ck, "embed_tokens", row0, n, dst);
    const st_tensor *t;
    FPTQ_TRY(st_model_get(m->st, "model.embed_tokens.weight", &t));
    return st_tensor_rows_to_f32(t, row0, n, dst);
}

fptq_status fptq_model_head_rows(const fptq_model *m, int64_t row0, int64_t n, float *dst)
{
    const int tied = m->cfg.tie_word_embeddings;
    if (m->ck)
        return ckpt_read_shared_rows(m->ck, tied ? "embed_tokens" : "lm_head", row0, n, dst);
    const st_tensor *t;
    FPTQ_TRY(st_model_get(m->st, tied ? "model.embed_tokens.weight" : "lm_head.weight", &t));
    return st_tensor_rows_to_f32(t, row0, n, dst);
}

fptq_status fptq_model_final_norm(const fptq_model *m, float *dst)
{
    if (m->ck)
        return ckpt_read_shared_rows(m->ck, "norm", 0, 1, dst);
    const int64_t hidden = m->cfg.hidden_size;
    return st_model_read_f32(m->st, "model.norm.weight", 1, &hidden, dst);
}
