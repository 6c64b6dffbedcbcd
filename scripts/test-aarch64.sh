#!/usr/bin/env bash
# The Raspberry Pi userland, proven on an x86 box: builds a Debian bookworm arm64 root (Raspberry Pi OS
# bookworm is Debian bookworm) with debootstrap, runs it under qemu-user emulation, clones this repository
# (its committed HEAD) and ../shared into it, runs scripts/setup.sh and the test suite there, and prints the
# times, the test summary and whether every built model matches the sha256 its manifest pins.
# A manual check, not CI: hours on 2 cores, as qemu-user does floating point in software (about 90 min of
# int8 calibration in set-up alone); run it under `nice -n 19` on a shared machine. Figures: README.md.
#
#   sudo scripts/test-aarch64.sh [--root DIR] [--keep] [--reuse] [--jobs N] [--time-scale N] [--mirror URL]
#
#   --root DIR        where the arm64 root goes (default /var/tmp/edge-aarch64); rebuilt from scratch
#   --keep            leave the root (and its logs) in place afterwards for inspection
#   --reuse           keep the root of an earlier --keep run: no debootstrap; its clone moves to this HEAD and
#                     setup.sh installs what changed and rebuilds only artifacts whose pins changed (implies --keep)
#   --jobs N          run the suite as N pytest processes, test files dealt round-robin (default 1)
#   --time-scale N    EDGE_TEST_TIME_SCALE for the suite (default 10: emulation is 10-20x slower)
#   --mirror URL      Debian mirror for debootstrap (default http://deb.debian.org/debian)
#
# Needs root, and the apt packages debootstrap and qemu-user-static. Environment: SHARED (default ../shared
# beside the repository), PIP_CERT (a CA bundle pip inside the root should trust, copied in when set: a
# TLS-intercepting proxy's CA). Exit status 0 only when set-up succeeded, the hashes matched and the suite
# passed.
#
# What the emulated run does not prove: speed (emulation), XNNPACK's int8 partitioning (with /sys hidden,
# cpuinfo cannot read the CPU and XNNPACK takes no int8 graph; those tests skip naming this), the camera,
# GPIO and the Edge TPU. Three marks of tests skip here by name (tests/conftest.py), as qemu-user does
# floating point in software (the models run 150-300x slower, about 2 s a frame): `requantizes` (re-runs a
# real model's float64 calibration, about 40 min each; the set-up ran that pass and its hash check covers
# it), `many_frames` (clips or the whole dev set through the active pipeline) and `realtime` (sessions
# against wall-clock deadlines: the watchdog, the controller's).
# /sys is deliberately not mounted: with it visible, qemu-user 7.2 reports CPU
# features that make XNNPACK pick kernels that crash in allocate_tensors.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=/var/tmp/edge-aarch64
KEEP=0
REUSE=0
JOBS=1
SCALE=10
MIRROR=http://deb.debian.org/debian
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --reuse) REUSE=1; KEEP=1; shift ;;
    --jobs) JOBS=$2; shift 2 ;;
    --time-scale) SCALE=$2; shift 2 ;;
    --mirror) MIRROR=$2; shift 2 ;;
    -h|--help) sed -n 2,25p "$0"; exit 0 ;;
    *) echo "test-aarch64.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
SHARED=${SHARED:-$(cd "$REPO/.." && pwd)/shared}
die() { echo "test-aarch64.sh: $*" >&2; exit 2; }
case "$ROOT" in /|/usr|/var|/home|/tmp|"") die "refusing --root $ROOT" ;; esac
case "$JOBS" in ''|*[!0-9]*|0) die "--jobs wants a whole number >= 1, not '$JOBS'" ;; esac
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mounts)"
command -v debootstrap >/dev/null || die "debootstrap missing: apt-get install debootstrap qemu-user-static"
[ -f /usr/lib/binfmt.d/qemu-aarch64.conf ] || die "qemu-user-static missing: apt-get install qemu-user-static"
[ -d "$SHARED" ] || die "no dev data at $SHARED (set SHARED=...)"
if [ "$REUSE" = 1 ] && [ ! -x "$ROOT/opt/edge/edge/.venv/bin/python" ]; then
  die "--reuse: no earlier root with a set-up clone at $ROOT (run once with --keep first)"
fi

# binfmt_misc: let the kernel hand aarch64 ELF files to qemu (the F flag opens the interpreter now, so it
# need not exist inside the root).
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf | head -n 1 > /proc/sys/fs/binfmt_misc/register
fi
grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "binfmt entry qemu-aarch64 is not enabled"

mounted() { awk -v r="$ROOT" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r; }
cleanup() {
  for m in $(mounted); do umount -l "$m" || true; done
  if [ "$KEEP" = 0 ] && [ -z "$(mounted)" ]; then rm -rf "$ROOT"; fi
}
for m in $(mounted); do umount -l "$m"; done
[ -z "$(mounted)" ] || die "something is still mounted under $ROOT"
[ "$REUSE" = 1 ] || rm -rf "$ROOT"
mkdir -p "$ROOT"
trap cleanup EXIT
LOG=$ROOT.log
: > "$LOG"
say() { echo "[aarch64] $*" | tee -a "$LOG" >&2; }
now() { date +%s; }

if [ "$REUSE" = 1 ]; then
  t_boot="reused $ROOT (debootstrap skipped)"
  say "$t_boot"
else
  t0=$(now)
  say "debootstrap --arch=arm64 bookworm $ROOT ($MIRROR)"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$ROOT" "$MIRROR" >> "$LOG" 2>&1 || die "debootstrap failed (see $LOG)"
  t_boot="$(( $(now) - t0 )) s"
  say "debootstrap: ${t_boot}"
