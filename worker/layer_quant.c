/*
 * One layer's calibration and quantization (layer_quant.h): statistics
 * summed over the stage's ranks as raw sums and counts, scale folds, GPTQ /
 * RTN / AWQ on each rank's share of the rows, gathered so that every rank
 * holds the whole quantized layer; and the statistics alone, for tests.
 */
#include "layer_quant.h"

#include "../kernels/smooth.h"
#include "../sharding/sharding.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The smooth_group of the linears reading group g's input. */
static smooth_group group_of(const layer_job *j, fptq_linear_group g)
{
    fptq_linear_id first;
    int count;
    fptq_linear_group_members(g, &first, &count);
    smooth_group sg = {.n_lin = count};
    for (int i = 0; i < count; i++) {
        int64_t out, in;
        fptq_linear_shape(j->c, (fptq_linear_id)(first + i), &out, &in);
        sg.W[i] = j->lw->w[first + i];
        sg.rows[i] = out;
        sg.cols = in;
    }
    return sg;
}

/* Folds X / s into what produces X, and W s into the group's linears: on
 * the host layer, then uploaded to the backend's; X itself (when the
 * forward holds it whole; else NULL) is scaled too. *folded = 0 when the
 * group's input cannot absorb a scale (o_proj under GQA: v_proj's rows feed
 * several heads' worth of o_proj columns). */
static fptq_status fold_group_scale(layer_job *j, fptq_linear_group g, const float *s, float *X, int64_t rows,
                                    int *folded)
{
    const llama_config *c = j->c;
    const fptq_backend *be = j->be;
    fptq_layer_weights *lw = j->lw, *dw = &j->dl->w;
    smooth_group sg = group_of(j, g);
    const int64_t hidden = c->hidden_size;
    *folded = 0;
    switch (g) {
    case LGROUP_QKV:
        fold_scale_into_norm(lw->attn_norm, sg.cols, s);
        FPTQ_TRY(fptq_dev_put(be, dw->attn_norm, lw->attn_norm, hidden));
        break;
    case LGROUP_GATE_UP:
        fold_scale_into_norm(lw->mlp_norm, sg.cols, s);
        FPTQ_TRY(fptq_dev_put(be, dw->mlp_norm, lw->mlp_norm, hidden));
        break;
    case LGROUP_DOWN:
        fold_scale_into_output(lw->w[LIN_UP], NULL, c->intermediate_size, hidden, s);
        FPTQ_TRY(fptq_dev_put(be, dw->w[LIN_UP], lw->w[LIN_UP], c->intermediate_size * hidden));
        break;
    case LGROUP_O: {
        if (c->num_key_value_heads != c->num_attention_heads)
            return FPTQ_OK;
        const int64_t kv = c->num_key_value_heads * c->head_dim;
        fold_scale_into_output(lw->w[LIN_V], lw->bias[LIN_V], kv, hidden, s);
        FPTQ_TRY(fptq_dev_put(be, dw->w[LIN_V], lw->w[LIN_V], kv * hidden));
        if (lw->bias[LIN_V])
            FPTQ_TRY(fptq_dev_put(be, dw->bias[LIN_V], lw->bias[LIN_V], kv));
        break;
    }
    default: return FPTQ_OK;
    }
    fptq_linear_id first;
    int count;
    fptq_linear_group_members(g, &first, &count);
    for (int i = 0; i < sg.n_lin; i++) {
        fold_scale_into_input(sg.W[i], sg.rows[i], sg.cols, s);
        FPTQ_TRY(fptq_dev_put(be, dw->w[first + i], sg.W[i], sg.rows[i] * sg.cols));
    }
    if (X)
        FPTQ_TRY(be->scale_columns(X, rows, sg.cols, s));
    *folded = 1;
    return FPTQ_OK;
}

/* Copies rows [r0, r0 + part->rows) of a quantized tensor into the whole one. */
static void put_rows(quant_tensor *whole, const quant_tensor *part, int64_t r0)
{
    const int64_t cols = whole->cols, ng = whole->n_groups;
    memcpy(whole->codes + r0 * cols, part->codes, (size_t)(part->rows * cols));
    memcpy(whole->scales + r0 * ng, part->scales, (size_t)(part->rows * ng) * sizeof(float));
    if (whole->zeros)
        memcpy(whole->zeros + r0 * ng, part->zeros, (size_t)(part->rows * ng) * sizeof(int32_t));
}

