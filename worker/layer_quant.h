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

/* Memory: X, the layer's weights as the forward sees them (dl), the
 * statistics, H, Wf and Qpart are in the backend's memory; the host layer
 * (lw) is the master copy of what the host-side steps change (scale folds,
 * AWQ's searches), uploaded to dl after each change. On the CPU dl is a view
 * of lw and the uploads are no-ops. */
typedef struct layer_job {
    const fptq_backend *be;
    const fptq_collectives *coll; /* the stage's ranks, host buffers: rows split, tokens, losses */
    const fptq_collectives *dcoll;/* the same ranks, buffers in the backend's memory: statistics */
    const fptq_recipe *r;
    const llama_config *c;
    int64_t layer;
    fptq_layer_weights *lw;      /* host: folds happen here */
    fptq_dev_layer *dl;          /* what the forward runs: folds uploaded, quantized weights written */
    ckpt_layer *out;             /* filled group by group */
    int awq_search_only;         /* AWQ pass 1: search and fold, quantize nothing */
    float *clip[LIN_COUNT];      /* host: AWQ clip ratios per linear, from pass 1 */
    linear_stats stats[LGROUP_COUNT]; /* of each group's input: views of stats_buf, one group at a time */
    linear_stats stats_buf;      /* backend memory, sized for the widest group */
    double *abs_sum;             /* host copies of the group's summed statistics */
    float *abs_max;
    float *H;                    /* the group in hand's Hessian: its statistics' xtx, scaled in place */
    float *Wf, *Qpart;           /* backend: this rank's original rows, their dequantized form
                                  * (sized for its largest share, layer_job_max_share) */
    float *scale;                /* host: channel scales */
    float *Xs;                   /* host, AWQ: the token subsample gathered from every rank */
    int64_t *sub_k;              /* [ranks of the stage]: each one's tokens in it */
    size_t *sub_counts;          /* [ranks of the stage]: gather sizes */
    int64_t sub_off, sub_n;      /* this rank's first token in it; its tokens */
    int64_t rows;                /* this rank's calibration tokens */
    int smoothed;                /* SmoothQuant: the group in hand is folded, observed again */
    double *abs_mean;
    int64_t *row_begin, *row_end;/* [ranks of the stage]: rows of the linear in hand */
    void *gptq_plan;             /* GPTQ: of the group in hand (backend's gptq_prepare) */
} layer_job;

fptq_status layer_job_init(layer_job *j, const fptq_backend *be, const fptq_collectives *coll,
                           const fptq_collectives *dcoll, const fptq_recipe *r, const llama_config *c);
void layer_job_free(layer_job *j);
/* Elements of the largest piece of one linear that member `member` of
 * `members` quantizes (its rows of it times the columns). */
int64_t layer_job_max_share(const llama_config *c, int members, int member);

/* Calibrates and quantizes layer l, whose fp weights are in lw (host) and dl
 * (the backend's), on a copy of the layer input x (xw receives the layer's
 * output with the quantized weights; both backend memory); out gets the
 * stored form: codes, scales, folded norms. */
fptq_status quantize_layer(const fptq_model *m, layer_job *j, int64_t l, fptq_layer_weights *lw,
                           fptq_dev_layer *dl, const float *x, float *xw, int64_t n_seq, int64_t seq_len,
                           const rope_table *rt, fptq_forward_ws *ws, ckpt_layer *out);

#endif
