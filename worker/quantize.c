/*
 * fptq quantize on one rank. Per decoder layer:
 *   1. a calibration forward whose hooks, before each group of linears,
 *      gather the input's statistics, fold AWQ / SmoothQuant scales, and
 *      quantize the group (GPTQ, RTN, AWQ) so the next group sees it;
 *   2. the layer written durably to the checkpoint and marked done;
 *   3. the layer's output for the next layer recomputed from the stored
 *      layer (or the fp one with --propagate fp) through the same path that
 *      resume and eval use, so interrupted and uninterrupted runs agree bit
 *      for bit.
 */
#define _POSIX_C_SOURCE 200809L
#include "quantize.h"

#include "../common/sha256.h"
#include "../kernels/smooth.h"
#include "../sharding/sharding.h"
#include "forward.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#ifndef FPTQ_VERSION
#define FPTQ_VERSION "dev"
#endif

/* ---- stop requests ---------------------------------------------------------- */

static volatile sig_atomic_t stop_signo = 0;

void fptq_request_stop(int signo) { stop_signo = signo ? signo : -1; }
int fptq_stop_signal(void) { return stop_signo; }

/* ---- recipe ----------------------------------------------------------------- */

static const char *const method_names[] = {"rtn", "gptq", "awq"};
const char *fptq_method_name(fptq_method m) { return method_names[m]; }

static const char *act_kind_name(act_quant_kind k)
{
    switch (k) {
    case ACTQ_INT8_STATIC: return "int8-static";
    case ACTQ_INT8_DYNAMIC: return "int8-dynamic";
    case ACTQ_FP8_STATIC: return "fp8-static";
    default: return "none";
    }
}

fptq_status fptq_recipe_make(const char *scheme, const char *method, int64_t group_size, int sym,
                             int act_order, float damp, float smoothquant_alpha, int dynamic,
                             const char *propagate, fptq_recipe *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->scheme, sizeof r->scheme, "%s", scheme);
    r->weight = (quant_spec){.format = QFMT_INT, .sym = sym, .group_size = group_size < 0 ? 128 : group_size};
    r->act = ACTQ_NONE;
    if (strcmp(scheme, "w4a16") == 0) {
        r->weight.bits = 4;
    } else if (strcmp(scheme, "w3a16") == 0) {
        r->weight.bits = 3;
    } else if (strcmp(scheme, "w8a16") == 0) {
        r->weight.bits = 8;
    } else if (strcmp(scheme, "w8a8") == 0) {
        /* INT8 weights per output channel, symmetric, as W8A8 kernels expect */
        if (group_size > 0 || !sym)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "--scheme w8a8 quantizes weights per channel and symmetric: drop --group-size / --asym");
        r->weight = (quant_spec){.format = QFMT_INT, .bits = 8, .group_size = 0, .sym = 1};
        r->act = dynamic ? ACTQ_INT8_DYNAMIC : ACTQ_INT8_STATIC;
    } else if (strcmp(scheme, "fp8") == 0) {
        if (group_size > 0)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "--scheme fp8 uses per-channel weight scales: drop --group-size");
        if (dynamic)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "--dynamic applies to --scheme w8a8 only");
        r->weight = (quant_spec){.format = QFMT_FP8_E4M3, .bits = 8, .group_size = 0, .sym = 1};
        r->act = ACTQ_FP8_STATIC;
    } else {
        return FPTQ_FAIL(FPTQ_ERR_ARG, "--scheme: unknown scheme '%s' (expected w4a16, w3a16, w8a16, w8a8 or fp8)", scheme);
    }
    if (dynamic && r->act != ACTQ_INT8_DYNAMIC)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "--dynamic applies to --scheme w8a8 only");
    if (strcmp(method, "rtn") == 0)
        r->method = METHOD_RTN;
    else if (strcmp(method, "gptq") == 0)
        r->method = METHOD_GPTQ;
    else if (strcmp(method, "awq") == 0)
        r->method = METHOD_AWQ;
    else
        return FPTQ_FAIL(FPTQ_ERR_ARG, "--method: unknown method '%s' (expected rtn, gptq or awq)", method);
    if (r->weight.format == QFMT_FP8_E4M3 && r->method != METHOD_RTN)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "--scheme fp8 is round-to-nearest E4M3: use --method rtn (got %s)", method);
    if (act_order && r->method != METHOD_GPTQ)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "--act-order applies to --method gptq only");
    if (smoothquant_alpha >= 0.0f) {
        if (r->act == ACTQ_NONE)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "--smoothquant applies to schemes that quantize activations (w8a8, fp8)");
        if (smoothquant_alpha > 1.0f)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "--smoothquant ALPHA must lie in [0, 1], got %g", smoothquant_alpha);
        if (r->method == METHOD_AWQ)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "--smoothquant and --method awq both rescale channels: pick one");
    }
    if (!(damp > 0.0f && damp < 1.0f))
        return FPTQ_FAIL(FPTQ_ERR_ARG, "--damp must lie in (0, 1), got %g", damp);
    if (strcmp(propagate, "quantized") == 0)
        r->propagate = PROPAGATE_QUANTIZED;
    else if (strcmp(propagate, "stage") == 0)
        r->propagate = PROPAGATE_STAGE;
    else if (strcmp(propagate, "fp") == 0)
        r->propagate = PROPAGATE_FP;
    else
        return FPTQ_FAIL(FPTQ_ERR_ARG, "--propagate: unknown mode '%s' (expected quantized, stage or fp)", propagate);
    r->act_order = act_order;
    r->damp = damp;
    r->smoothquant_alpha = smoothquant_alpha;
    return FPTQ_OK;
}

char *fptq_recipe_json(const fptq_recipe *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "scheme", r->scheme);
    cJSON_AddStringToObject(o, "method", fptq_method_name(r->method));
    cJSON_AddStringToObject(o, "weight_format", r->weight.format == QFMT_FP8_E4M3 ? "fp8_e4m3" : "int");
    cJSON_AddNumberToObject(o, "bits", r->weight.bits);
    cJSON_AddNumberToObject(o, "group_size", (double)r->weight.group_size);
    cJSON_AddBoolToObject(o, "sym", r->weight.sym);
    cJSON_AddBoolToObject(o, "act_order", r->act_order);
    cJSON_AddNumberToObject(o, "damp", r->damp);
    if (r->smoothquant_alpha >= 0.0f)
        cJSON_AddNumberToObject(o, "smoothquant_alpha", r->smoothquant_alpha);
    else
        cJSON_AddNullToObject(o, "smoothquant_alpha");
    cJSON_AddStringToObject(o, "activations", act_kind_name(r->act));
    cJSON_AddStringToObject(o, "propagate", r->propagate == PROPAGATE_FP ? "fp" : r->propagate == PROPAGATE_STAGE ? "stage" : "quantized");
    cJSON_AddNumberToObject(o, "calib_samples", (double)r->calib_samples);
    cJSON_AddNumberToObject(o, "calib_seqlen", (double)r->calib_seqlen);
    cJSON_AddStringToObject(o, "true_sequential", "q/k/v, o, gate/up, down");
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* ---- calibration data --------------------------------------------------------- */

