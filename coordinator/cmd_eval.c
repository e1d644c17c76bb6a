/*
 * `fptq eval`: perplexity of a model directory on a token file, with the
 * window protocol of the golden numbers; text or JSON on stdout, progress
 * on stderr.
 */
#define _GNU_SOURCE /* getopt_long */
#include "cli.h"

#include "../io/npy.h"
#include "../worker/eval.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void eval_usage(FILE *f)
{
    fprintf(f,
            "usage: fptq eval (--model DIR | --checkpoint CKPT) --tokens FILE.npy [options]\n"
            "\n"
            "  --model DIR        Hugging Face model directory (config.json + safetensors)\n"
            "  --checkpoint CKPT  an fptq checkpoint (the quantized model; no model directory needed)\n"
            "  --tokens FILE.npy  token ids (int32/int64/uint16/uint32, 1-D or 2-D, read flat)\n"
            "  --seqlen T         tokens per window (default 2048, capped by the model's context)\n"
            "  --windows N        number of consecutive windows (default 16)\n"
            "  --start S          first token of the first window (default 0)\n"
            "  --batch B          windows per forward batch; bounds memory (default 16)\n"
            "  --backend NAME     cpu, cuda or auto (default auto)\n"
            "  --json             print one JSON object instead of the text line\n"
            "  --quiet            no progress on stderr\n"
            "  --verbose          progress per layer, error traces\n"
            "\n"
            "Each window is evaluated from position 0 and predicts its tokens 1..T-1;\n"
            "ppl = exp(mean NLL over windows x (T-1) predictions).\n"
            "\n"
            "Exit status: 0 done, 1 failed (a checkpoint that is unfinished or fails its digests included,\n"
            "as for fptq export), 2 bad command line.\n");
}

typedef struct eval_args {
    const char *model, *checkpoint, *tokens, *backend;
    int64_t seqlen, windows, start, batch;
    int json, verbosity; /* 0 quiet, 1 default, 2 verbose */
} eval_args;

static fptq_status parse_args(int argc, char **argv, eval_args *a, int *help)
{
    enum { O_MODEL = 1000, O_CKPT, O_TOKENS, O_SEQLEN, O_WINDOWS, O_START, O_BATCH, O_BACKEND, O_JSON, O_QUIET, O_VERBOSE };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},     {"tokens", required_argument, 0, O_TOKENS},
        {"checkpoint", required_argument, 0, O_CKPT},
        {"seqlen", required_argument, 0, O_SEQLEN},   {"windows", required_argument, 0, O_WINDOWS},
        {"start", required_argument, 0, O_START},     {"batch", required_argument, 0, O_BATCH},
        {"backend", required_argument, 0, O_BACKEND}, {"json", no_argument, 0, O_JSON},
        {"quiet", no_argument, 0, O_QUIET},           {"verbose", no_argument, 0, O_VERBOSE},
        {"help", no_argument, 0, 'h'},                {0, 0, 0, 0},
    };
    *a = (eval_args){.backend = "auto", .seqlen = 0, .windows = 16, .start = 0, .batch = 16, .verbosity = 1};
    *help = 0;
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: a->model = optarg; break;
        case O_CKPT: a->checkpoint = optarg; break;
        case O_TOKENS: a->tokens = optarg; break;
        case O_SEQLEN: FPTQ_TRY(cli_parse_i64("--seqlen", optarg, 2, &a->seqlen)); break;
        case O_WINDOWS: FPTQ_TRY(cli_parse_i64("--windows", optarg, 1, &a->windows)); break;
        case O_START: FPTQ_TRY(cli_parse_i64("--start", optarg, 0, &a->start)); break;
        case O_BATCH: FPTQ_TRY(cli_parse_i64("--batch", optarg, 1, &a->batch)); break;
        case O_BACKEND: a->backend = optarg; break;
        case O_JSON: a->json = 1; break;
        case O_QUIET: a->verbosity = 0; break;
        case O_VERBOSE: a->verbosity = 2; break;
        case 'h': *help = 1; return FPTQ_OK;
        default:
            return FPTQ_FAIL(FPTQ_ERR_ARG, "fptq eval: unknown option or missing value '%s' (see fptq eval --help)",
                             argv[optind - 1]);
        }
    }
    if (optind < argc)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "fptq eval: unexpected argument '%s'", argv[optind]);
    if (!a->model == !a->checkpoint)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "fptq eval: --model DIR or --checkpoint CKPT is required (one of them)");
    if (!a->tokens)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "fptq eval: --tokens FILE.npy is required");
    return FPTQ_OK;
}

