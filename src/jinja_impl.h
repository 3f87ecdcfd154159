/*
 * jinja_impl.h - what the Jinja parser and evaluator share (internal to
 * jinja_parse.c, jinja_eval.c and jinja_lib.c).
 *
 * A template is parsed once into a tree of nodes held in one arena; a render
 * evaluates that tree with values held in a second arena that is freed as a
 * whole when the render ends, so no value is ever freed one by one and an
 * error can unwind from any depth with longjmp without leaking.
 */
#ifndef LMOE_JINJA_IMPL_H
#define LMOE_JINJA_IMPL_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

#include "jinja.h"

/* ---- Arena ------------------------------------------------------------- */

struct jarena_chunk;
struct jarena {
    struct jarena_chunk *head;
    size_t used;  /* bytes handed out (with chunk overheads) */
    size_t limit; /* refuse past this; 0 = no limit */
};
/* Zeroed memory, or NULL past the limit or when malloc fails. */
void *jarena_alloc(struct jarena *a, size_t n);
void jarena_free(struct jarena *a);

/* ---- Strings ----------------------------------------------------------- */

struct jstr {
    const char *p;
    size_t n;
};
int jstr_eq(struct jstr a, const char *s);
/* Python's str.isspace() for one code point. */
int jinja_is_space(uint32_t cp);
/* Decodes the UTF-8 character at s[*i] (s has n bytes), advancing *i; bad
 * bytes decode as themselves, one at a time. */
uint32_t jinja_utf8_next(const char *s, size_t n, size_t *i);

/* ---- Syntax tree ------------------------------------------------------- */

enum jnode_kind {
    /* expressions */
    JN_LIT = 1, /* lit */
    JN_NAME,    /* name */
    JN_LIST,    /* kids: items */
    JN_TUPLE,   /* kids: items */
    JN_DICT,    /* kids: key, value, key, value... */
    JN_ATTR,    /* kids[0].name */
    JN_ITEM,    /* kids[0][kids[1]] */
    JN_SLICE,   /* kids[0][kids[1]:kids[2]:kids[3]], missing parts NULL */
    JN_CALL,    /* kids[0](kids[1..]); kw[i] names keyword arguments */
    JN_FILTER,  /* kids[0] | name(kids[1..]) with kw */
    JN_TEST,    /* kids[0] is [not] name(kids[1..]); op = negated */
    JN_NOT,     /* not kids[0] */
    JN_NEG,     /* -kids[0] */
    JN_POS,     /* +kids[0] */
    JN_BIN,     /* kids[0] op kids[1]; op is a jop */
    JN_CMP,     /* kids[0] ops[0] kids[1] ops[1] kids[2]... (chained) */
    JN_AND,
    JN_OR,
    JN_COND, /* kids[0] if kids[1] else kids[2] (kids[2] may be NULL) */
    /* statements */
    JN_BODY,     /* kids: statements in order */
    JN_TEXT,     /* name: the text */
    JN_OUTPUT,   /* {{ kids[0] }} */
    JN_IF,       /* kids: test, then-body, else (body, JN_IF or NULL) */
    JN_FOR,      /* kids: target, iter, filter|NULL, body, else-body|NULL */
    JN_SET,      /* kids: target (NAME, TUPLE of NAMEs, or ATTR), value */
    JN_SETBLOCK, /* kids: target, body */
    JN_MACRO,    /* name; kids: body, then param NAME, default|NULL pairs */
    JN_BREAK,
    JN_CONTINUE,
};

enum jop { JOP_ADD = 1, JOP_SUB, JOP_MUL, JOP_DIV, JOP_FLOORDIV, JOP_MOD, JOP_POW, JOP_CONCAT,
           JOP_EQ, JOP_NE, JOP_LT, JOP_LE, JOP_GT, JOP_GE, JOP_IN, JOP_NOTIN };

enum jval_type {
    JV_UNDEF = 0, /* s: the name that was looked up, for messages */
    JV_NONE,
    JV_BOOL, /* i */
    JV_INT,  /* i */
    JV_FLOAT, /* f */
    JV_STR,  /* s */
    JV_LIST, /* l; tuple set for tuples */
    JV_DICT, /* d */
    JV_NS,   /* d, mutable: namespace() */
    JV_MACRO, /* m */
    JV_FUNC,  /* i: a global function (enum in jinja_lib.c) */
    JV_METHOD, /* bm: a bound method */
    JV_LOOP,   /* lp: the loop variable */
};

struct jlist;
struct jdict;
struct jmethod;
struct jloop;
struct jnode;

struct jv {
    uint8_t t;
    uint8_t tuple; /* JV_LIST: print as a tuple */
    union {
        int64_t i;
        double f;
        struct jstr s;
        struct jlist *l;
        struct jdict *d;
        const struct jnode *m;
        struct jmethod *bm;
        struct jloop *lp;
    } u;
};

struct jlist {
    size_t n, cap;
    struct jv *v;
};
struct jdict {
    size_t n, cap;
    struct jv *k, *v;
};
struct jmethod {
    struct jv self;
    struct jstr name;
};
struct jloop {
    struct jlist *items;
    int64_t index0;
    struct jloop *parent; /* unused by templates here; keeps depth */
};

