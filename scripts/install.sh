#!/usr/bin/env bash
# Install edge as a hardened systemd service on Raspberry Pi OS (bookworm, trixie).
#
#   sudo ./scripts/install.sh                 install (or upgrade) and enable the service
#   sudo ./scripts/install.sh --start         ... and (re)start it now
#   sudo ./scripts/install.sh --uninstall     stop, disable and remove it (keeps /etc/edge)
#   sudo ./scripts/install.sh --uninstall --purge   ... and delete /etc/edge (config, HMAC key)
#   ./scripts/install.sh --dry-run [...]      print what would be done, change nothing
#
# Options:
#   --root DIR       install under DIR instead of / (staging an image, tests); implies
#                    --no-apt and no systemctl/groupadd calls
#   --no-apt         do not install OS packages
#   --no-venv        do not create the venv, pip install or build models
#   --no-models      do not fetch/build the models
#   --with-socat     also install socat (pty pairs for bench-testing the serial link)
#   --weights DIR    Silent-Face weights folder for `edge models build` (else downloaded)
#
# What it installs:
#   apt:      python3-venv, python3-picamera2, python3-lgpio (or python3-rpi-lgpio)
#   /opt/edge/.venv          venv with --system-site-packages (picamera2/lgpio from apt)
#   /opt/edge/models         model manifests + built, sha256-verified models
#   /etc/edge/edge.toml      config (root:root 0640, from systemd/edge.toml.example, if absent)
#   /etc/edge/hmac.key       controller link key (root:root 0600, generated if absent)
#   /etc/systemd/system/edge.service
#   /etc/systemd/system/edge.service.d/devices.conf   DeviceAllow= exactly the configured devices
#   /etc/systemd/journald.conf.d/edge-volatile.conf   Storage=volatile (whole device!)
#   /etc/systemd/coredump.conf.d/edge.conf            Storage=none
# The service runs as a DynamicUser; config and key reach it as systemd
# credentials, so neither file has to be readable by any other user.
set -euo pipefail
# The service runs as a dynamic user: everything under /opt/edge must be world-readable
# whatever root's umask is. (The key is written under its own umask 077.)
umask 022

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=/
DRY_RUN=0
UNINSTALL=0
PURGE=0
DO_APT=1
DO_VENV=1
DO_MODELS=1
DO_START=0
WITH_SOCAT=0
WEIGHTS=${EDGE_WEIGHTS:-}
# The OS interpreter: apt's python3-picamera2/python3-lgpio are built for it.
PY=${PYTHON:-/usr/bin/python3}

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --uninstall) UNINSTALL=1 ;;
    --purge) PURGE=1 ;;
    --root) shift; ROOT=${1:?--root needs a directory} ;;
    --root=*) ROOT=${1#--root=} ;;
    --no-apt) DO_APT=0 ;;
    --no-venv) DO_VENV=0; DO_MODELS=0 ;;
    --no-models) DO_MODELS=0 ;;
    --start) DO_START=1 ;;
    --with-socat) WITH_SOCAT=1 ;;
    --weights) shift; WEIGHTS=${1:?--weights needs a directory} ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$PURGE" = 1 ] && [ "$UNINSTALL" = 0 ]; then
  echo "install.sh: --purge only goes with --uninstall" >&2; exit 2
fi

ROOT=${ROOT%/}
SYSTEM=1  # talk to this machine's apt/systemd/groups
if [ -n "$ROOT" ]; then
  [ -d "$ROOT" ] || { echo "install.sh: --root $ROOT is not a directory" >&2; exit 2; }
  ROOT=$(cd "$ROOT" && pwd)
  [ "$ROOT" = / ] && ROOT=""
fi
if [ -n "$ROOT" ]; then SYSTEM=0; DO_APT=0; fi

PREFIX=/opt/edge
VENV=$PREFIX/.venv
MODELS=$PREFIX/models
ETC=/etc/edge
CONFIG=$ETC/edge.toml
KEY=$ETC/hmac.key
UNIT=/etc/systemd/system/edge.service
JOURNALD_DROPIN=/etc/systemd/journald.conf.d/edge-volatile.conf
COREDUMP_DROPIN=/etc/systemd/coredump.conf.d/edge.conf
DEVICES_DROPIN=/etc/systemd/system/edge.service.d/devices.conf

DONE=()
say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
did() { DONE+=("$*"); }

# Every change goes through run(): printed, and executed unless --dry-run.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '    would run: %s\n' "$*"
  else
    printf '    + %s\n' "$*"
    "$@"
  fi
}

