/*
 * Planning as pure functions: the S x G grid, stage layer ranges by an exact
 * min-max partition, the sample and row splits, and the per-rank memory and
 * FLOP models that `fptq plan` prints. No MPI, no CUDA, no weights.
 */
#include "sharding.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- the grid -------------------------------------------------------------- */

fptq_status shard_grid_make(int world, int stages, int n_nodes, int64_t n_layers, shard_grid *g)
{
    memset(g, 0, sizeof *g);
    if (world < 1)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "a world of %d ranks: expected at least one rank", world);
    if (n_layers < 1)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "a model of %lld decoder layers: expected at least one",
                         (long long)n_layers);
    /* The default is named in every message: a user who never typed --stages
     * must still learn which option to change. */
    const char *how = stages <= 0 ? " (the default, one stage per node)" : "";
    if (stages <= 0) {
        if (n_nodes < 1)
            return FPTQ_FAIL(FPTQ_ERR_ARG,
                             "--stages not given and the node count is %d: expected at least one node "
                             "(or give --stages)", n_nodes);
        stages = n_nodes;
    }
    if (stages > world)
        return FPTQ_FAIL(FPTQ_ERR_ARG,
                         "--stages %d%s: more stages than the %d ranks (each stage needs at least one rank)",
                         stages, how, world);
    if (world % stages != 0)
        return FPTQ_FAIL(FPTQ_ERR_ARG,
                         "--stages %d%s does not divide the %d ranks into equal stages (expected a divisor of %d)",
                         stages, how, world, world);
    if (stages > n_layers)
        return FPTQ_FAIL(FPTQ_ERR_ARG,
                         "--stages %d%s: more stages than the model's %lld decoder layers (each stage owns at "
                         "least one layer)", stages, how, (long long)n_layers);
    g->world = world;
    g->stages = stages;
    g->per_stage = world / stages;
    return FPTQ_OK;
}

void shard_rank_coords(const shard_grid *g, int rank, int *stage, int *member)
{
    if (g->per_stage < 1 || rank < 0) {
        *stage = *member = 0;
        return;
    }
    *stage = rank / g->per_stage;
    *member = rank % g->per_stage;
}

/* ---- splits ------------------------------------------------------------------ */

void shard_split_range(int64_t n, int parts, int i, int64_t *begin, int64_t *end)
{
    if (n < 0 || parts < 1 || i < 0 || i >= parts) {
        *begin = *end = 0;
        return;
    }
    const int64_t base = n / parts, extra = n % parts;
    *begin = (int64_t)i * base + (i < extra ? i : extra);
    *end = *begin + base + (i < extra ? 1 : 0);
}

void shard_split_rows(const int64_t *rows, int n_lin, int members, int member, int64_t *row_begin,
                      int64_t *row_end)
{
    int64_t total = 0;
    for (int i = 0; i < n_lin; i++)
        total += rows[i] > 0 ? rows[i] : 0;
    int64_t b, e;
    shard_split_range(total, members, member, &b, &e);
    /* Member's piece [b, e) of the rows laid end to end, clipped to each linear. */
    int64_t off = 0;
    for (int i = 0; i < n_lin; i++) {
        const int64_t n = rows[i] > 0 ? rows[i] : 0;
        int64_t lo = b - off, hi = e - off;
        lo = lo < 0 ? 0 : lo > n ? n : lo;
        hi = hi < 0 ? 0 : hi > n ? n : hi;
        if (hi <= lo)
            lo = hi = 0; /* one spelling of "empty" */
        row_begin[i] = lo;
        row_end[i] = hi;
        off += n;
    }
}

/* ---- layer shapes ------------------------------------------------------------ */

/* The linears of a layer grouped by shared input (and so shared Hessian):
 * q/k/v read the normed hidden state, o the attention output, gate/up the
 * normed hidden state, down the SwiGLU product. W is [rows, cols]. */
typedef struct {
    int n_lin;
    int64_t rows[3];
    int64_t cols;
} lin_group;

enum { N_GROUPS = 4 };

