/*
 * The decoder forward pass, layer-major, on any backend. Activations stay
 * in one [rows, hidden] matrix; one layer's fp32 weights are loaded at a
 * time and the head is streamed in vocabulary blocks.
 */
#include "forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows of the head converted per block: bounds the head's memory to
 * HEAD_BLOCK x hidden floats whatever the vocabulary size. */
#define HEAD_BLOCK 4096

fptq_status fptq_forward_ws_alloc(const llama_config *c, int64_t rows, fptq_forward_ws *ws)
{
    memset(ws, 0, sizeof *ws);
    const size_t r = (size_t)rows;
    const size_t q_dim = (size_t)(c->num_attention_heads * c->head_dim);
    const size_t kv_dim = (size_t)(c->num_key_value_heads * c->head_dim);
    const size_t hidden = (size_t)c->hidden_size, inter = (size_t)c->intermediate_size;
    fptq_status st;
    FPTQ_TRY_GOTO(fptq_calloc(r * hidden, sizeof(float), "normed activations", &ws->h), st, fail);
    FPTQ_TRY_GOTO(fptq_calloc(r * q_dim, sizeof(float), "queries", &ws->q), st, fail);
    FPTQ_TRY_GOTO(fptq_calloc(r * kv_dim, sizeof(float), "keys", &ws->k), st, fail);
    FPTQ_TRY_GOTO(fptq_calloc(r * kv_dim, sizeof(float), "values", &ws->v), st, fail);
    FPTQ_TRY_GOTO(fptq_calloc(r * q_dim, sizeof(float), "attention output", &ws->attn), st, fail);
    FPTQ_TRY_GOTO(fptq_calloc(r * hidden, sizeof(float), "projection output", &ws->o), st, fail);
    FPTQ_TRY_GOTO(fptq_calloc(r * inter, sizeof(float), "MLP gate", &ws->gate), st, fail);
    FPTQ_TRY_GOTO(fptq_calloc(r * inter, sizeof(float), "MLP up", &ws->up), st, fail);
    ws->rows = rows;
    return FPTQ_OK;
fail:
    fptq_forward_ws_free(ws);
    return st;
}

void fptq_forward_ws_free(fptq_forward_ws *ws)
{
    free(ws->h); free(ws->q); free(ws->k); free(ws->v);
    free(ws->attn); free(ws->o); free(ws->gate); free(ws->up);
    memset(ws, 0, sizeof *ws);
}

fptq_status fptq_embed(const fptq_model *m, const int32_t *ids, int64_t n, float *x)
{
    const int64_t vocab = m->cfg.vocab_size;
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= vocab)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "token id %d at position %lld is outside the vocabulary [0, %lld)",
                             ids[i], (long long)i, (long long)vocab);
        FPTQ_TRY(fptq_model_embed_rows(m, ids[i], 1, x + i * m->cfg.hidden_size));
    }
    return FPTQ_OK;
}

/* The hook (calibration), then the input's fake-quantization, of group g. */
static fptq_status before_group(const fptq_backend *be, const fptq_layer_weights *lw,
                                const fptq_layer_hooks *hooks, fptq_linear_group g, float *X,
                                int64_t rows, int64_t cols)
{
    if (hooks)
        FPTQ_TRY(hooks->before_group(hooks->ctx, g, X, rows, cols));
    fptq_linear_id first;
    int count;
    fptq_linear_group_members(g, &first, &count);
    if (lw->act[first].kind != ACTQ_NONE)
        FPTQ_TRY(be->act_quant(&lw->act[first], X, rows, cols));
    return FPTQ_OK;
}

