/*
 * Unit tests for sharding/: range, sample and row splits, the grid, the exact
 * stage partition against brute force, the memory model against a hand sum,
 * and the published Llama 3.1 70B / 405B layouts that must (not) fit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sharding/sharding.h"

#ifndef FPTQ_TESTDATA
#error "FPTQ_TESTDATA must name the tests/data directory"
#endif

#define GIB 1073741824.0

static void check_msg(const char *needle, const char *file, int line)
{
    const char *msg = fptq_last_error();
    if (!strstr(msg, needle)) {
        print_error("error message \"%s\" does not contain \"%s\"\n", msg, needle);
        _fail(file, line);
    }
}
#define assert_msg_has(needle) check_msg((needle), __FILE__, __LINE__)

static void load(const char *name, llama_config *c)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", FPTQ_TESTDATA, name);
    fptq_clear_error();
    fptq_status st = llama_config_load(path, c);
    if (st != FPTQ_OK)
        print_error("%s: %s\n", path, fptq_last_error());
    assert_int_equal(st, FPTQ_OK);
}

/* ---- shard_split_range -------------------------------------------------------------- */

static void test_split_range_sums_and_sizes(void **state)
{
    (void)state;
    for (int64_t n = 0; n <= 40; n++)
        for (int parts = 1; parts <= 45; parts++) {
            int64_t prev_end = 0;
            for (int i = 0; i < parts; i++) {
                int64_t b, e;
                shard_split_range(n, parts, i, &b, &e);
                assert_int_equal(b, prev_end); /* contiguous, in order */
                const int64_t size = e - b, want = n / parts + (i < n % parts ? 1 : 0);
                assert_int_equal(size, want); /* sizes differ by at most one, extras first */
                prev_end = e;
            }
            assert_int_equal(prev_end, n);
        }
}

/* More parts than items: the first n parts get one item each, the rest are empty. */
static void test_split_range_more_parts_than_items(void **state)
{
    (void)state;
    int64_t b, e;
    shard_split_range(3, 8, 2, &b, &e);
    assert_int_equal(b, 2);
    assert_int_equal(e, 3);
    shard_split_range(3, 8, 3, &b, &e);
    assert_int_equal(b, e);
    shard_split_range(3, 8, 7, &b, &e);
    assert_int_equal(b, 3);
    assert_int_equal(e, 3);
}

static void test_split_range_bad_input_is_empty(void **state)
{
    (void)state;
    int64_t b = 7, e = 9;
    shard_split_range(10, 0, 0, &b, &e);
    assert_true(b == 0 && e == 0);
    shard_split_range(10, 4, 4, &b, &e);
    assert_true(b == 0 && e == 0);
    shard_split_range(10, 4, -1, &b, &e);
    assert_true(b == 0 && e == 0);
    shard_split_range(-5, 4, 0, &b, &e);
    assert_true(b == 0 && e == 0);
}

/* 405B shapes: a 53248 x 16384 row count laid end to end must not overflow. */
static void test_split_range_large(void **state)
{
    (void)state;
    const int64_t n = (int64_t)53248 * 16384 * 3;
    int64_t b, e;
    shard_split_range(n, 7, 6, &b, &e);
    assert_int_equal(e, n);
    assert_int_equal(e - b, n / 7);
}

/* ---- the grid ---------------------------------------------------------------------------- */

static void test_grid_make_and_coords(void **state)
{
    (void)state;
    shard_grid g;
    fptq_clear_error();
    assert_int_equal(shard_grid_make(16, 0, 2, 126, &g), FPTQ_OK); /* default: a stage per node */
    assert_int_equal(g.world, 16);
    assert_int_equal(g.stages, 2);
    assert_int_equal(g.per_stage, 8);
    for (int r = 0; r < 16; r++) {
        int s, m;
        shard_rank_coords(&g, r, &s, &m);
        assert_int_equal(s * g.per_stage + m, r);
        assert_int_equal(s, r / 8);
    }
    assert_int_equal(shard_grid_make(16, 4, 2, 126, &g), FPTQ_OK);
    assert_int_equal(g.per_stage, 4);
    assert_int_equal(shard_grid_make(1, 0, 1, 1, &g), FPTQ_OK);
    assert_int_equal(g.stages, 1);
    assert_int_equal(g.per_stage, 1);
}

