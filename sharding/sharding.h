/*
 * Planning, as pure functions (no MPI, no CUDA, no weights): the S x G grid
 * of ranks, contiguous layer ranges per stage balanced by cost, the split
 * of calibration samples and of each layer's quantization rows over a
 * stage's ranks, and per-rank memory and time estimates.
 */
#ifndef FPTQ_SHARDING_H
#define FPTQ_SHARDING_H

#include "../io/config.h"

/* P ranks as S stages x G ranks; ranks of a stage are consecutive
 * (rank = stage * G + member), so with G = ranks per node a stage is a node. */
typedef struct shard_grid {
    int world, stages, per_stage;
} shard_grid;

/* stages <= 0 means the default: n_nodes (one stage per node). Errors (S not
 * dividing P, S > layers...) name the option --stages and the numbers. */
fptq_status shard_grid_make(int world, int stages, int n_nodes, int64_t n_layers, shard_grid *g);
void shard_rank_coords(const shard_grid *g, int rank, int *stage, int *member);

/* [begin, end) of part i of n items split into `parts` contiguous parts whose
 * sizes differ by at most one (the first n % parts parts get the extra one).
 * More parts than items is allowed: the last parts are empty (begin == end),
 * e.g. ranks left without calibration samples. n < 0, parts < 1 or i outside
 * [0, parts) give the empty range [0, 0). */
void shard_split_range(int64_t n, int parts, int i, int64_t *begin, int64_t *end);

/* The calibration window length the planner assumes where a function takes
 * no seqlen (fptq's default --calib-seqlen), capped by the model's context. */
#define SHARD_DEFAULT_SEQLEN 2048

/* Parameters of one decoder layer: the seven linears (q/k/v with the GQA
 * k/v sizes, o, gate, up, down), their biases where the config has them, and
 * the two RMSNorm weights. */
int64_t shard_layer_params(const llama_config *c);

/* Relative cost of quantizing one decoder layer (GPTQ FLOPs plus forward
 * FLOPs for `tokens` calibration tokens); every Llama layer costs the same,
 * but the function keeps the planner honest for mixed layers later. */
double shard_layer_cost(const llama_config *c, int64_t tokens);

/* Contiguous layer ranges for `stages` stages minimising the largest stage
 * cost: stage s owns layers [bounds[s], bounds[s + 1]); bounds has stages + 1
 * entries, bounds[0] = 0, bounds[stages] = n_layers, every stage non-empty.
 * Exact; among partitions with the same largest cost the result is fixed by
 * the tie rules documented in sharding.c (equal costs: the first stages get
 * the extra layer, as in shard_split_range). */
fptq_status shard_plan_stages(const double *layer_cost, int64_t n_layers, int stages, int64_t *bounds);
/* The same without the O(n) shortcuts (equal costs, one stage, a layer per
 * stage), for the tests; costs are not checked. */
fptq_status shard_plan_stages_general(const double *layer_cost, int64_t n_layers, int stages, int64_t *bounds);

/* Output rows of a group of linears that share an input (q/k/v: rows
 * {q_dim, kv_dim, kv_dim}) split over `members` ranks: the rows of all
 * linears are laid end to end and cut into near-equal contiguous pieces;
 * member m gets, for each linear i, rows [row_begin[i], row_end[i])
 * (empty when begin == end). */
void shard_split_rows(const int64_t *rows, int n_lin, int members, int member, int64_t *row_begin,
                      int64_t *row_end);

/* Peak device memory of one rank, in bytes, by what holds it. The model is
 * documented in sharding.c and README.md (fptq plan): weights of the layer in flight plus the
 * next one prefetched (weight_bytes each, 2 for BF16) and fp32 working copies
 * of the largest linear (W and Q); one group's Hessian accumulator and the
 * GPTQ inverse-Hessian workspace (fp32, cols^2 each, largest group); the
 * rank's calibration activations (layer input and a working copy, fp32);
 * the forward workspace for a micro-batch of samples; the attention scores. */
typedef struct shard_mem {
    double weights, hessians, activations, workspace, total;
} shard_mem;

void shard_estimate_memory(const llama_config *c, int64_t samples_per_rank, int64_t seqlen,
                           int64_t micro_batch, int weight_bytes, shard_mem *m);

/* The largest micro-batch (<= samples_per_rank, >= 1) whose estimate fits in
 * mem_bytes; 0 when even a micro-batch of one sample does not fit. */
int64_t shard_fit_micro_batch(const llama_config *c, int64_t samples_per_rank, int64_t seqlen,
                              int weight_bytes, double mem_bytes);

/* FLOPs of one layer on the busiest rank of a stage of G ranks: forward
 * passes over the rank's tokens (calibration pass + hand-off pass) and the
 * rank's share of GPTQ (its rows) plus the inverse-Hessian work, which every
 * rank repeats for every linear. Attention scores are counted for windows of
 * SHARD_DEFAULT_SEQLEN tokens (capped by the context); the _seqlen variant
 * takes the window length. The formulas are in sharding.c. */
typedef struct shard_flops {
    double forward, gptq, total;
} shard_flops;
void shard_estimate_flops(const llama_config *c, int64_t tokens_per_rank, int members, shard_flops *f);
void shard_estimate_flops_seqlen(const llama_config *c, int64_t tokens_per_rank, int64_t seqlen, int members,
                                 shard_flops *f);

#endif
