/*
 * `fptq tokenize`: text to token ids with the model's own tokenizer.json,
 * written as an int32 .npy; a summary line (or JSON) on stdout.
 */
#define _GNU_SOURCE /* getopt_long */
#include "cli.h"

#include "../io/tokenizer.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void tokenize_usage(FILE *f)
{
    fprintf(f,
            "usage: fptq tokenize --model DIR (--text FILE | --jsonl FILE --field NAME) --out FILE.npy [options]\n"
            "\n"
            "  --model DIR       model directory with tokenizer.json (tokenizer_config.json / config.json\n"
            "                    for --bos yes)\n"
            "  --text FILE       UTF-8 text; one document, or several split on --doc-sep\n"
            "  --jsonl FILE      JSON Lines: the string field --field of each line's object is a document\n"
            "  --field NAME      the JSON Lines field (e.g. text)\n"
            "  --doc-sep STRING  split --text into documents on STRING (escapes \\n \\t \\r \\\\; e.g. '\\n\\n');\n"
            "                    empty documents are skipped\n"
            "  --bos POLICY      auto (default): what tokenizer.json's post-processor adds to each document;\n"
            "                    yes: one BOS before each document, nothing else; no: no special tokens\n"
            "  --out FILE.npy    the ids, int32, 1-D: the documents' ids one after another\n"
            "  --json            print one JSON object instead of the summary line\n"
            "  --quiet           no progress on stderr\n"
            "\n"
            "Each document is encoded as Hugging Face `tokenizers` encodes it\n"
            "(Tokenizer.from_file(DIR/tokenizer.json).encode(doc)).\n");
}

int cmd_tokenize(int argc, char **argv)
{
    enum { O_MODEL = 1000, O_TEXT, O_JSONL, O_FIELD, O_SEP, O_BOS, O_OUT, O_JSON, O_QUIET };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL}, {"text", required_argument, 0, O_TEXT},
        {"jsonl", required_argument, 0, O_JSONL}, {"field", required_argument, 0, O_FIELD},
        {"doc-sep", required_argument, 0, O_SEP}, {"bos", required_argument, 0, O_BOS},
        {"out", required_argument, 0, O_OUT},     {"json", no_argument, 0, O_JSON},
        {"quiet", no_argument, 0, O_QUIET},       {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *model = NULL, *out = NULL, *sep_arg = NULL;
    fptq_text_source src = {0};
    int json = 0, quiet = 0;
    fptq_status st = FPTQ_OK;
    opterr = 0;
    optind = 1;
    int c;
    while (st == FPTQ_OK && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: model = optarg; break;
        case O_TEXT: src.text_path = optarg; break;
        case O_JSONL: src.jsonl_path = optarg; break;
        case O_FIELD: src.field = optarg; break;
        case O_SEP: sep_arg = optarg; break;
        case O_BOS: st = fptq_bos_policy_parse(optarg, &src.bos); break;
        case O_OUT: out = optarg; break;
        case O_JSON: json = 1; break;
        case O_QUIET: quiet = 1; break;
        case 'h': tokenize_usage(stdout); return FPTQ_EXIT_OK;
        default:
            st = FPTQ_FAIL(FPTQ_ERR_ARG, "fptq tokenize: unknown option or missing value '%s' (see fptq tokenize --help)",
                           argv[optind - 1]);
        }
    }
    if (st == FPTQ_OK && optind < argc)
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "fptq tokenize: unexpected argument '%s'", argv[optind]);
    if (st == FPTQ_OK && (!model || !out || !src.text_path == !src.jsonl_path))
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "fptq tokenize: --model, --out and one of --text / --jsonl are required "
                       "(see fptq tokenize --help)");
    if (st == FPTQ_OK && src.jsonl_path && !src.field)
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "fptq tokenize: --jsonl needs --field NAME");
    if (st == FPTQ_OK && src.field && !src.jsonl_path)
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "fptq tokenize: --field goes with --jsonl");
    if (st == FPTQ_OK && sep_arg && !src.text_path)
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "fptq tokenize: --doc-sep goes with --text (each JSON Lines record is a document)");
    char *sep = NULL;
    if (st == FPTQ_OK && sep_arg)
        st = fptq_unescape_arg("--doc-sep", sep_arg, &sep);
    if (st != FPTQ_OK)
        return cli_report(st);
    src.doc_sep = sep;
    fptq_log_set_level(quiet ? FPTQ_LOG_WARN : FPTQ_LOG_INFO);

    fptq_tokenizer *tok = NULL;
    fptq_tokens ids = {0};
    fptq_text_stats ts;
    const double t0 = fptq_now();
    FPTQ_TRY_GOTO(fptq_tokenizer_load(model, 0, &tok), st, done);
    const double t_load = fptq_now() - t0;
    FPTQ_TRY_GOTO(fptq_tokenize_source(tok, &src, &ids, &ts), st, done);
    if (fptq_tokenizer_dropped_chars(tok) > 0)
        fptq_warn("tokenize: %lld characters have no token (no byte fallback, no unk_token) and were dropped, "
                  "as `tokenizers` drops them", (long long)fptq_tokenizer_dropped_chars(tok));
    {
        int64_t shape[1] = {ids.n_tokens};
        FPTQ_TRY_GOTO(npy_save(out, NPY_I32, 1, shape, ids.ids), st, done);
    }
    const char *path = src.text_path ? src.text_path : src.jsonl_path;
    const double secs = ts.seconds > 0 ? ts.seconds : 1e-9;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "text", path);
        cJSON_AddStringToObject(o, "text_sha256", ts.text_sha256);
        cJSON_AddStringToObject(o, "tokenizer_sha256", fptq_tokenizer_sha256(tok));
        cJSON_AddStringToObject(o, "bos", fptq_bos_policy_name(src.bos));
        cJSON_AddStringToObject(o, "out", out);
        cJSON_AddNumberToObject(o, "bytes", (double)ts.bytes);
        cJSON_AddNumberToObject(o, "documents", (double)ts.documents);
        cJSON_AddNumberToObject(o, "tokens", (double)ts.tokens);
        cJSON_AddNumberToObject(o, "dropped_chars", (double)fptq_tokenizer_dropped_chars(tok));
        cJSON_AddNumberToObject(o, "load_seconds", t_load);
        cJSON_AddNumberToObject(o, "seconds", ts.seconds);
        cJSON_AddNumberToObject(o, "tokens_per_second", (double)ts.tokens / secs);
        char *s = cJSON_PrintUnformatted(o);
        if (s)
            printf("%s\n", s);
        free(s);
        cJSON_Delete(o);
    } else {
        printf("tokenize: %s: %lld bytes, %lld documents, %lld tokens, %.3f s (%.0f tokens/s, %.2f MB/s); "
               "tokenizer.json loaded in %.3f s; wrote %s\n",
               path, (long long)ts.bytes, (long long)ts.documents, (long long)ts.tokens, ts.seconds,
               (double)ts.tokens / secs, (double)ts.bytes / secs / 1e6, t_load, out);
    }
done:
    free(sep);
    tokens_free(&ids);
    fptq_tokenizer_free(tok);
    return cli_report(st);
}
