#!/usr/bin/env bash
# Deploys IMAGE to the Cloud Run service SERVICE (called by .github/workflows/deploy.yml; can be
# run by hand after `gcloud auth login`). Settings come from the environment; docs/DEPLOY.md lists
# them. With DRY_RUN=1 it prints the gcloud command instead of running it (what the test checks).
#
# Why each setting is what it is:
# - Every WebSocket (and every long-poll) holds one request for its whole life, so
#   --concurrency is the number of clients one instance takes. Cloud Run's default, 80, would be
#   the whole audience of a service without Redis. An idle connection costs about 20 KB (bench:
#   `idle`), so memory is not what limits it; CPU for chat fan-out is.
# - --timeout=3600 (Cloud Run's longest) bounds how long one WebSocket may last; the client then
#   reconnects by itself. --session-affinity keeps a long-polling client on its instance.
# - Every client reaches the container through Cloud Run's front end, which appends the address
#   it saw to X-Forwarded-For: TRUSTED_PROXIES=cloud-run makes the per-address limits count
#   clients instead of the front end.
# - Without Redis the state lives in one process: one instance. With REDIS_URL (or a Secret
#   Manager secret named by REDIS_URL_SECRET_NAME) the nodes share it and the service may scale
#   out; then heartbeats run between requests, so CPU stays allocated (--no-cpu-throttling) and
#   one node is always up (--min-instances=1).
# - --update-env-vars and --update-secrets change only what they name, so a variable or secret
#   set on the service by hand survives a deploy (--set-env-vars would wipe it).
# - The page is public on purpose (--allow-unauthenticated): viewers open a link without a
#   Google account. PUBLIC=false keeps the service private (every request then needs an
#   identity token, so browsers get 403).
set -euo pipefail

: "${SERVICE:?SERVICE: the Cloud Run service name}"
: "${PROJECT_ID:?PROJECT_ID: the Google Cloud project}"
: "${REGION:?REGION: the Cloud Run region}"
: "${IMAGE:?IMAGE: the container image to deploy}"
CONCURRENCY="${CONCURRENCY:-1000}"
CPU="${CPU:-1}"
MEMORY="${MEMORY:-512Mi}"
MAX_INSTANCES="${MAX_INSTANCES:-10}"

flags=(--port=3000 --timeout=3600 --session-affinity
  "--concurrency=${CONCURRENCY}" "--cpu=${CPU}" "--memory=${MEMORY}")
if [ "${PUBLIC:-}" = false ]; then
  flags+=(--no-allow-unauthenticated)
else
  flags+=(--allow-unauthenticated)
fi

# `^|;|^` makes gcloud split on `|;|` instead of commas, which values (a URL list) may hold.
env_vars=("TRUSTED_PROXIES=cloud-run")
remove_vars=()
secrets=()
[ -n "${TURN_URLS:-}" ] && env_vars+=("TURN_URLS=${TURN_URLS}")
[ -n "${TRANSPORTS:-}" ] && env_vars+=("TRANSPORTS=${TRANSPORTS}")
[ -n "${CORS_ORIGINS:-}" ] && env_vars+=("CORS_ORIGINS=${CORS_ORIGINS}")
[ -n "${TURN_SECRET_NAME:-}" ] && secrets+=("TURN_SECRET=${TURN_SECRET_NAME}:latest")
[ -n "${METRICS_TOKEN_NAME:-}" ] && secrets+=("METRICS_TOKEN=${METRICS_TOKEN_NAME}:latest")