fptq_status fptq_layer_forward(const fptq_backend *be, const llama_config *c,
                               const fptq_layer_weights *lw, const rope_table *rt, float *x,
                               int64_t n_seq, int64_t seq_len, fptq_forward_ws *ws,
                               const fptq_layer_hooks *hooks)
{
    const int64_t rows = n_seq * seq_len, hidden = c->hidden_size;
    const int64_t nh = c->num_attention_heads, nkv = c->num_key_value_heads, hd = c->head_dim;
    const float eps = (float)c->rms_norm_eps;
    if (rows > ws->rows)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "forward: %lld rows over workspace of %lld",
                         (long long)rows, (long long)ws->rows);
    int64_t out, in;

    /* attention block: x += o_proj(attention(rope(q), rope(k), v)) */
    FPTQ_TRY(be->rmsnorm(x, rows, hidden, lw->attn_norm, eps, ws->h));
    FPTQ_TRY(before_group(be, lw, hooks, LGROUP_QKV, ws->h, rows, hidden));
    fptq_linear_shape(c, LIN_Q, &out, &in);
    FPTQ_TRY(be->linear(ws->h, rows, in, lw->w[LIN_Q], out, lw->bias[LIN_Q], ws->q));
    fptq_linear_shape(c, LIN_K, &out, &in);
    FPTQ_TRY(be->linear(ws->h, rows, in, lw->w[LIN_K], out, lw->bias[LIN_K], ws->k));
    FPTQ_TRY(be->linear(ws->h, rows, in, lw->w[LIN_V], out, lw->bias[LIN_V], ws->v));
    FPTQ_TRY(be->rope(ws->q, n_seq, seq_len, nh, rt));
    FPTQ_TRY(be->rope(ws->k, n_seq, seq_len, nkv, rt));
    FPTQ_TRY(be->attention(ws->q, ws->k, ws->v, n_seq, seq_len, nh, nkv, hd, ws->attn));
    fptq_linear_shape(c, LIN_O, &out, &in);
    FPTQ_TRY(before_group(be, lw, hooks, LGROUP_O, ws->attn, rows, in));
    FPTQ_TRY(be->linear(ws->attn, rows, in, lw->w[LIN_O], out, lw->bias[LIN_O], ws->o));
    FPTQ_TRY(be->add(x, ws->o, rows * hidden));

    /* MLP block: x += down(silu(gate(h)) * up(h)) */
    FPTQ_TRY(be->rmsnorm(x, rows, hidden, lw->mlp_norm, eps, ws->h));
    FPTQ_TRY(before_group(be, lw, hooks, LGROUP_GATE_UP, ws->h, rows, hidden));
    fptq_linear_shape(c, LIN_GATE, &out, &in);
    FPTQ_TRY(be->linear(ws->h, rows, in, lw->w[LIN_GATE], out, NULL, ws->gate));
    FPTQ_TRY(be->linear(ws->h, rows, in, lw->w[LIN_UP], out, NULL, ws->up));
    FPTQ_TRY(be->swiglu(ws->gate, ws->up, rows * out));
    fptq_linear_shape(c, LIN_DOWN, &out, &in);
    FPTQ_TRY(before_group(be, lw, hooks, LGROUP_DOWN, ws->gate, rows, in));
    FPTQ_TRY(be->linear(ws->gate, rows, in, lw->w[LIN_DOWN], out, NULL, ws->o));
    FPTQ_TRY(be->add(x, ws->o, rows * hidden));
    return FPTQ_OK;
}