/* Every rank's rows of a quantized tensor, gathered so that all hold all of it. */
static fptq_status gather_rows(const layer_job *j, quant_tensor *q, const int64_t *row_begin, const int64_t *row_end)
{
    const fptq_collectives *c = j->coll;
    if (c->size == 1)
        return FPTQ_OK;
    size_t *counts;
    FPTQ_TRY(fptq_calloc((size_t)c->size, sizeof(size_t), "gather counts", &counts));
    const int64_t cols = q->cols, ng = q->n_groups, mine = row_begin[c->rank];
    fptq_status st;
    for (int m = 0; m < c->size; m++)
        counts[m] = (size_t)((row_end[m] - row_begin[m]) * cols);
    FPTQ_TRY_GOTO(c->allgatherv(c->ctx, q->codes + mine * cols, q->codes, counts), st, done);
    for (int m = 0; m < c->size; m++)
        counts[m] = (size_t)((row_end[m] - row_begin[m]) * ng) * sizeof(float);
    FPTQ_TRY_GOTO(c->allgatherv(c->ctx, q->scales + mine * ng, q->scales, counts), st, done);
    if (q->zeros)
        FPTQ_TRY_GOTO(c->allgatherv(c->ctx, q->zeros + mine * ng, q->zeros, counts), st, done);
    st = FPTQ_OK;
done:
    free(counts);
    return st;
}

/* Quantizes this rank's rows [r0, r1) of linear id (rows are independent
 * once H is shared), gathers every rank's rows, and leaves the dequantized
 * weights in the backend's layer so the next group sees them. */
static fptq_status quantize_linear(layer_job *j, fptq_linear_id id, const int64_t *row_begin, const int64_t *row_end)
{
    const fptq_recipe *r = j->r;
    const fptq_backend *be = j->be;
    const fptq_collectives *coll = j->coll;
    int64_t out, in;
    fptq_linear_shape(j->c, id, &out, &in);
    ckpt_linear *cl = &j->out->lin[id];
    float *W = j->dl->w.w[id];
    const int64_t r0 = row_begin[coll->rank], nr = row_end[coll->rank] - r0;
    const int64_t ng = quant_n_groups(&r->weight, in);
    snprintf(cl->name, sizeof cl->name, "%s", fptq_linear_name(id));
    snprintf(cl->method, sizeof cl->method, "%s", fptq_method_name(r->method));
    FPTQ_TRY(quant_tensor_alloc(&r->weight, out, in, r->act_order, &cl->q));

    double loss = 0.0;
    float damp = 0.0f;
    if (nr > 0) {
        /* this rank's rows as they were, for the loss */
        float *Wf = j->Wf;
        FPTQ_TRY(be->mem_copy(Wf, W + r0 * in, (size_t)(nr * in) * sizeof(float)));
        quant_tensor part;
        FPTQ_TRY(quant_tensor_alloc(&r->weight, nr, in, r->act_order, &part));
        fptq_status st;
        if (r->method == METHOD_GPTQ) {
            gptq_opts go = {.damp_percent = r->damp, .block_size = 128, .act_order = r->act_order};
            gptq_result gr;
            st = be->gptq_rows(j->gptq_plan, Wf, nr, in, &go, &part, &gr);
            damp = gr.damp;
        } else {
            st = be->rtn(Wf, nr, in, j->clip[id] ? j->clip[id] + r0 * ng : NULL, &part);
        }
        if (st == FPTQ_OK) {
            put_rows(&cl->q, &part, r0);
            st = be->dequantize(&part, j->Qpart);
        }
        if (st == FPTQ_OK)
            st = be->proxy_loss(Wf, j->Qpart, nr, in, j->H, &loss);
        quant_tensor_free(&part);
        FPTQ_TRY(st);
    }
    FPTQ_TRY(gather_rows(j, &cl->q, row_begin, row_end));
    if (cl->q.g_idx) /* act-order keeps static groups: column c is in group c / group_size */
        for (int64_t c = 0; c < in; c++)
            cl->q.g_idx[c] = r->weight.group_size > 0 ? (int32_t)(c / r->weight.group_size) : 0;
    FPTQ_TRY(coll->allreduce(coll->ctx, &loss, 1, FPTQ_DT_F64, FPTQ_OP_SUM));
    FPTQ_TRY(coll->allreduce(coll->ctx, &damp, 1, FPTQ_DT_F32, FPTQ_OP_MAX));
    cl->loss = loss;
    cl->damp = damp;
    FPTQ_TRY(be->dequantize(&cl->q, W));
    if (j->lw->bias[id]) {
        FPTQ_TRY(fptq_calloc((size_t)out, sizeof(float), "bias copy", &cl->bias));
        memcpy(cl->bias, j->lw->bias[id], (size_t)out * sizeof(float));
    }
    return FPTQ_OK;
}

