/*
 * The recipe of a quantization job (scheme, method, groups, activations,
 * propagation), checked against what each scheme can express, and its
 * canonical JSON (a resume must match it); the calibration samples.
 */
#include "quantize.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