fptq_status fptq_calib_samples(const fptq_tokens *t, int64_t n_samples, int64_t seq_len, const char *path,
                               int32_t **ids)
{
    *ids = NULL;
    if (t->n_rows == 1) {
        if (n_samples > t->n_tokens / seq_len)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "%s: --calib-samples %lld x --calib-seqlen %lld needs %lld tokens, the file has %lld",
                             path, (long long)n_samples, (long long)seq_len, (long long)(n_samples * seq_len),
                             (long long)t->n_tokens);
    } else if (n_samples > t->n_rows || seq_len > t->row_len) {
        return FPTQ_FAIL(FPTQ_ERR_ARG, "%s: --calib-samples %lld x --calib-seqlen %lld, the file holds %lld samples of %lld tokens",
                         path, (long long)n_samples, (long long)seq_len, (long long)t->n_rows, (long long)t->row_len);
    }
    int32_t *out;
    FPTQ_TRY(fptq_calloc((size_t)(n_samples * seq_len), sizeof(int32_t), "calibration tokens", &out));
    for (int64_t s = 0; s < n_samples; s++) {
        const int32_t *src = t->n_rows == 1 ? t->ids + s * seq_len : t->ids + s * t->row_len;
        memcpy(out + s * seq_len, src, (size_t)seq_len * sizeof(int32_t));
    }
    *ids = out;
    return FPTQ_OK;
}

/* ---- one layer's calibration and quantization ----------------------------------- */

typedef struct layer_job {
    const fptq_collectives *coll; /* the stage's ranks: statistics summed, rows split */
    const fptq_recipe *r;
    const llama_config *c;
    int64_t layer;
    fptq_layer_weights *lw;      /* modified in place: folds, then quantized weights */
    ckpt_layer *out;             /* filled group by group */
    int awq_search_only;         /* AWQ pass 1: search and fold, quantize nothing */
    float *clip[LIN_COUNT];      /* AWQ clip ratios per linear, from pass 1 */
    linear_stats stats[LGROUP_COUNT]; /* of each group's input */
    float *H, *Wf, *scale;       /* scratch: Hessian, original weights, channel scales */
    float *Qpart;                /* this rank's rows, dequantized */
    float *Xs;                   /* AWQ: the token subsample gathered from every rank */
    double *abs_mean;
    int64_t *row_begin, *row_end;/* [ranks of the stage]: rows of the linear in hand */
    gptq_hinv hinv;              /* GPTQ: of the group in hand */
} layer_job;

/* tr((W - Q) H (W - Q)^T): the output error GPTQ minimises, the same measure for every method. */
static fptq_status proxy_loss(const float *W, const float *Q, int64_t rows, int64_t cols, const float *H,
                              double *loss)
{
    float *D = NULL, *DH = NULL;
    fptq_status st;
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows * cols), sizeof(float), "weight error", &D), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows * cols), sizeof(float), "weight error x H", &DH), st, done);
    for (int64_t i = 0; i < rows * cols; i++)
        D[i] = W[i] - Q[i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)cols, (int)cols, 1.0f, D, (int)cols,
                H, (int)cols, 0.0f, DH, (int)cols);
    double sum = 0.0;
    for (int64_t i = 0; i < rows * cols; i++)
        sum += (double)D[i] * DH[i];
    *loss = sum;
    st = FPTQ_OK;
done:
    free(D);
    free(DH);
    return st;
}

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

/* Folds X / s into what produces X, and W s into the group's linears.
 * Returns 0 when the group's input cannot absorb a scale (o_proj under GQA:
 * v_proj's rows feed several heads' worth of o_proj columns). */