static void print_json(const eval_args *a, const fptq_model *m, const char *backend,
                       const fptq_eval_result *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, a->model ? "model" : "checkpoint", a->model ? a->model : a->checkpoint);
    cJSON_AddStringToObject(o, "tokens", a->tokens);
    cJSON_AddStringToObject(o, "backend", backend);
    cJSON_AddNumberToObject(o, "layers", (double)m->cfg.num_hidden_layers);
    cJSON_AddNumberToObject(o, "windows", (double)a->windows);
    cJSON_AddNumberToObject(o, "seqlen", (double)a->seqlen);
    cJSON_AddNumberToObject(o, "start", (double)a->start);
    cJSON_AddNumberToObject(o, "predicted", (double)r->predicted);
    cJSON_AddNumberToObject(o, "nll", r->nll);
    cJSON_AddNumberToObject(o, "ppl", r->ppl);
    cJSON_AddNumberToObject(o, "seconds", r->seconds);
    char *s = cJSON_PrintUnformatted(o);
    if (s)
        printf("%s\n", s);
    free(s);
    cJSON_Delete(o);
}

int cmd_eval(int argc, char **argv)
{
    eval_args a;
    int help;
    fptq_status st = parse_args(argc, argv, &a, &help);
    if (help) {
        eval_usage(stdout);
        return FPTQ_EXIT_OK;
    }
    if (st != FPTQ_OK)
        return cli_report(st);
    fptq_log_set_level(a.verbosity == 0 ? FPTQ_LOG_WARN : a.verbosity == 2 ? FPTQ_LOG_DEBUG : FPTQ_LOG_INFO);

    fptq_model m = {0};
    fptq_tokens tok = {0};
    const fptq_backend *be = NULL;
    fptq_eval_result r = {0};
    FPTQ_TRY_GOTO(fptq_backend_select(a.backend, &be), st, done);
    FPTQ_TRY_GOTO(fptq_backend_bind(be, 0), st, done);
    if (a.model)
        FPTQ_TRY_GOTO(fptq_model_open(a.model, &m), st, done);
    else
        FPTQ_TRY_GOTO(fptq_model_open_checkpoint(a.checkpoint, &m), st, done);
    FPTQ_TRY_GOTO(tokens_load(a.tokens, m.cfg.vocab_size, &tok), st, done);
    if (a.seqlen == 0)
        a.seqlen = m.cfg.max_position_embeddings < 2048 ? m.cfg.max_position_embeddings : 2048;

    fptq_eval_opts o = {.start = a.start, .seqlen = a.seqlen, .windows = a.windows, .batch = a.batch,
                        .progress = a.verbosity == 0 ? 0 : (a.verbosity == 2 || m.cfg.hidden_size >= 1024) ? 2 : 1};
    char be_name[128];
    fptq_backend_describe(be, be_name, sizeof be_name);
    if (a.verbosity)
        fptq_info("eval: %s, %lld layers, %lld windows x %lld tokens from %lld, backend %s", m.dir,
                  (long long)m.cfg.num_hidden_layers, (long long)a.windows, (long long)a.seqlen,
                  (long long)a.start, be_name);
    FPTQ_TRY_GOTO(fptq_eval_perplexity(be, &m, tok.ids, tok.n_tokens, &o, &r), st, done);

    if (a.json)
        print_json(&a, &m, be->name, &r);
    else
        printf("windows=%lld W=%lld start=%lld predicted=%lld nll=%.6f ppl=%.6f\n", (long long)a.windows,
               (long long)a.seqlen, (long long)a.start, (long long)r.predicted, r.nll, r.ppl);
done:
    tokens_free(&tok);
    fptq_model_close(&m);
    return cli_report(st);
}
