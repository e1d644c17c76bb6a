/*
 * fptq quantize, the job on every rank. Rank 0 makes or checks the
 * checkpoint and owns its manifest; each stage runs its layers (layer by
 * layer: calibrate and quantize, write durably, hand the output to the next
 * layer), passes its output to the next stage, and reports each finished
 * layer to rank 0. A layer's output is taken from the stored layer through
 * the same path that resume and eval use, so interrupted and uninterrupted
 * runs agree bit for bit.
 */
#define _POSIX_C_SOURCE 200809L
#include "quantize.h"

#include "../io/tokenizer.h"

#include "../common/fileio.h"
#include "../common/sha256.h"
#include "../sharding/sharding.h"
#include "layer_quant.h"
#include "layer_stream.h"
#ifdef FPTQ_HAVE_NCCL
#include "../kernels/cuda/nccl_coll.h"
#endif

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#ifndef FPTQ_VERSION
#define FPTQ_VERSION "dev"
#endif

/* ---- stop requests ---------------------------------------------------------- */

static volatile sig_atomic_t stop_signo = 0;

/* The first request names the stop: a SIGTERM after a SIGUSR1 is the same stop. */
void fptq_request_stop(int signo)
{
    if (!stop_signo)
        stop_signo = signo ? signo : -1;
}
int fptq_stop_signal(void) { return stop_signo; }

/* ---- provenance and resume checks ------------------------------------------------ */

static fptq_status hash_model_files(const fptq_model *m, cJSON *files)
{
    char path[sizeof m->dir + 64], hex[65];
    snprintf(path, sizeof path, "%s/config.json", m->dir);
    FPTQ_TRY(sha256_file(path, hex));
    cJSON_AddStringToObject(files, "config.json", hex);
    /* every distinct file that holds a tensor, in name order */
    const size_t n = st_model_count(m->st);
    for (size_t i = 0; i < n; i++) {
        const char *p = st_model_tensor(m->st, i)->path;
        const char *base = strrchr(p, '/') ? strrchr(p, '/') + 1 : p;
        if (cJSON_GetObjectItemCaseSensitive(files, base))
            continue;
        FPTQ_TRY(sha256_file(p, hex));
        cJSON_AddStringToObject(files, base, hex);
    }
    return FPTQ_OK;
}

static fptq_status make_provenance(const fptq_model *m, const fptq_quantize_opts *o, int world_size, int stages,
                                   char **json)
{
    cJSON *p = cJSON_CreateObject(), *files = cJSON_AddObjectToObject(p, "model_files");
    char hex[65];
    fptq_status st;
    cJSON_AddStringToObject(p, "fptq_version", FPTQ_VERSION);
    cJSON_AddStringToObject(p, "model_dir", o->model_dir);
    FPTQ_TRY_GOTO(hash_model_files(m, files), st, done);
    cJSON_AddStringToObject(p, "calib_path", o->calib_path);
    FPTQ_TRY_GOTO(sha256_file(o->calib_path, hex), st, done);
    cJSON_AddStringToObject(p, "calib_sha256", hex);
    if (o->calib_text) {
        /* text in: what turned it into tokens is part of the calibration */
        const fptq_text_source *src = o->calib_text;
        char tp[sizeof m->dir + 32];
        snprintf(tp, sizeof tp, "%s/tokenizer.json", o->model_dir);
        cJSON_AddStringToObject(p, "calib_format", src->jsonl_path ? "jsonl" : "text");
        FPTQ_TRY_GOTO(sha256_file(tp, hex), st, done);
        cJSON_AddStringToObject(p, "tokenizer_sha256", hex);
        cJSON_AddStringToObject(p, "calib_bos", fptq_bos_policy_name(src->bos));
        if (src->doc_sep && *src->doc_sep)
            cJSON_AddStringToObject(p, "calib_doc_sep", src->doc_sep);
        if (src->field)
            cJSON_AddStringToObject(p, "calib_field", src->field);
    }
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    cJSON_AddStringToObject(p, "created", when);
    cJSON_AddNumberToObject(p, "world_size", world_size);
    cJSON_AddNumberToObject(p, "stages", stages);
    *json = cJSON_PrintUnformatted(p);
    st = FPTQ_OK;
done:
    cJSON_Delete(p);
    return st;
}

/* A resume must use the recipe, model files and calibration data the checkpoint was made with. */
static fptq_status check_resume(const ckpt *ck, const char *dir, const char *recipe_json, const char *provenance_json)
{
    if (strcmp(ckpt_recipe_json(ck), recipe_json) != 0)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "--resume: the recipe differs from the one checkpoint %s was made with:\n  checkpoint: %s\n  this run:   %s",
                         dir, ckpt_recipe_json(ck), recipe_json);
    cJSON *old = cJSON_Parse(ckpt_provenance_json(ck)), *now = cJSON_Parse(provenance_json);
    fptq_status st = FPTQ_OK;
    if (!old || !now) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "checkpoint %s: provenance is not valid JSON", dir);
        goto done;
    }
    if (!cJSON_Compare(cJSON_GetObjectItemCaseSensitive(old, "model_files"),
                       cJSON_GetObjectItemCaseSensitive(now, "model_files"), 1)) {
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "--resume: the model's files differ (sha256) from those checkpoint %s was made with", dir);
        goto done;
    }
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(old, "calib_sha256"), *b = cJSON_GetObjectItemCaseSensitive(now, "calib_sha256");
    if (!cJSON_IsString(a) || !cJSON_IsString(b) || strcmp(a->valuestring, b->valuestring) != 0) {
        if (cJSON_GetObjectItemCaseSensitive(now, "calib_format"))
            st = FPTQ_FAIL(FPTQ_ERR_ARG, "--resume: the calibration text differs (sha256) from the one checkpoint %s was "
                           "made with", dir);
        else
            st = FPTQ_FAIL(FPTQ_ERR_ARG, "--resume: the calibration tokens differ (sha256) from those checkpoint %s was "
                           "made with", dir);
        goto done;
    }
    /* text calibration: the same tokenizer, BOS policy, documents; absent = a .npy */
    static const struct {
        const char *key, *what;
    } TEXT_KEYS[] = {{"calib_format", "calibration input's format (npy, text, jsonl)"},
                     {"tokenizer_sha256", "tokenizer.json (sha256)"},
                     {"calib_bos", "BOS policy (--bos)"},
                     {"calib_doc_sep", "document separator (--doc-sep)"},
                     {"calib_field", "JSON Lines field (--field)"}};
    for (size_t i = 0; i < sizeof TEXT_KEYS / sizeof TEXT_KEYS[0]; i++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(old, TEXT_KEYS[i].key);
        const cJSON *y = cJSON_GetObjectItemCaseSensitive(now, TEXT_KEYS[i].key);
        if (!x != !y || (x && (!cJSON_IsString(x) || !cJSON_IsString(y) || strcmp(x->valuestring, y->valuestring) != 0))) {
            /* as JSON strings, so that a separator's newline reads \n */
            char *xs = x ? cJSON_PrintUnformatted(x) : NULL, *ys = y ? cJSON_PrintUnformatted(y) : NULL;
            st = FPTQ_FAIL(FPTQ_ERR_ARG, "--resume: the %s differs from the one checkpoint %s was made with (%s there, %s now)",
                           TEXT_KEYS[i].what, dir, xs ? xs : "none", ys ? ys : "none");
            free(xs);
            free(ys);
            goto done;
        }
    }
