/*
 * Perplexity with the protocol of shared/data/README.md: `windows`
 * consecutive non-overlapping windows of `seqlen` tokens from `start`, each
 * evaluated on its own from position 0, predicting tokens 1..seqlen-1.
 */
#ifndef FPTQ_EVAL_H
#define FPTQ_EVAL_H

#include "model.h"

typedef struct fptq_eval_opts {
    int64_t start, seqlen, windows;
    int64_t batch;        /* windows per forward batch (memory bound) */
    int progress;         /* a line per batch (and per layer) on stderr */
} fptq_eval_opts;

typedef struct fptq_eval_result {
    int64_t predicted;    /* windows x (seqlen - 1) */
    double nll;           /* mean negative log-likelihood, nats */
    double ppl;           /* exp(nll) */
    double seconds;
} fptq_eval_result;

fptq_status fptq_eval_perplexity(const fptq_backend *be, const fptq_model *m, const int32_t *tokens,
                                 int64_t n_tokens, const fptq_eval_opts *o, fptq_eval_result *r);

/* A model (quantized) against a reference (the unquantized model) on the same
 * windows, the figures of llama.cpp's `llama-perplexity --kl-divergence`:
 * per predicted token the KL divergence KL(P_ref || P_model) of the two
 * next-token distributions, whether both put the same token on top, and the
 * change in the probability of the true token. Both models run layer-major;
 * the heads go in vocabulary blocks, twice (log-sum-exp, then the
 * divergence), on the host: the full logits are never held. */
typedef struct fptq_eval_compare_result {
    fptq_eval_result model, ref;   /* perplexity of each on the windows */
    double kl_mean, kl_median, kl_p90, kl_p99, kl_max;  /* nats; quantiles interpolated linearly */
    double top1_agree;             /* share of positions where both argmax agree */
    double rms_dp;                 /* RMS of p_model(true token) - p_ref(true token) */
    double mean_dp;
} fptq_eval_compare_result;

fptq_status fptq_eval_compare(const fptq_backend *be, const fptq_model *m, const fptq_model *ref,
                              const int32_t *tokens, int64_t n_tokens, const fptq_eval_opts *o,
                              fptq_eval_compare_result *r);

#endif
