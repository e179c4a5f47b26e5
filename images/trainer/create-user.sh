#!/bin/sh
# Creates the image's non-root user "trainer" (uid and gid 1000, home /home/trainer).
#
# Why not a plain `groupadd --gid 1000`: Ubuntu 24.04 base images (the CUDA ones included)
# already hold user and group "ubuntu" at 1000, and groupadd refuses a taken id. Pods of a
# TrainingJob may pin runAsUser 1000, so the id stays and whoever holds it goes: nothing in
# the image runs as that account. On bases without it this is a plain create.
#
# ROOT (default /) is the directory holding etc/passwd, etc/group, etc/shadow, etc/gshadow:
# the tests run this script against a scratch copy (shadow-utils' --prefix), no Docker needed.
set -eu
ROOT="${ROOT:-/}"
NAME=trainer
ID=1000

holder() {  # name of the entry of etc/$1 whose id is $ID, empty if none
    awk -F: -v id="$ID" '$3 == id { print $1; exit }' "$ROOT/etc/$1"
}

user="$(holder passwd)"
if [ -n "$user" ] && [ "$user" != "$NAME" ]; then
    home="$(awk -F: -v u="$user" '$1 == u { print $6; exit }' "$ROOT/etc/passwd")"
    userdel --prefix "$ROOT" "$user"
    case "$home" in /home/*) rm -rf "${ROOT%/}$home" ;; esac
fi
group="$(holder group)"
if [ -n "$group" ] && [ "$group" != "$NAME" ]; then
    groupdel --prefix "$ROOT" "$group"
fi
if [ -z "$(holder group)" ]; then
    groupadd --prefix "$ROOT" --gid "$ID" "$NAME"
fi
if [ -z "$(holder passwd)" ]; then
    useradd --prefix "$ROOT" --uid "$ID" --gid "$ID" --home-dir "/home/$NAME" --create-home --shell /bin/bash "$NAME"
fi
