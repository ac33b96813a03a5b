#!/usr/bin/env bash
# modelfleet's container images, built offline: no registry is reachable, so every image starts
# FROM the Debian base that images/base/build.sh imports from debootstrap, and Python packages
# come from a wheelhouse downloaded on this host from PyPI and installed with `pip --no-index`.
#
#   hack/images.sh build IMAGE        build modelfleet/IMAGE:<hash> unless docker has it; tag :dev
#   hack/images.sh tag IMAGE          print modelfleet/IMAGE:<hash> (what `build` builds)
#   hack/images.sh wheelhouse IMAGE   only resolve and download the wheels; print their directory
#
# IMAGE, each carrying only what its pods run:
#   worker          the Jobs of ONNX sources and every publish and bundle Job: modelfleet[worker,triton],
#                   pnnx's converter binary, ncnn's int8 tools; no torch (about 1 GB)
#   worker-torch    the compress Jobs of torch sources: modelfleet[worker,torch,triton] (torch from PyPI is
#                   the CUDA build: about 7.5 GB)
#   worker-tflite   the worker plus onnx2tf's own venv (TensorFlow): compress Jobs of ONNX sources with a
#                   TFLite target
#   operator        `modelfleet operator` and `modelfleet gateway`: modelfleet[operator,gateway], no ML stack
#   agent           `modelfleet agent`: modelfleet[agent], the runtimes only (onnxruntime, ncnn, LiteRT)
# <hash> covers pyproject.toml, operator/ and images/IMAGE/ (not its *.md), and the parent image's tag
# where there is one: an unchanged tree is a cache hit.
# Load a built image into the test cluster's node with `hack/cluster.sh load-image TAG`.
#
# Needs a running dockerd (started with `hack/cluster.sh dockerd` when none answers), a docker
# client with BuildKit (buildx, or Debian's docker.io 20.10 client, which has BuildKit built in),
# python3 >= 3.11 with venv on the host, PyPI reachable from the host (only while filling the
# wheelhouse), and for the worker what hack/ncnn-tools.sh needs to build ncnn's int8 tools once.
#
# Caches, outside the repository (MODELFLEET_IMAGES_CACHE, default ~/.cache/modelfleet):
#   wheelhouse/<key>/        requirements.txt (pinned, sha256 per wheel) and the wheels; <key>
#                            hashes pyproject.toml, the extras and the base image's Python/glibc
#   wheelhouse/.pip/         a venv with a current pip (the resolver; old pips backtrack badly)
#   images/IMAGE-context/    the last build context (hard links into the wheelhouse)
#   images/IMAGE-build.log   the last build's full docker output
# BuildKit's own copy of the context (the worker's: 3.4 GB) is pruned after each build unless
# MODELFLEET_IMAGES_KEEP_CONTEXT=1 (keeping it saves about 20 s per rebuild).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MODELFLEET_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelfleet}
BASE_IMAGE=modelfleet/base:bookworm-1
PYTHON=${PYTHON:-python3}

IMAGES="worker worker-torch worker-tflite operator agent"

# The extras of modelfleet that each image installs; none for an image built FROM another.
extras_of() {
    case $1 in
        worker) echo worker,triton ;;
        worker-torch) echo worker,torch,triton ;;
        worker-tflite) echo "" ;;
        operator) echo operator,gateway ;;
        agent) echo agent ;;
        *) die "unknown image '$1' (known: $IMAGES)" ;;
    esac
}

# The modelfleet image an image is built FROM (its Dockerfile's ARG PARENT_IMAGE), if any.
parent_of() {
    case $1 in
        worker-tflite) echo worker ;;
        *) echo "" ;;
    esac
}

# Images with ncnn's int8 tools (C++ built on the host by hack/ncnn-tools.sh).
needs_ncnn_tools() { [ "$1" = worker ] || [ "$1" = worker-torch ]; }

