#!/usr/bin/env bash
# coderig cache volume: makes CODERIG_CACHE_PATH ready to hold the weights.
#
# Without a device: creates the directory. With a block device, every check runs BEFORE anything is
# written (to the device, the fstab or the mount table); any failed check refuses, changing nothing:
#   - a file system of an accepted type (ext4, xfs): keep it, never format again;
#   - anything else blkid/wipefs can name (another file system, a partition table, swap, LVM, LUKS,
#     RAID member...): refuse;
#   - the device has holders (dm/LVM/dm-crypt/md), kernel partitions, is active swap, or is mounted
#     anywhere but on the cache path: refuse;
#   - the fstab already mounts something else on the cache path, or the cache path is already a mount
#     of another device: refuse (on a re-run this means CODERIG_CACHE_DEVICE now names another disk);
#   - no signature at all: format it (CODERIG_FS_TYPE) only if it is provably blank, i.e. reads as
#     zeros in its first and last 16 MiB and in 64 evenly spaced 1 MiB samples (~96 MiB read, whatever
#     the size). A new EBS volume or NVMe disk reads as zeros; a disk holding data without a signature
#     (plain dm-crypt, LUKS with a detached header, raw application data, a disk only wipefs'd) does not,
#     and is refused;
# then mount it by UUID through one fstab line (added once, never duplicated).
# Safe to run any number of times; it never formats a device that holds a file system or data.
#
# Parameters (environment variables; each also as a flag, e.g. --cache-device=/dev/nvme1n1):
#   CODERIG_CACHE_PATH    mount point / directory (default /var/lib/coderig/cache)
#   CODERIG_CACHE_DEVICE  block device for the cache (optional)
#   CODERIG_FS_TYPE       file system to create on a blank device: ext4 (default) | xfs
#   CODERIG_FSTAB         fstab file to edit (default /etc/fstab; tests point it elsewhere)
#   CODERIG_SYSFS         where sysfs is mounted (default /sys; a test gives a device a holder there
#                         on kernels without device-mapper)
set -euo pipefail

for arg in "$@"; do
  case "$arg" in
    --*=*)
      key="${arg%%=*}"
      key="${key#--}"
      key="CODERIG_$(printf '%s' "$key" | tr 'a-z-' 'A-Z_')"
      printf -v "$key" '%s' "${arg#*=}"
      export "${key?}"
      ;;
    -h | --help)
      # the script's header comment: what it does and every parameter
      if [ -f "${BASH_SOURCE[0]:-}" ]; then
        sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
      else
        echo "volume: see the header of scripts/SCRIPT.sh in the node bundle"
      fi
      exit 0
      ;;
    *)
      echo "volume: usage error: unknown argument '$arg' (use --name=value)" >&2
      exit 2
      ;;
  esac
done

CACHE_PATH="${CODERIG_CACHE_PATH:-/var/lib/coderig/cache}"
DEVICE="${CODERIG_CACHE_DEVICE:-}"
FS_TYPE="${CODERIG_FS_TYPE:-ext4}"
FSTAB="${CODERIG_FSTAB:-/etc/fstab}"
SYSFS="${CODERIG_SYSFS:-/sys}"
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
GIVEN="$DEVICE"
DEVICE="$(readlink -f "$DEVICE")"
[[ -b "$DEVICE" ]] || refuse "$GIVEN resolves to $DEVICE, which is not a block device"
# how messages name the device: the path given, and the device it resolves to when that differs
if [[ "$GIVEN" == "$DEVICE" ]]; then NAME="$DEVICE"; else NAME="$GIVEN ($DEVICE)"; fi
WIPE_HINT="if you are sure it is the right disk, wipe it yourself ('wipefs -a $DEVICE', then zero it: 'blkdiscard -z $DEVICE' or 'dd if=/dev/zero of=$DEVICE bs=16M oflag=direct') and re-run"

# ============================================================================================
# Checks. Nothing in this section writes anything; every refusal happens here.
# ============================================================================================

# The device's sysfs node, by major:minor (whatever its name: nvme1n1, loop3, dm-0, a partition).
MAJMIN="$((16#$(stat -L -c %t "$DEVICE"))):$((16#$(stat -L -c %T "$DEVICE")))"
SYS="$SYSFS/dev/block/$MAJMIN"
[[ -r "$SYS/size" ]] || refuse "$NAME has no $SYS in sysfs, so its users cannot be checked; not touching it"

