/*
 * test_jinja.c - the Jinja chat-template renderer (src/jinja.h).
 *
 * Goldens: the templates of the supported families rendered by jinja2 the
 * way transformers' apply_chat_template does (tests/golden/chat/jinja-*,
 * made by tools/make_jinja_goldens.py) must come out byte for byte. Unit
 * cases cover expressions, filters, tests, loops, macros and whitespace
 * control; their expected text was rendered by jinja2 as well. Error cases
 * check that bad templates and runaway ones fail with one line, and the
 * fuzz corpus and crash reproducers are replayed.
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_jinja.h"
#include "jinja.h"
#include "leanmoe.h"
#include "test.h"

static int one_line(const char *err) { return err[0] != 0 && strchr(err, '\n') == NULL; }

/* Parses and renders; returns the code, with the text in *out (or NULL). */
static int render(const char *tmpl, size_t tlen, const char *vars, const struct lmoe_jinja_limits *lim,
                  char **out, size_t *out_len, char *err, size_t errlen) {
    struct lmoe_jinja *t = NULL;
    *out = NULL;
    err[0] = 0;
    int rc = lmoe_jinja_parse(&t, tmpl, tlen, err, errlen);
    if (rc) return rc;
    rc = lmoe_jinja_render(t, vars, vars ? strlen(vars) : 0, lim, out, out_len, err, errlen);
    lmoe_jinja_free(t);
    return rc;
}

static void test_goldens(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/golden/chat/jinja-manifest.txt", LMOE_TEST_DIR);
    char *manifest = test_read_file(path, NULL);
    CHECKF(manifest != NULL, "missing %s", path);
    if (!manifest) return;
    int n_match = 0, n_error = 0;
    for (char *line = strtok(manifest, "\n"); line; line = strtok(NULL, "\n")) {
        char name[64], cs[64], flag[16] = "";
        if (sscanf(line, "%63s %63s %15s", name, cs, flag) < 2) continue;
        size_t tlen = 0;
        snprintf(path, sizeof path, "%s/golden/chat/tmpl-%s.jinja", LMOE_TEST_DIR, name);
        char *tmpl = test_read_file(path, &tlen);
        snprintf(path, sizeof path, "%s/golden/chat/jinja-%s-%s.json", LMOE_TEST_DIR, name, cs);
        char *vars = test_read_file(path, NULL);
        snprintf(path, sizeof path, "%s/golden/chat/jinja-%s-%s.txt", LMOE_TEST_DIR, name, cs);
        size_t wlen = 0;
        char *want = flag[0] ? NULL : test_read_file(path, &wlen);
        CHECKF(tmpl && vars && (flag[0] || want), "%s %s: missing golden files", name, cs);
        if (tmpl && vars && (flag[0] || want)) {
            char *got, err[256];
            size_t glen = 0;
            int rc = render(tmpl, tlen, vars, NULL, &got, &glen, err, sizeof err);
            if (flag[0]) { /* jinja2 refuses this conversation: so must we */
                CHECKF(rc == LMOE_ERR_FORMAT && !got && one_line(err), "%s %s: rc %d, expected an error", name,
                       cs, rc);
                n_error++;
            } else {
                CHECKF(rc == 0 && glen == wlen && !memcmp(got, want, wlen), "%s %s: rc %d %s\ngot:\n%s\nwant:\n%s",
                       name, cs, rc, err, got ? got : "", want);
                n_match++;
            }
            free(got);
        }
        free(tmpl);
        free(vars);
        free(want);
    }
    free(manifest);
    CHECKF(n_match >= 40 && n_error >= 1, "only %d goldens and %d error cases", n_match, n_error);
}

/* Expected text rendered by jinja2 (ImmutableSandboxedEnvironment,
 * trim_blocks, lstrip_blocks, loopcontrols; transformers' tojson). */
