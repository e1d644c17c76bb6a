/*
 * The fptq checkpoint: a directory of HDF5 files that a killed job resumes
 * from. One file per decoder layer (layers/layer-NNNNN.h5, written to a
 * temporary name, fsync'd, renamed, folder fsync'd: a kill at any moment
 * leaves every finished layer intact), shared.h5 for the tensors left
 * unquantized (embedding, final norm, head), and index.h5 tying them
 * together: config, recipe, provenance, and the per-layer manifest (status,
 * content digest, losses), rewritten atomically after every layer.
 * (A file per layer rather than per stage: HDF5 is not crash-safe while a
 * file is open for writing, and per-layer files let any rank write its own.)
 */
#ifndef FPTQ_CHECKPOINT_H
#define FPTQ_CHECKPOINT_H

#include "../common/status.h"
#include "../kernels/quant.h"

#define CKPT_MAX_LINEARS 7

/* One quantized linear as stored. */
typedef struct ckpt_linear {
    char name[32];            /* "self_attn.q_proj", ... */
    quant_tensor q;           /* codes stored packed (INT) or as bytes (FP8) */
    float *bias;              /* [rows] or NULL */
    act_quant act;            /* input activation quantization */
    char method[16];          /* "rtn", "gptq", "awq" */
    float damp;               /* GPTQ damping used (0 otherwise) */
    double loss;              /* method's loss (GPTQ proxy loss; AWQ output error) */
} ckpt_linear;

/* One decoder layer as stored: folded norms plus its linears. */
typedef struct ckpt_layer {
    int64_t index;
    int64_t hidden;
    float *attn_norm, *mlp_norm;   /* [hidden] (after any AWQ / SmoothQuant fold) */
    int n_linears;
    ckpt_linear lin[CKPT_MAX_LINEARS];
    double seconds;                /* time spent on it, for the manifest */
} ckpt_layer;
void ckpt_layer_free(ckpt_layer *l);   /* frees every array it owns */

/* A tensor kept in the input model's dtype ("F32", "BF16", "F16"): raw bytes. */
typedef struct ckpt_raw_tensor {
    const char *name;         /* "embed_tokens", "norm", "lm_head" */
    const char *dtype;
    int ndim;
    int64_t shape[2];
    const void *data;
} ckpt_raw_tensor;

/* What the index carries besides the manifest. JSON texts, stored verbatim. */
typedef struct ckpt_meta {
    const char *config_json;      /* the model's config.json */
    const char *recipe_json;      /* the full quantization recipe */
    const char *provenance_json;  /* fptq version, sha256 of model files and tokens, time, world */
    int64_t n_layers;
} ckpt_meta;

typedef struct ckpt ckpt;

/* Creates DIR, writes index.h5 with the meta and an all-pending manifest.
 * DIR must not exist, or hold only fptq's skeleton (layers/, temporary
 * files, the lock: what a run killed before its first index leaves); an
 * index.h5 or anything else is refused, never overwritten. The checkpoint
 * exists once index.h5 is linked into place, which only one creator can do. */
fptq_status ckpt_create(const char *dir, const ckpt_meta *meta, ckpt **out);
/* Opens an existing checkpoint for reading: index.h5 must match its
 * index_digest (config, recipe, provenance, manifest) and shared.h5, once
 * listed, the index's digest of it; anything else is FPTQ_ERR_FORMAT naming
 * the file. Layers are checked as they are read (ckpt_read_layer). */
fptq_status ckpt_open(const char *dir, ckpt **out);
/* The same for `quantize --resume`: a damaged or missing shared.h5 is set
 * aside (the checkpoint then has no shared tensors, to be written again from
 * the model) and ckpt_shared_problem says why; a damaged index still fails. */
fptq_status ckpt_open_resume(const char *dir, ckpt **out);
const char *ckpt_shared_problem(const ckpt *c);   /* NULL when none */
/* The index alone (checked as by ckpt_open), shared.h5 neither opened nor
 * hashed: for the ranks of a run that only read and write layers, after
 * rank 0 has checked or rewritten shared.h5 (it must not be marked done or
 * digested through this handle: it reports no shared tensors). */
fptq_status ckpt_open_layers(const char *dir, ckpt **out);
void ckpt_close(ckpt *c);

