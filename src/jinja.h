/*
 * jinja.h - a small Jinja2 renderer for chat templates (internal).
 *
 * Models publish their prompt format as a Jinja2 template (GGUF's
 * tokenizer.chat_template, tokenizer_config.json's chat_template), which
 * transformers renders with jinja2's sandbox, trim_blocks and lstrip_blocks,
 * the loopcontrols extension, and a few globals. This file renders the same
 * subset in C, byte for byte: what the templates of DeepSeek-V2/V3/R1,
 * Qwen2/Qwen3, Llama 3 and Mistral use, and the common parts around them.
 *
 * Supported:
 *   text, {{ expr }}, {# comments #}, whitespace control {%- -%} {{- -}}
 *   and {%+ +%}, trim_blocks and lstrip_blocks (always on, as in
 *   transformers), newlines normalised and one trailing newline dropped
 *   {% if/elif/else %}, {% for x in seq [if cond] %} with {% else %},
 *   tuple targets (for k, v in d.items()), loop.index/index0/revindex/
 *   revindex0/first/last/length/previtem/nextitem/depth/cycle(),
 *   {% break %} and {% continue %}, {% set x = .. %}, {% set ns.attr = .. %},
 *   {% set a, b = .. %}, {% set x %}..{% endset %}, {% macro %} (parameters
 *   with defaults) and calls with keyword arguments, {% generation %}
 *   (transformers' tag; renders its body), {% raw %}
 *   expressions: literals (strings with Python escapes, adjacent strings
 *   joined, ints in any base, floats, true/false/none in either case,
 *   lists, tuples, dicts), names, .attr, .0, [index], [a:b:c] slices,
 *   calls, filters, tests (is / is not, with or without parentheses),
 *   not/and/or, in/not in, chained == != < <= > >=, + - * / // % ** and ~,
 *   unary - and +, x if c [else y]
 *   filters: abs, attr, capitalize, count, d/default, dictsort, e/escape,
 *   first, float, indent, int, items, join, last, length, list, lower, map,
 *   max, min, reject, rejectattr, replace, reverse, round, safe, select,
 *   selectattr, sort, string, sum, title, tojson (transformers' version:
 *   json.dumps without sorting or ASCII escaping; ensure_ascii, indent,
 *   separators, sort_keys), trim, unique, upper, wordcount
 *   tests: boolean, callable, defined, divisibleby, eq/equalto, even,
 *   false, float, ge, gt/greaterthan, in, integer, iterable, le, lower,
 *   lt/lessthan, mapping, ne, none, number, odd, sameas, sequence, string,
 *   true, undefined, upper
 *   globals: namespace(), range() (at most 100000 items, as the sandbox),
 *   dict(), raise_exception(msg), strftime_now(fmt)
 *   methods: str.startswith/endswith (a string or a tuple)/split/rsplit/
 *   strip/lstrip/rstrip/lower/upper/title/capitalize/replace/find/rfind/
 *   count/join/splitlines/isdigit/isalpha/isalnum/isspace/islower/isupper;
 *   list.count/index; dict.items/keys/values/get
 * Values behave as in Python: ints are 64-bit (overflow is an error rather
 * than a bignum), strings are indexed, sliced and measured in code points,
 * case mapping is Unicode's (utf8proc), undefined values print as "" and
 * fail on attribute access, and values print as Python's str() does (None,
 * True, [1, 'a'], 1e+16).
 *
 * Not supported (a template that uses them fails to parse or render, and
 * the caller falls back to a hand-written format): template inheritance
 * and includes, {% call %}, {% filter %}, {% with %} and {% do %} blocks,
 * filters on set blocks, macros' caller/varargs/kwargs, *args and **kwargs
 * in calls, string % formatting and the format filter, the filters and
 * tests not listed above (batch, groupby, truncate, ...), recursive loops,
 * tuple subscripts, \N{...} escapes, non-ASCII identifiers.
 *
 * Errors never crash: a syntax error, an unknown filter or test, a type
 * error, raise_exception(), or a template that exceeds its limits (output
 * size, memory, steps, nesting depth) returns LMOE_ERR_FORMAT with one line
 * ("jinja: line 3: unknown filter 'frobnicate'"). Allocation failure is
 * LMOE_ERR_NOMEM. A parsed template is read-only: threads may render it at
 * once.
 */
#ifndef LMOE_JINJA_H
#define LMOE_JINJA_H

#include <stddef.h>
#include <stdint.h>

struct lmoe_jinja;

/* Bounds on one render; zero fields take the defaults below. */
struct lmoe_jinja_limits {
    size_t max_output; /* bytes of rendered text */
    size_t max_memory; /* bytes allocated by the render (values are freed only at its end) */
    uint64_t max_steps; /* statements and expressions evaluated */
    int max_depth;      /* macro calls nested (C recursion is bounded separately) */
};
#define LMOE_JINJA_MAX_OUTPUT ((size_t)16 << 20)
#define LMOE_JINJA_MAX_MEMORY ((size_t)256 << 20)
#define LMOE_JINJA_MAX_STEPS 20000000u
#define LMOE_JINJA_MAX_DEPTH 64

/* Parses src[0..len) (copied). Errors: LMOE_ERR_FORMAT naming the line. */
int lmoe_jinja_parse(struct lmoe_jinja **out, const char *src, size_t len, char *err, size_t errlen);
void lmoe_jinja_free(struct lmoe_jinja *t); /* NULL is fine */

/* Renders with the members of the JSON object vars_json as variables (NULL:
 * none). *out is malloc'd and NUL-terminated, *out_len its length (may be
 * NULL); the caller frees it. lim may be NULL. */
int lmoe_jinja_render(const struct lmoe_jinja *t, const char *vars_json, size_t vars_len,
                      const struct lmoe_jinja_limits *lim, char **out, size_t *out_len, char *err,
                      size_t errlen);

#endif
