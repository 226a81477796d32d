#!/usr/bin/env bash
# Checks the gcloud command scripts/cloud-run-deploy.sh builds (DRY_RUN=1 prints it, one argument
# a line) for a service without Redis, one on Redis with secrets, and a private one.
set -euo pipefail
cd "$(dirname "$0")/../.."

failures=0
deploy() { env -i PATH="$PATH" SERVICE=svc PROJECT_ID=proj REGION=europe-west1 IMAGE=img:1 DRY_RUN=1 "$@" bash scripts/cloud-run-deploy.sh; }
has() {
  if ! grep -qxF -- "$2" <<<"$1"; then
    echo "FAIL ($3): missing argument: $2" >&2
    failures=$((failures + 1))
  fi
}
lacks() {
  if grep -q -- "$2" <<<"$1"; then
    echo "FAIL ($3): unexpected argument matching: $2" >&2
    failures=$((failures + 1))
  fi
}

memory="$(deploy)"
for arg in --concurrency=1000 --timeout=3600 --session-affinity --allow-unauthenticated \
  --max-instances=1 --cpu-throttling --min-instances=0 --clear-vpc-connector \
  '--update-env-vars=^|;|^TRUSTED_PROXIES=cloud-run' \
  --remove-env-vars=REDIS_URL,REDIS_CA_CERT,REDIS_SKIP_HOSTNAME_CHECK \
  --remove-secrets=REDIS_URL,/etc/redis-ca/ca.pem --image=img:1; do
  has "$memory" "$arg" "in memory"
done
lacks "$memory" '--set-env-vars' "in memory"
lacks "$memory" '--no-cpu-throttling' "in memory"
lacks "$memory" '--update-secrets' "in memory"

cluster="$(deploy REDIS_URL='rediss://:p,w@10.0.0.3:6378' REDIS_CA_SECRET_NAME=redis-ca REDIS_SKIP_HOSTNAME_CHECK=true \
  TURN_URLS='turn:turn.example.com:3478,turns:turn.example.com:5349' TURN_SECRET_NAME=turn-secret \
  METRICS_TOKEN_NAME=metrics-token VPC_CONNECTOR=conn MAX_INSTANCES=4 CONCURRENCY=500)"
for arg in --concurrency=500 --no-cpu-throttling --min-instances=1 --max-instances=4 \
  --vpc-connector=conn --allow-unauthenticated \
  '--update-env-vars=^|;|^TRUSTED_PROXIES=cloud-run|;|TURN_URLS=turn:turn.example.com:3478,turns:turn.example.com:5349|;|REDIS_URL=rediss://:p,w@10.0.0.3:6378|;|REDIS_CA_CERT=/etc/redis-ca/ca.pem|;|REDIS_SKIP_HOSTNAME_CHECK=true' \
  '--update-secrets=TURN_SECRET=turn-secret:latest,METRICS_TOKEN=metrics-token:latest,/etc/redis-ca/ca.pem=redis-ca:latest'; do
  has "$cluster" "$arg" "on Redis"
done
lacks "$cluster" '--remove' "on Redis"
lacks "$cluster" '--max-instances=1$' "on Redis"

# A CA without the host-name exemption removes an exemption an earlier deploy set; no CA
# removes the CA as well.
ca_only="$(deploy REDIS_URL_SECRET_NAME=redis-url REDIS_CA_SECRET_NAME=redis-ca)"
has "$ca_only" '--remove-env-vars=REDIS_URL,REDIS_SKIP_HOSTNAME_CHECK' "CA without the exemption"
lacks "$ca_only" '--remove-secrets' "CA without the exemption"

from_secret="$(deploy REDIS_URL_SECRET_NAME=redis-url)"
has "$from_secret" '--remove-env-vars=REDIS_URL,REDIS_CA_CERT,REDIS_SKIP_HOSTNAME_CHECK' "no CA"
has "$from_secret" '--remove-secrets=/etc/redis-ca/ca.pem' "no CA"
has "$from_secret" '--update-secrets=REDIS_URL=redis-url:latest' "Redis URL from Secret Manager"
has "$from_secret" '--min-instances=1' "Redis URL from Secret Manager"
lacks "$from_secret" '^--update-env-vars=.*REDIS_URL' "Redis URL from Secret Manager: not in plain env"

private="$(deploy PUBLIC=false)"
has "$private" --no-allow-unauthenticated "private"
lacks "$private" '^--allow-unauthenticated' "private"

if missing="$(env -i PATH="$PATH" DRY_RUN=1 bash scripts/cloud-run-deploy.sh 2>&1)"; then
  echo "FAIL: ran without SERVICE" >&2
  failures=$((failures + 1))
elif ! grep -q 'SERVICE' <<<"$missing"; then
  echo "FAIL: no clear message without SERVICE: $missing" >&2
  failures=$((failures + 1))
fi

if [ "$failures" -gt 0 ]; then
  echo "cloud-run-deploy: $failures failure(s)" >&2
  exit 1
fi
echo "cloud-run-deploy: the gcloud command is right in memory, on Redis, from Secret Manager and private"
