/*
 * The fptq checkpoint directory in HDF5: one file per layer, shared.h5 and
 * index.h5, each written under a temporary name and renamed only once it is
 * fsync'd, with content digests that do not depend on HDF5's byte layout.
 */
#define _POSIX_C_SOURCE 200809L
#include "checkpoint.h"

#include "../common/sha256.h"
#include "config.h"      /* FPTQ_MAX_LAYERS */
#include "safetensors.h"   /* st_bf16_to_f32, st_f16_to_f32 */

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define INDEX_FORMAT "fptq-checkpoint"
#define LAYER_FORMAT "fptq-layer"
/* 2: index.h5 carries index_digest over everything it stores (version 1
 * had none, so its config, recipe, provenance and losses went unchecked) */
#define CKPT_VERSION 2
#define LAYER_VERSION 1   /* layer files are unchanged: their digests too */
#define LOCK_NAME "fptq.lock"

/* Limits on what a file may claim, checked before anything is allocated: far
 * above any Llama (405B: hidden 16384, mlp 53248, 126 layers), far below
 * what would make a corrupt size field allocate the machine away. */
#define MAX_HIDDEN (1 << 20)
#define MAX_DIM (1 << 22)
#define MAX_ELEMS (1LL << 36)
#define MAX_JSON (64u << 20)
#define MAX_ATTR_STR 65536u

typedef struct manifest_entry {
    int done;
    char digest[65];
    double seconds;
    char *losses_json;   /* {"name": {"loss": x, "damp": y}, ...}; "{}" when pending */
    char *entry_json;    /* the whole entry, for ckpt_layer_manifest_json */
} manifest_entry;

struct ckpt {
    char *dir;
    char *config_json, *recipe_json, *provenance_json;
    int64_t n_layers;
    manifest_entry *man;
    char shared_digest[65];   /* "" until shared.h5 is written and in the index */
    hid_t shared_file;        /* shared.h5 open read-only once written, else H5I_INVALID_HID */
    char *shared_problem;     /* why a listed shared.h5 was set aside (ckpt_open_resume), else NULL */
    int layers_only;          /* ckpt_open_layers: shared.h5 not opened, the index never rewritten */
};

/* ---- small helpers ---------------------------------------------------------- */

static fptq_status dup_str(const char *s, const char *what, char **out)
{
    size_t n = strlen(s) + 1;
    FPTQ_TRY(fptq_calloc(n, 1, what, out));
    memcpy(*out, s, n);
    return FPTQ_OK;
}

static fptq_status path_fmt(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static fptq_status path_fmt(char **out, const char *fmt, ...)
{
    *out = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "cannot format a path from \"%s\"", fmt);
    FPTQ_TRY(fptq_calloc((size_t)n + 1, 1, "checkpoint path", out));
    va_start(ap, fmt);
    vsnprintf(*out, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return FPTQ_OK;
}

static fptq_status layer_path(const ckpt *c, int64_t l, const char *suffix, char **out)
{
    return path_fmt(out, "%s/layers/layer-%05lld.h5%s", c->dir, (long long)l, suffix);
}

/* The temporary name of a file being written: unique to this process and
 * call (pid, counter), so that two processes never write the same
 * temporary file, and each removes only its own. */
static fptq_status tmp_path(const char *final, char **out)
{
    static unsigned counter;
    unsigned n = __atomic_fetch_add(&counter, 1u, __ATOMIC_RELAXED);
    return path_fmt(out, "%s.tmp.%ld.%u", final, (long)getpid(), n);
}

/* Linear and shared tensor names become HDF5 link names and JSON keys: a
 * plain alphabet keeps both unambiguous (no '/', no quotes, no "." alone). */
static int valid_name(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n == 0 || n == cap)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        int alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && ch != '_' && !(i > 0 && (ch == '.' || ch == '-')))
            return 0;
    }
    return 1;
}

static int valid_hex_digest(const char *s)
{
    if (strlen(s) != 64)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* fsync of a file or a folder. A rename is durable only once the folder
 * holding it is fsync'd, and the data only once the file itself is. */
static fptq_status fsync_path(const char *path, int is_dir)
{
    int fd = open(path, is_dir ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
    if (fd < 0)
        return FPTQ_FAIL(FPTQ_ERR_IO, "cannot open %s to fsync it: %s", path, strerror(errno));
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return FPTQ_FAIL(FPTQ_ERR_IO, "fsync of %s failed: %s", path, strerror(e));
    }
    if (close(fd) != 0)
        return FPTQ_FAIL(FPTQ_ERR_IO, "close of %s failed: %s", path, strerror(errno));
    return FPTQ_OK;
}

/* The last step of every durable write: the closed tmp file is fsync'd,
 * renamed over the final name, and the folder fsync'd. */
static fptq_status commit_file(const char *tmp, const char *final, const char *folder)
{
    FPTQ_TRY(fsync_path(tmp, 0));
    if (rename(tmp, final) != 0)
        return FPTQ_FAIL(FPTQ_ERR_IO, "cannot rename %s to %s: %s", tmp, final, strerror(errno));
    FPTQ_TRY(fsync_path(folder, 1));
    return FPTQ_OK;
}

/* The same, where final must not exist yet (the first index of a new
 * checkpoint): link() fails with EEXIST instead of replacing, then the
 * temporary name goes. */
static fptq_status commit_file_new(const char *tmp, const char *final, const char *folder)
{
    FPTQ_TRY(fsync_path(tmp, 0));
    if (link(tmp, final) != 0) {
        if (errno == EEXIST)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint directory %s already exists (another run created %s "
                             "meanwhile): pass --resume to continue it, or pick another directory", folder, final);
        return FPTQ_FAIL(FPTQ_ERR_IO, "cannot link %s to %s: %s", tmp, final, strerror(errno));
    }
    unlink(tmp);
    FPTQ_TRY(fsync_path(folder, 1));
    return FPTQ_OK;
}

static fptq_status parent_dir(const char *dir, char **out)
{
    FPTQ_TRY(dup_str(dir, "parent directory name", out));
    char *p = *out;
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        p[--n] = '\0';
    char *slash = strrchr(p, '/');
    if (!slash)
        strcpy(p, ".");   /* fits: p holds at least one character */
    else if (slash == p)
        p[1] = '\0';
    else
        *slash = '\0';
    return FPTQ_OK;
}

/* ---- HDF5 errors -------------------------------------------------------------- */

/* HDF5 prints its error stack to stderr by default; fptq reports one message
 * of its own instead, with HDF5's innermost reason appended. */
static void h5_quiet(void)
{
    /* No clean-up at exit: after a failed H5Fclose (disk full, file-size
     * limit) HDF5 keeps a half-closed file whose close at exit crashes the
     * process; every file fptq writes is closed (or abandoned as *.tmp) on
     * its own path, so there is nothing for the library to do at exit. */
    static int first = 1;
    if (first) {
        first = 0;
        H5dont_atexit();
    }
    H5open();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static herr_t h5_walk_innermost(unsigned n, const H5E_error2_t *e, void *data)
{
    if (n == 0 && e->desc)
        snprintf((char *)data, 256, "%s", e->desc);
    return 0;
}

static fptq_status h5_fail_at(const char *file, int line, fptq_status st, const char *path,
                              const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static fptq_status h5_fail_at(const char *file, int line, fptq_status st, const char *path,
                              const char *fmt, ...)
{
    char what[512], detail[256] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    /* walking upward starts at the most specific error, where HDF5 found it */
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, h5_walk_innermost, detail);
    H5Eclear2(H5E_DEFAULT);
    if (detail[0])
        return fptq_fail(st, file, line, "%s: %s (HDF5: %s)", path, what, detail);
    return fptq_fail(st, file, line, "%s: %s", path, what);
}
#define H5_FAIL(st, path, ...) h5_fail_at(__FILE__, __LINE__, (st), (path), __VA_ARGS__)

static void h5_close_any(hid_t *id)
{
    if (*id < 0)
        return;
    switch (H5Iget_type(*id)) {
    case H5I_FILE: H5Fclose(*id); break;
    case H5I_GROUP: H5Gclose(*id); break;
    case H5I_DATASET: H5Dclose(*id); break;
    case H5I_DATASPACE: H5Sclose(*id); break;
    case H5I_DATATYPE: H5Tclose(*id); break;
    case H5I_ATTR: H5Aclose(*id); break;
    case H5I_GENPROP_LST: H5Pclose(*id); break;
    default: break;
    }
    *id = H5I_INVALID_HID;
}

/* ---- HDF5 writing ------------------------------------------------------------- */

/* Property lists for a file being written: no object timestamps (identical
 * content gives identical files), and H5F_CLOSE_SEMI so that H5Fclose fails
 * loudly if an object is still open instead of silently deferring the close
 * past our fsync. */
typedef struct h5_wprops {
    hid_t fcpl, fapl, gcpl, dcpl;
} h5_wprops;

static void h5_wprops_close(h5_wprops *p)
{
    h5_close_any(&p->fcpl);
    h5_close_any(&p->fapl);
    h5_close_any(&p->gcpl);
    h5_close_any(&p->dcpl);
}

static fptq_status h5_wprops_init(const char *path, h5_wprops *p)
{
    p->fcpl = H5Pcreate(H5P_FILE_CREATE);
    p->fapl = H5Pcreate(H5P_FILE_ACCESS);
    p->gcpl = H5Pcreate(H5P_GROUP_CREATE);
    p->dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (p->fcpl < 0 || p->fapl < 0 || p->gcpl < 0 || p->dcpl < 0 ||
        H5Pset_obj_track_times(p->fcpl, 0) < 0 || H5Pset_obj_track_times(p->gcpl, 0) < 0 ||
        H5Pset_obj_track_times(p->dcpl, 0) < 0 ||
        H5Pset_fclose_degree(p->fapl, H5F_CLOSE_SEMI) < 0) {
        fptq_status st = H5_FAIL(FPTQ_ERR_IO, path, "cannot set up HDF5 property lists");
        h5_wprops_close(p);
        return st;
    }
    return FPTQ_OK;
}

static fptq_status h5_create_file(const char *path, const h5_wprops *p, hid_t *file)
{
    *file = H5Fcreate(path, H5F_ACC_TRUNC, p->fcpl, p->fapl);
    if (*file < 0)
        return H5_FAIL(FPTQ_ERR_IO, path, "cannot create HDF5 file");
    return FPTQ_OK;
}

static fptq_status h5_close_file(const char *path, hid_t *file)
{
    herr_t e = H5Fclose(*file);
    *file = H5I_INVALID_HID;
    if (e < 0)
        return H5_FAIL(FPTQ_ERR_IO, path, "cannot close HDF5 file (data not written out)");
    return FPTQ_OK;
}

static hid_t str_type(size_t len)
{
    /* fixed-length, NUL-terminated UTF-8 (JSON texts): h5dump shows plain
     * text, and there is no variable-length heap whose memory HDF5 would
     * have to hand back */
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0)
        return t;
    if (H5Tset_size(t, len + 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0 ||
        H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return H5I_INVALID_HID;
    }
    return t;
}

static fptq_status h5w_attr(hid_t obj, const char *path, const char *where, const char *key,
                            hid_t ftype, hid_t mtype, const void *val)
{
    fptq_status st = FPTQ_OK;
    hid_t sp = H5Screate(H5S_SCALAR), a = H5I_INVALID_HID;
    if (sp < 0 || (a = H5Acreate2(obj, key, ftype, sp, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
        H5Awrite(a, mtype, val) < 0)
        st = H5_FAIL(FPTQ_ERR_IO, path, "cannot write attribute %s of %s", key, where);
    h5_close_any(&a);
    h5_close_any(&sp);
    return st;
}

static fptq_status h5w_attr_str(hid_t obj, const char *path, const char *where, const char *key,
                                const char *s)
{
    hid_t t = str_type(strlen(s));
    if (t < 0)
        return H5_FAIL(FPTQ_ERR_IO, path, "cannot make a string type for attribute %s of %s", key, where);
    fptq_status st = h5w_attr(obj, path, where, key, t, t, s);
    H5Tclose(t);
    return st;
}

static fptq_status h5w_dset(hid_t loc, const char *path, const char *where, const char *name,
                            hid_t ftype, hid_t mtype, int ndim, const hsize_t *dims,
                            const void *data, hid_t dcpl, hid_t *out)
{
    fptq_status st = FPTQ_OK;
    hid_t sp = ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(ndim, dims, NULL);
    hid_t d = H5I_INVALID_HID;
    if (sp < 0 || (d = H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0 ||
        H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        st = H5_FAIL(FPTQ_ERR_IO, path, "cannot write dataset %s", where);
    h5_close_any(&sp);
    if (st == FPTQ_OK && out)
        *out = d;
    else
        h5_close_any(&d);
    return st;
}

static fptq_status h5w_str_dset(hid_t loc, const char *path, const char *name, const char *s,
                                hid_t dcpl)
{
    hid_t t = str_type(strlen(s));
    if (t < 0)
        return H5_FAIL(FPTQ_ERR_IO, path, "cannot make a string type for dataset %s", name);
    fptq_status st = h5w_dset(loc, path, name, name, t, t, 0, NULL, s, dcpl, NULL);
    H5Tclose(t);
    return st;
}

static fptq_status h5w_group(hid_t loc, const char *path, const char *name, hid_t gcpl, hid_t *out)
{
    *out = H5Gcreate2(loc, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    if (*out < 0)
        return H5_FAIL(FPTQ_ERR_IO, path, "cannot create group %s", name);
    return FPTQ_OK;
}

/* ---- HDF5 reading: everything checked against expectations ------------------- */

static fptq_status h5r_attr_open(hid_t obj, const char *path, const char *where, const char *key,
                                 H5T_class_t cls, hid_t *a, hid_t *t)
{
    *a = H5I_INVALID_HID;
    *t = H5I_INVALID_HID;
    htri_t has = H5Aexists(obj, key);
    if (has <= 0)
        return H5_FAIL(FPTQ_ERR_FORMAT, path, "%s has no attribute %s", where, key);
    hid_t sp = H5I_INVALID_HID;
    fptq_status st = FPTQ_OK;
    if ((*a = H5Aopen(obj, key, H5P_DEFAULT)) < 0 || (*t = H5Aget_type(*a)) < 0 ||
        (sp = H5Aget_space(*a)) < 0) {
        st = H5_FAIL(FPTQ_ERR_FORMAT, path, "cannot open attribute %s of %s", key, where);
    } else if (H5Tget_class(*t) != cls || H5Sget_simple_extent_npoints(sp) != 1 ||
               (cls == H5T_STRING && H5Tis_variable_str(*t) != 0)) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: attribute %s of %s has the wrong type or shape", path,
                       key, where);
    }
    h5_close_any(&sp);
    if (st != FPTQ_OK) {
        h5_close_any(t);
        h5_close_any(a);
    }
    return st;
}

static fptq_status h5r_attr(hid_t obj, const char *path, const char *where, const char *key,
                            H5T_class_t cls, hid_t mtype, void *val)
{
    hid_t a, t;
    FPTQ_TRY(h5r_attr_open(obj, path, where, key, cls, &a, &t));
    fptq_status st = FPTQ_OK;
    if (H5Aread(a, mtype, val) < 0)
        st = H5_FAIL(FPTQ_ERR_FORMAT, path, "cannot read attribute %s of %s", key, where);
    h5_close_any(&t);
    h5_close_any(&a);
    return st;
}

static fptq_status h5r_attr_i64(hid_t obj, const char *path, const char *where, const char *key,
                                int64_t *v)
{
    return h5r_attr(obj, path, where, key, H5T_INTEGER, H5T_NATIVE_INT64, v);
}

static fptq_status h5r_attr_str(hid_t obj, const char *path, const char *where, const char *key,
                                size_t max, char **out)
{
    *out = NULL;
    hid_t a, t;
    FPTQ_TRY(h5r_attr_open(obj, path, where, key, H5T_STRING, &a, &t));
    fptq_status st = FPTQ_OK;
    size_t sz = H5Tget_size(t);
    if (sz == 0 || sz > max) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: attribute %s of %s is %zu bytes long (at most %zu)",
                       path, key, where, sz, max);
        goto done;
    }
    FPTQ_TRY_GOTO(fptq_calloc(sz + 1, 1, "string attribute", out), st, done);
    /* read with the stored type itself: a fixed-length string has no byte
     * order, so nothing is converted (HDF5 would not convert character sets) */
    if (H5Aread(a, t, *out) < 0)
        st = H5_FAIL(FPTQ_ERR_FORMAT, path, "cannot read attribute %s of %s", key, where);
done:
    h5_close_any(&t);
    h5_close_any(&a);
    if (st != FPTQ_OK) {
        free(*out);
        *out = NULL;
    }
    return st;
}

/* Opens dataset `name` and checks its type class, element size, shape and the
 * bytes it actually stores against what the attributes promised, so nothing
 * is allocated for a size the file does not back. */
static fptq_status h5r_dset_open(hid_t loc, const char *path, const char *where, const char *name,
                                 H5T_class_t cls, size_t elsize, int ndim, const hsize_t *dims,
                                 hid_t *out)
{
    *out = H5I_INVALID_HID;
    htri_t has = H5Lexists(loc, name, H5P_DEFAULT);
    if (has <= 0)
        return H5_FAIL(FPTQ_ERR_FORMAT, path, "dataset %s is missing", where);
    fptq_status st = FPTQ_OK;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT), t = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    if (d < 0 || (t = H5Dget_type(d)) < 0 || (sp = H5Dget_space(d)) < 0) {
        st = H5_FAIL(FPTQ_ERR_FORMAT, path, "cannot open dataset %s", where);
        goto done;
    }
    if (H5Tget_class(t) != cls || H5Tget_size(t) != elsize) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: dataset %s has the wrong element type", path, where);
        goto done;
    }
    hsize_t got[H5S_MAX_RANK];
    int nd = H5Sget_simple_extent_ndims(sp);
    if (nd != ndim || H5Sget_simple_extent_dims(sp, got, NULL) != ndim) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: dataset %s has %d dimensions, expected %d", path,
                       where, nd, ndim);
        goto done;
    }
    hsize_t elems = 1;
    for (int i = 0; i < ndim; i++) {
        if (got[i] != dims[i]) {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT,
                           "%s: dataset %s has extent %llu in dimension %d, expected %llu", path,
                           where, (unsigned long long)got[i], i, (unsigned long long)dims[i]);
            goto done;
        }
        elems *= dims[i];
    }
    hsize_t stored = H5Dget_storage_size(d);
    if (stored != elems * elsize) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: dataset %s stores %llu bytes, expected %llu", path,
                       where, (unsigned long long)stored, (unsigned long long)(elems * elsize));
        goto done;
    }
