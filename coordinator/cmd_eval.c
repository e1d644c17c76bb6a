/*
 * `fptq eval`: perplexity of a model directory on a token file, with the
 * window protocol of the golden numbers; text or JSON on stdout, progress
 * on stderr.
 */
#define _GNU_SOURCE /* getopt_long */
#include "cli.h"

#include "../io/checkpoint.h"
#include "../io/npy.h"
#include "../io/tokenizer.h"
#include "../worker/eval.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void eval_usage(FILE *f)
{
    fprintf(f,
            "usage: fptq eval (--model DIR | --checkpoint CKPT) (--tokens FILE.npy | --text FILE | --jsonl FILE --field NAME)\n"
            "                 [options]\n"
            "\n"
            "  --model DIR        Hugging Face model directory (config.json + safetensors)\n"
            "  --checkpoint CKPT  an fptq checkpoint (the quantized model; no model directory needed)\n"
            "  --tokens FILE.npy  token ids (int32/int64/uint16/uint32, 1-D or 2-D, read flat)\n"
            "  --text FILE        text, tokenized with the model's tokenizer.json (as fptq tokenize does):\n"
            "                     one document, or several with --doc-sep, their ids one after another\n"
            "  --jsonl FILE       documents, the string --field NAME of each JSON line\n"
            "  --doc-sep STRING   --text: split into documents on STRING (escapes \\n \\t \\r \\\\)\n"
            "  --bos auto|yes|no  text: BOS as the post-processor adds it (auto, default), one per document\n"
            "                     (yes), none (no)\n"
            "  --reference DIR    also the unquantized model DIR on the same windows: its perplexity, the\n"
            "                     KL divergence of this model's next-token distribution from its (mean,\n"
            "                     median, p90, p99, max), top-token agreement, RMS change of p(true token)\n"
            "  --tokenizer DIR    the tokenizer.json of DIR (default: --model DIR, or for a checkpoint the\n"
            "                     model directory it was made from)\n"
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
            "ppl = exp(mean NLL over windows x (T-1) predictions). The WikiText-2 protocol of the\n"
            "GPTQ and AWQ papers: --text wiki.test.raw (one document: the test split joined by \"\\n\\n\",\n"
            "one BOS where the tokenizer adds one), --seqlen 2048, --windows as many as fit.\n"
            "\n"
            "Exit status: 0 done, 1 failed (a checkpoint that is unfinished or fails its digests included,\n"
            "as for fptq export), 2 bad command line.\n");
}

typedef struct eval_args {
    const char *model, *checkpoint, *tokens, *backend, *tokenizer, *sep_arg, *reference;
    fptq_text_source text;
    int64_t seqlen, windows, start, batch;
    int json, verbosity; /* 0 quiet, 1 default, 2 verbose */
} eval_args;

static fptq_status parse_args(int argc, char **argv, eval_args *a, int *help)
{
    enum { O_MODEL = 1000, O_CKPT, O_TOKENS, O_SEQLEN, O_WINDOWS, O_START, O_BATCH, O_BACKEND, O_JSON, O_QUIET, O_VERBOSE,
           O_TEXT, O_JSONL, O_FIELD, O_SEP, O_BOS, O_TOKENIZER, O_REFERENCE };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},     {"tokens", required_argument, 0, O_TOKENS},
        {"checkpoint", required_argument, 0, O_CKPT},
        {"seqlen", required_argument, 0, O_SEQLEN},   {"windows", required_argument, 0, O_WINDOWS},
        {"start", required_argument, 0, O_START},     {"batch", required_argument, 0, O_BATCH},
        {"backend", required_argument, 0, O_BACKEND}, {"json", no_argument, 0, O_JSON},
        {"quiet", no_argument, 0, O_QUIET},           {"verbose", no_argument, 0, O_VERBOSE},
        {"text", required_argument, 0, O_TEXT},       {"jsonl", required_argument, 0, O_JSONL},
        {"field", required_argument, 0, O_FIELD},     {"doc-sep", required_argument, 0, O_SEP},
        {"bos", required_argument, 0, O_BOS},         {"tokenizer", required_argument, 0, O_TOKENIZER},
        {"reference", required_argument, 0, O_REFERENCE},
        {"help", no_argument, 0, 'h'},                {0, 0, 0, 0},
    };
    int bos_given = 0;
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
        case O_TEXT: a->text.text_path = optarg; break;
        case O_JSONL: a->text.jsonl_path = optarg; break;
        case O_FIELD: a->text.field = optarg; break;
        case O_SEP: a->sep_arg = optarg; break;
        case O_BOS: FPTQ_TRY(fptq_bos_policy_parse(optarg, &a->text.bos)); bos_given = 1; break;
        case O_TOKENIZER: a->tokenizer = optarg; break;
        case O_REFERENCE: a->reference = optarg; break;
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
    if (!!a->tokens + !!a->text.text_path + !!a->text.jsonl_path != 1)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "fptq eval: one of --tokens FILE.npy, --text FILE, --jsonl FILE is required");
    if (a->text.jsonl_path && !a->text.field)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "fptq eval: --jsonl needs --field NAME");
    if (a->text.field && !a->text.jsonl_path)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "fptq eval: --field goes with --jsonl");
    if (a->sep_arg && !a->text.text_path)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "fptq eval: --doc-sep goes with --text");
    if ((bos_given || a->tokenizer) && a->tokens)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "fptq eval: --bos and --tokenizer go with --text / --jsonl (a .npy holds its tokens)");
    return FPTQ_OK;
}

