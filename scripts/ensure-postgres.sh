#!/usr/bin/env bash
# Makes sure the PostgreSQL server the tests use answers at 127.0.0.1:5432:
# installs it with apt when absent (as root), starts it when stopped.
# Prints what it does; exits non-zero only when it had to act and failed.
set -u
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
ready && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"

if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "ensure-postgres: PostgreSQL is not installed; installing it with apt"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null || {
    echo "ensure-postgres: could not install PostgreSQL" >&2; exit 1; }
fi
ver=$(ls /etc/postgresql | sort -V | tail -n 1)
conf=/etc/postgresql/$ver/main
# The tests connect as user postgres over TCP without a password.
if ! grep -Eq '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$conf/pg_hba.conf"; then
  echo "ensure-postgres: allowing trust auth from 127.0.0.1 for tests"
  $sudo sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$conf/pg_hba.conf"
fi
echo "ensure-postgres: starting PostgreSQL $ver"
$sudo pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null || $sudo pg_ctlcluster "$ver" main restart
for _ in $(seq 1 30); do ready && exit 0; sleep 1; done
echo "ensure-postgres: PostgreSQL did not come up at 127.0.0.1:5432" >&2
exit 1
