/*
 * The decoder forward pass, layer-major, on any backend. Activations stay
 * in one [rows, hidden] matrix; a layer runs on micro-batches of its
 * sequences where the workspace holds fewer than all; one layer's fp32
 * weights are loaded at a time and the head is streamed in vocabulary
 * blocks.
 */
#include "forward.h"

#include "layer_stream.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows of the head converted per block: bounds the head's memory to
 * HEAD_BLOCK x hidden floats whatever the vocabulary size. */
#define HEAD_BLOCK 4096

int64_t fptq_forward_up_rows(int host_memory, const llama_config *c, int64_t rows)
{
    const char *env = getenv("FPTQ_TEST_UP_ROWS");
    int64_t n = host_memory ? rows : ((int64_t)1 << 28) / (c->intermediate_size > 0 ? c->intermediate_size : 1);
    if (env && atoll(env) > 0)
        n = atoll(env);
    return n < 1 ? 1 : n > rows ? rows : n;
}

fptq_status fptq_forward_ws_alloc(const fptq_backend *be, const llama_config *c, int64_t rows,
                                  fptq_forward_ws *ws)
{
    memset(ws, 0, sizeof *ws);
    ws->be = be;
    const size_t r = (size_t)rows, f = sizeof(float);
    const size_t q_dim = (size_t)(c->num_attention_heads * c->head_dim);
    const size_t kv_dim = (size_t)(c->num_key_value_heads * c->head_dim);
    const size_t hidden = (size_t)c->hidden_size, inter = (size_t)c->intermediate_size;
    fptq_status st;
    FPTQ_TRY_GOTO(be->mem_alloc(r * hidden * f, "normed activations", (void **)&ws->h), st, fail);
    FPTQ_TRY_GOTO(be->mem_alloc(r * q_dim * f, "queries", (void **)&ws->q), st, fail);
    FPTQ_TRY_GOTO(be->mem_alloc(r * kv_dim * f, "keys", (void **)&ws->k), st, fail);
    FPTQ_TRY_GOTO(be->mem_alloc(r * kv_dim * f, "values", (void **)&ws->v), st, fail);
    FPTQ_TRY_GOTO(be->mem_alloc(r * q_dim * f, "attention output", (void **)&ws->attn), st, fail);
    FPTQ_TRY_GOTO(be->mem_alloc(r * hidden * f, "projection output", (void **)&ws->o), st, fail);
    FPTQ_TRY_GOTO(be->mem_alloc(r * inter * f, "MLP gate", (void **)&ws->gate), st, fail);
    ws->up_rows = fptq_forward_up_rows(be->host_memory, c, rows);
    FPTQ_TRY_GOTO(be->mem_alloc((size_t)ws->up_rows * inter * f, "MLP up", (void **)&ws->up), st, fail);
    ws->rows = rows;
    return FPTQ_OK;
fail:
    fptq_forward_ws_free(ws);
    return st;
}

void fptq_forward_ws_free(fptq_forward_ws *ws)
{
    if (ws->be) {
        float *p[] = {ws->h, ws->q, ws->k, ws->v, ws->attn, ws->o, ws->gate, ws->up};
        for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
            ws->be->mem_free(p[i]);
    }
    memset(ws, 0, sizeof *ws);
}

/* ---- a layer's weights in the backend's memory ------------------------------------ */

fptq_status fptq_dev_layer_alloc(const fptq_backend *be, const llama_config *c, fptq_layer_weights *host,
                                 fptq_dev_layer *d)
{
    memset(d, 0, sizeof *d);
    d->be = be;
    if (be->host_memory) {
        d->w = *host;
        return FPTQ_OK;
    }
    d->owned = 1;
    const size_t f = sizeof(float);
    fptq_status st;
    FPTQ_TRY_GOTO(be->mem_alloc((size_t)c->hidden_size * f, "attention norm", (void **)&d->w.attn_norm), st, fail);
    FPTQ_TRY_GOTO(be->mem_alloc((size_t)c->hidden_size * f, "MLP norm", (void **)&d->w.mlp_norm), st, fail);
    for (int id = 0; id < LIN_COUNT; id++) {
        int64_t out, in;
        fptq_linear_shape(c, (fptq_linear_id)id, &out, &in);
        FPTQ_TRY_GOTO(be->mem_alloc((size_t)(out * in) * f, fptq_linear_name((fptq_linear_id)id), (void **)&d->w.w[id]),
                      st, fail);
        if (host->bias[id])
            FPTQ_TRY_GOTO(be->mem_alloc((size_t)out * f, fptq_linear_name((fptq_linear_id)id), (void **)&d->w.bias[id]),
                          st, fail);
    }
    return FPTQ_OK;
fail:
    fptq_dev_layer_free(d);
    return st;
}