static const struct {
    const char *tmpl, *vars, *want;
} units[] = {
    {"Hello {{ 'world' }}!",
     NULL,
     "Hello world!"},
    {"{% for i in [1,2] %}{% if i == 2 %}{{ x }}{% endif %}{% set x = i %}{% endfor %}",
     "{\"x\": 5}",
     "5"},
    {"{% set x = 1 %}{% for i in [1,2] %}{{ x }}{% set x = 2 %}{{x}}{% endfor %}{{x}}",
     NULL,
     "12121"},
    {"{{ [1,'a',none,true,1.5,{'k':(1,)}] }}",
     NULL,
     "[1, 'a', None, True, 1.5, {'k': (1,)}]"},
    {"{{ 1e20 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }} {{ 3/2 }} {{ 7//2 }} {{ -7//2 }} {{ -7 % 3 }} {{ 2**10 }} {{ 2**-1 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 0.1 + 0.2 }}",
     NULL,
     "1e+20 1e+16 1000000000000000.0 0.0001 1e-05 1.5 3 -4 2 1024 0.5 3.0 0.5 0.30000000000000004"},
    {"{{ 'abc'[::-1] }}{{ 'a' ~ none ~ 1 }}{{ 'h\xc3\xa9llo'[1:3] }}|{{ [1,2,3,4,5][1::2] }}{{ [1,2,3][-1] }}{{ 'abc'[5:] }}",
     NULL,
     "cbaaNone1\xc3\xa9l|[2, 4]3"},
    {"{% macro m(a, b='q') %}[{{a}}{{b}}{{g}}]{% endmacro %}{% set g = 5 %}{{ m(1) }}{{ m(2, b=3) }}",
     NULL,
     "[1q5][235]"},
    {"{% for m in messages %}\n  {{ loop.index }}/{{ loop.length }} {{ m.role }}: {{ m['content'] }}{% if loop.last %} last{% endif %}\n\n{% endfor %}\n  {%- if true %}\nx\n  {% endif %}\n  end",
     "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"yo\"}]}",
     "  1/2 user: hi\n  2/2 assistant: yo last\nx\n  end"},
    {"a  {%- if true -%}  b  {%- endif -%}  c\n  {# comment #}\nd {#- c2 -#} e\n{%+ if true %}plus{% endif +%}\nafter",
     NULL,
     "abc\nde\nplus\nafter"},
    {"{% raw %}{{ not rendered }}{% endraw %}\n  {% raw -%}   x {%- endraw %}",
     NULL,
     "{{ not rendered }}x"},
    {"{{ \"a\" \"b\" 'c\\n\\t\\x41\\u00e9' }}{{ '\\\\d' }}",
     NULL,
     "abc\n\tA\xc3\xa9\\d"},
    {"{{ 'Hello World'|lower }}{{ 'x'|upper }}{{ '  pad  '|trim }}|{{ 'ab,cd'.split(',') }}{{ ' a  b '.split() }}{{ 'a b c'.split(None, 1) }}{{ 'a,b,c'.rsplit(',', 1) }}",
     NULL,
     "hello worldXpad|['ab', 'cd']['a', 'b']['a', 'b c']['a,b', 'c']"},
    {"{{ 'hello'.startswith('he') }}{{ 'hello'.endswith(('x','lo')) }}{{ '\\n\\nhi\\n'.strip('\\n') }}{{ 'xxhixx'.lstrip('x') }}{{ 'xxhixx'.rstrip('x') }}",
     NULL,
     "TrueTruehihixxxxhi"},
    {"{{ [3,1,2]|sort }}{{ [3,1,2]|sort(reverse=true) }}{{ ['b','A','c']|sort }}{{ {'b':1,'a':2}|dictsort }}{{ [1,2,2,3]|unique|list }}{{ [1,5,3]|max }}{{ [1,5,3]|min }}{{ [1,2,3]|sum }}",
     NULL,
     "[1, 2, 3][3, 2, 1]['A', 'b', 'c'][('a', 2), ('b', 1)][1, 2, 3]516"},
    {"{{ [1,2,3]|join(', ') }}{{ [1,2,3]|first }}{{ [1,2,3]|last }}{{ 'abc'|length }}{{ 'abc'|reverse }}{{ [1,2]|reverse|list }}{{ 'a-b'|replace('-', '+') }}",
     NULL,
     "1, 2, 3133cba[2, 1]a+b"},
    {"{{ {'a': 1, 'b': [1, 2.5, none, true, \"\xc3\xa9\\n\\\"\"]}|tojson }}{{ {'a': 1}|tojson(indent=2) }}{{ [1,{'x':[]}]|tojson(indent=2) }}{{ {'b':1,'a':2}|tojson(sort_keys=true) }}{{ '\xc3\xa9'|tojson(ensure_ascii=true) }}{{ [1,2]|tojson(separators=(',',':')) }}",
     NULL,
     "{\"a\": 1, \"b\": [1, 2.5, null, true, \"\xc3\xa9\\n\\\"\"]}{\n  \"a\": 1\n}[\n  1,\n  {\n    \"x\": []\n  }\n]{\"a\": 2, \"b\": 1}\"\\u00e9\"[1,2]"},
    {"{{ x is defined }}{{ none is none }}{{ 1 is number }}{{ 'a' is string }}{{ 3 is odd }}{{ 4 is even }}{{ 6 is divisibleby 3 }}{{ false is false }}{{ 0 is false }}{{ 'a' is in 'cat' }}{{ 1 is not none }}{{ [] is iterable }}{{ {} is mapping }}",
     NULL,
     "FalseTrueTrueTrueTrueTrueTrueTrueFalseTrueTrueTrueTrue"},
    {"{% set ns = namespace(a=1, b='x') %}{% for i in range(3) %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }}{{ ns.b }}",
     NULL,
     "4x"},
    {"{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}",
     NULL,
     "0134"},
    {"{% for i in [] %}x{% else %}empty{% endfor %}{% for k, v in {'a':1,'b':2}.items() %}{{k}}={{v}};{% endfor %}",
     NULL,
     "emptya=1;b=2;"},
    {"{% for i in range(6) if i is odd %}{{ loop.index }}:{{ i }} {% endfor %}",
     NULL,
     "1:1 2:3 3:5 "},
    {"{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t %}block {{ a }}{% endset %}[{{ t }}]",
     NULL,
     "12[block 1]"},
    {"{{ 1 if false }}|{{ 1 if true else 2 }}|{{ 'x' if none else 'y' }}",
     NULL,
     "|1|y"},
    {"{{ [1,2,3][1:] }}{{ (1,2) }}{{ () }}{{ (1,) }}{{ {'a': (1, 'b')} }}",
     NULL,
     "[2, 3](1, 2)()(1,){'a': (1, 'b')}"},
    {"{{ 1 < 2 < 3 }}{{ 3 > 2 > 2 }}{{ 1 == 1.0 }}{{ 'a' in ['a'] }}{{ 'b' not in 'abc' }}{{ not 1 == 2 }}",
     NULL,
     "TrueFalseTrueTrueFalseTrue"},
    {"{{ -1|abs }}{{ -3.5|abs }}{{ '42'|int }}{{ '4.5'|float }}{{ 'x'|int(7) }}{{ 2.5|round }}{{ 3.14159|round(2) }}{{ 2.1|round(0, 'ceil') }}{{ 5|string ~ 'x' }}",
     NULL,
     "13.5424.572.03.143.05x"},
    {"{{ 'hello world'|title }}{{ 'hello World'|capitalize }}{{ 'a b  c'|wordcount }}{{ '<a&b>'|e }}{{ 'x\\ny'|indent(2) }}|{{ 'x\\n\\ny'|indent(2, true) }}",
     NULL,
     "Hello WorldHello world3&lt;a&amp;b&gt;x\n  y|  x\n\n  y"},
    {"{{ users|map(attribute='name')|join(',') }}{{ users|selectattr('age', 'gt', 2)|map(attribute='name')|list }}{{ users|rejectattr('age', 'equalto', 1)|list|length }}{{ [1,2,3,4]|select('odd')|list }}{{ [1,2,3,4]|reject('even')|list }}{{ ['a','b']|map('upper')|list }}{{ users|sort(attribute='age')|map(attribute='name')|join }}",
     "{\"users\":[{\"name\":\"a\",\"age\":3},{\"name\":\"b\",\"age\":1}]}",
     "a,b['a']1[1, 3][1, 3]['A', 'B']ba"},
    {"{{ \"it's\" }} {{ [\"it's\", 'say \"hi\"', 'both \\' \"'] }}",
     NULL,
     "it's [\"it's\", 'say \"hi\"', 'both \\' \"']"},
    {"{% for x in 'ab' %}{{ loop.cycle('o','e') }}{{ loop.revindex }}{{ loop.first }}{% endfor %}",
     NULL,
     "o2Truee1False"},
    {"{{ 'Hello'.find('l') }}{{ 'Hello'.rfind('l') }}{{ 'Hello'.count('l') }}{{ '-'.join(['a','b']) }}{{ 'a\\nb\\r\\nc'.splitlines() }}{{ '12'.isdigit() }}{{ 'ab'.isalpha() }}{{ 'AB'.isupper() }}{{ 'ab'.islower() }}{{ 'x'.replace('x', 'yy') }}\n",
     NULL,
     "232a-b['a', 'b', 'c']TrueTrueTrueTrueyy"},
    {"  {% if true %}\n    x\n  {% endif %}",
     NULL,
     "    x\n"},
    {"a\n  {%- if true %}\nb\n{% endif -%}\n  c",
     NULL,
     "ab\nc"},
    {"  {{ 1 }}\n  {%+ if true %}y{% endif %}",
     NULL,
     "  1\n  y"},
    {"x {% if true %}y{% endif %} z\n{% for i in [1,2] %}\n  {{ i }}\n{% endfor %}",
     NULL,
     "x y z\n  1\n  2\n"},
    {"{#\nmulti\n#}\n  {#- x #}\ntext\n {# lone #} \nafter",
     NULL,
     "text\n \nafter"},
    {"{% set x = 'a' %}   {{- x -}}   {{ x }}\n\n  \n",
     NULL,
     "aa\n\n  "},
    {"line1\n{%- raw %}  R  {% endraw %}",
     NULL,
     "line1  R  "},
    {" \t {% if 1 %}tab{% endif %}",
     NULL,
     "tab"},
    {"{{ 'a' }}{% if true %}\nb{% endif %}",
     NULL,
     "ab"},
    {"{% if true %}a{% else %}b{% endif %}{% if false %}a{% elif true %}c{% else %}d{% endif %}",
     NULL,
     "ac"},
    {"{{ 'x' }}\n  {% if true %}y{% endif %}",
     NULL,
     "x\ny"},
    {"{{- ' lead' }}",
     NULL,
     " lead"},
    {"{% for i in range(3) -%}\n    {{ i }}\n{%- endfor %}",
     NULL,
     "012"},
    {"{{ \"a\\\nb\" }}",
     NULL,
     "ab"},
    {"{% set d = {'k': {'n': [1, {'z': 2}]}} %}{{ d.k.n.1.z }}{{ d['k']['n'][0] }}",
     NULL,
     "21"},
    {"{% macro greet(name) %}Hi {{ name }}{% endmacro %}{{ greet('bob') | upper }}{{ greet(name='x') }}",
     NULL,
     "HI BOBHi x"},
    {"{{ range(5)|list }}{{ range(1, 10, 3)|list }}{{ range(5, 0, -2)|list }}",
     NULL,
     "[0, 1, 2, 3, 4][1, 4, 7][5, 3, 1]"},
    {"{{ dict(a=1, b='x') }}{{ namespace(a=1).a }}",
     NULL,
     "{'a': 1, 'b': 'x'}1"},
    {"{% for a in [[1,2],[3,4]] %}{% for b in a %}{{ loop.index }}{{ b }}{% endfor %};{{ loop.index }}{% endfor %}",
     NULL,
     "1122;11324;2"},
    {"{{ x }} {{ y }} {{ z }} {{ big }} {{ [x, s] }} {{ {'x': x}|tojson }}",
     "{\"x\": 1.0, \"y\": 1e300, \"z\": -0.0, \"big\": 12345678901234, \"s\": \"tab\\there\"}",
     "1.0 1e+300 -0.0 12345678901234 [1.0, 'tab\\there'] {\"x\": 1.0}"},
    {"{{ 0b101 }} {{ 0o17 }} {{ 0xFF }} {{ 1_000 }} {{ 1.5e3 }} {{ 2e-3 }}",
     NULL,
     "5 15 255 1000 1500.0 0.002"},
    {"{{ none }}{{ None }}{{ True }}{{ false }}",
     NULL,
     "NoneNoneTrueFalse"},
    {"{{ 'abc' if 'b' in 'abc' }}{{ [1,2][5] }}|{{ {'a':1}['b'] }}|{{ ''.join([]) }}",
     NULL,
     "abc||"},
    {"{{ x|default }}{{ x|d('z') }}{{ y is undefined }}{{ x | length }}",
     NULL,
     "zTrue0"},
    {"{% if x %}yes{% else %}no{% endif %}{% for i in x %}{{i}}{% endfor %}",
     NULL,
     "no"},
    {"{{ 'a,b,,c'.split(',') }}{{ ',a,'.split(',') }}{{ 'a  b'.split(' ') }}{{ ''.split() }}{{ ''.split(',') }}{{ '  a b  '.rsplit(None, 1) }}",
     NULL,
     "['a', 'b', '', 'c']['', 'a', '']['a', '', 'b'][]['']['  a', 'b']"},
    {"{{ 'x'.strip() }}{{ '\\u3000x\\u00a0'.strip()|length }}{{ 'ab'.replace('', '-') }}{{ 'aaa'.replace('a', 'b', 2) }}{{ 'abc'.title() }}{{ 'hello world'.title() }}{{ \"they're\".title() }}\n",
     NULL,
     "x1-a-b-bbaAbcHello WorldThey'Re"},
    {"{{ '  a b  c '.split(None, 1) }}{{ '  a b  c '.rsplit(None, 1) }}{{ 'a b c'.rsplit(None, 5) }}{{ 'a,b,c'.rsplit(',') }}",
     NULL,
     "['a', 'b  c ']['  a b', 'c']['a', 'b', 'c']['a', 'b', 'c']"},
    {"{{ 'abc'[1] }}{{ 'h\xc3\xa9llo'[-1] }}{{ 'h\xc3\xa9llo'|length }}{{ 'h\xc3\xa9llo'.find('l') }}{{ '\xc3\x89" "COLE'|lower }}{{ 'stra\xc3\x9f" "e'|upper }}",
     NULL,
     "bo52\xc3\xa9" "coleSTRASSE"},
    {"{{ [1, [2, [3]]]|tojson(indent=1) }}",
     NULL,
     "[\n 1,\n [\n  2,\n  [\n   3\n  ]\n ]\n]"},
    {"{{ {}|tojson }}{{ []|tojson(indent=2) }}{{ {'a': {}}|tojson(indent='\\t') }}{{ 1.0|tojson }}{{ (1,2)|tojson }}",
     NULL,
     "{}[]{\n\t\"a\": {}\n}1.0[1, 2]"},
    {"{% set x = [1,2,3] %}{{ x|length }}{{ x|count }}{{ x[1:]|sum }}{{ x|map('string')|join('-') }}",
     NULL,
     "3351-2-3"},
    {"{{ 'a' < 'b' }}{{ [1,2] < [1,3] }}{{ (1,2) == [1,2] }}{{ 1 == True }}{{ {'a':1} == {'a':1} }}",
     NULL,
     "TrueTrueFalseTrueTrue"},
    {"{{ 10 / 4 }}{{ 10 / 5 }}{{ 2 ** 0.5 }}{{ 1e308 * 10 }}{{ -1e308 * 10 }}",
     NULL,
     "2.52.01.4142135623730951inf-inf"},
    {"{% if a is not defined and b is undefined %}ok{% endif %}{{ not a }}",
     NULL,
     "okTrue"},
    {"{% set ns = namespace(found=false) %}{% for m in ['a','b'] %}{% if m == 'b' %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }}",
     NULL,
     "True"},
    {"{{ \"{{\" }}{{ '}}' }}{{ '{%' }}",
     NULL,
     "{{}}{%"},
    {"{{ {'a': 1, 'b': 2}|items|list }}{% for k in {'x': 1} %}{{ k }}{% endfor %}",
     NULL,
     "[('a', 1), ('b', 2)]x"},
    {"{{ 'abc'|first }}{{ 'abc'|last }}{{ []|first }}{{ [3,1]|list|sort|first }}",
     NULL,
     "ac1"},
    {"{{ 3.0 }}{{ 3.0|int }}{{ '0x1A'|int(0, 16) }}{{ '  12 '|int }}{{ 'abc'|float }}{{ True|int }}{{ '1e3'|float }}",
     NULL,
     "3.0326120.011000.0"},
    {"{{ 'a' ~ 1.5 ~ true ~ [1] }}",
     NULL,
     "a1.5True[1]"},
    {"{{ \"x\" | replace(\"x\", \"\\\\\") }}\n",
     NULL,
     "\\"},
};

