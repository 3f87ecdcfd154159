/*
 * error.h - internal helpers for one-line error messages.
 */
#ifndef LMOE_ERROR_H
#define LMOE_ERROR_H

#include <stddef.h>

/* Formats a message into err (if not NULL) and returns code, so callers can
 * write `return lmoe_errf(err, n, LMOE_ERR_FORMAT, "gguf: ...", ...);`. */
int lmoe_errf(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Debug-build invariant checks; compiled out of release builds. */
#ifdef LMOE_DEBUG
#include <assert.h>
#define LMOE_ASSERT(x) assert(x)
#else
#define LMOE_ASSERT(x) ((void)0)
#endif

#endif