static void test_grid_stages_not_dividing(void **state)
{
    (void)state;
    shard_grid g;
    fptq_clear_error();
    assert_int_equal(shard_grid_make(16, 3, 2, 126, &g), FPTQ_ERR_ARG);
    assert_msg_has("--stages 3 does not divide the 16 ranks");
}

static void test_grid_more_stages_than_ranks(void **state)
{
    (void)state;
    shard_grid g;
    fptq_clear_error();
    assert_int_equal(shard_grid_make(4, 8, 1, 126, &g), FPTQ_ERR_ARG);
    assert_msg_has("--stages 8: more stages than the 4 ranks");
}

static void test_grid_more_stages_than_layers(void **state)
{
    (void)state;
    shard_grid g;
    fptq_clear_error();
    assert_int_equal(shard_grid_make(8, 8, 1, 5, &g), FPTQ_ERR_ARG);
    assert_msg_has("more stages than the model's 5 decoder layers");
}

/* A default the user never typed is still named, with the option to change. */
static void test_grid_default_stages_named(void **state)
{
    (void)state;
    shard_grid g;
    fptq_clear_error();
    assert_int_equal(shard_grid_make(12, 0, 8, 126, &g), FPTQ_ERR_ARG);
    assert_msg_has("--stages 8 (the default, one stage per node) does not divide the 12 ranks");
    fptq_clear_error();
    assert_int_equal(shard_grid_make(0, 1, 1, 126, &g), FPTQ_ERR_ARG);
    assert_msg_has("a world of 0 ranks");
}

/* ---- shard_plan_stages ---------------------------------------------------------------- */

/* Brute force over every placement of the S - 1 cuts: the best (largest
 * cost, sum of squared costs, sum of squared counts), and among those the
 * one the documented rule 3 picks (the last stage shortest, then the one
 * before it...). Integer-valued costs keep every sum exact. */
typedef struct {
    double max, sq, sqn;
    int64_t bounds[16];
} brute_best;

static int brute_better(const double *key, const int64_t *bounds, const brute_best *b, int S)
{
    if (key[0] != b->max)
        return key[0] < b->max;
    if (key[1] != b->sq)
        return key[1] < b->sq;
    if (key[2] != b->sqn)
        return key[2] < b->sqn;
    for (int s = S - 1; s >= 1; s--)
        if (bounds[s] != b->bounds[s])
            return bounds[s] > b->bounds[s];
    return 0;
}

static void brute_rec(const double *cost, int64_t n, int S, int s, int64_t *bounds, brute_best *best)
{
    if (s == S) {
        bounds[S] = n;
        double key[3] = {0, 0, 0};
        for (int k = 0; k < S; k++) {
            double seg = 0;
            for (int64_t l = bounds[k]; l < bounds[k + 1]; l++)
                seg += cost[l];
            const double cnt = (double)(bounds[k + 1] - bounds[k]);
            key[0] = seg > key[0] ? seg : key[0];
            key[1] += seg * seg;
            key[2] += cnt * cnt;
        }
        if (brute_better(key, bounds, best, S)) {
            best->max = key[0];
            best->sq = key[1];
            best->sqn = key[2];
            memcpy(best->bounds, bounds, sizeof(int64_t) * (size_t)(S + 1));
        }
        return;
    }
    /* stage s starts after stage s - 1 and leaves a layer for each later stage */
    for (int64_t b = bounds[s - 1] + 1; b <= n - (S - s); b++) {
        bounds[s] = b;
        brute_rec(cost, n, S, s + 1, bounds, best);
    }
}

