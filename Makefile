# leanmoe - the front door. `make help` lists the targets.
#
#   make            build/leanmoe and build/liblmoe.a (optimised)
#   make test       the test runner under AddressSanitizer + UBSan, then run it
#   make fuzz       libFuzzer targets (clang), run each for FUZZ_SECONDS
#   make deps       install the Debian packages the build and tests need
#   make format     clang-format every C file in place

CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    := -std=c11 -Wall -Wextra -Wshadow -Wno-unused-parameter -ffp-contract=off
ifeq ($(CI),true)
WARN    += -Werror
endif
CPPFLAGS := -D_GNU_SOURCE -Iinclude -Isrc -Iserver
LDLIBS  := -lpcre2-8 -lm -lpthread -lmicrohttpd -ljansson -lutf8proc

SHARED_DATA ?= $(abspath ../shared/data)
B := build

LIB_SRC := $(sort $(wildcard src/*.c src/*/*.c))
CLI_SRC := $(sort $(wildcard cli/*.c) $(wildcard server/*.c))
TEST_SRC := $(sort $(wildcard tests/*.c))

# Only src/kernels/ holds processor-specific code; each ISA file gets its
# own flags and is entered only after a run-time CPU check.
ISA_FLAGS_x86_avx2   := -mavx2 -mfma -mf16c
ISA_FLAGS_x86_avx512 := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma -mf16c
isa_flags = $(ISA_FLAGS_$(basename $(notdir $(1))))

LIB_OBJ  := $(LIB_SRC:%.c=$(B)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(B)/obj/%.o)
SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SAN_OBJ  := $(LIB_SRC:%.c=$(B)/san/%.o) $(TEST_SRC:%.c=$(B)/san/%.o)
SAN_CLI_OBJ := $(LIB_SRC:%.c=$(B)/san/%.o) $(CLI_SRC:%.c=$(B)/san/%.o)

.PHONY: all test deps fuzz format help clean bench header-check
all: $(B)/leanmoe $(B)/liblmoe.a

$(B)/obj/%.o: %.c $(wildcard include/*.h src/*.h src/*/*.h cli/*.h server/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(WARN) $(CFLAGS) $(call isa_flags,$<) -c $< -o $@

$(B)/san/%.o: %.c $(wildcard include/*.h src/*.h src/*/*.h cli/*.h server/*.h tests/*.h tests/fuzz/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(WARN) -O1 -g $(SAN) $(call isa_flags,$<) \
	  -DLMOE_DEBUG -DLMOE_TEST_DIR='"$(abspath tests)"' -DLMOE_BUILD_DIR='"$(abspath $(B))"' -DLMOE_SHARED_DIR='"$(SHARED_DATA)"' \
	  -c $< -o $@

$(B)/liblmoe.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/leanmoe: $(CLI_OBJ) $(B)/liblmoe.a
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(B)/liblmoe.a $(LDLIBS)

# The runner and a sanitized copy of the program, which the cli suite runs.
$(B)/test_runner: $(SAN_OBJ)
	$(CC) $(SAN) -o $@ $^ $(LDLIBS)
$(B)/leanmoe-san: $(SAN_CLI_OBJ)
	$(CC) $(SAN) -o $@ $^ $(LDLIBS)

# Vocabulary GGUFs made from tokenizer.json files (tools/make_vocab_goldens.py)
# are committed gzipped; the tokenizer suite reads them from build/vocab/.
VOCABS := $(patsubst tests/golden/tokenizer/%.gguf.gz,$(B)/vocab/%.gguf,$(wildcard tests/golden/tokenizer/*.gguf.gz))
$(B)/vocab/%.gguf: tests/golden/tokenizer/%.gguf.gz
	@mkdir -p $(dir $@)
	gunzip -c $< > $@

# The public header on its own: strict C99 and C++, no warnings.
header-check:
	$(CC) -std=c99 -pedantic -Wall -Wextra -Werror -Iinclude -fsyntax-only tests/header/header_only.c
	g++ -x c++ -std=c++11 -Wall -Wextra -Werror -Iinclude -fsyntax-only tests/header/header_only.c

test: header-check $(B)/test_runner $(B)/leanmoe-san $(B)/leanmoe $(VOCABS)   ## run every suite under ASan+UBSan
	ASAN_OPTIONS=detect_leaks=1 $(B)/test_runner

FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(basename $(notdir $(wildcard tests/fuzz/fuzz_*.c)))
# The library is instrumented object by object (ISA files keep their flags)
# and linked from an archive, so a target pulls in only what it calls. UB is
# fatal, as in make test; crash reproducers land in $(B)/fuzz/.
FUZZ_FLAGS := -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined
$(B)/fuzz/obj/%.o: %.c $(wildcard include/*.h src/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	clang $(CPPFLAGS) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link $(call isa_flags,$<) -c $< -o $@
$(B)/fuzz/liblmoe.a: $(LIB_SRC:%.c=$(B)/fuzz/obj/%.o)
	@rm -f $@
	ar rcs $@ $^
$(B)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(B)/fuzz/liblmoe.a
	clang $(CPPFLAGS) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $< $(B)/fuzz/liblmoe.a $(LDLIBS)
fuzz: $(FUZZ_TARGETS:%=$(B)/fuzz/%)  ## build the libFuzzer targets and run each for FUZZ_SECONDS
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(B)/fuzz/$$t.corpus; \
	  $(B)/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=$(B)/fuzz/$$t- \
	    $(B)/fuzz/$$t.corpus tests/fuzz/$${t#fuzz_}_seeds || exit 1; \
	done

# Benchmarks are tools, not tests: see BENCHMARKS.md for the models and
# the side-by-side comparison with llama.cpp (bench/compare.py).
bench: $(B)/leanmoe $(B)/bench_kernels  ## kernel throughput, then leanmoe bench on the built-in model
	$(B)/bench_kernels
	$(B)/leanmoe bench
$(B)/bench_kernels: bench/bench_kernels.c $(B)/liblmoe.a
	$(CC) $(CPPFLAGS) $(WARN) -O2 -o $@ $< $(B)/liblmoe.a $(LDLIBS)

deps:  ## install build and test dependencies (Debian)
	apt-get update && apt-get install -y --no-install-recommends build-essential clang libpcre2-dev libmicrohttpd-dev libjansson-dev libutf8proc-dev
	python3 -m pip install --quiet openai requests || python3 -m pip install --quiet --break-system-packages openai requests || echo 'pip failed: the server tests will skip the openai client'

format:  ## clang-format every C source in place
	clang-format -i $(LIB_SRC) $(CLI_SRC) $(TEST_SRC) include/*.h src/*/*.h

help:  ## list targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

clean:
	rm -rf $(B)