done:
    cJSON_Delete(old);
    cJSON_Delete(now);
    return st;
}

/* Finished layers stay valid under another world layout, but the sample
 * split (and, with --propagate stage, the stage bounds) change the rounding
 * of what is still to do: say so rather than promise bit-identity. */
static void warn_layout_change(const ckpt *ck, int world_size, int stages)
{
    cJSON *p = cJSON_Parse(ckpt_provenance_json(ck));
    const cJSON *ws = cJSON_GetObjectItemCaseSensitive(p, "world_size");
    const cJSON *ss = cJSON_GetObjectItemCaseSensitive(p, "stages");
    if (cJSON_IsNumber(ws) && cJSON_IsNumber(ss) && ((int)ws->valuedouble != world_size || (int)ss->valuedouble != stages))
        fptq_warn("--resume: the checkpoint was started with %d rank(s) in %d stage(s), this run has %d in %d: "
                  "finished layers are kept, the rest is quantized with this layout, and the result will not be "
                  "bit-identical to an uninterrupted run of either layout",
                  (int)ws->valuedouble, (int)ss->valuedouble, world_size, stages);
    cJSON_Delete(p);
}

/* What the readers (eval, export) need of the index, checked on resume too,
 * so that a resume never calls done a checkpoint they refuse: the layer
 * count, and a stored config that parses and is the model's config.json
 * byte for byte (the model files matched by sha256, so any difference is
 * damage the index digest did not catch). */
static fptq_status check_resume_readable(const ckpt *ck, const char *dir, const fptq_model *m, const char *config_json)
{
    if (ckpt_n_layers(ck) != m->cfg.num_hidden_layers)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "checkpoint %s has %lld layers, the model %lld", dir,
                         (long long)ckpt_n_layers(ck), (long long)m->cfg.num_hidden_layers);
    char source[4096 + 32];
    snprintf(source, sizeof source, "%s/index.h5 (config)", dir);
    llama_config stored;
    FPTQ_TRY(llama_config_parse(ckpt_config_json(ck), source, &stored));
    if (strcmp(ckpt_config_json(ck), config_json) != 0)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "checkpoint %s: the config stored in index.h5 differs from %s/config.json, "
                         "which has the same sha256 as when the checkpoint was made: the index is damaged; quantize "
                         "into a new directory", dir, m->dir);
    return FPTQ_OK;
}

/* The shared tensors a reader takes: embedding, final norm, and the head
 * unless tied (eval and export refuse a checkpoint without them). */
static fptq_status check_shared_tensors(const ckpt *ck, const char *dir, const fptq_model *m)
{
    const char *need[3] = {"embed_tokens", "norm", "lm_head"};
    for (int i = 0; i < 3; i++) {
        const int want = i < 2 || !m->cfg.tie_word_embeddings;
        if (want != ckpt_has_shared_tensor(ck, need[i]))
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "checkpoint %s: shared.h5 %s %s (tie_word_embeddings is %s)", dir,
                             want ? "lacks" : "has an unexpected", need[i], m->cfg.tie_word_embeddings ? "true" : "false");
    }
    return FPTQ_OK;
}

static fptq_status write_shared(ckpt *ck, const fptq_model *m)
{
    const char *names[3] = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"};
    const char *stored[3] = {"embed_tokens", "norm", "lm_head"};
    ckpt_raw_tensor t[3];
    int n = 0;
    for (int i = 0; i < 3; i++) {
        if (i == 2 && m->cfg.tie_word_embeddings)
            continue;
        const st_tensor *s;
        FPTQ_TRY(st_model_get(m->st, names[i], &s));
        t[n++] = (ckpt_raw_tensor){.name = stored[i], .dtype = st_dtype_name(s->dtype), .ndim = s->ndim,
                                   .shape = {s->shape[0], s->ndim > 1 ? s->shape[1] : 0}, .data = s->data};
    }
    return ckpt_write_shared(ck, t, n);
}

/* ---- the job ------------------------------------------------------------------ */

/* What a stage tells the coordinator (world rank 0): a layer is on disk, or
 * the stage has finished its layers (or stopped early). Fixed size, small
 * enough to be sent eagerly while rank 0 is busy with its own layers. */
enum { NOTE_TAG = 7001, HANDOFF_TAG = 7002, NOTE_LAYER = 1, NOTE_STAGE_END = 2, NOTE_RESTORED = 3 };
typedef struct stage_note {
    int64_t kind, layer, stage, stopped;
    double seconds;
    char digest[65];
    char losses_json[1536];
} stage_note;

typedef struct job {
    const fptq_backend *be;
    fptq_world *w;                 /* NULL: one rank, no MPI */
    int rank, stage, member, stages, per_stage;
    fptq_collectives coll;         /* the stage's ranks, host buffers (MPI) */
    fptq_collectives dcoll;        /* the same ranks, buffers in the backend's memory */
    int dcoll_kind;                /* 0: coll itself, 1: staged through the host, 2: NCCL */
    const fptq_quantize_opts *o;
    fptq_recipe r;
    fptq_model m;
    ckpt *ck;
    ckpt_lock *lock;               /* rank 0's, for the world, from before any work to the end */
    int64_t *bounds;               /* stage s owns layers [bounds[s], bounds[s + 1]) */
    stage_note *notes;             /* a stage's notes to the coordinator, one per layer, until flushed */
    int64_t n_seq, T;              /* this rank's samples, tokens per sample */
    int64_t micro;                 /* samples per pass of the forward (check_device_memory) */
    float *x, *xw;                 /* activations, in the backend's memory */
    float *hx;                     /* host staging for them (device backends): embedding, hand-offs */
    fptq_layer_stream ls;          /* the layers, host and backend copies, the next one loading */
    fptq_forward_ws ws;
    rope_table rt;
    layer_job lj;
    /* fault injection for the tests (FPTQ_FAULT=kill|fail:RANK:LAYER) */
    char fault[8];
    int fault_rank;
    int64_t fault_layer;
    long delay_ms;
    /* coordinator's bookkeeping */
    double t_start;
    int64_t finished_now, pending_at_start;
    fptq_quantize_result *res;
} job;

