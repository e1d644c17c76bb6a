/*
 * The forward pass against independent references: llama2.c's logits for
 * the first 64 tokens, the golden perplexity of shared/data/README.md, and
 * the BF16 two-shard copy of the same model.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "io/npy.h"
#include "kernels/smooth.h"
#include "worker/eval.h"
#include "worker/forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MODEL FPTQ_EXAMPLES "/stories260K"
#define MODEL_BF16 FPTQ_EXAMPLES "/stories260K-bf16-sharded"
#define TOKENS FPTQ_EXAMPLES "/tinystories.tok512.npy"
#define GOLDEN_PPL 7.361119
#define GOLDEN_NLL 1.996212

static const fptq_backend *be = &fptq_backend_cpu;

static void check_ok(fptq_status st)
{
    if (st != FPTQ_OK)
        fail_msg("status %s: %s", fptq_status_name(st), fptq_last_error());
}

static double eval_ppl(const char *dir, int64_t batch, fptq_eval_result *r)
{
    fptq_model m;
    fptq_tokens tok;
    check_ok(fptq_model_open(dir, &m));
    check_ok(tokens_load(TOKENS, m.cfg.vocab_size, &tok));
    fptq_eval_opts o = {.start = 40960, .seqlen = 256, .windows = 16, .batch = batch};
    check_ok(fptq_eval_perplexity(be, &m, tok.ids, tok.n_tokens, &o, r));
    tokens_free(&tok);
    fptq_model_close(&m);
    return r->ppl;
}

/* llama2.c's logits: per position, ||ours - golden|| / ||golden|| < 1e-4. */
static void test_logits_match_llama2c(void **state)
{
    (void)state;
    fptq_model m;
    fptq_tokens tok;
    npy_array golden;
    check_ok(fptq_model_open(MODEL, &m));
    check_ok(tokens_load(TOKENS, m.cfg.vocab_size, &tok));
    check_ok(npy_load(FPTQ_TESTDATA "/stories260K.logits64.npy", &golden));
    assert_int_equal(golden.dtype, NPY_F32);
    assert_int_equal(golden.ndim, 2);
    assert_int_equal(golden.shape[0], 64);
    assert_int_equal(golden.shape[1], m.cfg.vocab_size);

    const int64_t T = 64, V = m.cfg.vocab_size;
    float *logits = malloc((size_t)(T * V) * sizeof(float));
    double *nll = malloc((size_t)T * sizeof(double));
    check_ok(fptq_forward_nll(be, &m, tok.ids, 1, T, nll, logits, 0));
    const float *ref = golden.data;
    double worst = 0.0;
    for (int64_t t = 0; t < T; t++) {
        double num = 0, den = 0;
        for (int64_t v = 0; v < V; v++) {
            const double d = (double)logits[t * V + v] - ref[t * V + v];
            num += d * d;
            den += (double)ref[t * V + v] * ref[t * V + v];
        }
        worst = fmax(worst, sqrt(num / den));
    }
    print_message("worst per-position relative L2 vs llama2.c: %.3g\n", worst);
    assert_true(worst < 1e-4);
    /* the NLL the head reports is that of the logits it produced */
    double lse = 0, mx = -INFINITY;
    for (int64_t v = 0; v < V; v++)
        mx = fmax(mx, logits[v]);
    for (int64_t v = 0; v < V; v++)
        lse += exp(logits[v] - mx);
    assert_true(fabs(nll[0] - (mx + log(lse) - logits[tok.ids[1]])) < 1e-5);
    assert_true(isnan(nll[T - 1]));
    free(logits);
    free(nll);
    npy_free(&golden);
    tokens_free(&tok);
    fptq_model_close(&m);
}

