#!/bin/sh
# The benchmark's setup step: installs what it needs from Debian when missing (root only).
# nginx and HAProxy are peers; wrk drives HTTP; gcc + libssl-dev build bench/loadgen.c.
need=""
command -v nginx >/dev/null 2>&1 || need="$need nginx-light"
command -v haproxy >/dev/null 2>&1 || need="$need haproxy"
command -v wrk >/dev/null 2>&1 || need="$need wrk"
command -v gcc >/dev/null 2>&1 || need="$need gcc libc6-dev"
[ -f /usr/include/openssl/evp.h ] || need="$need libssl-dev"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then echo "bench/setup.sh: missing:$need (install them, or run as root)" >&2; exit 1; fi
echo "bench/setup.sh: installing$need" >&2
export DEBIAN_FRONTEND=noninteractive
timeout 300 apt-get update -qq >&2 || exit 1
# shellcheck disable=SC2086
timeout 600 apt-get install -y -qq --no-install-recommends $need >&2