fptq_status fptq_head_nll(const fptq_backend *be, const fptq_model *m, float *x, int64_t n,
                          const int32_t *targets, double *nll, float *logits)
{
    const llama_config *c = &m->cfg;
    const int64_t hidden = c->hidden_size, vocab = c->vocab_size;
    float *norm = NULL, *w = NULL, *block = NULL;
    double *mx = NULL, *sum = NULL, *target_logit = NULL;
    const int64_t bs = vocab < HEAD_BLOCK ? vocab : HEAD_BLOCK;
    fptq_status st;
    FPTQ_TRY_GOTO(fptq_calloc((size_t)hidden, sizeof(float), "final norm", &norm), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(bs * hidden), sizeof(float), "head block", &w), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(n * bs), sizeof(float), "logits block", &block), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)n, sizeof(double), "row max", &mx), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)n, sizeof(double), "row sum", &sum), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)n, sizeof(double), "target logits", &target_logit), st, done);

    FPTQ_TRY_GOTO(fptq_model_final_norm(m, norm), st, done);
    FPTQ_TRY_GOTO(be->rmsnorm(x, n, hidden, norm, (float)c->rms_norm_eps, x), st, done);
    for (int64_t i = 0; i < n; i++)
        mx[i] = -INFINITY;

    for (int64_t v0 = 0; v0 < vocab; v0 += bs) {
        const int64_t nb = vocab - v0 < bs ? vocab - v0 : bs;
        FPTQ_TRY_GOTO(fptq_model_head_rows(m, v0, nb, w), st, done);
        FPTQ_TRY_GOTO(be->linear(x, n, hidden, w, nb, NULL, block), st, done);
        FPTQ_TRY_GOTO(be->logsumexp_accumulate(block, n, nb, nb, mx, sum), st, done);
        for (int64_t i = 0; i < n; i++) {
            if (targets && targets[i] >= v0 && targets[i] < v0 + nb)
                target_logit[i] = block[i * nb + (targets[i] - v0)];
            if (logits)
                memcpy(logits + i * vocab + v0, block + i * nb, (size_t)nb * sizeof(float));
        }
    }
    for (int64_t i = 0; i < n; i++)
        nll[i] = (targets && targets[i] >= 0) ? mx[i] + log(sum[i]) - target_logit[i] : NAN;
    st = FPTQ_OK;
done:
    free(norm); free(w); free(block); free(mx); free(sum); free(target_logit);
    return st;
}

fptq_status fptq_forward_nll(const fptq_backend *be, const fptq_model *m, const int32_t *ids,
                             int64_t n_seq, int64_t seq_len, double *nll, float *logits,
                             int progress)
{
    const llama_config *c = &m->cfg;
    const int64_t rows = n_seq * seq_len;
    float *x = NULL;
    int32_t *targets = NULL;
    fptq_layer_weights lw = {0};
    fptq_forward_ws ws = {0};
    rope_table rt = {0};
    const rope_params rp = fptq_rope_params(c);
    fptq_status st;

    FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows * c->hidden_size), sizeof(float), "activations", &x), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)rows, sizeof(int32_t), "targets", &targets), st, done);
    FPTQ_TRY_GOTO(fptq_layer_alloc(c, &lw), st, done);
    FPTQ_TRY_GOTO(fptq_forward_ws_alloc(c, rows, &ws), st, done);
    FPTQ_TRY_GOTO(rope_table_init(&rp, seq_len, &rt), st, done);
    FPTQ_TRY_GOTO(fptq_embed(m, ids, rows, x), st, done);

    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        const double t0 = fptq_now();
        st = fptq_layer_load(m, l, &lw);
        if (st == FPTQ_OK)
            st = fptq_layer_forward(be, c, &lw, &rt, x, n_seq, seq_len, &ws, NULL);
        if (st != FPTQ_OK) {
            fptq_error_context("layer %lld", (long long)l);
            fptq_trace(__FILE__, __LINE__, "layer");
            goto done;
        }
        if (progress)
            fptq_info("  layer %lld/%lld done in %.2f s", (long long)l + 1,
                      (long long)c->num_hidden_layers, fptq_now() - t0);
    }
    for (int64_t r = 0; r < rows; r++)
        targets[r] = (r % seq_len == seq_len - 1) ? -1 : ids[r + 1];
    FPTQ_TRY_GOTO(fptq_head_nll(be, m, x, rows, targets, nll, logits), st, done);
    st = FPTQ_OK;
done:
    free(x);
    free(targets);
    fptq_layer_free(&lw);
    fptq_forward_ws_free(&ws);
    rope_table_free(&rt);
    return st;
}