static void test_units(void) {
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        char *got, err[256];
        size_t n = 0;
        int rc = render(units[i].tmpl, strlen(units[i].tmpl), units[i].vars, NULL, &got, &n, err, sizeof err);
        CHECKF(rc == 0 && n == strlen(units[i].want) && !strcmp(got, units[i].want),
               "unit %zu: %s\nrc %d %s\ngot:  [%s]\nwant: [%s]", i, units[i].tmpl, rc, err, got ? got : "",
               units[i].want);
        free(got);
    }
}

/* Each bad template fails with LMOE_ERR_FORMAT and one line naming why. */
static void expect_error(const char *tmpl, const char *vars, const struct lmoe_jinja_limits *lim,
                         const char *needle) {
    char *got, err[256];
    int rc = render(tmpl, strlen(tmpl), vars, lim, &got, NULL, err, sizeof err);
    CHECKF(rc == LMOE_ERR_FORMAT && !got && one_line(err) && strstr(err, needle),
           "%.60s: rc %d, message '%s', expected '%s'", tmpl, rc, err, needle);
    free(got);
}

/* A template text repeated: "(" * n and the like. */
static char *repeat(const char *head, const char *unit, int n, const char *tail) {
    size_t hu = strlen(head), uu = strlen(unit), tu = strlen(tail);
    char *s = malloc(hu + uu * (size_t)n + tu + 1);
    memcpy(s, head, hu);
    for (int i = 0; i < n; i++) memcpy(s + hu + uu * (size_t)i, unit, uu);
    memcpy(s + hu + uu * (size_t)n, tail, tu + 1);
    return s;
}

