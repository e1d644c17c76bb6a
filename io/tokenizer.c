/*
 * tokenizer.json in C: the encode pipeline of Hugging Face `tokenizers`
 * (added tokens, normalizer, pre-tokenizer, BPE model, post-processor),
 * step for step as its Rust sources do it, so that the ids are the same.
 * Regexes run on PCRE2 (UTF, Unicode properties, JIT), translated only where
 * Oniguruma's classes (which `tokenizers` uses) differ from PCRE2's;
 * normalization forms are utf8proc's.
 *
 * Strings in the pipeline are pieces of a document: bytes plus, per byte,
 * the offset in the document of the character it came from (what
 * `tokenizers` calls alignments), because Metaspace's prepend_scheme
 * "first" asks whether a piece starts at the document's first character.
 */
#define _GNU_SOURCE /* memmem */
#include "tokenizer.h"

#include "../common/fileio.h"
#include "../common/sha256.h"
#include "json_util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

/* Ids past this are not a real vocabulary (the largest, Gemma's, is 262k). */
#define TOK_MAX_IDS (1 << 24)
/* `tokenizers` caches words shorter than this (bpe/model.rs MAX_LENGTH). */
#define BPE_CACHE_MAX_WORD 256
#define BPE_CACHE_SLOTS (1 << 17)
/* Plain text files are read whole. */
#define TEXT_MAX_BYTES ((int64_t)16 << 30)
/* A document's offsets are 32-bit. */
#define DOC_MAX_BYTES ((size_t)UINT32_MAX)

/* ========================================================================= */
/* UTF-8 and character classes                                               */
/* ========================================================================= */

/* Decodes the (valid) UTF-8 character at s[0..n), returns its length. */
static inline size_t u8_dec(const unsigned char *s, size_t n, int32_t *cp)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = (int32_t)c;
        return 1;
    }
    if (c < 0xE0 && n >= 2) {
        *cp = (int32_t)(((c & 0x1F) << 6) | (s[1] & 0x3F));
        return 2;
    }
    if (c < 0xF0 && n >= 3) {
        *cp = (int32_t)(((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F));
        return 3;
    }
    if (n >= 4) {
        *cp = (int32_t)(((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F));
        return 4;
    }
    *cp = 0xFFFD;
    return 1;
}

static inline size_t u8_enc(int32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Strict UTF-8 (no overlongs, surrogates, or code points past U+10FFFF):
 * returns the offset of the first invalid byte, or n. */
static size_t u8_validate(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0)
                lo = 0xA0;
            if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0)
                lo = 0x90;
            if (c == 0xF4)
                hi = 0x8F;
        } else
            return i;
        if (i + len > n)
            return i;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return i;
        i += len;
    }
    return n;
}

/* Rust's char::is_whitespace: the Unicode White_Space property. */
static inline int is_ws(int32_t c)
{
    if (c < 0x80)
        return c == ' ' || (c >= 0x09 && c <= 0x0D);
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Rust's char::is_numeric: general categories Nd, Nl, No. */
static inline int is_numeric(int32_t c)
{
    if (c < 0x80)
        return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

/* pre_tokenizers::punctuation::is_punc: ASCII punctuation or category P*. */
static inline int is_punc(int32_t c)
{
    if (c < 0x80)
        return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
               (c >= 0x7B && c <= 0x7E);
    utf8proc_category_t k = utf8proc_category(c);
    return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

/* unicode_normalization's is_combining_mark: categories Mn, Mc, Me. */
static inline int is_mark(int32_t c)
{
    if (c < 0x300)
        return 0;
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_MC || k == UTF8PROC_CATEGORY_ME;
}

/* ========================================================================= */
/* Arena: the pieces of one document                                          */
/* ========================================================================= */

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} arena_chunk;

typedef struct arena {
    arena_chunk *head; /* the chunk being filled; older ones follow */
} arena;

static void *arena_alloc(arena *a, size_t bytes)
{
    bytes = (bytes + 15) & ~(size_t)15;
    arena_chunk *c = a->head;
    if (!c || c->cap - c->used < bytes) {
        size_t cap = bytes > ((size_t)1 << 20) ? bytes : ((size_t)1 << 20);
        /* reuse a free chunk kept from the last reset */
        arena_chunk *n = malloc(sizeof *n + cap);
        if (!n)
            return NULL;
        n->cap = cap;
        n->used = 0;
        n->next = c;
        a->head = n;
        c = n;
    }
    void *p = c->data + c->used;
    c->used += bytes;
    return p;
}

/* Frees all but the newest chunk (kept for the next document), emptied. */
static void arena_reset(arena *a)
{
    arena_chunk *c = a->head;
    if (!c)
        return;
    arena_chunk *rest = c->next;
    while (rest) {
        arena_chunk *n = rest->next;
        free(rest);
        rest = n;
    }
    c->next = NULL;
    c->used = 0;
}

static void arena_free(arena *a)
{
    arena_chunk *c = a->head;
    while (c) {
        arena_chunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
}

/* ========================================================================= */
/* Pieces                                                                    */
/* ========================================================================= */

/* A piece of a document: n bytes, and for each the document offset of the
 * character it came from. id >= 0: an added token, already a token. */
typedef struct piece {
    const char *s;
    const uint32_t *al;
    size_t n;
    int32_t id;
} piece;

typedef struct pvec {
    piece *v;
    size_t n, cap;
} pvec;

static int pvec_push(pvec *p, piece x)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        piece *v = realloc(p->v, cap * sizeof *v);
        if (!v)
            return -1;
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = x;
    return 0;
}

/* A string being built (a normalizer's output), then moved into the arena. */
typedef struct sbuf {
    char *s;
    uint32_t *al;
    size_t n, cap;
} sbuf;

static int sbuf_reserve(sbuf *b, size_t extra)
{
    if (b->n + extra <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra)
        cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s)
        return -1;
    b->s = s;
    uint32_t *al = realloc(b->al, cap * sizeof *al);
    if (!al)
        return -1;
    b->al = al;
    b->cap = cap;
    return 0;
}

static inline int sbuf_put(sbuf *b, const char *s, size_t n, uint32_t al)
{
    if (sbuf_reserve(b, n))
        return -1;
    memcpy(b->s + b->n, s, n);
    for (size_t i = 0; i < n; i++)
        b->al[b->n + i] = al;
    b->n += n;
    return 0;
}

static inline int sbuf_put_al(sbuf *b, const char *s, const uint32_t *al, size_t n)
{
    if (sbuf_reserve(b, n))
        return -1;
    memcpy(b->s + b->n, s, n);
    memcpy(b->al + b->n, al, n * sizeof *al);
    b->n += n;
    return 0;
}

static inline int sbuf_cp(sbuf *b, int32_t cp, uint32_t al)
{
    char t[4];
    size_t k = u8_enc(cp, t);
    return sbuf_put(b, t, k, al);
}

static void sbuf_free(sbuf *b)
{
    free(b->s);
    free(b->al);
    memset(b, 0, sizeof *b);
}

/* ========================================================================= */
/* Regexes: Oniguruma's syntax (as `tokenizers` compiles them) on PCRE2       */
/* ========================================================================= */

typedef struct rx {
    pcre2_code *code;
    pcre2_match_data *md;
    int jit;
} rx;

/* Onig (Ruby syntax, UTF-8) and PCRE2 with PCRE2_UCP agree on \p{..}, \d
 * and case folding; they differ on \s (PCRE2 adds U+180E), \w (Onig:
 * L, M, N, Pc; PCRE2: L, N, '_'), \h (Onig: a hex digit) and (?m) (Onig:
 * dot matches newline). Those are rewritten; the rest is passed as is.
 * Inside a character class the negated forms (\S, \W) are kept as PCRE2's:
 * a class cannot hold a negated union. */
#define ONIG_S "\\t\\n\\x0B\\f\\r\\x{85}\\p{Z}"
#define ONIG_W "\\p{L}\\p{M}\\p{N}\\p{Pc}"
#define ONIG_H "0-9a-fA-F"

static char *onig_to_pcre2(const char *p, size_t n)
{
    size_t cap = n * 4 + 64;
    char *o = malloc(cap);
    if (!o)
        return NULL;
    size_t k = 0;
    int in_class = 0;
#define EMIT(str)                                                       \
    do {                                                                \
        size_t l_ = strlen(str);                                        \
        if (k + l_ + 8 > cap) {                                         \
            cap = (cap + l_) * 2;                                       \
            char *t_ = realloc(o, cap);                                 \
            if (!t_) {                                                  \
                free(o);                                                \
                return NULL;                                            \
            }                                                           \
            o = t_;                                                     \
        }                                                               \
        memcpy(o + k, str, l_);                                         \
        k += l_;                                                        \
    } while (0)
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char d = p[i + 1];
            i++;
            if (d == 's')
                EMIT(in_class ? ONIG_S : "[" ONIG_S "]");
            else if (d == 'S' && !in_class)
                EMIT("[^" ONIG_S "]");
            else if (d == 'w')
                EMIT(in_class ? ONIG_W : "[" ONIG_W "]");
            else if (d == 'W' && !in_class)
                EMIT("[^" ONIG_W "]");
            else if (d == 'h')
                EMIT(in_class ? ONIG_H : "[" ONIG_H "]");
            else if (d == 'H' && !in_class)
                EMIT("[^" ONIG_H "]");
            else {
                char t[3] = {'\\', d, 0};
                EMIT(t);
            }
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            EMIT("[");
            /* a ']' or '^]' right after '[' is a literal */
            if (i + 1 < n && p[i + 1] == '^') {
                EMIT("^");
                i++;
            }
            if (i + 1 < n && p[i + 1] == ']') {
                EMIT("]");
                i++;
            }
            continue;
        }
        if (in_class && c == '[' && i + 1 < n && p[i + 1] == ':') {
            /* a POSIX class [:alpha:] inside a class */
            const char *e = strstr(p + i + 2, ":]");
            if (e && (size_t)(e - p) < n) {
                size_t l = (size_t)(e - (p + i)) + 2;
                char t[64];
                if (l < sizeof t) {
                    memcpy(t, p + i, l);
                    t[l] = 0;
                    EMIT(t);
                    i += l - 1;
                    continue;
                }
            }
        }
        if (in_class && c == ']') {
            in_class = 0;
            EMIT("]");
            continue;
        }
        if (!in_class && c == '(' && i + 2 < n && p[i + 1] == '?') {
            /* inline options: Onig's m is PCRE2's s */
            size_t j = i + 2;
            EMIT("(?");
            while (j < n && (p[j] == 'i' || p[j] == 'm' || p[j] == 'x' || p[j] == '-')) {
                char t[2] = {p[j] == 'm' ? 's' : p[j], 0};
                EMIT(t);
                j++;
            }
            i = j - 1;
            continue;
        }
        char t[2] = {c, 0};
        if (c == '\0')
            EMIT("\\x{0}");
        else
            EMIT(t);
    }
#undef EMIT
    o[k] = 0;
    return o;
}

static void rx_free(rx *r)
{
    if (!r)
        return;
    pcre2_match_data_free(r->md);
    pcre2_code_free(r->code);
    free(r);
}

/* literal: the pattern is a string to match as is (SplitPattern::String). */
static fptq_status rx_compile(const char *pat, size_t n, int literal, const char *where, rx **out)
{
    *out = NULL;
    char *tr = literal ? NULL : onig_to_pcre2(pat, n);
    if (!literal && !tr)
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory translating a regex", where);
    int err;
    PCRE2_SIZE eoff;
    uint32_t opts = PCRE2_UTF | PCRE2_NO_UTF_CHECK | (literal ? PCRE2_LITERAL : (PCRE2_UCP | PCRE2_MULTILINE));
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)(literal ? pat : tr), literal ? n : PCRE2_ZERO_TERMINATED,
                                     opts, &err, &eoff, NULL);
    free(tr);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: regex \"%.*s\" does not compile in PCRE2: %s (at offset %zu)",
                         where, (int)(n > 200 ? 200 : n), pat, (const char *)msg, (size_t)eoff);
    }
    rx *r = calloc(1, sizeof *r);
    if (!r) {
        pcre2_code_free(code);
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory", where);
    }
    r->code = code;
    r->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    r->md = pcre2_match_data_create_from_pattern(code, NULL);
    if (!r->md) {
        rx_free(r);
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory", where);
    }
    *out = r;
    return FPTQ_OK;
}