void fptq_dev_layer_free(fptq_dev_layer *d)
{
    if (d->owned) {
        d->be->mem_free(d->w.attn_norm);
        d->be->mem_free(d->w.mlp_norm);
        for (int id = 0; id < LIN_COUNT; id++) {
            d->be->mem_free(d->w.w[id]);
            d->be->mem_free(d->w.bias[id]);
        }
    }
    memset(d, 0, sizeof *d);
}

fptq_status fptq_dev_put(const fptq_backend *be, float *dev, const float *host, int64_t n)
{
    if (dev == host || n <= 0)
        return FPTQ_OK;
    return be->upload(dev, host, (size_t)n * sizeof(float));
}

fptq_status fptq_dev_get(const fptq_backend *be, float *host, const float *dev, int64_t n)
{
    if (dev == host || n <= 0)
        return FPTQ_OK;
    return be->download(host, dev, (size_t)n * sizeof(float));
}

/* Every array of the host layer to the backend's, by `put` (upload, or
 * upload_async on `slot`). */
static fptq_status dev_layer_put(fptq_dev_layer *d, const llama_config *c, const fptq_layer_weights *host, int slot)
{
    const fptq_backend *be = d->be;
    const size_t f = sizeof(float);
    for (int id = 0; id < LIN_COUNT; id++)
        d->w.act[id] = host->act[id];
    if (!d->owned)
        return FPTQ_OK;
#define PUT(dst, src, n) \
    FPTQ_TRY(slot < 0 ? be->upload((dst), (src), (size_t)(n) * f) : be->upload_async((dst), (src), (size_t)(n) * f, slot))
    PUT(d->w.attn_norm, host->attn_norm, c->hidden_size);
    PUT(d->w.mlp_norm, host->mlp_norm, c->hidden_size);
    for (int id = 0; id < LIN_COUNT; id++) {
        int64_t out, in;
        fptq_linear_shape(c, (fptq_linear_id)id, &out, &in);
        PUT(d->w.w[id], host->w[id], out * in);
        if (host->bias[id])
            PUT(d->w.bias[id], host->bias[id], out);
    }
#undef PUT
    return FPTQ_OK;
}

fptq_status fptq_dev_layer_upload(fptq_dev_layer *d, const llama_config *c, const fptq_layer_weights *host)
{
    return dev_layer_put(d, c, host, -1);
}

fptq_status fptq_dev_layer_upload_async(fptq_dev_layer *d, const llama_config *c, const fptq_layer_weights *host,
                                        int slot)
{
    return dev_layer_put(d, c, host, slot & 1);
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

double fptq_forward_ws_bytes(int host_memory, const llama_config *c, int64_t rows)
{
    const double q = (double)(c->num_attention_heads * c->head_dim), kv = (double)(c->num_key_value_heads * c->head_dim);
    const double H = (double)c->hidden_size, I = (double)c->intermediate_size;
    return ((double)rows * (2.0 * H + 2.0 * q + 2.0 * kv + I) +
            (double)fptq_forward_up_rows(host_memory, c, rows) * I) * (double)sizeof(float);
}

/* FPTQ_MICRO_SEQS: 0 when unset or empty, -1 when not a positive number. */
static int64_t micro_seqs_env(void)
{
    const char *env = getenv("FPTQ_MICRO_SEQS");
    if (!env || !*env)
        return 0;
    char *end;
    const long long n = strtoll(env, &end, 10);
    return *end == '\0' && n > 0 ? (int64_t)n : -1;
}

fptq_status fptq_forward_check_env(void)
{
    if (micro_seqs_env() < 0)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "FPTQ_MICRO_SEQS='%s': expected a positive number of samples per micro-batch",
                         getenv("FPTQ_MICRO_SEQS"));
    return FPTQ_OK;
}

