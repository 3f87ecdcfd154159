/*
 * test_server.c - the server suite: runs the black-box Python tests of
 * `leanmoe serve` (tests/server/test_server.py) against the sanitized
 * program and adds their counts to the runner's. Without python3 the suite
 * says it was skipped and counts nothing, so a missing interpreter never
 * reads as a pass.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "test.h"

#ifndef LMOE_BUILD_DIR
#define LMOE_BUILD_DIR "build"
#endif

void test_server(void) {
    if (system("command -v python3 >/dev/null 2>&1") != 0) {
        fprintf(stderr, "server: skipped (no python3)\n");
        return;
    }
    /* The script prints a line per test and ends with "N passed, N failed"
     * (", N skipped" when the openai package is missing). */
    FILE *p =
        popen("python3 " LMOE_TEST_DIR "/server/test_server.py --leanmoe " LMOE_BUILD_DIR "/leanmoe-san 2>&1", "r");
    CHECKF(p != NULL, "cannot start python3");
    if (!p) return;
    char line[4096];
    int passed = -1, failed = -1, skipped = 0;
    while (fgets(line, sizeof line, p)) {
        int a, b, c = 0;
        if (sscanf(line, "%d passed, %d failed, %d skipped", &a, &b, &c) >= 2) {
            passed = a;
            failed = b;
            skipped = c;
        } else if (strncmp(line, "ok   ", 5)) {
            fputs(line, stderr); /* failures and skips, verbatim */
        }
    }
    int st = pclose(p);
    CHECKF(passed >= 0, "test_server.py ended without its counts line (status %d)", st);
    if (passed < 0) return;
    lmoe_test_passed += passed;
    lmoe_test_failed += failed;
    /* A nonzero exit with no failure counted (a crash of the script itself)
     * is a failure too. */
    CHECKF(failed > 0 || (WIFEXITED(st) && WEXITSTATUS(st) == 0), "test_server.py exited with status %d", st);
    if (skipped) fprintf(stderr, "server: %d skipped (no openai package)\n", skipped);
}
