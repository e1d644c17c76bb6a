/*
 * fptq: one binary, one subcommand per job. main() is the only place where
 * a status becomes an exit code.
 */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FPTQ_VERSION
#define FPTQ_VERSION "dev"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "fptq %s: post-training quantization of Llama-family models\n"
            "\n"
            "usage: fptq <command> [options]\n"
            "\n"
            "commands:\n"
            "  quantize  calibrate and quantize a model into a checkpoint (fptq quantize --help)\n"
            "  eval      perplexity of a model or checkpoint on a token file (fptq eval --help)\n"
            "  inspect   what a checkpoint holds: recipe, provenance, layers, digests\n"
            "  plan      from config.json alone: stages, layers and memory per GPU, time (fptq plan --help)\n"
            "  export    a checkpoint to a model directory vLLM / transformers load (fptq export --help)\n"
            "  tokenize  text to token ids with the model's own tokenizer.json (fptq tokenize --help)\n"
            "  version   print the version\n",
            FPTQ_VERSION);
}

fptq_status cli_parse_i64(const char *opt, const char *val, int64_t min, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(val, &end, 10);
    if (val[0] == '\0' || *end != '\0' || errno == ERANGE)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "option %s: expected an integer, got '%s'", opt, val);
    if (v < min)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "option %s: expected an integer >= %lld, got %lld", opt,
                         (long long)min, v);
    *out = v;
    return FPTQ_OK;
}

fptq_status cli_parse_float(const char *opt, const char *val, double min, double max, float *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(val, &end);
    if (val[0] == '\0' || *end != '\0' || errno == ERANGE || !(v >= min && v <= max))
        return FPTQ_FAIL(FPTQ_ERR_ARG, "option %s: expected a number in [%g, %g], got '%s'", opt, min, max, val);
    *out = (float)v;
    return FPTQ_OK;
}

int cli_report(fptq_status st)
{
    if (st == FPTQ_OK)
        return FPTQ_EXIT_OK;
    const char *msg = fptq_last_error();
    fptq_error("%s", msg[0] ? msg : fptq_status_name(st));
    if (fptq_log_get_level() >= FPTQ_LOG_DEBUG)
        fprintf(stderr, "%s", fptq_error_trace());
    return st == FPTQ_ERR_ARG ? FPTQ_EXIT_USAGE : FPTQ_EXIT_FAILURE;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return FPTQ_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "eval") == 0)
        return cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "quantize") == 0)
        return cmd_quantize(argc - 1, argv + 1);
    if (strcmp(cmd, "inspect") == 0)
        return cmd_inspect(argc - 1, argv + 1);
    if (strcmp(cmd, "plan") == 0)
        return cmd_plan(argc - 1, argv + 1);
    if (strcmp(cmd, "export") == 0)
        return cmd_export(argc - 1, argv + 1);
    if (strcmp(cmd, "tokenize") == 0)
        return cmd_tokenize(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("fptq %s\n", FPTQ_VERSION);
        return FPTQ_EXIT_OK;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return FPTQ_EXIT_OK;
    }
    fprintf(stderr, "fptq: error: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return FPTQ_EXIT_USAGE;
}