int64_t fptq_forward_micro_seqs(int host_memory, const llama_config *c, int64_t n_seq, int64_t seq_len, double budget)
{
    const int64_t env = micro_seqs_env();
    if (env > 0)
        return env < n_seq ? env : n_seq;
    if (host_memory || budget <= 0.0)
        return n_seq;
    int64_t n = n_seq;
    while (n > 0 && fptq_forward_ws_bytes(host_memory, c, n * seq_len) > budget)
        n--;
    return n;
}

/* The columns of group g's input. */
static int64_t group_cols(const llama_config *c, fptq_linear_group g)
{
    fptq_linear_id first;
    int count;
    int64_t out, in;
    fptq_linear_group_members(g, &first, &count);
    fptq_linear_shape(c, first, &out, &in);
    return in;
}

/* What runs one micro-batch through the layer's parts. */
typedef struct layer_run {
    const fptq_backend *be;
    const llama_config *c;
    const fptq_layer_weights *lw;
    const rope_table *rt;
    fptq_forward_ws *ws;
} layer_run;

/* The input of the attention (LGROUP_QKV) or MLP (LGROUP_GATE_UP) block:
 * the residual stream x normed into ws->h. */
static fptq_status block_input(const layer_run *f, fptq_linear_group g, const float *x, int64_t rows, float **X)
{
    const float *norm = g == LGROUP_QKV ? f->lw->attn_norm : f->lw->mlp_norm;
    FPTQ_TRY(f->be->rmsnorm(x, rows, f->c->hidden_size, norm, (float)f->c->rms_norm_eps, f->ws->h));
    *X = f->ws->h;
    return FPTQ_OK;
}

/* Group g on its input X (fake-quantized first when lw->act says so), on to
 * the next group's input *next: attention after q/k/v, the MLP block's
 * input after o_proj (whose output joins x), silu(gate) * up after
 * gate/up; after down_proj (whose output joins x) *next is NULL. */
static fptq_status run_group(const layer_run *f, fptq_linear_group g, float *X, float *x, int64_t n_seq,
                             int64_t seq_len, float **next)
{
    const fptq_backend *be = f->be;
    const llama_config *c = f->c;
    const fptq_layer_weights *lw = f->lw;
    fptq_forward_ws *ws = f->ws;
    const int64_t rows = n_seq * seq_len, hidden = c->hidden_size;
    fptq_linear_id first;
    int count;
    int64_t out, in;
    fptq_linear_group_members(g, &first, &count);
    if (lw->act[first].kind != ACTQ_NONE)
        FPTQ_TRY(be->act_quant(&lw->act[first], X, rows, group_cols(c, g)));
    *next = NULL;
    switch (g) {
    case LGROUP_QKV: /* attention(rope(q), rope(k), v) */
        fptq_linear_shape(c, LIN_Q, &out, &in);
        FPTQ_TRY(be->linear(X, rows, in, lw->w[LIN_Q], out, lw->bias[LIN_Q], ws->q));
        fptq_linear_shape(c, LIN_K, &out, &in);
        FPTQ_TRY(be->linear(X, rows, in, lw->w[LIN_K], out, lw->bias[LIN_K], ws->k));
        FPTQ_TRY(be->linear(X, rows, in, lw->w[LIN_V], out, lw->bias[LIN_V], ws->v));
        FPTQ_TRY(be->rope(ws->q, n_seq, seq_len, c->num_attention_heads, f->rt));
        FPTQ_TRY(be->rope(ws->k, n_seq, seq_len, c->num_key_value_heads, f->rt));
        FPTQ_TRY(be->attention(ws->q, ws->k, ws->v, n_seq, seq_len, c->num_attention_heads, c->num_key_value_heads,
                               c->head_dim, ws->attn));
        *next = ws->attn;
        return FPTQ_OK;
    case LGROUP_O: /* x += o_proj(attention) */
        fptq_linear_shape(c, LIN_O, &out, &in);
        FPTQ_TRY(be->linear(X, rows, in, lw->w[LIN_O], out, lw->bias[LIN_O], ws->o));
        FPTQ_TRY(be->add(x, ws->o, rows * hidden));
        return block_input(f, LGROUP_GATE_UP, x, rows, next);
    case LGROUP_GATE_UP: /* silu(gate) * up, up in chunks of rows where the workspace is short */
        fptq_linear_shape(c, LIN_GATE, &out, &in);
        FPTQ_TRY(be->linear(X, rows, in, lw->w[LIN_GATE], out, NULL, ws->gate));
        for (int64_t r0 = 0; r0 < rows; r0 += ws->up_rows) {
            const int64_t nr = rows - r0 < ws->up_rows ? rows - r0 : ws->up_rows;
            FPTQ_TRY(be->linear(X + r0 * in, nr, in, lw->w[LIN_UP], out, NULL, ws->up));
            FPTQ_TRY(be->swiglu(ws->gate + r0 * out, ws->up, nr * out));
        }
        *next = ws->gate;
        return FPTQ_OK;
    case LGROUP_DOWN: /* x += down(silu(gate) * up) */
        fptq_linear_shape(c, LIN_DOWN, &out, &in);
        FPTQ_TRY(be->linear(X, rows, in, lw->w[LIN_DOWN], out, NULL, ws->o));
        FPTQ_TRY(be->add(x, ws->o, rows * hidden));
        return FPTQ_OK;
    default:
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "forward: no group %d", (int)g);
    }
}

