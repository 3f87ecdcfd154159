/*
 * chat.h - chat formats: turning a conversation into the exact prompt text a
 * model was trained on (internal; the public entry is lmoe_chat_render).
 */
#ifndef LMOE_CHAT_H
#define LMOE_CHAT_H

#include <stddef.h>

struct lmoe_chat_msg;

enum lmoe_chat_format {
    LMOE_CHAT_PLAIN = 0,  /* no template: "role: text" lines */
    LMOE_CHAT_DEEPSEEK2,  /* DeepSeek-V2 / V2-Lite: "User: ...\n\nAssistant: ..." */
    LMOE_CHAT_DEEPSEEK3,  /* DeepSeek-V3 / R1, Kimi-K2-like: <｜User｜>...<｜Assistant｜> */
    LMOE_CHAT_CHATML,     /* Qwen2/3: <|im_start|>role\n...<|im_end|> */
    LMOE_CHAT_LLAMA3,     /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    LMOE_CHAT_MISTRAL,    /* [INST] ... [/INST] ...</s> */
};

/* Picks the format from a Jinja chat template's text (may be NULL) and the
 * architecture name. */
enum lmoe_chat_format lmoe_chat_detect(const char *tmpl, size_t len, const char *arch);
const char *lmoe_chat_format_name(enum lmoe_chat_format f);

/* Renders msgs into a malloc'd NUL-terminated string (caller frees). bos is
 * the text of the BOS token, written where the format puts it ("" when the
 * model adds BOS by itself). With add_assistant, ends with the header that
 * asks the model for the next assistant turn. NULL on allocation failure. */
char *lmoe_chat_format_render(enum lmoe_chat_format f, const struct lmoe_chat_msg *msgs, int n,
                              int add_assistant, const char *bos, const char *eos);

#endif
