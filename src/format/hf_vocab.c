/*
 * hf_vocab.c - a Hugging Face tokenizer as the tokenizer.* keys of a GGUF
 * file, written as llama.cpp's convert_hf_to_gguf.py (with gguf-py's
 * SpecialVocab) writes them for DeepSeek-V2/V3, Qwen2/3(-MoE), Llama and
 * Mixtral folders, so that llama.cpp and leanmoe's GGUF tokenizer read the
 * same vocabulary the folder's tokenizer.json describes.
 *
 * The tokenizer itself is read by lmoe_tokenizer_open_json (tokenizer_json.c):
 * it checks that the pipeline is one we run, and gives each id its text and
 * kind. What that handle does not keep, because encoding never needs it, is
 * read here from the same files: the merges in file order, the pre-tokenizer
 * patterns, the post-processor and the tokenizer_config.json fields.
 *
 * Byte-level BPE (model "gpt2", every architecture above):
 *   tokens      id order, [PAD<i>] for ids without a token up to n_vocab
 *   token_type  NORMAL; added tokens CONTROL when marked special or when they
 *               look special (<|...|>, <｜...｜>, <pad>, ...), else
 *               USER_DEFINED with U+2581 turned into spaces; UNUSED padding
 *   pre         the llama.cpp name of the pre-tokenizer, recognised from its
 *               Split regexes (hf_vocab_pre_name). The converter hashes the
 *               ids of a test text instead; the regexes are what decide those
 *               ids, and a name is given only where they are exactly the ones
 *               llama.cpp implements under it
 *   merges      as tokenizer.json lists them; ["a", "b"] pairs are joined
 *               with a space, spaces inside a part written as U+0120
 * SentencePiece-style BPE (model "llama": byte_fallback, a Sequence decoder;
 * only for Llama and Mixtral, as the converter does):
 *   tokens, token_type  BYTE for <0xNN>, UNKNOWN for the unk token, CONTROL
 *               for special added tokens, USER_DEFINED for other added ones
 *   scores      -(rank of the first merge that makes the token), so that the
 *               highest-scoring pair llama.cpp merges first is the pair HF
 *               merges first; tokens no merge makes score below every merged
 *               one, in id order; special and byte tokens 0. This is where
 *               we differ from the converter: without tokenizer.model it
 *               writes -1000 for every token (LlamaHfVocab), with which
 *               llama.cpp's SentencePiece merge order becomes left to right.
 *               Ours are the scores a SentencePiece BPE model carries (its
 *               pieces are scored in merge order, as Llama 2's are).
 *   pre         "default"
 * Both:
 *   bos/eos/unk/sep/pad/mask/eot/eom ids, add_bos/add_eos/add_sep: gguf-py's
 *   SpecialVocab rules, in its order: the post-processor first (ByteLevel:
 *   no BOS/EOS; TemplateProcessing: the tokens around a single sequence),
 *   tokenizer_config.json next (its add_*_token only where the post-processor
 *   said nothing; its *_token texts looked up among the added tokens), then
 *   config.json's *_token_id for what is still unset.
 *   chat_template: tokenizer_config.json's (a list gives the "default" one
 *   and tokenizer.chat_template.<name> for the others), else
 *   chat_template.jinja, else chat_template.json.
 *   normalizer.lowercase / strip_accents where the normalizer has them.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "format/gguf.h"
#include "format/gguf_write.h"
#include "format/hf_vocab.h"
#include "leanmoe.h"
#include "tokenizer.h"

/* ---- Pre-tokenizer names ------------------------------------------------ */

/* The Split regexes of the tokenizer.json files llama.cpp names, with CR and
 * LF written as \r and \n (some files hold them as raw characters). */
#define RE_LLAMA3_HEAD "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
#define RE_LLAMA3_TAIL "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
static const char *const pre_llama3[] = {RE_LLAMA3_HEAD "\\p{N}{1,3}" RE_LLAMA3_TAIL, NULL};
static const char *const pre_qwen2[] = {RE_LLAMA3_HEAD "\\p{N}" RE_LLAMA3_TAIL, NULL};
static const char *const pre_deepseek_v3[] = {
    "\\p{N}{1,3}",
    "[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf]+", /* [一-龥぀-ゟ゠-ヿ]+ */
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    NULL};

static const struct {
    const char *name;
    const char *const *re;
} known_pre[] = {{"llama-bpe", pre_llama3}, {"qwen2", pre_qwen2}, {"deepseek-v3", pre_deepseek_v3}};

#define MAX_SPLITS 16

/* The pre-tokenizer's Split patterns in order, normalised; *byte_level and
 * *bl_regex say whether a ByteLevel step is there and runs its own regex.
 * Returns the number of splits, or -1 for a step that is neither. */