done:
    h5_close_any(&sp);
    h5_close_any(&t);
    if (st == FPTQ_OK)
        *out = d;
    else
        h5_close_any(&d);
    return st;
}

static fptq_status h5r_dset_read(hid_t d, const char *path, const char *where, hid_t mtype, void *dst)
{
    if (H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0)
        return H5_FAIL(FPTQ_ERR_FORMAT, path, "cannot read dataset %s", where);
    return FPTQ_OK;
}

static fptq_status h5r_str_dset(hid_t loc, const char *path, const char *name, size_t max, char **out)
{
    *out = NULL;
    fptq_status st = FPTQ_OK;
    hid_t d = H5I_INVALID_HID, t = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0)
        return H5_FAIL(FPTQ_ERR_FORMAT, path, "dataset %s is missing", name);
    if ((d = H5Dopen2(loc, name, H5P_DEFAULT)) < 0 || (t = H5Dget_type(d)) < 0 ||
        (sp = H5Dget_space(d)) < 0) {
        st = H5_FAIL(FPTQ_ERR_FORMAT, path, "cannot open dataset %s", name);
        goto done;
    }
    size_t sz = H5Tget_size(t);
    if (H5Tget_class(t) != H5T_STRING || H5Tis_variable_str(t) != 0 ||
        H5Sget_simple_extent_npoints(sp) != 1 || sz == 0 || sz > max) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: dataset %s is not one string of at most %zu bytes",
                       path, name, max);
        goto done;
    }
    FPTQ_TRY_GOTO(fptq_calloc(sz + 1, 1, name, out), st, done);
    if (H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) < 0)
        st = H5_FAIL(FPTQ_ERR_FORMAT, path, "cannot read dataset %s", name);
done:
    h5_close_any(&sp);
    h5_close_any(&t);
    h5_close_any(&d);
    if (st != FPTQ_OK) {
        free(*out);
        *out = NULL;
    }
    return st;
}

/* ---- attributes as a table: one list drives the file and the digest -------- */

typedef enum { AV_I64 = 1, AV_F64 = 2, AV_F32 = 3, AV_STR = 4 } av_type;
typedef struct attr_val {
    const char *key;
    av_type type;
    int64_t i;
    double d;
    float f;
    const char *s;
} attr_val;

#define LIN_NATTR 12

static const char *format_name(quant_format f)
{
    return f == QFMT_INT ? "int" : f == QFMT_FP8_E4M3 ? "fp8_e4m3" : NULL;
}

static const char *const act_kind_names[] = {"none", "int8_static", "int8_dynamic", "fp8_static"};
#define N_ACT_KINDS ((int)(sizeof act_kind_names / sizeof act_kind_names[0]))

static const char *act_kind_name(act_quant_kind k)
{
    return (int)k >= 0 && (int)k < N_ACT_KINDS ? act_kind_names[k] : NULL;
}

/* The linear's attributes, in the fixed order both the file and the digest use. */
static void linear_attrs(const ckpt_linear *L, attr_val a[LIN_NATTR])
{
    const quant_tensor *q = &L->q;
    attr_val v[LIN_NATTR] = {
        {.key = "format", .type = AV_STR, .s = format_name(q->spec.format)},
        {.key = "bits", .type = AV_I64, .i = q->spec.bits},
        {.key = "group_size", .type = AV_I64, .i = q->spec.group_size},
        {.key = "sym", .type = AV_I64, .i = q->spec.sym},
        {.key = "rows", .type = AV_I64, .i = q->rows},
        {.key = "cols", .type = AV_I64, .i = q->cols},
        {.key = "n_groups", .type = AV_I64, .i = q->n_groups},
        {.key = "method", .type = AV_STR, .s = L->method},
        {.key = "damp", .type = AV_F32, .f = L->damp},
        {.key = "loss", .type = AV_F64, .d = L->loss},
        {.key = "act_kind", .type = AV_STR, .s = act_kind_name(L->act.kind)},
        {.key = "act_scale", .type = AV_F32, .f = L->act.scale},
    };
    memcpy(a, v, sizeof v);
}

static fptq_status h5w_attr_list(hid_t obj, const char *path, const char *where,
                                 const attr_val *a, int n)
{
    for (int i = 0; i < n; i++) {
        switch (a[i].type) {
        case AV_I64:
            FPTQ_TRY(h5w_attr(obj, path, where, a[i].key, H5T_STD_I64LE, H5T_NATIVE_INT64, &a[i].i));
            break;
        case AV_F64:
            FPTQ_TRY(h5w_attr(obj, path, where, a[i].key, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &a[i].d));
            break;
        case AV_F32:
            FPTQ_TRY(h5w_attr(obj, path, where, a[i].key, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, &a[i].f));
            break;
        case AV_STR:
            FPTQ_TRY(h5w_attr_str(obj, path, where, a[i].key, a[i].s));
            break;
        }
    }
    return FPTQ_OK;
}

/* ---- canonical digest stream ---------------------------------------------------
 * Every integer is 8 bytes little-endian, every string its length then its
 * bytes, every float its IEEE bits little-endian. An object is
 * "object", path, dtype tag, ndim, dims, attribute count, attributes
 * (key, type, value), then byte count and the data. HDF5's layout (object
 * addresses, heaps, padding) never enters. */

static void dg_u64(sha256_ctx *h, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    sha256_update(h, b, 8);
}

static void dg_str(sha256_ctx *h, const char *s)
{
    size_t n = strlen(s);
    dg_u64(h, n);
    sha256_update(h, s, n);
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static uint64_t f64_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}

static void dg_attrs(sha256_ctx *h, const attr_val *a, int n)
{
    dg_u64(h, (uint64_t)n);
    for (int i = 0; i < n; i++) {
        dg_str(h, a[i].key);
        dg_u64(h, a[i].type);
        switch (a[i].type) {
        case AV_I64: dg_u64(h, (uint64_t)a[i].i); break;
        case AV_F64: dg_u64(h, f64_bits(a[i].d)); break;
        case AV_F32: dg_u64(h, f32_bits(a[i].f)); break;
        case AV_STR: dg_str(h, a[i].s); break;
        }
    }
}

static void dg_object(sha256_ctx *h, const char *path, const char *dtype, int ndim,
                      const int64_t *dims, const attr_val *a, int nattr)
{
    dg_str(h, "object");
    dg_str(h, path);
    dg_str(h, dtype);
    dg_u64(h, (uint64_t)ndim);
    for (int i = 0; i < ndim; i++)
        dg_u64(h, (uint64_t)dims[i]);
    dg_attrs(h, a, nattr);
}

/* n elements of elsize bytes each, fed as little-endian, with no length. */
static void dg_bytes_le(sha256_ctx *h, const void *p, size_t n, size_t elsize)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    const uint8_t *s = p;
    uint8_t buf[4096];
    size_t per = sizeof buf / elsize;
    for (size_t i = 0; i < n; i += per) {
        size_t m = n - i < per ? n - i : per;
        for (size_t j = 0; j < m; j++)
            for (size_t k = 0; k < elsize; k++)
                buf[j * elsize + k] = s[(i + j) * elsize + (elsize - 1 - k)];
        sha256_update(h, buf, m * elsize);
    }
#else
    sha256_update(h, p, n * elsize);
#endif
}

/* An object's data: its byte count, then the bytes. */
static void dg_data(sha256_ctx *h, const void *p, size_t n, size_t elsize)
{
    dg_u64(h, (uint64_t)(n * elsize));
    dg_bytes_le(h, p, n, elsize);
}

static void dg_finish(sha256_ctx *h, char hex[65])
{
    uint8_t d[32];
    sha256_final(h, d);
    sha256_hex(d, hex);
}

static fptq_status linear_names_joined(const ckpt_layer *L, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < L->n_linears; i++) {
        int n = snprintf(out + used, cap - used, "%s%s", i ? "," : "", L->lin[i].name);
        if (n < 0 || (size_t)n >= cap - used)
            return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "layer %lld: linear names too long",
                             (long long)L->index);
        used += (size_t)n;
    }
    return FPTQ_OK;
}

#define LAYER_NATTR 6
#define NAMES_CAP (CKPT_MAX_LINEARS * 33)

static void layer_root_attrs(const ckpt_layer *L, const char *names, attr_val a[LAYER_NATTR])
{
    attr_val v[LAYER_NATTR] = {
        {.key = "format", .type = AV_STR, .s = LAYER_FORMAT},
        {.key = "version", .type = AV_I64, .i = LAYER_VERSION},
        {.key = "layer", .type = AV_I64, .i = L->index},
        {.key = "hidden", .type = AV_I64, .i = L->hidden},
        {.key = "n_linears", .type = AV_I64, .i = L->n_linears},
        {.key = "linears", .type = AV_STR, .s = names},
    };
    memcpy(a, v, sizeof v);
}