# Low-level probe (-p): reads the device itself, not blkid's cache. Exit 2 means "nothing found".
probe() { # $1 = tag
  local out rc=0
  out="$(blkid -p -o value -s "$1" "$DEVICE" 2>/dev/null)" || rc=$?
  if ((rc != 0 && rc != 2)); then
    refuse "blkid could not probe $NAME (exit $rc); not touching it"
  fi
  printf '%s' "$out"
}

fs="$(probe TYPE)"
if [[ -z "$fs" ]]; then
  pt="$(probe PTTYPE)"
  [[ -z "$pt" ]] || refuse "$NAME has a $pt partition table and no file system; give a partition as the cache device, or $WIPE_HINT"
  FORMAT=1
else
  case " $ACCEPTED_FS " in
    *" $fs "*) FORMAT=0 ;;
    *) refuse "$NAME holds a '$fs' signature, not one of ($ACCEPTED_FS); refusing to format or mount it; $WIPE_HINT" ;;
  esac
fi

# Users of the device: device-mapper (LVM, dm-crypt) or md holders, kernel partitions, active swap.
shopt -s nullglob
holders=("$SYS"/holders/*)
parts=("$SYS"/*/partition)
shopt -u nullglob
if ((${#holders[@]})); then
  names=("${holders[@]##*/}")
  refuse "$NAME is held by ${names[*]} (LVM, dm-crypt, RAID or another device-mapper/md user); not touching it: check CODERIG_CACHE_DEVICE names the right disk"
fi
if ((${#parts[@]})); then
  names=()
  for part in "${parts[@]}"; do
    part="${part%/partition}"
    names+=("${part##*/}")
  done
  refuse "$NAME has partitions (${names[*]}); give a partition as the cache device, or $WIPE_HINT"
fi
while read -r swap _; do
  [[ "$swap" == /* && "$(readlink -f "$swap")" == "$DEVICE" ]] && refuse "$NAME is in use as swap; not touching it: check CODERIG_CACHE_DEVICE names the right disk"
done < <(tail -n +2 /proc/swaps 2>/dev/null || true)

# Mounts: the device's own (by major:minor, whatever name it was mounted by), and the cache path's.
dev_mounts="$(findmnt -rn -o MAJ:MIN,TARGET | awk -v d="$MAJMIN" '$1 == d { print $2 }')"
cache_mounted_here=0
if mountpoint -q "$CACHE_PATH" 2>/dev/null; then
  while read -r src_majmin src; do
    if [[ "$src_majmin" != "$MAJMIN" ]]; then
      refuse "$CACHE_PATH is already a mount of $src, not $NAME; not touching $NAME: check CODERIG_CACHE_DEVICE names the right disk, or unmount $CACHE_PATH"
    fi
    cache_mounted_here=1
  done < <(findmnt -rn -o MAJ:MIN,SOURCE --mountpoint "$CACHE_PATH")
fi
if [[ -n "$dev_mounts" ]]; then
  if ((FORMAT)); then
    refuse "$NAME is mounted on ${dev_mounts//$'\n'/ } but blkid finds no file system on it; not formatting it"
  elif ((!cache_mounted_here)); then
    refuse "$NAME is mounted on ${dev_mounts//$'\n'/ }, not on $CACHE_PATH; not mounting it twice: check CODERIG_CACHE_DEVICE names the right disk"
  fi
fi

# fstab: nothing else may mount the cache path; an existing volume's UUID may not be mounted elsewhere.
fstab_lines() { # non-comment lines, as "source mountpoint"
  [[ -e "$FSTAB" ]] || return 0
  awk '$1 !~ /^#/ && NF >= 2 { print $1, $2 }' "$FSTAB"
}
if ((FORMAT)); then
  other="$(fstab_lines | awk -v p="$CACHE_PATH" '$2 == p { print $1 }' | head -n1)"
  if [[ -n "$other" ]]; then
    refuse "$NAME holds no file system, but $FSTAB already mounts $other on $CACHE_PATH: CODERIG_CACHE_DEVICE probably names another disk than the cache volume (device names can change across reboots); not formatting it. Fix CODERIG_CACHE_DEVICE, or remove that fstab line if the old volume is gone for good"
  fi
else
  uuid="$(probe UUID)"
  [[ -n "$uuid" ]] || refuse "$NAME has a $fs file system without a UUID"
  other="$(fstab_lines | awk -v p="$CACHE_PATH" -v u="UUID=$uuid" '$2 == p && $1 != u { print $1 }' | head -n1)"
  [[ -z "$other" ]] || refuse "$FSTAB already mounts '$other' on $CACHE_PATH, not $NAME (UUID=$uuid); fix fstab by hand"
  existing="$(fstab_lines | awk -v u="UUID=$uuid" '$1 == u { print $2 }' | head -n1)"
  if [[ -n "$existing" && "$existing" != "$CACHE_PATH" ]]; then
    refuse "$FSTAB already mounts UUID=$uuid ($NAME) on $existing, not $CACHE_PATH; fix fstab by hand"
  fi
fi

# Provably blank: no signature anywhere wipefs looks, and zeros where a blank disk has zeros.
EDGE_BYTES=$((16 * 1024 * 1024))
SAMPLE_BYTES=$((1024 * 1024))
SAMPLES=64
zeros() { # $1 = offset, $2 = length: true when those bytes read back, all zero
  dd if="$DEVICE" bs=1M iflag=skip_bytes,count_bytes skip="$1" count="$2" status=none 2>/dev/null |
    cmp -s -n "$2" - /dev/zero
}
if ((FORMAT)); then
  sigs="$(wipefs --no-act --noheadings --output TYPE,OFFSET "$DEVICE" 2>/dev/null)" ||
    refuse "wipefs could not probe $NAME; not touching it"
  if [[ -n "$sigs" ]]; then
    refuse "$NAME carries signatures (${sigs//$'\n'/, }) that blkid did not report as a file system; not formatting it; $WIPE_HINT"
  fi
  size=$(($(<"$SYS/size") * 512))
  ((size > 0)) || refuse "$NAME has size 0"
  edge=$((size < EDGE_BYTES ? size : EDGE_BYTES))
  regions=("0 $edge" "$((size - edge)) $edge")
  if ((size > SAMPLE_BYTES)); then
    for ((i = 0; i < SAMPLES; i++)); do
      off=$(((size - SAMPLE_BYTES) * i / (SAMPLES - 1)))
      off=$((off - off % 4096))
      regions+=("$off $SAMPLE_BYTES")
    done
  fi
  for region in "${regions[@]}"; do
    read -r off len <<<"$region"
    zeros "$off" "$len" ||
      refuse "$NAME has no signature but is not blank: non-zero (or unreadable) bytes in the $len bytes at offset $off; it may hold data blkid cannot name (plain dm-crypt, LUKS with a detached header, raw data); not formatting it; $WIPE_HINT"
  done
fi

# ============================================================================================
# Writes: only now, with every check passed.
# ============================================================================================

if ((FORMAT)); then
  log "$NAME holds no file system and reads as blank: formatting it as $FS_TYPE"
  case "$FS_TYPE" in
    ext4) mkfs.ext4 -q -L coderig-cache "$DEVICE" ;;
    xfs) mkfs.xfs -q -L coderigcache "$DEVICE" ;; # xfs labels hold at most 12 characters
  esac
  fs="$(probe TYPE)"
  [[ "$fs" == "$FS_TYPE" ]] || refuse "after mkfs, blkid reports '$fs' on $NAME instead of $FS_TYPE"
  uuid="$(probe UUID)"
  [[ -n "$uuid" ]] || refuse "after mkfs, $NAME has no UUID"
else
  log "$NAME already holds a $fs file system: keeping it (no format)"
fi

# --- fstab: exactly one line for this UUID ----------------------------------------------------
if [[ -n "$(fstab_lines | awk -v u="UUID=$uuid" '$1 == u')" ]]; then
  log "$FSTAB already mounts UUID=$uuid on $CACHE_PATH"
else
  printf 'UUID=%s %s %s defaults,nofail 0 2 # coderig cache\n' "$uuid" "$CACHE_PATH" "$fs" >>"$FSTAB"
  log "added UUID=$uuid -> $CACHE_PATH to $FSTAB"
fi

# --- mount ------------------------------------------------------------------------------
if ((cache_mounted_here)); then
  log "$NAME already mounted on $CACHE_PATH"
else
  mkdir -p "$CACHE_PATH"
  if [[ -n "$(ls -A "$CACHE_PATH")" ]]; then
    log "warning: $CACHE_PATH is not empty; mounting $NAME hides what is there"
  fi
  mount -T "$FSTAB" "$CACHE_PATH"
  log "mounted $NAME ($fs, UUID=$uuid) on $CACHE_PATH"
fi