struct pre_info {
    char *split[MAX_SPLITS];
    int n_split, byte_level, bl_regex, digits, other;
};

static void pre_collect(struct pre_info *p, const json_t *pt, int depth) {
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (!type || depth > 4) return;
    if (!strcmp(type, "Sequence")) {
        size_t i;
        const json_t *it;
        json_array_foreach(json_object_get(pt, "pretokenizers"), i, it) pre_collect(p, it, depth + 1);
    } else if (!strcmp(type, "Split")) {
        const char *re = json_string_value(json_object_get(json_object_get(pt, "pattern"), "Regex"));
        const char *behavior = json_string_value(json_object_get(pt, "behavior"));
        /* llama.cpp's regexes isolate their matches; another behavior, or an
         * inverted split, cuts the text differently under the same regex. */
        if (!re || p->n_split == MAX_SPLITS || !behavior || strcmp(behavior, "Isolated") ||
            json_is_true(json_object_get(pt, "invert"))) {
            p->other = 1;
            return;
        }
        char *s = malloc(2 * strlen(re) + 1), *o = s;
        if (!s) {
            p->other = 1;
            return;
        }
        for (const char *c = re; *c; c++) {
            if (*c == '\r' || *c == '\n') {
                *o++ = '\\';
                *o++ = *c == '\r' ? 'r' : 'n';
            } else {
                *o++ = *c;
            }
        }
        *o = 0;
        p->split[p->n_split++] = s;
    } else if (!strcmp(type, "ByteLevel")) {
        const json_t *ur = json_object_get(pt, "use_regex");
        p->byte_level = 1;
        p->bl_regex = !json_is_false(ur); /* tokenizers' default is true */
        /* A prefix space (also on by default) is no step of llama.cpp's
         * pre-tokenizers: " " + text would be split where llama.cpp has none. */
        if (!json_is_false(json_object_get(pt, "add_prefix_space"))) p->other = 1;
    } else if (!strcmp(type, "Digits")) {
        p->digits = 1;
    } else {
        p->other = 1;
    }
}

static int splits_are(const struct pre_info *p, const char *const *re) {
    int n = 0;
    while (re[n]) n++;
    if (n != p->n_split) return 0;
    for (int i = 0; i < n; i++)
        if (strcmp(p->split[i], re[i])) return 0;
    return 1;
}

static int has_split(const struct pre_info *p, const char *re) {
    for (int i = 0; i < p->n_split; i++)
        if (!strcmp(p->split[i], re)) return 1;
    return 0;
}

const char *hf_vocab_pre_name(const void *root) {
    struct pre_info p = {0};
    pre_collect(&p, json_object_get(root, "pre_tokenizer"), 0);
    const char *name = NULL;
    if (p.byte_level && !p.other) {
        if (p.n_split == 0 && p.bl_regex && !p.digits) name = "gpt-2";
        for (size_t i = 0; !name && !p.bl_regex && !p.digits && i < sizeof known_pre / sizeof known_pre[0]; i++)
            if (splits_are(&p, known_pre[i].re)) name = known_pre[i].name;
        /* DeepSeek LLM and Coder: recognised by their first splits, as no
         * tokenizer.json of theirs is at hand to compare whole patterns. */
        if (!name && !p.bl_regex && p.n_split >= 4 && !strcmp(p.split[0], "[\\r\\n]")) {
            if (has_split(&p, "\\s+$")) name = "deepseek-llm";
            else if (has_split(&p, "\\s?\\p{L}+") && has_split(&p, "\\s?\\p{P}+")) name = "deepseek-coder";
        }
    }
    for (int i = 0; i < p.n_split; i++) free(p.split[i]);
    return name;
}

/* ---- Reading the files -------------------------------------------------- */

/* dir/name as a JSON object; NULL when the file is absent. A file that is
 * there but not a JSON object is an error (*rc). Integers too big for
 * jansson (transformers writes model_max_length = 1e30 as one) make the
 * file be read again with every integer as a double; no field read from
 * such a file needs an integer. */
static json_t *read_json(const char *dir, const char *name, int *rc, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    if (stat(path, &st) != 0) return NULL;
    json_error_t je;
    json_t *j = json_load_file(path, JSON_ALLOW_NUL, &je);
    if (!j && strstr(je.text, "too big integer")) j = json_load_file(path, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &je);
    if (!j || !json_is_object(j)) {
        *rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: %s", path, j ? "not a JSON object" : je.text);
        json_decref(j);
        return NULL;
    }
    return j;
}

/* A whole text file, NUL-terminated; NULL when absent. */
static char *read_text(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0, got;
    char chunk[65536];
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (n + got + 1 > cap) {
            cap = 2 * (n + got + 1);
            char *b = realloc(buf, cap);
            if (!b) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = b;
        }
        memcpy(buf + n, chunk, got);
        n += got;
    }
    fclose(f);
    if (!buf) buf = calloc(1, 1);
    else buf[n] = 0;
    return buf;
}

