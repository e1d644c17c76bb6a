/*
 * `fptq plan`: from config.json alone (no weights), the S x G grid, each
 * stage's layers, the calibration split, every rank's peak GPU memory by what
 * holds it, the micro-batch that fits, and a FLOP-based time estimate.
 */
#define _GNU_SOURCE /* getopt_long */
#include "cli.h"

#include "../sharding/sharding.h"
#include "../worker/quantize.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define GIB 1073741824.0

static void plan_usage(FILE *f)
{
    fprintf(f,
            "usage: fptq plan --config config.json --nodes N --gpus-per-node G [options]\n"
            "\n"
            "  --config FILE        the model's config.json (no weights are read)\n"
            "  --nodes N            nodes in the job\n"
            "  --gpus-per-node G    GPUs (ranks) per node; the world is N x G ranks\n"
            "  --stages S           pipeline stages (default N, one per node); S must divide N x G\n"
            "  --gpu-mem SIZE       memory of one GPU (default 80GiB): 80GiB, 80GB, 80G, 81920MiB or\n"
            "                       bytes; GiB/MiB/KiB/TiB and bare G/M/K/T are powers of 2, GB/MB/KB/TB\n"
            "                       powers of 10\n"
            "  --calib-samples N    calibration samples (default 128), split over a stage's ranks\n"
            "  --calib-seqlen T     tokens per sample (default 2048, capped by the model's context)\n"
            "  --weight-bytes B     bytes per weight of the input model: 2 for BF16/FP16 (default),\n"
            "                       4 for FP32, 1 for FP8\n"
            "  --gpu-tflops R       sustained TFLOP/s of one GPU assumed by the time estimate (default 400)\n"
            "  --json               print one JSON object instead of the tables\n"
            "\n"
            "Exit status: 0 when every rank fits in --gpu-mem, 1 when the layout does not fit\n"
            "(the message says which rank, by how much and what to change), 2 on a bad option.\n");
}

typedef struct plan_args {
    const char *config;
    int64_t nodes, gpus_per_node, stages, samples, seqlen, weight_bytes;
    double gpu_mem;            /* bytes */
    const char *gpu_mem_text;  /* as given */
    const char *gpu_mem_unit;  /* "GiB = 2^30 bytes", ... */
    double tflops;
    int json;
} plan_args;

/* ---- --gpu-mem --------------------------------------------------------------------- */

typedef struct {
    const char *suffix;
    double bytes;
    const char *note;
} mem_unit;

/* Bare K/M/G/T are binary, as Slurm's --mem and nvidia-smi's MiB read them. */
static const mem_unit MEM_UNITS[] = {
    {"", 1.0, "bytes"},
    {"B", 1.0, "bytes"},
    {"KiB", 1024.0, "KiB = 2^10 bytes"},
    {"K", 1024.0, "K = KiB = 2^10 bytes"},
    {"KB", 1e3, "KB = 10^3 bytes"},
    {"MiB", 1048576.0, "MiB = 2^20 bytes"},
    {"M", 1048576.0, "M = MiB = 2^20 bytes"},
    {"MB", 1e6, "MB = 10^6 bytes"},
    {"GiB", GIB, "GiB = 2^30 bytes"},
    {"G", GIB, "G = GiB = 2^30 bytes"},
    {"GB", 1e9, "GB = 10^9 bytes"},
    {"TiB", 1099511627776.0, "TiB = 2^40 bytes"},
    {"T", 1099511627776.0, "T = TiB = 2^40 bytes"},
    {"TB", 1e12, "TB = 10^12 bytes"},
};

