/*
 * cmd_tokenize.c - `leanmoe tokenize`: the ids of the exact bytes of a text
 * (from -f FILE, or the text argument), space-separated on one line, no BOS
 * or EOS added; with --pieces, one "id<TAB>piece" line per token instead.
 * Needs only the vocabulary, so vocabulary-only GGUF files work.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cmd_tokenize(const struct args *a) {
    size_t len;
    char *text = NULL;
    if (a->prompt_file) {
        if (!(text = cli_read_file(a->prompt_file, &len))) return 1;
    } else if (a->text || a->prompt) {
        const char *t = a->text ? a->text : a->prompt;
        len = strlen(t);
        text = malloc(len + 1);
        if (text) memcpy(text, t, len + 1);
    } else {
        fprintf(stderr, "leanmoe: tokenize needs a text argument or -f FILE\n");
        return 1;
    }
    if (!text) return 1;
    lmoe_engine *e = cli_open_model(a, 1, 1);
    if (!e) { free(text); return 1; }
    int32_t *ids;
    int n, rc = 0;
    char err[256];
    if (lmoe_tokenize(e, text, len, 0, 0, &ids, &n, err, sizeof err)) {
        fprintf(stderr, "leanmoe: %s\n", err);
        rc = 1;
    } else {
        for (int i = 0; i < n; i++) {
            if (a->pieces) printf("%d\t%s\n", ids[i], lmoe_token_piece(e, ids[i]));
            else printf(i ? " %d" : "%d", ids[i]);
        }
        if (!a->pieces) printf("\n");
        free(ids);
    }
    lmoe_engine_close(e);
    free(text);
    return rc;
}
