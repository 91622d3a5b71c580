#!/usr/bin/env bash
# Build icl with `--features cuda` on a machine without a GPU or a CUDA toolkit (docs/GPU.md):
# NVIDIA's CUDA 13.0 toolkit from the Python package index (nvcc, headers, cudart, cuBLAS, cuRAND,
# NVRTC) in a virtual environment, and a stub `libcuda.so` (SONAME libcuda.so.1) defining every
# driver symbol the build references, so the binaries record libcuda.so.1 as NEEDED and the GPU
# machine's real driver library satisfies it at run time.
#
# Usage: scripts/build-cuda.sh            → target/cuda/release/{icl,icl-compile}
# Env:   ICL_CUDA_ENV   (default ~/.cache/icl-cuda: the toolkit's virtual environment)
#        CUDA_COMPUTE_CAP (default 90: H100/H200)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ENV=${ICL_CUDA_ENV:-$HOME/.cache/icl-cuda}
TARGET=$ROOT/target/cuda
STUB=$TARGET/libcuda-stub
start=$(date +%s)

echo "== CUDA 13.0 toolkit wheels in $ENV"
[ -x "$ENV/bin/python" ] || python3 -m venv "$ENV"
"$ENV/bin/pip" install --quiet --disable-pip-version-check \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88 \
  nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-nvvm==13.0.88 'nvidia-cublas==13.0.*' \
  'nvidia-curand==10.4.0.*'
CU=$("$ENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
[ -x "$CU/bin/nvcc" ] || { echo "no nvcc under $CU" >&2; exit 1; }
(cd "$CU/lib" && for l in libcublas libcublasLt libcudart libnvrtc; do ln -sf "$l.so.13" "$l.so"; done &&
  ln -sf libcurand.so.10 libcurand.so)
export PATH="$CU/bin:$PATH" CUDA_ROOT="$CU" CUDA_PATH="$CU" CUDA_HOME="$CU"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# The same flags for every build below, so that only the final links are redone.
export RUSTFLAGS="-L $CU/lib -L $STUB"

# A stub driver library defining `syms` (one per line); an empty list gives a placeholder.
make_stub() {
  mkdir -p "$STUB"
  { echo "/* Stub of the CUDA driver API for linking only (scripts/build-cuda.sh). */"
    echo "void icl_cuda_stub_placeholder(void) {}"
    while read -r s; do [ -n "$s" ] && echo "void $s(void) {}"; done <<<"$1"
  } >"$STUB/stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$STUB/libcuda.so" "$STUB/stub.c"
  # For running the CPU path here (LD_LIBRARY_PATH=$STUB): the loader looks for the SONAME.
  ln -sf libcuda.so "$STUB/libcuda.so.1"
}

echo "== cargo build --release --features cuda (first pass: compiles everything; the link may fail on driver symbols)"
[ -f "$STUB/libcuda.so" ] || make_stub ""
build() { cargo build --release --features cuda --target-dir "$TARGET" --bins "$@"; }
if ! build 2>"$TARGET.first.log"; then
  # Every CUDA driver API symbol (cu + capital letter) the compiled crates reference.
  syms=$(for f in "$TARGET"/release/deps/*.rlib; do nm -u "$f" 2>/dev/null; done |
         awk '{print $NF}' | grep -E '^cu[A-Z][A-Za-z0-9_]*$' | sort -u)
  [ -n "$syms" ] || { tail -30 "$TARGET.first.log" >&2; echo "build failed before the link" >&2; exit 1; }
  echo "   stub libcuda.so: $(echo "$syms" | wc -l) driver symbols"
  make_stub "$syms"
  echo "== second pass: link against the stub"
  build
fi

for b in icl icl-compile; do
  bin=$TARGET/release/$b
  readelf -d "$bin" | grep -q 'libcuda.so.1' || { echo "$bin does not record libcuda.so.1" >&2; exit 1; }
done
end=$(date +%s)
echo "== built in $((end - start)) s: $(du -h "$TARGET/release/icl" | cut -f1) $TARGET/release/icl, $(du -h "$TARGET/release/icl-compile" | cut -f1) icl-compile"
echo "   NEEDED: $(readelf -d "$TARGET/release/icl" | awk '/NEEDED/ {print $NF}' | tr -d '[]' | tr '\n' ' ')"
echo "   on the GPU machine: LD_LIBRARY_PATH=<PyTorch's nvidia/cu13/lib> $TARGET/release/icl …"