static void layer_groups(const llama_config *c, lin_group g[N_GROUPS])
{
    const int64_t H = c->hidden_size, I = c->intermediate_size;
    const int64_t q_dim = c->num_attention_heads * c->head_dim;
    const int64_t kv_dim = c->num_key_value_heads * c->head_dim;
    g[0] = (lin_group){3, {q_dim, kv_dim, kv_dim}, H};
    g[1] = (lin_group){1, {H, 0, 0}, q_dim};
    g[2] = (lin_group){2, {I, I, 0}, H};
    g[3] = (lin_group){1, {H, 0, 0}, I};
}

int64_t shard_layer_params(const llama_config *c)
{
    lin_group g[N_GROUPS];
    layer_groups(c, g);
    int64_t p = 0;
    for (int k = 0; k < N_GROUPS; k++)
        for (int i = 0; i < g[k].n_lin; i++)
            p += g[k].rows[i] * g[k].cols;
    const int64_t q_dim = c->num_attention_heads * c->head_dim;
    const int64_t kv_dim = c->num_key_value_heads * c->head_dim;
    if (c->attn_qkv_bias)
        p += q_dim + 2 * kv_dim;
    if (c->attn_o_bias)
        p += c->hidden_size;
    return p + 2 * c->hidden_size; /* input_layernorm, post_attention_layernorm */
}

static int64_t largest_linear_params(const llama_config *c)
{
    lin_group g[N_GROUPS];
    layer_groups(c, g);
    int64_t best = 0;
    for (int k = 0; k < N_GROUPS; k++)
        for (int i = 0; i < g[k].n_lin; i++)
            if (g[k].rows[i] * g[k].cols > best)
                best = g[k].rows[i] * g[k].cols;
    return best;
}

static int64_t largest_group_cols(const llama_config *c)
{
    lin_group g[N_GROUPS];
    layer_groups(c, g);
    int64_t best = 0;
    for (int k = 0; k < N_GROUPS; k++)
        best = g[k].cols > best ? g[k].cols : best;
    return best;
}

/* ---- stage partition ------------------------------------------------------------
 *
 * Exact. With n layers and S stages:
 *   1. M = the smallest possible largest stage cost (the stage that finishes
 *      last sets the job's time when stages run at once).
 *   2. Among partitions whose every stage costs <= M: the smallest sum of
 *      squared stage costs, i.e. the most even one (less idle time, less skew
 *      in what each node writes); then the smallest sum of squared layer
 *      counts, which decides between layers of zero cost.
 *   3. Remaining ties: the last stage as short as possible, then the one
 *      before it, and so on, so that equal costs split as shard_split_range
 *      does (the first stages take the extra layer).
 * Where the answer is known it is given in O(n): equal costs (every Llama
 * layer, so every plan fptq makes today; config.json allows up to
 * FPTQ_MAX_LAYERS = 65,536 layers) split as shard_split_range, which is what
 * the rules pick for them; one stage owns everything; n stages own a layer each.
 * Otherwise:
 *   - M by bisection on the bits of a double (at most 64 steps), each step a
 *     greedy O(n) test of whether stages of at most X cover the layers; the
 *     smallest X that passes is the largest stage cost of the best partition,
 *     bit for bit.
 *   - The end of stage s can only lie in a band: layers [0, i) must split into
 *     s stages of cost <= M and [i, n) into S - s of them. Both sets are
 *     intervals (a stage's cost grows with its length), found greedily in
 *     O(n log n). Step 2 is a dynamic program over (stage, end) within the
 *     bands: the time is the sum over band cells of the stage lengths that
 *     fit under M, which for near-equal costs is about the number of layers
 *     (the bands are narrow), and O(S n^2) only for very uneven costs.
 * Both keys of step 2 add up over stages, so comparing them in order is
 * compatible with the recursion. Sums of squares within SQ_TIE of each other
 * count as equal: the same stage costs added in another order may differ in
 * the last bit, and rounding must not override rule 3.
 * A stage's cost is always summed in the same order (from its last layer
 * down), so every comparison with M is exact in floating point; with costs
 * >= 0 a stage never costs less than a part of it in that order. */