OWNER=()
if [ "$(id -u)" = 0 ]; then OWNER=(-o root -g root); fi

if [ "$DRY_RUN" = 0 ] && [ "$SYSTEM" = 1 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo $0 $*), or use --dry-run / --root DIR" >&2
  exit 1
fi

codename() {
  local f=$ROOT/etc/os-release
  [ -r "$f" ] || { echo unknown; return; }
  # shellcheck disable=SC1090
  (. "$f"; echo "${VERSION_CODENAME:-unknown}")
}

apt_has() { apt-cache show "$1" >/dev/null 2>&1; }

# --------------------------------------------------------------------------- uninstall
do_uninstall() {
  say "uninstalling edge (root: ${ROOT:-/})"
  if [ "$SYSTEM" = 1 ] && command -v systemctl >/dev/null 2>&1; then
    if systemctl list-unit-files edge.service >/dev/null 2>&1 && [ -e "$UNIT" ]; then
      run systemctl disable --now edge.service || warn "could not stop/disable edge.service"
      did "stopped and disabled edge.service"
    fi
  fi
  for f in "$UNIT" "$DEVICES_DROPIN" "$JOURNALD_DROPIN" "$COREDUMP_DROPIN"; do
    if [ -e "$ROOT$f" ]; then run rm -f "$ROOT$f"; did "removed $f"; fi
  done
  if [ "$SYSTEM" = 1 ] && command -v systemctl >/dev/null 2>&1; then
    run systemctl daemon-reload
    run systemctl restart systemd-journald || warn "could not restart systemd-journald"
    did "reloaded systemd; journald back to its default Storage="
  fi
  if [ -e "$ROOT$PREFIX" ]; then run rm -rf "$ROOT$PREFIX"; did "removed $PREFIX (venv, models)"; fi
  if [ "$PURGE" = 1 ]; then
    if [ -e "$ROOT$ETC" ]; then run rm -rf "$ROOT$ETC"; did "removed $ETC (config and HMAC key)"; fi
  elif [ -e "$ROOT$ETC" ]; then
    note "kept $ETC (config and HMAC key); --uninstall --purge removes them"
  fi
  note "OS packages (python3-picamera2, python3-lgpio, ...) are left installed: other software may use them"
}

# --------------------------------------------------------------------------- install steps
step_apt() {
  [ "$DO_APT" = 1 ] || { note "skipping OS packages (--no-apt or --root)"; return; }
  local cn; cn=$(codename)
  case "$cn" in
    bookworm|trixie) ;;
    *) warn "this is '$cn', not Raspberry Pi OS bookworm or trixie: continuing, untested" ;;
  esac
  say "installing OS packages ($cn)"
  run apt-get update
  local pkgs=(python3-venv)
  # picamera2 (libcamera) only exists in the Raspberry Pi archive; a USB camera needs none of it.
  if apt_has python3-picamera2; then pkgs+=(python3-picamera2); else warn "python3-picamera2 not available here: only v4l2:// (USB) cameras will work"; fi
  if apt_has python3-lgpio; then pkgs+=(python3-lgpio)
  elif apt_has python3-rpi-lgpio; then pkgs+=(python3-rpi-lgpio)
  else warn "neither python3-lgpio nor python3-rpi-lgpio is available: GPIO trigger/relay will not work"; fi
  if [ "$WITH_SOCAT" = 1 ]; then pkgs+=(socat); fi
  # --no-install-recommends: picamera2 recommends the Qt/OpenGL preview stack, useless headless.
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}"
  did "installed OS packages: ${pkgs[*]}"
}

step_group() {
  [ "$SYSTEM" = 1 ] || return 0
  # SupplementaryGroups=gpio in the unit: a missing group fails the start with 216/GROUP.
  if ! getent group gpio >/dev/null; then
    run groupadd --system gpio
    did "created system group gpio"
  fi
}