/* The layer's digest, from memory: what ckpt_write_layer stores and what
 * ckpt_read_layer gets back must give the same one. INT codes enter packed,
 * as stored, one row at a time. */
static fptq_status layer_digest(const ckpt_layer *L, char hex[65])
{
    char names[NAMES_CAP];
    FPTQ_TRY(linear_names_joined(L, names, sizeof names));
    attr_val ra[LAYER_NATTR];
    layer_root_attrs(L, names, ra);
    sha256_ctx h;
    sha256_init(&h);
    dg_str(&h, "fptq-layer-digest-v1");
    dg_object(&h, "/", "group", 0, NULL, ra, LAYER_NATTR);
    const int64_t hd[1] = {L->hidden};
    dg_object(&h, "/input_layernorm", "F32", 1, hd, NULL, 0);
    dg_data(&h, L->attn_norm, (size_t)L->hidden, 4);
    dg_object(&h, "/post_attention_layernorm", "F32", 1, hd, NULL, 0);
    dg_data(&h, L->mlp_norm, (size_t)L->hidden, 4);

    int32_t *row = NULL;
    size_t row_cap = 0;
    char obj[64];
    for (int i = 0; i < L->n_linears; i++) {
        const ckpt_linear *lin = &L->lin[i];
        const quant_tensor *q = &lin->q;
        attr_val la[LIN_NATTR];
        linear_attrs(lin, la);
        snprintf(obj, sizeof obj, "/%s", lin->name);
        dg_object(&h, obj, "group", 0, NULL, la, LIN_NATTR);
        if (q->spec.format == QFMT_INT) {
            int64_t pc = quant_packed_cols(q->cols, q->spec.bits);
            if ((size_t)pc > row_cap) {
                free(row);
                row = NULL;
                fptq_status st = fptq_calloc((size_t)pc, sizeof *row, "digest row buffer", &row);
                if (st != FPTQ_OK)
                    return st;
                row_cap = (size_t)pc;
            }
            const int64_t d[2] = {q->rows, pc};
            snprintf(obj, sizeof obj, "/%s/qweight_packed", lin->name);
            dg_object(&h, obj, "I32", 2, d, NULL, 0);
            /* one length for the whole matrix, then its rows as packed */
            dg_u64(&h, (uint64_t)(q->rows * pc * 4));
            for (int64_t r = 0; r < q->rows; r++) {
                quant_pack_int32(q->codes + r * q->cols, 1, q->cols, q->spec.bits, row);
                dg_bytes_le(&h, row, (size_t)pc, 4);
            }
        } else {
            const int64_t d[2] = {q->rows, q->cols};
            snprintf(obj, sizeof obj, "/%s/weight_fp8", lin->name);
            dg_object(&h, obj, "U8", 2, d, NULL, 0);
            dg_data(&h, q->codes, (size_t)(q->rows * q->cols), 1);
        }
        const int64_t gd[2] = {q->rows, q->n_groups};
        snprintf(obj, sizeof obj, "/%s/scales", lin->name);
        dg_object(&h, obj, "F32", 2, gd, NULL, 0);
        dg_data(&h, q->scales, (size_t)(q->rows * q->n_groups), 4);
        if (q->zeros) {
            snprintf(obj, sizeof obj, "/%s/zeros", lin->name);
            dg_object(&h, obj, "I32", 2, gd, NULL, 0);
            dg_data(&h, q->zeros, (size_t)(q->rows * q->n_groups), 4);
        }
        if (q->g_idx) {
            snprintf(obj, sizeof obj, "/%s/g_idx", lin->name);
            dg_object(&h, obj, "I32", 1, &q->cols, NULL, 0);
            dg_data(&h, q->g_idx, (size_t)q->cols, 4);
        }
        if (lin->bias) {
            snprintf(obj, sizeof obj, "/%s/bias", lin->name);
            dg_object(&h, obj, "F32", 1, &q->rows, NULL, 0);
            dg_data(&h, lin->bias, (size_t)q->rows, 4);
        }
    }
    free(row);
    dg_finish(&h, hex);
    return FPTQ_OK;
}

/* ---- validation of a layer, before writing and after reading ------------- */

static fptq_status check_dims(fptq_status bad, const char *what, const char *name, int64_t rows,
                              int64_t cols)
{
    if (rows < 1 || cols < 1 || rows > MAX_DIM || cols > MAX_DIM || rows * cols > MAX_ELEMS)
        return FPTQ_FAIL(bad, "%s: linear %s has shape [%lld, %lld] (each side 1..%d)",
                         what, name, (long long)rows, (long long)cols, MAX_DIM);
    return FPTQ_OK;
}

/* The quant_spec of a linear. Shared by both paths: before writing, a bad
 * value is a bug upstream (bad = FPTQ_ERR_INTERNAL); after reading, a damaged
 * file (FPTQ_ERR_FORMAT, `what` names it), checked before any allocation. */
static fptq_status check_spec(fptq_status bad, const char *what, const char *name,
                              const quant_spec *s, int64_t cols, int64_t n_groups)
{
    if (s->format != QFMT_INT && s->format != QFMT_FP8_E4M3)
        return FPTQ_FAIL(bad, "%s: linear %s has unknown format %d", what, name,
                         (int)s->format);
    if (s->format == QFMT_INT && (s->bits < 2 || s->bits > 8))
        return FPTQ_FAIL(bad, "%s: linear %s has %d-bit codes (2..8)", what, name, s->bits);
    if (s->format == QFMT_FP8_E4M3 && s->bits != 8)
        return FPTQ_FAIL(bad, "%s: FP8 linear %s has bits %d, expected 8", what, name,
                         s->bits);
    if (s->group_size < 0 || s->group_size > MAX_DIM)
        return FPTQ_FAIL(bad, "%s: linear %s has group size %lld", what, name,
                         (long long)s->group_size);
    if (s->sym != 0 && s->sym != 1)
        return FPTQ_FAIL(bad, "%s: linear %s has sym = %d (0 or 1)", what, name, s->sym);
    int64_t want = quant_n_groups(s, cols);
    if (n_groups != want)
        return FPTQ_FAIL(bad,
                         "%s: linear %s has %lld groups, but %lld columns in groups of %lld make %lld",
                         what, name, (long long)n_groups, (long long)cols, (long long)s->group_size,
                         (long long)want);
    return FPTQ_OK;
}

static fptq_status validate_layer(const char *what, const ckpt_layer *L)
{
    if (L->hidden < 1 || L->hidden > MAX_HIDDEN)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: hidden size %lld out of range", what, (long long)L->hidden);
    if (!L->attn_norm || !L->mlp_norm)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: norm weights missing", what);
    if (L->n_linears < 1 || L->n_linears > CKPT_MAX_LINEARS)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: %d linears (1..%d)", what, L->n_linears, CKPT_MAX_LINEARS);
    for (int i = 0; i < L->n_linears; i++) {
        const ckpt_linear *lin = &L->lin[i];
        const quant_tensor *q = &lin->q;
        if (!valid_name(lin->name, sizeof lin->name))
            return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: linear %d has an invalid name (letters, digits, '_', '.', '-')",
                             what, i);
        for (int j = 0; j < i; j++)
            if (strcmp(L->lin[j].name, lin->name) == 0)
                return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: linear %s appears twice", what, lin->name);
        if (strcmp(lin->name, "input_layernorm") == 0 || strcmp(lin->name, "post_attention_layernorm") == 0)
            return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: linear name %s is taken by a norm", what, lin->name);
        if (strnlen(lin->method, sizeof lin->method) == sizeof lin->method)
            return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: linear %s: method is not NUL-terminated", what, lin->name);
        if (!act_kind_name(lin->act.kind))
            return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: linear %s: unknown activation quantization %d", what,
                             lin->name, (int)lin->act.kind);
        fptq_status st = check_dims(FPTQ_ERR_INTERNAL, what, lin->name, q->rows, q->cols);
        if (st == FPTQ_OK)
            st = check_spec(FPTQ_ERR_INTERNAL, what, lin->name, &q->spec, q->cols, q->n_groups);
        if (st != FPTQ_OK)
            return st;
        if (!q->codes || !q->scales)
            return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: linear %s has no codes or scales", what, lin->name);
        if (q->spec.format == QFMT_INT && !q->zeros)
            return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: INT linear %s has no zero points", what, lin->name);
        if (q->spec.format == QFMT_FP8_E4M3 && (q->zeros || q->g_idx))
            return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: FP8 linear %s has zero points or g_idx", what, lin->name);
        if (q->spec.format == QFMT_INT) {
            /* a code out of range would be silently cut by packing */
            uint8_t lim = (uint8_t)((1u << q->spec.bits) - 1);
            for (int64_t k = 0; k < q->rows * q->cols; k++)
                if (q->codes[k] > lim)
                    return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: linear %s: code %u at %lld exceeds %d bits",
                                     what, lin->name, q->codes[k], (long long)k, q->spec.bits);
        }
        if (q->g_idx)
            for (int64_t k = 0; k < q->cols; k++)
                if (q->g_idx[k] < 0 || q->g_idx[k] >= q->n_groups)
                    return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: linear %s: g_idx[%lld] = %d outside [0, %lld)",
                                     what, lin->name, (long long)k, (int)q->g_idx[k],
                                     (long long)q->n_groups);
    }
    return FPTQ_OK;
}

/* ---- manifest --------------------------------------------------------------- */

static void json_number(char *buf, size_t cap, double v, int sig)
{
    if (isfinite(v))
        snprintf(buf, cap, "%.*g", sig, v);
    else
        snprintf(buf, cap, "null");   /* JSON has no NaN / Infinity */
}

static fptq_status build_losses_json(const ckpt_layer *L, char **out)
{
    char buf[CKPT_MAX_LINEARS * 128 + 8];
    size_t used = 0;
    used += (size_t)snprintf(buf, sizeof buf, "{");
    for (int i = 0; i < L->n_linears; i++) {
        char loss[32], damp[32];
        json_number(loss, sizeof loss, L->lin[i].loss, 17);
        json_number(damp, sizeof damp, L->lin[i].damp, 9);
        used += (size_t)snprintf(buf + used, sizeof buf - used, "%s\"%s\": {\"loss\": %s, \"damp\": %s}",
                                 i ? ", " : "", L->lin[i].name, loss, damp);
    }
    snprintf(buf + used, sizeof buf - used, "}");
    return dup_str(buf, "manifest losses", out);
}

static fptq_status build_entry_json(int64_t l, manifest_entry *e)
{
    char secs[32];
    json_number(secs, sizeof secs, e->seconds, 17);
    char *s;
    FPTQ_TRY(path_fmt(&s, "{\"layer\": %lld, \"status\": \"%s\", \"digest\": \"%s\", \"seconds\": %s, \"losses\": %s}",
                      (long long)l, e->done ? "done" : "pending", e->digest, secs, e->losses_json));
    free(e->entry_json);
    e->entry_json = s;
    return FPTQ_OK;
}

static fptq_status entry_set(int64_t l, manifest_entry *e, int done, const char *digest,
                             double seconds, const char *losses)
{
    char *lj;
    FPTQ_TRY(dup_str(losses, "manifest losses", &lj));
    free(e->losses_json);
    e->losses_json = lj;
    e->done = done;
    snprintf(e->digest, sizeof e->digest, "%s", digest);
    e->seconds = seconds;
    return build_entry_json(l, e);
}

static void entry_free(manifest_entry *e)
{
    free(e->losses_json);
    free(e->entry_json);
    e->losses_json = e->entry_json = NULL;
}

/* ---- index.h5 ---------------------------------------------------------------- */

/* sha256 over every value index.h5 holds and a reader uses: format,
 * version, layer count, the shared tensors' digest, the config, recipe and
 * provenance texts, and each manifest entry (status, digest, seconds,
 * losses). Stored beside them as index_digest and checked on every open, so
 * a damaged text (a patched rope_theta, bytes that are not UTF-8) is refused
 * instead of used. It includes the time stamps and seconds, so it is not the
 * checkpoint's identity (ckpt_digest is): only its integrity. */
static void index_digest(const ckpt *c, char hex[65])
{
    sha256_ctx h;
    sha256_init(&h);
    dg_str(&h, "fptq-index-digest-v1");
    dg_str(&h, INDEX_FORMAT);
    dg_u64(&h, CKPT_VERSION);
    dg_u64(&h, (uint64_t)c->n_layers);
    dg_str(&h, c->shared_digest);
    dg_str(&h, c->config_json);
    dg_str(&h, c->recipe_json);
    dg_str(&h, c->provenance_json);
    for (int64_t l = 0; l < c->n_layers; l++) {
        const manifest_entry *e = &c->man[l];
        dg_u64(&h, (uint64_t)l);
        dg_str(&h, e->done ? "done" : "pending");
        dg_str(&h, e->digest);
        dg_u64(&h, f64_bits(e->seconds));
        dg_str(&h, e->losses_json);
    }
    dg_finish(&h, hex);
}

