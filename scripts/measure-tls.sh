#!/bin/sh
# The cost of TLS beside plain HTTP (docs/security.md): two servers holding the same sample data, one over TLS with a
# throwaway P-256 certificate, one over plain HTTP, measured with curl. Needs openssl, curl and bc.
# Usage: scripts/measure-tls.sh [path to the partner-ledger binary, default target/release/partner-ledger]
set -eu
BIN=$(realpath "${1:-target/release/partner-ledger}")
DIR=$(mktemp -d)
TLS_PID=; PLAIN_PID=
trap 'kill $TLS_PID $PLAIN_PID 2>/dev/null; rm -rf "$DIR"' EXIT
cd "$DIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out cert.pem -days 2 \
  -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" 2>/dev/null
"$BIN" --data tls serve --listen 127.0.0.1:0 --sample-data --tls-cert cert.pem --tls-key key.pem > tls.out 2>&1 &
TLS_PID=$!
"$BIN" --data plain serve --listen 127.0.0.1:0 --sample-data > plain.out 2>&1 &
PLAIN_PID=$!
for i in $(seq 300); do
  grep -q "listening on" tls.out && grep -q "listening on" plain.out && break
  [ "$i" = 300 ] && { echo "the servers did not start:"; cat tls.out plain.out; exit 1; }
  sleep 0.2
done
TLS=$(sed -n 's/.*listening on \(https:[^ ]*\).*/\1/p' tls.out | head -1)
PLAIN=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' plain.out | head -1)
HEAD=$(sed -n 's/.*, \([0-9]*\) events).*/\1/p' plain.out | head -1)
C=c0000000-0000-4000-8000-00000000000c
# Plain HTTP is measured with HTTP/1.1 only: curl 7.88 fails every request after the first on a reused h2c
# (prior-knowledge) connection, with "Error in the HTTP2 framing layer" (hyper's client does not; tests/suite/tls.rs).
for base in "$TLS" "$PLAIN"; do
  for v in --http1.1 --http2; do
    case "$base" in http:*) [ "$v" = --http2 ] && continue ;; esac
    # 300 requests, each on a new connection (the TLS handshake included): the median of curl's time_total.
    new=$(for i in $(seq 300); do curl -s $v --cacert cert.pem -o /dev/null -w '%{time_total}\n' "$base/v1/customers/$C"; done \
      | sort -n | awk '{a[NR]=$1} END {printf "%.2f", a[int(NR/2)]*1000}')
    # 1,000 requests on one kept-alive connection.
    urls=$(for i in $(seq 1000); do printf '%s ' "$base/v1/customers/$C"; done)
    start=$(date +%s.%N); curl -s $v --cacert cert.pem $urls > /dev/null; end=$(date +%s.%N)
    kept=$(echo "($end - $start)" | bc -l)
    # The whole log as one stream catch-up (NDJSON, ended by ?to=).
    start=$(date +%s.%N)
    n=$(curl -s $v --cacert cert.pem -H 'Accept: application/x-ndjson' "$base/v1/events?to=$HEAD" | wc -l)
    end=$(date +%s.%N)
    printf '%s %s: new connection + request %s ms (median); %.3f ms a request on a kept connection; catch-up of %s events %.0f ms\n' \
      "${base%%:*}" "$v" "$new" "$kept" "$n" "$(echo "($end - $start) * 1000" | bc -l)"
  done
done
