/*
 * test_chat.c - chat formats render byte for byte what the models' Jinja
 * templates render (tests/golden/chat, made with jinja2 by
 * tools/make_chat_goldens.py), and templates are recognised.
 */
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "leanmoe.h"
#include "test.h"

/* lmoe_chat_detect on a NUL-terminated template text. */
static enum lmoe_chat_format detect(const char *t, const char *arch) {
    return lmoe_chat_detect(t, strlen(t), arch);
}

void test_chat(void) {
    static const struct lmoe_chat_msg single[] = {{"user", "What is a mixture of experts?"}};
    static const struct lmoe_chat_msg sys[] = {{"system", "You are terse."}, {"user", "Hi  there\nfriend"}};
    static const struct lmoe_chat_msg multi[] = {{"system", "Be kind."}, {"user", "One?"},
                                                 {"assistant", "Two."}, {"user", "Three, \xc3\xa9 \xc3\xbc \xe4\xb8\xad\xe6\x96\x87?"}};
    static const struct {
        const char *name;
        const struct lmoe_chat_msg *msgs;
        int n;
    } cases[] = {{"single", single, 1}, {"system", sys, 2}, {"multi", multi, 4}};
    static const struct {
        enum lmoe_chat_format f;
        const char *bos, *eos;
        int system;
    } fmts[] = {
        {LMOE_CHAT_DEEPSEEK3, "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
         "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", 1},
        {LMOE_CHAT_CHATML, "", "<|im_end|>", 1},
        {LMOE_CHAT_DEEPSEEK2, "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
         "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", 1},
        {LMOE_CHAT_LLAMA3, "<|begin_of_text|>", "<|eot_id|>", 1},
        {LMOE_CHAT_MISTRAL, "<s>", "</s>", 0},
    };
    for (size_t f = 0; f < sizeof fmts / sizeof fmts[0]; f++)
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            if (!fmts[f].system && c > 0) continue; /* that template has no system role */
            char path[1024];
            snprintf(path, sizeof path, "%s/golden/chat/%s-%s.txt", LMOE_TEST_DIR,
                     lmoe_chat_format_name(fmts[f].f), cases[c].name);
            char *want = test_read_file(path, NULL);
            CHECKF(want != NULL, "missing %s", path);
            char *got = lmoe_chat_format_render(fmts[f].f, cases[c].msgs, cases[c].n, 1, fmts[f].bos, fmts[f].eos);
            CHECKF(want && got && !strcmp(want, got), "%s-%s: rendered\n%s\nexpected\n%s",
                   lmoe_chat_format_name(fmts[f].f), cases[c].name, got, want);
            free(want);
            free(got);
        }
    /* Recognition from the template text (here: our goldens' own markers). */
    CHECK(detect("{{'<|im_start|>' + role}}", "qwen3moe") == LMOE_CHAT_CHATML);
    CHECK(detect("<\xef\xbd\x9cUser\xef\xbd\x9c>", "deepseek2") == LMOE_CHAT_DEEPSEEK3);
    CHECK(detect("'User: ' 'Assistant:'", "deepseek2") == LMOE_CHAT_DEEPSEEK2);
    CHECK(detect("<|start_header_id|>", "llama") == LMOE_CHAT_LLAMA3);
    CHECK(detect("[INST]", "llama") == LMOE_CHAT_MISTRAL);
    CHECK(lmoe_chat_detect(NULL, 0, "qwen2") == LMOE_CHAT_CHATML);
    CHECK(lmoe_chat_detect(NULL, 0, "deepseek2") == LMOE_CHAT_PLAIN);
}
