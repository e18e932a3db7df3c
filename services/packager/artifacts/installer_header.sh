#!/bin/sh
# @@TITLE@@
# A self-extracting installer made by envstore: this POSIX shell script, then (after its last line)
# a conda-pack archive of the environment. It checks the archive's sha256, unpacks it where you
# choose and relocates it there. Run it with -h for its options.
#
# Packages (name=version=build):
@@PACKAGE_COMMENTS@@
# Byte semantics: ${#PREFIX} must count what binary relocation writes, and tools must not reinterpret
# the payload as text.
LC_ALL=C
export LC_ALL

DESCRIPTION=@@DESCRIPTION@@
ENVIRONMENT_NAME=@@ENVIRONMENT_NAME@@
PLATFORM=@@PLATFORM@@
PACKAGE_COUNT=@@PACKAGE_COUNT@@
PAYLOAD_SIZE=@@PAYLOAD_SIZE@@
PAYLOAD_SHA256=@@PAYLOAD_SHA256@@
# Binary files keep their size when relocated, so the prefix may not be longer than their placeholder.
LONGEST_PREFIX=@@LONGEST_PREFIX@@
INSTALLER=$0

usage() {
    cat <<EOF
Usage: sh $(basename -- "$INSTALLER") [-b] [-f] [-p PREFIX] [-h]

Installs the conda environment $DESCRIPTION ($PACKAGE_COUNT packages, $PLATFORM).

  -b         batch mode: ask nothing, install into PREFIX
  -p PREFIX  where to install it (default: \$HOME/$ENVIRONMENT_NAME)
  -f         install even if PREFIX exists and is not empty
  -h         print this help and exit
EOF
}

fail() {
    printf 'envstore installer: %s\n' "$*" >&2
    exit 1
}

machine_platform() {
    case "$(uname -s)-$(uname -m)" in
        Linux-x86_64) echo linux-64 ;;
        Linux-aarch64 | Linux-arm64) echo linux-aarch64 ;;
        Linux-ppc64le) echo linux-ppc64le ;;
        Darwin-x86_64) echo osx-64 ;;
        Darwin-arm64) echo osx-arm64 ;;
        *) uname -sm ;;
    esac
}

payload() {
    tail -c "$PAYLOAD_SIZE" "$INSTALLER"
}

# The tools print "<digest> <file name>": splitting their output into words is the point.
# shellcheck disable=SC2046
payload_sha256() {
    if command -v sha256sum >/dev/null 2>&1; then
        set -- $(payload | sha256sum)
    elif command -v shasum >/dev/null 2>&1; then
        set -- $(payload | shasum -a 256)
    elif command -v openssl >/dev/null 2>&1; then
        set -- $(payload | openssl dgst -sha256 -r)
    else
        return 1
    fi
    printf '%s' "$1"
}

# conda-unpack is conda-pack's relocation script; it needs a python 3, the environment's own or any.
find_python3() {
    for candidate in "$PREFIX/bin/python3" "$PREFIX/bin/python" python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[0] != 3)' >/dev/null 2>&1; then
            printf '%s' "$candidate"
            return 0
        fi
    done
    return 1
}

# --- relocation without python: the plan at the end of this script calls these -------------------

# copy_bytes FILE START COUNT: COUNT bytes of FILE from offset START, to standard output.
copy_bytes() {
    [ "$3" -gt 0 ] || return 0
    tail -c "+$(($2 + 1))" "$1" 2>/dev/null | head -c "$3"
}

# relocate_text FILE PLACEHOLDER_LENGTH OFFSET...: the prefix replaces the placeholder at each OFFSET.
# shellcheck disable=SC2015 # any step failing must fail
relocate_text() {
    file="$PREFIX/$1"
    placeholder_length=$2
    shift 2
    position=0
    {
        for offset in "$@"; do
            copy_bytes "$file" "$position" $((offset - position))
            printf '%s' "$PREFIX"
            position=$((offset + placeholder_length))
        done
        tail -c "+$((position + 1))" "$file"
    } >"$file.envstore-relocating" &&
        cat "$file.envstore-relocating" >"$file" &&
        rm -f "$file.envstore-relocating" ||
        fail "could not relocate $file"
}

