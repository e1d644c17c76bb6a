/*
 * Layer-major forward pass: embedding, decoder layers on a batch of
 * sequences held as one [n_seq * seq_len, hidden] activation matrix, and the
 * head folded into per-token negative log-likelihoods without ever holding
 * the whole [tokens, vocab] logits or the whole head matrix in memory.
 */
#ifndef FPTQ_FORWARD_H
#define FPTQ_FORWARD_H

#include "model.h"

/* Scratch for one micro-batch through one layer (rows: its tokens), in the
 * backend's memory. */
typedef struct fptq_forward_ws {
    const fptq_backend *be;
    int64_t rows;
    int64_t up_rows;             /* rows of `up`: all of them, or a chunk (fptq_forward_up_rows) */
    float *h, *q, *k, *v, *attn, *o, *gate, *up;
} fptq_forward_ws;

/* Rows of the MLP's up projection held at once: all rows on host backends;
 * on a device, chunks of at most 2^28 elements (1 GiB; the gate buffer
 * holds the SwiGLU product whole). FPTQ_TEST_UP_ROWS=n forces n (tests). */
int64_t fptq_forward_up_rows(int host_memory, const llama_config *c, int64_t rows);

fptq_status fptq_forward_ws_alloc(const fptq_backend *be, const llama_config *c, int64_t rows,
                                  fptq_forward_ws *ws);
void fptq_forward_ws_free(fptq_forward_ws *ws);

/* A layer's weights where the backend computes: for a host backend (the
 * CPU) a view of the host layer itself, so that nothing is copied and a
 * change made through either is seen by both; otherwise arrays of the
 * backend's memory that fptq_dev_layer_upload fills from a host layer. The
 * activation quantization parameters (act) are host structs in both. */
typedef struct fptq_dev_layer {
    const fptq_backend *be;
    fptq_layer_weights w;
    int owned;                    /* the arrays are the backend's, freed with it */
} fptq_dev_layer;

/* host: the host layer a host backend's view shows (kept by the caller). */
fptq_status fptq_dev_layer_alloc(const fptq_backend *be, const llama_config *c, fptq_layer_weights *host,
                                 fptq_dev_layer *d);
void fptq_dev_layer_free(fptq_dev_layer *d);
/* The whole host layer to the backend (act parameters included). */
fptq_status fptq_dev_layer_upload(fptq_dev_layer *d, const llama_config *c, const fptq_layer_weights *host);
/* The same on the backend's second stream (be->upload_async after slot's
 * mark); host must be page-locked and untouched until be->uploads_sync. */
fptq_status fptq_dev_layer_upload_async(fptq_dev_layer *d, const llama_config *c, const fptq_layer_weights *host,
                                        int slot);
/* n floats of a host array to its twin in the backend (a no-op for a view). */
fptq_status fptq_dev_put(const fptq_backend *be, float *dev, const float *host, int64_t n);
/* and back */
fptq_status fptq_dev_get(const fptq_backend *be, float *host, const float *dev, int64_t n);

/* x[n, hidden] = embedding rows of ids[n] (rows converted on demand from the mmap); host memory. */
fptq_status fptq_embed(const fptq_model *m, const int32_t *ids, int64_t n, float *x);

/* Calibration hooks. For each group of linears g, in the layer's order,
 * observe() is handed the group's input, a micro-batch at a time: rows
 * [r0, r0 + rows) of the batch; then finish() is called once. finish() may
 * change the layer's weights and norms (scale folds, quantization); X is the
 * whole input when the batch ran as one micro-batch (finish may then scale
 * it in place, and the layer goes on from it), NULL otherwise (the forward
 * recomputes each micro-batch's input from the layer's input with what
 * finish left). With *again set, the input is observed once more and finish
 * called again. The group then runs with the weights finish left, its input
 * fake-quantized by lw->act when set. Ranks may hold different numbers of
 * samples, so of micro-batches: collectives belong in finish, never in
 * observe. */
typedef struct fptq_layer_hooks {
    fptq_status (*observe)(void *ctx, fptq_linear_group g, const float *X, int64_t r0, int64_t rows, int64_t cols);
    fptq_status (*finish)(void *ctx, fptq_linear_group g, float *X, int64_t rows, int64_t cols, int *again);
    void *ctx;
} fptq_layer_hooks;

/* Bytes of the workspace fptq_forward_ws_alloc makes for `rows` tokens. */
double fptq_forward_ws_bytes(int host_memory, const llama_config *c, int64_t rows);

/* Sequences the forward runs at once (a micro-batch; the workspace is sized
 * for it): FPTQ_MICRO_SEQS=n when set; else all n_seq on host backends or
 * when budget <= 0; else the most whose workspace fits in budget bytes (0
 * when not even one does). Never more than n_seq. */
int64_t fptq_forward_micro_seqs(int host_memory, const llama_config *c, int64_t n_seq, int64_t seq_len, double budget);
/* FPTQ_MICRO_SEQS, when set, is a positive number (else an error naming it). */
fptq_status fptq_forward_check_env(void);

/* One decoder layer, in place on x[n_seq * seq_len, hidden], in micro-batches
 * of the sequences ws holds; hooks may be NULL. x, ws and lw's arrays are in
 * the backend's memory (lw: fptq_dev_layer.w), and so is the X the hooks
 * are handed. With hooks and more than one micro-batch, each group's input
 * is recomputed from x per micro-batch: q/k/v, attention and gate/up run
 * twice, o_proj and down_proj once. */
fptq_status fptq_layer_forward(const fptq_backend *be, const llama_config *c,
                               const fptq_layer_weights *lw, const rope_table *rt, float *x,
                               int64_t n_seq, int64_t seq_len, fptq_forward_ws *ws,
                               const fptq_layer_hooks *hooks);

/* Final norm (in place on x[n, hidden], backend memory), then the head in
 * vocabulary blocks: nll[i] = logsumexp(logits[i]) - logits[i][targets[i]]
 * for targets[i] >= 0. When logits != NULL the full [n, vocab] logits are
 * stored there too. targets, nll and logits are host memory. */
fptq_status fptq_head_nll(const fptq_backend *be, const fptq_model *m, float *x, int64_t n,
                          const int32_t *targets, double *nll, float *logits);

/* Whole forward of n_seq sequences of seq_len tokens, layer-major, with
 * per-token NLL of the next token (the last token of each sequence has none:
 * its nll entry is set to NAN). `progress` prints a line per layer. */
fptq_status fptq_forward_nll(const fptq_backend *be, const fptq_model *m, const int32_t *ids,
                             int64_t n_seq, int64_t seq_len, double *nll, float *logits,
                             int progress);

/* The same forward up to the final norm: out[n_seq x seq_len, hidden] (host
 * memory) holds the normalized hidden states the head multiplies. */
fptq_status fptq_forward_final(const fptq_backend *be, const fptq_model *m, const int32_t *ids, int64_t n_seq,
                               int64_t seq_len, float *out, int progress);

#endif