static fptq_status parse_mem_size(const char *opt, const char *val, double *bytes, const char **note)
{
    /* The number by hand: strtod would also take "inf", "0x50" and "1e3". */
    const char *p = val;
    int digits = 0, dots = 0;
    while (isdigit((unsigned char)*p) || *p == '.') {
        digits += isdigit((unsigned char)*p) != 0;
        dots += *p == '.';
        p++;
    }
    double num = 0.0;
    const mem_unit *unit = NULL;
    if (digits > 0 && dots <= 1 && (size_t)(p - val) < 32) {
        char buf[32];
        memcpy(buf, val, (size_t)(p - val));
        buf[p - val] = '\0';
        num = strtod(buf, NULL);
        for (size_t i = 0; i < sizeof MEM_UNITS / sizeof MEM_UNITS[0]; i++)
            if (strcasecmp(p, MEM_UNITS[i].suffix) == 0) { /* "80gb" is 80GB; the 'i' still tells GiB apart */
                unit = &MEM_UNITS[i];
                break;
            }
    }
    if (!unit || !(num * unit->bytes >= 1.0) || !isfinite(num * unit->bytes))
        return FPTQ_FAIL(FPTQ_ERR_ARG,
                         "option %s: expected a memory size such as 80GiB, 80GB, 80G, 81920MiB or a byte "
                         "count (GiB = 2^30 bytes, GB = 10^9; bare K/M/G/T are binary), got '%s'",
                         opt, val);
    *bytes = floor(num * unit->bytes);
    *note = unit->note;
    return FPTQ_OK;
}

static fptq_status parse_args(int argc, char **argv, plan_args *a, int *help)
{
    enum { O_CONFIG = 1000, O_NODES, O_GPN, O_STAGES, O_MEM, O_SAMPLES, O_SEQLEN, O_WBYTES, O_TFLOPS, O_JSON };
    static const struct option opts[] = {
        {"config", required_argument, 0, O_CONFIG},
        {"nodes", required_argument, 0, O_NODES},
        {"gpus-per-node", required_argument, 0, O_GPN},
        {"stages", required_argument, 0, O_STAGES},
        {"gpu-mem", required_argument, 0, O_MEM},
        {"calib-samples", required_argument, 0, O_SAMPLES},
        {"calib-seqlen", required_argument, 0, O_SEQLEN},
        {"weight-bytes", required_argument, 0, O_WBYTES},
        {"gpu-tflops", required_argument, 0, O_TFLOPS},
        {"json", no_argument, 0, O_JSON},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    *a = (plan_args){.samples = 128, .seqlen = 2048, .weight_bytes = 2, .tflops = 400.0,
                     .gpu_mem_text = "80GiB", .gpu_mem = 80.0 * GIB, .gpu_mem_unit = "GiB = 2^30 bytes"};
    *help = 0;
    opterr = 0;
    optind = 1;
    int c;
    float tf;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_CONFIG: a->config = optarg; break;
        case O_NODES: FPTQ_TRY(cli_parse_i64("--nodes", optarg, 1, &a->nodes)); break;
        case O_GPN: FPTQ_TRY(cli_parse_i64("--gpus-per-node", optarg, 1, &a->gpus_per_node)); break;
        case O_STAGES: FPTQ_TRY(cli_parse_i64("--stages", optarg, 1, &a->stages)); break;
        case O_SAMPLES: FPTQ_TRY(cli_parse_i64("--calib-samples", optarg, 1, &a->samples)); break;
        case O_SEQLEN: FPTQ_TRY(cli_parse_i64("--calib-seqlen", optarg, 1, &a->seqlen)); break;
        case O_MEM:
            FPTQ_TRY(parse_mem_size("--gpu-mem", optarg, &a->gpu_mem, &a->gpu_mem_unit));
            a->gpu_mem_text = optarg;
            break;
        case O_WBYTES:
            FPTQ_TRY(cli_parse_i64("--weight-bytes", optarg, 1, &a->weight_bytes));
            if (a->weight_bytes != 1 && a->weight_bytes != 2 && a->weight_bytes != 4)
                return FPTQ_FAIL(FPTQ_ERR_ARG,
                                 "option --weight-bytes: expected 1 (FP8), 2 (BF16/FP16) or 4 (FP32), got '%s'",
                                 optarg);
            break;
        case O_TFLOPS:
            FPTQ_TRY(cli_parse_float("--gpu-tflops", optarg, 1e-3, 1e6, &tf));
            a->tflops = tf;
            break;
        case O_JSON: a->json = 1; break;
        case 'h': *help = 1; return FPTQ_OK;
        default:
            return FPTQ_FAIL(FPTQ_ERR_ARG, "fptq plan: unknown option or missing value '%s' (see fptq plan --help)",
                             argv[optind - 1]);
        }
    }
    if (optind < argc)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "fptq plan: unexpected argument '%s'", argv[optind]);
    if (!a->config)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "fptq plan: --config config.json is required");
    if (!a->nodes)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "fptq plan: --nodes N is required");
    if (!a->gpus_per_node)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "fptq plan: --gpus-per-node G is required");
    /* ranks are MPI ints; a stage's row split walks every member */
    if (a->nodes > INT_MAX / a->gpus_per_node || a->nodes * a->gpus_per_node > (1 << 20))
        return FPTQ_FAIL(FPTQ_ERR_ARG, "options --nodes %lld x --gpus-per-node %lld: expected at most %d ranks",
                         (long long)a->nodes, (long long)a->gpus_per_node, 1 << 20);
    if (a->stages > INT_MAX)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "option --stages: expected at most %d, got %lld", INT_MAX,
                         (long long)a->stages);
    return FPTQ_OK;
}