/* The hooks' finish for group g, again while they ask. */
static fptq_status finish_group(const layer_run *f, const fptq_layer_hooks *hooks, fptq_linear_group g, float *X,
                                int64_t rows, int *again)
{
    *again = 0;
    FPTQ_TRY(hooks->finish(hooks->ctx, g, X, rows, group_cols(f->c, g), again));
    return FPTQ_OK;
}

/* The whole batch as one micro-batch: each group's input is handed to the
 * hooks and the layer goes on from it. */
static fptq_status layer_whole(const layer_run *f, float *x, int64_t n_seq, int64_t seq_len,
                               const fptq_layer_hooks *hooks)
{
    const int64_t rows = n_seq * seq_len;
    float *X;
    FPTQ_TRY(block_input(f, LGROUP_QKV, x, rows, &X));
    for (int g = 0; g < LGROUP_COUNT; g++) {
        const int64_t cols = group_cols(f->c, (fptq_linear_group)g);
        int again = hooks != NULL;
        while (again) {
            FPTQ_TRY(hooks->observe(hooks->ctx, (fptq_linear_group)g, X, 0, rows, cols));
            FPTQ_TRY(finish_group(f, hooks, (fptq_linear_group)g, X, rows, &again));
        }
        FPTQ_TRY(run_group(f, (fptq_linear_group)g, X, x, n_seq, seq_len, &X));
    }
    return FPTQ_OK;
}

/* Micro-batches of `per` sequences with hooks: for each group, every
 * micro-batch's input is computed from x (the layer's input; after the MLP
 * block's first pass, the residual stream after attention) and observed,
 * then the hooks finish the group; the last pass adds the MLP's output. */
static fptq_status layer_micro(const layer_run *f, float *x, int64_t n_seq, int64_t seq_len, int64_t per,
                               const fptq_layer_hooks *hooks)
{
    const int64_t hidden = f->c->hidden_size;
    int attention_added = 0; /* x holds the residual stream after attention */
    for (int g = 0; g <= LGROUP_COUNT; g++) {
        int again = 1;
        while (again) {
            for (int64_t s0 = 0; s0 < n_seq; s0 += per) {
                const int64_t ns = n_seq - s0 < per ? n_seq - s0 : per, r0 = s0 * seq_len;
                float *xc = x + r0 * hidden, *X;
                const int start = attention_added ? LGROUP_GATE_UP : LGROUP_QKV;
                FPTQ_TRY(block_input(f, (fptq_linear_group)start, xc, ns * seq_len, &X));
                for (int h = start; h < g; h++)
                    FPTQ_TRY(run_group(f, (fptq_linear_group)h, X, xc, ns, seq_len, &X));
                if (g < LGROUP_COUNT)
                    FPTQ_TRY(hooks->observe(hooks->ctx, (fptq_linear_group)g, X, r0, ns * seq_len,
                                            group_cols(f->c, (fptq_linear_group)g)));
            }
            if (g > LGROUP_O)
                attention_added = 1;
            if (g == LGROUP_COUNT)
                break;
            FPTQ_TRY(finish_group(f, hooks, (fptq_linear_group)g, NULL, n_seq * seq_len, &again));
        }
    }
    return FPTQ_OK;
}

