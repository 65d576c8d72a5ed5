# Entry points. `make demo` and `make test` work on a fresh Debian 12 machine
# as root: they install what is missing, build, and run.
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?=

.PHONY: all deps build demo test unit integration install test-asan test-tsan format tidy clean

all: build

deps:
	./scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

# Into PREFIX (default /usr/local): bin/vmfactory, bin/vmfactory-proxy,
# lib/vmfactory/libvmf-readonly-open.so, share/vmfactory/guest/.
PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

demo: build
	$(BUILD)/bin/vmfactory run -v -- uname -a

test: build
	cd $(BUILD) && ctest -j$(JOBS) --output-on-failure --timeout 600

# The unit tests alone: no guest image, so no kernel package is fetched.
unit: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS) --target unit-tests
	cd $(BUILD) && ctest -j$(JOBS) -L unit --output-on-failure

integration: build
	cd $(BUILD) && ctest -j$(JOBS) -L integration --output-on-failure

# Sanitizer variants, each in a build dir of its own (see README, Testing).
# test-asan: every test under ASan + LSan + UBSan. test-tsan: the unit tests
# and the integration tests of the daemon, pool, templates and proxy traffic
# under TSan. Any report fails the run.
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
TSAN_TESTS ?= ^unit\.|^integration\.(Daemon|DaemonConfig|Template|BadTemplate|Exec)Test\.

test-asan: deps
	./scripts/test-sanitized.sh address $(ASAN_BUILD) $(JOBS)

test-tsan: deps
	./scripts/test-sanitized.sh thread $(TSAN_BUILD) $(JOBS) '$(TSAN_TESTS)'

# Fuzzing (fuzz/README.md): builds the libFuzzer targets with clang in
# $(FUZZ_BUILD) and runs each for FUZZ_SECONDS; fails on any crash, hang or leak.
.PHONY: fuzz
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 300

fuzz:
	JOBS=$(JOBS) ./fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

# clang-tidy (checks in .clang-tidy) over src/, agent/ and the unit tests,
# with the headers they include; any warning fails the target. The generated
# protobuf headers must exist first.
CLANG_TIDY ?= clang-tidy
tidy: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) --target vmf_proto
	git ls-files 'src/*.cc' 'agent/*.cc' 'tests/unit/*.cc' | \
	  xargs -P$(JOBS) -n4 $(CLANG_TIDY) -p $(BUILD) --quiet --warnings-as-errors='*'

clean:
	rm -rf $(BUILD)
