/*
 * `fptq quantize`: the command line over fptq_quantize(); a one-line
 * summary (or JSON) on stdout, progress per layer on stderr.
 */
#define _GNU_SOURCE /* getopt_long */
#include "cli.h"

#include "../io/tokenizer.h"
#include "../worker/quantize.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quantize_usage(FILE *f)
{
    fprintf(f,
            "usage: fptq quantize --model DIR (--calib FILE.npy | --calib-text FILE | --calib-jsonl FILE --field NAME)\n"
            "                     --out CKPT_DIR [options]\n"
            "\n"
            "  --model DIR            Hugging Face model directory\n"
            "  --calib FILE.npy       calibration tokens (1-D stream cut into samples, or 2-D samples x len)\n"
            "  --calib-text FILE      calibration text, tokenized with DIR/tokenizer.json (fptq tokenize --help):\n"
            "                         one document, or several with --doc-sep; their ids one after another\n"
            "  --calib-jsonl FILE     calibration documents, the string --field NAME of each JSON line\n"
            "  --doc-sep STRING       --calib-text: split into documents on STRING (escapes \\n \\t \\r \\\\)\n"
            "  --bos auto|yes|no      text: BOS as the tokenizer's post-processor adds it (auto, default),\n"
            "                         one before each document (yes), or none (no)\n"
            "  --calib-samples N      calibration samples (default 128)\n"
            "  --calib-seqlen T       tokens per sample (default 2048, capped by the model's context)\n"
            "  --scheme S             w4a16 | w3a16 | w8a16 | w8a8 | fp8 (default w4a16)\n"
            "  --method M             rtn | gptq | awq (default gptq; fp8 uses rtn)\n"
            "  --group-size G         columns per scale group, 0 = per output channel (default 128)\n"
            "  --sym | --asym         symmetric (default) or asymmetric integer codes\n"
            "  --act-order            GPTQ: columns by decreasing Hessian diagonal (static groups, g_idx stored)\n"
            "  --damp F               GPTQ damping, fraction of mean(diag H) (default 0.01)\n"
            "  --smoothquant ALPHA    SmoothQuant before w8a8 / fp8, ALPHA in [0, 1] (e.g. 0.5)\n"
            "  --dynamic              w8a8: per-token dynamic activation scales (default static per-tensor)\n"
            "  --propagate P          quantized (default): each layer calibrated on the quantized layers'\n"
            "                         output, stages one after another; stage: the same inside a stage,\n"
            "                         whose first layer sees full-precision input, all stages at once;\n"
            "                         fp: every layer calibrated on the full-precision output\n"
            "  --stages S             pipeline stages under mpirun (default: one per node); the ranks of a\n"
            "                         stage split the calibration samples and each layer's rows\n"
            "  --out CKPT_DIR         checkpoint directory; an existing one is refused without --resume; one\n"
            "                         run at a time (CKPT_DIR/fptq.lock): another is refused naming its pid\n"
            "  --resume               skip finished layers of CKPT_DIR (same recipe, model, calibration),\n"
            "                         after checking it as eval does; a damaged shared.h5 is rewritten\n"
            "  --max-layers K         each stage stops cleanly after K more layers (exit status 3, resumable)\n"
            "                         (SIGUSR1 and SIGTERM do the same after the layers in flight; under\n"
            "                         mpirun send SIGUSR1 to mpirun: a SIGTERM to mpirun is a hard stop, it\n"
            "                         kills the ranks a second or two after passing it on, and exits 1)\n"
            "  --backend NAME         cpu | cuda | auto (default auto: the GPU of the node-local rank where\n"
            "                         one is usable, else the CPU)\n"
            "  --json                 print one JSON object as the summary\n"
            "  --quiet | --verbose\n"
            "\n"
            "Environment: FPTQ_PREFETCH=0 keeps one layer buffer on the GPU (no streaming of the\n"
            "next layer); FPTQ_NCCL=0 reduces statistics through the host (MPI) instead of NCCL;\n"
            "FPTQ_CUDA_GEMM=fp32|tf32|bf16 sets how the forward's GEMMs multiply on the GPU\n"
            "(default fp32; bf16: inputs rounded to bf16, fp32 products and sums);\n"
            "FPTQ_MICRO_SEQS=n runs the forward n samples at a time, each group's input recomputed\n"
            "per micro-batch (default: all at once, or on a GPU short of memory the most that fit).\n"
            "\n"
            "Exit status: 0 done, 1 failed (a damaged checkpoint, the lock held by another run, a read-only\n"
            "CKPT_DIR included), 2 bad command line (an existing CKPT_DIR without --resume included),\n"
            "3 stopped early (resume to finish).\n");
}