static void test_plan_stages_matches_brute_force(void **state)
{
    (void)state;
    uint32_t seed = 12345;
    for (int64_t n = 1; n <= 10; n++)
        for (int S = 1; S <= n; S++)
            for (int trial = 0; trial < 4; trial++) {
                double cost[16];
                for (int64_t l = 0; l < n; l++) {
                    seed = seed * 1664525u + 1013904223u;
                    /* trial 0: equal costs, 1: a few values (many ties), 2-3: spread, zeros allowed */
                    cost[l] = trial == 0 ? 5.0 : trial == 1 ? (double)(seed >> 30) : (double)((seed >> 24) % 20);
                }
                int64_t bounds[17], bb[17] = {0};
                brute_best best = {INFINITY, INFINITY, INFINITY, {0}};
                brute_rec(cost, n, S, 1, bb, &best);
                fptq_clear_error();
                assert_int_equal(shard_plan_stages(cost, n, S, bounds), FPTQ_OK);
                for (int s = 0; s <= S; s++)
                    if (bounds[s] != best.bounds[s]) {
                        print_error("n=%lld S=%d trial=%d: stage %d starts at %lld, brute force %lld\n",
                                    (long long)n, S, trial, s, (long long)bounds[s], (long long)best.bounds[s]);
                        fail();
                    }
            }
}

/* Equal costs split exactly as shard_split_range: sizes within one, extras first. */
static void test_plan_stages_equal_costs(void **state)
{
    (void)state;
    double cost[126];
    for (int l = 0; l < 126; l++)
        cost[l] = 6.9e14 + 1.0 / 3.0; /* a FLOP count with fractional bits: rounding must not decide */
    int64_t bounds[127];
    for (int S = 1; S <= 126; S++) {
        assert_int_equal(shard_plan_stages(cost, 126, S, bounds), FPTQ_OK);
        for (int s = 0; s < S; s++) {
            int64_t b, e;
            shard_split_range(126, S, s, &b, &e);
            assert_int_equal(bounds[s], b);
            assert_int_equal(bounds[s + 1], e);
        }
        /* the general path, which the shortcut skips, picks the same */
        int64_t general[127];
        assert_int_equal(shard_plan_stages_general(cost, 126, S, general), FPTQ_OK);
        for (int s = 0; s <= S; s++)
            assert_int_equal(general[s], bounds[s]);
    }
}

/* The largest model config.json allows (FPTQ_MAX_LAYERS): equal costs are
 * planned in O(n), so this finishes at once (it took O(S n^2) before). */
static void test_plan_stages_many_layers(void **state)
{
    (void)state;
    const int64_t n = FPTQ_MAX_LAYERS;
    double *cost = calloc((size_t)n, sizeof *cost);
    int64_t *bounds = calloc((size_t)n + 1, sizeof *bounds);
    assert_non_null(cost);
    assert_non_null(bounds);
    for (int64_t l = 0; l < n; l++)
        cost[l] = 6.9e14 + 1.0 / 3.0;
    const int stage_counts[] = {1, 2, 3, 64, 4096, 65535, 65536};
    for (size_t k = 0; k < sizeof stage_counts / sizeof stage_counts[0]; k++) {
        const int S = stage_counts[k];
        assert_int_equal(shard_plan_stages(cost, n, S, bounds), FPTQ_OK);
        for (int s = 0; s < S; s++) {
            int64_t b, e;
            shard_split_range(n, S, s, &b, &e);
            assert_int_equal(bounds[s], b);
            assert_int_equal(bounds[s + 1], e);
        }
    }
    free(cost);
    free(bounds);
}

/* Uneven costs over the most layers: the general path (bisection for the
 * largest stage cost, then the bands) finishes at once where the old dynamic
 * program over every (stage, layer) took O(S n^2); its plan is no worse than
 * the even split by layer count. */
