/*
 * One decoder layer's calibration and quantization on the ranks of a stage:
 * forward hooks that, before each group of linears, sum the input's
 * statistics over the stage, fold AWQ / SmoothQuant scales, and quantize the
 * group's rows split over the ranks, so that the next group sees the
 * quantized output (true-sequential). Internal to worker/.
 */
#ifndef FPTQ_LAYER_QUANT_H
#define FPTQ_LAYER_QUANT_H

#include "comm.h"
#include "forward.h"
#include "quantize.h"

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

fptq_status layer_job_init(layer_job *j, const fptq_collectives *coll, const fptq_recipe *r, const llama_config *c);
void layer_job_free(layer_job *j);

/* Calibrates and quantizes layer l, whose fp weights are in lw, on a copy of
 * the layer input x (xw receives the layer's output with the quantized
 * weights); out gets the stored form: codes, scales, folded norms. */
fptq_status quantize_layer(const fptq_backend *be, const fptq_model *m, const fptq_recipe *r, layer_job *j,
                           int64_t l, fptq_layer_weights *lw, const float *x, float *xw, int64_t n_seq,
                           int64_t seq_len, const rope_table *rt, fptq_forward_ws *ws, ckpt_layer *out);

#endif