static void job_progress(job *J, int64_t layer, int64_t stage, double seconds, const char *digest)
{
    if (!J->o->progress)
        return;
    const int64_t L = J->m.cfg.num_hidden_layers;
    const double el = fptq_now() - J->t_start;
    const double eta = J->finished_now ? el / (double)J->finished_now * (double)(J->pending_at_start - J->finished_now) : 0.0;
    fptq_info("layer %lld/%lld quantized%s in %.2f s, %lld/%lld this run, elapsed %.1f s, ETA %.0f s, digest %.16s",
              (long long)layer + 1, (long long)L, J->stages > 1 ? (stage == 0 ? " (stage 0)" : "") : "", seconds,
              (long long)J->finished_now, (long long)J->pending_at_start, el, eta, digest);
    if (J->stages > 1 && stage > 0)
        fptq_info("  (by stage %lld)", (long long)stage);
}

/* Coordinator: a layer is durable on disk; record it in the manifest. */
static fptq_status coordinator_layer_done(job *J, const stage_note *n)
{
    FPTQ_TRY(ckpt_mark_done(J->ck, n->layer, n->digest, n->seconds, n->losses_json));
    J->finished_now++;
    J->res->layers_done_now++;
    job_progress(J, n->layer, n->stage, n->seconds, n->digest);
    return FPTQ_OK;
}

/* Coordinator: handles every note already waiting, without blocking. */
static fptq_status coordinator_poll(job *J, int *stages_ended, int *any_stopped)
{
    if (!J->w || J->rank != 0)
        return FPTQ_OK;
    for (;;) {
        stage_note n;
        int got;
        FPTQ_TRY(fptq_world_note_poll(J->w, NOTE_TAG, &n, sizeof n, &got));
        if (!got)
            return FPTQ_OK;
        if (n.kind == NOTE_LAYER) {
            FPTQ_TRY(coordinator_layer_done(J, &n));
        } else if (n.kind == NOTE_RESTORED) {
            J->res->layers_skipped++;
        } else {
            (*stages_ended)++;
            *any_stopped |= n.stopped != 0;
        }
    }
}

/* The stage's first rank wrote layer l: tell the coordinator (or be it).
 * The note is posted, not sent: the coordinator reads its mail between its
 * own layers, and this rank must not wait for that. */
static fptq_status report_layer(job *J, int64_t l, double seconds, const char *digest, const char *losses)
{
    stage_note local, *np = J->rank == 0 ? &local : &J->notes[l];
    stage_note n;
    memset(&n, 0, sizeof n);
    n.kind = NOTE_LAYER;
    n.layer = l;
    n.stage = J->stage;
    n.seconds = seconds;
    snprintf(n.digest, sizeof n.digest, "%s", digest);
    if (strlen(losses) >= sizeof n.losses_json)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "layer %lld: manifest losses too long (%zu bytes)", (long long)l, strlen(losses));
    snprintf(n.losses_json, sizeof n.losses_json, "%s", losses);
    *np = n;
    if (J->rank == 0)
        return coordinator_layer_done(J, np);
    return fptq_world_post(J->w, 0, np, sizeof *np, NOTE_TAG);
}

/* Activations (backend memory) to and from another rank, through host
 * staging where the backend's memory is not the host's. */
static fptq_status send_acts(job *J, int dest, const float *x, size_t bytes)
{
    const void *src = x;
    if (!J->be->host_memory) {
        FPTQ_TRY(J->be->download(J->hx, x, bytes));
        src = J->hx;
    }
    return fptq_world_send(J->w, dest, src, bytes, HANDOFF_TAG);
}

static fptq_status recv_acts(job *J, int src, float *x, size_t bytes)
{
    if (J->be->host_memory)
        return fptq_world_recv(J->w, src, x, bytes, HANDOFF_TAG);
    FPTQ_TRY(fptq_world_recv(J->w, src, J->hx, bytes, HANDOFF_TAG));
    return J->be->upload(x, J->hx, bytes);
}

/* Activations between stages: rank (s, g) to rank (s + 1, g), after a
 * header that says whether the sender stopped early (then nothing follows). */
static fptq_status handoff_send(job *J, const float *x, int stopped)
{
    if (J->stage + 1 >= J->stages)
        return FPTQ_OK;
    const int dest = (J->stage + 1) * J->per_stage + J->member;
    int64_t hdr = stopped;
    FPTQ_TRY(fptq_world_send(J->w, dest, &hdr, sizeof hdr, HANDOFF_TAG));
    if (!stopped)
        FPTQ_TRY(send_acts(J, dest, x, (size_t)(J->n_seq * J->T * J->m.cfg.hidden_size) * sizeof(float)));
    return FPTQ_OK;
}

static fptq_status handoff_recv(job *J, float *x, int *stopped)
{
    *stopped = 0;
    if (J->stage == 0)
        return FPTQ_OK;
    const int src = (J->stage - 1) * J->per_stage + J->member;
    int64_t hdr;
    FPTQ_TRY(fptq_world_recv(J->w, src, &hdr, sizeof hdr, HANDOFF_TAG));
    *stopped = hdr != 0;
    if (!*stopped)
        FPTQ_TRY(recv_acts(J, src, x, (size_t)(J->n_seq * J->T * J->m.cfg.hidden_size) * sizeof(float)));
    fptq_debug("stage %d: input from stage %d received at %.2f s", J->stage, J->stage - 1, fptq_now() - J->t_start);
    return FPTQ_OK;
}

/* Full-precision forward of layers [l0, l1) in place on x (the stage-mode
 * pre-pass, and --propagate fp). */
static fptq_status forward_fp(job *J, int64_t l0, int64_t l1, float *x, int64_t n_seq)
{
    for (int64_t l = l0; l < l1; l++) {
        fptq_layer_weights *lw;
        fptq_dev_layer *dl;
        FPTQ_TRY(fptq_layer_stream_get(&J->ls, l, l + 1 < l1 ? l + 1 : -1, &lw, &dl));
        FPTQ_TRY(fptq_layer_forward(J->be, &J->m.cfg, &dl->w, &J->rt, x, n_seq, J->T, &J->ws, NULL));
    }
    return FPTQ_OK;
}

/* The full-precision pre-pass of --propagate stage / fp: stage s needs the
 * fp activations at its first layer b_s. Rank (s-1, g) and rank (s, g)
 * compute them together: (s-1, g) passes on its own fp input as soon as it
 * has it, then both run the layers [b_(s-1), b_s) in full precision on half
 * of the samples each, and (s-1, g) sends its half over. Stage s so waits
 * half as long, and stage s-1 loses half as much time, as with one of them
 * doing all of it. On return J->x holds this rank's fp input. */