static int fold_group_scale(layer_job *j, fptq_linear_group g, const float *s, float *X, int64_t rows)
{
    const llama_config *c = j->c;
    fptq_layer_weights *lw = j->lw;
    smooth_group sg = group_of(j, g);
    switch (g) {
    case LGROUP_QKV: fold_scale_into_norm(lw->attn_norm, sg.cols, s); break;
    case LGROUP_GATE_UP: fold_scale_into_norm(lw->mlp_norm, sg.cols, s); break;
    case LGROUP_DOWN: fold_scale_into_output(lw->w[LIN_UP], NULL, c->intermediate_size, c->hidden_size, s); break;
    case LGROUP_O:
        if (c->num_key_value_heads != c->num_attention_heads)
            return 0;
        fold_scale_into_output(lw->w[LIN_V], lw->bias[LIN_V], c->num_key_value_heads * c->head_dim, c->hidden_size, s);
        break;
    default: return 0;
    }
    for (int i = 0; i < sg.n_lin; i++)
        fold_scale_into_input(sg.W[i], sg.rows[i], sg.cols, s);
    scale_input_columns(X, rows, sg.cols, s);
    return 1;
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
 * weights in the layer so the next group sees them. */
static fptq_status quantize_linear(layer_job *j, fptq_linear_id id, const int64_t *row_begin, const int64_t *row_end,
                                   const float *H)
{
    const fptq_recipe *r = j->r;
    const fptq_collectives *coll = j->coll;
    int64_t out, in;
    fptq_linear_shape(j->c, id, &out, &in);
    ckpt_linear *cl = &j->out->lin[id];
    float *W = j->lw->w[id];
    const int64_t r0 = row_begin[coll->rank], nr = row_end[coll->rank] - r0;
    const int64_t ng = quant_n_groups(&r->weight, in);
    snprintf(cl->name, sizeof cl->name, "%s", fptq_linear_name(id));
    snprintf(cl->method, sizeof cl->method, "%s", fptq_method_name(r->method));
    FPTQ_TRY(quant_tensor_alloc(&r->weight, out, in, r->act_order, &cl->q));
    memcpy(j->Wf, W, (size_t)(out * in) * sizeof(float));

    double loss = 0.0;
    float damp = 0.0f;
    if (nr > 0) {
        quant_tensor part;
        FPTQ_TRY(quant_tensor_alloc(&r->weight, nr, in, r->act_order, &part));
        fptq_status st;
        if (r->method == METHOD_GPTQ) {
            gptq_opts go = {.damp_percent = r->damp, .block_size = 128, .act_order = r->act_order};
            gptq_result gr;
            st = gptq_quantize_hinv(j->Wf + r0 * in, nr, in, &j->hinv, &go, &part, NULL, &gr);
            damp = gr.damp;
        } else {
            st = quant_rtn(j->Wf + r0 * in, nr, in, j->clip[id] ? j->clip[id] + r0 * ng : NULL, &part);
        }
        if (st == FPTQ_OK) {
            put_rows(&cl->q, &part, r0);
            quant_dequantize(&part, j->Qpart);
            st = proxy_loss(j->Wf + r0 * in, j->Qpart, nr, in, H, &loss);
        }
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
    quant_dequantize(&cl->q, W);
    if (j->lw->bias[id]) {
        FPTQ_TRY(fptq_calloc((size_t)out, sizeof(float), "bias copy", &cl->bias));
        memcpy(cl->bias, j->lw->bias[id], (size_t)out * sizeof(float));
    }
    return FPTQ_OK;
}

/* The statistics of X, summed over the stage's ranks (raw sums and token
 * counts; scaled once, later, into H). */
static fptq_status gather_stats(layer_job *j, linear_stats *stats, const float *X, int64_t rows)
{
    const fptq_collectives *c = j->coll;
    linear_stats_reset(stats);
    FPTQ_TRY(linear_stats_accumulate(stats, X, rows));
    const size_t cols = (size_t)stats->cols;
    FPTQ_TRY(c->allreduce(c->ctx, stats->xtx, cols * cols, FPTQ_DT_F32, FPTQ_OP_SUM));
    FPTQ_TRY(c->allreduce(c->ctx, stats->abs_sum, cols, FPTQ_DT_F64, FPTQ_OP_SUM));
    FPTQ_TRY(c->allreduce(c->ctx, stats->abs_max, cols, FPTQ_DT_F32, FPTQ_OP_MAX));
    FPTQ_TRY(c->allreduce(c->ctx, &stats->tokens, 1, FPTQ_DT_I64, FPTQ_OP_SUM));
    return FPTQ_OK;
}

/* AWQ scores on a subsample of AWQ_TOKENS tokens: evenly spaced rows of
 * every rank's X, gathered, so that all ranks search on the same data (and
 * one rank picks exactly the rows awq_search_scale would pick itself). */
#define AWQ_TOKENS 4096
static fptq_status gather_subsample(layer_job *j, const float *X, int64_t rows, int64_t cols, int64_t *n_out)
{
    const fptq_collectives *c = j->coll;
    int64_t total = rows;
    FPTQ_TRY(c->allreduce(c->ctx, &total, 1, FPTQ_DT_I64, FPTQ_OP_SUM));
    const int64_t want = total < AWQ_TOKENS ? total : AWQ_TOKENS;
    int64_t *k;
    size_t *counts;
    FPTQ_TRY(fptq_calloc((size_t)c->size, sizeof(int64_t), "subsample sizes", &k));
    fptq_status st = fptq_calloc((size_t)c->size, sizeof(size_t), "subsample counts", &counts);
    if (st != FPTQ_OK) {
        free(k);
        return st;
    }
    /* this rank's share, in proportion to its tokens */
    const int64_t mine = (int64_t)((double)want * (double)rows / (double)total + 0.5);
    for (int m = 0; m < c->size; m++)
        counts[m] = sizeof(int64_t);
    k[c->rank] = mine < rows ? mine : rows;
    FPTQ_TRY_GOTO(c->allgatherv(c->ctx, &k[c->rank], k, counts), st, done);
    int64_t off = 0, n = 0;
    for (int m = 0; m < c->size; m++) {
        if (m < c->rank)
            off += k[m];
        n += k[m];
        counts[m] = (size_t)(k[m] * cols) * sizeof(float);
    }
    float *dst = j->Xs + off * cols;
    for (int64_t i = 0; i < k[c->rank]; i++)
        memcpy(dst + i * cols, X + (i * rows / k[c->rank]) * cols, (size_t)cols * sizeof(float));
    FPTQ_TRY_GOTO(c->allgatherv(c->ctx, dst, j->Xs, counts), st, done);
    *n_out = n;
    st = FPTQ_OK;
done:
    free(k);
    free(counts);
    return st;
}

/* The hook: statistics, scale folds, quantization of group g, activation scales. */
static fptq_status layer_job_group(void *ctx, fptq_linear_group g, float *X, int64_t rows, int64_t cols)
{
    layer_job *j = ctx;
    const fptq_recipe *r = j->r;
    fptq_linear_id first;
    int count;
    fptq_linear_group_members(g, &first, &count);
    linear_stats *stats = &j->stats[g];
    FPTQ_TRY(gather_stats(j, stats, X, rows));

    if (j->awq_search_only) {
        smooth_group sg = group_of(j, g);
        for (int64_t k = 0; k < cols; k++)
            j->abs_mean[k] = stats->abs_sum[k] / (double)stats->tokens;
        int64_t ns;
        FPTQ_TRY(gather_subsample(j, X, rows, cols, &ns));
        awq_opts ao = {.grid = 20, .max_tokens = AWQ_TOKENS, .clip_grid = 20};
        float alpha = 0.0f;
        double err = 0.0;
        const int can_fold = g != LGROUP_O || j->c->num_key_value_heads == j->c->num_attention_heads;
        if (can_fold) {
            FPTQ_TRY(awq_search_scale(j->Xs, ns, &sg, &r->weight, j->abs_mean, &ao, j->scale, &alpha, &err));
            fold_group_scale(j, g, j->scale, X, rows);
            scale_input_columns(j->Xs, ns, cols, j->scale);
        }
        for (int i = 0; i < count; i++)
            FPTQ_TRY(awq_search_clip(j->Xs, ns, sg.W[i], sg.rows[i], cols, &r->weight, &ao, j->clip[first + i]));
        fptq_debug("layer %lld %s: AWQ alpha %.2f", (long long)j->layer, fptq_linear_group_name(g), alpha);
        return FPTQ_OK;
    }

    if (r->smoothquant_alpha >= 0.0f && (g == LGROUP_QKV || g == LGROUP_GATE_UP)) {
        smooth_group sg = group_of(j, g);
        smoothquant_scales(stats->abs_max, &sg, r->smoothquant_alpha, j->scale);
        fold_group_scale(j, g, j->scale, X, rows);
        FPTQ_TRY(gather_stats(j, stats, X, rows));
    }

    FPTQ_TRY(linear_stats_hessian(stats, j->H));
    if (r->method == METHOD_GPTQ) {
        /* one inverse-Hessian factor for all the linears that read this input */
        gptq_opts go = {.damp_percent = r->damp, .act_order = r->act_order};
        gptq_hinv_free(&j->hinv);
        fptq_status st = gptq_hinv_compute(j->H, cols, &go, &j->hinv);
        if (st != FPTQ_OK) {
            fptq_error_context("layer %lld %s", (long long)j->layer, fptq_linear_group_name(g));
            return st;
        }
        if (j->hinv.retries)
            fptq_warn("layer %lld %s: Cholesky needed %d damping increase(s), damp %.3g", (long long)j->layer,
                      fptq_linear_group_name(g), j->hinv.retries, j->hinv.damp);
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
        fptq_status st = quantize_linear(j, (fptq_linear_id)(first + i), rb, re, j->H);
        if (st != FPTQ_OK) {
            fptq_error_context("layer %lld %s", (long long)j->layer, fptq_linear_name((fptq_linear_id)(first + i)));
            return st;
        }
    }

    act_quant a = {.kind = r->act};
    if (r->act == ACTQ_INT8_STATIC || r->act == ACTQ_FP8_STATIC) {
        float amax = 0.0f;
        for (int64_t k = 0; k < cols; k++)
            amax = fmaxf(amax, stats->abs_max[k]);
        a.scale = amax > 0.0f ? amax / (r->act == ACTQ_FP8_STATIC ? 448.0f : 127.0f) : 1.0f;
    }
    for (int i = 0; i < count; i++) {
        j->lw->act[first + i] = a;
        j->out->lin[first + i].act = a;
    }
    return FPTQ_OK;
}

static fptq_status layer_job_init(layer_job *j, const fptq_collectives *coll, const fptq_recipe *r,
                                  const llama_config *c)
{
    memset(j, 0, sizeof *j);
    j->coll = coll;
    j->r = r;
    j->c = c;
    int64_t max_cols = 0, max_w = 0;
    for (int id = 0; id < LIN_COUNT; id++) {
        int64_t out, in;
        fptq_linear_shape(c, (fptq_linear_id)id, &out, &in);
        max_cols = in > max_cols ? in : max_cols;
        max_w = out * in > max_w ? out * in : max_w;
        if (r->method == METHOD_AWQ)
            FPTQ_TRY(fptq_calloc((size_t)(out * quant_n_groups(&r->weight, in)), sizeof(float), "AWQ clips", &j->clip[id]));
    }
    for (int g = 0; g < LGROUP_COUNT; g++) {
        fptq_linear_id first;
        int count;
        int64_t out, in;
        fptq_linear_group_members((fptq_linear_group)g, &first, &count);
        fptq_linear_shape(c, first, &out, &in);
        FPTQ_TRY(linear_stats_init(in, &j->stats[g]));
    }
    FPTQ_TRY(fptq_calloc((size_t)(max_cols * max_cols), sizeof(float), "Hessian", &j->H));
    FPTQ_TRY(fptq_calloc((size_t)max_w, sizeof(float), "weight copy", &j->Wf));
    FPTQ_TRY(fptq_calloc((size_t)max_cols, sizeof(float), "channel scales", &j->scale));
    FPTQ_TRY(fptq_calloc((size_t)max_cols, sizeof(double), "channel means", &j->abs_mean));
    FPTQ_TRY(fptq_calloc((size_t)max_w, sizeof(float), "quantized rows", &j->Qpart));
    FPTQ_TRY(fptq_calloc((size_t)coll->size, sizeof(int64_t), "row split", &j->row_begin));
    FPTQ_TRY(fptq_calloc((size_t)coll->size, sizeof(int64_t), "row split", &j->row_end));
    if (r->method == METHOD_AWQ)
        FPTQ_TRY(fptq_calloc((size_t)(AWQ_TOKENS + coll->size) * (size_t)max_cols, sizeof(float), "AWQ subsample", &j->Xs));
    return FPTQ_OK;
}

static void layer_job_free(layer_job *j)
{
    for (int g = 0; g < LGROUP_COUNT; g++)
        linear_stats_free(&j->stats[g]);
    free(j->H);
    free(j->Wf);
    free(j->scale);
    free(j->abs_mean);
    free(j->Qpart);
    free(j->Xs);
    free(j->row_begin);
    free(j->row_end);
    gptq_hinv_free(&j->hinv);
    for (int id = 0; id < LIN_COUNT; id++)
        free(j->clip[id]);
    memset(j, 0, sizeof *j);
}

/* Calibrates and quantizes layer l of the fp weights in lw, on a copy of x. */
static fptq_status quantize_layer(const fptq_backend *be, const fptq_model *m, const fptq_recipe *r, layer_job *j,
                                  int64_t l, fptq_layer_weights *lw, const float *x, float *xw, int64_t n_seq,
                                  int64_t seq_len, const rope_table *rt, fptq_forward_ws *ws, ckpt_layer *out)
{
    const llama_config *c = &m->cfg;
    const size_t xbytes = (size_t)(n_seq * seq_len * c->hidden_size) * sizeof(float);
    fptq_layer_hooks hooks = {.before_group = layer_job_group, .ctx = j};
    j->layer = l;
    j->lw = lw;
    j->out = out;
    out->index = l;
    out->hidden = c->hidden_size;
    out->n_linears = LIN_COUNT;
    if (r->method == METHOD_AWQ) {
        /* AWQ searches on the full-precision block, then quantizes (llm-awq's order) */
        j->awq_search_only = 1;
        memcpy(xw, x, xbytes);
        FPTQ_TRY(fptq_layer_forward(be, c, lw, rt, xw, n_seq, seq_len, ws, &hooks));
        j->awq_search_only = 0;
    }
    memcpy(xw, x, xbytes);
    FPTQ_TRY(fptq_layer_forward(be, c, lw, rt, xw, n_seq, seq_len, ws, &hooks));
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

static fptq_status stats_hook_group(void *ctx, fptq_linear_group g, float *X, int64_t rows, int64_t cols)
{
    stats_hook *h = ctx;
    return gather_stats(&h->j, &h->stats[g], X, rows);
}

fptq_status fptq_layer_stats(const fptq_backend *be, const fptq_model *m, const fptq_collectives *coll, int64_t l,
                             const float *x, int64_t n_seq, int64_t T, linear_stats *stats)
{
    const llama_config *c = &m->cfg;
    const int64_t rows = n_seq * T;
    stats_hook h;
    memset(&h, 0, sizeof h);
    h.j.coll = coll;
    h.stats = stats;
    fptq_layer_hooks hooks = {.before_group = stats_hook_group, .ctx = &h};
    fptq_layer_weights lw = {0};
    fptq_forward_ws ws = {0};
    rope_table rt = {0};
    float *xw = NULL;
    const rope_params rp = fptq_rope_params(c);
    fptq_status st;
    FPTQ_TRY_GOTO(fptq_layer_alloc(c, &lw), st, done);
    FPTQ_TRY_GOTO(fptq_forward_ws_alloc(c, rows, &ws), st, done);
    FPTQ_TRY_GOTO(rope_table_init(&rp, T, &rt), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows * c->hidden_size), sizeof(float), "activations copy", &xw), st, done);
    memcpy(xw, x, (size_t)(rows * c->hidden_size) * sizeof(float));
    FPTQ_TRY_GOTO(fptq_layer_load(m, l, &lw), st, done);
    FPTQ_TRY_GOTO(fptq_layer_forward(be, c, &lw, &rt, xw, n_seq, T, &ws, &hooks), st, done);
    st = FPTQ_OK;
done:
    free(xw);
    rope_table_free(&rt);
    fptq_forward_ws_free(&ws);
    fptq_layer_free(&lw);
    return st;
}

/* ---- provenance and resume checks ------------------------------------------------ */

static fptq_status hash_model_files(const fptq_model *m, cJSON *files)
{
    char path[sizeof m->dir + 64], hex[65];
    snprintf(path, sizeof path, "%s/config.json", m->dir);
    FPTQ_TRY(sha256_file(path, hex));
    cJSON_AddStringToObject(files, "config.json", hex);
    /* every distinct file that holds a tensor, in name order */
    const size_t n = st_model_count(m->st);
    for (size_t i = 0; i < n; i++) {
        const char *p = st_model_tensor(m->st, i)->path;
        const char *base = strrchr(p, '/') ? strrchr(p, '/') + 1 : p;
        if (cJSON_GetObjectItemCaseSensitive(files, base))
            continue;
        FPTQ_TRY(sha256_file(p, hex));
        cJSON_AddStringToObject(files, base, hex);
    }
    return FPTQ_OK;
}

static fptq_status make_provenance(const fptq_model *m, const fptq_quantize_opts *o, int world_size, int stages,
                                   char **json)
{
    cJSON *p = cJSON_CreateObject(), *files = cJSON_AddObjectToObject(p, "model_files");
    char hex[65];
    fptq_status st;
    cJSON_AddStringToObject(p, "fptq_version", FPTQ_VERSION);
    cJSON_AddStringToObject(p, "model_dir", o->model_dir);
    FPTQ_TRY_GOTO(hash_model_files(m, files), st, done);
    cJSON_AddStringToObject(p, "calib_path", o->calib_path);
    FPTQ_TRY_GOTO(sha256_file(o->calib_path, hex), st, done);
    cJSON_AddStringToObject(p, "calib_sha256", hex);
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    cJSON_AddStringToObject(p, "created", when);
    cJSON_AddNumberToObject(p, "world_size", world_size);
    cJSON_AddNumberToObject(p, "stages", stages);
    *json = cJSON_PrintUnformatted(p);
    st = FPTQ_OK;
done:
    cJSON_Delete(p);
    return st;
}

/* A resume must use the recipe, model files and calibration data the checkpoint was made with. */
static fptq_status check_resume(const ckpt *ck, const char *dir, const char *recipe_json, const char *provenance_json)
{
    if (strcmp(ckpt_recipe_json(ck), recipe_json) != 0)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "--resume: the recipe differs from the one checkpoint %s was made with:\n  checkpoint: %s\n  this run:   %s",
                         dir, ckpt_recipe_json(ck), recipe_json);
    cJSON *old = cJSON_Parse(ckpt_provenance_json(ck)), *now = cJSON_Parse(provenance_json);
    fptq_status st = FPTQ_OK;
    if (!old || !now) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "checkpoint %s: provenance is not valid JSON", dir);
        goto done;
    }
    if (!cJSON_Compare(cJSON_GetObjectItemCaseSensitive(old, "model_files"),
                       cJSON_GetObjectItemCaseSensitive(now, "model_files"), 1)) {
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "--resume: the model's files differ (sha256) from those checkpoint %s was made with", dir);
        goto done;
    }
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(old, "calib_sha256"), *b = cJSON_GetObjectItemCaseSensitive(now, "calib_sha256");
    if (!cJSON_IsString(a) || !cJSON_IsString(b) || strcmp(a->valuestring, b->valuestring) != 0)
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "--resume: the calibration tokens differ (sha256) from those checkpoint %s was made with", dir);
done:
    cJSON_Delete(old);
    cJSON_Delete(now);
    return st;
}

