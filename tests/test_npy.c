/*
 * Unit tests for io/npy.c: save/load round trips, the bundled token and logit
 * files, token loading and range checks, and hand-written malformed files.
 */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/npy.h"

#ifndef FPTQ_EXAMPLES
#error "FPTQ_EXAMPLES must name the examples directory"
#endif
#ifndef FPTQ_TESTDATA
#error "FPTQ_TESTDATA must name the test data directory"
#endif

static char tmpdir[64];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fptq_test_npy.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void)state;
    DIR *d = opendir(tmpdir);
    if (!d)
        return -1;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    closedir(d);
    return rmdir(tmpdir);
}

static const char *tpath(const char *name)
{
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", tmpdir, name);
    return p;
}

static void check_msg(const char *needle, const char *file, int line)
{
    const char *msg = fptq_last_error();
    if (!strstr(msg, needle)) {
        print_error("error message \"%s\" does not contain \"%s\"\n", msg, needle);
        _fail(file, line);
    }
}
#define assert_msg_has(needle) check_msg((needle), __FILE__, __LINE__)

static void write_bytes(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n)
        assert_int_equal(fwrite(buf, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* A .npy written by hand: any header text, any data, version 1.0/2.0/3.0. */
static const char *write_npy_raw(const char *name, int major, const char *header, const void *data,
                                 size_t ndata)
{
    const char *path = tpath(name);
    size_t hlen = strlen(header);
    size_t prefix = major == 1 ? 10 : 12;
    unsigned char *buf = calloc(1, prefix + hlen + ndata);
    assert_non_null(buf);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    buf[8] = (unsigned char)(hlen & 0xff);
    buf[9] = (unsigned char)(hlen >> 8);
    if (major != 1) {
        buf[10] = (unsigned char)(hlen >> 16);
        buf[11] = (unsigned char)(hlen >> 24);
    }
    memcpy(buf + prefix, header, hlen);
    if (ndata)
        memcpy(buf + prefix + hlen, data, ndata);
    write_bytes(path, buf, prefix + hlen + ndata);
    free(buf);
    return path;
}

/* Expects npy_load to fail with `st` and a message naming the file and the problem. */
static void check_load_fails(const char *path, fptq_status st, const char *n1, const char *n2,
                             const char *file, int line)
{
    fptq_clear_error();
    npy_array a;
    memset(&a, 0x5a, sizeof a);
    fptq_status got = npy_load(path, &a);
    if (got != st) {
        print_error("%s: status %s, expected %s (message: %s)\n", path, fptq_status_name(got),
                    fptq_status_name(st), fptq_last_error());
        _fail(file, line);
    }
    assert_null(a.data);
    check_msg(path, file, line);
    check_msg(n1, file, line);
    if (n2)
        check_msg(n2, file, line);
}
#define LOAD_FAILS(path, st, n1, n2) check_load_fails((path), (st), (n1), (n2), __FILE__, __LINE__)

static void check_tokens_fail(const char *path, int64_t vocab, fptq_status st, const char *n1,
                              const char *n2, const char *file, int line)
{
    fptq_clear_error();
    fptq_tokens t;
    fptq_status got = tokens_load(path, vocab, &t);
    if (got != st) {
        print_error("%s: status %s, expected %s (message: %s)\n", path, fptq_status_name(got),
                    fptq_status_name(st), fptq_last_error());
        _fail(file, line);
    }
    assert_null(t.ids);
    check_msg(path, file, line);
    check_msg(n1, file, line);
    if (n2)
        check_msg(n2, file, line);
}
#define TOKENS_FAIL(path, vocab, st, n1, n2) \
    check_tokens_fail((path), (vocab), (st), (n1), (n2), __FILE__, __LINE__)

/* ---- round trips ---------------------------------------------------------- */

static void test_round_trip(void **state)
{
    (void)state;
    static const struct {
        npy_dtype dt;
        size_t size;
    } types[] = {{NPY_I32, 4}, {NPY_I64, 8}, {NPY_U16, 2}, {NPY_U32, 4},
                 {NPY_F32, 4}, {NPY_F64, 8}, {NPY_U8, 1},  {NPY_I8, 1}};
    static const struct {
        int ndim;
        int64_t shape[3];
    } shapes[] = {{1, {7}}, {2, {3, 5}}, {3, {2, 3, 4}}, {1, {0}}, {0, {0}}};

    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int64_t numel = 1;
            for (int i = 0; i < shapes[s].ndim; i++)
                numel *= shapes[s].shape[i];
            size_t nbytes = (size_t)numel * types[t].size;
            unsigned char *data = malloc(nbytes + 1);
            assert_non_null(data);
            for (size_t i = 0; i < nbytes; i++)
                data[i] = (unsigned char)(i * 37 + 11 + t);
            char name[64];
            snprintf(name, sizeof name, "rt_%zu_%zu.npy", t, s);
            const char *path = tpath(name);

            fptq_clear_error();
            assert_int_equal(npy_save(path, types[t].dt, shapes[s].ndim, shapes[s].shape, data),
                             FPTQ_OK);
            /* the data starts on a 64-byte boundary, as numpy writes it */
            FILE *f = fopen(path, "rb");
            assert_non_null(f);
            unsigned char pre[10];
            assert_int_equal(fread(pre, 1, 10, f), 10);
            fclose(f);
            assert_int_equal(pre[6], 1);
            assert_int_equal((10 + (pre[8] | pre[9] << 8)) % 64, 0);

            npy_array a;
            assert_int_equal(npy_load(path, &a), FPTQ_OK);
            assert_int_equal(a.dtype, types[t].dt);
            assert_int_equal(a.ndim, shapes[s].ndim);
            for (int i = 0; i < a.ndim; i++)
                assert_int_equal(a.shape[i], shapes[s].shape[i]);
            assert_int_equal(a.numel, numel);
            assert_int_equal(a.elem_size, types[t].size);
            assert_non_null(a.data);
            assert_memory_equal(a.data, data, nbytes);
            npy_free(&a);
            assert_null(a.data);
            free(data);
            unlink(path);
        }
    }
}

