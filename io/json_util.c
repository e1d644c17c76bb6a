/*
 * Duplicate keys in parsed JSON, at any depth: each object's keys are sorted
 * and neighbours compared, so a header of a million tensors costs n log n.
 */
#include "json_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_PATH_CAP 512

static int cmp_key(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(x->string ? x->string : "", y->string ? y->string : "");
}

/* `path` names `node` ("" at the top level); children extend it in place. */
static fptq_status check_node(const cJSON *node, const char *src, char *path, size_t len)
{
    if (!cJSON_IsObject(node) && !cJSON_IsArray(node))
        return FPTQ_OK;
    size_t n = 0;
    for (const cJSON *it = node->child; it; it = it->next)
        n++;
    if (n == 0)
        return FPTQ_OK;
    if (cJSON_IsObject(node) && n > 1) {
        const cJSON **keys = NULL;
        char what[JSON_PATH_CAP + 64];
        snprintf(what, sizeof what, "%.200s: keys of %s", src, len ? path : "the top level");
        FPTQ_TRY(fptq_calloc(n, sizeof *keys, what, &keys));
        size_t k = 0;
        for (const cJSON *it = node->child; it; it = it->next)
            keys[k++] = it;
        qsort(keys, n, sizeof *keys, cmp_key);
        for (k = 1; k < n; k++) {
            if (cmp_key(&keys[k - 1], &keys[k]) == 0) {
                const char *key = keys[k]->string ? keys[k]->string : "";
                fptq_status st = FPTQ_FAIL(
                    FPTQ_ERR_FORMAT,
                    "%s: duplicate key \"%.200s\" %s%s%s%.200s (JSON readers disagree on which value "
                    "counts: Python's json keeps the last, so Hugging Face would read a different file "
                    "than fptq)",
                    src, key, len ? "at JSON path " : "at the top level", len ? path : "", len ? "." : "",
                    len ? key : "");
                free(keys);
                return st;
            }
        }
        free(keys);
    }
    size_t index = 0;
    for (const cJSON *it = node->child; it; it = it->next, index++) {
        if (!cJSON_IsObject(it) && !cJSON_IsArray(it))
            continue;
        int w;
        if (cJSON_IsObject(node))
            w = snprintf(path + len, JSON_PATH_CAP - len, "%s%s", len ? "." : "", it->string ? it->string : "");
        else
            w = snprintf(path + len, JSON_PATH_CAP - len, "[%zu]", index);
        size_t nlen = w < 0 ? len : len + (size_t)w;
        if (nlen >= JSON_PATH_CAP) /* truncated: the message still names the key */
            nlen = JSON_PATH_CAP - 1;
        FPTQ_TRY(check_node(it, src, path, nlen));
        path[len] = '\0';
    }
    return FPTQ_OK;
}

fptq_status json_check_unique_keys(const cJSON *root, const char *src)
{
    char path[JSON_PATH_CAP];
    path[0] = '\0';
    return check_node(root, src ? src : "<json>", path, 0);
}