/* ---- the plan ------------------------------------------------------------------------- */

typedef struct plan {
    llama_config c;
    shard_grid g;
    int64_t seqlen, n_layers;
    int seqlen_capped;
    int64_t spr_max, spr_min, ranks_with_max; /* samples per rank, and how many ranks of a stage get spr_max */
    int64_t *bounds;                          /* stages + 1 */
    int64_t micro;                            /* the micro-batch the plan picks; 0: does not fit */
    shard_mem mem;                            /* the busiest rank, at micro (1 when nothing fits) */
    shard_flops fl;
    double t_layer, t_forward, t_gptq, job_quantized, job_stage;
    int fits;
    /* when it does not fit */
    double over, need_one;   /* bytes over --gpu-mem; peak with one sample per rank */
    int64_t max_spr;         /* most samples per rank that fit (0: none) */
    int64_t min_per_stage;   /* ranks per stage the samples need */
    int64_t fewer_stages;    /* a --stages with enough ranks per stage on these GPUs; 0: none */
} plan;

static fptq_status plan_build(const plan_args *a, plan *p)
{
    memset(p, 0, sizeof *p);
    FPTQ_TRY(llama_config_load(a->config, &p->c));
    const llama_config *c = &p->c;
    p->n_layers = c->num_hidden_layers;
    p->seqlen = a->seqlen;
    if (p->seqlen > c->max_position_embeddings) {
        p->seqlen = c->max_position_embeddings;
        p->seqlen_capped = 1;
    }
    FPTQ_TRY(shard_grid_make((int)(a->nodes * a->gpus_per_node), (int)a->stages, (int)a->nodes, p->n_layers, &p->g));
    const int G = p->g.per_stage, S = p->g.stages;

    int64_t b, e;
    shard_split_range(a->samples, G, 0, &b, &e);
    p->spr_max = e - b;
    shard_split_range(a->samples, G, G - 1, &b, &e);
    p->spr_min = e - b;
    p->ranks_with_max = a->samples % G ? a->samples % G : G;

    /* Every rank of a stage works on the same layer at a time, so one stage's
     * cost is its layers' costs at the busiest rank's tokens. */
    const int64_t tokens = p->spr_max * p->seqlen;
    double *cost = NULL;
    FPTQ_TRY(fptq_calloc((size_t)S + 1, sizeof *p->bounds, "stage bounds", &p->bounds)); /* freed by the caller */
    FPTQ_TRY(fptq_calloc((size_t)p->n_layers, sizeof *cost, "layer costs", &cost));
    for (int64_t l = 0; l < p->n_layers; l++)
        cost[l] = shard_layer_cost(c, tokens);
    fptq_status st = shard_plan_stages(cost, p->n_layers, S, p->bounds);
    free(cost);
    FPTQ_TRY(st);

    const int wb = (int)a->weight_bytes;
    p->micro = shard_fit_micro_batch(c, p->spr_max, p->seqlen, wb, a->gpu_mem);
    p->fits = p->micro > 0;
    shard_estimate_memory(c, p->spr_max, p->seqlen, p->fits ? p->micro : 1, wb, &p->mem);

    const double rate = a->tflops * 1e12;
    shard_estimate_flops_seqlen(c, tokens, p->seqlen, G, &p->fl);
    p->t_layer = p->fl.total / rate;
    p->t_forward = p->fl.forward / rate;
    p->t_gptq = p->fl.gptq / rate;
    /* quantized: a layer waits for every layer before it, on whichever stage;
     * stage/fp: stages at once, each after one full-precision forward pass
     * (half the two-pass forward) through the layers before it. */
    p->job_quantized = (double)p->n_layers * p->t_layer;
    for (int s = 0; s < S; s++) {
        const double t = (double)p->bounds[s] * p->t_forward / 2.0 +
                         (double)(p->bounds[s + 1] - p->bounds[s]) * p->t_layer;
        p->job_stage = t > p->job_stage ? t : p->job_stage;
    }

    if (!p->fits) {
        p->over = p->mem.total - a->gpu_mem;
        shard_mem one;
        shard_estimate_memory(c, 1, p->seqlen, 1, wb, &one);
        p->need_one = one.total;
        if (one.total <= a->gpu_mem) {
            /* activations grow by 2 T H 4 bytes a sample: bisect on the estimate itself */
            int64_t lo = 1, hi = p->spr_max;
            while (hi - lo > 1) {
                const int64_t mid = lo + (hi - lo) / 2;
                shard_mem m;
                shard_estimate_memory(c, mid, p->seqlen, 1, wb, &m);
                if (m.total <= a->gpu_mem)
                    lo = mid;
                else
                    hi = mid;
            }
            p->max_spr = lo;
            p->min_per_stage = (a->samples + lo - 1) / lo;
            const int64_t world = p->g.world;
            for (int64_t s2 = S - 1; s2 >= 1; s2--)
                if (world % s2 == 0 && world / s2 >= p->min_per_stage) {
                    p->fewer_stages = s2;
                    break;
                }
        }
    }
    return FPTQ_OK;
}