fptq_status fptq_layer_forward(const fptq_backend *be, const llama_config *c,
                               const fptq_layer_weights *lw, const rope_table *rt, float *x,
                               int64_t n_seq, int64_t seq_len, fptq_forward_ws *ws,
                               const fptq_layer_hooks *hooks)
{
    const int64_t per = seq_len > 0 ? ws->rows / seq_len : 0;
    if (per < 1)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "forward: a workspace of %lld rows holds no sequence of %lld",
                         (long long)ws->rows, (long long)seq_len);
    const layer_run f = {.be = be, .c = c, .lw = lw, .rt = rt, .ws = ws};
    if (n_seq <= per)
        return layer_whole(&f, x, n_seq, seq_len, hooks);
    if (hooks)
        return layer_micro(&f, x, n_seq, seq_len, per, hooks);
    for (int64_t s0 = 0; s0 < n_seq; s0 += per)
        FPTQ_TRY(layer_whole(&f, x + s0 * seq_len * c->hidden_size, n_seq - s0 < per ? n_seq - s0 : per, seq_len,
                             NULL));
    return FPTQ_OK;
}

fptq_status fptq_head_nll(const fptq_backend *be, const fptq_model *m, float *x, int64_t n,
                          const int32_t *targets, double *nll, float *logits)
{
    const llama_config *c = &m->cfg;
    const int64_t hidden = c->hidden_size, vocab = c->vocab_size;
    const int64_t bs = vocab < HEAD_BLOCK ? vocab : HEAD_BLOCK;
    const int host = be->host_memory;
    /* host arrays; the backend's twins (d_) are the same arrays on a host backend */
    float *norm = NULL, *w = NULL, *d_norm = NULL, *d_w = NULL, *d_block = NULL, *h_block = NULL;
    double *mx = NULL, *sum = NULL, *target_logit = NULL, *d_mx = NULL, *d_sum = NULL, *d_tl = NULL;
    int32_t *tg = NULL, *d_tg = NULL;
    fptq_status st;
    const size_t f = sizeof(float), dbl = sizeof(double);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)hidden, f, "final norm", &norm), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(bs * hidden), f, "head block", &w), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)n, dbl, "row max", &mx), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)n, dbl, "row sum", &sum), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)n, dbl, "target logits", &target_logit), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)n, sizeof(int32_t), "targets", &tg), st, done);
    FPTQ_TRY_GOTO(be->mem_alloc((size_t)(n * bs) * f, "logits block", (void **)&d_block), st, done);
    if (host) {
        d_norm = norm, d_w = w, d_mx = mx, d_sum = sum, d_tl = target_logit, d_tg = tg, h_block = d_block;
    } else {
        FPTQ_TRY_GOTO(be->mem_alloc((size_t)hidden * f, "final norm", (void **)&d_norm), st, done);
        FPTQ_TRY_GOTO(be->mem_alloc((size_t)(bs * hidden) * f, "head block", (void **)&d_w), st, done);
        FPTQ_TRY_GOTO(be->mem_alloc((size_t)n * dbl, "row max", (void **)&d_mx), st, done);
        FPTQ_TRY_GOTO(be->mem_alloc((size_t)n * dbl, "row sum", (void **)&d_sum), st, done);
        FPTQ_TRY_GOTO(be->mem_alloc((size_t)n * dbl, "target logits", (void **)&d_tl), st, done);
        FPTQ_TRY_GOTO(be->mem_alloc((size_t)n * sizeof(int32_t), "targets", (void **)&d_tg), st, done);
        if (logits)
            FPTQ_TRY_GOTO(fptq_calloc((size_t)(n * bs), f, "logits block", &h_block), st, done);
    }

    FPTQ_TRY_GOTO(fptq_model_final_norm(m, norm), st, done);
    FPTQ_TRY_GOTO(fptq_dev_put(be, d_norm, norm, hidden), st, done);
    FPTQ_TRY_GOTO(be->rmsnorm(x, n, hidden, d_norm, (float)c->rms_norm_eps, x), st, done);
    for (int64_t i = 0; i < n; i++) {
        mx[i] = -INFINITY;
        tg[i] = targets ? targets[i] : -1;
    }
    if (!host) {
        FPTQ_TRY_GOTO(be->upload(d_mx, mx, (size_t)n * dbl), st, done);
        FPTQ_TRY_GOTO(be->upload(d_sum, sum, (size_t)n * dbl), st, done);
        FPTQ_TRY_GOTO(be->upload(d_tl, target_logit, (size_t)n * dbl), st, done);
        FPTQ_TRY_GOTO(be->upload(d_tg, tg, (size_t)n * sizeof(int32_t)), st, done);
    }

    for (int64_t v0 = 0; v0 < vocab; v0 += bs) {
        const int64_t nb = vocab - v0 < bs ? vocab - v0 : bs;
        FPTQ_TRY_GOTO(fptq_model_head_rows(m, v0, nb, w), st, done);
        FPTQ_TRY_GOTO(fptq_dev_put(be, d_w, w, nb * hidden), st, done);
        FPTQ_TRY_GOTO(be->linear(x, n, hidden, d_w, nb, NULL, d_block), st, done);
        FPTQ_TRY_GOTO(be->logsumexp_accumulate(d_block, n, nb, nb, d_mx, d_sum), st, done);
        FPTQ_TRY_GOTO(be->pick_targets(d_block, n, nb, v0, d_tg, d_tl), st, done);
        if (logits) {
            FPTQ_TRY_GOTO(fptq_dev_get(be, h_block, d_block, n * nb), st, done);
            for (int64_t i = 0; i < n; i++)
                memcpy(logits + i * vocab + v0, h_block + i * nb, (size_t)nb * sizeof(float));
        }
    }
    if (!host) {
        FPTQ_TRY_GOTO(be->download(mx, d_mx, (size_t)n * dbl), st, done);
        FPTQ_TRY_GOTO(be->download(sum, d_sum, (size_t)n * dbl), st, done);
        FPTQ_TRY_GOTO(be->download(target_logit, d_tl, (size_t)n * dbl), st, done);
    }
    for (int64_t i = 0; i < n; i++)
        nll[i] = (targets && targets[i] >= 0) ? mx[i] + log(sum[i]) - target_logit[i] : NAN;
    st = FPTQ_OK;