/* npy_save writes numpy's own header layout: the dict as numpy's repr spells
 * it, space padding, '\n', and data at the same 64-aligned offset. */
static void test_save_header_layout(void **state)
{
    (void)state;
    const char *src = FPTQ_EXAMPLES "/tinystories.tok512.npy";
    const char *copy = tpath("tinystories_copy.npy");
    npy_array a;
    fptq_clear_error();
    assert_int_equal(npy_load(src, &a), FPTQ_OK);
    assert_int_equal(npy_save(copy, a.dtype, a.ndim, a.shape, a.data), FPTQ_OK);
    npy_free(&a);

    unsigned char h1[128], h2[129];
    FILE *f1 = fopen(src, "rb"), *f2 = fopen(copy, "rb");
    assert_non_null(f1);
    assert_non_null(f2);
    assert_int_equal(fread(h1, 1, sizeof h1, f1), sizeof h1);
    assert_int_equal(fread(h2, 1, 128, f2), 128);
    fclose(f1);
    fclose(f2);
    assert_memory_equal(h1, h2, 10);  /* magic, version 1.0, header length 118 */
    h2[128] = '\0';
    const char *dict = "{'descr': '<i4', 'fortran_order': False, 'shape': (98864,), }";
    assert_memory_equal(h2 + 10, dict, strlen(dict));
    for (size_t i = 10 + strlen(dict); i < 127; i++)
        assert_int_equal(h2[i], ' ');
    assert_int_equal(h2[127], '\n');

    fptq_tokens t1, t2;
    assert_int_equal(tokens_load(src, 512, &t1), FPTQ_OK);
    assert_int_equal(tokens_load(copy, 512, &t2), FPTQ_OK);
    assert_int_equal(t1.n_tokens, t2.n_tokens);
    assert_memory_equal(t1.ids, t2.ids, (size_t)t1.n_tokens * sizeof(int32_t));
    tokens_free(&t1);
    tokens_free(&t2);
    unlink(copy);
}

/* ---- bundled files --------------------------------------------------------- */