static void test_plan_stages_many_uneven_layers(void **state)
{
    (void)state;
    const int64_t n = FPTQ_MAX_LAYERS;
    double *cost = calloc((size_t)n, sizeof *cost);
    int64_t *bounds = calloc((size_t)n + 1, sizeof *bounds);
    assert_non_null(cost);
    assert_non_null(bounds);
    uint32_t seed = 99;
    for (int64_t l = 0; l < n; l++) {
        seed = seed * 1664525u + 1013904223u;
        cost[l] = 1.0 + (double)((seed >> 8) % 100) / 1000.0;
    }
    const int stage_counts[] = {2, 7, 64, 4096};
    for (size_t k = 0; k < sizeof stage_counts / sizeof stage_counts[0]; k++) {
        const int S = stage_counts[k];
        assert_int_equal(shard_plan_stages(cost, n, S, bounds), FPTQ_OK);
        double worst = 0.0, worst_even = 0.0;
        assert_int_equal(bounds[0], 0);
        assert_int_equal(bounds[S], n);
        for (int s = 0; s < S; s++) {
            assert_true(bounds[s] < bounds[s + 1]);
            int64_t b, e;
            shard_split_range(n, S, s, &b, &e);
            double c1 = 0.0, c2 = 0.0;
            for (int64_t l = bounds[s + 1] - 1; l >= bounds[s]; l--)
                c1 += cost[l];
            for (int64_t l = e - 1; l >= b; l--)
                c2 += cost[l];
            worst = c1 > worst ? c1 : worst;
            worst_even = c2 > worst_even ? c2 : worst_even;
        }
        assert_true(worst <= worst_even);
    }
    free(cost);
    free(bounds);
}

static void test_plan_stages_one_heavy_layer(void **state)
{
    (void)state;
    const double cost[7] = {1, 1, 1, 10, 1, 1, 1};
    int64_t bounds[4];
    assert_int_equal(shard_plan_stages(cost, 7, 3, bounds), FPTQ_OK);
    const int64_t want[4] = {0, 3, 4, 7}; /* the heavy layer alone; the rest on either side */
    for (int s = 0; s <= 3; s++)
        assert_int_equal(bounds[s], want[s]);

    const double last[7] = {1, 1, 1, 1, 1, 1, 10};
    int64_t b2[3];
    assert_int_equal(shard_plan_stages(last, 7, 2, b2), FPTQ_OK);
    assert_int_equal(b2[1], 6);
}

/* Zero-cost layers are still spread evenly (the layer-count key). */
static void test_plan_stages_zero_costs(void **state)
{
    (void)state;
    const double cost[5] = {0, 0, 0, 0, 0};
    int64_t bounds[4];
    assert_int_equal(shard_plan_stages(cost, 5, 3, bounds), FPTQ_OK);
    assert_int_equal(bounds[1], 2);
    assert_int_equal(bounds[2], 4);
    assert_int_equal(bounds[3], 5);
}

static void test_plan_stages_errors(void **state)
{
    (void)state;
    const double cost[3] = {1, 1, 1};
    int64_t bounds[8];
    fptq_clear_error();
    assert_int_equal(shard_plan_stages(cost, 3, 4, bounds), FPTQ_ERR_ARG);
    assert_msg_has("--stages 4: more stages than the 3 decoder layers");
    fptq_clear_error();
    assert_int_equal(shard_plan_stages(cost, 3, 0, bounds), FPTQ_ERR_ARG);
    assert_msg_has("--stages 0");
    const double bad[3] = {1, -1, 1};
    fptq_clear_error();
    assert_int_equal(shard_plan_stages(bad, 3, 2, bounds), FPTQ_ERR_INTERNAL);
    assert_msg_has("layer 1 has cost -1");
    const double nan_cost[3] = {1, NAN, 1};
    fptq_clear_error();
    assert_int_equal(shard_plan_stages(nan_cost, 3, 2, bounds), FPTQ_ERR_INTERNAL);
    fptq_clear_error();
}