# What an earlier deploy set and this one does not want is removed by name: `--update-*` keeps
# everything it is not told about (so a stale CA or host-name exemption would stay forever).
remove_secrets=()
if [ -n "${REDIS_URL:-}" ] || [ -n "${REDIS_URL_SECRET_NAME:-}" ]; then
  if [ -n "${REDIS_URL_SECRET_NAME:-}" ]; then
    # gcloud removes plain variables before it sets secrets: a plain REDIS_URL from an earlier
    # deploy makes way. (The other way round needs one removal by hand: docs/DEPLOY.md.)
    remove_vars+=(REDIS_URL)
    secrets+=("REDIS_URL=${REDIS_URL_SECRET_NAME}:latest")
  else
    env_vars+=("REDIS_URL=${REDIS_URL}")
  fi
  if [ -n "${REDIS_CA_SECRET_NAME:-}" ]; then
    # Mounted as a file: --redis-ca-cert reads a path.
    secrets+=("/etc/redis-ca/ca.pem=${REDIS_CA_SECRET_NAME}:latest")
    env_vars+=("REDIS_CA_CERT=/etc/redis-ca/ca.pem")
    # A certificate naming its address only in the common name (Memorystore's, reportedly).
    if [ "${REDIS_SKIP_HOSTNAME_CHECK:-}" = true ]; then
      env_vars+=("REDIS_SKIP_HOSTNAME_CHECK=true")
    else
      remove_vars+=(REDIS_SKIP_HOSTNAME_CHECK)
    fi
  else
    remove_vars+=(REDIS_CA_CERT REDIS_SKIP_HOSTNAME_CHECK)
    remove_secrets+=(/etc/redis-ca/ca.pem)
  fi
  flags+=(--no-cpu-throttling --min-instances=1 "--max-instances=${MAX_INSTANCES}")
  if [ -n "${VPC_CONNECTOR:-}" ]; then
    flags+=("--vpc-connector=${VPC_CONNECTOR}" --vpc-egress=private-ranges-only)
  fi
else
  # One instance in memory; what cluster mode needed goes (the CPU between requests, the warm
  # instance, the VPC connector, the Redis settings whichever kind they were).
  flags+=(--max-instances=1 --cpu-throttling --min-instances=0 --clear-vpc-connector)
  remove_vars+=(REDIS_URL REDIS_CA_CERT REDIS_SKIP_HOSTNAME_CHECK)
  remove_secrets+=(REDIS_URL /etc/redis-ca/ca.pem)
fi

joined="$(printf '|;|%s' "${env_vars[@]}")"
flags+=("--update-env-vars=^|;|^${joined#|;|}")
if [ "${#remove_vars[@]}" -gt 0 ]; then
  flags+=("--remove-env-vars=$(IFS=,; echo "${remove_vars[*]}")")
fi
if [ "${#secrets[@]}" -gt 0 ]; then
  flags+=("--update-secrets=$(IFS=,; echo "${secrets[*]}")")
fi
if [ "${#remove_secrets[@]}" -gt 0 ]; then
  flags+=("--remove-secrets=$(IFS=,; echo "${remove_secrets[*]}")")
fi

command=(gcloud run deploy "$SERVICE" --project="$PROJECT_ID" --region="$REGION"
  --image="$IMAGE" --quiet "${flags[@]}")
if [ "${DRY_RUN:-}" = 1 ]; then
  printf '%s\n' "${command[@]}"
  exit 0
fi
"${command[@]}"

url="$(gcloud run services describe "$SERVICE" --project="$PROJECT_ID" --region="$REGION" \
  --format='value(status.url)')"
echo "Deployed ${IMAGE} to ${url}"
if [ "${PUBLIC:-}" = false ]; then
  echo "The service is private (PUBLIC=false): browsers get 403 until it is made public."
  exit 0
fi
# `/ready`, not `/readyz`: Cloud Run's front end keeps some paths ending in `z` for itself.
for _ in 1 2 3 4 5 6; do
  if curl --fail --silent --show-error --max-time 10 "${url}/ready"; then
    echo
    exit 0
  fi
  sleep 5
done
echo "::error::${url}/ready did not answer 200 in 6 tries over about a minute (a 403 means the service is private: docs/DEPLOY.md)" >&2
exit 1