static fptq_status fp_prepass(job *J)
{
    const fptq_backend *be = J->be;
    const int64_t H = J->m.cfg.hidden_size, T = J->T, half = J->n_seq / 2;
    const size_t row_bytes = (size_t)(T * H) * sizeof(float);
    const int prev = (J->stage - 1) * J->per_stage + J->member, next = (J->stage + 1) * J->per_stage + J->member;
    if (J->stage > 0) {
        /* the previous stage's input; this rank runs the second half of the samples */
        FPTQ_TRY(recv_acts(J, prev, J->xw, (size_t)J->n_seq * row_bytes));
        FPTQ_TRY(forward_fp(J, J->bounds[J->stage - 1], J->bounds[J->stage], J->xw + half * T * H, J->n_seq - half));
        FPTQ_TRY(be->mem_copy(J->x + half * T * H, J->xw + half * T * H, (size_t)(J->n_seq - half) * row_bytes));
        FPTQ_TRY(recv_acts(J, prev, J->x, (size_t)half * row_bytes));
        fptq_debug("stage %d: full-precision input ready at %.2f s", J->stage, fptq_now() - J->t_start);
    }
    if (J->stage + 1 < J->stages) {
        FPTQ_TRY(send_acts(J, next, J->x, (size_t)J->n_seq * row_bytes));
        FPTQ_TRY(be->mem_copy(J->xw, J->x, (size_t)half * row_bytes));
        FPTQ_TRY(forward_fp(J, J->bounds[J->stage], J->bounds[J->stage + 1], J->xw, half));
        FPTQ_TRY(send_acts(J, next, J->xw, (size_t)half * row_bytes));
    }
    return FPTQ_OK;
}

/* FPTQ_FAULT=kill:R:L makes world rank R kill itself with SIGKILL as it
 * starts layer L; fail:R:L makes it fail there with an error, as a bad
 * tensor would; term:R:L makes it raise SIGTERM just before layer L's file
 * is written. FPTQ_TEST_LAYER_DELAY_MS=N sleeps N ms before each layer, so
 * that a test's signal or time limit lands mid-job. The multi-rank and
 * Slurm tests use them; they do nothing unless set. */
static void fault_parse(job *J)
{
    const char *f = getenv("FPTQ_FAULT");
    J->fault[0] = '\0';
    long long layer;
    int rank;
    char kind[8];
    if (f && sscanf(f, "%4[a-z]:%d:%lld", kind, &rank, &layer) == 3 &&
        (strcmp(kind, "kill") == 0 || strcmp(kind, "fail") == 0 || strcmp(kind, "term") == 0)) {
        snprintf(J->fault, sizeof J->fault, "%s", kind);
        J->fault_rank = rank;
        J->fault_layer = layer;
    }
    const char *d = getenv("FPTQ_TEST_LAYER_DELAY_MS");
    J->delay_ms = d ? atol(d) : 0;
}

static fptq_status fault_point(const job *J, int64_t l)
{
    if (!J->fault[0] || J->fault[0] == 't' || J->fault_rank != J->rank || J->fault_layer != l)
        return FPTQ_OK;
    if (strcmp(J->fault, "kill") == 0) {
        fptq_warn("FPTQ_FAULT: rank %d kills itself (SIGKILL) at layer %lld", J->rank, (long long)l);
        raise(SIGKILL);
    }
    return FPTQ_FAIL(FPTQ_ERR_FORMAT, "FPTQ_FAULT: injected failure on rank %d at layer %lld", J->rank, (long long)l);
}

/* This rank's layers: quantize (or restore) each, write, hand off. */
static fptq_status run_stage_layers(job *J, int *stopped, int *ended, int *any_stopped)
{
    const llama_config *c = &J->m.cfg;
    const int64_t b = J->bounds[J->stage], e = J->bounds[J->stage + 1];
    int64_t done_now = 0;
    for (int64_t l = b; l < e; l++) {
        const double t0 = fptq_now();
        ckpt_layer cl;
        memset(&cl, 0, sizeof cl);
        fptq_status st = FPTQ_OK;
        int restored = ckpt_layer_done(J->ck, l);
        if (restored) {
            /* rebuild the output from what is stored; a file that fails its
             * digest (truncated, corrupted) is quantized again instead */
            int64_t bad = ckpt_read_layer(J->ck, l, &cl) != FPTQ_OK;
            if (bad)
                fptq_warn("layer %lld: %s; quantizing it again", (long long)l, fptq_last_error());
            fptq_clear_error();
            FPTQ_TRY(J->coll.allreduce(J->coll.ctx, &bad, 1, FPTQ_DT_I64, FPTQ_OP_MAX));
            if (bad) {
                ckpt_layer_free(&cl);
                memset(&cl, 0, sizeof cl);
                restored = 0;
            } else if (J->rank == 0) {
                J->res->layers_skipped++;
            } else if (J->member == 0) {
                /* the coordinator counts every stage's restored layers */
                stage_note *np = &J->notes[l];
                memset(np, 0, sizeof *np);
                np->kind = NOTE_RESTORED;
                np->layer = l;
                np->stage = J->stage;
                FPTQ_TRY(fptq_world_post(J->w, 0, np, sizeof *np, NOTE_TAG));
            }
        }
        if (!restored) {
            /* stop here, all ranks of the stage together, when asked to */
            int64_t stop = (J->o->max_layers > 0 && done_now >= J->o->max_layers) || stop_signo != 0;
            FPTQ_TRY(J->coll.allreduce(J->coll.ctx, &stop, 1, FPTQ_DT_I64, FPTQ_OP_MAX));
            if (stop) {
                *stopped = 1;
                break;
            }
            if (J->delay_ms > 0) {
                struct timespec ts = {J->delay_ms / 1000, (J->delay_ms % 1000) * 1000000L};
                nanosleep(&ts, NULL);
            }
            st = fault_point(J, l);
            /* the next layer to quantize loads while this one is quantized */
            const int64_t next = l + 1 < e && !ckpt_layer_done(J->ck, l + 1) ? l + 1 : -1;
            fptq_layer_weights *lw = NULL;
            fptq_dev_layer *dl = NULL;
            if (st == FPTQ_OK)
                st = fptq_layer_stream_get(&J->ls, l, next, &lw, &dl);
            if (st == FPTQ_OK)
                st = quantize_layer(&J->m, &J->lj, l, lw, dl, J->x, J->xw, J->n_seq, J->T, &J->rt, &J->ws, &cl);
            fptq_layer_stream_changed(&J->ls, l);
            cl.seconds = fptq_now() - t0;
            if (st == FPTQ_OK && J->fault[0] == 't' && J->fault_rank == J->rank && J->fault_layer == l) {
                fptq_warn("FPTQ_FAULT: rank %d raises SIGTERM as layer %lld is written", J->rank, (long long)l);
                raise(SIGTERM);
            }
            if (st == FPTQ_OK && J->member == 0) {
                char digest[65], *losses = NULL;
                st = ckpt_write_layer_file(J->ck, &cl, digest, &losses);
                if (st == FPTQ_OK)
                    st = report_layer(J, l, cl.seconds, digest, losses);
                free(losses);
            }
            if (st == FPTQ_OK) {
                done_now++;
                for (int id = 0; id < LIN_COUNT; id++)
                    J->res->loss[id] += cl.lin[id].loss;
            }
        }
        /* the hand-off: the next layer's input. Without folds the calibration
         * pass already ran the stored layer's exact weights (dequantized codes,
         * same norms and activation scales) through the same code, so its
         * output is taken as it is; folds change the rounding of the norms
         * and weights, so then the stored layer runs again, as on resume. */
        const int reuse = st == FPTQ_OK && !restored && J->r.propagate != PROPAGATE_FP &&
                          J->r.method != METHOD_AWQ && J->r.smoothquant_alpha < 0.0f;
        if (reuse) {
            float *t = J->x;
            J->x = J->xw;
            J->xw = t;
        } else if (st == FPTQ_OK) {
            fptq_layer_weights *lw;
            fptq_dev_layer *dl;
            if (J->r.propagate == PROPAGATE_FP) {
                st = fptq_layer_stream_get(&J->ls, l, -1, &lw, &dl);
            } else {
                fptq_layer_stream_scratch(&J->ls, &lw, &dl);
                st = fptq_layer_from_ckpt(c, &cl, lw);
                if (st == FPTQ_OK)
                    st = fptq_dev_layer_upload(dl, c, lw);
            }
            if (st == FPTQ_OK)
                st = fptq_layer_forward(J->be, c, &dl->w, &J->rt, J->x, J->n_seq, J->T, &J->ws, NULL);
        }
        ckpt_layer_free(&cl);
        if (st != FPTQ_OK) {
            fptq_error_context("layer %lld", (long long)l);
            return st;
        }
        fptq_debug("stage %d: layer %lld %s at %.2f s", J->stage, (long long)l, restored ? "restored" : "quantized",
                   fptq_now() - J->t_start);
        FPTQ_TRY(coordinator_poll(J, ended, any_stopped));
    }
    return FPTQ_OK;
}