#define SQ_TIE 1e-12

/* The cost of layers [j, i), summed from the last layer down. */
static double stage_cost(const double *c, int64_t j, int64_t i)
{
    double s = 0.0;
    for (int64_t k = i - 1; k >= j; k--)
        s += c[k];
    return s;
}

/* Whether the layers split into exactly S stages of cost <= X (fewer suffice:
 * a part of a stage costs no more than the stage). Greedy from the last layer,
 * each stage as long as fits; with first != NULL, first[k] (k = 0..S) is the
 * first layer from which k such stages can reach the end: [first[k], n - k]
 * are all the layers from which exactly k stages of cost <= X cover the rest. */
static int stages_fit(const double *c, int64_t n, int64_t S, double X, int64_t *first)
{
    int64_t l = n;
    if (first)
        first[0] = n;
    for (int64_t k = 1; k <= S; k++) {
        if (l > 0) {
            int64_t j = l;
            double acc = 0.0;
            while (j > 0 && acc + c[j - 1] <= X) {
                acc += c[j - 1];
                j--;
            }
            if (j == l)
                return 0; /* one layer costs more than X */
            l = j;
        }
        if (first)
            first[k] = l;
    }
    return l == 0;
}

static uint64_t double_bits(double x)
{
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static double bits_double(uint64_t b)
{
    double x;
    memcpy(&x, &b, sizeof x);
    return x;
}

fptq_status shard_plan_stages(const double *layer_cost, int64_t n_layers, int stages, int64_t *bounds)
{
    if (stages < 1)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "--stages %d: expected at least one stage", stages);
    if (n_layers < stages)
        return FPTQ_FAIL(FPTQ_ERR_ARG,
                         "--stages %d: more stages than the %lld decoder layers (each stage owns at least "
                         "one layer)", stages, (long long)n_layers);
    for (int64_t l = 0; l < n_layers; l++)
        if (!isfinite(layer_cost[l]) || layer_cost[l] < 0)
            return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "layer %lld has cost %g: expected a finite cost >= 0",
                             (long long)l, layer_cost[l]);

    /* The O(n) answers (see above); the general path agrees with them (test_sharding). */
    int equal = 1;
    for (int64_t l = 1; l < n_layers && equal; l++)
        equal = layer_cost[l] == layer_cost[0];
    if (equal || stages == 1 || stages == n_layers) {
        for (int s = 0; s < stages; s++) {
            int64_t e;
            shard_split_range(n_layers, stages, s, &bounds[s], &e);
        }
        bounds[stages] = n_layers;
        return FPTQ_OK;
    }
    return shard_plan_stages_general(layer_cost, n_layers, stages, bounds);
}