/* ---- Token types -------------------------------------------------------- */

/* The converter's does_token_look_special: texts that ought to be control
 * tokens even where a tokenizer does not mark them special. */
static int looks_special(const char *s) {
    size_t n = strlen(s);
#define ENDS(x) (n >= sizeof(x) - 1 && !strcmp(s + n - (sizeof(x) - 1), x))
#define STARTS(x) (!strncmp(s, x, sizeof(x) - 1))
    if (!strcmp(s, "<pad>") || !strcmp(s, "<mask>") || !strcmp(s, "<2mass>") || !strcmp(s, "[@BOS@]")) return 1;
    if (n >= 4 && STARTS("<|") && ENDS("|>")) return 1;
    if (n >= 8 && STARTS("<\xef\xbd\x9c") && ENDS("\xef\xbd\x9c>")) return 1; /* <｜ ... ｜> */
    return n >= 8 && STARTS("<unused") && ENDS(">");
#undef ENDS
#undef STARTS
}

/* Each U+2581 of s as a space: a new string. */
static char *meta_to_spaces(const char *s) {
    char *o = malloc(strlen(s) + 1), *p = o;
    if (!o) return NULL;
    while (*s) {
        if (!strncmp(s, "\xe2\x96\x81", 3)) {
            *p++ = ' ';
            s += 3;
        } else {
            *p++ = *s++;
        }
    }
    *p = 0;
    return o;
}

static int is_byte_token(const char *s) {
    static const char hex[] = "0123456789abcdefABCDEF";
    return strlen(s) == 6 && !strncmp(s, "<0x", 3) && s[5] == '>' && strchr(hex, s[3]) && strchr(hex, s[4]);
}

/* ---- Special tokens: gguf-py's SpecialVocab ----------------------------- */

enum { SP_BOS, SP_EOS, SP_UNK, SP_SEP, SP_PAD, SP_CLS, SP_MASK, SP_EOT, SP_EOM, SP_N };
static const char *const sp_name[SP_N] = {"bos", "eos", "unk", "sep", "pad", "cls", "mask", "eot", "eom"};
/* The GGUF key of each id (cls has none: gguf-py skips it). */
static const char *const sp_key[SP_N] = {
    "tokenizer.ggml.bos_token_id",       "tokenizer.ggml.eos_token_id",     "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id", NULL,
    "tokenizer.ggml.mask_token_id",      "tokenizer.ggml.eot_token_id",     "tokenizer.ggml.eom_token_id"};

/* Both dictionaries of SpecialVocab, with their insertion order. */
struct special {
    int types[SP_N], n_types; /* special_token_types */
    int64_t id[SP_N];
    int has_id[SP_N], id_order[SP_N], n_ids;
    int add[SP_N], has_add[SP_N], add_order[SP_N], n_adds;
    int64_t n_vocab; /* 0: no range check */
};

static void sp_set_add(struct special *s, int typ, int v) {
    if (!s->has_add[typ]) s->add_order[s->n_adds++] = typ;
    s->has_add[typ] = 1;
    s->add[typ] = v;
}

static void sp_setdefault_add(struct special *s, int typ, int v) {
    if (!s->has_add[typ]) sp_set_add(s, typ, v);
}

/* _set_special_token: the first id of a type wins; ids past n_vocab are
 * skipped. A negative id is an error, as in gguf-py. */
static int sp_set_id(struct special *s, int typ, const json_t *v) {
    if (!json_is_integer(v)) return 0;
    json_int_t id = json_integer_value(v);
    if (id < 0) return -1;
    if (s->n_vocab && id >= s->n_vocab) return 0;
    if (s->has_id[typ]) return 0;
    s->has_id[typ] = 1;
    s->id[typ] = id;
    s->id_order[s->n_ids++] = typ;
    return 0;
}

static int sp_has_type(const struct special *s, int typ) {
    for (int i = 0; i < s->n_types; i++)
        if (s->types[i] == typ) return 1;
    return 0;
}

/* Python's truth value of a JSON value (absent counts as None). */
static int truthy(const json_t *v) {
    if (!v || json_is_null(v) || json_is_false(v)) return 0;
    if (json_is_string(v)) return json_string_length(v) > 0;
    if (json_is_object(v)) return json_object_size(v) > 0;
    if (json_is_array(v)) return json_array_size(v) > 0;
    if (json_is_integer(v)) return json_integer_value(v) != 0;
    if (json_is_real(v)) return json_real_value(v) != 0;
    return 1;
}