static void test_tinystories_tokens(void **state)
{
    (void)state;
    const char *path = FPTQ_EXAMPLES "/tinystories.tok512.npy";
    npy_array a;
    fptq_clear_error();
    assert_int_equal(npy_load(path, &a), FPTQ_OK);
    assert_int_equal(a.dtype, NPY_I32);
    assert_int_equal(a.ndim, 1);
    assert_int_equal(a.shape[0], 98864);
    npy_free(&a);

    fptq_tokens t;
    assert_int_equal(tokens_load(path, 512, &t), FPTQ_OK);
    assert_int_equal(t.n_tokens, 98864);
    assert_int_equal(t.n_rows, 1);
    assert_int_equal(t.row_len, 98864);
    assert_int_equal(t.ids[0], 1);
    for (int64_t i = 0; i < t.n_tokens; i++)
        assert_true(t.ids[i] >= 0 && t.ids[i] < 512);
    tokens_free(&t);
    assert_null(t.ids);

    /* the same file against a smaller vocabulary names the first id outside it */
    TOKENS_FAIL(path, 2, FPTQ_ERR_FORMAT, "position", "vocab");
}

static void test_logits_file(void **state)
{
    (void)state;
    npy_array a;
    fptq_clear_error();
    assert_int_equal(npy_load(FPTQ_TESTDATA "/stories260K.logits64.npy", &a), FPTQ_OK);
    assert_int_equal(a.dtype, NPY_F32);
    assert_int_equal(a.ndim, 2);
    assert_int_equal(a.shape[0], 64);
    assert_int_equal(a.shape[1], 512);
    assert_int_equal(a.numel, 64 * 512);
    assert_int_equal(a.elem_size, 4);
    const float *v = a.data;
    for (int64_t i = 0; i < a.numel; i++)
        assert_true(isfinite(v[i]));
    npy_free(&a);

    /* floats are not token ids */
    TOKENS_FAIL(FPTQ_TESTDATA "/stories260K.logits64.npy", 512, FPTQ_ERR_UNSUPPORTED, "float32",
                "int32");
}

/* ---- tokens --------------------------------------------------------------- */

static void test_tokens_other_dtypes(void **state)
{
    (void)state;
    const int64_t shape[2] = {3, 5};
    int64_t i64[15];
    uint16_t u16[15];
    uint32_t u32[15];
    for (int i = 0; i < 15; i++) {
        i64[i] = i * 7;
        u16[i] = (uint16_t)(i * 7);
        u32[i] = (uint32_t)(i * 7);
    }
    const struct {
        npy_dtype dt;
        const void *data;
        const char *name;
    } cases[] = {{NPY_I64, i64, "tok_i64.npy"}, {NPY_U16, u16, "tok_u16.npy"},
                 {NPY_U32, u32, "tok_u32.npy"}};
    for (size_t c = 0; c < 3; c++) {
        const char *path = tpath(cases[c].name);
        fptq_clear_error();
        assert_int_equal(npy_save(path, cases[c].dt, 2, shape, cases[c].data), FPTQ_OK);
        fptq_tokens t;
        assert_int_equal(tokens_load(path, 100, &t), FPTQ_OK);
        assert_int_equal(t.n_tokens, 15);
        assert_int_equal(t.n_rows, 3);
        assert_int_equal(t.row_len, 5);
        for (int i = 0; i < 15; i++)
            assert_int_equal(t.ids[i], i * 7);
        tokens_free(&t);

        /* 1-D view of the same ids */
        const int64_t flat = 15;
        assert_int_equal(npy_save(path, cases[c].dt, 1, &flat, cases[c].data), FPTQ_OK);
        assert_int_equal(tokens_load(path, 100, &t), FPTQ_OK);
        assert_int_equal(t.n_rows, 1);
        assert_int_equal(t.row_len, 15);
        assert_int_equal(t.ids[14], 98);
        tokens_free(&t);
    }
}

