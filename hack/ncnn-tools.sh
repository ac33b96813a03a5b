#!/usr/bin/env bash
# Builds (or reuses) ncnn's int8 tools for the worker's ncnn int8 edge artifacts:
#   ncnn2table  the calibration table (per-layer activation and weight scales)
#   ncnn2int8   the int8 conversion of an ncnn model with that table
# They are C++ in ncnn's repository (tools/quantize) and not on PyPI, so they are built once from the
# source of the release the `ncnn` wheel comes from (pyproject.toml pins the same release) and cached
# outside the repository, keyed by release:
#   ${NCNN_TOOLS_CACHE:-~/.cache/modelfleet}/ncnn-tools-<release>/bin/{ncnn2table,ncnn2int8}
# The worker looks there, or where MODELFLEET_NCNN_TOOLS points (hack/images.sh copies the directory
# into the worker image). Prints the bin directory as the last line on stdout; the rest goes to stderr.
#
# Source: the library from PyPI's sdist of that release (checked against its sha256), the tools'
# sources (tools/quantize, tools/modelwriter.h, tests/prng.h) from hack/ncnn-tools/, copied unchanged
# from the release tag: the sdist leaves them out, and GitHub is not reachable from every build machine.
# NCNN_SDIST names a local copy of the sdist instead of downloading it.
# Build: a static libncnn for plain x86-64 (SSE2, no per-CPU variants: portable and quick to build; the
# tools' speed hardly matters) without OpenMP (single-threaded tools), then the two tools against it,
# libstdc++ linked in, so the executables need only glibc and run in the worker image (Debian
# bookworm, like the build host). Needs cmake and a C++ compiler. First run: about 10 minutes on 2 cores.
set -euo pipefail

release=20260526
sdist_sha256=282f0f4a1beec1f5212aa0d22c00737418645055f33c2d2082922931cdbdc537   # ncnn-1.0.$release.tar.gz on PyPI
sdist_url=https://files.pythonhosted.org/packages/5b/77/d6acfd9b652463a2037a1113954f2cf0aa7d4c414de31b01aeb1fd9bf9e7/ncnn-1.0.$release.tar.gz
tools_src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ncnn-tools
tools_sha=$(cd "$tools_src" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
cache=${NCNN_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelfleet}/ncnn-tools-$release
bin=$cache/bin
stamp=$cache/.modelfleet-ncnn-tools

log() { printf '[ncnn-tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

built() { [ "$(cat "$stamp" 2>/dev/null)" = "$release $tools_sha" ] && [ -x "$bin/ncnn2table" ] && [ -x "$bin/ncnn2int8" ]; }

# unpack DEST: the release's library source (the sdist, checked) with the tools' sources laid over it.
unpack() {
    local dest=$1 sdist=${NCNN_SDIST:-$cache/ncnn-1.0.$release.tar.gz}
    if [ ! -f "$sdist" ]; then
        log "downloading ncnn $release's source from PyPI"
        curl -fsSL --retry 3 -o "$sdist.part" "$sdist_url" || die "cannot download $sdist_url; set NCNN_SDIST to a copy of it"
        mv "$sdist.part" "$sdist"
    fi
    echo "$sdist_sha256  $sdist" | sha256sum -c --quiet - >/dev/null 2>&1 ||
        die "$sdist is not PyPI's ncnn-1.0.$release.tar.gz (sha256 differs)"
    mkdir -p "$dest"
    tar -xzf "$sdist" -C "$dest" --strip-components=1 || die "cannot unpack $sdist"
    cp -a "$tools_src/tools" "$tools_src/tests" "$dest/"
}

build() {
    local work=$cache/build started=$SECONDS tool
    if ! command -v cmake >/dev/null || ! command -v c++ >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            log "installing cmake and g++ (Debian)"
            { apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends cmake g++; } \
                >"$cache/apt.log" 2>&1 || { tail -n 20 "$cache/apt.log" >&2; die "apt-get install cmake g++ failed"; }
        else
            die "building ncnn's tools needs cmake and a C++ compiler (Debian: apt-get install cmake g++)"
        fi
    fi
    rm -rf "$work"
    unpack "$work/src"
    log "building ncnn2table and ncnn2int8 from ncnn $release (first time: about 10 minutes on 2 cores)"
    cmake -S "$work/src" -B "$work/out" -DCMAKE_BUILD_TYPE=Release \
        -DNCNN_RUNTIME_CPU=OFF -DNCNN_AVX=OFF -DNCNN_OPENMP=OFF -DNCNN_VULKAN=OFF -DNCNN_SIMPLEOCV=ON -DNCNN_BUILD_TOOLS=OFF \
        -DNCNN_BUILD_EXAMPLES=OFF -DNCNN_BUILD_BENCHMARK=OFF -DNCNN_BUILD_TESTS=OFF -DNCNN_PYTHON=OFF >"$cache/build.log" 2>&1 ||
        { tail -n 30 "$cache/build.log" >&2; die "cmake failed (log: $cache/build.log)"; }
    cmake --build "$work/out" --target ncnn -j "$(nproc)" >>"$cache/build.log" 2>&1 ||
        { tail -n 30 "$cache/build.log" >&2; die "build failed (log: $cache/build.log)"; }
    mkdir -p "$bin"
    for tool in ncnn2table ncnn2int8; do   # as tools/quantize/CMakeLists.txt builds them, with simpleocv
        c++ -O2 -std=c++11 -DUSE_NCNN_SIMPLEOCV -I "$work/src/src" -I "$work/out/src" \
            "$work/src/tools/quantize/$tool.cpp" "$work/out/src/libncnn.a" -lpthread \
            -static-libstdc++ -static-libgcc -o "$bin/$tool" >>"$cache/build.log" 2>&1 ||
            { tail -n 30 "$cache/build.log" >&2; die "building $tool failed (log: $cache/build.log)"; }
    done
    rm -rf "$work"
    echo "$release $tools_sha" >"$stamp"
    log "built in $((SECONDS - started)) s -> $bin"
}

if ! built; then
    mkdir -p "$cache"
    exec 9>"$cache.lock"   # concurrent first runs (test workers) wait for one build
    if command -v flock >/dev/null; then flock 9; fi
    built || build
    exec 9>&-
fi
echo "$bin"