/* One search from `from`: 1 and [*s, *e) on a match, 0 on none, -1 on error. */
static int rx_search(rx *r, const char *subj, size_t n, size_t from, size_t *s, size_t *e)
{
    int rc = r->jit ? pcre2_jit_match(r->code, (PCRE2_SPTR)subj, n, from, PCRE2_NO_UTF_CHECK, r->md, NULL)
                    : pcre2_match(r->code, (PCRE2_SPTR)subj, n, from, PCRE2_NO_UTF_CHECK, r->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    if (rc < 0)
        return -1;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
    *s = ov[0];
    *e = ov[1];
    return 1;
}

/* ========================================================================= */
/* Patterns: a piece cut into (offsets, is_match) spans covering it          */
/* ========================================================================= */

typedef struct span {
    size_t s, e;
    int m;
} span;

typedef struct spans {
    span *v;
    size_t n, cap;
} spans;

static int spans_push(spans *p, size_t s, size_t e, int m)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        span *v = realloc(p->v, cap * sizeof *v);
        if (!v)
            return -1;
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = (span){s, e, m};
    return 0;
}

/* pattern.rs `impl Pattern for &SysRegex`, with the onig crate's find_iter:
 * an empty match right where the last match ended is skipped by moving one
 * character on. */
static int find_regex(rx *r, const char *s, size_t n, spans *out)
{
    out->n = 0;
    if (n == 0)
        return spans_push(out, 0, 0, 0);
    size_t prev = 0, last_end = 0;
    int have_last = 0;
    size_t last_match_end = 0;
    while (last_end <= n) {
        size_t ms, me;
        int rc = rx_search(r, s, n, last_end, &ms, &me);
        if (rc < 0)
            return -2;
        if (rc == 0)
            break;
        if (me == ms && have_last && last_match_end == me) {
            if (last_end >= n)
                break;
            int32_t cp;
            last_end += u8_dec((const unsigned char *)s + last_end, n - last_end, &cp);
            continue;
        }
        last_end = me;
        last_match_end = me;
        have_last = 1;
        if (prev != ms && spans_push(out, prev, ms, 0))
            return -1;
        if (spans_push(out, ms, me, 1))
            return -1;
        prev = me;
    }
    if (prev != n && spans_push(out, prev, n, 0))
        return -1;
    return 0;
}

typedef int (*char_pred)(int32_t c, int32_t arg);

/* pattern.rs `impl<F: Fn(char) -> bool> Pattern for F`: each matching
 * character is a match of its own; the runs between are non-matches. */
static int find_chars(char_pred pred, int32_t arg, const char *s, size_t n, spans *out)
{
    out->n = 0;
    if (n == 0)
        return spans_push(out, 0, 0, 0);
    size_t last = 0, i = 0;
    while (i < n) {
        int32_t cp;
        size_t k = u8_dec((const unsigned char *)s + i, n - i, &cp);
        if (pred(cp, arg)) {
            if (last < i && spans_push(out, last, i, 0))
                return -1;
            if (spans_push(out, i, i + k, 1))
                return -1;
            last = i + k;
        }
        i += k;
    }
    if (n > last && spans_push(out, last, n, 0))
        return -1;
    return 0;
}

static int pred_ws(int32_t c, int32_t a) { (void)a; return is_ws(c); }
static int pred_num(int32_t c, int32_t a) { (void)a; return is_numeric(c); }
static int pred_punc(int32_t c, int32_t a) { (void)a; return is_punc(c); }
static int pred_eq(int32_t c, int32_t a) { return c == a; }

typedef enum split_behavior { SB_REMOVED, SB_ISOLATED, SB_MERGED_PREV, SB_MERGED_NEXT, SB_CONTIGUOUS } split_behavior;

/* normalizer.rs NormalizedString::split: spans merged by the behaviour, then
 * the kept ones appended as pieces; empty pieces are dropped (as
 * PreTokenizedString::split drops them). */
static int split_apply(const piece *in, spans *sp, split_behavior b, pvec *out)
{
    span *v = sp->v;
    size_t n = sp->n, w = 0;
    switch (b) {
    case SB_ISOLATED:
        for (size_t i = 0; i < n; i++)
            v[i].m = 0; /* nothing removed */
        w = n;
        break;
    case SB_REMOVED:
        w = n; /* m = 1: removed */
        break;
    case SB_CONTIGUOUS: {
        int prev = 0;
        for (size_t i = 0; i < n; i++) {
            int m = v[i].m;
            if (m == prev && w > 0)
                v[w - 1].e = v[i].e;
            else
                v[w++] = (span){v[i].s, v[i].e, 0};
            prev = m;
        }
        break;
    }
    case SB_MERGED_PREV: {
        int prev = 0;
        for (size_t i = 0; i < n; i++) {
            int m = v[i].m;
            if (m && !prev && w > 0)
                v[w - 1].e = v[i].e;
            else
                v[w++] = (span){v[i].s, v[i].e, 0};
            prev = m;
        }
        break;
    }
    case SB_MERGED_NEXT: {
        /* from the right: a match joins the span after it */
        int prev = 0;
        size_t wr = n; /* results fill v[wr..n) from the back */
        for (size_t i = n; i-- > 0;) {
            int m = v[i].m;
            span cur = v[i];
            if (m && !prev && wr < n)
                v[wr].s = cur.s;
            else
                v[--wr] = (span){cur.s, cur.e, 0};
            prev = m;
        }
        for (size_t i = wr; i < n; i++)
            v[w++] = v[i];
        break;
    }
    }
    for (size_t i = 0; i < w; i++) {
        if (v[i].m || v[i].e == v[i].s)
            continue;
        if (pvec_push(out, (piece){in->s + v[i].s, in->al + v[i].s, v[i].e - v[i].s, -1}))
            return -1;
    }
    return 0;
}

/* ========================================================================= */
/* Normalizers                                                               */
/* ========================================================================= */

typedef enum norm_kind { N_NFC, N_NFD, N_NFKC, N_NFKD, N_LOWER, N_PREPEND, N_REPLACE, N_STRIP, N_STRIP_ACCENTS } norm_kind;

typedef struct norm_op {
    norm_kind kind;
    char *str;        /* Prepend: the prefix; Replace: the content */
    size_t str_n;
    rx *re;           /* Replace */
    int left, right;  /* Strip */
} norm_op;

static int is_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return 0;
    return 1;
}

/* NFC/NFD/NFKC/NFKD by utf8proc. The output's characters are aligned to the
 * input's greedily: each output character takes the offset of the input
 * character whose decomposition supplies its first code point. */
static int norm_unicode(const piece *in, norm_kind k, sbuf *o)
{
    if (is_ascii(in->s, in->n))
        return sbuf_put_al(o, in->s, in->al, in->n);
    utf8proc_option_t opt = UTF8PROC_STABLE;
    if (k == N_NFC || k == N_NFKC)
        opt |= UTF8PROC_COMPOSE;
    else
        opt |= UTF8PROC_DECOMPOSE;
    if (k == N_NFKC || k == N_NFKD)
        opt |= UTF8PROC_COMPAT;
    utf8proc_uint8_t *res = NULL;
    utf8proc_ssize_t rn = utf8proc_map((const utf8proc_uint8_t *)in->s, (utf8proc_ssize_t)in->n, &res, opt);
    if (rn < 0)
        return -1;
    int ret = 0;
    if ((size_t)rn == in->n && memcmp(res, in->s, in->n) == 0) {
        ret = sbuf_put_al(o, in->s, in->al, in->n);
        free(res);
        return ret;
    }
    /* the input decomposed character by character: code point -> offset */
    utf8proc_option_t dopt = UTF8PROC_DECOMPOSE | (k == N_NFKC || k == N_NFKD ? UTF8PROC_COMPAT : 0);
    size_t dcap = in->n * 4 + 16, dn = 0;
    int32_t *dcp = malloc(dcap * sizeof *dcp);
    uint32_t *dal = malloc(dcap * sizeof *dal);
    if (!dcp || !dal) {
        free(dcp);
        free(dal);
        free(res);
        return -1;
    }
    for (size_t i = 0; i < in->n;) {
        int32_t cp;
        size_t l = u8_dec((const unsigned char *)in->s + i, in->n - i, &cp);
        utf8proc_int32_t buf[32];
        int last = 0;
        utf8proc_ssize_t m = utf8proc_decompose_char(cp, buf, 32, dopt, &last);
        if (m < 0 || m > 32) {
            buf[0] = cp;
            m = 1;
        }
        for (utf8proc_ssize_t j = 0; j < m; j++) {
            if (dn == dcap)
                break;
            dcp[dn] = buf[j];
            dal[dn++] = in->al[i];
        }
        i += l;
    }
    size_t cursor = 0;
    for (utf8proc_ssize_t i = 0; i < rn && ret == 0;) {
        int32_t cp;
        size_t l = u8_dec(res + i, (size_t)(rn - i), &cp);
        utf8proc_int32_t buf[32];
        int last = 0;
        utf8proc_ssize_t m = utf8proc_decompose_char(cp, buf, 32, dopt, &last);
        int32_t first = m > 0 ? buf[0] : cp;
        size_t j = cursor;
        while (j < dn && dcp[j] != first)
            j++;
        uint32_t a;
        if (j < dn) {
            a = dal[j];
            if (j == cursor)
                cursor++;
        } else
            a = cursor < dn ? dal[cursor] : (dn ? dal[dn - 1] : in->al[0]);
        ret = sbuf_put(o, (const char *)res + i, l, a);
        i += (utf8proc_ssize_t)l;
    }
    free(dcp);
    free(dal);
    free(res);
    return ret;
}

/* Rust's char::to_lowercase, one character at a time (no final-sigma rule,
 * as NormalizedString::lowercase). U+0130 is the one character whose full
 * lowercase mapping is two characters. */
static int norm_lower(const piece *in, sbuf *o)
{
    for (size_t i = 0; i < in->n;) {
        int32_t cp;
        size_t l = u8_dec((const unsigned char *)in->s + i, in->n - i, &cp);
        int r;
        if (cp < 0x80)
            r = sbuf_cp(o, (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp, in->al[i]);
        else if (cp == 0x130)
            r = sbuf_cp(o, 'i', in->al[i]) || sbuf_cp(o, 0x307, in->al[i]);
        else
            r = sbuf_cp(o, utf8proc_tolower(cp), in->al[i]);
        if (r)
            return -1;
        i += l;
    }
    return 0;
}

/* NormalizedString::replace: every match becomes `content`, whose characters
 * take the alignment of the byte before the match's end. */
static int norm_replace(const norm_op *op, const piece *in, sbuf *o, spans *sp)
{
    int rc = find_regex(op->re, in->s, in->n, sp);
    if (rc)
        return rc;
    for (size_t i = 0; i < sp->n; i++) {
        span x = sp->v[i];
        if (!x.m) {
            if (sbuf_put_al(o, in->s + x.s, in->al + x.s, x.e - x.s))
                return -1;
            continue;
        }
        uint32_t a = x.e > 0 ? in->al[x.e - 1] : 0;
        if (op->str_n && sbuf_put(o, op->str, op->str_n, a))
            return -1;
    }
    return 0;
}

static int norm_strip(const norm_op *op, const piece *in, sbuf *o)
{
    size_t s = 0, e = in->n;
    if (op->left)
        while (s < e) {
            int32_t cp;
            size_t l = u8_dec((const unsigned char *)in->s + s, e - s, &cp);
            if (!is_ws(cp))
                break;
            s += l;
        }
    if (op->right)
        while (e > s) {
            size_t b = e - 1;
            while (b > s && ((unsigned char)in->s[b] & 0xC0) == 0x80)
                b--;
            int32_t cp;
            u8_dec((const unsigned char *)in->s + b, e - b, &cp);
            if (!is_ws(cp))
                break;
            e = b;
        }
    return sbuf_put_al(o, in->s + s, in->al + s, e - s);
}

static int norm_strip_accents(const piece *in, sbuf *o)
{
    for (size_t i = 0; i < in->n;) {
        int32_t cp;
        size_t l = u8_dec((const unsigned char *)in->s + i, in->n - i, &cp);
        if (!is_mark(cp) && sbuf_put_al(o, in->s + i, in->al + i, l))
            return -1;
        i += l;
    }
    return 0;
}

/* ========================================================================= */
/* Pre-tokenizers                                                            */
/* ========================================================================= */

typedef enum pt_kind { PT_BYTELEVEL, PT_SPLIT, PT_METASPACE, PT_CHARSPLIT } pt_kind;
typedef enum prepend_scheme { PS_ALWAYS, PS_FIRST, PS_NEVER } prepend_scheme;

typedef struct pt_op {
    pt_kind kind;
    /* ByteLevel */
    int add_prefix_space, use_regex;
    /* Split (and ByteLevel's regex, Whitespace's) */
    rx *re;
    int invert;
    split_behavior behavior;
    /* Metaspace */
    int32_t replacement;
    char rep[4];
    size_t rep_n;
    prepend_scheme scheme;
    int split;
    /* a split on a character class (Digits, Punctuation, WhitespaceSplit, Bert, CharDelimiterSplit) */
    char_pred pred;
    int32_t pred_arg;
} pt_op;

/* bytes_char(): printable bytes map to themselves, the rest to U+0100.. */
static void byte_level_table(char tab[256][3], uint8_t len[256])
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        int32_t cp = keep ? b : 256 + n++;
        char t[4];
        len[b] = (uint8_t)u8_enc(cp, t);
        memcpy(tab[b], t, len[b]);
    }
}

