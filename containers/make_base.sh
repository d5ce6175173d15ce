#!/bin/sh
# Build a Python 3.11 base image from Debian 12 "bookworm" packages, for machines that cannot pull
# the pinned python:3.11-slim-bookworm base from a registry (no access to Docker Hub, a Debian
# mirror only). The microseg image is then built on it:
#
#   containers/make_base.sh [--python PREFIX]        (as root, or where mmdebstrap can unshare)
#   make image BASE_IMAGE=<the name it prints>
#
# The interpreter: by default Debian's python3 (3.11.2 in bookworm). Some pins in
# containers/requirements.lock need a later 3.11 (see containers/README.md); then pass --python
# PREFIX, the install prefix of a CPython 3.11 built for Debian 12 (e.g. a pyenv build,
# ~/.pyenv/versions/3.11.x, or one of your own), which is copied to /usr/local without its
# site-packages; the Debian libraries it links against come from the packages below.
#
# The base holds that python with venv, CA certificates, tzdata and useradd; nothing else. Its
# name says which Python it has (localhost/microseg-base:python3.11.N-bookworm), its labels where
# the interpreter came from, and the image built on it records the base's name in its labels and
# in every run's environment record (MICROSEG_BASE_IMAGE).
#
# Needs mmdebstrap (apt-get install mmdebstrap) and Docker or Podman (ENGINE=docker|podman to
# choose; default: the first that works). MIRROR sets the Debian mirror (default: deb.debian.org).
set -eu

die() {
    echo "error: $*" >&2
    exit 1
}

prefix=""
while [ $# -gt 0 ]; do
    case "$1" in
        --python) prefix=${2:?--python needs the install prefix of a CPython 3.11}; shift 2 ;;
        -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

mirror=${MIRROR:-http://deb.debian.org/debian}
# What a CPython build links against (ssl, ctypes, sqlite3, bz2, lzma, zlib, readline, curses,
# uuid, dbm), for --python; Debian's own python3 brings these as its dependencies.
runtime_libraries=libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,zlib1g,libreadline8,libncursesw6,libuuid1,libgdbm6,libgdbm-compat4,libexpat1,libtirpc3,libnsl2,libcrypt1
common=ca-certificates,netbase,tzdata,passwd

command -v mmdebstrap >/dev/null 2>&1 \
    || die "mmdebstrap is not installed; install it with 'apt-get install mmdebstrap' (Debian/Ubuntu)"
engine=${ENGINE:-$(sh "$(dirname "$0")/engine.sh")} || exit 1

if [ -n "$prefix" ]; then
    [ -x "$prefix/bin/python3.11" ] || die "$prefix/bin/python3.11 not found: --python needs the install prefix of a CPython 3.11 (the folder holding bin/ and lib/)"
    version=$("$prefix/bin/python3.11" -c 'import platform; print(platform.python_version())')
    packages=$common,$runtime_libraries
    origin="CPython $version copied from $prefix"
else
    version=3.11.2
    packages=$common,python3,python3-venv
    origin="Debian bookworm python3 $version"
fi
name=${BASE_NAME:-localhost/microseg-base:python$version-bookworm}

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT INT TERM

# The interpreter without site-packages, tests and GUI modules, as a tarball for the hook below.
if [ -n "$prefix" ]; then
    tar -C "$prefix" -cf "$workdir/python.tar" \
        --exclude='lib/python3.11/site-packages/*' --exclude='lib/python3.11/test' \
        --exclude='lib/python3.11/idlelib' --exclude='lib/python3.11/tkinter' \
        --exclude='lib/python3.11/turtledemo' \
        bin/python3.11 bin/python3 bin/python lib/libpython3.11.so lib/libpython3.11.so.1.0 \
        lib/libpython3.so lib/python3.11 include/python3.11
fi

echo "microseg: building a Debian bookworm root file system with $origin"
# shellcheck disable=SC2016  # "$1" is expanded by mmdebstrap: the root file system's folder
mmdebstrap --variant=minbase --include="$packages" \
    --customize-hook="if [ -f '$workdir/python.tar' ]; then tar -C \"\$1/usr/local\" -xf '$workdir/python.tar' && chroot \"\$1\" ldconfig; fi" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$workdir/rootfs.tar" "$mirror"

# The same defaults as the official Python image: UTF-8 locale, python3 on PATH.
$engine import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL io.microseg.base.python=\"$origin\"" \
    --change "LABEL io.microseg.base.debian=\"bookworm, mmdebstrap $(date -u +%Y-%m-%d)\"" \
    --change 'CMD ["python3"]' \
    "$workdir/rootfs.tar" "$name" >/dev/null

# The interpreter must start and have its standard extension modules.
$engine run --rm "$name" python3 -c \
    'import bz2, ctypes, lzma, sqlite3, ssl, sys, uuid, venv, zlib; print("microseg: base python", sys.version.split()[0])' \
    || die "the base image $name was made, but its python3 does not start or lacks a standard module"
echo "microseg: base image $name ($($engine image inspect --format '{{.Id}}' "$name"))"
echo "microseg: build on it with: make image BASE_IMAGE=$name"
