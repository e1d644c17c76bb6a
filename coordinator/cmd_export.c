/*
 * `fptq export`: a finished checkpoint to a Hugging Face model directory
 * that inference engines load (compressed-tensors for vLLM, the GPTQ v1
 * layout, or dequantized weights); a thin command line over fptq_export.
 */
#define _GNU_SOURCE /* getopt_long */
#include "cli.h"

#include "../io/export.h"

#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void export_usage(FILE *f)
{
    fprintf(f,
            "usage: fptq export --checkpoint CKPT --format compressed-tensors|gptq|dequantized --out DIR [options]\n"
            "\n"
            "  --checkpoint CKPT     a finished fptq checkpoint (every layer done)\n"
            "  --format NAME         compressed-tensors: what vLLM loads (pack-quantized for w4a16/w3a16/w8a16,\n"
            "                          int-quantized for w8a8, float-quantized for fp8)\n"
            "                        gptq: the AutoGPTQ / GPTQModel v1 layout (qweight, qzeros, scales, g_idx)\n"
            "                        dequantized: F32 weights as fptq dequantizes them (any loader; a reference)\n"
            "  --out DIR             the model directory to write; must not exist\n"
            "  --max-shard-size SZ   tensor bytes per safetensors shard (default 5GB; B, KB, MB, GB, KiB, MiB, GiB)\n"
            "  --scale-dtype D       f32 (default: fptq's scales, every client dequantizes to fptq's weights bit\n"
            "                        for bit), model (the input model's dtype), f16 or bf16 (rounded to nearest even)\n"
            "  --tokenizer DIR       copy tokenizer and generation files from DIR (the input model directory)\n"
            "  --quiet               no progress on stderr\n"
            "\n"
            "Unquantized tensors (embedding, norms, head, biases) are written in the input model's dtype.\n"
            "A scheme the format cannot hold is refused with the reason and the format that holds it.\n"
            "DIR appears only once complete (written into a hidden sibling, then renamed).\n"
            "\n"
            "Exit status: 0 done, 1 failed (a checkpoint that is unfinished or fails its digests included,\n"
            "as for fptq eval), 2 bad command line (an existing DIR included).\n");
}

/* "5GB", "100MB", "4096", "2GiB" -> bytes (decimal units as Hugging Face counts them). */
static fptq_status parse_size(const char *opt, const char *val, int64_t *out)
{
    char *end = NULL;
    double v = strtod(val, &end);
    if (end == val || !(v > 0))
        return FPTQ_FAIL(FPTQ_ERR_ARG, "option %s: expected a size such as 5GB or 500MB, got '%s'", opt, val);
    char unit[8] = "";
    size_t k = 0;
    for (const char *p = end; *p && k + 1 < sizeof unit; p++)
        unit[k++] = (char)toupper((unsigned char)*p);
    unit[k] = '\0';
    static const struct { const char *u; double m; } units[] = {
        {"", 1}, {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
        {"KIB", 1024.0}, {"MIB", 1048576.0}, {"GIB", 1073741824.0},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(unit, units[i].u) == 0 && strlen(end) == strlen(units[i].u)) {
            const double b = v * units[i].m;
            if (b < 1 || b > 9e15)
                break;
            *out = (int64_t)b;
            return FPTQ_OK;
        }
    return FPTQ_FAIL(FPTQ_ERR_ARG, "option %s: expected a size such as 5GB or 500MB, got '%s'", opt, val);
}

int cmd_export(int argc, char **argv)
{
    enum { O_CKPT = 1000, O_FORMAT, O_OUT, O_SHARD, O_SCALES, O_TOKENIZER, O_QUIET };
    static const struct option opts[] = {
        {"checkpoint", required_argument, 0, O_CKPT},   {"format", required_argument, 0, O_FORMAT},
        {"out", required_argument, 0, O_OUT},           {"max-shard-size", required_argument, 0, O_SHARD},
        {"scale-dtype", required_argument, 0, O_SCALES}, {"tokenizer", required_argument, 0, O_TOKENIZER},
        {"quiet", no_argument, 0, O_QUIET},             {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *ckpt = NULL, *out = NULL, *format = NULL;
    export_opts o = {.format = EXPORT_COMPRESSED_TENSORS, .scales = EXPORT_SCALES_F32, .progress = 1};
    fptq_status st = FPTQ_OK;
    opterr = 0;
    optind = 1;
    int c;
    while (st == FPTQ_OK && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_CKPT: ckpt = optarg; break;
        case O_OUT: out = optarg; break;
        case O_FORMAT:
            format = optarg;
            if (export_format_parse(optarg, &o.format) != 0)
                st = FPTQ_FAIL(FPTQ_ERR_ARG, "--format: unknown format '%s' (expected compressed-tensors, gptq or "
                                             "dequantized)", optarg);
            break;
        case O_SHARD: st = parse_size("--max-shard-size", optarg, &o.max_shard_bytes); break;
        case O_SCALES:
            if (export_scale_dtype_parse(optarg, &o.scales) != 0)
                st = FPTQ_FAIL(FPTQ_ERR_ARG, "--scale-dtype: unknown dtype '%s' (expected f32, model, f16 or bf16)",
                               optarg);
            break;
        case O_TOKENIZER: o.tokenizer_dir = optarg; break;
        case O_QUIET: o.progress = 0; break;
        case 'h': export_usage(stdout); return FPTQ_EXIT_OK;
        default:
            st = FPTQ_FAIL(FPTQ_ERR_ARG, "fptq export: unknown option or missing value '%s' (see fptq export --help)",
                           argv[optind - 1]);
        }
    }
    if (st == FPTQ_OK && optind < argc)
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "fptq export: unexpected argument '%s'", argv[optind]);
    if (st == FPTQ_OK && (!ckpt || !out || !format))
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "fptq export: --checkpoint CKPT, --format FORMAT and --out DIR are required");
    if (st != FPTQ_OK)
        return cli_report(st);
    fptq_log_set_level(o.progress ? FPTQ_LOG_INFO : FPTQ_LOG_WARN);

    export_result r;
    st = fptq_export(ckpt, out, &o, &r);
    if (st == FPTQ_OK) {
        printf("exported %s to %s: %s, %lld layers, %lld tensors in %lld shard(s), %.3f GB, %.1f s\n", ckpt, out,
               export_format_name(o.format), (long long)r.layers, (long long)r.tensors, (long long)r.shards,
               (double)r.data_bytes / 1e9, r.seconds);
        if (r.scales_rounded)
            printf("scales: %lld rounded to the requested dtype, largest relative change %.3g\n",
                   (long long)r.scales_rounded, r.max_scale_rel_change);
    }
    return cli_report(st);
}