/* Finished layers stay valid under another world layout, but the sample
 * split (and, with --propagate stage, the stage bounds) change the rounding
 * of what is still to do: say so rather than promise bit-identity. */
static void warn_layout_change(const ckpt *ck, int world_size, int stages)
{
    cJSON *p = cJSON_Parse(ckpt_provenance_json(ck));
    const cJSON *ws = cJSON_GetObjectItemCaseSensitive(p, "world_size");
    const cJSON *ss = cJSON_GetObjectItemCaseSensitive(p, "stages");
    if (cJSON_IsNumber(ws) && cJSON_IsNumber(ss) && ((int)ws->valuedouble != world_size || (int)ss->valuedouble != stages))
        fptq_warn("--resume: the checkpoint was started with %d rank(s) in %d stage(s), this run has %d in %d: "
                  "finished layers are kept, the rest is quantized with this layout, and the result will not be "
                  "bit-identical to an uninterrupted run of either layout",
                  (int)ws->valuedouble, (int)ss->valuedouble, world_size, stages);
    cJSON_Delete(p);
}

static fptq_status write_shared(ckpt *ck, const fptq_model *m)
{
    const char *names[3] = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"};
    const char *stored[3] = {"embed_tokens", "norm", "lm_head"};
    ckpt_raw_tensor t[3];
    int n = 0;
    for (int i = 0; i < 3; i++) {
        if (i == 2 && m->cfg.tie_word_embeddings)
            continue;
        const st_tensor *s;
        FPTQ_TRY(st_model_get(m->st, names[i], &s));
        t[n++] = (ckpt_raw_tensor){.name = stored[i], .dtype = st_dtype_name(s->dtype), .ndim = s->ndim,
                                   .shape = {s->shape[0], s->ndim > 1 ? s->shape[1] : 0}, .data = s->data};
    }
    return ckpt_write_shared(ck, t, n);
}

