#include "test.h"

void test_model(void) {}