fptq_status shard_plan_stages_general(const double *c, int64_t n, int stages, int64_t *bounds)
{
    const int64_t S = stages;
    int64_t *lo = NULL, *hi = NULL, *first = NULL, *off = NULL, *from = NULL;
    double *sq = NULL, *sqn = NULL;
    fptq_status st;
    if (S < 1 || n < S)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "stage plan: %lld layers into %lld stages", (long long)n, (long long)S);

    /* 1. M: non-negative doubles order as their bits */
    uint64_t b_lo = 0, b_hi = double_bits(stage_cost(c, 0, n));
    while (b_lo < b_hi) {
        const uint64_t mid = b_lo + (b_hi - b_lo) / 2;
        if (stages_fit(c, n, S, bits_double(mid), NULL))
            b_hi = mid;
        else
            b_lo = mid + 1;
    }
    const double M = bits_double(b_lo);

    /* 2. the bands: stage s (1..S) ends at i in [lo[s], hi[s]] */
    FPTQ_TRY_GOTO(fptq_calloc((size_t)S + 1, sizeof *lo, "stage plan (band starts)", &lo), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)S + 1, sizeof *hi, "stage plan (band ends)", &hi), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)S + 1, sizeof *first, "stage plan (suffix reach)", &first), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)S + 2, sizeof *off, "stage plan (band offsets)", &off), st, done);
    if (!stages_fit(c, n, S, M, first)) {
        st = FPTQ_FAIL(FPTQ_ERR_INTERNAL, "stage plan: %lld layers do not fit %d stages of cost %g", (long long)n,
                       stages, M);
        goto done;
    }
    /* reach: the last layer s stages of cost <= M can cover from 0 is R_s,
     * R_s = the largest i with cost [R_{s-1}, i) <= M, by galloping then bisection */
    int64_t reach = 0;
    for (int64_t s = 0; s <= S; s++) {
        if (s > 0 && reach < n) {
            int64_t good = reach + 1, step = 1; /* one layer always fits (M >= every layer's cost) */
            int64_t bad = n + 1;
            while (good + step <= n) {
                if (stage_cost(c, reach, good + step) <= M) {
                    good += step;
                    step *= 2;
                } else {
                    bad = good + step;
                    break;
                }
            }
            while (bad - good > 1) {
                const int64_t mid = good + (bad - good) / 2;
                if (stage_cost(c, reach, mid) <= M)
                    good = mid;
                else
                    bad = mid;
            }
            reach = good;
        }
        const int64_t a = first[S - s] > s ? first[S - s] : s;
        const int64_t z = reach < n - (S - s) ? reach : n - (S - s);
        if (a > z) {
            st = FPTQ_FAIL(FPTQ_ERR_INTERNAL, "stage plan: stage %lld has no place to end", (long long)s);
            goto done;
        }
        lo[s] = a;
        hi[s] = z;
        off[s + 1] = off[s] + (z - a + 1);
    }
    const size_t cells = (size_t)off[S + 1];
    FPTQ_TRY_GOTO(fptq_calloc(cells, sizeof *sq, "stage plan (evenness table)", &sq), st, done);
    FPTQ_TRY_GOTO(fptq_calloc(cells, sizeof *sqn, "stage plan (layer count table)", &sqn), st, done);
    FPTQ_TRY_GOTO(fptq_calloc(cells, sizeof *from, "stage plan (choice table)", &from), st, done);
    for (size_t k = 0; k < cells; k++) {
        sq[k] = sqn[k] = INFINITY;
        from[k] = -1;
    }
    sq[0] = sqn[0] = 0.0; /* stage 0 "ends" at layer 0 */

    /* (sq, sqn)[s][i]: smallest (sum of squared stage costs, sum of squared
     * layer counts) with every stage <= M; from[s][i]: where the last of those
     * s stages starts. Scanning j downward and replacing only on a strict
     * improvement keeps the largest j, i.e. the shortest last stage (rule 3).
     * A j outside the previous band cannot lead to the end with every stage <= M. */
    for (int64_t s = 1; s <= S; s++)
        for (int64_t i = lo[s]; i <= hi[s]; i++) {
            double seg = 0.0, b = INFINITY, bn = INFINITY;
            int64_t arg = -1;
            for (int64_t j = i - 1; j >= lo[s - 1]; j--) {
                seg += c[j];
                if (seg > M)
                    break;
                if (j > hi[s - 1])
                    continue;
                const size_t pj = (size_t)(off[s - 1] + (j - lo[s - 1]));
                const double prev = sq[pj];
                if (prev == INFINITY)
                    continue;
                const double v = prev + seg * seg;
                const double vn = sqn[pj] + (double)(i - j) * (double)(i - j);
                const int tie = b < INFINITY && fabs(v - b) <= SQ_TIE * b;
                if (b == INFINITY || (!tie && v < b) || (tie && vn < bn)) {
                    b = v;
                    bn = vn;
                    arg = j;
                }
            }
            const size_t pi = (size_t)(off[s] + (i - lo[s]));
            sq[pi] = b;
            sqn[pi] = bn;
            from[pi] = arg;
        }

    int64_t i = n;
    bounds[S] = n;
    for (int64_t s = S; s >= 1; s--) {
        const int64_t j = i >= lo[s] && i <= hi[s] ? from[off[s] + (i - lo[s])] : -1;
        if (j < lo[s - 1] || j > hi[s - 1] || j >= i) {
            st = FPTQ_FAIL(FPTQ_ERR_INTERNAL, "stage plan: no partition of %lld layers into %d stages "
                           "within the optimal cost %g", (long long)n, stages, M);
            goto done;
        }
        bounds[s - 1] = j;
        i = j;
    }
    st = bounds[0] == 0 ? FPTQ_OK
                        : FPTQ_FAIL(FPTQ_ERR_INTERNAL, "stage plan: first stage starts at layer %lld",
                                    (long long)bounds[0]);