/* ---- output ----------------------------------------------------------------------------- */

static void fmt_time(double s, char *buf, size_t cap)
{
    if (s < 120.0)
        snprintf(buf, cap, "%.3g s", s);
    else if (s < 7200.0)
        snprintf(buf, cap, "%.1f min", s / 60.0);
    else
        snprintf(buf, cap, "%.1f h", s / 3600.0);
}

#define PLURAL(n) ((n) == 1 ? "" : "s")

static const char *dtype_name(int64_t wb)
{
    return wb == 1 ? "FP8" : wb == 4 ? "FP32" : "BF16/FP16";
}

static void print_text(const plan_args *a, const plan *p)
{
    const llama_config *c = &p->c;
    const int G = p->g.per_stage, S = p->g.stages;
    /* the widest Hessian: inputs of q/k/v and gate/up (hidden), o (q_dim), down (intermediate) */
    int64_t K = c->num_attention_heads * c->head_dim;
    K = c->hidden_size > K ? c->hidden_size : K;
    K = c->intermediate_size > K ? c->intermediate_size : K;
    char t1[32], t2[32], t3[32];

    printf("fptq plan: %s\n", a->config);
    printf("model:        %s, %lld decoder layers, hidden %lld, intermediate %lld, %lld heads / %lld kv heads"
           " of %lld;\n              %.4g parameters per layer, %lld bytes each (%s)\n",
           c->architecture, (long long)p->n_layers, (long long)c->hidden_size, (long long)c->intermediate_size,
           (long long)c->num_attention_heads, (long long)c->num_key_value_heads, (long long)c->head_dim,
           (double)shard_layer_params(c), (long long)a->weight_bytes, dtype_name(a->weight_bytes));
    printf("grid:         %d rank%s = %lld node%s x %lld GPU%s; %d stage%s x %d rank%s (rank = stage x %d + member)\n",
           p->g.world, PLURAL(p->g.world), (long long)a->nodes, PLURAL(a->nodes), (long long)a->gpus_per_node,
           PLURAL(a->gpus_per_node), S, PLURAL(S), G, PLURAL(G), G);
    printf("calibration:  %lld sample%s x %lld tokens; %lld sample%s per rank at most (split over the %d rank%s of a"
           " stage)\n", (long long)a->samples, PLURAL(a->samples), (long long)p->seqlen, (long long)p->spr_max,
           PLURAL(p->spr_max), G, PLURAL(G));
    if (p->seqlen_capped)
        printf("note:         --calib-seqlen %lld exceeds the model's context (max_position_embeddings %lld):"
               " capped to %lld\n", (long long)a->seqlen, (long long)c->max_position_embeddings,
               (long long)p->seqlen);
    if (p->spr_min == 0)
        printf("note:         %lld of the %d ranks of each stage get no samples (fewer samples than ranks);"
               " they still quantize their rows\n", (long long)(G - a->samples), G);
    else if (p->spr_min != p->spr_max)
        printf("note:         uneven split: %lld ranks of each stage get %lld samples, the others %lld\n",
               (long long)p->ranks_with_max, (long long)p->spr_max, (long long)p->spr_min);
    printf("GPU memory:   --gpu-mem %s = %.0f bytes (%s); sizes below in GiB = 2^30 bytes\n\n",
           a->gpu_mem_text, a->gpu_mem, a->gpu_mem_unit);

    fmt_time(p->t_layer, t1, sizeof t1);
    printf("stage  ranks          layers          count  samples/rank  micro-batch  peak GiB  time/layer\n");
    for (int s = 0; s < S; s++) {
        char ranks[32], layers[40];
        snprintf(ranks, sizeof ranks, "%d-%d", s * G, s * G + G - 1);
        snprintf(layers, sizeof layers, "[%lld, %lld)", (long long)p->bounds[s], (long long)p->bounds[s + 1]);
        char micro[24] = "none fits";
        if (p->fits)
            snprintf(micro, sizeof micro, "%lld", (long long)p->micro);
        printf("%5d  %-13s  %-14s  %5lld  %12lld  %11s  %8.2f  %10s\n", s, ranks, layers,
               (long long)(p->bounds[s + 1] - p->bounds[s]), (long long)p->spr_max, micro, p->mem.total / GIB, t1);
    }

    printf("\npeak memory of rank 0 (stage 0, member 0; every rank with %lld samples peaks the same)%s:\n",
           (long long)p->spr_max, p->fits ? "" : ", at the smallest micro-batch (1)");
    printf("  weights      %8.2f GiB  the layer in flight + the next one prefetched (%lld bytes/param),\n"
           "                             fp32 W and Q of the largest linear\n",
           p->mem.weights / GIB, (long long)a->weight_bytes);
    printf("  hessians     %8.2f GiB  Hessian accumulator + inverse-Hessian workspace, fp32, %lld x %lld\n",
           p->mem.hessians / GIB, (long long)K, (long long)K);
    printf("  activations  %8.2f GiB  %lld samples x %lld tokens x %lld, layer input + working copy, fp32\n",
           p->mem.activations / GIB, (long long)p->spr_max, (long long)p->seqlen, (long long)c->hidden_size);
    printf("  workspace    %8.2f GiB  forward buffers for a micro-batch of %lld + attention scores %lld x %lld\n",
           p->mem.workspace / GIB, (long long)(p->fits ? p->micro : 1), (long long)p->seqlen,
           (long long)p->seqlen);
    if (p->fits)
        printf("  total        %8.2f GiB  of %.2f GiB: fits, %.2f GiB to spare\n", p->mem.total / GIB,
               a->gpu_mem / GIB, (a->gpu_mem - p->mem.total) / GIB);
    else
        printf("  total        %8.2f GiB  of %.2f GiB: DOES NOT FIT, %.2f GiB over\n", p->mem.total / GIB,
               a->gpu_mem / GIB, p->over / GIB);

    /* what the worker holds today, beside the design above */
    char parts[512], tot1[32], totm[32], wsm[32];
    fptq_device_estimate e2, e1, em;
    fptq_quantize_device_estimate(c, p->spr_max, p->seqlen, G, 0, 2, 0, &e2);
    fptq_quantize_device_estimate(c, p->spr_max, p->seqlen, G, 0, 1, 0, &e1);
    fptq_quantize_device_estimate(c, p->spr_max, p->seqlen, G, 0, 2, 1, &em);
    fptq_device_estimate_text(&e2, parts, sizeof parts);
    fptq_format_bytes(e1.total, tot1, sizeof tot1);
    fptq_format_bytes(em.total, totm, sizeof totm);
    fptq_format_bytes(em.workspace, wsm, sizeof wsm);
    printf("\nfptq quantize --backend cuda as built, rank 0: %.2f GiB (%s), %s with FPTQ_PREFETCH=0;\n"
           "  where the GPU has less free, the forward runs in micro-batches, down to one sample: %s\n"
           "  (forward workspace %s); it keeps fp32 weights, where the design above counts bf16\n",
           e2.total / GIB, parts, tot1, totm, wsm);

    fmt_time(p->t_forward, t2, sizeof t2);
    fmt_time(p->t_gptq, t3, sizeof t3);
    printf("\ntime, an estimate from FLOPs at an assumed %g TFLOP/s per GPU (--gpu-tflops; no I/O,\n"
           "communication or kernel efficiency counted):\n", a->tflops);
    printf("  per layer    %s on each rank of its stage (forward %s, GPTQ %s; %.3g FLOPs)\n", t1, t2, t3,
           p->fl.total);
    fmt_time(p->job_quantized, t1, sizeof t1);
    fmt_time(p->job_stage, t2, sizeof t2);
    printf("  whole job    %s with --propagate quantized (stages one after another)\n", t1);
    printf("               %s with --propagate stage or fp (stages at once, each after a full-precision\n"
           "               pass through the layers before it)\n", t2);

    if (p->fits)
        printf("\nfits: every rank's peak is within --gpu-mem %s\n", a->gpu_mem_text);
    else
        printf("\nDOES NOT FIT: rank 0 (stage 0) needs %.2f GiB, %.2f GiB more than --gpu-mem %s (see the error)\n",
               p->mem.total / GIB, p->over / GIB, a->gpu_mem_text);
}

