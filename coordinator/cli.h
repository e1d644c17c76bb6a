/*
 * Command-line plumbing shared by the subcommands: strict number parsing,
 * and the mapping from statuses to exit codes (only main() exits).
 */
#ifndef FPTQ_CLI_H
#define FPTQ_CLI_H

#include "../common/status.h"

/* 3: stopped early on request (--max-layers, later a signal); the checkpoint
 * is intact and `--resume` finishes it (a batch script requeues on it). */
enum { FPTQ_EXIT_OK = 0, FPTQ_EXIT_FAILURE = 1, FPTQ_EXIT_USAGE = 2, FPTQ_EXIT_STOPPED = 3 };

/* Parses a whole decimal integer >= min for option `opt`; anything else
 * ("12x", "", overflow) is FPTQ_ERR_ARG naming the option and the value. */
fptq_status cli_parse_i64(const char *opt, const char *val, int64_t min, int64_t *out);
/* A float in [min, max] for option `opt`. */
fptq_status cli_parse_float(const char *opt, const char *val, double min, double max, float *out);

/* Prints "fptq: error: <message>" (and the trace with --verbose), returns the exit code. */
int cli_report(fptq_status st);

int cmd_eval(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);

#endif
