#!/usr/bin/env bash
# Builds the sipconf .deb packages with cargo-deb (metadata in Cargo.toml,
# docs/deploy.md): arm64 for a Raspberry Pi 4/5 running Raspberry Pi OS
# bookworm or Debian 12, amd64 for a PC. arm64 is cross-built on an x86-64
# Debian 12 with Debian's own Rust, which ships an arm64 standard library.
#
#   scripts/build-deb.sh [--install-toolchain] [--profile NAME] [arm64|amd64|all]
#
#   --install-toolchain  first install, as root, what the build needs from
#                        Debian (arm64 architecture, rustc-web, cargo-web,
#                        libstd-rust-web-dev:arm64, the aarch64 C cross
#                        compiler, qemu-user to run the result) and cargo-deb
#                        3.8.0 from crates.io
#   --profile NAME       a Cargo profile other than `release` (fat LTO): CI
#                        smoke-tests a `ci-cross` build (thin LTO, quicker)
#   arm64|amd64|all      which packages (default: all)
#
# The packages land in target/debian/: the program stripped in the .deb, its
# debug symbols in a -dbgsym .ddeb (install it too for symbolic backtraces).
# A package for the machine's own architecture is built with the `cargo` on
# PATH; arm64 on an x86-64 host with Debian's /usr/bin/cargo and rustc.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
install_toolchain=false
profile=release
which=all
while [ $# -gt 0 ]; do
    case "$1" in
        --install-toolchain) install_toolchain=true ;;
        --profile) profile="${2:?--profile needs a name}"; shift ;;
        arm64 | amd64 | all) which="$1" ;;
        -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "build-deb.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$which" in
    all) arches="amd64 arm64" ;;
    *) arches="$which" ;;
esac
host_arch="$(dpkg --print-architecture)"

if $install_toolchain; then
    export DEBIAN_FRONTEND=noninteractive
    if [ "$host_arch" = amd64 ]; then
        dpkg --add-architecture arm64
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends \
            rustc-web cargo-web libstd-rust-web-dev:arm64 \
            gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user dpkg-dev >/dev/null
    fi
    if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
        cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
    fi
fi
cargo deb --version >/dev/null 2>&1 || {
    echo "build-deb.sh: cargo-deb is not installed; run with --install-toolchain" >&2
    exit 1
}

# The packaged configuration: the shipped one with the records in
# /var/lib/sipconf, whoever starts the program.
mkdir -p target/deb target/debian
sed 's#^path = ""$#path = "/var/lib/sipconf/sipconf.db"#' config/sipconf.toml >target/deb/sipconf.toml
grep -q '^path = "/var/lib/sipconf/sipconf.db"$' target/deb/sipconf.toml || {
    echo "build-deb.sh: config/sipconf.toml has no 'path = \"\"' line in [store] to point at /var/lib/sipconf" >&2
    exit 1
}

for arch in $arches; do
    echo "== sipconf .deb for $arch (profile $profile)"
    if [ "$arch" = "$host_arch" ]; then
        cargo deb --locked -p sipconf-daemon --profile "$profile" --dbgsym --output target/debian/
    elif [ "$arch" = arm64 ] && [ "$host_arch" = amd64 ]; then
        [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] || {
            echo "build-deb.sh: no arm64 Rust standard library (/usr/lib/rustlib/aarch64-unknown-linux-gnu); run with --install-toolchain" >&2
            exit 1
        }
        # rustup's toolchain has no arm64 std: Debian's cargo and rustc do it.
        PATH="/usr/bin:$PATH" \
        RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
        AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
            /usr/bin/cargo deb --locked -p sipconf-daemon --profile "$profile" --dbgsym \
            --target aarch64-unknown-linux-gnu --output target/debian/
    else
        echo "build-deb.sh: cannot build $arch on $host_arch" >&2
        exit 1
    fi
done
ls -l target/debian/