static void test_tokens_out_of_vocab(void **state)
{
    (void)state;
    /* 2-D: id == vocab_size at flat position 237 = row 2, column 37 */
    int32_t ids[4 * 100];
    for (int i = 0; i < 400; i++)
        ids[i] = i % 512;
    ids[237] = 512;
    ids[300] = 9999;  /* later offenders are not the one reported */
    const int64_t shape[2] = {4, 100};
    const char *path = tpath("tok_oov.npy");
    assert_int_equal(npy_save(path, NPY_I32, 2, shape, ids), FPTQ_OK);
    TOKENS_FAIL(path, 512, FPTQ_ERR_FORMAT, "token id 512 at position 237 (row 2, column 37)",
                "outside the vocabulary [0, 512) (vocab_size 512)");

    /* negative int64 */
    int64_t neg[6] = {1, 2, 3, -5, 4, 5};
    const int64_t n6 = 6;
    path = tpath("tok_neg.npy");
    assert_int_equal(npy_save(path, NPY_I64, 1, &n6, neg), FPTQ_OK);
    TOKENS_FAIL(path, 512, FPTQ_ERR_FORMAT, "token id -5 at position 3", "vocab");

    /* int64 beyond int32: must not wrap into range */
    int64_t big[3] = {1, ((int64_t)1 << 32) + 7, 2};
    const int64_t n3 = 3;
    path = tpath("tok_big.npy");
    assert_int_equal(npy_save(path, NPY_I64, 1, &n3, big), FPTQ_OK);
    TOKENS_FAIL(path, 512, FPTQ_ERR_FORMAT, "token id 4294967303 at position 1", "vocab");

    /* uint32 beyond int32 */
    uint32_t ubig[2] = {3, 3000000000u};
    const int64_t n2 = 2;
    path = tpath("tok_ubig.npy");
    assert_int_equal(npy_save(path, NPY_U32, 1, &n2, ubig), FPTQ_OK);
    TOKENS_FAIL(path, INT32_MAX, FPTQ_ERR_FORMAT, "token id 3000000000 at position 1", "vocab");
}

static void test_tokens_bad_shapes(void **state)
{
    (void)state;
    const int64_t zero = 0;
    const char *path = tpath("tok_empty.npy");
    assert_int_equal(npy_save(path, NPY_I32, 1, &zero, NULL), FPTQ_OK);
    TOKENS_FAIL(path, 512, FPTQ_ERR_FORMAT, "empty", "(0,)");

    const int64_t shape0[2] = {0, 128};
    path = tpath("tok_empty2.npy");
    assert_int_equal(npy_save(path, NPY_I32, 2, shape0, NULL), FPTQ_OK);
    TOKENS_FAIL(path, 512, FPTQ_ERR_FORMAT, "empty", "(0, 128)");

    int32_t one = 5;
    path = tpath("tok_scalar.npy");
    assert_int_equal(npy_save(path, NPY_I32, 0, NULL, &one), FPTQ_OK);
    TOKENS_FAIL(path, 512, FPTQ_ERR_FORMAT, "scalar", "()");

    int32_t cube[8] = {0};
    const int64_t shape3[3] = {2, 2, 2};
    path = tpath("tok_3d.npy");
    assert_int_equal(npy_save(path, NPY_I32, 3, shape3, cube), FPTQ_OK);
    TOKENS_FAIL(path, 512, FPTQ_ERR_FORMAT, "(2, 2, 2)", "2-D");

    uint8_t bytes[4] = {1, 2, 3, 4};
    const int64_t n4 = 4;
    path = tpath("tok_u8.npy");
    assert_int_equal(npy_save(path, NPY_U8, 1, &n4, bytes), FPTQ_OK);
    TOKENS_FAIL(path, 512, FPTQ_ERR_UNSUPPORTED, "uint8", NULL);

    TOKENS_FAIL(tpath("does_not_exist.npy"), 512, FPTQ_ERR_IO, "cannot open", NULL);
}

/* ---- header parsing --------------------------------------------------------- */