done:
    be->mem_free(d_block);
    if (!host) {
        be->mem_free(d_norm); be->mem_free(d_w); be->mem_free(d_mx); be->mem_free(d_sum);
        be->mem_free(d_tl); be->mem_free(d_tg);
        free(h_block);
    }
    free(norm); free(w); free(mx); free(sum); free(target_logit); free(tg);
    return st;
}

/* Embedding and every decoder layer of n_seq sequences, layer-major, into
 * *x_out (backend memory, rows x hidden; owned by the caller: be->mem_free,
 * or free() when it is the host array on a host backend). */
static fptq_status forward_layers(const fptq_backend *be, const fptq_model *m, const int32_t *ids, int64_t n_seq,
                                  int64_t seq_len, int progress, float **x_out)
{
    const llama_config *c = &m->cfg;
    const int64_t rows = n_seq * seq_len;
    const size_t xbytes = (size_t)(rows * c->hidden_size) * sizeof(float);
    float *hx = NULL, *x = NULL;
    fptq_layer_stream ls = {0};
    fptq_forward_ws ws = {0};
    rope_table rt = {0};
    const rope_params rp = fptq_rope_params(c);
    fptq_status st;
    *x_out = NULL;

    FPTQ_TRY_GOTO(fptq_calloc(xbytes, 1, "activations", &hx), st, done);
    FPTQ_TRY_GOTO(fptq_layer_stream_init(&ls, be, m), st, done);
    /* without hooks micro-batches cost nothing more: a workspace of at most 4 GiB on a device */
    const int64_t micro = fptq_forward_micro_seqs(be->host_memory, c, n_seq, seq_len, 4.0 * (1 << 30));
    FPTQ_TRY_GOTO(fptq_forward_ws_alloc(be, c, (micro > 0 ? micro : 1) * seq_len, &ws), st, done);
    FPTQ_TRY_GOTO(rope_table_init(&rp, seq_len, &rt), st, done);
    FPTQ_TRY_GOTO(fptq_embed(m, ids, rows, hx), st, done);
    if (be->host_memory) {
        x = hx;
    } else {
        FPTQ_TRY_GOTO(be->mem_alloc(xbytes, "activations", (void **)&x), st, done);
        FPTQ_TRY_GOTO(be->upload(x, hx, xbytes), st, done);
    }

    for (int64_t l = 0; l < c->num_hidden_layers; l++) {
        const double t0 = fptq_now();
        fptq_layer_weights *lw;
        fptq_dev_layer *dl;
        /* layer l + 1 loads while layer l computes */
        st = fptq_layer_stream_get(&ls, l, l + 1, &lw, &dl);
        if (st == FPTQ_OK)
            st = fptq_layer_forward(be, c, &dl->w, &rt, x, n_seq, seq_len, &ws, NULL);
        if (st != FPTQ_OK) {
            fptq_error_context("layer %lld", (long long)l);
            fptq_trace(__FILE__, __LINE__, "layer");
            goto done;
        }
        if (progress)
            fptq_info("  layer %lld/%lld done in %.2f s", (long long)l + 1,
                      (long long)c->num_hidden_layers, fptq_now() - t0);
    }
    *x_out = x;
    if (x == hx)
        hx = NULL;
    x = NULL;
    st = FPTQ_OK;
done:
    if (x && x != hx)
        be->mem_free(x);
    free(hx);
    fptq_layer_stream_free(&ls);
    fptq_forward_ws_free(&ws);
    rope_table_free(&rt);
    return st;
}

