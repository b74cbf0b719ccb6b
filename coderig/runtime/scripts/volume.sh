#!/usr/bin/env bash
# coderig cache volume: makes CODERIG_CACHE_PATH ready to hold the weights.
#
# Without a device: creates the directory. With a block device:
#   - no file system on it (blkid finds none, and no partition table): format it (CODERIG_FS_TYPE);
#   - a file system of an accepted type (ext4, xfs): keep it, never format again;
#   - anything else (another file system, a partition table, swap, RAID member...): refuse, change nothing;
# then mount it by UUID through one fstab line (added once, never duplicated).
# Safe to run any number of times; it never formats a device that holds a file system.
#
# Parameters (environment variables; each also as a flag, e.g. --cache-device=/dev/nvme1n1):
#   CODERIG_CACHE_PATH    mount point / directory (default /var/lib/coderig/cache)
#   CODERIG_CACHE_DEVICE  block device for the cache (optional)
#   CODERIG_FS_TYPE       file system to create on a blank device: ext4 (default) | xfs
#   CODERIG_FSTAB         fstab file to edit (default /etc/fstab; tests point it elsewhere)
set -euo pipefail

# @coderig-arguments: the shared --name=value prelude (coderig/runtime/scripts/arguments.sh) goes here

CACHE_PATH="${CODERIG_CACHE_PATH:-/var/lib/coderig/cache}"
DEVICE="${CODERIG_CACHE_DEVICE:-}"
FS_TYPE="${CODERIG_FS_TYPE:-ext4}"
FSTAB="${CODERIG_FSTAB:-/etc/fstab}"
ACCEPTED_FS="ext4 xfs"

log() { printf 'volume: %s\n' "$*"; }
refuse() {
  printf 'volume: REFUSED %s\n' "$*" >&2
  exit 1
}

case "$CACHE_PATH" in
  /*) ;;
  *) refuse "cache path '$CACHE_PATH' must be absolute" ;;
esac
case " $ACCEPTED_FS " in
  *" $FS_TYPE "*) ;;
  *) refuse "CODERIG_FS_TYPE '$FS_TYPE' is not one of: $ACCEPTED_FS" ;;
esac

if [[ -z "$DEVICE" ]]; then
  mkdir -p "$CACHE_PATH"
  log "cache is the directory $CACHE_PATH"
  exit 0
fi

[[ -b "$DEVICE" ]] || refuse "$DEVICE is not a block device"
DEVICE="$(readlink -f "$DEVICE")"

# Low-level probe (-p): reads the device itself, not blkid's cache. Exit 2 means "nothing found".
probe() { # $1 = tag
  local out rc=0
  out="$(blkid -p -o value -s "$1" "$DEVICE" 2>/dev/null)" || rc=$?
  if ((rc != 0 && rc != 2)); then
    refuse "blkid could not probe $DEVICE (exit $rc); not touching it"
  fi
  printf '%s' "$out"
}

fs="$(probe TYPE)"
if [[ -z "$fs" ]]; then
  pt="$(probe PTTYPE)"
  [[ -z "$pt" ]] || refuse "$DEVICE has a $pt partition table and no file system; use a partition or wipe it yourself"
  # A device mounted (or used) somewhere must never be formatted, whatever blkid says.
  if findmnt -rn -S "$DEVICE" >/dev/null 2>&1; then
    refuse "$DEVICE is mounted but blkid finds no file system on it; not formatting"
  fi
  log "$DEVICE holds no file system: formatting it as $FS_TYPE"
  case "$FS_TYPE" in
    ext4) mkfs.ext4 -q -L coderig-cache "$DEVICE" ;;
    xfs) mkfs.xfs -q -L coderig-cache "$DEVICE" ;;
  esac
  fs="$(probe TYPE)"
  [[ "$fs" == "$FS_TYPE" ]] || refuse "after mkfs, blkid reports '$fs' on $DEVICE instead of $FS_TYPE"
else
  case " $ACCEPTED_FS " in
    *" $fs "*) log "$DEVICE already holds a $fs file system: keeping it (no format)" ;;
    *) refuse "$DEVICE holds a '$fs' signature, not one of ($ACCEPTED_FS); refusing to format or mount it" ;;
  esac
fi

uuid="$(probe UUID)"
[[ -n "$uuid" ]] || refuse "$DEVICE has a $fs file system without a UUID"

# --- fstab: exactly one line for this UUID, and no other line for this mount point ---------
touch "$FSTAB"
existing="$(awk -v u="UUID=$uuid" '$1 == u { print $2 }' "$FSTAB")"
other="$(awk -v p="$CACHE_PATH" -v u="UUID=$uuid" '$1 !~ /^#/ && $2 == p && $1 != u { print $1 }' "$FSTAB")"
[[ -z "$other" ]] || refuse "$FSTAB already mounts '$other' on $CACHE_PATH; fix fstab by hand"
if [[ -z "$existing" ]]; then
  printf 'UUID=%s %s %s defaults,nofail 0 2 # coderig cache\n' "$uuid" "$CACHE_PATH" "$fs" >>"$FSTAB"
  log "added UUID=$uuid -> $CACHE_PATH to $FSTAB"
elif [[ "$existing" != "$CACHE_PATH" ]]; then
  refuse "$FSTAB already mounts UUID=$uuid on $existing, not $CACHE_PATH; fix fstab by hand"
else
  log "$FSTAB already mounts UUID=$uuid on $CACHE_PATH"
fi

# --- mount ------------------------------------------------------------------------------
mkdir -p "$CACHE_PATH"
if mountpoint -q "$CACHE_PATH"; then
  src="$(findmnt -rn -o SOURCE --mountpoint "$CACHE_PATH" | head -n1)"
  if [[ "$(readlink -f "$src")" != "$DEVICE" ]]; then
    refuse "$CACHE_PATH is already a mount of $src, not $DEVICE"
  fi
  log "$DEVICE already mounted on $CACHE_PATH"
else
  if [[ -n "$(ls -A "$CACHE_PATH")" ]]; then
    log "warning: $CACHE_PATH is not empty; mounting $DEVICE hides what is there"
  fi
  mount -T "$FSTAB" "$CACHE_PATH"
  log "mounted $DEVICE ($fs, UUID=$uuid) on $CACHE_PATH"
fi
