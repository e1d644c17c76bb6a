/*
 * Whole-file reads of regular files only, opened without blocking, capped.
 */
#define _POSIX_C_SOURCE 200809L
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

fptq_status fptq_open_regular(const char *path, const char *what, int *fd_out, int64_t *size_out)
{
    *fd_out = -1;
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return FPTQ_FAIL(FPTQ_ERR_IO, "%s: cannot open %s: %s", path, what, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return FPTQ_FAIL(FPTQ_ERR_IO, "%s: cannot stat %s: %s", path, what, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return FPTQ_FAIL(FPTQ_ERR_IO, "%s: %s is not a regular file (%s)", path, what,
                         S_ISDIR(sb.st_mode) ? "a directory" : S_ISFIFO(sb.st_mode) ? "a FIFO"
                         : S_ISCHR(sb.st_mode) || S_ISBLK(sb.st_mode)           ? "a device"
                         : S_ISSOCK(sb.st_mode)                                 ? "a socket"
                                                                                : "not a file");
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        return FPTQ_FAIL(FPTQ_ERR_IO, "%s: cannot set %s blocking: %s", path, what, strerror(e));
    }
    *fd_out = fd;
    *size_out = (int64_t)sb.st_size;
    return FPTQ_OK;
}

fptq_status fptq_fopen_regular(const char *path, const char *what, FILE **f_out, int64_t *size_out)
{
    int fd;
    *f_out = NULL;
    FPTQ_TRY(fptq_open_regular(path, what, &fd, size_out));
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        return FPTQ_FAIL(FPTQ_ERR_IO, "%s: cannot open %s: %s", path, what, strerror(e));
    }
    *f_out = f;
    return FPTQ_OK;
}

fptq_status fptq_read_file(const char *path, const char *what, int64_t max_bytes, int allow_empty,
                           char **buf_out, int64_t *len_out)
{
    *buf_out = NULL;
    *len_out = 0;
    int fd;
    int64_t size;
    FPTQ_TRY(fptq_open_regular(path, what, &fd, &size));
    fptq_status st = FPTQ_OK;
    char *buf = NULL;
    if (size == 0 && !allow_empty) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s is empty", path, what);
        goto done;
    }
    if (size > max_bytes) {
        char a[32], b[32];
        fptq_format_bytes((double)size, a, sizeof a);
        fptq_format_bytes((double)max_bytes, b, sizeof b);
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s is %lld bytes (%s), more than the %s fptq reads of one", path, what,
                       (long long)size, a, b);
        goto done;
    }
    char wbuf[256];
    snprintf(wbuf, sizeof wbuf, "%.200s: %s", path, what);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)size + 1, 1, wbuf, &buf), st, done);
    int64_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, (size_t)(size - got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            st = FPTQ_FAIL(FPTQ_ERR_IO, "%s: read %lld of %lld bytes of %s%s%s", path, (long long)got,
                           (long long)size, what, n < 0 ? ": " : " (file shrank while reading)",
                           n < 0 ? strerror(errno) : "");
            goto done;
        }
        got += n;
    }
    buf[size] = '\0';
    *buf_out = buf;
    *len_out = size;
    buf = NULL;
done:
    free(buf);
    close(fd);
    return st;
}
