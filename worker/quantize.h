/*
 * The quantization job on one rank: calibrate each decoder layer on real
 * token data, quantize its linears true-sequentially (q/k/v, o, gate/up,
 * down, each group seeing the previous groups' quantized output), write it
 * durably to the checkpoint, and hand the layer's output to the next one.
 */
#ifndef FPTQ_QUANTIZE_H
#define FPTQ_QUANTIZE_H

#include "../io/npy.h"
#include "comm.h"
#include "model.h"

typedef enum { METHOD_RTN, METHOD_GPTQ, METHOD_AWQ } fptq_method;
typedef enum { PROPAGATE_QUANTIZED, PROPAGATE_STAGE, PROPAGATE_FP } fptq_propagate;

/* Everything that decides the checkpoint's content; a resume must match it. */
typedef struct fptq_recipe {
    char scheme[8];            /* w4a16 w3a16 w8a16 w8a8 fp8 */
    fptq_method method;
    quant_spec weight;
    int act_order;             /* GPTQ: columns by decreasing Hessian diagonal, static groups */
    float damp;                /* GPTQ: damping as a fraction of mean(diag H) */
    float smoothquant_alpha;   /* < 0: no SmoothQuant */
    act_quant_kind act;        /* activation quantization of every linear's input */
    fptq_propagate propagate;
    int64_t calib_samples, calib_seqlen;
} fptq_recipe;

/* Builds and validates a recipe from command-line choices; group_size < 0
 * means the scheme's default. Errors name the option. */
fptq_status fptq_recipe_make(const char *scheme, const char *method, int64_t group_size, int sym,
                             int act_order, float damp, float smoothquant_alpha, int dynamic,
                             const char *propagate, fptq_recipe *r);
/* Canonical JSON text (caller frees). */
char *fptq_recipe_json(const fptq_recipe *r);
const char *fptq_method_name(fptq_method m);

typedef struct fptq_text_source fptq_text_source;

typedef struct fptq_quantize_opts {
    const char *model_dir, *calib_path, *out_dir;
    /* calibration from text (calib_path is then the text file): tokenized
     * with model_dir's tokenizer.json; NULL: calib_path is a token .npy */
    const fptq_text_source *calib_text;
    int resume;
    int64_t max_layers;        /* each stage stops cleanly after this many more layers; 0 = no limit */
    int stages;                /* 0: one per node */
    int progress;
    fptq_recipe recipe;
} fptq_quantize_opts;

typedef struct fptq_quantize_result {
    int64_t layers_total, layers_done_now, layers_skipped;
    int stopped_early;         /* --max-layers reached or a stop requested: the checkpoint is resumable */
    int stop_signal;           /* the signal that stopped it, 0 for --max-layers */
    double seconds;
    char digest[65];           /* whole-checkpoint digest, when finished */
    double loss[LIN_COUNT];    /* summed over the layers quantized by this run */
} fptq_quantize_result;

/* Every rank of w calls it (w NULL or of size 1: one rank, no MPI needed).
 * The result (digest, counts) is complete on rank 0; stopped_early on all. */
fptq_status fptq_quantize(const fptq_backend *be, fptq_world *w, const fptq_quantize_opts *o, fptq_quantize_result *r);

/* A request to stop cleanly: the layers in flight finish and are written,
 * then the job returns with stopped_early set (exit status 3). Safe to call
 * from a signal handler; main() installs one for SIGTERM and SIGUSR1. */
void fptq_request_stop(int signo);
int fptq_stop_signal(void);   /* the signal that asked, 0 if none */

/* The statistics of every linear group's input (stats[LGROUP_COUNT], each
 * initialised by the caller to its group's input width) for the
 * full-precision layer l run on this rank's activations x (left as they
 * are), summed over the ranks of coll: raw sums and token counts. */
fptq_status fptq_layer_stats(const fptq_backend *be, const fptq_model *m, const fptq_collectives *coll, int64_t l,
                             const float *x, int64_t n_seq, int64_t T, linear_stats *stats);

/* The calibration stream cut into samples: n_samples x seq_len tokens from the
 * start of a 1-D stream, or the first seq_len tokens of the first n_samples rows. */
fptq_status fptq_calib_samples(const fptq_tokens *t, int64_t n_samples, int64_t seq_len, const char *path,
                               int32_t **ids);

/* The memory of the backend's device that fptq quantize holds on one rank,
 * by part, in bytes: a lower bound (the CUDA libraries' own workspaces
 * aside) for `samples` samples of `seqlen` tokens on member `member` of a
 * stage of `per_stage` ranks, with `slots` layer buffers (2 streaming, 1
 * with FPTQ_PREFETCH=0) and the forward in micro-batches of micro_seqs
 * samples (0: all at once). quantize checks it against the GPU's free
 * memory; fptq plan prints it beside its design figure. */
typedef struct fptq_device_estimate {
    double activations, workspace, weights, statistics, quantizer, total;
    int slots;
    int64_t samples;             /* the rank's */
    int64_t micro_seqs;          /* samples per micro-batch of the forward (fptq_forward_micro_seqs) */
} fptq_device_estimate;
void fptq_quantize_device_estimate(const llama_config *c, int64_t samples, int64_t seqlen, int per_stage, int member,
                                   int slots, int64_t micro_seqs, fptq_device_estimate *e);
/* "activations 4.00 GiB, forward workspace ... (micro-batches of N samples), ..., quantizer ..." */
void fptq_device_estimate_text(const fptq_device_estimate *e, char *buf, size_t cap);

#endif
