/*
 * Perplexity over evaluation windows, a batch of windows at a time through
 * the layer-major forward pass.
 */
#include "eval.h"

#include "forward.h"

#include <math.h>
#include <stdlib.h>

fptq_status fptq_eval_perplexity(const fptq_backend *be, const fptq_model *m, const int32_t *tokens,
                                 int64_t n_tokens, const fptq_eval_opts *o, fptq_eval_result *r)
{
    FPTQ_TRY(fptq_forward_check_env());
    if (o->seqlen < 2 || o->windows < 1 || o->start < 0 || o->batch < 1)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "eval: need --seqlen >= 2, --windows >= 1, --start >= 0 (got %lld, %lld, %lld)",
                         (long long)o->seqlen, (long long)o->windows, (long long)o->start);
    if (o->seqlen > m->cfg.max_position_embeddings)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "--seqlen %lld is longer than the model's context (max_position_embeddings %lld)",
                         (long long)o->seqlen, (long long)m->cfg.max_position_embeddings);
    if (m->cfg.sliding_window > 0 && o->seqlen > m->cfg.sliding_window)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "--seqlen %lld is longer than the model's sliding_window %lld, which fptq does not implement",
                         (long long)o->seqlen, (long long)m->cfg.sliding_window);
    if (o->start > n_tokens || o->windows > (n_tokens - o->start) / o->seqlen)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "--start %lld + --windows %lld x --seqlen %lld needs %lld tokens, the file has %lld",
                         (long long)o->start, (long long)o->windows, (long long)o->seqlen,
                         (long long)(o->start + o->windows * o->seqlen), (long long)n_tokens);

    const double t0 = fptq_now();
    const int64_t batch = o->batch < o->windows ? o->batch : o->windows;
    double *nll = NULL;
    fptq_status st;
    FPTQ_TRY(fptq_calloc((size_t)(batch * o->seqlen), sizeof(double), "per-token NLL", &nll));
    double total = 0.0;
    int64_t predicted = 0;
    for (int64_t w0 = 0; w0 < o->windows; w0 += batch) {
        const int64_t nb = o->windows - w0 < batch ? o->windows - w0 : batch;
        const int32_t *ids = tokens + o->start + w0 * o->seqlen;
        FPTQ_TRY_GOTO(fptq_forward_nll(be, m, ids, nb, o->seqlen, nll, NULL, o->progress > 1), st, done);
        for (int64_t i = 0; i < nb * o->seqlen; i++) {
            const int64_t window = w0 + i / o->seqlen, pos = i % o->seqlen;
            if (pos == o->seqlen - 1)
                continue; /* the last token predicts nothing (its nll is NAN by design) */
            /* skipping it would report a perplexity over fewer predictions than
             * the protocol's, of a model that is broken */
            if (!isfinite(nll[i])) {
                const int64_t t0w = o->start + window * o->seqlen;
                st = FPTQ_FAIL(FPTQ_ERR_NUMERIC,
                               "eval: window %lld (tokens [%lld, %lld)), position %lld: the loss of the next "
                               "token is %g, not a finite number (non-finite logits: damaged weights or an "
                               "overflow)",
                               (long long)window, (long long)t0w, (long long)(t0w + o->seqlen), (long long)pos,
                               nll[i]);
                goto done;
            }
            total += nll[i];
            predicted++;
        }
        if (o->progress)
            fptq_info("eval: windows %lld/%lld, running ppl %.4f, %.1f s", (long long)(w0 + nb),
                      (long long)o->windows, exp(total / (double)predicted), fptq_now() - t0);
    }
    r->predicted = predicted;
    r->nll = total / (double)predicted;
    r->ppl = exp(r->nll);
    r->seconds = fptq_now() - t0;
    st = FPTQ_OK;
done:
    free(nll);
    return st;
}