static fptq_status index_fill(const ckpt *c, const char *path, hid_t f, const h5_wprops *p)
{
    const char *root = "/";
    int64_t version = CKPT_VERSION;
    FPTQ_TRY(h5w_attr_str(f, path, root, "format", INDEX_FORMAT));
    FPTQ_TRY(h5w_attr(f, path, root, "version", H5T_STD_I64LE, H5T_NATIVE_INT64, &version));
    FPTQ_TRY(h5w_attr(f, path, root, "n_layers", H5T_STD_I64LE, H5T_NATIVE_INT64, &c->n_layers));
    FPTQ_TRY(h5w_attr_str(f, path, root, "shared_digest", c->shared_digest));
    char idx[65];
    index_digest(c, idx);
    FPTQ_TRY(h5w_attr_str(f, path, root, "index_digest", idx));
    FPTQ_TRY(h5w_str_dset(f, path, "config_json", c->config_json, p->dcpl));
    FPTQ_TRY(h5w_str_dset(f, path, "recipe_json", c->recipe_json, p->dcpl));
    FPTQ_TRY(h5w_str_dset(f, path, "provenance_json", c->provenance_json, p->dcpl));

    fptq_status st = FPTQ_OK;
    hid_t man = H5I_INVALID_HID, layers = H5I_INVALID_HID, g = H5I_INVALID_HID;
    FPTQ_TRY_GOTO(h5w_group(f, path, "manifest", p->gcpl, &man), st, done);
    FPTQ_TRY_GOTO(h5w_group(f, path, "layers", p->gcpl, &layers), st, done);
    for (int64_t l = 0; l < c->n_layers; l++) {
        const manifest_entry *e = &c->man[l];
        char name[32], where[48], target[48];
        snprintf(name, sizeof name, "layer-%05lld", (long long)l);
        snprintf(where, sizeof where, "/manifest/%s", name);
        FPTQ_TRY_GOTO(h5w_group(man, path, name, p->gcpl, &g), st, done);
        FPTQ_TRY_GOTO(h5w_attr_str(g, path, where, "status", e->done ? "done" : "pending"), st, done);
        FPTQ_TRY_GOTO(h5w_attr_str(g, path, where, "digest", e->digest), st, done);
        FPTQ_TRY_GOTO(h5w_attr(g, path, where, "seconds", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE,
                               &e->seconds), st, done);
        FPTQ_TRY_GOTO(h5w_attr_str(g, path, where, "losses_json", e->losses_json), st, done);
        h5_close_any(&g);
        if (e->done) {
            /* relative to index.h5's folder: HDF5 looks there for external
             * link targets, so the checkpoint can be moved as a whole */
            snprintf(target, sizeof target, "layers/%s.h5", name);
            if (H5Lcreate_external(target, "/", layers, name, H5P_DEFAULT, H5P_DEFAULT) < 0) {
                st = H5_FAIL(FPTQ_ERR_IO, path, "cannot create external link /layers/%s", name);
                goto done;
            }
        }
    }
    if (c->shared_digest[0] &&
        H5Lcreate_external("shared.h5", "/", f, "shared", H5P_DEFAULT, H5P_DEFAULT) < 0)
        st = H5_FAIL(FPTQ_ERR_IO, path, "cannot create external link /shared");
done:
    h5_close_any(&g);
    h5_close_any(&layers);
    h5_close_any(&man);
    return st;
}

/* The whole index, rewritten to index.h5.tmp and renamed over index.h5: a
 * reader sees either the previous manifest or the new one, never a mix. */
static fptq_status index_write_as(const ckpt *c, int first)
{
    if (c->layers_only)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "checkpoint %s: opened for its layers only, its index is not rewritten",
                         c->dir);
    char *tmp = NULL, *final = NULL;
    fptq_status st = FPTQ_OK;
    h5_wprops p = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};
    hid_t f = H5I_INVALID_HID;
    FPTQ_TRY_GOTO(path_fmt(&final, "%s/index.h5", c->dir), st, done);
    FPTQ_TRY_GOTO(tmp_path(final, &tmp), st, done);
    FPTQ_TRY_GOTO(h5_wprops_init(tmp, &p), st, done);
    FPTQ_TRY_GOTO(h5_create_file(tmp, &p, &f), st, done);
    FPTQ_TRY_GOTO(index_fill(c, tmp, f, &p), st, done);
    FPTQ_TRY_GOTO(h5_close_file(tmp, &f), st, done);
    if (first)
        FPTQ_TRY_GOTO(commit_file_new(tmp, final, c->dir), st, done);
    else
        FPTQ_TRY_GOTO(commit_file(tmp, final, c->dir), st, done);
done:
    h5_close_any(&f);
    h5_wprops_close(&p);
    if (st != FPTQ_OK && tmp)
        unlink(tmp);
    free(tmp);
    free(final);
    return st;
}

static fptq_status index_write(const ckpt *c) { return index_write_as(c, 0); }

static fptq_status index_read(ckpt *c, const char *path)
{
    fptq_status st = FPTQ_OK;
    hid_t f = H5I_INVALID_HID, g = H5I_INVALID_HID;
    char *s = NULL;
    f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return H5_FAIL(FPTQ_ERR_FORMAT, path, "cannot open the checkpoint index");
    const char *root = "/";
    FPTQ_TRY_GOTO(h5r_attr_str(f, path, root, "format", MAX_ATTR_STR, &s), st, done);
    if (strcmp(s, INDEX_FORMAT) != 0) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: format \"%.64s\", expected \"%s\": not an fptq checkpoint",
                       path, s, INDEX_FORMAT);
        goto done;
    }
    int64_t version;
    FPTQ_TRY_GOTO(h5r_attr_i64(f, path, root, "version", &version), st, done);
    if (version != CKPT_VERSION) {
        st = FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: checkpoint version %lld, this fptq reads version %d",
                       path, (long long)version, CKPT_VERSION);
        goto done;
    }
    FPTQ_TRY_GOTO(h5r_attr_i64(f, path, root, "n_layers", &c->n_layers), st, done);
    if (c->n_layers < 1 || c->n_layers > (int)FPTQ_MAX_LAYERS) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: n_layers %lld out of range 1..%d", path,
                       (long long)c->n_layers, (int)FPTQ_MAX_LAYERS);
        goto done;
    }
    free(s);
    s = NULL;
    FPTQ_TRY_GOTO(h5r_attr_str(f, path, root, "shared_digest", MAX_ATTR_STR, &s), st, done);
    if (s[0] && !valid_hex_digest(s)) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: shared_digest is not a sha256 hex digest", path);
        goto done;
    }
    snprintf(c->shared_digest, sizeof c->shared_digest, "%s", s);
    free(s);
    s = NULL;
    char stored_idx[65];
    FPTQ_TRY_GOTO(h5r_attr_str(f, path, root, "index_digest", MAX_ATTR_STR, &s), st, done);
    if (!valid_hex_digest(s)) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: index_digest is not a sha256 hex digest (corrupted)", path);
        goto done;
    }
    snprintf(stored_idx, sizeof stored_idx, "%s", s);
    FPTQ_TRY_GOTO(h5r_str_dset(f, path, "config_json", MAX_JSON, &c->config_json), st, done);
    FPTQ_TRY_GOTO(h5r_str_dset(f, path, "recipe_json", MAX_JSON, &c->recipe_json), st, done);
    FPTQ_TRY_GOTO(h5r_str_dset(f, path, "provenance_json", MAX_JSON, &c->provenance_json), st, done);

    FPTQ_TRY_GOTO(fptq_calloc((size_t)c->n_layers, sizeof *c->man, "checkpoint manifest", &c->man),
                  st, done);
    for (int64_t l = 0; l < c->n_layers; l++) {
        char where[48];
        snprintf(where, sizeof where, "/manifest/layer-%05lld", (long long)l);
        if (H5Lexists(f, "manifest", H5P_DEFAULT) <= 0 || H5Lexists(f, where, H5P_DEFAULT) <= 0 ||
            (g = H5Gopen2(f, where, H5P_DEFAULT)) < 0) {
            st = H5_FAIL(FPTQ_ERR_FORMAT, path, "manifest entry %s is missing", where);
            goto done;
        }
        char *status = NULL, *digest = NULL, *losses = NULL;
        double seconds = 0;
        st = h5r_attr_str(g, path, where, "status", MAX_ATTR_STR, &status);
        if (st == FPTQ_OK)
            st = h5r_attr_str(g, path, where, "digest", MAX_ATTR_STR, &digest);
        if (st == FPTQ_OK)
            st = h5r_attr(g, path, where, "seconds", H5T_FLOAT, H5T_NATIVE_DOUBLE, &seconds);
        if (st == FPTQ_OK)
            st = h5r_attr_str(g, path, where, "losses_json", MAX_JSON, &losses);
        if (st == FPTQ_OK) {
            int done_ = strcmp(status, "done") == 0;
            if (!done_ && strcmp(status, "pending") != 0)
                st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s has status \"%.32s\" (done or pending)", path,
                               where, status);
            else if (done_ ? !valid_hex_digest(digest) : digest[0] != '\0')
                st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s has a malformed digest", path, where);
            else
                st = entry_set(l, &c->man[l], done_, digest, seconds, losses);
        }
        free(status);
        free(digest);
        free(losses);
        h5_close_any(&g);
        if (st != FPTQ_OK) {
            fptq_trace(__FILE__, __LINE__, "manifest entry");
            goto done;
        }
    }
    char idx[65];
    index_digest(c, idx);
    if (strcmp(idx, stored_idx) != 0)
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT,
                       "%s: the stored config, recipe, provenance and manifest do not match their digest "
                       "(index.h5 is corrupted): content %.16s..., index_digest %.16s...; the checkpoint cannot "
                       "be trusted, quantize into a new directory",
                       path, idx, stored_idx);
done:
    free(s);
    h5_close_any(&g);
    if (f >= 0 && H5Fclose(f) < 0 && st == FPTQ_OK)
        st = H5_FAIL(FPTQ_ERR_IO, path, "cannot close file");
    return st;
}

/* ---- open / create / close --------------------------------------------------- */

static fptq_status shared_verify(const ckpt *c, const char *path);

/* shared.h5 opened and its content checked against the index's digest: a
 * flipped bit in the embedding, a truncated or replaced file is refused
 * here, before any reader uses a value from it. */
static fptq_status open_shared(ckpt *c)
{
    char *path;
    FPTQ_TRY(path_fmt(&path, "%s/shared.h5", c->dir));
    fptq_status st = FPTQ_OK;
    c->shared_file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (c->shared_file < 0)
        st = H5_FAIL(FPTQ_ERR_FORMAT, path, "the index lists shared tensors but the file cannot be opened "
                     "(missing, truncated or not HDF5); fptq quantize --resume rewrites it from the model");
    else
        st = shared_verify(c, path);
    if (st != FPTQ_OK && c->shared_file >= 0) {
        H5Fclose(c->shared_file);
        c->shared_file = H5I_INVALID_HID;
    }
    free(path);
    return st;
}

static fptq_status ckpt_alloc(const char *dir, ckpt **out)
{
    ckpt *c;
    FPTQ_TRY(fptq_calloc(1, sizeof *c, "checkpoint", &c));
    c->shared_file = H5I_INVALID_HID;
    fptq_status st = dup_str(dir, "checkpoint directory name", &c->dir);
    if (st != FPTQ_OK) {
        free(c);
        return st;
    }
    *out = c;
    return FPTQ_OK;
}

void ckpt_close(ckpt *c)
{
    if (!c)
        return;
    if (c->shared_file >= 0)
        H5Fclose(c->shared_file);
    free(c->shared_problem);
    if (c->man)
        for (int64_t l = 0; l < c->n_layers; l++)
            entry_free(&c->man[l]);
    free(c->man);
    free(c->config_json);
    free(c->recipe_json);
    free(c->provenance_json);
    free(c->dir);
    free(c);
}

/* mkdir -p of every folder above dir (dir itself is created by the caller). */
static fptq_status make_parents(const char *dir)
{
    char path[4096];
    if (strlen(dir) >= sizeof path)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint directory path too long: %s", dir);
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            return FPTQ_FAIL(FPTQ_ERR_IO, "cannot create folder %s for checkpoint %s: %s", path, dir, strerror(errno));
        *p = '/';
    }
    return FPTQ_OK;
}

/* What an existing folder holds, for a checkpoint that may be created in
 * it: index.h5 (a checkpoint), only fptq's own skeleton (layers/ with
 * temporary files at most, the lock, temporary index or shared files: what
 * a run killed before its first index leaves, which counts as not created
 * yet), or something else (named in `foreign`). */
static int is_tmp_name(const char *name, const char *base)
{
    size_t n = strlen(base);
    return strncmp(name, base, n) == 0 && strncmp(name + n, ".tmp", 4) == 0;
}

static fptq_status dir_state(const char *dir, int *has_index, char foreign[256])
{
    *has_index = 0;
    foreign[0] = '\0';
    DIR *d = opendir(dir);
    if (!d)
        return FPTQ_FAIL(FPTQ_ERR_IO, "cannot list checkpoint directory %s: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0 || strcmp(n, LOCK_NAME) == 0 ||
            is_tmp_name(n, "index.h5") || is_tmp_name(n, "shared.h5"))
            continue;
        if (strcmp(n, "index.h5") == 0) {
            *has_index = 1;
            continue;
        }
        if (strcmp(n, "layers") == 0) {
            char sub[4096];
            snprintf(sub, sizeof sub, "%s/layers", dir);
            DIR *ld = opendir(sub);
            struct dirent *le;
            while (ld && (le = readdir(ld)) != NULL)
                if (le->d_name[0] != '.' && !strstr(le->d_name, ".h5.tmp") && !foreign[0])
                    snprintf(foreign, 256, "layers/%.200s", le->d_name);
            if (ld)
                closedir(ld);
            else if (!foreign[0])
                snprintf(foreign, 256, "layers (not a folder)");
            continue;
        }
        if (!foreign[0])
            snprintf(foreign, 256, "%s", n);
    }
    closedir(d);
    return FPTQ_OK;
}

static const char *const REFUSE_EXISTING =
    "checkpoint directory %s already exists: pass --resume to continue it, or pick another directory";