/* Python's ==, with absent as None. */
static int pyeq(const json_t *a, const json_t *b) {
    int an = !a || json_is_null(a), bn = !b || json_is_null(b);
    if (an || bn) return an && bn;
    return json_equal((json_t *)a, (json_t *)b);
}

static const json_t *special_token_id(const json_t *item) {
    return json_object_get(json_object_get(item, "SpecialToken"), "id");
}

static const json_t *sequence_id(const json_t *item) {
    return json_object_get(json_object_get(item, "Sequence"), "id");
}

/* _try_load_from_tokenizer_json's TemplateProcessing branch: which special
 * tokens wrap a single sequence (and a pair), and what that makes of the
 * config's bos/eos/cls/sep. */
static void sp_template(struct special *s, const json_t *proc, json_t *cfg, json_t **bos, json_t **cls,
                        json_t **eos, json_t **sep) {
    const json_t *single = json_object_get(proc, "single"), *pair = json_object_get(proc, "pair");
    size_t ns = json_array_size(single);
    json_t *first = NULL, *last = NULL;
    int have_cfg = truthy(cfg);
    if (ns > 1) {
        first = (json_t *)special_token_id(json_array_get(single, 0));
        if (truthy(first)) {
            if (!have_cfg) {
                *bos = first;
            } else if (!pyeq(first, *bos) && !pyeq(first, *cls)) {
                if (!truthy(*bos)) json_object_set(cfg, "bos_token", first), *bos = first;
                if (!truthy(*cls)) json_object_set(cfg, "cls_token", first), *cls = first;
            }
            sp_set_add(s, SP_BOS, pyeq(first, *bos) || pyeq(first, *cls));
        } else {
            first = NULL;
        }
        last = (json_t *)special_token_id(json_array_get(single, ns - 1));
        if (truthy(last)) {
            if (!have_cfg) {
                *eos = last;
            } else if (!pyeq(last, *eos)) {
                if (!sp_has_type(s, SP_EOT)) {
                    s->types[s->n_types++] = SP_EOT;
                    json_object_set(cfg, "eot_token", *eos ? *eos : json_null());
                } else if (!sp_has_type(s, SP_EOM)) {
                    s->types[s->n_types++] = SP_EOM;
                    json_object_set(cfg, "eom_token", *eos ? *eos : json_null());
                }
                json_object_set(cfg, "eos_token", last);
                *eos = last;
            }
            sp_set_add(s, SP_EOS, pyeq(last, *eos));
        } else {
            last = NULL;
        }
    }
    size_t np = json_array_size(pair);
    if (!np) return;
    size_t start = first && pyeq(special_token_id(json_array_get(pair, 0)), first) ? 1 : 0;
    size_t stop = last && pyeq(special_token_id(json_array_get(pair, np - 1)), last) ? np - 1 : np;
    if (stop <= start) return;
    const json_t *a = sequence_id(json_array_get(pair, start)), *b = sequence_id(json_array_get(pair, stop - 1));
    if (!json_is_string(a) || !json_is_string(b) || strcmp(json_string_value(a), "A") ||
        strcmp(json_string_value(b), "B") || stop - start <= 2)
        return;
    /* The middle of "A [sep] [eos] B". */
    size_t m0 = start + 1, nm = stop - start - 2;
    int add_sep = 0;
    const json_t *e = special_token_id(json_array_get(pair, m0));
    if (truthy(e) && (pyeq(e, *sep) || pyeq(e, *eos)) && !last) add_sep = 1;
    if (nm == 2) {
        e = special_token_id(json_array_get(pair, m0 + 1));
        if (truthy(e) && (pyeq(e, *sep) || pyeq(e, *eos))) add_sep = 1;
    }
    sp_set_add(s, SP_SEP, add_sep);
    if (add_sep && !truthy(*sep) && have_cfg) json_object_set(cfg, "sep_token", *eos ? *eos : json_null());
}

/* _try_load_from_tokenizer_json after the merges, and
 * _try_load_from_config_json. */