# The requirements an image's wheelhouse resolves: modelfleet's dependencies and extras, or for
# worker-tflite the packages of onnx2tf's own venv (images/worker-tflite/requirements.in, which
# hack/onnx2tf-venv.sh installs on hosts too).
requested_of() {
    local extras
    extras=$(extras_of "$1")
    if [ -z "$extras" ]; then
        grep -v '^[[:space:]]*\(#\|$\)' "$ROOT/images/$1/requirements.in"
        return
    fi
    "$PYTHON" - "$ROOT/pyproject.toml" "$extras" <<'EOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = list(project["dependencies"])
for extra in sys.argv[2].split(","):
    reqs += project["optional-dependencies"][extra]
print("\n".join(reqs))
EOF
}

# Packages installed without their dependencies (images/install-venv.sh says why): ncnn everywhere (its
# model zoo's opencv-python is 190 MB), and pnnx in the torch-free worker (it runs only pnnx's binary).
nodeps_names() {
    case $1 in
        worker) echo "ncnn pnnx" ;;
        worker-torch | agent) echo "ncnn" ;;
        *) echo "" ;;
    esac
}

# nodeps_of IMAGE: their pinned requirements, as pyproject.toml spells them.
nodeps_of() {
    local name
    for name in $(nodeps_names "$1"); do
        grep -o "\"$name==[^\"]*\"" "$ROOT/pyproject.toml" | head -n 1 | tr -d '"'
    done
}

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- docker

ensure_dockerd() {
    docker info >/dev/null 2>&1 && return 0
    log "no dockerd answers; starting one with hack/cluster.sh dockerd"
    bash "$ROOT/hack/cluster.sh" dockerd
}

ensure_base() {
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return 0
    log "building $BASE_IMAGE (images/base/build.sh)"
    "$ROOT/images/base/build.sh" "$BASE_IMAGE"
}

# A `docker ... build` command line that uses BuildKit. Docker >= 23 clients need the buildx
# plugin for that; older clients (Debian bookworm's docker.io 20.10) have it built in.
BUILDKIT=()
find_buildkit() {
    [ "${#BUILDKIT[@]}" -gt 0 ] && return 0
    if docker buildx version >/dev/null 2>&1; then
        BUILDKIT=(docker buildx build --load)
        return 0
    fi
    local d version seen=" "
    for d in $(type -ap docker); do
        d=$(readlink -f "$d")
        case $seen in *" $d "*) continue ;; esac
        seen="$seen$d "
        version=$("$d" version --format '{{.Client.Version}}' 2>/dev/null || true)
        if [ -n "$version" ] && [ "${version%%.*}" -lt 23 ] 2>/dev/null; then
            BUILDKIT=(env DOCKER_BUILDKIT=1 "$d" build)
            return 0
        fi
    done
    die "no docker client with BuildKit: install the buildx plugin, or use Debian's docker.io client (/usr/bin/docker)"
}

# ---------------------------------------------------------------- hashes