fptq_status ckpt_create(const char *dir, const ckpt_meta *meta, ckpt **out)
{
    *out = NULL;
    h5_quiet();
    if (!dir || !dir[0])
        return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint directory name is empty");
    if (meta->n_layers < 1 || meta->n_layers > (int)FPTQ_MAX_LAYERS)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s: n_layers %lld out of range 1..%d", dir,
                         (long long)meta->n_layers, (int)FPTQ_MAX_LAYERS);
    /* A folder with only fptq's skeleton (a run killed before its first
     * index) is not a checkpoint yet and is taken over; one with index.h5
     * or anything else is refused, never overwritten. */
    struct stat sb;
    int made_dir = 0, made_layers = 0;
    if (lstat(dir, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode))
            return FPTQ_FAIL(FPTQ_ERR_ARG, REFUSE_EXISTING, dir);
    } else if (errno != ENOENT) {
        return FPTQ_FAIL(FPTQ_ERR_IO, "cannot check checkpoint directory %s: %s", dir, strerror(errno));
    } else {
        FPTQ_TRY(make_parents(dir));
        if (mkdir(dir, 0777) == 0)
            made_dir = 1;
        else if (errno != EEXIST)
            return FPTQ_FAIL(FPTQ_ERR_IO, "cannot create checkpoint directory %s: %s", dir, strerror(errno));
    }
    int has_index;
    char foreign[256];
    FPTQ_TRY(dir_state(dir, &has_index, foreign));
    if (has_index || foreign[0])
        return FPTQ_FAIL(FPTQ_ERR_ARG, REFUSE_EXISTING, dir);

    ckpt *c = NULL;
    char *layers = NULL, *parent = NULL;
    fptq_status st = FPTQ_OK;
    FPTQ_TRY_GOTO(ckpt_alloc(dir, &c), st, fail);
    FPTQ_TRY_GOTO(path_fmt(&layers, "%s/layers", dir), st, fail);
    if (mkdir(layers, 0777) == 0) {
        made_layers = 1;
    } else if (errno != EEXIST) {
        st = FPTQ_FAIL(FPTQ_ERR_IO, "cannot create %s: %s", layers, strerror(errno));
        goto fail;
    }
    FPTQ_TRY_GOTO(parent_dir(dir, &parent), st, fail);
    FPTQ_TRY_GOTO(fsync_path(parent, 1), st, fail);
    c->n_layers = meta->n_layers;
    FPTQ_TRY_GOTO(dup_str(meta->config_json ? meta->config_json : "", "config json", &c->config_json), st, fail);
    FPTQ_TRY_GOTO(dup_str(meta->recipe_json ? meta->recipe_json : "", "recipe json", &c->recipe_json), st, fail);
    FPTQ_TRY_GOTO(dup_str(meta->provenance_json ? meta->provenance_json : "", "provenance json",
                          &c->provenance_json), st, fail);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)c->n_layers, sizeof *c->man, "checkpoint manifest", &c->man),
                  st, fail);
    for (int64_t l = 0; l < c->n_layers; l++)
        FPTQ_TRY_GOTO(entry_set(l, &c->man[l], 0, "", 0.0, "{}"), st, fail);
    /* the checkpoint exists from this link on, and only one creator gets it */
    FPTQ_TRY_GOTO(index_write_as(c, 1), st, fail);
    free(layers);
    free(parent);
    *out = c;
    return FPTQ_OK;

fail:
    /* only what this call made is removed (rmdir leaves a folder someone filled) */
    if (layers && made_layers)
        rmdir(layers);
    if (made_dir)
        rmdir(dir);
    free(layers);
    free(parent);
    ckpt_close(c);
    fptq_error_context("creating checkpoint %s", dir);
    return st;
}

/* ---- the lock ------------------------------------------------------------------ */

struct ckpt_lock {
    int fd;
    char *dir, *path;
    int made_dir;
};

/* The holder's line, read from the lock file; a holder that has just taken
 * the lock writes it within moments, so an empty file is read again for up
 * to 2 s before the message says only "a run that has just started". */
static void lock_holder(int fd, char *buf, size_t cap)
{
    ssize_t n = 0;
    for (int tries = 0; tries < 100; tries++) {
        n = pread(fd, buf, cap - 1, 0);
        if (n > 0 && memchr(buf, '\n', (size_t)n))
            break;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    buf[n > 0 ? n : 0] = '\0';
    for (char *p = buf; *p; p++)
        if (*p == '\n' || (unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = (*p == '\n' && !p[1]) ? '\0' : '?';
    if (!buf[0])
        snprintf(buf, cap, "a run that has just started");
}

/* A probe file made and removed: writability as the run will need it,
 * checked before any work (EROFS, EACCES, a full disk). */
static fptq_status probe_writable(const char *folder, const char *dir)
{
    char *p;
    FPTQ_TRY(path_fmt(&p, "%s/.fptq-probe.%ld", folder, (long)getpid()));
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    fptq_status st = FPTQ_OK;
    if (fd < 0)
        st = FPTQ_FAIL(FPTQ_ERR_IO, "checkpoint %s is not writable: cannot create a file in %s: %s", dir, folder,
                       strerror(errno));
    else {
        close(fd);
        unlink(p);
    }
    free(p);
    return st;
}

/* "pid P on host H since T" into the held lock file: written over the old
 * bytes, then cut to length, so that a reader never sees it empty. */
static fptq_status lock_write_holder(const ckpt_lock *k)
{
    char host[256] = "?", when[32];
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    char info[400];
    int n = snprintf(info, sizeof info, "pid %ld on host %s since %s\n", (long)getpid(), host, when);
    if (pwrite(k->fd, info, (size_t)n, 0) != n || ftruncate(k->fd, n) != 0)
        return FPTQ_FAIL(FPTQ_ERR_IO, "checkpoint %s is not writable: cannot write its lock file %s: %s", k->dir,
                         k->path, strerror(errno));
    return FPTQ_OK;
}

fptq_status ckpt_lock_take(const char *dir, int resume, ckpt_lock **out)
{
    *out = NULL;
    if (!dir || !dir[0])
        return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint directory name is empty");
    struct stat sb;
    int made_dir = 0, has_index;
    char foreign[256];
    if (lstat(dir, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode))
            return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s exists and is not a directory", dir);
        /* refusals that need no lock touch nothing */
        FPTQ_TRY(dir_state(dir, &has_index, foreign));
        if (has_index && !resume)
            return FPTQ_FAIL(FPTQ_ERR_ARG, REFUSE_EXISTING, dir);
        if (!has_index && foreign[0])
            return FPTQ_FAIL(FPTQ_ERR_ARG, "%s exists and is not an fptq checkpoint (no index.h5; it holds %s): "
                             "pick another directory", dir, foreign);
    } else if (errno != ENOENT) {
        return FPTQ_FAIL(FPTQ_ERR_IO, "cannot check checkpoint directory %s: %s", dir, strerror(errno));
    } else {
        FPTQ_TRY(make_parents(dir));
        if (mkdir(dir, 0777) == 0)
            made_dir = 1;
        else if (errno != EEXIST)
            return FPTQ_FAIL(FPTQ_ERR_IO, "cannot create checkpoint directory %s: %s", dir, strerror(errno));
    }
    ckpt_lock *k;
    FPTQ_TRY(fptq_calloc(1, sizeof *k, "checkpoint lock", &k));
    k->fd = -1;
    k->made_dir = made_dir;
    fptq_status st = FPTQ_OK;
    FPTQ_TRY_GOTO(dup_str(dir, "checkpoint directory name", &k->dir), st, fail);
    FPTQ_TRY_GOTO(path_fmt(&k->path, "%s/" LOCK_NAME, dir), st, fail);
    /* A holder removes the lock file as it lets go: a lock taken on a file
     * that is no longer the one at that name is stale, and taken again. */
    for (int tries = 0;; tries++) {
        k->fd = open(k->path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        if (k->fd < 0) {
            st = FPTQ_FAIL(FPTQ_ERR_IO, "checkpoint %s is not writable: cannot open its lock file %s: %s", dir,
                           k->path, strerror(errno));
            goto fail;
        }
        if (flock(k->fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            char who[256];
            if (e == EWOULDBLOCK)
                lock_holder(k->fd, who, sizeof who);
            close(k->fd);
            k->fd = -1;
            if (e == EWOULDBLOCK)
                st = FPTQ_FAIL(FPTQ_ERR_IO, "checkpoint %s is in use by another fptq quantize (%s, lock %s): "
                               "wait for it to end or stop it; nothing was changed", dir, who, k->path);
            else
                st = FPTQ_FAIL(FPTQ_ERR_IO, "cannot lock %s: %s", k->path, strerror(e));
            made_dir = k->made_dir = 0;   /* the folder is someone else's now */
            goto fail;
        }
        struct stat a, b;
        if (fstat(k->fd, &a) == 0 && stat(k->path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
            break;
        close(k->fd);
        k->fd = -1;
        if (tries > 100) {
            st = FPTQ_FAIL(FPTQ_ERR_IO, "cannot take the lock %s: it keeps being replaced", k->path);
            goto fail;
        }
    }
    /* who holds it, written first so that a run refused a moment later can
     * name the holder (lock_holder waits a little for these bytes) */
    FPTQ_TRY_GOTO(lock_write_holder(k), st, fail);
    /* under the lock: what another run may have made meanwhile, then writability */
    FPTQ_TRY_GOTO(dir_state(dir, &has_index, foreign), st, fail);
    if (has_index && !resume) {
        st = FPTQ_FAIL(FPTQ_ERR_ARG, REFUSE_EXISTING, dir);
        goto fail;
    }
    FPTQ_TRY_GOTO(probe_writable(dir, dir), st, fail);
    char layers[4096];
    snprintf(layers, sizeof layers, "%s/layers", dir);
    if (has_index)
        FPTQ_TRY_GOTO(probe_writable(layers, dir), st, fail);
    *out = k;
    return FPTQ_OK;
fail:
    ckpt_lock_release(k);
    return st;
}

void ckpt_lock_release(ckpt_lock *k)
{
    if (!k)
        return;
    if (k->fd >= 0) {
        /* removed while held, so that a finished checkpoint holds no lock
         * file; a run that failed before the checkpoint's first index
         * leaves no folder it made either */
        unlink(k->path);
        if (k->made_dir) {
            char layers[4096];
            snprintf(layers, sizeof layers, "%s/layers", k->dir);
            char idx[4096];
            snprintf(idx, sizeof idx, "%s/index.h5", k->dir);
            struct stat sb;
            if (stat(idx, &sb) != 0) {
                rmdir(layers);
                rmdir(k->dir);
            }
        }
        close(k->fd);
    }
    free(k->dir);
    free(k->path);
    free(k);
}

static fptq_status open_mode(const char *dir, int resume, ckpt **out);
fptq_status ckpt_open(const char *dir, ckpt **out) { return open_mode(dir, 0, out); }
fptq_status ckpt_open_resume(const char *dir, ckpt **out) { return open_mode(dir, 1, out); }
fptq_status ckpt_open_layers(const char *dir, ckpt **out) { return open_mode(dir, 2, out); }
const char *ckpt_shared_problem(const ckpt *c) { return c->shared_problem; }

static fptq_status open_mode(const char *dir, int resume, ckpt **out)
{
    *out = NULL;
    h5_quiet();
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return FPTQ_FAIL(FPTQ_ERR_IO, "checkpoint directory %s: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s is not a directory", dir);
    ckpt *c;
    FPTQ_TRY(ckpt_alloc(dir, &c));
    char *path = NULL;
    fptq_status st = FPTQ_OK;
    FPTQ_TRY_GOTO(path_fmt(&path, "%s/index.h5", dir), st, fail);
    if (stat(path, &sb) != 0) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s has no index.h5: not an fptq checkpoint", dir);
        goto fail;
    }
    FPTQ_TRY_GOTO(index_read(c, path), st, fail);
    if (resume == 2) {
        c->shared_digest[0] = '\0';   /* not opened: this user reads layers only */
        c->layers_only = 1;
    } else if (c->shared_digest[0]) {
        st = open_shared(c);
        if (st != FPTQ_OK && resume) {
            /* shared.h5 is rebuilt from the model: set it aside, as not written */
            FPTQ_TRY_GOTO(dup_str(fptq_last_error(), "shared.h5 problem", &c->shared_problem), st, fail);
            fptq_clear_error();
            c->shared_digest[0] = '\0';
            st = FPTQ_OK;
        }
        FPTQ_TRY_GOTO(st, st, fail);
    }
    free(path);
    *out = c;
    return FPTQ_OK;
fail:
    free(path);
    ckpt_close(c);
    return st;
}

const char *ckpt_config_json(const ckpt *c) { return c->config_json; }
const char *ckpt_recipe_json(const ckpt *c) { return c->recipe_json; }
const char *ckpt_provenance_json(const ckpt *c) { return c->provenance_json; }
int64_t ckpt_n_layers(const ckpt *c) { return c->n_layers; }

/* ---- shared.h5 ---------------------------------------------------------------- */

static int shared_dtype_ok(const char *d)
{
    return d && (strcmp(d, "F32") == 0 || strcmp(d, "BF16") == 0 || strcmp(d, "F16") == 0);
}

static size_t shared_elsize(const char *d) { return strcmp(d, "F32") == 0 ? 4 : 2; }

static int cmp_tensor_name(const void *a, const void *b)
{
    const ckpt_raw_tensor *x = *(const ckpt_raw_tensor *const *)a;
    const ckpt_raw_tensor *y = *(const ckpt_raw_tensor *const *)b;
    return strcmp(x->name, y->name);
}

fptq_status ckpt_write_shared(ckpt *c, const ckpt_raw_tensor *t, int n)
{
    h5_quiet();
    if (c->shared_digest[0])
        return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s: shared tensors are already written", c->dir);
    if (n < 1)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s: no shared tensors to write", c->dir);
    for (int i = 0; i < n; i++) {
        if (!t[i].name || !valid_name(t[i].name, 64))
            return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s: shared tensor %d has an invalid name", c->dir, i);
        if (!shared_dtype_ok(t[i].dtype))
            return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s: shared tensor %s has dtype %s (F32, BF16, F16)",
                             c->dir, t[i].name, t[i].dtype ? t[i].dtype : "(null)");
        if (t[i].ndim < 1 || t[i].ndim > 2 || !t[i].data)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s: shared tensor %s must be 1-D or 2-D with data",
                             c->dir, t[i].name);
        int64_t elems = 1;
        for (int k = 0; k < t[i].ndim; k++) {
            if (t[i].shape[k] < 1 || t[i].shape[k] > MAX_DIM)
                return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s: shared tensor %s has extent %lld",
                                 c->dir, t[i].name, (long long)t[i].shape[k]);
            elems *= t[i].shape[k];
        }
        if (elems > MAX_ELEMS)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s: shared tensor %s is too large", c->dir, t[i].name);
        for (int j = 0; j < i; j++)
            if (strcmp(t[j].name, t[i].name) == 0)
                return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s: shared tensor %s appears twice", c->dir,
                                 t[i].name);
    }

    fptq_status st = FPTQ_OK;
    char *tmp = NULL, *final = NULL;
    const ckpt_raw_tensor **sorted = NULL;
    h5_wprops p = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};
    hid_t f = H5I_INVALID_HID, d = H5I_INVALID_HID;
    FPTQ_TRY_GOTO(path_fmt(&final, "%s/shared.h5", c->dir), st, done);
    FPTQ_TRY_GOTO(tmp_path(final, &tmp), st, done);

    /* the digest takes the tensors by name, so the caller's order does not matter */
    FPTQ_TRY_GOTO(fptq_calloc((size_t)n, sizeof *sorted, "shared tensor list", &sorted), st, done);
    for (int i = 0; i < n; i++)
        sorted[i] = &t[i];
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_tensor_name);
    sha256_ctx h;
    sha256_init(&h);
    dg_str(&h, "fptq-shared-digest-v1");
    dg_u64(&h, (uint64_t)n);
    for (int i = 0; i < n; i++) {
        const ckpt_raw_tensor *x = sorted[i];
        char obj[72];
        snprintf(obj, sizeof obj, "/%s", x->name);
        int64_t elems = x->shape[0] * (x->ndim == 2 ? x->shape[1] : 1);
        dg_object(&h, obj, x->dtype, x->ndim, x->shape, NULL, 0);
        /* raw bytes as the model file holds them: already little-endian */
        size_t bytes = (size_t)elems * shared_elsize(x->dtype);
        dg_u64(&h, bytes);
        sha256_update(&h, x->data, bytes);
    }
    char hex[65];
    dg_finish(&h, hex);

    FPTQ_TRY_GOTO(h5_wprops_init(tmp, &p), st, done);
    FPTQ_TRY_GOTO(h5_create_file(tmp, &p, &f), st, done);
    for (int i = 0; i < n; i++) {
        const ckpt_raw_tensor *x = sorted[i];
        hsize_t dims[2] = {(hsize_t)x->shape[0], x->ndim == 2 ? (hsize_t)x->shape[1] : 1};
        /* memory type = file type: the bytes are stored exactly as given */
        hid_t ty = strcmp(x->dtype, "F32") == 0 ? H5T_IEEE_F32LE : H5T_STD_U16LE;
        FPTQ_TRY_GOTO(h5w_dset(f, tmp, x->name, x->name, ty, ty, x->ndim, dims, x->data, p.dcpl, &d),
                      st, done);
        FPTQ_TRY_GOTO(h5w_attr_str(d, tmp, x->name, "dtype", x->dtype), st, done);
        h5_close_any(&d);
    }
    FPTQ_TRY_GOTO(h5_close_file(tmp, &f), st, done);
    FPTQ_TRY_GOTO(commit_file(tmp, final, c->dir), st, done);

    /* shared.h5 counts as written only once the index says so */
    snprintf(c->shared_digest, sizeof c->shared_digest, "%s", hex);
    st = index_write(c);
    if (st != FPTQ_OK) {
        c->shared_digest[0] = '\0';
        fptq_trace(__FILE__, __LINE__, "index_write(c)");
        goto done;
    }
    FPTQ_TRY_GOTO(open_shared(c), st, done);
    free(c->shared_problem);
    c->shared_problem = NULL;
