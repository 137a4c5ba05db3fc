# Shared by the tiny OS scripts (sourced, not run). POSIX sh.
#
# The boot sector (bootsector.bin, made by ../make_bootsector.py) prints
# "ganeti-ng tiny OS booted: <name>" on COM1 and halts; the name is the
# NUL-terminated text at byte NAME_OFFSET, at most NAME_SIZE - 1 bytes.

NAME_OFFSET=128
NAME_SIZE=256
OS_DIR=$(cd "$(dirname "$0")" && pwd)
BOOTSECTOR="$OS_DIR/bootsector.bin"

die() {
  echo "tiny: $*" >&2
  exit 1
}

# usage SCRIPT-NAME ARGS...: print a usage message and exit when called with
# arguments (the scripts take none; everything comes from the environment).
usage_if_args() {
  name=$1
  shift
  if [ $# -gt 0 ]; then
    echo "usage: $name (no arguments; the environment of ganeti-os-interface(7) says what to do)" >&2
    case $1 in -h|--help) exit 0 ;; esac
    exit 1
  fi
}

# first_disk: the path of disk 0, or die.
first_disk() {
  if [ "${DISK_COUNT:-0}" -lt 1 ] || [ -z "$DISK_0_PATH" ]; then
    die "instance ${INSTANCE_NAME:-?} has no disk with a path (DISK_COUNT=${DISK_COUNT:-unset})"
  fi
  printf '%s\n' "$DISK_0_PATH"
}

# write_name DISK NAME: put NAME (cut to NAME_SIZE - 1 bytes) NUL-terminated into the sector.
write_name() {
  dd if=/dev/zero of="$1" bs=1 seek=$NAME_OFFSET count=$NAME_SIZE conv=notrunc 2>/dev/null ||
    die "cannot write to $1"
  printf '%s' "$2" | dd of="$1" bs=1 seek=$NAME_OFFSET count=$((NAME_SIZE - 1)) conv=notrunc 2>/dev/null ||
    die "cannot write the instance name to $1"
}

if [ "${DEBUG_LEVEL:-0}" -gt 0 ]; then
  set -x
fi