/* ---- shard_split_rows ------------------------------------------------------------------ */

static void test_split_rows_cover_once_contiguous(void **state)
{
    (void)state;
    const int64_t rows[3] = {64, 16, 16}; /* q, k, v of a GQA layer */
    const int64_t total = 96;
    for (int members = 1; members <= 100; members++) {
        int seen[96] = {0};
        for (int m = 0; m < members; m++) {
            int64_t rb[3], re[3];
            shard_split_rows(rows, 3, members, m, rb, re);
            /* the member's rows, laid end to end, are one interval: shard_split_range's piece */
            int64_t want_b, want_e, off = 0, lo = -1, hi = -1;
            shard_split_range(total, members, m, &want_b, &want_e);
            for (int i = 0; i < 3; i++) {
                assert_true(0 <= rb[i] && rb[i] <= re[i] && re[i] <= rows[i]);
                if (re[i] > rb[i]) {
                    if (lo < 0)
                        lo = off + rb[i];
                    else
                        assert_int_equal(off + rb[i], hi); /* continues where the last linear ended */
                    hi = off + re[i];
                } else {
                    assert_int_equal(rb[i], re[i]);
                }
                for (int64_t r = rb[i]; r < re[i]; r++)
                    seen[off + r]++;
                off += rows[i];
            }
            if (want_e > want_b) {
                assert_int_equal(lo, want_b);
                assert_int_equal(hi, want_e);
            } else {
                assert_int_equal(lo, -1); /* more members than rows: this one is idle */
            }
        }
        for (int r = 0; r < 96; r++)
            assert_int_equal(seen[r], 1);
    }
}

/* ---- memory ------------------------------------------------------------------------------ */

/* hidden 8, intermediate 24, 4 heads of 2 (q 8), 2 kv heads (kv 4). */
static const char *TINY =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\","
    " \"hidden_size\": 8, \"intermediate_size\": 24, \"num_hidden_layers\": 3,"
    " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 2, \"vocab_size\": 32,"
    " \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-05, \"hidden_act\": \"silu\"}";

static void test_layer_params_tiny(void **state)
{
    (void)state;
    llama_config c;
    assert_int_equal(llama_config_parse(TINY, "tiny", &c), FPTQ_OK);
    /* q 8x8 + k,v 2 x 4x8 + o 8x8 + gate, up, down 3 x 24x8 + 2 norms x 8 */
    assert_int_equal(shard_layer_params(&c), 64 + 64 + 64 + 576 + 16);
    c.attn_qkv_bias = c.attn_o_bias = 1; /* + q 8 + k, v 4 each + o 8 */
    assert_int_equal(shard_layer_params(&c), 784 + 16 + 8);
}

static void test_memory_tiny_hand_sum(void **state)
{
    (void)state;
    llama_config c;
    assert_int_equal(llama_config_parse(TINY, "tiny", &c), FPTQ_OK);
    shard_mem m;
    /* 3 samples of 5 tokens on the rank, micro-batch 2, BF16 */
    shard_estimate_memory(&c, 3, 5, 2, 2, &m);
    /* 2 layers x 784 params x 2 bytes + fp32 W and Q of gate (24 x 8) */
    assert_true(m.weights == 2.0 * 784 * 2 + 2.0 * 192 * 4);                 /* 4672 */
    /* accumulator + inverse workspace of the widest input (down: 24) */
    assert_true(m.hessians == 2.0 * 24 * 24 * 4);                            /* 4608 */
    assert_true(m.activations == 2.0 * 3 * 5 * 8 * 4);                      /* 960 */
    /* h 8 + q 8 + k, v 4 each + attn 8 + o 8 + gate, up 24 each = 88 floats a token */
    assert_true(m.workspace == 2.0 * 5 * 88 * 4 + 5.0 * 5 * 4);              /* 3620 */
    assert_true(m.total == 13860.0);
}