/* Adds rows [r0, r0 + rows) of X to this rank's statistics (raw sums and
 * token counts; scaled once, later, into H), starting afresh at row 0. */
static fptq_status stats_observe(layer_job *j, linear_stats *stats, const float *X, int64_t r0, int64_t rows)
{
    if (r0 == 0)
        FPTQ_TRY(j->be->stats_reset(stats));
    return j->be->stats_accumulate(stats, X, rows);
}

/* The statistics summed over the stage's ranks; the per-channel sums and
 * maxima also in the host copies j->abs_sum, j->abs_max. */
static fptq_status stats_reduce(layer_job *j, linear_stats *stats)
{
    const fptq_collectives *c = j->coll, *dc = j->dcoll;
    const fptq_backend *be = j->be;
    const size_t cols = (size_t)stats->cols;
    FPTQ_TRY(dc->allreduce(dc->ctx, stats->xtx, cols * cols, FPTQ_DT_F32, FPTQ_OP_SUM));
    FPTQ_TRY(dc->allreduce(dc->ctx, stats->abs_sum, cols, FPTQ_DT_F64, FPTQ_OP_SUM));
    FPTQ_TRY(dc->allreduce(dc->ctx, stats->abs_max, cols, FPTQ_DT_F32, FPTQ_OP_MAX));
    FPTQ_TRY(c->allreduce(c->ctx, &stats->tokens, 1, FPTQ_DT_I64, FPTQ_OP_SUM));
    if (j->abs_sum) {
        FPTQ_TRY(be->download(j->abs_sum, stats->abs_sum, cols * sizeof(double)));
        FPTQ_TRY(be->download(j->abs_max, stats->abs_max, cols * sizeof(float)));
    }
    return FPTQ_OK;
}

/* AWQ scores on a subsample of AWQ_TOKENS tokens: evenly spaced rows of
 * every rank's X, gathered, so that all ranks search on the same data (and
 * one rank picks exactly the rows awq_search_scale would pick itself).
 * subsample_plan shares out the tokens (once per layer: it depends on the
 * ranks' row counts only), subsample_observe copies this rank's picks as
 * the micro-batches pass, subsample_gather shares them. */
#define AWQ_TOKENS 4096
static fptq_status subsample_plan(layer_job *j, int64_t rows)
{
    const fptq_collectives *c = j->coll;
    int64_t total = rows;
    FPTQ_TRY(c->allreduce(c->ctx, &total, 1, FPTQ_DT_I64, FPTQ_OP_SUM));
    const int64_t want = total < AWQ_TOKENS ? total : AWQ_TOKENS;
    /* this rank's share, in proportion to its tokens */
    const int64_t mine = (int64_t)((double)want * (double)rows / (double)(total > 0 ? total : 1) + 0.5);
    for (int m = 0; m < c->size; m++)
        j->sub_counts[m] = sizeof(int64_t);
    j->sub_k[c->rank] = mine < rows ? mine : rows;
    FPTQ_TRY(c->allgatherv(c->ctx, &j->sub_k[c->rank], j->sub_k, j->sub_counts));
    j->sub_off = 0;
    j->sub_n = 0;
    for (int m = 0; m < c->size; m++) {
        if (m < c->rank)
            j->sub_off += j->sub_k[m];
        j->sub_n += j->sub_k[m];
    }
    j->rows = rows;
    return FPTQ_OK;
}

