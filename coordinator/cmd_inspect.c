/*
 * `fptq inspect CKPT`: what a checkpoint holds, read from its index alone:
 * recipe, provenance, per-layer status, losses and digests, and the digest
 * of the whole checkpoint when every layer is done.
 */
#include "cli.h"

#include "../io/checkpoint.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static cJSON *parse_or_string(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    return j ? j : cJSON_CreateString(text);
}

int cmd_inspect(int argc, char **argv)
{
    const char *dir = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: fptq inspect CKPT_DIR [--json]\n");
            return FPTQ_EXIT_OK;
        } else if (argv[i][0] == '-' || dir) {
            return cli_report(FPTQ_FAIL(FPTQ_ERR_ARG, "fptq inspect: unexpected argument '%s' (usage: fptq inspect CKPT_DIR [--json])", argv[i]));
        } else {
            dir = argv[i];
        }
    }
    if (!dir)
        return cli_report(FPTQ_FAIL(FPTQ_ERR_ARG, "fptq inspect: CKPT_DIR is required"));
    ckpt *ck;
    fptq_status st = ckpt_open(dir, &ck);
    if (st != FPTQ_OK)
        return cli_report(st);
    const int64_t L = ckpt_n_layers(ck);
    int64_t done = 0;
    for (int64_t l = 0; l < L; l++)
        done += ckpt_layer_done(ck, l) != 0;
    char digest[65] = "";
    if (done == L)
        st = ckpt_digest(ck, digest);

    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "checkpoint", dir);
        cJSON_AddItemToObject(o, "recipe", parse_or_string(ckpt_recipe_json(ck)));
        cJSON_AddItemToObject(o, "provenance", parse_or_string(ckpt_provenance_json(ck)));
        cJSON_AddNumberToObject(o, "layers_total", (double)L);
        cJSON_AddNumberToObject(o, "layers_done", (double)done);
        cJSON *layers = cJSON_AddArrayToObject(o, "layers");
        for (int64_t l = 0; l < L; l++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "layer", (double)l);
            cJSON_AddStringToObject(e, "status", ckpt_layer_done(ck, l) ? "done" : "pending");
            cJSON_AddStringToObject(e, "digest", ckpt_layer_digest(ck, l));
            cJSON_AddItemToObject(e, "manifest", parse_or_string(ckpt_layer_manifest_json(ck, l)));
            cJSON_AddItemToArray(layers, e);
        }
        if (digest[0])
            cJSON_AddStringToObject(o, "digest", digest);
        else
            cJSON_AddNullToObject(o, "digest");
        char *s = cJSON_Print(o);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(o);
    } else {
        printf("checkpoint  %s\n", dir);
        printf("recipe      %s\n", ckpt_recipe_json(ck));
        printf("provenance  %s\n", ckpt_provenance_json(ck));
        printf("layers      %lld of %lld done\n", (long long)done, (long long)L);
        for (int64_t l = 0; l < L; l++)
            printf("  layer %-4lld %-8s %s %s\n", (long long)l, ckpt_layer_done(ck, l) ? "done" : "pending",
                   ckpt_layer_digest(ck, l)[0] ? ckpt_layer_digest(ck, l) : "-", ckpt_layer_manifest_json(ck, l));
        printf("digest      %s\n", digest[0] ? digest : "(incomplete: finish with fptq quantize --resume)");
    }
    ckpt_close(ck);
    return cli_report(st);
}