/* The exclusive lock of a run that writes DIR (DIR/fptq.lock, flock(2)),
 * taken before any work. It creates DIR when missing (removed again at
 * release if no index.h5 came of it), refuses a finished checkpoint without
 * `resume` and a folder that is not a checkpoint without touching them,
 * checks that DIR (and DIR/layers) can be written, and records
 * "pid P on host H since T" in the lock file; a second run is refused with
 * that text (FPTQ_ERR_IO) and changes nothing. The lock file is removed at
 * release. Under MPI rank 0 alone takes it, for the world. */
typedef struct ckpt_lock ckpt_lock;
fptq_status ckpt_lock_take(const char *dir, int resume, ckpt_lock **out);
void ckpt_lock_release(ckpt_lock *k);   /* NULL is fine */

const char *ckpt_config_json(const ckpt *c);
const char *ckpt_recipe_json(const ckpt *c);
const char *ckpt_provenance_json(const ckpt *c);
int64_t ckpt_n_layers(const ckpt *c);

/* shared.h5: written once, durably (tmp + fsync + rename); after
 * ckpt_open_resume set a damaged one aside, written again. */
fptq_status ckpt_write_shared(ckpt *c, const ckpt_raw_tensor *t, int n);
int ckpt_has_shared(const ckpt *c);
/* Rows [row0, row0 + n) of a shared 2-D tensor (or the whole 1-D one with row0 = 0, n = 1)
 * converted to fp32. A missing tensor is FPTQ_ERR_FORMAT naming it (lm_head is absent when tied). */
fptq_status ckpt_read_shared_rows(const ckpt *c, const char *name, int64_t row0, int64_t n, float *dst);
int ckpt_has_shared_tensor(const ckpt *c, const char *name);
/* What a shared tensor is, without reading it: dtype as stored ("F32", "BF16",
 * "F16"), 1 or 2 dimensions, extents (shape[1] = 0 for 1-D). */
fptq_status ckpt_shared_info(const ckpt *c, const char *name, char dtype[8], int *ndim, int64_t shape[2]);
/* Rows [row0, row0 + n) of a shared tensor (the whole 1-D one: row0 = 0, n = 1)
 * as the bytes the input model held, in its dtype (little-endian): for
 * exports that must keep unquantized tensors bit for bit. */
fptq_status ckpt_read_shared_raw(const ckpt *c, const char *name, int64_t row0, int64_t n, void *dst);

/* Writes layer l durably, then marks it done in the manifest (the index is
 * rewritten to a temporary file and renamed). digest_hex gets the layer's
 * content digest (sha256 over names, dtypes, shapes, attributes and bytes). */
fptq_status ckpt_write_layer(ckpt *c, const ckpt_layer *layer, char digest_hex[65]);
int ckpt_layer_done(const ckpt *c, int64_t l);
/* The two halves of ckpt_write_layer, for runs where the rank that writes a
 * layer is not the one that owns the manifest (rank 0): the file, durably,
 * with its digest and manifest losses (caller frees) ... */
fptq_status ckpt_write_layer_file(const ckpt *c, const ckpt_layer *layer, char digest_hex[65], char **losses_json);
/* ... then, on the manifest's owner, the mark that makes it count as done. */
fptq_status ckpt_mark_done(ckpt *c, int64_t l, const char *digest_hex, double seconds, const char *losses_json);
/* Reads a finished layer; its digest is recomputed and must equal the manifest's
 * (a corrupted or truncated file is FPTQ_ERR_FORMAT naming the file). */
fptq_status ckpt_read_layer(const ckpt *c, int64_t l, ckpt_layer *out);
/* Manifest entry of layer l: status "done" or "pending", digest, seconds, and the
 * per-linear losses as JSON text (owned by the checkpoint). */
const char *ckpt_layer_digest(const ckpt *c, int64_t l);      /* "" when pending */
const char *ckpt_layer_manifest_json(const ckpt *c, int64_t l);

/* Digest of the whole checkpoint: sha256 over the recipe, the shared tensors'
 * digest and every layer digest in order. Needs every layer done. */
fptq_status ckpt_digest(const ckpt *c, char digest_hex[65]);

#endif