static void print_json(const plan_args *a, const plan *p)
{
    const llama_config *c = &p->c;
    const int G = p->g.per_stage, S = p->g.stages;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "config", a->config);
    cJSON_AddBoolToObject(o, "fits", p->fits);

    cJSON *m = cJSON_AddObjectToObject(o, "model");
    cJSON_AddStringToObject(m, "architecture", c->architecture);
    cJSON_AddNumberToObject(m, "layers", (double)p->n_layers);
    cJSON_AddNumberToObject(m, "hidden_size", (double)c->hidden_size);
    cJSON_AddNumberToObject(m, "intermediate_size", (double)c->intermediate_size);
    cJSON_AddNumberToObject(m, "num_attention_heads", (double)c->num_attention_heads);
    cJSON_AddNumberToObject(m, "num_key_value_heads", (double)c->num_key_value_heads);
    cJSON_AddNumberToObject(m, "head_dim", (double)c->head_dim);
    cJSON_AddNumberToObject(m, "params_per_layer", (double)shard_layer_params(c));
    cJSON_AddNumberToObject(m, "weight_bytes", (double)a->weight_bytes);

    cJSON *g = cJSON_AddObjectToObject(o, "grid");
    cJSON_AddNumberToObject(g, "nodes", (double)a->nodes);
    cJSON_AddNumberToObject(g, "gpus_per_node", (double)a->gpus_per_node);
    cJSON_AddNumberToObject(g, "world", p->g.world);
    cJSON_AddNumberToObject(g, "stages", S);
    cJSON_AddNumberToObject(g, "ranks_per_stage", G);

    cJSON *cal = cJSON_AddObjectToObject(o, "calibration");
    cJSON_AddNumberToObject(cal, "samples", (double)a->samples);
    cJSON_AddNumberToObject(cal, "seqlen", (double)p->seqlen);
    cJSON_AddNumberToObject(cal, "seqlen_requested", (double)a->seqlen);
    cJSON_AddBoolToObject(cal, "seqlen_capped", p->seqlen_capped);
    cJSON_AddNumberToObject(cal, "samples_per_rank_max", (double)p->spr_max);
    cJSON_AddNumberToObject(cal, "samples_per_rank_min", (double)p->spr_min);

    /* what the worker holds today (fptq quantize --backend cuda), rank 0 */
    cJSON *wk = cJSON_AddObjectToObject(o, "worker_device_bytes");
    for (int v = 0; v < 3; v++) {
        /* streaming (2 layer buffers), FPTQ_PREFETCH=0, streaming with micro-batches of one sample */
        static const char *const names[3] = {"prefetch", "no_prefetch", "micro_batch_1"};
        fptq_device_estimate e;
        fptq_quantize_device_estimate(c, p->spr_max, p->seqlen, G, 0, v == 1 ? 1 : 2, v == 2 ? 1 : 0, &e);
        cJSON *w = cJSON_AddObjectToObject(wk, names[v]);
        cJSON_AddNumberToObject(w, "micro_batch", (double)e.micro_seqs);
        cJSON_AddNumberToObject(w, "activations", e.activations);
        cJSON_AddNumberToObject(w, "workspace", e.workspace);
        cJSON_AddNumberToObject(w, "weights", e.weights);
        cJSON_AddNumberToObject(w, "statistics", e.statistics);
        cJSON_AddNumberToObject(w, "quantizer", e.quantizer);
        cJSON_AddNumberToObject(w, "total", e.total);
    }

    cJSON *st = cJSON_AddArrayToObject(o, "stages");
    for (int s = 0; s < S; s++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "stage", s);
        cJSON_AddNumberToObject(e, "first_rank", s * G);
        cJSON_AddNumberToObject(e, "last_rank", s * G + G - 1);
        cJSON_AddNumberToObject(e, "layer_begin", (double)p->bounds[s]);
        cJSON_AddNumberToObject(e, "layer_end", (double)p->bounds[s + 1]);
        cJSON_AddNumberToObject(e, "layers", (double)(p->bounds[s + 1] - p->bounds[s]));
        cJSON_AddNumberToObject(e, "samples_per_rank", (double)p->spr_max);
        cJSON_AddNumberToObject(e, "micro_batch", (double)p->micro);
        cJSON_AddNumberToObject(e, "peak_bytes", p->mem.total);
        cJSON_AddNumberToObject(e, "time_per_layer_s", p->t_layer);
        cJSON_AddItemToArray(st, e);
    }

    cJSON *mem = cJSON_AddObjectToObject(o, "memory");
    cJSON_AddNumberToObject(mem, "rank", 0);
    cJSON_AddStringToObject(mem, "gpu_mem", a->gpu_mem_text);
    cJSON_AddStringToObject(mem, "gpu_mem_unit", a->gpu_mem_unit);
    cJSON_AddNumberToObject(mem, "gpu_mem_bytes", a->gpu_mem);
    cJSON_AddNumberToObject(mem, "micro_batch", (double)p->micro);
    cJSON_AddNumberToObject(mem, "weights", p->mem.weights);
    cJSON_AddNumberToObject(mem, "hessians", p->mem.hessians);
    cJSON_AddNumberToObject(mem, "activations", p->mem.activations);
    cJSON_AddNumberToObject(mem, "workspace", p->mem.workspace);
    cJSON_AddNumberToObject(mem, "total", p->mem.total);
    cJSON_AddNumberToObject(mem, "spare_bytes", a->gpu_mem - p->mem.total);

    cJSON *t = cJSON_AddObjectToObject(o, "time");
    cJSON_AddBoolToObject(t, "estimate", 1);
    cJSON_AddNumberToObject(t, "assumed_tflops", a->tflops);
    cJSON_AddNumberToObject(t, "flops_per_layer", p->fl.total);
    cJSON_AddNumberToObject(t, "forward_flops", p->fl.forward);
    cJSON_AddNumberToObject(t, "gptq_flops", p->fl.gptq);
    cJSON_AddNumberToObject(t, "per_layer_s", p->t_layer);
    cJSON_AddNumberToObject(t, "job_s_propagate_quantized", p->job_quantized);
    cJSON_AddNumberToObject(t, "job_s_propagate_stage", p->job_stage);

    if (!p->fits) {
        cJSON *f = cJSON_AddObjectToObject(o, "does_not_fit");
        cJSON_AddNumberToObject(f, "rank", 0);
        cJSON_AddNumberToObject(f, "stage", 0);
        cJSON_AddNumberToObject(f, "over_bytes", p->over);
        cJSON_AddNumberToObject(f, "min_gpu_mem_bytes", p->mem.total);
        cJSON_AddNumberToObject(f, "max_samples_per_rank", (double)p->max_spr);
        cJSON_AddNumberToObject(f, "max_calib_samples", (double)(p->max_spr * G));
        cJSON_AddNumberToObject(f, "min_ranks_per_stage", (double)p->min_per_stage);
    }
    char *s = cJSON_PrintUnformatted(o);
    if (s)
        printf("%s\n", s);
    free(s);
    cJSON_Delete(o);
}

