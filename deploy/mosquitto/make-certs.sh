#!/usr/bin/env bash
# The broker's TLS files for one installation: its own certificate authority and a server
# certificate for the broker's host name(s), in deploy/mosquitto/certs/ (git-ignored), where
# docker-compose.yml mounts them for the mosquitto service (listener 8883).
#
#   deploy/mosquitto/make-certs.sh mqtt.kommune.example [more names or IP addresses ...]
#
# Give devices certs/ca.crt; keep certs/ca.key offline (it signs certificates devices trust).
# A deployment with its own PKI skips this and puts ca.crt, server.crt and server.key there.
# Same recipe as the local stack's (oximon/localstack.py, make_local_ca).
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 HOSTNAME [HOSTNAME|IP ...]" >&2
  exit 2
fi
out="$(cd "$(dirname "$0")" && pwd)/certs"
mkdir -p "$out"
cd "$out"
for f in ca.crt server.crt server.key; do
  if [ -e "$f" ]; then
    echo "$out/$f exists: move the old files away first (devices may trust that CA)" >&2
    exit 1
  fi
done

sans=""
for name in "$@"; do
  if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then sans+="IP:$name,"; else sans+="DNS:$name,"; fi
done
cat > server.ext <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = ${sans%,}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EXT

umask 077
# RSA 2048: what the oldest device TLS stacks still accept.
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
  -keyout ca.key -out ca.crt -subj "/CN=oximon CA ($1)" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey rsa:2048 -nodes -sha256 -keyout server.key -out server.csr -subj "/CN=$1"
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 825 \
  -extfile server.ext -out server.crt
rm -f server.csr server.ext ca.srl
chmod 644 ca.crt server.crt
# The broker runs as uid 1883 in the eclipse-mosquitto image and must read its key.
chmod 640 server.key
if [ "$(id -u)" = 0 ]; then chown 0:1883 server.key; else
  echo "note: make server.key readable by uid/gid 1883 (sudo chgrp 1883 $out/server.key)" >&2
fi
echo "made $out/{ca.crt,ca.key,server.crt,server.key} for: $*"