struct jnode {
    uint8_t kind;
    uint8_t op; /* JN_BIN: enum jop; JN_TEST: negated */
    int line;
    int n;            /* number of kids */
    struct jnode **kids;
    struct jstr *kw;  /* JN_CALL/JN_FILTER/JN_TEST: keyword name per kid (n==0: positional) */
    uint8_t *ops;     /* JN_CMP: n-1 comparison operators */
    struct jstr name; /* JN_NAME, JN_ATTR, JN_FILTER, JN_TEST, JN_TEXT, JN_MACRO */
    struct jv lit;    /* JN_LIT */
};

struct lmoe_jinja {
    struct jarena arena; /* nodes and decoded literals */
    char *src;           /* the normalised source; text nodes point into it */
    struct jnode *root;  /* JN_BODY */
};

/* ---- Render state (jinja_eval.c, used by jinja_lib.c) ------------------ */

struct jbuf {
    char *p;
    size_t n, cap;
    int heap; /* p is malloc'd (the main output), else arena memory */
};

struct jscope;

struct jrender {
    struct jarena arena;
    struct jlimits_eff {
        size_t max_output, max_memory;
        uint64_t max_steps;
        int max_depth;
    } lim;
    uint64_t steps;
    int nest;       /* C recursion depth across eval, exec and value walks */
    int macro_depth;
    struct jbuf *out;
    struct jbuf main;
    struct jscope *scope, *global;
    int line; /* of the node being evaluated, for messages */
    char *err;
    size_t errlen;
    int code;
    jmp_buf jmp;
};

/* Stops the render with a one-line message (LMOE_ERR_FORMAT). */
_Noreturn void jinja_fail(struct jrender *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Arena memory or a "memory limit" failure. */
void *jinja_alloc(struct jrender *r, size_t n);
/* Enters / leaves one level of C recursion, failing past the bound. */
void jinja_enter(struct jrender *r);
#define jinja_leave(r) ((r)->nest--)

/* Values. */
struct jv jv_undef(struct jstr name);
struct jv jv_none(void);
struct jv jv_bool(int b);
struct jv jv_int(int64_t i);
struct jv jv_float(double f);
struct jv jv_str(const char *p, size_t n);
struct jv jv_cstr(const char *s);
struct jv jv_newlist(struct jrender *r, size_t cap);
void jv_push(struct jrender *r, struct jv *list, struct jv item);
struct jv jv_newdict(struct jrender *r, size_t cap);
/* Sets key in a dict or namespace (replacing an equal key). */
void jv_dict_set(struct jrender *r, struct jdict *d, struct jv k, struct jv v);
/* The value at key, or NULL. */
struct jv *jv_dict_get(struct jrender *r, const struct jdict *d, struct jv k);
const char *jv_type_name(struct jv v);
int jv_truthy(struct jv v);
int jv_equal(struct jrender *r, struct jv a, struct jv b);
/* <0, 0, >0 like Python's ordering, failing on types that do not order. */
int jv_compare(struct jrender *r, struct jv a, struct jv b);
/* str(v) and repr(v), in the arena. */
struct jstr jv_to_str(struct jrender *r, struct jv v);
void jv_repr(struct jrender *r, struct jbuf *b, struct jv v);
/* Items of an iterable: list/tuple items, dict keys, string characters;
 * undefined is empty. Fails on anything else. */
struct jlist *jv_iterate(struct jrender *r, struct jv v);
size_t jv_length(struct jrender *r, struct jv v);
/* obj.name (getattr, then getitem) and obj[key] (getitem, then getattr). */
struct jv jv_getattr(struct jrender *r, struct jv obj, struct jstr name);
struct jv jv_getitem(struct jrender *r, struct jv obj, struct jv key);
void jbuf_put(struct jrender *r, struct jbuf *b, const char *p, size_t n);
void jbuf_puts(struct jrender *r, struct jbuf *b, const char *s);
/* Python's repr() of a float. */
void jinja_float_repr(double f, char *out, size_t n);

/* Call arguments, evaluated: positional first, then keyword ones. */
struct jargs {
    int n;
    struct jv *v;
    struct jstr *kw; /* kw[i].n == 0 for positional */
};
/* The argument at position pos or named name (NULL when absent). */
struct jv *jargs_get(const struct jargs *a, int pos, const char *name);

/* jinja_lib.c: filters, tests, globals, methods. */
int jinja_has_filter(struct jstr name);
int jinja_has_test(struct jstr name);
struct jv jinja_filter(struct jrender *r, struct jstr name, struct jv v, const struct jargs *a);
int jinja_test(struct jrender *r, struct jstr name, struct jv v, const struct jargs *a);
/* A global (range, namespace, dict, raise_exception, strftime_now), or JV_UNDEF. */
struct jv jinja_global(struct jstr name);
struct jv jinja_call_func(struct jrender *r, struct jv f, const struct jargs *a);
/* Whether obj has a method called name (str, dict and loop methods). */
int jinja_has_method(struct jv obj, struct jstr name);
struct jv jinja_call_method(struct jrender *r, const struct jmethod *m, const struct jargs *a);
/* Calls a macro (jinja_eval.c). */
struct jv jinja_call_macro(struct jrender *r, const struct jnode *m, const struct jargs *a);

#endif
