# Entry points. `make demo` and `make test` work on a fresh Debian 12 machine
# as root: they install what is missing, build, and run.
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?=

.PHONY: all deps build demo test unit integration format tidy clean

all: build

deps:
	./scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

demo: build
	$(BUILD)/bin/vmfactory run -v -- uname -a

test: build
	cd $(BUILD) && ctest -j$(JOBS) --output-on-failure --timeout 600

unit: build
	cd $(BUILD) && ctest -j$(JOBS) -L unit --output-on-failure

integration: build
	cd $(BUILD) && ctest -j$(JOBS) -L integration --output-on-failure

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

tidy: $(BUILD)/CMakeCache.txt
	clang-tidy -p $(BUILD) $$(git ls-files 'src/*.cc' 'agent/*.cc')

clean:
	rm -rf $(BUILD)