# relocate_prefix_string FILE START LENGTH SEGMENT...: rewrites in place the NUL-terminated string of
# LENGTH bytes at START whose placeholders came before each SEGMENT (a printf format): the prefix in
# place of each placeholder, then NULs up to the string's old length, as conda does.
# shellcheck disable=SC2015,SC2059 # any step failing must fail; segments are printf formats by design
relocate_prefix_string() {
    file="$PREFIX/$1"
    start=$2
    length=$3
    shift 3
    dd if=/dev/zero of="$file" bs=1 seek="$start" count="$length" conv=notrunc 2>/dev/null &&
        for segment in "$@"; do
            printf '%s' "$PREFIX"
            printf "$segment"
        done | dd of="$file" bs=1 seek="$start" conv=notrunc 2>/dev/null ||
        fail "could not relocate $file"
}

# relocated_binary FILE: Apple silicon refuses to run a modified signed binary; re-sign it ad hoc,
# as conda-unpack does.
relocated_binary() {
    if [ "$(uname -s)-$(uname -m)" = Darwin-arm64 ] && [ -x /usr/bin/codesign ]; then
        /usr/bin/codesign -s - -f "$PREFIX/$1" >/dev/null 2>&1 || :
    fi
}

# apply_relocation_plan: what conda-unpack would rewrite, as offsets found when the installer was made.
apply_relocation_plan() {
    :
@@RELOCATION_PLAN@@}

# --- the installation ------------------------------------------------------------------------------

BATCH=0
FORCE=0
PREFIX=
while getopts "bfp:h" option; do
    case "$option" in
        b) BATCH=1 ;;
        f) FORCE=1 ;;
        p) PREFIX=$OPTARG ;;
        h)
            usage
            exit 0
            ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
done
shift $((OPTIND - 1))
if [ $# -gt 0 ]; then
    usage >&2
    exit 2
fi

[ "$(machine_platform)" = "$PLATFORM" ] ||
    fail "this installer is for $PLATFORM; this machine is $(machine_platform)"

actual_sha256=$(payload_sha256) ||
    fail "cannot check the payload: none of sha256sum, shasum or openssl is installed"
[ "$actual_sha256" = "$PAYLOAD_SHA256" ] ||
    fail "the payload is corrupted (sha256 $actual_sha256, expected $PAYLOAD_SHA256); download the installer again"

[ -n "$PREFIX" ] || PREFIX="${HOME:-}/$ENVIRONMENT_NAME"
if [ "$BATCH" = 0 ]; then
    printf 'This installs the conda environment %s (%s packages, %s).\n\n' "$DESCRIPTION" "$PACKAGE_COUNT" "$PLATFORM"
    printf 'Install location [%s]: ' "$PREFIX"
    if ! read -r answer; then
        echo
        fail "no answer; run with -b to install without questions"
    fi
    [ -z "$answer" ] || PREFIX=$answer
fi
# A "~" typed at the prompt is not expanded by read.
# shellcheck disable=SC2088
case "$PREFIX" in
    "~") PREFIX=$HOME ;;
    "~/"*) PREFIX="$HOME/${PREFIX#\~/}" ;;
esac
case "$PREFIX" in
    *"
"*) fail "the install location may not contain a newline" ;;
    /*) ;;
    *) PREFIX="$(pwd)/$PREFIX" ;;
esac
if [ -n "$LONGEST_PREFIX" ] && [ "${#PREFIX}" -gt "$LONGEST_PREFIX" ]; then
    fail "$PREFIX is too long: binary files of this environment take a prefix of at most $LONGEST_PREFIX bytes"
fi
if [ -e "$PREFIX" ] && [ "$FORCE" = 0 ] && { [ ! -d "$PREFIX" ] || [ -n "$(ls -A "$PREFIX")" ]; }; then
    fail "$PREFIX already exists; choose another location with -p PREFIX, or pass -f to install over it"
fi

mkdir -p "$PREFIX" || fail "cannot create $PREFIX"
PREFIX=$(cd "$PREFIX" && pwd) || fail "cannot enter $PREFIX"
printf 'Unpacking into %s\n' "$PREFIX"
# -o: files belong to whoever installs, not to the uid that packed them.
payload | gzip -dc | (cd "$PREFIX" && tar -xof -) || fail "unpacking into $PREFIX failed"

if PYTHON=$(find_python3); then
    printf 'Relocating with conda-unpack (%s)\n' "$PYTHON"
    "$PYTHON" "$PREFIX/bin/conda-unpack" || fail "conda-unpack failed: $PREFIX is not relocated"
else
    printf 'Relocating (no python 3 found: with the shell)\n'
    apply_relocation_plan
fi

cat <<EOF

Installed $DESCRIPTION into $PREFIX

To activate it (bash, zsh):
    source "$PREFIX/bin/activate"
and to deactivate it:
    source "$PREFIX/bin/deactivate"
With conda, this works too:
    conda activate "$PREFIX"
EOF
exit 0
