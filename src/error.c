/*
 * error.c - names of result codes and the one-line message helper.
 */
#include <stdarg.h>
#include <stdio.h>

#include "leanmoe.h"
#include "error.h"

const char *lmoe_strerror(int code) {
    switch (code) {
    case LMOE_OK: return "ok";
    case LMOE_ERR_IO: return "i/o error";
    case LMOE_ERR_FORMAT: return "malformed file";
    case LMOE_ERR_UNSUPPORTED: return "unsupported";
    case LMOE_ERR_NOMEM: return "out of memory";
    case LMOE_ERR_ARG: return "bad argument";
    case LMOE_ERR_CTX_FULL: return "context full";
    case LMOE_ERR_KV_FULL: return "KV pool full";
    }
    return "unknown error";
}

int lmoe_errf(char *err, size_t errlen, int code, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}