/* Rank 0 alone: recipe, provenance, checkpoint created or checked for resume, shared tensors. */
static fptq_status coordinator_open(job *J, char **recipe_json)
{
    const fptq_quantize_opts *o = J->o;
    char *provenance_json = NULL, *config_json = NULL;
    fptq_status st;
    *recipe_json = fptq_recipe_json(&J->r);
    FPTQ_TRY_GOTO(make_provenance(&J->m, o, J->w ? J->w->size : 1, J->stages, &provenance_json), st, done);
    char cfg_path[sizeof J->m.dir + 16];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", o->model_dir);
    int64_t config_len;
    FPTQ_TRY_GOTO(fptq_read_file(cfg_path, "config", FPTQ_JSON_MAX_BYTES, 0, &config_json, &config_len), st, done);
    /* under the lock (job_run): index.h5 there or not decides, and stays so */
    char idx_path[4096 + 16];
    snprintf(idx_path, sizeof idx_path, "%s/index.h5", o->out_dir);
    struct stat sb;
    if (stat(idx_path, &sb) == 0) {
        FPTQ_TRY_GOTO(ckpt_open_resume(o->out_dir, &J->ck), st, done);
        FPTQ_TRY_GOTO(check_resume(J->ck, o->out_dir, *recipe_json, provenance_json), st, done);
        FPTQ_TRY_GOTO(check_resume_readable(J->ck, o->out_dir, &J->m, config_json), st, done);
        warn_layout_change(J->ck, J->w ? J->w->size : 1, J->stages);
        if (ckpt_shared_problem(J->ck))
            fptq_warn("%s; writing it again from the model", ckpt_shared_problem(J->ck));
    } else {
        ckpt_meta meta = {.config_json = config_json, .recipe_json = *recipe_json,
                          .provenance_json = provenance_json, .n_layers = J->m.cfg.num_hidden_layers};
        FPTQ_TRY_GOTO(ckpt_create(o->out_dir, &meta, &J->ck), st, done);
        if (o->resume)
            fptq_info("--resume: %s did not exist yet: started a new checkpoint", o->out_dir);
    }
    if (!ckpt_has_shared(J->ck))
        FPTQ_TRY_GOTO(write_shared(J->ck, &J->m), st, done);
    FPTQ_TRY_GOTO(check_shared_tensors(J->ck, o->out_dir, &J->m), st, done);
    st = FPTQ_OK;
done:
    free(provenance_json);
    free(config_json);
    return st;
}

/* Layer ranges per stage, planned by rank 0 and broadcast. */
static fptq_status plan_stages(job *J)
{
    const int64_t L = J->m.cfg.num_hidden_layers;
    FPTQ_TRY(fptq_calloc((size_t)J->stages + 1, sizeof(int64_t), "stage bounds", &J->bounds));
    if (J->rank == 0) {
        double *cost;
        FPTQ_TRY(fptq_calloc((size_t)L, sizeof(double), "layer costs", &cost));
        for (int64_t l = 0; l < L; l++)
            cost[l] = shard_layer_cost(&J->m.cfg, J->r.calib_samples * J->T);
        fptq_status st = shard_plan_stages(cost, L, J->stages, J->bounds);
        free(cost);
        FPTQ_TRY(st);
    }
    if (J->w)
        FPTQ_TRY(fptq_world_bcast(J->w, J->bounds, (size_t)(J->stages + 1) * sizeof(int64_t), 0));
    return FPTQ_OK;
}