static void test_header_variants(void **state)
{
    (void)state;
    const int32_t d6[6] = {1, 2, 3, 4, 5, 6};
    static const struct {
        int major;
        const char *header;
        int ndim;
        int64_t s0, s1;
    } ok[] = {
        {1, "{'shape': (2, 3), 'fortran_order': False, 'descr': '<i4'}\n", 2, 2, 3},
        {1, "{ \"descr\" : \"<i4\" , \"fortran_order\" : False , \"shape\" : ( 6 , ) , }   \n", 1, 6, 0},
        {1, "{'descr': '=i4', 'fortran_order': False, 'shape': (6,),}", 1, 6, 0},
        {1, "{'descr': '<i4', 'fortran_order': True, 'shape': (6,), }", 1, 6, 0},
        {1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2L, 3L), }", 2, 2, 3},
        {2, "{'descr': '<i4', 'fortran_order': False, 'shape': (3, 2), }\n", 2, 3, 2},
        {3, "{'descr': '<i4', 'fortran_order': False, 'shape': (6,), }\n", 1, 6, 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "hdr_ok_%zu.npy", i);
        const char *path = write_npy_raw(name, ok[i].major, ok[i].header, d6, sizeof d6);
        npy_array a;
        fptq_clear_error();
        if (npy_load(path, &a) != FPTQ_OK) {
            print_error("header %s: %s\n", ok[i].header, fptq_last_error());
            fail();
        }
        assert_int_equal(a.dtype, NPY_I32);
        assert_int_equal(a.ndim, ok[i].ndim);
        assert_int_equal(a.shape[0], ok[i].s0);
        if (ok[i].ndim == 2)
            assert_int_equal(a.shape[1], ok[i].s1);
        assert_memory_equal(a.data, d6, sizeof d6);
        npy_free(&a);
    }

    const uint8_t b[3] = {7, 8, 9};
    const char *path =
        write_npy_raw("hdr_u1.npy", 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (3,)}", b, 3);
    npy_array a;
    assert_int_equal(npy_load(path, &a), FPTQ_OK);
    assert_int_equal(a.dtype, NPY_U8);
    npy_free(&a);
}