step_venv() {
  [ "$DO_VENV" = 1 ] || { note "skipping venv and pip install (--no-venv)"; return; }
  say "installing the package into $VENV"
  run install -d -m 0755 "${OWNER[@]}" "$ROOT$PREFIX"
  if [ ! -x "$ROOT$VENV/bin/python" ]; then
    # --system-site-packages: picamera2 and lgpio come from apt and must stay visible.
    run "$PY" -m venv --system-site-packages "$ROOT$VENV"
    did "created $VENV (with system site-packages)"
  fi
  local constraints=()
  # apt's picamera2/simplejpeg are built against apt's numpy; a newer numpy from pip
  # would shadow it and break them, so pin pip to the numpy apt already installed.
  local sys_numpy
  sys_numpy=$("$PY" -c 'import numpy
if numpy.__file__.startswith("/usr/lib/python3/"): print(numpy.__version__)' 2>/dev/null || true)
  if [ -n "$sys_numpy" ]; then
    local cfile=$ROOT$PREFIX/constraints.txt
    if [ "$DRY_RUN" = 1 ]; then
      note "would write $cfile: numpy==$sys_numpy (apt's numpy, which picamera2 was built against)"
    else
      printf 'numpy==%s\n' "$sys_numpy" > "$cfile"
    fi
    constraints=(-c "$cfile")
  fi
  local extra=""
  if [ "$(uname -m)" = aarch64 ]; then extra="[pi]"; fi
  run "$ROOT$VENV/bin/python" -m pip install --disable-pip-version-check --no-cache-dir \
    "${constraints[@]}" "$SRC$extra"
  did "installed edge from $SRC into $VENV"
}

step_models() {
  say "model manifests and builds in $MODELS"
  run install -d -m 0755 "${OWNER[@]}" "$ROOT$MODELS"
  local m
  for m in "$SRC"/models/*.toml; do
    run install -m 0644 "${OWNER[@]}" "$m" "$ROOT$MODELS/$(basename "$m")"
  done
  did "installed model manifests into $MODELS"
  [ "$DO_MODELS" = 1 ] || { note "skipping model fetch/build (--no-models or --no-venv)"; return; }
  local wargs=()
  if [ -n "$WEIGHTS" ]; then wargs=(--weights "$WEIGHTS"); fi
  run env EDGE_MODELS_DIR="$ROOT$MODELS" "$ROOT$VENV/bin/edge" models fetch
  run env EDGE_MODELS_DIR="$ROOT$MODELS" "$ROOT$VENV/bin/edge" models build "${wargs[@]}"
  run chmod -R a+rX,go-w "$ROOT$MODELS"
  did "fetched and built the models (sha256-verified against the manifests)"
}

step_config() {
  say "configuration in $ETC"
  # 0755: the directory itself reveals nothing; the files in it are root-only.
  run install -d -m 0755 "${OWNER[@]}" "$ROOT$ETC"
  if [ -e "$ROOT$CONFIG" ]; then
    note "$CONFIG exists: left as it is"
  else
    run install -m 0640 "${OWNER[@]}" "$SRC/systemd/edge.toml.example" "$ROOT$CONFIG"
    did "installed $CONFIG (root:root 0640; edit camera.source and serial.port)"
  fi
  if [ -x "$ROOT$VENV/bin/edge" ] && [ "$DRY_RUN" = 0 ]; then
    "$ROOT$VENV/bin/edge" config --check "$ROOT$CONFIG" >/dev/null \
      || warn "$CONFIG does not validate: run $VENV/bin/edge config --check $CONFIG"
  fi
}

step_key() {
  if [ -e "$ROOT$KEY" ]; then
    note "$KEY exists: kept (mode and owner set to root 0600)"
    run chmod 0600 "$ROOT$KEY"
    if [ "${#OWNER[@]}" -gt 0 ]; then run chown root:root "$ROOT$KEY"; fi
    return
  fi
  if [ "$DRY_RUN" = 1 ]; then
    note "would generate $KEY: 32 random bytes as 64 hex digits, root:root 0600"
    return
  fi
  # umask first: the key never exists with a looser mode, not even for a moment.
  ( umask 077
    tmp=$(mktemp "$ROOT$ETC/.hmac.key.XXXXXX")
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$tmp"
    printf '\n' >> "$tmp"
    chmod 0600 "$tmp"
    mv -f "$tmp" "$ROOT$KEY" )
  if [ "${#OWNER[@]}" -gt 0 ]; then chown root:root "$ROOT$KEY"; fi
  printf '    + generated %s (root 0600)\n' "$KEY"
  did "generated the HMAC key $KEY: install the same 64 hex digits on the controller (sudo cat $KEY)"
  # The fingerprint is safe to show; the controller's must match it.
  if [ -x "$ROOT$VENV/bin/edge" ]; then
    "$ROOT$VENV/bin/edge" bridge fingerprint --key-file "$ROOT$KEY" 2>/dev/null | sed 's/^/    key fingerprint: /' || true
  fi
}

step_systemd_files() {
  say "systemd unit and drop-ins"
  run install -D -m 0644 "${OWNER[@]}" "$SRC/systemd/edge.service" "$ROOT$UNIT"
  did "installed $UNIT"
  run install -D -m 0644 "${OWNER[@]}" "$SRC/systemd/journald.conf.d/edge-volatile.conf" "$ROOT$JOURNALD_DROPIN"
  did "installed $JOURNALD_DROPIN (journal kept in RAM only, for every service on this device)"
  run install -D -m 0644 "${OWNER[@]}" "$SRC/systemd/coredump.conf.d/edge.conf" "$ROOT$COREDUMP_DROPIN"
  did "installed $COREDUMP_DROPIN (core dumps neither processed nor stored)"
  step_devices_dropin
}

# DeviceAllow= naming exactly the nodes the config uses (edge/service/devices.py), instead
# of the unit's device classes (every USB and serial node). Re-run after a config change.
step_devices_dropin() {
  local py=$PY
  if [ -x "$ROOT$VENV/bin/python" ]; then py=$ROOT$VENV/bin/python; elif [ -x "$SRC/.venv/bin/python" ]; then py=$SRC/.venv/bin/python; fi
  if [ "$DRY_RUN" = 1 ]; then
    note "would write $DEVICES_DROPIN: DeviceAllow= for the camera, serial port, GPIO chip and Edge TPU named in $CONFIG"
    return
  fi
  local text
  if ! text=$(PYTHONPATH="$SRC" "$py" -m edge.service.devices --config "$ROOT$CONFIG" --as "$CONFIG"); then
    warn "could not compute the devices drop-in from $CONFIG; the unit keeps its device classes"
    return
  fi
  install -d -m 0755 "$ROOT$(dirname "$DEVICES_DROPIN")"
  printf '%s\n' "$text" > "$ROOT$DEVICES_DROPIN"
  chmod 0644 "$ROOT$DEVICES_DROPIN"
  printf '    + wrote %s\n' "$DEVICES_DROPIN"
  did "wrote $DEVICES_DROPIN ($(grep -c '^DeviceAllow=/\|^DeviceAllow=char' "$ROOT$DEVICES_DROPIN") device nodes/classes from $CONFIG)"
}

step_systemctl() {
  [ "$SYSTEM" = 1 ] || { note "skipping systemctl (--root)"; return; }
  command -v systemctl >/dev/null 2>&1 || { warn "systemctl not found: enable edge.service yourself"; return; }
  say "activating"
  run systemctl daemon-reload
  run systemctl restart systemd-journald
  did "restarted systemd-journald (Storage=volatile now in effect)"
  if [ -d /var/log/journal ]; then
    note "/var/log/journal still holds earlier persistent logs; remove them with: sudo rm -rf /var/log/journal"
  fi
  if systemctl is-active --quiet rsyslog 2>/dev/null; then
    warn "rsyslog is running and writes the journal's messages to /var/log: disable it (sudo systemctl disable --now rsyslog) or exclude edge"
  fi
  run systemctl enable edge.service
  did "enabled edge.service (starts at boot)"
  if [ "$DO_START" = 1 ]; then
    run systemctl restart edge.service
    did "started edge.service"
  fi
  if command -v systemd-analyze >/dev/null 2>&1 && [ "$DRY_RUN" = 0 ]; then
    local score
    local verr
    verr=$(systemd-analyze verify "$UNIT" 2>&1 >/dev/null) || true
    [ -z "$verr" ] || warn "systemd-analyze verify reported problems with $UNIT (and its drop-ins): $verr"
    score=$(systemd-analyze security --no-pager edge.service 2>/dev/null | sed -n 's/.*Overall exposure level for edge.service: \([0-9.]*\).*/\1/p')
    note "systemd-analyze security edge.service: ${score:-unknown} (lower is better; 0-2 is 'safe')"
  fi
}

summary() {
  echo
  if [ "$DRY_RUN" = 1 ]; then echo "Dry run: nothing was changed. It would have:"; else echo "Done:"; fi
  local d
  for d in "${DONE[@]+"${DONE[@]}"}"; do printf '  - %s\n' "$d"; done
  if [ "$UNINSTALL" = 0 ]; then
    echo "Next: edit $CONFIG (camera.source, serial.port), then: sudo systemctl restart edge;"
    echo "      check the device with: sudo $VENV/bin/edge doctor --config $CONFIG"
  fi
}

if [ "$UNINSTALL" = 1 ]; then
  do_uninstall
else
  say "installing edge from $SRC (root: ${ROOT:-/})"
  step_apt
  step_group
  step_venv
  step_models
  step_config
  step_key
  step_systemd_files
  step_systemctl
fi
summary