static void print_json(const eval_args *a, const fptq_model *m, const char *backend,
                       const fptq_eval_result *r, const fptq_text_stats *ts, const char *tok_sha,
                       const fptq_eval_compare_result *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, a->model ? "model" : "checkpoint", a->model ? a->model : a->checkpoint);
    if (a->tokens)
        cJSON_AddStringToObject(o, "tokens", a->tokens);
    else {
        cJSON_AddStringToObject(o, "text", a->text.text_path ? a->text.text_path : a->text.jsonl_path);
        cJSON_AddStringToObject(o, "text_sha256", ts->text_sha256);
        cJSON_AddStringToObject(o, "tokenizer", a->tokenizer);
        cJSON_AddStringToObject(o, "tokenizer_sha256", tok_sha);
        cJSON_AddStringToObject(o, "bos", fptq_bos_policy_name(a->text.bos));
        cJSON_AddNumberToObject(o, "text_tokens", (double)ts->tokens);
    }
    cJSON_AddStringToObject(o, "backend", backend);
    cJSON_AddNumberToObject(o, "layers", (double)m->cfg.num_hidden_layers);
    cJSON_AddNumberToObject(o, "windows", (double)a->windows);
    cJSON_AddNumberToObject(o, "seqlen", (double)a->seqlen);
    cJSON_AddNumberToObject(o, "start", (double)a->start);
    cJSON_AddNumberToObject(o, "predicted", (double)r->predicted);
    cJSON_AddNumberToObject(o, "nll", r->nll);
    cJSON_AddNumberToObject(o, "ppl", r->ppl);
    cJSON_AddNumberToObject(o, "seconds", r->seconds);
    if (c) {
        cJSON_AddStringToObject(o, "reference", a->reference);
        cJSON_AddNumberToObject(o, "ref_nll", c->ref.nll);
        cJSON_AddNumberToObject(o, "ref_ppl", c->ref.ppl);
        cJSON_AddNumberToObject(o, "kl_mean", c->kl_mean);
        cJSON_AddNumberToObject(o, "kl_median", c->kl_median);
        cJSON_AddNumberToObject(o, "kl_p90", c->kl_p90);
        cJSON_AddNumberToObject(o, "kl_p99", c->kl_p99);
        cJSON_AddNumberToObject(o, "kl_max", c->kl_max);
        cJSON_AddNumberToObject(o, "top1_agree", c->top1_agree);
        cJSON_AddNumberToObject(o, "rms_dp", c->rms_dp);
        cJSON_AddNumberToObject(o, "mean_dp", c->mean_dp);
    }
    char *s = cJSON_PrintUnformatted(o);
    if (s)
        printf("%s\n", s);
    free(s);
    cJSON_Delete(o);
}

/* Where --text is tokenized: --tokenizer, the model directory, or for a
 * checkpoint the model directory its provenance names (and the digest of
 * the tokenizer.json it was calibrated with, if it was calibrated on text). */