done:
    h5_close_any(&d);
    h5_close_any(&f);
    h5_wprops_close(&p);
    if (st != FPTQ_OK && tmp)
        unlink(tmp);
    free(sorted);
    free(tmp);
    free(final);
    return st;
}

int ckpt_has_shared(const ckpt *c) { return c->shared_digest[0] != '\0' && c->shared_file >= 0; }

int ckpt_has_shared_tensor(const ckpt *c, const char *name)
{
    h5_quiet();
    if (!ckpt_has_shared(c) || !name || !valid_name(name, 64))
        return 0;
    htri_t e = H5Lexists(c->shared_file, name, H5P_DEFAULT);
    H5Eclear2(H5E_DEFAULT);
    return e > 0;
}

/* The dataset of shared tensor `name`, checked (dtype attribute against the
 * storage, 1-D or 2-D); the caller closes *d. */
static fptq_status shared_open(const ckpt *c, const char *path, const char *name, hid_t *d,
                               char dtype[8], int *ndim, hsize_t dims[2])
{
    *d = H5I_INVALID_HID;
    if (!ckpt_has_shared(c))
        return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s: shared tensors are not written yet", c->dir);
    if (!ckpt_has_shared_tensor(c, name))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: shared tensor %s is missing", path, name ? name : "(null)");
    fptq_status st = FPTQ_OK;
    char *dt = NULL;
    hid_t t = H5I_INVALID_HID, fs = H5I_INVALID_HID;
    if ((*d = H5Dopen2(c->shared_file, name, H5P_DEFAULT)) < 0 || (t = H5Dget_type(*d)) < 0 ||
        (fs = H5Dget_space(*d)) < 0) {
        st = H5_FAIL(FPTQ_ERR_FORMAT, path, "cannot open dataset %s", name);
        goto done;
    }
    FPTQ_TRY_GOTO(h5r_attr_str(*d, path, name, "dtype", 16, &dt), st, done);
    if (!shared_dtype_ok(dt) || H5Tget_class(t) != (strcmp(dt, "F32") == 0 ? H5T_FLOAT : H5T_INTEGER) ||
        H5Tget_size(t) != shared_elsize(dt)) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: dataset %s has dtype \"%s\" that does not match its storage",
                       path, name, dt);
        goto done;
    }
    hsize_t got[H5S_MAX_RANK];
    int nd = H5Sget_simple_extent_ndims(fs);
    if (nd < 1 || nd > 2 || H5Sget_simple_extent_dims(fs, got, NULL) != nd) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: dataset %s is not 1-D or 2-D", path, name);
        goto done;
    }
    snprintf(dtype, 8, "%s", dt);
    *ndim = nd;
    dims[0] = got[0];
    dims[1] = nd == 2 ? got[1] : 0;
done:
    free(dt);
    h5_close_any(&fs);
    h5_close_any(&t);
    if (st != FPTQ_OK)
        h5_close_any(d);
    return st;
}

fptq_status ckpt_read_shared_rows(const ckpt *c, const char *name, int64_t row0, int64_t n, float *dst)
{
    h5_quiet();
    char path[4096];
    snprintf(path, sizeof path, "%s/shared.h5", c->dir);
    char dtype[8];
    int nd;
    hsize_t dims[2];
    hid_t d, fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    FPTQ_TRY(shared_open(c, path, name, &d, dtype, &nd, dims));
    fptq_status st = FPTQ_OK;
    const int f32 = strcmp(dtype, "F32") == 0;
    hsize_t cols = nd == 2 ? dims[1] : dims[0];
    if (nd == 1 ? (row0 != 0 || n != 1)
                : (row0 < 0 || n < 1 || (hsize_t)row0 > dims[0] || (hsize_t)n > dims[0] - (hsize_t)row0)) {
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "%s: rows [%lld, %lld) of %s, which has %llu rows", path,
                       (long long)row0, (long long)(row0 + n), name,
                       nd == 2 ? (unsigned long long)dims[0] : 1ull);
        goto done;
    }
    hsize_t start[2] = {(hsize_t)row0, 0}, count[2] = {(hsize_t)n, cols};
    if (nd == 1)
        count[0] = cols;
    if ((fs = H5Dget_space(d)) < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        (ms = H5Screate_simple(nd, count, NULL)) < 0) {
        st = H5_FAIL(FPTQ_ERR_INTERNAL, path, "cannot select rows of %s", name);
        goto done;
    }
    size_t total = (size_t)n * (size_t)cols;
    if (f32) {
        if (H5Dread(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, dst) < 0)
            st = H5_FAIL(FPTQ_ERR_FORMAT, path, "cannot read rows of %s", name);
        goto done;
    }
    /* 16-bit values go into the upper half of dst and widen in place, front
     * to back: float i (bytes 4i..4i+3) never reaches a value not yet read
     * (bytes 2N+2i+2 and beyond), so no second buffer is needed. */
    unsigned char *half = (unsigned char *)dst + 2 * total;
    if (H5Dread(d, H5T_NATIVE_UINT16, ms, fs, H5P_DEFAULT, half) < 0) {
        st = H5_FAIL(FPTQ_ERR_FORMAT, path, "cannot read rows of %s", name);
        goto done;
    }
    int bf16 = strcmp(dtype, "BF16") == 0;
    for (size_t i = 0; i < total; i++) {
        uint16_t u;
        memcpy(&u, half + 2 * i, 2);
        float v = bf16 ? st_bf16_to_f32(u) : st_f16_to_f32(u);
        memcpy((unsigned char *)dst + 4 * i, &v, 4);
    }
done:
    h5_close_any(&ms);
    h5_close_any(&fs);
    h5_close_any(&d);
    return st;
}

fptq_status ckpt_shared_info(const ckpt *c, const char *name, char dtype[8], int *ndim, int64_t shape[2])
{
    h5_quiet();
    char path[4096];
    snprintf(path, sizeof path, "%s/shared.h5", c->dir);
    hid_t d;
    hsize_t dims[2];
    FPTQ_TRY(shared_open(c, path, name, &d, dtype, ndim, dims));
    h5_close_any(&d);
    shape[0] = (int64_t)dims[0];
    shape[1] = (int64_t)dims[1];
    return FPTQ_OK;
}

fptq_status ckpt_read_shared_raw(const ckpt *c, const char *name, int64_t row0, int64_t n, void *dst)
{
    h5_quiet();
    char path[4096];
    snprintf(path, sizeof path, "%s/shared.h5", c->dir);
    hid_t d, fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    char dtype[8];
    int nd;
    hsize_t dims[2];
    FPTQ_TRY(shared_open(c, path, name, &d, dtype, &nd, dims));
    fptq_status st = FPTQ_OK;
    if (nd == 1 ? (row0 != 0 || n != 1)
                : (row0 < 0 || n < 1 || (hsize_t)row0 > dims[0] || (hsize_t)n > dims[0] - (hsize_t)row0)) {
        st = FPTQ_FAIL(FPTQ_ERR_ARG, "%s: rows [%lld, %lld) of %s, which has %llu rows", path,
                       (long long)row0, (long long)(row0 + n), name,
                       nd == 2 ? (unsigned long long)dims[0] : 1ull);
        goto done;
    }
    hsize_t start[2] = {(hsize_t)row0, 0}, count[2] = {(hsize_t)n, dims[1]};
    if (nd == 1)
        count[0] = dims[0];
    if ((fs = H5Dget_space(d)) < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        (ms = H5Screate_simple(nd, count, NULL)) < 0) {
        st = H5_FAIL(FPTQ_ERR_INTERNAL, path, "cannot select rows of %s", name);
        goto done;
    }
    /* little-endian memory types: the bytes come out as a safetensors file holds them */
    hid_t mt = strcmp(dtype, "F32") == 0 ? H5T_IEEE_F32LE : H5T_STD_U16LE;
    if (H5Dread(d, mt, ms, fs, H5P_DEFAULT, dst) < 0)
        st = H5_FAIL(FPTQ_ERR_FORMAT, path, "cannot read rows of %s", name);
done:
    h5_close_any(&ms);
    h5_close_any(&fs);
    h5_close_any(&d);
    return st;
}

/* The shared tensors' digest recomputed from shared.h5 itself, in the
 * stream ckpt_write_shared hashes: every dataset of the file in name order
 * (HDF5's name index is strcmp order, as the writer's qsort), so a missing,
 * added or altered tensor changes it. Rows are read in blocks of about
 * 64 MiB, so a large embedding needs no copy of its own. */
#define SHARED_MAX 16
typedef struct shared_names {
    char name[SHARED_MAX][72];
    int n, overflow;
} shared_names;

static herr_t shared_collect(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)g, (void)info;
    shared_names *sn = data;
    if (sn->n >= SHARED_MAX || strlen(name) >= sizeof sn->name[0]) {
        sn->overflow = 1;
        return 1;
    }
    snprintf(sn->name[sn->n++], sizeof sn->name[0], "%s", name);
    return 0;
}

