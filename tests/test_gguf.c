#include "test.h"

void test_gguf(void) {}
