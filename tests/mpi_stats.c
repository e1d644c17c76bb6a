/*
 * Statistics are exact across sample splits: under mpirun -np P, the
 * Hessian sums of layer 1 of stories260K gathered over P ranks (each with
 * its share of 128 x 256 calibration tokens) are compared with a double-
 * precision sum over all tokens on rank 0. Any fp32 summation order is
 * within gamma_n = n eps / (1 - n eps) of the exact sum, relative to the
 * sum of absolute values (Higham, Accuracy and Stability, 3.1); token
 * counts and maxima must agree exactly.
 * usage: mpirun -np P mpi_stats EXAMPLES_DIR
 */
#include "worker/forward.h"
#include "worker/quantize.h"
#include "sharding/sharding.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(expr)                                                                               \
    do {                                                                                          \
        fptq_status st_ = (expr);                                                                 \
        if (st_ != FPTQ_OK) {                                                                     \
            fprintf(stderr, "rank %d: %s: %s\n", w.rank, #expr, fptq_last_error());              \
            fptq_world_abort(&w, 1);                                                              \
        }                                                                                         \
    } while (0)

int main(int argc, char **argv)
{
    fptq_world w;
    if (fptq_world_init(&argc, &argv, &w) != FPTQ_OK || argc < 2) {
        fprintf(stderr, "usage: mpirun -np P mpi_stats EXAMPLES_DIR\n");
        return 2;
    }
    char model_dir[4096], tok_path[4096];
    snprintf(model_dir, sizeof model_dir, "%s/stories260K", argv[1]);
    snprintf(tok_path, sizeof tok_path, "%s/tinystories.tok512.npy", argv[1]);
    const fptq_backend *be = &fptq_backend_cpu;
    fptq_model m;
    fptq_tokens tok;
    int32_t *ids;
    const int64_t N = 128, T = 256, layer = 1;
    CHECK(fptq_model_open(model_dir, &m));
    CHECK(tokens_load(tok_path, m.cfg.vocab_size, &tok));
    CHECK(fptq_calib_samples(&tok, N, T, tok_path, &ids));
    const int64_t H = m.cfg.hidden_size;

    /* layer 1's input on this rank's samples: embed, then layer 0 */
    int64_t s0, s1;
    shard_split_range(N, w.size, w.rank, &s0, &s1);
    const int64_t n_seq = s1 - s0, rows = n_seq * T;
    float *x = calloc((size_t)(rows * H), sizeof(float));
    fptq_layer_weights lw;
    fptq_forward_ws ws;
    rope_table rt;
    rope_params rp = fptq_rope_params(&m.cfg);
    CHECK(fptq_layer_alloc(&m.cfg, &lw));
    CHECK(fptq_forward_ws_alloc(be, &m.cfg, rows, &ws));
    CHECK(rope_table_init(&rp, T, &rt));
    CHECK(fptq_embed(&m, ids + s0 * T, rows, x));
    CHECK(fptq_layer_load(&m, 0, &lw));
    CHECK(fptq_layer_forward(be, &m.cfg, &lw, &rt, x, n_seq, T, &ws, NULL));

    linear_stats stats[LGROUP_COUNT];
    for (int g = 0; g < LGROUP_COUNT; g++) {
        fptq_linear_id first;
        int count;
        int64_t out, in;
        fptq_linear_group_members((fptq_linear_group)g, &first, &count);
        fptq_linear_shape(&m.cfg, first, &out, &in);
        CHECK(linear_stats_init(in, &stats[g]));
    }
    CHECK(fptq_layer_stats(be, &m, &w.stage_coll, layer, x, n_seq, T, stats));

    /* rank 0: the same statistics over all tokens, in double, as the reference */
    int failures = 0;
    if (w.rank == 0) {
        float *xa = calloc((size_t)(N * T * H), sizeof(float));
        fptq_forward_ws wsa;
        CHECK(fptq_forward_ws_alloc(be, &m.cfg, N * T, &wsa));
        CHECK(fptq_embed(&m, ids, N * T, xa));
        CHECK(fptq_layer_load(&m, 0, &lw));
        CHECK(fptq_layer_forward(be, &m.cfg, &lw, &rt, xa, N, T, &wsa, NULL));
        /* only the q/k/v input (the normed layer input) is recomputed here in double */
        CHECK(fptq_layer_load(&m, layer, &lw));
        const int64_t n = N * T;
        double *exact = calloc((size_t)(H * H), sizeof(double)), *absum = calloc((size_t)(H * H), sizeof(double));
        float *h = malloc((size_t)H * sizeof(float));
        for (int64_t t = 0; t < n; t++) {
            CHECK(be->rmsnorm(xa + t * H, 1, H, lw.attn_norm, (float)m.cfg.rms_norm_eps, h));
            for (int64_t i = 0; i < H; i++)
                for (int64_t j = i; j < H; j++) {
                    exact[i * H + j] += (double)h[i] * h[j];
                    absum[i * H + j] += fabs((double)h[i] * h[j]);
                }
        }
        const double gamma = (double)n * FLT_EPSILON / 2 / (1.0 - (double)n * FLT_EPSILON / 2);
        double worst = 0.0, worst_rel = 0.0;
        for (int64_t i = 0; i < H; i++)
            for (int64_t j = i; j < H; j++) {
                const double d = fabs((double)stats[LGROUP_QKV].xtx[i * H + j] - exact[i * H + j]);
                worst = fmax(worst, d / absum[i * H + j]);
                worst_rel = fmax(worst_rel, d / fmax(fabs(exact[i * H + j]), 1e-30));
                if (d > gamma * absum[i * H + j])
                    failures++;
            }
        if (stats[LGROUP_QKV].tokens != n)
            failures++;
        for (int g = 0; g < LGROUP_COUNT; g++)
            if (stats[g].tokens != n)
                failures++;
        printf("ranks %d: q/k/v input X^T X over %lld tokens: max |error| / sum|terms| = %.3g (bound gamma_n = %.3g), "
               "max relative error %.3g, tokens %lld, %s\n",
               w.size, (long long)n, worst, gamma, worst_rel, (long long)stats[LGROUP_QKV].tokens,
               failures ? "FAIL" : "ok");
        free(exact);
        free(absum);
        free(h);
        free(xa);
        fptq_forward_ws_free(&wsa);
    }
    for (int g = 0; g < LGROUP_COUNT; g++)
        linear_stats_free(&stats[g]);
    free(x);
    free(ids);
    rope_table_free(&rt);
    fptq_forward_ws_free(&ws);
    fptq_layer_free(&lw);
    tokens_free(&tok);
    fptq_model_close(&m);
    fptq_world_finalize(&w);
    return failures ? 1 : 0;
}
