# dawnrun: `make demo` and `make test` do everything from a fresh clone (setup included).
SHELL := /bin/bash
ROOT := $(CURDIR)
# `make setup` writes .deps/pkgconfig/tensorflow.pc for the wheel's C library, or for your own
# build when you pass LIBTENSORFLOW=/dir/holding/libtensorflow.so (e.g. a GPU build).
export PKG_CONFIG_PATH := $(ROOT)/.deps/pkgconfig
export TF_CPP_MIN_LOG_LEVEL ?= 2
# TensorFlow's oneDNN CPU kernels, as the trainer and eval-sweep choose for themselves (see
# src/commands/mod.rs); set here too for the tests that run TensorFlow in their own process.
export TF_ENABLE_ONEDNN_OPTS ?= 1
# Open MPI refuses root and more ranks than cores unless told; CI and this box run as root.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export OMPI_MCA_rmaps_base_oversubscribe := 1
export DAWNRUN_PYTHON := $(ROOT)/.deps/venv/bin/python
CARGO := cargo
BIN := $(ROOT)/target/release
DEMO := $(ROOT)/runs/demo-data

.PHONY: setup build test test-netns demo bench lint fmt clean

setup:
	@bash tools/setup.sh

build: setup
	$(CARGO) build --release --workspace --all-targets

test: build
	$(DAWNRUN_PYTHON) tools/run-tests.py

# Only the two-namespace TCP test (needs root): `make test` runs it too.
test-netns: build
	$(CARGO) test --release -p dawnrun --test netns -- --test-threads=1

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --release --workspace --no-deps --quiet
	@bash tools/check-layering.sh

demo: build
	@bash tools/demo.sh

bench: build
	@bash bench/run.sh

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