static fptq_status shared_verify(const ckpt *c, const char *path)
{
    shared_names sn;
    memset(&sn, 0, sizeof sn);
    hsize_t idx = 0;
    if (H5Literate(c->shared_file, H5_INDEX_NAME, H5_ITER_INC, &idx, shared_collect, &sn) < 0)
        return H5_FAIL(FPTQ_ERR_FORMAT, path, "cannot list the shared tensors");
    if (sn.overflow || sn.n < 1)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s holds %s shared tensors (corrupted or replaced); fptq quantize "
                         "--resume rewrites it from the model", path, sn.n < 1 ? "no" : "too many");
    sha256_ctx h;
    sha256_init(&h);
    dg_str(&h, "fptq-shared-digest-v1");
    dg_u64(&h, (uint64_t)sn.n);
    fptq_status st = FPTQ_OK;
    unsigned char *buf = NULL;
    hid_t d = H5I_INVALID_HID, fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    for (int i = 0; i < sn.n && st == FPTQ_OK; i++) {
        char dtype[8];
        int nd;
        hsize_t dims[2];
        FPTQ_TRY_GOTO(shared_open(c, path, sn.name[i], &d, dtype, &nd, dims), st, done);
        char obj[80];
        snprintf(obj, sizeof obj, "/%s", sn.name[i]);
        const int64_t shape[2] = {(int64_t)dims[0], (int64_t)dims[1]};
        dg_object(&h, obj, dtype, nd, shape, NULL, 0);
        const size_t es = shared_elsize(dtype);
        const hsize_t rows = nd == 2 ? dims[0] : 1, cols = nd == 2 ? dims[1] : dims[0];
        if (rows == 0 || cols == 0 || cols > MAX_DIM || rows > MAX_DIM) {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: shared tensor %s has extents %llu x %llu", path, sn.name[i],
                           (unsigned long long)rows, (unsigned long long)cols);
            goto done;
        }
        dg_u64(&h, (uint64_t)(rows * cols * es));
        hsize_t block = (64u << 20) / (cols * es);
        block = block < 1 ? 1 : block > rows ? rows : block;
        free(buf);
        FPTQ_TRY_GOTO(fptq_calloc((size_t)(block * cols), es, "shared tensor block", &buf), st, done);
        hid_t mt = strcmp(dtype, "F32") == 0 ? H5T_IEEE_F32LE : H5T_STD_U16LE;
        if ((fs = H5Dget_space(d)) < 0) {
            st = H5_FAIL(FPTQ_ERR_FORMAT, path, "cannot read %s", sn.name[i]);
            goto done;
        }
        for (hsize_t r0 = 0; r0 < rows; r0 += block) {
            const hsize_t n = rows - r0 < block ? rows - r0 : block;
            hsize_t start[2] = {r0, 0}, count[2] = {n, cols};
            if (nd == 1) {
                start[0] = 0;
                count[0] = cols;
            }
            if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
                (ms = H5Screate_simple(nd, count, NULL)) < 0 || H5Dread(d, mt, ms, fs, H5P_DEFAULT, buf) < 0) {
                st = H5_FAIL(FPTQ_ERR_FORMAT, path, "cannot read shared tensor %s (truncated or corrupted); "
                             "fptq quantize --resume rewrites it from the model", sn.name[i]);
                goto done;
            }
            h5_close_any(&ms);
            sha256_update(&h, buf, (size_t)(n * cols) * es);
        }
        h5_close_any(&fs);
        h5_close_any(&d);
    }
    char hex[65];
    dg_finish(&h, hex);
    if (strcmp(hex, c->shared_digest) != 0)
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT,
                       "%s does not match its digest in index.h5 (corrupted, truncated or replaced): content "
                       "%.16s..., index %.16s...; fptq quantize --resume rewrites it from the model",
                       path, hex, c->shared_digest);
done:
    h5_close_any(&ms);
    h5_close_any(&fs);
    h5_close_any(&d);
    free(buf);
    return st;
}

/* ---- layer files --------------------------------------------------------------- */

static fptq_status layer_fill(const char *path, hid_t f, const h5_wprops *p, const ckpt_layer *L)
{
    char names[NAMES_CAP];
    FPTQ_TRY(linear_names_joined(L, names, sizeof names));
    attr_val ra[LAYER_NATTR];
    layer_root_attrs(L, names, ra);
    FPTQ_TRY(h5w_attr_list(f, path, "/", ra, LAYER_NATTR));
    hsize_t hd[1] = {(hsize_t)L->hidden};
    FPTQ_TRY(h5w_dset(f, path, "/input_layernorm", "input_layernorm", H5T_IEEE_F32LE,
                      H5T_NATIVE_FLOAT, 1, hd, L->attn_norm, p->dcpl, NULL));
    FPTQ_TRY(h5w_dset(f, path, "/post_attention_layernorm", "post_attention_layernorm",
                      H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, hd, L->mlp_norm, p->dcpl, NULL));

    fptq_status st = FPTQ_OK;
    hid_t g = H5I_INVALID_HID;
    int32_t *packed = NULL;
    char where[80];
    for (int i = 0; i < L->n_linears; i++) {
        const ckpt_linear *lin = &L->lin[i];
        const quant_tensor *q = &lin->q;
        FPTQ_TRY_GOTO(h5w_group(f, path, lin->name, p->gcpl, &g), st, done);
        attr_val la[LIN_NATTR];
        linear_attrs(lin, la);
        snprintf(where, sizeof where, "/%s", lin->name);
        FPTQ_TRY_GOTO(h5w_attr_list(g, path, where, la, LIN_NATTR), st, done);
        if (q->spec.format == QFMT_INT) {
            int64_t pc = quant_packed_cols(q->cols, q->spec.bits);
            FPTQ_TRY_GOTO(fptq_calloc((size_t)(q->rows * pc), sizeof *packed, "packed codes", &packed),
                          st, done);
            quant_pack_int32(q->codes, q->rows, q->cols, q->spec.bits, packed);
            hsize_t d[2] = {(hsize_t)q->rows, (hsize_t)pc};
            snprintf(where, sizeof where, "/%s/qweight_packed", lin->name);
            FPTQ_TRY_GOTO(h5w_dset(g, path, where, "qweight_packed", H5T_STD_I32LE, H5T_NATIVE_INT32,
                                   2, d, packed, p->dcpl, NULL), st, done);
            free(packed);
            packed = NULL;
        } else {
            hsize_t d[2] = {(hsize_t)q->rows, (hsize_t)q->cols};
            snprintf(where, sizeof where, "/%s/weight_fp8", lin->name);
            FPTQ_TRY_GOTO(h5w_dset(g, path, where, "weight_fp8", H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, d,
                                   q->codes, p->dcpl, NULL), st, done);
        }
        hsize_t gd[2] = {(hsize_t)q->rows, (hsize_t)q->n_groups};
        snprintf(where, sizeof where, "/%s/scales", lin->name);
        FPTQ_TRY_GOTO(h5w_dset(g, path, where, "scales", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, gd,
                               q->scales, p->dcpl, NULL), st, done);
        if (q->zeros) {
            snprintf(where, sizeof where, "/%s/zeros", lin->name);
            FPTQ_TRY_GOTO(h5w_dset(g, path, where, "zeros", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, gd,
                                   q->zeros, p->dcpl, NULL), st, done);
        }
        if (q->g_idx) {
            hsize_t cd[1] = {(hsize_t)q->cols};
            snprintf(where, sizeof where, "/%s/g_idx", lin->name);
            FPTQ_TRY_GOTO(h5w_dset(g, path, where, "g_idx", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, cd,
                                   q->g_idx, p->dcpl, NULL), st, done);
        }
        if (lin->bias) {
            hsize_t rd[1] = {(hsize_t)q->rows};
            snprintf(where, sizeof where, "/%s/bias", lin->name);
            FPTQ_TRY_GOTO(h5w_dset(g, path, where, "bias", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, rd,
                                   lin->bias, p->dcpl, NULL), st, done);
        }
        h5_close_any(&g);
    }
done:
    free(packed);
    h5_close_any(&g);
    return st;
}

fptq_status ckpt_write_layer_file(const ckpt *c, const ckpt_layer *L, char digest_hex[65], char **losses_json)
{
    h5_quiet();
    digest_hex[0] = '\0';
    *losses_json = NULL;
    if (L->index < 0 || L->index >= c->n_layers)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s: layer %lld out of range 0..%lld", c->dir,
                         (long long)L->index, (long long)c->n_layers - 1);
    char what[64];
    snprintf(what, sizeof what, "layer %lld", (long long)L->index);
    FPTQ_TRY(validate_layer(what, L));
    char hex[65];
    FPTQ_TRY(layer_digest(L, hex));

    fptq_status st = FPTQ_OK;
    char *tmp = NULL, *final = NULL, *folder = NULL, *losses = NULL;
    h5_wprops p = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};
    hid_t f = H5I_INVALID_HID;
    FPTQ_TRY_GOTO(layer_path(c, L->index, "", &final), st, done);
    FPTQ_TRY_GOTO(tmp_path(final, &tmp), st, done);
    FPTQ_TRY_GOTO(path_fmt(&folder, "%s/layers", c->dir), st, done);
    FPTQ_TRY_GOTO(build_losses_json(L, &losses), st, done);

    FPTQ_TRY_GOTO(h5_wprops_init(tmp, &p), st, done);
    FPTQ_TRY_GOTO(h5_create_file(tmp, &p, &f), st, done);
    FPTQ_TRY_GOTO(layer_fill(tmp, f, &p, L), st, done);
    FPTQ_TRY_GOTO(h5_close_file(tmp, &f), st, done);
    FPTQ_TRY_GOTO(commit_file(tmp, final, folder), st, done);
    snprintf(digest_hex, 65, "%s", hex);
    *losses_json = losses;
    losses = NULL;
done:
    h5_close_any(&f);
    h5_wprops_close(&p);
    if (st != FPTQ_OK && tmp)
        unlink(tmp);
    if (st != FPTQ_OK)
        fptq_error_context("writing layer %lld to %s", (long long)L->index, final ? final : c->dir);
    free(tmp);
    free(final);
    free(folder);
    free(losses);
    return st;
}

fptq_status ckpt_mark_done(ckpt *c, int64_t l, const char *digest_hex, double seconds, const char *losses_json)
{
    if (l < 0 || l >= c->n_layers)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s: layer %lld out of range 0..%lld", c->dir, (long long)l,
                         (long long)c->n_layers - 1);
    if (strlen(digest_hex) != 64)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "checkpoint %s: layer %lld: bad digest '%s'", c->dir, (long long)l, digest_hex);
    /* If the index cannot be rewritten, memory goes back to what disk says. */
    manifest_entry *e = &c->man[l], old = *e;
    fptq_status st;
    FPTQ_TRY(dup_str(old.losses_json, "manifest losses", &old.losses_json));
    old.entry_json = NULL;
    FPTQ_TRY_GOTO(entry_set(l, e, 1, digest_hex, seconds, losses_json), st, done);
    st = index_write(c);
    if (st != FPTQ_OK) {
        fptq_trace(__FILE__, __LINE__, "index_write(c)");
        entry_set(l, e, old.done, old.digest, old.seconds, old.losses_json);
    }
done:
    entry_free(&old);
    return st;
}

fptq_status ckpt_write_layer(ckpt *c, const ckpt_layer *L, char digest_hex[65])
{
    char *losses = NULL;
    FPTQ_TRY(ckpt_write_layer_file(c, L, digest_hex, &losses));
    /* the layer is on disk; only now may the manifest call it done */
    fptq_status st = ckpt_mark_done(c, L->index, digest_hex, L->seconds, losses);
    free(losses);
    if (st != FPTQ_OK)
        digest_hex[0] = '\0';
    return st;
}

int ckpt_layer_done(const ckpt *c, int64_t l)
{
    return l >= 0 && l < c->n_layers && c->man[l].done;
}

const char *ckpt_layer_digest(const ckpt *c, int64_t l)
{
    return l >= 0 && l < c->n_layers ? c->man[l].digest : "";
}

const char *ckpt_layer_manifest_json(const ckpt *c, int64_t l)
{
    return l >= 0 && l < c->n_layers ? c->man[l].entry_json : "";
}

void ckpt_layer_free(ckpt_layer *l)
{
    if (!l)
        return;
    int n = l->n_linears < 0 ? 0 : l->n_linears > CKPT_MAX_LINEARS ? CKPT_MAX_LINEARS : l->n_linears;
    for (int i = 0; i < n; i++) {
        quant_tensor_free(&l->lin[i].q);
        free(l->lin[i].bias);
        l->lin[i].bias = NULL;
    }
    free(l->attn_norm);
    free(l->mlp_norm);
    l->attn_norm = l->mlp_norm = NULL;
    l->n_linears = 0;
}