/* SIGTERM (a scheduler's stop, or mpirun passing one on) and SIGUSR1 (a
 * batch system's warning before the time limit): finish the layers in
 * flight, write them, stop with exit status 3. A second one is no different
 * (the summary names the first): only SIGKILL stops a layer midway, and that
 * never damages finished ones. Under mpirun SIGUSR1 is the one to send:
 * Open MPI's mpirun passes a SIGTERM on, kills the ranks a second or two
 * later (odls_base_sigkill_timeout) and exits 1; fptq cannot prevent that. */
static void on_stop_signal(int signo)
{
    static const char msg[] = "fptq: stop requested by signal: finishing the layer in flight, then stopping\n";
    if (!fptq_stop_signal()) {
        ssize_t unused = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)unused;
    }
    fptq_request_stop(signo);
}

static void install_signal_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    /* one handler at a time: the first signal is the one recorded */
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGUSR1);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    /* past a file-size limit, writes fail with EFBIG (reported, checkpoint
     * intact) instead of the process dying of SIGXFSZ */
    signal(SIGXFSZ, SIG_IGN);
}

static void print_summary(const fptq_quantize_opts *o, const fptq_quantize_result *r, int json)
{
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "checkpoint", o->out_dir);
        cJSON_AddStringToObject(j, "status", r->stopped_early ? "stopped" : "done");
        if (r->stop_signal > 0)
            cJSON_AddNumberToObject(j, "signal", r->stop_signal);
        cJSON_AddNumberToObject(j, "layers", (double)r->layers_total);
        cJSON_AddNumberToObject(j, "layers_quantized", (double)r->layers_done_now);
        cJSON_AddNumberToObject(j, "layers_restored", (double)r->layers_skipped);
        cJSON_AddNumberToObject(j, "seconds", r->seconds);
        if (!r->stopped_early)
            cJSON_AddStringToObject(j, "digest", r->digest);
        char *s = cJSON_PrintUnformatted(j);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(j);
    } else if (r->stopped_early) {
        if (r->stop_signal > 0)
            printf("stopped by signal %d (%s) after %lld layer(s); %s is resumable with --resume\n", r->stop_signal,
                   r->stop_signal == SIGTERM ? "SIGTERM" : r->stop_signal == SIGUSR1 ? "SIGUSR1" : "?",
                   (long long)r->layers_done_now, o->out_dir);
        else
            printf("stopped after %lld layer(s) as asked; %s is resumable with --resume\n", (long long)r->layers_done_now,
                   o->out_dir);
    } else {
        printf("done: %s, %lld layers (%lld quantized now, %lld restored), %.1f s, digest %s\n", o->out_dir,
               (long long)r->layers_total, (long long)r->layers_done_now, (long long)r->layers_skipped, r->seconds,
               r->digest);
    }
}