done:
    free(lo);
    free(hi);
    free(first);
    free(off);
    free(sq);
    free(sqn);
    free(from);
    return st;
}

/* ---- memory ----------------------------------------------------------------------
 *
 * Peak bytes on one rank while it works on one decoder layer (layers are
 * quantized one at a time, so a stage's layer count does not enter). With
 * H = hidden, I = intermediate, q = heads * head_dim, kv = kv_heads * head_dim,
 * P = shard_layer_params (7 linears with GQA k/v sizes, biases, 2 norms),
 * L = the largest linear's rows * cols, K = the largest input width of a
 * Hessian group (q/k/v: H, o: q, gate/up: H, down: I), n = samples on the
 * rank, T = seqlen, b = micro-batch, wb = weight_bytes:
 *
 *   weights     = 2 * P * wb              the layer in flight + the next prefetched
 *               + 2 * L * 4               fp32 W and Q of the linear being quantized
 *   hessians    = K^2 * 4                 the group's Hessian accumulator (fp32)
 *               + K^2 * 4                 the GPTQ inverse-Hessian workspace
 *   activations = 2 * n * T * H * 4      the rank's layer input and its working copy
 *   workspace   = b * T * (H + q + 2 kv + q + H + 2 I) * 4
 *                                         normed input, q, k, v, attention output,
 *                                         projection output, gate, up (fp32), the
 *                                         buffers of worker/forward.c for b samples
 *               + T^2 * 4                 one (sample, head) score matrix at a time
 *                                         (none when b = 0)
 *   total       = the sum
 *
 * Llama 3.1 405B (H 16384, I 53248, q 16384, kv 1024; P = 3,187,703,808,
 * L = 872,415,232, K = 53248) on 2 x 8 ranks, 128 x 2048 calibration
 * (n = 16), BF16 (wb = 2), b = 16:
 *   weights     12,750,815,232 + 6,979,321,856 = 19,730,137,088
 *   hessians    11,341,398,016 * 2             = 22,682,796,032
 *   activations 2 * 16 * 2048 * 16384 * 4      =  4,294,967,296
 *   workspace   16 * 2048 * 174080 * 4 + 2048^2 * 4 = 22,833,790,976
 *   total                                        69,541,691,392 (64.77 GiB)
 */

void shard_estimate_memory(const llama_config *c, int64_t samples_per_rank, int64_t seqlen,
                           int64_t micro_batch, int weight_bytes, shard_mem *m)
{
    const double n = samples_per_rank > 0 ? (double)samples_per_rank : 0.0;
    const double T = seqlen > 0 ? (double)seqlen : 0.0;
    const double b = micro_batch > 0 ? (double)micro_batch : 0.0;
    const double wb = weight_bytes > 0 ? (double)weight_bytes : 0.0;
    const double H = (double)c->hidden_size, I = (double)c->intermediate_size;
    const double q = (double)(c->num_attention_heads * c->head_dim);
    const double kv = (double)(c->num_key_value_heads * c->head_dim);
    const double P = (double)shard_layer_params(c), L = (double)largest_linear_params(c);
    const double K = (double)largest_group_cols(c);

    m->weights = 2.0 * P * wb + 2.0 * L * 4.0;
    m->hessians = 2.0 * K * K * 4.0;
    m->activations = 2.0 * n * T * H * 4.0;
    m->workspace = b > 0 ? b * T * (H + q + 2.0 * kv + q + H + 2.0 * I) * 4.0 + T * T * 4.0 : 0.0;
    m->total = m->weights + m->hessians + m->activations + m->workspace;
}

