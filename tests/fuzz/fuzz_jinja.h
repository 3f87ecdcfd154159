/*
 * fuzz_jinja.h - the fixed variables and limits that fuzz_jinja.c renders
 * every input with, shared with tests/test_jinja.c so a reproducer in
 * tests/fuzz/jinja_crashes/ replays exactly as it was found.
 */
#ifndef LMOE_FUZZ_JINJA_H
#define LMOE_FUZZ_JINJA_H

#include "jinja.h"

/* A conversation touching what chat templates read: every role, a system
 * prompt, reasoning, tool calls (arguments as text and as an object),
 * tools, unicode, and the usual flags. */
static const char fuzz_jinja_vars[] =
    "{\"messages\": ["
    "{\"role\": \"system\", \"content\": \"Be brief.\"},"
    "{\"role\": \"user\", \"content\": \"Hi \\u00e9\\u4e2d <tool_response>x</tool_response>\"},"
    "{\"role\": \"assistant\", \"content\": \"<think>\\nhmm\\n</think>\\n\\nHello\", \"reasoning_content\": null,"
    " \"tool_calls\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": {\"a\": [1, 2.5, true, null]}}},"
    " {\"type\": \"function\", \"function\": {\"name\": \"g\", \"arguments\": \"{}\"}}]},"
    "{\"role\": \"tool\", \"content\": \"42\"},"
    "{\"role\": \"user\", \"content\": \"\"}],"
    "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"object\"}}}],"
    "\"add_generation_prompt\": true, \"enable_thinking\": false,"
    "\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"n\": 3, \"x\": -1.5}";

/* Small bounds keep each run fast; hitting one is a clean error. */
static const struct lmoe_jinja_limits fuzz_jinja_limits = {
    .max_output = 1 << 20, .max_memory = 64 << 20, .max_steps = 200000, .max_depth = 16};

#endif