/* The failure a user acts on: who, by how much, and which option to change. */
static fptq_status not_fit_error(const plan_args *a, const plan *p)
{
    const int G = p->g.per_stage;
    char who[96];
    if (p->ranks_with_max == G)
        snprintf(who, sizeof who, "every rank (rank 0: stage 0, member 0)");
    else
        snprintf(who, sizeof who, "rank 0 (stage 0, member 0) and each rank with %lld samples",
                 (long long)p->spr_max);
    if (p->max_spr == 0) {
        shard_mem fixed;
        shard_estimate_memory(&p->c, 0, p->seqlen, 0, (int)a->weight_bytes, &fixed);
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                         "plan does not fit in --gpu-mem %s: %s needs %.2f GiB, %.2f GiB over; even one "
                         "calibration sample per rank would need %.2f GiB (weights %.2f + Hessians %.2f GiB "
                         "per layer), so more GPUs or fewer samples do not help: use GPUs with at least "
                         "%.2f GiB (--gpu-mem)%s",
                         a->gpu_mem_text, who, p->mem.total / GIB, p->over / GIB, p->need_one / GIB,
                         fixed.weights / GIB, fixed.hessians / GIB, p->mem.total / GIB,
                         fixed.total < a->gpu_mem ? ", or a shorter --calib-seqlen" : "");
    }
    /* fewer stages put more of the same GPUs in each stage */
    char stages_hint[96] = "";
    if (p->fewer_stages > 0)
        snprintf(stages_hint, sizeof stages_hint, ", or fewer stages: --stages %lld on these GPUs",
                 (long long)p->fewer_stages);
    else if (p->g.stages > 1)
        snprintf(stages_hint, sizeof stages_hint, ", or fewer --stages");
    return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                     "plan does not fit in --gpu-mem %s: %s needs %.2f GiB for its %lld calibration samples, "
                     "%.2f GiB over. To fit: spread the samples over at least %lld ranks per stage (now %d; "
                     "more GPUs with --nodes/--gpus-per-node%s), or use at most %lld "
                     "calibration samples (--calib-samples), or GPUs with at least %.2f GiB (--gpu-mem)",
                     a->gpu_mem_text, who, p->mem.total / GIB, (long long)p->spr_max, p->over / GIB,
                     (long long)p->min_per_stage, G, stages_hint, (long long)(p->max_spr * G),
                     p->mem.total / GIB);
}

int cmd_plan(int argc, char **argv)
{
    plan_args a;
    int help;
    fptq_status st = parse_args(argc, argv, &a, &help);
    if (help) {
        plan_usage(stdout);
        return FPTQ_EXIT_OK;
    }
    if (st != FPTQ_OK)
        return cli_report(st);

    plan p;
    st = plan_build(&a, &p);
    if (st == FPTQ_OK) {
        if (p.seqlen_capped)
            fptq_warn("--calib-seqlen %lld exceeds the model's context (max_position_embeddings %lld): capped to %lld",
                      (long long)a.seqlen, (long long)p.c.max_position_embeddings, (long long)p.seqlen);
        if (a.json)
            print_json(&a, &p);
        else
            print_text(&a, &p);
        if (!p.fits)
            st = not_fit_error(&a, &p);
    }
    free(p.bounds);
    return cli_report(st);
}