int cmd_quantize(int argc, char **argv)
{
    enum { O_MODEL = 1000, O_CALIB, O_SAMPLES, O_SEQLEN, O_SCHEME, O_METHOD, O_GROUP, O_SYM, O_ASYM, O_ACTORDER,
           O_DAMP, O_SQ, O_DYNAMIC, O_PROPAGATE, O_OUT, O_RESUME, O_MAXL, O_BACKEND, O_JSON, O_QUIET, O_VERBOSE, O_STAGES,
           O_CTEXT, O_CJSONL, O_FIELD, O_SEP, O_BOS };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL}, {"calib", required_argument, 0, O_CALIB},
        {"calib-samples", required_argument, 0, O_SAMPLES}, {"calib-seqlen", required_argument, 0, O_SEQLEN},
        {"scheme", required_argument, 0, O_SCHEME}, {"method", required_argument, 0, O_METHOD},
        {"group-size", required_argument, 0, O_GROUP}, {"sym", no_argument, 0, O_SYM},
        {"asym", no_argument, 0, O_ASYM}, {"act-order", no_argument, 0, O_ACTORDER},
        {"damp", required_argument, 0, O_DAMP}, {"smoothquant", required_argument, 0, O_SQ},
        {"dynamic", no_argument, 0, O_DYNAMIC}, {"propagate", required_argument, 0, O_PROPAGATE},
        {"out", required_argument, 0, O_OUT}, {"resume", no_argument, 0, O_RESUME},
        {"max-layers", required_argument, 0, O_MAXL}, {"backend", required_argument, 0, O_BACKEND},
        {"json", no_argument, 0, O_JSON}, {"quiet", no_argument, 0, O_QUIET},
        {"verbose", no_argument, 0, O_VERBOSE}, {"stages", required_argument, 0, O_STAGES},
        {"calib-text", required_argument, 0, O_CTEXT}, {"calib-jsonl", required_argument, 0, O_CJSONL},
        {"field", required_argument, 0, O_FIELD}, {"doc-sep", required_argument, 0, O_SEP},
        {"bos", required_argument, 0, O_BOS},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    fptq_quantize_opts o = {.progress = 1};
    const char *scheme = "w4a16", *method = NULL, *propagate = "quantized", *backend = "auto";
    int64_t samples = 128, seqlen = 0, group = -1, stages = 0;
    int sym = 1, act_order = 0, dynamic = 0, json = 0, verbosity = 1;
    float damp = 0.01f, sq = -1.0f;
    fptq_text_source text = {0};
    const char *sep_arg = NULL;
    int bos_given = 0;
    char *sep = NULL;
    fptq_status st = FPTQ_OK;
    opterr = 0;
    optind = 1;
    int c;
    while (st == FPTQ_OK && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: o.model_dir = optarg; break;
        case O_CALIB: o.calib_path = optarg; break;
        case O_SAMPLES: st = cli_parse_i64("--calib-samples", optarg, 1, &samples); break;
        case O_SEQLEN: st = cli_parse_i64("--calib-seqlen", optarg, 1, &seqlen); break;
        case O_SCHEME: scheme = optarg; break;
        case O_METHOD: method = optarg; break;
        case O_GROUP: st = cli_parse_i64("--group-size", optarg, 0, &group); break;
        case O_SYM: sym = 1; break;
        case O_ASYM: sym = 0; break;
        case O_ACTORDER: act_order = 1; break;
        case O_DAMP: st = cli_parse_float("--damp", optarg, 0.0, 1.0, &damp); break;
        case O_SQ: st = cli_parse_float("--smoothquant", optarg, 0.0, 1.0, &sq); break;
        case O_DYNAMIC: dynamic = 1; break;
        case O_PROPAGATE: propagate = optarg; break;
        case O_OUT: o.out_dir = optarg; break;
        case O_RESUME: o.resume = 1; break;
        case O_MAXL: st = cli_parse_i64("--max-layers", optarg, 1, &o.max_layers); break;
        case O_BACKEND: backend = optarg; break;
        case O_STAGES: st = cli_parse_i64("--stages", optarg, 1, &stages); break;
        case O_CTEXT: text.text_path = optarg; break;
        case O_CJSONL: text.jsonl_path = optarg; break;
        case O_FIELD: text.field = optarg; break;
        case O_SEP: sep_arg = optarg; break;
        case O_BOS: st = fptq_bos_policy_parse(optarg, &text.bos); bos_given = 1; break;
        case O_JSON: json = 1; break;
        case O_QUIET: verbosity = 0; break;
        case O_VERBOSE: verbosity = 2; break;
        case 'h': quantize_usage(stdout); return FPTQ_EXIT_OK;
        default:
            st = FPTQ_FAIL(FPTQ_ERR_ARG, "fptq quantize: unknown option or missing value '%s' (see fptq quantize --help)",
                           argv[optind - 1]);
        }
    }
    if (st == FPTQ_OK && optind < argc)
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "fptq quantize: unexpected argument '%s'", argv[optind]);
    const int n_calib = !!o.calib_path + !!text.text_path + !!text.jsonl_path;
    if (st == FPTQ_OK && (!o.model_dir || n_calib != 1 || !o.out_dir))
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "fptq quantize: --model, --out and one of --calib / --calib-text / --calib-jsonl "
                       "are required (see fptq quantize --help)");
    if (st == FPTQ_OK && text.jsonl_path && !text.field)
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "fptq quantize: --calib-jsonl needs --field NAME");
    if (st == FPTQ_OK && text.field && !text.jsonl_path)
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "fptq quantize: --field goes with --calib-jsonl");
    if (st == FPTQ_OK && sep_arg && !text.text_path)
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "fptq quantize: --doc-sep goes with --calib-text");
    if (st == FPTQ_OK && bos_given && o.calib_path)
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "fptq quantize: --bos goes with --calib-text / --calib-jsonl (a .npy holds its tokens)");
    if (st == FPTQ_OK && sep_arg)
        st = fptq_unescape_arg("--doc-sep", sep_arg, &sep);
    if (st == FPTQ_OK && !o.calib_path) {
        text.doc_sep = sep;
        o.calib_text = &text;
        o.calib_path = text.text_path ? text.text_path : text.jsonl_path;
    }
    if (!method)
        method = strcmp(scheme, "fp8") == 0 ? "rtn" : "gptq";
    if (st == FPTQ_OK)
        st = fptq_recipe_make(scheme, method, group, sym, act_order, damp, sq, dynamic, propagate, &o.recipe);
    if (st != FPTQ_OK) {
        free(sep);
        return cli_report(st);
    }
    o.recipe.calib_samples = samples;
    o.recipe.calib_seqlen = seqlen;
    o.stages = (int)stages;
    fptq_log_set_level(verbosity == 0 ? FPTQ_LOG_WARN : verbosity == 2 ? FPTQ_LOG_DEBUG : FPTQ_LOG_INFO);

    /* Every rank runs this; rank 0 coordinates and prints. A failing rank
     * names itself and brings the world down (MPI_Abort): no rank waits forever. */
    install_signal_handlers(); /* before MPI starts: a stop request then is not lost */
    fptq_world w;
    st = fptq_world_init(&argc, &argv, &w);
    if (st != FPTQ_OK) {
        free(sep);
        return cli_report(st);
    }
    if (w.size > 1) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "rank %d", w.rank);
        fptq_log_set_prefix(prefix);
    }
    o.progress = verbosity > 0 && w.rank == 0;
    const fptq_backend *be;
    fptq_quantize_result r;
    st = fptq_backend_select(backend, &be);
    if (st == FPTQ_OK)
        st = fptq_quantize(be, &w, &o, &r);
    free(sep); /* o.calib_text's separator: only the job reads it */
    if (st != FPTQ_OK) {
        const int code = cli_report(st);
        if (w.size > 1)
            fptq_world_abort(&w, code);
        fptq_world_finalize(&w);
        return code;
    }
    if (w.rank == 0)
        print_summary(&o, &r, json);
    /* mpirun ends the job as soon as one rank exits non-zero (3 when stopped
     * early): everyone waits until rank 0 has printed */
    fflush(stdout);
    fptq_world_barrier(&w);
    fptq_world_finalize(&w);
    return r.stopped_early ? FPTQ_EXIT_STOPPED : FPTQ_EXIT_OK;
}
