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

#endif