static int sp_load(struct special *s, const json_t *tok, json_t *cfg, const json_t *config) {
    json_t *bos = json_object_get(cfg, "bos_token"), *cls = json_object_get(cfg, "cls_token");
    json_t *eos = json_object_get(cfg, "eos_token"), *sep = json_object_get(cfg, "sep_token");
    if (!truthy(bos) && truthy(cls) && truthy(cfg)) json_object_set(cfg, "bos_token", cls), bos = cls;
    if (!truthy(eos) && truthy(sep) && truthy(cfg)) json_object_set(cfg, "eos_token", sep), eos = sep;
    const json_t *pp = json_object_get(tok, "post_processor");
    if (truthy(pp)) {
        const json_t *procs = json_object_get(pp, "processors");
        size_t n = procs ? json_array_size(procs) : 1;
        for (size_t i = 0; i < n; i++) {
            const json_t *proc = procs ? json_array_get(procs, i) : pp;
            const char *type = json_string_value(json_object_get(proc, "type"));
            if (!type) continue;
            if (!strcmp(type, "ByteLevel")) {
                sp_setdefault_add(s, SP_BOS, 0);
                sp_setdefault_add(s, SP_EOS, 0);
            } else if (!strcmp(type, "RobertaProcessing")) {
                sp_set_add(s, SP_BOS, 1);
                sp_set_add(s, SP_EOS, 1);
                sp_set_add(s, SP_SEP, 1);
                if (!truthy(cls) && truthy(cfg)) {
                    json_t *c = json_array_get(json_object_get(proc, "cls"), 0);
                    if (!json_object_get(proc, "cls")) c = bos;
                    json_object_set(cfg, "cls_token", c ? c : json_null());
                    cls = json_object_get(cfg, "cls_token");
                }
                if (!truthy(sep) && truthy(cfg)) {
                    json_t *c = json_array_get(json_object_get(proc, "sep"), 0);
                    if (!json_object_get(proc, "sep")) c = eos;
                    json_object_set(cfg, "sep_token", c ? c : json_null());
                    sep = json_object_get(cfg, "sep_token");
                }
            } else if (!strcmp(type, "TemplateProcessing")) {
                sp_template(s, proc, cfg, &bos, &cls, &eos, &sep);
            }
        }
    }
    if (truthy(cfg)) {
        const json_t *added = json_object_get(tok, "added_tokens");
        for (int k = 0; k < s->n_types; k++) {
            const int typ = s->types[k];
            char key[32];
            snprintf(key, sizeof key, "add_%s_token", sp_name[typ]);
            const json_t *v = json_object_get(cfg, key);
            if (json_is_boolean(v) && !s->has_add[typ]) sp_set_add(s, typ, json_is_true(v));
            snprintf(key, sizeof key, "%s_token", sp_name[typ]);
            v = json_object_get(cfg, key);
            if (json_is_object(v)) v = json_object_get(v, "content");
            if (!json_is_string(v)) continue;
            size_t i;
            const json_t *at;
            json_array_foreach(added, i, at) {
                if (pyeq(json_object_get(at, "content"), v)) {
                    if (sp_set_id(s, typ, json_object_get(at, "id"))) return -1;
                    break;
                }
            }
        }
    }
    for (int k = 0; config && k < s->n_types; k++) {
        char key[32];
        snprintf(key, sizeof key, "%s_token_id", sp_name[s->types[k]]);
        const json_t *v = json_object_get(config, key);
        if (!v) v = json_object_get(json_object_get(config, "text_config"), key);
        if (sp_set_id(s, s->types[k], v)) return -1;
    }
    return 0;
}

/* add_to_gguf after the merges: ids, add_* flags (bos, eos, sep have keys). */
static void sp_write(const struct special *s, struct gguf_writer *w) {
    for (int k = 0; k < s->n_ids; k++) {
        const int typ = s->id_order[k];
        if (sp_key[typ]) gguf_writer_set_u32(w, sp_key[typ], (uint32_t)s->id[typ]);
    }
    for (int k = 0; k < s->n_adds; k++) {
        const int typ = s->add_order[k];
        char key[64];
        if (typ != SP_BOS && typ != SP_EOS && typ != SP_SEP) continue;
        snprintf(key, sizeof key, "tokenizer.ggml.add_%s_token", sp_name[typ]);
        gguf_writer_set_bool(w, key, s->add[typ]);
    }
}

/* ---- Chat template and normalizer --------------------------------------- */

/* gguf-py's add_chat_template: a string, or a list of {name, template} of
 * which "default" is tokenizer.chat_template and the others get their own
 * keys (names reduced to [A-Za-z0-9_]). */