static fptq_status eval_tokenizer_dir(const eval_args *a, const fptq_model *m, char *dir, size_t cap, char want_sha[65])
{
    want_sha[0] = 0;
    cJSON *p = m->ck ? cJSON_Parse(ckpt_provenance_json(m->ck)) : NULL;
    const cJSON *sha = p ? cJSON_GetObjectItemCaseSensitive(p, "tokenizer_sha256") : NULL;
    if (cJSON_IsString(sha) && strlen(sha->valuestring) == 64)
        memcpy(want_sha, sha->valuestring, 65);
    fptq_status st = FPTQ_OK;
    if (a->tokenizer)
        snprintf(dir, cap, "%s", a->tokenizer);
    else if (a->model)
        snprintf(dir, cap, "%s", a->model);
    else {
        const cJSON *md = p ? cJSON_GetObjectItemCaseSensitive(p, "model_dir") : NULL;
        if (!cJSON_IsString(md))
            st = FPTQ_FAIL(FPTQ_ERR_ARG, "fptq eval --text: checkpoint %s names no model directory; pass --tokenizer DIR",
                           a->checkpoint);
        else
            snprintf(dir, cap, "%s", md->valuestring);
    }
    cJSON_Delete(p);
    return st;
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
    fptq_eval_compare_result cmp = {0};
    fptq_model ref = {0};
    fptq_text_stats ts = {0};
    char tok_dir[4096] = "", tok_sha[65] = "", want_sha[65] = "";
    char *sep = NULL;
    FPTQ_TRY_GOTO(fptq_backend_select(a.backend, &be), st, done);
    FPTQ_TRY_GOTO(fptq_backend_bind(be, 0), st, done);
    if (a.model)
        FPTQ_TRY_GOTO(fptq_model_open(a.model, &m), st, done);
    else
        FPTQ_TRY_GOTO(fptq_model_open_checkpoint(a.checkpoint, &m), st, done);
    if (a.seqlen == 0)
        a.seqlen = m.cfg.max_position_embeddings < 2048 ? m.cfg.max_position_embeddings : 2048;
    if (a.tokens)
        FPTQ_TRY_GOTO(tokens_load(a.tokens, m.cfg.vocab_size, &tok), st, done);
    else {
        FPTQ_TRY_GOTO(eval_tokenizer_dir(&a, &m, tok_dir, sizeof tok_dir, want_sha), st, done);
        a.tokenizer = tok_dir;
        if (a.sep_arg)
            FPTQ_TRY_GOTO(fptq_unescape_arg("--doc-sep", a.sep_arg, &sep), st, done);
        a.text.doc_sep = sep;
        a.text.max_tokens = a.start + a.windows * a.seqlen;
        FPTQ_TRY_GOTO(fptq_tokens_from_text(tok_dir, m.cfg.vocab_size, &a.text, &tok, &ts, tok_sha), st, done);
        if (want_sha[0] && strcmp(want_sha, tok_sha) != 0)
            fptq_warn("eval: %s/tokenizer.json is not the one the checkpoint was calibrated with (sha256 %.12s..., "
                      "the checkpoint's %.12s...)", tok_dir, tok_sha, want_sha);
        if (a.verbosity)
            fptq_info("eval: %s: %lld tokens from %lld documents (bos %s), tokenized with %s/tokenizer.json in %.2f s",
                      a.text.text_path ? a.text.text_path : a.text.jsonl_path, (long long)ts.tokens,
                      (long long)ts.documents, fptq_bos_policy_name(a.text.bos), tok_dir, ts.seconds);
    }

    fptq_eval_opts o = {.start = a.start, .seqlen = a.seqlen, .windows = a.windows, .batch = a.batch,
                        .progress = a.verbosity == 0 ? 0 : (a.verbosity == 2 || m.cfg.hidden_size >= 1024) ? 2 : 1};
    char be_name[128];
    fptq_backend_describe(be, be_name, sizeof be_name);
    if (a.verbosity)
        fptq_info("eval: %s, %lld layers, %lld windows x %lld tokens from %lld, backend %s", m.dir,
                  (long long)m.cfg.num_hidden_layers, (long long)a.windows, (long long)a.seqlen,
                  (long long)a.start, be_name);
    if (a.reference) {
        FPTQ_TRY_GOTO(fptq_model_open(a.reference, &ref), st, done);
        FPTQ_TRY_GOTO(fptq_eval_compare(be, &m, &ref, tok.ids, tok.n_tokens, &o, &cmp), st, done);
        r = cmp.model;
    } else
        FPTQ_TRY_GOTO(fptq_eval_perplexity(be, &m, tok.ids, tok.n_tokens, &o, &r), st, done);

    if (a.json)
        print_json(&a, &m, be->name, &r, &ts, tok_sha, a.reference ? &cmp : NULL);
    else
        printf("windows=%lld W=%lld start=%lld predicted=%lld nll=%.6f ppl=%.6f\n", (long long)a.windows,
               (long long)a.seqlen, (long long)a.start, (long long)r.predicted, r.nll, r.ppl);
    if (a.reference && !a.json)
        printf("reference ppl=%.6f | KL divergence mean=%.6f median=%.6f p90=%.6f p99=%.6f max=%.6f | "
               "same top token %.4f | RMS dp %.6f\n", cmp.ref.ppl, cmp.kl_mean, cmp.kl_median, cmp.kl_p90,
               cmp.kl_p99, cmp.kl_max, cmp.top1_agree, cmp.rms_dp);
done:
    free(sep);
    tokens_free(&tok);
    fptq_model_close(&ref);
    fptq_model_close(&m);
    return cli_report(st);
}