/* 0.1% is the README's bar for a correct fp32 implementation. */
static void test_golden_perplexity(void **state)
{
    (void)state;
    fptq_eval_result r;
    const double ppl = eval_ppl(MODEL, 16, &r);
    print_message("fp32 ppl %.6f nll %.6f predicted %lld (golden %.6f)\n", ppl, r.nll,
                  (long long)r.predicted, GOLDEN_PPL);
    assert_int_equal(r.predicted, 16 * 255);
    assert_true(fabs(ppl / GOLDEN_PPL - 1.0) < 1e-3);
    assert_true(fabs(r.nll - GOLDEN_NLL) < 1e-3);
}

/* Windows are independent: one per batch or all in one give the same sum. */
static void test_batching_does_not_change_result(void **state)
{
    (void)state;
    fptq_eval_result r1, r16;
    eval_ppl(MODEL, 1, &r1);
    eval_ppl(MODEL, 16, &r16);
    assert_true(fabs(r1.nll - r16.nll) < 1e-6);
}

/* BF16 weights perturb each weight by <= 2^-9 relative; 1% is the bar. */
static void test_bf16_sharded_close_to_fp32(void **state)
{
    (void)state;
    fptq_eval_result r32, r16;
    eval_ppl(MODEL, 16, &r32);
    eval_ppl(MODEL_BF16, 16, &r16);
    print_message("bf16 two-shard ppl %.6f vs fp32 %.6f\n", r16.ppl, r32.ppl);
    assert_true(fabs(r16.ppl / r32.ppl - 1.0) < 1e-2);
    assert_true(r16.ppl != r32.ppl); /* the BF16 copy really is a different model */
}

static void test_eval_window_range_checked(void **state)
{
    (void)state;
    fptq_model m;
    fptq_tokens tok;
    fptq_eval_result r;
    check_ok(fptq_model_open(MODEL, &m));
    check_ok(tokens_load(TOKENS, m.cfg.vocab_size, &tok));
    fptq_eval_opts o = {.start = 98000, .seqlen = 256, .windows = 16, .batch = 16};
    fptq_clear_error();
    assert_int_equal(fptq_eval_perplexity(be, &m, tok.ids, tok.n_tokens, &o, &r), FPTQ_ERR_ARG);
    assert_non_null(strstr(fptq_last_error(), "the file has 98864"));
    fptq_clear_error();
    o = (fptq_eval_opts){.start = 0, .seqlen = 1024, .windows = 1, .batch = 1};
    assert_int_equal(fptq_eval_perplexity(be, &m, tok.ids, tok.n_tokens, &o, &r), FPTQ_ERR_ARG);
    assert_non_null(strstr(fptq_last_error(), "max_position_embeddings 512"));
    fptq_clear_error();
    tokens_free(&tok);
    fptq_model_close(&m);
}

/* AWQ and SmoothQuant fold per-channel scales into a real layer: the
 * layer's function must not change. Each fold adds one rounding per weight
 * (relative 2^-24 each), so the output moves by ~1e-6 relative; 1e-5 allows
 * for the sums over 64..172 terms that follow. */
