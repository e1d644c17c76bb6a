/*
 * Unit tests for io/tokenizer.c on handcrafted tokenizer.json files: the BPE
 * merge order, byte fallback, unk fusing, ignore_merges, added tokens and
 * their flags, the split behaviours, Metaspace's prepend schemes, the BOS
 * policies, text sources; and one test per refused or malformed input, each
 * checking that the message names the file and the problem. Equality with
 * Hugging Face `tokenizers` on real files is tests/tokenizer/run.sh's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/tokenizer.h"

static void check_msg(const char *needle, const char *file, int line)
{
    const char *msg = fptq_last_error();
    if (!strstr(msg, needle)) {
        print_error("error message \"%s\" does not contain \"%s\"\n", msg, needle);
        _fail(file, line);
    }
}
#define assert_msg_has(needle) check_msg((needle), __FILE__, __LINE__)

static char g_dir[256];

static void write_file(const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fwrite(text, 1, strlen(text), f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/fptq-test-tokenizer-%d", (int)getpid());
    mkdir(g_dir, 0700);
    char p[512];
    snprintf(p, sizeof p, "%s/tokenizer_config.json", g_dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/config.json", g_dir);
    unlink(p);
    fptq_clear_error();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    int rc = system(cmd);
    (void)rc;
    return 0;
}

/* A tokenizer.json with the given parts (each a JSON value, or NULL for null). */
static void write_tok(const char *normalizer, const char *pre, const char *model, const char *added, const char *post)
{
    size_t cap = 1 << 16;
    char *s = malloc(cap);
    snprintf(s, cap,
             "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null, \"added_tokens\": %s,"
             " \"normalizer\": %s, \"pre_tokenizer\": %s, \"post_processor\": %s, \"decoder\": null, \"model\": %s}",
             added ? added : "[]", normalizer ? normalizer : "null", pre ? pre : "null", post ? post : "null", model);
    write_file("tokenizer.json", s);
    free(s);
}