/* ========================================================================= */
/* Hash maps: strings -> ids, id pairs -> merges                             */
/* ========================================================================= */

static inline uint64_t hash_bytes(const void *p, size_t n)
{
    /* FNV-1a, 64-bit, then a final mix */
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

typedef struct strmap {
    const char **key;
    uint32_t *klen;
    int32_t *val;
    size_t cap, n; /* cap a power of two */
} strmap;

static int strmap_init(strmap *m, size_t expect)
{
    size_t cap = 16;
    while (cap < expect * 2)
        cap *= 2;
    m->key = calloc(cap, sizeof *m->key);
    m->klen = calloc(cap, sizeof *m->klen);
    m->val = calloc(cap, sizeof *m->val);
    m->cap = cap;
    m->n = 0;
    return (m->key && m->klen && m->val) ? 0 : -1;
}

static void strmap_free(strmap *m)
{
    free(m->key);
    free(m->klen);
    free(m->val);
    memset(m, 0, sizeof *m);
}

static inline int32_t strmap_get(const strmap *m, const char *s, size_t n)
{
    if (!m->cap)
        return -1;
    size_t i = hash_bytes(s, n) & (m->cap - 1);
    while (m->key[i]) {
        if (m->klen[i] == n && memcmp(m->key[i], s, n) == 0)
            return m->val[i];
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

/* key must outlive the map. Returns the existing value if present (no change), else -1. */
static int32_t strmap_put(strmap *m, const char *s, size_t n, int32_t v)
{
    size_t i = hash_bytes(s, n) & (m->cap - 1);
    while (m->key[i]) {
        if (m->klen[i] == n && memcmp(m->key[i], s, n) == 0)
            return m->val[i];
        i = (i + 1) & (m->cap - 1);
    }
    m->key[i] = s;
    m->klen[i] = (uint32_t)n;
    m->val[i] = v;
    m->n++;
    return -1;
}

typedef struct pairmap {
    uint64_t *key; /* (a << 32 | b) + 1; 0 = empty */
    uint32_t *rank;
    int32_t *new_id;
    size_t cap;
} pairmap;

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dull;
    x ^= x >> 33;
    return x;
}

static int pairmap_init(pairmap *m, size_t expect)
{
    size_t cap = 16;
    while (cap < expect * 2)
        cap *= 2;
    m->key = calloc(cap, sizeof *m->key);
    m->rank = calloc(cap, sizeof *m->rank);
    m->new_id = calloc(cap, sizeof *m->new_id);
    m->cap = cap;
    return (m->key && m->rank && m->new_id) ? 0 : -1;
}

static void pairmap_free(pairmap *m)
{
    free(m->key);
    free(m->rank);
    free(m->new_id);
    memset(m, 0, sizeof *m);
}

/* A later merge of the same pair replaces an earlier one (a HashMap collect). */
static void pairmap_put(pairmap *m, int32_t a, int32_t b, uint32_t rank, int32_t new_id)
{
    uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = mix64(k) & (m->cap - 1);
    while (m->key[i] && m->key[i] != k)
        i = (i + 1) & (m->cap - 1);
    m->key[i] = k;
    m->rank[i] = rank;
    m->new_id[i] = new_id;
}

static inline int pairmap_get(const pairmap *m, int32_t a, int32_t b, uint32_t *rank, int32_t *new_id)
{
    if (!m->cap)
        return 0;
    uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = mix64(k) & (m->cap - 1);
    while (m->key[i]) {
        if (m->key[i] == k) {
            *rank = m->rank[i];
            *new_id = m->new_id[i];
            return 1;
        }
        i = (i + 1) & (m->cap - 1);
    }
    return 0;
}

/* ========================================================================= */
/* The BPE model                                                             */
/* ========================================================================= */

typedef struct bpe_cache_entry {
    char *word;
    uint32_t word_n, n_ids;
    int32_t *ids;
} bpe_cache_entry;

typedef struct bpe {
    strmap vocab;
    pairmap merges;
    int32_t byte_id[256]; /* byte_fallback's <0xNN> tokens, -1 where absent */
    int32_t unk_id;       /* -1: no unk_token */
    int byte_fallback, fuse_unk, ignore_merges;
    char *prefix, *suffix; /* continuing_subword_prefix, end_of_word_suffix */
    size_t prefix_n, suffix_n;
    size_t vocab_count;
    bpe_cache_entry *cache; /* BPE_CACHE_SLOTS, open addressing, never evicted */
    size_t cache_n;
} bpe;

typedef struct sym {
    int32_t c;
    int32_t prev, next; /* -1: none */
    uint32_t len;       /* bytes; 0: merged away */
} sym;

typedef struct merge_item {
    uint32_t rank;
    uint32_t pos;
    int32_t new_id;
} merge_item;

/* word.rs Merge's order: lowest rank first, then lowest position. */
static inline int merge_before(const merge_item *a, const merge_item *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

typedef struct heap {
    merge_item *v;
    size_t n, cap;
} heap;

static int heap_push(heap *h, merge_item x)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        merge_item *v = realloc(h->v, cap * sizeof *v);
        if (!v)
            return -1;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!merge_before(&x, &h->v[p]))
            break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = x;
    return 0;
}

static merge_item heap_pop(heap *h)
{
    merge_item top = h->v[0], x = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const merge_item *best = &x;
        if (l < h->n && merge_before(&h->v[l], best)) {
            m = l;
            best = &h->v[l];
        }
        if (r < h->n && merge_before(&h->v[r], best))
            m = r;
        if (m == i)
            break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n)
        h->v[i] = x;
    return top;
}

/* Scratch reused across words. */
typedef struct bpe_scratch {
    sym *syms;
    size_t cap;
    heap h;
    char *buf; /* a character with prefix / suffix */
    size_t buf_cap;
} bpe_scratch;

static int add_sym(bpe_scratch *x, size_t *n, int32_t c, uint32_t len)
{
    if (*n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 64;
        sym *v = realloc(x->syms, cap * sizeof *v);
        if (!v)
            return -1;
        x->syms = v;
        x->cap = cap;
    }
    sym *s = &x->syms[*n];
    s->c = c;
    s->len = len;
    s->prev = *n ? (int32_t)*n - 1 : -1;
    s->next = -1;
    if (*n)
        x->syms[*n - 1].next = (int32_t)*n;
    (*n)++;
    return 0;
}

/* model.rs merge_word + word.rs merge_all. Appends the word's ids. */
static int bpe_merge_word(const bpe *m, bpe_scratch *x, const char *w, size_t wn, fptq_ids *out, int64_t *dropped)
{
    size_t n = 0;
    int32_t unk = -1;
    uint32_t unk_len = 0;
    for (size_t i = 0; i < wn;) {
        int32_t cp;
        size_t l = u8_dec((const unsigned char *)w + i, wn - i, &cp);
        int first = i == 0, last = i + l == wn;
        const char *s = w + i;
        size_t sn = l;
        if ((!first && m->prefix) || (last && m->suffix)) {
            size_t need = l + m->prefix_n + m->suffix_n;
            if (need > x->buf_cap) {
                char *b = realloc(x->buf, need);
                if (!b)
                    return -1;
                x->buf = b;
                x->buf_cap = need;
            }
            sn = 0;
            if (!first && m->prefix) {
                memcpy(x->buf, m->prefix, m->prefix_n);
                sn = m->prefix_n;
            }
            memcpy(x->buf + sn, w + i, l);
            sn += l;
            if (last && m->suffix) {
                memcpy(x->buf + sn, m->suffix, m->suffix_n);
                sn += m->suffix_n;
            }
            s = x->buf;
        }
        int32_t id = strmap_get(&m->vocab, s, sn);
        if (id >= 0) {
            if (unk >= 0) {
                if (add_sym(x, &n, unk, unk_len))
                    return -1;
                unk = -1;
            }
            if (add_sym(x, &n, id, (uint32_t)l))
                return -1;
        } else {
            int done = 0;
            if (m->byte_fallback) {
                int all = 1;
                for (size_t k = 0; k < sn; k++)
                    if (m->byte_id[(unsigned char)s[k]] < 0)
                        all = 0;
                if (all) {
                    for (size_t k = 0; k < sn; k++)
                        if (add_sym(x, &n, m->byte_id[(unsigned char)s[k]], 1))
                            return -1;
                    done = 1;
                }
            }
            if (!done) {
                if (m->unk_id >= 0) {
                    if (unk >= 0 && m->fuse_unk)
                        unk_len += (uint32_t)l;
                    else {
                        if (unk >= 0 && add_sym(x, &n, unk, unk_len))
                            return -1;
                        unk = m->unk_id;
                        unk_len = (uint32_t)l;
                    }
                } else
                    (*dropped)++;
            }
        }
        i += l;
    }
    if (unk >= 0 && add_sym(x, &n, unk, unk_len))
        return -1;

    sym *sy = x->syms;
    heap *h = &x->h;
    h->n = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        merge_item it;
        if (pairmap_get(&m->merges, sy[i].c, sy[i + 1].c, &it.rank, &it.new_id)) {
            it.pos = (uint32_t)i;
            if (heap_push(h, it))
                return -1;
        }
    }
    while (h->n) {
        merge_item top = heap_pop(h);
        sym *cur = &sy[top.pos];
        if (cur->len == 0 || cur->next < 0)
            continue;
        sym right = sy[cur->next];
        uint32_t rk;
        int32_t nid;
        if (!pairmap_get(&m->merges, cur->c, right.c, &rk, &nid) || nid != top.new_id)
            continue;
        cur->c = top.new_id;
        cur->len += right.len;
        sy[cur->next].len = 0;
        cur->next = right.next;
        if (right.next >= 0 && (size_t)right.next < n)
            sy[right.next].prev = (int32_t)top.pos;
        merge_item it;
        if (cur->prev >= 0 && pairmap_get(&m->merges, sy[cur->prev].c, cur->c, &it.rank, &it.new_id)) {
            it.pos = (uint32_t)cur->prev;
            if (heap_push(h, it))
                return -1;
        }
        if (cur->next >= 0 && (size_t)cur->next < n &&
            pairmap_get(&m->merges, cur->c, sy[cur->next].c, &it.rank, &it.new_id)) {
            it.pos = top.pos;
            if (heap_push(h, it))
                return -1;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (sy[i].len) {
            if (out->n == out->cap) {
                int64_t cap = out->cap ? out->cap * 2 : 1024;
                int32_t *v = realloc(out->v, (size_t)cap * sizeof *v);
                if (!v)
                    return -1;
                out->v = v;
                out->cap = cap;
            }
            out->v[out->n++] = sy[i].c;
        }
    return 0;
}

static int ids_push(fptq_ids *out, int32_t id)
{
    if (out->n == out->cap) {
        int64_t cap = out->cap ? out->cap * 2 : 1024;
        int32_t *v = realloc(out->v, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        out->v = v;
        out->cap = cap;
    }
    out->v[out->n++] = id;
    return 0;
}

/* model.rs tokenize_with_cache: ignore_merges first, then the cache. */
static int bpe_tokenize(bpe *m, bpe_scratch *x, const char *w, size_t wn, fptq_ids *out, int64_t *dropped)
{
    if (wn == 0)
        return 0;
    if (m->ignore_merges) {
        int32_t id = strmap_get(&m->vocab, w, wn);
        if (id >= 0)
            return ids_push(out, id);
    }
    size_t slot = 0;
    int cacheable = wn < BPE_CACHE_MAX_WORD && m->cache;
    if (cacheable) {
        slot = hash_bytes(w, wn) & (BPE_CACHE_SLOTS - 1);
        while (m->cache[slot].word) {
            bpe_cache_entry *e = &m->cache[slot];
            if (e->word_n == wn && memcmp(e->word, w, wn) == 0) {
                for (uint32_t i = 0; i < e->n_ids; i++)
                    if (ids_push(out, e->ids[i]))
                        return -1;
                return 0;
            }
            slot = (slot + 1) & (BPE_CACHE_SLOTS - 1);
        }
    }
    int64_t before = out->n, drop0 = *dropped;
    if (bpe_merge_word(m, x, w, wn, out, dropped))
        return -1;
    /* a half-full table keeps probes short; past it, words are not cached */
    if (cacheable && m->cache_n < BPE_CACHE_SLOTS / 2 && *dropped == drop0) {
        bpe_cache_entry *e = &m->cache[slot];
        size_t k = (size_t)(out->n - before);
        e->word = malloc(wn);
        e->ids = malloc(k ? k * sizeof *e->ids : 1);
        if (!e->word || !e->ids) {
            free(e->word);
            free(e->ids);
            e->word = NULL;
            e->ids = NULL;
            return 0;
        }
        memcpy(e->word, w, wn);
        memcpy(e->ids, out->v + before, k * sizeof *e->ids);
        e->word_n = (uint32_t)wn;
        e->n_ids = (uint32_t)k;
        m->cache_n++;
    }
    return 0;
}

/* ========================================================================= */
/* Added tokens                                                              */
/* ========================================================================= */

typedef struct added_tok {
    char *content;   /* as in the file */
    char *pattern;   /* what is matched: the content, normalized when normalized=true */
    size_t content_n, pattern_n;
    int32_t id;
    int special, single_word, lstrip, rstrip, normalized;
} added_tok;

/* A byte trie over the patterns of one set (normalized or not). */
typedef struct trie_node {
    int32_t child, sibling; /* first child, next sibling; -1: none */
    int32_t tok;            /* index into added[] ending here, -1: none */
    unsigned char byte;
} trie_node;

typedef struct trie {
    trie_node *v;
    size_t n, cap;
} trie;

static int trie_new_node(trie *t, unsigned char b)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        trie_node *v = realloc(t->v, cap * sizeof *v);
        if (!v)
            return -1;
        t->v = v;
        t->cap = cap;
    }
    t->v[t->n] = (trie_node){-1, -1, -1, b};
    return (int)t->n++;
}

