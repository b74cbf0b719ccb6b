#!/usr/bin/env bash
# Debian packages the node-runtime tests need (sourced by .ci/run; owned by the node-runtime work):
#   ShellCheck (pkg shellcheck) - lint every script under coderig/scripts
#   openssh-server    - the sshd test host (tests/test_node_ssh.py)
#   openssh-client    - ssh / ssh-keygen for that test
#   e2fsprogs xfsprogs util-linux fdisk - mkfs, blkid, losetup, mount, sfdisk for the loop-device volume tests
#   dmsetup           - a real holder (dm linear target) for tests/targets/test_volume.py (skipped without dm)
#   iproute2          - ip netns / veth for the SSH test host's own network namespace
#   sudo              - visudo -c checks the README's passwordless-sudo line (tests/cli/test_readme.py)
# Installs only what is missing, so a warm machine pays nothing.
node_deps_missing=()
for pair in shellcheck:shellcheck sshd:openssh-server ssh:openssh-client ssh-keygen:openssh-client \
  mkfs.ext4:e2fsprogs mkfs.xfs:xfsprogs losetup:util-linux blkid:util-linux sfdisk:fdisk dmsetup:dmsetup ip:iproute2 \
  visudo:sudo; do
  if ! command -v "${pair%%:*}" >/dev/null 2>&1 && ! [ -x "/usr/sbin/${pair%%:*}" ]; then
    node_deps_missing+=("${pair#*:}")
  fi
done
if [ "${#node_deps_missing[@]}" -gt 0 ]; then
  echo "node-deps: installing ${node_deps_missing[*]}"
  # shellcheck source=.ci/apt.sh
  source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
  ci_apt update -q
  mapfile -t node_deps_missing < <(printf '%s\n' "${node_deps_missing[@]}" | sort -u)
  ci_apt install -y -q --no-install-recommends \
    "${node_deps_missing[@]}"
fi
unset node_deps_missing pair