# The files that make an image: pyproject.toml, the package sources and the image's directory
# (its notes excepted); for the worker also the script that builds ncnn's int8 tools.
source_files() {
    local extra=()
    needs_ncnn_tools "$1" && extra=(hack/ncnn-tools.sh hack/ncnn-tools)
    [ -n "$(extras_of "$1")" ] && extra+=(images/install-venv.sh)
    (cd "$ROOT" && find pyproject.toml operator "images/$1" "${extra[@]}" -type f \
        ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' ! -name '*.md' -print | LC_ALL=C sort)
}

image_tag() {
    local hash parent
    parent=$(parent_of "$1")
    [ -n "$parent" ] && parent=$(image_tag "$parent")
    hash=$( (cd "$ROOT" && source_files "$1" | tr '\n' '\0' | xargs -0 sha256sum
        echo "$BASE_IMAGE $parent") | sha256sum | cut -c1-12)
    printf 'modelfleet/%s:%s\n' "$1" "$hash"
}

# ---------------------------------------------------------------- wheelhouse

# The base image's Python (cp311) and glibc (2.36): the wheels must fit them, not this host.
TARGET_PY= TARGET_GLIBC=
probe_base() {
    [ -n "$TARGET_PY" ] && return 0
    local out
    out=$(docker run --rm --network none --entrypoint python3 "$BASE_IMAGE" -c \
        'import os, sys; print(f"{sys.version_info[0]}{sys.version_info[1]}", os.confstr("CS_GNU_LIBC_VERSION").split()[1])') \
        || die "cannot run python3 in $BASE_IMAGE"
    read -r TARGET_PY TARGET_GLIBC <<<"$out"
}

# pip flags that select wheels for the base image's interpreter and glibc (pip does not expand
# a manylinux_2_36 platform to the older manylinux tags it implies, so all are listed).
target_flags() {
    local minor=${TARGET_GLIBC#*.} i
    printf -- '--only-binary=:all: --implementation cp --python-version %s --abi cp%s' \
        "${TARGET_PY:0:1}.${TARGET_PY:1}" "$TARGET_PY"
    for ((i = minor; i >= 17; i--)); do printf -- ' --platform manylinux_2_%s_x86_64' "$i"; done
    printf -- ' --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 --platform linux_x86_64\n'
}

# A venv with a current pip: pip 23's resolver downloads many torch and pnnx wheels while it
# backtracks over this dependency set; current pips resolve it from metadata in about 1.5 min.
PIP=$CACHE/wheelhouse/.pip/bin/pip
ensure_pip() {
    local stamp=$CACHE/wheelhouse/.pip/.modelfleet-stamp
    [ -f "$stamp" ] && [ -x "$PIP" ] && return 0
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' \
        || die "$PYTHON must be Python >= 3.11 (it reads pyproject.toml with tomllib)"
    log "creating a pip venv in $CACHE/wheelhouse/.pip"
    mkdir -p "$CACHE/wheelhouse"
    "$PYTHON" -m venv "$CACHE/wheelhouse/.pip" || die "$PYTHON -m venv failed (Debian: apt-get install python3-venv)"
    "$PIP" install --quiet --disable-pip-version-check --upgrade 'pip>=25' >&2
    touch "$stamp"
}

# wheelhouse IMAGE: resolve the image's requirements (requested_of) for the base image, download
# the wheels with their hashes, and those of nodeps_of (nodeps.txt); print the directory. Cached
# by key (the requested requirements, not the whole pyproject.toml: a test-only dependency leaves
# the worker's alone); atomic. Wheels an earlier wheelhouse already holds are hard-linked, not
# downloaded again, and the wheelhouse that a new one supersedes for the same image is removed.
wheelhouse() {
    local image=$1 key dir tmp flags requested nodeps start=$SECONDS
    probe_base
    requested=$(requested_of "$image") || die "cannot read the requirements of $image"
    nodeps=$(nodeps_of "$image")
    local name
    for name in $(nodeps_names "$image"); do   # resolved apart, without their dependencies
        requested=$(printf '%s\n' "$requested" | grep -v "^$name\b" || true)
    done
    key=$( (printf '%s\n' "$requested" "nodeps=$nodeps"; echo "image=$image cp$TARGET_PY glibc$TARGET_GLIBC x86_64") |
        sha256sum | cut -c1-16)
    dir=$CACHE/wheelhouse/$key
    if [ -f "$dir/.complete" ]; then
        log "wheelhouse $dir present ($(du -sh "$dir" | cut -f1))"
        printf '%s\n' "$dir"
        return 0
    fi
    ensure_pip
    read -r -a flags <<<"$(target_flags)"
    tmp=$dir.partial
    rm -rf "$tmp"
    mkdir -p "$tmp"
    "$PIP" --version >/dev/null
    printf '%s\n' "$requested" >"$tmp/requested.txt"
    log "resolving the requirements of $image for cp$TARGET_PY / glibc $TARGET_GLIBC (about 1.5 min)"
    "$PIP" install --disable-pip-version-check --quiet --dry-run --ignore-installed --no-cache-dir \
        --report "$tmp/report.json" --target "$tmp/unused" "${flags[@]}" -r "$tmp/requested.txt" \
        >"$tmp/resolve.log" 2>&1 || { tail -n 30 "$tmp/resolve.log" >&2; die "resolution failed"; }
    "$CACHE/wheelhouse/.pip/bin/python" - "$tmp/report.json" >"$tmp/requirements.txt" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
print("# resolved by hack/images.sh from pyproject.toml; one pinned wheel per line")
for item in sorted(report["install"], key=lambda i: i["metadata"]["name"].lower()):
    sha = item["download_info"]["archive_info"]["hashes"]["sha256"]
    print(f'{item["metadata"]["name"]}=={item["metadata"]["version"]} --hash=sha256:{sha}')
EOF
    # pip download keeps a file already in the directory when its hash matches the pinned one.
    local old
    for old in "$CACHE"/wheelhouse/*/.complete; do
        [ -e "$old" ] && ln -f "$(dirname "$old")"/*.whl "$tmp/" 2>/dev/null || true
    done
    log "downloading $(grep -c -- '--hash' "$tmp/requirements.txt") wheels (the worker's: about 4 GB, torch and its nvidia-* libraries; fewer when an earlier wheelhouse has them)"
    "$PIP" download --disable-pip-version-check --quiet --progress-bar off --no-cache-dir --no-deps \
        --require-hashes "${flags[@]}" -d "$tmp" -r "$tmp/requirements.txt" \
        >"$tmp/download.log" 2>&1 || { tail -n 30 "$tmp/download.log" >&2; die "download failed"; }
    rm -rf "$tmp/unused"
    local requirement wheel
    for requirement in $nodeps; do
        rm -rf "$tmp/nodeps"
        "$PIP" download --disable-pip-version-check --quiet --progress-bar off --no-cache-dir --no-deps \
            "${flags[@]}" -d "$tmp/nodeps" "$requirement" >>"$tmp/download.log" 2>&1 ||
            { tail -n 30 "$tmp/download.log" >&2; die "download of $requirement failed"; }
        for wheel in "$tmp"/nodeps/*.whl; do
            printf '%s --hash=sha256:%s\n' "$requirement" "$(sha256sum "$wheel" | cut -d' ' -f1)" >>"$tmp/nodeps.txt"
            mv "$wheel" "$tmp/"
        done
        rm -rf "$tmp/nodeps"
    done
    "$PYTHON" - "$tmp" <<'EOF' || die "cannot prune $tmp"
import pathlib, re, sys
# Drop the linked wheels that the pinned requirements do not name (wheel file names normalise `-` and `.`).
tmp = pathlib.Path(sys.argv[1])
norm = lambda name: re.sub(r"[-_.]+", "_", name).lower()
pinned = {norm(line.split("==")[0]) + "-" + line.split("==")[1].split()[0]
          for name in ("requirements.txt", "nodeps.txt") if (tmp / name).exists()
          for line in (tmp / name).read_text().splitlines() if "==" in line}
for wheel in tmp.glob("*.whl"):
    name, version = wheel.name.split("-")[:2]
    if f"{norm(name)}-{version}" not in pinned:
        wheel.unlink()
EOF
    echo "$image" >"$tmp/.extras"
    touch "$tmp/.complete"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    local owner
    for old in "$CACHE"/wheelhouse/*/.complete; do   # superseded: the same image's, or no current image's
        old=$(dirname "$old")
        [ "$old" = "$dir" ] && continue
        owner=$(cat "$old/.extras" 2>/dev/null || true)
        if [ "$owner" = "$image" ] || [[ " $IMAGES " != *" $owner "* ]]; then rm -rf "$old"; fi
    done
    log "wheelhouse $dir: $(du -sh "$dir" | cut -f1) in $((SECONDS - start))s"
    printf '%s\n' "$dir"
}

# ---------------------------------------------------------------- build

# project_wheel DEST: build modelfleet's wheel from a clean copy of the sources (an in-tree
# build would leave build/ and *.egg-info behind in the repository).
project_wheel() {
    local dest=$1 src
    src=$(mktemp -d)
    (cd "$ROOT" && source_files worker | grep -v '^images/' | tar -cf - -T -) | tar -xf - -C "$src"
    cp -p "$ROOT/README.md" "$src/"
    # A fixed timestamp makes the wheel, and so the image's top layer, the same for the same sources.
    SOURCE_DATE_EPOCH=315532800 "$PIP" wheel --disable-pip-version-check --quiet --no-deps --no-cache-dir -w "$dest" "$src" \
        >"$CACHE/images/wheel.log" 2>&1 ||
        { tail -n 30 "$CACHE/images/wheel.log" >&2; rm -rf "$src"; die "building modelfleet's wheel failed"; }
    rm -rf "$src"
}

# build_image IMAGE: modelfleet/IMAGE:<hash> from images/IMAGE/Dockerfile, unless docker has it.
build_image() {
    local name=$1 tag dev=modelfleet/$1:dev wheels ctx start=$SECONDS buildlog parent parent_tag=""
    parent=$(parent_of "$name")
    # The parent first: its tag is part of this image's, and the Dockerfile starts FROM it.
    [ -n "$parent" ] && parent_tag=$(build_image "$parent")
    tag=$(image_tag "$name")
    ensure_dockerd
    if docker image inspect "$tag" >/dev/null 2>&1; then
        docker tag "$tag" "$dev"
        log "$tag present (also $dev)"
        printf '%s\n' "$tag"
        return 0
    fi
    find_buildkit
    ensure_base
    wheels=$(wheelhouse "$name")
    ensure_pip

    ctx=$CACHE/images/$name-context
    log "preparing the build context in $ctx"
    rm -rf "$ctx"
    mkdir -p "$ctx/dist"
    # Hard links cost no space. The same path every time lets BuildKit send only what changed,
    # when its copy of the last context is kept (MODELFLEET_IMAGES_KEEP_CONTEXT=1).
    cp -al "$wheels" "$ctx/wheels" 2>/dev/null || cp -a "$wheels" "$ctx/wheels"
    if [ -n "$(extras_of "$name")" ]; then
        project_wheel "$ctx/dist"
        cp "$ROOT/images/install-venv.sh" "$ctx/"
    fi
    if needs_ncnn_tools "$name"; then   # C++ built on this host, Debian bookworm like the base image
        cp -a "$(bash "$ROOT/hack/ncnn-tools.sh")" "$ctx/ncnn-tools"
    fi

    buildlog=$CACHE/images/$name-build.log
    log "building $tag with ${BUILDKIT[*]} (network none; cold: the worker several minutes, torch is large)"
    # --network none: the install must not need anything but the wheelhouse.
    if ! "${BUILDKIT[@]}" --network none --progress plain \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "PARENT_IMAGE=$parent_tag" -f "$ROOT/images/$name/Dockerfile" \
        -t "$tag" -t "$dev" "$ctx" 2>&1 | tee "$buildlog" |
        grep --line-buffered -E '^#[0-9]+ (\[|DONE|CACHED|ERROR|exporting|writing|naming)' |
        sed -u 's/^/[images] docker: /' >&2; then
        :
    fi
    docker image inspect "$tag" >/dev/null 2>&1 || { tail -n 40 "$buildlog" >&2; die "docker build failed (log: $buildlog)"; }
    # BuildKit keeps a copy of the context (3.4 GB of wheels) to send only changes next time; that
    # saves about 20 s per rebuild, not worth the disk. The layer cache stays (a rebuild after a
    # source change reinstalls only modelfleet itself).
    if [ -z "${MODELFLEET_IMAGES_KEEP_CONTEXT:-}" ]; then
        docker builder prune --force --filter type=source.local >/dev/null 2>&1 || true
    fi
    # The layer cache of superseded builds would otherwise grow by gigabytes per dependency change.
    docker builder prune --force --keep-storage 10GB >/dev/null 2>&1 || true
    log "built $tag (also $dev) in $((SECONDS - start))s: $(docker image inspect -f '{{.Size}}' "$tag" |
        awk '{printf "%.2f GB", $1/1e9}')"
    # Earlier tags share the dependency layer but keep their own top layers: untag them.
    local old
    for old in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "modelfleet/$name" | grep -vxF -e "$tag" -e "$dev"); do
        docker image rm "$old" >/dev/null 2>&1 || true
    done
    printf '%s\n' "$tag"
}

# ---------------------------------------------------------------- main

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2
}

[ $# -eq 2 ] || usage
extras_of "$2" >/dev/null
# One build at a time per cache: builds share the wheelhouse's .partial and the context directory.
lock() {
    mkdir -p "$CACHE/images"
    exec 9>"$CACHE/images/.lock"
    if command -v flock >/dev/null && ! flock -n 9; then
        log "waiting for another hack/images.sh run to finish"
        flock 9
    fi
}

case $1 in
    build) lock; build_image "$2" ;;
    tag) image_tag "$2" ;;
    wheelhouse) lock; ensure_dockerd; ensure_base; wheelhouse "$2" ;;
    *) usage ;;
esac
