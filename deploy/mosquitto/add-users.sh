#!/usr/bin/env bash
# Adds users to a mosquitto password file (created if missing), or replaces
# their password if they are in it.
#
#   deploy/mosquitto/add-users.sh PASSWORD_FILE < users.csv > credentials.csv
#
# Each input line is "username" or "username,password"; empty lines and
# lines starting with # are skipped. A device's user name is
# "{customer}/{site}/{device}" (see fleetpulse.acl). A missing password is
# generated (24 random bytes, base64). Every user whose password was
# generated is printed as "username,password" on standard output, to load
# into the device; keep that output secret.
#
# Plain-text passwords never appear on a command line (where `ps` would show
# them): they are written to a private temporary file, hashed there with
# `mosquitto_passwd -U`, and only the hashes are merged into PASSWORD_FILE.
# Reload mosquitto afterwards (SIGHUP) to pick up the changes.

set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 PASSWORD_FILE < users.csv" >&2
    exit 2
fi
passwd_file=$1
PATH="$PATH:/usr/sbin:/usr/local/sbin"
command -v mosquitto_passwd >/dev/null ||
    { echo "mosquitto_passwd not found (Debian package mosquitto)" >&2; exit 1; }

umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
plain=$work/plain
names=$work/names
: >"$plain"
: >"$names"

while IFS= read -r line || [[ -n $line ]]; do
    line=${line%$'\r'}
    [[ -z $line || $line == \#* ]] && continue
    user=${line%%,*}
    if [[ $line == *,* ]]; then
        password=${line#*,}
    else
        password=$(head -c 24 /dev/urandom | base64)
        printf '%s,%s\n' "$user" "$password"
    fi
    case $user in
        '' | *:* | *+* | *'#'* | *' '* | *$'\t'*)
            echo "invalid user name '$user': must be non-empty, without ':', '+', '#' or blanks" >&2
            exit 1
            ;;
    esac
    if [[ -z $password || $password == *:* ]]; then
        echo "invalid password for '$user': must be non-empty, without ':'" >&2
        exit 1
    fi
    printf '%s:%s\n' "$user" "$password" >>"$plain"
    printf '%s\n' "$user" >>"$names"
done

[[ -s $plain ]] || exit 0
mosquitto_passwd -U "$plain"

# Keep the existing users that are not being replaced, then add the new.
merged=$work/merged
if [[ -f $passwd_file ]]; then
    awk -F: 'NR == FNR { replace[$0] = 1; next } !($1 in replace)' "$names" "$passwd_file" >"$merged"
else
    : >"$merged"
fi
cat "$plain" >>"$merged"
# mosquitto must be able to read it (it may run as user mosquitto).
chmod 640 "$merged"
if getent group mosquitto >/dev/null 2>&1; then
    chgrp mosquitto "$merged" 2>/dev/null || true
fi
mv "$merged" "$passwd_file"