static fptq_status subsample_observe(layer_job *j, const float *X, int64_t r0, int64_t rows, int64_t cols)
{
    const int64_t k = j->sub_k[j->coll->rank];
    float *dst = j->Xs + j->sub_off * cols;
    for (int64_t i = 0; i < k; i++) {
        const int64_t row = i * j->rows / k;
        if (row >= r0 && row < r0 + rows)
            FPTQ_TRY(fptq_dev_get(j->be, dst + i * cols, X + (row - r0) * cols, cols));
    }
    return FPTQ_OK;
}

static fptq_status subsample_gather(layer_job *j, int64_t cols)
{
    const fptq_collectives *c = j->coll;
    for (int m = 0; m < c->size; m++)
        j->sub_counts[m] = (size_t)(j->sub_k[m] * cols) * sizeof(float);
    return c->allgatherv(c->ctx, j->Xs + j->sub_off * cols, j->Xs, j->sub_counts);
}

/* The hooks: statistics (and AWQ's subsample) of each micro-batch ... */
static fptq_status layer_job_observe(void *ctx, fptq_linear_group g, const float *X, int64_t r0, int64_t rows,
                                     int64_t cols)
{
    layer_job *j = ctx;
    FPTQ_TRY(stats_observe(j, &j->stats[g], X, r0, rows));
    if (j->awq_search_only)
        FPTQ_TRY(subsample_observe(j, X, r0, rows, cols));
    return FPTQ_OK;
}

/* ... then the statistics summed over the stage, scale folds, quantization
 * of group g, activation scales. */
