#!/usr/bin/env bash
# Builds Sluice into build/release and runs it with examples/quickstart.json
# (127.0.0.1:8080). Installs the Debian packages the build needs when they
# are missing (as root). Rebuilds only what changed on later runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# pcre2.h refuses to be included without a code unit width.
have_header() {
    printf '#include <%s>\n' "$1" |
        cpp -DPCRE2_CODE_UNIT_WIDTH=8 -x c - >/dev/null 2>&1
}

missing=()
{ command -v gcc && command -v make && command -v cpp; } >/dev/null || missing+=(build-essential)
command -v autoreconf >/dev/null || missing+=(autoconf)
command -v automake >/dev/null || missing+=(automake)
command -v libtoolize >/dev/null || missing+=(libtool)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v curl >/dev/null || missing+=(curl)
have_header event2/thread.h || missing+=(libevent-dev)
have_header cjson/cJSON.h || missing+=(libcjson-dev)
have_header lmdb.h || missing+=(liblmdb-dev)
have_header luajit-2.1/luajit.h || missing+=(libluajit2-5.1-dev)
have_header openssl/ssl.h || missing+=(libssl-dev)
have_header pcre2.h || missing+=(libpcre2-dev)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "quickstart: missing packages: ${missing[*]}" >&2
        echo "quickstart: run as root, or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "quickstart: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt configure ]; then
    echo "quickstart: autoreconf -fi"
    autoreconf -fi >/dev/null
fi
mkdir -p build/release
cd build/release
if [ ! -f Makefile ]; then
    echo "quickstart: configure"
    ../../configure -q
fi
echo "quickstart: make"
make -s -j"$(nproc)" core/sluice
cd ../..
echo "quickstart: starting sluice on 127.0.0.1:8080 (Ctrl-C stops it)"
exec build/release/core/sluice -c examples/quickstart.json