static fptq_status read_text_file(const char *path, char **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return FPTQ_FAIL(FPTQ_ERR_IO, "%s: cannot open", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    fptq_status st = FPTQ_OK;
    if (n < 0 || n > (16L << 20)) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: unexpected size %ld", path, n);
    } else if ((st = fptq_calloc((size_t)n + 1, 1, path, out)) == FPTQ_OK && fread(*out, 1, (size_t)n, f) != (size_t)n) {
        st = FPTQ_FAIL(FPTQ_ERR_IO, "%s: short read", path);
        free(*out);
        *out = NULL;
    }
    fclose(f);
    return st;
}

/* ---- the job ------------------------------------------------------------------ */

/* What a stage tells the coordinator (world rank 0): a layer is on disk, or
 * the stage has finished its layers (or stopped early). Fixed size, small
 * enough to be sent eagerly while rank 0 is busy with its own layers. */
enum { NOTE_TAG = 7001, HANDOFF_TAG = 7002, NOTE_LAYER = 1, NOTE_STAGE_END = 2 };
typedef struct stage_note {
    int64_t kind, layer, stage, stopped;
    double seconds;
    char digest[65];
    char losses_json[1536];
} stage_note;

typedef struct job {
    const fptq_backend *be;
    fptq_world *w;                 /* NULL: one rank, no MPI */
    int rank, stage, member, stages, per_stage;
    fptq_collectives coll;
    const fptq_quantize_opts *o;
    fptq_recipe r;
    fptq_model m;
    ckpt *ck;
    int64_t *bounds;               /* stage s owns layers [bounds[s], bounds[s + 1]) */
    stage_note *notes;             /* a stage's notes to the coordinator, one per layer, until flushed */
    int64_t n_seq, T;              /* this rank's samples, tokens per sample */
    float *x, *xw;
    fptq_layer_weights lw;
    fptq_forward_ws ws;
    rope_table rt;
    layer_job lj;
    /* fault injection for the tests (FPTQ_FAULT=kill|fail:RANK:LAYER) */
    char fault[8];
    int fault_rank;
    int64_t fault_layer;
    long delay_ms;
    /* coordinator's bookkeeping */
    double t_start;
    int64_t finished_now, pending_at_start;
    fptq_quantize_result *res;
} job;

static void job_progress(job *J, int64_t layer, int64_t stage, double seconds, const char *digest)
{
    if (!J->o->progress)
        return;
    const int64_t L = J->m.cfg.num_hidden_layers;
    const double el = fptq_now() - J->t_start;
    const double eta = J->finished_now ? el / (double)J->finished_now * (double)(J->pending_at_start - J->finished_now) : 0.0;
    fptq_info("layer %lld/%lld quantized%s in %.2f s, %lld/%lld this run, elapsed %.1f s, ETA %.0f s, digest %.16s",
              (long long)layer + 1, (long long)L, J->stages > 1 ? (stage == 0 ? " (stage 0)" : "") : "", seconds,
              (long long)J->finished_now, (long long)J->pending_at_start, el, eta, digest);
    if (J->stages > 1 && stage > 0)
        fptq_info("  (by stage %lld)", (long long)stage);
}

/* Coordinator: a layer is durable on disk; record it in the manifest. */
static fptq_status coordinator_layer_done(job *J, const stage_note *n)
{
    FPTQ_TRY(ckpt_mark_done(J->ck, n->layer, n->digest, n->seconds, n->losses_json));
    J->finished_now++;
    J->res->layers_done_now++;
    job_progress(J, n->layer, n->stage, n->seconds, n->digest);
    return FPTQ_OK;
}

/* Coordinator: handles every note already waiting, without blocking. */
static fptq_status coordinator_poll(job *J, int *stages_ended, int *any_stopped)
{
    if (!J->w || J->rank != 0)
        return FPTQ_OK;
    for (;;) {
        stage_note n;
        int got;
        FPTQ_TRY(fptq_world_note_poll(J->w, NOTE_TAG, &n, sizeof n, &got));
        if (!got)
            return FPTQ_OK;
        if (n.kind == NOTE_LAYER) {
            FPTQ_TRY(coordinator_layer_done(J, &n));
        } else {
            (*stages_ended)++;
            *any_stopped |= n.stopped != 0;
        }
    }
}

/* The stage's first rank wrote layer l: tell the coordinator (or be it).
 * The note is posted, not sent: the coordinator reads its mail between its
 * own layers, and this rank must not wait for that. */
static fptq_status report_layer(job *J, int64_t l, double seconds, const char *digest, const char *losses)
{
    stage_note local, *np = J->rank == 0 ? &local : &J->notes[l];
    stage_note n;
    memset(&n, 0, sizeof n);
    n.kind = NOTE_LAYER;
    n.layer = l;
    n.stage = J->stage;
    n.seconds = seconds;
    snprintf(n.digest, sizeof n.digest, "%s", digest);
    if (strlen(losses) >= sizeof n.losses_json)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "layer %lld: manifest losses too long (%zu bytes)", (long long)l, strlen(losses));
    snprintf(n.losses_json, sizeof n.losses_json, "%s", losses);
    *np = n;
    if (J->rank == 0)
        return coordinator_layer_done(J, np);
    return fptq_world_post(J->w, 0, np, sizeof *np, NOTE_TAG);
}