static int trie_insert(trie *t, const char *s, size_t n, int32_t tok)
{
    if (t->n == 0 && trie_new_node(t, 0) < 0)
        return -1;
    int32_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        int32_t c = t->v[cur].child, found = -1;
        while (c >= 0) {
            if (t->v[c].byte == b) {
                found = c;
                break;
            }
            c = t->v[c].sibling;
        }
        if (found < 0) {
            int nn = trie_new_node(t, b);
            if (nn < 0)
                return -1;
            t->v[nn].sibling = t->v[cur].child;
            t->v[cur].child = nn;
            found = nn;
        }
        cur = found;
    }
    if (t->v[cur].tok < 0)
        t->v[cur].tok = tok;
    return 0;
}

/* The longest pattern starting at s[0..n): its token index and length. */
static int trie_longest(const trie *t, const char *s, size_t n, size_t *len)
{
    if (t->n == 0)
        return -1;
    int32_t cur = 0, best = -1;
    for (size_t i = 0; i < n; i++) {
        int32_t c = t->v[cur].child;
        while (c >= 0 && t->v[c].byte != (unsigned char)s[i])
            c = t->v[c].sibling;
        if (c < 0)
            break;
        cur = c;
        if (t->v[cur].tok >= 0) {
            best = t->v[cur].tok;
            *len = i + 1;
        }
    }
    return best;
}

/* ========================================================================= */
/* Post-processor                                                            */
/* ========================================================================= */

/* Each step of the post-processor wraps the sequence: pre ids, the
 * sequence, post ids (TemplateProcessing's single template, Roberta, Bert;
 * ByteLevel adds nothing). */
typedef struct pp_step {
    int32_t *pre, *post;
    size_t n_pre, n_post;
} pp_step;

/* ========================================================================= */
/* The tokenizer                                                             */
/* ========================================================================= */

struct fptq_tokenizer {
    char path[4096];
    char sha256[65];
    bpe model;
    norm_op *norm;
    size_t n_norm;
    pt_op *pt;
    size_t n_pt;
    pp_step *pp;
    size_t n_pp;
    added_tok *added;
    size_t n_added;
    trie raw_trie, norm_trie; /* added tokens matched before / after normalization */
    rx *word_start, *word_end; /* Rust regex's ^\w and \w$, for single_word */
    char **id_tok;             /* id -> token string (vocab or added), NULL where none */
    int64_t n_ids;
    int32_t bos_id;            /* for --bos yes; -1 where none is known */
    char bl_tab[256][3];
    uint8_t bl_len[256];
    int64_t dropped;
    /* per-document work space */
    arena ar;
    pvec pa, pb;
    spans sp;
    sbuf sb;
    bpe_scratch bx;
    cJSON *json; /* its strings back the vocabulary */
};

const char *fptq_tokenizer_sha256(const fptq_tokenizer *t) { return t->sha256; }
int64_t fptq_tokenizer_n_ids(const fptq_tokenizer *t) { return t->n_ids; }
int64_t fptq_tokenizer_dropped_chars(const fptq_tokenizer *t) { return t->dropped; }

const char *fptq_tokenizer_token(const fptq_tokenizer *t, int32_t id)
{
    return (id >= 0 && id < t->n_ids) ? t->id_tok[id] : NULL;
}

void fptq_ids_free(fptq_ids *ids)
{
    if (!ids)
        return;
    free(ids->v);
    memset(ids, 0, sizeof *ids);
}

/* A piece moved from the scratch builder into the arena. */
static int sbuf_to_piece(fptq_tokenizer *t, piece *out)
{
    sbuf *b = &t->sb;
    char *s = arena_alloc(&t->ar, b->n + 1);
    uint32_t *al = arena_alloc(&t->ar, (b->n + 1) * sizeof *al);
    if (!s || !al)
        return -1;
    memcpy(s, b->s, b->n);
    memcpy(al, b->al, b->n * sizeof *al);
    *out = (piece){s, al, b->n, -1};
    b->n = 0;
    return 0;
}

static int normalize_piece(fptq_tokenizer *t, piece *p)
{
    for (size_t k = 0; k < t->n_norm; k++) {
        const norm_op *op = &t->norm[k];
        t->sb.n = 0;
        int rc = 0;
        switch (op->kind) {
        case N_NFC:
        case N_NFD:
        case N_NFKC:
        case N_NFKD: rc = norm_unicode(p, op->kind, &t->sb); break;
        case N_LOWER: rc = norm_lower(p, &t->sb); break;
        case N_PREPEND:
            if (p->n == 0)
                continue;
            rc = sbuf_put(&t->sb, op->str, op->str_n, p->al[0]) || sbuf_put_al(&t->sb, p->s, p->al, p->n);
            break;
        case N_REPLACE: rc = norm_replace(op, p, &t->sb, &t->sp); break;
        case N_STRIP: rc = norm_strip(op, p, &t->sb); break;
        case N_STRIP_ACCENTS: rc = norm_strip_accents(p, &t->sb); break;
        }
        if (rc || sbuf_to_piece(t, p))
            return -1;
    }
    return 0;
}

static int word_char_at(rx *r, const char *s, size_t n, size_t from)
{
    size_t a, b;
    return rx_search(r, s, n, from, &a, &b) == 1;
}

/* added_vocabulary.rs find_matches over one piece, with one set's trie.
 * Appends the piece's parts to out: added tokens with their id, the rest
 * as they are. */
static int split_added(fptq_tokenizer *t, const trie *tr, const piece *p, pvec *out)
{
    if (tr->n == 0) {
        return p->n ? pvec_push(out, *p) : 0;
    }
    const char *s = p->s;
    size_t n = p->n, start_offset = 0, i = 0;
    while (i < n) {
        size_t len = 0;
        int k = trie_longest(tr, s + i, n - i, &len);
        if (k < 0) {
            i++;
            continue;
        }
        const added_tok *a = &t->added[k];
        size_t start = i, stop = i + len;
        if (a->single_word) {
            /* Rust regex \w$ on s[..start] and ^\w on s[stop..] */
            size_t lb = start;
            while (lb > 0 && ((unsigned char)s[lb - 1] & 0xC0) == 0x80)
                lb--;
            lb = lb > 0 ? lb - 1 : 0; /* the last character before the match */
            int start_space = start == 0 || !word_char_at(t->word_end, s + lb, start - lb, 0);
            int stop_space = stop == n || !word_char_at(t->word_start, s + stop, n - stop, 0);
            if (!start_space || !stop_space) {
                i = stop; /* the automaton moves past a discarded match */
                continue;
            }
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t b = ns - 1;
                while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80)
                    b--;
                int32_t cp;
                u8_dec((const unsigned char *)s + b, ns - b, &cp);
                if (!is_ws(cp))
                    break;
                ns = b;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                int32_t cp;
                size_t l = u8_dec((const unsigned char *)s + stop, n - stop, &cp);
                if (!is_ws(cp))
                    break;
                stop += l;
            }
        }
        if (start_offset < start && pvec_push(out, (piece){s + start_offset, p->al + start_offset, start - start_offset, -1}))
            return -1;
        if (pvec_push(out, (piece){s + start, p->al + start, stop - start, a->id}))
            return -1;
        start_offset = stop;
        i = stop;
    }
    if (start_offset < n && pvec_push(out, (piece){s + start_offset, p->al + start_offset, n - start_offset, -1}))
        return -1;
    return 0;
}

static int pretok_op(fptq_tokenizer *t, const pt_op *op, const piece *p, pvec *out)
{
    switch (op->kind) {
    case PT_BYTELEVEL: {
        piece q = *p;
        if (op->add_prefix_space && !(q.n && q.s[0] == ' ')) {
            t->sb.n = 0;
            if (sbuf_put(&t->sb, " ", 1, q.n ? q.al[0] : 0) || sbuf_put_al(&t->sb, q.s, q.al, q.n) ||
                sbuf_to_piece(t, &q))
                return -1;
        }
        size_t first = out->n;
        if (op->use_regex) {
            int rc = find_regex(op->re, q.s, q.n, &t->sp);
            if (rc)
                return rc;
            if (split_apply(&q, &t->sp, SB_ISOLATED, out))
                return -1;
        } else if (q.n && pvec_push(out, q))
            return -1;
        /* then every byte to its printable character */
        for (size_t k = first; k < out->n; k++) {
            piece *x = &out->v[k];
            t->sb.n = 0;
            for (size_t i = 0; i < x->n;) {
                int32_t cp;
                size_t l = u8_dec((const unsigned char *)x->s + i, x->n - i, &cp);
                for (size_t j = 0; j < l; j++) {
                    unsigned char b = (unsigned char)x->s[i + j];
                    if (sbuf_put(&t->sb, t->bl_tab[b], t->bl_len[b], x->al[i]))
                        return -1;
                }
                i += l;
            }
            if (sbuf_to_piece(t, x))
                return -1;
        }
        return 0;
    }
    case PT_SPLIT: {
        int rc = find_regex(op->re, p->s, p->n, &t->sp);
        if (rc)
            return rc;
        if (op->invert)
            for (size_t i = 0; i < t->sp.n; i++)
                t->sp.v[i].m = !t->sp.v[i].m;
        return split_apply(p, &t->sp, op->behavior, out);
    }
    case PT_CHARSPLIT:
        if (find_chars(op->pred, op->pred_arg, p->s, p->n, &t->sp))
            return -1;
        return split_apply(p, &t->sp, op->behavior, out);
    case PT_METASPACE: {
        t->sb.n = 0;
        for (size_t i = 0; i < p->n; i++) {
            int r = p->s[i] == ' ' ? sbuf_put(&t->sb, op->rep, op->rep_n, p->al[i])
                                   : sbuf_put_al(&t->sb, p->s + i, p->al + i, 1);
            if (r)
                return -1;
        }
        piece q;
        if (sbuf_to_piece(t, &q))
            return -1;
        int starts = q.n >= op->rep_n && memcmp(q.s, op->rep, op->rep_n) == 0;
        if (q.n && !starts && (op->scheme == PS_ALWAYS || (op->scheme == PS_FIRST && q.al[0] == 0))) {
            t->sb.n = 0;
            if (sbuf_put(&t->sb, op->rep, op->rep_n, q.al[0]) || sbuf_put_al(&t->sb, q.s, q.al, q.n) ||
                sbuf_to_piece(t, &q))
                return -1;
        }
        if (!op->split)
            return q.n ? pvec_push(out, q) : 0;
        if (find_chars(pred_eq, op->replacement, q.s, q.n, &t->sp))
            return -1;
        return split_apply(&q, &t->sp, SB_MERGED_NEXT, out);
    }
    }
    return 0;
}

/* ========================================================================= */
/* Encoding one document                                                     */
/* ========================================================================= */

static fptq_status encode_fail_nomem(const char *where)
{
    return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory while tokenizing", where);
}