void fptq_quantize_device_estimate(const llama_config *c, int64_t samples, int64_t seqlen, int per_stage, int member,
                                   int slots, int64_t micro_seqs, fptq_device_estimate *e)
{
    const double f = 4.0, H = (double)c->hidden_size;
    const int64_t rows = samples * seqlen;
    int64_t mc, mw, gcols[LGROUP_COUNT];
    fptq_layer_extents(c, &mc, &mw, gcols);
    const double max_cols = (double)mc, r = (double)rows;
    const double share = (double)layer_job_max_share(c, per_stage, member);
    memset(e, 0, sizeof *e);
    e->slots = slots;
    e->activations = 2.0 * r * H * f;
    e->samples = samples;
    e->micro_seqs = micro_seqs > 0 && micro_seqs < samples ? micro_seqs : samples;
    e->workspace = fptq_forward_ws_bytes(0, c, e->micro_seqs * seqlen);
    e->weights = (double)slots * (double)shard_layer_params(c) * f;
    e->statistics = max_cols * max_cols * f + max_cols * 12.0; /* one group's at a time */
    /* this rank's rows of a linear (Wf, Qpart, GPTQ's work copy), GPTQ's
     * factor, the proxy loss's scratch (row chunks of 2^27 elements) and
     * attention's (2^28 scores at most) */
    const double T = (double)seqlen, nkv = (double)c->num_key_value_heads;
    const double loss_scratch = 2.0 * f * (share < 134217728.0 ? share : 134217728.0);
    const double attn_scratch = f * (nkv * T * T < 268435456.0 ? nkv * T * T : 268435456.0);
    e->quantizer = 3.0 * share * f + max_cols * max_cols * f + loss_scratch + attn_scratch;
    e->total = e->activations + e->workspace + e->weights + e->statistics + e->quantizer;
}

void fptq_device_estimate_text(const fptq_device_estimate *e, char *buf, size_t cap)
{
    char b[5][32];
    const double v[5] = {e->activations, e->workspace, e->weights, e->statistics, e->quantizer};
    for (int i = 0; i < 5; i++)
        fptq_format_bytes(v[i], b[i], sizeof b[i]);
    char micro[64];
    if (e->micro_seqs < e->samples)
        snprintf(micro, sizeof micro, "micro-batches of %lld samples", (long long)e->micro_seqs);
    else
        snprintf(micro, sizeof micro, "%lld samples at once", (long long)e->samples);
    snprintf(buf, cap, "activations %s, forward workspace %s (%s), %d layer buffer(s) %s, statistics %s, quantizer %s",
             b[0], b[1], micro, e->slots, b[2], b[3], b[4]);
}

/* The forward's micro-batch (J->micro), and the backend memory this rank
 * holds (fptq_quantize_device_estimate) checked against what the device has
 * free before anything is allocated, so that a job that cannot fit says why
 * at once instead of failing at its first large allocation. On a device the
 * whole batch runs in one pass where it fits, else in the largest
 * micro-batches that fit (FPTQ_MICRO_SEQS sets them). */
static fptq_status check_device_memory(job *J, int64_t rows)
{
    const fptq_backend *be = J->be;
    const llama_config *c = &J->m.cfg;
    FPTQ_TRY(fptq_forward_check_env());
    J->micro = fptq_forward_micro_seqs(be->host_memory, c, J->n_seq, J->T, 0.0);
    if (be->host_memory || !be->mem_info)
        return FPTQ_OK;
    const char *env = getenv("FPTQ_PREFETCH");
    const int slots = env && strcmp(env, "0") == 0 ? 1 : 2;
    size_t free_b = 0, total_b = 0;
    FPTQ_TRY(be->mem_info(&free_b, &total_b));
    fptq_device_estimate e;
    fptq_quantize_device_estimate(c, J->n_seq, J->T, J->per_stage, J->member, slots, J->micro, &e);
    /* the estimate leaves out the CUDA libraries' workspaces: 5% of the GPU kept for them */
    const double headroom = 0.05 * (double)total_b;
    const char *micro_env = getenv("FPTQ_MICRO_SEQS");
    if (e.total + headroom > (double)free_b && !(micro_env && *micro_env)) {
        /* what the rest leaves for the forward's workspace */
        const int64_t m =
            fptq_forward_micro_seqs(0, c, J->n_seq, J->T, (double)free_b - headroom - (e.total - e.workspace));
        J->micro = m > 0 ? m : 1;
        fptq_quantize_device_estimate(c, J->n_seq, J->T, J->per_stage, J->member, slots, J->micro, &e);
    }
    char parts[512], need[32], fr[32], tot[32];
    fptq_device_estimate_text(&e, parts, sizeof parts);
    fptq_format_bytes(e.total, need, sizeof need);
    fptq_format_bytes((double)free_b, fr, sizeof fr);
    fptq_format_bytes((double)total_b, tot, sizeof tot);
    if (e.total > (double)free_b)
        return FPTQ_FAIL(FPTQ_ERR_NOMEM,
                         "rank %d: the GPU has %s of %s free, and this rank needs at least %s (%s) for %lld "
                         "calibration tokens; use more ranks per stage (each holds fewer samples), fewer "
                         "--calib-samples, or FPTQ_PREFETCH=0 (one layer buffer)",
                         J->rank, fr, tot, need, parts, (long long)rows);
    if (J->o->progress && J->rank == 0)
        fptq_info("device memory: about %s of %s free (%s)", need, fr, parts);
    return FPTQ_OK;
}

