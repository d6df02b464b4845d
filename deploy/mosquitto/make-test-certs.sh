#!/usr/bin/env bash
# Makes a throw-away certificate authority and a server certificate for
# 127.0.0.1 / localhost, for tests and local TLS trials (never production).
#
#   deploy/mosquitto/make-test-certs.sh DIR
#
# Writes DIR/ca.crt, DIR/server.crt and DIR/server.key (and the CA's key).
# A mosquitto listener uses them with
#
#   listener 8883 127.0.0.1
#   cafile DIR/ca.crt
#   certfile DIR/server.crt
#   keyfile DIR/server.key
#
# and a client connects with `mosquitto_pub --cafile DIR/ca.crt -h 127.0.0.1`.
# Needs the openssl command (Debian package openssl).

set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
mkdir -p "$dir"
cd "$dir"
umask 077

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout ca.key -out ca.crt -days 30 -subj "/CN=fleetpulse test CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -out server.crt -days 30 -extfile server.ext 2>/dev/null
rm -f server.csr server.ext ca.srl
# mosquitto may drop to another user after start; the files are read before.
chmod 644 ca.crt server.crt
chmod 600 server.key ca.key