static fptq_status read_linear(const char *path, hid_t f, const char *name, ckpt_linear *lin)
{
    fptq_status st = FPTQ_OK;
    hid_t g = H5I_INVALID_HID, dw = H5I_INVALID_HID, dsc = H5I_INVALID_HID, dz = H5I_INVALID_HID,
          dg = H5I_INVALID_HID, db = H5I_INVALID_HID;
    char *fmt = NULL, *method = NULL, *act = NULL;
    int32_t *packed = NULL;
    char where[80], sub[96];
    snprintf(where, sizeof where, "/%s", name);
    snprintf(lin->name, sizeof lin->name, "%s", name);
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0 || (g = H5Gopen2(f, name, H5P_DEFAULT)) < 0) {
        st = H5_FAIL(FPTQ_ERR_FORMAT, path, "group %s is missing", where);
        goto done;
    }
    int64_t bits, group_size, sym, rows, cols, n_groups;
    FPTQ_TRY_GOTO(h5r_attr_str(g, path, where, "format", MAX_ATTR_STR, &fmt), st, done);
    FPTQ_TRY_GOTO(h5r_attr_i64(g, path, where, "bits", &bits), st, done);
    FPTQ_TRY_GOTO(h5r_attr_i64(g, path, where, "group_size", &group_size), st, done);
    FPTQ_TRY_GOTO(h5r_attr_i64(g, path, where, "sym", &sym), st, done);
    FPTQ_TRY_GOTO(h5r_attr_i64(g, path, where, "rows", &rows), st, done);
    FPTQ_TRY_GOTO(h5r_attr_i64(g, path, where, "cols", &cols), st, done);
    FPTQ_TRY_GOTO(h5r_attr_i64(g, path, where, "n_groups", &n_groups), st, done);
    FPTQ_TRY_GOTO(h5r_attr_str(g, path, where, "method", MAX_ATTR_STR, &method), st, done);
    FPTQ_TRY_GOTO(h5r_attr(g, path, where, "damp", H5T_FLOAT, H5T_NATIVE_FLOAT, &lin->damp), st, done);
    FPTQ_TRY_GOTO(h5r_attr(g, path, where, "loss", H5T_FLOAT, H5T_NATIVE_DOUBLE, &lin->loss), st, done);
    FPTQ_TRY_GOTO(h5r_attr_str(g, path, where, "act_kind", MAX_ATTR_STR, &act), st, done);
    FPTQ_TRY_GOTO(h5r_attr(g, path, where, "act_scale", H5T_FLOAT, H5T_NATIVE_FLOAT, &lin->act.scale),
                  st, done);

    quant_spec spec = {0};
    if (strcmp(fmt, "int") == 0)
        spec.format = QFMT_INT;
    else if (strcmp(fmt, "fp8_e4m3") == 0)
        spec.format = QFMT_FP8_E4M3;
    else {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s has format \"%.32s\" (int or fp8_e4m3)", path, where, fmt);
        goto done;
    }
    if (bits < 0 || bits > 64 || sym < 0 || sym > 1 || group_size < 0 || group_size > MAX_DIM) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s has bits %lld, sym %lld, group size %lld", path, where,
                       (long long)bits, (long long)sym, (long long)group_size);
        goto done;
    }
    spec.bits = (int)bits;
    spec.group_size = group_size;
    spec.sym = (int)sym;
    FPTQ_TRY_GOTO(check_dims(FPTQ_ERR_FORMAT, path, where, rows, cols), st, done);
    FPTQ_TRY_GOTO(check_spec(FPTQ_ERR_FORMAT, path, where, &spec, cols, n_groups), st, done);
    if (strlen(method) >= sizeof lin->method) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s has a method name over %zu bytes", path, where,
                       sizeof lin->method - 1);
        goto done;
    }
    snprintf(lin->method, sizeof lin->method, "%s", method);
    int k;
    for (k = 0; k < N_ACT_KINDS && strcmp(act, act_kind_names[k]) != 0; k++)
        ;
    if (k == N_ACT_KINDS) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s has activation quantization \"%.32s\"", path, where, act);
        goto done;
    }
    lin->act.kind = (act_quant_kind)k;

    /* every dataset is checked against the attributes before anything is allocated */
    int is_int = spec.format == QFMT_INT;
    int64_t pc = is_int ? quant_packed_cols(cols, spec.bits) : cols;
    hsize_t wd[2] = {(hsize_t)rows, (hsize_t)pc}, gd[2] = {(hsize_t)rows, (hsize_t)n_groups};
    hsize_t cd[1] = {(hsize_t)cols}, rd[1] = {(hsize_t)rows};
    snprintf(sub, sizeof sub, "%s/%s", where, is_int ? "qweight_packed" : "weight_fp8");
    FPTQ_TRY_GOTO(h5r_dset_open(g, path, sub, is_int ? "qweight_packed" : "weight_fp8", H5T_INTEGER,
                                is_int ? 4 : 1, 2, wd, &dw), st, done);
    snprintf(sub, sizeof sub, "%s/scales", where);
    FPTQ_TRY_GOTO(h5r_dset_open(g, path, sub, "scales", H5T_FLOAT, 4, 2, gd, &dsc), st, done);
    if (is_int) {
        snprintf(sub, sizeof sub, "%s/zeros", where);
        FPTQ_TRY_GOTO(h5r_dset_open(g, path, sub, "zeros", H5T_INTEGER, 4, 2, gd, &dz), st, done);
    }
    int has_g_idx = H5Lexists(g, "g_idx", H5P_DEFAULT) > 0;
    int has_bias = H5Lexists(g, "bias", H5P_DEFAULT) > 0;
    if (has_g_idx && !is_int) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: FP8 linear %s has a g_idx", path, where);
        goto done;
    }
    if (has_g_idx) {
        snprintf(sub, sizeof sub, "%s/g_idx", where);
        FPTQ_TRY_GOTO(h5r_dset_open(g, path, sub, "g_idx", H5T_INTEGER, 4, 1, cd, &dg), st, done);
    }
    if (has_bias) {
        snprintf(sub, sizeof sub, "%s/bias", where);
        FPTQ_TRY_GOTO(h5r_dset_open(g, path, sub, "bias", H5T_FLOAT, 4, 1, rd, &db), st, done);
    }

    FPTQ_TRY_GOTO(quant_tensor_alloc(&spec, rows, cols, has_g_idx, &lin->q), st, done);
    if (has_bias)
        FPTQ_TRY_GOTO(fptq_calloc((size_t)rows, sizeof *lin->bias, "bias", &lin->bias), st, done);
    if (is_int) {
        FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows * pc), sizeof *packed, "packed codes", &packed), st, done);
        FPTQ_TRY_GOTO(h5r_dset_read(dw, path, where, H5T_NATIVE_INT32, packed), st, done);
        quant_unpack_int32(packed, rows, cols, spec.bits, lin->q.codes);
        FPTQ_TRY_GOTO(h5r_dset_read(dz, path, where, H5T_NATIVE_INT32, lin->q.zeros), st, done);
    } else {
        FPTQ_TRY_GOTO(h5r_dset_read(dw, path, where, H5T_NATIVE_UINT8, lin->q.codes), st, done);
    }
    FPTQ_TRY_GOTO(h5r_dset_read(dsc, path, where, H5T_NATIVE_FLOAT, lin->q.scales), st, done);
    if (has_g_idx) {
        FPTQ_TRY_GOTO(h5r_dset_read(dg, path, where, H5T_NATIVE_INT32, lin->q.g_idx), st, done);
        for (int64_t c = 0; c < cols; c++)
            if (lin->q.g_idx[c] < 0 || lin->q.g_idx[c] >= n_groups) {
                st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s: g_idx[%lld] = %d outside [0, %lld)", path, where,
                               (long long)c, (int)lin->q.g_idx[c], (long long)n_groups);
                goto done;
            }
    }
    if (has_bias)
        FPTQ_TRY_GOTO(h5r_dset_read(db, path, where, H5T_NATIVE_FLOAT, lin->bias), st, done);
done:
    free(packed);
    free(fmt);
    free(method);
    free(act);
    h5_close_any(&db);
    h5_close_any(&dg);
    h5_close_any(&dz);
    h5_close_any(&dsc);
    h5_close_any(&dw);
    h5_close_any(&g);
    return st;
}

static fptq_status read_layer_file(const char *path, int64_t l, ckpt_layer *out)
{
    fptq_status st = FPTQ_OK;
    char *fmt = NULL, *names = NULL;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), dn = H5I_INVALID_HID, dm = H5I_INVALID_HID;
    if (f < 0)
        return H5_FAIL(FPTQ_ERR_FORMAT, path, "cannot open layer file");
    const char *root = "/";
    int64_t version, layer, hidden, n_linears;
    FPTQ_TRY_GOTO(h5r_attr_str(f, path, root, "format", MAX_ATTR_STR, &fmt), st, done);
    if (strcmp(fmt, LAYER_FORMAT) != 0) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: format \"%.64s\", expected \"%s\"", path, fmt, LAYER_FORMAT);
        goto done;
    }
    FPTQ_TRY_GOTO(h5r_attr_i64(f, path, root, "version", &version), st, done);
    if (version != LAYER_VERSION) {
        st = FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: layer file version %lld, this fptq reads version %d",
                       path, (long long)version, LAYER_VERSION);
        goto done;
    }
    FPTQ_TRY_GOTO(h5r_attr_i64(f, path, root, "layer", &layer), st, done);
    FPTQ_TRY_GOTO(h5r_attr_i64(f, path, root, "hidden", &hidden), st, done);
    FPTQ_TRY_GOTO(h5r_attr_i64(f, path, root, "n_linears", &n_linears), st, done);
    FPTQ_TRY_GOTO(h5r_attr_str(f, path, root, "linears", NAMES_CAP, &names), st, done);
    if (layer != l) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s holds layer %lld, expected %lld", path, (long long)layer,
                       (long long)l);
        goto done;
    }
    if (hidden < 1 || hidden > MAX_HIDDEN || n_linears < 1 || n_linears > CKPT_MAX_LINEARS) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: hidden %lld, %lld linears out of range", path,
                       (long long)hidden, (long long)n_linears);
        goto done;
    }
    out->index = layer;
    out->hidden = hidden;
    hsize_t hd[1] = {(hsize_t)hidden};
    FPTQ_TRY_GOTO(h5r_dset_open(f, path, "/input_layernorm", "input_layernorm", H5T_FLOAT, 4, 1, hd, &dn),
                  st, done);
    FPTQ_TRY_GOTO(h5r_dset_open(f, path, "/post_attention_layernorm", "post_attention_layernorm",
                                H5T_FLOAT, 4, 1, hd, &dm), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)hidden, sizeof(float), "input_layernorm", &out->attn_norm), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)hidden, sizeof(float), "post_attention_layernorm", &out->mlp_norm),
                  st, done);
    FPTQ_TRY_GOTO(h5r_dset_read(dn, path, "/input_layernorm", H5T_NATIVE_FLOAT, out->attn_norm), st, done);
    FPTQ_TRY_GOTO(h5r_dset_read(dm, path, "/post_attention_layernorm", H5T_NATIVE_FLOAT, out->mlp_norm),
                  st, done);

    /* names in the stored order; the digest depends on it */
    char *save = NULL, *tok = strtok_r(names, ",", &save);
    int i = 0;
    for (; tok; tok = strtok_r(NULL, ",", &save), i++) {
        if (i >= n_linears || !valid_name(tok, sizeof out->lin[0].name)) {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: attribute linears does not list %lld valid names", path,
                           (long long)n_linears);
            goto done;
        }
        out->n_linears = i + 1;   /* so that ckpt_layer_free sees what is allocated */
        FPTQ_TRY_GOTO(read_linear(path, f, tok, &out->lin[i]), st, done);
    }
    if (i != n_linears) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: attribute linears lists %d names, n_linears is %lld", path,
                       i, (long long)n_linears);
        goto done;
    }
done:
    free(fmt);
    free(names);
    h5_close_any(&dn);
    h5_close_any(&dm);
    if (H5Fclose(f) < 0 && st == FPTQ_OK)
        st = H5_FAIL(FPTQ_ERR_IO, path, "cannot close file");
    return st;
}

fptq_status ckpt_read_layer(const ckpt *c, int64_t l, ckpt_layer *out)
{
    h5_quiet();
    memset(out, 0, sizeof *out);
    if (l < 0 || l >= c->n_layers)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s: layer %lld out of range 0..%lld", c->dir,
                         (long long)l, (long long)c->n_layers - 1);
    if (!c->man[l].done)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s: layer %lld is not done", c->dir, (long long)l);
    char *path;
    FPTQ_TRY(layer_path(c, l, "", &path));
    fptq_status st = FPTQ_OK;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        st = FPTQ_FAIL(errno == ENOENT ? FPTQ_ERR_FORMAT : FPTQ_ERR_IO,
                       "layer %lld: file %s, done in the manifest, cannot be found: %s", (long long)l,
                       path, strerror(errno));
        goto done;
    }
    st = read_layer_file(path, l, out);
    if (st != FPTQ_OK) {
        fptq_trace(__FILE__, __LINE__, "read_layer_file");
        /* a file that cannot be read back, like one that reads back
         * differently, is a damaged layer: the remedy is to redo it */
        fptq_error_context("layer %lld: file %s cannot be read back (corrupted or truncated)",
                           (long long)l, path);
        goto done;
    }
    out->seconds = c->man[l].seconds;
    char hex[65];
    FPTQ_TRY_GOTO(layer_digest(out, hex), st, done);
    if (strcmp(hex, c->man[l].digest) != 0) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT,
                       "layer %lld: file %s does not match its manifest digest (corrupted or truncated): "
                       "content %.16s..., manifest %.16s...",
                       (long long)l, path, hex, c->man[l].digest);
        goto done;
    }
done:
    free(path);
    if (st != FPTQ_OK)
        ckpt_layer_free(out);
    return st;
}

fptq_status ckpt_digest(const ckpt *c, char digest_hex[65])
{
    digest_hex[0] = '\0';
    if (!c->shared_digest[0])
        return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s is incomplete: shared tensors not written", c->dir);
    for (int64_t l = 0; l < c->n_layers; l++)
        if (!c->man[l].done)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "checkpoint %s is incomplete: layer %lld is pending", c->dir,
                             (long long)l);
    sha256_ctx h;
    sha256_init(&h);
    dg_str(&h, "fptq-checkpoint-digest-v1");
    dg_str(&h, c->recipe_json);
    dg_str(&h, c->shared_digest);
    dg_u64(&h, (uint64_t)c->n_layers);
    for (int64_t l = 0; l < c->n_layers; l++)
        dg_str(&h, c->man[l].digest);
    dg_finish(&h, digest_hex);
    return FPTQ_OK;
}