static void test_bad_files(void **state)
{
    (void)state;
    const int32_t d10[11] = {0};
    const char *path;

    path = tpath("bad_magic.npy");
    write_bytes(path, "\x93NUMPX\x01\x00\x10\x00{}              ", 26);
    LOAD_FAILS(path, FPTQ_ERR_FORMAT, "bad magic", NULL);

    path = tpath("bad_tiny.npy");
    write_bytes(path, "\x93NU", 3);
    LOAD_FAILS(path, FPTQ_ERR_FORMAT, "bad magic", NULL);

    path = tpath("bad_empty.npy");
    write_bytes(path, "", 0);
    LOAD_FAILS(path, FPTQ_ERR_FORMAT, "bad magic", NULL);

    /* cut inside the header length */
    path = tpath("bad_trunc_preamble.npy");
    write_bytes(path, "\x93NUMPY\x01\x00\x40", 9);
    LOAD_FAILS(path, FPTQ_ERR_FORMAT, "truncated", "preamble");

    /* the header dict stops mid-way (its length is consistent with the file) */
    path = write_npy_raw("bad_trunc_header.npy", 1, "{'descr': '<i4', 'fortr", NULL, 0);
    LOAD_FAILS(path, FPTQ_ERR_FORMAT, "malformed .npy header", "expected");

    path = tpath("bad_hlen.npy");
    {
        unsigned char buf[64];
        memset(buf, ' ', sizeof buf);
        memcpy(buf, "\x93NUMPY\x01\x00", 8);
        buf[8] = 0xe8;  /* 1000 */
        buf[9] = 0x03;
        write_bytes(path, buf, sizeof buf);
    }
    LOAD_FAILS(path, FPTQ_ERR_FORMAT, "header length 1000", "past the end");

    const char *h10 = "{'descr': '<i4', 'fortran_order': False, 'shape': (10,), }\n";
    path = write_npy_raw("bad_short.npy", 1, h10, d10, 36);
    LOAD_FAILS(path, FPTQ_ERR_FORMAT, "36 bytes, expected 40", "truncated");

    path = write_npy_raw("bad_long.npy", 1, h10, d10, 44);
    LOAD_FAILS(path, FPTQ_ERR_FORMAT, "44 bytes, expected 40", "extra bytes");

    path = write_npy_raw("bad_big_endian.npy", 1,
                         "{'descr': '>i4', 'fortran_order': False, 'shape': (10,), }\n", d10, 40);
    LOAD_FAILS(path, FPTQ_ERR_UNSUPPORTED, "'>i4'", "big-endian");

    path = write_npy_raw("bad_fortran.npy", 1,
                         "{'descr': '<i4', 'fortran_order': True, 'shape': (2, 5), }\n", d10, 40);
    LOAD_FAILS(path, FPTQ_ERR_UNSUPPORTED, "Fortran order", "(2, 5)");

    path = write_npy_raw("bad_c8.npy", 1,
                         "{'descr': '<c8', 'fortran_order': False, 'shape': (5,), }\n", d10, 40);
    LOAD_FAILS(path, FPTQ_ERR_UNSUPPORTED, "'<c8'", "not supported");

    path = write_npy_raw("bad_pipe_i4.npy", 1,
                         "{'descr': '|i4', 'fortran_order': False, 'shape': (10,), }\n", d10, 40);
    LOAD_FAILS(path, FPTQ_ERR_FORMAT, "'|i4'", "byte order");

    path = write_npy_raw("bad_struct.npy", 1,
                         "{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (10,), }\n",
                         d10, 40);
    LOAD_FAILS(path, FPTQ_ERR_UNSUPPORTED, "structured", NULL);

    path = write_npy_raw("bad_version.npy", 4,
                         "{'descr': '<i4', 'fortran_order': False, 'shape': (10,), }\n", d10, 40);
    LOAD_FAILS(path, FPTQ_ERR_UNSUPPORTED, "version 4.0", NULL);

    path = write_npy_raw("bad_key.npy", 1,
                         "{'descr': '<i4', 'fortran_order': False, 'shape': (10,), 'x': 1}\n", d10,
                         40);
    LOAD_FAILS(path, FPTQ_ERR_FORMAT, "unexpected key 'x'", NULL);

    path = write_npy_raw("bad_nokey.npy", 1, "{'descr': '<i4', 'fortran_order': False}\n", d10, 40);
    LOAD_FAILS(path, FPTQ_ERR_FORMAT, "lacks key 'shape'", NULL);

    path = write_npy_raw("bad_dupkey.npy", 1,
                         "{'descr': '<i4', 'descr': '<i4', 'fortran_order': False, 'shape': (10,)}",
                         d10, 40);
    LOAD_FAILS(path, FPTQ_ERR_FORMAT, "repeats key 'descr'", NULL);

    path = write_npy_raw("bad_negdim.npy", 1,
                         "{'descr': '<i4', 'fortran_order': False, 'shape': (-10,), }\n", d10, 40);
    LOAD_FAILS(path, FPTQ_ERR_FORMAT, "malformed .npy header", "'shape'");

    path = write_npy_raw("bad_garbage.npy", 1,
                         "{'descr': '<i4', 'fortran_order': False, 'shape': (10,), } xyz\n", d10,
                         40);
    LOAD_FAILS(path, FPTQ_ERR_FORMAT, "malformed .npy header", "padding");

    /* the element count overflows int64 */
    path = write_npy_raw("bad_overflow.npy", 1,
                         "{'descr': '<i4', 'fortran_order': False, "
                         "'shape': (4294967296, 4294967296), }\n",
                         d10, 40);
    LOAD_FAILS(path, FPTQ_ERR_FORMAT, "(4294967296, 4294967296)", "64 bits");

    /* the byte count overflows even though the element count does not */
    path = write_npy_raw("bad_bytes_overflow.npy", 1,
                         "{'descr': '<f8', 'fortran_order': False, "
                         "'shape': (4611686018427387904,), }\n",
                         d10, 40);
    LOAD_FAILS(path, FPTQ_ERR_FORMAT, "too large", NULL);

    path = write_npy_raw("bad_dimdigits.npy", 1,
                         "{'descr': '<i4', 'fortran_order': False, "
                         "'shape': (99999999999999999999,), }\n",
                         d10, 40);
    LOAD_FAILS(path, FPTQ_ERR_FORMAT, "64 bits", NULL);

    /* a zero dimension makes the array empty however large the others are */
    path = write_npy_raw("ok_zero_dim.npy", 1,
                         "{'descr': '<i4', 'fortran_order': False, "
                         "'shape': (4294967296, 4294967296, 0), }\n",
                         NULL, 0);
    npy_array a;
    fptq_clear_error();
    assert_int_equal(npy_load(path, &a), FPTQ_OK);
    assert_int_equal(a.numel, 0);
    npy_free(&a);

    LOAD_FAILS(tpath("missing.npy"), FPTQ_ERR_IO, "cannot open", NULL);
    LOAD_FAILS(tmpdir, FPTQ_ERR_IO, "not a regular file", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_save_header_layout),
        cmocka_unit_test(test_tinystories_tokens),
        cmocka_unit_test(test_logits_file),
        cmocka_unit_test(test_tokens_other_dtypes),
        cmocka_unit_test(test_tokens_out_of_vocab),
        cmocka_unit_test(test_tokens_bad_shapes),
        cmocka_unit_test(test_header_variants),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}