static void test_folds_keep_layer_output(void **state)
{
    (void)state;
    fptq_model m;
    fptq_tokens tok;
    check_ok(fptq_model_open(MODEL, &m));
    check_ok(tokens_load(TOKENS, m.cfg.vocab_size, &tok));
    const llama_config *c = &m.cfg;
    const int64_t n_seq = 2, T = 64, rows = n_seq * T, H = c->hidden_size, I = c->intermediate_size;
    fptq_layer_weights lw;
    fptq_forward_ws ws;
    rope_table rt;
    const rope_params rp = fptq_rope_params(c);
    check_ok(fptq_layer_alloc(c, &lw));
    check_ok(fptq_forward_ws_alloc(be, c, rows, &ws));
    check_ok(rope_table_init(&rp, T, &rt));
    float *x0 = malloc((size_t)(rows * H) * sizeof(float)), *x1 = malloc((size_t)(rows * H) * sizeof(float));
    float *s_h = malloc((size_t)H * sizeof(float)), *s_i = malloc((size_t)I * sizeof(float));
    check_ok(fptq_embed(&m, tok.ids, rows, x0));
    memcpy(x1, x0, (size_t)(rows * H) * sizeof(float));
    check_ok(fptq_layer_load(&m, 1, &lw));
    check_ok(fptq_layer_forward(be, c, &lw, &rt, x0, n_seq, T, &ws, NULL));

    for (int64_t j = 0; j < H; j++)
        s_h[j] = (float)exp(0.5 * sin(1.7 * (double)j));   /* scales in [0.6, 1.65] */
    for (int64_t j = 0; j < I; j++)
        s_i[j] = (float)exp(0.5 * cos(0.9 * (double)j));
    fold_scale_into_norm(lw.attn_norm, H, s_h);       /* q/k/v read the attention norm */
    for (int id = LIN_Q; id <= LIN_V; id++)
        fold_scale_into_input(lw.w[id], id == LIN_Q ? c->num_attention_heads * c->head_dim
                                                    : c->num_key_value_heads * c->head_dim, H, s_h);
    fold_scale_into_norm(lw.mlp_norm, H, s_h);        /* gate/up read the MLP norm */
    fold_scale_into_input(lw.w[LIN_GATE], I, H, s_h);
    fold_scale_into_input(lw.w[LIN_UP], I, H, s_h);
    fold_scale_into_output(lw.w[LIN_UP], NULL, I, H, s_i); /* up's rows feed down's columns */
    fold_scale_into_input(lw.w[LIN_DOWN], H, I, s_i);
    check_ok(fptq_layer_forward(be, c, &lw, &rt, x1, n_seq, T, &ws, NULL));

    double num = 0, den = 0;
    for (int64_t i = 0; i < rows * H; i++) {
        num += ((double)x1[i] - x0[i]) * ((double)x1[i] - x0[i]);
        den += (double)x0[i] * x0[i];
    }
    print_message("folded layer output, relative L2 change %.3g\n", sqrt(num / den));
    assert_true(sqrt(num / den) < 1e-5);
    assert_true(num > 0); /* the weights really changed */
    free(x0); free(x1); free(s_h); free(s_i);
    rope_table_free(&rt);
    fptq_forward_ws_free(&ws);
    fptq_layer_free(&lw);
    tokens_free(&tok);
    fptq_model_close(&m);
}

/* What the hooks see of a layer run whole and in micro-batches. finish()
 * of q/k/v halves v_proj (a change the later groups must see, as after
 * quantization) and asks for gate/up's input once more. */
typedef struct hook_log {
    fptq_layer_weights *lw;
    int64_t kv_elems;
    int observes[LGROUP_COUNT], finishes[LGROUP_COUNT], held[LGROUP_COUNT];
    int64_t next_r0[LGROUP_COUNT];     /* where the next micro-batch must start */
    int bad_order;
    double sum[LGROUP_COUNT], sq[LGROUP_COUNT]; /* of the input, over its last full pass */
} hook_log;

static fptq_status log_observe(void *ctx, fptq_linear_group g, const float *X, int64_t r0, int64_t rows, int64_t cols)
{
    hook_log *h = ctx;
    if (r0 != h->next_r0[g])
        h->bad_order = 1;
    if (r0 == 0)
        h->sum[g] = h->sq[g] = 0.0;
    h->next_r0[g] = r0 + rows;
    h->observes[g]++;
    for (int64_t i = 0; i < rows * cols; i++) {
        h->sum[g] += X[i];
        h->sq[g] += (double)X[i] * X[i];
    }
    return FPTQ_OK;
}

static fptq_status log_finish(void *ctx, fptq_linear_group g, float *X, int64_t rows, int64_t cols, int *again)
{
    hook_log *h = ctx;
    (void)cols;
    if (h->next_r0[g] != rows)
        h->bad_order = 1;                  /* not every row observed */
    h->next_r0[g] = 0;
    h->held[g] += X != NULL;
    if (g == LGROUP_QKV)
        for (int64_t i = 0; i < h->kv_elems; i++)
            h->lw->w[LIN_V][i] *= 0.5f;
    *again = g == LGROUP_GATE_UP && h->finishes[g] == 0;
    h->finishes[g]++;
    return FPTQ_OK;
}