static void test_fit_micro_batch_tiny(void **state)
{
    (void)state;
    llama_config c;
    assert_int_equal(llama_config_parse(TINY, "tiny", &c), FPTQ_OK);
    shard_mem m1, m2, m3;
    shard_estimate_memory(&c, 3, 5, 1, 2, &m1);
    shard_estimate_memory(&c, 3, 5, 2, 2, &m2);
    shard_estimate_memory(&c, 3, 5, 3, 2, &m3);
    assert_int_equal(shard_fit_micro_batch(&c, 3, 5, 2, m2.total), 2);       /* exactly full */
    assert_int_equal(shard_fit_micro_batch(&c, 3, 5, 2, m2.total - 1), 1);
    assert_int_equal(shard_fit_micro_batch(&c, 3, 5, 2, m1.total - 1), 0);   /* not even one */
    assert_int_equal(shard_fit_micro_batch(&c, 3, 5, 2, 1e30), 3);           /* never above the samples */
    assert_int_equal(shard_fit_micro_batch(&c, 0, 5, 2, 1e30), 0);
}

static void test_flops_tiny_hand_sum(void **state)
{
    (void)state;
    llama_config c;
    assert_int_equal(llama_config_parse(TINY, "tiny", &c), FPTQ_OK);
    shard_flops f;
    /* 10 tokens on the rank, windows of 5, a stage of 2 ranks */
    shard_estimate_flops_seqlen(&c, 10, 5, 2, &f);
    /* 2 passes x 10 tokens x (2 x 784 + 2 x 2 x 4 heads x 2 x 5) */
    assert_true(f.forward == 2.0 * 10 * (2.0 * 784 + 160));
    /* 4/3 cols^3: q, k, v, gate, up, o at 8 cols, down at 24; + this rank's rows:
     * q/k/v 8 of 16 rows x 8^2, o 4 x 8^2, gate/up 24 of 48 x 8^2, down 4 x 24^2, x 2 */
    const double redundant = 6.0 * 4.0 / 3.0 * 512 + 4.0 / 3.0 * 13824;
    const double share = 2.0 * (8 * 64 + 4 * 64 + 24 * 64 + 4 * 576);
    assert_true(fabs(f.gptq - (redundant + share)) <= 1e-9 * f.gptq);
    assert_true(f.total == f.forward + f.gptq);
    /* the default window: 2048 capped by the context, 64 */
    shard_flops d, e;
    shard_estimate_flops(&c, 10, 2, &d);
    shard_estimate_flops_seqlen(&c, 10, 64, 2, &e);
    assert_true(d.total == e.total);
    assert_true(shard_layer_cost(&c, 10) > 0);
}

/* ---- the published models ------------------------------------------------------------------ */

static void test_configs_parse(void **state)
{
    (void)state;
    llama_config c;
    load("llama-3.1-70b-config.json", &c);
    assert_int_equal(c.num_hidden_layers, 80);
    assert_int_equal(c.hidden_size, 8192);
    assert_int_equal(c.num_key_value_heads, 8);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.rope_scaling.type, ROPE_SCALING_LLAMA3);
    load("llama-3.1-405b-config.json", &c);
    assert_int_equal(c.num_hidden_layers, 126);
    assert_int_equal(c.hidden_size, 16384);
    assert_int_equal(c.intermediate_size, 53248);
    assert_int_equal(c.num_attention_heads, 128);
    assert_int_equal(c.max_position_embeddings, 131072);
    /* 126 x 3.19e9 + embeddings and head 2 x 128256 x 16384 + final norm = 405.85e9 */
    const double total = 126.0 * (double)shard_layer_params(&c) + 2.0 * 128256 * 16384 + 16384;
    assert_true(total > 405e9 && total < 406e9);
}