fptq_status fptq_tokenizer_encode(fptq_tokenizer *t, const char *text, size_t len, fptq_bos_policy bos,
                                  const char *where, fptq_ids *out)
{
    if (!where)
        where = "text";
    size_t bad = u8_validate((const unsigned char *)text, len);
    if (bad != len)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: invalid UTF-8 at byte offset %zu (byte 0x%02X)", where, bad,
                         (unsigned char)text[bad]);
    if (len > DOC_MAX_BYTES)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: a document of %zu bytes is more than fptq encodes at once (%zu); "
                         "split the text into documents (--doc-sep)", where, len, DOC_MAX_BYTES);
    arena_reset(&t->ar);
    pvec *a = &t->pa, *b = &t->pb;
    a->n = b->n = 0;
    const int specials = bos == FPTQ_BOS_AUTO;
    if (bos == FPTQ_BOS_YES) {
        if (t->bos_id < 0)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "--bos yes: %s names no BOS token (no bos_token in tokenizer_config.json, "
                             "no bos_token_id in config.json); use --bos auto or --bos no", t->path);
        if (ids_push(out, t->bos_id))
            return encode_fail_nomem(where);
    }
    /* a Sequence of processors applies them in order, each wrapping the
     * result of the one before: the last one's pre ids come first */
    if (specials)
        for (size_t k = t->n_pp; k-- > 0;)
            for (size_t i = 0; i < t->pp[k].n_pre; i++)
                if (ids_push(out, t->pp[k].pre[i]))
                    return encode_fail_nomem(where);

    if (len > 0) {
        uint32_t *al = arena_alloc(&t->ar, len * sizeof *al);
        if (!al)
            return encode_fail_nomem(where);
        for (size_t i = 0; i < len; i++)
            al[i] = (uint32_t)i;
        piece whole = {text, al, len, -1};
        /* 1. added tokens that match the raw text */
        if (split_added(t, &t->raw_trie, &whole, a))
            return encode_fail_nomem(where);
        /* 2. each other part normalized, then the normalized added tokens */
        for (size_t i = 0; i < a->n; i++) {
            piece p = a->v[i];
            if (p.id >= 0) {
                if (pvec_push(b, p))
                    return encode_fail_nomem(where);
                continue;
            }
            if (normalize_piece(t, &p))
                return encode_fail_nomem(where);
            if (p.n && split_added(t, &t->norm_trie, &p, b))
                return encode_fail_nomem(where);
        }
        /* 3. the pre-tokenizers, one after another over all parts */
        for (size_t k = 0; k < t->n_pt; k++) {
            pvec *src = b, *dst = a; /* b holds the parts so far */
            dst->n = 0;
            for (size_t i = 0; i < src->n; i++) {
                if (src->v[i].id >= 0) {
                    if (pvec_push(dst, src->v[i]))
                        return encode_fail_nomem(where);
                    continue;
                }
                int rc = pretok_op(t, &t->pt[k], &src->v[i], dst);
                if (rc == -2)
                    return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: a pre-tokenizer regex failed to run (PCRE2 match limit?)",
                                     where);
                if (rc)
                    return encode_fail_nomem(where);
            }
            pvec *tmp = a;
            a = b;
            b = tmp;
        }
        /* 4. the model */
        for (size_t i = 0; i < b->n; i++) {
            const piece *p = &b->v[i];
            int rc = p->id >= 0 ? ids_push(out, p->id)
                                : bpe_tokenize(&t->model, &t->bx, p->s, p->n, out, &t->dropped);
            if (rc)
                return encode_fail_nomem(where);
        }
    }
    if (specials)
        for (size_t k = 0; k < t->n_pp; k++)
            for (size_t i = 0; i < t->pp[k].n_post; i++)
                if (ids_push(out, t->pp[k].post[i]))
                    return encode_fail_nomem(where);
    return FPTQ_OK;
}

/* ========================================================================= */
/* Loading tokenizer.json                                                    */
/* ========================================================================= */

#define SUPPORTED_NORMALIZERS "NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip, StripAccents, Sequence"
#define SUPPORTED_PRETOK \
    "ByteLevel, Split, Metaspace, Digits, Punctuation, Whitespace, WhitespaceSplit, BertPreTokenizer, CharDelimiterSplit, Sequence"
#define SUPPORTED_POST "TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence"

/* Rust regex's \w (Unicode): what single_word looks at on each side. */
#define RUST_WORD "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]"

static const cJSON *jfield(const cJSON *o, const char *k)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    return (it && !cJSON_IsNull(it)) ? it : NULL;
}

static fptq_status jbool(const fptq_tokenizer *t, const cJSON *o, const char *jp, const char *k, int dflt, int *out)
{
    const cJSON *it = jfield(o, k);
    if (!it) {
        *out = dflt;
        return FPTQ_OK;
    }
    if (!cJSON_IsBool(it))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s.%s must be true or false", t->path, jp, k);
    *out = cJSON_IsTrue(it);
    return FPTQ_OK;
}

/* A string field; required: absent is an error. */
static fptq_status jstr(const fptq_tokenizer *t, const cJSON *o, const char *jp, const char *k, int required,
                        const char **out)
{
    const cJSON *it = jfield(o, k);
    *out = NULL;
    if (!it) {
        if (required)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s.%s is missing (expected a string)", t->path, jp, k);
        return FPTQ_OK;
    }
    if (!cJSON_IsString(it))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s.%s must be a string", t->path, jp, k);
    *out = it->valuestring;
    return FPTQ_OK;
}

static fptq_status jtype(const fptq_tokenizer *t, const cJSON *o, const char *jp, const char **out)
{
    if (!cJSON_IsObject(o))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s must be an object", t->path, jp);
    return jstr(t, o, jp, "type", 1, out);
}

static fptq_status jbehavior(const fptq_tokenizer *t, const cJSON *o, const char *jp, split_behavior dflt,
                             split_behavior *out)
{
    const char *b;
    FPTQ_TRY(jstr(t, o, jp, "behavior", 0, &b));
    if (!b) {
        *out = dflt;
        return FPTQ_OK;
    }
    static const struct {
        const char *name;
        split_behavior b;
    } B[] = {{"Removed", SB_REMOVED},           {"Isolated", SB_ISOLATED},         {"MergedWithPrevious", SB_MERGED_PREV},
             {"MergedWithNext", SB_MERGED_NEXT}, {"Contiguous", SB_CONTIGUOUS}};
    for (size_t i = 0; i < sizeof B / sizeof B[0]; i++)
        if (strcmp(b, B[i].name) == 0) {
            *out = B[i].b;
            return FPTQ_OK;
        }
    return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s.behavior \"%s\" is not one of Removed, Isolated, MergedWithPrevious, "
                     "MergedWithNext, Contiguous", t->path, jp, b);
}

/* {"String": s} or {"Regex": r} */
static fptq_status jpattern(const fptq_tokenizer *t, const cJSON *o, const char *jp, rx **out)
{
    const cJSON *p = jfield(o, "pattern");
    char where[4700];
    snprintf(where, sizeof where, "%s: %s.pattern", t->path, jp);
    if (!p || !cJSON_IsObject(p))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s is missing (expected {\"String\": ...} or {\"Regex\": ...})", where);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "String"), *r = cJSON_GetObjectItemCaseSensitive(p, "Regex");
    if ((s && cJSON_IsString(s)) == (r && cJSON_IsString(r)))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s must hold one string, String or Regex", where);
    const char *v = s ? s->valuestring : r->valuestring;
    if (u8_validate((const unsigned char *)v, strlen(v)) != strlen(v))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s is not valid UTF-8", where);
    return rx_compile(v, strlen(v), s != NULL, where, out);
}

static char *xstrdup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static fptq_status push_norm(fptq_tokenizer *t, norm_op op)
{
    norm_op *v = realloc(t->norm, (t->n_norm + 1) * sizeof *v);
    if (!v)
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory", t->path);
    t->norm = v;
    t->norm[t->n_norm++] = op;
    return FPTQ_OK;
}

static fptq_status push_pt(fptq_tokenizer *t, pt_op op)
{
    pt_op *v = realloc(t->pt, (t->n_pt + 1) * sizeof *v);
    if (!v) {
        rx_free(op.re);
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory", t->path);
    }
    t->pt = v;
    t->pt[t->n_pt++] = op;
    return FPTQ_OK;
}

static fptq_status load_normalizer(fptq_tokenizer *t, const cJSON *o, const char *jp, int depth)
{
    const char *type;
    FPTQ_TRY(jtype(t, o, jp, &type));
    if (depth > 16)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s: Sequences nested more than 16 deep", t->path, jp);
    norm_op op = {0};
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *arr = jfield(o, "normalizers");
        if (!cJSON_IsArray(arr))
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s.normalizers must be an array", t->path, jp);
        int i = 0;
        for (const cJSON *c = arr->child; c; c = c->next, i++) {
            char sub[400];
            snprintf(sub, sizeof sub, "%s.normalizers[%d]", jp, i);
            FPTQ_TRY(load_normalizer(t, c, sub, depth + 1));
        }
        return FPTQ_OK;
    }
    if (strcmp(type, "NFC") == 0)
        op.kind = N_NFC;
    else if (strcmp(type, "NFD") == 0)
        op.kind = N_NFD;
    else if (strcmp(type, "NFKC") == 0)
        op.kind = N_NFKC;
    else if (strcmp(type, "NFKD") == 0)
        op.kind = N_NFKD;
    else if (strcmp(type, "Lowercase") == 0)
        op.kind = N_LOWER;
    else if (strcmp(type, "StripAccents") == 0)
        op.kind = N_STRIP_ACCENTS;
    else if (strcmp(type, "Strip") == 0) {
        op.kind = N_STRIP;
        FPTQ_TRY(jbool(t, o, jp, "strip_left", 1, &op.left));
        FPTQ_TRY(jbool(t, o, jp, "strip_right", 1, &op.right));
    } else if (strcmp(type, "Prepend") == 0) {
        const char *s;
        op.kind = N_PREPEND;
        FPTQ_TRY(jstr(t, o, jp, "prepend", 1, &s));
        op.str_n = strlen(s);
        if (!(op.str = xstrdup_n(s, op.str_n)))
            return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory", t->path);
    } else if (strcmp(type, "Replace") == 0) {
        const char *s;
        op.kind = N_REPLACE;
        FPTQ_TRY(jstr(t, o, jp, "content", 1, &s));
        op.str_n = strlen(s);
        if (!(op.str = xstrdup_n(s, op.str_n)))
            return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory", t->path);
        fptq_status st = jpattern(t, o, jp, &op.re);
        if (st != FPTQ_OK) {
            free(op.str);
            return st;
        }
    } else
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: %s: normalizer \"%s\" is not supported by fptq (supported: %s)",
                         t->path, jp, type, SUPPORTED_NORMALIZERS);
    fptq_status st = push_norm(t, op);
    if (st != FPTQ_OK) {
        free(op.str);
        rx_free(op.re);
    }
    return st;
}

