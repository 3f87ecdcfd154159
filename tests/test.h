/*
 * test.h - the few macros every suite uses.
 *
 * A check that fails prints one line with file:line and what it saw; the
 * runner counts checks and ends with "N passed, N failed". Suites are plain
 * functions listed in tests/run.c.
 */
#ifndef LMOE_TEST_H
#define LMOE_TEST_H

#include <math.h>
#include <stdio.h>

extern int lmoe_test_passed, lmoe_test_failed;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (cond) {                                                            \
            lmoe_test_passed++;                                                \
        } else {                                                               \
            lmoe_test_failed++;                                                \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);   \
        }                                                                      \
    } while (0)

/* Like CHECK, with a printf-style explanation on failure. */
#define CHECKF(cond, ...)                                                      \
    do {                                                                       \
        if (cond) {                                                            \
            lmoe_test_passed++;                                                \
        } else {                                                               \
            lmoe_test_failed++;                                                \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);   \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
        }                                                                      \
    } while (0)

/* Where the repository's test data and ../shared/data live, set by the
 * Makefile so the runner works from any directory. */
#ifndef LMOE_TEST_DIR
#define LMOE_TEST_DIR "tests"
#endif
#ifndef LMOE_SHARED_DIR
#define LMOE_SHARED_DIR "../shared/data"
#endif

/* Reads a whole file into a malloc'd buffer; NULL if it cannot. */
void *test_read_file(const char *path, size_t *size);

#endif