/* Activations between stages: rank (s, g) to rank (s + 1, g), after a
 * header that says whether the sender stopped early (then nothing follows). */
static fptq_status handoff_send(job *J, const float *x, int stopped)
{
    if (J->stage + 1 >= J->stages)
        return FPTQ_OK;
    const int dest = (J->stage + 1) * J->per_stage + J->member;
    int64_t hdr = stopped;
    FPTQ_TRY(fptq_world_send(J->w, dest, &hdr, sizeof hdr, HANDOFF_TAG));
    if (!stopped)
        FPTQ_TRY(fptq_world_send(J->w, dest, x, (size_t)(J->n_seq * J->T * J->m.cfg.hidden_size) * sizeof(float), HANDOFF_TAG));
    return FPTQ_OK;
}

static fptq_status handoff_recv(job *J, float *x, int *stopped)
{
    *stopped = 0;
    if (J->stage == 0)
        return FPTQ_OK;
    const int src = (J->stage - 1) * J->per_stage + J->member;
    int64_t hdr;
    FPTQ_TRY(fptq_world_recv(J->w, src, &hdr, sizeof hdr, HANDOFF_TAG));
    *stopped = hdr != 0;
    if (!*stopped)
        FPTQ_TRY(fptq_world_recv(J->w, src, x, (size_t)(J->n_seq * J->T * J->m.cfg.hidden_size) * sizeof(float), HANDOFF_TAG));
    fptq_debug("stage %d: input from stage %d received at %.2f s", J->stage, J->stage - 1, fptq_now() - J->t_start);
    return FPTQ_OK;
}

/* Full-precision forward of layers [l0, l1) in place on x (the stage-mode
 * pre-pass, and --propagate fp). */
static fptq_status forward_fp(job *J, int64_t l0, int64_t l1, float *x, int64_t n_seq)
{
    for (int64_t l = l0; l < l1; l++) {
        FPTQ_TRY(fptq_layer_load(&J->m, l, &J->lw));
        FPTQ_TRY(fptq_layer_forward(J->be, &J->m.cfg, &J->lw, &J->rt, x, n_seq, J->T, &J->ws, NULL));
    }
    return FPTQ_OK;
}

/* The full-precision pre-pass of --propagate stage / fp: stage s needs the
 * fp activations at its first layer b_s. Rank (s-1, g) and rank (s, g)
 * compute them together: (s-1, g) passes on its own fp input as soon as it
 * has it, then both run the layers [b_(s-1), b_s) in full precision on half
 * of the samples each, and (s-1, g) sends its half over. Stage s so waits
 * half as long, and stage s-1 loses half as much time, as with one of them
 * doing all of it. On return J->x holds this rank's fp input. */
static fptq_status fp_prepass(job *J)
{
    const int64_t H = J->m.cfg.hidden_size, T = J->T, half = J->n_seq / 2;
    const size_t row_bytes = (size_t)(T * H) * sizeof(float);
    const int prev = (J->stage - 1) * J->per_stage + J->member, next = (J->stage + 1) * J->per_stage + J->member;
    if (J->stage > 0) {
        /* the previous stage's input; this rank runs the second half of the samples */
        FPTQ_TRY(fptq_world_recv(J->w, prev, J->xw, (size_t)J->n_seq * row_bytes, HANDOFF_TAG));
        FPTQ_TRY(forward_fp(J, J->bounds[J->stage - 1], J->bounds[J->stage], J->xw + half * T * H, J->n_seq - half));
        memcpy(J->x + half * T * H, J->xw + half * T * H, (size_t)(J->n_seq - half) * row_bytes);
        FPTQ_TRY(fptq_world_recv(J->w, prev, J->x, (size_t)half * row_bytes, HANDOFF_TAG));
        fptq_debug("stage %d: full-precision input ready at %.2f s", J->stage, fptq_now() - J->t_start);
    }
    if (J->stage + 1 < J->stages) {
        FPTQ_TRY(fptq_world_send(J->w, next, J->x, (size_t)J->n_seq * row_bytes, HANDOFF_TAG));
        memcpy(J->xw, J->x, (size_t)half * row_bytes);
        FPTQ_TRY(forward_fp(J, J->bounds[J->stage], J->bounds[J->stage + 1], J->xw, half));
        FPTQ_TRY(fptq_world_send(J->w, next, J->xw, (size_t)half * row_bytes, HANDOFF_TAG));
    }
    return FPTQ_OK;
}

/* FPTQ_FAULT=kill:R:L makes world rank R kill itself with SIGKILL as it
 * starts layer L; fail:R:L makes it fail there with an error, as a bad
 * tensor would; term:R:L makes it raise SIGTERM just before layer L's file
 * is written. FPTQ_TEST_LAYER_DELAY_MS=N sleeps N ms before each layer, so
 * that a test's signal or time limit lands mid-job. The multi-rank and
 * Slurm tests use them; they do nothing unless set. */
static void fault_parse(job *J)
{
    const char *f = getenv("FPTQ_FAULT");
    J->fault[0] = '\0';
    long long layer;
    int rank;
    char kind[8];
    if (f && sscanf(f, "%4[a-z]:%d:%lld", kind, &rank, &layer) == 3 &&
        (strcmp(kind, "kill") == 0 || strcmp(kind, "fail") == 0 || strcmp(kind, "term") == 0)) {
        snprintf(J->fault, sizeof J->fault, "%s", kind);
        J->fault_rank = rank;
        J->fault_layer = layer;
    }
    const char *d = getenv("FPTQ_TEST_LAYER_DELAY_MS");
    J->delay_ms = d ? atol(d) : 0;
}

static fptq_status fault_point(const job *J, int64_t l)
{
    if (!J->fault[0] || J->fault[0] == 't' || J->fault_rank != J->rank || J->fault_layer != l)
        return FPTQ_OK;
    if (strcmp(J->fault, "kill") == 0) {
        fptq_warn("FPTQ_FAULT: rank %d kills itself (SIGKILL) at layer %lld", J->rank, (long long)l);
        raise(SIGKILL);
    }
    return FPTQ_FAIL(FPTQ_ERR_FORMAT, "FPTQ_FAULT: injected failure on rank %d at layer %lld", J->rank, (long long)l);
}