static fptq_status layer_job_finish(void *ctx, fptq_linear_group g, float *X, int64_t rows, int64_t cols,
                                    int *again)
{
    layer_job *j = ctx;
    const fptq_recipe *r = j->r;
    const fptq_backend *be = j->be;
    fptq_linear_id first;
    int count;
    fptq_linear_group_members(g, &first, &count);
    linear_stats *stats = &j->stats[g];
    FPTQ_TRY(stats_reduce(j, stats));

    if (j->awq_search_only) {
        smooth_group sg = group_of(j, g);
        for (int64_t k = 0; k < cols; k++)
            j->abs_mean[k] = j->abs_sum[k] / (double)stats->tokens;
        const int64_t ns = j->sub_n;
        FPTQ_TRY(subsample_gather(j, cols));
        awq_opts ao = {.grid = 20, .max_tokens = AWQ_TOKENS, .clip_grid = 20};
        float alpha = 0.0f;
        double err = 0.0;
        const int can_fold = g != LGROUP_O || j->c->num_key_value_heads == j->c->num_attention_heads;
        if (can_fold) {
            int folded;
            FPTQ_TRY(awq_search_scale(j->Xs, ns, &sg, &r->weight, j->abs_mean, &ao, j->scale, &alpha, &err));
            FPTQ_TRY(fold_group_scale(j, g, j->scale, X, rows, &folded));
            scale_input_columns(j->Xs, ns, cols, j->scale);
        }
        for (int i = 0; i < count; i++)
            FPTQ_TRY(awq_search_clip(j->Xs, ns, sg.W[i], sg.rows[i], cols, &r->weight, &ao, j->clip[first + i]));
        fptq_debug("layer %lld %s: AWQ alpha %.2f", (long long)j->layer, fptq_linear_group_name(g), alpha);
        return FPTQ_OK;
    }

    if (r->smoothquant_alpha >= 0.0f && (g == LGROUP_QKV || g == LGROUP_GATE_UP) && !j->smoothed) {
        /* fold, then have the smoothed input observed again */
        smooth_group sg = group_of(j, g);
        int folded;
        smoothquant_scales(j->abs_max, &sg, r->smoothquant_alpha, j->scale);
        FPTQ_TRY(fold_group_scale(j, g, j->scale, X, rows, &folded));
        j->smoothed = 1;
        *again = 1;
        return FPTQ_OK;
    }
    j->smoothed = 0;

    /* H in place of the raw sums, which are done with */
    j->H = stats->xtx;
    FPTQ_TRY(be->stats_hessian(stats, j->H));
    if (r->method == METHOD_GPTQ) {
        /* one plan (inverse-Hessian factor) for all the linears that read this input */
        gptq_opts go = {.damp_percent = r->damp, .act_order = r->act_order};
        gptq_result gr;
        be->gptq_release(j->gptq_plan);
        j->gptq_plan = NULL;
        fptq_status st = be->gptq_prepare(j->H, cols, &go, &j->gptq_plan, &gr);
        if (st != FPTQ_OK) {
            fptq_error_context("layer %lld %s", (long long)j->layer, fptq_linear_group_name(g));
            return st;
        }
        if (gr.retries)
            fptq_warn("layer %lld %s: Cholesky needed %d damping increase(s), damp %.3g", (long long)j->layer,
                      fptq_linear_group_name(g), gr.retries, gr.damp);
    }
    int64_t lin_rows[4], begin[4], end[4];
    for (int i = 0; i < count; i++) {
        int64_t in;
        fptq_linear_shape(j->c, (fptq_linear_id)(first + i), &lin_rows[i], &in);
    }
    for (int i = 0; i < count; i++) {
        /* every rank's rows of linear i, for the gather */
        int64_t *rb = j->row_begin, *re = j->row_end;
        for (int m = 0; m < j->coll->size; m++) {
            shard_split_rows(lin_rows, count, j->coll->size, m, begin, end);
            rb[m] = begin[i];
            re[m] = end[i];
        }
        fptq_status st = quantize_linear(j, (fptq_linear_id)(first + i), rb, re);
        if (st != FPTQ_OK) {
            fptq_error_context("layer %lld %s", (long long)j->layer, fptq_linear_name((fptq_linear_id)(first + i)));
            return st;
        }
    }

    act_quant a = {.kind = r->act};
    if (r->act == ACTQ_INT8_STATIC || r->act == ACTQ_FP8_STATIC) {
        float amax = 0.0f;
        for (int64_t k = 0; k < cols; k++)
            amax = fmaxf(amax, j->abs_max[k]);
        a.scale = amax > 0.0f ? amax / (r->act == ACTQ_FP8_STATIC ? 448.0f : 127.0f) : 1.0f;
    }
    for (int i = 0; i < count; i++) {
        j->lw->act[first + i] = a;
        j->dl->w.act[first + i] = a;
        j->out->lin[first + i].act = a;
    }
    return FPTQ_OK;
}

int64_t layer_job_max_share(const llama_config *c, int members, int member)
{
    int64_t most = 0;
    for (int g = 0; g < LGROUP_COUNT; g++) {
        fptq_linear_id first;
        int count;
        int64_t rows[4], in[4], begin[4], end[4];
        fptq_linear_group_members((fptq_linear_group)g, &first, &count);
        for (int i = 0; i < count; i++)
            fptq_linear_shape(c, (fptq_linear_id)(first + i), &rows[i], &in[i]);
        shard_split_rows(rows, count, members, member, begin, end);
        for (int i = 0; i < count; i++)
            most = (end[i] - begin[i]) * in[i] > most ? (end[i] - begin[i]) * in[i] : most;
    }
    return most;
}

