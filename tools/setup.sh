#!/usr/bin/env bash
# Installs what dawnrun needs on a fresh Debian machine, and nothing else. Idempotent: every step
# checks first, so the second run takes seconds.
#   1. Debian packages by name (Open MPI, clang/libclang for the mpi crate's bindgen, pkg-config;
#      cmake and nasm, which turbojpeg-sys needs to build its bundled libjpeg-turbo 3 with SIMD;
#      libjpeg-turbo-progs for `tjbench`, the decode-rate limit in `make bench`).
#   2. The TensorFlow 2.13 C library, taken from the tensorflow-cpu==2.13.0 PyPI wheel into
#      .deps/libtensorflow, with a pkg-config file so tensorflow-sys links it and never downloads.
#      LIBTENSORFLOW=/dir (holding libtensorflow.so*) uses your own build (e.g. a GPU one) instead.
#   3. A Python venv (.deps/venv) with that same TensorFlow, for the interop tests and benchmarks.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
deps="$root/.deps"
mkdir -p "$deps"
log() { echo "setup: $*" >&2; }

# 1. Debian packages.
pkgs=(openmpi-bin libopenmpi-dev libclang-dev clang pkg-config unzip cmake nasm libjpeg-turbo-progs)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. The TensorFlow C library.
wheel_dir="$deps/wheels"
wheel_glob="$wheel_dir/tensorflow_cpu-2.13.0-*.whl"
fetch_wheel() {
  if ! compgen -G "$wheel_glob" >/dev/null; then
    log "downloading the tensorflow-cpu==2.13.0 wheel from PyPI (~226 MB, once)"
    python3 -m pip download -q --no-deps -d "$wheel_dir" "tensorflow-cpu==2.13.0"
  fi
}
if [ -n "${LIBTENSORFLOW:-}" ]; then
  tf_lib="$LIBTENSORFLOW"
  [ -e "$tf_lib/libtensorflow.so" ] || { echo "setup: LIBTENSORFLOW=$tf_lib holds no libtensorflow.so" >&2; exit 2; }
else
  tf_lib="$deps/libtensorflow/lib"
  if [ ! -e "$tf_lib/libtensorflow_cc.so.2" ] || [ ! -e "$tf_lib/libtensorflow_framework.so.2" ]; then
    fetch_wheel
    log "extracting the TensorFlow C library into $tf_lib"
    tmp=$(mktemp -d "$deps/extract.XXXXXX")
    unzip -q -o $wheel_glob 'tensorflow/libtensorflow_cc.so.2' 'tensorflow/libtensorflow_framework.so.2' -d "$tmp"
    mkdir -p "$tf_lib"
    mv "$tmp/tensorflow/libtensorflow_framework.so.2" "$tf_lib/"
    mv "$tmp/tensorflow/libtensorflow_cc.so.2" "$tf_lib/"   # last: its presence marks completion
    rm -rf "$tmp"
  fi
  ln -sfn libtensorflow_cc.so.2 "$tf_lib/libtensorflow.so"
  ln -sfn libtensorflow_framework.so.2 "$tf_lib/libtensorflow_framework.so"
fi
pc_dir="$deps/pkgconfig"
mkdir -p "$pc_dir"
pc_new=$(cat <<PC
libdir=$tf_lib

Name: tensorflow
Description: TensorFlow C library (dawnrun setup)
Version: 2.13.0
Libs: -L\${libdir} -ltensorflow -ltensorflow_framework
Cflags:
PC
)
if [ "$(cat "$pc_dir/tensorflow.pc" 2>/dev/null)" != "$pc_new" ]; then
  printf '%s\n' "$pc_new" > "$pc_dir/tensorflow.pc.tmp" && mv "$pc_dir/tensorflow.pc.tmp" "$pc_dir/tensorflow.pc"
fi

# 3. The Python venv with the same TensorFlow.
venv="$deps/venv"
if [ ! -e "$venv/.complete" ]; then
  fetch_wheel
  log "creating the Python venv with TensorFlow 2.13 (once)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  "$venv/bin/pip" install -q $wheel_glob "numpy<2" pillow
  "$venv/bin/python" -c 'import tensorflow as tf; assert tf.__version__.startswith("2.13")'
  touch "$venv/.complete"
fi
log "ready (libtensorflow: $tf_lib)"