fi

# What any installed Debian has and debootstrap leaves out: a resolver config and /etc/hosts (localhost).
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOT/etc/hosts"
ca_env=()
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
  cp "$PIP_CERT" "$ROOT/etc/ssl/certs/pip-ca.crt"
  ca_env=(PIP_CERT=/etc/ssl/certs/pip-ca.crt)
fi
# /proc, /dev and /dev/pts (the pty tests need devpts); never /sys, see above.
mount --bind /proc "$ROOT/proc"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"

mkdir -p "$ROOT/opt/edge"
if [ "$REUSE" = 1 ]; then
  # the committed HEAD, as a fresh clone would have it; the git-ignored .venv and models/build stay
  git -C "$ROOT/opt/edge/edge" fetch -q "$REPO" HEAD
  git -C "$ROOT/opt/edge/edge" checkout -q -f FETCH_HEAD
  git -C "$ROOT/opt/edge/edge" clean -q -f -d
else
  git clone -q "$REPO" "$ROOT/opt/edge/edge"
fi
rm -rf "$ROOT/opt/edge/shared"
mkdir "$ROOT/opt/edge/shared"
cp -a "$(readlink -f "$SHARED")/." "$ROOT/opt/edge/shared/"  # the data, not a symlink that points outside the root
say "$([ "$REUSE" = 1 ] && echo moved the clone to || echo cloned) $(git -C "$REPO" rev-parse --short HEAD) ($(git -C "$REPO" rev-parse --abbrev-ref HEAD)) and copied $SHARED"

inside() {
  chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 "${ca_env[@]}" EDGE_TEST_TIME_SCALE="$SCALE" EDGE_TEST_EMULATED=qemu-user \
    /bin/bash -c "cd /opt/edge/edge && $1"
}
say "$(inside 'uname -m; python3 --version' | tr '\n' ' ')"

t0=$(now)
setup_ok=1
inside 'scripts/setup.sh --no-run' >> "$LOG" 2>&1 || setup_ok=0
t_setup=$(( $(now) - t0 ))
say "scripts/setup.sh --no-run: ${t_setup} s ($([ $setup_ok = 1 ] && echo ok || echo FAILED))"

hash_ok=0
if [ "$setup_ok" = 1 ]; then
  inside '.venv/bin/edge models list' | tee -a "$LOG" > "$ROOT.models" || true
  # the hash column is the 4th; optional models (face-match) say "not built" and are not counted
  ok=$(awk '$4 == "ok"' "$ROOT.models" | wc -l)
  manifests=$(inside '.venv/bin/python -c "from edge.models import registry; print(sum(len(m.artifacts) for m in registry.list_manifests()))"')
  say "model hashes: $ok of $manifests artifacts match the sha256 their manifests pin"
  [ "$ok" = "$manifests" ] && hash_ok=1
fi

t0=$(now)
tests_ok=0
rm -f "$ROOT".pytest*
if [ "$setup_ok" = 1 ]; then
  # deal the test files round-robin over JOBS pytest processes (no pytest-xdist in the lock)
  mapfile -t files < <(git -C "$REPO" ls-files 'tests/test_*.py' 'firmware_bridge/tests/test_*.py')
  pids=()
  for ((j = 0; j < JOBS; j++)); do
    shard=()
    for ((i = j; i < ${#files[@]}; i += JOBS)); do shard+=("${files[i]}"); done
    inside ".venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 ${shard[*]}" > "$ROOT.pytest.$j" 2>&1 &
    pids+=($!)
  done
  tests_ok=1
  for p in "${pids[@]}"; do wait "$p" || tests_ok=0; done
  cat "$ROOT".pytest.* > "$ROOT.pytest"
  cat "$ROOT.pytest" >> "$LOG"
fi
t_tests=$(( $(now) - t0 ))
# one summary for all shards: add up the counts of each shard's last line ("N passed, M skipped in ...")
summary=$(for f in "$ROOT".pytest.*; do tail -n 1 "$f"; done 2>/dev/null | grep -oE '[0-9]+ (passed|failed|skipped|errors?|xfailed|xpassed|deselected)' \
  | awk '{ n[$2] += $1 } END { s = ""; for (k in n) s = s (s ? ", " : "") n[k] " " k; print (s ? s : "not run") }')

echo
echo "== aarch64 (Debian bookworm arm64 under qemu-user, $(qemu-aarch64-static --version | head -n 1)) =="
echo "commit:        $(git -C "$REPO" rev-parse --short HEAD)"
echo "debootstrap:   ${t_boot}"
echo "setup.sh:      ${t_setup} s ($([ $setup_ok = 1 ] && echo ok || echo FAILED))"
if [ "$setup_ok" = 1 ]; then
  echo "model hashes:  $([ $hash_ok = 1 ] && echo "all $manifests artifacts match the sha256 their manifests pin" || echo "MISMATCH ($ok of $manifests match)")"
else
  echo "model hashes:  not checked (set-up failed)"
fi
echo "tests:         ${summary} (${t_tests} s, $JOBS process(es), EDGE_TEST_TIME_SCALE=$SCALE)"
grep -E '^(SKIPPED|FAILED|ERROR)' "$ROOT.pytest" 2>/dev/null | sed 's/^/  /' || true
echo "log:           $LOG"
[ "$setup_ok" = 1 ] && [ "$hash_ok" = 1 ] && [ "$tests_ok" = 1 ]