static void free_activations(const fptq_backend *be, float *x)
{
    if (be->host_memory)
        free(x);
    else
        be->mem_free(x);
}

fptq_status fptq_forward_nll(const fptq_backend *be, const fptq_model *m, const int32_t *ids,
                             int64_t n_seq, int64_t seq_len, double *nll, float *logits,
                             int progress)
{
    const int64_t rows = n_seq * seq_len;
    float *x = NULL;
    int32_t *targets = NULL;
    fptq_status st;
    FPTQ_TRY_GOTO(fptq_calloc((size_t)rows, sizeof(int32_t), "targets", &targets), st, done);
    FPTQ_TRY_GOTO(forward_layers(be, m, ids, n_seq, seq_len, progress, &x), st, done);
    for (int64_t r = 0; r < rows; r++)
        targets[r] = (r % seq_len == seq_len - 1) ? -1 : ids[r + 1];
    FPTQ_TRY_GOTO(fptq_head_nll(be, m, x, rows, targets, nll, logits), st, done);
    st = FPTQ_OK;
done:
    if (x)
        free_activations(be, x);
    free(targets);
    return st;
}

fptq_status fptq_forward_final(const fptq_backend *be, const fptq_model *m, const int32_t *ids, int64_t n_seq,
                               int64_t seq_len, float *out, int progress)
{
    const llama_config *c = &m->cfg;
    const int64_t rows = n_seq * seq_len, hidden = c->hidden_size;
    float *x = NULL, *norm = NULL, *d_norm = NULL;
    fptq_status st;
    FPTQ_TRY_GOTO(fptq_calloc((size_t)hidden, sizeof(float), "final norm", &norm), st, done);
    FPTQ_TRY_GOTO(forward_layers(be, m, ids, n_seq, seq_len, progress, &x), st, done);
    FPTQ_TRY_GOTO(fptq_model_final_norm(m, norm), st, done);
    if (be->host_memory)
        d_norm = norm;
    else {
        FPTQ_TRY_GOTO(be->mem_alloc((size_t)hidden * sizeof(float), "final norm", (void **)&d_norm), st, done);
        FPTQ_TRY_GOTO(fptq_dev_put(be, d_norm, norm, hidden), st, done);
    }
    FPTQ_TRY_GOTO(be->rmsnorm(x, rows, hidden, d_norm, (float)c->rms_norm_eps, x), st, done);
    FPTQ_TRY_GOTO(fptq_dev_get(be, out, x, rows * hidden), st, done);
    st = FPTQ_OK;
done:
    if (d_norm && d_norm != norm)
        be->mem_free(d_norm);
    free(norm);
    if (x)
        free_activations(be, x);
    return st;
}
