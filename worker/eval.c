/*
 * Perplexity over evaluation windows, a batch of windows at a time through
 * the layer-major forward pass.
 */
#include "eval.h"

#include "forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static fptq_status check_protocol(const fptq_model *m, int64_t n_tokens, const fptq_eval_opts *o)
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
    return FPTQ_OK;
}

fptq_status fptq_eval_perplexity(const fptq_backend *be, const fptq_model *m, const int32_t *tokens,
                                 int64_t n_tokens, const fptq_eval_opts *o, fptq_eval_result *r)
{
    FPTQ_TRY(check_protocol(m, n_tokens, o));

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

/* ---- the model against a reference ---------------------------------------- */

#define KL_BLOCK 2048

typedef struct head_rows {
    double *mx, *sum, *tl; /* per row: running max, sum of exp, target logit */
    int32_t *arg;          /* per row: argmax so far */
    float *best;           /* per row: the max logit (for argmax ties: first wins) */
} head_rows;

static double quantile(const double *sorted, int64_t n, double p)
{
    const double pos = p * (double)(n - 1);
    const int64_t lo = (int64_t)floor(pos);
    const double f = pos - (double)lo;
    return lo + 1 < n ? sorted[lo] + f * (sorted[lo + 1] - sorted[lo]) : sorted[n - 1];
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* logits = x[n, hidden] . W[v0 .. v0 + nb)^T of model m, on the host */
static fptq_status head_block(const fptq_model *m, const float *x, int64_t n, int64_t v0, int64_t nb, float *w,
                              float *logits)
{
    const int64_t hidden = m->cfg.hidden_size;
    FPTQ_TRY(fptq_model_head_rows(m, v0, nb, w));
    return fptq_backend_cpu.linear(x, n, hidden, w, nb, NULL, logits);
}

fptq_status fptq_eval_compare(const fptq_backend *be, const fptq_model *m, const fptq_model *ref,
                              const int32_t *tokens, int64_t n_tokens, const fptq_eval_opts *o,
                              fptq_eval_compare_result *r)
{
    memset(r, 0, sizeof *r);
    if (m->cfg.vocab_size != ref->cfg.vocab_size)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "--reference %s: vocab_size %lld, the model's is %lld: not the same tokenizer",
                         ref->dir, (long long)ref->cfg.vocab_size, (long long)m->cfg.vocab_size);
    FPTQ_TRY(check_protocol(m, n_tokens, o));
    FPTQ_TRY(check_protocol(ref, n_tokens, o));
    const double t0 = fptq_now();
    const int64_t batch = o->batch < o->windows ? o->batch : o->windows, T = o->seqlen;
    const int64_t vocab = m->cfg.vocab_size, bs = vocab < KL_BLOCK ? vocab : KL_BLOCK;
    const int64_t rows_max = batch * T, total_pred = o->windows * (T - 1);
    float *xq = NULL, *xr = NULL, *w = NULL, *lq = NULL, *lr = NULL;
    double *kl = NULL, *mx = NULL;
    int32_t *arg = NULL;
    fptq_status st;
    /* per row, for both models: max, sum, target logit, argmax value */
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows_max * m->cfg.hidden_size), sizeof(float), "model hidden states", &xq), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows_max * ref->cfg.hidden_size), sizeof(float), "reference hidden states", &xr),
                  st, done);
    {
        const int64_t hmax = m->cfg.hidden_size > ref->cfg.hidden_size ? m->cfg.hidden_size : ref->cfg.hidden_size;
        FPTQ_TRY_GOTO(fptq_calloc((size_t)(bs * hmax), sizeof(float), "head block", &w), st, done);
    }
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows_max * bs), sizeof(float), "model logits block", &lq), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows_max * bs), sizeof(float), "reference logits block", &lr), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)total_pred, sizeof(double), "KL divergences", &kl), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)rows_max * 8, sizeof(double), "row statistics", &mx), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)rows_max * 2, sizeof(int32_t), "row argmax", &arg), st, done);
    double *sq = mx + rows_max, *tq = mx + 2 * rows_max, *bq = mx + 3 * rows_max;
    double *mr = mx + 4 * rows_max, *sr = mx + 5 * rows_max, *tr = mx + 6 * rows_max, *br = mx + 7 * rows_max;
    int32_t *aq = arg, *ar = arg + rows_max;
    double nq = 0, nr = 0, dp2 = 0, dp1 = 0;
    int64_t agree = 0, k = 0;
    for (int64_t w0 = 0; w0 < o->windows; w0 += batch) {
        const int64_t nb = o->windows - w0 < batch ? o->windows - w0 : batch, rows = nb * T;
        const int32_t *ids = tokens + o->start + w0 * T;
        FPTQ_TRY_GOTO(fptq_forward_final(be, m, ids, nb, T, xq, o->progress > 1), st, done);
        FPTQ_TRY_GOTO(fptq_forward_final(be, ref, ids, nb, T, xr, o->progress > 1), st, done);
        for (int64_t i = 0; i < rows; i++) {
            mx[i] = mr[i] = -INFINITY;
            sq[i] = sr[i] = tq[i] = tr[i] = 0;
            bq[i] = br[i] = -INFINITY;
            aq[i] = ar[i] = -1;
        }
        /* pass 1: log-sum-exp, the true token's logit, the argmax */
        for (int64_t v0 = 0; v0 < vocab; v0 += bs) {
            const int64_t nv = vocab - v0 < bs ? vocab - v0 : bs;
            FPTQ_TRY_GOTO(head_block(m, xq, rows, v0, nv, w, lq), st, done);
            FPTQ_TRY_GOTO(head_block(ref, xr, rows, v0, nv, w, lr), st, done);
            for (int64_t i = 0; i < rows; i++) {
                const float *a = lq + i * nv, *b = lr + i * nv;
                double ma = mx[i], mb = mr[i];
                for (int64_t v = 0; v < nv; v++) {
                    if (a[v] > bq[i]) { bq[i] = a[v]; aq[i] = (int32_t)(v0 + v); }
                    if (b[v] > br[i]) { br[i] = b[v]; ar[i] = (int32_t)(v0 + v); }
                }
                const double na = bq[i] > ma ? bq[i] : ma, nbm = br[i] > mb ? br[i] : mb;
                double s1 = sq[i] * exp(ma - na), s2 = sr[i] * exp(mb - nbm);
                if (!isfinite(s1)) s1 = 0;
                if (!isfinite(s2)) s2 = 0;
                for (int64_t v = 0; v < nv; v++) {
                    s1 += exp((double)a[v] - na);
                    s2 += exp((double)b[v] - nbm);
                }
                mx[i] = na, sq[i] = s1, mr[i] = nbm, sr[i] = s2;
                const int64_t pos = i % T;
                if (pos < T - 1) {
                    const int32_t t = ids[i + 1];
                    if (t >= v0 && t < v0 + nv) {
                        tq[i] = a[t - v0];
                        tr[i] = b[t - v0];
                    }
                }
            }
        }
        /* pass 2: KL(P_ref || P_model) = sum_v p_ref(v) (log p_ref(v) - log p_model(v)) */
        double *klb = kl + k;
        int64_t kk = 0;
        for (int64_t i = 0; i < rows; i++)
            if (i % T < T - 1)
                klb[kk++] = 0;
        for (int64_t v0 = 0; v0 < vocab; v0 += bs) {
            const int64_t nv = vocab - v0 < bs ? vocab - v0 : bs;
            FPTQ_TRY_GOTO(head_block(m, xq, rows, v0, nv, w, lq), st, done);
            FPTQ_TRY_GOTO(head_block(ref, xr, rows, v0, nv, w, lr), st, done);
            kk = 0;
            for (int64_t i = 0; i < rows; i++) {
                if (i % T == T - 1)
                    continue;
                const double lse_q = mx[i] + log(sq[i]), lse_r = mr[i] + log(sr[i]);
                const float *a = lq + i * nv, *b = lr + i * nv;
                double acc = 0;
                for (int64_t v = 0; v < nv; v++) {
                    const double lpr = (double)b[v] - lse_r, lpq = (double)a[v] - lse_q;
                    acc += exp(lpr) * (lpr - lpq);
                }
                klb[kk++] += acc;
            }
        }
        kk = 0;
        for (int64_t i = 0; i < rows; i++) {
            if (i % T == T - 1)
                continue;
            const double lse_q = mx[i] + log(sq[i]), lse_r = mr[i] + log(sr[i]);
            const double a = lse_q - tq[i], b = lse_r - tr[i];
            if (!isfinite(a) || !isfinite(b) || !isfinite(klb[kk])) {
                const int64_t window = w0 + i / T;
                st = FPTQ_FAIL(FPTQ_ERR_NUMERIC, "eval: window %lld, position %lld: a non-finite loss or divergence "
                               "(model %g, reference %g, KL %g)", (long long)window, (long long)(i % T), a, b, klb[kk]);
                goto done;
            }
            if (klb[kk] < 0)
                klb[kk] = 0; /* rounding below an exact 0 */
            nq += a;
            nr += b;
            agree += aq[i] == ar[i];
            const double d = exp(-a) - exp(-b);
            dp1 += d;
            dp2 += d * d;
            kk++;
        }
        k += kk;
        if (o->progress)
            fptq_info("eval: windows %lld/%lld, running ppl %.4f (reference %.4f), %.1f s", (long long)(w0 + nb),
                      (long long)o->windows, exp(nq / (double)k), exp(nr / (double)k), fptq_now() - t0);
    }
    {
        double s = 0, mxk = 0;
        for (int64_t i = 0; i < k; i++) {
            s += kl[i];
            if (kl[i] > mxk)
                mxk = kl[i];
        }
        r->kl_mean = s / (double)k;
        r->kl_max = mxk;
        qsort(kl, (size_t)k, sizeof *kl, cmp_double);
        r->kl_median = quantile(kl, k, 0.5);
        r->kl_p90 = quantile(kl, k, 0.9);
        r->kl_p99 = quantile(kl, k, 0.99);
    }
    r->model.predicted = r->ref.predicted = k;
    r->model.nll = nq / (double)k;
    r->ref.nll = nr / (double)k;
    r->model.ppl = exp(r->model.nll);
    r->ref.ppl = exp(r->ref.nll);
    r->top1_agree = (double)agree / (double)k;
    r->rms_dp = sqrt(dp2 / (double)k);
    r->mean_dp = dp1 / (double)k;
    r->model.seconds = r->ref.seconds = fptq_now() - t0;
    st = FPTQ_OK;
done:
    free(xq); free(xr); free(w); free(lq); free(lr); free(kl); free(mx); free(arg);
    return st;
}