static void test_errors(void) {
    /* syntax */
    expect_error("{% if %}x{% endif %}", NULL, NULL, "line 1: expected an expression");
    expect_error("a\n{% if true %}x", NULL, NULL, "line 2: unexpected end of template, expected 'elif'");
    expect_error("{{ x|frobnicate }}", NULL, NULL, "unknown filter 'frobnicate'");
    expect_error("{{ x is frobnicated }}", NULL, NULL, "unknown test 'frobnicated'");
    expect_error("{% include 'other.jinja' %}", NULL, NULL, "unsupported tag 'include'");
    expect_error("{% break %}", NULL, NULL, "'break' outside of a loop");
    expect_error("{{ 'open }}", NULL, NULL, "unterminated string");
    expect_error("{{ (1 }}", NULL, NULL, "expected");
    expect_error("{{ 1 ]] }}", NULL, NULL, "unexpected ']'");
    expect_error("{# never closed", NULL, NULL, "missing end of comment");
    expect_error("{% raw %}never closed", NULL, NULL, "missing end of raw");
    expect_error("{{ 99999999999999999999 }}", NULL, NULL, "integer literal too large");
    expect_error("{% endfor %}", NULL, NULL, "unexpected 'endfor'");
    expect_error("{{ '\\x4' }}", NULL, NULL, "truncated");
    /* run time */
    expect_error("{{ raise_exception('Only user and\nassistant roles') }}", NULL, NULL,
                 "line 1: Only user and assistant roles");
    expect_error("{{ x.y }}", NULL, NULL, "'x' is undefined");
    expect_error("{{ 1 + 'a' }}", NULL, NULL, "unsupported operand type(s) for +: 'int' and 'str'");
    expect_error("{{ 1 // 0 }}", NULL, NULL, "by zero");
    expect_error("{{ 9223372036854775807 + 1 }}", NULL, NULL, "integer overflow");
    expect_error("{% for x in 5 %}{% endfor %}", NULL, NULL, "'int' object is not iterable");
    expect_error("{{ none() }}", NULL, NULL, "not callable");
    expect_error("{{ 'a'.format(1) }}", NULL, NULL, "'format'");
    expect_error("{% set x.y = 1 %}", NULL, NULL, "non-namespace");
    expect_error("{{ range(1000000)|length }}", NULL, NULL, "range too big");
    expect_error("{{ [1]|tojson ~ x|tojson }}", NULL, NULL, "not JSON serializable");
    expect_error("{{ messages[0].content + 1 }}", "{\"messages\": [{\"content\": \"a\"}]}", NULL, "'str' and 'int'");
    /* limits: steps, nesting, recursion, output, memory */
    expect_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", NULL, NULL,
                 "steps");
    struct lmoe_jinja_limits small = {.max_steps = 1000};
    expect_error("{% for i in range(2000) %}{{ i }}{% endfor %}", NULL, &small, "ran more than 1000 steps");
    expect_error("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}", NULL, NULL, "nest deeper than 64");
    char *deep = repeat("{{ ", "(", 5000, "1 }}");
    expect_error(deep, NULL, NULL, "nested too deeply");
    free(deep);
    deep = repeat("{{ ", "not ", 5000, "1 }}");
    expect_error(deep, NULL, NULL, "nested too deeply");
    free(deep);
    deep = repeat("{{ 1", " + 1", 20000, " }}");
    expect_error(deep, NULL, NULL, "nests too deeply");
    free(deep);
    deep = repeat("", "{% if true %}", 5000, "");
    expect_error(deep, NULL, NULL, "nested too deeply");
    free(deep);
    deep = repeat("{% set ns = namespace(x=1) %}", "{% set ns.x = [ns.x] %}", 3000, "{{ ns.x }}");
    expect_error(deep, NULL, NULL, "nests too deeply");
    free(deep);
    expect_error("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", NULL, NULL, "output exceeds");
    struct lmoe_jinja_limits tiny_out = {.max_output = 10};
    expect_error("{{ 'hello world' }}", NULL, &tiny_out, "output exceeds 10 bytes");
    expect_error("{% set ns = namespace(s='xy') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
                 NULL, NULL, "memory");
    expect_error("{{ 'ab' * 9000000000000 }}", NULL, NULL, "too large");
    /* bad variables are the caller's error */
    char *got, err[256];
    CHECK(render("x", 1, "[1]", NULL, &got, NULL, err, sizeof err) == LMOE_ERR_ARG && !got && one_line(err));
    CHECK(render("x", 1, "{bad", NULL, &got, NULL, err, sizeof err) == LMOE_ERR_ARG && !got && one_line(err));
    /* NULL variables and an empty template are fine */
    size_t n = 1;
    CHECK(render("", 0, NULL, NULL, &got, &n, err, sizeof err) == 0 && got && n == 0 && got[0] == 0);
    free(got);
    lmoe_jinja_free(NULL);
}