static int write_chat_template(struct gguf_writer *w, const json_t *ct) {
    if (json_is_string(ct)) return gguf_writer_set_str(w, "tokenizer.chat_template", json_string_value(ct));
    if (!json_is_array(ct)) return 0;
    const char *dflt = NULL;
    const char *names[64];
    char *owned[64];
    int n = 0;
    size_t i;
    const json_t *it;
    json_array_foreach(ct, i, it) {
        const char *name = json_string_value(json_object_get(it, "name"));
        const char *tmpl = json_string_value(json_object_get(it, "template"));
        if (!name || !*name || !tmpl) continue;
        char clean[128];
        snprintf(clean, sizeof clean, "%s", name);
        for (char *c = clean; *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9'))) *c = '_';
        if (!strcmp(clean, "default")) {
            dflt = tmpl;
            continue;
        }
        char key[192];
        snprintf(key, sizeof key, "tokenizer.chat_template.%s", clean);
        gguf_writer_set_str(w, key, tmpl);
        int dup = 0;
        for (int k = 0; k < n; k++) dup |= !strcmp(owned[k], clean);
        if (!dup && n < 64 && (owned[n] = strdup(clean))) names[n] = owned[n], n++;
    }
    if (n) gguf_writer_set_arr_str(w, "tokenizer.chat_templates", names, (uint64_t)n);
    for (int k = 0; k < n; k++) free(owned[k]);
    return dflt ? gguf_writer_set_str(w, "tokenizer.chat_template", dflt) : 0;
}

static void normalizer_flags(const json_t *nz, int *lower, int *strip, int depth) {
    const char *type = json_string_value(json_object_get(nz, "type"));
    if (!type || depth > 8) return;
    if (!strcmp(type, "Lowercase")) *lower = 1;
    else if (!strcmp(type, "StripAccents")) *strip = 1;
    else if (!strcmp(type, "BertNormalizer")) {
        const json_t *l = json_object_get(nz, "lowercase"), *s = json_object_get(nz, "strip_accents");
        if (l) *lower = json_is_true(l);
        if (s) *strip = json_is_true(s);
    } else if (!strcmp(type, "Sequence")) {
        size_t i;
        const json_t *it;
        json_array_foreach(json_object_get(nz, "normalizers"), i, it) normalizer_flags(it, lower, strip, depth + 1);
    }
}

/* ---- Merges ------------------------------------------------------------- */

/* tokenizer.json's merges as GGUF strings: "a b" as it is, ["a", "b"] as
 * "a b" with each space inside a part written as U+0120. NULL entries are
 * skipped by the caller; *n gets the count. */
static char **merge_strings(const json_t *merges, size_t *n) {
    size_t m = json_array_size(merges);
    char **out = calloc(m ? m : 1, sizeof(*out));
    *n = 0;
    if (!out) return NULL;
    size_t i;
    const json_t *it;
    json_array_foreach(merges, i, it) {
        if (json_is_string(it)) {
            out[*n] = strdup(json_string_value(it));
        } else if (json_is_array(it) && json_array_size(it) == 2) {
            const char *a = json_string_value(json_array_get(it, 0)), *b = json_string_value(json_array_get(it, 1));
            if (!a || !b) continue;
            char *s = malloc(2 * (strlen(a) + strlen(b)) + 2), *o = s;
            if (s) {
                for (const char *c = a; *c; c++) {
                    if (*c == ' ') *o++ = '\xc4', *o++ = '\xa0';
                    else *o++ = *c;
                }
                *o++ = ' ';
                for (const char *c = b; *c; c++) {
                    if (*c == ' ') *o++ = '\xc4', *o++ = '\xa0';
                    else *o++ = *c;
                }
                *o = 0;
            }
            out[*n] = s;
        } else {
            continue;
        }
        if (!out[*n]) {
            for (size_t k = 0; k < *n; k++) free(out[k]);
            free(out);
            return NULL;
        }
        (*n)++;
    }
    return out;
}

/* ---- The whole vocabulary ----------------------------------------------- */

struct vocab {
    const char **text; /* [n] */
    char **owned;      /* [n] texts made here, freed at the end */
    int32_t *type;     /* [n] */
    float *score;      /* [n], SPM only */
    int64_t n;
};

static void vocab_free(struct vocab *v) {
    for (int64_t i = 0; v->owned && i < v->n; i++) free(v->owned[i]);
    free(v->owned);
    free(v->text);
    free(v->type);
    free(v->score);
}

static int vocab_alloc(struct vocab *v, int64_t n) {
    v->n = n;
    v->text = calloc((size_t)n, sizeof(*v->text));
    v->owned = calloc((size_t)n, sizeof(*v->owned));
    v->type = calloc((size_t)n, sizeof(*v->type));
    v->score = calloc((size_t)n, sizeof(*v->score));
    return v->text && v->owned && v->type && v->score ? 0 : LMOE_ERR_NOMEM;
}

/* Token i's piece and its kind in the handle, or NULL for an id past the
 * handle's vocabulary or one it leaves undefined. */
static const char *vocab_piece(const struct lmoe_tokenizer *t, int n_tok, int64_t i, int *kind) {
    *kind = i < n_tok ? lmoe_tokenizer_token_type(t, (int32_t)i) : LMOE_TOKEN_TYPE_UNDEFINED;
    return *kind != LMOE_TOKEN_TYPE_UNDEFINED ? lmoe_tokenizer_piece(t, (int32_t)i, NULL) : NULL;
}

/* An id with no token: "[PADi]", UNUSED, as the converter fills the rows
 * past a tokenizer's vocabulary. */
static int vocab_pad(struct vocab *v, int64_t i) {
    char pad[32];
    snprintf(pad, sizeof pad, "[PAD%lld]", (long long)i);
    if (!(v->owned[i] = strdup(pad))) return LMOE_ERR_NOMEM;
    v->text[i] = v->owned[i];
    v->type[i] = LMOE_TOKEN_TYPE_UNUSED;
    return 0;
}

/* The byte-level vocabulary as get_vocab_base builds it. */
static int vocab_bpe(struct vocab *v, const struct lmoe_tokenizer *t) {
    const int n_tok = lmoe_tokenizer_n_vocab(t);
    for (int64_t i = 0; i < v->n; i++) {
        int kind;
        const char *s = vocab_piece(t, n_tok, i, &kind);
        if (!s) {
            if (vocab_pad(v, i)) return LMOE_ERR_NOMEM;
        } else if (kind == LMOE_TOKEN_TYPE_CONTROL || kind == LMOE_TOKEN_TYPE_USER_DEFINED) {
            /* an added token: special (CONTROL in the handle) or looking so */
            if (kind == LMOE_TOKEN_TYPE_CONTROL || looks_special(s)) {
                v->text[i] = s;
                v->type[i] = LMOE_TOKEN_TYPE_CONTROL;
            } else {
                if (!(v->owned[i] = meta_to_spaces(s))) return LMOE_ERR_NOMEM;
                v->text[i] = v->owned[i];
                v->type[i] = LMOE_TOKEN_TYPE_USER_DEFINED;
            }
        } else {
            v->text[i] = s;
            v->type[i] = LMOE_TOKEN_TYPE_NORMAL;
        }
    }
    return 0;
}

/* The SentencePiece-style vocabulary (see the file comment for the scores). */
static int vocab_spm(struct vocab *v, const struct lmoe_tokenizer *t, char *const *merges, size_t n_merges) {
    const int n_tok = lmoe_tokenizer_n_vocab(t);
    const int32_t unk = lmoe_tokenizer_unk(t);
    for (int64_t i = 0; i < v->n; i++) v->score[i] = 1.0f; /* 1: not yet scored */
    for (size_t r = 0; r < n_merges; r++) {
        /* "a b" -> the token a+b (U+0120 in a part stands for a space). */
        const char *sp = strchr(merges[r] + 1, ' ');
        if (!sp) continue;
        char joined[1024];
        size_t na = (size_t)(sp - merges[r]), nb = strlen(sp + 1);
        if (na + nb >= sizeof joined) continue;
        memcpy(joined, merges[r], na);
        memcpy(joined + na, sp + 1, nb + 1);
        const int32_t id = lmoe_tokenizer_find(t, joined, na + nb);
        if (id >= 0 && id < v->n && v->score[id] > 0) v->score[id] = -(float)r;
    }
    for (int64_t i = 0; i < v->n; i++) {
        int kind;
        const char *s = vocab_piece(t, n_tok, i, &kind);
        if (!s) {
            if (vocab_pad(v, i)) return LMOE_ERR_NOMEM;
            v->score[i] = -1000.0f;
            continue;
        }
        v->text[i] = s;
        if (i == unk) v->type[i] = LMOE_TOKEN_TYPE_UNKNOWN;
        else if (kind == LMOE_TOKEN_TYPE_CONTROL) v->type[i] = LMOE_TOKEN_TYPE_CONTROL;
        else if (kind == LMOE_TOKEN_TYPE_USER_DEFINED) v->type[i] = LMOE_TOKEN_TYPE_USER_DEFINED;
        else if (is_byte_token(s)) v->type[i] = LMOE_TOKEN_TYPE_BYTE;
        else v->type[i] = LMOE_TOKEN_TYPE_NORMAL;
        if (v->type[i] != LMOE_TOKEN_TYPE_NORMAL) v->score[i] = 0.0f;
        else if (v->score[i] > 0) v->score[i] = -(float)(n_merges + (size_t)i);
    }
    return 0;
}

/* Whether the converter takes the SentencePiece-style route: Llama-family
 * classes with a byte-fallback BPE and a Sequence decoder (LlamaHfVocab). */
static int spm_route(const char *arch, const json_t *tok) {
    const json_t *model = json_object_get(tok, "model");
    const char *dec = json_string_value(json_object_get(json_object_get(tok, "decoder"), "type"));
    return !strcmp(arch, "llama") && json_is_true(json_object_get(model, "byte_fallback")) && dec &&
           !strcmp(dec, "Sequence");
}

int hf_vocab_write(struct gguf_writer *w, const char *dir, const char *arch, int64_t n_vocab, int64_t *n_tokens,
                   char *err, size_t errlen) {
    struct lmoe_tokenizer *t = NULL;
    json_t *tok = NULL, *cfg = NULL, *config = NULL;
    char **merges = NULL;
    size_t n_merges = 0;
    struct vocab v = {0};
    int rc = lmoe_tokenizer_open_json(&t, dir, err, errlen);
    if (rc) return rc;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (!(tok = read_json(dir, "tokenizer.json", &rc, err, errlen))) {
        if (!rc) rc = lmoe_errf(err, errlen, LMOE_ERR_IO, "%s: cannot be read", path);
        goto done;
    }
    cfg = read_json(dir, "tokenizer_config.json", &rc, err, errlen);
    if (!rc) config = read_json(dir, "config.json", &rc, err, errlen);
    if (rc) goto done;

    const int spm = lmoe_tokenizer_model(t) == LMOE_TOKENIZER_SPM;
    if (spm && !spm_route(arch, tok)) {
        rc = lmoe_errf(err, errlen, LMOE_ERR_UNSUPPORTED,
                       "%s: a SentencePiece-style tokenizer is written only for llama (with byte_fallback and a "
                       "Sequence decoder), as llama.cpp's converter does; this model is %s",
                       path, arch);
        goto done;
    }
    const char *pre = spm ? "default" : hf_vocab_pre_name(tok);
    if (!pre) {
        rc = lmoe_errf(err, errlen, LMOE_ERR_UNSUPPORTED,
                       "%s: the pre-tokenizer is not one llama.cpp names (llama-bpe, qwen2, deepseek-v3, "
                       "deepseek-llm, deepseek-coder, gpt-2)",
                       path);
        goto done;
    }
    const int n_tok = lmoe_tokenizer_n_vocab(t);
    if (n_vocab <= 0) {
        const json_t *vs = json_object_get(config, "vocab_size");
        n_vocab = json_is_integer(vs) && json_integer_value(vs) > 0 ? json_integer_value(vs) : n_tok;
    }
    if (n_tok > n_vocab) {
        rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: token id %d is past the model's vocabulary of %lld", path,
                       n_tok - 1, (long long)n_vocab);
        goto done;
    }
    if (n_vocab > (int64_t)1 << 26) {
        rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: vocab_size %lld is implausible", path, (long long)n_vocab);
        goto done;
    }
    merges = merge_strings(json_object_get(json_object_get(tok, "model"), "merges"), &n_merges);
    if (!merges || vocab_alloc(&v, n_vocab)) {
        rc = lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "%s: out of memory for %lld tokens", path, (long long)n_vocab);
        goto done;
    }
    rc = spm ? vocab_spm(&v, t, merges, n_merges) : vocab_bpe(&v, t);
    if (rc) {
        rc = lmoe_errf(err, errlen, LMOE_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }

    gguf_writer_set_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", v.text, (uint64_t)v.n);
    if (spm) gguf_writer_set_arr_num(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, v.score, (uint64_t)v.n);
    gguf_writer_set_arr_num(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, v.type, (uint64_t)v.n);
    if (!spm && n_merges)
        gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, (uint64_t)n_merges);

    struct special sp = {.n_types = 7, .n_vocab = spm ? v.n : 0};
    for (int k = 0; k < 7; k++) sp.types[k] = k;
    if (sp_load(&sp, tok, cfg, config)) {
        rc = lmoe_errf(err, errlen, LMOE_ERR_FORMAT, "%s: a special token id is negative", dir);
        goto done;
    }
    sp_write(&sp, w);
    /* The chat template: tokenizer_config.json's key (even when null),
     * else chat_template.jinja, else chat_template.json. */
    if (truthy(cfg)) {
        const json_t *ct = json_object_get(cfg, "chat_template");
        char *jinja = NULL;
        json_t *ctj = NULL;
        if (!ct && (jinja = read_text(dir, "chat_template.jinja")))
            gguf_writer_set_str(w, "tokenizer.chat_template", jinja);
        else if (!ct && (ctj = read_json(dir, "chat_template.json", &rc, err, errlen)))
            write_chat_template(w, json_object_get(ctj, "chat_template"));
        else
            write_chat_template(w, ct);
        free(jinja);
        json_decref(ctj);
        if (rc) goto done;
    }
    int lower = -1, strip = -1;
    normalizer_flags(json_object_get(tok, "normalizer"), &lower, &strip, 0);
    if (lower >= 0) gguf_writer_set_bool(w, "tokenizer.ggml.normalizer.lowercase", lower);
    if (strip >= 0) gguf_writer_set_bool(w, "tokenizer.ggml.normalizer.strip_accents", strip);
    if (n_tokens) *n_tokens = v.n;
    rc = gguf_writer_status(w);
    if (rc) lmoe_errf(err, errlen, rc, "%s", gguf_writer_error(w));
done:
    for (size_t i = 0; merges && i < n_merges; i++) free(merges[i]);
    free(merges);
    vocab_free(&v);
    json_decref(tok);
    json_decref(cfg);
    json_decref(config);
    lmoe_tokenizer_close(t);
    return rc;
}