static fptq_status job_run(job *J)
{
    const fptq_quantize_opts *o = J->o;
    const llama_config *c = &J->m.cfg;
    fptq_tokens tok = {0};
    int32_t *ids = NULL;
    char *recipe_json = NULL;
    fptq_status st;

    /* Before any work: the checkpoint's lock, taken by rank 0 for the world
     * (the others write only layer files, under temporary names of their own,
     * and live no longer than rank 0: a failing rank brings the world down),
     * and --out writable. A run that cannot have it changes nothing. */
    int locked = 1;
    st = FPTQ_OK;
    if (J->rank == 0) {
        st = ckpt_lock_take(o->out_dir, o->resume, &J->lock);
        locked = st == FPTQ_OK;
    }
    if (J->w) {
        fptq_status bs = fptq_world_bcast(J->w, &locked, sizeof locked, 0);
        if (st == FPTQ_OK)
            st = bs;
    }
    if (st == FPTQ_OK && !locked)
        st = FPTQ_FAIL(FPTQ_ERR_COMM, "rank 0 could not take checkpoint %s", o->out_dir);
    if (st != FPTQ_OK)
        return st;
    FPTQ_TRY(fptq_model_open(o->model_dir, &J->m));
    if (J->r.calib_seqlen == 0)
        J->r.calib_seqlen = c->max_position_embeddings < 2048 ? c->max_position_embeddings : 2048;
    char calib_what[4200];
    if (o->calib_text) {
        /* every rank tokenizes the same text the same way: no broadcast needed */
        fptq_text_source src = *o->calib_text;
        fptq_text_stats ts;
        src.max_tokens = J->r.calib_samples * J->r.calib_seqlen;
        FPTQ_TRY_GOTO(fptq_tokens_from_text(o->model_dir, c->vocab_size, &src, &tok, &ts, NULL), st, done);
        if (o->progress)
            fptq_info("calibration text: %s: %lld documents%s, %lld tokens (bos %s), tokenized in %.2f s", o->calib_path,
                      (long long)ts.documents, ts.stopped_early ? " (enough tokens before the end)" : "",
                      (long long)ts.tokens, fptq_bos_policy_name(src.bos), ts.seconds);
        snprintf(calib_what, sizeof calib_what, "%s (tokenized)", o->calib_path);
    } else {
        FPTQ_TRY_GOTO(tokens_load(o->calib_path, c->vocab_size, &tok), st, done);
        snprintf(calib_what, sizeof calib_what, "%s", o->calib_path);
    }
    if (J->r.calib_seqlen > c->max_position_embeddings) {
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "--calib-seqlen %lld is longer than the model's context (max_position_embeddings %lld)",
                       (long long)J->r.calib_seqlen, (long long)c->max_position_embeddings);
        goto done;
    }
    J->T = J->r.calib_seqlen;
    FPTQ_TRY_GOTO(fptq_calib_samples(&tok, J->r.calib_samples, J->T, calib_what, &ids), st, done);
    if (J->r.calib_samples < J->per_stage) {
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "--calib-samples %lld is fewer than the %d ranks of a stage: every rank needs a sample",
                       (long long)J->r.calib_samples, J->per_stage);
        goto done;
    }
    int64_t s0, s1;
    shard_split_range(J->r.calib_samples, J->per_stage, J->member, &s0, &s1);
    J->n_seq = s1 - s0;
    FPTQ_TRY_GOTO(plan_stages(J), st, done);
    /* before any file is made: a job that cannot fit changes nothing */
    FPTQ_TRY_GOTO(check_device_memory(J, J->n_seq * J->T), st, done);

    /* rank 0 makes or checks the checkpoint; the others open it after */
    int ok = 1;
    if (J->rank == 0) {
        st = coordinator_open(J, &recipe_json);
        ok = st == FPTQ_OK;
    }
    if (J->w)
        FPTQ_TRY_GOTO(fptq_world_bcast(J->w, &ok, sizeof ok, 0), st, done);
    if (!ok) {
        if (J->rank == 0)
            goto done; /* st holds rank 0's failure; main reports it and brings the world down */
        st = FPTQ_FAIL(FPTQ_ERR_COMM, "rank 0 could not prepare checkpoint %s", o->out_dir);
        goto done;
    }
    if (J->rank != 0) /* rank 0 has checked shared.h5: the others use layers only */
        FPTQ_TRY_GOTO(ckpt_open_layers(o->out_dir, &J->ck), st, done);

    const int64_t rows = J->n_seq * J->T, L = c->num_hidden_layers;
    FPTQ_TRY_GOTO(fptq_calloc((size_t)L, sizeof(stage_note), "progress notes", &J->notes), st, done);
    const size_t xbytes = (size_t)(rows * c->hidden_size) * sizeof(float);
    const fptq_backend *be = J->be;
    FPTQ_TRY_GOTO(be->mem_alloc(xbytes, "calibration activations", (void **)&J->x), st, done);
    FPTQ_TRY_GOTO(be->mem_alloc(xbytes, "calibration work copy", (void **)&J->xw), st, done);
    if (!be->host_memory)
        FPTQ_TRY_GOTO(fptq_calloc(xbytes, 1, "calibration activations (host staging)", &J->hx), st, done);
    FPTQ_TRY_GOTO(fptq_layer_stream_init(&J->ls, be, &J->m), st, done);
    FPTQ_TRY_GOTO(fptq_forward_ws_alloc(be, c, J->micro * J->T, &J->ws), st, done);
    const rope_params rp = fptq_rope_params(c);
    FPTQ_TRY_GOTO(rope_table_init(&rp, J->T, &J->rt), st, done);
    FPTQ_TRY_GOTO(layer_job_init(&J->lj, be, &J->coll, &J->dcoll, &J->r, c), st, done);
    FPTQ_TRY_GOTO(fptq_embed(&J->m, ids + s0 * J->T, rows, be->host_memory ? J->x : J->hx), st, done);
    if (!be->host_memory)
        FPTQ_TRY_GOTO(be->upload(J->x, J->hx, xbytes), st, done);
    for (int64_t l = 0; l < L; l++)
        J->pending_at_start += !ckpt_layer_done(J->ck, l);
    if (o->progress && J->rank == 0) {
        char be_name[128];
        fptq_backend_describe(J->be, be_name, sizeof be_name);
        fptq_info("quantize: %s, %lld layers, %s %s g%lld%s, calibration %lld x %lld tokens, backend %s%s%s",
                  o->model_dir, (long long)L, J->r.scheme, fptq_method_name(J->r.method),
                  (long long)J->r.weight.group_size, J->r.act_order ? " act-order" : "",
                  (long long)J->r.calib_samples, (long long)J->T, be_name,
                  J->dcoll_kind ? ", statistics reduced " : "",
                  J->dcoll_kind == 2 ? "with NCCL" : J->dcoll_kind == 1 ? "through the host (MPI)" : "");
        if (J->micro < J->n_seq)
            fptq_info("  forward in micro-batches of %lld of the rank's %lld samples (each group's input "
                      "recomputed per micro-batch)", (long long)J->micro, (long long)J->n_seq);
        if (J->w && J->w->size > 1)
            for (int s = 0; s < J->stages; s++)
                fptq_info("  stage %d: layers %lld..%lld on ranks %d..%d", s, (long long)J->bounds[s],
                          (long long)J->bounds[s + 1] - 1, s * J->per_stage, (s + 1) * J->per_stage - 1);
    }

    int stopped = 0, ended = 0, any_stopped = 0;
    if (J->r.propagate == PROPAGATE_QUANTIZED) {
        /* stages one after another: each starts from the previous one's quantized output */
        FPTQ_TRY_GOTO(handoff_recv(J, J->x, &stopped), st, done);
        if (!stopped)
            FPTQ_TRY_GOTO(run_stage_layers(J, &stopped, &ended, &any_stopped), st, done);
        FPTQ_TRY_GOTO(handoff_send(J, J->x, stopped), st, done);
    } else {
        /* full-precision pre-pass through the earlier stages, then all stages at once */
        if (J->w)
            FPTQ_TRY_GOTO(fp_prepass(J), st, done);
        FPTQ_TRY_GOTO(run_stage_layers(J, &stopped, &ended, &any_stopped), st, done);
    }

    /* the coordinator hears every stage out, then seals the result */
    if (J->w && J->member == 0 && J->rank != 0) {
        stage_note n = {.kind = NOTE_STAGE_END, .stage = J->stage, .stopped = stopped};
        FPTQ_TRY_GOTO(fptq_world_send(J->w, 0, &n, sizeof n, NOTE_TAG), st, done);
        FPTQ_TRY_GOTO(fptq_world_flush(J->w), st, done);
    }
    if (J->rank == 0) {
        ended++;   /* stage 0, this rank's own */
        any_stopped |= stopped;
        while (J->w && ended < J->stages) {
            stage_note n;
            FPTQ_TRY_GOTO(fptq_world_note_wait(J->w, NOTE_TAG, &n, sizeof n), st, done);
            if (n.kind == NOTE_LAYER) {
                FPTQ_TRY_GOTO(coordinator_layer_done(J, &n), st, done);
            } else if (n.kind == NOTE_RESTORED) {
                J->res->layers_skipped++;
            } else {
                ended++;
                any_stopped |= n.stopped != 0;
            }
        }
        J->res->stopped_early = any_stopped;
        J->res->stop_signal = stop_signo;
        if (!any_stopped)
            FPTQ_TRY_GOTO(ckpt_digest(J->ck, J->res->digest), st, done);
    }
    if (J->w) {
        int64_t s = J->res->stopped_early;
        FPTQ_TRY_GOTO(fptq_world_bcast(J->w, &s, sizeof s, 0), st, done);
        J->res->stopped_early = (int)s;
    }
    J->res->layers_total = L;
    st = FPTQ_OK;
