/*
 * fuzz_tokenizer_json.c - libFuzzer target for the tokenizer.json reader
 * (the Hugging Face tokenizers format that `-m DIR` and convert read).
 *
 * The input is a whole tokenizer.json. The reader takes a path, as the
 * command line gives it, so each input is written to tokenizer.json in a
 * private temporary folder (nothing else there: no tokenizer_config.json
 * is picked up). When it opens, a few fixed texts are encoded with special
 * tokens on and every id is decoded back, so ASan and UBSan also watch the
 * normalizers, the pre-tokenizer regexes, the merges and the decoder.
 *
 *   make fuzz FUZZ_SECONDS=300
 *
 * Seeds are in tests/fuzz/tokenizer_json_seeds/ (the tokenizer suite
 * replays them).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenizer.h"

static char dir[64], file[96];

static volatile size_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/lmoe_fuzz_tok_XXXXXX");
        if (!mkdtemp(dir)) abort();
        snprintf(file, sizeof file, "%s/tokenizer.json", dir);
    }
    FILE *f = fopen(file, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    struct lmoe_tokenizer *t;
    char err[256];
    if (lmoe_tokenizer_open_json(&t, file, err, sizeof err) == 0) {
        static const char *texts[] = {"Hello world", " 12345 caf\xc3\xa9\n\n<s>x</s>", "\xe2\x96\x81\t ab  ba"};
        for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
            int32_t *ids = NULL;
            int n = 0;
            if (lmoe_tokenizer_encode(t, texts[k], strlen(texts[k]), 1, &ids, &n, err, sizeof err) == 0) {
                char buf[64];
                for (int i = 0; i < n; i++) {
                    int len = lmoe_tokenizer_decode(t, ids[i], buf, sizeof buf);
                    if (len < 0) abort(); /* an id the encoder gave must decode */
                    sink += (size_t)len;
                }
            }
            free(ids);
        }
        lmoe_tokenizer_close(t);
    }
    return 0;
}