/* The worked example of the memory comment in sharding.c, to the byte. */
static void test_405b_2x8_fits(void **state)
{
    (void)state;
    llama_config c;
    load("llama-3.1-405b-config.json", &c);
    shard_grid g;
    assert_int_equal(shard_grid_make(16, 0, 2, c.num_hidden_layers, &g), FPTQ_OK);
    int64_t b, e;
    shard_split_range(128, g.per_stage, 0, &b, &e);
    assert_int_equal(e - b, 16);
    const int64_t micro = shard_fit_micro_batch(&c, 16, 2048, 2, 80 * GIB);
    assert_int_equal(micro, 16);
    shard_mem m;
    shard_estimate_memory(&c, 16, 2048, micro, 2, &m);
    assert_true(m.weights == 19730137088.0);
    assert_true(m.hessians == 22682796032.0);
    assert_true(m.activations == 4294967296.0);
    assert_true(m.workspace == 22833790976.0);
    assert_true(m.total == 69541691392.0);
    assert_true(m.total <= 80 * GIB);

    double cost[126];
    for (int l = 0; l < 126; l++)
        cost[l] = shard_layer_cost(&c, 16 * 2048);
    int64_t bounds[3];
    assert_int_equal(shard_plan_stages(cost, 126, 2, bounds), FPTQ_OK);
    assert_int_equal(bounds[1], 63);
}

static void test_70b_1x8_fits(void **state)
{
    (void)state;
    llama_config c;
    load("llama-3.1-70b-config.json", &c);
    assert_int_equal(shard_fit_micro_batch(&c, 16, 2048, 2, 80 * GIB), 16);
}

/* One layer at a time: 405B on one 80 GiB GPU with 128 x 2048 calibration
 * fits by this model (72.8 GiB at a micro-batch of 6); 512 samples put 128
 * GiB of activations on the rank and cannot, and on 40 GiB GPUs even one
 * sample per rank cannot (weights and Hessians alone are 39.5 GiB). */
static void test_405b_impossible_layouts(void **state)
{
    (void)state;
    llama_config c;
    load("llama-3.1-405b-config.json", &c);
    assert_int_equal(shard_fit_micro_batch(&c, 128, 2048, 2, 80 * GIB), 6);
    assert_int_equal(shard_fit_micro_batch(&c, 512, 2048, 2, 80 * GIB), 0);
    assert_int_equal(shard_fit_micro_batch(&c, 1, 2048, 2, 40 * GIB), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_range_sums_and_sizes),
        cmocka_unit_test(test_split_range_more_parts_than_items),
        cmocka_unit_test(test_split_range_bad_input_is_empty),
        cmocka_unit_test(test_split_range_large),
        cmocka_unit_test(test_grid_make_and_coords),
        cmocka_unit_test(test_grid_stages_not_dividing),
        cmocka_unit_test(test_grid_more_stages_than_ranks),
        cmocka_unit_test(test_grid_more_stages_than_layers),
        cmocka_unit_test(test_grid_default_stages_named),
        cmocka_unit_test(test_plan_stages_matches_brute_force),
        cmocka_unit_test(test_plan_stages_equal_costs),
        cmocka_unit_test(test_plan_stages_many_layers),
        cmocka_unit_test(test_plan_stages_many_uneven_layers),
        cmocka_unit_test(test_plan_stages_one_heavy_layer),
        cmocka_unit_test(test_plan_stages_zero_costs),
        cmocka_unit_test(test_plan_stages_errors),
        cmocka_unit_test(test_split_rows_cover_once_contiguous),
        cmocka_unit_test(test_layer_params_tiny),
        cmocka_unit_test(test_memory_tiny_hand_sum),
        cmocka_unit_test(test_fit_micro_batch_tiny),
        cmocka_unit_test(test_flops_tiny_hand_sum),
        cmocka_unit_test(test_configs_parse),
        cmocka_unit_test(test_405b_2x8_fits),
        cmocka_unit_test(test_70b_1x8_fits),
        cmocka_unit_test(test_405b_impossible_layouts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