fptq_status layer_job_init(layer_job *j, const fptq_backend *be, const fptq_collectives *coll,
                           const fptq_collectives *dcoll, const fptq_recipe *r, const llama_config *c)
{
    memset(j, 0, sizeof *j);
    j->be = be;
    j->coll = coll;
    j->dcoll = dcoll;
    j->r = r;
    j->c = c;
    int64_t max_cols, max_w, gcols[LGROUP_COUNT];
    fptq_layer_extents(c, &max_cols, &max_w, gcols);
    for (int id = 0; r->method == METHOD_AWQ && id < LIN_COUNT; id++) {
        int64_t out, in;
        fptq_linear_shape(c, (fptq_linear_id)id, &out, &in);
        FPTQ_TRY(fptq_calloc((size_t)(out * quant_n_groups(&r->weight, in)), sizeof(float), "AWQ clips", &j->clip[id]));
    }
    /* one group's statistics at a time: each group's are views of one buffer of the widest */
    FPTQ_TRY(be->stats_init(max_cols, &j->stats_buf));
    for (int g = 0; g < LGROUP_COUNT; g++) {
        j->stats[g] = j->stats_buf;
        j->stats[g].cols = gcols[g];
    }
    const int64_t share = layer_job_max_share(c, coll->size, coll->rank);
    const size_t f = sizeof(float);
    FPTQ_TRY(be->mem_alloc((size_t)share * f, "weight rows copy", (void **)&j->Wf));
    FPTQ_TRY(be->mem_alloc((size_t)share * f, "quantized rows", (void **)&j->Qpart));
    FPTQ_TRY(fptq_calloc((size_t)max_cols, sizeof(double), "channel |x| sums", &j->abs_sum));
    FPTQ_TRY(fptq_calloc((size_t)max_cols, sizeof(float), "channel |x| maxima", &j->abs_max));
    FPTQ_TRY(fptq_calloc((size_t)max_cols, sizeof(float), "channel scales", &j->scale));
    FPTQ_TRY(fptq_calloc((size_t)max_cols, sizeof(double), "channel means", &j->abs_mean));
    FPTQ_TRY(fptq_calloc((size_t)coll->size, sizeof(int64_t), "row split", &j->row_begin));
    FPTQ_TRY(fptq_calloc((size_t)coll->size, sizeof(int64_t), "row split", &j->row_end));
    FPTQ_TRY(fptq_calloc((size_t)coll->size, sizeof(int64_t), "subsample shares", &j->sub_k));
    FPTQ_TRY(fptq_calloc((size_t)coll->size, sizeof(size_t), "subsample counts", &j->sub_counts));
    if (r->method == METHOD_AWQ)
        FPTQ_TRY(fptq_calloc((size_t)(AWQ_TOKENS + coll->size) * (size_t)max_cols, sizeof(float), "AWQ subsample", &j->Xs));
    return FPTQ_OK;
}

void layer_job_free(layer_job *j)
{
    const fptq_backend *be = j->be;
    if (be) {
        if (j->stats_buf.cols)
            be->stats_free(&j->stats_buf);
        be->mem_free(j->Wf);
        be->mem_free(j->Qpart);
        be->gptq_release(j->gptq_plan);
    }
    free(j->abs_sum);
    free(j->abs_max);
    free(j->scale);
    free(j->abs_mean);
    free(j->Xs);
    free(j->row_begin);
    free(j->row_end);
    free(j->sub_k);
    free(j->sub_counts);
    for (int id = 0; id < LIN_COUNT; id++)
        free(j->clip[id]);
    memset(j, 0, sizeof *j);
}

/* Calibrates and quantizes layer l of the fp weights in lw / dl, on a copy of x. */
fptq_status quantize_layer(const fptq_model *m, layer_job *j, int64_t l, fptq_layer_weights *lw,
                           fptq_dev_layer *dl, const float *x, float *xw, int64_t n_seq, int64_t seq_len,
                           const rope_table *rt, fptq_forward_ws *ws, ckpt_layer *out)
{
    const llama_config *c = &m->cfg;
    const fptq_backend *be = j->be;
    const fptq_recipe *r = j->r;
    const size_t xbytes = (size_t)(n_seq * seq_len * c->hidden_size) * sizeof(float);
    fptq_layer_hooks hooks = {.observe = layer_job_observe, .finish = layer_job_finish, .ctx = j};
    j->layer = l;
    j->lw = lw;
    j->dl = dl;
    j->out = out;
    out->index = l;
    out->hidden = c->hidden_size;
    out->n_linears = LIN_COUNT;
    if (r->method == METHOD_AWQ) {
        /* AWQ searches on the full-precision block, then quantizes (llm-awq's order) */
        FPTQ_TRY(subsample_plan(j, n_seq * seq_len));
        j->awq_search_only = 1;
        FPTQ_TRY(be->mem_copy(xw, x, xbytes));
        FPTQ_TRY(fptq_layer_forward(be, c, &dl->w, rt, xw, n_seq, seq_len, ws, &hooks));
        j->awq_search_only = 0;
    }
    FPTQ_TRY(be->mem_copy(xw, x, xbytes));
    FPTQ_TRY(fptq_layer_forward(be, c, &dl->w, rt, xw, n_seq, seq_len, ws, &hooks));
    be->gptq_release(j->gptq_plan);
    j->gptq_plan = NULL;
    FPTQ_TRY(fptq_calloc((size_t)c->hidden_size, sizeof(float), "norm copy", &out->attn_norm));
    FPTQ_TRY(fptq_calloc((size_t)c->hidden_size, sizeof(float), "norm copy", &out->mlp_norm));
    memcpy(out->attn_norm, lw->attn_norm, (size_t)c->hidden_size * sizeof(float));
    memcpy(out->mlp_norm, lw->mlp_norm, (size_t)c->hidden_size * sizeof(float));
    return FPTQ_OK;
}