/* This rank's layers: quantize (or restore) each, write, hand off. */
static fptq_status run_stage_layers(job *J, int *stopped, int *ended, int *any_stopped)
{
    const llama_config *c = &J->m.cfg;
    const int64_t b = J->bounds[J->stage], e = J->bounds[J->stage + 1];
    int64_t done_now = 0;
    for (int64_t l = b; l < e; l++) {
        const double t0 = fptq_now();
        ckpt_layer cl;
        memset(&cl, 0, sizeof cl);
        fptq_status st = FPTQ_OK;
        int restored = ckpt_layer_done(J->ck, l);
        if (restored) {
            /* rebuild the output from what is stored; a file that fails its
             * digest (truncated, corrupted) is quantized again instead */
            int64_t bad = ckpt_read_layer(J->ck, l, &cl) != FPTQ_OK;
            if (bad)
                fptq_warn("layer %lld: %s; quantizing it again", (long long)l, fptq_last_error());
            fptq_clear_error();
            FPTQ_TRY(J->coll.allreduce(J->coll.ctx, &bad, 1, FPTQ_DT_I64, FPTQ_OP_MAX));
            if (bad) {
                ckpt_layer_free(&cl);
                memset(&cl, 0, sizeof cl);
                restored = 0;
            } else if (J->rank == 0) {
                J->res->layers_skipped++;
            }
        }
        if (!restored) {
            /* stop here, all ranks of the stage together, when asked to */
            int64_t stop = (J->o->max_layers > 0 && done_now >= J->o->max_layers) || stop_signo != 0;
            FPTQ_TRY(J->coll.allreduce(J->coll.ctx, &stop, 1, FPTQ_DT_I64, FPTQ_OP_MAX));
            if (stop) {
                *stopped = 1;
                break;
            }
            if (J->delay_ms > 0) {
                struct timespec ts = {J->delay_ms / 1000, (J->delay_ms % 1000) * 1000000L};
                nanosleep(&ts, NULL);
            }
            st = fault_point(J, l);
            if (st == FPTQ_OK)
                st = fptq_layer_load(&J->m, l, &J->lw);
            if (st == FPTQ_OK)
                st = quantize_layer(J->be, &J->m, &J->r, &J->lj, l, &J->lw, J->x, J->xw, J->n_seq, J->T, &J->rt,
                                    &J->ws, &cl);
            cl.seconds = fptq_now() - t0;
            if (st == FPTQ_OK && J->fault[0] == 't' && J->fault_rank == J->rank && J->fault_layer == l) {
                fptq_warn("FPTQ_FAULT: rank %d raises SIGTERM as layer %lld is written", J->rank, (long long)l);
                raise(SIGTERM);
            }
            if (st == FPTQ_OK && J->member == 0) {
                char digest[65], *losses = NULL;
                st = ckpt_write_layer_file(J->ck, &cl, digest, &losses);
                if (st == FPTQ_OK)
                    st = report_layer(J, l, cl.seconds, digest, losses);
                free(losses);
            }
            if (st == FPTQ_OK) {
                done_now++;
                for (int id = 0; id < LIN_COUNT; id++)
                    J->res->loss[id] += cl.lin[id].loss;
            }
        }
        /* the hand-off: the next layer's input. Without folds the calibration
         * pass already ran the stored layer's exact weights (dequantized codes,
         * same norms and activation scales) through the same code, so its
         * output is taken as it is; folds change the rounding of the norms
         * and weights, so then the stored layer runs again, as on resume. */
        const int reuse = st == FPTQ_OK && !restored && J->r.propagate != PROPAGATE_FP &&
                          J->r.method != METHOD_AWQ && J->r.smoothquant_alpha < 0.0f;
        if (reuse) {
            float *t = J->x;
            J->x = J->xw;
            J->xw = t;
        } else {
            if (st == FPTQ_OK) {
                if (J->r.propagate == PROPAGATE_FP)
                    st = fptq_layer_load(&J->m, l, &J->lw);
                else
                    st = fptq_layer_from_ckpt(c, &cl, &J->lw);
            }
            if (st == FPTQ_OK)
                st = fptq_layer_forward(J->be, c, &J->lw, &J->rt, J->x, J->n_seq, J->T, &J->ws, NULL);
        }
        ckpt_layer_free(&cl);
        if (st != FPTQ_OK) {
            fptq_error_context("layer %lld", (long long)l);
            return st;
        }
        fptq_debug("stage %d: layer %lld %s at %.2f s", J->stage, (long long)l, restored ? "restored" : "quantized",
                   fptq_now() - J->t_start);
        FPTQ_TRY(coordinator_poll(J, ended, any_stopped));
    }
    return FPTQ_OK;
}

/* Rank 0 alone: recipe, provenance, checkpoint created or checked for resume, shared tensors. */
static fptq_status coordinator_open(job *J, char **recipe_json)
{
    const fptq_quantize_opts *o = J->o;
    char *provenance_json = NULL, *config_json = NULL;
    fptq_status st;
    *recipe_json = fptq_recipe_json(&J->r);
    FPTQ_TRY_GOTO(make_provenance(&J->m, o, J->w ? J->w->size : 1, J->stages, &provenance_json), st, done);
    char cfg_path[sizeof J->m.dir + 16];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", o->model_dir);
    FPTQ_TRY_GOTO(read_text_file(cfg_path, &config_json), st, done);
    struct stat sb;
    if (o->resume && stat(o->out_dir, &sb) == 0) {
        FPTQ_TRY_GOTO(ckpt_open(o->out_dir, &J->ck), st, done);
        FPTQ_TRY_GOTO(check_resume(J->ck, o->out_dir, *recipe_json, provenance_json), st, done);
        if (ckpt_n_layers(J->ck) != J->m.cfg.num_hidden_layers) {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "checkpoint %s has %lld layers, the model %lld", o->out_dir,
                           (long long)ckpt_n_layers(J->ck), (long long)J->m.cfg.num_hidden_layers);
            goto done;
        }
        warn_layout_change(J->ck, J->w ? J->w->size : 1, J->stages);
    } else {
        if (o->resume)
            fptq_info("--resume: %s does not exist yet, starting a new checkpoint", o->out_dir);
        ckpt_meta meta = {.config_json = config_json, .recipe_json = *recipe_json,
                          .provenance_json = provenance_json, .n_layers = J->m.cfg.num_hidden_layers};
        FPTQ_TRY_GOTO(ckpt_create(o->out_dir, &meta, &J->ck), st, done);
    }
    if (!ckpt_has_shared(J->ck))
        FPTQ_TRY_GOTO(write_shared(J->ck, &J->m), st, done);
    st = FPTQ_OK;
done:
    free(provenance_json);
    free(config_json);
    return st;
}

/* Layer ranges per stage, planned by rank 0 and broadcast. */
static fptq_status plan_stages(job *J)
{
    const int64_t L = J->m.cfg.num_hidden_layers;
    FPTQ_TRY(fptq_calloc((size_t)J->stages + 1, sizeof(int64_t), "stage bounds", &J->bounds));
    if (J->rank == 0) {
        double *cost;
        FPTQ_TRY(fptq_calloc((size_t)L, sizeof(double), "layer costs", &cost));
        for (int64_t l = 0; l < L; l++)
            cost[l] = shard_layer_cost(&J->m.cfg, J->r.calib_samples * J->T);
        fptq_status st = shard_plan_stages(cost, L, J->stages, J->bounds);
        free(cost);
        FPTQ_TRY(st);
    }
    if (J->w)
        FPTQ_TRY(fptq_world_bcast(J->w, J->bounds, (size_t)(J->stages + 1) * sizeof(int64_t), 0));
    return FPTQ_OK;
}