done:
    free(recipe_json);
    free(ids);
    tokens_free(&tok);
    return st;
}

/* The collectives for statistics in the backend's memory: the host ones on
 * the CPU or for one rank; NCCL between GPUs where fptq was built with it
 * (FPTQ_NCCL=0 turns it off), else staged through the host and MPI. */
static fptq_status device_collectives(job *J)
{
    J->dcoll = J->coll;
    J->dcoll_kind = 0;
    if (J->be->host_memory || J->coll.size == 1)
        return FPTQ_OK;
    const char *env = getenv("FPTQ_NCCL");
    int want_nccl = !(env && strcmp(env, "0") == 0);
    /* NCCL wants one GPU per member: ranks that share a GPU reduce through the host */
    const int devices = fptq_backend_devices(J->be);
    int64_t shared = J->w && (J->w->node_size > devices);
    FPTQ_TRY(J->coll.allreduce(J->coll.ctx, &shared, 1, FPTQ_DT_I64, FPTQ_OP_MAX));
    if (shared && want_nccl) {
        if (J->rank == 0)
            fptq_warn("more ranks than GPUs on a node: ranks share GPUs, and their statistics are reduced "
                      "through the host instead of with NCCL");
        want_nccl = 0;
    }
#ifdef FPTQ_HAVE_NCCL
    if (want_nccl) {
        /* the stage's member 0 makes the id; MPI carries it to the others */
        unsigned char id[256];
        const size_t id_bytes = fptq_nccl_id_bytes();
        if (id_bytes > sizeof id)
            return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "NCCL unique id of %zu bytes", id_bytes);
        int64_t ok = 1;
        if (J->member == 0) {
            fptq_status st = fptq_nccl_make_id(id, sizeof id);
            if (st != FPTQ_OK) {
                fptq_warn("NCCL: %s; statistics go through the host instead", fptq_last_error());
                fptq_clear_error();
                ok = 0;
            }
        }
        FPTQ_TRY(J->coll.broadcast(J->coll.ctx, &ok, sizeof ok, 0));
        if (ok) {
            FPTQ_TRY(J->coll.broadcast(J->coll.ctx, id, id_bytes, 0));
            FPTQ_TRY(fptq_nccl_init(id, id_bytes, J->member, J->per_stage, J->w ? J->w->node_rank : 0, &J->dcoll));
            J->dcoll_kind = 2;
            return FPTQ_OK;
        }
    }
#else
    if (want_nccl && J->rank == 0)
        fptq_info("statistics between GPUs go through the host (MPI): this build has no NCCL");
#endif
    FPTQ_TRY(fptq_collectives_staged(J->be, &J->coll, &J->dcoll));
    J->dcoll_kind = 1;
    return FPTQ_OK;
}

fptq_status fptq_quantize(const fptq_backend *be, fptq_world *w, const fptq_quantize_opts *o, fptq_quantize_result *res)
{
    memset(res, 0, sizeof *res);
    job *J;
    FPTQ_TRY(fptq_calloc(1, sizeof *J, "job", &J));
    J->be = be;
    J->w = w && w->size > 1 ? w : NULL;
    J->o = o;
    J->r = o->recipe;
    J->res = res;
    J->t_start = fptq_now();
    fault_parse(J);
    fptq_status st = FPTQ_OK;
    if (J->w) {
        shard_grid g;
        llama_config probe;
        char cfg_path[4096 + 16];
        snprintf(cfg_path, sizeof cfg_path, "%s/config.json", o->model_dir);
        st = llama_config_load(cfg_path, &probe);
        if (st == FPTQ_OK)
            st = shard_grid_make(w->size, o->stages, w->n_nodes, probe.num_hidden_layers, &g);
        if (st == FPTQ_OK)
            st = fptq_world_set_grid(w, g.stages);
        J->rank = w->rank;
        J->stage = w->stage;
        J->member = w->member;
        J->stages = w->stages;
        J->per_stage = w->per_stage;
        J->coll = w->stage_coll;
    } else {
        if (o->stages > 1)
            st = FPTQ_FAIL(FPTQ_ERR_ARG, "--stages %d needs as many ranks at least (run under mpirun)", o->stages);
        J->stages = J->per_stage = 1;
        fptq_collectives_single(&J->coll);
    }
    if (st == FPTQ_OK)
        st = fptq_backend_bind(be, w ? w->node_rank : 0);
    if (st == FPTQ_OK)
        st = device_collectives(J);
    if (st == FPTQ_OK)
        st = job_run(J);
    res->seconds = fptq_now() - J->t_start;
    layer_job_free(&J->lj);
    rope_table_free(&J->rt);
    fptq_forward_ws_free(&J->ws);
    fptq_layer_stream_free(&J->ls);
    be->mem_free(J->x);
    be->mem_free(J->xw);
    free(J->hx);
    if (J->dcoll_kind == 1)
        fptq_collectives_staged_free(&J->dcoll);
#ifdef FPTQ_HAVE_NCCL
    if (J->dcoll_kind == 2)
        fptq_nccl_free(&J->dcoll);
#endif
    free(J->bounds);
    free(J->notes);
    ckpt_close(J->ck);
    ckpt_lock_release(J->lock);
    fptq_model_close(&J->m);
    free(J);
    return st;
}
