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
 *   and {%+, trim_blocks and lstrip_blocks (always on, as in transformers)
 *   {% if/elif/else %}, {% for x in seq [if cond] %} with {% else %},
 *   tuple targets (for k, v in d.items()), loop.index/index0/revindex/
 *   revindex0/first/last/length/previtem/nextitem/cycle(), {% break %} and
 *   {% continue %}, {% set x = .. %}, {% set ns.attr = .. %},
 *   {% set a, b = .. %}, {% set x %}..{% endset %}, {% macro %} and calls,
 *   {% generation %} (transformers' tag; renders its body), {% raw %}
 *   expressions: literals (strings with Python escapes, ints, floats,
 *   true/false/none in either case, lists, tuples, dicts), names, .attr,
 *   [index], [a:b:c] slices, calls with keyword arguments, filters, tests
 *   (is / is not), not/and/or, in/not in, == != < <= > >=, + - * / // % **
 *   and ~, unary -, and x if c else y
 *   filters: abs, capitalize, count, d/default, dictsort, e/escape, first,
 *   float, indent, int, items, join, last, length, list, lower, map,
 *   max, min, reject, rejectattr, replace, reverse, round, safe, select,
 *   selectattr, sort, string, sum, title, tojson (transformers' version:
 *   json.dumps without sorting or ASCII escaping; indent, separators,
 *   sort_keys, ensure_ascii), trim, unique, upper, wordcount
 *   tests: boolean, callable, defined, divisibleby, eq/equalto/==, even,
 *   false, float, ge, gt, in, integer, iterable, le, lower, lt, mapping,
 *   ne, none, number, odd, sameas, sequence, string, true, undefined, upper
 *   globals: namespace(), range(), dict(), raise_exception(msg),
 *   strftime_now(fmt)
 *   methods: str.startswith/endswith/split/rsplit/strip/lstrip/rstrip/
 *   lower/upper/title/capitalize/replace/find/rfind/count/join/splitlines/
 *   isdigit/isalpha/isalnum/isspace/islower/isupper/format-free;
 *   dict.items/keys/values/get
 * Strings are indexed, sliced and measured in code points, as in Python;
 * values print as Python's str() does (None, True, [1, 'a']).
 *
 * Not supported (a template that uses them fails to parse or render, and
 * the caller falls back to a hand-written format): template inheritance
 * and includes, {% call %} blocks, {% filter %} blocks, macros' caller/
 * varargs/kwargs, string % formatting and the format filter, recursive loops.
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
    size_t max_memory; /* bytes of values alive during the render */
    uint64_t max_steps; /* statements and expressions evaluated */
    int max_depth;      /* macro calls nested */
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