/* A layer in micro-batches of 2 of 5 sequences (2, 2, 1) against the whole
 * batch, with hooks: each group's input observed in order and whole (the
 * again-pass too), finish once per pass, X handed only when held whole; the
 * inputs (their sum and sum of squares) and the layer's output the whole
 * batch's, the change finish made included. The same computations on the
 * same rows, in other GEMM shapes: 1e-6 relative. */
static void test_micro_batches(void **state)
{
    (void)state;
    fptq_model m;
    fptq_tokens tok;
    check_ok(fptq_model_open(MODEL, &m));
    check_ok(tokens_load(TOKENS, m.cfg.vocab_size, &tok));
    const llama_config *c = &m.cfg;
    const int64_t n_seq = 5, T = 32, rows = n_seq * T, H = c->hidden_size;
    rope_table rt;
    const rope_params rp = fptq_rope_params(c);
    check_ok(rope_table_init(&rp, T, &rt));
    float *x[2];
    hook_log log[2];
    for (int v = 0; v < 2; v++) {
        fptq_layer_weights lw;
        fptq_forward_ws ws;
        check_ok(fptq_layer_alloc(c, &lw));
        check_ok(fptq_layer_load(&m, 1, &lw));
        check_ok(fptq_forward_ws_alloc(be, c, v == 0 ? rows : 2 * T, &ws));
        x[v] = malloc((size_t)(rows * H) * sizeof(float));
        check_ok(fptq_embed(&m, tok.ids, rows, x[v]));
        memset(&log[v], 0, sizeof log[v]);
        log[v].lw = &lw;
        log[v].kv_elems = c->num_key_value_heads * c->head_dim * H;
        fptq_layer_hooks hooks = {.observe = log_observe, .finish = log_finish, .ctx = &log[v]};
        check_ok(fptq_layer_forward(be, c, &lw, &rt, x[v], n_seq, T, &ws, &hooks));
        fptq_forward_ws_free(&ws);
        fptq_layer_free(&lw);
    }
    for (int g = 0; g < LGROUP_COUNT; g++) {
        const int passes = g == LGROUP_GATE_UP ? 2 : 1;
        assert_int_equal(log[0].observes[g], passes);
        assert_int_equal(log[1].observes[g], 3 * passes);
        assert_int_equal(log[0].finishes[g], passes);
        assert_int_equal(log[1].finishes[g], passes);
        assert_int_equal(log[0].held[g], passes);
        assert_int_equal(log[1].held[g], 0);
        print_message("group %d input: sum %.6g vs %.6g, sum of squares %.6g vs %.6g\n", g, log[0].sum[g],
                      log[1].sum[g], log[0].sq[g], log[1].sq[g]);
        assert_true(fabs(log[1].sq[g] - log[0].sq[g]) <= 1e-6 * log[0].sq[g]);
        assert_true(fabs(log[1].sum[g] - log[0].sum[g]) <= 1e-6 * sqrt(log[0].sq[g] * (double)rows));
    }
    assert_false(log[0].bad_order);
    assert_false(log[1].bad_order);
    double num = 0, den = 0;
    for (int64_t i = 0; i < rows * H; i++) {
        num += ((double)x[1][i] - x[0][i]) * ((double)x[1][i] - x[0][i]);
        den += (double)x[0][i] * x[0][i];
    }
    print_message("layer output in micro-batches, relative L2 difference %.3g\n", sqrt(num / den));
    assert_true(sqrt(num / den) <= 1e-6);
    free(x[0]); free(x[1]);
    rope_table_free(&rt);
    tokens_free(&tok);
    fptq_model_close(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_match_llama2c),
        cmocka_unit_test(test_golden_perplexity),
        cmocka_unit_test(test_batching_does_not_change_result),
        cmocka_unit_test(test_bf16_sharded_close_to_fp32),
        cmocka_unit_test(test_eval_window_range_checked),
        cmocka_unit_test(test_folds_keep_layer_output),
        cmocka_unit_test(test_micro_batches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
