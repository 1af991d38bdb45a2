#!/usr/bin/env bash
# Create, once, the key that hashes callers' numbers in the call records (HMAC-SHA256): 32
# random bytes written as hex, in a file outside the repository that only this user can read.
# An existing key is never replaced: a new key would make every past caller unrecognisable.
#
# Where (voicebot/core/config.py looks in the same place): $VOICEBOT_CALLER_HASH_KEY_FILE, else
# ${XDG_CONFIG_HOME:-$HOME/.config}/allonantes-voicebot/caller-hash.key. Deployments may set
# VOICEBOT_CALLER_HASH_KEY in the environment instead (systemd EnvironmentFile).
set -eu

default_dir=""
if [ -n "${VOICEBOT_CALLER_HASH_KEY_FILE:-}" ]; then
  key_file=$VOICEBOT_CALLER_HASH_KEY_FILE
else
  config_home=${XDG_CONFIG_HOME:-}
  case $config_home in
    /*) ;;  # the XDG spec ignores a relative XDG_CONFIG_HOME
    *) config_home="${HOME:?HOME is not set: set VOICEBOT_CALLER_HASH_KEY_FILE to the key file}/.config" ;;
  esac
  default_dir=$config_home/allonantes-voicebot
  key_file=$default_dir/caller-hash.key
fi

# A key inside the checkout could end up in a commit.
repo=$(cd "$(dirname "$0")/.." && pwd -P)
case $(realpath -m "$key_file") in
  "$repo"/*)
    echo "error: the caller hash key file $key_file is inside the repository; choose a path outside it" >&2
    exit 1 ;;
esac

if [ -e "$key_file" ]; then
  mode=$(stat -c %a "$key_file")
  case $mode in
    [0-7]00) ;;
    *) echo "warning: $key_file can be read by other users (mode $mode): run chmod 600 $key_file" \
         "(voicebot serve refuses it as it is)" >&2 ;;
  esac
  exit 0
fi

umask 077  # the directory (0700) and the key (0600) are this user's alone from the start
key_dir=$(dirname "$key_file")
mkdir -p "$key_dir"
if [ "$key_dir" = "$default_dir" ]; then chmod 700 "$key_dir"; fi
tmp=$(mktemp "$key_dir/.caller-hash.key.XXXXXX")
trap 'rm -f "$tmp"' EXIT
key=$(od -An -v -tx1 -N32 /dev/urandom | tr -d ' \n')
[ ${#key} -eq 64 ] || { echo "error: could not read 32 random bytes from /dev/urandom" >&2; exit 1; }
printf '%s\n' "$key" > "$tmp"
chmod 600 "$tmp"
# ln refuses an existing target: a key created meanwhile by another run is kept, not replaced.
if ln "$tmp" "$key_file" 2>/dev/null; then
  echo "Created the caller-number hashing key $key_file (mode 0600). Keep it: with a new key," \
    "past callers are no longer recognised."
elif [ ! -e "$key_file" ]; then
  # no hard links on this file system: mv -n does not replace an existing file either
  mv -n "$tmp" "$key_file"
  [ -e "$key_file" ] || { echo "error: cannot create $key_file" >&2; exit 1; }
  echo "Created the caller-number hashing key $key_file (mode 0600)."
fi