/* Replays a corpus folder through the fuzz target's checks. */
static void replay_dir(const char *sub, int *count) {
    char dir[512], path[1024];
    snprintf(dir, sizeof dir, "%s/fuzz/%s", LMOE_TEST_DIR, sub);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        size_t n = 0;
        char *data = test_read_file(path, &n);
        if (!data) continue;
        char *got, err[512];
        size_t len = 0;
        int rc = render(data, n, fuzz_jinja_vars, &fuzz_jinja_limits, &got, &len, err, sizeof err);
        CHECKF(rc == 0 ? got && got[len] == 0 : !got && one_line(err), "%s: rc %d '%s'", path, rc, err);
        free(got);
        free(data);
        (*count)++;
    }
    closedir(d);
}

/* Through the engine: a folder's tokenizer_config.json template is what
 * lmoe_chat_render uses, byte for byte as jinja2 renders it. */
static void test_engine(const char *dir, const char *name) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/tokenizers/%s", LMOE_SHARED_DIR, dir);
    struct lmoe_engine_options opt = {0};
    opt.vocab_only = 1;
    lmoe_engine *e = NULL;
    if (lmoe_engine_open(&e, path, &opt, err, sizeof err)) {
        fprintf(stderr, "jinja: skipping the engine check on %s: %s\n", path, err);
        return;
    }
    CHECKF(!strcmp(lmoe_chat_format(e), "template"), "%s: format %s", dir, lmoe_chat_format(e));
    static const struct lmoe_chat_msg single[] = {{"user", "What is a mixture of experts?"}};
    static const struct lmoe_chat_msg sys[] = {{"system", "You are terse."}, {"user", "Hi  there\nfriend"}};
    static const struct lmoe_chat_msg multi[] = {
        {"system", "Be kind."}, {"user", "One?"}, {"assistant", "Two."},
        {"user", "Three, \xc3\xa9 \xc3\xbc \xe4\xb8\xad\xe6\x96\x87?"}};
    static const struct {
        const char *name;
        const struct lmoe_chat_msg *msgs;
        int n;
    } cases[] = {{"single", single, 1}, {"system", sys, 2}, {"multi", multi, 4}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        snprintf(path, sizeof path, "%s/golden/chat/jinja-%s-%s.txt", LMOE_TEST_DIR, name, cases[c].name);
        char *want = test_read_file(path, NULL);
        char *got = lmoe_chat_render(e, cases[c].msgs, cases[c].n, 1);
        CHECKF(want && got && !strcmp(want, got), "%s %s: rendered\n%s\nexpected\n%s", dir, cases[c].name,
               got ? got : "", want ? want : "");
        free(want);
        free(got);
    }
    /* Text that is not UTF-8 cannot be a template variable: the hand-written
     * format takes it. */
    static const struct lmoe_chat_msg bad[] = {{"user", "\xff"}};
    char *got = lmoe_chat_render(e, bad, 1, 1);
    CHECK(got && strstr(got, "\xff"));
    free(got);
    lmoe_engine_close(e);
}

void test_jinja(void) {
    test_goldens();
    test_engine("qwen3", "qwen3");
    test_engine("deepseek-v3", "deepseek3");
    test_units();
    test_errors();
    int n_seeds = 0, n_crashes = 0;
    replay_dir("jinja_seeds", &n_seeds);
    replay_dir("jinja_crashes", &n_crashes);
    CHECKF(n_seeds > 0, "no seeds in %s/fuzz/jinja_seeds", LMOE_TEST_DIR);
}