/* ---- statistics alone (tests, diagnostics) ------------------------------------------ */

typedef struct stats_hook {
    layer_job j;                  /* only its collectives are used */
    linear_stats *stats;
} stats_hook;

static fptq_status stats_hook_observe(void *ctx, fptq_linear_group g, const float *X, int64_t r0, int64_t rows,
                                     int64_t cols)
{
    stats_hook *h = ctx;
    (void)cols;
    return stats_observe(&h->j, &h->stats[g], X, r0, rows);
}

static fptq_status stats_hook_finish(void *ctx, fptq_linear_group g, float *X, int64_t rows, int64_t cols, int *again)
{
    stats_hook *h = ctx;
    (void)X, (void)rows, (void)cols, (void)again;
    return stats_reduce(&h->j, &h->stats[g]);
}

fptq_status fptq_layer_stats(const fptq_backend *be, const fptq_model *m, const fptq_collectives *coll, int64_t l,
                             const float *x, int64_t n_seq, int64_t T, linear_stats *stats)
{
    const llama_config *c = &m->cfg;
    const int64_t rows = n_seq * T;
    stats_hook h;
    memset(&h, 0, sizeof h);
    h.j.be = be;
    h.j.coll = coll;
    h.j.dcoll = coll;
    h.stats = stats;
    fptq_layer_hooks hooks = {.observe = stats_hook_observe, .finish = stats_hook_finish, .ctx = &h};
    fptq_layer_weights lw = {0};
    fptq_dev_layer dl = {0};
    fptq_forward_ws ws = {0};
    rope_table rt = {0};
    float *xw = NULL;
    const rope_params rp = fptq_rope_params(c);
    fptq_status st;
    if (!be->host_memory)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "fptq_layer_stats: host backends only (the statistics are host memory)");
    FPTQ_TRY_GOTO(fptq_layer_alloc(c, &lw), st, done);
    FPTQ_TRY_GOTO(fptq_dev_layer_alloc(be, c, &lw, &dl), st, done);
    FPTQ_TRY_GOTO(fptq_forward_ws_alloc(be, c, rows, &ws), st, done);
    FPTQ_TRY_GOTO(rope_table_init(&rp, T, &rt), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows * c->hidden_size), sizeof(float), "activations copy", &xw), st, done);
    memcpy(xw, x, (size_t)(rows * c->hidden_size) * sizeof(float));
    FPTQ_TRY_GOTO(fptq_layer_load(m, l, &lw), st, done);
    FPTQ_TRY_GOTO(fptq_dev_layer_upload(&dl, c, &lw), st, done);
    FPTQ_TRY_GOTO(fptq_layer_forward(be, c, &dl.w, &rt, xw, n_seq, T, &ws, &hooks), st, done);
    st = FPTQ_OK;
done:
    free(xw);
    rope_table_free(&rt);
    fptq_forward_ws_free(&ws);
    fptq_dev_layer_free(&dl);
    fptq_layer_free(&lw);
    return st;
}