static fptq_status load_pretok(fptq_tokenizer *t, const cJSON *o, const char *jp, int depth)
{
    const char *type;
    FPTQ_TRY(jtype(t, o, jp, &type));
    if (depth > 16)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s: Sequences nested more than 16 deep", t->path, jp);
    pt_op op = {0};
    char where[4700];
    snprintf(where, sizeof where, "%s: %s", t->path, jp);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *arr = jfield(o, "pretokenizers");
        if (!cJSON_IsArray(arr))
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s.pretokenizers must be an array", t->path, jp);
        int i = 0;
        for (const cJSON *c = arr->child; c; c = c->next, i++) {
            char sub[400];
            snprintf(sub, sizeof sub, "%s.pretokenizers[%d]", jp, i);
            FPTQ_TRY(load_pretok(t, c, sub, depth + 1));
        }
        return FPTQ_OK;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        op.kind = PT_BYTELEVEL;
        FPTQ_TRY(jbool(t, o, jp, "add_prefix_space", 1, &op.add_prefix_space));
        FPTQ_TRY(jbool(t, o, jp, "use_regex", 1, &op.use_regex));
        if (op.use_regex) {
            static const char re[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
            FPTQ_TRY(rx_compile(re, strlen(re), 0, where, &op.re));
        }
    } else if (strcmp(type, "Split") == 0) {
        op.kind = PT_SPLIT;
        FPTQ_TRY(jbool(t, o, jp, "invert", 0, &op.invert));
        FPTQ_TRY(jbehavior(t, o, jp, SB_ISOLATED, &op.behavior));
        if (!jfield(o, "behavior"))
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s.behavior is missing", t->path, jp);
        FPTQ_TRY(jpattern(t, o, jp, &op.re));
    } else if (strcmp(type, "Metaspace") == 0) {
        const char *rep, *scheme;
        int aps = -1, split = 1;
        op.kind = PT_METASPACE;
        FPTQ_TRY(jstr(t, o, jp, "replacement", 1, &rep));
        size_t rn = strlen(rep);
        int32_t cp = 0;
        if (rn == 0 || u8_validate((const unsigned char *)rep, rn) != rn || u8_dec((const unsigned char *)rep, rn, &cp) != rn)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s.replacement must be one character", t->path, jp);
        op.replacement = cp;
        memcpy(op.rep, rep, rn);
        op.rep_n = rn;
        FPTQ_TRY(jstr(t, o, jp, "prepend_scheme", 0, &scheme));
        if (jfield(o, "add_prefix_space"))
            FPTQ_TRY(jbool(t, o, jp, "add_prefix_space", 1, &aps));
        FPTQ_TRY(jbool(t, o, jp, "split", 1, &split));
        op.split = split;
        op.scheme = PS_ALWAYS;
        if (scheme) {
            if (strcmp(scheme, "always") == 0)
                op.scheme = PS_ALWAYS;
            else if (strcmp(scheme, "first") == 0)
                op.scheme = PS_FIRST;
            else if (strcmp(scheme, "never") == 0)
                op.scheme = PS_NEVER;
            else
                return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s.prepend_scheme \"%s\" is not always, first or never", t->path,
                                 jp, scheme);
        }
        if (aps == 0) {
            if (op.scheme != PS_NEVER && scheme)
                return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s: add_prefix_space false does not match prepend_scheme \"%s\"",
                                 t->path, jp, scheme);
            op.scheme = PS_NEVER;
        }
    } else if (strcmp(type, "Digits") == 0) {
        int individual;
        FPTQ_TRY(jbool(t, o, jp, "individual_digits", 0, &individual));
        op.kind = PT_CHARSPLIT;
        op.pred = pred_num;
        op.behavior = individual ? SB_ISOLATED : SB_CONTIGUOUS;
    } else if (strcmp(type, "Punctuation") == 0) {
        op.kind = PT_CHARSPLIT;
        op.pred = pred_punc;
        FPTQ_TRY(jbehavior(t, o, jp, SB_ISOLATED, &op.behavior));
    } else if (strcmp(type, "WhitespaceSplit") == 0) {
        op.kind = PT_CHARSPLIT;
        op.pred = pred_ws;
        op.behavior = SB_REMOVED;
    } else if (strcmp(type, "BertPreTokenizer") == 0) {
        op.kind = PT_CHARSPLIT;
        op.pred = pred_ws;
        op.behavior = SB_REMOVED;
        FPTQ_TRY(push_pt(t, op));
        op.pred = pred_punc;
        op.behavior = SB_ISOLATED;
    } else if (strcmp(type, "Whitespace") == 0) {
        /* pre_tokenizers/whitespace.rs: Rust regex \w+|[^\w\s]+, inverted, removed */
        static const char re[] = RUST_WORD "+|[^\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}\\p{White_Space}]+";
        op.kind = PT_SPLIT;
        op.invert = 1;
        op.behavior = SB_REMOVED;
        FPTQ_TRY(rx_compile(re, strlen(re), 0, where, &op.re));
    } else if (strcmp(type, "CharDelimiterSplit") == 0) {
        const char *d;
        FPTQ_TRY(jstr(t, o, jp, "delimiter", 1, &d));
        size_t dn = strlen(d);
        int32_t cp = 0;
        if (dn == 0 || u8_validate((const unsigned char *)d, dn) != dn || u8_dec((const unsigned char *)d, dn, &cp) != dn)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s.delimiter must be one character", t->path, jp);
        op.kind = PT_CHARSPLIT;
        op.pred = pred_eq;
        op.pred_arg = cp;
        op.behavior = SB_REMOVED;
    } else
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: %s: pre-tokenizer \"%s\" is not supported by fptq (supported: %s)",
                         t->path, jp, type, SUPPORTED_PRETOK);
    return push_pt(t, op);
}

static fptq_status push_pp(fptq_tokenizer *t, pp_step s)
{
    pp_step *v = realloc(t->pp, (t->n_pp + 1) * sizeof *v);
    if (!v) {
        free(s.pre);
        free(s.post);
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory", t->path);
    }
    t->pp = v;
    t->pp[t->n_pp++] = s;
    return FPTQ_OK;
}

static fptq_status id_check(const fptq_tokenizer *t, const char *jp, double v, int32_t *out)
{
    if (!(v >= 0) || v >= TOK_MAX_IDS || v != (double)(int64_t)v)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s: id %.17g is not an integer in [0, %d)", t->path, jp, v, TOK_MAX_IDS);
    *out = (int32_t)v;
    return FPTQ_OK;
}

/* ["[CLS]", 101] */
static fptq_status jtok_pair(const fptq_tokenizer *t, const cJSON *o, const char *jp, const char *k, int32_t *id)
{
    const cJSON *a = jfield(o, k);
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != 2 || !cJSON_IsString(a->child) || !cJSON_IsNumber(a->child->next))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s.%s must be [token, id]", t->path, jp, k);
    char sub[400];
    snprintf(sub, sizeof sub, "%s.%s", jp, k);
    return id_check(t, sub, a->child->next->valuedouble, id);
}

static fptq_status load_post(fptq_tokenizer *t, const cJSON *o, const char *jp, int depth)
{
    const char *type;
    FPTQ_TRY(jtype(t, o, jp, &type));
    if (depth > 16)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s: Sequences nested more than 16 deep", t->path, jp);
    pp_step s = {0};
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *arr = jfield(o, "processors");
        if (!cJSON_IsArray(arr))
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s.processors must be an array", t->path, jp);
        int i = 0;
        for (const cJSON *c = arr->child; c; c = c->next, i++) {
            char sub[400];
            snprintf(sub, sizeof sub, "%s.processors[%d]", jp, i);
            FPTQ_TRY(load_post(t, c, sub, depth + 1));
        }
        return FPTQ_OK;
    }
    if (strcmp(type, "ByteLevel") == 0)
        return FPTQ_OK; /* offsets only */
    if (strcmp(type, "RobertaProcessing") == 0 || strcmp(type, "BertProcessing") == 0) {
        int32_t cls = 0, sep = 0;
        FPTQ_TRY(jtok_pair(t, o, jp, "cls", &cls));
        FPTQ_TRY(jtok_pair(t, o, jp, "sep", &sep));
        s.pre = malloc(sizeof *s.pre);
        s.post = malloc(sizeof *s.post);
        if (!s.pre || !s.post) {
            free(s.pre);
            free(s.post);
            return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory", t->path);
        }
        s.pre[0] = cls;
        s.post[0] = sep;
        s.n_pre = s.n_post = 1;
        return push_pp(t, s);
    }
    if (strcmp(type, "TemplateProcessing") != 0)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: %s: post-processor \"%s\" is not supported by fptq (supported: %s)",
                         t->path, jp, type, SUPPORTED_POST);
    const cJSON *single = jfield(o, "single"), *specials = jfield(o, "special_tokens");
    if (!cJSON_IsArray(single))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s.single must be an array", t->path, jp);
    int n_items = cJSON_GetArraySize(single), seen_a = 0, i = 0;
    fptq_status st = FPTQ_OK;
    /* upper bounds: every special token may hold several ids */
    size_t cap = 0;
    for (const cJSON *c = single->child; c; c = c->next) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(c, "SpecialToken");
        const cJSON *name = sp ? cJSON_GetObjectItemCaseSensitive(sp, "id") : NULL;
        const cJSON *def = (name && cJSON_IsString(name) && specials) ? cJSON_GetObjectItemCaseSensitive(specials, name->valuestring) : NULL;
        const cJSON *ids = def ? cJSON_GetObjectItemCaseSensitive(def, "ids") : NULL;
        cap += ids && cJSON_IsArray(ids) ? (size_t)cJSON_GetArraySize(ids) : 1;
    }
    s.pre = malloc((cap + 1) * sizeof *s.pre);
    s.post = malloc((cap + 1) * sizeof *s.post);
    if (!s.pre || !s.post) {
        st = FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory", t->path);
        goto fail;
    }
    (void)n_items;
    for (const cJSON *c = single->child; c; c = c->next, i++) {
        char sub[400];
        snprintf(sub, sizeof sub, "%s.single[%d]", jp, i);
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(c, "Sequence");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(c, "SpecialToken");
        if (seq) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(seq, "id");
            if (!cJSON_IsString(id) || strcmp(id->valuestring, "A") != 0 || seen_a) {
                st = FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: %s: a single template holds one sequence, $A", t->path, sub);
                goto fail;
            }
            seen_a = 1;
            continue;
        }
        const cJSON *name = sp ? cJSON_GetObjectItemCaseSensitive(sp, "id") : NULL;
        if (!name || !cJSON_IsString(name)) {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s must be {\"SpecialToken\": {\"id\": ...}} or {\"Sequence\": ...}",
                           t->path, sub);
            goto fail;
        }
        const cJSON *def = specials ? cJSON_GetObjectItemCaseSensitive(specials, name->valuestring) : NULL;
        const cJSON *ids = def ? cJSON_GetObjectItemCaseSensitive(def, "ids") : NULL;
        if (!cJSON_IsArray(ids)) {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s: special token \"%s\" is not in %s.special_tokens (with its ids)",
                           t->path, sub, name->valuestring, jp);
            goto fail;
        }
        for (const cJSON *x = ids->child; x; x = x->next) {
            int32_t id = 0;
            if (!cJSON_IsNumber(x)) {
                st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s.special_tokens.%s.ids must hold numbers", t->path, jp,
                               name->valuestring);
                goto fail;
            }
            if ((st = id_check(t, sub, x->valuedouble, &id)) != FPTQ_OK)
                goto fail;
            if (seen_a)
                s.post[s.n_post++] = id;
            else
                s.pre[s.n_pre++] = id;
        }
    }
    if (!seen_a) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s.single has no $A (the sequence itself)", t->path, jp);
        goto fail;
    }
    return push_pp(t, s);
fail:
    free(s.pre);
    free(s.post);
    return st;
}