int64_t shard_fit_micro_batch(const llama_config *c, int64_t samples_per_rank, int64_t seqlen,
                              int weight_bytes, double mem_bytes)
{
    if (samples_per_rank < 1)
        return 0;
    shard_mem m;
    shard_estimate_memory(c, samples_per_rank, seqlen, 1, weight_bytes, &m);
    if (!(m.total <= mem_bytes))
        return 0;
    shard_estimate_memory(c, samples_per_rank, seqlen, samples_per_rank, weight_bytes, &m);
    if (m.total <= mem_bytes)
        return samples_per_rank;
    /* The estimate grows with b: bisect on it (lo fits, hi does not) rather
     * than solve for b, so the answer agrees with shard_estimate_memory to
     * the last byte. */
    int64_t lo = 1, hi = samples_per_rank;
    while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        shard_estimate_memory(c, samples_per_rank, seqlen, mid, weight_bytes, &m);
        if (m.total <= mem_bytes)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* ---- FLOPs ----------------------------------------------------------------------
 *
 * One layer on the busiest rank of a stage of G ranks, t = the rank's tokens,
 * T = the window length, P = shard_layer_params:
 *   forward = 2 passes (calibration, then the hand-off with quantized weights)
 *             * t * (2 P                       every weight: one multiply-add per token
 *                    + 2 * 2 * heads * head_dim * T)  Q K^T and P V over the full
 *                                              T x T window, as the CPU backend computes
 *                                              it (the causal half is not skipped)
 *   gptq    = sum over the 7 linears of
 *             4/3 cols^3                       damped Cholesky, its inverse and the
 *                                              upper factor; every rank repeats it for
 *                                              every linear (per group would be cheaper:
 *                                              q/k/v and gate/up share their Hessian)
 *           + 2 * rows_share * cols^2          the rank's rows (shard_split_rows over the
 *                                              group), the busiest member's share
 * Hessian accumulation (2 t cols^2 per group) and communication are left out. */

void shard_estimate_flops_seqlen(const llama_config *c, int64_t tokens_per_rank, int64_t seqlen, int members,
                                 shard_flops *f)
{
    const double t = tokens_per_rank > 0 ? (double)tokens_per_rank : 0.0;
    const double T = seqlen > 0 ? (double)seqlen : 0.0;
    if (members < 1)
        members = 1;
    const double P = (double)shard_layer_params(c);
    const double attn = 2.0 * 2.0 * (double)c->num_attention_heads * (double)c->head_dim * T;
    f->forward = 2.0 * t * (2.0 * P + attn);

    lin_group g[N_GROUPS];
    layer_groups(c, g);
    double redundant = 0.0;
    for (int k = 0; k < N_GROUPS; k++) {
        const double cols = (double)g[k].cols;
        redundant += (double)g[k].n_lin * 4.0 / 3.0 * cols * cols * cols;
    }
    double busiest = 0.0;
    for (int mem = 0; mem < members; mem++) {
        double share = 0.0;
        for (int k = 0; k < N_GROUPS; k++) {
            int64_t rb[3], re[3];
            shard_split_rows(g[k].rows, g[k].n_lin, members, mem, rb, re);
            const double cols = (double)g[k].cols;
            for (int i = 0; i < g[k].n_lin; i++)
                share += 2.0 * (double)(re[i] - rb[i]) * cols * cols;
        }
        busiest = share > busiest ? share : busiest;
    }
    f->gptq = redundant + busiest;
    f->total = f->forward + f->gptq;
}

void shard_estimate_flops(const llama_config *c, int64_t tokens_per_rank, int members, shard_flops *f)
{
    int64_t T = SHARD_DEFAULT_SEQLEN;
    if (c->max_position_embeddings > 0 && c->max_position_embeddings < T)
        T = c->max_position_embeddings;
    shard_estimate_flops_seqlen(c, tokens_per_rank, T, members, f);
}

double shard_layer_cost(const llama_config *c, int64_t tokens)
{
    shard_flops f;
    shard_estimate_flops(c, tokens, 1, &f);
    return f.total;
}