static fptq_status job_run(job *J)
{
    const fptq_quantize_opts *o = J->o;
    const llama_config *c = &J->m.cfg;
    fptq_tokens tok = {0};
    int32_t *ids = NULL;
    char *recipe_json = NULL;
    fptq_status st;

    FPTQ_TRY(fptq_model_open(o->model_dir, &J->m));
    FPTQ_TRY_GOTO(tokens_load(o->calib_path, c->vocab_size, &tok), st, done);
    if (J->r.calib_seqlen == 0)
        J->r.calib_seqlen = c->max_position_embeddings < 2048 ? c->max_position_embeddings : 2048;
    if (J->r.calib_seqlen > c->max_position_embeddings) {
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "--calib-seqlen %lld is longer than the model's context (max_position_embeddings %lld)",
                       (long long)J->r.calib_seqlen, (long long)c->max_position_embeddings);
        goto done;
    }
    J->T = J->r.calib_seqlen;
    FPTQ_TRY_GOTO(fptq_calib_samples(&tok, J->r.calib_samples, J->T, o->calib_path, &ids), st, done);
    if (J->r.calib_samples < J->per_stage) {
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "--calib-samples %lld is fewer than the %d ranks of a stage: every rank needs a sample",
                       (long long)J->r.calib_samples, J->per_stage);
        goto done;
    }
    int64_t s0, s1;
    shard_split_range(J->r.calib_samples, J->per_stage, J->member, &s0, &s1);
    J->n_seq = s1 - s0;
    FPTQ_TRY_GOTO(plan_stages(J), st, done);

    /* rank 0 makes or checks the checkpoint; the others open it after */
    int ok = 1;
    if (J->rank == 0) {
        st = coordinator_open(J, &recipe_json);
        ok = st == FPTQ_OK;
    }
    if (J->w)
        FPTQ_TRY_GOTO(fptq_world_bcast(J->w, &ok, sizeof ok, 0), st, done);
    if (!ok) {
        if (J->rank == 0)
            goto done; /* st holds rank 0's failure; main reports it and brings the world down */
        st = FPTQ_FAIL(FPTQ_ERR_COMM, "rank 0 could not prepare checkpoint %s", o->out_dir);
        goto done;
    }
    if (J->rank != 0)
        FPTQ_TRY_GOTO(ckpt_open(o->out_dir, &J->ck), st, done);

    const int64_t rows = J->n_seq * J->T, L = c->num_hidden_layers;
    FPTQ_TRY_GOTO(fptq_calloc((size_t)L, sizeof(stage_note), "progress notes", &J->notes), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows * c->hidden_size), sizeof(float), "calibration activations", &J->x), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows * c->hidden_size), sizeof(float), "calibration work copy", &J->xw), st, done);
    FPTQ_TRY_GOTO(fptq_layer_alloc(c, &J->lw), st, done);
    FPTQ_TRY_GOTO(fptq_forward_ws_alloc(c, rows, &J->ws), st, done);
    const rope_params rp = fptq_rope_params(c);
    FPTQ_TRY_GOTO(rope_table_init(&rp, J->T, &J->rt), st, done);
    FPTQ_TRY_GOTO(layer_job_init(&J->lj, &J->coll, &J->r, c), st, done);
    FPTQ_TRY_GOTO(fptq_embed(&J->m, ids + s0 * J->T, rows, J->x), st, done);
    for (int64_t l = 0; l < L; l++)
        J->pending_at_start += !ckpt_layer_done(J->ck, l);
    if (o->progress && J->rank == 0) {
        fptq_info("quantize: %s, %lld layers, %s %s g%lld%s, calibration %lld x %lld tokens, backend %s",
                  o->model_dir, (long long)L, J->r.scheme, fptq_method_name(J->r.method),
                  (long long)J->r.weight.group_size, J->r.act_order ? " act-order" : "",
                  (long long)J->r.calib_samples, (long long)J->T, J->be->name);
        if (J->w && J->w->size > 1)
            for (int s = 0; s < J->stages; s++)
                fptq_info("  stage %d: layers %lld..%lld on ranks %d..%d", s, (long long)J->bounds[s],
                          (long long)J->bounds[s + 1] - 1, s * J->per_stage, (s + 1) * J->per_stage - 1);
    }

    int stopped = 0, ended = 0, any_stopped = 0;
    if (J->r.propagate == PROPAGATE_QUANTIZED) {
        /* stages one after another: each starts from the previous one's quantized output */
        FPTQ_TRY_GOTO(handoff_recv(J, J->x, &stopped), st, done);
        if (!stopped)
            FPTQ_TRY_GOTO(run_stage_layers(J, &stopped, &ended, &any_stopped), st, done);
        FPTQ_TRY_GOTO(handoff_send(J, J->x, stopped), st, done);
    } else {
        /* full-precision pre-pass through the earlier stages, then all stages at once */
        if (J->w)
            FPTQ_TRY_GOTO(fp_prepass(J), st, done);
        FPTQ_TRY_GOTO(run_stage_layers(J, &stopped, &ended, &any_stopped), st, done);
    }

    /* the coordinator hears every stage out, then seals the result */
    if (J->w && J->member == 0 && J->rank != 0) {
        stage_note n = {.kind = NOTE_STAGE_END, .stage = J->stage, .stopped = stopped};
        FPTQ_TRY_GOTO(fptq_world_send(J->w, 0, &n, sizeof n, NOTE_TAG), st, done);
        FPTQ_TRY_GOTO(fptq_world_flush(J->w), st, done);
    }
    if (J->rank == 0) {
        ended++;   /* stage 0, this rank's own */
        any_stopped |= stopped;
        while (J->w && ended < J->stages) {
            stage_note n;
            FPTQ_TRY_GOTO(fptq_world_note_wait(J->w, NOTE_TAG, &n, sizeof n), st, done);
            if (n.kind == NOTE_LAYER) {
                FPTQ_TRY_GOTO(coordinator_layer_done(J, &n), st, done);
            } else {
                ended++;
                any_stopped |= n.stopped != 0;
            }
        }
        J->res->stopped_early = any_stopped;
        J->res->stop_signal = stop_signo;
        if (!any_stopped)
            FPTQ_TRY_GOTO(ckpt_digest(J->ck, J->res->digest), st, done);
    }
    if (J->w) {
        int64_t s = J->res->stopped_early;
        FPTQ_TRY_GOTO(fptq_world_bcast(J->w, &s, sizeof s, 0), st, done);
        J->res->stopped_early = (int)s;
    }
    J->res->layers_total = L;
    st = FPTQ_OK;
done:
    free(recipe_json);
    free(ids);
    tokens_free(&tok);
    return st;
}

fptq_status fptq_quantize(const fptq_backend *be, fptq_world *w, const fptq_quantize_opts *o, fptq_quantize_result *res)
{
    memset(res, 0, sizeof *res);
    job *J;
    FPTQ_TRY(fptq_calloc(1, sizeof *J, "job", &J));
    J->be = be;
    J->w = w && w->size > 1 ? w : NULL;
    J->o = o;
    J->r = o->recipe;
    J->res = res;
    J->t_start = fptq_now();
    fault_parse(J);
    fptq_status st = FPTQ_OK;
    if (J->w) {
        shard_grid g;
        llama_config probe;
        char cfg_path[4096 + 16];
        snprintf(cfg_path, sizeof cfg_path, "%s/config.json", o->model_dir);
        st = llama_config_load(cfg_path, &probe);
        if (st == FPTQ_OK)
            st = shard_grid_make(w->size, o->stages, w->n_nodes, probe.num_hidden_layers, &g);
        if (st == FPTQ_OK)
            st = fptq_world_set_grid(w, g.stages);
        J->rank = w->rank;
        J->stage = w->stage;
        J->member = w->member;
        J->stages = w->stages;
        J->per_stage = w->per_stage;
        J->coll = w->stage_coll;
    } else {
        if (o->stages > 1)
            st = FPTQ_FAIL(FPTQ_ERR_ARG, "--stages %d needs as many ranks at least (run under mpirun)", o->stages);
        J->stages = J->per_stage = 1;
        fptq_collectives_single(&J->coll);
    }
    if (st == FPTQ_OK)
        st = job_run(J);
    res->seconds = fptq_now() - J->t_start;
    layer_job_free(&J->lj);
    rope_table_free(&J->rt);
    fptq_forward_ws_free(&J->ws);
    fptq_layer_free(&J->lw);
    free(J->x);
    free(J->xw);
    free(J->bounds);
    free(J->notes);
    ckpt_close(J->ck);
    fptq_model_close(&J->m);
    free(J);
    return st;
}
