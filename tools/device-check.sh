#!/usr/bin/env bash
# The device check: build every device test, the device example and every device benchmark for sm_90 on a GPU
# machine that reaches no package registry, run them, and write the logs under $OUT.
#
#   bash tools/device-check.sh gather   # here, on Debian with .ci/run's packages: copy the headers, CMake package
#                                       # files and the Google Benchmark library into .deps/ (git-ignored, ~12 MB)
#   device tool: command "bash tools/device-check.sh", carry [".deps"], timeout_s ~540
#
# Everything runs in one call because device time is short: configure, build (all cores), ctest of the device
# tests, then each device benchmark with a short minimum time. The exit status is non-zero when a step failed;
# the logs say which.
set -uo pipefail
cd "$(dirname "$0")/.."
deps="$PWD/.deps/usr"  # the copied /usr tree: the CMake prefix

if [ "${1:-}" = gather ]; then
  set -e
  rm -rf .deps
  for path in /usr/include/eigen3 /usr/share/eigen3 /usr/include/doctest /usr/lib/cmake/doctest /usr/include/nlohmann \
    /usr/share/cmake/nlohmann_json /usr/include/benchmark /usr/lib/x86_64-linux-gnu/cmake/benchmark \
    /usr/lib/x86_64-linux-gnu/libbenchmark.so /usr/lib/x86_64-linux-gnu/libbenchmark.so.1.7.1 \
    /usr/lib/x86_64-linux-gnu/libbenchmark_main.a; do
    mkdir -p ".deps$(dirname "$path")"
    cp -a "$path" ".deps$(dirname "$path")/"
  done
  # Debian's doctest package file names /usr itself; make it relative to where the copy sits.
  sed -i 's|^set(_IMPORT_PREFIX "/usr")|get_filename_component(_IMPORT_PREFIX "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)|' \
    "$deps/lib/cmake/doctest/doctestTargets.cmake"
  du -sh .deps
  exit 0
fi

out="${OUT:-$PWD/device-check-out}"
mkdir -p "$out"
status=0
step() {  # step NAME COMMAND...: runs the command with its output in $out/NAME.log, and remembers a failure
  local name=$1
  shift
  local start=$SECONDS
  if "$@" > "$out/$name.log" 2>&1; then
    echo "$name: ok ($((SECONDS - start)) s)" | tee -a "$out/summary.txt"
  else
    echo "$name: FAILED ($((SECONDS - start)) s), see $name.log" | tee -a "$out/summary.txt"
    status=1
  fi
}

nvidia-smi > "$out/nvidia-smi.txt" 2>&1
step configure cmake -S . -B build-device -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DCMAKE_PREFIX_PATH="$deps" -DNGEMB_SANITIZE_TESTS=OFF
targets=$(cmake --build build-device --target help 2>/dev/null |
  awk '$2 ~ /^(test_cuda_|bench_.*_device$|device_quickstart$)/ {print $2}')
# shellcheck disable=SC2086  # one target per word
step build cmake --build build-device -j"$(nproc)" --target $targets
export LD_LIBRARY_PATH="$deps/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
step ctest ctest --test-dir build-device -R '^(cuda_|device_quickstart$)' --output-on-failure --timeout 300
for bench in build-device/bench/bench_*_device; do
  [ -x "$bench" ] || continue
  step "$(basename "$bench")" timeout 180 "$bench" --benchmark_min_time=0.2
done
exit $status