static char *slurp(const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = calloc((size_t)n + 1, 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    return b;
}

static void dump_case(const char *path, fptq_bos_policy bos, const char *text, const int32_t *want, int64_t n)
{
    cJSON *o = cJSON_CreateObject();
    const char *files[] = {"tokenizer.json", "tokenizer_config.json", "config.json"};
    for (int i = 0; i < 3; i++) {
        char *b = slurp(files[i]);
        if (b)
            cJSON_AddStringToObject(o, files[i], b);
        free(b);
    }
    cJSON_AddStringToObject(o, "text", text);
    cJSON_AddStringToObject(o, "bos", fptq_bos_policy_name(bos));
    cJSON *w = cJSON_AddArrayToObject(o, "want");
    for (int64_t i = 0; i < n; i++)
        cJSON_AddItemToArray(w, cJSON_CreateNumber(want[i]));
    char *s = cJSON_PrintUnformatted(o);
    FILE *f = fopen(path, "ab");
    if (f && s)
        fprintf(f, "%s\n", s);
    if (f)
        fclose(f);
    free(s);
    cJSON_Delete(o);
}

/* Encodes text and compares with the expected ids (-1 ends the list). */
static void expect_ids(fptq_bos_policy bos, const char *text, const int32_t *want, const char *file, int line)
{
    fptq_tokenizer *t = NULL;
    fptq_status st = fptq_tokenizer_load(g_dir, 0, &t);
    if (st != FPTQ_OK) {
        print_error("load: %s\n", fptq_last_error());
        _fail(file, line);
    }
    fptq_ids ids = {0};
    st = fptq_tokenizer_encode(t, text, strlen(text), bos, "test", &ids);
    if (st != FPTQ_OK) {
        print_error("encode: %s\n", fptq_last_error());
        _fail(file, line);
    }
    int64_t n = 0;
    while (want[n] >= 0)
        n++;
    /* FPTQ_TOKENIZER_CASES=FILE: each case as a JSON line, for
     * tests/tokenizer/check_cases.py to hold against `tokenizers` itself */
    const char *dump = getenv("FPTQ_TOKENIZER_CASES");
    if (dump)
        dump_case(dump, bos, text, want, n);
    int same = ids.n == n;
    for (int64_t i = 0; same && i < n; i++)
        same = ids.v[i] == want[i];
    if (!same) {
        print_error("\"%s\": got", text);
        for (int64_t i = 0; i < ids.n; i++)
            print_error(" %d", ids.v[i]);
        print_error(", want");
        for (int64_t i = 0; i < n; i++)
            print_error(" %d", want[i]);
        print_error("\n");
        _fail(file, line);
    }
    fptq_ids_free(&ids);
    fptq_tokenizer_free(t);
}
#define EXPECT(bos, text, ...)                                              \
    do {                                                                    \
        static const int32_t want_[] = {__VA_ARGS__, -1};                   \
        expect_ids((bos), (text), want_, __FILE__, __LINE__);               \
    } while (0)

static fptq_status load_only(int64_t vocab_size)
{
    fptq_tokenizer *t = NULL;
    fptq_clear_error();
    fptq_status st = fptq_tokenizer_load(g_dir, vocab_size, &t);
    fptq_tokenizer_free(t);
    return st;
}

/* a b c and their merges: ab (rank 0), bc (rank 1), abc from ab+c (rank 2) */
static const char *ABC_MODEL =
    "{\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"continuing_subword_prefix\": null,"
    " \"end_of_word_suffix\": null, \"fuse_unk\": false, \"byte_fallback\": false, \"ignore_merges\": false,"
    " \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"bc\": 4, \"abc\": 5, \" \": 6},"
    " \"merges\": [\"a b\", \"b c\", \"ab c\"]}";

static void test_merge_order(void **state)
{
    (void)state;
    write_tok(NULL, NULL, ABC_MODEL, NULL, NULL);
    /* ab has the lower rank: (ab)(c) -> abc; never a(bc) */
    EXPECT(FPTQ_BOS_NO, "abc", 5);
    /* b c alone merge */
    EXPECT(FPTQ_BOS_NO, "bc", 4);
    /* the same merges as [a, b] pairs */
    write_tok(NULL, NULL,
              "{\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"bc\": 4, \"abc\": 5, \" \": 6},"
              " \"merges\": [[\"a\", \"b\"], [\"b\", \"c\"], [\"ab\", \"c\"]]}",
              NULL, NULL);
    EXPECT(FPTQ_BOS_NO, "abc", 5);
    write_tok(NULL, NULL, ABC_MODEL, NULL, NULL);
    /* equal ranks: the leftmost first: abab -> ab ab */
    EXPECT(FPTQ_BOS_NO, "abab", 3, 3);
    /* no pre-tokenizer: the whole text is one word; the space stops nothing */
    EXPECT(FPTQ_BOS_NO, "ab c", 3, 6, 2);
    /* characters with no token are dropped (no unk, no byte fallback) */
    EXPECT(FPTQ_BOS_NO, "axc", 0, 2);
    /* ... and the characters around a dropped one become neighbours */
    EXPECT(FPTQ_BOS_NO, "axb", 3);
}

static void test_unk_and_byte_fallback(void **state)
{
    (void)state;
    char model[4096];
    snprintf(model, sizeof model,
             "{\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": %s, \"byte_fallback\": %s,"
             " \"vocab\": {\"<unk>\": 0, \"a\": 1, \"<0xC3>\": 2, \"<0xA9>\": 3}, \"merges\": []}",
             "true", "false");
    write_tok(NULL, NULL, model, NULL, NULL);
    EXPECT(FPTQ_BOS_NO, "axya", 1, 0, 1); /* x and y fused into one unk */
    snprintf(model, sizeof model,
             "{\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": false, \"byte_fallback\": false,"
             " \"vocab\": {\"<unk>\": 0, \"a\": 1}, \"merges\": []}");
    write_tok(NULL, NULL, model, NULL, NULL);
    EXPECT(FPTQ_BOS_NO, "axya", 1, 0, 0, 1);
    snprintf(model, sizeof model,
             "{\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true, \"byte_fallback\": true,"
             " \"vocab\": {\"<unk>\": 0, \"a\": 1, \"<0xC3>\": 2, \"<0xA9>\": 3}, \"merges\": []}");
    write_tok(NULL, NULL, model, NULL, NULL);
    /* é is C3 A9: both byte tokens exist; x has no <0x78>: unk */
    EXPECT(FPTQ_BOS_NO, "a\xc3\xa9x", 1, 2, 3, 0);
}

static void test_ignore_merges_and_prefix(void **state)
{
    (void)state;
    /* ignore_merges: a word in the vocabulary is one token even where the
     * merges would not make it */
    write_tok(NULL, NULL,
              "{\"type\": \"BPE\", \"ignore_merges\": true, \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"ba\": 3, \"aba\": 4},"
              " \"merges\": [\"a b\"]}",
              NULL, NULL);
    EXPECT(FPTQ_BOS_NO, "aba", 4);
    EXPECT(FPTQ_BOS_NO, "abab", 2, 2);
    /* continuing_subword_prefix and end_of_word_suffix */
    write_tok(NULL, "{\"type\": \"WhitespaceSplit\"}",
              "{\"type\": \"BPE\", \"continuing_subword_prefix\": \"##\", \"end_of_word_suffix\": \"</w>\","
              " \"vocab\": {\"a\": 0, \"##b</w>\": 1, \"ab</w>\": 2, \"a</w>\": 3, \"##b\": 4},"
              " \"merges\": [\"a ##b</w>\"]}",
              NULL, NULL);
    EXPECT(FPTQ_BOS_NO, "ab a", 2, 3);
}

static void test_added_tokens(void **state)
{
    (void)state;
    const char *added =
        "[{\"id\": 7, \"content\": \"<s>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
        "  \"normalized\": false, \"special\": true},"
        " {\"id\": 8, \"content\": \"<sw>\", \"single_word\": true, \"lstrip\": false, \"rstrip\": false,"
        "  \"normalized\": false, \"special\": false},"
        " {\"id\": 9, \"content\": \"<l>\", \"single_word\": false, \"lstrip\": true, \"rstrip\": true,"
        "  \"normalized\": false, \"special\": false},"
        " {\"id\": 5, \"content\": \"abc\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
        "  \"normalized\": true, \"special\": false}]";
    write_tok("{\"type\": \"Lowercase\"}", NULL, ABC_MODEL, added, NULL);
    /* <s> glued to letters is still <s>; its lack of normalization keeps the case test honest */
    EXPECT(FPTQ_BOS_NO, "a<s>b", 0, 7, 1);
    /* single_word: not inside a word */
    EXPECT(FPTQ_BOS_NO, "a<sw>", 0);
    EXPECT(FPTQ_BOS_NO, " <sw> ", 6, 8, 6);
    /* lstrip / rstrip take the spaces around */
    EXPECT(FPTQ_BOS_NO, "a  <l>  b", 0, 9, 1);
    /* normalized=true: matched after lowercasing */
    EXPECT(FPTQ_BOS_NO, "ABC", 5);
}

static void test_split_behaviours(void **state)
{
    (void)state;
    const char *model = "{\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"-\": 1, \"a-\": 2, \"-a\": 3, \"--\": 4},"
                        " \"merges\": [\"a -\", \"- a\", \"- -\"]}";
    static const struct {
        const char *behavior;
        int32_t want[8];
    } C[] = {
        /* "a-a--a" split on "-" */
        {"Removed", {0, 0, 0, -1}},
        {"Isolated", {0, 1, 0, 1, 1, 0, -1}},
        {"MergedWithPrevious", {2, 2, 1, 0, -1}},
        {"MergedWithNext", {0, 3, 1, 3, -1}},
        {"Contiguous", {0, 1, 0, 4, 0, -1}},
    };
    for (size_t i = 0; i < sizeof C / sizeof C[0]; i++) {
        char pre[256];
        snprintf(pre, sizeof pre, "{\"type\": \"Split\", \"pattern\": {\"String\": \"-\"}, \"behavior\": \"%s\", \"invert\": false}",
                 C[i].behavior);
        write_tok(NULL, pre, model, NULL, NULL);
        expect_ids(FPTQ_BOS_NO, "a-a--a", C[i].want, __FILE__, __LINE__);
    }
    /* invert: the pattern names what is kept */
    write_tok(NULL, "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"a+\"}, \"behavior\": \"Removed\", \"invert\": true}",
              model, NULL, NULL);
    EXPECT(FPTQ_BOS_NO, "a-a--a", 0, 0, 0);
    /* Digits, one at a time */
    write_tok(NULL, "{\"type\": \"Digits\", \"individual_digits\": true}",
              "{\"type\": \"BPE\", \"vocab\": {\"1\": 0, \"2\": 1, \"12\": 2}, \"merges\": [\"1 2\"]}", NULL, NULL);
    EXPECT(FPTQ_BOS_NO, "12", 0, 1);
}

static void test_metaspace(void **state)
{
    (void)state;
    const char *model = "{\"type\": \"BPE\", \"vocab\": {\"\xe2\x96\x81\": 0, \"a\": 1, \"\xe2\x96\x81" "a\": 2, \"<s>\": 3},"
                        " \"merges\": [\"\xe2\x96\x81 a\"]}";
    const char *added = "[{\"id\": 3, \"content\": \"<s>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
                        "  \"normalized\": false, \"special\": true}]";
    write_tok(NULL, "{\"type\": \"Metaspace\", \"replacement\": \"\xe2\x96\x81\", \"prepend_scheme\": \"first\", \"split\": false}",
              model, added, NULL);
    /* first: only the document's first piece gets the prefix; not the piece after <s> */
    EXPECT(FPTQ_BOS_NO, "a a", 2, 2);
    EXPECT(FPTQ_BOS_NO, "<s>a", 3, 1);
    write_tok(NULL, "{\"type\": \"Metaspace\", \"replacement\": \"\xe2\x96\x81\", \"prepend_scheme\": \"always\", \"split\": true}",
              model, added, NULL);
    EXPECT(FPTQ_BOS_NO, "<s>a", 3, 2);
    write_tok(NULL, "{\"type\": \"Metaspace\", \"replacement\": \"\xe2\x96\x81\", \"prepend_scheme\": \"never\", \"split\": true}",
              model, added, NULL);
    EXPECT(FPTQ_BOS_NO, "a a", 1, 2);
}

static void test_bos_policies(void **state)
{
    (void)state;
    const char *added = "[{\"id\": 7, \"content\": \"<s>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
                        "  \"normalized\": false, \"special\": true},"
                        " {\"id\": 8, \"content\": \"</s>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
                        "  \"normalized\": false, \"special\": true}]";
    const char *post = "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}},"
                       " {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, {\"SpecialToken\": {\"id\": \"</s>\", \"type_id\": 0}}],"
                       " \"pair\": [], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [7], \"tokens\": [\"<s>\"]},"
                       " \"</s>\": {\"id\": \"</s>\", \"ids\": [8], \"tokens\": [\"</s>\"]}}}";
    write_tok(NULL, NULL, ABC_MODEL, added, post);
    EXPECT(FPTQ_BOS_AUTO, "ab", 7, 3, 8);
    EXPECT(FPTQ_BOS_NO, "ab", 3);
    /* yes needs a BOS: none is known yet */
    fptq_tokenizer *t = NULL;
    assert_int_equal(fptq_tokenizer_load(g_dir, 0, &t), FPTQ_OK);
    fptq_ids ids = {0};
    fptq_clear_error();
    assert_int_equal(fptq_tokenizer_encode(t, "ab", 2, FPTQ_BOS_YES, "x", &ids), FPTQ_ERR_ARG);
    assert_msg_has("names no BOS token");
    fptq_ids_free(&ids);
    fptq_tokenizer_free(t);
    write_file("tokenizer_config.json", "{\"bos_token\": {\"content\": \"<s>\"}}");
    EXPECT(FPTQ_BOS_YES, "ab", 7, 3);
    write_file("tokenizer_config.json", "{}");
    write_file("config.json", "{\"bos_token_id\": 8}");
    EXPECT(FPTQ_BOS_YES, "ab", 8, 3);
}

static void test_text_sources(void **state)
{
    (void)state;
    write_tok(NULL, NULL, ABC_MODEL, NULL, NULL);
    write_file("config.json", "{\"bos_token_id\": 6}");
    write_file("docs.txt", "ab\n\nc\nabc\n");
    write_file("docs.jsonl", "{\"text\": \"ab\"}\n\n{\"text\": \"\", \"x\": 1}\n{\"text\": \"c\"}\n");
    fptq_tokenizer *t = NULL;
    assert_int_equal(fptq_tokenizer_load(g_dir, 0, &t), FPTQ_OK);
    char p[512], q[512];
    snprintf(p, sizeof p, "%s/docs.txt", g_dir);
    snprintf(q, sizeof q, "%s/docs.jsonl", g_dir);
    fptq_tokens tk;
    fptq_text_stats ts;
    fptq_text_source src = {.text_path = p, .doc_sep = "\n", .bos = FPTQ_BOS_YES};
    assert_int_equal(fptq_tokenize_source(t, &src, &tk, &ts), FPTQ_OK);
    /* three non-empty documents, a BOS before each */
    static const int32_t want[] = {6, 3, 6, 2, 6, 5};
    assert_int_equal(tk.n_tokens, 6);
    assert_memory_equal(tk.ids, want, sizeof want);
    assert_int_equal(ts.documents, 3);
    assert_int_equal(ts.bytes, 10);
    tokens_free(&tk);
    /* one document, one word (no pre-tokenizer): the newlines have no token
     * and are dropped, and what was around them merges: abcabc */
    src = (fptq_text_source){.text_path = p, .bos = FPTQ_BOS_NO};
    assert_int_equal(fptq_tokenize_source(t, &src, &tk, &ts), FPTQ_OK);
    static const int32_t want1[] = {5, 5};
    assert_int_equal(tk.n_tokens, 2);
    assert_memory_equal(tk.ids, want1, sizeof want1);
    tokens_free(&tk);
    src = (fptq_text_source){.jsonl_path = q, .field = "text", .bos = FPTQ_BOS_YES};
    assert_int_equal(fptq_tokenize_source(t, &src, &tk, &ts), FPTQ_OK);
    static const int32_t want2[] = {6, 3, 6, 2};
    assert_int_equal(tk.n_tokens, 4);
    assert_memory_equal(tk.ids, want2, sizeof want2);
    assert_int_equal(ts.documents, 2);
    tokens_free(&tk);
    /* a line without the field */
    write_file("bad.jsonl", "{\"text\": \"ab\"}\n{\"body\": \"c\"}\n");
    snprintf(q, sizeof q, "%s/bad.jsonl", g_dir);
    src = (fptq_text_source){.jsonl_path = q, .field = "text"};
    fptq_clear_error();
    assert_int_equal(fptq_tokenize_source(t, &src, &tk, &ts), FPTQ_ERR_FORMAT);
    assert_msg_has("line 2 has no string field \"text\"");
    /* a NUL in a JSON string is refused, not cut */
    write_file("nul.jsonl", "{\"text\": \"ab\"}\n{\"text\": \"a\\u0000b\"}\n");
    snprintf(q, sizeof q, "%s/nul.jsonl", g_dir);
    src = (fptq_text_source){.jsonl_path = q, .field = "text"};
    fptq_clear_error();
    assert_int_equal(fptq_tokenize_source(t, &src, &tk, &ts), FPTQ_ERR_UNSUPPORTED);
    assert_msg_has("line 2 holds \\u0000 (a NUL character)");
    /* invalid UTF-8: the byte offset */
    write_file("bad.txt", "abc\xff" "ab");
    snprintf(p, sizeof p, "%s/bad.txt", g_dir);
    src = (fptq_text_source){.text_path = p};
    fptq_clear_error();
    assert_int_equal(fptq_tokenize_source(t, &src, &tk, &ts), FPTQ_ERR_FORMAT);
    assert_msg_has("invalid UTF-8 at byte offset 3 (byte 0xFF)");
    assert_msg_has("bad.txt");
    /* an empty text */
    write_file("empty.txt", "");
    snprintf(p, sizeof p, "%s/empty.txt", g_dir);
    src = (fptq_text_source){.text_path = p};
    fptq_clear_error();
    assert_int_not_equal(fptq_tokenize_source(t, &src, &tk, &ts), FPTQ_OK);
    assert_msg_has("empty.txt: text is empty");
    /* a text whose characters have no token */
    write_file("none.txt", "xyz");
    snprintf(p, sizeof p, "%s/none.txt", g_dir);
    src = (fptq_text_source){.text_path = p};
    fptq_clear_error();
    assert_int_equal(fptq_tokenize_source(t, &src, &tk, &ts), FPTQ_ERR_FORMAT);
    assert_msg_has("no tokens");
    fptq_tokenizer_free(t);
}

static void test_refusals(void **state)
{
    (void)state;
    /* truncated and invalid JSON */
    write_file("tokenizer.json", "{\"version\": \"1.0\", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0");
    assert_int_equal(load_only(0), FPTQ_ERR_FORMAT);
    assert_msg_has("tokenizer.json: not valid JSON");
    assert_msg_has("truncated");
    write_file("tokenizer.json", "");
    assert_int_not_equal(load_only(0), FPTQ_OK);
    assert_msg_has("tokenizer.json is empty");
    /* models and components fptq does not implement, by JSON path */
    write_tok(NULL, NULL, "{\"type\": \"Unigram\", \"unk_id\": 0, \"vocab\": [[\"a\", 0.0]]}", NULL, NULL);
    assert_int_equal(load_only(0), FPTQ_ERR_UNSUPPORTED);
    assert_msg_has("model.type \"Unigram\" is not supported");
    write_tok(NULL, NULL, "{\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}", NULL, NULL);
    assert_int_equal(load_only(0), FPTQ_ERR_UNSUPPORTED);
    assert_msg_has("\"WordPiece\"");
    write_tok(NULL, "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\"}, {\"type\": \"UnicodeScripts\"}]}",
              ABC_MODEL, NULL, NULL);
    assert_int_equal(load_only(0), FPTQ_ERR_UNSUPPORTED);
    assert_msg_has("pre_tokenizer.pretokenizers[1]: pre-tokenizer \"UnicodeScripts\" is not supported");
    write_tok("{\"type\": \"Precompiled\", \"precompiled_charsmap\": \"\"}", NULL, ABC_MODEL, NULL, NULL);
    assert_int_equal(load_only(0), FPTQ_ERR_UNSUPPORTED);
    assert_msg_has("normalizer: normalizer \"Precompiled\" is not supported");
    write_tok(NULL, NULL, ABC_MODEL, NULL, "{\"type\": \"Frobnicate\"}");
    assert_int_equal(load_only(0), FPTQ_ERR_UNSUPPORTED);
    assert_msg_has("post-processor \"Frobnicate\"");
    /* a regex PCRE2 cannot compile */
    write_tok(NULL, "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a\"}, \"behavior\": \"Isolated\", \"invert\": false}",
              ABC_MODEL, NULL, NULL);
    assert_int_equal(load_only(0), FPTQ_ERR_UNSUPPORTED);
    assert_msg_has("pre_tokenizer.pattern: regex \"(a\" does not compile");
    /* a merge naming an unknown token, or making one */
    write_tok(NULL, NULL, "{\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a z\"]}", NULL, NULL);
    assert_int_equal(load_only(0), FPTQ_ERR_FORMAT);
    assert_msg_has("model.merges[0] names token \"z\", which is not in model.vocab");
    write_tok(NULL, NULL, "{\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}", NULL, NULL);
    assert_int_equal(load_only(0), FPTQ_ERR_FORMAT);
    assert_msg_has("model.merges[0] makes \"ab\"");
    write_tok(NULL, NULL, "{\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b c\"]}", NULL, NULL);
    assert_int_equal(load_only(0), FPTQ_ERR_FORMAT);
    assert_msg_has("is not two tokens separated by one space");
    write_tok(NULL, NULL, "{\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\", [\"a\", \"b\"]]}",
              NULL, NULL);
    assert_int_equal(load_only(0), FPTQ_ERR_FORMAT);
    assert_msg_has("model.merges[1] is not a string while model.merges[0] is \"a b\"");
    /* duplicate and out-of-range ids, duplicate tokens */
    write_tok(NULL, NULL, "{\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}", NULL, NULL);
    assert_int_equal(load_only(0), FPTQ_ERR_FORMAT);
    assert_msg_has("id 0 is given to two tokens");
    write_tok(NULL, NULL, "{\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"a\": 1}, \"merges\": []}", NULL, NULL);
    assert_int_equal(load_only(0), FPTQ_ERR_FORMAT);
    assert_msg_has("duplicate key \"a\"");
    write_file("tokenizer.json", "{\"version\": \"1.0\", \"normalizer\": null, \"normalizer\": {\"type\": \"Lowercase\"},"
                                 " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}");
    assert_int_equal(load_only(0), FPTQ_ERR_FORMAT);
    assert_msg_has("duplicate key \"normalizer\"");
    write_tok(NULL, NULL, "{\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}", NULL, NULL);
    assert_int_equal(load_only(0), FPTQ_ERR_FORMAT);
    assert_msg_has("model.vocab[\"a\"]: id -1 is not an integer");
    write_tok(NULL, NULL, "{\"type\": \"BPE\", \"vocab\": {\"a\": 4294967296}, \"merges\": []}", NULL, NULL);
    assert_int_equal(load_only(0), FPTQ_ERR_FORMAT);
    assert_msg_has("id 4294967296 is not an integer in [0, 16777216)");
    write_tok(NULL, NULL, "{\"type\": \"BPE\", \"vocab\": {\"a\": 1.5}, \"merges\": []}", NULL, NULL);
    assert_int_equal(load_only(0), FPTQ_ERR_FORMAT);
    /* an added token whose id disagrees with what tokenizers gives it */
    write_tok(NULL, NULL, ABC_MODEL,
              "[{\"id\": 99, \"content\": \"<x>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
              " \"normalized\": false, \"special\": true}]", NULL);
    assert_int_equal(load_only(0), FPTQ_ERR_FORMAT);
    assert_msg_has("has id 99 in the file, but `tokenizers` gives it id 7");
    /* a vocabulary larger than the model's embedding */
    write_tok(NULL, NULL, ABC_MODEL, NULL, NULL);
    assert_int_equal(load_only(7), FPTQ_OK);
    assert_int_equal(load_only(6), FPTQ_ERR_FORMAT);
    assert_msg_has("the tokenizer has ids up to 6");
    assert_msg_has("the model's vocab_size is 6");
    /* what would make tokens vary or get cut */
    write_tok(NULL, NULL, "{\"type\": \"BPE\", \"dropout\": 0.1, \"vocab\": {\"a\": 0}, \"merges\": []}", NULL, NULL);
    assert_int_equal(load_only(0), FPTQ_ERR_UNSUPPORTED);
    assert_msg_has("dropout");
    write_file("tokenizer.json", "{\"version\": \"1.0\", \"truncation\": {\"max_length\": 512}, \"model\": "
                                 "{\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}");
    assert_int_equal(load_only(0), FPTQ_ERR_UNSUPPORTED);
    assert_msg_has("truncation is set");
    /* unk_token not in the vocabulary */
    write_tok(NULL, NULL, "{\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"vocab\": {\"a\": 0}, \"merges\": []}", NULL, NULL);
    assert_int_equal(load_only(0), FPTQ_ERR_FORMAT);
    assert_msg_has("model.unk_token \"<unk>\" is not in model.vocab");
    /* no tokenizer.json at all; a directory in its place */
    char p[512];
    snprintf(p, sizeof p, "%s/tokenizer.json", g_dir);
    unlink(p);
    assert_int_equal(load_only(0), FPTQ_ERR_IO);
    assert_msg_has("tokenizer.json");
    mkdir(p, 0700);
    assert_int_equal(load_only(0), FPTQ_ERR_IO);
    assert_msg_has("not a regular file");
    rmdir(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_merge_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unk_and_byte_fallback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ignore_merges_and_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_added_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_behaviours, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metaspace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bos_policies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text_sources, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
