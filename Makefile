# Thin wrapper around Meson + Ninja. See README.md.
#   make            build (release, hardened) into build/
#   make check      install deps, build normal + ASan/UBSan (+ fuzz with
#                   clang), run every test; ends "N passed, N failed, N skipped"
#   make demo       the main job: a lazily fetched, encrypted disk in a
#                   QEMU guest (scripts/demo)
#   make fuzz       run the libFuzzer targets for FUZZ_SECONDS (default 600)

BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 600
CHECK_FUZZ_SECONDS ?= 30

.PHONY: all build asan fuzz-build deps check demo fuzz clean format

all: build

deps:
	@./scripts/install-deps

$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=release

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) --buildtype=debug -Doptimization=1 \
		-Db_sanitize=address,undefined -Db_lundef=false \
		-Dc_args=-fno-sanitize-recover=all -Dc_link_args=-fno-sanitize-recover=all

$(FUZZ_BUILD)/build.ninja:
	CC=clang meson setup $(FUZZ_BUILD) --buildtype=debug -Doptimization=1 \
		-Db_sanitize=address,undefined -Db_lundef=false -Dfuzz=true -Dtests=disabled \
		-Dc_args=-fno-sanitize-recover=all -Dc_link_args=-fno-sanitize-recover=all

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

asan: $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)

fuzz-build: $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD)

# The fuzz smoke run needs clang; without it the driver prints SKIP.
check: deps
	$(MAKE) build asan
	@if command -v clang >/dev/null 2>&1; then $(MAKE) fuzz-build && \
		fuzzarg="--fuzz-build $(FUZZ_BUILD) --fuzz-seconds $(CHECK_FUZZ_SECONDS)"; \
	else fuzzarg=""; fi; \
	./tests/run-tests --build $(BUILD) --build $(ASAN_BUILD) $$fuzzarg

fuzz: deps fuzz-build
	./tests/run-tests --only fuzz --fuzz-build $(FUZZ_BUILD) --fuzz-seconds $(FUZZ_SECONDS)

demo: deps build
	./scripts/demo --build $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