static fptq_status load_model(fptq_tokenizer *t, const cJSON *o)
{
    bpe *m = &t->model;
    const char *type;
    if (!cJSON_IsObject(o))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: model must be an object", t->path);
    FPTQ_TRY(jstr(t, o, "model", "type", 0, &type));
    if (type && strcmp(type, "BPE") != 0)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: model.type \"%s\" is not supported by fptq (only BPE: "
                         "byte-level and SentencePiece-style BPE tokenizers)", t->path, type);
    const cJSON *vocab = jfield(o, "vocab"), *merges = jfield(o, "merges"), *dropout = jfield(o, "dropout");
    if (!type && !merges)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: model has no type and no merges: not a BPE model", t->path);
    if (dropout && (!cJSON_IsNumber(dropout) || dropout->valuedouble != 0.0))
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: model.dropout is set: BPE dropout tokenizes at random; "
                         "fptq needs the same tokens every time (set it to null)", t->path);
    if (!cJSON_IsObject(vocab))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: model.vocab must be an object of token: id", t->path);
    if (!cJSON_IsArray(merges))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: model.merges must be an array", t->path);
    FPTQ_TRY(jbool(t, o, "model", "byte_fallback", 0, &m->byte_fallback));
    FPTQ_TRY(jbool(t, o, "model", "fuse_unk", 0, &m->fuse_unk));
    FPTQ_TRY(jbool(t, o, "model", "ignore_merges", 0, &m->ignore_merges));
    const char *pre, *suf, *unk;
    FPTQ_TRY(jstr(t, o, "model", "continuing_subword_prefix", 0, &pre));
    FPTQ_TRY(jstr(t, o, "model", "end_of_word_suffix", 0, &suf));
    FPTQ_TRY(jstr(t, o, "model", "unk_token", 0, &unk));
    /* "" is no prefix (transformers writes "" for none) */
    if (pre && *pre && !(m->prefix = xstrdup_n(pre, m->prefix_n = strlen(pre))))
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory", t->path);
    if (suf && *suf && !(m->suffix = xstrdup_n(suf, m->suffix_n = strlen(suf))))
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory", t->path);

    size_t nv = (size_t)cJSON_GetArraySize(vocab);
    if (strmap_init(&m->vocab, nv + 1))
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory for a vocabulary of %zu tokens", t->path, nv);
    int64_t max_id = -1;
    for (const cJSON *c = vocab->child; c; c = c->next) {
        int32_t id = 0;
        char jp[160];
        snprintf(jp, sizeof jp, "model.vocab[\"%.64s\"]", c->string ? c->string : "");
        if (!c->string || !cJSON_IsNumber(c))
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s must be a number", t->path, jp);
        FPTQ_TRY(id_check(t, jp, c->valuedouble, &id));
        size_t kn = strlen(c->string);
        if (u8_validate((const unsigned char *)c->string, kn) != kn)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s: the token is not valid UTF-8", t->path, jp);
        if (strmap_put(&m->vocab, c->string, kn, id) >= 0)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: token \"%.64s\" appears twice in model.vocab", t->path, c->string);
        if (id > max_id)
            max_id = id;
    }
    m->vocab_count = m->vocab.n;
    t->n_ids = max_id + 1;
    if (fptq_calloc((size_t)t->n_ids + 1, sizeof *t->id_tok, "tokenizer id table", &t->id_tok) != FPTQ_OK)
        return fptq_last_status();
    for (size_t i = 0; i < m->vocab.cap; i++)
        if (m->vocab.key[i]) {
            int32_t id = m->vocab.val[i];
            if (t->id_tok[id])
                return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: id %d is given to two tokens of model.vocab: \"%.64s\" and \"%.64s\"",
                                 t->path, id, t->id_tok[id], m->vocab.key[i]);
            t->id_tok[id] = (char *)m->vocab.key[i];
        }
    if (unk) {
        m->unk_id = strmap_get(&m->vocab, unk, strlen(unk));
        if (m->unk_id < 0)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: model.unk_token \"%.64s\" is not in model.vocab", t->path, unk);
    } else
        m->unk_id = -1;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        m->byte_id[b] = strmap_get(&m->vocab, name, 6);
    }

    size_t nm = (size_t)cJSON_GetArraySize(merges);
    if (pairmap_init(&m->merges, nm + 1))
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory for %zu merges", t->path, nm);
    char *buf = NULL;
    size_t buf_cap = 0;
    fptq_status st = FPTQ_OK;
    uint32_t rank = 0;
    const int legacy = merges->child && cJSON_IsString(merges->child);
    for (const cJSON *c = merges->child; c; c = c->next, rank++) {
        const char *a, *b;
        size_t an, bn;
        if (cJSON_IsString(c) != legacy) {
            /* `tokenizers` reads one layout or the other (an untagged enum) */
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: model.merges[%u] is %s while model.merges[0] is %s: one layout for all",
                           t->path, rank, legacy ? "not a string" : "a string", legacy ? "\"a b\"" : "[a, b]");
            break;
        }
        if (cJSON_IsString(c)) {
            /* the legacy layout, "a b": exactly one space */
            const char *sp = strchr(c->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: model.merges[%u] \"%.64s\" is not two tokens separated by one space",
                               t->path, rank, c->valuestring);
                break;
            }
            a = c->valuestring;
            an = (size_t)(sp - a);
            b = sp + 1;
            bn = strlen(b);
        } else if (cJSON_IsArray(c) && cJSON_GetArraySize(c) == 2 && cJSON_IsString(c->child) &&
                   cJSON_IsString(c->child->next)) {
            a = c->child->valuestring;
            an = strlen(a);
            b = c->child->next->valuestring;
            bn = strlen(b);
        } else {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: model.merges[%u] must be \"a b\" or [a, b]", t->path, rank);
            break;
        }
        int32_t ia = strmap_get(&m->vocab, a, an), ib = strmap_get(&m->vocab, b, bn);
        if (ia < 0 || ib < 0) {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: model.merges[%u] names token \"%.*s\", which is not in model.vocab", t->path,
                           rank, (int)(ia < 0 ? (an > 64 ? 64 : an) : (bn > 64 ? 64 : bn)), ia < 0 ? a : b);
            break;
        }
        if (m->prefix_n && (bn < m->prefix_n || memcmp(b, m->prefix, m->prefix_n) != 0)) {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: model.merges[%u]: \"%.64s\" does not start with the continuing_subword_prefix",
                           t->path, rank, b);
            break;
        }
        size_t need = an + bn;
        if (need > buf_cap) {
            char *nb = realloc(buf, need * 2 + 16);
            if (!nb) {
                st = FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory", t->path);
                break;
            }
            buf = nb;
            buf_cap = need * 2 + 16;
        }
        memcpy(buf, a, an);
        memcpy(buf + an, b + m->prefix_n, bn - m->prefix_n);
        int32_t inew = strmap_get(&m->vocab, buf, an + bn - m->prefix_n);
        if (inew < 0) {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: model.merges[%u] makes \"%.*s\", which is not in model.vocab", t->path, rank,
                           (int)((an + bn - m->prefix_n) > 64 ? 64 : an + bn - m->prefix_n), buf);
            break;
        }
        pairmap_put(&m->merges, ia, ib, rank, inew);
    }
    free(buf);
    if (st != FPTQ_OK)
        return st;
    m->cache = calloc(BPE_CACHE_SLOTS, sizeof *m->cache);
    if (!m->cache)
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory for the word cache", t->path);
    return FPTQ_OK;
}

static int32_t token_to_id(const fptq_tokenizer *t, const char *s, size_t n)
{
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].content_n == n && memcmp(t->added[i].content, s, n) == 0)
            return t->added[i].id;
    return strmap_get(&t->model.vocab, s, n);
}

/* added_vocabulary.rs add_tokens: ids from the model's vocabulary where the
 * content is in it, else new ids from the vocabulary's size on; the file's
 * id must agree (`tokenizers` only warns, and encodes with its own). */
static fptq_status load_added(fptq_tokenizer *t, const cJSON *arr)
{
    if (!arr)
        return FPTQ_OK;
    if (!cJSON_IsArray(arr))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: added_tokens must be an array", t->path);
    size_t n = (size_t)cJSON_GetArraySize(arr);
    if (fptq_calloc(n + 1, sizeof *t->added, "added tokens", &t->added) != FPTQ_OK)
        return fptq_last_status();
    int64_t next_id = (int64_t)t->model.vocab_count;
    int i = 0;
    for (const cJSON *c = arr->child; c; c = c->next, i++) {
        char jp[64];
        snprintf(jp, sizeof jp, "added_tokens[%d]", i);
        const char *content;
        added_tok a = {0};
        if (!cJSON_IsObject(c))
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s must be an object", t->path, jp);
        FPTQ_TRY(jstr(t, c, jp, "content", 1, &content));
        FPTQ_TRY(jbool(t, c, jp, "single_word", 0, &a.single_word));
        FPTQ_TRY(jbool(t, c, jp, "lstrip", 0, &a.lstrip));
        FPTQ_TRY(jbool(t, c, jp, "rstrip", 0, &a.rstrip));
        FPTQ_TRY(jbool(t, c, jp, "special", 0, &a.special));
        FPTQ_TRY(jbool(t, c, jp, "normalized", !a.special, &a.normalized));
        const cJSON *idj = jfield(c, "id");
        int32_t file_id = 0;
        if (!cJSON_IsNumber(idj))
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s.id must be a number", t->path, jp);
        FPTQ_TRY(id_check(t, jp, idj->valuedouble, &file_id));
        size_t cn = strlen(content);
        if (cn == 0)
            continue; /* `tokenizers` ignores empty added tokens */
        if (u8_validate((const unsigned char *)content, cn) != cn)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s.content is not valid UTF-8", t->path, jp);
        for (size_t k = 0; k < t->n_added; k++)
            if (t->added[k].content_n == cn && memcmp(t->added[k].content, content, cn) == 0)
                return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s: \"%.64s\" is already added_tokens' (id %d)", t->path, jp,
                                 content, t->added[k].id);
        int32_t id = strmap_get(&t->model.vocab, content, cn);
        if (id < 0) {
            if (next_id >= TOK_MAX_IDS)
                return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s: too many ids", t->path, jp);
            id = (int32_t)next_id++;
        }
        if (id != file_id)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s \"%.64s\" has id %d in the file, but `tokenizers` gives it id %d "
                             "(%s); the file is inconsistent", t->path, jp, content, file_id, id,
                             strmap_get(&t->model.vocab, content, cn) >= 0 ? "its id in model.vocab"
                                                                           : "the next id after model.vocab");
        a.content = xstrdup_n(content, cn);
        a.content_n = cn;
        a.id = id;
        if (!a.content)
            return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory", t->path);
        t->added[t->n_added++] = a;
        if (id >= t->n_ids) {
            char **v = realloc(t->id_tok, ((size_t)id + 2) * sizeof *v);
            if (!v)
                return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory", t->path);
            for (int64_t k = t->n_ids; k <= id + 1; k++)
                v[k] = NULL;
            t->id_tok = v;
            t->n_ids = (int64_t)id + 1;
        }
        if (!t->id_tok[id])
            t->id_tok[id] = t->added[t->n_added - 1].content;
    }
    /* the patterns, normalized where asked, into their tries */
    int need_word = 0;
    for (size_t k = 0; k < t->n_added; k++) {
        added_tok *a = &t->added[k];
        need_word |= a->single_word;
        const char *pat = a->content;
        size_t pn = a->content_n;
        if (a->normalized && t->n_norm) {
            uint32_t *al = calloc(pn, sizeof *al);
            if (!al)
                return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory", t->path);
            piece p = {a->content, al, pn, -1};
            int rc = normalize_piece(t, &p);
            free(al);
            if (rc)
                return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory normalizing added tokens", t->path);
            pat = p.s;
            pn = p.n;
        }
        if (!(a->pattern = xstrdup_n(pat, pn)))
            return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory", t->path);
        a->pattern_n = pn;
        arena_reset(&t->ar);
        if (pn && trie_insert(a->normalized ? &t->norm_trie : &t->raw_trie, a->pattern, pn, (int32_t)k))
            return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: out of memory", t->path);
    }
    if (need_word) {
        static const char ws[] = "\\A" RUST_WORD, we[] = RUST_WORD "\\z";
        FPTQ_TRY(rx_compile(ws, strlen(ws), 0, t->path, &t->word_start));
        FPTQ_TRY(rx_compile(we, strlen(we), 0, t->path, &t->word_end));
    }
    return FPTQ_OK;
}

/* The BOS token for --bos yes: tokenizer_config.json's bos_token (a string
 * or {"content": ...}), else config.json's bos_token_id. */
static fptq_status load_bos(fptq_tokenizer *t, const char *dir)
{
    char path[4200];
    t->bos_id = -1;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    char *buf = NULL;
    int64_t n;
    cJSON *root = NULL;
    FILE *probe = fopen(path, "rb");
    if (probe) {
        fclose(probe);
        FPTQ_TRY(fptq_read_file(path, "tokenizer_config.json", FPTQ_JSON_MAX_BYTES, 0, &buf, &n));
        root = cJSON_ParseWithLength(buf, (size_t)n);
        free(buf);
        if (!root)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: not valid JSON", path);
        if (json_check_unique_keys(root, path) != FPTQ_OK) {
            cJSON_Delete(root);
            return fptq_last_status();
        }
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(root, "bos_token");
        if (b && cJSON_IsObject(b))
            b = cJSON_GetObjectItemCaseSensitive(b, "content");
        if (b && cJSON_IsString(b)) {
            int32_t id = token_to_id(t, b->valuestring, strlen(b->valuestring));
            if (id < 0) {
                cJSON_Delete(root);
                return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: bos_token \"%.64s\" is not a token of %s/tokenizer.json", path,
                                 b->valuestring, dir);
            }
            t->bos_id = id;
        }
        cJSON_Delete(root);
        if (t->bos_id >= 0)
            return FPTQ_OK;
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    probe = fopen(path, "rb");
    if (!probe)
        return FPTQ_OK;
    fclose(probe);
    FPTQ_TRY(fptq_read_file(path, "config", FPTQ_JSON_MAX_BYTES, 0, &buf, &n));
    root = cJSON_ParseWithLength(buf, (size_t)n);
    free(buf);
    if (!root)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: not valid JSON", path);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(root, "bos_token_id");
    fptq_status st = FPTQ_OK;
    if (b && cJSON_IsNumber(b)) {
        if (!(b->valuedouble >= 0 && b->valuedouble < (double)t->n_ids && b->valuedouble == (double)(int64_t)b->valuedouble))
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: bos_token_id %.17g is not an id of %s/tokenizer.json (0..%lld)", path,
                           b->valuedouble, dir, (long long)t->n_ids - 1);
        else
            t->bos_id = (int32_t)b->valuedouble;
    }
    cJSON_Delete(root);
    return st;
}

