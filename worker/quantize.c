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
#include "forward.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#ifndef FPTQ_VERSION
#define FPTQ_VERSION "dev"
#endif

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
    else if (strcmp(propagate, "fp") == 0)
        r->propagate = PROPAGATE_FP;
    else
        return FPTQ_FAIL(FPTQ_ERR_ARG, "--propagate: '%s' is not available on one rank (expected quantized or fp)", propagate);
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
    cJSON_AddStringToObject(o, "propagate", r->propagate == PROPAGATE_FP ? "fp" : "quantized");
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
    const fptq_recipe *r;
    const llama_config *c;
    int64_t layer;
    fptq_layer_weights *lw;      /* modified in place: folds, then quantized weights */
    ckpt_layer *out;             /* filled group by group */
    int awq_search_only;         /* AWQ pass 1: search and fold, quantize nothing */
    float *clip[LIN_COUNT];      /* AWQ clip ratios per linear, from pass 1 */
    linear_stats stats[LGROUP_COUNT]; /* of each group's input */
    float *H, *Wf, *scale;       /* scratch: Hessian, original weights, channel scales */
    double *abs_mean;
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

static fptq_status quantize_linear(layer_job *j, fptq_linear_id id, const float *H)
{
    const fptq_recipe *r = j->r;
    int64_t out, in;
    fptq_linear_shape(j->c, id, &out, &in);
    ckpt_linear *cl = &j->out->lin[id];
    float *W = j->lw->w[id];
    snprintf(cl->name, sizeof cl->name, "%s", fptq_linear_name(id));
    snprintf(cl->method, sizeof cl->method, "%s", fptq_method_name(r->method));
    FPTQ_TRY(quant_tensor_alloc(&r->weight, out, in, r->act_order, &cl->q));
    memcpy(j->Wf, W, (size_t)(out * in) * sizeof(float));
    if (r->method == METHOD_GPTQ) {
        gptq_opts go = {.damp_percent = r->damp, .block_size = 128, .act_order = r->act_order};
        gptq_result gr;
        FPTQ_TRY(gptq_quantize(j->Wf, out, in, H, &go, &cl->q, W, &gr));
        cl->damp = gr.damp;
        if (gr.retries)
            fptq_warn("layer %lld %s: Cholesky needed %d damping increase(s), damp %.3g", (long long)j->layer,
                      fptq_linear_name(id), gr.retries, gr.damp);
    } else {
        FPTQ_TRY(quant_rtn(j->Wf, out, in, j->clip[id], &cl->q));
        quant_dequantize(&cl->q, W);
    }
    FPTQ_TRY(proxy_loss(j->Wf, W, out, in, H, &cl->loss));
    if (j->lw->bias[id]) {
        FPTQ_TRY(fptq_calloc((size_t)out, sizeof(float), "bias copy", &cl->bias));
        memcpy(cl->bias, j->lw->bias[id], (size_t)out * sizeof(float));
    }
    return FPTQ_OK;
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
    linear_stats_reset(stats);
    FPTQ_TRY(linear_stats_accumulate(stats, X, rows));

    if (j->awq_search_only) {
        smooth_group sg = group_of(j, g);
        for (int64_t k = 0; k < cols; k++)
            j->abs_mean[k] = stats->abs_sum[k] / (double)stats->tokens;
        awq_opts ao = {.grid = 20, .max_tokens = 4096, .clip_grid = 20};
        float alpha = 0.0f;
        double err = 0.0;
        const int can_fold = g != LGROUP_O || j->c->num_key_value_heads == j->c->num_attention_heads;
        if (can_fold) {
            FPTQ_TRY(awq_search_scale(X, rows, &sg, &r->weight, j->abs_mean, &ao, j->scale, &alpha, &err));
            fold_group_scale(j, g, j->scale, X, rows);
        }
        for (int i = 0; i < count; i++)
            FPTQ_TRY(awq_search_clip(X, rows, sg.W[i], sg.rows[i], cols, &r->weight, &ao, j->clip[first + i]));
        fptq_debug("layer %lld %s: AWQ alpha %.2f", (long long)j->layer, fptq_linear_group_name(g), alpha);
        return FPTQ_OK;
    }

    if (r->smoothquant_alpha >= 0.0f && (g == LGROUP_QKV || g == LGROUP_GATE_UP)) {
        smooth_group sg = group_of(j, g);
        smoothquant_scales(stats->abs_max, &sg, r->smoothquant_alpha, j->scale);
        fold_group_scale(j, g, j->scale, X, rows);
        linear_stats_reset(stats);
        FPTQ_TRY(linear_stats_accumulate(stats, X, rows));
    }

    FPTQ_TRY(linear_stats_hessian(stats, j->H));
    for (int i = 0; i < count; i++) {
        fptq_status st = quantize_linear(j, (fptq_linear_id)(first + i), j->H);
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

static fptq_status layer_job_init(layer_job *j, const fptq_recipe *r, const llama_config *c)
{
    memset(j, 0, sizeof *j);
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

static fptq_status make_provenance(const fptq_model *m, const fptq_quantize_opts *o, char **json)
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
    cJSON_AddNumberToObject(p, "world_size", 1);
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

/* ---- the job ----------------------------------------------------------------- */

fptq_status fptq_quantize(const fptq_backend *be, const fptq_quantize_opts *o, fptq_quantize_result *res)
{
    memset(res, 0, sizeof *res);
    const double t_start = fptq_now();
    fptq_model m;
    fptq_tokens tok = {0};
    ckpt *ck = NULL;
    int32_t *ids = NULL;
    float *x = NULL, *xw = NULL;
    char *recipe_json = NULL, *provenance_json = NULL, *config_json = NULL;
    fptq_layer_weights lw = {0};
    fptq_forward_ws ws = {0};
    rope_table rt = {0};
    layer_job job;
    memset(&job, 0, sizeof job);
    fptq_recipe r = o->recipe;
    fptq_status st;

    FPTQ_TRY(fptq_model_open(o->model_dir, &m));
    const llama_config *c = &m.cfg;
    FPTQ_TRY_GOTO(tokens_load(o->calib_path, c->vocab_size, &tok), st, done);
    if (r.calib_seqlen == 0)
        r.calib_seqlen = c->max_position_embeddings < 2048 ? c->max_position_embeddings : 2048;
    if (r.calib_seqlen > c->max_position_embeddings) {
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "--calib-seqlen %lld is longer than the model's context (max_position_embeddings %lld)",
                       (long long)r.calib_seqlen, (long long)c->max_position_embeddings);
        goto done;
    }
    FPTQ_TRY_GOTO(fptq_calib_samples(&tok, r.calib_samples, r.calib_seqlen, o->calib_path, &ids), st, done);
    const int64_t n_seq = r.calib_samples, T = r.calib_seqlen, rows = n_seq * T, L = c->num_hidden_layers;

    recipe_json = fptq_recipe_json(&r);
    FPTQ_TRY_GOTO(make_provenance(&m, o, &provenance_json), st, done);
    char cfg_path[sizeof m.dir + 16];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", o->model_dir);
    FPTQ_TRY_GOTO(read_text_file(cfg_path, &config_json), st, done);

    struct stat sb;
    if (o->resume && stat(o->out_dir, &sb) == 0) {
        FPTQ_TRY_GOTO(ckpt_open(o->out_dir, &ck), st, done);
        FPTQ_TRY_GOTO(check_resume(ck, o->out_dir, recipe_json, provenance_json), st, done);
        if (ckpt_n_layers(ck) != L) {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "checkpoint %s has %lld layers, the model %lld", o->out_dir,
                           (long long)ckpt_n_layers(ck), (long long)L);
            goto done;
        }
    } else {
        if (o->resume)
            fptq_info("--resume: %s does not exist yet, starting a new checkpoint", o->out_dir);
        ckpt_meta meta = {.config_json = config_json, .recipe_json = recipe_json,
                          .provenance_json = provenance_json, .n_layers = L};
        FPTQ_TRY_GOTO(ckpt_create(o->out_dir, &meta, &ck), st, done);
    }
    if (!ckpt_has_shared(ck))
        FPTQ_TRY_GOTO(write_shared(ck, &m), st, done);

    FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows * c->hidden_size), sizeof(float), "calibration activations", &x), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows * c->hidden_size), sizeof(float), "calibration work copy", &xw), st, done);
    FPTQ_TRY_GOTO(fptq_layer_alloc(c, &lw), st, done);
    FPTQ_TRY_GOTO(fptq_forward_ws_alloc(c, rows, &ws), st, done);
    const rope_params rp = fptq_rope_params(c);
    FPTQ_TRY_GOTO(rope_table_init(&rp, T, &rt), st, done);
    FPTQ_TRY_GOTO(layer_job_init(&job, &r, c), st, done);
    FPTQ_TRY_GOTO(fptq_embed(&m, ids, rows, x), st, done);
    if (o->progress)
        fptq_info("quantize: %s, %lld layers, %s %s g%lld%s, calibration %lld x %lld tokens, backend %s", o->model_dir,
                  (long long)L, r.scheme, fptq_method_name(r.method), (long long)r.weight.group_size,
                  r.act_order ? " act-order" : "", (long long)n_seq, (long long)T, be->name);

    for (int64_t l = 0; l < L; l++) {
        const double t0 = fptq_now();
        ckpt_layer cl;
        memset(&cl, 0, sizeof cl);
        char digest[65] = "";
        const int resumed = ckpt_layer_done(ck, l);
        if (resumed) {
            /* rebuild this layer's output from what is stored */
            st = ckpt_read_layer(ck, l, &cl);
            res->layers_skipped++;
        } else if (o->max_layers > 0 && res->layers_done_now >= o->max_layers) {
            res->stopped_early = 1;
            break;
        } else {
            st = fptq_layer_load(&m, l, &lw);
            if (st == FPTQ_OK)
                st = quantize_layer(be, &m, &r, &job, l, &lw, x, xw, n_seq, T, &rt, &ws, &cl);
            cl.seconds = fptq_now() - t0;
            if (st == FPTQ_OK)
                st = ckpt_write_layer(ck, &cl, digest);
            if (st == FPTQ_OK) {
                res->layers_done_now++;
                for (int id = 0; id < LIN_COUNT; id++)
                    res->loss[id] += cl.lin[id].loss;
            }
        }
        /* the hand-off: the next layer's input */
        if (st == FPTQ_OK) {
            if (r.propagate == PROPAGATE_FP)
                st = fptq_layer_load(&m, l, &lw);
            else
                st = fptq_layer_from_ckpt(c, &cl, &lw);
        }
        if (st == FPTQ_OK)
            st = fptq_layer_forward(be, c, &lw, &rt, x, n_seq, T, &ws, NULL);
        ckpt_layer_free(&cl);
        if (st != FPTQ_OK) {
            fptq_error_context("layer %lld", (long long)l);
            goto done;
        }
        if (o->progress) {
            const double el = fptq_now() - t_start;
            const int64_t left = L - l - 1;
            const double per = res->layers_done_now ? (el / (double)(res->layers_done_now + res->layers_skipped)) : 0.0;
            fptq_info("layer %lld/%lld %s in %.2f s, elapsed %.1f s, ETA %.0f s%s%.16s", (long long)l + 1, (long long)L,
                      resumed ? "restored" : "quantized", fptq_now() - t0, el, per * (double)left,
                      digest[0] ? ", digest " : "", digest);
        }
    }
    res->layers_total = L;
    if (!res->stopped_early)
        FPTQ_TRY_GOTO(ckpt_digest(ck, res->digest), st, done);
    st = FPTQ_OK;
done:
    res->seconds = fptq_now() - t_start;
    layer_job_free(&job);
    rope_table_free(&rt);
    fptq_forward_ws_free(&ws);
    fptq_layer_free(&lw);
    free(x);
    free(xw);
    free(ids);
    free(recipe_json);
    free(provenance_json);
    free(config_json);
    ckpt_close(ck);
    tokens_free(&tok);
    fptq_model_close(&m);
    return st;
}
