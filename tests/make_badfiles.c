/*
 * make_badfiles GOOD_MODEL_DIR OUTDIR: writes every bad-input case into
 * OUTDIR/<case>/ and prints "<case>\t<kind>\t<expected>[\t<expected>]" per case
 * for tests/cli_bad_inputs.sh.
 */
#define _POSIX_C_SOURCE 200809L
#include "badfiles.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

static fptq_status run(const char *good, const char *outdir)
{
    if (mkdir(outdir, 0755) != 0 && errno != EEXIST)
        return FPTQ_FAIL(FPTQ_ERR_IO, "cannot create %s: %s", outdir, strerror(errno));
    size_t n;
    const badfile_case *cases = badfiles_cases(&n);
    for (size_t i = 0; i < n; i++) {
        char dir[4096];
        int len = snprintf(dir, sizeof dir, "%s/%s", outdir, cases[i].name);
        if (len < 0 || (size_t)len >= sizeof dir)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "output directory %s: path too long", outdir);
        FPTQ_TRY(badfiles_write(&cases[i], good, dir));
        printf("%s\t%s", cases[i].name, badfile_kind_name(cases[i].kind));
        for (int k = 0; k < BADFILE_MAX_EXPECT; k++)
            if (cases[i].expect[k])
                printf("\t%s", cases[i].expect[k]);
        printf("\n");
    }
    if (fflush(stdout) != 0)
        return FPTQ_FAIL(FPTQ_ERR_IO, "cannot write to stdout: %s", strerror(errno));
    return FPTQ_OK;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s GOOD_MODEL_DIR OUTDIR\n", argv[0]);
        return 2;
    }
    if (run(argv[1], argv[2]) != FPTQ_OK) {
        fprintf(stderr, "make_badfiles: error: %s\n", fptq_last_error());
        return 1;
    }
    return 0;
}