/* Everything but the files around tokenizer.json: the JSON itself. */
static fptq_status tokenizer_from_json(const char *name, const char *buf, size_t n, int64_t model_vocab_size,
                                       fptq_tokenizer **out)
{
    *out = NULL;
    fptq_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "out of memory for a tokenizer");
    snprintf(t->path, sizeof t->path, "%s", name);
    byte_level_table(t->bl_tab, t->bl_len);
    cJSON *root = NULL;
    fptq_status st;
    {
        sha256_ctx c;
        uint8_t d[32];
        sha256_init(&c);
        sha256_update(&c, buf, n);
        sha256_final(&c, d);
        sha256_hex(d, t->sha256);
    }
    if (n == 0) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: tokenizer.json is empty", t->path);
        goto fail;
    }
    if (memchr(buf, '\0', n)) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: contains a NUL byte at offset %lld (expected JSON text)", t->path,
                       (long long)((const char *)memchr(buf, '\0', n) - buf));
        goto fail;
    }
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(buf, n, &end, 0);
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        long off = (e && e >= buf && e <= buf + n) ? (long)(e - buf) : -1;
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: not valid JSON (at byte %ld of %lld%s)", t->path, off, (long long)n,
                       off >= (long)n - 1 ? ": truncated?" : "");
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: expected a JSON object", t->path);
        goto fail;
    }
    /* a key given twice is read one way by serde, another by a reader that
     * keeps the first: refused, by name */
    FPTQ_TRY_GOTO(json_check_unique_keys(root, t->path), st, fail);
    {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "version");
        if (v && (!cJSON_IsString(v) || strcmp(v->valuestring, "1.0") != 0)) {
            st = FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: version %s is not 1.0 (the only tokenizer.json version)", t->path,
                           cJSON_IsString(v) ? v->valuestring : "(not a string)");
            goto fail;
        }
        if (jfield(root, "truncation")) {
            st = FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: truncation is set: `tokenizers` would cut every document to its "
                           "max_length; fptq tokenizes whole documents (set \"truncation\": null)", t->path);
            goto fail;
        }
        if (jfield(root, "padding")) {
            st = FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: padding is set: `tokenizers` would pad every document; "
                           "set \"padding\": null", t->path);
            goto fail;
        }
        const cJSON *model = jfield(root, "model");
        if (!model) {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: no model", t->path);
            goto fail;
        }
        FPTQ_TRY_GOTO(load_model(t, model), st, fail);
        const cJSON *norm = jfield(root, "normalizer");
        if (norm)
            FPTQ_TRY_GOTO(load_normalizer(t, norm, "normalizer", 0), st, fail);
        const cJSON *pt = jfield(root, "pre_tokenizer");
        if (pt)
            FPTQ_TRY_GOTO(load_pretok(t, pt, "pre_tokenizer", 0), st, fail);
        const cJSON *pp = jfield(root, "post_processor");
        if (pp)
            FPTQ_TRY_GOTO(load_post(t, pp, "post_processor", 0), st, fail);
        FPTQ_TRY_GOTO(load_added(t, jfield(root, "added_tokens")), st, fail);
        for (size_t k = 0; k < t->n_pp; k++)
            for (size_t i = 0; i < t->pp[k].n_pre + t->pp[k].n_post; i++) {
                int32_t id = i < t->pp[k].n_pre ? t->pp[k].pre[i] : t->pp[k].post[i - t->pp[k].n_pre];
                if (id >= t->n_ids || !t->id_tok[id]) {
                    st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: post_processor adds id %d, which is no token of the file",
                                   t->path, id);
                    goto fail;
                }
            }
    }
    if (model_vocab_size > 0 && t->n_ids > model_vocab_size) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: the tokenizer has ids up to %lld (\"%.64s\"), the model's vocab_size is %lld: "
                       "not this model's tokenizer", t->path, (long long)t->n_ids - 1,
                       t->id_tok[t->n_ids - 1] ? t->id_tok[t->n_ids - 1] : "?", (long long)model_vocab_size);
        goto fail;
    }
    /* cJSON's strings back the vocabulary and the id table: the tree lives
     * as long as the tokenizer */
    t->json = root;
    t->bos_id = -1;
    *out = t;
    return FPTQ_OK;
fail:
    t->json = root;
    fptq_tokenizer_free(t);
    return st;
}

fptq_status fptq_tokenizer_load_buffer(const char *name, const char *json, size_t n, int64_t model_vocab_size,
                                       fptq_tokenizer **out)
{
    return tokenizer_from_json(name, json, n, model_vocab_size, out);
}

fptq_status fptq_tokenizer_load(const char *model_dir, int64_t model_vocab_size, fptq_tokenizer **out)
{
    *out = NULL;
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    char *buf = NULL;
    int64_t n = 0;
    FPTQ_TRY(fptq_read_file(path, "tokenizer.json", FPTQ_JSON_MAX_BYTES, 0, &buf, &n));
    fptq_tokenizer *t = NULL;
    fptq_status st = tokenizer_from_json(path, buf, (size_t)n, model_vocab_size, &t);
    free(buf);
    if (st == FPTQ_OK && (st = load_bos(t, model_dir)) != FPTQ_OK) {
        fptq_tokenizer_free(t);
        t = NULL;
    }
    *out = t;
    return st;
}


void fptq_tokenizer_free(fptq_tokenizer *t)
{
    if (!t)
        return;
    bpe *m = &t->model;
    strmap_free(&m->vocab);
    pairmap_free(&m->merges);
    free(m->prefix);
    free(m->suffix);
    if (m->cache) {
        for (size_t i = 0; i < BPE_CACHE_SLOTS; i++) {
            free(m->cache[i].word);
            free(m->cache[i].ids);
        }
        free(m->cache);
    }
    for (size_t i = 0; i < t->n_norm; i++) {
        free(t->norm[i].str);
        rx_free(t->norm[i].re);
    }
    free(t->norm);
    for (size_t i = 0; i < t->n_pt; i++)
        rx_free(t->pt[i].re);
    free(t->pt);
    for (size_t i = 0; i < t->n_pp; i++) {
        free(t->pp[i].pre);
        free(t->pp[i].post);
    }
    free(t->pp);
    for (size_t i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].pattern);
    }
    free(t->added);
    free(t->raw_trie.v);
    free(t->norm_trie.v);
    rx_free(t->word_start);
    rx_free(t->word_end);
    free(t->id_tok);
    arena_free(&t->ar);
    free(t->pa.v);
    free(t->pb.v);
    free(t->sp.v);
    sbuf_free(&t->sb);
    free(t->bx.syms);
    free(t->bx.h.v);
    free(t->bx.buf);
    cJSON_Delete(t->json);
    free(t);
}

/* ========================================================================= */
/* Options and text files                                                    */
/* ========================================================================= */

fptq_status fptq_bos_policy_parse(const char *s, fptq_bos_policy *out)
{
    if (strcmp(s, "auto") == 0)
        *out = FPTQ_BOS_AUTO;
    else if (strcmp(s, "yes") == 0)
        *out = FPTQ_BOS_YES;
    else if (strcmp(s, "no") == 0)
        *out = FPTQ_BOS_NO;
    else
        return FPTQ_FAIL(FPTQ_ERR_ARG, "--bos %s: expected auto, yes or no", s);
    return FPTQ_OK;
}

const char *fptq_bos_policy_name(fptq_bos_policy p)
{
    return p == FPTQ_BOS_YES ? "yes" : p == FPTQ_BOS_NO ? "no" : "auto";
}

fptq_status fptq_unescape_arg(const char *opt, const char *s, char **out)
{
    size_t n = strlen(s), k = 0;
    char *o = malloc(n + 1);
    if (!o)
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') {
            o[k++] = s[i];
            continue;
        }
        char c = i + 1 < n ? s[++i] : 0;
        switch (c) {
        case 'n': o[k++] = '\n'; break;
        case 't': o[k++] = '\t'; break;
        case 'r': o[k++] = '\r'; break;
        case '\\': o[k++] = '\\'; break;
        default:
            free(o);
            return FPTQ_FAIL(FPTQ_ERR_ARG, "%s '%s': unknown escape '\\%c' (known: \\n \\t \\r \\\\)", opt, s, c ? c : ' ');
        }
    }
    o[k] = 0;
    *out = o;
    return FPTQ_OK;
}

static fptq_status encode_doc(fptq_tokenizer *t, const fptq_text_source *src, const char *path, int64_t docno,
                              const char *d, size_t n, fptq_ids *ids, fptq_text_stats *stats)
{
    if (n == 0)
        return FPTQ_OK;
    char where[4200];
    snprintf(where, sizeof where, "%s: document %lld (byte %lld of the file)", path, (long long)docno,
             (long long)stats->bytes);
    FPTQ_TRY(fptq_tokenizer_encode(t, d, n, src->bos, where, ids));
    stats->documents++;
    return FPTQ_OK;
}

fptq_status fptq_tokenize_source(fptq_tokenizer *t, const fptq_text_source *src, fptq_tokens *out,
                                 fptq_text_stats *stats)
{
    memset(out, 0, sizeof *out);
    memset(stats, 0, sizeof *stats);
    const char *path = src->jsonl_path ? src->jsonl_path : src->text_path;
    if (!path || (src->jsonl_path && src->text_path))
        return FPTQ_FAIL(FPTQ_ERR_ARG, "one text source: a text file or a JSON Lines file");
    if (src->jsonl_path && (!src->field || !*src->field))
        return FPTQ_FAIL(FPTQ_ERR_ARG, "%s: --jsonl needs --field NAME (the string field holding the text)", path);
    char *buf = NULL;
    int64_t n = 0;
    FPTQ_TRY(fptq_read_file(path, "text", TEXT_MAX_BYTES, 0, &buf, &n));
    {
        sha256_ctx c;
        uint8_t d[32];
        sha256_init(&c);
        sha256_update(&c, buf, (size_t)n);
        sha256_final(&c, d);
        sha256_hex(d, stats->text_sha256);
    }
    fptq_ids ids = {0};
    fptq_status st = FPTQ_OK;
    const double t0 = fptq_now();
    double last_report = t0;
    int64_t docno = 0;
    if (src->text_path) {
        const char *sep = src->doc_sep;
        size_t sn = sep ? strlen(sep) : 0;
        if (sn == 0) {
            FPTQ_TRY_GOTO(encode_doc(t, src, path, 0, buf, (size_t)n, &ids, stats), st, done);
        } else {
            const char *p = buf, *e = buf + n;
            while (p <= e) {
                const char *q = memmem(p, (size_t)(e - p), sep, sn);
                if (!q)
                    q = e;
                stats->bytes = p - buf;
                FPTQ_TRY_GOTO(encode_doc(t, src, path, docno++, p, (size_t)(q - p), &ids, stats), st, done);
                if (src->max_tokens > 0 && ids.n >= src->max_tokens && q < e) {
                    stats->stopped_early = 1;
                    break;
                }
                if (fptq_now() - last_report > 10.0) {
                    last_report = fptq_now();
                    fptq_info("tokenize: %s: %.1f%% (%lld documents, %lld tokens)", path, 100.0 * (double)(q - buf) / (double)n,
                              (long long)stats->documents, (long long)ids.n);
                }
                p = q + sn;
            }
        }
    } else {
        const char *p = buf, *e = buf + n;
        int64_t line = 0;
        while (p < e) {
            const char *q = memchr(p, '\n', (size_t)(e - p));
            if (!q)
                q = e;
            line++;
            size_t ln = (size_t)(q - p);
            int blank = 1;
            for (size_t i = 0; i < ln; i++)
                if (!(p[i] == ' ' || p[i] == '\t' || p[i] == '\r'))
                    blank = 0;
            if (!blank && memmem(p, ln, "\\u0000", 6)) {
                /* cJSON's strings end at a NUL: rather than cut the document */
                st = FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: line %lld holds \\u0000 (a NUL character) in a JSON string, "
                               "which fptq's JSON reader cannot carry; remove it (a plain --text file may hold NUL)",
                               path, (long long)line);
                goto done;
            }
            if (!blank) {
                cJSON *o = cJSON_ParseWithLength(p, ln);
                const cJSON *f = o ? cJSON_GetObjectItemCaseSensitive(o, src->field) : NULL;
                if (!o || !cJSON_IsObject(o)) {
                    st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: line %lld is not a JSON object", path, (long long)line);
                } else if (!f || !cJSON_IsString(f)) {
                    st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: line %lld has no string field \"%s\"", path, (long long)line,
                                   src->field);
                } else {
                    stats->bytes = p - buf;
                    st = encode_doc(t, src, path, line, f->valuestring, strlen(f->valuestring), &ids, stats);
                }
                cJSON_Delete(o);
                if (st != FPTQ_OK)
                    goto done;
                if (src->max_tokens > 0 && ids.n >= src->max_tokens && q < e) {
                    stats->stopped_early = 1;
                    break;
                }
            }
            p = q + 1;
        }
    }
    stats->seconds = fptq_now() - t0;
    stats->bytes = n;
    stats->tokens = ids.n;
    if (ids.n == 0) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: no tokens (%s)", path,
                       stats->documents ? "every document is empty of tokens" : "no non-empty document");
        goto done;
    }
    out->ids = ids.v;
    out->n_tokens = ids.n;
    out->n_rows = 1;
    out->row_len = ids.n;
    ids.v = NULL;
done:
    fptq_ids_free(&ids);
    free(buf);
    return st;
}

fptq_status fptq_tokens_from_text(const char *tokenizer_dir, int64_t vocab_size, const fptq_text_source *src,
                                  fptq_tokens *out, fptq_text_stats *stats, char tokenizer_sha256[65])
{
    fptq_tokenizer *t = NULL;
    FPTQ_TRY(fptq_tokenizer_load(tokenizer_dir, vocab_size, &t));
    fptq_status st = fptq_tokenize_source(t, src, out, stats);
    if (st == FPTQ_OK && fptq_tokenizer_dropped_chars(t) > 0)
        fptq_warn("%s: %lld characters have no token (no byte fallback, no unk_token) and were dropped, as "
                  "`tokenizers` drops them", src->text_path ? src->text_path : src->jsonl_path,
                  (long long)fptq_tokenizer_dropped_chars(t));
    if (tokenizer_sha256)
        memcpy(tokenizer_sha256, t->sha256, 65);
    fptq_tokenizer_free(t);
    return st;
}
