#!/bin/sh
# Build bench/go-agent/go-agent from Debian's packages, no network:
#   apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev
# (GOPATH mode over /usr/share/gocode; no generated code needed). Prints the
# binary's path; exits 3 when Go or grpc-go is not installed, so callers can
# fall back to the Python agents.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
gocode=${GOCODE:-/usr/share/gocode}
if ! command -v go >/dev/null 2>&1; then
    echo "go-agent: no Go toolchain (apt-get install golang-go)" >&2
    exit 3
fi
if [ ! -d "$gocode/src/google.golang.org/grpc" ] || [ ! -d "$gocode/src/google.golang.org/protobuf" ]; then
    echo "go-agent: grpc-go not found in $gocode (apt-get install golang-google-grpc-dev golang-google-protobuf-dev)" >&2
    exit 3
fi
out="$here/go-agent"
if [ -x "$out" ] && [ "$out" -nt "$here/main.go" ] && [ "$out" -nt "$here/client.go" ]; then
    echo "$out"
    exit 0
fi
cache=${GOCACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/go-build}
cd "$here"
GO111MODULE=off GOPATH="$gocode" GOCACHE="$cache" GOFLAGS= nice -n 19 go build -o "$out.tmp" main.go client.go
mv "$out.tmp" "$out"
echo "$out"
