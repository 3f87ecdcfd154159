/*
 * fuzz_jinja.c - libFuzzer target for the Jinja chat-template renderer.
 *
 * The input is a template. It is parsed and, when it parses, rendered with a
 * fixed conversation (fuzz_jinja.h) under small limits. A failure must leave
 * no output and one line of message; a success a NUL-terminated text of the
 * stated length.
 *
 *   make fuzz FUZZ_SECONDS=300
 *
 * Seeds are in tests/fuzz/jinja_seeds/ (the chat templates of the supported
 * families and a few feature samplers); crash reproducers go in
 * tests/fuzz/jinja_crashes/, which the jinja suite replays.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_jinja.h"
#include "jinja.h"

static int one_line(const char *err) { return err[0] != 0 && strchr(err, '\n') == NULL; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A private copy of exactly `size` bytes: reads past it are caught. */
    char *src = malloc(size ? size : 1);
    if (!src) return 0;
    memcpy(src, data, size);
    struct lmoe_jinja *t = NULL;
    char err[512];
    err[0] = 0;
    if (lmoe_jinja_parse(&t, src, size, err, sizeof err) == 0) {
        char *out = NULL;
        size_t n = 0;
        err[0] = 0;
        if (lmoe_jinja_render(t, fuzz_jinja_vars, sizeof fuzz_jinja_vars - 1, &fuzz_jinja_limits, &out, &n, err,
                              sizeof err) == 0) {
            if (!out || out[n] != 0 || n > fuzz_jinja_limits.max_output) abort();
            free(out);
        } else if (out != NULL || !one_line(err)) {
            abort();
        }
        lmoe_jinja_free(t);
    } else if (t != NULL || !one_line(err)) {
        abort(); /* a failure leaves no template and one line */
    }
    free(src);
    return 0;
}
